//! All persistence behind one `Store` type, on SQLite (embedded default, WAL)
//! or PostgreSQL. Owns the schema and its migrations (`src/store/migrations/sqlite`,
//! `src/store/migrations/postgres`), encrypts tenant secrets at rest (`crypto`), and
//! hosts the `local` queue's table. Callers never write SQL. Times are kept
//! as unix milliseconds, so a value read back is the value written truncated
//! to the millisecond. This module must never log or return a secret or a
//! database URL in an error.

pub mod crypto;
mod db;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::model::capabilities::Capabilities;
use crate::model::{IdError, Kind, MailboxId, TenantId};
use crate::queue::Hint;
use db::{args, Arg, Conn, Pool, Row};

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
    /// A write that would take a row from another tenant (a Graph
    /// subscription id that already belongs to someone else).
    #[error("{0}")]
    Foreign(String),
}

impl StoreError {
    /// True when retrying later may succeed (database down, busy, pool
    /// exhausted): callers retry these instead of dead-lettering.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
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

/// The Graph user behind a mailbox (issue #19 item 8): the object id its
/// helloHQ work email resolved to, or why it did not. Kept in the mailbox
/// row but written only by [`Store::set_graph_user`]: a mailbox's own
/// upsert never touches it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphUser {
    pub mailbox: MailboxId,
    /// The Graph user's object id: the key of every call and subscription.
    pub id: Option<String>,
    /// Why the last resolution failed (with the fix), while `id` is `None`.
    pub error: Option<String>,
    /// Failed resolutions since the last success.
    pub attempts: u32,
    pub checked_at: Option<DateTime<Utc>>,
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
    /// helloHQ's version, where a kind has one. Contacts keep here the
    /// fingerprint helloHQ will hold once a write from this pair's merge,
    /// under way, has landed (see [`Store::expect_hq_write`]).
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
    /// Only entries with a larger id, and then *oldest* first: a tail reads
    /// forward from the last id it saw, so that a burst larger than `limit`
    /// is paged through instead of skipped.
    pub after_id: Option<i64>,
    /// At most this many (0 = 100); newest first unless `after_id` is set.
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

/// The tenant recorded on journal entries that belong to no tenant (e.g. an
/// admin action on the whole installation), since `JournalEntry::tenant` is
/// not optional. The leading `_` keeps it apart from the names people give
/// tenants (config or admin validation may reserve it outright).
pub const SYSTEM_TENANT: &str = "_system";

/// Tenant ids no tenant may have: the journal's own ones (`system`,
/// `_system`) and, reserved for internal use, every id starting with `_`.
pub fn is_reserved_tenant_id(id: &str) -> bool {
    id == "system" || id.starts_with('_')
}

/// The store handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    cipher: Cipher,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend_name()).finish_non_exhaustive()
    }
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./src/store/migrations/postgres");

/// How long a SQLite writer waits for the write lock before `Unavailable`.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_JOURNAL_LIMIT: usize = 100;
/// Bound parameters per statement when a list is expanded (`IN (…)`); far
/// under both backends' limits.
const IN_CHUNK: usize = 500;

const TENANT_COLS: &str = "id, name, enabled, entra_tenant_id, client_id, client_secret_enc, graph_base, login_base, \
     hellohq_base_url, hellohq_token_enc, webhook_secrets_enc, settings, created_at, updated_at";
const MAILBOX_COLS: &str = "tenant, id, hq_user_id, state, settings, last_error, updated_at";
const SUBSCRIPTION_COLS: &str =
    "id, tenant, mailbox, kind, resource, client_state_sha256, expires_at, state, created_at";
const LINK_COLS: &str = "tenant, mailbox, kind, hq_id, graph_id, folder, base, hq_fingerprint, graph_fingerprint, \
     hq_version, graph_version, state, updated_at";
const JOURNAL_COLS: &str = "id, tenant, mailbox, kind, hint_id, action, hq_id, graph_id, detail, actor, at";

/// The run an unfinished claim names (its `base`), kept in its own indexed
/// column for the heartbeat and the release; none on a complete link.
/// The column and value that identify an unfinished claim: its one id
/// (a claim has a helloHQ id or a Graph id, never both).
fn claim_key(l: &Link) -> Option<(&'static str, &str)> {
    match (&l.hq_id, &l.graph_id) {
        (Some(h), None) => Some(("hq_id", h.as_str())),
        (None, Some(g)) => Some(("graph_id", g.as_str())),
        _ => None,
    }
}

fn claim_run(l: &Link) -> Option<String> {
    (l.state == "pending").then(|| l.base.get("run").and_then(serde_json::Value::as_str).map(str::to_string)).flatten()
}

impl Store {
    /// Opens (creating a SQLite file and its folder if needed) and migrates.
    /// `sqlite::memory:` gives a private in-memory store on one connection.
    pub async fn open(url: &str, max_connections: u32, cipher: Cipher) -> Result<Store, StoreError> {
        let max_connections = max_connections.max(1);
        let pool = if url.starts_with("sqlite:") {
            open_sqlite(url, max_connections).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url, max_connections, ACQUIRE_TIMEOUT).await?
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let migrated = match &pool {
            Pool::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            Pool::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
        };
        if let Err(e) = migrated {
            pool.close().await;
            return Err(StoreError::Migration(e.to_string()));
        }
        Ok(Store { pool, cipher })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1", args![]).await.map(|_| ())
    }

