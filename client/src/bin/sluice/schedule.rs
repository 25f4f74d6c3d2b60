//! `sluice schedule create|list|describe|delete`: schedules that produce an
//! event to a topic at each tick (cron with a time zone, or an interval).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sluice_client::proto as pb;
use sluice_client::Admin;

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule (--cron with --time-zone, or --every).
    Create(Box<CreateArgs>),
    /// List schedules with how far each has fired and when it ticks next.
    List,
    /// Show one schedule.
    Describe { name: String },
    /// Delete a schedule: it fires no more.
    Delete { name: String },
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// The topic the events go to.
    #[arg(long)]
    topic: String,
    /// A cron expression: five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    cron: Option<String>,
    /// The IANA time zone the cron expression reads, e.g. Europe/Paris [default: UTC].
    #[arg(long, requires = "cron")]
    time_zone: Option<String>,
    /// An interval instead: `500ms`, `30s`, `5m`, `2h`, `1d`.
    #[arg(long)]
    every: Option<String>,
    /// Ticks missed while no broker ran the schedule: `fire-once` (one event for all) or `skip`.
    #[arg(long, default_value = "fire-once")]
    missed: String,
    /// The events' `type` [default: dev.sluice.schedule.tick].
    #[arg(long = "type")]
    kind: Option<String>,
    /// The events' `source` [default: /sluice/schedules/NAME].
    #[arg(long)]
    source: Option<String>,
    /// The events' `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// The events' data, as text.
    #[arg(long)]
    data: Option<String>,
    /// `datacontenttype` [default: application/json when the data parses as JSON, else text/plain].
    #[arg(long)]
    content_type: Option<String>,
    /// Every tick goes to this key's partition [default: the schedule's name].
    #[arg(long)]
    partition_key: Option<String>,
    /// More attributes, `name=value` (repeatable).
    #[arg(long = "attr")]
    attrs: Vec<String>,
}

/// `500ms`, `30s`, `5m`, `2h`, `1d` (or plain milliseconds) in ms.
fn millis(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().with_context(|| format!("{text:?} is not a duration like 30s, 5m or 1h"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => bail!("unknown unit {other:?} in {text:?}: use ms, s, m, h or d"),
    };
    n.checked_mul(scale).with_context(|| format!("{text:?} is too long"))
}

fn config(args: CreateArgs) -> anyhow::Result<pb::ScheduleConfig> {
    let missed = match args.missed.as_str() {
        "fire-once" => pb::MissedTicks::FireOnce,
        "skip" => pb::MissedTicks::Skip,
        other => bail!("--missed {other:?}: use fire-once or skip"),
    };
    let data = args.data.unwrap_or_default().into_bytes();
    let json = serde_json::from_slice::<Value>(&data).is_ok();
    let content_type = args
        .content_type
        .or_else(|| (!data.is_empty()).then(|| if json { "application/json" } else { "text/plain" }.to_owned()));
    let mut attributes = std::collections::HashMap::new();
    for a in &args.attrs {
        let (k, v) = a.split_once('=').with_context(|| format!("--attr {a:?}: write name=value"))?;
        attributes.insert(k.to_owned(), v.to_owned());
    }
    Ok(pb::ScheduleConfig {
        topic: args.topic,
        cron: args.cron.unwrap_or_default(),
        time_zone: args.time_zone.unwrap_or_default(),
        interval_ms: args.every.as_deref().map(millis).transpose()?.unwrap_or(0),
        missed_ticks: missed as i32,
        event: Some(pb::ScheduleEvent {
            r#type: args.kind.unwrap_or_default(),
            source: args.source.unwrap_or_default(),
            subject: args.subject.unwrap_or_default(),
            data: data.into(),
            data_content_type: content_type.unwrap_or_default(),
            attributes,
            partition_key: args.partition_key.unwrap_or_default(),
        }),
    })
}

fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// A schedule as `--output json` prints it.
pub fn to_json(s: &pb::ScheduleInfo) -> Value {
    let c = s.config.clone().unwrap_or_default();
    let e = c.event.clone().unwrap_or_default();
    json!({
        "name": s.name, "id": s.id, "topic": c.topic, "created_ms": s.created_ms,
        "cron": (!c.cron.is_empty()).then_some(&c.cron),
        "time_zone": (!c.cron.is_empty()).then_some(if c.time_zone.is_empty() { "UTC" } else { c.time_zone.as_str() }),
        "interval_ms": (c.interval_ms > 0).then_some(c.interval_ms),
        "missed_ticks": if c.missed_ticks == pb::MissedTicks::Skip as i32 { "skip" } else { "fire-once" },
        "event": {
            "type": e.r#type, "source": e.source, "subject": e.subject, "datacontenttype": e.data_content_type,
            "data": String::from_utf8_lossy(&e.data), "attributes": e.attributes, "partition_key": e.partition_key,
        },
        "ticks_fired": s.ticks_fired, "last_tick_ms": s.last_tick_ms, "next_tick_ms": s.next_tick_ms,
        "last_error": (!s.last_error.is_empty()).then_some(&s.last_error),
    })
}

fn when(s: &pb::ScheduleInfo) -> String {
    let c = s.config.clone().unwrap_or_default();
    if c.cron.is_empty() {
        format!("every {} ms", c.interval_ms)
    } else {
        format!("cron {:?} {}", c.cron, if c.time_zone.is_empty() { "UTC" } else { c.time_zone.as_str() })
    }
}

/// Runs `sluice schedule …`.
pub async fn run(admin: Admin, cmd: ScheduleCommand, format: super::Format) -> anyhow::Result<()> {
    let json = format == super::Format::Json;
    match cmd {
        ScheduleCommand::Create(args) => {
            let name = args.name.clone();
            let created = admin.create_schedule(&name, config(*args)?).await?;
            if json {
                super::output::print(to_json(&created))?;
            } else {
                outln!("created schedule {name} ({}), next tick {}", when(&created), time(created.next_tick_ms))?;
            }
        }
        ScheduleCommand::List => {
            let all = admin.list_schedules().await?;
            if json {
                super::output::print(Value::Array(all.iter().map(to_json).collect()))?;
            } else {
                outln!("NAME\tTOPIC\tWHEN\tFIRED\tLAST TICK\tNEXT TICK\tLAST ERROR")?;
                for s in &all {
                    let topic = s.config.as_ref().map_or("", |c| c.topic.as_str());
                    outln!(
                        "{}\t{topic}\t{}\t{}\t{}\t{}\t{}",
                        s.name,
                        when(s),
                        s.ticks_fired,
                        time(s.last_tick_ms),
                        time(s.next_tick_ms),
                        if s.last_error.is_empty() { "-" } else { &s.last_error }
                    )?;
                }
            }
        }
        ScheduleCommand::Describe { name } => {
            let s = admin.describe_schedule(&name).await?;
            if json {
                super::output::print(to_json(&s))?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&to_json(&s))?)?;
            }
        }
        ScheduleCommand::Delete { name } => {
            admin.delete_schedule(&name).await?;
            outln!("deleted schedule {name}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(millis("500ms").expect("ms"), 500);
        assert_eq!(millis("30s").expect("s"), 30_000);
        assert_eq!(millis("5m").expect("m"), 300_000);
        assert_eq!(millis("1d").expect("d"), 86_400_000);
        assert_eq!(millis("250").expect("plain"), 250);
        assert!(millis("5 parsecs").is_err());
        assert!(millis("s").is_err());
    }
}
