//! Stored consumer-group state. This module owns only the bytes; what a
//! lease, an ack or a backoff means is the broker's business.
//!
//! `groups` column family (big-endian):
//!
//! | key | value |
//! |---|---|
//! | `0x01 · group id u64 · partition u32` | cursor: `version u8 (1) · committed u64 · delivered u64 · dead-lettered u64` |
//! | `0x02 · group id u64 · partition u32 · offset u64` | message state (see `MessageState::encode`) |
//! | `0x03 · group id u64 · due ms u64 · partition u32 · offset u64` | empty: the redelivery time index |
//!
//! Offsets below `committed` are acknowledged. Offsets in `[committed, delivered)`
//! were delivered at least once; one without a message-state entry was delivered
//! exactly once and not acknowledged. The group's configuration is a `meta`
//! entry `0x04 · name` holding the broker's opaque bytes.

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut};

use crate::engine::{AtomicWrite, Cf, Mutation};
use crate::keys::{self, TAG_GROUP};

const CURSOR: u8 = 0x01;
const MESSAGE: u8 = 0x02;
const TIMER: u8 = 0x03;
const VERSION: u8 = 1;
const VERSION_DEAD_LETTERING: u8 = 2;

/// Where a group stands on one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCursor {
    /// Every offset below is acknowledged.
    pub committed: u64,
    /// Every offset below was delivered at least once.
    pub delivered: u64,
    /// Messages of this partition moved to the dead-letter topic so far.
    pub dead_lettered: u64,
}

/// What is known of one delivered, not yet committed message beyond "delivered once".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageState {
    /// Acknowledged (waiting for the offsets below it).
    pub acked: bool,
    /// Deliveries so far.
    pub attempts: u32,
    /// First delivery time.
    pub first_delivery_ms: i64,
    /// Last delivery time.
    pub last_delivery_ms: i64,
    /// When it may be delivered again; 0 if not scheduled.
    pub due_ms: i64,
    /// Last failure reason.
    pub reason: String,
    /// Consumer that last had it.
    pub consumer: String,
    /// Being dead-lettered: the dead-letter partition's end when that began,
    /// where a restart looks for a copy already written before appending one.
    pub dead_letter_from: Option<u64>,
}

impl GroupCursor {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(25);
        v.put_u8(VERSION);
        v.put_u64(self.committed);
        v.put_u64(self.delivered);
        v.put_u64(self.dead_lettered);
        v
    }

    fn decode(mut v: &[u8]) -> Option<Self> {
        if v.len() != 25 || v.get_u8() != VERSION {
            return None;
        }
        let c = GroupCursor { committed: v.get_u64(), delivered: v.get_u64(), dead_lettered: v.get_u64() };
        (c.delivered >= c.committed).then_some(c)
    }
}

fn put_str(v: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    v.put_u16(s.len() as u16);
    v.put_slice(s);
}

fn get_str(v: &mut &[u8]) -> Option<String> {
    if v.remaining() < 2 {
        return None;
    }
    let n = v.get_u16() as usize;
    if v.remaining() < n {
        return None;
    }
    let s = String::from_utf8_lossy(&v[..n]).into_owned();
    v.advance(n);
    Some(s)
}

impl MessageState {
    /// `version u8 · acked u8 · attempts u32 · first ms i64 · last ms i64 · due ms i64 · reason (u16 len + UTF-8) · consumer (u16 len + UTF-8)`;
    /// version 2 (only while being dead-lettered) appends `dead-letter from u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(42 + self.reason.len() + self.consumer.len());
        v.put_u8(if self.dead_letter_from.is_some() { VERSION_DEAD_LETTERING } else { VERSION });
        v.put_u8(u8::from(self.acked));
        v.put_u32(self.attempts);
        v.put_i64(self.first_delivery_ms);
        v.put_i64(self.last_delivery_ms);
        v.put_i64(self.due_ms);
        put_str(&mut v, &self.reason);
        put_str(&mut v, &self.consumer);
        if let Some(from) = self.dead_letter_from {
            v.put_u64(from);
        }
        v
    }

    /// Decodes `encode`'s output; `None` for anything else.
    pub fn decode(mut v: &[u8]) -> Option<Self> {
        if v.len() < 30 {
            return None;
        }
        let version = v.get_u8();
        if version != VERSION && version != VERSION_DEAD_LETTERING {
            return None;
        }
        let acked = v.get_u8() != 0;
        let attempts = v.get_u32();
        let (first_delivery_ms, last_delivery_ms, due_ms) = (v.get_i64(), v.get_i64(), v.get_i64());
        let reason = get_str(&mut v)?;
        let consumer = get_str(&mut v)?;
        let dead_letter_from = match version {
            VERSION_DEAD_LETTERING if v.len() == 8 => Some(v.get_u64()),
            VERSION_DEAD_LETTERING => return None,
            _ => None,
        };
        v.is_empty().then_some(MessageState {
            acked,
            attempts,
            first_delivery_ms,
            last_delivery_ms,
            due_ms,
            reason,
            consumer,
            dead_letter_from,
        })
    }
}

