//! The sync engine's entry point: one hint in, its effect committed.
//!
//! A hint names a change; the engine re-reads the truth from its origin,
//! brings the linked records in step (see [`contacts`]), and only then
//! records the hint id as processed, so a hint that failed half-way is
//! retried and one that succeeded is never applied twice. Every write is
//! idempotent on its own as well (fingerprints, tagged creates), which is
//! what makes two workers on one mailbox converge.

pub mod appointments;
pub mod approvals;
pub mod contacts;
pub mod directory;
pub mod merge;
pub mod people;
pub mod settings;
pub mod shared;
pub mod tasks;
pub mod users;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connectors::graph::{GraphClient, GraphClientConfig};
use crate::connectors::hellohq::client::{HellohqClient, HellohqClientConfig};
use crate::connectors::hellohq::poll::{ChangePoller, CURSOR_SCOPE};
use crate::model::capabilities::Capabilities;
use crate::model::{Kind, MailboxId, TenantId};
use crate::queue::{Change, Hint, HqEntity, Origin};
use crate::store::{self, GraphUser, Mailbox, MailboxState, NewJournalEntry, Store, StoreError, Tenant};

use appointments::Appointments;
use contacts::{Contacts, Plan};
use directory::{Directory, LiveDirectory};
use settings::TenantSettings;
use tasks::Tasks;

/// What handling a hint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The hint's effect is now committed.
    Applied,
    /// This hint id was handled before: nothing was done again.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Worth retrying later (store or remote unavailable, throttled).
    #[error("transient: {0}")]
    Transient(String),
    /// Nothing failed: another worker holds what this hint needs (a create's
    /// claim, the pair lock) or moved it meanwhile (a merge or link that
    /// landed while this hint read), or the item changed under the merge.
    /// The hint runs again shortly, and this run does not count as a failed
    /// delivery: a hint waiting for someone else's work must never burn its
    /// delivery attempts and be dead-lettered (issue 21).
    #[error("waiting: {0}")]
    Waiting(String),
    /// Retrying cannot help; the hint goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl EngineError {
    /// Running the hint again may succeed ([`Transient`](Self::Transient) or
    /// [`Waiting`](Self::Waiting)).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, EngineError::Permanent(_))
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Database(_) => EngineError::Transient(e.to_string()),
            other => EngineError::Permanent(other.to_string()),
        }
    }
}

/// Fingerprint of a canonical record (SHA-256 of its sorted-key JSON):
/// equal records, equal prints.
pub use crate::model::fingerprint::fingerprint_of as fingerprint;

/// How long a directory snapshot is used by hints before it is refreshed
/// from helloHQ's change poll.
const DIRECTORY_TTL: Duration = Duration::from_secs(15);

fn directory_err(e: crate::connectors::hellohq::client::HqError) -> EngineError {
    if e.is_transient() {
        EngineError::Transient(e.to_string())
    } else {
        EngineError::Permanent(e.to_string())
    }
}

/// One tenant's API clients, rebuilt when the tenant record changes.
struct Clients {
    updated: chrono::DateTime<chrono::Utc>,
    graph: GraphClient,
    hq: HellohqClient,
    /// What the tenant's last connection test found (the clients above are
    /// built for it; a new record bumps the tenant's `updated_at`).
    capabilities: Capabilities,
}

/// The helloHQ client settings of tenant `t` in this process: what its last
/// connection test found (`caps`: spelling per list, inline assignments;
/// issue 18 item 4), its shared request budget and cache (item 7).
pub fn hellohq_client_config(
    t: &Tenant,
    requests_per_minute: u32,
    caps: &crate::model::capabilities::HellohqCapabilities,
) -> HellohqClientConfig {
    use crate::connectors::hellohq::{budget::RequestBudget, cache::TenantCache};
    let mut cfg = HellohqClientConfig::new(t.hellohq.base_url.clone(), t.hellohq.token.clone()).following(caps);
    cfg.budget = Some(RequestBudget::for_tenant(t.id.as_str(), requests_per_minute));
    cfg.cache = Some(TenantCache::for_tenant(t.id.as_str()));
    cfg
}

#[derive(Default)]
struct Caches {
    clients: parking_lot::Mutex<HashMap<TenantId, Arc<Clients>>>,
    directories: parking_lot::Mutex<HashMap<TenantId, LiveDirectory>>,
    /// One refresh of a tenant's directory at a time in this process: hints
    /// arriving together wait for it instead of each refreshing.
    directory_locks: parking_lot::Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per tenant, the contact persons the periodic passes use ([`people`]).
    people: parking_lot::Mutex<HashMap<TenantId, Arc<people::PeopleSlot>>>,
}

#[derive(Clone)]
pub struct Engine {
    store: Store,
    graph_config: GraphClientConfig,
    /// Per tenant, per process (`hellohq.requests_per_minute`).
    hellohq_requests_per_minute: u32,
    /// How far helloHQ's change poll reaches back behind its watermark.
    hellohq_poll_overlap: std::time::Duration,
    caches: Arc<Caches>,
}

impl Engine {
    pub fn new(store: Store) -> Self {
        Engine {
            store,
            graph_config: GraphClientConfig::default(),
            hellohq_requests_per_minute: crate::connectors::hellohq::budget::DEFAULT_REQUESTS_PER_MINUTE,
            hellohq_poll_overlap: crate::connectors::hellohq::poll::DEFAULT_OVERLAP,
            caches: Arc::default(),
        }
    }

    /// With this overlap for helloHQ's change poll instead of
    /// [`DEFAULT_OVERLAP`](crate::connectors::hellohq::poll::DEFAULT_OVERLAP)
    /// (tests and benches that must see the overlap settle in seconds).
    pub fn with_hellohq_poll_overlap(mut self, overlap: std::time::Duration) -> Self {
        self.hellohq_poll_overlap = overlap;
        self
    }

    /// With this per-tenant helloHQ request budget instead of the default.
    pub fn with_hellohq_requests_per_minute(mut self, per_minute: u32) -> Self {
        self.hellohq_requests_per_minute = per_minute;
        self.caches = Arc::default();
        self
    }

