//! JSON batching (`POST /v1.0/$batch`): validates the envelope (≤ 20
//! requests, unique case-insensitive ids, relative urls, headers with a
//! body), runs each inner request through the same [`dispatch`] as the wire
//! (so each counts against throttling), honours `dependsOn` with `424`, and
//! answers `200` with the responses in shuffled order.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use futures::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use serde_json::{json, Map, Value};

use super::error::{GResult, GraphError, Reply};
use super::router::{dispatch, Ctx, Req};

const MAX_REQUESTS: usize = 20;
/// Outlook runs at most four inner requests at a time.
const INNER_CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
struct Inner {
    id: String,
    req: Req,
    depends_on: Vec<String>,
}

fn invalid(message: impl Into<String>) -> GraphError {
    GraphError::bad_request("BadRequest", message)
}

fn parse(ctx: &Ctx<'_>) -> GResult<Vec<Inner>> {
    let body = ctx.json_object()?;
    let Some(Value::Array(requests)) = body.get("requests") else {
        return Err(invalid("Invalid batch payload format."));
    };
    if requests.len() > MAX_REQUESTS {
        return Err(invalid(format!("The number of batch requests exceeds the maximum of {MAX_REQUESTS}.")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in requests {
        let id = match r.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(invalid("Batch request id is required.")),
        };
        if !seen.insert(id.to_ascii_lowercase()) {
            return Err(invalid(format!("Batch request contains duplicate id '{id}'.")));
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or_else(|| invalid(format!("Invalid method for request '{id}'.")))?;
        let url =
            r.get("url").and_then(Value::as_str).ok_or_else(|| invalid(format!("url is required for '{id}'.")))?;
        if url.contains("://") || url.to_ascii_lowercase().starts_with("/v1.0/") {
            return Err(invalid(format!("The url of request '{id}' must be relative to the version root.")));
        }
        if url.trim_start_matches('/').to_ascii_lowercase().starts_with("$batch") {
            return Err(invalid(format!("Request '{id}' cannot be a nested batch.")));
        }
        let url = if url.starts_with('/') { url.to_string() } else { format!("/{url}") };
        let (path, raw_query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (url, None),
        };
        let mut headers = HeaderMap::new();
        // The inner request acts with the batch's credentials.
        if let Some(a) = ctx.req.headers.get("authorization") {
            headers.insert("authorization", a.clone());
        }
        if let Some(Value::Object(h)) = r.get("headers") {
            for (k, v) in h {
                if let (Ok(n), Some(Ok(v))) = (HeaderName::try_from(k.as_str()), v.as_str().map(HeaderValue::from_str))
                {
                    headers.insert(n, v);
                }
            }
        }
        let body = match r.get("body") {
            None | Some(Value::Null) => Bytes::new(),
            Some(b) => {
                if !headers.contains_key("content-type") {
                    return Err(invalid(format!(
                        "Request '{id}' has a body but no Content-Type header; headers are required with a body."
                    )));
                }
                match b {
                    Value::String(s) => Bytes::from(s.clone()),
                    other => Bytes::from(other.to_string()),
                }
            }
        };
        let depends_on = match r.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(_) => return Err(invalid(format!("dependsOn of '{id}' must be an array."))),
        };
        out.push(Inner { id, req: Req { method, path, raw_query, headers, body }, depends_on });
    }
    let ids: HashSet<String> = out.iter().map(|i| i.id.to_ascii_lowercase()).collect();
    for i in &out {
        if let Some(d) = i.depends_on.iter().find(|d| !ids.contains(&d.to_ascii_lowercase())) {
            return Err(invalid(format!("Request '{}' depends on unknown request '{d}'.", i.id)));
        }
    }
    Ok(out)
}

fn item(id: &str, reply: Reply) -> Value {
    let mut headers = Map::new();
    for (k, v) in reply.headers.iter() {
        if let Ok(v) = v.to_str() {
            headers.insert(k.as_str().to_string(), json!(v));
        }
    }
    if reply.body.is_some() {
        headers.insert("content-type".into(), json!("application/json; odata.metadata=minimal; odata.streaming=true"));
    }
    let mut v = json!({"id": id, "status": reply.status.as_u16(), "headers": headers});
    if let Some(b) = reply.body {
        v["body"] = b;
    }
    v
}

pub(crate) async fn handle(ctx: &Ctx<'_>) -> GResult {
    let inner = parse(ctx)?;
    let mut status: HashMap<String, StatusCode> = HashMap::new();
    let mut responses: Vec<Value> = Vec::new();
    let mut remaining = inner;
    while !remaining.is_empty() {
        let (ready, waiting): (Vec<Inner>, Vec<Inner>) = remaining
            .into_iter()
            .partition(|i| i.depends_on.iter().all(|d| status.contains_key(&d.to_ascii_lowercase())));
        if ready.is_empty() {
            // A dependency cycle: nothing can run.
            return Err(invalid("The batch contains a dependency cycle."));
        }
        let mut runnable = Vec::new();
        for i in ready {
            let failed_dep =
                i.depends_on.iter().any(|d| status.get(&d.to_ascii_lowercase()).is_some_and(|s| !s.is_success()));
            if failed_dep {
                status.insert(i.id.to_ascii_lowercase(), StatusCode::FAILED_DEPENDENCY);
                responses.push(json!({
                    "id": i.id, "status": 424, "headers": {},
                    "body": {"error": {"code": "FailedDependency", "message": "Request failed because of a failed dependency."}},
                }));
            } else {
                runnable.push(i);
            }
        }
        let shared = ctx.shared;
        let done: Vec<(String, Reply)> = stream::iter(runnable)
            .map(|i| async move { (i.id, dispatch(shared, i.req).await) })
            .buffer_unordered(INNER_CONCURRENCY)
            .collect()
            .await;
        for (id, reply) in done {
            status.insert(id.to_ascii_lowercase(), reply.status);
            responses.push(item(&id, reply));
        }
        remaining = waiting;
    }
    responses.shuffle(&mut rand::thread_rng());
    Ok(Reply::ok(json!({"responses": responses})))
}
