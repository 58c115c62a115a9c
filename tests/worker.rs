//! The worker role: exactly once in effect, redelivery after a crash,
//! graceful drain — in-process and as real `hqsync worker` processes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use hqsync::config::{Config, QueueBackend};
use hqsync::engine::Engine;
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::{Change, Hint, Origin, Queue, HINT_VERSION};
use hqsync::store::{JournalFilter, Store};
use hqsync::worker::Worker;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

fn hint(i: u32) -> Hint {
    Hint {
        v: HINT_VERSION,
        hint_id: uuid::Uuid::new_v4(),
        tenant: TenantId::parse(TENANT).unwrap(),
        mailbox: Some(MailboxId::parse(MAILBOX).unwrap()),
        kind: Some(Kind::Contact),
        entity: None,
        origin: Origin::Exchange,
        resource_id: Some(format!("contact-{i}")),
        version: None,
        subscription_id: Some(SUBSCRIPTION.into()),
        change: Change::Updated,
        received_at: chrono::Utc::now(),
    }
}

fn worker(queue: &Queue, store: &Store, cfg: &Config) -> Worker {
    Worker {
        queue: queue.clone(),
        lifecycle: None,
        engine: Engine::new(store.clone()).allowing_private_addresses(),
        concurrency: 8,
        drain_timeout: Duration::from_secs(10),
        retry_delays: cfg.queue.retry_delays_secs.iter().map(|s| Duration::from_secs(*s)).collect(),
    }
}

/// hint id → times journalled as received.
async fn received(store: &Store) -> HashMap<uuid::Uuid, usize> {
    let entries = store
        .list_journal(&JournalFilter { action: Some("received".into()), limit: 100_000, ..Default::default() })
        .await
        .unwrap();
    let mut m = HashMap::new();
    for e in entries {
        *m.entry(e.hint_id.expect("received entries carry the hint id")).or_insert(0) += 1;
    }
    m
}

async fn wait_for_received(store: &Store, n: usize, within: Duration) -> HashMap<uuid::Uuid, usize> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = received(store).await;
        if r.len() >= n || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup(backend: QueueBackend, test: &str) -> Option<(Config, Store, Queue, tempfile::TempDir)> {
    let amqp = match backend {
        QueueBackend::Amqp => Some(rabbitmq_url()?),
        QueueBackend::Local => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), backend, amqp.as_deref(), test);
    let store = seeded_store(&cfg).await;
    let queue = Queue::open(&cfg.queue, &store).await.unwrap();
    queue.wait_ready(Duration::from_secs(5)).await.expect("queue ready");
    Some((cfg, store, queue, dir))
}

#[tokio::test]
async fn each_hint_is_applied_exactly_once_with_two_workers_and_duplicates() {
    for backend in [QueueBackend::Local, QueueBackend::Amqp] {
        let Some((cfg, store, queue, _dir)) = setup(backend, "twoworkers").await else { continue };
        let hints: Vec<Hint> = (0..100).map(hint).collect();
        queue.publish(&hints).await.unwrap();
        // Every fifth hint arrives a second time (a Graph retry, a webhook redelivery).
        let dups: Vec<Hint> = hints.iter().step_by(5).cloned().collect();
        queue.publish(&dups).await.unwrap();
        let stop = CancellationToken::new();
        let a = tokio::spawn(worker(&queue, &store, &cfg).run(stop.clone()));
        let b = tokio::spawn(worker(&queue, &store, &cfg).run(stop.clone()));
        let seen = wait_for_received(&store, hints.len(), Duration::from_secs(30)).await;
        // Give the duplicates time to be consumed too before stopping.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
        a.await.unwrap();
        b.await.unwrap();
        assert_eq!(seen.len(), hints.len(), "{backend:?}: every hint applied");
        assert!(seen.values().all(|n| *n == 1), "{backend:?}: no hint applied twice");
        for h in &hints {
            assert!(seen.contains_key(&h.hint_id));
        }
        let depth = queue.depth().await.unwrap();
        assert_eq!(depth.ready, 0, "{backend:?}: duplicates consumed and acked too");
        cleanup_queue(&queue).await;
    }
}

