//! `ClusterInfo`: what a broker knows of its cluster (brokers, the metadata
//! leader, each replica's progress, the shards and who leads each
//! partition), and the view a person wants: progress asked of the leader,
//! whichever broker was asked first.

use crate::connect::Channel;
use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_client::ClusterClient;

use crate::error::Result;

/// Reads cluster metadata.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    client: ClusterClient<Channel>,
    channel: Channel,
}

impl ClusterInfo {
    /// A cluster client on `channel`.
    pub fn new(channel: impl Into<Channel>) -> Self {
        let channel: Channel = channel.into();
        ClusterInfo { client: ClusterClient::new(channel.clone()), channel }
    }

    /// What the broker on this channel knows.
    pub async fn metadata(&self) -> Result<pb::MetadataResponse> {
        Ok(self.client.clone().metadata(pb::MetadataRequest::default()).await?.into_inner())
    }

    /// Which broker leads each partition of `topics` (with its endpoint and
    /// epoch), as the broker on this channel knows.
    pub async fn partition_leaders(&self, topics: &[&str]) -> Result<Vec<pb::PartitionLeader>> {
        let request =
            pb::MetadataRequest { topics: topics.iter().map(|t| (*t).to_owned()).collect(), ..Default::default() };
        Ok(self.client.clone().metadata(request).await?.into_inner().partitions)
    }

    /// Which broker serves each of `groups` (with its endpoint and epoch), as
    /// the broker on this channel knows.
    pub async fn group_leaders(&self, groups: &[&str]) -> Result<Vec<pb::GroupLeader>> {
        let request =
            pb::MetadataRequest { groups: groups.iter().map(|g| (*g).to_owned()).collect(), ..Default::default() };
        Ok(self.client.clone().metadata(request).await?.into_inner().groups)
    }

    /// Replaces broker `old` by `new` (the same id on an empty data dir, or a
    /// new id reachable at `new_cluster_address`) in every Raft group, and
    /// calls `progress` with each step until the new broker is a voter of
    /// every group. Safe to call again after an interruption.
    pub async fn replace_broker(
        &self,
        old: u64,
        new: u64,
        new_cluster_address: &str,
        mut progress: impl FnMut(&pb::ReplaceBrokerProgress),
    ) -> Result<()> {
        let request = pb::ReplaceBrokerRequest {
            broker_id: old,
            new_broker_id: new,
            new_cluster_address: new_cluster_address.to_owned(),
        };
        let mut steps = self.client.clone().replace_broker(request).await?.into_inner();
        while let Some(step) = steps.message().await? {
            progress(&step);
        }
        Ok(())
    }

    /// The broker's answer, with replica progress from the metadata leader
    /// when the broker asked is not the leader (and the leader answers; if it
    /// does not, progress stays empty).
    pub async fn metadata_with_progress(&self) -> Result<pb::MetadataResponse> {
        let mut answer = self.metadata().await?;
        let Some(status) = answer.metadata.as_ref() else { return Ok(answer) };
        if status.leader == 0 || status.leader == answer.broker_id {
            return Ok(answer);
        }
        let Some(leader) = answer.brokers.iter().find(|b| b.id == status.leader) else { return Ok(answer) };
        let from_leader = match self.channel.to(&leader.endpoint) {
            Ok(ch) => ClusterInfo::new(ch).metadata().await.ok(),
            Err(_) => None,
        };
        if let (Some(mine), Some(theirs)) = (answer.metadata.as_mut(), from_leader.and_then(|l| l.metadata)) {
            if theirs.term >= mine.term {
                mine.replicas = theirs.replicas;
            }
        }
        Ok(answer)
    }
}
