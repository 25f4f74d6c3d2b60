//! One shard replicated by three peers, each over its own RocksDB store and
//! writer, over real gRPC on loopback: batches are appended at the leader
//! and refused at followers with the leader's id; offsets are dense and the
//! same on every replica; an idempotent retry gets the original offsets and
//! a sequence gap is refused, on every replica alike; a committed watermark
//! never shows an uncommitted batch; and a leader cut off with an
//! uncommitted tail rewinds it when it rejoins a cluster that moved on, so
//! all three replicas end byte-identical.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_replication::{
    BatchCommand, ClusterConfig, GroupChange, MetaNode, Peers, ShardCommand, ShardHost, ShardNode, ShardProposeError,
    ShardResponse, ShardStart,
};
use sluice_storage::group::{GroupCursor, MessageState};
use sluice_storage::raft::GroupId;
use sluice_storage::record::encode_body;
use sluice_storage::{
    spawn_writer, Durability, OffsetRange, PartitionId, PartitionReader, Store, StoreConfig, StoredRecord, TopicConfig,
    TopicId, WriterConfig,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const SHARD: GroupId = GroupId(1);

fn partition() -> PartitionId {
    PartitionId::new(TopicId(7), 0)
}

/// The broker's side, as a test sees it: fixed settings, watermarks recorded.
#[derive(Default)]
struct Host {
    marks: Mutex<HashMap<PartitionId, u64>>,
}

impl Host {
    fn mark(&self) -> u64 {
        self.marks.lock().expect("marks").get(&partition()).copied().unwrap_or(0)
    }
}

impl ShardHost for Host {
    fn settings(&self, _: PartitionId) -> TopicConfig {
        TopicConfig {
            retention_ms: 0,
            retention_bytes: 0,
            segment_bytes: 4096,
            segment_ms: 3_600_000,
            max_message_bytes: 1 << 20,
            durability: Durability::Always,
        }
    }

    fn log_started(&self, _: PartitionId, _: u64) {}

    fn committed(&self, partition: PartitionId, end: u64) {
        let mut marks = self.marks.lock().expect("marks");
        let mark = marks.entry(partition).or_default();
        assert!(end >= *mark, "a watermark went back from {mark} to {end}");
        *mark = end;
    }
}

struct Peer {
    meta: Arc<MetaNode>,
    shard: Arc<ShardNode>,
    host: Arc<Host>,
    store: Arc<Store>,
    server: tokio::task::JoinHandle<()>,
    stop_server: tokio::sync::oneshot::Sender<()>,
    writer: std::thread::JoinHandle<()>,
}

async fn start_peer(id: u64, addrs: &BTreeMap<u64, String>, dir: &std::path::Path) -> Peer {
    start_peer_with(id, addrs, dir, sluice_replication::node::DEFAULT_SHARD_SNAPSHOT_ENTRIES).await
}

async fn start_peer_with(id: u64, addrs: &BTreeMap<u64, String>, dir: &std::path::Path, snapshot_entries: u64) -> Peer {
    let listener = TcpListener::bind(addrs[&id].as_str()).await.expect("bind the peer's address");
    let (store, recovered) = Store::open(dir, &StoreConfig::default()).expect("open store");
    let (writer, writer_thread) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
    let mut config = ClusterConfig::new(id, addrs.clone());
    config.shard_snapshot_entries = snapshot_entries;
    let meta = Arc::new(MetaNode::start(&config, store.clone(), writer.clone(), Peers::default()).await.expect("meta"));
    let host = Arc::new(Host::default());
    let start = ShardStart {
        group: SHARD,
        store: store.clone(),
        writer,
        connections: meta.connections(),
        service: meta.service(),
        host: host.clone(),
        partitions: recovered.untracked,
    };
    let shard = Arc::new(ShardNode::start(&config, start).await.expect("start shard"));
    for (partition, mark) in shard.watermarks() {
        host.committed(partition, mark);
    }
    let service = meta.service().into_server();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    meta.initialize().await.expect("initialize metadata");
    shard.initialize(addrs).await.expect("initialize shard");
    Peer { meta, shard, host, store, server, stop_server, writer: writer_thread }
}

impl Peer {
    /// Stops the peer as a process exit would, and waits until its store is closed.
    async fn stop(self) {
        self.shard.shutdown().await;
        self.meta.shutdown().await;
        let _ = self.stop_server.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the stopped peer's server closed")
            .expect("server task");
        drop((self.shard, self.meta, self.store));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.writer.is_finished() {
            assert!(Instant::now() < deadline, "the stopped peer's store stayed open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.writer.join().expect("writer thread");
    }

    fn records(&self, until: u64) -> Vec<StoredRecord> {
        let reader = PartitionReader::new(self.store.clone(), partition());
        reader.read_blocking(OffsetRange::new(0, until), usize::MAX, usize::MAX).expect("read the replica")
    }
}

/// Three peers on loopback ports, each on its own temporary store, snapshotting every
/// `snapshot_entries` entries: their directories, addresses and peers by id.
async fn start_three(snapshot_entries: u64) -> (Vec<tempfile::TempDir>, BTreeMap<u64, String>, BTreeMap<u64, Peer>) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        addrs.insert(id, l.local_addr().expect("addr").to_string());
    }
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        peers.insert(id, start_peer_with(id, &addrs, dirs[(id - 1) as usize].path(), snapshot_entries).await);
    }
    (dirs, addrs, peers)
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn shard_leader(peers: &BTreeMap<u64, Peer>) -> u64 {
    let mut leader = None;
    wait_for(Duration::from_secs(15), "the peers agree on a shard leader", || {
        let seen: Vec<Option<u64>> = peers.values().map(|p| p.shard.report().leader).collect();
        leader = seen[0].filter(|l| peers.contains_key(l) && seen.iter().all(|s| *s == Some(*l)));
        leader.is_some()
    })
    .await;
    leader.expect("checked above")
}

fn batch(tag: &str, n: usize, producer: Option<(u64, u64)>) -> ShardCommand {
    let records: Vec<StoredRecord> = (0..n)
        .map(|i| StoredRecord {
            offset: 0,
            timestamp_ms: 0,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Bytes::from(format!("{tag}-{i}")),
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
        })
        .collect();
    ShardCommand::Batch(BatchCommand {
        topic: partition().topic.0,
        partition: partition().index,
        timestamp_ms: 1_000,
        producer,
        count: n as u32,
        body: encode_body(&records),
    })
}

fn appended(base_offset: u64, count: u32, duplicate: bool) -> ShardResponse {
    ShardResponse::Appended { base_offset, count, duplicate }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_replicates_batches_and_rewinds_an_uncommitted_tail() {
    let (dirs, addrs, mut peers) = start_three(sluice_replication::node::DEFAULT_SHARD_SNAPSHOT_ENTRIES).await;
    let dir = |id: u64| dirs[(id - 1) as usize].path().to_owned();

    let leader = shard_leader(&peers).await;
    let follower = *peers.keys().find(|id| **id != leader).expect("a follower");
    match peers[&follower].shard.propose(batch("x", 1, None)).await {
        Err(ShardProposeError::NotLeader { leader: Some(l), term }) => {
            assert_eq!(l, leader, "a follower names the leader");
            assert!(term > 0, "with the term it knows");
        }
        other => panic!("a follower appended: {other:?}"),
    }

    // Dense offsets; an idempotent retry gets its original offsets; a gap is refused.
    let lead = &peers[&leader].shard;
    for i in 0..10u64 {
        let got = lead.propose(batch("a", 3, Some((9, i)))).await.expect("append at the leader");
        assert_eq!(got, appended(i * 3, 3, false));
    }
    assert_eq!(lead.propose(batch("a", 3, Some((9, 8)))).await, Ok(appended(24, 3, true)));
    assert_eq!(
        lead.propose(batch("a", 1, Some((9, 12)))).await,
        Ok(ShardResponse::OutOfOrder { producer_id: 9, got: 12, expected: 10 })
    );
    assert_eq!(lead.propose(batch("a", 2, None)).await, Ok(appended(30, 2, false)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !peers.values().all(|p| p.host.mark() == 32) {
        let seen: Vec<_> = peers.values().map(|p| (p.host.mark(), p.shard.report())).collect();
        assert!(Instant::now() < deadline, "every replica's watermark reaches 32: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first: Vec<Vec<StoredRecord>> = peers.values().map(|p| p.records(32)).collect();
    assert_eq!(first[0].len(), 32);
    assert!(first.windows(2).all(|w| w[0] == w[1]), "replicas hold the same records");

    // The leader is cut off (both followers stop): what it appends now is never committed.
    let others: Vec<u64> = peers.keys().copied().filter(|id| *id != leader).collect();
    for id in &others {
        peers.remove(id).expect("follower").stop().await;
    }
    let lead = peers[&leader].shard.clone();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(300), lead.propose(batch("lost", 4, None))).await;
        assert!(r.is_err() || matches!(r, Ok(Err(_))), "a leader without quorum acknowledged: {r:?}");
    }
    let tail = lead.with_partition(partition(), |log| log.next_offset()).expect("partition");
    assert!(tail > 32, "the isolated leader appended locally (tail {tail})");
    assert_eq!(peers[&leader].host.mark(), 32, "nothing uncommitted became readable");
    drop(lead);
    peers.remove(&leader).expect("old leader").stop().await;

    // The other two come back, elect, and move on without it.
    for id in &others {
        peers.insert(*id, start_peer(*id, &addrs, &dir(*id)).await);
    }
    let second = shard_leader(&peers).await;
    for i in 0..2u64 {
        let got = peers[&second].shard.propose(batch("b", 5, None)).await.expect("append after failover");
        assert_eq!(got, appended(32 + i * 5, 5, false), "offsets continue from the committed end");
    }
    assert_eq!(
        peers[&second].shard.propose(batch("a", 3, Some((9, 9)))).await,
        Ok(appended(27, 3, true)),
        "producer state survived the failover"
    );

    // The old leader rejoins: its uncommitted tail is rewound and replaced.
    peers.insert(leader, start_peer(leader, &addrs, &dir(leader)).await);
    assert_eq!(peers[&leader].host.mark(), 32, "after restart it shows only what was committed");
    wait_for(Duration::from_secs(15), "every replica's watermark reaches 42", || {
        peers.values().all(|p| p.host.mark() == 42)
    })
    .await;
    let tail = peers[&leader].shard.with_partition(partition(), |log| log.next_offset());
    assert_eq!(tail, Some(42), "the rejoined replica's tail was rewound to the cluster's");
    let all: Vec<Vec<StoredRecord>> = peers.values().map(|p| p.records(u64::MAX)).collect();
    assert_eq!(all[0].len(), 42);
    assert!(all.windows(2).all(|w| w[0] == w[1]), "replicas are identical after the rewind");
    assert!(
        all.iter().flatten().all(|r| !r.value.starts_with(b"lost")),
        "no replica kept a record that was never committed"
    );

    for (_, p) in peers {
        p.stop().await;
    }
}

fn cursor_change(group: u64, committed: u64) -> ShardCommand {
    let mut write = sluice_storage::AtomicWrite::new();
    let cursor = GroupCursor { committed, delivered: committed, dead_lettered: 0 };
    sluice_storage::group::put_cursor(&mut write, group, 0, &cursor);
    let message = MessageState { attempts: 2, reason: format!("at {committed}"), ..MessageState::default() };
    sluice_storage::group::put_message(&mut write, group, 0, committed, &message);
    let changes = sluice_storage::group::encode_changes(&write).expect("group-state changes");
    ShardCommand::Group(GroupChange { group, changes })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_purged_log_installs_a_snapshot_and_copies_the_records_it_lacks() {
    const EVERY: u64 = 20;
    let (dirs, addrs, mut peers) = start_three(EVERY).await;
    let dir = |id: u64| dirs[(id - 1) as usize].path().to_owned();
    let leader = shard_leader(&peers).await;
    for i in 0..5u64 {
        peers[&leader].shard.propose(batch("early", 2, Some((9, i)))).await.expect("append");
    }
    peers[&leader].shard.propose(cursor_change(5, 3)).await.expect("group change");

    // One follower stops; the log moves on far past what the leader keeps.
    let behind = *peers.keys().find(|id| **id != leader).expect("a follower");
    peers.remove(&behind).expect("follower").stop().await;
    let mut end = 10;
    let (mut last5, mut last6) = (3, 0);
    for i in 5..(5 + 6 * EVERY) {
        let n = 1 + (i % 3) as usize;
        let got = peers[&leader].shard.propose(batch("late", n, Some((9, i)))).await.expect("append");
        assert_eq!(got, appended(end, n as u32, false));
        end += n as u64;
        if i % 10 == 0 {
            peers[&leader].shard.propose(cursor_change(5, end)).await.expect("group change");
            peers[&leader].shard.propose(cursor_change(6, i)).await.expect("group change");
            (last5, last6) = (end, i);
        }
    }
    let report = peers[&leader].shard.report();
    assert!(report.snapshot_index > 2 * EVERY, "the leader snapshotted: {report:?}");
    wait_for(Duration::from_secs(10), "the leader drops its log up to its snapshot", || {
        peers[&leader].shard.report().purged_index > EVERY
    })
    .await;
    let kept = peers[&leader].store.raft_entries(SHARD, 0..u64::MAX).expect("log").len() as u64;
    assert!(kept < 3 * EVERY, "the stored log is bounded: {kept} entries kept");

    // It comes back: the entries it lacks are gone, so it installs the snapshot and copies records.
    peers.insert(behind, start_peer_with(behind, &addrs, &dir(behind), EVERY).await);
    wait_for(Duration::from_secs(30), "the returning replica's watermark reaches the end", || {
        peers.values().all(|p| p.host.mark() == end)
    })
    .await;
    let report = peers[&behind].shard.report();
    assert!(report.snapshot_index > 0, "it installed a snapshot: {report:?}");
    let all: Vec<Vec<StoredRecord>> = peers.values().map(|p| p.records(u64::MAX)).collect();
    assert_eq!(all[0].len() as u64, end);
    assert!(all.windows(2).all(|w| w[0] == w[1]), "replicas hold the same records, timestamps and all");
    wait_for(Duration::from_secs(10), "every replica holds the groups' last state", || {
        peers.values().all(|p| {
            let five = p.store.group_state(5).expect("group 5");
            let six = p.store.group_state(6).expect("group 6");
            five.cursors.get(&0).map(|c| c.committed) == Some(last5)
                && six.cursors.get(&0).map(|c| c.committed) == Some(last6)
        })
    })
    .await;
    let states: Vec<_> = peers
        .values()
        .map(|p| {
            let g = p.store.group_state(5).expect("group 5");
            let h = p.store.group_state(6).expect("group 6");
            (g.cursors.get(&0).copied(), g.messages.get(&0).cloned(), h.cursors.get(&0).copied())
        })
        .collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]), "group states agree: {states:?}");
    assert!(states[0].1.as_ref().is_some_and(|m| m.len() > 5), "message states were carried: {states:?}");

    // Producer state came with the records: where it now leads, a retry is still a duplicate.
    wait_for(Duration::from_secs(20), "the returned replica takes the lead", || {
        let from = peers.values().find(|p| p.shard.is_leader()).map(|p| p.shard.clone());
        if let Some(shard) = from {
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(shard.hand_over(behind)));
        }
        peers[&behind].shard.is_leader()
    })
    .await;
    let last = 5 + 6 * EVERY - 1;
    let n = 1 + (last % 3) as u32;
    let got = peers[&behind].shard.propose(batch("late", n as usize, Some((9, last)))).await.expect("retry");
    assert_eq!(got, appended(end - u64::from(n), n, true), "the copied producer state knows the last batch");
    let got = peers[&behind].shard.propose(batch("after", 2, None)).await.expect("append at the new leader");
    assert_eq!(got, appended(end, 2, false));

    for (_, p) in peers {
        p.stop().await;
    }
}
