//! Outlook's per-mailbox limits hold for the deployment, not per process
//! (issue 19, item 7). Outlook allows 4 concurrent requests per app and
//! mailbox; each hqsync process counts the live processes doing Graph work
//! in the store and keeps to max(1, floor(4 / N)) of them
//! (src/worker/presence.rs, src/connectors/graph/share.rs), while every
//! process keeps taking hints of every mailbox (nothing is deferred).
//! Three `hqsync worker` processes on one RabbitMQ take a burst of Exchange
//! hints for two mailboxes while the Graph simulator (no concurrency cap of
//! its own here, and a little latency so that requests overlap) records
//! the most requests it saw in flight at once per mailbox. That peak must
//! stay within Outlook's 4.
//!
//! The figures (peaks, hints/s) are printed (`--nocapture`):
//! `cargo test --test mailbox_concurrency -- --nocapture`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hqsync::config::{Config, QueueBackend, QueueConfig};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, Origin, Queue, HINT_VERSION};
use hqsync::sim::graph::{GraphSim, GraphSimConfig};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, SeedProfile};
use hqsync::store::{Cipher, Mailbox, MailboxState, Store};
use hqsync::worker::presence::{PresenceTimings, GROUP};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const TENANT_ID: &str = "conc";
const DOMAIN: &str = "conc.example";
const WORKERS: usize = 3;
const HINTS_PER_MAILBOX: usize = 240;
/// Outlook: concurrent requests per app and mailbox.
const OUTLOOK_CONCURRENCY: u64 = 4;

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn sim_json(http: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut r = http.request(method, &url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url} answered {status}: {v}");
    v
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

fn exchange_hint(tenant: &TenantId, mailbox: &str, i: usize) -> Hint {
    Hint {
        v: HINT_VERSION,
        hint_id: uuid::Uuid::new_v4(),
        tenant: tenant.clone(),
        mailbox: Some(MailboxId::parse(mailbox).unwrap()),
        kind: Some(Kind::Contact),
        entity: None,
        origin: Origin::Exchange,
        // No such contact: the engine reads it from Graph (one request) and
        // finds it gone. What counts here is that request, not the merge.
        resource_id: Some(format!("AAMkAGI2-conc-{i:05}")),
        version: None,
        subscription_id: Some("sub-conc".into()),
        change: Change::Updated,
        received_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_never_exceed_four_concurrent_requests_per_mailbox() {
    let Some(amqp) = rabbitmq_url() else { return };
    let Some(pg) = fresh_postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let graph_cfg = GraphSimConfig {
        // Count what the deployment tries, never refuse it: a cap here would
        // hide the concurrency this test measures behind 429s.
        throttle_max_concurrent: 10_000,
        ..GraphSimConfig::default()
    };
    let graph_sim =
        GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), graph_cfg).await.unwrap();
    let hq_sim = HellohqSim::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        HellohqSimConfig { seed: SeedProfile::Empty, rate_limit_per_minute: 1_000_000, ..HellohqSimConfig::default() },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mailboxes: Vec<String> = (0..2).map(|i| format!("user{i}@{DOMAIN}")).collect();
    let seed = sim_json(
        &http,
        reqwest::Method::POST,
        format!("{}/_sim/seed", graph_sim.base_url()),
        Some(json!({"domain": DOMAIN, "mailboxes": mailboxes.iter().enumerate().map(|(i, m)| json!({
            "userPrincipalName": m, "displayName": format!("Person {i}")})).collect::<Vec<_>>()})),
    )
    .await;
    let hq_base = hq_sim.base_url();
    sim_json(
        &http,
        reqwest::Method::POST,
        format!("{hq_base}/_sim/seed"),
        Some(json!({"users": mailboxes.iter().enumerate().map(|(i, m)| json!({
            "firstName": "Person", "lastName": format!("{i}"), "eMailWork": m})).collect::<Vec<_>>()})),
    )
    .await;
    // Requests overlap only if they take a while.
    sim_json(
        &http,
        reqwest::Method::POST,
        format!("{}/_sim/faults", graph_sim.base_url()),
        Some(json!({"latency_ms": 40})),
    )
    .await;

    let config_file = dir.path().join("hqsync.toml");
    std::fs::write(
        &config_file,
        format!(
            "[[tenants]]\nid = \"{TENANT_ID}\"\nname = \"Concurrency GmbH\"\n\n[tenants.graph]\ntenant_id = \"{}\"\n\
             client_id = \"{}\"\nclient_secret = \"{}\"\ngraph_base = \"{}/v1.0\"\nlogin_base = \"{}\"\n\n\
             [tenants.hellohq]\nbase_url = \"{hq_base}\"\ntoken = \"{}\"\n",
            text(&seed["tenantId"]),
            text(&seed["clientId"]),
            text(&seed["clientSecret"]),
            graph_sim.base_url(),
            graph_sim.base_url(),
            hq_sim.sync_token(),
        ),
    )
    .unwrap();
    let key = Cipher::generate_key_base64();
    let prefix = queue_prefix("conc");
    let partitions = 8u16;
    let vars: Vec<(&str, String)> = vec![
        ("HQSYNC_DATA_DIR", dir.path().display().to_string()),
        ("HQSYNC_STORE__URL", pg.url.clone()),
        ("HQSYNC_QUEUE__BACKEND", "amqp".into()),
        ("HQSYNC_QUEUE__URL", amqp.clone()),
        ("HQSYNC_QUEUE__PREFIX", prefix.clone()),
        ("HQSYNC_QUEUE__PARTITIONS", partitions.to_string()),
        ("HQSYNC_QUEUE__RETRY_DELAYS_SECS", "[1, 2]".into()),
        ("HQSYNC_SECRETS__MASTER_KEY", key.expose_secret().to_string()),
        ("HQSYNC_WORKER__CONCURRENCY", "16".into()),
        ("HQSYNC_LOG__FORMAT", "json".into()),
        // The presence loop logs each count it sets (checked below).
        ("HQSYNC_LOG__LEVEL", "warn,hqsync::worker::presence=info".into()),
        // The simulators listen on loopback.
        ("HQSYNC_REMOTE__ALLOW_PRIVATE_ADDRESSES", "true".into()),
    ];
    let store = Store::open(&pg.url, 5, Cipher::from_base64(&key).unwrap()).await.expect("open the store");
    let queue_cfg = QueueConfig {
        backend: QueueBackend::Amqp,
        url: amqp,
        prefix,
        partitions,
        retry_delays_secs: vec![1, 2],
        ..Config::default().queue
    };
    let queue = Queue::open(&queue_cfg, &store).await.expect("open the queue");
    queue.wait_ready(Duration::from_secs(10)).await.expect("queue ready");

    let workers = Children(
        (0..WORKERS)
            .map(|i| {
                let log = std::fs::File::create(dir.path().join(format!("worker{i}.log"))).unwrap();
                Command::new(env!("CARGO_BIN_EXE_hqsync"))
                    .arg("--config")
                    .arg(&config_file)
                    .arg("worker")
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("start hqsync worker")
            })
            .collect(),
    );
    // The workers reconcile the tenant from the config file; the mailboxes
    // are put in place here (provisioning is not what this test is about).
    let tenant = TenantId::parse(TENANT_ID).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.get_tenant(&tenant).await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "no worker reconciled the tenant");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for m in &mailboxes {
        store
            .upsert_mailbox(&Mailbox {
                tenant: tenant.clone(),
                id: MailboxId::parse(m).unwrap(),
                hq_user_id: None,
                state: MailboxState::Active,
                settings: json!({}),
                last_error: None,
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }

    // Every worker has registered and counted the others (a newcomer is
    // seen within the presence loop's count interval, 2 s): the burst
    // measures the steady state, not a process's first seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = store.live_processes(GROUP).await.unwrap_or_default();
        if live.len() == WORKERS {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {WORKERS} workers registered: {live:?}", live.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(PresenceTimings::default().count_every + Duration::from_secs(1)).await;

    let hints: Vec<Hint> = (0..HINTS_PER_MAILBOX)
        .flat_map(|i| mailboxes.iter().map(move |m| (i, m)))
        .map(|(i, m)| exchange_hint(&tenant, m, i))
        .collect();
    let started = Instant::now();
    queue.publish(&hints).await.expect("publish the burst");
    // Until every hint is handled (a guard against a hang, not a timing).
    let mut left: Vec<uuid::Uuid> = hints.iter().map(|h| h.hint_id).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !left.is_empty() {
        let mut still = Vec::new();
        for id in left {
            if !store.hint_processed(&id).await.unwrap_or(false) {
                still.push(id);
            }
        }
        left = still;
        let dead = queue.dead_letters(3).await.unwrap_or_default();
        assert!(dead.is_empty(), "hints dead-lettered: {:?}", dead.iter().map(|d| &d.reason).collect::<Vec<_>>());
        assert!(
            Instant::now() < deadline,
            "{} of {} hints not handled: {:?}; worker logs in {}",
            left.len(),
            hints.len(),
            queue.depth().await,
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A figure, never asserted (speed is for benches).
    let took = started.elapsed();
    eprintln!(
        "{} hints handled by {WORKERS} worker processes in {:.1} s = {:.0} hints/s",
        hints.len(),
        took.as_secs_f64(),
        hints.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    let stats = sim_json(&http, reqwest::Method::GET, format!("{}/_sim/stats", graph_sim.base_url()), None).await;
    drop(workers);
    let _ = queue.delete_topology().await;
    queue.close().await;
    eprintln!("requests: {}", stats["requests"]);
    let peaks: Vec<(String, u64)> =
        mailboxes.iter().map(|m| (m.clone(), stats["maxConcurrent"][m].as_u64().unwrap_or(0))).collect();
    eprintln!(
        "peak concurrent Graph requests per mailbox, {WORKERS} worker processes, {HINTS_PER_MAILBOX} hints per \
         mailbox, {partitions} partitions: {peaks:?}"
    );
    // Each worker did count all three (so the peak is the share's doing).
    for i in 0..WORKERS {
        let log = std::fs::read_to_string(dir.path().join(format!("worker{i}.log"))).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains(&format!("\"processes\":{WORKERS}"))),
            "worker {i} never counted {WORKERS} processes:\n{log}"
        );
    }
    for (m, peak) in &peaks {
        assert!(*peak >= 1, "{m}: no request reached the simulator: {stats}");
        assert!(
            *peak <= OUTLOOK_CONCURRENCY,
            "{m}: {peak} concurrent requests across {WORKERS} worker processes (Outlook allows {OUTLOOK_CONCURRENCY})"
        );
    }
    drop(pg);
}
