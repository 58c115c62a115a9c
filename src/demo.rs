//! `hqsync demo`: the one command a newcomer runs. It starts both simulators
//! (seeded with the demo agency), builds a [`Config`] in code for one tenant
//! `demo` that points at them (SQLite in the data dir, local queue, a short
//! scheduler tick), registers hqsync's helloHQ webhook at the simulator, and
//! runs every role in-process exactly like `hqsync run`
//! ([`crate::cli::run_all`]), with a readable live feed of the journal on
//! stdout until Ctrl-C.
//!
//! It owns nothing the product relies on: the simulators are reached only
//! over HTTP, the store only through [`Store`]. It must never touch a data
//! dir that is not its own: it refuses a non-empty folder without its marker
//! file, because it wipes the store on every start (the simulators start
//! from their seed each time, so links kept from a previous run would point
//! at items that no longer exist).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use clap::Args;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::app::{self, App};
use crate::config::{Config, GraphTenantConfig, HellohqTenantConfig, LogConfig, QueueBackend, TenantConfig};
use crate::model::{Kind, MailboxId, TenantId};
use crate::sim::{graph, hellohq};
use crate::store::{JournalEntry, JournalFilter, Mailbox, MailboxState, Store};

/// The tenant the demo creates.
pub const TENANT: &str = "demo";
/// A file in the data dir that marks it as the demo's own (safe to wipe).
pub const MARKER_FILE: &str = ".hqsync-demo";
/// Scheduler tick of the demo: subscriptions and first passes at once.
pub const TICK_SECS: u64 = 3;
/// The feed wraps lines longer than this (characters)…
pub const MAX_LINE: usize = 100;
/// …into at most this many lines, the last one cut with `…`.
pub const MAX_WRAPPED: usize = 3;
/// Continuation lines start under the text, after `HH:MM:SS `.
const INDENT: usize = 9;

const STORE_FILE: &str = "hqsync.db";
const HELLOHQ_BODY_FILE: &str = "try-hellohq-contact.json";
const GRAPH_HEADERS_FILE: &str = "try-graph.headers";
const NEW_POSITION: &str = "Leitung Vertrieb";
const POLL: Duration = Duration::from_millis(400);
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A feed batch waits this long for the rest of a change's entries (the
/// engine journals one mailbox after the other), unless more keep coming.
const SETTLE: Duration = Duration::from_millis(1500);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address hqsync listens on (notifications, webhooks, health).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the Graph simulator (port 0 = any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub graph: SocketAddr,
    /// Address of the helloHQ simulator (port 0 = any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub hellohq: SocketAddr,
    /// Folder of the demo's store, master key and helper files. The store is
    /// started afresh on every run, because the simulators are.
    #[arg(long, value_name = "DIR", default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// Delete everything in the data dir first (master key and helper files too).
    #[arg(long)]
    pub reset: bool,
}

/// `hqsync demo`. `config_file` (`--config`) and `HQSYNC_…` are read for
/// the log settings only; everything else is the demo's own.
pub fn main(args: DemoArgs, config_file: Option<&Path>) -> ExitCode {
    let log = match Config::load(config_file) {
        Ok(c) => demo_log(c.log),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let data_dir = match prepare_data_dir(&args.data_dir, args.reset) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args, data_dir, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The feed is the demo's output: unless the user chose a level, only
/// warnings and errors are logged (to stderr), without the warning that the
/// simulators' plain-http URLs would not do for real Graph.
fn demo_log(mut log: LogConfig) -> LogConfig {
    if log.level == Config::default().log.level {
        log.level = "warn,hqsync::app=error".into();
    }
    log
}

/// Why the data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "--data-dir {0}: the folder is not empty and is not a demo folder (no {MARKER_FILE} in it); \
         the demo wipes its store on every start, so give it a new or empty folder"
    )]
    NotDemo(PathBuf),
    #[error("--data-dir {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Creates or cleans the data dir and returns its absolute path: the store
/// files always go (the simulators start fresh), everything else too with
/// `reset`. A folder that is neither new, empty nor marked is refused.
pub fn prepare_data_dir(dir: &Path, reset: bool) -> Result<PathBuf, DataDirError> {
    let io = |source| DataDirError::Io { path: dir.to_path_buf(), source };
    if dir.exists() {
        let marked = dir.join(MARKER_FILE).is_file();
        let empty = std::fs::read_dir(dir).map_err(io)?.next().is_none();
        if !marked && !empty {
            return Err(DataDirError::NotDemo(dir.to_path_buf()));
        }
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let is_store = name.starts_with(STORE_FILE);
            if name == MARKER_FILE || !(reset || is_store) {
                continue;
            }
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            removed.map_err(io)?;
        }
    } else {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(dir.join(MARKER_FILE), "hqsync demo data; `hqsync demo` wipes this folder's store on every start\n")
        .map_err(io)?;
    dir.canonicalize().map_err(io)
}

/// What the simulators tell about themselves (their `/_sim/seed`).
#[derive(Debug, Clone)]
pub struct SimFacts {
    pub graph_url: String,
    pub hellohq_url: String,
    pub entra_tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub sync_token: SecretString,
    /// User principal names of the Graph simulator's mailboxes, in seed order.
    pub mailboxes: Vec<String>,
    /// helloHQ user id by lower-cased `eMailWork`.
    pub hq_users: HashMap<String, String>,
}

