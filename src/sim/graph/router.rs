//! Request routing for the simulator. `/v1.0/…` goes through one
//! [`dispatch`] function (also used by `$batch` for each inner request), which
//! applies Graph's order of checks: bearer token, route, mailbox, access
//! policy, injected faults, throttling, then the resource handler.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{Map, Value};

use super::error::{GResult, GraphError, Reply};
use super::{auth, batch, contacts, control, events, lock, subscriptions, throttle, todo, wire, Shared};

pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(auth::token))
        .route("/_sim/stats", get(control::stats))
        .route("/_sim/faults", post(control::faults))
        .route("/_sim/reset", post(control::reset))
        .route("/_sim/seed", get(control::get_seed).post(control::post_seed))
        .route("/_sim/lifecycle", post(control::lifecycle))
        .route("/_sim/delta/evict", post(control::evict_delta))
        .route("/_sim/clock", post(control::clock))
        .route("/_sim/policy", post(control::policy))
        .route("/_sim/roles", post(control::roles))
        .route("/_sim/todo/move", post(control::move_task))
        .route("/_sim/move", post(control::move_contact))
        .route("/_sim/writes", get(control::writes).post(control::record_writes))
        .route("/v1.0/{*rest}", any(graph_entry))
        .with_state(shared)
}

/// One Graph request, whether from the wire or from inside a `$batch`.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    /// Path below `/v1.0`, starting with `/`, still percent-encoded.
    pub path: String,
    pub raw_query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

