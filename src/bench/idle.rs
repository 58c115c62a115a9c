//! `hqsync bench idle`: what hqsync's periodic passes cost helloHQ and
//! Graph for a tenant whose data does not change, and under a steady stream
//! of edits, for a small tenant (the baseline, measured in the same run) and
//! a large one (issue 18: "idle requests must not grow with the number of
//! records"; issue 22). Every request either simulator answers in a window
//! is counted, by route; the figures are per minute at the bench's pass
//! cadence and per periodic round, beside helloHQ's 1,000 requests/minute.
//!
//! Windows per tenant size:
//! - **fresh**: right after the initial sync. The helloHQ change poll still
//!   re-reads its overlap (2 min behind its watermark), where the seeded
//!   rows all lie: this is what a bulk import costs for two minutes.
//! - **idle**: once the overlap has settled.
//! - **load**: contacts edited at `--rate` per second, half in Exchange,
//!   half in helloHQ.

use std::time::{Duration, Instant};

use clap::Args;

use super::rig::{Counters, Rig, RigOptions};
use super::sync::{start_settled, steady_load, Editor};
use crate::connectors::hellohq::poll::DEFAULT_OVERLAP;

/// helloHQ's request limit per minute (its developer guide; docs/hellohq-api.md).
const HELLOHQ_LIMIT_PER_MINUTE: f64 = 1_000.0;

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Contact persons of the large tenant (the baseline tenant has 100).
    #[arg(long, default_value_t = 10_000)]
    pub contacts: usize,
    /// Mailboxes (helloHQ users) of each tenant.
    #[arg(long, default_value_t = 2)]
    pub mailboxes: usize,
    /// Length of each measuring window, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds between periodic passes (helloHQ poll, Graph reconcile, To
    /// Do poll) while measured; production runs them every 60 s.
    #[arg(long, default_value_t = 5)]
    pub periodic_secs: u64,
    /// Edits per second in the load window.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
}

/// One window's counts.
#[derive(Debug, Clone)]
pub struct IdleFigures {
    pub contacts: usize,
    pub window: &'static str,
    pub seconds: f64,
    pub hq_requests: u64,
    pub graph_requests: u64,
    pub edits: usize,
    pub hq_routes: Vec<(String, u64)>,
}

impl IdleFigures {
    pub fn hq_per_minute(&self) -> f64 {
        self.hq_requests as f64 * 60.0 / self.seconds.max(0.001)
    }