    /// With these Graph client settings (the configured request budget) instead of the defaults.
    pub fn with_graph_config(mut self, graph_config: GraphClientConfig) -> Self {
        self.graph_config = graph_config;
        self.caches = Arc::default();
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Graph client settings this engine's clients are built with.
    pub fn graph_config(&self) -> &GraphClientConfig {
        &self.graph_config
    }

    /// The address guard off (`remote.allow_private_addresses = true`) for
    /// both connectors: the simulators on 127.0.0.1, on-premise proxies.
    pub fn allowing_private_addresses(mut self) -> Self {
        self.graph_config.allow_private_addresses = true;
        self.caches = Arc::default();
        self
    }

    #[tracing::instrument(skip_all, fields(hint_id = %hint.hint_id, tenant = %hint.tenant, change = hint.change.as_str()))]
    pub async fn handle(&self, hint: &Hint) -> Result<Outcome, EngineError> {
        if self.store.hint_processed(&hint.hint_id).await? {
            tracing::debug!("hint already handled");
            return Ok(Outcome::Duplicate);
        }
        let run = uuid::Uuid::new_v4();
        let work = RUN.scope(run, READS_FROM.scope(chrono::Utc::now(), self.apply(hint)));
        tokio::pin!(work);
        let started = Instant::now();
        // The heartbeat is its own future, polled beside the work, never
        // instead of it: awaited in a `select!` arm, its update waited for
        // the row lock of a transaction the suspended work held open on
        // its own claim row (upsert_link completing that claim). Neither
        // could move, PostgreSQL cannot see a deadlock that runs through
        // the client, and the locked rows stalled every worker (the full
        // fault run: "idle in transaction" for minutes, then pool timeouts).
        let heartbeat = async {
            loop {
                tokio::time::sleep(CLAIM_HEARTBEAT).await;
                // Alive: a crashed worker's claims go stale, this run's never.
                if let Err(e) = self.store.touch_claims(&run).await {
                    tracing::warn!(error = %e, "could not refresh the claims of a running hint");
                }
                // A hint this slow holds its claims (and its mailbox's
                // creates) all along: the operator must see which one.
                let secs = started.elapsed().as_secs();
                if secs >= SLOW_HINT.as_secs() && secs % SLOW_HINT.as_secs() < CLAIM_HEARTBEAT.as_secs() {
                    tracing::warn!(
                        mailbox = hint.mailbox.as_ref().map(MailboxId::as_str),
                        kind = hint.kind.map(Kind::as_str),
                        origin = ?hint.origin,
                        resource = hint.resource_id.as_deref(),
                        running_s = secs,
                        "hint still running"
                    );
                }
            }
        };
        tokio::pin!(heartbeat);
        let result = tokio::select! {
            r = &mut work => r,
            never = &mut heartbeat => never,
        };
        if let Err(e) = result {
            // This run is over: its unfinished claims are released, so its
            // retry (or any worker) resumes them at once.
            if let Err(r) = self.store.release_claims(&run).await {
                tracing::warn!(error = %r, "could not release the claims of a failed hint");
            }
            if let EngineError::Permanent(reason) = &e {
                // "Why did this not sync?" must be answerable from the journal.
                let entry = NewJournalEntry {
                    tenant: Some(hint.tenant.clone()),
                    mailbox: hint.mailbox.clone(),
                    kind: hint.kind,
                    hint_id: Some(hint.hint_id),
                    action: "error".into(),
                    hq_id: hint.resource_id.clone().filter(|_| hint.origin == Origin::Hellohq),
                    graph_id: hint.resource_id.clone().filter(|_| hint.origin == Origin::Exchange),
                    detail: serde_json::json!({"reason": reason, "change": hint.change, "entity": hint.entity}),
                    actor: None,
                };
                if let Err(j) = self.store.append_journal(&entry).await {
                    tracing::warn!(error = %j, "could not journal a failed hint");
                }
            }
            return Err(e);
        }
        if self.store.record_hint(hint).await? {
            Ok(Outcome::Applied)
        } else {
            // Another worker finished the same hint meanwhile; both effects
            // are the same (idempotent), so this one is the duplicate.
            Ok(Outcome::Duplicate)
        }
    }

    async fn tenant(&self, id: &TenantId) -> Result<Option<(Tenant, Arc<Clients>)>, EngineError> {
        let Some(t) = self.store.get_tenant(id).await? else { return Ok(None) };
        if !t.enabled {
            return Ok(None);
        }
        let cached = self.caches.clients.lock().get(id).filter(|c| c.updated == t.updated_at).cloned();
        if let Some(c) = cached {
            self.load_graph_users(&t.id, &c.graph).await?;
            return Ok(Some((t, c)));
        }
        let capabilities = self.store.get_capabilities(id).await?;
        let graph = GraphClient::new(&t.graph, self.graph_config.clone())
            .map_err(|e| EngineError::Permanent(format!("tenant {}: Graph client: {e}", t.id)))?;
        let mut hq_config = hellohq_client_config(&t, self.hellohq_requests_per_minute, &capabilities.hellohq);
        hq_config.allow_private_addresses = self.graph_config.allow_private_addresses;
        let hq = HellohqClient::new(hq_config)
            .map_err(|e| EngineError::Permanent(format!("tenant {}: helloHQ client: {e}", t.id)))?;
        let c = Arc::new(Clients { updated: t.updated_at, graph, hq, capabilities });
        // A changed tenant may name another helloHQ: its contact persons are listed afresh.
        self.caches.people.lock().remove(id);
        self.caches.clients.lock().insert(id.clone(), c.clone());
        self.load_graph_users(&t.id, &c.graph).await?;
        Ok(Some((t, c)))
    }

    /// Tells `graph` what the store knows of the tenant's Graph users (read
    /// per hint: another process may have resolved one meanwhile), so that
    /// each resolved mailbox is addressed by its user's object id and an
    /// unresolved one is left alone (issue #19 item 8).
    async fn load_graph_users(&self, tenant: &TenantId, graph: &GraphClient) -> Result<Vec<GraphUser>, EngineError> {
        let users = self.store.graph_users(tenant).await?;
        graph.set_users(
            users.iter().filter(|u| u.id.is_some() || u.error.is_some()).map(|u| (u.mailbox.as_str(), u.id.as_deref())),
        );
        Ok(users)
    }

    /// The tenant's slot for the contact persons its passes use.
    fn people_slot(&self, tenant: &TenantId) -> Arc<people::PeopleSlot> {
        self.caches.people.lock().entry(tenant.clone()).or_default().clone()
    }

    /// The tenant's directory snapshot: listed whole when this process has
    /// none (or after [`directory::FULL_RELOAD`], or when `fresh`), else the
    /// kept one, refreshed from helloHQ's change poll when older than
    /// [`DIRECTORY_TTL`] (issue 18 item 7: never re-listed per hint or per
    /// minute).
    async fn directory(
        &self,
        tenant: &TenantId,
        hq: &HellohqClient,
        fresh: bool,
    ) -> Result<Arc<Directory>, EngineError> {
        let lock = self.caches.directory_locks.lock().entry(tenant.clone()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let kept = self.caches.directories.lock().get(tenant).cloned();
        let live = match kept {
            Some(l) if !fresh && l.loaded.elapsed() < directory::FULL_RELOAD => {
                if l.checked.elapsed() < DIRECTORY_TTL {
                    return Ok(l.dir);
                }
                let mut l = l;
                l.refresh(hq, self.hellohq_poll_overlap).await.map_err(directory_err)?;
                l
            }
            _ => LiveDirectory::load(hq).await.map_err(directory_err)?,
        };
        let dir = live.dir.clone();
        self.caches.directories.lock().insert(tenant.clone(), live);
        Ok(dir)
    }

    /// The tenant's directory with `changed` rows re-read (one request
    /// each; a row helloHQ no longer has is removed) and `gone` rows removed:
    /// what a webhook or the tenant's change poll reported.
    async fn patch_directory(
        &self,
        tenant: &TenantId,
        hq: &HellohqClient,
        changed: &[(HqEntity, i32)],
        gone: &[(HqEntity, i32)],
    ) -> Result<Arc<Directory>, EngineError> {
        let lock = self.caches.directory_locks.lock().entry(tenant.clone()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let kept = self.caches.directories.lock().get(tenant).cloned();
        let live = match kept {
            Some(mut l) if l.loaded.elapsed() < directory::FULL_RELOAD => {
                let mut rows = Vec::new();
                for &(entity, id) in changed {
                    rows.extend(Directory::read_row(hq, entity, id).await.map_err(directory_err)?);
                }
                rows.extend(gone.iter().filter_map(|&(entity, id)| directory::DirectoryRow::gone(entity, id)));
                l.apply(rows);
                l
            }
            // Nothing kept (or due for its integrity pass): the listing has
            // every change.
            _ => LiveDirectory::load(hq).await.map_err(directory_err)?,
        };
        let dir = live.dir.clone();
        self.caches.directories.lock().insert(tenant.clone(), live);
        Ok(dir)
    }

    async fn apply(&self, hint: &Hint) -> Result<(), EngineError> {
        if matches!(hint.change, Change::SubscriptionRemoved | Change::ReauthorizationRequired) {
            return Ok(()); // the scheduler's business (see worker)
        }
        let Some((tenant, clients)) = self.tenant(&hint.tenant).await? else {
            tracing::debug!(tenant = %hint.tenant, "hint for an unknown or disabled tenant ignored");
            return Ok(());
        };
        let settings = TenantSettings::of(&tenant);
        if !settings.sync_enabled {
            // The system-wide switch is off: hints are recorded, nothing synced.
            return Ok(());
        }
        let people = self.people_slot(&tenant.id);
        let cx = Contacts {
            store: &self.store,
            tenant: &tenant.id,
            settings: &settings,
            graph: &clients.graph,
            hq: &clients.hq,
            hint_id: Some(hint.hint_id),
            if_match_enforced: clients.capabilities.graph.if_match_enforced,
            people: &people,
            poll_overlap: self.hellohq_poll_overlap,
        };
        match (hint.origin, hint.change, &hint.mailbox, hint.kind) {
            (Origin::Schedule, Change::Resync, None, _) => self.tenant_pass(&cx, &clients.hq).await,
            (Origin::Schedule | Origin::Exchange, Change::Resync, Some(m), Some(Kind::Contact)) => {
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                let approved = self.approval(&tenant.id, m, Kind::Contact).await?;
                cx.pass(&dir, &mb, false, &approved).await?;
                self.approval_used(&tenant.id, m, Kind::Contact, &approved).await
            }
            (Origin::Exchange, change, Some(m), Some(Kind::Contact)) => {
                let Some(id) = hint.resource_id.as_deref() else { return Ok(()) };
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                // A deletion names the version deleted: never "nothing new".
                let version = hint.version.as_deref().filter(|_| change != Change::Deleted);
                cx.on_exchange_contact(&dir, &mb, id, version).await
            }
            // Tasks (SPEC §4): a change notification of the mailbox's To Do
            // list (app-only todoTask subscription) is applied at once; the
            // scheduler's periodic resync per mailbox is the delta poll that
            // catches what a lost notification missed.
            (Origin::Exchange, change, Some(m), Some(Kind::Task)) if change != Change::Resync => {
                let Some(id) = hint.resource_id.as_deref() else { return Ok(()) };
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                let version = hint.version.as_deref().filter(|_| change != Change::Deleted);
                Tasks::like(&cx).on_task_notification(&dir, &mb, id, version).await
            }
            (Origin::Schedule | Origin::Exchange, Change::Resync, Some(m), Some(Kind::Task)) => {
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                let approved = self.approval(&tenant.id, m, Kind::Task).await?;
                Tasks::like(&cx).sync(&dir, &mb, &approved).await?;
                self.approval_used(&tenant.id, m, Kind::Task, &approved).await
            }
            // ---- appointments (engine/appointments.rs)
            (Origin::Schedule | Origin::Exchange, Change::Resync, Some(m), Some(Kind::Appointment)) => {
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                let approved = self.approval(&tenant.id, m, Kind::Appointment).await?;
                cx.appointments().pass(&dir, &mb, false, &approved).await?;
                self.approval_used(&tenant.id, m, Kind::Appointment, &approved).await
            }
            (Origin::Exchange, change, Some(m), Some(Kind::Appointment)) => {
                let Some(id) = hint.resource_id.as_deref() else { return Ok(()) };
                let Some(mb) = self.active_mailbox(&tenant.id, m, &clients.graph).await? else { return Ok(()) };
                let dir = self.directory(&tenant.id, &clients.hq, false).await?;
                let version = hint.version.as_deref().filter(|_| change != Change::Deleted);
                cx.appointments().on_exchange_event(&dir, &mb, id, version).await
            }
            (Origin::Hellohq, _, _, _) => {
                self.on_hellohq(&cx, &clients.hq, hint.entity, hint.resource_id.as_deref()).await
            }
            // Anything else (lifecycle events, unknown combinations) is only
            // recorded (journal `received`).
            _ => Ok(()),
        }
    }

    /// The mailbox of a hint when it syncs now (and its Graph user is not
    /// known to be missing: such hints are dropped, the mailbox waits for
    /// its user to resolve, see [`users`]).
    async fn active_mailbox(
        &self,
        tenant: &TenantId,
        m: &MailboxId,
        graph: &GraphClient,
    ) -> Result<Option<Mailbox>, EngineError> {
        Ok(self
            .store
            .get_mailbox(tenant, m)
            .await?
            .filter(|mb| shared::syncs(mb) && !graph.is_unresolved(mb.id.as_str())))
    }

    async fn on_hellohq(
        &self,
        cx: &Contacts<'_>,
        hq: &HellohqClient,
        entity: Option<HqEntity>,
        id: Option<&str>,
    ) -> Result<(), EngineError> {
        let id = id.and_then(|s| s.parse::<i32>().ok());
        match (entity, id) {
            (Some(HqEntity::ContactPerson), Some(id)) => {
                let dir = self.directory(cx.tenant, hq, false).await?;
                cx.on_hq_contact(&dir, id).await
            }
            // Membership or company type changed: every mailbox's contacts
            // are checked against a fresh snapshot.
            (Some(e @ (HqEntity::Company | HqEntity::Project | HqEntity::Lead)), Some(id)) => {
                let dir = self.patch_directory(cx.tenant, hq, &[(e, id)], &[]).await?;
                cx.on_membership(&dir, e, id).await
            }
            // A task row: appointments (and absences) are decided by the
            // appointments engine; a plain task (`Ok(false)`) goes to tasks.
            (Some(HqEntity::Task), Some(id)) => {
                let dir = self.directory(cx.tenant, hq, false).await?;
                on_task_row(cx, &dir, id).await
            }
            (Some(HqEntity::User), Some(id)) => {
                let dir = self.patch_directory(cx.tenant, hq, &[(HqEntity::User, id)], &[]).await?;
                self.provision(cx, &dir).await
            }
            (Some(HqEntity::User), None) => {
                let dir = self.directory(cx.tenant, hq, true).await?;
                self.provision(cx, &dir).await
            }
            _ => Ok(()),
        }
    }

    /// Mailboxes come from helloHQ's users (SPEC §6): each user's work email
    /// is a mailbox; a new one is synchronised at once, once its Graph user
    /// is resolved ([`users`]: never before, never assumed). Existing
    /// mailboxes keep their state (an admin may have disabled one); one
    /// whose user is not resolved yet is looked up when due.
    async fn provision(&self, cx: &Contacts<'_>, dir: &Directory) -> Result<(), EngineError> {
        let existing: HashMap<String, Mailbox> = self
            .store
            .list_mailboxes(cx.tenant)
            .await?
            .into_iter()
            .map(|m| (m.id.as_str().to_ascii_lowercase(), m))
            .collect();
        let graph_users: HashMap<String, GraphUser> = self
            .store
            .graph_users(cx.tenant)
            .await?
            .into_iter()
            .map(|u| (u.mailbox.as_str().to_ascii_lowercase(), u))
            .collect();
        let tenant_updated = self.store.get_tenant(cx.tenant).await?.map_or_else(chrono::Utc::now, |t| t.updated_at);
        for u in &dir.users {
            let Some(email) = u.e_mail_work.as_deref().map(str::trim).filter(|e| e.contains('@')) else { continue };
            if let Some(known) = existing.get(&email.to_ascii_lowercase()) {
                let user = graph_users.get(&email.to_ascii_lowercase());
                let resolved = match user {
                    Some(GraphUser { id: Some(_), .. }) => true,
                    _ if users::due(user, tenant_updated, chrono::Utc::now()) => {
                        self.resolve_graph_user(cx, known).await?
                    }
                    // Unresolved and not due: it waits.
                    _ => false,
                };
                if resolved {
                    self.resume_initial_pass(cx, dir, known).await?;
                }
                continue;
            }
            let Ok(id) = MailboxId::parse(email.to_ascii_lowercase()) else { continue };
            let (state, held_by) = cx.settings.initial_state(id.as_str());
            let m = Mailbox {
                tenant: cx.tenant.clone(),
                id,
                hq_user_id: Some(u.id.to_string()),
                state,
                settings: match held_by {
                    Some(why) => serde_json::json!({"disabled_by": why}),
                    None => serde_json::json!({}),
                },
                last_error: None,
                updated_at: chrono::Utc::now(),
            };
            self.store.upsert_mailbox(&m).await?;
            self.store
                .append_journal(&NewJournalEntry {
                    tenant: Some(cx.tenant.clone()),
                    mailbox: Some(m.id.clone()),
                    action: "mailbox_added".into(),
                    hq_id: Some(u.id.to_string()),
                    detail: serde_json::json!({"summary": format!("mailbox {}", m.id), "reason": "helloHQ user with this work email"}),
                    ..Default::default()
                })
                .await?;
            if !self.resolve_graph_user(cx, &m).await? {
                continue;
            }
            if state == MailboxState::Disabled {
                tracing::info!(tenant = %cx.tenant, mailbox = %m.id, "mailbox added, held back until rollout = all");
                continue;
            }
            tracing::info!(tenant = %cx.tenant, mailbox = %m.id, "mailbox added from helloHQ users; initial contact sync");
            cx.pass(dir, &m, false, &approvals::Approval::none()).await?;
        }
        Ok(())
    }

    /// Looks up the Graph user of mailbox `m` by its address ([`users::resolve`])
    /// and records the outcome in the store and in the tenant's Graph client.
    /// True when resolved. An unresolved user is journalled (`graph_user_unresolved`,
    /// with the reason and the fix) and logged; the caller leaves the mailbox alone.
    async fn resolve_graph_user(&self, cx: &Contacts<'_>, m: &Mailbox) -> Result<bool, EngineError> {
        let address = m.id.as_str();
        match users::resolve(cx.graph, address).await {
            Ok(users::Resolution::Found(id)) => {
                self.store.set_graph_user(cx.tenant, &m.id, Ok(&id)).await?;
                cx.graph.set_user(address, Some(&id));
                tracing::info!(tenant = %cx.tenant, mailbox = %m.id, graph_user = %id, "Graph user resolved");
                Ok(true)
            }
            Ok(users::Resolution::Unresolved(why)) => {
                self.store.set_graph_user(cx.tenant, &m.id, Err(&why)).await?;
                cx.graph.set_user(address, None);
                tracing::warn!(tenant = %cx.tenant, mailbox = %m.id, reason = %why, "Graph user not resolved; mailbox not synced");
                self.store
                    .append_journal(&NewJournalEntry {
                        tenant: Some(cx.tenant.clone()),
                        mailbox: Some(m.id.clone()),
                        action: "graph_user_unresolved".into(),
                        hq_id: m.hq_user_id.clone(),
                        detail: serde_json::json!({"summary": format!("no Graph user for {}", m.id), "reason": why}),
                        ..Default::default()
                    })
                    .await?;
                Ok(false)
            }
            Err(e) => Err(shared::graph_err(e)),
        }
    }

    /// A mailbox provisioned by a run that never finished its initial
    /// contact pass (killed between the two, found by tests/worker.rs's
    /// kill -9 run): that pass runs now, else the mailbox would lack every
    /// contact not hinted since until the next reconcile. A failure is
    /// logged, never the tenant pass's: one broken mailbox must not stop
    /// helloHQ's change poll for all.
    /// Waiting for the dead run's claims (until they go stale) is the
    /// exception: the tenant pass is deferred and runs again.
    async fn resume_initial_pass(&self, cx: &Contacts<'_>, dir: &Directory, m: &Mailbox) -> Result<(), EngineError> {
        if !matches!(m.state, MailboxState::Active | MailboxState::Pilot) {
            return Ok(());
        }
        match self.store.get_cursor(cx.tenant, m.id.as_str(), contacts::LAST_PASS).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(tenant = %cx.tenant, mailbox = %m.id, "initial contact sync never finished; running it");
                match cx.pass(dir, m, false, &approvals::Approval::none()).await {
                    Ok(_) => {}
                    Err(e @ EngineError::Waiting(_)) => return Err(e),
                    Err(e) => {
                        tracing::warn!(tenant = %cx.tenant, mailbox = %m.id, error = %e, "initial contact sync failed again; the next tenant pass retries it")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %cx.tenant, mailbox = %m.id, error = %e, "could not read a mailbox's last pass")
            }
        }
        Ok(())
    }

    /// The tenant pass: mailboxes from users, then helloHQ's change poll
    /// (the safety net under webhooks), each change applied inline; the
    /// watermark moves only after its changes are applied.
    async fn tenant_pass(&self, cx: &Contacts<'_>, hq: &HellohqClient) -> Result<(), EngineError> {
        let poller = ChangePoller::new(hq).with_overlap(self.hellohq_poll_overlap);
        let poll_err = |e: crate::connectors::hellohq::poll::PollError| {
            if e.is_transient() {
                EngineError::Transient(e.to_string())
            } else {
                EngineError::Permanent(e.to_string())
            }
        };
        // The directory first (users, companies, projects, leads): the kept
        // snapshot patched with the rows the poll reports changed, never
        // listed whole (issue 18 item 7). Its watermarks move only after
        // the snapshot has the changes.
        let mut changed = Vec::new();
        let mut batches = Vec::new();
        for entity in directory::DIRECTORY_ENTITIES {
            let first =
                self.store.get_cursor(cx.tenant, CURSOR_SCOPE, &ChangePoller::cursor_name(entity)).await?.is_none();
            let batch = poller.poll_updates(&self.store, cx.tenant, entity).await.map_err(poll_err)?;
            // A first poll lists everything: a kept snapshot has it.
            if !first {
                changed
                    .extend(batch.hints.iter().filter_map(|h| Some((entity, h.resource_id.as_deref()?.parse().ok()?))));
            }
            batches.push(batch);
        }
        let membership_changed = changed.iter().any(|(e, _)| *e != HqEntity::User);
        let dir = self.patch_directory(cx.tenant, hq, &changed, &[]).await?;
        for batch in batches {
            batch.commit(&self.store).await?;
        }
        self.provision(cx, &dir).await?;
        for entity in [HqEntity::ContactPerson, HqEntity::Task] {
            let first =
                self.store.get_cursor(cx.tenant, CURSOR_SCOPE, &ChangePoller::cursor_name(entity)).await?.is_none();
            let batch = poller.poll_updates(&self.store, cx.tenant, entity).await.map_err(poll_err)?;
            // A first poll lists everything: the mailbox passes cover that.
            if !first {
                for id in batch.hints.iter().filter_map(|h| h.resource_id.as_deref()?.parse().ok()) {
                    match entity {
                        HqEntity::ContactPerson => cx.on_hq_contact(&dir, id).await?,
                        _ => on_task_row(cx, &dir, id).await?,
                    }
                }
            }
            batch.commit(&self.store).await?;
        }
        let deletions = poller.poll_deletions(&self.store, cx.tenant).await.map_err(poll_err)?;
        let gone: Vec<(HqEntity, i32)> =
            deletions.hints.iter().filter_map(|h| Some((h.entity?, h.resource_id.as_deref()?.parse().ok()?))).collect();
        let dir_gone: Vec<(HqEntity, i32)> =
            gone.iter().copied().filter(|(e, _)| directory::DIRECTORY_ENTITIES.contains(e)).collect();
        let dir = if dir_gone.is_empty() { dir } else { self.patch_directory(cx.tenant, hq, &[], &dir_gone).await? };
        for &(entity, id) in &gone {
            match entity {
                HqEntity::ContactPerson => cx.on_hq_contact(&dir, id).await?,
                HqEntity::Task => on_task_row(cx, &dir, id).await?,
                _ => {}
            }
        }
        deletions.commit(&self.store).await?;
        if membership_changed || dir_gone.iter().any(|(e, _)| *e != HqEntity::User) {
            for m in cx.mailboxes().await? {
                let approved = self.approval(cx.tenant, &m.id, Kind::Contact).await?;
                cx.pass(&dir, &m, false, &approved).await?;
                self.approval_used(cx.tenant, &m.id, Kind::Contact, &approved).await?;
            }
        }
        Ok(())
    }

    /// The items approved for deletion by the next pass of this mailbox
    /// and kind ([`approvals`]); read, not taken: a pass that fails keeps
    /// it for its retry.
    async fn approval(&self, tenant: &TenantId, m: &MailboxId, kind: Kind) -> Result<approvals::Approval, EngineError> {
        Ok(approvals::approval(&self.store, tenant, m, kind).await?)
    }

    /// The pass that used `approved` completed: the approval is spent.
    async fn approval_used(
        &self,
        tenant: &TenantId,
        m: &MailboxId,
        kind: Kind,
        approved: &approvals::Approval,
    ) -> Result<(), EngineError> {
        Ok(approvals::clear_approval(&self.store, tenant, m, kind, approved).await?)
    }

    /// The deletions held back for `mailbox`, per kind (every kind when `None`).
    pub async fn held(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Option<Kind>,
    ) -> Result<Vec<approvals::Held>, EngineError> {
        let mut out = Vec::new();
        for k in kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]) {
            out.extend(approvals::held(&self.store, tenant, mailbox, k).await?);
        }
        Ok(out)
    }

