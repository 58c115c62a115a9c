//! One behaviour suite for both queue backends: every case is written once
//! against `Queue` and run for `local` (SQLite store in a temp dir) and for
//! `amqp` (the test RabbitMQ, a fresh prefix, topology deleted afterwards).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hqsync::config::{Config, QueueBackend, QueueConfig};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::amqp::AmqpQueue;
use hqsync::queue::{Change, Hint, Origin, Queue, QueueError, HINT_VERSION};
use hqsync::store::{Cipher, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Guard against a hang, never a performance assertion.
const GUARD: Duration = Duration::from_secs(60);

fn test_config() -> QueueConfig {
    let mut cfg = Config::default().queue;
    cfg.partitions = 2;
    cfg.delivery_limit = 3;
    cfg.retry_delays_secs = vec![1, 5];
    cfg.prefetch = 10;
    cfg.visibility_timeout_secs = 2;
    cfg
}

fn hint(mailbox: &str) -> Hint {
    Hint {
        v: HINT_VERSION,
        hint_id: Uuid::new_v4(),
        tenant: TenantId::parse("acme").unwrap(),
        mailbox: Some(MailboxId::parse(mailbox).unwrap()),
        kind: Some(Kind::Appointment),
        entity: None,
        origin: Origin::Exchange,
        resource_id: Some(format!("AAMkAD{}", Uuid::new_v4().simple())),
        version: None,
        subscription_id: Some("sub-1".into()),
        change: Change::Updated,
        received_at: Utc::now(),
    }
}

enum Raw {
    Local(Box<Store>),
    Amqp { url: String, exchange: String },
}

/// A queue under test plus what a case needs beyond the `Queue` API.
struct Harness {
    queue: Queue,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn local() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
        let store = Store::open(&format!("sqlite://{}", path.display()), 5, cipher).await.unwrap();
        let mut cfg = test_config();
        cfg.backend = QueueBackend::Local;
        let queue = Queue::open(&cfg, &store).await.unwrap();
        Harness { queue, raw: Raw::Local(Box::new(store)), _dir: Some(dir) }
    }

    async fn amqp(test: &str) -> Option<Harness> {
        let url = common::rabbitmq_url()?;
        let mut cfg = test_config();
        cfg.backend = QueueBackend::Amqp;
        cfg.url = url.clone();
        cfg.prefix = common::queue_prefix(test);
        let amqp = Arc::new(AmqpQueue::open(&cfg).await.unwrap());
        amqp.wait_connected(Duration::from_secs(20)).await.expect("the test broker is reachable");
        let queue = Queue::from_backend(amqp, QueueBackend::Amqp);
        let raw = Raw::Amqp { url, exchange: format!("{}.hints", cfg.prefix) };
        Some(Harness { queue, raw, _dir: None })
    }

    /// Puts bytes on the queue as if another (broken) producer had.
    async fn inject_raw(&self, body: &[u8]) {
        match &self.raw {
            Raw::Local(store) => store.local_queue_push(&[body.to_vec()]).await.unwrap(),
            Raw::Amqp { url, exchange } => {
                use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
                let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
                let ch = conn.create_channel().await.unwrap();
                ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
                let opts = BasicPublishOptions { mandatory: true, immediate: false };
                let props = lapin::BasicProperties::default().with_delivery_mode(2);
                let confirm = ch.basic_publish(exchange, "0", opts, body, props).await.unwrap().await.unwrap();
                assert!(confirm.is_ack());
                conn.close(200, "done").await.unwrap();
            }
        }
    }

    async fn finish(self) {
        self.queue.delete_topology().await.expect("test topology deleted");
        self.queue.close().await;
    }
}

/// Runs `case`, then cleans up even when the case panicked.
async fn run<F, Fut>(h: Harness, case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let h = Arc::new(h);
    let outcome = tokio::time::timeout(GUARD, tokio::spawn(case(h.clone()))).await;
    let h = Arc::try_unwrap(h).ok().expect("cases release the harness");
    h.finish().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("case did not finish within {GUARD:?}"),
    }
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::run(super::Harness::local().await, super::$case).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn amqp() {
                let Some(h) = super::Harness::amqp(stringify!($case)).await else { return };
                super::run(h, super::$case).await;
            }
        }
    )*};
}

