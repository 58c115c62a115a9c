//! The Microsoft Graph HTTP client of one tenant: one `reqwest` client, the
//! tenant's token cache, and the one retry policy every Graph call goes
//! through (429 waits `Retry-After` before the next attempt to that mailbox;
//! 5xx and timeouts back off with jitter; everything bounded), plus a
//! per-mailbox semaphore (Outlook allows 4 concurrent requests per app and
//! mailbox) and the per-mailbox request budget of [`super::quota`] (a
//! request waits for a slot rather than drawing a 429), both divided among
//! the deployment's live processes by [`super::share`]. It owns HTTP to Graph only: it never sends the bearer token to
//! a host outside the configured Graph base, never logs secrets or tokens,
//! and never maps wire JSON to the canonical model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{classify, GraphError, Verdict};
use super::quota::{self, MailboxQuota, Slots};
use super::share::ProcessShare;
use super::token::TokenCache;
use crate::store::GraphCredentials;

/// Bounds on retrying one request (and one `$batch` item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at most, the first included.
    pub max_attempts: u32,
    /// Sleep between attempts at most, summed; a wait that would exceed it is
    /// not started (the error is returned for the queue to retry later).
    pub max_total_wait: Duration,
    /// First back-off for 5xx and timeouts (and 429 without `Retry-After`); doubles per attempt.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            max_total_wait: Duration::from_secs(120),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Settings of a [`GraphClient`]; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct GraphClientConfig {
    pub retry: RetryPolicy,
    /// Concurrent requests per mailbox for the whole deployment (Outlook's
    /// limit is 4); this process takes its share of it (see `processes`).
    pub per_mailbox_concurrency: u32,
    /// Requests per mailbox and sliding window this app sends (every `$batch`
    /// item counts); Outlook's limit is 10,000 per 10 minutes. Shared by
    /// every client of the same app in this process, and divided among the
    /// processes like the concurrency.
    pub mailbox_quota: MailboxQuota,
    /// How many live processes share the two limits above, read at every
    /// request (set by the presence loop; 1 when nothing counts them).
    pub processes: ProcessShare,
    /// Whole-request timeout (a timeout counts as transient).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Refresh the token this long before `expires_in` runs out.
    pub token_margin: Duration,
    /// How long a refused credential is answered from memory before Entra ID is asked again.
    pub auth_failure_ttl: Duration,
    /// `Prefer: odata.maxpagesize` for listings and delta rounds.
    pub page_size: u32,
    /// `remote.allow_private_addresses`: when false (the default) every
    /// request refuses loopback, private, link-local… addresses (see
    /// [`crate::netguard`]); the simulators on 127.0.0.1 need true.
    pub allow_private_addresses: bool,
}

impl GraphClientConfig {
    /// These settings with the address guard switched off (simulators,
    /// on-premise proxies; `remote.allow_private_addresses = true`).
    pub fn allowing_private_addresses(self) -> Self {
        GraphClientConfig { allow_private_addresses: true, ..self }
    }
}

impl Default for GraphClientConfig {
    fn default() -> Self {
        GraphClientConfig {
            retry: RetryPolicy::default(),
            per_mailbox_concurrency: 4,
            mailbox_quota: MailboxQuota::OUTLOOK,
            processes: ProcessShare::default(),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            token_margin: Duration::from_secs(300),
            auth_failure_ttl: Duration::from_secs(300),
            page_size: 100,
            allow_private_addresses: false,
        }
    }
}

/// The preference that makes Outlook item ids survive a move to another
/// folder (https://learn.microsoft.com/graph/outlook-immutable-id): it
/// applies only to the request that carries it, so every request sends it,
/// subscriptions included (their notifications then carry immutable ids).
pub const IMMUTABLE_ID_PREFERENCE: &str = "IdType=\"ImmutableId\"";

