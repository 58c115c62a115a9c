//! The test bench of the sync benchmarks: both simulators and every hqsync
//! role in this process, on the embedded defaults (SQLite, local queue) in a
//! scratch folder — the same wiring as `hqsync demo`. `serve` and `worker`
//! each get their own small runtime with named threads, so their CPU time
//! can be read per role from `/proc/self/task/*/stat`; the simulators, the
//! scheduler and the load driver stay on the caller's runtime.
//!
//! It reaches the simulators only over HTTP and hqsync only through its
//! roles and its store; it never changes what a role does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::connectors::graph::{GraphClient, GraphClientConfig, MailboxQuota};
use crate::demo::SimFacts;
use crate::model::{MailboxId, TenantId};
use crate::queue::{Change, Hint, Origin, HINT_VERSION};
use crate::sim::graph::{GraphSim, GraphSimConfig};
use crate::sim::hellohq::{HellohqSim, HellohqSimConfig};
use crate::store::{JournalEntry, JournalFilter, Store};

/// Thread-name prefixes of the role runtimes (`comm` holds 15 bytes).
pub const SERVE_THREADS: &str = "hq-serve";
pub const WORKER_THREADS: &str = "hq-worker";

/// How to set the bench up.
#[derive(Debug, Clone)]
pub struct RigOptions {
    pub graph: GraphSimConfig,
    pub hellohq: HellohqSimConfig,
    /// Instead of the demo agency: this many mailboxes (and helloHQ users)
    /// and this many contact persons of one customer company.
    pub synthetic: Option<(usize, usize)>,
    /// Seconds between scheduler ticks (subscriptions, first passes).
    pub tick_secs: u64,
    /// Periodic passes (helloHQ poll, Graph reconcile, To Do poll) this often:
    /// long, so that a measurement counts the changes and not the safety net.
    pub periodic_secs: u64,
    pub worker_concurrency: usize,
    /// hqsync's per-mailbox Graph request budget (`graph.mailbox_*`); None = the product default.
    pub mailbox_quota: Option<MailboxQuota>,
    /// Run the scheduler role (subscriptions, first passes).
    pub scheduler: bool,
    /// Run the worker role.
    pub worker: bool,
    /// Leave the periodic passes at the product's defaults (helloHQ poll
    /// 60 s, reconcile and To Do poll 900 s) instead of `periodic_secs`.
    pub production_periodic: bool,
    /// A PostgreSQL server (`postgres://user@host:port`): the store lives
    /// in a scratch database made there, dropped when the rig stops,
    /// instead of SQLite in the rig's temp folder.
    pub postgres: Option<String>,
}

impl RigOptions {
    /// The demo agency on both sides, Graph notifications without the
    /// simulator's batching delay, helloHQ's rate limit out of the way.
    pub fn demo() -> RigOptions {
        RigOptions {
            graph: GraphSimConfig { notification_batch_window: Duration::from_millis(1), ..GraphSimConfig::default() },
            hellohq: HellohqSimConfig { rate_limit_per_minute: 1_000_000, ..HellohqSimConfig::default() },
            synthetic: None,
            tick_secs: 1,
            periodic_secs: 3600,
            worker_concurrency: 16,
            mailbox_quota: None,
            scheduler: true,
            worker: true,
            production_periodic: false,
            postgres: None,
        }
    }
}

/// A running bench.
pub struct Rig {
    pub graph_sim: GraphSim,
    pub hq_sim: HellohqSim,
    pub app: App,
    pub tenant: TenantId,
    pub facts: SimFacts,
    /// A user's view of Exchange (edits are made with it).
    pub graph: GraphClient,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    roles: Vec<std::thread::JoinHandle<()>>,
    scheduler: Option<tokio::task::JoinHandle<()>>,
    scratch_db: Option<ScratchDb>,
    _dir: tempfile::TempDir,
}

/// A database the rig made on a PostgreSQL server, for its store.
struct ScratchDb {
    admin_url: String,
    name: String,
}

impl ScratchDb {
    /// Makes `hqsync_bench_<random>` on `server`; returns it and its URL.
    async fn create(server: &str) -> anyhow::Result<(ScratchDb, String)> {
        let mut url = url::Url::parse(server).context("--postgres is not a URL (postgres://user@host:port)")?;
        anyhow::ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "--postgres needs a postgres:// URL, not {}://",
            url.scheme()
        );
        let name = format!("hqsync_bench_{}", uuid::Uuid::new_v4().simple());
        url.set_path("/postgres");
        let admin_url = url.to_string();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .context("connecting to the PostgreSQL server given by --postgres")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .context("creating the bench's scratch database")?;
        url.set_path(&format!("/{name}"));
        Ok((ScratchDb { admin_url, name }, url.to_string()))
    }

    async fn drop_it(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                eprintln!("could not drop the bench's scratch database {}: {e}", self.name);
            }
        }
    }
}

