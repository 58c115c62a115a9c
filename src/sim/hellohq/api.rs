//! The helloHQ API surface of the simulator: v2 REST routes (A3, C4–C6) and
//! the v1 OData routes hqsync needs (contacts with all addresses C3/C7,
//! projects with members and contacts, leads, the deletions log). Handlers
//! hold the data lock only to read or write rows, never across an await.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::query::{ListQuery, QueryError, MAX_TOP};
use super::store::{Actor, Db, WriteError};
use super::{problem, write_error, Shared};

type S = State<Arc<Shared>>;
type Q = Query<HashMap<String, String>>;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/Users", get(users))
        .route("/v2/Users/{id}", get(user).put(put_user))
        .route("/v2/CompanyTypes", get(company_types))
        .route("/v2/CompanyTypes/{id}", get(company_type))
        .route("/v2/Companies", get(companies).post(post_company))
        .route("/v2/Companies/{id}", get(company).put(put_company).delete(delete_company))
        .route("/v2/Companies/{id}/Addresses", get(company_addresses))
        .route("/v2/Companies/{id}/UpdateCompanyTypes", post(update_company_types))
        .route("/v2/ContactPersons", get(contacts).post(post_contact))
        .route("/v2/ContactPersons/{id}", get(contact).put(put_contact).delete(delete_contact))
        .route("/v2/Projects", get(projects).post(post_project))
        .route("/v2/Projects/Tasks", get(tasks))
        .route("/v2/Projects/{id}", get(project).put(put_project))
        .route("/v2/Projects/{id}/ProjectMembers", get(project_members))
        .route("/v2/Projects/{id}/Tasks", get(project_tasks).post(post_project_task))
        .route("/v2/Projects/{id}/Tasks/{task_id}", put(put_project_task))
        .route("/v2/Absences", get(absences).post(post_absence))
        .route("/v2/Absences/{id}", get(absence).delete(delete_absence))
        .route("/v1/{*rest}", any(v1))
}

// ---- helpers ---------------------------------------------------------------

fn not_found() -> Response {
    write_error(WriteError::NotFound)
}

fn bad_query(e: QueryError) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "One or more validation errors occurred.",
        Some([(e.param.to_string(), vec![e.message])].into()),
    )
}

fn parse_id(raw: &str) -> Option<i32> {
    raw.trim().parse::<i32>().ok().filter(|i| *i > 0)
}

fn bad_json(e: serde_json::Error) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "One or more validation errors occurred.",
        Some([("$".to_string(), vec![format!("The JSON value could not be read: {e}")])].into()),
    )
}

fn one(v: Option<Value>) -> Response {
    match v {
        Some(v) => Json(v).into_response(),
        None => not_found(),
    }
}

/// The URL of the page after this one, or "" when this is the last (A3).
fn next_link(base: &str, uri: &Uri, q: &ListQuery, total: usize) -> String {
    if q.top == 0 || q.skip + q.top >= total {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let skip_key =
        pairs.iter().find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case("skip")).map(|(k, _)| k.clone());
    let top_key =
        pairs.iter().find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case("top")).map(|(k, _)| k.clone());
    pairs.retain(|(k, _)| {
        !k.trim_start_matches('$').eq_ignore_ascii_case("skip")
            && !k.trim_start_matches('$').eq_ignore_ascii_case("top")
    });
    // The next link speaks the spelling the request used (an endpoint that
    // honours only `$top` names `$skip` in its own link).
    let top_key = top_key.unwrap_or_else(|| "top".into());
    let skip_key = skip_key.unwrap_or_else(|| if top_key.starts_with('$') { "$skip".into() } else { "skip".into() });
    pairs.push((top_key, q.top.to_string()));
    pairs.push((skip_key, (q.skip + q.top).to_string()));
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    format!("{base}{}?{query}", uri.path())
}

/// A v2 list: bare JSON array with `helloHQ-Count` and `helloHQ-NextLink`.
fn list(
    s: &Shared,
    uri: &Uri,
    params: &HashMap<String, String>,
    rows: impl FnOnce(&Db, &ListQuery) -> Vec<Value>,
) -> Response {
    let knobs = s.faults();
    let params = knobs.honoured(uri.path(), params);
    let q = match ListQuery::parse(&params) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let all = s.with_db(|db| rows(db, &q));
    let (total, page) = q.apply(all);
    let next = if knobs.next_links { next_link(&s.base_url, uri, &q, total) } else { String::new() };
    let mut r = Json(Value::Array(page)).into_response();
    let h = r.headers_mut();
    h.insert("helloHQ-Count", HeaderValue::from(total as u64));
    h.insert("helloHQ-NextLink", HeaderValue::from_str(&next).unwrap_or(HeaderValue::from_static("")));
    r
}

