//! What the three kinds' engines (contacts, tasks, appointments) share:
//! error mapping, reading Graph item stamps, the journal entry of an effect
//! and the set of mailboxes that sync now.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::EngineError;
use crate::connectors::graph::GraphError;
use crate::connectors::hellohq::client::HqError;
use crate::model::{Kind, MailboxId, TenantId};
use crate::store::{Link, Mailbox, MailboxState, NewJournalEntry, Store};

/// A Graph failure: retried when it may pass, dead-lettered when not.
pub fn graph_err(e: GraphError) -> EngineError {
    match e {
        // An item that vanished (404) or changed (412) between the read and
        // this request was changed concurrently: the hint is retried, and the
        // retry reads the new state (a deletion then counts as absence).
        GraphError::NotFound { .. } | GraphError::Conflict { .. } => {
            EngineError::Transient(format!("{e}; it changed while this hint was processed, retrying"))
        }
        e if e.is_transient() => EngineError::Transient(e.to_string()),
        e => EngineError::Permanent(e.to_string()),
    }
}

/// A helloHQ failure: retried when it may pass (incl. a stale read, or a
/// record deleted while the hint was processed), else dead-lettered.
pub fn hq_err(e: HqError) -> EngineError {
    match e {
        HqError::NotFound { .. } => {
            EngineError::Transient(format!("{e}; it changed while this hint was processed, retrying"))
        }
        e if e.is_transient() => EngineError::Transient(e.to_string()),
        e => EngineError::Permanent(e.to_string()),
    }
}

/// The version Graph gives an item (`@odata.etag`, else `changeKey`), for `If-Match`.
pub fn graph_version(v: &Value) -> Option<String> {
    v.get("@odata.etag").or_else(|| v.get("changeKey")).and_then(Value::as_str).map(str::to_string)
}

/// Whether two Graph versions name the same one. A notification's
/// `@odata.etag` (`W/"CQAA…"`) and an item's `changeKey` (`CQAA…`) are
/// compared by the key inside.
pub fn same_graph_version(a: &str, b: &str) -> bool {
    fn key(v: &str) -> &str {
        let v = v.trim();
        v.strip_prefix("W/").unwrap_or(v).trim_matches('"')
    }
    !key(a).is_empty() && key(a) == key(b)
}

/// Whether a notification naming `version` (a change's, never a
/// deletion's) is the echo of what `link` already holds: hqsync's own
/// write coming back, or a duplicate. Such a notification costs no request.
pub fn link_holds(link: &Link, version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    link.state == "linked"
        && link.hq_id.is_some()
        && link.graph_version.as_deref().is_some_and(|held| same_graph_version(held, v))
}

/// An RFC 3339 time field of a Graph item (e.g. `lastModifiedDateTime`).
pub fn graph_time(v: &Value, field: &str) -> Option<DateTime<Utc>> {
    v.get(field).and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc())
}

/// When a Graph item last changed (`lastModifiedDateTime`).
pub fn graph_modified(v: &Value) -> Option<DateTime<Utc>> {
    graph_time(v, "lastModifiedDateTime")
}

/// A helloHQ id as stored on links (`"202"`).
pub fn parse_hq_id(s: &str) -> Option<i32> {
    s.parse().ok()
}

/// Where a sync effect is journalled: tenant, kind and the hint that caused it.
#[derive(Clone, Copy)]
pub struct Journal<'a> {
    pub store: &'a Store,
    pub tenant: &'a TenantId,
    pub kind: Kind,
    pub hint_id: Option<Uuid>,
}

impl Journal<'_> {
    /// Records one effect (see the journal schema in the README). A journal
    /// failure is logged, never fails the sync that already happened.
    pub async fn record(
        &self,
        mailbox: Option<&MailboxId>,
        action: &str,
        hq_id: Option<String>,
        graph_id: Option<String>,
        detail: Value,
    ) {
        let e = NewJournalEntry {
            tenant: Some(self.tenant.clone()),
            mailbox: mailbox.cloned(),
            kind: Some(self.kind),
            hint_id: self.hint_id,
            action: action.into(),
            hq_id,
            graph_id,
            detail,
            actor: None,
        };
        if let Err(err) = self.store.append_journal(&e).await {
            tracing::warn!(error = %err, action, "could not journal");
        }
    }
}

/// Mailboxes that sync now: active, or the pilot mailbox, and not known
/// to lack a Graph user (`graph` knows which did not resolve: issue #19
/// item 8; such a mailbox waits for its user, see [`super::users`]).
pub async fn syncing_mailboxes(
    store: &Store,
    tenant: &TenantId,
    graph: &crate::connectors::graph::GraphClient,
) -> Result<Vec<Mailbox>, EngineError> {
    let all = store.list_mailboxes(tenant).await?;
    Ok(all.into_iter().filter(|m| syncs(m) && !graph.is_unresolved(m.id.as_str())).collect())
}

/// Active, or the pilot mailbox.
pub fn syncs(m: &Mailbox) -> bool {
    matches!(m.state, MailboxState::Active | MailboxState::Pilot)
}

/// Cursor scope of the helloHQ records hqsync has seen deleted (404). A
/// create of a copy that raced with the deletion checks it after linking,
/// and a tagged Exchange copy of a deleted record is removed instead of
/// becoming a new helloHQ record. helloHQ never reuses an id.
const HQ_DELETED: &str = "hq_deleted";

fn tombstone_key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

/// Records that helloHQ answered 404 for record `id` of `kind`.
pub async fn mark_hq_deleted(store: &Store, tenant: &TenantId, kind: Kind, id: &str) -> Result<(), EngineError> {
    store.set_cursor(tenant, HQ_DELETED, &tombstone_key(kind, id), &Utc::now().to_rfc3339()).await?;
    Ok(())
}

/// Whether helloHQ record `id` of `kind` is known to be deleted.
pub async fn hq_deleted(store: &Store, tenant: &TenantId, kind: Kind, id: &str) -> Result<bool, EngineError> {
    Ok(store.get_cursor(tenant, HQ_DELETED, &tombstone_key(kind, id)).await?.is_some())
}

#[cfg(test)]
mod tests {
    use super::same_graph_version;

    #[test]
    fn a_notification_etag_and_a_change_key_name_the_same_version() {
        assert!(same_graph_version("W/\"CQAAABYAAAA\"", "W/\"CQAAABYAAAA\""));
        assert!(same_graph_version("W/\"CQAAABYAAAA\"", "CQAAABYAAAA"));
        assert!(!same_graph_version("W/\"CQAAABYAAAA\"", "W/\"CQAAABYAAAB\""));
        assert!(!same_graph_version("W/\"\"", ""));
    }
}
