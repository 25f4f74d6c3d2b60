//! Storage engines: the ordered key-value layer under the partition log.
//!
//! Everything above this module (partition logs, topics, group state) is
//! written once, in terms of column families, keys and atomic writes; an
//! engine only stores bytes. Two engines exist: RocksDB (`rocks`, what a
//! broker runs) and an in-memory twin (`memory`, for the storage contract
//! suite, fast model checks and tests of the layers above). Running the same
//! log code over both is what the contract suite (`storage/tests/contract.rs`)
//! checks: the partition-log rules hold whatever engine is underneath.
//!
//! # Correctness
//! An engine must give:
//! - **Atomicity**: every mutation of one `apply` becomes visible together,
//!   and after a crash either all of them are stored or none.
//! - **Order**: an `apply` that returned is visible to every later `scan`
//!   and `get`, and is stored before any later `apply`.
//! - **Durability**: an `apply` with `sync` (or one followed by a returned
//!   `sync_wal`) survives a machine crash; without it, a process crash.
//! - **Byte order**: keys sort as unsigned bytes (our keys are big-endian so
//!   that this is numeric order).
//!
//! Engines do not poison themselves; `Store` does that, engine-independently.

pub(crate) mod memory;
pub(crate) mod rocks;
mod wal_reaper;

use crate::Result;

/// A column family: a separate key space with its own tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cf {
    /// Record batches.
    Records,
    /// Topics, segments, producer states, group configurations.
    Meta,
    /// Consumer-group cursors, message states and the redelivery time index.
    Groups,
    /// Replication groups' logs, hard state and state-machine records (`raft`).
    Raft,
}

impl Cf {
    /// Every family, in a fixed order (the memory engine's array index).
    pub(crate) const ALL: [Cf; 4] = [Cf::Records, Cf::Meta, Cf::Groups, Cf::Raft];

    pub(crate) fn index(self) -> usize {
        match self {
            Cf::Records => 0,
            Cf::Meta => 1,
            Cf::Groups => 2,
            Cf::Raft => 3,
        }
    }
}

/// One change in an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mutation {
    /// Set a key.
    Put(Cf, Vec<u8>, Vec<u8>),
    /// Remove a key.
    Delete(Cf, Vec<u8>),
    /// Remove every key in [from, to).
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

impl Mutation {
    /// Approximate bytes the mutation adds to a write.
    pub(crate) fn size(&self) -> usize {
        match self {
            Mutation::Put(_, k, v) => k.len() + v.len(),
            Mutation::Delete(_, k) => k.len(),
            Mutation::DeleteRange(_, a, b) => a.len() + b.len(),
        }
    }
}

/// Changes that must reach the disk together or not at all: a batch with its
/// segment entry and producer state, a trim, a topic creation, a group's
/// cursor moves. Built by the storage API; the caller only decides when to
/// hand it to the writer (and may merge several into one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "an AtomicWrite does nothing until it is handed to the writer"]
pub struct AtomicWrite {
    pub(crate) mutations: Vec<Mutation>,
}

impl AtomicWrite {
    /// An empty write, to be filled by storage functions.
    pub fn new() -> Self {
        AtomicWrite::default()
    }

    /// Whether the write changes nothing (and need not be submitted).
    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    /// Number of changes it carries.
    pub fn len(&self) -> usize {
        self.mutations.len()
    }

    /// Approximate bytes it adds to a group commit.
    pub fn size(&self) -> usize {
        self.mutations.iter().map(Mutation::size).sum()
    }

    /// Appends `other`'s changes after this one's (they stay one atomic write).
    pub fn extend(&mut self, other: AtomicWrite) {
        self.mutations.extend(other.mutations);
    }

    pub(crate) fn push(&mut self, m: Mutation) {
        self.mutations.push(m);
    }
}

impl From<Vec<Mutation>> for AtomicWrite {
    fn from(mutations: Vec<Mutation>) -> Self {
        AtomicWrite { mutations }
    }
}

/// What the store wrote, for write-amplification and WAL metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Bytes handed to the engine by writes.
    pub user_bytes_written: u64,
    /// Bytes the engine wrote to disk: WAL, flushes and compactions.
    pub disk_bytes_written: u64,
    /// Compaction debt of the records family.
    pub pending_compaction_bytes: u64,
    /// Size of the live WAL files.
    pub wal_bytes: u64,
}

/// Where a scan starts within its bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScanFrom<'a> {
    /// At the first key not below this one.
    AtOrAfter(&'a [u8]),
    /// At the last key not above this one (the batch holding an offset); at
    /// the first key of the range if there is none.
    AtOrBefore(&'a [u8]),
}

/// Called per key in order; returns whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// An ordered key-value engine. See the module's `# Correctness`.
pub(crate) trait Engine: Send + Sync {
    /// Applies `mutations` atomically, fsyncing first if `sync`.
    fn apply(&self, mutations: &mut dyn Iterator<Item = &Mutation>, sync: bool) -> Result<()>;
    /// Makes every earlier `apply` durable against a machine crash.
    fn sync_wal(&self) -> Result<()>;
    /// Flushes memtables so a restart replays nothing (clean shutdown).
    fn flush(&self) -> Result<()>;
    /// Visits keys of `cf` in `[lower, upper)` in order, starting per `from`.
    fn scan(&self, cf: Cf, lower: &[u8], upper: Option<&[u8]>, from: ScanFrom<'_>, visit: &mut Visit<'_>)
        -> Result<()>;
    /// Gives back the space of deleted keys in `[from, to)` of `cf` (best effort).
    fn reclaim(&self, cf: Cf, from: &[u8], to: &[u8]) -> Result<()>;
    /// Disk-level figures.
    fn stats(&self) -> StorageStats;
    /// An integer engine property of the records family, if the engine has it.
    fn records_property(&self, name: &str) -> Option<u64>;
}
