//! Self-verifying message values: an id, then bytes derived from it, so a
//! reader can tell a message's identity and whether its bytes are intact.

use bytes::Bytes;

/// The value for `id`, `len` bytes long (at least the id and a colon).
pub fn payload(id: u64, len: usize) -> Bytes {
    let mut v = format!("{id}:").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x & 0xff) as u8);
    }
    Bytes::from(v)
}

/// The id a `payload` value starts with.
pub fn id_of(value: &[u8]) -> Option<u64> {
    let end = value.iter().position(|&b| b == b':')?;
    std::str::from_utf8(&value[..end]).ok()?.parse().ok()
}

/// Whether `value` is exactly the payload its id says it is.
pub fn is_intact(value: &[u8]) -> bool {
    id_of(value).is_some_and(|id| payload(id, value.len()) == value)
}
