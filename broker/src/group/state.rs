//! `GroupState`: the ack state of one group across its partitions — cursors,
//! leases, scheduled redeliveries, attempt counts — as a pure state machine.
//! Time is passed in (`now` in ms), so it is tested without clocks; every
//! change that must survive a crash is returned as storage mutations.
//!
//! Invariants, per partition: every offset in `[committed, delivered)` has an
//! entry; an entry is exactly one of acked, leased, scheduled (in `due`), or
//! being dead-lettered; `committed` only moves forward except by `seek`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_storage::group::{delete_message, delete_timer, put_cursor, put_message, put_timer};
use sluice_storage::{AtomicWrite, GroupCursor, MessageState, RecoveredGroupState};

/// Why an ack, nack or extension was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// The partition does not exist.
    UnknownPartition(u32),
    /// The offset was never delivered to this group.
    NotDelivered(u64),
    /// The lease expired and the message was delivered again (attempt `current`).
    Stale {
        /// The attempt now outstanding.
        current: u32,
    },
    /// Its last attempt failed and it is being written to the dead-letter
    /// topic: a late ack would make it both acked and dead-lettered.
    DeadLettered,
    /// An extension or release of a delivery that holds no lease (acked, nacked,
    /// released, or expired): nothing changed.
    NotLeased,
}

/// A failed delivery, as `GroupState::fail` takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failure<'a> {
    /// Partition of the message.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// The attempt that failed (an older one is stale).
    pub attempt: u32,
    /// Now, ms since the Unix epoch.
    pub now: i64,
    /// Redeliver after this long.
    pub delay_ms: i64,
    /// Why (kept for the dead-letter headers).
    pub reason: &'a str,
    /// The consumer that had it (empty: keep the last one).
    pub consumer: &'a str,
    /// The group's delivery limit (0: none).
    pub max_attempts: u32,
}

/// What a failed delivery leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Already acked, already rescheduled, or stale: nothing changed.
    Ignored,
    /// Redelivery scheduled at this time.
    Scheduled(i64),
    /// Attempts exhausted: the caller must dead-letter it, then call `dead_lettered`.
    DeadLetter,
}

#[derive(Debug, Clone)]
struct Entry {
    state: MessageState,
    lease: Option<i64>,
    persisted: bool,
    /// Being written to the dead-letter topic (in memory only: after a crash
    /// the message is due again and is given up on once more).
    dead_lettering: bool,
}

/// The entry of a delivered, not yet acked message whose attempt is `attempt`;
/// `None` when it is already acked or committed.
fn entry_for(parts: &mut [Part], p: u32, off: u64, attempt: u32) -> Result<Option<&mut Entry>, AckError> {
    let part = parts.get_mut(p as usize).ok_or(AckError::UnknownPartition(p))?;
    if off < part.cursor.committed {
        return Ok(None);
    }
    if off >= part.cursor.delivered {
        return Err(AckError::NotDelivered(off));
    }
    let Some(e) = part.entries.get_mut(&off) else { return Err(AckError::NotDelivered(off)) };
    if e.state.acked {
        return Ok(None);
    }
    if e.dead_lettering {
        return Err(AckError::DeadLettered);
    }
    if e.state.attempts != attempt {
        return Err(AckError::Stale { current: e.state.attempts });
    }
    Ok(Some(e))
}

#[derive(Debug, Clone, Default)]
struct Part {
    cursor: GroupCursor,
    entries: BTreeMap<u64, Entry>,
}

/// Per-partition figures for describe and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Every offset below is acked.
    pub committed: u64,
    /// Every offset below was delivered.
    pub delivered: u64,
    /// Leased now.
    pub in_flight: u64,
    /// Acked above `committed`.
    pub acked_above: u64,
    /// Dead-lettered so far.
    pub dead_lettered: u64,
}

/// The ack state of one group.
#[derive(Debug)]
pub struct GroupState {
    id: u64,
    parts: Vec<Part>,
    due: BTreeSet<(i64, u32, u64)>,
    leases: BTreeSet<(i64, u32, u64)>,
    dirty: BTreeSet<u32>,
    /// Messages a crash caught while being dead-lettered (until taken).
    recovered_dead_letters: Vec<(u32, u64)>,
}

