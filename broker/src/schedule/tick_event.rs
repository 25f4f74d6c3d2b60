//! The event a tick produces: a CloudEvent stored per the Kafka binding like
//! every other event, built only from the schedule's definition and the
//! tick's progress record, so a tick sent again after a crash is the same
//! event byte for byte (and the idempotent produce recognises it).

use bytes::Bytes;
use sluice_proto::v1::Message;
use sluice_storage::schedule::ScheduleProgress;

use super::config::ScheduleConfig;
use crate::error::Result;

/// The event id of the tick `fired` of schedule `id`: unique per source, also
/// across a schedule deleted and made again under the same name.
pub fn event_id(schedule_id: u64, fired: u64) -> String {
    format!("{schedule_id}-{fired}")
}

/// The message that stores `progress`'s tick of `config`.
pub fn tick_message(config: &ScheduleConfig, progress: &ScheduleProgress) -> Result<Message> {
    let event = &config.event;
    let time = chrono::DateTime::from_timestamp_millis(progress.tick_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let mut attributes = vec![
        ("specversion".to_owned(), "1.0".to_owned()),
        ("id".to_owned(), event_id(config.id, progress.fired)),
        ("source".to_owned(), event.source.clone()),
        ("type".to_owned(), event.kind.clone()),
        ("time".to_owned(), time),
        ("partitionkey".to_owned(), config.partition_key().to_owned()),
    ];
    if !event.subject.is_empty() {
        attributes.push(("subject".to_owned(), event.subject.clone()));
    }
    if progress.missed > 0 {
        attributes.push(("missedticks".to_owned(), progress.missed.to_string()));
    }
    attributes.extend(event.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
    let content_type = (!event.content_type.is_empty()).then(|| event.content_type.clone());
    crate::event::stored_message(attributes, content_type, Bytes::from(event.data.clone()), "the schedule's event")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::config::{EventTemplate, MissedTicks, Timing};

    #[test]
    fn a_tick_is_the_same_event_every_time_it_is_built() {
        let mut config = ScheduleConfig {
            name: "nightly".into(),
            id: 42,
            created_ms: 0,
            topic: "jobs".into(),
            timing: Timing::Interval { every_ms: 1000 },
            missed: MissedTicks::FireOnce,
            event: EventTemplate {
                data: br#"{"job":"report"}"#.to_vec(),
                content_type: "application/json".into(),
                attributes: [("team".to_owned(), "ops".to_owned())].into(),
                ..EventTemplate::default()
            },
        };
        config.check().expect("valid");
        let progress = ScheduleProgress { fired: 3, tick_ms: 1_700_000_000_000, missed: 2 };
        let m = tick_message(&config, &progress).expect("event");
        assert_eq!(m, tick_message(&config, &progress).expect("event"));
        let header =
            |k: &str| m.headers.iter().find(|h| h.key == k).map(|h| String::from_utf8_lossy(&h.value).into_owned());
        assert_eq!(header("ce_id").as_deref(), Some("42-3"));
        assert_eq!(header("ce_source").as_deref(), Some("/sluice/schedules/nightly"));
        assert_eq!(header("ce_time").as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(header("ce_missedticks").as_deref(), Some("2"));
        assert_eq!(header("ce_team").as_deref(), Some("ops"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(m.key.as_deref(), Some(&b"nightly"[..]));
    }
}