    /// Approves exactly the held deletions of `mailbox` for `kind` (every
    /// kind when `None`), or with `only` just those of its item keys that
    /// are held: the next pass deletes those of them still gone, nothing
    /// else unasked. Returns what was approved, per kind.
    pub async fn approve(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Option<Kind>,
        only: Option<&[String]>,
        actor: &str,
    ) -> Result<Vec<(Kind, Vec<approvals::HeldItem>)>, EngineError> {
        let mut out = Vec::new();
        for k in kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]) {
            let items = approvals::approve_held(&self.store, tenant, mailbox, k, only, actor).await?;
            if !items.is_empty() {
                out.push((k, items));
            }
        }
        self.store
            .append_journal(&NewJournalEntry {
                tenant: Some(tenant.clone()),
                mailbox: Some(mailbox.clone()),
                kind,
                action: "admin".into(),
                detail: serde_json::json!({
                    "summary": format!("{} held deletions approved", out.iter().map(|(_, i)| i.len()).sum::<usize>()),
                    "what": "approve",
                    "kinds": out.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                    "items": out.iter().flat_map(|(_, i)| i.iter()).collect::<Vec<_>>(),
                }),
                actor: Some(actor.to_string()),
                ..Default::default()
            })
            .await?;
        Ok(out)
    }

    /// The dry run (SPEC §6): what a contact pass would do in each mailbox
    /// of `tenant` (or only `mailbox`), written nowhere.
    pub async fn plan(&self, tenant: &TenantId, mailbox: Option<&MailboxId>) -> Result<Vec<Plan>, EngineError> {
        self.plan_kind(tenant, mailbox, Kind::Contact).await
    }

    /// The dry run for one kind.
    pub async fn plan_kind(
        &self,
        tenant: &TenantId,
        mailbox: Option<&MailboxId>,
        kind: Kind,
    ) -> Result<Vec<Plan>, EngineError> {
        let Some((t, clients)) = self.tenant(tenant).await? else {
            return Err(EngineError::Permanent(format!("tenant {tenant} does not exist or is disabled")));
        };
        let settings = TenantSettings::of(&t);
        let people = self.people_slot(&t.id);
        let cx = Contacts {
            store: &self.store,
            tenant: &t.id,
            settings: &settings,
            graph: &clients.graph,
            hq: &clients.hq,
            hint_id: None,
            if_match_enforced: clients.capabilities.graph.if_match_enforced,
            people: &people,
            poll_overlap: self.hellohq_poll_overlap,
        };
        let dir = self.directory(&t.id, &clients.hq, true).await?;
        let mut out = Vec::new();
        let mailboxes = match mailbox {
            Some(m) => vec![self
                .store
                .get_mailbox(&t.id, m)
                .await?
                .ok_or_else(|| EngineError::Permanent(format!("mailbox {m} is not known for tenant {tenant}")))?],
            None => cx.mailboxes().await?,
        };
        for m in mailboxes {
            out.push(match kind {
                Kind::Contact => cx.pass(&dir, &m, true, &approvals::Approval::none()).await?,
                Kind::Task => Tasks::like(&cx).pass(&dir, &m, true, &approvals::Approval::none()).await?,
                Kind::Appointment => cx.appointments().pass(&dir, &m, true, &approvals::Approval::none()).await?,
            });
        }
        Ok(out)
    }
}

