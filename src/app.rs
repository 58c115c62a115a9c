//! Wiring of the roles: opens the store (with the master key) and the
//! queue, reconciles config-declared tenants, and runs `serve`, `worker`
//! or both (`run`) until a shutdown signal.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TenantConfig};
use crate::connectors::graph::{GraphClientConfig, ProcessShare};
use crate::engine::Engine;
use crate::http::{self, AppState};
use crate::queue::Queue;
use crate::scheduler::{self, Scheduler, SchedulerSettings};
use crate::store::{Cipher, GraphCredentials, HellohqCredentials, Store, Tenant};
use crate::worker::presence::{Presence, PresenceTimings};
use crate::worker::Worker;

/// The shared handles of one process.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub queue: Queue,
    /// Passes of the scheduler this process runs, for `/readyz`.
    pub scheduler_health: scheduler::SchedulerHealth,
    /// The live processes doing Graph work, as this process last counted
    /// them (see [`App::spawn_presence`]); every Graph client of the process reads it.
    pub graph_share: ProcessShare,
}

impl App {
    /// Opens store and queue as configured and reconciles `[[tenants]]`.
    pub async fn open(config: Config) -> anyhow::Result<App> {
        let cipher = master_key(&config)?;
        let store = Store::open(&config.store.url, config.store.max_connections, cipher)
            .await
            .with_context(|| format!("opening the store at {}", crate::config::redact_url(&config.store.url)))?;
        reconcile_tenants(&store, &config.tenants).await?;
        let queue = Queue::open(&config.queue, &store).await.context("opening the queue")?;
        Ok(App { config, store, queue, scheduler_health: Default::default(), graph_share: ProcessShare::default() })
    }

    /// The HTTP edge's state; fails when the admin key is unreadable.
    pub fn http_state(&self) -> anyhow::Result<AppState> {
        let admin = crate::http::admin::AdminAuth::from_config(&self.config.admin)?;
        Ok(AppState::new(
            self.store.clone(),
            self.queue.clone(),
            Duration::from_millis(self.config.queue.publish_timeout_ms),
            self.config.http.max_body_bytes,
        )
        .with_admin(admin, self.config.public_url())
        .with_engine(self.engine())
        .with_scheduler_health(self.scheduler_health.clone()))
    }

    /// The sync engine with the configured Graph settings.
    pub fn engine(&self) -> Engine {
        Engine::new(self.store.clone())
            .with_graph_config(self.graph_client_config())
            .with_hellohq_requests_per_minute(self.config.hellohq.requests_per_minute)
    }

    /// The scheduler of this deployment (only the lease holder acts on ticks;
    /// every process may handle lifecycle hints with it).
    pub fn scheduler(&self) -> Scheduler {
        let c = &self.config;
        let settings = SchedulerSettings {
            tick: Duration::from_secs(c.scheduler.tick_secs),
            lease_ttl: Duration::from_secs((c.scheduler.tick_secs * 3).max(90)),
            subscription_minutes: c.scheduler.subscription_minutes,
            tasks_poll_interval: Duration::from_secs(c.tasks.poll_interval_secs),
            reconcile_interval: Duration::from_secs(c.reconcile.interval_secs),
            hellohq_poll_interval: Duration::from_secs(c.hellohq.poll_interval_secs),
            graph: self.graph_client_config(),
            processed_hints_retention: Duration::from_secs(u64::from(c.retention.processed_hints_days) * 86_400),
            journal_retention: Duration::from_secs(u64::from(c.retention.journal_days) * 86_400),
            ..SchedulerSettings::default()
        };
        Scheduler::new(self.store.clone(), self.queue.clone(), &c.public_url(), settings, scheduler::system_clock())
    }

    /// Runs the scheduler until `shutdown` when it is enabled.
    pub fn spawn_scheduler(&self, shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        if !self.config.scheduler.enabled {
            tracing::info!("scheduler disabled (scheduler.enabled = false)");
            return None;
        }
        if !self.config.public_url().starts_with("https://") {
            tracing::warn!(
                public_url = %self.config.public_url(),
                "http.public_url is not HTTPS: real Graph will refuse to create subscriptions (fine for the simulators)"
            );
        }
        Some(tokio::spawn(self.scheduler().with_health(self.scheduler_health.clone()).run(shutdown)))
    }

