//! The scheduler against the Graph simulator over real HTTP, with the real
//! ingress serving the notification URLs (so the validation handshake and
//! lifecycle notifications go through it), a SQLite store in a temp dir and
//! the local queue: subscriptions created, kept alive through a simulated
//! week, recreated after `subscriptionRemoved`, deleted for a disabled
//! mailbox; catch-up passes enqueued once per slot; one active scheduler;
//! a tenant with broken credentials does not stop another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hqsync::config::Config;
use hqsync::connectors::graph::{GraphClient, GraphClientConfig};
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, Origin, Queue};
use hqsync::scheduler::{Clock, LifecycleOutcome, Scheduler, SchedulerHealth, SchedulerSettings};
use hqsync::sim::graph::{GraphSim, GraphSimConfig, SeedProfile};
use hqsync::store::{
    Cipher, GraphCredentials, HellohqCredentials, JournalFilter, Mailbox, MailboxState, Store, Tenant,
};
use secrecy::SecretString;
use serde_json::{json, Value};

const ANNA: &str = "anna@agentur.example";
const BEN: &str = "ben@agentur.example";
const CARL: &str = "carl@agentur.example";

struct Harness {
    sim: GraphSim,
    seed: Value,
    http: reqwest::Client,
    store: Store,
    queue: Queue,
    ingress_base: String,
    shutdown: tokio_util::sync::CancellationToken,
    /// How far the simulator's clock (and so the scheduler's) is ahead of the wall clock.
    offset: Arc<Mutex<chrono::Duration>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(mailboxes: &[&str]) -> Harness {
        let cfg = GraphSimConfig { seed: SeedProfile::Empty, ..Default::default() };
        let sim = GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), cfg).await.unwrap();
        let http = reqwest::Client::new();
        let spec: Vec<Value> = mailboxes.iter().map(|m| json!({"userPrincipalName": m})).collect();
        let seed: Value = http
            .post(format!("{}/_sim/seed", sim.base_url()))
            .json(&json!({"mailboxes": spec}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
        let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
        let mut qcfg = Config::default().queue;
        qcfg.visibility_timeout_secs = 30;
        let queue = Queue::open(&qcfg, &store).await.unwrap();
        let state = hqsync::http::AppState::new(store.clone(), queue.clone(), Duration::from_secs(2), 1024 * 1024);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingress_base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), shutdown.clone()));
        Harness {
            sim,
            seed,
            http,
            store,
            queue,
            ingress_base,
            shutdown,
            offset: Arc::new(Mutex::new(chrono::Duration::zero())),
            _dir: dir,
        }
    }

    fn credentials(&self, secret: Option<&str>) -> GraphCredentials {
        GraphCredentials {
            entra_tenant_id: self.seed["tenantId"].as_str().unwrap().to_string(),
            client_id: self.seed["clientId"].as_str().unwrap().to_string(),
            client_secret: SecretString::from(
                secret.unwrap_or(self.seed["clientSecret"].as_str().unwrap()).to_string(),
            ),
            graph_base: format!("{}/v1.0", self.sim.base_url()),
            login_base: self.sim.base_url(),
        }
    }

    async fn add_tenant(&self, id: &str, secret: Option<&str>, mailboxes: &[&str]) -> TenantId {
        self.add_tenant_with(id, self.credentials(secret), mailboxes).await
    }

    async fn add_tenant_with(&self, id: &str, graph: GraphCredentials, mailboxes: &[&str]) -> TenantId {
        let tenant = TenantId::parse(id).unwrap();
        let now = Utc::now();
        self.store
            .upsert_tenant(&Tenant {
                id: tenant.clone(),
                name: id.into(),
                enabled: true,
                graph,
                hellohq: HellohqCredentials {
                    base_url: "http://127.0.0.1:9".into(),
                    token: SecretString::from("unused"),
                    webhook_secrets: vec![],
                },
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
        for m in mailboxes {
            self.set_mailbox(&tenant, m, MailboxState::Active).await;
        }
        tenant
    }

    async fn set_mailbox(&self, tenant: &TenantId, mailbox: &str, state: MailboxState) {
        self.store
            .upsert_mailbox(&Mailbox {
                tenant: tenant.clone(),
                id: MailboxId::parse(mailbox).unwrap(),
                hq_user_id: None,
                state,
                settings: json!({}),
                last_error: None,
                updated_at: Utc::now(),
            })
            .await
            .unwrap();
    }

    /// The scheduler's clock: the wall clock plus the simulator's offset.
    fn clock(&self) -> Clock {
        let offset = self.offset.clone();
        Arc::new(move || Utc::now() + *offset.lock().unwrap())
    }

    fn scheduler(&self) -> Scheduler {
        self.scheduler_with(self.clock())
    }

    fn scheduler_with(&self, clock: Clock) -> Scheduler {
        Scheduler::new(self.store.clone(), self.queue.clone(), &self.ingress_base, private_ok_settings(), clock)
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self.http.post(format!("{}/_sim/{path}", self.sim.base_url())).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "/_sim/{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn stats(&self) -> Value {
        self.http.get(format!("{}/_sim/stats", self.sim.base_url())).send().await.unwrap().json().await.unwrap()
    }

    /// Moves the simulator's clock and the scheduler's together.
    async fn advance(&self, minutes: i64) {
        self.control("clock", json!({"advanceMinutes": minutes})).await;
        *self.offset.lock().unwrap() += chrono::Duration::minutes(minutes);
    }

    /// The subscriptions the simulator holds, as Graph lists them.
    async fn graph_subscriptions(&self) -> Vec<Value> {
        let client =
            GraphClient::new(&self.credentials(None), GraphClientConfig::default().allowing_private_addresses())
                .unwrap();
        client.list_subscriptions().await.unwrap()
    }

    /// Every hint queued so far, acked. Stops at the first wait that brings nothing.
    async fn drain(&self) -> Vec<Hint> {
        let mut consumer = self.queue.consumer().await.unwrap();
        let mut out = Vec::new();
        while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await {
            out.push(d.hint.clone().unwrap());
            d.ack().await.unwrap();
        }
        consumer.close().await;
        out
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.sim.shutdown().await;
    }
}

fn expiry(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v["expirationDateTime"].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

fn mailbox_of(v: &Value) -> String {
    v["resource"].as_str().unwrap().split('/').nth(1).unwrap().to_lowercase()
}

#[tokio::test]
async fn first_tick_creates_four_validated_subscriptions_per_active_mailbox_and_stores_only_a_digest() {
    let h = Harness::start(&[ANNA, BEN]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA, BEN]).await;
    let report = h.scheduler().tick().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.created, 8);

    let at_graph = h.graph_subscriptions().await;
    assert_eq!(at_graph.len(), 8, "{at_graph:#?}");
    for mb in [ANNA, BEN] {
        let resources: Vec<&str> =
            at_graph.iter().filter(|s| mailbox_of(s) == mb).map(|s| s["resource"].as_str().unwrap()).collect();
        assert_eq!(resources.iter().filter(|r| r.ends_with("/events")).count(), 1, "{resources:?}");
        assert_eq!(resources.iter().filter(|r| r.contains("/contactFolders/")).count(), 2, "{resources:?}");
        // The "helloHQ" To Do list's tasks: app-only todoTask subscriptions exist (Tasks.ReadWrite.All).
        assert_eq!(resources.iter().filter(|r| r.contains("/todo/lists/") && r.ends_with("/tasks")).count(), 1);
    }
    for s in &at_graph {
        assert_eq!(s["notificationUrl"], json!(format!("{}/v1/notifications/graph", h.ingress_base)));
        assert_eq!(
            s["lifecycleNotificationUrl"],
            json!(format!("{}/v1/notifications/graph/lifecycle", h.ingress_base))
        );
    }

    let stored = h.store.list_subscriptions(&tenant).await.unwrap();
    assert_eq!(stored.len(), 8);
    for s in &stored {
        let graph = at_graph.iter().find(|g| g["id"] == json!(s.id)).expect("stored subscription exists at Graph");
        assert_eq!(graph["resource"].as_str().unwrap().to_lowercase(), s.resource.to_lowercase());
        assert_eq!(s.expires_at.timestamp(), expiry(graph).timestamp());
        let kind = if s.resource.ends_with("/events") {
            Kind::Appointment
        } else if s.resource.contains("/todo/") {
            Kind::Task
        } else {
            Kind::Contact
        };
        assert_eq!(s.kind, kind);
    }
    // Each subscription has its own clientState (only digests are stored).
    let mut digests: Vec<[u8; 32]> = stored.iter().map(|s| s.client_state_sha256).collect();
    digests.sort();
    digests.dedup();
    assert_eq!(digests.len(), 8);

    // A second tick right away changes nothing at Graph.
    let again = h.scheduler().tick().await;
    assert_eq!((again.created, again.renewed, again.recreated, again.deleted), (0, 0, 0, 0));
    assert_eq!(h.graph_subscriptions().await.len(), 8);
    h.stop().await;
}

