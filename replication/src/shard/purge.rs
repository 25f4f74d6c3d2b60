//! Purging a replicated partition (a consumer group's dead letters): the
//! shard's leader proposes `ShardCommand::Purge` with the partition's
//! committed end, and every replica raises the partition's purge floor when
//! the entry applies. Records below the floor are never read again; whole
//! segments below it go with the next retention round (once no log entry
//! points at them), on every replica alike.
//!
//! A broker that does not lead the shard asks its leader over the cluster
//! link (`RAFT_RPC_PURGE_PARTITION`): openraft takes writes only at the
//! leader, and only the leader knows the committed end to purge below.
//!
//! # Correctness
//! - **Everything committed before the call goes.** The leader waits until
//!   it has applied every entry of its log (as a new leader must before it
//!   knows what its predecessor committed), then purges below its committed
//!   watermark.
//! - **Nothing uncommitted goes, and no replica disagrees.** The floor is a
//!   committed offset, carried in the entry: a replica applies the entry
//!   after every entry before it, so the floor never passes its own
//!   watermark, and a rewind of uncommitted records never reaches below it.
//! - **Floors never go back.** They are raised with `max`, persisted in the
//!   apply write (`HardState::PurgeFloors`; after a crash the entry is applied
//!   again), and carried by snapshots, so a replica that installs one hides
//!   the same records and does not copy them.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::Raft;
use serde::{Deserialize, Serialize};
use sluice_proto::internal::v1 as pb;
use sluice_proto::internal::v1::raft_client::RaftClient;
use sluice_storage::raft::GroupId;
use sluice_storage::{PartitionId, TopicId};

use super::{ShardCommand, ShardMachine, ShardProposeError, ShardTypes};
use crate::codec::{Format, Postcard};
use crate::network::Peers;
use crate::node::{COMMIT_WAIT, LEADER_WAIT};

/// Which partition a broker asks the shard's leader to purge.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct PurgeRequest {
    pub(crate) topic: u64,
    pub(crate) partition: u32,
}

impl PurgeRequest {
    pub(crate) fn id(&self) -> PartitionId {
        PartitionId::new(TopicId(self.topic), self.partition)
    }
}

/// The leader's answer: how many records it purged, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PurgeAnswer {
    Purged(u64),
    NotLeader { leader: Option<u64>, term: u64 },
    Unavailable(String),
}

impl From<Result<u64, ShardProposeError>> for PurgeAnswer {
    fn from(result: Result<u64, ShardProposeError>) -> Self {
        match result {
            Ok(n) => PurgeAnswer::Purged(n),
            Err(ShardProposeError::NotLeader { leader, term }) => PurgeAnswer::NotLeader { leader, term },
            Err(ShardProposeError::Unavailable(why)) => PurgeAnswer::Unavailable(why),
        }
    }
}

impl From<PurgeAnswer> for Result<u64, ShardProposeError> {
    fn from(answer: PurgeAnswer) -> Self {
        match answer {
            PurgeAnswer::Purged(n) => Ok(n),
            PurgeAnswer::NotLeader { leader, term } => Err(ShardProposeError::NotLeader { leader, term }),
            PurgeAnswer::Unavailable(why) => Err(ShardProposeError::Unavailable(why)),
        }
    }
}

/// Purges `partition` below its committed end, at the shard's leader (this
/// broker): `NotLeader` elsewhere. Returns how many records were readable
/// and are not any more.
pub(crate) async fn purge_here(
    raft: &Raft<ShardTypes, ShardMachine>,
    machine: &ShardMachine,
    partition: PartitionId,
) -> Result<u64, ShardProposeError> {
    let metrics = raft.metrics().borrow_watched().clone();
    if raft.as_leader().is_err() {
        return Err(ShardProposeError::NotLeader { leader: metrics.current_leader, term: metrics.current_term });
    }
    // Every entry this leader holds applied: its watermark then covers what
    // an earlier leader committed, too.
    let end = metrics.last_log_index.unwrap_or(0);
    let mut stored = machine.stored();
    let applied = stored.wait_for(|s| s.map_or(0, |id| id.index) >= end);
    if !matches!(tokio::time::timeout(COMMIT_WAIT, applied).await, Ok(Ok(_))) {
        return Err(ShardProposeError::Unavailable(format!(
            "this leader has not applied its log up to entry {end} within {} s",
            COMMIT_WAIT.as_secs()
        )));
    }
    let (start, below) = machine.purge_bounds(partition);
    if below <= start {
        return Ok(0);
    }
    let command = ShardCommand::Purge { topic: partition.topic.0, partition: partition.index, below };
    super::node::write_once(raft, command).await.map(|_| below - start)
}

/// Purges `partition` of shard `group` from a broker that holds no replica
/// of the shard (a placed topic's partition): asks its `replicas` (broker id,
/// cluster address; the leader the catalog recorded first), going straight
/// to the leader a replica names, and, while none leads (an election), asks
/// again for up to two leader waits: a purge is safe to repeat.
pub async fn purge_placed(
    peers: &Peers,
    group: GroupId,
    replicas: &[(u64, String)],
    partition: PartitionId,
) -> Result<u64, ShardProposeError> {
    if replicas.is_empty() {
        return Err(ShardProposeError::Unavailable(format!(
            "no cluster address is known for any replica of shard {}",
            group.0
        )));
    }
    let deadline = Instant::now() + LEADER_WAIT * 2;
    let mut pause = Duration::from_millis(5);
    loop {
        let mut order: Vec<&(u64, String)> = replicas.iter().collect();
        let mut refused = ShardProposeError::NotLeader { leader: None, term: 0 };
        let mut next = 0;
        while let Some(&(id, ref addr)) = order.get(next).copied() {
            next += 1;
            match purge_at(peers, group, (id, addr), partition).await {
                Ok(purged) => return Ok(purged),
                Err(e) => {
                    if let ShardProposeError::NotLeader { leader: Some(leader), .. } = e {
                        // The leader it names is asked next.
                        if let Some(at) = order.iter().skip(next).position(|r| r.0 == leader) {
                            let named = order.remove(next + at);
                            order.insert(next, named);
                        }
                    }
                    refused = e;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(refused);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Asks broker `leader` (at `addr`) to purge `partition` of shard `group`.
pub(crate) async fn purge_at(
    peers: &Peers,
    group: GroupId,
    (leader, addr): (u64, &str),
    partition: PartitionId,
) -> Result<u64, ShardProposeError> {
    let unavailable = |e: String| {
        ShardProposeError::Unavailable(format!("asking the shard's leader (broker {leader}) to purge: {e}"))
    };
    let channel = peers.channel(addr).map_err(unavailable)?;
    let request = PurgeRequest { topic: partition.topic.0, partition: partition.index };
    let payload = Postcard::encode(&request).map_err(|e| unavailable(e.to_string()))?;
    let mut call = tonic::Request::new(pb::RaftRequest {
        group: group.0,
        rpc: pb::RaftRpc::PurgePartition as i32,
        payload: payload.into(),
    });
    // The leader's own bounds (applying its log, committing the entry), and a margin.
    call.set_timeout(COMMIT_WAIT * 2 + Duration::from_secs(2));
    let reply = RaftClient::new(channel)
        .call(call)
        .await
        .map_err(|s| unavailable(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    if !reply.error.is_empty() {
        return Err(unavailable(reply.error));
    }
    let answer: PurgeAnswer =
        Postcard::decode(&reply.payload, "purge answer").map_err(|e| unavailable(e.to_string()))?;
    answer.into()
}
