//! The catalog follower: after every catalog change applied on this broker
//! (and once at start, from the catalog on disk), makes the broker's topic
//! and group registries what the catalog says. The proposer of a change waits
//! for this (see `topic::cluster`, `group::cluster`), so "created" means
//! "served here".

use std::sync::Arc;
use std::time::Duration;

use sluice_replication::MetaNode;
use tokio_util::sync::CancellationToken;

use super::placed::PlacedShards;
use crate::group::GroupRegistry;
use crate::partition::ReplicatedPartitions;
use crate::topic::TopicRegistry;

/// How soon a failed reconciliation (a failed write) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the catalog until `stop`.
pub(super) async fn follow(
    node: Arc<MetaNode>,
    (placed, replicated): (Arc<PlacedShards>, Arc<ReplicatedPartitions>),
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupRegistry>,
    stop: CancellationToken,
) {
    let mut changes = node.subscribe();
    loop {
        changes.borrow_and_update();
        let catalog = node.catalog();
        // Placed shards before their topics; groups go before their topics, and come after them.
        let mut result = placed
            .follow(&catalog, &replicated)
            .await
            .map_err(|e| crate::error::Error::ClusterUnavailable(format!("starting a placed shard: {e}")));
        if result.is_ok() {
            result = groups.follow_removals(&catalog).await;
        }
        if result.is_ok() {
            result = topics.follow(&catalog).await;
        }
        if result.is_ok() {
            result = groups.follow_additions(&catalog).await;
        }
        let failed = match result {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(error = %e, "applying the cluster catalog to this broker failed; retrying");
                true
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    // The state machine is gone: the broker is stopping.
                    stop.cancelled().await;
                    return;
                }
            }
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}
