//! The admin API over real HTTP: token checks (forged, expired, wrong
//! algorithm, wrong role), tenant isolation on every route, write-only
//! secrets (never in a response, nor in the logs captured while this suite
//! runs), bad input refused with a precise 4xx and nothing changed, the
//! pilot rollout, and the connection test naming each failure and its fix.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use hqsync::config::AdminConfig;
use hqsync::engine::Engine;
use hqsync::http::admin::AdminAuth;
use hqsync::http::AppState;
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, Origin, Queue, HINT_VERSION};
use hqsync::sim::graph::{GraphSim, GraphSimConfig};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
use hqsync::store::{Cipher, MailboxState, Store};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "an-admin-signing-secret-of-at-least-32-bytes!";
const GRAPH_SECRET_MARK: &str = "graph-secret-MARK-7f3a";
const HQ_TOKEN_MARK: &str = "hq-token-MARK-91bc";
const WEBHOOK_MARK: &str = "whsec_TUFSSy1zZWNyZXQtd2ViaG9vay0xMjM0NTY=";

/// Everything logged by this test binary (secrets must never appear).
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make = move || LogWriter(sink.clone());
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_writer(make).json().try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token_with(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn token(role: &str, tenant: Option<&str>) -> String {
    let exp = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let mut c = json!({"sub": "tester", "role": role, "exp": exp});
    if let Some(t) = tenant {
        c["tenant"] = json!(t);
    }
    token_with(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), c)
}

struct H {
    base: String,
    http: reqwest::Client,
    store: Store,
    graph_sim: GraphSim,
    hq_sim: HellohqSim,
    seed: Value,
    _dir: tempfile::TempDir,
}