#[tokio::test]
async fn a_simulated_week_never_lets_a_subscription_expire() {
    let h = Harness::start(&[ANNA, BEN]).await;
    h.add_tenant("acme", None, &[ANNA, BEN]).await;
    let scheduler = h.scheduler();
    let first = scheduler.tick().await;
    assert_eq!(first.created, 8, "{:?}", first.errors);
    let ids: Vec<Value> = {
        let mut v: Vec<Value> = h.graph_subscriptions().await.iter().map(|s| s["id"].clone()).collect();
        v.sort_by_key(|x| x.to_string());
        v
    };
    let mut renewed = 0;
    for _step in 0..28 {
        h.advance(6 * 60).await;
        let r = scheduler.tick().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!((r.created, r.recreated), (0, 0), "nothing should have been lost");
        renewed += r.renewed;
        let sim_now = (h.clock())();
        let subs = h.graph_subscriptions().await;
        assert_eq!(subs.len(), 8);
        for s in &subs {
            assert!(expiry(s) > sim_now + chrono::Duration::hours(6), "would expire before the next tick: {s}");
        }
    }
    let mut after: Vec<Value> = h.graph_subscriptions().await.iter().map(|s| s["id"].clone()).collect();
    after.sort_by_key(|x| x.to_string());
    assert_eq!(after, ids, "the same subscriptions all week");
    // 168 h with a 70.5 h lifetime renewed at 47 h: at least three renewals each.
    assert!(renewed >= 18, "renewed {renewed}");
    let stats = h.stats().await;
    assert_eq!(stats["lifecycle"]["sent"], json!(0), "no subscriptionRemoved nor reauthorization needed: {stats}");
    h.stop().await;
}

