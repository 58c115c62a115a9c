//! Operator commands on the command line: tenants (add, list, test,
//! enable), mailboxes (list, set-direction), resync, dead letters. They use
//! the same store, engine and checks as the admin API, and exit with codes
//! scripts can rely on: 0 done, 1 runtime failure, 2 bad usage or
//! configuration, 3 a connection test failed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Subcommand};
use secrecy::SecretString;
use serde_json::json;

use crate::app::App;
use crate::model::{Direction, Kind, MailboxId, TenantId};
use crate::queue::{Change, Hint, Origin, HINT_VERSION};
use crate::store::{GraphCredentials, HellohqCredentials, NewJournalEntry, Tenant};

/// Exit code of a connection test that found a problem.
pub const EXIT_CHECK_FAILED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant. Secrets are read from environment variables (never from
    /// arguments, which other users can see) and stored encrypted.
    Add(Box<TenantAddArgs>),
    /// List tenants (secrets shown only as set / not set).
    List,
    /// The connection test: token, the pilot mailbox's calendar, contacts
    /// and To Do, the helloHQ token, the public URL. Exit 3 when a check fails.
    Test(TenantRef),
    /// Test, and enable the tenant only if every check passes.
    Enable(TenantEnableArgs),
}

#[derive(Debug, Args)]
pub struct TenantRef {
    #[arg(long)]
    pub tenant: TenantId,
}

#[derive(Debug, Args)]
pub struct TenantAddArgs {
    #[arg(long)]
    pub id: TenantId,
    #[arg(long)]
    pub name: Option<String>,
    /// Directory (tenant) id of the customer's Entra ID.
    #[arg(long)]
    pub graph_tenant_id: String,
    /// Application (client) id.
    #[arg(long)]
    pub client_id: String,
    /// Environment variable holding the client secret (not `HQSYNC_…`: that
    /// prefix is hqsync's own configuration).
    #[arg(long, default_value = "TENANT_CLIENT_SECRET")]
    pub client_secret_env: String,
    /// Environment variable holding the helloHQ API token.
    #[arg(long, default_value = "TENANT_HELLOHQ_TOKEN")]
    pub hellohq_token_env: String,
    /// Environment variable holding the helloHQ webhook secret (`whsec_…`), if any.
    #[arg(long, default_value = "TENANT_WEBHOOK_SECRET")]
    pub webhook_secret_env: String,
    #[arg(long)]
    pub hellohq_base: Option<String>,
    #[arg(long)]
    pub graph_base: Option<String>,
    #[arg(long)]
    pub login_base: Option<String>,
    /// The test user's mailbox: synced alone until `tenant enable --rollout all`.
    #[arg(long)]
    pub pilot: Option<MailboxId>,
}

#[derive(Debug, Args)]
pub struct TenantEnableArgs {
    #[arg(long)]
    pub tenant: TenantId,
    /// `pilot` (only the pilot mailbox) or `all`.
    #[arg(long, value_parser = ["pilot", "all"])]
    pub rollout: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Mailboxes of a tenant with state, links and last sync.
    List(TenantRef),
    /// Override the direction of one kind for one mailbox.
    SetDirection(SetDirectionArgs),
}

#[derive(Debug, Args)]
pub struct SetDirectionArgs {
    #[arg(long)]
    pub tenant: TenantId,
    #[arg(long)]
    pub mailbox: MailboxId,
    #[arg(long)]
    pub kind: Kind,
    /// both | to_exchange | to_hellohq | off | default (remove the override)
    #[arg(long, value_parser = ["both", "to_exchange", "to_hellohq", "off", "default"])]
    pub direction: String,
}

#[derive(Debug, Args)]
pub struct ResyncArgs {
    #[arg(long)]
    pub tenant: TenantId,
    /// Only this mailbox (default: every syncing mailbox).
    #[arg(long)]
    pub mailbox: Option<MailboxId>,
    /// Only this kind (default: all three).
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Wait until the queue has drained, showing progress (needs a running worker).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Hints that could not be applied, with the reason.
    List,
    /// Put dead letters back on the queue (all, or the ids given).
    Replay {
        #[arg(long = "id")]
        ids: Vec<String>,
    },
}

