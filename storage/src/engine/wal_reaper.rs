//! Deletes RocksDB's obsolete WAL files a few MiB at a time.
//!
//! On a file system mounted with online discard (ext4 `-o discard`, common on
//! cloud virtual machines), unlinking a 64 MiB WAL file makes the device
//! discard all of it at the next journal commit, and the WAL fsync of every
//! produce in flight waits behind that commit: 10–30 ms stalls, measured on
//! our benchmark machine, which moved the e2e publish-to-ack p99 from about
//! 4 ms to 6–9 ms (docs/BENCHMARKS.md). RocksDB's own remedy, the
//! `SstFileManager`'s rate-limited delete scheduler, is not reachable through
//! the C API we link. So the engine asks RocksDB to move obsolete WAL files
//! to `archive/` (a rename, which frees nothing) and this thread shrinks each
//! archived file by [`CHUNK`] per step, pausing between steps, then unlinks
//! it: each journal commit then discards at most a few MiB.
//!
//! Archived WAL files are never read again (recovery replays only live ones),
//! so deleting them at any pace is safe. If this thread cannot keep up or
//! fails, RocksDB still deletes archived files older than the archive TTL
//! set in `rocks.rs`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes freed per step: about 1 ms of discard on the benchmark machine.
pub(crate) const CHUNK: u64 = 4 << 20;
/// Pause between steps, so WAL fsyncs interleave with the discards; at
/// [`CHUNK`] per step this still frees several hundred MB/s, more than the
/// WAL is written at full produce throughput.
const STEP_PAUSE: Duration = Duration::from_millis(4);
/// How often the archive is looked at.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);

/// The reaper thread; stops (after the step in progress) when dropped.
pub(crate) struct WalReaper {
    stop: Option<mpsc::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl WalReaper {
    /// Starts reaping `db_path/archive`.
    pub(crate) fn start(db_path: &Path) -> std::io::Result<Self> {
        let archive = db_path.join("archive");
        let (stop, stopped) = mpsc::channel::<()>();
        let join = std::thread::Builder::new().name("sluice-wal-reaper".into()).spawn(move || loop {
            match stopped.recv_timeout(SCAN_INTERVAL) {
                Err(RecvTimeoutError::Timeout) => reap(&archive, &stopped),
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
        Ok(WalReaper { stop: Some(stop), join: Some(join) })
    }
}

impl Drop for WalReaper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// Deletes every archived WAL file, oldest name first; returns early when
/// asked to stop.
fn reap(archive: &Path, stopped: &mpsc::Receiver<()>) {
    let Ok(entries) = std::fs::read_dir(archive) else { return };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    files.sort();
    for file in files {
        if let Err(e) = shrink_and_remove(&file, stopped) {
            if e.kind() != std::io::ErrorKind::Interrupted && e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %file.display(), error = %e, "could not delete an archived WAL file; RocksDB will delete it when its archive TTL passes");
            }
        }
    }
}

/// Truncates `file` by [`CHUNK`] per step, then unlinks it. `Interrupted`
/// when asked to stop midway (the rest is done next time).
pub(crate) fn shrink_and_remove(file: &Path, stopped: &mpsc::Receiver<()>) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(file)?;
    let mut len = f.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(CHUNK);
        f.set_len(len)?;
        match stopped.recv_timeout(STEP_PAUSE) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return Err(std::io::ErrorKind::Interrupted.into()),
        }
    }
    drop(f);
    std::fs::remove_file(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_archived_logs_and_leaves_everything_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).expect("mkdir");
        std::fs::write(archive.join("000007.log"), vec![7u8; (CHUNK * 2 + 5) as usize]).expect("write");
        std::fs::write(archive.join("000009.log"), b"x").expect("write");
        std::fs::write(archive.join("keep.txt"), b"x").expect("write");
        let (_stop, stopped) = mpsc::channel();
        reap(&archive, &stopped);
        let mut left: Vec<_> = std::fs::read_dir(&archive).expect("ls").flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from("keep.txt")]);
    }

    #[test]
    fn a_stop_request_interrupts_between_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("000001.log");
        std::fs::write(&file, vec![1u8; (CHUNK * 3) as usize]).expect("write");
        let (stop, stopped) = mpsc::channel();
        stop.send(()).expect("send");
        let err = shrink_and_remove(&file, &stopped).expect_err("must stop");
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted);
        assert_eq!(std::fs::metadata(&file).expect("still there").len(), CHUNK * 2, "one step taken");
    }
}
