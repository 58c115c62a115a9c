//! Change polling for helloHQ (reference/HELLOHQ.md A15): per entity,
//! `updatedOn gt <watermark − overlap>` ordered by `updatedOn`, de-duplicated
//! by (id, updatedOn) across the overlap; deletions from the v1 deletions log
//! (`ConfigSystemEvents/do.GetDeleted()`), filtered client-side by
//! `CreatedOn` (B11). Results are [`Hint`]s with stable ids, so a re-poll of
//! the same version (after a crash, or through the overlap) dedupes with
//! itself and with nothing else.
//!
//! The watermark is never moved by a poll: a [`PollBatch`] carries the new
//! cursor and the caller commits it only after its hints are durably
//! enqueued. A crash in between re-reads the same changes; it never loses
//! one. This module reads helloHQ and the `cursors` table only; it never
//! publishes and never reads record content beyond ids and stamps.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::client::{HellohqClient, HqError, ListQuery, Page};
use super::wire::{fmt_utc, parse_utc, SystemEventType};
use crate::model::TenantId;
use crate::queue::{Change, Hint, HqEntity, Origin, HINT_VERSION};
use crate::store::{Store, StoreError};

/// `cursors.scope` of every helloHQ watermark.
pub const CURSOR_SCOPE: &str = "hellohq";
/// Cursor name of the deletions log.
pub const DELETIONS_CURSOR: &str = "deleted.createdOn";
/// The source name inside poll hint ids.
pub const HINT_SOURCE: &str = "hellohq-poll";
/// How far each poll reaches back behind its watermark: a row whose
/// transaction committed after a later one was already read still carries
/// the earlier stamp, and the overlap is what catches it.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(120);

/// Why a poll failed. Nothing is committed when it does.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Hellohq(#[from] HqError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored helloHQ cursor {name} is unreadable: {message}")]
    Cursor { name: String, message: String },
}

impl PollError {
    pub fn is_transient(&self) -> bool {
        match self {
            PollError::Hellohq(e) => e.is_transient(),
            PollError::Store(e) => e.is_unavailable(),
            PollError::Cursor { .. } => false,
        }
    }
}

/// Where one entity's list lives and how its stamp field is spelled.
struct Endpoint {
    path: &'static str,
    v1: bool,
}

fn endpoint(entity: HqEntity) -> Endpoint {
    let v2 = |path| Endpoint { path, v1: false };
    match entity {
        HqEntity::Task => v2("/v2/Projects/Tasks"),
        HqEntity::ContactPerson => v2("/v2/ContactPersons"),
        HqEntity::Company => v2("/v2/Companies"),
        HqEntity::Project => v2("/v2/Projects"),
        HqEntity::User => v2("/v2/Users"),
        HqEntity::Absence => v2("/v2/Absences"),
        // Leads exist only in v1 (A13).
        HqEntity::Lead => Endpoint { path: "/v1/Leads", v1: true },
    }
}

/// The entity a deletions-log `DatabaseObject` names. The values are
/// undocumented (B11): the names the contract uses plus the v1 set names.
pub fn entity_for_database_object(name: &str) -> Option<HqEntity> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "task" | "projecttask" | "projecttasks" => HqEntity::Task,
        "contactperson" | "contactpersons" => HqEntity::ContactPerson,
        "company" | "companies" => HqEntity::Company,
        "project" | "projects" => HqEntity::Project,
        "lead" | "leads" => HqEntity::Lead,
        "user" | "users" => HqEntity::User,
        "userabsence" | "absence" | "absences" => HqEntity::Absence,
        _ => return None,
    })
}

/// Ids and stamps of a row, in either casing.
#[derive(Debug, Deserialize)]
struct Stamp {
    #[serde(alias = "Id")]
    id: i64,
    #[serde(default, alias = "CreatedOn")]
    #[serde(rename = "createdOn")]
    created_on: Option<String>,
    #[serde(default, alias = "UpdatedOn")]
    #[serde(rename = "updatedOn")]
    updated_on: Option<String>,
}

impl Stamp {
    fn updated(&self) -> Option<DateTime<Utc>> {
        self.updated_on.as_deref().and_then(parse_utc)
    }

    /// (id, updatedOn): one version of one row.
    fn key(&self) -> String {
        format!("{}@{}", self.id, self.updated().map(fmt_utc).unwrap_or_default())
    }
}

