//! HTTP answers for broker errors, from the one table (`grpc::status`): the
//! gRPC code maps to its HTTP status (as Google's APIs map them), the
//! stable reason and the message go in a JSON body, and back-pressure and
//! unavailability say when to retry (`Retry-After`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tonic::Code;

use crate::error::Error;

/// Seconds a client waits before retrying a `429` or `503`.
const RETRY_AFTER_SECS: &str = "1";

/// A refused HTTP request: status, stable reason and message.
#[derive(Debug)]
pub struct Failure {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Failure {
        metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
        Failure { status, reason, message }
    }

    /// A body larger than the cap (`413`).
    pub fn too_large() -> Failure {
        let message = "the body is larger than the broker's max-request-bytes; split the batch".to_owned();
        Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// A body that did not arrive in full within `timeout` (`408`).
    pub fn body_timeout(timeout: std::time::Duration) -> Failure {
        let message = format!("the body did not arrive within {} ms (gateway-read-timeout-ms)", timeout.as_millis());
        Failure::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// A body the connection broke off (`400`).
    pub fn bad_body(why: &str) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_body", format!("could not read the body: {why}"))
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let (code, reason) = crate::grpc::status::code_and_reason(&e);
        // A full disk is not the client's rate: no point in a quick retry, but still retryable.
        let status = if reason == "disk_full" { StatusCode::INSUFFICIENT_STORAGE } else { http_status(code) };
        Failure::new(status, reason, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "status": self.status.as_u16(), "reason": self.reason, "message": self.message }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if matches!(self.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
        }
        response
    }
}
