//! The Graph client against the Graph simulator over real HTTP: token
//! caching and single flight, permanent credential and access-policy
//! errors, throttling (Retry-After, 4 per mailbox), `$batch`, delta rounds
//! and folder/list bootstrap. A small recording proxy sits between client
//! and simulator so the tests can see every request (including token
//! requests) with its arrival time and answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::Response;
use hqsync::connectors::graph::{
    BatchRequest, DeltaItem, DeltaTarget, GraphClient, GraphClientConfig, GraphError, MailboxQuota, RetryPolicy,
    DEFAULT_TODO_LIST, GLOBAL_CONTACTS_FOLDER, MY_CONTACTS_FOLDER,
};
use hqsync::model::TenantId;
use hqsync::sim::graph::{GraphSim, GraphSimConfig, SeedProfile};
use hqsync::store::{Cipher, GraphCredentials, HellohqCredentials, Store, Tenant};
use secrecy::SecretString;
use serde_json::{json, Value};

const MAILBOX: &str = "anna@agentur.example";

// ---------------------------------------------------------------- recording proxy

#[derive(Debug, Clone)]
struct Rec {
    method: String,
    path: String,
    client_request_id: Option<String>,
    arrived: Instant,
    answered: Instant,
    status: u16,
    retry_after: Option<f64>,
    request_body: Value,
    response_body: Value,
}

#[derive(Default)]
struct ProxyState {
    log: Vec<Rec>,
    in_flight: HashMap<String, u32>,
    max_in_flight: HashMap<String, u32>,
}

struct Proxy {
    upstream: String,
    base: Mutex<String>,
    http: reqwest::Client,
    state: Mutex<ProxyState>,
}

fn mailbox_in(path: &str) -> Option<String> {
    let p = path.split('?').next()?.trim_start_matches("/v1.0/");
    let mut parts = p.split('/');
    (parts.next()? == "users").then(|| parts.next().map(|s| s.to_lowercase())).flatten()
}

async fn forward(State(p): State<Arc<Proxy>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map(|x| x.as_str().to_string()).unwrap_or_default();
    let mailbox = mailbox_in(&path);
    let arrived = Instant::now();
    if let Some(mb) = &mailbox {
        let mut s = p.state.lock().unwrap();
        let n = {
            let e = s.in_flight.entry(mb.clone()).or_default();
            *e += 1;
            *e
        };
        let m = s.max_in_flight.entry(mb.clone()).or_default();
        *m = (*m).max(n);
    }
    let mut rb = p.http.request(parts.method.clone(), format!("{}{}", p.upstream, path));
    for (k, v) in parts.headers.iter() {
        if k != "host" && k != "content-length" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(bytes.clone()).send().await.expect("simulator reachable");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    // Links in answers point at the simulator; rewrite them so the client keeps talking to the proxy.
    let base = p.base.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&body).replace(&p.upstream, &base);
    let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok());
    let mut out = Response::builder().status(status);
    for (k, v) in headers.iter() {
        if k != "content-length" && k != "transfer-encoding" {
            out = out.header(k, v);
        }
    }
    {
        let mut s = p.state.lock().unwrap();
        if let Some(mb) = &mailbox {
            if let Some(e) = s.in_flight.get_mut(mb) {
                *e -= 1;
            }
        }
        s.log.push(Rec {
            method: parts.method.to_string(),
            path: path.clone(),
            client_request_id: parts.headers.get("client-request-id").and_then(|v| v.to_str().ok()).map(String::from),
            arrived,
            answered: Instant::now(),
            status: status.as_u16(),
            retry_after,
            request_body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            response_body: serde_json::from_str(&text).unwrap_or(Value::Null),
        });
    }
    out.body(axum::body::Body::from(text)).unwrap()
}

// ---------------------------------------------------------------- harness

struct Harness {
    sim: GraphSim,
    proxy: Arc<Proxy>,
    proxy_base: String,
    http: reqwest::Client,
    seed: Value,
    store: Store,
    tenant: TenantId,
}

impl Harness {
    async fn start(mailboxes: Value) -> Harness {
        Harness::start_with(mailboxes, GraphSimConfig::default()).await
    }

