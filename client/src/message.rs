//! `Message`: what a producer sends, built without spelling out the wire
//! struct — a value, an optional key and headers.
//!
//! # Correctness
//! The key decides the partition when the producer is not given one (the same
//! key always lands on the same partition, so one key's messages keep their
//! order). Headers keep the order they were added in, and a repeated header
//! name is kept twice, exactly as the wire format stores it.

use bytes::Bytes;
use sluice_proto::v1 as pb;

/// A message to produce. `Producer::send` takes it (or a raw
/// `proto::Message`), so callers need not know the protobuf field layout.
///
/// ```
/// use sluice_client::Message;
///
/// let m = Message::new("order 42").key("customer-7").header("amount", "120");
/// let wire: sluice_client::proto::Message = m.into();
/// assert_eq!(wire.key.as_deref(), Some(&b"customer-7"[..]));
/// assert_eq!(wire.headers[0].key, "amount");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "a Message does nothing until it is passed to a Producer"]
pub struct Message {
    inner: pb::Message,
}

impl Message {
    /// A message carrying `value`. Takes anything that becomes `Bytes`
    /// (`&'static str`, `String`, `Vec<u8>`, `Bytes`) so no copy is forced.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Message { inner: pb::Message { key: None, value: value.into(), headers: Vec::new() } }
    }

    /// Sets the key: without an explicit partition, messages with equal keys
    /// go to the same partition and so stay in order.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.inner.key = Some(key.into());
        self
    }

    /// Adds a header: metadata a consumer can read without parsing the value
    /// (content type, trace id, retry hints). Repeated names are all kept.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.inner.headers.push(pb::Header { key: key.into(), value: value.into() });
        self
    }

    /// The wire message, for code that talks to the generated gRPC client directly.
    pub fn into_proto(self) -> pb::Message {
        self.inner
    }
}

impl From<Message> for pb::Message {
    fn from(m: Message) -> Self {
        m.into_proto()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_fills_every_wire_field_in_order() {
        let wire: pb::Message =
            Message::new(vec![1u8, 2]).key(String::from("k")).header("a", "1").header("a", "2").into();
        assert_eq!(wire.value, Bytes::from_static(&[1, 2]));
        assert_eq!(wire.key, Some(Bytes::from_static(b"k")));
        let headers: Vec<(&str, &[u8])> = wire.headers.iter().map(|h| (h.key.as_str(), &h.value[..])).collect();
        assert_eq!(headers, vec![("a", &b"1"[..]), ("a", &b"2"[..])]);
    }

    #[test]
    fn a_message_without_key_or_headers_has_none() {
        let wire = Message::new("v").into_proto();
        assert_eq!(wire, pb::Message { key: None, value: Bytes::from_static(b"v"), headers: vec![] });
    }
}
