//! The HTTP edge end to end: real router on port 0, real store, real queue
//! (`local` always; `amqp` against the RabbitMQ on this machine).

mod common;

use std::time::Duration;

use common::*;
use hqsync::config::QueueBackend;
use hqsync::connectors::hellohq::webhook::WebhookSecret;
use hqsync::queue::{Change, HqEntity, Origin};
use reqwest::StatusCode;
use secrecy::SecretString;

const NOTHING_WAIT: Duration = Duration::from_millis(700);
const SOMETHING_WAIT: Duration = Duration::from_secs(5);

/// Microsoft's basic notification sample with its placeholders replaced by
/// our seeded subscription.
fn microsoft_sample(client_state: &str, subscription: &str) -> String {
    include_str!("fixtures/graph/change-notification-basic.json")
        .replace("{subscription_guid}", subscription)
        .replace("secretClientValue", client_state)
        .replace("{user_guid}@{tenant_guid}", MAILBOX)
        .replace("{long_id_string}", "AAMkAGI2TG93AAA=")
}

async fn post_json(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    app.client
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn for_each_backend<F, Fut>(test: &str, f: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in [QueueBackend::Local, QueueBackend::Amqp] {
        if let Some(app) = spawn_app(backend, test).await {
            app.wait_ready().await;
            eprintln!("-- {test} on {backend:?}");
            f(app).await;
        }
    }
}

#[tokio::test]
async fn validation_handshake_echoes_the_decoded_token_as_plain_text() {
    let app = spawn_app(QueueBackend::Local, "handshake").await.unwrap();
    for path in ["/v1/notifications/graph", "/v1/notifications/graph/lifecycle"] {
        for (sent, expected) in [
            ("plain-token-123", "plain-token-123"),
            (
                "Validation%3A%20Testing%20client%20application%20reachability%20for%20subscription%20Request-Id%3A%20c3e5d0a1",
                "Validation: Testing client application reachability for subscription Request-Id: c3e5d0a1",
            ),
            ("a%2Bb%26c%3Dd%3Cscript%3E", "a+b&c=d<script>"),
        ] {
            let resp = app
                .client
                .post(format!("{}{path}?validationToken={sent}", app.base))
                .header("content-type", "text/plain; charset=utf-8")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
            assert_eq!(resp.text().await.unwrap(), expected);
        }
    }
    assert!(app.drain(NOTHING_WAIT).await.is_empty(), "a handshake must enqueue nothing");
    app.stop().await;
}

#[tokio::test]
async fn microsofts_sample_notification_is_enqueued_as_one_hint() {
    for_each_backend("sample", |app| async move {
        let resp = post_json(&app, "/v1/notifications/graph", microsoft_sample(CLIENT_STATE, SUBSCRIPTION)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let hints = app.drain(SOMETHING_WAIT).await;
        assert_eq!(hints.len(), 1, "{hints:?}");
        let h = &hints[0];
        assert_eq!(h.tenant.as_str(), TENANT);
        assert_eq!(h.mailbox.as_ref().unwrap().as_str(), MAILBOX);
        assert_eq!(h.kind, Some(hqsync::model::Kind::Contact));
        assert_eq!(h.origin, Origin::Exchange);
        assert_eq!(h.change, Change::Created);
        assert_eq!(h.resource_id.as_deref(), Some("AAMkAGI2TG93AAA="));
        // The version the change made travels with it, so its echo costs no read.
        assert_eq!(h.version.as_deref(), Some("W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\""));
        assert_eq!(h.subscription_id.as_deref(), Some(SUBSCRIPTION));
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_redelivered_notification_keeps_its_hint_id() {
    let app = spawn_app(QueueBackend::Local, "redelivered").await.unwrap();
    for _ in 0..2 {
        let resp = post_json(&app, "/v1/notifications/graph", microsoft_sample(CLIENT_STATE, SUBSCRIPTION)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let hints = app.drain(SOMETHING_WAIT).await;
    assert_eq!(hints.len(), 2);
    assert_eq!(hints[0].hint_id, hints[1].hint_id, "Graph's notification id keys the hint id");
    app.stop().await;
}

#[tokio::test]
async fn untrusted_items_are_dropped_and_nothing_is_enqueued() {
    for_each_backend("untrusted", |app| async move {
        let wrong_state = microsoft_sample("not-the-client-state", SUBSCRIPTION);
        let unknown_sub = microsoft_sample(CLIENT_STATE, "00000000-0000-0000-0000-000000000000");
        let other_tenant = microsoft_sample(CLIENT_STATE, SUBSCRIPTION)
            .replace("84bd8158-6d4d-4958-8b9f-9d6445542f95", "99999999-6d4d-4958-8b9f-9d6445542f95");
        let no_state = microsoft_sample(CLIENT_STATE, SUBSCRIPTION)
            .replace("\"clientState\":\"c1ient-state-with-enough-entropy-7f3a\",", "");
        for body in [wrong_state, unknown_sub, other_tenant, no_state] {
            let resp = post_json(&app, "/v1/notifications/graph", body).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "Graph must not retry an untrusted item");
        }
        assert!(app.drain(NOTHING_WAIT).await.is_empty());
        let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        for reason in ["client_state_mismatch", "unknown_subscription", "tenant_mismatch"] {
            assert!(metrics.contains(&format!("reason=\"{reason}\"")), "metrics lack {reason}:\n{metrics}");
        }
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_keeps_its_trusted_items_and_drops_the_rest() {
    let app = spawn_app(QueueBackend::Local, "mixed").await.unwrap();
    let good: serde_json::Value = serde_json::from_str(&microsoft_sample(CLIENT_STATE, SUBSCRIPTION)).unwrap();
    let bad: serde_json::Value = serde_json::from_str(&microsoft_sample("wrong", SUBSCRIPTION)).unwrap();
    let mut second = good["value"][0].clone();
    second["id"] = "other-notification".into();
    second["changeType"] = "deleted".into();
    let body = serde_json::json!({"value": [good["value"][0], bad["value"][0], second, {"junk": true}]});
    let resp = post_json(&app, "/v1/notifications/graph", body.to_string()).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let hints = app.drain(SOMETHING_WAIT).await;
    let mut changes: Vec<_> = hints.iter().map(|h| h.change).collect();
    changes.sort_by_key(|c| c.as_str());
    assert_eq!(changes, vec![Change::Created, Change::Deleted]);
    app.stop().await;
}

#[tokio::test]
async fn lifecycle_events_become_hints_for_their_subscription() {
    let app = spawn_app(QueueBackend::Local, "lifecycle").await.unwrap();
    for (event, change) in [
        ("missed", Change::Resync),
        ("subscriptionRemoved", Change::SubscriptionRemoved),
        ("reauthorizationRequired", Change::ReauthorizationRequired),
    ] {
        let body = include_str!("fixtures/graph/lifecycle-notification.json")
            .replace("<subscription_guid>", SUBSCRIPTION)
            .replace("<tenant_guid>", ENTRA_TENANT)
            .replace("<secretClientState>", CLIENT_STATE)
            .replace("subscriptionRemoved or missed or reauthorizationRequired", event);
        let resp = post_json(&app, "/v1/notifications/graph/lifecycle", body).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let hints = app.drain(SOMETHING_WAIT).await;
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].change, change);
        assert_eq!(hints[0].subscription_id.as_deref(), Some(SUBSCRIPTION));
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_precise_errors_and_change_nothing() {
    let app = spawn_app(QueueBackend::Local, "badbodies").await.unwrap();
    let resp = post_json(&app, "/v1/notifications/graph", "{not json").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_notification");

    let resp = post_json(&app, "/v1/notifications/graph", "{\"value\": 3}").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp = app
        .client
        .post(format!("{}/v1/notifications/graph", app.base))
        .header("content-type", "text/xml")
        .body(microsoft_sample(CLIENT_STATE, SUBSCRIPTION))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = format!("{{\"value\":[],\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    let resp = post_json(&app, "/v1/notifications/graph", huge.clone()).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length the limit still holds (chunked upload).
    let stream = futures::stream::iter(
        huge.into_bytes().chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let resp = app
        .client
        .post(format!("{}/v1/notifications/graph", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    assert!(app.drain(NOTHING_WAIT).await.is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------- helloHQ

const EVENT: &str =
    r#"{"type":"contactPerson.updated","timestamp":"2026-05-04T08:00:01Z","data":{"id":202,"entity":"contactPerson"}}"#;

fn secret(s: &str) -> WebhookSecret {
    WebhookSecret::parse(&SecretString::from(s.to_string())).unwrap()
}

async fn post_webhook(
    app: &TestApp,
    tenant: &str,
    id: Option<&str>,
    ts: Option<i64>,
    sig: Option<String>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}/v1/webhooks/hellohq/{tenant}", app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(id) = id {
        req = req.header("webhook-id", id);
    }
    if let Some(ts) = ts {
        req = req.header("webhook-timestamp", ts.to_string());
    }
    if let Some(sig) = sig {
        req = req.header("webhook-signature", sig);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn signed_hellohq_webhook_is_enqueued() {
    for_each_backend("webhook", |app| async move {
        let now = chrono::Utc::now().timestamp();
        let sig = secret(WEBHOOK_SECRET).sign("msg_2yZwUhtgs5Ai8T9xRwGmkNbP1PM", now, EVENT.as_bytes());
        let resp =
            post_webhook(&app, TENANT, Some("msg_2yZwUhtgs5Ai8T9xRwGmkNbP1PM"), Some(now), Some(sig), EVENT).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let hints = app.drain(SOMETHING_WAIT).await;
        assert_eq!(hints.len(), 1);
        let h = &hints[0];
        assert_eq!(h.origin, Origin::Hellohq);
        assert_eq!(h.entity, Some(HqEntity::ContactPerson));
        assert_eq!(h.kind, Some(hqsync::model::Kind::Contact));
        assert_eq!(h.resource_id.as_deref(), Some("202"));
        assert_eq!(h.change, Change::Updated);
        assert_eq!(h.tenant.as_str(), TENANT);
        app.stop().await;
    })
    .await;
}

#[tokio::test]
async fn webhook_signed_with_the_rotated_secret_is_accepted() {
    let app = spawn_app(QueueBackend::Local, "rotated").await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let sigs = format!("v1,bm90LWEtc2lnbmF0dXJl {}", secret(WEBHOOK_SECRET_NEW).sign("msg_rot", now, EVENT.as_bytes()));
    let resp = post_webhook(&app, TENANT, Some("msg_rot"), Some(now), Some(sigs), EVENT).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(app.drain(SOMETHING_WAIT).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn webhooks_failing_verification_are_refused_and_change_nothing() {
    let app = spawn_app(QueueBackend::Local, "webhookbad").await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let s = secret(WEBHOOK_SECRET);
    let tampered = EVENT.replace("202", "203");
    /// (what, webhook-id, webhook-timestamp, webhook-signature, body, status, error code)
    type Case<'a> = (&'a str, Option<&'a str>, Option<i64>, Option<String>, String, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            Some("m1"),
            Some(now),
            Some(s.sign("m1", now, EVENT.as_bytes())),
            tampered,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
        (
            "old timestamp",
            Some("m2"),
            Some(now - 600),
            Some(s.sign("m2", now - 600, EVENT.as_bytes())),
            EVENT.into(),
            StatusCode::UNAUTHORIZED,
            "stale_timestamp",
        ),
        (
            "future timestamp",
            Some("m3"),
            Some(now + 600),
            Some(s.sign("m3", now + 600, EVENT.as_bytes())),
            EVENT.into(),
            StatusCode::UNAUTHORIZED,
            "future_timestamp",
        ),
        ("no signature", Some("m4"), Some(now), None, EVENT.into(), StatusCode::UNAUTHORIZED, "missing_header"),
        (
            "no id",
            None,
            Some(now),
            Some(s.sign("m5", now, EVENT.as_bytes())),
            EVENT.into(),
            StatusCode::UNAUTHORIZED,
            "missing_header",
        ),
        (
            "no timestamp",
            Some("m6"),
            None,
            Some(s.sign("m6", now, EVENT.as_bytes())),
            EVENT.into(),
            StatusCode::UNAUTHORIZED,
            "missing_header",
        ),
        (
            "foreign secret",
            Some("m7"),
            Some(now),
            Some(secret("whsec_b3RoZXItc2VjcmV0LW5vdC1vdXJzISE=").sign("m7", now, EVENT.as_bytes())),
            EVENT.into(),
            StatusCode::UNAUTHORIZED,
            "bad_signature",
        ),
    ];
    for (what, id, ts, sig, body, status, code) in cases {
        let resp = post_webhook(&app, TENANT, id, ts, sig, &body).await;
        assert_eq!(resp.status(), status, "{what}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{what}");
    }
    // A signed body that is not an event: 400, not 401.
    let junk = r#"{"hello":"world"}"#;
    let resp = post_webhook(&app, TENANT, Some("m8"), Some(now), Some(s.sign("m8", now, junk.as_bytes())), junk).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Unknown or malformed tenant: 404 before anything else.
    for tenant in ["globex", "ACME", "a%2Fb"] {
        let resp =
            post_webhook(&app, tenant, Some("m9"), Some(now), Some(s.sign("m9", now, EVENT.as_bytes())), EVENT).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{tenant}");
    }
    assert!(app.drain(NOTHING_WAIT).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn webhook_retries_map_to_one_hint_id() {
    let app = spawn_app(QueueBackend::Local, "webhookretry").await.unwrap();
    let now = chrono::Utc::now().timestamp();
    for ts in [now - 10, now] {
        let sig = secret(WEBHOOK_SECRET).sign("msg_same", ts, EVENT.as_bytes());
        assert_eq!(
            post_webhook(&app, TENANT, Some("msg_same"), Some(ts), Some(sig), EVENT).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let hints = app.drain(SOMETHING_WAIT).await;
    assert_eq!(hints.len(), 2);
    assert_eq!(hints[0].hint_id, hints[1].hint_id);
    app.stop().await;
}

// ---------------------------------------------------------------- outages

/// A TCP listener that accepts connections and never says a word.
async fn black_hole() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn broker_unreachable_or_silent_means_503_and_nothing_accepted() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (what, addr) in [("closed port", closed), ("silent broker", black_hole().await)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg =
            test_config(dir.path(), QueueBackend::Amqp, Some(&format!("amqp://guest:guest@{addr}/%2f")), "outage");
        cfg.queue.publish_timeout_ms = 500;
        let app = spawn_app_with(cfg, dir).await;
        let started = std::time::Instant::now();
        let resp = post_json(&app, "/v1/notifications/graph", microsoft_sample(CLIENT_STATE, SUBSCRIPTION)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(resp.headers().contains_key("retry-after"), "{what}");
        // Bounded, not hanging: generous guard, not a performance assertion.
        assert!(started.elapsed() < Duration::from_secs(10), "{what}: took {:?}", started.elapsed());
        let now = chrono::Utc::now().timestamp();
        let sig = secret(WEBHOOK_SECRET).sign("m", now, EVENT.as_bytes());
        assert_eq!(
            post_webhook(&app, TENANT, Some("m"), Some(now), Some(sig), EVENT).await.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}"
        );
        let ready = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["store"], "ok");
        assert_ne!(body["queue"], "ok");
        // The handshake needs no broker.
        let hs =
            app.client.post(format!("{}/v1/notifications/graph?validationToken=abc", app.base)).send().await.unwrap();
        assert_eq!(hs.status(), StatusCode::OK);
        app.stop().await;
    }
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(QueueBackend::Local, "health").await.unwrap();
    let r = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.client.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        post_json(&app, "/v1/notifications/graph", microsoft_sample(CLIENT_STATE, SUBSCRIPTION)).await.status(),
        StatusCode::ACCEPTED
    );
    let text = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "hqsync_http_requests_total{",
        "route=\"/v1/notifications/graph\"",
        "hqsync_hints_published_total{origin=\"exchange\"}",
        "hqsync_publish_confirm_seconds_bucket",
        "hqsync_queue_depth{state=\"ready\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    for secret in ["graph-client-secret-value", "hellohq-sync-token-value", CLIENT_STATE, "MfKQ9r8G"] {
        assert!(!text.contains(secret), "a secret leaked into /metrics");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_query_or_path_that_does_not_decode_gets_a_json_400_naming_it() {
    let app = spawn_app(QueueBackend::Local, "badquery").await.unwrap();
    for (path, code, names) in [
        // Two tokens: which one to echo is not ours to guess.
        ("/v1/notifications/graph?validationToken=a&validationToken=b", "malformed_query", "validationToken"),
        ("/v1/notifications/graph/lifecycle?validationToken=a&validationToken=b", "malformed_query", "validationToken"),
        ("/v1/webhooks/hellohq/%FF%FE", "malformed_path", "UTF-8"),
    ] {
        let resp = post_json(&app, path, EVENT).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(names), "{path}: {body}");
    }
    assert!(app.drain(NOTHING_WAIT).await.is_empty());
    app.stop().await;
}
