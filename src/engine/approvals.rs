//! Held deletions and their item-level approval (issue 21).
//!
//! A pass whose deletions exceed the hold threshold records the exact items
//! it would delete (their ids and names) as the mailbox's held list for that
//! kind. `hqsync approve`, the admin API and the status page show that list;
//! approving it approves exactly those items. The next pass deletes only
//! approved items that are still gone; whatever else it would delete is
//! counted against the threshold on its own, so anything new beyond it is
//! held (and listed) again. An approval is cleared by the first pass that
//! completes with it; a pass that fails leaves it for its retry.
//!
//! Both records are store cursors of the tenant (scope [`HELD_SCOPE`] and
//! [`APPROVAL_SCOPE`], name `<mailbox>/<kind>`), holding JSON.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{Kind, MailboxId, TenantId};
use crate::store::{Link, Store, StoreError};

pub const HELD_SCOPE: &str = "held";
pub const APPROVAL_SCOPE: &str = "approvals";

fn cursor_name(m: &MailboxId, kind: Kind) -> String {
    format!("{}/{}", m.as_str(), kind.as_str())
}

/// The key naming one pair across passes: both ids of its link.
pub fn item_key(l: &Link) -> String {
    format!("hq:{}|graph:{}", l.hq_id.as_deref().unwrap_or(""), l.graph_id.as_deref().unwrap_or(""))
}

/// One deletion a pass held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HeldItem {
    /// What an approval names (`hq:<id>|graph:<id>`).
    pub key: String,
    pub hq_id: Option<String>,
    pub graph_id: Option<String>,
    /// The item's name as last synced (subject, title or contact name).
    pub name: String,
    /// Where it would be deleted: `exchange` (gone from helloHQ or out of
    /// scope) or `hellohq` (gone from Exchange).
    pub delete_in: String,
}

impl HeldItem {
    pub fn of(l: &Link, name: String, delete_in: &str) -> HeldItem {
        HeldItem {
            key: item_key(l),
            hq_id: l.hq_id.clone(),
            graph_id: l.graph_id.clone(),
            name,
            delete_in: delete_in.into(),
        }
    }
}

/// The deletions the last pass over a mailbox and kind held back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Held {
    #[schema(value_type = String, example = "contact")]
    pub kind: Kind,
    pub at: DateTime<Utc>,
    pub reason: String,
    pub items: Vec<HeldItem>,
}

/// The items approved for deletion by a mailbox's next pass of one kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    #[serde(default)]
    pub items: HashSet<String>,
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub actor: Option<String>,
    /// The stored text it was read from (to clear exactly this approval).
    #[serde(skip)]
    raw: String,
}