/// How long a claim on a create may go without its run's heartbeat before
/// another worker assumes the holder crashed and takes over (after looking
/// for what the holder may already have created). A live run refreshes its
/// claims every [`CLAIM_HEARTBEAT`], however long its calls take.
pub const CLAIM_TIMEOUT: chrono::Duration = chrono::Duration::seconds(30);

/// How often a running hint refreshes its unfinished claims.
pub const CLAIM_HEARTBEAT: Duration = Duration::from_secs(5);

/// A hint running longer than this is logged (again each period) while it runs.
const SLOW_HINT: Duration = Duration::from_secs(30);

/// The result of claiming the creation of an item's counterpart.
#[derive(Debug)]
pub enum Claim {
    /// This worker creates it.
    Mine,
    /// Already linked by someone else: nothing to create.
    Done(store::Link),
    /// Another worker is creating it right now: retry the hint later.
    Busy,
    /// An unfinished claim whose holder is gone (its run failed, or it is
    /// older than [`CLAIM_TIMEOUT`]: crashed), now taken over by this
    /// worker: look for what the holder may have created, then create.
    Stale(store::Link),
}

tokio::task_local! {
    /// The run of the hint being handled ([`Engine::handle`]): claims name
    /// it, and a run that fails releases its unfinished claims.
    static RUN: uuid::Uuid;
}