    pub fn backend_name(&self) -> &'static str {
        self.pool.backend_name()
    }

    /// Closes every connection; later calls fail with `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await
    }

    // tenants

    /// Inserts or replaces a tenant, encrypting its secrets. `created_at` is
    /// kept from the first insert; `updated_at` is set to now.
    ///
    /// A new tenant may not take a reserved id nor the id of a deleted one
    /// ([`StoreError::Foreign`]): ids are never reused.
    pub async fn upsert_tenant(&self, t: &Tenant) -> Result<(), StoreError> {
        let id = t.id.as_str();
        if is_reserved_tenant_id(id) {
            return Err(StoreError::Foreign(format!("tenant id {id:?} is reserved; choose another id")));
        }
        let retired = self
            .pool
            .fetch_optional(
                "SELECT id FROM retired_tenants WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
                args![id],
            )
            .await?;
        if retired.is_some() {
            return Err(StoreError::Foreign(format!(
                "tenant id {id:?} belonged to a deleted tenant and is never given out again; choose another id"
            )));
        }
        let secrets: Vec<&str> = t.hellohq.webhook_secrets.iter().map(|s| s.expose_secret()).collect();
        let secrets_json = serde_json::to_string(&secrets).expect("a list of strings serialises");
        let sql = format!(
            "INSERT INTO tenants ({TENANT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, enabled = excluded.enabled, \
             entra_tenant_id = excluded.entra_tenant_id, client_id = excluded.client_id, \
             client_secret_enc = excluded.client_secret_enc, graph_base = excluded.graph_base, \
             login_base = excluded.login_base, hellohq_base_url = excluded.hellohq_base_url, \
             hellohq_token_enc = excluded.hellohq_token_enc, webhook_secrets_enc = excluded.webhook_secrets_enc, \
             settings = excluded.settings, updated_at = excluded.updated_at"
        );
        let args = args![
            id,
            t.name.as_str(),
            t.enabled,
            t.graph.entra_tenant_id.as_str(),
            t.graph.client_id.as_str(),
            self.cipher.encrypt(t.graph.client_secret.expose_secret(), &aad(id, FIELD_CLIENT_SECRET)),
            t.graph.graph_base.as_str(),
            t.graph.login_base.as_str(),
            t.hellohq.base_url.as_str(),
            self.cipher.encrypt(t.hellohq.token.expose_secret(), &aad(id, FIELD_HQ_TOKEN)),
            self.cipher.encrypt(&secrets_json, &aad(id, FIELD_WEBHOOK_SECRETS)),
            t.settings.to_string(),
            ms(t.created_at),
            now_ms(),
        ];
        self.pool.execute(&sql, args).await.map(|_| ())
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = $1");
        self.pool.fetch_optional(&sql, args![id.as_str()]).await?.map(|r| self.tenant_from_row(&r)).transpose()
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let sql = format!("SELECT {TENANT_COLS} FROM tenants ORDER BY id");
        self.pool.fetch_all(&sql, args![]).await?.iter().map(|r| self.tenant_from_row(r)).collect()
    }

    /// The tenant's capability record (defaults when never tested, or when
    /// there is no such tenant).
    pub async fn get_capabilities(&self, id: &TenantId) -> Result<Capabilities, StoreError> {
        let row =
            self.pool.fetch_optional("SELECT capabilities FROM tenants WHERE id = $1", args![id.as_str()]).await?;
        Ok(match row {
            Some(r) => Capabilities::from_json(&r.get::<String>("capabilities")?),
            None => Capabilities::default(),
        })
    }

    /// Stores the tenant's capability record and bumps its `updated_at`, so
    /// that every cached client of the tenant is rebuilt with it. A tenant's
    /// own upsert never touches the record. `false`: no such tenant.
    pub async fn set_capabilities(&self, id: &TenantId, c: &Capabilities) -> Result<bool, StoreError> {
        let json = serde_json::to_string(c).expect("the capability record serialises");
        let n = self
            .pool
            .execute(
                "UPDATE tenants SET capabilities = $2, updated_at = $3 WHERE id = $1",
                args![id.as_str(), json.as_str(), now_ms()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Deletes the tenant with its mailboxes, subscriptions, links and
    /// cursors (foreign-key cascade). The journal stays as the audit trail;
    /// the id is retired (never given to a new tenant, which would see that journal).
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let deleted = self.pool.execute("DELETE FROM tenants WHERE id = $1", args![id.as_str()]).await? > 0;
        if deleted {
            self.pool
                .execute(
                    "INSERT INTO retired_tenants (id, deleted_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    args![id.as_str(), now_ms()],
                )
                .await?;
        }
        Ok(deleted)
    }

    fn tenant_from_row(&self, r: &Row) -> Result<Tenant, StoreError> {
        let id: String = r.get("id")?;
        let decrypt = |col: &str, field: &str| -> Result<SecretString, StoreError> {
            Ok(self.cipher.decrypt(&r.get::<String>(col)?, &aad(&id, field))?)
        };
        let client_secret = decrypt("client_secret_enc", FIELD_CLIENT_SECRET)?;
        let token = decrypt("hellohq_token_enc", FIELD_HQ_TOKEN)?;
        let secrets_json = decrypt("webhook_secrets_enc", FIELD_WEBHOOK_SECRETS)?;
        let secrets: Vec<String> = serde_json::from_str(secrets_json.expose_secret())
            .map_err(|_| StoreError::Corrupt(format!("webhook secrets of tenant {id} are not a JSON list")))?;
        Ok(Tenant {
            id: parse_id(&id)?,
            name: r.get("name")?,
            enabled: r.get("enabled")?,
            graph: GraphCredentials {
                entra_tenant_id: r.get("entra_tenant_id")?,
                client_id: r.get("client_id")?,
                client_secret,
                graph_base: r.get("graph_base")?,
                login_base: r.get("login_base")?,
            },
            hellohq: HellohqCredentials {
                base_url: r.get("hellohq_base_url")?,
                token,
                webhook_secrets: secrets.into_iter().map(SecretString::from).collect(),
            },
            settings: json(r, "settings")?,
            created_at: time(r, "created_at")?,
            updated_at: time(r, "updated_at")?,
        })
    }

    // mailboxes

    /// Inserts or replaces a mailbox; `updated_at` is set to now.
    pub async fn upsert_mailbox(&self, m: &Mailbox) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO mailboxes ({MAILBOX_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant, id) DO UPDATE SET hq_user_id = excluded.hq_user_id, state = excluded.state, \
             settings = excluded.settings, last_error = excluded.last_error, updated_at = excluded.updated_at"
        );
        let args = args![
            m.tenant.as_str(),
            m.id.as_str(),
            m.hq_user_id.as_deref(),
            mailbox_state_str(m.state),
            m.settings.to_string(),
            m.last_error.as_deref(),
            now_ms(),
        ];
        self.pool.execute(&sql, args).await.map(|_| ())
    }

    pub async fn get_mailbox(&self, tenant: &TenantId, id: &MailboxId) -> Result<Option<Mailbox>, StoreError> {
        let sql = format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE tenant = $1 AND id = $2");
        self.pool
            .fetch_optional(&sql, args![tenant.as_str(), id.as_str()])
            .await?
            .map(|r| mailbox_from_row(&r))
            .transpose()
    }

    pub async fn list_mailboxes(&self, tenant: &TenantId) -> Result<Vec<Mailbox>, StoreError> {
        let sql = format!("SELECT {MAILBOX_COLS} FROM mailboxes WHERE tenant = $1 ORDER BY id");
        self.pool.fetch_all(&sql, args![tenant.as_str()]).await?.iter().map(mailbox_from_row).collect()
    }

    /// Records the outcome of resolving `mailbox`'s Graph user: `Ok(id)`
    /// stores the object id (clearing any error and the attempt count),
    /// `Err(why)` keeps any earlier id, stores `why` and counts the attempt.
    /// `false`: no such mailbox.
    pub async fn set_graph_user(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        outcome: Result<&str, &str>,
    ) -> Result<bool, StoreError> {
        let n =
            match outcome {
                Ok(id) => self
                    .pool
                    .execute(
                        "UPDATE mailboxes SET graph_user_id = $3, graph_user_error = NULL, graph_user_attempts = 0, \
                         graph_user_checked_at = $4 WHERE tenant = $1 AND id = $2",
                        args![tenant.as_str(), mailbox.as_str(), id, now_ms()],
                    )
                    .await?,
                Err(why) => self
                    .pool
                    .execute(
                        "UPDATE mailboxes SET graph_user_error = $3, graph_user_attempts = graph_user_attempts + 1, \
                         graph_user_checked_at = $4 WHERE tenant = $1 AND id = $2",
                        args![tenant.as_str(), mailbox.as_str(), why, now_ms()],
                    )
                    .await?,
            };
        Ok(n > 0)
    }

    /// The Graph user of every mailbox of `tenant` (ordered by mailbox).
    pub async fn graph_users(&self, tenant: &TenantId) -> Result<Vec<GraphUser>, StoreError> {
        let sql = "SELECT id, graph_user_id, graph_user_error, graph_user_attempts, graph_user_checked_at \
                   FROM mailboxes WHERE tenant = $1 ORDER BY id";
        self.pool.fetch_all(sql, args![tenant.as_str()]).await?.iter().map(graph_user_from_row).collect()
    }

    // subscriptions

    /// Inserts or replaces a subscription of `s.tenant`; `created_at` is
    /// kept from the first insert. A row is the (tenant, id) pair: an id
    /// that already belongs to another tenant is refused
    /// ([`StoreError::Foreign`]) and the row stays with its tenant. Graph
    /// chooses the ids, and a tenant's "Graph" may answer with anyone's.
    pub async fn upsert_subscription(&self, s: &Subscription) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO subscriptions ({SUBSCRIPTION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET mailbox = excluded.mailbox, \
             kind = excluded.kind, resource = excluded.resource, \
             client_state_sha256 = excluded.client_state_sha256, expires_at = excluded.expires_at, \
             state = excluded.state \
             WHERE subscriptions.tenant = excluded.tenant"
        );
        let args = args![
            s.id.as_str(),
            s.tenant.as_str(),
            s.mailbox.as_str(),
            s.kind.as_str(),
            s.resource.as_str(),
            s.client_state_sha256.to_vec(),
            ms(s.expires_at),
            s.state.as_str(),
            ms(s.created_at),
        ];
        if self.pool.execute(&sql, args).await? == 0 {
            return Err(StoreError::Foreign(format!(
                "subscription id {:?} already belongs to another tenant; refused, the row was not moved",
                s.id
            )));
        }
        Ok(())
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let sql = format!("SELECT {SUBSCRIPTION_COLS} FROM subscriptions WHERE id = $1");
        self.pool.fetch_optional(&sql, args![id]).await?.map(|r| subscription_from_row(&r)).transpose()
    }

    pub async fn list_subscriptions(&self, tenant: &TenantId) -> Result<Vec<Subscription>, StoreError> {
        let sql = format!("SELECT {SUBSCRIPTION_COLS} FROM subscriptions WHERE tenant = $1 ORDER BY mailbox, kind, id");
        self.pool.fetch_all(&sql, args![tenant.as_str()]).await?.iter().map(subscription_from_row).collect()
    }

    /// Deletes the tenant's subscription `id` (another tenant's row with
    /// that id is left alone).
    pub async fn delete_subscription(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM subscriptions WHERE tenant = $1 AND id = $2";
        Ok(self.pool.execute(sql, args![tenant.as_str(), id]).await? > 0)
    }

    // links

    /// Inserts or updates a link, found by its helloHQ id, else by its Graph
    /// id. A link known only from the Graph side (no `hq_id` yet) is adopted
    /// when the helloHQ side appears. Pairing a Graph item already linked to
    /// a different helloHQ record is refused (unique constraint →
    /// `Database`): an item must never be mirrored twice. `updated_at` is
    /// set to now.
    pub async fn upsert_link(&self, l: &Link) -> Result<(), StoreError> {
        if l.hq_id.is_none() && l.graph_id.is_none() {
            return Err(StoreError::Database("a link needs an hq_id or a graph_id".into()));
        }
        let (t, m, k) = (l.tenant.as_str(), l.mailbox.as_str(), l.kind.as_str());
        let fields = || {
            args![
                l.hq_id.as_deref(),
                l.graph_id.as_deref(),
                l.folder.as_deref(),
                l.base.to_string(),
                l.hq_fingerprint.as_deref(),
                l.graph_fingerprint.as_deref(),
                l.hq_version.as_deref(),
                l.graph_version.as_deref(),
                l.state.as_str(),
                now_ms(),
                claim_run(l),
                t,
                m,
                k,
            ]
        };
        const SET: &str = "UPDATE links SET hq_id = $1, graph_id = $2, folder = $3, base = $4, hq_fingerprint = $5, \
             graph_fingerprint = $6, hq_version = $7, graph_version = $8, state = $9, updated_at = $10, \
             claim_run = $11 WHERE tenant = $12 AND mailbox = $13 AND kind = $14";
        // Every branch writes first, see `Pool::begin`.
        let mut tx = self.pool.begin().await?;
        let mut done = 0;
        if let Some(hq) = &l.hq_id {
            let mut a = fields();
            a.push(hq.as_str().into());
            done = tx.conn().execute(&format!("{SET} AND hq_id = $15"), a).await?;
        }
        if done == 0 {
            if let Some(graph) = &l.graph_id {
                let mut a = fields();
                a.push(graph.as_str().into());
                // With an hq_id in hand only a half link may be adopted; a
                // row paired with another hq record is a conflict, not ours.
                let only_half = if l.hq_id.is_some() { " AND hq_id IS NULL" } else { "" };
                done = tx.conn().execute(&format!("{SET} AND graph_id = $15{only_half}"), a).await?;
            }
        }
        if done == 0 {
            let sql = "INSERT INTO links (hq_id, graph_id, folder, base, hq_fingerprint, graph_fingerprint, \
                       hq_version, graph_version, state, updated_at, claim_run, tenant, mailbox, kind) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
            tx.conn().execute(sql, fields()).await?;
        }
        tx.commit().await
    }

    /// Records on the link of `hq_id` in `mailbox` the `hq_version` a write
    /// to helloHQ about to be made from it will leave, and nothing else (not
    /// `updated_at`: the pairing is unchanged). helloHQ's webhook for that
    /// write may overtake the link's update; with this it is recognised.
    /// The next [`Store::upsert_link`] of the pair replaces it.
    pub async fn expect_hq_write(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        hq_id: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        self.pool
            .execute(
                "UPDATE links SET hq_version = $1 WHERE tenant = $2 AND mailbox = $3 AND kind = $4 AND hq_id = $5",
                args![version, tenant.as_str(), mailbox.as_str(), kind.as_str(), hq_id],
            )
            .await?;
        Ok(())
    }

    /// Inserts `l` only if no link of its mailbox and kind has its Graph id
    /// (or its helloHQ id) yet: an atomic claim, so that of two workers
    /// about to create the counterpart of the same item only one does.
    /// Returns whether this call inserted it.
    pub async fn claim_link(&self, l: &Link) -> Result<bool, StoreError> {
        let sql = "INSERT INTO links (hq_id, graph_id, folder, base, hq_fingerprint, graph_fingerprint, \
                   hq_version, graph_version, state, updated_at, claim_run, tenant, mailbox, kind) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING";
        let args = args![
            l.hq_id.as_deref(),
            l.graph_id.as_deref(),
            l.folder.as_deref(),
            l.base.to_string(),
            l.hq_fingerprint.as_deref(),
            l.graph_fingerprint.as_deref(),
            l.hq_version.as_deref(),
            l.graph_version.as_deref(),
            l.state.as_str(),
            now_ms(),
            claim_run(l),
            l.tenant.as_str(),
            l.mailbox.as_str(),
            l.kind.as_str(),
        ];
        Ok(self.pool.execute(sql, args).await? > 0)
    }

    pub async fn get_link_by_hq(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        hq_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        self.get_link_by("hq_id", tenant, mailbox, kind, hq_id).await
    }

    pub async fn get_link_by_graph(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        graph_id: &str,
    ) -> Result<Option<Link>, StoreError> {
        self.get_link_by("graph_id", tenant, mailbox, kind, graph_id).await
    }

    async fn get_link_by(
        &self,
        column: &'static str,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        value: &str,
    ) -> Result<Option<Link>, StoreError> {
        let sql =
            format!("SELECT {LINK_COLS} FROM links WHERE tenant = $1 AND mailbox = $2 AND kind = $3 AND {column} = $4");
        let args = args![tenant.as_str(), mailbox.as_str(), kind.as_str(), value];
        self.pool.fetch_optional(&sql, args).await?.map(|r| link_from_row(&r)).transpose()
    }

    /// Every link of a mailbox and kind (a reconcile pass reads them at once).
    pub async fn list_links(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
    ) -> Result<Vec<Link>, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM links WHERE tenant = $1 AND mailbox = $2 AND kind = $3 ORDER BY id");
        let args = args![tenant.as_str(), mailbox.as_str(), kind.as_str()];
        self.pool.fetch_all(&sql, args).await?.iter().map(link_from_row).collect()
    }

    /// Every link of one helloHQ record, across the tenant's mailboxes.
    pub async fn links_of_hq(&self, tenant: &TenantId, kind: Kind, hq_id: &str) -> Result<Vec<Link>, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM links WHERE tenant = $1 AND kind = $2 AND hq_id = $3 ORDER BY id");
        let args = args![tenant.as_str(), kind.as_str(), hq_id];
        self.pool.fetch_all(&sql, args).await?.iter().map(link_from_row).collect()
    }

    /// Deletes the link matching every id given; with neither id, deletes
    /// nothing (a missing id must never widen a delete).
    pub async fn delete_link(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        hq_id: Option<&str>,
        graph_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        if hq_id.is_none() && graph_id.is_none() {
            return Ok(false);
        }
        let mut w = Where::new(args![tenant.as_str(), mailbox.as_str(), kind.as_str()]);
        w.sql.push_str(" WHERE tenant = $1 AND mailbox = $2 AND kind = $3");
        w.and_eq("hq_id", hq_id);
        w.and_eq("graph_id", graph_id);
        Ok(self.pool.execute(&format!("DELETE FROM links{}", w.sql), w.args).await? > 0)
    }

    /// Links of a mailbox and kind that claim a create toward helloHQ (a
    /// Graph id, no helloHQ id yet) and changed after `since`: creates in
    /// flight, whose helloHQ record may already exist unlinked.
    pub async fn count_open_claims(
        &self,
        tenant: &TenantId,
        mailbox: &MailboxId,
        kind: Kind,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM links WHERE tenant = $1 AND mailbox = $2 AND kind = $3 \
                   AND hq_id IS NULL AND graph_id IS NOT NULL AND updated_at > $4";
        count(&self.pool, sql, args![tenant.as_str(), mailbox.as_str(), kind.as_str(), ms(since)]).await
    }

    /// Takes over the unfinished claim `old` (stale, or released by its
    /// run) with `base`, atomically: of two workers resuming the same claim
    /// only the first succeeds (the row must still be as `old` was read).
    pub async fn take_over_claim(&self, old: &Link, base: &serde_json::Value) -> Result<bool, StoreError> {
        let Some((column, id)) = claim_key(old) else { return Ok(false) };
        let sql = format!(
            "UPDATE links SET base = $1, updated_at = $2, claim_run = $8 WHERE tenant = $3 AND mailbox = $4 \
             AND kind = $5 AND state = 'pending' AND updated_at = $6 AND {column} = $7"
        );
        let args = args![
            base.to_string(),
            now_ms(),
            old.tenant.as_str(),
            old.mailbox.as_str(),
            old.kind.as_str(),
            ms(old.updated_at),
            id,
            base.get("run").and_then(serde_json::Value::as_str),
        ];
        Ok(self.pool.execute(&sql, args).await? > 0)
    }

    /// Marks the unfinished claims made by the run `run` as released: that
    /// run is over (it failed), so its retry, or any worker, may resume them
    /// at once instead of waiting for them to go stale.
    /// A claim's `note` (what its create was made from) is kept.
    pub async fn release_claims(&self, run: &uuid::Uuid) -> Result<u64, StoreError> {
        let sql = format!("SELECT {LINK_COLS} FROM links WHERE claim_run = $1 AND state = 'pending'");
        let claims: Vec<Link> = self
            .pool
            .fetch_all(&sql, args![run.to_string()])
            .await?
            .iter()
            .map(link_from_row)
            .collect::<Result<_, _>>()?;
        let mut released = 0;
        for l in claims {
            let Some((column, id)) = claim_key(&l) else { continue };
            let mut base = serde_json::json!({"released": true, "run": run});
            if let Some(note) = l.base.get("note") {
                base["note"] = note.clone();
            }
            let sql = format!(
                "UPDATE links SET base = $1, claim_run = NULL WHERE claim_run = $2 AND state = 'pending' \
                 AND tenant = $3 AND mailbox = $4 AND kind = $5 AND {column} = $6"
            );
            let args =
                args![base.to_string(), run.to_string(), l.tenant.as_str(), l.mailbox.as_str(), l.kind.as_str(), id];
            released += self.pool.execute(&sql, args).await?;
        }
        Ok(released)
    }

    /// Refreshes the unfinished claims of the running run `run` (its heartbeat).
    pub async fn touch_claims(&self, run: &uuid::Uuid) -> Result<u64, StoreError> {
        let sql = "UPDATE links SET updated_at = $1 WHERE claim_run = $2 AND state = 'pending'";
        self.pool.execute(sql, args![now_ms(), run.to_string()]).await
    }

    pub async fn count_links(
        &self,
        tenant: &TenantId,
        mailbox: Option<&MailboxId>,
        kind: Option<Kind>,
    ) -> Result<u64, StoreError> {
        let mut w = Where::new(args![tenant.as_str()]);
        w.sql.push_str(" WHERE tenant = $1");
        w.and_eq("mailbox", mailbox.map(MailboxId::as_str));
        w.and_eq("kind", kind.map(Kind::as_str));
        count(&self.pool, &format!("SELECT COUNT(*) AS n FROM links{}", w.sql), w.args).await
    }

    // cursors (delta links, poll watermarks)

    pub async fn get_cursor(&self, tenant: &TenantId, scope: &str, name: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT value FROM cursors WHERE tenant = $1 AND scope = $2 AND name = $3";
        self.pool.fetch_optional(sql, args![tenant.as_str(), scope, name]).await?.map(|r| r.get("value")).transpose()
    }

    pub async fn set_cursor(&self, tenant: &TenantId, scope: &str, name: &str, value: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO cursors (tenant, scope, name, value, updated_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (tenant, scope, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        self.pool.execute(sql, args![tenant.as_str(), scope, name, value, now_ms()]).await.map(|_| ())
    }

    // journal

    /// Appends an entry (tenant `None` is recorded as [`SYSTEM_TENANT`]) and
    /// returns its id; ids grow, so they order the journal.
    pub async fn append_journal(&self, e: &NewJournalEntry) -> Result<i64, StoreError> {
        insert_journal(&mut self.pool.acquire().await?.conn(), e).await
    }

    /// Newest first; oldest first after `f.after_id` (see [`JournalFilter`]).
    pub async fn list_journal(&self, f: &JournalFilter) -> Result<Vec<JournalEntry>, StoreError> {
        let mut w = Where::new(args![]);
        w.sql.push_str(" WHERE 1 = 1");
        w.and_eq("tenant", f.tenant.as_ref().map(TenantId::as_str));
        w.and_eq("mailbox", f.mailbox.as_ref().map(MailboxId::as_str));
        w.and_eq("kind", f.kind.map(Kind::as_str));
        w.and_eq("hint_id", f.hint_id.map(|h| h.to_string()).as_deref());
        w.and_eq("action", f.action.as_deref());
        if let Some(after) = f.after_id {
            w.args.push(after.into());
            w.sql.push_str(&format!(" AND id > ${}", w.args.len()));
        }
        let order = if f.after_id.is_some() { "ASC" } else { "DESC" };
        let limit = if f.limit == 0 { DEFAULT_JOURNAL_LIMIT } else { f.limit };
        w.args.push(limit_arg(limit));
        let sql = format!("SELECT {JOURNAL_COLS} FROM journal{} ORDER BY id {order} LIMIT ${}", w.sql, w.args.len());
        self.pool.fetch_all(&sql, w.args).await?.iter().map(journal_from_row).collect()
    }

    /// In one transaction: remember `hint.hint_id` as processed and journal
    /// it as `received`. Returns false (and writes nothing) when the hint id
    /// was processed before: the worker's exactly-once-in-effect guard.
    /// Race-safe: the primary key decides; a concurrent second insert waits
    /// for the first transaction and then finds the row.
    pub async fn record_hint(&self, hint: &Hint) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = tx
            .conn()
            .execute(
                "INSERT INTO processed_hints (hint_id, tenant, processed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (hint_id) DO NOTHING",
                args![hint.hint_id.to_string(), hint.tenant.as_str(), now_ms()],
            )
            .await?;
        if inserted == 0 {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(false);
        }
        let entry = NewJournalEntry {
            tenant: Some(hint.tenant.clone()),
            mailbox: hint.mailbox.clone(),
            kind: hint.kind,
            hint_id: Some(hint.hint_id),
            action: "received".into(),
            detail: serde_json::json!({
                "origin": hint.origin,
                "change": hint.change,
                "resource_id": hint.resource_id,
                "entity": hint.entity,
            }),
            ..NewJournalEntry::default()
        };
        insert_journal(&mut tx.conn(), &entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// True when this hint id was processed before (see [`Store::record_hint`]).
    pub async fn hint_processed(&self, hint_id: &Uuid) -> Result<bool, StoreError> {
        let n = count(
            &self.pool,
            "SELECT COUNT(*) AS n FROM processed_hints WHERE hint_id = $1",
            args![hint_id.to_string()],
        )
        .await?;
        Ok(n > 0)
    }

    /// Forgets processed hint ids older than `before`: by then no notifier
    /// still redelivers them. Returns how many were forgotten.
    pub async fn prune_processed_hints(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.pool.execute("DELETE FROM processed_hints WHERE processed_at < $1", args![ms(before)]).await
    }

    /// Deletes journal entries older than `before` (retention). Returns how
    /// many were deleted.
    pub async fn prune_journal(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.pool.execute("DELETE FROM journal WHERE at < $1", args![ms(before)]).await
    }

    // leases

    /// Takes or renews the named lease for `holder` until now + `ttl`.
    /// True when `holder` holds it afterwards: it was free, expired, or
    /// already `holder`'s. One statement, so two contenders cannot both win.
    pub async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let sql = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                   WHERE leases.holder = excluded.holder OR leases.expires_at <= $4";
        Ok(self.pool.execute(sql, args![name, holder, now.saturating_add(duration_ms(ttl)), now]).await? > 0)
    }

    /// True while someone holds the named lease (it has not expired).
    pub async fn lease_held(&self, name: &str) -> Result<bool, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM leases WHERE name = $1 AND expires_at > $2";
        Ok(count(&self.pool, sql, args![name, now_ms()]).await? > 0)
    }

    /// Gives the lease up if `holder` still holds it (so a successor can
    /// take it at once instead of waiting for the expiry).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        Ok(self.pool.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", args![name, holder]).await? > 0)
    }

    // process presence: one row per live process of a group in `leases`,
    // named "{group}/{id}", renewed by the process, expiring after a crash

    /// Marks process `id` of `group` alive until now + `ttl`, and forgets
    /// the group's rows that expired (crashed processes).
    pub async fn heartbeat_process(&self, group: &str, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = now_ms();
        let name = presence_name(group, id)?;
        let sql = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at";
        self.pool.execute(sql, args![name, id, now.saturating_add(duration_ms(ttl))]).await?;
        let sql = "DELETE FROM leases WHERE name LIKE $1 AND expires_at <= $2";
        self.pool.execute(sql, args![presence_pattern(group)?, now]).await?;
        Ok(())
    }

    /// The ids of `group`'s live processes (heartbeat not expired), sorted.
    pub async fn live_processes(&self, group: &str) -> Result<Vec<String>, StoreError> {
        let sql = "SELECT holder FROM leases WHERE name LIKE $1 AND expires_at > $2 ORDER BY holder";
        let rows = self.pool.fetch_all(sql, args![presence_pattern(group)?, now_ms()]).await?;
        rows.iter().map(|r| r.get::<String>("holder")).collect()
    }

    /// Forgets process `id` of `group` at once (a clean stop), so the
    /// others count one less without waiting for the expiry.
    pub async fn forget_process(&self, group: &str, id: &str) -> Result<bool, StoreError> {
        let name = presence_name(group, id)?;
        Ok(self.pool.execute("DELETE FROM leases WHERE name = $1", args![name]).await? > 0)
    }

    // local queue

    /// Appends ready rows, all or none.
    pub async fn local_queue_push(&self, payloads: &[Vec<u8>]) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for p in payloads {
            tx.conn()
                .execute(
                    "INSERT INTO local_queue (payload, available_at, attempts, state, created_at) \
                     VALUES ($1, $2, 0, 'ready', $3)",
                    args![p.clone(), now, now],
                )
                .await?;
        }
        tx.commit().await
    }

    /// Takes the oldest available row for `visibility`: a fresh lease, one
    /// more attempt. An expired lease makes the row available again.
    pub async fn local_queue_lease(&self, visibility: Duration) -> Result<Option<LocalQueueRow>, StoreError> {
        let now = now_ms();
        let lease = Uuid::new_v4();
        // PostgreSQL: SKIP LOCKED lets concurrent leasers pass each other;
        // SQLite serialises writers, so the single UPDATE is atomic there.
        let lock = if self.pool.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE local_queue SET lease = $1, leased_until = $2, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM local_queue \
                         WHERE state = 'ready' AND available_at <= $3 AND (lease IS NULL OR leased_until <= $3) \
                         ORDER BY available_at, id LIMIT 1{lock}) \
             RETURNING id, payload, attempts"
        );
        let args = args![lease.to_string(), now.saturating_add(duration_ms(visibility)), now];
        let Some(r) = self.pool.fetch_optional(&sql, args).await? else { return Ok(None) };
        Ok(Some(LocalQueueRow { id: r.get("id")?, payload: r.get("payload")?, attempts: attempts(&r)?, lease }))
    }

    /// Extends the lease `lease` of row `id` to `visibility` from now; false
    /// if `lease` no longer owns the row (settled, or expired and taken).
    pub async fn local_queue_extend(&self, id: i64, lease: Uuid, visibility: Duration) -> Result<bool, StoreError> {
        let sql = "UPDATE local_queue SET leased_until = $3 WHERE id = $1 AND lease = $2 AND state = 'ready'";
        let until = now_ms().saturating_add(duration_ms(visibility));
        Ok(self.pool.execute(sql, args![id, lease.to_string(), until]).await? > 0)
    }

    /// Deletes the row if `lease` still owns it.
    pub async fn local_queue_ack(&self, id: i64, lease: Uuid) -> Result<bool, StoreError> {
        let sql = "DELETE FROM local_queue WHERE id = $1 AND lease = $2 AND state = 'ready'";
        Ok(self.pool.execute(sql, args![id, lease.to_string()]).await? > 0)
    }

    /// Releases the row (if `lease` still owns it) to come back after `delay`.
    pub async fn local_queue_delay(&self, id: i64, lease: Uuid, delay: Duration) -> Result<bool, StoreError> {
        let sql = "UPDATE local_queue SET lease = NULL, leased_until = NULL, available_at = $3 \
                   WHERE id = $1 AND lease = $2 AND state = 'ready'";
        let available_at = now_ms().saturating_add(duration_ms(delay));
        Ok(self.pool.execute(sql, args![id, lease.to_string(), available_at]).await? > 0)
    }

    /// [`local_queue_delay`](Self::local_queue_delay) without counting this
    /// lease as an attempt: the next lease has this one's number again.
    pub async fn local_queue_defer(&self, id: i64, lease: Uuid, delay: Duration) -> Result<bool, StoreError> {
        let sql = "UPDATE local_queue SET lease = NULL, leased_until = NULL, available_at = $3, \
                   attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
                   WHERE id = $1 AND lease = $2 AND state = 'ready'";
        let available_at = now_ms().saturating_add(duration_ms(delay));
        Ok(self.pool.execute(sql, args![id, lease.to_string(), available_at]).await? > 0)
    }

    /// Dead-letters the row (if `lease` still owns it) with a reason.
    pub async fn local_queue_dead(&self, id: i64, lease: Uuid, reason: &str) -> Result<bool, StoreError> {
        let sql = "UPDATE local_queue SET state = 'dead', dead_reason = $3, lease = NULL, leased_until = NULL \
                   WHERE id = $1 AND lease = $2 AND state = 'ready'";
        Ok(self.pool.execute(sql, args![id, lease.to_string(), reason]).await? > 0)
    }

    pub async fn local_queue_depth(&self) -> Result<LocalQueueDepth, StoreError> {
        let sql = "SELECT \
             COUNT(*) FILTER (WHERE state = 'ready' AND available_at <= $1 AND (lease IS NULL OR leased_until <= $1)) AS ready, \
             COUNT(*) FILTER (WHERE state = 'ready' AND lease IS NOT NULL AND leased_until > $1) AS leased, \
             COUNT(*) FILTER (WHERE state = 'ready' AND available_at > $1 AND (lease IS NULL OR leased_until <= $1)) AS delayed, \
             COUNT(*) FILTER (WHERE state = 'dead') AS dead \
             FROM local_queue";
        let r = self
            .pool
            .fetch_optional(sql, args![now_ms()])
            .await?
            .ok_or_else(|| StoreError::Corrupt("no count row".into()))?;
        let n = |col: &str| -> Result<u64, StoreError> { non_negative(r.get::<i64>(col)?) };
        Ok(LocalQueueDepth { ready: n("ready")?, leased: n("leased")?, delayed: n("delayed")?, dead: n("dead")? })
    }

    /// Dead rows, oldest first.
    pub async fn local_queue_dead_list(&self, limit: usize) -> Result<Vec<LocalDeadRow>, StoreError> {
        let sql =
            "SELECT id, payload, dead_reason, attempts FROM local_queue WHERE state = 'dead' ORDER BY id LIMIT $1";
        self.pool
            .fetch_all(sql, args![limit_arg(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(LocalDeadRow {
                    id: r.get("id")?,
                    payload: r.get("payload")?,
                    reason: r.get::<Option<String>>("dead_reason")?.unwrap_or_default(),
                    attempts: attempts(r)?,
                })
            })
            .collect()
    }

    /// Moves dead rows (all of them when `ids` is empty) back to ready, with
    /// attempts reset; returns how many moved. Unknown or live ids are
    /// ignored.
    pub async fn local_queue_replay(&self, ids: &[i64]) -> Result<usize, StoreError> {
        const REPLAY: &str = "UPDATE local_queue SET state = 'ready', dead_reason = NULL, attempts = 0, \
             lease = NULL, leased_until = NULL, available_at = $1 WHERE state = 'dead'";
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut moved = 0;
        if ids.is_empty() {
            moved = tx.conn().execute(REPLAY, args![now]).await?;
        }
        for chunk in ids.chunks(IN_CHUNK) {
            let mut a = args![now];
            let marks: Vec<String> = chunk
                .iter()
                .map(|id| {
                    a.push((*id).into());
                    format!("${}", a.len())
                })
                .collect();
            moved += tx.conn().execute(&format!("{REPLAY} AND id IN ({})", marks.join(", ")), a).await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(moved).unwrap_or(usize::MAX))
    }
}

