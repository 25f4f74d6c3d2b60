//! A broker's peer in the metadata group: starts openraft over the broker's
//! store, serves its peers' RPCs, and lets the broker propose catalog changes
//! and read the catalog. The broker sees only Sluice types.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::{BasicNode, Raft, ReadPolicy};
use sluice_storage::raft::GroupId;
use sluice_storage::{Store, WriterHandle};

use sluice_proto::internal::v1 as pb;
use sluice_proto::internal::v1::raft_client::RaftClient;

use crate::codec::{decode, encode};
use crate::fence::Fence;
use crate::log_store::LogStore;
use crate::meta::{Catalog, MetaCommand, MetaResponse, MetaStateMachine, MetaTypes, META_GROUP};
use crate::network::{GroupNetwork, Peers, RaftService};

/// Entries between shard snapshots unless configured: a shard's log (and its
/// index in memory) holds at most about this many plus a margin.
pub const DEFAULT_SHARD_SNAPSHOT_ENTRIES: u64 = 5000;

/// A shard follower that hears no leader for a random time between this and
/// twice this stands for election, unless configured. A killed leader's
/// partitions and groups are unwritable for about one to two of these (the
/// followers also refuse votes until the old leader's lease, the upper
/// bound, has run out).
pub const DEFAULT_SHARD_ELECTION_TIMEOUT: Duration = Duration::from_millis(400);

/// How a broker takes part in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This broker's id, unique in the cluster and never reused.
    pub node_id: u64,
    /// Every broker's cluster (broker-to-broker) address by id, this one included.
    pub peers: BTreeMap<u64, String>,
    /// How often a leader heartbeats its followers.
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range stands for election.
    pub election_timeout: (Duration, Duration),
    /// A shard snapshots its state after this many entries since the last
    /// snapshot, and then drops its log up to the snapshot (less a margin).
    pub shard_snapshot_entries: u64,
    /// A shard follower that hears no leader for a random time between this
    /// and twice this stands for election; shard leaders heartbeat every
    /// quarter of it.
    pub shard_election_timeout: Duration,
}

impl ClusterConfig {
    /// `node_id` among `peers`, with timings for a failover well under a second on a LAN.
    pub fn new(node_id: u64, peers: BTreeMap<u64, String>) -> Self {
        ClusterConfig {
            node_id,
            peers,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            shard_snapshot_entries: DEFAULT_SHARD_SNAPSHOT_ENTRIES,
            shard_election_timeout: DEFAULT_SHARD_ELECTION_TIMEOUT,
        }
    }

    /// openraft's settings for the metadata group.
    pub(crate) fn metadata_raft_config(&self) -> io::Result<openraft::Config> {
        let ms = |d: Duration| d.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "sluice-metadata".into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            // A restarted leader is elected again, never restored: see `shard_raft_config`.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("cluster timing: {e}")))
    }
}