both_backends!(
    publish_then_consume_then_ack_preserves_the_hint,
    unsettled_delivery_of_a_dropped_consumer_is_redelivered_as_attempt_2,
    a_delivery_still_being_handled_past_the_visibility_timeout_is_not_handed_out_again,
    two_consumers_receive_each_of_100_hints_exactly_once,
    retry_parks_the_hint_and_redelivers_it_with_a_higher_attempt,
    defer_redelivers_the_hint_with_its_attempt_untouched_past_the_delivery_limit,
    dead_letter_is_listed_with_reason_and_replay_consumes_it_again,
    exceeding_the_delivery_limit_dead_letters_without_delivering,
    undecodable_body_is_delivered_as_an_error,
    depth_counts_ready_and_dead,
    closed_consumer_yields_none,
);

async fn next(c: &mut Box<dyn hqsync::queue::Consumer>) -> hqsync::queue::Delivery {
    c.next().await.expect("consumer works").expect("consumer open")
}

fn hint_of(d: &hqsync::queue::Delivery) -> Hint {
    d.hint.clone().expect("a decodable hint")
}

/// Polls `check` until it holds (a guard, not a timing assertion: the
/// broker applies requeues and counters asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish_then_consume_then_ack_preserves_the_hint(h: Arc<Harness>) {
    let q = &h.queue;
    q.ready().await.unwrap();
    let sent = hint("anna@acme.example");
    q.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut c = q.consumer().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(hint_of(&d), sent);
    assert_eq!(d.attempt, 1);
    d.ack().await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.ready, depth.dead), (0, 0));
}

async fn unsettled_delivery_of_a_dropped_consumer_is_redelivered_as_attempt_2(h: Arc<Harness>) {
    let q = &h.queue;
    let sent = hint("bert@acme.example");
    q.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut killed = q.consumer().await.unwrap();
    let d = next(&mut killed).await;
    assert_eq!(d.attempt, 1);
    // A killed worker: neither the delivery nor its consumer settle anything.
    drop(d);
    drop(killed);
    let mut c = q.consumer().await.unwrap();
    let again = next(&mut c).await;
    assert_eq!(hint_of(&again), sent);
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
}

/// A hint that runs longer than the visibility timeout (a first pass over
/// thousands of contacts) keeps its delivery: no second consumer gets it
/// meanwhile, which would run the same pass twice at once.
async fn a_delivery_still_being_handled_past_the_visibility_timeout_is_not_handed_out_again(h: Arc<Harness>) {
    let q = &h.queue;
    q.publish(&[hint("clara@acme.example")]).await.unwrap();
    let mut worker = q.consumer().await.unwrap();
    let d = next(&mut worker).await;
    let mut other = q.consumer().await.unwrap();
    // Three times the local backend's visibility timeout (2 s).
    let meanwhile = tokio::time::timeout(Duration::from_secs(6), other.next()).await;
    assert!(
        meanwhile.is_err(),
        "handed out again while still being handled: {:?}",
        meanwhile.map(|r| r.map(|d| d.map(|d| d.attempt)))
    );
    d.ack().await.unwrap();
    eventually("the acked hint is gone", || async { q.depth().await.unwrap().ready == 0 }).await;
}

