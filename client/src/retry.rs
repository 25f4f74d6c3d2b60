//! Retry policy: exponential backoff with jitter on statuses that mean
//! "not done, try again" — never on ones that mean "the request is wrong".

use std::time::Duration;

use backon::ExponentialBuilder;
use tonic::Code;

/// Codes a retry may cure: the broker was unreachable, overloaded, or restarting.
/// A connection cut mid-response surfaces as `UNKNOWN` or `INTERNAL` (an HTTP/2
/// error), so those are retried too; every Sluice write is safe to retry
/// (idempotent produce, idempotent acks).
pub fn is_retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            // What tonic reports when the connection under an in-flight request closed.
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
    )
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { initial: Duration::from_millis(50), max: Duration::from_secs(2), max_retries: 20 }
    }
}

impl RetryConfig {
    /// The backoff schedule, with full jitter so many clients do not retry in step.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_max_times(self.max_retries)
            .with_factor(2.0)
            .with_jitter()
    }
}
