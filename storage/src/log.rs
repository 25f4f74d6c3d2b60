//! `PartitionLog`: one partition's log — its in-memory tail (next offset,
//! segment index, producer states) over the store, and the one API through
//! which the broker appends, reads, trims, clears and rewinds a partition.
//! `PartitionReader` is its cloneable read half.
//!
//! # Correctness
//! - **Dense offsets**: `append` assigns `next_offset .. next_offset + n`, once;
//!   offsets never repeat or skip, except that `rewind` takes back a tail
//!   that was never acknowledged.
//! - **Atomic batches**: each append's write holds the batch, its segment
//!   entry (so the last segment always states the partition's end) and the
//!   producer's state; recovery therefore needs no record scan.
//! - **Prepared, not written**: `append`, `trim`, `clear` and `rewind` change
//!   the tail at once and return an `AtomicWrite` for the caller to commit
//!   through the writer. Writes of one log must commit in the order they were
//!   returned (the writer does this). If one fails, the store is poisoned:
//!   the tail is ahead of the disk and only a restart recovers the truth.
//! - **Idempotent producers**: a (producer id, sequence) seen in the last
//!   few batches is a `Duplicate` with its original offsets; the caller must
//!   not answer it before the original's write has committed.
//! - **Timestamps** never go backwards within a partition.
//! - **Reads** return only what is stored, CRC-checked: a damaged batch is
//!   `Corruption`, never data. Readers cap `until` at what has committed.
//! - **Rewind** (`rewind(to)`) removes every batch at `to` and above, with
//!   their segment entries and producer states, in one atomic write; the
//!   next append gets offset `to` again. It is for a tail that no reader
//!   and no producer was told about (Raft's `truncate_after`); `to` must be
//!   a batch boundary in `[log_start, next_offset]`, and every earlier write
//!   of the log must have committed (it reads the tail's batch headers).

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::{AtomicWrite, Cf, Mutation};
use crate::keys::{partition_meta_key, record_key, TAG_PRODUCER, TAG_SEGMENT};
use crate::producer::{ProducerState, SequenceCheck, WrittenBatch};
use crate::record::{
    batch_from_body, body_len, encode_batch, split_batch, BatchHeader, RecordRef, StoredRecord, HEADER_LEN,
};
use crate::segment::SegmentMeta;
use crate::store::{Reclaim, Store};
use crate::topic::TopicConfig;
use crate::{Error, OffsetRange, PartitionId, Result};

/// An idempotent producer's identity on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSeq {
    /// Non-zero producer id.
    pub producer_id: u64,
    /// Sequence of this batch for this partition.
    pub sequence: u64,
}

/// Who appends a batch, and whether its sequence is checked (a batch copied
/// from another replica already passed the check there).
#[derive(Debug, Clone, Copy)]
struct Producing {
    seq: Option<ProducerSeq>,
    check: bool,
}

/// The outcome of preparing an append.
#[derive(Debug)]
pub enum Append {
    /// New records: commit `write`; the records get `base_offset..base_offset+count`.
    Write {
        /// First offset assigned.
        base_offset: u64,
        /// What to commit.
        write: AtomicWrite,
    },
    /// A retry of a batch already accepted at `base_offset`.
    Duplicate {
        /// Offset of the original batch.
        base_offset: u64,
        /// Records in the original batch.
        count: u32,
    },
}

/// What retention (or a clear) decided to delete.
#[derive(Debug)]
pub struct Trim {
    /// What to commit.
    pub write: AtomicWrite,
    /// The removed segments.
    pub removed: Vec<SegmentMeta>,
    /// The first offset still stored afterwards.
    pub log_start: u64,
    /// Space to give back (`Store::reclaim`) once `write` has committed.
    pub reclaim: Option<Reclaim>,
}

/// The tail and index of one partition, and its way to the store.
#[derive(Debug)]
pub struct PartitionLog {
    store: Arc<Store>,
    id: PartitionId,
    /// Oldest first; the last one is the active segment. Never empty.
    segments: Vec<SegmentMeta>,
    producers: HashMap<u64, ProducerState>,
}

