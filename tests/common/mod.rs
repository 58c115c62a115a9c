//! Helpers shared by the integration tests: real services when present, a
//! loud skip outside CI when not, a hard failure under `CI=true`.
#![allow(dead_code)]

use std::time::Duration;

/// True when running under CI (`CI=true`): missing services fail the test.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Skips (outside CI) or fails (in CI) a test whose service is missing.
pub fn service_missing(service: &str, how_to_start: &str) {
    if in_ci() {
        panic!("{service} is required under CI=true but is not reachable; start it with: {how_to_start}");
    }
    eprintln!(
        "\n======================================================================\n\
         SKIPPED: {service} is not reachable, so this test did not run.\n\
         Start it with: {how_to_start}\n\
         ======================================================================\n"
    );
}

fn reachable(addr: &str) -> bool {
    let Ok(addr) = addr.parse() else { return false };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// AMQP URL of the test broker, or None (after a loud skip) when absent.
pub fn rabbitmq_url() -> Option<String> {
    let url = std::env::var("HQSYNC_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let host = url::Url::parse(&url).ok().map(|u| {
        format!("{}:{}", u.host_str().unwrap_or("127.0.0.1").replace("localhost", "127.0.0.1"), u.port().unwrap_or(5672))
    });
    if host.as_deref().is_some_and(reachable) {
        Some(url)
    } else {
        service_missing("RabbitMQ", "rabbitmq-server -detached");
        None
    }
}

/// A fresh, empty PostgreSQL database for one test; dropped by `cleanup`.
pub struct PgTestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

const PG_HOW: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// Creates `hqsync_t_<random>` on the test server, or None (after a loud
/// skip) when PostgreSQL is absent.
pub async fn fresh_postgres() -> Option<PgTestDb> {
    let base = std::env::var("HQSYNC_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let host = url::Url::parse(&base)
        .ok()
        .map(|u| format!("{}:{}", u.host_str().unwrap_or("127.0.0.1"), u.port().unwrap_or(5432)));
    if !host.as_deref().is_some_and(reachable) {
        service_missing("PostgreSQL", PG_HOW);
        return None;
    }
    let name = format!("hqsync_t_{}", uuid::Uuid::new_v4().simple());
    let admin_url = format!("{base}/postgres");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} refused the test connection: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
    Some(PgTestDb { url: format!("{base}/{name}"), admin_url, name })
}

impl PgTestDb {
    pub async fn cleanup(self) {
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&mut conn).await;
        }
    }
}

/// A unique queue prefix so parallel tests never share exchanges or queues.
pub fn queue_prefix(test: &str) -> String {
    format!("t.{test}.{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