/// Runs a write under the lock, then renders the row it names.
fn write(s: &Shared, f: impl FnOnce(&mut Db) -> Result<Option<Value>, WriteError>) -> Response {
    match s.with_db(f) {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => StatusCode::OK.into_response(),
        Err(e) => write_error(e),
    }
}

macro_rules! id_or_404 {
    ($raw:expr) => {
        match parse_id(&$raw) {
            Some(id) => id,
            None => return not_found(),
        }
    };
}

macro_rules! body_or_400 {
    ($bytes:expr) => {
        match serde_json::from_slice::<Value>(&$bytes) {
            Ok(v) => v,
            Err(e) => return bad_json(e),
        }
    };
}

// ---- users, types, resources ----------------------------------------------

async fn users(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, _| db.users.keys().filter_map(|id| db.user_v2(*id)).collect())
}

async fn user(State(s): S, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    one(s.with_db(|db| db.user_v2(id)))
}

async fn put_user(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>, body: Bytes) -> Response {
    let id = id_or_404!(id);
    let body = body_or_400!(body);
    write(&s, |db| {
        db.replace_user(id, &body, actor)?;
        Ok(db.user_v2(id))
    })
}

async fn company_types(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, _| db.company_types.values().cloned().collect())
}

async fn company_type(State(s): S, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    one(s.with_db(|db| db.company_types.get(&id).cloned()))
}

// ---- companies -------------------------------------------------------------

async fn companies(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, q| {
        let expand = q.expands("contactPersons");
        db.companies.keys().filter_map(|id| db.company_v2(*id, expand)).collect()
    })
}

async fn company(State(s): S, Path(id): Path<String>, Query(p): Q) -> Response {
    let id = id_or_404!(id);
    let q = match ListQuery::parse(&p) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    one(s.with_db(|db| db.company_v2(id, q.expands("contactPersons"))))
}

async fn company_addresses(State(s): S, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    one(s.with_db(|db| db.company_v2(id, false).map(|c| c["addresses"].clone())))
}

async fn post_company(State(s): S, Extension(actor): Extension<Actor>, body: Bytes) -> Response {
    let body = body_or_400!(body);
    write(&s, |db| {
        let id = db.create_company(&body, actor)?;
        Ok(db.company_v2(id, false))
    })
}

async fn put_company(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>, body: Bytes) -> Response {
    let id = id_or_404!(id);
    let body = body_or_400!(body);
    write(&s, |db| {
        db.replace_company(id, &body, actor)?;
        Ok(db.company_v2(id, false))
    })
}

async fn update_company_types(
    State(s): S,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = id_or_404!(id);
    let body = body_or_400!(body);
    write(&s, |db| {
        db.update_company_types(id, &body, actor)?;
        Ok(db.company_v2(id, false))
    })
}

async fn delete_company(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    write(&s, |db| db.delete_company(id, actor).map(|_| None))
}

// ---- contact persons -------------------------------------------------------

async fn contacts(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, q| {
        let expand = q.expands("company");
        db.contacts.keys().filter_map(|id| db.contact_v2(*id, expand)).collect()
    })
}

async fn contact(State(s): S, Path(id): Path<String>, Query(p): Q) -> Response {
    let id = id_or_404!(id);
    let expand = ListQuery::parse(&p).map(|q| q.expands("company")).unwrap_or(false);
    one(s.with_db(|db| db.contact_v2(id, expand)))
}

async fn post_contact(State(s): S, Extension(actor): Extension<Actor>, body: Bytes) -> Response {
    let body = body_or_400!(body);
    write(&s, |db| {
        let id = db.create_contact(&body, actor)?;
        Ok(db.contact_v2(id, false))
    })
}

async fn put_contact(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>, body: Bytes) -> Response {
    let id = id_or_404!(id);
    let body = body_or_400!(body);
    write(&s, |db| {
        db.replace_contact(id, &body, actor)?;
        Ok(db.contact_v2(id, false))
    })
}

async fn delete_contact(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    write(&s, |db| db.delete_contact(id, actor).map(|_| None))
}

// ---- projects --------------------------------------------------------------