    async fn start_with(mailboxes: Value, cfg: GraphSimConfig) -> Harness {
        // The simulator's own concurrency limit is raised so that it does not
        // hide a client that sends more than 4 at once: the stats then show it.
        let cfg = GraphSimConfig { seed: SeedProfile::Empty, throttle_max_concurrent: 64, ..cfg };
        let sim = GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), cfg).await.unwrap();
        let http = reqwest::Client::new();
        let seed: Value = http
            .post(format!("{}/_sim/seed", sim.base_url()))
            .json(&json!({"mailboxes": mailboxes}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let proxy = Arc::new(Proxy {
            upstream: sim.base_url(),
            base: Mutex::new(String::new()),
            http: reqwest::Client::new(),
            state: Mutex::new(ProxyState::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_base = format!("http://{}", listener.local_addr().unwrap());
        *proxy.base.lock().unwrap() = proxy_base.clone();
        let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
        let store = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let mut h = Harness { sim, proxy, proxy_base, http, seed, store, tenant };
        let creds = h.credentials(None);
        h.store
            .upsert_tenant(&Tenant {
                id: h.tenant.clone(),
                name: "Acme".into(),
                enabled: true,
                graph: creds,
                hellohq: HellohqCredentials {
                    base_url: "http://127.0.0.1:9".into(),
                    token: SecretString::from("unused"),
                    webhook_secrets: vec![],
                },
                settings: json!({}),
                created_at: chrono::Utc::now(),
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        h.tenant = TenantId::parse("acme").unwrap();
        h
    }

    fn entra_tenant(&self) -> String {
        self.seed["tenantId"].as_str().unwrap().to_string()
    }

    fn credentials(&self, secret: Option<&str>) -> GraphCredentials {
        GraphCredentials {
            entra_tenant_id: self.entra_tenant(),
            client_id: self.seed["clientId"].as_str().unwrap().to_string(),
            client_secret: SecretString::from(
                secret.unwrap_or(self.seed["clientSecret"].as_str().unwrap()).to_string(),
            ),
            graph_base: format!("{}/v1.0", self.proxy_base),
            login_base: self.proxy_base.clone(),
        }
    }

    fn client(&self, cfg: GraphClientConfig) -> GraphClient {
        // The simulator listens on 127.0.0.1: the address guard is off here.
        GraphClient::new(&self.credentials(None), cfg.allowing_private_addresses()).unwrap()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}/_sim/{path}", self.sim.base_url())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "/_sim/{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn stats(&self) -> Value {
        self.http.get(format!("{}/_sim/stats", self.sim.base_url())).send().await.unwrap().json().await.unwrap()
    }

    fn log(&self) -> Vec<Rec> {
        self.proxy.state.lock().unwrap().log.clone()
    }

    fn token_requests(&self) -> usize {
        self.log().iter().filter(|r| r.path.contains("/oauth2/v2.0/token")).count()
    }

    fn proxy_max_in_flight(&self, mailbox: &str) -> u32 {
        self.proxy.state.lock().unwrap().max_in_flight.get(mailbox).copied().unwrap_or(0)
    }
}

fn quick_retries() -> GraphClientConfig {
    GraphClientConfig {
        retry: RetryPolicy {
            max_attempts: 12,
            max_total_wait: Duration::from_secs(120),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        },
        ..Default::default()
    }
}

fn mailbox(upn: &str) -> Value {
    json!({"userPrincipalName": upn})
}

fn contacts(n: usize) -> Vec<Value> {
    (0..n).map(|i| json!({"givenName": format!("Kontakt{i}"), "surname": "Muster"})).collect()
}

fn with_folder(upn: &str, folder: &str, n: usize) -> Value {
    json!({"userPrincipalName": upn, "contactFolders": [{"displayName": folder, "contacts": contacts(n)}]})
}

async fn folder_id(client: &GraphClient, upn: &str, name: &str) -> String {
    let all = client.list_all(&format!("/users/{upn}/contactFolders")).await.unwrap();
    all.iter().find(|f| f["displayName"] == name).unwrap()["id"].as_str().unwrap().to_string()
}

/// The ids of the contacts in `upn`'s folder `folder_id`.
async fn contact_ids(client: &GraphClient, upn: &str, folder_id: &str) -> Vec<String> {
    let contacts = client.list_contacts(upn, folder_id).await.unwrap();
    contacts.iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

// ---------------------------------------------------------------- token

#[tokio::test]
async fn fifty_concurrent_callers_share_one_token_request() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client = h.client(GraphClientConfig::default());
    let calls = (0..50).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get_user(MAILBOX).await })
    });
    for r in futures::future::join_all(calls).await {
        let user = r.unwrap().expect("user read");
        assert_eq!(user["userPrincipalName"], MAILBOX);
    }
    assert_eq!(h.token_requests(), 1, "one token for all callers");
    assert_eq!(h.stats().await["requests"]["GET /users/{user}"], 50);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_token_that_expired_mid_run_is_replaced_without_the_caller_noticing() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client = h.client(GraphClientConfig::default());
    client.get_user(MAILBOX).await.unwrap();
    // Graph's clock moves past the token's lifetime; the client still believes it valid.
    h.control("clock", json!({"advanceMinutes": 61})).await;
    client.get_user(MAILBOX).await.expect("the refresh is invisible to the caller");
    client.get_user(MAILBOX).await.unwrap();
    assert_eq!(h.token_requests(), 2, "exactly one refresh");
    let refused = h.log().iter().filter(|r| r.status == 401).count();
    assert_eq!(refused, 1, "one 401, then the fresh token is used");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_secret_is_one_clear_auth_error_without_a_retry_storm() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client =
        GraphClient::new(&h.credentials(Some("not-the-secret")), quick_retries().allowing_private_addresses()).unwrap();
    let calls = (0..10).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.get_user(MAILBOX).await })
    });
    for r in futures::future::join_all(calls).await {
        match r.unwrap() {
            Err(GraphError::Auth { tenant, fix, .. }) => {
                assert_eq!(tenant, h.entra_tenant());
                assert!(fix.contains("client secret"), "{fix}");
            }
            other => panic!("expected an Auth error, got {other:?}"),
        }
    }
    let err = client.get_user(MAILBOX).await.unwrap_err();
    let text = format!("{err} {err:?} {client:?}");
    assert!(!text.contains("not-the-secret"), "the secret leaked: {text}");
    assert!(text.contains(&h.entra_tenant()), "{text}");
    assert_eq!(h.token_requests(), 1, "a refused secret is not asked again and again");
    assert_eq!(h.log().len(), 1, "no Graph request without a token");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_mailbox_outside_the_access_policy_is_denied_by_name_and_not_retried() {
    let h = Harness::start(json!([mailbox(MAILBOX), mailbox("ben@agentur.example")])).await;
    h.control("policy", json!({"mailbox": MAILBOX, "inScope": false})).await;
    let client = h.client(quick_retries());
    let err = client.ensure_contact_folders(&h.store, &h.tenant, MAILBOX).await.unwrap_err();
    match &err {
        GraphError::MailboxDenied { mailbox, fix } => {
            assert_eq!(mailbox, MAILBOX);
            assert!(fix.contains("New-ApplicationAccessPolicy") && fix.contains("Test-ApplicationAccessPolicy"));
        }
        other => panic!("expected MailboxDenied, got {other:?}"),
    }
    assert!(err.is_configuration() && !err.is_transient());
    let graph_calls = h.log().iter().filter(|r| r.path.starts_with("/v1.0/")).count();
    assert_eq!(graph_calls, 1, "a denial is not retried");
    // Other mailboxes are unaffected.
    client.ensure_contact_folders(&h.store, &h.tenant, "ben@agentur.example").await.unwrap();
    h.sim.shutdown().await;
}

