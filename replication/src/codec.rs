//! How Raft state becomes bytes, in the store and on the wire. Each group
//! type picks its format ([`GroupWire`]):
//! - the metadata group uses JSON: its entries are small and rare, a person
//!   can read them in a dump, and group settings inside them are opaque JSON
//!   (which a format without self-description cannot carry);
//! - shard groups use postcard, a compact binary serde format: their entries
//!   are record batches, sent to every replica, where JSON would triple the
//!   bytes and cost more CPU than the fsync.

use std::io;

use openraft::RaftTypeConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A serde format for a group's messages and stored state.
pub(crate) trait Format {
    /// `value` as bytes.
    fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>>;
    /// Bytes written by `encode`; `what` names them in the error.
    fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T>;
}

/// The format a group type uses.
pub(crate) trait GroupWire: RaftTypeConfig {
    /// Its format.
    type Format: Format;
}

/// JSON (`serde_json`).
pub(crate) struct Json;

impl Format for Json {
    fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
        encode(value)
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
        decode(bytes, what)
    }
}

/// postcard: varint integers, length-prefixed bytes, no field names.
pub(crate) struct Postcard;

impl Format for Postcard {
    fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
        postcard::to_allocvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
        postcard::from_bytes(bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable {what}: {e}")))
    }
}

/// `value` as JSON bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// JSON bytes written by `encode`; `what` names them in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable {what} in the raft store: {e}")))
}

/// A storage error as the `io::Error` openraft expects.
pub(crate) fn io_error(e: sluice_storage::Error) -> io::Error {
    io::Error::other(e)
}

impl GroupWire for crate::meta::MetaTypes {
    type Format = Json;
}

impl GroupWire for crate::shard::ShardTypes {
    type Format = Postcard;
}
