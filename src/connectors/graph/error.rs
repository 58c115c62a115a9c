//! What can go wrong talking to Microsoft Graph, and how an answer is read:
//! status first, then the error `code` (GRAPH.md §2). This module decides
//! which failures are retried, which are permanent configuration errors
//! (credentials, access policy) and which the caller must act on (412, 404,
//! delta reset). It never carries a secret or an access token in a message.

use std::time::Duration;

use serde_json::Value;

/// A failed Graph or token request, after the retry policy gave up or
/// decided not to retry.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Entra ID refused the app's credentials (wrong or expired secret,
    /// unknown tenant or app). Permanent until an admin fixes it.
    #[error("Entra ID refused the credentials for tenant {tenant}: {message}; fix: {fix}")]
    Auth { tenant: String, message: String, fix: String },
    /// The mailbox is outside the app's application access policy (or RBAC
    /// for Applications). Permanent per mailbox until an Exchange admin acts.
    #[error("access to mailbox {mailbox} is denied to the app; fix: {fix}")]
    MailboxDenied { mailbox: String, fix: String },
    /// `404`: the item (or user) does not exist. `message` is Graph's own
    /// text: kept for debugging, never shown (Display names the code only).
    #[error("not found ({code})")]
    NotFound { code: String, message: String },
    /// `412`: the `If-Match` version is stale; re-read and merge.
    #[error("version conflict ({code})")]
    Conflict { code: String, message: String },
    /// `410` / `syncStateNotFound` / `resyncRequired`: the delta token is gone.
    #[error("delta state lost ({code}); a fresh round is needed")]
    DeltaReset { code: String, location: Option<String> },
    /// Still throttled (`429`) when the retry budget ran out.
    #[error("throttled by Graph; retry budget exhausted (last Retry-After {retry_after:?})")]
    Throttled { retry_after: Option<Duration> },
    /// Any other non-success answer (5xx after retries, 400, other 403…).
    #[error("Graph answered {status} {code} (request-id {request_id:?})")]
    Status { status: u16, code: String, message: String, request_id: Option<String> },
    /// Connection failure or timeout, after retries.
    #[error("transport error talking to Graph: {0}")]
    Transport(String),
    /// The answer could not be understood (bad JSON, missing link…).
    #[error("unexpected answer from Graph: {0}")]
    Decode(String),
    /// The outbound address guard refused the Graph or login host (it
    /// resolves to a loopback, private, link-local… address). Permanent
    /// until an operator changes the base URL or `remote.allow_private_addresses`.
    #[error("{0}")]
    Blocked(String),
    /// Persisting a cursor or a bootstrap id failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl GraphError {
    /// Worth retrying later (e.g. through the queue's retry path).
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Throttled { .. } | GraphError::Transport(_) => true,
            GraphError::Status { status, .. } => *status >= 500 || *status == 429,
            GraphError::Store(e) => e.is_unavailable(),
            _ => false,
        }
    }

    /// A configuration problem of the tenant or mailbox: park, don't retry.
    pub fn is_configuration(&self) -> bool {
        matches!(self, GraphError::Auth { .. } | GraphError::MailboxDenied { .. } | GraphError::Blocked(_))
    }
}

/// What the retry loop does with one HTTP answer.
#[derive(Debug)]
pub(crate) enum Verdict {
    Success,
    /// `429`: wait this long (or back off when absent) before the next attempt to the mailbox.
    Throttled(Option<Duration>),
    /// `503`/`504`/`502`/`500`: back off with jitter (honour `Retry-After` when present).
    Unavailable(Option<Duration>),
    /// `401 InvalidAuthenticationToken`: drop the cached token and retry once.
    RefreshToken,
    Fail(GraphError),
}

/// Longest `Retry-After` taken at face value: a broken header must not park a
/// request for hours (the total-wait budget still applies on top).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// `Retry-After` as decimal seconds (`2.128`), as Outlook sends it; an
/// HTTP-date is accepted too. Negative, NaN or unparsable values are `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Some(Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// `error.code` and `error.message` of a Graph error body (empty when
/// absent). The code is reduced to what a Graph error code is made of
/// (letters, digits, `_ . -`, at most 64): it is shown to callers, and the
/// answer may come from anywhere.
pub(crate) fn error_code(body: &Value) -> (String, String) {
    let e = body.get("error");
    let s = |k: &str| e.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
    (code_only(&s("code")), s("message"))
}