// ---------------------------------------------------------------- throttling

#[tokio::test]
async fn a_throttling_storm_completes_honouring_retry_after_and_four_per_mailbox() {
    let h = Harness::start(json!([with_folder(MAILBOX, "Kunden", 3)])).await;
    let client = h.client(quick_retries());
    let folder = folder_id(&client, MAILBOX, "Kunden").await;
    h.control("faults", json!({"throttle_rate": 0.3, "latency_ms": 20})).await;
    let calls = (0..24).map(|_| {
        let c = client.clone();
        let f = folder.clone();
        tokio::spawn(async move { c.list_contacts(MAILBOX, &f).await })
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().expect("every read completes").len(), 3);
    }
    h.control("faults", json!({})).await;

    let log = h.log();
    let throttled: Vec<&Rec> = log.iter().filter(|r| r.status == 429).collect();
    assert!(!throttled.is_empty(), "the storm produced no 429; the test proves nothing");
    for t in &throttled {
        let ra = Duration::from_secs_f64(t.retry_after.expect("429 with Retry-After"));
        let retry = log
            .iter()
            .filter(|r| r.client_request_id == t.client_request_id && r.arrived > t.arrived)
            .min_by_key(|r| r.arrived)
            .expect("a throttled request is retried");
        assert!(
            retry.arrived >= t.answered + ra,
            "retried {:?} after the 429, before its Retry-After of {ra:?}",
            retry.arrived - t.answered
        );
    }
    assert!(h.proxy_max_in_flight(MAILBOX) <= 4, "more than 4 in flight: {}", h.proxy_max_in_flight(MAILBOX));
    let sim_max = h.stats().await["maxConcurrent"][MAILBOX].as_u64().unwrap();
    assert!((1..=4).contains(&sim_max), "simulator saw {sim_max} concurrent requests");
    h.sim.shutdown().await;
}

