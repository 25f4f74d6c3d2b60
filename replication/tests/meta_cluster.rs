//! Three metadata peers, each over its own RocksDB store and writer, talking
//! over real gRPC on loopback ports: they elect a leader, replicate catalog
//! changes to all, redirect proposals made at a follower, elect again when the
//! leader stops, and a stopped peer catches up from its own disk and the log;
//! a broker of an older build holds back the commands it could not apply.
//! (The broker-level cluster test with three broker processes comes with the
//! broker's cluster flags; this one checks the replication crate on its own.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_replication::meta::{MetaCommand, FEATURE_LEVEL};
use sluice_replication::{ClusterConfig, MetaNode, MetaResponse, Peers, ProposeError};
use sluice_storage::{spawn_writer, Store, StoreConfig, TopicConfig, TopicId, WriterConfig};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// One running peer: its node, its server task and its writer thread.
struct Peer {
    node: Arc<MetaNode>,
    server: tokio::task::JoinHandle<()>,
    stop_server: tokio::sync::oneshot::Sender<()>,
    writer: std::thread::JoinHandle<()>,
}

/// Three peers on loopback ports, each on its own temporary data dir
/// (kept alive by the returned dirs), with their addresses.
async fn start_three() -> (Vec<tempfile::TempDir>, BTreeMap<u64, String>, BTreeMap<u64, Peer>) {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(id, l.local_addr().expect("addr").to_string());
        listeners.insert(id, l);
    }
    let mut peers = BTreeMap::new();
    for (id, listener) in listeners {
        peers.insert(id, start_peer(id, &addrs, dirs[(id - 1) as usize].path(), listener).await);
    }
    (dirs, addrs, peers)
}

async fn start_peer(id: u64, addrs: &BTreeMap<u64, String>, dir: &std::path::Path, listener: TcpListener) -> Peer {
    let (store, _) = Store::open(dir, &StoreConfig::default()).expect("open store");
    let (writer, writer_thread) = spawn_writer(store.clone(), WriterConfig::default()).expect("writer");
    let config = ClusterConfig::new(id, addrs.clone());
    let node = Arc::new(MetaNode::start(&config, store, writer, Peers::default()).await.expect("start node"));
    let service = node.service().into_server();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    node.initialize().await.expect("initialize");
    Peer { node, server, stop_server, writer: writer_thread }
}

