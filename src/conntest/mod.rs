//! The connection test ("test & enable"; `hqsync tenant test`,
//! `POST /v1/admin/tenants/{tenant}/test`): whether hqsync can reach the
//! tenant's Exchange Online and helloHQ with the credentials it was given,
//! and, where a fact about either service is not published, what the
//! customer's own system does. Each check passes or says why and what to do;
//! the probes' answers become the tenant's capability record
//! (`model::capabilities`), stored for the connectors to follow.
//!
//! One file per side: `graph` (token, the pilot mailbox's calendar,
//! contacts and To Do, and the Exchange probes), `hellohq` (the API token), `webhook` (whether
//! hqsync's public URL answers, since both services deliver there).

mod graph;
mod hellohq;
mod webhook;

use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::connectors::graph::GraphClientConfig;
use crate::model::capabilities::Capabilities;
use crate::store::{Store, Tenant};

/// One check of the connection test.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(name: &str, detail: impl Into<String>) -> Check {
        Check { name: name.into(), ok: true, detail: detail.into(), fix: None }
    }

    pub(crate) fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name: name.into(), ok: false, detail: detail.into(), fix: Some(fix.into()) }
    }
}

/// What the connection test found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionReport {
    /// Every check passed.
    pub ok: bool,
    /// The mailbox the Exchange checks used (the pilot, else the first known).
    pub mailbox: Option<String>,
    pub checks: Vec<Check>,
    /// What the probes found, as stored for the tenant: a probe that could
    /// not run leaves its safe default.
    pub capabilities: Capabilities,
}

/// Runs the connection test of tenant `t` and stores the capabilities its
/// probes found (a store failure is reported as a failed check). `graph`
/// holds the configured Graph client settings, among them the address
/// guard's `allow_private_addresses` (used for helloHQ too). A check's
/// `detail` never carries a remote response body: status, error code, fix.
pub async fn run(store: &Store, public_url: &str, t: &Tenant, graph: &GraphClientConfig) -> ConnectionReport {
    let pilot = t.settings.get("pilot_mailbox").and_then(Value::as_str).map(str::to_ascii_lowercase);
    let mailbox = match pilot {
        Some(p) => Some(p),
        None => store.list_mailboxes(&t.id).await.ok().and_then(|ms| ms.first().map(|m| m.id.to_string())),
    };
    // Every probe starts from the safe default: an answer that cannot be
    // had now must not keep an older, possibly wrong, one.
    let mut capabilities = Capabilities::default();
    // What the store knows of each mailbox's Graph user: the users not
    // resolved (or never looked up) are looked up again and reported.
    let users = store.graph_users(&t.id).await.unwrap_or_default();
    let mut checks = graph::checks(t, graph, mailbox.as_deref(), &users, public_url, &mut capabilities.graph).await;
    checks.extend(hellohq::checks(t, graph.allow_private_addresses, &mut capabilities.hellohq).await);
    checks.push(webhook::check(public_url).await);
    capabilities.tested_at = Some(Utc::now());
    if let Err(e) = store.set_capabilities(&t.id, &capabilities).await {
        checks.push(Check::fail(
            "capabilities_stored",
            format!("the probes' answers could not be stored: {e}"),
            "check the store (hqsync's database) and run the test again",
        ));
    }
    ConnectionReport { ok: checks.iter().all(|c| c.ok), mailbox, checks, capabilities }
}