async fn graph_entry(
    State(shared): State<Arc<Shared>>,
    Path(_rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().strip_prefix("/v1.0").unwrap_or(uri.path()).to_string();
    let req = Req { method, path, raw_query: uri.query().map(str::to_string), headers, body };
    into_response(dispatch(&shared, req).await)
}

pub(crate) fn into_response(reply: Reply) -> Response {
    let mut resp = match reply.body {
        Some(body) => (reply.status, axum::Json(body)).into_response(),
        None => reply.status.into_response(),
    };
    for (k, v) in reply.headers.iter() {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

/// The routes of `/v1.0`, with their parameters (raw, percent-decoded).
#[derive(Debug, Clone)]
pub(crate) enum Route {
    Users,
    User {
        user: String,
    },
    ContactFolders {
        user: String,
    },
    ContactFolder {
        user: String,
        folder: String,
    },
    /// `folder: None` = the default Contacts folder (`/users/{u}/contacts`).
    Contacts {
        user: String,
        folder: Option<String>,
    },
    Contact {
        user: String,
        folder: Option<String>,
        contact: String,
    },
    ContactsDelta {
        user: String,
        folder: Option<String>,
    },
    Events {
        user: String,
    },
    Event {
        user: String,
        event: String,
    },
    CalendarView {
        user: String,
    },
    CalendarViewDelta {
        user: String,
    },
    TodoLists {
        user: String,
    },
    TodoListsDelta {
        user: String,
    },
    TodoList {
        user: String,
        list: String,
    },
    Tasks {
        user: String,
        list: String,
    },
    TasksDelta {
        user: String,
        list: String,
    },
    Task {
        user: String,
        list: String,
        task: String,
    },
    TaskExtensions {
        user: String,
        list: String,
        task: String,
    },
    TaskExtension {
        user: String,
        list: String,
        task: String,
        name: String,
    },
    EventInstances {
        user: String,
        event: String,
    },
    /// `accept`, `decline` or `tentativelyAccept` on an event.
    EventAnswer {
        user: String,
        event: String,
        answer: events::Answer,
    },
    ContactFoldersDelta {
        user: String,
    },
    Subscriptions,
    Subscription {
        id: String,
    },
    SubscriptionReauthorize {
        id: String,
    },
    Batch,
}

/// What the application access policy covers (To Do is not covered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Directory,
    Contacts,
    Calendar,
    Todo,
    Subscriptions,
    Batch,
}

impl Route {
    fn user(&self) -> Option<&str> {
        match self {
            Route::User { user }
            | Route::ContactFolders { user }
            | Route::ContactFolder { user, .. }
            | Route::Contacts { user, .. }
            | Route::Contact { user, .. }
            | Route::ContactsDelta { user, .. }
            | Route::Events { user }
            | Route::Event { user, .. }
            | Route::ContactFoldersDelta { user }
            | Route::EventInstances { user, .. }
            | Route::EventAnswer { user, .. }
            | Route::CalendarView { user }
            | Route::CalendarViewDelta { user }
            | Route::TodoLists { user }
            | Route::TodoListsDelta { user }
            | Route::TodoList { user, .. }
            | Route::Tasks { user, .. }
            | Route::TasksDelta { user, .. }
            | Route::Task { user, .. }
            | Route::TaskExtensions { user, .. }
            | Route::TaskExtension { user, .. } => Some(user),
            _ => None,
        }
    }
    fn area(&self) -> Area {
        match self {
            Route::Users | Route::User { .. } => Area::Directory,
            Route::Subscriptions | Route::Subscription { .. } | Route::SubscriptionReauthorize { .. } => {
                Area::Subscriptions
            }
            Route::Batch => Area::Batch,
            Route::Events { .. }
            | Route::Event { .. }
            | Route::EventInstances { .. }
            | Route::EventAnswer { .. }
            | Route::CalendarView { .. }
            | Route::CalendarViewDelta { .. } => Area::Calendar,
            Route::TodoLists { .. }
            | Route::TodoListsDelta { .. }
            | Route::TodoList { .. }
            | Route::Tasks { .. }
            | Route::TasksDelta { .. }
            | Route::Task { .. }
            | Route::TaskExtensions { .. }
            | Route::TaskExtension { .. } => Area::Todo,
            _ => Area::Contacts,
        }
    }
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg).decode_utf8_lossy().into_owned()
}

/// Matches a path against the route table. Literal segments compare
/// case-insensitively (as in Graph); ids keep their case.
pub(crate) fn route(path: &str) -> Option<(Route, &'static str)> {
    let orig: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let lower: Vec<String> = orig
        .iter()
        .map(|s| {
            let l = s.to_ascii_lowercase();
            match l.as_str() {
                "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()" => "delta".to_string(),
                _ => l,
            }
        })
        .collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let o = |i: usize| orig[i].clone();
    let r = match l.as_slice() {
        ["$batch"] => (Route::Batch, "/$batch"),
        ["users"] => (Route::Users, "/users"),
        ["users", _] => (Route::User { user: o(1) }, "/users/{user}"),
        ["users", _, "contactfolders"] => (Route::ContactFolders { user: o(1) }, "/users/{user}/contactFolders"),
        ["users", _, "contactfolders", "delta"] => {
            (Route::ContactFoldersDelta { user: o(1) }, "/users/{user}/contactFolders/delta")
        }
        ["users", _, "contactfolders", _] => {
            (Route::ContactFolder { user: o(1), folder: o(3) }, "/users/{user}/contactFolders/{folderId}")
        }
        ["users", _, "contactfolders", _, "contacts"] => {
            (Route::Contacts { user: o(1), folder: Some(o(3)) }, "/users/{user}/contactFolders/{folderId}/contacts")
        }
        ["users", _, "contactfolders", _, "contacts", "delta"] => (
            Route::ContactsDelta { user: o(1), folder: Some(o(3)) },
            "/users/{user}/contactFolders/{folderId}/contacts/delta",
        ),
        ["users", _, "contactfolders", _, "contacts", _] => (
            Route::Contact { user: o(1), folder: Some(o(3)), contact: o(5) },
            "/users/{user}/contactFolders/{folderId}/contacts/{contactId}",
        ),
        ["users", _, "contacts"] => (Route::Contacts { user: o(1), folder: None }, "/users/{user}/contacts"),
        ["users", _, "contacts", "delta"] => {
            (Route::ContactsDelta { user: o(1), folder: None }, "/users/{user}/contacts/delta")
        }
        ["users", _, "contacts", _] => {
            (Route::Contact { user: o(1), folder: None, contact: o(3) }, "/users/{user}/contacts/{contactId}")
        }
        ["users", _, "events"] | ["users", _, "calendar", "events"] => {
            (Route::Events { user: o(1) }, "/users/{user}/events")
        }
        ["users", _, "events", _] => (Route::Event { user: o(1), event: o(3) }, "/users/{user}/events/{eventId}"),
        ["users", _, "calendar", "events", _] => {
            (Route::Event { user: o(1), event: o(4) }, "/users/{user}/events/{eventId}")
        }
        ["users", _, "events", _, "instances"] => {
            (Route::EventInstances { user: o(1), event: o(3) }, "/users/{user}/events/{eventId}/instances")
        }
        ["users", _, "calendar", "events", _, "instances"] => {
            (Route::EventInstances { user: o(1), event: o(4) }, "/users/{user}/events/{eventId}/instances")
        }
        ["users", _, "events", _, a] | ["users", _, "calendar", "events", _, a]
            if events::Answer::from_segment(a).is_some() =>
        {
            let n = l.len();
            let answer = events::Answer::from_segment(a).expect("checked by the guard");
            (Route::EventAnswer { user: o(1), event: o(n - 2), answer }, answer_template(answer))
        }
        ["users", _, "calendarview"] | ["users", _, "calendar", "calendarview"] => {
            (Route::CalendarView { user: o(1) }, "/users/{user}/calendarView")
        }
        ["users", _, "calendarview", "delta"] | ["users", _, "calendar", "calendarview", "delta"] => {
            (Route::CalendarViewDelta { user: o(1) }, "/users/{user}/calendarView/delta")
        }
        ["users", _, "todo", "lists"] => (Route::TodoLists { user: o(1) }, "/users/{user}/todo/lists"),
        ["users", _, "todo", "lists", "delta"] => {
            (Route::TodoListsDelta { user: o(1) }, "/users/{user}/todo/lists/delta")
        }
        ["users", _, "todo", "lists", _] => {
            (Route::TodoList { user: o(1), list: o(4) }, "/users/{user}/todo/lists/{listId}")
        }
        ["users", _, "todo", "lists", _, "tasks"] => {
            (Route::Tasks { user: o(1), list: o(4) }, "/users/{user}/todo/lists/{listId}/tasks")
        }
        ["users", _, "todo", "lists", _, "tasks", "delta"] => {
            (Route::TasksDelta { user: o(1), list: o(4) }, "/users/{user}/todo/lists/{listId}/tasks/delta")
        }
        ["users", _, "todo", "lists", _, "tasks", _] => {
            (Route::Task { user: o(1), list: o(4), task: o(6) }, "/users/{user}/todo/lists/{listId}/tasks/{taskId}")
        }
        ["users", _, "todo", "lists", _, "tasks", _, "extensions"] => (
            Route::TaskExtensions { user: o(1), list: o(4), task: o(6) },
            "/users/{user}/todo/lists/{listId}/tasks/{taskId}/extensions",
        ),
        ["users", _, "todo", "lists", _, "tasks", _, "extensions", _] => (
            Route::TaskExtension { user: o(1), list: o(4), task: o(6), name: o(8) },
            "/users/{user}/todo/lists/{listId}/tasks/{taskId}/extensions/{name}",
        ),
        ["subscriptions"] => (Route::Subscriptions, "/subscriptions"),
        ["subscriptions", _] => (Route::Subscription { id: o(1) }, "/subscriptions/{id}"),
        ["subscriptions", _, "reauthorize"] => {
            (Route::SubscriptionReauthorize { id: o(1) }, "/subscriptions/{id}/reauthorize")
        }
        _ => return None,
    };
    Some(r)
}

/// Per-request context handed to resource handlers.
pub(crate) struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    pub req: &'a Req,
    pub query: Vec<(String, String)>,
    /// The addressed mailbox's id, when the route names one.
    pub mailbox_id: Option<String>,
}

