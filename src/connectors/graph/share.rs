//! This process's share of each mailbox's Graph limits. Outlook allows an
//! app 4 concurrent requests and 10,000 requests per 10 minutes per mailbox
//! (https://learn.microsoft.com/graph/throttling-limits#outlook-service-limits),
//! for the app, not for one process. Every process that does Graph work
//! counts the live ones in the store (`crate::worker::presence`) and sets
//! the number here; each Graph client of the process reads it whenever a
//! request takes its permits, so a change applies at once, without
//! rebuilding a client. It owns only the arithmetic: the counting is the
//! presence loop's, the waiting the client's and the quota's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::quota::MailboxQuota;

/// The number of live processes doing Graph work for this deployment, as
/// last counted (1 until counted, and in a process that counts nothing:
/// tests, `hqsync tenant test`). Cheap to clone; clones share the number.
#[derive(Clone)]
pub struct ProcessShare(Arc<AtomicU32>);

impl Default for ProcessShare {
    fn default() -> Self {
        ProcessShare(Arc::new(AtomicU32::new(1)))
    }
}

impl std::fmt::Debug for ProcessShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProcessShare({})", self.processes())
    }
}

impl ProcessShare {
    /// Live processes as last counted, at least 1.
    pub fn processes(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    /// Sets the count (0 is taken as 1: this process is alive); returns the previous one.
    pub fn set_processes(&self, n: u32) -> u32 {
        self.0.swap(n.max(1), Ordering::Relaxed).max(1)
    }

    /// Concurrent requests per mailbox this process may have in flight.
    pub fn concurrency(&self, limit: u32) -> u32 {
        concurrency_share(limit, self.processes())
    }

    /// Permits of a `limit`-permit semaphore one request takes.
    pub fn weight(&self, limit: u32) -> u32 {
        permits_per_request(limit, self.processes())
    }

    /// This process's part of the request budget per mailbox.
    pub fn budget(&self, quota: MailboxQuota) -> MailboxQuota {
        budget_share(quota, self.processes())
    }
}

/// max(1, floor(limit / processes)): what one of `processes` processes may
/// have in flight per mailbox so that together they stay within `limit`.
/// Beyond `limit` processes each still takes 1, so together they exceed it
/// (a process cannot do Graph work with 0); the presence loop warns then.
pub fn concurrency_share(limit: u32, processes: u32) -> u32 {
    (limit.max(1) / processes.max(1)).max(1)
}

/// Permits one request takes from a semaphore of `limit` permits so that at
/// most [`concurrency_share`] requests fit: ceil(limit / share). Exact for
/// Outlook's 4 (1, 2 or 4 permits for 4, 2 or 1 at a time); for other
/// limits it rounds towards fewer requests, never more.
pub fn permits_per_request(limit: u32, processes: u32) -> u32 {
    let limit = limit.max(1);
    limit.div_ceil(concurrency_share(limit, processes))
}

/// max(1, floor(requests / processes)) per the same window.
pub fn budget_share(quota: MailboxQuota, processes: u32) -> MailboxQuota {
    MailboxQuota { requests: (quota.requests.max(1) / processes.max(1)).max(1), window: quota.window }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn four_per_mailbox_are_divided_among_the_live_processes() {
        let shares: Vec<u32> = (1..=6).map(|n| concurrency_share(4, n)).collect();
        assert_eq!(shares, vec![4, 2, 1, 1, 1, 1]);
        // Together within Outlook's 4 up to 4 processes; beyond, 1 each (said in docs/operations.md).
        for n in 1..=4 {
            assert!(n * concurrency_share(4, n) <= 4, "{n} processes");
        }
        assert_eq!(5 * concurrency_share(4, 5), 5);
        assert_eq!(concurrency_share(4, 0), 4, "0 counted = this process alone");
    }

    #[test]
    fn a_request_takes_as_many_permits_as_leave_room_for_exactly_the_share() {
        for limit in 1..=16u32 {
            for n in 1..=20u32 {
                let w = permits_per_request(limit, n);
                let fit = limit / w;
                assert!(fit >= 1 && fit <= concurrency_share(limit, n), "limit {limit}, {n} processes: {fit} fit");
                if n <= limit {
                    assert!(n * fit <= limit, "limit {limit}: {n} processes together exceed it");
                }
            }
        }
        assert_eq!((1..=4).map(|n| permits_per_request(4, n)).collect::<Vec<_>>(), vec![1, 2, 4, 4]);
        // Exact for Outlook's limit: the semaphore fits exactly the share.
        for n in 1..=4 {
            assert_eq!(4 / permits_per_request(4, n), concurrency_share(4, n));
        }
    }

    #[test]
    fn the_request_budget_is_divided_the_same_way() {
        let q = MailboxQuota::OUTLOOK;
        assert_eq!(budget_share(q, 1), q);
        assert_eq!(budget_share(q, 3), MailboxQuota { requests: 3_333, window: Duration::from_secs(600) });
        let tiny = MailboxQuota { requests: 2, window: Duration::from_secs(1) };
        assert_eq!(budget_share(tiny, 5).requests, 1);
    }

    #[test]
    fn clones_share_the_count_read_at_each_use() {
        let share = ProcessShare::default();
        let client_side = share.clone();
        assert_eq!(client_side.concurrency(4), 4);
        assert_eq!(share.set_processes(3), 1);
        assert_eq!(client_side.concurrency(4), 1);
        assert_eq!(client_side.weight(4), 4);
        assert_eq!(client_side.budget(MailboxQuota::OUTLOOK).requests, 3_333);
        share.set_processes(0);
        assert_eq!(client_side.processes(), 1);
    }
}
