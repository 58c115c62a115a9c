//! The status page (`GET /`): server-rendered HTML, no script, behind the
//! admin API's authentication. A login form takes the token and keeps it in
//! an HttpOnly cookie; the page then shows, per tenant the caller may see:
//! mailboxes and kinds with direction, last sync, linked items, errors,
//! conflicts, held deletions and subscription expiry, pending hints, and a
//! small SVG chart of changes per minute over the last hour.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::admin::{Principal, SESSION_COOKIE};
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

fn html_page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    ))
}

fn login_page(message: Option<&str>) -> Html<String> {
    let msg = message.map(|m| format!("<p class=\"bad\" id=\"login-error\">{}</p>", esc(m))).unwrap_or_default();
    html_page(
        "hqsync — sign in",
        &format!(
            "<h1>hqsync status</h1>{msg}<form class=\"login\" method=\"post\" action=\"/login\">\
             <p><label for=\"token\">Admin token (JWT)</label><br><input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" required></p>\
             <p><button type=\"submit\">Sign in</button></p></form>"
        ),
    )
}

/// The login form.
#[utoipa::path(get, path = "/login", tag = "status", responses((status = 200, description = "Login form", content_type = "text/html", body = String)))]
pub async fn login_form() -> Html<String> {
    login_page(None)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    pub token: String,
}

/// Checks the token and keeps it in an HttpOnly cookie; back to `/`.
#[utoipa::path(post, path = "/login", tag = "status", request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in; see /"), (status = 401, description = "Token refused", content_type = "text/html", body = String),
        (status = 400, description = "The form does not decode (e.g. no `token` field)", body = super::error::ErrorBody),
        (status = 413, description = "Body over `http.max_body_bytes`", body = super::error::ErrorBody),
        (status = 415, description = "Not sent as application/x-www-form-urlencoded", body = super::error::ErrorBody)))]
pub async fn login(State(state): State<AppState>, ApiForm(form): ApiForm<LoginForm>) -> Response {
    let Some(auth) = state.admin.as_ref() else {
        return (StatusCode::UNAUTHORIZED, login_page(Some("The admin API is not configured (admin.jwt_secret).")))
            .into_response();
    };
    let token = form.token.trim();
    match auth.verify(token) {
        Ok(_) => {
            let secure = if state.public_url.starts_with("https://") { "; Secure" } else { "" };
            let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/{secure}");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = cookie.parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            (StatusCode::UNAUTHORIZED, login_page(Some(&format!("Token refused: {}", e.message)))).into_response()
        }
    }
}

/// Forgets the session cookie.
#[utoipa::path(post, path = "/logout", tag = "status", responses((status = 303, description = "Signed out")))]
pub async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = format!("{SESSION_COOKIE}=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/").parse() {
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
    let mut req = axum::http::Request::new(());
    *req.headers_mut() = headers;
    let (mut parts, _) = req.into_parts();
    let who =
        match <Principal as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await {
            Ok(p) => p,
            Err(e) if e.code == "missing_token" => return login_page(None).into_response(),
            Err(e) => return (StatusCode::UNAUTHORIZED, login_page(Some(&e.message))).into_response(),
        };
    match render(&state, &who).await {
        Ok(html) => html.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, html_page("hqsync", &format!("<p class=\"bad\">{}</p>", esc(&e))))
            .into_response(),
    }
}

async fn render(state: &AppState, who: &Principal) -> Result<Html<String>, String> {
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
        "<h1>hqsync status</h1><p class=\"muted\">signed in as {} · {} · <form style=\"display:inline\" method=\"post\" action=\"/logout\"><button>sign out</button></form></p>",
        esc(&who.sub),
        esc(&Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string())
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
