//! The storage error type. Every variant says whether a retry can help.

use std::path::PathBuf;

use crate::PartitionId;

/// What can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stored batch failed its CRC or structure check: data was damaged on disk.
    #[error("corrupted batch in {partition} at offset {offset}: {reason}")]
    Corruption {
        /// The partition.
        partition: PartitionId,
        /// Base offset of the damaged batch, or the offset being read.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A metadata entry could not be decoded.
    #[error("corrupted metadata entry {key:?}: {reason}")]
    MetaCorruption {
        /// The raw key of the entry.
        key: Vec<u8>,
        /// What check failed.
        reason: String,
    },
    /// RocksDB refused an operation.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A previous write or fsync failed; the store refuses writes until restarted.
    #[error("storage is poisoned by an earlier failed write; restart the broker")]
    Poisoned,
    /// The disk is full: the write was not applied.
    #[error("no space left on the data volume: free space, then retry")]
    NoSpace,
    /// The data volume's free space is below the configured reserve: new data is refused.
    #[error(
        "data volume has {free} bytes free, below the reserve of {min_free} bytes (--min-free-disk-bytes): \
         produce is refused until space is freed; reads and acks continue"
    )]
    LowDiskSpace {
        /// Free bytes now.
        free: u64,
        /// The configured reserve.
        min_free: u64,
    },
    /// The writer has stopped (shutdown in progress).
    #[error("storage writer stopped (broker shutting down)")]
    WriterStopped,
    /// The data directory could not be prepared.
    #[error("data directory {path:?}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A producer sent a sequence that is neither the next one nor a recent duplicate.
    #[error("producer {producer_id} sent sequence {got}, expected {expected}; restart the producer with a new id")]
    OutOfOrderSequence {
        /// The producer id.
        producer_id: u64,
        /// The sequence received.
        got: u64,
        /// The sequence the log expected next.
        expected: u64,
    },
    /// The blocking task running a read panicked or was cancelled (shutdown).
    #[error("storage read task failed: {0}")]
    ReadTask(#[source] tokio::task::JoinError),
    /// An I/O operation outside the engine failed (or a failpoint injected a fault).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A topic's metadata could not be encoded.
    #[error("encoding the metadata of topic `{topic}`: {source}")]
    EncodeTopic {
        /// The topic.
        topic: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A schedule could not be encoded.
    #[error("encoding schedule `{schedule}`: {source}")]
    EncodeSchedule {
        /// The schedule.
        schedule: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A rewind asked for an offset the log cannot rewind to.
    #[error(
        "cannot rewind {partition} to offset {offset}: {reason} \
         (stored offsets are [{log_start}, {next_offset}))"
    )]
    BadRewind {
        /// The partition.
        partition: PartitionId,
        /// The requested offset.
        offset: u64,
        /// First stored offset.
        log_start: u64,
        /// Next offset to be assigned.
        next_offset: u64,
        /// Why not.
        reason: &'static str,
    },
    /// A batch copied from another replica does not continue this log.
    #[error("cannot copy a batch into {partition}: {reason}")]
    BadCopy {
        /// The partition.
        partition: PartitionId,
        /// Why not.
        reason: String,
    },
}

impl Error {
    /// Whether the same request may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoSpace | Error::LowDiskSpace { .. } | Error::WriterStopped)
    }

    /// Whether this error means the data on disk is damaged.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corruption { .. } | Error::MetaCorruption { .. } => true,
            Error::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            _ => false,
        }
    }

    /// Classifies a RocksDB write failure: a full disk is told apart so producers can back off.
    pub(crate) fn from_write(e: rocksdb::Error) -> Self {
        let text = e.to_string();
        if text.contains("No space left") || text.contains("ENOSPC") {
            Error::NoSpace
        } else {
            Error::Rocks(e)
        }
    }
}

/// Result alias for storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
