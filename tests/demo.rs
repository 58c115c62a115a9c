//! `hqsync demo` as a newcomer meets it: one command, a banner with working
//! addresses, the helloHQ webhook registered, a live feed, and a clean exit
//! on Ctrl-C. Also the journal tail the feed reads (`after_id`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hqsync::connectors::graph::{GraphClient, GraphClientConfig};
use hqsync::connectors::hellohq::routes::normalize;
use hqsync::model::TenantId;
use hqsync::store::{Cipher, GraphCredentials, JournalFilter, NewJournalEntry, Store};
use secrecy::SecretString;
use serde_json::{json, Value};

fn hqsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hqsync"));
    // A clean environment: no HQSYNC_* or RUST_LOG leaks in from the developer's shell.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `hqsync demo` whose stdout lines arrive on a channel.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = hqsync()
            .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path().join("demo"))
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Demo { child, lines, seen: Vec::new(), port, _dir: dir }
    }

    /// Waits up to `within` for a stdout line that `matches`.
    fn wait_for(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if matches(&l) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no matching line within {within:?}; stdout so far:\n{}", self.seen.join("\n"));
    }

    /// The URL printed after `label` in the banner.
    fn url_after(&self, label: &str) -> String {
        let line = self.seen.iter().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no {label} line"));
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.split_whitespace().next().unwrap().to_string()
    }

    fn interrupt_and_wait(mut self, within: Duration) -> std::process::ExitStatus {
        Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("hqsync demo did not exit within {within:?} of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A test that fails half-way does not leave its demo running.
impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn demo_serves_health_registers_its_webhook_and_stops_cleanly_on_ctrl_c() {
    let mut demo = Demo::start();
    demo.wait_for(Duration::from_secs(60), |l| l.starts_with("Live feed"));
    let base = format!("http://127.0.0.1:{}", demo.port);
    assert_eq!(demo.url_after("hqsync:"), base, "{:?}", demo.seen);

    let http = reqwest::Client::new();
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let hellohq = demo.url_after("helloHQ simulator:");
    let hooks: serde_json::Value =
        http.get(format!("{hellohq}/_sim/webhooks")).send().await.unwrap().json().await.unwrap();
    let hooks = hooks.as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["url"], format!("{base}/v1/webhooks/hellohq/demo"));
    assert!(hooks[0]["secret"].as_str().unwrap().starts_with("whsec_"), "{hooks:?}");

    let graph = demo.url_after("Graph simulator:");
    let seed: serde_json::Value = http.get(format!("{graph}/_sim/seed")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seed["mailboxes"].as_array().map(Vec::len), Some(4), "the demo agency's mailboxes");

    // The scheduler's first tick (subscriptions, first passes) comes at once;
    // the feed reports the initial sync with a time prefix.
    let line = demo.wait_for(Duration::from_secs(60), |l| l.contains("initial sync"));
    assert!(line.as_bytes().get(2) == Some(&b':') && line.as_bytes().get(8) == Some(&b' '), "{line}");

    let status = tokio::task::spawn_blocking(move || demo.interrupt_and_wait(Duration::from_secs(15))).await.unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on Ctrl-C: {status:?}");
}

#[tokio::test]
async fn a_second_demo_start_in_the_same_folder_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    for _ in 0..2 {
        let port = free_port();
        let mut child = hqsync()
            .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let mut up = false;
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
                up = r.status() == 200;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        assert!(up, "demo never answered /healthz");
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
    assert!(data.join(".hqsync-demo").is_file());
}

#[test]
fn a_bad_listen_address_is_a_usage_error_naming_the_flag() {
    let out = hqsync().args(["demo", "--listen", "notanaddress"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
}

#[test]
fn a_folder_that_is_not_the_demos_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hqsync.db"), "someone's real store").unwrap();
    let out = hqsync()
        .args(["demo", "--reset", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
    assert_eq!(std::fs::read_to_string(dir.path().join("hqsync.db")).unwrap(), "someone's real store");
}

#[test]

fn the_feed_shows_a_contact_arriving_in_several_mailboxes() {
    let mut demo = Demo::start();
    demo.wait_for(Duration::from_secs(60), |l| l.starts_with("Live feed"));
    let folded = |l: &str| {
        let Some(i) = l.find("contact ") else { return false };
        let rest = &l[i..];
        let Some(j) = rest.find(" → ") else { return false };
        let mut words = rest[j + " → ".len()..].split_whitespace();
        words.next().is_some_and(|n| n.parse::<u32>().is_ok()) && words.next() == Some("mailboxes")
    };
    demo.wait_for(Duration::from_secs(60), folded);
    let status = demo.interrupt_and_wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn the_journal_tail_reads_forward_from_an_id_in_pages() {
    let store =
        Store::open("sqlite::memory:", 1, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
    let demo = TenantId::parse("demo").unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = NewJournalEntry {
            tenant: Some(demo.clone()),
            action: format!("created{i}"),
            detail: serde_json::json!({}),
            ..NewJournalEntry::default()
        };
        ids.push(store.append_journal(&e).await.unwrap());
    }
    let page =
        |after, limit| JournalFilter { tenant: Some(demo.clone()), after_id: Some(after), limit, ..Default::default() };
    let first: Vec<i64> = store.list_journal(&page(ids[0], 2)).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(first, [ids[1], ids[2]], "oldest first after the given id");
    let rest: Vec<i64> = store.list_journal(&page(ids[2], 100)).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(rest, [ids[3], ids[4]]);
    assert!(store.list_journal(&page(ids[4], 100)).await.unwrap().is_empty());
    let newest: Vec<i64> = store
        .list_journal(&JournalFilter { limit: 2, ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(newest, [ids[4], ids[3]], "without after_id: newest first, as before");
}

const ANNA: &str = "anna.schmidt@agentur-beispiel.de";
const BEN: &str = "ben.mueller@agentur-beispiel.de";

/// Polls `check` every half second until it holds, up to `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a user of the demo reaches the helloHQ simulator with: its URL and
/// the users' own tokens (edits are made as the user, not as hqsync).
struct HellohqUser<'a> {
    http: &'a reqwest::Client,
    base: String,
    token: String,
}

impl HellohqUser<'_> {
    fn url(&self, path: &str) -> url::Url {
        let mut u = url::Url::parse(&self.base).unwrap();
        u.set_path(path);
        u
    }

    /// The task row named `name`, through the observed `GET /v2/Projects/Tasks`.
    async fn row(&self, name: &str) -> Value {
        let mut u = self.url("/v2/Projects/Tasks");
        u.query_pairs_mut().append_pair("filter", &format!("name eq '{name}'"));
        let list: Value = self.http.get(u).bearer_auth(&self.token).send().await.unwrap().json().await.unwrap();
        let rows: Vec<&Value> = list.as_array().unwrap().iter().filter(|r| r["name"] == name).collect();
        assert_eq!(rows.len(), 1, "{name}: {list}");
        rows[0].clone()
    }

    /// A full replace of the row through the observed
    /// `PUT /v2/Projects/{projectId}/Tasks/{taskId}`, `change` applied.
    async fn edit(&self, name: &str, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> i64 {
        let mut row = self.row(name).await;
        let (id, project) = (row["id"].as_i64().unwrap(), row["projectId"].as_i64().unwrap());
        let body = row.as_object_mut().unwrap();
        for read_only in ["id", "createdBy", "createdOn", "updatedBy", "updatedOn"] {
            body.remove(read_only);
        }
        change(body);
        let r = self
            .http
            .put(self.url(&format!("/v2/Projects/{project}/Tasks/{id}")))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PUT {name}: {}", r.status());
        id
    }
}

async fn hellohq_requests(http: &reqwest::Client, base: &str) -> BTreeMap<String, u64> {
    let stats: Value = http.get(format!("{base}/_sim/stats")).send().await.unwrap().json().await.unwrap();
    serde_json::from_value(stats["requests"].clone()).unwrap()
}

async fn events_named(graph: &GraphClient, mailbox: &str, subject: &str) -> Vec<Value> {
    let all = graph.list_all(&format!("/users/{mailbox}/events")).await.unwrap();
    all.into_iter().filter(|e| e["subject"] == subject).collect()
}

async fn todo_tasks(graph: &GraphClient, mailbox: &str) -> (String, Vec<Value>) {
    let lists = graph.list_all(&format!("/users/{mailbox}/todo/lists")).await.unwrap();
    let list = lists.iter().find(|l| l["displayName"] == "helloHQ").expect("the helloHQ list");
    let id = list["id"].as_str().unwrap().to_string();
    let tasks = graph.list_all(&format!("/users/{mailbox}/todo/lists/{id}/tasks")).await.unwrap();
    (id, tasks)
}

/// Issue 18, "Done when": tried as a new user would. `hqsync demo`, then an
/// appointment and a task edited in helloHQ through the observed routes (as
/// their users), an event edited in Outlook and a task ticked off in To Do:
/// each reaches the other side, and afterwards the helloHQ simulator's
/// request list holds only routes of docs/hellohq-api.md's table (the same
/// table tests/hellohq_routes.rs holds the connector and the simulator to).
/// A request to a route off the table is then made on purpose: the same
/// check catches it.
#[tokio::test]
async fn a_new_users_edits_on_both_sides_sync_and_the_demo_uses_only_routes_of_the_table() {
    let mut demo = Demo::start();
    demo.wait_for(Duration::from_secs(120), |l| l.starts_with("Live feed"));
    let hellohq = demo.url_after("helloHQ simulator:");
    let graph_url = demo.url_after("Graph simulator:");
    demo.wait_for(Duration::from_secs(300), |l| l.contains("initial sync done"));

    let http = reqwest::Client::new();
    let hq_seed: Value = http.get(format!("{hellohq}/_sim/seed")).send().await.unwrap().json().await.unwrap();
    let token_of = |email: &str| -> String {
        let users = hq_seed["users"].as_array().unwrap();
        let u = users.iter().find(|u| u["eMailWork"] == email).unwrap_or_else(|| panic!("no helloHQ user {email}"));
        u["token"].as_str().unwrap().to_string()
    };
    let anna_hq = HellohqUser { http: &http, base: hellohq.clone(), token: token_of(ANNA) };
    let ben_hq = HellohqUser { http: &http, base: hellohq.clone(), token: token_of(BEN) };
    let g_seed: Value = http.get(format!("{graph_url}/_sim/seed")).send().await.unwrap().json().await.unwrap();
    let creds = GraphCredentials {
        entra_tenant_id: g_seed["tenantId"].as_str().unwrap().to_string(),
        client_id: g_seed["clientId"].as_str().unwrap().to_string(),
        client_secret: SecretString::from(g_seed["clientSecret"].as_str().unwrap().to_string()),
        graph_base: format!("{graph_url}/v1.0"),
        login_base: graph_url.clone(),
    };
    let graph = GraphClient::new(&creds, GraphClientConfig::default().allowing_private_addresses()).unwrap();
    let within = Duration::from_secs(120);

    // 1. An appointment edited in helloHQ reaches its organizer's calendar.
    anna_hq.edit("Kick-off Website-Relaunch", |b| b["place"] = json!("Raum Nordsee")).await;
    eventually("the helloHQ appointment edit in Anna's calendar", within, || async {
        let found = events_named(&graph, ANNA, "Kick-off Website-Relaunch").await;
        found.len() == 1 && found[0]["location"]["displayName"] == "Raum Nordsee"
    })
    .await;

    // 2. A task edited in helloHQ reaches its assignee's To Do list.
    ben_hq.edit("Angebot Standbau nachfassen", |b| b["name"] = json!("Angebot Standbau bis Freitag")).await;
    eventually("the helloHQ task edit in Ben's To Do", within, || async {
        todo_tasks(&graph, BEN).await.1.iter().any(|t| t["title"] == "Angebot Standbau bis Freitag")
    })
    .await;

    // 3. An event edited in Outlook reaches helloHQ.
    let kunde = events_named(&graph, ANNA, "Kundentermin Bäckerei Becker").await;
    assert_eq!(kunde.len(), 1, "{kunde:?}");
    let gid = kunde[0]["id"].as_str().unwrap();
    graph
        .patch(&format!("/users/{ANNA}/events/{gid}"), &json!({"location": {"displayName": "Filiale Altona"}}), None)
        .await
        .unwrap();
    eventually("the Outlook event edit in helloHQ", within, || async {
        anna_hq.row("Kundentermin Bäckerei Becker").await["place"] == "Filiale Altona"
    })
    .await;

    // 4. A task ticked off in To Do is done in helloHQ.
    let (list, tasks) = todo_tasks(&graph, BEN).await;
    let wire = tasks.iter().find(|t| t["title"] == "Wireframes erstellen").expect("Wireframes erstellen in To Do");
    let tid = wire["id"].as_str().unwrap();
    graph
        .patch(&format!("/users/{BEN}/todo/lists/{list}/tasks/{tid}"), &json!({"status": "completed"}), None)
        .await
        .unwrap();
    eventually("the To Do tick in helloHQ", within, || async {
        ben_hq.row("Wireframes erstellen").await["isDone"] == true
    })
    .await;

    // Only routes of the table were asked of helloHQ, by hqsync and by the users.
    let used = hellohq_requests(&http, &hellohq).await;
    assert!(
        used.keys().any(|k| k
            .split_once(' ')
            .is_some_and(|(m, r)| m == "PUT" && normalize(r) == normalize("/v2/Projects/{id}/Tasks/{id}"))),
        "the edits went through the observed PUT: {used:?}"
    );
    assert!(used.contains_key("GET /v2/Projects/Tasks"), "{used:?}");
    assert_eq!(
        common::hellohq_requests_off_table(&used, false),
        Vec::<String>::new(),
        "routes off the table: {used:?}"
    );
    // The users' edits took routes hqsync uses too: every request is of the table's hqsync column.
    assert_eq!(
        common::hellohq_requests_off_table(&used, true),
        Vec::<String>::new(),
        "routes hqsync used that the table does not mark as its own: {used:?}"
    );

    // The check can fail: a request to a withdrawn route is listed and caught.
    let r = http.get(format!("{hellohq}/v2/Resources")).bearer_auth(&anna_hq.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let used = hellohq_requests(&http, &hellohq).await;
    assert_eq!(common::hellohq_requests_off_table(&used, false), ["GET /v2/Resources"], "{used:?}");

    let status = tokio::task::spawn_blocking(move || demo.interrupt_and_wait(Duration::from_secs(15))).await.unwrap();
    assert_eq!(status.code(), Some(0), "clean exit on Ctrl-C: {status:?}");
}
