//! Appointments end to end (SPEC §3) against both simulators over real
//! HTTP, with the engine on a SQLite store: each field in the directions it
//! may flow and not in the others, absences never, one helloHQ appointment
//! per meeting (attendee copies linked by iCalUId), rooms both ways, series
//! (numbered → end date, local time across DST, cancelled occurrences both
//! ways), idempotent creates, and exactly one Exchange write per edit.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Europe::Berlin;
use common::requests_since;
use hqsync::connectors::graph::{GraphClient, GraphClientConfig};
use hqsync::connectors::hellohq::client::{HellohqClient, HellohqClientConfig, ListQuery};
use hqsync::connectors::hellohq::wire::Task;
use hqsync::engine::{Engine, Outcome};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, HqEntity, Origin, HINT_VERSION};
use hqsync::sim::graph::{GraphSim, GraphSimConfig};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
use hqsync::store::{
    Cipher, GraphCredentials, HellohqCredentials, JournalFilter, Mailbox, MailboxState, Store, Tenant,
};
use secrecy::SecretString;
use serde_json::{json, Value};

const ANNA: &str = "anna.schmidt@agentur-beispiel.de";
const BEN: &str = "ben.mueller@agentur-beispiel.de";
const CLARA: &str = "clara.wagner@agentur-beispiel.de";
const DAVID: &str = "david.fischer@agentur-beispiel.de";
const ALL: [&str; 4] = [ANNA, BEN, CLARA, DAVID];

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
        H::start_with(json!({})).await
    }

    /// Both simulators on their demo data, one tenant, and a mailbox for
    /// each helloHQ user (nothing synchronised yet).
    async fn start_with(settings: Value) -> H {
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
        // Appointments made in Outlook go to the demo's internal project
        // (every helloHQ task has one) unless a test says otherwise.
        let mut settings = settings;
        if settings["appointments"].get("project").is_none() {
            let internal = internal_project(&hq_sim).await;
            settings["appointments"]["project"] = json!(internal);
        }
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
                settings,
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
        for u in hq.list_users().await.unwrap() {
            store
                .upsert_mailbox(&Mailbox {
                    tenant: tenant.clone(),
                    id: MailboxId::parse(u.e_mail_work.clone().unwrap()).unwrap(),
                    hq_user_id: Some(u.id.to_string()),
                    state: MailboxState::Active,
                    settings: json!({}),
                    last_error: None,
                    updated_at: now,
                })
                .await
                .unwrap();
        }
        H {
            engine: Engine::new(store.clone()).allowing_private_addresses(),
            graph_sim,
            hq_sim,
            http,
            store,
            tenant,
            graph,
            hq,
            _dir: dir,
        }
    }

    fn hint(&self, origin: Origin, change: Change, mailbox: Option<&str>, id: Option<&str>) -> Hint {
        Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: self.tenant.clone(),
            mailbox: mailbox.map(|m| MailboxId::parse(m).unwrap()),
            kind: Some(Kind::Appointment),
            entity: (origin == Origin::Hellohq).then_some(HqEntity::Task),
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

    /// The appointment pass over every mailbox (the initial sync).
    async fn sync_all(&self) {
        for m in ALL {
            self.pass(m).await;
        }
    }

    async fn pass(&self, mailbox: &str) {
        let h = self.hint(Origin::Schedule, Change::Resync, Some(mailbox), None);
        self.run(&h).await;
    }

    async fn hq_changed(&self, id: i32) {
        let h = self.hint(Origin::Hellohq, Change::Updated, None, Some(&id.to_string()));
        self.run(&h).await;
    }

    async fn exchange_changed(&self, mailbox: &str, graph_id: &str) {
        let h = self.hint(Origin::Exchange, Change::Updated, Some(mailbox), Some(graph_id));
        self.run(&h).await;
    }

    /// A Graph notification's hint, carrying the version it names (`resourceData.@odata.etag`).
    async fn exchange_changed_to(&self, mailbox: &str, graph_id: &str, version: &str) {
        let h = Hint {
            version: Some(version.to_string()),
            ..self.hint(Origin::Exchange, Change::Updated, Some(mailbox), Some(graph_id))
        };
        self.run(&h).await;
    }

    async fn graph_requests(&self) -> BTreeMap<String, u64> {
        common::graph_sim_requests(&self.http, &self.graph_sim.base_url()).await
    }

    /// Every event (series as masters) in a mailbox.
    async fn events(&self, mailbox: &str) -> Vec<Value> {
        self.graph.list_all(&format!("/users/{mailbox}/events")).await.unwrap()
    }

    async fn events_named(&self, mailbox: &str, subject: &str) -> Vec<Value> {
        self.events(mailbox).await.into_iter().filter(|e| e["subject"] == subject).collect()
    }

    /// The one event of that subject in a mailbox, read with times in UTC.
    async fn event(&self, mailbox: &str, subject: &str) -> Value {
        let found = self.events_named(mailbox, subject).await;
        assert_eq!(found.len(), 1, "{subject} in {mailbox}: {found:?}");
        self.graph.get_event(mailbox, found[0]["id"].as_str().unwrap()).await.unwrap()
    }

    async fn tasks(&self) -> Vec<Task> {
        self.hq.list_v2("/v2/Projects/Tasks", &ListQuery::default().expand("resourceToTasks")).await.unwrap().items
    }

    async fn rows_named(&self, name: &str) -> Vec<Task> {
        self.tasks().await.into_iter().filter(|t| t.name.as_deref() == Some(name)).collect()
    }

    async fn row(&self, name: &str) -> Task {
        let found = self.rows_named(name).await;
        assert_eq!(found.len(), 1, "{name} in helloHQ: {found:?}");
        found.into_iter().next().unwrap()
    }

    async fn user_id(&self, email: &str) -> i32 {
        self.hq.list_users().await.unwrap().iter().find(|u| u.e_mail_work.as_deref() == Some(email)).unwrap().id
    }

    async fn stats(&self, base: String) -> Value {
        self.http.get(format!("{base}/_sim/stats")).send().await.unwrap().json().await.unwrap()
    }

    /// Writes to events (creates, updates, deletes) in every mailbox.
    async fn event_writes(&self) -> u64 {
        self.stats(self.graph_sim.base_url()).await["writes"]["event"].as_u64().unwrap_or(0)
    }

    async fn hq_writes(&self) -> u64 {
        let s = self.stats(self.hq_sim.base_url()).await;
        s["writes"].as_object().map(|m| m.values().map(|v| v.as_u64().unwrap_or(0)).sum()).unwrap_or(0)
    }

    async fn writes(&self) -> (u64, u64) {
        (self.event_writes().await, self.hq_writes().await)
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

    async fn links_of(&self, hq_id: i32) -> Vec<hqsync::store::Link> {
        self.store.links_of_hq(&self.tenant, Kind::Appointment, &hq_id.to_string()).await.unwrap()
    }

    /// Creates an event in a mailbox as its user would in Outlook.
    async fn outlook_create(&self, mailbox: &str, body: Value) -> Value {
        self.graph.post(&format!("/users/{mailbox}/events"), &body).await.unwrap()
    }

    async fn outlook_patch(&self, mailbox: &str, id: &str, patch: Value) {
        self.graph.patch(&format!("/users/{mailbox}/events/{id}"), &patch, None).await.unwrap();
    }

    async fn create_row(&self, mut body: Value) -> i32 {
        if body.get("projectId").is_none_or(Value::is_null) {
            body["projectId"] = json!(internal_project(&self.hq_sim).await);
        }
        let t: Task = serde_json::from_value(body).unwrap();
        self.hq.create_task(&t).await.unwrap().id
    }

    /// A worker that made helloHQ row `row_id` for event `ev` in `mailbox`
    /// and was cut off before completing its link: only the half link it
    /// wrote first (its claim) is left, aged past the claim timeout (a live
    /// claim makes other workers wait instead).
    async fn leave_an_aged_claim(&self, mailbox: &str, ev: &Value, row_id: i32) {
        let mb = MailboxId::parse(mailbox).unwrap();
        let gid = ev["id"].as_str().unwrap();
        self.store.delete_link(&self.tenant, &mb, Kind::Appointment, Some(&row_id.to_string()), None).await.unwrap();
        self.store.set_cursor(&self.tenant, "appointment.ical_uid", ev["iCalUId"].as_str().unwrap(), "").await.unwrap();
        let claim =
            common::pending_link(&self.tenant, mailbox, Kind::Appointment, (None, Some(gid)), "organizer", json!({}));
        self.store.upsert_link(&claim).await.unwrap();
        let db = self._dir.path().join("hqsync.db");
        let mut conn =
            <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query("UPDATE links SET updated_at = 0 WHERE graph_id = ?").bind(gid).execute(&mut conn).await.unwrap();
    }

    async fn stop(self) {
        self.graph_sim.shutdown().await;
        self.hq_sim.shutdown().await;
    }
}

fn berlin(d: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    Berlin.from_local_datetime(&d.and_hms_opt(h, m, 0).unwrap()).earliest().unwrap().with_timezone(&Utc)
}

fn utc_of(v: &Value) -> DateTime<Utc> {
    let s = v["dateTime"].as_str().unwrap();
    assert_eq!(v["timeZone"], "UTC", "read with Prefer: outlook.timezone=\"UTC\"");
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap().and_utc()
}

/// The next date on or after `from` that falls on `day`.
fn next_weekday(from: NaiveDate, day: Weekday) -> NaiveDate {
    let mut d = from;
    while d.weekday() != day {
        d += Duration::days(1);
    }
    d
}

fn in_days(n: i64) -> NaiveDate {
    Utc::now().with_timezone(&Berlin).date_naive() + Duration::days(n)
}

fn users_of(t: &Task) -> Vec<i32> {
    t.resource_to_tasks.iter().flatten().filter_map(|a| a.user_id).collect()
}

/// The id of the demo's project for internal appointments.
async fn internal_project(sim: &HellohqSim) -> i64 {
    let url = format!("{}/v2/Projects?filter=name%20eq%20%27Interne%20Termine%27", sim.base_url());
    let v: Value =
        reqwest::Client::new().get(url).bearer_auth(sim.sync_token()).send().await.unwrap().json().await.unwrap();
    v[0]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn initial_sync_writes_each_meeting_once_into_its_organizers_calendar_and_never_a_vacation() {
    let h = H::start().await;
    h.sync_all().await;
    // Team-Frühstück: Anna (first participant) organises; the three others
    // hold Exchange's copies, linked to the same row.
    let row = h.row("Team-Frühstück").await;
    let org = h.event(ANNA, "Team-Frühstück").await;
    assert_eq!(org["isOrganizer"], true);
    let emails: Vec<&str> =
        org["attendees"].as_array().unwrap().iter().filter_map(|a| a["emailAddress"]["address"].as_str()).collect();
    assert_eq!(emails.len(), 3, "the organizer is not an attendee of her own meeting: {emails:?}");
    for m in [BEN, CLARA, DAVID] {
        let copy = h.event(m, "Team-Frühstück").await;
        assert_eq!(copy["isOrganizer"], false, "only one organizer copy");
    }
    let links = h.links_of(row.id).await;
    assert_eq!(links.len(), 4, "{links:?}");
    assert_eq!(links.iter().filter(|l| l.folder.as_deref() == Some("organizer")).count(), 1);
    assert_eq!(h.rows_named("Team-Frühstück").await.len(), 1, "one helloHQ appointment per meeting");
    // Every field from helloHQ: subject, body, location, time, privacy.
    let kick = h.event(ANNA, "Kick-off Website-Relaunch").await;
    assert_eq!(kick["location"]["displayName"], "Raum Elbe");
    assert!(kick["body"]["content"].as_str().unwrap().contains("Ziele, Zeitplan"));
    let kick_row = h.row("Kick-off Website-Relaunch").await;
    assert_eq!(utc_of(&kick["start"]), kick_row.start_on.unwrap());
    assert_eq!(utc_of(&kick["end"]), kick_row.end_on.unwrap());
    let dentist = h.events_named(DAVID, "Zahnarzt").await;
    assert_eq!(dentist.len(), 1);
    assert_eq!(dentist[0]["sensitivity"], "private");
    // Clara's vacation: never in Exchange, journalled.
    assert!(h.events_named(CLARA, "Urlaub").await.is_empty(), "a vacation reached Exchange");
    // Exchange's own events became appointments (never absences) once.
    let kunde = h.row("Kundentermin Bäckerei Becker").await;
    assert!(kunde.is_appointment);
    assert_eq!(kunde.kind.as_ref().map(|k| k.to_string()).as_deref(), Some("PublicAppointment"));
    assert_eq!(users_of(&kunde), vec![h.user_id(ANNA).await]);
    let ben_dentist = h.rows_named("Zahnarzt").await;
    assert_eq!(ben_dentist.len(), 2, "David's from helloHQ, Ben's from Exchange");
    assert!(ben_dentist
        .iter()
        .all(|t| t.kind.as_ref().map(|k| k.to_string()).as_deref() == Some("PrivateAppointment")));
    // A second pass over synced mailboxes writes nothing anywhere.
    let before = h.writes().await;
    h.sync_all().await;
    assert_eq!(h.writes().await, before, "a pass over synced calendars wrote something");
    h.stop().await;
}

#[tokio::test]
async fn absences_are_never_written_and_are_journalled() {
    let h = H::start().await;
    let clara = h.user_id(CLARA).await;
    let sick = h
        .create_row(json!({"name": "Krank", "isAppointment": true, "type": "SickLeave", "startDate": format!("{}T00:00:00", in_days(3)),
            "endDate": format!("{}T00:00:00", in_days(4)), "resourceToTasks": [{"userId": clara}]}))
        .await;
    let unscheduled = h
        .create_row(json!({"name": "Irgendwann", "isAppointment": true, "type": "UnscheduledAppointment", "resourceToTasks": [{"userId": clara}]}))
        .await;
    let before = h.writes().await;
    h.hq_changed(sick).await;
    h.hq_changed(unscheduled).await;
    h.pass(CLARA).await;
    assert!(h.events_named(CLARA, "Krank").await.is_empty());
    assert!(h.events_named(CLARA, "Irgendwann").await.is_empty());
    let skipped = h.journal("skipped").await;
    for id in [sick, unscheduled] {
        assert!(skipped.iter().any(|e| e.hq_id.as_deref() == Some(id.to_string().as_str())), "#{id} not journalled");
    }
    assert!(skipped.iter().any(|e| e.detail["reason"].as_str().unwrap_or("").contains("absence")));
    assert_eq!(h.writes().await, before, "an absence or an unscheduled row was written somewhere");
    h.stop().await;
}

#[tokio::test]
async fn a_hellohq_edit_of_a_meeting_is_one_exchange_write_and_its_echoes_write_nothing() {
    let h = H::start().await;
    h.sync_all().await;
    let row = h.row("Team-Frühstück").await;
    let start = row.start_on.unwrap() + Duration::hours(1);
    h.hq.update_task(row.id, |t| {
        t.place = Some("Dachterrasse".into());
        t.name = Some("Team-Frühstück draußen".into());
        t.description = Some("Bitte Jacke mitbringen".into());
        t.start_on = Some(start);
        t.end_on = Some(start + Duration::minutes(45));
    })
    .await
    .unwrap();
    let (g0, q0) = h.writes().await;
    h.hq_changed(row.id).await;
    let (g1, q1) = h.writes().await;
    assert_eq!(g1 - g0, 1, "a meeting edited once is written exactly once");
    assert_eq!(q1, q0);
    let org = h.event(ANNA, "Team-Frühstück draußen").await;
    assert_eq!(org["location"]["displayName"], "Dachterrasse");
    assert!(org["body"]["content"].as_str().unwrap().contains("Jacke"));
    assert_eq!(utc_of(&org["start"]), start);
    // Every notification that write caused (organizer and three copies),
    // and helloHQ's webhook replayed: all echoes.
    h.exchange_changed(ANNA, org["id"].as_str().unwrap()).await;
    for m in [BEN, CLARA, DAVID] {
        let copy = h.event(m, "Team-Frühstück draußen").await;
        assert_eq!(copy["location"]["displayName"], "Dachterrasse");
        h.exchange_changed(m, copy["id"].as_str().unwrap()).await;
    }
    h.hq_changed(row.id).await;
    assert_eq!(h.writes().await, (g1, q1), "an echo was written");
    // An attendee's answer changes the organizer's event but nothing a person sees in helloHQ.
    let copy = h.event(BEN, "Team-Frühstück draußen").await;
    h.graph
        .post(&format!("/users/{BEN}/events/{}/accept", copy["id"].as_str().unwrap()), &json!({"sendResponse": true}))
        .await
        .unwrap();
    let answered = h.writes().await; // Ben's answer is his own write
    h.exchange_changed(ANNA, org["id"].as_str().unwrap()).await;
    h.exchange_changed(BEN, copy["id"].as_str().unwrap()).await;
    assert_eq!(h.writes().await, answered, "an accept caused a write");
    let org2 = h.graph.get_event(ANNA, org["id"].as_str().unwrap()).await.unwrap();
    assert_ne!(org2["changeKey"], org["changeKey"], "the answer did change the organizer's event");
    h.stop().await;
}

/// Issue #9: Graph names the version each change made. The organizer's
/// notification of hqsync's own write names the version its link holds and
/// costs no Graph request; an Outlook edit names a new one and is mirrored.
#[tokio::test]
async fn the_echo_of_a_meeting_write_names_the_version_the_link_holds_and_costs_no_request() {
    let h = H::start().await;
    h.sync_all().await;
    let row = h.row("Team-Frühstück").await;
    h.hq.update_task(row.id, |t| t.place = Some("Dachterrasse".into())).await.unwrap();
    h.hq_changed(row.id).await;
    let org = h.event(ANNA, "Team-Frühstück").await;
    assert_eq!(org["location"]["displayName"], "Dachterrasse");
    let gid = org["id"].as_str().unwrap().to_string();
    let version = |e: &Value| e["@odata.etag"].as_str().or(e["changeKey"].as_str()).unwrap().to_string();
    let (before, writes) = (h.graph_requests().await, h.writes().await);
    h.exchange_changed_to(ANNA, &gid, &version(&org)).await;
    assert_eq!(requests_since(&h.graph_requests().await, &before), BTreeMap::new(), "an echo cost a Graph request");
    assert_eq!(h.writes().await, writes, "an echo was written");
    // Exchange updated the attendees' copies from the organizer's event:
    // new versions, but the organizer's event carries the meeting.
    for m in [BEN, CLARA, DAVID] {
        let copy = h.event(m, "Team-Frühstück").await;
        assert_eq!(copy["location"]["displayName"], "Dachterrasse");
        let before = h.graph_requests().await;
        h.exchange_changed_to(m, copy["id"].as_str().unwrap(), &version(&copy)).await;
        assert_eq!(requests_since(&h.graph_requests().await, &before), BTreeMap::new(), "{m}'s copy was read");
    }
    assert_eq!(h.writes().await, writes, "an attendee's copy caused a write");
    // The user's own edit makes a new version: read and mirrored.
    h.outlook_patch(ANNA, &gid, json!({"location": {"displayName": "Raum Elbe"}})).await;
    let edited = h.graph.get_event(ANNA, &gid).await.unwrap();
    assert_ne!(version(&edited), version(&org));
    h.exchange_changed_to(ANNA, &gid, &version(&edited)).await;
    assert_eq!(h.hq.get_task(row.id).await.unwrap().place.as_deref(), Some("Raum Elbe"));
    h.stop().await;
}

#[tokio::test]
async fn outlook_edits_bring_location_time_and_privacy_but_never_subject_or_body() {
    let h = H::start().await;
    h.sync_all().await;
    let row = h.row("Kick-off Website-Relaunch").await;
    let ev = h.event(ANNA, "Kick-off Website-Relaunch").await;
    let gid = ev["id"].as_str().unwrap().to_string();
    let day = in_days(20);
    h.outlook_patch(
        ANNA,
        &gid,
        json!({"subject": "Kickoff (Outlook)", "body": {"contentType": "text", "content": "aus Outlook"},
            "location": {"displayName": "Raum Alster"}, "sensitivity": "private",
            "start": {"dateTime": format!("{day}T13:00:00"), "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": format!("{day}T14:00:00"), "timeZone": "W. Europe Standard Time"}}),
    )
    .await;
    let (g0, q0) = h.writes().await;
    h.exchange_changed(ANNA, &gid).await;
    let (g1, q1) = h.writes().await;
    assert_eq!(q1 - q0, 1, "one helloHQ write");
    assert_eq!(g1, g0, "nothing written back to Exchange for an Exchange edit");
    let t = h.hq.get_task(row.id).await.unwrap();
    assert_eq!(t.place.as_deref(), Some("Raum Alster"));
    assert_eq!(t.start_on, Some(berlin(day, 13, 0)));
    assert_eq!(t.end_on, Some(berlin(day, 14, 0)));
    assert_eq!(t.kind.as_ref().map(|k| k.to_string()).as_deref(), Some("PrivateAppointment"));
    assert_eq!(t.name.as_deref(), Some("Kick-off Website-Relaunch"), "an Outlook subject edit reached helloHQ");
    assert_eq!(t.description, row.description, "an Outlook body edit reached helloHQ");
    assert!(h.journal("skipped").await.iter().any(|e| e.detail["field"] == "subject"));
    // helloHQ's webhook for that write: an echo.
    h.hq_changed(row.id).await;
    assert_eq!(h.writes().await, (g1, q1));
    // The next helloHQ-side change writes helloHQ's subject back with it.
    h.hq.update_task(row.id, |t| t.place = Some("Raum Elbe".into())).await.unwrap();
    h.hq_changed(row.id).await;
    let ev = h.graph.get_event(ANNA, &gid).await.unwrap();
    assert_eq!(ev["subject"], "Kick-off Website-Relaunch");
    assert_eq!(ev["location"]["displayName"], "Raum Elbe");
    assert_eq!(h.writes().await.0, g1 + 1);
    // All-day both ways: Outlook makes it all-day …
    let d2 = in_days(21);
    h.outlook_patch(
        ANNA,
        &gid,
        json!({"isAllDay": true, "start": {"dateTime": format!("{d2}T00:00:00"), "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": format!("{}T00:00:00", d2 + Duration::days(1)), "timeZone": "W. Europe Standard Time"}}),
    )
    .await;
    h.exchange_changed(ANNA, &gid).await;
    let t = h.hq.get_task(row.id).await.unwrap();
    assert_eq!(t.start_date.map(|d| d.date()), Some(d2));
    assert_eq!(t.start_on, None);
    // … and helloHQ moves it to a timed slot again.
    let back = berlin(in_days(22), 9, 0);
    h.hq.update_task(row.id, |t| {
        (t.start_date, t.end_date) = (None, None);
        (t.start_on, t.end_on) = (Some(back), Some(back + Duration::hours(1)));
    })
    .await
    .unwrap();
    h.hq_changed(row.id).await;
    let ev = h.graph.get_event(ANNA, &gid).await.unwrap();
    assert_eq!(ev["isAllDay"], false);
    assert_eq!(utc_of(&ev["start"]), back);
    h.stop().await;
}

#[tokio::test]
async fn an_outlook_event_becomes_one_appointment_and_never_an_absence() {
    let h = H::start().await;
    let absences: Vec<Value> = h.hq.list_v2("/v2/Absences", &ListQuery::default()).await.unwrap().items;
    let d = in_days(10);
    let ev = h
        .outlook_create(
            CLARA,
            json!({"subject": "Urlaub Mallorca", "showAs": "oof", "isAllDay": true,
                "body": {"contentType": "html", "content": "<p>Sonne</p>"},
                "start": {"dateTime": format!("{d}T00:00:00"), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{}T00:00:00", d + Duration::days(5)), "timeZone": "W. Europe Standard Time"}}),
        )
        .await;
    let gid = ev["id"].as_str().unwrap();
    h.exchange_changed(CLARA, gid).await;
    h.exchange_changed(CLARA, gid).await; // a replayed notification
    let row = h.row("Urlaub Mallorca").await;
    assert!(row.is_appointment);
    assert_eq!(row.kind.as_ref().map(|k| k.to_string()).as_deref(), Some("PublicAppointment"));
    assert_eq!(row.description.as_deref(), Some("Sonne"), "a new event brings its body");
    assert_eq!(row.start_date.map(|x| x.date()), Some(d));
    assert_eq!(row.end_date.map(|x| x.date()), Some(d + Duration::days(5)));
    let after: Vec<Value> = h.hq.list_v2("/v2/Absences", &ListQuery::default()).await.unwrap().items;
    assert_eq!(after.len(), absences.len(), "an Outlook event became an absence");
    // A worker that crashed after creating the row, before completing its
    // link (only the half link it wrote first is left): the replay finds the row.
    let mb = MailboxId::parse(CLARA).unwrap();
    h.leave_an_aged_claim(CLARA, &ev, row.id).await;
    let (g0, q0) = h.writes().await;
    h.exchange_changed(CLARA, gid).await;
    assert_eq!(h.rows_named("Urlaub Mallorca").await.len(), 1, "a replayed create made a second row");
    let l = h.store.get_link_by_graph(&h.tenant, &mb, Kind::Appointment, gid).await.unwrap().unwrap();
    assert_eq!(l.hq_id, Some(row.id.to_string()));
    h.exchange_changed(CLARA, gid).await;
    assert_eq!(h.writes().await, (g0, q0), "re-linking wrote something");
    h.stop().await;
}

/// Issue #9 (fault suite): a worker killed after creating the helloHQ row
/// of Clara's new Outlook event `subject`, before linking it. Only its
/// claim is left, aged past the claim timeout, and helloHQ's webhook for
/// the row, which therefore no longer waited, has mirrored the row into
/// Clara's calendar beside the event. Returns the event's id and the row.
async fn an_event_whose_create_was_cut_off(h: &H, subject: &str) -> (String, Task) {
    let d = in_days(12);
    let ev = h
        .outlook_create(
            CLARA,
            json!({"subject": subject,
                "start": {"dateTime": format!("{d}T10:00:00"), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{d}T12:00:00"), "timeZone": "W. Europe Standard Time"}}),
        )
        .await;
    let gid = ev["id"].as_str().unwrap().to_string();
    h.exchange_changed(CLARA, &gid).await;
    let row = h.row(subject).await;
    h.leave_an_aged_claim(CLARA, &ev, row.id).await;
    h.hq_changed(row.id).await;
    assert_eq!(h.events_named(CLARA, subject).await.len(), 2, "the webhook mirrored the row beside the event");
    (gid, row)
}

/// A worker killed between creating the helloHQ row of Clara's Outlook
/// event and writing its assignments, its claim gone too (fault suite, seed
/// 9): a pass finds the row by its iCalUId and links it, and writes the
/// organizer's assignment the create had not written, or the appointment
/// would be nobody's in helloHQ for good.
#[tokio::test]
async fn a_row_adopted_from_a_create_cut_off_before_its_assignments_gets_its_organizer() {
    let h = H::start().await;
    h.sync_all().await;
    let d = in_days(9);
    let ev = h
        .outlook_create(
            CLARA,
            json!({"subject": "Abnahme Druckerei",
                "start": {"dateTime": format!("{d}T09:00:00"), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{d}T10:00:00"), "timeZone": "W. Europe Standard Time"}}),
        )
        .await;
    let gid = ev["id"].as_str().unwrap().to_string();
    h.exchange_changed(CLARA, &gid).await;
    let row = h.row("Abnahme Druckerei").await;
    let clara = h.user_id(CLARA).await;
    assert!(row.resource_to_tasks.iter().flatten().any(|a| a.user_id == Some(clara)), "the create assigns Clara");
    // Undo what the create did after the row: its assignments, its link,
    // and the iCalUId it remembered.
    h.hq.update_task(row.id, |t| t.resource_to_tasks = Some(vec![])).await.unwrap();
    let mb = MailboxId::parse(CLARA).unwrap();
    h.store.delete_link(&h.tenant, &mb, Kind::Appointment, Some(&row.id.to_string()), Some(&gid)).await.unwrap();
    h.store.set_cursor(&h.tenant, "appointment.ical_uid", ev["iCalUId"].as_str().unwrap(), "").await.unwrap();
    assert!(h.row("Abnahme Druckerei").await.resource_to_tasks.iter().flatten().all(|a| a.user_id != Some(clara)));
    h.pass(CLARA).await;
    let links = h.links_of(row.id).await;
    assert_eq!(links.iter().map(|l| l.graph_id.as_deref()).collect::<Vec<_>>(), [Some(gid.as_str())], "adopted");
    let row = h.row("Abnahme Druckerei").await;
    assert!(
        row.resource_to_tasks.iter().flatten().any(|a| a.user_id == Some(clara)),
        "the adopted row has no organizer: {:?}",
        row.resource_to_tasks
    );
    assert_eq!(h.rows_named("Abnahme Druckerei").await.len(), 1);
    h.stop().await;
}

/// The user then deleted the event: the deletion met only the dead
/// worker's claim and dropped it, so the row and its copy stayed for good.
/// The row carries the event's id (`syncId`): both go.
#[tokio::test]
async fn an_outlook_event_deleted_while_its_create_was_cut_off_takes_the_hellohq_row_and_its_copies_along() {
    let h = H::start().await;
    let (gid, row) = an_event_whose_create_was_cut_off(&h, "Workshop Nord").await;
    h.graph.delete_event(CLARA, &gid, None).await.unwrap();
    h.exchange_changed(CLARA, &gid).await;
    assert!(h.rows_named("Workshop Nord").await.is_empty(), "the row of the deleted event stayed in helloHQ");
    for m in ALL {
        assert!(h.events_named(m, "Workshop Nord").await.is_empty(), "a copy stayed in {m}");
    }
    assert!(h.links_of(row.id).await.is_empty());
    let mb = MailboxId::parse(CLARA).unwrap();
    let claim = h.store.get_link_by_graph(&h.tenant, &mb, Kind::Appointment, &gid).await.unwrap();
    assert!(claim.is_none(), "the claim stayed");
    h.stop().await;
}

/// The event's next notification resumes the create: it links the row to
/// the event, and hqsync's copy beside it (a second meeting) goes.
#[tokio::test]
async fn a_create_resumed_after_a_crash_removes_the_copy_made_beside_the_outlook_event() {
    let h = H::start().await;
    let (gid, row) = an_event_whose_create_was_cut_off(&h, "Workshop Süd").await;
    h.exchange_changed(CLARA, &gid).await;
    let left = h.events_named(CLARA, "Workshop Süd").await;
    assert_eq!(left.iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), [gid.as_str()]);
    let links = h.links_of(row.id).await;
    assert_eq!(links.iter().map(|l| l.graph_id.as_deref()).collect::<Vec<_>>(), [Some(gid.as_str())]);
    assert_eq!(h.rows_named("Workshop Süd").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_meeting_among_three_synced_users_is_one_appointment_with_one_organizer_copy() {
    let h = H::start().await;
    let day = in_days(5);
    let ev = h
        .outlook_create(
            ANNA,
            json!({"subject": "Pitch-Vorbereitung", "location": {"displayName": "Raum Elbe"},
                "start": {"dateTime": format!("{day}T10:00:00"), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{day}T11:00:00"), "timeZone": "W. Europe Standard Time"},
                "attendees": [
                    {"type": "required", "emailAddress": {"address": BEN, "name": "Ben Müller"}},
                    {"type": "optional", "emailAddress": {"address": CLARA, "name": "Clara Wagner"}},
                    {"type": "required", "emailAddress": {"address": "gast@partner.example", "name": "Gast"}}]}),
        )
        .await;
    let ben_copy = h.event(BEN, "Pitch-Vorbereitung").await;
    let clara_copy = h.event(CLARA, "Pitch-Vorbereitung").await;
    let (g0, _) = h.writes().await;
    // An attendee's notification may come first: it waits for the organizer's.
    h.exchange_changed(BEN, ben_copy["id"].as_str().unwrap()).await;
    assert!(h.rows_named("Pitch-Vorbereitung").await.is_empty(), "an attendee copy made its own appointment");
    h.exchange_changed(ANNA, ev["id"].as_str().unwrap()).await;
    h.exchange_changed(CLARA, clara_copy["id"].as_str().unwrap()).await;
    h.exchange_changed(BEN, ben_copy["id"].as_str().unwrap()).await;
    let row = h.row("Pitch-Vorbereitung").await;
    let mut users = users_of(&row);
    users.sort();
    let mut want = vec![h.user_id(ANNA).await, h.user_id(BEN).await, h.user_id(CLARA).await];
    want.sort();
    assert_eq!(users, want, "three participants");
    assert_eq!(users_of(&row)[0], h.user_id(ANNA).await, "the organizer first");
    let links = h.links_of(row.id).await;
    assert_eq!(links.len(), 3);
    assert_eq!(links.iter().filter(|l| l.folder.as_deref() == Some("organizer")).count(), 1);
    assert_eq!(h.writes().await.0, g0, "linking copies wrote to Exchange");
    // The external guest stays in Exchange only (journalled), and survives a helloHQ edit.
    assert!(h.journal("skipped").await.iter().any(|e| e.detail["attendee"] == "gast@partner.example"));
    h.hq.update_task(row.id, |t| t.place = Some("Raum Alster".into())).await.unwrap();
    h.hq_changed(row.id).await;
    let org = h.graph.get_event(ANNA, ev["id"].as_str().unwrap()).await.unwrap();
    let emails: Vec<&str> =
        org["attendees"].as_array().unwrap().iter().filter_map(|a| a["emailAddress"]["address"].as_str()).collect();
    assert!(emails.contains(&"gast@partner.example"), "{emails:?}");
    assert_eq!(org["location"]["displayName"], "Raum Alster");
    // The initial pass of every mailbox adds no second row, event or organizer.
    h.sync_all().await;
    assert_eq!(h.rows_named("Pitch-Vorbereitung").await.len(), 1);
    for m in [ANNA, BEN, CLARA] {
        assert_eq!(h.events_named(m, "Pitch-Vorbereitung").await.len(), 1, "{m}");
    }
    let links = h.links_of(row.id).await;
    assert_eq!(links.len(), 3);
    assert_eq!(links.iter().filter(|l| l.folder.as_deref() == Some("organizer")).count(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_room_maps_both_ways() {
    let h = H::start_with(json!({"appointments": {"room_map": {"Raum Elbe": "raum.elbe@agentur-beispiel.de"}}})).await;
    // No endpoint lists rooms (C5): they are known from the seeded appointments' assignments.
    let rooms: Vec<_> =
        h.hq.list_tasks(&ListQuery::filter("isAppointment eq true"))
            .await
            .unwrap()
            .into_iter()
            .flat_map(|t| t.resource_to_tasks.unwrap_or_default())
            .filter_map(|a| a.resource)
            .collect();
    let elbe = rooms.iter().find(|r| r.name.as_deref() == Some("Raum Elbe")).unwrap().id;
    let alster = rooms.iter().find(|r| r.name.as_deref() == Some("Raum Alster")).unwrap().id;
    let anna = h.user_id(ANNA).await;
    let start = berlin(in_days(6), 15, 0);
    let id = h
        .create_row(
            json!({"name": "Workshop", "isAppointment": true, "type": "PublicAppointment", "place": "Raum Elbe",
            "startOn": start, "endOn": start + Duration::hours(2),
            "resourceToTasks": [{"userId": anna}, {"resourceId": elbe}]}),
        )
        .await;
    h.hq_changed(id).await;
    let ev = h.event(ANNA, "Workshop").await;
    let room = ev["attendees"].as_array().unwrap().iter().find(|a| a["type"] == "resource").cloned().unwrap();
    assert_eq!(room["emailAddress"]["address"], "raum.elbe@agentur-beispiel.de", "through the room map");
    // Outlook books Raum Alster (its mailbox is in helloHQ) instead.
    h.outlook_patch(
        ANNA,
        ev["id"].as_str().unwrap(),
        json!({"attendees": [{"type": "resource", "emailAddress": {"address": "raum.alster@agentur-beispiel.de", "name": "Raum Alster"}}]}),
    )
    .await;
    h.exchange_changed(ANNA, ev["id"].as_str().unwrap()).await;
    let t = h.hq.get_task(id).await.unwrap();
    let resources: Vec<i32> = t.resource_to_tasks.iter().flatten().filter_map(|a| a.resource_id).collect();
    assert_eq!(resources, vec![alster]);
    assert_eq!(users_of(&t), vec![anna], "the organizer stays a participant");
    h.stop().await;
}

#[tokio::test]
async fn a_numbered_series_becomes_an_end_date_at_its_last_occurrence() {
    let h = H::start().await;
    let first = next_weekday(in_days(3), Weekday::Wed);
    let ev = h
        .outlook_create(
            BEN,
            json!({"subject": "Sprint-Review", "start": {"dateTime": format!("{first}T14:00:00"), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{first}T15:00:00"), "timeZone": "W. Europe Standard Time"},
                "recurrence": {"pattern": {"type": "weekly", "interval": 2, "daysOfWeek": ["wednesday"], "firstDayOfWeek": "monday"},
                    "range": {"type": "numbered", "numberOfOccurrences": 5, "startDate": first.to_string(), "recurrenceTimeZone": "W. Europe Standard Time"}}}),
        )
        .await;
    h.exchange_changed(BEN, ev["id"].as_str().unwrap()).await;
    let row = h.row("Sprint-Review").await;
    let storage = row.recurrency_storage.clone().unwrap();
    let fifth = berlin(first + Duration::weeks(8), 14, 0);
    assert!(storage.contains("DTSTART;TZID=Europe/Berlin:"), "{storage}");
    assert!(storage.contains(&format!("UNTIL={}", fifth.format("%Y%m%dT%H%M%SZ"))), "{storage}");
    assert!(!storage.contains("COUNT"), "{storage}");
    assert_eq!(row.kind.as_ref().map(|k| k.to_string()).as_deref(), Some("RecurrencyTask"));
    // The pairing is settled: after Ben's initial pass, a pass writes nothing.
    h.pass(BEN).await;
    let before = h.writes().await;
    h.pass(BEN).await;
    assert_eq!(h.writes().await, before);
    assert_eq!(h.rows_named("Sprint-Review").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_weekly_series_keeps_its_local_time_across_both_dst_switches() {
    let h = H::start_with(json!({"appointments": {"window_future_days": 400}})).await;
    let anna = h.user_id(ANNA).await;
    let first = next_weekday(in_days(1), Weekday::Mon);
    let start = berlin(first, 9, 0);
    let storage = format!(
        "DTSTART;TZID=Europe/Berlin:{}\r\nRRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO",
        first.format("%Y%m%dT090000")
    );
    let id = h
        .create_row(
            json!({"name": "Wochenstart", "isAppointment": true, "type": "RecurrencyTask", "recurrencyStorage": storage,
            "startOn": start, "endOn": start + Duration::minutes(30), "resourceToTasks": [{"userId": anna}]}),
        )
        .await;
    h.hq_changed(id).await;
    let ev = h.event(ANNA, "Wochenstart").await;
    assert_eq!(ev["recurrence"]["range"]["recurrenceTimeZone"], "W. Europe Standard Time");
    // The last Sundays of March and October after today.
    let last_sunday = |year: i32, month: u32| {
        let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).unwrap() - Duration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= Duration::days(1);
        }
        d
    };
    let today = in_days(0);
    let next = |month: u32| {
        let d = last_sunday(today.year(), month);
        if d > first {
            d
        } else {
            last_sunday(today.year() + 1, month)
        }
    };
    for switch in [next(3), next(10)] {
        let before = switch - Duration::days(6);
        let after = switch + Duration::days(1);
        let list = h
            .graph
            .event_instances(ANNA, ev["id"].as_str().unwrap(), berlin(before, 0, 0), berlin(after, 23, 0))
            .await
            .unwrap();
        let starts: Vec<DateTime<Utc>> = list.iter().map(|i| utc_of(&i["start"])).collect();
        assert_eq!(starts, vec![berlin(before, 9, 0), berlin(after, 9, 0)], "around {switch}");
        assert_ne!(starts[0].time(), starts[1].time(), "UTC moves with the switch, local time does not");
    }
    // And Exchange → helloHQ: an Outlook weekly series is stored in its zone.
    let ev = h
        .outlook_create(
            CLARA,
            json!({"subject": "Yoga", "start": {"dateTime": format!("{}T18:00:00", first + Duration::days(1)), "timeZone": "W. Europe Standard Time"},
                "end": {"dateTime": format!("{}T19:00:00", first + Duration::days(1)), "timeZone": "W. Europe Standard Time"},
                "recurrence": {"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"], "firstDayOfWeek": "monday"},
                    "range": {"type": "noEnd", "startDate": (first + Duration::days(1)).to_string(), "recurrenceTimeZone": "W. Europe Standard Time"}}}),
        )
        .await;
    h.exchange_changed(CLARA, ev["id"].as_str().unwrap()).await;
    let row = h.row("Yoga").await;
    let storage = row.recurrency_storage.unwrap();
    assert!(
        storage.starts_with(&format!(
            "DTSTART;TZID=Europe/Berlin:{}",
            (first + Duration::days(1)).format("%Y%m%dT180000")
        )),
        "{storage}"
    );
    h.stop().await;
}

#[tokio::test]
async fn cancelled_occurrences_travel_both_ways() {
    let h = H::start().await;
    h.sync_all().await;
    // The seeded series: its second occurrence is an EXDATE in helloHQ.
    let row = h.row("Jour fixe Agentur").await;
    let storage = row.recurrency_storage.clone().unwrap();
    let first = row.start_on.unwrap();
    let ev = h.event(ANNA, "Jour fixe Agentur").await;
    let gid = ev["id"].as_str().unwrap().to_string();
    let instances =
        h.graph.event_instances(ANNA, &gid, first - Duration::days(1), first + Duration::weeks(8)).await.unwrap();
    let originals: Vec<DateTime<Utc>> = instances
        .iter()
        .map(|i| DateTime::parse_from_rfc3339(i["originalStart"].as_str().unwrap()).unwrap().to_utc())
        .collect();
    assert!(originals.contains(&first));
    assert!(!originals.contains(&(first + Duration::weeks(1))), "the EXDATE {storage} was not cancelled in Exchange");
    // Outlook cancels the sixth occurrence: helloHQ gets its EXDATE.
    let sixth = first + Duration::weeks(5);
    let occ = instances
        .iter()
        .find(|i| i["originalStart"].as_str().is_some_and(|s| DateTime::parse_from_rfc3339(s).unwrap() == sixth))
        .unwrap();
    h.graph.delete(&format!("/users/{ANNA}/events/{}", occ["id"].as_str().unwrap()), None).await.unwrap();
    let (g0, q0) = h.writes().await;
    h.exchange_changed(ANNA, &gid).await;
    assert_eq!(h.writes().await, (g0, q0 + 1));
    let storage = h.hq.get_task(row.id).await.unwrap().recurrency_storage.unwrap();
    let local = sixth.with_timezone(&Berlin).format("%Y%m%dT%H%M%S").to_string();
    assert!(storage.contains(&local), "{storage} lacks {local}");
    // helloHQ cancels the seventh: Exchange deletes that occurrence, once.
    let seventh = first + Duration::weeks(6);
    let extra = seventh.with_timezone(&Berlin).format("%Y%m%dT%H%M%S").to_string();
    h.hq.update_task(row.id, |t| {
        let s = t.recurrency_storage.clone().unwrap_or_default();
        t.recurrency_storage = Some(format!("{}\r\nEXDATE;TZID=Europe/Berlin:{extra}", s.trim_end()));
    })
    .await
    .unwrap();
    let (g1, q1) = h.writes().await;
    h.hq_changed(row.id).await;
    assert_eq!(h.writes().await, (g1 + 1, q1));
    let instances =
        h.graph.event_instances(ANNA, &gid, first - Duration::days(1), first + Duration::weeks(8)).await.unwrap();
    assert!(
        instances
            .iter()
            .all(|i| i["originalStart"].as_str().map(|s| DateTime::parse_from_rfc3339(s).unwrap())
                != Some(seventh.into()))
    );
    h.stop().await;
}

#[tokio::test]
async fn a_replayed_create_produces_one_event() {
    let h = H::start().await;
    let david = h.user_id(DAVID).await;
    let start = berlin(in_days(4), 11, 0);
    let id = h
        .create_row(json!({"name": "Steuerberater", "isAppointment": true, "type": "PublicAppointment",
            "startOn": start, "endOn": start + Duration::hours(1), "resourceToTasks": [{"userId": david}]}))
        .await;
    let hint = h.hint(Origin::Hellohq, Change::Created, None, Some(&id.to_string()));
    assert_eq!(h.run(&hint).await, Outcome::Applied);
    assert_eq!(h.run(&hint).await, Outcome::Duplicate);
    // A worker that crashed after the POST, before its link was stored.
    let mb = MailboxId::parse(DAVID).unwrap();
    let l = h.store.get_link_by_hq(&h.tenant, &mb, Kind::Appointment, &id.to_string()).await.unwrap().unwrap();
    h.store.delete_link(&h.tenant, &mb, Kind::Appointment, l.hq_id.as_deref(), l.graph_id.as_deref()).await.unwrap();
    h.hq_changed(id).await;
    h.hq_changed(id).await;
    assert_eq!(h.events_named(DAVID, "Steuerberater").await.len(), 1, "a replayed create made a second event");
    h.pass(DAVID).await;
    assert_eq!(h.events_named(DAVID, "Steuerberater").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn deletions_follow_the_organizer() {
    let h = H::start().await;
    h.sync_all().await;
    // helloHQ deletes a meeting: the organizer's event goes, copies are cancelled by Exchange.
    let row = h.row("Abstimmung Messestand").await;
    h.hq.delete_task(row.id).await.unwrap();
    let hint = h.hint(Origin::Hellohq, Change::Deleted, None, Some(&row.id.to_string()));
    h.run(&hint).await;
    assert!(h.events_named(BEN, "Abstimmung Messestand").await.is_empty(), "the organizer's event stayed");
    assert!(h.links_of(row.id).await.is_empty());
    // The organizer deletes in Outlook: the row goes.
    let kunde = h.row("Kundentermin Bäckerei Becker").await;
    let ev = h.event(ANNA, "Kundentermin Bäckerei Becker").await;
    h.graph.delete(&format!("/users/{ANNA}/events/{}", ev["id"].as_str().unwrap()), None).await.unwrap();
    h.exchange_changed(ANNA, ev["id"].as_str().unwrap()).await;
    assert!(h.hq.get_task(kunde.id).await.is_err(), "still in helloHQ");
    // An attendee deleting their copy deletes nothing in helloHQ.
    let breakfast = h.row("Team-Frühstück").await;
    let copy = h.event(DAVID, "Team-Frühstück").await;
    h.graph.delete(&format!("/users/{DAVID}/events/{}", copy["id"].as_str().unwrap()), None).await.unwrap();
    h.exchange_changed(DAVID, copy["id"].as_str().unwrap()).await;
    assert!(h.hq.get_task(breakfast.id).await.is_ok());
    h.stop().await;
}

#[tokio::test]
async fn modified_occurrences_travel_from_hellohq_and_an_outlook_one_stays_journalled() {
    let h = H::start().await;
    h.sync_all().await;
    // The seeded exception row: the third Jour fixe moved to 11:00 in Raum Alster.
    let series = h.row("Jour fixe Agentur").await;
    let first = series.start_on.unwrap();
    let third = first + Duration::weeks(2);
    let ev = h.event(ANNA, "Jour fixe Agentur").await;
    let gid = ev["id"].as_str().unwrap().to_string();
    let instance_at = |list: &[Value], orig: DateTime<Utc>| {
        list.iter()
            .find(|i| {
                i["originalStart"].as_str().map(|s| DateTime::parse_from_rfc3339(s).unwrap().to_utc()) == Some(orig)
            })
            .cloned()
    };
    let window = (first - Duration::days(1), first + Duration::weeks(10));
    let list = h.graph.event_instances(ANNA, &gid, window.0, window.1).await.unwrap();
    let moved = instance_at(&list, third).expect("the third occurrence");
    assert_eq!(moved["type"], "exception");
    assert_eq!(utc_of(&moved["start"]), third + Duration::hours(1));
    assert_eq!(moved["location"]["displayName"], "Raum Alster");
    assert_eq!(moved["subject"], "Jour fixe Agentur (verschoben)");
    // Attendees see it too (Exchange carries exceptions into their copies).
    let copy = h.event(BEN, "Jour fixe Agentur").await;
    let ben_list = h.graph.event_instances(BEN, copy["id"].as_str().unwrap(), window.0, window.1).await.unwrap();
    assert_eq!(instance_at(&ben_list, third).unwrap()["location"]["displayName"], "Raum Alster");
    // Settled: a second pass writes nothing.
    let before = h.writes().await;
    h.pass(ANNA).await;
    assert_eq!(h.writes().await, before, "a pass rewrote a modified occurrence");
    // Outlook moves the fourth occurrence to 14:00: helloHQ has no published
    // field for an occurrence's original start (`originalStartOn` is in no
    // spec), so no row is made; the change stays in Exchange, journalled.
    let fourth = first + Duration::weeks(3);
    let occ = instance_at(&list, fourth).unwrap();
    let occ_id = occ["id"].as_str().unwrap().to_string();
    let day = fourth.with_timezone(&Berlin).date_naive();
    h.outlook_patch(
        ANNA,
        &occ_id,
        json!({"start": {"dateTime": format!("{day}T14:00:00"), "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": format!("{day}T14:30:00"), "timeZone": "W. Europe Standard Time"},
            "location": {"displayName": "Café"}}),
    )
    .await;
    let (g0, q0) = h.writes().await;
    h.exchange_changed(ANNA, &occ_id).await;
    h.exchange_changed(ANNA, &occ_id).await; // replayed
    assert_eq!(h.writes().await, (g0, q0), "nothing written to helloHQ, nothing back to Exchange");
    let rows: Vec<Task> = h.tasks().await.into_iter().filter(|t| t.parent_id == Some(series.id)).collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let skipped = h.journal("skipped").await;
    assert!(
        skipped.iter().any(|j| j.graph_id.as_deref() == Some(occ_id.as_str())
            && j.detail["reason"].as_str().is_some_and(|r| r.contains("originalStartOn"))),
        "{skipped:?}"
    );
    let list = h.graph.event_instances(ANNA, &gid, window.0, window.1).await.unwrap();
    assert_eq!(instance_at(&list, fourth).unwrap()["location"]["displayName"], "Café", "kept in Exchange");
    // helloHQ edits the seeded exception: that occurrence changes, once.
    let old_row = rows.iter().find(|t| t.original_start_on == Some(third)).unwrap();
    h.hq.update_task(old_row.id, |t| t.place = Some("Raum Elbe".into())).await.unwrap();
    let (g1, q1) = h.writes().await;
    h.hq_changed(old_row.id).await;
    assert_eq!(h.writes().await, (g1 + 1, q1));
    let list = h.graph.event_instances(ANNA, &gid, window.0, window.1).await.unwrap();
    assert_eq!(instance_at(&list, third).unwrap()["location"]["displayName"], "Raum Elbe");
    assert_eq!(utc_of(&instance_at(&list, third).unwrap()["start"]), third + Duration::hours(1), "time kept");
    h.stop().await;
}

#[tokio::test]
async fn deletions_seen_only_by_a_pass_wait_for_approval_and_a_failed_read_deletes_nothing() {
    let h = H::start().await;
    h.sync_all().await;
    // A helloHQ outage during a pass: it fails, nothing is deleted.
    let (g0, _) = h.writes().await;
    h.http.post(format!("{}/_sim/faults", h.hq_sim.base_url())).json(&json!({"error_rate": 1.0})).send().await.unwrap();
    let hint = h.hint(Origin::Schedule, Change::Resync, Some(ANNA), None);
    assert!(h.engine.handle(&hint).await.is_err(), "the pass must fail, not guess");
    h.http.post(format!("{}/_sim/faults", h.hq_sim.base_url())).json(&json!({})).send().await.unwrap();
    assert_eq!(h.writes().await.0, g0, "Exchange was written during a failed helloHQ read");
    // Three of Anna's six meetings deleted in helloHQ without webhooks: held.
    let names = ["Kick-off Website-Relaunch", "Team-Frühstück", "Kundentermin Bäckerei Becker"];
    for n in names {
        h.hq.delete_task(h.row(n).await.id).await.unwrap();
    }
    h.pass(ANNA).await;
    for n in names {
        assert_eq!(h.events_named(ANNA, n).await.len(), 1, "{n} deleted without approval");
    }
    assert!(h.journal("held").await.iter().any(|e| e.kind == Some(Kind::Appointment)));
    let approved = h.engine.approve(&h.tenant, &MailboxId::parse(ANNA).unwrap(), None, None, "test").await.unwrap();
    let mut listed: Vec<String> = approved.iter().flat_map(|(_, i)| i.iter().map(|i| i.name.clone())).collect();
    listed.sort();
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(listed, want, "exactly the held meetings are approved, by name");
    h.pass(ANNA).await;
    for n in names {
        assert!(h.events_named(ANNA, n).await.is_empty(), "{n} stayed after approval");
    }
    assert_eq!(h.events_named(ANNA, "Jour fixe Agentur").await.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn a_replayed_create_answered_with_the_older_event_takes_the_newer_hellohq_values() {
    let h = H::start().await;
    let david = h.user_id(DAVID).await;
    let start = berlin(in_days(4), 11, 0);
    let id = h
        .create_row(
            json!({"name": "Steuerberater", "isAppointment": true, "type": "PublicAppointment", "place": "Raum 1",
            "startOn": start, "endOn": start + Duration::hours(1), "resourceToTasks": [{"userId": david}]}),
        )
        .await;
    h.hq_changed(id).await;
    // A twin hint created the event from this older read and failed
    // before linking it (its claim released); helloHQ has been edited since.
    let mb = MailboxId::parse(DAVID).unwrap();
    let l = h.store.get_link_by_hq(&h.tenant, &mb, Kind::Appointment, &id.to_string()).await.unwrap().unwrap();
    h.store.delete_link(&h.tenant, &mb, Kind::Appointment, l.hq_id.as_deref(), l.graph_id.as_deref()).await.unwrap();
    let id_s = id.to_string();
    let claim = common::pending_link(
        &h.tenant,
        DAVID,
        Kind::Appointment,
        (Some(&id_s), None),
        "organizer",
        json!({"released": true}),
    );
    h.store.upsert_link(&claim).await.unwrap();
    h.hq.update_task(id, |t| t.place = Some("Raum 7".into())).await.unwrap();
    // The edit's hint takes the claim over and finds the older event by its
    // helloHQ tag (a POST with the same transactionId but another body would
    // make a second event): the newer place reaches it, now and after a pass.
    h.hq_changed(id).await;
    h.pass(DAVID).await;
    let ev = h.event(DAVID, "Steuerberater").await;
    assert_eq!(ev["location"]["displayName"], "Raum 7");
    let prop = hqsync::model::contact::HQ_ID_PROPERTY_ID.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D");
    let tagged = h
        .graph
        .list_all(&format!(
            "/users/{DAVID}/events?$filter=singleValueExtendedProperties/any(ep:%20ep/id%20eq%20'{prop}'%20and%20ep/value%20eq%20'{id_s}')"
        ))
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1, "the one event, tagged with its helloHQ id");
    assert_eq!(tagged[0]["id"], ev["id"]);
    h.stop().await;
}

/// Issue 18 item 6: a linked series whose `recurrencyStorage` hqsync cannot
/// parse is held. The value is never overwritten and nothing derived from it
/// reaches the Exchange series (its pattern is never replaced), the series
/// is journalled `held` with the value (once per value), and its other
/// fields still sync both ways: subject, location and the time of day from
/// helloHQ, location and participants from Outlook. A move to another day
/// would change the pattern: it is held too, journalled. An Outlook change
/// of the pattern stays in Exchange, journalled, never written over helloHQ's.
#[tokio::test]
async fn a_recurrency_storage_hqsync_cannot_parse_is_held_while_the_series_other_fields_sync_both_ways() {
    let h = H::start_with(json!({"appointments": {"window_future_days": 120}})).await;
    h.sync_all().await; // the seed's meetings first: the pass at the end concerns only this series
    let anna = h.user_id(ANNA).await;
    let ben = h.user_id(BEN).await;
    let first = next_weekday(in_days(1), Weekday::Wed);
    let start = berlin(first, 10, 0);
    let storage = format!(
        "DTSTART;TZID=Europe/Berlin:{}\r\nRRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=WE",
        first.format("%Y%m%dT100000")
    );
    let id = h
        .create_row(json!({"name": "Jour fixe", "isAppointment": true, "type": "RecurrencyTask",
            "recurrencyStorage": storage, "startOn": start, "endOn": start + Duration::minutes(30),
            "resourceToTasks": [{"userId": anna}]}))
        .await;
    h.hq_changed(id).await;
    let ev = h.event(ANNA, "Jour fixe").await;
    let gid = ev["id"].as_str().unwrap().to_string();
    let pattern = ev["recurrence"].clone();
    assert!(pattern.is_object(), "{ev}");
    let held_of = |field: &'static str| {
        let h = &h;
        async move {
            h.journal("held")
                .await
                .into_iter()
                .filter(|e| e.hq_id.as_deref() == Some(id.to_string().as_str()) && e.detail["field"] == field)
                .collect::<Vec<_>>()
        }
    };

    // helloHQ now holds a pattern hqsync cannot read: held, nothing written.
    let odd = "Jeden zweiten Mittwoch außer in den Ferien";
    h.hq.update_task(id, |t| t.recurrency_storage = Some(odd.to_string())).await.unwrap();
    let (g0, q0) = h.writes().await;
    h.hq_changed(id).await;
    assert_eq!(h.writes().await, (g0, q0), "nothing written for a pattern hqsync cannot read");
    let held = held_of("recurrencyStorage").await;
    assert_eq!(held.len(), 1, "journalled held: {held:?}");
    assert_eq!(held[0].detail["value"], odd, "with the value");
    assert!(held[0].detail["reason"].as_str().unwrap().contains("never overwritten"), "{:?}", held[0].detail);
    assert!(h.journal("skipped").await.iter().all(|e| e.hq_id.as_deref() != Some(id.to_string().as_str())));
    assert_eq!(h.event(ANNA, "Jour fixe").await["recurrence"], pattern, "the Exchange series keeps its pattern");
    h.hq_changed(id).await;
    assert_eq!(held_of("recurrencyStorage").await.len(), 1, "the same held value is journalled once");

    // helloHQ edits subject, location and the time of day: they reach the
    // series in one write; its pattern stays as Exchange has it.
    h.hq.update_task(id, |t| {
        t.name = Some("Jour fixe Team".into());
        t.place = Some("Raum Elbe".into());
        t.start_on = Some(berlin(first, 11, 0));
        t.end_on = Some(berlin(first, 11, 45));
    })
    .await
    .unwrap();
    h.hq_changed(id).await;
    let ev = h.event(ANNA, "Jour fixe Team").await;
    assert_eq!(ev["location"]["displayName"], "Raum Elbe");
    assert_eq!((utc_of(&ev["start"]), utc_of(&ev["end"])), (berlin(first, 11, 0), berlin(first, 11, 45)));
    assert_eq!(ev["recurrence"]["pattern"], pattern["pattern"], "{ev}");
    assert_eq!(ev["recurrence"]["range"], pattern["range"], "{ev}");
    assert_eq!(h.event_writes().await, g0 + 1, "one Exchange write");
    let row = h.hq.get_task(id).await.unwrap();
    assert_eq!(row.recurrency_storage.as_deref(), Some(odd), "never overwritten");

    // A move to another day would change the pattern: held, journalled, not written.
    let (g1, _) = h.writes().await;
    let thursday = first + Duration::days(1);
    h.hq.update_task(id, |t| {
        t.start_on = Some(berlin(thursday, 11, 0));
        t.end_on = Some(berlin(thursday, 11, 45));
    })
    .await
    .unwrap();
    h.hq_changed(id).await;
    assert_eq!(h.event_writes().await, g1, "the series is not moved to another day");
    assert_eq!(utc_of(&h.event(ANNA, "Jour fixe Team").await["start"]), berlin(first, 11, 0));
    assert_eq!(held_of("when").await.len(), 1, "the day move is journalled held");
    h.hq.update_task(id, |t| {
        t.start_on = Some(berlin(first, 11, 0));
        t.end_on = Some(berlin(first, 11, 45));
    })
    .await
    .unwrap();
    h.hq_changed(id).await;
    assert_eq!(h.event_writes().await, g1, "back on its day: nothing to write");

    // Outlook: another room, Ben invited, and the pattern changed (Wednesdays
    // and Fridays). Room and participant reach helloHQ; its pattern survives.
    let mut outlook_pattern = pattern.clone();
    outlook_pattern["pattern"]["daysOfWeek"] = json!(["wednesday", "friday"]);
    h.outlook_patch(
        ANNA,
        &gid,
        json!({"location": {"displayName": "Raum Alster"}, "recurrence": outlook_pattern,
            "attendees": [{"type": "required", "emailAddress": {"address": BEN, "name": "Ben Müller"}}]}),
    )
    .await;
    h.exchange_changed(ANNA, &gid).await;
    let row = h.row("Jour fixe Team").await;
    assert_eq!(row.place.as_deref(), Some("Raum Alster"));
    assert!(users_of(&row).contains(&ben), "{row:?}");
    assert_eq!(row.recurrency_storage.as_deref(), Some(odd), "an Outlook pattern change never overwrites it");
    assert_eq!(row.start_on, Some(berlin(first, 11, 0)));
    assert!(!held_of("recurrence").await.is_empty(), "the Outlook pattern change is journalled held");
    let ev = h.event(ANNA, "Jour fixe Team").await;
    assert_eq!(ev["recurrence"]["pattern"]["daysOfWeek"], json!(["wednesday", "friday"]), "not reverted either");

    // A pass over the mailbox leaves both sides as they are.
    let before = h.writes().await;
    h.pass(ANNA).await;
    assert_eq!(h.writes().await, before, "a pass writes nothing for the held series");
    assert_eq!(h.hq.get_task(id).await.unwrap().recurrency_storage.as_deref(), Some(odd));
    assert_eq!(held_of("recurrencyStorage").await.len(), 1);
    h.stop().await;
}

/// A series whose pattern cannot be read and that is not in Exchange yet is
/// not created there (a series cannot be written without its pattern): it
/// is journalled held with its value, and nothing is written.
#[tokio::test]
async fn an_unlinked_series_hqsync_cannot_read_is_held_and_not_created() {
    let h = H::start().await;
    let anna = h.user_id(ANNA).await;
    let start = berlin(in_days(2), 9, 0);
    h.sync_all().await;
    let id = h
        .create_row(json!({"name": "Sprechstunde", "isAppointment": true, "type": "RecurrencyTask",
            "recurrencyStorage": "alle 14 Tage", "startOn": start, "endOn": start + Duration::minutes(30),
            "resourceToTasks": [{"userId": anna}]}))
        .await;
    let (g0, q0) = h.writes().await;
    h.hq_changed(id).await;
    h.pass(ANNA).await;
    assert_eq!(h.writes().await, (g0, q0));
    assert!(h.events_named(ANNA, "Sprechstunde").await.is_empty());
    let held: Vec<_> =
        h.journal("held").await.into_iter().filter(|e| e.hq_id.as_deref() == Some(id.to_string().as_str())).collect();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].detail["value"], "alle 14 Tage");
    assert!(held[0].detail["reason"].as_str().unwrap().contains("Not created in Exchange"));
    h.stop().await;
}
