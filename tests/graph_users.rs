//! Users resolved, not assumed (issue #19 item 8), against both simulators
//! over real HTTP with the engine on a SQLite store. The Graph simulator
//! holds users whose sign-in name (UPN) is not their helloHQ work email
//! and answers `ResourceNotFound` when such an email is used as the key:
//! hqsync resolves each email to the user's object id (by `mail`, then
//! `proxyAddresses`) at provisioning, syncs and subscribes by that id, and
//! reports a user who does not resolve (connection test, journal, store)
//! without looking them up again every pass.

use std::time::Duration;

use chrono::Utc;
use hqsync::connectors::graph::{GraphClient, GraphClientConfig, GraphError};
use hqsync::engine::{Engine, Outcome};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, Origin, Queue, HINT_VERSION};
use hqsync::scheduler::{Scheduler, SchedulerSettings};
use hqsync::sim::graph::{GraphSim, GraphSimConfig};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
use hqsync::store::{Cipher, GraphCredentials, GraphUser, HellohqCredentials, JournalFilter, Store, Tenant};
use secrecy::SecretString;
use serde_json::{json, Value};

/// helloHQ's work emails (the helloHQ simulator's demo users).
const ANNA: &str = "anna.schmidt@agentur-beispiel.de";
const BEN: &str = "ben.mueller@agentur-beispiel.de";
const CLARA: &str = "clara.wagner@agentur-beispiel.de";
const DAVID: &str = "david.fischer@agentur-beispiel.de";

/// Anna signs in with another name; her mail is her helloHQ email.
const ANNA_UPN: &str = "a.schmidt@agenturbeispiel.onmicrosoft.com";
/// Ben's mail is another address; his helloHQ email is an alias of his mailbox.
const BEN_UPN: &str = "bmueller@agenturbeispiel.onmicrosoft.com";

