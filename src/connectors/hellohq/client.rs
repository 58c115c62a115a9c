//! The helloHQ API client (reference/HELLOHQ.md A1–A15, C3–C7): one
//! `reqwest` client per instance, bearer auth, one retry policy (429 honours
//! `Retry-After` or waits for the next minute window; 502/503/504 and
//! timeouts back off with jitter; everything bounded), v2 paging through
//! `helloHQ-NextLink`, v1 OData paging, typed errors that keep the response
//! body for the journal, and full-replace writes done as read → change →
//! write. It owns HTTP to helloHQ only: it never logs, formats or returns the
//! token, never sends it to a host other than the configured one, and never
//! maps wire records to the canonical model.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::budget::RequestBudget;
use super::cache::TenantCache;
use super::wire::{
    fmt_utc, Absence, AddressV1, Company, CompanyPost, CompanyType, ConfigSystemEvent, ContactPerson, ContactPersonV1,
    LeadV1, Project, ProjectV1, Task, TaskAssignment, TaskAssignmentV1, User, PRIVATE_ADDRESS_DESCRIPTION,
};
use crate::model::capabilities::{HellohqCapabilities, HqSpelling};

/// How much of an error body is kept for the journal.
pub const MAX_ERROR_BODY: usize = 4096;
/// Page size default and maximum (A3).
pub const PAGE_SIZE: usize = 1000;
/// Longest `Retry-After` taken at face value; a larger one is capped so a
/// broken header cannot park a worker for hours (the budget still applies).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

const COUNT_HEADER: &str = "helloHQ-Count";
const NEXT_LINK_HEADER: &str = "helloHQ-NextLink";

/// Bounds on retrying one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests sent at most, the first included.
    pub max_attempts: u32,
    /// Sleep between attempts at most, summed; a wait that would exceed it
    /// is not started (the error is returned instead).
    pub max_total_wait: Duration,
    /// First back-off for 502/503/504 and timeouts; doubles per attempt.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            max_total_wait: Duration::from_secs(120),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How list options are spelled (A3): the guide writes `filter=`, the spec
/// `$filter=`; some endpoints honour only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuerySpelling {
    /// `filter`, `orderby`, `top`, `expand` (the guide's form; the default).
    #[default]
    Bare,
    /// `$filter`, `$orderby`, `$top`, `$expand`.
    Dollar,
}

impl QuerySpelling {
    fn key(self, name: &str) -> String {
        match self {
            QuerySpelling::Bare => name.to_string(),
            QuerySpelling::Dollar => format!("${name}"),
        }
    }
}

/// Everything a client needs; built from the tenant's `hellohq` settings.
#[derive(Clone)]
pub struct HellohqClientConfig {
    /// `https://api.hellohq.io` (or the simulator, or a proxy).
    pub base_url: String,
    pub token: SecretString,
    /// Per request (connect + response).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Spelling of v2 list options unless overridden for an endpoint.
    pub spelling: QuerySpelling,
    /// Per endpoint path (`/v2/Projects/Tasks`), for instances that honour
    /// only the other spelling (Part B 14).
    pub spelling_overrides: BTreeMap<String, QuerySpelling>,
    /// Where to register a webhook endpoint, if anywhere (see
    /// [`HellohqClient::register_webhook`]).
    pub webhook_registration_url: Option<String>,
    /// `remote.allow_private_addresses`: when false (the default) every
    /// request refuses loopback, private, link-local… addresses (see
    /// [`crate::netguard`]); the simulator on 127.0.0.1 needs true.
    pub allow_private_addresses: bool,
    /// The tenant's request budget (shared by its clients in this process);
    /// `None`: unlimited (tests, tools).
    pub budget: Option<RequestBudget>,
    /// Read a task's participants and rooms from v2 `expand=resourceToTasks`
    /// (observed live, unpublished: only where the connection test found it
    /// honoured). Otherwise, the safe default, from the published
    /// `GET /v1/ProjectTasks({Id})/Assignments`.
    pub expand_assignments: bool,
    /// The tenant's cache of contact persons and rooms (shared by its
    /// clients in this process); `None`: a cache of this client's own.
    pub cache: Option<Arc<TenantCache>>,
}

impl HellohqClientConfig {
    /// These settings, following what the connection test found for the
    /// tenant (`caps`; the safe defaults when it never ran): each v2 list
    /// asked in the spelling it honours (the guide's bare one where
    /// undecided or either works), and participants read inline only where
    /// `expand=resourceToTasks` was found honoured.
    pub fn following(mut self, caps: &HellohqCapabilities) -> Self {
        self.spelling = QuerySpelling::Bare;
        self.spelling_overrides.clear();
        for (path, s) in &caps.spelling {
            if *s == HqSpelling::Dollar {
                self.spelling_overrides.insert(path.clone(), QuerySpelling::Dollar);
            }
        }
        self.expand_assignments = caps.expand_assignments;
        self
    }

    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        HellohqClientConfig {
            base_url: base_url.into(),
            token,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            spelling: QuerySpelling::Bare,
            spelling_overrides: BTreeMap::new(),
            webhook_registration_url: None,
            allow_private_addresses: false,
            budget: None,
            expand_assignments: false,
            cache: None,
        }
    }

    /// This configuration with the address guard switched off.
    pub fn allowing_private_addresses(self) -> Self {
        HellohqClientConfig { allow_private_addresses: true, ..self }
    }
}

impl fmt::Debug for HellohqClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HellohqClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &"***")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("spelling", &self.spelling)
            .field("spelling_overrides", &self.spelling_overrides)
            .field("webhook_registration_url", &self.webhook_registration_url)
            .field("budget", &self.budget.as_ref().map(RequestBudget::per_minute))
            .field("expand_assignments", &self.expand_assignments)
            .finish()
    }
}

/// A response body kept for the journal: at most [`MAX_ERROR_BODY`] bytes,
/// cut on a character boundary.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ErrorBody(String);

