//! The status page (`GET /`): server-rendered HTML, no script, behind the
//! admin API's authentication. A login form takes the token and keeps it in
//! an HttpOnly cookie; the page then shows, per tenant the caller may see:
//! mailboxes and kinds with direction, last sync, linked items, errors,
//! conflicts, held deletions and subscription expiry, pending hints, and a
//! small SVG chart of changes per minute over the last hour.
//!
//! Against cross-site use (issue #20, finding 6): the session cookie is
//! `SameSite=Strict` and serves only this page's `GET` (the admin API
//! takes `Authorization: Bearer` only); the login and logout forms carry a
//! CSRF token that must match the `hqsync_csrf` cookie (double submit), and
//! a POST whose `Origin` or `Sec-Fetch-Site` says it came from another site
//! is refused with `403`. Every page is sent with a CSP that allows no
//! script, no framing (`X-Frame-Options: DENY`) and `Cache-Control: no-store`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::admin::{cookie_of, Principal, SESSION_COOKIE};
use super::extract::ApiForm;
use super::AppState;
use crate::engine::settings::TenantSettings;
use crate::model::Kind;
use crate::store::{JournalEntry, JournalFilter, Tenant};

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}\
h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;\
padding:.25em .6em;text-align:left}th{background:#f3f3f3}.bad{color:#a00}.ok{color:#070}.muted{color:#777}\
form.login{max-width:32em}input[type=password]{width:100%;padding:.4em}";

/// The double-submit CSRF cookie of the login and logout forms.
pub const CSRF_COOKIE: &str = "hqsync_csrf";

/// A status-page answer: the HTML with the headers every page carries (no
/// script, no framing, not cached), and a fresh CSRF cookie when one was made.
struct Page {
    status: StatusCode,
    html: String,
    set_cookies: Vec<String>,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = (self.status, Html(self.html)).into_response();
        secure_headers(r.headers_mut());
        for c in self.set_cookies {
            if let Ok(v) = c.parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

/// CSP (nothing but inline style), no framing, no caching, no sniffing.
fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, axum::http::HeaderValue::from_static(v));
    };
    set(h, header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

/// The request's CSRF cookie, or a new random one (with its `Set-Cookie`).
fn csrf_of(state: &AppState, headers: &HeaderMap) -> (String, Vec<String>) {
    if let Some(v) = cookie_of(headers, CSRF_COOKIE).filter(|v| v.len() == 43 && v.bytes().all(is_b64url)) {
        return (v, Vec::new());
    }
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
    let v = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
    let cookie = format!("{CSRF_COOKIE}={v}; HttpOnly; SameSite=Strict; Path=/{}", secure_attr(state));
    (v, vec![cookie])
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn secure_attr(state: &AppState) -> &'static str {
    if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// Refuses a form POST that another site made: its `Sec-Fetch-Site` is not
/// `same-origin`, its `Origin` is not this service's, or its CSRF field does
/// not match the CSRF cookie (which a `SameSite=Strict` cookie makes
/// unavailable to any cross-site request anyway).
fn check_form_origin(state: &AppState, headers: &HeaderMap, csrf_field: &str) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err("the form was sent from another site (Sec-Fetch-Site)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        if !same_origin(state, headers, origin) {
            return Err("the form was sent from another origin (Origin)");
        }
    }
    let cookie = cookie_of(headers, CSRF_COOKIE).unwrap_or_default();
    let ok = !cookie.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(cookie.as_bytes(), csrf_field.trim().as_bytes()));
    if ok {
        Ok(())
    } else {
        Err("the form's CSRF token does not match; reload the page and try again")
    }
}