const FIELD_CLIENT_SECRET: &str = "graph.client_secret";
const FIELD_HQ_TOKEN: &str = "hellohq.token";
const FIELD_WEBHOOK_SECRETS: &str = "hellohq.webhook_secrets";

/// Associated data binding a ciphertext to its tenant and field. Tenant ids
/// cannot contain `:`, so the pair is unambiguous.
fn aad(tenant: &str, field: &str) -> String {
    format!("{tenant}:{field}")
}

async fn open_sqlite(url: &str, max_connections: u32) -> Result<Pool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|_| StoreError::Database("invalid sqlite URL (use sqlite://PATH or sqlite::memory:)".into()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit (a published hint, a link) survives a power cut,
        // not only a crash of the process.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut pool = SqlitePoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
    if in_memory {
        // One connection that never closes: the database lives as long as
        // it does, and shared-cache table locks would not honour busy_timeout.
        pool = pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
    } else {
        if let Some(parent) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        pool = pool.max_connections(max_connections);
    }
    #[cfg(unix)]
    let file = (!in_memory).then(|| options.get_filename().to_path_buf());
    #[cfg(unix)]
    if let Some(path) = &file {
        // The store holds links, cursors and encrypted secrets: owner-only,
        // like master.key. Created here with 0600 so it never exists wider.
        use std::os::unix::fs::OpenOptionsExt;
        if !path.exists() {
            let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        }
    }
    let pool = pool.connect_with(options).await.map(Pool::Sqlite).map_err(db::map_err)?;
    #[cfg(unix)]
    if let Some(path) = &file {
        // An older store (0644) and its WAL files are narrowed too.
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            if std::path::Path::new(&p).exists() {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    Ok(pool)
}

async fn open_postgres(url: &str, max_connections: u32, acquire_timeout: Duration) -> Result<Pool, StoreError> {
    // The URL may hold a password: never echo it.
    let options = PgConnectOptions::from_str(url).map_err(|_| StoreError::Database("invalid postgres URL".into()))?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
        .map(Pool::Postgres)
        .map_err(db::map_err)
}

/// Accumulates `AND col = $n` clauses for optional filters.
struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    fn new(args: Vec<Arg>) -> Where {
        Where { sql: String::new(), args }
    }

    fn and_eq(&mut self, column: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.args.push(v.into());
            self.sql.push_str(&format!(" AND {column} = ${}", self.args.len()));
        }
    }
}

