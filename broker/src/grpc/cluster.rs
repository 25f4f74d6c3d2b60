//! `sluice.v1.Cluster`: translates the cluster view into `MetadataResponse`.

use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use sluice_replication::{GroupReport, ReplaceError, ReplaceProgress, ReplaceStage, Replacement};

use std::sync::Arc;

use crate::auth::access::Permissions;
use crate::auth::methods::{Operation, ResourceKind};
use crate::cluster::{ClusterReport, ClusterView};
use crate::error::Error;

/// Most topics one Metadata request may ask partition leaders for.
const MAX_TOPICS: usize = 1000;

/// The Cluster service; `view` is absent on a single broker.
#[derive(Clone)]
pub struct ClusterService {
    view: Option<ClusterView>,
    /// This broker's client endpoint, for a single broker's answer.
    endpoint: String,
    perms: Arc<Permissions>,
}

impl ClusterService {
    /// A service answering from `view` (None: a single broker at
    /// `endpoint`), its callers checked by `perms`.
    pub fn new(view: Option<ClusterView>, endpoint: String, perms: Arc<Permissions>) -> Self {
        ClusterService { view, endpoint, perms }
    }
}

fn group_status(m: GroupReport) -> pb::RaftGroupStatus {
    let replicas = m
        .replicas
        .unwrap_or_default()
        .into_iter()
        .map(|(broker_id, matched_index)| pb::ReplicaProgress {
            broker_id,
            matched_index,
            lag: m.last_log_index.saturating_sub(matched_index.unwrap_or(0)),
        })
        .collect();
    pb::RaftGroupStatus {
        leader: m.leader.unwrap_or(0),
        term: m.term,
        role: m.role.to_owned(),
        last_log_index: m.last_log_index,
        committed_index: m.committed_index,
        applied_index: m.applied_index,
        replicas,
        snapshot_index: m.snapshot_index,
        purged_index: m.purged_index,
    }
}

fn metadata(report: ClusterReport) -> pb::MetadataResponse {
    pb::MetadataResponse {
        clustered: true,
        broker_id: report.broker_id,
        brokers: report
            .brokers
            .into_iter()
            .map(|(id, endpoint)| pb::ClusterBroker { id, endpoint, disk_full: report.disk_full.contains(&id) })
            .collect(),
        metadata: Some(group_status(report.metadata)),
        shards: report
            .shards
            .into_iter()
            .map(|(id, status)| pb::ShardStatus { id, status: Some(group_status(status)) })
            .collect(),
        partitions: report
            .partitions
            .into_iter()
            .map(|p| pb::PartitionLeader {
                topic: p.topic,
                partition: p.partition,
                shard: p.shard,
                leader: p.leader.as_ref().map_or(0, |l| l.0),
                leader_endpoint: p.leader.and_then(|l| l.1).unwrap_or_default(),
                epoch: p.epoch,
            })
            .collect(),
        groups: report
            .groups
            .into_iter()
            .map(|g| pb::GroupLeader {
                group: g.group,
                shard: g.shard,
                leader: g.leader.as_ref().map_or(0, |l| l.0),
                leader_endpoint: g.leader.and_then(|l| l.1).unwrap_or_default(),
                epoch: g.epoch,
            })
            .collect(),
    }
}

/// The progress stream of `ReplaceBroker`.
type ReplaceStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::ReplaceBrokerProgress, Status>> + Send>>;

fn progress(p: ReplaceProgress) -> pb::ReplaceBrokerProgress {
    let detail = p.stage.to_string();
    let (stage, matched_index, last_index) = match p.stage {
        ReplaceStage::Removed => ("removed", None, 0),
        ReplaceStage::LearnerAdded => ("learner_added", None, 0),
        ReplaceStage::CatchingUp { matched, last } => ("catching_up", matched, last),
        ReplaceStage::Done => ("done", None, 0),
        ReplaceStage::NotReplaced { .. } => ("not_replaced", None, 0),
    };
    pb::ReplaceBrokerProgress { group: p.group, stage: stage.to_owned(), matched_index, last_index, detail }
}

fn replace_failed(e: ReplaceError) -> Status {
    let error = match e {
        ReplaceError::Unreachable(why) | ReplaceError::TimedOut(why) => Error::ClusterUnavailable(why),
        ReplaceError::Refused(why) => Error::FailedPrecondition(why),
    };
    error.into()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    type ReplaceBrokerStream = ReplaceStream;

    async fn replace_broker(
        &self,
        request: Request<pb::ReplaceBrokerRequest>,
    ) -> Result<Response<ReplaceStream>, Status> {
        self.perms.guard(request.extensions()).require("")?;
        let pb::ReplaceBrokerRequest { broker_id, new_broker_id, new_cluster_address } = request.into_inner();
        let Some(view) = self.view.clone() else {
            return Err(Error::FailedPrecondition(
                "this broker runs alone (no --peers): there is no cluster to replace a broker in".into(),
            )
            .into());
        };
        if broker_id == 0 {
            return Err(Error::invalid("broker_id", "name the broker to replace (ids start at 1)").into());
        }
        let new = if new_broker_id == 0 { broker_id } else { new_broker_id };
        let address = (!new_cluster_address.is_empty()).then_some(new_cluster_address);
        if let Some(addr) = &address {
            if addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
                return Err(
                    Error::invalid("new_cluster_address", "host:port of the new broker's --cluster-listen").into()
                );
            }
        }
        let replacement = Replacement { old: broker_id, new, address };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Runs to the end even if the caller goes away: a half-done change is worse than a finished one.
        tokio::spawn(async move {
            let steps = tx.clone();
            let result = view
                .replace_broker(replacement, move |p| {
                    let _ = steps.try_send(Ok(progress(p)));
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(replace_failed(e))).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let guard = self.perms.guard(request.extensions());
        let pb::MetadataRequest { topics, groups } = request.into_inner();
        if topics.len() > MAX_TOPICS {
            return Err(Error::invalid("topics", format!("at most {MAX_TOPICS} topics per request")).into());
        }
        if groups.len() > MAX_TOPICS {
            return Err(Error::invalid("groups", format!("at most {MAX_TOPICS} groups per request")).into());
        }
        Ok(Response::new(match &self.view {
            Some(view) => {
                let mut answer = metadata(view.report(&topics, &groups));
                // Where the caller's topics and groups are led, and nothing of the others.
                answer.partitions.retain(|p| guard.allows(ResourceKind::Topic, &p.topic, Operation::Describe));
                answer.groups.retain(|g| guard.allows(ResourceKind::Group, &g.group, Operation::Describe));
                answer
            }
            None => pb::MetadataResponse {
                clustered: false,
                broker_id: 0,
                brokers: vec![pb::ClusterBroker { id: 0, endpoint: self.endpoint.clone(), disk_full: false }],
                metadata: None,
                shards: Vec::new(),
                partitions: Vec::new(),
                groups: Vec::new(),
            },
        }))
    }
}