impl Rig {
    pub async fn start(opts: RigOptions) -> anyhow::Result<Rig> {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port") };
        let graph_sim = GraphSim::start(bind().await?, opts.graph.clone()).await.context("starting the Graph sim")?;
        let hq_sim =
            HellohqSim::start(bind().await?, opts.hellohq.clone()).await.context("starting the helloHQ sim")?;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build()?;
        if let Some((mailboxes, contacts)) = opts.synthetic {
            let (graph_seed, hq_seed) = synthetic_seeds(mailboxes, contacts);
            post_ok(&http, &format!("{}/_sim/seed", graph_sim.base_url()), &graph_seed).await?;
            post_ok(&http, &format!("{}/_sim/seed", hq_sim.base_url()), &json!({"profile": "empty"})).await?;
            seed_hellohq_company(&http, &hq_sim.base_url(), &hq_seed).await?;
        }
        let facts = crate::demo::discover(&http, graph_sim.base_url(), hq_sim.base_url()).await?;
        let dir = tempfile::tempdir().context("creating a scratch folder")?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding hqsync's port")?;
        std_listener.set_nonblocking(true)?;
        let secret = crate::demo::generate_webhook_secret();
        let quiet = crate::config::LogConfig { level: "error".into(), ..crate::config::Config::default().log };
        let mut config =
            crate::demo::demo_config(dir.path(), std_listener.local_addr()?, &facts, secret.clone(), quiet);
        config.secrets.master_key = Some(crate::store::Cipher::generate_key_base64());
        config.scheduler.tick_secs = opts.tick_secs;
        config.worker.concurrency = opts.worker_concurrency;
        if let Some(q) = opts.mailbox_quota {
            config.graph.mailbox_requests = q.requests;
            config.graph.mailbox_window_ms = q.window.as_millis() as u64;
        }
        if !opts.production_periodic {
            config.hellohq.poll_interval_secs = opts.periodic_secs;
            config.reconcile.interval_secs = opts.periodic_secs;
            config.tasks.poll_interval_secs = opts.periodic_secs;
        }
        let scratch_db = match &opts.postgres {
            Some(server) => {
                let (db, url) = ScratchDb::create(server).await?;
                config.store.url = url;
                Some(db)
            }
            None => None,
        };
        let app = match App::open(config).await {
            Ok(app) => app,
            Err(e) => {
                if let Some(db) = scratch_db {
                    db.drop_it().await;
                }
                return Err(e);
            }
        };
        let tenant = TenantId::parse(crate::demo::TENANT)?;
        crate::demo::register_mailboxes(&app.store, &tenant, &facts).await?;
        // What the connection test finds against the simulator's If-Match knob
        // (`tests/contacts.rs` runs the probe itself), set without its requests
        // so that they do not count in the measurements.
        let mut caps = app.store.get_capabilities(&tenant).await?;
        caps.graph.if_match_enforced = opts.graph.if_match == crate::sim::graph::IfMatch::Enforce;
        app.store.set_capabilities(&tenant, &caps).await?;
        let hook = crate::demo::webhook_url(&app.config.public_url(), crate::demo::TENANT);
        post_ok(
            &http,
            &format!("{}/_sim/webhooks", facts.hellohq_url),
            &json!({"url": hook, "secret": secret.expose_secret()}),
        )
        .await?;
        let shutdown = CancellationToken::new();
        let serve = {
            let (app, stop) = (app.clone(), shutdown.clone());
            role_thread(SERVE_THREADS, 1, async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)?;
                app.serve(listener, stop).await
            })?
        };
        let mut roles = vec![serve];
        if opts.worker {
            let (worker, stop) = (app.worker(), shutdown.clone());
            roles.push(role_thread(WORKER_THREADS, 1, async move {
                worker.run(stop).await;
                Ok(())
            })?);
        }
        let graph = GraphClient::new(
            &crate::store::GraphCredentials {
                entra_tenant_id: facts.entra_tenant_id.clone(),
                client_id: facts.client_id.clone(),
                client_secret: facts.client_secret.clone(),
                graph_base: format!("{}/v1.0", facts.graph_url),
                login_base: facts.graph_url.clone(),
            },
            GraphClientConfig::default().allowing_private_addresses(),
        )?;
        let scheduler = if opts.scheduler { app.spawn_scheduler(shutdown.clone()) } else { None };
        Ok(Rig {
            graph_sim,
            hq_sim,
            app,
            tenant,
            facts,
            graph,
            http,
            shutdown,
            roles,
            scheduler,
            scratch_db,
            _dir: dir,
        })
    }

    pub fn store(&self) -> &Store {
        &self.app.store
    }

    pub async fn graph_stats(&self) -> anyhow::Result<Value> {
        get_json(&self.http, &format!("{}/_sim/stats", self.facts.graph_url)).await
    }

    pub async fn hq_stats(&self) -> anyhow::Result<Value> {
        get_json(&self.http, &format!("{}/_sim/stats", self.facts.hellohq_url)).await
    }

    /// Both simulators' request counters by route, and write counters.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let (g, h) = (self.graph_stats().await?, self.hq_stats().await?);
        Ok(Counters {
            graph: counts(&g["requests"]),
            graph_writes: counts(&g["writes"]),
            hq: counts(&h["requests"]),
            hq_writes: counts(&h["writes"]),
            graph_throttled: g["throttled"].as_u64().unwrap_or(0),
        })
    }

    /// Starts (cleared) or stops both simulators' `/_sim/writes` log.
    pub async fn record_writes(&self, on: bool) -> anyhow::Result<()> {
        for base in [&self.facts.graph_url, &self.facts.hellohq_url] {
            post_ok(&self.http, &format!("{base}/_sim/writes"), &json!({"record": on})).await?;
        }
        Ok(())
    }

    /// The writes both simulators' logs recorded after the `seq`s in `after`
    /// (Graph's, helloHQ's; moved on to the last read), as contact writes
    /// tagged by their job title / position.
    pub(crate) async fn write_log(&self, after: &mut [u64; 2]) -> anyhow::Result<Vec<super::sync::Landed>> {
        let mut logs: [Vec<Value>; 2] = Default::default();
        let bases = [&self.facts.graph_url, &self.facts.hellohq_url];
        for ((base, out), after) in bases.into_iter().zip(logs.iter_mut()).zip(after.iter_mut()) {
            loop {
                let page = get_json(&self.http, &format!("{base}/_sim/writes?after={after}&limit=5000")).await?;
                anyhow::ensure!(page["dropped"].as_u64() == Some(0), "{base}/_sim/writes dropped entries");
                let writes = page["writes"].as_array().cloned().unwrap_or_default();
                let Some(last) = writes.last().and_then(|w| w["seq"].as_u64()) else { break };
                *after = last;
                out.extend(writes);
            }
        }
        Ok(super::sync::landed(&logs[0], &logs[1]))
    }

    /// Waits until the queue is empty and neither simulator has seen a
    /// request for `quiet`, or fails after `limit`.
    pub async fn wait_idle(&self, quiet: Duration, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let c = self.counters().await?;
            let depth = self.app.queue.depth().await?;
            let busy = depth.ready + depth.unacked.unwrap_or(0) + depth.retrying;
            let total = c.graph_total() + c.hq_total();
            if total != last.0 || busy > 0 {
                last = (total, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "hqsync did not settle within {} s ({busy} hints queued)",
                limit.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Journal entries with an id above `after` (oldest first).
    pub async fn journal_after(&self, after: i64) -> anyhow::Result<Vec<JournalEntry>> {
        let mut out: Vec<JournalEntry> = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .store()
                .list_journal(&JournalFilter {
                    tenant: Some(self.tenant.clone()),
                    after_id: Some(cursor),
                    limit: 1000,
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            cursor = last.id;
            let n = page.len();
            out.extend(page);
            if n < 1000 {
                break;
            }
        }
        Ok(out)
    }

    /// The id of the newest journal entry (0 when there is none).
    pub async fn journal_head(&self) -> anyhow::Result<i64> {
        let newest = self
            .store()
            .list_journal(&JournalFilter { tenant: Some(self.tenant.clone()), limit: 1, ..Default::default() })
            .await?;
        Ok(newest.first().map(|e| e.id).unwrap_or(0))
    }

    /// Queues the catch-up pass of one mailbox and kind, as the scheduler does.
    pub async fn publish_pass(&self, mailbox: &str, kind: crate::model::Kind) -> anyhow::Result<()> {
        let hint = Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: self.tenant.clone(),
            mailbox: Some(MailboxId::parse(mailbox)?),
            kind: Some(kind),
            entity: None,
            origin: Origin::Schedule,
            resource_id: None,
            version: None,
            subscription_id: None,
            change: Change::Resync,
            received_at: chrono::Utc::now(),
        };
        self.app.queue.publish(std::slice::from_ref(&hint)).await?;
        Ok(())
    }

    /// A helloHQ request as a user would make it (with the sync token).
    pub async fn hq_request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.facts.hellohq_url);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(self.facts.sync_token.expose_secret());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {url}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Stops every role and both simulators.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Some(s) = self.scheduler {
            let _ = s.await;
        }
        let roles = self.roles;
        let _ = tokio::task::spawn_blocking(move || roles.into_iter().for_each(|r| drop(r.join()))).await;
        self.app.queue.close().await;
        self.graph_sim.shutdown().await;
        self.hq_sim.shutdown().await;
        if let Some(db) = self.scratch_db {
            self.app.store.close().await;
            db.drop_it().await;
        }
    }
}

