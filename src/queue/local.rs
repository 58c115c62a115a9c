//! Local backend: the queue is a table in the store, for a single process
//! without a broker (the embedded default). Owns the polling consumer and the
//! translation between store rows and deliveries; the durability and lease
//! rules live in the store (`Store::local_queue_*`). It must never hand out a
//! row without a lease: a delivery whose lease expired (worker crashed or
//! stalled past the visibility timeout) is leased again by the next consumer,
//! which is the same at-least-once contract as the broker's redelivery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Acker, Backend, Consumer, DeadLetter, Delivery, Hint, QueueDepth, QueueError};
use crate::config::QueueConfig;
use crate::store::{LocalQueueRow, Store, StoreError};

/// Consumers re-check this often at most when nothing wakes them: delayed
/// (retried) rows and expired leases become visible without a notification.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(200);

pub struct LocalQueue {
    store: Store,
    /// Wakes this process's idle consumers when a hint is published.
    published: Arc<Notify>,
    visibility: Duration,
    delivery_limit: u32,
}

fn store_err(e: StoreError) -> QueueError {
    match e {
        StoreError::Unavailable(m) => QueueError::Unavailable(m),
        other => QueueError::Store(other.to_string()),
    }
}

impl LocalQueue {
    pub async fn open(cfg: &QueueConfig, store: Store) -> Result<LocalQueue, QueueError> {
        Ok(LocalQueue {
            store,
            published: Arc::new(Notify::new()),
            visibility: Duration::from_secs(cfg.visibility_timeout_secs.max(1)),
            delivery_limit: cfg.delivery_limit,
        })
    }
}

#[async_trait]
impl Backend for LocalQueue {
    async fn publish(&self, hints: &[Hint]) -> Result<(), QueueError> {
        if hints.is_empty() {
            return Ok(());
        }
        let payloads: Vec<Vec<u8>> = hints.iter().map(Hint::to_bytes).collect();
        self.store.local_queue_push(&payloads).await.map_err(store_err)?;
        self.published.notify_waiters();
        Ok(())
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(LocalConsumer {
            store: self.store.clone(),
            published: self.published.clone(),
            visibility: self.visibility,
            delivery_limit: self.delivery_limit,
            closed: false,
            pending: None,
        }))
    }

    async fn ready(&self) -> Result<(), QueueError> {
        self.store.ping().await.map_err(store_err)
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let d = self.store.local_queue_depth().await.map_err(store_err)?;
        Ok(QueueDepth { ready: d.ready, unacked: Some(d.leased), retrying: d.delayed, dead: d.dead })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = self.store.local_queue_dead_list(limit).await.map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                id: r.id.to_string(),
                hint: Hint::from_bytes(&r.payload).ok(),
                reason: r.reason,
                attempts: r.attempts,
            })
            .collect())
    }

    async fn replay_dead_letters(&self, ids: &[String]) -> Result<usize, QueueError> {
        let parsed: Vec<i64> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        // Ids that name nothing must not turn into "replay all".
        if !ids.is_empty() && parsed.is_empty() {
            return Ok(0);
        }
        let moved = self.store.local_queue_replay(&parsed).await.map_err(store_err)?;
        if moved > 0 {
            self.published.notify_waiters();
        }
        Ok(moved)
    }

    async fn close(&self) {
        // Nothing of its own to release: the store belongs to the process.
    }
}

struct LocalConsumer {
    store: Store,
    published: Arc<Notify>,
    visibility: Duration,
    delivery_limit: u32,
    closed: bool,
    /// A lease in progress. It runs as its own task so that `next()` is
    /// cancel-safe: a caller that stops waiting (shutdown) cannot strand a
    /// freshly leased row until its visibility timeout; the next `next()`
    /// picks the result up, and `close()` hands an unclaimed row back.
    pending: Option<JoinHandle<Result<Option<LocalQueueRow>, StoreError>>>,
}

impl LocalConsumer {
    async fn lease(&mut self) -> Result<Option<LocalQueueRow>, QueueError> {
        let handle = self.pending.get_or_insert_with(|| {
            let (store, visibility) = (self.store.clone(), self.visibility);
            tokio::spawn(async move { store.local_queue_lease(visibility).await })
        });
        let res = handle.await;
        self.pending = None;
        res.map_err(|e| QueueError::Store(format!("lease task failed: {e}")))?.map_err(store_err)
    }
}

