//! Schedules on a single broker: each schedule's definition (opaque to
//! storage, as the broker encodes it) and its progress — the last tick it
//! committed to fire — under its name in the metadata column family.
//!
//! # Correctness
//! The progress is written before the tick's event is produced and only
//! moves forward, so after a crash the broker knows the last tick it may
//! have fired and re-sends exactly that one (an idempotent produce, answered
//! as a duplicate if it was stored) before it fires the next.

use serde::{Deserialize, Serialize};

use crate::engine::{Cf, Mutation};
use crate::keys::{self, TAG_SCHEDULE};
use crate::AtomicWrite;

/// How far a schedule has fired: the tick it last committed to fire. In a
/// cluster the metadata catalog stores the same record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleProgress {
    /// Ticks fired so far; also the idempotent sequence of the last tick's
    /// event (0: none fired).
    pub fired: u64,
    /// When the last fired tick was due, ms since the epoch (0: none fired).
    pub tick_ms: i64,
    /// How many earlier ticks, missed while the schedule was not running,
    /// the last fired event stands for.
    pub missed: u64,
}

/// A schedule as a single broker stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoredSchedule {
    /// The broker's encoding of the definition.
    pub definition: serde_json::Value,
    /// How far it has fired.
    pub progress: ScheduleProgress,
}

/// The write that stores schedule `name` (its definition and progress).
pub fn put_schedule(name: &str, schedule: &StoredSchedule) -> crate::Result<AtomicWrite> {
    let bytes = serde_json::to_vec(schedule)
        .map_err(|source| crate::Error::EncodeSchedule { schedule: name.to_owned(), source })?;
    Ok(AtomicWrite::from(vec![Mutation::Put(Cf::Meta, keys::named_key(TAG_SCHEDULE, name), bytes)]))
}

/// The write that removes schedule `name`.
pub fn delete_schedule(name: &str) -> AtomicWrite {
    AtomicWrite::from(vec![Mutation::Delete(Cf::Meta, keys::named_key(TAG_SCHEDULE, name))])
}
