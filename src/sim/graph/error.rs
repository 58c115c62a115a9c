//! Graph's error shape `{"error":{"code","message","innerError":{…}}}` and the
//! reply type every `/v1.0` handler produces. The innerError is filled in by
//! the router, which knows the request and client-request ids.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

/// A handler's answer before it becomes an HTTP response (or a `$batch` item).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Reply { status, headers: HeaderMap::new(), body: Some(body) }
    }
    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }
    pub fn created(body: Value) -> Self {
        Self::json(StatusCode::CREATED, body)
    }
    pub fn no_content() -> Self {
        Reply { status: StatusCode::NO_CONTENT, headers: HeaderMap::new(), body: None }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
            self.headers.insert(n, v);
        }
        self
    }
}

/// A Graph error: status, code and message (+ extra headers such as `Retry-After`).
#[derive(Debug)]
pub(crate) struct GraphError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub headers: Vec<(String, String)>,
    /// Extra members of `innerError` (the throttling body carries code/status/message there).
    pub inner: Option<Value>,
}

pub(crate) type GResult<T = Reply> = Result<T, GraphError>;

impl GraphError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        GraphError { status, code: code.into(), message: message.into(), headers: Vec::new(), inner: None }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ErrorItemNotFound", "The specified object was not found in the store.")
    }
    pub fn invalid_user(user: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ErrorInvalidUser", format!("The requested user '{user}' is invalid."))
    }
    /// What Outlook resources answer for a user key Exchange cannot find,
    /// such as an email address that is not the user's UPN.
    pub fn resource_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", "Resource could not be discovered.")
    }
    pub fn access_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "ErrorAccessDenied", "Access to OData is disabled.")
    }
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message)
    }
    pub fn conflict_etag() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the request does \
             not match the current change key for the item.",
        )
    }
    pub fn body_read(message: impl Into<String>) -> Self {
        Self::bad_request("RequestBodyRead", message)
    }
    pub fn throttled(retry_after: &str) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Please retry again later.");
        e.headers.push(("Retry-After".into(), retry_after.into()));
        e.inner = Some(json!({"code": "429", "status": "429", "message": "Please retry after"}));
        e
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Renders the error with Graph's innerError for this request.
    pub fn into_reply(self, request_id: &str, client_request_id: &str, date: &str) -> Reply {
        let mut inner = json!({"date": date, "request-id": request_id, "client-request-id": client_request_id});
        if let Some(Value::Object(extra)) = self.inner {
            for (k, v) in extra {
                inner[k] = v;
            }
        }
        let mut reply = Reply::json(
            self.status,
            json!({"error": {"code": self.code, "message": self.message, "innerError": inner}}),
        );
        for (k, v) in &self.headers {
            reply = reply.header(k, v);
        }
        reply
    }
}
