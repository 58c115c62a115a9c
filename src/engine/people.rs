//! The tenant's helloHQ contact persons as one process keeps them for the
//! periodic contact passes (issue 18 item 7: "contact persons ... refreshed
//! from the change poll instead of re-listed"; issue 22: idle cost that does
//! not grow with the data).
//!
//! Listed whole once (v2 for the fields, v1 with `$expand=Addresses` for the
//! private address, C3), and again after [`FULL_RELOAD`] as the integrity
//! pass. Otherwise a pass brings the snapshot up to date first: the contact
//! persons stamped since the newest `updatedOn` applied (less the change
//! poll's overlap until it settled, as the tenant's change poll reads them),
//! each re-read by id on both versions, and the deletions logged since.
//! When nothing changed that costs one filtered listing and one read of the
//! deletions log, however many contact persons the tenant has; a listing
//! costs two pages per 1,000.
//!
//! The snapshot is as good as a listing read when its refresh began
//! ([`People::as_of`]): a pass treats links written after that instant as
//! newer than its reads and reads both sides again, exactly as it does for a
//! link written during its own listing. A contact person missing from the
//! snapshot is confirmed by a read before anything is deleted (the pass does
//! so for a listing too).
//!
//! Not published: whether an address edit moves the contact person's
//! `updatedOn` (it does in the simulator, where the address is part of the
//! row). Should it not, such an edit waits for the contact person's webhook,
//! its next other edit, or the integrity pass (docs/hellohq-api.md).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::connectors::hellohq::client::{HellohqClient, HqError, ListQuery};
use crate::connectors::hellohq::poll::{entity_for_database_object, ChangePoller};
use crate::connectors::hellohq::wire::{ContactPerson, ContactPersonV1, SystemEventType};
use crate::queue::HqEntity;

/// How long a process keeps refreshing a tenant's contact persons before it
/// lists them whole again (the integrity pass), as for the directory.
pub const FULL_RELOAD: Duration = super::directory::FULL_RELOAD;

/// The contact persons, both versions.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    pub v2: BTreeMap<i32, ContactPerson>,
    /// The v1 view with addresses.
    pub v1: HashMap<i32, ContactPersonV1>,
}

/// The contact persons as of one instant.
#[derive(Debug, Default, Clone)]
pub struct People {
    pub rows: Arc<Rows>,
    /// When the reads that made this snapshot began (this process's clock).
    pub as_of: DateTime<Utc>,
}

/// One tenant's [`People`] kept current in one process.
#[derive(Debug)]
pub struct LivePeople {
    pub people: People,
    loaded: Instant,
    /// The newest `updatedOn` applied (helloHQ's clock).
    since: Option<DateTime<Utc>>,
    /// When `since` last moved, and whether a refresh has read the overlap
    /// behind it a whole overlap later (the change poll's settled watermark).
    since_moved: Instant,
    settled: bool,
    /// The newest deletions-log entry applied.
    deleted_since: Option<DateTime<Utc>>,
    /// Rows re-read at a stamp: the overlap lists them again, they are not
    /// read again.
    applied: HashMap<i32, DateTime<Utc>>,
}

/// A tenant's slot in the engine's caches: one refresh at a time.
pub type PeopleSlot = tokio::sync::Mutex<Option<LivePeople>>;

impl LivePeople {
    /// Lists every contact person (both versions).
    pub async fn load(hq: &HellohqClient) -> Result<LivePeople, HqError> {
        let as_of = Utc::now();
        let v2: Vec<ContactPerson> = hq.list_v2("/v2/ContactPersons", &ListQuery::default()).await?.items;
        let v1: Vec<ContactPersonV1> =
            hq.list_v1("/v1/ContactPersons", &ListQuery::default().expand("Addresses")).await?.items;
        let since = v2.iter().filter_map(|c| c.updated_on).max();
        // The rows listed are current at their stamps: the next refresh's
        // overlap lists them again but does not re-read them.
        let applied = v2.iter().filter_map(|c| Some((c.id, c.updated_on?))).collect();
        let now = Instant::now();
        Ok(LivePeople {
            people: People {
                rows: Arc::new(Rows {
                    v2: v2.into_iter().map(|c| (c.id, c)).collect(),
                    v1: v1.into_iter().map(|c| (c.id, c)).collect(),
                }),
                as_of,
            },
            loaded: now,
            since,
            since_moved: now,
            settled: false,
            deleted_since: since,
            applied,
        })
    }

