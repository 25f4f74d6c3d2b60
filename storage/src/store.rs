//! `Store`: the RocksDB instance — opening and tuning it, recovering every
//! partition's tail from metadata alone, and the read path.
//!
//! Writes go only through the writer (`writer`); this type applies them.
//! After any failed write the store is poisoned and refuses further writes:
//! the in-memory tails may be ahead of the disk, so only a restart (which
//! recovers from what is stored) is safe.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use crate::keys::{
    self, parse_partition_meta_key, parse_record_key, record_key, TAG_NEXT_TOPIC_ID, TAG_PRODUCER, TAG_SEGMENT,
    TAG_TOPIC,
};
use crate::log::PartitionLog;
use crate::producer::ProducerState;
use crate::record::{decode_batch, decode_header, StoredRecord};
use crate::segment::SegmentMeta;
use crate::topic::TopicMeta;
use crate::{Error, Result};

const CF_RECORDS: &str = "records";
const CF_META: &str = "meta";
const CF_GROUPS: &str = "groups";

/// A column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Record batches.
    Records,
    /// Topics, segments, producer states, group configurations.
    Meta,
    /// Consumer-group cursors, message states and the redelivery time index.
    Groups,
}

/// One change in an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Set a key.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Cf, Vec<u8>),
    /// Remove every key in [from, to).
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

impl Mutation {
    /// Approximate bytes the mutation adds to a write.
    pub fn size(&self) -> usize {
        match self {
            Mutation::Put(_, k, v) => k.len() + v.len(),
            Mutation::Delete(_, k) => k.len(),
            Mutation::DeleteRange(_, a, b) => a.len() + b.len(),
        }
    }
}

/// Tuning of the RocksDB instance.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Memtable size of the records column family, bytes.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
    /// Free space on the data volume below which new data is refused (0: no check).
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { write_buffer_bytes: 64 << 20, background_jobs: 2, min_free_bytes: 0 }
    }
}

/// What recovery found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The id the next created topic gets.
    pub next_topic_id: u64,
    /// Every topic with its partitions' tails, partitions in order.
    pub topics: Vec<(TopicMeta, Vec<PartitionLog>)>,
    /// Every group: name, the broker's configuration bytes, and its stored state by group id.
    pub groups: Vec<(String, Vec<u8>)>,
    /// Stored group state by group id.
    pub group_states: HashMap<u64, crate::group::RecoveredGroupState>,
    /// Metadata entries read.
    pub entries: usize,
    /// How long recovery took.
    pub elapsed: std::time::Duration,
}

