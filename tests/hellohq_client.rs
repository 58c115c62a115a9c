//! hqsync's helloHQ client against the helloHQ simulator over real HTTP:
//! paging, auth failures, throttling, full-replace writes that keep what
//! they do not touch, the v1 private address, change polling with its
//! overlap, the deletions log and webhook registration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hqsync::connectors::hellohq::client::{
    HellohqClient, HellohqClientConfig, HqError, ListQuery, QuerySpelling, RetryPolicy,
};
use hqsync::connectors::hellohq::poll::{ChangePoller, CURSOR_SCOPE};
use hqsync::connectors::hellohq::wire::{
    Address, AddressV1, CompanyPost, CompanyTypeRef, ContactPerson, SalutationForm, Task, TaskClassification,
};
use hqsync::model::TenantId;
use hqsync::queue::{Change, Hint, HqEntity, Origin};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, SeedProfile};
use hqsync::store::{Cipher, GraphCredentials, HellohqCredentials, Store, Tenant};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

async fn start_sim(seed: SeedProfile) -> HellohqSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    HellohqSim::start(listener, HellohqSimConfig { seed, ..Default::default() }).await.unwrap()
}

fn config(base: &str, token: &str) -> HellohqClientConfig {
    // The simulator listens on 127.0.0.1: the address guard is off here.
    let mut cfg = HellohqClientConfig::new(base, SecretString::from(token.to_string())).allowing_private_addresses();
    cfg.retry = RetryPolicy {
        max_attempts: 30,
        max_total_wait: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    };
    cfg
}

fn client(sim: &HellohqSim) -> HellohqClient {
    HellohqClient::new(config(&sim.base_url(), &sim.sync_token())).unwrap()
}

