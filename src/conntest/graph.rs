//! The Exchange Online side of the connection test: an access token, then
//! the pilot mailbox's calendar, contact folders and To Do lists.

use super::Check;
use crate::connectors::graph::{GraphClient, GraphClientConfig, GraphError};
use crate::model::capabilities::GraphCapabilities;
use crate::store::Tenant;

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
    _caps: &mut GraphCapabilities,
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
    checks
}
