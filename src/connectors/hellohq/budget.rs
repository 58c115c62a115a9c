//! The per-tenant request budget against helloHQ's limit of 1,000 requests
//! per minute (HELLOHQ.md A5): a token bucket shared by every request of a
//! tenant in this process (`hellohq.requests_per_minute`, default 900). A
//! request beyond it waits for a token instead of drawing a 429.
//!
//! The bucket refills at `per_minute / 60` tokens a second and holds at most
//! a tenth of a minute's worth, so any 60 seconds see at most
//! `per_minute + per_minute / 10` requests (990 at the default): under the
//! limit whichever minute window helloHQ counts in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Default requests per minute per tenant (10 % below helloHQ's 1,000).
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 900;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One tenant's bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RequestBudget {
    per_minute: u32,
    bucket: Arc<Mutex<Bucket>>,
}

fn registry() -> &'static Mutex<HashMap<String, RequestBudget>> {
    static R: OnceLock<Mutex<HashMap<String, RequestBudget>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

impl RequestBudget {
    /// A bucket of its own (tests, the connection test).
    pub fn new(per_minute: u32) -> RequestBudget {
        let per_minute = per_minute.max(1);
        RequestBudget {
            per_minute,
            bucket: Arc::new(Mutex::new(Bucket { tokens: Self::capacity_of(per_minute), at: Instant::now() })),
        }
    }

    /// The bucket of `tenant` in this process: every client of the tenant
    /// draws from the same one. A changed rate replaces it.
    pub fn for_tenant(tenant: &str, per_minute: u32) -> RequestBudget {
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        match r.get(tenant) {
            Some(b) if b.per_minute == per_minute.max(1) => b.clone(),
            _ => {
                let b = RequestBudget::new(per_minute);
                r.insert(tenant.to_string(), b.clone());
                b
            }
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn capacity_of(per_minute: u32) -> f64 {
        (f64::from(per_minute) / 10.0).max(1.0)
    }

    fn rate_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Takes a token now, or says how long until one is free (the token is
    /// then reserved: the caller must wait that long before sending).
    pub fn reserve(&self) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let cap = Self::capacity_of(self.per_minute);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate_per_sec()).min(cap);
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate_per_sec())
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            metrics::counter!("hqsync_hellohq_budget_waits_total").increment(1);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_a_tenth_of_the_minute_waits_for_the_refill() {
        let b = RequestBudget::new(600); // 10 per second, burst 60
        for _ in 0..60 {
            assert_eq!(b.reserve(), Duration::ZERO);
        }
        let wait = b.reserve();
        assert!(wait > Duration::from_millis(50) && wait <= Duration::from_millis(100), "{wait:?}");
        // Reserved tokens queue up: the next one waits a step longer.
        assert!(b.reserve() > wait);
    }

    #[test]
    fn clients_of_one_tenant_share_one_bucket() {
        let a = RequestBudget::for_tenant("budget-test-tenant", 20);
        let b = RequestBudget::for_tenant("budget-test-tenant", 20);
        assert_eq!(a.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert!(a.reserve() > Duration::ZERO, "the burst of 2 is spent by both clients together");
        let other = RequestBudget::for_tenant("budget-other-tenant", 20);
        assert_eq!(other.reserve(), Duration::ZERO);
    }
}
