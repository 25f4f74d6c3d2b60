//! Appends a broker makes for itself at a partition another broker leads:
//! the dead letters of a group this broker serves, when their dead-letter
//! partition's shard is led elsewhere. They go over the leader's client API
//! (`Produce` with an explicit partition), as any client's would. Clients
//! themselves are not forwarded: they are told the leader (`not_leader`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sluice_proto::v1::producer_client::ProducerClient;
use sluice_proto::v1::{Message, ProduceRequest};
use tonic::transport::{Channel, Endpoint};

use super::handle::AppendResult;
use crate::error::{Error, Result};

/// How long a forwarded append may take before it counts as failed.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Channels to the other brokers' client endpoints, made once each.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    fn channel(&self, endpoint: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| Error::ClusterUnavailable(format!("leader endpoint `{endpoint}`: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(FORWARD_TIMEOUT)
            .connect_lazy();
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Appends `messages` to `partition` of `topic` at the broker whose
    /// client endpoint is `endpoint` (the partition's leader).
    pub async fn append(
        &self,
        endpoint: &str,
        topic: &str,
        partition: u32,
        messages: &[Message],
    ) -> Result<AppendResult> {
        let request = ProduceRequest {
            topic: topic.to_owned(),
            partition: Some(partition),
            messages: messages.to_vec(),
            ..Default::default()
        };
        let answer = ProducerClient::new(self.channel(endpoint)?)
            .max_decoding_message_size(usize::MAX)
            .produce(request)
            .await
            .map_err(|s| Error::ClusterUnavailable(format!("appending at the leader {endpoint}: {}", s.message())))?
            .into_inner();
        let base_offset = answer.offsets.first().copied().ok_or_else(|| {
            Error::ClusterUnavailable(format!("the leader {endpoint} answered an append without offsets"))
        })?;
        Ok(AppendResult { base_offset, duplicate: answer.duplicate })
    }
}
