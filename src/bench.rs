//! `hqsync bench …`: performance figures, each beside a baseline measured
//! in the same run on the same machine, so the ratio — not the absolute
//! number — is what we track. Progress goes to stderr, figures to stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, QueueBackend};
use crate::model::{Kind, MailboxId, TenantId};
use crate::queue::Queue;
use crate::store::{Cipher, GraphCredentials, HellohqCredentials, Mailbox, MailboxState, Store, Subscription, Tenant};

pub mod idle;
pub mod rig;
pub mod sched;
pub mod sync;

pub use idle::{idle, IdleArgs, IdleFigures};
pub use sched::{scheduler, SchedulerArgs, SchedulerReport};
pub use sync::{
    e2e, fanout, initial_sync, requests, resources, E2eArgs, E2eReport, FanoutArgs, FanoutFigures, InitialSyncArgs,
    InitialSyncReport, RequestFigures, RequestsArgs, ResourcesArgs, ResourcesReport,
};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// POST /v1/notifications/graph with many concurrent clients, beside the
    /// raw publish-with-confirm rate of the same broker (or store).
    Ingress(IngressArgs),
    /// Notification received → counterpart written, p50/p99 at a steady rate
    /// (contacts edited in Exchange and in helloHQ), beside the simulators'
    /// own write round trip.
    E2e(E2eArgs),
    /// Graph and helloHQ requests per mirrored change, per direction and
    /// kind, and echo writes, from the simulators' counters.
    Requests(RequestsArgs),
    /// Initial sync of many mailboxes with the Graph simulator enforcing
    /// per-mailbox quotas, beside the minimum those quotas allow.
    InitialSync(InitialSyncArgs),
    /// Worker and serve CPU time per change and resident memory under load.
    Resources(ResourcesArgs),
    /// The real scheduler keeping many subscriptions renewed: renewals/min
    /// beside the rate the lifetimes need, CPU per renewal.
    Scheduler(SchedulerArgs),
    /// One helloHQ contact edit → N mailbox writes: time and requests.
    Fanout(FanoutArgs),
    /// Requests per minute the periodic passes cost helloHQ and Graph for
    /// a tenant that does not change and under a steady stream of edits, a
    /// large tenant beside a 100-contact one, against helloHQ's limit.
    Idle(IdleArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackend {
    Amqp,
    Local,
    Both,
}

#[derive(Debug, Args)]
pub struct IngressArgs {
    /// Which queue backend(s) to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub backend: BenchBackend,
    /// Concurrent HTTP clients (and publishes in flight for the baseline).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Notifications to send per measurement with the internal load
    /// generator (with wrk, both measurements last `--seconds`).
    #[arg(long, default_value_t = 20_000)]
    pub notifications: u64,
    /// Notifications sent before measuring (connection pools, caches).
    #[arg(long, default_value_t = 1_000)]
    pub warmup: u64,
    /// What drives the HTTP load: `wrk` (a separate, lean C process, when
    /// installed: `apt-get install wrk`) or `internal` (reqwest in this
    /// process, which then competes with the server for the same cores).
    #[arg(long, value_enum, default_value = "auto")]
    pub load: LoadGenerator,
    /// Duration of a `wrk` measurement, and of the baseline beside it.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadGenerator {
    /// `wrk` when it is on PATH, else `internal`.
    Auto,
    Wrk,
    Internal,
}

pub async fn run(cmd: BenchCommand, config: Config) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingress(args) => ingress(args, config).await,
        BenchCommand::E2e(args) => {
            let r = e2e(args).await?;
            anyhow::ensure!(
                r.missing == 0,
                "{} of {} edits did not get all their counterpart writes (listed above)",
                r.missing,
                r.edits
            );
            Ok(())
        }
        BenchCommand::Requests(args) => requests(args).await.map(drop),
        BenchCommand::InitialSync(args) => initial_sync(args).await.map(drop),
        BenchCommand::Resources(args) => resources(args).await.map(drop),
        BenchCommand::Scheduler(args) => scheduler(args).await.map(drop),
        BenchCommand::Fanout(args) => fanout(args).await.map(drop),
        BenchCommand::Idle(args) => idle(args).await.map(drop),
    }
}

