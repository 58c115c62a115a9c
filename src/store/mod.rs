//! All persistence behind one `Store` type, on SQLite (embedded default, WAL)
//! or PostgreSQL. Owns the schema and its migrations (`migrations/sqlite`,
//! `migrations/postgres`), encrypts tenant secrets at rest (`crypto`), and
//! hosts the `local` queue's table. Callers never write SQL.
//!
//! SKELETON: the bodies below are being written (store helper). The
//! signatures are the contract the rest of the crate codes against.

pub mod crypto;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Kind, MailboxId, TenantId};
use crate::queue::Hint;

pub use crypto::{Cipher, CryptoError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored secret cannot be decrypted: {0}")]
    Crypto(#[from] CryptoError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported store URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
}

/// A customer: one helloHQ system + one Entra tenant. Secrets are decrypted
/// on read and encrypted on write; they never leave as plaintext at rest.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub enabled: bool,
    pub graph: GraphCredentials,
    pub hellohq: HellohqCredentials,
    /// Per-tenant settings owned by later features (directions, rollout…).
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct GraphCredentials {
    pub entra_tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub graph_base: String,
    pub login_base: String,
}

#[derive(Debug, Clone)]
pub struct HellohqCredentials {
    pub base_url: String,
    pub token: SecretString,
    /// Standard Webhooks secrets (`whsec_…`); several while rotating.
    pub webhook_secrets: Vec<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailboxState {
    Pilot,
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mailbox {
    pub tenant: TenantId,
    pub id: MailboxId,
    pub hq_user_id: Option<String>,
    pub state: MailboxState,
    pub settings: serde_json::Value,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A Graph subscription hqsync created. The `clientState` is kept only as
/// its SHA-256 digest: enough to check a notification, useless to a thief.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub tenant: TenantId,
    pub mailbox: MailboxId,
    pub kind: Kind,
    pub resource: String,
    pub client_state_sha256: [u8; 32],
    pub expires_at: DateTime<Utc>,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

/// The pairing of one helloHQ record with one Graph item in one mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub tenant: TenantId,
    pub mailbox: MailboxId,
    pub kind: Kind,
    pub hq_id: Option<String>,
    pub graph_id: Option<String>,
    pub folder: Option<String>,
    /// The canonical record as last synchronised (three-way merge base).
    pub base: serde_json::Value,
    pub hq_fingerprint: Option<String>,
    pub graph_fingerprint: Option<String>,
    pub hq_version: Option<String>,
    pub graph_version: Option<String>,
    pub state: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub tenant: TenantId,
    pub mailbox: Option<MailboxId>,
    pub kind: Option<Kind>,
    pub hint_id: Option<Uuid>,
    /// `received`, `created`, `updated`, `deleted`, `skipped`, `conflict`,
    /// `held`, `error`, `admin`, …
    pub action: String,
    pub hq_id: Option<String>,
    pub graph_id: Option<String>,
    pub detail: serde_json::Value,
    /// Who did it, for admin actions.
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct NewJournalEntry {
    pub tenant: Option<TenantId>,
    pub mailbox: Option<MailboxId>,
    pub kind: Option<Kind>,
    pub hint_id: Option<Uuid>,
    pub action: String,
    pub hq_id: Option<String>,
    pub graph_id: Option<String>,
    pub detail: serde_json::Value,
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct JournalFilter {
    pub tenant: Option<TenantId>,
    pub mailbox: Option<MailboxId>,
    pub kind: Option<Kind>,
    pub hint_id: Option<Uuid>,
    pub action: Option<String>,
    /// Newest first, at most this many (0 = 100).
    pub limit: usize,
}

/// A row of the local queue handed to a consumer.
#[derive(Debug, Clone)]
pub struct LocalQueueRow {
    pub id: i64,
    pub payload: Vec<u8>,
    /// Deliveries so far, including this one.
    pub attempts: u32,
    /// Proves ownership when settling; a stale lease settles nothing.
    pub lease: Uuid,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalQueueDepth {
    pub ready: u64,
    pub leased: u64,
    pub delayed: u64,
    pub dead: u64,
}

#[derive(Debug, Clone)]
pub struct LocalDeadRow {
    pub id: i64,
    pub payload: Vec<u8>,
    pub reason: String,
    pub attempts: u32,
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    _private: (),
}

#[allow(unused_variables)]
impl Store {
    /// Opens (creating a SQLite file and its folder if needed) and migrates.
    pub async fn open(url: &str, max_connections: u32, cipher: Cipher) -> Result<Store, StoreError> {
        todo!("store helper")
    }
    pub async fn ping(&self) -> Result<(), StoreError> {
        todo!()
    }
    pub fn backend_name(&self) -> &'static str {
        todo!()
    }

    // tenants
    pub async fn upsert_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        todo!()
    }
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        todo!()
    }
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        todo!()
    }

    // mailboxes
    pub async fn upsert_mailbox(&self, m: &Mailbox) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn get_mailbox(&self, tenant: &TenantId, id: &MailboxId) -> Result<Option<Mailbox>, StoreError> {
        todo!()
    }
    pub async fn list_mailboxes(&self, tenant: &TenantId) -> Result<Vec<Mailbox>, StoreError> {
        todo!()
    }

    // subscriptions
    pub async fn upsert_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        todo!()
    }
    pub async fn list_subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError> {
        todo!()
    }
    pub async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        todo!()
    }

    // links
    pub async fn upsert_link(&self, l: &Link) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn get_link_by_hq(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        hq_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        todo!()
    }
    pub async fn get_link_by_graph(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        graph_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        todo!()
    }
    pub async fn delete_link(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        hq_id: Option<&str>,
        graph_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        todo!()
    }
    pub async fn count_links(&self, tenant: &TenantId, mailbox: Option<&MailboxId>, kind: Option<Kind>) -> Result<u64, StoreError> {
        todo!()
    }

    // cursors (delta links, poll watermarks)
    pub async fn get_cursor(&self, tenant: &TenantId, scope: &str, name: &str) -> Result<Option<String>, StoreError> {
        todo!()
    }
    pub async fn set_cursor(&self, tenant: &TenantId, scope: &str, name: &str, value: &str) -> Result<(), StoreError> {
        todo!()
    }

    // journal
    pub async fn append_journal(&self, e: &NewJournalEntry) -> Result<i64, StoreError> {
        todo!()
    }
    pub async fn list_journal(&self, f: &JournalFilter) -> Result<Vec<JournalEntry>, StoreError> {
        todo!()
    }
    /// In one transaction: remember `hint.hint_id` as processed and journal
    /// it as `received`. Returns false (and writes nothing) when the hint id
    /// was processed before: the worker's exactly-once-in-effect guard.
    pub async fn record_hint(&self, hint: &Hint) -> Result<bool, StoreError> {
        todo!()
    }

    // local queue
    pub async fn local_queue_push(&self, payloads: &[Vec<u8>]) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn local_queue_lease(&self, visibility: std::time::Duration) -> Result<Option<LocalQueueRow>, StoreError> {
        todo!()
    }
    pub async fn local_queue_ack(&self, id: i64, lease: Uuid) -> Result<bool, StoreError> {
        todo!()
    }
    pub async fn local_queue_delay(&self, id: i64, lease: Uuid, delay: std::time::Duration) -> Result<bool, StoreError> {
        todo!()
    }
    pub async fn local_queue_dead(&self, id: i64, lease: Uuid, reason: &str) -> Result<bool, StoreError> {
        todo!()
    }
    pub async fn local_queue_depth(&self) -> Result<LocalQueueDepth, StoreError> {
        todo!()
    }
    pub async fn local_queue_dead_list(&self, limit: usize) -> Result<Vec<LocalDeadRow>, StoreError> {
        todo!()
    }
    pub async fn local_queue_replay(&self, ids: &[i64]) -> Result<usize, StoreError> {
        todo!()
    }
}
