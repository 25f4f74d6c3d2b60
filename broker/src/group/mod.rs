//! Consumer groups: named subscriptions on a topic with per-message acks,
//! leases, durable redelivery with backoff, dead-letter topics, and shared or
//! ordered delivery. One actor per group owns its `GroupState`.

mod actor;
mod cluster;
pub mod config;
mod dead_letter;
pub mod dead_letter_tools;
pub mod filter;
#[cfg(test)]
mod model_check;
mod persistence;
mod read_ahead;
mod registry;
mod replicated;
mod report;
pub mod state;
mod subscription;

pub use actor::{AckId, Delivered, GroupHandle, GroupSnapshot};
pub use config::{BackoffConfig, GroupConfig, GroupMode, PushConfig};
pub use registry::{GroupContext, GroupRegistry, StartAt};
pub use report::{report, GroupReport, PartitionReport};
pub use subscription::{Subscription, MAX_CREDITS};
