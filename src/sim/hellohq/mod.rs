//! Stateful helloHQ simulator (DESIGN §8, reference HELLOHQ.md): an axum app
//! that answers like `api.hellohq.io` — v2 REST (camelCase, bare arrays,
//! `helloHQ-Count`/`helloHQ-NextLink`), the v1 OData routes hqsync needs,
//! bearer tokens, 429 rate limiting, RFC 7807 errors — plus webhooks per
//! contract C2 and `/_sim/…` control routes. It owns its in-memory data and
//! must only ever be reached over HTTP; it never calls into hqsync's own
//! modules (its webhook signer is independent of hqsync's verifier).

mod api;
mod query;
mod seed;
mod store;
mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use seed::INTERNAL_PROJECT;
use store::{Actor, Db, WriteError};
pub use webhooks::RetryPolicy;

/// Which data the simulator starts with (and returns to on reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedProfile {
    /// "Agentur Beispiel GmbH": users, companies, contacts, projects, a
    /// lead, appointments (incl. a series with an exception), tasks, vacation.
    #[default]
    Demo,
    /// Nothing but the company types.
    Empty,
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct HellohqSimConfig {
    pub seed: SeedProfile,
    /// Requests per token per minute window before `429` (A5: 1000).
    pub rate_limit_per_minute: u32,
    /// The sync token (sees everything). User tokens are `hqsim-user-<id>`.
    pub sync_token: String,
    /// Webhook retry schedule and per-attempt timeout.
    pub webhook_retry: RetryPolicy,
}

impl Default for HellohqSimConfig {
    fn default() -> Self {
        HellohqSimConfig {
            seed: SeedProfile::Demo,
            rate_limit_per_minute: 1000,
            sync_token: "hqsim-sync-token".to_string(),
            webhook_retry: RetryPolicy {
                delays: [1, 5, 30, 120, 300].into_iter().map(Duration::from_secs).collect(),
                timeout: Duration::from_secs(5),
            },
        }
    }
}

/// A running simulator.
pub struct HellohqSim {
    addr: SocketAddr,
    sync_token: String,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl HellohqSim {
    /// Serves on `listener` until [`HellohqSim::shutdown`].
    pub async fn start(listener: tokio::net::TcpListener, cfg: HellohqSimConfig) -> std::io::Result<HellohqSim> {
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let base_url = format!("http://{host}:{}", addr.port());
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let endpoints = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(webhooks::Counters::default());
        webhooks::spawn_dispatcher(
            rx,
            endpoints.clone(),
            counters.clone(),
            cfg.webhook_retry.clone(),
            cancel.clone(),
            tracker.clone(),
        );
        let db = seeded(cfg.seed, tx.clone()).map_err(|e| std::io::Error::other(format!("seed failed: {e}")))?;
        let shared = Arc::new(Shared {
            base_url,
            profile: Mutex::new(cfg.seed),
            cfg,
            db: Mutex::new(db),
            notify: tx,
            stats: Mutex::new(Stats::default()),
            faults: Mutex::new(Faults::default()),
            windows: Mutex::new(HashMap::new()),
            endpoints,
            counters,
        });
        let sync_token = shared.cfg.sync_token.clone();
        let app = router(shared);
        let stop = cancel.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "helloHQ simulator stopped");
            }
        });
        Ok(HellohqSim { addr, sync_token, cancel, tracker })
    }

    /// `http://127.0.0.1:PORT`; routes live under `/v1/…` and `/v2/…`.
    pub fn base_url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { self.addr.ip().to_string() };
        format!("http://{host}:{}", self.addr.port())
    }

    /// The token that sees everything (`Authorization: Bearer …`).
    pub fn sync_token(&self) -> String {
        self.sync_token.clone()
    }

    /// Stops serving and abandons pending webhook retries.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for HellohqSim {
    /// A simulator dropped without `shutdown` still stops serving.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn seeded(profile: SeedProfile, tx: mpsc::UnboundedSender<store::ChangeEvent>) -> Result<Db, WriteError> {
    let mut db = Db::new(None);
    match profile {
        SeedProfile::Demo => seed::demo(&mut db)?,
        SeedProfile::Empty => {
            for name in ["Kunde", "Lieferant", "Interessent"] {
                db.create_company_type(name);
            }
        }
    }
    db.writes.clear();
    db.set_notify(Some(tx));
    Ok(db)
}

