//! Durable state of replication (Raft) groups, as opaque bytes: each group's
//! log entries by index, its hard state (vote, committed and purged marks),
//! and its state machine's own records. The `replication` crate encodes all
//! of it; this module only lays out keys in the `raft` column family, so no
//! consensus type reaches the storage crate and no other crate builds a key.
//!
//! Key layout (big-endian, so byte order is numeric order):
//! `group u64 · 0x01 · index u64` → entry, `group u64 · 0x02 · slot u8` → hard
//! state, `group u64 · 0x03 · key bytes` → state-machine record.
//!
//! # Correctness
//! Writes go through the writer like every other `AtomicWrite`, so one group's
//! vote, appends, truncations and purges reach the disk in the order they
//! were submitted, and a group's hard state and entries written in one
//! `AtomicWrite` land together.

use std::ops::Range;

use crate::engine::{AtomicWrite, Cf, Mutation, ScanFrom};
use crate::store::Store;
use crate::Result;

const ENTRY: u8 = 0x01;
const HARD_STATE: u8 = 0x02;
const RECORD: u8 = 0x03;

/// A replication group's number: 0 is the metadata group, shards count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

/// One value of a group's hard state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardState {
    /// The vote (term and whom it went to).
    Vote = 1,
    /// The last entry known committed.
    Committed = 2,
    /// The last entry deleted from the front of the log.
    Purged = 3,
    /// The last entry the state machine applied (with its membership).
    Applied = 4,
    /// The state machine's current snapshot.
    Snapshot = 5,
    /// A snapshot install under way: where each partition it copies records
    /// into ended before, so a crash in the middle can be undone at start.
    Installing = 6,
    /// Which groups this broker must not vote in yet: it lost its data and
    /// waits to be added back (kept under the metadata group only).
    Fenced = 7,
    /// Per partition of a shard, the offset below which its records were
    /// purged (a dead-letter purge, replicated as a log entry): readers start
    /// there, and retention removes the whole segments below it.
    PurgeFloors = 8,
}

fn prefix(group: GroupId, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&group.0.to_be_bytes());
    k.push(kind);
    k
}

fn entry_key(group: GroupId, index: u64) -> Vec<u8> {
    let mut k = prefix(group, ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn hard_state_key(group: GroupId, slot: HardState) -> Vec<u8> {
    let mut k = prefix(group, HARD_STATE);
    k.push(slot as u8);
    k
}

fn record_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut k = prefix(group, RECORD);
    k.extend_from_slice(key);
    k
}

fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
}

/// Adds "store `entry` at `index` of `group`" to `out`.
pub fn put_entry(out: &mut AtomicWrite, group: GroupId, index: u64, entry: Vec<u8>) {
    out.push(Mutation::Put(Cf::Raft, entry_key(group, index), entry));
}

/// Adds "delete every entry of `group` at `from` and above" to `out`.
pub fn delete_entries_from(out: &mut AtomicWrite, group: GroupId, from: u64) {
    out.push(Mutation::DeleteRange(Cf::Raft, entry_key(group, from), prefix(group, ENTRY + 1)));
}

/// Adds "delete every entry of `group` up to and including `through`" to `out`.
pub fn delete_entries_through(out: &mut AtomicWrite, group: GroupId, through: u64) {
    let end = match through.checked_add(1) {
        Some(next) => entry_key(group, next),
        None => prefix(group, ENTRY + 1),
    };
    out.push(Mutation::DeleteRange(Cf::Raft, entry_key(group, 0), end));
}

/// Adds "set `slot` of `group`'s hard state to `value`" to `out`.
pub fn put_hard_state(out: &mut AtomicWrite, group: GroupId, slot: HardState, value: Vec<u8>) {
    out.push(Mutation::Put(Cf::Raft, hard_state_key(group, slot), value));
}

/// Adds "clear `slot` of `group`'s hard state" to `out`.
pub fn delete_hard_state(out: &mut AtomicWrite, group: GroupId, slot: HardState) {
    out.push(Mutation::Delete(Cf::Raft, hard_state_key(group, slot)));
}

/// Adds "set the state-machine record `key` of `group`" to `out`.
pub fn put_record(out: &mut AtomicWrite, group: GroupId, key: &[u8], value: Vec<u8>) {
    out.push(Mutation::Put(Cf::Raft, record_key(group, key), value));
}

/// Adds "delete the state-machine record `key` of `group`" to `out`.
pub fn delete_record(out: &mut AtomicWrite, group: GroupId, key: &[u8]) {
    out.push(Mutation::Delete(Cf::Raft, record_key(group, key)));
}

/// Adds "delete every state-machine record of `group`" to `out` (a snapshot
/// install replaces them all).
pub fn delete_all_records(out: &mut AtomicWrite, group: GroupId) {
    out.push(Mutation::DeleteRange(Cf::Raft, prefix(group, RECORD), prefix(group, RECORD + 1)));
}

