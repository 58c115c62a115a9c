//! The store's contract, run against both backends: every case below runs
//! once on a fresh SQLite file (`sqlite::…`) and once on a fresh PostgreSQL
//! database (`postgres::…`, skipped loudly outside CI when no server runs).

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hqsync::model::capabilities::Capabilities;
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, HqEntity, Origin, HINT_VERSION};
use hqsync::store::{
    Cipher, CryptoError, GraphCredentials, HellohqCredentials, JournalFilter, Link, Mailbox, MailboxState,
    NewJournalEntry, Store, StoreError, Subscription, Tenant, SYSTEM_TENANT,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

// ---------------------------------------------------------------- harness

fn cipher() -> Cipher {
    Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()
}

/// A case's panic, carried past the cleanup.
type Panic = Box<dyn std::any::Any + Send>;

/// Runs `case` on a fresh store and closes it, returning the case's panic.
async fn run_case<F, Fut>(url: &str, case: F) -> Result<(), Panic>
where
    F: FnOnce(Store, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = match Store::open(url, 5, cipher()).await {
        Ok(store) => store,
        Err(e) => return Err(Box::new(format!("open store: {e}"))),
    };
    let outcome = tokio::spawn(case(store.clone(), url.to_owned())).await;
    store.close().await;
    outcome.map_err(|e| e.into_panic())
}

async fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Store, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: `open` must create it.
    let url = format!("sqlite://{}", dir.path().join("state/hqsync.db").display());
    if let Err(panic) = run_case(&url, case).await {
        std::panic::resume_unwind(panic);
    }
}

async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Store, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = common::fresh_postgres().await else { return };
    let outcome = run_case(&db.url, case).await;
    db.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// One `#[tokio::test]` per case and backend: `sqlite::case`, `postgres::case`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_sqlite(|store, url| super::$case(store, url)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_postgres(|store, url| super::$case(store, url)).await;
                }
            )*
        }
    };
}

contract!(
    ping_and_backend_name_match_the_url,
    tenant_round_trips_with_decrypted_secrets,
    tenant_secrets_are_ciphertext_in_the_row_and_bound_to_key_and_tenant,
    capabilities_are_kept_apart_from_the_tenants_own_updates,
    tenants_list_in_order_and_delete_cascades_but_keeps_journal,
    mailboxes_upsert_and_list_per_tenant,
    graph_user_is_kept_apart_from_the_mailboxs_own_upserts,
    subscriptions_round_trip_with_client_state_digest,
    links_are_found_by_either_id_and_updated_in_place,
    an_expected_hellohq_write_marks_only_its_link_until_the_next_upsert,
    claims_are_refreshed_and_released_only_for_their_own_run_and_never_once_complete,
    graph_only_link_is_adopted_when_hq_side_appears,
    graph_item_cannot_be_linked_to_two_hq_records,
    delete_link_matches_every_given_id_and_never_widens,
    count_links_filters_by_mailbox_and_kind,
    cursors_are_scoped_and_overwritten,
    journal_lists_newest_first_with_filters_and_limit,
    record_hint_is_true_once_then_false,
    record_hint_from_concurrent_workers_is_true_exactly_once,
    pruning_forgets_only_old_hints_and_journal_entries,
    named_lease_has_one_holder_until_it_expires_or_is_released,
    live_processes_are_counted_until_they_expire_or_are_forgotten,
    local_queue_push_lease_ack,
    expired_lease_is_released_and_stale_lease_cannot_settle,
    delayed_row_returns_only_after_its_delay,
    dead_rows_are_listed_oldest_first_and_replayed,
    local_queue_depth_counts_each_state,
    concurrent_leasers_never_share_a_row,
);

// ---------------------------------------------------------------- fixtures

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn mid(s: &str) -> MailboxId {
    MailboxId::parse(s).unwrap()
}

/// Now, truncated to what the store keeps (milliseconds).
fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: tid(id),
        name: format!("{id} GmbH"),
        enabled: true,
        graph: GraphCredentials {
            entra_tenant_id: format!("entra-{id}"),
            client_id: format!("client-{id}"),
            client_secret: SecretString::from(format!("graph-secret-{id}")),
            graph_base: "https://graph.example/v1.0".into(),
            login_base: "https://login.example".into(),
        },
        hellohq: HellohqCredentials {
            base_url: "https://api.hellohq.example".into(),
            token: SecretString::from(format!("hq-token-{id}")),
            webhook_secrets: vec![
                SecretString::from(format!("whsec_one_{id}")),
                SecretString::from(format!("whsec_two_{id}")),
            ],
        },
        settings: serde_json::json!({"rollout": {"pilot": true}}),
        created_at: now_ms(),
        updated_at: now_ms(),
    }
}

fn mailbox(tenant: &str, id: &str) -> Mailbox {
    Mailbox {
        tenant: tid(tenant),
        id: mid(id),
        hq_user_id: Some("17".into()),
        state: MailboxState::Pilot,
        settings: serde_json::json!({"kinds": ["contact"]}),
        last_error: None,
        updated_at: now_ms(),
    }
}

fn subscription(id: &str, tenant: &str, mailbox: &str) -> Subscription {
    Subscription {
        id: id.into(),
        tenant: tid(tenant),
        mailbox: mid(mailbox),
        kind: Kind::Appointment,
        resource: format!("/users/{mailbox}/events"),
        client_state_sha256: [0x5a; 32],
        expires_at: now_ms() + chrono::Duration::days(3),
        state: "active".into(),
        created_at: now_ms(),
    }
}

fn link(tenant: &str, mailbox: &str, kind: Kind, hq: Option<&str>, graph: Option<&str>) -> Link {
    Link {
        tenant: tid(tenant),
        mailbox: mid(mailbox),
        kind,
        hq_id: hq.map(Into::into),
        graph_id: graph.map(Into::into),
        folder: Some("contacts-folder".into()),
        base: serde_json::json!({"subject": "Kickoff"}),
        hq_fingerprint: Some("hq-fp-1".into()),
        graph_fingerprint: Some("graph-fp-1".into()),
        hq_version: Some("3".into()),
        graph_version: Some("W/\"etag\"".into()),
        state: "synced".into(),
        updated_at: now_ms(),
    }
}