// ---- shared state ----------------------------------------------------------

pub(crate) struct Shared {
    cfg: HellohqSimConfig,
    base_url: String,
    profile: Mutex<SeedProfile>,
    db: Mutex<Db>,
    notify: mpsc::UnboundedSender<store::ChangeEvent>,
    stats: Mutex<Stats>,
    faults: Mutex<Faults>,
    /// token → (minute window, requests in it)
    windows: Mutex<HashMap<String, (i64, u32)>>,
    endpoints: Arc<Mutex<Vec<webhooks::Endpoint>>>,
    counters: Arc<webhooks::Counters>,
}

impl Shared {
    /// Runs `f` under the data lock. Poisoning is ignored: a panicking
    /// handler must not take the whole simulator down.
    /// The faults and knobs in force.
    pub(crate) fn faults(&self) -> Faults {
        self.faults.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub(crate) fn with_db<T>(&self, f: impl FnOnce(&mut Db) -> T) -> T {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut db)
    }

    fn user_token(id: i32) -> String {
        format!("hqsim-user-{id}")
    }

    fn actor_for(&self, token: &str) -> Option<Actor> {
        if token == self.cfg.sync_token {
            return Some(Actor::Sync);
        }
        let id: i32 = token.strip_prefix("hqsim-user-")?.parse().ok()?;
        self.with_db(|db| db.users.contains_key(&id)).then_some(Actor::User(id))
    }
}

#[derive(Default)]
struct Stats {
    requests: BTreeMap<String, u64>,
    /// How many keys of `requests` are raw paths no route serves.
    unrouted_keys: usize,
    throttled: u64,
    unauthorized: u64,
    injected_errors: u64,
}

/// Which spelling of the list options (`top` or `$top`…) an endpoint
/// honours (A3, B14); the other is ignored like any unknown parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Honours {
    #[default]
    Both,
    Bare,
    Dollar,
}

fn yes() -> bool {
    true
}

/// Faults, and one knob per helloHQ behaviour the published API leaves
/// open (issue 18 item 4): each answer the connection test can get.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Faults {
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    throttle_rate: f64,
    #[serde(default)]
    latency_ms: u64,
    /// Share of webhook messages never sent (DESIGN §8 "dropped notifications").
    #[serde(default)]
    drop_rate: f64,
    /// Share of delivered webhook messages sent a second time, same id, a little later.
    #[serde(default)]
    duplicate_rate: f64,
    /// The spelling v2 lists honour, unless `spelling_per_path` names the path.
    #[serde(default)]
    pub(crate) spelling: Honours,
    /// Per v2 list path (`/v2/Projects/Tasks`).
    #[serde(default)]
    pub(crate) spelling_per_path: BTreeMap<String, Honours>,
    /// Lists send `helloHQ-NextLink` / `@odata.nextLink` (else: page with `skip`).
    #[serde(default = "yes")]
    pub(crate) next_links: bool,
    /// v2 task lists honour `expand=resourceToTasks` (else: no assignments in them).
    #[serde(default = "yes")]
    pub(crate) expand_assignments: bool,
    /// The deletions log honours `$filter` (else: it answers the whole log).
    #[serde(default = "yes")]
    pub(crate) deletions_filter: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            throttle_rate: 0.0,
            latency_ms: 0,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            spelling: Honours::Both,
            spelling_per_path: BTreeMap::new(),
            next_links: true,
            expand_assignments: true,
            deletions_filter: true,
        }
    }
}