impl H {
    async fn start() -> H {
        captured_logs();
        let graph_sim =
            GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), GraphSimConfig::default())
                .await
                .unwrap();
        let hq_sim =
            HellohqSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), HellohqSimConfig::default())
                .await
                .unwrap();
        let http = reqwest::Client::new();
        let seed: Value =
            http.get(format!("{}/_sim/seed", graph_sim.base_url())).send().await.unwrap().json().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
        let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
        let queue = Queue::open(&hqsync::config::Config::default().queue, &store).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let cfg = AdminConfig {
            jwt_algorithm: "HS256".into(),
            jwt_secret: Some(SECRET.to_string().into()),
            jwt_public_key_file: None,
            ..AdminConfig::default()
        };
        // The simulators listen on 127.0.0.1: the connection test's clients may go there.
        let state = AppState::new(store.clone(), queue, std::time::Duration::from_secs(2), 1 << 20)
            .with_admin(AdminAuth::from_config(&cfg).unwrap(), base.clone())
            .with_engine(Engine::new(store.clone()).allowing_private_addresses());
        tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), Default::default()));
        H { base, http, store, graph_sim, hq_sim, seed, _dir: dir }
    }

    fn tenant_body(&self, id: &str, graph_secret: &str, hq_token: &str) -> Value {
        json!({
            "id": id, "name": format!("Tenant {id}"),
            "graph": {"tenant_id": self.seed["tenantId"], "client_id": self.seed["clientId"], "client_secret": graph_secret,
                      "graph_base": format!("{}/v1.0", self.graph_sim.base_url()), "login_base": self.graph_sim.base_url()},
            "hellohq": {"base_url": self.hq_sim.base_url(), "token": hq_token, "webhook_secrets": [WEBHOOK_MARK]},
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }

    async fn create(&self, id: &str, graph_secret: &str, hq_token: &str) {
        let (s, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/tenants",
                Some(&token("operator", None)),
                Some(self.tenant_body(id, graph_secret, hq_token)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        assert_no_secret(&body);
    }
}

fn assert_no_secret(text: &str) {
    for mark in [GRAPH_SECRET_MARK, HQ_TOKEN_MARK, WEBHOOK_MARK, SECRET] {
        assert!(!text.contains(mark), "a secret leaked: {mark} in {}", &text[..text.len().min(400)]);
    }
}

#[tokio::test]
async fn tokens_are_checked_and_a_tenant_admin_sees_only_its_tenant() {
    let h = H::start().await;
    h.create("alpha", GRAPH_SECRET_MARK, HQ_TOKEN_MARK).await;
    h.create("beta", GRAPH_SECRET_MARK, HQ_TOKEN_MARK).await;
    let ta = token("tenant_admin", Some("alpha"));
    use reqwest::Method as M;
    // Every tenant-scoped route answers 404 for another tenant.
    let routes: Vec<(M, String, Option<Value>)> = vec![
        (M::GET, "/v1/admin/tenants/beta".into(), None),
        (M::PATCH, "/v1/admin/tenants/beta".into(), Some(json!({"name": "x"}))),
        (M::DELETE, "/v1/admin/tenants/beta".into(), None),
        (M::POST, "/v1/admin/tenants/beta/test".into(), None),
        (M::GET, "/v1/admin/tenants/beta/mailboxes".into(), None),
        (M::PATCH, "/v1/admin/tenants/beta/mailboxes/a@b.de".into(), Some(json!({"state": "disabled"}))),
        (M::POST, "/v1/admin/tenants/beta/mailboxes/a@b.de/approve".into(), None),
        (M::GET, "/v1/admin/tenants/beta/mailboxes/a@b.de/held".into(), None),
        (M::GET, "/v1/admin/tenants/beta/journal".into(), None),
        (M::GET, "/v1/admin/tenants/beta/plan".into(), None),
    ];
    for (m, path, body) in routes {
        let (s, text) = h.call(m.clone(), &path, Some(&ta), body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {path}: {text}");
    }
    // Operator-only routes: 403 for a tenant admin.
    for (m, path, body) in [
        (M::POST, "/v1/admin/tenants", Some(h.tenant_body("gamma", "s", "t"))),
        (M::GET, "/v1/admin/dead-letters", None),
        (M::POST, "/v1/admin/dead-letters/replay", Some(json!({}))),
    ] {
        let (s, text) = h.call(m.clone(), path, Some(&ta), body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{m} {path}: {text}");
    }
    let (s, list) = h.call(M::GET, "/v1/admin/tenants", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.iter().map(|t| t["id"].as_str().unwrap()).collect::<Vec<_>>(), ["alpha"]);
    let (s, _) = h.call(M::GET, "/v1/admin/tenants/alpha", Some(&ta), None).await;
    assert_eq!(s, StatusCode::OK);

    // Forged, expired, wrong algorithm, missing, bad role.
    let exp = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let forged = token_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        json!({"sub": "x", "role": "operator", "exp": exp}),
    );
    let expired = token_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        json!({"sub": "x", "role": "operator", "exp": (Utc::now() - chrono::Duration::hours(1)).timestamp()}),
    );
    let hs512 = token_with(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        json!({"sub": "x", "role": "operator", "exp": exp}),
    );
    let none_alg = format!(
        "{}.{}.",
        base64url(&json!({"alg": "none", "typ": "JWT"}).to_string()),
        base64url(&json!({"sub": "x", "role": "operator", "exp": exp}).to_string())
    );
    let bad_role = token("root", None);
    for (name, t) in
        [("forged", forged), ("expired", expired), ("HS512", hs512), ("alg none", none_alg), ("bad role", bad_role)]
    {
        let (s, text) = h.call(M::GET, "/v1/admin/tenants", Some(&t), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{name}: {text}");
    }
    let (s, _) = h.call(M::GET, "/v1/admin/tenants", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

fn base64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn secrets_are_write_only_and_bad_input_changes_nothing() {
    let h = H::start().await;
    h.create("alpha", GRAPH_SECRET_MARK, HQ_TOKEN_MARK).await;
    let op = token("operator", None);
    use reqwest::Method as M;
    let (s, body) = h.call(M::GET, "/v1/admin/tenants/alpha", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_no_secret(&body);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["graph"]["client_secret_set"], true);
    assert_eq!(v["hellohq"]["webhook_secrets"], 1);
    // A secret rotated through PATCH is stored (the connection test uses it) but never shown.
    let (s, body) = h
        .call(M::PATCH, "/v1/admin/tenants/alpha", Some(&op), Some(json!({"hellohq": {"token": HQ_TOKEN_MARK}})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_no_secret(&body);
    // Bad input: a precise 4xx, nothing stored.
    for (body, code) in [
        (json!({"settings": {"directions": {"contact": "sideways"}}}), "bad_settings"),
        (json!({"settings": {"rollout": "half"}}), "bad_settings"),
        (json!({"nonsense": 1}), ""),
    ] {
        let (s, text) = h.call(M::PATCH, "/v1/admin/tenants/alpha", Some(&op), Some(body)).await;
        assert!(s.is_client_error(), "{text}");
        assert!(text.contains(code), "{text}");
    }
    let (s, text) = h.call(M::POST, "/v1/admin/tenants", Some(&op), Some(json!({"id": "Bad Id"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("id"), "{text}");
    let (s, _) = h.call(M::POST, "/v1/admin/tenants", Some(&op), Some(h.tenant_body("alpha", "x", "y"))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let t = h.store.get_tenant(&TenantId::parse("alpha").unwrap()).await.unwrap().unwrap();
    assert_eq!(t.settings, json!({}), "a refused change was stored");
    // Every admin action is journalled with who did it.
    let (_, j) = h.call(M::GET, "/v1/admin/tenants/alpha/journal?action=admin", Some(&op), None).await;
    let j: Vec<Value> = serde_json::from_str(&j).unwrap();
    assert!(j.iter().all(|e| e["actor"] == "operator:tester"), "{j:?}");
    assert!(j.len() >= 2);
    // Nothing logged so far names a secret either.
    let logs = String::from_utf8_lossy(&captured_logs().lock().unwrap()).to_string();
    assert_no_secret(&logs);
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

#[tokio::test]
async fn the_connection_test_names_each_failure_and_its_fix() {
    let h = H::start().await;
    let good_secret = h.seed["clientSecret"].as_str().unwrap().to_string();
    h.create("good", &good_secret, &h.hq_sim.sync_token()).await;
    let op = token("operator", None);
    use reqwest::Method as M;
    let anna = "anna.schmidt@agentur-beispiel.de";
    h.call(M::PATCH, "/v1/admin/tenants/good", Some(&op), Some(json!({"settings": {"pilot_mailbox": anna}}))).await;
    let report = |text: String| -> Value { serde_json::from_str(&text).unwrap() };
    let check = |r: &Value, name: &str| {
        r["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().unwrap_or(Value::Null)
    };
    let (s, text) = h.call(M::POST, "/v1/admin/tenants/good/test", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let r = report(text);
    assert_eq!(r["ok"], true, "{r:#}");
    // The probes' answers are stored as the tenant's capability record and
    // shown with the tenant.
    let tested_at = r["capabilities"]["tested_at"].as_str().expect("the test stamps its capabilities").to_string();
    let (_, t) = h.call(M::GET, "/v1/admin/tenants/good", Some(&op), None).await;
    let t: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["capabilities"], r["capabilities"], "{t:#}");
    assert!(t["capabilities"]["tested_at"].as_str() == Some(tested_at.as_str()));
    let (_, other) = h.call(M::GET, "/v1/admin/tenants", Some(&op), None).await;
    assert!(other.contains(&tested_at), "the list shows each tenant's record: {other}");
    // Access policy: the pilot mailbox is outside the app's scope.
    h.http
        .post(format!("{}/_sim/policy", h.graph_sim.base_url()))
        .json(&json!({"mailbox": anna, "inScope": false}))
        .send()
        .await
        .unwrap();
    let r = report(h.call(M::POST, "/v1/admin/tenants/good/test", Some(&op), None).await.1);
    let cal = check(&r, "calendar");
    assert_eq!(cal["ok"], false, "{r:#}");
    assert!(
        cal["fix"].as_str().unwrap_or("").contains("ApplicationAccessPolicy")
            || cal["fix"].as_str().unwrap_or("").to_lowercase().contains("policy"),
        "{cal}"
    );
    // Bad Graph secret.
    h.create("badsecret", "not-the-secret", &h.hq_sim.sync_token()).await;
    let r = report(h.call(M::POST, "/v1/admin/tenants/badsecret/test", Some(&op), None).await.1);
    let tok = check(&r, "graph_token");
    assert_eq!(tok["ok"], false);
    assert!(tok["fix"].as_str().unwrap_or("").to_lowercase().contains("secret"), "{tok}");
    // Bad helloHQ token.
    h.create("badtoken", &good_secret, "wrong-token").await;
    let r = report(h.call(M::POST, "/v1/admin/tenants/badtoken/test", Some(&op), None).await.1);
    let hq = check(&r, "hellohq_token");
    assert_eq!(hq["ok"], false);
    assert!(hq["fix"].as_str().unwrap_or("").contains("token"), "{hq}");
    assert_eq!(check(&r, "webhook_reachability")["ok"], true, "{r:#}");
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

/// Item 10 of issue 19: the granted application permissions are read from
/// the token's `roles` claim; each missing one is named with its fix.
#[tokio::test]
async fn the_connection_test_names_each_missing_application_permission() {
    let h = H::start().await;
    let good_secret = h.seed["clientSecret"].as_str().unwrap().to_string();
    h.create("perm", &good_secret, &h.hq_sim.sync_token()).await;
    let op = token("operator", None);
    use reqwest::Method as M;
    let anna = "anna.schmidt@agentur-beispiel.de";
    h.call(M::PATCH, "/v1/admin/tenants/perm", Some(&op), Some(json!({"settings": {"pilot_mailbox": anna}}))).await;
    let all = ["Calendars.ReadWrite", "Contacts.ReadWrite", "Tasks.ReadWrite.All", "User.Read.All"];
    let set_roles = |roles: Vec<&str>| {
        let (http, url) = (h.http.clone(), format!("{}/_sim/roles", h.graph_sim.base_url()));
        let roles: Vec<String> = roles.into_iter().map(str::to_string).collect();
        async move {
            let r = http.post(url).json(&json!({"roles": roles})).send().await.unwrap();
            assert!(r.status().is_success());
        }
    };
    let permissions = |text: String| -> Value {
        let r: Value = serde_json::from_str(&text).unwrap();
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "graph_permissions")
            .cloned()
            .unwrap_or(Value::Null)
    };
    set_roles(all.to_vec()).await;
    let c = permissions(h.call(M::POST, "/v1/admin/tenants/perm/test", Some(&op), None).await.1);
    assert_eq!(c["ok"], true, "{c}");
    for missing in all {
        set_roles(all.iter().copied().filter(|r| *r != missing).collect()).await;
        let c = permissions(h.call(M::POST, "/v1/admin/tenants/perm/test", Some(&op), None).await.1);
        assert_eq!(c["ok"], false, "{missing}: {c}");
        let (detail, fix) = (c["detail"].as_str().unwrap(), c["fix"].as_str().unwrap());
        assert!(detail.contains(missing), "{detail}");
        for other in all.iter().filter(|r| **r != missing) {
            assert!(!detail.contains(&format!("{other} (")), "{other} is granted: {detail}");
        }
        assert!(fix.contains(missing) && fix.contains("admin consent"), "{fix}");
    }
    set_roles(vec![]).await;
    let c = permissions(h.call(M::POST, "/v1/admin/tenants/perm/test", Some(&op), None).await.1);
    assert!(all.iter().all(|r| c["detail"].as_str().unwrap().contains(r)), "{c}");
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

#[tokio::test]
async fn the_pilot_rollout_syncs_only_the_pilot_mailbox_until_all() {
    let h = H::start().await;
    let secret = h.seed["clientSecret"].as_str().unwrap().to_string();
    h.create("demo", &secret, &h.hq_sim.sync_token()).await;
    let op = token("operator", None);
    use reqwest::Method as M;
    let anna = "anna.schmidt@agentur-beispiel.de";
    let (s, text) = h
        .call(
            M::PATCH,
            "/v1/admin/tenants/demo",
            Some(&op),
            Some(json!({"settings": {"rollout": "pilot", "pilot_mailbox": anna}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let engine = Engine::new(h.store.clone()).allowing_private_addresses();
    let tenant = TenantId::parse("demo").unwrap();
    let pass = |mailbox: Option<&str>| Hint {
        v: HINT_VERSION,
        hint_id: uuid::Uuid::new_v4(),
        tenant: tenant.clone(),
        mailbox: mailbox.map(|m| MailboxId::parse(m).unwrap()),
        kind: mailbox.map(|_| Kind::Contact),
        entity: None,
        origin: Origin::Schedule,
        resource_id: None,
        version: None,
        subscription_id: None,
        change: Change::Resync,
        received_at: Utc::now(),
    };
    engine.handle(&pass(None)).await.unwrap();
    let boxes = h.store.list_mailboxes(&tenant).await.unwrap();
    assert_eq!(boxes.len(), 4);
    for m in &boxes {
        let linked = h.store.count_links(&tenant, Some(&m.id), Some(Kind::Contact)).await.unwrap();
        if m.id.as_str() == anna {
            assert_eq!(m.state, MailboxState::Pilot);
            assert!(linked > 0, "the pilot mailbox did not sync");
        } else {
            assert_eq!(m.state, MailboxState::Disabled);
            assert_eq!(linked, 0, "{} synced during the pilot", m.id);
            // A pass for it (the scheduler would not send one) changes nothing either.
            engine.handle(&pass(Some(m.id.as_str()))).await.unwrap();
            assert_eq!(h.store.count_links(&tenant, Some(&m.id), Some(Kind::Contact)).await.unwrap(), 0);
        }
    }
    let (s, _) =
        h.call(M::PATCH, "/v1/admin/tenants/demo", Some(&op), Some(json!({"settings": {"rollout": "all"}}))).await;
    assert_eq!(s, StatusCode::OK);
    for m in h.store.list_mailboxes(&tenant).await.unwrap() {
        assert_ne!(m.state, MailboxState::Disabled, "{} still held back", m.id);
        engine.handle(&pass(Some(m.id.as_str()))).await.unwrap();
        assert!(
            h.store.count_links(&tenant, Some(&m.id), Some(Kind::Contact)).await.unwrap() > 0,
            "{} did not sync after rollout",
            m.id
        );
    }
    let (_, mb) = h.call(M::GET, "/v1/admin/tenants/demo/mailboxes", Some(&op), None).await;
    let mb: Vec<Value> = serde_json::from_str(&mb).unwrap();
    assert!(
        mb.iter().all(|m| m["linked_contacts"].as_u64().unwrap() > 0 && !m["last_contact_sync"].is_null()),
        "{mb:?}"
    );
    assert_no_secret(&String::from_utf8_lossy(&captured_logs().lock().unwrap()));
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

/// The operation's documented statuses in the committed OpenAPI document.
fn documented(method: &str, path: &str) -> Vec<u16> {
    let spec: Value = serde_json::from_str(&hqsync::http::openapi::render()).unwrap();
    let op = &spec["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not in the document");
    op["responses"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect()
}

/// The JSON error body's code and message; panics on anything else (plain text, HTML, empty).
async fn json_error(resp: reqwest::Response) -> (StatusCode, String, String) {
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let text = resp.text().await.unwrap();
    assert!(ct.starts_with("application/json"), "{status}: content-type {ct:?}, body {text:?}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, v["error"]["code"].as_str().unwrap().to_string(), v["error"]["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn rejected_input_answers_a_documented_status_with_a_json_error_naming_the_problem() {
    let h = H::start().await;
    h.create("alpha", GRAPH_SECRET_MARK, HQ_TOKEN_MARK).await;
    let op = token("operator", None);
    let url = |p: &str| format!("{}{p}", h.base);
    let before = h.store.get_tenant(&TenantId::parse("alpha").unwrap()).await.unwrap().unwrap();
    // (method, route template, request, status, code, a word the message must name)
    let cases: Vec<(&str, &str, reqwest::RequestBuilder, u16, &str, &str)> = vec![
        // No Content-Type (axum's own answer was a plain-text 415).
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}",
            h.http.patch(url("/v1/admin/tenants/alpha")).bearer_auth(&op).body(r#"{"name":"x"}"#),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        // Not JSON (axum: plain-text 400).
        (
            "POST",
            "/v1/admin/tenants",
            h.http
                .post(url("/v1/admin/tenants"))
                .bearer_auth(&op)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "malformed_json",
            "JSON",
        ),
        // Trailing bytes after the document.
        (
            "POST",
            "/v1/admin/dead-letters/replay",
            h.http
                .post(url("/v1/admin/dead-letters/replay"))
                .bearer_auth(&op)
                .header("content-type", "application/json")
                .body("{} {}"),
            400,
            "malformed_json",
            "trailing",
        ),
        // JSON of the wrong shape (axum: plain-text 422 without the field).
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}",
            h.http.patch(url("/v1/admin/tenants/alpha")).bearer_auth(&op).json(&json!({"enabled": "yes"})),
            422,
            "invalid_body",
            "`enabled`",
        ),
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}",
            h.http.patch(url("/v1/admin/tenants/alpha")).bearer_auth(&op).json(&json!({"graph": {"secret": "x"}})),
            422,
            "invalid_body",
            "`graph.secret`",
        ),
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}/mailboxes/{mailbox}",
            h.http.patch(url("/v1/admin/tenants/alpha/mailboxes/a@b.de")).bearer_auth(&op).json(&json!("pilot")),
            422,
            "invalid_body",
            "the body",
        ),
        // A query value that does not decode (axum: plain-text 400).
        (
            "GET",
            "/v1/admin/tenants/{tenant}/journal",
            h.http.get(url("/v1/admin/tenants/alpha/journal?limit=ten")).bearer_auth(&op),
            400,
            "malformed_query",
            "`limit`",
        ),
        // A path segment that is not UTF-8 (axum: plain-text 400).
        (
            "GET",
            "/v1/admin/tenants/{tenant}",
            h.http.get(url("/v1/admin/tenants/%FF")).bearer_auth(&op),
            400,
            "malformed_path",
            "UTF-8",
        ),
        // Values the config file would refuse are refused here too.
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}",
            h.http
                .patch(url("/v1/admin/tenants/alpha"))
                .bearer_auth(&op)
                .json(&json!({"graph": {"graph_base": "graph.example"}})),
            400,
            "bad_field",
            "graph.graph_base",
        ),
        (
            "PATCH",
            "/v1/admin/tenants/{tenant}",
            h.http
                .patch(url("/v1/admin/tenants/alpha"))
                .bearer_auth(&op)
                .json(&json!({"hellohq": {"webhook_secrets": ["not-a-secret"]}})),
            400,
            "bad_field",
            "webhook_secrets[0]",
        ),
        // The login form: a JSON body, and a form without the token.
        (
            "POST",
            "/login",
            h.http.post(url("/login")).json(&json!({"token": "x"})),
            415,
            "unsupported_media_type",
            "form",
        ),
        (
            "POST",
            "/login",
            h.http.post(url("/login")).header("content-type", "application/x-www-form-urlencoded").body("tok=1"),
            400,
            "malformed_form",
            "token",
        ),
    ];
    for (method, route, req, status, code, names) in cases {
        let (s, c, message) = json_error(req.send().await.unwrap()).await;
        assert_eq!((s.as_u16(), c.as_str()), (status, code), "{method} {route}: {message}");
        assert!(message.contains(names), "{method} {route}: the message should name {names:?}: {message}");
        assert!(documented(method, route).contains(&status), "{method} {route} answers an undocumented {status}");
    }
    let after = h.store.get_tenant(&TenantId::parse("alpha").unwrap()).await.unwrap().unwrap();
    assert_eq!(after.updated_at, before.updated_at, "a refused change was stored");
    assert_eq!(after.graph.graph_base, before.graph.graph_base);

    // No route, and a method the route does not take: JSON too (axum: empty bodies).
    let (s, c, _) = json_error(h.http.get(url("/v1/nothing-here")).send().await.unwrap()).await;
    assert_eq!((s, c.as_str()), (StatusCode::NOT_FOUND, "no_route"));
    let resp = h.http.put(url("/v1/admin/tenants")).bearer_auth(&op).send().await.unwrap();
    let allow = resp.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (s, c, _) = json_error(resp).await;
    assert_eq!((s, c.as_str()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    assert!(allow.contains("GET") && allow.contains("POST"), "Allow: {allow:?}");
    h.graph_sim.shutdown().await;
    h.hq_sim.shutdown().await;
}

/// Issue 21 item 1: the admin API and the status page show the held list
/// item by item, and an approval approves exactly the items it names.
#[tokio::test]
async fn held_deletions_are_listed_and_approved_item_by_item() {
    use hqsync::engine::approvals::{self, Held, HeldItem};
    let h = H::start().await;
    h.create("alpha", GRAPH_SECRET_MARK, HQ_TOKEN_MARK).await;
    let tenant = hqsync::model::TenantId::parse("alpha").unwrap();
    let mb = hqsync::model::MailboxId::parse("a@b.de").unwrap();
    h.store
        .upsert_mailbox(&hqsync::store::Mailbox {
            tenant: tenant.clone(),
            id: mb.clone(),
            hq_user_id: Some("7".into()),
            state: hqsync::store::MailboxState::Active,
            settings: json!({}),
            last_error: None,
            updated_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let item = |hq: &str, g: &str, name: &str| HeldItem {
        key: format!("hq:{hq}|graph:{g}"),
        hq_id: Some(hq.into()),
        graph_id: Some(g.into()),
        name: name.into(),
        delete_in: "exchange".into(),
    };
    let held = Held {
        kind: hqsync::model::Kind::Contact,
        at: chrono::Utc::now(),
        reason: "2 of 3 contact links would be deleted".into(),
        items: vec![item("11", "AAA", "contact Max <Weiß>"), item("12", "BBB", "contact Erika Muster")],
    };
    approvals::record_held(&h.store, &tenant, &mb, hqsync::model::Kind::Contact, Some(&held)).await.unwrap();
    let op = token("operator", None);
    let (s, body) =
        h.call(reqwest::Method::GET, "/v1/admin/tenants/alpha/mailboxes/a@b.de/held", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed[0]["items"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(listed[0]["kind"], "contact");
    // The status page lists the same items (escaped).
    let (s, page) = h.call(reqwest::Method::GET, "/", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("contact Max &lt;Weiß&gt;") && page.contains("contact Erika Muster"), "{page}");
    assert!(page.contains("data-key=\"hq:12|graph:BBB\""), "{page}");
    // A body that is not the expected shape: 400, nothing approved.
    let (s, _) = h
        .call(
            reqwest::Method::POST,
            "/v1/admin/tenants/alpha/mailboxes/a@b.de/approve",
            Some(&op),
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(approvals::approval(&h.store, &tenant, &mb, hqsync::model::Kind::Contact).await.unwrap().is_empty());
    // Approving one named item approves exactly it.
    let (s, body) = h
        .call(
            reqwest::Method::POST,
            "/v1/admin/tenants/alpha/mailboxes/a@b.de/approve?kind=contact",
            Some(&op),
            Some(json!({"items": ["hq:12|graph:BBB", "hq:99|graph:ZZZ"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let approved: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(approved[0]["items"].as_array().unwrap().len(), 1, "only held items are approved: {body}");
    assert_eq!(approved[0]["items"][0]["key"], "hq:12|graph:BBB");
    let a = approvals::approval(&h.store, &tenant, &mb, hqsync::model::Kind::Contact).await.unwrap();
    assert_eq!(a.items.len(), 1);
    // Without a body: the whole held list.
    let (s, body) =
        h.call(reqwest::Method::POST, "/v1/admin/tenants/alpha/mailboxes/a@b.de/approve", Some(&op), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let approved: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(approved[0]["items"].as_array().unwrap().len(), 2, "{body}");
}
