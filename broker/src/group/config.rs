//! A group's settings as the broker stores them (JSON in the `meta` family),
//! with their allowed ranges and the redelivery backoff they imply.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How messages are handed to members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupMode {
    /// Any member gets any message.
    Shared,
    /// One member per partition, in order.
    Ordered,
}

/// Redelivery delays: `initial × multiplier^(attempt-1)`, capped at `max`, spread by ±`jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackoffConfig {
    /// First delay, ms.
    pub initial_ms: u32,
    /// Largest delay, ms.
    pub max_ms: u32,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Random spread as a fraction of the delay.
    pub jitter: f64,
}

/// Everything configurable about a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GroupConfig {
    /// Internal id (never reused).
    pub id: u64,
    /// The topic read.
    pub topic: String,
    /// Lease length, ms.
    pub ack_deadline_ms: u32,
    /// Deliveries before dead-lettering; 0 = unlimited.
    pub max_delivery_attempts: u32,
    /// Where exhausted messages go; empty = none.
    pub dead_letter_topic: String,
    /// Redelivery backoff.
    pub backoff: BackoffConfig,
    /// Delivery mode.
    pub mode: GroupMode,
    /// Creation time.
    pub created_ms: i64,
    /// The group's own name (kept here for dead-letter headers).
    #[serde(default)]
    pub name: String,
    /// Set: a dispatcher in the broker pushes the group's messages to an
    /// HTTP endpoint (`crate::push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushConfig>,
    /// Knative-style filters, all of which an event must pass to be
    /// delivered (`group::filter`); empty passes everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<super::filter::Filter>,
}

/// A push subscription's settings (ranges in `PushConfig::validate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PushConfig {
    /// `http://host[:port]/path`, checked against the broker's allowlist.
    pub endpoint: String,
    /// Most events per request.
    pub batch_size: u32,
    /// How long a batch may wait to fill, ms.
    pub max_batching_window_ms: u32,
    /// Most requests in flight.
    pub max_concurrency: u32,
    /// Request timeout, ms.
    pub timeout_ms: u32,
    /// Extra headers on every request (sorted by name).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// Most events in one push request.
pub const MAX_PUSH_BATCH: u32 = 1000;
/// Longest push batching window, ms.
pub const MAX_PUSH_WINDOW_MS: u32 = 60_000;
/// Most push requests in flight per group.
pub const MAX_PUSH_CONCURRENCY: u32 = 1000;
/// Default push request timeout (shortened to fit the ack deadline), ms.
pub const DEFAULT_PUSH_TIMEOUT_MS: u32 = 10_000;
/// Default push concurrency.
pub const DEFAULT_PUSH_CONCURRENCY: u32 = 8;
/// Headers the dispatcher sets itself, so a push config may not.
const RESERVED_PUSH_HEADERS: &[&str] = &["content-type", "content-length", "host", "transfer-encoding", "connection"];

impl PushConfig {
    /// Rejects settings outside their ranges, naming the field; a push must
    /// end (answer and all) within the lease it was sent under.
    pub fn validate(&self, ack_deadline_ms: u32) -> Result<()> {
        if self.endpoint.is_empty() {
            return Err(Error::invalid(
                "config.push.endpoint",
                "name the URL to push to, e.g. http://handler:8080/events",
            ));
        }
        if !(1..=MAX_PUSH_BATCH).contains(&self.batch_size) {
            return Err(Error::invalid("config.push.batch_size", format!("must be 1..={MAX_PUSH_BATCH}")));
        }
        if self.max_batching_window_ms > MAX_PUSH_WINDOW_MS {
            return Err(Error::invalid(
                "config.push.max_batching_window_ms",
                format!("must be at most {MAX_PUSH_WINDOW_MS}"),
            ));
        }
        if !(1..=MAX_PUSH_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(Error::invalid("config.push.max_concurrency", format!("must be 1..={MAX_PUSH_CONCURRENCY}")));
        }
        if self.timeout_ms < 10
            || u64::from(self.timeout_ms) + u64::from(self.max_batching_window_ms) > u64::from(ack_deadline_ms)
        {
            return Err(Error::invalid(
                "config.push.timeout_ms",
                format!(
                    "must be at least 10 ms, and with max_batching_window_ms ({} ms) at most the ack deadline ({ack_deadline_ms} ms), so an answer comes while the lease holds",
                    self.max_batching_window_ms
                ),
            ));
        }
        for (name, value) in &self.headers {
            let valid_name = axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
            if !valid_name || axum::http::HeaderValue::from_str(value).is_err() {
                return Err(Error::invalid("config.push.headers", format!("{name:?} is not a valid HTTP header")));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_PUSH_HEADERS.contains(&lower.as_str())
                || lower.starts_with("ce-")
                || lower.starts_with("sluice-")
            {
                return Err(Error::invalid(
                    "config.push.headers",
                    format!("{name:?} is set by the dispatcher (content-type, ce-*, sluice-* and framing headers)"),
                ));
            }
        }
        Ok(())
    }

    /// The default timeout for a group with `ack_deadline_ms` and this window.
    pub fn default_timeout_ms(ack_deadline_ms: u32, window_ms: u32) -> u32 {
        DEFAULT_PUSH_TIMEOUT_MS.min(ack_deadline_ms.saturating_sub(window_ms))
    }
}

/// Limits on group settings.
pub const ACK_DEADLINE_MS: std::ops::RangeInclusive<u32> = 100..=600_000;
/// Longest backoff.
pub const MAX_BACKOFF_MS: u32 = 3_600_000;

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { initial_ms: 1000, max_ms: 60_000, multiplier: 2.0, jitter: 0.2 }
    }
}

