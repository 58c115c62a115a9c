//! The connection test's helloHQ probes (issue 18 item 4) against every
//! setting of the simulator's knobs: each records the right capability, and
//! a sync read with the client the engine builds from those capabilities is
//! whole (every page of a long list, participants never read as empty,
//! deletions not missed).

use hqsync::connectors::graph::GraphClientConfig;
use hqsync::connectors::hellohq::client::{HellohqClient, ListQuery};
use hqsync::connectors::hellohq::poll::ChangePoller;
use hqsync::connectors::hellohq::wire::ContactPerson;
use hqsync::conntest::{self, ConnectionReport};
use hqsync::model::capabilities::{HellohqCapabilities, HqSpelling};
use hqsync::model::TenantId;
use hqsync::queue::{Change, HqEntity};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, SeedProfile};
use hqsync::store::{Cipher, GraphCredentials, HellohqCredentials, Store, Tenant};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const LISTS: &[&str] = &[
    "/v2/Users",
    "/v2/Companies",
    "/v2/ContactPersons",
    "/v2/Projects",
    "/v2/Projects/Tasks",
    "/v2/Absences",
    "/v2/CompanyTypes",
];

async fn start_sim() -> HellohqSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    HellohqSim::start(listener, HellohqSimConfig { seed: SeedProfile::Demo, ..Default::default() }).await.unwrap()
}

async fn control(sim: &HellohqSim, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new().post(format!("{}{path}", sim.base_url())).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

fn tenant_id() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// A store with the tenant pointed at `sim` (its Graph side points nowhere:
/// those checks fail at once and do not matter here).
async fn store_for(sim: &HellohqSim) -> (Store, Tenant) {
    let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
    let store = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
    let now = chrono::Utc::now();
    let t = Tenant {
        id: tenant_id(),
        name: "Acme".into(),
        enabled: true,
        graph: GraphCredentials {
            entra_tenant_id: "entra".into(),
            client_id: "client".into(),
            client_secret: SecretString::from("graph-secret".to_string()),
            graph_base: "http://127.0.0.1:1".into(),
            login_base: "http://127.0.0.1:1".into(),
        },
        hellohq: HellohqCredentials {
            base_url: sim.base_url(),
            token: SecretString::from(sim.sync_token()),
            webhook_secrets: Vec::new(),
        },
        settings: json!({}),
        created_at: now,
        updated_at: now,
    };
    store.upsert_tenant(&t).await.unwrap();
    (store, t)
}

async fn probe(store: &Store, t: &Tenant) -> ConnectionReport {
    let cfg = GraphClientConfig::default().allowing_private_addresses();
    conntest::run(store, "http://127.0.0.1:9", t, &cfg).await
}

fn checks(r: &ConnectionReport) -> Vec<(String, bool, String)> {
    r.checks.iter().map(|c| (c.name.clone(), c.ok, c.detail.clone())).collect()
}

/// The client the engine builds for the tenant from what the probe stored
/// (the same function the engine's client cache calls).
async fn engine_client(store: &Store, t: &Tenant) -> HellohqClient {
    let caps = store.get_capabilities(&t.id).await.unwrap();
    let cfg = hqsync::engine::hellohq_client_config(t, 100_000, &caps.hellohq).allowing_private_addresses();
    HellohqClient::new(cfg).unwrap()
}

/// Deletes one contact (so the deletions log is not empty), through `c`.
async fn delete_a_contact(c: &HellohqClient) -> i32 {
    let all: Vec<ContactPerson> = c.list_v2("/v2/ContactPersons", &ListQuery::default()).await.unwrap().items;
    let id = all.last().unwrap().id;
    c.delete_contact_person(id).await.unwrap();
    id
}

fn plain_client(sim: &HellohqSim) -> HellohqClient {
    let cfg = hqsync::connectors::hellohq::client::HellohqClientConfig::new(
        sim.base_url(),
        SecretString::from(sim.sync_token()),
    );
    HellohqClient::new(cfg.allowing_private_addresses()).unwrap()
}

/// Seeds 2,345 contact persons: more than two pages of 1,000.
async fn seed_many_contacts(sim: &HellohqSim) -> usize {
    let ids = control(sim, "/_sim/seed", json!({"companies": [{"name": "Viele GmbH"}]})).await;
    let company = ids["companies"][0].as_i64().unwrap();
    let contacts: Vec<Value> = (0..2345)
        .map(|i| {
            json!({"companyId": company, "lastName": format!("Kontakt {i}"), "salutation": "Herr",
                   "salutationForm": "Formal"})
        })
        .collect();
    control(sim, "/_sim/seed", json!({"contactPersons": contacts})).await;
    let r = reqwest::Client::new()
        .get(format!("{}/v2/ContactPersons?top=1&$top=1", sim.base_url()))
        .bearer_auth(sim.sync_token())
        .send()
        .await
        .unwrap();
    r.headers()["helloHQ-Count"].to_str().unwrap().parse().unwrap()
}

/// What a sync reads under the current knobs with the client built from the
/// stored capabilities: every contact of a list longer than two pages,
/// every task with the participants v1 has, and a deletion in the log.
async fn sync_reads_are_whole(sim: &HellohqSim, store: &Store, t: &Tenant, label: &str) {
    let total = seed_many_contacts(sim).await;
    assert!(total > 2000, "{label}");
    let c = engine_client(store, t).await;
    let contacts: Vec<ContactPerson> = c.list_v2("/v2/ContactPersons", &ListQuery::default()).await.unwrap().items;
    let mut ids: Vec<i32> = contacts.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "{label}: the whole list, each contact once");

    // The change poll: a first poll reports every contact, a later one the one changed.
    let poller = ChangePoller::new(&c);
    let first = poller.poll_updates(store, &t.id, HqEntity::ContactPerson).await.unwrap();
    let mut polled: Vec<String> = first.hints.iter().filter_map(|h| h.resource_id.clone()).collect();
    polled.sort_unstable();
    polled.dedup();
    assert_eq!(polled.len(), total, "{label}: a first poll reports every contact");
    first.commit(store).await.unwrap();
    let id = contacts[7].id;
    c.update_contact_person(id, |p| p.note = Some("Rückruf".into())).await.unwrap();
    let batch = poller.poll_updates(store, &t.id, HqEntity::ContactPerson).await.unwrap();
    let changed: Vec<String> = batch.hints.iter().filter_map(|h| h.resource_id.clone()).collect();
    assert_eq!(changed, vec![id.to_string()], "{label}: the change, once");
    batch.commit(store).await.unwrap();

    let tasks = c.list_tasks(&ListQuery::default()).await.unwrap();
    assert!(!tasks.is_empty(), "{label}");
    let mut with_participants = 0;
    for task in &tasks {
        let v1 = c.task_assignments(task.id).await.unwrap().len();
        let got = task
            .resource_to_tasks
            .as_ref()
            .map(|l| l.iter().filter(|a| a.user_id.is_some() || a.resource_id.is_some()).count());
        assert_eq!(got, Some(v1), "{label}: task {} participants", task.id);
        with_participants += usize::from(v1 > 0);
    }
    assert!(with_participants > 0, "{label}: the seed has tasks with participants (the check can fail)");

    // Deletions: a deletion after the watermark is seen exactly once.
    let poller = ChangePoller::new(&c);
    poller.poll_deletions(store, &t.id).await.unwrap().commit(store).await.unwrap();
    let id = delete_a_contact(&c).await;
    let batch = poller.poll_deletions(store, &t.id).await.unwrap();
    let deleted: Vec<_> = batch
        .hints
        .iter()
        .filter(|h| h.entity == Some(HqEntity::ContactPerson) && h.change == Change::Deleted)
        .filter_map(|h| h.resource_id.clone())
        .collect();
    assert_eq!(deleted, vec![id.to_string()], "{label}");
    batch.commit(store).await.unwrap();
    assert!(poller.poll_deletions(store, &t.id).await.unwrap().hints.is_empty(), "{label}");
}

