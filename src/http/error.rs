//! The one error type of the HTTP edge: a status, a stable machine code and
//! a short message, rendered as `{"error":{"code","message"}}`. Internals
//! are logged here, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// Body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable reason, e.g. `bad_signature`.
    pub code: String,
    /// What went wrong and, where the caller can act, how to fix it.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The queue or store cannot take the work now: the sender should retry.
    pub fn unavailable(internal: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %internal, "answering 503");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "hqsync cannot accept this right now; retry later")
    }

    /// An unexpected failure: logged in full, answered in general terms.
    pub fn internal(internal: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %internal, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.into(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}

/// Errors every admin route can answer (`responses(AdminErrors, …)`); routes
/// that take input add their own `400`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum AdminErrors {
    /// No token, or one that is malformed, expired or signed with another key or algorithm (or the admin API is not configured)
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The store or the queue cannot answer now; retry
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Errors of the routes that take a JSON body, beside [`AdminErrors`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum JsonBodyErrors {
    /// Body over `http.max_body_bytes`
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not sent as `Content-Type: application/json`
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// JSON of the wrong shape: a field of the wrong type, an unknown field or a missing one (the message names it)
    #[response(status = 422)]
    InvalidBody(ErrorBody),
}
