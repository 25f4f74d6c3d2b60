//! Following partition leaders in a cluster. A broker that does not lead a
//! partition answers a produce with `UNAVAILABLE`, reason `not_leader`, and
//! trailers naming the leader (`sluice-leader`, a `host:port`) and its epoch
//! (`sluice-leader-epoch`). A client goes there at once when the hint's
//! epoch is at least the one it holds; an older hint is stale (the client
//! knows a newer leader), so it starts over from the broker it was given.
//! That rule keeps two stale brokers from bouncing a client between them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::connect::Channel;

use crate::error::{Error, Result};

/// The trailer naming the leader's client endpoint.
pub const LEADER_KEY: &str = "sluice-leader";
/// The trailer carrying the leader's epoch.
pub const LEADER_EPOCH_KEY: &str = "sluice-leader-epoch";

/// Where a `not_leader` answer says to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's client endpoint, `host:port`.
    pub endpoint: String,
    /// Its epoch (the term of its shard).
    pub epoch: u64,
}

impl Error {
    /// The leader named by a `not_leader` answer, if this is one that names it.
    pub fn leader_hint(&self) -> Option<LeaderHint> {
        let Error::Status(s) = self else { return None };
        if self.reason() != Some("not_leader") {
            return None;
        }
        let get = |k| s.metadata().get(k).and_then(|v| v.to_str().ok());
        let endpoint = get(LEADER_KEY)?.to_owned();
        let epoch = get(LEADER_EPOCH_KEY).and_then(|e| e.parse().ok()).unwrap_or(0);
        Some(LeaderHint { endpoint, epoch })
    }
}

/// Channels to a cluster's brokers: the one the client was given (the seed)
/// and one per leader endpoint it was sent to, shared by all its partitions.
#[derive(Clone)]
pub struct Brokers {
    seed: Channel,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Brokers {
    /// Starting from `seed`.
    pub fn new(seed: impl Into<Channel>) -> Self {
        Brokers { seed: seed.into(), channels: Arc::default() }
    }

    /// The channel the client was given.
    pub fn seed(&self) -> Channel {
        self.seed.clone()
    }

    /// A channel to `endpoint` (made once, lazily connected).
    pub fn to(&self, endpoint: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = self.seed.to(endpoint)?;
        channels.insert(endpoint.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// One partition's view of its leader: which channel to use, and the epoch
/// of the hint that chose it.
#[derive(Clone)]
pub struct LeaderTracker {
    brokers: Brokers,
    current: Channel,
    epoch: u64,
}

impl LeaderTracker {
    /// Starting at the seed, knowing no epoch.
    pub fn new(brokers: Brokers) -> Self {
        let current = brokers.seed();
        LeaderTracker { brokers, current, epoch: 0 }
    }

    /// The channel requests go to now.
    pub fn channel(&self) -> Channel {
        self.current.clone()
    }

    /// Whether requests go to the seed (no leader followed).
    pub fn at_seed(&self) -> bool {
        self.epoch == 0
    }

    /// Back to the seed: the followed leader stopped answering.
    pub fn reset(&mut self) {
        self.current = self.brokers.seed();
        self.epoch = 0;
    }

    /// Follows `hint` if it is not older than what this tracker knows; a stale
    /// hint sends it back to the seed. Returns whether the next attempt may go
    /// at once (it was pointed at a leader).
    pub fn follow(&mut self, hint: &LeaderHint) -> bool {
        if hint.epoch < self.epoch || hint.epoch == 0 {
            self.reset();
            return false;
        }
        match self.brokers.to(&hint.endpoint) {
            Ok(channel) => {
                self.current = channel;
                self.epoch = hint.epoch;
                true
            }
            Err(_) => false,
        }
    }
}
