//! Delivers change and lifecycle notifications: gathers queued items for a
//! short window, POSTs `{"value":[…]}` per notification URL (several
//! subscriptions' items in one POST), with Graph's 3 s timeout and bounded
//! retries with backoff. The drop-rate fault discards items and announces
//! them with a `missed` lifecycle event. Never holds a lock across I/O.
//!
//! Slow endpoints (GRAPH.md §4.5), per notification URL: a POST slower than
//! the slow threshold (or timing out) counts as slow; once a URL has had the
//! minimum number of deliveries in the current counter window, a slow share
//! at or above the delay ratio holds its deliveries back by the configured
//! simulator-clock minutes, and at or above the drop ratio its change
//! notifications are dropped and announced with `missed`. Counters reset when
//! the window (wall clock) has passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{lock, subscriptions, Shared};

/// One notification item waiting for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub url: String,
    pub subscription_id: String,
    pub lifecycle: bool,
    pub item: Value,
}

/// Slow-delivery counters of one notification URL.
#[derive(Debug)]
struct Endpoint {
    window_start: Instant,
    deliveries: u32,
    slow: u32,
}

/// What the slow-endpoint rules make of a URL right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Normal,
    Delayed,
    Dropped,
}

/// Slow-delivery counters per notification URL.
#[derive(Debug, Default)]
pub(crate) struct Endpoints {
    by_url: HashMap<String, Endpoint>,
}

impl Endpoints {
    fn entry(&mut self, url: &str, window: Duration) -> &mut Endpoint {
        let e = self.by_url.entry(url.to_string()).or_insert_with(|| Endpoint {
            window_start: Instant::now(),
            deliveries: 0,
            slow: 0,
        });
        if e.window_start.elapsed() >= window {
            *e = Endpoint { window_start: Instant::now(), deliveries: 0, slow: 0 };
        }
        e
    }

    fn standing(&mut self, shared: &Shared, url: &str) -> Standing {
        let cfg = &shared.cfg;
        let e = self.entry(url, cfg.slow_endpoint_window);
        if e.deliveries == 0 || e.deliveries < cfg.slow_endpoint_min_deliveries {
            return Standing::Normal;
        }
        let ratio = f64::from(e.slow) / f64::from(e.deliveries);
        if ratio >= cfg.slow_endpoint_drop_ratio {
            Standing::Dropped
        } else if ratio >= cfg.slow_endpoint_delay_ratio {
            Standing::Delayed
        } else {
            Standing::Normal
        }
    }

    fn record(&mut self, shared: &Shared, url: &str, slow: bool) {
        let e = self.entry(url, shared.cfg.slow_endpoint_window);
        e.deliveries += 1;
        if slow {
            e.slow += 1;
        }
    }
}

pub(crate) fn enqueue(shared: &Shared, items: Vec<Outgoing>) {
    for i in items {
        // The receiver only goes away at shutdown; late items are moot then.
        let _ = shared.notify_tx.send(i);
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            item = rx.recv() => match item { Some(i) => i, None => return },
        };
        tokio::time::sleep(shared.cfg.notification_batch_window).await;
        let mut batch = vec![first];
        while let Ok(i) = rx.try_recv() {
            batch.push(i);
        }
        let mut by_url: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
        for i in batch {
            by_url.entry(i.url.clone()).or_default().push(i);
        }
        for (url, mut items) in by_url {
            // hqsync refuses a batch over its cap (our contract, issue #20: Graph documents
            // no maximum and sends small batches); a burst goes out as several POSTs.
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(crate::http::graph::MAX_NOTIFICATION_ITEMS));
                let batch = std::mem::replace(&mut items, rest);
                let (shared, cancel, url) = (shared.clone(), cancel.clone(), url.clone());
                tracker.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = deliver(&shared, &url, batch) => {}
                    }
                });
            }
        }
    }
}

