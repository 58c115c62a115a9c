//! Typed configuration: built-in defaults ← `hqsync.toml` (or `--config FILE`)
//! ← `HQSYNC_…` environment (`__` separates levels), validated once at start.
//! A bad value becomes one [`ConfigError`] naming the key and the fix; nothing
//! else in the program parses configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::model::TenantId;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Folder for the embedded store, the generated master key and other state.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub secrets: SecretsConfig,
    pub log: LogConfig,
    pub scheduler: SchedulerConfig,
    pub tasks: TasksConfig,
    pub reconcile: ReconcileConfig,
    pub hellohq: HellohqConfig,
    pub graph: GraphConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub remote: RemoteConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Tenants declared in the file; reconciled into the store at start.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The address Graph and helloHQ reach this service at (HTTPS in
    /// production; Graph accepts plain http only for loopback). Empty =
    /// `http://<listen>`. Subscriptions point at `<public_url>/v1/notifications/graph`.
    pub public_url: String,
    /// Largest request body accepted (notifications, webhooks, admin JSON, the login form).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://…`. Empty = `sqlite://<data_dir>/hqsync.db`.
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueBackend {
    /// A table in the store: one process, no broker.
    Local,
    /// RabbitMQ over AMQP 0-9-1.
    Amqp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub backend: QueueBackend,
    /// AMQP URL (backend `amqp` only).
    pub url: String,
    /// Prefix of every exchange and queue name (tests use a random one).
    pub prefix: String,
    /// Number of work queues hints are spread over by tenant+mailbox.
    pub partitions: u16,
    /// Deliveries of one hint before it is dead-lettered (`x-delivery-limit`).
    pub delivery_limit: u32,
    /// Delays of the retry queues, shortest first.
    pub retry_delays_secs: Vec<u64>,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// How long ingress waits for the broker's confirm before answering 503.
    pub publish_timeout_ms: u64,
    /// Local backend: how long a received hint stays invisible before redelivery.
    pub visibility_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Hints processed at once by one worker process.
    pub concurrency: usize,
    /// On SIGTERM, how long in-flight work may take to finish.
    pub drain_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32 bytes, base64. Encrypts tenant secrets at rest (AES-256-GCM).
    #[serde(default, skip_serializing)]
    pub master_key: Option<SecretString>,
    /// A file holding the base64 key. Default: `<data_dir>/master.key`,
    /// generated (mode 0600) on first start when neither is given.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
}

/// Subscription upkeep and catch-up passes (runs inside `serve`/`run`; one
/// active instance per deployment, chosen by a lease in the store).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    pub enabled: bool,
    /// Pause between two passes.
    pub tick_secs: u64,
    /// Requested lifetime of a Graph subscription (Graph's cap for events and contacts: 4230).
    pub subscription_minutes: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// Each mailbox's task list is delta-polled this often: the safety net
    /// beside its To Do subscription (notifications can be lost).
    pub poll_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// A Graph delta pass per mailbox and kind this often, whatever notifications said.
    pub interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HellohqConfig {
    /// helloHQ change poll (updatedOn + deletions log) per tenant this often.
    pub poll_interval_secs: u64,
    /// Requests per minute each tenant's helloHQ clients in this process send
    /// at most, together (helloHQ allows 1,000, A5); a request beyond it
    /// waits for its turn instead of drawing a 429.
    #[serde(default = "default_hellohq_rpm")]
    pub requests_per_minute: u32,
}

fn default_hellohq_rpm() -> u32 {
    crate::connectors::hellohq::budget::DEFAULT_REQUESTS_PER_MINUTE
}

/// How this process addresses Microsoft Graph (every tenant alike).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// Requests per mailbox this app sends within `mailbox_window_ms`
    /// (Outlook allows 10,000 per 10 minutes per app and mailbox). A request
    /// beyond it waits for a slot instead of drawing a 429. The deployment's
    /// budget: each process doing Graph work takes max(1, floor(it / N)) of
    /// it, N the live processes counted in the store. Lower it only when
    /// other apps share the quota of the same app registration.
    pub mailbox_requests: u32,
    /// The sliding window of `mailbox_requests`, in milliseconds.
    pub mailbox_window_ms: u64,
}

