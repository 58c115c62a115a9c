//! Stateful Microsoft Graph simulator (DESIGN §8, GRAPH.md §7): an axum app
//! that answers the token endpoint and `/v1.0/…` from in-memory state —
//! users, contact folders and contacts (extended properties, delta), events
//! (single instances and recurring series, calendarView and its delta,
//! attendee copies and their accept/decline/tentativelyAccept), To Do lists and tasks (delta, open extensions),
//! subscriptions with the validation handshake, `$batch` and Outlook
//! throttling — and pushes change and lifecycle notifications to subscribers.
//!
//! It owns only its own state and is reached only over HTTP, exactly like
//! graph.microsoft.com; where it differs from real Graph, it is wrong. It must
//! never hold its state lock across an await, and never call back into hqsync
//! other than through the notification URLs a client subscribed.
//!
//! Control routes (no token needed):
//! - `GET /_sim/stats`: requests by method + route template, writes by kind,
//!   notifications/lifecycle sent/failed/dropped, 429s, items and
//!   subscriptions per mailbox, max concurrency seen per mailbox.
//! - `POST /_sim/faults` `{"error_rate","throttle_rate","latency_ms","drop_notification_rate",
//!   "duplicate_notification_rate","delta_replay","delta_empty_pages","notification_resource_style":"path"|"odata",
//!   "notification_type_casing":"pascal"|"camel"}` (`{}` clears; without a style the shape of
//!   `resource`/`@odata.type` is chosen per item from a hash of its id, so both occur and a run repeats).
//! - `POST /_sim/reset`; `POST /_sim/seed` `{"profile":"demo"|"empty"}` or
//!   `{"tenantId"?,"domain"?,"clientId"?,"clientSecret"?,"mailboxes":[{"userPrincipalName","displayName"?,
//!   "inPolicyScope"?,"contacts"?,"contactFolders"?:[{"displayName","contacts"}],"events"?}]}`;
//!   `GET /_sim/seed` (tenant id, client id + secret, roles, mailboxes). The seed also takes `"roles"`.
//! - `POST /_sim/roles` `{"roles":[…]}`: the application permissions tokens issued from now on carry in
//!   their `roles` claim (default: Calendars.ReadWrite, Contacts.ReadWrite, Tasks.ReadWrite.All, User.Read.All).
//! - `POST /_sim/lifecycle` `{"subscriptionId","event":"subscriptionRemoved|missed|reauthorizationRequired"}`.
//! - `POST /_sim/delta/evict` (every delta token → 410), `POST /_sim/clock` `{"advanceMinutes"}` (runs the
//!   expiry sweep at once), `POST /_sim/policy` `{"mailbox","inScope"}` (application access policy).
//! - `POST /_sim/move` `{"mailbox","id","folderId"}`: a contact dragged to another folder in Outlook (by its
//!   immutable or current regular id); its regular id changes, its immutable id stays (the answer names both).
//!   Ids: every contact has an immutable id and a regular id, equal until its first move; a request (and a
//!   subscription's notifications) sees the immutable one only with `Prefer: IdType="ImmutableId"`; both are
//!   accepted as input, a regular id from before a move answers 404.
//! - `POST /_sim/faults` also takes `"ifMatch": "enforce"|"ignore"` (default: `GraphSimConfig::if_match`).
//! - `POST /_sim/todo/move` `{"mailbox","listId","taskId","toListId"}`: a task moved to another list the way
//!   To Do does it (removed from one list, created in the other with a new id; both deltas show it).
//!
//! Lifecycle without being asked: a subscription with a lifecycle URL gets
//! `reauthorizationRequired` once it is within `reauthorization_lead_minutes` of
//! expiry (simulator clock), repeated every `reauthorization_repeat_minutes` until
//! renewed (delivery continues meanwhile), and `subscriptionRemoved` when it expires.
//! Slow notification endpoints and the upload budget follow `GraphSimConfig`.
//!
//! Error answers checked against public sources (2026-11): expiry beyond the
//! maximum → 400 `ExtensionError` "Subscription expiration can only be N minutes in
//! the future." (microsoftgraph/microsoft-graph-docs#2988); To Do task subscription
//! → 400 `ExtensionError` "…Reason: Invalid resource specified in payload]" (seen for
//! delegated `/me/todo/…`, microsoft-graph-docs#14948). Still unconfirmed: the same
//! answers for app-only To Do and for an expiry in the past; the per-mailbox cap's
//! answer (403 `ExtensionError` "…Maximum number of subscriptions has been reached]"
//! is the wording reported for OneDrive, #21403); `ErrorFolderExists` — code and
//! message match Exchange's EWS reference, but whether Graph answers 409 or 400 for a
//! duplicate contact folder name is not documented (the simulator answers 409).
//!
//! Invitee answers (`POST …/events/{id}/accept|decline|tentativelyAccept`, learn.microsoft.com
//! event-accept/-decline/-tentativelyaccept): body `{"comment","sendResponse"}` (+ `proposedNewTime` for
//! decline/tentative), 202 without a body; 400 when `proposedNewTime` comes with `sendResponse:false` or on a
//! meeting without `allowNewTimeProposals` (documented status; the code `ErrorInvalidRequest` is a guess).
//! The organizer answering their own meeting gets 400 `ErrorCalendarIsOrganizerForAccept` / `…ForDecline` /
//! `…ForTentative`: the codes are Exchange's (EWS ResponseCode reference), the 400 and the message are
//! unconfirmed for Graph. A declined copy stays in the attendee's calendar with `responseStatus` `declined`
//! (Outlook clients may remove it; whether Graph's decline does is not documented). Answering one occurrence
//! turns it into an exception on the attendee's side, and on the organizer's side when the answer is sent.