async fn projects(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, q| db.projects.keys().filter_map(|id| db.project_v2(*id, &|n| q.expands(n))).collect())
}

async fn project(State(s): S, Path(id): Path<String>, Query(p): Q) -> Response {
    let id = id_or_404!(id);
    let q = match ListQuery::parse(&p) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    one(s.with_db(|db| db.project_v2(id, &|n| q.expands(n))))
}

async fn project_members(State(s): S, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    one(s.with_db(|db| db.project_members(id)))
}

async fn post_project(State(s): S, Extension(actor): Extension<Actor>, body: Bytes) -> Response {
    let body = body_or_400!(body);
    write(&s, |db| {
        let id = db.create_project(&body, actor)?;
        Ok(db.project_v2(id, &|_| false))
    })
}

async fn put_project(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>, body: Bytes) -> Response {
    let id = id_or_404!(id);
    let body = body_or_400!(body);
    write(&s, |db| {
        db.replace_project(id, &body, actor)?;
        Ok(db.project_v2(id, &|_| false))
    })
}

// ---- tasks and appointments (C4) ------------------------------------------

fn task_rows(db: &Db, q: &ListQuery, project: Option<i32>, actor: Actor, expand_honoured: bool) -> Vec<Value> {
    let expand = expand_honoured && q.expands("resourceToTasks");
    db.tasks
        .iter()
        .filter(|(_, t)| project.is_none_or(|p| t["projectId"].as_i64() == Some(p.into())))
        .filter(|(id, _)| db.task_visible(**id, actor))
        .filter_map(|(id, _)| db.task_v2(*id, expand))
        .collect()
}

async fn tasks(State(s): S, Extension(actor): Extension<Actor>, uri: Uri, Query(p): Q) -> Response {
    let honoured = s.faults().expand_assignments;
    list(&s, &uri, &p, |db, q| task_rows(db, q, None, actor, honoured))
}

async fn project_tasks(
    State(s): S,
    Extension(actor): Extension<Actor>,
    uri: Uri,
    Path(id): Path<String>,
    Query(p): Q,
) -> Response {
    let id = id_or_404!(id);
    if !s.with_db(|db| db.projects.contains_key(&id)) {
        return not_found();
    }
    let honoured = s.faults().expand_assignments;
    list(&s, &uri, &p, |db, q| task_rows(db, q, Some(id), actor, honoured))
}

fn create_task(s: &Shared, actor: Actor, body: Value) -> Response {
    write(s, |db| {
        let id = db.create_task_http(&body, actor)?;
        Ok(db.task_v2(id, false))
    })
}

async fn post_project_task(
    State(s): S,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let id = id_or_404!(id);
    let mut body = body_or_400!(body);
    if !s.with_db(|db| db.projects.contains_key(&id)) {
        return not_found();
    }
    if let Some(o) = body.as_object_mut() {
        o.insert("projectId".into(), id.into());
    }
    create_task(&s, actor, body)
}

fn replace_task(s: &Shared, actor: Actor, id: i32, body: Value) -> Response {
    write(s, |db| {
        db.replace_task(id, &body, actor)?;
        Ok(db.task_v2(id, false))
    })
}

