//! Request validation shared by the services: names, sizes and limits, and the
//! lookups of the topics and groups a request names (name checked first).

use std::sync::Arc;

use sluice_proto::v1::Message;

use crate::error::{Error, Result};
use crate::group::{GroupHandle, GroupRegistry};
use crate::topic::{Topic, TopicRegistry};

/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 249;
/// Most headers on one message.
pub const MAX_HEADERS: usize = 1024;

/// Topic names: 1-249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn topic_name(name: &str) -> Result<()> {
    self::name("name", name)
}

/// Topic and group names in the request field `field`: the same rules as `topic_name`.
///
/// Every request that names a topic or group checks it first, so an invalid
/// name is `INVALID_ARGUMENT` everywhere, never a `NOT_FOUND` that suggests
/// creating what could not be created.
pub fn name(field: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME {
        return Err(Error::invalid(
            field,
            format!("names are 1..={MAX_TOPIC_NAME} characters of [A-Za-z0-9._-], got {}", name.len()),
        ));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid(field, "`.` and `..` are not valid names"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Error::invalid(
            field,
            format!("character {c:?} is not allowed in names; use letters, digits, `.`, `_` and `-`"),
        ));
    }
    Ok(())
}

/// An optional name (empty = not given): checked only when given.
pub fn optional_name(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    name(field, value)
}

/// The topic named in request field `field`: `INVALID_ARGUMENT` for an invalid
/// name, `NOT_FOUND` for a valid one that does not exist.
pub fn topic(topics: &TopicRegistry, field: &'static str, value: &str) -> Result<Arc<Topic>> {
    name(field, value)?;
    topics.get(value)
}

/// The group named in request field `field`, checked like `topic`.
pub fn group(groups: &GroupRegistry, field: &'static str, value: &str) -> Result<Arc<GroupHandle>> {
    name(field, value)?;
    groups.get(value)
}

/// The bytes a message counts against `max_message_bytes`.
pub fn message_size(m: &Message) -> usize {
    m.key.as_ref().map_or(0, |k| k.len())
        + m.value.len()
        + m.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}

/// Checks a produce batch against the limits.
pub fn batch(messages: &[Message], max_batch: u32, max_message_bytes: u32) -> Result<()> {
    if messages.is_empty() {
        return Err(Error::invalid("messages", "the batch is empty; send at least one message"));
    }
    if messages.len() > max_batch as usize {
        return Err(Error::invalid(
            "messages",
            format!("{} messages in one request; the limit is {max_batch}, split the batch", messages.len()),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let size = message_size(m);
        if size > max_message_bytes as usize {
            return Err(Error::invalid(
                "messages",
                format!("message {i} is {size} bytes; the topic's max-message-bytes is {max_message_bytes}"),
            ));
        }
        if m.headers.len() > MAX_HEADERS {
            return Err(Error::invalid(
                "messages",
                format!("message {i} has {} headers; at most {MAX_HEADERS}", m.headers.len()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        assert!(topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a/b", "sp ace", "é", &"x".repeat(250)] {
            assert!(topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn batches_are_checked() {
        let m = |n: usize| Message { key: None, value: vec![0; n].into(), headers: vec![] };
        assert!(batch(&[], 10, 100).is_err());
        assert!(batch(&[m(101)], 10, 100).is_err());
        assert!(batch(&vec![m(1); 11], 10, 100).is_err());
        assert!(batch(&[m(100)], 10, 100).is_ok());
    }
}