fn cursor_key(group: u64, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(13);
    k.put_u8(CURSOR);
    k.put_u64(group);
    k.put_u32(partition);
    k
}

fn message_key(group: u64, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.put_u8(MESSAGE);
    k.put_u64(group);
    k.put_u32(partition);
    k.put_u64(offset);
    k
}

fn timer_key(group: u64, due_ms: i64, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(29);
    k.put_u8(TIMER);
    k.put_u64(group);
    k.put_u64(due_ms.max(0) as u64);
    k.put_u32(partition);
    k.put_u64(offset);
    k
}

/// Sets a partition's cursor.
pub fn put_cursor(out: &mut AtomicWrite, group: u64, partition: u32, cursor: &GroupCursor) {
    out.push(Mutation::Put(Cf::Groups, cursor_key(group, partition), cursor.encode()));
}

/// Sets a message's state.
pub fn put_message(out: &mut AtomicWrite, group: u64, partition: u32, offset: u64, state: &MessageState) {
    out.push(Mutation::Put(Cf::Groups, message_key(group, partition, offset), state.encode()));
}

/// Removes a message's state (it is committed or skipped).
pub fn delete_message(out: &mut AtomicWrite, group: u64, partition: u32, offset: u64) {
    out.push(Mutation::Delete(Cf::Groups, message_key(group, partition, offset)));
}

/// Adds a redelivery to the time index.
pub fn put_timer(out: &mut AtomicWrite, group: u64, due_ms: i64, partition: u32, offset: u64) {
    out.push(Mutation::Put(Cf::Groups, timer_key(group, due_ms, partition, offset), Vec::new()));
}

/// Removes a redelivery from the time index.
pub fn delete_timer(out: &mut AtomicWrite, group: u64, due_ms: i64, partition: u32, offset: u64) {
    out.push(Mutation::Delete(Cf::Groups, timer_key(group, due_ms, partition, offset)));
}

/// The write that stores a group's configuration (opaque to storage) under its name.
pub fn put_group(name: &str, config: Vec<u8>) -> AtomicWrite {
    AtomicWrite::from(vec![Mutation::Put(Cf::Meta, keys::named_key(TAG_GROUP, name), config)])
}

/// The write that removes a group: its configuration and every piece of its state.
pub fn delete_group(name: &str, group: u64) -> AtomicWrite {
    let mut m = AtomicWrite::from(vec![Mutation::Delete(Cf::Meta, keys::named_key(TAG_GROUP, name))]);
    m.extend(clear_state(group));
    m
}

/// The key range of one kind (`tag`) of `group`'s state.
fn state_range(tag: u8, group: u64) -> (Vec<u8>, Vec<u8>) {
    let mut from = vec![tag];
    from.put_u64(group);
    let mut to = vec![tag];
    to.put_u64(group.saturating_add(1));
    (from, to)
}

/// The write that removes every piece of `group`'s state (cursors, message
/// states, redelivery times), leaving its configuration.
pub fn clear_state(group: u64) -> AtomicWrite {
    let m: Vec<Mutation> = [CURSOR, MESSAGE, TIMER]
        .into_iter()
        .map(|tag| {
            let (from, to) = state_range(tag, group);
            Mutation::DeleteRange(Cf::Groups, from, to)
        })
        .collect();
    AtomicWrite::from(m)
}

/// A group's stored state, as recovery found it.
#[derive(Debug, Default)]
pub struct RecoveredGroupState {
    /// Cursors by partition.
    pub cursors: HashMap<u32, GroupCursor>,
    /// Message states by partition and offset.
    pub messages: HashMap<u32, BTreeMap<u64, MessageState>>,
    /// Scheduled redeliveries: (due ms, partition, offset).
    pub timers: Vec<(i64, u32, u64)>,
}

