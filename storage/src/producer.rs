//! Idempotent-producer state: per producer and partition, the last few batches
//! it wrote. Stored in the same atomic write as the batch itself, so a retried
//! request is recognised after a crash as reliably as before it.
//!
//! Value layout (big-endian): version u8 (1) · last write ms i64 · count u8 ·
//! count × (sequence u64 · base offset u64 · record count u32), oldest first.

use bytes::{Buf, BufMut};
use std::collections::VecDeque;

/// How many recent batches per producer are remembered for deduplication.
pub const DEDUP_WINDOW: usize = 5;
const VERSION: u8 = 1;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenBatch {
    /// The producer's sequence for the batch.
    pub sequence: u64,
    /// Offset the batch was stored at.
    pub base_offset: u64,
    /// Records in the batch.
    pub count: u32,
}

/// What the log knows of one producer on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerState {
    /// Recent batches, oldest first.
    pub recent: VecDeque<WrittenBatch>,
    /// Last time the producer wrote here.
    pub last_write_ms: i64,
}

/// How a sequence relates to what was stored before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The next sequence (or the producer is new here): append it.
    Next,
    /// Already stored: answer with the original position.
    Duplicate(WrittenBatch),
    /// Neither: a gap or a batch too old to recognise. Carries the expected sequence.
    OutOfOrder(u64),
}

impl ProducerState {
    /// Classifies `sequence`.
    pub fn check(&self, sequence: u64) -> SequenceCheck {
        let Some(last) = self.recent.back() else {
            return SequenceCheck::Next;
        };
        if Some(sequence) == last.sequence.checked_add(1) {
            return SequenceCheck::Next;
        }
        match self.recent.iter().find(|b| b.sequence == sequence) {
            Some(b) => SequenceCheck::Duplicate(*b),
            None => SequenceCheck::OutOfOrder(last.sequence.saturating_add(1)),
        }
    }

    /// Records a newly written batch.
    pub fn push(&mut self, batch: WrittenBatch, now_ms: i64) {
        if self.recent.len() == DEDUP_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(batch);
        self.last_write_ms = now_ms;
    }

    /// Encodes the stored value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(10 + self.recent.len() * 20);
        v.put_u8(VERSION);
        v.put_i64(self.last_write_ms);
        v.put_u8(self.recent.len() as u8);
        for b in &self.recent {
            v.put_u64(b.sequence);
            v.put_u64(b.base_offset);
            v.put_u32(b.count);
        }
        v
    }

    /// Decodes a stored value.
    pub fn decode(mut v: &[u8]) -> Option<Self> {
        if v.len() < 10 || v.get_u8() != VERSION {
            return None;
        }
        let last_write_ms = v.get_i64();
        let n = usize::from(v.get_u8());
        if n > DEDUP_WINDOW || v.len() != n * 20 {
            return None;
        }
        let recent = (0..n)
            .map(|_| WrittenBatch { sequence: v.get_u64(), base_offset: v.get_u64(), count: v.get_u32() })
            .collect();
        Some(ProducerState { recent, last_write_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_classified() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(7), SequenceCheck::Next);
        for seq in 7..15 {
            s.push(WrittenBatch { sequence: seq, base_offset: seq * 10, count: 10 }, 1);
        }
        assert_eq!(s.check(15), SequenceCheck::Next);
        assert_eq!(s.check(14), SequenceCheck::Duplicate(WrittenBatch { sequence: 14, base_offset: 140, count: 10 }));
        assert_eq!(s.check(10), SequenceCheck::Duplicate(WrittenBatch { sequence: 10, base_offset: 100, count: 10 }));
        assert_eq!(s.check(9), SequenceCheck::OutOfOrder(15));
        assert_eq!(s.check(17), SequenceCheck::OutOfOrder(15));
        assert_eq!(ProducerState::decode(&s.encode()), Some(s));
    }
}
