//! The group half of `sluice.v1.Admin`: create, update, delete, list,
//! describe, seek, and dead-letter peek, redrive and purge (translated into
//! `group::dead_letter_tools`).

use sluice_proto::v1 as pb;

use super::consume::record_to_pb;
use super::validate;
use crate::config::BrokerConfig;
use crate::error::{Error, Result};
use crate::group::config::{PushConfig, DEFAULT_PUSH_CONCURRENCY};
use crate::group::dead_letter_tools::{self, Redrive};
use crate::group::filter::Filter;
use crate::group::{BackoffConfig, GroupConfig, GroupHandle, GroupMode, GroupRegistry, StartAt};
use crate::name::{GroupName, TopicName};
use crate::push::Allowlist;
use crate::topic::TopicRegistry;

const DEFAULT_ACK_DEADLINE_MS: u32 = 30_000;
/// Most dead letters one peek returns.
pub const MAX_PEEK: u32 = 10_000;

fn mode_to_pb(m: GroupMode) -> pb::GroupMode {
    match m {
        GroupMode::Shared => pb::GroupMode::Shared,
        GroupMode::Ordered => pb::GroupMode::Ordered,
    }
}

/// Applies the backoff fields that are set (zero included: presence, not value,
/// says whether a field is given); unset ones keep `s`.
fn apply_backoff(b: &pb::Backoff, s: &mut BackoffConfig) {
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

/// A push config from a request, with defaults for unset fields, its
/// endpoint checked against the broker's allowlist.
fn push_settings(p: &pb::PushConfig, ack_deadline_ms: u32, config: &BrokerConfig) -> Result<PushConfig> {
    let allowlist = Allowlist::parse(&config.push_allowed_endpoints)
        .map_err(|reason| Error::invalid("push-allowed-endpoints", reason))?;
    allowlist.check_endpoint("config.push.endpoint", &p.endpoint)?;
    let mut headers: Vec<(String, String)> = p.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    headers.sort();
    let push = PushConfig {
        endpoint: p.endpoint.clone(),
        batch_size: p.batch_size.max(1),
        max_batching_window_ms: p.max_batching_window_ms,
        max_concurrency: if p.max_concurrency == 0 { DEFAULT_PUSH_CONCURRENCY } else { p.max_concurrency },
        timeout_ms: if p.timeout_ms == 0 {
            PushConfig::default_timeout_ms(ack_deadline_ms, p.max_batching_window_ms)
        } else {
            p.timeout_ms
        },
        headers,
    };
    push.validate(ack_deadline_ms)?;
    Ok(push)
}

/// A group's filters from their protobuf form.
fn filters_from_pb(list: &pb::EventFilters) -> Result<Vec<Filter>> {
    list.filters.iter().map(filter_from_pb).collect()
}

fn filter_from_pb(f: &pb::EventFilter) -> Result<Filter> {
    use pb::event_filter::Filter as F;
    let pairs = |a: &pb::AttributeValues| a.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(match &f.filter {
        Some(F::Exact(a)) => Filter::Exact(pairs(a)),
        Some(F::Prefix(a)) => Filter::Prefix(pairs(a)),
        Some(F::Suffix(a)) => Filter::Suffix(pairs(a)),
        Some(F::All(list)) => Filter::All(filters_from_pb(list)?),
        Some(F::Any(list)) => Filter::Any(filters_from_pb(list)?),
        Some(F::Not(inner)) => Filter::Not(Box::new(filter_from_pb(inner)?)),
        None => {
            return Err(Error::invalid("config.filter", "a filter sets one of exact, prefix, suffix, all, any, not"))
        }
    })
}

fn filters_to_pb(filters: &[Filter]) -> pb::EventFilters {
    pb::EventFilters { filters: filters.iter().map(filter_to_pb).collect() }
}

fn filter_to_pb(f: &Filter) -> pb::EventFilter {
    use pb::event_filter::Filter as F;
    let values = |m: &std::collections::BTreeMap<String, String>| pb::AttributeValues {
        values: m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let filter = match f {
        Filter::Exact(m) => F::Exact(values(m)),
        Filter::Prefix(m) => F::Prefix(values(m)),
        Filter::Suffix(m) => F::Suffix(values(m)),
        Filter::All(list) => F::All(filters_to_pb(list)),
        Filter::Any(list) => F::Any(filters_to_pb(list)),
        Filter::Not(inner) => F::Not(Box::new(filter_to_pb(inner))),
    };
    pb::EventFilter { filter: Some(filter) }
}

fn push_to_pb(p: &PushConfig) -> pb::PushConfig {
    pb::PushConfig {
        endpoint: p.endpoint.clone(),
        batch_size: p.batch_size,
        max_batching_window_ms: p.max_batching_window_ms,
        max_concurrency: p.max_concurrency,
        timeout_ms: p.timeout_ms,
        // Values may be credentials: GroupInfo names the headers only.
        headers: p.headers.iter().map(|(name, _)| (name.clone(), REDACTED.to_owned())).collect(),
    }
}

/// What GroupInfo shows for a push header's value.
const REDACTED: &str = "(set)";

/// Builds a new group's settings from a request: unset fields (and a zero
/// `ack_deadline_ms`, which is never valid) take the defaults.
fn new_settings(c: &pb::GroupConfig, config: &BrokerConfig) -> Result<(GroupConfig, StartAt)> {
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
    let mut backoff = BackoffConfig::default();
    if let Some(b) = &c.backoff {
        apply_backoff(b, &mut backoff);
    }
    let ack_deadline_ms = if c.ack_deadline_ms == 0 { DEFAULT_ACK_DEADLINE_MS } else { c.ack_deadline_ms };
    let push = c.push.as_ref().map(|p| push_settings(p, ack_deadline_ms, config)).transpose()?;
    let settings = GroupConfig {
        id: 0,
        topic: c.topic.clone(),
        ack_deadline_ms,
        max_delivery_attempts: c.max_delivery_attempts.unwrap_or(0),
        dead_letter_topic: c.dead_letter_topic.clone(),
        backoff,
        mode,
        created_ms: 0,
        name: String::new(),
        push,
        filters: c.filter.as_ref().map(filters_from_pb).transpose()?.unwrap_or_default(),
    };
    settings.validate()?;
    Ok((settings, start))
}

/// The full view of a group: configuration, per-partition progress, members.
pub async fn group_info(g: &GroupHandle) -> Result<pb::GroupInfo> {
    let report = crate::group::report(g).await?;
    Ok(pb::GroupInfo {
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
        ..settings_info(g)
    })
}

/// A group's name and settings, without its progress (which only the
/// brokers holding its shard know).
fn settings_info(g: &GroupHandle) -> pb::GroupInfo {
    let s = g.settings();
    pb::GroupInfo {
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
            push: s.push.as_ref().map(push_to_pb),
            filter: (!s.filters.is_empty()).then(|| filters_to_pb(&s.filters)),
        }),
        ..Default::default()
    }
}

