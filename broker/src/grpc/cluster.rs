//! `sluice.v1.Cluster`: translates the cluster view into `MetadataResponse`.

use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use sluice_replication::GroupReport;

use crate::cluster::{ClusterReport, ClusterView};

/// Most topics one Metadata request may ask partition leaders for.
const MAX_TOPICS: usize = 1000;

/// The Cluster service; `view` is absent on a single broker.
#[derive(Clone)]
pub struct ClusterService {
    view: Option<ClusterView>,
    /// This broker's client endpoint, for a single broker's answer.
    endpoint: String,
}

impl ClusterService {
    /// A service answering from `view` (None: a single broker at `endpoint`).
    pub fn new(view: Option<ClusterView>, endpoint: String) -> Self {
        ClusterService { view, endpoint }
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
        brokers: report.brokers.into_iter().map(|(id, endpoint)| pb::ClusterBroker { id, endpoint }).collect(),
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

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn metadata(&self, request: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        let pb::MetadataRequest { topics, groups } = request.into_inner();
        if topics.len() > MAX_TOPICS {
            return Err(
                crate::error::Error::invalid("topics", format!("at most {MAX_TOPICS} topics per request")).into()
            );
        }
        if groups.len() > MAX_TOPICS {
            return Err(
                crate::error::Error::invalid("groups", format!("at most {MAX_TOPICS} groups per request")).into()
            );
        }
        Ok(Response::new(match &self.view {
            Some(view) => metadata(view.report(&topics, &groups)),
            None => pb::MetadataResponse {
                clustered: false,
                broker_id: 0,
                brokers: vec![pb::ClusterBroker { id: 0, endpoint: self.endpoint.clone() }],
                metadata: None,
                shards: Vec::new(),
                partitions: Vec::new(),
                groups: Vec::new(),
            },
        }))
    }
}