fn secret_from_env(var: &str, what: &str, required: bool) -> anyhow::Result<Option<SecretString>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(SecretString::from(v.trim().to_string()))),
        _ if required => bail!("{what}: set the environment variable {var} (secrets are never taken from arguments)"),
        _ => Ok(None),
    }
}

fn journal(tenant: &TenantId, what: &str, detail: serde_json::Value) -> NewJournalEntry {
    let actor = std::env::var("USER").map(|u| format!("cli:{u}")).unwrap_or_else(|_| "cli".into());
    NewJournalEntry {
        tenant: Some(tenant.clone()),
        action: "admin".into(),
        detail: json!({"what": what, "summary": what, "detail": detail}),
        actor: Some(actor),
        ..Default::default()
    }
}

pub async fn tenant(app: &App, cmd: TenantCommand) -> anyhow::Result<u8> {
    match cmd {
        TenantCommand::Add(a) => {
            if app.store.get_tenant(&a.id).await?.is_some() {
                bail!("tenant {} exists already", a.id);
            }
            if a.name.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
                bail!("--name contains a control character (NUL, ESC, tab, newline…); use plain text");
            }
            let now = Utc::now();
            let mut settings = json!({});
            if let Some(p) = &a.pilot {
                settings = json!({"pilot_mailbox": p.as_str(), "rollout": "pilot"});
            }
            let t = Tenant {
                id: a.id.clone(),
                name: a.name.clone().unwrap_or_else(|| a.id.to_string()),
                // Enabled by `tenant enable` once the connection test passes.
                enabled: false,
                graph: GraphCredentials {
                    entra_tenant_id: a.graph_tenant_id.clone(),
                    client_id: a.client_id.clone(),
                    client_secret: secret_from_env(&a.client_secret_env, "the client secret", true)?
                        .unwrap_or_default(),
                    graph_base: a.graph_base.clone().unwrap_or_else(crate::config::default_graph_base),
                    login_base: a.login_base.clone().unwrap_or_else(crate::config::default_login_base),
                },
                hellohq: HellohqCredentials {
                    base_url: a.hellohq_base.clone().unwrap_or_else(crate::config::default_hellohq_base),
                    token: secret_from_env(&a.hellohq_token_env, "the helloHQ token", true)?.unwrap_or_default(),
                    webhook_secrets: secret_from_env(&a.webhook_secret_env, "the webhook secret", false)?
                        .into_iter()
                        .collect(),
                },
                settings,
                created_at: now,
                updated_at: now,
            };
            app.store.upsert_tenant(&t).await?;
            app.store.append_journal(&journal(&t.id, "tenant created", json!({}))).await?;
            println!(
                "tenant {} added (disabled): run `hqsync tenant enable --tenant {}` to test and enable it",
                t.id, t.id
            );
            Ok(0)
        }
        TenantCommand::List => {
            println!("{:<20} {:<8} {:<10} {:<30} name", "tenant", "enabled", "mailboxes", "rollout");
            for t in app.store.list_tenants().await? {
                let n = app.store.list_mailboxes(&t.id).await?.len();
                let rollout = t.settings.get("rollout").and_then(|v| v.as_str()).unwrap_or("all");
                let pilot = t.settings.get("pilot_mailbox").and_then(|v| v.as_str()).unwrap_or("");
                let rollout = printable(&format!("{rollout} {pilot}"));
                println!("{:<20} {:<8} {:<10} {:<30} {}", t.id, t.enabled, n, rollout, printable(&t.name));
            }
            Ok(0)
        }
        TenantCommand::Test(r) => {
            let t = app.store.get_tenant(&r.tenant).await?.with_context(|| format!("no tenant {}", r.tenant))?;
            Ok(if print_test(app, &t).await { 0 } else { EXIT_CHECK_FAILED })
        }
        TenantCommand::Enable(a) => {
            let mut t = app.store.get_tenant(&a.tenant).await?.with_context(|| format!("no tenant {}", a.tenant))?;
            if !print_test(app, &t).await {
                eprintln!("not enabled: fix the failed checks above, then run this again");
                return Ok(EXIT_CHECK_FAILED);
            }
            t.enabled = true;
            if let Some(r) = &a.rollout {
                t.settings["rollout"] = json!(r);
            }
            t.updated_at = Utc::now();
            app.store.upsert_tenant(&t).await?;
            if a.rollout.as_deref() == Some("all") {
                for mut m in app.store.list_mailboxes(&t.id).await? {
                    if m.settings.get("disabled_by").and_then(|v| v.as_str()) == Some("rollout") {
                        m.state = crate::store::MailboxState::Active;
                        if let Some(o) = m.settings.as_object_mut() {
                            o.remove("disabled_by");
                        }
                        app.store.upsert_mailbox(&m).await?;
                    }
                }
            }
            app.store.append_journal(&journal(&t.id, "tenant enabled", json!({"rollout": a.rollout}))).await?;
            println!("tenant {} enabled", t.id);
            Ok(0)
        }
    }
}

