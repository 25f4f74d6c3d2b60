//! Structured and batch mode read without building a JSON tree: each event
//! is a list of (name, raw JSON text) pairs borrowed from the body, so JSON
//! data is stored as the text it arrived as (never parsed into values and
//! printed again) and attribute strings without escapes are never copied
//! until stored. This is the gateway's hot path for batches.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_proto::v1::Message;

use crate::error::{Error, Result};
use crate::event::{is_json, stored_message};

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("event", message)
}

/// An object key, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// One event's members, in order, each value as its raw JSON text.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CloudEvent (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(name)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    // A repeated member: the last one counts.
                    fields.retain(|(n, _): &(Cow<'de, str>, &RawValue)| *n != name);
                    fields.push((name, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// What a raw JSON value is, for an attribute.
enum Scalar<'a> {
    Null,
    Text(Cow<'a, str>),
    Composite,
}

fn scalar(raw: &RawValue) -> Result<Scalar<'_>> {
    let text = raw.get();
    Ok(match text.as_bytes().first() {
        Some(b'n') => Scalar::Null,
        Some(b'"') if !text.contains('\\') => Scalar::Text(Cow::Borrowed(&text[1..text.len() - 1])),
        Some(b'"') => Scalar::Text(Cow::Owned(
            serde_json::from_str::<String>(text)
                .map_err(|e| invalid(format!("a string that is not valid JSON: {e}")))?,
        )),
        Some(b'[' | b'{') => Scalar::Composite,
        // Numbers and booleans, as written.
        _ => Scalar::Text(Cow::Borrowed(text)),
    })
}

/// The message storing the event `raw` (`index`: its place in a batch).
fn event(raw: &RawValue, index: usize) -> Result<Message> {
    let which = format!("event {index}");
    let Fields(fields) =
        serde_json::from_str(raw.get()).map_err(|_| invalid(format!("{which} is not a JSON object")))?;
    let (mut data, mut data_base64, mut content_type) = (None, None, None);
    let mut attributes = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match name.as_ref() {
            "data" => data = Some(value),
            "data_base64" => data_base64 = Some(value),
            "datacontenttype" => match scalar(value)? {
                Scalar::Null => {}
                Scalar::Text(t) if value.get().starts_with('"') => content_type = Some(t.into_owned()),
                _ => return Err(invalid(format!("{which}: datacontenttype must be a string"))),
            },
            _ => match scalar(value)? {
                Scalar::Null => {}
                Scalar::Text(t) => attributes.push((name.into_owned(), t.into_owned())),
                Scalar::Composite => {
                    return Err(invalid(format!("{which}: attribute {name} must be a string, number or boolean")))
                }
            },
        }
    }
    let is_null = |v: &RawValue| v.get() == "null";
    let value = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(invalid(format!("{which} has both data and data_base64; send one"))),
        (None, None) => Bytes::new(),
        (Some(d), None) if is_null(d) => Bytes::new(),
        (None, Some(b64)) => match scalar(b64)? {
            Scalar::Text(t) if b64.get().starts_with('"') => base64::engine::general_purpose::STANDARD
                .decode(t.as_bytes())
                .map_err(|e| invalid(format!("{which}: data_base64 is not base64: {e}")))?
                .into(),
            _ => return Err(invalid(format!("{which}: data_base64 must be a string"))),
        },
        // A string is the data itself unless the content type says JSON (then it is a JSON string).
        (Some(d), None) if d.get().starts_with('"') && !content_type.as_deref().is_none_or(is_json) => {
            match scalar(d)? {
                Scalar::Text(t) => Bytes::from(t.into_owned()),
                _ => Bytes::new(),
            }
        }
        (Some(d), None) => Bytes::copy_from_slice(d.get().as_bytes()),
    };
    let content_type = content_type.or_else(|| (!value.is_empty()).then(|| "application/json".to_owned()));
    stored_message(attributes, content_type, value, &which)
}

/// The message of a structured-mode body.
pub fn one(body: &[u8]) -> Result<Message> {
    let raw: &RawValue = parse(body)?;
    event(raw, 0)
}

/// The messages of a batch-mode body (a JSON array of events).
pub fn batch(body: &[u8]) -> Result<Vec<Message>> {
    let raw: &RawValue = parse(body)?;
    if !raw.get().starts_with('[') {
        return Err(invalid("a batch must be a JSON array of events"));
    }
    let events: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))?;
    if events.is_empty() {
        return Err(invalid("the batch is empty; send at least one event"));
    }
    events.into_iter().enumerate().map(|(i, e)| event(e, i)).collect()
}

fn parse(body: &[u8]) -> Result<&RawValue> {
    let text = std::str::from_utf8(body).map_err(|_| invalid("the body is not valid JSON: not UTF-8"))?;
    serde_json::from_str(text).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(m: &'a Message, key: &str) -> Option<&'a str> {
        m.headers.iter().find(|h| h.key == key).and_then(|h| std::str::from_utf8(&h.value).ok())
    }

    #[test]
    fn escapes_numbers_and_repeated_members_read_as_json_says() {
        let body = br#"{"specversion":"1.0","id":"a\"b","source":"/s\u00e9","type":"t","type":"u",
            "count":1.50,"flag":true,"gone":null,"data":{ "x" : [1, 2] }}"#;
        let m = one(body).expect("a valid event");
        assert_eq!(header(&m, "ce_id"), Some("a\"b"), "escapes decoded");
        assert_eq!(header(&m, "ce_source"), Some("/s\u{e9}"));
        assert_eq!(header(&m, "ce_type"), Some("u"), "the last of a repeated member");
        assert_eq!(header(&m, "ce_count"), Some("1.50"), "numbers as written");
        assert_eq!(header(&m, "ce_flag"), Some("true"));
        assert!(header(&m, "ce_gone").is_none(), "null attributes are absent");
        assert_eq!(m.value.as_ref(), br#"{ "x" : [1, 2] }"#, "JSON data stored as it arrived");
    }

    #[test]
    fn a_string_data_with_a_text_type_is_the_text() {
        let body =
            br#"[{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"a\nb"}]"#;
        let m = batch(body).expect("a valid batch");
        assert_eq!(m[0].value.as_ref(), b"a\nb");
        assert!(batch(b"{}").is_err(), "a batch is an array");
        assert!(batch(b"[1]").expect_err("not an object").to_string().contains("event 0 is not a JSON object"));
    }
}
