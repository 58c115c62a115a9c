//! The status page in a real browser (headless Chromium): it signs in
//! through the login form (the form's CSRF cookie and field, a same-origin
//! form POST, the session cookie, the redirect), then the page must show
//! the seeded tenant, its mailboxes and kinds with direction, linked items,
//! the error with its reason, conflicts, held deletions and the chart. A
//! screenshot is kept under `target/`. (The sign-in is sent by the test's
//! HTTP client: a page of another origin that submits the form is exactly
//! the login CSRF the server refuses, and the page allows no script.)

use std::process::Command;

use chrono::Utc;
use hqsync::config::AdminConfig;
use hqsync::http::admin::AdminAuth;
use hqsync::http::AppState;
use hqsync::model::{Kind, MailboxId, TenantId};
use hqsync::queue::Queue;
use hqsync::store::{
    Cipher, GraphCredentials, HellohqCredentials, Link, Mailbox, MailboxState, NewJournalEntry, Store, Tenant,
};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

mod common;

const SECRET: &str = "status-page-signing-secret-at-least-32-bytes";

fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(c.to_string());
        }
    }
    common::service_missing("headless Chromium", "apt-get install -y chromium");
    None
}

/// Signs in through the login form as a browser on the page would (the
/// form's CSRF cookie and hidden field, a same-origin POST) and returns the
/// status page the session cookie then shows.
async fn signed_in_page(base: &str, token: &str) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let csrf_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("hqsync_csrf="))
        .expect("the login form sets its CSRF cookie");
    let csrf = csrf_cookie.trim_start_matches("hqsync_csrf=").split(';').next().unwrap().to_string();
    let signed = http
        .post(format!("{base}/login"))
        .header("cookie", format!("hqsync_csrf={csrf}"))
        .header("origin", base)
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), reqwest::StatusCode::SEE_OTHER);
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("hqsync_session="))
        .expect("signed in");
    let session = session.split(';').next().unwrap().to_string();
    let page = http.get(format!("{base}/")).header("cookie", format!("{session}; hqsync_csrf={csrf}")).send().await;
    page.unwrap().text().await.unwrap()
}

