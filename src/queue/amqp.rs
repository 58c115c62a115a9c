//! RabbitMQ backend (lapin, AMQP 0-9-1). Owns the broker topology of one
//! prefix, the long-lived connection with its reconnect loop, the pool of
//! confirm channels that ingress publishes on, and the per-worker consumer
//! channels. It must never lose a hint it reported as published: `publish`
//! returns only after the broker confirmed every message (quorum queues
//! confirm once the message is replicated and on disk), and a consumer settles
//! a delivery only by ack, or by a confirmed retry/dead copy followed by ack.
//!
//! Topology (all durable, declared idempotently on every (re)connect):
//! - `{p}.hints` direct exchange → `{p}.work.{n}` quorum queues, bound with
//!   routing key `{n}`, `x-delivery-limit`, dead-lettering (at-least-once) to
//! - `{p}.dead` fanout exchange → `{p}.dead` classic queue (inspect/replay).
//! - per configured delay `{p}.retry.{secs}s`: a fanout exchange and a quorum
//!   queue of the same name with `x-message-ttl`, dead-lettering back into
//!   `{p}.hints`. A retry copy is published there with its partition as
//!   routing key, which dead-lettering keeps, so it returns to its own
//!   partition.
//!
//! Partitioning: a hint goes to work queue `fnv1a(tenant/mailbox) % partitions`.
//! One mailbox's hints therefore share a queue and are mostly handled in
//! order, which avoids needless conflicts and If-Match retries. Strict order is
//! not needed for correctness: a hint only says "look here"; the engine
//! re-reads the current state from the origin and merges against the stored
//! base, so two workers handling the same mailbox, a retried hint overtaking a
//! newer one, or a redelivery after a crash all converge to the same result.
//! The hash uses fixed constants (not the randomly seeded std hasher) so every
//! process agrees on the partition.
//!
//! Ingress publishes on a small pool of channels in confirm mode shared by all
//! callers: each call publishes all its messages, then awaits all confirms, so
//! concurrent requests pipeline on the same channels and the broker batches
//! its confirms. Limitation: lapin attaches a `basic.return` to whichever
//! confirm completes it; when the broker acks several messages at once on a
//! shared channel, an unroutable message may be reported to another caller of
//! that batch. Unroutable only happens when the topology was deleted under a
//! running process, and then every message of the batch is returned.
//!
//! The broker being down never fails `open`: a background task connects with
//! backoff; until it succeeds `publish` fails fast with `Unavailable` and
//! `ready()` reports the last error.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::SelectAll;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::{Acker, Backend, Consumer, DeadLetter, Delivery, Hint, QueueDepth, QueueError};
use crate::config::QueueConfig;

/// A broker that accepts TCP but never completes the AMQP handshake must not
/// stall the reconnect loop (lapin's connect has no timeout of its own).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Declaring topology and opening the publish channels after connecting.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats make lapin notice a dead socket within about two intervals, so
/// an in-flight confirm fails instead of waiting forever.
const HEARTBEAT_SECS: u16 = 10;
const PUBLISH_CHANNELS: usize = 4;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Admin and settlement calls that are not under a caller's timeout.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

const HINT_ID_HEADER: &str = "hint_id";
/// Deliveries that happened before this copy was published (retry/dead copies).
const ATTEMPT_HEADER: &str = "hqsync-attempt";
const REASON_HEADER: &str = "x-hqsync-reason";
/// Set by quorum queues on redelivery: earlier unsuccessful deliveries.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The partition (work queue index) of a routing key: FNV-1a 64, fixed
/// constants, so every process and every release agrees.
pub fn partition_of(key: &str, partitions: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u16
}

/// Exchange and queue names of one prefix.
#[derive(Debug, Clone)]
struct Names {
    hints: String,
    dead: String,
    work: Vec<String>,
    /// (delay in seconds, exchange and queue name), shortest first.
    retry: Vec<(u64, String)>,
}

impl Names {
    fn new(prefix: &str, partitions: u16, delays: &[u64]) -> Names {
        let mut delays: Vec<u64> = delays.iter().copied().filter(|d| *d > 0).collect();
        delays.sort_unstable();
        delays.dedup();
        Names {
            hints: format!("{prefix}.hints"),
            dead: format!("{prefix}.dead"),
            work: (0..partitions.max(1)).map(|n| format!("{prefix}.work.{n}")).collect(),
            retry: delays.into_iter().map(|s| (s, format!("{prefix}.retry.{s}s"))).collect(),
        }
    }

