//! Contacts (SPEC §5), both ways, for every mailbox of a tenant.
//!
//! Three entry points share one per-link step ([`Contacts::settle`]):
//! - a helloHQ contact changed → every mailbox in scope gets its copy
//!   created, updated, moved between the two folders, or removed;
//! - an Exchange contact changed → helloHQ is updated (and, through
//!   helloHQ's own webhook, every other mailbox);
//! - a pass over one mailbox (initial sync, resync, the periodic safety
//!   net): both sides listed, existing Exchange contacts matched before
//!   anything is created, deletions held when there are too many.
//!
//! Echo suppression: each link keeps the fingerprint of the canonical
//! record last seen on each side; a read that hashes the same is our own
//! write coming back (or a duplicate) and changes nothing. Mirrored
//! Exchange contacts carry their helloHQ id as an extended property, so a
//! replayed create or a notification that overtakes the link row finds
//! the first copy instead of making a second.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::connectors::graph::client::seg;
use crate::connectors::graph::{ContactFolders, GraphClient, GraphError};
use crate::connectors::hellohq::client::{HellohqClient, HqError, ListQuery};
use crate::connectors::hellohq::wire::{CompanyPost, CompanyTypeRef, ContactPerson, ContactPersonV1, SalutationForm};
use crate::model::contact::{self, Contact, FIELDS};
use crate::model::{Direction, Kind, MailboxId, TenantId};
use crate::store::{Link, Mailbox, Store};

use super::directory::{name_key, Directory, Folder};
use super::merge::{self, FieldRule, Flow, Side};
use super::settings::TenantSettings;
use super::shared::{
    graph_err, graph_modified, graph_version, hq_deleted, hq_err, link_holds, mark_hq_deleted, parse_hq_id,
};
use super::{fingerprint, EngineError};

/// Field rules for contacts: everything both ways, except the company,
/// which helloHQ cannot change on an existing contact (`ContactPersonPut`
/// has no `companyId`, A10): it flows only from helloHQ once linked.
pub const RULES: [FieldRule; 11] = [
    FieldRule::both("given_name"),
    FieldRule::both("surname"),
    FieldRule::both("job_title"),
    FieldRule { name: "company_name", flow: Flow::FromHellohq },
    FieldRule::both("business_phone"),
    FieldRule::both("mobile_phone"),
    FieldRule::both("fax"),
    FieldRule::both("email"),
    FieldRule::both("home_address"),
    FieldRule::both("business_address"),
    FieldRule::both("website"),
];

const LINKED: &str = "linked";
/// Cursor (scope = mailbox) of the last completed contact pass.
pub const LAST_PASS: &str = "contact.last_pass";
/// A Graph create is under way (or crashed): look for the tagged copy first.
const PENDING: &str = "pending";

/// A helloHQ contact as read: the canonical record plus what decides scope.
#[derive(Debug, Clone)]
pub struct HqContact {
    pub id: i32,
    pub company_id: Option<i32>,
    pub contact: Contact,
    pub updated: Option<DateTime<Utc>>,
}

/// What a pass would do (or did) in one mailbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub mailbox: String,
    pub create_in_exchange: Vec<String>,
    pub create_in_hellohq: Vec<String>,
    pub update_exchange: Vec<String>,
    pub update_hellohq: Vec<String>,
    pub move_folder: Vec<String>,
    pub delete_in_exchange: Vec<String>,
    pub delete_in_hellohq: Vec<String>,
    pub matched: Vec<String>,
    pub unchanged: usize,
    /// Set when the deletions were held for approval.
    pub held: Option<String>,
}

impl Plan {
    /// Records what a merge of `what` would write, in a dry run.
    pub fn record_merge(&mut self, what: &str, m: &merge::Merge) {
        if !m.to_exchange.is_empty() {
            self.update_exchange.push(format!("{what}: {}", m.to_exchange.join(", ")));
        }
        if !m.to_hellohq.is_empty() {
            self.update_hellohq.push(format!("{what}: {}", m.to_hellohq.join(", ")));
        }
        if m.is_noop() {
            self.unchanged += 1;
        }
    }

    pub fn writes(&self) -> usize {
        self.create_in_exchange.len()
            + self.create_in_hellohq.len()
            + self.update_exchange.len()
            + self.update_hellohq.len()
            + self.move_folder.len()
            + self.delete_in_exchange.len()
            + self.delete_in_hellohq.len()
    }
}

/// One tenant's contact sync, for the duration of one hint.
pub struct Contacts<'a> {
    pub store: &'a Store,
    pub tenant: &'a TenantId,
    pub settings: &'a TenantSettings,
    pub graph: &'a GraphClient,
    pub hq: &'a HellohqClient,
    pub hint_id: Option<uuid::Uuid>,
    /// The tenant's Exchange answers `412` to a stale `If-Match` (its
    /// connection test's probe, `GraphCapabilities::if_match_enforced`):
    /// only then may a merge PATCH on the version its link holds without
    /// reading the contact first.
    pub if_match_enforced: bool,
    /// The tenant's contact persons as this process keeps them for passes
    /// ([`super::people`]), and how far helloHQ's change poll reaches back.
    pub people: &'a super::people::PeopleSlot,
    pub poll_overlap: std::time::Duration,
}

fn summary(c: &Contact) -> String {
    let name = c.display_name();
    format!("contact {}", if name.is_empty() { "(no name)".to_string() } else { name })
}

