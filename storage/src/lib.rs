//! Sluice's durable partition log on RocksDB.
//!
//! Topics are split into partitions; each partition is a dense, append-only
//! sequence of offsets stored as CRC-protected record batches (`record`) keyed
//! by partition and base offset, indexed by segments (`segment`) that roll by
//! size and age and that retention deletes whole.
//!
//! The API a broker uses: `Store` (open or open in memory, recover, topic
//! metadata writes, poisoning), `PartitionLog` (append, rewind, trim, clear;
//! the contract is in its module docs) with its read half `PartitionReader`,
//! `group` (consumer-group state as writes), and the group-commit `writer`
//! that commits every `AtomicWrite`. Keys and column families are private:
//! the engine underneath (`engine`: RocksDB, or the in-memory twin used by
//! the contract suite and model checks) is nobody else's business.
//!
//! This crate knows nothing of gRPC, consumer groups' meaning or acknowledgements.

pub mod acl;
#[cfg(test)]
mod decode_fuzz;
pub mod disk_space;
mod engine;
pub mod error;
pub mod failpoints;
pub mod group;
mod ids;
mod keys;
pub mod log;
pub mod metric_names;
mod offset;
pub mod producer;
pub mod raft;
pub mod record;
pub mod schedule;
pub mod segment;
pub mod store;
pub mod topic;
pub mod writer;

pub use disk_space::DiskSpace;
pub use engine::memory::MemoryDisk;
pub use engine::{AtomicWrite, StorageStats};
pub use error::{Error, Result};
pub use group::{GroupCursor, MessageState, RecoveredGroupState};
pub use ids::{PartitionId, TopicId};
pub use log::{Append, PartitionLog, PartitionReader, ProducerSeq, Trim};
pub use offset::OffsetRange;
pub use record::{RecordRef, StoredRecord};
pub use segment::SegmentMeta;
pub use store::{now_ms, Reclaim, Recovered, Store, StoreConfig};
pub use topic::{Durability, InvalidTopicConfig, TopicConfig, TopicMeta, MAX_MESSAGE_BYTES};
pub use writer::{spawn_writer, WriteRequest, WriterConfig, WriterHandle};
