//! The group half of `sluice.v1.Admin`: create, update, delete, list,
//! describe, seek, and dead-letter peek, redrive and purge.

use std::time::Duration;

use sluice_proto::v1 as pb;

use super::consume::record_to_pb;
use super::validate;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::group::{BackoffSettings, GroupHandle, GroupMode, GroupRegistry, GroupSettings, StartAt};
use crate::topic::TopicRegistry;

const DEFAULT_ACK_DEADLINE_MS: u32 = 30_000;
/// Most dead letters one peek returns.
pub const MAX_PEEK: u32 = 10_000;
/// Header prefix the broker adds to dead letters (removed on redrive).
const DLQ_HEADER_PREFIX: &str = "sluice-dlq-";

fn mode_to_pb(m: GroupMode) -> pb::GroupMode {
    match m {
        GroupMode::Shared => pb::GroupMode::Shared,
        GroupMode::Ordered => pb::GroupMode::Ordered,
    }
}

/// Applies the backoff fields that are set (zero included: presence, not value,
/// says whether a field is given); unset ones keep `s`.
fn apply_backoff(b: &pb::Backoff, s: &mut BackoffSettings) {
    if let Some(v) = b.initial_ms {
        s.initial_ms = v;
    }
    if let Some(v) = b.max_ms {
        s.max_ms = v;
    }
    if let Some(v) = b.multiplier {
        s.multiplier = v;
    }
    if let Some(v) = b.jitter {
        s.jitter = v;
    }
}

/// Builds a new group's settings from a request: unset fields (and a zero
/// `ack_deadline_ms`, which is never valid) take the defaults.
fn new_settings(c: &pb::GroupConfig) -> Result<(GroupSettings, StartAt)> {
    if c.topic.is_empty() {
        return Err(Error::invalid("config.topic", "name the topic the group reads"));
    }
    validate::name("config.topic", &c.topic)?;
    validate::optional_name("config.dead_letter_topic", &c.dead_letter_topic)?;
    let mode = match pb::GroupMode::try_from(c.mode) {
        Ok(pb::GroupMode::Unspecified | pb::GroupMode::Shared) => GroupMode::Shared,
        Ok(pb::GroupMode::Ordered) => GroupMode::Ordered,
        Err(_) => return Err(Error::invalid("config.mode", format!("unknown mode {}; use SHARED or ORDERED", c.mode))),
    };
    let start = match pb::StartPosition::try_from(c.start) {
        Ok(pb::StartPosition::Unspecified | pb::StartPosition::Earliest) => StartAt::Earliest,
        Ok(pb::StartPosition::Latest) => StartAt::Latest,
        Ok(pb::StartPosition::Timestamp) => StartAt::Timestamp(c.start_timestamp_ms),
        Err(_) => return Err(Error::invalid("config.start", format!("unknown start position {}", c.start))),
    };
    let mut backoff = BackoffSettings::default();
    if let Some(b) = &c.backoff {
        apply_backoff(b, &mut backoff);
    }
    let settings = GroupSettings {
        id: 0,
        topic: c.topic.clone(),
        ack_deadline_ms: if c.ack_deadline_ms == 0 { DEFAULT_ACK_DEADLINE_MS } else { c.ack_deadline_ms },
        max_delivery_attempts: c.max_delivery_attempts.unwrap_or(0),
        dead_letter_topic: c.dead_letter_topic.clone(),
        backoff,
        mode,
        created_ms: 0,
        name: String::new(),
    };
    settings.validate()?;
    Ok((settings, start))
}

/// The full view of a group: configuration, per-partition progress, members.
pub async fn group_info(g: &GroupHandle) -> Result<pb::GroupInfo> {
    let s = g.settings();
    let report = crate::group::report(g).await?;
    Ok(pb::GroupInfo {
        name: g.name.clone(),
        config: Some(pb::GroupConfig {
            topic: s.topic.clone(),
            ack_deadline_ms: s.ack_deadline_ms,
            max_delivery_attempts: Some(s.max_delivery_attempts),
            dead_letter_topic: s.dead_letter_topic.clone(),
            backoff: Some(pb::Backoff {
                initial_ms: Some(s.backoff.initial_ms),
                max_ms: Some(s.backoff.max_ms),
                multiplier: Some(s.backoff.multiplier),
                jitter: Some(s.backoff.jitter),
            }),
            mode: mode_to_pb(s.mode) as i32,
            start: 0,
            start_timestamp_ms: 0,
        }),
        members: report.members,
        partitions: report
            .partitions
            .into_iter()
            .map(|p| pb::GroupPartitionInfo {
                partition: p.partition,
                committed_offset: p.committed_offset,
                latest_offset: p.latest_offset,
                backlog_messages: p.backlog_messages,
                backlog_bytes: p.backlog_bytes,
                in_flight: p.in_flight,
                oldest_unacked_age_ms: p.oldest_unacked_age_ms,
                dead_lettered: p.dead_lettered,
                owner: p.owner,
            })
            .collect(),
        backlog_messages: report.backlog_messages,
        in_flight: report.in_flight,
        dead_lettered: report.dead_lettered,
        oldest_unacked_age_ms: report.oldest_unacked_age_ms,
        ..Default::default()
    })
}

