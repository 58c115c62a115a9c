//! Which processes of the deployment do Graph work right now, so that each
//! takes only its share of Outlook's per-mailbox limits (issue 19 item 7):
//! a process that runs a worker or a scheduler renews a row of its own in
//! the store (`leases`, named `presence/graph/{id}`) about every 10 s,
//! counts the live rows every 2 s, and sets the count into the
//! [`ProcessShare`] its Graph clients read at every request. A crashed
//! process's row expires after 30 s; a stopped one is forgotten at once.
//! It never holds back or bounces a hint: every process keeps working on
//! every mailbox, each within max(1, floor(4 / N)) concurrent requests and
//! its part of the request budget. When the store cannot be reached the
//! last count stays (the limits never jump up because the store is down).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::connectors::graph::ProcessShare;
use crate::store::Store;

/// The presence group of processes that send Graph requests.
pub const GROUP: &str = "graph";

/// How a process keeps its presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTimings {
    /// The row is renewed this often…
    pub renew_every: Duration,
    /// …and expires this long after the last renewal (a crash).
    pub ttl: Duration,
    /// The live rows are counted this often (a newcomer is seen this late at worst).
    pub count_every: Duration,
}

impl Default for PresenceTimings {
    fn default() -> Self {
        PresenceTimings {
            renew_every: Duration::from_secs(10),
            ttl: Duration::from_secs(30),
            count_every: Duration::from_secs(2),
        }
    }
}

/// One process's presence loop.
pub struct Presence {
    store: Store,
    share: ProcessShare,
    /// Outlook's concurrent requests per mailbox (`per_mailbox_concurrency`), for the warning.
    limit: u32,
    id: String,
    timings: PresenceTimings,
    warned: bool,
}

impl Presence {
    pub fn new(store: Store, share: ProcessShare, limit: u32, timings: PresenceTimings) -> Presence {
        Presence { store, share, limit, id: uuid::Uuid::new_v4().to_string(), timings, warned: false }
    }

    /// This process's id in the store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Registers, counts at once, then keeps renewing and counting until
    /// `stop`; then forgets this process's row (call it after the worker
    /// has drained, so the others raise their share only once this
    /// process's requests are done).
    pub async fn run(mut self, stop: CancellationToken) {
        let mut renewed: Option<Instant> = None;
        loop {
            if renewed.is_none_or(|at| at.elapsed() >= self.timings.renew_every) {
                match self.store.heartbeat_process(GROUP, &self.id, self.timings.ttl).await {
                    Ok(()) => renewed = Some(Instant::now()),
                    // Tried again at the next count.
                    Err(e) => tracing::warn!(error = %e, "cannot renew this process's presence in the store"),
                }
            }
            self.count().await;
            tokio::select! {
                _ = tokio::time::sleep(self.timings.count_every) => {}
                _ = stop.cancelled() => break,
            }
        }
        if let Err(e) = self.store.forget_process(GROUP, &self.id).await {
            tracing::warn!(error = %e, "cannot remove this process's presence; it expires by itself");
        }
    }

    /// Counts the live processes (this one always among them) and sets the
    /// share; on a store error the last count stays. Returns the count set.
    pub async fn count(&mut self) -> u32 {
        let ids = match self.store.live_processes(GROUP).await {
            Ok(ids) => ids,
            Err(e) => {
                let kept = self.share.processes();
                tracing::warn!(error = %e, processes = kept, "cannot count the live processes; keeping the last count");
                return kept;
            }
        };
        let own = u32::from(!ids.iter().any(|i| i == &self.id));
        let n = u32::try_from(ids.len()).unwrap_or(u32::MAX).saturating_add(own).max(1);
        let before = self.share.set_processes(n);
        let limit = self.limit.max(1);
        if n != before {
            tracing::info!(
                processes = n,
                concurrent_per_mailbox = self.share.concurrency(limit),
                "processes doing Graph work counted; this one takes its share of each mailbox's limits"
            );
        }
        if n > limit && !self.warned {
            tracing::warn!(
                processes = n,
                limit,
                "more processes do Graph work than Outlook allows concurrent requests per mailbox: each still \
                 takes 1, so together they can exceed the limit and draw 429s (run at most {limit} worker processes)"
            );
        }
        self.warned = n > limit;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cipher;

    async fn sqlite(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        Store::open(&url, 5, Cipher::from_base64(&Cipher::generate_key_base64()).unwrap()).await.unwrap()
    }

    const QUICK: PresenceTimings = PresenceTimings {
        renew_every: Duration::from_millis(100),
        ttl: Duration::from_millis(400),
        count_every: Duration::from_millis(50),
    };

    async fn until(share: &ProcessShare, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while share.processes() != n {
            assert!(Instant::now() < deadline, "still {} processes counted, not {n}", share.processes());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn processes_see_each_other_come_and_go_and_their_share_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let (a, b) = (ProcessShare::default(), ProcessShare::default());
        let stop_a = CancellationToken::new();
        let stop_b = CancellationToken::new();
        let ta = tokio::spawn(Presence::new(store.clone(), a.clone(), 4, QUICK).run(stop_a.clone()));
        until(&a, 1).await;
        let tb = tokio::spawn(Presence::new(store.clone(), b.clone(), 4, QUICK).run(stop_b.clone()));
        until(&a, 2).await;
        until(&b, 2).await;
        assert_eq!(a.concurrency(4), 2);
        // A clean stop is seen at the next count, not after the expiry.
        stop_b.cancel();
        tb.await.unwrap();
        until(&a, 1).await;
        stop_a.cancel();
        ta.await.unwrap();
        assert!(store.live_processes(GROUP).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_crashed_process_stops_counting_after_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        // A process that registered and then died without a word.
        store.heartbeat_process(GROUP, "crashed", QUICK.ttl).await.unwrap();
        let share = ProcessShare::default();
        let stop = CancellationToken::new();
        let t = tokio::spawn(Presence::new(store.clone(), share.clone(), 4, QUICK).run(stop.clone()));
        until(&share, 2).await;
        until(&share, 1).await;
        stop.cancel();
        t.await.unwrap();
    }

    #[tokio::test]
    async fn the_last_count_stays_while_the_store_is_unreachable_and_this_process_always_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir).await;
        let share = ProcessShare::default();
        let mut p = Presence::new(store.clone(), share.clone(), 4, QUICK);
        // Not registered (its heartbeat failed): still counted itself.
        store.heartbeat_process(GROUP, "other", Duration::from_secs(60)).await.unwrap();
        assert_eq!(p.count().await, 2);
        for i in 0..4 {
            store.heartbeat_process(GROUP, &format!("more{i}"), Duration::from_secs(60)).await.unwrap();
        }
        assert_eq!(p.count().await, 6);
        assert!(p.warned, "beyond 4 processes it warns");
        assert_eq!(share.concurrency(4), 1);
        store.close().await;
        assert_eq!(p.count().await, 6, "store closed: the last count stays");
        assert_eq!(share.processes(), 6);
    }
}