impl GroupState {
    /// A group starting at `starts[p]` on each partition.
    pub fn new(id: u64, starts: &[u64]) -> Self {
        let parts = starts
            .iter()
            .map(|&s| Part {
                cursor: GroupCursor { committed: s, delivered: s, dead_lettered: 0 },
                entries: BTreeMap::new(),
            })
            .collect();
        GroupState {
            id,
            parts,
            due: BTreeSet::new(),
            leases: BTreeSet::new(),
            dirty: (0..starts.len() as u32).collect(),
            recovered_dead_letters: Vec::new(),
        }
    }

    /// Rebuilds the state from storage. Leases did not survive: every delivered,
    /// unacked message without a scheduled time becomes due at `now`, except
    /// those a crash caught while being dead-lettered: they are handed to
    /// `take_recovered_dead_letters` to finish (without writing them twice).
    pub fn recover(id: u64, partitions: u32, mut stored: RecoveredGroupState, now: i64) -> Self {
        let mut g = GroupState::new(id, &vec![0; partitions as usize]);
        g.dirty.clear();
        for p in 0..partitions {
            let cursor = stored.cursors.get(&p).copied().unwrap_or_default();
            let mut messages = stored.messages.remove(&p).unwrap_or_default();
            let part = &mut g.parts[p as usize];
            part.cursor = cursor;
            for off in cursor.committed..cursor.delivered {
                let (mut state, persisted) = match messages.remove(&off) {
                    Some(s) => (s, true),
                    None => (MessageState { attempts: 1, ..MessageState::default() }, false),
                };
                let dead_lettering = !state.acked && state.dead_letter_from.is_some();
                if dead_lettering {
                    g.recovered_dead_letters.push((p, off));
                } else if !state.acked {
                    if state.due_ms <= 0 {
                        state.due_ms = now;
                    }
                    g.due.insert((state.due_ms, p, off));
                }
                part.entries.insert(off, Entry { state, lease: None, persisted, dead_lettering });
            }
        }
        g
    }

