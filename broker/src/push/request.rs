//! What a push sends: one event in CloudEvents HTTP binary mode (`ce-*`
//! headers, the data as the body), several as
//! `application/cloudevents-batch+json`. Every event carries the extension
//! `deliveryattempt` (1 on the first delivery), and the request the header
//! `sluice-delivery-attempt` (the highest in it), so a handler can
//! deduplicate by `id` and see retries.

use axum::http::{HeaderName, HeaderValue, Request};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{Map, Value};

use crate::event::{is_json, ReadEvent};
use crate::group::PushConfig;

/// The extension attribute naming the delivery attempt.
pub const ATTEMPT_ATTRIBUTE: &str = "deliveryattempt";
/// The request header naming the (highest) delivery attempt.
pub const ATTEMPT_HEADER: &str = "sluice-delivery-attempt";
/// The batch media type.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// What the HTTP binding percent-encodes in a `ce-*` header value: controls,
/// space, `"`, `%` and everything outside printable ASCII.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// An event to push with its delivery attempt.
pub struct Outgoing {
    /// The event.
    pub event: ReadEvent,
    /// Its delivery attempt (1 first).
    pub attempt: u32,
}

/// The request pushing `events` (one: binary mode; more: batch) to `config`'s endpoint.
pub fn build(config: &PushConfig, events: &[Outgoing]) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::post(&config.endpoint);
    for (name, value) in &config.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let attempt = events.iter().map(|e| e.attempt).max().unwrap_or(1);
    builder = builder.header(ATTEMPT_HEADER, attempt);
    let body = match events {
        [one] => {
            for (name, value) in &one.event.attributes {
                let name = HeaderName::try_from(format!("ce-{name}")).map_err(|e| e.to_string())?;
                let encoded = utf8_percent_encode(value, HEADER_VALUE).to_string();
                builder = builder.header(name, HeaderValue::try_from(encoded).map_err(|e| e.to_string())?);
            }
            builder = builder.header(format!("ce-{ATTEMPT_ATTRIBUTE}"), one.attempt);
            if let Some(content_type) = &one.event.content_type {
                builder = builder.header("content-type", content_type.as_str());
            }
            one.event.data.clone()
        }
        many => {
            builder = builder.header("content-type", BATCH_CONTENT_TYPE);
            let batch: Vec<Value> = many.iter().map(structured).collect();
            Bytes::from(serde_json::to_vec(&batch).map_err(|e| e.to_string())?)
        }
    };
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

/// One event in structured JSON: attributes as strings, data as JSON when
/// its content type says so and it parses, else as text, else base64.
fn structured(outgoing: &Outgoing) -> Value {
    let event = &outgoing.event;
    let mut fields = Map::with_capacity(event.attributes.len() + 3);
    for (name, value) in &event.attributes {
        fields.insert(name.clone(), Value::String(value.clone()));
    }
    fields.insert(ATTEMPT_ATTRIBUTE.into(), Value::from(outgoing.attempt));
    if let Some(content_type) = &event.content_type {
        fields.insert("datacontenttype".into(), Value::String(content_type.clone()));
    }
    if !event.data.is_empty() {
        let json = event.content_type.as_deref().is_some_and(is_json);
        match (
            json.then(|| serde_json::from_slice::<Value>(&event.data).ok()).flatten(),
            std::str::from_utf8(&event.data),
        ) {
            (Some(value), _) => {
                fields.insert("data".into(), value);
            }
            (None, Ok(text)) => {
                fields.insert("data".into(), Value::String(text.to_owned()));
            }
            (None, Err(_)) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&event.data);
                fields.insert("data_base64".into(), Value::String(encoded));
            }
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PushConfig {
        PushConfig {
            endpoint: "http://127.0.0.1:9/hook".into(),
            batch_size: 10,
            max_batching_window_ms: 0,
            max_concurrency: 1,
            timeout_ms: 1000,
            headers: vec![("authorization".into(), "Bearer x".into())],
        }
    }

    fn event(id: &str, content_type: Option<&str>, data: &[u8]) -> Outgoing {
        let attributes = [("specversion", "1.0"), ("id", id), ("source", "/s p"), ("type", "t")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Outgoing {
            event: ReadEvent {
                attributes,
                content_type: content_type.map(str::to_owned),
                data: Bytes::copy_from_slice(data),
            },
            attempt: 2,
        }
    }

    #[test]
    fn one_event_goes_in_binary_mode() {
        let request = build(&config(), &[event("e1", Some("text/plain"), b"hi")]).expect("request");
        let h = request.headers();
        assert_eq!(h["ce-id"], "e1");
        assert_eq!(h["ce-source"], "/s%20p", "percent-encoded per the HTTP binding");
        assert_eq!(h["ce-deliveryattempt"], "2");
        assert_eq!(h[ATTEMPT_HEADER], "2");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["authorization"], "Bearer x");
    }

    #[test]
    fn several_go_as_a_batch_with_typed_data() {
        let events = [
            event("a", Some("application/json"), br#"{"n":1}"#),
            event("b", Some("text/plain"), b"hi"),
            event("c", None, &[0xff, 0x00]),
        ];
        let request = build(&config(), &events).expect("request");
        assert_eq!(request.headers()["content-type"], BATCH_CONTENT_TYPE);
        let body: Vec<Value> = serde_json::from_slice(&futures::executor::block_on(body_bytes(request))).expect("JSON");
        assert_eq!(body[0]["data"]["n"], 1);
        assert_eq!(body[0]["deliveryattempt"], 2);
        assert_eq!(body[1]["data"], "hi");
        assert_eq!(body[2]["data_base64"], "/wA=");
        assert_eq!(body[2]["id"], "c");
    }

    async fn body_bytes(request: Request<Full<Bytes>>) -> Bytes {
        use http_body_util::BodyExt;
        match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        }
    }
}