/// What a cursor row holds: the newest stamp read, and the keys read
/// within the overlap behind it (so the overlap does not report them again).
///
/// The overlap is re-read only while it can still change: once a poll runs
/// a whole overlap (by this process's clock) after the watermark was first
/// read, every row stamped at or before it has committed (a row stamped
/// `at` was visible then, so helloHQ's clock had passed `at`), and the
/// watermark is *settled*: later polls read only after it, so an idle
/// tenant's poll costs one request however many rows a bulk import stamped
/// inside the last overlap.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Watermark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
    #[serde(default)]
    seen: BTreeSet<String>,
    /// When `at` was first stored (this process's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_at: Option<String>,
    /// Every row stamped at or before this is known: the floor of the next
    /// read even where `at − overlap` reaches further back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settled: Option<String>,
}

impl Watermark {
    fn instant(&self) -> Option<DateTime<Utc>> {
        self.at.as_deref().and_then(parse_utc)
    }

    fn settled(&self) -> Option<DateTime<Utc>> {
        self.settled.as_deref().and_then(parse_utc)
    }

    /// Where the next poll starts reading (exclusive): the overlap behind
    /// the watermark, never behind what is settled.
    fn floor(&self, overlap: chrono::Duration) -> Option<DateTime<Utc>> {
        let at = self.instant()?;
        Some(self.settled().map_or(at - overlap, |s| s.max(at - overlap)))
    }
}

/// One poll's result: hints to enqueue, then [`PollBatch::commit`].
#[derive(Debug)]
#[must_use = "the watermark moves only when the batch is committed"]
pub struct PollBatch {
    pub tenant: TenantId,
    /// `None` for the deletions log (it spans entities).
    pub entity: Option<HqEntity>,
    pub hints: Vec<Hint>,
    /// Rows read but not hinted: already seen in the overlap, or (deletions)
    /// naming an object hqsync does not know.
    pub skipped: usize,
    cursor_name: String,
    cursor_value: String,
    changed: bool,
}

impl PollBatch {
    /// Moves the watermark past this batch. Call only after every hint is
    /// durably enqueued.
    pub async fn commit(self, store: &Store) -> Result<(), StoreError> {
        if !self.changed {
            return Ok(());
        }
        store.set_cursor(&self.tenant, CURSOR_SCOPE, &self.cursor_name, &self.cursor_value).await
    }

    /// The watermark the commit will store (RFC 3339), if any.
    pub fn watermark(&self) -> Option<String> {
        serde_json::from_str::<Watermark>(&self.cursor_value).ok().and_then(|w| w.at)
    }
}

/// Polls one tenant's helloHQ for changes.
#[derive(Debug)]
pub struct ChangePoller<'a> {
    client: &'a HellohqClient,
    overlap: chrono::Duration,
}

impl<'a> ChangePoller<'a> {
    pub fn new(client: &'a HellohqClient) -> Self {
        ChangePoller { client, overlap: chrono::Duration::from_std(DEFAULT_OVERLAP).expect("small duration") }
    }

    pub fn with_overlap(mut self, overlap: Duration) -> Self {
        self.overlap = chrono::Duration::from_std(overlap).unwrap_or(chrono::TimeDelta::MAX);
        self
    }

    /// Cursor name of an entity's watermark (`contactPerson.updatedOn`).
    pub fn cursor_name(entity: HqEntity) -> String {
        format!("{}.updatedOn", entity.wire_name())
    }

    async fn load(store: &Store, tenant: &TenantId, name: &str) -> Result<Watermark, PollError> {
        match store.get_cursor(tenant, CURSOR_SCOPE, name).await? {
            None => Ok(Watermark::default()),
            Some(raw) => serde_json::from_str(&raw)
                .map_err(|e| PollError::Cursor { name: name.to_string(), message: e.to_string() }),
        }
    }

    /// Rows of `entity` changed since the watermark (minus the overlap); all
    /// rows when there is no watermark yet (a first poll sees everything).
    pub async fn poll_updates(
        &self,
        store: &Store,
        tenant: &TenantId,
        entity: HqEntity,
    ) -> Result<PollBatch, PollError> {
        let name = Self::cursor_name(entity);
        let old = Self::load(store, tenant, &name).await?;
        let since = old.floor(self.overlap);
        let rows = self.rows_since(&endpoint(entity), since).await?;

        let mut hints = Vec::new();
        let mut skipped = 0;
        let mut newest = old.instant();
        let mut stamped: Vec<(DateTime<Utc>, String)> = Vec::new();
        for row in rows {
            let updated = row.updated();
            let version = updated.map(fmt_utc).unwrap_or_default();
            let key = row.key();
            if old.seen.contains(&key) {
                skipped += 1;
                continue;
            }
            let created = row.created_on.as_deref().and_then(parse_utc);
            let change = if created.is_some() && created == updated { Change::Created } else { Change::Updated };
            hints.push(hint(tenant, entity, row.id, change, &format!("{}/{}/{version}", entity.wire_name(), row.id)));
            if let Some(t) = updated {
                newest = newest.max(Some(t));
                stamped.push((t, key));
            }
        }
        let value = next_watermark(&old, newest, stamped, self.overlap, Utc::now());
        Ok(PollBatch {
            tenant: tenant.clone(),
            entity: Some(entity),
            hints,
            skipped,
            cursor_name: name,
            changed: value.1,
            cursor_value: value.0,
        })
    }

