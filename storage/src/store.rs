//! `Store`: one storage engine per broker (RocksDB, or the in-memory twin),
//! with what is engine-independent on top: recovering every partition's tail
//! from metadata alone, topic metadata writes, the CRC-checked read path, and
//! poisoning.
//!
//! Writes go only through the writer (`writer`), which calls `apply`.
//!
//! # Correctness
//! After any failed write or WAL sync the store is **poisoned**: it refuses
//! every later write, because the in-memory tails (and a failed fsync's pages)
//! may be ahead of what is on disk, and only a restart — which recovers the
//! truth from disk — is safe. An fsync is never retried. The reason is kept
//! (`poison_reason`) and announced (`poisoned`) so the broker can stop serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use crate::engine::memory::{MemoryDisk, MemoryEngine};
use crate::engine::rocks::RocksEngine;
use crate::engine::{AtomicWrite, Cf, Engine, Mutation, ScanFrom, StorageStats};
use crate::keys::{
    self, parse_partition_meta_key, parse_record_key, record_key, TAG_NEXT_TOPIC_ID, TAG_PRODUCER, TAG_SEGMENT,
    TAG_TOPIC,
};
use crate::log::PartitionLog;
use crate::producer::ProducerState;
use crate::record::{decode_batch, decode_header, StoredRecord};
use crate::segment::SegmentMeta;
use crate::topic::TopicMeta;
use crate::{Error, OffsetRange, PartitionId, Result, TopicId};

/// Tuning of the storage engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Memtable size of the records column family, bytes.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
    /// Free space on the data volume below which new data is refused (0: no check).
    pub min_free_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { write_buffer_bytes: 64 << 20, background_jobs: 2, min_free_bytes: 0 }
    }
}

/// What recovery found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The id the next created topic gets.
    pub next_topic_id: u64,
    /// Every topic with its partitions' logs, partitions in order.
    pub topics: Vec<(TopicMeta, Vec<PartitionLog>)>,
    /// Every group: name and the broker's configuration bytes.
    pub groups: Vec<(String, Vec<u8>)>,
    /// Every schedule of a single broker: name and what is stored of it.
    pub schedules: Vec<(String, crate::schedule::StoredSchedule)>,
    /// Every permission rule of a single broker: id and the broker's encoding.
    pub acls: Vec<(u64, serde_json::Value)>,
    /// Stored group state by group id.
    pub group_states: HashMap<u64, crate::group::RecoveredGroupState>,
    /// Partitions stored without a topic entry: in a cluster, a replica
    /// appends a shard's batch before its catalog has created the topic, and
    /// the shard takes these back at start. A single broker has none.
    pub untracked: Vec<PartitionLog>,
    /// Metadata entries read.
    pub entries: usize,
    /// How long recovery took.
    pub elapsed: std::time::Duration,
}

/// Space that deleted records still occupy, to be given back in the
/// background (`Store::reclaim`) once their deletion is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaim {
    from: Vec<u8>,
    to: Vec<u8>,
}

/// The storage of every topic and group of a broker.
pub struct Store {
    engine: Box<dyn Engine>,
    path: Option<PathBuf>,
    poisoned: AtomicBool,
    poison: watch::Sender<Option<String>>,
    unsynced: AtomicBool,
    commits: AtomicU64,
    disk: crate::DiskSpace,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the RocksDB store in `path` and recovers
    /// every partition's tail from metadata, without reading record batches.
    pub fn open(path: &Path, options: &StoreConfig) -> Result<(Arc<Store>, Recovered)> {
        let started = Instant::now();
        let engine = RocksEngine::open(path, options)?;
        let disk = crate::DiskSpace::new(path, options.min_free_bytes);
        Self::finish_open(Box::new(engine), Some(path.to_owned()), disk, started)
    }

    /// Opens a store over `disk` in memory: the same logs, recovery and
    /// checks as `open`, for tests and model checks that restart thousands of
    /// times. Opening the same disk again is a restart.
    pub fn open_in_memory(disk: &MemoryDisk) -> Result<(Arc<Store>, Recovered)> {
        let started = Instant::now();
        let space = crate::DiskSpace::new(&std::env::temp_dir(), 0);
        Self::finish_open(Box::new(MemoryEngine::open(disk)), None, space, started)
    }