    /// The group's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u32 {
        self.parts.len() as u32
    }

    /// Adds the cursor writes for partitions changed since the last call.
    pub fn flush_cursors(&mut self, out: &mut AtomicWrite) {
        for p in std::mem::take(&mut self.dirty) {
            put_cursor(out, self.id, p, &self.parts[p as usize].cursor);
        }
    }

    /// The earliest time after `now` when something needs attention (a lease
    /// ends, a redelivery becomes due).
    pub fn next_wakeup(&self, now: i64) -> Option<i64> {
        let lease = self.leases.first().map(|l| l.0);
        let due = self.due.range((now.saturating_add(1), 0, 0)..).next().map(|d| d.0);
        match (lease, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any redelivery is due at `now`.
    pub fn has_due(&self, now: i64) -> bool {
        self.due.first().is_some_and(|d| d.0 <= now)
    }

    /// Next offset to deliver fresh on `p`, and how many are outstanding.
    pub fn fresh_position(&self, p: u32) -> (u64, u64) {
        let c = &self.parts[p as usize].cursor;
        (c.delivered, c.delivered - c.committed)
    }

    /// Whether `p` has anything leased or scheduled (ordered groups wait for it).
    pub fn is_busy(&self, p: u32, now: i64) -> bool {
        self.parts[p as usize].entries.values().any(|e| e.lease.is_some() || (!e.state.acked && e.state.due_ms > now))
    }

    /// Takes up to `max` due redeliveries in due order, from partitions `allow` accepts.
    pub fn take_due(&mut self, now: i64, max: usize, allow: impl Fn(u32) -> bool) -> Vec<(u32, u64)> {
        let picked: Vec<_> =
            self.due.iter().take_while(|d| d.0 <= now).filter(|d| allow(d.1)).take(max).copied().collect();
        for d in &picked {
            self.due.remove(d);
        }
        picked.into_iter().map(|(_, p, o)| (p, o)).collect()
    }

    /// Puts back a redelivery taken with `take_due*` that could not be leased
    /// (its record could not be read), so it is not forgotten until a restart.
    pub fn return_due(&mut self, p: u32, off: u64) {
        let Some(e) = self.parts.get(p as usize).and_then(|part| part.entries.get(&off)) else { return };
        if !e.state.acked && e.lease.is_none() && e.state.due_ms > 0 {
            self.due.insert((e.state.due_ms, p, off));
        }
    }

    /// Takes due redeliveries of one partition in offset order, stopping at the
    /// first scheduled one not yet due (ordered groups: a retry holds back the rest).
    pub fn take_due_in_order(&mut self, p: u32, now: i64, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for (&off, e) in &self.parts[p as usize].entries {
            if e.state.acked || e.lease.is_some() || e.state.due_ms == 0 {
                continue;
            }
            if e.state.due_ms > now || out.len() >= max {
                break;
            }
            out.push(off);
        }
        for &off in &out {
            let due = self.parts[p as usize].entries[&off].state.due_ms;
            self.due.remove(&(due, p, off));
        }
        out
    }

    /// Leases a redelivery taken with `take_due*`. Returns the attempt number.
    pub fn lease_again(
        &mut self,
        p: u32,
        off: u64,
        now: i64,
        deadline: i64,
        consumer: &str,
        out: &mut AtomicWrite,
    ) -> u32 {
        let id = self.id;
        let Some(e) = self.parts[p as usize].entries.get_mut(&off) else { return 0 };
        if e.state.due_ms > 0 {
            delete_timer(out, id, e.state.due_ms, p, off);
        }
        e.state.due_ms = 0;
        e.state.attempts += 1;
        e.state.last_delivery_ms = now;
        if e.state.first_delivery_ms == 0 {
            e.state.first_delivery_ms = now;
        }
        e.state.consumer = consumer.to_owned();
        e.lease = Some(deadline);
        e.persisted = true;
        put_message(out, id, p, off, &e.state);
        self.leases.insert((deadline, p, off));
        e.state.attempts
    }

    /// Leases the next fresh offset of `p` (must be `fresh_position(p).0`).
    pub fn lease_fresh(&mut self, p: u32, off: u64, now: i64, deadline: i64, consumer: &str) -> u32 {
        let part = &mut self.parts[p as usize];
        debug_assert_eq!(off, part.cursor.delivered);
        let state = MessageState {
            attempts: 1,
            first_delivery_ms: now,
            last_delivery_ms: now,
            consumer: consumer.to_owned(),
            ..MessageState::default()
        };
        part.entries.insert(off, Entry { state, lease: Some(deadline), persisted: false, dead_lettering: false });
        part.cursor.delivered = off + 1;
        self.dirty.insert(p);
        self.leases.insert((deadline, p, off));
        1
    }

    /// Holds the next fresh offset of `p` (must be `fresh_position(p).0`)
    /// until `due`, without delivering it: a delayed message. It is
    /// scheduled like a redelivery, with no attempt yet, so its first
    /// delivery is attempt 1 and a restart keeps its time.
    pub fn defer_fresh(&mut self, p: u32, off: u64, due: i64, out: &mut AtomicWrite) {
        let id = self.id;
        let part = &mut self.parts[p as usize];
        debug_assert_eq!(off, part.cursor.delivered);
        let state = MessageState { attempts: 0, due_ms: due.max(1), ..MessageState::default() };
        put_message(out, id, p, off, &state);
        put_timer(out, id, state.due_ms, p, off);
        self.due.insert((state.due_ms, p, off));
        part.entries.insert(off, Entry { state, lease: None, persisted: true, dead_lettering: false });
        part.cursor.delivered = off + 1;
        self.dirty.insert(p);
    }

    /// Acknowledges a delivery. Acking twice, or an already committed offset, is fine.
    /// A late ack (lease expired, not yet redelivered) is accepted.
    pub fn ack(&mut self, p: u32, off: u64, attempt: u32, out: &mut AtomicWrite) -> Result<(), AckError> {
        let id = self.id;
        let Some(e) = entry_for(&mut self.parts, p, off, attempt)? else { return Ok(()) };
        // An earlier dead-letter append's outcome is unknown (its answer was
        // lost): the message must not end both acked and dead-lettered. (Only
        // acks: a nack or an expiry must still end the lease.)
        if e.state.dead_letter_from.is_some() {
            return Err(AckError::DeadLettered);
        }
        let lease = e.lease.take();
        let due = std::mem::take(&mut e.state.due_ms);
        e.state.acked = true;
        if let Some(d) = lease {
            self.leases.remove(&(d, p, off));
        }
        if due > 0 {
            self.due.remove(&(due, p, off));
            delete_timer(out, id, due, p, off);
        }
        self.settle(p, off, out);
        Ok(())
    }

    /// After `off` became acked: advance the committed offset, or record the ack above it.
    fn settle(&mut self, p: u32, off: u64, out: &mut AtomicWrite) {
        let id = self.id;
        let part = &mut self.parts[p as usize];
        if off == part.cursor.committed {
            while let Some(e) = part.entries.get(&part.cursor.committed) {
                if !e.state.acked {
                    break;
                }
                if e.persisted {
                    delete_message(out, id, p, part.cursor.committed);
                }
                part.entries.remove(&part.cursor.committed);
                part.cursor.committed += 1;
            }
            self.dirty.insert(p);
        } else if let Some(e) = part.entries.get_mut(&off) {
            e.persisted = true;
            put_message(out, id, p, off, &e.state);
        }
    }

    /// A delivery failed (nack or expired lease): schedule it after its delay,
    /// or report that its attempts are exhausted.
    pub fn fail(&mut self, f: Failure<'_>, out: &mut AtomicWrite) -> Result<FailOutcome, AckError> {
        let Failure { partition: p, offset: off, attempt, now, delay_ms, reason, consumer, max_attempts } = f;
        let id = self.id;
        let Some(e) = entry_for(&mut self.parts, p, off, attempt)? else { return Ok(FailOutcome::Ignored) };
        let Some(deadline) = e.lease.take() else { return Ok(FailOutcome::Ignored) };
        e.state.reason = reason.to_owned();
        if !consumer.is_empty() {
            e.state.consumer = consumer.to_owned();
        }
        self.leases.remove(&(deadline, p, off));
        if max_attempts > 0 && e.state.attempts >= max_attempts {
            e.dead_lettering = true;
            return Ok(FailOutcome::DeadLetter);
        }
        let due = now + delay_ms.max(0);
        e.state.due_ms = due.max(1);
        e.persisted = true;
        put_message(out, id, p, off, &e.state);
        put_timer(out, id, e.state.due_ms, p, off);
        self.due.insert((e.state.due_ms, p, off));
        Ok(FailOutcome::Scheduled(e.state.due_ms))
    }

    /// Messages recovery found half dead-lettered, as (partition, offset); once.
    pub fn take_recovered_dead_letters(&mut self) -> Vec<(u32, u64)> {
        std::mem::take(&mut self.recovered_dead_letters)
    }

    /// Durably marks a message as being dead-lettered, with the dead-letter
    /// partition's end now: a restart before `dead_lettered` searches from there
    /// for a copy already written instead of appending another.
    ///
    /// # Correctness
    /// The marker must be committed before the dead-letter append is (both go
    /// through the one writer, in order).
    pub fn mark_dead_lettering(&mut self, p: u32, off: u64, dead_letter_end: u64, out: &mut AtomicWrite) {
        let id = self.id;
        let Some(e) = self.parts.get_mut(p as usize).and_then(|part| part.entries.get_mut(&off)) else { return };
        if e.state.acked {
            return;
        }
        let from = e.state.dead_letter_from.map_or(dead_letter_end, |f| f.min(dead_letter_end));
        e.state.dead_letter_from = Some(from);
        e.persisted = true;
        put_message(out, id, p, off, &e.state);
    }

    /// The message was written to the dead-letter topic: ack it at the source.
    pub fn dead_lettered(&mut self, p: u32, off: u64, out: &mut AtomicWrite) {
        let Some(e) = self.parts[p as usize].entries.get_mut(&off) else { return };
        e.state.acked = true;
        self.parts[p as usize].cursor.dead_lettered += 1;
        self.dirty.insert(p);
        self.settle(p, off, out);
    }

    /// Schedules a message that is neither leased nor scheduled (a dead-lettering that failed).
    ///
    /// # Correctness
    /// The dead-letter marker stays: a failed append may still have been
    /// stored (in a cluster, an answer lost with the leader, or a proposal
    /// committed after it timed out), so the next attempt looks for a copy
    /// from the marker on, and acks of the message are refused meanwhile.
    pub fn schedule(&mut self, p: u32, off: u64, due: i64, out: &mut AtomicWrite) {
        let id = self.id;
        let Some(e) = self.parts[p as usize].entries.get_mut(&off) else { return };
        if e.state.acked || e.lease.is_some() {
            return;
        }
        e.dead_lettering = false;
        if e.state.due_ms > 0 {
            self.due.remove(&(e.state.due_ms, p, off));
        }
        e.state.due_ms = due.max(1);
        e.persisted = true;
        put_message(out, id, p, off, &e.state);
        put_timer(out, id, e.state.due_ms, p, off);
        self.due.insert((e.state.due_ms, p, off));
    }

    /// The message state for dead-letter headers.
    pub fn message(&self, p: u32, off: u64) -> Option<&MessageState> {
        self.parts.get(p as usize)?.entries.get(&off).map(|e| &e.state)
    }

    /// Sets a new lease end for a delivery still leased.
    pub fn extend(&mut self, p: u32, off: u64, attempt: u32, deadline: i64) -> Result<bool, AckError> {
        let Some(e) = entry_for(&mut self.parts, p, off, attempt)? else { return Ok(false) };
        let Some(old) = e.lease.replace(deadline) else {
            e.lease = None;
            return Ok(false);
        };
        self.leases.remove(&(old, p, off));
        self.leases.insert((deadline, p, off));
        Ok(true)
    }

    /// Leases that ended at or before `now`, as (partition, offset, attempt).
    /// They stay leased until the caller passes each to `fail`.
    pub fn expired(&self, now: i64) -> Vec<(u32, u64, u32)> {
        self.leases
            .iter()
            .take_while(|l| l.0 <= now)
            .filter_map(|&(_, p, off)| self.parts[p as usize].entries.get(&off).map(|e| (p, off, e.state.attempts)))
            .collect()
    }

    /// Gives up every lease on `p` (its ordered-group owner left): due at `now`.
    pub fn release_partition(&mut self, p: u32, now: i64) {
        let part = &mut self.parts[p as usize];
        for (&off, e) in part.entries.iter_mut() {
            if let Some(d) = e.lease.take() {
                self.leases.remove(&(d, p, off));
                e.state.due_ms = now.max(1);
                self.due.insert((e.state.due_ms, p, off));
            }
        }
    }

    /// Moves `p` to `target`, dropping every lease, schedule and ack above the old position.
    pub fn seek(&mut self, p: u32, target: u64, out: &mut AtomicWrite) {
        let id = self.id;
        let part = &mut self.parts[p as usize];
        for (off, e) in std::mem::take(&mut part.entries) {
            if let Some(d) = e.lease {
                self.leases.remove(&(d, p, off));
            }
            if e.state.due_ms > 0 && !e.state.acked {
                self.due.remove(&(e.state.due_ms, p, off));
                delete_timer(out, id, e.state.due_ms, p, off);
            }
            if e.persisted {
                delete_message(out, id, p, off);
            }
        }
        part.cursor.committed = target;
        part.cursor.delivered = target;
        self.dirty.insert(p);
    }

    /// Per-partition figures.
    pub fn stats(&self, p: u32) -> PartitionStats {
        let part = &self.parts[p as usize];
        PartitionStats {
            committed: part.cursor.committed,
            delivered: part.cursor.delivered,
            in_flight: part.entries.values().filter(|e| e.lease.is_some()).count() as u64,
            acked_above: part.entries.values().filter(|e| e.state.acked).count() as u64,
            dead_lettered: part.cursor.dead_lettered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure of `offset` on partition 0, attempt `attempt`, for these tests.
    fn failure(offset: u64, attempt: u32, now: i64, delay_ms: i64, max_attempts: u32) -> Failure<'static> {
        Failure { partition: 0, offset, attempt, now, delay_ms, reason: "boom", consumer: "a", max_attempts }
    }

    #[test]
    fn a_deferred_message_is_due_at_its_time_as_attempt_one_also_after_recovery() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        g.defer_fresh(0, 0, 5_000, &mut out);
        assert_eq!(g.fresh_position(0), (1, 1), "past the cursor, not settled");
        assert!(g.take_due(4_999, 10, |_| true).is_empty(), "not before its time");
        assert_eq!(g.next_wakeup(0), Some(5_000));
        let stored = RecoveredGroupState {
            cursors: [(0, GroupCursor { committed: 0, delivered: 1, dead_lettered: 0 })].into_iter().collect(),
            messages: [(0, [(0, g.message(0, 0).cloned().expect("kept"))].into_iter().collect())].into_iter().collect(),
            ..Default::default()
        };
        for g in [&mut g, &mut GroupState::recover(1, 1, stored, 100)] {
            assert!(g.take_due(4_999, 10, |_| true).is_empty(), "a restart neither forgets nor shortens the wait");
            assert_eq!(g.take_due(5_000, 10, |_| true), vec![(0, 0)]);
            assert_eq!(g.lease_again(0, 0, 5_000, 6_000, "c", &mut out), 1, "first delivery");
        }
    }

    #[test]
    fn acks_advance_the_committed_offset_only_over_contiguous_acks() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        for off in 0..4 {
            g.lease_fresh(0, off, 0, 100, "c");
        }
        g.ack(0, 2, 1, &mut out).expect("ack");
        assert_eq!(g.stats(0).committed, 0);
        g.ack(0, 0, 1, &mut out).expect("ack");
        assert_eq!(g.stats(0).committed, 1);
        g.ack(0, 1, 1, &mut out).expect("ack");
        assert_eq!(g.stats(0).committed, 3);
        assert_eq!(g.stats(0).in_flight, 1);
        g.ack(0, 1, 1, &mut out).expect("acking twice is fine");
        assert_eq!(g.ack(0, 9, 1, &mut out), Err(AckError::NotDelivered(9)));
    }

    #[test]
    fn expired_lease_is_rescheduled_and_a_stale_ack_is_refused() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        g.lease_fresh(0, 0, 0, 100, "a");
        assert!(g.expired(99).is_empty());
        let exp = g.expired(100);
        assert_eq!(exp, vec![(0, 0, 1)]);
        assert_eq!(g.fail(failure(0, 1, 100, 50, 0), &mut out), Ok(FailOutcome::Scheduled(150)));
        assert!(g.take_due(149, 10, |_| true).is_empty(), "not before its backoff");
        assert_eq!(g.take_due(150, 10, |_| true), vec![(0, 0)]);
        assert_eq!(g.lease_again(0, 0, 150, 250, "b", &mut out), 2);
        assert_eq!(g.ack(0, 0, 1, &mut out), Err(AckError::Stale { current: 2 }));
        g.ack(0, 0, 2, &mut out).expect("current attempt acks");
        assert_eq!(g.stats(0).committed, 1);
    }

    #[test]
    fn exhausted_attempts_ask_for_dead_lettering() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        g.lease_fresh(0, 0, 0, 100, "a");
        assert_eq!(g.fail(failure(0, 1, 1, 0, 2), &mut out), Ok(FailOutcome::Scheduled(1)));
        g.take_due(1, 1, |_| true);
        g.lease_again(0, 0, 1, 100, "a", &mut out);
        assert_eq!(g.fail(failure(0, 2, 2, 0, 2), &mut out), Ok(FailOutcome::DeadLetter));
        assert_eq!(g.message(0, 0).map(|m| m.reason.as_str()), Some("boom"));
        g.dead_lettered(0, 0, &mut out);
        assert_eq!(g.stats(0).committed, 1);
        assert_eq!(g.stats(0).dead_lettered, 1);
    }

    #[test]
    fn recovery_makes_unacked_deliveries_due_and_keeps_attempts() {
        let mut stored = RecoveredGroupState::default();
        stored.cursors.insert(0, GroupCursor { committed: 5, delivered: 8, dead_lettered: 0 });
        let acked = MessageState { acked: true, attempts: 1, ..Default::default() };
        let retried = MessageState { attempts: 3, due_ms: 500, ..Default::default() };
        stored.messages.entry(0).or_default().insert(6, acked);
        stored.messages.entry(0).or_default().insert(7, retried);
        let mut g = GroupState::recover(1, 1, stored, 100);
        assert_eq!(g.take_due(100, 10, |_| true), vec![(0, 5)]);
        assert_eq!(g.take_due(500, 10, |_| true), vec![(0, 7)]);
        let mut out = AtomicWrite::new();
        assert_eq!(g.lease_again(0, 7, 500, 600, "c", &mut out), 4, "attempts survive restarts");
    }

    #[test]
    fn ordered_redelivery_holds_back_later_offsets() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        for off in 0..3 {
            g.lease_fresh(0, off, 0, 100, "a");
        }
        g.fail(failure(0, 1, 0, 50, 0), &mut out).expect("nack");
        g.fail(failure(1, 1, 0, 0, 0), &mut out).expect("nack");
        g.ack(0, 2, 1, &mut out).expect("ack");
        assert!(g.take_due_in_order(0, 10, 10).is_empty(), "offset 1 waits behind offset 0");
        assert_eq!(g.take_due_in_order(0, 50, 10), vec![0, 1]);
    }

    #[test]
    fn a_taken_redelivery_that_could_not_be_read_is_due_again() {
        let mut g = GroupState::new(1, &[0]);
        let mut out = AtomicWrite::new();
        g.lease_fresh(0, 0, 0, 100, "a");
        assert_eq!(g.fail(failure(0, 1, 100, 10, 0), &mut out), Ok(FailOutcome::Scheduled(110)));
        assert_eq!(g.take_due(200, 10, |_| true), vec![(0, 0)]);
        assert!(!g.has_due(200), "taken: no longer in the due set");
        g.return_due(0, 0);
        assert!(g.has_due(200), "returned after a failed read");
        assert_eq!(g.take_due(200, 10, |_| true), vec![(0, 0)]);
    }

    #[test]
    fn a_message_caught_while_being_dead_lettered_is_finished_after_recovery() {
        let mut g = GroupState::new(4, &[0]);
        let mut out = AtomicWrite::new();
        g.lease_fresh(0, 0, 0, 100, "a");
        g.lease_fresh(0, 1, 0, 100, "a");
        assert_eq!(g.fail(failure(0, 1, 100, 0, 1), &mut out), Ok(FailOutcome::DeadLetter));
        g.mark_dead_lettering(0, 0, 42, &mut out);
        assert_eq!(g.ack(0, 0, 1, &mut out), Err(AckError::DeadLettered), "a late ack is refused");
        let stored = g.message(0, 0).cloned().expect("entry");
        assert_eq!(stored.dead_letter_from, Some(42));
        let mut recovered = RecoveredGroupState::default();
        recovered.cursors.insert(0, GroupCursor { committed: 0, delivered: 2, dead_lettered: 0 });
        recovered.messages.entry(0).or_default().insert(0, stored);
        let mut g = GroupState::recover(4, 1, recovered, 500);
        assert_eq!(g.take_recovered_dead_letters(), vec![(0, 0)]);
        assert_eq!(g.take_due(500, 10, |_| true), vec![(0, 1)], "only the other message is due again");
        g.dead_lettered(0, 0, &mut out);
        assert_eq!(g.stats(0).dead_lettered, 1);
    }
}
