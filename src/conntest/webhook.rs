//! Whether hqsync's public URL answers: Graph and helloHQ deliver there.

use super::Check;

pub(super) async fn check(public_url: &str) -> Check {
    const NAME: &str = "webhook_reachability";
    if public_url.is_empty() {
        return Check::fail(NAME, "http.public_url is not set", "set http.public_url");
    }
    let url = format!("{}/healthz", public_url.trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => return Check { name: NAME.into(), ok: false, detail: e.to_string(), fix: None },
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => Check::pass(NAME, format!("{url} answers")),
        Ok(r) => Check::fail(NAME, format!("{url} answered {}", r.status()), "route http.public_url to this service"),
        Err(e) => Check::fail(
            NAME,
            format!("{url}: {e}"),
            "make http.public_url reachable (DNS, TLS, firewall, reverse proxy)",
        ),
    }
}
