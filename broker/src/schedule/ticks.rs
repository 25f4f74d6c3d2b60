//! When a schedule's ticks are: the first after a time, and which are due
//! now. Cron expressions are evaluated by croner in the schedule's time zone
//! (chrono-tz): across a daylight-saving gap a fixed-time tick runs at the
//! first valid time after the gap, and in a repeated hour it runs once, at
//! the earlier instant. Interval ticks are `created + k × every`, k ≥ 1.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::config::{Timing, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
use crate::error::{Error, Result};

/// Most ticks counted between two fired ones; more are reported as this many.
pub const MAX_COUNTED: u64 = 100_000;

/// A schedule's ticks, compiled.
#[derive(Debug, Clone)]
pub enum Ticks {
    /// The times `cron` matches on the wall clock of `zone`.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The wall clock it is read on.
        zone: Tz,
    },
    /// `anchor_ms + k × every_ms`, k ≥ 1.
    Interval {
        /// When the schedule was created.
        anchor_ms: i64,
        /// The interval.
        every_ms: i64,
    },
}

/// The tick due now, and how many earlier ones it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// When the latest due tick was due, ms.
    pub tick_ms: i64,
    /// Ticks due before it since the last fired one (at most [`MAX_COUNTED`]).
    pub earlier: u64,
}

/// `ms` in `zone`, to the whole second below: cron ticks fall on whole
/// seconds, and croner keeps the fraction of the time it starts from.
fn at(ms: i64, zone: Tz) -> Option<DateTime<Tz>> {
    DateTime::<Utc>::from_timestamp_millis(ms.div_euclid(1000) * 1000).map(|t| t.with_timezone(&zone))
}

impl Ticks {
    /// Compiles `timing`; interval ticks count from `anchor_ms`.
    pub fn compile(timing: &Timing, anchor_ms: i64) -> Result<Ticks> {
        match timing {
            Timing::Interval { every_ms } => {
                if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(every_ms) {
                    return Err(Error::invalid(
                        "interval_ms",
                        format!("{every_ms} ms; an interval is {MIN_INTERVAL_MS} ms to {MAX_INTERVAL_MS} ms"),
                    ));
                }
                Ok(Ticks::Interval { anchor_ms, every_ms: *every_ms as i64 })
            }
            Timing::Cron { expression, time_zone } => {
                let cron = Cron::from_str(expression).map_err(|e| {
                    Error::invalid(
                        "cron",
                        format!(
                            "{expression:?}: {e}; write five fields (minute hour day-of-month month day-of-week) or \
                             six with seconds first, e.g. \"0 9 * * MON-FRI\""
                        ),
                    )
                })?;
                let zone = if time_zone.is_empty() { Ok(Tz::UTC) } else { Tz::from_str(time_zone) };
                let zone = zone.map_err(|_| {
                    Error::invalid("time_zone", format!("{time_zone:?} is not an IANA time zone (e.g. Europe/Paris)"))
                })?;
                let ticks = Ticks::Cron { cron: Box::new(cron), zone };
                if ticks.next_after(anchor_ms).is_none() {
                    return Err(Error::invalid("cron", format!("{expression:?} never matches from now on")));
                }
                Ok(ticks)
            }
        }
    }