#[tokio::test]
async fn subscription_removed_is_recreated_and_its_mailbox_resynced() {
    let h = Harness::start(&[ANNA]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA]).await;
    let scheduler = h.scheduler();
    scheduler.tick().await;
    h.drain().await;
    let stored = h.store.list_subscriptions(&tenant).await.unwrap();
    let victim = stored.iter().find(|s| s.kind == Kind::Appointment).unwrap().clone();

    h.control("lifecycle", json!({"subscriptionId": victim.id, "event": "subscriptionRemoved"})).await;
    // The ingress turns the lifecycle notification into a hint.
    let mut lifecycle = None;
    for _ in 0..10 {
        let hints = h.drain().await;
        if let Some(x) = hints.into_iter().find(|x| x.change == Change::SubscriptionRemoved) {
            lifecycle = Some(x);
            break;
        }
    }
    let lifecycle = lifecycle.expect("the ingress queued a subscription_removed hint");
    assert_eq!(lifecycle.subscription_id.as_deref(), Some(victim.id.as_str()));

    let outcome = scheduler.handle_lifecycle(&lifecycle).await.unwrap();
    let LifecycleOutcome::Recreated { new_id } = outcome else { panic!("not recreated: {outcome:?}") };
    assert_ne!(new_id, victim.id);
    let at_graph = h.graph_subscriptions().await;
    assert_eq!(at_graph.len(), 4);
    let new = at_graph.iter().find(|s| s["id"] == json!(new_id)).expect("new subscription at Graph");
    assert!(new["resource"].as_str().unwrap().ends_with("/events"));
    assert!(h.store.get_subscription(&victim.id).await.unwrap().is_none());
    let stored_new = h.store.get_subscription(&new_id).await.unwrap().expect("new one stored");
    assert_eq!(stored_new.resource, victim.resource);

    let hints = h.drain().await;
    let resync: Vec<&Hint> = hints.iter().filter(|x| x.change == Change::Resync).collect();
    assert_eq!(resync.len(), 1, "{hints:?}");
    assert_eq!(resync[0].origin, Origin::Schedule);
    assert_eq!(resync[0].mailbox.as_ref().map(|m| m.as_str()), Some(ANNA));
    assert_eq!(resync[0].kind, Some(Kind::Appointment));

    // Handling the same hint again (a redelivery) does nothing more.
    assert_eq!(scheduler.handle_lifecycle(&lifecycle).await.unwrap(), LifecycleOutcome::Unknown);
    assert_eq!(h.graph_subscriptions().await.len(), 4);
    h.stop().await;
}

