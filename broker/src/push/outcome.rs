//! What an endpoint's answer means for the events of a push: `2xx` acks
//! them, except items an SQS-style partial-failure body names
//! (`{"batchItemFailures":[{"itemIdentifier":"<event id>"}]}`); `429` and
//! `503` with `Retry-After` nack them with that delay; anything else nacks
//! them with the group's backoff, the status and the first bytes of the
//! answer as the reason (the dead-letter reason once attempts run out).

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::group::config::MAX_BACKOFF_MS;

/// Most bytes of an answer's body quoted in a reason.
pub const REASON_EXCERPT_BYTES: usize = 256;
/// Most bytes of an answer's body read (a partial-failure list longer than this is ignored).
pub const MAX_ANSWER_BYTES: usize = 256 << 10;

/// What to do with the events of one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ack every event but those whose id is in `failed` (nacked with the group's backoff).
    Delivered {
        /// Event ids the endpoint reported failed.
        failed: Vec<String>,
    },
    /// Nack every event, to be redelivered after `delay_ms`.
    RetryAfter {
        /// The endpoint's Retry-After, ms (capped at the longest backoff).
        delay_ms: u32,
        /// Why.
        reason: String,
    },
    /// Nack every event with the group's backoff.
    Failed {
        /// Why (status and the first bytes of the answer, or the transport error).
        reason: String,
    },
}

impl Outcome {
    /// Whether the endpoint answered as a healthy one does (concurrency may grow).
    pub fn healthy(&self) -> bool {
        matches!(self, Outcome::Delivered { .. })
    }

    /// The metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered { failed } if failed.is_empty() => "delivered",
            Outcome::Delivered { .. } => "partially_failed",
            Outcome::RetryAfter { .. } => "retry_after",
            Outcome::Failed { .. } => "failed",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartialFailures {
    #[serde(default)]
    batch_item_failures: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    item_identifier: serde_json::Value,
}

/// The outcome of an answer with `status`, `headers` and (the first bytes of) `body`.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8], now_ms: i64) -> Outcome {
    if status.is_success() {
        let failed = serde_json::from_slice::<PartialFailures>(body)
            .map(|p| {
                p.batch_item_failures
                    .into_iter()
                    .map(|i| match i.item_identifier {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Outcome::Delivered { failed };
    }
    let reason = format!("push: HTTP {}{}", status.as_u16(), excerpt(body));
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        if let Some(delay_ms) =
            headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| retry_after_ms(v, now_ms))
        {
            return Outcome::RetryAfter { delay_ms, reason };
        }
    }
    Outcome::Failed { reason }
}

/// `: <first bytes of body>` (lossy UTF-8, one line), or nothing for an empty body.
fn excerpt(body: &[u8]) -> String {
    let cut = &body[..body.len().min(REASON_EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// A `Retry-After` value in ms: delay seconds, or an HTTP date (from `now_ms`).
pub fn retry_after_ms(value: &str, now_ms: i64) -> Option<u32> {
    let value = value.trim();
    let ms = match value.parse::<u64>() {
        Ok(seconds) => seconds.saturating_mul(1000),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            at.timestamp_millis().saturating_sub(now_ms).max(0) as u64
        }
    };
    Some(ms.min(u64::from(MAX_BACKOFF_MS)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().expect("header"));
        }
        classify(StatusCode::from_u16(status).expect("status"), &map, body.as_bytes(), 1_000_000)
    }

    #[test]
    fn success_acks_all_but_the_reported_failures() {
        assert_eq!(answer(200, &[], "ok"), Outcome::Delivered { failed: vec![] });
        assert_eq!(answer(204, &[], ""), Outcome::Delivered { failed: vec![] });
        let partial = r#"{"batchItemFailures":[{"itemIdentifier":"e3"},{"itemIdentifier":7}]}"#;
        assert_eq!(answer(200, &[], partial), Outcome::Delivered { failed: vec!["e3".into(), "7".into()] });
    }

    #[test]
    fn throttling_honours_retry_after() {
        assert!(matches!(answer(429, &[("retry-after", "2")], ""), Outcome::RetryAfter { delay_ms: 2000, .. }));
        assert!(matches!(
            answer(503, &[("retry-after", "999999")], ""),
            Outcome::RetryAfter { delay_ms: MAX_BACKOFF_MS, .. }
        ));
        assert!(matches!(answer(429, &[], ""), Outcome::Failed { .. }), "no Retry-After: the group's backoff");
        assert_eq!(retry_after_ms("Thu, 01 Jan 1970 00:17:00 GMT", 1_000_000), Some(20_000));
    }

    #[test]
    fn failures_quote_status_and_body() {
        let Outcome::Failed { reason } = answer(500, &[], "kaboom\nstack") else { panic!("a failure") };
        assert_eq!(reason, "push: HTTP 500: kaboom stack");
        let long = "x".repeat(1000);
        let Outcome::Failed { reason } = answer(400, &[], &long) else { panic!("a failure") };
        assert!(reason.len() < REASON_EXCERPT_BYTES + 30);
    }
}
