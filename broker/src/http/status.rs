//! HTTP answers for broker errors, from the one table (`grpc::status`): the
//! gRPC code maps to its HTTP status (as Google's APIs map them), the
//! stable reason and the message go in a JSON body, and back-pressure and
//! unavailability say when to retry (`Retry-After`).

use axum::extract::rejection::BytesRejection;
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
    /// A body the gateway could not read: too large (`413`) or cut off.
    pub fn from_rejection(rejection: BytesRejection) -> Failure {
        let status = rejection.status();
        let (reason, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
            ("too_large", "the body is larger than the broker's max-request-bytes; split the batch".to_owned())
        } else {
            ("bad_body", format!("could not read the body: {}", rejection.body_text()))
        };
        metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
        Failure { status, reason, message }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
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
        metrics::counter!(crate::metrics::REJECTED, "reason" => reason).increment(1);
        // A full disk is not the client's rate: no point in a quick retry, but still retryable.
        let status = if reason == "disk_full" { StatusCode::INSUFFICIENT_STORAGE } else { http_status(code) };
        Failure { status, reason, message: e.to_string() }
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
        response
    }
}