/// `group_info` for the Admin service: also counts the messages stored now in
/// the group's dead-letter topic (`dead_letters_stored`; `dead_lettered` is
/// the group's running total and does not drop on purge).
pub async fn describe(topics: &TopicRegistry, g: &GroupHandle) -> Result<pb::GroupInfo> {
    let mut info = group_info(g).await?;
    let name = g.settings().dead_letter_topic;
    if !name.is_empty() {
        if let Ok(dlq) = topics.get(&name) {
            info.dead_letters_stored = dlq.partitions.iter().map(|p| p.latest().saturating_sub(p.earliest())).sum();
        }
    }
    Ok(info)
}

/// `CreateGroup`.
pub async fn create(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    config: &BrokerConfig,
    req: pb::CreateGroupRequest,
) -> Result<pb::GroupInfo> {
    validate::topic_name(&req.name)?;
    let c = req.config.ok_or_else(|| Error::invalid("config", "a group needs a config naming its topic"))?;
    let (settings, start) = new_settings(&c)?;
    let group = groups.create(&req.name, settings, start, config.default_topic_settings()).await?;
    describe(topics, &group).await
}

/// `UpdateGroup`: changes the fields that are set (`max_delivery_attempts = 0`
/// removes a limit); a zero `ack_deadline_ms` or empty `dead_letter_topic` is unset.
pub async fn update(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::UpdateGroupRequest,
) -> Result<pb::GroupInfo> {
    validate::name("name", &req.name)?;
    let c = req.config.ok_or_else(|| Error::invalid("config", "nothing to update; set at least one field"))?;
    validate::optional_name("config.dead_letter_topic", &c.dead_letter_topic)?;
    if !c.topic.is_empty() || c.mode != 0 || c.start != 0 {
        return Err(Error::invalid("config", "topic, mode and start cannot change; create a new group instead"));
    }
    let group = groups
        .update(&req.name, |s| {
            if c.ack_deadline_ms != 0 {
                s.ack_deadline_ms = c.ack_deadline_ms;
            }
            if let Some(n) = c.max_delivery_attempts {
                s.max_delivery_attempts = n;
            }
            if !c.dead_letter_topic.is_empty() {
                s.dead_letter_topic = c.dead_letter_topic.clone();
            }
            if let Some(b) = &c.backoff {
                apply_backoff(b, &mut s.backoff);
            }
        })
        .await?;
    describe(topics, &group).await
}

/// `SeekGroup`: resolves the target on each partition, then moves the group.
pub async fn seek(topics: &TopicRegistry, groups: &GroupRegistry, req: pb::SeekGroupRequest) -> Result<pb::GroupInfo> {
    use pb::seek_group_request::Target;
    let group = validate::group(groups, "name", &req.name)?;
    let target =
        req.target.ok_or_else(|| Error::invalid("target", "say where to: earliest, latest, offset or timestamp_ms"))?;
    let partitions: Vec<u32> = match req.partition {
        Some(p) => {
            group.topic.partition(p)?;
            vec![p]
        }
        None => (0..group.topic.partitions.len() as u32).collect(),
    };
    let mut targets = Vec::with_capacity(partitions.len());
    for p in partitions {
        let h = group.topic.partition(p)?;
        let offset = match target {
            Target::Earliest(_) => h.earliest(),
            Target::Latest(_) => h.latest(),
            Target::Offset(o) => {
                if o < h.earliest() || o > h.latest() {
                    return Err(Error::OffsetOutOfRange { offset: o, earliest: h.earliest(), latest: h.latest() });
                }
                o
            }
            Target::TimestampMs(ts) => h.offset_for_timestamp(ts).await?,
        };
        targets.push((p, offset));
    }
    group.seek(targets).await?;
    tracing::info!(group = %group.name, "group seeked");
    describe(topics, &group).await
}