async fn two_consumers_receive_each_of_100_hints_exactly_once(h: Arc<Harness>) {
    let q = &h.queue;
    let sent: Vec<Hint> = (0..100).map(|i| hint(&format!("user{i}@acme.example"))).collect();
    for batch in sent.chunks(5) {
        q.publish(batch).await.unwrap();
    }
    let seen: Arc<Mutex<HashMap<Uuid, u32>>> = Arc::default();
    let done = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (q, seen, done) = (q.clone(), seen.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = q.consumer().await.unwrap();
            loop {
                let d = tokio::select! {
                    d = c.next() => d.unwrap().unwrap(),
                    _ = done.cancelled() => break,
                };
                let id = hint_of(&d).hint_id;
                d.ack().await.unwrap();
                let mut seen = seen.lock().unwrap();
                *seen.entry(id).or_default() += 1;
                if seen.values().sum::<u32>() >= 100 {
                    done.cancel();
                }
            }
            c.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    for s in &sent {
        assert_eq!(seen.get(&s.hint_id), Some(&1), "hint {} delivered {:?} times", s.hint_id, seen.get(&s.hint_id));
    }
    assert_eq!(seen.len(), 100);
}

async fn retry_parks_the_hint_and_redelivers_it_with_a_higher_attempt(h: Arc<Harness>) {
    let q = &h.queue;
    let sent = hint("carl@acme.example");
    q.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut c = q.consumer().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.attempt, 1);
    d.retry(Duration::from_secs(5)).await.unwrap();
    let parked = q.depth().await.unwrap();
    assert_eq!((parked.ready, parked.retrying), (0, 1), "the retried hint waits out its delay");
    let again = next(&mut c).await;
    assert_eq!(hint_of(&again), sent);
    assert_eq!(again.attempt, 2);
    again.ack().await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.ready, depth.retrying, depth.dead), (0, 0, 0));
}

async fn defer_redelivers_the_hint_with_its_attempt_untouched_past_the_delivery_limit(h: Arc<Harness>) {
    let q = &h.queue;
    let sent = hint("gerd@acme.example");
    q.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut c = q.consumer().await.unwrap();
    // delivery_limit = 3: five waits for another worker, none of them counted.
    for _ in 0..5 {
        let d = next(&mut c).await;
        assert_eq!((hint_of(&d), d.attempt), (sent.clone(), 1), "a deferred hint keeps its attempt number");
        d.defer(Duration::from_millis(1)).await.unwrap();
    }
    // A real failure still counts.
    let d = next(&mut c).await;
    assert_eq!(d.attempt, 1);
    d.retry(Duration::from_millis(1)).await.unwrap();
    let again = next(&mut c).await;
    assert_eq!((hint_of(&again), again.attempt), (sent, 2));
    again.ack().await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.ready, depth.retrying, depth.dead), (0, 0, 0));
}

async fn dead_letter_is_listed_with_reason_and_replay_consumes_it_again(h: Arc<Harness>) {
    let q = &h.queue;
    let sent = hint("dora@acme.example");
    let other = hint("emil@acme.example");
    q.publish(&[sent.clone(), other.clone()]).await.unwrap();
    let mut c = q.consumer().await.unwrap();
    for _ in 0..2 {
        let d = next(&mut c).await;
        let reason = if hint_of(&d) == sent { "permanent: mailbox gone" } else { "permanent: other" };
        d.dead_letter(reason).await.unwrap();
    }
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let mine = dead.iter().find(|dl| dl.hint.as_ref() == Some(&sent)).expect("dead letter listed");
    assert_eq!(mine.reason, "permanent: mailbox gone");
    assert_eq!(mine.attempts, 1);
    // Listing does not consume.
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 2);

    assert_eq!(q.replay_dead_letters(std::slice::from_ref(&mine.id)).await.unwrap(), 1);
    let again = next(&mut c).await;
    assert_eq!(hint_of(&again), sent);
    again.ack().await.unwrap();
    let left = q.dead_letters(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].hint.as_ref(), Some(&other), "only the selected dead letter moved");
}

