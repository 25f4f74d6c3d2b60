//! A Jepsen-style history of what clients of a partitioned log were told,
//! checked against the model of such a log once the run is over:
//! - each partition is one append-only sequence of records, dense offsets;
//! - an acknowledged append is in it once, at the offset its answer named;
//! - **real-time order** (the linearizability of appends): an append invoked
//!   after another to the same partition was acknowledged lands after it;
//! - **no dirty read**: every record any reader was served (a fetch at any
//!   replica, a consumer group's delivery) is the one the final log holds at
//!   that partition and offset — a read never saw a record that was later
//!   rewound (uncommitted), and two reads of one offset never disagree.
//!
//! The clients record as they go ([`History::appended`], [`History::read`]);
//! [`History::check`] compares with the log as every replica serves it at
//! the end. Instants are taken by the client: an append's invocation before
//! it is handed to the producer, its acknowledgement when the client sees
//! the answer, so the real-time constraints checked are weaker than the
//! broker's own (never stronger): a violation is a real one.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use sluice_client::proto as pb;

/// One acknowledged append, as its client saw it.
#[derive(Debug, Clone)]
struct Append {
    value: String,
    offset: u64,
    invoked: Instant,
    acked: Instant,
}

/// What the clients of one topic were told.
#[derive(Debug, Default)]
pub struct History {
    /// Acknowledged appends, by partition.
    appends: BTreeMap<u32, Vec<Append>>,
    /// The value every read found at (partition, offset): the first one seen.
    reads: HashMap<(u32, u64), String>,
    /// Reads of one offset that found different values.
    conflicts: Vec<String>,
    /// How many records readers were served, in all.
    read_count: u64,
}

impl History {
    /// Records that an append of `value`, invoked at `invoked`, was
    /// acknowledged at `acked` at `partition`, `offset`.
    pub fn appended(&mut self, value: &str, (partition, offset): (u32, u64), invoked: Instant, acked: Instant) {
        let append = Append { value: value.to_owned(), offset, invoked, acked };
        self.appends.entry(partition).or_default().push(append);
    }

    /// Records that a reader was served `record` (by `source`: "broker 2",
    /// "the group"), checking it against earlier reads of the same offset.
    pub fn read(&mut self, record: &pb::Record, source: &str) {
        self.read_count += 1;
        let value = String::from_utf8_lossy(&record.value);
        let at = (record.partition, record.offset);
        match self.reads.get(&at) {
            Some(seen) if *seen != value => self
                .conflicts
                .push(format!("{source} served `{value}` at {}/{} where an earlier read found `{seen}`", at.0, at.1)),
            Some(_) => {}
            None => {
                self.reads.insert(at, value.into_owned());
            }
        }
    }

    /// How many records readers were served, and at how many distinct offsets.
    pub fn reads(&self) -> (u64, usize) {
        (self.read_count, self.reads.len())
    }

    /// The ways the history departs from the model, given the final log:
    /// `log[p]` is partition `p`'s records as every replica serves them.
    /// Empty when it holds.
    pub fn check(&self, log: &[Vec<pb::Record>]) -> Vec<String> {
        let mut violations = self.conflicts.clone();
        let at = |partition: u32, offset: u64| -> Option<String> {
            let records = log.get(partition as usize)?;
            let first = records.first()?.offset;
            let record = records.get(usize::try_from(offset.checked_sub(first)?).ok()?)?;
            (record.offset == offset).then(|| String::from_utf8_lossy(&record.value).into_owned())
        };
        for (partition, records) in log.iter().enumerate() {
            for pair in records.windows(2) {
                if pair[1].offset != pair[0].offset + 1 {
                    violations
                        .push(format!("partition {partition}: offset {} follows {}", pair[1].offset, pair[0].offset));
                }
            }
        }
        for (&partition, appends) in &self.appends {
            for a in appends {
                let stored = at(partition, a.offset);
                if stored.as_deref() != Some(a.value.as_str()) {
                    violations.push(format!(
                        "acknowledged append `{}` at {partition}/{}: the log holds {stored:?} there",
                        a.value, a.offset
                    ));
                }
            }
            violations.extend(real_time_order(partition, appends));
        }
        for (&(partition, offset), value) in &self.reads {
            let stored = at(partition, offset);
            if stored.as_deref() != Some(value.as_str()) {
                violations.push(format!(
                    "dirty read: `{value}` was served at {partition}/{offset}; the log holds {stored:?} there"
                ));
            }
        }
        violations
    }
}

