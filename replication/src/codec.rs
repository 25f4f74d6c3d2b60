//! How Raft state becomes bytes in the store: JSON, which every openraft type
//! supports through serde and which a person can read in a dump. The metadata
//! group's entries are small and rare, so the encoding's cost does not matter;
//! shard groups (record batches) will not go through here.

use std::io;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// `value` as bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Bytes written by `encode`; `what` names them in the error.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("undecodable {what} in the raft store: {e}")))
}

/// A storage error as the `io::Error` openraft expects.
pub(crate) fn io_error(e: sluice_storage::Error) -> io::Error {
    io::Error::other(e)
}
