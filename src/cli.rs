//! Command line: parses arguments, loads configuration, dispatches to a
//! role. Exit codes scripts can rely on: 0 done, 1 runtime failure,
//! 2 bad configuration or usage.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{self, App};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "hqsync",
    version,
    about = "Keeps appointments, tasks and contacts in step between helloHQ and Exchange Online"
)]
pub struct Cli {
    /// Configuration file (default: ./hqsync.toml when present). Environment
    /// variables HQSYNC_… override it (`__` separates levels).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingress: receive Graph notifications and helloHQ webhooks, publish hints.
    Serve(ListenArgs),
    /// Consume hints and apply them.
    Worker,
    /// All roles in one process (the embedded default: SQLite + local queue).
    Run(ListenArgs),
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Measure performance; prints figures and ratios against a baseline.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Run the Microsoft Graph and/or helloHQ simulators in the foreground.
    Sim(SimArgs),
    /// Dry run: what a sync pass would create, update, delete and match on
    /// each side, written nowhere.
    Plan(PlanArgs),
    /// Approve the deletions a pass held back for a mailbox; its next pass
    /// carries them out.
    Approve(ApproveArgs),
    /// Tenants: add, list, test, enable (test & enable).
    #[command(subcommand)]
    Tenant(crate::ops::TenantCommand),
    /// Mailboxes: list, set-direction.
    #[command(subcommand)]
    Mailbox(crate::ops::MailboxCommand),
    /// Queue a full pass for a tenant's mailboxes (or one mailbox / kind).
    Resync(crate::ops::ResyncArgs),
    /// Hints that could not be applied: list, replay.
    #[command(subcommand)]
    DeadLetters(crate::ops::DeadLetterCommand),
    /// Try it out: every role plus both simulators with demo data, and a live
    /// feed of what is synchronised. Needs no configuration.
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Tenant id.
    #[arg(long)]
    pub tenant: crate::model::TenantId,
    /// Only this mailbox (default: every syncing mailbox of the tenant).
    #[arg(long)]
    pub mailbox: Option<crate::model::MailboxId>,
    /// Only this kind (appointment|task|contact; default: all that are synchronised).
    #[arg(long)]
    pub kind: Option<crate::model::Kind>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[arg(long)]
    pub tenant: crate::model::TenantId,
    #[arg(long)]
    pub mailbox: crate::model::MailboxId,
    /// Only this kind's held deletions (appointment|task|contact; default: every kind).
    #[arg(long)]
    pub kind: Option<crate::model::Kind>,
    /// Only list the held deletions; approve nothing.
    #[arg(long)]
    pub list: bool,
    /// Approve only this held item (its key as listed, `hq:<id>|graph:<id>`); repeatable. Default: the whole list.
    #[arg(long = "item", value_name = "KEY")]
    pub items: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Serve the Graph simulator (token endpoint, /v1.0, /_sim) on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub graph: Option<SocketAddr>,
    /// Serve the helloHQ simulator (/v1, /v2, /_sim) on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub hellohq: Option<SocketAddr>,
    /// What the simulators hold at start.
    #[arg(long, value_enum, default_value = "demo")]
    pub seed: SimSeed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimSeed {
    /// The small agency of the demo: users, mailboxes, contacts, appointments, tasks.
    Demo,
    /// Nothing but the app registration and the sync token.
    Empty,
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on (overrides http.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

impl Cli {
    pub fn run(self) -> ExitCode {
        if let Command::Openapi = self.command {
            print!("{}", crate::http::openapi::render());
            return ExitCode::SUCCESS;
        }
        if let Command::Sim(args) = self.command {
            return run_sims(args);
        }
        if let Command::Demo(args) = self.command {
            return crate::demo::main(args, self.config.as_deref());
        }
        let mut config = match Config::load(self.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Command::Serve(ListenArgs { listen: Some(a) }) | Command::Run(ListenArgs { listen: Some(a) }) =
            &self.command
        {
            config.http.listen = *a;
        }
        if matches!(self.command, Command::Serve(_) | Command::Run(_)) {
            if let Err(e) = config.check_public_url_for_serving() {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        if matches!(self.command, Command::Bench(_)) && config.log.level == Config::default().log.level {
            // A bench prints its own progress and figures; the info logs of
            // the hqsync it runs would bury them (log.level or RUST_LOG
            // still shows them).
            config.log.level = "warn".into();
        }
        crate::telemetry::init(&config.log);
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(dispatch(self.command, config)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<u8> {
    let ops =
        matches!(command, Command::Tenant(_) | Command::Mailbox(_) | Command::Resync(_) | Command::DeadLetters(_));
    if !ops {
        return dispatch_roles(command, config).await.map(|()| 0);
    }
    let app = App::open(config).await?;
    let res = match command {
        Command::Tenant(c) => crate::ops::tenant(&app, c).await,
        Command::Mailbox(c) => crate::ops::mailbox(&app, c).await,
        Command::Resync(a) => crate::ops::resync(&app, a).await,
        Command::DeadLetters(c) => crate::ops::dead_letters(&app, c).await,
        _ => unreachable!("only operator commands get here"),
    };
    app.queue.close().await;
    res
}

async fn dispatch_roles(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Openapi | Command::Sim(_) | Command::Demo(_) => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Tenant(_) | Command::Mailbox(_) | Command::Resync(_) | Command::DeadLetters(_) => {
            unreachable!("operator commands are dispatched above")
        }
        Command::Plan(args) => {
            let app = App::open(config).await?;
            let res = plan(&app, args).await;
            app.queue.close().await;
            res
        }
        Command::Approve(args) => {
            let app = App::open(config).await?;
            let engine = app.engine();
            let actor = std::env::var("USER").map(|u| format!("cli:{u}")).unwrap_or_else(|_| "cli".into());
            let held = engine.held(&args.tenant, &args.mailbox, args.kind).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if held.is_empty() {
                println!("nothing held for {}", args.mailbox);
                app.queue.close().await;
                return Ok(());
            }
            for h in &held {
                println!("held {} deletions ({}): {}", h.kind, h.items.len(), h.reason);
                for i in &h.items {
                    println!("  {}  delete in {}  {}", i.key, i.delete_in, i.name.escape_debug());
                }
            }
            if !args.list {
                let only = (!args.items.is_empty()).then_some(args.items.as_slice());
                let approved = engine
                    .approve(&args.tenant, &args.mailbox, args.kind, only, &actor)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let n: usize = approved.iter().map(|(_, i)| i.len()).sum();
                println!(
                    "approved {n} item(s): the next pass of {} deletes those still gone, and holds anything new again",
                    args.mailbox
                );
            }
            app.queue.close().await;
            Ok(())
        }
        Command::Bench(b) => crate::bench::run(b, config).await,
        Command::Migrate => {
            let app = App::open(config).await?;
            println!("store schema is up to date ({})", app.store.backend_name());
            app.queue.close().await;
            Ok(())
        }
        Command::Serve(_) => {
            let listener = app::bind(config.http.listen).await?;
            let app = App::open(config).await?;
            let shutdown = app::shutdown_on_signals();
            let scheduler = app.spawn_scheduler(shutdown.clone());
            // Counted among the processes doing Graph work only with a scheduler.
            let presence_stop = tokio_util::sync::CancellationToken::new();
            let presence = scheduler.as_ref().map(|_| app.spawn_presence(presence_stop.clone()));
            let res = app.serve(listener, shutdown.clone()).await;
            shutdown.cancel();
            if let Some(s) = scheduler {
                let _ = s.await;
            }
            presence_stop.cancel();
            if let Some(p) = presence {
                let _ = p.await;
            }
            app.queue.close().await;
            res
        }
        Command::Worker => {
            let app = App::open(config).await?;
            let shutdown = app::shutdown_on_signals();
            let presence_stop = tokio_util::sync::CancellationToken::new();
            let presence = app.spawn_presence(presence_stop.clone());
            app.worker().run(shutdown).await;
            // Forgotten only once the worker's own requests are done.
            presence_stop.cancel();
            let _ = presence.await;
            app.queue.close().await;
            Ok(())
        }
        Command::Run(_) => {
            let listener = app::bind(config.http.listen).await?;
            let app = App::open(config).await?;
            run_all(app, listener, app::shutdown_on_signals()).await
        }
    }
}

async fn plan(app: &App, args: PlanArgs) -> anyhow::Result<()> {
    use crate::model::Kind;
    let kinds = match args.kind {
        Some(k) => vec![k],
        None => Kind::ALL.to_vec(),
    };
    let engine = app.engine();
    let mut plans = Vec::new();
    for kind in kinds {
        let found =
            engine.plan_kind(&args.tenant, args.mailbox.as_ref(), kind).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        plans.extend(found.into_iter().map(|p| (kind, p)));
    }
    if args.json {
        let v: Vec<serde_json::Value> = plans.iter().map(|(k, p)| serde_json::json!({"kind": k, "plan": p})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (kind, p) in &plans {
        println!("mailbox {} ({kind}s): {} writes, {} unchanged", p.mailbox, p.writes(), p.unchanged);
        let sections = [
            ("create in Exchange", &p.create_in_exchange),
            ("create in helloHQ", &p.create_in_hellohq),
            ("update in Exchange", &p.update_exchange),
            ("update in helloHQ", &p.update_hellohq),
            ("move to folder", &p.move_folder),
            ("delete in Exchange", &p.delete_in_exchange),
            ("delete in helloHQ", &p.delete_in_hellohq),
            ("match existing", &p.matched),
        ];
        for (title, items) in sections {
            if items.is_empty() {
                continue;
            }
            println!("  {title} ({}):", items.len());
            for i in items.iter() {
                println!("    {i}");
            }
        }
        if let Some(h) = &p.held {
            println!("  held: {h}");
        }
    }
    Ok(())
}

/// Every role of `app` in this process (`hqsync run`, `hqsync demo`): HTTP
/// on `listener`, a worker and the scheduler, until `shutdown`; then the
/// worker drains, the scheduler resigns and the queue is closed.
pub async fn run_all(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let presence_stop = tokio_util::sync::CancellationToken::new();
    let presence = app.spawn_presence(presence_stop.clone());
    let worker = tokio::spawn(app.worker().run(shutdown.clone()));
    let scheduler = app.spawn_scheduler(shutdown.clone());
    let res = app.serve(listener, shutdown.clone()).await;
    shutdown.cancel();
    let _ = worker.await;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    presence_stop.cancel();
    let _ = presence.await;
    app.queue.close().await;
    res
}

/// `hqsync sim`: needs no configuration, store or queue.
fn run_sims(args: SimArgs) -> ExitCode {
    use crate::sim::{graph, hellohq};
    if args.graph.is_none() && args.hellohq.is_none() {
        eprintln!(
            "error: give --graph ADDR and/or --hellohq ADDR (e.g. --graph 127.0.0.1:8081 --hellohq 127.0.0.1:8082)"
        );
        return ExitCode::from(2);
    }
    crate::telemetry::init(&Config::default().log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res: anyhow::Result<()> = runtime.block_on(async move {
        let shutdown = app::shutdown_on_signals();
        let mut g = None;
        let mut h = None;
        if let Some(addr) = args.graph {
            let seed = match args.seed {
                SimSeed::Demo => graph::SeedProfile::Demo,
                SimSeed::Empty => graph::SeedProfile::Empty,
            };
            let sim =
                graph::GraphSim::start(app::bind(addr).await?, graph::GraphSimConfig { seed, ..Default::default() })
                    .await?;
            println!(
                "Graph simulator:   {}  (token: /{{tenant}}/oauth2/v2.0/token, API: /v1.0, control: /_sim)",
                sim.base_url()
            );
            g = Some(sim);
        }
        if let Some(addr) = args.hellohq {
            let seed = match args.seed {
                SimSeed::Demo => hellohq::SeedProfile::Demo,
                SimSeed::Empty => hellohq::SeedProfile::Empty,
            };
            let sim = hellohq::HellohqSim::start(
                app::bind(addr).await?,
                hellohq::HellohqSimConfig { seed, ..Default::default() },
            )
            .await?;
            println!("helloHQ simulator: {}  (API: /v1, /v2, control: /_sim)", sim.base_url());
            h = Some(sim);
        }
        shutdown.cancelled().await;
        if let Some(s) = g {
            s.shutdown().await;
        }
        if let Some(s) = h {
            s.shutdown().await;
        }
        Ok(())
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