#[tokio::test]
async fn reauthorization_required_renews_the_subscription_in_place() {
    let h = Harness::start(&[ANNA]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA]).await;
    let scheduler = h.scheduler();
    scheduler.tick().await;
    let before = h.store.list_subscriptions(&tenant).await.unwrap();
    let sub = before.iter().find(|s| s.kind == Kind::Contact).unwrap().clone();
    h.advance(24 * 60).await;
    let hint = Hint {
        v: hqsync::queue::HINT_VERSION,
        hint_id: uuid::Uuid::new_v4(),
        tenant: tenant.clone(),
        mailbox: Some(sub.mailbox.clone()),
        kind: Some(sub.kind),
        entity: None,
        origin: Origin::Exchange,
        resource_id: None,
        version: None,
        subscription_id: Some(sub.id.clone()),
        change: Change::ReauthorizationRequired,
        received_at: Utc::now(),
    };
    assert_eq!(scheduler.handle_lifecycle(&hint).await.unwrap(), LifecycleOutcome::Renewed);
    let after = h.store.get_subscription(&sub.id).await.unwrap().unwrap();
    assert!(
        after.expires_at > sub.expires_at + chrono::Duration::hours(23),
        "{} vs {}",
        after.expires_at,
        sub.expires_at
    );
    let at_graph = h.graph_subscriptions().await;
    let g = at_graph.iter().find(|s| s["id"] == json!(sub.id)).unwrap();
    assert_eq!(expiry(g).timestamp(), after.expires_at.timestamp());
    h.stop().await;
}

#[tokio::test]
async fn a_subscription_graph_lost_is_recreated_on_renewal_with_a_resync() {
    let h = Harness::start(&[ANNA]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA]).await;
    let scheduler = h.scheduler();
    scheduler.tick().await;
    h.drain().await;
    // Graph forgets one subscription without telling anyone.
    let victim =
        h.store.list_subscriptions(&tenant).await.unwrap().into_iter().find(|s| s.kind == Kind::Contact).unwrap();
    let client =
        GraphClient::new(&h.credentials(None), GraphClientConfig::default().allowing_private_addresses()).unwrap();
    client.delete_subscription(&victim.id).await.unwrap();
    h.advance(50 * 60).await; // past the renewal point
    let r = scheduler.tick().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.renewed, r.recreated), (3, 1));
    let at_graph = h.graph_subscriptions().await;
    assert_eq!(at_graph.len(), 4);
    assert!(at_graph.iter().any(|s| s["resource"].as_str().unwrap().eq_ignore_ascii_case(&victim.resource)));
    let hints = h.drain().await;
    assert!(
        hints.iter().any(|x| x.change == Change::Resync
            && x.kind == Some(Kind::Contact)
            && x.hint_id == Hint::stable_id(&tenant, "schedule", &format!("recreated/{}", victim.id))),
        "{hints:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_disabled_mailbox_loses_its_subscriptions_at_graph_and_in_the_store() {
    let h = Harness::start(&[ANNA, BEN]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA, BEN]).await;
    let scheduler = h.scheduler();
    scheduler.tick().await;
    assert_eq!(h.graph_subscriptions().await.len(), 8);
    h.set_mailbox(&tenant, BEN, MailboxState::Disabled).await;
    let r = scheduler.tick().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.deleted, 4);
    let at_graph = h.graph_subscriptions().await;
    assert_eq!(at_graph.len(), 4);
    assert!(at_graph.iter().all(|s| mailbox_of(s) == ANNA));
    let stored = h.store.list_subscriptions(&tenant).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().all(|s| s.mailbox.as_str() == ANNA));
    h.stop().await;
}