/// A fresh in-memory store that knows the test tenant (cursors belong to one).
async fn store() -> Store {
    let cipher = Cipher::from_base64(&Cipher::generate_key_base64()).unwrap();
    let store = Store::open("sqlite::memory:", 1, cipher).await.unwrap();
    let now = chrono::Utc::now();
    store
        .upsert_tenant(&Tenant {
            id: tenant(),
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
                base_url: "http://127.0.0.1:1".into(),
                token: SecretString::from("hq-token".to_string()),
                webhook_secrets: Vec::new(),
            },
            settings: json!({}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

async fn control(sim: &HellohqSim, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut rb = reqwest::Client::new().request(method, format!("{}{path}", sim.base_url()));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn stats(sim: &HellohqSim) -> Value {
    control(sim, reqwest::Method::GET, "/_sim/stats", None).await
}

fn requests(stats: &Value, route: &str) -> u64 {
    stats["requests"][route].as_u64().unwrap_or(0)
}

/// The record exactly as helloHQ serves it (no struct of ours in between).
async fn raw(sim: &HellohqSim, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.sync_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK, "GET {path}");
    r.json().await.unwrap()
}

async fn contact_id(c: &HellohqClient, last_name: &str) -> i32 {
    let found = c
        .list_v2::<ContactPerson>("/v2/ContactPersons", &ListQuery::filter(format!("lastName eq '{last_name}'")))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1, "one contact named {last_name}");
    found.items[0].id
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    v
}

// ---- paging and errors --------------------------------------------------------

#[tokio::test]
async fn paging_collects_every_contact_across_pages_with_the_count_matching() {
    let sim = start_sim(SeedProfile::Empty).await;
    let ids =
        control(&sim, reqwest::Method::POST, "/_sim/seed", Some(json!({"companies": [{"name": "Viele GmbH"}]}))).await;
    let company = ids["companies"][0].as_i64().unwrap();
    let contacts: Vec<Value> = (0..2345)
        .map(|i| {
            json!({"companyId": company, "lastName": format!("Kontakt {i}"), "salutation": "Herr",
                        "salutationForm": "Formal"})
        })
        .collect();
    control(&sim, reqwest::Method::POST, "/_sim/seed", Some(json!({"contactPersons": contacts}))).await;

    let c = client(&sim);
    let mut seen_progress = Vec::new();
    let listing = c
        .list_v2_with::<ContactPerson>("/v2/ContactPersons", &ListQuery::default(), |p| seen_progress.push(p.fetched))
        .await
        .unwrap();

    assert_eq!(listing.items.len(), 2345);
    assert_eq!(listing.total, Some(2345));
    assert_eq!(listing.pages, 3);
    assert_eq!(seen_progress, vec![1000, 2000, 2345]);
    let mut ids: Vec<i32> = listing.items.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2345, "no contact twice");
    assert_eq!(requests(&stats(&sim).await, "GET /v2/ContactPersons"), 3);
}

#[tokio::test]
async fn a_bad_token_is_unauthorized_at_once_without_retries() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = HellohqClient::new(config(&sim.base_url(), "not-the-token")).unwrap();

    let err = c.get_contact_person(200).await.unwrap_err();

    assert!(matches!(err, HqError::Unauthorized { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(!format!("{err} {err:?}").contains("not-the-token"), "the token never shows in errors");
    let s = stats(&sim).await;
    assert_eq!(s["unauthorized"], 1);
    assert_eq!(requests(&s, "GET /v2/ContactPersons/{id}"), 1);
}

#[tokio::test]
async fn a_missing_record_is_not_found_and_a_rejected_write_keeps_the_body() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);

    assert!(matches!(c.get_task(1).await.unwrap_err(), HqError::NotFound { .. }));
    let err = c
        .create_contact_person(&ContactPerson {
            company_id: Some(999_999),
            last_name: Some("X".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();

    let HqError::Validation { status, body } = &err else { panic!("expected Validation, got {err:?}") };
    assert_eq!(status.as_u16(), 400);
    assert!(body.as_str().contains("companyId"), "the server's explanation is kept: {body}");
    assert_eq!(requests(&stats(&sim).await, "POST /v2/ContactPersons"), 1, "4xx is never retried");
}

#[tokio::test]
async fn server_errors_are_kept_with_their_body() {
    let sim = start_sim(SeedProfile::Demo).await;
    control(&sim, reqwest::Method::POST, "/_sim/faults", Some(json!({"error_rate": 1.0}))).await;

    let err = client(&sim).get_user(1).await.unwrap_err();

    let HqError::Server { status, body } = &err else { panic!("expected Server, got {err:?}") };
    assert_eq!(status.as_u16(), 500);
    assert!(body.as_str().contains("Injected fault"));
    assert!(err.is_transient());
}

// ---- throttling -----------------------------------------------------------------

/// What the proxy saw: arrival time, status answered, `Retry-After` answered.
type Log = Arc<Mutex<Vec<(Instant, u16, Option<f64>)>>>;

/// A recording pass-through in front of the simulator, so the test sees
/// exactly when each request arrived and what it was told.
async fn recording_proxy(target: String) -> (String, Log) {
    let log: Log = Arc::default();
    let state = (target, log.clone(), reqwest::Client::new());
    async fn forward(
        State((target, log, http)): State<(String, Log, reqwest::Client)>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let arrived = Instant::now();
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut rb =
            http.request(reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(), format!("{target}{pq}"));
        if let Some(a) = headers.get("authorization") {
            rb = rb.header("authorization", a.to_str().unwrap());
        }
        let r = rb.body(body.to_vec()).send().await.unwrap();
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").and_then(|h| h.to_str().ok()?.parse::<f64>().ok());
        let mut out = HeaderMap::new();
        for (k, v) in r.headers() {
            if let Ok(name) = axum::http::HeaderName::from_bytes(k.as_str().as_bytes()) {
                out.insert(name, axum::http::HeaderValue::from_bytes(v.as_bytes()).unwrap());
            }
        }
        let bytes = r.bytes().await.unwrap();
        log.lock().unwrap().push((arrived, status, retry_after));
        (StatusCode::from_u16(status).unwrap(), out, bytes.to_vec()).into_response()
    }
    let app = Router::new().fallback(forward).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), log)
}

#[tokio::test]
async fn a_429_storm_completes_and_nothing_is_sent_before_retry_after_elapsed() {
    let sim = start_sim(SeedProfile::Demo).await;
    let (proxy, log) = recording_proxy(sim.base_url()).await;
    control(&sim, reqwest::Method::POST, "/_sim/faults", Some(json!({"throttle_rate": 0.5}))).await;
    let c = HellohqClient::new(config(&proxy, &sim.sync_token())).unwrap();

    // Sequential calls until the storm has hit at least three times.
    let mut calls = 0;
    while log.lock().unwrap().iter().filter(|e| e.1 == 429).count() < 3 {
        let users = c.list_users().await.expect("the client rides out the throttling");
        assert_eq!(users.len(), 4);
        calls += 1;
        assert!(calls < 40, "a 50% throttle rate should have struck by now");
    }

    let log = log.lock().unwrap().clone();
    let throttled: Vec<usize> = (0..log.len()).filter(|i| log[*i].1 == 429).collect();
    for i in throttled.iter().copied() {
        let (at, _, retry_after) = log[i];
        let retry_after = Duration::from_secs_f64(retry_after.expect("the simulator sends Retry-After"));
        let next = log.get(i + 1).expect("a throttled call is retried").0;
        assert!(
            next.duration_since(at) >= retry_after,
            "request {} came {:?} after a 429 asking for {:?}",
            i + 1,
            next.duration_since(at),
            retry_after
        );
    }
    assert_eq!(stats(&sim).await["throttled"].as_u64().unwrap(), throttled.len() as u64);
    assert_eq!(log.iter().filter(|e| e.1 == 200).count(), calls);
}

#[tokio::test]
async fn throttling_beyond_the_retry_budget_is_a_throttled_error() {
    let sim = start_sim(SeedProfile::Demo).await;
    control(&sim, reqwest::Method::POST, "/_sim/faults", Some(json!({"throttle_rate": 1.0}))).await;
    let mut cfg = config(&sim.base_url(), &sim.sync_token());
    cfg.retry.max_attempts = 3;
    let c = HellohqClient::new(cfg).unwrap();

    let err = c.get_user(1).await.unwrap_err();

    let HqError::Throttled { attempts, retry_after, .. } = &err else { panic!("expected Throttled, got {err:?}") };
    assert_eq!(*attempts, 3);
    assert!(retry_after.is_some_and(|d| d >= Duration::from_secs(1)));
    assert!(err.is_transient());
    assert_eq!(stats(&sim).await["throttled"], 3);
}

/// A server that answers 503 `failures` times, then 200 with `[]`, and
/// counts the requests it saw.
async fn flaky_gateway(failures: usize) -> (String, Arc<Mutex<usize>>) {
    let seen: Arc<Mutex<usize>> = Arc::default();
    let state = (seen.clone(), failures);
    async fn answer(State((seen, failures)): State<(Arc<Mutex<usize>>, usize)>) -> Response {
        let n = {
            let mut s = seen.lock().unwrap();
            *s += 1;
            *s
        };
        if n <= failures {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream busy").into_response()
        } else {
            ([("helloHQ-Count", "0"), ("helloHQ-NextLink", "")], "[]").into_response()
        }
    }
    let app = Router::new().fallback(answer).with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn gateway_errors_are_retried_and_then_reported_as_server_errors() {
    let (base, seen) = flaky_gateway(2).await;
    let c = HellohqClient::new(config(&base, "t")).unwrap();
    let users = c.list_users().await.unwrap();
    assert!(users.is_empty());
    assert_eq!(*seen.lock().unwrap(), 3, "two 503s, then the answer");

    let (base, seen) = flaky_gateway(usize::MAX).await;
    let mut cfg = config(&base, "t");
    cfg.retry.max_attempts = 4;
    let err = HellohqClient::new(cfg).unwrap().list_users().await.unwrap_err();
    let HqError::Server { status, body } = &err else { panic!("expected Server, got {err:?}") };
    assert_eq!((status.as_u16(), body.as_str()), (503, "upstream busy"));
    assert_eq!(*seen.lock().unwrap(), 4, "bounded by max_attempts");
}

#[tokio::test]
async fn a_create_answered_by_a_gateway_error_is_not_resent() {
    let (base, seen) = flaky_gateway(1).await;
    let c = HellohqClient::new(config(&base, "t")).unwrap();

    let task = Task { name: Some("Einmalig".into()), project_id: Some(1), ..Default::default() };
    let err = c.create_task(&task).await.unwrap_err();

    assert!(matches!(err, HqError::Server { .. }) && err.is_transient(), "{err:?}");
    assert_eq!(*seen.lock().unwrap(), 1, "the create may have happened: the caller re-reads before trying again");
}

// ---- full-replace writes ----------------------------------------------------------

#[tokio::test]
async fn a_contact_update_changes_only_the_intended_field_and_keeps_unmodelled_ones() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let id = contact_id(&c, "Größe").await;
    // A field hqsync's struct does not model, set as the helloHQ UI would.
    let mut seeded = raw(&sim, &format!("/v2/ContactPersons/{id}")).await;
    seeded["customFields"] = json!([{"name": "Kundennummer", "value": "K-4711"}]);
    let put = reqwest::Client::new()
        .put(format!("{}/v2/ContactPersons/{id}", sim.base_url()))
        .bearer_auth(sim.sync_token())
        .json(&without(seeded, &["companyId"]))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let before = raw(&sim, &format!("/v2/ContactPersons/{id}")).await;
    let private_before = c.get_contact_person_v1(id).await.unwrap().private_address().cloned();

    let updated = c.update_contact_person(id, |p| p.position = Some("Inhaber".into())).await.unwrap();

    assert_eq!(updated.position.as_deref(), Some("Inhaber"));
    let after = raw(&sim, &format!("/v2/ContactPersons/{id}")).await;
    assert_eq!(after["position"], "Inhaber");
    assert_eq!(after["customFields"], json!([{"name": "Kundennummer", "value": "K-4711"}]));
    // The default address row is rewritten by a replace, so its own stamp moves.
    let unstamped = |mut v: Value| {
        v["defaultAddress"] = without(v["defaultAddress"].take(), &["updatedOn", "updatedBy"]);
        without(v, &["position", "updatedOn", "updatedBy"])
    };
    assert_eq!(unstamped(after), unstamped(before), "nothing else moved");
    let private_after = c.get_contact_person_v1(id).await.unwrap().private_address().cloned();
    assert!(private_before.is_some());
    assert_eq!(private_after, private_before, "the v2 replace keeps the private address");
}

#[tokio::test]
async fn a_task_update_keeps_participants_and_every_other_field() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let tasks = c
        .list_v2::<Task>("/v2/Projects/Tasks", &ListQuery::filter("name eq 'Kick-off Website-Relaunch'"))
        .await
        .unwrap();
    let id = tasks.items[0].id;
    let path = format!("/v2/Projects/Tasks?filter=id%20eq%20{id}&expand=resourceToTasks");
    let before = raw(&sim, &path).await[0].clone();

    let updated = c.update_task(id, |t| t.place = Some("Raum Alster".into())).await.unwrap();

    assert_eq!(updated.place.as_deref(), Some("Raum Alster"));
    assert_eq!(updated.kind, Some(TaskClassification::PublicAppointment));
    let after = raw(&sim, &path).await[0].clone();
    let who = |t: &Value| -> Vec<(Value, Value, Value)> {
        t["resourceToTasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["userId"].clone(), a["resourceId"].clone(), a["contactPersonId"].clone()))
            .collect()
    };
    assert_eq!(who(&after), who(&before), "participants and rooms survive the replace");
    assert_eq!(who(&before).len(), 4);
    let ignore = ["place", "updatedOn", "updatedBy", "resourceToTasks"];
    assert_eq!(without(after, &ignore), without(before, &ignore));
}

#[tokio::test]
async fn a_company_is_created_with_its_type_and_a_replace_keeps_types_and_address() {
    let sim = start_sim(SeedProfile::Empty).await;
    let c = client(&sim);
    let types = c.list_company_types().await.unwrap();
    let prospect = types.iter().find(|t| t.name.as_deref() == Some("Interessent")).unwrap().id;
    let post = CompanyPost {
        name: "Neu & Co. KG".into(),
        company_types: vec![CompanyTypeRef { company_type_id: prospect, number: None }],
        default_address: Some(Address {
            street: Some("Mönckebergstraße".into()),
            zip_code: Some("20095".into()),
            city: Some("Hamburg".into()),
            country: Some("DE".into()),
            description: Some("Hauptadresse".into()),
            ..Default::default()
        }),
        ..Default::default()
    };

    let created = c.create_company(&post).await.unwrap();
    assert!(created.has_type("interessent"));
    let updated = c
        .update_company(created.id, |co| {
            co.extra.insert("homepage".into(), json!("https://neu.example"));
        })
        .await
        .unwrap();

    assert_eq!(updated.extra["homepage"], "https://neu.example");
    assert!(updated.has_type("Interessent"), "CompanyPut leaves the types alone");
    assert_eq!(updated.default_address.and_then(|a| a.street).as_deref(), Some("Mönckebergstraße"));
    assert_eq!(updated.name.as_deref(), Some("Neu & Co. KG"));
}

#[tokio::test]
async fn the_dollar_spelling_can_be_chosen_per_endpoint() {
    let sim = start_sim(SeedProfile::Demo).await;
    let mut cfg = config(&sim.base_url(), &sim.sync_token());
    cfg.spelling_overrides.insert("/v2/Projects/Tasks".into(), QuerySpelling::Dollar);
    let c = HellohqClient::new(cfg).unwrap();

    let appts = c
        .list_v2::<Task>("/v2/Projects/Tasks", &ListQuery::filter("isAppointment eq true").orderby("startOn"))
        .await
        .unwrap();

    assert!(!appts.items.is_empty());
    assert!(appts.items.iter().all(|t| t.is_appointment));
    assert!(appts.items.windows(2).all(|w| w[0].start_on <= w[1].start_on));
}

#[tokio::test]
async fn creating_a_contact_with_phones_and_address_creates_then_replaces() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let company = c.list_v2::<Value>("/v2/Companies", &ListQuery::default()).await.unwrap().items[0]["id"]
        .as_i64()
        .unwrap() as i32;
    let new = ContactPerson {
        company_id: Some(company),
        first_name: Some("Lena".into()),
        last_name: Some("Kraft".into()),
        salutation: Some("Frau".into()),
        salutation_form: Some(SalutationForm::Informal),
        phone_mobile: Some("+49 170 1112223".into()),
        default_address: Some(Address {
            street: Some("Hafenstraße".into()),
            zip_code: Some("20359".into()),
            city: Some("Hamburg".into()),
            country: Some("DE".into()),
            description: Some("Büro".into()),
            email: Some("lena.kraft@example.de".into()),
            ..Default::default()
        }),
        ..Default::default()
    };

    let created = c.create_contact_person(&new).await.unwrap();

    let stored = c.get_contact_person(created.id).await.unwrap();
    assert_eq!(stored.phone_mobile.as_deref(), Some("+49 170 1112223"));
    assert_eq!(stored.e_mail.as_deref(), Some("lena.kraft@example.de"));
    assert_eq!(stored.company_id, Some(company));
    let s = stats(&sim).await;
    assert_eq!(requests(&s, "POST /v2/ContactPersons"), 1);
    assert_eq!(requests(&s, "PUT /v2/ContactPersons/{id}"), 1);
}

#[tokio::test]
async fn an_appointment_is_created_and_deleted_through_the_task_routes() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let start = chrono::Utc::now() + chrono::Duration::days(3);
    let project = raw(&sim, "/v2/Projects?filter=name%20eq%20%27Interne%20Termine%27").await[0]["id"].as_i64().unwrap();
    let appt = Task {
        project_id: Some(project as i32),
        name: Some("Workshop".into()),
        is_appointment: true,
        kind: Some(TaskClassification::PublicAppointment),
        place: Some("Raum Elbe".into()),
        start_on: Some(start),
        end_on: Some(start + chrono::Duration::hours(1)),
        ical_uid: Some("040000008200E00074C5B7101A82E008".into()),
        resource_to_tasks: Some(vec![hqsync::connectors::hellohq::wire::TaskAssignment {
            user_id: Some(1),
            ..Default::default()
        }]),
        ..Default::default()
    };

    let created = c.create_task(&appt).await.unwrap();
    let read = c.get_task(created.id).await.unwrap();
    assert_eq!(read.ical_uid.as_deref(), Some("040000008200E00074C5B7101A82E008"));
    assert_eq!(read.resource_to_tasks.unwrap()[0].user_id, Some(1));
    assert_eq!(read.project_id, Some(project as i32));

    c.delete_task(created.id).await.unwrap();
    assert!(matches!(c.get_task(created.id).await.unwrap_err(), HqError::NotFound { .. }));
    // Only routes of the table (docs/hellohq-api.md) were used.
    let used = stats(&sim).await["requests"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    for r in &used {
        let (m, p) = r.split_once(' ').unwrap();
        assert!(
            hqsync::connectors::hellohq::routes::ROUTES.iter().any(|(rm, rp)| rm == &m
                && hqsync::connectors::hellohq::routes::normalize(rp)
                    == hqsync::connectors::hellohq::routes::normalize(p)),
            "{r}"
        );
    }
    assert!(used.iter().any(|r| r == "POST /v2/Projects/{id}/Tasks"), "{used:?}");
    assert!(used.iter().any(|r| r == "POST /v1/ProjectTasks({id})/Assignments"), "{used:?}");
    assert!(used.iter().any(|r| r == "DELETE /v1/ProjectTasks({id})"), "{used:?}");
}

#[tokio::test]
async fn the_private_address_round_trips_through_v1() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let id = contact_id(&c, "Lehmann").await;
    assert!(c.get_contact_person_v1(id).await.unwrap().private_address().is_none());

    let home = AddressV1 {
        street: Some("Eppendorfer Weg".into()),
        house_number: Some("5".into()),
        zip_code: Some("20259".into()),
        city: Some("Hamburg".into()),
        country: Some("DE".into()),
        ..Default::default()
    };
    let written = c.set_private_address(id, Some(home)).await.unwrap();
    let read = c.get_contact_person_v1(id).await.unwrap();

    for view in [&written, &read] {
        let p = view.private_address().expect("a private address now");
        assert_eq!(p.street.as_deref(), Some("Eppendorfer Weg"));
        assert_eq!(p.description.as_deref(), Some("Privat"));
    }
    let first_id = read.private_address().unwrap().id;

    // Moving house replaces the same entry rather than adding a second one.
    let moved = AddressV1 {
        street: Some("Isestraße".into()),
        city: Some("Hamburg".into()),
        zip_code: Some("20144".into()),
        country: Some("DE".into()),
        ..Default::default()
    };
    let read = c.set_private_address(id, Some(moved)).await.unwrap();
    assert_eq!(read.other_addresses().len(), 1);
    assert_eq!(read.private_address().unwrap().street.as_deref(), Some("Isestraße"));
    assert_eq!(read.private_address().unwrap().id, first_id);

    let cleared = c.set_private_address(id, None).await.unwrap();
    assert!(cleared.private_address().is_none());
}

