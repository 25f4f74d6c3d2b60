//! Key layout. Every key is big-endian so RocksDB's byte order is numeric order:
//! iterating a partition's records visits offsets in ascending order.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `records` | topic id u64 · partition u32 · base offset u64 | a record batch (`record`) |
//! | `meta` | `0x00` | next topic id u64 |
//! | `meta` | `0x01` · topic name | topic metadata (JSON) |
//! | `meta` | `0x02` · topic id u64 · partition u32 · base offset u64 | segment metadata (`segment`) |
//! | `meta` | `0x03` · topic id u64 · partition u32 · producer id u64 | producer state (`producer`) |
//! | `meta` | `0x04` · group name | group configuration (opaque bytes) |
//! | `groups` | see `group` | cursors, message states, redelivery time index |

use crate::{PartitionId, TopicId};

/// Length of a record-batch key.
pub const RECORD_KEY_LEN: usize = 20;
/// Length of a segment or producer metadata key.
pub const PARTITION_META_KEY_LEN: usize = 21;

const _: () = assert!(RECORD_KEY_LEN == 8 + 4 + 8);
const _: () = assert!(PARTITION_META_KEY_LEN == 1 + 8 + 4 + 8);

/// Tag of the next-topic-id counter in `meta`.
pub const TAG_NEXT_TOPIC_ID: u8 = 0x00;
/// Tag of topic entries in `meta`.
pub const TAG_TOPIC: u8 = 0x01;
/// Tag of segment entries in `meta`.
pub const TAG_SEGMENT: u8 = 0x02;
/// Tag of producer-state entries in `meta`.
pub const TAG_PRODUCER: u8 = 0x03;
/// Tag of consumer-group entries in `meta`.
pub const TAG_GROUP: u8 = 0x04;
/// Tag of schedule entries in `meta`.
pub const TAG_SCHEDULE: u8 = 0x05;
/// Tag of permission rules in `meta` (a single broker's; a cluster keeps them in its catalog).
pub const TAG_ACL: u8 = 0x06;

/// Key of the batch of `partition` starting at `offset`.
pub fn record_key(partition: PartitionId, offset: u64) -> [u8; RECORD_KEY_LEN] {
    let mut k = [0u8; RECORD_KEY_LEN];
    k[..8].copy_from_slice(&partition.topic.0.to_be_bytes());
    k[8..12].copy_from_slice(&partition.index.to_be_bytes());
    k[12..].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Splits a record key into (partition, base offset); `None` if malformed.
pub fn parse_record_key(k: &[u8]) -> Option<(PartitionId, u64)> {
    if k.len() != RECORD_KEY_LEN {
        return None;
    }
    Some((PartitionId::new(TopicId(be_u64(&k[..8])?), be_u32(&k[8..12])?), be_u64(&k[12..])?))
}

/// The first key past every record of `topic`.
pub fn topic_records_end(topic: TopicId) -> [u8; RECORD_KEY_LEN] {
    match topic.0.checked_add(1) {
        Some(next) => record_key(PartitionId::new(TopicId(next), 0), 0),
        None => [0xff; RECORD_KEY_LEN],
    }
}

/// Key of the topic entry `name` in `meta`.
pub fn topic_key(name: &str) -> Vec<u8> {
    named_key(TAG_TOPIC, name)
}

/// Key of a named `meta` entry (topic or group).
pub fn named_key(tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Key of a per-partition metadata entry (`TAG_SEGMENT` or `TAG_PRODUCER`).
pub fn partition_meta_key(tag: u8, partition: PartitionId, id: u64) -> [u8; PARTITION_META_KEY_LEN] {
    let mut k = [0u8; PARTITION_META_KEY_LEN];
    k[0] = tag;
    k[1..9].copy_from_slice(&partition.topic.0.to_be_bytes());
    k[9..13].copy_from_slice(&partition.index.to_be_bytes());
    k[13..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Splits a per-partition metadata key into (partition, id).
pub fn parse_partition_meta_key(k: &[u8]) -> Option<(PartitionId, u64)> {
    if k.len() != PARTITION_META_KEY_LEN {
        return None;
    }
    Some((PartitionId::new(TopicId(be_u64(&k[1..9])?), be_u32(&k[9..13])?), be_u64(&k[13..])?))
}

/// The [start, end) range of `tag` entries of one topic in `meta`.
pub fn topic_meta_range(tag: u8, topic: TopicId) -> (Vec<u8>, Vec<u8>) {
    let start = partition_meta_key(tag, PartitionId::new(topic, 0), 0).to_vec();
    let end = match topic.0.checked_add(1) {
        Some(next) => partition_meta_key(tag, PartitionId::new(TopicId(next), 0), 0).to_vec(),
        None => vec![tag + 1],
    };
    (start, end)
}

/// The greatest fixed-length key below `k` (big-endian decrement); `None` for all zeros.
pub fn key_before(k: &[u8]) -> Option<Vec<u8>> {
    let mut v = k.to_vec();
    for b in v.iter_mut().rev() {
        if *b > 0 {
            *b -= 1;
            return Some(v);
        }
        *b = 0xff;
    }
    None
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rk(t: u64, p: u32, o: u64) -> [u8; RECORD_KEY_LEN] {
        record_key(PartitionId::new(TopicId(t), p), o)
    }

    proptest! {
        #[test]
        fn record_key_byte_order_is_numeric_order(a in any::<(u64, u32, u64)>(), b in any::<(u64, u32, u64)>()) {
            let ka = rk(a.0, a.1, a.2);
            let kb = rk(b.0, b.1, b.2);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(parse_record_key(&ka), Some((PartitionId::new(TopicId(a.0), a.1), a.2)));
        }

        #[test]
        fn meta_key_round_trips(a in any::<(u64, u32, u64)>()) {
            let p = PartitionId::new(TopicId(a.0), a.1);
            let k = partition_meta_key(TAG_SEGMENT, p, a.2);
            prop_assert_eq!(parse_partition_meta_key(&k), Some((p, a.2)));
        }
    }

    #[test]
    fn key_before_is_the_predecessor() {
        assert_eq!(key_before(&rk(1, 2, 10)), Some(rk(1, 2, 9).to_vec()));
        assert_eq!(key_before(&rk(2, 0, 0)), Some(rk(1, u32::MAX, u64::MAX).to_vec()));
        assert_eq!(key_before(&[0, 0]), None);
    }

    #[test]
    fn topic_end_bounds_every_partition() {
        assert!(rk(7, u32::MAX, u64::MAX) < topic_records_end(TopicId(7)));
        assert!(rk(8, 0, 0) >= topic_records_end(TopicId(7)));
    }
}
