//! Change-notification subscriptions: create (with the validation handshake
//! against both URLs), renew, reauthorize, read, delete, expiry against the
//! simulator clock, and matching of writes to subscriptions. Delivery itself
//! belongs to the notifier.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::control::Faults;
use super::error::{GResult, GraphError, Reply};
use super::model::{ResourceKind, Subscription, World};
use super::notifier::{self, Outgoing};
use super::router::Ctx;
use super::{lock, wire, Shared};

const CHANGE_TYPES: &[&str] = &["created", "updated", "deleted"];
const TLS_VERSIONS: &[&str] = &["v1_0", "v1_1", "v1_2", "v1_3"];
const MAX_CLIENT_STATE: usize = 128;

fn extension_error(reason: &str) -> GraphError {
    GraphError::bad_request(
        "ExtensionError",
        format!("Operation: Create; Exception: [Status Code: BadRequest; Reason: {reason}]"),
    )
}

struct ParsedResource {
    canonical: String,
    kind: ResourceKind,
    user: String,
    folder: Option<String>,
}

/// Validates a subscription `resource` (relative path, optional leading `/`).
fn parse_resource(resource: &str) -> GResult<ParsedResource> {
    let canonical = resource.trim_start_matches('/').to_string();
    let orig: Vec<&str> = canonical.split('/').collect();
    let lower: Vec<String> = orig.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let (kind, user, folder) = match l.as_slice() {
        ["users", _, "events"] | ["users", _, "calendar", "events"] => (ResourceKind::Events, orig[1], None),
        ["users", _, "contacts"] => (ResourceKind::Contacts, orig[1], None),
        ["users", _, "contactfolders", _, "contacts"] => (ResourceKind::Contacts, orig[1], Some(orig[3].to_string())),
        // todoTask: application permission Tasks.ReadWrite.All in Microsoft's current
        // subscription permission table (GRAPH.md key constraint 1).
        ["users", _, "todo", "lists", _, "tasks"] => (ResourceKind::Tasks, orig[1], Some(orig[4].to_string())),
        // `/me` does not exist app-only.
        ["me", ..] => return Err(extension_error("Invalid resource specified in payload")),
        _ => return Err(extension_error("Invalid resource specified in payload")),
    };
    Ok(ParsedResource { canonical: canonical.clone(), kind, user: user.to_string(), folder })
}

/// `http://` only for loopback hosts (tests, demo); everything else must be HTTPS.
fn check_url(field: &str, raw: &str) -> GResult<()> {
    // Graph's wording for a plain-http URL (see microsoftgraph/microsoft-graph-docs#2751).
    let name = if field == "notificationUrl" { "NotificationUrl" } else { "LifecycleNotificationUrl" };
    let u = url::Url::parse(raw)
        .map_err(|_| GraphError::bad_request("InvalidRequest", format!("Invalid {name} '{raw}'.")))?;
    let unsupported =
        || GraphError::bad_request("InvalidRequest", format!("{name} scheme='{}' is not supported.", u.scheme()));
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(unsupported())
            }
        }
        _ => Err(unsupported()),
    }
}

fn render(s: &Subscription, app_id: &str, creator: &str, root: &str, context: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "resource": s.resource,
        "applicationId": app_id,
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": null,
        "notificationContentType": null,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": wire::ts_7(s.expiration),
        "creatorId": creator,
        "includeResourceData": null,
        "latestSupportedTlsVersion": s.tls,
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
    });
    if context {
        v["@odata.context"] = json!(format!("{root}/$metadata#subscriptions/$entity"));
    }
    v
}

fn max_minutes(shared: &Shared, kind: ResourceKind) -> i64 {
    match kind {
        ResourceKind::Events => shared.cfg.max_subscription_minutes_events,
        ResourceKind::Contacts => shared.cfg.max_subscription_minutes_contacts,
        ResourceKind::Tasks => shared.cfg.max_subscription_minutes_tasks,
    }
}

