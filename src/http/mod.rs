//! The axum edge: Graph notifications and lifecycle events, helloHQ
//! webhooks, health and metrics. It verifies, turns valid input into
//! `Hint`s, publishes them and answers only after the queue confirmed.
//! It never calls Graph or helloHQ.

pub mod admin;
pub mod cache;
pub mod error;
pub mod extract;
pub mod graph;
pub mod health;
pub mod hellohq;
pub mod metrics;
pub mod openapi;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Router;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::queue::{Hint, Queue, QueueError};
use crate::store::Store;

/// Injected clock (tests move time; production reads the system clock).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Everything a request handler may touch. axum clones the state into
/// every request, so it is one shared pointer: cloning and moving it (and
/// the futures that hold it) costs a reference count, not a copy of the
/// store, queue, caches and engine.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl std::ops::Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// What [`AppState`] points to.
#[derive(Clone)]
pub struct AppContext {
    pub store: Store,
    pub queue: Queue,
    pub publish_timeout: Duration,
    pub max_body_bytes: usize,
    pub clock: Clock,
    pub subscriptions: cache::SubscriptionCache,
    pub webhook_secrets: cache::WebhookSecretCache,
    /// Verifies admin tokens; `None` = the admin API is not configured.
    pub admin: admin::SharedAuth,
    /// For the plan, approvals and the connection test.
    pub engine: crate::engine::Engine,
    /// Where Graph and helloHQ reach this service (connection test).
    pub public_url: String,
    /// The scheduler of this process, if it runs one (`/readyz`).
    pub scheduler: crate::scheduler::SchedulerHealth,
}

impl AppState {
    pub fn new(store: Store, queue: Queue, publish_timeout: Duration, max_body_bytes: usize) -> Self {
        // Install the recorder before the first request is counted.
        metrics::handle();
        AppState(Arc::new(AppContext {
            subscriptions: cache::SubscriptionCache::new(store.clone()),
            webhook_secrets: cache::WebhookSecretCache::new(store.clone()),
            admin: None,
            engine: crate::engine::Engine::new(store.clone()),
            public_url: String::new(),
            scheduler: Default::default(),
            store,
            queue,
            publish_timeout,
            max_body_bytes,
            clock: system_clock(),
        }))
    }

    /// Enables the admin API and status page with this verifier.
    pub fn with_admin(mut self, auth: Option<admin::AdminAuth>, public_url: impl Into<String>) -> Self {
        let ctx = Arc::make_mut(&mut self.0);
        ctx.admin = auth.map(Arc::new);
        ctx.public_url = public_url.into();
        self
    }

    /// Plans, approvals and connection tests with this engine (the configured Graph settings).
    pub fn with_engine(mut self, engine: crate::engine::Engine) -> Self {
        Arc::make_mut(&mut self.0).engine = engine;
        self
    }

    /// `/readyz` reports this scheduler (when it runs in this process).
    pub fn with_scheduler_health(mut self, health: crate::scheduler::SchedulerHealth) -> Self {
        Arc::make_mut(&mut self.0).scheduler = health;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        Arc::make_mut(&mut self.0).clock = clock;
        self
    }

    /// Publishes and waits for the queue's confirm, bounded by the publish
    /// timeout; `Err` becomes a 503 so the sender retries.
    pub async fn publish_confirmed(&self, hints: &[Hint]) -> Result<(), ApiError> {
        if hints.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let res = tokio::time::timeout(self.publish_timeout, self.queue.publish(hints)).await;
        metrics::record_publish(started.elapsed(), res.as_ref().is_ok_and(|r| r.is_ok()));
        match res {
            Ok(Ok(())) => {
                for h in hints {
                    metrics::hint_published(h);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(ApiError::unavailable(&e)),
            Err(_) => Err(ApiError::unavailable(&QueueError::Unavailable(format!(
                "no confirm within {} ms",
                self.publish_timeout.as_millis()
            )))),
        }
    }
}

/// The whole HTTP surface and its OpenAPI document, built together so the
/// document cannot name a route that does not exist, nor miss one.
pub fn router_and_spec(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut spec) = api_router().split_for_parts();
    finish_spec(&mut spec);
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(request_timeout))
        .layer(axum::middleware::from_fn(metrics::track_requests));
    (router, spec)
}

/// Any path the API does not have: the JSON error body, not an empty 404.
async fn not_found() -> ApiError {
    ApiError::not_found("no_route", "no such route; see openapi/hqsync.json for the API")
}

/// A method the route does not take: the JSON error body (axum keeps the `Allow` header).
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take this method; the Allow header lists the ones it does",
    )
}

pub fn router(state: AppState) -> Router {
    router_and_spec(state).0
}

/// The OpenAPI document alone (no state needed).
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    let mut spec = api_router::<AppState>().split_for_parts().1;
    finish_spec(&mut spec);
    spec
}

/// What the path annotations cannot say: Graph's notification routes take
/// no body with the validation handshake, so theirs is optional.
fn finish_spec(spec: &mut utoipa::openapi::OpenApi) {
    for path in ["/v1/notifications/graph", "/v1/notifications/graph/lifecycle"] {
        if let Some(body) =
            spec.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()).and_then(|op| op.request_body.as_mut())
        {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

fn api_router<S>() -> OpenApiRouter<S>
where
    AppState: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(graph::notifications))
        .routes(routes!(graph::lifecycle))
        .routes(routes!(hellohq::webhook))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(admin::list_tenants, admin::create_tenant))
        .routes(routes!(admin::get_tenant, admin::update_tenant, admin::delete_tenant))
        .routes(routes!(admin::test_tenant))
        .routes(routes!(admin::list_mailboxes))
        .routes(routes!(admin::update_mailbox))
        .routes(routes!(admin::approve))
        .routes(routes!(admin::held))
        .routes(routes!(admin::journal))
        .routes(routes!(admin::plan))
        .routes(routes!(admin::dead_letters))
        .routes(routes!(admin::replay))
        .routes(routes!(status::page))
        .routes(routes!(status::login_form, status::login))
        .routes(routes!(status::logout))
}

/// A client must send a request's whole header within this (then the
/// connection is closed): a connection that sends half a header and
/// waits cannot hold a slot longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must arrive within this (`408` otherwise).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole request, handling included, within this (`408` otherwise). Above
/// the connection test's worst case (Graph's retry budget is 120 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Open connections at most; the next one waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves until `shutdown` is cancelled, then stops accepting and lets
/// in-flight requests finish. HTTP/1.1 with the limits above: a header
/// read timeout per request, the body and request timeouts (in the
/// router), and at most [`MAX_CONNECTIONS`] connections at once.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_with(listener, app, shutdown, ServerLimits::default()).await
}

/// The connection-level limits of [`serve_with`].
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { header_read_timeout: HEADER_READ_TIMEOUT, max_connections: MAX_CONNECTIONS }
    }
}

/// [`serve`] with other connection limits (tests shorten them).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> std::io::Result<()> {
    let max_connections = limits.max_connections;
    let header_read_timeout = limits.header_read_timeout;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let svc = app.clone().map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new));
        let svc = TowerToHyperService::new(svc);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Answers `408` when a request (body and handling) takes longer than [`REQUEST_TIMEOUT`].
async fn request_timeout(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
        )
        .into_response(),
    }
}

/// Reads a request body up to `limit` bytes: 413 beyond it (checked against
/// Content-Length first, so an oversized upload is refused before it is read).
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body exceeds {limit} bytes"))
    };
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(r) => r.map_err(|_| too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()),
        )),
    }
}

/// 415 unless the request says it carries JSON.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ))
    }
}
