//! Partitions: on a single broker one actor task per partition owns its tail
//! (`PartitionLog`) and assigns offsets; in a cluster the partition's shard
//! does (`replicated`). `PartitionHandle` is the cloneable way to append to
//! either and to read what is committed.

mod actor;
pub(crate) mod forward;
mod handle;
pub mod replicated;
mod retention;

pub use actor::{spawn_partition, PartitionContext};
pub use handle::{AppendResult, PartitionHandle, PartitionSnapshot};
pub use replicated::{ReplicatedPartitions, Watermarks};
