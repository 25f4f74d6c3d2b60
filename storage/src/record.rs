//! Record-batch encoding. A batch is the unit of storage: one RocksDB value
//! holding consecutive records of one partition, protected by one CRC32.
//!
//! Layout (all integers big-endian; see `storage/FORMAT.md`):
//!
//! ```text
//! 0   u8   format version (1)
//! 1   u8   flags (0)
//! 2   u64  base offset
//! 10  u32  record count (>= 1)
//! 14  i64  broker timestamp, ms since the Unix epoch (shared by the batch)
//! 22  u64  producer id (0 = none)
//! 30  u64  producer sequence
//! 38  u32  body length
//! 42  u32  CRC32 (crc32fast) of bytes 0..42 followed by the body
//! 46  body: per record
//!       varint key length + 1 (0 = no key), key
//!       varint value length, value
//!       varint header count, then per header: varint key length, key (UTF-8), varint value length, value
//! ```
//!
//! Offsets are implicit: record `i` has offset `base + i`. Decoding checks the CRC
//! before anything else and never panics on any input.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

/// The only format version written.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 46;
const CRC_AT: usize = 42;

/// What the storage layer needs of a record to append it; implemented for the
/// broker's request type so messages are encoded without an intermediate copy.
pub trait RecordRef {
    /// The key, if any.
    fn key(&self) -> Option<&[u8]>;
    /// The value.
    fn value(&self) -> &[u8];
    /// Number of headers.
    fn header_count(&self) -> usize;
    /// Header `i` as (key, value).
    fn header(&self, i: usize) -> (&str, &[u8]);
}

/// A record owned by the caller; what reads return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Partition offset.
    pub offset: u64,
    /// Broker timestamp at append (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// Headers in the order they were sent.
    pub headers: Vec<(String, Bytes)>,
}

impl RecordRef for StoredRecord {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> &[u8] {
        &self.value
    }
    fn header_count(&self) -> usize {
        self.headers.len()
    }
    fn header(&self, i: usize) -> (&str, &[u8]) {
        let (k, v) = &self.headers[i];
        (k, v)
    }
}

/// The fixed part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub count: u32,
    /// Broker timestamp of every record in the batch.
    pub timestamp_ms: i64,
    /// Idempotent producer id, 0 if none.
    pub producer_id: u64,
    /// Producer sequence of this batch.
    pub sequence: u64,
}

/// Why a stored batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its header or than the body length it declares.
    #[error("truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header asks for.
        expected: usize,
    },
    /// Longer than the body length it declares.
    #[error("{extra} trailing bytes after the body")]
    Trailing {
        /// Bytes past the end.
        extra: usize,
    },
    /// The CRC does not match.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// A version this build cannot read.
    #[error("unknown format version {0}")]
    Version(u8),
    /// The body does not parse although its CRC matched (a writer bug).
    #[error("malformed body: {0}")]
    Body(&'static str),
}

/// Size of the body that `records` encode to.
pub fn body_len<R: RecordRef>(records: &[R]) -> usize {
    records.iter().map(record_len).sum()
}

fn record_len<R: RecordRef>(r: &R) -> usize {
    let key = r.key().map_or(0, |k| k.len());
    let mut n = encoded_len_varint(r.key().map_or(0, |k| k.len() as u64 + 1)) + key;
    n += encoded_len_varint(r.value().len() as u64) + r.value().len();
    n += encoded_len_varint(r.header_count() as u64);
    for i in 0..r.header_count() {
        let (k, v) = r.header(i);
        n += encoded_len_varint(k.len() as u64) + k.len() + encoded_len_varint(v.len() as u64) + v.len();
    }
    n
}

/// Encodes `records` as one batch. `records` must not be empty.
pub fn encode_batch<R: RecordRef>(header: &BatchHeader, records: &[R]) -> Vec<u8> {
    let body = body_len(records);
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    put_header(header, body, &mut out);
    encode_body_into(records, &mut out);
    seal(out)
}

/// The body `records` encode to (what follows the header in a batch): what a
/// replicated batch carries between brokers, before offsets are assigned.
pub fn encode_body<R: RecordRef>(records: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body_len(records));
    encode_body_into(records, &mut out);
    out
}

/// A batch made of `header` and an already encoded `body` (from
/// [`encode_body`] or [`split_batch`]).
pub fn batch_from_body(header: &BatchHeader, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    put_header(header, body.len(), &mut out);
    out.put_slice(body);
    seal(out)
}