fn hint(tenant: &str) -> Hint {
    Hint {
        v: HINT_VERSION,
        hint_id: Uuid::new_v4(),
        tenant: tid(tenant),
        mailbox: Some(mid("anna@acme.example")),
        kind: Some(Kind::Task),
        entity: Some(HqEntity::Task),
        origin: Origin::Hellohq,
        resource_id: Some("202".into()),
        version: None,
        subscription_id: None,
        change: Change::Updated,
        received_at: Utc::now(),
    }
}

fn journal(tenant: Option<&str>, mailbox: Option<&str>, kind: Option<Kind>, action: &str) -> NewJournalEntry {
    NewJournalEntry {
        tenant: tenant.map(tid),
        mailbox: mailbox.map(mid),
        kind,
        action: action.into(),
        detail: serde_json::json!({"n": action}),
        ..NewJournalEntry::default()
    }
}

/// Raw SQL on the same database, bypassing the store: for reading stored
/// bytes and for tampering.
async fn raw_exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(sql).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

async fn raw_text_columns(url: &str, sql: &str) -> String {
    use sqlx::Row;
    let mut out = String::new();
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        for row in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
            for i in 0..row.len() {
                if let Ok(Some(v)) = row.try_get::<Option<String>, _>(i) {
                    out.push_str(&v);
                    out.push('\n');
                }
            }
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for row in sqlx::query(sql).fetch_all(&pool).await.unwrap() {
            for i in 0..row.len() {
                if let Ok(Some(v)) = row.try_get::<Option<String>, _>(i) {
                    out.push_str(&v);
                    out.push('\n');
                }
            }
        }
        pool.close().await;
    }
    out
}

fn exposed(secrets: &[SecretString]) -> Vec<&str> {
    secrets.iter().map(|s| s.expose_secret()).collect()
}

// ---------------------------------------------------------------- cases

async fn ping_and_backend_name_match_the_url(store: Store, url: String) {
    store.ping().await.unwrap();
    let expected = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    assert_eq!(store.backend_name(), expected);
}

async fn tenant_round_trips_with_decrypted_secrets(store: Store, _url: String) {
    let t = tenant("acme");
    store.upsert_tenant(&t).await.unwrap();
    let back = store.get_tenant(&t.id).await.unwrap().expect("stored tenant");
    assert_eq!(back.id, t.id);
    assert_eq!(back.name, t.name);
    assert!(back.enabled);
    assert_eq!(back.graph.entra_tenant_id, "entra-acme");
    assert_eq!(back.graph.client_id, "client-acme");
    assert_eq!(back.graph.client_secret.expose_secret(), "graph-secret-acme");
    assert_eq!(back.graph.graph_base, t.graph.graph_base);
    assert_eq!(back.graph.login_base, t.graph.login_base);
    assert_eq!(back.hellohq.base_url, t.hellohq.base_url);
    assert_eq!(back.hellohq.token.expose_secret(), "hq-token-acme");
    assert_eq!(exposed(&back.hellohq.webhook_secrets), ["whsec_one_acme", "whsec_two_acme"]);
    assert_eq!(back.settings, t.settings);
    assert_eq!(back.created_at, t.created_at);

    // An update replaces fields and secrets but keeps the creation time.
    let mut changed = tenant("acme");
    changed.name = "Acme AG".into();
    changed.enabled = false;
    changed.created_at = now_ms() + chrono::Duration::days(1);
    changed.hellohq.webhook_secrets = vec![SecretString::from("whsec_rotated")];
    changed.graph.client_secret = SecretString::from("graph-secret-rotated");
    store.upsert_tenant(&changed).await.unwrap();
    let back = store.get_tenant(&t.id).await.unwrap().unwrap();
    assert_eq!(back.name, "Acme AG");
    assert!(!back.enabled);
    assert_eq!(back.graph.client_secret.expose_secret(), "graph-secret-rotated");
    assert_eq!(exposed(&back.hellohq.webhook_secrets), ["whsec_rotated"]);
    assert_eq!(back.created_at, t.created_at);

    assert!(store.get_tenant(&tid("nobody")).await.unwrap().is_none());
}

async fn capabilities_are_kept_apart_from_the_tenants_own_updates(store: Store, _url: String) {
    let t = tenant("acme");
    assert_eq!(store.get_capabilities(&t.id).await.unwrap(), Capabilities::default(), "no tenant: defaults");
    assert!(!store.set_capabilities(&t.id, &Capabilities::default()).await.unwrap(), "no tenant, nothing set");
    store.upsert_tenant(&t).await.unwrap();
    assert_eq!(store.get_capabilities(&t.id).await.unwrap(), Capabilities::default(), "never tested: defaults");
    let before = store.get_tenant(&t.id).await.unwrap().unwrap().updated_at;

    let tested = Capabilities { tested_at: Some(now_ms()), ..Default::default() };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(store.set_capabilities(&t.id, &tested).await.unwrap());
    assert_eq!(store.get_capabilities(&t.id).await.unwrap(), tested);
    let after = store.get_tenant(&t.id).await.unwrap().unwrap().updated_at;
    assert!(after > before, "a new record renews the tenant's cached clients ({before} -> {after})");

    // The tenant's own update (a PATCH, the CLI) leaves the record alone.
    let mut renamed = tenant("acme");
    renamed.name = "Acme AG".into();
    store.upsert_tenant(&renamed).await.unwrap();
    assert_eq!(store.get_capabilities(&t.id).await.unwrap(), tested);
    assert_eq!(store.get_capabilities(&tid("other")).await.unwrap(), Capabilities::default());
}

