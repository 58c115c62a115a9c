//! RabbitMQ restarted under a running ingress and worker: ingress answers
//! 503 while it is down (Graph retries), and both roles reconnect by
//! themselves afterwards with nothing lost. Its own test binary, so that
//! stopping the broker disturbs no other test.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use hqsync::config::QueueBackend;
use hqsync::engine::Engine;
use hqsync::store::JournalFilter;
use hqsync::worker::Worker;
use reqwest::StatusCode;

/// Starts the broker app again even if the test fails half-way.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

fn rabbitmqctl(arg: &str) -> bool {
    Command::new("rabbitmqctl").arg(arg).output().map(|o| o.status.success()).unwrap_or(false)
}

fn sample(id: &str) -> String {
    include_str!("fixtures/graph/change-notification-basic.json")
        .replace("{subscription_guid}", SUBSCRIPTION)
        .replace("secretClientValue", CLIENT_STATE)
        .replace("lsgTZMr9KwAAA", id)
        .replace("{user_guid}@{tenant_guid}", MAILBOX)
        .replace("{long_id_string}", id)
}

async fn post(app: &TestApp, body: String) -> StatusCode {
    app.client
        .post(format!("{}/v1/notifications/graph", app.base))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn received(app: &TestApp) -> Vec<String> {
    let entries = app
        .store
        .list_journal(&JournalFilter { action: Some("received".into()), limit: 1000, ..Default::default() })
        .await
        .unwrap();
    let mut ids: Vec<String> =
        entries.iter().filter_map(|e| e.detail["resource_id"].as_str().map(String::from)).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn ingress_and_worker_ride_out_a_broker_restart() {
    let Some(app) = spawn_app(QueueBackend::Amqp, "restart").await else { return };
    if Command::new("rabbitmqctl").arg("status").output().is_err() {
        service_missing("rabbitmqctl (to restart the broker)", "apt-get install rabbitmq-server");
        return;
    }
    app.wait_ready().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker {
        queue: app.queue.clone(),
        lifecycle: None,
        engine: Engine::new(app.store.clone()).allowing_private_addresses(),
        concurrency: 4,
        drain_timeout: Duration::from_secs(5),
        retry_delays: vec![Duration::from_secs(1)],
    };
    let w = tokio::spawn(worker.run(stop.clone()));
    assert_eq!(post(&app, sample("before")).await, StatusCode::ACCEPTED);

    let _guard = RestartGuard;
    assert!(rabbitmqctl("stop_app"), "rabbitmqctl stop_app failed");
    let mut saw_503 = false;
    for _ in 0..40 {
        if post(&app, sample("during")).await == StatusCode::SERVICE_UNAVAILABLE {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(saw_503, "ingress kept answering 202 with the broker stopped");
    assert!(rabbitmqctl("start_app"), "rabbitmqctl start_app failed");
    assert!(rabbitmqctl("await_startup"), "the broker did not finish starting");

    let mut accepted = false;
    for _ in 0..240 {
        if post(&app, sample("after")).await == StatusCode::ACCEPTED {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted, "ingress did not recover within 60 s of the broker's return");
    let mut seen = Vec::new();
    for _ in 0..240 {
        seen = received(&app).await;
        if seen.contains(&"after".to_string()) && seen.contains(&"before".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    w.await.unwrap();
    assert!(seen.contains(&"before".to_string()), "the hint confirmed before the restart was lost: {seen:?}");
    assert!(seen.contains(&"after".to_string()), "the worker did not resume after the restart: {seen:?}");
    // "during" was refused with 503, so Graph would retry it: it must not have been half-accepted.
    let after_count = seen.iter().filter(|s| *s == "after").count();
    assert_eq!(after_count, 1, "{seen:?}");
    app.stop().await;
}