    /// The Graph client settings of this process: the configured ones,
    /// taking this process's share of each mailbox's limits.
    pub fn graph_client_config(&self) -> GraphClientConfig {
        GraphClientConfig { processes: self.graph_share.clone(), ..self.config.graph_client_config() }
    }

    /// Keeps this process counted among those doing Graph work (a worker,
    /// or a scheduler that may hold the lease), and its share of each
    /// mailbox's limits up to date, until `stop`. Cancel `stop` after the
    /// worker has drained.
    pub fn spawn_presence(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let limit = self.config.graph_client_config().per_mailbox_concurrency;
        let presence = Presence::new(self.store.clone(), self.graph_share.clone(), limit, PresenceTimings::default());
        tracing::debug!(process = presence.id(), "counting this process among those doing Graph work");
        tokio::spawn(presence.run(stop))
    }

    pub fn worker(&self) -> Worker {
        Worker {
            queue: self.queue.clone(),
            lifecycle: Some(std::sync::Arc::new(self.scheduler())),
            engine: self.engine(),
            concurrency: self.config.worker.concurrency,
            drain_timeout: Duration::from_secs(self.config.worker.drain_timeout_secs),
            retry_delays: self.config.queue.retry_delays_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
        }
    }

    /// Serves HTTP on `listener` until `shutdown`.
    pub async fn serve(&self, listener: tokio::net::TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, queue = ?self.queue.kind(), store = self.store.backend_name(), "serving");
        http::serve(listener, http::router(self.http_state()?), shutdown).await.context("HTTP server")
    }
}

/// Binds the listen address, with an error that names the setting.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (http.listen / --listen): is another process using it?"))
}

fn master_key(config: &Config) -> anyhow::Result<Cipher> {
    if let Some(key) = &config.secrets.master_key {
        return Cipher::from_base64(key)
            .context("secrets.master_key (HQSYNC_SECRETS__MASTER_KEY) must be 32 bytes, base64");
    }
    let path = config.secrets.master_key_file.clone().unwrap_or_else(|| config.data_dir.join("master.key"));
    Cipher::load_or_create(&path).with_context(|| format!("master key file {}", path.display()))
}

async fn reconcile_tenants(store: &Store, tenants: &[TenantConfig]) -> anyhow::Result<()> {
    for t in tenants {
        let existing = store.get_tenant(&t.id).await?;
        let now = chrono::Utc::now();
        let tenant = Tenant {
            id: t.id.clone(),
            name: t.name.clone().unwrap_or_else(|| t.id.to_string()),
            enabled: existing.as_ref().map(|e| e.enabled).unwrap_or(true),
            graph: GraphCredentials {
                entra_tenant_id: t.graph.tenant_id.clone(),
                client_id: t.graph.client_id.clone(),
                client_secret: t.graph.client_secret.clone(),
                graph_base: t.graph.graph_base.clone(),
                login_base: t.graph.login_base.clone(),
            },
            hellohq: HellohqCredentials {
                base_url: t.hellohq.base_url.clone(),
                token: t.hellohq.token.clone(),
                webhook_secrets: t.hellohq.webhook_secrets.clone(),
            },
            settings: existing.as_ref().map(|e| e.settings.clone()).unwrap_or_else(|| serde_json::json!({})),
            created_at: existing.as_ref().map(|e| e.created_at).unwrap_or(now),
            updated_at: now,
        };
        store.upsert_tenant(&tenant).await.with_context(|| format!("saving tenant {} from the config file", t.id))?;
        tracing::info!(tenant = %t.id, "tenant from config reconciled");
    }
    Ok(())
}

/// Cancels the returned token on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested: finishing in-flight work");
        t.cancel();
    });
    token
}