async fn tenant_secrets_are_ciphertext_in_the_row_and_bound_to_key_and_tenant(store: Store, url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_tenant(&tenant("evil")).await.unwrap();

    let raw = raw_text_columns(&url, "SELECT * FROM tenants WHERE id = 'acme'").await;
    assert!(raw.contains("client-acme"), "the raw row was read: {raw}");
    for plain in ["graph-secret-acme", "hq-token-acme", "whsec_one_acme", "whsec_two_acme"] {
        assert!(!raw.contains(plain), "{plain} is stored in plaintext");
    }

    // The same database under another master key: nothing decrypts.
    let other = Store::open(&url, 1, cipher()).await.unwrap();
    let err = other.get_tenant(&tid("acme")).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(CryptoError::Decrypt)), "{err}");
    other.close().await;

    // A ciphertext copied to another tenant does not decrypt there.
    raw_exec(
        &url,
        "UPDATE tenants SET hellohq_token_enc = (SELECT hellohq_token_enc FROM tenants WHERE id = 'acme') \
         WHERE id = 'evil'",
    )
    .await;
    let err = store.get_tenant(&tid("evil")).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(CryptoError::Decrypt)), "{err}");
    assert!(!err.to_string().contains("hq-token-acme"));
    assert!(store.get_tenant(&tid("acme")).await.unwrap().is_some());
}

async fn tenants_list_in_order_and_delete_cascades_but_keeps_journal(store: Store, _url: String) {
    for id in ["beta", "acme"] {
        store.upsert_tenant(&tenant(id)).await.unwrap();
        store.upsert_mailbox(&mailbox(id, "anna@x.example")).await.unwrap();
        store.upsert_subscription(&subscription(&format!("sub-{id}"), id, "anna@x.example")).await.unwrap();
        store.upsert_link(&link(id, "anna@x.example", Kind::Contact, Some("1"), Some("g1"))).await.unwrap();
        store.set_cursor(&tid(id), "anna@x.example/contact", "delta", "link").await.unwrap();
        store.append_journal(&journal(Some(id), None, None, "admin")).await.unwrap();
    }
    let ids: Vec<String> = store.list_tenants().await.unwrap().into_iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, ["acme", "beta"]);

    assert!(store.delete_tenant(&tid("acme")).await.unwrap());
    assert!(!store.delete_tenant(&tid("acme")).await.unwrap());

    let acme = tid("acme");
    assert!(store.get_tenant(&acme).await.unwrap().is_none());
    assert!(store.list_mailboxes(&acme).await.unwrap().is_empty());
    assert!(store.list_subscriptions(&acme).await.unwrap().is_empty());
    assert!(store.get_subscription("sub-acme").await.unwrap().is_none());
    assert_eq!(store.count_links(&acme, None, None).await.unwrap(), 0);
    assert!(store.get_cursor(&acme, "anna@x.example/contact", "delta").await.unwrap().is_none());
    let kept = store.list_journal(&JournalFilter { tenant: Some(acme), ..Default::default() }).await.unwrap();
    assert_eq!(kept.len(), 1, "the journal outlives its tenant");

    let beta = tid("beta");
    assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    assert_eq!(store.list_mailboxes(&beta).await.unwrap().len(), 1);
    assert_eq!(store.list_subscriptions(&beta).await.unwrap().len(), 1);
    assert_eq!(store.count_links(&beta, None, None).await.unwrap(), 1);
    assert!(store.get_cursor(&beta, "anna@x.example/contact", "delta").await.unwrap().is_some());
}

async fn mailboxes_upsert_and_list_per_tenant(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_tenant(&tenant("beta")).await.unwrap();
    store.upsert_mailbox(&mailbox("acme", "zoe@acme.example")).await.unwrap();
    store.upsert_mailbox(&mailbox("acme", "anna@acme.example")).await.unwrap();
    store.upsert_mailbox(&mailbox("beta", "anna@acme.example")).await.unwrap();

    let mut m = mailbox("acme", "anna@acme.example");
    m.state = MailboxState::Active;
    m.hq_user_id = None;
    m.last_error = Some("token expired".into());
    m.settings = serde_json::json!({"kinds": ["task"]});
    store.upsert_mailbox(&m).await.unwrap();

    let got = store.get_mailbox(&tid("acme"), &mid("anna@acme.example")).await.unwrap().unwrap();
    assert_eq!((got.tenant.clone(), got.id.clone()), (m.tenant.clone(), m.id.clone()));
    assert_eq!(got.state, MailboxState::Active);
    assert_eq!(got.hq_user_id, None);
    assert_eq!(got.last_error.as_deref(), Some("token expired"));
    assert_eq!(got.settings, m.settings);

    let listed: Vec<String> =
        store.list_mailboxes(&tid("acme")).await.unwrap().into_iter().map(|m| m.id.to_string()).collect();
    assert_eq!(listed, ["anna@acme.example", "zoe@acme.example"]);
    assert_eq!(store.list_mailboxes(&tid("beta")).await.unwrap()[0].state, MailboxState::Pilot);
    assert!(store.get_mailbox(&tid("beta"), &mid("zoe@acme.example")).await.unwrap().is_none());
}

