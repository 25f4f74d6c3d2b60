//! Replication for a Sluice cluster: Raft groups run by openraft (pinned at
//! `=0.10.0-alpha.37`) over the broker's own store and writer, so every group
//! on a broker shares the one group commit and fsync of the single broker.
//!
//! Every openraft type stays inside this crate (`docs/REPLICATION.md`): the
//! broker sees Sluice's own commands, responses and catalog, so an openraft
//! upgrade touches only here.
//!
//! What exists (step 1 of the plan in `docs/REPLICATION.md`, in progress):
//! - [`log_store`]: a Raft log over the store's `raft` column family, for any
//!   group whose entries are small (the metadata group);
//! - [`meta`]: the metadata group's commands and state machine (the cluster
//!   catalog: brokers and topics, ids allocated by applying entries);
//! - [`network`]: the internal gRPC service carrying Raft RPCs between
//!   brokers, and its client side;
//! - [`node`]: [`MetaNode`], a broker's peer in the metadata group.
//!
//! Both pass openraft's own storage test suite over RocksDB and the
//! in-memory engine (`suite_test.rs`).

mod codec;
pub mod fence;
pub mod log_store;
pub mod membership;
pub mod meta;
pub mod network;
pub mod node;
pub mod secret;
pub mod shard;
#[cfg(test)]
mod suite_test;

pub use fence::Fence;
pub use log_store::LogStore;
pub use membership::{ReplaceError, ReplaceProgress, ReplaceStage, Replacement};
pub use meta::{Catalog, CatalogTopic, MetaCommand, MetaResponse, MetaStateMachine};
pub use network::{Connect, Peers, RaftService};
pub use node::{ClusterConfig, GroupReport, MetaNode, ProposeError};
pub use shard::{
    BatchCommand, GroupChange, LeadershipWatch, PendingWrite, ShardCommand, ShardHost, ShardLease, ShardNode,
    ShardProposeError, ShardResponse, ShardStart,
};
