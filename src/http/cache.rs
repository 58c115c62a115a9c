//! Short-lived read-through caches for the ingress hot path, so a burst of
//! notifications costs no store round trip per item. Entries expire quickly
//! (a revoked subscription or rotated secret takes effect within the TTL);
//! misses are cached briefly too, so unknown ids cannot hammer the store.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashlink::LruCache;
use parking_lot::Mutex;

use crate::connectors::hellohq::webhook::WebhookSecret;
use crate::model::{Kind, MailboxId, TenantId};
use crate::store::{Store, StoreError};

/// A found entry is trusted this long (another process's change, e.g. the
/// scheduler deleting a subscription, takes effect within it; this
/// process's admin API invalidates at once).
const HIT_TTL: Duration = Duration::from_secs(30);
/// A miss ("no such subscription / tenant") is remembered this long: long
/// enough that a flood of unknown ids costs one store lookup each per
/// 5 s, short enough that a subscription stored just after its first
/// notification is found.
const MISS_TTL: Duration = Duration::from_secs(5);
/// Entries at most (hits and misses alike); beyond it the least recently
/// used one goes, never the whole cache.
const MAX_ENTRIES: usize = 100_000;

/// When an entry was cached, and the value (`None` = a cached miss).
type Entry<V> = (Instant, Option<Arc<V>>);

struct Ttl<K: Eq + Hash, V> {
    map: Mutex<LruCache<K, Entry<V>>>,
}

impl<K: Eq + Hash + Clone, V> Ttl<K, V> {
    fn new() -> Self {
        Ttl { map: Mutex::new(LruCache::new(MAX_ENTRIES)) }
    }

    /// `Some(entry)` when cached and fresh (the entry itself may be a miss).
    fn get<Q: Eq + Hash + ?Sized>(&self, k: &Q) -> Option<Option<Arc<V>>>
    where
        K: std::borrow::Borrow<Q>,
    {
        let mut map = self.map.lock();
        let (at, v) = map.get(k)?;
        let ttl = if v.is_some() { HIT_TTL } else { MISS_TTL };
        (at.elapsed() < ttl).then(|| v.clone())
    }

    fn put(&self, k: K, v: Option<Arc<V>>) {
        self.map.lock().insert(k, (Instant::now(), v));
    }

    fn remove<Q: Eq + Hash + ?Sized>(&self, k: &Q)
    where
        K: std::borrow::Borrow<Q>,
    {
        self.map.lock().remove(k);
    }

    /// Drops every entry whose value matches `pred` (misses included when `misses`).
    fn retain_not(&self, misses: bool, pred: impl Fn(&V) -> bool) {
        let mut map = self.map.lock();
        let doomed: Vec<K> =
            map.iter().filter(|(_, (_, v))| v.as_deref().map_or(misses, &pred)).map(|(k, _)| k.clone()).collect();
        for k in doomed {
            map.remove(&k);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
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

    /// Forget every subscription of `tenant` and every cached miss (the
    /// tenant was changed, disabled or deleted through the admin API).
    pub fn invalidate_tenant(&self, tenant: &TenantId) {
        self.cache.retain_not(true, |s| s.tenant == *tenant);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #20, finding 4: the cache was emptied whole at 100k entries, so a
    /// flood of unknown ids evicted every known subscription at once.
    #[test]
    fn a_full_cache_evicts_the_least_recently_used_entry_only() {
        let c: Ttl<String, u32> = Ttl::new();
        c.put("known".into(), Some(Arc::new(1)));
        for i in 0..MAX_ENTRIES + 10 {
            c.put(format!("unknown-{i}"), None);
            if i % 1000 == 0 {
                // Traffic for the known id keeps it recent.
                assert!(c.get("known").is_some());
            }
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        assert_eq!(c.get("known").flatten().as_deref(), Some(&1));
        assert!(c.get("unknown-0").is_none(), "the oldest miss was evicted");
        assert_eq!(c.get(&format!("unknown-{}", MAX_ENTRIES + 9)), Some(None), "a negative entry");
    }
}
