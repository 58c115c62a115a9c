//! Webhook delivery of the helloHQ simulator, per contract C2 (Standard
//! Webhooks): thin `<entity>.<change>` events, `webhook-id` stable across
//! retries, HMAC-SHA256 signatures over `{id}.{timestamp}.{body}`, bounded
//! retries with backoff. Signing is implemented here on purpose, separately
//! from hqsync's verifier, so tests prove the two agree. Delivery runs on
//! background tasks only; nothing here is ever called under the data lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{fmt_utc, ChangeEvent};

/// One registered receiver with its signing secret (`whsec_<base64>`).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: String,
}

/// Why a secret cannot be used for signing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret must be whsec_ followed by base64")]
pub struct BadSecret;

/// Decodes the HMAC key from `whsec_<base64>`.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let b64 = secret.trim().strip_prefix("whsec_").ok_or(BadSecret)?;
    let key = B64.decode(b64).map_err(|_| BadSecret)?;
    if key.is_empty() {
        return Err(BadSecret);
    }
    Ok(key)
}

/// A fresh 32-byte secret.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("whsec_{}", B64.encode(key))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

fn message_id() -> String {
    let s: String = rand::thread_rng().sample_iter(&Alphanumeric).take(27).map(char::from).collect();
    format!("msg_{s}")
}

/// Delivery counters for `/_sim/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages answered 2xx.
    pub sent: AtomicU64,
    /// Messages given up after the last retry.
    pub failed: AtomicU64,
    /// Attempts that got a non-2xx answer or no answer.
    pub attempts_failed: AtomicU64,
    /// Messages dropped on purpose by the `drop_rate` fault.
    pub dropped: AtomicU64,
    /// Messages delivered a second time by the `duplicate_rate` fault.
    pub duplicated: AtomicU64,
    /// Fault injection: share of messages never sent (f64 bits).
    drop_rate: AtomicU64,
    /// Fault injection: share of delivered messages sent once more, same
    /// `webhook-id`, 0.1–2 s later (f64 bits).
    duplicate_rate: AtomicU64,
}

impl Counters {
    pub fn reset(&self) {
        self.sent.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.attempts_failed.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        self.duplicated.store(0, Ordering::Relaxed);
        self.set_drop_rate(0.0);
        self.set_duplicate_rate(0.0);
    }

    pub fn set_duplicate_rate(&self, rate: f64) {
        self.duplicate_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn should_duplicate(&self) -> bool {
        let rate = f64::from_bits(self.duplicate_rate.load(Ordering::Relaxed));
        rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
    }

    pub fn set_drop_rate(&self, rate: f64) {
        self.drop_rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn should_drop(&self) -> bool {
        let rate = f64::from_bits(self.drop_rate.load(Ordering::Relaxed));
        rate > 0.0 && rand::thread_rng().gen::<f64>() < rate
    }
}

/// How hard delivery tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Pauses before the 2nd, 3rd, … attempt; its length bounds the retries.
    pub delays: Vec<Duration>,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Consumes committed changes and fans each out to every endpoint.
pub fn spawn_dispatcher(
    mut rx: UnboundedReceiver<ChangeEvent>,
    endpoints: Arc<Mutex<Vec<Endpoint>>>,
    counters: Arc<Counters>,
    policy: RetryPolicy,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let client = reqwest::Client::builder().timeout(policy.timeout).build().unwrap_or_default();
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => break,
                ev = rx.recv() => match ev { Some(ev) => ev, None => break },
            };
            let body = json!({
                "type": format!("{}.{}", ev.entity.wire_name(), ev.kind.wire_name()),
                "timestamp": fmt_utc(ev.at),
                "data": {"id": ev.id, "entity": ev.entity.wire_name()},
            });
            let body = bytes::Bytes::from(body.to_string());
            let targets = endpoints.lock().map(|e| e.clone()).unwrap_or_default();
            for ep in targets {
                if counters.should_drop() {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (client, body, counters, policy, cancel) =
                    (client.clone(), body.clone(), counters.clone(), policy.clone(), cancel.clone());
                inner.spawn(async move { deliver(client, ep, body, counters, policy, cancel).await });
            }
        }
    });
}

async fn deliver(
    client: reqwest::Client,
    ep: Endpoint,
    body: bytes::Bytes,
    counters: Arc<Counters>,
    policy: RetryPolicy,
    cancel: CancellationToken,
) {
    let Ok(key) = secret_key(&ep.secret) else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let id = message_id();
    let mut delays = policy.delays.iter();
    // A duplicate is the same message (same id) delivered again, as a
    // sender does when it never saw the first answer.
    let mut duplicate = counters.should_duplicate();
    loop {
        let ts = chrono::Utc::now().timestamp();
        let res = client
            .post(&ep.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&key, &id, ts, &body))
            .body(body.clone())
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                if !duplicate {
                    return;
                }
                duplicate = false;
                counters.duplicated.fetch_add(1, Ordering::Relaxed);
                let pause = Duration::from_millis(rand::thread_rng().gen_range(100..2000));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            Ok(r) => tracing::debug!(url = %ep.url, status = %r.status(), "webhook refused"),
            Err(e) => tracing::debug!(url = %ep.url, error = %e, "webhook not delivered"),
        }
        counters.attempts_failed.fetch_add(1, Ordering::Relaxed);
        let Some(delay) = delays.next() else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(*delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_standard_webhooks_vectors() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let body = br#"{"type":"contactPerson.updated","timestamp":"2026-05-04T08:00:01Z","data":{"id":202,"entity":"contactPerson"}}"#;
        assert_eq!(
            sign(&key, "msg_2yZwUhtgs5Ai8T9xRwGmkNbP1PM", 1777881601, body),
            "v1,/ljA1peR3YxmjrxG49xWDcP13Owzr07CGNsj7MTIah0="
        );
    }

    #[test]
    fn generated_secrets_decode_and_ids_are_unique() {
        let s = generate_secret();
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert_ne!(message_id(), message_id());
        assert!(message_id().starts_with("msg_"));
    }
}
