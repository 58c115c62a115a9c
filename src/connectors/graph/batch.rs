//! JSON batching (`POST /$batch`, GRAPH.md §3): bulk reads and writes in
//! envelopes of at most 20 independent requests, responses correlated by id
//! (they come back in any order), and only the items that came back `429`
//! or `503` sent again, in a new envelope after the largest `Retry-After`,
//! within the same bounds as single requests. While an envelope is in
//! flight it holds each mailbox's permits as if its items for that mailbox
//! were that many requests (at most the whole limit), because Outlook
//! counts every inner request against the mailbox's concurrency. It never uses `dependsOn` (a batch is fully independent).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::{mailbox_of, with_immutable_ids, GraphClient, Holds};
use super::error::{classify, error_code, parse_retry_after, GraphError, Verdict};

/// Graph's limit of requests per envelope.
pub const MAX_BATCH: usize = 20;

/// One inner request. `url` is relative to the version root (`/users/…`).
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// Unique within one `batch` call; returned on the matching response.
    pub id: String,
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl BatchRequest {
    pub fn get(id: impl Into<String>, url: impl Into<String>) -> BatchRequest {
        BatchRequest { id: id.into(), method: Method::GET, url: url.into(), headers: Vec::new(), body: None }
    }

    pub fn with_body(id: impl Into<String>, method: Method, url: impl Into<String>, body: Value) -> BatchRequest {
        BatchRequest { id: id.into(), method, url: url.into(), headers: Vec::new(), body: Some(body) }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> BatchRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn to_wire(&self) -> Value {
        // Each inner request is a request of its own: it carries the immutable-id preference too.
        let own: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut headers: Map<String, Value> =
            with_immutable_ids(&own).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let mut o = json!({"id": self.id, "method": self.method.as_str(), "url": self.url});
        if let Some(b) = &self.body {
            if !headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
                headers.insert("Content-Type".into(), json!("application/json"));
            }
            o["body"] = b.clone();
        }
        if !headers.is_empty() {
            o["headers"] = Value::Object(headers);
        }
        o
    }
}