/// Request and write counters of both simulators at one moment.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub graph: BTreeMap<String, u64>,
    pub graph_writes: BTreeMap<String, u64>,
    pub hq: BTreeMap<String, u64>,
    pub hq_writes: BTreeMap<String, u64>,
    pub graph_throttled: u64,
}

impl Counters {
    /// Graph API requests (the simulator counts neither the token endpoint nor its control routes).
    pub fn graph_total(&self) -> u64 {
        self.graph.values().sum()
    }

    pub fn hq_total(&self) -> u64 {
        self.hq.iter().filter(|(k, _)| !k.contains("/_sim/")).map(|(_, v)| v).sum()
    }

    /// What happened between `before` and `self`, per key.
    pub fn since(&self, before: &Counters) -> Counters {
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        Counters {
            graph: diff(&self.graph, &before.graph),
            graph_writes: diff(&self.graph_writes, &before.graph_writes),
            hq: diff(&self.hq, &before.hq),
            hq_writes: diff(&self.hq_writes, &before.hq_writes),
            graph_throttled: self.graph_throttled.saturating_sub(before.graph_throttled),
        }
    }

    /// Graph writes to items (subscription upkeep excluded).
    pub fn graph_item_writes(&self) -> u64 {
        self.graph_writes.iter().filter(|(k, _)| k.as_str() != "subscription").map(|(_, v)| v).sum()
    }