#[async_trait]
impl Consumer for LocalConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        let mut idle = POLL_MIN;
        loop {
            if self.closed {
                return Ok(None);
            }
            // Registered before looking, so a publish between the empty
            // lease and the wait still wakes us.
            let published = self.published.clone();
            let woken = published.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let Some(row) = self.lease().await? else {
                tokio::select! {
                    _ = woken => idle = POLL_MIN,
                    _ = tokio::time::sleep(idle) => idle = (idle * 2).min(POLL_MAX),
                }
                continue;
            };
            if row.attempts > self.delivery_limit {
                // What the broker's x-delivery-limit does for the amqp backend.
                self.store.local_queue_dead(row.id, row.lease, "delivery limit exceeded").await.map_err(store_err)?;
                continue;
            }
            let hint = Hint::from_bytes(&row.payload).map_err(|e| e.to_string());
            let keepalive = keep_leased(self.store.clone(), row.id, row.lease, self.visibility);
            let acker = LocalAcker { store: self.store.clone(), id: row.id, lease: row.lease, _keepalive: keepalive };
            return Ok(Some(Delivery::new(hint, row.attempts, Box::new(acker))));
        }
    }

    async fn close(&mut self) {
        self.closed = true;
        if let Some(handle) = self.pending.take() {
            // A row leased for a caller that went away: make it visible again now.
            if let Ok(Ok(Some(row))) = handle.await {
                let _ = self.store.local_queue_delay(row.id, row.lease, Duration::ZERO).await;
            }
        }
    }
}

/// How long a delivery's lease is kept extended while its hint runs: the
/// broker's default `consumer_timeout` (30 min). A hint running longer is
/// taken for stuck, and its row is handed out again.
const MAX_HOLD: Duration = Duration::from_secs(30 * 60);

/// Extends the lease of a delivery while its hint runs (a tenant's first
/// pass over thousands of contacts outlives the visibility timeout), every
/// third of that timeout, until the acker settles or drops it (the task is
/// aborted) or the lease is lost. A worker that crashes stops extending, so
/// the row comes back after one visibility timeout, as before.
fn keep_leased(store: Store, id: i64, lease: Uuid, visibility: Duration) -> AbortOnDrop {
    let every = (visibility / 3).max(Duration::from_millis(100));
    AbortOnDrop(tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            if started.elapsed() + visibility > MAX_HOLD {
                tracing::warn!(id, "hint still running after 30 min; its local queue lease is no longer extended");
                return;
            }
            match store.local_queue_extend(id, lease, visibility).await {
                Ok(true) => {}
                Ok(false) => return, // settled meanwhile, or taken by another consumer
                // A store hiccup: the lease still has two thirds to run.
                Err(e) => tracing::debug!(id, error = %e, "could not extend a local queue lease; trying again"),
            }
        }
    }))
}

/// Aborts its task when dropped (the acker settled, or was dropped unsettled).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct LocalAcker {
    store: Store,
    id: i64,
    lease: Uuid,
    _keepalive: AbortOnDrop,
}

impl LocalAcker {
    /// A stale lease means the visibility timeout passed and another consumer
    /// owns the row now; it will be handled again (at-least-once), nothing to do.
    fn note_stale(&self, settled: bool, what: &str) {
        if !settled {
            tracing::warn!(id = self.id, what, "local queue lease expired before settlement; the hint will run again");
        }
    }
}

#[async_trait]
impl Acker for LocalAcker {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        let ok = self.store.local_queue_ack(self.id, self.lease).await.map_err(store_err)?;
        self.note_stale(ok, "ack");
        Ok(())
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        let ok = self.store.local_queue_delay(self.id, self.lease, delay).await.map_err(store_err)?;
        self.note_stale(ok, "retry");
        Ok(())
    }

    async fn defer(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        let ok = self.store.local_queue_defer(self.id, self.lease, delay).await.map_err(store_err)?;
        self.note_stale(ok, "defer");
        Ok(())
    }

    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), QueueError> {
        let ok = self.store.local_queue_dead(self.id, self.lease, reason).await.map_err(store_err)?;
        self.note_stale(ok, "dead_letter");
        Ok(())
    }
}
