//! `PartitionLog`: the in-memory tail of one partition — next offset, segments,
//! producer states — and the mutations that append to it or trim it.
//!
//! It does no I/O: its owner (the broker's partition actor) hands the returned
//! mutations to the writer. Invariants: offsets are dense and assigned once;
//! timestamps never go backwards within a partition; every append rewrites the
//! active segment's entry in the same atomic write as its batch.

use std::collections::HashMap;

use crate::keys::{partition_meta_key, record_key, TAG_PRODUCER, TAG_SEGMENT};
use crate::producer::{ProducerState, SequenceCheck, WrittenBatch};
use crate::record::{body_len, encode_batch, BatchHeader, RecordRef, HEADER_LEN};
use crate::segment::SegmentMeta;
use crate::store::{Cf, Mutation};
use crate::topic::TopicSettings;
use crate::{Error, Result};

/// An idempotent producer's identity on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// Non-zero producer id.
    pub producer_id: u64,
    /// Sequence of this batch for this partition.
    pub sequence: u64,
}

/// The outcome of preparing an append.
#[derive(Debug)]
pub enum Append {
    /// New records: write `mutations`; the records get `base_offset..base_offset+count`.
    Write {
        /// First offset assigned.
        base_offset: u64,
        /// What to write, atomically.
        mutations: Vec<Mutation>,
    },
    /// A retry of a batch already accepted at `base_offset`.
    Duplicate {
        /// Offset of the original batch.
        base_offset: u64,
        /// Records in the original batch.
        count: u32,
    },
}

/// What retention decided to delete.
#[derive(Debug)]
pub struct Trim {
    /// What to write, atomically.
    pub mutations: Vec<Mutation>,
    /// The removed segments.
    pub removed: Vec<SegmentMeta>,
    /// The first offset still stored afterwards.
    pub log_start: u64,
}

/// The tail and index of one partition.
#[derive(Debug)]
pub struct PartitionLog {
    topic_id: u64,
    partition: u32,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: Vec<SegmentMeta>,
    producers: HashMap<u64, ProducerState>,
}

impl PartitionLog {
    /// An empty partition.
    pub fn new(topic_id: u64, partition: u32, now_ms: i64) -> Self {
        Self::recovered(topic_id, partition, Vec::new(), HashMap::new(), now_ms)
    }

    /// A partition rebuilt from its stored segment and producer entries.
    pub fn recovered(
        topic_id: u64,
        partition: u32,
        mut segments: Vec<SegmentMeta>,
        producers: HashMap<u64, ProducerState>,
        now_ms: i64,
    ) -> Self {
        segments.sort_by_key(|s| s.base_offset);
        if segments.last().is_none_or(|s| s.sealed) {
            let base = segments.last().map_or(0, |s| s.end_offset);
            segments.push(SegmentMeta::open(base, now_ms));
        }
        PartitionLog { topic_id, partition, segments, producers }
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.active().end_offset
    }

    /// The first offset still stored.
    pub fn log_start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    /// The segment index, oldest first.
    pub fn segments(&self) -> &[SegmentMeta] {
        &self.segments
    }

    /// Bytes stored in the partition.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Internal id of the topic.
    pub fn topic_id(&self) -> u64 {
        self.topic_id
    }

    /// Partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Where a search for the first record at or after `timestamp_ms` starts:
    /// the base of the first segment whose newest record is not older, if any.
    pub fn search_start_for(&self, timestamp_ms: i64) -> Option<u64> {
        self.segments.iter().find(|s| !s.is_empty() && s.last_timestamp_ms >= timestamp_ms).map(|s| s.base_offset)
    }

    fn active(&self) -> &SegmentMeta {
        // `recovered` guarantees at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut SegmentMeta {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    fn segment_put(&self, s: &SegmentMeta) -> Mutation {
        Mutation::Put(
            Cf::Meta,
            partition_meta_key(TAG_SEGMENT, self.topic_id, self.partition, s.base_offset).to_vec(),
            s.encode(),
        )
    }

    /// Seals the active segment and opens a new one at the next offset.
    fn roll(&mut self, now_ms: i64, mutations: &mut Vec<Mutation>) {
        let next = self.next_offset();
        self.active_mut().sealed = true;
        mutations.push(self.segment_put(self.active()));
        self.segments.push(SegmentMeta::open(next, now_ms));
    }

