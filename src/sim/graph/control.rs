//! `/_sim/…` control routes: stats, fault injection, reset, seeding, lifecycle
//! events on demand, delta-token eviction, the clock and the access policy.
//! These exist only in the simulator; they need no token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::GraphError;
use super::model::{SeedSpec, World};
use super::{contacts, events, lock, notifier, subscriptions, todo, wire, SeedProfile, Shared};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub requests: BTreeMap<String, u64>,
    pub writes: BTreeMap<String, u64>,
    pub notifications_sent: u64,
    pub notifications_failed: u64,
    pub notifications_dropped: u64,
    pub notification_posts: u64,
    pub notification_attempts_failed: u64,
    pub lifecycle_sent: u64,
    pub lifecycle_failed: u64,
    /// Change notifications held back because their URL was flagged slow.
    pub notifications_delayed: u64,
    /// Change notifications dropped because their URL was flagged too slow (also in `dropped`).
    pub notifications_dropped_slow: u64,
    /// Change notifications delivered a second time by the duplicate fault.
    pub notifications_duplicated: u64,
    pub throttled: u64,
    pub faults_503: u64,
}

impl Stats {
    pub fn count_request(&mut self, method: &Method, template: &str) {
        *self.requests.entry(format!("{method} {template}")).or_default() += 1;
    }
    pub fn count_write(&mut self, kind: &str) {
        *self.writes.entry(kind.to_string()).or_default() += 1;
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub(crate) struct Faults {
    pub error_rate: f64,
    pub throttle_rate: f64,
    pub latency_ms: u64,
    pub drop_notification_rate: f64,
    /// Share of delivered change notifications posted once more, alone and a
    /// little later (Graph delivers at least once, in no guaranteed order).
    pub duplicate_notification_rate: f64,
    /// Every delta page that follows a link repeats the items of the page before it.
    pub delta_replay: bool,
    /// An empty page carrying `@odata.nextLink` goes ahead of every non-empty delta page.
    pub delta_empty_pages: bool,
    /// `resource` of change notifications: `"path"` (`Users/{id}/Events/{id}`), `"odata"`
    /// (`Users('{id}')/events('{id}')`); absent = either, chosen per item from its id.
    pub notification_resource_style: Option<String>,
    /// `resourceData.@odata.type`: `"pascal"` (`#Microsoft.Graph.Event`), `"camel"`
    /// (`#microsoft.graph.event`); absent = either, chosen per item from its id.
    pub notification_type_casing: Option<String>,
    /// `"enforce"` | `"ignore"`: whether `If-Match` on Outlook item writes is honoured (absent = the configuration).
    #[serde(alias = "ifMatch")]
    pub if_match: Option<String>,
}

/// Forced 429/503 at the configured rates.
pub(crate) fn injected_fault(shared: &Shared) -> Result<(), GraphError> {
    let f = lock(&shared.faults).clone();
    let mut rng = rand::thread_rng();
    if f.throttle_rate > 0.0 && rng.gen::<f64>() < f.throttle_rate {
        return Err(GraphError::throttled(&wire::fractional_seconds(0.5, 3.0)));
    }
    if f.error_rate > 0.0 && rng.gen::<f64>() < f.error_rate {
        lock(&shared.stats).faults_503 += 1;
        return Err(GraphError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceNotAvailable", "Service Unavailable")
            .with_header("Retry-After", &wire::fractional_seconds(0.5, 2.0)));
    }
    Ok(())
}

fn control_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"code": "BadRequest", "message": message}}))).into_response()
}

/// `GET /_sim/writes?after=N&limit=L`: recorded item writes (see [`crate::sim::writelog`]).
pub(crate) async fn writes(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<crate::sim::writelog::PageQuery>,
) -> Json<Value> {
    Json(lock(&shared.write_log).page(q.after, q.limit()))
}

