//! One worker process at a time per mailbox (issue 19, item 7). Graph
//! allows 4 concurrent requests per app and mailbox; each process enforces
//! that for itself (the Graph client's per-mailbox semaphore), so the
//! deployment holds it when only one process works on a mailbox at a time.
//!
//! A process takes a mailbox's lease in the store (`mailbox_leases`)
//! before it works on a hint of that mailbox, keeps it while any of its
//! jobs for the mailbox runs (renewed by a background tick, one write per
//! mailbox per renewal period, never per hint), and gives it up once the
//! mailbox has been idle for [`IDLE_RELEASE`]. A crashed holder's lease
//! expires after [`LEASE_TTL`]; then another process takes the mailbox over.
//!
//! A hint whose mailbox another process holds is deferred by the worker
//! (its attempt count untouched: waiting is no failure). A hint without a
//! mailbox (a tenant pass, a helloHQ change that may touch every mailbox)
//! needs the leases of all the tenant's syncing mailboxes; they are tried
//! one by one without ever waiting while holding, so no two processes can
//! deadlock: the ones taken stay held (idle, released after the grace) and
//! the hint is deferred until one process holds them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::model::TenantId;
use crate::store::{MailboxState, Store, StoreError};

/// How long a lease lasts without renewal: the longest a crashed process
/// keeps its mailboxes from the others.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// A lease with less than this left is renewed (by the tick while jobs run,
/// or by the next hint).
const RENEW_BELOW: Duration = Duration::from_secs(20);
/// A mailbox without jobs in this process for this long is given up.
pub const IDLE_RELEASE: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_secs(1);

type Key = (TenantId, String);

struct Held {
    /// Jobs of this process working on the mailbox now.
    jobs: usize,
    /// Conservative local view of the store's `expires_at` (taken before
    /// the write, so never later than the store's).
    until: Instant,
    idle_since: Instant,
}

/// The mailbox leases of one worker process.
pub struct MailboxLeases {
    store: Store,
    holder: String,
    held: Mutex<HashMap<Key, Held>>,
    /// Store writes of this process's leases, one at a time: a release must
    /// never delete the row a job just wrote for itself.
    writes: tokio::sync::Mutex<()>,
}

/// Why a hint cannot run in this process now.
#[derive(Debug)]
pub struct Busy {
    pub mailbox: String,
    pub holder: Option<String>,
}

/// The leases one job works under; dropping it ends the job's share.
pub struct LeaseGuard {
    leases: Arc<MailboxLeases>,
    keys: Vec<Key>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.leases.finish(&self.keys);
    }
}

