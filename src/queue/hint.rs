//! The `Hint`: the only message that travels between ingress, scheduler and
//! workers. It names a change and never carries record content, so a queue
//! dump leaks nothing and a stale hint is harmless (the engine re-reads).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Kind, MailboxId, TenantId};

/// Version of the wire format of [`Hint`]. Consumers refuse a newer one
/// (dead-lettered, so nothing is lost during a rolling upgrade).
pub const HINT_VERSION: u16 = 1;

/// Where a change was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Exchange,
    Hellohq,
    Schedule,
}

/// What happened, as far as the notifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Deleted,
    /// Re-read everything in scope (delta/poll pass, lifecycle `missed`).
    Resync,
    /// Graph removed the subscription: recreate it, then resync.
    SubscriptionRemoved,
    /// Graph wants the subscription reauthorized (or renewed).
    ReauthorizationRequired,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Deleted => "deleted",
            Change::Resync => "resync",
            Change::SubscriptionRemoved => "subscription_removed",
            Change::ReauthorizationRequired => "reauthorization_required",
        }
    }
}

/// The helloHQ entity a webhook or poll names (reference/HELLOHQ.md C2).
/// Entities other than the synced kinds matter because they move contacts
/// between folders (companies, projects, leads) or mailboxes (users).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HqEntity {
    Task,
    ContactPerson,
    Company,
    Project,
    Lead,
    User,
    Absence,
}

impl HqEntity {
    pub const ALL: [HqEntity; 7] = [
        HqEntity::Task,
        HqEntity::ContactPerson,
        HqEntity::Company,
        HqEntity::Project,
        HqEntity::Lead,
        HqEntity::User,
        HqEntity::Absence,
    ];

    /// The name used in webhook `type`/`data.entity`.
    pub fn wire_name(self) -> &'static str {
        match self {
            HqEntity::Task => "task",
            HqEntity::ContactPerson => "contactPerson",
            HqEntity::Company => "company",
            HqEntity::Project => "project",
            HqEntity::Lead => "lead",
            HqEntity::User => "user",
            HqEntity::Absence => "absence",
        }
    }

    pub fn from_wire(s: &str) -> Option<HqEntity> {
        HqEntity::ALL.into_iter().find(|e| e.wire_name() == s)
    }

    /// The synced kind this entity belongs to, where it is one directly.
    /// (`task` rows are tasks or appointments: the engine decides on re-read.)
    pub fn kind(self) -> Option<Kind> {
        match self {
            HqEntity::Task => Some(Kind::Task),
            HqEntity::ContactPerson | HqEntity::Company | HqEntity::Project | HqEntity::Lead => Some(Kind::Contact),
            HqEntity::User | HqEntity::Absence => None,
        }
    }
}

/// One change to look at. Ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    pub v: u16,
    /// Idempotency key: the same change seen twice carries the same id where
    /// the notifier gives us a stable one (helloHQ `webhook-id`, Graph's
    /// notification `id`); otherwise a fresh one.
    pub hint_id: Uuid,
    pub tenant: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// For helloHQ-origin hints: which entity `resource_id` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<HqEntity>,
    pub origin: Origin,
    /// Graph item id or helloHQ id, as the origin names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// For Graph-origin hints: the item's version after the change
    /// (`resourceData.@odata.etag`), when Graph sent one. A version the link
    /// already holds is the echo of our own write and costs no read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// For Graph-origin hints: the subscription that delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    pub change: Change,
    pub received_at: DateTime<Utc>,
}

/// Namespace for deterministic hint ids (UUID v5), so a redelivered
/// notification maps to the hint id it had the first time.
const HINT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1b_0c5e_8a43_4c1e_9d7b_2f0e_5a1c_3b77);

impl Hint {
    /// A hint id derived from a notifier's own stable message id.
    pub fn stable_id(tenant: &TenantId, source: &str, message_id: &str) -> Uuid {
        let name = format!("{tenant}\u{1f}{source}\u{1f}{message_id}");
        Uuid::new_v5(&HINT_NAMESPACE, name.as_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Hint always serialises")
    }

    /// Decodes a hint, refusing versions this build does not understand.
    pub fn from_bytes(bytes: &[u8]) -> Result<Hint, HintDecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u16,
        }
        let Version { v } = serde_json::from_slice(bytes).map_err(HintDecodeError::Json)?;
        if v != HINT_VERSION {
            return Err(HintDecodeError::Version(v));
        }
        serde_json::from_slice(bytes).map_err(HintDecodeError::Json)
    }

    /// Routing key: stable per tenant+mailbox so one mailbox's hints share a
    /// partition (see `queue::amqp` for why that is enough).
    pub fn partition_key(&self) -> String {
        match &self.mailbox {
            Some(m) => format!("{}/{}", self.tenant, m),
            None => self.tenant.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HintDecodeError {
    #[error("hint is not valid JSON for version {HINT_VERSION}: {0}")]
    Json(serde_json::Error),
    #[error("hint has version {0}, this build reads version {HINT_VERSION}")]
    Version(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Hint {
        Hint {
            v: HINT_VERSION,
            hint_id: Uuid::new_v4(),
            tenant: TenantId::parse("acme").unwrap(),
            mailbox: Some(MailboxId::parse("anna@acme.example").unwrap()),
            kind: Some(Kind::Contact),
            entity: None,
            origin: Origin::Exchange,
            resource_id: Some("AAMkAD=".into()),
            version: None,
            subscription_id: Some("sub-1".into()),
            change: Change::Updated,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn round_trips_through_bytes() {
        let h = sample();
        assert_eq!(Hint::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn the_graph_version_is_optional_on_the_wire() {
        let mut h = sample();
        let bytes = h.to_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("\"version\""), "an absent version is not written");
        // A hint from a build without the field still decodes.
        assert_eq!(Hint::from_bytes(&bytes).unwrap().version, None);
        h.version = Some("W/\"CQAAABYAAAA\"".into());
        assert_eq!(Hint::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn refuses_unknown_version() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["v"] = 2.into();
        let err = Hint::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, HintDecodeError::Version(2)));
    }

    #[test]
    fn stable_ids_are_deterministic_and_scoped_by_tenant() {
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        assert_eq!(Hint::stable_id(&a, "hq", "msg_1"), Hint::stable_id(&a, "hq", "msg_1"));
        assert_ne!(Hint::stable_id(&a, "hq", "msg_1"), Hint::stable_id(&b, "hq", "msg_1"));
        assert_ne!(Hint::stable_id(&a, "hq", "msg_1"), Hint::stable_id(&a, "hq", "msg_2"));
    }

    #[test]
    fn entity_wire_names_round_trip() {
        for e in HqEntity::ALL {
            assert_eq!(HqEntity::from_wire(e.wire_name()), Some(e));
        }
    }
}
