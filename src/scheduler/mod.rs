//! The scheduler: exactly one per deployment (a lease row in the store), it
//! keeps every enabled mailbox's Graph subscriptions alive (events, both
//! contact folders and the To Do list's tasks; created with a fresh random `clientState`, renewed at
//! two thirds of their lifetime, recreated when Graph lost them, deleted when
//! the mailbox is disabled) and enqueues the catch-up passes as `resync`
//! hints (Graph delta per mailbox and kind, the To Do delta poll as the
//! safety net beside the To Do subscription, and the helloHQ poll per tenant).
//!
//! It owns the `subscriptions` rows and the `scheduler` cursors. It never
//! syncs a record itself (the passes run on the workers like everything
//! else), never stores a `clientState` in clear (only its SHA-256), and a
//! tenant or mailbox that fails never stops the others: the failure is
//! recorded and tried again on the next tick, not in a loop.
//!
//! Hint conventions (for the worker):
//! - `origin = Schedule, change = Resync, mailbox = Some, kind = Some`: run a
//!   Graph delta pass for that mailbox and kind (for `Task`: the To Do poll).
//! - `origin = Schedule, change = Resync, mailbox = None, kind = None`: run the
//!   helloHQ change poll of the tenant.
//! - `change = SubscriptionRemoved | ReauthorizationRequired` (from the
//!   ingress): hand to [`Scheduler::handle_lifecycle`].

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::FutureExt;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connectors::graph::{GraphClient, GraphClientConfig, GraphError};
use crate::model::{Kind, MailboxId, TenantId};
use crate::queue::{Change, Hint, Origin, Queue, QueueError, HINT_VERSION};
use crate::store::{Mailbox, MailboxState, NewJournalEntry, Store, StoreError, Subscription, Tenant};

/// Name of the lease row that makes one scheduler the active one.
pub const LEASE_NAME: &str = "scheduler";
/// Cursor scope of the scheduler's last-run times.
pub const CURSOR_SCOPE: &str = "scheduler";
/// Prefix of the `last_error` the scheduler writes on a mailbox, so it clears
/// only its own message once the mailbox works again.
const MAILBOX_ERROR_PREFIX: &str = "subscriptions: ";

/// The scheduler's notion of "now"; injected so tests can move it with the
/// simulator's clock.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// When the scheduler loop last completed a pass (as leader or as a
/// follower checking the lease), for `/readyz`: a scheduler that has not
/// come round for three tick intervals is reported not ready (stuck in a
/// tick, or its task gone). Cheap to clone; clones share the state.
#[derive(Debug, Clone, Default)]
pub struct SchedulerHealth(Arc<HealthInner>);

#[derive(Debug, Default)]
struct HealthInner {
    running: AtomicBool,
    /// Unix milliseconds of the last completed pass (or of the start).
    last_pass_ms: AtomicI64,
    tick_ms: AtomicI64,
}

impl SchedulerHealth {
    /// Marks the scheduler as running in this process with this tick interval.
    pub fn start(&self, tick: Duration, now: DateTime<Utc>) {
        self.0.tick_ms.store(tick.as_millis().min(i64::MAX as u128) as i64, Ordering::Relaxed);
        self.0.last_pass_ms.store(now.timestamp_millis(), Ordering::Relaxed);
        self.0.running.store(true, Ordering::Relaxed);
    }

    pub fn passed(&self, now: DateTime<Utc>) {
        self.0.last_pass_ms.store(now.timestamp_millis(), Ordering::Relaxed);
    }

    /// `None` when no scheduler runs in this process; `Some(Ok(()))` while it
    /// comes round; `Some(Err(reason))` after three tick intervals without a pass.
    pub fn check(&self, now: DateTime<Utc>) -> Option<Result<(), String>> {
        if !self.0.running.load(Ordering::Relaxed) {
            return None;
        }
        let tick = self.0.tick_ms.load(Ordering::Relaxed).max(1);
        let since = now.timestamp_millis().saturating_sub(self.0.last_pass_ms.load(Ordering::Relaxed));
        if since > tick.saturating_mul(3) {
            Some(Err(format!(
                "no scheduler pass for {} s (tick every {} s); see the log for `scheduler tick`",
                since / 1000,
                tick / 1000
            )))
        } else {
            Some(Ok(()))
        }
    }
}