impl Faults {
    /// The list parameters `path` honours: those of the other spelling are
    /// dropped (v1 always takes `$`).
    pub(crate) fn honoured(&self, path: &str, params: &HashMap<String, String>) -> HashMap<String, String> {
        let honours = self.spelling_per_path.get(path).copied().unwrap_or(self.spelling);
        params
            .iter()
            .filter(|(k, _)| match honours {
                Honours::Both => true,
                Honours::Bare => !k.starts_with('$'),
                Honours::Dollar => k.starts_with('$'),
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Every route the simulator serves (method, template): exactly the rows
/// of `docs/hellohq-api.md` marked "simulator: yes" (tests/hellohq_routes.rs).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/Users"),
    ("GET", "/v2/Users/{id}"),
    ("PUT", "/v2/Users/{id}"),
    ("GET", "/v2/CompanyTypes"),
    ("GET", "/v2/CompanyTypes/{id}"),
    ("GET", "/v2/Companies"),
    ("POST", "/v2/Companies"),
    ("GET", "/v2/Companies/{id}"),
    ("PUT", "/v2/Companies/{id}"),
    ("DELETE", "/v2/Companies/{id}"),
    ("GET", "/v2/Companies/{id}/Addresses"),
    ("POST", "/v2/Companies/{id}/UpdateCompanyTypes"),
    ("GET", "/v2/ContactPersons"),
    ("POST", "/v2/ContactPersons"),
    ("GET", "/v2/ContactPersons/{id}"),
    ("PUT", "/v2/ContactPersons/{id}"),
    ("DELETE", "/v2/ContactPersons/{id}"),
    ("GET", "/v2/Projects"),
    ("POST", "/v2/Projects"),
    ("GET", "/v2/Projects/{id}"),
    ("PUT", "/v2/Projects/{id}"),
    ("GET", "/v2/Projects/{id}/ProjectMembers"),
    ("GET", "/v2/Projects/Tasks"),
    ("GET", "/v2/Projects/{id}/Tasks"),
    ("POST", "/v2/Projects/{id}/Tasks"),
    ("PUT", "/v2/Projects/{id}/Tasks/{id}"),
    ("GET", "/v2/Absences"),
    ("POST", "/v2/Absences"),
    ("GET", "/v2/Absences/{id}"),
    ("DELETE", "/v2/Absences/{id}"),
    ("GET", "/v1/ProjectTasks({id})"),
    ("DELETE", "/v1/ProjectTasks({id})"),
    ("GET", "/v1/ProjectTasks({id})/Assignments"),
    ("POST", "/v1/ProjectTasks({id})/Assignments"),
    ("GET", "/v1/ProjectTasks({id})/Assignments({id})"),
    ("DELETE", "/v1/ProjectTasks({id})/Assignments({id})"),
    ("GET", "/v1/ContactPersons"),
    ("GET", "/v1/ContactPersons({id})"),
    ("PUT", "/v1/ContactPersons({id})"),
    ("GET", "/v1/Projects"),
    ("GET", "/v1/Projects({id})"),
    ("GET", "/v1/Projects({id})/Members"),
    ("GET", "/v1/Leads"),
    ("POST", "/v1/Leads"),
    ("GET", "/v1/Leads({id})"),
    ("PUT", "/v1/Leads({id})"),
    ("DELETE", "/v1/Leads({id})"),
    ("GET", "/v1/ConfigSystemEvents/do.GetDeleted()"),
];

/// The title of the 404 for a route the simulator does not serve.
pub const NO_ROUTE: &str = "No route matches this request in the simulator";

// ---- errors ----------------------------------------------------------------

/// RFC 7807 body as ASP.NET Core writes it (A5).
pub(crate) fn problem(status: StatusCode, title: &str, errors: Option<BTreeMap<String, Vec<String>>>) -> Response {
    let trace: u128 = rand::thread_rng().gen();
    let mut body = json!({
        "type": match status.as_u16() {
            400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
            429 => "https://tools.ietf.org/html/rfc6585#section-4",
            _ => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        },
        "title": title,
        "status": status.as_u16(),
        "traceId": format!("00-{trace:032x}-{:016x}-00", trace as u64),
    });
    if let Some(e) = errors {
        body["errors"] = json!(e);
    }
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json; charset=utf-8"));
    r
}

pub(crate) fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::NotFound => problem(StatusCode::NOT_FOUND, "Not Found", None),
        WriteError::Invalid(errors) => {
            problem(StatusCode::BAD_REQUEST, "One or more validation errors occurred.", Some(errors))
        }
    }
}

fn too_many(retry_after: i64) -> Response {
    let mut r = problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", None);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
    r
}

// ---- router ----------------------------------------------------------------

fn router(shared: Arc<Shared>) -> Router {
    let api = api::routes().route_layer(middleware::from_fn_with_state(shared.clone(), guard));
    let control = Router::new()
        .route("/_sim/stats", get(stats))
        .route("/_sim/faults", post(set_faults))
        .route("/_sim/reset", post(reset))
        .route("/_sim/seed", get(seed_info).post(seed_more))
        .route("/_sim/webhooks", get(list_webhooks).post(add_webhook))
        .route("/_sim/writes", get(writes).post(record_writes));
    // An unknown route, or a known path with a method it does not have,
    // answers 404 like a route that does not exist.
    api.merge(control).fallback(no_route).method_not_allowed_fallback(no_route).with_state(shared)
}

/// Distinct unserved requests `/_sim/stats` lists by raw path; beyond, they
/// are counted under `METHOD (unrouted)`.
const UNROUTED_KEYS: usize = 1000;

/// A request no route serves: 404 like a route that does not exist, and
/// counted in `/_sim/stats` `requests` under its method and raw path (not a
/// template: it has none), so a check that every request used a route of
/// docs/hellohq-api.md sees it. Control routes (`/_sim/…`) are not counted.
async fn no_route(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/_sim/") {
        if let Ok(mut st) = s.stats.lock() {
            let mut key = format!("{} {path}", req.method());
            if !st.requests.contains_key(&key) {
                if st.unrouted_keys >= UNROUTED_KEYS {
                    key = format!("{} (unrouted)", req.method());
                } else {
                    st.unrouted_keys += 1;
                }
            }
            *st.requests.entry(key).or_default() += 1;
        }
    }
    problem(StatusCode::NOT_FOUND, NO_ROUTE, None)
}