impl MailboxLeases {
    pub fn new(store: Store) -> Arc<Self> {
        let holder = format!("{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Arc::new(MailboxLeases { store, holder, held: Mutex::new(HashMap::new()), writes: tokio::sync::Mutex::new(()) })
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Takes the leases `hint` needs: its mailbox's, or for a hint without
    /// one every syncing mailbox of its tenant. `Err(Busy)` when another
    /// process holds one of them (nothing waits while holding).
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &TenantId,
        mailbox: Option<&str>,
    ) -> Result<Result<LeaseGuard, Busy>, StoreError> {
        let mut mailboxes: Vec<String> = match mailbox {
            Some(m) => vec![m.to_ascii_lowercase()],
            None => self
                .store
                .list_mailboxes(tenant)
                .await?
                .into_iter()
                .filter(|m| matches!(m.state, MailboxState::Active | MailboxState::Pilot))
                .map(|m| m.id.as_str().to_ascii_lowercase())
                .collect(),
        };
        // One order everywhere (not needed against deadlock, since nothing
        // waits, but it makes two tenant-wide hints meet at the same first
        // mailbox instead of splitting the tenant between them).
        mailboxes.sort();
        mailboxes.dedup();
        let mut guard = LeaseGuard { leases: self.clone(), keys: Vec::with_capacity(mailboxes.len()) };
        for m in mailboxes {
            let key = (tenant.clone(), m);
            if !self.take(&key).await? {
                let holder = self.store.mailbox_lease_holder(tenant, &key.1).await.ok().flatten();
                return Ok(Err(Busy { mailbox: key.1, holder }));
            }
            guard.keys.push(key);
        }
        Ok(Ok(guard))
    }

    /// One more job on `key` if this process holds (or now takes) its lease.
    async fn take(&self, key: &Key) -> Result<bool, StoreError> {
        if self.join(key) {
            return Ok(true);
        }
        let _writes = self.writes.lock().await;
        if self.join(key) {
            return Ok(true);
        }
        let before = Instant::now();
        if !self.store.try_acquire_mailbox_lease(&key.0, &key.1, &self.holder, LEASE_TTL).await? {
            return Ok(false);
        }
        let mut held = self.held.lock();
        let h = held.entry(key.clone()).or_insert(Held { jobs: 0, until: before, idle_since: before });
        h.jobs += 1;
        h.until = h.until.max(before + LEASE_TTL);
        Ok(true)
    }

    /// One more job on `key` if its lease is held with time to spare.
    fn join(&self, key: &Key) -> bool {
        let mut held = self.held.lock();
        match held.get_mut(key) {
            Some(h) if h.until.saturating_duration_since(Instant::now()) > RENEW_BELOW => {
                h.jobs += 1;
                true
            }
            _ => false,
        }
    }

    fn finish(&self, keys: &[Key]) {
        let mut held = self.held.lock();
        for k in keys {
            if let Some(h) = held.get_mut(k) {
                h.jobs = h.jobs.saturating_sub(1);
                if h.jobs == 0 {
                    h.idle_since = Instant::now();
                }
            }
        }
    }

    /// Renews the leases with jobs that are close to expiry and gives up
    /// the idle ones. Runs until `stop`, then gives up every lease.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.cancelled() => break,
            }
            self.tick(false).await;
        }
        self.tick(true).await;
    }

    async fn tick(&self, all: bool) {
        let now = Instant::now();
        let (renew, release): (Vec<Key>, Vec<Key>) = {
            let held = self.held.lock();
            let renew = held
                .iter()
                .filter(|(_, h)| !all && h.jobs > 0 && h.until.saturating_duration_since(now) <= RENEW_BELOW)
                .map(|(k, _)| k.clone())
                .collect();
            let release = held
                .iter()
                .filter(|(_, h)| h.jobs == 0 && (all || now.duration_since(h.idle_since) >= IDLE_RELEASE))
                .map(|(k, _)| k.clone())
                .collect();
            (renew, release)
        };
        for key in release {
            let _writes = self.writes.lock().await;
            let gone = {
                let mut held = self.held.lock();
                match held.get(&key) {
                    Some(h) if h.jobs == 0 => held.remove(&key).is_some(),
                    _ => false,
                }
            };
            if gone {
                if let Err(e) = self.store.release_mailbox_lease(&key.0, &key.1, &self.holder).await {
                    tracing::debug!(error = %e, mailbox = %key.1, "could not release a mailbox lease; it expires");
                }
            }
        }
        for key in renew {
            let _writes = self.writes.lock().await;
            let before = Instant::now();
            match self.store.try_acquire_mailbox_lease(&key.0, &key.1, &self.holder, LEASE_TTL).await {
                Ok(true) => {
                    if let Some(h) = self.held.lock().get_mut(&key) {
                        h.until = h.until.max(before + LEASE_TTL);
                    }
                }
                Ok(false) => {
                    // Expired and taken by another process (this one stalled
                    // past the TTL): its running jobs finish, new hints wait.
                    tracing::warn!(tenant = %key.0, mailbox = %key.1, "mailbox lease lost to another worker process");
                    self.held.lock().remove(&key);
                }
                Err(e) => tracing::warn!(error = %e, mailbox = %key.1, "could not renew a mailbox lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MailboxId;
    use crate::store::{Cipher, GraphCredentials, HellohqCredentials, Mailbox, Tenant};
    use secrecy::SecretString;

    async fn store_with(tenant: &TenantId, mailboxes: &[&str]) -> Store {
        let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
        let store = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
        store
            .upsert_tenant(&Tenant {
                id: tenant.clone(),
                name: "Acme".into(),
                enabled: true,
                graph: GraphCredentials {
                    entra_tenant_id: "entra".into(),
                    client_id: "client".into(),
                    client_secret: SecretString::from("secret"),
                    graph_base: "https://graph.example".into(),
                    login_base: "https://login.example".into(),
                },
                hellohq: HellohqCredentials {
                    base_url: "https://hq.example".into(),
                    token: SecretString::from("token"),
                    webhook_secrets: vec![],
                },
                settings: serde_json::json!({}),
                created_at: chrono::Utc::now(),
                updated_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
        for m in mailboxes {
            store
                .upsert_mailbox(&Mailbox {
                    tenant: tenant.clone(),
                    id: MailboxId::parse(*m).unwrap(),
                    hq_user_id: None,
                    state: MailboxState::Active,
                    settings: serde_json::json!({}),
                    last_error: None,
                    updated_at: chrono::Utc::now(),
                })
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn one_process_per_mailbox_and_a_tenant_wide_hint_needs_them_all() {
        let t = TenantId::parse("acme").unwrap();
        let store = store_with(&t, &["anna@acme.example", "ben@acme.example"]).await;
        let (p1, p2) = (MailboxLeases::new(store.clone()), MailboxLeases::new(store.clone()));
        let a1 = p1.acquire(&t, Some("Anna@acme.example")).await.unwrap().expect("free mailbox");
        // The same process runs more jobs on it without another store write.
        let a2 = p1.acquire(&t, Some("anna@acme.example")).await.unwrap().expect("own mailbox");
        let busy = p2.acquire(&t, Some("anna@acme.example")).await.unwrap().err().expect("held by p1");
        assert_eq!((busy.mailbox.as_str(), busy.holder.as_deref()), ("anna@acme.example", Some(p1.holder())));
        // p2 may work on ben, but not on the whole tenant while p1 has anna.
        let b = p2.acquire(&t, Some("ben@acme.example")).await.unwrap().expect("free mailbox");
        assert!(p2.acquire(&t, None).await.unwrap().is_err());
        assert!(p1.acquire(&t, None).await.unwrap().is_err(), "ben is p2's");
        // Jobs finished and idle past the grace: given up, taken by the other.
        drop((a1, a2, b));
        p1.tick(true).await;
        let all = p2.acquire(&t, None).await.unwrap().expect("p2 holds ben and now takes anna");
        assert!(p1.acquire(&t, Some("anna@acme.example")).await.unwrap().is_err());
        assert!(p1.acquire(&t, Some("ben@acme.example")).await.unwrap().is_err());
        // While a job runs, the lease is kept even past the idle grace.
        p2.tick(false).await;
        assert_eq!(store.mailbox_lease_holder(&t, "anna@acme.example").await.unwrap().as_deref(), Some(p2.holder()));
        drop(all);
        p2.tick(true).await;
        assert_eq!(store.mailbox_lease_holder(&t, "anna@acme.example").await.unwrap(), None);
        assert_eq!(store.mailbox_lease_holder(&t, "ben@acme.example").await.unwrap(), None);
    }
}
