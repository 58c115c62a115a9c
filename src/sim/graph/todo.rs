//! Microsoft To Do: task lists and tasks (sample 08a shape), their delta
//! feeds, linked resources and open extensions. `todoTask` is a closed type:
//! extended properties are refused with 400. To Do ignores the application
//! access policy (GRAPH.md key constraint 2). Every task write (the task,
//! its open extension, a move to another list) notifies the subscriptions
//! on its list (app-only todoTask subscriptions, GRAPH.md key constraint 1).
//! `$expand` on a collection of tasks is refused with 400: the Get-extension
//! page documents collection expansion only for events, messages, contacts
//! and group posts, and a public report (microsoft-graph-docs-contrib#2604)
//! says the extension does not come back that way.

use std::collections::HashSet;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::contacts;
use super::delta::{self, DeltaSource};
use super::error::{GResult, GraphError, Reply};
use super::model::{DeltaScope, Mailbox, ResourceKind, Task, TodoList, Tombstone, World};
use super::router::Ctx;
use super::{lock, notifier, subscriptions, tz, wire, Shared};

/// Queues change notifications for a write of task `task_id` in list `list`.
pub(crate) fn notify_task(
    shared: &std::sync::Arc<Shared>,
    w: &World,
    mb_id: &str,
    list: &str,
    task_id: &str,
    change_key: &str,
    change: &str,
) {
    let faults = lock(&shared.faults).clone();
    let etag = wire::etag(change_key);
    let items = subscriptions::matching(w, &faults, mb_id, ResourceKind::Tasks, Some(list), task_id, &etag, change);
    notifier::enqueue(shared, items);
}

const TASK_TYPE: &str = "#microsoft.graph.todoTask";
const LIST_TYPE: &str = "#microsoft.graph.todoTaskList";
const EXT_TYPE: &str = "#microsoft.graph.openTypeExtension";
const DATE_PROPS: &[&str] = &["startDateTime", "dueDateTime", "reminderDateTime", "completedDateTime"];
const STATUSES: &[&str] = &["notStarted", "inProgress", "completed", "waitingOnOthers", "deferred"];

fn bad_value(name: &str) -> GraphError {
    GraphError::body_read(format!("Cannot convert the literal value for property '{name}' to the expected type."))
}

fn not_on_type(name: &str) -> GraphError {
    GraphError::body_read(format!(
        "The property '{name}' does not exist on type 'microsoft.graph.todoTask'. Make sure to only use property \
         names that are defined by the type."
    ))
}

/// An enum value of a request body. Graph reads enum members without
/// regard to case (Microsoft's own create-event example sends
/// `"contentType": "HTML"`, GRAPH.md key constraint 7) and answers with the
/// documented spelling, so the value is stored in that spelling.
fn one_of(name: &str, v: &Value, allowed: &[&str]) -> GResult<Value> {
    match v.as_str().and_then(|s| allowed.iter().find(|a| a.eq_ignore_ascii_case(s))) {
        Some(canonical) => Ok(Value::String((*canonical).to_string())),
        None => Err(GraphError::body_read(format!("Requested value '{v}' was not found for property '{name}'."))),
    }
}

fn utc_dttz(t: DateTime<Utc>) -> Value {
    tz::format_dttz(t, None)
}

