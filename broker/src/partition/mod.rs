//! Partitions: one actor task per partition owns its tail (`PartitionLog`) and
//! assigns offsets; `PartitionHandle` is the cloneable way to reach it and to
//! read what it has committed.

mod actor;
mod handle;

pub use actor::{spawn_partition, PartitionContext};
pub use handle::{AppendResult, PartitionHandle, PartitionSnapshot};
