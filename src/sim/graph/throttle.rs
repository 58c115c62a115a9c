//! Outlook's throttling per (app, mailbox): a sliding request window, a
//! concurrency limit and an upload budget (POST/PATCH/PUT body bytes per
//! window), each answered with `429 TooManyRequests` and a fractional
//! `Retry-After`. Also records, per mailbox for `/_sim/stats`, the highest
//! concurrency seen and the most requests that arrived within one window
//! (refused ones included: what a client tried, not what it was granted).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::error::GraphError;
use super::{lock, wire, Shared};

#[derive(Debug, Default)]
struct Bucket {
    recent: VecDeque<Instant>,
    /// Body sizes of recent uploads, for the upload budget.
    uploads: VecDeque<(Instant, u64)>,
    in_flight: u32,
    max_in_flight: u32,
    /// Arrivals within the last window, refused ones included.
    arrivals: VecDeque<Instant>,
    peak_arrivals: u32,
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
    /// The most requests per mailbox that arrived within one window.
    pub fn peak_per_window(&self) -> HashMap<String, u32> {
        self.buckets.iter().map(|(k, b)| (k.clone(), b.peak_arrivals)).collect()
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
    while b.arrivals.front().is_some_and(|&at| now.duration_since(at) >= cfg.throttle_window) {
        b.arrivals.pop_front();
    }
    b.arrivals.push_back(now);
    b.peak_arrivals = b.peak_arrivals.max(b.arrivals.len() as u32);
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

/// Charges a POST/PATCH/PUT body against the mailbox's upload budget; a body
/// that would exceed it is refused (and not charged).
pub(crate) fn charge_upload(shared: &Shared, mailbox: &str, bytes: u64) -> Result<(), GraphError> {
    let now = Instant::now();
    let cfg = &shared.cfg;
    let mut t = lock(&shared.throttle);
    let b = t.buckets.entry(mailbox.to_string()).or_default();
    while b.uploads.front().is_some_and(|&(at, _)| now.duration_since(at) >= cfg.upload_window) {
        b.uploads.pop_front();
    }
    let used: u64 = b.uploads.iter().map(|&(_, n)| n).sum();
    if used.saturating_add(bytes) > cfg.upload_bytes_per_window {
        // Until enough of the window has passed for this body to fit.
        let mut freed = 0u64;
        let mut until = now + cfg.upload_window;
        for &(at, n) in &b.uploads {
            freed += n;
            if used - freed + bytes <= cfg.upload_bytes_per_window {
                until = at + cfg.upload_window;
                break;
            }
        }
        let wait = until.saturating_duration_since(now).as_secs_f64().max(0.001);
        return Err(GraphError::throttled(&format!("{wait:.3}")));
    }
    b.uploads.push_back((now, bytes));
    Ok(())
}