/// A stored batch's header (CRC and length checked) and its encoded body.
pub fn split_batch(batch: &[u8]) -> Result<(BatchHeader, &[u8]), DecodeError> {
    let header = decode_header(batch)?;
    Ok((header, &batch[HEADER_LEN..]))
}

/// Counts the records in an encoded body, checking that it parses to the end:
/// a body received from a peer is checked before it is stored.
pub fn count_body(body: &[u8]) -> Result<u32, DecodeError> {
    let mut rest = Bytes::copy_from_slice(body);
    let mut count = 0u32;
    while rest.has_remaining() {
        skip_record(&mut rest)?;
        count = count.checked_add(1).ok_or(DecodeError::Body("too many records"))?;
    }
    Ok(count)
}

fn skip_record(body: &mut Bytes) -> Result<(), DecodeError> {
    let skip = |body: &mut Bytes, len: u64| -> Result<(), DecodeError> {
        let len = usize::try_from(len).map_err(|_| DecodeError::Body("length overflow"))?;
        if body.remaining() < len {
            return Err(DecodeError::Body("field past the end of the body"));
        }
        body.advance(len);
        Ok(())
    };
    let varint = |body: &mut Bytes| decode_varint(body).map_err(|_| DecodeError::Body("bad varint"));
    let key = varint(body)?;
    if key > 0 {
        skip(body, key - 1)?;
    }
    let value = varint(body)?;
    skip(body, value)?;
    for _ in 0..varint(body)? {
        let k = varint(body)?;
        skip(body, k)?;
        let v = varint(body)?;
        skip(body, v)?;
    }
    Ok(())
}

fn put_header(header: &BatchHeader, body: usize, out: &mut Vec<u8>) {
    out.put_u8(FORMAT_VERSION);
    out.put_u8(0);
    out.put_u64(header.base_offset);
    out.put_u32(header.count);
    out.put_i64(header.timestamp_ms);
    out.put_u64(header.producer_id);
    out.put_u64(header.sequence);
    out.put_u32(body as u32);
    out.put_u32(0);
}

fn encode_body_into<R: RecordRef>(records: &[R], out: &mut Vec<u8>) {
    for r in records {
        encode_varint(r.key().map_or(0, |k| k.len() as u64 + 1), out);
        if let Some(k) = r.key() {
            out.put_slice(k);
        }
        encode_varint(r.value().len() as u64, out);
        out.put_slice(r.value());
        encode_varint(r.header_count() as u64, out);
        for i in 0..r.header_count() {
            let (k, v) = r.header(i);
            encode_varint(k.len() as u64, out);
            out.put_slice(k.as_bytes());
            encode_varint(v.len() as u64, out);
            out.put_slice(v);
        }
    }
}

/// Writes the CRC of a batch whose header and body are in place.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = checksum(&out);
    out[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
    out
}

fn checksum(batch: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&batch[..CRC_AT]);
    h.update(&batch[HEADER_LEN..]);
    h.finalize()
}