async fn deliver(shared: &Arc<Shared>, url: &str, items: Vec<Outgoing>) {
    let standing = lock(&shared.endpoints).standing(shared, url);
    let drop_rate = lock(&shared.faults).drop_notification_rate;
    let (kept, dropped): (Vec<Outgoing>, Vec<Outgoing>) = items.into_iter().partition(|i| {
        // Only change notifications are dropped; the `missed` event announcing them must arrive.
        i.lifecycle
            || (standing != Standing::Dropped && (drop_rate <= 0.0 || rand::thread_rng().gen::<f64>() >= drop_rate))
    });
    if !dropped.is_empty() {
        let mut missed_for = BTreeSet::new();
        {
            let mut st = lock(&shared.stats);
            for d in &dropped {
                st.notifications_dropped += 1;
                if standing == Standing::Dropped {
                    st.notifications_dropped_slow += 1;
                }
                missed_for.insert(d.subscription_id.clone());
            }
        }
        let missed: Vec<Outgoing> = {
            let w = lock(&shared.world);
            missed_for
                .iter()
                .filter_map(|id| w.subscriptions.get(id))
                .filter_map(|s| subscriptions::lifecycle_item(&w, s, "missed"))
                .collect()
        };
        enqueue(shared, missed);
    }
    if kept.is_empty() {
        return;
    }
    let lifecycle_count = kept.iter().filter(|i| i.lifecycle).count() as u64;
    let change_count = kept.len() as u64 - lifecycle_count;
    if standing == Standing::Delayed {
        lock(&shared.stats).notifications_delayed += change_count;
        // The delay runs on the simulator clock so a test can skip it with `/_sim/clock`.
        let release = shared.clock.now() + chrono::Duration::minutes(shared.cfg.slow_endpoint_delay_minutes);
        while shared.clock.now() < release {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let body = json!({"value": kept.iter().map(|i| i.item.clone()).collect::<Vec<_>>()});
    let mut delay = shared.cfg.notification_retry_base;
    for attempt in 1..=shared.cfg.notification_max_attempts.max(1) {
        let started = Instant::now();
        let answer = shared.http.post(url).timeout(shared.cfg.notification_timeout).json(&body).send().await;
        let slow = answer.as_ref().err().is_some_and(reqwest::Error::is_timeout)
            || started.elapsed() > shared.cfg.slow_notification_threshold;
        lock(&shared.endpoints).record(shared, url, slow);
        if answer.is_ok_and(|r| r.status().is_success()) {
            {
                let mut st = lock(&shared.stats);
                st.notifications_sent += change_count;
                st.lifecycle_sent += lifecycle_count;
                st.notification_posts += 1;
            }
            redeliver_some(shared, url, &kept);
            return;
        }
        lock(&shared.stats).notification_attempts_failed += 1;
        if attempt < shared.cfg.notification_max_attempts {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    let mut st = lock(&shared.stats);
    st.notifications_failed += change_count;
    st.lifecycle_failed += lifecycle_count;
}

/// The duplicate fault: a share of the change notifications just delivered
/// is posted once more, on its own and 0.1–2 s later, so the receiver sees
/// it twice and out of order with what came in between. One attempt only.
fn redeliver_some(shared: &Arc<Shared>, url: &str, kept: &[Outgoing]) {
    let rate = lock(&shared.faults).duplicate_notification_rate;
    if rate <= 0.0 {
        return;
    }
    let (again, delay) = {
        let mut rng = rand::thread_rng();
        let again: Vec<Value> =
            kept.iter().filter(|i| !i.lifecycle && rng.gen::<f64>() < rate).map(|i| i.item.clone()).collect();
        (again, Duration::from_millis(rng.gen_range(100..2000)))
    };
    if again.is_empty() {
        return;
    }
    lock(&shared.stats).notifications_duplicated += again.len() as u64;
    let (shared, url) = (shared.clone(), url.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let body = json!({"value": again});
        let _ = shared.http.post(&url).timeout(shared.cfg.notification_timeout).json(&body).send().await;
    });
}
