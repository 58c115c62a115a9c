//! Tasks end to end (SPEC §4) against both simulators over real HTTP, with
//! the engine on a SQLite store: helloHQ tasks reach their assignees'
//! "helloHQ" To Do list with every field, edits flow in each allowed
//! direction with one write per edit and none back, ticking off and
//! re-opening in To Do, progress and planned effort kept exactly (the
//! footer never reaching helloHQ), Outlook's `low` surviving helloHQ edits,
//! To Do tasks created in Outlook filed in the inbox project (or
//! journalled), deletions and moves out of the list, and replays.

use chrono::Utc;
use hqsync::connectors::graph::{GraphClient, GraphClientConfig};
use hqsync::connectors::hellohq::client::{HellohqClient, HellohqClientConfig, ListQuery};
use hqsync::connectors::hellohq::wire;
use hqsync::engine::{Engine, Outcome};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, HqEntity, Origin, HINT_VERSION};
use hqsync::sim::graph::{GraphSim, GraphSimConfig};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
use hqsync::store::{Cipher, GraphCredentials, HellohqCredentials, JournalFilter, Store, Tenant};
use secrecy::SecretString;
use serde_json::{json, Value};

const ANNA: &str = "anna.schmidt@agentur-beispiel.de";
const BEN: &str = "ben.mueller@agentur-beispiel.de";
const CLARA: &str = "clara.wagner@agentur-beispiel.de";
const DAVID: &str = "david.fischer@agentur-beispiel.de";
const ALL: [&str; 4] = [ANNA, BEN, CLARA, DAVID];
const TASK_EXTENSION: &str = "io.hqsync.task";

