//! Delayed delivery: a message may name the earliest time a group may
//! deliver it, by one of three headers (the first present wins):
//!
//! | header | value |
//! |---|---|
//! | `sluice-deliver-at` | a time: ms since the Unix epoch, or RFC 3339 |
//! | `sluice-delay-ms` | a delay in ms after the message was appended |
//! | `ce_deliverat` | the CloudEvents extension `deliverat` (RFC 3339, or ms) as the Kafka binding stores it; over HTTP, `ce-deliverat` or a `deliverat` attribute |
//!
//! Producers' values are checked when produced (`validate`), so a group
//! never meets one it cannot read.

use sluice_proto::v1::Header;

use crate::error::{Error, Result};

/// Absolute delivery time.
pub const DELIVER_AT_HEADER: &str = "sluice-deliver-at";
/// Delivery delay after the append.
pub const DELAY_HEADER: &str = "sluice-delay-ms";
/// The CloudEvents extension attribute, as stored.
pub const CLOUDEVENTS_HEADER: &str = "ce_deliverat";

/// A time as ms since the Unix epoch, or RFC 3339.
fn parse_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return (ms >= 0).then_some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

fn parse_delay(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse::<u64>().ok().map(|d| d.min(i64::MAX as u64 / 2) as i64)
}

/// When a message appended at `appended_ms` with `headers` may first be
/// delivered; `None` when it names no time.
pub fn deliver_at<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>, appended_ms: i64) -> Option<i64> {
    for (name, value) in headers {
        match name {
            DELIVER_AT_HEADER | CLOUDEVENTS_HEADER => return parse_time(value),
            DELAY_HEADER => return parse_delay(value).map(|d| appended_ms.saturating_add(d)),
            _ => {}
        }
    }
    None
}

/// Refuses a message whose delivery-time header cannot be read (message `i` of its batch).
pub fn validate(i: usize, headers: &[Header]) -> Result<()> {
    for h in headers {
        let ok = match h.key.as_str() {
            DELIVER_AT_HEADER | CLOUDEVENTS_HEADER => parse_time(&h.value).is_some(),
            DELAY_HEADER => parse_delay(&h.value).is_some(),
            _ => continue,
        };
        if !ok {
            return Err(Error::invalid(
                "messages",
                format!(
                    "message {i}: header {} = {:?} is not a delivery time ({DELIVER_AT_HEADER} and deliverat: ms since the Unix epoch or RFC 3339; {DELAY_HEADER}: ms)",
                    h.key,
                    String::from_utf8_lossy(&h.value)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, value: &str) -> Option<i64> {
        deliver_at([(name, value.as_bytes())], 1_000)
    }

    #[test]
    fn every_form_gives_the_time() {
        assert_eq!(at(DELIVER_AT_HEADER, "5000"), Some(5000));
        assert_eq!(at(DELIVER_AT_HEADER, "1970-01-01T00:00:05Z"), Some(5000));
        assert_eq!(at(CLOUDEVENTS_HEADER, "1970-01-01T00:00:05.5+00:00"), Some(5500));
        assert_eq!(at(DELAY_HEADER, "250"), Some(1250));
        assert_eq!(at("other", "5000"), None);
    }

    #[test]
    fn unreadable_times_are_refused() {
        for (k, v) in [(DELIVER_AT_HEADER, "tomorrow"), (DELAY_HEADER, "-5"), (CLOUDEVENTS_HEADER, "")] {
            let h = Header { key: k.into(), value: v.as_bytes().to_vec().into() };
            assert!(validate(0, &[h]).is_err(), "{k}={v}");
        }
        let h = Header { key: DELAY_HEADER.into(), value: b"100".to_vec().into() };
        assert!(validate(0, &[h]).is_ok());
    }
}