#[tokio::test]
async fn writing_the_private_address_keeps_the_other_addresses() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let id = contact_id(&c, "Größe").await;
    let v2_before = raw(&sim, &format!("/v2/ContactPersons/{id}")).await;
    let mut extra = c.get_contact_person_v1(id).await.unwrap();
    // Give Jürgen a third address ("Lager") the way an admin would.
    let mut body = serde_json::to_value(&extra).unwrap();
    let mut list = serde_json::to_value(extra.other_addresses()).unwrap();
    list.as_array_mut().unwrap().push(json!({"Street": "Kanalstraße", "ZipCode": "22085", "City": "Hamburg",
        "Country": "DE", "Description": "Lager"}));
    body["Addresses"] = list;
    reqwest::Client::new()
        .put(format!("{}/v1/ContactPersons({id})", sim.base_url()))
        .bearer_auth(sim.sync_token())
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    extra = c.get_contact_person_v1(id).await.unwrap();
    assert_eq!(extra.other_addresses().len(), 2);

    let mut home = extra.private_address().cloned().unwrap();
    home.street = Some("Hofweg".into());
    let after = c.set_private_address(id, Some(home)).await.unwrap();

    assert_eq!(after.private_address().unwrap().street.as_deref(), Some("Hofweg"));
    let others: Vec<_> = after.other_addresses().into_iter().filter(|a| !a.is_private()).collect();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].description.as_deref(), Some("Lager"));
    let v2_after = raw(&sim, &format!("/v2/ContactPersons/{id}")).await;
    assert_eq!(v2_after["defaultAddress"], v2_before["defaultAddress"], "the business address is untouched");
}