/// Outlook counts per app and mailbox, not per client: two clients of the
/// same app in one process (the engine's and the scheduler's, or two built
/// at once by concurrent hints) share the mailbox's 4.
#[tokio::test]
async fn two_clients_of_one_app_in_one_process_share_the_mailboxs_four() {
    let h = Harness::start(json!([with_folder(MAILBOX, "Kunden", 2)])).await;
    let (a, b) = (h.client(quick_retries()), h.client(quick_retries()));
    let folder = folder_id(&a, MAILBOX, "Kunden").await;
    h.control("faults", json!({"latency_ms": 40})).await;
    let calls = (0..16).map(|i| {
        let c = if i % 2 == 0 { a.clone() } else { b.clone() };
        let f = folder.clone();
        tokio::spawn(async move { c.list_contacts(MAILBOX, &f).await })
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().expect("every read completes").len(), 2);
    }
    h.control("faults", json!({})).await;
    let peak = h.proxy_max_in_flight(MAILBOX);
    assert!((1..=4).contains(&peak), "{peak} in flight from two clients of one app");
    h.sim.shutdown().await;
}

/// The live-process count is read at every request: a client built before
/// it changed keeps to the new share (max(1, floor(4 / N)) at a time).
#[tokio::test]
async fn a_built_client_keeps_to_the_process_share_read_at_each_request() {
    let mailboxes = ["p3@agentur.example", "p2@agentur.example", "p1@agentur.example"];
    let h = Harness::start(json!(mailboxes.iter().map(|m| with_folder(m, "Kunden", 1)).collect::<Vec<_>>())).await;
    let share = hqsync::connectors::graph::ProcessShare::default();
    let client = h.client(GraphClientConfig { processes: share.clone(), ..quick_retries() });
    let mut folders = Vec::new();
    for m in mailboxes {
        folders.push(folder_id(&client, m, "Kunden").await);
    }
    h.control("faults", json!({"latency_ms": 40})).await;
    for ((processes, m), folder) in [3u32, 2, 1].into_iter().zip(mailboxes).zip(folders) {
        share.set_processes(processes);
        let calls = (0..12).map(|_| {
            let (c, f) = (client.clone(), folder.clone());
            tokio::spawn(async move { c.list_contacts(m, &f).await })
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap().expect("every read completes");
        }
        let expected = hqsync::connectors::graph::share::concurrency_share(4, processes);
        assert_eq!(h.proxy_max_in_flight(m), expected, "{processes} processes: {m}");
    }
    h.control("faults", json!({})).await;
    h.sim.shutdown().await;
}

/// Arrival times (at the proxy) of the answered requests to `mailbox`, oldest first.
fn arrivals(log: &[Rec], mailbox: &str) -> Vec<Instant> {
    let mut at: Vec<Instant> =
        log.iter().filter(|r| mailbox_in(&r.path).as_deref() == Some(mailbox)).map(|r| r.arrived).collect();
    at.sort();
    at
}

#[tokio::test]
async fn with_the_mailbox_quota_configured_a_burst_waits_for_slots_and_draws_no_429() {
    const QUOTA: u32 = 5;
    const WINDOW: Duration = Duration::from_millis(300);
    const OTHER: &str = "bernd@agentur.example";
    let sim = GraphSimConfig { throttle_requests_per_window: QUOTA, throttle_window: WINDOW, ..Default::default() };
    let h = Harness::start_with(json!([with_folder(MAILBOX, "Kunden", 0), with_folder(OTHER, "Kunden", 0)]), sim).await;
    let burst = |client: GraphClient, upn: &'static str, folder: String| async move {
        let calls = contacts(4 * QUOTA as usize).into_iter().map(|c| {
            let (client, folder) = (client.clone(), folder.clone());
            tokio::spawn(async move { client.create_contact(upn, &folder, &c).await })
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap().expect("every create completes");
        }
    };

    // Without the budget the same burst is refused (and retried): the quota is real.
    let unbudgeted = h.client(quick_retries());
    let other_folder = folder_id(&unbudgeted, OTHER, "Kunden").await;
    burst(unbudgeted, OTHER, other_folder).await;
    let refused = h.stats().await["throttled"].as_u64().unwrap();
    assert!(refused > 0, "the burst without a budget drew no 429; the test proves nothing");

    let budgeted = h.client(GraphClientConfig {
        mailbox_quota: MailboxQuota { requests: QUOTA, window: WINDOW },
        ..quick_retries()
    });
    let folder = folder_id(&budgeted, MAILBOX, "Kunden").await;
    burst(budgeted, MAILBOX, folder).await;
    let stats = h.stats().await;
    assert_eq!(stats["throttled"].as_u64().unwrap(), refused, "the budgeted client drew a 429");
    assert_eq!(stats["items"][MAILBOX]["contacts"].as_u64(), Some(4 * QUOTA as u64));
    let peak = stats["peakRequestsPerWindow"][MAILBOX].as_u64().unwrap();
    assert!(peak <= QUOTA as u64, "the simulator saw {peak} requests within one window");
    let at = arrivals(&h.log(), MAILBOX);
    assert_eq!(at.len(), 4 * QUOTA as usize + 1, "one folder listing and the creates, none sent twice");
    for (i, pair) in at.windows(QUOTA as usize + 1).enumerate() {
        let span = pair[QUOTA as usize] - pair[0];
        assert!(span >= WINDOW, "requests {i}..={} arrived within {span:?}", i + QUOTA as usize);
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_counts_each_item_against_the_mailbox_quota() {
    const QUOTA: u32 = 6;
    const WINDOW: Duration = Duration::from_millis(300);
    let sim = GraphSimConfig { throttle_requests_per_window: QUOTA, throttle_window: WINDOW, ..Default::default() };
    let h = Harness::start_with(json!([with_folder(MAILBOX, "Kunden", 4)]), sim).await;
    let client = h.client(GraphClientConfig {
        mailbox_quota: MailboxQuota { requests: QUOTA, window: WINDOW },
        ..quick_retries()
    });
    let folder = folder_id(&client, MAILBOX, "Kunden").await;
    let ids = contact_ids(&client, MAILBOX, &folder).await;
    // Two requests are counted; four more items fit, a fifth would not.
    for round in 0..3 {
        let requests: Vec<BatchRequest> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| BatchRequest::get(format!("r{i}"), format!("/users/{MAILBOX}/contacts/{id}")))
            .collect();
        for r in client.batch(requests).await.unwrap() {
            assert_eq!(r.status, 200, "round {round}: item {} refused: {:?}", r.id, r.body);
        }
    }
    let stats = h.stats().await;
    assert_eq!(stats["throttled"].as_u64(), Some(0), "a batch item drew a 429");
    let peak = stats["peakRequestsPerWindow"][MAILBOX].as_u64().unwrap();
    assert!(peak <= QUOTA as u64, "the simulator saw {peak} requests within one window");
    h.sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_45_reads_goes_out_in_envelopes_of_20_and_retries_throttled_items() {
    let h = Harness::start(json!([with_folder(MAILBOX, "Kunden", 45)])).await;
    let client = h.client(quick_retries());
    let folder = folder_id(&client, MAILBOX, "Kunden").await;
    let ids = contact_ids(&client, MAILBOX, &folder).await;
    assert_eq!(ids.len(), 45);
    h.control("faults", json!({"throttle_rate": 0.25})).await;
    let requests: Vec<BatchRequest> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            BatchRequest::get(format!("r{i}"), format!("/users/{MAILBOX}/contactFolders/{folder}/contacts/{id}"))
        })
        .collect();
    let responses = client.batch(requests).await.unwrap();
    h.control("faults", json!({})).await;

    assert_eq!(responses.len(), 45);
    for (i, (r, id)) in responses.iter().zip(&ids).enumerate() {
        assert_eq!(r.id, format!("r{i}"), "responses come back in request order");
        assert_eq!(r.status, 200, "item {i} still failed: {:?}", r.body);
        assert_eq!(r.body["id"].as_str(), Some(id.as_str()));
    }
    let envelopes: Vec<Rec> = h.log().into_iter().filter(|r| r.path == "/v1.0/$batch").collect();
    let sizes: Vec<usize> =
        envelopes.iter().map(|e| e.request_body["requests"].as_array().map_or(0, Vec::len)).collect();
    assert!(sizes.iter().all(|&n| (1..=20).contains(&n)), "envelope sizes {sizes:?}");
    // An envelope is either a first send of fresh requests or a resend of items that came back 429/503.
    let mut seen = std::collections::HashSet::new();
    let mut throttled_ids = std::collections::HashSet::new();
    let mut first_sends = Vec::new();
    for e in &envelopes {
        let ids: Vec<String> =
            e.request_body["requests"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().into()).collect();
        if ids.iter().all(|id| !seen.contains(id)) {
            first_sends.push(ids.len());
        } else {
            assert!(ids.iter().all(|id| throttled_ids.contains(id)), "resent an item that had succeeded: {ids:?}");
        }
        seen.extend(ids);
        for r in e.response_body["responses"].as_array().unwrap() {
            let id = r["id"].as_str().unwrap().to_string();
            if matches!(r["status"].as_u64(), Some(429 | 503)) {
                throttled_ids.insert(id);
            } else {
                throttled_ids.remove(&id);
            }
        }
    }
    assert_eq!(first_sends, vec![20, 20, 5], "45 requests in envelopes of at most 20");
    let retried_items: usize = envelopes
        .iter()
        .map(|e| {
            e.response_body["responses"]
                .as_array()
                .map_or(0, |rs| rs.iter().filter(|r| matches!(r["status"].as_u64(), Some(429 | 503))).count())
        })
        .sum();
    assert!(retried_items > 0, "no item was throttled; the test proves nothing");
    assert_eq!(sizes.iter().sum::<usize>(), 45 + retried_items, "only throttled items are sent again");
    let sim_max = h.stats().await["maxConcurrent"][MAILBOX].as_u64().unwrap();
    assert!(sim_max <= 4, "simulator saw {sim_max} concurrent requests");
    h.sim.shutdown().await;
}

// ---------------------------------------------------------------- delta

#[tokio::test]
async fn a_contact_delta_round_follows_next_links_then_sees_changes_and_restarts_after_eviction() {
    let h = Harness::start(json!([with_folder(MAILBOX, "Kunden", 25)])).await;
    let client = h.client(GraphClientConfig { page_size: 10, ..quick_retries() });
    let folder = folder_id(&client, MAILBOX, "Kunden").await;
    let target = DeltaTarget::Contacts { folder_id: folder.clone() };
    let cursor = target.cursor_name();

    let first = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
    assert_eq!(first.items.len(), 25);
    assert!(first.pages >= 3, "25 items at 10 a page take several pages, got {}", first.pages);
    assert!(!first.reset);
    assert_eq!(h.store.get_cursor(&h.tenant, MAILBOX, &cursor).await.unwrap(), None, "nothing stored before commit");
    first.commit(&h.store, &h.tenant).await.unwrap();
    assert_eq!(h.store.get_cursor(&h.tenant, MAILBOX, &cursor).await.unwrap().as_deref(), Some(first.delta_link()));

    let ids: Vec<(String, String)> = first
        .items
        .iter()
        .map(|i| match i {
            DeltaItem::Changed(v) => {
                (v["id"].as_str().unwrap().to_string(), v["@odata.etag"].as_str().unwrap_or_default().to_string())
            }
            DeltaItem::Removed { .. } => panic!("no removals in a first round"),
        })
        .collect();
    let (changed, etag) = &ids[0];
    let (deleted, _) = &ids[1];
    client.update_contact(MAILBOX, &folder, changed, &json!({"jobTitle": "Chefin"}), Some(etag)).await.unwrap();
    client.delete_contact(MAILBOX, &folder, deleted, None).await.unwrap();

    // A crash before commit: the next attempt starts from the same committed link and sees the same changes.
    for _ in 0..2 {
        let round = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
        assert!(!round.reset);
        assert!(round.items.iter().any(|i| matches!(i, DeltaItem::Changed(v) if v["id"] == changed.as_str())));
        assert!(round.items.iter().any(|i| matches!(i, DeltaItem::Removed { id, .. } if id == deleted)));
        assert_eq!(round.items.len(), 2, "only the change and the deletion: {:?}", round.items);
    }
    let second = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
    second.commit(&h.store, &h.tenant).await.unwrap();
    let quiet = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
    assert!(quiet.items.is_empty(), "nothing changed since the commit: {:?}", quiet.items);

    h.control("delta/evict", json!({})).await;
    let restarted = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
    assert!(restarted.reset, "a lost sync state is reported");
    assert_eq!(restarted.items.len(), 24, "a fresh round lists every current contact");
    assert!(h.log().iter().any(|r| r.status == 410));
    restarted.commit(&h.store, &h.tenant).await.unwrap();
    let after = client.delta_round(&h.store, &h.tenant, MAILBOX, &target).await.unwrap();
    assert!(!after.reset && after.items.is_empty());
    h.sim.shutdown().await;
}

// ---------------------------------------------------------------- bootstrap

fn count(log: &[Rec], method: &str, suffix: &str) -> usize {
    log.iter().filter(|r| r.method == method && r.path.split('?').next().unwrap().ends_with(suffix)).count()
}

#[tokio::test]
async fn bootstrap_creates_folders_and_list_once_and_finds_them_again() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client = h.client(GraphClientConfig::default());
    let folders = client.ensure_contact_folders(&h.store, &h.tenant, MAILBOX).await.unwrap();
    let list = client.ensure_todo_list(&h.store, &h.tenant, MAILBOX, DEFAULT_TODO_LIST).await.unwrap();
    assert_ne!(folders.global_id, folders.mine_id);
    assert_eq!(count(&h.log(), "POST", "/contactFolders"), 2);
    assert_eq!(count(&h.log(), "POST", "/todo/lists"), 1);
    assert_eq!(h.store.get_cursor(&h.tenant, MAILBOX, "folder.global").await.unwrap(), Some(folders.global_id.clone()));
    assert_eq!(h.store.get_cursor(&h.tenant, MAILBOX, "todo.list").await.unwrap(), Some(list.clone()));

    // Again: answered from the cursors, no request at all.
    let before = h.log().len();
    assert_eq!(client.ensure_contact_folders(&h.store, &h.tenant, MAILBOX).await.unwrap(), folders);
    assert_eq!(client.ensure_todo_list(&h.store, &h.tenant, MAILBOX, DEFAULT_TODO_LIST).await.unwrap(), list);
    assert_eq!(h.log().len(), before);

    // Another process without the cursors finds them by name and creates nothing.
    let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
    let other_store = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
    let tenant = h.store.get_tenant(&h.tenant).await.unwrap().unwrap();
    other_store.upsert_tenant(&tenant).await.unwrap();
    let other = h.client(GraphClientConfig::default());
    assert_eq!(other.ensure_contact_folders(&other_store, &h.tenant, MAILBOX).await.unwrap(), folders);
    assert_eq!(other.ensure_todo_list(&other_store, &h.tenant, MAILBOX, DEFAULT_TODO_LIST).await.unwrap(), list);
    assert_eq!(count(&h.log(), "POST", "/contactFolders"), 2);
    assert_eq!(count(&h.log(), "POST", "/todo/lists"), 1);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_bootstraps_end_with_one_folder_and_one_list_per_name() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    // Two processes (separate clients and stores) and several tasks in each.
    let mut stores = Vec::new();
    for _ in 0..2 {
        let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
        let s = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
        s.upsert_tenant(&h.store.get_tenant(&h.tenant).await.unwrap().unwrap()).await.unwrap();
        stores.push(s);
    }
    let clients = [h.client(GraphClientConfig::default()), h.client(GraphClientConfig::default())];
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = clients[i % 2].clone();
        let s = stores[i % 2].clone();
        let t = h.tenant.clone();
        tasks.push(tokio::spawn(async move {
            let f = c.ensure_contact_folders(&s, &t, MAILBOX).await?;
            let l = c.ensure_todo_list(&s, &t, MAILBOX, DEFAULT_TODO_LIST).await?;
            Ok::<_, GraphError>((f, l))
        }));
    }
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    let folders = clients[0].list_all(&format!("/users/{MAILBOX}/contactFolders")).await.unwrap();
    for name in [GLOBAL_CONTACTS_FOLDER, MY_CONTACTS_FOLDER] {
        assert_eq!(folders.iter().filter(|f| f["displayName"] == name).count(), 1, "{name}");
    }
    assert!(results.iter().all(|(f, _)| *f == results[0].0), "every worker uses the same folders");
    // To Do itself allows duplicate names: the workers must sort that out themselves.
    let lists = clients[0].list_todo_lists(MAILBOX).await.unwrap();
    let ours: Vec<&Value> = lists.iter().filter(|l| l["displayName"] == DEFAULT_TODO_LIST).collect();
    assert_eq!(ours.len(), 1, "one list of that name");
    assert_eq!(ours[0]["id"].as_str(), Some(results[0].1.as_str()));
    assert!(results.iter().all(|(_, l)| *l == results[0].1), "every worker settles on the same list");
    h.sim.shutdown().await;
}