async fn print_test(app: &App, t: &Tenant) -> bool {
    let report = crate::conntest::run(&app.store, &app.config.public_url(), t, &app.config.graph_client_config()).await;
    for c in &report.checks {
        println!("{} {:<22} {}", if c.ok { "ok  " } else { "FAIL" }, printable(&c.name), printable(&c.detail));
        if let Some(f) = c.fix.as_deref().filter(|_| !c.ok) {
            println!("     fix: {}", printable(f));
        }
    }
    // What the probes found, one line each (`graph.if_match = enforced`).
    if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(&report.capabilities) {
        for (section, fields) in sections.iter().filter(|(k, _)| *k != "tested_at") {
            for (name, value) in fields.as_object().into_iter().flatten() {
                // A map (helloHQ's spelling per list) is one line per entry.
                let entries: Vec<(String, &serde_json::Value)> = match value.as_object() {
                    Some(m) => m.iter().map(|(k, v)| (format!("{section}.{name}.{k}"), v)).collect(),
                    None => vec![(format!("{section}.{name}"), value)],
                };
                for (label, value) in entries {
                    let shown = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                    println!("capability {:<34} {}", printable(&label), printable(&shown));
                }
            }
        }
    }
    report.ok
}

pub async fn mailbox(app: &App, cmd: MailboxCommand) -> anyhow::Result<u8> {
    match cmd {
        MailboxCommand::List(r) => {
            println!("{:<40} {:<9} {:<8} {:<8} last contact pass", "mailbox", "state", "contacts", "tasks");
            for m in app.store.list_mailboxes(&r.tenant).await? {
                let c = app.store.count_links(&r.tenant, Some(&m.id), Some(Kind::Contact)).await?;
                let t = app.store.count_links(&r.tenant, Some(&m.id), Some(Kind::Task)).await?;
                let last = app
                    .store
                    .get_cursor(&r.tenant, m.id.as_str(), crate::engine::contacts::LAST_PASS)
                    .await?
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "never".into());
                println!("{:<40} {:<9} {:<8} {:<8} {last}", m.id, format!("{:?}", m.state).to_lowercase(), c, t);
            }
            Ok(0)
        }
        MailboxCommand::SetDirection(a) => {
            let mut m = app
                .store
                .get_mailbox(&a.tenant, &a.mailbox)
                .await?
                .with_context(|| format!("no mailbox {} in tenant {}", a.mailbox, a.tenant))?;
            let value = if a.direction == "default" {
                serde_json::Value::Null
            } else {
                let d: Direction = serde_json::from_value(json!(a.direction)).map_err(|_| {
                    anyhow::anyhow!(
                        "--direction {:?}: expected both, to_exchange, to_hellohq, off or default",
                        a.direction
                    )
                })?;
                json!(d)
            };
            if !m.settings.is_object() {
                m.settings = json!({});
            }
            let dirs = m.settings.as_object_mut().map(|o| o.entry("directions").or_insert_with(|| json!({})));
            if let Some(serde_json::Value::Object(d)) = dirs {
                if value.is_null() {
                    d.remove(a.kind.as_str());
                } else {
                    d.insert(a.kind.as_str().into(), value);
                }
            }
            m.updated_at = Utc::now();
            app.store.upsert_mailbox(&m).await?;
            let mut e = journal(&a.tenant, "direction set", json!({"kind": a.kind, "direction": a.direction}));
            e.mailbox = Some(a.mailbox.clone());
            app.store.append_journal(&e).await?;
            println!("{} {}: {}", a.mailbox, a.kind, a.direction);
            Ok(0)
        }
    }
}

