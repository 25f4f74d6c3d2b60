//! `Consumer`: runs a handler over a group's messages. The handler's `Ok`
//! acks, its `Err` nacks (redelivered after the group's backoff); at most
//! `concurrency` handlers run at once; leases are extended while a handler
//! runs; pulls retry with backoff while the broker is away; `stop` lets
//! running handlers finish and flushes their acks.
//!
//! # Correctness
//! At-least-once: a message whose ack did not reach the broker is delivered
//! again. Acks are batched for a few milliseconds and retried; an ack the
//! broker refuses because the lease expired and the message went to another
//! consumer is dropped (that other delivery now owns it).
//!
//! In a cluster a group is served by the broker that leads its shard; any
//! other broker answers `not_leader` with the leader's endpoint, and the
//! consumer follows it (as the producer does, see `leaders`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connect::Channel;
use backon::Retryable;
use sluice_proto::v1 as pb;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::leaders::{Brokers, LeaderTracker};
use crate::retry::RetryConfig;

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Identifies this consumer to the broker (ordered groups assign partitions by it).
    pub consumer_id: String,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Longest a pull waits for messages.
    pub max_wait: Duration,
    /// Process each partition's messages one at a time, in order (for ordered groups).
    pub ordered: bool,
    /// Retry policy for pulls and acks while the broker is unreachable.
    pub retry: RetryConfig,
    /// How long acks wait to be sent together.
    pub ack_linger: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            consumer_id: format!("consumer-{:08x}", rand::random::<u32>()),
            concurrency: 16,
            max_wait: Duration::from_secs(5),
            ordered: false,
            retry: RetryConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                max_retries: usize::MAX,
            },
            ack_linger: Duration::from_millis(5),
        }
    }
}

/// A leased message handed to a handler.
#[derive(Debug, Clone)]
pub struct Received {
    /// The record.
    pub record: pb::Record,
    /// 1 on first delivery.
    pub attempt: u32,
    /// Pass to `ack`/`nack` when not using `run`.
    pub ack_id: String,
    /// When the lease ends (ms since the Unix epoch) unless extended.
    pub lease_deadline_ms: i64,
}

impl Received {
    /// The value of the first header named `key`, so handlers read metadata
    /// set with `Message::header` without scanning the wire list themselves.
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.record.headers.iter().find(|h| h.key == key).map(|h| &h.value[..])
    }
}

/// A handler's failure: the message is nacked with this reason.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// A group consumer.
#[derive(Clone)]
pub struct Consumer {
    leader: Arc<Mutex<LeaderTracker>>,
    group: String,
    config: Arc<ConsumerConfig>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("group", &self.group).finish_non_exhaustive()
    }
}

/// Most `not_leader` redirects one call follows before it gives the answer to its caller.
const MAX_REDIRECTS: usize = 4;

/// How long one call waits for an election to name the group's leader
/// (`not_leader` without a leader) before it gives the answer to its caller.
const ELECTION_PATIENCE: Duration = Duration::from_secs(5);

