//! Group delivery over gRPC: Pull (with long-poll), Ack, Nack,
//! ModifyAckDeadline and the Subscribe stream. Thin: parse, call the group
//! (`GroupHandle::pull_wait`, `Subscription` for the credit loop), convert.
//!
//! Ack, Nack and ModifyAckDeadline have one shape: a valid request (group named
//! and existing, 1..=`MAX_ACK_IDS` ids, fields in range) answers OK, and every
//! id not applied, malformed ones included, is a per-id failure coded by the
//! status table (`status::ack_failure`). Only an invalid request fails as a whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::consume::record_to_pb;
use super::{status, validate};
use crate::auth::access::Guard;
use crate::auth::methods::{Operation, ResourceKind};
use crate::error::{Error, Result};
use crate::group::config::{ACK_DEADLINE_MS, MAX_BACKOFF_MS};
use crate::group::state::AckError;
use crate::group::{AckId, Delivered, GroupHandle, GroupRegistry, Subscription};

/// Most messages one pull returns.
pub const MAX_PULL_MESSAGES: u32 = 10_000;
/// Most ack ids in one request.
pub const MAX_ACK_IDS: usize = 100_000;

fn received(d: Delivered) -> pb::ReceivedMessage {
    pb::ReceivedMessage {
        ack_id: d.ack_id.to_string(),
        attempt: d.ack_id.attempt,
        lease_deadline_ms: d.deadline_ms,
        record: Some(record_to_pb(d.ack_id.partition, d.record)),
    }
}

/// The ack ids of a request, each parsed or `None` when malformed. Only the
/// request as a whole (no ids, too many) is refused here.
fn parse_ids(ids: &[String]) -> Result<Vec<Option<AckId>>> {
    if ids.is_empty() {
        return Err(Error::invalid("ack_ids", "no ack ids given"));
    }
    if ids.len() > MAX_ACK_IDS {
        return Err(Error::invalid("ack_ids", format!("{} ids; at most {MAX_ACK_IDS} per request", ids.len())));
    }
    Ok(ids.iter().map(|s| AckId::parse(s)).collect())
}

/// The well-formed ids, for the group.
fn well_formed(parsed: &[Option<AckId>]) -> Vec<AckId> {
    parsed.iter().flatten().copied().collect()
}

/// Why the group did not apply `ack_id`, as a broker error.
fn ack_error(group: &GroupHandle, ack_id: &str, e: AckError) -> Error {
    let ack_id = ack_id.to_owned();
    match e {
        AckError::Stale { current } => Error::StaleAck { ack_id, current },
        AckError::NotDelivered(offset) => Error::AckIdNotFound { ack_id, offset },
        AckError::NotLeased => Error::NotLeased { ack_id },
        AckError::DeadLettered => Error::DeadLettering { ack_id },
        AckError::UnknownPartition(partition) => Error::PartitionNotFound {
            topic: group.topic.name.clone(),
            partition,
            count: group.topic.partitions.len() as u32,
        },
    }
}

/// Per-id failures in request order: the malformed ids, and the well-formed ones
/// the group refused (`results` holds its verdicts on `well_formed(parsed)`, in order).
fn failures(
    group: &GroupHandle,
    raw: &[String],
    parsed: &[Option<AckId>],
    results: Vec<(AckId, Option<AckError>)>,
) -> Vec<pb::AckFailure> {
    let mut verdicts = results.into_iter();
    raw.iter()
        .zip(parsed)
        .filter_map(|(ack_id, id)| {
            let e = match id {
                None => Error::MalformedAckId(ack_id.clone()),
                Some(_) => ack_error(group, ack_id, verdicts.next()?.1?),
            };
            Some(status::ack_failure(ack_id.clone(), &e))
        })
        .collect()
}

/// Group delivery, shared by the unary RPCs and the stream.
#[derive(Debug, Clone)]
pub struct Delivery {
    groups: Arc<GroupRegistry>,
    stop: CancellationToken,
}

impl Delivery {
    /// Delivery over `groups`; waits end when `stop` fires.
    pub fn new(groups: Arc<GroupRegistry>, stop: CancellationToken) -> Self {
        Delivery { groups, stop }
    }