impl Ctx<'_> {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The request body as a JSON object (Graph answers 400 otherwise).
    pub fn json_object(&self) -> GResult<Map<String, Value>> {
        if self.req.body.is_empty() {
            return Err(GraphError::bad_request("BadRequest", "Empty Payload. JSON content expected."));
        }
        match serde_json::from_slice::<Value>(&self.req.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(GraphError::body_read("Invalid JSON. An object was expected.")),
            Err(e) => Err(GraphError::body_read(format!("Invalid JSON. {e}"))),
        }
    }

    /// The `If-Match` value of an Outlook item write, or None when the
    /// tenant ignores the header (knob `ifMatch`: the config, or the
    /// `/_sim/faults` override).
    pub fn if_match(&self) -> Option<String> {
        if self.shared.if_match() == super::IfMatch::Ignore {
            return None;
        }
        self.req.headers.get("if-match").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
    }

    /// A `Prefer` preference value, e.g. `odata.maxpagesize`.
    pub fn prefer(&self, name: &str) -> Option<String> {
        self.req
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    }

    /// The request prefers immutable ids (`Prefer: IdType="ImmutableId"`; the
    /// preference name compares case-insensitively, like every preference).
    pub fn immutable_ids(&self) -> bool {
        prefers_immutable_ids(&self.req.headers)
    }

    /// Page size of a collection: `$top`, else `Prefer: odata.maxpagesize`, else `default`.
    pub fn page_size(&self, default: usize) -> usize {
        self.q("$top")
            .map(str::to_string)
            .or_else(|| self.prefer("odata.maxpagesize"))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(default)
            .clamp(1, 1000)
    }

    pub fn graph_root(&self) -> String {
        format!("{}/v1.0", self.shared.base_url)
    }
}

