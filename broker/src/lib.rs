//! The Sluice broker: configuration, gRPC services, topic registry and
//! partition actors over `sluice-storage`. `run` is the whole broker; the
//! binary only parses flags, sets up logging and signals, and calls it.

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery_time;
pub mod error;
pub mod event;
pub mod group;
pub mod grpc;
pub mod health_check;
pub mod http;
pub mod metrics;
pub mod name;
pub mod partition;
pub mod push;
pub mod reload;
pub mod schedule;
pub mod server;
pub mod tls;
pub mod topic;

pub use config::BrokerConfig;
pub use error::{Error, Result};
pub use server::{run, ServeError};