async fn exceeding_the_delivery_limit_dead_letters_without_delivering(h: Arc<Harness>) {
    let q = &h.queue;
    let sent = hint("fritz@acme.example");
    q.publish(std::slice::from_ref(&sent)).await.unwrap();
    let mut c = q.consumer().await.unwrap();
    // delivery_limit = 3: three deliveries, each failing transiently.
    for attempt in 1..=3 {
        let d = next(&mut c).await;
        assert_eq!((hint_of(&d), d.attempt), (sent.clone(), attempt));
        d.retry(Duration::from_millis(1)).await.unwrap();
    }
    let listed = async {
        loop {
            let dead = q.dead_letters(10).await.unwrap();
            if let Some(dl) = dead.into_iter().find(|dl| dl.hint.as_ref() == Some(&sent)) {
                return dl;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The consumer must dead-letter the fourth delivery itself, never hand it out.
    let dl = tokio::select! {
        d = c.next() => panic!("a hint over its delivery limit was handed out: {d:?}"),
        dl = listed => dl,
    };
    assert_eq!(dl.reason, "delivery limit exceeded");
}

async fn undecodable_body_is_delivered_as_an_error(h: Arc<Harness>) {
    let q = &h.queue;
    h.inject_raw(b"{\"v\": 1, \"not\": \"a hint\"").await;
    let mut c = q.consumer().await.unwrap();
    let d = next(&mut c).await;
    assert!(d.hint.is_err(), "decoded garbage: {:?}", d.hint);
    d.dead_letter("undecodable").await.unwrap();
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].hint.is_none());
    assert_eq!(dead[0].reason, "undecodable");
}

async fn depth_counts_ready_and_dead(h: Arc<Harness>) {
    let q = &h.queue;
    assert_eq!(q.depth().await.unwrap().ready, 0);
    let sent: Vec<Hint> = (0..3).map(|i| hint(&format!("gina{i}@acme.example"))).collect();
    q.publish(&sent).await.unwrap();
    let depth = q.depth().await.unwrap();
    assert_eq!((depth.ready, depth.dead), (3, 0));
    {
        let mut c = q.consumer().await.unwrap();
        let d = next(&mut c).await;
        d.dead_letter("permanent").await.unwrap();
        c.close().await;
    }
    eventually("two ready, one dead", || async {
        let d = q.depth().await.unwrap();
        (d.ready, d.dead) == (2, 1)
    })
    .await;
}

async fn closed_consumer_yields_none(h: Arc<Harness>) {
    let mut c = h.queue.consumer().await.unwrap();
    c.close().await;
    assert!(c.next().await.unwrap().is_none());
}

// ---- amqp only: broker outages ----

fn amqp_config(url: String) -> QueueConfig {
    let mut cfg = test_config();
    cfg.backend = QueueBackend::Amqp;
    cfg.url = url;
    cfg.prefix = common::queue_prefix("outage");
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_open_succeeds_without_a_broker_and_publish_fails_fast_as_unavailable() {
    let q = open_amqp(amqp_config("amqp://guest:guest@127.0.0.1:1/%2f".into())).await;
    assert!(q.ready().await.is_err());
    let res = tokio::time::timeout(GUARD, q.publish(&[hint("hans@acme.example")])).await.expect("publish returns");
    assert!(matches!(res, Err(QueueError::Unavailable(_))), "{res:?}");
    assert!(matches!(q.consumer().await, Err(QueueError::Unavailable(_))));
    tokio::time::timeout(GUARD, q.close()).await.expect("close returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_silent_endpoint_never_hangs_publish() {
    // Accepts TCP and never says a word, like a half-dead load balancer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            sockets.push(s);
        }
    });
    let q = open_amqp(amqp_config(format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))).await;
    for _ in 0..3 {
        let res = tokio::time::timeout(GUARD, q.publish(&[hint("ida@acme.example")])).await.expect("publish returns");
        assert!(matches!(res, Err(QueueError::Unavailable(_))), "{res:?}");
        assert!(q.ready().await.is_err());
        // Let the background connect attempt run into its own timeout.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    tokio::time::timeout(GUARD, q.close()).await.expect("close returns");
    held.abort();
}

/// `Queue::open` wants a store the amqp backend never touches.
async fn open_amqp(cfg: QueueConfig) -> Queue {
    let amqp = tokio::time::timeout(GUARD, AmqpQueue::open(&cfg)).await.expect("open returns").expect("open is Ok");
    Queue::from_backend(Arc::new(amqp), QueueBackend::Amqp)
}