    /// Group `name` (from request field `field`), served here, if `guard`'s
    /// caller may consume from it and from its topic: the group is checked
    /// before it is looked up, so a refusal says nothing of whether it exists.
    async fn consumable(&self, guard: &Guard, field: &'static str, name: &str) -> Result<Arc<GroupHandle>> {
        guard.check(ResourceKind::Group, name, Operation::Consume)?;
        let group = validate::group(&self.groups, field, name).await?;
        may_read(guard, &group)?;
        Ok(group)
    }

    /// `Pull`.
    pub async fn pull(&self, guard: &Guard, req: pb::PullRequest) -> Result<pb::PullResponse, Status> {
        let max = match req.max_messages {
            0 => 100,
            n if n > MAX_PULL_MESSAGES => {
                return Err(Error::invalid("max_messages", format!("at most {MAX_PULL_MESSAGES}, got {n}")).into());
            }
            n => n,
        };
        if req.max_wait_ms > super::consume::MAX_WAIT_MS {
            return Err(Error::invalid(
                "max_wait_ms",
                format!("at most {}, got {}", super::consume::MAX_WAIT_MS, req.max_wait_ms),
            )
            .into());
        }
        let group = self.consumable(guard, "group", &req.group).await?;
        let wait = Duration::from_millis(u64::from(req.max_wait_ms));
        let got = group.pull_wait(&req.consumer_id, max as usize, wait, &self.stop).await?;
        Ok(pb::PullResponse { messages: got.into_iter().map(received).collect() })
    }

    /// `Ack`.
    pub async fn ack(&self, req: pb::AckRequest) -> Result<pb::AckResponse> {
        let parsed = parse_ids(&req.ack_ids)?;
        let group = validate::group(&self.groups, "group", &req.group).await?;
        let ids = well_formed(&parsed);
        let results = if ids.is_empty() { Vec::new() } else { group.ack(ids).await? };
        Ok(pb::AckResponse { failures: failures(&group, &req.ack_ids, &parsed, results) })
    }

    /// `Nack`.
    pub async fn nack(&self, req: pb::NackRequest) -> Result<pb::NackResponse> {
        let parsed = parse_ids(&req.ack_ids)?;
        if req.delay_ms.is_some_and(|d| d > MAX_BACKOFF_MS) {
            return Err(Error::invalid("delay_ms", format!("at most {MAX_BACKOFF_MS} (one hour)")));
        }
        let group = validate::group(&self.groups, "group", &req.group).await?;
        let reason = if req.reason.is_empty() { "nacked".to_owned() } else { req.reason.chars().take(1024).collect() };
        let ids = well_formed(&parsed);
        let results =
            if ids.is_empty() { Vec::new() } else { group.nack(ids, req.delay_ms, reason, req.consumer_id).await? };
        Ok(pb::NackResponse { failures: failures(&group, &req.ack_ids, &parsed, results) })
    }

    /// `ModifyAckDeadline`.
    pub async fn modify(&self, req: pb::ModifyAckDeadlineRequest) -> Result<pb::ModifyAckDeadlineResponse> {
        let parsed = parse_ids(&req.ack_ids)?;
        if req.ack_deadline_ms != 0 && !ACK_DEADLINE_MS.contains(&req.ack_deadline_ms) {
            return Err(Error::invalid("ack_deadline_ms", "must be 0 (release now) or 100..=600000"));
        }
        let group = validate::group(&self.groups, "group", &req.group).await?;
        let ids = well_formed(&parsed);
        let results = if ids.is_empty() { Vec::new() } else { group.extend(ids, req.ack_deadline_ms).await? };
        Ok(pb::ModifyAckDeadlineResponse { failures: failures(&group, &req.ack_ids, &parsed, results) })
    }