struct H {
    graph_sim: GraphSim,
    _hq_sim: HellohqSim,
    http: reqwest::Client,
    store: Store,
    engine: Engine,
    tenant: TenantId,
    /// Addresses the simulator's mailboxes by UPN, as a test may.
    graph: GraphClient,
    /// Object id per UPN, as the simulator seeded them.
    ids: std::collections::HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl H {
    async fn start() -> H {
        let graph_sim =
            GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), GraphSimConfig::default())
                .await
                .unwrap();
        let hq_sim =
            HellohqSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), HellohqSimConfig::default())
                .await
                .unwrap();
        let http = reqwest::Client::new();
        // Anna and Ben have a UPN that is not their helloHQ email; Clara's
        // is; David has no Exchange user at all.
        let spec = json!({"mailboxes": [
            {"userPrincipalName": ANNA_UPN, "displayName": "Anna Schmidt", "mail": ANNA},
            {"userPrincipalName": BEN_UPN, "displayName": "Ben Müller", "mail": "b.mueller@agentur-beispiel.de",
             "aliases": [BEN]},
            {"userPrincipalName": CLARA, "displayName": "Clara Wagner"},
        ]});
        let r = http.post(format!("{}/_sim/seed", graph_sim.base_url())).json(&spec).send().await.unwrap();
        assert!(r.status().is_success(), "seed: {}", r.status());
        let seed: Value = r.json().await.unwrap();
        let ids = seed["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["userPrincipalName"].as_str().unwrap().to_string(), m["id"].as_str().unwrap().to_string()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
        let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
        let creds = GraphCredentials {
            entra_tenant_id: seed["tenantId"].as_str().unwrap().to_string(),
            client_id: seed["clientId"].as_str().unwrap().to_string(),
            client_secret: SecretString::from(seed["clientSecret"].as_str().unwrap().to_string()),
            graph_base: format!("{}/v1.0", graph_sim.base_url()),
            login_base: graph_sim.base_url(),
        };
        let tenant = TenantId::parse("demo").unwrap();
        let now = Utc::now();
        store
            .upsert_tenant(&Tenant {
                id: tenant.clone(),
                name: "Agentur Beispiel GmbH".into(),
                enabled: true,
                graph: creds.clone(),
                hellohq: HellohqCredentials {
                    base_url: hq_sim.base_url(),
                    token: SecretString::from(hq_sim.sync_token()),
                    webhook_secrets: vec![],
                },
                settings: json!({"pilot_mailbox": ANNA}),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let graph = GraphClient::new(&creds, GraphClientConfig::default().allowing_private_addresses()).unwrap();
        H {
            engine: Engine::new(store.clone()).allowing_private_addresses(),
            graph_sim,
            _hq_sim: hq_sim,
            http,
            store,
            tenant,
            graph,
            ids,
            _dir: dir,
        }
    }

    fn hint(&self, mailbox: Option<&str>, kind: Option<Kind>) -> Hint {
        Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: self.tenant.clone(),
            mailbox: mailbox.map(|m| MailboxId::parse(m).unwrap()),
            kind,
            entity: None,
            origin: Origin::Schedule,
            resource_id: None,
            version: None,
            subscription_id: None,
            change: Change::Resync,
            received_at: Utc::now(),
        }
    }

    async fn stop(self) {
        self.graph_sim.shutdown().await;
        self._hq_sim.shutdown().await;
    }

    async fn run(&self, h: &Hint) -> Outcome {
        self.engine.handle(h).await.unwrap_or_else(|e| panic!("hint {:?} {:?} failed: {e}", h.mailbox, h.kind))
    }

    async fn tenant_pass(&self) {
        self.run(&self.hint(None, None)).await;
    }

    async fn users(&self) -> Vec<GraphUser> {
        self.store.graph_users(&self.tenant).await.unwrap()
    }

    async fn user(&self, mailbox: &str) -> GraphUser {
        self.users().await.into_iter().find(|u| u.mailbox.as_str() == mailbox).unwrap()
    }

    /// Requests the simulator answered per route template.
    async fn requests(&self, route: &str) -> u64 {
        let s: Value = self
            .http
            .get(format!("{}/_sim/stats", self.graph_sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        s["requests"][route].as_u64().unwrap_or(0)
    }

    async fn folder_contacts(&self, upn: &str, folder: &str) -> Vec<Value> {
        let folders = self.graph.list_all(&format!("/users/{upn}/contactFolders")).await.unwrap();
        let f = folders.iter().find(|f| f["displayName"] == folder).unwrap_or_else(|| panic!("{upn}: no {folder}"));
        let id = f["id"].as_str().unwrap();
        self.graph.list_all(&format!("/users/{upn}/contactFolders/{id}/contacts")).await.unwrap()
    }

    async fn todo_titles(&self, upn: &str) -> Vec<String> {
        let lists = self.graph.list_all(&format!("/users/{upn}/todo/lists")).await.unwrap();
        let Some(l) = lists.iter().find(|l| l["displayName"] == "helloHQ") else { return vec![] };
        let path = format!("/users/{upn}/todo/lists/{}/tasks", l["id"].as_str().unwrap());
        self.graph.list_all(&path).await.unwrap().iter().map(|t| t["title"].as_str().unwrap().to_string()).collect()
    }
}

/// The simulator answers as Graph does: an email that is not the UPN is no
/// key (Outlook resources: `404 ResourceNotFound`), the user is found by
/// `mail` or by a proxy address, and any other `$filter` is refused.
#[tokio::test]
async fn an_email_is_no_key_but_finds_the_user_by_mail_or_proxy_address() {
    let h = H::start().await;
    let err = h.graph.get(&format!("/users/{ANNA}/events?$top=1")).await.unwrap_err();
    assert!(matches!(&err, GraphError::NotFound { code, .. } if code == "ResourceNotFound"), "{err:?}");
    assert!(h.graph.get(&format!("/users/{ANNA_UPN}/events?$top=1")).await.is_ok());
    let anna_id = &h.ids[ANNA_UPN];
    assert!(h.graph.get(&format!("/users/{anna_id}/events?$top=1")).await.is_ok());

    let find = |filter: &str| {
        let path = hqsync::engine::users::lookup_path(filter);
        let g = h.graph.clone();
        async move { g.get(&path).await }
    };
    let [by_mail, by_proxy] = hqsync::engine::users::lookup_filters(ANNA);
    let found = find(&by_mail).await.unwrap();
    assert_eq!(found["value"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["value"][0]["id"], anna_id.as_str());
    assert_eq!(found["value"][0]["userPrincipalName"], ANNA_UPN);
    // Her primary address is a proxy address too (`SMTP:`, compared without regard to case).
    assert_eq!(find(&by_proxy).await.unwrap()["value"][0]["id"], anna_id.as_str());
    let [ben_by_mail, ben_by_proxy] = hqsync::engine::users::lookup_filters(BEN);
    assert!(find(&ben_by_mail).await.unwrap()["value"].as_array().unwrap().is_empty());
    assert_eq!(find(&ben_by_proxy).await.unwrap()["value"][0]["id"], h.ids[BEN_UPN].as_str());
    let err = find(&format!("endsWith(mail,'{ANNA}')")).await.unwrap_err();
    assert!(
        matches!(&err, GraphError::Status { status: 400, code, .. } if code == "Request_UnsupportedQuery"),
        "{err:?}"
    );
    h.stop().await;
}

/// Anna (mail ≠ UPN) and Ben (an alias) are resolved at provisioning and
/// synced end to end by object id: contacts, To Do, subscriptions. Every
/// request keyed by their email would have been answered 404.
#[tokio::test]
async fn a_user_whose_upn_is_not_the_email_is_synced_by_object_id() {
    let h = H::start().await;
    h.tenant_pass().await;
    let anna = h.user(ANNA).await;
    assert_eq!(anna.id.as_deref(), Some(h.ids[ANNA_UPN].as_str()), "{anna:?}");
    assert_eq!(h.user(BEN).await.id.as_deref(), Some(h.ids[BEN_UPN].as_str()), "found by proxy address");
    assert_eq!(h.user(CLARA).await.id.as_deref(), Some(h.ids[CLARA].as_str()));

    // The initial contact pass wrote Anna's contacts into her mailbox.
    let global = h.folder_contacts(ANNA_UPN, "HQ Globale Kontakte").await;
    assert!(global.iter().any(|c| c["surname"] == "Strauß"), "{global:?}");
    assert!(!h.folder_contacts(BEN_UPN, "HQ Globale Kontakte").await.is_empty());
    // Tasks and appointments reach Anna's mailbox through her id too.
    h.run(&h.hint(Some(ANNA), Some(Kind::Task))).await;
    let titles = h.todo_titles(ANNA_UPN).await;
    assert!(titles.iter().any(|t| t.starts_with("Texte")), "{titles:?}");
    h.run(&h.hint(Some(ANNA), Some(Kind::Appointment))).await;
    h.run(&h.hint(Some(BEN), Some(Kind::Contact))).await;

    // The scheduler subscribes to Anna's mailbox under her id.
    let queue = Queue::open(&hqsync::config::Config::default().queue, &h.store).await.unwrap();
    let state = hqsync::http::AppState::new(h.store.clone(), queue.clone(), Duration::from_secs(2), 1 << 20);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), shutdown.clone()));
    let settings =
        SchedulerSettings { graph: GraphClientConfig::default().allowing_private_addresses(), ..Default::default() };
    let report =
        Scheduler::new(h.store.clone(), queue, &ingress, settings, hqsync::scheduler::system_clock()).tick().await;
    let subs = h.store.list_subscriptions(&h.tenant).await.unwrap();
    let of = |m: &str| subs.iter().filter(|s| s.mailbox.as_str() == m).map(|s| s.resource.clone()).collect::<Vec<_>>();
    let anna_subs = of(ANNA);
    assert_eq!(anna_subs.len(), 4, "events, both contact folders, To Do: {anna_subs:?} ({:?})", report.errors);
    assert!(anna_subs.iter().all(|r| r.starts_with(&format!("users/{}/", h.ids[ANNA_UPN]))), "{anna_subs:?}");
    assert_eq!(of(BEN).len(), 4, "{:?}", report.errors);
    assert!(of(DAVID).is_empty(), "no subscription for a user who did not resolve");
    assert!(!report.errors.iter().any(|e| e.contains(ANNA) || e.contains(BEN)), "{:?}", report.errors);
    shutdown.cancel();
    h.stop().await;
}