// ---- polling -------------------------------------------------------------------------

#[tokio::test]
async fn polling_reports_a_change_between_two_polls_exactly_once() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let store = store().await;
    let poller = ChangePoller::new(&c);

    let first = poller.poll_updates(&store, &tenant(), HqEntity::ContactPerson).await.unwrap();
    assert_eq!(first.hints.len(), 6, "a first poll reports every contact");
    first.commit(&store).await.unwrap();
    let quiet = poller.poll_updates(&store, &tenant(), HqEntity::ContactPerson).await.unwrap();
    assert!(quiet.hints.is_empty(), "the overlap does not report seen versions again: {:?}", quiet.hints);
    quiet.commit(&store).await.unwrap();

    let id = contact_id(&c, "Neumann").await;
    let changed = c.update_contact_person(id, |p| p.note = Some("Rückruf".into())).await.unwrap();

    let batch = poller.poll_updates(&store, &tenant(), HqEntity::ContactPerson).await.unwrap();
    assert_eq!(batch.hints.len(), 1);
    let h = &batch.hints[0];
    assert_eq!(h.resource_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!((h.origin, h.entity, h.change), (Origin::Hellohq, Some(HqEntity::ContactPerson), Change::Updated));
    let version = hqsync::connectors::hellohq::wire::fmt_utc(changed.updated_on.unwrap());
    assert_eq!(h.hint_id, Hint::stable_id(&tenant(), "hellohq-poll", &format!("contactPerson/{id}/{version}")));
    assert_eq!(batch.watermark(), Some(version));
    batch.commit(&store).await.unwrap();

    let again = poller.poll_updates(&store, &tenant(), HqEntity::ContactPerson).await.unwrap();
    assert!(again.hints.is_empty());
}

