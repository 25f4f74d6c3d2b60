//! `sluice.v1.Consumer`: partition reads (fetch with long-poll, offsets).

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::consumer_server::Consumer;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::deliver::Delivery;
use super::validate;
use crate::auth::access::Permissions;
use crate::error::Error;
use crate::partition::forward::LEADER_END;
use crate::topic::TopicRegistry;

/// How long a leader asked for its committed end waits for its log to apply.
const LEADER_END_WAIT: Duration = Duration::from_secs(3);

/// Most messages one fetch returns.
pub const MAX_FETCH_MESSAGES: u32 = 10_000;
/// Most bytes one fetch returns.
pub const MAX_FETCH_BYTES: u32 = 64 << 20;
/// Longest long-poll.
pub const MAX_WAIT_MS: u32 = 30_000;

/// The Consumer service.
#[derive(Debug, Clone)]
pub struct ConsumeService {
    registry: Arc<TopicRegistry>,
    delivery: Delivery,
    stop: CancellationToken,
    perms: Arc<Permissions>,
}

impl ConsumeService {
    /// A service over `registry` and `groups`, its callers checked by
    /// `perms`; long-polls end early when `stop` fires.
    pub fn new(
        registry: Arc<TopicRegistry>,
        groups: Arc<crate::group::GroupRegistry>,
        stop: CancellationToken,
        perms: Arc<Permissions>,
    ) -> Self {
        ConsumeService { registry, delivery: Delivery::new(groups, stop.clone()), stop, perms }
    }

    /// Checks the operation the method's row names on the resource `name`.
    fn require<T>(&self, req: &Request<T>, name: &str) -> Result<(), Status> {
        Ok(self.perms.guard(req.extensions()).require(name)?)
    }
}

type SubscribeStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

fn limit(value: u32, default: u32, max: u32, field: &'static str) -> Result<u32, Error> {
    match value {
        0 => Ok(default),
        v if v > max => Err(Error::invalid(field, format!("at most {max}, got {v}"))),
        v => Ok(v),
    }
}

/// The proto view of a stored record.
pub fn record_to_pb(partition: u32, r: sluice_storage::StoredRecord) -> pb::Record {
    pb::Record {
        partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: r.headers.into_iter().map(|(key, value)| pb::Header { key, value }).collect(),
    }
}

#[tonic::async_trait]
impl Consumer for ConsumeService {
    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        self.require(&req, &req.get_ref().topic)?;
        let req = req.into_inner();
        let max_messages = limit(req.max_messages, 500, MAX_FETCH_MESSAGES, "max_messages")?;
        let max_bytes = limit(req.max_bytes, 1 << 20, MAX_FETCH_BYTES, "max_bytes")?;
        if req.max_wait_ms > MAX_WAIT_MS {
            return Err(Error::invalid("max_wait_ms", format!("at most {MAX_WAIT_MS}, got {}", req.max_wait_ms)).into());
        }
        let topic = validate::topic(&self.registry, "topic", &req.topic).await?;
        let p = topic.partition(req.partition)?;
        let records = p
            .fetch(
                req.offset,
                max_messages as usize,
                max_bytes as usize,
                Duration::from_millis(u64::from(req.max_wait_ms)),
                &self.stop,
            )
            .await?;
        let next_offset = records.last().map_or(req.offset, |r| r.offset + 1);
        let bytes: usize = records.iter().map(|r| r.value.len() + r.key.as_ref().map_or(0, |k| k.len())).sum();
        let records: Vec<_> = records.into_iter().map(|r| record_to_pb(req.partition, r)).collect();
        metrics::counter!(crate::metrics::FETCH_MESSAGES, "topic" => req.topic.clone()).increment(records.len() as u64);
        metrics::counter!(crate::metrics::FETCH_BYTES, "topic" => req.topic.clone()).increment(bytes as u64);
        Ok(Response::new(pb::FetchResponse {
            records,
            next_offset,
            earliest_offset: p.earliest(),
            latest_offset: p.latest(),
        }))
    }

    async fn get_offsets(
        &self,
        req: Request<pb::GetOffsetsRequest>,
    ) -> Result<Response<pb::GetOffsetsResponse>, Status> {
        // A broker searching for its own unanswered append asks the leader
        // for the end of everything committed (`Forwarder::leader_end`).
        let at_leader = req.metadata().contains_key(LEADER_END);
        self.require(&req, &req.get_ref().topic)?;
        let req = req.into_inner();
        let topic = validate::topic(&self.registry, "topic", &req.topic).await?;
        let p = topic.partition(req.partition)?;
        p.held_here()?;
        let timestamp_offset = match req.timestamp_ms {
            Some(ts) => Some(p.offset_for_timestamp(ts).await?),
            None => None,
        };
        let latest_offset = if at_leader { p.leader_end(LEADER_END_WAIT).await? } else { p.latest() };
        Ok(Response::new(pb::GetOffsetsResponse { earliest_offset: p.earliest(), latest_offset, timestamp_offset }))
    }

    async fn pull(&self, req: Request<pb::PullRequest>) -> Result<Response<pb::PullResponse>, Status> {
        let guard = self.perms.guard(req.extensions());
        Ok(Response::new(self.delivery.pull(&guard, req.into_inner()).await?))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        self.require(&req, &req.get_ref().group)?;
        Ok(Response::new(self.delivery.ack(req.into_inner()).await?))
    }

    async fn nack(&self, req: Request<pb::NackRequest>) -> Result<Response<pb::NackResponse>, Status> {
        self.require(&req, &req.get_ref().group)?;
        Ok(Response::new(self.delivery.nack(req.into_inner()).await?))
    }

    async fn modify_ack_deadline(
        &self,
        req: Request<pb::ModifyAckDeadlineRequest>,
    ) -> Result<Response<pb::ModifyAckDeadlineResponse>, Status> {
        self.require(&req, &req.get_ref().group)?;
        Ok(Response::new(self.delivery.modify(req.into_inner()).await?))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        req: Request<tonic::Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let guard = self.perms.guard(req.extensions());
        tokio::spawn(self.delivery.clone().subscribe(guard, req.into_inner(), tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