/// True when `headers` carry `Prefer: IdType="ImmutableId"` (in any of the `Prefer` headers).
pub(crate) fn prefers_immutable_ids(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split_once('='))
        .any(|(k, v)| {
            k.trim().eq_ignore_ascii_case("idtype") && v.trim().trim_matches('"').eq_ignore_ascii_case("immutableid")
        })
}

/// Serves one Graph request end to end (auth, checks, handler, error shape).
///
/// Returns a boxed `Send` future: `$batch` calls back into `dispatch`, and the
/// explicit type breaks the recursion for the compiler.
pub(crate) fn dispatch(shared: &Arc<Shared>, req: Req) -> futures::future::BoxFuture<'_, Reply> {
    Box::pin(dispatch_owned(shared, req))
}

async fn dispatch_owned(shared: &Arc<Shared>, req: Req) -> Reply {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req
        .headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let now = shared.clock.now();
    let mut reply = match dispatch_inner(shared, &req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == StatusCode::TOO_MANY_REQUESTS {
                lock(&shared.stats).throttled += 1;
            }
            e.into_reply(&request_id, &client_request_id, &wire::ts_inner(now))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        reply.headers.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&client_request_id) {
        reply.headers.insert("client-request-id", v);
    }
    reply
}

async fn dispatch_inner(shared: &Arc<Shared>, req: &Req) -> GResult {
    auth::verify_bearer(shared, &req.headers)?;
    let Some((route, template)) = route(&req.path) else {
        let last = req.path.trim_matches('/').rsplit('/').next().unwrap_or_default().to_string();
        lock(&shared.stats).count_request(&req.method, "(unmatched)");
        return Err(GraphError::bad_request("BadRequest", format!("Resource not found for the segment '{last}'.")));
    };
    lock(&shared.stats).count_request(&req.method, template);
    let query: Vec<(String, String)> = req
        .raw_query
        .as_deref()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();

    let mut mailbox_id = None;
    if let Some(user) = route.user() {
        let w = lock(&shared.world);
        let Some(i) = w.mailbox_index(user) else {
            return Err(match route {
                Route::User { .. } => GraphError::new(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    format!("Resource '{user}' does not exist or one of its queried reference-property objects are not present."),
                ),
                // A user's email address that is not their UPN, used as the key.
                _ if w.is_address_not_key(user) => GraphError::resource_not_found(),
                _ => GraphError::invalid_user(user),
            });
        };
        let mb = &w.mailboxes[i];
        // The application access policy covers Calendars and Contacts, not Tasks.
        if matches!(route.area(), Area::Contacts | Area::Calendar) && !mb.in_policy_scope {
            return Err(GraphError::access_denied());
        }
        mailbox_id = Some(mb.id.clone());
    }

    if route.area() != Area::Batch {
        control::injected_fault(shared)?;
    }
    let _permit = match &mailbox_id {
        Some(mb) => Some(throttle::acquire(shared, mb)?),
        None => None,
    };
    if let Some(mb) = &mailbox_id {
        if matches!(req.method, Method::POST | Method::PATCH | Method::PUT) {
            throttle::charge_upload(shared, mb, req.body.len() as u64)?;
        }
    }
    let latency = lock(&shared.faults).latency_ms;
    if latency > 0 && route.area() != Area::Batch {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }

    let ctx = Ctx { shared, req, query, mailbox_id };
    let m = req.method.clone();
    match route {
        Route::Batch if m == Method::POST => batch::handle(&ctx).await,
        Route::Users if m == Method::GET => contacts::list_users(&ctx),
        Route::User { .. } if m == Method::GET => contacts::get_user(&ctx),
        Route::ContactFolders { .. } => match m {
            Method::GET => contacts::list_folders(&ctx),
            Method::POST => contacts::create_folder(&ctx),
            _ => Err(method_not_allowed()),
        },
        Route::ContactFolder { folder, .. } => match m {
            Method::GET => contacts::get_folder(&ctx, &folder),
            Method::PATCH => contacts::update_folder(&ctx, &folder),
            Method::DELETE => contacts::delete_folder(&ctx, &folder),
            _ => Err(method_not_allowed()),
        },
        Route::Contacts { folder, .. } => match m {
            Method::GET => contacts::list_contacts(&ctx, folder.as_deref()),
            Method::POST => contacts::create_contact(&ctx, folder.as_deref()),
            _ => Err(method_not_allowed()),
        },
        Route::Contact { folder, contact, .. } => match m {
            Method::GET => contacts::get_contact(&ctx, folder.as_deref(), &contact),
            Method::PATCH => contacts::update_contact(&ctx, folder.as_deref(), &contact),
            Method::DELETE => contacts::delete_contact(&ctx, folder.as_deref(), &contact),
            _ => Err(method_not_allowed()),
        },
        Route::ContactFoldersDelta { .. } if m == Method::GET => contacts::folders_delta(&ctx),
        Route::ContactsDelta { folder, .. } if m == Method::GET => contacts::delta(&ctx, folder.as_deref()),
        Route::Events { .. } => match m {
            Method::GET => events::list(&ctx),
            Method::POST => events::create(&ctx),
            _ => Err(method_not_allowed()),
        },
        Route::Event { event, .. } => match m {
            Method::GET => events::get(&ctx, &event),
            Method::PATCH => events::update(&ctx, &event),
            Method::DELETE => events::delete(&ctx, &event),
            _ => Err(method_not_allowed()),
        },
        Route::EventInstances { event, .. } if m == Method::GET => events::instances(&ctx, &event),
        Route::EventAnswer { event, answer, .. } if m == Method::POST => events::respond(&ctx, &event, answer),
        Route::CalendarView { .. } if m == Method::GET => events::calendar_view(&ctx),
        Route::CalendarViewDelta { .. } if m == Method::GET => events::view_delta(&ctx),
        Route::TodoLists { .. } => match m {
            Method::GET => todo::lists(&ctx),
            Method::POST => todo::create_list(&ctx),
            _ => Err(method_not_allowed()),
        },
        Route::TodoListsDelta { .. } if m == Method::GET => todo::lists_delta(&ctx),
        Route::TodoList { list, .. } => match m {
            Method::GET => todo::get_list(&ctx, &list),
            Method::PATCH => todo::update_list(&ctx, &list),
            Method::DELETE => todo::delete_list(&ctx, &list),
            _ => Err(method_not_allowed()),
        },
        Route::Tasks { list, .. } => match m {
            Method::GET => todo::tasks(&ctx, &list),
            Method::POST => todo::create_task(&ctx, &list),
            _ => Err(method_not_allowed()),
        },
        Route::TasksDelta { list, .. } if m == Method::GET => todo::tasks_delta(&ctx, &list),
        Route::Task { list, task, .. } => match m {
            Method::GET => todo::get_task(&ctx, &list, &task),
            Method::PATCH => todo::update_task(&ctx, &list, &task),
            Method::DELETE => todo::delete_task(&ctx, &list, &task),
            _ => Err(method_not_allowed()),
        },
        Route::TaskExtensions { list, task, .. } => match m {
            Method::GET => todo::list_extensions(&ctx, &list, &task),
            Method::POST => todo::create_extension(&ctx, &list, &task),
            _ => Err(method_not_allowed()),
        },
        Route::TaskExtension { list, task, name, .. } => match m {
            Method::GET => todo::get_extension(&ctx, &list, &task, &name),
            Method::PATCH => todo::update_extension(&ctx, &list, &task, &name),
            Method::DELETE => todo::delete_extension(&ctx, &list, &task, &name),
            _ => Err(method_not_allowed()),
        },
        Route::Subscriptions => match m {
            Method::GET => subscriptions::list(&ctx),
            Method::POST => subscriptions::create(&ctx).await,
            _ => Err(method_not_allowed()),
        },
        Route::Subscription { id } => match m {
            Method::GET => subscriptions::get(&ctx, &id),
            Method::PATCH => subscriptions::update(&ctx, &id).await,
            Method::DELETE => subscriptions::delete(&ctx, &id),
            _ => Err(method_not_allowed()),
        },
        Route::SubscriptionReauthorize { id } if m == Method::POST => subscriptions::reauthorize(&ctx, &id),
        _ => Err(method_not_allowed()),
    }
}

fn answer_template(answer: events::Answer) -> &'static str {
    match answer {
        events::Answer::Accept => "/users/{user}/events/{eventId}/accept",
        events::Answer::Decline => "/users/{user}/events/{eventId}/decline",
        events::Answer::TentativelyAccept => "/users/{user}/events/{eventId}/tentativelyAccept",
    }
}

fn method_not_allowed() -> GraphError {
    GraphError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_match_case_insensitively_and_ids_keep_case() {
        let (r, t) = route("/users/Anna@x.de/ContactFolders/AbC=/contacts/delta()").unwrap();
        assert_eq!(t, "/users/{user}/contactFolders/{folderId}/contacts/delta");
        match r {
            Route::ContactsDelta { user, folder } => {
                assert_eq!(user, "Anna@x.de");
                assert_eq!(folder.as_deref(), Some("AbC="));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn percent_encoded_ids_are_decoded() {
        let (r, _) = route("/users/u/contacts/AA%2FBB%3D").unwrap();
        assert!(matches!(r, Route::Contact { contact, .. } if contact == "AA/BB="));
    }

    #[test]
    fn unknown_segments_do_not_route() {
        assert!(route("/users/u/nothing").is_none());
    }
}
