//! `--output json` for the read commands: stable field names for scripts.

use serde_json::{json, Value};
use sluice_client::proto as pb;

/// How read commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tab-separated, for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Prints `v` as pretty JSON; the write error is returned (a closed pipe ends the command quietly).
pub fn print(v: Value) -> std::io::Result<()> {
    outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| "null".into()))
}

fn durability(d: i32) -> &'static str {
    match pb::Durability::try_from(d) {
        Ok(pb::Durability::Interval) => "interval",
        _ => "always",
    }
}

pub fn topic(t: &pb::TopicInfo) -> Value {
    let c = t.config.unwrap_or_default();
    json!({
        "name": t.name, "partitions": t.partitions, "created_ms": t.created_ms,
        "retention_ms": c.retention_ms, "retention_bytes": c.retention_bytes, "segment_bytes": c.segment_bytes,
        "segment_ms": c.segment_ms, "max_message_bytes": c.max_message_bytes, "durability": durability(c.durability),
        "replication_factor": t.replication_factor,
    })
}

pub fn topic_detail(d: &pb::DescribeTopicResponse) -> Value {
    let mut v = topic(&d.topic.clone().unwrap_or_default());
    v["partition_details"] = d
        .partitions
        .iter()
        .map(|p| json!({"partition": p.partition, "earliest": p.earliest_offset, "latest": p.latest_offset, "bytes": p.bytes, "segments": p.segments.len()}))
        .collect();
    v
}

pub fn group(g: &pb::GroupInfo) -> Value {
    let c = g.config.clone().unwrap_or_default();
    json!({
        "name": g.name, "topic": c.topic,
        "mode": if c.mode == pb::GroupMode::Ordered as i32 { "ordered" } else { "shared" },
        "ack_deadline_ms": c.ack_deadline_ms, "max_delivery_attempts": c.max_delivery_attempts, "dead_letter_topic": c.dead_letter_topic,
        "backlog": g.backlog_messages, "in_flight": g.in_flight, "oldest_unacked_age_ms": g.oldest_unacked_age_ms,
        "dead_lettered": g.dead_lettered, "members": g.members,
        "filter": c.filter.as_ref().map(|f| super::filter::to_json(&f.filters)),
        "push": c.push.as_ref().map(|p| json!({
            "endpoint": p.endpoint, "batch_size": p.batch_size, "max_batching_window_ms": p.max_batching_window_ms,
            "max_concurrency": p.max_concurrency, "timeout_ms": p.timeout_ms, "headers": p.headers,
        })),
        "partitions": g.partitions.iter().map(|p| json!({
            "partition": p.partition, "committed": p.committed_offset, "latest": p.latest_offset, "backlog": p.backlog_messages,
            "backlog_bytes": p.backlog_bytes, "in_flight": p.in_flight, "oldest_unacked_age_ms": p.oldest_unacked_age_ms,
            "dead_lettered": p.dead_lettered, "owner": p.owner,
        })).collect::<Vec<_>>(),
    })
}

pub fn record(r: &pb::Record) -> Value {
    json!({
        "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
        "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "value": String::from_utf8_lossy(&r.value),
        "headers": r.headers.iter().map(|h| (h.key.clone(), Value::from(String::from_utf8_lossy(&h.value).into_owned()))).collect::<serde_json::Map<_, _>>(),
    })
}
