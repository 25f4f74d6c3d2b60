//! A schedule's definition: when it ticks (a cron expression in a time
//! zone, or a fixed interval), what it does with ticks it missed, and the
//! event each tick produces to its topic. Checked once, when it is created;
//! stored as JSON (a single broker's metadata, or the cluster catalog).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::ticks::Ticks;
use crate::error::{Error, Result};

/// Shortest interval between ticks: each tick is two durable writes.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Longest interval between ticks (a year and a day).
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3600 * 1000;
/// Largest event data a schedule carries.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// The `type` of a tick's event unless the schedule names one.
pub const DEFAULT_EVENT_TYPE: &str = "dev.sluice.schedule.tick";
/// Attributes a schedule's event sets itself (or from its own fields).
const RESERVED_ATTRIBUTES: [&str; 9] =
    ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "partitionkey", "missedticks"];

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Timing {
    /// At the times a cron expression matches, read in a time zone.
    Cron {
        /// Five fields (minute hour day-of-month month day-of-week) or six
        /// (seconds first), as Vixie cron with croner's extensions.
        expression: String,
        /// An IANA time zone name (`Europe/Paris`); the expression's wall
        /// clock. Daylight-saving changes follow the zone.
        time_zone: String,
    },
    /// Every `every_ms` after the schedule was created.
    Interval {
        /// The interval, ms.
        every_ms: u64,
    },
}

/// What a schedule does with ticks that came due while it was not running
/// (every broker down, or the metadata leadership moving).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedTicks {
    /// One event for all of them, for the latest, carrying how many earlier
    /// ticks it stands for (`missedticks`).
    #[default]
    FireOnce,
    /// None: the schedule goes on with the first tick after it runs again.
    Skip,
}

/// The event each tick produces (its `id` and `time` come from the tick).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EventTemplate {
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// CloudEvents `source`; empty: `/sluice/schedules/<name>`.
    #[serde(default)]
    pub source: String,
    /// CloudEvents `subject`; empty: none.
    #[serde(default)]
    pub subject: String,
    /// The event's data.
    #[serde(default, with = "base64_bytes")]
    pub data: Vec<u8>,
    /// Its `datacontenttype`; empty: none.
    #[serde(default)]
    pub content_type: String,
    /// Extension attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Routes every tick to one partition (the `partitionkey` extension);
    /// empty: the schedule's name does.
    #[serde(default)]
    pub partition_key: String,
}

/// A schedule's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleConfig {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its id: a schedule made again under the same name is another one.
    #[serde(default)]
    pub id: u64,
    /// When it was created, ms; interval ticks count from here.
    #[serde(default)]
    pub created_ms: i64,
    /// Where its events go.
    pub topic: String,
    /// When it ticks.
    pub timing: Timing,
    /// What it does with missed ticks.
    #[serde(default)]
    pub missed: MissedTicks,
    /// What each tick produces.
    pub event: EventTemplate,
}

impl ScheduleConfig {
    /// Checks everything a client set, and fills the event's defaults.
    pub fn check(&mut self) -> Result<()> {
        Ticks::compile(&self.timing, self.created_ms)?;
        if self.event.kind.is_empty() {
            self.event.kind = DEFAULT_EVENT_TYPE.to_owned();
        }
        if self.event.source.is_empty() {
            self.event.source = format!("/sluice/schedules/{}", self.name);
        }
        if self.event.data.len() > MAX_DATA_BYTES {
            return Err(Error::invalid(
                "event.data",
                format!("{} bytes; a schedule's event carries at most {MAX_DATA_BYTES}", self.event.data.len()),
            ));
        }
        for name in self.event.attributes.keys() {
            let valid = !name.is_empty()
                && name.len() <= 20
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !valid {
                return Err(Error::invalid(
                    "event.attributes",
                    format!("{name:?}: attribute names are 1 to 20 lower-case letters or digits"),
                ));
            }
            if RESERVED_ATTRIBUTES.contains(&name.as_str()) {
                return Err(Error::invalid(
                    "event.attributes",
                    format!("{name:?} is set by the schedule itself (use its own field where there is one)"),
                ));
            }
        }
        Ok(())
    }

    /// The partition key of every tick's event.
    pub fn partition_key(&self) -> &str {
        if self.event.partition_key.is_empty() {
            &self.name
        } else {
            &self.event.partition_key
        }
    }
}

/// Bytes as base64 text in JSON.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(ms: u64) -> ScheduleConfig {
        ScheduleConfig {
            name: "s".into(),
            id: 7,
            created_ms: 1_000,
            topic: "t".into(),
            timing: Timing::Interval { every_ms: ms },
            missed: MissedTicks::FireOnce,
            event: EventTemplate { data: b"\x00hi".to_vec(), ..EventTemplate::default() },
        }
    }

    #[test]
    fn defaults_are_filled_and_the_definition_round_trips() {
        let mut c = every(1000);
        c.check().expect("valid");
        assert_eq!((c.event.kind.as_str(), c.event.source.as_str()), (DEFAULT_EVENT_TYPE, "/sluice/schedules/s"));
        let json = serde_json::to_value(&c).expect("encode");
        assert_eq!(serde_json::from_value::<ScheduleConfig>(json).expect("decode"), c);
        assert_eq!(c.partition_key(), "s");
    }

    #[test]
    fn bad_definitions_are_refused_with_the_field() {
        let field = |c: &mut ScheduleConfig| match c.check() {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&mut every(10)), "interval_ms");
        let mut c = every(1000);
        c.event.attributes.insert("id".into(), "x".into());
        assert_eq!(field(&mut c), "event.attributes");
        let mut c = every(1000);
        c.event.attributes.insert("Bad-Name".into(), "x".into());
        assert_eq!(field(&mut c), "event.attributes");
        let mut c = every(1000);
        c.event.data = vec![0; MAX_DATA_BYTES + 1];
        assert_eq!(field(&mut c), "event.data");
        let mut c = every(1000);
        c.timing = Timing::Cron { expression: "61 * * * *".into(), time_zone: "UTC".into() };
        assert_eq!(field(&mut c), "cron");
        c.timing = Timing::Cron { expression: "0 9 * * *".into(), time_zone: "Mars/Olympus".into() };
        assert_eq!(field(&mut c), "time_zone");
    }
}