/// The demo's whole configuration: embedded store and queue in `data_dir`,
/// a short scheduler tick, and the one tenant [`TENANT`] on the simulators.
pub fn demo_config(
    data_dir: &Path,
    listen: SocketAddr,
    sims: &SimFacts,
    webhook_secret: SecretString,
    log: LogConfig,
) -> Config {
    let mut c = Config { data_dir: data_dir.to_path_buf(), log, ..Config::default() };
    c.http.listen = listen;
    c.http.public_url = public_url(listen);
    c.store.url = format!("sqlite://{}", data_dir.join(STORE_FILE).display());
    c.queue.backend = QueueBackend::Local;
    // The simulators listen on 127.0.0.1: the outbound address guard must let them through.
    c.remote.allow_private_addresses = true;
    c.scheduler.enabled = true;
    c.scheduler.tick_secs = TICK_SECS;
    // Ctrl-C should end the demo within seconds, not after the production drain.
    c.worker.drain_timeout_secs = 5;
    c.tenants = vec![TenantConfig {
        id: TenantId::parse(TENANT).expect("valid literal"),
        name: Some("Agentur Beispiel (demo)".into()),
        graph: GraphTenantConfig {
            tenant_id: sims.entra_tenant_id.clone(),
            client_id: sims.client_id.clone(),
            client_secret: sims.client_secret.clone(),
            graph_base: format!("{}/v1.0", sims.graph_url),
            login_base: sims.graph_url.clone(),
        },
        hellohq: HellohqTenantConfig {
            base_url: sims.hellohq_url.clone(),
            token: sims.sync_token.clone(),
            webhook_secrets: vec![webhook_secret],
        },
    }];
    c
}

/// Where the simulators reach hqsync: the listen address, with a wildcard
/// address replaced by loopback (a URL cannot point at 0.0.0.0).
pub fn public_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("http://{host}:{}", listen.port())
}

/// The route hqsync receives the tenant's helloHQ webhooks on.
pub fn webhook_url(public_url: &str, tenant: &str) -> String {
    format!("{}/v1/webhooks/hellohq/{tenant}", public_url.trim_end_matches('/'))
}

/// A fresh Standard Webhooks secret (`whsec_` + 32 random bytes, base64).
pub fn generate_webhook_secret() -> SecretString {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    SecretString::from(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)))
}

async fn bind_sim(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({flag}): is another process using it?"))
}

async fn run(args: &DemoArgs, data_dir: PathBuf, log: LogConfig) -> anyhow::Result<()> {
    let shutdown = app::shutdown_on_signals();
    let listener = app::bind(args.listen).await?;
    let graph_listener = bind_sim(args.graph, "--graph").await?;
    let hellohq_listener = bind_sim(args.hellohq, "--hellohq").await?;
    let graph_sim = graph::GraphSim::start(graph_listener, graph::GraphSimConfig::default())
        .await
        .context("starting the Graph simulator")?;
    let hellohq_sim = hellohq::HellohqSim::start(hellohq_listener, hellohq::HellohqSimConfig::default())
        .await
        .context("starting the helloHQ simulator")?;
    let res = run_with_sims(data_dir, log, listener, &graph_sim, &hellohq_sim, shutdown).await;
    graph_sim.shutdown().await;
    hellohq_sim.shutdown().await;
    res
}

async fn run_with_sims(
    data_dir: PathBuf,
    log: LogConfig,
    listener: tokio::net::TcpListener,
    graph_sim: &graph::GraphSim,
    hellohq_sim: &hellohq::HellohqSim,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let sims = discover(&http, graph_sim.base_url(), hellohq_sim.base_url()).await?;
    let secret = generate_webhook_secret();
    let config = demo_config(&data_dir, listener.local_addr()?, &sims, secret.clone(), log);
    let public = config.public_url();
    let app = App::open(config).await?;
    let tenant = TenantId::parse(TENANT).expect("valid literal");
    register_mailboxes(&app.store, &tenant, &sims).await?;
    file_in_the_internal_project(&app.store, &tenant, &http, &sims).await?;
    let hook = webhook_url(&public, TENANT);
    register_webhook(&http, &sims.hellohq_url, &hook, &secret).await?;
    let try_it = TryIt::prepare(&http, &sims, &data_dir).await;

    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    say(&banner(&public, &sims, &data_dir, &hook, try_it.as_ref()));

    let feed_stop = CancellationToken::new();
    let feed = Feed { store: app.store.clone(), queue: app.queue.clone(), tenant, color, try_it, http, sims };
    let feed_task = tokio::spawn(feed.run(feed_stop.clone()));
    let res = crate::cli::run_all(app, listener, shutdown).await;
    feed_stop.cancel();
    let _ = feed_task.await;
    res
}

/// Reads both simulators' `/_sim/seed`: the app registration, the mailboxes
/// and the helloHQ users (to pair mailboxes with users by work email).
pub async fn discover(http: &reqwest::Client, graph_url: String, hellohq_url: String) -> anyhow::Result<SimFacts> {
    let get = |url: String| async move {
        let r = http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let r = r.error_for_status().with_context(|| format!("GET {url}"))?;
        r.json::<Value>().await.with_context(|| format!("GET {url}: not JSON"))
    };
    let g = get(format!("{graph_url}/_sim/seed")).await?;
    let h = get(format!("{hellohq_url}/_sim/seed")).await?;
    let text = |v: &Value, key: &str, sim: &str| -> anyhow::Result<String> {
        v[key].as_str().map(str::to_string).with_context(|| format!("the {sim} simulator's seed lacks {key}"))
    };
    let mailboxes = g["mailboxes"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["userPrincipalName"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let hq_users = h["users"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|u| Some((u["eMailWork"].as_str()?.to_lowercase(), u["id"].to_string()))).collect()
        })
        .unwrap_or_default();
    Ok(SimFacts {
        entra_tenant_id: text(&g, "tenantId", "Graph")?,
        client_id: text(&g, "clientId", "Graph")?,
        client_secret: text(&g, "clientSecret", "Graph")?.into(),
        sync_token: text(&h, "syncToken", "helloHQ")?.into(),
        graph_url,
        hellohq_url,
        mailboxes,
        hq_users,
    })
}