fn parse_expiration(shared: &Shared, kind: ResourceKind, v: Option<&Value>) -> GResult<DateTime<Utc>> {
    let raw = v
        .and_then(Value::as_str)
        .ok_or_else(|| GraphError::bad_request("InvalidRequest", "expirationDateTime is a required property."))?;
    let t = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| GraphError::bad_request("InvalidRequest", "expirationDateTime is not a valid DateTimeOffset."))?
        .with_timezone(&Utc);
    let now = shared.clock.now();
    let max = max_minutes(shared, kind);
    if t <= now || t > now + chrono::Duration::minutes(max) {
        // Code and wording as reported from Graph (microsoftgraph/microsoft-graph-docs#2988);
        // for a time in the past the same answer is assumed.
        return Err(GraphError::bad_request(
            "ExtensionError",
            format!("Subscription expiration can only be {max} minutes in the future."),
        ));
    }
    Ok(t)
}

fn required_str<'a>(body: &'a Map<String, Value>, field: &str) -> GResult<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GraphError::bad_request("InvalidRequest", format!("{field} is a required property.")))
}

fn parse_change_types(raw: &str) -> GResult<Vec<String>> {
    let list: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    if list.is_empty() || list.iter().any(|c| !CHANGE_TYPES.contains(&c.as_str())) {
        return Err(GraphError::bad_request("InvalidRequest", format!("'{raw}' is not a valid changeType.")));
    }
    Ok(list)
}

/// Graph's validation handshake: POST `url?validationToken=…`, expect the
/// decoded token back as `text/plain` with 200 within the configured time.
async fn handshake(shared: &Shared, url: &str) -> GResult<()> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{sep}validationToken={}", wire::enc_query(&token));
    let failed = || {
        GraphError::bad_request(
            "ValidationError",
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
        )
    };
    let resp = shared
        .http
        .post(full)
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(shared.cfg.validation_timeout)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(GraphError::bad_request("ValidationError", "Subscription validation request timed out."))
        }
        Err(_) => return Err(failed()),
    };
    let plain = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("text/plain"));
    if resp.status() != reqwest::StatusCode::OK || !plain {
        return Err(failed());
    }
    match tokio::time::timeout(shared.cfg.validation_timeout, resp.text()).await {
        Ok(Ok(body)) if body == token => Ok(()),
        Err(_) => Err(GraphError::bad_request("ValidationError", "Subscription validation request timed out.")),
        _ => Err(failed()),
    }
}