async fn graph_user_is_kept_apart_from_the_mailboxs_own_upserts(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_mailbox(&mailbox("acme", "anna@acme.example")).await.unwrap();
    store.upsert_mailbox(&mailbox("acme", "ben@acme.example")).await.unwrap();
    let user =
        |users: &[hqsync::store::GraphUser], m: &str| users.iter().find(|u| u.mailbox.as_str() == m).cloned().unwrap();
    let fresh = store.graph_users(&tid("acme")).await.unwrap();
    assert_eq!(fresh.len(), 2);
    assert_eq!((user(&fresh, "ben@acme.example").id, user(&fresh, "ben@acme.example").attempts), (None, 0));
    assert!(user(&fresh, "ben@acme.example").checked_at.is_none());

    let (acme, anna, ben) = (tid("acme"), mid("anna@acme.example"), mid("ben@acme.example"));
    assert!(store.set_graph_user(&acme, &anna, Ok("0a1b-id")).await.unwrap());
    assert!(store.set_graph_user(&acme, &ben, Err("no Graph user has mail ben@acme.example")).await.unwrap());
    assert!(store.set_graph_user(&acme, &ben, Err("still none")).await.unwrap());
    assert!(!store.set_graph_user(&acme, &mid("zoe@acme.example"), Ok("x")).await.unwrap(), "no such mailbox");
    // The mailbox's own upsert (state, settings, errors) leaves the user alone.
    let mut m = mailbox("acme", "anna@acme.example");
    m.state = MailboxState::Active;
    store.upsert_mailbox(&m).await.unwrap();

    let users = store.graph_users(&acme).await.unwrap();
    let a = user(&users, "anna@acme.example");
    assert_eq!((a.id.as_deref(), a.error.as_deref(), a.attempts), (Some("0a1b-id"), None, 0));
    assert!(a.checked_at.is_some());
    let b = user(&users, "ben@acme.example");
    assert_eq!((b.id.as_deref(), b.error.as_deref(), b.attempts), (None, Some("still none"), 2));
    // Resolved later: the error and the count are cleared.
    assert!(store.set_graph_user(&acme, &ben, Ok("0c2d-id")).await.unwrap());
    let b = user(&store.graph_users(&acme).await.unwrap(), "ben@acme.example");
    assert_eq!((b.id.as_deref(), b.error, b.attempts), (Some("0c2d-id"), None, 0));
}

async fn subscriptions_round_trip_with_client_state_digest(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let mut s = subscription("sub-1", "acme", "anna@acme.example");
    s.client_state_sha256 = std::array::from_fn(|i| i as u8);
    store.upsert_subscription(&s).await.unwrap();
    store.upsert_subscription(&subscription("sub-2", "acme", "bert@acme.example")).await.unwrap();
    assert_eq!(store.get_subscription("sub-1").await.unwrap(), Some(s.clone()));

    // Renewal moves the expiry and state; the creation time stays.
    let mut renewed = s.clone();
    renewed.expires_at = s.expires_at + chrono::Duration::days(2);
    renewed.state = "renewed".into();
    renewed.created_at = s.created_at + chrono::Duration::hours(1);
    store.upsert_subscription(&renewed).await.unwrap();
    let got = store.get_subscription("sub-1").await.unwrap().unwrap();
    assert_eq!(got.expires_at, renewed.expires_at);
    assert_eq!(got.state, "renewed");
    assert_eq!(got.created_at, s.created_at);
    assert_eq!(got.client_state_sha256, s.client_state_sha256);

    let ids: Vec<String> = store.list_subscriptions(&tid("acme")).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["sub-1", "sub-2"]);
    assert!(store.delete_subscription(&TenantId::parse("acme").unwrap(), "sub-1").await.unwrap());
    assert!(!store.delete_subscription(&TenantId::parse("acme").unwrap(), "sub-1").await.unwrap());
    assert!(store.get_subscription("sub-1").await.unwrap().is_none());
}

async fn links_are_found_by_either_id_and_updated_in_place(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let (t, m) = (tid("acme"), mid("anna@acme.example"));
    let l = link("acme", "anna@acme.example", Kind::Contact, Some("101"), Some("AAMk=1"));
    store.upsert_link(&l).await.unwrap();

    let by_hq = store.get_link_by_hq(&t, &m, Kind::Contact, "101").await.unwrap().unwrap();
    let by_graph = store.get_link_by_graph(&t, &m, Kind::Contact, "AAMk=1").await.unwrap().unwrap();
    assert_eq!(by_hq, by_graph);
    assert_eq!(Link { updated_at: l.updated_at, ..by_hq.clone() }, l);
    // Kind and mailbox are part of the key.
    assert!(store.get_link_by_hq(&t, &m, Kind::Task, "101").await.unwrap().is_none());
    assert!(store.get_link_by_hq(&t, &mid("bert@acme.example"), Kind::Contact, "101").await.unwrap().is_none());

    let mut next = l.clone();
    next.graph_id = Some("AAMk=2".into());
    next.hq_fingerprint = Some("hq-fp-2".into());
    next.base = serde_json::json!({"subject": "Kickoff v2"});
    store.upsert_link(&next).await.unwrap();
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 1);
    let got = store.get_link_by_hq(&t, &m, Kind::Contact, "101").await.unwrap().unwrap();
    assert_eq!(got.graph_id.as_deref(), Some("AAMk=2"));
    assert_eq!(got.hq_fingerprint.as_deref(), Some("hq-fp-2"));
    assert_eq!(got.base, next.base);
    assert!(store.get_link_by_graph(&t, &m, Kind::Contact, "AAMk=1").await.unwrap().is_none());
}

async fn an_expected_hellohq_write_marks_only_its_link_until_the_next_upsert(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let (t, m) = (tid("acme"), mid("anna@acme.example"));
    let l = link("acme", "anna@acme.example", Kind::Contact, Some("101"), Some("g1"));
    store.upsert_link(&l).await.unwrap();
    store.upsert_link(&link("acme", "bert@acme.example", Kind::Contact, Some("101"), Some("g2"))).await.unwrap();
    let before = store.get_link_by_hq(&t, &m, Kind::Contact, "101").await.unwrap().unwrap();
    store.expect_hq_write(&t, &m, Kind::Contact, "101", "fp-next").await.unwrap();
    let marked = store.get_link_by_hq(&t, &m, Kind::Contact, "101").await.unwrap().unwrap();
    assert_eq!(marked, Link { hq_version: Some("fp-next".into()), ..before }, "only hq_version changes");
    let other = store.get_link_by_hq(&t, &mid("bert@acme.example"), Kind::Contact, "101").await.unwrap().unwrap();
    assert_eq!(other.hq_version.as_deref(), Some("3"), "another mailbox's link is not marked");
    store.upsert_link(&l).await.unwrap();
    let next = store.get_link_by_hq(&t, &m, Kind::Contact, "101").await.unwrap().unwrap();
    assert_eq!(next.hq_version.as_deref(), Some("3"), "the next upsert replaces the mark");
}