impl Approval {
    /// No item approved (a pass holds as its threshold says).
    pub fn none() -> Approval {
        Approval::default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn covers(&self, l: &Link) -> bool {
        self.items.contains(&item_key(l))
    }
}

/// The held list of `mailbox` for `kind`, if its last pass held anything.
pub async fn held(store: &Store, tenant: &TenantId, m: &MailboxId, kind: Kind) -> Result<Option<Held>, StoreError> {
    let v = store.get_cursor(tenant, HELD_SCOPE, &cursor_name(m, kind)).await?;
    Ok(v.filter(|s| !s.is_empty()).and_then(|s| serde_json::from_str(&s).ok()))
}

/// Records (or, with `None`, clears) the held list of a pass.
pub async fn record_held(
    store: &Store,
    tenant: &TenantId,
    m: &MailboxId,
    kind: Kind,
    held_now: Option<&Held>,
) -> Result<(), StoreError> {
    let name = cursor_name(m, kind);
    match held_now {
        Some(h) => {
            let text = serde_json::to_string(h).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            store.set_cursor(tenant, HELD_SCOPE, &name, &text).await
        }
        None => {
            // Read first: most passes hold nothing, and need not write.
            if store.get_cursor(tenant, HELD_SCOPE, &name).await?.is_some_and(|s| !s.is_empty()) {
                store.set_cursor(tenant, HELD_SCOPE, &name, "").await?;
            }
            Ok(())
        }
    }
}

/// The approval waiting for the next pass of `mailbox` and `kind`. A value
/// in the old one-shot format (a bare time: "approve whatever the pass
/// computes") approves nothing: the pass holds again and lists its items.
pub async fn approval(store: &Store, tenant: &TenantId, m: &MailboxId, kind: Kind) -> Result<Approval, StoreError> {
    let Some(raw) = store.get_cursor(tenant, APPROVAL_SCOPE, &cursor_name(m, kind)).await? else {
        return Ok(Approval::none());
    };
    let mut a: Approval = serde_json::from_str(&raw).unwrap_or_default();
    a.raw = raw;
    Ok(a)
}

/// Clears `used` once its pass completed, unless a newer approval replaced
/// it meanwhile.
pub async fn clear_approval(
    store: &Store,
    tenant: &TenantId,
    m: &MailboxId,
    kind: Kind,
    used: &Approval,
) -> Result<(), StoreError> {
    if used.raw.is_empty() {
        return Ok(());
    }
    let name = cursor_name(m, kind);
    if store.get_cursor(tenant, APPROVAL_SCOPE, &name).await?.as_deref() == Some(used.raw.as_str()) {
        store.set_cursor(tenant, APPROVAL_SCOPE, &name, "").await?;
    }
    Ok(())
}

/// Approves exactly the items of the held list of `mailbox` and `kind`
/// (with `only`, just those of its keys that are on the list). Returns
/// the items approved; none when nothing is held.
pub async fn approve_held(
    store: &Store,
    tenant: &TenantId,
    m: &MailboxId,
    kind: Kind,
    only: Option<&[String]>,
    actor: &str,
) -> Result<Vec<HeldItem>, StoreError> {
    let Some(h) = held(store, tenant, m, kind).await? else { return Ok(Vec::new()) };
    let items: Vec<HeldItem> = h.items.into_iter().filter(|i| only.is_none_or(|keys| keys.contains(&i.key))).collect();
    if items.is_empty() {
        return Ok(items);
    }
    let a = Approval {
        items: items.iter().map(|i| i.key.clone()).collect(),
        at: Some(Utc::now()),
        actor: Some(actor.to_string()),
        raw: String::new(),
    };
    let text = serde_json::to_string(&a).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.set_cursor(tenant, APPROVAL_SCOPE, &cursor_name(m, kind), &text).await?;
    Ok(items)
}

/// Splits `candidates` (indices into the pass's lists) by `approval`: the
/// unapproved ones are counted against the threshold on their own; when
/// they exceed it, they are held and only the approved ones go ahead.
pub fn decide(
    approval: &Approval,
    candidates: &[&Link],
    hold: impl FnOnce(u64) -> Option<String>,
) -> (Option<String>, Vec<bool>) {
    let approved: Vec<bool> = candidates.iter().map(|l| approval.covers(l)).collect();
    let unapproved = approved.iter().filter(|a| !**a).count() as u64;
    let held = hold(unapproved);
    (held, approved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(hq: Option<&str>, graph: Option<&str>) -> Link {
        Link {
            tenant: TenantId::parse("acme").unwrap(),
            mailbox: MailboxId::parse("anna@acme.example").unwrap(),
            kind: Kind::Contact,
            hq_id: hq.map(str::to_string),
            graph_id: graph.map(str::to_string),
            folder: None,
            base: serde_json::Value::Null,
            hq_fingerprint: None,
            graph_fingerprint: None,
            hq_version: None,
            graph_version: None,
            state: "linked".into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_approval_covers_exactly_its_pairs() {
        let a = link(Some("1"), Some("AAA"));
        let b = link(Some("2"), Some("BBB"));
        let relinked = link(Some("1"), Some("CCC"));
        let approval = Approval { items: [item_key(&a)].into_iter().collect(), ..Approval::none() };
        assert!(approval.covers(&a));
        assert!(!approval.covers(&b));
        assert!(!approval.covers(&relinked), "the same helloHQ record linked to another item is another pair");
    }

    #[test]
    fn unapproved_candidates_alone_are_counted_against_the_threshold() {
        let links: Vec<Link> = (0..5).map(|i| link(Some(&i.to_string()), Some(&format!("G{i}")))).collect();
        let refs: Vec<&Link> = links.iter().collect();
        let approval = Approval { items: links[..3].iter().map(item_key).collect(), ..Approval::none() };
        let mut counted = None;
        let (held, approved) = decide(&approval, &refs, |n| {
            counted = Some(n);
            None
        });
        assert_eq!(counted, Some(2));
        assert_eq!(held, None);
        assert_eq!(approved, vec![true, true, true, false, false]);
    }

    #[test]
    fn the_old_one_shot_flag_approves_nothing() {
        let a: Approval = serde_json::from_str("\"2026-12-04T10:00:00Z\"").unwrap_or_default();
        assert!(a.is_empty());
    }
}
