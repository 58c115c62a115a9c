//! `openapi/hqsync.json` is generated from the code; this fails when the
//! committed file drifts. Regenerate with
//! `cargo run -- openapi > openapi/hqsync.json`
//! (or run this test with HQSYNC_UPDATE_OPENAPI=1).

mod common;

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/hqsync.json");
    let generated = hqsync::http::openapi::render();
    if std::env::var("HQSYNC_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/hqsync.json is out of date: run `cargo run -- openapi > openapi/hqsync.json` and commit it"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = common::spawn_app(hqsync::config::QueueBackend::Local, "openapi").await.unwrap();
    let spec: serde_json::Value = serde_json::from_str(&hqsync::http::openapi::render()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 6, "the document lists the routes");
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = format!("{}{}", app.base, path.replace("{tenant}", common::TENANT));
            let req = app.client.request(method.to_uppercase().parse().unwrap(), &url);
            let status = req.send().await.unwrap().status();
            // The webhook route answers 404 for an unknown tenant by design; anything else must not be 404/405.
            let routed =
                status != reqwest::StatusCode::METHOD_NOT_ALLOWED && (status != 404 || path.contains("{tenant}"));
            assert!(routed, "{method} {path} is documented but not routed ({status})");
        }
    }
    app.stop().await;
}
