//! One group's push dispatcher: a member of the group (`push-dispatcher`)
//! that pulls, POSTs and acks or nacks, so leases, attempts, backoff and
//! dead letters are exactly those of a pulling consumer.
//!
//! # Concurrency
//! At most `max_concurrency` requests are in flight (one in an ordered
//! group, so a partition's events arrive in order). The limit halves on every
//! failed request and grows by one on every answered one (Pub/Sub push's
//! rule); while it is at one and requests keep failing, the dispatcher also
//! pauses between them (100 ms doubling to 5 s), so a dead endpoint does not
//! burn through fresh messages' first attempts at full speed.
//!
//! Pulls overlap: each asks for the slots free when it begins, and a new one
//! begins as soon as a request frees a slot, so no slot waits for another
//! pull's lease write (they share the writer's group commit instead).
//!
//! A slot is a request at the endpoint: it is freed when the answer arrives,
//! and the ack or nack that settles it goes on without it, so the endpoint is
//! not left idle while an ack waits for its commit. At most `max_concurrency`
//! answered requests settle at once (past that, slots wait for them), so what
//! a crash can push twice stays bounded: `2 × max_concurrency × batch_size`.
//! In an ordered group the settlement stays inside the slot: the partition's
//! next message is released by the ack.
//!
//! # Correctness
//! A request's deadline is within the lease it was sent under (the push
//! config is validated so), so its ack or nack arrives while the lease holds;
//! a late one is refused by the group as stale and the message is delivered
//! again — at least once, never lost. In a cluster only the group's leader
//! serves pulls: elsewhere the dispatcher's pull is answered `not_leader`
//! and it waits, so exactly one dispatcher pushes a group's messages.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_storage::now_ms;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::PushClient;
use super::outcome::{classify, Outcome};
use super::request::{build, Outgoing};
use crate::error::Error;
use crate::event::read_event;
use crate::group::{AckId, Delivered, GroupHandle, GroupMode, PushConfig};

/// The member name the dispatcher pulls as (in dead-letter headers).
pub const CONSUMER: &str = "push-dispatcher";
/// Most messages one pull leases (for several requests at once).
const MAX_PULL: usize = 10_000;
/// How long one pull waits for messages before the settings are read again.
const PULL_WAIT: Duration = Duration::from_secs(1);
/// How long a dispatcher away from the group's leader waits before trying again.
const NOT_LEADER_WAIT: Duration = Duration::from_secs(1);
/// First and longest pause between failing requests at concurrency one.
const PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// The reason of an event the endpoint named in `batchItemFailures`.
const ITEM_FAILED: &str = "push: the endpoint reported this event failed (batchItemFailures)";

/// Pushes one group's messages until `stop`, or until its push config is removed.
pub struct Dispatcher {
    /// The group.
    pub group: Arc<GroupHandle>,
    /// The broker's push client.
    pub client: PushClient,
    /// Ends the dispatcher (requests in flight are dropped; their leases run out).
    pub stop: CancellationToken,
}

impl Dispatcher {
    /// Runs until stopped or the group stops pushing.
    pub async fn run(self) {
        let mut in_flight: JoinSet<bool> = JoinSet::new();
        // Pulls in flight, each for the slots that were free when it began: a pull waits for
        // its lease write, so several overlap and share the writer's group commit, and a
        // request that finishes frees a slot for a new pull at once.
        let mut pulls = futures::stream::FuturesUnordered::new();
        let mut reserved = 0usize;
        let mut limit = usize::MAX;
        let mut pause = Duration::ZERO;
        // Answered requests whose ack or nack is being written: at most `most` (a new
        // semaphore when the config changes it; permits of the old one still end their work).
        let mut settling = (0usize, Arc::new(Semaphore::new(0)));
        let me = &self;
        tracing::info!(group = %self.group.name, "push dispatcher started");
        loop {
            let settings = self.group.settings();
            let Some(push) = settings.push.clone() else { break };
            let most = if settings.mode == GroupMode::Ordered { 1 } else { push.max_concurrency as usize };
            limit = limit.clamp(1, most);
            if settling.0 != most {
                settling = (most, Arc::new(Semaphore::new(most)));
            }
            metrics::gauge!(crate::metrics::PUSH_CONCURRENCY, "group" => self.group.name.clone()).set(limit as f64);
            if self.stop.is_cancelled() {
                break;
            }
            let free = limit.saturating_sub(in_flight.len() + reserved);
            // While failing at concurrency one: one request at a time, a pause before each.
            let idle = in_flight.is_empty() && pulls.is_empty();
            if free > 0 && (pause.is_zero() || idle) {
                if !pause.is_zero() {
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                let slots = if pause.is_zero() { free } else { 1 };
                reserved += slots;
                let push = push.clone();
                pulls.push(async move { (slots, me.collect(&push, slots).await) });
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    (limit, pause) = adjust(limit, most, pause, done.unwrap_or(false));
                }
                Some((slots, pulled)) = futures::StreamExt::next(&mut pulls), if !pulls.is_empty() => {
                    reserved -= slots;
                    let mut batch = match pulled {
                        Ok(batch) => batch,
                        Err(Error::NotLeader { .. }) => {
                            tokio::select! {
                                _ = self.stop.cancelled() => break,
                                _ = tokio::time::sleep(NOT_LEADER_WAIT) => continue,
                            }
                        }
                        Err(Error::ShuttingDown | Error::Deleted(_)) => break,
                        Err(e) => {
                            tracing::warn!(group = %self.group.name, error = %e, "push dispatcher could not pull; trying again");
                            tokio::select! {
                                _ = self.stop.cancelled() => break,
                                _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                            }
                        }
                    };
                    // Ordered: the ack releases the partition's next message, so it stays in the slot.
                    let settle_apart = (settings.mode != GroupMode::Ordered).then(|| settling.1.clone());
                    while !batch.is_empty() {
                        let rest = batch.split_off(batch.len().min(push.batch_size as usize));
                        let (group, client) = (self.group.clone(), self.client.clone());
                        in_flight.spawn(push_batch(group, client, push.clone(), batch, settle_apart.clone()));
                        batch = rest;
                    }
                }
            }
        }
        drop(pulls);
        in_flight.abort_all();
        tracing::info!(group = %self.group.name, "push dispatcher stopped");
    }