/// `origin` is this service: the origin of `http.public_url`, or the
/// scheme-less `Host` the request was sent to.
fn same_origin(state: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let Ok(o) = url::Url::parse(origin) else { return false };
    if let Ok(p) = url::Url::parse(&state.public_url) {
        if o.origin() == p.origin() {
            return true;
        }
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let o_host = match o.port() {
        Some(port) => format!("{}:{port}", o.host_str().unwrap_or_default()),
        None => o.host_str().unwrap_or_default().to_string(),
    };
    !host.is_empty() && o_host.eq_ignore_ascii_case(host)
}

fn login_page(status: StatusCode, message: Option<&str>, csrf: &str, set_cookies: Vec<String>) -> Page {
    let msg = message.map(|m| format!("<p class=\"bad\" id=\"login-error\">{}</p>", esc(m))).unwrap_or_default();
    let html = html_page(
        "hqsync — sign in",
        &format!(
            "<h1>hqsync status</h1>{msg}<form class=\"login\" method=\"post\" action=\"/login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <p><label for=\"token\">Admin token (JWT)</label><br><input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required></p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
            csrf = esc(csrf)
        ),
    );
    Page { status, html, set_cookies }
}

/// The login form.
#[utoipa::path(get, path = "/login", tag = "status", responses((status = 200, description = "Login form", content_type = "text/html", body = String)))]
pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = csrf_of(&state, &headers);
    login_page(StatusCode::OK, None, &csrf, set).into_response()
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    pub token: String,
    /// The hidden CSRF field of the form (must match the `hqsync_csrf` cookie).
    #[serde(default)]
    pub csrf: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LogoutForm {
    /// The hidden CSRF field of the form (must match the `hqsync_csrf` cookie).
    #[serde(default)]
    pub csrf: String,
}

/// Checks the token and keeps it in an HttpOnly cookie; back to `/`.
#[utoipa::path(post, path = "/login", tag = "status", request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in; see /"), (status = 401, description = "Token refused", content_type = "text/html", body = String),
        (status = 403, description = "Sent from another site (Origin, Sec-Fetch-Site) or without the form's CSRF token", content_type = "text/html", body = String),
        (status = 400, description = "The form does not decode (e.g. no `token` field)", body = super::error::ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`", body = super::error::ErrorBody),
        (status = 415, description = "Not sent as application/x-www-form-urlencoded", body = super::error::ErrorBody)))]
pub async fn login(State(state): State<AppState>, headers: HeaderMap, ApiForm(form): ApiForm<LoginForm>) -> Response {
    let (csrf, set) = csrf_of(&state, &headers);
    if let Err(why) = check_form_origin(&state, &headers, &form.csrf) {
        return login_page(StatusCode::FORBIDDEN, Some(why), &csrf, set).into_response();
    }
    let Some(auth) = state.admin.as_ref() else {
        let why = "The admin API is not configured (admin.jwt_secret).";
        return login_page(StatusCode::UNAUTHORIZED, Some(why), &csrf, set).into_response();
    };
    let token = form.token.trim();
    match auth.verify(token) {
        Ok(_) => {
            let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{}", secure_attr(&state));
            let mut r = Redirect::to("/").into_response();
            secure_headers(r.headers_mut());
            if let Ok(v) = cookie.parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let why = format!("Token refused: {}", e.message);
            login_page(StatusCode::UNAUTHORIZED, Some(&why), &csrf, set).into_response()
        }
    }
}

/// Forgets the session cookie.
#[utoipa::path(post, path = "/logout", tag = "status", request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed out"),
        (status = 403, description = "Sent from another site (Origin, Sec-Fetch-Site) or without the form's CSRF token", content_type = "text/html", body = String),
        (status = 400, description = "The form does not decode", body = super::error::ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`", body = super::error::ErrorBody),
        (status = 415, description = "Not sent as application/x-www-form-urlencoded", body = super::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap, ApiForm(form): ApiForm<LogoutForm>) -> Response {
    if let Err(why) = check_form_origin(&state, &headers, &form.csrf) {
        let html = html_page("hqsync", &format!("<p class=\"bad\">{}</p><p><a href=\"/\">back</a></p>", esc(why)));
        return Page { status: StatusCode::FORBIDDEN, html, set_cookies: Vec::new() }.into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    secure_headers(r.headers_mut());
    if let Ok(v) = format!("{SESSION_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/").parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The status page (the login form when not signed in).
#[utoipa::path(get, path = "/", tag = "status", responses(
    (status = 200, description = "Status page, or the login form without a session", content_type = "text/html", body = String),
    (status = 401, description = "The session's token is refused: the login form says why", content_type = "text/html", body = String),
    (status = 503, description = "The store cannot answer now", content_type = "text/html", body = String)))]
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = csrf_of(&state, &headers);
    let Some(auth) = state.admin.as_ref() else {
        let why = "The admin API is not configured (admin.jwt_secret).";
        return login_page(StatusCode::UNAUTHORIZED, Some(why), &csrf, set).into_response();
    };
    // The session cookie (or a bearer token): this GET shows, it changes nothing.
    let Some(token) = cookie_of(&headers, SESSION_COOKIE).or_else(|| super::admin::bearer_of(&headers)) else {
        return login_page(StatusCode::OK, None, &csrf, set).into_response();
    };
    let who = match auth.verify(&token) {
        Ok(p) => p,
        Err(e) => return login_page(StatusCode::UNAUTHORIZED, Some(&e.message), &csrf, set).into_response(),
    };
    match render(&state, &who, &csrf).await {
        Ok(html) => Page { status: StatusCode::OK, html, set_cookies: set }.into_response(),
        Err(e) => {
            let html = html_page("hqsync", &format!("<p class=\"bad\">{}</p>", esc(&e)));
            Page { status: StatusCode::SERVICE_UNAVAILABLE, html, set_cookies: set }.into_response()
        }
    }
}