/// Renders `html` in the browser and returns what `extra` asked for (the
/// DOM with `--dump-dom`).
fn browse(browser: &str, html: &str, profile: &std::path::Path, extra: &[String]) -> String {
    let file = profile.join("status.html");
    std::fs::write(&file, html).unwrap();
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_status_page_signs_in_and_shows_a_seeded_tenant() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
    let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
    let tenant = TenantId::parse("nordlicht").unwrap();
    let mailbox = MailboxId::parse("anna.schmidt@agentur-beispiel.de").unwrap();
    let now = Utc::now();
    store
        .upsert_tenant(&Tenant {
            id: tenant.clone(),
            name: "Nordlicht Medien GmbH".into(),
            enabled: true,
            graph: GraphCredentials {
                entra_tenant_id: "t".into(),
                client_id: "c".into(),
                client_secret: "graph-secret-never-shown".to_string().into(),
                graph_base: "http://127.0.0.1:9".into(),
                login_base: "http://127.0.0.1:9".into(),
            },
            hellohq: HellohqCredentials {
                base_url: "http://127.0.0.1:9".into(),
                token: "hq-token-never-shown".to_string().into(),
                webhook_secrets: vec![],
            },
            settings: json!({"directions": {"task": "to_exchange"}}),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store
        .upsert_mailbox(&Mailbox {
            tenant: tenant.clone(),
            id: mailbox.clone(),
            hq_user_id: Some("1".into()),
            state: MailboxState::Active,
            settings: json!({}),
            last_error: None,
            updated_at: now,
        })
        .await
        .unwrap();
    for i in 0..3 {
        store
            .upsert_link(&Link {
                tenant: tenant.clone(),
                mailbox: mailbox.clone(),
                kind: Kind::Contact,
                hq_id: Some(format!("{i}")),
                graph_id: Some(format!("g{i}")),
                folder: Some("global".into()),
                base: json!({}),
                hq_fingerprint: None,
                graph_fingerprint: None,
                hq_version: None,
                graph_version: None,
                state: "linked".into(),
                updated_at: now,
            })
            .await
            .unwrap();
    }
    let entry = |action: &str, detail: serde_json::Value| NewJournalEntry {
        tenant: Some(tenant.clone()),
        mailbox: Some(mailbox.clone()),
        kind: Some(Kind::Contact),
        action: action.into(),
        detail,
        ..Default::default()
    };
    store
        .append_journal(&entry("created", json!({"side": "exchange", "summary": "contact Özlem Çelik"})))
        .await
        .unwrap();
    store
        .append_journal(&entry("error", json!({"reason": "helloHQ rejected the request (400): lastName required"})))
        .await
        .unwrap();
    store.append_journal(&entry("conflict", json!({"field": "job_title"}))).await.unwrap();
    store.append_journal(&entry("held", json!({"count": 7}))).await.unwrap();
    store
        .set_cursor(&tenant, mailbox.as_str(), hqsync::engine::contacts::LAST_PASS, "2026-11-27T08:00:00Z")
        .await
        .unwrap();

    let queue = Queue::open(&hqsync::config::Config::default().queue, &store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = AdminConfig {
        jwt_algorithm: "HS256".into(),
        jwt_secret: Some(SECRET.to_string().into()),
        jwt_public_key_file: None,
        ..AdminConfig::default()
    };
    let state = AppState::new(store.clone(), queue, std::time::Duration::from_secs(2), 1 << 20)
        .with_admin(AdminAuth::from_config(&cfg).unwrap(), base.clone());
    tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), Default::default()));
    let exp = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ops@example", "role": "tenant_admin", "tenant": "nordlicht", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();

    // Without a session the page is the login form.
    let anon = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(anon.contains("name=\"token\""), "{anon}");

    let profile = tempfile::tempdir().unwrap();
    let html = signed_in_page(&base, &token).await;
    let dom = tokio::task::spawn_blocking({
        let browser = browser.clone();
        let profile = profile.path().to_path_buf();
        move || browse(&browser, &html, &profile, &["--dump-dom".to_string()])
    })
    .await
    .unwrap();
    assert!(dom.contains("Nordlicht Medien GmbH"), "not signed in, or the tenant is missing:\n{dom}");
    assert!(dom.contains("data-mailbox=\"anna.schmidt@agentur-beispiel.de\" data-kind=\"contact\""), "{dom}");
    assert!(dom.contains("<td class=\"linked\">3</td>"), "linked contacts: {dom}");
    assert!(dom.contains("lastName required"), "the error's reason: {dom}");
    assert!(dom.contains("to_exchange"), "the task direction: {dom}");
    assert!(dom.contains("2026-11-27T08:00:00Z"), "last sync: {dom}");
    assert!(dom.contains("<svg class=\"chart\""), "the chart: {dom}");
    assert!(!dom.contains("never-shown"), "a secret reached the page");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let token2 = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ops@example", "role": "operator", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let profile2 = tempfile::tempdir().unwrap();
    let shot2 = shot.clone();
    let html2 = signed_in_page(&base, &token2).await;
    tokio::task::spawn_blocking({
        let profile = profile2.path().to_path_buf();
        move || {
            browse(
                &browser,
                &html2,
                &profile,
                &[format!("--screenshot={}", shot2.display()), "--window-size=1280,900".into()],
            )
        }
    })
    .await
    .unwrap();
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {} ({size} bytes)", shot.display());
    eprintln!("status page screenshot: {}", shot.display());
}