/// Latency → auth (401) → rate limit (429) → injected faults → handler;
/// every request is counted under its route template.
async fn guard(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default();
    let template = if matched.starts_with("/v1/") { api::v1_template(req.uri().path()) } else { matched };
    let method = req.method().to_string();
    let faults = s.faults.lock().map(|f| f.clone()).unwrap_or_default();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let resp = guarded(&s, &faults, &mut req).await;
    let resp = match resp {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    };
    if let Ok(mut st) = s.stats.lock() {
        *st.requests.entry(format!("{method} {template}")).or_default() += 1;
        match resp.status() {
            StatusCode::TOO_MANY_REQUESTS => st.throttled += 1,
            StatusCode::UNAUTHORIZED => st.unauthorized += 1,
            StatusCode::INTERNAL_SERVER_ERROR => st.injected_errors += 1,
            _ => {}
        }
    }
    resp
}

async fn guarded(s: &Shared, faults: &Faults, req: &mut Request) -> Result<(), Response> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    let Some(actor) = token.as_deref().and_then(|t| s.actor_for(t)) else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    };
    let now = chrono::Utc::now().timestamp();
    let window = now.div_euclid(60);
    {
        let mut w = s.windows.lock().unwrap_or_else(|p| p.into_inner());
        let slot = w.entry(token.unwrap_or_default()).or_insert((window, 0));
        if slot.0 != window {
            *slot = (window, 0);
        }
        if slot.1 >= s.cfg.rate_limit_per_minute {
            return Err(too_many(60 - now.rem_euclid(60)));
        }
        slot.1 += 1;
    }
    let (throttle, error) = {
        let mut rng = rand::thread_rng();
        (rng.gen::<f64>() < faults.throttle_rate, rng.gen::<f64>() < faults.error_rate)
    };
    if throttle {
        return Err(too_many(1));
    }
    if error {
        return Err(problem(StatusCode::INTERNAL_SERVER_ERROR, "Injected fault", None));
    }
    req.extensions_mut().insert(actor);
    Ok(())
}