// ---------------------------------------------------------------- retries and resources

#[tokio::test]
async fn an_unavailable_graph_is_retried_with_backoff_until_it_answers() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client = h.client(quick_retries());
    h.control("faults", json!({"error_rate": 0.4})).await;
    for _ in 0..12 {
        client.get_user(MAILBOX).await.expect("503s are retried");
    }
    h.control("faults", json!({})).await;
    let log = h.log();
    let unavailable: Vec<&Rec> = log.iter().filter(|r| r.status == 503).collect();
    assert!(!unavailable.is_empty(), "no 503 was injected; the test proves nothing");
    for u in unavailable {
        let ra = Duration::from_secs_f64(u.retry_after.unwrap_or(0.0));
        let retry = log
            .iter()
            .filter(|r| r.client_request_id == u.client_request_id && r.arrived > u.arrived)
            .min_by_key(|r| r.arrived)
            .expect("a 503 is retried");
        assert!(retry.arrived >= u.answered + ra, "503 retried before its Retry-After");
    }
    h.sim.shutdown().await;
}

#[tokio::test]
async fn writes_carry_versions_idempotency_keys_and_extensions() {
    let h = Harness::start(json!([with_folder(MAILBOX, "Kunden", 1)])).await;
    let client = h.client(GraphClientConfig::default());
    let folder = folder_id(&client, MAILBOX, "Kunden").await;

    // Contacts: the fax rides in an extended property; a stale If-Match is a conflict; a deleted one is gone.
    let created = client
        .create_contact(
            MAILBOX,
            &folder,
            &json!({"givenName": "Fax", "surname": "Freund",
                    "singleValueExtendedProperties": [{"id": "String 0x3A24", "value": "+49 30 999"}]}),
        )
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let read = client.get_contact(MAILBOX, &folder, id).await.unwrap();
    let props = read["singleValueExtendedProperties"].as_array().expect("fax expanded");
    assert!(props
        .iter()
        .any(|p| p["id"].as_str().unwrap().to_ascii_lowercase().starts_with("string 0x3a24")
            && p["value"] == "+49 30 999"));
    let old_etag = read["@odata.etag"].as_str().unwrap().to_string();
    client.update_contact(MAILBOX, &folder, id, &json!({"jobTitle": "A"}), Some(&old_etag)).await.unwrap();
    let stale = client.update_contact(MAILBOX, &folder, id, &json!({"jobTitle": "B"}), Some(&old_etag)).await;
    assert!(matches!(stale, Err(GraphError::Conflict { .. })), "{stale:?}");
    client.delete_contact(MAILBOX, &folder, id, None).await.unwrap();
    let gone = client.get_contact(MAILBOX, &folder, id).await;
    assert!(matches!(gone, Err(GraphError::NotFound { .. })), "{gone:?}");

    // Events: a retried create with the same transactionId makes no second event.
    let start = chrono::Utc::now() + chrono::Duration::days(2);
    let event = json!({
        "subject": "Kickoff",
        "start": {"dateTime": start.format("%Y-%m-%dT10:00:00").to_string(), "timeZone": "UTC"},
        "end": {"dateTime": start.format("%Y-%m-%dT11:00:00").to_string(), "timeZone": "UTC"},
    });
    let a = client.create_event(MAILBOX, &event, "hq-appointment-42").await.unwrap();
    let b = client.create_event(MAILBOX, &event, "hq-appointment-42").await.unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(h.stats().await["items"][MAILBOX]["events"], 1);

    // To Do: fields To Do lacks live in the io.hqsync.task open extension.
    let list = client.ensure_todo_list(&h.store, &h.tenant, MAILBOX, DEFAULT_TODO_LIST).await.unwrap();
    let task = client.create_task(MAILBOX, &list, &json!({"title": "Angebot schreiben"})).await.unwrap();
    let task_id = task["id"].as_str().unwrap();
    client.create_task_extension(MAILBOX, &list, task_id, &json!({"percentDone": 40})).await.unwrap();
    client.update_task_extension(MAILBOX, &list, task_id, &json!({"percentDone": 60})).await.unwrap();
    // The task is read without its extension (not expanded: read per task, only when needed).
    let read = client.get_task(MAILBOX, &list, task_id).await.unwrap();
    assert!(read.get("extensions").is_none(), "{read}");
    assert_eq!(client.get_task_extension(MAILBOX, &list, task_id).await.unwrap()["percentDone"], 60);
    h.sim.shutdown().await;
}

