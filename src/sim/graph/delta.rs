//! Delta-query mechanics shared by every delta route: opaque `$skiptoken` /
//! `$deltatoken` backed by server-side cursors, page size from
//! `Prefer: odata.maxpagesize` or `$top`, and `410 Gone` + `syncStateNotFound`
//! for tokens the store no longer knows (evicted via `/_sim/delta/evict`).
//! Which items a round contains is decided by the caller.
//!
//! Two faults make clients prove their robustness (GRAPH.md §5.1): with
//! `delta_empty_pages`, a page that would carry items is preceded by an empty
//! one that still has `@odata.nextLink`; with `delta_replay`, every page
//! reached through a link repeats the items of the page before it (for a
//! `$deltatoken`, the last page of the previous round).

use std::collections::VecDeque;

use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};

use super::error::{GResult, GraphError};
use super::model::{DeltaCursor, DeltaScope, World};
use super::router::Ctx;
use super::{lock, wire};

const DEFAULT_PAGE_SIZE: usize = 10;
const MAX_PAGE_SIZE: usize = 1000;

pub(crate) struct DeltaPage {
    pub ids: Vec<String>,
    /// `@odata.nextLink` or `@odata.deltaLink`.
    pub link_name: &'static str,
    pub link: String,
    pub select: Option<Vec<String>>,
}

impl DeltaPage {
    /// The page as Graph answers it: each id rendered by `render`, or, when
    /// it is gone (or out of scope), an `@removed` tombstone of `odata_type`;
    /// then the next or delta link. `collection` names the `$metadata` entity.
    pub(crate) fn body(
        &self,
        ctx: &Ctx<'_>,
        collection: &str,
        odata_type: &str,
        mut render: impl FnMut(&str) -> Option<serde_json::Value>,
    ) -> serde_json::Value {
        let value: Vec<serde_json::Value> = self
            .ids
            .iter()
            .map(|id| {
                render(id).unwrap_or_else(
                    || serde_json::json!({"@odata.type": odata_type, "id": id, "@removed": {"reason": "deleted"}}),
                )
            })
            .collect();
        let mut out = serde_json::json!({
            "@odata.context": format!("{}/$metadata#Collection({collection})", ctx.graph_root()),
            "value": value,
        });
        out[self.link_name] = serde_json::json!(self.link);
        out
    }
}

/// A round's item sources: everything now in scope (initial round), or what
/// changed after a watermark (later rounds), in a stable order.
pub(crate) trait DeltaSource {
    fn initial_ids(&self, w: &World) -> Vec<String>;
    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String>;
}

/// The query that starts a fresh round of `scope` (the calendar window).
fn initial_query(scope: &DeltaScope) -> String {
    match scope {
        DeltaScope::CalendarView { start, end, .. } => {
            let f = |t: i64| {
                DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
            };
            format!("?startDateTime={}&endDateTime={}", f(*start), f(*end))
        }
        _ => String::new(),
    }
}

fn gone(ctx: &Ctx<'_>, path: &str, scope: &DeltaScope) -> GraphError {
    GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state generation is not found. Delta token is expired or invalid.",
    )
    .with_header("Location", &format!("{}{}{}", ctx.graph_root(), path, initial_query(scope)))
}

/// A token; calendar-view tokens carry their window (as Graph's do) ahead of the opaque part.
fn token_for(scope: &DeltaScope) -> String {
    match scope {
        DeltaScope::CalendarView { start, end, .. } => {
            format!("{}.{}", URL_SAFE_NO_PAD.encode(format!("{start}:{end}")), wire::opaque_token())
        }
        _ => wire::opaque_token(),
    }
}

/// The calendar window a calendar-view token was issued for.
pub(crate) fn window_of(token: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (head, _) = token.split_once('.')?;
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(head).ok()?).ok()?;
    let (s, e) = raw.split_once(':')?;
    Some((DateTime::from_timestamp(s.parse().ok()?, 0)?, DateTime::from_timestamp(e.parse().ok()?, 0)?))
}

/// Computes the next page of a delta round and stores the cursor behind its link.
pub(crate) fn next_page(
    w: &mut World,
    ctx: &Ctx<'_>,
    scope: DeltaScope,
    path: &str,
    source: &dyn DeltaSource,
) -> GResult<DeltaPage> {
    let skip = ctx.q("$skiptoken").map(str::to_string);
    let delta = ctx.q("$deltatoken").filter(|t| !t.is_empty()).map(str::to_string);
    let mut cursor = if let Some(tok) = skip {
        match w.delta_tokens.get(&tok) {
            Some(c) if c.scope == scope => c.clone(),
            _ => return Err(gone(ctx, path, &scope)),
        }
    } else if let Some(tok) = delta {
        match w.delta_tokens.get(&tok) {
            Some(c) if c.scope == scope => {
                DeltaCursor { pending: source.changed_ids(w, c.watermark).into(), watermark: w.seq, ..c.clone() }
            }
            _ => return Err(gone(ctx, path, &scope)),
        }
    } else {
        let page_size = ctx
            .prefer("odata.maxpagesize")
            .or_else(|| ctx.q("$top").map(str::to_string))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let select =
            ctx.q("$select").map(|s| s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect());
        DeltaCursor {
            scope,
            path: path.to_string(),
            pending: VecDeque::from(source.initial_ids(w)),
            watermark: w.seq,
            select,
            page_size,
            last_page: Vec::new(),
            after_empty: false,
        }
    };
    // A later request's maxpagesize applies to the pages it fetches.
    if let Some(n) = ctx.prefer("odata.maxpagesize").and_then(|s| s.parse::<usize>().ok()) {
        cursor.page_size = n.clamp(1, MAX_PAGE_SIZE);
    }
    let (replay, empty_pages) = {
        let f = lock(&ctx.shared.faults);
        (f.delta_replay, f.delta_empty_pages)
    };
    let ids: Vec<String> = if empty_pages && !cursor.after_empty && !cursor.pending.is_empty() {
        cursor.after_empty = true;
        Vec::new()
    } else {
        cursor.after_empty = false;
        let take = cursor.page_size.min(cursor.pending.len());
        let fresh: Vec<String> = cursor.pending.drain(..take).collect();
        let replayed = std::mem::replace(&mut cursor.last_page, fresh.clone());
        if replay {
            replayed.into_iter().chain(fresh).collect()
        } else {
            fresh
        }
    };
    let token = token_for(&cursor.scope);
    let (link_name, param) =
        if cursor.pending.is_empty() { ("@odata.deltaLink", "$deltatoken") } else { ("@odata.nextLink", "$skiptoken") };
    let link = format!("{}{}?{}={}", ctx.graph_root(), cursor.path, param, token);
    let select = cursor.select.clone();
    w.delta_tokens.insert(token, cursor);
    Ok(DeltaPage { ids, link_name, link, select })
}
