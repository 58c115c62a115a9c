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
#[command(name = "hqsync", version, about = "Keeps appointments, tasks and contacts in step between helloHQ and Exchange Online")]
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
        let mut config = match Config::load(self.config.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Command::Serve(ListenArgs { listen: Some(a) }) | Command::Run(ListenArgs { listen: Some(a) }) = &self.command {
            config.http.listen = *a;
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
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Openapi => unreachable!("handled before the runtime starts"),
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
            let res = app.serve(listener, shutdown).await;
            app.queue.close().await;
            res
        }
        Command::Worker => {
            let app = App::open(config).await?;
            let shutdown = app::shutdown_on_signals();
            app.worker().run(shutdown).await;
            app.queue.close().await;
            Ok(())
        }
        Command::Run(_) => {
            let listener = app::bind(config.http.listen).await?;
            let app = App::open(config).await?;
            let shutdown = app::shutdown_on_signals();
            let worker = tokio::spawn(app.worker().run(shutdown.clone()));
            let res = app.serve(listener, shutdown.clone()).await;
            shutdown.cancel();
            let _ = worker.await;
            app.queue.close().await;
            res
        }
    }
}