async fn claims_are_refreshed_and_released_only_for_their_own_run_and_never_once_complete(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let (t, m) = (tid("acme"), mid("anna@acme.example"));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let claim = |graph: &str, run: Uuid| Link {
        hq_id: None,
        base: serde_json::json!({"claim": null, "run": run}),
        state: "pending".into(),
        updated_at: now_ms() - chrono::Duration::seconds(40),
        ..link("acme", "anna@acme.example", Kind::Contact, None, Some(graph))
    };
    let noted = Link { base: serde_json::json!({"claim": null, "run": a, "note": {"since": "x"}}), ..claim("g-a1", a) };
    assert!(store.claim_link(&noted).await.unwrap());
    store.upsert_link(&claim("g-a2", a)).await.unwrap();
    assert!(store.claim_link(&claim("g-b", b)).await.unwrap());
    let at = |g: &'static str| {
        let (store, t, m) = (store.clone(), t.clone(), m.clone());
        async move { store.get_link_by_graph(&t, &m, Kind::Contact, g).await.unwrap().unwrap() }
    };
    let b_before = at("g-b").await;
    assert_eq!(store.touch_claims(&a).await.unwrap(), 2, "both of run a's claims are refreshed");
    assert_eq!(at("g-b").await, b_before, "run b's claim is not touched");
    // A claim taken over names its new run.
    let taken = at("g-b").await;
    assert!(store.take_over_claim(&taken, &serde_json::json!({"claim": null, "run": a})).await.unwrap());
    assert_eq!(store.touch_claims(&b).await.unwrap(), 0, "run b holds nothing any more");
    assert_eq!(store.touch_claims(&a).await.unwrap(), 3);
    // Completed, a link is no claim of anybody's.
    let done = Link { state: "linked".into(), hq_id: Some("301".into()), ..at("g-a2").await };
    store.upsert_link(&done).await.unwrap();
    assert_eq!(store.touch_claims(&a).await.unwrap(), 2);
    assert_eq!(store.release_claims(&a).await.unwrap(), 2);
    let released = at("g-a1").await;
    assert_eq!(released.base["released"], serde_json::json!(true));
    assert_eq!(released.base["note"], serde_json::json!({"since": "x"}), "a released claim keeps its note");
    assert_eq!(store.touch_claims(&a).await.unwrap(), 0, "a released claim is not refreshed by its run");
    assert_eq!(at("g-a2").await.base, done.base, "the completed link keeps its base");
}

async fn graph_only_link_is_adopted_when_hq_side_appears(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let (t, m) = (tid("acme"), mid("anna@acme.example"));
    store.upsert_link(&link("acme", "anna@acme.example", Kind::Task, None, Some("g-7"))).await.unwrap();
    assert!(store.get_link_by_graph(&t, &m, Kind::Task, "g-7").await.unwrap().unwrap().hq_id.is_none());

    store.upsert_link(&link("acme", "anna@acme.example", Kind::Task, Some("7"), Some("g-7"))).await.unwrap();
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 1);
    assert_eq!(store.get_link_by_hq(&t, &m, Kind::Task, "7").await.unwrap().unwrap().graph_id.as_deref(), Some("g-7"));

    let neither = link("acme", "anna@acme.example", Kind::Task, None, None);
    assert!(store.upsert_link(&neither).await.is_err());
}

async fn graph_item_cannot_be_linked_to_two_hq_records(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let t = tid("acme");
    store.upsert_link(&link("acme", "anna@acme.example", Kind::Contact, Some("1"), Some("g"))).await.unwrap();
    let err = store.upsert_link(&link("acme", "anna@acme.example", Kind::Contact, Some("2"), Some("g"))).await;
    assert!(matches!(err, Err(StoreError::Database(_))), "{err:?}");
    let kept = store.get_link_by_graph(&t, &mid("anna@acme.example"), Kind::Contact, "g").await.unwrap().unwrap();
    assert_eq!(kept.hq_id.as_deref(), Some("1"));
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 1);

    // The same ids in another mailbox or kind are another pairing.
    store.upsert_link(&link("acme", "bert@acme.example", Kind::Contact, Some("1"), Some("g"))).await.unwrap();
    store.upsert_link(&link("acme", "anna@acme.example", Kind::Task, Some("1"), Some("g"))).await.unwrap();
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 3);
}

async fn delete_link_matches_every_given_id_and_never_widens(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    let (t, m) = (tid("acme"), mid("anna@acme.example"));
    for (hq, graph) in [("1", "g1"), ("2", "g2"), ("3", "g3")] {
        store.upsert_link(&link("acme", "anna@acme.example", Kind::Contact, Some(hq), Some(graph))).await.unwrap();
    }
    assert!(!store.delete_link(&t, &m, Kind::Contact, None, None).await.unwrap());
    assert!(!store.delete_link(&t, &m, Kind::Contact, Some("1"), Some("g2")).await.unwrap());
    assert!(!store.delete_link(&t, &m, Kind::Task, Some("1"), None).await.unwrap());
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 3);

    assert!(store.delete_link(&t, &m, Kind::Contact, Some("1"), None).await.unwrap());
    assert!(store.delete_link(&t, &m, Kind::Contact, None, Some("g2")).await.unwrap());
    assert!(store.delete_link(&t, &m, Kind::Contact, Some("3"), Some("g3")).await.unwrap());
    assert!(!store.delete_link(&t, &m, Kind::Contact, Some("1"), None).await.unwrap());
    assert_eq!(store.count_links(&t, None, None).await.unwrap(), 0);
}