impl ErrorBody {
    pub fn new(raw: &[u8]) -> ErrorBody {
        let text = String::from_utf8_lossy(raw);
        if text.len() <= MAX_ERROR_BODY {
            return ErrorBody(text.into_owned());
        }
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ErrorBody(format!("{}…", &text[..end]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a helloHQ call failed. Every variant keeps what the server said.
#[derive(Debug, thiserror::Error)]
///
/// Display never shows the response body (callers, the CLI and the admin
/// API see status and kind only); [`HqError::body`] keeps it for the journal.
pub enum HqError {
    /// 401: the token is wrong, expired or revoked. Never retried.
    #[error("helloHQ refused the token (401)")]
    Unauthorized { body: ErrorBody },
    /// 404: the record does not exist (or is not visible to this token).
    #[error("helloHQ has no such record (404)")]
    NotFound { body: ErrorBody },
    /// Any other 4xx (400 validation, 403, 409…). Never retried.
    #[error("helloHQ rejected the request ({status})")]
    Validation { status: StatusCode, body: ErrorBody },
    /// 429 beyond the retry budget; `retry_after` is the server's last hint.
    #[error("helloHQ kept throttling after {attempts} attempts")]
    Throttled { attempts: u32, retry_after: Option<Duration>, body: ErrorBody },
    /// 5xx (after the retry budget for 502/503/504).
    #[error("helloHQ failed ({status})")]
    Server { status: StatusCode, body: ErrorBody },
    /// No usable response: connect failure, timeout, broken body.
    #[error("helloHQ unreachable: {message}")]
    Transport { message: String },
    /// A 2xx whose body is not what the API promises.
    #[error("unexpected helloHQ response: {message}")]
    Decode { message: String, body: ErrorBody },
    /// The client itself is misconfigured (bad base URL, bad TLS setup).
    #[error("helloHQ client configuration: {0}")]
    Config(String),
    /// The record changed since the caller read it (helloHQ has no ETags,
    /// B13: the `updatedOn` read just before the write differs): the
    /// caller's merge is stale and must be done again.
    #[error("helloHQ record {what} changed since it was read (updatedOn {expected} → {found})")]
    Stale { what: String, expected: String, found: String },
}

impl HqError {
    /// True when the same request may succeed later (queue retry), false
    /// when it needs a change first (token, data, code).
    pub fn is_transient(&self) -> bool {
        match self {
            HqError::Throttled { .. } | HqError::Transport { .. } => true,
            HqError::Server { .. } | HqError::Stale { .. } => true,
            HqError::Unauthorized { .. }
            | HqError::NotFound { .. }
            | HqError::Validation { .. }
            | HqError::Decode { .. }
            | HqError::Config(_) => false,
        }
    }

    /// The server's response body, if there was one (for the journal).
    pub fn body(&self) -> Option<&str> {
        match self {
            HqError::Unauthorized { body }
            | HqError::NotFound { body }
            | HqError::Validation { body, .. }
            | HqError::Throttled { body, .. }
            | HqError::Server { body, .. }
            | HqError::Decode { body, .. } => Some(body.as_str()),
            HqError::Transport { .. } | HqError::Config(_) | HqError::Stale { .. } => None,
        }
    }

    /// The error for a final (non-2xx) status.
    pub fn from_status(status: StatusCode, body: &[u8]) -> HqError {
        let body = ErrorBody::new(body);
        match status.as_u16() {
            401 => HqError::Unauthorized { body },
            404 => HqError::NotFound { body },
            429 => HqError::Throttled { attempts: 1, retry_after: None, body },
            400..=499 => HqError::Validation { status, body },
            _ => HqError::Server { status, body },
        }
    }
}

/// `Retry-After` as delay-seconds (fractions tolerated) or an HTTP-date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// The wait until the next minute window starts (A5: 1000 requests per
/// minute, no header named): never zero.
pub fn until_next_minute(now: DateTime<Utc>) -> Duration {
    let into = Duration::from_secs((now.timestamp().rem_euclid(60)) as u64)
        + Duration::from_nanos(u64::from(now.timestamp_subsec_nanos()));
    Duration::from_secs(60).saturating_sub(into).max(Duration::from_millis(1))
}

/// List options of one request; rendered in the endpoint's spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: Option<String>,
    pub orderby: Option<String>,
    pub expand: Option<String>,
}

impl ListQuery {
    pub fn filter(f: impl Into<String>) -> ListQuery {
        ListQuery { filter: Some(f.into()), ..Default::default() }
    }

    pub fn orderby(mut self, o: impl Into<String>) -> ListQuery {
        self.orderby = Some(o.into());
        self
    }

    pub fn expand(mut self, e: impl Into<String>) -> ListQuery {
        self.expand = Some(e.into());
        self
    }

    fn pairs(&self, spelling: QuerySpelling, top: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, v) in [("filter", &self.filter), ("orderby", &self.orderby), ("expand", &self.expand)] {
            if let Some(v) = v.as_deref().filter(|v| !v.trim().is_empty()) {
                out.push((spelling.key(name), v.to_string()));
            }
        }
        out.push((spelling.key("top"), top.to_string()));
        out
    }
}

/// Progress of a paged listing, after each page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageProgress {
    pub pages: usize,
    pub fetched: usize,
    /// `helloHQ-Count` (v2) or `@odata.count` (v1), when the server says.
    pub total: Option<u64>,
}

/// All items of a listing, with the server's count.
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub total: Option<u64>,
    pub pages: usize,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: Option<u64>,
    /// The next page, when the server says there is one.
    pub next: Option<Url>,
}

/// Characters sent verbatim in query values (RFC 3986 unreserved); the rest
/// is percent-encoded, spaces as `%20` (never `+`, which OData reads literally).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const QUERY_KEY: &AsciiSet = &QUERY_VALUE.remove(b'$');

/// A successful response.
struct Reply {
    headers: HeaderMap,
    body: Bytes,
}

/// The helloHQ API of one tenant. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct HellohqClient {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
    retry: RetryPolicy,
    spelling: QuerySpelling,
    spelling_overrides: BTreeMap<String, QuerySpelling>,
    webhook_registration: Option<Url>,
    allow_private: bool,
    budget: Option<RequestBudget>,
    expand_assignments: bool,
    cache: Arc<TenantCache>,
}

impl fmt::Debug for HellohqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HellohqClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// An OData key segment: `Name(123)`.
fn v1_key(set: &str, id: i32) -> String {
    format!("/v1/{set}({id})")
}