/// One inner response, as Graph gave it (after retries for 429/503).
#[derive(Debug, Clone)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl BatchResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body of a successful item, or the error it stands for, read
    /// exactly like a single request's answer (`mailbox` as addressed).
    pub fn into_result(self, client: &GraphClient, mailbox: Option<&str>) -> Result<Value, GraphError> {
        let ra = self.retry_after();
        match classify(self.status, &self.body, ra, mailbox, client.client_id(), None) {
            Verdict::Success => Ok(self.body),
            Verdict::Fail(e) => Err(e),
            Verdict::Throttled(retry_after) => Err(GraphError::Throttled { retry_after }),
            Verdict::Unavailable(_) | Verdict::RefreshToken => {
                let (code, message) = error_code(&self.body);
                Err(GraphError::Status { status: self.status, code, message, request_id: None })
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        self.headers.get("retry-after").and_then(|v| parse_retry_after(v))
    }

    fn is_retryable(&self) -> bool {
        matches!(self.status, 429 | 503)
    }
}

impl GraphClient {
    /// Runs `requests` as `$batch` envelopes of ≤ 20 and returns one response
    /// per request, in the order of `requests`. Items still throttled when
    /// the budget runs out are returned with their last status (429/503).
    pub async fn batch(&self, requests: Vec<BatchRequest>) -> Result<Vec<BatchResponse>, GraphError> {
        let mut seen = std::collections::HashSet::new();
        for r in &requests {
            if !seen.insert(r.id.to_ascii_lowercase()) {
                return Err(GraphError::Decode(format!("duplicate batch request id '{}'", r.id)));
            }
        }
        let order: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
        let mut done: HashMap<String, BatchResponse> = HashMap::new();
        for chunk in requests.chunks(MAX_BATCH) {
            for resp in self.batch_chunk(chunk.to_vec()).await? {
                done.insert(resp.id.clone(), resp);
            }
        }
        order
            .into_iter()
            .map(|id| done.remove(&id).ok_or_else(|| GraphError::Decode(format!("no batch response for id '{id}'"))))
            .collect()
    }

    async fn batch_chunk(&self, mut pending: Vec<BatchRequest>) -> Result<Vec<BatchResponse>, GraphError> {
        // Resolved mailboxes are addressed by their Graph user's id, as single requests are.
        for r in &mut pending {
            r.url = self.keyed(&r.url);
        }
        let policy = self.config().retry.clone();
        let url = format!("{}/$batch", self.graph_base());
        let mut out = Vec::new();
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            let mut per_mailbox: BTreeMap<String, u32> = BTreeMap::new();
            for r in &pending {
                if let Some(mb) = mailbox_of(&r.url) {
                    *per_mailbox.entry(mb).or_default() += 1;
                }
            }
            let holds: Holds = per_mailbox.into_iter().collect();
            let envelope = json!({"requests": pending.iter().map(BatchRequest::to_wire).collect::<Vec<_>>()});
            let resp = self.execute(Method::POST, &url, Some(&envelope), &[], &holds).await?;
            let mut by_id: HashMap<String, BatchResponse> = HashMap::new();
            for r in resp.body.get("responses").and_then(Value::as_array).into_iter().flatten() {
                let r = parse_response(r)?;
                by_id.insert(r.id.to_ascii_lowercase(), r);
            }
            let mut retry = Vec::new();
            let mut longest: Option<Duration> = None;
            for req in pending {
                let Some(r) = by_id.remove(&req.id.to_ascii_lowercase()) else {
                    return Err(GraphError::Decode(format!("batch answer lacks id '{}'", req.id)));
                };
                if r.is_retryable() {
                    if let Some(ra) = r.retry_after() {
                        longest = Some(longest.map_or(ra, |l| l.max(ra)));
                    }
                    if r.status == 429 {
                        if let Some(mb) = mailbox_of(&req.url) {
                            // Other requests to this mailbox wait too.
                            self.hold_mailbox(&mb, r.retry_after().unwrap_or(Duration::ZERO));
                        }
                    }
                    retry.push((req, r));
                } else {
                    out.push(BatchResponse { id: req.id.clone(), ..r });
                }
            }
            if retry.is_empty() {
                return Ok(out);
            }
            let wait = self.backoff(attempt, longest);
            if attempt >= policy.max_attempts || waited + wait > policy.max_total_wait {
                tracing::warn!(items = retry.len(), "batch items still throttled after the retry budget");
                out.extend(retry.into_iter().map(|(req, r)| BatchResponse { id: req.id, ..r }));
                return Ok(out);
            }
            tracing::debug!(items = retry.len(), wait_ms = wait.as_millis() as u64, "retrying throttled batch items");
            waited += wait;
            tokio::time::sleep(wait).await;
            pending = retry.into_iter().map(|(req, _)| req).collect();
        }
    }
}

fn parse_response(v: &Value) -> Result<BatchResponse, GraphError> {
    let id = match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(GraphError::Decode("batch response without id".into())),
    };
    let status = v
        .get("status")
        .and_then(Value::as_u64)
        .ok_or_else(|| GraphError::Decode(format!("batch response '{id}' without status")))? as u16;
    let headers = v
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.to_ascii_lowercase(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(BatchResponse { id, status, headers, body: v.get("body").cloned().unwrap_or(Value::Null) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_brings_a_content_type_header() {
        let w = BatchRequest::with_body("1", Method::POST, "/users/a/events", json!({"subject": "x"})).to_wire();
        assert_eq!(w["headers"]["Content-Type"], "application/json");
        let w = BatchRequest::get("2", "/users/a/events/e").to_wire();
        assert!(w.get("body").is_none());
        assert_eq!(
            w["headers"],
            json!({"Prefer": "IdType=\"ImmutableId\""}),
            "every inner request prefers immutable ids"
        );
    }

    #[test]
    fn inner_responses_keep_their_retry_after_whatever_the_header_case() {
        let r = parse_response(&json!({"id": "7", "status": 429, "headers": {"Retry-After": "1.25"}})).unwrap();
        assert!(r.is_retryable());
        assert_eq!(r.retry_after(), Some(Duration::from_millis(1250)));
        let r = parse_response(&json!({"id": 8, "status": 200, "body": {"id": "x"}})).unwrap();
        assert_eq!(r.id, "8");
        assert!(r.is_success() && !r.is_retryable());
    }
}
