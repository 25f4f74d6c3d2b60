//! One broker's peer in one shard: starts openraft over the shard's log and
//! state machine, registers it with the broker-to-broker service, and lets
//! the broker propose batches where it leads. It never forwards: a broker
//! that is not the shard's leader answers its client with the leader to go
//! to (the broker turns that into `not_leader` with the leader's endpoint
//! and epoch).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::alias::CommittedLeaderIdOf;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::metrics::RaftServerMetrics;
use openraft::type_config::alias::WatchReceiverOf;
use openraft::{BasicNode, Raft};
use sluice_storage::raft::GroupId;
use sluice_storage::{PartitionId, PartitionLog, Store, WriterHandle};

use super::snapshot::Copier;
use super::{ShardCommand, ShardHost, ShardLog, ShardMachine, ShardResponse, ShardTypes};
use crate::network::{GroupNetwork, Peers, RaftService};
use crate::node::{report_of, ClusterConfig, GroupReport, COMMIT_WAIT, LEADER_WAIT};

/// Most entries (record batches, up to a request's size each) in one
/// append-entries message, so a lagging follower catches up in bounded
/// messages rather than one huge one.
const SHARD_MAX_PAYLOAD_ENTRIES: u64 = 16;

/// How long sending a snapshot may take, the receiver's install included
/// (it copies the records it lacks before it answers).
const SHARD_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(90);

/// openraft's settings for a shard. Its timing is slower than the metadata
/// group's: a shard's leader and followers are the busiest tasks of a loaded
/// broker, and a heartbeat that waits behind record batches must not look
/// like a dead leader (`ClusterConfig::shard_election_timeout`).
///
/// A restarted leader never takes its leadership back without an election
/// (openraft's `enable_leader_restore`, on by default, is turned off): a
/// leader sends entries to followers before its own write of them is
/// durable, so after a SIGKILL its log may lack entries the followers hold;
/// leading again in the same term, it would write different entries under
/// the same ids, which the followers take as matching (found by the kill
/// loop: a dead-letter partition's replicas differed). A new term gives its
/// new entries new ids, and the followers' stale ones are replaced.
fn shard_raft_config(group: GroupId, config: &ClusterConfig) -> io::Result<openraft::Config> {
    let ms = |d: Duration| d.as_millis() as u64;
    let snapshot_entries = config.shard_snapshot_entries;
    let election = config.shard_election_timeout;
    openraft::Config {
        cluster_name: format!("sluice-shard-{}", group.0),
        heartbeat_interval: ms(election / 4).max(1),
        election_timeout_min: ms(election),
        election_timeout_max: ms(election * 2),
        max_payload_entries: SHARD_MAX_PAYLOAD_ENTRIES,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries.max(1)),
        // Entries a follower a little behind still gets from the log, not a snapshot.
        max_in_snapshot_log_to_keep: (snapshot_entries / 5).max(1),
        install_snapshot_timeout: ms(SHARD_SNAPSHOT_TIMEOUT),
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("shard timing: {e}")))
}

/// Why a batch was not appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardProposeError {
    /// Another broker leads this shard (or none is known yet): propose there.
    NotLeader {
        /// The leader's broker id, if known.
        leader: Option<u64>,
        /// The term this broker knows: a newer leader has a higher one.
        term: u64,
    },
    /// The shard cannot take writes now (no quorum, shutting down, storage failure).
    Unavailable(String),
}

impl std::fmt::Display for ShardProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardProposeError::NotLeader { leader: Some(id), term } => {
                write!(f, "not the shard leader (broker {id} is, term {term})")
            }
            ShardProposeError::NotLeader { leader: None, .. } => write!(f, "the shard has no leader yet"),
            ShardProposeError::Unavailable(why) => write!(f, "shard unavailable: {why}"),
        }
    }
}

impl std::error::Error for ShardProposeError {}

