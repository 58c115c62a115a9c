//! docs/hellohq-api.md is the one table of truth for helloHQ routes (issue 18
//! item 3): the connector's route list, the simulator's route list and the
//! table must agree, and the simulator must serve exactly its list.

use std::collections::BTreeSet;

use hqsync::connectors::hellohq::routes::{self, normalize};
use hqsync::sim::hellohq::{HellohqSim, HellohqSimConfig, NO_ROUTE, ROUTES as SIM_ROUTES};
use serde_json::Value;

/// (method, normalized route, hqsync, sim) of every row of the routes table.
fn table() -> Vec<(String, String, bool, bool)> {
    let doc = include_str!("../docs/hellohq-api.md");
    let section = doc.split("## Routes").nth(1).expect("a Routes section").split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue; // header and separator
        }
        let yes = |c: &str| match c {
            "yes" => true,
            "no" => false,
            other => panic!("hqsync/sim column must be yes or no, not {other:?}: {line}"),
        };
        let provenance = cells[2];
        assert!(
            ["published v1", "published v2", "observed live", "hqsync contract"].contains(&provenance),
            "unknown provenance {provenance:?}: {line}"
        );
        rows.push((cells[0].to_string(), normalize(cells[1].trim_matches('`')), yes(cells[3]), yes(cells[4])));
    }
    assert!(rows.len() > 20, "the routes table was not found: {rows:?}");
    rows
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
    sim.shutdown().await;
}