pub(crate) async fn create(ctx: &Ctx<'_>) -> GResult {
    let shared = ctx.shared;
    let body = ctx.json_object()?;
    let change_types = parse_change_types(required_str(&body, "changeType")?)?;
    let notification_url = required_str(&body, "notificationUrl")?.to_string();
    let resource = parse_resource(required_str(&body, "resource")?)?;
    let expiration = parse_expiration(shared, resource.kind, body.get("expirationDateTime"))?;
    check_url("notificationUrl", &notification_url)?;
    let lifecycle_url = match body.get("lifecycleNotificationUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            check_url("lifecycleNotificationUrl", s)?;
            Some(s.clone())
        }
        Some(_) => return Err(GraphError::body_read("lifecycleNotificationUrl must be a string.")),
    };
    let client_state = match body.get("clientState") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_CLIENT_STATE => Some(s.clone()),
        Some(_) => {
            return Err(GraphError::bad_request(
                "InvalidRequest",
                format!("clientState must be a string of at most {MAX_CLIENT_STATE} characters."),
            ))
        }
    };
    let tls = match body.get("latestSupportedTlsVersion") {
        None | Some(Value::Null) => "v1_2".to_string(),
        Some(Value::String(s)) if TLS_VERSIONS.contains(&s.as_str()) => s.clone(),
        Some(_) => return Err(GraphError::bad_request("InvalidRequest", "Invalid latestSupportedTlsVersion.")),
    };
    if body.get("includeResourceData").and_then(Value::as_bool) == Some(true) {
        return Err(extension_error("Rich notifications are not supported by this simulator"));
    }
    let mailbox_id = {
        let w = lock(&shared.world);
        let i = w.mailbox_index(&resource.user).ok_or_else(|| GraphError::invalid_user(&resource.user))?;
        let mb = &w.mailboxes[i];
        // The application access policy covers Calendars and Contacts, not Tasks.
        if !mb.in_policy_scope && resource.kind != ResourceKind::Tasks {
            return Err(GraphError::access_denied());
        }
        match (&resource.folder, resource.kind) {
            (Some(l), ResourceKind::Tasks) if !mb.todo_lists.iter().any(|x| &x.id == l) => {
                return Err(GraphError::not_found())
            }
            (Some(f), ResourceKind::Contacts) if !mb.folder_exists(f) => return Err(GraphError::not_found()),
            _ => {}
        }
        let active = w.subscriptions.values().filter(|s| s.mailbox_id == mb.id).count();
        if active >= shared.cfg.max_subscriptions_per_mailbox {
            // Graph's wording when a subscription quota is hit (reported for OneDrive,
            // microsoftgraph/microsoft-graph-docs#21403); the Outlook answer is assumed to match.
            return Err(GraphError::new(
                StatusCode::FORBIDDEN,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: Maximum number of subscriptions has \
                 been reached]",
            ));
        }
        mb.id.clone()
    };
    handshake(shared, &notification_url).await?;
    if let Some(l) = &lifecycle_url {
        handshake(shared, l).await?;
    }
    let folder_id = match (resource.kind, resource.folder) {
        (ResourceKind::Contacts, None) => {
            let w = lock(&shared.world);
            w.mailboxes.iter().find(|m| m.id == mailbox_id).map(|m| m.default_contact_folder_id.clone())
        }
        (_, f) => f,
    };
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        resource: resource.canonical,
        kind: resource.kind,
        mailbox_id,
        folder_id,
        immutable_ids: ctx.immutable_ids(),
        change_types,
        notification_url,
        lifecycle_url,
        expiration,
        client_state,
        tls,
        needs_reauthorization: false,
        last_reauthorization_notice: None,
    };
    let v = {
        let mut w = lock(&shared.world);
        let v = render(&sub, &w.app.client_id, &w.app.service_principal_id, &ctx.graph_root(), true);
        w.subscriptions.insert(sub.id.clone(), sub);
        v
    };
    lock(&shared.stats).count_write("subscription");
    Ok(Reply::created(v))
}

/// Deletes expired subscriptions (simulator clock); those with a lifecycle URL
/// get a `subscriptionRemoved`, as Graph sends for Outlook resources.
fn expire(shared: &Shared, w: &mut World) {
    let now = shared.clock.now();
    let gone: Vec<Subscription> = w.subscriptions.values().filter(|s| s.expiration <= now).cloned().collect();
    if gone.is_empty() {
        return;
    }
    w.subscriptions.retain(|_, s| s.expiration > now);
    let removed: Vec<Outgoing> = gone.iter().filter_map(|s| lifecycle_item(w, s, "subscriptionRemoved")).collect();
    notifier::enqueue(shared, removed);
}

/// Sends `reauthorizationRequired` to subscriptions with a lifecycle URL that
/// expire within the configured lead, repeating at the configured interval
/// until they are renewed. Delivery continues meanwhile: the subscription is
/// still valid, only its end is near.
fn remind_before_expiry(shared: &Shared, w: &mut World) {
    let now = shared.clock.now();
    let lead = chrono::Duration::minutes(shared.cfg.reauthorization_lead_minutes);
    let repeat = chrono::Duration::minutes(shared.cfg.reauthorization_repeat_minutes.max(1));
    let due: Vec<String> = w
        .subscriptions
        .values()
        .filter(|s| s.lifecycle_url.is_some() && s.expiration > now && s.expiration - now <= lead)
        .filter(|s| s.last_reauthorization_notice.is_none_or(|t| now - t >= repeat))
        .map(|s| s.id.clone())
        .collect();
    let mut items = Vec::new();
    for id in due {
        if let Some(s) = w.subscriptions.get_mut(&id) {
            s.last_reauthorization_notice = Some(now);
        }
        if let Some(item) = w.subscriptions.get(&id).and_then(|s| lifecycle_item(w, s, "reauthorizationRequired")) {
            items.push(item);
        }
    }
    notifier::enqueue(shared, items);
}