/// A term in which this broker leads a shard: what a consumer group's actor
/// holds while it runs on this broker. Proposals made under a lease are
/// appended only while the lease's leader still leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLease {
    leader: CommittedLeaderIdOf<ShardTypes>,
    /// The shard's term (the epoch clients are told).
    pub term: u64,
}

/// Changes of who leads one shard, from [`ShardNode::leadership`].
pub struct LeadershipWatch {
    rx: WatchReceiverOf<ShardTypes, RaftServerMetrics<ShardTypes>>,
}

impl LeadershipWatch {
    /// Waits until the shard's role, leader or term changed since the last
    /// call (the first call returns at once), or `limit` passes.
    pub async fn changed(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.rx.changed()).await;
    }
}

/// A proposal's answer, once its entry is committed and applied here.
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<ShardResponse, ShardProposeError>> + Send>>;

/// This broker's peer in one shard.
pub struct ShardNode {
    id: u64,
    group: GroupId,
    raft: Raft<ShardTypes, ShardMachine>,
    log: ShardLog,
    machine: ShardMachine,
    service: RaftService,
    /// Where this broker reaches each configured broker.
    peers: BTreeMap<u64, String>,
    /// Connections to the other brokers.
    connections: Peers,
    /// The replica held nothing on disk at start.
    started_empty: bool,
}

/// Everything a shard peer is started with.
pub struct ShardStart {
    /// The shard's group id (shards count from 1).
    pub group: GroupId,
    /// The broker's store.
    pub store: Arc<Store>,
    /// The broker's writer.
    pub writer: WriterHandle,
    /// Connections to the other brokers.
    pub connections: Peers,
    /// The service the other brokers reach this broker's groups through.
    pub service: RaftService,
    /// The broker's side of the shard.
    pub host: Arc<dyn ShardHost>,
    /// The shard's partitions as recovered from the store.
    pub partitions: Vec<PartitionLog>,
}

impl ShardNode {
    /// Starts the peer (recovering its log) and serves its RPCs.
    pub async fn start(config: &ClusterConfig, start: ShardStart) -> io::Result<ShardNode> {
        let ShardStart { group, store, writer, connections, service, host, partitions } = start;
        let raft_config = Arc::new(shard_raft_config(group, config)?);
        let started_empty = crate::membership::empty_on_disk(&store, group)?;
        let log = ShardLog::open(store.clone(), writer.clone(), group, host.clone(), partitions)?;
        let copier = Copier {
            group,
            node: config.node_id,
            peers: connections.clone(),
            addresses: Arc::new(config.peers.clone()),
        };
        let machine = ShardMachine::open(store, writer, group, log.clone(), host, copier)?;
        machine.undo_interrupted_install().await?;
        let network = GroupNetwork::<ShardTypes>::new(connections.clone(), group, config.peers.clone());
        let raft = Raft::new(config.node_id, raft_config, network, log.clone(), machine.clone())
            .await
            .map_err(|e| io::Error::other(format!("starting shard {}: {e}", group.0)))?;
        service.add_shard(group, (raft.clone(), machine.clone(), started_empty));
        let peers = config.peers.clone();
        Ok(ShardNode { id: config.node_id, group, raft, log, machine, service, peers, connections, started_empty })
    }