/// The Exchange side of a merge.
enum ExSide {
    /// Read from Graph just now.
    Read(Value),
    /// Not read: the link's version held exactly the base, so the base
    /// stands for it and a write is conditional on that version.
    Held { contact: Box<Contact>, version: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Merged {
    Done,
    /// The held version was stale (`412`); nothing was written.
    Stale,
}

/// What a claim notes of the contact its create is made from: just what
/// [`Contacts::find_created`] needs to find that create's helloHQ contact.
fn made_from(c: &Contact) -> Contact {
    Contact {
        given_name: c.given_name.clone(),
        surname: c.surname.clone(),
        email: c.email.clone(),
        ..Default::default()
    }
}

/// A create claim's note: the contact it is made from, and when it began.
fn claim_note(l: &Link) -> (Option<Contact>, Option<DateTime<Utc>>) {
    let note = l.base.get("note");
    let made_from = note.and_then(|n| serde_json::from_value(n.get("contact")?.clone()).ok());
    let since = note.and_then(|n| serde_json::from_value(n.get("since")?.clone()).ok());
    (made_from, since)
}

/// What the link knows Exchange holds, when it knows it whole: a linked
/// pair whose Exchange version was seen holding exactly the base.
fn held_exchange(l: &Link) -> Option<ExSide> {
    let version = l.graph_version.clone().filter(|_| l.state == LINKED)?;
    let base: Contact = serde_json::from_value(l.base.clone()).ok()?;
    (l.graph_fingerprint.as_deref() == Some(fingerprint(&base).as_str()))
        .then_some(ExSide::Held { contact: Box::new(base), version })
}

/// A created contact as Exchange holds it: Graph answers a POST without
/// the extended properties (the fax, the helloHQ tag), so those written are
/// put back; else the link's Exchange fingerprint would miss the fax.
fn with_written_properties(mut created: Value, body: &Value) -> Value {
    if created.get("singleValueExtendedProperties").is_none() {
        if let Some(props) = body.get("singleValueExtendedProperties") {
            created["singleValueExtendedProperties"] = props.clone();
        }
    }
    created
}

impl<'a> Contacts<'a> {
    fn contacts_path(mailbox: &str, folder_id: &str) -> String {
        format!("/users/{}/contactFolders/{}/contacts", seg(mailbox), seg(folder_id))
    }

    /// The id of one of hqsync's folders (a rule's choice: never [`Folder::Own`],
    /// which stands for "the folder the user put it in" and is never written into).
    fn folder_id(folders: &ContactFolders, f: Folder) -> &str {
        match f {
            Folder::Global => &folders.global_id,
            Folder::Mine | Folder::Own => &folders.mine_id,
        }
    }

    async fn journal(
        &self,
        mailbox: Option<&MailboxId>,
        action: &str,
        hq_id: Option<String>,
        graph_id: Option<String>,
        detail: Value,
    ) {
        let j = super::shared::Journal {
            store: self.store,
            tenant: self.tenant,
            kind: Kind::Contact,
            hint_id: self.hint_id,
        };
        j.record(mailbox, action, hq_id, graph_id, detail).await
    }

    /// Mailboxes that sync now: active, or the pilot mailbox.
    pub async fn mailboxes(&self) -> Result<Vec<Mailbox>, EngineError> {
        super::shared::syncing_mailboxes(self.store, self.tenant, self.graph).await
    }

    fn user_of(&self, dir: &Directory, m: &Mailbox) -> Option<i32> {
        m.hq_user_id.as_deref().and_then(parse_hq_id).or_else(|| dir.user_by_mailbox(m.id.as_str()).map(|u| u.id))
    }

    // ---- reading ---------------------------------------------------------------

    /// Reads one helloHQ contact; `Ok(None)` = it does not exist (404).
    pub async fn read_hq(&self, dir: &Directory, id: i32) -> Result<Option<HqContact>, EngineError> {
        let gone = || async { mark_hq_deleted(self.store, self.tenant, Kind::Contact, &id.to_string()).await };
        let v2 = match self.hq.get_contact_person(id).await {
            Ok(c) => c,
            Err(HqError::NotFound { .. }) => return gone().await.map(|_| None),
            Err(e) => return Err(hq_err(e)),
        };
        let v1 = match self.hq.get_contact_person_v1(id).await {
            Ok(c) => Some(c),
            Err(HqError::NotFound { .. }) => return gone().await.map(|_| None),
            Err(e) => return Err(hq_err(e)),
        };
        let company_id = v2.company_id.or(v1.as_ref().and_then(|c| c.company_id));
        Ok(Some(self.hq_contact(dir, &v2, v1.as_ref(), company_id)))
    }

    fn hq_contact(
        &self,
        dir: &Directory,
        v2: &ContactPerson,
        v1: Option<&ContactPersonV1>,
        company_id: Option<i32>,
    ) -> HqContact {
        let company_name = dir.company(company_id).and_then(|c| c.name.clone());
        HqContact {
            id: v2.id,
            company_id,
            contact: contact::from_hq(v2, v1, company_name.as_deref()),
            updated: v2.updated_on,
        }
    }

    /// Every helloHQ contact (v2 for the fields, v1 for the addresses), as
    /// of the instant returned: the tenant's snapshot brought up to date
    /// from helloHQ's change poll ([`super::people`]), listed whole only
    /// when this process has none, for its hourly integrity pass, or when
    /// `whole`. Links written after that instant are newer than these reads.
    pub async fn list_hq(&self, dir: &Directory, whole: bool) -> Result<(Vec<HqContact>, DateTime<Utc>), EngineError> {
        let people =
            super::people::LivePeople::current(self.people, self.hq, self.poll_overlap, whole).await.map_err(hq_err)?;
        let rows = &people.rows;
        let list = rows
            .v2
            .values()
            .map(|c| {
                let v1 = rows.v1.get(&c.id);
                let company = c.company_id.or(v1.and_then(|x| x.company_id));
                self.hq_contact(dir, c, v1, company)
            })
            .collect();
        Ok((list, people.as_of))
    }

    async fn read_graph(&self, mailbox: &str, id: &str) -> Result<Option<Value>, EngineError> {
        let path = format!("/users/{}/contacts/{}?{}", seg(mailbox), seg(id), contact::graph_expand());
        match self.graph.get(&path).await {
            Ok(v) => Ok(Some(v)),
            Err(GraphError::NotFound { .. }) => Ok(None),
            Err(e) => Err(graph_err(e)),
        }
    }

    async fn list_graph(&self, mailbox: &str, folder_id: &str) -> Result<Vec<Value>, EngineError> {
        let path = format!("{}?{}", Self::contacts_path(mailbox, folder_id), contact::graph_expand());
        self.graph.list_all(&path).await.map_err(graph_err)
    }

    async fn folders(&self, mailbox: &str) -> Result<ContactFolders, EngineError> {
        self.graph.ensure_contact_folders(self.store, self.tenant, mailbox).await.map_err(graph_err)
    }

    // ---- writing Exchange --------------------------------------------------------

    /// Creates the Exchange copy of `hq` in `folder`, tagged with its
    /// helloHQ id; with a pending link (an earlier attempt may have
    /// written), looks for the tagged copy first. The flag tells a copy
    /// found that way (written from an older read, maybe) from a new one.
    async fn create_in_exchange(
        &self,
        m: &Mailbox,
        folders: &ContactFolders,
        folder: Folder,
        hq: &HqContact,
        pending: Option<&Link>,
    ) -> Result<Option<(Value, bool)>, EngineError> {
        super::no_create_in_flight(self.store, self.tenant, &m.id, Kind::Contact).await?;
        let fid = Self::folder_id(folders, folder);
        let hq_id = hq.id.to_string();
        let claim = Link {
            tenant: self.tenant.clone(),
            mailbox: m.id.clone(),
            kind: Kind::Contact,
            hq_id: Some(hq_id.clone()),
            graph_id: None,
            folder: Some(folder.as_str().into()),
            base: json!({}),
            hq_fingerprint: None,
            graph_fingerprint: None,
            hq_version: None,
            graph_version: None,
            state: PENDING.into(),
            updated_at: Utc::now(),
        };
        // Claim the create atomically (the same helloHQ contact may be
        // handled twice at once: a duplicated webhook, a webhook beside a
        // pass); an unfinished claim may have created the copy already.
        // A claim in hand is resumed only once taken over atomically.
        let live_claim = match pending {
            Some(p) => super::claimed_elsewhere(p) || !super::take_over(self.store, p, self.hint_id).await?,
            None => match super::claim_create(self.store, &claim, self.hint_id).await? {
                super::Claim::Mine => return self.post_copy(m, fid, hq).await.map(|v| Some((v, false))),
                super::Claim::Done(_) => return Ok(None),
                super::Claim::Busy => true,
                super::Claim::Stale(_) => false,
            },
        };
        let filter = format!(
            "$filter=singleValueExtendedProperties/any(ep:%20ep/id%20eq%20'{}'%20and%20ep/value%20eq%20'{}')&{}",
            contact::HQ_ID_PROPERTY_ID.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D"),
            hq_id,
            contact::graph_expand()
        );
        let found = self
            .graph
            .list_all(&format!("{}?{}", Self::contacts_path(m.id.as_str(), fid), filter))
            .await
            .map_err(graph_err)?;
        if let Some(existing) = found.into_iter().next() {
            return Ok(Some((existing, true)));
        }
        if live_claim {
            return Err(super::busy("the Exchange copy of this contact"));
        }
        // The holder is gone before posting; the claim is this run's now.
        self.post_copy(m, fid, hq).await.map(|v| Some((v, false)))
    }

    /// POSTs the Exchange copy of `hq`, tagged with its helloHQ id.
    async fn post_copy(&self, m: &Mailbox, fid: &str, hq: &HqContact) -> Result<Value, EngineError> {
        let hq_id = hq.id.to_string();
        let body = contact::to_graph(&hq.contact, None, Some(&hq_id));
        let created = self.graph.create_contact(m.id.as_str(), fid, &body).await.map_err(graph_err)?;
        Ok(with_written_properties(created, &body))
    }

    /// The complete link of `graph` to helloHQ contact `hq_id` with `base`.
    fn link_row(
        &self,
        m: &Mailbox,
        hq_id: Option<String>,
        graph: &Value,
        folder: Folder,
        base: &Contact,
        hq_fp: Option<String>,
    ) -> Link {
        Link {
            tenant: self.tenant.clone(),
            mailbox: m.id.clone(),
            kind: Kind::Contact,
            hq_id,
            graph_id: graph.get("id").and_then(Value::as_str).map(str::to_string),
            folder: Some(folder.as_str().into()),
            base: serde_json::to_value(base).unwrap_or_default(),
            hq_fingerprint: hq_fp,
            graph_fingerprint: Some(fingerprint(&contact::from_graph(graph))),
            hq_version: None,
            graph_version: graph_version(graph),
            state: LINKED.into(),
            updated_at: Utc::now(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn save_link(
        &self,
        m: &Mailbox,
        hq_id: Option<String>,
        graph: &Value,
        folder: Folder,
        base: &Contact,
        hq_fp: Option<String>,
        prior: Option<&Link>,
    ) -> Result<(), EngineError> {
        let link = self.link_row(m, hq_id.or_else(|| prior.and_then(|l| l.hq_id.clone())), graph, folder, base, hq_fp);
        // A link found by graph id (adopted) but now known by hq id: drop the old half.
        if let Some(p) = prior {
            if p.graph_id.is_some() && p.graph_id != link.graph_id {
                self.store
                    .delete_link(self.tenant, &m.id, Kind::Contact, p.hq_id.as_deref(), p.graph_id.as_deref())
                    .await?;
            }
        }
        self.store.upsert_link(&link).await?;
        Ok(())
    }

    // ---- the per-link step ---------------------------------------------------------

    /// Brings one (helloHQ contact, mailbox) pair in step. `hq` is the
    /// helloHQ record (None: deleted there), `desired` its folder in this
    /// mailbox (None: it does not belong here), `link` the existing pairing,
    /// `ex` the Exchange item when already read (None: read it if needed).
    /// With `plan`, nothing is written: the intended action is recorded.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle(
        &self,
        dir: &Directory,
        m: &Mailbox,
        folders: &ContactFolders,
        hq: Option<&HqContact>,
        desired: Option<Folder>,
        link: Option<Link>,
        ex: Option<Value>,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let direction = self.settings.direction(m, Kind::Contact);
        let to_ex = matches!(direction, Direction::Both | Direction::ToExchange);
        let mb = Some(&m.id);
        match (hq, desired, link) {
            // Not in this mailbox and never was.
            (_, None, None) => Ok(()),
            // A claim of a create toward helloHQ (no helloHQ id yet): the
            // Exchange item is the user's own, never a copy to remove here.
            (_, _, Some(l)) if l.hq_id.is_none() => Ok(()),
            // Out of scope here, while the user keeps the copy in a folder of
            // their own: it is theirs now; the link goes, the contact stays.
            (Some(h), None, Some(l)) if l.folder.as_deref() == Some(Folder::Own.as_str()) => {
                if let Some(p) = plan.as_deref_mut() {
                    p.unchanged += 1;
                    return Ok(());
                }
                self.store
                    .delete_link(self.tenant, &m.id, Kind::Contact, l.hq_id.as_deref(), l.graph_id.as_deref())
                    .await?;
                self.journal(mb, "skipped", l.hq_id.clone(), l.graph_id.clone(), json!({"side": "exchange", "summary": summary(&h.contact), "reason": "no longer in this mailbox's scope; the copy the user moved into a folder of their own stays there, no longer synced"})).await;
                Ok(())
            }
            // Gone from helloHQ or out of scope here: remove the copy.
            (_, None, Some(l)) => {
                let what = hq
                    .map(|h| summary(&h.contact))
                    .unwrap_or_else(|| format!("contact #{}", l.hq_id.as_deref().unwrap_or("?")));
                if let Some(p) = plan.as_deref_mut() {
                    p.delete_in_exchange.push(what);
                    return Ok(());
                }
                if let (true, Some(gid)) = (to_ex, l.graph_id.as_deref()) {
                    match self.graph.delete(&format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(gid)), None).await
                    {
                        Ok(()) | Err(GraphError::NotFound { .. }) => {}
                        Err(e) => return Err(graph_err(e)),
                    }
                    let reason = if hq.is_none() { "deleted in helloHQ" } else { "no longer in this mailbox's scope" };
                    self.journal(mb, "deleted", l.hq_id.clone(), l.graph_id.clone(), json!({"side": "exchange", "summary": what, "reason": reason, "folder": l.folder.as_deref().and_then(Folder::parse).map(Folder::display_name)})).await;
                }
                self.store
                    .delete_link(self.tenant, &m.id, Kind::Contact, l.hq_id.as_deref(), l.graph_id.as_deref())
                    .await?;
                Ok(())
            }
            (None, Some(_), _) => Ok(()),
            // New here: create the copy.
            (Some(h), Some(folder), None) => {
                if !to_ex {
                    return Ok(());
                }
                if let Some(p) = plan.as_deref_mut() {
                    p.create_in_exchange.push(format!("{} ({})", summary(&h.contact), folder.display_name()));
                    return Ok(());
                }
                self.create_and_link(dir, m, folders, folder, h, None).await
            }
            (Some(h), Some(folder), Some(l)) => {
                if l.state == PENDING || l.graph_id.is_none() {
                    if !to_ex {
                        return Ok(());
                    }
                    if let Some(p) = plan.as_deref_mut() {
                        p.create_in_exchange.push(format!("{} ({})", summary(&h.contact), folder.display_name()));
                        return Ok(());
                    }
                    return self.create_and_link(dir, m, folders, folder, h, Some(&l)).await;
                }
                let current = l.folder.as_deref().and_then(Folder::parse);
                // The user filed the copy in a folder of their own: synced there, never moved back.
                if current != Some(folder) && current != Some(Folder::Own) && to_ex {
                    if let Some(p) = plan.as_deref_mut() {
                        p.move_folder.push(format!("{} → {}", summary(&h.contact), folder.display_name()));
                        return Ok(());
                    }
                    return self.move_folder(m, folders, folder, h, &l).await;
                }
                self.update_pair(dir, m, h, &l, ex, direction, plan).await
            }
        }
    }

    /// Removes hqsync's Exchange copy `gid` of the deleted helloHQ contact
    /// `hq_id` from `m`, with its link (the direction permitting).
    async fn remove_orphan(&self, m: &Mailbox, hq_id: &str, gid: &str, what: &str) -> Result<(), EngineError> {
        if matches!(self.settings.direction(m, Kind::Contact), Direction::Both | Direction::ToExchange) {
            match self.graph.delete(&format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(gid)), None).await {
                Ok(()) | Err(GraphError::NotFound { .. }) => {}
                Err(e) => return Err(graph_err(e)),
            }
            self.journal(
                Some(&m.id),
                "deleted",
                Some(hq_id.to_string()),
                Some(gid.to_string()),
                json!({"side": "exchange", "summary": what, "reason": "deleted in helloHQ"}),
            )
            .await;
        }
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, Some(hq_id), None).await?;
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, None, Some(gid)).await?;
        Ok(())
    }

