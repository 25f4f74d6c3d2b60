//! The storage contract suite: every rule of the partition log (see
//! `sluice_storage::log`) checked once, run over both engines — RocksDB and
//! the in-memory twin — so the log code is proven whatever is underneath and
//! the twin is proven faithful enough for the tests and model checks that use it.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_storage::{
    spawn_writer, Append, AtomicWrite, Durability, Error, MemoryDisk, OffsetRange, PartitionId, PartitionLog,
    ProducerSeq, Recovered, Store, StoreConfig, StoredRecord, TopicConfig, TopicId, TopicMeta, WriterConfig,
};

/// Where a test's data lives between "restarts".
enum Backend {
    Rocks(tempfile::TempDir),
    Memory(MemoryDisk),
}

impl Backend {
    fn rocks() -> Self {
        Backend::Rocks(tempfile::tempdir().expect("tempdir"))
    }

    fn memory() -> Self {
        Backend::Memory(MemoryDisk::new())
    }

    fn open(&self) -> (Arc<Store>, Recovered) {
        match self {
            Backend::Rocks(dir) => Store::open(dir.path(), &StoreConfig::default()).expect("open rocksdb"),
            Backend::Memory(disk) => Store::open_in_memory(disk).expect("open memory"),
        }
    }
}

/// Runs `check` over both engines as two tests.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[test]
            fn rocksdb() {
                super::$name(&super::Backend::rocks());
            }
            #[test]
            fn memory() {
                super::$name(&super::Backend::memory());
            }
        }
    };
}

