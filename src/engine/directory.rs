//! Who is whose contact: a snapshot of the helloHQ records that decide in
//! which mailbox and folder a contact belongs (users, companies with their
//! types and responsible users, projects with their teams and contact
//! persons, leads with their responsible user and contact persons).
//!
//! SPEC §5: a contact is in a user's "HQ Meine Kontakte" when the user is a
//! responsible person of its company, is in the team of a project the
//! contact is a contact person of, or is responsible for a lead the contact
//! is assigned to; otherwise in "HQ Globale Kontakte" (when that folder is
//! on); never both; never when its company is a prospect.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::connectors::hellohq::client::{HellohqClient, HqError, ListQuery};
use crate::connectors::hellohq::poll::{entity_for_database_object, ChangePoller};
use crate::connectors::hellohq::wire::SystemEventType;
use crate::connectors::hellohq::wire::{Company, LeadV1, ProjectV1, User};

use crate::queue::HqEntity;

use super::settings::ContactSettings;

/// Which of the two contact folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Folder {
    Global,
    Mine,
    /// One of the user's own contact folders: the user moved hqsync's copy
    /// there in Outlook. Never a rule's choice; the copy is synced where it
    /// is (immutable ids keep it the same item) and never moved back.
    Own,
}

impl Folder {
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Global => "global",
            Folder::Mine => "mine",
            Folder::Own => "own",
        }
    }

    pub fn parse(s: &str) -> Option<Folder> {
        match s {
            "global" => Some(Folder::Global),
            "mine" => Some(Folder::Mine),
            "own" => Some(Folder::Own),
            _ => None,
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Folder::Global => crate::connectors::graph::bootstrap::GLOBAL_CONTACTS_FOLDER,
            Folder::Mine => crate::connectors::graph::bootstrap::MY_CONTACTS_FOLDER,
            Folder::Own => "a folder of the user's own",
        }
    }
}

/// The snapshot.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub users: Vec<User>,
    pub companies: HashMap<i32, Company>,
    /// Trimmed, lower-cased company name → id (first one wins).
    pub company_by_name: HashMap<String, i32>,
    /// Contact person id → users for whom it is "mine" through a project or lead.
    pub mine_via: HashMap<i32, BTreeSet<i32>>,
    /// The projects (v1, with members and contact persons) and leads (with
    /// contact persons) `mine_via` is computed from, kept so that one
    /// changed row can be replaced without listing them all again.
    projects: HashMap<i32, ProjectV1>,
    leads: HashMap<i32, LeadV1>,
}

/// One row of the directory re-read after a change: its new state, or gone.
/// Short-lived (the rows of one poll or webhook), so the variants' sizes do
/// not matter.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum DirectoryRow {
    User(i32, Option<User>),
    Company(i32, Option<Company>),
    Project(i32, Option<ProjectV1>),
    Lead(i32, Option<LeadV1>),
}

/// The directory's entities: the rows [`Directory::read_row`] re-reads.
pub const DIRECTORY_ENTITIES: [HqEntity; 4] = [HqEntity::User, HqEntity::Company, HqEntity::Project, HqEntity::Lead];

