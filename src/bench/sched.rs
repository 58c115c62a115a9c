//! `hqsync bench scheduler`: the real [`Scheduler`] keeping many simulated
//! subscriptions (three per mailbox) renewed against the Graph simulator,
//! with hqsync's real ingress answering the validation handshakes. Time is
//! moved with an injected clock (and the simulator's `/_sim/clock`), so a
//! renewal round that Graph spreads over days runs at once: what it reports
//! is how fast one scheduler renews, beside the rate the lifetimes require.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::rig::{Rig, RigOptions};
use crate::scheduler::{Scheduler, SchedulerSettings};

#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Subscriptions to keep (three per mailbox: events and two contact folders).
    #[arg(long, default_value_t = 1500)]
    pub subscriptions: usize,
    /// The size: 40,000 subscriptions.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SchedulerReport {
    pub subscriptions: u64,
    pub created: u32,
    pub create_s: f64,
    pub renewed: u32,
    pub renew_s: f64,
    pub errors: usize,
    /// Renewals per minute the lifetimes require (one per two thirds of a lifetime).
    pub needed_per_min: f64,
    pub cpu_ms_per_renewal: f64,
}

impl SchedulerReport {
    pub fn renewals_per_min(&self) -> f64 {
        self.renewed as f64 / self.renew_s.max(1e-9) * 60.0
    }
}

/// The subscriptions the scheduler keeps per mailbox: its calendar, the two
/// hqsync contact folders and its helloHQ To Do list.
const SUBSCRIPTIONS_PER_MAILBOX: usize = 4;

pub async fn scheduler(mut args: SchedulerArgs) -> anyhow::Result<SchedulerReport> {
    if args.full {
        args.subscriptions = 40_000;
    }
    let mailboxes = args.subscriptions.div_ceil(SUBSCRIPTIONS_PER_MAILBOX).max(1);
    println!(
        "hqsync bench scheduler: {} mailboxes × {SUBSCRIPTIONS_PER_MAILBOX} = {} subscriptions",
        mailboxes,
        mailboxes * SUBSCRIPTIONS_PER_MAILBOX
    );
    let mut opts = RigOptions::demo();
    opts.synthetic = Some((mailboxes, 0));
    opts.hellohq.seed = crate::sim::hellohq::SeedProfile::Empty;
    // The rig's own scheduler and worker stay off: this bench drives one scheduler by hand.
    opts.scheduler = false;
    opts.worker = false;
    eprintln!("  seeding {mailboxes} mailboxes …");
    let rig = Rig::start(opts).await?;
    let offset_min = Arc::new(AtomicI64::new(0));
    let clock = {
        let o = offset_min.clone();
        Arc::new(move || chrono::Utc::now() + chrono::Duration::minutes(o.load(Ordering::Relaxed)))
    };
    let settings = SchedulerSettings {
        // Passes are not what is measured here.
        tasks_poll_interval: Duration::from_secs(365 * 24 * 3600),
        reconcile_interval: Duration::from_secs(365 * 24 * 3600),
        hellohq_poll_interval: Duration::from_secs(365 * 24 * 3600),
        graph: rig.app.config.graph_client_config(),
        ..SchedulerSettings::default()
    };
    let lifetime_min = settings.subscription_minutes as f64;
    let renew_fraction = settings.renew_at_fraction;
    let sched =
        Scheduler::new(rig.store().clone(), rig.app.queue.clone(), &rig.app.config.public_url(), settings, clock);
    let watch = progress_of_subscriptions(&rig);

    let t = Instant::now();
    let created = sched.tick().await;
    let create_s = t.elapsed().as_secs_f64();
    let subs = rig.graph_stats().await?["subscriptions"].as_u64().unwrap_or(0);
    eprintln!("  created {} in {create_s:.1} s ({} errors)", created.created, created.errors.len());

    // Past the renewal point of every subscription, on both clocks.
    let advance = (lifetime_min * renew_fraction).ceil() as i64 + 1;
    offset_min.store(advance, Ordering::Relaxed);
    rig.http
        .post(format!("{}/_sim/clock", rig.facts.graph_url))
        .json(&json!({"advanceMinutes": advance}))
        .send()
        .await?
        .error_for_status()?;
    let cpu0 = super::sync::process_cpu_ms();
    let t = Instant::now();
    let renewed = sched.tick().await;
    let renew_s = t.elapsed().as_secs_f64();
    let cpu = super::sync::process_cpu_ms() - cpu0;
    watch.abort();
    rig.stop().await;
    let r = SchedulerReport {
        subscriptions: subs,
        created: created.created,
        create_s,
        renewed: renewed.renewed,
        renew_s,
        errors: created.errors.len() + renewed.errors.len(),
        needed_per_min: subs as f64 / (lifetime_min * renew_fraction),
        cpu_ms_per_renewal: cpu / renewed.renewed.max(1) as f64,
    };
    println!(
        "create     {} subscriptions in {:.1} s ({:.0}/min)",
        r.created,
        r.create_s,
        r.created as f64 / r.create_s * 60.0
    );
    println!(
        "renew      {} renewals in {:.1} s = {:.0} renewals/min; needed {:.1}/min ({} subscriptions, renewed every {:.0} min) → {:.0}× the need",
        r.renewed,
        r.renew_s,
        r.renewals_per_min(),
        r.needed_per_min,
        r.subscriptions,
        lifetime_min * renew_fraction,
        r.renewals_per_min() / r.needed_per_min.max(1e-9)
    );
    println!(
        "cpu        {:.2} ms per renewal (whole process: scheduler, ingress handshakes and the Graph simulator); errors {}",
        r.cpu_ms_per_renewal, r.errors
    );
    Ok(r)
}

/// Progress on stderr: subscriptions the simulator holds. Rarely, because
/// the simulator's `/_sim/stats` counts subscriptions per mailbox (mailboxes
/// × subscriptions work): polled often at 40,000 it slows the run it watches.
fn progress_of_subscriptions(rig: &Rig) -> tokio::task::JoinHandle<()> {
    let (http, url) = (rig.http.clone(), format!("{}/_sim/stats", rig.facts.graph_url));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(15)).await;
            let w: serde_json::Value = match http.get(&url).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            let renews = w["requests"]["PATCH /subscriptions/{id}"].as_u64().unwrap_or(0);
            eprintln!(
                "  subscriptions at Graph: {}, renewals so far: {renews}",
                w["subscriptions"].as_u64().unwrap_or(0)
            );
        }
    })
}