    /// The retry queue whose delay is the smallest ≥ `delay`, else the longest.
    fn retry_for(&self, delay: Duration) -> Option<&str> {
        let want = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        self.retry.iter().find(|(s, _)| *s >= want).or(self.retry.last()).map(|(_, n)| n.as_str())
    }
}

/// One live connection and its publish channels.
struct Live {
    connection: Connection,
    generation: u64,
    slots: Vec<Mutex<Channel>>,
    next_slot: AtomicUsize,
}

impl Live {
    /// A publish channel, replacing it first if the broker closed it (a
    /// channel-level error closes only that channel).
    async fn channel(&self) -> Result<Channel, String> {
        let idx = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let ch = self.slots[idx].lock().expect("slot lock").clone();
        if ch.status().connected() {
            return Ok(ch);
        }
        if !self.connection.status().connected() {
            return Err("connection lost".into());
        }
        let fresh = confirm_channel(&self.connection).await.map_err(|e| e.to_string())?;
        *self.slots[idx].lock().expect("slot lock") = fresh.clone();
        Ok(fresh)
    }
}

async fn confirm_channel(conn: &Connection) -> lapin::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

struct Shared {
    uri: AMQPUri,
    names: Names,
    delivery_limit: u32,
    prefetch: u16,
    /// How long a publish whose connection dropped waits for the next one.
    reconnect_wait: Duration,
    live: watch::Sender<Option<Arc<Live>>>,
    last_error: Mutex<String>,
    shutdown: CancellationToken,
    /// Set once the first connect attempt finished, either way.
    first_attempt_done: AtomicBool,
    first_attempt: Notify,
}

impl Shared {
    fn current(&self) -> Option<Arc<Live>> {
        self.live.borrow().clone().filter(|l| l.connection.status().connected())
    }

    fn current_or_unavailable(&self) -> Result<Arc<Live>, QueueError> {
        self.current().ok_or_else(|| QueueError::Unavailable(self.last_error()))
    }

    /// Like `current_or_unavailable`, but right after `open` waits (bounded)
    /// for the first connect attempt, so a role that publishes or consumes
    /// at start does not fail merely because it raced the handshake. A
    /// refused connection still fails at once.
    async fn live_or_first_attempt(&self) -> Result<Arc<Live>, QueueError> {
        if let Some(l) = self.current() {
            return Ok(l);
        }
        if !self.first_attempt_done.load(Ordering::Acquire) {
            let attempted = self.first_attempt.notified();
            tokio::pin!(attempted);
            attempted.as_mut().enable();
            if !self.first_attempt_done.load(Ordering::Acquire) {
                let _ = tokio::time::timeout(self.reconnect_wait, attempted).await;
            }
        }
        self.current_or_unavailable()
    }

    fn first_attempt_finished(&self) {
        if !self.first_attempt_done.swap(true, Ordering::AcqRel) {
            self.first_attempt.notify_waiters();
        }
    }

    fn last_error(&self) -> String {
        self.last_error.lock().expect("error lock").clone()
    }

    fn set_error(&self, e: impl Into<String>) {
        *self.last_error.lock().expect("error lock") = e.into();
    }