/// `headers` with the immutable-id preference added: into the request's own
/// `Prefer` header when it has one (one header, preferences comma-separated,
/// as Graph's docs write several), else as a `Prefer` header of its own.
pub fn with_immutable_ids(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len() + 1);
    let mut merged = false;
    for (k, v) in headers {
        if !merged && k.eq_ignore_ascii_case("prefer") {
            let v = if v.to_ascii_lowercase().contains("idtype=") {
                v.to_string()
            } else {
                format!("{v}, {IMMUTABLE_ID_PREFERENCE}")
            };
            out.push(((*k).to_string(), v));
            merged = true;
        } else {
            out.push(((*k).to_string(), (*v).to_string()));
        }
    }
    if !merged {
        out.push(("Prefer".to_string(), IMMUTABLE_ID_PREFERENCE.to_string()));
    }
    out
}

/// One successful answer.
#[derive(Debug, Clone)]
pub struct GraphResponse {
    pub status: u16,
    pub headers: HeaderMap,
    /// `Value::Null` for empty bodies (`204`).
    pub body: Value,
}

/// Characters left as they are in a path segment; everything else is
/// percent-encoded (Graph ids may hold `/`, `+`, `=`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'@');

/// Percent-encodes one path segment (an id or a UPN).
pub fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The `roles` claim of a JWT access token (its payload decoded, not
/// verified); no claim = no application permission. The token itself never
/// appears in an error.
pub fn roles_of(jwt: &str) -> Result<Vec<String>, GraphError> {
    use base64::Engine as _;
    let bad = || GraphError::Decode("the access token is not a JWT with a readable payload".into());
    let payload = jwt.split('.').nth(1).ok_or_else(bad)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| bad())?;
    let claims: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(match claims.get("roles") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    })
}

/// The mailbox a relative Graph path addresses (`/users/{mailbox}/…`), lowercased.
pub fn mailbox_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let mut parts = path.trim_start_matches('/').split('/');
    let first = parts.next()?;
    if !first.eq_ignore_ascii_case("users") {
        return None;
    }
    let mb = parts.next().filter(|s| !s.is_empty())?;
    Some(percent_decode_str(mb).decode_utf8_lossy().to_lowercase())
}

pub(crate) struct Inner {
    pub http: reqwest::Client,
    pub graph_base: String,
    pub entra_tenant: String,
    pub client_id: String,
    pub cfg: GraphClientConfig,
    pub token: TokenCache,
    /// Earliest instant the next request to a mailbox may go out (after a 429).
    not_before: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Serialises folder/list bootstrap per mailbox within this process.
    pub(crate) bootstrap: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The mailboxes' Graph users (issue #19 item 8), by lowercased address:
    /// `Some(object id)`, the key every request to the mailbox is sent
    /// under; `None`, the address did not resolve.
    users: parking_lot::RwLock<HashMap<String, Option<String>>>,
}

/// A tenant's Graph client. Cheap to clone; clones share the HTTP client,
/// the token cache and the 429 gates; the per-mailbox concurrency and
/// budget belong to the process (every client of the same app shares them).
#[derive(Clone)]
pub struct GraphClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_base", &self.inner.graph_base)
            .field("entra_tenant", &self.inner.entra_tenant)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

/// Every per-mailbox semaphore of this process, by Graph base, app,
/// mailbox and limit (see [`GraphClient::semaphore`]).
type LimitKey = (String, String, String, u32);
static LIMITS: std::sync::LazyLock<parking_lot::Mutex<HashMap<LimitKey, Arc<Semaphore>>>> =
    std::sync::LazyLock::new(Default::default);

/// What a request holds while in flight: permits per mailbox.
pub(crate) type Holds = Vec<(String, u32)>;

