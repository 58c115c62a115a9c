//! `hqsync demo` as a newcomer meets it: one command, a banner with working
//! addresses, the helloHQ webhook registered, a live feed, and a clean exit
//! on Ctrl-C. Also the journal tail the feed reads (`after_id`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hqsync::model::TenantId;
use hqsync::store::{Cipher, JournalFilter, NewJournalEntry, Store};

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
