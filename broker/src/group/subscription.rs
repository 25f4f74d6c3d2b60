//! How consumers wait for messages, for every front door: the long-poll of a
//! pull, and a subscription's credit loop (a streaming consumer grants
//! credits; the subscription leases at most that many and wakes when records
//! are appended, a redelivery falls due, or at least every second).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::actor::{Delivered, GroupHandle};
use crate::error::Result;

/// Most credits a subscription holds (more are ignored).
pub const MAX_CREDITS: u64 = 1_000_000;
/// Most messages leased in one step of a subscription.
const MAX_STEP: u64 = 1000;

impl GroupHandle {
    /// Leases up to `max` messages, waiting until `wait` for some to be ready;
    /// an empty answer when the wait ends (or `stop` fires) with none.
    pub async fn pull_wait(
        &self,
        consumer: &str,
        max: usize,
        wait: Duration,
        stop: &CancellationToken,
    ) -> Result<Vec<Delivered>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut appended = self.topic.appended.subscribe();
        let mut ready = self.ready.subscribe();
        loop {
            let got = self.pull(consumer, max).await?;
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(Vec::new()),
                _ = appended.changed() => {}
                _ = ready.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A streaming consumer of a group. Leaves the group when dropped (ordered
/// groups rebalance at once).
#[derive(Debug)]
pub struct Subscription {
    group: Arc<GroupHandle>,
    consumer: String,
    credits: u64,
    appended: watch::Receiver<u64>,
    ready: watch::Receiver<u64>,
    try_now: bool,
}

impl Subscription {
    /// A subscription as `consumer` (a random name when `None`) with `credits` to start.
    pub fn new(group: Arc<GroupHandle>, consumer: Option<String>, credits: u32) -> Self {
        let consumer = consumer.unwrap_or_else(|| format!("stream-{:016x}", rand::random::<u64>()));
        let (appended, ready) = (group.topic.appended.subscribe(), group.ready.subscribe());
        Subscription { group, consumer, credits: u64::from(credits), appended, ready, try_now: true }
    }

    /// The consumer name (in dead-letter headers and ordered assignment).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The group.
    pub fn group(&self) -> &Arc<GroupHandle> {
        &self.group
    }

    /// Grants `n` more messages.
    pub fn add_credits(&mut self, n: u32) {
        self.credits = self.credits.saturating_add(u64::from(n)).min(MAX_CREDITS);
        self.try_now = true;
    }

    /// Leases what is ready, up to the credits, without waiting; empty when
    /// nothing is (then `wake` says when to try again).
    pub async fn poll(&mut self) -> Result<Vec<Delivered>> {
        if self.credits == 0 || !self.try_now {
            return Ok(Vec::new());
        }
        let got = self.group.pull(&self.consumer, self.credits.min(MAX_STEP) as usize).await?;
        self.credits -= got.len() as u64;
        self.try_now = !got.is_empty();
        Ok(got)
    }

    /// Resolves when it is worth polling again: records appended, a
    /// redelivery due, or a second passed. Never resolves without credits.
    pub async fn wake(&mut self) {
        if self.credits == 0 {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = self.appended.changed() => {}
            _ = self.ready.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        self.try_now = true;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.group.leave(&self.consumer);
    }
}
