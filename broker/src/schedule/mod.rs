//! Scheduled events: schedules (a cron expression in a time zone, or an
//! interval) that produce one CloudEvent to a topic at each tick, exactly
//! once per tick across restarts and metadata-leader changes, with a stated
//! policy for ticks missed while no broker ran them (`docs/EVENTS.md`).
//!
//! - [`config`]: the definition and its checks;
//! - [`ticks`]: when ticks are due (croner, chrono-tz);
//! - [`tick_event`]: the event a tick produces;
//! - [`registry`]: where schedules and their progress live (a single
//!   broker's metadata, or the cluster catalog);
//! - [`runner`]: fires them.

pub mod config;
pub mod registry;
pub mod runner;
pub mod tick_event;
pub mod ticks;

pub use config::{EventTemplate, MissedTicks, ScheduleConfig, Timing};
pub use registry::{Schedule, ScheduleRegistry};