fn settings() -> TopicConfig {
    TopicConfig {
        retention_ms: 0,
        retention_bytes: 0,
        segment_bytes: 1024,
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

const TOPIC: TopicId = TopicId(3);
const PARTITION: PartitionId = PartitionId { topic: TOPIC, index: 0 };

fn meta() -> TopicMeta {
    TopicMeta { id: TOPIC, name: "t".into(), partitions: 1, settings: settings(), created_ms: 0 }
}

fn commit(store: &Store, write: AtomicWrite) {
    store.apply(std::iter::once(&write), true).expect("commit");
}

/// Appends one batch and commits it; returns its base offset.
fn append(store: &Store, log: &mut PartitionLog, values: &[u64], producer: Option<ProducerSeq>, now: i64) -> u64 {
    let recs: Vec<StoredRecord> = values.iter().map(|&i| record(i)).collect();
    match log.append(&recs, producer, now, &settings()).expect("append") {
        Append::Write { base_offset, write } => {
            commit(store, write);
            base_offset
        }
        Append::Duplicate { base_offset, .. } => base_offset,
    }
}

/// A fresh store holding topic `TOPIC` with one partition.
fn create(backend: &Backend) -> (Arc<Store>, PartitionLog) {
    let (store, _) = backend.open();
    commit(&store, Store::create_topic(&meta(), 0).expect("meta"));
    let log = PartitionLog::new(&store, PARTITION, 1);
    (store, log)
}

/// Closes the store (the log holds it too) and recovers the log of partition 0.
fn reopen(backend: &Backend, store: Arc<Store>, log: PartitionLog) -> (Arc<Store>, PartitionLog, Recovered) {
    drop(log);
    assert_eq!(Arc::strong_count(&store), 1, "nothing else holds the store open");
    drop(store);
    let (store, mut recovered) = backend.open();
    let (m, mut logs) = recovered.topics.pop().expect("the topic is recovered");
    assert_eq!(m, meta());
    let log = logs.remove(0);
    (store, log, recovered)
}

fn read_all(log: &PartitionLog) -> Vec<StoredRecord> {
    log.reader().read_blocking(OffsetRange::new(0, u64::MAX), usize::MAX, usize::MAX).expect("read")
}

fn appended_batches_read_back_and_survive_reopen(backend: &Backend) {
    let (store, mut log) = create(backend);
    for b in 0..20u64 {
        let values: Vec<u64> = (b * 5..b * 5 + 5).collect();
        assert_eq!(append(&store, &mut log, &values, None, 1000 + b as i64), b * 5, "dense offsets");
    }
    let reader = log.reader();
    let got = reader.read_blocking(OffsetRange::new(7, 100), 1000, usize::MAX).expect("read");
    assert_eq!(got.len(), 93, "a read may start inside a batch");
    assert_eq!(got[0].offset, 7);
    assert_eq!(got[0].value, record(7).value);
    assert_eq!(got[0].headers, record(7).headers);
    assert_eq!(reader.read_blocking(OffsetRange::new(7, 100), 3, usize::MAX).expect("read").len(), 3, "max messages");
    assert_eq!(reader.read_blocking(OffsetRange::new(7, 100), 1000, 1).expect("read").len(), 1, "at least one");
    assert!(reader.read_blocking(OffsetRange::new(50, 50), 10, 10).expect("read").is_empty());
    drop(reader);
    let segments = log.segments().to_vec();
    assert!(segments.len() > 3, "segments roll by size: {segments:?}");
    let (_store, log, recovered) = reopen(backend, store, log);
    assert_eq!(log.next_offset(), 100, "next offset recovered from segment metadata");
    assert_eq!(log.segments(), &segments[..], "segment index recovered");
    assert_eq!(recovered.next_topic_id, TOPIC.0 + 1);
    assert_eq!(read_all(&log).len(), 100);
}
contract!(appended_batches_read_back_and_survive_reopen);

fn timestamps_find_offsets(backend: &Backend) {
    let (store, mut log) = create(backend);
    for b in 0..10u64 {
        append(&store, &mut log, &[b * 2, b * 2 + 1], None, 1000 + 10 * b as i64);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let reader = log.reader();
    let found = rt.block_on(reader.offset_for_timestamp(OffsetRange::new(0, 20), 1031)).expect("search");
    assert_eq!(found, Some(8), "the first batch at or after the time");
    let none = rt.block_on(reader.offset_for_timestamp(OffsetRange::new(0, 20), 5000)).expect("search");
    assert_eq!(none, None);
}
contract!(timestamps_find_offsets);

fn damaged_batches_are_corruption_never_data(backend: &Backend) {
    let (store, mut log) = create(backend);
    for b in 0..3u64 {
        append(&store, &mut log, &[b], None, 5);
    }
    let good = store.raw_record_for_test(PARTITION, 1).expect("get").expect("present");
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    store.put_raw_record_for_test(PARTITION, 1, &flipped).expect("damage");
    let reader = log.reader();
    let err = reader.read_blocking(OffsetRange::new(0, 3), 10, usize::MAX).expect_err("flip detected");
    assert!(matches!(err, Error::Corruption { offset: 1, .. }), "{err:?}");
    assert!(err.is_corruption());
    assert_eq!(reader.read_blocking(OffsetRange::new(0, 1), 10, usize::MAX).expect("before the damage").len(), 1);
    store.put_raw_record_for_test(PARTITION, 1, &good[..good.len() - 5]).expect("truncate");
    assert!(matches!(reader.read_blocking(OffsetRange::new(1, 3), 10, usize::MAX), Err(Error::Corruption { .. })));
}
contract!(damaged_batches_are_corruption_never_data);

fn retried_sequences_get_their_original_offsets_across_reopen(backend: &Backend) {
    let (store, mut log) = create(backend);
    let p = |sequence| Some(ProducerSeq { producer_id: 42, sequence });
    assert_eq!(append(&store, &mut log, &[0, 1], p(0), 1), 0);
    assert_eq!(append(&store, &mut log, &[2], p(1), 1), 2);
    let (store, mut log, _) = reopen(backend, store, log);
    let again = log.append(&[record(2)], p(1), 2, &settings()).expect("retry");
    assert!(matches!(again, Append::Duplicate { base_offset: 2, count: 1 }), "{again:?}");
    assert!(matches!(
        log.append(&[record(9)], p(5), 2, &settings()),
        Err(Error::OutOfOrderSequence { expected: 2, .. })
    ));
    assert_eq!(append(&store, &mut log, &[3], p(2), 2), 3);
}
contract!(retried_sequences_get_their_original_offsets_across_reopen);

fn rewind_takes_back_the_tail_atomically(backend: &Backend) {
    let (store, mut log) = create(backend);
    let p = |sequence| Some(ProducerSeq { producer_id: 7, sequence });
    // 10 batches of 3 records (~400 bytes): 1 KiB segments roll every two batches.
    for b in 0..10u64 {
        let base = append(&store, &mut log, &[b * 3, b * 3 + 1, b * 3 + 2], p(b), 100 + b as i64);
        assert_eq!(base, b * 3);
    }
    let before: Vec<_> = log.segments().to_vec();
    assert!(before.len() >= 3, "the tail spans segments: {before:?}");
    assert!(matches!(log.rewind(16, 200), Err(Error::BadRewind { .. })), "16 is inside a batch");
    assert!(matches!(log.rewind(31, 200), Err(Error::BadRewind { .. })), "past the end");
    assert!(log.rewind(30, 200).expect("no-op").is_none(), "rewinding to the end changes nothing");

    let write = log.rewind(15, 200).expect("rewind").expect("something to remove");
    commit(&store, write);
    assert_eq!(log.next_offset(), 15);
    let records = read_all(&log);
    assert_eq!(records.len(), 15, "everything below 15 stays, nothing at or above it");
    assert_eq!(records.last().map(|r| r.offset), Some(14));
    let last = *log.segments().last().expect("an active segment");
    assert!(!last.sealed && last.end_offset == 15, "the segment holding 15 is active again: {last:?}");
    assert_eq!(last.last_timestamp_ms, 104, "its newest record is the last one kept");
    let kept: u64 = log.segments().iter().map(|s| s.bytes).sum();
    let original: u64 = before.iter().filter(|s| s.base_offset < 15).map(|s| s.bytes).sum();
    assert!(kept < original && kept > 0, "bytes of removed batches are taken off ({kept} of {original})");
    assert!(matches!(log.append(&[record(99)], p(4), 300, &settings()), Ok(Append::Duplicate { base_offset: 12, .. })));
    assert!(matches!(
        log.append(&[record(99)], p(6), 300, &settings()),
        Err(Error::OutOfOrderSequence { expected: 5, .. })
    ));

    let segments = log.segments().to_vec();
    let (store, mut log, _) = reopen(backend, store, log);
    assert_eq!(log.next_offset(), 15, "the rewind is durable");
    assert_eq!(log.segments(), &segments[..], "and so is its segment index");
    assert_eq!(read_all(&log).len(), 15);
    assert_eq!(append(&store, &mut log, &[1000, 1001], p(5), 400), 15, "the rewound offsets are assigned again");
    let records = read_all(&log);
    assert_eq!(records.len(), 17);
    assert_eq!(records[15].value, record(1000).value, "new data, not the rewound batch");

    // Rewind exactly to a segment boundary: the older segment stays sealed.
    let boundary = log.segments().iter().rev().find(|s| s.sealed).map(|s| s.end_offset).expect("a sealed segment");
    commit(&store, log.rewind(boundary, 500).expect("rewind").expect("removed"));
    let last = *log.segments().last().expect("active");
    assert_eq!((last.base_offset, last.end_offset, last.sealed), (boundary, boundary, false));
    let (_store, log, _) = reopen(backend, store, log);
    assert_eq!(log.next_offset(), boundary);
    assert_eq!(read_all(&log).len() as u64, boundary);
}
contract!(rewind_takes_back_the_tail_atomically);

fn rewind_cannot_pass_retention(backend: &Backend) {
    let (store, mut log) = create(backend);
    for b in 0..12u64 {
        append(&store, &mut log, &[b * 3, b * 3 + 1, b * 3 + 2], None, 100);
    }
    let mut s = settings();
    s.retention_bytes = 4000;
    let trim = log.trim(200, &s).expect("something to trim");
    commit(&store, trim.write);
    let start = log.log_start();
    assert!(start > 0 && start == trim.log_start);
    assert!(matches!(log.rewind(start - 3, 300), Err(Error::BadRewind { .. })), "below the log start");
    commit(&store, log.rewind(start, 300).expect("rewind").expect("removed"));
    assert_eq!(log.next_offset(), start);
    assert!(read_all(&log).is_empty());
    let (_store, log, _) = reopen(backend, store, log);
    assert_eq!((log.log_start(), log.next_offset()), (start, start));
}
contract!(rewind_cannot_pass_retention);

fn retention_and_clear_remove_whole_segments(backend: &Backend) {
    let (store, mut log) = create(backend);
    for b in 0..20u64 {
        append(&store, &mut log, &[b], None, 100 + b as i64);
    }
    let mut s = settings();
    s.retention_bytes = 1500;
    let trim = log.trim(200, &s).expect("trim");
    assert!(trim.reclaim.is_some(), "records were deleted: there is space to reclaim");
    commit(&store, trim.write);
    if let Some(r) = &trim.reclaim {
        store.reclaim(r).expect("reclaim");
    }
    let start = log.log_start();
    let records = read_all(&log);
    assert_eq!(records.first().map(|r| r.offset), Some(start), "reads start at the new log start");
    assert_eq!(records.len() as u64, 20 - start);
    let cleared = log.clear(300).expect("clear");
    commit(&store, cleared.write);
    assert_eq!((log.log_start(), log.next_offset()), (20, 20), "offsets keep counting after a clear");
    assert!(read_all(&log).is_empty());
    let (store, mut log, _) = reopen(backend, store, log);
    assert_eq!((log.log_start(), log.next_offset()), (20, 20));
    assert_eq!(append(&store, &mut log, &[7], None, 400), 20);
}
contract!(retention_and_clear_remove_whole_segments);

fn deleting_a_topic_removes_everything(backend: &Backend) {
    let (store, mut log) = create(backend);
    append(&store, &mut log, &[1, 2, 3], Some(ProducerSeq { producer_id: 1, sequence: 0 }), 1);
    let (write, reclaim) = Store::delete_topic(&meta());
    commit(&store, write);
    store.reclaim(&reclaim).expect("reclaim");
    assert!(read_all(&log).is_empty());
    drop(log);
    drop(store);
    let (_store, recovered) = backend.open();
    assert!(recovered.topics.is_empty(), "no topic, segment or producer entry survives");
    assert_eq!(recovered.next_topic_id, TOPIC.0 + 1, "ids are never reused");
}
contract!(deleting_a_topic_removes_everything);

fn concurrent_appends_share_synced_writes(backend: &Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (store, _) = backend.open();
    let (writer, join) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
    let before = store.commit_count();
    let mut logs: Vec<PartitionLog> =
        (0..8u32).map(|p| PartitionLog::new(&store, PartitionId::new(TopicId(9), p), 1)).collect();
    rt.block_on(async {
        let mut waiting = Vec::new();
        for log in &mut logs {
            for i in 0..100u64 {
                let Append::Write { write, .. } = log.append(&[record(i)], None, 5, &settings()).expect("append")
                else {
                    panic!("not a duplicate")
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                let request = sluice_storage::WriteRequest {
                    write,
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
    });
    let commits = store.commit_count() - before;
    assert!(commits < 400, "800 synced requests took {commits} writes: group commit is not folding them");
    for log in &logs {
        assert_eq!(read_all(log).len(), 100);
    }
    drop(writer);
    join.join().expect("writer thread");
}
contract!(concurrent_appends_share_synced_writes);

/// One step of a random history of a partition log.
#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of this many records.
    Append(u8),
    /// Rewind this many batches (clamped to what is stored).
    Rewind(u8),
    /// Drop the store and recover.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![6 => (1u8..6).prop_map(Op::Append), 2 => (0u8..4).prop_map(Op::Rewind), 1 => Just(Op::Reopen)]
}

/// Applies `ops` to a log and to a plain list of batches; after every step
/// both hold the same records at the same offsets.
fn history_matches_a_list_of_batches(backend: &Backend, ops: &[Op]) {
    let (mut store, mut log) = create(backend);
    let mut model: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut value = 0u64;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append(n) => {
                let values: Vec<u64> = (0..u64::from(*n)).map(|i| value + i).collect();
                value += u64::from(*n);
                let base = model.last().map_or(0, |(b, v)| b + v.len() as u64);
                assert_eq!(append(&store, &mut log, &values, None, step as i64), base, "step {step}");
                model.push((base, values));
            }
            Op::Rewind(k) => {
                let keep = model.len().saturating_sub(usize::from(*k));
                let to = model.get(keep).map_or(log.next_offset(), |(b, _)| *b);
                model.truncate(keep);
                if let Some(w) = log.rewind(to, step as i64).expect("rewind to a batch boundary") {
                    commit(&store, w);
                }
            }
            Op::Reopen => {
                let (s, l, _) = reopen(backend, store, log);
                (store, log) = (s, l);
            }
        }
        let expected: Vec<(u64, u64)> =
            model.iter().flat_map(|(b, vs)| vs.iter().enumerate().map(move |(i, v)| (b + i as u64, *v))).collect();
        let got: Vec<(u64, u64)> = read_all(&log)
            .iter()
            .map(|r| (r.offset, expected.iter().find(|(o, _)| *o == r.offset).map_or(u64::MAX, |(_, v)| *v)))
            .collect();
        assert_eq!(got.len(), expected.len(), "step {step}: record count");
        for ((o, v), r) in expected.iter().zip(read_all(&log)) {
            assert_eq!(r.offset, *o, "step {step}");
            assert_eq!(r.value, record(*v).value, "step {step}: offset {o}");
        }
        assert_eq!(log.next_offset(), expected.last().map_or(0, |(o, _)| o + 1).max(log.log_start()), "step {step}");
    }
}

/// Cases from `var` (`make soak` raises them), else `default`.
fn cases(var: &str, default: u32) -> u32 {
    std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("SLUICE_CONTRACT_CASES", 256), ..ProptestConfig::default() })]
    #[test]
    fn random_histories_over_memory(ops in proptest::collection::vec(op(), 1..60)) {
        history_matches_a_list_of_batches(&Backend::memory(), &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("SLUICE_CONTRACT_ROCKSDB_CASES", 16), ..ProptestConfig::default() })]
    #[test]
    fn random_histories_over_rocksdb(ops in proptest::collection::vec(op(), 1..40)) {
        history_matches_a_list_of_batches(&Backend::rocks(), &ops);
    }
}