async fn count_links_filters_by_mailbox_and_kind(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_tenant(&tenant("beta")).await.unwrap();
    let rows = [
        ("acme", "anna@x.example", Kind::Contact, "1"),
        ("acme", "anna@x.example", Kind::Contact, "2"),
        ("acme", "anna@x.example", Kind::Task, "3"),
        ("acme", "bert@x.example", Kind::Contact, "4"),
        ("beta", "anna@x.example", Kind::Contact, "5"),
    ];
    for (t, m, k, hq) in rows {
        store.upsert_link(&link(t, m, k, Some(hq), None)).await.unwrap();
    }
    let (acme, anna) = (tid("acme"), mid("anna@x.example"));
    assert_eq!(store.count_links(&acme, None, None).await.unwrap(), 4);
    assert_eq!(store.count_links(&acme, Some(&anna), None).await.unwrap(), 3);
    assert_eq!(store.count_links(&acme, None, Some(Kind::Contact)).await.unwrap(), 3);
    assert_eq!(store.count_links(&acme, Some(&anna), Some(Kind::Task)).await.unwrap(), 1);
    assert_eq!(store.count_links(&acme, Some(&anna), Some(Kind::Appointment)).await.unwrap(), 0);
    assert_eq!(store.count_links(&tid("beta"), None, None).await.unwrap(), 1);
}

async fn cursors_are_scoped_and_overwritten(store: Store, _url: String) {
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.upsert_tenant(&tenant("beta")).await.unwrap();
    let acme = tid("acme");
    assert!(store.get_cursor(&acme, "anna", "delta").await.unwrap().is_none());
    store.set_cursor(&acme, "anna", "delta", "https://graph/delta?token=1").await.unwrap();
    store.set_cursor(&acme, "anna", "watermark", "2026-11-27T10:00:00Z").await.unwrap();
    store.set_cursor(&acme, "bert", "delta", "bert-1").await.unwrap();
    store.set_cursor(&tid("beta"), "anna", "delta", "beta-1").await.unwrap();
    store.set_cursor(&acme, "anna", "delta", "https://graph/delta?token=2").await.unwrap();

    assert_eq!(store.get_cursor(&acme, "anna", "delta").await.unwrap().as_deref(), Some("https://graph/delta?token=2"));
    assert_eq!(store.get_cursor(&acme, "anna", "watermark").await.unwrap().as_deref(), Some("2026-11-27T10:00:00Z"));
    assert_eq!(store.get_cursor(&acme, "bert", "delta").await.unwrap().as_deref(), Some("bert-1"));
    assert_eq!(store.get_cursor(&tid("beta"), "anna", "delta").await.unwrap().as_deref(), Some("beta-1"));
}

async fn journal_lists_newest_first_with_filters_and_limit(store: Store, _url: String) {
    let h = Uuid::new_v4();
    let mut ids = Vec::new();
    for e in [
        journal(Some("acme"), Some("anna@x.example"), Some(Kind::Contact), "created"),
        journal(Some("acme"), Some("anna@x.example"), Some(Kind::Task), "updated"),
        journal(Some("acme"), Some("bert@x.example"), Some(Kind::Contact), "conflict"),
        NewJournalEntry {
            hint_id: Some(h),
            hq_id: Some("55".into()),
            graph_id: Some("g55".into()),
            actor: Some("admin@acme".into()),
            ..journal(Some("acme"), Some("anna@x.example"), Some(Kind::Contact), "updated")
        },
        journal(Some("beta"), None, None, "admin"),
        journal(None, None, None, "admin"),
    ] {
        ids.push(store.append_journal(&e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");

    let all = store.list_journal(&JournalFilter::default()).await.unwrap();
    let listed: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>(), "newest first");
    assert_eq!(all[0].tenant.as_str(), SYSTEM_TENANT);

    let full = &all[2];
    assert_eq!(full.tenant, tid("acme"));
    assert_eq!(full.mailbox, Some(mid("anna@x.example")));
    assert_eq!(full.kind, Some(Kind::Contact));
    assert_eq!(full.hint_id, Some(h));
    assert_eq!(full.action, "updated");
    assert_eq!(full.hq_id.as_deref(), Some("55"));
    assert_eq!(full.graph_id.as_deref(), Some("g55"));
    assert_eq!(full.actor.as_deref(), Some("admin@acme"));
    assert_eq!(full.detail, serde_json::json!({"n": "updated"}));

    let count = |f: JournalFilter| {
        let store = store.clone();
        async move { store.list_journal(&f).await.unwrap().into_iter().map(|e| e.id).collect::<Vec<_>>() }
    };
    let acme = || Some(tid("acme"));
    assert_eq!(count(JournalFilter { tenant: acme(), ..Default::default() }).await, [ids[3], ids[2], ids[1], ids[0]]);
    assert_eq!(
        count(JournalFilter { tenant: acme(), mailbox: Some(mid("anna@x.example")), ..Default::default() }).await,
        [ids[3], ids[1], ids[0]]
    );
    assert_eq!(
        count(JournalFilter { tenant: acme(), kind: Some(Kind::Contact), ..Default::default() }).await,
        [ids[3], ids[2], ids[0]]
    );
    assert_eq!(count(JournalFilter { hint_id: Some(h), ..Default::default() }).await, [ids[3]]);
    assert_eq!(count(JournalFilter { action: Some("admin".into()), ..Default::default() }).await, [ids[5], ids[4]]);
    assert_eq!(count(JournalFilter { tenant: acme(), limit: 2, ..Default::default() }).await, [ids[3], ids[2]]);
}

async fn record_hint_is_true_once_then_false(store: Store, _url: String) {
    let h = hint("acme");
    assert!(store.record_hint(&h).await.unwrap());
    assert!(!store.record_hint(&h).await.unwrap());
    assert!(store.record_hint(&hint("acme")).await.unwrap(), "another hint id is new");

    let entries = store.list_journal(&JournalFilter { hint_id: Some(h.hint_id), ..Default::default() }).await.unwrap();
    assert_eq!(entries.len(), 1, "the duplicate wrote nothing");
    let e = &entries[0];
    assert_eq!(e.action, "received");
    assert_eq!(e.tenant, h.tenant);
    assert_eq!(e.mailbox, h.mailbox);
    assert_eq!(e.kind, h.kind);
    assert_eq!(
        e.detail,
        serde_json::json!({"origin": "hellohq", "change": "updated", "resource_id": "202", "entity": "task"})
    );
}

async fn record_hint_from_concurrent_workers_is_true_exactly_once(store: Store, _url: String) {
    for _ in 0..5 {
        let h = hint("acme");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (store, h) = (store.clone(), h.clone());
                tokio::spawn(async move { store.record_hint(&h).await.unwrap() })
            })
            .collect();
        let mut firsts = 0;
        for t in tasks {
            firsts += usize::from(t.await.unwrap());
        }
        assert_eq!(firsts, 1);
        let f = JournalFilter { hint_id: Some(h.hint_id), ..Default::default() };
        assert_eq!(store.list_journal(&f).await.unwrap().len(), 1);
    }
}