impl PartitionLog {
    /// A new, empty partition of a topic whose creation is committed.
    pub fn new(store: &Arc<Store>, id: PartitionId, now_ms: i64) -> Self {
        Self::recovered(store, id, Vec::new(), HashMap::new(), now_ms)
    }

    /// A partition rebuilt from its stored segment and producer entries.
    pub(crate) fn recovered(
        store: &Arc<Store>,
        id: PartitionId,
        mut segments: Vec<SegmentMeta>,
        producers: HashMap<u64, ProducerState>,
        now_ms: i64,
    ) -> Self {
        segments.sort_by_key(|s| s.base_offset);
        if segments.last().is_none_or(|s| s.sealed) {
            let base = segments.last().map_or(0, |s| s.end_offset);
            segments.push(SegmentMeta::open(base, now_ms));
        }
        PartitionLog { store: store.clone(), id, segments, producers }
    }

    /// The read half, for readers that do not go through the log's owner.
    pub fn reader(&self) -> PartitionReader {
        PartitionReader { store: self.store.clone(), id: self.id }
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

    /// Which partition this is.
    pub fn id(&self) -> PartitionId {
        self.id
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

    fn segment_key(&self, base_offset: u64) -> Vec<u8> {
        partition_meta_key(TAG_SEGMENT, self.id, base_offset).to_vec()
    }

    fn segment_put(&self, s: &SegmentMeta) -> Mutation {
        Mutation::Put(Cf::Meta, self.segment_key(s.base_offset), s.encode())
    }

    fn producer_put(&self, producer_id: u64, state: &ProducerState) -> Mutation {
        let key = partition_meta_key(TAG_PRODUCER, self.id, producer_id);
        Mutation::Put(Cf::Meta, key.to_vec(), state.encode())
    }

    /// Seals the active segment and opens a new one at the next offset. Both
    /// entries are written: if retention then removes every sealed segment,
    /// the new one is what tells recovery where the partition ends.
    fn roll(&mut self, now_ms: i64, mutations: &mut AtomicWrite) {
        let next = self.next_offset();
        self.active_mut().sealed = true;
        mutations.push(self.segment_put(self.active()));
        self.segments.push(SegmentMeta::open(next, now_ms));
        mutations.push(self.segment_put(self.active()));
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
        settings: &TopicConfig,
    ) -> Result<Append> {
        let body_bytes = body_len(records);
        let count = records.len() as u32;
        self.append_with(count, body_bytes, Producing { seq: producer, check: true }, now_ms, settings, |header| {
            encode_batch(header, records)
        })
    }

    /// Prepares appending a batch whose records are already encoded (`body`
    /// from `record::encode_body`, holding `count` records): how a replicated
    /// batch is stored on every replica. Same contract as [`append`](Self::append);
    /// with the same `now_ms` and settings, every replica that appends the
    /// same batches in the same order assigns the same offsets, timestamps and
    /// segment boundaries.
    pub fn append_encoded(
        &mut self,
        body: &[u8],
        count: u32,
        producer: Option<ProducerSeq>,
        now_ms: i64,
        settings: &TopicConfig,
    ) -> Result<Append> {
        self.append_with(count, body.len(), Producing { seq: producer, check: true }, now_ms, settings, |header| {
            batch_from_body(header, body)
        })
    }

    /// Prepares appending `raw`, a batch as another replica stored it
    /// (`PartitionReader::raw_batches`), at the same offsets: how a replica
    /// that installs a snapshot fetches the records it lacks. The batch must
    /// start at this log's next offset; its producer state is taken as it
    /// is (the copied log already passed the sequence checks), and segments
    /// roll by the batch's own timestamp.
    pub fn append_copy(&mut self, raw: &[u8], settings: &TopicConfig) -> Result<AtomicWrite> {
        let partition = self.id;
        let bad = |reason: String| Error::BadCopy { partition, reason };
        let (header, body) = split_batch(raw).map_err(|e| bad(format!("damaged batch: {e}")))?;
        if header.base_offset != self.next_offset() {
            return Err(bad(format!(
                "batch at {} does not start at the end {}",
                header.base_offset,
                self.next_offset()
            )));
        }
        let producer = (header.producer_id != 0)
            .then_some(ProducerSeq { producer_id: header.producer_id, sequence: header.sequence });
        let appended = self.append_with(
            header.count,
            body.len(),
            Producing { seq: producer, check: false },
            header.timestamp_ms,
            settings,
            |h| batch_from_body(h, body),
        )?;
        match appended {
            Append::Write { write, .. } => Ok(write),
            Append::Duplicate { .. } => Err(bad("taken as a duplicate".into())),
        }
    }

    fn append_with(
        &mut self,
        count: u32,
        body_bytes: usize,
        producing: Producing,
        now_ms: i64,
        settings: &TopicConfig,
        encode: impl FnOnce(&BatchHeader) -> Vec<u8>,
    ) -> Result<Append> {
        let producer = producing.seq;
        if let Some(p) = producer.filter(|_| producing.check) {
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
        let mut mutations = AtomicWrite { mutations: Vec::with_capacity(4) };
        let batch_len = (HEADER_LEN + body_bytes) as u64;
        let active = *self.active();
        let too_big = active.bytes > 0 && active.bytes + batch_len > settings.segment_bytes;
        let too_old = !active.is_empty() && now_ms.saturating_sub(active.created_ms) >= settings.segment_ms as i64;
        if too_big || too_old {
            self.roll(now_ms, &mut mutations);
        }
        let base_offset = self.next_offset();
        let timestamp_ms = now_ms.max(self.active().last_timestamp_ms);
        let header = BatchHeader {
            base_offset,
            count,
            timestamp_ms,
            producer_id: producer.map_or(0, |p| p.producer_id),
            sequence: producer.map_or(0, |p| p.sequence),
        };
        mutations.push(Mutation::Put(Cf::Records, record_key(self.id, base_offset).to_vec(), encode(&header)));
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
            let put = self.producer_put(p.producer_id, &self.producers[&p.producer_id]);
            mutations.push(put);
        }
        Ok(Append::Write { base_offset, write: mutations })
    }

    /// Removes every record (dead-letter purge): rolls the active segment and
    /// drops all sealed ones. Offsets keep counting from where they were.
    pub fn clear(&mut self, now_ms: i64) -> Option<Trim> {
        let mut mutations = AtomicWrite::new();
        if !self.active().is_empty() {
            self.roll(now_ms, &mut mutations);
        }
        let removed: Vec<SegmentMeta> = self.segments.drain(..self.segments.len() - 1).collect();
        let reclaim = self.delete_segments(&removed, &mut mutations);
        (!mutations.is_empty()).then(|| Trim { write: mutations, removed, log_start: self.log_start(), reclaim })
    }

    fn delete_segments(&self, removed: &[SegmentMeta], mutations: &mut AtomicWrite) -> Option<Reclaim> {
        let (first, last) = (removed.first()?, removed.last()?);
        let from = record_key(self.id, first.base_offset).to_vec();
        let to = record_key(self.id, last.end_offset).to_vec();
        mutations.push(Mutation::DeleteRange(Cf::Records, from.clone(), to.clone()));
        mutations.push(Mutation::DeleteRange(
            Cf::Meta,
            self.segment_key(first.base_offset),
            self.segment_key(last.base_offset + 1),
        ));
        Some(Store::reclaim_range(from, to))
    }

    /// Decides which whole segments retention removes now (never the active
    /// one; an expired active segment is rolled first so it can go next time).
    pub fn trim(&mut self, now_ms: i64, settings: &TopicConfig) -> Option<Trim> {
        self.trim_below(now_ms, settings, u64::MAX, 0)
    }

    /// `trim`, removing only segments that end at or below `limit`: a
    /// replicated partition keeps every record a Raft log entry still points
    /// at (`limit` is the first of them). Segments that end at or below
    /// `purged` (a replicated purge's floor: nothing there is read again) go
    /// whatever retention says, and an active segment wholly below it is
    /// rolled so it can go.
    pub fn trim_below(&mut self, now_ms: i64, settings: &TopicConfig, limit: u64, purged: u64) -> Option<Trim> {
        let expired = |s: &SegmentMeta| {
            settings.retention_ms > 0
                && !s.is_empty()
                && s.last_timestamp_ms < now_ms.saturating_sub(settings.retention_ms as i64)
        };
        let mut mutations = AtomicWrite::new();
        let active = *self.active();
        if expired(&active)
            || (!active.is_empty() && now_ms.saturating_sub(active.created_ms) >= settings.segment_ms as i64)
            || (!active.is_empty() && active.end_offset <= purged)
        {
            self.roll(now_ms, &mut mutations);
        }
        let mut total = self.bytes();
        let mut removed = Vec::new();
        while self.segments.len() > 1 {
            let oldest = self.segments[0];
            let over_bytes = settings.retention_bytes > 0 && total > settings.retention_bytes;
            let removable = expired(&oldest) || over_bytes || oldest.is_empty() || oldest.end_offset <= purged;
            if !removable || oldest.end_offset > limit {
                break;
            }
            total -= oldest.bytes;
            self.segments.remove(0);
            removed.push(oldest);
        }
        let reclaim = self.delete_segments(&removed, &mut mutations);
        if mutations.is_empty() {
            return None;
        }
        Some(Trim { write: mutations, removed, log_start: self.log_start(), reclaim })
    }

    /// Whether retention would remove a segment now (after `trim_below`:
    /// whether its limit held one back).
    pub fn retention_due(&self, now_ms: i64, settings: &TopicConfig) -> bool {
        let expired = |s: &SegmentMeta| {
            settings.retention_ms > 0
                && !s.is_empty()
                && s.last_timestamp_ms < now_ms.saturating_sub(settings.retention_ms as i64)
        };
        let over_bytes = settings.retention_bytes > 0 && self.bytes() > settings.retention_bytes;
        let oldest = self.segments[0];
        (self.segments.len() > 1 && (expired(&oldest) || over_bytes)) || expired(self.active())
    }

    /// Drops every stored record and starts the log over at `offset`, at or
    /// past its end: a replica whose missing records the others no longer
    /// hold (retention removed them) continues where they do. Producer
    /// states are kept.
    pub fn restart_at(&mut self, offset: u64, now_ms: i64) -> Result<AtomicWrite> {
        let next = self.next_offset();
        if offset < next {
            let reason = format!("cannot restart at {offset}, below the end {next}");
            return Err(Error::BadCopy { partition: self.id, reason });
        }
        let mut mutations = AtomicWrite::new();
        let removed: Vec<SegmentMeta> = self.segments.drain(..).collect();
        // Space comes back by compaction: this is rare (a replica far behind).
        let _ = self.delete_segments(&removed, &mut mutations);
        self.segments.push(SegmentMeta::open(offset, now_ms));
        mutations.push(self.segment_put(self.active()));
        Ok(mutations)
    }

    /// Takes back every batch at `to` and above (see the module's
    /// `# Correctness`). Blocking: it reads the tail's batch headers.
    /// Returns `None` when there is nothing to remove.
    pub fn rewind(&mut self, to: u64, now_ms: i64) -> Result<Option<AtomicWrite>> {
        let next = self.next_offset();
        let bad = |reason| Error::BadRewind {
            partition: self.id,
            offset: to,
            log_start: self.log_start(),
            next_offset: next,
            reason,
        };
        if to == next {
            return Ok(None);
        }
        if to > next {
            return Err(bad("past the end of the log"));
        }
        if to < self.log_start() {
            return Err(bad("below the first stored offset"));
        }
        let mut batches: Vec<(u64, u64)> = Vec::new();
        self.store.batch_headers(self.id, OffsetRange::new(to, next), &mut |base, len, _| {
            batches.push((base, len));
            true
        })?;
        if batches.first().map(|b| b.0) != Some(to) {
            return Err(bad("not the first offset of a stored batch"));
        }
        let mut write = AtomicWrite::new();
        write.push(Mutation::DeleteRange(
            Cf::Records,
            record_key(self.id, to).to_vec(),
            record_key(self.id, next).to_vec(),
        ));
        let keep = self.segments.iter().position(|s| s.base_offset >= to).unwrap_or(self.segments.len());
        let dropped: Vec<SegmentMeta> = self.segments.drain(keep..).collect();
        for s in dropped {
            write.push(Mutation::Delete(Cf::Meta, self.segment_key(s.base_offset)));
        }
        if let Some(last) = self.segments.last().copied().filter(|s| s.end_offset > to) {
            let removed: u64 = batches.iter().filter(|(base, _)| *base < last.end_offset).map(|(_, len)| len).sum();
            let previous_ts = self
                .store
                .last_batch_timestamp(self.id, OffsetRange::new(last.base_offset, to))?
                .unwrap_or(last.first_timestamp_ms);
            let seg = self.active_mut();
            seg.end_offset = to;
            seg.bytes = seg.bytes.saturating_sub(removed);
            seg.last_timestamp_ms = previous_ts;
            seg.sealed = false;
            write.push(self.segment_put(self.active()));
        }
        if self.segments.last().is_none_or(|s| s.sealed) {
            self.segments.push(SegmentMeta::open(to, now_ms));
            write.push(self.segment_put(self.active()));
        }
        let mut changed: Vec<u64> = Vec::new();
        for (id, state) in &mut self.producers {
            if state.rewind(to) {
                changed.push(*id);
            }
        }
        for id in changed {
            write.push(self.producer_put(id, &self.producers[&id]));
        }
        Ok(Some(write))
    }
}

/// The read half of a partition log: cloneable, shared by fetches and groups.
#[derive(Debug, Clone)]
pub struct PartitionReader {
    store: Arc<Store>,
    id: PartitionId,
}

impl PartitionReader {
    /// Reads `id` from `store`, whoever owns its log (a replicated log reads
    /// its entries back through this).
    pub fn new(store: Arc<Store>, id: PartitionId) -> Self {
        PartitionReader { store, id }
    }

    /// Records with offsets in `range`, at most `max_messages` and about
    /// `max_bytes` (at least one if any exists), CRC-checked. Blocking.
    ///
    /// # Correctness
    /// Returns whatever is stored, committed or not: callers cap
    /// `range.end` at the partition's committed watermark.
    pub fn read_blocking(
        &self,
        range: OffsetRange,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.store.read(self.id, range, max_messages, max_bytes)
    }

    /// `read_blocking` on the blocking pool, for async callers.
    pub async fn read(&self, range: OffsetRange, max_messages: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || reader.read_blocking(range, max_messages, max_bytes))
            .await
            .map_err(Error::ReadTask)?
    }

    /// The first offset in `range` whose timestamp is at least `timestamp_ms`.
    pub async fn offset_for_timestamp(&self, range: OffsetRange, timestamp_ms: i64) -> Result<Option<u64>> {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || reader.store.offset_for_timestamp(reader.id, range, timestamp_ms))
            .await
            .map_err(Error::ReadTask)?
    }

