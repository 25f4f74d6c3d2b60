//! The in-memory engine: one ordered map per column family behind a mutex.
//!
//! Its "disk" (`MemoryDisk`) outlives a `Store`, so a test can drop the store
//! and open a new one over the same disk: that is a restart, recovered by the
//! same code as RocksDB's. Every applied write is kept, as RocksDB keeps a
//! written WAL record across kill -9; there is no machine crash to model.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Cf, Engine, Mutation, ScanFrom, StorageStats, Visit};
use crate::Result;

type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// The contents of an in-memory store; clone it to open the same data again.
#[derive(Debug, Clone, Default)]
pub struct MemoryDisk {
    families: Arc<Mutex<[Family; 4]>>,
}

impl MemoryDisk {
    /// An empty disk.
    pub fn new() -> Self {
        MemoryDisk::default()
    }

    fn lock(&self) -> MutexGuard<'_, [Family; 4]> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An engine over a `MemoryDisk`.
pub(crate) struct MemoryEngine {
    disk: MemoryDisk,
}

impl MemoryEngine {
    pub(crate) fn open(disk: &MemoryDisk) -> Self {
        MemoryEngine { disk: disk.clone() }
    }
}

impl Engine for MemoryEngine {
    fn apply(&self, mutations: &mut dyn Iterator<Item = &Mutation>, _sync: bool) -> Result<()> {
        let mut families = self.disk.lock();
        for m in mutations {
            match m {
                Mutation::Put(cf, k, v) => {
                    families[cf.index()].insert(k.clone(), v.clone());
                }
                Mutation::Delete(cf, k) => {
                    families[cf.index()].remove(k);
                }
                Mutation::DeleteRange(cf, a, b) => {
                    if a < b {
                        let family = &mut families[cf.index()];
                        let doomed: Vec<Vec<u8>> = family.range(a.clone()..b.clone()).map(|(k, _)| k.clone()).collect();
                        for k in doomed {
                            family.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn sync_wal(&self) -> Result<()> {
        Ok(())
    }

    fn flush(&self) -> Result<()> {
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
        let families = self.disk.lock();
        let family = &families[cf.index()];
        let in_bounds = |k: &[u8]| k >= lower && upper.is_none_or(|u| k < u);
        let start: Vec<u8> = match from {
            ScanFrom::AtOrAfter(k) => k.max(lower).to_vec(),
            ScanFrom::AtOrBefore(k) => {
                let before = family
                    .range::<[u8], _>((Bound::Unbounded, Bound::Included(k)))
                    .next_back()
                    .map(|(key, _)| key.clone())
                    .filter(|key| in_bounds(key));
                before.unwrap_or_else(|| k.max(lower).to_vec())
            }
        };
        for (k, v) in family.range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded)) {
            if !in_bounds(k) {
                break;
            }
            if !visit(k, v)? {
                break;
            }
        }
        Ok(())
    }

    fn reclaim(&self, _cf: Cf, _from: &[u8], _to: &[u8]) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> StorageStats {
        StorageStats::default()
    }

    fn records_property(&self, _name: &str) -> Option<u64> {
        None
    }
}