/// Applies a POST/PATCH body to a task's properties; returns new linked resources.
fn apply(props: &mut Map<String, Value>, body: &Map<String, Value>) -> GResult<Vec<Value>> {
    let mut links = Vec::new();
    for (k, v) in body {
        let key = k.as_str();
        match key {
            _ if key.starts_with('@') => {}
            "id" | "createdDateTime" | "lastModifiedDateTime" | "bodyLastModifiedDateTime" | "hasAttachments" => {}
            "title" => {
                props.insert(
                    k.clone(),
                    if v.is_null() { json!("") } else { v.as_str().ok_or_else(|| bad_value(key))?.into() },
                );
            }
            "body" => {
                let ct = match v.get("contentType") {
                    None | Some(Value::Null) => json!("text"),
                    Some(c) => one_of("contentType", c, &["text", "html"])?,
                };
                let content = v.get("content").and_then(Value::as_str).unwrap_or_default();
                props.insert(k.clone(), json!({"content": content, "contentType": ct}));
            }
            "importance" => {
                props.insert(k.clone(), one_of(key, v, &["low", "normal", "high"])?);
            }
            "status" => {
                props.insert(k.clone(), one_of(key, v, STATUSES)?);
            }
            "isReminderOn" => {
                props.insert(k.clone(), json!(v.as_bool().ok_or_else(|| bad_value(key))?));
            }
            "categories" => match v {
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    props.insert(k.clone(), v.clone());
                }
                _ => return Err(bad_value(key)),
            },
            _ if DATE_PROPS.contains(&key) => {
                if v.is_null() {
                    props.remove(key);
                } else {
                    let (t, _) = tz::parse_dttz(key, v)?;
                    props.insert(k.clone(), utc_dttz(t));
                }
            }
            "linkedResources" => {
                let Value::Array(list) = v else { return Err(bad_value(key)) };
                for l in list {
                    links.push(linked_resource(l)?);
                }
            }
            "recurrence" if v.is_null() => {}
            "recurrence" => {
                return Err(GraphError::bad_request(
                    "invalidRequest",
                    "Recurring tasks are not supported by the Graph simulator.",
                ))
            }
            "extensions" | "checklistItems" | "attachments" => {}
            // The type is closed: no extended properties (GRAPH.md §6.4).
            other => return Err(not_on_type(other)),
        }
    }
    Ok(links)
}

fn linked_resource(l: &Value) -> GResult<Value> {
    let Value::Object(o) = l else { return Err(bad_value("linkedResources")) };
    let mut out = json!({"id": uuid::Uuid::new_v4().to_string()});
    for f in ["webUrl", "applicationName", "displayName", "externalId"] {
        match o.get(f) {
            None => {}
            Some(Value::String(s)) => out[f] = json!(s),
            Some(Value::Null) => out[f] = Value::Null,
            Some(_) => return Err(bad_value(f)),
        }
    }
    Ok(out)
}

fn render_task(t: &Task, with_type: bool, with_links: bool, ext_ids: Option<&[String]>) -> Value {
    let mut m = Map::new();
    if with_type {
        m.insert("@odata.type".into(), json!(TASK_TYPE));
    }
    m.insert("@odata.etag".into(), json!(wire::etag(&t.change_key)));
    for (k, v) in &t.props {
        m.insert(k.clone(), v.clone());
    }
    m.insert("createdDateTime".into(), json!(wire::ts_7(t.created)));
    m.insert("lastModifiedDateTime".into(), json!(wire::ts_7(t.modified)));
    m.insert("bodyLastModifiedDateTime".into(), json!(wire::ts_7(t.modified)));
    m.insert("hasAttachments".into(), json!(false));
    m.insert("id".into(), json!(t.id));
    if with_links && !t.linked_resources.is_empty() {
        m.insert("linkedResources".into(), Value::Array(t.linked_resources.clone()));
    }
    if let Some(ids) = ext_ids {
        let found: Vec<Value> =
            t.extensions.iter().filter(|e| ids.iter().any(|i| ext_matches(e, i))).map(render_ext).collect();
        m.insert("extensions".into(), Value::Array(found));
    }
    Value::Object(m)
}

fn ext_name(e: &Map<String, Value>) -> &str {
    e.get("extensionName").and_then(Value::as_str).unwrap_or_default()
}

/// Extension ids may be given as the name or in Outlook's fully qualified form.
fn ext_matches(e: &Map<String, Value>, id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    let id = id.strip_prefix("microsoft.outlookservices.opentypeextension.").unwrap_or(&id);
    ext_name(e).eq_ignore_ascii_case(id)
}

