//! The catalog follower: after every catalog change applied on this broker
//! (and once at start, from the catalog on disk), makes the broker's topic
//! registry what the catalog says. The proposer of a change waits for this
//! (see `topic::cluster`), so "created" means "served here".
//!
//! Groups are still per broker (step 4 of `docs/REPLICATION.md` moves them
//! into the catalog). A topic deleted through another broker may be read by a
//! group here; the catalog wins, so such groups are deleted with the topic,
//! and the log says so.

use std::sync::Arc;
use std::time::Duration;

use sluice_replication::MetaNode;
use tokio_util::sync::CancellationToken;

use crate::group::GroupRegistry;
use crate::topic::TopicRegistry;

/// How soon a failed reconciliation (a failed write) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the catalog until `stop`.
pub(super) async fn follow(
    node: Arc<MetaNode>,
    topics: Arc<TopicRegistry>,
    groups: Arc<GroupRegistry>,
    stop: CancellationToken,
) {
    let mut changes = node.subscribe();
    loop {
        changes.borrow_and_update();
        let catalog = node.catalog();
        let mut result = Ok(());
        for name in topics.stale(&catalog) {
            for group in groups.referencing(&name) {
                tracing::warn!(
                    topic = name,
                    group,
                    "the topic was deleted in the cluster; deleting this broker's group that uses it"
                );
                if let Err(e) = groups.delete(&group).await {
                    result = Err(e);
                }
            }
        }
        if result.is_ok() {
            result = topics.follow(&catalog).await;
        }
        let pause = match result {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "applying the cluster catalog to this broker failed; retrying");
                Some(RETRY)
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
            _ = tokio::time::sleep(pause.unwrap_or(Duration::MAX)), if pause.is_some() => {}
        }
    }
}