impl GroupConfig {
    /// Rejects settings outside their ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !ACK_DEADLINE_MS.contains(&self.ack_deadline_ms) {
            return Err(Error::invalid(
                "config.ack_deadline_ms",
                format!("must be 100..=600000 ms, got {}", self.ack_deadline_ms),
            ));
        }
        if self.max_delivery_attempts > 0 && self.dead_letter_topic.is_empty() {
            return Err(Error::invalid(
                "config.dead_letter_topic",
                "a group with max_delivery_attempts needs a dead_letter_topic (messages are never dropped silently)",
            ));
        }
        if self.dead_letter_topic == self.topic {
            return Err(Error::invalid("config.dead_letter_topic", "must differ from the group's topic"));
        }
        let b = &self.backoff;
        if b.initial_ms > MAX_BACKOFF_MS || b.max_ms > MAX_BACKOFF_MS || b.max_ms < b.initial_ms {
            return Err(Error::invalid("config.backoff", "need initial_ms <= max_ms <= 3600000"));
        }
        if !(1.0..=10.0).contains(&b.multiplier) {
            return Err(Error::invalid("config.backoff.multiplier", "must be 1.0..=10.0"));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(Error::invalid("config.backoff.jitter", "must be 0.0..=1.0"));
        }
        if let Some(push) = &self.push {
            push.validate(self.ack_deadline_ms)?;
        }
        super::filter::validate("config.filter", &self.filters)?;
        Ok(())
    }

    /// The delay before delivery number `attempts + 1`, given a uniform sample `r` in [0, 1).
    pub fn backoff_ms(&self, attempts: u32, r: f64) -> i64 {
        let b = &self.backoff;
        let exp = b.multiplier.powi(attempts.saturating_sub(1).min(64) as i32);
        let base = (f64::from(b.initial_ms) * exp).min(f64::from(b.max_ms));
        let spread = base * b.jitter * (2.0 * r - 1.0);
        (base + spread).max(0.0) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GroupConfig {
        GroupConfig {
            id: 1,
            topic: "t".into(),
            ack_deadline_ms: 1000,
            max_delivery_attempts: 0,
            dead_letter_topic: String::new(),
            backoff: BackoffConfig::default(),
            mode: GroupMode::Shared,
            created_ms: 0,
            name: "g".into(),
            push: None,
            filters: Vec::new(),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = settings();
        assert_eq!(s.backoff_ms(1, 0.5), 1000);
        assert_eq!(s.backoff_ms(2, 0.5), 2000);
        assert_eq!(s.backoff_ms(30, 0.5), 60_000);
        assert_eq!(s.backoff_ms(1, 0.0), 800);
    }

    #[test]
    fn limits_without_dead_letter_topic_are_refused() {
        let s = GroupConfig { max_delivery_attempts: 3, ..settings() };
        assert!(s.validate().is_err());
        let s = GroupConfig { max_delivery_attempts: 3, dead_letter_topic: "t".into(), ..settings() };
        assert!(s.validate().is_err(), "dead-letter topic equal to the source");
        assert!(settings().validate().is_ok());
    }
}
