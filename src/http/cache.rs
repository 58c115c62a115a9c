//! Short-lived read-through caches for the ingress hot path, so a burst of
//! notifications costs no store round trip per item. Entries expire quickly
//! (a revoked subscription or rotated secret takes effect within the TTL);
//! misses are cached briefly too, so unknown ids cannot hammer the store.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::connectors::hellohq::webhook::WebhookSecret;
use crate::model::{Kind, MailboxId, TenantId};
use crate::store::{Store, StoreError};

const HIT_TTL: Duration = Duration::from_secs(30);
const MISS_TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 100_000;

/// When an entry was cached, and the value (`None` = a cached miss).
type Entry<V> = (Instant, Option<Arc<V>>);

struct Ttl<K, V> {
    map: RwLock<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V> Ttl<K, V> {
    fn new() -> Self {
        Ttl { map: RwLock::new(HashMap::new()) }
    }

    /// `Some(entry)` when cached and fresh (the entry itself may be a miss).
    fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q) -> Option<Option<Arc<V>>>
    where
        K: std::borrow::Borrow<Q>,
    {
        let map = self.map.read();
        let (at, v) = map.get(k)?;
        let ttl = if v.is_some() { HIT_TTL } else { MISS_TTL };
        (at.elapsed() < ttl).then(|| v.clone())
    }

    fn put(&self, k: K, v: Option<Arc<V>>) {
        let mut map = self.map.write();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(k, (Instant::now(), v));
    }

    fn remove<Q: Eq + Hash + ?Sized>(&self, k: &Q)
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.write().remove(k);
    }
}

/// What ingress needs to know about a subscription to trust an item.
#[derive(Debug)]
pub struct KnownSubscription {
    pub id: String,
    pub tenant: TenantId,
    pub mailbox: MailboxId,
    pub kind: Kind,
    pub client_state_sha256: [u8; 32],
    /// The customer's Entra directory id, to check `tenantId` of items.
    pub entra_tenant_id: String,
}

#[derive(Clone)]
pub struct SubscriptionCache {
    store: Store,
    cache: Arc<Ttl<String, KnownSubscription>>,
}

impl SubscriptionCache {
    pub fn new(store: Store) -> Self {
        SubscriptionCache { store, cache: Arc::new(Ttl::new()) }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Arc<KnownSubscription>>, StoreError> {
        if let Some(hit) = self.cache.get(id) {
            return Ok(hit);
        }
        let found = match self.store.get_subscription(id).await? {
            Some(s) => match self.store.get_tenant(&s.tenant).await? {
                Some(t) if t.enabled => Some(Arc::new(KnownSubscription {
                    id: s.id,
                    tenant: s.tenant,
                    mailbox: s.mailbox,
                    kind: s.kind,
                    client_state_sha256: s.client_state_sha256,
                    entra_tenant_id: t.graph.entra_tenant_id,
                })),
                _ => None,
            },
            None => None,
        };
        self.cache.put(id.to_string(), found.clone());
        Ok(found)
    }

    /// Forget one entry now (after a subscription was replaced or removed).
    pub fn invalidate(&self, id: &str) {
        self.cache.remove(id);
    }
}

#[derive(Clone)]
pub struct WebhookSecretCache {
    store: Store,
    cache: Arc<Ttl<TenantId, Vec<WebhookSecret>>>,
}

impl WebhookSecretCache {
    pub fn new(store: Store) -> Self {
        WebhookSecretCache { store, cache: Arc::new(Ttl::new()) }
    }

    /// The tenant's parsed webhook secrets; `None` for an unknown or
    /// disabled tenant. Unparsable stored secrets are skipped (and logged).
    pub async fn get(&self, tenant: &TenantId) -> Result<Option<Arc<Vec<WebhookSecret>>>, StoreError> {
        if let Some(hit) = self.cache.get(tenant) {
            return Ok(hit);
        }
        let found = self.store.get_tenant(tenant).await?.filter(|t| t.enabled).map(|t| {
            let secrets = t
                .hellohq
                .webhook_secrets
                .iter()
                .filter_map(|s| match WebhookSecret::parse(s) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "ignoring an unusable stored webhook secret");
                        None
                    }
                })
                .collect();
            Arc::new(secrets)
        });
        self.cache.put(tenant.clone(), found.clone());
        Ok(found)
    }

    pub fn invalidate(&self, tenant: &TenantId) {
        self.cache.remove(tenant);
    }
}