/// The capability record of each tenant is on the page (no browser needed:
/// the served HTML is read): one row per answer of both sections, helloHQ's
/// spelling one row per list, and a tenant never tested says so.
#[tokio::test]
async fn the_status_page_shows_each_tenants_capabilities() {
    use hqsync::model::capabilities::{Capabilities, GraphCapabilities, HellohqCapabilities, HqSpelling};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hqsync.db").display());
    let store = Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap();
    let now = Utc::now();
    for id in ["probed", "untested"] {
        store
            .upsert_tenant(&Tenant {
                id: TenantId::parse(id).unwrap(),
                name: format!("Tenant {id}"),
                enabled: true,
                graph: GraphCredentials {
                    entra_tenant_id: "t".into(),
                    client_id: "c".into(),
                    client_secret: "graph-secret-never-shown".to_string().into(),
                    graph_base: "http://127.0.0.1:9".into(),
                    login_base: "http://127.0.0.1:9".into(),
                },
                hellohq: HellohqCredentials {
                    base_url: "http://127.0.0.1:9".into(),
                    token: "hq-token-never-shown".to_string().into(),
                    webhook_secrets: vec![],
                },
                settings: json!({}),
                created_at: now,
                updated_at: now,
            })
            .await
            .unwrap();
    }
    let caps = Capabilities {
        tested_at: Some(now),
        hellohq: HellohqCapabilities {
            spelling: [("/v2/Projects/Tasks".to_string(), HqSpelling::Dollar)].into(),
            next_links: false,
            expand_assignments: true,
            deletions_filter: false,
        },
        graph: GraphCapabilities { if_match_enforced: true, ..Default::default() },
    };
    store.set_capabilities(&TenantId::parse("probed").unwrap(), &caps).await.unwrap();
    // Two mailboxes: one whose Graph user resolved, one whose did not
    // (issue 19 item 8): only the second is listed, with why and the fix.
    let probed_id = TenantId::parse("probed").unwrap();
    for (m, outcome) in [
        ("anna@nordlicht.example", Ok("0a1b-2c3d")),
        ("ben@nordlicht.example", Err("no Graph user has ben@nordlicht.example as mail or proxy address; fix: enter the user's mailbox address")),
    ] {
        let mailbox = MailboxId::parse(m).unwrap();
        store
            .upsert_mailbox(&Mailbox {
                tenant: probed_id.clone(),
                id: mailbox.clone(),
                hq_user_id: None,
                state: MailboxState::Active,
                settings: json!({}),
                last_error: None,
                updated_at: now,
            })
            .await
            .unwrap();
        store.set_graph_user(&probed_id, &mailbox, outcome).await.unwrap();
    }

    let queue = Queue::open(&hqsync::config::Config::default().queue, &store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = AdminConfig {
        jwt_algorithm: "HS256".into(),
        jwt_secret: Some(SECRET.to_string().into()),
        jwt_public_key_file: None,
        ..AdminConfig::default()
    };
    let state = AppState::new(store.clone(), queue, std::time::Duration::from_secs(2), 1 << 20)
        .with_admin(AdminAuth::from_config(&cfg).unwrap(), base.clone());
    tokio::spawn(hqsync::http::serve(listener, hqsync::http::router(state), Default::default()));
    let exp = (Utc::now() + chrono::Duration::hours(1)).timestamp();
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ops@example", "role": "operator", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let html = signed_in_page(&base, &token).await;
    let section = |id: &str| -> String {
        let start = html.find(&format!("id=\"tenant-{id}\"")).unwrap_or_else(|| panic!("tenant {id}: {html}"));
        let rest = &html[start..];
        rest[..rest.find("</section>").unwrap()].to_string()
    };
    let probed = section("probed");
    for row in [
        "<tr data-capability=\"hellohq.spelling./v2/Projects/Tasks\"><td>hellohq.spelling./v2/Projects/Tasks</td><td>dollar</td></tr>",
        "<tr data-capability=\"hellohq.expand_assignments\"><td>hellohq.expand_assignments</td><td>true</td></tr>",
        "<tr data-capability=\"hellohq.deletions_filter\"><td>hellohq.deletions_filter</td><td>false</td></tr>",
        "<tr data-capability=\"hellohq.next_links\"><td>hellohq.next_links</td><td>false</td></tr>",
        "<tr data-capability=\"graph.if_match_enforced\"><td>graph.if_match_enforced</td><td>true</td></tr>",
        "<tr data-capability=\"graph.todo_subscription_accepted\"><td>graph.todo_subscription_accepted</td><td>false</td></tr>",
    ] {
        assert!(probed.contains(row), "{row} missing: {probed}");
    }
    assert!(probed.contains("probed by the connection test at"), "{probed}");
    assert!(probed.contains("Mailboxes without a Graph user (not synced)"), "{probed}");
    let row = probed.find("data-graph-user=\"ben@nordlicht.example\"").map(|i| &probed[i..]).expect("ben is listed");
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("no Graph user has ben@nordlicht.example as mail or proxy address; fix: enter"), "{row}");
    assert!(row.contains("<td>1</td>"), "one lookup so far: {row}");
    assert!(row.contains("or after the next connection test"), "{row}");
    assert!(!probed.contains("data-graph-user=\"anna@nordlicht.example\""), "a resolved user is not listed: {probed}");
    let untested = section("untested");
    assert!(!untested.contains("without a Graph user"), "{untested}");
    assert!(untested.contains("never probed: the safe defaults apply"), "{untested}");
    assert!(untested.contains("<td>hellohq.spelling</td><td>undecided (safe default)</td>"), "{untested}");
    assert!(untested.contains("<td>hellohq.expand_assignments</td><td>false</td>"), "{untested}");
    assert!(!html.contains("never-shown"), "a secret reached the page");
}