/// Errors a long-running consumer cannot outwait: the request or the group is wrong.
/// Anything else (a restarting broker, a cut connection) is retried.
fn is_fatal(e: &Error) -> bool {
    use tonic::Code;
    matches!(
        e.code(),
        Some(
            Code::InvalidArgument
                | Code::NotFound
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::Unimplemented
        )
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Consumer {
    /// A consumer of `group` on `channel`.
    pub fn new(channel: impl Into<Channel>, group: &str, config: ConsumerConfig) -> Self {
        Consumer {
            leader: Arc::new(Mutex::new(LeaderTracker::new(Brokers::new(channel)))),
            group: group.to_owned(),
            config: Arc::new(config),
        }
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, LeaderTracker> {
        self.leader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` against the broker that serves the group: follows
    /// `not_leader` answers, and goes back to the broker it was given when a
    /// followed leader stops answering.
    async fn at_leader<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ConsumerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut redirects = 0;
        let election_deadline = std::time::Instant::now() + ELECTION_PATIENCE;
        let mut pause = Duration::from_millis(20);
        loop {
            let channel = self.tracker().channel();
            let result = call(ConsumerClient::new(channel).max_decoding_message_size(usize::MAX)).await;
            let Err(e) = result else { return result };
            match e.leader_hint() {
                Some(hint) if redirects < MAX_REDIRECTS && self.tracker().follow(&hint) => redirects += 1,
                Some(_) => return Err(e),
                // No leader known yet (an election): wait a little for one.
                None if e.reason() == Some("not_leader") && std::time::Instant::now() < election_deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                None => {
                    if e.code() == Some(tonic::Code::Unavailable) && e.reason().is_none() {
                        // The followed broker is gone: start over from the given one next time.
                        self.tracker().reset();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One pull: up to `max` messages, waiting up to `max_wait`.
    pub async fn pull(&self, max: u32, max_wait: Duration) -> Result<Vec<Received>> {
        let req = pb::PullRequest {
            group: self.group.clone(),
            consumer_id: self.config.consumer_id.clone(),
            max_messages: max,
            max_wait_ms: max_wait.as_millis().min(30_000) as u32,
        };
        let resp = self
            .at_leader(|mut c| {
                let req = req.clone();
                async move { c.pull(req).await.map(|r| r.into_inner()).map_err(Error::from) }
            })
            .await?;
        Ok(resp
            .messages
            .into_iter()
            .map(|m| Received {
                record: m.record.unwrap_or_default(),
                attempt: m.attempt,
                ack_id: m.ack_id,
                lease_deadline_ms: m.lease_deadline_ms,
            })
            .collect())
    }

    /// Acks, retrying while the broker is unreachable. Returns the per-id failures.
    pub async fn ack(&self, ack_ids: Vec<String>) -> Result<Vec<pb::AckFailure>> {
        let call = || {
            let req = pb::AckRequest { group: self.group.clone(), ack_ids: ack_ids.clone() };
            self.at_leader(move |mut c| {
                let req = req.clone();
                async move { c.ack(req).await.map(|r| r.into_inner().failures).map_err(Error::from) }
            })
        };
        call.retry(self.config.retry.backoff()).when(Error::is_retryable).await
    }

    /// Nacks: redelivery after `delay` (or the group's backoff).
    pub async fn nack(&self, ack_ids: Vec<String>, delay: Option<Duration>, reason: &str) -> Result<()> {
        let call = || {
            let req = pb::NackRequest {
                group: self.group.clone(),
                ack_ids: ack_ids.clone(),
                delay_ms: delay.map(|d| d.as_millis().min(u128::from(u32::MAX)) as u32),
                reason: reason.to_owned(),
                consumer_id: self.config.consumer_id.clone(),
            };
            self.at_leader(move |mut c| {
                let req = req.clone();
                async move { c.nack(req).await.map(|_| ()).map_err(Error::from) }
            })
        };
        call.retry(self.config.retry.backoff()).when(Error::is_retryable).await
    }

    /// Extends leases by `lease` from now.
    pub async fn extend(&self, ack_ids: Vec<String>, lease: Duration) -> Result<()> {
        let req = pb::ModifyAckDeadlineRequest {
            group: self.group.clone(),
            ack_ids,
            ack_deadline_ms: lease.as_millis().clamp(100, 600_000) as u32,
        };
        self.at_leader(|mut c| {
            let req = req.clone();
            async move { c.modify_ack_deadline(req).await.map(|_| ()).map_err(Error::from) }
        })
        .await
    }

    /// Runs `handler` over the group's messages until `stop` fires, then waits
    /// for running handlers and flushes their acks.
    pub async fn run<H, F>(&self, handler: H, stop: CancellationToken) -> Result<()>
    where
        H: Fn(Received) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let (ack_tx, ack_rx) = mpsc::channel::<String>(65_536);
        let acker = tokio::spawn(self.clone().ack_loop(ack_rx));
        let mut backoff = self.config.retry.initial;
        while !stop.is_cancelled() {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    p = permits.clone().acquire_owned() => drop(p),
                }
                continue;
            }
            let pulled = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.pull(free.min(1000) as u32, self.config.max_wait) => r,
            };
            let messages = match pulled {
                Ok(m) => {
                    backoff = self.config.retry.initial;
                    m
                }
                Err(e) if !is_fatal(&e) => {
                    tracing::warn!(error = %e, "pull failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>())) => {}
                    }
                    backoff = (backoff * 2).min(self.config.retry.max);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if self.config.ordered {
                let mut by_partition: BTreeMap<u32, Vec<Received>> = BTreeMap::new();
                for m in messages {
                    by_partition.entry(m.record.partition).or_default().push(m);
                }
                for (_, batch) in by_partition {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    let (me, handler, ack_tx) = (self.clone(), handler.clone(), ack_tx.clone());
                    tokio::spawn(async move {
                        me.handle_in_order(batch, handler.as_ref(), &ack_tx).await;
                        drop(permit);
                    });
                }
            } else {
                for m in messages {
                    let Ok(permit) = permits.clone().acquire_owned().await else { break };
                    let (me, handler, ack_tx) = (self.clone(), handler.clone(), ack_tx.clone());
                    tokio::spawn(async move {
                        me.handle_one(m, handler.as_ref(), &ack_tx).await;
                        drop(permit);
                    });
                }
            }
        }
        let _ = permits.acquire_many(self.config.concurrency.max(1) as u32).await;
        drop(ack_tx);
        let _ = acker.await;
        Ok(())
    }

    /// Runs the handler on one message, extending its lease while it runs.
    async fn handle_one<H, F>(&self, m: Received, handler: &H, acks: &mpsc::Sender<String>) -> bool
    where
        H: Fn(Received) -> F,
        F: Future<Output = std::result::Result<(), HandlerError>>,
    {
        let ack_id = m.ack_id.clone();
        let lease = Duration::from_millis((m.lease_deadline_ms - now_ms()).max(200) as u64);
        let work = handler(m);
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + lease / 2, lease / 2);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    if let Err(e) = self.extend(vec![ack_id.clone()], lease).await {
                        tracing::warn!(error = %e, ack_id, "lease extension failed");
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                let _ = acks.send(ack_id).await;
                true
            }
            Err(e) => {
                if let Err(err) = self.nack(vec![ack_id], None, &e.to_string()).await {
                    tracing::warn!(error = %err, "nack failed; the lease will expire instead");
                }
                false
            }
        }
    }

    /// Ordered groups: one partition's batch in offset order; after a failure
    /// the rest are given back so they are redelivered behind it, in order.
    async fn handle_in_order<H, F>(&self, batch: Vec<Received>, handler: &H, acks: &mpsc::Sender<String>)
    where
        H: Fn(Received) -> F,
        F: Future<Output = std::result::Result<(), HandlerError>>,
    {
        let mut rest = batch.into_iter();
        for m in rest.by_ref() {
            let offset = m.record.offset;
            if !self.handle_one(m, handler, acks).await {
                let held: Vec<String> = rest.map(|m| m.ack_id).collect();
                if !held.is_empty() {
                    let _ = self.nack(held, Some(Duration::ZERO), &format!("held back behind offset {offset}")).await;
                }
                return;
            }
        }
    }

    async fn ack_loop(self, mut rx: mpsc::Receiver<String>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.config.ack_linger;
            while batch.len() < 1000 {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => batch.push(m),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            match self.ack(std::mem::take(&mut batch)).await {
                Ok(failures) => {
                    for f in failures {
                        tracing::debug!(ack_id = f.ack_id, reason = f.message, "ack not applied");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "acks not applied; the messages will be redelivered"),
            }
        }
    }
}
