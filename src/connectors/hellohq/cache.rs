//! What a tenant's helloHQ clients remember between hints in this process
//! (issue 18 item 7): the contact persons (listed once, then kept current
//! from every read and write of one, which the change poll's hints cause)
//! and the rooms seen in task assignments (no endpoint lists resources, C5).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use super::wire::{ContactPerson, Resource};

/// One tenant's cache. Shared by the tenant's clients through [`TenantCache::for_tenant`].
#[derive(Debug, Default)]
pub struct TenantCache {
    contacts: Mutex<Option<BTreeMap<i32, ContactPerson>>>,
    rooms: Mutex<BTreeMap<i32, Resource>>,
}

fn registry() -> &'static Mutex<HashMap<String, Arc<TenantCache>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<TenantCache>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl TenantCache {
    /// The cache of `tenant` in this process.
    pub fn for_tenant(tenant: &str) -> Arc<TenantCache> {
        registry().lock().unwrap_or_else(|p| p.into_inner()).entry(tenant.to_string()).or_default().clone()
    }

    /// Every contact person, if listed since this process started.
    pub fn contacts(&self) -> Option<Vec<ContactPerson>> {
        let c = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref().map(|m| m.values().cloned().collect())
    }

    pub fn set_contacts(&self, list: &[ContactPerson]) {
        let map = list.iter().map(|c| (c.id, c.clone())).collect();
        *self.contacts.lock().unwrap_or_else(|p| p.into_inner()) = Some(map);
    }

    /// A contact person as just read or written (kept only once listed).
    pub fn put_contact(&self, c: &ContactPerson) {
        if let Some(m) = self.contacts.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            m.insert(c.id, c.clone());
        }
    }

    pub fn remove_contact(&self, id: i32) {
        if let Some(m) = self.contacts.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            m.remove(&id);
        }
    }

    /// Forgets the contact list (a fresh one is listed on next use).
    pub fn invalidate_contacts(&self) {
        *self.contacts.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn put_room(&self, r: &Resource) {
        if r.id > 0 {
            self.rooms.lock().unwrap_or_else(|p| p.into_inner()).insert(r.id, r.clone());
        }
    }

    /// The rooms seen in assignments so far.
    pub fn rooms(&self) -> Vec<Resource> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}
