//! The client-side request budget per (app, mailbox): Outlook allows an app
//! a fixed number of requests to one mailbox per sliding window (10,000 per
//! 10 minutes), and this keeps the process under its share of it (the
//! budget divided by the live processes, [`super::share`]), so a request
//! waits for a slot here instead of drawing a `429` there. It owns only the
//! counting: it never sends, never sleeps longer than the window, and never
//! learns the budget from answers (other apps share the real quota, and
//! their `429`s are the retry policy's to honour).
//!
//! A slot is taken before a request goes out and counted from the moment
//! its answer has come back, not from when it was sent: the service stamps
//! a request somewhere between the two, so counting from the answer can
//! never place two requests closer together than the service saw them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A request budget: at most `requests` per `window` and mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxQuota {
    pub requests: u32,
    pub window: Duration,
}

impl MailboxQuota {
    /// Outlook's documented limit: 10,000 requests per 10 minutes per app and mailbox.
    pub const OUTLOOK: MailboxQuota = MailboxQuota { requests: 10_000, window: Duration::from_secs(600) };
}

impl Default for MailboxQuota {
    fn default() -> Self {
        MailboxQuota::OUTLOOK
    }
}

#[derive(Debug, Default)]
struct State {
    /// When each answered request came back, oldest first (one entry per request).
    answered: VecDeque<Instant>,
    /// Slots taken by requests not answered yet.
    in_flight: u32,
}

/// The requests one app has sent to one mailbox from this process.
#[derive(Debug, Default)]
pub(crate) struct MailboxWindow {
    state: parking_lot::Mutex<State>,
    /// Woken when a request is answered (a waiter with nothing to time on recomputes).
    answered: Notify,
}

/// Slots of a [`MailboxWindow`] held by one request; dropping it counts them as answered now.
#[derive(Debug)]
pub(crate) struct Slots {
    window: Arc<MailboxWindow>,
    n: u32,
}

impl Drop for Slots {
    fn drop(&mut self) {
        let mut s = self.window.state.lock();
        // Read under the lock, so the answers stay in order.
        let now = Instant::now();
        s.in_flight = s.in_flight.saturating_sub(self.n);
        s.answered.extend(std::iter::repeat_n(now, self.n as usize));
        drop(s);
        self.window.answered.notify_waiters();
    }
}

impl MailboxWindow {
    /// Waits until `n` more requests fit into `quota`, then takes their
    /// slots. More than the whole budget at once (a `$batch` larger than
    /// the quota) goes out when nothing else is counted. `quota` is read
    /// again at every wake-up (this process's share of it may change).
    pub(crate) async fn take(self: &Arc<Self>, n: u32, quota: impl Fn() -> MailboxQuota) -> Slots {
        loop {
            let quota = quota();
            let budget = quota.requests.max(1) as usize;
            let notified = self.answered.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so an answer in between is not missed.
            notified.as_mut().enable();
            let wake = {
                let now = Instant::now();
                let mut s = self.state.lock();
                while s.answered.front().is_some_and(|&at| at + quota.window <= now) {
                    s.answered.pop_front();
                }
                let used = s.answered.len() + s.in_flight as usize;
                if used + n as usize <= budget || used == 0 {
                    s.in_flight += n;
                    return Slots { window: self.clone(), n };
                }
                // The oldest answers leave the window first: wake when enough
                // of them have for `n` slots (when too few are answered yet,
                // wake at the next answer instead).
                let need = used + n as usize - budget;
                s.answered.get(need - 1).map(|&at| at + quota.window)
            };
            match wake {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = &mut notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Requests counted now (answered within the window, plus in flight).
    #[cfg(test)]
    fn used(&self, quota: MailboxQuota) -> usize {
        let now = Instant::now();
        let s = self.state.lock();
        s.answered.iter().filter(|&&at| at + quota.window > now).count() + s.in_flight as usize
    }
}

/// Key of a window: the Graph base (one service), the app and the mailbox.
type Key = (String, String, String);

/// Every window of this process. The quota belongs to the app and the
/// mailbox, not to one client: the worker's and the scheduler's clients of
/// a tenant, and a client rebuilt after the tenant changed, share it.
static WINDOWS: LazyLock<parking_lot::Mutex<HashMap<Key, Arc<MailboxWindow>>>> = LazyLock::new(Default::default);

/// The window of `mailbox` for app `client_id` at `graph_base`.
pub(crate) fn window(graph_base: &str, client_id: &str, mailbox: &str) -> Arc<MailboxWindow> {
    let key = (graph_base.to_ascii_lowercase(), client_id.to_string(), mailbox.to_lowercase());
    WINDOWS.lock().entry(key).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    const Q: MailboxQuota = MailboxQuota { requests: 3, window: Duration::from_millis(40) };

    #[tokio::test]
    async fn a_request_beyond_the_budget_waits_until_the_oldest_answer_leaves_the_window() {
        let w = Arc::new(MailboxWindow::default());
        let held: Vec<Slots> = vec![w.take(1, || Q).await, w.take(1, || Q).await, w.take(1, || Q).await];
        assert_eq!(w.used(Q), 3);
        // All three in flight: the fourth has nothing to time on and waits.
        assert!(w.take(1, || Q).now_or_never().is_none());
        let answered_at = Instant::now();
        drop(held);
        // Answered, but still inside the window: counted.
        assert_eq!(w.used(Q), 3);
        let fourth = w.take(1, || Q).await;
        assert!(Instant::now() >= answered_at + Q.window, "went out before the window had passed");
        drop(fourth);
    }

    #[tokio::test]
    async fn slots_for_a_batch_are_taken_together() {
        let w = Arc::new(MailboxWindow::default());
        let one = w.take(1, || Q).await;
        assert!(w.take(3, || Q).now_or_never().is_none(), "3 more do not fit beside 1");
        let two = w.take(2, || Q).now_or_never().expect("2 more fit beside 1");
        assert_eq!(w.used(Q), 3);
        drop((one, two));
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_goes_out_alone() {
        let w = Arc::new(MailboxWindow::default());
        let big = w.take(5, || Q).now_or_never().expect("nothing else is counted");
        assert!(w.take(1, || Q).now_or_never().is_none());
        drop(big);
    }

    #[test]
    fn windows_are_per_service_app_and_mailbox() {
        let a = window("http://sim/v1.0", "app", "Anna@X.de");
        assert!(Arc::ptr_eq(&a, &window("HTTP://SIM/v1.0", "app", "anna@x.de")));
        assert!(!Arc::ptr_eq(&a, &window("http://sim/v1.0", "other-app", "anna@x.de")));
        assert!(!Arc::ptr_eq(&a, &window("http://sim/v1.0", "app", "bob@x.de")));
    }
}