    /// Waits (bounded) for a connection newer than `generation`.
    async fn newer_than(&self, generation: u64, wait: Duration) -> Option<Arc<Live>> {
        let mut rx = self.live.subscribe();
        let found = tokio::time::timeout(wait, async {
            loop {
                if let Some(l) = rx.borrow_and_update().clone() {
                    if l.generation > generation && l.connection.status().connected() {
                        return Some(l);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        found.ok().flatten()
    }

    /// Publishes with confirms. What was not confirmed when the channel or
    /// connection went away is published again: once on the same connection
    /// if it still stands (only the channel died), and on the next connection
    /// if one comes up within `reconnect_wait`; otherwise `Unavailable`.
    async fn publish_confirmed(&self, msgs: &[Outgoing]) -> Result<(), QueueError> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut live = self.live_or_first_attempt().await?;
        // Copied only when something has to be published again.
        let mut pending: std::borrow::Cow<'_, [Outgoing]> = std::borrow::Cow::Borrowed(msgs);
        let mut same_connection_retried = false;
        let mut reconnected = false;
        loop {
            let (unconfirmed, why) = match publish_batch(&live, &pending).await {
                Ok(()) => return Ok(()),
                Err(BatchError::Refused(r)) => return Err(QueueError::Refused(r)),
                Err(BatchError::Lost { unconfirmed, why }) => (unconfirmed, why),
            };
            tracing::warn!(error = %why, pending = unconfirmed.len(), "publish interrupted; publishing again");
            pending = std::borrow::Cow::Owned(unconfirmed.into_iter().map(|i| pending[i].clone()).collect());
            if !same_connection_retried && live.connection.status().connected() {
                same_connection_retried = true;
                continue;
            }
            if reconnected {
                return Err(QueueError::Unavailable(why));
            }
            reconnected = true;
            live = match self.newer_than(live.generation, self.reconnect_wait).await {
                Some(next) => next,
                None => return Err(QueueError::Unavailable(why)),
            };
        }
    }

    fn hint_message(&self, hint: &Hint) -> Outgoing {
        let partition = partition_of(&hint.partition_key(), self.names.work.len() as u16);
        let id = hint.hint_id.to_string();
        let mut headers = FieldTable::default();
        headers.insert(HINT_ID_HEADER.into(), AMQPValue::LongString(id.clone().into()));
        Outgoing {
            exchange: self.names.hints.clone(),
            routing_key: partition.to_string(),
            body: hint.to_bytes(),
            properties: base_properties(id, headers),
        }
    }
}

fn base_properties(message_id: String, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_headers(headers)
}

#[derive(Clone)]
struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

enum BatchError {
    Refused(String),
    /// The channel or connection went away; indices of unconfirmed messages.
    Lost {
        unconfirmed: Vec<usize>,
        why: String,
    },
}

/// Publishes every message, then awaits every confirm (pipelined).
async fn publish_batch(live: &Live, msgs: &[Outgoing]) -> Result<(), BatchError> {
    let channel =
        live.channel().await.map_err(|why| BatchError::Lost { unconfirmed: (0..msgs.len()).collect(), why })?;
    let opts = BasicPublishOptions { mandatory: true, immediate: false };
    let mut confirms = Vec::with_capacity(msgs.len());
    let mut unconfirmed = Vec::new();
    let mut why = String::new();
    for (i, m) in msgs.iter().enumerate() {
        match channel.basic_publish(&m.exchange, &m.routing_key, opts, &m.body, m.properties.clone()).await {
            Ok(c) => confirms.push((i, c)),
            Err(e) => {
                why = e.to_string();
                unconfirmed.extend(i..msgs.len());
                break;
            }
        }
    }
    let mut refused = None;
    for (i, result) in futures::future::join_all(confirms.into_iter().map(|(i, c)| async move { (i, c.await) })).await {
        match result {
            Ok(Confirmation::Ack(None)) => {}
            Ok(Confirmation::Ack(Some(ret))) | Ok(Confirmation::Nack(Some(ret))) => {
                refused = Some(format!("unroutable: {} {}", ret.reply_code, ret.reply_text));
            }
            Ok(Confirmation::Nack(None)) => refused = Some("broker nacked the message".into()),
            Ok(Confirmation::NotRequested) => refused = Some("channel not in confirm mode".into()),
            Err(e) => {
                why = e.to_string();
                unconfirmed.push(i);
            }
        }
    }
    if let Some(r) = refused {
        return Err(BatchError::Refused(r));
    }
    if unconfirmed.is_empty() {
        Ok(())
    } else {
        unconfirmed.sort_unstable();
        Err(BatchError::Lost { unconfirmed, why })
    }
}

fn int_header(props: &BasicProperties, name: &str) -> Option<u64> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    match v {
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

fn str_header(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// 1-based number of this delivery: deliveries before the copy was made plus
/// the queue's own redelivery count.
fn attempt_of(props: &BasicProperties) -> u32 {
    let before = int_header(props, ATTEMPT_HEADER).unwrap_or(0);
    let redelivered = int_header(props, DELIVERY_COUNT_HEADER).unwrap_or(0);
    u32::try_from(before + redelivered + 1).unwrap_or(u32::MAX)
}

fn message_id_of(props: &BasicProperties, body: &[u8]) -> String {
    str_header(props, HINT_ID_HEADER)
        .or_else(|| props.message_id().as_ref().map(|s| s.as_str().to_owned()))
        .unwrap_or_else(|| format!("body-{:016x}", fnv64(body)))
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A copy of a received message with fresh headers (the broker's own
/// `x-delivery-count`/`x-death` must not leak into the copy's count).
fn copy_of(props: &BasicProperties, body: &[u8], attempt: u32, reason: Option<&str>) -> (BasicProperties, String) {
    let id = message_id_of(props, body);
    let mut headers = FieldTable::default();
    headers.insert(HINT_ID_HEADER.into(), AMQPValue::LongString(id.clone().into()));
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(i64::from(attempt)));
    if let Some(r) = reason {
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(LongString::from(r.to_owned())));
    }
    (base_properties(id.clone(), headers), id)
}

fn lapin_err(e: lapin::Error) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn args(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(k), v);
    }
    t
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..Default::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Idempotent: re-declaring with the same arguments is a no-op. Changing an
/// argument (e.g. `delivery_limit`) of an existing queue fails with
/// PRECONDITION_FAILED; `ready()` then reports it until the queue is deleted.
async fn declare_topology(ch: &Channel, names: &Names, delivery_limit: u32) -> lapin::Result<()> {
    let long = |s: &str| AMQPValue::LongString(s.into());
    ch.exchange_declare(&names.hints, ExchangeKind::Direct, durable_exchange(), FieldTable::default()).await?;
    ch.exchange_declare(&names.dead, ExchangeKind::Fanout, durable_exchange(), FieldTable::default()).await?;
    ch.queue_declare(&names.dead, durable_queue(), FieldTable::default()).await?;
    ch.queue_bind(&names.dead, &names.dead, "", QueueBindOptions::default(), FieldTable::default()).await?;
    for (n, q) in names.work.iter().enumerate() {
        let a = args(vec![
            ("x-queue-type", long("quorum")),
            ("x-delivery-limit", AMQPValue::LongLongInt(i64::from(delivery_limit))),
            ("x-dead-letter-exchange", long(&names.dead)),
            // At-least-once dead-lettering needs reject-publish overflow.
            ("x-dead-letter-strategy", long("at-least-once")),
            ("x-overflow", long("reject-publish")),
        ]);
        ch.queue_declare(q, durable_queue(), a).await?;
        ch.queue_bind(q, &names.hints, &n.to_string(), QueueBindOptions::default(), FieldTable::default()).await?;
    }
    for (secs, name) in &names.retry {
        let ttl_ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let a = args(vec![
            ("x-queue-type", long("quorum")),
            ("x-message-ttl", AMQPValue::LongLongInt(ttl_ms)),
            ("x-dead-letter-exchange", long(&names.hints)),
            ("x-dead-letter-strategy", long("at-least-once")),
            ("x-overflow", long("reject-publish")),
        ]);
        ch.exchange_declare(name, ExchangeKind::Fanout, durable_exchange(), FieldTable::default()).await?;
        ch.queue_declare(name, durable_queue(), a).await?;
        ch.queue_bind(name, name, "", QueueBindOptions::default(), FieldTable::default()).await?;
    }
    Ok(())
}

/// Sends the AMQP protocol header and waits for any answer: used after a
/// connect attempt timed out, so a silent endpoint does not cost a stuck
/// lapin I/O thread on every retry.
async fn endpoint_speaks(uri: &AMQPUri) -> Result<(), String> {
    let addr = (uri.authority.host.clone(), uri.authority.port);
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1];
        match s.read(&mut buf).await {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err("endpoint closed the connection".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, probe).await.map_err(|_| "endpoint does not speak AMQP".to_owned())?
}

/// Connection settings for every AMQP connection hqsync opens: lapin runs
/// its I/O and callbacks on the caller's tokio runtime instead of its own
/// threads, which saves a thread hop (and a futex wake-up) per frame.
pub fn connection_properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
}

async fn connect_once(shared: &Shared, generation: u64, probe_first: bool) -> Result<Arc<Live>, (String, bool)> {
    if probe_first {
        endpoint_speaks(&shared.uri).await.map_err(|e| (e, true))?;
    }
    let props = connection_properties("hqsync");
    let connection = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(shared.uri.clone(), props))
        .await
        .map_err(|_| ("connect timed out".to_owned(), true))?
        .map_err(|e| (e.to_string(), false))?;
    let setup = async {
        let ch = connection.create_channel().await?;
        declare_topology(&ch, &shared.names, shared.delivery_limit).await?;
        let _ = ch.close(200, "topology declared").await;
        let mut slots = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            slots.push(Mutex::new(confirm_channel(&connection).await?));
        }
        Ok::<_, lapin::Error>(slots)
    };
    let slots = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
        Ok(Ok(slots)) => slots,
        Ok(Err(e)) => {
            let _ = connection.close(200, "setup failed").await;
            return Err((format!("declaring topology: {e}"), false));
        }
        Err(_) => return Err(("declaring topology timed out".to_owned(), true)),
    };
    Ok(Arc::new(Live { connection, generation, slots, next_slot: AtomicUsize::new(0) }))
}

/// Keeps one connection up until shutdown: connect, declare, publish the
/// live handle, wait for it to die, back off, repeat.
async fn supervise(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut generation = 0u64;
    let mut probe_first = false;
    loop {
        if shared.shutdown.is_cancelled() {
            break;
        }
        match connect_once(&shared, generation + 1, probe_first).await {
            Ok(live) => {
                generation += 1;
                backoff = BACKOFF_MIN;
                probe_first = false;
                let died = Arc::new(Notify::new());
                {
                    let died = died.clone();
                    live.connection.on_error(move |e| {
                        tracing::warn!(error = %e, "amqp connection error");
                        died.notify_one();
                    });
                }
                shared.set_error("connected");
                shared.live.send_replace(Some(live.clone()));
                shared.first_attempt_finished();
                tracing::info!(generation, "amqp connected, topology declared");
                loop {
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => {
                            shared.live.send_replace(None);
                            let _ = tokio::time::timeout(Duration::from_secs(2), live.connection.close(200, "shutdown")).await;
                            return;
                        }
                        _ = died.notified() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {
                            if !live.connection.status().connected() {
                                break;
                            }
                        }
                    }
                }
                shared.live.send_replace(None);
                shared.set_error("connection to the broker lost; reconnecting");
                tracing::warn!(generation, "amqp connection lost; reconnecting");
            }
            Err((e, timed_out)) => {
                probe_first = timed_out;
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "amqp connect failed");
                shared.set_error(format!("broker unreachable: {e}"));
                shared.first_attempt_finished();
            }
        }
        // Jitter, so a fleet of workers does not reconnect in lockstep after
        // a broker restart.
        let pause = backoff + backoff.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..0.5));
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    shared.live.send_replace(None);
}