fn dead_letter_topic(topics: &TopicRegistry, group: &GroupHandle) -> Result<std::sync::Arc<crate::topic::Topic>> {
    let name = group.settings().dead_letter_topic;
    if name.is_empty() {
        return Err(Error::FailedPrecondition(format!("group `{}` has no dead-letter topic", group.name)));
    }
    topics.get(&name)
}

/// Every dead letter of a group, up to `max`, oldest first per partition.
async fn read_dead_letters(topics: &TopicRegistry, group: &GroupHandle, max: usize) -> Result<Vec<pb::Record>> {
    let dlq = dead_letter_topic(topics, group)?;
    let never = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    for (p, h) in dlq.partitions.iter().enumerate() {
        let mut offset = h.earliest();
        let end = h.latest();
        while offset < end && out.len() < max {
            let batch = h.fetch(offset, max - out.len(), 16 << 20, Duration::ZERO, &never).await?;
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            out.extend(batch.into_iter().map(|r| record_to_pb(p as u32, r)));
        }
    }
    Ok(out)
}

/// `PeekDeadLetters`.
pub async fn peek(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::PeekDeadLettersRequest,
) -> Result<pb::PeekDeadLettersResponse> {
    let max = match req.max_messages {
        0 => 100,
        n if n > MAX_PEEK => return Err(Error::invalid("max_messages", format!("at most {MAX_PEEK}"))),
        n => n,
    };
    let group = validate::group(groups, "group", &req.group)?;
    Ok(pb::PeekDeadLettersResponse { records: read_dead_letters(topics, &group, max as usize).await? })
}

/// `RedriveDeadLetters`: copies dead letters (without the broker's dead-letter
/// headers) to the target topic, at most `rate_per_second`. The dead letters stay
/// until purged.
pub async fn redrive(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::RedriveDeadLettersRequest,
) -> Result<pb::RedriveDeadLettersResponse> {
    let group = validate::group(groups, "group", &req.group)?;
    let target_name = if req.target_topic.is_empty() { group.settings().topic } else { req.target_topic.clone() };
    validate::optional_name("target_topic", &req.target_topic)?;
    let target = topics.get(&target_name)?;
    let max = if req.max_messages == 0 { usize::MAX } else { req.max_messages as usize };
    let letters = read_dead_letters(topics, &group, max.min(1_000_000)).await?;
    let interval = (req.rate_per_second > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(req.rate_per_second)));
    let mut redriven = 0u64;
    for r in letters {
        let header =
            |k: &str| r.headers.iter().find(|h| h.key == k).map(|h| String::from_utf8_lossy(&h.value).into_owned());
        if !req.reason_contains.is_empty()
            && !header("sluice-dlq-reason").unwrap_or_default().contains(&req.reason_contains)
        {
            continue;
        }
        let partition = match (
            header("sluice-dlq-source-partition").and_then(|p| p.parse::<u32>().ok()),
            target_name == group.settings().topic,
        ) {
            (Some(p), true) if (p as usize) < target.partitions.len() => p,
            _ => match &r.key {
                Some(k) => sluice_proto::partition_for_key(k, target.partitions.len() as u32),
                None => target.next_round_robin(),
            },
        };
        let headers = r.headers.into_iter().filter(|h| !h.key.starts_with(DLQ_HEADER_PREFIX)).collect();
        let message = pb::Message { key: r.key, value: r.value.clone(), headers };
        target.partition(partition)?.append(vec![message], None).await?;
        redriven += 1;
        if let Some(i) = interval {
            tokio::time::sleep(i).await;
        }
    }
    tracing::info!(group = %group.name, target = %target_name, redriven, "dead letters redriven");
    Ok(pb::RedriveDeadLettersResponse { redriven })
}

/// `PurgeDeadLetters`.
pub async fn purge(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::PurgeDeadLettersRequest,
) -> Result<pb::PurgeDeadLettersResponse> {
    let group = validate::group(groups, "group", &req.group)?;
    let dlq = dead_letter_topic(topics, &group)?;
    let mut purged = 0;
    for h in &dlq.partitions {
        purged += h.truncate().await?;
    }
    tracing::info!(group = %group.name, purged, "dead letters purged");
    Ok(pb::PurgeDeadLettersResponse { purged })
}
