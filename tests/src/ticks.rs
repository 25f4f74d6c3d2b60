//! Reading a schedule's events back: each record's tick number (from its
//! CloudEvents id `<schedule id>-<n>`), due time (`time`) and the ticks it
//! stands for (`missedticks`), and the check that they are exactly one event
//! per fired tick.

use anyhow::{ensure, Context};
use sluice_proto::v1::Record;

/// One fired tick as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The tick number (1 for the first fired).
    pub n: u64,
    /// When it was due, ms.
    pub due_ms: i64,
    /// Earlier ticks it stands for.
    pub missed: u64,
}

fn header<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// The ticks of schedule `schedule_id` in `records`, in stored order.
pub fn ticks(records: &[Record], schedule_id: u64) -> anyhow::Result<Vec<Tick>> {
    let prefix = format!("{schedule_id}-");
    let mut out = Vec::new();
    for r in records {
        let id = header(r, "ce_id").context("a tick event without ce_id")?;
        let Some(n) = id.strip_prefix(&prefix) else { continue };
        let time = header(r, "ce_time").context("a tick event without ce_time")?;
        let due_ms = chrono::DateTime::parse_from_rfc3339(time).context("ce_time")?.timestamp_millis();
        let missed = header(r, "ce_missedticks").map_or(Ok(0), str::parse).context("ce_missedticks")?;
        out.push(Tick { n: n.parse().context("tick number")?, due_ms, missed });
    }
    Ok(out)
}

/// Checks that `ticks` of an interval schedule are exactly once per fired
/// tick: numbered 1, 2, 3… with no repeat and no gap, each due on the
/// interval's grid, and each one interval after the previous plus the ticks
/// it says it stands for (`fire-once`).
pub fn check_exactly_once(ticks: &[Tick], created_ms: i64, every_ms: i64) -> anyhow::Result<()> {
    for (i, t) in ticks.iter().enumerate() {
        ensure!(t.n == i as u64 + 1, "tick {} stored at position {i}: a repeat or a gap in {ticks:?}", t.n);
        ensure!((t.due_ms - created_ms) % every_ms == 0, "tick {t:?} is off the {every_ms} ms grid from {created_ms}");
        if i > 0 {
            let gap = t.due_ms - ticks[i - 1].due_ms;
            ensure!(
                gap == (t.missed as i64 + 1) * every_ms,
                "tick {t:?} follows {:?} by {gap} ms but stands for {} missed ticks",
                ticks[i - 1],
                t.missed
            );
        } else {
            ensure!(
                t.due_ms == created_ms + (t.missed as i64 + 1) * every_ms,
                "the first tick {t:?} is not the first due after creation at {created_ms}"
            );
        }
    }
    Ok(())
}