/// The RabbitMQ queue. Dropping it stops the reconnect loop.
pub struct AmqpQueue {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl AmqpQueue {
    /// Never fails because the broker is down (only on a malformed URL): the
    /// connection is made in the background.
    pub async fn open(cfg: &QueueConfig) -> Result<AmqpQueue, QueueError> {
        let mut uri =
            AMQPUri::from_str(&cfg.url).map_err(|e| QueueError::Unavailable(format!("invalid AMQP URL: {e}")))?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(HEARTBEAT_SECS);
        }
        let (live, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            uri,
            names: Names::new(&cfg.prefix, cfg.partitions, &cfg.retry_delays_secs),
            delivery_limit: cfg.delivery_limit,
            prefetch: cfg.prefetch.max(1),
            reconnect_wait: Duration::from_millis(cfg.publish_timeout_ms.max(1)),
            live,
            last_error: Mutex::new("not connected yet".into()),
            shutdown: CancellationToken::new(),
            first_attempt_done: AtomicBool::new(false),
            first_attempt: Notify::new(),
        });
        let supervisor = tokio::spawn(supervise(shared.clone()));
        Ok(AmqpQueue { shared, supervisor: Mutex::new(Some(supervisor)) })
    }

    /// Waits until connected and topology declared, at most `wait`.
    pub async fn wait_connected(&self, wait: Duration) -> Result<(), QueueError> {
        self.shared
            .newer_than(0, wait)
            .await
            .map(|_| ())
            .ok_or_else(|| QueueError::Unavailable(self.shared.last_error()))
    }

    /// Deletes every queue and exchange of this prefix (test cleanup). Goes
    /// on past a failure (a failed delete closes the channel) and reports the
    /// first one.
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let live = self.shared.current_or_unavailable()?;
        let n = &self.shared.names;
        let queues = n.work.iter().chain(n.retry.iter().map(|(_, q)| q)).chain(std::iter::once(&n.dead));
        let exchanges = [&n.hints, &n.dead].into_iter().chain(n.retry.iter().map(|(_, e)| e));
        let items = queues.map(|q| (true, q)).chain(exchanges.map(|e| (false, e)));
        let mut first_error = None;
        let mut channel: Option<Channel> = None;
        for (is_queue, name) in items {
            let ch = match channel.take().filter(|c| c.status().connected()) {
                Some(c) => c,
                None => live.connection.create_channel().await.map_err(lapin_err)?,
            };
            let res = if is_queue {
                ch.queue_delete(name, QueueDeleteOptions::default()).await.map(|_| ())
            } else {
                ch.exchange_delete(name, ExchangeDeleteOptions::default()).await
            };
            if let Err(e) = res {
                first_error.get_or_insert(lapin_err(e));
            }
            channel = Some(ch);
        }
        if let Some(ch) = channel.filter(|c| c.status().connected()) {
            let _ = ch.close(200, "topology deleted").await;
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn admin_channel(&self, confirms: bool) -> Result<Channel, QueueError> {
        let live = self.shared.current_or_unavailable()?;
        let ch =
            if confirms { confirm_channel(&live.connection).await } else { live.connection.create_channel().await };
        ch.map_err(lapin_err)
    }

    async fn read_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let ch = self.admin_channel(false).await?;
        let mut out = Vec::new();
        let mut last_tag = None;
        while out.len() < limit {
            let got = ch.basic_get(&self.shared.names.dead, BasicGetOptions { no_ack: false }).await;
            let Some(msg) = got.map_err(lapin_err)? else { break };
            let d = msg.delivery;
            last_tag = Some(d.delivery_tag);
            let hint = Hint::from_bytes(&d.data).ok();
            let reason = str_header(&d.properties, REASON_HEADER)
                .or_else(|| str_header(&d.properties, "x-first-death-reason"))
                .unwrap_or_else(|| "unknown".into());
            let attempts = int_header(&d.properties, ATTEMPT_HEADER)
                .or_else(|| int_header(&d.properties, DELIVERY_COUNT_HEADER))
                .unwrap_or(0);
            out.push(DeadLetter {
                id: message_id_of(&d.properties, &d.data),
                hint,
                reason,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        // Put them all back where they were: listing must not consume.
        if let Some(tag) = last_tag {
            ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await.map_err(lapin_err)?;
        }
        let _ = ch.close(200, "listed").await;
        Ok(out)
    }

    async fn replay(&self, ids: &[String]) -> Result<usize, QueueError> {
        let ch = self.admin_channel(true).await?;
        let names = &self.shared.names;
        let mut moved = 0usize;
        let mut keep_tag = None;
        let mut budget: Option<u64> = None;
        loop {
            if budget == Some(0) {
                break;
            }
            let got = ch.basic_get(&names.dead, BasicGetOptions { no_ack: false }).await.map_err(lapin_err)?;
            let Some(msg) = got else { break };
            // Messages dead-lettered while we run are left for the next call.
            let left = budget.get_or_insert(u64::from(msg.message_count) + 1);
            *left -= 1;
            let d = msg.delivery;
            let id = message_id_of(&d.properties, &d.data);
            if !ids.is_empty() && !ids.contains(&id) {
                keep_tag = keep_tag.max(Some(d.delivery_tag));
                continue;
            }
            let routing_key = match Hint::from_bytes(&d.data) {
                Ok(h) => partition_of(&h.partition_key(), names.work.len() as u16).to_string(),
                Err(_) => d.routing_key.as_str().to_owned(),
            };
            // A replay starts the attempt count afresh.
            let mut headers = FieldTable::default();
            headers.insert(HINT_ID_HEADER.into(), AMQPValue::LongString(id.clone().into()));
            let opts = BasicPublishOptions { mandatory: true, immediate: false };
            let confirm = ch
                .basic_publish(&names.hints, &routing_key, opts, &d.data, base_properties(id, headers))
                .await
                .map_err(lapin_err)?
                .await
                .map_err(lapin_err)?;
            if confirm == Confirmation::Ack(None) {
                d.acker.ack(BasicAckOptions::default()).await.map_err(lapin_err)?;
                moved += 1;
            } else {
                keep_tag = keep_tag.max(Some(d.delivery_tag));
            }
        }
        if let Some(tag) = keep_tag {
            ch.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }).await.map_err(lapin_err)?;
        }
        let _ = ch.close(200, "replayed").await;
        Ok(moved)
    }
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = Result<T, QueueError>>) -> Result<T, QueueError> {
    tokio::time::timeout(ADMIN_TIMEOUT, f).await.map_err(|_| QueueError::Unavailable(format!("{what} timed out")))?
}