/// Rate and latency of one measurement.
struct Figures {
    count: u64,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU per operation, when measured.
    cpu: Option<CpuPerOp>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn from_latencies(count: u64, elapsed: Duration, mut latencies_us: Vec<u64>) -> Figures {
        latencies_us.sort_unstable();
        let pct = |p: f64| match latencies_us.len() {
            0 => f64::NAN,
            n => latencies_us[((n as f64 - 1.0) * p).round() as usize] as f64 / 1000.0,
        };
        Figures { count, elapsed, p50_ms: pct(0.5), p99_ms: pct(0.99), cpu: None }
    }
}

async fn ingress(args: IngressArgs, config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients > 0 && args.notifications > 0, "--clients and --notifications must be at least 1");
    let dir = tempfile::tempdir().context("creating a scratch folder")?;
    let use_wrk = match args.load {
        LoadGenerator::Wrk => true,
        LoadGenerator::Internal => false,
        LoadGenerator::Auto => wrk_installed().await,
    };
    // The baseline moves as much as the ingress run: the same count, or
    // the same duration when wrk drives ingress for `--seconds`.
    let budget = if use_wrk { Budget::For(Duration::from_secs(args.seconds)) } else { Budget::Ops(args.notifications) };
    let length = match budget {
        Budget::Ops(n) => format!("{n} notifications each (internal load generator)"),
        Budget::For(d) => format!("{} s each (wrk)", d.as_secs()),
    };
    println!(
        "hqsync bench ingress: {length}, {} concurrent clients, {} cores",
        args.clients,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    if matches!(args.backend, BenchBackend::Amqp | BenchBackend::Both) {
        let url = config.queue.url.clone();
        let prefix = format!("bench.{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let raw = raw_amqp_confirms(&url, &prefix, args.clients, budget).await?;
        let mut cfg = config.clone();
        cfg.queue.backend = QueueBackend::Amqp;
        cfg.queue.prefix = prefix.clone();
        let (direct, http) = http_ingress(&cfg, dir.path(), "amqp", &args, use_wrk, budget).await?;
        let bare = bare_http(dir.path(), "amqp", &args, use_wrk).await?;
        report("amqp", "raw lapin publish+confirm, quorum queue", &raw, &direct, &http, &bare);
    }
    if matches!(args.backend, BenchBackend::Local | BenchBackend::Both) {
        let mut cfg = config.clone();
        cfg.queue.backend = QueueBackend::Local;
        let raw = raw_local_push(dir.path(), args.clients, budget).await?;
        let (direct, http) = http_ingress(&cfg, dir.path(), "local", &args, use_wrk, budget).await?;
        let bare = bare_http(dir.path(), "local", &args, use_wrk).await?;
        report("local", "raw store push (one committed row each), SQLite", &raw, &direct, &http, &bare);
    }
    Ok(())
}

fn report(backend: &str, baseline: &str, raw: &Figures, direct: &Figures, http: &Figures, bare: &Figures) {
    println!(
        "[{backend}] baseline  {baseline}: {:>9.0} msg/s (p50 {:.2} ms, p99 {:.2} ms)",
        raw.rate(),
        raw.p50_ms,
        raw.p99_ms
    );
    println!(
        "[{backend}] ingress   POST /v1/notifications/graph → 202: {:>9.0} notifications/s (p50 {:.2} ms, p99 {:.2} ms)",
        http.rate(),
        http.p50_ms,
        http.p99_ms
    );
    println!(
        "[{backend}] publish   hqsync queue.publish of a hint, no HTTP: {:>9.0} hints/s (p50 {:.2} ms, p99 {:.2} ms) = {:.0}% of baseline",
        direct.rate(),
        direct.p50_ms,
        direct.p99_ms,
        100.0 * direct.rate() / raw.rate()
    );
    let show = |f: &Figures| match f.cpu {
        Some(c) => format!(
            "hqsync {:.0} + load generator {:.0} + broker {} µs",
            c.hqsync_us,
            c.load_us,
            c.broker_us.filter(|_| backend == "amqp").map_or("n/a".to_string(), |b| format!("{b:.0}"))
        ),
        None => "n/a".to_string(),
    };
    println!("[{backend}] cpu/msg   baseline: {}", show(raw));
    println!("[{backend}] cpu/msg   ingress:  {}", show(http));
    println!("[{backend}] cpu/msg   publish:  {}", show(direct));
    println!(
        "[{backend}] floor     bare axum handler answering 202 (no parsing, no publish), same load: {:>9.0} requests/s (p50 {:.2} ms, p99 {:.2} ms); cpu/msg {}",
        bare.rate(),
        bare.p50_ms,
        bare.p99_ms,
        show(bare)
    );
    // The floor of an accepted notification's CPU: answering the HTTP
    // request at all plus publishing it with the raw client, each
    // measured in this run (this process's CPU: server, in-process load
    // generator and broker client alike).
    if let (Some(h), Some(b), Some(r)) = (http.cpu, bare.cpu, raw.cpu) {
        let floor = b.hqsync_us + r.hqsync_us;
        println!(
            "[{backend}] cpu ratio hqsync per accepted notification {:.0} µs / floor (bare 202 {:.0} + raw publish {:.0} = {:.0} µs) = {:.2}× (target ≤ 2×)",
            h.hqsync_us,
            b.hqsync_us,
            r.hqsync_us,
            floor,
            h.hqsync_us / floor.max(f64::EPSILON)
        );
    }
    println!(
        "[{backend}] ratio     ingress / bare 202 = {:.0}% of the requests/s",
        100.0 * http.rate() / bare.rate().max(f64::EPSILON)
    );
    println!("[{backend}] ratio     ingress / baseline = {:.0}%", 100.0 * http.rate() / raw.rate());
}

/// Progress on stderr once a second while `done` grows towards `total`
/// (`None`: a timed run).
fn progress(label: String, done: Arc<AtomicU64>, total: Option<u64>) -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = s.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let d = done.load(Ordering::Relaxed);
                    let rate = d as f64 / started.elapsed().as_secs_f64();
                    match total {
                        Some(t) => eprintln!("  {label}: {d}/{t} ({rate:.0}/s)"),
                        None => eprintln!("  {label}: {d} in {:.0} s ({rate:.0}/s)", started.elapsed().as_secs_f64()),
                    }
                }
            }
        }
    });
    stop
}

