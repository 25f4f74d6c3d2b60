//! Replacing a broker: every group's leader removes the lost replica from
//! its voters, adds the new one (the same id on an empty data dir, or a new
//! id) as a learner, and promotes it once it holds the log.
//!
//! Why not just start the old id on an empty volume: each leader keeps the
//! lost replica's matched index (openraft, like Raft, assumes a voter never
//! loses what it acknowledged), so it never resends what the empty replica
//! lacks, and the replica has forgotten its votes. A learner added afresh
//! starts with no progress: the leader sends it the log or a snapshot, and
//! it votes only once it is promoted, holding everything committed.
//!
//! Each step is decided at the leader from the group's membership and the
//! new broker's standing (is its replica empty?), so the procedure can be
//! run again after any interruption and never removes a replica that holds
//! data when the "new" broker is the old one still running on its disk.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, ChangeMembers, Raft};
use serde::{Deserialize, Serialize};
use sluice_proto::internal::v1 as pb;
use sluice_proto::internal::v1::raft_client::RaftClient;
use sluice_storage::raft::{GroupId, HardState};
use sluice_storage::Store;

use crate::codec::{Format, Postcard};
use crate::network::{NetTypes, Peers};
use crate::node::COMMIT_WAIT;

/// A learner this close to the leader's last entry is promoted: under
/// steady writes it trails by the entries in flight, never by none.
const PROMOTE_WITHIN: u64 = 64;

/// How long one group's replacement may take (a snapshot install copies
/// every committed record the new broker lacks).
const GROUP_DEADLINE: Duration = Duration::from_secs(600);

/// Which broker to replace by which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// The broker whose replicas are lost (or moved away).
    pub old: u64,
    /// The broker taking its place: `old` itself on an empty data dir, or a new id.
    pub new: u64,
    /// The new broker's cluster address, when the cluster does not know it
    /// (a new id); each broker still prefers its own `--peers` entry.
    pub address: Option<String>,
}

/// What a group's leader did in one step of a replacement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplaceStage {
    /// The old replica was removed from the group's voters.
    Removed,
    /// The new replica was added as a learner; the leader sends it the log
    /// or a snapshot.
    LearnerAdded,
    /// The learner is catching up: it matches the leader up to `matched`
    /// (None: not heard from yet) of `last`.
    CatchingUp {
        /// Its highest entry known to match.
        matched: Option<u64>,
        /// The leader's last entry.
        last: u64,
    },
    /// The new replica is a voter holding the log: this group is done
    /// (promoted now, or found so).
    Done,
    /// A placed shard of one or two replicas (a topic of replication factor
    /// 1 or 2) holds the old broker and keeps it: with fewer than three
    /// replicas it has no majority to change its membership without the
    /// lost one. Its other replica serves what it holds; writes need the old
    /// broker back.
    NotReplaced {
        /// The shard's replica set.
        replicas: Vec<u64>,
    },
}

impl std::fmt::Display for ReplaceStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceStage::Removed => write!(f, "old replica removed from the voters"),
            ReplaceStage::LearnerAdded => write!(f, "new replica added as a learner"),
            ReplaceStage::CatchingUp { matched: None, last } => write!(f, "catching up: 0 of {last} entries"),
            ReplaceStage::CatchingUp { matched: Some(m), last } => write!(f, "catching up: {m} of {last} entries"),
            ReplaceStage::Done => write!(f, "done: the new replica is a voter"),
            ReplaceStage::NotReplaced { replicas } => write!(
                f,
                "not replaced: a placed shard with replicas {replicas:?} (a topic of replication factor 1 or 2) \
                 keeps its replica set, old broker included: with fewer than three replicas it has no majority to \
                 change its membership without the lost one, and its topics commit no writes without it"
            ),
        }
    }
}

/// Why a replacement stopped before it was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaceError {
    /// The new broker does not answer at its cluster address: start it first.
    Unreachable(String),
    /// A step needs a person (the message says what); nothing more was changed.
    Refused(String),
    /// A group did not get there in time (no quorum, a copy still running):
    /// run the replacement again to resume.
    TimedOut(String),
}

