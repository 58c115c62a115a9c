//! Prometheus metrics: one process-wide recorder, the request middleware
//! and the few counters the ingress path feeds. Labels carry route
//! templates, origins and reasons — never ids, tokens or secrets.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::queue::{Hint, Origin, QueueDepth};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder on first use and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency_buckets =
                [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency_buckets)
                .expect("non-empty bucket list")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this handle's view");
            }
            handle
        })
        .clone()
}

/// The `method` label: one of the standard methods, else `other` (any
/// token is a valid HTTP method, and each new label value is a new series
/// kept for good).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts and times every request by route template, method and status,
/// all from closed sets: a route the router knows (else `unmatched`), a
/// standard method (else `other`), the status hqsync answered.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    counter!("hqsync_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    histogram!("hqsync_http_request_duration_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    resp
}

pub fn record_publish(took: Duration, ok: bool) {
    histogram!("hqsync_publish_confirm_seconds", "outcome" => if ok { "confirmed" } else { "failed" })
        .record(took.as_secs_f64());
}

pub fn hint_published(h: &Hint) {
    let origin = match h.origin {
        Origin::Exchange => "exchange",
        Origin::Hellohq => "hellohq",
        Origin::Schedule => "schedule",
    };
    counter!("hqsync_hints_published_total", "origin" => origin).increment(1);
}

pub fn hint_rejected(source: &'static str, reason: &'static str) {
    counter!("hqsync_hints_rejected_total", "source" => source, "reason" => reason).increment(1);
}

pub fn queue_depth(d: &QueueDepth) {
    gauge!("hqsync_queue_depth", "state" => "ready").set(d.ready as f64);
    gauge!("hqsync_queue_depth", "state" => "retrying").set(d.retrying as f64);
    gauge!("hqsync_queue_depth", "state" => "dead").set(d.dead as f64);
    if let Some(u) = d.unacked {
        gauge!("hqsync_queue_depth", "state" => "unacked").set(u as f64);
    }
}

/// Worker outcomes (`processed`, `duplicate`, `retried`, `deferred`, `dead_lettered`).
pub fn worker_outcome(outcome: &'static str) {
    counter!("hqsync_worker_hints_total", "outcome" => outcome).increment(1);
}