tokio::task_local! {
    /// When the hint being handled began: every read it makes is younger.
    static READS_FROM: chrono::DateTime<chrono::Utc>;
}

/// True when the pair `l` was merged (its link written) after the running
/// hint began reading, so its reads of either side may be older than the
/// link's base. A three-way merge of such a read against that base takes
/// the older value for an edit and writes it back over the newer one (the
/// fault suite's rolled-back appointments and tasks, and its phantom
/// "conflicts" between a side and hqsync's own earlier write). The caller
/// reads the link first and then both sides again before merging. A link
/// without a base (just matched) and outside a hint (tests driving the
/// engine directly) is taken as it is. Read in that order (link, then both
/// sides), the base is never newer than the sides, and a merge running
/// beside this one is caught by [`lock_pair`].
pub fn newer_than_reads(l: &store::Link) -> bool {
    // A store may keep the time to the millisecond: a write within the same
    // millisecond as the hint's start counts as newer.
    let slack = chrono::Duration::milliseconds(1);
    !l.base.is_null() && l.state == "linked" && READS_FROM.try_with(|t| l.updated_at + slack > *t).unwrap_or(false)
}

/// How long a pair lock lasts without renewal: a worker killed while
/// merging holds its pairs at most this long.
const PAIR_LOCK_TTL: Duration = Duration::from_secs(30);