/// Normalised company name for lookups.
pub fn name_key(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl Directory {
    /// Reads the snapshot (five listings, paged).
    pub async fn load(hq: &HellohqClient) -> Result<Directory, HqError> {
        let users = hq.list_users().await?;
        let companies: Vec<Company> = hq.list_v2("/v2/Companies", &ListQuery::default()).await?.items;
        let projects: Vec<ProjectV1> =
            hq.list_v1("/v1/Projects", &ListQuery::default().expand("Members,ContactPersons")).await?.items;
        let leads: Vec<LeadV1> = hq.list_v1("/v1/Leads", &ListQuery::default().expand("ContactPersons")).await?.items;
        Ok(Directory::build(users, companies, projects, leads))
    }

    pub fn build(users: Vec<User>, companies: Vec<Company>, projects: Vec<ProjectV1>, leads: Vec<LeadV1>) -> Directory {
        let mut d = Directory {
            users,
            companies: companies.into_iter().map(|c| (c.id, c)).collect(),
            projects: projects.into_iter().map(|p| (p.id, p)).collect(),
            leads: leads.into_iter().map(|l| (l.id, l)).collect(),
            ..Default::default()
        };
        d.reindex();
        d
    }

    /// Recomputes the lookups from the rows.
    fn reindex(&mut self) {
        self.company_by_name.clear();
        // Lowest id first, so "first one wins" does not depend on map order.
        let mut ids: Vec<i32> = self.companies.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(n) = self.companies[&id].name.as_deref() {
                self.company_by_name.entry(name_key(n)).or_insert(id);
            }
        }
        self.mine_via.clear();
        for p in self.projects.values() {
            let team: Vec<i32> = p.members.iter().filter_map(|m| m.user_id).collect();
            for cp in &p.contact_persons {
                self.mine_via.entry(cp.id).or_default().extend(team.iter().copied());
            }
        }
        for l in self.leads.values() {
            if let Some(u) = l.responsible_user_id {
                for cp in &l.contact_persons {
                    self.mine_via.entry(cp.id).or_default().insert(u);
                }
            }
        }
    }

    /// Re-reads one row of the directory by id (one request): `None` inside
    /// when helloHQ says it is gone; `Ok(None)` for an entity that is not
    /// part of the directory.
    pub async fn read_row(hq: &HellohqClient, entity: HqEntity, id: i32) -> Result<Option<DirectoryRow>, HqError> {
        fn gone<T>(r: Result<T, HqError>) -> Result<Option<T>, HqError> {
            match r {
                Ok(v) => Ok(Some(v)),
                Err(HqError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Ok(Some(match entity {
            HqEntity::User => DirectoryRow::User(id, gone(hq.get_user(id).await)?),
            HqEntity::Company => DirectoryRow::Company(id, gone(hq.get_company(id).await)?),
            HqEntity::Project => DirectoryRow::Project(id, gone(hq.get_project_v1(id).await)?),
            HqEntity::Lead => DirectoryRow::Lead(id, gone(hq.get_lead(id).await)?),
            _ => return Ok(None),
        }))
    }

    /// This snapshot with `rows` applied (each replacing or removing its
    /// row); the lookups are recomputed.
    pub fn patched(&self, rows: Vec<DirectoryRow>) -> Directory {
        let mut d = self.clone();
        for row in rows {
            match row {
                DirectoryRow::User(id, u) => {
                    d.users.retain(|x| x.id != id);
                    d.users.extend(u);
                }
                DirectoryRow::Company(id, c) => {
                    d.companies.remove(&id);
                    d.companies.extend(c.map(|c| (id, c)));
                }
                DirectoryRow::Project(id, p) => {
                    d.projects.remove(&id);
                    d.projects.extend(p.map(|p| (id, p)));
                }
                DirectoryRow::Lead(id, l) => {
                    d.leads.remove(&id);
                    d.leads.extend(l.map(|l| (id, l)));
                }
            }
        }
        d.users.sort_by_key(|u| u.id);
        d.reindex();
        d
    }

    /// The newest `updatedOn` among the rows (helloHQ's clock): where an
    /// incremental refresh of a snapshot just loaded starts.
    pub fn newest_stamp(&self) -> Option<DateTime<Utc>> {
        let users = self.users.iter().filter_map(|u| u.updated_on);
        let companies = self.companies.values().filter_map(|c| c.updated_on);
        let leads = self.leads.values().filter_map(|l| l.updated_on);
        users.chain(companies).chain(leads).max()
    }

    pub fn company(&self, id: Option<i32>) -> Option<&Company> {
        id.and_then(|i| self.companies.get(&i))
    }

    /// The helloHQ user whose work email is `mailbox`.
    pub fn user_by_mailbox(&self, mailbox: &str) -> Option<&User> {
        self.users.iter().find(|u| u.e_mail_work.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case(mailbox)))
    }

    /// Why a contact is not synchronised at all, if it is not.
    pub fn excluded(&self, company_id: Option<i32>, s: &ContactSettings) -> Option<String> {
        let c = self.company(company_id)?;
        c.has_type(&s.prospect_type).then(|| {
            format!(
                "its company {:?} is of type {:?}, whose contacts are never synchronised",
                c.name.as_deref().unwrap_or(""),
                s.prospect_type
            )
        })
    }

    /// The folder of contact `contact_id` (company `company_id`) in the
    /// mailbox of helloHQ user `user` (None: a mailbox without a user gets
    /// only global contacts); `None` when it does not belong there.
    pub fn folder_for(
        &self,
        contact_id: i32,
        company_id: Option<i32>,
        user: Option<i32>,
        s: &ContactSettings,
    ) -> Option<Folder> {
        if self.excluded(company_id, s).is_some() {
            return None;
        }
        let mine = user.is_some_and(|u| {
            self.company(company_id).is_some_and(|c| c.responsible_users.iter().any(|r| r.user_id == Some(u)))
                || self.mine_via.get(&contact_id).is_some_and(|set| set.contains(&u))
        });
        if mine {
            Some(Folder::Mine)
        } else if s.global_folder && !s.my_contacts_only {
            Some(Folder::Global)
        } else {
            None
        }
    }
}

/// How long a process keeps patching a tenant's snapshot before it lists
/// the directory whole again (the integrity pass). Whether a change of a
/// project's team or a lead's contacts moves the project's or lead's own
/// `updatedOn` is not published, so the patches may miss such a change
/// until then (a webhook of the project or lead patches it at once).
pub const FULL_RELOAD: Duration = Duration::from_secs(3600);

/// A tenant's snapshot kept current in one process (issue 18 item 7):
/// listed whole once (and again after [`FULL_RELOAD`]), otherwise brought up
/// to date from helloHQ's change poll, re-reading only the rows stamped or
/// deleted since. Its cost when nothing changed is four filtered listings
/// and one read of the deletions log, whatever the number of rows.
#[derive(Debug, Clone)]
pub struct LiveDirectory {
    pub dir: Arc<Directory>,
    /// When it was listed whole.
    pub loaded: Instant,
    /// When it was last known current (listed, refreshed or patched from
    /// the tenant's change poll).
    pub checked: Instant,
    /// The newest `updatedOn` applied (helloHQ's clock).
    since: Option<DateTime<Utc>>,
    /// When `since` last moved (this process's clock), and whether a
    /// refresh has read the overlap behind it a whole overlap later (then
    /// nothing stamped at or before it can still appear, and refreshes read
    /// only after it: see the change poll's settled watermark).
    since_moved: Instant,
    settled: bool,
    /// The newest deletions-log entry applied.
    deleted_since: Option<DateTime<Utc>>,
    /// Rows re-read at a stamp: the overlap lists them again, they are not
    /// read again.
    applied: HashMap<(HqEntity, i32), DateTime<Utc>>,
}

impl LiveDirectory {
    /// Lists the directory whole.
    pub async fn load(hq: &HellohqClient) -> Result<LiveDirectory, HqError> {
        let dir = Directory::load(hq).await?;
        let since = dir.newest_stamp();
        let now = Instant::now();
        Ok(LiveDirectory {
            dir: Arc::new(dir),
            loaded: now,
            checked: now,
            since,
            since_moved: now,
            settled: false,
            deleted_since: since,
            applied: HashMap::new(),
        })
    }

    /// Brings the snapshot up to date: per directory entity the rows stamped
    /// after the newest stamp applied (minus the change poll's overlap),
    /// each re-read by id, and the deletions logged since. A snapshot
    /// without any stamp (an empty directory) is listed whole instead.
    pub async fn refresh(&mut self, hq: &HellohqClient, overlap: std::time::Duration) -> Result<(), HqError> {
        let (Some(since), Some(deleted_since)) = (self.since, self.deleted_since) else {
            *self = LiveDirectory::load(hq).await?;
            return Ok(());
        };
        let started = Instant::now();
        let window = overlap;
        let overlap = chrono::Duration::from_std(overlap).unwrap_or_default();
        let poller = ChangePoller::new(hq).with_overlap(window);
        let mut rows = Vec::new();
        let mut newest = since;
        let floor = if self.settled { since } else { since - overlap };
        for entity in DIRECTORY_ENTITIES {
            for (id, stamp) in poller.changed_since(entity, floor).await? {
                if stamp.is_some() && self.applied.get(&(entity, id)) == stamp.as_ref() {
                    continue;
                }
                rows.extend(Directory::read_row(hq, entity, id).await?);
                if let Some(t) = stamp {
                    self.applied.insert((entity, id), t);
                    newest = newest.max(t);
                }
            }
        }
        let mut deleted_newest = deleted_since;
        for ev in hq.list_deleted(Some(deleted_since - overlap)).await? {
            if ev.kind.as_ref().is_some_and(|k| *k != SystemEventType::EntityDeleted) {
                continue;
            }
            let entity = ev.database_object.as_deref().and_then(entity_for_database_object);
            let (Some(entity), Some(id)) = (entity, ev.entity_id.and_then(|i| i32::try_from(i).ok())) else { continue };
            if let Some(row) = DirectoryRow::gone(entity, id) {
                rows.push(row);
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
        self.apply(rows);
        Ok(())
    }

    /// Applies rows read elsewhere (the tenant pass's change poll, a
    /// webhook's re-read); nothing else changes.
    pub fn apply(&mut self, rows: Vec<DirectoryRow>) {
        if !rows.is_empty() {
            self.dir = Arc::new(self.dir.patched(rows));
        }
        self.checked = Instant::now();
    }
}

impl DirectoryRow {
    /// The row of a deleted `entity` `id`, if the directory holds such rows.
    pub fn gone(entity: HqEntity, id: i32) -> Option<DirectoryRow> {
        Some(match entity {
            HqEntity::User => DirectoryRow::User(id, None),
            HqEntity::Company => DirectoryRow::Company(id, None),
            HqEntity::Project => DirectoryRow::Project(id, None),
            HqEntity::Lead => DirectoryRow::Lead(id, None),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::hellohq::wire::{CompanyTypeLink, ContactPersonV1, ProjectMemberV1, ResponsibleUser};

    fn company(id: i32, name: &str, ty: &str, resp: &[i32]) -> Company {
        Company {
            id,
            name: Some(name.into()),
            company_types: vec![CompanyTypeLink { name: Some(ty.into()), ..Default::default() }],
            responsible_users: resp
                .iter()
                .map(|u| ResponsibleUser { user_id: Some(*u), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn dir() -> Directory {
        let project = ProjectV1 {
            id: 1,
            members: vec![ProjectMemberV1 { user_id: Some(3), ..Default::default() }],
            contact_persons: vec![ContactPersonV1 { id: 20, ..Default::default() }],
            ..Default::default()
        };
        let lead = LeadV1 {
            id: 1,
            responsible_user_id: Some(4),
            contact_persons: vec![ContactPersonV1 { id: 30, ..Default::default() }],
            ..Default::default()
        };
        Directory::build(
            vec![],
            vec![company(1, "Nordlicht", "Kunde", &[1]), company(2, "Zukunft", "Interessent", &[1])],
            vec![project],
            vec![lead],
        )
    }

    #[test]
    fn folders_follow_responsibility_projects_and_leads() {
        let d = dir();
        let s = ContactSettings::default();
        assert_eq!(d.folder_for(10, Some(1), Some(1), &s), Some(Folder::Mine), "responsible for the company");
        assert_eq!(d.folder_for(10, Some(1), Some(2), &s), Some(Folder::Global));
        assert_eq!(d.folder_for(20, Some(1), Some(3), &s), Some(Folder::Mine), "in the project team");
        assert_eq!(d.folder_for(30, Some(1), Some(4), &s), Some(Folder::Mine), "responsible for the lead");
        assert_eq!(d.folder_for(10, Some(2), Some(1), &s), None, "prospects never");
        assert_eq!(d.folder_for(10, Some(1), None, &s), Some(Folder::Global));
    }

    #[test]
    fn global_folder_off_and_my_contacts_only() {
        let d = dir();
        let off = ContactSettings { global_folder: false, ..Default::default() };
        assert_eq!(d.folder_for(10, Some(1), Some(2), &off), None);
        assert_eq!(d.folder_for(10, Some(1), Some(1), &off), Some(Folder::Mine));
        let mine = ContactSettings { my_contacts_only: true, ..Default::default() };
        assert_eq!(d.folder_for(10, Some(1), Some(2), &mine), None);
    }
}