/// A Raft group as one peer sees it, in plain numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    /// The leader's broker id, if known.
    pub leader: Option<u64>,
    /// The current term.
    pub term: u64,
    /// This peer's role: leader, follower, candidate, learner or shutdown.
    pub role: &'static str,
    /// The last entry in this peer's log (0: none).
    pub last_log_index: u64,
    /// The last entry this peer knows to be committed.
    pub committed_index: u64,
    /// The last entry this peer applied.
    pub applied_index: u64,
    /// The last entry its newest snapshot covers (0: none).
    pub snapshot_index: u64,
    /// Its log holds no entry at or below this one (0: nothing dropped yet).
    pub purged_index: u64,
    /// At the leader only: each voter's highest entry known to match (None:
    /// not heard from yet).
    pub replicas: Option<BTreeMap<u64, Option<u64>>>,
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This broker is not the metadata leader; propose at the leader (when known).
    NotLeader {
        /// The leader's id, if known.
        leader: Option<u64>,
        /// The leader's cluster address, if known.
        leader_addr: Option<String>,
    },
    /// The group cannot take writes now (no quorum, shutting down, storage failure).
    Unavailable(String),
    /// A registered broker runs a build that could not apply the command
    /// (an upgrade in progress): nothing was proposed.
    Unsupported(String),
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id), .. } => write!(f, "not the metadata leader (broker {id} is)"),
            ProposeError::NotLeader { leader: None, .. } => {
                write!(f, "not the metadata leader, and no leader is known yet")
            }
            ProposeError::Unavailable(why) => write!(f, "metadata group unavailable: {why}"),
            ProposeError::Unsupported(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ProposeError {}

/// How long `propose` waits for a leader that can take writes: a failover
/// (election timeout plus the new leader's first quorum round) fits well inside.
pub const LEADER_WAIT: Duration = Duration::from_secs(3);

/// How long a leader waits for a proposal to commit. A leader cut off from
/// its quorum does not know it until an election elsewhere reaches it, and
/// openraft's `client_write` waits for as long as that takes; the caller gets
/// an answer instead. Shorter than the forwarding deadline, so a forwarded
/// proposal reports this rather than a transport timeout.
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Proposes `command` to `raft` (this broker's peer) without forwarding.
pub(crate) async fn propose_at(
    raft: &Raft<MetaTypes, MetaStateMachine>,
    command: MetaCommand,
) -> Result<MetaResponse, ProposeError> {
    let Ok(result) = tokio::time::timeout(COMMIT_WAIT, raft.client_write(command)).await else {
        return Err(ProposeError::Unavailable(format!(
            "not committed within {} s: no quorum answers this leader (a partition?); the change is applied \
             only if this leader's quorum returns before another leader is elected",
            COMMIT_WAIT.as_secs()
        )));
    };
    match result {
        Ok(reply) => Ok(reply.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
        }
        Err(e) => Err(ProposeError::Unavailable(e.to_string())),
    }
}

/// The index a linearizable read of the catalog must see applied, answered
/// by the metadata leader after a quorum confirmed it still leads (openraft's
/// read index; nothing is written to the log).
pub(crate) async fn read_index_at(raft: &Raft<MetaTypes, MetaStateMachine>) -> Result<u64, ProposeError> {
    let Ok(result) = tokio::time::timeout(COMMIT_WAIT, raft.get_read_log_id(ReadPolicy::ReadIndex)).await else {
        return Err(ProposeError::Unavailable(format!(
            "no quorum confirmed this leader within {} s (a partition?)",
            COMMIT_WAIT.as_secs()
        )));
    };
    match result {
        Ok((read, _)) => Ok(read.index()),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader { leader: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) })
        }
        Err(e) => Err(ProposeError::Unavailable(e.to_string())),
    }
}

/// This broker's peer in the metadata group.
pub struct MetaNode {
    id: u64,
    raft: Raft<MetaTypes, MetaStateMachine>,
    machine: MetaStateMachine,
    peers: BTreeMap<u64, String>,
    connections: Peers,
    service: RaftService,
    fence: Fence,
    /// The metadata replica held nothing on disk at start.
    started_empty: bool,
}

impl MetaNode {
    /// Starts the peer over `store` (recovering its log and catalog) and its
    /// writer; it talks to the others through `connections`.
    pub async fn start(
        config: &ClusterConfig,
        store: Arc<Store>,
        writer: WriterHandle,
        connections: Peers,
    ) -> io::Result<MetaNode> {
        let raft_config = Arc::new(config.metadata_raft_config()?);
        let log = LogStore::open(store.clone(), writer.clone(), META_GROUP)?;
        let machine = MetaStateMachine::open(store.clone(), writer.clone())?;
        let network = GroupNetwork::<MetaTypes>::new(connections.clone(), META_GROUP, config.peers.clone());
        let started_empty = crate::membership::empty_on_disk(&store, META_GROUP)?;
        let fence = Fence::open(&store, writer, started_empty)?;
        let raft = Raft::new(config.node_id, raft_config, network, log, machine.clone())
            .await
            .map_err(|e| io::Error::other(format!("starting the metadata group: {e}")))?;
        let service = RaftService::new((raft.clone(), started_empty), machine.clone(), fence.clone());
        let peers = config.peers.clone();
        Ok(MetaNode { id: config.node_id, raft, machine, peers, connections, service, fence, started_empty })
    }