#[async_trait]
impl Backend for AmqpQueue {
    async fn publish(&self, hints: &[Hint]) -> Result<(), QueueError> {
        if hints.is_empty() {
            return Ok(());
        }
        let msgs: Vec<Outgoing> = hints.iter().map(|h| self.shared.hint_message(h)).collect();
        self.shared.publish_confirmed(&msgs).await
    }

    async fn consumer(&self) -> Result<Box<dyn Consumer>, QueueError> {
        let live = self.shared.live_or_first_attempt().await?;
        let shared = self.shared.clone();
        bounded("opening a consumer", async move {
            let channel = live.connection.create_channel().await.map_err(lapin_err)?;
            // Quorum queues have no channel-wide (global) QoS: split the
            // budget over the partitions so one worker holds about `prefetch`.
            let partitions = shared.names.work.len() as u16;
            let per_queue = shared.prefetch.div_ceil(partitions).max(1);
            channel.basic_qos(per_queue, BasicQosOptions::default()).await.map_err(lapin_err)?;
            let mut streams = SelectAll::new();
            let mut tags = Vec::new();
            for q in &shared.names.work {
                let c = channel
                    .basic_consume(q, "", BasicConsumeOptions::default(), FieldTable::default())
                    .await
                    .map_err(lapin_err)?;
                tags.push(c.tag().as_str().to_owned());
                streams.push(c);
            }
            Ok(Box::new(AmqpConsumer { shared, channel, streams, tags, closed: false }) as Box<dyn Consumer>)
        })
        .await
    }