// ---- control routes --------------------------------------------------------

/// `GET /_sim/writes?after=N&limit=L`: recorded item writes (see [`crate::sim::writelog`]).
async fn writes(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<crate::sim::writelog::PageQuery>,
) -> Json<Value> {
    Json(s.with_db(|db| db.write_log.page(q.after, q.limit())))
}

/// `POST /_sim/writes {"record": true|false}`: starts (cleared) or stops the write log.
async fn record_writes(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<crate::sim::writelog::Control>(&body) {
        Ok(c) => {
            s.with_db(|db| db.write_log.set(&c));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, &format!("expected {{\"record\": true|false}}: {e}"), None),
    }
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Value> {
    let (writes, counts) = s.with_db(|db| (json!(db.writes), json!(db.counts())));
    let st = s.stats.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({
        "requests": st.requests,
        "writes": writes,
        "webhooks": {
            "sent": s.counters.sent.load(AtomicOrdering::Relaxed),
            "failed": s.counters.failed.load(AtomicOrdering::Relaxed),
            "failedAttempts": s.counters.attempts_failed.load(AtomicOrdering::Relaxed),
            "dropped": s.counters.dropped.load(AtomicOrdering::Relaxed),
            "duplicated": s.counters.duplicated.load(AtomicOrdering::Relaxed),
        },
        "throttled": st.throttled,
        "unauthorized": st.unauthorized,
        "injectedErrors": st.injected_errors,
        "counts": counts,
    }))
}

async fn set_faults(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let f: Faults = if body.iter().all(u8::is_ascii_whitespace) {
        Faults::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => return problem(StatusCode::BAD_REQUEST, &format!("bad faults: {e}"), None),
        }
    };
    if [f.error_rate, f.throttle_rate, f.drop_rate, f.duplicate_rate].iter().any(|r| !(0.0..=1.0).contains(r)) {
        return problem(StatusCode::BAD_REQUEST, "rates must lie in 0..=1", None);
    }
    *s.faults.lock().unwrap_or_else(|p| p.into_inner()) = f.clone();
    s.counters.set_drop_rate(f.drop_rate);
    s.counters.set_duplicate_rate(f.duplicate_rate);
    Json(json!({"error_rate": f.error_rate, "throttle_rate": f.throttle_rate, "latency_ms": f.latency_ms,
                "drop_rate": f.drop_rate, "duplicate_rate": f.duplicate_rate, "spelling": f.spelling,
                "spelling_per_path": f.spelling_per_path, "next_links": f.next_links,
                "expand_assignments": f.expand_assignments, "deletions_filter": f.deletions_filter}))
    .into_response()
}

#[derive(Deserialize, Default)]
struct ProfileBody {
    profile: Option<SeedProfile>,
}

/// Back to the seed profile (or the one given): data, stats, faults and
/// rate windows are cleared; registered webhook endpoints stay (they are
/// the tenant's configuration, not data).
async fn reset(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let req: ProfileBody = serde_json::from_slice(&body).unwrap_or_default();
    reset_to(&s, req.profile)
}