async fn put_project_task(
    State(s): S,
    Extension(actor): Extension<Actor>,
    Path((project, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let project = id_or_404!(project);
    let id = id_or_404!(id);
    let mut body = body_or_400!(body);
    let belongs = s.with_db(|db| db.tasks.get(&id).is_some_and(|t| t["projectId"].as_i64() == Some(project.into())));
    if !belongs {
        return not_found();
    }
    if let Some(o) = body.as_object_mut() {
        o.entry("projectId").or_insert(project.into());
    }
    replace_task(&s, actor, id, body)
}

// ---- absences (A8) ---------------------------------------------------------

async fn absences(State(s): S, uri: Uri, Query(p): Q) -> Response {
    list(&s, &uri, &p, |db, _| db.absences.keys().filter_map(|id| db.absence_v2(*id)).collect())
}

async fn absence(State(s): S, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    one(s.with_db(|db| db.absence_v2(id)))
}

async fn post_absence(State(s): S, Extension(actor): Extension<Actor>, body: Bytes) -> Response {
    let body = body_or_400!(body);
    write(&s, |db| {
        let id = db.create_absence(&body, actor)?;
        Ok(db.absence_v2(id))
    })
}

async fn delete_absence(State(s): S, Extension(actor): Extension<Actor>, Path(id): Path<String>) -> Response {
    let id = id_or_404!(id);
    write(&s, |db| db.delete_absence(id, actor).map(|_| None))
}

// ---- v1 (OData, PascalCase) ------------------------------------------------

/// `Name` or `Name(123)` of one path segment.
fn odata_segment(seg: &str) -> (String, Option<Result<i32, ()>>) {
    match seg.split_once('(') {
        Some((name, rest)) => {
            let inner = rest.strip_suffix(')').unwrap_or(rest);
            (name.to_string(), Some(parse_id(inner).ok_or(())))
        }
        None => (seg.to_string(), None),
    }
}

fn v1_context(s: &Shared, set: &str, entity: bool) -> String {
    format!("{}/v1/$metadata#{set}{}", s.base_url, if entity { "/$entity" } else { "" })
}

async fn v1(
    State(s): S,
    Extension(actor): Extension<Actor>,
    method: Method,
    uri: Uri,
    Path(rest): Path<String>,
    Query(p): Q,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = rest.split('/').filter(|x| !x.is_empty()).collect();
    let (set, key) = segs.first().map(|x| odata_segment(x)).unwrap_or_default();
    v1_inner(&s, actor, &method, &uri, &set, key, segs.get(1).copied(), &p, &body)
}

/// The route template of a v1 path (`/v1/Leads(7)` → `/v1/Leads({id})`),
/// for stats: v1 keys sit inside a segment, so axum cannot name the route.
pub(super) fn v1_template(path: &str) -> String {
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    let segs: Vec<String> = rest
        .split('/')
        .filter(|x| !x.is_empty())
        .map(|seg| match odata_segment(seg) {
            (name, Some(_)) if !seg.ends_with("()") => format!("{name}({{id}})"),
            _ => seg.to_string(),
        })
        .collect();
    format!("/v1/{}", segs.join("/"))
}

#[allow(clippy::too_many_arguments)]
fn v1_inner(
    s: &Shared,
    actor: Actor,
    method: &Method,
    uri: &Uri,
    set: &str,
    key: Option<Result<i32, ()>>,
    tail: Option<&str>,
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    let knobs = s.faults();
    let mut params = params.clone();
    if set == "ConfigSystemEvents" && !knobs.deletions_filter {
        // Knob: a deletions log that ignores `$filter` (B11).
        params.retain(|k, _| !k.trim_start_matches('$').eq_ignore_ascii_case("filter"));
    }
    let q = match ListQuery::parse(&params) {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let expand = |n: &str| q.expands(n);
    let id = match key {
        Some(Ok(id)) => Some(id),
        Some(Err(())) => return not_found(),
        None => None,
    };
    let entity = |v: Option<Value>, set: &str| match v {
        Some(mut v) => {
            v["@odata.context"] = v1_context(s, set, true).into();
            Json(v).into_response()
        }
        None => not_found(),
    };
    match (method.as_str(), set, id, tail) {
        ("GET", "ConfigSystemEvents", None, Some("do.GetDeleted()")) => {
            v1_collection(s, uri, &q, "ConfigSystemEvents", s.with_db(|db| db.events.clone()))
        }
        // Tasks (published v1, A9): read one, delete; assignments (C5).
        ("GET", "ProjectTasks", Some(id), None) => {
            entity(s.with_db(|db| db.task_visible(id, actor).then(|| db.task_v1(id)).flatten()), set)
        }
        ("DELETE", "ProjectTasks", Some(id), None) => match s.with_db(|db| db.delete_task(id, actor)) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => write_error(e),
        },
        ("GET", "ProjectTasks", Some(id), Some("Assignments")) => {
            match s.with_db(|db| db.task_visible(id, actor).then(|| db.assignments_v1(id)).flatten()) {
                // The spec answers a bare array of TaskAssignment.
                Some(list) => Json(Value::Array(list)).into_response(),
                None => not_found(),
            }
        }
        ("POST", "ProjectTasks", Some(id), Some("Assignments")) => {
            let body = body_or_400!(body);
            match s.with_db(|db| db.add_assignment(id, &body, actor).map(|aid| db.assignment_v1(id, aid))) {
                Ok(v) => {
                    let mut r = entity(v, "TaskAssignments");
                    *r.status_mut() = StatusCode::CREATED;
                    r
                }
                Err(e) => write_error(e),
            }
        }
        ("GET" | "DELETE", "ProjectTasks", Some(id), Some(tail)) if tail.starts_with("Assignments(") => {
            let aid = match odata_segment(tail).1 {
                Some(Ok(aid)) => aid,
                _ => return not_found(),
            };
            if method == Method::GET {
                entity(s.with_db(|db| db.assignment_v1(id, aid)), "TaskAssignments")
            } else {
                match s.with_db(|db| db.delete_assignment(id, aid, actor)) {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => write_error(e),
                }
            }
        }
        ("GET", "ContactPersons", None, None) => {
            let rows = s.with_db(|db| db.contacts.keys().filter_map(|id| db.contact_v1(*id, &expand)).collect());
            v1_collection(s, uri, &q, set, rows)
        }
        ("GET", "ContactPersons", Some(id), None) => entity(s.with_db(|db| db.contact_v1(id, &expand)), set),
        ("PUT", "ContactPersons", Some(id), None) => {
            let body = body_or_400!(body);
            match s
                .with_db(|db| db.update_contact_v1(id, &body, actor).map(|_| db.contact_v1(id, &|n| n == "Addresses")))
            {
                Ok(v) => entity(v, set),
                Err(e) => write_error(e),
            }
        }
        ("GET", "Projects", None, None) => {
            let rows = s.with_db(|db| db.projects.keys().filter_map(|id| db.project_v1(*id, &expand)).collect());
            v1_collection(s, uri, &q, set, rows)
        }
        ("GET", "Projects", Some(id), None) => entity(s.with_db(|db| db.project_v1(id, &expand)), set),
        ("GET", "Projects", Some(id), Some("Members")) => {
            match s.with_db(|db| db.project_v1(id, &|n| n == "Members")) {
                Some(p) => {
                    v1_collection(s, uri, &q, "ProjectMembers", p["Members"].as_array().cloned().unwrap_or_default())
                }
                None => not_found(),
            }
        }
        ("GET", "Leads", None, None) => {
            let rows = s.with_db(|db| db.leads.keys().filter_map(|id| db.lead_v1(*id, &expand)).collect());
            v1_collection(s, uri, &q, set, rows)
        }
        ("GET", "Leads", Some(id), None) => entity(s.with_db(|db| db.lead_v1(id, &expand)), set),
        ("POST", "Leads", None, None) => {
            let body = body_or_400!(body);
            match s.with_db(|db| db.create_lead(&body, actor).map(|id| db.lead_v1(id, &|_| true))) {
                Ok(v) => {
                    let mut r = entity(v, set);
                    *r.status_mut() = StatusCode::CREATED;
                    r
                }
                Err(e) => write_error(e),
            }
        }
        ("PUT", "Leads", Some(id), None) => {
            let body = body_or_400!(body);
            match s.with_db(|db| db.replace_lead(id, &body, actor).map(|_| db.lead_v1(id, &|_| true))) {
                Ok(v) => entity(v, set),
                Err(e) => write_error(e),
            }
        }
        ("DELETE", "Leads", Some(id), None) => match s.with_db(|db| db.delete_lead(id, actor)) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => write_error(e),
        },
        _ => {
            let mut r = problem(StatusCode::NOT_FOUND, super::NO_ROUTE, None);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
    }
}

/// OData collection envelope with `@odata.count` on `$count=true` and
/// `@odata.nextLink` when the server pages (A3).
fn v1_collection(s: &Shared, uri: &Uri, q: &ListQuery, set: &str, rows: Vec<Value>) -> Response {
    let (total, page) = q.apply(rows);
    let mut out = json!({"@odata.context": v1_context(s, set, false)});
    if q.count {
        out["@odata.count"] = total.into();
    }
    out["value"] = Value::Array(page);
    let next = if s.faults().next_links { next_link(&s.base_url, uri, q, total) } else { String::new() };
    if !next.is_empty() && q.top == MAX_TOP {
        out["@odata.nextLink"] = next.into();
    }
    Json(out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_paths_map_to_route_templates() {
        assert_eq!(v1_template("/v1/Leads(7)"), "/v1/Leads({id})");
        assert_eq!(v1_template("/v1/Leads"), "/v1/Leads");
        assert_eq!(v1_template("/v1/Projects(3)/Members"), "/v1/Projects({id})/Members");
        assert_eq!(v1_template("/v1/ConfigSystemEvents/do.GetDeleted()"), "/v1/ConfigSystemEvents/do.GetDeleted()");
    }
}
