//! A Raft log kept in the store's `raft` column family, written through the
//! broker's writer (group commit), with every unpurged entry also held in
//! memory, encoded. That suits groups whose log is small between snapshots,
//! like the metadata group; shard groups, whose entries are record batches
//! stored once under their partition keys, get their own log (planned).
//!
//! # Correctness (openraft's `RaftLogStorage` contract)
//! - `append` returns once the entries are in memory, where every reader
//!   handle (clones of this store) sees them; openraft's `IOFlushed` is
//!   completed from the writer's commit callback, after the fsync, exactly
//!   once, with the write's result.
//! - Votes, appends, truncations and purges go through the one writer, which
//!   applies requests in submission order, so they reach the disk in the
//!   order openraft issued them. `save_vote`, `truncate_after` and `purge`
//!   return only once durable.
//! - Truncation removes from the end (`[from, ∞)`) and purging from the start
//!   (`[0, through]`), so the log never has a hole.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::alias::{LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, RaftTypeConfig};
use sluice_storage::raft::{self as keys, GroupId, HardState};
use sluice_storage::{AtomicWrite, Store, WriteRequest, WriterHandle};

use crate::codec::{decode, encode, io_error};

/// One group's Raft log; cheap to clone (clones share the log).
pub struct LogStore<C: RaftTypeConfig> {
    group: GroupId,
    store: Arc<Store>,
    writer: WriterHandle,
    tail: Arc<Mutex<Tail<C>>>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore { group: self.group, store: self.store.clone(), writer: self.writer.clone(), tail: self.tail.clone() }
    }
}

/// The log as openraft sees it: entries not yet purged (encoded, with their
/// ids), and the hard state.
struct Tail<C: RaftTypeConfig> {
    entries: BTreeMap<u64, (LogIdOf<C>, Vec<u8>)>,
    last_purged: Option<LogIdOf<C>>,
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens `group`'s log as stored, reading every unpurged entry.
    pub fn open(store: Arc<Store>, writer: WriterHandle, group: GroupId) -> io::Result<Self> {
        let hard = |slot| store.raft_hard_state(group, slot).map_err(io_error);
        let vote = hard(HardState::Vote)?.map(|b| decode(&b, "vote")).transpose()?;
        let committed = hard(HardState::Committed)?.map(|b| decode(&b, "committed log id")).transpose()?;
        let last_purged = hard(HardState::Purged)?.map(|b| decode(&b, "purged log id")).transpose()?;
        let mut entries = BTreeMap::new();
        for (index, bytes) in store.raft_entries(group, 0..u64::MAX).map_err(io_error)? {
            let entry: C::Entry = decode(&bytes, "log entry")?;
            entries.insert(index, (entry.log_id(), bytes));
        }
        let tail = Tail { entries, last_purged, vote, committed };
        Ok(LogStore { group, store, writer, tail: Arc::new(Mutex::new(tail)) })
    }

    fn tail(&self) -> MutexGuard<'_, Tail<C>> {
        // A panic while holding the lock leaves the map consistent (every
        // change to it is a single insert or remove), so poisoning is ignored.
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn write_durably(&self, write: AtomicWrite) -> io::Result<()> {
        self.writer.write(write).await.map_err(io_error)
    }
}

fn start_of(range: &impl RangeBounds<u64>) -> Bound<u64> {
    range.start_bound().cloned()
}

fn end_of(range: &impl RangeBounds<u64>) -> Bound<u64> {
    range.end_bound().cloned()
}

impl<C: RaftTypeConfig> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, io::Error> {
        let bytes: Vec<Vec<u8>> =
            self.tail().entries.range((start_of(&range), end_of(&range))).map(|(_, (_, b))| b.clone()).collect();
        bytes.iter().map(|b| decode(b, "log entry")).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.tail().vote.clone())
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let tail = self.tail();
        let last = tail.entries.values().next_back().map(|(id, _)| id.clone()).or_else(|| tail.last_purged.clone());
        Ok(LogState { last_purged_log_id: tail.last_purged.clone(), last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let mut write = AtomicWrite::new();
        keys::put_hard_state(&mut write, self.group, HardState::Vote, encode(vote)?);
        self.write_durably(write).await?;
        self.tail().vote = Some(vote.clone());
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let mut write = AtomicWrite::new();
        keys::put_hard_state(&mut write, self.group, HardState::Committed, encode(&committed)?);
        // Queued behind every earlier write; not waited for (openraft treats it as a hint).
        let request = WriteRequest { write, sync: false, on_commit: Box::new(|_| {}) };
        self.writer.submit(request).await.map_err(io_error)?;
        self.tail().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.tail().committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut write = AtomicWrite::new();
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)?;
            keys::put_entry(&mut write, self.group, entry.index(), bytes.clone());
            encoded.push((entry.index(), entry.log_id(), bytes));
        }
        {
            let mut tail = self.tail();
            for (index, id, bytes) in encoded {
                tail.entries.insert(index, (id, bytes));
            }
        }
        let on_commit =
            Box::new(move |result: sluice_storage::Result<()>| callback.io_completed(result.map_err(io_error)));
        self.writer.submit(WriteRequest { write, sync: true, on_commit }).await.map_err(io_error)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |id| id.index + 1);
        let mut write = AtomicWrite::new();
        keys::delete_entries_from(&mut write, self.group, from);
        self.tail().entries.split_off(&from);
        self.write_durably(write).await
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let through = log_id.index;
        let mut write = AtomicWrite::new();
        keys::put_hard_state(&mut write, self.group, HardState::Purged, encode(&log_id)?);
        keys::delete_entries_through(&mut write, self.group, through);
        {
            let mut tail = self.tail();
            tail.entries = tail.entries.split_off(&through.saturating_add(1));
            tail.last_purged = Some(log_id);
        }
        self.write_durably(write).await
    }
}