    /// The stored bytes of the batch at `base_offset` (header and body, as
    /// written), if there is one: how a replicated log reads a batch back to
    /// send it to a peer. Blocking; the caller checks it with
    /// `record::split_batch`.
    pub fn raw_batch(&self, base_offset: u64) -> Result<Option<Vec<u8>>> {
        self.store.raw_batch(self.id, base_offset)
    }

    /// The stored bytes of the batches that start in `range`, oldest first,
    /// about `max_bytes` of them (at least one if any): what a replica that
    /// installs a snapshot copies (`PartitionLog::append_copy`). Blocking;
    /// each batch's CRC is checked here and again where it is copied to.
    pub fn raw_batches(&self, range: OffsetRange, max_bytes: usize) -> Result<Vec<Vec<u8>>> {
        self.store.raw_batches(self.id, range, max_bytes)
    }

    /// The store (for its free-space alarm and poisoning).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StoredRecord;
    use crate::topic::Durability;
    use crate::TopicId;
    use bytes::Bytes;

    fn mem() -> Arc<Store> {
        Store::open_in_memory(&crate::MemoryDisk::new()).expect("memory store").0
    }

    fn settings() -> TopicConfig {
        TopicConfig {
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
        let mut log = PartitionLog::new(&mem(), PartitionId::new(TopicId(1), 0), 0);
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

    /// A partition of ten stored batches of three records, over several segments.
    fn ten_stored_batches() -> (Arc<Store>, PartitionLog) {
        let store = mem();
        let mut log = PartitionLog::new(&store, PartitionId::new(TopicId(1), 0), 0);
        for i in 0..10 {
            let Append::Write { write, .. } = log.append(&recs(3, 100), None, i, &settings()).expect("append") else {
                panic!("a new batch")
            };
            store.apply(std::iter::once(&write), true).expect("write");
        }
        (store, log)
    }

    #[test]
    fn trimming_below_a_limit_keeps_what_is_above_and_a_restart_jumps_ahead() {
        let (store, mut log) = ten_stored_batches();
        let all = TopicConfig { retention_bytes: 1, ..settings() };
        let limit = log.segments()[2].end_offset;
        let trim = log.trim_below(20, &all, limit, 0).expect("something to trim");
        store.apply(std::iter::once(&trim.write), true).expect("write");
        assert_eq!(trim.log_start, limit, "segments up to the limit went, no further");
        assert_eq!(log.log_start(), limit);
        assert!(log.retention_due(20, &all), "the limit held more back");
        assert!(!log.retention_due(20, &settings()), "nothing is due without limits");
        let write = log.restart_at(40, 30).expect("restart ahead");
        store.apply(std::iter::once(&write), true).expect("write");
        assert_eq!((log.log_start(), log.next_offset()), (40, 40));
        let read = log.reader().read_blocking(OffsetRange::new(0, 40), 100, usize::MAX).expect("read");
        assert!(read.is_empty(), "nothing below the restart is stored: {read:?}");
        assert!(log.restart_at(39, 30).is_err(), "never backwards");
    }

    #[test]
    fn a_purge_floor_removes_the_segments_below_it_whatever_retention_says() {
        let (store, mut log) = ten_stored_batches();
        let keep = settings(); // no retention limit: only the floor removes anything
        assert!(log.trim_below(20, &keep, u64::MAX, 0).is_none(), "nothing goes without a floor");
        let floor = log.segments()[1].end_offset + 1; // inside the third segment
        let trim = log.trim_below(20, &keep, u64::MAX, floor).expect("segments below the floor go");
        store.apply(std::iter::once(&trim.write), true).expect("write");
        assert_eq!(log.log_start(), log.segments()[0].base_offset);
        assert!(log.log_start() < floor, "a segment the floor cuts through stays whole");
        assert_eq!(trim.removed.len(), 2);
        // Everything purged: the active segment rolls and goes once no log entry holds it.
        let end = log.next_offset();
        let held = log.trim_below(21, &keep, log.log_start(), end);
        assert!(held.as_ref().is_none_or(|t| t.removed.is_empty()), "the limit holds every segment back");
        if let Some(t) = held {
            store.apply(std::iter::once(&t.write), true).expect("write");
        }
        let trim = log.trim_below(22, &keep, u64::MAX, end).expect("the rest goes");
        store.apply(std::iter::once(&trim.write), true).expect("write");
        assert_eq!((log.log_start(), log.next_offset()), (end, end), "only the empty active segment is left");
        let read = log.reader().read_blocking(OffsetRange::new(0, end), 100, usize::MAX).expect("read");
        assert!(read.is_empty(), "nothing below the floor is stored: {read:?}");
    }

    #[test]
    fn copied_batches_continue_a_log_with_the_same_bytes_and_producer_state() {
        let (source, copy) = (mem(), mem());
        let id = PartitionId::new(TopicId(1), 0);
        let mut a = PartitionLog::new(&source, id, 0);
        for i in 0..6u64 {
            let p = Some(ProducerSeq { producer_id: 4, sequence: i });
            let Append::Write { write, .. } = a.append(&recs(2, 300), p, 10 + i as i64, &settings()).expect("append")
            else {
                panic!("a new batch")
            };
            source.apply(std::iter::once(&write), true).expect("write");
        }
        let mut b = PartitionLog::new(&copy, id, 0);
        let first = a.reader().raw_batches(OffsetRange::new(0, 12), 1).expect("read");
        assert_eq!(first.len(), 1, "at least one batch, then the byte budget stops");
        let rest = a.reader().raw_batches(OffsetRange::new(2, 12), usize::MAX).expect("read");
        assert_eq!(rest.len(), 5);
        for raw in first.iter().chain(&rest) {
            let write = b.append_copy(raw, &settings()).expect("copy");
            copy.apply(std::iter::once(&write), true).expect("write");
        }
        assert_eq!(b.next_offset(), 12);
        let all = |log: &PartitionLog| log.reader().read_blocking(OffsetRange::new(0, 12), 100, usize::MAX);
        assert_eq!(all(&a).expect("source"), all(&b).expect("copy"));
        assert!(b.segments().len() > 1, "segments roll in the copy too");
        let retry = Some(ProducerSeq { producer_id: 4, sequence: 5 });
        assert!(
            matches!(
                b.append(&recs(2, 300), retry, 99, &settings()),
                Ok(Append::Duplicate { base_offset: 10, count: 2 })
            ),
            "the copy knows the producer's last batch"
        );
        let err = b.append_copy(&first[0], &settings()).expect_err("not at the end");
        assert!(err.to_string().contains("does not start at the end"), "{err}");
        let mut damaged = rest[0].clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(
            PartitionLog::new(&mem(), id, 0).append_copy(&damaged, &settings()).is_err(),
            "a damaged copy is refused"
        );
    }

    #[test]
    fn an_encoded_batch_is_stored_exactly_as_the_same_records_appended() {
        use crate::record::{count_body, encode_body, split_batch};
        let (direct, replica) = (mem(), mem());
        let id = PartitionId::new(TopicId(1), 0);
        let mut a = PartitionLog::new(&direct, id, 0);
        let mut b = PartitionLog::new(&replica, id, 0);
        let p = Some(ProducerSeq { producer_id: 4, sequence: 0 });
        let records = recs(3, 50);
        let body = encode_body(&records);
        assert_eq!(count_body(&body), Ok(3));
        assert!(count_body(&body[..body.len() - 1]).is_err(), "a cut body is refused");
        let (Append::Write { base_offset: x, write: wa }, Append::Write { base_offset: y, write: wb }) = (
            a.append(&records, p, 77, &settings()).expect("append"),
            b.append_encoded(&body, 3, p, 77, &settings()).expect("append encoded"),
        ) else {
            panic!("both are new batches")
        };
        assert_eq!(x, y);
        direct.apply(std::iter::once(&wa), true).expect("write");
        replica.apply(std::iter::once(&wb), true).expect("write");
        let (ra, rb) = (a.reader().raw_batch(0).expect("read"), b.reader().raw_batch(0).expect("read"));
        assert_eq!(ra, rb, "same bytes on both");
        let raw = ra.expect("stored");
        let (header, stored_body) = split_batch(&raw).expect("valid batch");
        assert_eq!((header.count, header.timestamp_ms, header.producer_id, stored_body), (3, 77, 4, &body[..]));
        assert!(matches!(b.append_encoded(&body, 3, p, 78, &settings()), Ok(Append::Duplicate { base_offset: 0, .. })));
    }

    #[test]
    fn retried_sequence_gets_original_offsets() {
        let mut log = PartitionLog::new(&mem(), PartitionId::new(TopicId(1), 0), 0);
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
        let mut log = PartitionLog::new(&mem(), PartitionId::new(TopicId(1), 0), 0);
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
        let mut log = PartitionLog::new(&mem(), PartitionId::new(TopicId(1), 0), 0);
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