/// B13: helloHQ has no ETags; a record whose `updatedOn` moved since the
/// caller's read has been changed by someone else meanwhile.
fn stale_check(
    what: &str,
    id: i32,
    expected: Option<DateTime<Utc>>,
    found: Option<DateTime<Utc>>,
) -> Result<(), HqError> {
    match (expected, found) {
        (Some(exp), Some(now)) if now != exp => {
            Err(HqError::Stale { what: format!("{what} {id}"), expected: fmt_utc(exp), found: fmt_utc(now) })
        }
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HqError> {
    // serde's message may quote the answer; callers get the kind and position only.
    serde_json::from_slice(bytes).map_err(|e| HqError::Decode {
        message: format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()),
        body: ErrorBody::new(bytes),
    })
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, HqError> {
    serde_json::to_value(v)
        .map_err(|e| HqError::Decode { message: format!("cannot encode: {e}"), body: ErrorBody::default() })
}

/// Removes what the server owns from a body we send (ids and audit stamps).
fn strip_server_fields(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        for k in ["id", "createdOn", "createdBy", "updatedOn", "updatedBy", "@odata.context"] {
            o.remove(k);
        }
    }
}

impl HellohqClient {
    pub fn new(cfg: HellohqClientConfig) -> Result<HellohqClient, HqError> {
        let base = Url::parse(cfg.base_url.trim())
            .map_err(|e| HqError::Config(format!("hellohq base_url {:?}: {e}", cfg.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(HqError::Config(format!("hellohq base_url {:?} must be an http(s) URL", cfg.base_url)));
        }
        let webhook_registration = match cfg.webhook_registration_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => Some(Url::parse(u).map_err(|e| HqError::Config(format!("webhook_registration_url: {e}")))?),
        };
        let http = crate::netguard::client_builder(cfg.allow_private_addresses)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            // A redirect would carry the bearer token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hqsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HqError::Config(e.to_string()))?;
        Ok(HellohqClient {
            http,
            base,
            token: cfg.token,
            retry: cfg.retry,
            spelling: cfg.spelling,
            spelling_overrides: cfg.spelling_overrides,
            webhook_registration,
            allow_private: cfg.allow_private_addresses,
            budget: cfg.budget,
            expand_assignments: cfg.expand_assignments,
            cache: cfg.cache.unwrap_or_default(),
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub fn spelling_for(&self, path: &str) -> QuerySpelling {
        if path.starts_with("/v1/") {
            return QuerySpelling::Dollar;
        }
        self.spelling_overrides.get(path).copied().unwrap_or(self.spelling)
    }

    /// `base` + `path` (keeping any path prefix of the base, for proxies) + query.
    fn url(&self, path: &str, query: &[(String, String)]) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", utf8_percent_encode(k, QUERY_KEY), utf8_percent_encode(v, QUERY_VALUE)))
            .collect();
        url.set_query((!q.is_empty()).then(|| q.join("&")).as_deref());
        url
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// A next-page link: used as given on our own host; a link naming
    /// another host (a proxy in front of helloHQ) is re-based on ours so
    /// the token never leaves the configured host.
    fn follow(&self, link: &str) -> Result<Url, HqError> {
        let url = Url::parse(link.trim()).or_else(|_| self.base.join(link.trim())).map_err(|e| HqError::Decode {
            message: format!("next link is not a URL: {e}"),
            body: ErrorBody::new(link.as_bytes()),
        })?;
        if self.same_origin(&url) {
            return Ok(url);
        }
        let mut rebased = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        if url.path().starts_with(prefix) {
            rebased.set_path(url.path());
        } else {
            rebased.set_path(&format!("{prefix}{}", url.path()));
        }
        rebased.set_query(url.query());
        Ok(rebased)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.backoff_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.retry.backoff_max);
        // "Equal jitter": at least half the step, so retries still spread out.
        let half = cap / 2;
        half + Duration::from_millis(rand::thread_rng().gen_range(0..=half.as_millis().max(1) as u64))
    }

    /// Sends one request under the retry policy. A POST (a create, or an
    /// action) is resent only when helloHQ cannot have acted on it: after a
    /// 429 or a failed connect. After a gateway error or a timeout it may
    /// have been applied, so the error goes back to the caller, whose
    /// re-read decides (a blind resend could create the record twice).
    async fn execute(&self, method: Method, url: Url, body: Option<Bytes>, auth: bool) -> Result<Reply, HqError> {
        crate::netguard::check_url(&url, self.allow_private).map_err(|r| HqError::Config(r.to_string()))?;
        let resend_unsure = method != Method::POST;
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            if let Some(b) = &self.budget {
                b.acquire().await;
            }
            let mut rb = self.http.request(method.clone(), url.clone()).header(ACCEPT, "application/json");
            if auth {
                rb = rb.bearer_auth(self.token.expose_secret());
            }
            if let Some(b) = &body {
                rb = rb.header(CONTENT_TYPE, "application/json").body(b.clone());
            }
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let (status, headers) = (resp.status(), resp.headers().clone());
                    resp.bytes().await.map(|b| (status, headers, b))
                }
                Err(e) => Err(e),
            };
            let (wait, err) = match outcome {
                Ok((status, headers, bytes)) => {
                    if status.is_success() {
                        return Ok(Reply { headers, body: bytes });
                    }
                    match status.as_u16() {
                        429 => {
                            let hint = headers
                                .get(RETRY_AFTER)
                                .and_then(|h| h.to_str().ok())
                                .and_then(|h| parse_retry_after(h, Utc::now()));
                            let wait = hint.unwrap_or_else(|| until_next_minute(Utc::now()));
                            // A little extra so a crowd of clients does not return at one instant.
                            let wait = wait + Duration::from_millis(rand::thread_rng().gen_range(0..=100));
                            metrics::counter!("hqsync_hellohq_retries_total", "reason" => "throttled").increment(1);
                            let body = ErrorBody::new(&bytes);
                            (wait, HqError::Throttled { attempts: attempt, retry_after: Some(wait), body })
                        }
                        502..=504 if resend_unsure => {
                            metrics::counter!("hqsync_hellohq_retries_total", "reason" => "server").increment(1);
                            (self.backoff(attempt), HqError::from_status(status, &bytes))
                        }
                        _ => return Err(HqError::from_status(status, &bytes)),
                    }
                }
                Err(e) if e.is_connect() && crate::netguard::refusal_in(&e).is_some() => {
                    let r = crate::netguard::refusal_in(&e).map(|r| r.to_string()).unwrap_or_default();
                    return Err(HqError::Config(r));
                }
                Err(e) if e.is_connect() || (e.is_timeout() && resend_unsure) => {
                    metrics::counter!("hqsync_hellohq_retries_total", "reason" => "transport").increment(1);
                    (self.backoff(attempt), HqError::Transport { message: e.to_string() })
                }
                Err(e) => return Err(HqError::Transport { message: e.to_string() }),
            };
            if attempt >= self.retry.max_attempts || waited + wait > self.retry.max_total_wait {
                tracing::warn!(%method, path = url.path(), attempt, error = %err, "helloHQ request gave up");
                return Err(err);
            }
            tracing::debug!(%method, path = url.path(), attempt, wait_ms = wait.as_millis() as u64,
                "helloHQ request will be retried");
            tokio::time::sleep(wait).await;
            waited += wait;
        }
    }

    async fn send_json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Reply, HqError> {
        let bytes = body.map(|b| Bytes::from(serde_json::to_vec(b).expect("a JSON value always serialises")));
        self.execute(method, self.url(path, query), bytes, true).await
    }

    /// `GET path?query` decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(String, String)]) -> Result<T, HqError> {
        let r = self.send_json(Method::GET, path, query, None).await?;
        decode(&r.body)
    }

    /// `POST`/`PUT` a JSON body; the answer decoded as `T` (A5: any 2xx).
    pub async fn write<T: DeserializeOwned>(&self, method: Method, path: &str, body: &Value) -> Result<T, HqError> {
        let r = self.send_json(method, path, &[], Some(body)).await?;
        decode(&r.body)
    }

    /// `DELETE path`: any 2xx, empty body or not (A5, B8).
    pub async fn delete(&self, path: &str) -> Result<(), HqError> {
        self.send_json(Method::DELETE, path, &[], None).await.map(|_| ())
    }

    fn expand_query(&self, path: &str, expand: &str) -> Vec<(String, String)> {
        vec![(self.spelling_for(path).key("expand"), expand.to_string())]
    }

    // ---- paging ------------------------------------------------------------

    /// One page at `url`, in the v2 (bare array + headers) or v1 (OData
    /// envelope) form, with the URL of the next page if the server names one.
    async fn fetch_page<T: DeserializeOwned>(&self, url: Url, v1: bool) -> Result<Page<T>, HqError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            value: Vec<T>,
            #[serde(rename = "@odata.nextLink", default)]
            next: Option<String>,
            #[serde(rename = "@odata.count", default)]
            count: Option<u64>,
        }
        let reply = self.execute(Method::GET, url, None, true).await?;
        let (items, total, next) = if v1 {
            let e: Envelope<T> = decode(&reply.body)?;
            (e.value, e.count, e.next.unwrap_or_default())
        } else {
            let header = |name: &str| reply.headers.get(name).and_then(|h| h.to_str().ok()).map(str::trim);
            let total = header(COUNT_HEADER).and_then(|c| c.parse::<u64>().ok());
            let next = header(NEXT_LINK_HEADER).unwrap_or("").to_string();
            (decode(&reply.body)?, total, next)
        };
        let next = match next.trim() {
            "" => None,
            link => Some(self.follow(link)?),
        };
        Ok(Page { items, total, next })
    }

    /// The same list `url` with `top`/`skip` (in the endpoint's spelling)
    /// set to read from item `skip` on: the help centre's paging
    /// (`$top=1000&$skip=n*1000`, A3) for servers that send no next link.
    fn skip_url(&self, url: &Url, skip: usize) -> Url {
        let prefix = self.base.path().trim_end_matches('/');
        let path = url.path().strip_prefix(prefix).unwrap_or(url.path()).to_string();
        let spelling = self.spelling_for(&path);
        let is_paging = |k: &str| {
            let k = k.trim_start_matches('$');
            k.eq_ignore_ascii_case("top") || k.eq_ignore_ascii_case("skip")
        };
        let mut pairs: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| !is_paging(k)).collect();
        pairs.push((spelling.key("top"), PAGE_SIZE.to_string()));
        pairs.push((spelling.key("skip"), skip.to_string()));
        self.url(&path, &pairs)
    }

    /// Follows next links from `url` to the end; where a full page comes
    /// without one, continues with `skip` (A3, issue 18 item 5). A server
    /// that ignores `skip` (the same page again) is an error, never a loop.
    async fn collect<T: DeserializeOwned>(
        &self,
        mut url: Url,
        v1: bool,
        progress: &mut (dyn FnMut(PageProgress) + Send),
    ) -> Result<Listing<T>, HqError> {
        let mut seen = HashSet::new();
        let mut items: Vec<T> = Vec::new();
        let mut total = None;
        let mut pages = 0;
        let mut last_first: Option<Value> = None;
        loop {
            seen.insert(url.to_string());
            let page: Page<Value> = self.fetch_page(url.clone(), v1).await?;
            pages += 1;
            let full = page.items.len() >= PAGE_SIZE;
            let got = page.items.len();
            let first = page.items.first().cloned();
            if pages > 1 && first.is_some() && first == last_first {
                return Err(HqError::Decode {
                    message: "the next page repeats the page before it (skip not honoured)".into(),
                    body: ErrorBody::new(url.as_str().as_bytes()),
                });
            }
            last_first = first;
            for v in page.items {
                items.push(serde_json::from_value(v).map_err(|e| HqError::Decode {
                    message: e.to_string(),
                    body: ErrorBody::new(url.as_str().as_bytes()),
                })?);
            }
            total = page.total.or(total);
            progress(PageProgress { pages, fetched: items.len(), total });
            let next = match page.next {
                Some(next) => next,
                // A full page, or one shorter than the count says the list
                // is (a server that ignored `top` in this spelling and cut
                // at its own page size): continue with `skip`. A server
                // that ignores that too answers the same page again, which
                // is an error above, never a silently cut list.
                None if (full && total.is_none_or(|t| (items.len() as u64) < t))
                    || (!full && got > 0 && total.is_some_and(|t| (items.len() as u64) < t)) =>
                {
                    metrics::counter!("hqsync_hellohq_skip_pages_total").increment(1);
                    self.skip_url(&url, items.len())
                }
                None => break,
            };
            if seen.contains(next.as_str()) {
                return Err(HqError::Decode {
                    message: "the next link repeats a page already read".into(),
                    body: ErrorBody::new(next.as_str().as_bytes()),
                });
            }
            url = next;
        }
        Ok(Listing { items, total, pages })
    }

    /// One page of `path` asked with exactly `query` (no paging options
    /// added, no spelling applied): the connection test's probes compare
    /// what the server does with each spelling.
    pub async fn probe_page(&self, path: &str, query: &[(String, String)]) -> Result<Page<Value>, HqError> {
        self.fetch_page(self.url(path, query), path.starts_with("/v1/")).await
    }

    fn list_url(&self, path: &str, query: &ListQuery) -> (Url, bool) {
        let v1 = path.starts_with("/v1/");
        (self.url(path, &query.pairs(self.spelling_for(path), PAGE_SIZE)), v1)
    }

    /// Every item of a v2 list (A3): `top=1000`, then `helloHQ-NextLink`
    /// until it is empty.
    pub async fn list_v2<T: DeserializeOwned>(&self, path: &str, query: &ListQuery) -> Result<Listing<T>, HqError> {
        self.list_v2_with(path, query, |_| {}).await
    }

    /// As [`Self::list_v2`], reporting progress after each page.
    pub async fn list_v2_with<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &ListQuery,
        mut progress: impl FnMut(PageProgress) + Send,
    ) -> Result<Listing<T>, HqError> {
        let (url, _) = self.list_url(path, query);
        self.collect(url, false, &mut progress).await
    }

    /// Every item of a v1 OData collection (A3): `$top=1000`, then
    /// `@odata.nextLink` until absent.
    pub async fn list_v1<T: DeserializeOwned>(&self, path: &str, query: &ListQuery) -> Result<Listing<T>, HqError> {
        let (url, _) = self.list_url(path, query);
        self.collect(url, true, &mut |_| {}).await
    }

    /// The pages from `next` (a [`Page::next`]) to the end.
    pub async fn rest<T: DeserializeOwned>(&self, next: Url) -> Result<Listing<T>, HqError> {
        let v1 = next.path().contains("/v1/");
        self.collect(next, v1, &mut |_| {}).await
    }

    /// Only the first page of a list (v1 or v2 by the path), and whether
    /// the server has more. For keyset reads that must not page with `skip`
    /// over a set that changes while it is read (see `poll`).
    pub async fn first_page<T: DeserializeOwned>(&self, path: &str, query: &ListQuery) -> Result<Page<T>, HqError> {
        let (url, v1) = self.list_url(path, query);
        let page: Page<Value> = self.fetch_page(url.clone(), v1).await?;
        // A full page without a next link: there may be more (read with `skip`).
        let next = match page.next {
            Some(n) => Some(n),
            None if page.items.len() >= PAGE_SIZE && page.total.is_none_or(|t| t > PAGE_SIZE as u64) => {
                Some(self.skip_url(&url, page.items.len()))
            }
            None => None,
        };
        let items =
            page.items.into_iter().map(serde_json::from_value).collect::<Result<Vec<T>, _>>().map_err(|e| {
                HqError::Decode { message: e.to_string(), body: ErrorBody::new(url.as_str().as_bytes()) }
            })?;
        Ok(Page { items, total: page.total, next })
    }

    // ---- users -------------------------------------------------------------

    pub async fn get_user(&self, id: i32) -> Result<User, HqError> {
        self.get(&format!("/v2/Users/{id}"), &[]).await
    }

    pub async fn list_users(&self) -> Result<Vec<User>, HqError> {
        Ok(self.list_v2("/v2/Users", &ListQuery::default()).await?.items)
    }

    // ---- companies ---------------------------------------------------------

    pub async fn get_company(&self, id: i32) -> Result<Company, HqError> {
        self.get(&format!("/v2/Companies/{id}"), &[]).await
    }

    pub async fn create_company(&self, company: &CompanyPost) -> Result<Company, HqError> {
        self.write(Method::POST, "/v2/Companies", &to_value(company)?).await
    }

    /// Full replace (`CompanyPut`) after reading the current record; types and
    /// responsible users cannot change this way (A11).
    pub async fn update_company(&self, id: i32, change: impl FnOnce(&mut Company)) -> Result<Company, HqError> {
        let path = format!("/v2/Companies/{id}");
        let mut current: Company = self.get(&path, &[]).await?;
        change(&mut current);
        self.write(Method::PUT, &path, &to_value(&current)?).await
    }

    pub async fn delete_company(&self, id: i32) -> Result<(), HqError> {
        self.delete(&format!("/v2/Companies/{id}")).await
    }

    // ---- contact persons ---------------------------------------------------

    pub async fn get_contact_person(&self, id: i32) -> Result<ContactPerson, HqError> {
        let r: Result<ContactPerson, HqError> = self.get(&format!("/v2/ContactPersons/{id}"), &[]).await;
        match &r {
            Ok(c) => self.cache.put_contact(c),
            Err(HqError::NotFound { .. }) => self.cache.remove_contact(id),
            Err(_) => {}
        }
        r
    }

    /// Every contact person: listed once per process and tenant, then kept
    /// current from each read and write of one (the change poll's hints read
    /// every changed contact), instead of re-listed per hint (issue 18 item 7).
    pub async fn contact_persons(&self) -> Result<Vec<ContactPerson>, HqError> {
        if let Some(list) = self.cache.contacts() {
            return Ok(list);
        }
        let list: Vec<ContactPerson> = self.list_v2("/v2/ContactPersons", &ListQuery::default()).await?.items;
        self.cache.set_contacts(&list);
        Ok(list)
    }

    /// The rooms seen in task assignments (C5: no endpoint lists them).
    pub fn known_rooms(&self) -> Vec<super::wire::Resource> {
        self.cache.rooms()
    }

    /// The tenant's cache (for the engine's invalidation on a full pass).
    pub fn cache(&self) -> &TenantCache {
        &self.cache
    }

    /// v1 view with every address (C3): where the private address lives.
    pub async fn get_contact_person_v1(&self, id: i32) -> Result<ContactPersonV1, HqError> {
        self.get(&v1_key("ContactPersons", id), &[("$expand".into(), "Addresses".into())]).await
    }

    /// The `ContactPersonPut` body: the record as read and changed, without
    /// `companyId` (A10), with everything we do not model kept.
    fn contact_put_body(c: &ContactPerson) -> Result<Value, HqError> {
        let mut v = to_value(c)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("companyId");
        }
        Ok(v)
    }

    /// Creates a contact person. helloHQ refuses phones together with the
    /// default address in one create (A10), so such a record is created
    /// without phones and then completed by a full replace.
    pub async fn create_contact_person(&self, contact: &ContactPerson) -> Result<ContactPerson, HqError> {
        let has_phone = [&contact.phone_landline, &contact.phone_mobile]
            .iter()
            .any(|p| p.as_deref().is_some_and(|p| !p.trim().is_empty()));
        let split = has_phone && contact.default_address.is_some();
        let mut first = contact.clone();
        if split {
            first.phone_landline = None;
            first.phone_mobile = None;
        }
        let mut body = to_value(&first)?;
        strip_server_fields(&mut body);
        let created: ContactPerson = self.write(Method::POST, "/v2/ContactPersons", &body).await?;
        self.cache.put_contact(&created);
        if !split {
            return Ok(created);
        }
        let (landline, mobile) = (contact.phone_landline.clone(), contact.phone_mobile.clone());
        self.update_contact_person(created.id, move |c| {
            c.phone_landline = landline;
            c.phone_mobile = mobile;
        })
        .await
    }

    /// Read, apply `change`, write the whole record back (v2 full replace),
    /// and return what helloHQ stored.
    pub async fn update_contact_person(
        &self,
        id: i32,
        change: impl FnOnce(&mut ContactPerson),
    ) -> Result<ContactPerson, HqError> {
        let path = format!("/v2/ContactPersons/{id}");
        let mut current: ContactPerson = self.get(&path, &[]).await?;
        change(&mut current);
        let stored: ContactPerson = self.write(Method::PUT, &path, &Self::contact_put_body(&current)?).await?;
        self.cache.put_contact(&stored);
        Ok(stored)
    }

    /// As [`Self::update_contact_person`], but only if the record is still
    /// the version the caller merged against (B13: no ETags, so `updatedOn`
    /// read just before the write is compared with `expected`; `None`
    /// skips the check). A mismatch writes nothing and is [`HqError::Stale`].
    pub async fn update_contact_person_if(
        &self,
        id: i32,
        expected: Option<DateTime<Utc>>,
        change: impl FnOnce(&mut ContactPerson),
    ) -> Result<ContactPerson, HqError> {
        let path = format!("/v2/ContactPersons/{id}");
        let mut current: ContactPerson = self.get(&path, &[]).await?;
        stale_check("contactPerson", id, expected, current.updated_on)?;
        change(&mut current);
        let stored: ContactPerson = self.write(Method::PUT, &path, &Self::contact_put_body(&current)?).await?;
        self.cache.put_contact(&stored);
        Ok(stored)
    }

    /// Sets (or with `None` removes) the contact's private address through
    /// v1 (C7): the other non-default addresses are sent back as read; the
    /// entry is always described exactly `Privat`.
    pub async fn set_private_address(&self, id: i32, private: Option<AddressV1>) -> Result<ContactPersonV1, HqError> {
        let current = self.get_contact_person_v1(id).await?;
        let existing_id = current.private_address().and_then(|a| a.id);
        let mut list: Vec<AddressV1> = current.other_addresses().into_iter().filter(|a| !a.is_private()).collect();
        if let Some(mut a) = private {
            a.description = Some(PRIVATE_ADDRESS_DESCRIPTION.to_string());
            a.is_standard = Some(false);
            a.id = a.id.or(existing_id);
            list.push(a);
        }
        let mut body = to_value(&current)?;
        if let Some(o) = body.as_object_mut() {
            o.remove("@odata.context");
            o.remove("DefaultAddress");
            o.insert("Addresses".into(), to_value(&list)?);
        }
        self.write(Method::PUT, &v1_key("ContactPersons", id), &body).await
    }

    pub async fn delete_contact_person(&self, id: i32) -> Result<(), HqError> {
        self.delete(&format!("/v2/ContactPersons/{id}")).await?;
        self.cache.remove_contact(id);
        Ok(())
    }

    // ---- projects, leads ---------------------------------------------------

    pub async fn get_project(&self, id: i32) -> Result<Project, HqError> {
        let path = format!("/v2/Projects/{id}");
        self.get(&path, &self.expand_query(&path, "projectMembers")).await
    }

    /// v1 view with members and linked contact persons (A12).
    pub async fn get_project_v1(&self, id: i32) -> Result<ProjectV1, HqError> {
        self.get(&v1_key("Projects", id), &[("$expand".into(), "Members,ContactPersons".into())]).await
    }

    pub async fn get_lead(&self, id: i32) -> Result<LeadV1, HqError> {
        self.get(&v1_key("Leads", id), &[("$expand".into(), "ContactPersons".into())]).await
    }

    // ---- tasks and appointments (C4, C5; docs/hellohq-api.md) ----------------

    /// One task with its assignments (C5). The row comes from the observed
    /// v2 list filtered by id (it alone has `type`, `place`, `iCalUId`,
    /// `recurrencyStorage`, `isPriority`); the participants and rooms from the
    /// published `GET /v1/ProjectTasks({Id})/Assignments`, or from v2
    /// `expand=resourceToTasks` where the connection test found it honoured.
    ///
    /// Not found only when the published `GET /v1/ProjectTasks({Id})` says so
    /// too: a list that hides a row (a filter spelled the way the endpoint
    /// ignores, a v2 view narrower than v1) is an error, never a deletion.
    pub async fn get_task(&self, id: i32) -> Result<Task, HqError> {
        const PATH: &str = "/v2/Projects/Tasks";
        let mut q = ListQuery::filter(format!("id eq {id}"));
        if self.expand_assignments {
            q = q.expand("resourceToTasks");
        }
        let page: Page<Task> = self.first_page(PATH, &q).await?;
        let listed = page.items.len();
        let Some(mut task) = page.items.into_iter().find(|t| t.id == id) else {
            return match self.get::<Value>(&v1_key("ProjectTasks", id), &[]).await {
                Err(e) => Err(e),
                Ok(_) => Err(HqError::Decode {
                    message: format!(
                        "GET {PATH} filtered by id {id} listed {listed} other rows but not task {id}, which v1 has: \
                         the filter spelling is not honoured (run the connection test)"
                    ),
                    body: ErrorBody::default(),
                }),
            };
        };
        if !self.expand_assignments || task.resource_to_tasks.is_none() {
            task.resource_to_tasks =
                Some(self.task_assignments(id).await?.iter().map(TaskAssignmentV1::to_v2).collect());
        }
        for r in task.resource_to_tasks.iter().flatten().filter_map(|a| a.resource.as_ref()) {
            self.cache.put_room(r);
        }
        Ok(task)
    }

    /// Every task row matching `query` on the observed `GET /v2/Projects/Tasks`,
    /// each with its assignments: from `expand=resourceToTasks` where the
    /// connection test found it honoured, otherwise (the safe default) from
    /// the published v1 assignments of each row. A row is never handed out
    /// without its assignments: read as empty they would remove every
    /// attendee in Exchange (and mail cancellations).
    pub async fn list_tasks(&self, query: &ListQuery) -> Result<Vec<Task>, HqError> {
        let mut q = query.clone();
        q.expand = self.expand_assignments.then(|| "resourceToTasks".to_string());
        let listed: Vec<Task> = self.list_v2("/v2/Projects/Tasks", &q).await?.items;
        let mut rows = Vec::with_capacity(listed.len());
        for mut row in listed {
            if row.resource_to_tasks.is_none() {
                match self.task_assignments(row.id).await {
                    Ok(list) => row.resource_to_tasks = Some(list.iter().map(TaskAssignmentV1::to_v2).collect()),
                    // Deleted since the list was read: not listed.
                    Err(HqError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            for r in row.resource_to_tasks.iter().flatten().filter_map(|a| a.resource.as_ref()) {
                self.cache.put_room(r);
            }
            rows.push(row);
        }
        Ok(rows)
    }

    /// `GET /v1/ProjectTasks({Id})/Assignments` (published v1; the spec
    /// answers a bare array, an OData envelope is read as well).
    pub async fn task_assignments(&self, id: i32) -> Result<Vec<TaskAssignmentV1>, HqError> {
        let path = format!("{}/Assignments", v1_key("ProjectTasks", id));
        let v: Value = self.get(&path, &[("$expand".into(), "Resource".into())]).await?;
        let list = match v {
            Value::Array(a) => Value::Array(a),
            Value::Object(mut o) => o.remove("value").unwrap_or(Value::Array(Vec::new())),
            other => {
                return Err(HqError::Decode {
                    message: "assignments are not a list".into(),
                    body: ErrorBody::new(other.to_string().as_bytes()),
                })
            }
        };
        serde_json::from_value(list).map_err(|e| HqError::Decode { message: e.to_string(), body: ErrorBody::default() })
    }

    /// The v2 body of a task write: no server fields, no assignments (they
    /// are written through v1, C5) and nothing outside every spec
    /// (`originalStartOn`, issue 18).
    fn task_body(t: &Task) -> Result<Value, HqError> {
        let mut t = t.clone();
        t.resource_to_tasks = None;
        t.original_start_on = None;
        let mut v = to_value(&t)?;
        strip_server_fields(&mut v);
        if let Some(o) = v.as_object_mut() {
            o.remove("originalStartOn");
            o.remove("resourceToTasks");
        }
        Ok(v)
    }

    fn project_of(t: &Task) -> Result<i32, HqError> {
        t.project_id.filter(|p| *p > 0).ok_or_else(|| {
            HqError::Config(format!(
                "helloHQ task {} has no project; a task needs a valid project (v1 POST /v1/ProjectTasks)",
                t.id
            ))
        })
    }

    /// Brings the task's assignments to `wanted` through v1: removes those
    /// not wanted, adds the missing ones. Contact-person assignments have no
    /// v1 form: they are neither added nor removed here.
    async fn write_assignments(&self, id: i32, wanted: &[TaskAssignment]) -> Result<(), HqError> {
        let key = |u: Option<i32>, r: Option<i32>| (u, r);
        let current = self.task_assignments(id).await?;
        let mut want: Vec<(Option<i32>, Option<i32>)> = wanted
            .iter()
            .filter(|a| a.contact_person_id.is_none() && (a.user_id.is_some() || a.resource_id.is_some()))
            .map(|a| key(a.user_id, a.resource_id))
            .collect();
        for a in &current {
            let k = key(a.user_id, a.resource_id);
            if let Some(pos) = want.iter().position(|w| *w == k) {
                want.remove(pos);
            } else if let Some(aid) = a.id {
                let path = format!("{}/Assignments({aid})", v1_key("ProjectTasks", id));
                match self.delete(&path).await {
                    Ok(()) | Err(HqError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let path = format!("{}/Assignments", v1_key("ProjectTasks", id));
        for (user, resource) in want {
            let body =
                TaskAssignmentV1 { task_id: Some(id), user_id: user, resource_id: resource, ..Default::default() };
            let _: Value = self.write(Method::POST, &path, &to_value(&body)?).await?;
        }
        Ok(())
    }

    /// Creates a task in its project (`POST /v2/Projects/{projectId}/Tasks`,
    /// observed live), then its assignments (v1), and returns it as stored.
    /// A task without a project is refused before any request (v1: "requires
    /// a valid project id").
    pub async fn create_task(&self, task: &Task) -> Result<Task, HqError> {
        let project = Self::project_of(task)?;
        let body = Self::task_body(task)?;
        let created: Task = self.write(Method::POST, &format!("/v2/Projects/{project}/Tasks"), &body).await?;
        if let Some(wanted) = &task.resource_to_tasks {
            self.write_assignments(created.id, wanted).await?;
        }
        self.get_task(created.id).await
    }

    /// Read (with assignments), apply `change`, write the whole task back,
    /// return what helloHQ stored.
    pub async fn update_task(&self, id: i32, change: impl FnOnce(&mut Task)) -> Result<Task, HqError> {
        self.update_task_if(id, None, change).await
    }

    /// As [`Self::update_task`], but only if the row is still the version the
    /// caller merged against (B13: `updatedOn` compared; `None` skips the
    /// check). A mismatch writes nothing and is [`HqError::Stale`].
    /// The row goes to `PUT /v2/Projects/{projectId}/Tasks/{taskId}` (observed
    /// live), changed assignments to v1 (C5).
    pub async fn update_task_if(
        &self,
        id: i32,
        expected: Option<DateTime<Utc>>,
        change: impl FnOnce(&mut Task),
    ) -> Result<Task, HqError> {
        let current = self.get_task(id).await?;
        stale_check("task", id, expected, current.updated_on)?;
        let project = Self::project_of(&current)?;
        let mut next = current.clone();
        change(&mut next);
        let mut row_now = next.clone();
        row_now.resource_to_tasks = current.resource_to_tasks.clone();
        if Self::task_body(&row_now)? != Self::task_body(&current)? {
            let _: Value = self
                .write(Method::PUT, &format!("/v2/Projects/{project}/Tasks/{id}"), &Self::task_body(&next)?)
                .await?;
        }
        let keys = |l: &Option<Vec<TaskAssignment>>| {
            let mut k: Vec<_> = l.iter().flatten().map(|a| (a.user_id, a.resource_id, a.contact_person_id)).collect();
            k.sort();
            k
        };
        if keys(&next.resource_to_tasks) != keys(&current.resource_to_tasks) {
            self.write_assignments(id, next.resource_to_tasks.as_deref().unwrap_or_default()).await?;
        }
        self.get_task(id).await
    }

    /// `DELETE /v1/ProjectTasks({Id})` (published v1).
    pub async fn delete_task(&self, id: i32) -> Result<(), HqError> {
        self.delete(&v1_key("ProjectTasks", id)).await
    }

    // ---- absences, company types --------------------------------------------

    pub async fn get_absence(&self, id: i32) -> Result<Absence, HqError> {
        self.get(&format!("/v2/Absences/{id}"), &[]).await
    }

    /// The tenant's company types (A11: match "Interessent" by name; ids differ per system).
    pub async fn list_company_types(&self) -> Result<Vec<CompanyType>, HqError> {
        Ok(self.list_v2("/v2/CompanyTypes", &ListQuery::default()).await?.items)
    }

    // ---- deletions log (A15) -----------------------------------------------

    /// The events of `do.GetDeleted()` recorded after `since` (all when
    /// `None`): asked with `$filter=CreatedOn gt …` and filtered again here,
    /// since whether the log honours the filter is undocumented (B11; the
    /// connection test probes it).
    pub async fn list_deleted(&self, since: Option<DateTime<Utc>>) -> Result<Vec<ConfigSystemEvent>, HqError> {
        let q = match since {
            Some(t) => ListQuery::filter(format!("CreatedOn gt {}", fmt_utc(t))).orderby("CreatedOn"),
            None => ListQuery::default(),
        };
        let items = self.list_v1("/v1/ConfigSystemEvents/do.GetDeleted()", &q).await?.items;
        Ok(items
            .into_iter()
            .filter(|e: &ConfigSystemEvent| since.is_none_or(|s| e.created_on.is_none_or(|c| c > s)))
            .collect())
    }

    // ---- webhook registration ----------------------------------------------

    /// Registers `target` (hqsync's webhook URL for this tenant) to receive
    /// Standard Webhooks signed with `secret` (C2), at the configured
    /// registration URL; `Ok(None)` when none is configured.
    ///
    /// The real helloHQ has no public webhook registration (A15, Part B 4):
    /// this is the contract path, spoken by the simulator's
    /// `POST /_sim/webhooks {url, secret}` and by whatever component a
    /// customer runs on the helloHQ side. Polling stays the safety net.
    /// The token goes only to a registration URL on the API host; the
    /// response is not kept in errors (it echoes the secret).
    pub async fn register_webhook(&self, target: &str, secret: &SecretString) -> Result<Option<String>, HqError> {
        let Some(url) = self.webhook_registration.clone() else { return Ok(None) };
        let body = json!({"url": target, "secret": secret.expose_secret()});
        let bytes = Bytes::from(body.to_string());
        let auth = self.same_origin(&url);
        let reply = self.execute(Method::POST, url, Some(bytes), auth).await.map_err(|e| match e {
            HqError::Validation { status, .. } => HqError::Validation { status, body: ErrorBody::default() },
            other => other,
        })?;
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let id = v.get("id").and_then(Value::as_str).map(str::to_string);
        Ok(Some(id.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 4, h, m, s).unwrap() + chrono::Duration::milliseconds(ms.into())
    }

    #[test]
    fn retry_after_reads_seconds_fractions_and_http_dates() {
        let now = at(8, 0, 0, 0);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Mon, 04 May 2026 08:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Mon, 04 May 2026 07:59:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn without_retry_after_the_wait_ends_at_the_next_minute() {
        assert_eq!(until_next_minute(at(8, 0, 45, 0)), Duration::from_secs(15));
        assert_eq!(until_next_minute(at(8, 0, 59, 500)), Duration::from_millis(500));
        assert_eq!(until_next_minute(at(8, 1, 0, 0)), Duration::from_secs(60));
    }

    #[test]
    fn statuses_map_to_error_kinds_and_transience() {
        let e = |s: u16| HqError::from_status(StatusCode::from_u16(s).unwrap(), b"{\"title\":\"x\"}");
        assert!(matches!(e(401), HqError::Unauthorized { .. }));
        assert!(matches!(e(404), HqError::NotFound { .. }));
        assert!(matches!(e(400), HqError::Validation { .. }));
        assert!(matches!(e(403), HqError::Validation { .. }));
        assert!(matches!(e(429), HqError::Throttled { .. }));
        assert!(matches!(e(503), HqError::Server { .. }));
        assert!(!e(401).is_transient() && !e(404).is_transient() && !e(400).is_transient());
        assert!(e(429).is_transient() && e(500).is_transient() && e(503).is_transient());
        assert_eq!(e(400).body(), Some("{\"title\":\"x\"}"));
    }

    #[test]
    fn error_bodies_are_truncated_on_a_character_boundary() {
        let long = "ä".repeat(MAX_ERROR_BODY);
        let b = ErrorBody::new(long.as_bytes());
        assert!(b.as_str().len() <= MAX_ERROR_BODY + '…'.len_utf8());
        assert!(b.as_str().ends_with('…'));
    }

    fn client(base: &str) -> HellohqClient {
        HellohqClient::new(HellohqClientConfig::new(base, SecretString::from("tok-secret"))).unwrap()
    }

    #[test]
    fn queries_are_percent_encoded_in_the_endpoint_spelling() {
        let mut cfg = HellohqClientConfig::new("https://api.hellohq.io", SecretString::from("t"));
        cfg.spelling_overrides.insert("/v2/Projects/Tasks".into(), QuerySpelling::Dollar);
        let c = HellohqClient::new(cfg).unwrap();
        let q = ListQuery::filter("name eq 'A & B'").orderby("updatedOn");
        let u = c.url("/v2/Companies", &q.pairs(c.spelling_for("/v2/Companies"), 1000));
        assert_eq!(u.query(), Some("filter=name%20eq%20%27A%20%26%20B%27&orderby=updatedOn&top=1000"));
        let u = c.url("/v2/Projects/Tasks", &q.pairs(c.spelling_for("/v2/Projects/Tasks"), 1000));
        assert!(u.query().unwrap().starts_with("$filter="));
    }

    #[test]
    fn next_links_to_another_host_are_rebased_on_the_configured_one() {
        let c = client("http://127.0.0.1:8080");
        let u = c.follow("https://api.hellohq.io/v2/Companies?top=1000&skip=1000").unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/v2/Companies?top=1000&skip=1000");
        let own = c.follow("http://127.0.0.1:8080/v2/Companies?skip=2000").unwrap();
        assert_eq!(own.as_str(), "http://127.0.0.1:8080/v2/Companies?skip=2000");
        let proxied = client("https://proxy.example/hellohq");
        let u = proxied.follow("https://api.hellohq.io/v2/Companies?skip=1000").unwrap();
        assert_eq!(u.as_str(), "https://proxy.example/hellohq/v2/Companies?skip=1000");
    }

    #[test]
    fn the_token_never_appears_in_debug_output() {
        let cfg = HellohqClientConfig::new("https://api.hellohq.io", SecretString::from("tok-secret"));
        assert!(!format!("{cfg:?}").contains("tok-secret"));
        assert!(!format!("{:?}", client("https://api.hellohq.io")).contains("tok-secret"));
    }
}
