//! The helloHQ simulator over real HTTP: auth, paging, filters, full-replace
//! writes, validation, the v1 views, the deletions log, rate limiting, and
//! webhooks that hqsync's own verifier accepts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use hqsync::connectors::hellohq::webhook::{verify, WebhookHeaders, WebhookSecret};
use hqsync::queue::{Change, HqEntity};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, RetryPolicy, SeedProfile};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

struct Sim {
    sim: HellohqSim,
    http: reqwest::Client,
    token: String,
}

impl Sim {
    async fn start(cfg: HellohqSimConfig) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = HellohqSim::start(listener, cfg).await.unwrap();
        let http = reqwest::Client::new();
        let seed: Value = http.get(format!("{}/_sim/seed", sim.base_url())).send().await.unwrap().json().await.unwrap();
        let token = seed["syncToken"].as_str().unwrap().to_string();
        Sim { sim, http, token }
    }

    async fn demo() -> Sim {
        Sim::start(HellohqSimConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.sim.base_url())
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> reqwest::Response {
        self.http.request(method, self.url(path)).bearer_auth(&self.token).json(body).send().await.unwrap()
    }

    async fn control(&self, path: &str, body: &Value) -> Value {
        let r = self.http.post(self.url(path)).json(body).send().await.unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The one contact whose last name is `last`.
    async fn contact_named(&self, last: &str) -> Value {
        let list = self.get_json(&format!("/v2/ContactPersons?filter=lastName eq '{last}'")).await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "{last}");
        list[0].clone()
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_else(|| panic!("missing header {name}"))
}

#[tokio::test]
async fn requests_without_or_with_a_wrong_token_are_refused_with_401() {
    let sim = Sim::demo().await;
    let r = sim.http.get(sim.url("/v2/Users")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = sim.http.get(sim.url("/v2/Users")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = sim.http.get(sim.url("/v1/Leads")).bearer_auth("hqsim-user-999").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A user token reads, and what it creates is stamped with its user.
    let seed: Value = sim.http.get(sim.url("/_sim/seed")).send().await.unwrap().json().await.unwrap();
    let ben =
        seed["users"].as_array().unwrap().iter().find(|u| u["eMailWork"] == "ben.mueller@agentur-beispiel.de").unwrap();
    let token = ben["token"].as_str().unwrap();
    let project = sim.get_json("/v2/Projects").await[0]["id"].clone();
    let r = sim
        .http
        .post(sim.url(&format!("/v2/Projects/{project}/Tasks")))
        .bearer_auth(token)
        .json(&json!({"name": "Notiz", "isAppointment": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let task: Value = r.json().await.unwrap();
    assert_eq!(task["createdBy"], ben["id"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn lists_page_by_1000_and_next_link_leads_to_the_end() {
    let sim = Sim::start(HellohqSimConfig { seed: SeedProfile::Empty, ..Default::default() }).await;
    let ids = sim.control("/_sim/seed", &json!({"companies": [{"name": "Masse GmbH"}]})).await;
    let company = ids["companies"][0].clone();
    let contacts: Vec<Value> = (0..1234)
        .map(|i| json!({"companyId": company, "lastName": format!("Kontakt {i:04}"), "salutation": "Herr", "salutationForm": "Formal"}))
        .collect();
    sim.control("/_sim/seed", &json!({"contactPersons": contacts})).await;

    let mut url = "/v2/ContactPersons?orderby=lastName".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = sim.get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "helloHQ-Count"), "1234");
        let next = header(&r, "helloHQ-NextLink");
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= 1000);
        seen.extend(page.into_iter().map(|c| c["lastName"].as_str().unwrap().to_string()));
        pages += 1;
        if next.is_empty() {
            break;
        }
        assert!(next.starts_with("http://127.0.0.1:"), "absolute next link: {next}");
        url = next;
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 1234);
    assert_eq!(seen.first().unwrap(), "Kontakt 0000");
    assert_eq!(seen.last().unwrap(), "Kontakt 1233");

    // top is capped at 1000; explicit top/skip page exactly.
    let r = sim.get("/v2/ContactPersons?top=5000").await;
    assert_eq!(r.json::<Vec<Value>>().await.unwrap().len(), 1000);
    let r = sim.get("/v2/ContactPersons?$top=400&$skip=1200&$orderby=lastName desc").await;
    assert_eq!(header(&r, "helloHQ-NextLink"), "");
    let page: Vec<Value> = r.json().await.unwrap();
    assert_eq!(page.len(), 34);
    assert_eq!(page[0]["lastName"], "Kontakt 0033");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn updated_on_filter_in_both_spellings_returns_only_later_changes() {
    let sim = Sim::demo().await;
    let all = sim.get_json("/v2/ContactPersons?orderby=updatedOn desc").await;
    let newest = all[0]["updatedOn"].as_str().unwrap().to_string();
    assert!(newest.ends_with('Z') && newest.len() == 24, "RFC 3339 with milliseconds: {newest}");

    let mut celik = sim.contact_named("Çelik").await;
    celik["position"] = json!("Leitung Marketing");
    let r = sim.send(reqwest::Method::PUT, &format!("/v2/ContactPersons/{}", celik["id"]), &celik).await;
    assert_eq!(r.status(), StatusCode::OK);

    for param in ["filter", "$filter"] {
        let list = sim.get_json(&format!("/v2/ContactPersons?{param}=updatedOn gt datetime'{newest}'")).await;
        let ids: Vec<&Value> = list.as_array().unwrap().iter().map(|c| &c["id"]).collect();
        assert_eq!(ids, vec![&celik["id"]], "{param}");
    }
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn appointment_filter_returns_appointments_only() {
    let sim = Sim::demo().await;
    let all = sim.get_json("/v2/Projects/Tasks").await;
    let all = all.as_array().unwrap();
    let appts = sim.get_json("/v2/Projects/Tasks?$filter=isAppointment eq true").await;
    let appts = appts.as_array().unwrap();
    let expected = all.iter().filter(|t| t["isAppointment"] == true).count();
    assert!(expected >= 5);
    assert_eq!(appts.len(), expected);
    assert!(appts.iter().all(|t| t["isAppointment"] == true));
    assert!(!appts.iter().any(|t| t["type"] == "Vacation"), "a Vacation row is not an appointment");
    let tasks = sim.get_json("/v2/Projects/Tasks?filter=isAppointment eq false and projectId ne null").await;
    assert!(tasks.as_array().unwrap().iter().all(|t| t["isAppointment"] == false && t["projectId"].is_number()));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn contact_put_is_a_full_replace() {
    let sim = Sim::demo().await;
    let before = sim.contact_named("Größe").await;
    assert!(before["phoneMobile"].is_string() && before["defaultAddress"].is_object() && before["eMail"].is_string());
    let body = json!({"lastName": "Größe", "firstName": "Jürgen", "salutation": "Herr", "salutationForm": "Formal", "companyId": 999});
    let r = sim.send(reqwest::Method::PUT, &format!("/v2/ContactPersons/{}", before["id"]), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let after = sim.get_json(&format!("/v2/ContactPersons/{}", before["id"])).await;
    for cleared in [
        "phoneMobile",
        "phoneLandline",
        "position",
        "title",
        "birthdate",
        "eMail",
        "defaultAddress",
        "defaultAddressId",
    ] {
        assert!(after[cleared].is_null(), "{cleared} should be cleared: {}", after[cleared]);
    }
    assert_eq!(after["companyId"], before["companyId"], "companyId cannot change on PUT");
    assert!(after["updatedOn"].as_str() > before["updatedOn"].as_str());

    // Email is written through the default address and mirrored in eMail.
    let body = json!({"lastName": "Größe", "salutation": "Herr", "salutationForm": "Formal",
        "defaultAddress": {"street": "", "zipCode": "", "city": "", "country": "DE", "description": "Geschäftlich",
                           "email": "j.groesse@example.de"}});
    sim.send(reqwest::Method::PUT, &format!("/v2/ContactPersons/{}", before["id"]), &body).await;
    let after = sim.get_json(&format!("/v2/ContactPersons/{}", before["id"])).await;
    assert_eq!(after["eMail"], "j.groesse@example.de");
    assert_eq!(after["defaultAddress"]["email"], "j.groesse@example.de");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn contact_create_is_validated_like_the_live_api() {
    let sim = Sim::demo().await;
    let company = sim.get_json("/v2/Companies?filter=name eq 'Druckerei Weiß GmbH'").await[0]["id"].clone();
    let r = sim
        .send(
            reqwest::Method::POST,
            "/v2/ContactPersons",
            &json!({"companyId": company, "lastName": "Neu", "salutation": "Frau"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(header(&r, "content-type").starts_with("application/problem+json"));
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["status"], 400);
    assert!(p["errors"]["salutationForm"].is_array(), "{p}");

    let bad = json!({"companyId": company, "lastName": "Neu", "salutation": "Frau", "salutationForm": "Herzlich"});
    assert_eq!(sim.send(reqwest::Method::POST, "/v2/ContactPersons", &bad).await.status(), StatusCode::BAD_REQUEST);
    let no_company = json!({"lastName": "Neu", "salutation": "Frau", "salutationForm": "Formal"});
    let r = sim.send(reqwest::Method::POST, "/v2/ContactPersons", &no_company).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["errors"]["companyId"].is_array());

    // Integers are accepted and answered as names (A6).
    let ok = json!({"companyId": company, "lastName": "Neu", "salutation": "Divers", "salutationForm": 2});
    let r = sim.send(reqwest::Method::POST, "/v2/ContactPersons", &ok).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["salutationForm"], "Neutral");

    let missing = sim.get("/v2/ContactPersons/4242").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(header(&missing, "content-type").starts_with("application/problem+json"));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn v1_view_shows_every_address_including_privat_and_put_replaces_them() {
    let sim = Sim::demo().await;
    let v2 = sim.contact_named("Größe").await;
    assert!(v2.get("addresses").is_none(), "v2 shows only the default address");
    let id = v2["id"].as_i64().unwrap();
    let v1 = sim.get_json(&format!("/v1/ContactPersons({id})?$expand=Addresses")).await;
    assert_eq!(v1["Id"], id);
    assert_eq!(v1["LastName"], "Größe");
    let addresses = v1["Addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 2);
    let default = addresses.iter().find(|a| a["IsStandard"] == true).unwrap();
    assert_eq!(default["Id"], v2["defaultAddressId"]);
    assert_eq!(default["Fax"], "+49 40 1234569");
    let private = addresses.iter().find(|a| a["Description"] == "Privat").unwrap();
    assert_eq!(private["City"], "Hamburg");

    let body = json!({"Addresses": [{"Street": "Neue Straße", "HouseNumber": "1", "ZipCode": "20095", "City": "Hamburg",
        "Country": "DE", "Description": "Privat"}]});
    let r = sim.send(reqwest::Method::PUT, &format!("/v1/ContactPersons({id})"), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v1 = sim.get_json(&format!("/v1/ContactPersons({id})?$expand=Addresses")).await;
    let addresses = v1["Addresses"].as_array().unwrap();
    assert_eq!(addresses.len(), 2);
    assert!(addresses.iter().any(|a| a["IsStandard"] == true && a["Id"] == v2["defaultAddressId"]));
    assert!(addresses.iter().any(|a| a["Description"] == "Privat" && a["Street"] == "Neue Straße"));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn deleted_contact_is_listed_in_the_deletions_log() {
    let sim = Sim::demo().await;
    let contact = sim.contact_named("Lehmann").await;
    let path = format!("/v2/ContactPersons/{}", contact["id"]);
    assert!(sim.send(reqwest::Method::DELETE, &path, &json!(null)).await.status().is_success());
    assert_eq!(sim.get(&path).await.status(), StatusCode::NOT_FOUND);
    let log = sim.get_json("/v1/ConfigSystemEvents/do.GetDeleted()").await;
    assert!(log["@odata.context"].is_string());
    let ev = log["value"].as_array().unwrap().iter().find(|e| e["EntityId"] == contact["id"]).expect("logged");
    assert_eq!(ev["Type"], "EntityDeleted");
    assert_eq!(ev["DatabaseObject"], "ContactPerson");
    assert!(ev["CreatedOn"].is_string());
    // The project that listed the contact no longer does.
    let projects = sim.get_json("/v2/Projects?expand=contactPersons").await;
    assert!(projects.as_array().unwrap().iter().all(|p| p["contactPersons"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != contact["id"])));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn requests_past_the_rate_limit_get_429_with_retry_after() {
    let sim = Sim::start(HellohqSimConfig { rate_limit_per_minute: 5, ..Default::default() }).await;
    // 11 requests over at most two minute windows: one window sees a sixth.
    let mut throttled = None;
    for _ in 0..11 {
        let r = sim.get("/v2/Users").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = throttled.expect("a 429 past the limit");
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The limit is per token: a user token still gets through.
    let r = sim.http.get(sim.url("/v2/Users")).bearer_auth("hqsim-user-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stats: Value = sim.http.get(sim.url("/_sim/stats")).send().await.unwrap().json().await.unwrap();
    assert!(stats["throttled"].as_u64().unwrap() >= 1);
    assert!(stats["requests"]["GET /v2/Users"].as_u64().unwrap() >= 6);
    sim.sim.shutdown().await;
}

type Received = Arc<Mutex<Vec<(HeaderMap, bytes::Bytes)>>>;

fn got_all(r: &Received) -> Vec<(HeaderMap, bytes::Bytes)> {
    r.lock().unwrap().clone()
}

/// A receiver that refuses the first delivery with 500 and accepts the rest.
async fn webhook_receiver() -> (String, Received, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let got: Received = Arc::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let store = got.clone();
    let app = Router::new().route(
        "/hooks/hellohq",
        post(move |headers: HeaderMap, body: bytes::Bytes| {
            let store = store.clone();
            let tx = tx.clone();
            async move {
                let first = {
                    let mut g = store.lock().unwrap();
                    g.push((headers, body));
                    g.len() == 1
                };
                let _ = tx.send(());
                if first {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::NO_CONTENT
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/hellohq", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got, rx)
}

#[tokio::test]
async fn webhooks_verify_with_hqsyncs_verifier_and_retries_keep_the_id() {
    let retry = RetryPolicy { delays: vec![Duration::from_millis(50); 3], timeout: Duration::from_secs(5) };
    let sim = Sim::start(HellohqSimConfig { webhook_retry: retry, ..Default::default() }).await;
    let (url, received, mut arrivals) = webhook_receiver().await;
    let ep = sim.control("/_sim/webhooks", &json!({"url": url})).await;
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let listed: Value = sim.http.get(sim.url("/_sim/seed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["webhooks"][0]["secret"], secret.as_str());

    let mut contact = sim.contact_named("Weiß").await;
    contact["position"] = json!("Produktionsleiter");
    let r = sim.send(reqwest::Method::PUT, &format!("/v2/ContactPersons/{}", contact["id"]), &contact).await;
    assert_eq!(r.status(), StatusCode::OK);

    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await.expect("webhook delivered").unwrap();
    }
    let got = got_all(&received);
    let secrets = [WebhookSecret::parse(&SecretString::from(secret)).unwrap()];
    let mut ids = Vec::new();
    for (headers, body) in &got[..2] {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let hdrs = WebhookHeaders {
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
        };
        let v = verify(&secrets, hdrs, body, chrono::Utc::now()).expect("signature verifies");
        assert_eq!(v.entity, HqEntity::ContactPerson);
        assert_eq!(v.change, Change::Updated);
        assert_eq!(v.hq_id, contact["id"].to_string());
        assert!(v.message_id.starts_with("msg_"));
        assert_eq!(h("content-type"), Some("application/json"));
        ids.push(v.message_id);
    }
    assert_eq!(ids[0], ids[1], "a retry carries the same webhook-id");
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(body["type"], "contactPerson.updated");
    assert_eq!(body["data"]["entity"], "contactPerson");

    // A wrong secret does not verify the same delivery.
    let other =
        [WebhookSecret::parse(&SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string())).unwrap()];
    let (headers, body) = &got[0];
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let hdrs =
        WebhookHeaders { id: h("webhook-id"), timestamp: h("webhook-timestamp"), signature: h("webhook-signature") };
    assert!(verify(&other, hdrs, body, chrono::Utc::now()).is_err());

    // Deletions are announced too, as `<entity>.deleted`.
    let r = sim.send(reqwest::Method::DELETE, &format!("/v2/ContactPersons/{}", contact["id"]), &json!(null)).await;
    assert!(r.status().is_success());
    tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await.expect("webhook delivered").unwrap();
    let deleted: Value = serde_json::from_slice(&got_all(&received)[2].1).unwrap();
    assert_eq!(deleted["type"], "contactPerson.deleted");
    assert_eq!(deleted["data"]["id"], contact["id"]);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn demo_seed_has_what_hqsync_needs() {
    let sim = Sim::demo().await;
    let users = sim.get_json("/v2/Users").await;
    let mails: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["eMailWork"].as_str().unwrap()).collect();
    for m in ["anna.schmidt", "ben.mueller", "clara.wagner", "david.fischer"] {
        assert!(mails.contains(&format!("{m}@agentur-beispiel.de").as_str()), "{m}");
    }
    let types = sim.get_json("/v2/CompanyTypes").await;
    let names: Vec<&str> = types.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Kunde", "Lieferant", "Interessent"]);

    let companies = sim.get_json("/v2/Companies?expand=contactPersons").await;
    let prospect = companies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["companyTypes"].as_array().unwrap().iter().any(|t| t["name"] == "Interessent"))
        .expect("a prospect company");
    assert!(!prospect["contactPersons"].as_array().unwrap().is_empty());
    assert!(prospect["responsibleUsers"][0]["userId"].is_number());

    let contacts = sim.get_json("/v2/ContactPersons?filter=eMail eq null").await;
    assert!(!contacts.as_array().unwrap().is_empty(), "a contact without email");

    let series = sim.get_json("/v2/Projects/Tasks?filter=type eq 'RecurrencyTask'&expand=resourceToTasks").await;
    let series = &series[0];
    let storage = series["recurrencyStorage"].as_str().unwrap();
    assert!(storage.starts_with("DTSTART;TZID=Europe/Berlin:"), "{storage}");
    assert!(storage.contains("\r\nRRULE:FREQ=WEEKLY") && storage.contains("\r\nEXDATE;TZID=Europe/Berlin:"));
    let assignments = series["resourceToTasks"].as_array().unwrap();
    assert!(assignments.iter().any(|a| a["resource"]["name"] == "Raum Elbe"));
    let exceptions = sim.get_json(&format!("/v2/Projects/Tasks?filter=parentId eq {}", series["id"])).await;
    assert_eq!(exceptions[0]["type"], "RecurrencyException");
    assert!(exceptions[0]["originalStartOn"].is_string());

    let with_contact =
        sim.get_json("/v2/Projects/Tasks?filter=name eq 'Kick-off Website-Relaunch'&expand=resourceToTasks").await;
    let a = with_contact[0]["resourceToTasks"].as_array().unwrap();
    assert!(a.iter().any(|x| x["contactPerson"]["lastName"] == "Çelik"));
    assert!(a.iter().any(|x| x["user"]["eMailWork"].is_string()));

    let private = sim.get_json("/v2/Projects/Tasks?filter=type eq 'PrivateAppointment'").await;
    assert_eq!(private.as_array().unwrap().len(), 1);
    let absences = sim.get_json("/v2/Absences").await;
    let vacation = absences.as_array().unwrap().iter().find(|a| a["type"] == "Vacation").expect("a vacation");
    assert!(vacation["startDate"].is_string() && vacation["startOn"].is_null());
    let done = sim.get_json("/v2/Projects/Tasks?filter=isDone eq true").await;
    assert_eq!(done[0]["percentDone"], 100);

    let lead = sim.get_json("/v1/Leads?$expand=ContactPersons").await;
    let lead = &lead["value"][0];
    assert!(lead["ResponsibleUserId"].is_number());
    assert!(!lead["ContactPersons"].as_array().unwrap().is_empty());
    let project_id = sim.get_json("/v2/Projects").await[0]["id"].clone();
    let project = sim.get_json(&format!("/v1/Projects({project_id})?$expand=ContactPersons,Members")).await;
    assert!(!project["Members"].as_array().unwrap().is_empty());
    assert!(!project["ContactPersons"].as_array().unwrap().is_empty());
    sim.sim.shutdown().await;
}

/// Property names of the published schemas (tests/fixtures/hellohq), so a
/// client written against the specs finds every field it expects.
#[tokio::test]
async fn rendered_entities_carry_every_property_of_the_published_schemas() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/hellohq/schema_fields.json")).unwrap();
    let sim = Sim::demo().await;
    let series = sim.get_json("/v2/Projects/Tasks?filter=type eq 'RecurrencyTask'").await[0].clone();
    let contact = sim.contact_named("Größe").await;
    let company =
        sim.get_json("/v2/Companies?filter=name eq 'Nordlicht Medien GmbH'&expand=contactPersons").await[0].clone();
    let project = sim.get_json("/v2/Projects").await[0].clone();
    let v1_contact = sim.get_json(&format!("/v1/ContactPersons({})?$expand=Addresses,Company", contact["id"])).await;
    let lead =
        sim.get_json("/v1/Leads?$expand=ContactPersons,ResponsibleUser,Company,Project").await["value"][0].clone();
    let v1_project = sim
        .get_json(&format!("/v1/Projects({})?$expand=ContactPersons,Members,Company,ResponsibleUser", project["id"]))
        .await;
    sim.send(reqwest::Method::DELETE, &format!("/v2/ContactPersons/{}", contact["id"]), &json!(null)).await;
    let event = sim.get_json("/v1/ConfigSystemEvents/do.GetDeleted()").await["value"][0].clone();

    let cases: Vec<(&str, &str, Value, &[&str])> = vec![
        ("v2", "UserGet", sim.get_json("/v2/Users/1").await, &[]),
        ("v2", "CompanyTypeGet", sim.get_json("/v2/CompanyTypes").await[0].clone(), &[]),
        ("v2", "CompanyGetRelated", company.clone(), &[]),
        ("v2", "CompanyAddressGet", company["defaultAddress"].clone(), &[]),
        ("v2", "ContactPersonGetRelated", contact.clone(), &[]),
        ("v2", "ProjectGet", project, &[]),
        ("v2", "AbsencesGetRelated", sim.get_json("/v2/Absences").await[0].clone(), &[]),
        ("v2", "TaskBaseDto", series, &[]),
        ("v1", "ContactPerson", v1_contact.clone(), &[]),
        ("v1", "CompanyAddress", v1_contact["Addresses"][0].clone(), &[]),
        ("v1", "Lead", lead, &[]),
        // Navigations to entities the simulator does not model.
        (
            "v1",
            "Project",
            v1_project,
            &[
                "Articles",
                "ContactHistories",
                "DeliveryAddress",
                "Files",
                "InvoiceAddress",
                "Lead",
                "ProjectBudgets",
                "ProjectStatus",
                "ProjectTemplate",
                "Reportings",
                "Subsystems",
                "CustomFields",
            ],
        ),
        ("v1", "ConfigSystemEvent", event, &[]),
    ];
    for (api, schema, row, not_served) in cases {
        let fields = fixture[api][schema].as_array().unwrap_or_else(|| panic!("{schema} in fixture"));
        for f in fields.iter().map(|f| f.as_str().unwrap()).filter(|f| !not_served.contains(f)) {
            assert!(row.get(f).is_some(), "{api} {schema} lacks {f}: {row}");
        }
    }
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn user_tokens_do_not_see_other_users_private_appointments() {
    let sim = Sim::demo().await;
    let private =
        sim.get_json("/v2/Projects/Tasks?filter=type eq 'PrivateAppointment'&expand=resourceToTasks").await[0].clone();
    let owner = private["resourceToTasks"][0]["userId"].as_i64().unwrap();
    let other = if owner == 1 { 2 } else { 1 };
    let path = format!("/v1/ProjectTasks({})", private["id"]);
    let as_user = |u: i64| sim.http.get(sim.url(&path)).bearer_auth(format!("hqsim-user-{u}")).send();
    assert_eq!(as_user(owner).await.unwrap().status(), StatusCode::OK);
    assert_eq!(as_user(other).await.unwrap().status(), StatusCode::NOT_FOUND);
    let r =
        sim.http.get(sim.url("/v2/Projects/Tasks")).bearer_auth(format!("hqsim-user-{other}")).send().await.unwrap();
    let seen: Vec<Value> = r.json().await.unwrap();
    assert!(!seen.iter().any(|t| t["id"] == private["id"]));
    assert!(seen.iter().any(|t| t["isAppointment"] == true), "public appointments stay visible");
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn faults_inject_throttling_and_errors_until_cleared() {
    let sim = Sim::demo().await;
    sim.control("/_sim/faults", &json!({"throttle_rate": 1.0})).await;
    let r = sim.get("/v1/Leads(400)").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    sim.control("/_sim/faults", &json!({"error_rate": 1.0})).await;
    assert_eq!(sim.get("/v1/Leads(400)").await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    sim.control("/_sim/faults", &json!({})).await;
    assert_eq!(sim.get("/v1/Leads(400)").await.status(), StatusCode::OK);
    let stats: Value = sim.http.get(sim.url("/_sim/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["requests"]["GET /v1/Leads({id})"], 3);
    assert_eq!(stats["throttled"], 1);
    assert_eq!(stats["counts"]["user"], 4);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn absences_are_hour_based_or_day_based_by_type() {
    let sim = Sim::demo().await;
    let hourly =
        json!({"type": "PrivateAbsence", "userId": 2, "start": "2026-11-14T06:00:00Z", "end": "2026-11-14T10:00:00Z"});
    let r = sim.send(reqwest::Method::POST, "/v2/Absences", &hourly).await;
    assert_eq!(r.status(), StatusCode::OK);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["startOn"], "2026-11-14T06:00:00.000Z");
    assert!(a["startDate"].is_null());
    let daily = json!({"type": "Vacation", "userId": 2, "start": "2026-11-03T00:00:00", "end": "2026-11-04T12:00:00"});
    let a: Value = sim.send(reqwest::Method::POST, "/v2/Absences", &daily).await.json().await.unwrap();
    assert_eq!(a["startDate"], "2026-11-03T00:00:00");
    assert_eq!(a["endDate"], "2026-11-04T12:00:00");
    assert!(a["startOn"].is_null());
    assert_eq!(a["missedDays"], 1.5);
    assert_eq!(a["user"]["id"], 2);
    let path = format!("/v2/Absences/{}", a["id"]);
    assert!(sim.send(reqwest::Method::DELETE, &path, &json!(null)).await.status().is_success());
    assert_eq!(sim.get(&path).await.status(), StatusCode::NOT_FOUND);
    let bad = json!({"type": "Urlaub", "userId": 2, "start": "2026-11-03T00:00:00", "end": "2026-11-04T00:00:00"});
    assert_eq!(sim.send(reqwest::Method::POST, "/v2/Absences", &bad).await.status(), StatusCode::BAD_REQUEST);
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn appointments_round_trip_with_assignments_and_series_deletion_takes_exceptions() {
    let sim = Sim::demo().await;
    let project = sim.get_json("/v2/Projects?filter=name eq 'Interne Termine'").await[0]["id"].clone();
    // No endpoint lists resources (C5): the room is known from a seeded appointment.
    let kickoff = sim.get_json("/v2/Projects/Tasks?filter=name eq 'Kick-off Website-Relaunch'").await[0]["id"].clone();
    let assigned = sim.get_json(&format!("/v1/ProjectTasks({kickoff})/Assignments")).await;
    let room = assigned.as_array().unwrap().iter().find(|a| a["Resource"]["Name"] == "Raum Elbe").unwrap()
        ["ResourceId"]
        .clone();
    let body = json!({"name": "Workshop", "isAppointment": true, "type": "PublicAppointment",
        "startOn": "2026-12-01T09:00:00Z", "endOn": "2026-12-01T11:00:00Z", "place": "Raum Elbe", "iCalUId": "abc@x",
        "originalStartOn": "2026-12-01T09:00:00Z", "resourceToTasks": [{"userId": 1}]});
    let r = sim.send(reqwest::Method::POST, &format!("/v2/Projects/{project}/Tasks"), &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].clone();
    // Neither `resourceToTasks` nor `originalStartOn` is written over HTTP (in no spec).
    let assignments = format!("/v1/ProjectTasks({id})/Assignments");
    assert_eq!(sim.get_json(&assignments).await, json!([]));
    for a in [json!({"UserId": 1}), json!({"ResourceId": room})] {
        assert_eq!(sim.send(reqwest::Method::POST, &assignments, &a).await.status(), StatusCode::CREATED);
    }
    let bad = json!({"UserId": 1, "ResourceId": room});
    assert_eq!(sim.send(reqwest::Method::POST, &assignments, &bad).await.status(), StatusCode::BAD_REQUEST);
    let list = format!("/v2/Projects/Tasks?filter=id eq {id}");
    let read = sim.get_json(&format!("{list}&$expand=resourceToTasks")).await[0].clone();
    assert_eq!(read["resourceToTasks"].as_array().unwrap().len(), 2);
    assert_eq!(read["iCalUId"], "abc@x");
    assert!(read["originalStartOn"].is_null());
    let plain = sim.get_json(&list).await[0].clone();
    assert!(plain.get("resourceToTasks").is_none(), "assignments only on expand");
    let v1 = sim.get_json(&format!("/v1/ProjectTasks({id})")).await;
    assert_eq!((v1["Name"].clone(), v1["ProjectId"].clone()), (json!("Workshop"), project.clone()));

    let path = format!("/v2/Projects/{project}/Tasks/{id}");
    let replace = json!({"name": "Workshop", "isAppointment": true, "startOn": "2026-12-01T10:00:00Z", "endOn": "2026-12-01T12:00:00Z"});
    assert_eq!(sim.send(reqwest::Method::PUT, &path, &replace).await.status(), StatusCode::OK);
    let read = sim.get_json(&format!("{list}&expand=resourceToTasks")).await[0].clone();
    assert!(read["place"].is_null() && read["type"].is_null() && read["iCalUId"].is_null());
    assert_eq!(read["resourceToTasks"].as_array().unwrap().len(), 2, "a replace keeps the assignments");
    let backwards = json!({"name": "x", "startOn": "2026-12-01T10:00:00Z", "endOn": "2026-12-01T09:00:00Z"});
    assert_eq!(sim.send(reqwest::Method::PUT, &path, &backwards).await.status(), StatusCode::BAD_REQUEST);
    let first = sim.get_json(&assignments).await[0]["Id"].clone();
    let one = format!("/v1/ProjectTasks({id})/Assignments({first})");
    assert!(sim.send(reqwest::Method::DELETE, &one, &json!(null)).await.status().is_success());
    assert_eq!(sim.get_json(&assignments).await.as_array().unwrap().len(), 1);

    let series = sim.get_json("/v2/Projects/Tasks?filter=type eq 'RecurrencyTask'").await[0].clone();
    let exception = sim.get_json(&format!("/v2/Projects/Tasks?filter=parentId eq {}", series["id"])).await[0].clone();
    let r = sim.send(reqwest::Method::DELETE, &format!("/v1/ProjectTasks({})", series["id"]), &json!(null)).await;
    assert!(r.status().is_success());
    assert_eq!(sim.get(&format!("/v1/ProjectTasks({})", exception["id"])).await.status(), StatusCode::NOT_FOUND);
    let log = sim.get_json("/v1/ConfigSystemEvents/do.GetDeleted()?$filter=DatabaseObject eq 'Task'").await;
    let ids: Vec<&Value> = log["value"].as_array().unwrap().iter().map(|e| &e["EntityId"]).collect();
    assert!(ids.contains(&&series["id"]) && ids.contains(&&exception["id"]));
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn the_withdrawn_flat_routes_answer_404_like_any_unknown_route() {
    let sim = Sim::demo().await;
    let id = sim.get_json("/v2/Projects/Tasks").await[0]["id"].clone();
    let body = json!({"name": "x", "projectId": 1});
    for (method, path) in [
        (reqwest::Method::GET, format!("/v2/Projects/Tasks/{id}")),
        (reqwest::Method::PUT, format!("/v2/Projects/Tasks/{id}")),
        (reqwest::Method::DELETE, format!("/v2/Projects/Tasks/{id}")),
        (reqwest::Method::POST, "/v2/Projects/Tasks".to_string()),
        (reqwest::Method::GET, "/v2/Resources".to_string()),
    ] {
        let r = sim.send(method.clone(), &path, &body).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["title"], hqsync::sim::hellohq::NO_ROUTE, "{method} {path}");
    }
    sim.sim.shutdown().await;
}

#[tokio::test]
async fn company_types_change_only_through_update_company_types() {
    let sim = Sim::demo().await;
    let types = sim.get_json("/v2/CompanyTypes?filter=name eq 'Interessent'").await;
    let prospect = types[0]["id"].clone();
    let body = json!({"name": "Neukunde AG", "companyTypes": [{"companyTypeId": prospect}], "responsibleUserIds": [3],
        "defaultAddress": {"street": "Weg", "zipCode": "20095", "city": "Hamburg", "country": "DE", "description": "Haupt"}});
    let created: Value = sim.send(reqwest::Method::POST, "/v2/Companies", &body).await.json().await.unwrap();
    assert_eq!(created["companyTypes"][0]["name"], "Interessent");
    assert_eq!(created["responsibleUsers"][0]["lastName"], "Wagner");
    let path = format!("/v2/Companies/{}", created["id"]);
    let r = sim.send(reqwest::Method::PUT, &path, &json!({"name": "Neukunde AG", "companyTypes": []})).await;
    assert_eq!(r.json::<Value>().await.unwrap()["companyTypes"][0]["name"], "Interessent", "PUT keeps types");
    let kunde = sim.get_json("/v2/CompanyTypes?filter=name eq 'Kunde'").await[0]["id"].clone();
    let r = sim
        .send(
            reqwest::Method::POST,
            &format!("{path}/UpdateCompanyTypes"),
            &json!([{"companyTypeId": kunde, "number": "K-1"}]),
        )
        .await;
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["companyTypes"].as_array().unwrap().len(), 1);
    assert_eq!(updated["companyTypes"][0]["name"], "Kunde");
    assert_eq!(updated["companyTypes"][0]["number"], "K-1");
    sim.sim.shutdown().await;
}
