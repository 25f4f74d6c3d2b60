//! The CloudEvents 1.0 HTTP binding in: binary, structured and batch
//! modes, and plain bodies. Each event is stored per the Kafka binding
//! ([`crate::event`]).

use bytes::Bytes;
use sluice_proto::v1::{Header, Message};

use crate::error::{Error, Result};
use crate::event::{stored_message as event_message, CONTENT_TYPE_HEADER};

/// The content type of one event in structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The content type of a batch of events.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// HTTP binary mode: the header prefix of an event attribute.
const HTTP_ATTRIBUTE_PREFIX: &str = "ce-";

/// How a request body is to be read, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ce-*` headers carry the attributes; the body is the data.
    Binary,
    /// The body is one event in JSON.
    Structured,
    /// The body is a JSON array of events.
    Batch,
    /// Not a CloudEvent: the body is stored as it is.
    Plain,
}

/// The mode of a request with `content_type` and (`binary`) a
/// `ce-specversion` header.
pub fn mode(content_type: Option<&str>, binary: bool) -> Mode {
    let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match media.as_deref() {
        Some(STRUCTURED) => Mode::Structured,
        Some(BATCH) => Mode::Batch,
        _ if binary => Mode::Binary,
        _ => Mode::Plain,
    }
}

/// The messages a request stores: `headers` are its HTTP headers (name,
/// value), `body` its body.
pub fn messages(headers: &[(String, String)], content_type: Option<&str>, body: Bytes) -> Result<Vec<Message>> {
    let binary = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("ce-specversion"));
    match mode(content_type, binary) {
        Mode::Binary => Ok(vec![binary_event(headers, content_type, body)?]),
        Mode::Structured => Ok(vec![super::structured::one(&body)?]),
        Mode::Batch => super::structured::batch(&body),
        Mode::Plain => {
            let headers = content_type
                .map(|c| vec![Header { key: CONTENT_TYPE_HEADER.into(), value: c.as_bytes().to_vec().into() }])
                .unwrap_or_default();
            Ok(vec![Message { key: None, value: body, headers }])
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid("event", message)
}

/// An event in binary mode: attributes from `ce-*` headers (percent-encoded
/// per the HTTP binding), data from the body.
fn binary_event(headers: &[(String, String)], content_type: Option<&str>, body: Bytes) -> Result<Message> {
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let Some(attribute) = lower.strip_prefix(HTTP_ATTRIBUTE_PREFIX) else { continue };
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| invalid(format!("header {name}: not UTF-8 once percent-decoded")))?;
        attributes.push((attribute.to_owned(), decoded.into_owned()));
    }
    event_message(attributes, content_type.map(str::to_owned), body, "the event")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(m: &'a Message, key: &str) -> Option<&'a [u8]> {
        m.headers.iter().find(|h| h.key == key).map(|h| h.value.as_ref())
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// The HTTP binding's binary-mode example (section 3.1.4).
    #[test]
    fn binary_mode_maps_to_kafka_headers() {
        let headers = h(&[
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.someevent"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("ce-id", "1234-1234-1234"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-comment", "caf%C3%A9"),
            ("ce-partitionkey", "user-7"),
            ("Content-Type", "application/json; charset=utf-8"),
        ]);
        let body = Bytes::from_static(b"{\"hello\":1}");
        let out = messages(&headers, Some("application/json; charset=utf-8"), body.clone()).expect("valid");
        assert_eq!(out.len(), 1);
        let m = &out[0];
        assert_eq!(m.value, body);
        assert_eq!(header(m, "ce_id"), Some(&b"1234-1234-1234"[..]));
        assert_eq!(header(m, "ce_type"), Some(&b"com.example.someevent"[..]));
        assert_eq!(header(m, "ce_comment"), Some("café".as_bytes()), "percent-decoded");
        assert_eq!(header(m, "content-type"), Some(&b"application/json; charset=utf-8"[..]));
        assert_eq!(m.key.as_deref(), Some(&b"user-7"[..]), "partitionkey is the key");
    }

    /// The JSON format's structured-mode example, with JSON data.
    #[test]
    fn structured_mode_stores_data_and_attributes() {
        let body = br#"{"specversion":"1.0","type":"com.example.someevent","source":"/mycontext","id":"A234-1234-1234",
            "time":"2018-04-05T17:31:00Z","comexampleextension1":"value","comexampleothervalue":5,
            "datacontenttype":"application/json","data":{"appinfoA":"abc","appinfoB":123}}"#;
        let out = messages(&[], Some("application/cloudevents+json; charset=UTF-8"), Bytes::from_static(body))
            .expect("valid");
        let m = &out[0];
        let data: serde_json::Value = serde_json::from_slice(&m.value).expect("JSON data");
        assert_eq!(data, serde_json::json!({"appinfoA": "abc", "appinfoB": 123}));
        assert_eq!(header(m, "ce_comexampleothervalue"), Some(&b"5"[..]));
        assert_eq!(header(m, "content-type"), Some(&b"application/json"[..]));
        assert!(header(m, "ce_datacontenttype").is_none(), "datacontenttype is content-type");
        assert!(m.key.is_none());
    }

    #[test]
    fn structured_text_and_base64_data_are_the_bytes() {
        let text = br#"{"specversion":"1.0","type":"t","source":"s","id":"1","datacontenttype":"text/plain","data":"hi there"}"#;
        let out = messages(&[], Some(STRUCTURED), Bytes::from_static(text)).expect("valid");
        assert_eq!(out[0].value, Bytes::from_static(b"hi there"));
        let b64 = br#"{"specversion":"1.0","type":"t","source":"s","id":"1","data_base64":"AAEC/w=="}"#;
        let out = messages(&[], Some(STRUCTURED), Bytes::from_static(b64)).expect("valid");
        assert_eq!(out[0].value, Bytes::from_static(&[0, 1, 2, 255]));
    }

    #[test]
    fn a_batch_is_one_message_per_event() {
        let body = br#"[{"specversion":"1.0","type":"t","source":"s","id":"1","data":1},
                        {"specversion":"1.0","type":"t","source":"s","id":"2","data":"two"}]"#;
        let out = messages(&[], Some(BATCH), Bytes::from_static(body)).expect("valid");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].value, Bytes::from_static(b"\"two\""), "JSON data stays JSON");
        assert_eq!(header(&out[1], "ce_id"), Some(&b"2"[..]));
    }

    #[test]
    fn a_plain_body_keeps_its_content_type() {
        let out = messages(&[], Some("text/csv"), Bytes::from_static(b"a,b")).expect("plain");
        assert_eq!(out[0].value, Bytes::from_static(b"a,b"));
        assert_eq!(header(&out[0], "content-type"), Some(&b"text/csv"[..]));
        assert!(out[0].headers.iter().all(|h| !h.key.starts_with("ce_")));
    }

    #[test]
    fn invalid_events_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"specversion":"0.3","type":"t","source":"s","id":"1"}"#, "specversion"),
            (br#"{"specversion":"1.0","type":"t","source":"s"}"#, "no id"),
            (br#"{"specversion":"1.0","type":"t","id":"1","source":""}"#, "no source"),
            (br#"{"specversion":"1.0","type":"t","source":"s","id":"1","Bad-Name":"x"}"#, "attribute name"),
            (br#"{"specversion":"1.0","type":"t","source":"s","id":"1","data":1,"data_base64":"AA=="}"#, "both"),
            (br#"{"specversion":"1.0","type":"t","source":"s","id":"1","ext":{"a":1}}"#, "must be a string"),
            (br#"[1,2]"#, "not a JSON object"),
            (b"{not json", "not valid JSON"),
        ];
        for (body, why) in cases {
            let e = messages(&[], Some(STRUCTURED), Bytes::copy_from_slice(body)).expect_err("refused");
            assert!(e.to_string().contains(why), "{}: {e}", String::from_utf8_lossy(body));
        }
        let e = messages(&[], Some(BATCH), Bytes::from_static(b"[]")).expect_err("empty batch");
        assert!(e.to_string().contains("empty"), "{e}");
        let missing = h(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s")]);
        let e = messages(&missing, None, Bytes::new()).expect_err("no type");
        assert!(e.to_string().contains("no type"), "{e}");
    }
}