/// How long a measurement runs: a number of operations, or a duration (a
/// baseline beside a timed `wrk` run gets the same length, so both move a
/// comparable volume through the broker).
#[derive(Debug, Clone, Copy)]
enum Budget {
    Ops(u64),
    For(Duration),
}

/// Runs operations with `clients` in flight until the budget is spent,
/// timing each.
async fn drive<F, Fut>(label: String, clients: usize, budget: Budget, op: F) -> anyhow::Result<Figures>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (n, until) = match budget {
        Budget::Ops(n) => (n, None),
        Budget::For(d) => (u64::MAX, Some(Instant::now() + d)),
    };
    let stop = progress(label, done.clone(), until.is_none().then_some(n));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (op, next, done) = (op.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        });
    }
    let mut latencies_us = Vec::new();
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r.context("benchmark task panicked")? {
            Ok(l) => latencies_us.extend(l),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(Figures::from_latencies(done.load(Ordering::Relaxed), elapsed, latencies_us))
}

fn hint_sized_payload() -> Vec<u8> {
    // The size of a typical serialised hint, so the baseline moves the same bytes.
    vec![b'x'; 330]
}

async fn raw_amqp_confirms(url: &str, prefix: &str, clients: usize, budget: Budget) -> anyhow::Result<Figures> {
    // The same connection settings as the queue backend, so only our code differs.
    let conn = Connection::connect(url, crate::queue::amqp::connection_properties("hqsync-bench-baseline"))
        .await
        .with_context(|| format!("connecting to RabbitMQ at {} (queue.url)", crate::config::redact_url(url)))?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let queue = format!("{prefix}.raw");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    ch.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
    let payload = Arc::new(hint_sized_payload());
    let publish = {
        let (ch, queue) = (ch.clone(), queue.clone());
        move |_| {
            let (ch, queue, payload) = (ch.clone(), queue.clone(), payload.clone());
            async move {
                let confirm = ch
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        &payload,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                anyhow::ensure!(confirm.is_ack(), "broker nacked a publish");
                Ok(())
            }
        }
    };
    drive("baseline amqp warm-up".into(), clients, Budget::Ops(500), publish.clone()).await?;
    let cpu = CpuClock::start();
    let figures = drive("baseline amqp".into(), clients, budget, publish).await.map(|mut f| {
        f.cpu = cpu.per_op(f.count);
        f
    });
    let _ = ch.queue_delete(&queue, QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "bench done").await;
    figures
}

