//! Helpers shared by the integration tests: real services when present, a
//! loud skip outside CI when not, a hard failure under `CI=true`.
#![allow(dead_code)]

use std::time::Duration;

/// True when running under CI (`CI=true`): missing services fail the test.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Skips (outside CI) or fails (in CI) a test whose service is missing.
pub fn service_missing(service: &str, how_to_start: &str) {
    if in_ci() {
        panic!("{service} is required under CI=true but is not reachable; start it with: {how_to_start}");
    }
    // Straight to the process's stderr: the test harness captures
    // `eprintln!` of a passing test, and a skip must never pass silently.
    use std::io::Write as _;
    let line = format!(
        "\n======================================================================\n\
         SKIPPED: {service} is not reachable, so this test did not run.\n\
         Start it with: {how_to_start}\n\
         ======================================================================\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn reachable(addr: &str) -> bool {
    let Ok(addr) = addr.parse() else { return false };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// AMQP URL of the test broker, or None (after a loud skip) when absent.
pub fn rabbitmq_url() -> Option<String> {
    let url = std::env::var("HQSYNC_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let host = url::Url::parse(&url).ok().map(|u| {
        format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1").replace("localhost", "127.0.0.1"),
            u.port().unwrap_or(5672)
        )
    });
    if host.as_deref().is_some_and(reachable) {
        Some(url)
    } else {
        service_missing("RabbitMQ", "rabbitmq-server -detached");
        None
    }
}

/// A fresh, empty PostgreSQL database for one test; dropped by `cleanup`.
pub struct PgTestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

const PG_HOW: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// The test PostgreSQL server's URL (no database), or None (after a loud
/// skip) when it is absent.
pub fn pg_server_url() -> Option<String> {
    let base = std::env::var("HQSYNC_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let host = url::Url::parse(&base)
        .ok()
        .map(|u| format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(5432)));
    if !host.as_deref().is_some_and(reachable) {
        service_missing("PostgreSQL", PG_HOW);
        return None;
    }
    Some(base)
}

/// Creates `hqsync_t_<random>` on the test server, or None (after a loud
/// skip) when PostgreSQL is absent.
pub async fn fresh_postgres() -> Option<PgTestDb> {
    let base = pg_server_url()?;
    let name = format!("hqsync_t_{}", uuid::Uuid::new_v4().simple());
    let admin_url = format!("{base}/postgres");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} refused the test connection: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    Some(PgTestDb { url: format!("{base}/{name}"), admin_url, name })
}

impl PgTestDb {
    pub async fn cleanup(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await {
            let _ =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
        }
    }
}