    /// The ids of `entity`'s rows stamped after `since`, with their stamps,
    /// read as [`poll_updates`](Self::poll_updates) reads them but with no
    /// cursor: for caches kept in memory (the engine's directory snapshot,
    /// issue 18 item 7), which re-read only what changed.
    pub async fn changed_since(
        &self,
        entity: HqEntity,
        since: DateTime<Utc>,
    ) -> Result<Vec<(i32, Option<DateTime<Utc>>)>, HqError> {
        let rows = self.rows_since(&endpoint(entity), Some(since)).await?;
        Ok(rows.iter().filter_map(|r| Some((i32::try_from(r.id).ok()?, r.updated()))).collect())
    }

    /// Every row stamped after `since` (every row when `None`), in stamp
    /// order, each version once. Read by keyset: each next page starts at
    /// the last stamp read instead of skipping rows, so a row updated while
    /// the poll runs moves forward into a later page instead of shifting an
    /// unread row into a page already read (which `skip` paging would lose).
    async fn rows_since(&self, ep: &Endpoint, since: Option<DateTime<Utc>>) -> Result<Vec<Stamp>, HqError> {
        let field = if ep.v1 { "UpdatedOn" } else { "updatedOn" };
        let literal = |t: DateTime<Utc>| if ep.v1 { fmt_utc(t) } else { format!("datetime'{}'", fmt_utc(t)) };
        let mut out = Vec::new();
        let mut keys = HashSet::new();
        let mut keep = |rows: Vec<Stamp>, out: &mut Vec<Stamp>| {
            out.extend(rows.into_iter().filter(|r| keys.insert(r.key())));
        };
        let mut from: Option<(&str, DateTime<Utc>)> = since.map(|s| ("gt", s));
        loop {
            let mut q = ListQuery::default().orderby(field);
            q.filter = from.map(|(op, t)| format!("{field} {op} {}", literal(t)));
            let page: Page<Stamp> = self.client.first_page(ep.path, &q).await?;
            check_applied(ep.path, from, &page.items)?;
            let last = page.items.last().and_then(Stamp::updated);
            keep(page.items, &mut out);
            let Some(next) = page.next else { break };
            match last.filter(|l| from.is_none_or(|(_, t)| *l > t)) {
                Some(l) => from = Some(("ge", l)),
                None => {
                    // A full page sharing one stamp (or without stamps): the
                    // keyset cannot move, so page through the rest instead.
                    keep(self.client.rest(next).await?.items, &mut out);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletions recorded since the deletions watermark (minus the overlap).
    pub async fn poll_deletions(&self, store: &Store, tenant: &TenantId) -> Result<PollBatch, PollError> {
        let old = Self::load(store, tenant, DELETIONS_CURSOR).await?;
        let since = old.floor(self.overlap);
        // From the watermark (minus the overlap), not the whole log (issue 18 item 5).
        let events = self.client.list_deleted(since).await?;
        let mut hints = Vec::new();
        let mut skipped = 0;
        let mut newest = old.instant();
        let mut stamped = Vec::new();
        for ev in events {
            if ev.kind.as_ref().is_some_and(|k| *k != SystemEventType::EntityDeleted) {
                continue;
            }
            if since.is_some_and(|s| ev.created_on.is_some_and(|c| c <= s)) {
                continue;
            }
            let key = format!("event/{}@{}", ev.id, ev.created_on.map(fmt_utc).unwrap_or_default());
            if old.seen.contains(&key) {
                skipped += 1;
                continue;
            }
            if let Some(t) = ev.created_on {
                newest = newest.max(Some(t));
                stamped.push((t, key));
            }
            let entity = ev.database_object.as_deref().and_then(entity_for_database_object);
            let (Some(entity), Some(id)) = (entity, ev.entity_id) else {
                tracing::debug!(object = ?ev.database_object, event = ev.id, "deletion of an object hqsync ignores");
                skipped += 1;
                continue;
            };
            let when = ev.created_on.map(fmt_utc).unwrap_or_default();
            let message = format!("{}/{id}/deleted@{when}", entity.wire_name());
            hints.push(hint(tenant, entity, id, Change::Deleted, &message));
        }
        let value = next_watermark(&old, newest, stamped, self.overlap, Utc::now());
        Ok(PollBatch {
            tenant: tenant.clone(),
            entity: None,
            hints,
            skipped,
            cursor_name: DELETIONS_CURSOR.to_string(),
            changed: value.1,
            cursor_value: value.0,
        })
    }
}

/// A page of a poll must be what was asked: every row stamped past the
/// bound (as sent, at the literal's precision) and in stamp order. Rows that
/// are not are a list that ignored its filter or order (a query spelling the
/// endpoint does not honour): an error naming the fix, never a page whose
/// last stamp would move the keyset past rows not read.
fn check_applied(path: &str, from: Option<(&str, DateTime<Utc>)>, rows: &[Stamp]) -> Result<(), HqError> {
    let bound = from.map(|(op, t)| (op, parse_utc(&fmt_utc(t)).unwrap_or(t)));
    let mut prev: Option<DateTime<Utc>> = None;
    for r in rows {
        let Some(u) = r.updated() else { continue };
        let outside = bound.is_some_and(|(op, t)| if op == "gt" { u <= t } else { u < t });
        if outside || prev.is_some_and(|p| u < p) {
            return Err(HqError::Decode {
                message: format!(
                    "{path}: the answer ignores its filter or order (row {} stamped {}): the endpoint does not \
                     honour this query spelling; run the connection test",
                    r.id,
                    fmt_utc(u)
                ),
                body: super::client::ErrorBody::default(),
            });
        }
        prev = Some(u);
    }
    Ok(())
}

/// The cursor after a poll: the newest stamp, and every key (old or new)
/// whose stamp lies within the overlap behind it. Returns the JSON and
/// whether it differs from what is stored.
fn next_watermark(
    old: &Watermark,
    newest: Option<DateTime<Utc>>,
    stamped: Vec<(DateTime<Utc>, String)>,
    overlap: chrono::Duration,
    now: DateTime<Utc>,
) -> (String, bool) {
    let Some(at) = newest else {
        return (serde_json::to_string(old).expect("a watermark serialises"), false);
    };
    let moved = old.instant() != Some(at);
    // Since when this watermark has been known here (a cursor written
    // before `read_at` existed counts from now).
    let read_at = if moved { now } else { old.read_at.as_deref().and_then(parse_utc).unwrap_or(now) };
    let settled = if !moved && now - read_at >= overlap {
        // This poll read the overlap a whole overlap after the watermark
        // was first read: nothing stamped at or before it can appear any more.
        Some(at)
    } else {
        old.settled().filter(|s| *s <= at)
    };
    let floor = settled.map_or(at - overlap, |s| s.max(at - overlap));
    let mut seen: BTreeSet<String> = stamped.into_iter().filter(|(t, _)| *t > floor).map(|(_, k)| k).collect();
    // Every key carries its stamp after the `@`, so old keys age out with
    // the watermark instead of piling up.
    seen.extend(old.seen.iter().filter(|k| key_time(k).is_none_or(|t| t > floor)).cloned());
    let new = Watermark { at: Some(fmt_utc(at)), seen, read_at: Some(fmt_utc(read_at)), settled: settled.map(fmt_utc) };
    let changed = new.at != old.at || new.seen != old.seen || new.read_at != old.read_at || new.settled != old.settled;
    (serde_json::to_string(&new).expect("a watermark serialises"), changed)
}

fn key_time(key: &str) -> Option<DateTime<Utc>> {
    key.rsplit_once('@').and_then(|(_, t)| parse_utc(t))
}

fn hint(tenant: &TenantId, entity: HqEntity, id: i64, change: Change, message: &str) -> Hint {
    Hint {
        v: HINT_VERSION,
        hint_id: Hint::stable_id(tenant, HINT_SOURCE, message),
        tenant: tenant.clone(),
        mailbox: None,
        kind: entity.kind(),
        entity: Some(entity),
        origin: Origin::Hellohq,
        resource_id: Some(id.to_string()),
        version: None,
        subscription_id: None,
        change,
        received_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_utc(s).unwrap()
    }

    #[test]
    fn watermark_keeps_only_keys_inside_the_overlap() {
        let old = Watermark {
            at: Some("2026-05-04T08:00:00.000Z".into()),
            seen: ["1@2026-05-04T07:50:00.000Z".into()].into(),
            ..Default::default()
        };
        let stamped = vec![
            (t("2026-05-04T08:04:00Z"), "2@2026-05-04T08:04:00.000Z".to_string()),
            (t("2026-05-04T08:05:00Z"), "3@2026-05-04T08:05:00.000Z".to_string()),
        ];
        let (json, changed) = next_watermark(
            &old,
            Some(t("2026-05-04T08:05:00Z")),
            stamped,
            chrono::Duration::minutes(2),
            t("2026-05-04T08:05:01Z"),
        );
        let w: Watermark = serde_json::from_str(&json).unwrap();
        assert!(changed);
        assert_eq!(w.at.as_deref(), Some("2026-05-04T08:05:00.000Z"));
        assert_eq!(
            w.seen.into_iter().collect::<Vec<_>>(),
            vec!["2@2026-05-04T08:04:00.000Z", "3@2026-05-04T08:05:00.000Z"]
        );
    }

    #[test]
    fn an_empty_poll_leaves_the_cursor_alone_until_the_overlap_settles() {
        let two = chrono::Duration::minutes(2);
        let old = Watermark {
            at: Some("2026-05-04T08:00:00.000Z".into()),
            seen: ["7@2026-05-04T07:59:00.000Z".into()].into(),
            read_at: Some("2026-05-04T08:00:01.000Z".into()),
            settled: None,
        };
        assert_eq!(old.floor(two), Some(t("2026-05-04T07:58:00Z")));
        let (_, changed) = next_watermark(&old, old.instant(), Vec::new(), two, t("2026-05-04T08:01:00Z"));
        assert!(!changed, "inside the overlap nothing changes");
        // A whole overlap after the watermark was first read: settled, the
        // keys behind it dropped, the next read starts at the watermark.
        let (json, changed) = next_watermark(&old, old.instant(), Vec::new(), two, t("2026-05-04T08:02:01Z"));
        let w: Watermark = serde_json::from_str(&json).unwrap();
        assert!(changed);
        assert_eq!(w.floor(two), Some(t("2026-05-04T08:00:00Z")));
        assert!(w.seen.is_empty(), "{:?}", w.seen);
        let (_, changed) = next_watermark(&w, w.instant(), Vec::new(), two, t("2026-05-04T08:09:00Z"));
        assert!(!changed, "a settled idle cursor is not written again");
        // A newer row: the overlap behind it is read again, but never
        // behind what is settled.
        let stamped = vec![(t("2026-05-04T08:01:00Z"), "8@2026-05-04T08:01:00.000Z".to_string())];
        let (json, _) = next_watermark(&w, Some(t("2026-05-04T08:01:00Z")), stamped, two, t("2026-05-04T08:10:00Z"));
        let w: Watermark = serde_json::from_str(&json).unwrap();
        assert_eq!(w.floor(two), Some(t("2026-05-04T08:00:00Z")));
        assert_eq!(w.read_at.as_deref(), Some("2026-05-04T08:10:00.000Z"));
    }

    #[test]
    fn a_cursor_from_before_settling_reads_as_unsettled() {
        let w: Watermark = serde_json::from_str(r#"{"at":"2026-05-04T08:00:00.000Z","seen":[]}"#).unwrap();
        assert_eq!(w.floor(chrono::Duration::minutes(2)), Some(t("2026-05-04T07:58:00Z")));
    }

    #[test]
    fn deletion_log_objects_map_to_entities() {
        assert_eq!(entity_for_database_object("ContactPerson"), Some(HqEntity::ContactPerson));
        assert_eq!(entity_for_database_object("UserAbsence"), Some(HqEntity::Absence));
        assert_eq!(entity_for_database_object("Task"), Some(HqEntity::Task));
        assert_eq!(entity_for_database_object("InvoicePosition"), None);
    }

    #[test]
    fn poll_hint_ids_are_stable_per_version() {
        let tenant = TenantId::parse("acme").unwrap();
        let a = hint(&tenant, HqEntity::Task, 7, Change::Updated, "task/7/2026-05-04T08:00:00.000Z");
        let b = hint(&tenant, HqEntity::Task, 7, Change::Updated, "task/7/2026-05-04T08:00:00.000Z");
        let c = hint(&tenant, HqEntity::Task, 7, Change::Updated, "task/7/2026-05-04T08:00:01.000Z");
        assert_eq!(a.hint_id, b.hint_id);
        assert_ne!(a.hint_id, c.hint_id);
        assert_eq!(a.resource_id.as_deref(), Some("7"));
        assert_eq!(a.origin, Origin::Hellohq);
    }
}