    /// Which of this broker's groups may not vote yet (it lost its data and
    /// waits to be added back).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The service answering the other brokers' Raft RPCs for this peer and
    /// for every shard started with it.
    pub fn service(&self) -> RaftService {
        self.service.clone()
    }

    /// The connections to peers, shared with the shards.
    pub fn connections(&self) -> Peers {
        self.connections.clone()
    }

    /// Makes every configured broker a voter, if the group has never been
    /// set up; a no-op on a group that has (so every broker may call it at
    /// every start). Setting it up decides that this broker's empty
    /// replicas are a new cluster's: they vote ([`crate::fence`]).
    pub async fn initialize(&self) -> io::Result<()> {
        // Setting the group up is the decision that this is a new cluster.
        self.fence.decided_new();
        let members: BTreeMap<u64, BasicNode> =
            self.peers.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(io::Error::other(format!("initializing the metadata group: {e}"))),
        }
    }

    /// Sets the groups up if this broker should: at once when its replica
    /// holds the metadata log, otherwise only once a majority of the
    /// configured brokers (this one included) report empty replicas (a new
    /// cluster). When a peer reports that it holds the log, the cluster
    /// exists: a broker it has registered lost its disk (fenced, see
    /// [`crate::fence`]); one configured with exactly the metadata group's
    /// voters is one of the brokers the cluster was set up with, started
    /// later, and sets its groups up too (so a group's first membership is
    /// never held by one broker alone: had that broker lost its disk before
    /// the group elected a leader, nobody could elect one, and `sluice
    /// cluster replace` would wait for it forever); any other (a new id
    /// replacing a lost broker) sets nothing up and waits for the leaders to
    /// add it. Returns whether it set the groups up; waits (retrying every
    /// half second) while it cannot tell.
    pub async fn set_up_or_join(&self, shards: &[std::sync::Arc<crate::ShardNode>]) -> io::Result<bool> {
        let mut logged = false;
        let configured: Vec<u64> = self.peers.keys().copied().collect();
        'ask: while crate::membership::is_empty(&self.raft, self.started_empty) {
            let mut asks = Vec::new();
            for (id, addr) in self.peers.iter().filter(|(id, _)| **id != self.id) {
                let (id, addr, peers, me) = (*id, addr.clone(), self.connections.clone(), self.id);
                let configured = configured.clone();
                asks.push(async move { (id, crate::membership::standing_of(&peers, &addr, me, configured).await) });
            }
            let answers = futures::future::join_all(asks).await;
            let mut empty = 1;
            for (id, answer) in answers {
                let answer = answer.map(|reply| {
                    let meta_empty = reply.groups.iter().any(|g| g.group == META_GROUP.0 && g.empty);
                    (meta_empty, reply.asking_registered, reply.configured_as_voters)
                });
                match answer {
                    Ok((false, true, _)) => {
                        tracing::warn!(
                            peer = id,
                            "the cluster exists and this broker's data dir is empty: it lost its data; not \
                             setting groups up, voting in none; waiting to be added (sluice cluster replace {})",
                            self.id
                        );
                        let groups = std::iter::once(META_GROUP).chain(shards.iter().map(|s| s.group()));
                        self.fence.fence(groups).await?;
                        return Ok(false);
                    }
                    Ok((false, false, true)) => {
                        tracing::info!(
                            peer = id,
                            "the cluster exists and this broker is one of the brokers it was set up with: setting \
                             its groups up as they did"
                        );
                        break 'ask;
                    }
                    Ok((false, false, false)) => {
                        tracing::info!(
                            peer = id,
                            "the cluster exists and this broker is new to it (its configured brokers are not the \
                             cluster's): not setting groups up; waiting to be added (sluice cluster replace)"
                        );
                        self.fence.decided_new();
                        return Ok(false);
                    }
                    Ok(_) => empty += 1,
                    Err(e) => tracing::debug!(peer = id, error = %e, "asking a peer whether the cluster exists"),
                }
            }
            if empty * 2 > self.peers.len() {
                break;
            }
            if !logged {
                tracing::info!("empty data dir: waiting for a majority of the brokers before setting the cluster up");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.fence.decided_new();
        if !self.fence.is_fenced(META_GROUP) {
            self.initialize().await?;
        }
        // A group still fenced after a restart in the middle of a replacement
        // waits to be added: setting it up would make an empty voter of it.
        let mut set_up = 0;
        for shard in shards.iter().filter(|s| !self.fence.is_fenced(s.group())) {
            shard.initialize(&self.peers).await?;
            set_up += 1;
        }
        tracing::info!(shards = set_up, "this broker's groups are set up");
        Ok(true)
    }

    /// Replaces broker `replacement.old` by `replacement.new` in the
    /// metadata group, in every one of `shards` and in every one of
    /// `elsewhere` (shards this broker holds no replica of, whose leaders it
    /// learns from the catalog), see [`crate::membership`], reporting each
    /// step to `progress`; the placed shards in `moved` get the new id in
    /// place of the old in their catalog replica set once the metadata group
    /// is done (so the new broker starts its replica, without setting it up),
    /// and a new id then takes the old one's place in the catalog. Safe to
    /// run again after an interruption.
    pub async fn replace_broker(
        &self,
        (shards, elsewhere): (&[std::sync::Arc<crate::ShardNode>], &[GroupId]),
        moved: &[GroupId],
        replacement: crate::Replacement,
        mut progress: impl FnMut(crate::ReplaceProgress),
    ) -> Result<(), crate::ReplaceError> {
        let new = replacement.new;
        let Some(new_addr) = replacement.address.clone().or_else(|| self.addresses().get(&new).cloned()) else {
            return Err(crate::ReplaceError::Refused(format!(
                "no cluster address known for broker {new}: give it (--address)"
            )));
        };
        let meta = self.raft.clone();
        let mut groups = vec![crate::membership::GroupHandle {
            group: META_GROUP,
            leader: Box::new(move || meta.metrics().borrow_watched().current_leader),
            addresses: {
                let (meta, peers) = (self.raft.clone(), self.peers.clone());
                Box::new(move || addresses_of(meta.metrics().borrow_watched().membership_config.nodes(), &peers))
            },
        }];
        groups.extend(shards.iter().map(|s| s.group_handle()));
        for group in elsewhere {
            let (machine, number) = (self.machine.clone(), group.0);
            let (meta, peers) = (self.raft.clone(), self.peers.clone());
            groups.push(crate::membership::GroupHandle {
                group: *group,
                leader: Box::new(move || machine.shard_leader(number)),
                addresses: Box::new(move || {
                    addresses_of(meta.metrics().borrow_watched().membership_config.nodes(), &peers)
                }),
            });
        }
        let old = replacement.old;
        let moves: Vec<MetaCommand> =
            moved.iter().map(|shard| MetaCommand::MoveShardReplica { shard: shard.0, from: old, to: new }).collect();
        if old != new {
            // Checked before any group changes: later steps need them.
            let remove = MetaCommand::RemoveBroker { broker: old };
            for command in moves.iter().chain([&remove]) {
                self.supported(command).map_err(|e| crate::ReplaceError::Refused(e.to_string()))?;
            }
        }
        let (metadata, rest) = groups.split_at(1);
        crate::membership::replace_broker(&self.connections, metadata, &replacement, &new_addr, &mut progress).await?;
        for command in moves {
            self.propose(command.clone())
                .await
                .map_err(|e| crate::ReplaceError::TimedOut(format!("{command} in the catalog: {e}")))?;
        }
        crate::membership::replace_broker(&self.connections, rest, &replacement, &new_addr, &mut progress).await?;
        if old != new {
            self.propose(MetaCommand::RemoveBroker { broker: old })
                .await
                .map_err(|e| crate::ReplaceError::TimedOut(format!("removing broker {old} from the catalog: {e}")))?;
            // So that `sluice cluster status` here, right after, no longer lists it.
            let mut changes = self.subscribe();
            let applied = tokio::time::timeout(LEADER_WAIT, async {
                while self.catalog().brokers.contains_key(&old) {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            });
            if applied.await.is_err() {
                return Err(crate::ReplaceError::TimedOut(format!(
                    "broker {old}'s removal from the catalog is committed but not yet applied on this broker"
                )));
            }
        }
        Ok(())
    }

    /// Where this broker reaches each member of the metadata group: its
    /// `--peers`, and the address in the membership for any other (a broker
    /// added by a replacement under a new id).
    pub fn addresses(&self) -> BTreeMap<u64, String> {
        addresses_of(self.raft.metrics().borrow_watched().membership_config.nodes(), &self.peers)
    }

    /// Proposes `command` at the metadata leader, wherever it is (forwarded
    /// over the cluster link when this broker is a follower), and waits until
    /// the leader has applied it (committed on a majority first). This
    /// broker's own catalog may apply it a moment later: see `subscribe`.
    ///
    /// While no leader is known, or a newly elected leader has not yet had its
    /// lease confirmed by a quorum (openraft then refuses writes without naming
    /// a leader), it retries for up to [`LEADER_WAIT`].
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaResponse, ProposeError> {
        self.supported(&command)?;
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        let mut pause = Duration::from_millis(10);
        loop {
            match propose_at(&self.raft, command.clone()).await {
                Err(ProposeError::NotLeader { leader: Some(leader), leader_addr }) if leader != self.id => {
                    // Reached the way this broker's configuration says (see `MetaNetwork`).
                    let Some(addr) = self.peers.get(&leader).cloned().or(leader_addr) else {
                        return Err(ProposeError::Unavailable(format!("no address for the leader, broker {leader}")));
                    };
                    return self.forward(leader, &addr, command).await;
                }
                Err(ProposeError::NotLeader { leader: None, .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Proposes `command` here only: `NotLeader` when this broker is not the leader.
    pub async fn propose_local(&self, command: MetaCommand) -> Result<MetaResponse, ProposeError> {
        self.supported(&command)?;
        propose_at(&self.raft, command).await
    }

    /// Refuses `command` while a registered broker's build could not apply it
    /// (`meta::FEATURE_LEVEL`).
    fn supported(&self, command: &MetaCommand) -> Result<(), ProposeError> {
        self.require_level(command.feature_level(), &command.to_string())
    }

    /// `Unsupported` while a registered broker's build is below feature
    /// `level` (`meta::FEATURE_LEVEL`): `what` (a command, a shard entry)
    /// would stop that broker's replica, which could not decode it.
    pub fn require_level(&self, level: u32, what: &str) -> Result<(), ProposeError> {
        let behind = self.machine.brokers_below(level);
        if behind.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = behind.iter().map(|(b, l)| format!("broker {b} (level {l})")).collect();
        Err(ProposeError::Unsupported(format!(
            "{what} needs catalog feature level {level}, and {} runs an older build: upgrade every broker \
             first (docs/REPLICATION.md, Upgrades)",
            list.join(", ")
        )))
    }

    async fn forward(&self, leader: u64, addr: &str, command: MetaCommand) -> Result<MetaResponse, ProposeError> {
        let unavailable =
            |e: String| ProposeError::Unavailable(format!("forwarding to the leader (broker {leader}): {e}"));
        let channel = self.connections.channel(addr).map_err(unavailable)?;
        let payload = encode(&command).map_err(|e| unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(pb::ProposeRequest { command: payload.into() });
        // Long enough for the leader to report COMMIT_WAIT itself, short enough for a caller.
        request.set_timeout(COMMIT_WAIT + Duration::from_secs(2));
        let reply = RaftClient::new(channel)
            .propose(request)
            .await
            .map_err(|s| unavailable(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        if reply.error.is_empty() {
            return decode(&reply.response, "proposal response").map_err(|e| unavailable(e.to_string()));
        }
        Err(self.refusal(reply.leader, reply.error, unavailable))
    }

    /// A peer's refusal of a forwarded call: `NotLeader` when it names a
    /// leader (`leader` non-zero; addressed as the group's membership knows
    /// it, so a broker that replaced another is found too), else `error`.
    fn refusal(&self, leader: u64, error: String, unavailable: impl Fn(String) -> ProposeError) -> ProposeError {
        if leader == 0 {
            return unavailable(error);
        }
        ProposeError::NotLeader { leader: Some(leader), leader_addr: self.addresses().remove(&leader) }
    }

    /// Waits (up to [`COMMIT_WAIT`]) until this broker has applied the
    /// catalog through entry `index` (a [`MetaNode::read_barrier`]);
    /// `Unavailable` if it has not by then (it hears the leader's appends
    /// late, or not at all).
    pub async fn applied_through(&self, index: u64) -> Result<(), ProposeError> {
        self.raft
            .wait(Some(COMMIT_WAIT))
            .applied_index_at_least(Some(index), "the catalog catches up with the metadata leader")
            .await
            .map(|_| ())
            .map_err(|e| {
                ProposeError::Unavailable(format!("this broker has not applied the catalog through entry {index}: {e}"))
            })
    }

    /// The read barrier for names this broker's catalog lacks: the metadata
    /// leader's read index (every change committed before the call is at or
    /// below it), asked over the cluster link when this broker follows, of
    /// each peer while no leader is known. A broker asks it before it answers
    /// "not found", so a client that made a topic through one broker and names
    /// it at another a moment later is never told it does not exist; then it
    /// waits for [`MetaNode::applied_through`]. Bounded by the leader wait.
    pub async fn read_barrier(&self) -> Result<u64, ProposeError> {
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        let mut pause = Duration::from_millis(10);
        loop {
            let asked = match read_index_at(&self.raft).await {
                Err(ProposeError::NotLeader { leader: Some(leader), leader_addr }) if leader != self.id => {
                    self.read_index_of(leader, leader_addr).await
                }
                // No leader known here (an election, or this broker hears the
                // leader late): a peer may know it.
                Err(ProposeError::NotLeader { leader: None, .. }) => self.read_index_from_peers().await,
                other => return other,
            };
            match asked {
                Err(ProposeError::NotLeader { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn read_index_of(&self, leader: u64, leader_addr: Option<String>) -> Result<u64, ProposeError> {
        let Some(addr) = self.peers.get(&leader).cloned().or(leader_addr) else {
            return Err(ProposeError::Unavailable(format!("no address for the leader, broker {leader}")));
        };
        self.read_index_from(leader, &addr).await
    }

    /// The read index of whichever peer leads, asking each (and the leader
    /// one names) in turn; `NotLeader` when none answers with one.
    async fn read_index_from_peers(&self) -> Result<u64, ProposeError> {
        for (peer, addr) in self.addresses().into_iter().filter(|(id, _)| *id != self.id) {
            match self.read_index_from(peer, &addr).await {
                Ok(index) => return Ok(index),
                Err(ProposeError::NotLeader { leader: Some(leader), leader_addr })
                    if leader != self.id && leader != peer =>
                {
                    if let Ok(index) = self.read_index_of(leader, leader_addr).await {
                        return Ok(index);
                    }
                }
                Err(e) => tracing::debug!(peer, error = %e, "no read index from this peer"),
            }
        }
        Err(ProposeError::NotLeader { leader: None, leader_addr: None })
    }

    async fn read_index_from(&self, leader: u64, addr: &str) -> Result<u64, ProposeError> {
        let unavailable = |e: String| {
            ProposeError::Unavailable(format!("asking the leader (broker {leader}) for its read index: {e}"))
        };
        let channel = self.connections.channel(addr).map_err(unavailable)?;
        let mut request = tonic::Request::new(pb::ReadIndexRequest {});
        request.set_timeout(COMMIT_WAIT + Duration::from_secs(2));
        let reply = RaftClient::new(channel)
            .read_index(request)
            .await
            .map_err(|s| unavailable(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        if reply.error.is_empty() {
            return Ok(reply.index);
        }
        Err(self.refusal(reply.leader, reply.error, unavailable))
    }

    /// Changes after every catalog change applied on this broker.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.machine.subscribe()
    }

    /// The catalog as of the last entry applied on this broker.
    pub fn catalog(&self) -> Catalog {
        self.machine.catalog()
    }

    /// `f` over the catalog as of the last entry applied on this broker,
    /// without copying it (for a reader of one part of a large catalog; applies
    /// wait meanwhile, so keep `f` short).
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        self.machine.with_catalog(f)
    }

    /// The secret brokers present to each other's client ports (empty until
    /// set; cheap: no catalog copy).
    pub fn cluster_secret(&self) -> String {
        self.machine.cluster_secret()
    }

    /// Broker `id`'s registered client endpoint (cheap: no catalog copy), for
    /// `not_leader` answers.
    pub fn broker_endpoint(&self, id: u64) -> Option<String> {
        self.machine.broker_endpoint(id)
    }

    /// Where this broker reaches the broker whose client endpoint is
    /// `endpoint` over the cluster link (its `--peers` address), if the
    /// catalog knows that endpoint.
    pub fn peer_address_of(&self, endpoint: &str) -> Option<String> {
        let id = self.machine.broker_at(endpoint)?;
        self.addresses().remove(&id)
    }

    /// Whether this broker's catalog holds topic `name`.
    pub fn holds_topic(&self, name: &str) -> bool {
        self.machine.holds_topic(name)
    }

    /// Whether this broker's catalog holds group `name`.
    pub fn holds_group(&self, name: &str) -> bool {
        self.machine.holds_group(name)
    }

    /// Topic `name`'s replication factor as this broker's catalog has it.
    pub fn replication_factor(&self, name: &str) -> Option<u32> {
        self.machine.replication_factor(name)
    }

    /// The brokers whose data volume is below its free-space reserve (as
    /// each last recorded it): no shard leadership is handed to them.
    pub fn disk_full(&self) -> std::collections::BTreeSet<u64> {
        self.machine.disk_full()
    }

    /// The leader this broker knows of.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// A one-line summary of this peer's Raft state, for logs and status output.
    pub fn status(&self) -> String {
        let m = self.raft.metrics().borrow_watched().clone();
        format!(
            "broker {} {:?} term {} leader {:?} last log {:?} applied {:?} replication {:?}",
            self.id,
            m.state,
            m.current_term,
            m.current_leader,
            m.last_log_index,
            m.last_applied.map(|l| l.index),
            m.replication.map(|r| r.into_iter().map(|(id, l)| (id, l.map(|l| l.index))).collect::<Vec<_>>()),
        )
    }

    /// The metadata group as this peer sees it, for `Cluster.Metadata`.
    pub fn report(&self) -> GroupReport {
        report_of(&self.raft.metrics().borrow_watched().clone())
    }

    /// This broker's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Stops the peer (its log and catalog stay on disk).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not stop cleanly");
        }
    }
}

/// A group's Raft metrics in plain numbers.
pub(crate) fn report_of<C: openraft::RaftTypeConfig<NodeId = u64, Term = u64>>(
    m: &openraft::RaftMetrics<C>,
) -> GroupReport {
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    GroupReport {
        leader: m.current_leader,
        term: m.current_term,
        role,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed_index: m.local_committed.as_ref().map_or(0, |l| l.index),
        applied_index: m.last_applied.as_ref().map_or(0, |l| l.index),
        snapshot_index: m.snapshot.as_ref().map_or(0, |l| l.index),
        purged_index: m.purged.as_ref().map_or(0, |l| l.index),
        replicas: m.replication.as_ref().map(|r| r.iter().map(|(id, l)| (*id, l.as_ref().map(|l| l.index))).collect()),
    }
}

/// The addresses of a group's members (`nodes`, from its membership),
/// overridden by `peers` (this broker's own way to reach each configured broker).
pub(crate) fn addresses_of<'a>(
    nodes: impl Iterator<Item = (&'a u64, &'a BasicNode)>,
    peers: &BTreeMap<u64, String>,
) -> BTreeMap<u64, String> {
    let mut addresses: BTreeMap<u64, String> = nodes.map(|(id, node)| (*id, node.addr.clone())).collect();
    addresses.extend(peers.iter().map(|(id, addr)| (*id, addr.clone())));
    addresses
}