    async fn create_and_link(
        &self,
        dir: &Directory,
        m: &Mailbox,
        folders: &ContactFolders,
        folder: Folder,
        h: &HqContact,
        prior: Option<&Link>,
    ) -> Result<(), EngineError> {
        let Some((created, found)) = self.create_in_exchange(m, folders, folder, h, prior).await? else {
            // Another worker created and linked it meanwhile, maybe from an
            // older read than this one: merged into, not taken as synced.
            let l = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &h.id.to_string()).await?;
            let Some(l) = l.filter(|l| l.state == LINKED && l.graph_id.is_some()) else {
                return Err(super::linked_meanwhile("the Exchange copy of this contact"));
            };
            let direction = self.settings.direction(m, Kind::Contact);
            return self.update_pair(dir, m, h, &l, None, direction, &mut None).await;
        };
        let held = contact::from_graph(&created);
        if found && held != h.contact {
            // A copy an earlier attempt (or another worker) wrote from an
            // older read: linked as what it holds, then merged, so the newer
            // helloHQ values reach it instead of being taken as synced.
            self.save_link(m, Some(h.id.to_string()), &created, folder, &held, None, prior).await?;
            if hq_deleted(self.store, self.tenant, Kind::Contact, &h.id.to_string()).await? {
                let gid = created.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                return self.remove_orphan(m, &h.id.to_string(), &gid, &summary(&h.contact)).await;
            }
            let l = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &h.id.to_string()).await?;
            let Some(l) = l else { return Ok(()) };
            let direction = self.settings.direction(m, Kind::Contact);
            return self.update_pair(dir, m, h, &l, Some(created), direction, &mut None).await;
        }
        self.save_link(m, Some(h.id.to_string()), &created, folder, &h.contact, Some(fingerprint(&h.contact)), prior)
            .await?;
        let gid = created.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if hq_deleted(self.store, self.tenant, Kind::Contact, &h.id.to_string()).await? {
            // Deleted in helloHQ while this copy was being made, after the
            // deletion's handler had listed the links: undo it here.
            return self.remove_orphan(m, &h.id.to_string(), &gid, &summary(&h.contact)).await;
        }
        self.journal(
            Some(&m.id),
            "created",
            Some(h.id.to_string()),
            created.get("id").and_then(Value::as_str).map(str::to_string),
            json!({"side": "exchange", "summary": summary(&h.contact), "folder": folder.display_name()}),
        )
        .await;
        Ok(())
    }

    /// Membership changed: the copy moves to the other folder (Graph has no
    /// move for contacts: create there, then delete here).
    async fn move_folder(
        &self,
        m: &Mailbox,
        folders: &ContactFolders,
        folder: Folder,
        h: &HqContact,
        l: &Link,
    ) -> Result<(), EngineError> {
        let fid = Self::folder_id(folders, folder);
        let body = contact::to_graph(&h.contact, None, Some(&h.id.to_string()));
        let created = self.graph.create_contact(m.id.as_str(), fid, &body).await.map_err(graph_err)?;
        let created = with_written_properties(created, &body);
        if let Some(old) = l.graph_id.as_deref() {
            match self.graph.delete(&format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(old)), None).await {
                Ok(()) | Err(GraphError::NotFound { .. }) => {}
                Err(e) => return Err(graph_err(e)),
            }
        }
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, l.hq_id.as_deref(), l.graph_id.as_deref()).await?;
        self.save_link(m, Some(h.id.to_string()), &created, folder, &h.contact, Some(fingerprint(&h.contact)), None)
            .await?;
        self.journal(
            Some(&m.id),
            "moved",
            Some(h.id.to_string()),
            created.get("id").and_then(Value::as_str).map(str::to_string),
            json!({"side": "exchange", "summary": summary(&h.contact), "folder": folder.display_name()}),
        )
        .await;
        Ok(())
    }

    /// Both sides exist and are linked: merge against the base and write
    /// what changed where it may go. Without the Exchange item in hand, the
    /// version the link holds stands for it when that version held exactly
    /// the base and the tenant enforces `If-Match`: the write is one PATCH
    /// conditional on it, and only a `412` (Exchange changed since) costs a
    /// read and a second merge. A tenant that ignores `If-Match`, or was
    /// never probed, gets the contact read first: no Outlook edit is lost.
    #[allow(clippy::too_many_arguments)]
    async fn update_pair(
        &self,
        dir: &Directory,
        m: &Mailbox,
        h: &HqContact,
        l: &Link,
        ex: Option<Value>,
        direction: Direction,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        if plan.is_none() && super::newer_than_reads(l) {
            // Merged by another worker since this hint read the sides: the
            // link first, then both sides again, so the base is never newer.
            let fresh = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &h.id.to_string()).await?;
            let Some(fresh) = fresh.filter(|f| f.state == LINKED && f.graph_id.is_some()) else {
                return Err(super::relinked_meanwhile());
            };
            let Some(h) = self.read_hq(dir, h.id).await? else {
                return Ok(()); // deleted in helloHQ meanwhile: its hint removes the copies
            };
            // Read, not taken as the version the link holds: the edit this
            // hint may carry is newer than that link.
            let gid = fresh.graph_id.clone().unwrap_or_default();
            let Some(ex) = self.read_graph(m.id.as_str(), &gid).await? else {
                return Ok(()); // deleted in Exchange meanwhile: its own hint decides
            };
            return self.merge_linked(m, &h, &fresh, Some(ex), direction, plan).await;
        }
        self.merge_linked(m, h, l, ex, direction, plan).await
    }

    /// [`Contacts::update_pair`] on reads no older than the link's base.
    async fn merge_linked(
        &self,
        m: &Mailbox,
        h: &HqContact,
        l: &Link,
        ex: Option<Value>,
        direction: Direction,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let hq_fp = fingerprint(&h.contact);
        let gid = l.graph_id.clone().unwrap_or_default();
        let ex_fp_now = ex.as_ref().map(|e| fingerprint(&contact::from_graph(e)));
        let hq_same = l.hq_fingerprint.as_deref() == Some(hq_fp.as_str());
        let ex_same = ex_fp_now.as_deref().is_none_or(|f| l.graph_fingerprint.as_deref() == Some(f));
        if hq_same && ex_same {
            if let Some(p) = plan.as_deref_mut() {
                p.unchanged += 1;
            }
            return Ok(());
        }
        // helloHQ holds exactly what a merge from this very copy is writing
        // there (its webhook overtook that merge): the copy is the source and
        // that merge finishes the pair; nothing to read or write here.
        if ex.is_none() && l.hq_version.as_deref() == Some(hq_fp.as_str()) {
            return Ok(());
        }
        let side = match ex {
            Some(e) => ExSide::Read(e),
            None => match held_exchange(l).filter(|_| self.if_match_enforced) {
                Some(held) => held,
                // Something changed and the link cannot stand for Exchange: read it.
                None => match self.read_graph(m.id.as_str(), &gid).await? {
                    Some(e) => ExSide::Read(e),
                    // Deleted in Exchange meanwhile: its own hint decides.
                    None => return Ok(()),
                },
            },
        };
        if self.merge_pair(m, h, l, side, direction, plan).await? == Merged::Done {
            return Ok(());
        }
        // Exchange changed since the link's version (an edit whose hint has
        // not been handled yet): read it and merge that, so the edit survives.
        match self.read_graph(m.id.as_str(), &gid).await? {
            Some(e) => self.merge_pair(m, h, l, ExSide::Read(e), direction, plan).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// One three-way merge of `h` and the Exchange side, written out.
    /// [`Merged::Stale`]: the held version was not current (nothing written).
    async fn merge_pair(
        &self,
        m: &Mailbox,
        h: &HqContact,
        l: &Link,
        side: ExSide,
        direction: Direction,
        plan: &mut Option<&mut Plan>,
    ) -> Result<Merged, EngineError> {
        let gid = l.graph_id.clone().unwrap_or_default();
        let (ex_c, version, modified) = match &side {
            ExSide::Read(e) => (contact::from_graph(e), graph_version(e), graph_modified(e)),
            ExSide::Held { contact, version } => ((**contact).clone(), Some(version.clone()), None),
        };
        let base = serde_json::from_value::<Contact>(l.base.clone()).map(|c| c.to_fields()).ok();
        let newer = match (h.updated, modified) {
            (Some(a), Some(b)) if b > a => Side::Exchange,
            _ => Side::Hellohq,
        };
        let result = merge::merge(
            base.as_ref(),
            Some(&h.contact.to_fields()),
            Some(&ex_c.to_fields()),
            &RULES,
            direction,
            newer,
        );
        // An Exchange edit of the company cannot be written to helloHQ.
        for b in result.blocked.iter().filter(|b| b.field == "company_name" && b.from == Side::Exchange) {
            if plan.is_none() {
                self.journal(Some(&m.id), "skipped", Some(h.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": summary(&h.contact), "field": b.field, "reason": "helloHQ cannot move an existing contact to another company; change it in helloHQ"})).await;
            }
        }
        if let Some(p) = plan.as_deref_mut() {
            p.record_merge(&summary(&h.contact), &result);
            return Ok(Merged::Done);
        }
        // Held until the link is saved (dropped on every way out).
        let _pair = super::lock_pair_to_write(self.store, l, &result).await?;
        for c in &result.conflicts {
            self.journal(Some(&m.id), "conflict", Some(h.id.to_string()), Some(gid.clone()), json!({"side": "both", "summary": summary(&h.contact), "field": c.field, "hellohq": c.hellohq, "exchange": c.exchange, "winner": c.winner})).await;
        }
        let merged = Contact::from_fields(&result.merged);
        let mut hq_now = h.contact.clone();
        if !result.to_hellohq.is_empty() {
            // What helloHQ will hold: its record with the merged fields written.
            let mut expected = h.contact.to_fields();
            for f in &result.to_hellohq {
                expected.insert(f.clone(), result.merged.get(f).cloned().unwrap_or(Value::Null));
            }
            let expected = fingerprint(&Contact::from_fields(&expected));
            self.store.expect_hq_write(self.tenant, &m.id, Kind::Contact, &h.id.to_string(), &expected).await?;
            hq_now = self.write_hq(h.id, h.updated, &merged, &result.to_hellohq).await?;
            self.journal(Some(&m.id), "updated", Some(h.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": summary(&merged), "fields": result.to_hellohq, "from": m.id.as_str()})).await;
        }
        let held = matches!(side, ExSide::Held { .. });
        let mut ex_now = match side {
            ExSide::Read(e) => Some(e),
            ExSide::Held { .. } => None,
        };
        if !result.to_exchange.is_empty() {
            let patch = contact::to_graph(&merged, Some(&result.to_exchange), None);
            let path = format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(&gid));
            let mut written = match self.graph.patch(&path, &patch, version.as_deref()).await {
                Ok(v) => v,
                // The held version is not current: nothing was written yet
                // (a held side has nothing for helloHQ), the caller reads.
                Err(GraphError::Conflict { .. }) if held => return Ok(Merged::Stale),
                // Changed again since our read: the next hint merges again.
                Err(GraphError::Conflict { .. }) => {
                    return Err(EngineError::Waiting("Exchange contact changed during the merge".into()))
                }
                Err(GraphError::NotFound { .. }) => return Ok(Merged::Done),
                Err(e) => return Err(graph_err(e)),
            };
            // PATCH answers without extended properties; keep the fax we wrote.
            if result.to_exchange.iter().any(|f| f == "fax") || written.get("singleValueExtendedProperties").is_none() {
                let mut props =
                    vec![json!({"id": contact::FAX_PROPERTY_ID, "value": merged.fax.clone().unwrap_or_default()})];
                props.push(json!({"id": contact::HQ_ID_PROPERTY_ID, "value": h.id.to_string()}));
                written["singleValueExtendedProperties"] = Value::Array(props);
            }
            ex_now = Some(written);
        }
        // The base is what both sides now agree on; blocked fields keep theirs.
        let folder = l.folder.as_deref().and_then(Folder::parse).unwrap_or(Folder::Global);
        match ex_now {
            Some(ex_now) => {
                // Saved before journalling: Graph's notification of this write
                // finds the version written the sooner, and costs no read.
                self.save_link(
                    m,
                    Some(h.id.to_string()),
                    &ex_now,
                    folder,
                    &merged,
                    Some(fingerprint(&hq_now)),
                    Some(l),
                )
                .await?;
                if !result.to_exchange.is_empty() {
                    self.journal(Some(&m.id), "updated", Some(h.id.to_string()), Some(gid.clone()), json!({"side": "exchange", "summary": summary(&merged), "fields": result.to_exchange, "folder": l.folder.as_deref().and_then(Folder::parse).map(Folder::display_name)})).await;
                }
            }
            // Exchange neither read nor written: it still holds the link's version.
            None => {
                let next = Link {
                    hq_id: Some(h.id.to_string()),
                    base: serde_json::to_value(&merged).unwrap_or_default(),
                    hq_fingerprint: Some(fingerprint(&hq_now)),
                    state: LINKED.into(),
                    updated_at: Utc::now(),
                    ..l.clone()
                };
                self.store.upsert_link(&next).await?;
            }
        }
        Ok(Merged::Done)
    }

    /// Writes `fields` of `c` into helloHQ contact `id` (read-modify-write)
    /// and returns the record as helloHQ now holds it.
    async fn write_hq(
        &self,
        id: i32,
        expected: Option<DateTime<Utc>>,
        c: &Contact,
        fields: &[String],
    ) -> Result<Contact, EngineError> {
        let country = self.settings.contacts.default_country.clone();
        let v2_fields: Vec<String> = fields.iter().filter(|f| *f != "home_address").cloned().collect();
        let mut v2 = if v2_fields.is_empty() {
            self.hq.get_contact_person(id).await.map_err(hq_err)?
        } else {
            let c2 = c.clone();
            let country2 = country.clone();
            self.hq
                .update_contact_person_if(id, expected, move |cur| {
                    contact::apply_to_hq(&c2, &v2_fields, cur, &country2)
                })
                .await
                .map_err(hq_err)?
        };
        let v1 = if fields.iter().any(|f| f == "home_address") {
            Some(self.hq.set_private_address(id, contact::private_address_v1(c, &country)).await.map_err(hq_err)?)
        } else {
            None
        };
        if v1.is_some() {
            v2 = self.hq.get_contact_person(id).await.map_err(hq_err)?;
        }
        let v1 = match v1 {
            Some(v) => v,
            None => self.hq.get_contact_person_v1(id).await.map_err(hq_err)?,
        };
        Ok(contact::from_hq(&v2, Some(&v1), c.company_name.as_deref()))
    }

    // ---- entry points --------------------------------------------------------------

    /// A helloHQ contact changed (or was deleted): every mailbox follows.
    pub async fn on_hq_contact(&self, dir: &Directory, id: i32) -> Result<(), EngineError> {
        let mut read_at = Utc::now();
        let mut hq = self.read_hq(dir, id).await?;
        let links: HashMap<String, Link> = self
            .store
            .links_of_hq(self.tenant, Kind::Contact, &id.to_string())
            .await?
            .into_iter()
            .map(|l| (l.mailbox.as_str().to_ascii_lowercase(), l))
            .collect();
        if let Some(h) = &hq {
            if let Some(reason) = dir.excluded(h.company_id, &self.settings.contacts) {
                if links.is_empty() {
                    self.journal(
                        None,
                        "skipped",
                        Some(id.to_string()),
                        None,
                        json!({"side": "exchange", "summary": summary(&h.contact), "reason": reason}),
                    )
                    .await;
                }
            }
        }
        for m in self.mailboxes().await? {
            // Each mailbox's link read just before its merge (other workers
            // merge it meanwhile: a base older than the copy makes hqsync's
            // own write pass for a user's edit), and the record read again
            // when the link is newer than it (an older value would pass for
            // a helloHQ edit).
            let link = match links.get(&m.id.as_str().to_ascii_lowercase()) {
                Some(_) => self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &id.to_string()).await?,
                None => None,
            };
            if link.as_ref().is_some_and(|l| l.updated_at > read_at) {
                read_at = Utc::now();
                hq = self.read_hq(dir, id).await?;
            }
            let desired = hq
                .as_ref()
                .and_then(|h| dir.folder_for(h.id, h.company_id, self.user_of(dir, &m), &self.settings.contacts));
            if desired.is_none() && link.is_none() {
                continue;
            }
            let folders = self.folders(m.id.as_str()).await?;
            self.settle(dir, &m, &folders, hq.as_ref(), desired, link, None, &mut None).await?;
        }
        Ok(())
    }

    /// A company, project or lead changed: its contacts (and every contact
    /// now in someone's "my contacts", which may have lost its reason to be
    /// there) are re-checked one by one. A record-level change is explicit,
    /// so it is not subject to the pass's deletion hold.
    pub async fn on_membership(
        &self,
        dir: &Directory,
        entity: crate::queue::HqEntity,
        id: i32,
    ) -> Result<(), EngineError> {
        use crate::queue::HqEntity;
        let mut ids: std::collections::BTreeSet<i32> = std::collections::BTreeSet::new();
        match entity {
            HqEntity::Company => {
                let q = ListQuery::filter(format!("companyId eq {id}"));
                let list: Vec<ContactPerson> = self.hq.list_v2("/v2/ContactPersons", &q).await.map_err(hq_err)?.items;
                ids.extend(list.iter().map(|c| c.id));
            }
            HqEntity::Project => match self.hq.get_project_v1(id).await {
                Ok(p) => ids.extend(p.contact_persons.iter().map(|c| c.id)),
                Err(HqError::NotFound { .. }) => {}
                Err(e) => return Err(hq_err(e)),
            },
            HqEntity::Lead => match self.hq.get_lead(id).await {
                Ok(l) => ids.extend(l.contact_persons.iter().map(|c| c.id)),
                Err(HqError::NotFound { .. }) => {}
                Err(e) => return Err(hq_err(e)),
            },
            _ => return Ok(()),
        }
        if entity != HqEntity::Company {
            for m in self.mailboxes().await? {
                for l in self.store.list_links(self.tenant, &m.id, Kind::Contact).await? {
                    if l.folder.as_deref() == Some(Folder::Mine.as_str()) {
                        ids.extend(l.hq_id.as_deref().and_then(parse_hq_id));
                    }
                }
            }
        }
        for cid in ids {
            self.on_hq_contact(dir, cid).await?;
        }
        Ok(())
    }

    /// An Exchange contact in `mailbox` changed or was deleted. `version`:
    /// the version the change produced, as the notification named it (never
    /// given for a deletion).
    pub async fn on_exchange_contact(
        &self,
        dir: &Directory,
        m: &Mailbox,
        graph_id: &str,
        version: Option<&str>,
    ) -> Result<(), EngineError> {
        let direction = self.settings.direction(m, Kind::Contact);
        let link = self.store.get_link_by_graph(self.tenant, &m.id, Kind::Contact, graph_id).await?;
        // Maybe the echo of a merge of this pair still writing: its link.
        let link = super::link_after_running_merge(self.store, link, version).await?;
        if link.as_ref().is_some_and(|l| link_holds(l, version)) {
            return Ok(()); // the version the link holds: our own write's echo, or a duplicate
        }
        let ex = self.read_graph(m.id.as_str(), graph_id).await?;
        let Some(ex) = ex else {
            // 404 after a notification: an explicit deletion in Exchange.
            let Some(l) = link else { return Ok(()) };
            super::not_while_created(&l, "the helloHQ contact of this deleted Exchange contact")?;
            if l.state == PENDING && l.hq_id.is_none() {
                return match self.drop_unlinked_create(m, &l).await? {
                    None => Err(super::busy("the helloHQ contact of this deleted Exchange contact")),
                    Some(_) => Ok(()),
                };
            }
            return self.exchange_deleted(m, &l, direction).await;
        };
        let folders = self.folders(m.id.as_str()).await?;
        let parent = ex.get("parentFolderId").and_then(Value::as_str).unwrap_or_default();
        let folder = if parent == folders.global_id {
            Folder::Global
        } else if parent == folders.mine_id {
            Folder::Mine
        } else if link.as_ref().is_some_and(|l| l.state == LINKED && l.hq_id.is_some()) {
            // hqsync's copy, moved by the user into a folder of their own
            // (immutable ids: still the same item): kept in sync there.
            Folder::Own
        } else {
            // Not a synced pair (a claim, or nothing of ours): out of our folders, nothing to do here.
            if let Some(l) = link {
                self.store
                    .delete_link(self.tenant, &m.id, Kind::Contact, l.hq_id.as_deref(), l.graph_id.as_deref())
                    .await?;
            }
            return Ok(());
        };
        // A synced copy the user moved to another folder in Outlook: the link
        // follows it (journalled); between hqsync's two folders the folder
        // rules then put it where it belongs, one copy either way.
        let link = match link {
            Some(l) if l.state == LINKED && l.hq_id.is_some() && l.folder.as_deref() != Some(folder.as_str()) => {
                let moved = Link { folder: Some(folder.as_str().into()), updated_at: Utc::now(), ..l.clone() };
                self.store.upsert_link(&moved).await?;
                let what = summary(&contact::from_graph(&ex));
                let reason = if folder == Folder::Own {
                    "moved by the user into a folder of their own; hqsync keeps syncing it there"
                } else {
                    "moved by the user between hqsync's folders; the folder rules decide where it stays"
                };
                self.journal(Some(&m.id), "moved", l.hq_id.clone(), l.graph_id.clone(), json!({"side": "exchange", "by": "user", "summary": what, "folder": folder.display_name(), "reason": reason})).await;
                if folder != Folder::Own {
                    let Some(hq_id) = l.hq_id.as_deref().and_then(parse_hq_id) else { return Ok(()) };
                    let Some(h) = self.read_hq(dir, hq_id).await? else { return Ok(()) };
                    let desired = dir.folder_for(h.id, h.company_id, self.user_of(dir, m), &self.settings.contacts);
                    return self.settle(dir, m, &folders, Some(&h), desired, Some(moved), Some(ex), &mut None).await;
                }
                Some(moved)
            }
            other => other,
        };
        let link = match link {
            Some(l) => Some(l),
            // Our own create, seen before the link row was completed.
            None => match contact::graph_hq_tag(&ex) {
                // hqsync's copy of a record deleted in helloHQ (made while
                // the deletion was handled): removed, never mirrored back.
                Some(tag) if hq_deleted(self.store, self.tenant, Kind::Contact, &tag).await? => {
                    let what = summary(&contact::from_graph(&ex));
                    return self.remove_orphan(m, &tag, graph_id, &what).await;
                }
                Some(tag) => match self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &tag).await? {
                    // Linked to this very item since the lookup above (a
                    // create toward helloHQ finished meanwhile, and its tag
                    // is what this read saw): merged as linked. Re-based on
                    // this read, a user's edit made while the create ran
                    // passed for synced and helloHQ's older values were
                    // written over it (fault suite, seed 12).
                    Some(l) if l.graph_id.as_deref() == Some(graph_id) => Some(l),
                    Some(l) if l.graph_id.is_none() => {
                        let Some(h) = self.read_hq(dir, parse_hq_id(&tag).unwrap_or(-1)).await? else {
                            return Ok(());
                        };
                        // Linked as what the copy holds: it was written from
                        // a read of helloHQ that may be older than `h` (a
                        // pass's listing), and linked with `h` as its base it
                        // would pass for synced and keep the older values.
                        let held = contact::from_graph(&ex);
                        if held == h.contact {
                            self.save_link(m, Some(tag), &ex, folder, &held, Some(fingerprint(&h.contact)), None)
                                .await?;
                            return Ok(());
                        }
                        self.save_link(m, Some(tag.clone()), &ex, folder, &held, None, None).await?;
                        let Some(l) = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &tag).await? else {
                            return Ok(());
                        };
                        return self.update_pair(dir, m, &h, &l, Some(ex), direction, &mut None).await;
                    }
                    // Linked under another id: the same item under the id it
                    // had before (a link made without immutable ids, or a
                    // regular id that changed on a move) is relinked to this
                    // id; anything else is a copy the user duplicated, a new
                    // contact below.
                    Some(l) if l.state == LINKED => {
                        let old = l.graph_id.clone().unwrap_or_default();
                        match self.read_graph(m.id.as_str(), &old).await? {
                            Some(v) if v.get("id").and_then(Value::as_str) == Some(graph_id) => {
                                self.store
                                    .delete_link(self.tenant, &m.id, Kind::Contact, None, Some(old.as_str()))
                                    .await?;
                                let relinked = Link { graph_id: Some(graph_id.to_string()), ..l };
                                self.store.upsert_link(&relinked).await?;
                                Some(relinked)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                },
                None => None,
            },
        };
        match link {
            Some(l) => {
                let Some(hq_id) = l.hq_id.as_deref().and_then(parse_hq_id) else {
                    // A create toward helloHQ was claimed and not finished:
                    // wait for its holder, or take over once it is stale.
                    if !matches!(direction, Direction::Both | Direction::ToHellohq) {
                        return Ok(());
                    }
                    return self.create_in_hellohq(dir, m, &ex, folder).await;
                };
                let ex_fp = fingerprint(&contact::from_graph(&ex));
                if l.graph_fingerprint.as_deref() == Some(ex_fp.as_str()) {
                    return Ok(()); // echo of our own write, or a duplicate
                }
                match self.read_hq(dir, hq_id).await? {
                    Some(h) => self.update_pair(dir, m, &h, &l, Some(ex), direction, &mut None).await,
                    None => Ok(()), // deleted in helloHQ: its hint removes the copy
                }
            }
            None => {
                if !matches!(direction, Direction::Both | Direction::ToHellohq) {
                    return Ok(());
                }
                self.create_in_hellohq(dir, m, &ex, folder).await
            }
        }
    }

    /// A link whose Exchange copy a listing did not show is deleted in
    /// helloHQ only when that is still true now: the link is unchanged (no
    /// other worker moved or replaced the copy meanwhile) and Graph answers
    /// 404 for the item itself (a listing that merely missed it deletes nothing).
    async fn confirmed_gone_from_exchange(&self, m: &Mailbox, l: &Link) -> Result<bool, EngineError> {
        let Some(gid) = l.graph_id.as_deref() else { return Ok(false) };
        let fresh = self.store.get_link_by_graph(self.tenant, &m.id, Kind::Contact, gid).await?;
        if fresh.as_ref().is_none_or(|f| f.updated_at != l.updated_at || f.hq_id != l.hq_id) {
            return Ok(false);
        }
        Ok(self.read_graph(m.id.as_str(), gid).await?.is_none())
    }

    async fn exchange_deleted(&self, m: &Mailbox, l: &Link, direction: Direction) -> Result<(), EngineError> {
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, l.hq_id.as_deref(), l.graph_id.as_deref()).await?;
        let base: Contact = serde_json::from_value(l.base.clone()).unwrap_or_default();
        if !matches!(direction, Direction::Both | Direction::ToHellohq) {
            self.journal(Some(&m.id), "skipped", l.hq_id.clone(), l.graph_id.clone(), json!({"side": "hellohq", "summary": summary(&base), "reason": "deleted in Exchange; the direction does not allow deleting in helloHQ"})).await;
            return Ok(());
        }
        let Some(id) = l.hq_id.as_deref().and_then(parse_hq_id) else { return Ok(()) };
        match self.hq.delete_contact_person(id).await {
            Ok(()) | Err(HqError::NotFound { .. }) => {}
            Err(e) => return Err(hq_err(e)),
        }
        self.journal(
            Some(&m.id),
            "deleted",
            l.hq_id.clone(),
            l.graph_id.clone(),
            json!({"side": "hellohq", "summary": summary(&base), "from": m.id.as_str()}),
        )
        .await;
        Ok(())
    }

    /// A contact created in one of our Exchange folders becomes a helloHQ
    /// contact person of the company of that exact name (created with the
    /// configured type if none exists; the fallback company without a name).
    async fn create_in_hellohq(
        &self,
        dir: &Directory,
        m: &Mailbox,
        ex: &Value,
        folder: Folder,
    ) -> Result<(), EngineError> {
        let c = contact::from_graph(ex);
        let graph_id = ex.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        if c.surname.is_none() && c.given_name.is_none() {
            self.journal(Some(&m.id), "skipped", None, Some(graph_id), json!({"side": "hellohq", "summary": summary(&c), "reason": "an Exchange contact without a name cannot become a helloHQ contact person (last name required)"})).await;
            return Ok(());
        }
        // Claim the creation: Graph often notifies a new contact twice
        // (created, updated), and two workers must not both create it.
        let pending = Link {
            tenant: self.tenant.clone(),
            mailbox: m.id.clone(),
            kind: Kind::Contact,
            hq_id: None,
            graph_id: Some(graph_id.clone()),
            folder: Some(folder.as_str().into()),
            // What the create is made from, kept with the claim (see
            // `drop_unlinked_create`).
            base: json!({"note": {"contact": made_from(&c), "since": Utc::now()}}),
            hq_fingerprint: None,
            graph_fingerprint: None,
            hq_version: None,
            graph_version: None,
            state: PENDING.into(),
            updated_at: Utc::now(),
        };
        let earlier = match super::claim_create(self.store, &pending, self.hint_id).await? {
            super::Claim::Mine => None,
            // Linked meanwhile by another worker, which may have mirrored an
            // older read of this contact: retried, the hint merges as an edit.
            super::Claim::Done(_) => return Err(super::linked_meanwhile("the Exchange contact")),
            super::Claim::Busy => return Err(super::busy("the helloHQ contact for this Exchange contact")),
            // The holder crashed, maybe after creating: look before creating.
            super::Claim::Stale(l) => self.find_created(&c, claim_note(&l).1).await?,
        };
        let created = match earlier {
            Some(p) => return self.resume_hq_create(dir, m, ex, folder, &c, p).await,
            None => self.create_person(dir, m, &c).await?,
        };
        // Link at once: helloHQ's webhook for this very create must find
        // this mailbox's copy instead of mirroring the contact back into it.
        self.save_link(m, Some(created.id.to_string()), ex, folder, &c, None, None).await?;
        self.finish_hq_create(dir, m, ex, folder, &c, created).await
    }

    /// An Exchange contact deleted while its create toward helloHQ was
    /// unfinished (its worker crashed, or failed, between creating the
    /// helloHQ contact person and linking it): the contact person that
    /// create may have made is deleted too, with the claim. It is found
    /// from the claim's note as [`Self::find_created`] finds it, made no
    /// earlier than the claim, and linked in this mailbox to nothing but
    /// hqsync's own copy (helloHQ's webhook may have mirrored it back
    /// beside the deleted contact; its deletion removes that copy too).
    /// `Some(the helloHQ id deleted, if any)`; `None` when another worker
    /// took the claim first (or finished it).
    async fn drop_unlinked_create(&self, m: &Mailbox, l: &Link) -> Result<Option<Option<i32>>, EngineError> {
        let Some(gid) = l.graph_id.as_deref() else { return Ok(Some(None)) };
        if !super::take_over(self.store, l, self.hint_id).await? {
            return Ok(None);
        }
        let mut deleted = None;
        let allowed = matches!(self.settings.direction(m, Kind::Contact), Direction::Both | Direction::ToHellohq);
        if let ((Some(c), Some(since)), true) = (claim_note(l), allowed) {
            if let Some(p) = self.find_created(&c, Some(since)).await? {
                let hq_id = p.id.to_string();
                let ours = match self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &hq_id).await? {
                    None => true,
                    Some(other) => match other.graph_id.as_deref() {
                        Some(copy) => self
                            .read_graph(m.id.as_str(), copy)
                            .await?
                            .is_none_or(|item| contact::graph_hq_tag(&item).as_deref() == Some(hq_id.as_str())),
                        None => false,
                    },
                };
                if ours {
                    match self.hq.delete_contact_person(p.id).await {
                        Ok(()) | Err(HqError::NotFound { .. }) => {}
                        Err(e) => return Err(hq_err(e)),
                    }
                    self.journal(Some(&m.id), "deleted", Some(hq_id), Some(gid.to_string()), json!({"side": "hellohq", "summary": summary(&c), "from": m.id.as_str(), "reason": "made from an Exchange contact deleted before its create was linked"})).await;
                    deleted = Some(p.id);
                }
            }
        }
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, None, Some(gid)).await?;
        Ok(Some(deleted))
    }

    /// Links `ex` to `found`, the helloHQ contact an earlier attempt made
    /// from an older read of it (the user may have edited it since): the
    /// base is what helloHQ holds, never this read, and the pair is merged
    /// at once, so newer Exchange values reach helloHQ instead of passing
    /// for synced, and helloHQ's older ones never overwrite them.
    async fn resume_hq_create(
        &self,
        dir: &Directory,
        m: &Mailbox,
        ex: &Value,
        folder: Folder,
        c: &Contact,
        found: ContactPerson,
    ) -> Result<(), EngineError> {
        let Some(h) = self.read_hq(dir, found.id).await? else {
            // Deleted in helloHQ meanwhile: link as made, its hint follows.
            return self.finish_hq_create(dir, m, ex, folder, c, found).await;
        };
        self.drop_copy_beside_original(m, ex, found.id, c).await?;
        let tagged = self.tag_copy(m, ex, found.id, c.fax.as_deref()).await?;
        let mut base = h.contact.clone();
        base.company_name = c.company_name.clone().or(base.company_name);
        // Neither fingerprint: until the merge below is done, every hint
        // for this pair (a retry of this one too) merges it again.
        let mut link = self.link_row(m, Some(found.id.to_string()), &tagged, folder, &base, None);
        link.graph_fingerprint = None;
        self.store.upsert_link(&link).await?;
        self.journal(
            Some(&m.id),
            "created",
            Some(found.id.to_string()),
            tagged.get("id").and_then(Value::as_str).map(str::to_string),
            json!({"side": "hellohq", "summary": summary(c), "from": m.id.as_str()}),
        )
        .await;
        let Some(l) = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &found.id.to_string()).await? else {
            return Ok(());
        };
        let direction = self.settings.direction(m, Kind::Contact);
        self.update_pair(dir, m, &h, &l, Some(tagged), direction, &mut None).await
    }

    /// The claim on `ex` was stale (its holder crashed after creating
    /// helloHQ contact `id`), so helloHQ's webhook for `id` did not wait for
    /// it and may have put hqsync's own copy of `id` into this very mailbox,
    /// beside the user's contact it came from. That copy is redundant: it
    /// is removed with its link, and the user's contact is linked instead.
    async fn drop_copy_beside_original(
        &self,
        m: &Mailbox,
        ex: &Value,
        id: i32,
        c: &Contact,
    ) -> Result<(), EngineError> {
        let graph_id = ex.get("id").and_then(Value::as_str).unwrap_or_default();
        let hq_id = id.to_string();
        let Some(other) = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &hq_id).await? else {
            return Ok(());
        };
        let Some(copy) = other.graph_id.as_deref().filter(|g| *g != graph_id) else { return Ok(()) };
        // Only hqsync's own copy (tagged with this helloHQ id) is removed.
        if let Some(item) = self.read_graph(m.id.as_str(), copy).await? {
            if contact::graph_hq_tag(&item).as_deref() != Some(hq_id.as_str()) {
                return Err(super::linked_meanwhile("the helloHQ contact made from this Exchange contact"));
            }
            match self.graph.delete(&format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(copy)), None).await {
                Ok(()) | Err(GraphError::NotFound { .. }) => {}
                Err(e) => return Err(graph_err(e)),
            }
            self.journal(Some(&m.id), "deleted", Some(hq_id.clone()), Some(copy.to_string()), json!({"side": "exchange", "summary": summary(c), "reason": "a second copy beside the Outlook contact this helloHQ contact was made from"})).await;
        }
        self.store.delete_link(self.tenant, &m.id, Kind::Contact, None, Some(copy)).await?;
        Ok(())
    }

    /// Tags the Exchange contact `ex` with helloHQ id `id` (replays and
    /// moves find it) and returns it as tagged, with the fax it holds.
    /// Already tagged with `id` (a retry), it is not written again: each
    /// write is a notification, and a retry loop would feed itself.
    async fn tag_copy(&self, m: &Mailbox, ex: &Value, id: i32, fax: Option<&str>) -> Result<Value, EngineError> {
        let graph_id = ex.get("id").and_then(Value::as_str).unwrap_or_default();
        if contact::graph_hq_tag(ex).as_deref() == Some(id.to_string().as_str()) {
            let mut v = ex.clone();
            v["singleValueExtendedProperties"] =
                json!([{"id": contact::FAX_PROPERTY_ID, "value": fax.unwrap_or_default()}]);
            return Ok(v);
        }
        let tag =
            json!({"singleValueExtendedProperties": [{"id": contact::HQ_ID_PROPERTY_ID, "value": id.to_string()}]});
        let path = format!("/users/{}/contacts/{}", seg(m.id.as_str()), seg(graph_id));
        let mut v = self.graph.patch(&path, &tag, None).await.map_err(graph_err)?;
        v["singleValueExtendedProperties"] =
            json!([{"id": contact::FAX_PROPERTY_ID, "value": fax.unwrap_or_default()}]);
        Ok(v)
    }

    /// A helloHQ contact a crashed worker may have created for `c`: same
    /// last name, and the same email or first name; made no earlier than
    /// `since` (the claim's start) when the claim noted it (helloHQ stamps
    /// `createdOn` by its own clock, maybe to the second: 2 s of slack).
    async fn find_created(
        &self,
        c: &Contact,
        since: Option<DateTime<Utc>>,
    ) -> Result<Option<ContactPerson>, EngineError> {
        let Some(last) = c.surname.as_deref().or(c.given_name.as_deref()) else { return Ok(None) };
        let q = ListQuery::filter(format!("lastName eq '{}'", last.replace('\'', "''")));
        let found: Vec<ContactPerson> = self.hq.list_v2("/v2/ContactPersons", &q).await.map_err(hq_err)?.items;
        let made_after = |p: &ContactPerson| {
            since.is_none_or(|s| p.created_on.is_some_and(|t| t >= s - chrono::Duration::seconds(2)))
        };
        Ok(found.into_iter().filter(made_after).find(|p| {
            let mail = p.default_address.as_ref().and_then(|a| a.email.clone()).or(p.e_mail.clone());
            (c.email.is_some() && mail.as_deref().map(str::to_lowercase) == c.email.as_deref().map(str::to_lowercase))
                || (c.email.is_none() && p.first_name.as_deref().map(str::trim) == c.given_name.as_deref())
        }))
    }

    async fn create_person(&self, dir: &Directory, m: &Mailbox, c: &Contact) -> Result<ContactPerson, EngineError> {
        let company_id = self.company_for(dir, m, c.company_name.as_deref()).await?;
        let mut person = ContactPerson {
            company_id: Some(company_id),
            salutation: Some("Divers".into()),
            salutation_form: Some(SalutationForm::from_name("Neutral")),
            ..Default::default()
        };
        let fields: Vec<String> =
            FIELDS.iter().filter(|f| **f != "home_address" && **f != "company_name").map(|f| f.to_string()).collect();
        if c.surname.is_none() {
            // helloHQ requires a last name; the single name goes there.
            let mut c2 = c.clone();
            c2.surname = c2.given_name.take();
            contact::apply_to_hq(&c2, &fields, &mut person, &self.settings.contacts.default_country);
        } else {
            contact::apply_to_hq(c, &fields, &mut person, &self.settings.contacts.default_country);
        }
        let created = self.hq.create_contact_person(&person).await.map_err(hq_err)?;
        if c.home_address.is_some() {
            self.hq
                .set_private_address(
                    created.id,
                    contact::private_address_v1(c, &self.settings.contacts.default_country),
                )
                .await
                .map_err(hq_err)?;
        }
        Ok(created)
    }

    /// Links a new helloHQ contact to the Exchange contact it came from and
    /// tags that copy with the helloHQ id (replays and moves find it).
    async fn finish_hq_create(
        &self,
        dir: &Directory,
        m: &Mailbox,
        ex: &Value,
        folder: Folder,
        c: &Contact,
        created: ContactPerson,
    ) -> Result<(), EngineError> {
        let graph_id = ex.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let hq_now = match self.read_hq(dir, created.id).await? {
            Some(h) => h.contact,
            None => c.clone(),
        };
        let tagged = self.tag_copy(m, ex, created.id, c.fax.as_deref()).await?;
        let mut base = hq_now.clone();
        base.company_name = c.company_name.clone().or(base.company_name);
        // The link records the Exchange version that was mirrored: when the
        // user edited the contact again while helloHQ's copy was being made,
        // the tag's answer carries that newer edit, and linking it would
        // pass it off as synced (the tag's own notification then merges it).
        let linked = if contact::from_graph(&tagged) == *c { &tagged } else { ex };
        // A merge may have completed the provisional link meanwhile
        // (helloHQ's webhook for this create, the user's next edit): it
        // read newer values than this attempt did, so it stays; rewritten
        // from these reads, its base and fingerprints would step back.
        let now = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Contact, &created.id.to_string()).await?;
        if !now.is_some_and(|l| l.hq_fingerprint.is_some() && l.graph_id.as_deref() == Some(graph_id.as_str())) {
            self.save_link(m, Some(created.id.to_string()), linked, folder, &base, Some(fingerprint(&hq_now)), None)
                .await?;
        }
        self.journal(
            Some(&m.id),
            "created",
            Some(created.id.to_string()),
            Some(graph_id),
            json!({"side": "hellohq", "summary": summary(c), "from": m.id.as_str()}),
        )
        .await;
        Ok(())
    }

    async fn company_for(&self, dir: &Directory, m: &Mailbox, name: Option<&str>) -> Result<i32, EngineError> {
        let s = &self.settings.contacts;
        let wanted = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(&s.fallback_company).to_string();
        if let Some(id) = dir.company_by_name.get(&name_key(&wanted)) {
            return Ok(*id);
        }
        // The snapshot may be older than a company created a moment ago.
        let fresh: Vec<crate::connectors::hellohq::wire::Company> =
            self.hq.list_v2("/v2/Companies", &ListQuery::default()).await.map_err(hq_err)?.items;
        if let Some(c) = fresh.iter().find(|c| c.name.as_deref().is_some_and(|n| name_key(n) == name_key(&wanted))) {
            return Ok(c.id);
        }
        let types = self.hq.list_company_types().await.map_err(hq_err)?;
        let ty = types.iter().find(|t| t.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&s.new_company_type)));
        let post = CompanyPost {
            name: wanted.clone(),
            company_types: ty.map(|t| vec![CompanyTypeRef { company_type_id: t.id, number: None }]).unwrap_or_default(),
            responsible_user_ids: vec![],
            default_address: Some(crate::connectors::hellohq::wire::Address {
                street: Some(String::new()),
                zip_code: Some(String::new()),
                city: Some(String::new()),
                country: Some(s.default_country.clone()),
                description: Some("Hauptadresse".into()),
                ..Default::default()
            }),
            extra: Default::default(),
        };
        let created = self.hq.create_company(&post).await.map_err(hq_err)?;
        self.journal(Some(&m.id), "created", Some(created.id.to_string()), None, json!({"side": "hellohq", "summary": format!("company {wanted}"), "reason": format!("an Exchange contact named a company helloHQ did not have; created with type {:?}", s.new_company_type)})).await;
        Ok(created.id)
    }

    // ---- the pass --------------------------------------------------------------------

    /// Reconciles one mailbox completely. With `dry_run`, writes nothing
    /// and returns what it would do. Any failed read aborts the pass before
    /// anything is deleted.
    pub async fn pass(
        &self,
        dir: &Directory,
        m: &Mailbox,
        dry_run: bool,
        approved: &super::approvals::Approval,
    ) -> Result<Plan, EngineError> {
        let mut plan = Plan { mailbox: m.id.to_string(), ..Default::default() };
        let direction = self.settings.direction(m, Kind::Contact);
        if direction == Direction::Off {
            return Ok(plan);
        }
        // Links written after `read_at` are newer than the reads below (the
        // helloHQ side is a snapshot as of then, the Exchange side is read now).
        let (hq_all, read_at) = self.list_hq(dir, dry_run).await?;
        let folders = self.folders(m.id.as_str()).await?;
        let mut ex_items: Vec<(Folder, Value)> = Vec::new();
        for f in [Folder::Global, Folder::Mine] {
            for v in self.list_graph(m.id.as_str(), Self::folder_id(&folders, f)).await? {
                ex_items.push((f, v));
            }
        }
        let mut links = self.store.list_links(self.tenant, &m.id, Kind::Contact).await?;
        let user = self.user_of(dir, m);
        let mut desired: BTreeMap<i32, Folder> = hq_all
            .iter()
            .filter_map(|h| dir.folder_for(h.id, h.company_id, user, &self.settings.contacts).map(|f| (h.id, f)))
            .collect();
        let hq_by_id: HashMap<i32, &HqContact> = hq_all.iter().map(|h| (h.id, h)).collect();
        let first_pass = self.store.get_cursor(self.tenant, m.id.as_str(), LAST_PASS).await?.is_none();
        if first_pass && !dry_run {
            for h in &hq_all {
                if let Some(reason) = dir.excluded(h.company_id, &self.settings.contacts) {
                    self.journal(
                        Some(&m.id),
                        "skipped",
                        Some(h.id.to_string()),
                        None,
                        json!({"side": "exchange", "summary": summary(&h.contact), "reason": reason}),
                    )
                    .await;
                }
            }
        }
        let mut ex_by_id: HashMap<String, (Folder, Value)> = ex_items
            .iter()
            .filter_map(|(f, v)| v.get("id").and_then(Value::as_str).map(|id| (id.to_string(), (*f, v.clone()))))
            .collect();

        // 1. Match unlinked Exchange contacts to unlinked helloHQ contacts
        //    (our tag, then email, then first + last name) before creating.
        let linked_hq: HashSet<String> = links.iter().filter_map(|l| l.hq_id.clone()).collect();
        let linked_ex: HashSet<String> = links.iter().filter_map(|l| l.graph_id.clone()).collect();
        let mut free_hq: Vec<&HqContact> =
            hq_all.iter().filter(|h| desired.contains_key(&h.id) && !linked_hq.contains(&h.id.to_string())).collect();
        for (gid, (folder, v)) in ex_by_id.iter() {
            if linked_ex.contains(gid) {
                continue;
            }
            let c = contact::from_graph(v);
            let tag = contact::graph_hq_tag(v).and_then(|t| parse_hq_id(&t));
            let pos = free_hq
                .iter()
                .position(|h| Some(h.id) == tag)
                .or_else(|| {
                    c.email.as_ref().and_then(|e| {
                        free_hq
                            .iter()
                            .position(|h| h.contact.email.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(e)))
                    })
                })
                .or_else(|| {
                    let key = |c: &Contact| {
                        (c.given_name.clone().map(|s| s.to_lowercase()), c.surname.clone().map(|s| s.to_lowercase()))
                    };
                    (c.surname.is_some()).then(|| free_hq.iter().position(|h| key(&h.contact) == key(&c))).flatten()
                });
            let Some(pos) = pos else { continue };
            let h = free_hq.remove(pos);
            let how = if Some(h.id) == tag {
                "tag"
            } else if c.email.is_some() && c.email == h.contact.email {
                "email"
            } else {
                "name"
            };
            plan.matched.push(format!(
                "{} ↔ Exchange contact in {} (by {how})",
                summary(&h.contact),
                folder.display_name()
            ));
            let link = Link {
                tenant: self.tenant.clone(),
                mailbox: m.id.clone(),
                kind: Kind::Contact,
                hq_id: Some(h.id.to_string()),
                graph_id: Some(gid.clone()),
                folder: Some(folder.as_str().into()),
                // No base: the first merge fills gaps both ways and settles differences.
                base: Value::Null,
                hq_fingerprint: None,
                graph_fingerprint: None,
                hq_version: None,
                graph_version: graph_version(v),
                state: LINKED.into(),
                updated_at: Utc::now(),
            };
            if !dry_run {
                self.store.upsert_link(&link).await?;
                self.journal(Some(&m.id), "linked", link.hq_id.clone(), link.graph_id.clone(), json!({"side": "exchange", "summary": summary(&h.contact), "matched_by": how, "folder": folder.display_name()})).await;
            }
            links.push(link);
        }

        // 2. Deletions first counted, then held or done.
        let mut deletions: Vec<Link> = Vec::new();
        let mut exchange_gone: Vec<Link> = Vec::new();
        for l in &links {
            let hq_id = l.hq_id.as_deref().and_then(parse_hq_id);
            let in_exchange = l.graph_id.as_ref().is_some_and(|g| ex_by_id.contains_key(g));
            let hq_exists = hq_id.is_some_and(|i| hq_by_id.contains_key(&i));
            if l.state == LINKED && !in_exchange && l.graph_id.is_some() {
                exchange_gone.push(l.clone());
            } else if l.hq_id.is_some()
                && (!hq_exists || hq_id.is_none_or(|i| !desired.contains_key(&i)))
                && l.graph_id.is_some()
            {
                // A claim of a create toward helloHQ (no helloHQ id yet) is
                // no deletion: `settle` leaves it alone, and counting it
                // held a user's new contact for approval (fault suite, seed 9).
                deletions.push(l.clone());
            }
        }
        let total = links.len() as u64;
        let unapproved = deletions.iter().chain(exchange_gone.iter()).filter(|l| !approved.covers(l)).count();
        if !dry_run && self.settings.deletes.holds(unapproved as u64, total) {
            // A hold lists only what is really gone: a helloHQ contact
            // missing from the listing but found by a read (created after
            // the listing was read), or an Exchange contact still there (a
            // copy made after the listing), is no deletion. Found by the
            // fault suite's item-level approvals.
            let mut confirmed = Vec::with_capacity(deletions.len());
            for l in deletions {
                let id = l.hq_id.as_deref().and_then(parse_hq_id);
                if let Some(i) = id.filter(|i| !hq_by_id.contains_key(i)) {
                    if self.read_hq(dir, i).await?.is_some() {
                        continue;
                    }
                }
                confirmed.push(l);
            }
            deletions = confirmed;
            let mut confirmed = Vec::with_capacity(exchange_gone.len());
            for l in exchange_gone {
                if self.confirmed_gone_from_exchange(m, &l).await? {
                    confirmed.push(l);
                }
            }
            exchange_gone = confirmed;
        }
        let candidates: Vec<&Link> = deletions.iter().chain(exchange_gone.iter()).collect();
        let (held_now, covered) = super::approvals::decide(approved, &candidates, |n| {
            self.settings.deletes.held(n, total, Kind::Contact, self.tenant.as_str(), m.id.as_str())
        });
        plan.held = held_now;
        let hold = plan.held.is_some();
        let held_reason = plan.held.clone();
        // Held: the approved candidates still go; the others are listed.
        let n_ex = deletions.len();
        let held_items: Vec<super::approvals::HeldItem> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| hold && !covered[*i])
            .map(|(i, l)| {
                let base: Contact = serde_json::from_value(l.base.clone()).unwrap_or_default();
                super::approvals::HeldItem::of(l, summary(&base), if i < n_ex { "exchange" } else { "hellohq" })
            })
            .collect();
        let (deletions_now, exchange_gone_now): (Vec<Link>, Vec<Link>) = if hold {
            (
                deletions.iter().zip(&covered).filter(|(_, c)| **c).map(|(l, _)| l.clone()).collect(),
                exchange_gone.iter().zip(&covered[n_ex..]).filter(|(_, c)| **c).map(|(l, _)| l.clone()).collect(),
            )
        } else {
            (deletions.clone(), exchange_gone.clone())
        };
        let mut plan_ref = if dry_run { Some(&mut plan) } else { None };
        for l in &deletions_now {
            let id = l.hq_id.as_deref().and_then(parse_hq_id);
            let hq = id.and_then(|i| hq_by_id.get(&i).copied());
            // Missing from the listing is not enough: a contact created
            // after it was read must not lose its copy. Only a 404 deletes.
            if let (None, Some(i), None) = (hq, id, plan_ref.as_deref()) {
                if self.read_hq(dir, i).await?.is_some() {
                    continue;
                }
            }
            self.settle(dir, m, &folders, hq, None, Some(l.clone()), None, &mut plan_ref).await?;
        }
        for l in &exchange_gone_now {
            let base: Contact = serde_json::from_value(l.base.clone()).unwrap_or_default();
            if let Some(p) = plan_ref.as_deref_mut() {
                p.delete_in_hellohq.push(summary(&base));
            } else if self.confirmed_gone_from_exchange(m, l).await? {
                self.exchange_deleted(m, l, direction).await?;
            }
        }
        if !hold {
            // Unfinished creates toward helloHQ whose Exchange contact is
            // gone (its deletion's notification was lost, or came while
            // the claim was live): what such a create made is removed.
            if plan_ref.is_none() {
                for l in links.iter().filter(|l| l.state == PENDING && l.hq_id.is_none()) {
                    let Some(gid) = l.graph_id.as_deref().filter(|g| !ex_by_id.contains_key(*g)) else { continue };
                    if super::claimed_elsewhere(l) || self.read_graph(m.id.as_str(), gid).await?.is_some() {
                        continue;
                    }
                    // Taken by another worker meanwhile: its own business.
                    // A record deleted here gets no copy below.
                    if let Some(Some(id)) = self.drop_unlinked_create(m, l).await? {
                        desired.remove(&id);
                    }
                }
            }
        } else if !dry_run {
            let n_held = held_items.len();
            self.journal(Some(&m.id), "held", None, None, json!({"side": "exchange", "summary": format!("{n_held} contact deletions"), "count": n_held, "items": held_items, "threshold": {"percent": self.settings.deletes.percent, "items": self.settings.deletes.items}, "reason": held_reason})).await;
        }
        if !dry_run {
            let record = held_reason.map(|reason| super::approvals::Held {
                kind: Kind::Contact,
                at: Utc::now(),
                reason,
                items: held_items,
            });
            super::approvals::record_held(self.store, self.tenant, &m.id, Kind::Contact, record.as_ref()).await?;
        }
        let gone: HashSet<String> =
            deletions.iter().chain(exchange_gone.iter()).filter_map(|l| l.graph_id.clone()).collect();

        // 3. Creates, updates and moves for every helloHQ contact in scope.
        let by_hq: HashMap<String, Link> =
            links.iter().filter_map(|l| l.hq_id.clone().map(|h| (h, l.clone()))).collect();
        let total_desired = desired.len();
        for (i, (hq_id, folder)) in desired.iter().enumerate() {
            let Some(h) = hq_by_id.get(hq_id) else { continue };
            let link = by_hq.get(&hq_id.to_string()).cloned();
            if link.as_ref().and_then(|l| l.graph_id.as_ref()).is_some_and(|g| gone.contains(g)) {
                continue;
            }
            let ex = link.as_ref().and_then(|l| l.graph_id.as_ref()).and_then(|g| ex_by_id.remove(g)).map(|(_, v)| v);
            // Merged by another worker after this pass read both sides: the
            // link's base is newer than those reads, against which an older
            // value would pass for an edit and overwrite the newer one.
            // Both sides are read again.
            if !dry_run && link.as_ref().is_some_and(|l| l.updated_at > read_at) {
                if let Some(fresh) = self.read_hq(dir, *hq_id).await? {
                    self.settle(dir, m, &folders, Some(&fresh), Some(*folder), link, None, &mut plan_ref).await?;
                }
                continue;
            }
            self.settle(dir, m, &folders, Some(h), Some(*folder), link, ex, &mut plan_ref).await?;
            if !dry_run && total_desired >= 200 && (i + 1) % 200 == 0 {
                tracing::info!(mailbox = %m.id, done = i + 1, total = total_desired, "contact pass progress");
            }
        }
        // 4. Exchange contacts in our folders that nobody claimed become helloHQ contacts.
        // Linked items are claimed; an unfinished create toward helloHQ is
        // retried through its claim (which waits for a live holder).
        let claimed: HashSet<String> =
            links.iter().filter(|l| l.hq_id.is_some()).filter_map(|l| l.graph_id.clone()).collect();
        for (gid, (folder, v)) in ex_by_id {
            if claimed.contains(&gid) {
                continue;
            }
            if !matches!(direction, Direction::Both | Direction::ToHellohq) {
                continue;
            }
            let tag = contact::graph_hq_tag(&v);
            if let Some(p) = plan_ref.as_deref_mut() {
                if tag.is_none() {
                    p.create_in_hellohq.push(summary(&contact::from_graph(&v)));
                }
            } else if let Some(tag) = tag {
                // hqsync's own copy, unlinked (its create was cut off before
                // the link): of a record deleted in helloHQ it is removed, as
                // its notification would have done had it not been lost.
                if hq_deleted(self.store, self.tenant, Kind::Contact, &tag).await? {
                    self.remove_orphan(m, &tag, &gid, &summary(&contact::from_graph(&v))).await?;
                }
            } else {
                self.create_in_hellohq(dir, m, &v, folder).await?;
            }
        }
        if !dry_run {
            self.store.set_cursor(self.tenant, m.id.as_str(), LAST_PASS, &Utc::now().to_rfc3339()).await?;
        }
        Ok(plan)
    }
}
