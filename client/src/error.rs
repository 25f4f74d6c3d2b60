//! The client error type.

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with an error status.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// The address could not be used.
    #[error("invalid broker address {addr}: {source}")]
    Address {
        /// The address given.
        addr: String,
        /// Why it was rejected.
        #[source]
        source: tonic::transport::Error,
    },
    /// The bearer token cannot be sent.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The producer or reader was closed.
    #[error("client closed")]
    Closed,
    /// A topic's metadata made the request impossible.
    #[error("{0}")]
    Topic(String),
}

impl Error {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Status(s) => crate::retry::is_retryable_code(s.code()),
            _ => false,
        }
    }

    /// The broker's stable reason code (`sluice-reason`), when it gave one:
    /// finer than the gRPC code, e.g. `out_of_order_sequence` or `not_leader`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Status(s) => s.metadata().get("sluice-reason").and_then(|v| v.to_str().ok()),
            _ => None,
        }
    }

    /// The gRPC code, when the broker answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// Result alias for client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;