struct H {
    graph_sim: GraphSim,
    hq_sim: HellohqSim,
    http: reqwest::Client,
    store: Store,
    engine: Engine,
    tenant: TenantId,
    graph: GraphClient,
    hq: HellohqClient,
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
        let seed: Value =
            http.get(format!("{}/_sim/seed", graph_sim.base_url())).send().await.unwrap().json().await.unwrap();
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
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        let graph = GraphClient::new(&creds, GraphClientConfig::default().allowing_private_addresses()).unwrap();
        let hq = HellohqClient::new(
            HellohqClientConfig::new(hq_sim.base_url(), SecretString::from(hq_sim.sync_token()))
                .allowing_private_addresses(),
        )
        .unwrap();
        let h = H {
            engine: Engine::new(store.clone()).allowing_private_addresses(),
            graph_sim,
            hq_sim,
            http,
            store,
            tenant,
            graph,
            hq,
            _dir: dir,
        };
        // Mailboxes from helloHQ users (the tenant pass), then each mailbox's first To Do poll.
        h.run(&h.hint(Origin::Schedule, Change::Resync, None, None, None)).await;
        for m in ALL {
            h.poll(m).await;
        }
        h
    }

    async fn set_settings(&self, settings: Value) {
        let mut t = self.store.get_tenant(&self.tenant).await.unwrap().unwrap();
        t.settings = settings;
        t.updated_at = Utc::now();
        self.store.upsert_tenant(&t).await.unwrap();
    }

    async fn set_mailbox_settings(&self, mailbox: &str, settings: Value) {
        let mut m = self.store.get_mailbox(&self.tenant, &MailboxId::parse(mailbox).unwrap()).await.unwrap().unwrap();
        m.settings = settings;
        self.store.upsert_mailbox(&m).await.unwrap();
    }

    fn hint(
        &self,
        origin: Origin,
        change: Change,
        mailbox: Option<&str>,
        entity: Option<HqEntity>,
        id: Option<&str>,
    ) -> Hint {
        Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: self.tenant.clone(),
            mailbox: mailbox.map(|m| MailboxId::parse(m).unwrap()),
            kind: Some(Kind::Task).filter(|_| mailbox.is_some() || entity.is_some()),
            entity,
            origin,
            resource_id: id.map(str::to_string),
            version: None,
            subscription_id: None,
            change,
            received_at: Utc::now(),
        }
    }

    async fn run(&self, h: &Hint) -> Outcome {
        self.engine.handle(h).await.unwrap_or_else(|e| panic!("hint {:?} failed: {e}", h.change))
    }

    /// The scheduler's periodic To Do poll of one mailbox.
    async fn poll(&self, mailbox: &str) {
        self.run(&self.hint(Origin::Schedule, Change::Resync, Some(mailbox), None, None)).await;
    }

    /// helloHQ's webhook for a task.
    async fn hq_task_changed(&self, id: i32) -> Hint {
        let h = self.hint(Origin::Hellohq, Change::Updated, None, Some(HqEntity::Task), Some(&id.to_string()));
        self.run(&h).await;
        h
    }

    async fn lists(&self, mailbox: &str) -> Vec<Value> {
        self.graph.list_all(&format!("/users/{mailbox}/todo/lists")).await.unwrap()
    }

    async fn list_id(&self, mailbox: &str, name: &str) -> String {
        let lists = self.lists(mailbox).await;
        let l =
            lists.iter().find(|l| l["displayName"] == name).unwrap_or_else(|| panic!("no list {name} in {mailbox}"));
        l["id"].as_str().unwrap().to_string()
    }

    async fn default_list(&self, mailbox: &str) -> String {
        let lists = self.lists(mailbox).await;
        lists.iter().find(|l| l["wellknownListName"] == "defaultList").unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Every task of the mailbox's "helloHQ" list, each with its extension
    /// read apart (Graph does not expand extensions on a task collection).
    async fn todo(&self, mailbox: &str) -> Vec<Value> {
        let list = self.list_id(mailbox, "helloHQ").await;
        let path = format!("/users/{mailbox}/todo/lists/{list}/tasks");
        let mut tasks = self.graph.list_all(&path).await.unwrap();
        for t in &mut tasks {
            let id = t["id"].as_str().unwrap().to_string();
            let ext = match self.graph.get(&format!("{path}/{id}/extensions/{TASK_EXTENSION}")).await {
                Ok(e) => vec![e],
                Err(hqsync::connectors::graph::GraphError::NotFound { .. }) => vec![],
                Err(e) => panic!("extension of {id}: {e}"),
            };
            t["extensions"] = Value::Array(ext);
        }
        tasks
    }

    async fn find(&self, mailbox: &str, title: &str) -> Option<Value> {
        self.todo(mailbox).await.into_iter().find(|t| t["title"] == title)
    }

    async fn patch_todo(&self, mailbox: &str, title: &str, patch: Value) -> String {
        let t = self.find(mailbox, title).await.unwrap_or_else(|| panic!("no {title} in {mailbox}"));
        let list = self.list_id(mailbox, "helloHQ").await;
        let id = t["id"].as_str().unwrap().to_string();
        self.graph.patch(&format!("/users/{mailbox}/todo/lists/{list}/tasks/{id}"), &patch, None).await.unwrap();
        id
    }

    async fn hq_tasks(&self) -> Vec<wire::Task> {
        let q = ListQuery::filter("isAppointment eq false").expand("resourceToTasks");
        self.hq.list_v2("/v2/Projects/Tasks", &q).await.unwrap().items
    }

    async fn hq_task(&self, name: &str) -> Option<wire::Task> {
        self.hq_tasks().await.into_iter().find(|t| t.name.as_deref() == Some(name))
    }

    async fn hq_id(&self, name: &str) -> i32 {
        self.hq_task(name).await.unwrap_or_else(|| panic!("no helloHQ task {name}")).id
    }

    async fn user_id(&self, mailbox: &str) -> i32 {
        let users = self.hq.list_users().await.unwrap();
        users.iter().find(|u| u.e_mail_work.as_deref() == Some(mailbox)).unwrap().id
    }

    async fn graph_writes(&self) -> u64 {
        let s: Value = self
            .http
            .get(format!("{}/_sim/stats", self.graph_sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        s["writes"]
            .as_object()
            .map(|m| m.iter().filter(|(k, _)| k.as_str() != "subscription").map(|(_, v)| v.as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    }

    async fn hq_writes(&self) -> u64 {
        let s: Value =
            self.http.get(format!("{}/_sim/stats", self.hq_sim.base_url())).send().await.unwrap().json().await.unwrap();
        s["writes"].as_object().map(|m| m.values().map(|v| v.as_u64().unwrap_or(0)).sum()).unwrap_or(0)
    }

    async fn writes(&self) -> (u64, u64) {
        (self.graph_writes().await, self.hq_writes().await)
    }

    async fn journal(&self, action: &str) -> Vec<hqsync::store::JournalEntry> {
        self.store
            .list_journal(&JournalFilter {
                tenant: Some(self.tenant.clone()),
                action: Some(action.into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.graph_sim.shutdown().await;
        self.hq_sim.shutdown().await;
    }
}

fn ext(t: &Value) -> &Value {
    &t["extensions"][0]
}

fn date_of(v: &Value) -> String {
    v["dateTime"].as_str().unwrap_or_default().get(..10).unwrap_or_default().to_string()
}

#[tokio::test]
async fn hellohq_tasks_reach_their_assignees_list_with_every_field() {
    let h = H::start().await;
    // Ben: "Wireframes erstellen" (16 h, 50 %, priority) and "Angebot Standbau nachfassen".
    let ben: Vec<String> = h.todo(BEN).await.iter().map(|t| t["title"].as_str().unwrap().to_string()).collect();
    assert_eq!(ben.len(), 2, "{ben:?}");
    let w = h.find(BEN, "Wireframes erstellen").await.unwrap();
    let row = h.hq_task("Wireframes erstellen").await.unwrap();
    assert_eq!(w["body"]["content"], "Startseite und Produktseiten\n\n— helloHQ —\nSoll: 16 h · Fortschritt: 50 %");
    assert_eq!(w["importance"], "high");
    assert_eq!(w["status"], "inProgress");
    assert_eq!(ext(&w)["percentDone"], 50);
    assert_eq!(ext(&w)["plannedEffortHours"], 16.0);
    assert_eq!(date_of(&w["startDateTime"]), row.start_on.unwrap().date_naive().to_string());
    assert_eq!(date_of(&w["dueDateTime"]), row.end_on.unwrap().date_naive().to_string());
    // Clara: her done task is ticked off; her vacation row is not a task.
    let d = h.find(CLARA, "Druckdaten prüfen").await.unwrap();
    assert_eq!(d["status"], "completed");
    assert!(d["completedDateTime"].is_object());
    assert_eq!(h.todo(CLARA).await.len(), 1, "only the task, no vacation, no appointment");
    assert_eq!(h.todo(DAVID).await.len(), 0);
    // A second poll of every mailbox writes nothing anywhere.
    let before = h.writes().await;
    for m in ALL {
        h.poll(m).await;
    }
    assert_eq!(h.writes().await, before, "a poll over synced mailboxes wrote something");
    h.stop().await;
}

#[tokio::test]
async fn every_hellohq_field_flows_out_once_and_nothing_comes_back() {
    let h = H::start().await;
    let id = h.hq_id("Texte abstimmen").await;
    h.hq.update_task(id, |t| {
        t.name = Some("Texte final abstimmen".into());
        t.description = Some("<p>mit Özlem</p>".into());
        t.start_on = None;
        t.end_on = None;
        t.start_date = Some("2027-03-01T00:00:00".parse().unwrap());
        t.end_date = Some("2027-03-05T00:00:00".parse().unwrap());
        t.is_priority = true;
        t.planned_effort = Some(6.5);
        t.percent_done = Some(30);
    })
    .await
    .unwrap();
    let (g0, q0) = h.writes().await;
    let hint = h.hq_task_changed(id).await;
    let (g1, q1) = h.writes().await;
    assert_eq!(g1 - g0, 2, "the task and its extension, once");
    assert_eq!(q1, q0, "nothing written back to helloHQ");
    let t = h.find(ANNA, "Texte final abstimmen").await.unwrap();
    assert_eq!(t["body"]["content"], "mit Özlem\n\n— helloHQ —\nSoll: 6,5 h · Fortschritt: 30 %");
    assert_eq!((date_of(&t["startDateTime"]), date_of(&t["dueDateTime"])), ("2027-03-01".into(), "2027-03-05".into()));
    assert_eq!((t["importance"].as_str(), t["status"].as_str()), (Some("high"), Some("inProgress")));
    assert_eq!((ext(&t)["percentDone"].clone(), ext(&t)["plannedEffortHours"].clone()), (json!(30), json!(6.5)));
    // The poll sees our own write in the delta: an echo, nothing written.
    h.poll(ANNA).await;
    assert_eq!(h.writes().await, (g1, q1), "an echo was written");
    // The same delivery again is a duplicate; a fresh hint for the same state writes nothing.
    assert_eq!(h.run(&hint).await, Outcome::Duplicate);
    h.hq_task_changed(id).await;
    assert_eq!(h.writes().await, (g1, q1));
    // Done in helloHQ: ticked off in To Do.
    h.hq.update_task(id, |t| {
        t.is_done = true;
        t.percent_done = Some(100);
    })
    .await
    .unwrap();
    h.hq_task_changed(id).await;
    let t = h.find(ANNA, "Texte final abstimmen").await.unwrap();
    assert_eq!(t["status"], "completed");
    assert_eq!(ext(&t)["percentDone"], 100);
    h.stop().await;
}

#[tokio::test]
async fn outlook_edits_reach_hellohq_but_title_and_body_do_not() {
    let h = H::start().await;
    let (g0, q0) = h.writes().await;
    h.patch_todo(
        BEN,
        "Angebot Standbau nachfassen",
        json!({
            "title": "Mein eigener Titel",
            "body": {"content": "Meine Notiz", "contentType": "text"},
            "importance": "high",
            "startDateTime": {"dateTime": "2027-02-01T00:00:00.0000000", "timeZone": "UTC"},
            "dueDateTime": {"dateTime": "2027-02-03T00:00:00.0000000", "timeZone": "UTC"},
        }),
    )
    .await;
    let g_user = h.graph_writes().await;
    h.poll(BEN).await;
    let (g1, q1) = h.writes().await;
    assert_eq!(g1, g_user, "nothing written to To Do for a To Do edit");
    assert_eq!(q1 - q0, 1, "one helloHQ write");
    let _ = g0;
    let row = h.hq_task("Angebot Standbau nachfassen").await.expect("the title must not change in helloHQ");
    assert!(row.is_priority);
    assert_eq!(row.start_date.map(|d| d.date().to_string()).as_deref(), Some("2027-02-01"));
    assert_eq!(row.end_date.map(|d| d.date().to_string()).as_deref(), Some("2027-02-03"));
    assert!(row.description.as_deref().unwrap_or_default().is_empty(), "the Outlook note reached helloHQ");
    assert!(h.journal("skipped").await.iter().any(|e| e.detail["reason"].as_str().unwrap_or("").contains("title")));
    // helloHQ's webhook for our own write: nothing goes anywhere.
    h.hq_task_changed(row.id).await;
    assert_eq!(h.writes().await, (g1, q1), "an echo was written");
    // The user's own title and note stay in To Do.
    let t = h.find(BEN, "Mein eigener Titel").await.unwrap();
    assert!(t["body"]["content"].as_str().unwrap().starts_with("Meine Notiz"));
    h.stop().await;
}

#[tokio::test]
async fn ticking_off_in_to_do_marks_done_and_unticking_reopens() {
    let h = H::start().await;
    let id = h.hq_id("Angebot Standbau nachfassen").await;
    h.patch_todo(BEN, "Angebot Standbau nachfassen", json!({"status": "completed"})).await;
    h.poll(BEN).await;
    let row = h.hq.get_task(id).await.unwrap();
    assert!(row.is_done);
    assert_eq!(row.percent_done, Some(100));
    h.patch_todo(BEN, "Angebot Standbau nachfassen", json!({"status": "notStarted"})).await;
    h.poll(BEN).await;
    let row = h.hq.get_task(id).await.unwrap();
    assert!(!row.is_done, "un-ticking must re-open");
    assert_eq!(row.percent_done, Some(0));
    // A task at 50 % re-opened comes back at its 50 %.
    let w = h.hq_id("Wireframes erstellen").await;
    h.patch_todo(BEN, "Wireframes erstellen", json!({"status": "completed"})).await;
    h.poll(BEN).await;
    assert!(h.hq.get_task(w).await.unwrap().is_done);
    h.patch_todo(BEN, "Wireframes erstellen", json!({"status": "notStarted"})).await;
    h.poll(BEN).await;
    let row = h.hq.get_task(w).await.unwrap();
    assert_eq!((row.is_done, row.percent_done), (false, Some(50)));
    h.stop().await;
}

#[tokio::test]
async fn progress_and_planned_effort_round_trip_exactly_and_the_footer_stays_in_outlook() {
    let h = H::start().await;
    let id = h.hq_id("Wireframes erstellen").await;
    for (p, status) in [(0, "notStarted"), (50, "inProgress"), (37, "inProgress"), (100, "completed")] {
        h.hq.update_task(id, |t| {
            t.percent_done = Some(p);
            t.is_done = p == 100;
            t.planned_effort = Some(2.5);
        })
        .await
        .unwrap();
        h.hq_task_changed(id).await;
        let t = h.find(BEN, "Wireframes erstellen").await.unwrap();
        assert_eq!(t["status"], status, "{p} %");
        assert_eq!(ext(&t)["percentDone"], p);
        assert!(t["body"]["content"].as_str().unwrap().ends_with(&format!("Soll: 2,5 h · Fortschritt: {p} %")));
        // An Outlook edit of another field makes the whole record travel back.
        let due = format!("2027-04-{:02}T00:00:00.0000000", 1 + p % 28);
        h.patch_todo(BEN, "Wireframes erstellen", json!({"dueDateTime": {"dateTime": due, "timeZone": "UTC"}})).await;
        h.poll(BEN).await;
        let row = h.hq.get_task(id).await.unwrap();
        assert_eq!(row.percent_done, Some(p), "progress {p} did not survive the round trip");
        assert_eq!(row.planned_effort, Some(2.5));
        assert_eq!(row.end_date.map(|d| d.date().to_string()), Some(due[..10].to_string()));
        let desc = row.description.unwrap_or_default();
        assert!(!desc.contains("helloHQ —") && !desc.contains("Soll:"), "the footer leaked: {desc}");
    }
    h.stop().await;
}

#[tokio::test]
async fn outlook_low_importance_survives_a_hellohq_edit() {
    let h = H::start().await;
    let id = h.hq_id("Texte abstimmen").await;
    let (_, q0) = h.writes().await;
    h.patch_todo(ANNA, "Texte abstimmen", json!({"importance": "low"})).await;
    h.poll(ANNA).await;
    assert_eq!(h.hq_writes().await, q0, "low and normal are the same to helloHQ: nothing to write");
    h.hq.update_task(id, |t| t.name = Some("Texte abstimmen (v2)".into())).await.unwrap();
    h.hq_task_changed(id).await;
    let t = h.find(ANNA, "Texte abstimmen (v2)").await.unwrap();
    assert_eq!(t["importance"], "low", "helloHQ's false flattened Outlook's low");
    // Priority in helloHQ still wins, and taking it away gives normal.
    h.hq.update_task(id, |t| t.is_priority = true).await.unwrap();
    h.hq_task_changed(id).await;
    assert_eq!(h.find(ANNA, "Texte abstimmen (v2)").await.unwrap()["importance"], "high");
    h.hq.update_task(id, |t| t.is_priority = false).await.unwrap();
    h.hq_task_changed(id).await;
    assert_eq!(h.find(ANNA, "Texte abstimmen (v2)").await.unwrap()["importance"], "normal");
    h.stop().await;
}

#[tokio::test]
async fn a_task_created_in_outlook_lands_in_the_inbox_project_or_is_journalled() {
    let h = H::start().await;
    let list = h.list_id(ANNA, "helloHQ").await;
    let mk = |title: &str| json!({"title": title, "importance": "high", "dueDateTime": {"dateTime": "2027-05-10T00:00:00.0000000", "timeZone": "UTC"}});
    // No inbox project: journalled, nothing created.
    h.graph.post(&format!("/users/{ANNA}/todo/lists/{list}/tasks"), &mk("Ohne Eingang")).await.unwrap();
    let q0 = h.hq_writes().await;
    h.poll(ANNA).await;
    assert_eq!(h.hq_writes().await, q0);
    assert!(h
        .journal("skipped")
        .await
        .iter()
        .any(|e| e.detail["reason"].as_str().unwrap_or("").contains("tasks.inbox_project")));
    // With one: the task is filed there, assigned to Anna, once.
    let projects: Vec<Value> = h.hq.list_v2("/v2/Projects", &Default::default()).await.unwrap().items;
    let inbox = projects.iter().find(|p| p["name"] == "Website-Relaunch Nordlicht").unwrap()["id"].as_i64().unwrap();
    h.set_settings(json!({"tasks": {"inbox_project": inbox}})).await;
    h.graph.post(&format!("/users/{ANNA}/todo/lists/{list}/tasks"), &mk("Rückruf Kunde")).await.unwrap();
    h.poll(ANNA).await;
    h.poll(ANNA).await;
    let made: Vec<wire::Task> =
        h.hq_tasks().await.into_iter().filter(|t| t.name.as_deref() == Some("Rückruf Kunde")).collect();
    assert_eq!(made.len(), 1, "exactly one helloHQ task");
    let t = &made[0];
    assert_eq!(t.project_id, Some(inbox as i32));
    assert!(t.is_priority);
    assert_eq!(t.end_date.map(|d| d.date().to_string()).as_deref(), Some("2027-05-10"));
    let anna = h.user_id(ANNA).await;
    assert_eq!(t.resource_to_tasks.as_ref().unwrap().iter().filter_map(|a| a.user_id).collect::<Vec<_>>(), [anna]);
    // helloHQ's webhook for it changes nothing, and it is not copied again.
    let before = h.writes().await;
    h.hq_task_changed(t.id).await;
    assert_eq!(h.writes().await, before);
    assert_eq!(h.todo(ANNA).await.iter().filter(|x| x["title"] == "Rückruf Kunde").count(), 1);
    h.stop().await;
}

#[tokio::test]
async fn deleting_on_either_side_deletes_the_counterpart_respecting_direction() {
    let h = H::start().await;
    // helloHQ deletion: Anna's copy goes.
    let id = h.hq_id("Texte abstimmen").await;
    h.hq.delete_task(id).await.unwrap();
    h.run(&h.hint(Origin::Hellohq, Change::Deleted, None, Some(HqEntity::Task), Some(&id.to_string()))).await;
    assert!(h.find(ANNA, "Texte abstimmen").await.is_none());
    // To Do deletion: the helloHQ task goes.
    let list = h.list_id(BEN, "helloHQ").await;
    let t = h.find(BEN, "Angebot Standbau nachfassen").await.unwrap();
    h.graph.delete(&format!("/users/{BEN}/todo/lists/{list}/tasks/{}", t["id"].as_str().unwrap()), None).await.unwrap();
    h.poll(BEN).await;
    assert!(h.hq_task("Angebot Standbau nachfassen").await.is_none(), "still in helloHQ");
    // Direction to_exchange: a To Do deletion does not reach helloHQ.
    h.set_mailbox_settings(CLARA, json!({"directions": {"task": "to_exchange"}})).await;
    let list = h.list_id(CLARA, "helloHQ").await;
    let t = h.find(CLARA, "Druckdaten prüfen").await.unwrap();
    h.graph
        .delete(&format!("/users/{CLARA}/todo/lists/{list}/tasks/{}", t["id"].as_str().unwrap()), None)
        .await
        .unwrap();
    h.poll(CLARA).await;
    assert!(h.hq_task("Druckdaten prüfen").await.is_some(), "deleted against the direction");
    assert!(h.journal("skipped").await.iter().any(|e| e.detail["reason"].as_str().unwrap_or("").contains("direction")));
    h.stop().await;
}

#[tokio::test]
async fn a_task_moved_out_of_the_list_is_treated_as_removed() {
    let h = H::start().await;
    // Shared with Anna first: moving it out only drops Ben's assignment.
    let id = h.hq_id("Wireframes erstellen").await;
    let anna = h.user_id(ANNA).await;
    h.hq.update_task(id, |t| {
        t.resource_to_tasks
            .get_or_insert_with(Vec::new)
            .push(wire::TaskAssignment { user_id: Some(anna), ..Default::default() })
    })
    .await
    .unwrap();
    h.hq_task_changed(id).await;
    assert!(h.find(ANNA, "Wireframes erstellen").await.is_some());
    let mv = |title: &'static str| {
        let h = &h;
        async move {
            let from = h.list_id(BEN, "helloHQ").await;
            let to = h.default_list(BEN).await;
            let t = h.find(BEN, title).await.unwrap();
            let r = h
                .http
                .post(format!("{}/_sim/todo/move", h.graph_sim.base_url()))
                .json(&json!({"mailbox": BEN, "listId": from, "taskId": t["id"], "toListId": to}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "move refused: {}", r.text().await.unwrap());
        }
    };
    mv("Wireframes erstellen").await;
    h.poll(BEN).await;
    let row = h.hq.get_task(id).await.unwrap();
    let users: Vec<i32> = row.resource_to_tasks.unwrap().iter().filter_map(|a| a.user_id).collect();
    assert_eq!(users, [anna], "only Ben's assignment is removed");
    // Ben's alone: the task is removed in helloHQ.
    mv("Angebot Standbau nachfassen").await;
    h.poll(BEN).await;
    assert!(h.hq_task("Angebot Standbau nachfassen").await.is_none());
    h.stop().await;
}

#[tokio::test]
async fn a_reassigned_task_moves_between_mailboxes() {
    let h = H::start().await;
    let id = h.hq_id("Angebot Standbau nachfassen").await;
    let david = h.user_id(DAVID).await;
    h.hq.update_task(id, |t| {
        t.resource_to_tasks = Some(vec![wire::TaskAssignment { user_id: Some(david), ..Default::default() }])
    })
    .await
    .unwrap();
    h.hq_task_changed(id).await;
    assert!(h.find(BEN, "Angebot Standbau nachfassen").await.is_none(), "left in the old assignee's list");
    assert!(h.find(DAVID, "Angebot Standbau nachfassen").await.is_some());
    // Both polls afterwards: no write (echo of the delete and create).
    let before = h.writes().await;
    h.poll(BEN).await;
    h.poll(DAVID).await;
    assert_eq!(h.writes().await, before);
    assert!(h.hq.get_task(id).await.is_ok(), "the helloHQ task must survive a reassignment");
    h.stop().await;
}

#[tokio::test]
async fn the_dry_run_lists_what_a_pass_would_do_and_writes_nothing() {
    let h = H::start().await;
    let id = h.hq_id("Texte abstimmen").await;
    h.hq.update_task(id, |t| t.name = Some("Texte prüfen".into())).await.unwrap();
    let before = h.writes().await;
    let plans = h.engine.plan_kind(&h.tenant, Some(&MailboxId::parse(ANNA).unwrap()), Kind::Task).await.unwrap();
    assert_eq!(h.writes().await, before);
    assert_eq!(plans[0].update_exchange.len(), 1, "{:?}", plans[0]);
    assert!(plans[0].update_exchange[0].contains("title"));
    h.stop().await;
}

#[tokio::test]
async fn ticking_off_reaches_hellohq_through_the_to_do_notification_without_a_poll() {
    let h = H::start().await;
    let id = h.hq_id("Angebot Standbau nachfassen").await;
    let t = h.find(BEN, "Angebot Standbau nachfassen").await.unwrap();
    let gid = t["id"].as_str().unwrap().to_string();
    let list = h.list_id(BEN, "helloHQ").await;
    let done = h
        .graph
        .patch(&format!("/users/{BEN}/todo/lists/{list}/tasks/{gid}"), &json!({"status": "completed"}), None)
        .await
        .unwrap();
    let requests = || async {
        let s: Value =
            h.http.get(format!("{}/_sim/stats", h.graph_sim.base_url())).send().await.unwrap().json().await.unwrap();
        serde_json::from_value::<std::collections::BTreeMap<String, u64>>(s["requests"].clone()).unwrap()
    };
    let before = requests().await;
    // The list's subscription names the task and the version the tick produced.
    let hint = Hint {
        version: done["@odata.etag"].as_str().map(str::to_string),
        ..h.hint(Origin::Exchange, Change::Updated, Some(BEN), None, Some(&gid))
    };
    h.run(&hint).await;
    let row = h.hq.get_task(id).await.unwrap();
    assert!(row.is_done, "done in helloHQ without a poll");
    assert_eq!(row.percent_done, Some(100));
    let spent: std::collections::BTreeMap<String, u64> = requests()
        .await
        .into_iter()
        .map(|(k, n)| (k.clone(), n - before.get(&k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(!spent.keys().any(|k| k.contains("/delta")), "no delta round: {spent:?}");
    assert_eq!(
        spent.get("GET /users/{user}/todo/lists/{listId}/tasks/{taskId}").copied(),
        Some(1),
        "one read of the task, its extension not needed (its footer agrees with the link): {spent:?}"
    );
    assert!(!spent.keys().any(|k| k.contains("/extensions")), "{spent:?}");
    // The same notification again (Graph delivers at least once): nothing more is written.
    let writes = h.writes().await;
    h.run(&hint).await;
    assert_eq!(h.writes().await, writes);
    h.stop().await;
}

/// The engine builds its helloHQ client from what the connection test found
/// (issue 18 item 4): on a helloHQ that honours only `$top`/`$filter`, the
/// tenant pass fails loudly with the safe defaults (the bare options are
/// ignored there, so a list would come back cut and unordered) and reads
/// and syncs whole once the capability record says `dollar`.
#[tokio::test]
async fn the_engine_follows_the_probed_hellohq_spelling() {
    use hqsync::model::capabilities::{Capabilities, HqSpelling};
    let h = H::start().await;
    let id = h.hq_id("Texte abstimmen").await;
    h.hq.update_task(id, |t| t.name = Some("Texte in Dollar abstimmen".into())).await.unwrap();
    let r = h.http.post(format!("{}/_sim/faults", h.hq_sim.base_url())).json(&json!({"spelling": "dollar"})).send();
    assert!(r.await.unwrap().status().is_success());
    let pass = h.hint(Origin::Schedule, Change::Resync, None, None, None);
    let err = h.engine.handle(&pass).await.expect_err("a bare-spelling pass on a dollar-only helloHQ must fail");
    assert!(err.to_string().contains("connection test"), "the error names the fix: {err}");
    assert!(h.find(ANNA, "Texte in Dollar abstimmen").await.is_none());

    let mut caps = Capabilities { tested_at: Some(Utc::now()), ..Default::default() };
    for path in ["/v2/Users", "/v2/Companies", "/v2/ContactPersons", "/v2/Projects", "/v2/Projects/Tasks"] {
        caps.hellohq.spelling.insert(path.to_string(), HqSpelling::Dollar);
    }
    h.store.set_capabilities(&h.tenant, &caps).await.unwrap();
    let pass = h.hint(Origin::Schedule, Change::Resync, None, None, None);
    h.run(&pass).await;
    assert!(h.find(ANNA, "Texte in Dollar abstimmen").await.is_some(), "the edit reached To Do");
    h.stop().await;
}

/// An idle tenant pass costs helloHQ a fixed handful of requests whatever
/// the size of the directory (issue 18 item 7): one change poll per
/// directory list and per synced entity, and the deletions log; never a
/// full listing of users, companies, projects or leads.
#[tokio::test]
async fn an_idle_tenant_pass_never_lists_the_directory_again() {
    let h = H::start().await;
    // More companies than three pages of 1,000: a full listing would show.
    let companies: Vec<Value> = (0..2345).map(|i| json!({"name": format!("Firma {i}")})).collect();
    let r = h.http.post(format!("{}/_sim/seed", h.hq_sim.base_url())).json(&json!({"companies": companies})).send();
    assert!(r.await.unwrap().status().is_success());
    // The change poll re-reads its overlap behind the watermark until the
    // overlap has passed (2 s here instead of 2 min): then it is settled.
    let overlap = std::time::Duration::from_secs(2);
    let engine = Engine::new(h.store.clone()).allowing_private_addresses().with_hellohq_poll_overlap(overlap);
    let pass = || h.hint(Origin::Schedule, Change::Resync, None, None, None);
    let run = |hint: Hint| {
        let engine = engine.clone();
        async move { engine.handle(&hint).await.unwrap_or_else(|e| panic!("tenant pass failed: {e}")) }
    };
    // The first pass after the seed reads the new companies through the
    // poll; the one after the overlap reads it once more and settles it.
    run(pass()).await;
    tokio::time::sleep(overlap + std::time::Duration::from_millis(200)).await;
    run(pass()).await;
    let requests = || async {
        let s: Value =
            h.http.get(format!("{}/_sim/stats", h.hq_sim.base_url())).send().await.unwrap().json().await.unwrap();
        serde_json::from_value::<std::collections::BTreeMap<String, u64>>(s["requests"].clone()).unwrap()
    };
    for round in 0..3 {
        let before = requests().await;
        run(pass()).await;
        let after = requests().await;
        let spent: Vec<(String, u64)> = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let total: u64 = spent.iter().map(|(_, n)| n).sum();
        assert!(spent.iter().all(|(_, n)| *n <= 2), "round {round}: a route read more than twice: {spent:?}");
        assert!(total <= 10, "round {round}: an idle pass spent {total} requests: {spent:?}");
        let companies = spent.iter().find(|(k, _)| k.contains("Companies")).map(|(_, n)| *n).unwrap_or(0);
        assert!(companies <= 1, "round {round}: companies listed again ({companies} requests): {spent:?}");
    }
    h.stop().await;
}