/// The appends of one partition that break real-time order: `a` acknowledged
/// before `b` was invoked, yet `b` stored at a lower offset. One pass in
/// offset order, carrying the latest invocation among lower offsets.
fn real_time_order(partition: u32, appends: &[Append]) -> Vec<String> {
    let mut by_offset: Vec<&Append> = appends.iter().collect();
    by_offset.sort_by_key(|a| a.offset);
    let mut latest_below: Option<&Append> = None;
    let mut violations = Vec::new();
    for a in by_offset {
        if let Some(b) = latest_below.filter(|b| a.acked < b.invoked) {
            violations.push(format!(
                "partition {partition}: `{}` (offset {}) was acknowledged before `{}` was sent, which is stored \
                 before it (offset {})",
                a.value, a.offset, b.value, b.offset
            ));
        }
        if latest_below.is_none_or(|b| a.invoked > b.invoked) {
            latest_below = Some(a);
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(partition: u32, offset: u64, value: &str) -> pb::Record {
        pb::Record { partition, offset, value: value.as_bytes().to_vec().into(), ..Default::default() }
    }

    /// Appends a, b, c in sequence (each acknowledged before the next is
    /// sent), and the log `stored` (values at offsets 0, 1, 2 of partition 0).
    fn sequential(stored: [&str; 3]) -> (History, Vec<Vec<pb::Record>>) {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = History::default();
        let offset_of = |v: &str| stored.iter().position(|s| *s == v).unwrap_or(9) as u64;
        h.appended("a", (0, offset_of("a")), ms(0), ms(10));
        h.appended("b", (0, offset_of("b")), ms(20), ms(30));
        h.appended("c", (0, offset_of("c")), ms(40), ms(50));
        let log = vec![stored.iter().enumerate().map(|(o, v)| record(0, o as u64, v)).collect()];
        (h, log)
    }

    #[test]
    fn a_log_in_acknowledgement_order_passes() {
        let (mut h, log) = sequential(["a", "b", "c"]);
        h.read(&record(0, 1, "b"), "broker 2");
        assert_eq!(h.check(&log), Vec::<String>::new());
    }

    #[test]
    fn an_append_stored_before_one_acknowledged_ahead_of_it_is_caught() {
        let (h, log) = sequential(["a", "c", "b"]);
        let found = h.check(&log);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`b` (offset 2) was acknowledged before `c` was sent"), "{found:?}");
    }

    #[test]
    fn concurrent_appends_may_land_in_either_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = History::default();
        h.appended("a", (0, 1), ms(0), ms(30));
        h.appended("b", (0, 0), ms(10), ms(20));
        assert_eq!(h.check(&[vec![record(0, 0, "b"), record(0, 1, "a")]]), Vec::<String>::new());
    }

    #[test]
    fn a_read_of_a_rewound_record_and_a_lost_append_are_caught() {
        let (mut h, log) = sequential(["a", "b", "c"]);
        h.read(&record(0, 2, "x"), "broker 3");
        h.read(&record(0, 2, "c"), "broker 1");
        h.appended("d", (0, 3), Instant::now(), Instant::now());
        let found = h.check(&log);
        assert!(found.iter().any(|v| v.contains("where an earlier read found `x`")), "{found:?}");
        assert!(found.iter().any(|v| v.starts_with("dirty read: `x`")), "{found:?}");
        assert!(found.iter().any(|v| v.contains("acknowledged append `d` at 0/3")), "{found:?}");
    }

    #[test]
    fn a_gap_in_offsets_is_caught() {
        let log = vec![vec![record(0, 0, "a"), record(0, 2, "b")]];
        let found = History::default().check(&log);
        assert_eq!(found, ["partition 0: offset 2 follows 0"]);
    }
}
