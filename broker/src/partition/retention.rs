//! What follows a retention trim, on a single broker's partition actor and on
//! a cluster's shards alike: each removed segment logged, and the space given
//! back once the removal has committed.

use sluice_storage::{PartitionId, Reclaim, SegmentMeta, Store};

/// Logs every segment retention removed from `id`.
pub(super) fn log_removed(id: PartitionId, removed: &[SegmentMeta]) {
    for s in removed {
        tracing::info!(
            topic_id = id.topic.0,
            partition = id.index,
            base_offset = s.base_offset,
            end_offset = s.end_offset,
            bytes = s.bytes,
            "segment deleted by retention"
        );
    }
}

/// Gives the removed range's space back (blocking). Readers already skip the
/// range, so a failure only delays the space: compaction retries it.
pub(super) fn reclaim(store: &Store, reclaim: &Reclaim) {
    if let Err(e) = store.reclaim(reclaim) {
        tracing::warn!(error = %e, "reclaiming deleted segments failed; compaction will retry");
    }
}