#[tokio::test]
async fn calendar_view_and_todo_delta_rounds_see_new_and_changed_items() {
    let h = Harness::start(json!([mailbox(MAILBOX)])).await;
    let client = h.client(GraphClientConfig::default());
    let window = hqsync::connectors::graph::CalendarWindow::default().target(chrono::Utc::now());
    let empty = client.delta_round(&h.store, &h.tenant, MAILBOX, &window).await.unwrap();
    assert!(empty.items.is_empty());
    empty.commit(&h.store, &h.tenant).await.unwrap();

    let start = chrono::Utc::now() + chrono::Duration::days(3);
    let event = json!({
        "subject": "Workshop",
        "start": {"dateTime": start.format("%Y-%m-%dT09:00:00").to_string(), "timeZone": "UTC"},
        "end": {"dateTime": start.format("%Y-%m-%dT10:00:00").to_string(), "timeZone": "UTC"},
    });
    let created = client.create_event(MAILBOX, &event, "hq-7").await.unwrap();
    let round = client.delta_round(&h.store, &h.tenant, MAILBOX, &window).await.unwrap();
    assert!(
        round.items.iter().any(|i| matches!(i, DeltaItem::Changed(v) if v["id"] == created["id"])),
        "{:?}",
        round.items
    );
    round.commit(&h.store, &h.tenant).await.unwrap();
    assert!(h.store.get_cursor(&h.tenant, MAILBOX, "delta.events.calendar").await.unwrap().is_some());

    let list = client.ensure_todo_list(&h.store, &h.tenant, MAILBOX, DEFAULT_TODO_LIST).await.unwrap();
    let tasks = DeltaTarget::TodoTasks { list_id: list.clone() };
    client.delta_round(&h.store, &h.tenant, MAILBOX, &tasks).await.unwrap().commit(&h.store, &h.tenant).await.unwrap();
    let task = client.create_task(MAILBOX, &list, &json!({"title": "Rechnung"})).await.unwrap();
    let round = client.delta_round(&h.store, &h.tenant, MAILBOX, &tasks).await.unwrap();
    assert_eq!(round.items.len(), 1, "{:?}", round.items);
    assert!(matches!(&round.items[0], DeltaItem::Changed(v) if v["id"] == task["id"]));
    h.sim.shutdown().await;
}