    async fn ready(&self) -> Result<(), QueueError> {
        self.shared.current_or_unavailable().map(|_| ())
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        bounded("reading queue depth", async {
            let ch = self.admin_channel(false).await?;
            let names = &self.shared.names;
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let mut depth = QueueDepth::default();
            for q in &names.work {
                depth.ready += u64::from(
                    ch.queue_declare(q, passive, FieldTable::default()).await.map_err(lapin_err)?.message_count(),
                );
            }
            for (_, q) in &names.retry {
                depth.retrying += u64::from(
                    ch.queue_declare(q, passive, FieldTable::default()).await.map_err(lapin_err)?.message_count(),
                );
            }
            depth.dead = u64::from(
                ch.queue_declare(&names.dead, passive, FieldTable::default()).await.map_err(lapin_err)?.message_count(),
            );
            let _ = ch.close(200, "depth read").await;
            Ok(depth)
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        bounded("listing dead letters", self.read_dead_letters(limit)).await
    }

    async fn replay_dead_letters(&self, ids: &[String]) -> Result<usize, QueueError> {
        bounded("replaying dead letters", self.replay(ids)).await
    }

    async fn delete_topology(&self) -> Result<(), QueueError> {
        AmqpQueue::delete_topology(self).await
    }

    async fn close(&self) {
        self.shared.shutdown.cancel();
        let handle = self.supervisor.lock().expect("supervisor lock").take();
        if let Some(h) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(3), h).await;
        }
    }
}