/// How long a merge waits for another worker's merge of the same pair
/// before it gives up (the hint is retried later).
const PAIR_LOCK_WAIT: Duration = Duration::from_secs(10);

/// A merge's hold on one pair (one link), from the moment it decided to
/// write until its link is saved: a lease row in the store, renewed while
/// held and released when dropped.
///
/// helloHQ has no conditional write (no ETag on PUT), so two merges of the
/// same pair that read it at the same time would both pass a check of its
/// `updatedOn` and both write, the later one with the older values, while
/// their links land in the other order. The fault suite saw exactly that: a
/// burst of Outlook edits left helloHQ with an older value under a link
/// whose base was the newest, and the next notification wrote that older
/// value back over the user's edit. Held for the whole write, the lock
/// makes the check that the link is unchanged and the writes one step.
#[must_use = "the pair is unlocked when this is dropped"]
pub struct PairLock {
    store: Store,
    name: String,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Drop for PairLock {
    fn drop(&mut self) {
        self.renew.abort();
        let (store, name, holder) =
            (self.store.clone(), std::mem::take(&mut self.name), std::mem::take(&mut self.holder));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_lease(&name, &holder).await {
                    tracing::debug!(lease = %name, error = %e, "pair lock not released; it expires on its own");
                }
            });
        }
    }
}