/// `POST /_sim/writes {"record": true|false}`: starts (cleared) or stops the write log.
pub(crate) async fn record_writes(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<crate::sim::writelog::Control>(&body) {
        Ok(c) => {
            lock(&shared.write_log).set(&c);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => control_error(StatusCode::BAD_REQUEST, &format!("expected {{\"record\": true|false}}: {e}")),
    }
}

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let (max_concurrent, peaks) = {
        let t = lock(&shared.throttle);
        (t.max_concurrent(), t.peak_per_window())
    };
    let (items, concurrency, peak_per_window, subs) = {
        let w = lock(&shared.world);
        let mut items = serde_json::Map::new();
        let mut conc = serde_json::Map::new();
        let mut peak = serde_json::Map::new();
        for mb in &w.mailboxes {
            let mut c = contacts::counts(mb);
            c["events"] = json!(events::counts(mb));
            let (lists, tasks) = todo::counts(mb);
            c["todoLists"] = json!(lists);
            c["tasks"] = json!(tasks);
            c["subscriptions"] = json!(w.subscriptions.values().filter(|s| s.mailbox_id == mb.id).count());
            items.insert(mb.upn.clone(), c);
            conc.insert(mb.upn.clone(), json!(max_concurrent.get(&mb.id).copied().unwrap_or(0)));
            peak.insert(mb.upn.clone(), json!(peaks.get(&mb.id).copied().unwrap_or(0)));
        }
        (items, conc, peak, w.subscriptions.len())
    };
    let st = lock(&shared.stats);
    Json(json!({
        "requests": st.requests,
        "writes": st.writes,
        "notifications": {
            "sent": st.notifications_sent, "failed": st.notifications_failed, "dropped": st.notifications_dropped,
            "posts": st.notification_posts, "failedAttempts": st.notification_attempts_failed,
            "delayed": st.notifications_delayed, "droppedSlow": st.notifications_dropped_slow,
            "duplicated": st.notifications_duplicated,
        },
        "lifecycle": {"sent": st.lifecycle_sent, "failed": st.lifecycle_failed},
        "throttled": st.throttled,
        "faults503": st.faults_503,
        "subscriptions": subs,
        "items": items,
        "maxConcurrent": concurrency,
        "peakRequestsPerWindow": peak_per_window,
    }))
}

pub(crate) async fn faults(State(shared): State<Arc<Shared>>, Json(f): Json<Faults>) -> Response {
    let styles =
        [(&f.notification_resource_style, ["path", "odata"]), (&f.notification_type_casing, ["pascal", "camel"])];
    for (value, allowed) in styles {
        if value.as_deref().is_some_and(|v| !allowed.contains(&v)) {
            return control_error(StatusCode::BAD_REQUEST, &format!("style must be one of {allowed:?}"));
        }
    }
    if f.if_match.as_deref().is_some_and(|v| v.parse::<super::IfMatch>().is_err()) {
        return control_error(StatusCode::BAD_REQUEST, "ifMatch must be one of [\"enforce\", \"ignore\"]");
    }
    *lock(&shared.faults) = f.clone();
    Json(serde_json::to_value(&f).unwrap_or_default()).into_response()
}

fn replace_world(shared: &Shared, world: World) {
    *lock(&shared.world) = world;
    *lock(&shared.stats) = Stats::default();
    *lock(&shared.faults) = Faults::default();
    lock(&shared.throttle).clear();
    *lock(&shared.endpoints) = notifier::Endpoints::default();
    shared.clock.reset();
}

pub(crate) async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    replace_world(&shared, World::seeded(shared.cfg.seed));
    StatusCode::NO_CONTENT
}

pub(crate) async fn post_seed(State(shared): State<Arc<Shared>>, Json(spec): Json<SeedSpec>) -> Response {
    let world = match spec.profile.as_deref() {
        Some("demo") => World::seeded(SeedProfile::Demo),
        Some("empty") => World::seeded(SeedProfile::Empty),
        Some(other) => return control_error(StatusCode::BAD_REQUEST, &format!("unknown profile '{other}'")),
        None => match World::from_spec(spec) {
            Ok(w) => w,
            Err(e) => return control_error(StatusCode::BAD_REQUEST, &e),
        },
    };
    replace_world(&shared, world);
    get_seed(State(shared)).await.into_response()
}