    /// Pulls messages for up to `slots` requests: what is ready within a
    /// second (up to `slots` full batches); if that is less than one full
    /// batch, more until it is full or `max_batching_window_ms` has passed
    /// since the first.
    async fn collect(&self, push: &PushConfig, slots: usize) -> crate::error::Result<Vec<Delivered>> {
        let max = push.batch_size as usize;
        let ready = (max * slots).min(MAX_PULL);
        let mut got = self.group.pull_wait(CONSUMER, ready, PULL_WAIT, &self.stop).await?;
        if got.is_empty() || got.len() >= max || push.max_batching_window_ms == 0 {
            return Ok(got);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(push.max_batching_window_ms));
        while got.len() < max && !self.stop.is_cancelled() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // An error here ends the batch: what is leased already is sent.
            match self.group.pull_wait(CONSUMER, max - got.len(), left, &self.stop).await {
                Ok(more) => got.extend(more),
                Err(_) => break,
            }
        }
        Ok(got)
    }
}

/// The new limit and pause after a request that was (`healthy`) or was not answered well.
fn adjust(limit: usize, most: usize, pause: Duration, healthy: bool) -> (usize, Duration) {
    if healthy {
        ((limit + 1).min(most), Duration::ZERO)
    } else if limit > 1 {
        (limit / 2, pause)
    } else {
        (1, (pause * 2).clamp(PAUSE.0, PAUSE.1))
    }
}

/// Sends one request and settles its messages (in a task of its own holding
/// a permit of `settle_apart`, when given, so the slot is free once the
/// endpoint has answered); whether the endpoint answered well.
async fn push_batch(
    group: Arc<GroupHandle>,
    client: PushClient,
    push: PushConfig,
    batch: Vec<Delivered>,
    settle_apart: Option<Arc<Semaphore>>,
) -> bool {
    let topic = group.topic.name.to_string();
    let outgoing: Vec<Outgoing> = batch
        .iter()
        .map(|d| Outgoing { event: read_event(&d.record, &topic, d.ack_id.partition), attempt: d.ack_id.attempt })
        .collect();
    let started = Instant::now();
    let outcome = match build(&push, &outgoing) {
        Ok(request) => match client.send(request, Duration::from_millis(u64::from(push.timeout_ms))).await {
            Ok(answer) => classify(answer.status, &answer.headers, &answer.body, now_ms()),
            Err(reason) => Outcome::Failed { reason },
        },
        Err(e) => Outcome::Failed { reason: format!("push: could not build the request: {e}") },
    };
    let name = group.name.clone();
    metrics::histogram!(crate::metrics::PUSH_LATENCY, "group" => name.clone()).record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::PUSH_REQUESTS, "group" => name.clone(), "outcome" => outcome.label())
        .increment(1);
    let healthy = outcome.healthy();
    match settle_apart {
        Some(settling) => {
            // The semaphore is never closed; without a permit the settlement would be unbounded.
            let Ok(permit) = settling.acquire_owned().await else { return healthy };
            tokio::spawn(async move {
                settle(&group, &batch, &outgoing, outcome).await;
                drop(permit);
            });
        }
        None => settle(&group, &batch, &outgoing, outcome).await,
    }
    healthy
}

/// Acks or nacks a request's messages as its outcome says.
async fn settle(group: &GroupHandle, batch: &[Delivered], outgoing: &[Outgoing], outcome: Outcome) {
    let name = &group.name;
    let ids: Vec<AckId> = batch.iter().map(|d| d.ack_id).collect();
    let settled = match outcome {
        Outcome::Delivered { failed } if failed.is_empty() => group.ack(ids).await,
        Outcome::Delivered { failed } => {
            let failed: HashSet<&str> = failed.iter().map(String::as_str).collect();
            let (nack, ack): (Vec<_>, Vec<_>) =
                outgoing.iter().zip(ids).partition(|(o, _)| failed.contains(o.event.id()));
            let nacked =
                group.nack(nack.into_iter().map(|(_, id)| id).collect(), None, ITEM_FAILED.into(), CONSUMER.into());
            let acked = group.ack(ack.into_iter().map(|(_, id)| id).collect());
            let (nacked, acked) = tokio::join!(nacked, acked);
            nacked.and(acked)
        }
        Outcome::RetryAfter { delay_ms, reason } => group.nack(ids, Some(delay_ms), reason, CONSUMER.into()).await,
        Outcome::Failed { reason } => {
            tracing::debug!(group = %name, %reason, "push failed");
            group.nack(ids, None, reason, CONSUMER.into()).await
        }
    };
    if let Err(e) = settled {
        // The leases run out and the messages are delivered again.
        tracing::debug!(group = %name, error = %e, "could not settle a push");
    }
}
