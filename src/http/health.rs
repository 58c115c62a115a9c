//! Liveness, readiness and the Prometheus scrape.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::{metrics, AppState};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness of each dependency: `ok` or the reason it is not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub store: String,
    pub queue: String,
    /// Present when this process runs the scheduler: `ok`, or how long it
    /// has not completed a pass (not ready after three tick intervals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The store and the queue are reachable, and the scheduler (when this
/// process runs it) has completed a pass within three tick intervals.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is unreachable, or the scheduler is stuck", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let (store, queue) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.queue.ready())
    );
    let say = |r: Result<Result<(), String>, tokio::time::error::Elapsed>| match r {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
    };
    let body = Readiness {
        store: say(store.map(|r| r.map_err(|e| e.to_string()))),
        queue: say(queue.map(|r| r.map_err(|e| e.to_string()))),
        scheduler: state.scheduler.check((state.clock)()).map(|r| r.err().unwrap_or_else(|| "ok".into())),
    };
    let status = if body.store == "ok" && body.queue == "ok" && body.scheduler.as_deref().is_none_or(|s| s == "ok") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(Ok(depth)) = tokio::time::timeout(CHECK_TIMEOUT, state.queue.depth()).await {
        metrics::queue_depth(&depth);
    }
    let handle = metrics::handle();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}