/// The characters of a remote error code that are shown (see [`error_code`]).
pub(crate) fn code_only(raw: &str) -> String {
    raw.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')).take(64).collect()
}

/// Reads one Graph (`/v1.0`) answer. `mailbox` is the mailbox the request
/// addressed, if any; `retry_after` the parsed header.
pub(crate) fn classify(
    status: u16,
    body: &Value,
    retry_after: Option<Duration>,
    mailbox: Option<&str>,
    client_id: &str,
    request_id: Option<String>,
) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Success;
    }
    let (code, message) = error_code(body);
    let delta_reset = code.eq_ignore_ascii_case("syncStateNotFound") || code.eq_ignore_ascii_case("resyncRequired");
    match status {
        429 => Verdict::Throttled(retry_after),
        500 | 502 | 503 | 504 => Verdict::Unavailable(retry_after),
        401 if code.eq_ignore_ascii_case("InvalidAuthenticationToken") || code.is_empty() => Verdict::RefreshToken,
        403 if code.eq_ignore_ascii_case("ErrorAccessDenied")
            || code.eq_ignore_ascii_case("Authorization_RequestDenied") =>
        {
            match mailbox {
                Some(mb) => Verdict::Fail(mailbox_denied(mb, client_id)),
                None => Verdict::Fail(GraphError::Status { status, code, message, request_id }),
            }
        }
        404 => Verdict::Fail(GraphError::NotFound { code, message }),
        410 => Verdict::Fail(GraphError::DeltaReset { code, location: None }),
        412 => Verdict::Fail(GraphError::Conflict { code, message }),
        _ if delta_reset => Verdict::Fail(GraphError::DeltaReset { code, location: None }),
        _ => Verdict::Fail(GraphError::Status { status, code, message, request_id }),
    }
}

pub(crate) fn mailbox_denied(mailbox: &str, client_id: &str) -> GraphError {
    GraphError::MailboxDenied {
        mailbox: mailbox.to_string(),
        fix: format!(
            "add {mailbox} to the mail-enabled security group of the application access policy for app {client_id} \
             (New-ApplicationAccessPolicy -AppId {client_id} -PolicyScopeGroupId <group> -AccessRight RestrictAccess; \
             check with Test-ApplicationAccessPolicy -Identity {mailbox} -AppId {client_id}; changes can take an hour), \
             or remove the mailbox from hqsync"
        ),
    }
}