fn render_ext(e: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("@odata.type".into(), json!(EXT_TYPE));
    m.insert("id".into(), json!(ext_name(e)));
    for (k, v) in e {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

fn render_list(l: &TodoList, with_type: bool) -> Value {
    let mut v = json!({
        "@odata.etag": wire::etag(&l.change_key),
        "displayName": l.display_name,
        "isOwner": true,
        "isShared": false,
        "wellknownListName": l.wellknown,
        "id": l.id,
    });
    if with_type {
        v["@odata.type"] = json!(LIST_TYPE);
    }
    v
}

fn mb_mut<'w>(w: &'w mut World, ctx: &Ctx<'_>) -> GResult<&'w mut Mailbox> {
    contacts::mailbox_mut(w, ctx)
}

fn list_of<'m>(mb: &'m Mailbox, list: &str) -> GResult<&'m TodoList> {
    mb.todo_lists.iter().find(|l| l.id == list).ok_or_else(GraphError::not_found)
}

fn task_in<'m>(mb: &'m Mailbox, list: &str, task: &str) -> GResult<&'m Task> {
    list_of(mb, list)?;
    mb.tasks.get(task).filter(|t| t.list_id == list).ok_or_else(GraphError::not_found)
}

fn check_if_match(ctx: &Ctx<'_>, change_key: &str) -> GResult<()> {
    match ctx.if_match() {
        Some(m) if m != "*" && m != wire::etag(change_key) => Err(GraphError::conflict_etag()),
        _ => Ok(()),
    }
}

fn expand_ids(ctx: &Ctx<'_>) -> Option<Vec<String>> {
    let expand = ctx.q("$expand")?;
    if !expand.to_ascii_lowercase().starts_with("extensions") {
        return None;
    }
    let quoted: Vec<String> = expand.split('\'').skip(1).step_by(2).map(str::to_string).collect();
    Some(quoted)
}

fn wants_links(ctx: &Ctx<'_>) -> bool {
    ctx.q("$expand").is_some_and(|e| e.to_ascii_lowercase().contains("linkedresources"))
}

// ------------------------------------------------------------------ lists

pub(crate) fn lists(ctx: &Ctx<'_>) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let value: Vec<Value> = mb.todo_lists.iter().map(|l| render_list(l, false)).collect();
    Ok(Reply::ok(json!({
        "@odata.context": format!("{}/$metadata#users('{}')/todo/lists", ctx.graph_root(), mb.id),
        "value": value,
    })))
}

fn list_name(body: &Map<String, Value>, required: bool) -> GResult<Option<String>> {
    match body.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        None if !required => Ok(None),
        _ => Err(GraphError::bad_request("invalidRequest", "Invalid request: displayName is required.")),
    }
}

pub(crate) fn create_list(ctx: &Ctx<'_>) -> GResult {
    let body = ctx.json_object()?;
    let name = list_name(&body, true)?.unwrap_or_default();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    let l = TodoList {
        id: wire::folder_id(),
        display_name: name,
        wellknown: "none".into(),
        change_key: wire::change_key(),
        seq,
    };
    let v = render_list(&l, false);
    mb.todo_lists.push(l);
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTaskList");
    Ok(Reply::created(v))
}

pub(crate) fn get_list(ctx: &Ctx<'_>, list: &str) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    Ok(Reply::ok(render_list(list_of(mb, list)?, false)))
}

pub(crate) fn update_list(ctx: &Ctx<'_>, list: &str) -> GResult {
    let body = ctx.json_object()?;
    let name = list_name(&body, false)?;
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    let l = mb.todo_lists.iter_mut().find(|l| l.id == list).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, &l.change_key)?;
    if let Some(n) = name {
        l.display_name = n;
    }
    l.change_key = wire::change_key();
    l.seq = seq;
    let v = render_list(l, false);
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTaskList");
    Ok(Reply::ok(v))
}

