//! Model check of group semantics: random sequences of produce, pull, ack,
//! nack, lease expiry (a controllable clock), seek and restart are applied to
//! `GroupState` persisted in a `Store` (the in-memory engine for many cases,
//! real RocksDB for a sample; a restart reopens it), and to a deliberately naive
//! reference model (one status per message). After every step both must agree
//! on what was delivered (with which attempt), which acks were accepted, and
//! each partition's committed/delivered/dead-lettered figures.

use std::collections::BTreeMap;

use proptest::prelude::*;
use std::sync::Arc;

use sluice_storage::{AtomicWrite, MemoryDisk, Store, StoreConfig};

use super::state::{AckError, FailOutcome, Failure, GroupState};

const GROUP: u64 = 7;
const PARTITIONS: u32 = 2;
const LEASE_MS: i64 = 100;
const RETRY_MS: i64 = 30;
const MAX_ATTEMPTS: u32 = 3;

/// A small store: the check opens one per case and reopens it on every restart.
fn store_options() -> StoreConfig {
    StoreConfig { write_buffer_bytes: 1 << 20, background_jobs: 1, min_free_bytes: 0 }
}

/// Cases per run over the in-memory engine: `make test` runs the default, `make soak` many more.
fn memory_cases() -> u32 {
    std::env::var("SLUICE_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000)
}

/// Cases per run over RocksDB (an open per case and per restart makes these slow).
fn rocksdb_cases() -> u32 {
    std::env::var("SLUICE_MODEL_ROCKSDB_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24)
}

/// Where the harness keeps its store between restarts.
enum Disk {
    Rocks(tempfile::TempDir),
    Memory(MemoryDisk),
}

impl Disk {
    fn open(&self) -> (Arc<Store>, sluice_storage::Recovered) {
        match self {
            Disk::Rocks(dir) => Store::open(dir.path(), &store_options()).expect("open store"),
            Disk::Memory(disk) => Store::open_in_memory(disk).expect("open memory store"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Produce(u32, u8),
    Pull(u8),
    Ack(usize),
    Nack(usize),
    Advance(u16),
    Seek(u32, u8),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PARTITIONS, 1u8..6).prop_map(|(p, n)| Op::Produce(p, n)),
        4 => (1u8..5).prop_map(Op::Pull),
        4 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Nack),
        2 => (1u16..250).prop_map(Op::Advance),
        1 => (0..PARTITIONS, any::<u8>()).prop_map(|(p, t)| Op::Seek(p, t)),
        1 => Just(Op::Restart),
    ]
}

/// The reference: what one message is doing, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Leased { deadline: i64 },
    Due { at: i64 },
    Acked,
    DeadLettered,
}

#[derive(Debug, Clone, Copy)]
struct ModelMessage {
    attempts: u32,
    status: Status,
}

#[derive(Debug, Default)]
struct ModelPartition {
    end: u64,
    start: u64,
    /// Offsets in `[start, next_fresh)` were delivered since the last seek.
    next_fresh: u64,
    messages: BTreeMap<u64, ModelMessage>,
    dead: u64,
}

impl ModelPartition {
    fn committed(&self) -> u64 {
        let mut c = self.start;
        while c < self.next_fresh
            && matches!(self.messages.get(&c).map(|m| m.status), Some(Status::Acked | Status::DeadLettered))
        {
            c += 1;
        }
        c
    }

    /// Whether an ack of `attempt` is accepted, per the documented semantics:
    /// the current attempt (even after its lease ended, until redelivered), or
    /// anything already settled.
    fn ack_accepted(&self, off: u64, attempt: u32) -> bool {
        if off < self.start {
            return true;
        }
        match self.messages.get(&off) {
            None => false,
            Some(m) => matches!(m.status, Status::Acked | Status::DeadLettered) || m.attempts == attempt,
        }
    }
}

struct Harness {
    disk: Disk,
    store: Option<Arc<Store>>,
    state: GroupState,
    model: Vec<ModelPartition>,
    now: i64,
    /// Every delivery handed out so far (acks and nacks pick from these, stale ones included).
    handed_out: Vec<(u32, u64, u32)>,
}

impl Harness {
    fn new(disk: Disk) -> Self {
        let (store, _) = disk.open();
        let mut h = Harness {
            disk,
            store: Some(store),
            state: GroupState::new(GROUP, &vec![0; PARTITIONS as usize]),
            model: (0..PARTITIONS).map(|_| ModelPartition::default()).collect(),
            now: 1_000,
            handed_out: Vec::new(),
        };
        h.persist(AtomicWrite::new());
        h
    }

    fn persist(&mut self, mut out: AtomicWrite) {
        self.state.flush_cursors(&mut out);
        let store = self.store.as_ref().expect("store is open");
        store.apply(std::iter::once(&out), false).expect("write group state");
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Produce(p, n) => self.model[p as usize].end += u64::from(n),
            Op::Pull(max) => self.pull(usize::from(max)),
            Op::Ack(i) => self.ack(i),
            Op::Nack(i) => self.nack(i),
            Op::Advance(ms) => {
                self.now += i64::from(ms);
                self.expire();
            }
            Op::Seek(p, t) => self.seek(p, t),
            Op::Restart => self.restart(),
        }
        self.compare();
    }

    /// Mirrors the actor's shared-group pull: due redeliveries first, then fresh offsets.
    fn pull(&mut self, max: usize) {
        let mut out = AtomicWrite::new();
        let mut delivered = Vec::new();
        for (p, off) in self.state.take_due(self.now, max, |_| true) {
            let attempt = self.state.lease_again(p, off, self.now, self.now + LEASE_MS, "c", &mut out);
            delivered.push((p, off, attempt));
        }
        for p in 0..PARTITIONS {
            while delivered.len() < max {
                let (next, _) = self.state.fresh_position(p);
                if next >= self.model[p as usize].end {
                    break;
                }
                let attempt = self.state.lease_fresh(p, next, self.now, self.now + LEASE_MS, "c");
                delivered.push((p, next, attempt));
            }
        }
        self.persist(out);
        let deliverable = self.model_deliverable();
        assert_eq!(
            delivered.len(),
            max.min(deliverable),
            "pull of {max} at {} delivered {delivered:?}, the model has {deliverable} deliverable",
            self.now
        );
        for &(p, off, attempt) in &delivered {
            let m = &mut self.model[p as usize];
            let entry = if off == m.next_fresh {
                m.next_fresh += 1;
                m.messages.entry(off).or_insert(ModelMessage { attempts: 0, status: Status::Due { at: 0 } })
            } else {
                m.messages.get_mut(&off).expect("a redelivery is of a delivered offset")
            };
            assert!(
                matches!(entry.status, Status::Due { at } if at <= self.now),
                "{p}/{off} delivered while the model has it {:?}",
                entry.status
            );
            entry.attempts += 1;
            assert_eq!(attempt, entry.attempts, "attempt number of {p}/{off}");
            entry.status = Status::Leased { deadline: self.now + LEASE_MS };
            self.handed_out.push((p, off, attempt));
        }
    }

    fn model_deliverable(&self) -> usize {
        self.model
            .iter()
            .map(|m| {
                let due = m.messages.values().filter(|x| matches!(x.status, Status::Due { at } if at <= self.now));
                due.count() + (m.end.saturating_sub(m.next_fresh)) as usize
            })
            .sum()
    }

    fn pick(&self, i: usize) -> Option<(u32, u64, u32)> {
        (!self.handed_out.is_empty()).then(|| self.handed_out[i % self.handed_out.len()])
    }

    fn ack(&mut self, i: usize) {
        let Some((p, off, attempt)) = self.pick(i) else { return };
        let mut out = AtomicWrite::new();
        let real = self.state.ack(p, off, attempt, &mut out);
        self.persist(out);
        let m = &mut self.model[p as usize];
        let expected = m.ack_accepted(off, attempt);
        assert_eq!(real.is_ok(), expected, "ack {p}/{off} attempt {attempt}: real {real:?}");
        if let (true, Some(msg)) = (expected, m.messages.get_mut(&off)) {
            if msg.status != Status::DeadLettered {
                msg.status = Status::Acked;
            }
        }
    }

    fn nack(&mut self, i: usize) {
        let Some((p, off, attempt)) = self.pick(i) else { return };
        self.fail(p, off, attempt, true);
    }

    /// A failed delivery, by nack or expiry; the model decides the outcome on its own.
    fn fail(&mut self, p: u32, off: u64, attempt: u32, nack: bool) {
        let mut out = AtomicWrite::new();
        let now = self.now;
        let failure = Failure {
            partition: p,
            offset: off,
            attempt,
            now,
            delay_ms: RETRY_MS,
            reason: "x",
            consumer: "c",
            max_attempts: MAX_ATTEMPTS,
        };
        let real = self.state.fail(failure, &mut out);
        if real == Ok(FailOutcome::DeadLetter) {
            self.state.dead_lettered(p, off, &mut out);
        }
        self.persist(out);
        let m = &mut self.model[p as usize];
        let current = m.messages.get(&off).copied().filter(|_| off >= m.start);
        let expected = match current {
            None if off < m.start => Ok(FailOutcome::Ignored),
            None => Err(()),
            Some(msg) if matches!(msg.status, Status::Acked | Status::DeadLettered) => Ok(FailOutcome::Ignored),
            Some(msg) if msg.attempts != attempt => Err(()),
            Some(ModelMessage { status: Status::Due { .. }, .. }) => Ok(FailOutcome::Ignored),
            Some(msg) if msg.attempts >= MAX_ATTEMPTS => Ok(FailOutcome::DeadLetter),
            Some(_) => Ok(FailOutcome::Scheduled(now + RETRY_MS)),
        };
        assert_eq!(real.clone().map_err(|_: AckError| ()), expected, "fail {p}/{off} attempt {attempt} (nack {nack})");
        if let (Ok(outcome), Some(msg)) = (expected, m.messages.get_mut(&off)) {
            match outcome {
                FailOutcome::DeadLetter => {
                    msg.status = Status::DeadLettered;
                    m.dead += 1;
                }
                FailOutcome::Scheduled(at) => msg.status = Status::Due { at },
                FailOutcome::Ignored => {}
            }
        }
    }

    fn expire(&mut self) {
        for (p, off, attempt) in self.state.expired(self.now) {
            self.fail(p, off, attempt, false);
        }
        for m in &self.model {
            for (off, msg) in &m.messages {
                assert!(
                    !matches!(msg.status, Status::Leased { deadline } if deadline <= self.now),
                    "model lease of {off} ended at {:?} but the state did not expire it",
                    msg.status
                );
            }
        }
    }

    fn seek(&mut self, p: u32, target: u8) {
        let target = u64::from(target) % (self.model[p as usize].end + 1);
        let mut out = AtomicWrite::new();
        self.state.seek(p, target, &mut out);
        self.persist(out);
        let m = &mut self.model[p as usize];
        m.messages.clear();
        m.start = target;
        m.next_fresh = target;
    }

    /// Closes and reopens the store, rebuilding the state from what it holds:
    /// every lease is gone, so leased messages become due now.
    fn restart(&mut self) {
        drop(self.store.take());
        let (store, mut recovered) = self.disk.open();
        self.store = Some(store);
        let stored = recovered.group_states.remove(&GROUP).unwrap_or_default();
        self.state = GroupState::recover(GROUP, PARTITIONS, stored, self.now);
        for m in &mut self.model {
            for msg in m.messages.values_mut() {
                if let Status::Leased { .. } = msg.status {
                    msg.status = Status::Due { at: self.now };
                }
            }
        }
    }

    fn compare(&self) {
        for p in 0..PARTITIONS {
            let (real, model) = (self.state.stats(p), &self.model[p as usize]);
            assert_eq!(real.committed, model.committed(), "committed offset of partition {p}");
            assert_eq!(real.delivered, model.next_fresh, "delivered offset of partition {p}");
            let leased = model.messages.values().filter(|m| matches!(m.status, Status::Leased { .. })).count();
            assert_eq!(real.in_flight, leased as u64, "leased messages of partition {p}");
            assert_eq!(real.dead_lettered, model.dead, "dead-lettered count of partition {p}");
        }
    }

    /// Ends the run: time passes, everything deliverable is pulled and acked,
    /// and every produced message must end acked or dead-lettered.
    fn drain(&mut self) {
        for _ in 0..(MAX_ATTEMPTS as usize + 2) * 4 {
            self.now += LEASE_MS + RETRY_MS;
            self.expire();
            let before = self.handed_out.len();
            self.pull(1_000);
            for i in before..self.handed_out.len() {
                self.ack(i);
            }
            self.compare();
        }
        for p in 0..PARTITIONS {
            let m = &self.model[p as usize];
            assert_eq!(self.state.stats(p).committed, m.end, "partition {p} fully settled after the drain");
        }
    }
}

fn check(disk: Disk, ops: &[Op]) {
    let mut h = Harness::new(disk);
    for op in ops {
        h.apply(op);
    }
    h.drain();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: memory_cases(), ..ProptestConfig::default() })]

    #[test]
    fn group_state_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        check(Disk::Memory(MemoryDisk::new()), &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: rocksdb_cases(), ..ProptestConfig::default() })]

    #[test]
    fn group_state_over_rocksdb_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        check(Disk::Rocks(tempfile::tempdir().expect("temp dir")), &ops);
    }
}