/// A presence group's name: plain characters only, so that it is its own
/// `LIKE` prefix (no `%`, `_` or escape to mean anything else).
fn presence_group(group: &str) -> Result<&str, StoreError> {
    if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(StoreError::Database(format!("presence group {group:?} must be letters, digits, '-' or '.'")));
    }
    Ok(group)
}

fn presence_name(group: &str, id: &str) -> Result<String, StoreError> {
    Ok(format!("presence/{}/{id}", presence_group(group)?))
}

fn presence_pattern(group: &str) -> Result<String, StoreError> {
    Ok(format!("presence/{}/%", presence_group(group)?))
}

async fn count(pool: &Pool, sql: &str, args: Vec<Arg>) -> Result<u64, StoreError> {
    let r = pool.fetch_optional(sql, args).await?.ok_or_else(|| StoreError::Corrupt("no count row".into()))?;
    non_negative(r.get("n")?)
}

async fn insert_journal(conn: &mut Conn<'_>, e: &NewJournalEntry) -> Result<i64, StoreError> {
    let sql = "INSERT INTO journal (tenant, mailbox, kind, hint_id, action, hq_id, graph_id, detail, actor, at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
    let args = args![
        e.tenant.as_ref().map_or(SYSTEM_TENANT, TenantId::as_str),
        e.mailbox.as_ref().map(MailboxId::as_str),
        e.kind.map(Kind::as_str),
        e.hint_id.map(|h| h.to_string()),
        e.action.as_str(),
        e.hq_id.as_deref(),
        e.graph_id.as_deref(),
        e.detail.to_string(),
        e.actor.as_deref(),
        now_ms(),
    ];
    conn.fetch_optional(sql, args).await?.ok_or_else(|| StoreError::Corrupt("insert returned no id".into()))?.get("id")
}