/// Reads a failed token-endpoint answer (OAuth error format). `None` means
/// transient (5xx): worth another attempt.
pub(crate) fn classify_token_error(status: u16, body: &Value, tenant: &str, client_id: &str) -> Option<GraphError> {
    if status >= 500 || status == 429 {
        return None;
    }
    let error = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
    let description = body.get("error_description").and_then(Value::as_str).unwrap_or_default();
    // The description carries trace/correlation ids and a timestamp: keep the AADSTS sentence only.
    let description = description.split(" Trace ID:").next().unwrap_or_default().trim();
    let aadsts = description.split(':').next().filter(|s| s.starts_with("AADSTS")).unwrap_or_default();
    let fix = match (error, aadsts) {
        ("invalid_client", _) | (_, "AADSTS7000215") | (_, "AADSTS7000222") => format!(
            "check the client secret of app {client_id} in Entra ID (it may have expired): \
             create a new secret and update the tenant's credentials"
        ),
        ("unauthorized_client", _) | (_, "AADSTS700016") => format!(
            "check the client id: app {client_id} is not registered in directory {tenant}, \
             or admin consent was not granted there"
        ),
        (_, "AADSTS90002") | (_, "AADSTS90023") => {
            format!("check the Entra tenant id: directory {tenant} was not found")
        }
        ("invalid_scope", _) => "the token request scope must be https://graph.microsoft.com/.default".to_string(),
        _ => format!("check the Entra app registration {client_id} in directory {tenant}"),
    };
    // Shown to callers: the AADSTS code and the OAuth error word (one of
    // RFC 6749 §5.2's, else `unknown_error`), never the answer's own text.
    const OAUTH_ERRORS: [&str; 8] = [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "temporarily_unavailable",
        "server_error",
    ];
    let error = OAUTH_ERRORS.iter().find(|e| **e == error).copied().unwrap_or("unknown_error");
    let aadsts = if aadsts.len() > 6 && aadsts[6..].bytes().all(|b| b.is_ascii_digit()) { aadsts } else { "" };
    let message = if aadsts.is_empty() {
        format!("{error} (HTTP {status})")
    } else {
        format!("{} {error} (HTTP {status})", code_only(aadsts))
    };
    Some(GraphError::Auth { tenant: tenant.to_string(), message, fix })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_is_read_as_decimal_seconds() {
        assert_eq!(parse_retry_after("2.128"), Some(Duration::from_millis(2128)));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
    }

    #[test]
    fn retry_after_rejects_garbage_and_caps_huge_values() {
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn retry_after_accepts_an_http_date_in_the_past_as_zero() {
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    }

    fn err(code: &str) -> Value {
        json!({"error": {"code": code, "message": "m"}})
    }

    #[test]
    fn throttling_and_unavailability_are_retried() {
        let ra = Some(Duration::from_millis(1500));
        assert!(
            matches!(classify(429, &err("TooManyRequests"), ra, None, "app", None), Verdict::Throttled(r) if r == ra)
        );
        assert!(matches!(
            classify(503, &err("ServiceNotAvailable"), None, None, "app", None),
            Verdict::Unavailable(None)
        ));
        assert!(matches!(classify(504, &Value::Null, None, None, "app", None), Verdict::Unavailable(None)));
    }

    #[test]
    fn statuses_map_to_the_callers_actions() {
        let c = |s, code| classify(s, &err(code), None, Some("anna@x.de"), "app", None);
        assert!(matches!(c(200, ""), Verdict::Success));
        assert!(matches!(c(401, "InvalidAuthenticationToken"), Verdict::RefreshToken));
        assert!(matches!(c(404, "ErrorItemNotFound"), Verdict::Fail(GraphError::NotFound { .. })));
        assert!(matches!(c(412, "ErrorIrresolvableConflict"), Verdict::Fail(GraphError::Conflict { .. })));
        assert!(matches!(c(410, "syncStateNotFound"), Verdict::Fail(GraphError::DeltaReset { .. })));
        assert!(matches!(c(400, "resyncRequired"), Verdict::Fail(GraphError::DeltaReset { .. })));
        assert!(matches!(c(400, "ErrorInvalidRequest"), Verdict::Fail(GraphError::Status { status: 400, .. })));
    }

    #[test]
    fn access_denied_names_the_mailbox_and_the_policy_cmdlets() {
        let Verdict::Fail(e) = classify(403, &err("ErrorAccessDenied"), None, Some("anna@x.de"), "app-1", None) else {
            panic!("403 must not be retried");
        };
        assert!(e.is_configuration());
        let text = e.to_string();
        assert!(text.contains("anna@x.de") && text.contains("New-ApplicationAccessPolicy"), "{text}");
        assert!(text.contains("Test-ApplicationAccessPolicy") && text.contains("app-1"), "{text}");
    }

    #[test]
    fn a_wrong_secret_is_a_permanent_auth_error_with_a_fix() {
        let body = json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided. Trace ID: abc Correlation ID: def",
            "error_codes": [7000215],
        });
        let e = classify_token_error(401, &body, "contoso-id", "app-1").expect("permanent");
        let text = e.to_string();
        assert!(text.contains("contoso-id") && text.contains("client secret of app app-1"), "{text}");
        assert!(!text.contains("Trace ID"), "{text}");
        assert!(!e.is_transient());
        assert!(classify_token_error(503, &Value::Null, "t", "a").is_none());
    }
}