/// A unique queue prefix so parallel tests never share exchanges or queues.
pub fn queue_prefix(test: &str) -> String {
    format!("t.{test}.{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

// ---------------------------------------------------------------------------
// A running ingress (real router on port 0) over a real store and queue.

use hqsync::config::{Config, QueueBackend};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::Queue;
use hqsync::store::{Cipher, GraphCredentials, HellohqCredentials, Mailbox, MailboxState, Store, Subscription, Tenant};
use sha2::Digest;

pub const TENANT: &str = "acme";
pub const ENTRA_TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
pub const MAILBOX: &str = "anna.schmidt@agentur-beispiel.de";
pub const SUBSCRIPTION: &str = "6d0f4f2a-9a0b-4c44-8f40-1c2e3d4b5a69";
pub const CLIENT_STATE: &str = "c1ient-state-with-enough-entropy-7f3a";
/// The Standard Webhooks spec's test secret, and a second one for rotation.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const WEBHOOK_SECRET_NEW: &str = "whsec_dGhpcy1pcy1hLW5ldy1zZWNyZXQtMzItYnl0ZXMh";

pub fn test_cipher() -> Cipher {
    Cipher::from_base64(&Cipher::generate_key_base64()).expect("generated key is valid")
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub store: Store,
    pub queue: Queue,
    pub config: Config,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Config for a test: scratch data dir, the given backend, a unique prefix.
pub fn test_config(dir: &std::path::Path, backend: QueueBackend, amqp_url: Option<&str>, test: &str) -> Config {
    let mut cfg = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    cfg.store.url = format!("sqlite://{}", dir.join("hqsync.db").display());
    cfg.queue.backend = backend;
    cfg.queue.prefix = queue_prefix(test);
    cfg.queue.partitions = 2;
    cfg.queue.retry_delays_secs = vec![1, 2];
    cfg.queue.visibility_timeout_secs = 2;
    // The simulators and fake servers listen on 127.0.0.1.
    cfg.remote.allow_private_addresses = true;
    if let Some(u) = amqp_url {
        cfg.queue.url = u.to_string();
    }
    cfg
}

/// Store with tenant `acme` (two webhook secrets), one mailbox and one
/// contact subscription whose clientState is `CLIENT_STATE`.
pub async fn seeded_store(cfg: &Config) -> Store {
    let store = Store::open(&cfg.store.url, 5, test_cipher()).await.expect("open store");
    let now = chrono::Utc::now();
    let tenant = TenantId::parse(TENANT).unwrap();
    let mailbox = MailboxId::parse(MAILBOX).unwrap();
    store
        .upsert_tenant(&Tenant {
            id: tenant.clone(),
            name: "ACME GmbH".into(),
            enabled: true,
            graph: GraphCredentials {
                entra_tenant_id: ENTRA_TENANT.into(),
                client_id: "11111111-2222-3333-4444-555555555555".into(),
                client_secret: "graph-client-secret-value".to_string().into(),
                graph_base: hqsync::config::default_graph_base(),
                login_base: hqsync::config::default_login_base(),
            },
            hellohq: HellohqCredentials {
                base_url: hqsync::config::default_hellohq_base(),
                token: "hellohq-sync-token-value".to_string().into(),
                webhook_secrets: vec![WEBHOOK_SECRET.to_string().into(), WEBHOOK_SECRET_NEW.to_string().into()],
            },
            // The plumbing tests (ingress, queue, worker) point at no real
            // service: with the tenant's sync switch off the engine records
            // each hint exactly once and reads nothing remote.
            settings: serde_json::json!({"sync_enabled": false}),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("seed tenant");
    store
        .upsert_mailbox(&Mailbox {
            tenant: tenant.clone(),
            id: mailbox.clone(),
            hq_user_id: Some("7".into()),
            state: MailboxState::Active,
            settings: serde_json::json!({}),
            last_error: None,
            updated_at: now,
        })
        .await
        .expect("seed mailbox");
    store
        .upsert_subscription(&Subscription {
            id: SUBSCRIPTION.into(),
            tenant,
            mailbox,
            kind: Kind::Contact,
            resource: format!("users/{MAILBOX}/contactFolders/AAMkF/contacts"),
            client_state_sha256: sha2::Sha256::digest(CLIENT_STATE.as_bytes()).into(),
            expires_at: now + chrono::Duration::days(2),
            state: "active".into(),
            created_at: now,
        })
        .await
        .expect("seed subscription");
    store
}

/// Starts the HTTP edge on port 0 over a seeded store and the given queue
/// backend. `None` when the backend's service is missing (skipped loudly).
pub async fn spawn_app(backend: QueueBackend, test: &str) -> Option<TestApp> {
    let amqp = match backend {
        QueueBackend::Amqp => Some(rabbitmq_url()?),
        QueueBackend::Local => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), backend, amqp.as_deref(), test);
    Some(spawn_app_with(cfg, dir).await)
}

pub async fn spawn_app_with(cfg: Config, dir: tempfile::TempDir) -> TestApp {
    let store = seeded_store(&cfg).await;
    let queue = Queue::open(&cfg.queue, &store).await.expect("open queue");
    let state = hqsync::http::AppState::new(
        store.clone(),
        queue.clone(),
        Duration::from_millis(cfg.queue.publish_timeout_ms),
        cfg.http.max_body_bytes,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), shutdown.clone()));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        store,
        queue,
        config: cfg,
        shutdown,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl TestApp {
    /// Waits until the queue reports ready (the AMQP backend connects in the background).
    pub async fn wait_ready(&self) {
        self.queue.wait_ready(Duration::from_secs(5)).await.expect("queue never became ready");
    }

    /// Every hint delivered within `wait`, acked.
    pub async fn drain(&self, wait: Duration) -> Vec<hqsync::queue::Hint> {
        let mut consumer = self.queue.consumer().await.expect("consumer");
        let mut out = Vec::new();
        while let Ok(Ok(Some(d))) = tokio::time::timeout(wait, consumer.next()).await {
            out.push(d.hint.clone().expect("decodable hint"));
            d.ack().await.expect("ack");
        }
        consumer.close().await;
        out
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        cleanup_queue(&self.queue).await;
    }
}

/// Removes a test's exchanges and queues (amqp) and closes the queue.
pub async fn cleanup_queue(queue: &Queue) {
    if let Err(e) = queue.delete_topology().await {
        eprintln!("warning: could not delete the test's queue topology: {e}");
    }
    queue.close().await;
}

/// The Graph simulator's request counts by route (`GET /users/{user}/…`).
pub async fn graph_sim_requests(http: &reqwest::Client, sim_base: &str) -> std::collections::BTreeMap<String, u64> {
    let s: serde_json::Value = http.get(format!("{sim_base}/_sim/stats")).send().await.unwrap().json().await.unwrap();
    serde_json::from_value(s["requests"].clone()).unwrap()
}

/// The requests counted since `before` (routes with none left out).
pub fn requests_since(
    now: &std::collections::BTreeMap<String, u64>,
    before: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    now.iter().map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect()
}

/// An unfinished claim row (state `pending`), as a create writes it before
/// it makes the counterpart: one of the two ids, and `base` as its token.
pub fn pending_link(
    tenant: &TenantId,
    mailbox: &str,
    kind: Kind,
    (hq_id, graph_id): (Option<&str>, Option<&str>),
    folder: &str,
    base: serde_json::Value,
) -> hqsync::store::Link {
    hqsync::store::Link {
        tenant: tenant.clone(),
        mailbox: MailboxId::parse(mailbox).unwrap(),
        kind,
        hq_id: hq_id.map(str::to_string),
        graph_id: graph_id.map(str::to_string),
        folder: Some(folder.into()),
        base,
        hq_fingerprint: None,
        graph_fingerprint: None,
        hq_version: None,
        graph_version: None,
        state: "pending".into(),
        updated_at: chrono::Utc::now(),
    }
}

// ---- the helloHQ routes table ------------------------------------------------------

/// (method, normalized route, hqsync, sim) of every row of the routes table
/// of docs/hellohq-api.md, the one table of truth for helloHQ routes (issue
/// 18 item 3). tests/hellohq_routes.rs holds the connector's and the
/// simulator's route lists to it; other tests check requests against it.
pub fn hellohq_route_table() -> Vec<(String, String, bool, bool)> {
    use hqsync::connectors::hellohq::routes::normalize;
    let doc = include_str!("../../docs/hellohq-api.md");
    let section = doc.split("## Routes").nth(1).expect("a Routes section").split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue; // header and separator
        }
        let yes = |c: &str| match c {
            "yes" => true,
            "no" => false,
            other => panic!("hqsync/sim column must be yes or no, not {other:?}: {line}"),
        };
        let provenance = cells[2];
        assert!(
            ["published v1", "published v2", "observed live", "hqsync contract"].contains(&provenance),
            "unknown provenance {provenance:?}: {line}"
        );
        rows.push((cells[0].to_string(), normalize(cells[1].trim_matches('`')), yes(cells[3]), yes(cells[4])));
    }
    assert!(rows.len() > 20, "the routes table was not found: {rows:?}");
    rows
}

/// The entries of a helloHQ simulator's `/_sim/stats` `requests` (`"METHOD
/// route"`: a route template, or the raw path of a request no route serves)
/// that are no row of [`hellohq_route_table`]; with `hqsync_only`, no row
/// marked as used by hqsync.
pub fn hellohq_requests_off_table(
    requests: &std::collections::BTreeMap<String, u64>,
    hqsync_only: bool,
) -> Vec<String> {
    use hqsync::connectors::hellohq::routes::normalize;
    let table = hellohq_route_table();
    requests
        .keys()
        .filter(|k| {
            let Some((method, route)) = k.split_once(' ') else { return true };
            !table.iter().any(|(m, r, hqsync, _)| m == method && *r == normalize(route) && (*hqsync || !hqsync_only))
        })
        .cloned()
        .collect()
}