#[tokio::test]
async fn polling_reads_past_the_first_page_by_stamp_not_by_skip() {
    let sim = start_sim(SeedProfile::Empty).await;
    let ids =
        control(&sim, reqwest::Method::POST, "/_sim/seed", Some(json!({"companies": [{"name": "Viele GmbH"}]}))).await;
    let company = ids["companies"][0].as_i64().unwrap();
    let contacts: Vec<Value> = (0..1500)
        .map(|i| {
            json!({"companyId": company, "lastName": format!("K{i}"), "salutation": "Frau",
                        "salutationForm": 2})
        })
        .collect();
    control(&sim, reqwest::Method::POST, "/_sim/seed", Some(json!({"contactPersons": contacts}))).await;
    let c = client(&sim);
    let store = store().await;

    let batch = ChangePoller::new(&c).poll_updates(&store, &tenant(), HqEntity::ContactPerson).await.unwrap();

    let mut ids: Vec<_> = batch.hints.iter().filter_map(|h| h.resource_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1500, "every contact once");
    assert_eq!(requests(&stats(&sim).await, "GET /v2/ContactPersons"), 2);
}

#[tokio::test]
async fn an_uncommitted_poll_is_repeated_with_the_same_hint_ids() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let store = store().await;
    let poller = ChangePoller::new(&c);
    poller.poll_updates(&store, &tenant(), HqEntity::Task).await.unwrap().commit(&store).await.unwrap();
    let id =
        c.list_v2::<Task>("/v2/Projects/Tasks", &ListQuery::filter("name eq 'Zahnarzt'")).await.unwrap().items[0].id;
    c.update_task(id, |t| t.place = Some("Praxis".into())).await.unwrap();

    // The scheduler "crashes" before enqueueing: nothing is committed.
    let lost = poller.poll_updates(&store, &tenant(), HqEntity::Task).await.unwrap();
    let retry = poller.poll_updates(&store, &tenant(), HqEntity::Task).await.unwrap();

    assert_eq!(lost.hints.len(), 1);
    assert_eq!(
        retry.hints.iter().map(|h| h.hint_id).collect::<Vec<_>>(),
        lost.hints.iter().map(|h| h.hint_id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_change_stamped_inside_the_overlap_window_is_not_lost() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let store = store().await;
    let id = contact_id(&c, "Lehmann").await;
    let late = c.update_contact_person(id, |p| p.note = Some("spät".into())).await.unwrap();
    // A previous poll already saw a row stamped 2 s later than this change
    // (this change's transaction committed late): the watermark is past it.
    let past = hqsync::connectors::hellohq::wire::fmt_utc(late.updated_on.unwrap() + chrono::Duration::seconds(2));
    let cursor = json!({"at": past, "seen": []}).to_string();
    let name = ChangePoller::cursor_name(HqEntity::ContactPerson);
    store.set_cursor(&tenant(), CURSOR_SCOPE, &name, &cursor).await.unwrap();

    let without_overlap = ChangePoller::new(&c)
        .with_overlap(Duration::ZERO)
        .poll_updates(&store, &tenant(), HqEntity::ContactPerson)
        .await
        .unwrap();
    assert!(without_overlap.hints.is_empty(), "without an overlap the change would be lost");
    let with_overlap = ChangePoller::new(&c)
        .with_overlap(Duration::from_secs(5))
        .poll_updates(&store, &tenant(), HqEntity::ContactPerson)
        .await
        .unwrap();

    let ids: Vec<_> = with_overlap.hints.iter().filter_map(|h| h.resource_id.clone()).collect();
    assert!(ids.contains(&id.to_string()), "the late change is reported: {ids:?}");
}

#[tokio::test]
async fn a_deletion_appears_through_the_deletions_log_once() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let store = store().await;
    let poller = ChangePoller::new(&c);
    let start = poller.poll_deletions(&store, &tenant()).await.unwrap();
    assert!(start.hints.is_empty());
    start.commit(&store).await.unwrap();

    let id = contact_id(&c, "Strauß").await;
    c.delete_contact_person(id).await.unwrap();

    let batch = poller.poll_deletions(&store, &tenant()).await.unwrap();
    assert_eq!(batch.hints.len(), 1);
    let h = &batch.hints[0];
    assert_eq!((h.entity, h.change), (Some(HqEntity::ContactPerson), Change::Deleted));
    assert_eq!(h.resource_id.as_deref(), Some(id.to_string().as_str()));
    batch.commit(&store).await.unwrap();
    assert!(poller.poll_deletions(&store, &tenant()).await.unwrap().hints.is_empty());
    // And the list poll no longer returns it (A3: a deleted row disappears).
    assert!(matches!(c.get_contact_person(id).await.unwrap_err(), HqError::NotFound { .. }));
}

