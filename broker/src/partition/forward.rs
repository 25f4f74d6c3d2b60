//! Appends made at a partition another broker leads, over the cluster link
//! (the leader's cluster listener serves the client API to its peers), as
//! any client's would:
//! - the dead letters of a group this broker serves, when their dead-letter
//!   partition's shard is led elsewhere;
//! - a client's produce that did not ask to be redirected (tools such as
//!   ghz and grpcurl do not follow `not_leader`; the Rust client, the CLI
//!   and the interop test send `sluice-redirect` and follow it themselves).
//!
//! Forwarding over the cluster link, not the leader's client port, keeps all
//! broker-to-broker traffic on one port with one identity: with cluster TLS,
//! the peer's certificate makes the request the broker's own; without it,
//! the cluster secret does (`auth::peer`).
//!
//! A forwarded request carries `sluice-forwarded`: its receiver never
//! forwards it again (a leader that moved answers `not_leader`, which goes
//! back to the client as is, so a request crosses at most one hop).

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::producer_client::ProducerClient;
use sluice_proto::v1::{GetOffsetsRequest, Message, ProduceRequest};
use sluice_replication::MetaNode;
use sluice_storage::ProducerSeq;
use tonic::transport::Channel;
use tonic::Code;

use super::handle::AppendResult;
use crate::error::{Error, Result};

/// Request metadata of a produce forwarded by a broker: never forwarded again.
pub const FORWARDED: &str = "sluice-forwarded";

/// Request metadata of a client that follows `not_leader` itself: its
/// produces are redirected, not forwarded.
pub const REDIRECT: &str = "sluice-redirect";

/// Request metadata of a `GetOffsets` that must be answered by the
/// partition's leader once its whole log is applied (`leader_end`).
pub const LEADER_END: &str = "sluice-leader-end";

/// How long a forwarded append may take before it counts as failed.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends appends to other brokers over the cluster link's connections;
/// every request also carries the cluster secret (a plaintext cluster link
/// has no other proof that the request is a broker's; the caller's rights
/// were checked where the request came in).
pub struct Forwarder {
    meta: Arc<MetaNode>,
}

impl Forwarder {
    /// A forwarder over `meta`'s connections to its peers.
    pub fn new(meta: Arc<MetaNode>) -> Forwarder {
        Forwarder { meta }
    }

    /// `request` with the cluster secret as its bearer token, if one is set,
    /// and the forwarding timeout.
    fn signed<T>(&self, request: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(FORWARD_TIMEOUT);
        let secret = self.meta.cluster_secret();
        if let Ok(value) = format!("Bearer {secret}").parse() {
            if !secret.is_empty() {
                request.metadata_mut().insert("authorization", value);
            }
        }
        request
    }

    /// The cluster-link channel to the broker whose client endpoint is `endpoint`.
    fn channel(&self, endpoint: &str) -> Result<Channel> {
        let address = self.meta.peer_address_of(endpoint).ok_or_else(|| {
            Error::ClusterUnavailable(format!(
                "the partition's leader {endpoint} is not in this broker's catalog yet (it registers once it \
                 has joined): retry shortly, or produce to {endpoint} directly"
            ))
        })?;
        self.meta.connections().channel(&address).map_err(Error::ClusterUnavailable)
    }

    /// Appends `messages` to `partition` of `topic` at the broker whose
    /// client endpoint is `endpoint` (the partition's leader), as `producer`
    /// if idempotent. The leader's refusal comes back in the closest terms.
    pub async fn append(
        &self,
        endpoint: &str,
        topic: &str,
        partition: u32,
        messages: &[Message],
        producer: Option<ProducerSeq>,
    ) -> Result<AppendResult> {
        let request = ProduceRequest {
            topic: topic.to_owned(),
            partition: Some(partition),
            messages: messages.to_vec(),
            producer_id: producer.map_or(0, |p| p.producer_id),
            sequence: producer.map_or(0, |p| p.sequence),
            ..Default::default()
        };
        let mut request = self.signed(request);
        request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        let answer = ProducerClient::new(self.channel(endpoint)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
            .produce(request)
            .await
            .map_err(|s| refusal(endpoint, &s))?
            .into_inner();
        let base_offset = answer.offsets.first().copied().ok_or_else(|| {
            Error::ClusterUnavailable(format!("the leader {endpoint} answered an append without offsets"))
        })?;
        Ok(AppendResult { base_offset, duplicate: answer.duplicate })
    }
}

impl Forwarder {
    /// The committed end of `partition` of `topic` at its leader, the
    /// broker whose client endpoint is `endpoint`, once every entry of the
    /// leader's log is applied (`GetOffsets` with [`LEADER_END`]; a broker
    /// that no longer leads answers `not_leader`): what a replica must hold
    /// before a search of it can miss nothing committed.
    pub async fn leader_end(&self, endpoint: &str, topic: &str, partition: u32) -> Result<u64> {
        let request = GetOffsetsRequest { topic: topic.to_owned(), partition, timestamp_ms: None };
        let mut request = self.signed(request);
        request.metadata_mut().insert(LEADER_END, tonic::metadata::MetadataValue::from_static("1"));
        let answer = ConsumerClient::new(self.channel(endpoint)?)
            .get_offsets(request)
            .await
            .map_err(|s| refusal(endpoint, &s))?
            .into_inner();
        Ok(answer.latest_offset)
    }
}

/// The leader's refusal of a forwarded append, in the broker's own terms
/// (so the client gets the same code it would have got at the leader).
fn refusal(endpoint: &str, s: &tonic::Status) -> Error {
    let get = |k: &str| s.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let at = |m: &str| format!("at the partition's leader {endpoint}: {m}");
    match s.code() {
        Code::Unavailable if get("sluice-reason").as_deref() == Some("not_leader") => Error::NotLeader {
            of: "the partition".into(),
            leader: get("sluice-leader"),
            epoch: get("sluice-leader-epoch").and_then(|e| e.parse().ok()).unwrap_or(0),
        },
        Code::InvalidArgument => Error::InvalidArgument { field: "messages", reason: at(s.message()) },
        Code::NotFound => Error::Deleted(at(s.message())),
        Code::FailedPrecondition => Error::FailedPrecondition(at(s.message())),
        Code::ResourceExhausted => Error::Overloaded("the partition's leader"),
        Code::Unauthenticated | Code::PermissionDenied => Error::ClusterUnavailable(at(&format!(
            "it refused this broker ({}); brokers prove themselves to each other by their cluster TLS \
             certificate, or without cluster TLS by the cluster secret from the catalog: check that every broker \
             has the same cluster-tls settings and runs a build that knows the secret (catalog feature level 3)",
            s.message()
        ))),
        _ => Error::ClusterUnavailable(at(s.message())),
    }
}
