//! The RocksDB engine: three column families, tuned for a log (record batches
//! in blob files, no compression of opaque payloads), WAL fsync per write.

use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::wal_reaper::WalReaper;
use super::{Cf, Engine, Mutation, ScanFrom, StorageStats, Visit};
use crate::{Error, Result, StoreConfig};

const CF_RECORDS: &str = "records";
const CF_META: &str = "meta";
const CF_GROUPS: &str = "groups";
const CF_RAFT: &str = "raft";

/// Batches at least this large are stored in blob files; smaller ones stay in
/// the LSM tree, where compaction rewriting them costs little.
const MIN_BLOB_BYTES: u64 = 0;

/// Archived (obsolete) WAL files older than this are deleted by RocksDB itself,
/// in case the reaper thread fell behind or failed.
const WAL_ARCHIVE_TTL_SECONDS: u64 = 60;

fn records_cf_options(o: &StoreConfig) -> Options {
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

/// RocksDB holding every column family of a broker.
pub(crate) struct RocksEngine {
    db: DB,
    /// Kept for its statistics object (RocksDB's tickers).
    opts: Options,
    path: PathBuf,
    /// Deletes obsolete WAL files gradually; stops when the engine is dropped.
    _reaper: WalReaper,
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub(crate) fn open(path: &Path, options: &StoreConfig) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::DataDir { path: path.to_owned(), source })?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs);
        db_opts.set_bytes_per_sync(1 << 20);
        db_opts.set_max_total_wal_size(256 << 20);
        db_opts.set_keep_log_file_num(4);
        // Obsolete WAL files go to `archive/`, where the reaper deletes them a few
        // MiB at a time (see wal_reaper.rs); RocksDB deletes any it left after this.
        db_opts.set_wal_ttl_seconds(WAL_ARCHIVE_TTL_SECONDS);
        db_opts.enable_statistics();
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_RECORDS, records_cf_options(options)),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
            ColumnFamilyDescriptor::new(CF_GROUPS, Options::default()),
            ColumnFamilyDescriptor::new(CF_RAFT, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let reaper = WalReaper::start(path).map_err(|source| Error::DataDir { path: path.to_owned(), source })?;
        Ok(RocksEngine { db, opts: db_opts, path: path.to_owned(), _reaper: reaper })
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        let name = match cf {
            Cf::Records => CF_RECORDS,
            Cf::Meta => CF_META,
            Cf::Groups => CF_GROUPS,
            Cf::Raft => CF_RAFT,
        };
        // Every family is created by `open`; its absence would be a bug here.
        self.db.cf_handle(name).expect("column families are created at open")
    }
}

impl Engine for RocksEngine {
    fn apply(&self, mutations: &mut dyn Iterator<Item = &Mutation>, sync: bool) -> Result<()> {
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
        self.db.write_opt(batch, &opts).map_err(Error::from_write)
    }

    fn sync_wal(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
        from: ScanFrom<'_>,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower.to_vec());
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        match from {
            ScanFrom::AtOrAfter(k) => it.seek(k),
            ScanFrom::AtOrBefore(k) => {
                it.seek_for_prev(k);
                if !it.valid() {
                    it.seek(k);
                }
            }
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    fn reclaim(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<()> {
        let handle = self.cf(cf);
        // RocksDB's file deletion treats the end as inclusive; `to` is the first kept key.
        if let Some(last) = crate::keys::key_before(to) {
            self.db.delete_file_in_range_cf(handle, from, &last)?;
        }
        self.db.compact_range_cf(handle, Some(from), Some(to));
        // WAL files are freed only once every family's memtable that uses them is flushed.
        self.db.flush_cf(self.cf(Cf::Meta))?;
        self.db.flush_cf(self.cf(Cf::Groups))?;
        Ok(())
    }

    fn stats(&self) -> StorageStats {
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

    fn records_property(&self, name: &str) -> Option<u64> {
        self.db.property_int_value_cf(self.cf(Cf::Records), name).ok().flatten()
    }
}