/// Appointments and tasks made in Outlook go to the demo agency's internal
/// project (every helloHQ task has a project): the tenant settings
/// `appointments.project` and `tasks.inbox_project`, unless already set.
pub async fn file_in_the_internal_project(
    store: &Store,
    tenant: &TenantId,
    http: &reqwest::Client,
    sims: &SimFacts,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let mut url = url::Url::parse(&sims.hellohq_url).context("helloHQ simulator URL")?;
    url.set_path("/v2/Projects");
    url.query_pairs_mut()
        .append_pair("filter", &format!("name eq '{}'", crate::sim::hellohq::INTERNAL_PROJECT.replace('\'', "''")));
    let found: Value = http
        .get(url)
        .bearer_auth(sims.sync_token.expose_secret())
        .send()
        .await
        .context("listing the helloHQ simulator's projects")?
        .error_for_status()?
        .json()
        .await?;
    let Some(project) = found[0]["id"].as_i64() else { return Ok(()) };
    let Some(mut t) = store.get_tenant(tenant).await? else { return Ok(()) };
    let mut changed = false;
    for (section, key) in [("appointments", "project"), ("tasks", "inbox_project")] {
        if !t.settings.is_object() {
            t.settings = json!({});
        }
        if !t.settings[section].is_object() {
            t.settings[section] = json!({});
        }
        if t.settings[section].get(key).is_none_or(Value::is_null) {
            t.settings[section][key] = json!(project);
            changed = true;
        }
    }
    if changed {
        t.updated_at = Utc::now();
        store.upsert_tenant(&t).await?;
    }
    Ok(())
}

/// Every simulator mailbox becomes an active mailbox of the tenant, paired
/// with the helloHQ user of the same work email (SPEC §6).
pub async fn register_mailboxes(store: &Store, tenant: &TenantId, sims: &SimFacts) -> anyhow::Result<()> {
    for upn in &sims.mailboxes {
        let id = MailboxId::parse(upn.as_str()).with_context(|| format!("mailbox {upn} of the Graph simulator"))?;
        let m = Mailbox {
            tenant: tenant.clone(),
            id,
            hq_user_id: sims.hq_users.get(&upn.to_lowercase()).cloned(),
            state: MailboxState::Active,
            settings: json!({}),
            last_error: None,
            updated_at: Utc::now(),
        };
        store.upsert_mailbox(&m).await.with_context(|| format!("saving mailbox {upn}"))?;
    }
    Ok(())
}

async fn register_webhook(
    http: &reqwest::Client,
    hellohq_url: &str,
    hook: &str,
    secret: &SecretString,
) -> anyhow::Result<()> {
    let url = format!("{hellohq_url}/_sim/webhooks");
    http.post(&url)
        .json(&json!({"url": hook, "secret": secret.expose_secret()}))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("registering the webhook endpoint at POST {url}"))?;
    Ok(())
}

/// The ready-made changes the banner offers: one helloHQ contact person,
/// whose position the user can change on either side.
#[derive(Debug, Clone)]
pub struct TryIt {
    pub hq_contact_id: String,
    pub hq_contact_name: String,
    /// The mailbox whose copy of the contact the Exchange command changes.
    pub mailbox: String,
    pub hellohq_command: String,
    data_dir: PathBuf,
}

impl TryIt {
    /// Picks the first contact person of the helloHQ simulator and writes
    /// its PUT body (a full replacement, as helloHQ's v2 PUT wants) with a
    /// new position into the data dir. None (and a warning) when the
    /// simulator has none.
    async fn prepare(http: &reqwest::Client, sims: &SimFacts, data_dir: &Path) -> Option<TryIt> {
        let res = async {
            let url = format!("{}/v2/ContactPersons", sims.hellohq_url);
            let list: Value = http
                .get(&url)
                .bearer_auth(sims.sync_token.expose_secret())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let Some(contact) = list.as_array().and_then(|a| a.first()).and_then(Value::as_object) else {
                return Ok::<_, anyhow::Error>(None);
            };
            let id = contact.get("id").map(Value::to_string).unwrap_or_default();
            let name = ["firstName", "lastName"]
                .iter()
                .filter_map(|k| contact.get(*k).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let mut body = contact.clone();
            for read_only in ["id", "companyId", "defaultAddressId", "eMail"] {
                body.remove(read_only);
            }
            strip_audit(&mut body);
            if let Some(Value::Object(address)) = body.get_mut("defaultAddress") {
                // Without its id the address is still the contact's default one: PUT keeps that row.
                address.remove("id");
                strip_audit(address);
            }
            body.insert("position".into(), json!(NEW_POSITION));
            let file = data_dir.join(HELLOHQ_BODY_FILE);
            std::fs::write(&file, serde_json::to_vec_pretty(&Value::Object(body))?)?;
            let hellohq_command = format!(
                "curl -X PUT {}/v2/ContactPersons/{id} -H 'Authorization: Bearer {}' \\\n      \
                 -H 'Content-Type: application/json' -d @{}",
                sims.hellohq_url,
                sims.sync_token.expose_secret(),
                file.display()
            );
            let mailbox = sims.mailboxes.first().cloned().unwrap_or_default();
            Ok(Some(TryIt {
                hq_contact_id: id,
                hq_contact_name: name,
                mailbox,
                hellohq_command,
                data_dir: data_dir.into(),
            }))
        }
        .await;
        match res {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "no ready-made helloHQ change for the banner");
                None
            }
        }
    }

    /// The Exchange-side command: a PATCH of the contact's copy in
    /// [`TryIt::mailbox`], once hqsync has linked one. The simulator's token
    /// goes into a headers file so the command stays short.
    async fn exchange_command(
        &self,
        store: &Store,
        tenant: &TenantId,
        http: &reqwest::Client,
        sims: &SimFacts,
    ) -> Option<String> {
        let mailbox = MailboxId::parse(self.mailbox.as_str()).ok()?;
        let link = store.get_link_by_hq(tenant, &mailbox, Kind::Contact, &self.hq_contact_id).await.ok()??;
        let graph_id = link.graph_id?;
        let token_url = format!("{}/{}/oauth2/v2.0/token", sims.graph_url, sims.entra_tenant_id);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", sims.client_id.as_str()),
            ("client_secret", sims.client_secret.expose_secret()),
            ("scope", "https://graph.microsoft.com/.default"),
        ];
        let token: Value = http.post(&token_url).form(&form).send().await.ok()?.json().await.ok()?;
        let token = token["access_token"].as_str()?;
        let file = self.data_dir.join(GRAPH_HEADERS_FILE);
        std::fs::write(&file, format!("Authorization: Bearer {token}\nContent-Type: application/json\n")).ok()?;
        Some(format!(
            "curl -X PATCH {}/v1.0/users/{}/contacts/{} \\\n      -H @{} -d '{{\"jobTitle\":\"Leitung Einkauf\"}}'",
            sims.graph_url,
            self.mailbox,
            crate::connectors::graph::client::seg(&graph_id),
            file.display()
        ))
    }
}