async fn pruning_forgets_only_old_hints_and_journal_entries(store: Store, _url: String) {
    let h = hint("acme");
    assert!(store.record_hint(&h).await.unwrap());
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.prune_processed_hints(hour_ago).await.unwrap(), 0);
    assert_eq!(store.prune_journal(hour_ago).await.unwrap(), 0);
    assert!(!store.record_hint(&h).await.unwrap(), "a recent hint is still remembered");

    let later = Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.prune_processed_hints(later).await.unwrap(), 1);
    assert_eq!(store.prune_journal(later).await.unwrap(), 1);
    assert!(store.list_journal(&JournalFilter::default()).await.unwrap().is_empty());
    assert!(store.record_hint(&h).await.unwrap(), "a forgotten hint id counts as new");
}

async fn named_lease_has_one_holder_until_it_expires_or_is_released(store: Store, _url: String) {
    assert!(store.try_acquire_lease("scheduler", "a", MINUTE).await.unwrap());
    assert!(!store.try_acquire_lease("scheduler", "b", MINUTE).await.unwrap());
    assert!(store.try_acquire_lease("scheduler", "a", Duration::from_millis(50)).await.unwrap(), "renewal");
    assert!(store.try_acquire_lease("other", "b", MINUTE).await.unwrap(), "leases are named");
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert!(store.try_acquire_lease("scheduler", "b", MINUTE).await.unwrap(), "expired lease is free");
    assert!(!store.try_acquire_lease("scheduler", "a", MINUTE).await.unwrap());
    assert!(!store.release_lease("scheduler", "a").await.unwrap(), "a no longer holds it");
    assert!(store.release_lease("scheduler", "b").await.unwrap());
    assert!(store.try_acquire_lease("scheduler", "a", MINUTE).await.unwrap(), "released lease is free");

    let contenders: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.try_acquire_lease("race", &format!("w{i}"), MINUTE).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for c in contenders {
        winners += usize::from(c.await.unwrap());
    }
    assert_eq!(winners, 1);
}

const MINUTE: Duration = Duration::from_secs(60);

async fn live_processes_are_counted_until_they_expire_or_are_forgotten(store: Store, _url: String) {
    assert!(store.live_processes("graph").await.unwrap().is_empty());
    store.heartbeat_process("graph", "p1", MINUTE).await.unwrap();
    store.heartbeat_process("graph", "p2", MINUTE).await.unwrap();
    store.heartbeat_process("graph", "p3", Duration::from_millis(50)).await.unwrap();
    // Another group, and named leases, are not processes of this group.
    store.heartbeat_process("other", "q1", MINUTE).await.unwrap();
    assert!(store.try_acquire_lease("scheduler", "p9", MINUTE).await.unwrap());
    assert_eq!(store.live_processes("graph").await.unwrap(), vec!["p1", "p2", "p3"]);
    // Renewing is idempotent: still one row per process.
    store.heartbeat_process("graph", "p1", MINUTE).await.unwrap();
    assert_eq!(store.live_processes("graph").await.unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.live_processes("graph").await.unwrap(), vec!["p1", "p2"], "p3 expired (crashed)");
    // A renewal forgets the expired rows of the group.
    store.heartbeat_process("graph", "p2", MINUTE).await.unwrap();
    assert!(!store.forget_process("graph", "p3").await.unwrap(), "p3's expired row was cleaned up");
    assert!(store.forget_process("graph", "p2").await.unwrap());
    assert_eq!(store.live_processes("graph").await.unwrap(), vec!["p1"]);
    assert_eq!(store.live_processes("other").await.unwrap(), vec!["q1"]);
    assert!(store.lease_held("scheduler").await.unwrap(), "a named lease is left alone");
    // A group name that would be a LIKE pattern is refused, not widened.
    assert!(store.live_processes("%").await.is_err());
    assert!(store.heartbeat_process("gr_ph", "x", MINUTE).await.is_err());
}

async fn local_queue_push_lease_ack(store: Store, _url: String) {
    store.local_queue_push(&[]).await.unwrap();
    store.local_queue_push(&[b"one".to_vec(), b"two".to_vec()]).await.unwrap();

    let first = store.local_queue_lease(MINUTE).await.unwrap().expect("a ready row");
    assert_eq!(first.payload, b"one");
    assert_eq!(first.attempts, 1);
    let second = store.local_queue_lease(MINUTE).await.unwrap().expect("a ready row");
    assert_eq!(second.payload, b"two");
    assert_ne!(first.lease, second.lease);
    assert!(store.local_queue_lease(MINUTE).await.unwrap().is_none(), "both rows are leased");

    assert!(!store.local_queue_ack(first.id, second.lease).await.unwrap(), "another row's lease");
    assert!(store.local_queue_ack(first.id, first.lease).await.unwrap());
    assert!(!store.local_queue_ack(first.id, first.lease).await.unwrap(), "already gone");
    assert!(store.local_queue_ack(second.id, second.lease).await.unwrap());
    assert_eq!(store.local_queue_depth().await.unwrap(), Default::default());
}

