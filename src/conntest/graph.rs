//! The Exchange Online side of the connection test: an access token, then
//! the pilot mailbox's calendar, contact folders and To Do lists, then the
//! probes of what Microsoft does not document (docs/graph-api.md): whether
//! `If-Match` is enforced on contacts, whether immutable ids come back,
//! whether an app-only To Do subscription is accepted, and whether an open
//! extension on a To Do task can be read back. Each probe writes only
//! throwaway items (a contact in the default Contacts folder, a task in the
//! default To Do list, a subscription), deletes them, and never touches
//! hqsync's own folders and list.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::Check;
use crate::connectors::graph::client::seg;
use crate::connectors::graph::resources::TASK_EXTENSION;
use crate::connectors::graph::{GraphClient, GraphClientConfig, GraphError};
use crate::engine::users::{self, Resolution};
use crate::model::capabilities::GraphCapabilities;
use crate::store::{GraphUser, Tenant};

/// What the throwaway items are called, so that a user who sees one knows it.
const PROBE_NAME: &str = "hqsync connection test (safe to delete)";

/// The fix to show for a failed Graph check.
fn fix(e: &GraphError) -> String {
    match e {
        GraphError::Auth { fix, .. } | GraphError::MailboxDenied { fix, .. } => fix.clone(),
        GraphError::NotFound { .. } => "check that the mailbox exists in Exchange Online and is licensed".into(),
        _ => "check graph_base/login_base and the network path to Microsoft Graph; try again".into(),
    }
}

/// Token and pilot-mailbox checks; probes record their answers in `caps`.
pub(super) async fn checks(
    t: &Tenant,
    cfg: &GraphClientConfig,
    mailbox: Option<&str>,
    users: &[GraphUser],
    public_url: &str,
    caps: &mut GraphCapabilities,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let g = match GraphClient::new(&t.graph, cfg.clone()) {
        Ok(g) => g,
        Err(e) => {
            checks.push(Check::fail("graph_token", e.to_string(), fix(&e)));
            return checks;
        }
    };
    match g.check_credentials().await {
        Ok(()) => checks.push(Check::pass("graph_token", "token acquired")),
        Err(e) => {
            checks.push(Check::fail("graph_token", e.to_string(), fix(&e)));
            return checks;
        }
    }
    checks.push(permissions_check(&g).await);
    checks.push(users_check(&g, mailbox, users).await);
    let Some(m) = mailbox else {
        checks.push(Check::fail(
            "mailbox",
            "no pilot mailbox set and no mailbox known",
            "set settings.pilot_mailbox to the test user's address",
        ));
        return checks;
    };
    let seg = crate::connectors::graph::client::seg(m);
    for (name, path) in [
        ("calendar", format!("/users/{seg}/events?$top=1&$select=id")),
        ("contacts", format!("/users/{seg}/contactFolders?$top=1")),
        ("todo", format!("/users/{seg}/todo/lists?$top=1")),
    ] {
        checks.push(match g.get(&path).await {
            Ok(_) => Check::pass(name, format!("{m}: readable")),
            Err(e) => Check::fail(name, e.to_string(), fix(&e)),
        });
    }
    if checks.iter().all(|c| c.ok) {
        checks.push(contact_probes(&g, m, caps).await);
        checks.push(todo_subscription_probe(&g, m, public_url, caps).await);
        checks.push(todo_extension_probe(&g, m, caps).await);
    }
    checks
}

/// The least application permissions hqsync needs, each with why (the same
/// list as docs/onboarding.md step 2).
pub const REQUIRED_ROLES: [(&str, &str); 4] = [
    (
        "Calendars.ReadWrite",
        "to read and write the synced appointments in each user's calendar and subscribe to its changes",
    ),
    (
        "Contacts.ReadWrite",
        "to create the two helloHQ contact folders, write their contacts and subscribe to their changes",
    ),
    ("Tasks.ReadWrite.All", "to create the \"helloHQ\" To Do list, write its tasks and subscribe to their changes"),
    ("User.Read.All", "to find each helloHQ user's mailbox by work email (mail or proxy address) in the directory"),
];