/// A TCP forwarder to the test broker whose connections the test can cut,
/// like a broker restart or a network blip, without touching the broker
/// that other tests share.
struct CuttableProxy {
    port: u16,
    cut: Arc<Mutex<CancellationToken>>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(broker_url: &str) -> CuttableProxy {
        let u = url::Url::parse(broker_url).unwrap();
        let upstream = format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(5672));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(Mutex::new(CancellationToken::new()));
        let cuts = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let token = cuts.lock().unwrap().clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = token.cancelled() => {}
                    }
                });
            }
        });
        CuttableProxy { port, cut, task }
    }

    fn url(&self, broker_url: &str) -> String {
        let mut u = url::Url::parse(broker_url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }

    /// Drops every connection open right now; new ones go through.
    fn cut(&self) {
        let mut current = self.cut.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.lock().unwrap().cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_every_confirmed_hint_survives_a_dropped_connection() {
    let Some(broker) = common::rabbitmq_url() else { return };
    let proxy = CuttableProxy::start(&broker).await;
    let mut cfg = amqp_config(proxy.url(&broker));
    cfg.prefix = common::queue_prefix("reconnect");
    let amqp = Arc::new(AmqpQueue::open(&cfg).await.unwrap());
    amqp.wait_connected(Duration::from_secs(20)).await.unwrap();
    let q = Queue::from_backend(amqp.clone(), QueueBackend::Amqp);

    let outcome = tokio::time::timeout(GUARD, async {
        let mut old = q.consumer().await.unwrap();
        // Publish while the connection is cut under the publisher's feet.
        let publisher = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut confirmed = Vec::new();
                for i in 0..200 {
                    let h = hint(&format!("jan{i}@acme.example"));
                    if q.publish(std::slice::from_ref(&h)).await.is_ok() {
                        confirmed.push(h.hint_id);
                    }
                    if i % 20 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                confirmed
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.cut();
        // The consumer of the dead connection reports it instead of hanging.
        loop {
            match old.next().await {
                Ok(Some(d)) => drop(d),
                Ok(None) => panic!("an open consumer must not end quietly"),
                Err(e) => {
                    assert!(matches!(e, QueueError::Unavailable(_)), "{e:?}");
                    break;
                }
            }
        }
        let confirmed = publisher.await.unwrap();
        amqp.wait_connected(Duration::from_secs(20)).await.unwrap();
        eventually("reconnected", || async { q.ready().await.is_ok() }).await;
        let last = hint("kai@acme.example");
        q.publish(std::slice::from_ref(&last)).await.unwrap();

        // Nothing confirmed is lost: all of it is consumed on the new connection.
        let mut c = q.consumer().await.unwrap();
        let mut missing: std::collections::HashSet<Uuid> = confirmed.into_iter().collect();
        missing.insert(last.hint_id);
        while !missing.is_empty() {
            let d = next(&mut c).await;
            missing.remove(&hint_of(&d).hint_id);
            d.ack().await.unwrap();
        }
        c.close().await;
    })
    .await;
    amqp.delete_topology().await.expect("test topology deleted");
    q.close().await;
    outcome.expect("case finished within the guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_publish_and_consume_right_after_open_do_not_race_the_handshake() {
    let Some(broker) = common::rabbitmq_url() else { return };
    let mut cfg = amqp_config(broker);
    cfg.prefix = common::queue_prefix("startup");
    let q = open_amqp(cfg).await;
    let sent = hint("lea@acme.example");
    let published = q.publish(std::slice::from_ref(&sent)).await;
    let consumed = async {
        let mut c = q.consumer().await?;
        let d = c.next().await?.expect("consumer open");
        let got = d.hint.clone().expect("decodable");
        d.ack().await?;
        Ok::<_, QueueError>(got)
    };
    let consumed = tokio::time::timeout(GUARD, consumed).await.expect("consumed within the guard");
    q.delete_topology().await.expect("test topology deleted");
    q.close().await;
    published.expect("published without waiting for ready()");
    assert_eq!(consumed.unwrap(), sent);
}