async fn raw_local_push(dir: &std::path::Path, clients: usize, budget: Budget) -> anyhow::Result<Figures> {
    let store = Store::open(
        &format!("sqlite://{}", dir.join("raw-local.db").display()),
        10,
        Cipher::from_base64(&Cipher::generate_key_base64())?,
    )
    .await?;
    let payload = hint_sized_payload();
    let cpu = CpuClock::start();
    let figures = drive("baseline local".into(), clients, budget, move |_| {
        let (store, payload) = (store.clone(), payload.clone());
        async move { Ok(store.local_queue_push(&[payload]).await?) }
    })
    .await
    .map(|mut f| {
        f.cpu = cpu.per_op(f.count);
        f
    });
    figures
}

/// CPU time per operation of one measurement, in microseconds: this process
/// (service and in-process clients), the load generator (`wrk`, a reaped
/// child), and the broker when it runs on this machine.
#[derive(Debug, Clone, Copy)]
struct CpuPerOp {
    hqsync_us: f64,
    load_us: f64,
    broker_us: Option<f64>,
}

/// CPU seconds used so far, read from `/proc` (Linux; `None` elsewhere).
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    own: f64,
    children: f64,
    broker: Option<f64>,
}

/// Linux reports `/proc` CPU times in USER_HZ ticks, 100 per second on
/// every architecture it supports.
const USER_HZ: f64 = 100.0;

/// utime+stime and cutime+cstime of a `/proc/<pid>/stat` line, in seconds.
fn proc_stat_cpu(stat: &str) -> Option<(f64, f64)> {
    // The command name (field 2) may contain spaces: fields after its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(4).map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.len() == 4).then(|| ((f[0] + f[1]) / USER_HZ, (f[2] + f[3]) / USER_HZ))
}

/// The local RabbitMQ (Erlang VM) process, if there is one.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

fn cpu_sample() -> Option<CpuSample> {
    let (own, children) = proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let broker = broker_pid()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .and_then(|s| proc_stat_cpu(&s))
        .map(|(b, _)| b);
    Some(CpuSample { own, children, broker })
}

/// Started before a measurement; `per_op` after it.
struct CpuClock(Option<CpuSample>);

impl CpuClock {
    fn start() -> CpuClock {
        CpuClock(cpu_sample())
    }

    fn per_op(&self, ops: u64) -> Option<CpuPerOp> {
        let (a, b) = (self.0?, cpu_sample()?);
        let us = |d: f64| 1e6 * d / ops.max(1) as f64;
        Some(CpuPerOp {
            hqsync_us: us(b.own - a.own),
            load_us: us(b.children - a.children),
            broker_us: a.broker.zip(b.broker).map(|(x, y)| us(y - x)),
        })
    }
}

