//! Standard Webhooks verification for helloHQ webhooks
//! (reference: standardwebhooks.com; helloHQ contract C2). Runs on the raw
//! body before anything parses it; the only way to obtain a
//! [`VerifiedWebhook`] is [`verify`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::queue::{Change, HqEntity};

/// Largest allowed distance between `webhook-timestamp` and now.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// An HMAC key decoded from `whsec_<base64>`.
pub struct WebhookSecret(SecretBox<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("webhook secret must be whsec_ followed by base64 (at least 16 bytes)")]
pub struct BadSecret;

impl WebhookSecret {
    pub fn parse(s: &SecretString) -> Result<WebhookSecret, BadSecret> {
        let raw = s.expose_secret().trim();
        let b64 = raw.strip_prefix("whsec_").ok_or(BadSecret)?;
        let key = B64.decode(b64).map_err(|_| BadSecret)?;
        if key.len() < 16 {
            return Err(BadSecret);
        }
        Ok(WebhookSecret(SecretBox::new(Box::new(key))))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// `v1,<base64>` for the given message (used by tests and by senders).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, &timestamp.to_string(), body)))
    }
}

/// Why a webhook was refused. Each maps to one metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes in the past")]
    TooOld,
    #[error("webhook-timestamp is more than 5 minutes in the future")]
    TooNew,
    #[error("no signature matches")]
    BadSignature,
    #[error("body is not a helloHQ webhook event: {0}")]
    BadBody(&'static str),
}

impl WebhookError {
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::BadTimestamp => "bad_timestamp",
            WebhookError::TooOld => "stale_timestamp",
            WebhookError::TooNew => "future_timestamp",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::BadBody(_) => "bad_body",
        }
    }
}