async fn render(state: &AppState, who: &Principal, csrf: &str) -> Result<String, String> {
    let store = &state.store;
    let tenants: Vec<Tenant> = store
        .list_tenants()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| who.tenant(t.id.as_str()).is_ok())
        .collect();
    let depth = state.queue.depth().await.ok();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>hqsync status</h1><p class=\"muted\">signed in as {} · {} · <form style=\"display:inline\" method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>sign out</button></form></p>",
        esc(&who.sub),
        esc(&Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        esc(csrf)
    );
    match depth {
        Some(d) => {
            let _ = write!(
                b,
                "<p id=\"queue\">Pending hints: <b>{}</b> ready, {} in progress, {} waiting to retry, {} dead-lettered</p>",
                d.ready,
                d.unacked.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                d.retrying,
                d.dead
            );
        }
        None => b.push_str("<p class=\"bad\" id=\"queue\">Queue unreachable</p>"),
    }
    if tenants.is_empty() {
        b.push_str("<p>No tenants yet.</p>");
    }
    for t in &tenants {
        let settings = TenantSettings::of(t);
        let _ = write!(
            b,
            "<section class=\"tenant\" id=\"tenant-{id}\"><h2>{name} <span class=\"muted\">({id})</span> {state}</h2>",
            id = esc(t.id.as_str()),
            name = esc(&t.name),
            state = if t.enabled && settings.sync_enabled {
                "<span class=\"ok\">sync on</span>"
            } else {
                "<span class=\"bad\">sync off</span>"
            }
        );
        let recent = store
            .list_journal(&JournalFilter { tenant: Some(t.id.clone()), limit: 1000, ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        b.push_str(&chart(&recent));
        let subs = store.list_subscriptions(&t.id).await.map_err(|e| e.to_string())?;
        b.push_str("<table class=\"mailboxes\"><tr><th>mailbox</th><th>state</th><th>kind</th><th>direction</th><th>last sync</th><th>linked</th><th>errors</th><th>conflicts</th><th>held deletions</th><th>subscription expiry</th></tr>");
        let mut held_lists = Vec::new();
        for m in store.list_mailboxes(&t.id).await.map_err(|e| e.to_string())? {
            for kind in Kind::ALL {
                let held = crate::engine::approvals::held(store, &t.id, &m.id, kind).await.ok().flatten();
                let held_n = held.as_ref().map_or(0, |h| h.items.len());
                if let Some(h) = held {
                    held_lists.push((m.id.clone(), h));
                }
                let cursor = match kind {
                    Kind::Contact => crate::engine::contacts::LAST_PASS,
                    Kind::Task => crate::engine::tasks::LAST_PASS,
                    Kind::Appointment => crate::engine::appointments::LAST_PASS,
                };
                let last =
                    store.get_cursor(&t.id, m.id.as_str(), cursor).await.ok().flatten().filter(|s| !s.is_empty());
                let linked = store.count_links(&t.id, Some(&m.id), Some(kind)).await.unwrap_or(0);
                let of = |action: &str| -> Vec<&JournalEntry> {
                    recent
                        .iter()
                        .filter(|e| e.action == action && e.mailbox.as_ref() == Some(&m.id) && e.kind == Some(kind))
                        .collect()
                };
                let errors = of("error");
                let err_text = errors
                    .first()
                    .map(|e| {
                        format!(
                            "<span class=\"bad\">{}: {}</span>",
                            errors.len(),
                            esc(e.detail["reason"].as_str().unwrap_or(""))
                        )
                    })
                    .or_else(|| m.last_error.as_deref().map(|e| format!("<span class=\"bad\">{}</span>", esc(e))))
                    .unwrap_or_else(|| "0".into());
                let expiry = subs
                    .iter()
                    .filter(|s| s.mailbox == m.id && s.kind == kind)
                    .map(|s| s.expires_at)
                    .min()
                    .map(|e| e.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_else(|| "—".into());
                let _ = write!(
                    b,
                    "<tr data-mailbox=\"{mb}\" data-kind=\"{kind}\"><td>{mb}</td><td>{state}</td><td>{kind}</td><td>{dir}</td><td>{last}</td><td class=\"linked\">{linked}</td><td>{err}</td><td>{conf}</td><td>{held}</td><td>{exp}</td></tr>",
                    mb = esc(m.id.as_str()),
                    state = esc(&format!("{:?}", m.state).to_lowercase()),
                    kind = kind.as_str(),
                    dir = settings.direction(&m, kind).as_str(),
                    last = esc(last.as_deref().unwrap_or("never")),
                    err = err_text,
                    conf = of("conflict").len(),
                    held = held_n,
                    exp = esc(&expiry),
                );
            }
        }
        b.push_str("</table>");
        b.push_str(&unresolved_users(&store.graph_users(&t.id).await.unwrap_or_default()));
        b.push_str(&capabilities(&store.get_capabilities(&t.id).await.unwrap_or_default()));
        if !held_lists.is_empty() {
            // What `hqsync approve` (or POST …/approve) would approve: exactly these items.
            b.push_str("<h3>Held deletions awaiting approval</h3>");
            for (mb, h) in &held_lists {
                let _ = write!(
                    b,
                    "<div class=\"held\" data-mailbox=\"{mb}\" data-kind=\"{kind}\"><p>{mb} · {kind}: {n} held — {reason}</p><ul>",
                    mb = esc(mb.as_str()),
                    kind = h.kind.as_str(),
                    n = h.items.len(),
                    reason = esc(&h.reason),
                );
                for i in &h.items {
                    let _ = write!(
                        b,
                        "<li data-key=\"{key}\">{name} <span class=\"muted\">(delete in {side}; {key})</span></li>",
                        key = esc(&i.key),
                        name = esc(&i.name),
                        side = esc(&i.delete_in),
                    );
                }
                b.push_str("</ul></div>");
            }
        }
        b.push_str("</section>");
    }
    Ok(html_page("hqsync status", &b))
}

/// What the connection test found for the tenant (both sections, one row
/// per answer; a map such as helloHQ's spelling per list one row per entry),
/// or that it never ran and the safe defaults apply.
/// The mailboxes whose Graph user did not resolve (issue #19 item 8):
/// not synced until it does; each with why, the fix, and when hqsync
/// looks again (or after the tenant's next change, e.g. a connection test).
fn unresolved_users(users: &[crate::store::GraphUser]) -> String {
    let missing: Vec<_> = users.iter().filter(|u| u.id.is_none() && u.error.is_some()).collect();
    if missing.is_empty() {
        return String::new();
    }
    let mut b = String::from(
        "<h3>Mailboxes without a Graph user (not synced)</h3><table class=\"graph-users\"><tr><th>mailbox</th><th>why, and the fix</th><th>lookups</th><th>last lookup</th><th>next lookup</th></tr>",
    );
    for u in missing {
        let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or("—".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        };
        let next = u.checked_at.map(|c| c + crate::engine::users::delay_after(u.attempts));
        let _ = write!(
            b,
            "<tr class=\"bad\" data-graph-user=\"{mb}\"><td>{mb}</td><td>{why}</td><td>{n}</td><td>{last}</td><td>{next} (or after the next connection test)</td></tr>",
            mb = esc(u.mailbox.as_str()),
            why = esc(u.error.as_deref().unwrap_or_default()),
            n = u.attempts,
            last = esc(&at(u.checked_at)),
            next = esc(&at(next)),
        );
    }
    b.push_str("</table>");
    b
}

fn capabilities(c: &crate::model::capabilities::Capabilities) -> String {
    let mut b = String::from("<h3>Capabilities</h3>");
    let _ = write!(
        b,
        "<p class=\"muted\" id=\"capabilities-tested\">{}</p>",
        match c.tested_at {
            Some(at) => format!("probed by the connection test at {}", at.format("%Y-%m-%d %H:%M UTC")),
            None => "never probed: the safe defaults apply (run the connection test)".into(),
        }
    );
    b.push_str("<table class=\"capabilities\"><tr><th>capability</th><th>value</th></tr>");
    if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(c) {
        for (section, fields) in sections.iter().filter(|(k, _)| *k != "tested_at") {
            for (name, value) in fields.as_object().into_iter().flatten() {
                let entries: Vec<(String, &serde_json::Value)> = match value.as_object() {
                    Some(m) if m.is_empty() => vec![(format!("{section}.{name}"), value)],
                    Some(m) => m.iter().map(|(k, v)| (format!("{section}.{name}.{k}"), v)).collect(),
                    None => vec![(format!("{section}.{name}"), value)],
                };
                for (label, value) in entries {
                    let shown = match value {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Object(m) if m.is_empty() => "undecided (safe default)".into(),
                        other => other.to_string(),
                    };
                    let _ = write!(
                        b,
                        "<tr data-capability=\"{l}\"><td>{l}</td><td>{v}</td></tr>",
                        l = esc(&label),
                        v = esc(&shown)
                    );
                }
            }
        }
    }
    b.push_str("</table>");
    b
}

/// Changes (created/updated/deleted/moved) per minute over the last hour, as inline SVG.
fn chart(entries: &[JournalEntry]) -> String {
    let now = Utc::now();
    let start = now - Duration::minutes(60);
    let mut per: BTreeMap<i64, u32> = BTreeMap::new();
    for e in entries {
        if e.at >= start && matches!(e.action.as_str(), "created" | "updated" | "deleted" | "moved") {
            *per.entry((e.at - start).num_minutes().clamp(0, 59)).or_default() += 1;
        }
    }
    let max = per.values().copied().max().unwrap_or(0).max(1);
    let total: u32 = per.values().sum();
    let (w, h) = (360.0, 60.0);
    let mut bars = String::new();
    for (m, n) in &per {
        let bh = h * (*n as f64) / (max as f64);
        let _ = write!(
            bars,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"5\" height=\"{:.1}\" fill=\"#4a7\"><title>{n}</title></rect>",
            *m as f64 * 6.0,
            h - bh,
            bh
        );
    }
    format!(
        "<figure><svg class=\"chart\" role=\"img\" aria-label=\"changes per minute\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#f7f7f7\"/>{bars}</svg><figcaption>{total} changes in the last hour (max {max}/min)</figcaption></figure>"
    )
}