fn pair_lock_name(l: &store::Link) -> String {
    let id = match (l.hq_id.as_deref(), l.graph_id.as_deref()) {
        (Some(h), _) => format!("h:{h}"),
        (None, Some(g)) => format!("g:{g}"),
        (None, None) => String::new(),
    };
    format!("pair/{}/{}/{}/{id}", l.tenant.as_str(), l.mailbox.as_str(), l.kind.as_str())
}

/// How long a notification waits for a merge of its pair that is writing.
const ECHO_WAIT: Duration = Duration::from_secs(2);

/// A notification whose version the link `l` does not hold may be the echo
/// of a merge of that pair writing right now (its write seen, its link not
/// saved yet), or a second delivery of the change that merge handles.
/// Waits, up to [`ECHO_WAIT`], while the pair is locked ([`PairLock`]).
/// True if it waited: the caller reads the link again before it reads the
/// item, and that link may show the version as handled (one Graph read
/// fewer; Graph's per-mailbox quota is the scarce resource, the store not).
async fn wait_while_pair_locked(store: &Store, l: &store::Link) -> Result<bool, EngineError> {
    let name = pair_lock_name(l);
    let started = Instant::now();
    let mut waited = false;
    while started.elapsed() < ECHO_WAIT && store.lease_held(&name).await? {
        waited = true;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(waited)
}

/// The link of a Graph notification naming `version`, found by its Graph
/// id as `link`: read again after [`wait_while_pair_locked`] when it does
/// not hold that version and a merge of its pair was writing.
pub async fn link_after_running_merge(
    store: &Store,
    link: Option<store::Link>,
    version: Option<&str>,
) -> Result<Option<store::Link>, EngineError> {
    let Some(l) = link.as_ref().filter(|l| version.is_some() && !shared::link_holds(l, version)) else {
        return Ok(link);
    };
    let Some(gid) = l.graph_id.as_deref() else { return Ok(link) };
    if !wait_while_pair_locked(store, l).await? {
        return Ok(link);
    }
    Ok(store.get_link_by_graph(&l.tenant, &l.mailbox, l.kind, gid).await?)
}

/// Before a merge writes anything: locks the pair ([`PairLock`]) and checks
/// that the link it merged against is still the one in the store. Another
/// worker that merged the pair while this one read the sides (its write to
/// a side seen here, its link not yet) makes hqsync's own write look like a
/// user's edit, and this merge would write the older value back; retried,
/// the hint reads the link first. Keep the lock until the link is saved.
pub async fn lock_pair(store: &Store, l: &store::Link) -> Result<PairLock, EngineError> {
    let name = pair_lock_name(l);
    let holder = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    while !store.try_acquire_lease(&name, &holder, PAIR_LOCK_TTL).await? {
        if started.elapsed() >= PAIR_LOCK_WAIT {
            return Err(EngineError::Waiting(
                "another worker has been writing this pair for a while; trying again later".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    let renew = {
        let (store, name, holder) = (store.clone(), name.clone(), holder.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PAIR_LOCK_TTL / 3).await;
                if !matches!(store.try_acquire_lease(&name, &holder, PAIR_LOCK_TTL).await, Ok(true)) {
                    tracing::warn!(lease = %name, "pair lock could not be renewed");
                }
            }
        })
    };
    let lock = PairLock { store: store.clone(), name, holder, renew };
    let now = match (l.hq_id.as_deref(), l.graph_id.as_deref()) {
        (Some(h), _) => store.get_link_by_hq(&l.tenant, &l.mailbox, l.kind, h).await?,
        (None, Some(g)) => store.get_link_by_graph(&l.tenant, &l.mailbox, l.kind, g).await?,
        (None, None) => return Ok(lock),
    };
    // A link built in memory carries a finer time than the store keeps.
    let same = |n: &store::Link| (n.updated_at - l.updated_at).num_milliseconds().abs() < 1 && n.graph_id == l.graph_id;
    if now.as_ref().is_some_and(same) {
        return Ok(lock);
    }
    Err(EngineError::Waiting("the pair was merged by another worker while this hint read it; merging again".into()))
}

/// [`lock_pair`] when the merge `result` writes to either side; a merge
/// that writes nothing needs no lock.
pub async fn lock_pair_to_write(
    store: &Store,
    l: &store::Link,
    result: &merge::Merge,
) -> Result<Option<PairLock>, EngineError> {
    if result.to_hellohq.is_empty() && result.to_exchange.is_empty() {
        return Ok(None);
    }
    lock_pair(store, l).await.map(Some)
}

/// The error when a pair re-read for [`newer_than_reads`] is no longer a
/// complete link (moved, unlinked or being re-created meanwhile): the hint
/// runs again and decides afresh.
pub fn relinked_meanwhile() -> EngineError {
    EngineError::Waiting("the pair was relinked by another worker while this hint read it; reading again".into())
}

/// The `base` of a claim row: the hint (for the logs) and the run making it.
/// A claim is never resumed because it names the same hint: a duplicated
/// notification runs the same hint twice at once, and the second would
/// create beside the first; only a finished (failed) run releases its claims.
pub fn claim_token(hint: Option<uuid::Uuid>) -> serde_json::Value {
    serde_json::json!({ "claim": hint, "run": RUN.try_with(|r| *r).ok() })
}

/// Claims, atomically, the creation of the counterpart of `pending`: a
/// link with one id (the Graph id when creating in helloHQ, the helloHQ id
/// when creating in Exchange) and not the other.
pub async fn claim_create(
    store: &Store,
    pending: &store::Link,
    hint: Option<uuid::Uuid>,
) -> Result<Claim, EngineError> {
    let mut pending = pending.clone();
    pending.base = with_note(claim_token(hint), &pending.base);
    let pending = &pending;
    if store.claim_link(pending).await? {
        return Ok(Claim::Mine);
    }
    let (t, m, k) = (&pending.tenant, &pending.mailbox, pending.kind);
    let existing = match (&pending.graph_id, &pending.hq_id) {
        (Some(g), _) => store.get_link_by_graph(t, m, k, g).await?,
        (None, Some(h)) => store.get_link_by_hq(t, m, k, h).await?,
        (None, None) => None,
    };
    // Claimed by the other id, or removed meanwhile: try again later.
    let Some(existing) = existing else { return Ok(Claim::Busy) };
    let complete = if pending.graph_id.is_some() { existing.hq_id.is_some() } else { existing.graph_id.is_some() };
    if complete {
        return Ok(Claim::Done(existing));
    }
    if claimed_elsewhere(&existing) || !take_over(store, &existing, hint).await? {
        Ok(Claim::Busy)
    } else {
        Ok(Claim::Stale(existing))
    }
}

/// True while an unfinished claim row belongs to another live run: not
/// this run's, not released by its run (which failed) and younger than
/// [`CLAIM_TIMEOUT`].
pub fn claimed_elsewhere(l: &store::Link) -> bool {
    let run = RUN.try_with(|r| r.to_string()).ok();
    let ours = run.is_some() && l.base.get("run").and_then(serde_json::Value::as_str) == run.as_deref();
    let released = l.base.get("released").and_then(serde_json::Value::as_bool) == Some(true);
    !ours && !released && chrono::Utc::now() - l.updated_at <= CLAIM_TIMEOUT
}

/// Takes the unfinished claim `l` (not [`claimed_elsewhere`]) over for this
/// run, atomically; false when another worker took it (or finished it) first.
pub async fn take_over(store: &Store, l: &store::Link, hint: Option<uuid::Uuid>) -> Result<bool, EngineError> {
    Ok(store.take_over_claim(l, &with_note(claim_token(hint), &l.base)).await?)
}

/// A claim token carrying the `note` of `from` (a pending link or an
/// earlier claim): what the create was made from, kept across take-overs
/// and releases, so that an item deleted before its create was linked can
/// still name the record the create may have made.
fn with_note(mut token: serde_json::Value, from: &serde_json::Value) -> serde_json::Value {
    if let Some(note) = from.get("note") {
        token["note"] = note.clone();
    }
    token
}

/// Refuses (as a retryable busy error) to create a copy in `mailbox`
/// while a create toward helloHQ of the same kind is in flight there: the
/// helloHQ record being created from this mailbox's own item may be the
/// very one about to be mirrored back, and its link is not written yet.
pub async fn no_create_in_flight(
    store: &Store,
    tenant: &TenantId,
    mailbox: &MailboxId,
    kind: Kind,
) -> Result<(), EngineError> {
    let since = chrono::Utc::now() - CLAIM_TIMEOUT;
    if store.count_open_claims(tenant, mailbox, kind, since).await? > 0 {
        return Err(busy(&format!("a {kind} created in {mailbox} that is on its way to helloHQ")));
    }
    Ok(())
}

/// Refuses (as a retryable busy error) to act on the deletion of an item
/// whose create toward helloHQ another live run is making: dropping its
/// claim row now would let that run link the record it is creating after
/// the deletion was handled, and the helloHQ record would outlive the item
/// it came from. Once the create is linked, the retry deletes it.
pub fn not_while_created(l: &store::Link, what: &str) -> Result<(), EngineError> {
    if l.state == "pending" && l.hq_id.is_none() && claimed_elsewhere(l) {
        return Err(busy(what));
    }
    Ok(())
}

/// The error for [`Claim::Done`] met by a create: another worker linked the
/// pair meanwhile, maybe from an older read than this hint's. Retried, the
/// hint merges its read into that pair instead of taking it as synced.
pub fn linked_meanwhile(what: &str) -> EngineError {
    EngineError::Waiting(format!("{what} was linked by another worker meanwhile; merging into it"))
}

/// The error for [`Claim::Busy`].
pub fn busy(what: &str) -> EngineError {
    EngineError::Waiting(format!("{what} is being created by another worker right now"))
}

/// A helloHQ task row: appointments (and absences, which are never synced)
/// are the appointments engine's; a plain task is the tasks engine's.
async fn on_task_row(cx: &Contacts<'_>, dir: &Directory, id: i32) -> Result<(), EngineError> {
    if cx.appointments().on_hq_appointment(dir, id).await? {
        return Ok(());
    }
    Tasks::like(cx).on_hq_task(dir, id).await
}

impl<'a> Contacts<'a> {
    /// The appointment sync over the same tenant, clients and hint.
    fn appointments(&self) -> Appointments<'a> {
        Appointments {
            store: self.store,
            tenant: self.tenant,
            settings: self.settings,
            graph: self.graph,
            hq: self.hq,
            hint_id: self.hint_id,
        }
    }
}