    pub fn hq_item_writes(&self) -> u64 {
        self.hq_writes.values().sum()
    }
}

fn counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object().map(|m| m.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect()).unwrap_or_default()
}

/// Runs `fut` on a runtime of its own with `threads` threads named `name`.
fn role_thread<F>(name: &'static str, threads: usize, fut: F) -> anyhow::Result<std::thread::JoinHandle<()>>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))?;
    Ok(std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(e) = rt.block_on(fut) {
            eprintln!("  {name} stopped: {e:#}");
        }
    })?)
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    resp.error_for_status().with_context(|| format!("GET {url}"))?.json().await.with_context(|| format!("GET {url}"))
}

async fn post_ok(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let resp = http.post(url).json(body).send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(status.is_success(), "POST {url}: {status} {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A seed with `mailboxes` Graph mailboxes (`bench{i}@…`), the same users in
/// helloHQ, one customer company and `contacts` contact persons in it.
fn synthetic_seeds(mailboxes: usize, contacts: usize) -> (Value, Value) {
    let domain = "bench.example";
    let upn = |i: usize| format!("bench{i:05}@{domain}");
    let graph = json!({
        "domain": domain,
        "mailboxes": (0..mailboxes).map(|i| json!({"userPrincipalName": upn(i), "displayName": format!("Bench {i}")}))
            .collect::<Vec<_>>(),
    });
    let hq = json!({
        "users": (0..mailboxes).map(|i| json!({"firstName": "Bench", "lastName": format!("User {i}"),
            "eMailWork": upn(i), "employeeNumber": format!("{}", 9000 + i)})).collect::<Vec<_>>(),
        "companyTypes": [{"name": "Kunde"}],
    });
    let contacts = (0..contacts)
        .map(|i| {
            json!({"firstName": format!("Vorname{i}"), "lastName": format!("Nachname{i}"), "position": "Einkauf",
                   "salutation": "Frau", "salutationForm": "Formal"})
        })
        .collect::<Vec<_>>();
    (graph, json!({"hq": hq, "contacts": contacts}))
}

/// Seeds helloHQ in two steps (the company needs the type's new id, the
/// contacts the company's): users and the type, one company, its contacts.
async fn seed_hellohq_company(http: &reqwest::Client, hellohq_url: &str, seed: &Value) -> anyhow::Result<i64> {
    let url = format!("{hellohq_url}/_sim/seed");
    let ids = post_ok(http, &url, &seed["hq"]).await?;
    let type_id = ids["companyTypes"][0].as_i64().context("the seed returned no company type id")?;
    let company = post_ok(
        http,
        &url,
        &json!({"companies": [{"name": "Kunde Benchmark GmbH", "companyTypes": [{"companyTypeId": type_id}]}]}),
    )
    .await?;
    let company_id = company["companies"][0].as_i64().context("the seed returned no company id")?;
    let mut contacts = seed["contacts"].as_array().cloned().unwrap_or_default();
    for c in &mut contacts {
        c["companyId"] = json!(company_id);
    }
    for chunk in contacts.chunks(500) {
        post_ok(http, &url, &json!({"contactPersons": chunk})).await?;
    }
    Ok(company_id)
}
