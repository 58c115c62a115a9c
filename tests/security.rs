//! Regression tests of the security review (issue #20): each reproduces an
//! attack over real HTTP (or against the store) and checks that it is
//! refused now. Findings 2 (the scheduler) and 10 (retention) have their
//! tests in tests/scheduler.rs and tests/store.rs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use hqsync::config::AdminConfig;
use hqsync::engine::Engine;
use hqsync::http::admin::AdminAuth;
use hqsync::http::AppState;
use hqsync::queue::Queue;
use hqsync::store::{Cipher, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method as M, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "an-admin-signing-secret-of-at-least-32-bytes!";
/// What the "internal" server answers: it must never come back to a caller.
const INTERNAL_PAGE: &str = "INTERNAL-SECRET-PAGE-4711";

fn sign(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn token(role: &str, tenant: Option<&str>) -> String {
    let now = Utc::now().timestamp();
    let mut c = json!({"sub": "tester", "role": role, "exp": now + 3600, "iat": now});
    if let Some(t) = tenant {
        c["tenant"] = json!(t);
    }
    sign(c)
}

struct H {
    base: String,
    http: reqwest::Client,
    store: Store,
    _dir: tempfile::TempDir,
}

impl H {
    /// The HTTP edge with the admin API; the connectors' address guard on
    /// unless `allow_private`.
    async fn start(allow_private: bool, admin: AdminConfig) -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
        let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
        let queue = Queue::open(&hqsync::config::Config::default().queue, &store).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin = AdminConfig { jwt_secret: Some(SECRET.to_string().into()), ..admin };
        let engine = if allow_private {
            Engine::new(store.clone()).allowing_private_addresses()
        } else {
            Engine::new(store.clone())
        };
        let state = AppState::new(store.clone(), queue, std::time::Duration::from_secs(2), 1 << 20)
            .with_admin(AdminAuth::from_config(&admin).unwrap(), base.clone())
            .with_engine(engine);
        tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), Default::default()));
        H { base, http: reqwest::Client::new(), store, _dir: dir }
    }

    async fn call(&self, method: M, path: &str, token: &str, body: Option<Value>) -> (StatusCode, String) {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    /// Creates tenant `id` (as the operator) with these base URLs.
    async fn create(&self, id: &str, graph_base: &str, login_base: &str, hq_base: &str) {
        let body = json!({
            "id": id,
            "graph": {"tenant_id": "contoso", "client_id": "app", "client_secret": "s3cret",
                      "graph_base": graph_base, "login_base": login_base},
            "hellohq": {"base_url": hq_base, "token": "hq-token"},
        });
        let (s, text) = self.call(M::POST, "/v1/admin/tenants", &token("operator", None), Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{text}");
    }
}

/// A server "inside the network": every request is counted and answered
/// with the internal page (status `status`).
async fn internal_server(status: u16) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            let body = json!({"error": INTERNAL_PAGE, "error_description": INTERNAL_PAGE,
                              "title": INTERNAL_PAGE, "detail": INTERNAL_PAGE});
            (status, axum::Json(body))
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

// ---- finding 1: SSRF ---------------------------------------------------------------

/// A tenant admin pointed `graph.graph_base` (or `login_base`,
/// `hellohq.base_url`) at an internal address and read the answer back
/// through the connection test. Now the base URLs are an operator's to set.
#[tokio::test]
async fn a_tenant_admin_cannot_change_where_the_service_connects() {
    let h = H::start(false, AdminConfig::default()).await;
    h.create("acme", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
        .await;
    let admin = token("tenant_admin", Some("acme"));
    for (body, key) in [
        (json!({"graph": {"graph_base": "http://127.0.0.1:9/v1.0"}}), "graph.graph_base"),
        (json!({"graph": {"login_base": "http://169.254.169.254"}}), "graph.login_base"),
        (json!({"hellohq": {"base_url": "http://10.0.0.1"}}), "hellohq.base_url"),
    ] {
        let (s, text) = h.call(M::PATCH, "/v1/admin/tenants/acme", &admin, Some(body)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{text}");
        assert!(text.contains("operator_only") && text.contains(key), "{text}");
    }
    // Nothing changed.
    let (_, text) = h.call(M::GET, "/v1/admin/tenants/acme", &admin, None).await;
    let t: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(t["graph"]["graph_base"], "https://graph.microsoft.com/v1.0");
    assert_eq!(t["graph"]["login_base"], "https://login.microsoftonline.com");
    assert_eq!(t["hellohq"]["base_url"], "https://api.hellohq.io");
    // The rest of the tenant stays the tenant admin's to change, the same base URL resent too.
    let same =
        json!({"name": "ACME", "graph": {"client_secret": "new", "graph_base": "https://graph.microsoft.com/v1.0"}});
    let (s, text) = h.call(M::PATCH, "/v1/admin/tenants/acme", &admin, Some(same)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    // An operator may, but not a base that swallows the path glued to it.
    let op = token("operator", None);
    for bad in ["https://graph.example/?q=", "https://graph.example/#x", "https://user:pw@graph.example", "ftp://x"] {
        let (s, text) =
            h.call(M::PATCH, "/v1/admin/tenants/acme", &op, Some(json!({"graph": {"graph_base": bad}}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {text}");
        assert!(text.contains("graph.graph_base"), "{text}");
    }
}

/// Even an operator's base URL may not reach loopback, private or
/// link-local addresses (IP literals, and names after DNS resolution)
/// unless `remote.allow_private_addresses` is set: the connection test
/// fails with the guard's reason and the internal server is never called.
#[tokio::test]
async fn the_connectors_refuse_internal_addresses_unless_allowed() {
    let (internal, hits) = internal_server(200).await;
    let h = H::start(false, AdminConfig::default()).await;
    let port = internal.rsplit(':').next().unwrap();
    h.create("lit", &format!("{internal}/v1.0"), &internal, &internal).await;
    h.create("named", &format!("http://localhost:{port}/v1.0"), &format!("http://localhost:{port}"), &internal).await;
    h.create("meta", "http://169.254.169.254/v1.0", "http://169.254.169.254", "http://[::ffff:a9fe:a9fe]").await;
    let op = token("operator", None);
    for tenant in ["lit", "named", "meta"] {
        let (s, text) = h.call(M::POST, &format!("/v1/admin/tenants/{tenant}/test"), &op, None).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        let r: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(r["ok"], false, "{r:#}");
        for name in ["graph_token", "hellohq_token"] {
            let c = r["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
            let detail = c["detail"].as_str().unwrap();
            assert!(
                detail.contains("refusing to connect") && detail.contains("remote.allow_private_addresses"),
                "{tenant} {name}: {detail}"
            );
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the internal server was called");
}

/// The connection test returned up to 4 KiB of the remote body. Now a
/// check says status, error code and the fix, never the answer's text.
#[tokio::test]
async fn the_connection_test_never_shows_a_remote_body() {
    for status in [400, 401, 403, 404, 500] {
        let (internal, hits) = internal_server(status).await;
        let h = H::start(true, AdminConfig::default()).await;
        h.create("acme", &format!("{internal}/v1.0"), &internal, &internal).await;
        let (s, text) = h.call(M::POST, "/v1/admin/tenants/acme/test", &token("operator", None), None).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert!(hits.load(Ordering::SeqCst) > 0, "the allowed server was not asked");
        assert!(!text.contains(INTERNAL_PAGE), "{status}: the remote body came back: {text}");
        let journal = h.store.list_journal(&Default::default()).await.unwrap();
        assert!(journal.iter().all(|e| !e.detail.to_string().contains(INTERNAL_PAGE)), "{journal:?}");
    }
}

// ---- finding 9: JWT claims ---------------------------------------------------------

#[tokio::test]
async fn jwt_nbf_lifetime_issuer_and_audience_are_enforced() {
    let h = H::start(false, AdminConfig::default()).await;
    let now = Utc::now().timestamp();
    let call = |t: String| {
        let h = &h;
        async move { h.call(M::GET, "/v1/admin/tenants", &t, None).await }
    };
    // Not yet valid.
    let (s, text) = call(sign(json!({"sub": "x", "role": "operator", "exp": now + 7200, "nbf": now + 3600}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("nbf"), "{text}");
    // A 100-year token.
    let (s, text) =
        call(sign(json!({"sub": "x", "role": "operator", "exp": now + 100 * 365 * 86400, "iat": now}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("jwt_max_lifetime_secs"), "{text}");
    // Without iat, measured from now.
    let (s, _) = call(sign(json!({"sub": "x", "role": "operator", "exp": now + 13 * 3600}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An identity provider's token with an `aud` is accepted when no audience is configured.
    let (s, text) =
        call(sign(json!({"sub": "x", "role": "operator", "exp": now + 600, "aud": "api://whatever"}))).await;
    assert_eq!(s, StatusCode::OK, "{text}");

    let bound = AdminConfig {
        jwt_issuer: Some("https://idp.example".into()),
        jwt_audience: Some("api://hqsync".into()),
        ..AdminConfig::default()
    };
    let h = H::start(false, bound).await;
    let ok =
        json!({"sub": "x", "role": "operator", "exp": now + 600, "iss": "https://idp.example", "aud": "api://hqsync"});
    let (s, text) = h.call(M::GET, "/v1/admin/tenants", &sign(ok.clone()), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    for (k, v, word) in [("iss", json!("https://evil.example"), "iss"), ("aud", json!("api://other"), "aud")] {
        let mut c = ok.clone();
        c[k] = v;
        let (s, text) = h.call(M::GET, "/v1/admin/tenants", &sign(c), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{text}");
        assert!(text.contains(word), "{text}");
    }
    let mut c = ok.clone();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(h.call(M::GET, "/v1/admin/tenants", &sign(c), None).await.0, StatusCode::UNAUTHORIZED);
}