#[tokio::test]
async fn leads_are_polled_through_v1() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let store = store().await;
    let batch = ChangePoller::new(&c).poll_updates(&store, &tenant(), HqEntity::Lead).await.unwrap();
    assert_eq!(batch.hints.len(), 1);
    let id: i32 = batch.hints[0].resource_id.as_deref().unwrap().parse().unwrap();
    assert_eq!(c.get_lead(id).await.unwrap().contact_persons.len(), 1);
    batch.commit(&store).await.unwrap();
    assert!(ChangePoller::new(&c).poll_updates(&store, &tenant(), HqEntity::Lead).await.unwrap().hints.is_empty());
}

// ---- webhook registration ---------------------------------------------------------

#[tokio::test]
async fn a_webhook_is_registered_only_where_configured() {
    let sim = start_sim(SeedProfile::Demo).await;
    let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
    assert_eq!(
        client(&sim).register_webhook("https://hqsync.example/v1/webhooks/hellohq/acme", &secret).await.unwrap(),
        None
    );

    let mut cfg = config(&sim.base_url(), &sim.sync_token());
    cfg.webhook_registration_url = Some(format!("{}/_sim/webhooks", sim.base_url()));
    let c = HellohqClient::new(cfg).unwrap();
    let id = c.register_webhook("https://hqsync.example/v1/webhooks/hellohq/acme", &secret).await.unwrap();

    assert!(id.is_some_and(|i| !i.is_empty()));
    let listed = control(&sim, reqwest::Method::GET, "/_sim/webhooks", None).await;
    assert_eq!(listed[0]["url"], "https://hqsync.example/v1/webhooks/hellohq/acme");
}