pub(crate) fn delete_list(ctx: &Ctx<'_>, list: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    let l = list_of(mb, list)?;
    if l.wellknown == "defaultList" {
        return Err(GraphError::bad_request("invalidRequest", "The default task list cannot be deleted."));
    }
    mb.todo_lists.retain(|l| l.id != list);
    mb.tasks.retain(|_, t| t.list_id != list);
    mb.task_tombstones.retain(|t| t.folder_id != list);
    mb.list_tombstones.push(Tombstone { folder_id: String::new(), id: list.to_string(), seq, rest_id: None });
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTaskList");
    Ok(Reply::no_content())
}

struct ListsSource {
    mailbox_id: String,
}

impl DeltaSource for ListsSource {
    fn initial_ids(&self, w: &World) -> Vec<String> {
        w.mailboxes
            .iter()
            .find(|m| m.id == self.mailbox_id)
            .map(|mb| mb.todo_lists.iter().map(|l| l.id.clone()).collect())
            .unwrap_or_default()
    }
    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String> {
        let Some(mb) = w.mailboxes.iter().find(|m| m.id == self.mailbox_id) else { return Vec::new() };
        let mut changed: Vec<(u64, String)> = mb
            .todo_lists
            .iter()
            .filter(|l| l.seq > watermark)
            .map(|l| (l.seq, l.id.clone()))
            .chain(mb.list_tombstones.iter().filter(|t| t.seq > watermark).map(|t| (t.seq, t.id.clone())))
            .collect();
        changed.sort();
        dedup(changed)
    }
}

fn dedup(changed: Vec<(u64, String)>) -> Vec<String> {
    let mut seen = HashSet::new();
    changed.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| id).collect()
}

pub(crate) fn lists_delta(ctx: &Ctx<'_>) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let mb_id = contacts::mailbox(&w, ctx)?.id.clone();
    let source = ListsSource { mailbox_id: mb_id.clone() };
    let page = delta::next_page(&mut w, ctx, DeltaScope::TodoLists { mailbox_id: mb_id }, &ctx.req.path, &source)?;
    let mb = contacts::mailbox(&w, ctx)?;
    let out = page.body(ctx, "todoTaskList", LIST_TYPE, |id| {
        mb.todo_lists.iter().find(|l| l.id == id).map(|l| render_list(l, true))
    });
    Ok(Reply::ok(out))
}

// ------------------------------------------------------------------ tasks

pub(crate) fn tasks(ctx: &Ctx<'_>, list: &str) -> GResult {
    let top = ctx.page_size(100);
    let skip = ctx.q("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    if ctx.q("$expand").is_some_and(|e| e.to_ascii_lowercase().contains("extensions")) {
        // Not among the documented cases of expanding extensions on a collection (see the module doc).
        return Err(GraphError::bad_request(
            "BadRequest",
            "Expanding 'extensions' is not supported on a collection of todoTask. Get each task's extension instead.",
        ));
    }
    let ext_ids = expand_ids(ctx);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    list_of(mb, list)?;
    let mut items: Vec<&Task> = mb.tasks.values().filter(|t| t.list_id == list).collect();
    items.sort_by_key(|t| t.order);
    let total = items.len();
    let value: Vec<Value> = items
        .iter()
        .skip(skip)
        .take(top)
        .map(|t| render_task(t, false, wants_links(ctx), ext_ids.as_deref()))
        .collect();
    let mut out = json!({
        "@odata.context": format!("{}/$metadata#users('{}')/todo/lists('{}')/tasks", ctx.graph_root(), mb.id, list),
        "value": value,
    });
    if skip + top < total {
        out["@odata.nextLink"] = json!(format!("{}{}?$top={top}&$skip={}", ctx.graph_root(), ctx.req.path, skip + top));
    }
    Ok(Reply::ok(out))
}