/// The RocksDB instance holding every topic.
pub struct Store {
    db: DB,
    /// Kept for its statistics object (RocksDB's tickers).
    opts: Options,
    path: PathBuf,
    poisoned: AtomicBool,
    unsynced: AtomicBool,
    commits: std::sync::atomic::AtomicU64,
    disk: crate::DiskSpace,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

fn records_cf_options(o: &StoreOptions) -> Options {
    let mut cf = Options::default();
    cf.set_write_buffer_size(o.write_buffer_bytes);
    cf.set_max_write_buffer_number(4);
    cf.set_min_write_buffer_number_to_merge(1);
    // Values are opaque application payloads: compressing them rarely pays for the CPU.
    cf.set_compression_type(DBCompressionType::None);
    cf.set_target_file_size_base(64 << 20);
    cf.set_level_compaction_dynamic_level_bytes(true);
    // Record batches go to blob files, written once at flush: compaction then moves
    // only keys and blob references, which keeps write amplification near WAL + one
    // copy. A log is deleted oldest first (retention) or a topic at a time, so a blob
    // file's space comes back when none of its batches is referenced any more; blob
    // garbage collection (which would rewrite live batches) stays off.
    cf.set_enable_blob_files(true);
    cf.set_min_blob_size(MIN_BLOB_BYTES);
    cf.set_blob_file_size(o.write_buffer_bytes as u64);
    cf.set_enable_blob_gc(false);
    cf
}

/// Batches at least this large are stored in blob files; smaller ones stay in
/// the LSM tree, where compaction rewriting them costs little.
const MIN_BLOB_BYTES: u64 = 4096;

impl Store {
    /// Opens (creating if needed) the store in `path` and recovers every
    /// partition's tail from metadata, without reading record batches.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<(Store, Recovered)> {
        let started = Instant::now();
        std::fs::create_dir_all(path).map_err(|source| Error::DataDir { path: path.to_owned(), source })?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_max_total_wal_size(256 << 20);
        db_opts.set_keep_log_file_num(4);
        db_opts.enable_statistics();
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_RECORDS, records_cf_options(options)),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_GROUPS, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let store = Store {
            db,
            opts: db_opts,
            path: path.to_owned(),
            poisoned: AtomicBool::new(false),
            unsynced: AtomicBool::new(false),
            commits: Default::default(),
            disk: crate::DiskSpace::new(path, options.min_free_bytes),
        };
        let mut recovered = store.recover()?;
        recovered.elapsed = started.elapsed();
        Ok((store, recovered))
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        let name = match cf {
            Cf::Records => CF_RECORDS,
            Cf::Meta => CF_META,
            Cf::Groups => CF_GROUPS,
        };
        // Both families are created by `open`; their absence would be a bug here.
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn recover(&self) -> Result<Recovered> {
        let now = now_ms();
        let mut rec = Recovered::default();
        let mut topics: HashMap<u64, TopicMeta> = HashMap::new();
        type PartKey = (u64, u32);
        let mut segments: HashMap<PartKey, Vec<SegmentMeta>> = HashMap::new();
        let mut producers: HashMap<PartKey, HashMap<u64, ProducerState>> = HashMap::new();
        for item in self.db.iterator_cf(self.cf(Cf::Meta), IteratorMode::Start) {
            let (k, v) = item?;
            rec.entries += 1;
            let bad = |reason: &str| Error::MetaCorruption { key: k.to_vec(), reason: reason.to_owned() };
            match k.first() {
                Some(&TAG_NEXT_TOPIC_ID) => {
                    rec.next_topic_id = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| bad("topic counter"))?);
                }
                Some(&TAG_TOPIC) => {
                    let meta: TopicMeta = serde_json::from_slice(&v).map_err(|_| bad("topic entry"))?;
                    topics.insert(meta.id, meta);
                }
                Some(&TAG_SEGMENT) => {
                    let (t, p, base) = parse_partition_meta_key(&k).ok_or_else(|| bad("segment key"))?;
                    let s = SegmentMeta::decode(base, &v).ok_or_else(|| bad("segment entry"))?;
                    segments.entry((t, p)).or_default().push(s);
                }
                Some(&keys::TAG_GROUP) => {
                    let name = String::from_utf8(k[1..].to_vec()).map_err(|_| bad("group name"))?;
                    rec.groups.push((name, v.to_vec()));
                }
                Some(&TAG_PRODUCER) => {
                    let (t, p, id) = parse_partition_meta_key(&k).ok_or_else(|| bad("producer key"))?;
                    let s = ProducerState::decode(&v).ok_or_else(|| bad("producer entry"))?;
                    producers.entry((t, p)).or_default().insert(id, s);
                }
                _ => return Err(bad("unknown tag")),
            }
        }
        for item in self.db.iterator_cf(self.cf(Cf::Groups), IteratorMode::Start) {
            let (k, v) = item?;
            rec.entries += 1;
            if !crate::group::recover_entry(&k, &v, &mut rec.group_states) {
                return Err(Error::MetaCorruption { key: k.to_vec(), reason: "group state entry".into() });
            }
        }
        let mut metas: Vec<TopicMeta> = topics.into_values().collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        for meta in metas {
            rec.next_topic_id = rec.next_topic_id.max(meta.id + 1);
            let parts = (0..meta.partitions)
                .map(|p| {
                    let segs = segments.remove(&(meta.id, p)).unwrap_or_default();
                    let prods = producers.remove(&(meta.id, p)).unwrap_or_default();
                    PartitionLog::recovered(meta.id, p, segs, prods, now)
                })
                .collect();
            rec.topics.push((meta, parts));
        }
        Ok(rec)
    }

    /// Mutations that create a topic and advance the id counter.
    pub fn create_topic_mutations(meta: &TopicMeta) -> Result<Vec<Mutation>> {
        let json = serde_json::to_vec(meta).map_err(|e| Error::Task(format!("encoding topic metadata: {e}")))?;
        Ok(vec![Self::next_id_mutation(meta.id + 1), Mutation::Put(Cf::Meta, keys::topic_key(&meta.name), json)])
    }

    /// Advances the id counter shared by topics and groups (ids are never reused).
    pub fn next_id_mutation(next: u64) -> Mutation {
        Mutation::Put(Cf::Meta, vec![TAG_NEXT_TOPIC_ID], next.to_be_bytes().to_vec())
    }

    /// Mutations that rewrite a topic's metadata (new settings).
    pub fn update_topic_mutations(meta: &TopicMeta) -> Result<Vec<Mutation>> {
        let json = serde_json::to_vec(meta).map_err(|e| Error::Task(format!("encoding topic metadata: {e}")))?;
        Ok(vec![Mutation::Put(Cf::Meta, keys::topic_key(&meta.name), json)])
    }

    /// Mutations that delete a topic with all its records and metadata.
    pub fn delete_topic_mutations(meta: &TopicMeta) -> Vec<Mutation> {
        let (seg_from, seg_to) = keys::topic_meta_range(TAG_SEGMENT, meta.id);
        let (prod_from, prod_to) = keys::topic_meta_range(TAG_PRODUCER, meta.id);
        vec![
            Mutation::Delete(Cf::Meta, keys::topic_key(&meta.name)),
            Mutation::DeleteRange(
                Cf::Records,
                record_key(meta.id, 0, 0).to_vec(),
                keys::topic_records_end(meta.id).to_vec(),
            ),
            Mutation::DeleteRange(Cf::Meta, seg_from, seg_to),
            Mutation::DeleteRange(Cf::Meta, prod_from, prod_to),
        ]
    }

    /// Applies `mutations` as one atomic write, fsyncing the WAL first if `sync`.
    ///
    /// # Correctness
    /// Called only by the writer thread. On error the store is poisoned.
    pub fn apply<'a>(&self, mutations: impl Iterator<Item = &'a Mutation>, sync: bool) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let mut batch = WriteBatch::default();
        for m in mutations {
            match m {
                Mutation::Put(cf, k, v) => batch.put_cf(self.cf(*cf), k, v),
                Mutation::Delete(cf, k) => batch.delete_cf(self.cf(*cf), k),
                Mutation::DeleteRange(cf, a, b) => batch.delete_range_cf(self.cf(*cf), a, b),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.commits.fetch_add(1, Ordering::Relaxed);
        if !sync {
            self.unsynced.store(true, Ordering::Release);
        }
        self.db.write_opt(batch, &opts).map_err(|e| {
            self.poisoned.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "write failed; storage poisoned, refusing writes until restart");
            Error::from_write(e)
        })
    }

    /// The data volume's free-space alarm: checked before accepting new data.
    pub fn disk(&self) -> &crate::DiskSpace {
        &self.disk
    }

    /// Atomic writes made since open; with group commit, far fewer than requests.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Whether an earlier write failed.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Fsyncs the WAL (for topics in `interval` durability, and at shutdown).
    pub fn sync_wal(&self) -> Result<()> {
        self.unsynced.store(false, Ordering::Release);
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// Whether writes were made without fsync since the last `sync_wal`.
    pub fn has_unsynced_writes(&self) -> bool {
        self.unsynced.load(Ordering::Acquire)
    }

    /// Flushes memtables to files so a restart replays no WAL (clean shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush_cf(self.cf(Cf::Records))?;
        self.db.flush_cf(self.cf(Cf::Meta))?;
        self.db.flush_cf(self.cf(Cf::Groups))?;
        Ok(())
    }

    /// Reads records of a partition with offsets in `[from, until)`, at most
    /// `max_messages` and about `max_bytes` (at least one record if any exists).
    /// Every batch's CRC is checked; a damaged batch is an error, never data.
    pub fn read(
        &self,
        topic_id: u64,
        partition: u32,
        from: u64,
        until: u64,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        if from >= until || max_messages == 0 {
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(record_key(topic_id, partition, 0).to_vec());
        opts.set_iterate_upper_bound(record_key(topic_id, partition, until).to_vec());
        let mut it = self.db.raw_iterator_cf_opt(self.cf(Cf::Records), opts);
        it.seek_for_prev(record_key(topic_id, partition, from));
        if !it.valid() {
            it.seek(record_key(topic_id, partition, from));
        }
        let mut bytes = 0usize;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let base = match parse_record_key(k) {
                Some((t, p, base)) if t == topic_id && p == partition => base,
                _ => break,
            };
            let corrupt = |reason: String| {
                metrics::counter!("sluice_storage_corruption_total").increment(1);
                tracing::error!(topic_id, partition, offset = base, %reason, "corrupted batch detected on read");
                Error::Corruption { topic_id, partition, offset: base, reason }
            };
            let (header, records) =
                decode_batch(Bytes::copy_from_slice(v), from, until).map_err(|e| corrupt(e.to_string()))?;
            if header.base_offset != base {
                return Err(corrupt(format!("batch says base offset {} but is stored at {base}", header.base_offset)));
            }
            for r in records {
                bytes += r.value.len() + r.key.as_ref().map_or(0, |k| k.len());
                out.push(r);
                if out.len() >= max_messages || bytes >= max_bytes {
                    return Ok(out);
                }
            }
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// The first offset in `[from, until)` whose timestamp is at least `timestamp_ms`.
    pub fn offset_for_timestamp(
        &self,
        topic_id: u64,
        partition: u32,
        from: u64,
        until: u64,
        timestamp_ms: i64,
    ) -> Result<Option<u64>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(record_key(topic_id, partition, until).to_vec());
        let it = self.db.iterator_cf_opt(
            self.cf(Cf::Records),
            opts,
            IteratorMode::From(&record_key(topic_id, partition, from), Direction::Forward),
        );
        for item in it {
            let (k, v) = item?;
            let Some((t, p, base)) = parse_record_key(&k) else { break };
            if t != topic_id || p != partition {
                break;
            }
            let header = decode_header(&v).map_err(|e| Error::Corruption {
                topic_id,
                partition,
                offset: base,
                reason: e.to_string(),
            })?;
            if header.timestamp_ms >= timestamp_ms {
                return Ok(Some(base.max(from)));
            }
        }
        Ok(None)
    }

    /// Returns the disk space of deleted records in `[from, to)` of the
    /// records family: drops whole files, then compacts what overlaps.
    pub fn reclaim(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let cf = self.cf(Cf::Records);
        // RocksDB's file deletion treats the end as inclusive; `to` is the first kept key.
        if let Some(last) = keys::key_before(to) {
            self.db.delete_file_in_range_cf(cf, from, &last)?;
        }
        self.db.compact_range_cf(cf, Some(from), Some(to));
        // WAL files are freed only once every family's memtable that uses them is flushed.
        self.db.flush_cf(self.cf(Cf::Meta))?;
        self.db.flush_cf(self.cf(Cf::Groups))?;
        Ok(())
    }

    /// Disk-level figures for metrics: what RocksDB wrote versus what it was given.
    pub fn stats(&self) -> StorageStats {
        let text = self.opts.get_statistics().unwrap_or_default();
        let ticker = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|rest| rest.trim().strip_prefix("COUNT :"))
                        .and_then(|n| n.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        let user = ticker("rocksdb.bytes.written");
        let disk =
            ticker("rocksdb.wal.bytes") + ticker("rocksdb.flush.write.bytes") + ticker("rocksdb.compact.write.bytes");
        let wal_bytes = std::fs::read_dir(&self.path)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        StorageStats {
            user_bytes_written: user,
            disk_bytes_written: disk,
            pending_compaction_bytes: self.records_property("rocksdb.estimate-pending-compaction-bytes").unwrap_or(0),
            wal_bytes,
        }
    }

    /// An integer RocksDB property of the records family (e.g. `rocksdb.estimate-pending-compaction-bytes`).
    pub fn records_property(&self, name: &str) -> Option<u64> {
        self.db.property_int_value_cf(self.cf(Cf::Records), name).ok().flatten()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes raw bytes under a record key, bypassing encoding: lets tests damage a batch.
    #[doc(hidden)]
    pub fn put_raw_record_for_test(&self, topic_id: u64, partition: u32, offset: u64, value: &[u8]) -> Result<()> {
        self.db.put_cf(self.cf(Cf::Records), record_key(topic_id, partition, offset), value)?;
        Ok(())
    }

    /// Reads the raw bytes of a batch: lets tests damage a batch.
    #[doc(hidden)]
    pub fn raw_record_for_test(&self, topic_id: u64, partition: u32, offset: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(Cf::Records), record_key(topic_id, partition, offset))?)
    }
}

/// What the store wrote, for write-amplification and WAL metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes handed to RocksDB by writes.
    pub user_bytes_written: u64,
    /// Bytes RocksDB wrote to disk: WAL, flushes and compactions.
    pub disk_bytes_written: u64,
    /// Compaction debt of the records family.
    pub pending_compaction_bytes: u64,
    /// Size of the live WAL files.
    pub wal_bytes: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
