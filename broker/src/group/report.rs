//! A group's progress as numbers — backlog, in flight, oldest unacked age,
//! dead-lettered — per partition and in total. One computation for every
//! reader: DescribeGroup, the metrics refresh and the KEDA scaler.

use sluice_storage::now_ms;

use super::actor::GroupHandle;
use crate::error::Result;

/// One partition's progress in a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    /// Partition number.
    pub partition: u32,
    /// Every offset below is acked.
    pub committed_offset: u64,
    /// The partition's committed end.
    pub latest_offset: u64,
    /// Messages not yet acked by the group.
    pub backlog_messages: u64,
    /// Their bytes, estimated from the partition's average message size.
    pub backlog_bytes: u64,
    /// Leased to consumers now.
    pub in_flight: u64,
    /// Age of the oldest unacked message, ms (0 without backlog).
    pub oldest_unacked_age_ms: i64,
    /// Moved to the dead-letter topic since the group was created.
    pub dead_lettered: u64,
    /// Ordered groups: the member that owns the partition (empty if none).
    pub owner: String,
}

/// A group's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupReport {
    /// Per partition, in order.
    pub partitions: Vec<PartitionReport>,
    /// Known members.
    pub members: Vec<String>,
    /// Sum over partitions.
    pub backlog_messages: u64,
    /// Sum over partitions.
    pub in_flight: u64,
    /// Sum over partitions.
    pub dead_lettered: u64,
    /// Maximum over partitions, ms.
    pub oldest_unacked_age_ms: i64,
}

/// Computes `g`'s report from its actor's snapshot and its topic's partitions.
pub async fn report(g: &GroupHandle) -> Result<GroupReport> {
    let snap = g.snapshot().await?;
    let now = now_ms();
    let mut report = GroupReport { members: snap.members.clone(), ..Default::default() };
    for (p, stats) in snap.partitions.iter().enumerate() {
        let handle = g.topic.partition(p as u32)?;
        let latest = handle.latest();
        let committed = stats.committed.max(handle.earliest()).min(latest);
        let backlog = latest.saturating_sub(committed).saturating_sub(stats.acked_above);
        let snapshot = handle.snapshot().await?;
        let stored: u64 = snapshot.segments.iter().map(|s| s.bytes).sum();
        let count = latest.saturating_sub(handle.earliest()).max(1);
        let oldest = match handle.timestamp_at(committed).await? {
            Some(ts) if backlog > 0 => (now - ts).max(0),
            _ => 0,
        };
        report.partitions.push(PartitionReport {
            partition: p as u32,
            committed_offset: stats.committed,
            latest_offset: latest,
            backlog_messages: backlog,
            backlog_bytes: stored / count * backlog,
            in_flight: stats.in_flight,
            oldest_unacked_age_ms: oldest,
            dead_lettered: stats.dead_lettered,
            owner: snap.owners.get(p).cloned().flatten().unwrap_or_default(),
        });
        report.backlog_messages += backlog;
        report.in_flight += stats.in_flight;
        report.dead_lettered += stats.dead_lettered;
        report.oldest_unacked_age_ms = report.oldest_unacked_age_ms.max(oldest);
    }
    Ok(report)
}
