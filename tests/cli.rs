//! The binary as an operator meets it: exit codes, one-line config errors,
//! and `hqsync run` on embedded defaults with no config at all.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

fn hqsync() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hqsync"));
    // A clean environment: no HQSYNC_* leaks in from the developer's shell.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn version_is_printed() {
    let out = hqsync().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_bad_config_value_is_one_line_naming_the_key_and_exits_2_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hqsync.toml"), "[queue]\nbackend = \"kafka\"\n").unwrap();
    let out = hqsync().arg("run").current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("queue.backend") && err.contains("HQSYNC_QUEUE__BACKEND"), "{err}");
    assert!(!dir.path().join("data").exists(), "a refused start must not create state");

    let out = hqsync()
        .arg("worker")
        .current_dir(dir.path())
        .env("HQSYNC_QUEUE__BACKEND", "amqp")
        .env("HQSYNC_QUEUE__URL", "http://nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queue.url"));

    let out = hqsync().args(["--config", "/nonexistent/hqsync.toml", "serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn serve_refuses_a_public_url_graph_would_refuse_naming_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // Plain http on a public host: Graph refuses such notification URLs.
    let out = hqsync()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("HQSYNC_HTTP__PUBLIC_URL", "http://hqsync.example.com")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("http.public_url") && err.contains("https://") && err.contains("HQSYNC_HTTP__PUBLIC_URL"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "a refused start must not create state");
    // Unset, with a non-loopback listen address: the derived http:// URL would be refused too.
    let out = hqsync().args(["run", "--listen", "0.0.0.0:0"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.public_url") && err.contains("is not set"), "{err}");
    assert!(!dir.path().join("data").exists(), "a refused start must not create state");
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = hqsync().args(["run", "--lisen", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn run_with_no_config_serves_healthz_on_embedded_defaults_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = hqsync()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
            ok = r.status() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "hqsync run never answered /healthz");
    let ready = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "SQLite store and local queue are ready");
    assert!(dir.path().join("data/hqsync.db").exists(), "embedded store in ./data");
    let key = dir.path().join("data/master.key");
    assert!(key.exists(), "a master key was generated");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[tokio::test]
async fn migrate_creates_the_schema_on_postgresql() {
    let Some(db) = common::fresh_postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = hqsync().arg("migrate").current_dir(dir.path()).env("HQSYNC_STORE__URL", &db.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgres"));
    // Twice is fine.
    let again = hqsync().arg("migrate").current_dir(dir.path()).env("HQSYNC_STORE__URL", &db.url).output().unwrap();
    assert!(again.status.success());
    db.cleanup().await;
}

#[test]
fn openapi_subcommand_prints_the_committed_document() {
    let out = hqsync().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/hqsync.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[tokio::test]
async fn sim_serves_both_simulators_and_prints_their_urls() {
    use std::io::{BufRead, BufReader};
    let (g, h) = (free_port(), free_port());
    let mut child = hqsync()
        .args(["sim", "--graph", &format!("127.0.0.1:{g}"), "--hellohq", &format!("127.0.0.1:{h}"), "--seed", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().take(2).map(|l| l.unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(lines[0].contains(&format!("http://127.0.0.1:{g}")), "{lines:?}");
    assert!(lines[1].contains(&format!("http://127.0.0.1:{h}")), "{lines:?}");
    let client = reqwest::Client::new();
    for port in [g, h] {
        let seed: serde_json::Value =
            client.get(format!("http://127.0.0.1:{port}/_sim/seed")).send().await.unwrap().json().await.unwrap();
        assert!(seed.is_object(), "{seed}");
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn sim_without_any_address_is_a_usage_error() {
    let out = hqsync().arg("sim").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--graph"));
}

/// `tenant add` (secrets from the environment), `tenant list` (never the
/// secrets), `tenant test` and `tenant enable` (exit 3 and not enabled when
/// a check fails, exit 0 and enabled when all pass), `mailbox
/// set-direction` (a bad value is a usage error), `plan`.
#[tokio::test]
async fn operator_commands_test_and_enable_a_tenant_with_exit_codes_scripts_can_rely_on() {
    use hqsync::sim::graph::{GraphSim, GraphSimConfig};
    use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig};
    let graph = GraphSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), GraphSimConfig::default())
        .await
        .unwrap();
    let hq =
        HellohqSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), HellohqSimConfig::default())
            .await
            .unwrap();
    let seed: serde_json::Value =
        reqwest::get(format!("{}/_sim/seed", graph.base_url())).await.unwrap().json().await.unwrap();
    // Stands in for the `serve` process the public URL points at.
    let edge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_url = format!("http://{}", edge.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        axum::serve(edge, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let graph_base = graph.base_url();
    let hq_base = hq.base_url();
    let token = hq.sync_token();
    let tenant_id = seed["tenantId"].as_str().unwrap().to_string();
    let client_id = seed["clientId"].as_str().unwrap().to_string();
    let good = seed["clientSecret"].as_str().unwrap().to_string();
    let run = move |args: Vec<String>, env: Vec<(&'static str, String)>| {
        let mut c = hqsync();
        c.env("HQSYNC_DATA_DIR", &data)
            .env("HQSYNC_LOG__LEVEL", "error")
            .env("HQSYNC_HTTP__PUBLIC_URL", &public_url)
            // The simulators listen on 127.0.0.1.
            .env("HQSYNC_REMOTE__ALLOW_PRIVATE_ADDRESSES", "true")
            .args(&args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let add = |id: &str, secret: &str| {
        let args: Vec<String> = [
            "tenant",
            "add",
            "--id",
            id,
            "--graph-tenant-id",
            &tenant_id,
            "--client-id",
            &client_id,
            "--graph-base",
            &format!("{graph_base}/v1.0"),
            "--login-base",
            &graph_base,
            "--hellohq-base",
            &hq_base,
            "--pilot",
            "anna.schmidt@agentur-beispiel.de",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (args, vec![("TENANT_CLIENT_SECRET", secret.to_string()), ("TENANT_HELLOHQ_TOKEN", token.clone())])
    };
    let r = tokio::task::spawn_blocking({
        let run = run.clone();
        let (a1, e1) = add("good", &good);
        let (a2, e2) = add("bad", "wrong-secret");
        move || {
            let missing = run(a1.clone(), vec![]);
            let ok1 = run(a1, e1);
            let ok2 = run(a2, e2);
            let list = run(vec!["tenant".into(), "list".into()], vec![]);
            let bad_test = run(vec!["tenant".into(), "enable".into(), "--tenant".into(), "bad".into()], vec![]);
            let good_test = run(vec!["tenant".into(), "enable".into(), "--tenant".into(), "good".into()], vec![]);
            let bad_dir = run(
                [
                    "mailbox",
                    "set-direction",
                    "--tenant",
                    "good",
                    "--mailbox",
                    "a@b.de",
                    "--kind",
                    "contact",
                    "--direction",
                    "sideways",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                vec![],
            );
            (missing, ok1, ok2, list, bad_test, good_test, bad_dir)
        }
    })
    .await
    .unwrap();
    let (missing, ok1, ok2, list, bad_test, good_test, bad_dir) = r;
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("TENANT_CLIENT_SECRET"), "{}", text(&missing));
    assert!(ok1.status.success() && ok2.status.success(), "{} {}", text(&ok1), text(&ok2));
    assert!(text(&list).contains("good") && !text(&list).contains(&good), "{}", text(&list));
    assert_eq!(bad_test.status.code(), Some(3), "{}", text(&bad_test));
    assert!(text(&bad_test).contains("FAIL graph_token") && text(&bad_test).contains("fix:"), "{}", text(&bad_test));
    assert_eq!(good_test.status.code(), Some(0), "{}", text(&good_test));
    assert!(text(&good_test).contains("tenant good enabled"), "{}", text(&good_test));
    assert_eq!(bad_dir.status.code(), Some(2), "{}", text(&bad_dir));
    assert!(!text(&ok1).contains(&good));
    graph.shutdown().await;
    hq.shutdown().await;
}