fn mailbox_from_row(r: &Row) -> Result<Mailbox, StoreError> {
    Ok(Mailbox {
        tenant: parse_id(&r.get::<String>("tenant")?)?,
        id: parse_id(&r.get::<String>("id")?)?,
        hq_user_id: r.get("hq_user_id")?,
        state: parse_mailbox_state(&r.get::<String>("state")?)?,
        settings: json(r, "settings")?,
        last_error: r.get("last_error")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn graph_user_from_row(r: &Row) -> Result<GraphUser, StoreError> {
    let attempts: i64 = r.get("graph_user_attempts")?;
    let checked: Option<i64> = r.get("graph_user_checked_at")?;
    Ok(GraphUser {
        mailbox: parse_id(&r.get::<String>("id")?)?,
        id: r.get("graph_user_id")?,
        error: r.get("graph_user_error")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("attempts {attempts} out of range")))?,
        checked_at: checked.map(|v| DateTime::from_timestamp_millis(v).unwrap_or_default()),
    })
}

fn subscription_from_row(r: &Row) -> Result<Subscription, StoreError> {
    let digest: Vec<u8> = r.get("client_state_sha256")?;
    Ok(Subscription {
        id: r.get("id")?,
        tenant: parse_id(&r.get::<String>("tenant")?)?,
        mailbox: parse_id(&r.get::<String>("mailbox")?)?,
        kind: parse_id(&r.get::<String>("kind")?)?,
        resource: r.get("resource")?,
        client_state_sha256: digest
            .try_into()
            .map_err(|_| StoreError::Corrupt("client_state_sha256 is not 32 bytes".into()))?,
        expires_at: time(r, "expires_at")?,
        state: r.get("state")?,
        created_at: time(r, "created_at")?,
    })
}

fn link_from_row(r: &Row) -> Result<Link, StoreError> {
    Ok(Link {
        tenant: parse_id(&r.get::<String>("tenant")?)?,
        mailbox: parse_id(&r.get::<String>("mailbox")?)?,
        kind: parse_id(&r.get::<String>("kind")?)?,
        hq_id: r.get("hq_id")?,
        graph_id: r.get("graph_id")?,
        folder: r.get("folder")?,
        base: json(r, "base")?,
        hq_fingerprint: r.get("hq_fingerprint")?,
        graph_fingerprint: r.get("graph_fingerprint")?,
        hq_version: r.get("hq_version")?,
        graph_version: r.get("graph_version")?,
        state: r.get("state")?,
        updated_at: time(r, "updated_at")?,
    })
}

fn journal_from_row(r: &Row) -> Result<JournalEntry, StoreError> {
    let hint_id = match r.get::<Option<String>>("hint_id")? {
        Some(h) => Some(Uuid::parse_str(&h).map_err(|_| StoreError::Corrupt("journal hint_id is not a UUID".into()))?),
        None => None,
    };
    let opt = |col: &str| -> Result<Option<String>, StoreError> { r.get(col) };
    Ok(JournalEntry {
        id: r.get("id")?,
        tenant: parse_id(&r.get::<String>("tenant")?)?,
        mailbox: opt("mailbox")?.map(|m| parse_id(&m)).transpose()?,
        kind: opt("kind")?.map(|k| parse_id(&k)).transpose()?,
        hint_id,
        action: r.get("action")?,
        hq_id: opt("hq_id")?,
        graph_id: opt("graph_id")?,
        detail: json(r, "detail")?,
        actor: opt("actor")?,
        at: time(r, "at")?,
    })
}

fn mailbox_state_str(s: MailboxState) -> &'static str {
    match s {
        MailboxState::Pilot => "pilot",
        MailboxState::Active => "active",
        MailboxState::Disabled => "disabled",
    }
}

fn parse_mailbox_state(s: &str) -> Result<MailboxState, StoreError> {
    [MailboxState::Pilot, MailboxState::Active, MailboxState::Disabled]
        .into_iter()
        .find(|m| mailbox_state_str(*m) == s)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown mailbox state {s:?}")))
}

/// Any of our parse-don't-validate types read back from a column.
fn parse_id<T: FromStr<Err = IdError>>(s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|e: IdError| StoreError::Corrupt(e.to_string()))
}

fn json(r: &Row, col: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&r.get::<String>(col)?).map_err(|e| StoreError::Corrupt(format!("column {col}: {e}")))
}

fn time(r: &Row, col: &str) -> Result<DateTime<Utc>, StoreError> {
    let v: i64 = r.get(col)?;
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| StoreError::Corrupt(format!("column {col}: time {v} out of range")))
}

fn attempts(r: &Row) -> Result<u32, StoreError> {
    let v: i64 = r.get("attempts")?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("attempts {v} out of range")))
}

fn non_negative(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v}")))
}

/// Times are stored as unix milliseconds in both backends.
fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn now_ms() -> i64 {
    ms(Utc::now())
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn limit_arg(limit: usize) -> Arg {
    Arg::I64(i64::try_from(limit).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