async fn expired_lease_is_released_and_stale_lease_cannot_settle(store: Store, _url: String) {
    store.local_queue_push(&[b"job".to_vec()]).await.unwrap();
    let stale = store.local_queue_lease(Duration::from_millis(50)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let fresh = store.local_queue_lease(MINUTE).await.unwrap().expect("expired lease is released");
    assert_eq!(fresh.id, stale.id);
    assert_eq!(fresh.attempts, 2);
    assert_ne!(fresh.lease, stale.lease);

    assert!(!store.local_queue_ack(stale.id, stale.lease).await.unwrap());
    assert!(!store.local_queue_delay(stale.id, stale.lease, Duration::ZERO).await.unwrap());
    assert!(!store.local_queue_dead(stale.id, stale.lease, "stale").await.unwrap());
    assert!(store.local_queue_ack(fresh.id, fresh.lease).await.unwrap());
}

async fn delayed_row_returns_only_after_its_delay(store: Store, _url: String) {
    store.local_queue_push(&[b"later".to_vec(), b"soon".to_vec()]).await.unwrap();
    let later = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    let soon = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    assert!(!store.local_queue_delay(later.id, soon.lease, MINUTE).await.unwrap(), "wrong lease");
    assert!(store.local_queue_delay(later.id, later.lease, MINUTE).await.unwrap());
    assert!(store.local_queue_delay(soon.id, soon.lease, Duration::ZERO).await.unwrap());

    let again = store.local_queue_lease(MINUTE).await.unwrap().expect("zero delay is ready at once");
    assert_eq!((again.id, again.attempts), (soon.id, 2));
    assert!(store.local_queue_lease(MINUTE).await.unwrap().is_none(), "the other row waits a minute");
    assert!(!store.local_queue_ack(later.id, later.lease).await.unwrap(), "delay gave the lease up");
}

async fn dead_rows_are_listed_oldest_first_and_replayed(store: Store, _url: String) {
    store.local_queue_push(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]).await.unwrap();
    let a = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    let b = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    let c = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    assert!(!store.local_queue_dead(a.id, b.lease, "wrong lease").await.unwrap());
    assert!(store.local_queue_dead(b.id, b.lease, "poison b").await.unwrap());
    assert!(store.local_queue_dead(a.id, a.lease, "poison a").await.unwrap());
    assert!(!store.local_queue_ack(a.id, a.lease).await.unwrap(), "a dead row has no lease");

    let dead = store.local_queue_dead_list(10).await.unwrap();
    let seen: Vec<(i64, &[u8], &str, u32)> =
        dead.iter().map(|d| (d.id, d.payload.as_slice(), d.reason.as_str(), d.attempts)).collect();
    assert_eq!(seen, [(a.id, &b"a"[..], "poison a", 1), (b.id, &b"b"[..], "poison b", 1)]);
    assert_eq!(store.local_queue_dead_list(1).await.unwrap().len(), 1);

    assert_eq!(store.local_queue_replay(&[b.id, c.id, 999_999]).await.unwrap(), 1, "only dead rows move");
    assert_eq!(store.local_queue_dead_list(10).await.unwrap().len(), 1);
    assert_eq!(store.local_queue_replay(&[]).await.unwrap(), 1, "empty means all");
    assert!(store.local_queue_dead_list(10).await.unwrap().is_empty());

    let mut replayed = Vec::new();
    while let Some(row) = store.local_queue_lease(MINUTE).await.unwrap() {
        replayed.push((row.payload.clone(), row.attempts));
    }
    replayed.sort();
    assert_eq!(replayed, [(b"a".to_vec(), 1), (b"b".to_vec(), 1)], "attempts start over");
    assert!(store.local_queue_ack(c.id, c.lease).await.unwrap(), "the live row kept its lease");
}

async fn local_queue_depth_counts_each_state(store: Store, _url: String) {
    let payloads: Vec<Vec<u8>> = (0..6).map(|i| vec![i]).collect();
    store.local_queue_push(&payloads).await.unwrap();
    let leased = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    let delayed = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    let dead = store.local_queue_lease(MINUTE).await.unwrap().unwrap();
    store.local_queue_delay(delayed.id, delayed.lease, MINUTE).await.unwrap();
    store.local_queue_dead(dead.id, dead.lease, "bad").await.unwrap();

    let depth = store.local_queue_depth().await.unwrap();
    assert_eq!((depth.ready, depth.leased, depth.delayed, depth.dead), (3, 1, 1, 1));
    store.local_queue_ack(leased.id, leased.lease).await.unwrap();
    assert_eq!(store.local_queue_depth().await.unwrap().leased, 0);
}

async fn concurrent_leasers_never_share_a_row(store: Store, _url: String) {
    let payloads: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
    store.local_queue_push(&payloads).await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(row) = store.local_queue_lease(MINUTE).await.unwrap() {
                    got.push(row.id);
                    assert!(store.local_queue_ack(row.id, row.lease).await.unwrap());
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "every row leased once");
    assert_eq!(unique.len(), 200, "no row leased twice");
    assert_eq!(store.local_queue_depth().await.unwrap(), Default::default());
}

// ---------------------------------------------------------------- SQLite only

#[tokio::test]
async fn sqlite_file_reopens_with_its_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a/b/hqsync.db").display());
    let key = Cipher::generate_key_base64();
    let store = Store::open(&url, 2, Cipher::from_base64(&key).unwrap()).await.unwrap();
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    store.local_queue_push(&[b"kept".to_vec()]).await.unwrap();
    store.close().await;

    for _ in 0..2 {
        let store = Store::open(&url, 2, Cipher::from_base64(&key).unwrap()).await.unwrap();
        let t = store.get_tenant(&tid("acme")).await.unwrap().expect("tenant survives a reopen");
        assert_eq!(t.hellohq.token.expose_secret(), "hq-token-acme");
        assert_eq!(store.local_queue_depth().await.unwrap().ready, 1);
        store.close().await;
    }
}

#[tokio::test]
async fn sqlite_memory_store_works_for_tests() {
    let store = Store::open("sqlite::memory:", 4, cipher()).await.unwrap();
    store.upsert_tenant(&tenant("acme")).await.unwrap();
    assert_eq!(store.list_tenants().await.unwrap().len(), 1);
    assert_eq!(store.backend_name(), "sqlite");
}