#[tokio::test]
async fn the_spelling_probe_records_what_each_list_honours_and_a_sync_reads_whole_under_it() {
    type Expected = Box<dyn Fn(&str) -> HqSpelling>;
    let cases: Vec<(&str, Value, Expected)> = vec![
        ("both", json!({"spelling": "both"}), Box::new(|_| HqSpelling::Both)),
        ("bare", json!({"spelling": "bare"}), Box::new(|_| HqSpelling::Bare)),
        ("dollar", json!({"spelling": "dollar"}), Box::new(|_| HqSpelling::Dollar)),
        (
            "bare, tasks and contacts dollar",
            json!({"spelling": "bare", "spelling_per_path": {"/v2/Projects/Tasks": "dollar", "/v2/ContactPersons": "dollar"}}),
            Box::new(|p| {
                if p == "/v2/Projects/Tasks" || p == "/v2/ContactPersons" {
                    HqSpelling::Dollar
                } else {
                    HqSpelling::Bare
                }
            }),
        ),
        (
            "dollar, companies bare",
            json!({"spelling": "dollar", "spelling_per_path": {"/v2/Companies": "bare"}}),
            Box::new(|p| if p == "/v2/Companies" { HqSpelling::Bare } else { HqSpelling::Dollar }),
        ),
    ];
    for (label, knobs, expected) in cases {
        let sim = start_sim().await;
        delete_a_contact(&plain_client(&sim)).await;
        control(&sim, "/_sim/faults", knobs).await;
        let (store, t) = store_for(&sim).await;
        let r = probe(&store, &t).await;
        let caps = &r.capabilities.hellohq;
        // The demo has a single absence: nothing to compare there.
        assert_eq!(caps.spelling.get("/v2/Absences"), None, "{label}");
        for path in LISTS.iter().filter(|p| **p != "/v2/Absences") {
            assert_eq!(caps.spelling.get(*path).copied(), Some(expected(path)), "{label} {path}: {:#?}", checks(&r));
        }
        let check = r.checks.iter().find(|c| c.name == "probe_spelling").unwrap();
        assert!(r.checks.iter().filter(|c| c.name.starts_with("probe_")).all(|c| c.ok), "{label}: {:#?}", checks(&r));
        assert!(check.detail.contains("/v2/Projects/Tasks"), "{}", check.detail);
        assert_eq!(store.get_capabilities(&t.id).await.unwrap().hellohq, *caps, "{label}: stored");
        sync_reads_are_whole(&sim, &store, &t, label).await;
    }
}