/// Starts the real HTTP edge in this process and floods it.
async fn http_ingress(
    cfg: &Config,
    dir: &std::path::Path,
    label: &str,
    args: &IngressArgs,
    use_wrk: bool,
    budget: Budget,
) -> anyhow::Result<(Figures, Figures)> {
    let store = Store::open(
        &format!("sqlite://{}", dir.join(format!("ingress-{label}.db")).display()),
        10,
        Cipher::from_base64(&Cipher::generate_key_base64())?,
    )
    .await?;
    let (tenant, mailbox) = seed_bench_subscription(&store).await?;
    let (tenant2, mailbox2) = (tenant.clone(), mailbox.clone());
    let queue = Queue::open(&cfg.queue, &store).await?;
    queue
        .wait_ready(Duration::from_secs(5))
        .await
        .with_context(|| format!("the {label} queue did not become ready"))?;
    let state = crate::http::AppState::new(
        store.clone(),
        queue.clone(),
        Duration::from_millis(cfg.queue.publish_timeout_ms),
        cfg.http.max_body_bytes,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(listener, crate::http::router(state), shutdown.clone()));
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let url = format!("http://{addr}/v1/notifications/graph");
    let post = move |i: u64| {
        let (client, url) = (client.clone(), url.clone());
        let body = notification_body(&tenant2, &mailbox2, i);
        async move {
            let resp = client.post(&url).header("content-type", "application/json").body(body).send().await?;
            anyhow::ensure!(resp.status() == reqwest::StatusCode::ACCEPTED, "ingress answered {}", resp.status());
            Ok(())
        }
    };
    drive(format!("ingress {label} warm-up"), args.clients, Budget::Ops(args.warmup), post.clone()).await?;
    let split_before = server_time_split();
    let cpu = CpuClock::start();
    let figures = if use_wrk {
        let body = notification_body(&tenant, &mailbox, 0);
        wrk(&format!("http://{addr}/v1/notifications/graph"), &body, args.clients, args.seconds, dir, label).await
    } else {
        drive(format!("ingress {label} (internal load)"), args.clients, Budget::Ops(args.notifications), post).await
    };
    let figures = figures.map(|mut f| {
        f.cpu = cpu.per_op(f.count);
        f
    });
    shutdown.cancel();
    let _ = server.await;
    let (request_s, confirm_s) = server_time_split();
    eprintln!(
        "  {label}: of the time the server spent on these requests, {:.0}% was waiting for the queue's confirm",
        100.0 * (confirm_s - split_before.1) / (request_s - split_before.0).max(f64::EPSILON)
    );
    // hqsync's own publish path without HTTP: the same topology, message
    // properties and hints as ingress produces, so the report separates the
    // broker's cost of our topology from the HTTP edge's cost.
    // Measured after ingress, so ingress (like the baseline) starts on
    // empty queues.
    let cpu = CpuClock::start();
    let mut direct = {
        let (queue, tenant, mailbox) = (queue.clone(), tenant.clone(), mailbox.clone());
        drive(format!("queue.publish {label} (no HTTP)"), args.clients, budget, move |i| {
            let queue = queue.clone();
            let hint = bench_hint(&tenant, &mailbox, i);
            async move { Ok(queue.publish(std::slice::from_ref(&hint)).await?) }
        })
        .await?
    };
    direct.cpu = cpu.per_op(direct.count);
    if let (Ok(d), Ok(f)) = (queue.depth().await, figures.as_ref()) {
        // Every 202 must have left a hint behind.
        eprintln!(
            "  {label} queue depth after the run: {} ready (expected at least {})",
            d.ready,
            direct.count + args.warmup + f.count
        );
    }
    if let Err(e) = queue.delete_topology().await {
        eprintln!("  warning: could not delete the benchmark's queues: {e}");
    }
    queue.close().await;
    Ok((direct, figures?))
}

/// The floor of the HTTP edge: an axum handler that reads the body and
/// answers 202 without parsing or publishing, served and driven exactly
/// like [`http_ingress`] (same load generator, clients and length).
async fn bare_http(dir: &std::path::Path, label: &str, args: &IngressArgs, use_wrk: bool) -> anyhow::Result<Figures> {
    async fn accept(_body: axum::body::Bytes) -> axum::http::StatusCode {
        axum::http::StatusCode::ACCEPTED
    }
    let router = axum::Router::new().route("/v1/notifications/graph", axum::routing::post(accept));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await
        })
    };
    let url = format!("http://{addr}/v1/notifications/graph");
    let (tenant, mailbox) = (TenantId::parse("bench")?, MailboxId::parse("bench@example.invalid")?);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.clients).build()?;
    let post = {
        let (url, mailbox, tenant) = (url.clone(), mailbox.clone(), tenant.clone());
        move |i: u64| {
            let (client, url) = (client.clone(), url.clone());
            let body = notification_body(&tenant, &mailbox, i);
            async move {
                let resp = client.post(&url).header("content-type", "application/json").body(body).send().await?;
                anyhow::ensure!(
                    resp.status() == reqwest::StatusCode::ACCEPTED,
                    "bare handler answered {}",
                    resp.status()
                );
                Ok(())
            }
        }
    };
    drive(format!("bare 202 {label} warm-up"), args.clients, Budget::Ops(args.warmup), post.clone()).await?;
    let cpu = CpuClock::start();
    let figures = if use_wrk {
        let body = notification_body(&tenant, &mailbox, 0);
        wrk(&url, &body, args.clients, args.seconds, dir, &format!("bare-{label}")).await
    } else {
        drive(format!("bare 202 {label} (internal load)"), args.clients, Budget::Ops(args.notifications), post).await
    };
    let figures = figures.map(|mut f| {
        f.cpu = cpu.per_op(f.count);
        f
    });
    shutdown.cancel();
    let _ = server.await;
    figures
}