pub(crate) async fn get_seed(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let w = lock(&shared.world);
    Json(json!({
        "tenantId": w.tenant_id,
        "domain": w.domain,
        "clientId": w.app.client_id,
        "clientSecret": w.app.client_secret,
        "roles": w.app.roles,
        "mailboxes": w.mailboxes.iter().map(|m| json!({
            "id": m.id, "userPrincipalName": m.upn, "displayName": m.display_name,
            "inPolicyScope": m.in_policy_scope, "defaultContactFolderId": m.default_contact_folder_id,
        })).collect::<Vec<_>>(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LifecycleReq {
    subscription_id: String,
    event: String,
}

pub(crate) async fn lifecycle(State(shared): State<Arc<Shared>>, Json(req): Json<LifecycleReq>) -> Response {
    if !["subscriptionRemoved", "missed", "reauthorizationRequired"].contains(&req.event.as_str()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            "event must be subscriptionRemoved, missed or reauthorizationRequired",
        );
    }
    let item = {
        let mut w = lock(&shared.world);
        let Some(s) = w.subscriptions.get(&req.subscription_id).cloned() else {
            return control_error(StatusCode::NOT_FOUND, "no such subscription");
        };
        let Some(item) = subscriptions::lifecycle_item(&w, &s, &req.event) else {
            return control_error(StatusCode::CONFLICT, "the subscription has no lifecycleNotificationUrl");
        };
        match req.event.as_str() {
            "subscriptionRemoved" => {
                w.subscriptions.remove(&s.id);
            }
            "reauthorizationRequired" => {
                if let Some(sub) = w.subscriptions.get_mut(&s.id) {
                    sub.needs_reauthorization = true;
                }
            }
            _ => {}
        }
        item
    };
    notifier::enqueue(&shared, vec![item]);
    StatusCode::ACCEPTED.into_response()
}

pub(crate) async fn evict_delta(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut w = lock(&shared.world);
    let n = w.delta_tokens.len();
    w.delta_tokens.clear();
    Json(json!({"evicted": n}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClockReq {
    advance_minutes: i64,
}

pub(crate) async fn clock(State(shared): State<Arc<Shared>>, Json(req): Json<ClockReq>) -> Json<Value> {
    shared.clock.advance(chrono::Duration::minutes(req.advance_minutes));
    subscriptions::sweep(&shared);
    Json(json!({"now": wire::ts_7(shared.clock.now())}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyReq {
    mailbox: String,
    in_scope: bool,
}

pub(crate) async fn policy(State(shared): State<Arc<Shared>>, Json(req): Json<PolicyReq>) -> Response {
    let mut w = lock(&shared.world);
    match w.mailbox_index(&req.mailbox) {
        Some(i) => {
            w.mailboxes[i].in_policy_scope = req.in_scope;
            StatusCode::NO_CONTENT.into_response()
        }
        None => control_error(StatusCode::NOT_FOUND, "no such mailbox"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MoveReq {
    mailbox: String,
    list_id: String,
    task_id: String,
    to_list_id: String,
}

/// A To Do task moved to another list, as the To Do apps do it (remove + create, new id).
pub(crate) async fn move_task(State(shared): State<Arc<Shared>>, Json(req): Json<MoveReq>) -> Response {
    let now = shared.clock.now();
    let moved = {
        let mut w = lock(&shared.world);
        let moved = todo::move_task(&mut w, &req.mailbox, &req.list_id, &req.task_id, &req.to_list_id, now);
        if let Ok(v) = &moved {
            // Removed from one list, created in the other: each list's subscriptions hear of it.
            let mb_id = w.mailbox_index(&req.mailbox).map(|i| w.mailboxes[i].id.clone()).unwrap_or_default();
            let new_id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
            let ck = v.get("@odata.etag").and_then(Value::as_str).unwrap_or_default();
            let ck = ck.trim_start_matches("W/").trim_matches('"').to_string();
            todo::notify_task(&shared, &w, &mb_id, &req.list_id, &req.task_id, &ck, "deleted");
            todo::notify_task(&shared, &w, &mb_id, &req.to_list_id, &new_id, &ck, "created");
        }
        moved
    };
    match moved {
        Ok(v) => {
            lock(&shared.stats).count_write("todoTask");
            (StatusCode::OK, Json(v)).into_response()
        }
        Err((status, message)) => control_error(status, &message),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MoveContactReq {
    /// Mailbox UPN or id.
    pub mailbox: String,
    /// The contact's immutable id or its current regular id.
    pub id: String,
    /// Target contact folder (one of the mailbox's folders, or its default Contacts folder).
    pub folder_id: String,
}

/// `POST /_sim/move`: a user drags a contact to another folder in Outlook.
pub(crate) async fn move_contact(State(shared): State<Arc<Shared>>, Json(req): Json<MoveContactReq>) -> Response {
    match contacts::move_contact(&shared, &req.mailbox, &req.id, &req.folder_id) {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err((status, message)) => control_error(status, &message),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RolesReq {
    roles: Vec<String>,
}

/// `POST /_sim/roles {"roles": [...]}`: the application permissions an admin
/// consented to; tokens issued from now on carry them in `roles` (tokens
/// already issued keep theirs, as Entra's do until they expire).
pub(crate) async fn roles(State(shared): State<Arc<Shared>>, Json(req): Json<RolesReq>) -> Json<Value> {
    let mut w = lock(&shared.world);
    w.app.roles = req.roles;
    Json(json!({"roles": w.app.roles}))
}