/// David has no Exchange user: recorded with the fix and journalled once,
/// his mailbox gets no pass, his hints are dropped, and he is looked up
/// again only after the tenant changes (e.g. a connection test) or his
/// delay, never every pass. The connection test names him with the fix
/// and checks the pilot (Anna, UPN ≠ email) by her id.
#[tokio::test]
async fn a_user_who_does_not_resolve_is_reported_and_not_looked_up_every_pass() {
    let h = H::start().await;
    h.tenant_pass().await;
    let david = h.user(DAVID).await;
    assert_eq!((david.id.as_deref(), david.attempts), (None, 1), "{david:?}");
    let why = david.error.clone().unwrap();
    assert!(why.contains(&format!("no Graph user has {DAVID} as mail or proxy address")), "{why}");
    assert!(why.contains("fix:"), "{why}");
    let journal = h
        .store
        .list_journal(&JournalFilter { tenant: Some(h.tenant.clone()), limit: 1000, ..Default::default() })
        .await
        .unwrap();
    let unresolved: Vec<_> = journal.iter().filter(|e| e.action == "graph_user_unresolved").collect();
    assert_eq!(unresolved.len(), 1, "{unresolved:?}");
    assert_eq!(unresolved[0].mailbox.as_ref().map(|m| m.as_str()), Some(DAVID));

    let lookups = h.requests("GET /users").await;
    // Anna and Clara by mail (1 each), Ben and David by mail then proxy address (2 each).
    assert_eq!(lookups, 6, "each of the four was looked up once");
    for _ in 0..3 {
        h.tenant_pass().await;
    }
    assert_eq!(h.requests("GET /users").await, lookups, "no lookup on later passes");
    assert_eq!(h.user(DAVID).await.attempts, 1);
    // A hint for David's mailbox is dropped without a Graph request.
    let before = h.requests("GET /users/{user}/contactFolders").await;
    assert_eq!(h.run(&h.hint(Some(DAVID), Some(Kind::Contact))).await, Outcome::Applied);
    assert_eq!(h.requests("GET /users/{user}/contactFolders").await, before);

    // The connection test: David named with the fix; the pilot Anna's
    // calendar, contacts and To Do read through her id.
    let t = h.store.get_tenant(&h.tenant).await.unwrap().unwrap();
    let cfg = GraphClientConfig::default().allowing_private_addresses();
    let report = hqsync::conntest::run(&h.store, "http://127.0.0.1:9", &t, &cfg).await;
    let check = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}"));
    let users = check("graph_users");
    assert!(!users.ok, "{users:?}");
    assert!(users.detail.contains(DAVID) && users.detail.contains("no Graph user"), "{}", users.detail);
    assert!(!users.detail.contains(ANNA), "Anna resolves: {}", users.detail);
    assert!(users.fix.as_deref().unwrap_or_default().contains("work email"), "{users:?}");
    for name in ["calendar", "contacts", "todo"] {
        assert!(check(name).ok, "{:?}", check(name));
    }
    // The test stored the tenant's capabilities (its record changed): the
    // next pass looks David up again, once.
    h.tenant_pass().await;
    assert_eq!(h.user(DAVID).await.attempts, 2);
    let after = h.requests("GET /users").await;
    h.tenant_pass().await;
    assert_eq!(h.requests("GET /users").await, after);
    h.stop().await;
}
