//! Delivers change and lifecycle notifications: gathers queued items for a
//! short window, POSTs `{"value":[…]}` per notification URL (several
//! subscriptions' items in one POST), with Graph's 3 s timeout and bounded
//! retries with backoff. The drop-rate fault discards items and announces
//! them with a `missed` lifecycle event. Never holds a lock across I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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
        for (url, items) in by_url {
            let shared = shared.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = deliver(&shared, &url, items) => {}
                }
            });
        }
    }
}

async fn deliver(shared: &Arc<Shared>, url: &str, items: Vec<Outgoing>) {
    let drop_rate = lock(&shared.faults).drop_notification_rate;
    let (kept, dropped): (Vec<Outgoing>, Vec<Outgoing>) = items.into_iter().partition(|i| {
        // Only change notifications are dropped; the `missed` event announcing them must arrive.
        i.lifecycle || drop_rate <= 0.0 || rand::thread_rng().gen::<f64>() >= drop_rate
    });
    if !dropped.is_empty() {
        let mut missed_for = BTreeSet::new();
        {
            let mut st = lock(&shared.stats);
            for d in &dropped {
                st.notifications_dropped += 1;
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
    let body = json!({"value": kept.iter().map(|i| i.item.clone()).collect::<Vec<_>>()});
    let mut delay = shared.cfg.notification_retry_base;
    for attempt in 1..=shared.cfg.notification_max_attempts.max(1) {
        let sent = shared
            .http
            .post(url)
            .timeout(shared.cfg.notification_timeout)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if sent {
            let mut st = lock(&shared.stats);
            st.notifications_sent += change_count;
            st.lifecycle_sent += lifecycle_count;
            st.notification_posts += 1;
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
