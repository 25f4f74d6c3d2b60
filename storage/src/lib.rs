//! Sluice's durable partition log on RocksDB.
//!
//! Topics are split into partitions; each partition is a dense, append-only
//! sequence of offsets stored as CRC-protected record batches (`record`) keyed
//! by partition and base offset (`keys`), indexed by segments (`segment`) that
//! roll by size and age and that retention deletes whole. `PartitionLog` keeps
//! a partition's tail in memory and turns appends into mutations; the single
//! writer (`writer`) commits them in groups; `Store` opens, recovers and reads.
//!
//! This crate knows nothing of gRPC, consumer groups or acknowledgements.

#[cfg(test)]
mod decode_fuzz;
pub mod disk_space;
pub mod error;
pub mod group;
pub mod keys;
pub mod log;
pub mod producer;
pub mod record;
pub mod segment;
pub mod store;
pub mod topic;
pub mod writer;

pub use disk_space::DiskSpace;
pub use error::{Error, Result};
pub use group::{GroupCursor, MessageState, RecoveredGroupState};
pub use log::{Append, PartitionLog, ProducerSeq, Trim};
pub use record::{RecordRef, StoredRecord};
pub use segment::SegmentMeta;
pub use store::{now_ms, Cf, Mutation, Recovered, StorageStats, Store, StoreOptions};
pub use topic::{Durability, TopicMeta, TopicSettings};
pub use writer::{spawn_writer, WriteRequest, WriterConfig, WriterHandle};