/// Total seconds the server spent on notification requests, and waiting
/// for publish confirms, so far (from its own Prometheus histograms).
fn server_time_split() -> (f64, f64) {
    let text = crate::http::metrics::handle().render();
    let sum = |prefix: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    (
        sum("hqsync_http_request_duration_seconds_sum{route=\"/v1/notifications/graph\"}"),
        sum("hqsync_publish_confirm_seconds_sum"),
    )
}

const BENCH_CLIENT_STATE: &str = "bench-client-state";
const BENCH_SUBSCRIPTION: &str = "bench-subscription";
const BENCH_ENTRA_TENANT: &str = "00000000-0000-0000-0000-0000000be7c4";

async fn seed_bench_subscription(store: &Store) -> anyhow::Result<(TenantId, MailboxId)> {
    let tenant = TenantId::parse("bench")?;
    let mailbox = MailboxId::parse("bench@example.invalid")?;
    let now = chrono::Utc::now();
    store
        .upsert_tenant(&Tenant {
            id: tenant.clone(),
            name: "Benchmark".into(),
            enabled: true,
            graph: GraphCredentials {
                entra_tenant_id: BENCH_ENTRA_TENANT.into(),
                client_id: "bench-client".into(),
                client_secret: "bench-secret".to_string().into(),
                graph_base: crate::config::default_graph_base(),
                login_base: crate::config::default_login_base(),
            },
            hellohq: HellohqCredentials {
                base_url: crate::config::default_hellohq_base(),
                token: "bench-token".to_string().into(),
                webhook_secrets: vec![],
            },
            settings: serde_json::json!({}),
            created_at: now,
            updated_at: now,
        })
        .await?;
    store
        .upsert_mailbox(&Mailbox {
            tenant: tenant.clone(),
            id: mailbox.clone(),
            hq_user_id: None,
            state: MailboxState::Active,
            settings: serde_json::json!({}),
            last_error: None,
            updated_at: now,
        })
        .await?;
    store
        .upsert_subscription(&Subscription {
            id: BENCH_SUBSCRIPTION.into(),
            tenant: tenant.clone(),
            mailbox: mailbox.clone(),
            kind: Kind::Contact,
            resource: "users/bench@example.invalid/contactFolders/f/contacts".into(),
            client_state_sha256: Sha256::digest(BENCH_CLIENT_STATE.as_bytes()).into(),
            expires_at: now + chrono::Duration::days(2),
            state: "active".into(),
            created_at: now,
        })
        .await?;
    Ok((tenant, mailbox))
}

/// The hint ingress makes of [`notification_body`] `i`.
fn bench_hint(tenant: &TenantId, mailbox: &MailboxId, i: u64) -> crate::queue::Hint {
    use crate::queue::{Change, Hint, Origin, HINT_VERSION};
    Hint {
        v: HINT_VERSION,
        hint_id: Hint::stable_id(tenant, "graph", &format!("{BENCH_SUBSCRIPTION}/n{i}")),
        tenant: tenant.clone(),
        mailbox: Some(mailbox.clone()),
        kind: Some(Kind::Contact),
        entity: None,
        origin: Origin::Exchange,
        resource_id: Some(format!("c{i}")),
        subscription_id: Some(BENCH_SUBSCRIPTION.into()),
        change: Change::Updated,
        version: Some("W/\"CQAAABYAAAA\"".into()),
        received_at: chrono::Utc::now(),
    }
}

fn notification_body(_tenant: &TenantId, mailbox: &MailboxId, i: u64) -> String {
    serde_json::json!({"value": [{
        "id": format!("n{i}"),
        "subscriptionId": BENCH_SUBSCRIPTION,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "clientState": BENCH_CLIENT_STATE,
        "changeType": "updated",
        "resource": format!("Users/{mailbox}/ContactFolders/f/Contacts/c{i}"),
        "tenantId": BENCH_ENTRA_TENANT,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Contact",
            "@odata.id": format!("Users/{mailbox}/Contacts/c{i}"),
            "@odata.etag": "W/\"CQAAABYAAAA\"",
            "id": format!("c{i}")
        }
    }]})
    .to_string()
}

