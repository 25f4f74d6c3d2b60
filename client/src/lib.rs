//! Rust clients for Sluice: `Admin` for topics, groups and dead letters,
//! `Producer` for batched, retried, idempotent producing of `Message`s,
//! `Consumer` for group consumption with a handler, and `PartitionReader` for
//! reading a partition in order. They depend only on the wire API (`sluice-proto`).
//!
//! The README's "Use it from Rust" section walks through them, and
//! `client/examples/` holds runnable programs (`cargo run --example produce`).

pub mod admin;
pub mod cluster;
pub mod connect;
pub mod consumer;
pub mod error;
pub mod leaders;
pub mod message;
pub mod producer;
pub mod reader;
pub mod retry;

pub use admin::Admin;
pub use cluster::ClusterInfo;
pub use connect::{channel, Channel, ConnectOptions};
pub use consumer::{Consumer, ConsumerConfig, HandlerError, Received};
pub use error::{Error, Result};
pub use leaders::LeaderHint;
pub use message::Message;
pub use producer::{Delivery, PendingDelivery, Producer, ProducerConfig};
pub use reader::{PartitionReader, StartAt};
pub use retry::RetryConfig;
pub use sluice_proto::v1 as proto;
/// Stops `Consumer::run`. Re-exported so users need not depend on
/// `tokio-util` at exactly the version this crate was built with.
pub use tokio_util::sync::CancellationToken;

/// The README's Rust code blocks, compiled as doc tests so the README cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