#[tokio::test]
async fn a_delivery_dropped_before_ack_comes_back_and_is_applied_once() {
    for backend in [QueueBackend::Local, QueueBackend::Amqp] {
        let Some((cfg, store, queue, _dir)) = setup(backend, "crashbeforeack").await else { continue };
        let h = hint(1);
        queue.publish(std::slice::from_ref(&h)).await.unwrap();
        {
            // A worker receives it and dies before acking: its consumer goes away.
            let mut c = queue.consumer().await.unwrap();
            let d = tokio::time::timeout(Duration::from_secs(5), c.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(d.hint.as_ref().unwrap().hint_id, h.hint_id);
            assert_eq!(d.attempt, 1);
            drop(d);
            c.close().await;
        }
        let stop = CancellationToken::new();
        let w = tokio::spawn(worker(&queue, &store, &cfg).run(stop.clone()));
        let seen = wait_for_received(&store, 1, Duration::from_secs(30)).await;
        stop.cancel();
        w.await.unwrap();
        assert_eq!(seen.get(&h.hint_id), Some(&1), "{backend:?}: redelivered and applied once");
        cleanup_queue(&queue).await;
    }
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_not_retried_forever() {
    let Some((cfg, store, queue, _dir)) = setup(QueueBackend::Local, "undecodable").await else { return };
    store.local_queue_push(&[b"{\"v\":99}".to_vec()]).await.unwrap();
    let stop = CancellationToken::new();
    let w = tokio::spawn(worker(&queue, &store, &cfg).run(stop.clone()));
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = queue.dead_letters(10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    w.await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("undecodable"), "{}", dead[0].reason);
}

// ------------------------------------------------ real `hqsync worker` processes

fn worker_process(cfg: &Config, master_key: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_hqsync"))
        .arg("worker")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HQSYNC_DATA_DIR", &cfg.data_dir)
        .env("HQSYNC_STORE__URL", &cfg.store.url)
        .env(
            "HQSYNC_QUEUE__BACKEND",
            match cfg.queue.backend {
                QueueBackend::Local => "local",
                QueueBackend::Amqp => "amqp",
            },
        )
        .env("HQSYNC_QUEUE__URL", &cfg.queue.url)
        .env("HQSYNC_QUEUE__PREFIX", &cfg.queue.prefix)
        .env("HQSYNC_QUEUE__PARTITIONS", cfg.queue.partitions.to_string())
        // The same retry queues as the test's own handle, so its cleanup removes them all.
        .env("HQSYNC_QUEUE__RETRY_DELAYS_SECS", format!("{:?}", cfg.queue.retry_delays_secs))
        .env("HQSYNC_QUEUE__VISIBILITY_TIMEOUT_SECS", cfg.queue.visibility_timeout_secs.to_string())
        .env("HQSYNC_SECRETS__MASTER_KEY", master_key)
        .env("HQSYNC_REMOTE__ALLOW_PRIVATE_ADDRESSES", cfg.remote.allow_private_addresses.to_string())
        .env("HQSYNC_LOG__FORMAT", "json")
        .stdout(std::process::Stdio::null())
        // Never a pipe nobody reads: a full pipe would block the worker's logging.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hqsync worker")
}

/// Store and queue opened with a master key the worker process is given too.
async fn setup_for_processes(
    backend: QueueBackend,
    test: &str,
) -> Option<(Config, Store, Queue, secrecy::SecretString, tempfile::TempDir)> {
    let amqp = match backend {
        QueueBackend::Amqp => Some(rabbitmq_url()?),
        QueueBackend::Local => None,
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), backend, amqp.as_deref(), test);
    let key = hqsync::store::Cipher::generate_key_base64();
    let store = Store::open(&cfg.store.url, 5, hqsync::store::Cipher::from_base64(&key).unwrap()).await.unwrap();
    let queue = Queue::open(&cfg.queue, &store).await.unwrap();
    queue.wait_ready(Duration::from_secs(5)).await.expect("queue ready");
    Some((cfg, store, queue, key, dir))
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_and_doubles_nothing() {
    for backend in [QueueBackend::Local, QueueBackend::Amqp] {
        let Some((cfg, store, queue, key, _dir)) = setup_for_processes(backend, "kill9").await else { continue };
        let hints: Vec<Hint> = (0..300).map(hint).collect();
        queue.publish(&hints).await.unwrap();
        let mut first = worker_process(&cfg, key.expose_secret());
        // Kill it hard once it is visibly mid-stream.
        let mid = wait_for_received(&store, 20, Duration::from_secs(60)).await;
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(!mid.is_empty(), "{backend:?}: the first worker never got going");
        let mut second = worker_process(&cfg, key.expose_secret());
        let seen = wait_for_received(&store, hints.len(), Duration::from_secs(60)).await;
        second.kill().unwrap();
        second.wait().unwrap();
        assert_eq!(seen.len(), hints.len(), "{backend:?}: nothing lost");
        assert!(seen.values().all(|n| *n == 1), "{backend:?}: nothing doubled");
        cleanup_queue(&queue).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_work_and_exits_cleanly() {
    let Some((cfg, store, queue, key, _dir)) = setup_for_processes(QueueBackend::Local, "sigterm").await else {
        return;
    };
    let hints: Vec<Hint> = (0..200).map(hint).collect();
    queue.publish(&hints).await.unwrap();
    let mut child = worker_process(&cfg, key.expose_secret());
    wait_for_received(&store, 10, Duration::from_secs(60)).await;
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "worker exited with {exit:?} on SIGTERM");
    let done = received(&store).await.len() as u64;
    let depth = queue.depth().await.unwrap();
    assert_eq!(depth.unacked.unwrap_or(0), 0, "nothing left half-done after the drain");
    assert_eq!(done + depth.ready, hints.len() as u64, "every hint is either applied or still queued");
    cleanup_queue(&queue).await;
}

/// Issue 21 item 7: `hqsync worker` processes doing real sync work (a
/// tenant's initial sync against both simulators, then helloHQ contacts
/// created meanwhile) are SIGKILLed mid-sync; afterwards nothing is lost
/// and nothing doubled, on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_sync_loses_no_record_and_doubles_none() {
    use hqsync::connectors::graph::{GraphClient, GraphClientConfig};
    use hqsync::connectors::hellohq::client::{HellohqClient, HellohqClientConfig};
    use hqsync::queue::HqEntity;
    use hqsync::sim::graph::{GraphSim, GraphSimConfig};
    use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
    use hqsync::store::{GraphCredentials, HellohqCredentials, Tenant};
    use secrecy::SecretString;
    use serde_json::{json, Value};

    for backend in [QueueBackend::Local, QueueBackend::Amqp] {
        let Some((cfg, store, queue, key, _dir)) = setup_for_processes(backend, "kill9sync").await else { continue };
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
        let creds = GraphCredentials {
            entra_tenant_id: seed["tenantId"].as_str().unwrap().to_string(),
            client_id: seed["clientId"].as_str().unwrap().to_string(),
            client_secret: SecretString::from(seed["clientSecret"].as_str().unwrap().to_string()),
            graph_base: format!("{}/v1.0", graph_sim.base_url()),
            login_base: graph_sim.base_url(),
        };
        let tenant = TenantId::parse("demo").unwrap();
        let now = chrono::Utc::now();
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
        // helloHQ contacts created while the initial sync runs, each with its webhook's hint.
        let people: Vec<Value> = hq.list_v2("/v2/ContactPersons", &Default::default()).await.unwrap().items;
        let company = people.iter().find_map(|p| p["companyId"].as_i64()).unwrap();
        let hint_of = |origin: Origin, change: Change, entity: Option<HqEntity>, id: Option<String>| Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: tenant.clone(),
            mailbox: None,
            kind: entity.map(|_| Kind::Contact),
            entity,
            origin,
            resource_id: id,
            version: None,
            subscription_id: None,
            change,
            received_at: chrono::Utc::now(),
        };
        let mut hints = vec![hint_of(Origin::Schedule, Change::Resync, None, None)];
        let added = 12;
        for i in 0..added {
            let body = json!({"companyId": company, "firstName": format!("Kim{i}"), "lastName": "Neun", "salutation": "Frau", "salutationForm": "Formal"});
            let made: Value = hq.write(reqwest::Method::POST, "/v2/ContactPersons", &body).await.unwrap();
            hints.push(hint_of(
                Origin::Hellohq,
                Change::Created,
                Some(HqEntity::ContactPerson),
                Some(made["id"].as_i64().unwrap().to_string()),
            ));
        }
        queue.publish(&hints).await.unwrap();
        let created = |store: Store| async move {
            store
                .list_journal(&JournalFilter { action: Some("created".into()), limit: 100_000, ..Default::default() })
                .await
                .unwrap()
                .len()
        };
        let mut first = worker_process(&cfg, key.expose_secret());
        // Killed hard once it is visibly creating copies.
        let guard = std::time::Instant::now();
        while created(store.clone()).await < 5 {
            assert!(guard.elapsed() < Duration::from_secs(120), "{backend:?}: the first worker never started syncing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = worker_process(&cfg, key.expose_secret());
        let seen = wait_for_received(&store, hints.len(), Duration::from_secs(180)).await;
        // Then until the queue is empty (a retried hint may still be on its way).
        loop {
            let d = queue.depth().await.unwrap();
            if d.ready + d.retrying + d.unacked.unwrap_or(0) == 0 {
                break;
            }
            assert!(guard.elapsed() < Duration::from_secs(300), "{backend:?}: the queue never drained: {d:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        second.kill().unwrap();
        second.wait().unwrap();
        assert_eq!(seen.len(), hints.len(), "{backend:?}: every hint applied");
        assert_eq!(queue.depth().await.unwrap().dead, 0, "{backend:?}: nothing dead-lettered");
        // helloHQ: no contact doubled (the sync's creates from Outlook-only contacts included).
        let people: Vec<Value> = hq.list_v2("/v2/ContactPersons", &Default::default()).await.unwrap().items;
        let mut names = HashMap::new();
        for p in &people {
            *names.entry((p["firstName"].to_string(), p["lastName"].to_string())).or_insert(0) += 1;
        }
        let doubled: Vec<_> = names.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "{backend:?}: helloHQ contacts doubled: {doubled:?}");
        // Exchange: every mailbox holds each new contact exactly once, and no contact twice.
        let mailboxes = store.list_mailboxes(&tenant).await.unwrap();
        assert!(mailboxes.len() >= 2, "{backend:?}: the tenant pass provisioned the mailboxes");
        for m in &mailboxes {
            let folders = graph.get(&format!("/users/{}/contactFolders", m.id)).await.unwrap();
            let mut copies: HashMap<(String, String), usize> = HashMap::new();
            for f in folders["value"].as_array().unwrap() {
                let path = format!(
                    "/users/{}/contactFolders/{}/contacts?{}",
                    m.id,
                    f["id"].as_str().unwrap(),
                    hqsync::model::contact::graph_expand()
                );
                for c in graph.list_all(&path).await.unwrap() {
                    *copies.entry((c["givenName"].to_string(), c["surname"].to_string())).or_insert(0) += 1;
                }
            }
            let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
            assert!(doubled.is_empty(), "{backend:?}: {} holds contacts twice: {doubled:?}", m.id);
            for i in 0..added {
                let n = copies.get(&(format!("\"Kim{i}\""), "\"Neun\"".to_string())).copied().unwrap_or(0);
                assert_eq!(n, 1, "{backend:?}: Kim{i} Neun in {}", m.id);
            }
        }
        graph_sim.shutdown().await;
        hq_sim.shutdown().await;
        cleanup_queue(&queue).await;
    }
}