pub async fn resync(app: &App, a: ResyncArgs) -> anyhow::Result<u8> {
    app.store.get_tenant(&a.tenant).await?.with_context(|| format!("no tenant {}", a.tenant))?;
    let mailboxes = match &a.mailbox {
        Some(m) => vec![m.clone()],
        None => app.store.list_mailboxes(&a.tenant).await?.into_iter().map(|m| m.id).collect(),
    };
    let kinds = match a.kind {
        Some(k) => vec![k],
        None => Kind::ALL.to_vec(),
    };
    let hints: Vec<Hint> = mailboxes
        .iter()
        .flat_map(|m| kinds.iter().map(move |k| (m, *k)))
        .map(|(m, k)| Hint {
            v: HINT_VERSION,
            hint_id: uuid::Uuid::new_v4(),
            tenant: a.tenant.clone(),
            mailbox: Some(m.clone()),
            kind: Some(k),
            entity: None,
            origin: Origin::Schedule,
            resource_id: None,
            version: None,
            subscription_id: None,
            change: Change::Resync,
            received_at: Utc::now(),
        })
        .collect();
    app.queue.publish(&hints).await?;
    app.store.append_journal(&journal(&a.tenant, "resync requested", json!({"hints": hints.len()}))).await?;
    println!("queued {} resync passes ({} mailboxes × {} kinds)", hints.len(), mailboxes.len(), kinds.len());
    if a.wait {
        let started = Instant::now();
        loop {
            let d = app.queue.depth().await?;
            let pending = d.ready + d.unacked.unwrap_or(0);
            eprint!("\rwaiting for the workers: {pending} hints pending, {:>4} s", started.elapsed().as_secs());
            if pending == 0 {
                eprintln!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(0)
}

pub async fn dead_letters(app: &App, cmd: DeadLetterCommand) -> anyhow::Result<u8> {
    match cmd {
        DeadLetterCommand::List => {
            let list = app.queue.dead_letters(1000).await?;
            if list.is_empty() {
                println!("no dead letters");
            }
            for d in list {
                let what = d
                    .hint
                    .as_ref()
                    .map(|h| {
                        format!(
                            "{} {} {} {}",
                            h.tenant,
                            h.mailbox.as_ref().map(|m| m.as_str()).unwrap_or("-"),
                            h.change.as_str(),
                            h.resource_id.as_deref().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| "(undecodable)".into());
                println!("{}  attempts {}  {}\n    {}", d.id, d.attempts, printable(&what), printable(&d.reason));
            }
            Ok(0)
        }
        DeadLetterCommand::Replay { ids } => {
            let n = app.queue.replay_dead_letters(&ids).await?;
            println!("replayed {n} dead letters");
            Ok(0)
        }
    }
}

/// Text for a terminal: control characters (NUL, ESC, newlines, C1…) are
/// printed escaped (`\u{1b}`), so a stored name or a remote message can
/// neither hide lines nor send escape sequences to the operator's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod printable_tests {
    /// Issue #20, finding 11: a tenant name with NUL and ESC was printed raw.
    #[test]
    fn control_characters_are_printed_escaped() {
        assert_eq!(super::printable("a\u{1b}[31mred\u{0}\nb\u{9b}"), "a\\u{1b}[31mred\\u{0}\\nb\\u{9b}");
        assert_eq!(super::printable("Müller & Söhne"), "Müller & Söhne");
    }
}
