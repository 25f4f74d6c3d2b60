//! `DiskSpace`: the free-space alarm of the data volume.
//!
//! RocksDB treats a failed write or flush (ENOSPC) as a background error and
//! stops accepting writes until the database is reopened. So the broker must
//! never let RocksDB run out of space: new data (produce) is refused while the
//! volume's free space is below a reserve, leaving room for memtable flushes,
//! compaction and the small writes of acks. Once space is freed the alarm
//! clears on the next check and produce resumes, without a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// How stale the cached free-space figure may be, in milliseconds.
const RECHECK_MS: i64 = 20;

/// Watches the free space of the volume holding the data directory.
#[derive(Debug)]
pub struct DiskSpace {
    path: PathBuf,
    min_free_bytes: u64,
    free: AtomicU64,
    checked_at_ms: AtomicI64,
    alarm: AtomicBool,
}

fn millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Bytes available to unprivileged writers on the volume holding `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

impl DiskSpace {
    /// An alarm that trips when fewer than `min_free_bytes` are free (0 disables it).
    pub fn new(path: &Path, min_free_bytes: u64) -> Self {
        DiskSpace {
            path: path.to_owned(),
            min_free_bytes,
            free: AtomicU64::new(u64::MAX),
            checked_at_ms: AtomicI64::new(i64::MIN),
            alarm: AtomicBool::new(false),
        }
    }

    /// The configured reserve, bytes.
    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Free bytes on the volume, re-read at most every few milliseconds.
    pub fn free_bytes(&self) -> u64 {
        let now = millis();
        if now.saturating_sub(self.checked_at_ms.load(Ordering::Relaxed)) >= RECHECK_MS {
            self.checked_at_ms.store(now, Ordering::Relaxed);
            match available_bytes(&self.path) {
                Ok(free) => self.free.store(free, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, path = ?self.path, "cannot read the data volume's free space"),
            }
        }
        self.free.load(Ordering::Relaxed)
    }

    /// Whether the alarm is raised now.
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Relaxed)
    }

    /// Refuses new data while free space is below the reserve.
    pub fn check(&self) -> Result<()> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = self.free_bytes();
        let low = free < self.min_free_bytes;
        if self.alarm.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::error!(free, min_free = self.min_free_bytes, "data volume almost full: refusing produce");
            } else {
                tracing::warn!(free, min_free = self.min_free_bytes, "data volume has space again: produce resumes");
            }
        }
        if low {
            return Err(Error::LowDiskSpace { free, min_free: self.min_free_bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_volume_refuses_and_zero_disables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = available_bytes(dir.path()).expect("statvfs");
        assert!(free > 0);
        let guard = DiskSpace::new(dir.path(), u64::MAX);
        assert!(matches!(guard.check(), Err(Error::LowDiskSpace { .. })));
        assert!(guard.alarm());
        assert!(DiskSpace::new(dir.path(), 0).check().is_ok());
        assert!(DiskSpace::new(dir.path(), 1).check().is_ok());
    }
}
