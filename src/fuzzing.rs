//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the
//! regression test that replays the inputs they found (`tests/fuzz_regressions.rs`).
//! Each takes arbitrary bytes and must never panic; where a round trip is
//! defined, it also checks it (a parse that succeeds must render and parse
//! back to the same value).

use chrono::{TimeZone, Utc};
use secrecy::SecretString;
use serde_json::Value;

use crate::connectors::hellohq::webhook::{verify, WebhookHeaders, WebhookSecret};

/// Graph change-notification batches (the ingress parser).
pub fn notification(data: &[u8]) {
    let _ = crate::connectors::graph::notification::parse_batch(data);
}

/// Standard Webhooks verification on arbitrary headers and bodies: never
/// panics, never accepts a body it did not sign, always accepts one it did.
pub fn webhook(data: &[u8]) {
    let secret = WebhookSecret::parse(&SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()))
        .expect("the spec's test secret parses");
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (id, ts, sig, body) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
    let now = Utc.timestamp_opt(1_614_265_330, 0).single().expect("valid instant");
    let _ = verify(
        std::slice::from_ref(&secret),
        WebhookHeaders { id, timestamp: ts, signature: sig },
        body.as_bytes(),
        now,
    );
    // What we sign ourselves must verify; one flipped byte must not.
    let id = id.filter(|s| !s.is_empty()).unwrap_or("msg_fuzz");
    let stamp = now.timestamp();
    let signed = secret.sign(id, stamp, body.as_bytes());
    let stamp_text = stamp.to_string();
    // Our own signature passes the check; the event itself may still be
    // refused as malformed, which is the only error allowed here.
    let own = verify(
        std::slice::from_ref(&secret),
        WebhookHeaders { id: Some(id), timestamp: Some(&stamp_text), signature: Some(&signed) },
        body.as_bytes(),
        now,
    );
    if let Err(e) = &own {
        assert!(
            !matches!(e, crate::connectors::hellohq::webhook::WebhookError::BadSignature),
            "our own signature was refused: {e:?}"
        );
    }
    let mut tampered = body.as_bytes().to_vec();
    tampered.push(b'x');
    let forged = verify(
        std::slice::from_ref(&secret),
        WebhookHeaders { id: Some(id), timestamp: Some(&stamp_text), signature: Some(&signed) },
        &tampered,
        now,
    );
    assert!(forged.is_err(), "a tampered body verified");
}

/// RFC 5545 recurrence text (helloHQ's `recurrencyStorage`) and Graph's
/// `patternedRecurrence`: a parse that succeeds renders and parses back to
/// the same recurrence, and expanding it a year ahead terminates.
pub fn recurrence(data: &[u8]) {
    use crate::model::recurrence::Recurrence;
    let text = String::from_utf8_lossy(data);
    if let Ok(r) = Recurrence::from_rfc5545(&text) {
        let again = Recurrence::from_rfc5545(&r.to_rfc5545());
        assert_eq!(again.as_ref().ok(), Some(&r), "RFC 5545 round trip changed the recurrence: {text:?}");
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid date");
        let _ = r.occurrences(start, start + chrono::Duration::days(366));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let master = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).single().expect("valid date");
        if let Ok(r) = Recurrence::from_graph(&v, master, "Europe/Berlin") {
            let _ = r.to_graph();
        }
    }
}

/// The wire decoders: helloHQ records and Graph items into canonical ones.
pub fn wire(data: &[u8]) {
    use crate::connectors::hellohq::wire;
    let _ = serde_json::from_slice::<wire::Task>(data);
    let _ = serde_json::from_slice::<wire::ContactPerson>(data);
    let _ = serde_json::from_slice::<wire::ContactPersonV1>(data);
    let _ = serde_json::from_slice::<wire::Company>(data);
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = crate::model::contact::from_graph(&v);
        let _ = crate::model::appointment::Appointment::from_graph(&v);
        let _ = crate::model::task::TaskItem::from_graph(&v);
    }
}
