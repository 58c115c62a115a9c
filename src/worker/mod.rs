//! The worker role: consume hints, hand each to the engine, settle it only
//! after the engine's work is committed (ack), or schedule a retry (a
//! failed attempt), or defer it (waiting for another worker: no attempt
//! counted), or dead-letter it. On shutdown it stops taking new hints and lets in-flight
//! ones finish (bounded by the drain timeout); anything unfinished stays
//! unacked and is redelivered to another worker.

pub mod presence;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Engine, EngineError, Outcome};
use crate::http::metrics::worker_outcome;
use crate::queue::{Change, Consumer, Delivery, Queue};
use crate::scheduler::{Scheduler, SchedulerError};

#[derive(Clone)]
pub struct Worker {
    pub queue: Queue,
    /// Handles Graph lifecycle hints (subscription removed, reauthorization
    /// required); without one they are only recorded.
    pub lifecycle: Option<Arc<Scheduler>>,
    pub engine: Engine,
    pub concurrency: usize,
    pub drain_timeout: Duration,
    /// Retry delays by attempt (the last one repeats).
    pub retry_delays: Vec<Duration>,
}

impl Worker {
    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let mut consumer: Option<Box<dyn Consumer>> = None;
        let mut backoff = Duration::from_millis(100);
        tracing::info!(concurrency = self.concurrency, "worker started");
        while !shutdown.is_cancelled() {
            let c = match consumer.as_mut() {
                Some(c) => c,
                None => match self.queue.consumer().await {
                    Ok(c) => {
                        backoff = Duration::from_millis(100);
                        consumer.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot open a consumer");
                        pause(&shutdown, &mut backoff).await;
                        continue;
                    }
                },
            };
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break,
            };
            let next = tokio::select! {
                n = c.next() => n,
                _ = shutdown.cancelled() => break,
            };
            match next {
                Ok(Some(delivery)) => {
                    let this = self.clone();
                    tracker.spawn(async move {
                        this.process(delivery).await;
                        drop(permit);
                    });
                }
                Ok(None) => consumer = None,
                Err(e) => {
                    tracing::warn!(error = %e, "consumer failed; reopening");
                    consumer = None;
                    pause(&shutdown, &mut backoff).await;
                }
            }
        }
        if let Some(mut c) = consumer {
            c.close().await;
        }
        tracker.close();
        let in_flight = tracker.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "draining in-flight hints");
        }
        if tokio::time::timeout(self.drain_timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                left = tracker.len(),
                "drain timeout passed; unfinished hints stay unacked and will be redelivered"
            );
        }
        tracing::info!("worker stopped");
    }

    async fn process(&self, d: Delivery) {
        let hint = match &d.hint {
            Ok(h) => h.clone(),
            Err(reason) => {
                let reason = format!("undecodable hint: {reason}");
                tracing::error!(%reason, "dead-lettering");
                settle(d.dead_letter(&reason).await, "dead_lettered");
                return;
            }
        };
        if let (Some(scheduler), Change::SubscriptionRemoved | Change::ReauthorizationRequired) =
            (&self.lifecycle, hint.change)
        {
            match scheduler.handle_lifecycle(&hint).await {
                Ok(outcome) => tracing::info!(hint_id = %hint.hint_id, ?outcome, "lifecycle event handled"),
                Err(e) if lifecycle_transient(&e) => {
                    tracing::warn!(hint_id = %hint.hint_id, error = %e, "lifecycle event failed; retrying later");
                    let delay = self.retry_delays.first().copied().unwrap_or(Duration::from_secs(5));
                    settle(d.retry(delay).await, "retried");
                    return;
                }
                Err(e) => {
                    tracing::error!(hint_id = %hint.hint_id, error = %e, "lifecycle event cannot be handled; dead-lettering");
                    settle(d.dead_letter(&e.to_string()).await, "dead_lettered");
                    return;
                }
            }
        }
        match self.engine.handle(&hint).await {
            Ok(Outcome::Applied) => settle(d.ack().await, "processed"),
            Ok(Outcome::Duplicate) => settle(d.ack().await, "duplicate"),
            Err(EngineError::Waiting(e)) if waits_uncounted(&hint) => {
                // Another worker's claim, lock or merge: not a failure of
                // this delivery, so it keeps its attempt number.
                let delay = self.retry_delays.first().copied().unwrap_or(Duration::from_secs(5));
                tracing::info!(
                    hint_id = %hint.hint_id,
                    origin = ?hint.origin,
                    change = ?hint.change,
                    mailbox = hint.mailbox.as_ref().map(|m| m.as_str()),
                    kind = hint.kind.map(|k| k.as_str()),
                    resource = hint.resource_id.as_deref(),
                    attempt = d.attempt,
                    reason = %e,
                    retry_in_s = delay.as_secs(),
                    "waiting for another worker; running again later"
                );
                settle(d.defer(delay).await, "deferred");
            }
            Err(EngineError::Transient(e) | EngineError::Waiting(e)) => {
                let idx = (d.attempt.max(1) as usize - 1).min(self.retry_delays.len().saturating_sub(1));
                let delay = self.retry_delays.get(idx).copied().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    hint_id = %hint.hint_id,
                    origin = ?hint.origin,
                    change = ?hint.change,
                    mailbox = hint.mailbox.as_ref().map(|m| m.as_str()),
                    kind = hint.kind.map(|k| k.as_str()),
                    entity = ?hint.entity,
                    resource = hint.resource_id.as_deref(),
                    attempt = d.attempt,
                    error = %e,
                    retry_in_s = delay.as_secs(),
                    "retrying later"
                );
                settle(d.retry(delay).await, "retried");
            }
            Err(EngineError::Permanent(e)) => {
                tracing::error!(
                    hint_id = %hint.hint_id,
                    origin = ?hint.origin,
                    mailbox = hint.mailbox.as_ref().map(|m| m.as_str()),
                    kind = hint.kind.map(|k| k.as_str()),
                    resource = hint.resource_id.as_deref(),
                    error = %e,
                    "dead-lettering"
                );
                settle(d.dead_letter(&e).await, "dead_lettered");
            }
        }
    }
}

/// How long after it was received a hint may wait for other workers
/// without its deliveries counting: far beyond any claim's or pair lock's
/// timeout (30 s), so only a hint stuck behind something that never
/// finishes ever gets near the delivery limit (and is dead-lettered, seen).
pub const WAIT_UNCOUNTED: chrono::Duration = chrono::Duration::minutes(30);

/// True while `hint` is young enough for its waits not to count.
fn waits_uncounted(hint: &crate::queue::Hint) -> bool {
    chrono::Utc::now() - hint.received_at <= WAIT_UNCOUNTED
}

fn settle(res: Result<(), crate::queue::QueueError>, outcome: &'static str) {
    match res {
        Ok(()) => worker_outcome(outcome),
        // Not settled = redelivered later; the engine's idempotency makes that harmless.
        Err(e) => tracing::warn!(error = %e, outcome, "could not settle a delivery; it will be redelivered"),
    }
}

async fn pause(shutdown: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = shutdown.cancelled() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(10));
}

fn lifecycle_transient(e: &SchedulerError) -> bool {
    match e {
        SchedulerError::Graph(g) => g.is_transient(),
        SchedulerError::Store(s) => s.is_unavailable(),
        SchedulerError::Queue(_) => true,
        SchedulerError::UnknownTenant(_) | SchedulerError::Panicked(_) => false,
    }
}
