//! CloudEvents as Sluice stores them, whichever door they came in by (the
//! HTTP gateway, `sluice.v1.Events/Publish`): the CloudEvents Kafka binding.
//! Each attribute is a `ce_<name>` header, `datacontenttype` the
//! `content-type` header, the event's data the value, the `partitionkey`
//! extension the key. A gRPC consumer then sees ordinary records, and a
//! push can turn them back into HTTP without loss.
//!
//! # Correctness
//! Every stored event has `specversion` 1.0 and non-empty `id`, `source`
//! and `type`; attribute names are lower-case ASCII letters and digits.
//! Nothing that fails these is stored: one bad event refuses its batch.

use bytes::Bytes;
use sluice_proto::v1::{Header, Message};
use sluice_storage::StoredRecord;

use crate::error::{Error, Result};

/// Kafka binding: the header prefix of an event attribute.
pub const ATTRIBUTE_HEADER_PREFIX: &str = "ce_";
/// Kafka binding: the header holding `datacontenttype`.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// Longest attribute name taken (the spec asks for at most 20).
const MAX_ATTRIBUTE_NAME: usize = 64;

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("event", message)
}

/// Checks an event's `attributes` (name, value as text; `datacontenttype`
/// apart, as `content_type`) and builds the message that stores it with
/// `value` as its data; `which` names the event in errors.
pub fn stored_message(
    attributes: Vec<(String, String)>,
    content_type: Option<String>,
    value: Bytes,
    which: &str,
) -> Result<Message> {
    let get = |name: &str| attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    match get("specversion") {
        Some("1.0") => {}
        Some(other) => return Err(invalid(format!("{which}: specversion {other:?} is not supported; send 1.0"))),
        None => return Err(invalid(format!("{which} has no specversion"))),
    }
    for required in ["id", "source", "type"] {
        if get(required).is_none_or(str::is_empty) {
            return Err(invalid(format!("{which} has no {required}")));
        }
    }
    let mut headers = Vec::with_capacity(attributes.len() + 1);
    let mut key = None;
    for (name, value) in &attributes {
        let valid = !name.is_empty()
            && name.len() <= MAX_ATTRIBUTE_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(invalid(format!(
                "{which}: attribute name {name:?} must be 1 to {MAX_ATTRIBUTE_NAME} lower-case letters or digits"
            )));
        }
        if name == "partitionkey" {
            key = Some(Bytes::from(value.clone()));
        }
        headers
            .push(Header { key: format!("{ATTRIBUTE_HEADER_PREFIX}{name}"), value: value.as_bytes().to_vec().into() });
    }
    if let Some(c) = content_type {
        headers.push(Header { key: CONTENT_TYPE_HEADER.into(), value: c.into_bytes().into() });
    }
    Ok(Message { key, value, headers })
}

/// Whether a media type is JSON (`application/json`, `…+json`).
pub fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

/// The `type` of an event made for a record that is not a CloudEvent.
pub const PLAIN_MESSAGE_TYPE: &str = "dev.sluice.message";

/// An event read back from a stored record, ready to be sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEvent {
    /// Attributes as text, `specversion` first (`datacontenttype` apart).
    pub attributes: Vec<(String, String)>,
    /// `datacontenttype`, if any.
    pub content_type: Option<String>,
    /// The data.
    pub data: Bytes,
}

impl ReadEvent {
    /// The event's `id`.
    pub fn id(&self) -> &str {
        self.attributes.iter().find(|(n, _)| n == "id").map_or("", |(_, v)| v.as_str())
    }
}

/// The event `record` holds: its `ce_*` headers per the Kafka binding, or,
/// for a record produced as a plain message (no `ce_specversion`), an event
/// made for it — id `topic/partition/offset` (stable across redeliveries),
/// source `/sluice/topics/<topic>`, type [`PLAIN_MESSAGE_TYPE`], time of
/// append, and the key as `partitionkey`.
pub fn read_event(record: &StoredRecord, topic: &str, partition: u32) -> ReadEvent {
    let mut attributes = Vec::new();
    let mut content_type = None;
    for (name, value) in &record.headers {
        if let Some(attribute) = name.strip_prefix(ATTRIBUTE_HEADER_PREFIX) {
            attributes.push((attribute.to_owned(), String::from_utf8_lossy(value).into_owned()));
        } else if name == CONTENT_TYPE_HEADER {
            content_type = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    if !attributes.iter().any(|(n, _)| n == "specversion") {
        attributes = vec![
            ("specversion".into(), "1.0".into()),
            ("id".into(), format!("{topic}/{partition}/{}", record.offset)),
            ("source".into(), format!("/sluice/topics/{topic}")),
            ("type".into(), PLAIN_MESSAGE_TYPE.into()),
        ];
        if let Some(time) = chrono::DateTime::from_timestamp_millis(record.timestamp_ms) {
            attributes.push(("time".into(), time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
        }
        if let Some(key) = &record.key {
            attributes.push(("partitionkey".into(), String::from_utf8_lossy(key).into_owned()));
        }
    } else if let Some(i) = attributes.iter().position(|(n, _)| n == "specversion") {
        let specversion = attributes.remove(i);
        attributes.insert(0, specversion);
    }
    ReadEvent { attributes, content_type, data: record.value.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)], value: &str) -> StoredRecord {
        StoredRecord {
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from(value.to_owned()),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), Bytes::from((*v).to_owned()))).collect(),
        }
    }

    #[test]
    fn a_stored_event_reads_back_as_it_was_sent() {
        let attributes: Vec<(String, String)> = [("id", "e1"), ("source", "/s"), ("specversion", "1.0"), ("type", "t")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let message = stored_message(attributes, Some("application/json".into()), Bytes::from_static(b"{}"), "e")
            .expect("valid event");
        let stored = StoredRecord {
            offset: 0,
            timestamp_ms: 0,
            key: message.key,
            value: message.value,
            headers: message.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        };
        let event = read_event(&stored, "t", 0);
        assert_eq!(event.attributes[0], ("specversion".to_owned(), "1.0".to_owned()));
        assert_eq!(event.id(), "e1");
        assert_eq!(event.content_type.as_deref(), Some("application/json"));
        assert_eq!(event.data.as_ref(), b"{}");
    }

    #[test]
    fn a_plain_message_becomes_an_event_with_a_stable_id() {
        let event = read_event(&record(&[("content-type", "text/plain"), ("x", "y")], "hi"), "orders", 3);
        assert_eq!(event.id(), "orders/3/7");
        assert!(event.attributes.contains(&("type".into(), PLAIN_MESSAGE_TYPE.into())));
        assert!(event.attributes.contains(&("partitionkey".into(), "k".into())));
        assert!(event.attributes.contains(&("time".into(), "2023-11-14T22:13:20.000Z".into())));
        assert_eq!(event.content_type.as_deref(), Some("text/plain"));
    }
}
