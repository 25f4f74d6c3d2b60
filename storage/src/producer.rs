//! Idempotent-producer state: per producer and partition, the last few batches
//! it wrote. Stored in the same atomic write as the batch itself, so a retried
//! request is recognised after a crash as reliably as before it.
//!
//! Value layout (big-endian): version u8 (1) · last write ms i64 · count u8 ·
//! count × (sequence u64 · base offset u64 · record count u32), oldest first.
//! Version 2 appends `resume at u64`: written only after a rewind removed every
//! remembered batch, so the producer's next sequence is still known.

use bytes::{Buf, BufMut};
use std::collections::VecDeque;

/// How many recent batches per producer are guaranteed to be recognised as
/// duplicates: the client pipelines at most this many per partition.
pub const DEDUP_WINDOW: usize = 5;
/// How many are kept: twice the window, so that after a rewind took back a
/// producer's whole unacknowledged tail (at most `DEDUP_WINDOW` batches) a
/// full window of its older, acknowledged batches is still recognised.
pub const REMEMBERED: usize = 2 * DEDUP_WINDOW;
const VERSION: u8 = 1;
const VERSION_RESUME: u8 = 2;

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
    /// After a rewind removed every remembered batch: the sequence expected next.
    pub resume_at: Option<u64>,
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
            return match self.resume_at {
                Some(expected) if expected != sequence => SequenceCheck::OutOfOrder(expected),
                _ => SequenceCheck::Next,
            };
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
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(batch);
        self.last_write_ms = now_ms;
        self.resume_at = None;
    }

    /// Forgets batches stored at `offset` or later (a rewound tail). Returns
    /// whether anything changed. The next expected sequence stays known.
    pub fn rewind(&mut self, offset: u64) -> bool {
        let mut changed = false;
        while let Some(last) = self.recent.back().copied() {
            if last.base_offset < offset {
                break;
            }
            self.recent.pop_back();
            self.resume_at = Some(last.sequence);
            changed = true;
        }
        if !self.recent.is_empty() {
            self.resume_at = None;
        }
        changed
    }

    /// Encodes the stored value.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(10 + self.recent.len() * 20);
        v.put_u8(if self.resume_at.is_some() { VERSION_RESUME } else { VERSION });
        v.put_i64(self.last_write_ms);
        v.put_u8(self.recent.len() as u8);
        for b in &self.recent {
            v.put_u64(b.sequence);
            v.put_u64(b.base_offset);
            v.put_u32(b.count);
        }
        if let Some(r) = self.resume_at {
            v.put_u64(r);
        }
        v
    }

    /// Decodes a stored value.
    pub fn decode(mut v: &[u8]) -> Option<Self> {
        if v.len() < 10 {
            return None;
        }
        let version = v.get_u8();
        let trailer = match version {
            VERSION => 0,
            VERSION_RESUME => 8,
            _ => return None,
        };
        let last_write_ms = v.get_i64();
        let n = usize::from(v.get_u8());
        if n > REMEMBERED || v.len() != n * 20 + trailer {
            return None;
        }
        let recent = (0..n)
            .map(|_| WrittenBatch { sequence: v.get_u64(), base_offset: v.get_u64(), count: v.get_u32() })
            .collect();
        let resume_at = (trailer > 0).then(|| v.get_u64());
        Some(ProducerState { recent, last_write_ms, resume_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_are_classified() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(7), SequenceCheck::Next);
        for seq in 7..25 {
            s.push(WrittenBatch { sequence: seq, base_offset: seq * 10, count: 10 }, 1);
        }
        assert_eq!(s.recent.len(), REMEMBERED);
        assert_eq!(s.check(25), SequenceCheck::Next);
        assert_eq!(s.check(24), SequenceCheck::Duplicate(WrittenBatch { sequence: 24, base_offset: 240, count: 10 }));
        assert_eq!(s.check(15), SequenceCheck::Duplicate(WrittenBatch { sequence: 15, base_offset: 150, count: 10 }));
        assert_eq!(s.check(14), SequenceCheck::OutOfOrder(25), "older than the remembered batches");
        assert_eq!(s.check(27), SequenceCheck::OutOfOrder(25));
        assert_eq!(ProducerState::decode(&s.encode()), Some(s));
    }

    #[test]
    fn rewind_forgets_the_tail_but_keeps_the_next_sequence() {
        let mut s = ProducerState::default();
        for seq in 0..3 {
            s.push(WrittenBatch { sequence: seq, base_offset: seq * 10, count: 10 }, 1);
        }
        assert!(s.rewind(10));
        assert_eq!(s.check(1), SequenceCheck::Next);
        assert_eq!(s.check(0), SequenceCheck::Duplicate(WrittenBatch { sequence: 0, base_offset: 0, count: 10 }));
        assert!(s.rewind(0));
        assert_eq!(s.check(0), SequenceCheck::Next, "the rewound batch may be sent again");
        assert_eq!(s.check(5), SequenceCheck::OutOfOrder(0), "a gap is still a gap");
        assert_eq!(ProducerState::decode(&s.encode()), Some(s.clone()));
        assert!(!s.rewind(0));
    }
}