/// Folds one `groups` entry into `out` (keyed by group id); `false` if it does not parse.
pub(crate) fn recover_entry(k: &[u8], v: &[u8], out: &mut HashMap<u64, RecoveredGroupState>) -> bool {
    let mut key = k;
    if key.is_empty() {
        return false;
    }
    let tag = key.get_u8();
    match (tag, key.len()) {
        (CURSOR, 12) => {
            let (g, p) = (key.get_u64(), key.get_u32());
            let Some(c) = GroupCursor::decode(v) else { return false };
            out.entry(g).or_default().cursors.insert(p, c);
        }
        (MESSAGE, 20) => {
            let (g, p, o) = (key.get_u64(), key.get_u32(), key.get_u64());
            let Some(s) = MessageState::decode(v) else { return false };
            out.entry(g).or_default().messages.entry(p).or_default().insert(o, s);
        }
        (TIMER, 28) => {
            let (g, due, p, o) = (key.get_u64(), key.get_u64(), key.get_u32(), key.get_u64());
            out.entry(g).or_default().timers.push((due as i64, p, o));
        }
        _ => return false,
    }
    true
}

/// Marks the portable form of group-state changes (`encode_changes`).
const CHANGES_VERSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_RANGE: u8 = 3;

/// Whether `key` lies in the group-state key space (cursor, message or timer).
fn is_group_state_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(&CURSOR) | Some(&MESSAGE) | Some(&TIMER)) && key.len() >= 9
}

/// A group's state changes (as the functions of this module build them) in
/// a portable form: in a cluster the group's leader proposes these bytes to
/// its shard and every replica applies them (`decode_changes`), so each
/// holds the same group state. Only group-state mutations can be carried:
/// anything else (a configuration, a record) is refused, so a replicated
/// change can never touch more than group state.
pub fn encode_changes(write: &AtomicWrite) -> std::result::Result<Vec<u8>, String> {
    let mut v = Vec::with_capacity(1 + write.size() + 8 * write.len());
    v.put_u8(CHANGES_VERSION);
    for m in &write.mutations {
        match m {
            Mutation::Put(Cf::Groups, k, val) if is_group_state_key(k) => {
                v.put_u8(OP_PUT);
                v.put_u16(k.len() as u16);
                v.put_slice(k);
                v.put_u32(val.len() as u32);
                v.put_slice(val);
            }
            Mutation::Delete(Cf::Groups, k) if is_group_state_key(k) => {
                v.put_u8(OP_DELETE);
                v.put_u16(k.len() as u16);
                v.put_slice(k);
            }
            Mutation::DeleteRange(Cf::Groups, from, to) if is_group_state_key(from) && is_group_state_key(to) => {
                v.put_u8(OP_DELETE_RANGE);
                v.put_u16(from.len() as u16);
                v.put_slice(from);
                v.put_u16(to.len() as u16);
                v.put_slice(to);
            }
            other => return Err(format!("not a group-state change: {other:?}")),
        }
    }
    Ok(v)
}

/// The write `encode_changes` made bytes of; `None` for anything else
/// (damaged, a newer format, or a change outside group state).
pub fn decode_changes(mut v: &[u8]) -> Option<AtomicWrite> {
    fn key(v: &mut &[u8]) -> Option<Vec<u8>> {
        if v.remaining() < 2 {
            return None;
        }
        let n = v.get_u16() as usize;
        if v.remaining() < n {
            return None;
        }
        let k = v[..n].to_vec();
        v.advance(n);
        is_group_state_key(&k).then_some(k)
    }
    if v.is_empty() || v.get_u8() != CHANGES_VERSION {
        return None;
    }
    let mut out = Vec::new();
    while v.has_remaining() {
        let m = match v.get_u8() {
            OP_PUT => {
                let k = key(&mut v)?;
                if v.remaining() < 4 {
                    return None;
                }
                let n = v.get_u32() as usize;
                if v.remaining() < n {
                    return None;
                }
                let val = v[..n].to_vec();
                v.advance(n);
                Mutation::Put(Cf::Groups, k, val)
            }
            OP_DELETE => Mutation::Delete(Cf::Groups, key(&mut v)?),
            OP_DELETE_RANGE => Mutation::DeleteRange(Cf::Groups, key(&mut v)?, key(&mut v)?),
            _ => return None,
        };
        out.push(m);
    }
    Some(AtomicWrite::from(out))
}