/// The text of a caught panic's payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// A bug met on this tenant's data; caught so the other tenants go on.
    #[error("internal error (a panic, caught): {0}")]
    Panicked(String),
}

/// Timing of the scheduler; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// How long a won lease lasts without renewal (must exceed `tick` plus a tick's work).
    pub lease_ttl: Duration,
    /// Pause between two passes of [`Scheduler::run`].
    pub tick: Duration,
    /// Share of a subscription's lifetime after which it is renewed.
    pub renew_at_fraction: f64,
    /// Lifetime of each subscription in minutes (Graph's maximum for contacts is 4230;
    /// a minute less is requested to absorb clock skew).
    pub subscription_minutes: i64,
    /// The To Do delta poll (the safety net beside the To Do subscription) this often.
    pub tasks_poll_interval: Duration,
    /// Graph delta pass per mailbox and kind (events, contacts) this often.
    pub reconcile_interval: Duration,
    /// helloHQ change poll per tenant this often.
    pub hellohq_poll_interval: Duration,
    pub graph: GraphClientConfig,
    /// Processed hint ids older than this are forgotten (no notifier
    /// redelivers that late); `retention.processed_hints_days`.
    pub processed_hints_retention: Duration,
    /// Journal entries older than this are deleted; `retention.journal_days`.
    pub journal_retention: Duration,
    /// How often the active scheduler prunes by those ages.
    pub prune_interval: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            lease_ttl: Duration::from_secs(90),
            tick: Duration::from_secs(30),
            renew_at_fraction: 2.0 / 3.0,
            subscription_minutes: 4230,
            tasks_poll_interval: Duration::from_secs(15 * 60),
            reconcile_interval: Duration::from_secs(15 * 60),
            hellohq_poll_interval: Duration::from_secs(60),
            graph: GraphClientConfig::default(),
            processed_hints_retention: Duration::from_secs(7 * 86_400),
            journal_retention: Duration::from_secs(90 * 86_400),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// What one [`Scheduler::tick`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickReport {
    pub created: u32,
    pub renewed: u32,
    /// Subscriptions Graph no longer knew (404 on renew, or expired) and that were created anew.
    pub recreated: u32,
    pub deleted: u32,
    pub hints_published: u32,
    /// Processed hint ids and journal entries pruned by age in this tick.
    pub pruned_hints: u64,
    pub pruned_journal: u64,
    /// `tenant` or `tenant/mailbox`, then the error; each is retried on the next tick.
    pub errors: Vec<String>,
}

/// What [`Scheduler::handle_lifecycle`] did with a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// The subscription was created anew (new id) and a resync hint queued.
    Recreated { new_id: String },
    /// The subscription was renewed (which reauthorizes it) under its id.
    Renewed,
    /// The subscription is already gone from the store (handled earlier or
    /// deleted on purpose): nothing to do.
    Unknown,
    /// The mailbox is no longer enabled: the subscription was deleted instead.
    Deleted,
    /// Not a lifecycle hint this handler acts on (`missed` arrives as a plain
    /// `Resync`, which the worker runs as a delta pass).
    NotLifecycle,
}

/// One subscription a mailbox should have.
#[derive(Debug, Clone)]
struct Wanted {
    kind: Kind,
    resource: String,
}

pub struct Scheduler {
    store: Store,
    queue: Queue,
    public_base_url: String,
    settings: SchedulerSettings,
    clock: Clock,
    holder: String,
    clients: parking_lot::Mutex<HashMap<TenantId, (String, GraphClient)>>,
    /// Last tenant-level error journaled, so a broken tenant is journaled once, not every tick.
    tenant_errors: parking_lot::Mutex<HashMap<TenantId, String>>,
    health: SchedulerHealth,
    /// When this instance last pruned (scheduler clock).
    last_prune: parking_lot::Mutex<Option<DateTime<Utc>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("public_base_url", &self.public_base_url)
            .field("holder", &self.holder)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// `public_base_url` is where Graph reaches this deployment's ingress
    /// (`{base}/v1/notifications/graph` and `…/graph/lifecycle`).
    pub fn new(store: Store, queue: Queue, public_base_url: &str, settings: SchedulerSettings, clock: Clock) -> Self {
        Scheduler {
            store,
            queue,
            public_base_url: public_base_url.trim_end_matches('/').to_string(),
            settings,
            clock,
            holder: format!("scheduler-{}", Uuid::new_v4()),
            clients: Default::default(),
            tenant_errors: Default::default(),
            health: SchedulerHealth::default(),
            last_prune: Default::default(),
        }
    }

