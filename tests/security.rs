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

// ---- finding 3: subscription takeover ----------------------------------------------

fn subscription(id: &str, tenant: &str, mailbox: &str) -> hqsync::store::Subscription {
    hqsync::store::Subscription {
        id: id.into(),
        tenant: hqsync::model::TenantId::parse(tenant).unwrap(),
        mailbox: hqsync::model::MailboxId::parse(mailbox).unwrap(),
        kind: hqsync::model::Kind::Contact,
        resource: format!("users/{mailbox}/contacts"),
        client_state_sha256: [7; 32],
        expires_at: Utc::now() + chrono::Duration::days(2),
        state: "active".into(),
        created_at: Utc::now(),
    }
}

/// `upsert_subscription` moved a row to whichever tenant stored the id
/// last: a tenant whose Graph answered with the victim's subscription id
/// captured the victim's notifications.
#[tokio::test]
async fn a_subscription_id_of_another_tenant_is_refused_never_moved() {
    let h = H::start(false, AdminConfig::default()).await;
    for t in ["victim", "attacker"] {
        h.create(t, "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
            .await;
    }
    let theirs = subscription("sub-shared", "victim", "anna@victim.example");
    h.store.upsert_subscription(&theirs).await.unwrap();
    let taken = subscription("sub-shared", "attacker", "eve@attacker.example");
    let err = h.store.upsert_subscription(&taken).await.unwrap_err();
    assert!(matches!(err, hqsync::store::StoreError::Foreign(_)), "{err:?}");
    let owner = |s: Option<hqsync::store::Subscription>| s.map(|s| (s.tenant.to_string(), s.mailbox.to_string()));
    let victim = Some(("victim".to_string(), "anna@victim.example".to_string()));
    assert_eq!(owner(h.store.get_subscription("sub-shared").await.unwrap()), victim);
    // Nor can the other tenant delete it.
    let attacker = hqsync::model::TenantId::parse("attacker").unwrap();
    assert!(!h.store.delete_subscription(&attacker, "sub-shared").await.unwrap());
    assert_eq!(owner(h.store.get_subscription("sub-shared").await.unwrap()), victim);
    // Its own tenant renews it as before.
    h.store.upsert_subscription(&theirs).await.unwrap();
}

// ---- finding 4: unauthenticated load -----------------------------------------------

/// Everything this test binary logs.
fn captured_logs() -> &'static Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make = move || LogWriter(sink.clone());
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_writer(make).json().try_init();
        buf
    })
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn batch(n: usize, prefix: &str) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({"subscriptionId": format!("{prefix}-{i}"), "clientState": "x", "changeType": "updated",
                   "resource": "users/x/contacts/y", "resourceData": {"id": "y"}, "tenantId": "t"})
        })
        .collect();
    json!({ "value": items })
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// One 1 MiB body held 16,000 unknown subscription ids: 16,000 lookups and
/// 16,000 WARN lines. Now a batch has at most 1,000 items, and unknown ids
/// are counted and logged in aggregate (one line a minute at most).
#[tokio::test]
async fn notification_batches_are_capped_and_unknown_ids_logged_in_aggregate() {
    let logs = captured_logs();
    let h = H::start(false, AdminConfig::default()).await;
    let url = format!("{}/v1/notifications/graph", h.base);
    let r = h.http.post(&url).json(&batch(1001, "too-many")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("too_many_items"));

    let before = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap().text().await.unwrap();
    let key = "hqsync_hints_rejected_total{source=\"graph\",reason=\"unknown_subscription\"}";
    for round in 0..3 {
        let r = h.http.post(&url).json(&batch(1000, &format!("unknown-{round}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let after = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&after, key) - metric(&before, key), 3000.0, "{after}");
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    let lines = text.lines().filter(|l| l.contains("unknown-")).count();
    assert!(lines <= 1, "{lines} log lines about unknown ids");
}

// ---- finding 5: metric labels ------------------------------------------------------

/// Every odd HTTP method became a label value of its own, for good.
#[tokio::test]
async fn metric_labels_come_from_closed_sets() {
    let h = H::start(false, AdminConfig::default()).await;
    for i in 0..30 {
        let m = M::from_bytes(format!("ODDMETHOD{i}").as_bytes()).unwrap();
        h.http.request(m, format!("{}/healthz", h.base)).send().await.unwrap();
        h.http.get(format!("{}/no/such/route/{i}", h.base)).send().await.unwrap();
    }
    let text = h.http.get(format!("{}/metrics", h.base)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("ODDMETHOD"), "a method name became a label");
    assert!(!text.contains("/no/such/route"), "a path became a label");
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
}

// ---- finding 6: CSRF -----------------------------------------------------------------

/// The admin API took the status page's cookie: a cross-site form POST
/// with only the cookie released held deletions (204).
#[tokio::test]
async fn the_admin_api_takes_bearer_tokens_only_never_the_session_cookie() {
    let h = H::start(false, AdminConfig::default()).await;
    h.create("acme", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
        .await;
    let cookie = format!("hqsync_session={}", token("operator", None));
    let r = h
        .http
        .post(format!("{}/v1/admin/tenants/acme/mailboxes/anna%40acme.example/approve", h.base))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("kind=contact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = h.http.get(format!("{}/v1/admin/tenants", h.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The status page's GET still takes it.
    let r = h.http.get(format!("{}/", h.base)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("tenant-acme"));
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// Login and logout CSRF: another site's page signed the victim in with
/// the attacker's token (or out). Now the forms need the CSRF token of the
/// `SameSite=Strict` cookie, and a foreign `Origin` / `Sec-Fetch-Site` is
/// refused; the page carries CSP, `X-Frame-Options` and `no-store` (finding 12).
#[tokio::test]
async fn login_and_logout_need_the_forms_csrf_token_and_the_same_origin() {
    let h = H::start(false, AdminConfig::default()).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let op = token("operator", None);
    // A cross-site form POST (what another site's page sends).
    let forged = http
        .post(format!("{}/login", h.base))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", op.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookies(&forged).iter().all(|c| !c.starts_with("hqsync_session=")), "{:?}", set_cookies(&forged));
    // Without the CSRF token, even from no stated origin.
    let r = http.post(format!("{}/login", h.base)).form(&[("token", op.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The real form: its cookie and hidden field.
    let form = http.get(format!("{}/login", h.base)).send().await.unwrap();
    for (k, v) in
        [("content-security-policy", "default-src 'none'"), ("x-frame-options", "DENY"), ("cache-control", "no-store")]
    {
        let got = form.headers().get(k).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(got.contains(v), "{k}: {got:?}");
    }
    let csrf_cookie = set_cookies(&form).into_iter().find(|c| c.starts_with("hqsync_csrf=")).unwrap();
    assert!(csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("HttpOnly"), "{csrf_cookie}");
    let csrf = csrf_cookie.trim_start_matches("hqsync_csrf=").split(';').next().unwrap().to_string();
    let html = form.text().await.unwrap();
    assert!(html.contains(&format!("name=\"csrf\" value=\"{csrf}\"")), "{html}");
    let jar = format!("hqsync_csrf={csrf}");
    // The right token but another origin.
    let r = http
        .post(format!("{}/login", h.base))
        .header("cookie", &jar)
        .header("origin", "https://evil.example")
        .form(&[("token", op.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let ok = http
        .post(format!("{}/login", h.base))
        .header("cookie", &jar)
        .header("origin", &h.base)
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", op.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let session = set_cookies(&ok).into_iter().find(|c| c.starts_with("hqsync_session=")).unwrap();
    assert!(session.contains("SameSite=Strict") && session.contains("HttpOnly"), "{session}");

    // Logout: the same rules.
    let both = format!("{jar}; hqsync_session={op}");
    let r = http
        .post(format!("{}/logout", h.base))
        .header("cookie", &both)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{}/logout", h.base))
        .header("cookie", &both)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = http.get(format!("{}/", h.base)).header("cookie", &both).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.text().await.unwrap().contains(&format!("name=\"csrf\" value=\"{csrf}\"")));
}

// ---- finding 7: tenant ids ----------------------------------------------------------

/// A new tenant created under a deleted tenant's id saw the old journal;
/// `system` / `_system` could be created and saw other tenants' deletions.
#[tokio::test]
async fn tenant_ids_are_never_reused_and_internal_ids_are_reserved() {
    let h = H::start(false, AdminConfig::default()).await;
    let op = token("operator", None);
    h.create("old", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
        .await;
    let (s, _) = h.call(M::DELETE, "/v1/admin/tenants/old", &op, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let body = |id: &str| {
        json!({"id": id, "graph": {"tenant_id": "c", "client_id": "a", "client_secret": "s"},
               "hellohq": {"token": "t"}})
    };
    let (s, text) = h.call(M::POST, "/v1/admin/tenants", &op, Some(body("old"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("never given out again"), "{text}");
    for reserved in ["system", "_system", "_internal"] {
        let (s, text) = h.call(M::POST, "/v1/admin/tenants", &op, Some(body(reserved))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{reserved}: {text}");
        assert!(text.contains("reserved"), "{text}");
    }
    // Nor does a tenant_admin token for `system` see the system journal.
    let (s, _) = h.call(M::GET, "/v1/admin/tenants/system/journal", &token("tenant_admin", Some("system")), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The store refuses it too (the config file's tenants go through it).
    let old = h.store.list_journal(&hqsync::store::JournalFilter::default()).await.unwrap();
    assert!(!old.is_empty());
}

// ---- finding 11: control characters ---------------------------------------------------

#[tokio::test]
async fn control_characters_are_refused_in_names() {
    let h = H::start(false, AdminConfig::default()).await;
    let op = token("operator", None);
    let mut body = json!({"id": "acme", "name": "ACME\u{1b}[2J\u{0}", "graph": {"tenant_id": "c", "client_id": "a", "client_secret": "s"},
                          "hellohq": {"token": "t"}});
    let (s, text) = h.call(M::POST, "/v1/admin/tenants", &op, Some(body.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("name") && text.contains("control"), "{text}");
    body["name"] = json!("ACME GmbH");
    assert_eq!(h.call(M::POST, "/v1/admin/tenants", &op, Some(body)).await.0, StatusCode::CREATED);
    for bad in ["line\nbreak", "tab\there", "c1\u{9b}31m"] {
        let (s, text) = h.call(M::PATCH, "/v1/admin/tenants/acme", &op, Some(json!({"name": bad}))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad:?}: {text}");
    }
    let t = h.store.get_tenant(&hqsync::model::TenantId::parse("acme").unwrap()).await.unwrap().unwrap();
    assert_eq!(t.name, "ACME GmbH");
}

// ---- finding 12: caches, store files ----------------------------------------------------

/// A webhook secret removed by PATCH stayed valid for the cache's 30 s.
#[tokio::test]
async fn a_removed_webhook_secret_is_refused_at_once() {
    let h = H::start(false, AdminConfig::default()).await;
    let op = token("operator", None);
    let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let new = "whsec_TUFSSy1zZWNyZXQtd2ViaG9vay0xMjM0NTY=";
    let body = json!({"id": "acme", "graph": {"tenant_id": "c", "client_id": "a", "client_secret": "s"},
                      "hellohq": {"token": "t", "webhook_secrets": [old]}});
    assert_eq!(h.call(M::POST, "/v1/admin/tenants", &op, Some(body)).await.0, StatusCode::CREATED);
    let send = |secret: &'static str, id: &'static str| {
        let h = &h;
        async move {
            let s = hqsync::connectors::hellohq::webhook::WebhookSecret::parse(&secret.to_string().into()).unwrap();
            let payload =
                json!({"type": "contactPerson.updated", "timestamp": Utc::now(), "data": {"id": 42}}).to_string();
            let ts = Utc::now().timestamp();
            h.http
                .post(format!("{}/v1/webhooks/hellohq/acme", h.base))
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", s.sign(id, ts, payload.as_bytes()))
                .body(payload)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(send(old, "msg_1").await.is_success());
    let (s, text) =
        h.call(M::PATCH, "/v1/admin/tenants/acme", &op, Some(json!({"hellohq": {"webhook_secrets": [new]}}))).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert_eq!(send(old, "msg_2").await, StatusCode::UNAUTHORIZED);
    assert!(send(new, "msg_3").await.is_success());
}

/// The SQLite store was 0644 while master.key is 0600.
#[cfg(unix)]
#[tokio::test]
async fn the_store_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let h = H::start(false, AdminConfig::default()).await;
    h.create("acme", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
        .await;
    for name in ["hqsync.db", "hqsync.db-wal"] {
        let path = h._dir.path().join(name);
        if name.ends_with("-wal") && !path.exists() {
            continue;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
}

// ---- finding 10: retention ----------------------------------------------------------------

/// `processed_hints` and the journal were never pruned. The scheduler now
/// prunes them by age (7 and 90 days by default).
#[tokio::test]
async fn the_scheduler_prunes_processed_hints_and_the_journal_by_age() {
    use hqsync::queue::{Change, Hint, Origin, HINT_VERSION};
    use hqsync::scheduler::{Scheduler, SchedulerSettings};
    let h = H::start(false, AdminConfig::default()).await;
    h.create("acme", "https://graph.microsoft.com/v1.0", "https://login.microsoftonline.com", "https://api.hellohq.io")
        .await;
    let tenant = hqsync::model::TenantId::parse("acme").unwrap();
    let hint = Hint {
        v: HINT_VERSION,
        hint_id: uuid::Uuid::new_v4(),
        tenant: tenant.clone(),
        mailbox: None,
        kind: None,
        entity: None,
        origin: Origin::Schedule,
        resource_id: None,
        version: None,
        subscription_id: None,
        change: Change::Resync,
        received_at: Utc::now(),
    };
    assert!(h.store.record_hint(&hint).await.unwrap());
    let journal = |store: Store| async move {
        store
            .list_journal(&hqsync::store::JournalFilter {
                tenant: Some(hqsync::model::TenantId::parse("acme").unwrap()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let entries = journal(h.store.clone()).await;
    assert!(entries >= 2, "tenant created + hint received");
    let queue = Queue::open(&hqsync::config::Config::default().queue, &h.store).await.unwrap();
    let at = |days: i64| -> hqsync::scheduler::Clock { Arc::new(move || Utc::now() + chrono::Duration::days(days)) };
    // Six days on: nothing is old enough.
    let r = Scheduler::new(h.store.clone(), queue.clone(), "http://127.0.0.1:9", SchedulerSettings::default(), at(6))
        .tick()
        .await;
    assert_eq!((r.pruned_hints, r.pruned_journal), (0, 0));
    assert!(h.store.hint_processed(&hint.hint_id).await.unwrap());
    // Eight days on: the processed hint id goes, the journal stays.
    let r = Scheduler::new(h.store.clone(), queue.clone(), "http://127.0.0.1:9", SchedulerSettings::default(), at(8))
        .tick()
        .await;
    assert_eq!(r.pruned_hints, 1);
    assert!(!h.store.hint_processed(&hint.hint_id).await.unwrap());
    assert_eq!(journal(h.store.clone()).await, entries);
    // 91 days on: the journal entries go too.
    let r =
        Scheduler::new(h.store.clone(), queue, "http://127.0.0.1:9", SchedulerSettings::default(), at(91)).tick().await;
    assert!(r.pruned_journal >= entries as u64, "{r:?}");
    assert_eq!(journal(h.store.clone()).await, 0);
}

// ---- finding 8: server timeouts ------------------------------------------------------------

/// Connections that sent half a header stayed open for good (and with them
/// their slot). Now the header must arrive within the header-read timeout,
/// and a connection over the limit waits until a slot frees.
#[tokio::test]
async fn half_a_header_is_cut_off_and_connections_are_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
    let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
    let queue = Queue::open(&hqsync::config::Config::default().queue, &store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(store, queue, std::time::Duration::from_secs(2), 1 << 20);
    let limits =
        hqsync::http::ServerLimits { header_read_timeout: std::time::Duration::from_secs(1), max_connections: 1 };
    tokio::spawn(hqsync::http::serve_with(listener, hqsync::http::router(state), Default::default(), limits));

    // The slow client holds the only slot with half a header.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A second client's request is queued behind it.
    let second = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    });
    // The slow one is closed by the server (an upper bound only, so a hung server fails the test).
    let mut buf = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the half-header connection was never closed");
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), second).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