impl Config {
    /// The Graph client's settings: the `[graph]` section and `remote.allow_private_addresses`.
    pub fn graph_client_config(&self) -> crate::connectors::graph::GraphClientConfig {
        crate::connectors::graph::GraphClientConfig {
            allow_private_addresses: self.remote.allow_private_addresses,
            ..self.graph.client_config()
        }
    }
}

/// A remote service's base URL (`graph.graph_base`, `graph.login_base`,
/// `hellohq.base_url`): absolute http(s) with a host, no user or password,
/// no query and no fragment (a base ending in `?q=` would swallow every
/// path glued to it). Returns the problem, for the caller to name the key.
pub fn check_base_url(value: &str) -> Result<(), String> {
    let u = url::Url::parse(value).map_err(|e| format!("{value:?} is not an absolute URL ({e})"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("{value:?} is not an http(s) URL"));
    }
    if u.host().is_none() || u.cannot_be_a_base() {
        return Err(format!("{value:?} has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{value:?} carries a user or password; give credentials in their own fields"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{value:?} has a query or fragment; give the base URL only (scheme, host, path)"));
    }
    Ok(())
}

impl GraphConfig {
    /// The Graph client's settings from this section.
    pub fn client_config(&self) -> crate::connectors::graph::GraphClientConfig {
        crate::connectors::graph::GraphClientConfig {
            mailbox_quota: crate::connectors::graph::MailboxQuota {
                requests: self.mailbox_requests,
                window: std::time::Duration::from_millis(self.mailbox_window_ms),
            },
            ..Default::default()
        }
    }
}

/// Who may use the admin API and the status page: bearer JWTs signed with
/// an HS256 secret, or verified with an RS256/ES256 public key (PEM).
/// Without either the admin API answers 401 and says how to enable it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `HS256`, `RS256` or `ES256`.
    #[serde(default = "default_jwt_algorithm")]
    pub jwt_algorithm: String,
    /// HS256 secret (at least 32 bytes); better given as HQSYNC_ADMIN__JWT_SECRET.
    #[serde(default, skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// PEM public key for RS256/ES256.
    #[serde(default)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// When set, a token's `iss` must equal it.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it (without it, a token that
    /// carries an `aud` is accepted whatever it says).
    #[serde(default)]
    pub jwt_audience: Option<String>,
    /// Longest lifetime a token may claim: `exp - iat` (a token without `iat`
    /// may expire at most this far from now). Default 12 hours.
    #[serde(default = "default_jwt_max_lifetime_secs")]
    pub jwt_max_lifetime_secs: u64,
}

fn default_jwt_max_lifetime_secs() -> u64 {
    12 * 3600
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            jwt_algorithm: default_jwt_algorithm(),
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_max_lifetime_secs: default_jwt_max_lifetime_secs(),
        }
    }
}

/// How long the store keeps what only grows (pruned by the active scheduler).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Processed hint ids (the workers' idempotency record) older than this
    /// are forgotten. Graph and helloHQ redeliver for hours, not days.
    #[serde(default = "default_processed_hints_days")]
    pub processed_hints_days: u32,
    /// Journal entries older than this are deleted.
    #[serde(default = "default_journal_days")]
    pub journal_days: u32,
}

fn default_processed_hints_days() -> u32 {
    7
}
fn default_journal_days() -> u32 {
    90
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { processed_hints_days: default_processed_hints_days(), journal_days: default_journal_days() }
    }
}

/// Where hqsync may connect to as a client (Graph, Entra ID, helloHQ).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `false` (the default): every outbound request of the connectors
    /// refuses loopback, private, link-local, unique-local, unspecified and
    /// multicast addresses, checked after DNS resolution (no call to the
    /// cloud metadata service or the internal network, whatever a base URL
    /// or a DNS answer says). `true` for on-premise proxies, the demo, the
    /// simulators in tests and benches.
    #[serde(default)]
    pub allow_private_addresses: bool,
}