    /// Runs one `Subscribe` stream until the client or the broker ends it.
    pub async fn subscribe(
        self,
        guard: Guard,
        mut inbound: tonic::Streaming<pb::SubscribeRequest>,
        tx: mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    ) {
        use pb::subscribe_request::Kind;
        let start = match inbound.message().await {
            Ok(Some(pb::SubscribeRequest { kind: Some(Kind::Start(s)) })) => s,
            Ok(_) => {
                let _ = tx
                    .send(
                        Err(Error::invalid("start", "the first message of a Subscribe stream must be `start`").into()),
                    )
                    .await;
                return;
            }
            Err(_) => return,
        };
        let group = match self.consumable(&guard, "start.group", &start.group).await {
            Ok(g) => g,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let consumer = (!start.consumer_id.is_empty()).then(|| start.consumer_id.clone());
        let mut sub = Subscription::new(group.clone(), consumer, start.initial_credits);
        loop {
            // Again before each delivery: a permission removed ends the stream.
            let allowed = guard
                .check(ResourceKind::Group, &start.group, Operation::Consume)
                .and_then(|()| may_read(&guard, &group));
            if let Err(e) = allowed {
                let _ = tx.send(Err(e.into())).await;
                break;
            }
            match sub.poll().await {
                Ok(got) if !got.is_empty() => {
                    let resp = pb::SubscribeResponse {
                        messages: got.into_iter().map(received).collect(),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    break;
                }
            }
            let event = tokio::select! {
                biased;
                _ = self.stop.cancelled() => None,
                msg = inbound.message() => match msg {
                    Ok(Some(pb::SubscribeRequest { kind: Some(kind) })) => Some(Some(kind)),
                    _ => None,
                },
                _ = sub.wake() => Some(None),
            };
            let kind = match event {
                None => break,
                Some(None) => continue,
                Some(Some(kind)) => kind,
            };
            match kind {
                Kind::Credits(n) => sub.add_credits(n),
                Kind::Ack(a) => {
                    let (d, req) = (self.clone(), pb::AckRequest { group: start.group.clone(), ..a });
                    self.spawn_confirm(&tx, req.ack_ids.clone(), async move { d.ack(req).await });
                }
                Kind::Nack(n) => {
                    let consumer_id = sub.consumer().to_owned();
                    let (d, req) = (self.clone(), pb::NackRequest { group: start.group.clone(), consumer_id, ..n });
                    self.spawn_confirm(&tx, req.ack_ids.clone(), async move { d.nack(req).await });
                }
                Kind::Modify(m) => {
                    let (d, req) = (self.clone(), pb::ModifyAckDeadlineRequest { group: start.group.clone(), ..m });
                    self.spawn_confirm(&tx, req.ack_ids.clone(), async move { d.modify(req).await });
                }
                Kind::Start(_) => {
                    let _ = tx.send(Err(Error::invalid("start", "a stream can only be started once").into())).await;
                    break;
                }
            }
        }
    }

    /// Runs an ack, nack or modify from the stream and reports its outcome on
    /// the stream: `confirmed` ids, and per-id `failures` (every id, with the
    /// request's reason, when the request was refused as a whole).
    fn spawn_confirm<F, R>(&self, tx: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>, ids: Vec<String>, call: F)
    where
        F: std::future::Future<Output = Result<R>> + Send + 'static,
        R: HasFailures + Send,
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let resp = match call.await {
                Ok(r) => {
                    let failures = r.into_failures();
                    let failed: HashSet<&str> = failures.iter().map(|f| f.ack_id.as_str()).collect();
                    let confirmed = ids.iter().filter(|id| !failed.contains(id.as_str())).cloned().collect();
                    pb::SubscribeResponse { messages: vec![], confirmed, failures }
                }
                Err(e) => pb::SubscribeResponse { failures: status::ack_failures(ids, &e), ..Default::default() },
            };
            let _ = tx.send(Ok(resp)).await;
        });
    }
}

/// Responses that carry per-id failures.
pub trait HasFailures {
    /// The failures.
    fn into_failures(self) -> Vec<pb::AckFailure>;
}

impl HasFailures for pb::AckResponse {
    fn into_failures(self) -> Vec<pb::AckFailure> {
        self.failures
    }
}

impl HasFailures for pb::NackResponse {
    fn into_failures(self) -> Vec<pb::AckFailure> {
        self.failures
    }
}

impl HasFailures for pb::ModifyAckDeadlineResponse {
    fn into_failures(self) -> Vec<pb::AckFailure> {
        self.failures
    }
}

/// Whether `guard`'s caller may read `group`'s topic (consuming needs the
/// group and its topic).
fn may_read(guard: &Guard, group: &GroupHandle) -> Result<()> {
    guard.check(ResourceKind::Topic, &group.settings().topic, Operation::Consume)
}