async fn wrk_installed() -> bool {
    tokio::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok()
}

/// Drives `url` with `wrk` (one thread, `clients` connections) POSTing `body`.
async fn wrk(
    url: &str,
    body: &str,
    clients: usize,
    seconds: u64,
    dir: &std::path::Path,
    label: &str,
) -> anyhow::Result<Figures> {
    anyhow::ensure!(!body.contains("]]"), "body cannot be quoted for Lua");
    let script = dir.join(format!("wrk-{label}.lua"));
    std::fs::write(
        &script,
        format!("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"),
    )?;
    eprintln!("  ingress {label}: wrk, {clients} connections, {seconds} s");
    let ticker = {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            for t in 1..=seconds {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => eprintln!("  ingress {label}: {t}/{seconds} s"),
                }
            }
        });
        stop
    };
    let out = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{clients}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    ticker.cancel();
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Reads count, duration, p50 and p99 from `wrk --latency` output; refuses
/// a run in which any answer was not 2xx.
fn parse_wrk(text: &str) -> anyhow::Result<Figures> {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        anyhow::bail!("ingress refused requests during the run: {}", line.trim());
    }
    let ms = |v: &str| -> Option<f64> {
        let (num, factor) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            return None;
        };
        num.parse::<f64>().ok().map(|x| x * factor)
    };
    let pct = |p: &str| text.lines().map(str::trim).find_map(|l| l.strip_prefix(p).and_then(|rest| ms(rest.trim())));
    let summary = text.lines().map(str::trim).find(|l| l.contains(" requests in ")).context("no summary line")?;
    let mut words = summary.split_whitespace();
    let count: u64 = words.next().context("no count")?.parse()?;
    let secs = summary
        .split(" requests in ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|d| ms(d.trim()))
        .context("no duration")?;
    Ok(Figures {
        cpu: None,
        count,
        elapsed: Duration::from_secs_f64(secs / 1000.0),
        p50_ms: pct("50%").context("no p50")?,
        p99_ms: pct("99%").context("no p99")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:1/v1/notifications/graph
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.01ms    1.02ms  20.00ms   90.00%
    Req/Sec    12.00k     1.00k   14.00k    70.00%
  Latency Distribution
     50%  840.00us
     75%    5.20ms
     90%    5.80ms
     99%    1.20s
  120000 requests in 10.00s, 10.00MB read
Requests/sec:  12000.00
Transfer/sec:      1.00MB
";

    #[test]
    fn reads_wrk_figures_in_their_units() {
        let f = parse_wrk(WRK).unwrap();
        assert_eq!(f.count, 120_000);
        assert!((f.rate() - 12_000.0).abs() < 1.0);
        assert!((f.p50_ms - 0.84).abs() < 1e-9);
        assert!((f.p99_ms - 1200.0).abs() < 1e-9);
    }

    #[test]
    fn a_run_with_refused_requests_is_not_a_measurement() {
        let bad = WRK.replace("Requests/sec", "  Non-2xx or 3xx responses: 12\nRequests/sec");
        assert!(parse_wrk(&bad).is_err());
    }

    #[test]
    fn reads_cpu_times_from_a_proc_stat_line_whose_name_has_spaces() {
        let line = "1234 (tokio rt (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 9 0 100 0 0";
        let (own, children) = proc_stat_cpu(line).unwrap();
        assert!((own - 3.0).abs() < 1e-9, "{own}");
        assert!((children - 0.5).abs() < 1e-9, "{children}");
        assert!(proc_stat_cpu("garbage").is_none());
    }

    #[test]
    fn percentiles_from_latencies() {
        let f = Figures::from_latencies(4, Duration::from_secs(1), vec![4000, 1000, 3000, 2000]);
        assert_eq!(f.rate(), 4.0);
        assert_eq!(f.p50_ms, 3.0);
        assert_eq!(f.p99_ms, 4.0);
    }
}