impl crate::Store {
    /// A write that makes any store hold exactly `group`'s state as stored
    /// here now: every piece of it cleared, then this store's entries put.
    /// A shard snapshot carries it (through `encode_changes`), so a replica
    /// that installs the snapshot holds the group as its leader did.
    pub fn group_state_image(&self, group: u64) -> crate::Result<AtomicWrite> {
        let mut out = clear_state(group);
        self.scan_group_state(group, |k, v| {
            out.push(Mutation::Put(Cf::Groups, k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Visits every stored entry of `group`'s state (cursors, message states, timers).
    fn scan_group_state(
        &self,
        group: u64,
        mut visit: impl FnMut(&[u8], &[u8]) -> crate::Result<()>,
    ) -> crate::Result<()> {
        for tag in [CURSOR, MESSAGE, TIMER] {
            let (lower, upper) = state_range(tag, group);
            self.engine().scan(
                Cf::Groups,
                &lower,
                Some(&upper),
                crate::engine::ScanFrom::AtOrAfter(&lower),
                &mut |k, v| visit(k, v).map(|()| true),
            )?;
        }
        Ok(())
    }

    /// Group `group`'s stored state, read now: what a broker that takes over
    /// the group (a shard leader after a failover) starts from.
    pub fn group_state(&self, group: u64) -> crate::Result<RecoveredGroupState> {
        let mut found = HashMap::new();
        self.scan_group_state(group, |k, v| {
            if recover_entry(k, v, &mut found) {
                Ok(())
            } else {
                Err(crate::Error::MetaCorruption { key: k.to_vec(), reason: "group state entry".into() })
            }
        })?;
        Ok(found.remove(&group).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_values_round_trip() {
        let c = GroupCursor { committed: 3, delivered: 9, dead_lettered: 1 };
        assert_eq!(GroupCursor::decode(&c.encode()), Some(c));
        let m = MessageState {
            acked: true,
            attempts: 3,
            first_delivery_ms: 1,
            last_delivery_ms: 2,
            due_ms: 3,
            reason: "boom".into(),
            consumer: "c-1".into(),
            dead_letter_from: None,
        };
        assert_eq!(MessageState::decode(&m.encode()), Some(m.clone()));
        let marked = MessageState { dead_letter_from: Some(77), ..m.clone() };
        assert_eq!(MessageState::decode(&marked.encode()), Some(marked.clone()));
        assert_eq!(MessageState::decode(&marked.encode()[..marked.encode().len() - 1]), None);
        assert_eq!(MessageState::decode(&m.encode()[..10]), None);
        let mut out = HashMap::new();
        assert!(recover_entry(&timer_key(7, 100, 2, 5), &[], &mut out));
        assert!(recover_entry(&message_key(7, 2, 5), &m.encode(), &mut out));
        assert_eq!(out[&7].timers, vec![(100, 2, 5)]);
        assert_eq!(out[&7].messages[&2][&5], m);
    }

    #[test]
    fn timer_keys_sort_by_due_time() {
        assert!(timer_key(1, 5, 9, 9) < timer_key(1, 6, 0, 0));
    }

    #[test]
    fn changes_round_trip_and_refuse_anything_else() {
        let mut w = AtomicWrite::new();
        put_cursor(&mut w, 7, 1, &GroupCursor { committed: 1, delivered: 4, dead_lettered: 0 });
        put_message(&mut w, 7, 1, 2, &MessageState { attempts: 2, ..MessageState::default() });
        delete_timer(&mut w, 7, 50, 1, 2);
        delete_message(&mut w, 7, 1, 3);
        let bytes = encode_changes(&w).expect("group-state changes encode");
        assert_eq!(decode_changes(&bytes), Some(w.clone()));
        assert_eq!(decode_changes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_changes(&[]), None);
        assert!(encode_changes(&put_group("g", b"{}".to_vec())).is_err());
        let mut whole = delete_group("g", 7);
        whole.mutations.remove(0);
        assert_eq!(decode_changes(&encode_changes(&whole).expect("ranges encode")), Some(whole));
        let mut forged = bytes.clone();
        forged[4] = 0x09; // the first key's tag: not group state
        assert_eq!(decode_changes(&forged), None);
    }

    #[test]
    fn group_state_reads_one_group() {
        let disk = crate::MemoryDisk::default();
        let (store, _) = crate::Store::open_in_memory(&disk).expect("memory store");
        let mut w = AtomicWrite::new();
        put_cursor(&mut w, 7, 0, &GroupCursor { committed: 2, delivered: 5, dead_lettered: 0 });
        put_cursor(&mut w, 8, 0, &GroupCursor { committed: 9, delivered: 9, dead_lettered: 0 });
        put_timer(&mut w, 7, 100, 0, 3);
        store.apply(std::iter::once(&w), false).expect("write");
        let g = store.group_state(7).expect("read");
        assert_eq!(g.cursors[&0].committed, 2);
        assert_eq!(g.timers, vec![(100, 0, 3)]);
        assert!(store.group_state(9).expect("read").cursors.is_empty());
    }
}