mod auth;
mod batch;
mod contacts;
mod control;
mod delta;
mod error;
mod events;
mod model;
mod notifier;
mod recurrence;
mod router;
mod subscriptions;
mod throttle;
mod todo;
mod tz;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use model::World;

/// Which data the simulator starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedProfile {
    /// One tenant/app and the four mailboxes of the demo agency, with a few contacts.
    #[default]
    Demo,
    /// One tenant/app and no mailboxes (tests seed their own via `POST /_sim/seed`).
    Empty,
}

impl std::str::FromStr for SeedProfile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "demo" => Ok(SeedProfile::Demo),
            "empty" => Ok(SeedProfile::Empty),
            other => Err(format!("unknown seed profile '{other}' (demo|empty)")),
        }
    }
}

/// Simulator settings; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct GraphSimConfig {
    pub seed: SeedProfile,
    /// Requests allowed per (app, mailbox) within `throttle_window` (Outlook: 10,000 / 10 min).
    pub throttle_requests_per_window: u32,
    pub throttle_window: Duration,
    /// Concurrent requests allowed per (app, mailbox) (Outlook: 4).
    pub throttle_max_concurrent: u32,
    /// Maximum subscription lifetime in minutes for event subscriptions.
    pub max_subscription_minutes_events: i64,
    /// Maximum subscription lifetime in minutes for contact subscriptions.
    pub max_subscription_minutes_contacts: i64,
    /// Maximum subscription lifetime in minutes for todoTask subscriptions (Graph: 4,230).
    pub max_subscription_minutes_tasks: i64,
    /// Active subscriptions allowed per mailbox (Outlook: 1000).
    pub max_subscriptions_per_mailbox: usize,
    /// How long the validation handshake may take (Graph: 10 s).
    pub validation_timeout: Duration,
    /// How long a notification POST may take before it counts as failed (Graph: 3 s).
    pub notification_timeout: Duration,
    /// Delivery attempts per notification batch before it is discarded.
    pub notification_max_attempts: u32,
    /// First retry delay; doubles on each attempt (Graph's 4 h retry window compressed).
    pub notification_retry_base: Duration,
    /// How long the notifier waits to gather queued items into one POST.
    pub notification_batch_window: Duration,
    /// How long before expiry (simulator clock) a subscription with a lifecycle URL
    /// starts getting `reauthorizationRequired` (GRAPH.md §4.6: the last hour).
    pub reauthorization_lead_minutes: i64,
    /// Repeat interval of `reauthorizationRequired` inside the lead (Graph: ~15 min).
    pub reauthorization_repeat_minutes: i64,
    /// A notification POST slower than this counts as slow (Graph: 2,900 ms).
    pub slow_notification_threshold: Duration,
    /// Deliveries to one notification URL before the slow ratios apply (Graph: 100).
    pub slow_endpoint_min_deliveries: u32,
    /// Share of slow deliveries that puts a URL into the delayed queue (Graph: 10 %).
    pub slow_endpoint_delay_ratio: f64,
    /// Share of slow deliveries from which a URL's change notifications are dropped (Graph: 15 %).
    pub slow_endpoint_drop_ratio: f64,
    /// How often the per-URL counters reset (Graph: 10 min, wall clock).
    pub slow_endpoint_window: Duration,
    /// Delay of a flagged URL's deliveries, in simulator-clock minutes (Graph: 10).
    pub slow_endpoint_delay_minutes: i64,
    /// POST/PATCH/PUT body bytes allowed per (app, mailbox) within `upload_window` (Outlook: 150 MB / 5 min).
    pub upload_bytes_per_window: u64,
    pub upload_window: Duration,
    /// How long an event POST's `transactionId` makes a retry of the same body return the first event.
    pub transaction_window: Duration,
    /// `If-Match` on contact and event writes: enforced (412 on a stale value) or ignored.
    pub if_match: IfMatch,
}