impl std::fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceError::Unreachable(why) | ReplaceError::Refused(why) | ReplaceError::TimedOut(why) => {
                f.write_str(why)
            }
        }
    }
}

impl std::error::Error for ReplaceError {}

/// One group's progress, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceProgress {
    /// The group (0: the metadata group; shards count from 1).
    pub group: u64,
    /// What its leader did.
    pub stage: ReplaceStage,
}

/// One step, sent to a group's leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReplaceStep {
    replacement: Replacement,
    /// The new broker's replica of this group is empty.
    new_is_empty: bool,
}

/// The leader's answer to a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum StepAnswer {
    Stage(ReplaceStage),
    /// Not the leader; ask this one (if known).
    NotLeader(Option<u64>),
    /// The step cannot be taken; a person must act (the message says how).
    Refused(String),
    /// The step failed for now (no quorum, a change in flight); try again.
    Retry(String),
}

/// Whether `raft`'s replica holds nothing: no entry, no snapshot, nothing
/// purged. (Its vote does not count: a leader that still lists this broker
/// as a voter heartbeats it before the replacement.) `started_empty` is
/// [`empty_on_disk`] before the Raft started: right after a start its
/// metrics may not show what it loaded yet, and a replica that held
/// anything never becomes empty again.
pub(crate) fn is_empty<C: NetTypes, SM: RaftStateMachine<C>>(raft: &Raft<C, SM>, started_empty: bool) -> bool {
    let m = raft.metrics().borrow_watched().clone();
    started_empty && m.last_log_index.is_none() && m.snapshot.is_none() && m.purged.is_none()
}

/// Whether `group`'s replica holds nothing on disk (no entry, no snapshot,
/// nothing purged); read before its Raft starts.
pub(crate) fn empty_on_disk(store: &Store, group: GroupId) -> std::io::Result<bool> {
    use crate::codec::io_error;
    Ok(store.raft_last_entry(group).map_err(io_error)?.is_none()
        && store.raft_hard_state(group, HardState::Snapshot).map_err(io_error)?.is_none()
        && store.raft_hard_state(group, HardState::Purged).map_err(io_error)?.is_none())
}

/// Runs one step of `step` at this broker's peer `raft`, if it leads.
pub(crate) async fn replace_step<C: NetTypes, SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    step: ReplaceStep,
) -> StepAnswer {
    let ReplaceStep { replacement: Replacement { old, new, address }, new_is_empty } = step;
    let metrics = raft.metrics().borrow_watched().clone();
    if raft.as_leader().is_err() {
        return StepAnswer::NotLeader(metrics.current_leader);
    }
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    if voters.contains(&old) && (old != new || new_is_empty) {
        if voters.len() == 1 {
            return StepAnswer::Refused(format!(
                "broker {old} is the group's only voter: there is no one to copy from"
            ));
        }
        return match change(raft, ChangeMembers::RemoveVoters(BTreeSet::from([old]))).await {
            Ok(()) => StepAnswer::Stage(ReplaceStage::Removed),
            Err(answer) => answer,
        };
    }
    if !voters.contains(&new) && !learners.contains(&new) {
        // The old id on its new disk may hold entries of this group although
        // it is not a member now: the leader kept sending to it while it was
        // still listed as a voter (after the driver asked its standing, before
        // the removal committed). They are this group's own, at terms no
        // higher than the leader's: as a learner it gets the rest, and any
        // conflicting tail is truncated. A new id holding data got it
        // elsewhere (another cluster, an old volume): a person must look.
        if !new_is_empty && old != new {
            return StepAnswer::Refused(format!(
                "broker {new} holds data of this group but is not one of its replicas: start it on an empty data dir"
            ));
        }
        let Some(addr) = address.or_else(|| membership.get_node(&old).map(|n| n.addr.clone())) else {
            return StepAnswer::Refused(format!("no cluster address known for broker {new}: give it (--address)"));
        };
        return match wait(raft.add_learner(new, BasicNode { addr }, false)).await {
            Ok(()) => StepAnswer::Stage(ReplaceStage::LearnerAdded),
            Err(answer) => answer,
        };
    }
    if learners.contains(&new) {
        let matched = metrics.replication.as_ref().and_then(|r| r.get(&new).cloned()).flatten().map(|l| l.index);
        let last = metrics.last_log_index.unwrap_or(0);
        if matched.is_none_or(|m| m + PROMOTE_WITHIN < last) {
            return StepAnswer::Stage(ReplaceStage::CatchingUp { matched, last });
        }
        return match change(raft, ChangeMembers::AddVoterIds(BTreeSet::from([new]))).await {
            Ok(()) => StepAnswer::Stage(ReplaceStage::Done),
            Err(answer) => answer,
        };
    }
    StepAnswer::Stage(ReplaceStage::Done)
}

