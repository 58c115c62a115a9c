//! docs/hellohq-api.md is the one table of truth for helloHQ routes (issue 18
//! item 3): the connector's route list, the simulator's route list and the
//! table must agree, and the simulator must serve exactly its list.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use hqsync::connectors::hellohq::routes::{self, normalize};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, NO_ROUTE, ROUTES as SIM_ROUTES};
use serde_json::Value;

/// (method, normalized route, hqsync, sim) of every row of the routes table.
fn table() -> Vec<(String, String, bool, bool)> {
    common::hellohq_route_table()
}

fn set(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter().map(|(m, p)| (m.to_string(), normalize(p))).collect()
}

#[test]
fn the_table_the_connector_and_the_simulator_name_the_same_routes() {
    let rows = table();
    let of = |pick: fn(&(String, String, bool, bool)) -> bool| -> BTreeSet<(String, String)> {
        rows.iter().filter(|r| pick(r)).map(|r| (r.0.clone(), r.1.clone())).collect()
    };
    assert_eq!(set(routes::ROUTES), of(|r| r.2), "connector routes vs the table's hqsync column");
    assert_eq!(set(SIM_ROUTES), of(|r| r.3), "simulator routes vs the table's sim column");
    for r in rows.iter().filter(|r| r.2) {
        assert!(r.3, "{} {}: hqsync uses it, so the simulator must serve it", r.0, r.1);
    }
}

/// A concrete request path for a template (ids that exist in the demo seed
/// are not needed: an unknown id answers a record 404, not the route 404).
fn concrete(template: &str) -> String {
    template.replace("({})", "(1)").replace("{}", "1")
}

#[tokio::test]
async fn the_simulator_serves_every_listed_route_and_nothing_else() {
    let sim =
        HellohqSim::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), HellohqSimConfig::default())
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let send = |method: &str, path: String| {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        http.request(m, format!("{}{path}", sim.base_url()))
            .bearer_auth(sim.sync_token())
            .json(&serde_json::json!({}))
            .send()
    };
    let unknown_route = |status: u16, body: &Value| status == 404 && body["title"] == NO_ROUTE;
    for (method, template) in SIM_ROUTES {
        let r = send(method, concrete(&normalize(template))).await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(!unknown_route(status, &body) && status != 405, "{method} {template} is listed but not served");
    }
    // Not listed: the withdrawn flat routes, and methods a listed path lacks.
    for (method, path) in [
        ("GET", "/v2/Projects/Tasks/1"),
        ("PUT", "/v2/Projects/Tasks/1"),
        ("DELETE", "/v2/Projects/Tasks/1"),
        ("POST", "/v2/Projects/Tasks"),
        ("GET", "/v2/Resources"),
        ("PUT", "/v1/ProjectTasks(1)"),
        ("GET", "/v1/ProjectTasks"),
        ("DELETE", "/v2/Users/1"),
    ] {
        let r = send(method, path.to_string()).await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(unknown_route(status, &body), "{method} {path} answered {status} {body}");
    }
    // `/_sim/stats` lists each unserved request under its raw path, and the
    // check against the table finds exactly those (what tests/demo.rs relies on).
    let stats: Value = http.get(format!("{}/_sim/stats", sim.base_url())).send().await.unwrap().json().await.unwrap();
    let requests: BTreeMap<String, u64> = serde_json::from_value(stats["requests"].clone()).unwrap();
    assert_eq!(requests.get("GET /v2/Resources"), Some(&1), "{requests:?}");
    assert_eq!(requests.get("PUT /v2/Projects/Tasks/1"), Some(&1), "{requests:?}");
    let off: BTreeSet<String> = common::hellohq_requests_off_table(&requests, false).into_iter().collect();
    let expected: BTreeSet<String> = [
        "GET /v2/Projects/Tasks/1",
        "PUT /v2/Projects/Tasks/1",
        "DELETE /v2/Projects/Tasks/1",
        "POST /v2/Projects/Tasks",
        "GET /v2/Resources",
        "PUT /v1/ProjectTasks({id})", // a v1 path is counted under its template even when its method is not served
        "GET /v1/ProjectTasks",
        "DELETE /v2/Users/1",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(off, expected, "every listed route is on the table, every unlisted request off it");
    sim.shutdown().await;
}