fn sub_not_found(id: &str) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The object was not found. Subscription '{id}'."),
    )
}

pub(crate) fn list(ctx: &Ctx<'_>) -> GResult {
    let mut w = lock(&ctx.shared.world);
    expire(ctx.shared, &mut w);
    let root = ctx.graph_root();
    let value: Vec<Value> = w
        .subscriptions
        .values()
        .map(|s| render(s, &w.app.client_id, &w.app.service_principal_id, &root, false))
        .collect();
    Ok(Reply::ok(json!({"@odata.context": format!("{root}/$metadata#subscriptions"), "value": value})))
}

pub(crate) fn get(ctx: &Ctx<'_>, id: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    expire(ctx.shared, &mut w);
    let s = w.subscriptions.get(id).ok_or_else(|| sub_not_found(id))?;
    Ok(Reply::ok(render(s, &w.app.client_id, &w.app.service_principal_id, &ctx.graph_root(), true)))
}

pub(crate) async fn update(ctx: &Ctx<'_>, id: &str) -> GResult {
    let shared = ctx.shared;
    let body = ctx.json_object()?;
    if body.contains_key("lifecycleNotificationUrl") {
        return Err(GraphError::bad_request(
            "InvalidRequest",
            "lifecycleNotificationUrl cannot be updated. Delete the subscription and create a new one.",
        ));
    }
    let kind = {
        let mut w = lock(&shared.world);
        expire(shared, &mut w);
        w.subscriptions.get(id).ok_or_else(|| sub_not_found(id))?.kind
    };
    let expiration = match body.get("expirationDateTime") {
        Some(v) => Some(parse_expiration(shared, kind, Some(v))?),
        None => None,
    };
    let new_url = match body.get("notificationUrl") {
        Some(Value::String(u)) => {
            check_url("notificationUrl", u)?;
            handshake(shared, u).await?;
            Some(u.clone())
        }
        Some(_) => return Err(GraphError::body_read("notificationUrl must be a string.")),
        None => None,
    };
    let mut w = lock(&shared.world);
    let (app, creator) = (w.app.client_id.clone(), w.app.service_principal_id.clone());
    let s = w.subscriptions.get_mut(id).ok_or_else(|| sub_not_found(id))?;
    if let Some(t) = expiration {
        s.expiration = t;
    }
    if let Some(u) = new_url {
        s.notification_url = u;
    }
    // A renewal also reauthorizes.
    s.needs_reauthorization = false;
    if expiration.is_some() {
        s.last_reauthorization_notice = None;
    }
    let v = render(s, &app, &creator, &ctx.graph_root(), true);
    drop(w);
    lock(&shared.stats).count_write("subscription");
    Ok(Reply::ok(v))
}

pub(crate) fn delete(ctx: &Ctx<'_>, id: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    expire(ctx.shared, &mut w);
    w.subscriptions.remove(id).ok_or_else(|| sub_not_found(id))?;
    drop(w);
    lock(&ctx.shared.stats).count_write("subscription");
    Ok(Reply::no_content())
}

pub(crate) fn reauthorize(ctx: &Ctx<'_>, id: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    expire(ctx.shared, &mut w);
    let s = w.subscriptions.get_mut(id).ok_or_else(|| sub_not_found(id))?;
    s.needs_reauthorization = false;
    Ok(Reply::no_content())
}

