//! Where shard leadership sits: spread over the brokers (each shard's
//! preferred broker leads it), moved off a broker that is stopping, and
//! moved off (and kept off) a broker whose data volume is below its
//! free-space reserve, since such a broker refuses every produce it leads.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use sluice_replication::meta::MetaCommand;
use sluice_replication::MetaNode;
use tokio_util::sync::CancellationToken;

use crate::partition::ReplicatedPartitions;

/// Moves a stopping broker's shard leaderships to caught-up replicas, so
/// its partitions and groups are served elsewhere at once instead of after
/// an election timeout.
#[derive(Clone)]
pub struct LeadershipMover {
    replicated: Arc<ReplicatedPartitions>,
}

impl LeadershipMover {
    /// A mover of this broker's leaderships of the shards it holds.
    pub(super) fn new(replicated: Arc<ReplicatedPartitions>) -> Self {
        LeadershipMover { replicated }
    }

    /// Hands over every shard this broker leads and waits (at most
    /// `within`) until it leads none. A hand-over is retried while the
    /// shard stays here: a replica may be an entry behind at the first
    /// try, a transfer its target ignored ends in an election this broker
    /// can win, and a shard may be elected here meanwhile. A shard no
    /// replica could take before `within` stays (a replica down or far
    /// behind): it is elected elsewhere after the stop.
    pub async fn move_off(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        // A shard of one replica (a topic of replication factor 1) has nobody to hand to.
        let shards: Vec<_> = self.replicated.shard_nodes().into_iter().filter(|s| s.voters().len() > 1).collect();
        let mut led_here = vec![false; shards.len()];
        loop {
            let mut leads_any = false;
            for (i, shard) in shards.iter().enumerate() {
                if shard.is_leader() {
                    leads_any = true;
                    led_here[i] = true;
                    shard.hand_over_to_any().await;
                }
            }
            if !leads_any || tokio::time::Instant::now() >= deadline {
                break;
            }
            // Long enough for a transfer to finish (an election at the
            // target), short enough to retry one that did not start.
            tokio::time::sleep(HAND_OVER_RETRY).await;
        }
        let kept = shards.iter().filter(|s| s.is_leader()).count();
        let moved = led_here.iter().filter(|l| **l).count().saturating_sub(kept);
        tracing::info!(moved, kept, "shard leaderships moved off this stopping broker");
    }
}

/// How long a stopping broker waits for its hand-overs before it tries the
/// shards it still leads again.
const HAND_OVER_RETRY: Duration = Duration::from_millis(200);

/// How often a broker looks for shards it leads that another broker should.
const SPREAD_EVERY: Duration = Duration::from_secs(2);

/// How long a broker leads a shard (in one term) before it hands it to the
/// shard's preferred broker. A stopping broker hands its shards away; were
/// they handed straight back, it would lead them again as it stops. This
/// wait outlasts a stop, and damps leadership moving back and forth.
const SPREAD_SETTLE: Duration = Duration::from_secs(3);

/// The broker that should lead shard `number` (from 1) when it is up: the
/// shards go round their voters (ascending ids), so each broker leads its
/// share of partitions and groups, also after a broker was replaced by a new id.
fn preferred_leader(number: u64, voters: &[u64]) -> Option<u64> {
    voters.get(((number.max(1) - 1) % voters.len().max(1) as u64) as usize).copied()
}

/// Spreads shard leadership: a shard this broker has led for a while whose
/// preferred broker is up, holds every entry and has disk space is handed
/// over to it.
/// Elections put every leader wherever a timer fired first (often one
/// broker leads all); this moves them back, also after a broker that was
/// down returns.
pub(super) async fn spread_leaders(
    node: Arc<MetaNode>,
    replicated: Arc<ReplicatedPartitions>,
    stop: CancellationToken,
) {
    // Per shard number: the term this broker was first seen leading in, and when.
    let mut led_since: HashMap<u64, (u64, tokio::time::Instant)> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SPREAD_EVERY) => {}
        }
        let now = tokio::time::Instant::now();
        for (number, shard) in replicated.numbered_shards() {
            let Some((lease, _)) = shard.lease() else {
                led_since.remove(&number);
                continue;
            };
            let since = match led_since.get(&number) {
                Some((term, since)) if *term == lease.term => *since,
                _ => {
                    led_since.insert(number, (lease.term, now));
                    now
                }
            };
            if now.duration_since(since) < SPREAD_SETTLE {
                continue;
            }
            let mut voters = shard.voters();
            voters.sort_unstable();
            let Some(preferred) = preferred_leader(number, &voters) else { continue };
            if preferred == node.id() || node.disk_full().contains(&preferred) {
                continue;
            }
            if shard.hand_over(preferred).await {
                tracing::info!(shard = number, to = preferred, "shard leadership handed to its preferred broker");
            }
        }
    }
}

/// How often a broker looks at its data volume's free space.
const DISK_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Keeps shard leadership off this broker while its data volume is below
/// the free-space reserve (it would refuse every produce it leads, though
/// its peers could take them): records the state in the catalog when it
/// changes (so no peer hands a shard back) and hands away every shard it
/// leads meanwhile. Once space is freed the record is cleared and the
/// spreading brings its shards back.
pub(super) async fn watch_disk(node: Arc<MetaNode>, replicated: Arc<ReplicatedPartitions>, stop: CancellationToken) {
    let store = replicated.store().clone();
    if store.disk().min_free_bytes() == 0 {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(DISK_CHECK_EVERY) => {}
        }
        let full = store.disk().check().is_err();
        if full != node.disk_full().contains(&node.id()) {
            match node.propose(MetaCommand::SetBrokerDiskFull { broker: node.id(), full }).await {
                Ok(_) => tracing::warn!(full, "recorded this broker's disk state in the cluster catalog"),
                Err(e) => tracing::warn!(error = %e, full, "recording this broker's disk state failed; will retry"),
            }
        }
        if !full {
            continue;
        }
        for (number, shard) in replicated.numbered_shards() {
            if shard.is_leader() && shard.voters().len() > 1 && shard.hand_over_to_any().await {
                tracing::warn!(shard = number, "shard leadership handed away: this broker's data volume is full");
            }
        }
    }
}
