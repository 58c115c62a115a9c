//! Microsoft Graph change and lifecycle notifications (GRAPH.md §4): the
//! validation handshake, then per-item trust checks against the stored
//! subscription, then publish-then-202. The tenant always comes from the
//! subscription record, never from the payload.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::ApiQuery;
use super::{metrics, read_body, require_json, ApiError, AppState};
use crate::connectors::graph::notification::{parse_batch, ItemKind, LifecycleEvent, NotificationItem};
use crate::queue::{Change, Hint, Origin, HINT_VERSION};

/// Items one notification POST may carry. Graph documents no maximum;
/// the batches it sends are small (the changes of a few seconds for the
/// subscriptions pointing at one URL: the examples in Microsoft's docs hold
/// one or two, our simulator's fault suites reach a few hundred). 1,000 is
/// far above that and bounds the work an unauthenticated POST can cause
/// (a 1 MiB body can otherwise hold ~16,000 made-up items, each a lookup).
/// A larger batch is refused with `413`; whatever it held is re-read by the
/// next delta pass.
pub const MAX_NOTIFICATION_ITEMS: usize = 1000;

/// Dropped items are logged in aggregate, at most one line per minute
/// (each also counts in `hqsync_hints_rejected_total{source,reason}`), so
/// a flood of forged notifications cannot flood the log.
struct DropLog {
    since_last: AtomicU64,
    last_ms: AtomicI64,
}

static DROP_LOG: DropLog = DropLog { since_last: AtomicU64::new(0), last_ms: AtomicI64::new(0) };

impl DropLog {
    fn dropped(&self, source: &'static str, reason: &'static str, example: &str) {
        metrics::hint_rejected(source, reason);
        self.since_last.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= 60_000
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let n = self.since_last.swap(0, Ordering::Relaxed);
            let example: String = example.chars().take(80).collect::<String>().escape_debug().to_string();
            tracing::warn!(
                dropped = n,
                last_reason = reason,
                last_subscription = %example,
                "dropped Graph notifications since the last such line (at most one per minute; \
                 hqsync_hints_rejected_total has them by reason)"
            );
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ValidationQuery {
    /// Sent by Graph when a subscription is created; echoed back as text.
    #[serde(rename = "validationToken")]
    #[param(rename = "validationToken")]
    pub validation_token: Option<String>,
}

/// A batch of change notifications as Graph posts it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct NotificationBatch {
    /// Change notifications (`subscriptionId`, `clientState`, `changeType`,
    /// `resource`, `resourceData`, `tenantId`) or lifecycle notifications
    /// (`lifecycleEvent`).
    value: Vec<serde_json::Value>,
}

/// The answers of both notification routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum NotificationResponses {
    /// Validation handshake: the decoded token as text/plain
    #[response(status = 200, content_type = "text/plain")]
    Handshake(String),
    /// Every trusted item is durably queued; untrusted items were dropped
    #[response(status = 202)]
    Accepted,
    /// The body is not a notification batch, or the query string does not decode
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// Body over the size limit, or more than 1,000 items
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Body is not JSON
    #[response(status = 415)]
    NotJson(ErrorBody),
    /// The queue did not confirm in time: Graph retries
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Graph change notifications for events and contacts.
#[utoipa::path(
    post,
    path = "/v1/notifications/graph",
    tag = "ingress",
    params(ValidationQuery),
    request_body(content = NotificationBatch, content_type = "application/json", description = "Not sent with `validationToken` (the handshake)"),
    responses(NotificationResponses)
)]
pub async fn notifications(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ValidationQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(state, q, headers, body, "graph").await
}

/// Graph lifecycle notifications (`subscriptionRemoved`, `missed`,
/// `reauthorizationRequired`).
#[utoipa::path(
    post,
    path = "/v1/notifications/graph/lifecycle",
    tag = "ingress",
    params(ValidationQuery),
    request_body(content = NotificationBatch, content_type = "application/json", description = "Not sent with `validationToken` (the handshake)"),
    responses(NotificationResponses)
)]
pub async fn lifecycle(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ValidationQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(state, q, headers, body, "graph_lifecycle").await
}

async fn receive(
    state: AppState,
    q: ValidationQuery,
    headers: HeaderMap,
    body: Body,
    source: &'static str,
) -> Result<Response, ApiError> {
    if let Some(token) = q.validation_token {
        // The query extractor already URL-decoded the token; Graph wants it
        // back verbatim as plain text (never HTML: it is attacker-shaped).
        return Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            token,
        )
            .into_response());
    }
    let bytes = read_body(&headers, body, state.max_body_bytes).await?;
    require_json(&headers)?;
    let items = parse_batch(&bytes).map_err(|e| ApiError::bad_request("malformed_notification", e.to_string()))?;
    if items.len() > MAX_NOTIFICATION_ITEMS {
        metrics::hint_rejected(source, "too_many_items");
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!("a notification batch holds at most {MAX_NOTIFICATION_ITEMS} items; this one has {}", items.len()),
        ));
    }
    let now = chrono::Utc::now();
    let mut hints = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Ok(item) => match trust(&state, &item, now).await? {
                Ok(hint) => hints.push(hint),
                Err(reason) => DROP_LOG.dropped(source, reason, &item.subscription_id),
            },
            Err(_) => DROP_LOG.dropped(source, "malformed", ""),
        }
    }
    state.publish_confirmed(&hints).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Checks one item against its subscription. `Ok(Err(reason))` = drop it.
async fn trust(
    state: &AppState,
    item: &NotificationItem,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Result<Hint, &'static str>, ApiError> {
    let Some(sub) = state.subscriptions.get(&item.subscription_id).await.map_err(|e| ApiError::unavailable(&e))? else {
        return Ok(Err("unknown_subscription"));
    };
    let presented = Sha256::digest(item.client_state.as_deref().unwrap_or("").as_bytes());
    if !bool::from(presented.as_slice().ct_eq(&sub.client_state_sha256)) {
        return Ok(Err("client_state_mismatch"));
    }
    if let Some(tid) = &item.tenant_id {
        if !tid.eq_ignore_ascii_case(&sub.entra_tenant_id) {
            return Ok(Err("tenant_mismatch"));
        }
    }
    let (change, resource_id, version) = match item.kind.clone() {
        ItemKind::Change { change, resource_id, version } => (change, resource_id, version),
        ItemKind::Lifecycle(LifecycleEvent::Missed) => (Change::Resync, None, None),
        ItemKind::Lifecycle(LifecycleEvent::SubscriptionRemoved) => (Change::SubscriptionRemoved, None, None),
        ItemKind::Lifecycle(LifecycleEvent::ReauthorizationRequired) => (Change::ReauthorizationRequired, None, None),
    };
    let hint_id = match &item.notification_id {
        Some(nid) => Hint::stable_id(&sub.tenant, "graph", &format!("{}/{nid}", sub.id)),
        None => Uuid::new_v4(),
    };
    Ok(Ok(Hint {
        v: HINT_VERSION,
        hint_id,
        tenant: sub.tenant.clone(),
        mailbox: Some(sub.mailbox.clone()),
        kind: Some(sub.kind),
        entity: None,
        origin: Origin::Exchange,
        resource_id,
        version,
        subscription_id: Some(sub.id.clone()),
        change,
        received_at: now,
    }))
}
