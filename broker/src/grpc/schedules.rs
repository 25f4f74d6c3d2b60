//! The schedule half of `sluice.v1.Admin`: create, list, describe, delete,
//! translated to and from `schedule::ScheduleConfig`.

use sluice_proto::v1 as pb;
use sluice_storage::now_ms;

use crate::error::{Error, Result};
use crate::schedule::ticks::Ticks;
use crate::schedule::{EventTemplate, MissedTicks, Schedule, ScheduleConfig, ScheduleRegistry, Timing};

/// The definition a CreateSchedule request names.
fn config_of(name: String, c: pb::ScheduleConfig) -> Result<ScheduleConfig> {
    let timing = match (c.cron.is_empty(), c.interval_ms) {
        (false, 0) => Timing::Cron { expression: c.cron, time_zone: c.time_zone },
        (true, every_ms) if every_ms > 0 => {
            if !c.time_zone.is_empty() {
                return Err(Error::invalid("time_zone", "applies to cron schedules only; an interval needs none"));
            }
            Timing::Interval { every_ms }
        }
        (false, _) => return Err(Error::invalid("cron", "set cron or interval_ms, not both")),
        (true, _) => {
            return Err(Error::invalid("cron", "a schedule needs cron (with an optional time_zone) or interval_ms"))
        }
    };
    let missed = match pb::MissedTicks::try_from(c.missed_ticks) {
        Ok(pb::MissedTicks::Unspecified | pb::MissedTicks::FireOnce) => MissedTicks::FireOnce,
        Ok(pb::MissedTicks::Skip) => MissedTicks::Skip,
        Err(_) => return Err(Error::invalid("missed_ticks", format!("{} is not a MissedTicks value", c.missed_ticks))),
    };
    let e = c.event.unwrap_or_default();
    Ok(ScheduleConfig {
        name,
        id: 0,
        created_ms: 0,
        topic: c.topic,
        timing,
        missed,
        event: EventTemplate {
            kind: e.r#type,
            source: e.source,
            subject: e.subject,
            data: e.data.to_vec(),
            content_type: e.data_content_type,
            attributes: e.attributes.into_iter().collect(),
            partition_key: e.partition_key,
        },
    })
}

/// A schedule as the API shows it; `last_error` as this broker's runner saw it.
fn info(s: &Schedule, last_error: Option<String>) -> pb::ScheduleInfo {
    let c = &s.config;
    let (cron, time_zone, interval_ms) = match &c.timing {
        Timing::Cron { expression, time_zone } => (expression.clone(), time_zone.clone(), 0),
        Timing::Interval { every_ms } => (String::new(), String::new(), *every_ms),
    };
    let after = if s.progress.fired > 0 { s.progress.tick_ms } else { c.created_ms };
    let next_tick_ms =
        Ticks::compile(&c.timing, c.created_ms).ok().and_then(|t| t.next_after(after.max(now_ms() - 1))).unwrap_or(0);
    pb::ScheduleInfo {
        name: c.name.clone(),
        config: Some(pb::ScheduleConfig {
            topic: c.topic.clone(),
            cron,
            time_zone,
            interval_ms,
            missed_ticks: match c.missed {
                MissedTicks::FireOnce => pb::MissedTicks::FireOnce,
                MissedTicks::Skip => pb::MissedTicks::Skip,
            } as i32,
            event: Some(pb::ScheduleEvent {
                r#type: c.event.kind.clone(),
                source: c.event.source.clone(),
                subject: c.event.subject.clone(),
                data: c.event.data.clone().into(),
                data_content_type: c.event.content_type.clone(),
                attributes: c.event.attributes.clone().into_iter().collect(),
                partition_key: c.event.partition_key.clone(),
            }),
        }),
        id: c.id,
        created_ms: c.created_ms,
        ticks_fired: s.progress.fired,
        last_tick_ms: s.progress.tick_ms,
        next_tick_ms,
        last_error: last_error.unwrap_or_default(),
    }
}

/// Creates a schedule.
pub async fn create(registry: &ScheduleRegistry, req: pb::CreateScheduleRequest) -> Result<pb::ScheduleInfo> {
    let config = req.config.ok_or_else(|| Error::invalid("config", "a schedule needs a config (topic and timing)"))?;
    let created = registry.create(config_of(req.name, config)?).await?;
    Ok(info(&created, None))
}

/// Every schedule `visible` keeps.
pub fn list(registry: &ScheduleRegistry, visible: impl Fn(&str) -> bool) -> pb::ListSchedulesResponse {
    let schedules = registry
        .list()
        .iter()
        .filter(|s| visible(&s.config.name))
        .map(|s| info(s, registry.failure(&s.config.name)))
        .collect();
    pb::ListSchedulesResponse { schedules }
}

/// One schedule.
pub fn describe(registry: &ScheduleRegistry, name: &str) -> Result<pb::ScheduleInfo> {
    let s = registry.get(name)?;
    Ok(info(&s, registry.failure(name)))
}