/// Whether the simulated tenant honours `If-Match` on Outlook item writes.
/// Microsoft documents `If-Match`/412 for some Outlook items in the field,
/// not on the contact and event update pages (GRAPH.md key constraint 6):
/// hqsync probes it per tenant, and tests run under both answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfMatch {
    #[default]
    Enforce,
    Ignore,
}

impl std::str::FromStr for IfMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(IfMatch::Enforce),
            "ignore" => Ok(IfMatch::Ignore),
            other => Err(format!("unknown ifMatch '{other}' (enforce|ignore)")),
        }
    }
}

impl Default for GraphSimConfig {
    fn default() -> Self {
        Self {
            seed: SeedProfile::Demo,
            throttle_requests_per_window: 10_000,
            throttle_window: Duration::from_secs(600),
            throttle_max_concurrent: 4,
            max_subscription_minutes_events: 4230,
            max_subscription_minutes_contacts: 4230,
            max_subscription_minutes_tasks: 4230,
            max_subscriptions_per_mailbox: 1000,
            validation_timeout: Duration::from_secs(10),
            notification_timeout: Duration::from_secs(3),
            notification_max_attempts: 5,
            notification_retry_base: Duration::from_millis(200),
            notification_batch_window: Duration::from_millis(25),
            reauthorization_lead_minutes: 60,
            reauthorization_repeat_minutes: 15,
            slow_notification_threshold: Duration::from_millis(2900),
            slow_endpoint_min_deliveries: 100,
            slow_endpoint_delay_ratio: 0.10,
            slow_endpoint_drop_ratio: 0.15,
            slow_endpoint_window: Duration::from_secs(600),
            slow_endpoint_delay_minutes: 10,
            upload_bytes_per_window: 150 * 1024 * 1024,
            upload_window: Duration::from_secs(300),
            transaction_window: Duration::from_secs(300),
            if_match: IfMatch::Enforce,
        }
    }
}

/// State shared by all handlers. Each mutex guards a small, independent part
/// so that lock scopes stay short and are never held across an await.
pub(crate) struct Shared {
    pub cfg: GraphSimConfig,
    pub base_url: String,
    pub world: Mutex<World>,
    pub stats: Mutex<control::Stats>,
    pub faults: Mutex<control::Faults>,
    pub throttle: Mutex<throttle::Throttle>,
    pub endpoints: Mutex<notifier::Endpoints>,
    pub clock: model::SimClock,
    pub jwt_key: Vec<u8>,
    pub http: reqwest::Client,
    pub notify_tx: mpsc::UnboundedSender<notifier::Outgoing>,
    /// `/_sim/writes` (off until a bench turns it on).
    pub write_log: Mutex<crate::sim::writelog::WriteLog>,
}

impl Shared {
    /// The `If-Match` behaviour in force: `/_sim/faults` `{"ifMatch"}` when set, else the configuration.
    pub(crate) fn if_match(&self) -> IfMatch {
        lock(&self.faults).if_match.as_deref().and_then(|s| s.parse().ok()).unwrap_or(self.cfg.if_match)
    }
}

/// A running simulator.
pub struct GraphSim {
    addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl GraphSim {
    /// Serves on `listener` in a background task.
    pub async fn start(listener: tokio::net::TcpListener, cfg: GraphSimConfig) -> std::io::Result<GraphSim> {
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        // Graph calls notification URLs directly: no redirects, no proxy from the environment.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let jwt_key: Vec<u8> = {
            use rand::RngCore;
            let mut k = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            k
        };
        let world = World::seeded(cfg.seed);
        let shared = Arc::new(Shared {
            cfg,
            base_url,
            world: Mutex::new(world),
            stats: Mutex::new(control::Stats::default()),
            faults: Mutex::new(control::Faults::default()),
            throttle: Mutex::new(throttle::Throttle::default()),
            endpoints: Mutex::new(notifier::Endpoints::default()),
            clock: model::SimClock::default(),
            jwt_key,
            http,
            notify_tx,
            write_log: Mutex::new(crate::sim::writelog::WriteLog::default()),
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(notifier::run(shared.clone(), notify_rx, cancel.clone(), tracker.clone()));
        tracker.spawn(subscriptions::expiry_sweeper(shared.clone(), cancel.clone()));
        let app = router::app(shared);
        let shutdown = cancel.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "graph simulator stopped");
            }
        });
        Ok(GraphSim { addr, cancel, tracker })
    }

    /// `http://127.0.0.1:PORT`; Graph's root is this + `/v1.0`, login is this + `/{tenant}/oauth2/v2.0/token`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the background tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Locks a std mutex, recovering from poisoning: a panicking handler must not
/// take the whole simulator down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