/// Audit fields are the server's; a PUT body need not carry them.
fn strip_audit(o: &mut serde_json::Map<String, Value>) {
    for k in ["createdBy", "createdOn", "updatedBy", "updatedOn"] {
        o.remove(k);
    }
}

fn banner(public: &str, sims: &SimFacts, data_dir: &Path, hook: &str, try_it: Option<&TryIt>) -> String {
    let mut b = String::new();
    b.push_str("hqsync demo: helloHQ and Exchange kept in step, all in this process (Ctrl-C stops)\n\n");
    b.push_str(&format!("  hqsync:            {public}   health: {public}/healthz   ready: {public}/readyz\n"));
    b.push_str(&format!(
        "  Graph simulator:   {}   ({} mailboxes: {})\n",
        sims.graph_url,
        sims.mailboxes.len(),
        sims.mailboxes.iter().map(|m| short_mailbox(m)).collect::<Vec<_>>().join(", ")
    ));
    b.push_str(&format!(
        "  helloHQ simulator: {}   (sync token: {})\n",
        sims.hellohq_url,
        sims.sync_token.expose_secret()
    ));
    b.push_str(&format!("  helloHQ webhooks → {hook}   (registered)\n"));
    b.push_str(&format!(
        "  data:              {}   (store started afresh, like the simulators; --reset wipes all)\n",
        data_dir.display()
    ));
    if let Some(t) = try_it {
        b.push_str(&format!(
            "\nChange {}'s position in helloHQ and watch the feed:\n  {}\n",
            t.hq_contact_name, t.hellohq_command
        ));
        b.push_str(&format!(
            "The command for the Exchange side follows once the initial sync has put {} into {}.\n",
            t.hq_contact_name, t.mailbox
        ));
    }
    b.push_str("\nLive feed:");
    b
}

/// Prints to stdout; a closed pipe must not take the demo down.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The journal tail and the initial-sync progress.
struct Feed {
    store: Store,
    queue: crate::queue::Queue,
    tenant: TenantId,
    color: bool,
    try_it: Option<TryIt>,
    http: reqwest::Client,
    sims: SimFacts,
}

/// Initial-sync bookkeeping: when it started, what was seen, when it ended.
struct Progress {
    started: Instant,
    hints_done: u64,
    last_entry: Instant,
    last_report: Instant,
    quiet_polls: u32,
    done: bool,
}