/// Proposes a membership change and waits (bounded) until it is committed.
async fn change<C: NetTypes, SM: RaftStateMachine<C>>(
    raft: &Raft<C, SM>,
    members: ChangeMembers<u64, BasicNode>,
) -> Result<(), StepAnswer> {
    wait(raft.change_membership(members, false)).await
}

async fn wait<C: NetTypes, T>(
    call: impl std::future::Future<Output = Result<T, RaftError<C, ClientWriteError<C>>>>,
) -> Result<(), StepAnswer> {
    match tokio::time::timeout(COMMIT_WAIT, call).await {
        Err(_) => Err(StepAnswer::Retry(format!("not committed within {} s", COMMIT_WAIT.as_secs()))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(StepAnswer::NotLeader(f.leader_id)),
        Ok(Err(e)) => Err(StepAnswer::Retry(e.to_string())),
    }
}

/// One group the driver walks: its id, who leads it as this broker knows,
/// and where this broker reaches each of its members.
pub(crate) struct GroupHandle {
    pub(crate) group: GroupId,
    pub(crate) leader: Box<dyn Fn() -> Option<u64> + Send + Sync>,
    pub(crate) addresses: Box<dyn Fn() -> BTreeMap<u64, String> + Send + Sync>,
}

/// Asks the broker at `addr` which of its groups' replicas are empty.
pub(crate) async fn standing(peers: &Peers, addr: &str) -> Result<BTreeMap<u64, bool>, String> {
    Ok(standing_of(peers, addr, 0, Vec::new()).await?.groups.into_iter().map(|g| (g.group, g.empty)).collect())
}

/// Asks the broker at `addr` for its standing, as broker `asking`
/// configured with the brokers `configured` (0 and none: not a broker
/// setting itself up).
pub(crate) async fn standing_of(
    peers: &Peers,
    addr: &str,
    asking: u64,
    configured: Vec<u64>,
) -> Result<pb::StandingReply, String> {
    let channel = peers.channel(addr)?;
    let mut request = tonic::Request::new(pb::StandingRequest { asking, configured });
    request.set_timeout(Duration::from_secs(3));
    let reply = RaftClient::new(channel).standing(request).await;
    Ok(reply.map_err(|s| format!("{}: {}", s.code(), s.message()))?.into_inner())
}

async fn send_step(peers: &Peers, addr: &str, group: GroupId, step: &ReplaceStep) -> Result<StepAnswer, String> {
    let channel = peers.channel(addr)?;
    let payload = Postcard::encode(step).map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(pb::RaftRequest {
        group: group.0,
        rpc: pb::RaftRpc::ReplaceReplica as i32,
        payload: payload.into(),
    });
    // The leader bounds each membership change by COMMIT_WAIT.
    request.set_timeout(2 * COMMIT_WAIT + Duration::from_secs(2));
    let reply = RaftClient::new(channel)
        .call(request)
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    if !reply.error.is_empty() {
        return Err(reply.error);
    }
    Postcard::decode(&reply.payload, "replace step answer").map_err(|e| e.to_string())
}

/// Tells the broker at `addr` that its replica of `group` may vote again
/// (`crate::fence`).
async fn admit(peers: &Peers, addr: &str, group: GroupId) -> Result<(), String> {
    let channel = peers.channel(addr)?;
    let request = pb::RaftRequest { group: group.0, rpc: pb::RaftRpc::Admit as i32, payload: Default::default() };
    let mut request = tonic::Request::new(request);
    request.set_timeout(Duration::from_secs(3));
    let reply = RaftClient::new(channel).call(request).await;
    let reply = reply.map_err(|s| format!("{}: {}", s.code(), s.message()))?.into_inner();
    if reply.error.is_empty() {
        Ok(())
    } else {
        Err(reply.error)
    }
}

/// Walks every group in `groups` (the metadata group first) through the
/// replacement, at each group's leader, until the new broker is a voter of
/// each; `progress` hears every step. `new_addr` is where this broker
/// reaches the new one.
pub(crate) async fn replace_broker(
    peers: &Peers,
    groups: &[GroupHandle],
    replacement: &Replacement,
    new_addr: &str,
    mut progress: impl FnMut(ReplaceProgress),
) -> Result<(), ReplaceError> {
    let new = replacement.new;
    standing(peers, new_addr).await.map_err(|e| {
        ReplaceError::Unreachable(format!(
            "broker {new} at {new_addr} does not answer ({e}): start it (on an empty data dir) first"
        ))
    })?;
    let replacement = &Replacement { address: Some(new_addr.to_owned()), ..replacement.clone() };
    for handle in groups {
        let group = handle.group;
        let deadline = Instant::now() + GROUP_DEADLINE;
        let mut last_stage = None;
        let mut last_error = String::new();
        let mut reported_error = String::new();
        loop {
            if last_error != reported_error {
                // Each new reason once: why a group is not moving is what an operator needs.
                tracing::info!(group = group.0, new, reason = %last_error, "replacement step waits");
                reported_error.clone_from(&last_error);
            }
            if Instant::now() >= deadline {
                return Err(ReplaceError::TimedOut(format!(
                    "group {}: not done within {} s (last: {last_error}); run the replacement again to resume",
                    group.0,
                    GROUP_DEADLINE.as_secs()
                )));
            }
            let answer = match step_once(peers, handle, replacement, new_addr).await {
                Ok(answer) => answer,
                Err(e) => {
                    last_error = e;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            match answer {
                StepAnswer::Stage(stage) => {
                    let done = stage == ReplaceStage::Done;
                    let waiting = matches!(stage, ReplaceStage::CatchingUp { .. });
                    if last_stage.as_ref() != Some(&stage) {
                        progress(ReplaceProgress { group: group.0, stage: stage.clone() });
                        last_stage = Some(stage);
                    }
                    if done {
                        // The new replica is a voter holding the log: it may vote.
                        match admit(peers, new_addr, group).await {
                            Ok(()) => break,
                            Err(e) => {
                                last_error = format!("admitting broker {new} to vote: {e}");
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                continue;
                            }
                        }
                    }
                    if waiting {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                StepAnswer::NotLeader(leader) => {
                    last_error = format!("leader moved (now {leader:?})");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                StepAnswer::Retry(why) => {
                    last_error = why;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                StepAnswer::Refused(why) => return Err(ReplaceError::Refused(format!("group {}: {why}", group.0))),
            }
        }
        tracing::info!(group = group.0, old = replacement.old, new, "replica replaced");
    }
    Ok(())
}

/// Asks the new broker for its standing and the group's leader for one step.
async fn step_once(
    peers: &Peers,
    handle: &GroupHandle,
    replacement: &Replacement,
    new_addr: &str,
) -> Result<StepAnswer, String> {
    let new = replacement.new;
    let empty = standing(peers, new_addr)
        .await
        .map_err(|e| format!("broker {new} at {new_addr} does not answer ({e}): start it first"))?;
    let Some(new_is_empty) = empty.get(&handle.group.0).copied() else {
        if handle.group.0 >= crate::meta::FIRST_PLACED_SHARD {
            // Started from the catalog, which the new broker may not have applied yet.
            return Err(format!("broker {new} runs no replica of placed shard {} yet", handle.group.0));
        }
        return Ok(StepAnswer::Refused(format!(
            "broker {new} runs no group {}: it must be started with the same number of brokers in --peers",
            handle.group.0
        )));
    };
    let Some(leader) = (handle.leader)() else { return Err("no leader known yet".into()) };
    let Some(leader_addr) = (handle.addresses)().get(&leader).cloned() else {
        return Err(format!("no address known for the leader, broker {leader}"));
    };
    let step = ReplaceStep { replacement: replacement.clone(), new_is_empty };
    send_step(peers, &leader_addr, handle.group, &step).await
}