/// The three Standard Webhooks headers, as received.
#[derive(Debug, Clone, Copy)]
pub struct WebhookHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A helloHQ event whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWebhook {
    /// `webhook-id`: the same on every retry, so it keys idempotency.
    pub message_id: String,
    pub entity: HqEntity,
    pub change: Change,
    pub hq_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Verifies signature and timestamp on the raw bytes, then parses the event.
/// Any of `secrets` may match (rotation).
pub fn verify(
    secrets: &[WebhookSecret],
    headers: WebhookHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<VerifiedWebhook, WebhookError> {
    let id = headers.id.filter(|s| !s.is_empty()).ok_or(WebhookError::MissingHeader("webhook-id"))?;
    let ts_raw = headers.timestamp.filter(|s| !s.is_empty()).ok_or(WebhookError::MissingHeader("webhook-timestamp"))?;
    let sigs = headers.signature.filter(|s| !s.is_empty()).ok_or(WebhookError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
    // Checked: the timestamp is the sender's (i64::MIN overflowed here).
    let age = now.timestamp().checked_sub(ts).ok_or(WebhookError::BadTimestamp)?;
    if age > TOLERANCE_SECS {
        return Err(WebhookError::TooOld);
    }
    if age < -TOLERANCE_SECS {
        return Err(WebhookError::TooNew);
    }
    let candidates: Vec<Vec<u8>> =
        sigs.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b64| B64.decode(b64).ok()).collect();
    let mut matched = subtle::Choice::from(0u8);
    for secret in secrets {
        let expected = secret.mac(id, ts_raw, body);
        for c in &candidates {
            matched |= expected.as_slice().ct_eq(c.as_slice());
        }
    }
    if !bool::from(matched) {
        return Err(WebhookError::BadSignature);
    }
    parse_event(id, body)
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    data: WireData,
}

#[derive(Deserialize)]
struct WireData {
    id: serde_json::Value,
    #[serde(default)]
    entity: Option<String>,
}

fn parse_event(id: &str, body: &[u8]) -> Result<VerifiedWebhook, WebhookError> {
    let ev: WireEvent = serde_json::from_slice(body).map_err(|_| WebhookError::BadBody("not the event JSON"))?;
    let (entity, change) = ev.kind.split_once('.').ok_or(WebhookError::BadBody("type is not <entity>.<change>"))?;
    let entity = HqEntity::from_wire(entity).ok_or(WebhookError::BadBody("unknown entity"))?;
    if ev.data.entity.as_deref().is_some_and(|e| e != entity.wire_name()) {
        return Err(WebhookError::BadBody("data.entity disagrees with type"));
    }
    let change = match change {
        "created" => Change::Created,
        "updated" => Change::Updated,
        "deleted" => Change::Deleted,
        _ => return Err(WebhookError::BadBody("unknown change")),
    };
    let hq_id = match &ev.data.id {
        serde_json::Value::Number(n) if n.as_u64().is_some() => n.to_string(),
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.clone()
        }
        _ => return Err(WebhookError::BadBody("data.id is not a helloHQ id")),
    };
    Ok(VerifiedWebhook { message_id: id.to_string(), entity, change, hq_id, occurred_at: ev.timestamp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret(s: &str) -> WebhookSecret {
        WebhookSecret::parse(&SecretString::from(s.to_string())).unwrap()
    }

    fn at(ts: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(ts, 0).unwrap()
    }

    #[test]
    fn standard_webhooks_spec_vector_signs() {
        let s = secret(SECRET);
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn hellohq_shaped_vector_verifies() {
        let body = br#"{"type":"contactPerson.updated","timestamp":"2026-05-04T08:00:01Z","data":{"id":202,"entity":"contactPerson"}}"#;
        let h = WebhookHeaders {
            id: Some("msg_2yZwUhtgs5Ai8T9xRwGmkNbP1PM"),
            timestamp: Some("1777881601"),
            signature: Some("v1,/ljA1peR3YxmjrxG49xWDcP13Owzr07CGNsj7MTIah0="),
        };
        let v = verify(&[secret(SECRET)], h, body, at(1777881601 + 10)).unwrap();
        assert_eq!(v.entity, HqEntity::ContactPerson);
        assert_eq!(v.change, Change::Updated);
        assert_eq!(v.hq_id, "202");
    }

    #[test]
    fn rejects_tampered_stale_future_and_unsigned() {
        let s = secret(SECRET);
        let body = br#"{"type":"task.created","data":{"id":7,"entity":"task"}}"#;
        let sig = s.sign("m1", 1000, body);
        let h = |sig: &'static str| WebhookHeaders { id: Some("m1"), timestamp: Some("1000"), signature: Some(sig) };
        let sig: &'static str = Box::leak(sig.into_boxed_str());
        assert!(verify(&[secret(SECRET)], h(sig), body, at(1000)).is_ok());
        let tampered = br#"{"type":"task.created","data":{"id":8,"entity":"task"}}"#;
        assert_eq!(verify(&[secret(SECRET)], h(sig), tampered, at(1000)), Err(WebhookError::BadSignature));
        assert_eq!(verify(&[secret(SECRET)], h(sig), body, at(1000 + 301)), Err(WebhookError::TooOld));
        assert_eq!(verify(&[secret(SECRET)], h(sig), body, at(1000 - 301)), Err(WebhookError::TooNew));
        assert!(verify(&[secret(SECRET)], h(sig), body, at(1000 + 300)).is_ok());
        let none = WebhookHeaders { id: Some("m1"), timestamp: Some("1000"), signature: None };
        assert_eq!(
            verify(&[secret(SECRET)], none, body, at(1000)),
            Err(WebhookError::MissingHeader("webhook-signature"))
        );
    }

    #[test]
    fn any_of_several_signatures_and_secrets_may_match() {
        let old = secret(SECRET);
        let new = secret("whsec_dGhpcy1pcy1hLW5ldy1zZWNyZXQtMzItYnl0ZXMh");
        let body = br#"{"type":"user.deleted","data":{"id":"3","entity":"user"}}"#;
        let both = format!(
            "v2,ignored {} {}",
            secret("whsec_b3RoZXItc2VjcmV0LW5vdC1vdXJzISE=").sign("m", 5, body),
            new.sign("m", 5, body)
        );
        let h = WebhookHeaders { id: Some("m"), timestamp: Some("5"), signature: Some(&both) };
        assert!(verify(&[old, new], h, body, at(5)).is_ok());
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(WebhookSecret::parse(&SecretString::from("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string())).is_err());
        assert!(WebhookSecret::parse(&SecretString::from("whsec_%%%".to_string())).is_err());
        assert!(format!("{:?}", secret(SECRET)).contains("***"));
    }

    /// Issue #20, finding 12: `now - ts` overflowed (a panic in debug builds) for `i64::MIN`.
    #[test]
    fn an_extreme_timestamp_is_refused_not_an_overflow() {
        let now = at(1777881601);
        for ts in [i64::MIN.to_string(), i64::MAX.to_string(), (i64::MIN + 1).to_string()] {
            let h = WebhookHeaders { id: Some("msg_1"), timestamp: Some(&ts), signature: Some("v1,AAAA") };
            assert!(verify(&[secret(SECRET)], h, b"{}", now).is_err(), "{ts}");
        }
    }
}