    pub fn graph_per_minute(&self) -> f64 {
        self.graph_requests as f64 * 60.0 / self.seconds.max(0.001)
    }
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<Vec<IdleFigures>> {
    anyhow::ensure!(args.contacts >= 1 && args.mailboxes >= 1, "--contacts and --mailboxes must be at least 1");
    anyhow::ensure!(args.seconds >= 1 && args.periodic_secs >= 1, "--seconds and --periodic-secs must be at least 1");
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    println!(
        "hqsync bench idle: {} mailboxes; baseline tenant 100 contact persons, large tenant {}; windows of {} s; \
         periodic passes every {} s",
        args.mailboxes, args.contacts, args.seconds, args.periodic_secs
    );
    let mut all = Vec::new();
    for size in [100, args.contacts] {
        eprintln!("tenant of {size} contact persons:");
        let mut opts = RigOptions::demo();
        opts.synthetic = Some((args.mailboxes, size));
        opts.periodic_secs = args.periodic_secs;
        let rig = start_settled(opts).await?;
        all.push(window(&rig, size, "fresh", args.seconds, None).await?);
        let settle = DEFAULT_OVERLAP + Duration::from_secs(2 * args.periodic_secs);
        let t = Instant::now();
        while t.elapsed() < settle {
            eprintln!("  waiting for the change poll's overlap to settle: {} s left", (settle - t.elapsed()).as_secs());
            tokio::time::sleep((settle - t.elapsed()).min(Duration::from_secs(20))).await;
        }
        all.push(window(&rig, size, "idle", args.seconds, None).await?);
        let ed = Editor::prepare(&rig).await?;
        all.push(window(&rig, size, "load", args.seconds, Some((&ed, args.rate))).await?);
        rig.stop().await;
        // Each size's figures as soon as they are measured: a large tenant
        // that fails to settle still leaves the baseline printed.
        print_idle(&all, &args, all.len() - 3);
    }
    print_ratio_legend();
    Ok(all)
}

/// Counts every request both simulators answer during `seconds` (with
/// edits at `load.1` per second when given).
async fn window(
    rig: &Rig,
    contacts: usize,
    name: &'static str,
    seconds: u64,
    load: Option<(&Editor, f64)>,
) -> anyhow::Result<IdleFigures> {
    eprintln!("  measuring the {name} window ({seconds} s) …");
    let before: Counters = rig.counters().await?;
    let t = Instant::now();
    let edits = match load {
        Some((ed, rate)) => {
            let n = (rate * seconds as f64).round().max(1.0) as usize;
            steady_load(rig, ed, rate, n).await?.len()
        }
        None => 0,
    };
    if let Some(rest) = Duration::from_secs(seconds).checked_sub(t.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let spent = rig.counters().await?.since(&before);
    let seconds = t.elapsed().as_secs_f64();
    // The bench's own edits are requests the simulators count too: take them out.
    let (own_graph, own_hq) = match load {
        Some(_) => (edits.div_ceil(2) as u64, (edits / 2) as u64),
        None => (0, 0),
    };
    let hq_routes: Vec<(String, u64)> =
        spent.hq.iter().filter(|(k, _)| !k.contains("/_sim/")).map(|(k, v)| (k.clone(), *v)).collect();
    Ok(IdleFigures {
        contacts,
        window: name,
        seconds,
        hq_requests: spent.hq_total().saturating_sub(own_hq),
        graph_requests: spent.graph_total().saturating_sub(own_graph),
        edits,
        hq_routes,
    })
}

/// Prints the rows of `all` from `from` on, each with its ratio against the
/// baseline tenant's row of the same window.
fn print_idle(all: &[IdleFigures], args: &IdleArgs, from: usize) {
    let baseline = |w: &str| all.iter().find(|f| f.contacts == 100 && f.window == w);
    println!(
        "{:<8} {:>9} {:>6} {:>16} {:>9} {:>19} {:>9} {:>24}",
        "window",
        "contacts",
        "edits",
        "helloHQ req/min",
        "of limit",
        "helloHQ req/round",
        "ratio",
        "Graph req/mbx/round"
    );
    for f in &all[from..] {
        let rounds_per_minute = 60.0 / args.periodic_secs as f64;
        let ratio = baseline(f.window).map(|b| f.hq_per_minute() / b.hq_per_minute().max(f64::MIN_POSITIVE));
        let graph_per_round_and_mailbox = f.graph_per_minute() / rounds_per_minute / args.mailboxes as f64;
        println!(
            "{:<8} {:>9} {:>6} {:>16.1} {:>8.1}% {:>19.1} {:>9} {:>24.1}",
            f.window,
            f.contacts,
            f.edits,
            f.hq_per_minute(),
            100.0 * f.hq_per_minute() / HELLOHQ_LIMIT_PER_MINUTE,
            f.hq_per_minute() / rounds_per_minute,
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            graph_per_round_and_mailbox,
        );
        let routes: Vec<String> = f.hq_routes.iter().map(|(r, n)| format!("{n}× {r}")).collect();
        println!("    helloHQ: {}", routes.join(", "));
    }
}

fn print_ratio_legend() {
    println!(
        "ratio: helloHQ requests per minute against the 100-contact tenant's in the same window of this run.\n\
         A round: the bench runs the helloHQ change poll (tenant pass), the contact/calendar reconcile and the To Do \
         poll all every --periodic-secs; production runs the first every 60 s and the other two every 900 s \
         (hellohq.poll_interval_secs, reconcile.interval_secs, tasks.poll_interval_secs), so a production minute \
         costs one tenant pass and a fifteenth of the per-mailbox passes. The routes per window show which is which."
    );
}