/// Graph is inconsistent in how it spells `resource` and `@odata.type`
/// (GRAPH.md §4.4); clients must accept both. The faults pin one shape;
/// otherwise it is chosen per item from a hash of its id, so a run repeats.
fn variant(forced: Option<&str>, first: &str, item_id: &str, salt: u8) -> bool {
    match forced {
        Some(f) => f == first,
        None => {
            // FNV-1a: stable across runs and platforms, unlike the std hasher.
            let h = item_id
                .bytes()
                .chain([salt])
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
            h % 2 == 0
        }
    }
}

/// `resource` and `@odata.type` of a change notification for one item.
fn notification_shape(
    faults: &Faults,
    kind: ResourceKind,
    mailbox_id: &str,
    folder_id: Option<&str>,
    item_id: &str,
) -> (String, &'static str) {
    let path_style = variant(faults.notification_resource_style.as_deref(), "path", item_id, 1);
    let pascal = variant(faults.notification_type_casing.as_deref(), "pascal", item_id, 2);
    let resource = match (kind, path_style) {
        // The documented todoTask shape is not published; the path follows the subscribed resource.
        (ResourceKind::Tasks, true) => {
            format!("Users/{mailbox_id}/todo/lists/{}/tasks/{item_id}", folder_id.unwrap_or_default())
        }
        (ResourceKind::Tasks, false) => {
            format!("Users('{mailbox_id}')/todo/lists('{}')/tasks('{item_id}')", folder_id.unwrap_or_default())
        }
        (ResourceKind::Events, true) => format!("Users/{mailbox_id}/Events/{item_id}"),
        (ResourceKind::Events, false) => format!("Users('{mailbox_id}')/events('{item_id}')"),
        (ResourceKind::Contacts, true) => format!("Users/{mailbox_id}/Contacts/{item_id}"),
        (ResourceKind::Contacts, false) => match folder_id {
            Some(f) => format!("Users('{mailbox_id}')/contactFolders('{f}')/contacts('{item_id}')"),
            None => format!("Users('{mailbox_id}')/contacts('{item_id}')"),
        },
    };
    let odata_type = match (kind, pascal) {
        (ResourceKind::Events, true) => "#Microsoft.Graph.Event",
        (ResourceKind::Events, false) => "#microsoft.graph.event",
        (ResourceKind::Contacts, true) => "#Microsoft.Graph.Contact",
        (ResourceKind::Contacts, false) => "#microsoft.graph.contact",
        (ResourceKind::Tasks, true) => "#Microsoft.Graph.TodoTask",
        (ResourceKind::Tasks, false) => "#microsoft.graph.todoTask",
    };
    (resource, odata_type)
}

/// The notifications a write produces: one per matching active subscription.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matching(
    w: &World,
    faults: &Faults,
    mailbox_id: &str,
    kind: ResourceKind,
    folder_id: Option<&str>,
    item_id: &str,
    etag: &str,
    change: &str,
) -> Vec<Outgoing> {
    matching_ids(w, faults, mailbox_id, kind, folder_id, (item_id, item_id), etag, change)
}

/// [`matching`] for an item with an immutable and a regular id: each
/// subscription names the item by the id kind it was created with.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matching_ids(
    w: &World,
    faults: &Faults,
    mailbox_id: &str,
    kind: ResourceKind,
    folder_id: Option<&str>,
    (immutable_id, rest_id): (&str, &str),
    etag: &str,
    change: &str,
) -> Vec<Outgoing> {
    w.subscriptions
        .values()
        .filter(|s| s.mailbox_id == mailbox_id && s.kind == kind && !s.needs_reauthorization)
        .filter(|s| kind == ResourceKind::Events || s.folder_id.as_deref() == folder_id)
        .filter(|s| s.change_types.iter().any(|c| c == change))
        .map(|s| {
            let item_id = if s.immutable_ids { immutable_id } else { rest_id };
            let (resource, odata_type) = notification_shape(faults, kind, mailbox_id, folder_id, item_id);
            (s, item_id, resource, odata_type)
        })
        .map(|(s, item_id, resource, odata_type)| Outgoing {
            url: s.notification_url.clone(),
            subscription_id: s.id.clone(),
            lifecycle: false,
            item: json!({
                "id": wire::opaque_token(),
                "subscriptionId": s.id,
                "subscriptionExpirationDateTime": wire::ts_7(s.expiration),
                "clientState": s.client_state,
                "changeType": change,
                "resource": resource,
                "tenantId": w.tenant_id,
                "resourceData": {
                    "@odata.type": odata_type,
                    "@odata.id": resource,
                    "@odata.etag": etag,
                    "id": item_id,
                },
            }),
        })
        .collect()
}