/// B13: helloHQ has no ETags, so a write that was merged against an older
/// read (`updatedOn`) is refused as stale and writes nothing; with the
/// current stamp it goes through.
#[tokio::test]
async fn a_write_merged_against_a_stale_read_is_refused_and_changes_nothing() {
    let sim = start_sim(SeedProfile::Demo).await;
    let c = client(&sim);
    let id = contact_id(&c, "Strauß").await;
    let read = c.get_contact_person(id).await.unwrap();
    // Someone else edits after our read (a moment later, so the stamp moves).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.update_contact_person(id, |p| p.position = Some("Einkauf".into())).await.unwrap();
    let before = stats(&sim).await["writes"].clone();
    let err = c.update_contact_person_if(id, read.updated_on, |p| p.position = Some("Mine".into())).await.unwrap_err();
    assert!(matches!(err, hqsync::connectors::hellohq::client::HqError::Stale { .. }), "{err}");
    assert!(err.is_transient(), "a stale merge is retried (and merged again)");
    assert_eq!(stats(&sim).await["writes"], before, "a stale write reached helloHQ");
    assert_eq!(c.get_contact_person(id).await.unwrap().position.as_deref(), Some("Einkauf"));
    let fresh = c.get_contact_person(id).await.unwrap();
    c.update_contact_person_if(id, fresh.updated_on, |p| p.position = Some("Mine".into())).await.unwrap();
    let task = c
        .list_v2::<hqsync::connectors::hellohq::wire::Task>("/v2/Projects/Tasks", &ListQuery::default())
        .await
        .unwrap()
        .items[0]
        .clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.update_task(task.id, |t| t.place = Some("Raum Alster (neu)".into())).await.unwrap();
    let err = c.update_task_if(task.id, task.updated_on, |t| t.place = Some("x".into())).await.unwrap_err();
    assert!(matches!(err, hqsync::connectors::hellohq::client::HqError::Stale { .. }), "{err}");
    sim.shutdown().await;
}