impl Store {
    /// Entries of `group` with indexes in `range`, in order, with their indexes.
    pub fn raft_entries(&self, group: GroupId, range: Range<u64>) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if range.start >= range.end {
            return Ok(out);
        }
        let (lower, upper) = (entry_key(group, range.start), entry_key(group, range.end));
        self.engine().scan(Cf::Raft, &lower, Some(&upper), ScanFrom::AtOrAfter(&lower), &mut |k, v| {
            if let Some(i) = index_of(k) {
                out.push((i, v.to_vec()));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// The entry of `group` with the highest index, if any.
    pub fn raft_last_entry(&self, group: GroupId) -> Result<Option<(u64, Vec<u8>)>> {
        let (lower, upper) = (prefix(group, ENTRY), prefix(group, ENTRY + 1));
        let last = entry_key(group, u64::MAX);
        let mut found = None;
        self.engine().scan(Cf::Raft, &lower, Some(&upper), ScanFrom::AtOrBefore(&last), &mut |k, v| {
            if k.starts_with(&lower) {
                found = index_of(k).map(|i| (i, v.to_vec()));
            }
            Ok(false)
        })?;
        Ok(found)
    }

    /// `slot` of `group`'s hard state, if ever written.
    pub fn raft_hard_state(&self, group: GroupId, slot: HardState) -> Result<Option<Vec<u8>>> {
        self.get(Cf::Raft, &hard_state_key(group, slot))
    }

    /// Every state-machine record of `group`, in key order, keys without the prefix.
    pub fn raft_records(&self, group: GroupId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (lower, upper) = (prefix(group, RECORD), prefix(group, RECORD + 1));
        let mut out = Vec::new();
        self.engine().scan(Cf::Raft, &lower, Some(&upper), ScanFrom::AtOrAfter(&lower), &mut |k, v| {
            out.push((k[lower.len()..].to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryDisk;

    fn apply(store: &Store, w: AtomicWrite) {
        store.apply(std::iter::once(&w), true).expect("apply");
    }

    #[test]
    fn entries_truncate_and_purge_per_group() {
        let (store, _) = Store::open_in_memory(&MemoryDisk::default()).expect("open");
        let (a, b) = (GroupId(1), GroupId(2));
        let mut w = AtomicWrite::new();
        for i in 0..10 {
            put_entry(&mut w, a, i, vec![i as u8]);
            put_entry(&mut w, b, i, vec![100 + i as u8]);
        }
        apply(&store, w);
        assert_eq!(store.raft_last_entry(a).expect("last"), Some((9, vec![9])));
        let mut w = AtomicWrite::new();
        delete_entries_from(&mut w, a, 7);
        delete_entries_through(&mut w, a, 2);
        apply(&store, w);
        let left: Vec<u64> = store.raft_entries(a, 0..u64::MAX).expect("read").into_iter().map(|e| e.0).collect();
        assert_eq!(left, vec![3, 4, 5, 6]);
        assert_eq!(store.raft_last_entry(a).expect("last"), Some((6, vec![6])));
        assert_eq!(store.raft_entries(b, 0..u64::MAX).expect("read").len(), 10, "the other group is untouched");
        assert_eq!(store.raft_entries(a, 4..6).expect("read"), vec![(4, vec![4]), (5, vec![5])]);
        let mut w = AtomicWrite::new();
        delete_entries_from(&mut w, a, 0);
        apply(&store, w);
        assert_eq!(store.raft_last_entry(a).expect("last"), None);
    }

    #[test]
    fn hard_state_and_records_round_trip() {
        let (store, _) = Store::open_in_memory(&MemoryDisk::default()).expect("open");
        let g = GroupId(0);
        let mut w = AtomicWrite::new();
        put_hard_state(&mut w, g, HardState::Vote, b"v".to_vec());
        put_record(&mut w, g, b"topic/a", b"1".to_vec());
        put_record(&mut w, g, b"topic/b", b"2".to_vec());
        put_record(&mut w, GroupId(1), b"topic/c", b"3".to_vec());
        apply(&store, w);
        assert_eq!(store.raft_hard_state(g, HardState::Vote).expect("get"), Some(b"v".to_vec()));
        assert_eq!(store.raft_hard_state(g, HardState::Committed).expect("get"), None);
        let mut w = AtomicWrite::new();
        delete_record(&mut w, g, b"topic/a");
        apply(&store, w);
        assert_eq!(store.raft_records(g).expect("scan"), vec![(b"topic/b".to_vec(), b"2".to_vec())]);
        let mut w = AtomicWrite::new();
        delete_all_records(&mut w, g);
        apply(&store, w);
        assert!(store.raft_records(g).expect("scan").is_empty());
        assert_eq!(store.raft_records(GroupId(1)).expect("scan").len(), 1);
    }
}