/// One worker's channel consuming every partition.
struct AmqpConsumer {
    shared: Arc<Shared>,
    channel: Channel,
    streams: SelectAll<lapin::Consumer>,
    tags: Vec<String>,
    closed: bool,
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        loop {
            if self.closed {
                return Ok(None);
            }
            let d = match self.streams.next().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(lapin_err(e)),
                None if self.closed => return Ok(None),
                None => return Err(QueueError::Unavailable("consumer channel closed".into())),
            };
            let attempt = attempt_of(&d.properties);
            let acker = AmqpAcker {
                shared: self.shared.clone(),
                _channel: self.channel.clone(),
                acker: d.acker,
                routing_key: d.routing_key.as_str().to_owned(),
                properties: d.properties,
                body: d.data,
                attempt,
            };
            if attempt > self.shared.delivery_limit {
                // Same rule as the local backend: counts retries too, which the
                // broker's x-delivery-limit (the backstop) does not see.
                let lapin_acker = acker.acker.clone();
                if let Err(e) = Box::new(acker).settle_dead("delivery limit exceeded").await {
                    tracing::warn!(error = %e, "could not dead-letter an over-limit delivery; requeueing");
                    let _ = lapin_acker.nack(BasicNackOptions { multiple: false, requeue: true }).await;
                }
                continue;
            }
            let hint = Hint::from_bytes(&acker.body).map_err(|e| e.to_string());
            return Ok(Some(Delivery::new(hint, attempt, Box::new(acker))));
        }
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        for tag in &self.tags {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.channel.basic_cancel(tag, BasicCancelOptions::default()),
            )
            .await;
        }
    }
}

/// lapin 2.5 cancels a dropped consumer and closes its channel concurrently;
/// the broker's late `cancel-ok` then counts as an unexpected frame and lapin
/// closes the whole connection (publishing included). So a consumer dropped
/// without `close()` (a worker task that was aborted) is cancelled properly
/// in the background first; its channel closes once the last unsettled
/// delivery is gone, which is what hands those back to the broker.
impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let streams = std::mem::take(&mut self.streams);
        let channel = self.channel.clone();
        let tags = std::mem::take(&mut self.tags);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    for tag in &tags {
                        let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
                        let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await;
                    }
                    drop(streams);
                });
            }
            Err(_) => drop(streams),
        }
    }
}

