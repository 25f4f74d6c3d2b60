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
