//! A broker's part in a cluster (steps 1–3 of `docs/REPLICATION.md`): the
//! broker runs its peer of the metadata group and of every shard (over its
//! own store and writer, so all of them share the broker's group commit),
//! serves the other brokers on the cluster listener, registers its client
//! endpoint in the catalog, and makes its topic registry follow the catalog
//! (`follow`). Partitions belong to shards, which replicate their records
//! (`crate::partition::replicated`).
//!
//! Starting is two steps: [`Cluster::open`] before the registries exist
//! (the shards must own the recovered partition logs before their Raft
//! groups run), and [`Cluster::start`] once they do.

mod follow;
mod leadership;
mod placed;
mod view;

pub use leadership::LeadershipMover;
pub use view::{ClusterReport, ClusterView, GroupLeader, PartitionLeader};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use sluice_replication::meta::{MetaCommand, META_GROUP};
use sluice_replication::{ClusterConfig, MetaNode, Peers, ShardHost, ShardNode, ShardStart};
use sluice_storage::raft::{GroupId, HardState};
use sluice_storage::{PartitionLog, Recovered, Store, TopicConfig, WriterHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::group::GroupRegistry;
use crate::metrics::{CLUSTER_BROKERS, CLUSTER_FENCED_GROUPS, CLUSTER_METADATA_LEADER};
use crate::partition::replicated::{shard_of, SHARDS_PER_BROKER};
use crate::partition::{ReplicatedPartitions, Watermarks};
use crate::server::ServeError;
use crate::tls::peer::PeerTls;
use crate::topic::TopicRegistry;

/// The cluster side of a broker, opened but not yet serving.
pub struct ClusterCore {
    node: Arc<MetaNode>,
    tls: Option<Arc<PeerTls>>,
    shards: Vec<Arc<ShardNode>>,
    replicated: Arc<ReplicatedPartitions>,
    placed: Arc<placed::PlacedShards>,
}

impl ClusterCore {
    /// What the topic registry appends through.
    pub fn replicated(&self) -> Arc<ReplicatedPartitions> {
        self.replicated.clone()
    }
}

/// The running cluster side of a broker.
pub struct Cluster {
    node: Arc<MetaNode>,
    tls: Option<Arc<PeerTls>>,
    /// The cluster listener, bound at start and served from `serve_peers`.
    listener: std::sync::Mutex<Option<TcpListener>>,
    replicated: Arc<ReplicatedPartitions>,
    stop: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Cluster {
    /// Starts this broker's metadata peer and its shards, handing every
    /// recovered partition log to its shard (`recovered` keeps the topics,
    /// without their logs); with `tls`, every peer connection is mutual TLS.
    /// A data dir whose topics a single broker created cannot join: the
    /// catalog would not know them.
    pub async fn open(
        config: &ClusterConfig,
        (store, writer): (Arc<Store>, WriterHandle),
        recovered: &mut Recovered,
        (defaults, tls): (TopicConfig, Option<Arc<PeerTls>>),
    ) -> Result<ClusterCore, ServeError> {
        let io = |what: &str, source: std::io::Error| ServeError::Io { what: what.to_owned(), source };
        let joined_before = store
            .raft_hard_state(META_GROUP, HardState::Vote)
            .map_err(|e| io("reading the metadata group's vote", std::io::Error::other(e)))?
            .is_some();
        let local_topics = recovered.topics.len();
        if !joined_before && local_topics > 0 {
            return Err(ServeError::Cluster(format!(
                "this data dir holds {local_topics} topic(s) made by a single broker, and a broker joins a cluster with \
                 an empty data dir (moving a single broker's topics into a cluster is not supported yet): start \
                 it without --peers, or give it a new --data-dir"
            )));
        }
        let peers = tls.as_ref().map(|t| Peers::with_connect(t.connect())).unwrap_or_default();
        let node = Arc::new(
            MetaNode::start(config, store.clone(), writer.clone(), peers)
                .await
                .map_err(|e| io("starting the metadata group", e))?,
        );
        let shard_count = SHARDS_PER_BROKER * config.peers.len() as u64;
        let recovered_logs = recovered.topics.iter_mut().flat_map(|(_, logs)| std::mem::take(logs));
        let mut unplaced: std::collections::HashMap<_, _> =
            recovered_logs.chain(std::mem::take(&mut recovered.untracked)).map(|log| (log.id(), log)).collect();
        let watermarks = Arc::new(Watermarks::new(defaults));
        let placed = Arc::new(placed::PlacedShards::new(
            config.clone(),
            (store.clone(), writer.clone()),
            node.clone(),
            watermarks.clone(),
        ));
        let catalog = node.catalog();
        let placed_logs =
            placed.claim(&catalog, &mut unplaced).map_err(|e| io("reading the placed shards' partitions", e))?;
        let mut logs: BTreeMap<u64, Vec<PartitionLog>> = BTreeMap::new();
        for (id, log) in unplaced {
            logs.entry(shard_of(id, shard_count)).or_default().push(log);
        }
        let mut shards = BTreeMap::new();
        for number in 1..=shard_count {
            let start = ShardStart {
                group: GroupId(number),
                store: store.clone(),
                writer: writer.clone(),
                connections: node.connections(),
                service: node.service(),
                host: watermarks.clone(),
                partitions: logs.remove(&number).unwrap_or_default(),
            };
            let shard =
                ShardNode::start(config, start).await.map_err(|e| io(&format!("starting shard {number}"), e))?;
            for (partition, mark) in shard.watermarks() {
                watermarks.committed(partition, mark);
            }
            shards.insert(number, Arc::new(shard));
        }
        let full: Vec<Arc<ShardNode>> = shards.values().cloned().collect();
        for (number, partitions) in placed_logs {
            // `claim` took the shards the catalog lists.
            let Some(listed) = catalog.shards.get(&number) else { continue };
            let shard = placed
                .start(number, listed, partitions)
                .await
                .map_err(|e| io(&format!("starting placed shard {number}"), e))?;
            shards.insert(number, shard);
        }
        let replicated = Arc::new(ReplicatedPartitions::new(store, (shards, shard_count), watermarks, node.clone()));
        Ok(ClusterCore { node, tls, shards: full, replicated, placed })
    }

    /// Binds the cluster listener (served from [`Cluster::serve_peers`]),
    /// sets the groups up (once, cluster-wide), registers the client
    /// endpoint, and makes the registries follow the catalog.
    pub async fn start(
        core: ClusterCore,
        config: &ClusterConfig,
        listen: SocketAddr,
        client_endpoint: String,
        (topics, groups): (Arc<TopicRegistry>, Arc<GroupRegistry>),
        retention_check: Duration,
    ) -> Result<Cluster, ServeError> {
        let io = |what: &str, source: std::io::Error| ServeError::Io { what: what.to_owned(), source };
        let ClusterCore { node, tls, shards, replicated, placed } = core;
        let listener =
            TcpListener::bind(listen).await.map_err(|e| io(&format!("binding cluster-listen {listen}"), e))?;
        let stop = CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        // In the background: a broker of a new cluster waits for a majority of its peers.
        let (set_up_node, set_up_shards) = (node.clone(), shards.clone());
        tasks.spawn(async move {
            if let Err(e) = set_up_node.set_up_or_join(&set_up_shards).await {
                tracing::error!(error = %e, "setting the cluster's groups up failed");
            }
        });
        topics.attach_cluster(node.clone(), config.peers.len());
        groups.attach_cluster(node.clone());
        tasks.spawn(follow::follow(node.clone(), (placed, replicated.clone()), topics, groups, stop.clone()));
        tasks.spawn(placed::record_leaders(node.clone(), replicated.clone(), stop.clone()));
        tasks.spawn(register(node.clone(), client_endpoint, stop.clone()));
        tasks.spawn(gauges(node.clone(), stop.clone()));
        tasks.spawn(leadership::spread_leaders(node.clone(), replicated.clone(), stop.clone()));
        tasks.spawn(leadership::watch_disk(node.clone(), replicated.clone(), stop.clone()));
        tasks.spawn(retention(replicated.clone(), retention_check, stop.clone()));
        tasks.close();
        tracing::info!(
            node_id = config.node_id,
            %listen,
            peers = ?config.peers,
            shards = shards.len(),
            "cluster member started (metadata group and shards)"
        );
        Ok(Cluster { node, tls, listener: std::sync::Mutex::new(Some(listener)), replicated, stop, tasks })
    }

    /// Serves the other brokers on the cluster listener: every Raft group's
    /// RPCs, and `forwarded` (the client services whose appends peers
    /// forward here), behind the cluster door (`auth::peer`); over mutual
    /// TLS if cluster TLS is on. Called once, when the client services exist.
    pub fn serve_peers(&self, forwarded: tonic::service::Routes, auth: Arc<crate::auth::Authenticator>) {
        let Some(listener) = self.listener.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let door = crate::auth::peer::PeerLayer::new(auth, self.tls.is_some());
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .layer(door)
            .add_routes(forwarded.add_service(self.node.service().into_server()));
        let stop = self.stop.clone();
        let tls = self.tls.as_ref().map(|t| t.server());
        self.tasks.spawn(async move {
            let result = match tls {
                None => {
                    // Our own listener: the server's tcp_nodelay does not apply. Without it, Nagle
                    // and delayed ACKs hold small answers (Raft replies, forwarded produces) ~40 ms.
                    let incoming =
                        futures::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
                            conn.inspect(|s| {
                                if let Err(e) = s.set_nodelay(true) {
                                    tracing::warn!(error = %e, "cannot disable Nagle on a peer connection");
                                }
                            })
                        });
                    router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()).await
                }
                Some(tls) => {
                    let incoming = crate::tls::incoming(listener, tls, stop.clone());
                    router.serve_with_incoming_shutdown(incoming, stop.cancelled_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cluster listener failed");
            }
        });
    }

    /// A read-only view for the front doors.
    pub fn view(&self) -> ClusterView {
        ClusterView::new(self.node.clone(), self.replicated.clone())
    }

    /// This broker's peer in the metadata group (schedules live in its catalog).
    pub fn meta_node(&self) -> Arc<MetaNode> {
        self.node.clone()
    }

    /// What moves this broker's shard leaderships away when it stops.
    pub fn leadership(&self) -> LeadershipMover {
        LeadershipMover::new(self.replicated.clone())
    }

    /// Stops the peer and its listener; afterwards nothing of the cluster side
    /// holds the writer, so the broker's ordered shutdown can finish.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
        for shard in self.replicated.shard_nodes() {
            shard.shutdown().await;
        }
        self.node.shutdown().await;
    }
}