struct AmqpAcker {
    shared: Arc<Shared>,
    /// Keeps the consumer channel open while this delivery is unsettled.
    _channel: Channel,
    acker: lapin::acker::Acker,
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
    attempt: u32,
}

impl AmqpAcker {
    /// A copy into the retry queue for `delay`, recording `attempts_before`
    /// deliveries before it; then the original is acked.
    async fn republish(self: Box<Self>, delay: Duration, attempts_before: u32) -> Result<(), QueueError> {
        let Some(queue) = self.shared.names.retry_for(delay).map(str::to_owned) else {
            // No retry queues configured: hand it straight back (the
            // broker's own redelivery count applies).
            return self.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await.map_err(lapin_err);
        };
        let (properties, _) = copy_of(&self.properties, &self.body, attempts_before, None);
        let copy =
            Outgoing { exchange: queue, routing_key: self.routing_key.clone(), body: self.body.clone(), properties };
        // The copy must be safe before the original goes (DESIGN §5).
        bounded("publishing a retry", self.shared.publish_confirmed(std::slice::from_ref(&copy))).await?;
        self.acker.ack(BasicAckOptions::default()).await.map_err(lapin_err)
    }

    async fn settle_dead(self: Box<Self>, reason: &str) -> Result<(), QueueError> {
        let (properties, _) = copy_of(&self.properties, &self.body, self.attempt, Some(reason));
        let copy = Outgoing {
            exchange: self.shared.names.dead.clone(),
            routing_key: self.routing_key.clone(),
            body: self.body.clone(),
            properties,
        };
        bounded("dead-lettering", self.shared.publish_confirmed(std::slice::from_ref(&copy))).await?;
        self.acker.ack(BasicAckOptions::default()).await.map_err(lapin_err)
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        self.acker.ack(BasicAckOptions::default()).await.map_err(lapin_err)
    }

    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        let attempts_before_next = self.attempt;
        self.republish(delay, attempts_before_next).await
    }

    async fn defer(self: Box<Self>, delay: Duration) -> Result<(), QueueError> {
        // The copy counts the deliveries before this one only: the next
        // delivery has this one's number again.
        let attempts_before_next = self.attempt.saturating_sub(1);
        self.republish(delay, attempts_before_next).await
    }

    async fn dead_letter(self: Box<Self>, reason: &str) -> Result<(), QueueError> {
        self.settle_dead(reason).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_stable_and_in_range() {
        // Fixed expectations: changing the hash would reshuffle live queues.
        assert_eq!(partition_of("acme/anna@acme.example", 4), partition_of("acme/anna@acme.example", 4));
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        for i in 0..200 {
            assert!(partition_of(&format!("t/{i}"), 7) < 7);
        }
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn partitions_spread_mailboxes() {
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[partition_of(&format!("acme/user{i}@acme.example"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "uneven spread: {seen:?}");
    }

    #[test]
    fn retry_queue_is_smallest_delay_not_shorter_than_asked() {
        let names = Names::new("p", 2, &[300, 5, 30, 5]);
        assert_eq!(names.retry_for(Duration::from_secs(1)), Some("p.retry.5s"));
        assert_eq!(names.retry_for(Duration::from_secs(5)), Some("p.retry.5s"));
        assert_eq!(names.retry_for(Duration::from_millis(5001)), Some("p.retry.30s"));
        assert_eq!(names.retry_for(Duration::from_secs(3600)), Some("p.retry.300s"));
        assert_eq!(Names::new("p", 1, &[]).retry_for(Duration::from_secs(1)), None);
    }

    #[test]
    fn attempt_counts_earlier_copies_and_redeliveries() {
        let mut h = FieldTable::default();
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        h.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(1));
        assert_eq!(attempt_of(&BasicProperties::default().with_headers(h.clone())), 2);
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
        assert_eq!(attempt_of(&BasicProperties::default().with_headers(h)), 5);
    }

    #[test]
    fn copies_drop_broker_headers() {
        let mut h = FieldTable::default();
        h.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(4));
        h.insert(HINT_ID_HEADER.into(), AMQPValue::LongString("abc".into()));
        let (props, id) = copy_of(&BasicProperties::default().with_headers(h), b"{}", 5, Some("boom"));
        assert_eq!(id, "abc");
        assert_eq!(int_header(&props, DELIVERY_COUNT_HEADER), None);
        assert_eq!(int_header(&props, ATTEMPT_HEADER), Some(5));
        assert_eq!(str_header(&props, REASON_HEADER).as_deref(), Some("boom"));
        assert_eq!(attempt_of(&props), 6);
    }
}
