//! Outlook's throttling per (app, mailbox): a sliding request window and a
//! concurrency limit, each answered with `429 TooManyRequests` and a
//! fractional `Retry-After`. Also records the highest concurrency seen per
//! mailbox for `/_sim/stats`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::error::GraphError;
use super::{lock, wire, Shared};

#[derive(Debug, Default)]
struct Bucket {
    recent: VecDeque<Instant>,
    in_flight: u32,
    max_in_flight: u32,
}

/// Counters per mailbox id (the simulator has one app, so mailbox = key).
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    buckets: HashMap<String, Bucket>,
}

impl Throttle {
    pub fn max_concurrent(&self) -> HashMap<String, u32> {
        self.buckets.iter().map(|(k, b)| (k.clone(), b.max_in_flight)).collect()
    }
    pub fn clear(&mut self) {
        self.buckets.clear();
    }
}

/// Holds one concurrency slot until dropped.
pub(crate) struct Permit {
    shared: Arc<Shared>,
    mailbox: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut t = lock(&self.shared.throttle);
        if let Some(b) = t.buckets.get_mut(&self.mailbox) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

pub(crate) fn acquire(shared: &Arc<Shared>, mailbox: &str) -> Result<Permit, GraphError> {
    let now = Instant::now();
    let cfg = &shared.cfg;
    let mut t = lock(&shared.throttle);
    let b = t.buckets.entry(mailbox.to_string()).or_default();
    while b.recent.front().is_some_and(|&at| now.duration_since(at) >= cfg.throttle_window) {
        b.recent.pop_front();
    }
    if b.recent.len() >= cfg.throttle_requests_per_window as usize {
        let oldest = b.recent.front().copied().unwrap_or(now);
        let wait = cfg.throttle_window.saturating_sub(now.duration_since(oldest)).as_secs_f64().max(0.001);
        return Err(GraphError::throttled(&format!("{wait:.3}")));
    }
    if b.in_flight >= cfg.throttle_max_concurrent {
        return Err(GraphError::throttled(&wire::fractional_seconds(0.5, 3.0)));
    }
    b.recent.push_back(now);
    b.in_flight += 1;
    b.max_in_flight = b.max_in_flight.max(b.in_flight);
    Ok(Permit { shared: shared.clone(), mailbox: mailbox.to_string() })
}
