//! `sluice.v1.Cluster`: translates the cluster view into `MetadataResponse`.

use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::cluster::{ClusterReport, ClusterView};

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

fn metadata(report: ClusterReport) -> pb::MetadataResponse {
    let m = report.metadata;
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
    pb::MetadataResponse {
        clustered: true,
        broker_id: report.broker_id,
        brokers: report.brokers.into_iter().map(|(id, endpoint)| pb::ClusterBroker { id, endpoint }).collect(),
        metadata: Some(pb::RaftGroupStatus {
            leader: m.leader.unwrap_or(0),
            term: m.term,
            role: m.role.to_owned(),
            last_log_index: m.last_log_index,
            committed_index: m.committed_index,
            applied_index: m.applied_index,
            replicas,
        }),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn metadata(&self, _: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        Ok(Response::new(match &self.view {
            Some(view) => metadata(view.report()),
            None => pb::MetadataResponse {
                clustered: false,
                broker_id: 0,
                brokers: vec![pb::ClusterBroker { id: 0, endpoint: self.endpoint.clone() }],
                metadata: None,
            },
        }))
    }
}