fn reset_to(s: &Shared, profile: Option<SeedProfile>) -> Response {
    let profile = {
        let mut p = s.profile.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(np) = profile {
            *p = np;
        }
        *p
    };
    let db = match seeded(profile, s.notify.clone()) {
        Ok(db) => db,
        Err(e) => return write_error(e),
    };
    s.with_db(|d| *d = db);
    *s.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
    *s.faults.lock().unwrap_or_else(|p| p.into_inner()) = Faults::default();
    s.windows.lock().unwrap_or_else(|p| p.into_inner()).clear();
    s.counters.reset();
    Json(json!({"profile": profile})).into_response()
}

/// `{"profile":"demo"|"empty"}` replaces the data; otherwise the body lists
/// entities to add (create bodies per table), without webhooks.
async fn seed_more(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return problem(StatusCode::BAD_REQUEST, "a JSON object is required", None),
    };
    if let Some(p) = v.get("profile") {
        return match serde_json::from_value::<SeedProfile>(p.clone()) {
            Ok(p) => reset_to(&s, Some(p)),
            Err(_) => problem(StatusCode::BAD_REQUEST, "profile must be demo or empty", None),
        };
    }
    let obj = v.as_object().cloned().unwrap_or_default();
    let res = s.with_db(|db| {
        let tx = db.set_notify(None);
        let r = seed::explicit(db, &obj);
        db.set_notify(tx);
        r
    });
    match res {
        Ok(ids) => Json(ids).into_response(),
        Err(e) => write_error(e),
    }
}

async fn seed_info(State(s): State<Arc<Shared>>) -> Json<Value> {
    let users: Vec<Value> = s.with_db(|db| {
        db.users
            .iter()
            .map(|(id, u)| {
                json!({"id": id, "firstName": u["firstName"], "lastName": u["lastName"], "eMailWork": u["eMailWork"],
                       "token": Shared::user_token(*id)})
            })
            .collect()
    });
    let user_tokens: BTreeMap<String, String> =
        users.iter().filter_map(|u| Some((u["id"].to_string(), u["token"].as_str()?.to_string()))).collect();
    let endpoints = s.endpoints.lock().map(|e| e.clone()).unwrap_or_default();
    let profile = *s.profile.lock().unwrap_or_else(|p| p.into_inner());
    Json(json!({
        "profile": profile_name(profile),
        "baseUrl": s.base_url,
        "syncToken": s.cfg.sync_token,
        "userTokens": user_tokens,
        "users": users,
        "webhooks": endpoints,
    }))
}

/// `demo` / `empty` (for `hqsync sim --hellohq-seed …` and config files).
impl std::str::FromStr for SeedProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "demo" => Ok(SeedProfile::Demo),
            "empty" => Ok(SeedProfile::Empty),
            other => Err(format!("unknown seed profile {other:?} (expected demo or empty)")),
        }
    }
}

fn profile_name(p: SeedProfile) -> &'static str {
    match p {
        SeedProfile::Demo => "demo",
        SeedProfile::Empty => "empty",
    }
}

impl serde::Serialize for SeedProfile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(profile_name(*self))
    }
}

#[derive(Deserialize)]
struct NewWebhook {
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

async fn add_webhook(State(s): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<NewWebhook>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "body must be {\"url\", \"secret\"?}", None);
    };
    if url::Url::parse(&req.url).map(|u| !matches!(u.scheme(), "http" | "https")).unwrap_or(true) {
        return problem(StatusCode::BAD_REQUEST, "url must be an absolute http(s) URL", None);
    }
    let secret = req.secret.unwrap_or_else(webhooks::generate_secret);
    if webhooks::secret_key(&secret).is_err() {
        return problem(StatusCode::BAD_REQUEST, "secret must be whsec_<base64>", None);
    }
    let ep = webhooks::Endpoint { id: format!("ep_{}", uuid::Uuid::new_v4().simple()), url: req.url, secret };
    s.endpoints.lock().unwrap_or_else(|p| p.into_inner()).push(ep.clone());
    (StatusCode::CREATED, Json(json!(ep))).into_response()
}

async fn list_webhooks(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(s.endpoints.lock().map(|e| e.clone()).unwrap_or_default()))
}