/// The granted application permissions (the token's `roles` claim) against
/// [`REQUIRED_ROLES`]: each missing one is named with why and the fix.
async fn permissions_check(g: &GraphClient) -> Check {
    let granted = match g.granted_roles().await {
        Ok(r) => r,
        Err(e) => return Check::fail("graph_permissions", e.to_string(), fix(&e)),
    };
    let missing: Vec<String> = REQUIRED_ROLES
        .iter()
        .filter(|(role, _)| !granted.iter().any(|r| r.eq_ignore_ascii_case(role)))
        .map(|(role, why)| format!("{role} ({why})"))
        .collect();
    if missing.is_empty() {
        return Check::pass("graph_permissions", format!("granted: {}", REQUIRED_ROLES.map(|(r, _)| r).join(", ")));
    }
    Check::fail(
        "graph_permissions",
        format!("application permissions missing from the access token: {}", missing.join("; ")),
        format!(
            "in Microsoft Entra: App registrations → this app → API permissions → Add a permission → Microsoft Graph → \
             Application permissions: add {}, then \"Grant admin consent\" (docs/onboarding.md, steps 2 and 3); \
             run the test again (a new token carries the new roles)",
            REQUIRED_ROLES
                .iter()
                .filter(|(role, _)| !granted.iter().any(|r| r.eq_ignore_ascii_case(role)))
                .map(|(r, _)| *r)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Every mailbox's Graph user (issue #19 item 8): the pilot mailbox and
/// each mailbox whose user is not resolved (or was never looked up) are
/// looked up now, by mail then proxy address; each that does not resolve is
/// named with why and the fix. The pilot's checks below then address it by
/// its user's object id, as the engine does.
async fn users_check(g: &GraphClient, pilot: Option<&str>, users: &[GraphUser]) -> Check {
    let mut targets: Vec<String> = pilot.map(str::to_string).into_iter().collect();
    for u in users.iter().filter(|u| u.id.is_none()) {
        if !targets.iter().any(|t| t.eq_ignore_ascii_case(u.mailbox.as_str())) {
            targets.push(u.mailbox.to_string());
        }
    }
    let resolved_before = users.iter().filter(|u| u.id.is_some()).count();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for address in &targets {
        match users::resolve(g, address).await {
            Ok(Resolution::Found(id)) => {
                g.set_user(address, Some(&id));
                found.push(format!("{address} → {id}"));
            }
            Ok(Resolution::Unresolved(why)) => missing.push(why),
            Err(e) => missing.push(format!("looking up {address} failed: {e}; fix: run the test again")),
        }
    }
    if missing.is_empty() {
        return Check::pass(
            "graph_users",
            format!(
                "every mailbox has its Graph user ({} resolved earlier{}{})",
                resolved_before,
                if found.is_empty() { "" } else { "; now: " },
                found.join(", ")
            ),
        );
    }
    Check::fail(
        "graph_users",
        format!("{} of {} looked up did not resolve: {}", missing.len(), targets.len(), missing.join(" | ")),
        "for each user named: enter the address of their Exchange mailbox (or their sign-in name) as work email \
         in helloHQ, or add that address to their mailbox in Exchange; if the lookup was refused, grant \
         User.Read.All (application) with admin consent; then run the test again (hqsync looks the users up again \
         after a test)",
    )
}

fn etag(v: &Value) -> Option<String> {
    v.get("@odata.etag").and_then(Value::as_str).map(str::to_string)
}

fn id_of(v: &Value) -> String {
    v.get("id").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A throwaway contact in the mailbox's default Contacts folder: created
/// (every request prefers immutable ids), re-read (the same id back =
/// immutable ids honoured), PATCHed once, then PATCHed with the first,
/// now stale, ETag (`412` = `If-Match` enforced), then deleted.
async fn contact_probes(g: &GraphClient, m: &str, caps: &mut GraphCapabilities) -> Check {
    let base = format!("/users/{}/contacts", seg(m));
    let created = match g.post(&base, &json!({"givenName": "hqsync", "surname": PROBE_NAME})).await {
        Ok(v) => v,
        Err(e) => {
            return Check::fail("probe_contact", format!("{m}: a test contact could not be written: {e}"), fix(&e))
        }
    };
    let id = id_of(&created);
    let path = format!("{base}/{}", seg(&id));
    let outcome = async {
        let again = g.get(&path).await?;
        caps.immutable_ids_honoured = !id.is_empty() && id_of(&again) == id;
        let stale = etag(&created).unwrap_or_default();
        g.patch(&path, &json!({"jobTitle": "probe 1"}), Some(&stale)).await?;
        caps.if_match_enforced = match g.patch(&path, &json!({"jobTitle": "probe 2"}), Some(&stale)).await {
            Err(GraphError::Conflict { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(e),
        };
        Ok::<(), GraphError>(())
    }
    .await;
    let deleted = g.delete(&path, None).await;
    match (outcome, deleted) {
        (Ok(()), Ok(()) | Err(GraphError::NotFound { .. })) => Check::pass(
            "probe_contact",
            format!(
                "{m}: If-Match {}; immutable ids {}",
                if caps.if_match_enforced {
                    "enforced (412 on a stale ETag)"
                } else {
                    "ignored (hqsync reads each contact before it writes it)"
                },
                if caps.immutable_ids_honoured { "honoured" } else { "not confirmed" }
            ),
        ),
        (Err(e), _) | (Ok(()), Err(e)) => {
            Check::fail("probe_contact", format!("{m}: the test contact probe failed: {e}"), fix(&e))
        }
    }
}

/// A subscription on the tasks of the mailbox's default To Do list
/// (app-only todoTask subscriptions need `Tasks.ReadWrite.All` and a public
/// URL that answers Graph's validation), deleted at once.
async fn todo_subscription_probe(g: &GraphClient, m: &str, public_url: &str, caps: &mut GraphCapabilities) -> Check {
    let list = match default_list(g, m).await {
        Ok(l) => l,
        Err(e) => return Check::fail("probe_todo_subscription", format!("{m}: {e}"), fix(&e)),
    };
    let body = json!({
        "changeType": "created,updated,deleted",
        "notificationUrl": format!("{}/v1/notifications/graph", public_url.trim_end_matches('/')),
        "resource": format!("users/{m}/todo/lists/{list}/tasks"),
        "expirationDateTime": (Utc::now() + chrono::Duration::minutes(60)).to_rfc3339_opts(SecondsFormat::Millis, true),
        "clientState": uuid::Uuid::new_v4().to_string(),
    });
    match g.create_subscription(&body).await {
        Ok(sub) => {
            caps.todo_subscription_accepted = true;
            let _ = g.delete_subscription(&id_of(&sub)).await;
            Check::pass(
                "probe_todo_subscription",
                format!("{m}: a To Do change-notification subscription was accepted"),
            )
        }
        // Not a failure: the delta poll carries To Do changes without it, only later.
        Err(e) => Check::pass(
            "probe_todo_subscription",
            format!(
                "{m}: a To Do subscription was refused ({e}); To Do changes arrive with the delta poll only \
                 (tasks.poll_interval_secs). To get them at once: grant Tasks.ReadWrite.All with admin consent and \
                 make sure http.public_url answers Graph's validation request"
            ),
        ),
    }
}

/// A throwaway task in the mailbox's default To Do list with the
/// `io.hqsync.task` open extension, read back per task, then deleted.
async fn todo_extension_probe(g: &GraphClient, m: &str, caps: &mut GraphCapabilities) -> Check {
    let list = match default_list(g, m).await {
        Ok(l) => l,
        Err(e) => return Check::fail("probe_todo_extension", format!("{m}: {e}"), fix(&e)),
    };
    let task = match g.create_task(m, &list, &json!({"title": PROBE_NAME})).await {
        Ok(t) => id_of(&t),
        Err(e) => {
            return Check::fail("probe_todo_extension", format!("{m}: a test task could not be written: {e}"), fix(&e))
        }
    };
    let outcome = async {
        g.create_task_extension(m, &list, &task, &json!({"probe": 1})).await?;
        let back = g.get_task_extension(m, &list, &task).await?;
        let name = back.get("extensionName").or(back.get("id")).and_then(Value::as_str).unwrap_or_default();
        Ok::<bool, GraphError>(name.to_ascii_lowercase().ends_with(TASK_EXTENSION))
    }
    .await;
    let _ = g.delete_task(m, &list, &task).await;
    match outcome {
        Ok(readable) => {
            caps.todo_extension_readable = readable;
            if readable {
                Check::pass("probe_todo_extension", format!("{m}: the task extension {TASK_EXTENSION} reads back"))
            } else {
                Check::fail(
                    "probe_todo_extension",
                    format!("{m}: the task extension came back under another name"),
                    "report this to hqsync's maintainers with the tenant's region",
                )
            }
        }
        Err(e) => Check::fail(
            "probe_todo_extension",
            format!("{m}: the task extension could not be written and read back: {e}"),
            fix(&e),
        ),
    }
}

/// The id of the mailbox's default To Do list (`wellknownListName` `defaultList`), else its first list.
async fn default_list(g: &GraphClient, m: &str) -> Result<String, GraphError> {
    let lists = g.list_todo_lists(m).await?;
    let pick = lists
        .iter()
        .find(|l| l.get("wellknownListName").and_then(Value::as_str) == Some("defaultList"))
        .or(lists.first())
        .map(id_of)
        .filter(|id| !id.is_empty());
    pick.ok_or_else(|| GraphError::Decode("the mailbox has no To Do list".into()))
}