fn default_jwt_algorithm() -> String {
    "HS256".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,hqsync=debug`. `RUST_LOG` wins when set.
    pub level: String,
}

/// A tenant declared in the configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: TenantId,
    #[serde(default)]
    pub name: Option<String>,
    pub graph: GraphTenantConfig,
    pub hellohq: HellohqTenantConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GraphTenantConfig {
    /// Directory (tenant) id of the customer's Entra tenant.
    pub tenant_id: String,
    /// Application (client) id.
    pub client_id: String,
    #[serde(skip_serializing)]
    pub client_secret: SecretString,
    #[serde(default = "default_graph_base")]
    pub graph_base: String,
    #[serde(default = "default_login_base")]
    pub login_base: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HellohqTenantConfig {
    #[serde(default = "default_hellohq_base")]
    pub base_url: String,
    #[serde(skip_serializing)]
    pub token: SecretString,
    /// Standard Webhooks secrets (`whsec_…`); several while rotating.
    #[serde(default, skip_serializing)]
    pub webhook_secrets: Vec<SecretString>,
}

pub fn default_graph_base() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
pub fn default_login_base() -> String {
    "https://login.microsoftonline.com".into()
}
pub fn default_hellohq_base() -> String {
    "https://api.hellohq.io".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig {
                listen: "127.0.0.1:8080".parse().expect("valid literal"),
                public_url: String::new(),
                max_body_bytes: 1024 * 1024,
            },
            store: StoreConfig { url: String::new(), max_connections: 10 },
            queue: QueueConfig {
                backend: QueueBackend::Local,
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                prefix: "hqsync".into(),
                partitions: 4,
                delivery_limit: 10,
                retry_delays_secs: vec![5, 30, 300],
                prefetch: 32,
                publish_timeout_ms: 2000,
                visibility_timeout_secs: 60,
            },
            worker: WorkerConfig { concurrency: 16, drain_timeout_secs: 30 },
            secrets: SecretsConfig::default(),
            log: LogConfig { format: LogFormat::Auto, level: "info".into() },
            scheduler: SchedulerConfig { enabled: true, tick_secs: 30, subscription_minutes: 4229 },
            tasks: TasksConfig { poll_interval_secs: 900 },
            reconcile: ReconcileConfig { interval_secs: 900 },
            hellohq: HellohqConfig { poll_interval_secs: 60, requests_per_minute: default_hellohq_rpm() },
            graph: GraphConfig {
                mailbox_requests: crate::connectors::graph::MailboxQuota::OUTLOOK.requests,
                mailbox_window_ms: crate::connectors::graph::MailboxQuota::OUTLOOK.window.as_millis() as u64,
            },
            admin: AdminConfig::default(),
            remote: RemoteConfig::default(),
            retention: RetentionConfig::default(),
            tenants: Vec::new(),
        }
    }
}

/// `http.public_url`: an absolute `https://` URL, or plain `http://` only on
/// a loopback host (`localhost`, 127.0.0.0/8, `[::1]`: the demo and tests,
/// where the simulators stand in for Graph). Real Graph refuses a
/// subscription whose `notificationUrl` is not HTTPS (GRAPH.md §4.1;
/// https://learn.microsoft.com/graph/change-notifications-delivery-webhooks).
pub fn check_public_url(value: &str) -> Result<(), ConfigError> {
    let key = "http.public_url";
    let fix = "use the https:// address a reverse proxy terminates TLS on in front of hqsync, e.g. \
               `public_url = \"https://hqsync.example.com\"` under [http] in hqsync.toml or HQSYNC_HTTP__PUBLIC_URL \
               (plain http:// is accepted only for localhost / 127.0.0.1 / [::1]; see docs/onboarding.md)";
    let parsed = match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => u,
        _ => return Err(ConfigError::new(key, format!("{value:?} is not an absolute http(s) URL"), fix)),
    };
    if parsed.host().is_none() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::new(key, format!("{value:?} needs a host and no user or password"), fix));
    }
    if parsed.scheme() == "https" || is_loopback_host(&parsed) {
        return Ok(());
    }
    Err(ConfigError::new(
        key,
        format!(
            "{value:?} is plain HTTP on a non-loopback host; Microsoft Graph refuses subscriptions whose \
             notification URL is not HTTPS, so every scheduler tick would fail"
        ),
        fix,
    ))
}

fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A configuration problem, said in one line: the key, what is wrong, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: `{key}`: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into(), fix: fix.into() }
    }

    /// Where a key can be set, for the `fix` part of a message.
    fn where_to_set(key: &str) -> String {
        let env = format!("HQSYNC_{}", key.replace('.', "__").to_uppercase());
        match key.rsplit_once('.') {
            Some((table, leaf)) => format!("set `{leaf}` under [{table}] in hqsync.toml or {env}"),
            None => format!("set `{key}` in hqsync.toml or {env}"),
        }
    }
}

impl Config {
    /// Where Graph and helloHQ reach this service.
    pub fn public_url(&self) -> String {
        if self.http.public_url.is_empty() {
            format!("http://{}", self.http.listen)
        } else {
            self.http.public_url.trim_end_matches('/').to_string()
        }
    }

    /// The roles that hand `public_url()` to Graph and helloHQ (`serve`,
    /// `run`) call this at start: an unset `http.public_url` stands for
    /// `http://<listen>`, acceptable only when that is a loopback address
    /// (demo, tests). Graph creates subscriptions only for HTTPS
    /// notification URLs, so anything else would fail every scheduler tick.
    /// Roles that never publish the URL (`worker`, `migrate`, operator
    /// commands) may run without it.
    pub fn check_public_url_for_serving(&self) -> Result<(), ConfigError> {
        if self.http.public_url.is_empty() && !self.http.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "http.public_url",
                format!(
                    "is not set, and the address it defaults to (http://{}) is plain HTTP on a non-loopback \
                     address; Microsoft Graph refuses subscriptions whose notification URL is not HTTPS",
                    self.http.listen
                ),
                "set it to the https:// address a reverse proxy terminates TLS on in front of this port, e.g. \
                 `public_url = \"https://hqsync.example.com\"` under [http] in hqsync.toml or \
                 HQSYNC_HTTP__PUBLIC_URL (see docs/onboarding.md)",
            ));
        }
        check_public_url(&self.public_url())
    }

    /// Loads defaults ← file ← environment, then validates. `file` = None
    /// reads `./hqsync.toml` when it exists.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, Env::prefixed("HQSYNC_").split("__"))
    }

    /// As [`Config::load`], with an explicit environment provider (tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::new(
                        "--config",
                        format!("file {} does not exist", path.display()),
                        "pass the path of an existing hqsync.toml, or leave --config out to run on defaults",
                    ));
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None => fig = fig.merge(Toml::file("hqsync.toml")),
        }
        fig = fig.merge(env);
        let mut cfg: Config = fig.extract().map_err(|e| from_figment(&e))?;
        cfg.validate()?;
        if cfg.store.url.is_empty() {
            cfg.store.url = format!("sqlite://{}", cfg.data_dir.join("hqsync.db").display());
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::new(key, problem, ConfigError::where_to_set(key));
        let url = &self.store.url;
        let known_scheme = ["sqlite:", "postgres://", "postgresql://"].iter().any(|s| url.starts_with(s));
        if !url.is_empty() && !known_scheme {
            return Err(ConfigError::new(
                "store.url",
                format!("unsupported scheme in {:?}", redact_url(&self.store.url)),
                "use sqlite://PATH or postgres://USER@HOST/DB (HQSYNC_STORE__URL)",
            ));
        }
        match self.admin.jwt_algorithm.as_str() {
            "HS256" => {
                if self.admin.jwt_secret.as_ref().is_some_and(|s| s.expose_secret().len() < 32) {
                    return Err(ConfigError::new(
                        "admin.jwt_secret",
                        "is shorter than 32 bytes".to_string(),
                        "use a long random secret, e.g. `openssl rand -base64 48` (HQSYNC_ADMIN__JWT_SECRET)",
                    ));
                }
            }
            "RS256" | "ES256" => {
                if self.admin.jwt_public_key_file.is_none() {
                    return Err(bad(
                        "admin.jwt_public_key_file",
                        format!("is required with admin.jwt_algorithm = {:?}", self.admin.jwt_algorithm),
                    ));
                }
            }
            other => {
                return Err(bad(
                    "admin.jwt_algorithm",
                    format!("unknown value {other:?}, expected one of: HS256, RS256, ES256"),
                ))
            }
        }
        if self.store.max_connections == 0 {
            return Err(bad("store.max_connections", "must be at least 1".into()));
        }
        if self.queue.backend == QueueBackend::Amqp {
            match url::Url::parse(&self.queue.url) {
                Ok(u) if u.scheme() == "amqp" || u.scheme() == "amqps" => {}
                _ => {
                    return Err(ConfigError::new(
                        "queue.url",
                        format!("{:?} is not an amqp:// URL", redact_url(&self.queue.url)),
                        "use amqp://USER:PASS@HOST:5672/%2f (HQSYNC_QUEUE__URL)",
                    ))
                }
            }
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if self.queue.prefix.is_empty() || !self.queue.prefix.chars().all(name_ok) {
            return Err(bad(
                "queue.prefix",
                format!("{:?} is not a plain name (letters, digits, - _ .)", self.queue.prefix),
            ));
        }
        if self.queue.partitions == 0 || self.queue.partitions > 64 {
            return Err(bad("queue.partitions", format!("{} is outside 1..=64", self.queue.partitions)));
        }
        if self.queue.delivery_limit == 0 {
            return Err(bad("queue.delivery_limit", "must be at least 1".into()));
        }
        if self.queue.retry_delays_secs.is_empty() || self.queue.retry_delays_secs.contains(&0) {
            return Err(bad("queue.retry_delays_secs", "needs one or more delays, each at least 1 second".into()));
        }
        if self.queue.prefetch == 0 {
            return Err(bad("queue.prefetch", "must be at least 1".into()));
        }
        if self.queue.publish_timeout_ms == 0 {
            return Err(bad("queue.publish_timeout_ms", "must be at least 1".into()));
        }
        if !self.http.public_url.is_empty() {
            check_public_url(&self.http.public_url)?;
        }
        if self.scheduler.tick_secs == 0 {
            return Err(bad("scheduler.tick_secs", "must be at least 1".into()));
        }
        if !(45..=10_080).contains(&self.scheduler.subscription_minutes) {
            return Err(bad(
                "scheduler.subscription_minutes",
                format!("{} is outside 45..=10080", self.scheduler.subscription_minutes),
            ));
        }
        for (key, v) in [
            ("tasks.poll_interval_secs", self.tasks.poll_interval_secs),
            ("reconcile.interval_secs", self.reconcile.interval_secs),
            ("hellohq.poll_interval_secs", self.hellohq.poll_interval_secs),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !(1..=1000).contains(&self.hellohq.requests_per_minute) {
            return Err(bad(
                "hellohq.requests_per_minute",
                format!("{} is outside 1..=1000 (helloHQ allows 1,000 per minute)", self.hellohq.requests_per_minute),
            ));
        }
        if self.graph.mailbox_requests == 0 {
            return Err(bad(
                "graph.mailbox_requests",
                "must be at least 1 (Outlook allows 10000 per 10 minutes)".into(),
            ));
        }
        if !(1..=86_400_000).contains(&self.graph.mailbox_window_ms) {
            return Err(bad(
                "graph.mailbox_window_ms",
                format!(
                    "{} is outside 1..=86400000 (Outlook's window is 600000, 10 minutes)",
                    self.graph.mailbox_window_ms
                ),
            ));
        }
        if self.retention.processed_hints_days == 0 {
            return Err(bad(
                "retention.processed_hints_days",
                "must be at least 1 (a redelivered notification must still be recognised)".into(),
            ));
        }
        if self.retention.journal_days == 0 {
            return Err(bad("retention.journal_days", "must be at least 1".into()));
        }
        if self.worker.concurrency == 0 {
            return Err(bad("worker.concurrency", "must be at least 1".into()));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(bad("http.max_body_bytes", "must be at least 1024".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if crate::store::is_reserved_tenant_id(t.id.as_str()) {
                return Err(ConfigError::new(
                    &format!("tenants[{i}].id"),
                    format!("{:?} is reserved (system, or starting with _)", t.id.as_str()),
                    "choose another id",
                ));
            }
            if let Some(name) = &t.name {
                if name.chars().any(char::is_control) {
                    return Err(ConfigError::new(
                        &format!("tenants[{i}].name"),
                        "contains a control character".to_string(),
                        "use plain text (no tabs, newlines, escape or NUL characters)",
                    ));
                }
            }
            if !seen.insert(t.id.clone()) {
                return Err(ConfigError::new(
                    &format!("tenants[{i}].id"),
                    format!("tenant {} is declared twice", t.id),
                    "give every [[tenants]] entry its own id",
                ));
            }
            for (key, value) in [
                ("graph.graph_base", &t.graph.graph_base),
                ("graph.login_base", &t.graph.login_base),
                ("hellohq.base_url", &t.hellohq.base_url),
            ] {
                if let Err(problem) = check_base_url(value) {
                    return Err(ConfigError::new(
                        &format!("tenants[{i}].{key}"),
                        problem,
                        "give the full base URL, e.g. https://graph.microsoft.com/v1.0",
                    ));
                }
            }
            for (j, s) in t.hellohq.webhook_secrets.iter().enumerate() {
                if crate::connectors::hellohq::webhook::WebhookSecret::parse(s).is_err() {
                    return Err(ConfigError::new(
                        &format!("tenants[{i}].hellohq.webhook_secrets[{j}]"),
                        "not a Standard Webhooks secret".to_string(),
                        "use the whsec_<base64> value helloHQ shows for the endpoint",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Hides the password part of a URL for messages and logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable>".into(),
    }
}

/// The full key of a field figment reports: its path may or may not end in the field already.
fn with_leaf(path: &[String], field: &str) -> String {
    match path.last() {
        Some(last) if last == field => path.join("."),
        Some(_) => format!("{}.{field}", path.join(".")),
        None => field.to_string(),
    }
}

fn from_figment(e: &figment::Error) -> ConfigError {
    use figment::error::Kind as K;
    let key = if e.path.is_empty() { "<root>".to_string() } else { e.path.join(".") };
    let fix = ConfigError::where_to_set(&key);
    let problem = match &e.kind {
        K::MissingField(f) => {
            let full = with_leaf(&e.path, f);
            return ConfigError::new(&full, "is required but missing", ConfigError::where_to_set(&full));
        }
        K::UnknownField(f, expected) => {
            let full = with_leaf(&e.path, f);
            return ConfigError::new(
                &full,
                "is not a known setting",
                format!("remove it or use one of: {}", expected.join(", ")),
            );
        }
        K::UnknownVariant(v, expected) => format!("unknown value {v:?}, expected one of: {}", expected.join(", ")),
        K::InvalidType(actual, expected) => format!("has the wrong type: found {actual}, expected {expected}"),
        K::InvalidValue(actual, expected) => format!("invalid value {actual}, expected {expected}"),
        K::Message(m) => m.clone(),
        other => other.to_string(),
    };
    ConfigError { key, problem, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads `toml` as the config file with `env` (names without the
    /// `HQSYNC_` prefix) set, inside a figment jail so tests don't race.
    #[allow(clippy::result_large_err)] // figment's Jail fixes the error type
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.create_file("hqsync.toml", toml)?;
            for (k, v) in env {
                jail.set_env(format!("HQSYNC_{k}"), v);
            }
            out = Some(Config::load(Some(Path::new("hqsync.toml"))));
            Ok(())
        });
        out.expect("jail ran")
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let cfg = load("", &[]).unwrap();
        assert_eq!(cfg.queue.backend, QueueBackend::Local);
        assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.store.url, "sqlite://./data/hqsync.db");
    }

    #[test]
    fn unknown_backend_names_the_key_and_values() {
        let err = load("[queue]\nbackend = \"rabbit\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "queue.backend");
        assert!(err.problem.contains("local") && err.problem.contains("amqp"), "{err}");
        assert!(err.fix.contains("HQSYNC_QUEUE__BACKEND"), "{err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_full_path() {
        let err = load("[queue]\nprefetchh = 3\n", &[]).unwrap_err();
        assert_eq!(err.key, "queue.prefetchh");
        assert!(err.fix.contains("prefetch"), "{err}");
    }

    #[test]
    fn environment_overrides_file() {
        let cfg = load("[worker]\nconcurrency = 3\n", &[("WORKER__CONCURRENCY", "7")]).unwrap();
        assert_eq!(cfg.worker.concurrency, 7);
    }

    #[test]
    fn the_mailbox_quota_defaults_to_outlooks_and_is_validated() {
        let cfg = load("", &[]).unwrap();
        let q = cfg.graph.client_config().mailbox_quota;
        assert_eq!((q.requests, q.window.as_secs()), (10_000, 600));
        let cfg = load("[graph]\nmailbox_requests = 20\n", &[("GRAPH__MAILBOX_WINDOW_MS", "1000")]).unwrap();
        let q = cfg.graph.client_config().mailbox_quota;
        assert_eq!((q.requests, q.window.as_millis()), (20, 1000));
        let err = load("[graph]\nmailbox_requests = 0\n", &[]).unwrap_err();
        assert_eq!(err.key, "graph.mailbox_requests");
        assert!(err.fix.contains("HQSYNC_GRAPH__MAILBOX_REQUESTS"), "{err}");
        let err = load("[graph]\nmailbox_window_ms = 0\n", &[]).unwrap_err();
        assert_eq!(err.key, "graph.mailbox_window_ms");
    }

    #[test]
    fn bad_store_scheme_is_refused() {
        let err = load("[store]\nurl = \"mysql://u:pw@h/db\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "store.url");
        assert!(!err.to_string().contains("pw"), "password leaked: {err}");
    }

    #[test]
    fn bad_listen_address_names_the_key() {
        let err = load("[http]\nlisten = \"localhost\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "http.listen");
    }

    #[test]
    fn public_url_must_be_https_unless_loopback() {
        for ok in [
            "https://hqsync.example.com",
            "https://hqsync.example.com:8443/base/",
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(load("", &[("HTTP__PUBLIC_URL", ok)]).is_ok(), "{ok} refused");
        }
        for bad in [
            "http://hqsync.example.com",
            "http://10.0.0.5:8080",
            "http://0.0.0.0:8080",
            "http://localhost.example.com",
            "ftp://hqsync.example.com",
            "hqsync.example.com",
            "https://user:pw@hqsync.example.com",
        ] {
            let err = load("", &[("HTTP__PUBLIC_URL", bad)]).unwrap_err();
            assert_eq!(err.key, "http.public_url", "{bad}");
            assert!(err.fix.contains("https://") && err.fix.contains("HQSYNC_HTTP__PUBLIC_URL"), "{err}");
        }
        let err = load("", &[("HTTP__PUBLIC_URL", "http://hqsync.example.com")]).unwrap_err();
        assert!(err.to_string().contains("not HTTPS"), "{err}");
    }

    #[test]
    fn serving_without_public_url_needs_a_loopback_listen_address() {
        let c = load("", &[]).unwrap();
        c.check_public_url_for_serving().expect("default listen is loopback");
        let c = load("", &[("HTTP__LISTEN", "0.0.0.0:8080")]).unwrap();
        let err = c.check_public_url_for_serving().unwrap_err();
        assert_eq!(err.key, "http.public_url");
        assert!(err.problem.contains("http://0.0.0.0:8080"), "{err}");
        assert!(err.fix.contains("HQSYNC_HTTP__PUBLIC_URL"), "{err}");
        let c =
            load("", &[("HTTP__LISTEN", "0.0.0.0:8080"), ("HTTP__PUBLIC_URL", "https://hqsync.example.com")]).unwrap();
        c.check_public_url_for_serving().unwrap();
    }

    #[test]
    fn duplicate_tenants_are_refused() {
        let t = "[[tenants]]\nid = \"acme\"\n[tenants.graph]\ntenant_id=\"t\"\nclient_id=\"c\"\nclient_secret=\"s\"\n[tenants.hellohq]\ntoken=\"x\"\n";
        let err = load(&format!("{t}{t}"), &[]).unwrap_err();
        assert_eq!(err.key, "tenants[1].id");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err =
            Config::load_from(Some(Path::new("/nonexistent/hqsync.toml")), Env::prefixed("X_NEVER_")).unwrap_err();
        assert_eq!(err.key, "--config");
    }
}
