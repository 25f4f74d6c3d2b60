//! Records a group actor read past what a pull took, kept for the next pull
//! of the same partition. A stored batch holds up to a thousand records, and
//! reading any of them copies and checks the whole batch: a group pulling a
//! few at a time (a push dispatcher sending one event per request) would pay
//! for the batch on every pull. Reading ahead once pays for it once.
//!
//! # Correctness
//! Only records at or below the partition's committed end are read, and a
//! committed record never changes, so a kept record is what a new read would
//! return. A kept run is used only when it starts exactly at the offset asked
//! for (a seek, a retention trim or a filter that skipped ahead drops it).
//! Memory is bounded: at most `MAX_PARTITIONS` runs of at most
//! `MAX_RECORDS` records and about `MAX_BYTES` each, per group.

use std::collections::{HashMap, VecDeque};

use sluice_storage::StoredRecord;

/// Most records read ahead per partition.
pub const MAX_RECORDS: u64 = 512;
/// About the most bytes read ahead per partition.
pub const MAX_BYTES: usize = 1 << 20;
/// Most partitions with records kept at once.
const MAX_PARTITIONS: usize = 16;

/// The kept runs of one group, by partition.
#[derive(Debug, Default)]
pub struct ReadAhead {
    runs: HashMap<u32, VecDeque<StoredRecord>>,
}

impl ReadAhead {
    /// Up to `n` kept records of partition `p` starting exactly at `from`;
    /// `None` when fewer than `n` are kept there (the caller reads, then `keep`s).
    pub fn take(&mut self, p: u32, from: u64, n: usize) -> Option<Vec<StoredRecord>> {
        let run = self.runs.get_mut(&p)?;
        if run.front().map(|r| r.offset) != Some(from) || run.len() < n {
            self.runs.remove(&p);
            return None;
        }
        let taken: Vec<StoredRecord> = run.drain(..n).collect();
        if run.is_empty() {
            self.runs.remove(&p);
        }
        Some(taken)
    }

    /// Keeps `records` (read from partition `p`, in offset order) but the first `n`, which are returned.
    pub fn keep(&mut self, p: u32, mut records: Vec<StoredRecord>, n: usize) -> Vec<StoredRecord> {
        if records.len() <= n {
            self.runs.remove(&p);
            return records;
        }
        let rest: VecDeque<StoredRecord> = records.split_off(n).into();
        if self.runs.len() >= MAX_PARTITIONS && !self.runs.contains_key(&p) {
            self.runs.clear();
        }
        self.runs.insert(p, rest);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(from: u64, n: u64) -> Vec<StoredRecord> {
        (from..from + n)
            .map(|offset| StoredRecord {
                offset,
                timestamp_ms: 0,
                key: None,
                value: Default::default(),
                headers: vec![],
            })
            .collect()
    }

    #[test]
    fn kept_records_serve_the_next_pull_only_where_it_starts() {
        let mut ahead = ReadAhead::default();
        let first = ahead.keep(3, records(10, 8), 2);
        assert_eq!(first.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![10, 11]);
        let next = ahead.take(3, 12, 4).expect("kept");
        assert_eq!(next.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![12, 13, 14, 15]);
        assert!(ahead.take(3, 17, 1).is_none(), "a run not starting at the offset asked for is dropped");
        assert!(ahead.take(3, 16, 1).is_none(), "and is gone");
        ahead.keep(4, records(0, 3), 1);
        assert!(ahead.take(4, 1, 5).is_none(), "fewer kept than asked for: read again");
        for p in 0..=MAX_PARTITIONS as u32 {
            ahead.keep(p, records(0, 2), 1);
        }
        assert!(ahead.runs.len() <= MAX_PARTITIONS);
    }
}