    /// The first tick strictly after `after_ms`; `None` if there is none.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Ticks::Interval { anchor_ms, every_ms } => {
                let k = if after_ms < *anchor_ms { 1 } else { (after_ms - anchor_ms) / every_ms + 1 };
                anchor_ms.checked_add(k.checked_mul(*every_ms)?)
            }
            Ticks::Cron { cron, zone } => {
                let next = cron.find_next_occurrence(&at(after_ms, *zone)?, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// The latest tick at or before `now_ms` that is after `after_ms`, if
    /// any, with how many ticks in between.
    pub fn due(&self, after_ms: i64, now_ms: i64) -> Option<Due> {
        let first = self.next_after(after_ms)?;
        if first > now_ms {
            return None;
        }
        match self {
            Ticks::Interval { anchor_ms, every_ms } => {
                let latest = anchor_ms + (now_ms - anchor_ms) / every_ms * every_ms;
                Some(Due { tick_ms: latest, earlier: (((latest - first) / every_ms) as u64).min(MAX_COUNTED) })
            }
            Ticks::Cron { cron, zone } => {
                let latest = cron.find_previous_occurrence(&at(now_ms, *zone)?, true).ok()?.timestamp_millis();
                let mut earlier = 0;
                let mut t = first;
                while t < latest && earlier < MAX_COUNTED {
                    earlier += 1;
                    t = self.next_after(t)?;
                }
                Some(Due { tick_ms: latest.max(first), earlier })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).expect("time").timestamp_millis()
    }

    fn cron(expression: &str, zone: &str) -> Ticks {
        let timing = Timing::Cron { expression: expression.into(), time_zone: zone.into() };
        Ticks::compile(&timing, utc("2026-01-01T00:00:00Z")).expect("valid")
    }

    #[test]
    fn intervals_count_from_creation() {
        let t = Ticks::compile(&Timing::Interval { every_ms: 1000 }, 500).expect("valid");
        assert_eq!(t.next_after(0), Some(1500));
        assert_eq!(t.next_after(1500), Some(2500));
        assert_eq!(t.due(500, 1499), None);
        assert_eq!(t.due(500, 1500), Some(Due { tick_ms: 1500, earlier: 0 }));
        assert_eq!(t.due(1500, 5600), Some(Due { tick_ms: 5500, earlier: 3 }), "2500, 3500, 4500 missed");
    }

    #[test]
    fn cron_reads_the_wall_clock_of_its_zone_across_daylight_saving() {
        let nine = cron("0 9 * * *", "Europe/Paris");
        // Winter: UTC+1; summer (from 29 March 2026): UTC+2.
        assert_eq!(nine.next_after(utc("2026-03-01T12:00:00Z")), Some(utc("2026-03-02T08:00:00Z")));
        assert_eq!(nine.next_after(utc("2026-04-01T12:00:00Z")), Some(utc("2026-04-02T07:00:00Z")));
        // 02:30 does not exist on 29 March 2026 in Paris: the tick runs when the clock resumes.
        let gap = cron("30 2 * * *", "Europe/Paris");
        assert_eq!(gap.next_after(utc("2026-03-28T12:00:00Z")), Some(utc("2026-03-29T01:00:00Z")));
        // 02:30 happens twice on 25 October 2026: once, at the first.
        let twice = cron("30 2 * * *", "Europe/Paris");
        let first = twice.next_after(utc("2026-10-24T12:00:00Z")).expect("tick");
        assert_eq!(first, utc("2026-10-25T00:30:00Z"));
        assert_eq!(twice.next_after(first), Some(utc("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn cron_with_seconds_and_missed_ticks() {
        let t = cron("*/10 * * * * *", "UTC");
        let start = utc("2026-05-01T10:00:00Z");
        assert_eq!(t.next_after(start), Some(start + 10_000));
        assert_eq!(t.due(start, start + 9_999), None);
        assert_eq!(t.due(start, start + 45_000), Some(Due { tick_ms: start + 40_000, earlier: 3 }));
        assert_eq!(t.next_after(start + 1_234), Some(start + 10_000), "ticks fall on whole seconds");
        assert_eq!(t.due(start + 10_000, start + 20_999), Some(Due { tick_ms: start + 20_000, earlier: 0 }));
    }

    #[test]
    fn nonsense_is_refused() {
        for (expression, zone, field) in
            [("nope", "UTC", "cron"), ("0 9 * * *", "Nowhere/Else", "time_zone"), ("0 0 31 2 *", "UTC", "cron")]
        {
            let timing = Timing::Cron { expression: expression.into(), time_zone: zone.into() };
            match Ticks::compile(&timing, 0) {
                Err(Error::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{expression}"),
                other => panic!("{expression}: {other:?}"),
            }
        }
    }
}
