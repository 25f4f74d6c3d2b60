//! Segment metadata: a segment is a contiguous offset range of one partition.
//! Its entry in `meta` is rewritten in the same atomic write as every batch
//! appended to it, so the last segment's `end_offset` is always the partition's
//! next offset: recovery reads it instead of scanning records.
//!
//! Value layout (big-endian): version u8 (1) · end offset u64 · bytes u64 ·
//! first timestamp i64 · last timestamp i64 · created at i64 · sealed u8.

use bytes::{Buf, BufMut};

/// Metadata of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// First offset in the segment.
    pub base_offset: u64,
    /// Offset after the last record; equals `base_offset` while empty.
    pub end_offset: u64,
    /// Encoded batch bytes stored in the segment.
    pub bytes: u64,
    /// Timestamp of the first record (0 while empty).
    pub first_timestamp_ms: i64,
    /// Timestamp of the last record (0 while empty).
    pub last_timestamp_ms: i64,
    /// When the segment was opened; it rolls after the topic's `segment_ms`.
    pub created_ms: i64,
    /// A sealed segment takes no more appends and may be deleted by retention.
    pub sealed: bool,
}

const VERSION: u8 = 1;
/// Encoded size of a segment entry.
pub const ENCODED_LEN: usize = 1 + 8 + 8 + 8 + 8 + 8 + 1;

impl SegmentMeta {
    /// A new empty, open segment starting at `base_offset`.
    pub fn open(base_offset: u64, now_ms: i64) -> Self {
        SegmentMeta {
            base_offset,
            end_offset: base_offset,
            bytes: 0,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            created_ms: now_ms,
            sealed: false,
        }
    }

    /// Whether the segment holds no record.
    pub fn is_empty(&self) -> bool {
        self.end_offset == self.base_offset
    }

    /// Encodes the value stored under the segment's key.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(ENCODED_LEN);
        v.put_u8(VERSION);
        v.put_u64(self.end_offset);
        v.put_u64(self.bytes);
        v.put_i64(self.first_timestamp_ms);
        v.put_i64(self.last_timestamp_ms);
        v.put_i64(self.created_ms);
        v.put_u8(u8::from(self.sealed));
        v
    }

    /// Decodes a value; `base_offset` comes from the key.
    pub fn decode(base_offset: u64, mut v: &[u8]) -> Option<Self> {
        if v.len() != ENCODED_LEN || v[0] != VERSION {
            return None;
        }
        v.advance(1);
        let meta = SegmentMeta {
            base_offset,
            end_offset: v.get_u64(),
            bytes: v.get_u64(),
            first_timestamp_ms: v.get_i64(),
            last_timestamp_ms: v.get_i64(),
            created_ms: v.get_i64(),
            sealed: v.get_u8() != 0,
        };
        (meta.end_offset >= meta.base_offset).then_some(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_meta_round_trips_and_rejects_garbage() {
        let m = SegmentMeta {
            base_offset: 5,
            end_offset: 9,
            bytes: 100,
            first_timestamp_ms: 1,
            last_timestamp_ms: 2,
            created_ms: 3,
            sealed: true,
        };
        assert_eq!(SegmentMeta::decode(5, &m.encode()), Some(m));
        assert_eq!(SegmentMeta::decode(5, &m.encode()[1..]), None);
        assert_eq!(SegmentMeta::decode(10, &m.encode()), None);
    }
}
