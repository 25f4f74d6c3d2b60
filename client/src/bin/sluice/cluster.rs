//! `sluice cluster status` and `sluice cluster replace`. Status: the brokers, the metadata leader and how far
//! each replica of the metadata group is behind it, and each shard's leader.

use clap::Subcommand;
use serde_json::json;
use sluice_client::proto as pb;
use sluice_client::ClusterInfo;

use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Brokers with their endpoints and roles, the metadata leader and term,
    /// each replica's lag (asked of the leader), and each shard's leader.
    Status {
        /// Also list which broker leads each partition of these topics.
        #[arg(long = "topic")]
        topics: Vec<String>,
    },
    /// Replace a lost broker: start the new one first (the same --node-id on
    /// an empty data dir, or a new id), then run this against any other
    /// broker. Each Raft group's leader drops the old replica, adds the new
    /// one as a learner, copies it the log or a snapshot and makes it a
    /// voter. Prints every step; safe to run again if interrupted.
    Replace {
        /// The broker whose data is lost.
        broker: u64,
        /// The id of the broker taking its place (default: the same id).
        #[arg(long)]
        new_id: Option<u64>,
        /// The new broker's --cluster-listen address (host:port), needed for
        /// a new id the other brokers' --peers do not list.
        #[arg(long, default_value = "")]
        address: String,
    },
}

pub async fn run(info: ClusterInfo, command: ClusterCommand, format: Format) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { topics } => status(info, &topics, format).await,
        ClusterCommand::Replace { broker, new_id, address } => {
            replace(info, broker, new_id.unwrap_or(broker), &address, format).await
        }
    }
}

async fn replace(info: ClusterInfo, old: u64, new: u64, address: &str, format: Format) -> anyhow::Result<()> {
    let (mut done, mut kept) = (0, 0);
    info.replace_broker(old, new, address, |step| {
        match step.stage.as_str() {
            "done" => done += 1,
            "not_replaced" => kept += 1,
            _ => {}
        }
        let group = if step.group == 0 { "metadata".to_owned() } else { format!("shard {}", step.group) };
        // Printing is best effort here: the replacement goes on if stdout is closed.
        let _ = if format == Format::Json {
            let line = json!({
                "group": step.group, "stage": step.stage, "matched_index": step.matched_index,
                "last_index": step.last_index, "detail": step.detail,
            });
            outln!("{line}")
        } else {
            outln!("{group:<10} {}", step.detail)
        };
    })
    .await?;
    if format != Format::Json {
        outln!("broker {old} replaced by broker {new} in {done} groups")?;
        if kept > 0 {
            outln!("{kept} placed shard(s) keep broker {old} in their replica set (see above)")?;
        }
    }
    Ok(())
}

/// One broker's line of the status.
struct Row {
    id: u64,
    endpoint: String,
    role: &'static str,
    matched: Option<u64>,
    lag: Option<u64>,
    disk_full: bool,
}

/// Each broker's role and progress as the answer shows them.
fn rows(m: &pb::MetadataResponse) -> Vec<Row> {
    let status = m.metadata.clone().unwrap_or_default();
    m.brokers
        .iter()
        .map(|b| {
            let role = if !m.clustered {
                "single"
            } else if b.id == status.leader {
                "leader"
            } else {
                "follower"
            };
            let progress = status.replicas.iter().find(|r| r.broker_id == b.id);
            Row {
                id: b.id,
                endpoint: b.endpoint.clone(),
                role,
                matched: progress.and_then(|p| p.matched_index),
                lag: progress.map(|p| p.lag),
                disk_full: b.disk_full,
            }
        })
        .collect()
}

async fn status(info: ClusterInfo, topics: &[String], format: Format) -> anyhow::Result<()> {
    let m = info.metadata_with_progress().await?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let partitions = if names.is_empty() { Vec::new() } else { info.partition_leaders(&names).await? };
    let status = m.metadata.clone().unwrap_or_default();
    let rows = rows(&m);
    if format == Format::Json {
        let brokers: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "endpoint": r.endpoint, "role": r.role, "matched_index": r.matched, "lag": r.lag,
                    "disk_full": r.disk_full,
                })
            })
            .collect();
        let shards: Vec<_> = m
            .shards
            .iter()
            .map(|s| {
                let st = s.status.clone().unwrap_or_default();
                json!({
                    "id": s.id, "leader": st.leader, "term": st.term, "committed_index": st.committed_index,
                    "snapshot_index": st.snapshot_index, "purged_index": st.purged_index,
                })
            })
            .collect();
        let partitions: Vec<_> = partitions
            .iter()
            .map(|p| {
                json!({
                    "topic": p.topic, "partition": p.partition, "shard": p.shard, "leader": p.leader,
                    "leader_endpoint": p.leader_endpoint, "epoch": p.epoch,
                })
            })
            .collect();
        output::print(json!({
            "clustered": m.clustered, "answered_by": m.broker_id, "metadata_leader": status.leader,
            "term": status.term, "committed_index": status.committed_index, "brokers": brokers, "shards": shards,
            "partitions": partitions,
        }))?;
        return Ok(());
    }
    if !m.clustered {
        let endpoint = m.brokers.first().map_or("?", |b| b.endpoint.as_str());
        outln!("single broker at {endpoint} (started without --peers)")?;
        return Ok(());
    }
    let leader = if status.leader == 0 { "none (election in progress)".to_owned() } else { status.leader.to_string() };
    outln!(
        "cluster: {} brokers, metadata leader {leader}, term {}, committed {} (answered by broker {})",
        rows.len(),
        status.term,
        status.committed_index,
        m.broker_id
    )?;
    outln!("broker\tendpoint\trole\tmatched\tlag\tdisk")?;
    let show = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    for r in rows {
        let disk = if r.disk_full { "full" } else { "ok" };
        outln!("{}\t{}\t{}\t{}\t{}\t{disk}", r.id, r.endpoint, r.role, show(r.matched), show(r.lag))?;
    }
    outln!("shard\tleader\tterm\tcommitted\tsnapshot\tpurged")?;
    for s in &m.shards {
        let st = s.status.clone().unwrap_or_default();
        let leader = if st.leader == 0 { "-".to_owned() } else { st.leader.to_string() };
        outln!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            s.id,
            leader,
            st.term,
            st.committed_index,
            st.snapshot_index,
            st.purged_index
        )?;
    }
    if !partitions.is_empty() {
        outln!("topic	partition	shard	leader	endpoint")?;
        for p in &partitions {
            let leader = if p.leader == 0 { "-".to_owned() } else { p.leader.to_string() };
            outln!("{}	{}	{}	{}	{}", p.topic, p.partition, p.shard, leader, p.leader_endpoint)?;
        }
    }
    Ok(())
}