    /// Prepares appending `records` as one batch. `records` must not be empty.
    ///
    /// # Correctness
    /// The in-memory tail moves forward at once, before the write commits; a
    /// failed write therefore poisons the store (the broker must restart and
    /// recover from disk). A `Duplicate` may refer to a batch not yet committed:
    /// the caller must not answer before the commit point passes its end.
    pub fn append<R: RecordRef>(
        &mut self,
        records: &[R],
        producer: Option<ProducerSeq>,
        now_ms: i64,
        settings: &TopicSettings,
    ) -> Result<Append> {
        if let Some(p) = producer {
            match self.producers.get(&p.producer_id).map(|s| s.check(p.sequence)) {
                Some(SequenceCheck::Duplicate(b)) => {
                    return Ok(Append::Duplicate { base_offset: b.base_offset, count: b.count });
                }
                Some(SequenceCheck::OutOfOrder(expected)) => {
                    return Err(Error::OutOfOrderSequence { producer_id: p.producer_id, got: p.sequence, expected });
                }
                Some(SequenceCheck::Next) | None => {}
            }
        }
        let mut mutations = Vec::with_capacity(4);
        let batch_len = (HEADER_LEN + body_len(records)) as u64;
        let active = *self.active();
        let too_big = active.bytes > 0 && active.bytes + batch_len > settings.segment_bytes;
        let too_old = !active.is_empty() && now_ms.saturating_sub(active.created_ms) >= settings.segment_ms as i64;
        if too_big || too_old {
            self.roll(now_ms, &mut mutations);
        }
        let base_offset = self.next_offset();
        let timestamp_ms = now_ms.max(self.active().last_timestamp_ms);
        let count = records.len() as u32;
        let header = BatchHeader {
            base_offset,
            count,
            timestamp_ms,
            producer_id: producer.map_or(0, |p| p.producer_id),
            sequence: producer.map_or(0, |p| p.sequence),
        };
        mutations.push(Mutation::Put(
            Cf::Records,
            record_key(self.topic_id, self.partition, base_offset).to_vec(),
            encode_batch(&header, records),
        ));
        let seg = self.active_mut();
        if seg.is_empty() {
            seg.first_timestamp_ms = timestamp_ms;
        }
        seg.end_offset = base_offset + u64::from(count);
        seg.bytes += batch_len;
        seg.last_timestamp_ms = timestamp_ms;
        mutations.push(self.segment_put(self.active()));
        if let Some(p) = producer {
            let state = self.producers.entry(p.producer_id).or_default();
            state.push(WrittenBatch { sequence: p.sequence, base_offset, count }, now_ms);
            let key = partition_meta_key(TAG_PRODUCER, self.topic_id, self.partition, p.producer_id);
            mutations.push(Mutation::Put(Cf::Meta, key.to_vec(), state.encode()));
        }
        Ok(Append::Write { base_offset, mutations })
    }

    /// Removes every record: rolls the active segment and drops all sealed ones.
    pub fn truncate(&mut self, now_ms: i64) -> Option<Trim> {
        let mut mutations = Vec::new();
        if !self.active().is_empty() {
            self.roll(now_ms, &mut mutations);
        }
        let removed: Vec<SegmentMeta> = self.segments.drain(..self.segments.len() - 1).collect();
        self.delete_segments(&removed, &mut mutations);
        (!mutations.is_empty()).then(|| Trim { mutations, removed, log_start: self.log_start() })
    }

    fn delete_segments(&self, removed: &[SegmentMeta], mutations: &mut Vec<Mutation>) {
        if let (Some(first), Some(last)) = (removed.first(), removed.last()) {
            mutations.push(Mutation::DeleteRange(
                Cf::Records,
                record_key(self.topic_id, self.partition, first.base_offset).to_vec(),
                record_key(self.topic_id, self.partition, last.end_offset).to_vec(),
            ));
            mutations.push(Mutation::DeleteRange(
                Cf::Meta,
                partition_meta_key(TAG_SEGMENT, self.topic_id, self.partition, first.base_offset).to_vec(),
                partition_meta_key(TAG_SEGMENT, self.topic_id, self.partition, last.base_offset + 1).to_vec(),
            ));
        }
    }