#[tokio::test]
async fn with_too_few_rows_the_spelling_stays_undecided_and_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim =
        HellohqSim::start(listener, HellohqSimConfig { seed: SeedProfile::Empty, ..Default::default() }).await.unwrap();
    let (store, t) = store_for(&sim).await;
    let r = probe(&store, &t).await;
    let caps = &r.capabilities.hellohq;
    assert!(!caps.spelling.contains_key("/v2/ContactPersons"), "{caps:?}");
    assert!(!caps.spelling.contains_key("/v2/Projects/Tasks"), "{caps:?}");
    let check = r.checks.iter().find(|c| c.name == "probe_spelling").unwrap();
    assert!(check.ok && check.detail.contains("/v2/ContactPersons undecided"), "{}", check.detail);
    // Nothing decided: every other answer keeps its safe default.
    assert!(!caps.expand_assignments && !caps.deletions_filter, "{caps:?}");
    let d = r.checks.iter().find(|c| c.name == "probe_deletions_filter").unwrap();
    assert!(d.detail.contains("undecided"), "{}", d.detail);
}

#[tokio::test]
async fn the_next_link_expand_and_deletions_probes_follow_each_knob_and_a_sync_reads_whole_under_each() {
    for (label, knobs, next_links, expand, deletions) in [
        ("all on", json!({}), true, true, true),
        ("no next links", json!({"next_links": false}), false, true, true),
        ("no expand", json!({"expand_assignments": false}), true, false, true),
        ("no deletions filter", json!({"deletions_filter": false}), true, true, false),
        (
            "all off, dollar only",
            json!({"spelling": "dollar", "next_links": false, "expand_assignments": false, "deletions_filter": false}),
            false,
            false,
            false,
        ),
    ] {
        let sim = start_sim().await;
        delete_a_contact(&plain_client(&sim)).await;
        control(&sim, "/_sim/faults", knobs).await;
        let (store, t) = store_for(&sim).await;
        let r = probe(&store, &t).await;
        let got = &r.capabilities.hellohq;
        let want = HellohqCapabilities {
            spelling: got.spelling.clone(),
            next_links,
            expand_assignments: expand,
            deletions_filter: deletions,
        };
        assert_eq!(*got, want, "{label}: {:#?}", checks(&r));
        assert!(r.checks.iter().filter(|c| c.name.starts_with("probe_")).all(|c| c.ok), "{label}: {:#?}", checks(&r));
        sync_reads_are_whole(&sim, &store, &t, label).await;
    }
}

#[tokio::test]
async fn a_tenant_never_tested_reads_whole_under_every_knob_with_the_safe_defaults() {
    // The safe defaults where the server honours the bare spelling (the guide's).
    for knobs in [
        json!({"spelling": "bare", "next_links": false, "expand_assignments": false, "deletions_filter": false}),
        json!({"spelling": "both", "next_links": true, "expand_assignments": true, "deletions_filter": true}),
    ] {
        let sim = start_sim().await;
        control(&sim, "/_sim/faults", knobs.clone()).await;
        let (store, t) = store_for(&sim).await;
        assert_eq!(store.get_capabilities(&t.id).await.unwrap().hellohq, HellohqCapabilities::default());
        sync_reads_are_whole(&sim, &store, &t, &knobs.to_string()).await;
    }
}

#[tokio::test]
async fn a_tenant_never_tested_on_a_dollar_only_hellohq_gets_an_error_naming_the_fix_not_a_wrong_list() {
    let sim = start_sim().await;
    let total = seed_many_contacts(&sim).await;
    control(&sim, "/_sim/faults", json!({"spelling": "dollar"})).await;
    let (store, t) = store_for(&sim).await;
    let c = engine_client(&store, &t).await;
    // The bare `top`/`skip` are ignored: the next page repeats the first.
    let listed = c.list_v2::<ContactPerson>("/v2/ContactPersons", &ListQuery::default()).await;
    assert!(listed.is_err(), "{total} contacts read as {:?}", listed.map(|l| l.items.len()));
    // After the connection test the same reads are whole.
    let r = probe(&store, &t).await;
    assert_eq!(r.capabilities.hellohq.spelling.get("/v2/ContactPersons"), Some(&HqSpelling::Dollar));
    let c = engine_client(&store, &t).await;
    let all = c.list_v2::<ContactPerson>("/v2/ContactPersons", &ListQuery::default()).await.unwrap().items;
    assert_eq!(all.len(), total);
    assert!(ChangePoller::new(&c).poll_updates(&store, &t.id, HqEntity::ContactPerson).await.is_ok());
}