/// Applies retention to this broker's replicas every `every`.
async fn retention(partitions: Arc<ReplicatedPartitions>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        partitions.apply_retention().await;
    }
}

/// Records this broker's client endpoint in the catalog, retrying until a
/// leader takes it (at start there may be none yet).
async fn register(node: Arc<MetaNode>, endpoint: String, stop: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    // Registered means "ran in this cluster before" to a broker deciding
    // whether its empty data dir is a lost disk: not before that is decided.
    while !node.fence().decided() {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    loop {
        let command = MetaCommand::SetBrokerEndpoint {
            broker: node.id(),
            endpoint: endpoint.clone(),
            features: sluice_replication::meta::FEATURE_LEVEL,
        };
        match node.propose(command).await {
            Ok(_) if !node.cluster_secret().is_empty() => {
                tracing::info!(%endpoint, "registered in the cluster catalog");
                return;
            }
            Ok(_) => {
                // The first broker of a cluster makes the secret brokers present to each other.
                let secret = MetaCommand::SetClusterSecret { secret: crate::auth::random_secret().into() };
                if let Err(e) = node.propose(secret).await {
                    tracing::debug!(error = %e, "setting the cluster secret; will retry");
                }
                continue;
            }
            Err(e) => tracing::debug!(error = %e, "registering in the cluster catalog; will retry"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Keeps the leader, broker-count and fenced-group gauges current: the leader is polled
/// (openraft's metrics), the catalog read only when it changed.
async fn gauges(node: Arc<MetaNode>, stop: CancellationToken) {
    let mut changes = node.subscribe();
    let mut last_leader = None;
    let mut catalog_changed = true;
    loop {
        let leader = node.leader();
        if leader != last_leader {
            tracing::info!(leader = ?leader, "metadata leader");
            last_leader = leader;
        }
        metrics::gauge!(CLUSTER_METADATA_LEADER).set(leader.unwrap_or(0) as f64);
        metrics::gauge!(CLUSTER_FENCED_GROUPS).set(node.fence().fenced_groups() as f64);
        if catalog_changed {
            metrics::gauge!(CLUSTER_BROKERS).set(node.catalog().brokers.len() as f64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => {
                if r.is_err() {
                    // The state machine is gone: the broker is stopping.
                    stop.cancelled().await;
                    return;
                }
                catalog_changed = true;
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => catalog_changed = false,
        }
    }
}