impl Feed {
    async fn run(self, stop: CancellationToken) {
        let mut after = 0i64;
        let mut batch: Vec<JournalEntry> = Vec::new();
        let mut batch_since = Instant::now();
        let now = Instant::now();
        let mut p =
            Progress { started: now, hints_done: 0, last_entry: now, last_report: now, quiet_polls: 0, done: false };
        loop {
            let stopping = stop.is_cancelled();
            let fresh = self.read_after(&mut after).await;
            let quiet = fresh.is_empty();
            if !quiet {
                p.last_entry = Instant::now();
                p.hints_done += fresh.iter().filter(|e| e.action == "received").count() as u64;
                if batch.is_empty() {
                    batch_since = Instant::now();
                }
                batch.extend(fresh);
            }
            if !batch.is_empty() && (quiet || batch_since.elapsed() >= SETTLE || stopping) {
                self.print(&render_feed(&batch, &chrono::Local, self.color));
                batch.clear();
            }
            if stopping {
                break;
            }
            if !p.done {
                self.progress(&mut p, quiet).await;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Entries after `after` (all pages), advancing it.
    async fn read_after(&self, after: &mut i64) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        loop {
            let f = JournalFilter {
                tenant: Some(self.tenant.clone()),
                after_id: Some(*after),
                limit: 500,
                ..Default::default()
            };
            match self.store.list_journal(&f).await {
                Ok(page) => {
                    let full = page.len() == 500;
                    if let Some(last) = page.last() {
                        *after = last.id;
                    }
                    out.extend(page);
                    if !full {
                        return out;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "demo feed cannot read the journal");
                    return out;
                }
            }
        }
    }

    /// A progress line every [`PROGRESS_EVERY`] while hints are pending;
    /// "done" once hints were handled and the queue stayed empty and the
    /// journal quiet for two polls.
    async fn progress(&self, p: &mut Progress, quiet: bool) {
        let Ok(depth) = self.queue.depth().await else { return };
        let pending = depth.ready + depth.unacked.unwrap_or(0) + depth.retrying;
        p.quiet_polls = if pending == 0 && quiet { p.quiet_polls + 1 } else { 0 };
        if p.hints_done > 0 && p.quiet_polls >= 2 {
            p.done = true;
            let secs = p.last_entry.duration_since(p.started).as_secs_f64();
            self.note(&format!("initial sync done in {secs:.1} s"));
            self.offer_exchange_change().await;
        } else if pending > 0 && p.last_report.elapsed() >= PROGRESS_EVERY {
            p.last_report = Instant::now();
            self.note(&format!("initial sync: {} hints done, {pending} pending", p.hints_done));
        }
    }

    async fn offer_exchange_change(&self) {
        let Some(t) = &self.try_it else { return };
        match t.exchange_command(&self.store, &self.tenant, &self.http, &self.sims).await {
            Some(cmd) => self.print(&[
                format!("Try it: change {} in helloHQ …", t.hq_contact_name),
                format!("  {}", t.hellohq_command),
                format!("… or its copy in {}'s Exchange mailbox:", t.mailbox),
                format!("  {cmd}"),
            ]),
            None => self.note(&format!(
                "({} has no copy in {} yet, so there is no Exchange-side command to offer.)",
                t.hq_contact_name, t.mailbox
            )),
        }
    }

    fn print(&self, lines: &[String]) {
        if !lines.is_empty() {
            say(&lines.join("\n"));
        }
    }

    /// A line of the demo's own, with the time like the feed's.
    fn note(&self, text: &str) {
        let time = chrono::Local::now().format("%H:%M:%S").to_string();
        self.print(&[style(
            &wrap(&format!("{time} {text}"), MAX_LINE, MAX_WRAPPED),
            time.len(),
            Tone::Plain,
            self.color,
        )]);
    }
}

// ---- rendering -------------------------------------------------------------

/// How a feed line should stand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Plain,
    /// Conflicts and held deletions: someone may want to look.
    Notice,
    Error,
}

/// Entries folded into one line: same hint (any hint for creates, links
/// and skips), action, side, summary and (for conflicts, errors, skips) the
/// same field or reason.
struct Group<'a> {
    key: (Option<uuid::Uuid>, &'a str, String, String, String),
    entries: Vec<&'a JournalEntry>,
}

/// The feed lines for a batch of journal entries (oldest first), one per
/// effect: entries of one change across mailboxes are folded, bookkeeping
/// (`received`, admin actions, …) is left out. Each line starts with the
/// local time of its first entry in `tz`; with `color`, ANSI colours mark
/// notices and errors. A long line is wrapped at [`MAX_LINE`] characters
/// into indented continuation lines (one string with `\n`s).
pub fn render_feed<Tz: TimeZone>(entries: &[JournalEntry], tz: &Tz, color: bool) -> Vec<String>
where
    Tz::Offset: std::fmt::Display,
{
    let mut groups: Vec<Group<'_>> = Vec::new();
    for e in entries.iter().filter(|e| is_effect(&e.action)) {
        let extra = match e.action.as_str() {
            "conflict" => text(&e.detail["field"]),
            "error" | "skipped" => text(&e.detail["reason"]),
            "held" => e.id.to_string(),
            _ => String::new(),
        };
        // An initial sync runs one pass per mailbox (one hint each): the
        // same contact arriving in several mailboxes is still one line.
        let hint = if matches!(e.action.as_str(), "created" | "linked" | "skipped") { None } else { e.hint_id };
        let key = (hint, e.action.as_str(), side(e).to_string(), summary(e), extra);
        match groups.iter_mut().find(|g| g.key == key) {
            Some(g) => g.entries.push(e),
            None => groups.push(Group { key, entries: vec![e] }),
        }
    }
    groups
        .iter()
        .map(|g| {
            let (tone, body) = describe(g);
            let time = g.entries[0].at.with_timezone(tz).format("%H:%M:%S").to_string();
            style(&wrap(&format!("{time} {body}"), MAX_LINE, MAX_WRAPPED), time.len(), tone, color)
        })
        .collect()
}

fn is_effect(action: &str) -> bool {
    matches!(action, "created" | "updated" | "deleted" | "moved" | "linked" | "skipped" | "conflict" | "held" | "error")
}

/// `exchange` (written in a mailbox) or `hellohq`; an entry that does not
/// say is an Exchange write when it names a mailbox.
fn side(e: &JournalEntry) -> &str {
    match e.detail["side"].as_str() {
        Some(s) => s,
        None if e.mailbox.is_some() => "exchange",
        None => "hellohq",
    }
}

fn summary(e: &JournalEntry) -> String {
    if let Some(s) = e.detail["summary"].as_str().filter(|s| !s.is_empty()) {
        return s.to_string();
    }
    let kind = e.kind.map(Kind::as_str).unwrap_or("item");
    match e.hq_id.as_deref().or(e.graph_id.as_deref()) {
        Some(id) => format!("{kind} {id}"),
        None => kind.to_string(),
    }
}

fn describe(g: &Group<'_>) -> (Tone, String) {
    let first = g.entries[0];
    let (_, action, side, summary, _) = &g.key;
    let d = &first.detail;
    let mailboxes = distinct(g.entries.iter().filter_map(|e| e.mailbox.as_ref().map(|m| m.as_str().to_string())));
    let fields = distinct(g.entries.iter().flat_map(|e| strings(&e.detail["fields"])));
    let in_mailboxes = if mailboxes.is_empty() { String::new() } else { format!(" ({})", mailbox_list(&mailboxes)) };
    match *action {
        "skipped" => (Tone::Plain, format!("skipped {summary}{in_mailboxes}: {}", text(&d["reason"]))),
        "error" => (Tone::Error, format!("! error {summary}{in_mailboxes}: {}", text(&d["reason"]))),
        "conflict" => {
            let winner = match d["winner"].as_str() {
                Some("hellohq") => "helloHQ wins".to_string(),
                Some("exchange") => "Exchange wins".to_string(),
                Some(w) => format!("{w} wins"),
                None => "kept".to_string(),
            };
            // The mailbox goes last: a cut line keeps who won.
            let body = format!(
                "! conflict {summary}, {}: helloHQ {} vs Exchange {} → {winner}{in_mailboxes}",
                text(&d["field"]),
                value(&d["hellohq"]),
                value(&d["exchange"])
            );
            (Tone::Notice, body)
        }
        "held" if d["field"].is_string() => {
            let shown = if d["value"].is_string() { format!(" {}", value(&d["value"])) } else { String::new() };
            let body = format!("! held {summary}{in_mailboxes}, {}{shown}: {}", text(&d["field"]), text(&d["reason"]));
            (Tone::Notice, body)
        }
        "held" => {
            let body = format!(
                "! held {summary}{in_mailboxes}: {} deletions above the threshold of {}, waiting for approval",
                text(&d["count"]),
                text(&d["threshold"])
            );
            (Tone::Notice, body)
        }
        _ if side == "hellohq" => {
            let from = if mailboxes.is_empty() { "Exchange".to_string() } else { format!("Exchange{in_mailboxes}") };
            let tail = match *action {
                "linked" => format!("linked in helloHQ{}", matched_by(d)),
                other => format!("{other} in helloHQ{}", field_list(&fields)),
            };
            (Tone::Plain, format!("{summary} ← {from} {tail}"))
        }
        _ => {
            let target = target(&mailboxes, g.entries.len());
            let body = match *action {
                "created" => format!("{summary} → {target}{}", folder_counts(&g.entries)),
                "moved" => match d["folder"].as_str() {
                    Some(f) => format!("{summary} → {target} moved to {f}"),
                    None => format!("{summary} → {target} moved"),
                },
                "linked" => format!("{summary} ↔ {target} linked{}", matched_by(d)),
                other => format!("{summary} → {target} {other}{}", field_list(&fields)),
            };
            (Tone::Plain, body)
        }
    }
}

/// The mailbox by name when there is one, else how many were written.
fn target(mailboxes: &[String], entries: usize) -> String {
    match (mailboxes, mailboxes.len().max(entries)) {
        ([one], 1) => short_mailbox(one),
        (_, 1) => "1 mailbox".to_string(),
        (_, n) => format!("{n} mailboxes"),
    }
}

/// ` (HQ Meine Kontakte ×1, HQ Globale Kontakte ×2)`, in order of first appearance.
fn folder_counts(entries: &[&JournalEntry]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for f in entries.iter().filter_map(|e| e.detail["folder"].as_str()) {
        match counts.iter_mut().find(|(name, _)| name == f) {
            Some((_, n)) => *n += 1,
            None => counts.push((f.to_string(), 1)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    if entries.len() == 1 {
        return format!(" ({})", counts[0].0);
    }
    format!(" ({})", counts.iter().map(|(f, n)| format!("{f} ×{n}")).collect::<Vec<_>>().join(", "))
}

fn field_list(fields: &[String]) -> String {
    if fields.is_empty() {
        String::new()
    } else {
        format!(": {}", fields.join(", "))
    }
}

fn matched_by(d: &Value) -> String {
    d["matched_by"].as_str().map(|m| format!(" (matched by {m})")).unwrap_or_default()
}

/// `anna.schmidt@…`: the local part says who; the domain is the same for all.
fn short_mailbox(m: &str) -> String {
    match m.split_once('@') {
        Some((local, _)) => format!("{local}@…"),
        None => m.to_string(),
    }
}

/// Up to two mailboxes by name, then a count.
fn mailbox_list(m: &[String]) -> String {
    match m {
        [a] => short_mailbox(a),
        [a, b] => format!("{}, {}", short_mailbox(a), short_mailbox(b)),
        many => format!("{} mailboxes", many.len()),
    }
}

fn distinct(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A detail value as plain text (strings without quotes, `?` when absent).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "?".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A conflicting value, quoted and short enough to keep the line readable.
fn value(v: &Value) -> String {
    match v {
        Value::Null => "(empty)".into(),
        Value::String(s) => format!("\"{}\"", truncate(s, 20)),
        other => truncate(&other.to_string(), 20),
    }
}

/// Breaks `line` at spaces into lines of at most `width` characters, the
/// continuations indented by [`INDENT`]; beyond `max_lines` the rest is cut.
fn wrap(line: &str, width: usize, max_lines: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut rest = line.trim_end();
    loop {
        let avail = if out.is_empty() { width } else { width - INDENT };
        if rest.chars().count() <= avail {
            out.push(rest.to_string());
            break;
        }
        if out.len() + 1 >= max_lines {
            out.push(truncate(rest, avail));
            break;
        }
        let cut = rest.char_indices().nth(avail).map_or(rest.len(), |(i, _)| i);
        let split = rest[..cut].rfind(' ').filter(|&i| i > 0).unwrap_or(cut);
        out.push(rest[..split].trim_end().to_string());
        rest = rest[split..].trim_start();
    }
    out.join(&format!("\n{}", " ".repeat(INDENT)))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Dims the time; notices yellow, errors red. Plain text without `color`.
fn style(line: &str, time_len: usize, tone: Tone, color: bool) -> String {
    if !color {
        return line.to_string();
    }
    let (time, rest) = line.split_at(time_len.min(line.len()));
    let rest = match tone {
        Tone::Plain => rest.to_string(),
        Tone::Notice => format!("\x1b[1;33m{rest}\x1b[0m"),
        Tone::Error => format!("\x1b[1;31m{rest}\x1b[0m"),
    };
    format!("\x1b[2m{time}\x1b[0m{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, s).unwrap()
    }

    fn entry(id: i64, hint: u128, action: &str, mailbox: Option<&str>, detail: Value) -> JournalEntry {
        JournalEntry {
            id,
            tenant: TenantId::parse("demo").unwrap(),
            mailbox: mailbox.map(|m| MailboxId::parse(m).unwrap()),
            kind: Some(Kind::Contact),
            hint_id: Some(uuid::Uuid::from_u128(hint)),
            action: action.into(),
            hq_id: Some("202".into()),
            graph_id: None,
            detail,
            actor: None,
            at: at(id as u32),
        }
    }

    fn created(id: i64, hint: u128, mailbox: &str, folder: &str) -> JournalEntry {
        entry(
            id,
            hint,
            "created",
            Some(mailbox),
            json!({"side": "exchange", "summary": "contact Erika Muster", "folder": folder}),
        )
    }

    fn render(entries: &[JournalEntry]) -> Vec<String> {
        render_feed(entries, &Utc, false)
    }

    #[test]
    fn creates_of_one_change_fold_into_one_line_with_folder_counts() {
        let lines = render(&[
            entry(1, 1, "received", None, json!({})),
            created(2, 1, "anna.schmidt@agentur-beispiel.de", "HQ Meine Kontakte"),
            created(3, 1, "ben.mueller@agentur-beispiel.de", "HQ Globale Kontakte"),
            created(4, 1, "clara.wagner@agentur-beispiel.de", "HQ Globale Kontakte"),
        ]);
        assert_eq!(
            lines,
            ["08:00:02 contact Erika Muster → 3 mailboxes (HQ Meine Kontakte ×1, HQ Globale Kontakte ×2)"]
        );
    }

    #[test]
    fn one_mailbox_is_named_instead_of_counted() {
        let lines = render(&[created(5, 1, "anna.schmidt@agentur-beispiel.de", "HQ Meine Kontakte")]);
        assert_eq!(lines, ["08:00:05 contact Erika Muster → anna.schmidt@… (HQ Meine Kontakte)"]);
    }

    #[test]
    fn creates_fold_across_passes_but_other_summaries_and_updates_stay_apart() {
        let mut other = created(3, 1, "ben.mueller@agentur-beispiel.de", "HQ Globale Kontakte");
        other.detail["summary"] = json!("contact Max Beispiel");
        let lines = render(&[
            created(1, 1, "anna.schmidt@agentur-beispiel.de", "HQ Globale Kontakte"),
            // The initial sync's next mailbox pass is another hint: still one line.
            created(2, 2, "ben.mueller@agentur-beispiel.de", "HQ Globale Kontakte"),
            other,
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("2 mailboxes"), "{lines:?}");
        assert!(lines[1].contains("Max Beispiel"), "{lines:?}");
        let mut second = created(4, 2, "ben.mueller@agentur-beispiel.de", "HQ Globale Kontakte");
        let mut first = created(3, 1, "anna.schmidt@agentur-beispiel.de", "HQ Globale Kontakte");
        for e in [&mut first, &mut second] {
            e.action = "updated".into();
        }
        assert_eq!(render(&[first, second]).len(), 2, "two edits are two lines");
    }

    #[test]
    fn updates_list_the_union_of_changed_fields() {
        let upd = |id, mailbox: &str, fields: Value| {
            entry(
                id,
                7,
                "updated",
                Some(mailbox),
                json!({"side": "exchange", "summary": "contact Erika Muster", "fields": fields}),
            )
        };
        let lines = render(&[
            upd(1, "anna.schmidt@agentur-beispiel.de", json!(["job_title"])),
            upd(2, "ben.mueller@agentur-beispiel.de", json!(["job_title", "mobile_phone"])),
        ]);
        assert_eq!(lines, ["08:00:01 contact Erika Muster → 2 mailboxes updated: job_title, mobile_phone"]);
    }

    #[test]
    fn a_write_into_hellohq_says_where_it_came_from() {
        let e = entry(
            9,
            3,
            "updated",
            Some("anna.schmidt@agentur-beispiel.de"),
            json!({"side": "hellohq", "summary": "contact Erika Muster", "fields": ["job_title"]}),
        );
        assert_eq!(
            render(&[e]),
            ["08:00:09 contact Erika Muster ← Exchange (anna.schmidt@…) updated in helloHQ: job_title"]
        );
    }

    #[test]
    fn skips_give_their_reason() {
        let e = entry(
            4,
            3,
            "skipped",
            None,
            json!({"side": "exchange", "summary": "contact Paula Prospekt", "reason": "prospects are never synchronised"}),
        );
        assert_eq!(render(&[e]), ["08:00:04 skipped contact Paula Prospekt: prospects are never synchronised"]);
    }

    #[test]
    fn conflicts_and_held_deletions_stand_out() {
        let conflict = entry(
            1,
            3,
            "conflict",
            Some("anna.schmidt@agentur-beispiel.de"),
            json!({"side": "exchange", "summary": "contact Erika Muster", "field": "job_title",
                   "hellohq": "CEO", "exchange": "Chefin", "winner": "hellohq"}),
        );
        let held = entry(
            2,
            4,
            "held",
            Some("ben.mueller@agentur-beispiel.de"),
            json!({"side": "exchange", "summary": "contacts", "count": 12, "threshold": 5}),
        );
        let lines = render(&[conflict, held]);
        assert_eq!(
            lines[0],
            "08:00:01 ! conflict contact Erika Muster, job_title: helloHQ \"CEO\" vs Exchange \"Chefin\" → helloHQ\n         \
             wins (anna.schmidt@…)"
        );
        assert!(lines[1].starts_with("08:00:02 ! held contacts (ben.mueller@…): 12 deletions"), "{lines:?}");
        assert!(lines[1].contains("threshold of 5"), "{lines:?}");
    }

    #[test]
    fn a_held_value_names_its_field_and_why() {
        let held = entry(
            1,
            5,
            "held",
            None,
            json!({"side": "both", "summary": "appointment Jour fixe", "field": "recurrencyStorage",
                   "value": "alle 14 Tage", "reason": "hqsync cannot read this recurrencyStorage"}),
        );
        let lines = render(&[held]);
        assert!(
            lines[0].starts_with(
                "08:00:01 ! held appointment Jour fixe, recurrencyStorage \"alle 14 Tage\": hqsync cannot read"
            ),
            "{lines:?}"
        );
        assert!(!lines[0].contains("deletions"), "{lines:?}");
    }

    #[test]
    fn bookkeeping_is_left_out() {
        let lines = render(&[
            entry(1, 1, "received", None, json!({"origin": "hellohq"})),
            entry(2, 1, "admin", None, json!({})),
        ]);
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn long_lines_wrap_under_the_text_and_stop_after_three() {
        for reason in ["upstream said no ".repeat(30), "x".repeat(300)] {
            let e = entry(1, 1, "error", None, json!({"summary": "contact Erika Muster", "reason": reason}));
            let lines = render(&[e]);
            let physical: Vec<&str> = lines[0].split('\n').collect();
            assert_eq!(physical.len(), MAX_WRAPPED, "{physical:?}");
            assert!(physical.iter().all(|l| l.chars().count() <= MAX_LINE), "{physical:?}");
            assert!(physical[0].starts_with("08:00:01 ! error contact Erika Muster"), "{physical:?}");
            assert!(
                physical[1..].iter().all(|l| l.starts_with("         ") && !l[9..].starts_with(' ')),
                "{physical:?}"
            );
            assert!(physical[2].ends_with('…'), "{physical:?}");
        }
        let short = render(&[created(1, 1, "anna.schmidt@x.de", "HQ Globale Kontakte")]);
        assert!(!short[0].contains('\n'), "{short:?}");
    }

    #[test]
    fn colour_only_when_asked() {
        let e = entry(1, 1, "error", None, json!({"summary": "contact X", "reason": "boom"}));
        let plain = render_feed(std::slice::from_ref(&e), &Utc, false);
        assert!(!plain[0].contains('\x1b'));
        let coloured = render_feed(&[e], &Utc, true);
        assert!(coloured[0].contains("\x1b[1;31m"), "{coloured:?}");
    }

    #[test]
    fn time_is_shown_in_the_given_zone() {
        let berlin = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        let lines = render_feed(&[created(1, 1, "anna.schmidt@x.de", "HQ Globale Kontakte")], &berlin, false);
        assert!(lines[0].starts_with("10:00:01 "), "{lines:?}");
    }

    #[test]
    fn entries_without_a_summary_fall_back_to_kind_and_id() {
        let e = entry(1, 1, "deleted", Some("anna.schmidt@x.de"), json!({"side": "exchange"}));
        assert_eq!(render(&[e]), ["08:00:01 contact 202 → anna.schmidt@… deleted"]);
    }

    #[test]
    fn demo_config_points_the_tenant_at_both_simulators() {
        let sims = SimFacts {
            graph_url: "http://127.0.0.1:4001".into(),
            hellohq_url: "http://127.0.0.1:4002".into(),
            entra_tenant_id: "tid".into(),
            client_id: "cid".into(),
            client_secret: "sec".to_string().into(),
            sync_token: "tok".to_string().into(),
            mailboxes: vec!["anna@x.de".into()],
            hq_users: HashMap::new(),
        };
        let secret = generate_webhook_secret();
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let c = demo_config(Path::new("/tmp/d"), listen, &sims, secret.clone(), Config::default().log);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.store.url, "sqlite:///tmp/d/hqsync.db");
        assert_eq!(c.queue.backend, QueueBackend::Local);
        assert!(c.scheduler.enabled && c.scheduler.tick_secs <= 5);
        let t = &c.tenants[0];
        assert_eq!(t.id.as_str(), TENANT);
        assert_eq!(t.graph.graph_base, "http://127.0.0.1:4001/v1.0");
        assert_eq!(t.graph.login_base, "http://127.0.0.1:4001");
        assert_eq!(t.hellohq.base_url, "http://127.0.0.1:4002");
        assert_eq!(t.hellohq.token.expose_secret(), "tok");
        let s = t.hellohq.webhook_secrets[0].expose_secret();
        assert!(
            crate::connectors::hellohq::webhook::WebhookSecret::parse(&t.hellohq.webhook_secrets[0]).is_ok(),
            "{s}"
        );
        assert_ne!(s, generate_webhook_secret().expose_secret(), "fresh each time");
        assert_eq!(webhook_url(&c.public_url(), TENANT), "http://127.0.0.1:8080/v1/webhooks/hellohq/demo");
    }

    #[test]
    fn user_chosen_log_level_is_kept() {
        let mut log = Config::default().log;
        assert!(demo_log(log.clone()).level.starts_with("warn,"));
        log.level = "debug".into();
        assert_eq!(demo_log(log).level, "debug");
    }

    #[test]
    fn data_dir_is_created_cleaned_and_guarded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("demo");
        let abs = prepare_data_dir(&dir, false).unwrap();
        assert!(abs.is_absolute() && dir.join(MARKER_FILE).is_file());
        std::fs::write(dir.join("hqsync.db"), "x").unwrap();
        std::fs::write(dir.join("hqsync.db-wal"), "x").unwrap();
        std::fs::write(dir.join("master.key"), "k").unwrap();
        prepare_data_dir(&dir, false).unwrap();
        assert!(!dir.join("hqsync.db").exists() && !dir.join("hqsync.db-wal").exists(), "store starts afresh");
        assert!(dir.join("master.key").exists(), "the key survives without --reset");
        prepare_data_dir(&dir, true).unwrap();
        assert!(!dir.join("master.key").exists(), "--reset wipes everything");
        assert!(dir.join(MARKER_FILE).is_file());

        let foreign = root.path().join("real");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("hqsync.db"), "precious").unwrap();
        let err = prepare_data_dir(&foreign, true).unwrap_err();
        assert!(err.to_string().contains("--data-dir"), "{err}");
        assert!(foreign.join("hqsync.db").exists(), "a folder that is not the demo's is never wiped");
    }
}