#[tokio::test]
async fn catch_up_passes_are_queued_once_per_slot_with_stable_ids() {
    let h = Harness::start(&[ANNA]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA]).await;
    // A frozen clock at the start of the current 15-minute slot (plus a
    // second), so every slot boundary in this test is where we put it.
    let now = Utc::now().timestamp();
    let start = DateTime::from_timestamp(now - now.rem_euclid(900) + 1, 0).unwrap();
    let at = Arc::new(Mutex::new(start));
    let at2 = at.clone();
    let clock: Clock = Arc::new(move || *at2.lock().unwrap());

    let first = h.scheduler_with(clock.clone()).tick().await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let hints = h.drain().await;
    let mut kinds: Vec<(Option<Kind>, Option<String>)> =
        hints.iter().map(|x| (x.kind, x.mailbox.as_ref().map(|m| m.to_string()))).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            (None, None),
            (Some(Kind::Appointment), Some(ANNA.into())),
            (Some(Kind::Task), Some(ANNA.into())),
            (Some(Kind::Contact), Some(ANNA.into())),
        ]
    );
    assert!(hints.iter().all(|x| x.change == Change::Resync && x.origin == Origin::Schedule));

    // Another scheduler (a restart) in the same slot queues nothing new.
    let again = h.scheduler_with(clock.clone()).tick().await;
    assert_eq!(again.hints_published, 0);
    assert!(h.drain().await.is_empty());

    // 61 s later: the helloHQ poll is due; the 15-minute passes (the To Do
    // poll is one now: its subscription carries the changes) are not.
    *at.lock().unwrap() = start + chrono::Duration::seconds(61);
    h.scheduler_with(clock.clone()).tick().await;
    let hints = h.drain().await;
    let kinds: Vec<Option<Kind>> = hints.iter().map(|x| x.kind).collect();
    assert_eq!(kinds, vec![None]);
    // 15 minutes on: the To Do poll is due again; a slot's hint id is the same whoever computes it.
    *at.lock().unwrap() = start + chrono::Duration::seconds(901);
    h.scheduler_with(clock.clone()).tick().await;
    let hints = h.drain().await;
    let task = hints.iter().find(|x| x.kind == Some(Kind::Task)).expect("the To Do poll");
    let slot = (start + chrono::Duration::seconds(901)).timestamp() / 900;
    assert_eq!(task.hint_id, Hint::stable_id(&tenant, "schedule", &format!("pass/{ANNA}/task/900/{slot}")));
    h.stop().await;
}

#[tokio::test]
async fn only_one_scheduler_holds_the_lease() {
    let h = Harness::start(&[]).await;
    let a = h.scheduler();
    let b = h.scheduler();
    assert!(a.try_lead().await.unwrap());
    assert!(!b.try_lead().await.unwrap(), "a second scheduler must wait");
    assert!(a.try_lead().await.unwrap(), "the holder renews");
    a.resign().await.unwrap();
    assert!(b.try_lead().await.unwrap(), "a successor takes over once the holder resigned");
    assert!(!a.try_lead().await.unwrap());
    h.stop().await;
}

