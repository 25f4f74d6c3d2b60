//! The storage log against real RocksDB: append, read, reopen, and damage.

use std::sync::Arc;

use bytes::Bytes;
use sluice_storage::{
    spawn_writer, Append, Durability, Error, PartitionLog, Store, StoreOptions, StoredRecord, TopicMeta, TopicSettings,
    WriterConfig,
};

fn settings() -> TopicSettings {
    TopicSettings {
        retention_ms: 0,
        retention_bytes: 0,
        segment_bytes: 4096,
        segment_ms: 3_600_000,
        max_message_bytes: 1 << 20,
        durability: Durability::Always,
    }
}

fn record(i: u64) -> StoredRecord {
    StoredRecord {
        offset: 0,
        timestamp_ms: 0,
        key: i.is_multiple_of(2).then(|| Bytes::from(format!("k{i}"))),
        value: Bytes::from(format!("value-{i}-{}", "x".repeat(100))),
        headers: vec![("h".into(), Bytes::from(i.to_string()))],
    }
}

fn open(dir: &std::path::Path) -> (Arc<Store>, sluice_storage::Recovered) {
    let (store, recovered) = Store::open(dir, &StoreOptions::default()).expect("open");
    (Arc::new(store), recovered)
}

#[tokio::test]
async fn appended_batches_read_back_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = TopicMeta { id: 3, name: "t".into(), partitions: 1, settings: settings(), created_ms: 0 };
    {
        let (store, _) = open(dir.path());
        let (writer, join) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
        writer.write(Store::create_topic_mutations(&meta).expect("meta")).await.expect("create");
        let mut log = PartitionLog::new(3, 0, 1);
        for b in 0..20u64 {
            let recs: Vec<_> = (b * 5..b * 5 + 5).map(record).collect();
            let Append::Write { base_offset, mutations } =
                log.append(&recs, None, 1000 + b as i64, &settings()).expect("append")
            else {
                panic!("no producer, no duplicate")
            };
            assert_eq!(base_offset, b * 5);
            writer.write(mutations).await.expect("write");
        }
        let got = store.read(3, 0, 7, 100, 1000, usize::MAX).expect("read");
        assert_eq!(got.len(), 93);
        assert_eq!(got[0].offset, 7);
        assert_eq!(got[0].value, record(7).value);
        assert_eq!(got[0].headers, record(7).headers);
        assert_eq!(store.read(3, 0, 7, 100, 3, usize::MAX).expect("read").len(), 3, "max messages");
        assert_eq!(store.read(3, 0, 7, 100, 1000, 1).expect("read").len(), 1, "at least one record");
        assert_eq!(store.offset_for_timestamp(3, 0, 0, 100, 1010).expect("ts"), Some(50));
        close(writer, join);
    }
    let (store, recovered) = open(dir.path());
    assert_eq!(recovered.topics.len(), 1);
    let (m, logs) = &recovered.topics[0];
    assert_eq!(m, &meta);
    assert_eq!(logs[0].next_offset(), 100, "next offset recovered from segment metadata");
    assert!(logs[0].segments().len() > 3);
    assert_eq!(recovered.next_topic_id, 4);
    assert_eq!(store.read(3, 0, 0, 100, 1000, usize::MAX).expect("read").len(), 100);
}

#[tokio::test]
async fn damaged_or_truncated_batches_are_corruption_never_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let (writer, join) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
    let mut log = PartitionLog::new(1, 0, 1);
    for b in 0..3u64 {
        let Append::Write { mutations, .. } = log.append(&[record(b)], None, 5, &settings()).expect("append") else {
            panic!("not a duplicate")
        };
        writer.write(mutations).await.expect("write");
    }
    let good = store.raw_record_for_test(1, 0, 1).expect("get").expect("present");
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    store.put_raw_record_for_test(1, 0, 1, &flipped).expect("damage");
    let err = store.read(1, 0, 0, 3, 10, usize::MAX).expect_err("flip detected");
    assert!(matches!(err, Error::Corruption { offset: 1, .. }), "{err:?}");
    assert!(err.is_corruption());
    // Reading before the damaged batch still works.
    assert_eq!(store.read(1, 0, 0, 1, 10, usize::MAX).expect("read").len(), 1);
    store.put_raw_record_for_test(1, 0, 1, &good[..good.len() - 5]).expect("truncate");
    assert!(matches!(store.read(1, 0, 1, 3, 10, usize::MAX), Err(Error::Corruption { .. })));
    close(writer, join);
}

/// Stops the writer and waits for its thread: RocksDB must be closed before the process exits.
fn close(writer: sluice_storage::WriterHandle, join: std::thread::JoinHandle<()>) {
    drop(writer);
    join.join().expect("writer thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_across_partitions_share_synced_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let (writer, join) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
    let before = store.commit_count();
    let mut waiting = Vec::new();
    for p in 0..8u32 {
        let mut log = PartitionLog::new(9, p, 1);
        for i in 0..100u64 {
            let Append::Write { mutations, .. } = log.append(&[record(i)], None, 5, &settings()).expect("append")
            else {
                panic!("not a duplicate")
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let request = sluice_storage::WriteRequest {
                mutations,
                sync: true,
                on_commit: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            };
            writer.submit(request).await.expect("submit");
            waiting.push(rx);
        }
    }
    for rx in waiting {
        rx.await.expect("completed").expect("committed");
    }
    let commits = store.commit_count() - before;
    eprintln!("800 synced requests in {commits} writes");
    assert!(commits < 400, "800 synced requests took {commits} writes: group commit is not folding them");
    for p in 0..8 {
        assert_eq!(store.read(9, p, 0, 100, 1000, usize::MAX).expect("read").len(), 100);
    }
    close(writer, join);
}