impl Peer {
    /// Stops the peer (closing its connections, as a process exit would) and
    /// waits until its store is closed, so it can be reopened.
    async fn stop(self) {
        self.node.shutdown().await;
        let _ = self.stop_server.send(());
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the stopped peer's server closed its connections")
            .expect("server task");
        drop(self.node);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.writer.is_finished() {
            assert!(Instant::now() < deadline, "the stopped peer's store stayed open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.writer.join().expect("writer thread");
    }
}

/// Polls `check` every 20 ms until it holds, failing with `what` after `limit`.
async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader all of `peers` agree on.
async fn agreed_leader(peers: &BTreeMap<u64, Peer>) -> u64 {
    let mut leader = None;
    wait_for(Duration::from_secs(15), "the peers agree on a leader", || {
        let seen: Vec<Option<u64>> = peers.values().map(|p| p.node.leader()).collect();
        leader = seen[0].filter(|l| peers.contains_key(l) && seen.iter().all(|s| *s == Some(*l)));
        leader.is_some()
    })
    .await;
    leader.expect("checked above")
}

fn create(name: &str) -> MetaCommand {
    MetaCommand::CreateTopic {
        name: name.into(),
        partitions: 3,
        replication_factor: 3,
        config: TopicConfig {
            retention_ms: 0,
            retention_bytes: 0,
            segment_bytes: 1 << 20,
            segment_ms: 60_000,
            max_message_bytes: 1 << 20,
            durability: Default::default(),
        },
        created_ms: 1,
        beside: None,
        brokers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_replicate_the_catalog_across_a_leader_stop() {
    let (dirs, addrs, mut peers) = start_three().await;

    let leader = agreed_leader(&peers).await;
    let follower = *peers.keys().find(|id| **id != leader).expect("a follower");
    let redirected = peers[&follower].node.propose_local(create("orders")).await;
    assert_eq!(
        redirected,
        Err(ProposeError::NotLeader { leader: Some(leader), leader_addr: Some(addrs[&leader].clone()) }),
        "a proposal at a follower names the leader"
    );

    // `propose` at a follower is forwarded to the leader.
    let created = peers[&follower].node.propose(create("orders")).await.expect("create through a follower");
    assert_eq!(created, MetaResponse::TopicCreated { id: TopicId(0) });
    wait_for(Duration::from_secs(5), "every peer's catalog has `orders`", || {
        peers.values().all(|p| p.node.catalog().topics.get("orders").map(|t| t.id) == Some(TopicId(0)))
    })
    .await;
    let again = peers[&leader].node.propose(create("orders")).await.expect("create again");
    assert_eq!(again, MetaResponse::TopicExists { id: TopicId(0) }, "a name is created once");

    // The leader stops: the other two elect one of themselves and go on.
    let stopped = peers.remove(&leader).expect("leader");
    stopped.stop().await;
    let second = agreed_leader(&peers).await;
    assert_ne!(second, leader);
    let created = peers[&second].node.propose(create("payments")).await.expect("create after failover");
    assert_eq!(created, MetaResponse::TopicCreated { id: TopicId(1) }, "ids continue across leaders");

    // The old leader comes back on its own disk and catches up from the log.
    let listener = TcpListener::bind(addrs[&leader].as_str()).await.expect("rebind the stopped peer's address");
    let back = start_peer(leader, &addrs, dirs[(leader - 1) as usize].path(), listener).await;
    assert!(back.node.catalog().topics.contains_key("orders"), "what it had applied survived its restart");
    peers.insert(leader, back);
    let deadline = Instant::now() + Duration::from_secs(10);
    while peers[&leader].node.catalog().topics.get("payments").map(|t| t.id) != Some(TopicId(1)) {
        let states: Vec<String> = peers.values().map(|p| p.node.status()).collect();
        assert!(Instant::now() < deadline, "after 10 s the restarted peer has not learnt `payments`: {states:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let catalogs: Vec<_> = peers.values().map(|p| p.node.catalog()).collect();
    assert!(catalogs.windows(2).all(|w| w[0] == w[1]), "all three catalogs are equal: {catalogs:#?}");

    for (_, p) in peers {
        p.stop().await;
    }
}

/// A rolling upgrade: a broker registered by a build from before feature
/// levels (level 0) blocks the commands it could not decode, at the
/// proposer, with a message naming it; once it registers the current level,
/// they go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_an_older_broker_cannot_apply_waits_for_its_upgrade() {
    let (_dirs, _addrs, peers) = start_three().await;
    agreed_leader(&peers).await;
    let register = |broker: u64, features: u32| MetaCommand::SetBrokerEndpoint {
        broker,
        endpoint: format!("127.0.0.1:{}", 9000 + broker),
        features,
    };
    for id in [1, 2] {
        peers[&1].node.propose(register(id, FEATURE_LEVEL)).await.expect("register");
    }
    peers[&1].node.propose(register(3, 0)).await.expect("an old build registers without a level");
    wait_for(Duration::from_secs(5), "every peer knows broker 3's level", || {
        peers.values().all(|p| p.node.catalog().broker_features.get(&3) == Some(&0))
    })
    .await;

    let disk_full = MetaCommand::SetBrokerDiskFull { broker: 2, full: true };
    for id in 1..=3u64 {
        match peers[&id].node.propose(disk_full.clone()).await {
            Err(ProposeError::Unsupported(why)) => {
                assert!(why.contains("broker 3 (level 0)"), "names the old broker: {why}")
            }
            other => panic!("proposed at broker {id} while broker 3 is at level 0: {other:?}"),
        }
    }
    assert!(peers[&1].node.catalog().disk_full.is_empty(), "nothing was applied");
    // Commands every build knows are not held up.
    let created = peers[&2].node.propose(create("orders")).await.expect("a level-0 command");
    assert_eq!(created, MetaResponse::TopicCreated { id: TopicId(0) });

    peers[&1].node.propose(register(3, FEATURE_LEVEL)).await.expect("broker 3 upgraded");
    wait_for(Duration::from_secs(5), "every peer knows broker 3 upgraded", || {
        peers.values().all(|p| p.node.catalog().brokers_below(FEATURE_LEVEL).is_empty())
    })
    .await;
    peers[&3].node.propose(disk_full).await.expect("proposed once every broker knows it");
    wait_for(Duration::from_secs(5), "every peer applied it", || {
        peers.values().all(|p| p.node.catalog().disk_full.contains(&2))
    })
    .await;
    for (_, p) in peers {
        p.stop().await;
    }
}