    /// Reports this scheduler's passes to `health` (read by `/readyz`).
    pub fn with_health(mut self, health: SchedulerHealth) -> Self {
        self.health = health;
        self
    }

    /// This instance's lease holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes or renews the scheduler lease; true while this instance is the active scheduler.
    pub async fn try_lead(&self) -> Result<bool, SchedulerError> {
        Ok(self.store.try_acquire_lease(LEASE_NAME, &self.holder, self.settings.lease_ttl).await?)
    }

    /// Gives the lease up so a waiting scheduler takes over at once.
    pub async fn resign(&self) -> Result<(), SchedulerError> {
        self.store.release_lease(LEASE_NAME, &self.holder).await?;
        Ok(())
    }

    /// Until `shutdown`: take or renew the lease; while holding it, one
    /// [`tick`](Self::tick) per `settings.tick`. A second instance waits.
    ///
    /// Supervised: a tick that fails or panics is logged, counted
    /// (`hqsync_scheduler_ticks_total{outcome}`) and simply tried again on
    /// the next interval; a panic on one tenant's data is caught inside the
    /// tick so the other tenants are still served. Every completed pass is
    /// reported to the [`SchedulerHealth`] that `/readyz` reads.
    pub async fn run(self, shutdown: CancellationToken) {
        self.health.start(self.settings.tick, (self.clock)());
        loop {
            let pass = AssertUnwindSafe(self.pass()).catch_unwind().await;
            match pass {
                Ok(outcome) => metrics::counter!("hqsync_scheduler_ticks_total", "outcome" => outcome).increment(1),
                Err(p) => {
                    metrics::counter!("hqsync_scheduler_ticks_total", "outcome" => "panicked").increment(1);
                    tracing::error!(panic = %panic_message(p.as_ref()), "scheduler tick panicked; trying again next tick");
                }
            }
            self.health.passed((self.clock)());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.tick) => {}
            }
        }
        if let Err(e) = self.resign().await {
            tracing::warn!(error = %e, "could not release the scheduler lease");
        }
    }

    /// One turn of [`run`](Self::run); the outcome label of the tick counter.
    async fn pass(&self) -> &'static str {
        match self.try_lead().await {
            Ok(true) => {
                let r = self.tick().await;
                tracing::info!(
                    created = r.created,
                    renewed = r.renewed,
                    recreated = r.recreated,
                    deleted = r.deleted,
                    hints = r.hints_published,
                    errors = r.errors.len(),
                    "scheduler tick"
                );
                if r.errors.is_empty() {
                    "ok"
                } else {
                    "errors"
                }
            }
            Ok(false) => {
                tracing::debug!("another scheduler holds the lease; waiting");
                "follower"
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduler lease unavailable");
                "lease_failed"
            }
        }
    }

    /// One pass over every tenant: subscriptions brought to the wanted state
    /// and due catch-up passes enqueued. Does not check the lease (callers
    /// that are not [`run`](Self::run) must hold it). Each tenant is
    /// isolated: its error or panic is recorded and the next tenant goes on.
    pub async fn tick(&self) -> TickReport {
        let mut report = TickReport::default();
        self.prune_if_due(&mut report).await;
        let tenants = match self.store.list_tenants().await {
            Ok(t) => t,
            Err(e) => {
                report.errors.push(format!("store: {e}"));
                return report;
            }
        };
        for tenant in tenants {
            let outcome = AssertUnwindSafe(self.tick_tenant(&tenant, &mut report))
                .catch_unwind()
                .await
                .unwrap_or_else(|p| Err(SchedulerError::Panicked(panic_message(p.as_ref()))));
            if let Err(e) = outcome {
                let reason = if matches!(e, SchedulerError::Panicked(_)) { "panic" } else { "error" };
                metrics::counter!("hqsync_scheduler_tenant_failures_total", "reason" => reason).increment(1);
                report.errors.push(format!("{}: {e}", tenant.id));
                self.record_tenant_error(&tenant.id, &e).await;
            } else {
                self.tenant_errors.lock().remove(&tenant.id);
            }
        }
        report
    }

    /// Retention: forgets processed hint ids and journal entries older than
    /// their configured ages, once per `prune_interval`.
    async fn prune_if_due(&self, report: &mut TickReport) {
        let now = (self.clock)();
        let every = chrono::Duration::from_std(self.settings.prune_interval).unwrap_or(chrono::Duration::hours(1));
        if self.last_prune.lock().is_some_and(|at| now < at + every) {
            return;
        }
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let hints_before = now.checked_sub_signed(age(self.settings.processed_hints_retention));
        let journal_before = now.checked_sub_signed(age(self.settings.journal_retention));
        let mut ok = true;
        if let Some(before) = hints_before {
            match self.store.prune_processed_hints(before).await {
                Ok(n) => report.pruned_hints += n,
                Err(e) => {
                    ok = false;
                    report.errors.push(format!("pruning processed hints: {e}"));
                }
            }
        }
        if let Some(before) = journal_before {
            match self.store.prune_journal(before).await {
                Ok(n) => report.pruned_journal += n,
                Err(e) => {
                    ok = false;
                    report.errors.push(format!("pruning the journal: {e}"));
                }
            }
        }
        if ok {
            *self.last_prune.lock() = Some(now);
            if report.pruned_hints + report.pruned_journal > 0 {
                tracing::info!(hints = report.pruned_hints, journal = report.pruned_journal, "retention: pruned");
            }
        }
    }

    async fn tick_tenant(&self, tenant: &Tenant, report: &mut TickReport) -> Result<(), SchedulerError> {
        // The helloHQ poll does not depend on Graph: queue it before anything can fail there.
        if tenant.enabled {
            self.publish_if_due(&tenant.id, None, None, self.settings.hellohq_poll_interval, "hellohq", report).await?;
        }
        let mailboxes = self.store.list_mailboxes(&tenant.id).await?;
        let subs = self.store.list_subscriptions(&tenant.id).await?;
        let enabled = |m: &Mailbox| tenant.enabled && matches!(m.state, MailboxState::Pilot | MailboxState::Active);
        let mut by_mailbox: HashMap<MailboxId, Vec<Subscription>> = HashMap::new();
        for s in subs {
            by_mailbox.entry(s.mailbox.clone()).or_default().push(s);
        }
        let any_work = mailboxes.iter().any(enabled) || !by_mailbox.is_empty();
        if !any_work {
            return Ok(());
        }
        let client = self.client(tenant)?;
        // Resolved mailboxes are addressed (and subscribed) by their Graph
        // user's object id; one whose user did not resolve gets no
        // subscription and no pass until it does (issue #19 item 8).
        let users = self.store.graph_users(&tenant.id).await?;
        client.set_users(
            users.iter().filter(|u| u.id.is_some() || u.error.is_some()).map(|u| (u.mailbox.as_str(), u.id.as_deref())),
        );
        // One token request tells a broken tenant apart from a broken mailbox.
        client.check_credentials().await?;
        for m in &mailboxes {
            let existing = by_mailbox.remove(&m.id).unwrap_or_default();
            let outcome = if enabled(m) && !client.is_unresolved(m.id.as_str()) {
                self.upkeep_mailbox(&client, tenant, m, existing, report).await
            } else {
                self.delete_all(&client, existing, report).await
            };
            self.record_mailbox_result(m, outcome.as_ref().err()).await;
            if let Err(e) = outcome {
                if matches!(e, SchedulerError::Graph(GraphError::Auth { .. })) {
                    return Err(e);
                }
                report.errors.push(format!("{}/{}: {e}", tenant.id, m.id));
            }
        }
        // Subscriptions of mailboxes that no longer exist in the store.
        for (mailbox, orphans) in by_mailbox {
            if let Err(e) = self.delete_all(&client, orphans, report).await {
                report.errors.push(format!("{}/{mailbox}: {e}", tenant.id));
            }
        }
        Ok(())
    }

    async fn upkeep_mailbox(
        &self,
        client: &GraphClient,
        tenant: &Tenant,
        m: &Mailbox,
        mut existing: Vec<Subscription>,
        report: &mut TickReport,
    ) -> Result<(), SchedulerError> {
        let wanted = self.wanted(client, tenant, m).await?;
        let now = (self.clock)();
        for w in &wanted {
            let found = existing.iter().position(|s| s.resource == w.resource && s.kind == w.kind);
            match found.map(|i| existing.remove(i)) {
                // A tenant that refuses To Do subscriptions (the connection test
                // reports it) still gets its passes: the To Do delta poll carries
                // those changes, later. The refusal is reported, not fatal.
                None if w.kind == Kind::Task => match self.create(client, &tenant.id, &m.id, w).await {
                    Ok(_) => report.created += 1,
                    Err(SchedulerError::Graph(e)) if !matches!(e, GraphError::Auth { .. }) => {
                        tracing::warn!(tenant = %tenant.id, mailbox = %m.id, error = %e, "To Do subscription refused; the delta poll carries its changes");
                        report.errors.push(format!("{}/{}: To Do subscription: {e}", tenant.id, m.id));
                    }
                    Err(e) => return Err(e),
                },
                None => {
                    self.create(client, &tenant.id, &m.id, w).await?;
                    report.created += 1;
                }
                Some(s) if s.expires_at <= now => {
                    // Graph has dropped it already: notifications were missed.
                    if self.store.delete_subscription(&s.tenant, &s.id).await? {
                        ignore_not_found(client.delete_subscription(&s.id).await)?;
                        self.recreate_and_resync(client, &s, w, report).await?;
                    }
                }
                Some(s) if now >= self.renew_point(&s) => match self.renew(client, &s).await {
                    Ok(()) => report.renewed += 1,
                    Err(SchedulerError::Graph(GraphError::NotFound { .. })) => {
                        if self.store.delete_subscription(&s.tenant, &s.id).await? {
                            self.recreate_and_resync(client, &s, w, report).await?;
                        }
                    }
                    Err(e) => return Err(e),
                },
                Some(_) => {}
            }
        }
        // Left over: a contact folder that changed id, or a duplicate.
        self.delete_all(client, existing, report).await?;
        for kind in Kind::ALL {
            let every = match kind {
                Kind::Task => self.settings.tasks_poll_interval,
                Kind::Appointment | Kind::Contact => self.settings.reconcile_interval,
            };
            self.publish_if_due(&tenant.id, Some(&m.id), Some(kind), every, kind.as_str(), report).await?;
        }
        Ok(())
    }

    /// The four subscriptions of a mailbox: its events, both contact folders
    /// and the tasks of its To Do list (app-only todoTask subscriptions:
    /// Tasks.ReadWrite.All in Microsoft's current permission table).
    async fn wanted(&self, client: &GraphClient, tenant: &Tenant, m: &Mailbox) -> Result<Vec<Wanted>, SchedulerError> {
        let folders = client.ensure_contact_folders(&self.store, &tenant.id, m.id.as_str()).await?;
        // The Graph user's object id once resolved: a subscription made
        // under the address is replaced by one under the id.
        let key = client.user_key(m.id.as_str());
        let mb = key.as_str();
        let settings = crate::engine::settings::TenantSettings::of(tenant);
        let tasks = if settings.direction(m, Kind::Task) == crate::model::Direction::Off {
            None
        } else {
            let list =
                client.ensure_todo_list(&self.store, &tenant.id, m.id.as_str(), &settings.tasks.list_name).await?;
            Some(Wanted { kind: Kind::Task, resource: format!("users/{mb}/todo/lists/{list}/tasks") })
        };
        Ok(vec![
            Wanted { kind: Kind::Appointment, resource: format!("users/{mb}/events") },
            Wanted {
                kind: Kind::Contact,
                resource: format!("users/{mb}/contactFolders/{}/contacts", folders.global_id),
            },
            Wanted { kind: Kind::Contact, resource: format!("users/{mb}/contactFolders/{}/contacts", folders.mine_id) },
        ]
        .into_iter()
        .chain(tasks)
        .collect())
    }

    fn lifetime(&self) -> chrono::Duration {
        chrono::Duration::minutes(self.settings.subscription_minutes)
    }

    /// The expiry to ask Graph for: a full lifetime less a minute, because
    /// the default is Graph's maximum and a clock running slightly ahead of
    /// Graph's would otherwise get every create and renew refused.
    fn requested_expiry(&self) -> DateTime<Utc> {
        (self.clock)() + self.lifetime() - chrono::Duration::minutes(1)
    }

    /// When `s` is due for renewal: `renew_at_fraction` of a full lifetime
    /// after the expiry it was last given was set.
    fn renew_point(&self, s: &Subscription) -> DateTime<Utc> {
        let lifetime_ms = self.lifetime().num_milliseconds() as f64;
        let left_ms = (lifetime_ms * (1.0 - self.settings.renew_at_fraction)).round() as i64;
        s.expires_at - chrono::Duration::milliseconds(left_ms)
    }

    async fn create(
        &self,
        client: &GraphClient,
        tenant: &TenantId,
        mailbox: &MailboxId,
        w: &Wanted,
    ) -> Result<Subscription, SchedulerError> {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let client_state = URL_SAFE_NO_PAD.encode(secret);
        let now = (self.clock)();
        let expires = self.requested_expiry();
        let body = json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": format!("{}/v1/notifications/graph", self.public_base_url),
            "lifecycleNotificationUrl": format!("{}/v1/notifications/graph/lifecycle", self.public_base_url),
            "resource": w.resource,
            "expirationDateTime": expires.to_rfc3339_opts(SecondsFormat::Millis, true),
            "clientState": client_state,
        });
        let answer = client.create_subscription(&body).await?;
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| GraphError::Decode("subscription without id".into()))?
            .to_string();
        let sub = Subscription {
            id,
            tenant: tenant.clone(),
            mailbox: mailbox.clone(),
            kind: w.kind,
            resource: w.resource.clone(),
            client_state_sha256: Sha256::digest(client_state.as_bytes()).into(),
            expires_at: expiry_of(&answer).unwrap_or(expires),
            state: "active".into(),
            created_at: now,
        };
        if let Err(e) = self.store.upsert_subscription(&sub).await {
            if let StoreError::Foreign(why) = &e {
                // This tenant's Graph answered with an id another tenant holds: never take it over.
                tracing::warn!(tenant = %tenant, subscription = %sub.id, "Graph answered with another tenant's subscription id; refused");
                let entry = NewJournalEntry {
                    tenant: Some(tenant.clone()),
                    mailbox: Some(mailbox.clone()),
                    action: "subscription_refused".into(),
                    detail: json!({"error": why, "resource": sub.resource}),
                    actor: Some("scheduler".into()),
                    ..Default::default()
                };
                if let Err(je) = self.store.append_journal(&entry).await {
                    tracing::warn!(tenant = %tenant, error = %je, "could not journal a refused subscription");
                }
                return Err(e.into());
            }
            // Without the row its notifications would be dropped as unknown: don't leave it at Graph.
            let _ = client.delete_subscription(&sub.id).await;
            return Err(e.into());
        }
        tracing::info!(subscription = %sub.id, tenant = %tenant, mailbox = %mailbox, resource = %sub.resource, "subscription created");
        Ok(sub)
    }

    async fn renew(&self, client: &GraphClient, s: &Subscription) -> Result<(), SchedulerError> {
        let expires = self.requested_expiry();
        let answer = client.renew_subscription(&s.id, expires).await?;
        let renewed = Subscription { expires_at: expiry_of(&answer).unwrap_or(expires), ..s.clone() };
        self.store.upsert_subscription(&renewed).await?;
        Ok(())
    }

    /// Creates a replacement for the (already unstored) `old` and queues a
    /// resync of its mailbox and kind: whatever changed meanwhile was not notified.
    async fn recreate_and_resync(
        &self,
        client: &GraphClient,
        old: &Subscription,
        w: &Wanted,
        report: &mut TickReport,
    ) -> Result<Subscription, SchedulerError> {
        let new = self.create(client, &old.tenant, &old.mailbox, w).await?;
        report.recreated += 1;
        let id = Hint::stable_id(&old.tenant, "schedule", &format!("recreated/{}", old.id));
        self.queue.publish(&[self.resync_hint(&old.tenant, Some(&old.mailbox), Some(old.kind), id)]).await?;
        report.hints_published += 1;
        Ok(new)
    }

    async fn delete_all(
        &self,
        client: &GraphClient,
        subs: Vec<Subscription>,
        report: &mut TickReport,
    ) -> Result<(), SchedulerError> {
        for s in subs {
            ignore_not_found(client.delete_subscription(&s.id).await)?;
            self.store.delete_subscription(&s.tenant, &s.id).await?;
            report.deleted += 1;
            tracing::info!(subscription = %s.id, tenant = %s.tenant, mailbox = %s.mailbox, "subscription deleted");
        }
        Ok(())
    }

    fn resync_hint(&self, tenant: &TenantId, mailbox: Option<&MailboxId>, kind: Option<Kind>, id: Uuid) -> Hint {
        Hint {
            v: HINT_VERSION,
            hint_id: id,
            tenant: tenant.clone(),
            mailbox: mailbox.cloned(),
            kind,
            entity: None,
            origin: Origin::Schedule,
            resource_id: None,
            version: None,
            subscription_id: None,
            change: Change::Resync,
            received_at: (self.clock)(),
        }
    }

    /// Publishes the pass `what` when the slot of `every` it falls in has
    /// not run yet. The hint id is derived from the slot, so a second
    /// scheduler or a restart within the slot yields the same id.
    async fn publish_if_due(
        &self,
        tenant: &TenantId,
        mailbox: Option<&MailboxId>,
        kind: Option<Kind>,
        every: Duration,
        what: &str,
        report: &mut TickReport,
    ) -> Result<(), SchedulerError> {
        let now = (self.clock)();
        let secs = every.as_secs().max(1) as i64;
        let slot = now.timestamp().div_euclid(secs);
        let name = match mailbox {
            Some(m) => format!("pass/{m}/{what}"),
            None => format!("pass/{what}"),
        };
        let last = self.store.get_cursor(tenant, CURSOR_SCOPE, &name).await?;
        let last_slot =
            last.as_deref().and_then(|v| DateTime::parse_from_rfc3339(v).ok()).map(|t| t.timestamp().div_euclid(secs));
        if last_slot.is_some_and(|l| l >= slot) {
            return Ok(());
        }
        let id = Hint::stable_id(tenant, "schedule", &format!("{name}/{secs}/{slot}"));
        self.queue.publish(&[self.resync_hint(tenant, mailbox, kind, id)]).await?;
        report.hints_published += 1;
        self.store.set_cursor(tenant, CURSOR_SCOPE, &name, &now.to_rfc3339_opts(SecondsFormat::Millis, true)).await?;
        Ok(())
    }

    /// Acts on a lifecycle hint from the ingress: `SubscriptionRemoved` →
    /// a new subscription for the same resource plus a resync hint;
    /// `ReauthorizationRequired` → renewal (which reauthorizes; a 404 means
    /// it is gone and is handled like `SubscriptionRemoved`). Safe to run
    /// twice: the first run removes the old row, the second finds nothing.
    pub async fn handle_lifecycle(&self, hint: &Hint) -> Result<LifecycleOutcome, SchedulerError> {
        if !matches!(hint.change, Change::SubscriptionRemoved | Change::ReauthorizationRequired) {
            return Ok(LifecycleOutcome::NotLifecycle);
        }
        let Some(sub_id) = hint.subscription_id.as_deref() else {
            return Ok(LifecycleOutcome::Unknown);
        };
        let Some(s) = self.store.get_subscription(sub_id).await?.filter(|s| s.tenant == hint.tenant) else {
            return Ok(LifecycleOutcome::Unknown);
        };
        let tenant =
            self.store.get_tenant(&s.tenant).await?.ok_or_else(|| SchedulerError::UnknownTenant(s.tenant.clone()))?;
        let client = self.client(&tenant)?;
        let mailbox = self.store.get_mailbox(&s.tenant, &s.mailbox).await?;
        let enabled = tenant.enabled
            && mailbox.as_ref().is_some_and(|m| matches!(m.state, MailboxState::Pilot | MailboxState::Active));
        if !enabled {
            self.delete_all(&client, vec![s], &mut TickReport::default()).await?;
            return Ok(LifecycleOutcome::Deleted);
        }
        if hint.change == Change::ReauthorizationRequired {
            match self.renew(&client, &s).await {
                Ok(()) => return Ok(LifecycleOutcome::Renewed),
                Err(SchedulerError::Graph(GraphError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        // The row is the claim: whoever deletes it recreates.
        if !self.store.delete_subscription(&s.tenant, &s.id).await? {
            return Ok(LifecycleOutcome::Unknown);
        }
        ignore_not_found(client.delete_subscription(&s.id).await)?;
        let w = Wanted { kind: s.kind, resource: s.resource.clone() };
        let new = self.recreate_and_resync(&client, &s, &w, &mut TickReport::default()).await?;
        Ok(LifecycleOutcome::Recreated { new_id: new.id })
    }

    /// The tenant's client, reused across ticks (its token cache and
    /// auth-failure memory) until the credentials change.
    fn client(&self, tenant: &Tenant) -> Result<GraphClient, SchedulerError> {
        let g = &tenant.graph;
        let key = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:x}",
            g.entra_tenant_id,
            g.client_id,
            g.graph_base,
            g.login_base,
            Sha256::digest(g.client_secret.expose_secret().as_bytes())
        );
        let mut clients = self.clients.lock();
        if let Some((k, c)) = clients.get(&tenant.id) {
            if *k == key {
                return Ok(c.clone());
            }
        }
        let c = GraphClient::new(g, self.settings.graph.clone())?;
        clients.insert(tenant.id.clone(), (key, c.clone()));
        Ok(c)
    }

    /// Journals a tenant-level failure once per distinct message.
    async fn record_tenant_error(&self, tenant: &TenantId, e: &SchedulerError) {
        let msg = e.to_string();
        if self.tenant_errors.lock().get(tenant) == Some(&msg) {
            return;
        }
        tracing::warn!(tenant = %tenant, error = %msg, "scheduler skipped a tenant");
        let entry = NewJournalEntry {
            tenant: Some(tenant.clone()),
            action: "scheduler_error".into(),
            detail: json!({"error": msg}),
            actor: Some("scheduler".into()),
            ..Default::default()
        };
        match self.store.append_journal(&entry).await {
            Ok(_) => {
                self.tenant_errors.lock().insert(tenant.clone(), msg);
            }
            Err(je) => tracing::warn!(tenant = %tenant, error = %je, "could not journal a scheduler error"),
        }
    }

    /// Sets (or clears, when the scheduler set it) the mailbox's `last_error`.
    async fn record_mailbox_result(&self, m: &Mailbox, err: Option<&SchedulerError>) {
        let wanted = match err {
            // A tenant-wide failure is journaled on the tenant, not on each mailbox.
            Some(SchedulerError::Graph(GraphError::Auth { .. })) => return,
            Some(e) => Some(format!("{MAILBOX_ERROR_PREFIX}{e}")),
            None if m.last_error.as_deref().is_some_and(|e| e.starts_with(MAILBOX_ERROR_PREFIX)) => None,
            None => return,
        };
        if m.last_error == wanted {
            return;
        }
        let updated = Mailbox { last_error: wanted, updated_at: (self.clock)(), ..m.clone() };
        if let Err(e) = self.store.upsert_mailbox(&updated).await {
            tracing::warn!(tenant = %m.tenant, mailbox = %m.id, error = %e, "could not record a mailbox error");
        }
    }
}

fn expiry_of(answer: &Value) -> Option<DateTime<Utc>> {
    let raw = answer.get("expirationDateTime")?.as_str()?;
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

/// A subscription that is already gone at Graph is as good as deleted.
fn ignore_not_found(r: Result<(), GraphError>) -> Result<(), SchedulerError> {
    match r {
        Ok(()) | Err(GraphError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