    /// The snapshot for a pass: `slot`'s, brought up to date first (every
    /// pass: it must see what a listing would), listed whole when the slot
    /// is empty, after [`FULL_RELOAD`], or when `whole` (a dry run shows
    /// what a listing shows).
    pub async fn current(
        slot: &PeopleSlot,
        hq: &HellohqClient,
        overlap: Duration,
        whole: bool,
    ) -> Result<People, HqError> {
        let mut kept = slot.lock().await;
        match kept.as_mut() {
            Some(l) if !whole && l.loaded.elapsed() < FULL_RELOAD => {
                if let Err(e) = l.refresh(hq, overlap).await {
                    // Half applied or not: the next pass lists whole.
                    *kept = None;
                    return Err(e);
                }
            }
            _ => *kept = Some(LivePeople::load(hq).await?),
        }
        Ok(kept.as_ref().map(|l| l.people.clone()).unwrap_or_default())
    }

    /// Brings the snapshot up to date (see the module's paragraph). A
    /// snapshot without any stamp (no contact persons yet) is listed whole.
    pub async fn refresh(&mut self, hq: &HellohqClient, overlap: Duration) -> Result<(), HqError> {
        let (Some(since), Some(deleted_since)) = (self.since, self.deleted_since) else {
            *self = LivePeople::load(hq).await?;
            return Ok(());
        };
        let started = Instant::now();
        let as_of = Utc::now();
        let window = overlap;
        let overlap = chrono::Duration::from_std(overlap).unwrap_or_default();
        let floor = if self.settled { since } else { since - overlap };
        let mut changed: Vec<(i32, Option<ContactPerson>, Option<ContactPersonV1>)> = Vec::new();
        let mut newest = since;
        let poller = ChangePoller::new(hq).with_overlap(window);
        for (id, stamp) in poller.changed_since(HqEntity::ContactPerson, floor).await? {
            if stamp.is_some() && self.applied.get(&id) == stamp.as_ref() {
                continue;
            }
            let v2 = match hq.get_contact_person(id).await {
                Ok(c) => Some(c),
                Err(HqError::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            let v1 = match v2 {
                Some(_) => match hq.get_contact_person_v1(id).await {
                    Ok(c) => Some(c),
                    Err(HqError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            // Gone between the two reads: gone.
            let v2 = v2.filter(|_| v1.is_some());
            changed.push((id, v2, v1));
            if let Some(t) = stamp {
                self.applied.insert(id, t);
                newest = newest.max(t);
            }
        }
        let mut gone = Vec::new();
        let mut deleted_newest = deleted_since;
        for ev in hq.list_deleted(Some(deleted_since - overlap)).await? {
            if ev.kind.as_ref().is_some_and(|k| *k != SystemEventType::EntityDeleted) {
                continue;
            }
            let entity = ev.database_object.as_deref().and_then(entity_for_database_object);
            if entity == Some(HqEntity::ContactPerson) {
                if let Some(id) = ev.entity_id.and_then(|i| i32::try_from(i).ok()) {
                    gone.push(id);
                }
            }
            deleted_newest = deleted_newest.max(ev.created_on.unwrap_or(deleted_newest));
        }
        self.applied.retain(|_, t| *t > newest - overlap);
        if newest > since {
            self.since_moved = started;
            self.settled = false;
        } else if started.duration_since(self.since_moved) >= window {
            self.settled = true;
        }
        self.since = Some(newest);
        self.deleted_since = Some(deleted_newest);
        if !changed.is_empty() || !gone.is_empty() {
            let rows = Arc::make_mut(&mut self.people.rows);
            for (id, a, b) in changed {
                match (a, b) {
                    (Some(a), Some(b)) => {
                        rows.v2.insert(id, a);
                        rows.v1.insert(id, b);
                    }
                    _ => {
                        rows.v2.remove(&id);
                        rows.v1.remove(&id);
                    }
                }
            }
            // A deletion logged for a row re-read alive above (an id cannot
            // come back in helloHQ) still removes it: the log is newer.
            for id in gone {
                rows.v2.remove(&id);
                rows.v1.remove(&id);
            }
        }
        self.people.as_of = as_of;
        Ok(())
    }
}
