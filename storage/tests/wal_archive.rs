//! Obsolete WAL files are archived by RocksDB and deleted by the engine's
//! reaper (a few MiB at a time, so online discard does not stall fsyncs):
//! neither left behind in the data dir nor piling up in `archive/`.

use std::time::{Duration, Instant};

use sluice_storage::{PartitionId, Store, StoreConfig, TopicId};

fn logs_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".log")).collect()
        })
        .unwrap_or_default()
}

#[test]
fn flushed_wal_files_are_archived_then_reaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path(), &StoreConfig::default()).expect("open");
    let before = logs_in(dir.path());
    assert_eq!(before.len(), 1, "one live WAL after open: {before:?}");
    for i in 0..5u64 {
        store.put_raw_record_for_test(PartitionId::new(TopicId(1), 0), i, &vec![7u8; 1 << 20]).expect("put");
        // A flush of every family makes the current WAL obsolete.
        store.flush().expect("flush");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let archive = dir.path().join("archive");
    loop {
        let live = logs_in(dir.path());
        let archived = logs_in(&archive);
        if live.len() == 1 && archived.is_empty() && archive.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 20 s: live WAL files {live:?}, archived {archived:?} (archive dir exists: {})",
            archive.exists()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The reaper never touches the live WAL: the data is still there after a reopen.
    drop(store);
    let (store, _) = Store::open(dir.path(), &StoreConfig::default()).expect("reopen");
    assert_eq!(
        store.raw_record_for_test(PartitionId::new(TopicId(1), 0), 4).expect("read").map(|v| v.len()),
        Some(1 << 20)
    );
}