#[tokio::test]
async fn a_tenant_with_a_wrong_secret_does_not_stop_another_tenant() {
    let h = Harness::start(&[ANNA, CARL]).await;
    // "broken" sorts before "good", so it is handled first.
    let broken = h.add_tenant("broken", Some("not-the-secret"), &[CARL]).await;
    let good = h.add_tenant("good", None, &[ANNA]).await;
    let scheduler = h.scheduler();
    let r = scheduler.tick().await;
    assert_eq!(r.created, 4);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].starts_with("broken:"), "{:?}", r.errors);
    assert_eq!(h.store.list_subscriptions(&good).await.unwrap().len(), 4);
    assert!(h.store.list_subscriptions(&broken).await.unwrap().is_empty());
    let at_graph = h.graph_subscriptions().await;
    assert!(at_graph.iter().all(|s| mailbox_of(s) == ANNA), "{at_graph:#?}");

    // Journaled once, not once per tick.
    scheduler.tick().await;
    let journal = h
        .store
        .list_journal(&JournalFilter {
            tenant: Some(broken.clone()),
            action: Some("scheduler_error".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_mailbox_outside_the_access_policy_gets_a_last_error_and_the_others_carry_on() {
    let h = Harness::start(&[ANNA, BEN]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA, BEN]).await;
    h.control("policy", json!({"mailbox": BEN, "inScope": false})).await;
    let scheduler = h.scheduler();
    let r = scheduler.tick().await;
    assert_eq!(r.created, 4);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    let ben = h.store.get_mailbox(&tenant, &MailboxId::parse(BEN).unwrap()).await.unwrap().unwrap();
    assert!(ben.last_error.as_deref().is_some_and(|e| e.starts_with("subscriptions: ")), "{:?}", ben.last_error);
    let anna = h.store.get_mailbox(&tenant, &MailboxId::parse(ANNA).unwrap()).await.unwrap().unwrap();
    assert_eq!(anna.last_error, None);

    // Once the admin fixes the policy, the next tick subscribes and clears the error.
    h.control("policy", json!({"mailbox": BEN, "inScope": true})).await;
    let r = scheduler.tick().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.created, 4);
    let ben = h.store.get_mailbox(&tenant, &MailboxId::parse(BEN).unwrap()).await.unwrap().unwrap();
    assert_eq!(ben.last_error, None);
    h.stop().await;
}

#[tokio::test]
async fn a_worker_hands_a_subscription_removed_hint_to_the_scheduler() {
    let h = Harness::start(&[ANNA]).await;
    let tenant = h.add_tenant("acme", None, &[ANNA]).await;
    h.scheduler().tick().await;
    h.drain().await;
    let victim =
        h.store.list_subscriptions(&tenant).await.unwrap().into_iter().find(|s| s.kind == Kind::Contact).unwrap();
    // Graph removes it; the ingress queues the lifecycle hint; a worker picks it up.
    h.control("lifecycle", json!({"subscriptionId": victim.id, "event": "subscriptionRemoved"})).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = hqsync::worker::Worker {
        queue: h.queue.clone(),
        lifecycle: Some(Arc::new(h.scheduler())),
        engine: hqsync::engine::Engine::new(h.store.clone()).allowing_private_addresses(),
        concurrency: 2,
        drain_timeout: std::time::Duration::from_secs(5),
        retry_delays: vec![std::time::Duration::from_secs(1)],
    };
    let w = tokio::spawn(worker.run(stop.clone()));
    let mut replaced = false;
    for _ in 0..100 {
        let now = h.store.list_subscriptions(&tenant).await.unwrap();
        if now.len() == 4 && now.iter().all(|s| s.id != victim.id) {
            replaced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.cancel();
    w.await.unwrap();
    assert!(replaced, "the worker did not get the removed subscription recreated");
    let at_graph = h.graph_subscriptions().await;
    assert_eq!(at_graph.len(), 4, "{at_graph:?}");
    assert!(at_graph.iter().all(|s| s["id"] != json!(victim.id)));
    h.stop().await;
}

/// A Graph that hands out tokens and answers every GET with an empty page
/// whose `@odata.nextLink` holds a multi-byte character exactly where the
/// configured base (`{base}/v1.0`) ends.
async fn graph_with_a_multi_byte_next_link() -> String {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // `{base}/v1.0` is one byte longer than `{base}/v1.`: '€' starts inside it.
    let link = format!("{base}/v1.\u{20ac}/users?$skiptoken=1");
    let app = axum::Router::new()
        .route(
            "/{tenant}/oauth2/v2.0/token",
            post(|| async { axum::Json(json!({"access_token": "t", "expires_in": 3600, "token_type": "Bearer"})) }),
        )
        .fallback(get(move || {
            let link = link.clone();
            async move { axum::Json(json!({"value": [], "@odata.nextLink": link})) }
        }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Issue #20, finding 2: one tenant's Graph answering with such a nextLink
/// panicked inside the tick; the scheduler task died and no tenant was
/// served again. Now the link is refused, the tenant's error recorded, the
/// other tenant served, and the scheduler keeps coming round.
#[tokio::test]
async fn a_multi_byte_next_link_from_one_tenants_graph_does_not_stop_the_scheduler() {
    let h = Harness::start(&[ANNA]).await;
    let evil = graph_with_a_multi_byte_next_link().await;
    let creds = GraphCredentials { graph_base: format!("{evil}/v1.0"), login_base: evil, ..h.credentials(None) };
    // "aaa" sorts first, so it is ticked before the good tenant.
    h.add_tenant_with("aaa-evil", creds, &[CARL]).await;
    let good = h.add_tenant("good", None, &[ANNA]).await;

    let health = SchedulerHealth::default();
    let settings = SchedulerSettings { tick: Duration::from_millis(100), ..private_ok_settings() };
    let scheduler = Scheduler::new(h.store.clone(), h.queue.clone(), &h.ingress_base, settings, h.clock())
        .with_health(health.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    for _ in 0..200 {
        if h.store.list_subscriptions(&good).await.unwrap().len() == 4 || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!task.is_finished(), "the scheduler task ended: {:?}", task.await);
    assert_eq!(h.store.list_subscriptions(&good).await.unwrap().len(), 4);
    let evil = TenantId::parse("aaa-evil").unwrap();
    let carl = h.store.get_mailbox(&evil, &MailboxId::parse(CARL).unwrap()).await.unwrap().unwrap();
    let error = carl.last_error.unwrap_or_default();
    assert!(error.contains("refusing to follow a link outside the Graph base"), "{error}");
    assert_eq!(health.check(Utc::now()), Some(Ok(())));
    stop.cancel();
    task.await.unwrap();
    h.stop().await;
}

/// `/readyz` says 503 when the scheduler of the process has not completed a
/// pass for three tick intervals (a stuck tick or a dead task), 200 before.
#[tokio::test]
async fn readyz_reports_a_scheduler_that_has_not_ticked_for_three_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
    let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
    let queue = Queue::open(&Config::default().queue, &store).await.unwrap();
    let health = SchedulerHealth::default();
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock_now = now.clone();
    let state = hqsync::http::AppState::new(store, queue, Duration::from_secs(2), 1024)
        .with_scheduler_health(health.clone())
        .with_clock(Arc::new(move || *clock_now.lock().unwrap()));
    let app = hqsync::http::router(state);
    let ready = |app: axum::Router| async move {
        use tower::ServiceExt;
        let r =
            app.oneshot(axum::http::Request::get("/readyz").body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = r.status().as_u16();
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap()).unwrap();
        (status, body)
    };
    // No scheduler in this process: not reported.
    let (status, body) = ready(app.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("scheduler").is_none(), "{body}");

    let start = *now.lock().unwrap();
    health.start(Duration::from_secs(30), start);
    *now.lock().unwrap() = start + chrono::Duration::seconds(89);
    let (status, body) = ready(app.clone()).await;
    assert_eq!((status, body["scheduler"].as_str()), (200, Some("ok")), "{body}");

    *now.lock().unwrap() = start + chrono::Duration::seconds(91);
    let (status, body) = ready(app.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["scheduler"].as_str().unwrap().contains("no scheduler pass for 91 s"), "{body}");

    health.passed(start + chrono::Duration::seconds(91));
    assert_eq!(ready(app).await.0, 200);
}

/// The default settings with the outbound address guard off: the simulator
/// and the fake Graph listen on 127.0.0.1.
fn private_ok_settings() -> SchedulerSettings {
    SchedulerSettings {
        graph: GraphClientConfig::default().allowing_private_addresses(),
        ..SchedulerSettings::default()
    }
}
