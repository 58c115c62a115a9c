//! The Graph simulator over real HTTP: auth, access policy, contacts,
//! extended properties, delta, subscriptions and notifications, throttling,
//! `$batch`, and wire shapes compared with Microsoft's documentation samples
//! (tests/fixtures/graph/).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode as AxStatus;
use axum::response::{IntoResponse, Response};
use hqsync::sim::graph::{GraphSim, GraphSimConfig, SeedProfile};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const ANNA: &str = "anna.schmidt@agentur-beispiel.de";
const BEN: &str = "ben.mueller@agentur-beispiel.de";
const CLARA: &str = "clara.wagner@agentur-beispiel.de";
const WAIT: Duration = Duration::from_secs(15);

struct TestSim {
    sim: GraphSim,
    base: String,
    http: reqwest::Client,
    token: String,
    seed: Value,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl TestSim {
    /// A simulator with three mailboxes: Anna and Clara (in policy scope) and Ben (outside it).
    async fn start() -> TestSim {
        Self::start_with(GraphSimConfig { seed: SeedProfile::Empty, ..GraphSimConfig::default() }).await
    }

    async fn start_with(cfg: GraphSimConfig) -> TestSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = GraphSim::start(listener, cfg).await.unwrap();
        let base = sim.base_url();
        let http = reqwest::Client::new();
        let seed: Value = http
            .post(format!("{base}/_sim/seed"))
            .json(&json!({"mailboxes": [
                {"userPrincipalName": ANNA, "displayName": "Anna Schmidt"},
                {"userPrincipalName": BEN, "displayName": "Ben Müller", "inPolicyScope": false},
                {"userPrincipalName": CLARA, "displayName": "Clara Wagner"},
            ]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut t = TestSim { sim, base, http, token: String::new(), seed };
        let (status, body) = t.token_request(None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        t.token = body["access_token"].as_str().unwrap().to_string();
        t
    }

    async fn token_request(&self, secret: Option<&str>) -> (StatusCode, Value) {
        let tenant = self.seed["tenantId"].as_str().unwrap();
        let secret = secret.unwrap_or(self.seed["clientSecret"].as_str().unwrap());
        let resp = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .form(&[
                ("client_id", self.seed["clientId"].as_str().unwrap()),
                ("client_secret", secret),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap())
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/v1.0{path}", self.base)
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Answer {
        let mut rb = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Answer { status, headers, body }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, None, &[]).await
    }
    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(body), &[]).await
    }
    async fn patch(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.call(reqwest::Method::PATCH, path, Some(body), headers).await
    }
    async fn delete(&self, path: &str) -> Answer {
        self.call(reqwest::Method::DELETE, path, None, &[]).await
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self.http.post(format!("{}/_sim{path}", self.base)).json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let bytes = resp.bytes().await.unwrap();
        if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        }
    }

    async fn stats(&self) -> Value {
        self.http.get(format!("{}/_sim/stats", self.base)).send().await.unwrap().json().await.unwrap()
    }

    async fn new_folder(&self, name: &str) -> String {
        let a = self.post(&format!("/users/{ANNA}/contactFolders"), json!({"displayName": name})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn new_contact(&self, folder: &str, body: Value) -> Value {
        let a = self.post(&format!("/users/{ANNA}/contactFolders/{}/contacts", enc(folder)), body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body
    }
}

fn enc(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn assert_graph_error(a: &Answer, status: StatusCode, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"]["code"], json!(code), "{}", a.body);
    assert!(a.body["error"]["message"].is_string());
    let inner = &a.body["error"]["innerError"];
    for k in ["date", "request-id", "client-request-id"] {
        assert!(inner[k].is_string(), "innerError.{k} missing: {}", a.body);
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every property of `sample` exists in `actual` with the same JSON type
/// (recursively); with `exact`, `actual` has no other properties either.
fn assert_same_shape(sample: &Value, actual: &Value, path: &str, exact: bool) {
    assert_eq!(kind(sample), kind(actual), "type of {path}: sample {sample} vs sim {actual}");
    match (sample, actual) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, sv) in s {
                let av = a.get(k).unwrap_or_else(|| panic!("{path}.{k} missing in {actual}"));
                assert_same_shape(sv, av, &format!("{path}.{k}"), exact);
            }
            if exact {
                let extra: Vec<&String> = a.keys().filter(|k| !s.contains_key(*k)).collect();
                assert!(extra.is_empty(), "{path} has extra properties {extra:?}");
            }
        }
        (Value::Array(s), Value::Array(a)) => {
            if let (Some(s0), Some(a0)) = (s.first(), a.first()) {
                assert_same_shape(s0, a0, &format!("{path}[0]"), exact);
            }
        }
        _ => {}
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------- webhook receiver

#[derive(Clone, Copy, PartialEq)]
enum Echo {
    Exact,
    Wrong,
}

#[derive(Clone)]
struct Hook {
    echo: Echo,
    tx: mpsc::UnboundedSender<(HashMap<String, String>, Value)>,
    tokens: Arc<Mutex<Vec<String>>>,
    /// Notification POSTs still to be answered with 500.
    fail_remaining: Arc<std::sync::atomic::AtomicUsize>,
    handshake_delay: Duration,
    /// How long a notification POST takes to be answered (after it was recorded).
    notify_delay: Duration,
}

async fn hook(State(h): State<Hook>, Query(q): Query<HashMap<String, String>>, body: Bytes) -> Response {
    if let Some(token) = q.get("validationToken") {
        h.tokens.lock().unwrap().push(token.clone());
        tokio::time::sleep(h.handshake_delay).await;
        let answer = if h.echo == Echo::Exact { token.clone() } else { format!("{token}!") };
        return (AxStatus::OK, [("content-type", "text/plain")], answer).into_response();
    }
    use std::sync::atomic::Ordering;
    if h.fail_remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return AxStatus::INTERNAL_SERVER_ERROR.into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = h.tx.send((q, v));
    if !h.notify_delay.is_zero() {
        tokio::time::sleep(h.notify_delay).await;
    }
    AxStatus::ACCEPTED.into_response()
}

struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<(HashMap<String, String>, Value)>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(echo: Echo) -> Receiver {
        Self::start_with(echo, 0, Duration::ZERO).await
    }

    async fn start_with(echo: Echo, fail_first: usize, handshake_delay: Duration) -> Receiver {
        Self::start_full(echo, fail_first, handshake_delay, Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each notification POST.
    async fn start_slow(delay: Duration) -> Receiver {
        Self::start_full(Echo::Exact, 0, Duration::ZERO, delay).await
    }

    async fn start_full(echo: Echo, fail_first: usize, handshake_delay: Duration, notify_delay: Duration) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let hook_state = Hook {
            echo,
            tx,
            tokens: tokens.clone(),
            fail_remaining: Arc::new(std::sync::atomic::AtomicUsize::new(fail_first)),
            handshake_delay,
            notify_delay,
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(hook_state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url: format!("http://{addr}/hook"), rx, tokens }
    }

    async fn next(&mut self) -> (HashMap<String, String>, Value) {
        tokio::time::timeout(WAIT, self.rx.recv()).await.expect("no notification arrived").unwrap()
    }
}

fn expiry_in(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn subscribe(sim: &TestSim, resource: &str, url: &str, lifecycle: Option<&str>) -> Answer {
    let mut body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": resource,
        // Beyond the hour in which Graph starts asking for reauthorization.
        "expirationDateTime": expiry_in(120),
        "clientState": "hqsync-secret-state",
    });
    if let Some(l) = lifecycle {
        body["lifecycleNotificationUrl"] = json!(l);
    }
    sim.post("/subscriptions", body).await
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn token_endpoint_issues_a_bearer_for_the_seeded_app_and_refuses_a_wrong_secret() {
    let sim = TestSim::start().await;
    let (status, body) = sim.token_request(None).await;
    assert_eq!(status, StatusCode::OK);
    assert_same_shape(&fixture("oauth-token-response.json"), &body, "token", true);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);

    let (status, body) = sim.token_request(Some("not-the-secret")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS7000215"));
    assert_eq!(body["error_codes"], json!([7000215]));
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[k].is_string());
    }

    let resp = sim
        .http
        .post(format!("{}/unknown-tenant.example/oauth2/v2.0/token", sim.base))
        .form(&[
            ("client_id", "x"),
            ("client_secret", "y"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn graph_routes_refuse_requests_without_a_valid_bearer() {
    let sim = TestSim::start().await;
    let resp = sim.http.get(sim.url(&format!("/users/{ANNA}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let a = Answer { status: resp.status(), headers: resp.headers().clone(), body: resp.json().await.unwrap() };
    assert_graph_error(&a, StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");

    let resp = sim
        .http
        .get(sim.url(&format!("/users/{ANNA}")))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let a = sim.get(&format!("/users/{ANNA}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["userPrincipalName"], ANNA);
    assert!(a.headers.contains_key("request-id"));

    // After the token's lifetime (simulator clock) it is refused again.
    sim.control("/clock", json!({"advanceMinutes": 61})).await;
    let a = sim.get(&format!("/users/{ANNA}")).await;
    assert_graph_error(&a, StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn mailbox_outside_the_access_policy_gets_403_for_contacts_but_not_for_the_directory() {
    let sim = TestSim::start().await;
    let a = sim.get(&format!("/users/{BEN}/contactFolders")).await;
    assert_graph_error(&a, StatusCode::FORBIDDEN, "ErrorAccessDenied");
    assert_eq!(a.body["error"]["message"], "Access to OData is disabled.");
    let a = sim.get(&format!("/users/{BEN}/contacts")).await;
    assert_graph_error(&a, StatusCode::FORBIDDEN, "ErrorAccessDenied");
    assert_eq!(sim.get(&format!("/users/{BEN}")).await.status, StatusCode::OK);
    assert_eq!(sim.get(&format!("/users/{ANNA}/contactFolders")).await.status, StatusCode::OK);

    // The policy can change at runtime.
    sim.control("/policy", json!({"mailbox": BEN, "inScope": true})).await;
    assert_eq!(sim.get(&format!("/users/{BEN}/contactFolders")).await.status, StatusCode::OK);
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- contacts

#[tokio::test]
async fn contact_crud_rotates_the_etag_and_refuses_a_stale_if_match() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ Globale Kontakte").await;
    let dup = sim.post(&format!("/users/{ANNA}/contactFolders"), json!({"displayName": "hq globale kontakte"})).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    let created = sim
        .new_contact(
            &folder,
            json!({"givenName": "Alex", "surname": "Wilber",
                   "emailAddresses": [{"name": "Alex@FineArtSchool.net", "address": "Alex@FineArtSchool.net"}]}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    let etag1 = created["@odata.etag"].as_str().unwrap().to_string();
    assert_eq!(etag1, format!("W/\"{}\"", created["changeKey"].as_str().unwrap()));
    assert_eq!(created["parentFolderId"], json!(folder));
    let path = format!("/users/{ANNA}/contactFolders/{}/contacts/{}", enc(&folder), enc(&id));

    let got = sim.get(&path).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["displayName"], "Alex Wilber");

    let upd = sim.patch(&path, json!({"jobTitle": "Designerin"}), &[("If-Match", &etag1)]).await;
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.body);
    let etag2 = upd.body["@odata.etag"].as_str().unwrap().to_string();
    assert_ne!(etag1, etag2);
    assert_eq!(upd.body["jobTitle"], "Designerin");

    let stale = sim.patch(&path, json!({"jobTitle": "x"}), &[("If-Match", &etag1)]).await;
    assert_graph_error(&stale, StatusCode::PRECONDITION_FAILED, "ErrorIrresolvableConflict");

    // The same contact is reachable through /users/{u}/contacts/{id}.
    assert_eq!(sim.get(&format!("/users/{ANNA}/contacts/{}", enc(&id))).await.status, StatusCode::OK);

    assert_eq!(sim.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_graph_error(&sim.get(&path).await, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    let stats = sim.stats().await;
    assert_eq!(stats["writes"]["contact"], 3);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn contact_json_has_the_property_names_and_types_of_microsofts_sample() {
    let sim = TestSim::start().await;
    let a = sim
        .post(
            &format!("/users/{ANNA}/contacts"),
            json!({"givenName": "Alex", "surname": "Wilber",
                   "emailAddresses": [{"name": "Alex@FineArtSchool.net", "address": "Alex@FineArtSchool.net"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let got = sim.get(&format!("/users/{ANNA}/contacts/{}", enc(a.body["id"].as_str().unwrap()))).await;
    assert_same_shape(&fixture("contact-get.json"), &got.body, "contact", true);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn fax_extended_property_round_trips_only_through_expand() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    let c = sim
        .new_contact(&folder, json!({"givenName": "Fax", "singleValueExtendedProperties": [{"id": "String 0x3A24", "value": "+49 30 111"}]}))
        .await;
    assert!(c.get("singleValueExtendedProperties").is_none(), "not returned without $expand");
    let path = format!("/users/{ANNA}/contactFolders/{}/contacts/{}", enc(&folder), enc(c["id"].as_str().unwrap()));
    let patched = sim
        .patch(&path, json!({"singleValueExtendedProperties": [{"id": "string 0x3a24", "value": "+49 30 999"}]}), &[])
        .await;
    assert_eq!(patched.status, StatusCode::OK);

    let plain = sim.get(&path).await;
    assert!(plain.body.get("singleValueExtendedProperties").is_none());
    let expanded =
        sim.get(&format!("{path}?$expand=singleValueExtendedProperties($filter=id%20eq%20'String%200x3A24')")).await;
    let props = expanded.body["singleValueExtendedProperties"].as_array().expect("expanded property");
    assert_eq!(props.len(), 1);
    assert!(props[0]["id"].as_str().unwrap().eq_ignore_ascii_case("String 0x3A24"));
    assert_eq!(props[0]["value"], "+49 30 999");

    let other =
        sim.get(&format!("{path}?$expand=singleValueExtendedProperties($filter=id%20eq%20'String%200x3A25')")).await;
    assert!(other.body.get("singleValueExtendedProperties").is_none());

    let bad = sim.patch(&path, json!({"faxNumber": "1"}), &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- delta

async fn delta_round(sim: &TestSim, start: &str, page_size: &str) -> (Vec<Value>, String, usize) {
    let mut url = start.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let a = sim.call(reqwest::Method::GET, &url, None, &[("Prefer", page_size)]).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        pages += 1;
        items.extend(a.body["value"].as_array().unwrap().iter().cloned());
        if let Some(next) = a.body["@odata.nextLink"].as_str() {
            assert!(next.contains("$skiptoken="));
            url = next.to_string();
        } else {
            let delta = a.body["@odata.deltaLink"].as_str().expect("round ends with a deltaLink");
            assert!(delta.contains("$deltatoken="));
            return (items, delta.to_string(), pages);
        }
    }
}

#[tokio::test]
async fn folder_delta_reports_changes_and_deletions_then_a_new_delta_link() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            sim.new_contact(&folder, json!({"givenName": format!("P{i}")})).await["id"].as_str().unwrap().to_string(),
        );
    }
    let start = format!("/users/{ANNA}/contactFolders/{}/contacts/delta", enc(&folder));
    let (items, delta_link, pages) = delta_round(&sim, &start, "odata.maxpagesize=2").await;
    assert_eq!(items.len(), 3);
    assert_eq!(pages, 2, "three items at two per page");

    let cpath = |id: &str| format!("/users/{ANNA}/contactFolders/{}/contacts/{}", enc(&folder), enc(id));
    assert_eq!(sim.patch(&cpath(&ids[0]), json!({"surname": "Neu"}), &[]).await.status, StatusCode::OK);
    assert_eq!(sim.delete(&cpath(&ids[1])).await.status, StatusCode::NO_CONTENT);

    let (items, next_delta, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=2").await;
    assert_eq!(items.len(), 2, "{items:?}");
    let changed = items.iter().find(|i| i["id"] == json!(ids[0])).unwrap();
    assert_eq!(changed["surname"], "Neu");
    let removed = items.iter().find(|i| i["id"] == json!(ids[1])).unwrap();
    assert_eq!(removed["@removed"]["reason"], "deleted");

    let (items, _, _) = delta_round(&sim, &next_delta, "odata.maxpagesize=2").await;
    assert!(items.is_empty(), "nothing changed since: {items:?}");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn contact_delta_page_has_the_envelope_of_microsofts_delta_sample() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    for i in 0..2 {
        sim.new_contact(&folder, json!({"givenName": format!("P{i}")})).await;
    }
    let a = sim
        .call(
            reqwest::Method::GET,
            &format!("/users/{ANNA}/contactFolders/{}/contacts/delta", enc(&folder)),
            None,
            &[("Prefer", "odata.maxpagesize=1")],
        )
        .await;
    let sample = fixture("event-delta-initial-page-nextLink.json");
    let envelope = |v: &Value| json!({"@odata.context": v["@odata.context"], "@odata.nextLink": v["@odata.nextLink"]});
    assert_same_shape(&envelope(&sample), &envelope(&a.body), "page", true);
    let item = &a.body["value"][0];
    for k in ["@odata.type", "@odata.etag", "id"] {
        assert_eq!(kind(&sample["value"][0][k]), kind(&item[k]), "{k}");
    }
    assert_same_shape(&fixture("contact-get.json")["homeAddress"], &item["homeAddress"], "homeAddress", true);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn evicted_delta_token_answers_410_with_a_fresh_location() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    sim.new_contact(&folder, json!({"givenName": "A"})).await;
    let start = format!("/users/{ANNA}/contactFolders/{}/contacts/delta", enc(&folder));
    let (_, delta_link, _) = delta_round(&sim, &start, "odata.maxpagesize=10").await;
    sim.control("/delta/evict", json!({})).await;
    let a = sim.get(&delta_link).await;
    assert_graph_error(&a, StatusCode::GONE, "syncStateNotFound");
    let location = a.headers.get("location").unwrap().to_str().unwrap().to_string();
    assert!(location.ends_with("/contacts/delta"), "{location}");
    let (items, _, _) = delta_round(&sim, &location, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 1, "the Location starts a full round");
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- subscriptions and notifications

#[tokio::test]
async fn subscription_create_validates_the_endpoint_with_an_exact_echo() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    let resource = format!("/users/{ANNA}/contactFolders/{folder}/contacts");
    let good = Receiver::start(Echo::Exact).await;
    let a = subscribe(&sim, &resource, &good.url, None).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["resource"], json!(resource.trim_start_matches('/')));
    let mut sample = fixture("subscription-create-response.json");
    sample["clientState"] = json!("x");
    assert_same_shape(&sample, &a.body, "subscription", true);
    let token = good.tokens.lock().unwrap()[0].clone();
    assert!(token.contains(' ') && token.contains(':'), "token with spaces and colons: {token}");

    let bad = Receiver::start(Echo::Wrong).await;
    let a = subscribe(&sim, &resource, &bad.url, None).await;
    assert_graph_error(&a, StatusCode::BAD_REQUEST, "ValidationError");
    assert!(a.body["error"]["message"].as_str().unwrap().starts_with("Subscription validation request failed"));

    let a = subscribe(&sim, &resource, "http://example.com/hook", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let mut too_long = json!({"changeType": "created", "notificationUrl": good.url, "resource": resource,
                              "expirationDateTime": expiry_in(4231 + 5)});
    let refused = sim.post("/subscriptions", too_long.take()).await;
    assert_graph_error(&refused, StatusCode::BAD_REQUEST, "ExtensionError");
    assert_eq!(refused.body["error"]["message"], "Subscription expiration can only be 4230 minutes in the future.");
    // To Do tasks: app-only subscriptions exist (Tasks.ReadWrite.All, current permission table), on a list that exists.
    let todo = subscribe(&sim, &format!("users/{ANNA}/todo/lists/L1/tasks"), &good.url, None).await;
    assert_eq!(todo.status, StatusCode::NOT_FOUND, "no list L1: {:?}", todo.body);
    let me = subscribe(&sim, "me/todo/lists/L1/tasks", &good.url, None).await;
    assert_graph_error(&me, StatusCode::BAD_REQUEST, "ExtensionError");

    let id = sim.get("/subscriptions").await.body["value"][0]["id"].as_str().unwrap().to_string();
    let renewed = sim.patch(&format!("/subscriptions/{id}"), json!({"expirationDateTime": expiry_in(120)}), &[]).await;
    assert_eq!(renewed.status, StatusCode::OK);
    let immut = sim.patch(&format!("/subscriptions/{id}"), json!({"lifecycleNotificationUrl": good.url}), &[]).await;
    assert_eq!(immut.status, StatusCode::BAD_REQUEST);
    let reauth = sim.call(reqwest::Method::POST, &format!("/subscriptions/{id}/reauthorize"), None, &[]).await;
    assert_eq!(reauth.status, StatusCode::NO_CONTENT);
    assert_eq!(sim.delete(&format!("/subscriptions/{id}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(sim.get(&format!("/subscriptions/{id}")).await.status, StatusCode::NOT_FOUND);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn change_made_through_the_api_is_notified_with_client_state_and_query_kept() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    let mut rx = Receiver::start(Echo::Exact).await;
    let url = format!("{}?tenant=t1", rx.url);
    let sub = subscribe(&sim, &format!("users/{ANNA}/contactFolders/{folder}/contacts"), &url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let c = sim.new_contact(&folder, json!({"givenName": "Neu"})).await;

    let (query, body) = rx.next().await;
    assert_eq!(query.get("tenant").map(String::as_str), Some("t1"));
    assert_same_shape(&fixture("change-notification-basic.json"), &body, "notification", true);
    let n = &body["value"][0];
    assert_eq!(n["clientState"], "hqsync-secret-state");
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["subscriptionId"], sub.body["id"]);
    assert_eq!(n["resourceData"]["id"], c["id"]);
    assert_eq!(n["resourceData"]["@odata.etag"], c["@odata.etag"]);
    assert_eq!(n["tenantId"], sim.seed["tenantId"]);
    // A change outside the watched folder is not notified; one inside is.
    sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Elsewhere"})).await;
    let path = format!("/users/{ANNA}/contactFolders/{}/contacts/{}", enc(&folder), enc(c["id"].as_str().unwrap()));
    sim.delete(&path).await;
    let (_, body) = rx.next().await;
    assert_eq!(body["value"][0]["changeType"], "deleted");
    assert_eq!(body["value"][0]["resourceData"]["id"], c["id"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn lifecycle_events_are_sent_on_demand_and_subscription_removed_deletes_it() {
    let sim = TestSim::start().await;
    let hook = Receiver::start(Echo::Exact).await;
    let mut life = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, Some(&life.url)).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    assert_eq!(life.tokens.lock().unwrap().len(), 1, "lifecycle URL validated too");
    let id = sub.body["id"].as_str().unwrap().to_string();

    sim.control("/lifecycle", json!({"subscriptionId": id, "event": "reauthorizationRequired"})).await;
    let (_, body) = life.next().await;
    assert_same_shape(&fixture("lifecycle-notification.json"), &body, "lifecycle", true);
    assert_eq!(body["value"][0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(body["value"][0]["clientState"], "hqsync-secret-state");

    sim.control("/lifecycle", json!({"subscriptionId": id, "event": "subscriptionRemoved"})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "subscriptionRemoved");
    assert_eq!(sim.get(&format!("/subscriptions/{id}")).await.status, StatusCode::NOT_FOUND);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn dropped_notifications_are_announced_as_missed() {
    let sim = TestSim::start().await;
    let mut hook = Receiver::start(Echo::Exact).await;
    let mut life = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, Some(&life.url)).await;
    assert_eq!(sub.status, StatusCode::CREATED);
    sim.control("/faults", json!({"drop_notification_rate": 1.0})).await;
    sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Lost"})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "missed");
    assert!(hook.rx.try_recv().is_err());
    assert_eq!(sim.stats().await["notifications"]["dropped"], 1);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn subscription_expires_with_the_simulator_clock() {
    let sim = TestSim::start().await;
    let hook = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, None).await;
    let id = sub.body["id"].as_str().unwrap().to_string();
    sim.control("/clock", json!({"advanceMinutes": 121})).await;
    // Fresh token: the old one expired with the clock too.
    let mut sim = sim;
    let (_, t) = sim.token_request(None).await;
    sim.token = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(sim.get(&format!("/subscriptions/{id}")).await.status, StatusCode::NOT_FOUND);
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- throttling and $batch

#[tokio::test]
async fn fifth_concurrent_request_for_a_mailbox_is_throttled_with_fractional_retry_after() {
    let sim = TestSim::start().await;
    sim.control("/faults", json!({"latency_ms": 1500})).await;
    let path = format!("/users/{ANNA}/contactFolders");
    let answers = futures::future::join_all((0..5).map(|_| sim.get(&path))).await;
    let throttled: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(throttled.len(), 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let t = throttled[0];
    assert_graph_error(t, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    assert_eq!(t.body["error"]["innerError"]["status"], "429");
    let retry = t.headers.get("retry-after").unwrap().to_str().unwrap();
    assert!(retry.contains('.') && retry.parse::<f64>().unwrap() > 0.0, "{retry}");
    // Another mailbox is not affected.
    sim.control("/faults", json!({})).await;
    let stats = sim.stats().await;
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["maxConcurrent"][ANNA], 4);
    assert_eq!(stats["requests"]["GET /users/{user}/contactFolders"], 5);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn request_window_limit_throttles_per_mailbox() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        throttle_requests_per_window: 3,
        ..GraphSimConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(sim.get(&format!("/users/{ANNA}/contacts")).await.status, StatusCode::OK);
    }
    let a = sim.get(&format!("/users/{ANNA}/contacts")).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    sim.control("/policy", json!({"mailbox": BEN, "inScope": true})).await;
    assert_eq!(sim.get(&format!("/users/{BEN}/contacts")).await.status, StatusCode::OK);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn batch_with_duplicate_ids_is_refused_as_a_whole() {
    let sim = TestSim::start().await;
    let a = sim
        .post(
            "/$batch",
            json!({"requests": [
                {"id": "a", "method": "GET", "url": format!("/users/{ANNA}")},
                {"id": "A", "method": "GET", "url": format!("/users/{ANNA}/contacts")},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let too_many: Vec<Value> =
        (0..21).map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{ANNA}")})).collect();
    assert_eq!(sim.post("/$batch", json!({"requests": too_many})).await.status, StatusCode::BAD_REQUEST);
    let no_headers = json!({"requests": [{"id": "1", "method": "POST", "url": format!("/users/{ANNA}/contacts"), "body": {"givenName": "X"}}]});
    assert_eq!(sim.post("/$batch", no_headers).await.status, StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn batch_runs_items_through_the_api_answers_424_for_failed_dependencies_and_correlates_by_id() {
    let sim = TestSim::start().await;
    let h = json!({"Content-Type": "application/json"});
    let mut requests = vec![
        json!({"id": "create", "method": "POST", "url": format!("users/{ANNA}/contacts"), "headers": h, "body": {"givenName": "Batch"}}),
        json!({"id": "missing", "method": "GET", "url": format!("/users/{ANNA}/contacts/nope")}),
        json!({"id": "after-missing", "method": "GET", "url": format!("/users/{ANNA}"), "dependsOn": ["missing"]}),
        json!({"id": "after-create", "method": "GET", "url": format!("/users/{ANNA}/contacts?$top=5"), "dependsOn": ["create"]}),
    ];
    for i in 0..8 {
        requests.push(json!({"id": format!("u{i}"), "method": "GET", "url": format!("/users/{ANNA}")}));
    }
    let a = sim.post("/$batch", json!({"requests": requests})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let responses = a.body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 12);
    let by_id: HashMap<&str, &Value> = responses.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
    assert_eq!(by_id["create"]["status"], 201);
    assert_eq!(by_id["create"]["body"]["givenName"], "Batch");
    assert_eq!(by_id["missing"]["status"], 404);
    assert_eq!(by_id["missing"]["body"]["error"]["code"], "ErrorItemNotFound");
    assert_eq!(by_id["after-missing"]["status"], 424);
    assert_eq!(by_id["after-create"]["status"], 200);
    assert_eq!(by_id["after-create"]["body"]["value"][0]["givenName"], "Batch");
    for i in 0..8 {
        assert_eq!(by_id[format!("u{i}").as_str()]["body"]["userPrincipalName"], ANNA);
    }
    let ids: HashSet<&str> = by_id.keys().copied().collect();
    assert_eq!(ids.len(), 12);
    let stats = sim.stats().await;
    assert_eq!(stats["requests"]["POST /$batch"], 1);
    assert_eq!(stats["requests"]["GET /users/{user}"], 8, "{}", stats["requests"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn batch_responses_come_back_in_shuffled_order() {
    let sim = TestSim::start().await;
    let requests: Vec<Value> =
        (0..20).map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{ANNA}")})).collect();
    let mut orders = HashSet::new();
    for _ in 0..3 {
        let a = sim.post("/$batch", json!({"requests": requests.clone()})).await;
        let order: Vec<String> =
            a.body["responses"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        orders.insert(order);
    }
    // Three shuffles of 20 items coinciding has probability ~ (1/20!)^2.
    assert!(orders.len() > 1, "responses always in one order");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn demo_seed_has_the_agency_mailboxes_and_some_contacts() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = GraphSim::start(listener, GraphSimConfig::default()).await.unwrap();
    let seed: Value = reqwest::get(format!("{}/_sim/seed", sim.base_url())).await.unwrap().json().await.unwrap();
    let upns: Vec<&str> =
        seed["mailboxes"].as_array().unwrap().iter().map(|m| m["userPrincipalName"].as_str().unwrap()).collect();
    assert_eq!(
        upns,
        ["anna.schmidt", "ben.mueller", "clara.wagner", "david.fischer"].map(|u| format!("{u}@agentur-beispiel.de"))
    );
    let stats: Value = reqwest::get(format!("{}/_sim/stats", sim.base_url())).await.unwrap().json().await.unwrap();
    assert!(stats["items"][ANNA]["contacts"].as_u64().unwrap() > 0);
    assert!(stats["items"][ANNA]["events"].as_u64().unwrap() > 0);
    sim.shutdown().await;
}

// ---------------------------------------------------------------- events (tier 2)

fn meeting(subject: &str, day: u32, hour: u32) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": "<p>Agenda</p>"},
        "start": {"dateTime": format!("2026-05-{day:02}T{hour:02}:00:00"), "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": format!("2026-05-{day:02}T{:02}:30:00", hour + 1), "timeZone": "W. Europe Standard Time"},
        "location": {"displayName": "Besprechungsraum 1"},
    })
}

#[tokio::test]
async fn event_times_are_stored_as_instants_and_rendered_in_the_preferred_zone() {
    let sim = TestSim::start().await;
    let created = sim.post(&format!("/users/{ANNA}/events"), meeting("Kickoff", 4, 10)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let e = &created.body;
    assert_eq!(e["start"], json!({"dateTime": "2026-05-04T08:00:00.0000000", "timeZone": "UTC"}));
    assert_eq!(e["originalStartTimeZone"], "W. Europe Standard Time");
    assert_eq!(e["type"], "singleInstance");
    assert_eq!(e["isOrganizer"], true);
    assert_eq!(e["locations"][0]["displayName"], "Besprechungsraum 1");
    assert_eq!(e["bodyPreview"], "Agenda");
    let path = format!("/users/{ANNA}/calendar/events/{}", enc(e["id"].as_str().unwrap()));
    let local = sim
        .call(reqwest::Method::GET, &path, None, &[("Prefer", "outlook.timezone=\"W. Europe Standard Time\"")])
        .await;
    assert_eq!(
        local.body["start"],
        json!({"dateTime": "2026-05-04T10:00:00.0000000", "timeZone": "W. Europe Standard Time"})
    );
    assert_eq!(
        local.headers.get("preference-applied").unwrap().to_str().unwrap(),
        "outlook.timezone=\"W. Europe Standard Time\""
    );
    // IANA input names the same instant.
    let iana = sim
        .patch(
            &path,
            json!({"start": {"dateTime": "2026-05-04T11:00:00", "timeZone": "Europe/Berlin"}}),
            &[("If-Match", e["@odata.etag"].as_str().unwrap())],
        )
        .await;
    assert_eq!(iana.status, StatusCode::OK, "{}", iana.body);
    assert_eq!(iana.body["start"]["dateTime"], "2026-05-04T09:00:00.0000000");
    assert_ne!(iana.body["changeKey"], e["changeKey"]);
    let stale = sim.patch(&path, json!({"subject": "x"}), &[("If-Match", e["@odata.etag"].as_str().unwrap())]).await;
    assert_graph_error(&stale, StatusCode::PRECONDITION_FAILED, "ErrorIrresolvableConflict");
    let sample = fixture("event-delta-initial-page-nextLink.json");
    let mut item = sample["value"][0].clone();
    item.as_object_mut().unwrap().remove("@odata.type");
    assert_same_shape(&item, &local.body, "event", false);
    assert_eq!(sim.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_graph_error(&sim.get(&path).await, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    assert_graph_error(&sim.get(&format!("/users/{BEN}/events")).await, StatusCode::FORBIDDEN, "ErrorAccessDenied");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn event_post_with_a_known_transaction_id_returns_the_first_event() {
    let sim = TestSim::start().await;
    let mut body = meeting("Einmal", 5, 9);
    body["transactionId"] = json!("7E163156-7762-4BEB-A1C6-729EA81755A7");
    let first = sim.post(&format!("/users/{ANNA}/events"), body.clone()).await;
    let second = sim.post(&format!("/users/{ANNA}/events"), body).await;
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(first.body["transactionId"], "7E163156-7762-4BEB-A1C6-729EA81755A7");
    let list = sim.get(&format!("/users/{ANNA}/events")).await;
    assert_eq!(list.body["value"].as_array().unwrap().len(), 1);
    let plain = sim.post(&format!("/users/{ANNA}/events"), meeting("Ohne", 6, 9)).await;
    assert!(plain.body.get("transactionId").is_none());
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn attendee_mailbox_gets_its_own_copy_with_the_same_ical_uid_and_a_notification() {
    let sim = TestSim::start().await;
    let mut rx = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{CLARA}/events"), &rx.url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let mut body = meeting("Abstimmung", 7, 14);
    body["attendees"] = json!([{"type": "required", "emailAddress": {"name": "Clara Wagner", "address": CLARA}}]);
    let org = sim.post(&format!("/users/{ANNA}/events"), body).await;
    assert_eq!(org.status, StatusCode::CREATED);
    let (_, note) = rx.next().await;
    assert_eq!(note["value"][0]["changeType"], "created");
    let copy_id = note["value"][0]["resourceData"]["id"].as_str().unwrap().to_string();
    assert_ne!(copy_id, org.body["id"].as_str().unwrap());
    let copy = sim.get(&format!("/users/{CLARA}/events/{}", enc(&copy_id))).await;
    assert_eq!(copy.body["iCalUId"], org.body["iCalUId"]);
    assert_eq!(copy.body["isOrganizer"], false);
    assert_eq!(copy.body["organizer"]["emailAddress"]["address"], ANNA);
    assert_eq!(copy.body["responseStatus"]["response"], "notResponded");

    let path = format!("/users/{ANNA}/events/{}", enc(org.body["id"].as_str().unwrap()));
    sim.patch(&path, json!({"subject": "Abstimmung (verschoben)"}), &[]).await;
    let (_, note) = rx.next().await;
    assert_eq!(note["value"][0]["changeType"], "updated");
    let copy = sim.get(&format!("/users/{CLARA}/events/{}", enc(&copy_id))).await;
    assert_eq!(copy.body["subject"], "Abstimmung (verschoben)");
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- attendee responses

impl Receiver {
    /// Waits for a notification item with this change type and resource id (earlier ones are skipped).
    async fn wait_for(&mut self, change: &str, id: &str) -> Value {
        loop {
            let (_, body) = self.next().await;
            let items = body["value"].as_array().cloned().unwrap_or_default();
            if let Some(n) = items.into_iter().find(|n| n["changeType"] == change && n["resourceData"]["id"] == id) {
                return n;
            }
        }
    }
}

/// Anna organizes a meeting with Clara; both mailboxes are subscribed.
/// Returns (Anna's receiver, Clara's receiver, organizer event, Clara's copy id).
async fn meeting_with_clara(sim: &TestSim, body: Value) -> (Receiver, Receiver, Value, String) {
    let anna_rx = Receiver::start(Echo::Exact).await;
    let mut clara_rx = Receiver::start(Echo::Exact).await;
    for (mb, rx) in [(ANNA, &anna_rx), (CLARA, &clara_rx)] {
        let sub = subscribe(sim, &format!("users/{mb}/events"), &rx.url, None).await;
        assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    }
    let mut body = body;
    body["attendees"] = json!([{"type": "required", "emailAddress": {"name": "Clara Wagner", "address": CLARA}}]);
    let org = sim.post(&format!("/users/{ANNA}/events"), body).await;
    assert_eq!(org.status, StatusCode::CREATED, "{}", org.body);
    let (_, note) = clara_rx.next().await;
    assert_eq!(note["value"][0]["changeType"], "created");
    let copy_id = note["value"][0]["resourceData"]["id"].as_str().unwrap().to_string();
    (anna_rx, clara_rx, org.body, copy_id)
}

#[tokio::test]
async fn accepting_an_attendee_copy_updates_the_organizers_attendee_status_and_notifies_both_mailboxes() {
    let sim = TestSim::start().await;
    let (mut anna_rx, mut clara_rx, org, copy_id) = meeting_with_clara(&sim, meeting("Abstimmung", 7, 14)).await;
    let org_id = org["id"].as_str().unwrap().to_string();
    let org_path = format!("/users/{ANNA}/events/{}", enc(&org_id));
    let copy_path = format!("/users/{CLARA}/events/{}", enc(&copy_id));
    let copy_before = sim.get(&copy_path).await.body;
    assert_eq!(org["attendees"][0]["status"]["response"], "none");

    let a = sim.post(&format!("{copy_path}/accept"), json!({"comment": "Gern", "sendResponse": true})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_eq!(a.body, Value::Null, "202 without a body");

    let n = clara_rx.wait_for("updated", &copy_id).await;
    let copy = sim.get(&copy_path).await.body;
    assert_eq!(n["resourceData"]["@odata.etag"], copy["@odata.etag"]);
    assert_eq!(copy["responseStatus"]["response"], "accepted");
    assert_ne!(copy["responseStatus"]["time"], "0001-01-01T00:00:00Z");
    assert_ne!(copy["changeKey"], copy_before["changeKey"]);
    let n = anna_rx.wait_for("updated", &org_id).await;
    let after = sim.get(&org_path).await.body;
    assert_eq!(n["resourceData"]["@odata.etag"], after["@odata.etag"]);
    assert_eq!(after["attendees"][0]["status"]["response"], "accepted");
    assert_ne!(after["attendees"][0]["status"]["time"], "0001-01-01T00:00:00Z");
    assert_ne!(after["changeKey"], org["changeKey"]);
    assert_eq!(after["responseStatus"]["response"], "organizer");

    // The organizer rewriting the attendee list keeps the answers of those who stay on it.
    let both = json!([
        {"type": "required", "emailAddress": {"name": "Clara Wagner", "address": CLARA}},
        {"type": "optional", "emailAddress": {"name": "Extern", "address": "extern@example.org"}},
    ]);
    let patched = sim.patch(&org_path, json!({"attendees": both}), &[]).await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["attendees"][0]["status"]["response"], "accepted");
    assert_eq!(patched.body["attendees"][1]["status"]["response"], "none");
    assert_eq!(sim.get(&copy_path).await.body["responseStatus"]["response"], "accepted");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn declining_without_sending_a_response_leaves_the_organizers_event_unchanged() {
    let sim = TestSim::start().await;
    let (_anna_rx, mut clara_rx, org, copy_id) = meeting_with_clara(&sim, meeting("Abstimmung", 7, 14)).await;
    let org_path = format!("/users/{ANNA}/events/{}", enc(org["id"].as_str().unwrap()));
    let copy_path = format!("/users/{CLARA}/events/{}", enc(&copy_id));

    // A proposal needs the response to be sent (documented 400); accept takes no proposal at all.
    let slot = json!({"start": {"dateTime": "2026-05-08T14:00:00", "timeZone": "W. Europe Standard Time"},
                      "end": {"dateTime": "2026-05-08T15:00:00", "timeZone": "W. Europe Standard Time"}});
    let refused =
        sim.post(&format!("{copy_path}/decline"), json!({"sendResponse": false, "proposedNewTime": slot})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let refused = sim.post(&format!("{copy_path}/accept"), json!({"proposedNewTime": slot})).await;
    assert_graph_error(&refused, StatusCode::BAD_REQUEST, "RequestBodyRead");

    let d = sim.post(&format!("{copy_path}/decline"), json!({"comment": "Leider nicht", "sendResponse": false})).await;
    assert_eq!(d.status, StatusCode::ACCEPTED, "{}", d.body);
    clara_rx.wait_for("updated", &copy_id).await;
    assert_eq!(sim.get(&copy_path).await.body["responseStatus"]["response"], "declined");
    let after = sim.get(&org_path).await.body;
    assert_eq!(after["changeKey"], org["changeKey"]);
    assert_eq!(after["attendees"][0]["status"], org["attendees"][0]["status"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn organizer_cannot_answer_their_own_meeting() {
    let sim = TestSim::start().await;
    let mut body = meeting("Abstimmung", 7, 14);
    body["attendees"] = json!([{"type": "required", "emailAddress": {"name": "Clara Wagner", "address": CLARA}}]);
    let org = sim.post(&format!("/users/{ANNA}/events"), body).await;
    let org_path = format!("/users/{ANNA}/events/{}", enc(org.body["id"].as_str().unwrap()));
    let a = sim.post(&format!("{org_path}/accept"), json!({"sendResponse": true})).await;
    assert_graph_error(&a, StatusCode::BAD_REQUEST, "ErrorCalendarIsOrganizerForAccept");
    let t = sim.post(&format!("{org_path}/tentativelyAccept"), json!({})).await;
    assert_graph_error(&t, StatusCode::BAD_REQUEST, "ErrorCalendarIsOrganizerForTentative");
    let after = sim.get(&org_path).await.body;
    assert_eq!(after["changeKey"], org.body["changeKey"]);
    assert_eq!(after["responseStatus"]["response"], "organizer");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn answering_an_unknown_event_is_item_not_found() {
    let sim = TestSim::start().await;
    let a = sim.post(&format!("/users/{CLARA}/events/{}/accept", enc("AAMkAGnope=")), json!({})).await;
    assert_graph_error(&a, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    let d = sim.post(&format!("/users/{CLARA}/calendar/events/{}/decline", enc("AAMkAGnope=")), json!({})).await;
    assert_graph_error(&d, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn answering_one_occurrence_changes_only_that_occurrence_on_both_sides() {
    let sim = TestSim::start().await;
    let mut body = meeting("Jour fixe", 4, 10);
    body["recurrence"] = json!({
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
        "range": {"type": "numbered", "startDate": "2026-05-04", "numberOfOccurrences": 3,
                  "recurrenceTimeZone": "W. Europe Standard Time"},
    });
    let (mut anna_rx, mut clara_rx, org, copy_id) = meeting_with_clara(&sim, body).await;
    let window = "startDateTime=2026-05-01T00:00:00Z&endDateTime=2026-05-31T00:00:00Z";
    let instances = |mb: &'static str, id: String| {
        let sim = &sim;
        async move {
            let a = sim.get(&format!("/users/{mb}/events/{}/instances?{window}", enc(&id))).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            a.body["value"].as_array().unwrap().clone()
        }
    };
    let org_before = instances(ANNA, org["id"].as_str().unwrap().to_string()).await;
    let copy_occ = instances(CLARA, copy_id.clone()).await;
    assert_eq!(copy_occ.len(), 3);
    let second = copy_occ[1]["id"].as_str().unwrap().to_string();

    let t = sim.post(&format!("/users/{CLARA}/events/{}/tentativelyAccept", enc(&second)), json!({})).await;
    assert_eq!(t.status, StatusCode::ACCEPTED, "{}", t.body);
    clara_rx.wait_for("updated", &second).await;
    let org_second = org_before[1]["id"].as_str().unwrap().to_string();
    anna_rx.wait_for("updated", &org_second).await;

    let copy_after = instances(CLARA, copy_id.clone()).await;
    let answers: Vec<&str> = copy_after.iter().map(|o| o["responseStatus"]["response"].as_str().unwrap()).collect();
    assert_eq!(answers, ["notResponded", "tentativelyAccepted", "notResponded"]);
    let org_after = instances(ANNA, org["id"].as_str().unwrap().to_string()).await;
    let statuses: Vec<&str> =
        org_after.iter().map(|o| o["attendees"][0]["status"]["response"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["none", "tentativelyAccepted", "none"]);
    assert_ne!(org_after[1]["changeKey"], org_before[1]["changeKey"]);
    assert_eq!(org_after[0]["changeKey"], org_before[0]["changeKey"]);
    // The series itself is still unanswered on both sides.
    let master_copy = sim.get(&format!("/users/{CLARA}/events/{}", enc(&copy_id))).await.body;
    assert_eq!(master_copy["responseStatus"]["response"], "notResponded");
    let master_org = sim.get(&format!("/users/{ANNA}/events/{}", enc(org["id"].as_str().unwrap()))).await.body;
    assert_eq!(master_org["attendees"][0]["status"]["response"], "none");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn calendar_view_delta_reports_changes_removals_and_window_exits_then_resets_with_410() {
    let sim = TestSim::start().await;
    let mut ids = Vec::new();
    for day in [4, 5, 6] {
        let e = sim.post(&format!("/users/{ANNA}/events"), meeting(&format!("T{day}"), day, 9)).await;
        ids.push(e.body["id"].as_str().unwrap().to_string());
    }
    sim.post(&format!("/users/{ANNA}/events"), meeting("Später", 28, 9)).await;
    let view = sim
        .get(&format!("/users/{ANNA}/calendarView?startDateTime=2026-05-01T00:00:00Z&endDateTime=2026-05-10T00:00:00Z"))
        .await;
    assert_eq!(view.body["value"].as_array().unwrap().len(), 3);
    let missing = sim.get(&format!("/users/{ANNA}/calendarView")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);

    let start =
        format!("/users/{ANNA}/calendarView/delta?startDateTime=2026-05-01T00:00:00Z&endDateTime=2026-05-10T00:00:00Z");
    let (items, delta_link, pages) = delta_round(&sim, &start, "odata.maxpagesize=2").await;
    assert_eq!((items.len(), pages), (3, 2));
    assert_eq!(items[0]["@odata.type"], "#microsoft.graph.event");

    let epath = |id: &str| format!("/users/{ANNA}/events/{}", enc(id));
    sim.patch(&epath(&ids[0]), json!({"subject": "Geändert"}), &[]).await;
    sim.delete(&epath(&ids[1])).await;
    let moved = json!({"start": {"dateTime": "2026-06-01T09:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-06-01T10:00:00", "timeZone": "UTC"}});
    sim.patch(&epath(&ids[2]), moved, &[]).await;
    let (items, _, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 3, "{items:?}");
    let by_id = |id: &str| items.iter().find(|i| i["id"] == json!(id)).unwrap().clone();
    assert_eq!(by_id(&ids[0])["subject"], "Geändert");
    assert_eq!(by_id(&ids[1])["@removed"]["reason"], "deleted");
    assert!(by_id(&ids[2]).get("@removed").is_some(), "left the window");

    sim.control("/delta/evict", json!({})).await;
    let gone = sim.get(&delta_link).await;
    assert_graph_error(&gone, StatusCode::GONE, "syncStateNotFound");
    let location = gone.headers.get("location").unwrap().to_str().unwrap();
    assert!(location.contains("startDateTime=2026-05-01T00:00:00Z"), "{location}");
    let (items, _, _) = delta_round(&sim, location, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 1, "only the changed event is still in the window");
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- To Do (tier 2)

#[tokio::test]
async fn todo_tasks_round_trip_with_linked_resources_extensions_and_delta() {
    let sim = TestSim::start().await;
    // To Do ignores the application access policy: Ben is out of scope.
    let lists = sim.get(&format!("/users/{BEN}/todo/lists")).await;
    assert_eq!(lists.status, StatusCode::OK, "{}", lists.body);
    assert_eq!(lists.body["value"][0]["wellknownListName"], "defaultList");
    let list = sim.post(&format!("/users/{BEN}/todo/lists"), json!({"displayName": "helloHQ"})).await;
    assert_eq!(list.status, StatusCode::CREATED);
    let lid = list.body["id"].as_str().unwrap().to_string();
    let tasks = format!("/users/{BEN}/todo/lists/{}/tasks", enc(&lid));

    let created = sim
        .post(
            &tasks,
            json!({"title": "A new task", "importance": "low",
                   "linkedResources": [{"webUrl": "http://microsoft.com", "applicationName": "Microsoft", "displayName": "Microsoft"}]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_same_shape(&fixture("todotask-create-response.json"), &created.body, "todoTask", false);
    let tid = created.body["id"].as_str().unwrap().to_string();
    let tpath = format!("{tasks}/{}", enc(&tid));

    let refused =
        sim.patch(&tpath, json!({"singleValueExtendedProperties": [{"id": "String 0x3A24", "value": "1"}]}), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let (_, delta_link, _) = delta_round(&sim, &format!("{tasks}/delta"), "odata.maxpagesize=10").await;
    let done = sim
        .patch(&tpath, json!({"status": "completed", "dueDateTime": {"dateTime": "2026-05-04T00:00:00", "timeZone": "W. Europe Standard Time"}}), &[])
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["dueDateTime"], json!({"dateTime": "2026-05-03T22:00:00.0000000", "timeZone": "UTC"}));
    assert!(done.body["completedDateTime"]["dateTime"].is_string());
    let bad_status = sim.patch(&tpath, json!({"status": "done"}), &[]).await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);

    let ext = sim
        .post(
            &format!("{tpath}/extensions"),
            json!({"@odata.type": "#microsoft.graph.openTypeExtension", "extensionName": "io.hqsync.task", "percentDone": 40, "plannedEffortHours": 2.5}),
        )
        .await;
    assert_eq!(ext.status, StatusCode::CREATED, "{}", ext.body);
    let upd = sim.patch(&format!("{tpath}/extensions/io.hqsync.task"), json!({"percentDone": 80}), &[]).await;
    assert_eq!(upd.status, StatusCode::OK);
    let got = sim.get(&format!("{tpath}?$expand=extensions($filter=id%20eq%20'io.hqsync.task')")).await;
    assert_eq!(got.body["extensions"][0]["percentDone"], 80);
    assert_eq!(got.body["extensions"][0]["plannedEffortHours"], 2.5);

    let (items, _, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "completed");
    assert_eq!(sim.delete(&tpath).await.status, StatusCode::NO_CONTENT);
    assert_graph_error(&sim.get(&tpath).await, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    let lists_delta = sim.get(&format!("/users/{BEN}/todo/lists/delta")).await;
    assert_eq!(lists_delta.body["value"].as_array().unwrap().len(), 2);
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- recurrence (tier 3)

#[tokio::test]
async fn weekly_series_expands_into_occurrences_with_exceptions_and_cancellations() {
    let sim = TestSim::start().await;
    let mut body = meeting("Jour fixe", 4, 10);
    body["recurrence"] = json!({
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"], "firstDayOfWeek": "monday"},
        "range": {"type": "noEnd", "startDate": "2026-05-04", "recurrenceTimeZone": "W. Europe Standard Time"},
    });
    let master = sim.post(&format!("/users/{ANNA}/events"), body.clone()).await;
    assert_eq!(master.status, StatusCode::CREATED, "{}", master.body);
    assert_eq!(master.body["type"], "seriesMaster");
    let rec = &master.body["recurrence"];
    assert_eq!(rec["range"]["endDate"], "0001-01-01");
    assert_eq!(rec["range"]["numberOfOccurrences"], 0);
    assert_eq!(rec["pattern"]["dayOfMonth"], 0);
    assert_eq!(rec["pattern"]["index"], "first");

    let mut wrong = body.clone();
    wrong["recurrence"]["range"]["startDate"] = json!("2026-05-05");
    assert_eq!(sim.post(&format!("/users/{ANNA}/events"), wrong).await.status, StatusCode::BAD_REQUEST);
    let mut foreign = body.clone();
    foreign["recurrence"]["pattern"]["dayOfMonth"] = json!(4);
    assert_eq!(sim.post(&format!("/users/{ANNA}/events"), foreign).await.status, StatusCode::BAD_REQUEST);

    let mid = master.body["id"].as_str().unwrap().to_string();
    let window = "startDateTime=2026-05-01T00:00:00Z&endDateTime=2026-05-15T00:00:00Z";
    let inst = sim.get(&format!("/users/{ANNA}/events/{}/instances?{window}", enc(&mid))).await;
    assert_eq!(inst.status, StatusCode::OK, "{}", inst.body);
    let occ = inst.body["value"].as_array().unwrap().clone();
    let starts: Vec<&str> = occ.iter().map(|o| o["start"]["dateTime"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        [
            "2026-05-04T08:00:00.0000000",
            "2026-05-06T08:00:00.0000000",
            "2026-05-11T08:00:00.0000000",
            "2026-05-13T08:00:00.0000000"
        ]
    );
    let uids: HashSet<&str> = occ.iter().map(|o| o["iCalUId"].as_str().unwrap()).collect();
    assert_eq!(uids.len(), 4, "each occurrence has its own iCalUId");
    assert!(occ.iter().all(|o| o["type"] == "occurrence" && o["seriesMasterId"] == json!(mid)));

    let (_, delta_link, _) =
        delta_round(&sim, &format!("/users/{ANNA}/calendarView/delta?{window}"), "odata.maxpagesize=10").await;

    // PATCH an occurrence: it becomes an exception.
    let second = occ[1]["id"].as_str().unwrap().to_string();
    let ex = sim
        .patch(&format!("/users/{ANNA}/events/{}", enc(&second)), json!({"subject": "Jour fixe (Raum 2)"}), &[])
        .await;
    assert_eq!(ex.status, StatusCode::OK, "{}", ex.body);
    assert_eq!(ex.body["type"], "exception");
    assert_eq!(ex.body["originalStart"], "2026-05-06T08:00:00Z");
    // DELETE an occurrence: that date is cancelled.
    let third = occ[2]["id"].as_str().unwrap().to_string();
    assert_eq!(sim.delete(&format!("/users/{ANNA}/events/{}", enc(&third))).await.status, StatusCode::NO_CONTENT);
    assert_eq!(sim.get(&format!("/users/{ANNA}/events/{}", enc(&third))).await.status, StatusCode::NOT_FOUND);

    let view = sim.get(&format!("/users/{ANNA}/calendarView?{window}")).await;
    let subjects: Vec<&str> =
        view.body["value"].as_array().unwrap().iter().map(|o| o["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["Jour fixe", "Jour fixe (Raum 2)", "Jour fixe"]);

    let (items, _, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=10").await;
    let removed: Vec<&Value> = items.iter().filter(|i| i.get("@removed").is_some()).collect();
    assert_eq!(removed.len(), 1, "{items:?}");
    assert_eq!(removed[0]["id"], json!(third));
    assert!(items.iter().any(|i| i["id"] == json!(second) && i["type"] == "exception"));
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- Microsoft's Python SDK (tier 4)

fn sdk_python() -> Option<std::path::PathBuf> {
    let venv = std::env::var("HQSYNC_PY_VENV").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hqsync-py")
    });
    let python = venv.join("bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import msgraph, azure.identity"])
        .output()
        .is_ok_and(|o| o.status.success());
    ready.then_some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_graph_sdk_works_against_the_simulator() {
    let Some(python) = sdk_python() else {
        common::service_missing("Python Graph SDK venv", "bash .ci/python-sdk-env.sh");
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = GraphSim::start(listener, GraphSimConfig::default()).await.unwrap();
    let script = format!("{}/tests/sdk/graph_sdk_check.py", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::process::Command::new(python).arg(script).arg(sim.base_url()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("SDK check hung").unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("SDK CHECK OK"), "stdout:\n{stdout}\nstderr:\n{stderr}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------- more delivery, limits and batch throttling

#[tokio::test]
async fn failed_notification_posts_are_retried_until_accepted() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        notification_retry_base: Duration::from_millis(20),
        ..GraphSimConfig::default()
    })
    .await;
    let mut rx = Receiver::start_with(Echo::Exact, 2, Duration::ZERO).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &rx.url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED);
    sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Retry"})).await;
    let (_, body) = rx.next().await;
    assert_eq!(body["value"][0]["changeType"], "created");
    // The receiver records the POST before answering it: wait for the simulator to count the answer.
    let stats = sim.stats_until("the accepted post counted", |st| st["notifications"]["sent"] == 1).await;
    assert_eq!(stats["notifications"]["failedAttempts"], 2);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn slow_validation_answer_fails_the_create_as_timed_out() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        validation_timeout: Duration::from_millis(200),
        ..GraphSimConfig::default()
    })
    .await;
    let slow = Receiver::start_with(Echo::Exact, 0, Duration::from_secs(3)).await;
    let a = subscribe(&sim, &format!("users/{ANNA}/contacts"), &slow.url, None).await;
    assert_graph_error(&a, StatusCode::BAD_REQUEST, "ValidationError");
    assert_eq!(a.body["error"]["message"], "Subscription validation request timed out.");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn subscriptions_per_mailbox_are_capped() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        max_subscriptions_per_mailbox: 1,
        ..GraphSimConfig::default()
    })
    .await;
    let hook = Receiver::start(Echo::Exact).await;
    assert_eq!(subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, None).await.status, StatusCode::CREATED);
    let capped = subscribe(&sim, &format!("users/{ANNA}/events"), &hook.url, None).await;
    assert_graph_error(&capped, StatusCode::FORBIDDEN, "ExtensionError");
    assert!(capped.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Maximum number of subscriptions has been reached"));
    assert_eq!(subscribe(&sim, &format!("users/{CLARA}/events"), &hook.url, None).await.status, StatusCode::CREATED);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn throttled_batch_items_carry_their_own_retry_after() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        throttle_requests_per_window: 2,
        ..GraphSimConfig::default()
    })
    .await;
    let requests: Vec<Value> = (0..5)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": format!("/users/{ANNA}/contacts")}))
        .collect();
    let a = sim.post("/$batch", json!({"requests": requests})).await;
    assert_eq!(a.status, StatusCode::OK);
    let items = a.body["responses"].as_array().unwrap();
    let throttled: Vec<&Value> = items.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(throttled.len(), 3);
    for t in throttled {
        let retry = t["headers"]["retry-after"].as_str().expect("Retry-After on the item");
        assert!(retry.parse::<f64>().unwrap() > 0.0);
        assert_eq!(t["body"]["error"]["code"], "TooManyRequests");
    }
    assert_eq!(items.iter().filter(|r| r["status"] == 200).count(), 2);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn contact_folder_delta_reports_new_renamed_and_deleted_folders() {
    let sim = TestSim::start().await;
    let keep = sim.new_folder("HQ Globale Kontakte").await;
    let gone = sim.new_folder("Alt").await;
    let start = format!("/users/{ANNA}/contactFolders/delta");
    let (items, delta_link, _) = delta_round(&sim, &start, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["@odata.type"], "#microsoft.graph.contactFolder");
    let renamed =
        sim.patch(&format!("/users/{ANNA}/contactFolders/{}", enc(&keep)), json!({"displayName": "HQ"}), &[]).await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(
        sim.delete(&format!("/users/{ANNA}/contactFolders/{}", enc(&gone))).await.status,
        StatusCode::NO_CONTENT
    );
    let (items, _, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=10").await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(items.iter().any(|i| i["id"] == json!(keep) && i["displayName"] == "HQ"));
    assert!(items.iter().any(|i| i["id"] == json!(gone) && i["@removed"]["reason"] == "deleted"));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn items_are_found_by_their_extended_property_value() {
    let sim = TestSim::start().await;
    let tag = |v: &str| json!([{"id": "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name hqId", "value": v}]);
    let mut a = json!({"givenName": "A"});
    a["singleValueExtendedProperties"] = tag("hq-1");
    let mut b = json!({"givenName": "B"});
    b["singleValueExtendedProperties"] = tag("hq-2");
    sim.post(&format!("/users/{ANNA}/contacts"), a).await;
    sim.post(&format!("/users/{ANNA}/contacts"), b).await;
    let filter = "$filter=singleValueExtendedProperties/any(ep:%20ep/id%20eq%20'String%20{66f5a359-4659-4830-9070-00047ec6ac6e}%20Name%20hqId'%20and%20ep/value%20eq%20'hq-2')";
    let found = sim.get(&format!("/users/{ANNA}/contacts?{filter}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    let names: Vec<&str> =
        found.body["value"].as_array().unwrap().iter().map(|c| c["givenName"].as_str().unwrap()).collect();
    assert_eq!(names, ["B"]);

    let mut e = meeting("Getaggt", 4, 9);
    e["singleValueExtendedProperties"] = tag("hq-9");
    let created = sim.post(&format!("/users/{ANNA}/events"), e).await;
    sim.post(&format!("/users/{ANNA}/events"), meeting("Ohne Tag", 5, 9)).await;
    let found = sim.get(&format!("/users/{ANNA}/events?{}", filter.replace("hq-2", "hq-9"))).await;
    assert_eq!(found.body["value"].as_array().unwrap().len(), 1);
    assert_eq!(found.body["value"][0]["id"], created.body["id"]);
    let expanded = sim
        .get(&format!(
            "/users/{ANNA}/events/{}?$expand=singleValueExtendedProperties($filter=id%20eq%20'String%20{{66f5a359-4659-4830-9070-00047ec6ac6e}}%20Name%20hqId')",
            enc(created.body["id"].as_str().unwrap())
        ))
        .await;
    assert_eq!(expanded.body["singleValueExtendedProperties"][0]["value"], "hq-9");
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- simulator gaps: lifecycle, shapes, slow endpoints

impl TestSim {
    /// A fresh bearer: tokens expire with the simulator clock too.
    async fn refresh_token(&mut self) {
        let (status, t) = self.token_request(None).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        self.token = t["access_token"].as_str().unwrap().to_string();
    }

    fn mailbox_id(&self, upn: &str) -> String {
        let mbs = self.seed["mailboxes"].as_array().unwrap();
        let mb = mbs.iter().find(|m| m["userPrincipalName"] == upn).unwrap();
        mb["id"].as_str().unwrap().to_string()
    }

    /// Polls `/_sim/stats` until `cond` holds (a condition, not a time, is asserted).
    async fn stats_until(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let st = self.stats().await;
            if cond(&st) {
                return st;
            }
            assert!(tokio::time::Instant::now() < deadline, "never reached: {what}: {st}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn subscription_near_expiry_gets_repeated_reauthorization_required_then_subscription_removed() {
    let mut sim = TestSim::start().await;
    let mut hook = Receiver::start(Echo::Exact).await;
    let mut life = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, Some(&life.url)).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let id = sub.body["id"].as_str().unwrap().to_string();

    // 120 minutes to go: 61 later, the subscription is inside its last hour.
    sim.control("/clock", json!({"advanceMinutes": 61})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(body["value"][0]["subscriptionId"], json!(id));
    assert_eq!(body["value"][0]["clientState"], "hqsync-secret-state");

    // Near expiry the subscription is still valid: changes keep flowing.
    sim.refresh_token().await;
    let c = sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Still"})).await;
    assert_eq!(c.status, StatusCode::CREATED);
    let (_, body) = hook.next().await;
    assert_eq!(body["value"][0]["resourceData"]["id"], c.body["id"]);

    // Not renewed: the reminder repeats after the repeat interval ...
    sim.control("/clock", json!({"advanceMinutes": 15})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "reauthorizationRequired");

    // ... and at expiry the subscription is deleted and announced.
    sim.control("/clock", json!({"advanceMinutes": 60})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "subscriptionRemoved");
    assert_eq!(body["value"][0]["subscriptionId"], json!(id));
    sim.refresh_token().await;
    assert_eq!(sim.get(&format!("/subscriptions/{id}")).await.status, StatusCode::NOT_FOUND);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn renewed_subscription_is_not_reminded_until_it_nears_its_new_expiry() {
    let mut sim = TestSim::start().await;
    let hook = Receiver::start(Echo::Exact).await;
    let mut life = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, Some(&life.url)).await;
    let id = sub.body["id"].as_str().unwrap().to_string();
    sim.control("/clock", json!({"advanceMinutes": 61})).await;
    assert_eq!(life.next().await.1["value"][0]["lifecycleEvent"], "reauthorizationRequired");

    // Renew to 3 hours ahead of the simulator clock, then let 2 of them pass:
    // the next lifecycle event must be the reminder of the new last hour.
    let now: Value = sim.control("/clock", json!({"advanceMinutes": 0})).await;
    let now = chrono::DateTime::parse_from_rfc3339(now["now"].as_str().unwrap()).unwrap();
    let new_expiry = (now + chrono::Duration::minutes(180)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    sim.refresh_token().await;
    let renewed = sim.patch(&format!("/subscriptions/{id}"), json!({"expirationDateTime": new_expiry}), &[]).await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.body);
    // 150 minutes left: outside the last hour, so the next event is the one asked for here.
    sim.control("/clock", json!({"advanceMinutes": 30})).await;
    sim.control("/lifecycle", json!({"subscriptionId": id, "event": "missed"})).await;
    assert_eq!(life.next().await.1["value"][0]["lifecycleEvent"], "missed");
    sim.control("/clock", json!({"advanceMinutes": 91})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(body["value"][0]["subscriptionExpirationDateTime"].as_str().unwrap()[..19], new_expiry[..19]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn notification_resource_and_odata_type_take_the_shape_the_faults_force() {
    let sim = TestSim::start().await;
    let mut hook = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/events"), &hook.url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let mb = sim.mailbox_id(ANNA);

    sim.control("/faults", json!({"notification_resource_style": "odata", "notification_type_casing": "camel"})).await;
    let e = sim.post(&format!("/users/{ANNA}/events"), meeting("Shapes", 4, 9)).await;
    assert_eq!(e.status, StatusCode::CREATED, "{}", e.body);
    let eid = e.body["id"].as_str().unwrap().to_string();
    let (_, body) = hook.next().await;
    let n = &body["value"][0];
    assert_eq!(n["resource"], json!(format!("Users('{mb}')/events('{eid}')")));
    assert_eq!(n["resourceData"]["@odata.type"], "#microsoft.graph.event");
    assert_eq!(n["resourceData"]["@odata.id"], n["resource"]);

    sim.control("/faults", json!({"notification_resource_style": "path", "notification_type_casing": "pascal"})).await;
    let upd = sim.patch(&format!("/users/{ANNA}/events/{}", enc(&eid)), json!({"subject": "Shapes 2"}), &[]).await;
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.body);
    let (_, body) = hook.next().await;
    let n = &body["value"][0];
    assert_eq!(n["changeType"], "updated");
    assert_eq!(n["resource"], json!(format!("Users/{mb}/Events/{eid}")));
    assert_eq!(n["resourceData"]["@odata.type"], "#Microsoft.Graph.Event");

    let bad = sim.http.post(format!("{}/_sim/faults", sim.base)).json(&json!({"notification_type_casing": "upper"}));
    assert_eq!(bad.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

fn slow_rules(delay_ratio: f64, drop_ratio: f64) -> GraphSimConfig {
    GraphSimConfig {
        seed: SeedProfile::Empty,
        slow_notification_threshold: Duration::from_millis(100),
        slow_endpoint_min_deliveries: 1,
        slow_endpoint_delay_ratio: delay_ratio,
        slow_endpoint_drop_ratio: drop_ratio,
        ..GraphSimConfig::default()
    }
}

#[tokio::test]
async fn slow_notification_endpoint_gets_its_deliveries_delayed_by_ten_simulated_minutes() {
    // Drop ratio above 100 %: this endpoint can only be delayed.
    let sim = TestSim::start_with(slow_rules(0.5, 2.0)).await;
    let mut hook = Receiver::start_slow(Duration::from_millis(400)).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);

    let first = sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "One"})).await;
    assert_eq!(hook.next().await.1["value"][0]["resourceData"]["id"], first.body["id"]);
    sim.stats_until("first delivery counted", |st| st["notifications"]["sent"] == 1).await;

    let second = sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Two"})).await;
    sim.stats_until("second delivery delayed", |st| st["notifications"]["delayed"] == 1).await;
    // Held on the simulator clock: nothing can arrive until it moves.
    assert!(hook.rx.try_recv().is_err(), "delayed notification arrived early");
    sim.control("/clock", json!({"advanceMinutes": 10})).await;
    let (_, body) = hook.next().await;
    assert_eq!(body["value"][0]["resourceData"]["id"], second.body["id"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn too_slow_notification_endpoint_loses_its_notifications_and_gets_missed() {
    let sim = TestSim::start_with(slow_rules(0.1, 0.5)).await;
    let mut hook = Receiver::start_slow(Duration::from_millis(400)).await;
    let mut life = Receiver::start(Echo::Exact).await;
    let sub = subscribe(&sim, &format!("users/{ANNA}/contacts"), &hook.url, Some(&life.url)).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);

    sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "One"})).await;
    hook.next().await;
    sim.stats_until("first delivery counted", |st| st["notifications"]["sent"] == 1).await;

    sim.post(&format!("/users/{ANNA}/contacts"), json!({"givenName": "Two"})).await;
    let (_, body) = life.next().await;
    assert_eq!(body["value"][0]["lifecycleEvent"], "missed");
    assert_eq!(body["value"][0]["subscriptionId"], sub.body["id"]);
    let st = sim.stats().await;
    assert_eq!(st["notifications"]["droppedSlow"], 1, "{st}");
    assert_eq!(st["notifications"]["dropped"], 1, "{st}");
    assert!(hook.rx.try_recv().is_err(), "dropped notification was delivered");
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- simulator gaps: delta, To Do moves, uploads

async fn three_contacts_delta(sim: &TestSim) -> (String, Vec<String>) {
    let folder = sim.new_folder("HQ").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let c = sim.new_contact(&folder, json!({"givenName": format!("P{i}")})).await;
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    (format!("/users/{ANNA}/contactFolders/{}/contacts/delta", enc(&folder)), ids)
}

#[tokio::test]
async fn delta_can_be_made_to_serve_empty_pages_that_still_carry_a_next_link() {
    let sim = TestSim::start().await;
    let (start, ids) = three_contacts_delta(&sim).await;
    sim.control("/faults", json!({"delta_empty_pages": true})).await;

    let first = sim.call(reqwest::Method::GET, &start, None, &[("Prefer", "odata.maxpagesize=1")]).await;
    assert_eq!(first.body["value"], json!([]));
    assert!(first.body["@odata.nextLink"].is_string(), "{}", first.body);
    let (items, _, pages) = delta_round(&sim, &start, "odata.maxpagesize=1").await;
    let got: HashSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect());
    assert_eq!(items.len(), 3);
    assert_eq!(pages, 6, "each of the three pages preceded by an empty one");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn delta_can_be_made_to_replay_the_previous_page() {
    let sim = TestSim::start().await;
    let (start, ids) = three_contacts_delta(&sim).await;
    sim.control("/faults", json!({"delta_replay": true})).await;

    let (items, _, pages) = delta_round(&sim, &start, "odata.maxpagesize=1").await;
    assert_eq!(pages, 3);
    let order: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(order, vec![&ids[0], &ids[0], &ids[1], &ids[1], &ids[2]]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn todo_task_moved_to_another_list_gets_a_new_id_in_both_deltas() {
    let sim = TestSim::start().await;
    let mut lists = Vec::new();
    for name in ["Von", "Nach"] {
        let l = sim.post(&format!("/users/{ANNA}/todo/lists"), json!({"displayName": name})).await;
        lists.push(l.body["id"].as_str().unwrap().to_string());
    }
    let tasks = |l: &str| format!("/users/{ANNA}/todo/lists/{}/tasks", enc(l));
    let t = sim.post(&tasks(&lists[0]), json!({"title": "Umziehen", "importance": "high"})).await;
    let tid = t.body["id"].as_str().unwrap().to_string();
    let (_, from_delta, _) = delta_round(&sim, &format!("{}/delta", tasks(&lists[0])), "odata.maxpagesize=10").await;
    let (_, to_delta, _) = delta_round(&sim, &format!("{}/delta", tasks(&lists[1])), "odata.maxpagesize=10").await;

    let moved = sim
        .control("/todo/move", json!({"mailbox": ANNA, "listId": lists[0], "taskId": tid, "toListId": lists[1]}))
        .await;
    let new_id = moved["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, tid);
    assert_eq!(moved["title"], "Umziehen");
    assert_eq!(moved["importance"], "high");

    let old_path = format!("{}/{}", tasks(&lists[0]), enc(&tid));
    assert_graph_error(&sim.get(&old_path).await, StatusCode::NOT_FOUND, "ErrorItemNotFound");
    let new_task = sim.get(&format!("{}/{}", tasks(&lists[1]), enc(&new_id))).await;
    assert_eq!(new_task.status, StatusCode::OK, "{}", new_task.body);

    let (from_items, _, _) = delta_round(&sim, &from_delta, "odata.maxpagesize=10").await;
    assert_eq!(from_items.len(), 1, "{from_items:?}");
    assert_eq!(from_items[0]["id"], json!(tid));
    assert_eq!(from_items[0]["@removed"]["reason"], "deleted");
    let (to_items, _, _) = delta_round(&sim, &to_delta, "odata.maxpagesize=10").await;
    assert_eq!(to_items.len(), 1, "{to_items:?}");
    assert_eq!(to_items[0]["id"], json!(new_id));
    assert_eq!(to_items[0]["title"], "Umziehen");

    let again = sim
        .http
        .post(format!("{}/_sim/todo/move", sim.base))
        .json(&json!({"mailbox": ANNA, "listId": lists[0], "taskId": tid, "toListId": lists[1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "the old id is gone");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn upload_volume_per_mailbox_is_throttled_with_retry_after() {
    let sim = TestSim::start_with(GraphSimConfig {
        seed: SeedProfile::Empty,
        upload_bytes_per_window: 3000,
        ..GraphSimConfig::default()
    })
    .await;
    let big = json!({"givenName": "Gross", "personalNotes": "x".repeat(1800)});
    let path = format!("/users/{ANNA}/contacts");
    assert_eq!(sim.post(&path, big.clone()).await.status, StatusCode::CREATED);
    let refused = sim.post(&path, big.clone()).await;
    assert_graph_error(&refused, StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
    let retry: f64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0.0);
    // Reads do not count against the upload budget, and other mailboxes have their own.
    assert_eq!(sim.get(&path).await.status, StatusCode::OK);
    assert_eq!(sim.post(&format!("/users/{CLARA}/contacts"), big).await.status, StatusCode::CREATED);
    sim.sim.shutdown().await;
}

// ---------------------------------------------------------------- Exchange Online as it really is (issue #19)

const IMMUTABLE: (&str, &str) = ("Prefer", "IdType=\"ImmutableId\"");

#[tokio::test]
async fn moved_contact_keeps_only_its_immutable_id_and_each_subscription_hears_its_own_id_kind() {
    let sim = TestSim::start().await;
    let from = sim.new_folder("HQ Globale Kontakte").await;
    let to = sim.new_folder("HQ Meine Kontakte").await;
    let mut plain_rx = Receiver::start(Echo::Exact).await;
    let mut immut_rx = Receiver::start(Echo::Exact).await;
    let resource = format!("users/{ANNA}/contactFolders/{from}/contacts");
    let plain = subscribe(&sim, &resource, &plain_rx.url, None).await;
    assert_eq!(plain.status, StatusCode::CREATED);
    let body = json!({"changeType": "created,updated,deleted", "notificationUrl": immut_rx.url, "resource": resource,
                      "expirationDateTime": expiry_in(120), "clientState": "s"});
    let immut = sim.call(reqwest::Method::POST, "/subscriptions", Some(body), &[IMMUTABLE]).await;
    assert_eq!(immut.status, StatusCode::CREATED, "{}", immut.body);

    let created = sim
        .call(
            reqwest::Method::POST,
            &format!("/users/{ANNA}/contactFolders/{}/contacts", enc(&from)),
            Some(json!({"givenName": "Wandernde", "surname": "Kontaktperson"})),
            &[IMMUTABLE],
        )
        .await;
    let immutable_id = created.body["id"].as_str().unwrap().to_string();
    plain_rx.wait_for("created", &immutable_id).await;
    immut_rx.wait_for("created", &immutable_id).await;
    let (_, delta_link, _) = delta_round(
        &sim,
        &format!("/users/{ANNA}/contactFolders/{}/contacts/delta", enc(&from)),
        "odata.maxpagesize=10",
    )
    .await;

    let moved = sim.control("/move", json!({"mailbox": ANNA, "id": immutable_id, "folderId": to})).await;
    assert_eq!(moved["id"], json!(immutable_id));
    let new_rest = moved["restId"].as_str().unwrap().to_string();
    assert_ne!(new_rest, immutable_id, "a move gives the item a new regular id");
    // The watched folder lost it: each subscription names it its own way (here both the same: its first move).
    let n = immut_rx.wait_for("deleted", &immutable_id).await;
    assert_eq!(n["resourceData"]["id"], json!(immutable_id));
    plain_rx.wait_for("deleted", moved["previousRestId"].as_str().unwrap()).await;

    // The old regular id names nothing any more; the immutable one still does, with or without the header.
    let old = sim.get(&format!("/users/{ANNA}/contacts/{}", enc(moved["previousRestId"].as_str().unwrap()))).await;
    assert_eq!(old.status, StatusCode::OK, "before its first move the regular id was the immutable one");
    let without = sim.get(&format!("/users/{ANNA}/contacts/{}", enc(&new_rest))).await;
    assert_eq!(without.status, StatusCode::OK);
    assert_eq!(without.body["id"], json!(new_rest), "without the header the regular id comes back");
    assert_eq!(without.body["parentFolderId"], json!(to));
    let with = sim
        .call(reqwest::Method::GET, &format!("/users/{ANNA}/contacts/{}", enc(&immutable_id)), None, &[IMMUTABLE])
        .await;
    assert_eq!(with.body["id"], json!(immutable_id), "with the header the immutable id comes back");
    // A second move: the regular id of before it answers 404 now.
    sim.control("/move", json!({"mailbox": ANNA, "id": new_rest, "folderId": from})).await;
    assert_graph_error(
        &sim.get(&format!("/users/{ANNA}/contacts/{}", enc(&new_rest))).await,
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
    );

    // Back in the watched folder: the immutable subscription names the same id, the other the newest regular one.
    immut_rx.wait_for("created", &immutable_id).await;
    let back = sim.get(&format!("/users/{ANNA}/contactFolders/{}/contacts", enc(&from))).await;
    let regular_now = back.body["value"][0]["id"].as_str().unwrap().to_string();
    assert!(regular_now != immutable_id && regular_now != new_rest, "{regular_now}");
    plain_rx.wait_for("created", &regular_now).await;
    let (items, _, _) = delta_round(&sim, &delta_link, "odata.maxpagesize=10").await;
    assert!(
        items.iter().any(|i| i["id"] != json!(immutable_id)),
        "without the header the delta shows regular ids: {items:?}"
    );
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn todo_task_subscriptions_are_notified_of_task_and_extension_writes() {
    let sim = TestSim::start().await;
    let list = sim.post(&format!("/users/{BEN}/todo/lists"), json!({"displayName": "helloHQ"})).await;
    let lid = list.body["id"].as_str().unwrap().to_string();
    let mut rx = Receiver::start(Echo::Exact).await;
    // To Do ignores the application access policy (Ben is outside it): the subscription is accepted.
    let sub = subscribe(&sim, &format!("users/{BEN}/todo/lists/{lid}/tasks"), &rx.url, None).await;
    assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
    let tasks = format!("/users/{BEN}/todo/lists/{}/tasks", enc(&lid));
    let t = sim.post(&tasks, json!({"title": "Angebot schreiben"})).await;
    let tid = t.body["id"].as_str().unwrap().to_string();
    let n = rx.wait_for("created", &tid).await;
    assert_eq!(n["subscriptionId"], sub.body["id"]);
    assert_eq!(n["resourceData"]["@odata.etag"], t.body["@odata.etag"]);
    let done = sim.patch(&format!("{tasks}/{}", enc(&tid)), json!({"status": "completed"}), &[]).await;
    let n = rx.wait_for("updated", &tid).await;
    assert_eq!(n["resourceData"]["@odata.etag"], done.body["@odata.etag"]);
    let ext = json!({"@odata.type": "#microsoft.graph.openTypeExtension", "extensionName": "io.hqsync.task", "percentDone": 10});
    assert_eq!(sim.post(&format!("{tasks}/{}/extensions", enc(&tid)), ext).await.status, StatusCode::CREATED);
    rx.wait_for("updated", &tid).await;
    assert_eq!(sim.delete(&format!("{tasks}/{}", enc(&tid))).await.status, StatusCode::NO_CONTENT);
    rx.wait_for("deleted", &tid).await;
    let all = sim.get("/subscriptions").await;
    assert!(all.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["resource"] == json!(format!("users/{BEN}/todo/lists/{lid}/tasks"))));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn extensions_are_read_per_task_and_refused_as_expand_on_the_collection() {
    let sim = TestSim::start().await;
    let list = sim.post(&format!("/users/{ANNA}/todo/lists"), json!({"displayName": "helloHQ"})).await;
    let tasks = format!("/users/{ANNA}/todo/lists/{}/tasks", enc(list.body["id"].as_str().unwrap()));
    let t = sim.post(&tasks, json!({"title": "Ohne Erweiterung"})).await;
    let tpath = format!("{tasks}/{}", enc(t.body["id"].as_str().unwrap()));
    let expand = sim.get(&format!("{tasks}?$expand=extensions($filter=id%20eq%20'io.hqsync.task')")).await;
    assert_graph_error(&expand, StatusCode::BAD_REQUEST, "BadRequest");
    assert_eq!(sim.get(&tasks).await.status, StatusCode::OK, "the plain listing works");
    assert_graph_error(
        &sim.get(&format!("{tpath}/extensions/io.hqsync.task")).await,
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
    );
    let ext = json!({"@odata.type": "#microsoft.graph.openTypeExtension", "extensionName": "io.hqsync.task", "percentDone": 40});
    sim.post(&format!("{tpath}/extensions"), ext).await;
    let got = sim.get(&format!("{tpath}/extensions/io.hqsync.task")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["percentDone"], 40);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn enum_values_in_request_bodies_are_read_without_regard_to_case() {
    let sim = TestSim::start().await;
    let mut body = meeting("Groß geschrieben", 4, 10);
    body["body"] = json!({"contentType": "HTML", "content": "<p>Hallo</p>"});
    body["importance"] = json!("High");
    body["showAs"] = json!("Busy");
    body["recurrence"] = json!({
        "pattern": {"type": "Weekly", "interval": 1, "daysOfWeek": ["Monday"], "firstDayOfWeek": "Monday"},
        "range": {"type": "NoEnd", "startDate": "2026-05-04"},
    });
    let created = sim.post(&format!("/users/{ANNA}/events"), body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["body"]["contentType"], "html", "answered in the documented spelling");
    assert_eq!(created.body["importance"], "high");
    assert_eq!(created.body["recurrence"]["pattern"]["type"], "weekly");
    let list = sim.post(&format!("/users/{ANNA}/todo/lists"), json!({"displayName": "helloHQ"})).await;
    let tasks = format!("/users/{ANNA}/todo/lists/{}/tasks", enc(list.body["id"].as_str().unwrap()));
    let t = sim.post(&tasks, json!({"title": "x", "importance": "HIGH", "status": "InProgress"})).await;
    assert_eq!(t.status, StatusCode::CREATED, "{}", t.body);
    assert_eq!((t.body["importance"].as_str(), t.body["status"].as_str()), (Some("high"), Some("inProgress")));
    // A value that is no member at all is still refused, as is a property the type does not have.
    assert_eq!(sim.post(&tasks, json!({"title": "x", "importance": "urgent"})).await.status, StatusCode::BAD_REQUEST);
    let unknown = sim
        .post(&format!("/users/{ANNA}/events"), {
            let mut b = meeting("x", 5, 10);
            b["colour"] = json!("red");
            b
        })
        .await;
    assert_graph_error(&unknown, StatusCode::BAD_REQUEST, "RequestBodyRead");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn transaction_id_returns_the_first_event_only_for_the_same_body() {
    let sim = TestSim::start().await;
    let mut body = meeting("Einmal", 5, 9);
    body["transactionId"] = json!("b1b1b1b1-0000-4000-8000-000000000001");
    let first = sim.post(&format!("/users/{ANNA}/events"), body.clone()).await;
    let retry = sim.post(&format!("/users/{ANNA}/events"), body.clone()).await;
    assert_eq!(first.body["id"], retry.body["id"], "a client retry of the same POST");
    let mut other = body.clone();
    other["subject"] = json!("Anderer Inhalt");
    let second = sim.post(&format!("/users/{ANNA}/events"), other).await;
    assert_ne!(second.body["id"], first.body["id"], "another body under the same transactionId is another event");
    // After the first event is deleted, a replay creates one again.
    assert_eq!(
        sim.delete(&format!("/users/{ANNA}/events/{}", enc(first.body["id"].as_str().unwrap()))).await.status,
        StatusCode::NO_CONTENT
    );
    let replay = sim.post(&format!("/users/{ANNA}/events"), body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_ne!(replay.body["id"], first.body["id"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn if_match_knob_enforces_or_ignores_a_stale_etag() {
    let sim = TestSim::start().await;
    let folder = sim.new_folder("HQ").await;
    let c = sim.new_contact(&folder, json!({"givenName": "Etag"})).await;
    let path = format!("/users/{ANNA}/contactFolders/{}/contacts/{}", enc(&folder), enc(c["id"].as_str().unwrap()));
    let stale = c["@odata.etag"].as_str().unwrap().to_string();
    assert_eq!(sim.patch(&path, json!({"surname": "Eins"}), &[]).await.status, StatusCode::OK);
    let enforced = sim.patch(&path, json!({"surname": "Zwei"}), &[("If-Match", &stale)]).await;
    assert_graph_error(&enforced, StatusCode::PRECONDITION_FAILED, "ErrorIrresolvableConflict");
    sim.control("/faults", json!({"ifMatch": "ignore"})).await;
    let ignored = sim.patch(&path, json!({"surname": "Drei"}), &[("If-Match", &stale)]).await;
    assert_eq!(ignored.status, StatusCode::OK, "a tenant that ignores If-Match writes anyway");
    assert_eq!(ignored.body["surname"], "Drei");
    let bad =
        sim.http.post(format!("{}/_sim/faults", sim.base)).json(&json!({"ifMatch": "sometimes"})).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

fn request_fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/graph/requests/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn every_request_body_of_microsofts_examples_gets_the_documented_status() {
    let sim = TestSim::start().await;
    for name in ["event-create-html.json", "event-create-multiple-locations.json", "event-create-recurring.json"] {
        let a = sim.post(&format!("/users/{ANNA}/events"), request_fixture(name)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{name}: {}", a.body);
    }
    let a = sim.post(&format!("/users/{ANNA}/contacts"), request_fixture("contact-create.json")).await;
    assert_eq!(a.status, StatusCode::CREATED, "contact-create.json: {}", a.body);
    let list = sim.post(&format!("/users/{ANNA}/todo/lists"), json!({"displayName": "Docs"})).await;
    let tasks = format!("/users/{ANNA}/todo/lists/{}/tasks", enc(list.body["id"].as_str().unwrap()));
    let a = sim.post(&tasks, request_fixture("todotask-create.json")).await;
    assert_eq!(a.status, StatusCode::CREATED, "todotask-create.json: {}", a.body);
    // The subscription sample, its placeholders and Microsoft's hosts filled in (see the fixtures' SOURCES.md).
    let rx = Receiver::start(Echo::Exact).await;
    let mut sub = request_fixture("subscription-create.json");
    sub["resource"] = json!(sub["resource"].as_str().unwrap().replace("{id}", ANNA).replace("/messages", "/events"));
    sub["notificationUrl"] = json!(rx.url);
    sub["lifecycleNotificationUrl"] = json!(rx.url);
    sub["expirationDateTime"] = json!(expiry_in(120));
    let a = sim.post("/subscriptions", sub).await;
    assert_eq!(a.status, StatusCode::CREATED, "subscription-create.json: {}", a.body);
    assert_eq!(a.body["resource"], json!(format!("users/{ANNA}/events")), "echoed without the leading /");
    sim.sim.shutdown().await;
}