    fn finish_open(
        engine: Box<dyn Engine>,
        path: Option<PathBuf>,
        disk: crate::DiskSpace,
        started: Instant,
    ) -> Result<(Arc<Store>, Recovered)> {
        let store = Arc::new(Store {
            engine,
            path,
            poisoned: AtomicBool::new(false),
            poison: watch::Sender::new(None),
            unsynced: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            disk,
        });
        let mut recovered = store.recover()?;
        recovered.elapsed = started.elapsed();
        Ok((store, recovered))
    }

    fn recover(self: &Arc<Self>) -> Result<Recovered> {
        let now = now_ms();
        let mut rec = Recovered::default();
        let mut topics: HashMap<TopicId, TopicMeta> = HashMap::new();
        let mut segments: HashMap<PartitionId, Vec<SegmentMeta>> = HashMap::new();
        let mut producers: HashMap<PartitionId, HashMap<u64, ProducerState>> = HashMap::new();
        self.engine.scan(Cf::Meta, &[], None, ScanFrom::AtOrAfter(&[]), &mut |k, v| {
            rec.entries += 1;
            let bad = |reason: &str| Error::MetaCorruption { key: k.to_vec(), reason: reason.to_owned() };
            match k.first() {
                Some(&TAG_NEXT_TOPIC_ID) => {
                    rec.next_topic_id = u64::from_be_bytes(v.try_into().map_err(|_| bad("topic counter"))?);
                }
                Some(&TAG_TOPIC) => {
                    let meta: TopicMeta = serde_json::from_slice(v).map_err(|_| bad("topic entry"))?;
                    topics.insert(meta.id, meta);
                }
                Some(&TAG_SEGMENT) => {
                    let (p, base) = parse_partition_meta_key(k).ok_or_else(|| bad("segment key"))?;
                    let s = SegmentMeta::decode(base, v).ok_or_else(|| bad("segment entry"))?;
                    segments.entry(p).or_default().push(s);
                }
                Some(&keys::TAG_GROUP) => {
                    let name = String::from_utf8(k[1..].to_vec()).map_err(|_| bad("group name"))?;
                    rec.groups.push((name, v.to_vec()));
                }
                Some(&keys::TAG_SCHEDULE) => {
                    let name = String::from_utf8(k[1..].to_vec()).map_err(|_| bad("schedule name"))?;
                    rec.schedules.push((name, serde_json::from_slice(v).map_err(|_| bad("schedule entry"))?));
                }
                Some(&keys::TAG_ACL) => {
                    let id = crate::acl::parse_key(k).ok_or_else(|| bad("permission rule key"))?;
                    rec.acls.push((id, serde_json::from_slice(v).map_err(|_| bad("permission rule"))?));
                }
                Some(&TAG_PRODUCER) => {
                    let (p, id) = parse_partition_meta_key(k).ok_or_else(|| bad("producer key"))?;
                    let s = ProducerState::decode(v).ok_or_else(|| bad("producer entry"))?;
                    producers.entry(p).or_default().insert(id, s);
                }
                _ => return Err(bad("unknown tag")),
            }
            Ok(true)
        })?;
        let group_states = &mut rec.group_states;
        let mut group_entries = 0;
        self.engine.scan(Cf::Groups, &[], None, ScanFrom::AtOrAfter(&[]), &mut |k, v| {
            group_entries += 1;
            if !crate::group::recover_entry(k, v, group_states) {
                return Err(Error::MetaCorruption { key: k.to_vec(), reason: "group state entry".into() });
            }
            Ok(true)
        })?;
        rec.entries += group_entries;
        let mut metas: Vec<TopicMeta> = topics.into_values().collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        for meta in metas {
            rec.next_topic_id = rec.next_topic_id.max(meta.id.0 + 1);
            let parts = (0..meta.partitions)
                .map(|index| {
                    let p = PartitionId::new(meta.id, index);
                    let segs = segments.remove(&p).unwrap_or_default();
                    let prods = producers.remove(&p).unwrap_or_default();
                    PartitionLog::recovered(self, p, segs, prods, now)
                })
                .collect();
            rec.topics.push((meta, parts));
        }
        let mut untracked: Vec<PartitionId> = segments.keys().chain(producers.keys()).copied().collect();
        untracked.sort();
        untracked.dedup();
        for p in untracked {
            let segs = segments.remove(&p).unwrap_or_default();
            let prods = producers.remove(&p).unwrap_or_default();
            rec.untracked.push(PartitionLog::recovered(self, p, segs, prods, now));
        }
        Ok(rec)
    }