    /// Makes `replicas` (broker id → cluster address) the shard's voters if
    /// it has never been set up; a no-op otherwise.
    pub async fn initialize(&self, replicas: &BTreeMap<u64, String>) -> io::Result<()> {
        let members: BTreeMap<u64, BasicNode> =
            replicas.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(io::Error::other(format!("initializing shard {}: {e}", self.group.0))),
        }
    }

    /// Appends `command` if this broker leads the shard, answering once it is
    /// committed on a majority and applied here. While no leader is known
    /// (an election), waits up to [`LEADER_WAIT`] for one; a known leader
    /// elsewhere is `NotLeader` at once.
    pub async fn propose(&self, command: ShardCommand) -> Result<ShardResponse, ShardProposeError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match write_once(&self.raft, command.clone()).await {
                Err(ShardProposeError::NotLeader { leader: Some(leader), term }) if leader != self.id => {
                    return Err(ShardProposeError::NotLeader { leader: Some(leader), term })
                }
                Err(ShardProposeError::NotLeader { term, .. }) if Instant::now() >= deadline => {
                    return Err(ShardProposeError::NotLeader { leader: None, term })
                }
                Err(ShardProposeError::NotLeader { .. }) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// The lease this broker holds on the shard now, if it leads it, with
    /// the end of its log at this moment: once every entry up to there is
    /// applied and stored here ([`ShardNode::stored_index`]), the store holds
    /// everything committed before the lease (a leader elected right after a
    /// restart may not yet have applied what it had committed, so being
    /// leader alone does not say that).
    pub fn lease(&self) -> Option<(ShardLease, u64)> {
        let leader = self.raft.as_leader().ok()?;
        let committed = leader.to_committed_leader_id();
        let end = self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        Some((ShardLease { term: committed.term, leader: committed }, end))
    }

    /// The last entry whose apply (group changes, applied index) is in the store.
    pub fn stored_index(&self) -> u64 {
        self.machine.stored().borrow().map_or(0, |id| id.index)
    }

    /// Who leads the shard as this broker knows it, and the term it knows.
    pub fn leader(&self) -> (Option<u64>, u64) {
        let report = self.report();
        (report.leader, report.term)
    }

    /// Follows who leads the shard (role, leader, term): what can change
    /// [`ShardNode::lease`]. Not every heartbeat: a task per consumer group
    /// waits on one, so an idle cluster with many groups stays idle.
    pub fn leadership(&self) -> LeadershipWatch {
        LeadershipWatch { rx: self.raft.server_metrics() }
    }

    /// Waits until every entry up to `index` is applied and stored here, or
    /// `limit` passes.
    pub async fn stored_reached(&self, index: u64, limit: Duration) {
        let mut stored = self.machine.stored();
        let reached = stored.wait_for(|s| s.map_or(0, |id| id.index) >= index);
        let _ = tokio::time::timeout(limit, reached).await;
    }

    /// Proposes `command` under `lease`, in order with every earlier call:
    /// returns once the entry is handed to Raft (not committed), with the
    /// answer to await. Refused with `NotLeader` if the lease's leader no
    /// longer leads by the time Raft takes it.
    pub async fn submit(&self, lease: &ShardLease, command: ShardCommand) -> Result<PendingWrite, ShardProposeError> {
        let (responder, answer) = ProgressResponder::<ShardTypes, _>::complete_only();
        let sent = self.raft.write(command).with_leader(lease.leader).responder(responder).await;
        if let Err(e) = sent {
            return Err(ShardProposeError::Unavailable(e.to_string()));
        }
        let term = lease.term;
        Ok(Box::pin(async move {
            match tokio::time::timeout(COMMIT_WAIT, answer).await {
                Err(_) => Err(ShardProposeError::Unavailable(format!(
                    "not committed within {} s: no quorum answers this leader",
                    COMMIT_WAIT.as_secs()
                ))),
                Ok(Err(_)) => Err(ShardProposeError::Unavailable("the shard stopped".into())),
                Ok(Ok(Ok(reply))) => Ok(reply.data),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                    Err(ShardProposeError::NotLeader { leader: f.leader_id, term })
                }
                Ok(Ok(Err(e))) => Err(ShardProposeError::Unavailable(e.to_string())),
            }
        }))
    }

    /// Hands the shard's leadership to broker `to` if this broker leads it
    /// and `to` holds every entry this broker has (so the transfer cannot
    /// lose a term's worth of progress or stall on a lagging replica).
    /// Returns whether a transfer was started.
    pub async fn hand_over(&self, to: u64) -> bool {
        if to == self.id || self.raft.as_leader().is_err() || !self.raft.voter_ids().any(|v| v == to) {
            return false;
        }
        let metrics = self.raft.metrics().borrow_watched().clone();
        let caught_up = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&to).cloned())
            .flatten()
            .is_some_and(|matched| Some(matched.index) == metrics.last_log_index);
        if !caught_up || !self.may_lead(to, &metrics).await {
            return false;
        }
        match self.raft.trigger().transfer_leader(to).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(shard = self.group.0, to, error = %e, "could not hand the shard's leadership over");
                false
            }
        }
    }

    /// Whether broker `to` says its replica may lead: not fenced (it lost its
    /// data and waits to be added back; it would refuse the hand-over, and
    /// this leader would stop heartbeating for an election timeout).
    async fn may_lead(&self, to: u64, metrics: &openraft::RaftMetrics<ShardTypes>) -> bool {
        let addresses = crate::node::addresses_of(metrics.membership_config.nodes(), &self.peers);
        let Some(addr) = addresses.get(&to) else { return false };
        match crate::membership::standing_of(&self.connections, addr, 0, Vec::new()).await {
            Ok(reply) => reply.groups.iter().any(|g| g.group == self.group.0 && !g.fenced),
            Err(e) => {
                tracing::debug!(shard = self.group.0, to, error = %e, "not handing the shard over: no standing");
                false
            }
        }
    }

    /// Hands the shard's leadership to any other replica that holds every
    /// entry (a broker about to stop moves its leaderships off first).
    pub async fn hand_over_to_any(&self) -> bool {
        let others: Vec<u64> = self.raft.voter_ids().filter(|id| *id != self.id).collect();
        for to in others {
            if self.hand_over(to).await {
                return true;
            }
        }
        false
    }

    /// This shard's group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Whether this replica holds nothing of its group yet (never set up,
    /// nothing replicated to it).
    pub fn is_empty(&self) -> bool {
        crate::membership::is_empty(&self.raft, self.started_empty)
    }

    /// What the replacement driver walks for this shard.
    pub(crate) fn group_handle(&self) -> crate::membership::GroupHandle {
        let (raft, peers) = (self.raft.clone(), self.peers.clone());
        let leader_raft = self.raft.clone();
        crate::membership::GroupHandle {
            group: self.group,
            leader: Box::new(move || leader_raft.metrics().borrow_watched().current_leader),
            addresses: Box::new(move || {
                crate::node::addresses_of(raft.metrics().borrow_watched().membership_config.nodes(), &peers)
            }),
        }
    }

    /// The shard's voters now, by id: who may lead it.
    pub fn voters(&self) -> Vec<u64> {
        self.raft.metrics().borrow_watched().membership_config.membership().voter_ids().collect()
    }

    /// Whether this broker leads the shard now.
    pub fn is_leader(&self) -> bool {
        self.raft.as_leader().is_ok()
    }

    /// Takes a partition created after start into the shard.
    pub fn adopt(&self, log: PartitionLog) {
        self.log.adopt(log);
    }

    /// Drops a partition whose topic was deleted.
    pub fn forget(&self, partition: PartitionId) {
        self.log.forget(partition);
    }

    /// The first offset of `partition` readers may see here (its first
    /// stored record, or its purge floor if further on), if this shard holds it.
    pub fn visible_start(&self, partition: PartitionId) -> Option<u64> {
        self.log.visible_start(partition)
    }

    /// Purges `partition` below its committed end on every replica (a
    /// dead-letter purge): proposed here when this broker leads the shard,
    /// else asked of its leader over the cluster link (`purge.rs`). Returns
    /// how many records were readable and are not any more. While no leader
    /// is known or the one known does not answer (an election after it
    /// died), tries again for up to [`LEADER_WAIT`] plus an election: a
    /// purge is safe to repeat (a floor only rises).
    pub async fn purge(&self, partition: PartitionId) -> Result<u64, ShardProposeError> {
        let deadline = Instant::now() + LEADER_WAIT * 2;
        let mut pause = Duration::from_millis(5);
        loop {
            match self.purge_once(partition).await {
                Err(e @ (ShardProposeError::Unavailable(_) | ShardProposeError::NotLeader { leader: None, .. }))
                    if Instant::now() < deadline =>
                {
                    tracing::debug!(shard = self.group.0, error = %e, "purge: no leader answers yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// One purge: here if this broker leads the shard, else at the leader it knows.
    async fn purge_once(&self, partition: PartitionId) -> Result<u64, ShardProposeError> {
        match super::purge::purge_here(&self.raft, &self.machine, partition).await {
            Err(ShardProposeError::NotLeader { leader: Some(leader), term }) if leader != self.id => {
                let metrics = self.raft.metrics().borrow_watched().clone();
                let addresses = crate::node::addresses_of(metrics.membership_config.nodes(), &self.peers);
                match addresses.get(&leader) {
                    Some(addr) => {
                        super::purge::purge_at(&self.connections, self.group, (leader, addr), partition).await
                    }
                    None => Err(ShardProposeError::NotLeader { leader: Some(leader), term }),
                }
            }
            other => other,
        }
    }

    /// Runs `f` over `partition`'s log, if this shard holds it.
    pub fn with_partition<T>(&self, partition: PartitionId, f: impl FnOnce(&PartitionLog) -> T) -> Option<T> {
        self.log.with_partition(partition, f)
    }

    /// Applies retention to the shard's partitions (see `ShardLog::trim`).
    /// Where log entries still point at records retention would remove (a
    /// shard too quiet to reach its next snapshot soon), it snapshots now
    /// and drops its log up to the snapshot, so the next round removes them.
    pub async fn trim(&self, now_ms: i64) -> io::Result<Vec<(PartitionId, sluice_storage::Trim)>> {
        let (trims, held_back) = self.log.trim(now_ms).await?;
        if held_back {
            let report = self.report();
            let trigger = self.raft.trigger();
            let done = if report.snapshot_index < report.applied_index {
                trigger.snapshot().await
            } else if report.purged_index < report.snapshot_index {
                trigger.purge_log(report.snapshot_index).await
            } else {
                Ok(())
            };
            if let Err(e) = done {
                tracing::warn!(shard = self.group.0, error = %e, "could not snapshot the shard for retention");
            }
        }
        Ok(trims)
    }

    /// Each partition's committed watermark as of the last applied entry
    /// (what readers may see right after a restart).
    pub fn watermarks(&self) -> Vec<(PartitionId, u64)> {
        self.machine.watermarks()
    }

    /// The shard as this peer sees it.
    pub fn report(&self) -> GroupReport {
        report_of(&self.raft.metrics().borrow_watched().clone())
    }

    /// Stops the peer (its log stays on disk) and its RPC service.
    pub async fn shutdown(&self) {
        self.service.remove_shard(self.group);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(shard = self.group.0, error = %e, "shard did not stop cleanly");
        }
    }
}

/// One `client_write` of `command`, bounded by [`COMMIT_WAIT`]: its answer once
/// committed and applied here, `NotLeader` (with the leader, if known) where
/// this broker does not lead, `Unavailable` when no quorum answers in time.
pub(crate) async fn write_once(
    raft: &Raft<ShardTypes, ShardMachine>,
    command: ShardCommand,
) -> Result<ShardResponse, ShardProposeError> {
    let Ok(result) = tokio::time::timeout(COMMIT_WAIT, raft.client_write(command)).await else {
        return Err(ShardProposeError::Unavailable(format!(
            "not committed within {} s: no quorum answers this leader",
            COMMIT_WAIT.as_secs()
        )));
    };
    match result {
        Ok(reply) => Ok(reply.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            let term = raft.metrics().borrow_watched().current_term;
            Err(ShardProposeError::NotLeader { leader: f.leader_id, term })
        }
        Err(e) => Err(ShardProposeError::Unavailable(e.to_string())),
    }
}