impl GraphClient {
    pub fn new(creds: &GraphCredentials, cfg: GraphClientConfig) -> Result<GraphClient, GraphError> {
        let http = crate::netguard::client_builder(cfg.allow_private_addresses)
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.connect_timeout)
            // The bearer token must never follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hqsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        let token = TokenCache::new(
            &creds.login_base,
            &creds.entra_tenant_id,
            &creds.client_id,
            creds.client_secret.clone(),
            cfg.token_margin,
            cfg.auth_failure_ttl,
            cfg.allow_private_addresses,
        );
        Ok(GraphClient {
            inner: Arc::new(Inner {
                http,
                graph_base: creds.graph_base.trim_end_matches('/').to_string(),
                entra_tenant: creds.entra_tenant_id.clone(),
                client_id: creds.client_id.clone(),
                cfg,
                token,
                not_before: Default::default(),
                bootstrap: Default::default(),
                users: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &GraphClientConfig {
        &self.inner.cfg
    }

    /// The Entra app (client) id; not a secret.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub fn graph_base(&self) -> &str {
        &self.inner.graph_base
    }

    /// Records what `address`'s Graph user resolved to: `Some(id)` sends
    /// every later request to `/users/{address}/…` as `/users/{id}/…`
    /// ([`Self::user_key`]); `None` marks it unresolved.
    pub fn set_user(&self, address: &str, id: Option<&str>) {
        self.inner.users.write().insert(address.to_lowercase(), id.map(str::to_string));
    }

    /// Replaces every recorded user with `users` (address, resolution),
    /// e.g. as read from the store; an address left out is unknown again.
    pub fn set_users<'a>(&self, users: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) {
        let map = users.into_iter().map(|(a, id)| (a.to_lowercase(), id.map(str::to_string))).collect();
        *self.inner.users.write() = map;
    }

    /// True when `address` is known not to resolve to a Graph user.
    pub fn is_unresolved(&self, address: &str) -> bool {
        matches!(self.inner.users.read().get(&address.to_lowercase()), Some(None))
    }

    /// The key a mailbox is addressed by: its Graph user's object id when
    /// resolved, else the address itself (a mailbox not resolved yet).
    pub fn user_key(&self, address: &str) -> String {
        match self.inner.users.read().get(&address.to_lowercase()) {
            Some(Some(id)) => id.clone(),
            _ => address.to_string(),
        }
    }

    /// `path` with its `/users/{address}` segment replaced by the user's
    /// object id when the address is resolved; any other path as it is.
    pub(crate) fn keyed(&self, path: &str) -> String {
        let lead = usize::from(path.starts_with('/'));
        let rest = &path[lead..];
        let Some(after) = rest.get(..6).filter(|h| h.eq_ignore_ascii_case("users/")).map(|_| &rest[6..]) else {
            return path.to_string();
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let address = percent_decode_str(&after[..end]).decode_utf8_lossy().to_lowercase();
        match self.inner.users.read().get(&address) {
            Some(Some(id)) => format!("{}{}{}", &path[..lead + 6], seg(id), &after[end..]),
            _ => path.to_string(),
        }
    }

    /// Checks the credentials by fetching (or reusing) the app-only token.
    pub async fn check_credentials(&self) -> Result<(), GraphError> {
        self.inner.token.get(&self.inner.http).await.map(|_| ())
    }

    /// The application permissions granted to the app in this tenant: the
    /// `roles` claim of the app-only access token (Entra lists exactly the
    /// admin-consented application permissions there,
    /// https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference).
    /// The payload is decoded without verifying the signature: the token is
    /// our own, just issued by Entra over TLS; it is never logged.
    pub async fn granted_roles(&self) -> Result<Vec<String>, GraphError> {
        let token = self.inner.token.get(&self.inner.http).await?;
        roles_of(token.expose_secret())
    }

    pub async fn get(&self, path: &str) -> Result<Value, GraphError> {
        Ok(self.send(Method::GET, path, None, &[]).await?.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        Ok(self.send(Method::POST, path, Some(body), &[]).await?.body)
    }

    /// PATCH, with `If-Match` when a version is given (412 → [`GraphError::Conflict`]).
    pub async fn patch(&self, path: &str, body: &Value, if_match: Option<&str>) -> Result<Value, GraphError> {
        let h: Vec<(&str, &str)> = if_match.map(|v| vec![("If-Match", v)]).unwrap_or_default();
        Ok(self.send(Method::PATCH, path, Some(body), &h).await?.body)
    }

    pub async fn delete(&self, path: &str, if_match: Option<&str>) -> Result<(), GraphError> {
        let h: Vec<(&str, &str)> = if_match.map(|v| vec![("If-Match", v)]).unwrap_or_default();
        self.send(Method::DELETE, path, None, &h).await.map(|_| ())
    }

    /// One request through the retry policy. `path` is relative to the Graph
    /// base (`/users/…`), or an absolute link Graph returned (nextLink).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<GraphResponse, GraphError> {
        let url = self.resolve(path)?;
        let relative = url.get(self.inner.graph_base.len()..).unwrap_or_default();
        let holds: Holds = mailbox_of(relative).map(|m| vec![(m, 1)]).unwrap_or_default();
        self.execute(method, &url, body, headers, &holds).await
    }

    /// Absolute URL for `path`; absolute links (nextLink, deltaLink) are
    /// accepted only under the Graph base: same prefix, case-insensitive,
    /// followed by `/`, `?` or nothing (so `https://graph.example.evil` is
    /// not "under" `https://graph.example`). Never slices the link at a byte
    /// index that may fall inside a character: the link came over the wire.
    fn resolve(&self, path: &str) -> Result<String, GraphError> {
        let base = &self.inner.graph_base;
        if path.starts_with("http://") || path.starts_with("https://") {
            let rest = path
                .get(..base.len())
                .filter(|head| head.eq_ignore_ascii_case(base))
                .and_then(|_| path.get(base.len()..))
                .filter(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'));
            if let Some(rest) = rest {
                return Ok(format!("{base}{rest}"));
            }
            return Err(GraphError::Decode(format!(
                "refusing to follow a link outside the Graph base {base}: {}",
                path.split('?').next().unwrap_or_default().escape_debug()
            )));
        }
        let sep = if path.starts_with('/') { "" } else { "/" };
        Ok(format!("{base}{sep}{}", self.keyed(path)))
    }

    /// The concurrency limit of `mailbox` for this app in this process:
    /// shared by every client of the app (the worker's and the scheduler's
    /// of a tenant, and clients built at the same time by concurrent hints
    /// or rebuilt after the tenant changed), as Outlook counts per app and
    /// mailbox, not per client.
    fn semaphore(&self, mailbox: &str) -> Arc<Semaphore> {
        let n = self.inner.cfg.per_mailbox_concurrency.max(1);
        let key = (self.inner.graph_base.to_ascii_lowercase(), self.inner.client_id.clone(), mailbox.to_lowercase(), n);
        LIMITS.lock().entry(key).or_insert_with(|| Arc::new(Semaphore::new(n as usize))).clone()
    }

    /// Waits until every mailbox in `holds` may be addressed again, then
    /// takes the concurrency permits and the request-budget slots (sorted by
    /// mailbox so two batches cannot deadlock). Both are held until the
    /// answer is in. The semaphore keeps the whole limit's permits and a
    /// request takes as many as this process's share leaves room for (1 of
    /// 4 alone, 2 of 4 with two processes, 4 of 4 with three or four), read
    /// now: a change of the process count applies to the next request.
    async fn acquire(&self, holds: &Holds) -> (Vec<OwnedSemaphorePermit>, Vec<Slots>) {
        let cfg = &self.inner.cfg;
        let max = cfg.per_mailbox_concurrency.max(1);
        let weight = cfg.processes.weight(max);
        let mut sorted: BTreeMap<&str, u32> = BTreeMap::new();
        for (mb, n) in holds {
            *sorted.entry(mb.as_str()).or_default() += n;
        }
        let mut permits = Vec::new();
        let mut slots = Vec::new();
        for (mb, n) in sorted {
            self.wait_gate(mb).await;
            let sem = self.semaphore(mb);
            // The semaphore is never closed.
            // A batch's items run at the same time: each counts (a batch
            // beyond the share goes out alone).
            if let Ok(p) = sem.acquire_many_owned(n.max(1).saturating_mul(weight).min(max)).await {
                permits.push(p);
            }
            // Every request counts, a batch item as one.
            let window = quota::window(&self.inner.graph_base, &self.inner.client_id, mb);
            slots.push(window.take(n.max(1), || cfg.processes.budget(cfg.mailbox_quota)).await);
            // A 429 may have arrived while waiting for the permit.
            self.wait_gate(mb).await;
        }
        (permits, slots)
    }

    async fn wait_gate(&self, mailbox: &str) {
        loop {
            let until = self.inner.not_before.lock().get(mailbox).copied();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t.into()).await,
                _ => return,
            }
        }
    }

    /// Holds back every request to `mailbox` for `wait` (Outlook's throttling is per app and mailbox).
    pub(crate) fn hold_mailbox(&self, mailbox: &str, wait: Duration) {
        let until = Instant::now() + wait;
        let mut g = self.inner.not_before.lock();
        let e = g.entry(mailbox.to_string()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    pub(crate) fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        if let Some(h) = hint {
            return h;
        }
        let p = &self.inner.cfg.retry;
        let exp = p.backoff_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(p.backoff_max);
        // Equal jitter: half fixed, half random, so workers spread out but still wait.
        let half = exp / 2;
        half + half.mul_f64(rand::thread_rng().gen::<f64>())
    }

    /// The retry loop shared by single requests and `$batch` envelopes.
    pub(crate) async fn execute(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        holds: &Holds,
    ) -> Result<GraphResponse, GraphError> {
        let inner = &self.inner;
        crate::netguard::check_url_str(url, inner.cfg.allow_private_addresses)
            .map_err(|r| GraphError::Blocked(r.to_string()))?;
        let policy = &inner.cfg.retry;
        let mailbox = holds.first().map(|(m, _)| m.as_str()).filter(|_| holds.len() == 1);
        let headers_sent = with_immutable_ids(headers);
        // One id per logical request, kept across retries so Graph's logs (and ours) tie them together.
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let token = match inner.token.get(&inner.http).await {
                Ok(t) => t,
                // The token endpoint being down is as transient as Graph being down.
                Err(e) if e.is_transient() => {
                    let wait = self.backoff(attempt, None);
                    if attempt >= policy.max_attempts || waited + wait > policy.max_total_wait {
                        return Err(e);
                    }
                    waited += wait;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let permits = self.acquire(holds).await;
            let mut rb = inner
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret())
                .header("client-request-id", &client_request_id);
            for (k, v) in &headers_sent {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let sent = rb.send().await;
            let (err, last_retry_after) = match sent {
                Err(e) => {
                    drop(permits);
                    if let Some(r) = crate::netguard::refusal_in(&e) {
                        return Err(GraphError::Blocked(r.to_string()));
                    }
                    let e = GraphError::Transport(e.without_url().to_string());
                    tracing::debug!(%method, %client_request_id, error = %e, attempt, "graph request failed");
                    (e, None)
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let resp_headers = resp.headers().clone();
                    let bytes = resp.bytes().await;
                    // Answered: the budget counts this request from now.
                    drop(permits);
                    let request_id = resp_headers.get("request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
                    tracing::debug!(%method, status, %client_request_id, request_id = ?request_id, attempt, "graph request");
                    let bytes = match bytes {
                        Ok(b) => b,
                        Err(e) => {
                            let e = GraphError::Transport(e.without_url().to_string());
                            if attempt >= policy.max_attempts {
                                return Err(e);
                            }
                            let wait = self.backoff(attempt, None);
                            if waited + wait > policy.max_total_wait {
                                return Err(e);
                            }
                            waited += wait;
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    };
                    let json: Value = if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                    };
                    let retry_after = resp_headers
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(super::error::parse_retry_after);
                    let v = classify(status, &json, retry_after, mailbox, &inner.client_id, request_id.clone());
                    match v {
                        Verdict::Success => {
                            return Ok(GraphResponse { status, headers: resp_headers, body: json });
                        }
                        Verdict::Fail(GraphError::DeltaReset { code, .. }) => {
                            let location =
                                resp_headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
                            return Err(GraphError::DeltaReset { code, location });
                        }
                        Verdict::Fail(e) => {
                            if matches!(e, GraphError::MailboxDenied { .. } | GraphError::Status { .. }) {
                                tracing::warn!(%method, status, request_id = ?request_id, error = %e, "graph request refused");
                            }
                            return Err(e);
                        }
                        Verdict::RefreshToken => {
                            if refreshed {
                                return Err(GraphError::Status {
                                    status,
                                    code: "InvalidAuthenticationToken".into(),
                                    message: "a freshly issued token was refused".into(),
                                    request_id,
                                });
                            }
                            refreshed = true;
                            inner.token.invalidate(&token).await;
                            // A token refresh is not a retry of the throttling budget.
                            attempt -= 1;
                            continue;
                        }
                        Verdict::Throttled(ra) => (GraphError::Throttled { retry_after: ra }, Some((true, ra))),
                        Verdict::Unavailable(ra) => (
                            GraphError::Status {
                                status,
                                code: super::error::error_code(&json).0,
                                message: "service unavailable".into(),
                                request_id,
                            },
                            Some((false, ra)),
                        ),
                    }
                }
            };
            if attempt >= policy.max_attempts {
                return Err(err);
            }
            let (throttled, hint) = last_retry_after.unwrap_or((false, None));
            let wait = self.backoff(attempt, hint);
            if waited + wait > policy.max_total_wait {
                return Err(err);
            }
            waited += wait;
            if throttled {
                for (mb, _) in holds {
                    self.hold_mailbox(mb, wait);
                }
                if holds.is_empty() {
                    tokio::time::sleep(wait).await;
                }
                // The gate in `acquire` does the waiting, for this and every other request to the mailbox.
            } else {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Every page of a collection (`value` arrays), following `@odata.nextLink`.
    pub async fn list_all(&self, path: &str) -> Result<Vec<Value>, GraphError> {
        let prefer = format!("odata.maxpagesize={}", self.inner.cfg.page_size);
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let page = self.send(Method::GET, &p, None, &[("Prefer", &prefer)]).await?.body;
            if let Some(items) = page.get("value").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_string);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mailbox_is_read_from_user_paths_only() {
        assert_eq!(mailbox_of("/users/Anna@X.de/contactFolders?$top=5").as_deref(), Some("anna@x.de"));
        assert_eq!(mailbox_of("users/anna%40x.de/events").as_deref(), Some("anna@x.de"));
        assert_eq!(mailbox_of("/subscriptions/abc"), None);
        assert_eq!(mailbox_of("/$batch"), None);
    }

    #[test]
    fn roles_are_read_from_the_token_payload() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwt = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"roles":["Calendars.ReadWrite","User.Read.All"]}"#)
        );
        assert_eq!(roles_of(&jwt).unwrap(), vec!["Calendars.ReadWrite".to_string(), "User.Read.All".to_string()]);
        let none = format!("{}.{}.sig", enc("{}"), enc(r#"{"aud":"x"}"#));
        assert!(roles_of(&none).unwrap().is_empty());
        let e = roles_of("secret-opaque-token").unwrap_err().to_string();
        assert!(!e.contains("secret-opaque-token"), "{e}");
        assert!(roles_of("a.!!!.c").is_err());
    }

    fn client(graph_base: &str) -> GraphClient {
        let creds = GraphCredentials {
            entra_tenant_id: "contoso".into(),
            client_id: "app".into(),
            client_secret: secrecy::SecretString::from("s".to_string()),
            graph_base: graph_base.into(),
            login_base: "https://login.example".into(),
        };
        GraphClient::new(&creds, GraphClientConfig::default()).unwrap()
    }

    /// Finding 2 of issue #20: a nextLink whose byte at the base's length
    /// falls inside a multi-byte character panicked (and stopped the scheduler).
    #[test]
    fn a_next_link_with_a_multi_byte_character_at_the_base_length_is_refused_not_a_panic() {
        let c = client("https://graph.microsoft.com/v1.0");
        // '€' (3 bytes) starts one byte before the base's length.
        let link = "https://graph.microsoft.com/v1.\u{20ac}/users?$skiptoken=x";
        assert!(matches!(c.resolve(link), Err(GraphError::Decode(_))));
        let link = "https://graph.microsoft.com/v1\u{e9}";
        assert!(matches!(c.resolve(link), Err(GraphError::Decode(_))));
        // A link under the base (any case) is followed, with the configured base.
        assert_eq!(
            c.resolve("https://GRAPH.microsoft.com/v1.0/users?$skiptoken=\u{20ac}").unwrap(),
            "https://graph.microsoft.com/v1.0/users?$skiptoken=\u{20ac}"
        );
    }

    #[test]
    fn a_link_whose_host_only_starts_like_the_base_is_refused() {
        let c = client("https://graph.microsoft.com");
        assert!(c.resolve("https://graph.microsoft.com.evil.example/v1.0/users").is_err());
        assert!(c.resolve("https://graph.microsoft.com:8443/users").is_err());
        assert!(c.resolve("https://graph.microsoft.com/users").is_ok());
    }

    #[test]
    fn every_request_prefers_immutable_ids_in_one_prefer_header() {
        let alone = with_immutable_ids(&[("If-Match", "W/\"x\"")]);
        assert!(alone.contains(&("Prefer".to_string(), "IdType=\"ImmutableId\"".to_string())));
        let merged = with_immutable_ids(&[("Prefer", "odata.maxpagesize=100, outlook.timezone=\"UTC\"")]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].1, "odata.maxpagesize=100, outlook.timezone=\"UTC\", IdType=\"ImmutableId\"");
    }

    #[test]
    fn a_resolved_mailbox_is_addressed_by_its_users_object_id() {
        let c = client("https://graph.example/v1.0");
        c.set_user("Anna.Mueller@Example.com", Some("0a1b-2c3d"));
        c.set_user("ben@example.com", None);
        assert_eq!(c.keyed("/users/anna.mueller@example.com/events?$top=1"), "/users/0a1b-2c3d/events?$top=1");
        assert_eq!(c.keyed("users/anna.mueller%40example.com/contactFolders"), "users/0a1b-2c3d/contactFolders");
        assert_eq!(c.keyed("/Users/ANNA.MUELLER@example.com"), "/Users/0a1b-2c3d");
        assert_eq!(c.keyed("/users/ben@example.com/events"), "/users/ben@example.com/events", "unresolved: as it is");
        assert_eq!(c.keyed("/users/carl@example.com/events"), "/users/carl@example.com/events", "unknown: as it is");
        assert_eq!(c.keyed("/subscriptions/abc"), "/subscriptions/abc");
        assert_eq!(c.keyed("/users?$filter=mail eq 'a'"), "/users?$filter=mail eq 'a'");
        assert_eq!(
            c.resolve("/users/anna.mueller@example.com/events").unwrap(),
            "https://graph.example/v1.0/users/0a1b-2c3d/events"
        );
        assert!(c.is_unresolved("BEN@example.com") && !c.is_unresolved("anna.mueller@example.com"));
        assert_eq!(c.user_key("anna.mueller@example.com"), "0a1b-2c3d");
        assert_eq!(c.user_key("carl@example.com"), "carl@example.com");
        c.set_users([("carl@example.com", Some("9f"))]);
        assert_eq!(c.user_key("anna.mueller@example.com"), "anna.mueller@example.com", "replaced");
        assert_eq!(c.user_key("carl@example.com"), "9f");
    }

    #[test]
    fn ids_are_percent_encoded_as_one_segment() {
        assert_eq!(seg("AAMk/ab+c=="), "AAMk%2Fab%2Bc%3D%3D");
        assert_eq!(seg("anna@x.de"), "anna@x.de");
    }
}