    /// The write that creates a topic and sets the id counter to `next_id`
    /// (past `meta.id`; in a cluster the catalog allocates topic ids, and the
    /// counter, which groups still draw from, must never go back).
    pub fn create_topic(meta: &TopicMeta, next_id: u64) -> Result<AtomicWrite> {
        let json =
            serde_json::to_vec(meta).map_err(|source| Error::EncodeTopic { topic: meta.name.clone(), source })?;
        let mut w = Self::next_id(next_id.max(meta.id.0 + 1));
        w.push(Mutation::Put(Cf::Meta, keys::topic_key(&meta.name), json));
        Ok(w)
    }

    /// The write that advances the id counter shared by topics and groups (ids are never reused).
    pub fn next_id(next: u64) -> AtomicWrite {
        AtomicWrite::from(vec![Mutation::Put(Cf::Meta, vec![TAG_NEXT_TOPIC_ID], next.to_be_bytes().to_vec())])
    }

    /// The write that replaces a topic's metadata (new settings).
    pub fn update_topic(meta: &TopicMeta) -> Result<AtomicWrite> {
        let json =
            serde_json::to_vec(meta).map_err(|source| Error::EncodeTopic { topic: meta.name.clone(), source })?;
        Ok(AtomicWrite::from(vec![Mutation::Put(Cf::Meta, keys::topic_key(&meta.name), json)]))
    }

    /// The write that deletes a topic with all its records and metadata, and
    /// the space to reclaim once it is committed.
    ///
    /// # Correctness
    /// The caller stops the topic's partition logs first, so nothing they
    /// prepared can be committed after the delete.
    pub fn delete_topic(meta: &TopicMeta) -> (AtomicWrite, Reclaim) {
        let (seg_from, seg_to) = keys::topic_meta_range(TAG_SEGMENT, meta.id);
        let (prod_from, prod_to) = keys::topic_meta_range(TAG_PRODUCER, meta.id);
        let records = Reclaim {
            from: record_key(PartitionId::new(meta.id, 0), 0).to_vec(),
            to: keys::topic_records_end(meta.id).to_vec(),
        };
        let write = AtomicWrite::from(vec![
            Mutation::Delete(Cf::Meta, keys::topic_key(&meta.name)),
            Mutation::DeleteRange(Cf::Records, records.from.clone(), records.to.clone()),
            Mutation::DeleteRange(Cf::Meta, seg_from, seg_to),
            Mutation::DeleteRange(Cf::Meta, prod_from, prod_to),
        ]);
        (write, records)
    }

    pub(crate) fn reclaim_range(from: Vec<u8>, to: Vec<u8>) -> Reclaim {
        Reclaim { from, to }
    }