/// A lifecycle notification for `s` (sample 03), if it has a lifecycle URL.
pub(crate) fn lifecycle_item(w: &World, s: &Subscription, event: &str) -> Option<Outgoing> {
    let url = s.lifecycle_url.clone()?;
    Some(Outgoing {
        url,
        subscription_id: s.id.clone(),
        lifecycle: true,
        item: json!({
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": wire::ts_7(s.expiration),
            "tenantId": w.tenant_id,
            "clientState": s.client_state,
            "lifecycleEvent": event,
        }),
    })
}

/// Expires subscriptions and sends the due reminders; also run right after
/// the clock is moved, so that tests see the consequences of a jump at once.
pub(crate) fn sweep(shared: &Shared) {
    let mut w = lock(&shared.world);
    expire(shared, &mut w);
    remind_before_expiry(shared, &mut w);
}

/// Deletes subscriptions whose expiry (simulator clock) has passed and sends
/// `reauthorizationRequired` ahead of it, on a short wall-clock tick.
pub(crate) async fn expiry_sweeper(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                sweep(&shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_is_echoed_without_leading_slash() {
        let r = parse_resource("/users/abc/contactFolders/F1/contacts").unwrap();
        assert_eq!(r.canonical, "users/abc/contactFolders/F1/contacts");
        assert_eq!(r.folder.as_deref(), Some("F1"));
    }

    #[test]
    fn app_only_todo_subscriptions_are_accepted_on_a_list() {
        let r = parse_resource("users/abc/todo/lists/L1/tasks").unwrap();
        assert_eq!(r.kind, ResourceKind::Tasks);
        assert_eq!(r.folder.as_deref(), Some("L1"));
        assert_eq!(parse_resource("me/todo/lists/L1/tasks").err().unwrap().code, "ExtensionError");
    }

    #[test]
    fn unforced_notification_shapes_mix_both_spellings_and_repeat_per_item() {
        let faults = Faults::default();
        let shapes: Vec<(String, &str)> = (0..16)
            .map(|i| notification_shape(&faults, ResourceKind::Events, "MB", None, &format!("AAMk{i}")))
            .collect();
        assert!(shapes.iter().any(|(r, _)| r.starts_with("Users/MB/Events/")));
        assert!(shapes.iter().any(|(r, _)| r.starts_with("Users('MB')/events('")));
        assert!(shapes.iter().any(|(_, t)| *t == "#Microsoft.Graph.Event"));
        assert!(shapes.iter().any(|(_, t)| *t == "#microsoft.graph.event"));
        assert_eq!(notification_shape(&faults, ResourceKind::Events, "MB", None, "AAMk3"), shapes[3]);
    }

    #[test]
    fn plain_http_is_only_allowed_for_loopback() {
        assert!(check_url("notificationUrl", "http://127.0.0.1:9/x").is_ok());
        assert!(check_url("notificationUrl", "http://localhost/x").is_ok());
        assert!(check_url("notificationUrl", "http://[::1]:80/x").is_ok());
        assert!(check_url("notificationUrl", "http://example.com/x").is_err());
        assert!(check_url("notificationUrl", "https://example.com/x").is_ok());
    }
}
