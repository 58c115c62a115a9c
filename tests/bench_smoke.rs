//! Each `hqsync bench` subcommand run at a tiny size through its library
//! function: it must finish and produce figures. Timings are never
//! asserted (the machine is shared); counts that do not depend on speed are.

mod common;

use hqsync::bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_measures_both_directions() {
    let r = bench::e2e(bench::E2eArgs { rate: 20.0, changes: 8, timeout_ms: 20_000 }).await.unwrap();
    // Every edit matched to all its own counterpart writes (helloHQ and
    // each mailbox's copy), half the edits in each direction.
    assert_eq!((r.edits, r.samples(), r.missing), (8, 8, 0), "{r:?}");
    assert_eq!((r.to_hellohq.samples, r.to_exchange.samples), (4, 4), "{r:?}");
    assert!(r.counterparts >= 8, "{r:?}");
    for l in [&r.to_hellohq, &r.to_exchange, &r.baseline] {
        assert!(l.p50_ms.is_finite() && l.p50_ms > 0.0, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_counts_every_kind_both_ways_without_echo_writes() {
    let all = bench::requests(bench::RequestsArgs { changes: 2 }).await.unwrap();
    // Contacts, appointments and tasks, each from Exchange and from helloHQ.
    assert_eq!(all.len(), 6, "{all:#?}");
    for f in &all {
        // Every edit is mirrored (an edit of a field that flows only from
        // helloHQ, such as an event's subject edited in Outlook, would not be).
        assert!(f.edits == 2 && f.mirrored_writes >= 2 && f.graph_requests > 0, "{f:?}");
        if f.from_exchange {
            assert!(f.hq_writes >= 2, "{f:?}");
        } else {
            assert!(f.graph_writes >= 2, "{f:?}");
        }
        if f.label.starts_with("contacts") {
            assert_eq!(f.echo_writes, 0, "{f:?}");
        }
    }
}

/// The initial-sync bench at a tiny size, its store on `postgres` if given.
fn tiny_initial_sync(postgres: Option<String>) -> bench::InitialSyncArgs {
    bench::InitialSyncArgs { mailboxes: 2, contacts: 5, quota: 1000, window_ms: 1000, full: false, postgres }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_fills_every_mailbox() {
    let r = bench::initial_sync(tiny_initial_sync(None)).await.unwrap();
    assert_eq!((r.mailboxes, r.contacts, r.failed_items), (2, 5, 0));
    assert!(r.graph_requests >= 10 && r.elapsed_s > 0.0, "{r:?}");
}

/// `--postgres`: the same on a scratch database, dropped afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_on_postgres_fills_every_mailbox_and_drops_its_scratch_database() {
    let Some(server) = common::pg_server_url() else { return };
    let r = bench::initial_sync(tiny_initial_sync(Some(server.clone()))).await.unwrap();
    assert_eq!((r.mailboxes, r.contacts, r.failed_items), (2, 5, 0));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres")).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname LIKE 'hqsync_bench_%'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "the scratch database is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_reads_cpu_and_memory() {
    let r = bench::resources(bench::ResourcesArgs { rate: 20.0, changes: 6 }).await.unwrap();
    assert!(r.worker_cpu_ms.is_finite() && r.process_cpu_ms > 0.0, "{r:?}");
    assert!(r.rss_peak_kib >= r.rss_idle_kib && r.rss_idle_kib > 0, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_creates_then_renews_every_subscription() {
    // 2 mailboxes × 4 (calendar, both contact folders, the To Do list).
    let r = bench::scheduler(bench::SchedulerArgs { subscriptions: 8, full: false }).await.unwrap();
    assert_eq!((r.subscriptions, r.created, r.renewed, r.errors), (8, 8, 8, 0), "{r:?}");
    assert!(r.needed_per_min > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_writes_every_mailbox_once_per_edit() {
    let all = bench::fanout(bench::FanoutArgs { mailboxes: vec![3], edits: 2 }).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].graph_writes_per_edit, 3.0, "{:?}", all[0]);
    // The baseline beside it: the same 3 writes straight to the simulator.
    assert_eq!(all[0].direct_writes, 3, "{:?}", all[0]);
    assert!(all[0].direct_sequential_ms > 0.0 && all[0].direct_concurrent_ms > 0.0, "{:?}", all[0]);
}