    /// Applies `writes` as one atomic write, fsyncing the WAL first if `sync`.
    ///
    /// # Correctness
    /// Called only by the writer thread (or a test that is the only writer).
    /// On error the store is poisoned.
    pub fn apply<'a>(&self, writes: impl Iterator<Item = &'a AtomicWrite>, sync: bool) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        if !sync {
            self.unsynced.store(true, Ordering::Release);
        }
        let result = crate::failpoints::write_fault()
            .and_then(|()| self.engine.apply(&mut writes.flat_map(|w| w.mutations.iter()), sync));
        // Even a full disk poisons: the partition tails already moved past what is stored.
        result.map_err(|e| self.poison_with(if sync { "synced write" } else { "write" }, e))
    }

    /// Fsyncs the WAL (for topics in `interval` durability, and at shutdown).
    /// A failure poisons the store: the pages it failed to sync may be lost.
    pub fn sync_wal(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        self.unsynced.store(false, Ordering::Release);
        crate::failpoints::sync_fault()
            .and_then(|()| self.engine.sync_wal())
            .map_err(|e| self.poison_with("WAL sync", e))
    }

    fn poison_with(&self, what: &str, e: Error) -> Error {
        let reason = format!("{what} failed: {e}");
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            metrics::counter!(crate::metric_names::POISONINGS).increment(1);
            tracing::error!(error = %e, what, "storage poisoned: refusing writes until restart (an fsync is never retried)");
            self.poison.send_replace(Some(reason));
        }
        e
    }

    /// Whether an earlier write or sync failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Why the store is poisoned, if it is.
    pub fn poison_reason(&self) -> Option<String> {
        self.poison.borrow().clone()
    }

    /// Changes to `Some(reason)` when the store is poisoned (for health reporting).
    pub fn poisoned(&self) -> watch::Receiver<Option<String>> {
        self.poison.subscribe()
    }

    /// The data volume's free-space alarm: checked before accepting new data.
    pub fn disk(&self) -> &crate::DiskSpace {
        &self.disk
    }

    /// Atomic writes made since open; with group commit, far fewer than requests.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Whether writes were made without fsync since the last `sync_wal`.
    pub fn has_unsynced_writes(&self) -> bool {
        self.unsynced.load(Ordering::Acquire)
    }

    pub(crate) fn engine(&self) -> &dyn Engine {
        self.engine.as_ref()
    }

    /// The value of `key` in `cf`, if any.
    pub(crate) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.engine.scan(cf, key, None, ScanFrom::AtOrAfter(key), &mut |k, v| {
            if k == key {
                found = Some(v.to_vec());
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// Flushes memtables to files so a restart replays no WAL (clean shutdown).
    pub fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    /// Reads records of a partition with offsets in `range`, at most
    /// `max_messages` and about `max_bytes` (at least one record if any exists).
    /// Every batch's CRC is checked; a damaged batch is an error, never data.
    pub(crate) fn read(
        &self,
        partition: PartitionId,
        range: OffsetRange,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let (from, until) = (range.start, range.end);
        if from >= until || max_messages == 0 {
            return Ok(out);
        }
        let lower = record_key(partition, 0);
        let upper = record_key(partition, until);
        let start = record_key(partition, from);
        let mut bytes = 0usize;
        self.engine.scan(Cf::Records, &lower, Some(&upper), ScanFrom::AtOrBefore(&start), &mut |k, v| {
            let base = match parse_record_key(k) {
                Some((p, base)) if p == partition => base,
                _ => return Ok(false),
            };
            let corrupt = |reason: String| corruption(partition, base, reason);
            let (header, records) =
                decode_batch(Bytes::copy_from_slice(v), from, until).map_err(|e| corrupt(e.to_string()))?;
            if header.base_offset != base {
                return Err(corrupt(format!("batch says base offset {} but is stored at {base}", header.base_offset)));
            }
            for r in records {
                bytes += r.value.len() + r.key.as_ref().map_or(0, |k| k.len());
                out.push(r);
                if out.len() >= max_messages || bytes >= max_bytes {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Visits the (base offset, encoded length, timestamp) of every batch of a
    /// partition starting in `range`, in order.
    pub(crate) fn batch_headers(
        &self,
        partition: PartitionId,
        range: OffsetRange,
        visit: &mut dyn FnMut(u64, u64, i64) -> bool,
    ) -> Result<()> {
        let lower = record_key(partition, range.start);
        let upper = record_key(partition, range.end);
        self.engine.scan(Cf::Records, &lower, Some(&upper), ScanFrom::AtOrAfter(&lower), &mut |k, v| {
            let Some((_, base)) = parse_record_key(k) else { return Ok(false) };
            let header = decode_header(v).map_err(|e| corruption(partition, base, e.to_string()))?;
            Ok(visit(base, v.len() as u64, header.timestamp_ms))
        })
    }

    /// The timestamp of the last batch starting in `range`, if any.
    pub(crate) fn last_batch_timestamp(&self, partition: PartitionId, range: OffsetRange) -> Result<Option<i64>> {
        if range.start >= range.end {
            return Ok(None);
        }
        let lower = record_key(partition, range.start);
        let upper = record_key(partition, range.end);
        let last = record_key(partition, range.end - 1);
        let mut found = None;
        self.engine.scan(Cf::Records, &lower, Some(&upper), ScanFrom::AtOrBefore(&last), &mut |k, v| {
            let base = parse_record_key(k).map_or(range.start, |(_, b)| b);
            let header = decode_header(v).map_err(|e| corruption(partition, base, e.to_string()))?;
            found = Some(header.timestamp_ms);
            Ok(false)
        })?;
        Ok(found)
    }

    /// The first offset in `range` whose timestamp is at least `timestamp_ms`.
    pub(crate) fn offset_for_timestamp(
        &self,
        partition: PartitionId,
        range: OffsetRange,
        timestamp_ms: i64,
    ) -> Result<Option<u64>> {
        let mut found = None;
        self.batch_headers(partition, range, &mut |base, _, ts| {
            if ts >= timestamp_ms {
                found = Some(base.max(range.start));
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Gives back the disk space of records whose deletion has committed:
    /// drops whole files, then compacts what overlaps. Blocking; best effort.
    pub fn reclaim(&self, r: &Reclaim) -> Result<()> {
        self.engine.reclaim(Cf::Records, &r.from, &r.to)
    }

    /// Disk-level figures for metrics: what the engine wrote versus what it was given.
    pub fn stats(&self) -> StorageStats {
        self.engine.stats()
    }

    /// An integer engine property of the records family (e.g. `rocksdb.estimate-pending-compaction-bytes`).
    pub fn records_property(&self, name: &str) -> Option<u64> {
        self.engine.records_property(name)
    }

    /// The data directory (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The bytes stored for the batch of `partition` at `base_offset`, unchecked.
    pub(crate) fn raw_batch(&self, partition: PartitionId, base_offset: u64) -> Result<Option<Vec<u8>>> {
        self.get(Cf::Records, &record_key(partition, base_offset))
    }

    /// Batches starting in `range`, raw and CRC-checked, about `max_bytes` (at least one).
    pub(crate) fn raw_batches(
        &self,
        partition: PartitionId,
        range: OffsetRange,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        if range.start >= range.end {
            return Ok(out);
        }
        let lower = record_key(partition, range.start);
        let upper = record_key(partition, range.end);
        let mut bytes = 0usize;
        self.engine.scan(Cf::Records, &lower, Some(&upper), ScanFrom::AtOrAfter(&lower), &mut |k, v| {
            let Some((_, base)) = parse_record_key(k) else { return Ok(false) };
            let header = decode_header(v).map_err(|e| corruption(partition, base, e.to_string()))?;
            if header.base_offset != base {
                return Err(corruption(partition, base, format!("batch says base offset {}", header.base_offset)));
            }
            bytes += v.len();
            out.push(v.to_vec());
            Ok(bytes < max_bytes)
        })?;
        Ok(out)
    }

    /// Writes raw bytes under a record key, bypassing encoding: lets tests damage a batch.
    #[doc(hidden)]
    pub fn put_raw_record_for_test(&self, partition: PartitionId, offset: u64, value: &[u8]) -> Result<()> {
        let m = Mutation::Put(Cf::Records, record_key(partition, offset).to_vec(), value.to_vec());
        self.engine.apply(&mut std::iter::once(&m), true)
    }

    /// Reads the raw bytes of a batch: lets tests damage a batch.
    #[doc(hidden)]
    pub fn raw_record_for_test(&self, partition: PartitionId, offset: u64) -> Result<Option<Vec<u8>>> {
        self.get(Cf::Records, &record_key(partition, offset))
    }
}

fn corruption(partition: PartitionId, offset: u64, reason: String) -> Error {
    metrics::counter!(crate::metric_names::CORRUPTION).increment(1);
    tracing::error!(topic_id = partition.topic.0, partition = partition.index, offset, %reason, "corrupted batch detected on read");
    Error::Corruption { partition, offset, reason }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