    /// Decides which whole segments retention removes now (never the active
    /// one; an expired active segment is rolled first so it can go next time).
    pub fn trim(&mut self, now_ms: i64, settings: &TopicSettings) -> Option<Trim> {
        let expired = |s: &SegmentMeta| {
            settings.retention_ms > 0
                && !s.is_empty()
                && s.last_timestamp_ms < now_ms.saturating_sub(settings.retention_ms as i64)
        };
        let mut mutations = Vec::new();
        let active = *self.active();
        if expired(&active)
            || (!active.is_empty() && now_ms.saturating_sub(active.created_ms) >= settings.segment_ms as i64)
        {
            self.roll(now_ms, &mut mutations);
        }
        let mut total = self.bytes();
        let mut removed = Vec::new();
        while self.segments.len() > 1 {
            let oldest = self.segments[0];
            let over_bytes = settings.retention_bytes > 0 && total > settings.retention_bytes;
            if !(expired(&oldest) || over_bytes || oldest.is_empty()) {
                break;
            }
            total -= oldest.bytes;
            self.segments.remove(0);
            removed.push(oldest);
        }
        self.delete_segments(&removed, &mut mutations);
        if mutations.is_empty() {
            return None;
        }
        Some(Trim { mutations, removed, log_start: self.log_start() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StoredRecord;
    use crate::topic::Durability;
    use bytes::Bytes;

    fn settings() -> TopicSettings {
        TopicSettings {
            retention_ms: 0,
            retention_bytes: 0,
            segment_bytes: 1000,
            segment_ms: 1_000_000,
            max_message_bytes: 1 << 20,
            durability: Durability::Always,
        }
    }

    fn recs(n: usize, size: usize) -> Vec<StoredRecord> {
        (0..n)
            .map(|_| StoredRecord {
                offset: 0,
                timestamp_ms: 0,
                key: None,
                value: Bytes::from(vec![7; size]),
                headers: vec![],
            })
            .collect()
    }

    #[test]
    fn offsets_are_dense_and_segments_roll_by_size() {
        let mut log = PartitionLog::new(1, 0, 0);
        let mut bases = vec![];
        for i in 0..10 {
            match log.append(&recs(3, 100), None, i, &settings()).expect("append") {
                Append::Write { base_offset, .. } => bases.push(base_offset),
                Append::Duplicate { .. } => panic!("not a duplicate"),
            }
        }
        assert_eq!(bases, (0..10).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(log.next_offset(), 30);
        assert!(log.segments().len() > 3, "segments: {:?}", log.segments());
        for w in log.segments().windows(2) {
            assert_eq!(w[0].end_offset, w[1].base_offset);
            assert!(w[0].sealed);
        }
    }

    #[test]
    fn retried_sequence_gets_original_offsets() {
        let mut log = PartitionLog::new(1, 0, 0);
        let p = |sequence| Some(ProducerSeq { producer_id: 9, sequence });
        log.append(&recs(2, 1), p(0), 1, &settings()).expect("append");
        log.append(&recs(2, 1), p(1), 1, &settings()).expect("append");
        match log.append(&recs(2, 1), p(0), 1, &settings()).expect("dup") {
            Append::Duplicate { base_offset, count } => assert_eq!((base_offset, count), (0, 2)),
            Append::Write { .. } => panic!("duplicate written twice"),
        }
        assert!(matches!(
            log.append(&recs(1, 1), p(5), 1, &settings()),
            Err(Error::OutOfOrderSequence { expected: 2, .. })
        ));
        assert_eq!(log.next_offset(), 4);
    }

    #[test]
    fn retention_by_bytes_drops_oldest_whole_segments_only() {
        let mut log = PartitionLog::new(1, 0, 0);
        let mut s = settings();
        for i in 0..20 {
            log.append(&recs(1, 400), None, i, &s).expect("append");
        }
        s.retention_bytes = 1500;
        let trim = log.trim(100, &s).expect("something to trim");
        assert!(log.bytes() <= 1500 + 1000);
        assert_eq!(trim.log_start, log.log_start());
        assert_eq!(trim.removed.last().map(|r| r.end_offset), Some(log.log_start()));
        assert_eq!(log.next_offset(), 20);
    }

    #[test]
    fn retention_by_time_rolls_and_then_drops_everything_expired() {
        let mut log = PartitionLog::new(1, 0, 0);
        let mut s = settings();
        log.append(&recs(3, 10), None, 10, &s).expect("append");
        s.retention_ms = 50;
        let trim = log.trim(100, &s).expect("trim");
        assert_eq!(trim.log_start, 3);
        assert_eq!(log.log_start(), 3);
        assert_eq!(log.next_offset(), 3);
        assert_eq!(log.segments().len(), 1);
    }
}