/// `describe` for the answer to a change that is done: at a broker outside
/// the group's shard (a topic of a smaller replication factor), which
/// cannot report its progress, the settings alone rather than `not_leader`
/// for a change that took effect.
async fn describe_changed(topics: &TopicRegistry, g: &GroupHandle) -> Result<pb::GroupInfo> {
    match describe(topics, g).await {
        Err(Error::NotLeader { .. }) => Ok(settings_info(g)),
        other => other,
    }
}

/// `group_info` for the Admin service: also counts the messages stored now in
/// the group's dead-letter topic (`dead_letters_stored`; `dead_lettered` is
/// the group's running total and does not drop on purge).
pub async fn describe(topics: &TopicRegistry, g: &GroupHandle) -> Result<pb::GroupInfo> {
    let mut info = group_info(g).await?;
    let name = g.settings().dead_letter_topic;
    if !name.is_empty() {
        if let Ok(dlq) = topics.get_or_await(&name).await {
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
    let name = GroupName::parse("name", req.name)?;
    let c = req.config.ok_or_else(|| Error::invalid("config", "a group needs a config naming its topic"))?;
    let (settings, start) = new_settings(&c, config)?;
    let group = groups.create(&name, settings, start, config.topic_defaults()).await?;
    describe_changed(topics, &group).await
}

/// `UpdateGroup`: changes the fields that are set (`max_delivery_attempts = 0`
/// removes a limit); a zero `ack_deadline_ms` or empty `dead_letter_topic` is unset.
pub async fn update(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    config: &BrokerConfig,
    req: pb::UpdateGroupRequest,
) -> Result<pb::GroupInfo> {
    validate::name("name", &req.name)?;
    let c = req.config.ok_or_else(|| Error::invalid("config", "nothing to update; set at least one field"))?;
    validate::optional_name("config.dead_letter_topic", &c.dead_letter_topic)?;
    if !c.topic.is_empty() || c.mode != 0 || c.start != 0 {
        return Err(Error::invalid("config", "topic, mode and start cannot change; create a new group instead"));
    }
    if req.clear_push && c.push.is_some() {
        return Err(Error::invalid("clear_push", "set either config.push or clear_push, not both"));
    }
    // Checked against the deadline the group will have (validate checks again under the lock).
    let deadline = if c.ack_deadline_ms != 0 {
        c.ack_deadline_ms
    } else {
        validate::group(groups, "name", &req.name).await?.settings().ack_deadline_ms
    };
    let push = c.push.as_ref().map(|p| push_settings(p, deadline, config)).transpose()?;
    let filters = c.filter.as_ref().map(filters_from_pb).transpose()?;
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
            if push.is_some() {
                s.push = push;
            } else if req.clear_push {
                s.push = None;
            }
            if let Some(filters) = filters {
                s.filters = filters;
            }
        })
        .await?;
    describe_changed(topics, &group).await
}