pub(crate) fn create_task(ctx: &Ctx<'_>, list: &str) -> GResult {
    let body = ctx.json_object()?;
    let mut props = json!({
        "importance": "normal", "isReminderOn": false, "status": "notStarted", "title": "",
        "body": {"content": "", "contentType": "text"}, "categories": [],
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let links = apply(&mut props, &body)?;
    let now = ctx.shared.clock.now();
    complete(&mut props, None, now);
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    list_of(mb, list)?;
    let t = Task {
        id: wire::item_id(),
        list_id: list.to_string(),
        props,
        linked_resources: links,
        extensions: Vec::new(),
        change_key: wire::change_key(),
        created: now,
        modified: now,
        seq,
        order: seq,
    };
    let v = render_task(&t, false, true, None);
    let (mb_id, tid, ck) = (mb.id.clone(), t.id.clone(), t.change_key.clone());
    mb.tasks.insert(t.id.clone(), t);
    notify_task(ctx.shared, &w, &mb_id, list, &tid, &ck, "created");
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTask");
    Ok(Reply::created(v))
}

/// Keeps `completedDateTime` in step with `status` as To Do does.
fn complete(props: &mut Map<String, Value>, before: Option<&str>, now: DateTime<Utc>) {
    let status = props.get("status").and_then(Value::as_str).unwrap_or("notStarted").to_string();
    if status == "completed" && before != Some("completed") && !props.contains_key("completedDateTime") {
        let midnight = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
        props.insert("completedDateTime".into(), utc_dttz(midnight));
    }
    if status != "completed" {
        props.remove("completedDateTime");
    }
}

pub(crate) fn get_task(ctx: &Ctx<'_>, list: &str, task: &str) -> GResult {
    let ext_ids = expand_ids(ctx);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let t = task_in(mb, list, task)?;
    Ok(Reply::ok(render_task(t, false, wants_links(ctx), ext_ids.as_deref())))
}

pub(crate) fn update_task(ctx: &Ctx<'_>, list: &str, task: &str) -> GResult {
    let body = ctx.json_object()?;
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    task_in(mb, list, task)?;
    let t = mb.tasks.get_mut(task).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, &t.change_key)?;
    let before = t.props.get("status").and_then(Value::as_str).map(str::to_string);
    let mut props = t.props.clone();
    let links = apply(&mut props, &body)?;
    complete(&mut props, before.as_deref(), now);
    t.props = props;
    t.linked_resources.extend(links);
    t.change_key = wire::change_key();
    t.modified = now;
    t.seq = seq;
    let v = render_task(t, false, false, None);
    let (mb_id, ck) = (mb.id.clone(), t.change_key.clone());
    notify_task(ctx.shared, &w, &mb_id, list, task, &ck, "updated");
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTask");
    Ok(Reply::ok(v))
}

pub(crate) fn delete_task(ctx: &Ctx<'_>, list: &str, task: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    let t = task_in(mb, list, task)?;
    check_if_match(ctx, &t.change_key)?;
    let ck = t.change_key.clone();
    mb.tasks.remove(task);
    mb.task_tombstones.push(Tombstone { folder_id: list.to_string(), id: task.to_string(), seq, rest_id: None });
    let mb_id = mb.id.clone();
    notify_task(ctx.shared, &w, &mb_id, list, task, &ck, "deleted");
    drop(w);
    lock(&ctx.shared.stats).count_write("todoTask");
    Ok(Reply::no_content())
}

/// Moves a task to another list the way To Do does it: Graph has no move
/// operation, the task is removed from its list (a tombstone for that list's
/// delta) and created in the other with a new id, keeping its content.
/// Returns the task as it now is, or why it could not be moved.
pub(crate) fn move_task(
    w: &mut World,
    mailbox: &str,
    list: &str,
    task: &str,
    to_list: &str,
    now: DateTime<Utc>,
) -> Result<Value, (StatusCode, String)> {
    let i = w.mailbox_index(mailbox).ok_or((StatusCode::NOT_FOUND, "no such mailbox".to_string()))?;
    let removed_seq = w.next_seq();
    let created_seq = w.next_seq();
    let mb = &mut w.mailboxes[i];
    let not_found = |what: &str| (StatusCode::NOT_FOUND, format!("no such {what}"));
    task_in(mb, list, task).map_err(|_| not_found("task in that list"))?;
    list_of(mb, to_list).map_err(|_| not_found("target list"))?;
    if list == to_list {
        return Err((StatusCode::BAD_REQUEST, "the task is already in that list".to_string()));
    }
    let old = mb.tasks.remove(task).ok_or_else(|| not_found("task"))?;
    mb.task_tombstones.push(Tombstone {
        folder_id: list.to_string(),
        id: task.to_string(),
        seq: removed_seq,
        rest_id: None,
    });
    let moved = Task {
        id: wire::item_id(),
        list_id: to_list.to_string(),
        change_key: wire::change_key(),
        modified: now,
        seq: created_seq,
        order: created_seq,
        ..old
    };
    let v = render_task(&moved, false, true, None);
    mb.tasks.insert(moved.id.clone(), moved);
    Ok(v)
}

struct TasksSource {
    mailbox_id: String,
    list_id: String,
}

impl DeltaSource for TasksSource {
    fn initial_ids(&self, w: &World) -> Vec<String> {
        let Some(mb) = w.mailboxes.iter().find(|m| m.id == self.mailbox_id) else { return Vec::new() };
        let mut items: Vec<&Task> = mb.tasks.values().filter(|t| t.list_id == self.list_id).collect();
        items.sort_by_key(|t| t.order);
        items.into_iter().map(|t| t.id.clone()).collect()
    }
    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String> {
        let Some(mb) = w.mailboxes.iter().find(|m| m.id == self.mailbox_id) else { return Vec::new() };
        let mut changed: Vec<(u64, String)> = mb
            .tasks
            .values()
            .filter(|t| t.list_id == self.list_id && t.seq > watermark)
            .map(|t| (t.seq, t.id.clone()))
            .chain(
                mb.task_tombstones
                    .iter()
                    .filter(|t| t.folder_id == self.list_id && t.seq > watermark)
                    .map(|t| (t.seq, t.id.clone())),
            )
            .collect();
        changed.sort();
        dedup(changed)
    }
}

pub(crate) fn tasks_delta(ctx: &Ctx<'_>, list: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    list_of(mb, list)?;
    let mb_id = mb.id.clone();
    let source = TasksSource { mailbox_id: mb_id.clone(), list_id: list.to_string() };
    let scope = DeltaScope::TodoTasks { mailbox_id: mb_id, list_id: list.to_string() };
    let page = delta::next_page(&mut w, ctx, scope, &ctx.req.path, &source)?;
    let mb = contacts::mailbox(&w, ctx)?;
    let out = page.body(ctx, "todoTask", TASK_TYPE, |id| {
        mb.tasks.get(id).filter(|t| t.list_id == list).map(|t| render_task(t, true, false, None))
    });
    Ok(Reply::ok(out))
}

// ------------------------------------------------------------------ open extensions

fn ext_body(body: &Map<String, Value>, name: Option<&str>) -> GResult<Map<String, Value>> {
    let mut out = Map::new();
    for (k, v) in body {
        match k.as_str() {
            "@odata.type" => {
                if !v.as_str().is_some_and(|t| {
                    t.eq_ignore_ascii_case(EXT_TYPE) || t.eq_ignore_ascii_case("microsoft.graph.openTypeExtension")
                }) {
                    return Err(GraphError::bad_request("invalidRequest", "Only open type extensions are supported."));
                }
            }
            "id" => {}
            "extensionName" => {
                let n = v.as_str().filter(|s| !s.is_empty()).ok_or_else(|| bad_value("extensionName"))?;
                if name.is_some_and(|existing| !existing.eq_ignore_ascii_case(n)) {
                    return Err(GraphError::bad_request("invalidRequest", "extensionName cannot be changed."));
                }
                out.insert(k.clone(), json!(n));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

pub(crate) fn create_extension(ctx: &Ctx<'_>, list: &str, task: &str) -> GResult {
    let body = ctx.json_object()?;
    let ext = ext_body(&body, None)?;
    if !ext.contains_key("extensionName") {
        return Err(GraphError::bad_request("invalidRequest", "extensionName is required."));
    }
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    task_in(mb, list, task)?;
    let t = mb.tasks.get_mut(task).ok_or_else(GraphError::not_found)?;
    if t.extensions.iter().any(|e| ext_name(e).eq_ignore_ascii_case(ext_name(&ext))) {
        return Err(GraphError::new(
            StatusCode::CONFLICT,
            "NameAlreadyExists",
            "An extension with this name already exists.",
        ));
    }
    let v = render_ext(&ext);
    t.extensions.push(ext);
    t.change_key = wire::change_key();
    t.modified = now;
    t.seq = seq;
    let (mb_id, ck) = (mb.id.clone(), t.change_key.clone());
    notify_task(ctx.shared, &w, &mb_id, list, task, &ck, "updated");
    drop(w);
    lock(&ctx.shared.stats).count_write("extension");
    Ok(Reply::created(v))
}

pub(crate) fn list_extensions(ctx: &Ctx<'_>, list: &str, task: &str) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let t = task_in(mb, list, task)?;
    Ok(Reply::ok(json!({"value": t.extensions.iter().map(render_ext).collect::<Vec<_>>()})))
}

pub(crate) fn get_extension(ctx: &Ctx<'_>, list: &str, task: &str, name: &str) -> GResult {
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let t = task_in(mb, list, task)?;
    let e = t.extensions.iter().find(|e| ext_matches(e, name)).ok_or_else(GraphError::not_found)?;
    Ok(Reply::ok(render_ext(e)))
}

pub(crate) fn update_extension(ctx: &Ctx<'_>, list: &str, task: &str, name: &str) -> GResult {
    let body = ctx.json_object()?;
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    task_in(mb, list, task)?;
    let t = mb.tasks.get_mut(task).ok_or_else(GraphError::not_found)?;
    let e = t.extensions.iter_mut().find(|e| ext_matches(e, name)).ok_or_else(GraphError::not_found)?;
    let existing = ext_name(e).to_string();
    let patch = ext_body(&body, Some(&existing))?;
    for (k, v) in patch {
        e.insert(k, v);
    }
    let v = render_ext(e);
    t.change_key = wire::change_key();
    t.modified = now;
    t.seq = seq;
    let (mb_id, ck) = (mb.id.clone(), t.change_key.clone());
    notify_task(ctx.shared, &w, &mb_id, list, task, &ck, "updated");
    drop(w);
    lock(&ctx.shared.stats).count_write("extension");
    Ok(Reply::ok(v))
}

pub(crate) fn delete_extension(ctx: &Ctx<'_>, list: &str, task: &str, name: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let seq = w.next_seq();
    let mb = mb_mut(&mut w, ctx)?;
    task_in(mb, list, task)?;
    let t = mb.tasks.get_mut(task).ok_or_else(GraphError::not_found)?;
    let before = t.extensions.len();
    t.extensions.retain(|e| !ext_matches(e, name));
    if t.extensions.len() == before {
        return Err(GraphError::not_found());
    }
    t.change_key = wire::change_key();
    t.seq = seq;
    let (mb_id, ck) = (mb.id.clone(), t.change_key.clone());
    notify_task(ctx.shared, &w, &mb_id, list, task, &ck, "updated");
    drop(w);
    lock(&ctx.shared.stats).count_write("extension");
    Ok(Reply::no_content())
}

pub(crate) fn counts(mb: &Mailbox) -> (usize, usize) {
    (mb.todo_lists.len(), mb.tasks.len())
}
