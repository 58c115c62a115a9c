//! The durable hand-off between ingress/scheduler and workers. `Queue` hides
//! the backend (`amqp`: RabbitMQ via lapin; `local`: a table in the store);
//! both give the same at-least-once contract: `publish` returns only once the
//! hint is durable, a delivery stays owned until it is acked, retried or
//! dead-lettered, and an unacked delivery comes back after a crash.
//! This module never looks inside a hint beyond its routing key.

pub mod amqp;
pub mod hint;
pub mod local;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub use hint::{Change, Hint, HintDecodeError, HqEntity, Origin, HINT_VERSION};

use crate::config::{QueueBackend, QueueConfig};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker (or store) cannot be reached right now; retrying may help.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker refused or returned a message (nack, unroutable).
    #[error("queue refused the message: {0}")]
    Refused(String),
    #[error("queue closed")]
    Closed,
    #[error("queue store error: {0}")]
    Store(String),
}

/// One received hint. Exactly one of `ack`, `retry`, `dead_letter` settles
/// it; dropping it unsettled leaves it to be redelivered (the same as a crash).
pub struct Delivery {
    pub hint: Result<Hint, String>,
    /// 1 on the first delivery, counting redeliveries and retries.
    pub attempt: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub fn new(hint: Result<Hint, String>, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Delivery { hint, attempt, acker }
    }

    /// The work for this hint is committed: forget it.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack().await
    }

    /// A transient failure: deliver again after about `delay`.
    pub async fn retry(self, delay: Duration) -> Result<(), QueueError> {
        self.acker.retry(delay).await
    }

    /// Not a failure: the hint waits for another worker's work. Delivered
    /// again after about `delay`, with its attempt count untouched, so
    /// waiting never brings it closer to the delivery limit.
    pub async fn defer(self, delay: Duration) -> Result<(), QueueError> {
        self.acker.defer(delay).await
    }

    /// A permanent failure: move to the dead-letter queue with `reason`.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        self.acker.dead_letter(reason).await
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("hint", &self.hint).field("attempt", &self.attempt).finish()
    }
}

/// Backend-specific settlement of one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), QueueError>;
    /// Like `retry`, but the next delivery carries this one's attempt number.
    async fn defer(self: Box<Self>, delay: Duration) -> Result<(), QueueError>;
    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), QueueError>;
}

/// A stream of deliveries for one worker process.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `Ok(None)` once the consumer was closed.
    /// Cancel-safe: dropping the future (a shutdown `select!`) loses no
    /// delivery; at worst it is redelivered.
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError>;
    /// Stop receiving new deliveries; the ones already handed out stay valid.
    async fn close(&mut self);
}

/// Publishing and inspection, shared by every role of a process.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Returns once every hint is durable (broker confirm / committed row).
    async fn publish(&self, hints: &[Hint]) -> Result<(), QueueError>;
    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError>;
    /// Reachable and topology in place.
    async fn ready(&self) -> Result<(), QueueError>;
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
    /// Oldest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Moves dead letters back to work. `ids` empty = all. Returns how many moved.
    async fn replay_dead_letters(&self, ids: &[String]) -> Result<usize, QueueError>;
    /// Removes everything this backend declared (test cleanup of a per-test
    /// prefix). Backends without declared topology have nothing to do.
    async fn delete_topology(&self) -> Result<(), QueueError> {
        Ok(())
    }
    async fn close(&self);
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Waiting to be delivered.
    pub ready: u64,
    /// Delivered, not yet settled (where the backend knows).
    pub unacked: Option<u64>,
    /// Waiting in retry queues.
    pub retrying: u64,
    pub dead: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Backend-specific handle used by `replay_dead_letters`.
    pub id: String,
    pub hint: Option<Hint>,
    pub reason: String,
    pub attempts: u32,
}

/// The queue handle every role holds. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    backend: Arc<dyn Backend>,
    kind: QueueBackend,
}

impl Queue {
    /// Opens the configured backend. For `amqp` this does not fail when the
    /// broker is down: it keeps reconnecting in the background, `ready()`
    /// reports the outage and `publish` fails fast with `Unavailable`.
    pub async fn open(cfg: &QueueConfig, store: &Store) -> Result<Queue, QueueError> {
        let backend: Arc<dyn Backend> = match cfg.backend {
            QueueBackend::Amqp => Arc::new(amqp::AmqpQueue::open(cfg).await?),
            QueueBackend::Local => Arc::new(local::LocalQueue::open(cfg, store.clone()).await?),
        };
        Ok(Queue { backend, kind: cfg.backend })
    }

    /// Wraps a backend the caller opened itself (tests that also need the
    /// concrete type, e.g. `AmqpQueue::delete_topology`).
    pub fn from_backend(backend: Arc<dyn Backend>, kind: QueueBackend) -> Queue {
        Queue { backend, kind }
    }

    pub fn kind(&self) -> QueueBackend {
        self.kind
    }

    pub async fn publish(&self, hints: &[Hint]) -> Result<(), QueueError> {
        self.backend.publish(hints).await
    }

    pub async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        self.backend.consumer().await
    }

    pub async fn ready(&self) -> Result<(), QueueError> {
        self.backend.ready().await
    }

    /// Waits up to `within` for `ready()` (the AMQP backend connects in the
    /// background after `open`); the last error when it never gets there.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), QueueError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.ready().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.backend.depth().await
    }

    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.backend.dead_letters(limit).await
    }

    pub async fn replay_dead_letters(&self, ids: &[String]) -> Result<usize, QueueError> {
        self.backend.replay_dead_letters(ids).await
    }

    /// Test cleanup: deletes the queues/exchanges of this prefix (amqp).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        self.backend.delete_topology().await
    }

    pub async fn close(&self) {
        self.backend.close().await
    }
}