/// `SeekGroup`: resolves the target on each partition, then moves the group.
pub async fn seek(topics: &TopicRegistry, groups: &GroupRegistry, req: pb::SeekGroupRequest) -> Result<pb::GroupInfo> {
    use pb::seek_group_request::Target;
    let group = validate::group(groups, "name", &req.name).await?;
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
    let group = validate::group(groups, "group", &req.group).await?;
    let letters = dead_letter_tools::peek(topics, &group, max as usize).await?;
    Ok(pb::PeekDeadLettersResponse {
        records: letters.into_iter().map(|l| record_to_pb(l.partition, l.record)).collect(),
    })
}

/// `RedriveDeadLetters`: see `group::dead_letter_tools::redrive`.
pub async fn redrive(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::RedriveDeadLettersRequest,
) -> Result<pb::RedriveDeadLettersResponse> {
    let group = validate::group(groups, "group", &req.group).await?;
    let target =
        if req.target_topic.is_empty() { None } else { Some(TopicName::parse("target_topic", req.target_topic)?) };
    let plan = Redrive {
        target,
        max_messages: if req.max_messages == 0 { usize::MAX } else { req.max_messages as usize },
        rate_per_second: req.rate_per_second,
        reason_contains: req.reason_contains,
    };
    Ok(pb::RedriveDeadLettersResponse { redriven: dead_letter_tools::redrive(topics, &group, plan).await? })
}

/// `PurgeDeadLetters`.
pub async fn purge(
    topics: &TopicRegistry,
    groups: &GroupRegistry,
    req: pb::PurgeDeadLettersRequest,
) -> Result<pb::PurgeDeadLettersResponse> {
    let group = validate::group(groups, "group", &req.group).await?;
    Ok(pb::PurgeDeadLettersResponse { purged: dead_letter_tools::purge(topics, &group).await? })
}