/// Verifies the CRC and length of a stored batch and returns its header.
pub fn decode_header(batch: &[u8]) -> Result<BatchHeader, DecodeError> {
    if batch.len() < HEADER_LEN {
        return Err(DecodeError::Truncated { len: batch.len(), expected: HEADER_LEN });
    }
    let mut h = &batch[..HEADER_LEN];
    let version = h.get_u8();
    let _flags = h.get_u8();
    let header = BatchHeader {
        base_offset: h.get_u64(),
        count: h.get_u32(),
        timestamp_ms: h.get_i64(),
        producer_id: h.get_u64(),
        sequence: h.get_u64(),
    };
    let body = h.get_u32() as usize;
    let stored = h.get_u32();
    let expected = HEADER_LEN + body;
    if batch.len() < expected {
        return Err(DecodeError::Truncated { len: batch.len(), expected });
    }
    if batch.len() > expected {
        return Err(DecodeError::Trailing { extra: batch.len() - expected });
    }
    let computed = checksum(batch);
    if computed != stored {
        return Err(DecodeError::Crc { stored, computed });
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    if header.count == 0 {
        return Err(DecodeError::Body("empty batch"));
    }
    Ok(header)
}

/// Decodes a stored batch, keeping records whose offset is in `[from, until)`.
/// Keys and values share `batch`'s buffer: no copy per record.
pub fn decode_batch(batch: Bytes, from: u64, until: u64) -> Result<(BatchHeader, Vec<StoredRecord>), DecodeError> {
    let header = decode_header(&batch)?;
    let mut body = batch.slice(HEADER_LEN..);
    let mut records = Vec::new();
    for i in 0..u64::from(header.count) {
        let offset = header.base_offset + i;
        if offset >= until {
            break;
        }
        let key_tag = varint(&mut body)?;
        let key = if key_tag == 0 { None } else { Some(take(&mut body, key_tag - 1)?) };
        let value_len = varint(&mut body)?;
        let value = take(&mut body, value_len)?;
        let header_count = varint(&mut body)?;
        let mut headers = Vec::with_capacity(header_count.min(1024) as usize);
        for _ in 0..header_count {
            let klen = varint(&mut body)?;
            let k = take(&mut body, klen)?;
            let k = String::from_utf8(k.to_vec()).map_err(|_| DecodeError::Body("header key is not UTF-8"))?;
            let vlen = varint(&mut body)?;
            headers.push((k, take(&mut body, vlen)?));
        }
        if offset >= from {
            records.push(StoredRecord { offset, timestamp_ms: header.timestamp_ms, key, value, headers });
        }
    }
    if records.len() as u64 == u64::from(header.count) && body.has_remaining() {
        return Err(DecodeError::Body("bytes left after the last record"));
    }
    Ok((header, records))
}

fn varint(b: &mut Bytes) -> Result<u64, DecodeError> {
    decode_varint(b).map_err(|_| DecodeError::Body("bad varint"))
}

fn take(b: &mut Bytes, n: u64) -> Result<Bytes, DecodeError> {
    let n = usize::try_from(n).map_err(|_| DecodeError::Body("length overflow"))?;
    if b.remaining() < n {
        return Err(DecodeError::Body("field runs past the body"));
    }
    Ok(b.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = StoredRecord> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)), 0..4),
        )
            .prop_map(|(k, v, h)| StoredRecord {
                offset: 0,
                timestamp_ms: 0,
                key: k.map(Bytes::from),
                value: Bytes::from(v),
                headers: h.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
            })
    }

    fn arb_batch() -> impl Strategy<Value = (BatchHeader, Vec<StoredRecord>)> {
        (any::<u32>(), any::<i64>(), any::<u64>(), any::<u64>(), proptest::collection::vec(arb_record(), 1..8))
            .prop_map(|(base, ts, pid, seq, mut recs)| {
                let base = u64::from(base);
                for (i, r) in recs.iter_mut().enumerate() {
                    r.offset = base + i as u64;
                    r.timestamp_ms = ts;
                }
                let h = BatchHeader {
                    base_offset: base,
                    count: recs.len() as u32,
                    timestamp_ms: ts,
                    producer_id: pid,
                    sequence: seq,
                };
                (h, recs)
            })
    }

    proptest! {
        #[test]
        fn batch_round_trips((header, records) in arb_batch()) {
            let enc = encode_batch(&header, &records);
            let (h, decoded) = decode_batch(Bytes::from(enc), 0, u64::MAX).expect("decodes");
            prop_assert_eq!(h, header);
            prop_assert_eq!(decoded, records);
        }

        #[test]
        fn any_truncation_is_rejected((header, records) in arb_batch(), cut in any::<prop::sample::Index>()) {
            let enc = encode_batch(&header, &records);
            let len = cut.index(enc.len());
            prop_assert!(decode_batch(Bytes::copy_from_slice(&enc[..len]), 0, u64::MAX).is_err());
        }

        #[test]
        fn any_bit_flip_is_rejected((header, records) in arb_batch(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut enc = encode_batch(&header, &records);
            let i = at.index(enc.len());
            enc[i] ^= 1 << bit;
            prop_assert!(decode_batch(Bytes::from(enc), 0, u64::MAX).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(Bytes::from(bytes), 0, u64::MAX);
        }
    }

    #[test]
    fn range_filter_keeps_only_requested_offsets() {
        let recs: Vec<StoredRecord> = (0..5)
            .map(|i| StoredRecord {
                offset: 10 + i,
                timestamp_ms: 1,
                key: None,
                value: Bytes::from(vec![i as u8]),
                headers: vec![],
            })
            .collect();
        let h = BatchHeader { base_offset: 10, count: 5, timestamp_ms: 1, producer_id: 0, sequence: 0 };
        let (_, got) = decode_batch(Bytes::from(encode_batch(&h, &recs)), 12, 14).expect("decodes");
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![12, 13]);
    }
}
