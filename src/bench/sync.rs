//! `hqsync bench e2e | requests | resources | fanout | initial-sync`: the
//! sync path measured on the [`Rig`] (both simulators and every role in one
//! process, embedded defaults). Latencies come from the journal: the time
//! an edit was acknowledged by a simulator, and the `at` of the journal
//! entry the engine writes right after the counterpart was written.
//! Request counts come from the simulators' `/_sim/stats`, minus the
//! requests the bench itself made as the "user".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::{json, Value};

use super::rig::{Counters, Rig, RigOptions, SERVE_THREADS, WORKER_THREADS};
use crate::connectors::graph::client::seg;
use crate::model::{Kind, MailboxId};
use crate::store::JournalEntry;

const SETTLE: Duration = Duration::from_millis(700);
/// How long a bench waits for its setup (the initial sync) before giving up: Outlook allows
/// 10,000 requests per app and mailbox in 10 minutes, so 10,000 contacts take over 10 minutes.
const SETUP_LIMIT: Duration = Duration::from_secs(1800);

// ---- e2e -------------------------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Contact edits per second (alternately in Exchange and in helloHQ).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Edits in total.
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
    /// An edit whose counterpart writes have not all landed this long after
    /// it is reported missing (and fails the run).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

/// Latency figures of one direction.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default)]
pub struct E2eReport {
    /// Edits made.
    pub edits: usize,
    /// Exchange edit landed → helloHQ and every other mailbox's copy written.
    pub to_hellohq: Latency,
    /// helloHQ edit landed → every mailbox's copy written.
    pub to_exchange: Latency,
    /// The simulators' own write round trip (the bench's edits).
    pub baseline: Latency,
    /// Counterpart writes expected in total (one per helloHQ record and per mailbox copy).
    pub counterparts: usize,
    /// Edits of which at least one counterpart write did not land within the timeout.
    pub missing: usize,
    /// What each missing edit lacked, for the report.
    pub missing_detail: Vec<String>,
    /// Time the load waited for a record whose previous edit was still in
    /// flight (the rate asked for was not held while it waited).
    pub held_back_s: f64,
}

impl E2eReport {
    /// Edits whose counterparts all landed (one latency sample each).
    pub fn samples(&self) -> usize {
        self.to_hellohq.samples + self.to_exchange.samples
    }
}

pub async fn e2e(args: E2eArgs) -> anyhow::Result<E2eReport> {
    anyhow::ensure!(args.rate > 0.0 && args.changes > 0, "--rate and --changes must be above 0");
    println!(
        "hqsync bench e2e: {} contact edits at {}/s, half in Exchange, half in helloHQ; each edit waits for ALL its counterpart writes (helloHQ and every mailbox holding a copy), timeout {} ms",
        args.changes, args.rate, args.timeout_ms
    );
    let rig = start_settled(RigOptions::demo()).await?;
    let edits = Editor::prepare(&rig).await?;
    let copies = edits.copies(&rig).await?;
    let window_ms = RigOptions::demo().graph.notification_batch_window.as_secs_f64() * 1000.0;
    let timeout = chrono::Duration::milliseconds(args.timeout_ms as i64);
    rig.record_writes(true).await?;
    let mut log = LogReader::default();
    let (done, held_back) = gated_load(&rig, &edits, &copies, &mut log, args.rate, args.changes, timeout).await?;
    // Until every edit is complete or the last one's timeout has passed.
    let deadline = done.iter().map(|d| d.at).max().unwrap_or_else(Utc::now) + timeout;
    let mut last_report = Instant::now();
    let report = loop {
        log.refresh(&rig).await?;
        let report = e2e_figures(&done, &copies, &log.first, window_ms, timeout);
        if report.missing == 0 || Utc::now() > deadline {
            break report;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("  edits complete: {}/{}", report.samples(), done.len());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = E2eReport { held_back_s: held_back.as_secs_f64(), ..report };
    rig.stop().await;
    println!(
        "baseline  simulator write round trip (PATCH/PUT):  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} writes)",
        report.baseline.p50_ms, report.baseline.p99_ms, report.baseline.samples
    );
    for (label, l) in [
        ("Exchange edit → all counterparts", &report.to_hellohq),
        ("helloHQ edit → all mailboxes", &report.to_exchange),
    ] {
        println!(
            "e2e       {label:<34} p50 {:>7.2} ms  p99 {:>7.2} ms  ({} edits; target p99 < 250; p50 = {:.1}× a simulator write)",
            l.p50_ms,
            l.p99_ms,
            l.samples,
            l.p50_ms / report.baseline.p50_ms
        );
    }
    println!(
        "e2e       {} edits, {} counterpart writes expected; edits with a counterpart missing after {} ms: {}",
        report.edits, report.counterparts, args.timeout_ms, report.missing
    );
    println!(
        "load      a record is edited again only once its previous edit is complete (or timed out): the load waited {:.1} s in all for a free record ({} records)",
        report.held_back_s,
        copies.len()
    );
    for m in report.missing_detail.iter().take(20) {
        println!("  missing  {m}");
    }
    Ok(report)
}

/// Where a counterpart write lands: helloHQ's record, or one mailbox's copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Target {
    Hellohq(String),
    Mailbox(String),
}

/// One item write from a simulator's `/_sim/writes`: where, when, and the
/// bench's tag it carried (a contact's job title / a contact person's position).
#[derive(Debug, Clone)]
pub(crate) struct Landed {
    target: Target,
    at: DateTime<Utc>,
    tag: String,
}

/// Both simulators' write logs as [`Landed`] contact writes.
pub(crate) fn landed(graph: &[Value], hellohq: &[Value]) -> Vec<Landed> {
    let at = |e: &Value| e["at"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| t.to_utc());
    let g = graph.iter().filter(|e| e["kind"] == "contact").filter_map(|e| {
        Some(Landed {
            target: Target::Mailbox(e["mailbox"].as_str()?.to_lowercase()),
            at: at(e)?,
            tag: e["item"]["jobTitle"].as_str()?.to_string(),
        })
    });
    let h = hellohq.iter().filter(|e| e["kind"] == "contactPerson").filter_map(|e| {
        Some(Landed {
            target: Target::Hellohq(e["id"].as_str()?.to_string()),
            at: at(e)?,
            tag: e["item"]["position"].as_str()?.to_string(),
        })
    });
    g.chain(h).collect()
}

/// Matches each edit with its own counterpart writes by its tag (a value
/// no other edit set, so a late write is never credited to another edit):
/// the edit's own write in its simulator is the start, the last of the
/// expected counterpart writes the end. `copies` holds, per helloHQ id, the
/// mailboxes that hold a copy. The Graph simulator's batching window is
/// taken off Exchange edits (it is the simulator's own delivery delay).
/// When each tag first landed where (the first write of a value is the one that counts).
pub(crate) type FirstLandings = BTreeMap<(String, Target), DateTime<Utc>>;

/// Reads both simulators' write logs as they grow.
#[derive(Default)]
pub(crate) struct LogReader {
    after: [u64; 2],
    first: FirstLandings,
}

impl LogReader {
    async fn refresh(&mut self, rig: &Rig) -> anyhow::Result<()> {
        add_landings(&mut self.first, rig.write_log(&mut self.after).await?);
        Ok(())
    }
}

fn add_landings(first: &mut FirstLandings, log: Vec<Landed>) {
    for l in log {
        first.entry((l.tag, l.target)).and_modify(|t| *t = (*t).min(l.at)).or_insert(l.at);
    }
}

/// What became of one edit: its own landing, the last counterpart landed
/// so far, the counterparts expected and those still lacking (a
/// counterpart later than `timeout` after the edit counts as lacking).
struct Outcome {
    start: DateTime<Utc>,
    last: DateTime<Utc>,
    expected: usize,
    lacking: Vec<Target>,
}

fn outcome(
    d: &Done,
    copies: &BTreeMap<String, Vec<String>>,
    first: &FirstLandings,
    timeout: chrono::Duration,
) -> Outcome {
    let (own, hq_id) = match &d.edit {
        Edit::Exchange { mailbox, hq_id, .. } => (Target::Mailbox(mailbox.to_lowercase()), hq_id),
        Edit::Hellohq { hq_id, .. } => (Target::Hellohq(hq_id.clone()), hq_id),
    };
    let mut expected: Vec<Target> = copies
        .get(hq_id)
        .into_iter()
        .flatten()
        .map(|m| Target::Mailbox(m.to_lowercase()))
        .chain(std::iter::once(Target::Hellohq(hq_id.clone())))
        .filter(|t| *t != own)
        .collect();
    expected.sort();
    expected.dedup();
    // The edit's own landing in its simulator; the acknowledgement if the log lacks it.
    let start = first.get(&(d.tag.clone(), own)).copied().unwrap_or(d.at);
    let mut last = start;
    let mut lacking = Vec::new();
    for t in &expected {
        match first.get(&(d.tag.clone(), t.clone())) {
            Some(&at) if at - start <= timeout => last = last.max(at),
            _ => lacking.push(t.clone()),
        }
    }
    Outcome { start, last, expected: expected.len(), lacking }
}

fn e2e_figures(
    done: &[Done],
    copies: &BTreeMap<String, Vec<String>>,
    first: &FirstLandings,
    graph_window_ms: f64,
    timeout: chrono::Duration,
) -> E2eReport {
    let (mut to_hq, mut to_ex, mut missing_detail) = (Vec::new(), Vec::new(), Vec::new());
    let mut counterparts = 0;
    for d in done {
        let Outcome { start, last, expected, lacking } = outcome(d, copies, first, timeout);
        counterparts += expected;
        if !lacking.is_empty() {
            missing_detail.push(format!("{:?} ({}): no write of it to {lacking:?}", d.edit.short(), d.tag));
            continue;
        }
        let ms = ms_between(start, last);
        match &d.edit {
            Edit::Exchange { .. } => to_hq.push(ms - graph_window_ms),
            Edit::Hellohq { .. } => to_ex.push(ms),
        }
    }
    E2eReport {
        edits: done.len(),
        to_hellohq: latency(to_hq),
        to_exchange: latency(to_ex),
        baseline: latency(done.iter().map(|d| d.round_trip_ms).collect()),
        counterparts,
        missing: missing_detail.len(),
        missing_detail,
        held_back_s: 0.0,
    }
}

fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 - 1.0) * p).round() as usize],
    };
    Latency { samples: v.len(), p50_ms: pct(0.5), p99_ms: pct(0.99) }
}

/// `changes` edits at `rate` per second, alternately in Exchange and in
/// helloHQ, each on a record whose previous edit is complete (all its
/// counterparts landed) or timed out, so that no edit is superseded by the
/// next one of its record before its counterparts could land. Returns the
/// edits and the time spent waiting for a free record.
async fn gated_load(
    rig: &Rig,
    ed: &Editor,
    copies: &BTreeMap<String, Vec<String>>,
    log: &mut LogReader,
    rate: f64,
    changes: usize,
    timeout: chrono::Duration,
) -> anyhow::Result<(Vec<Done>, Duration)> {
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut out: Vec<Done> = Vec::with_capacity(changes);
    // Per helloHQ id, the index in `out` of its latest edit.
    let mut latest: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = [0usize; 2];
    let mut held_back = Duration::ZERO;
    let mut last_report = Instant::now();
    for i in 0..changes {
        tokio::time::sleep_until(started + period * i as u32).await;
        let side = i % 2;
        let list = if side == 0 { &ed.exchange } else { &ed.hellohq };
        let waited = Instant::now();
        let edit = loop {
            let free = (0..list.len()).map(|k| (next[side] + k) % list.len()).find(|&k| {
                latest.get(list[k].hq_id()).is_none_or(|&j| {
                    let d = &out[j];
                    Utc::now() - d.at > timeout || outcome(d, copies, &log.first, timeout).lacking.is_empty()
                })
            });
            if let Some(k) = free {
                next[side] = k + 1;
                break &list[k];
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            log.refresh(rig).await?;
        };
        held_back += waited.elapsed();
        latest.insert(edit.hq_id().to_string(), out.len());
        out.push(make_edit(rig, edit).await?);
        log.refresh(rig).await?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("  edits: {}/{changes}", i + 1);
            last_report = Instant::now();
        }
    }
    Ok((out, held_back))
}

/// One edit the bench can make as a user.
#[derive(Debug, Clone)]
enum Edit {
    Exchange { mailbox: String, graph_id: String, hq_id: String },
    Hellohq { hq_id: String, body: Value },
}

impl Edit {
    /// Whether `e` records this edit's counterpart write.
    fn matches(&self, e: &JournalEntry) -> bool {
        let side = e.detail["side"].as_str();
        match self {
            Edit::Exchange { mailbox, graph_id, .. } => {
                side == Some("hellohq")
                    && e.graph_id.as_deref() == Some(graph_id)
                    && e.mailbox.as_ref().map(MailboxId::as_str) == Some(mailbox.as_str())
            }
            Edit::Hellohq { hq_id, .. } => side == Some("exchange") && e.hq_id.as_deref() == Some(hq_id),
        }
    }

    fn hq_id(&self) -> &str {
        match self {
            Edit::Exchange { hq_id, .. } | Edit::Hellohq { hq_id, .. } => hq_id,
        }
    }

    /// The edit without the helloHQ body, for a report line.
    fn short(&self) -> String {
        match self {
            Edit::Exchange { mailbox, graph_id, hq_id } => {
                format!("Exchange edit of {graph_id} in {mailbox} (helloHQ {hq_id})")
            }
            Edit::Hellohq { hq_id, .. } => format!("helloHQ edit of {hq_id}"),
        }
    }
}

/// An edit made, when the simulator acknowledged it, and how long that took.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    edit: Edit,
    /// The value the edit set (a contact's job title / position), no other edit's.
    tag: String,
    at: DateTime<Utc>,
    round_trip_ms: f64,
}

/// Contacts of the first mailbox, split: even ones edited in Exchange, odd
/// ones in helloHQ, so two edits never race on one record.
pub(crate) struct Editor {
    exchange: Vec<Edit>,
    hellohq: Vec<Edit>,
}

impl Editor {
    pub(crate) async fn prepare(rig: &Rig) -> anyhow::Result<Editor> {
        let mailbox = rig.facts.mailboxes.first().context("the Graph simulator has no mailbox")?.clone();
        let links = rig.store().list_links(&rig.tenant, &MailboxId::parse(mailbox.as_str())?, Kind::Contact).await?;
        let linked: Vec<_> = links.into_iter().filter(|l| l.hq_id.is_some() && l.graph_id.is_some()).collect();
        anyhow::ensure!(linked.len() >= 2, "{mailbox} has {} linked contacts; 2 are needed", linked.len());
        let mut ed = Editor { exchange: Vec::new(), hellohq: Vec::new() };
        for (i, l) in linked.into_iter().enumerate() {
            let (Some(hq_id), Some(graph_id)) = (l.hq_id, l.graph_id) else { continue };
            if i % 2 == 0 {
                ed.exchange.push(Edit::Exchange { mailbox: mailbox.clone(), graph_id, hq_id });
            } else {
                let body = put_body(
                    &rig.hq_request(reqwest::Method::GET, &format!("/v2/ContactPersons/{hq_id}"), None).await?,
                );
                ed.hellohq.push(Edit::Hellohq { hq_id, body });
            }
        }
        Ok(ed)
    }

    /// Per helloHQ id of the records it edits, the mailboxes holding a linked copy.
    async fn copies(&self, rig: &Rig) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let mut out = BTreeMap::new();
        for e in self.exchange.iter().chain(&self.hellohq) {
            let hq_id = match e {
                Edit::Exchange { hq_id, .. } | Edit::Hellohq { hq_id, .. } => hq_id,
            };
            let links = rig.store().links_of_hq(&rig.tenant, Kind::Contact, hq_id).await?;
            let mailboxes = links.into_iter().filter(|l| l.graph_id.is_some()).map(|l| l.mailbox.as_str().to_string());
            out.insert(hq_id.clone(), mailboxes.collect());
        }
        Ok(out)
    }

    fn nth(&self, i: usize) -> &Edit {
        let list = if i % 2 == 0 { &self.exchange } else { &self.hellohq };
        &list[(i / 2) % list.len()]
    }
}

/// A helloHQ v2 PUT body from a GET answer: read-only fields removed (as `hqsync demo` does).
fn put_body(got: &Value) -> Value {
    let mut body = got.as_object().cloned().unwrap_or_default();
    for k in ["id", "companyId", "defaultAddressId", "eMail", "createdBy", "createdOn", "updatedBy", "updatedOn"] {
        body.remove(k);
    }
    if let Some(Value::Object(a)) = body.get_mut("defaultAddress") {
        for k in ["id", "createdBy", "createdOn", "updatedBy", "updatedOn"] {
            a.remove(k);
        }
    }
    Value::Object(body)
}

/// Numbers the edits of a process, so no two set the same value.
static EDITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A value this process's edits start with, so that no edit sets a value
/// the data already held (or that another run set).
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..6].to_string())
}

/// Makes `edit` with a job title / position no earlier edit used.
async fn make_edit(rig: &Rig, edit: &Edit) -> anyhow::Result<Done> {
    let title = format!("Bench {}-{}", run_tag(), EDITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let t = Instant::now();
    match edit {
        Edit::Exchange { mailbox, graph_id, .. } => {
            rig.graph
                .patch(
                    &format!("/users/{}/contacts/{}", seg(mailbox), seg(graph_id)),
                    &json!({"jobTitle": title}),
                    None,
                )
                .await?;
        }
        Edit::Hellohq { hq_id, body } => {
            let mut b = body.clone();
            b["position"] = json!(title);
            rig.hq_request(reqwest::Method::PUT, &format!("/v2/ContactPersons/{hq_id}"), Some(&b)).await?;
        }
    }
    Ok(Done { edit: edit.clone(), tag: title, at: Utc::now(), round_trip_ms: t.elapsed().as_secs_f64() * 1000.0 })
}

/// `changes` edits at `rate` per second, each started on its own schedule
/// (a slow one does not delay the next), with progress.
pub(crate) async fn steady_load(rig: &Rig, ed: &Editor, rate: f64, changes: usize) -> anyhow::Result<Vec<Done>> {
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut out = Vec::with_capacity(changes);
    let mut last_report = Instant::now();
    for i in 0..changes {
        tokio::time::sleep_until(started + period * i as u32).await;
        out.push(make_edit(rig, ed.nth(i)).await?);
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("  edits: {}/{changes}", i + 1);
            last_report = Instant::now();
        }
    }
    Ok(out)
}

pub(crate) async fn start_settled(opts: RigOptions) -> anyhow::Result<Rig> {
    let t = Instant::now();
    eprintln!("  starting both simulators and hqsync (serve, worker, scheduler) …");
    let rig = Rig::start(opts).await?;
    rig.wait_idle(Duration::from_millis(1500), SETUP_LIMIT).await.context("initial sync")?;
    eprintln!("  initial sync done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(rig)
}

// ---- requests --------------------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct RequestsArgs {
    /// Edits per direction and kind.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
}

/// Requests caused by the edits of one kind and direction, each edit
/// measured alone (hqsync idle before it, settled after it); the bench's
/// own edit requests are not counted.
#[derive(Debug, Clone, Default)]
pub struct RequestFigures {
    pub label: String,
    /// `true`: edits made in Exchange (Outlook / To Do), mirrored to helloHQ.
    pub from_exchange: bool,
    pub edits: usize,
    /// hqsync's requests.
    pub graph_requests: u64,
    pub hq_requests: u64,
    /// hqsync's item writes to each side (Graph subscription upkeep excluded).
    pub graph_writes: u64,
    pub hq_writes: u64,
    /// Writes that mirror an edit: to the other side, and to the other
    /// mailboxes' copies of a contact edited in one mailbox.
    pub mirrored_writes: u64,
    /// Writes back to the side (and copy) the edit was made on.
    pub echo_writes: u64,
    /// Graph writes to the other mailboxes' copies of a contact edited in one mailbox.
    pub fanout_writes: u64,
    /// Edits measured again because a periodic pass ran in their window.
    pub redone: usize,
    /// Graph and helloHQ requests by route (hqsync's), for the explanation.
    pub graph_routes: Vec<(String, u64)>,
    pub hq_routes: Vec<(String, u64)>,
    /// Journal entries the edits caused, by `action side`.
    pub journal: Vec<(String, u64)>,
}

impl RequestFigures {
    pub fn graph_per_edit(&self) -> f64 {
        self.graph_requests as f64 / self.edits.max(1) as f64
    }
    pub fn graph_per_graph_write(&self) -> f64 {
        self.graph_requests as f64 / self.graph_writes.max(1) as f64
    }
    pub fn hq_per_edit(&self) -> f64 {
        self.hq_requests as f64 / self.edits.max(1) as f64
    }
    pub fn hq_per_hq_write(&self) -> f64 {
        self.hq_requests as f64 / self.hq_writes.max(1) as f64
    }
}

/// One edit a user makes: a Graph PATCH or a helloHQ PUT whose body gets a
/// value no earlier edit set.
#[derive(Clone)]
enum UserEdit {
    Graph { path: String, body: fn(&str, usize) -> Value },
    Hq { path: String, body: Value, field: &'static str },
}

impl UserEdit {
    async fn make(&self, rig: &Rig) -> anyhow::Result<()> {
        let n = EDITS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("Bench {}-{n}", run_tag());
        match self {
            UserEdit::Graph { path, body } => {
                rig.graph.patch(path, &body(&tag, n), None).await?;
            }
            UserEdit::Hq { path, body, field } => {
                let mut b = body.clone();
                b[*field] = json!(tag);
                rig.hq_request(reqwest::Method::PUT, path, Some(&b)).await?;
            }
        }
        Ok(())
    }
}

/// Names of the scheduler's periodic-pass cursors (one per pass; a pass
/// published moves its cursor).
fn pass_names(rig: &Rig) -> anyhow::Result<Vec<String>> {
    let mut names = vec!["pass/hellohq".to_string()];
    for m in &rig.facts.mailboxes {
        let m = MailboxId::parse(m.as_str())?;
        for k in [Kind::Contact, Kind::Appointment, Kind::Task] {
            names.push(format!("pass/{m}/{}", k.as_str()));
        }
    }
    Ok(names)
}

/// Tracks the periodic passes the scheduler publishes while the bench runs.
struct Passes {
    names: Vec<String>,
    last: Vec<Option<String>>,
    published: u64,
}

impl Passes {
    async fn new(rig: &Rig) -> anyhow::Result<Passes> {
        let names = pass_names(rig)?;
        let mut p = Passes { last: vec![None; names.len()], names, published: 0 };
        p.last = p.read(rig).await?;
        Ok(p)
    }

    async fn read(&self, rig: &Rig) -> anyhow::Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(self.names.len());
        for n in &self.names {
            out.push(rig.store().get_cursor(&rig.tenant, crate::scheduler::CURSOR_SCOPE, n).await?);
        }
        Ok(out)
    }

    /// Passes published since the last call.
    async fn since_last(&mut self, rig: &Rig) -> anyhow::Result<u64> {
        let now = self.read(rig).await?;
        let n = now.iter().zip(&self.last).filter(|(a, b)| a != b).count() as u64;
        self.last = now;
        self.published += n;
        Ok(n)
    }
}

fn add_counters(into: &mut Counters, d: &Counters) {
    let add = |a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
        for (k, v) in b {
            *a.entry(k.clone()).or_default() += v;
        }
    };
    add(&mut into.graph, &d.graph);
    add(&mut into.graph_writes, &d.graph_writes);
    add(&mut into.hq, &d.hq);
    add(&mut into.hq_writes, &d.hq_writes);
    into.graph_throttled += d.graph_throttled;
}

/// Takes `n` off a counter map (the bench's own requests), largest routes first.
fn take_off(m: &mut BTreeMap<String, u64>, route_part: &str, n: u64) {
    let mut left = n;
    for (_, v) in m.iter_mut().filter(|(k, _)| k.contains(route_part)) {
        let take = left.min(*v);
        *v -= take;
        left -= take;
    }
}

const QUIET: Duration = Duration::from_millis(300);

/// Makes `edits` one at a time — each after hqsync settled (queue empty,
/// neither simulator asked for `QUIET`), which also spaces them by more
/// than the notification delay — and counts the requests between an edit
/// and hqsync settling again. A window in which a periodic pass was
/// published is not counted (its requests go to `periodic`) and the edit
/// is made again, up to three times.
async fn measure_row(
    rig: &Rig,
    label: &str,
    from_exchange: bool,
    edits: &[UserEdit],
    passes: &mut Passes,
    periodic: &mut Counters,
) -> anyhow::Result<(RequestFigures, Counters)> {
    eprintln!("  {label}: {} edits", edits.len());
    let mut sum = Counters::default();
    let mut journal = BTreeMap::<String, u64>::new();
    let mut redone = 0;
    for (i, e) in edits.iter().enumerate() {
        let mut tries = 0;
        loop {
            rig.wait_idle(QUIET, SETUP_LIMIT).await?;
            passes.since_last(rig).await?;
            let before = rig.counters().await?;
            let head = rig.journal_head().await?;
            e.make(rig).await?;
            rig.wait_idle(QUIET, SETUP_LIMIT).await?;
            let mut d = rig.counters().await?.since(&before);
            // The bench's own edit.
            match e {
                UserEdit::Graph { .. } => {
                    take_off(&mut d.graph, "PATCH", 1);
                    take_off(&mut d.graph_writes, "", 1);
                }
                UserEdit::Hq { .. } => {
                    take_off(&mut d.hq, "PUT", 1);
                    take_off(&mut d.hq_writes, "", 1);
                }
            }
            if passes.since_last(rig).await? > 0 && tries < 3 {
                add_counters(periodic, &d);
                redone += 1;
                tries += 1;
                eprintln!("  {label}: a periodic pass ran during edit {}; made again", i + 1);
                continue;
            }
            add_counters(&mut sum, &d);
            for j in rig.journal_after(head).await? {
                *journal.entry(format!("{} {}", j.action, j.detail["side"].as_str().unwrap_or("-"))).or_default() += 1;
            }
            break;
        }
    }
    let mut graph_routes: Vec<(String, u64)> =
        sum.graph.iter().filter(|r| *r.1 > 0).map(|(k, v)| (k.clone(), *v)).collect();
    graph_routes.sort_by_key(|r| std::cmp::Reverse(r.1));
    let mut hq_routes: Vec<(String, u64)> =
        sum.hq.iter().filter(|r| *r.1 > 0 && !r.0.contains("/_sim/")).map(|(k, v)| (k.clone(), *v)).collect();
    hq_routes.sort_by_key(|r| std::cmp::Reverse(r.1));
    let fig = RequestFigures {
        hq_routes,
        label: label.to_string(),
        from_exchange,
        edits: edits.len(),
        graph_requests: sum.graph_total(),
        hq_requests: sum.hq_total(),
        graph_writes: sum.graph_item_writes(),
        hq_writes: sum.hq_item_writes(),
        redone,
        graph_routes,
        journal: journal.into_iter().collect(),
        ..Default::default()
    };
    Ok((fig, sum))
}

pub async fn requests(args: RequestsArgs) -> anyhow::Result<Vec<RequestFigures>> {
    anyhow::ensure!(args.changes > 0, "--changes must be at least 1");
    println!(
        "hqsync bench requests: {} edits per kind and direction, demo agency, periodic passes at production defaults (helloHQ poll 60 s, reconcile and To Do poll 900 s), counted apart",
        args.changes
    );
    let rig = start_settled(RigOptions { production_periodic: true, ..RigOptions::demo() }).await?;
    let mailbox = rig.facts.mailboxes.first().context("no mailbox")?.clone();
    let mb = MailboxId::parse(mailbox.as_str())?;
    let n = args.changes;
    // Every edit prepared first, so that the bench's own reads fall outside the measurement.
    // (label, made in Exchange, edits, other mailboxes' copies of the edited contacts)
    let mut rows: Vec<(String, bool, Vec<UserEdit>, Option<u64>)> = Vec::new();
    let contacts: Vec<(String, String)> = rig
        .store()
        .list_links(&rig.tenant, &mb, Kind::Contact)
        .await?
        .into_iter()
        .filter_map(|l| Some((l.hq_id?, l.graph_id?)))
        .collect();
    anyhow::ensure!(!contacts.is_empty(), "{mailbox} has no linked contact");
    {
        let mut other_copies = 0;
        let mut edits = Vec::new();
        for i in 0..n {
            let (hq, g) = &contacts[i % contacts.len()];
            let copies = rig.store().links_of_hq(&rig.tenant, Kind::Contact, hq).await?;
            other_copies += copies.iter().filter(|l| l.graph_id.is_some()).count().saturating_sub(1) as u64;
            edits.push(UserEdit::Graph {
                path: format!("/users/{}/contacts/{}", seg(&mailbox), seg(g)),
                body: |tag, _| json!({"jobTitle": tag}),
            });
        }
        rows.push(("contacts      Exchange → helloHQ".into(), true, edits, Some(other_copies)));
        let mut edits = Vec::new();
        for i in 0..n {
            let (hq, _) = &contacts[i % contacts.len()];
            let body =
                put_body(&rig.hq_request(reqwest::Method::GET, &format!("/v2/ContactPersons/{hq}"), None).await?);
            edits.push(UserEdit::Hq { path: format!("/v2/ContactPersons/{hq}"), body, field: "position" });
        }
        rows.push(("contacts      helloHQ → Exchange".into(), false, edits, None));
    }
    // Appointments and tasks: Exchange-side fields that flow to helloHQ
    // (an event's location, a task's due date), and helloHQ's name (which
    // flows only from helloHQ, SPEC §3).
    let hq = crate::connectors::hellohq::client::HellohqClient::new(
        crate::connectors::hellohq::client::HellohqClientConfig::new(
            rig.facts.hellohq_url.clone(),
            rig.facts.sync_token.clone(),
        )
        .allowing_private_addresses(),
    )?;
    let events = organized_events(&rig, &mailbox).await?;
    let tasks = linked_todo_tasks(&rig, &mailbox).await?;
    for (kind, items, graph_body) in [
        (
            "appointments",
            &events,
            (|tag: &str, _| json!({"location": {"displayName": tag}})) as fn(&str, usize) -> Value,
        ),
        ("tasks", &tasks, |_: &str, n| due_date(n)),
    ] {
        if items.is_empty() {
            eprintln!("  {kind}: {mailbox} has no suitable linked item; not measured");
            continue;
        }
        let edits: Vec<UserEdit> =
            (0..n).map(|i| UserEdit::Graph { path: items[i % items.len()].0.clone(), body: graph_body }).collect();
        rows.push((format!("{kind:<13} Exchange → helloHQ"), true, edits, None));
        let mut edits = Vec::new();
        for i in 0..n {
            let id: i32 = items[i % items.len()].1.parse().context("a helloHQ task id")?;
            let t = hq.get_task(id).await?;
            let project = t.project_id.context("a helloHQ task without a project")?;
            edits.push(UserEdit::Hq {
                path: format!("/v2/Projects/{project}/Tasks/{id}"),
                body: task_put_body(&t)?,
                field: "name",
            });
        }
        rows.push((format!("{kind:<13} helloHQ → Exchange"), false, edits, None));
    }
    rig.wait_idle(QUIET, SETUP_LIMIT).await?;
    let mut passes = Passes::new(&rig).await?;
    let mut periodic = Counters::default();
    let t0 = Instant::now();
    let all_before = rig.counters().await?;
    let mut all = Vec::new();
    for (label, from_exchange, edits, other_copies) in &rows {
        let (f, _) = measure_row(&rig, label, *from_exchange, edits, &mut passes, &mut periodic).await?;
        all.push(match (from_exchange, other_copies) {
            // helloHQ's record and every other mailbox's copy are mirrored writes; beyond that, echoes.
            (true, Some(other)) => RequestFigures {
                mirrored_writes: f.hq_writes + f.graph_writes.min(*other),
                echo_writes: f.graph_writes.saturating_sub(*other),
                fanout_writes: f.graph_writes.min(*other),
                ..f
            },
            (true, None) => RequestFigures { mirrored_writes: f.hq_writes, echo_writes: f.graph_writes, ..f },
            (false, _) => RequestFigures { mirrored_writes: f.graph_writes, echo_writes: f.hq_writes, ..f },
        });
    }
    passes.since_last(&rig).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    // Everything outside the counted windows: the periodic passes (and the
    // windows they spoiled), minus the bench's own edits.
    let whole = rig.counters().await?.since(&all_before);
    let counted_graph: u64 = all.iter().map(|f| f.graph_requests).sum();
    let counted_hq: u64 = all.iter().map(|f| f.hq_requests).sum();
    let own_graph: u64 = all.iter().filter(|f| f.from_exchange).map(|f| (f.edits + f.redone) as u64).sum();
    let own_hq: u64 = all.iter().filter(|f| !f.from_exchange).map(|f| (f.edits + f.redone) as u64).sum();
    rig.stop().await;
    print_requests(&all);
    println!(
        "periodic  {} passes published by the scheduler during the {:.0} s run (production cadence); outside the counted edit windows hqsync made {} Graph and {} helloHQ requests ({} Graph / {} helloHQ of them in windows an edit shared with a pass)",
        passes.published,
        elapsed,
        whole.graph_total().saturating_sub(counted_graph + own_graph),
        whole.hq_total().saturating_sub(counted_hq + own_hq),
        periodic.graph_total(),
        periodic.hq_total()
    );
    Ok(all)
}

/// The v2 PUT body of a helloHQ task as hqsync writes it: no server
/// fields, no assignments (written through v1), no `originalStartOn`.
fn task_put_body(t: &crate::connectors::hellohq::wire::Task) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(t)?;
    if let Some(o) = v.as_object_mut() {
        for k in [
            "id",
            "createdOn",
            "createdBy",
            "updatedOn",
            "updatedBy",
            "@odata.context",
            "originalStartOn",
            "resourceToTasks",
        ] {
            o.remove(k);
        }
    }
    Ok(v)
}

fn print_requests(all: &[RequestFigures]) {
    println!(
        "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}  per edit / per write (target)",
        "kind and direction", "edits", "Graph req", "Graph wr", "hHQ req", "hHQ wr", "echo", "redone"
    );
    for f in all {
        let key = if f.from_exchange {
            format!(
                "Graph {:.2} per Outlook edit (≤ 1.1){}, helloHQ {:.2} per helloHQ write (≤ 2)",
                f.graph_per_edit(),
                if f.fanout_writes > 0 {
                    format!(
                        " = {:.2} besides {:.2} writes to the other mailboxes' copies",
                        (f.graph_requests - f.fanout_writes) as f64 / f.edits.max(1) as f64,
                        f.fanout_writes as f64 / f.edits.max(1) as f64
                    )
                } else {
                    String::new()
                },
                f.hq_per_hq_write()
            )
        } else {
            format!(
                "Graph {:.2} per Graph write (≤ 1.1), helloHQ {:.2} per edit",
                f.graph_per_graph_write(),
                f.hq_per_edit()
            )
        };
        println!(
            "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6}  {key}",
            f.label, f.edits, f.graph_requests, f.graph_writes, f.hq_requests, f.hq_writes, f.echo_writes, f.redone
        );
        let routes: Vec<String> = f.graph_routes.iter().map(|(r, n)| format!("{n}× {r}")).collect();
        println!("    Graph: {}", routes.join(", "));
        let routes: Vec<String> = f.hq_routes.iter().map(|(r, n)| format!("{n}× {r}")).collect();
        println!("    helloHQ: {}", routes.join(", "));
        let journal: Vec<String> = f.journal.iter().map(|(a, n)| format!("{n}× {a}")).collect();
        println!("    journal: {}", journal.join(", "));
    }
}

/// Events `mailbox` organizes that hqsync linked (single instances): their
/// Graph path and helloHQ id.
async fn organized_events(rig: &Rig, mailbox: &str) -> anyhow::Result<Vec<(String, String)>> {
    let links = rig.store().list_links(&rig.tenant, &MailboxId::parse(mailbox)?, Kind::Appointment).await?;
    let mut out = Vec::new();
    for l in links {
        let (Some(hq), Some(g)) = (l.hq_id, l.graph_id) else { continue };
        let path = format!("/users/{}/events/{}", seg(mailbox), seg(&g));
        let ev = rig.graph.get(&path).await?;
        if ev["isOrganizer"].as_bool().unwrap_or(false) && ev["type"].as_str() == Some("singleInstance") {
            out.push((path, hq));
        }
    }
    Ok(out)
}

/// To Do tasks of `mailbox` hqsync linked (found through the lists): their
/// Graph path and helloHQ id.
async fn linked_todo_tasks(rig: &Rig, mailbox: &str) -> anyhow::Result<Vec<(String, String)>> {
    let links = rig.store().list_links(&rig.tenant, &MailboxId::parse(mailbox)?, Kind::Task).await?;
    let linked: BTreeMap<String, String> = links.into_iter().filter_map(|l| Some((l.graph_id?, l.hq_id?))).collect();
    let lists = rig.graph.list_all(&format!("/users/{}/todo/lists", seg(mailbox))).await?;
    let mut out = Vec::new();
    for l in &lists {
        let Some(list) = l["id"].as_str() else { continue };
        let base = format!("/users/{}/todo/lists/{}/tasks", seg(mailbox), seg(list));
        for t in rig.graph.list_all(&base).await? {
            if let Some((id, hq)) = t["id"].as_str().and_then(|id| linked.get(id).map(|hq| (id, hq))) {
                out.push((format!("{base}/{}", seg(id)), hq.clone()));
            }
        }
    }
    Ok(out)
}

/// A To Do due date `n` days after 2030-01-01 (after any start the demo holds).
fn due_date(n: usize) -> Value {
    let day = chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap_or_default() + chrono::Days::new(n as u64);
    json!({"dueDateTime": {"dateTime": format!("{}T00:00:00.0000000", day.format("%Y-%m-%d")), "timeZone": "UTC"}})
}

// ---- resources -------------------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct ResourcesArgs {
    /// Contact edits per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Edits in total.
    #[arg(long, default_value_t = 300)]
    pub changes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ResourcesReport {
    pub changes: usize,
    pub worker_cpu_ms: f64,
    pub serve_cpu_ms: f64,
    pub process_cpu_ms: f64,
    pub elapsed_s: f64,
    pub rss_idle_kib: u64,
    pub rss_peak_kib: u64,
}

pub async fn resources(args: ResourcesArgs) -> anyhow::Result<ResourcesReport> {
    anyhow::ensure!(args.rate > 0.0 && args.changes > 0, "--rate and --changes must be above 0");
    println!(
        "hqsync bench resources: {} contact edits at {}/s (serve and worker on their own threads)",
        args.changes, args.rate
    );
    let rss_before_rig = vm_rss_kib().unwrap_or(0);
    let rig = start_settled(RigOptions::demo()).await?;
    let edits = Editor::prepare(&rig).await?;
    let rss_idle = vm_rss_kib().unwrap_or(0);
    let cpu0 = (thread_cpu_ms(WORKER_THREADS), thread_cpu_ms(SERVE_THREADS), process_cpu_ms());
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_idle));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                peak.fetch_max(vm_rss_kib().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let t = Instant::now();
    steady_load(&rig, &edits, args.rate, args.changes).await?;
    rig.wait_idle(SETTLE, SETUP_LIMIT).await?;
    sampler.abort();
    let cpu1 = (thread_cpu_ms(WORKER_THREADS), thread_cpu_ms(SERVE_THREADS), process_cpu_ms());
    let r = ResourcesReport {
        changes: args.changes,
        worker_cpu_ms: cpu1.0 - cpu0.0,
        serve_cpu_ms: cpu1.1 - cpu0.1,
        process_cpu_ms: cpu1.2 - cpu0.2,
        elapsed_s: t.elapsed().as_secs_f64() - SETTLE.as_secs_f64(),
        rss_idle_kib: rss_idle,
        rss_peak_kib: peak.load(std::sync::atomic::Ordering::Relaxed),
    };
    rig.stop().await;
    let per = |ms: f64| ms / r.changes as f64;
    println!("worker CPU   {:>8.0} ms  = {:.2} ms per change", r.worker_cpu_ms, per(r.worker_cpu_ms));
    println!("serve CPU    {:>8.0} ms  = {:.2} ms per change", r.serve_cpu_ms, per(r.serve_cpu_ms));
    println!(
        "process CPU  {:>8.0} ms  = {:.2} ms per change (both simulators and the load included: the baseline)",
        r.process_cpu_ms,
        per(r.process_cpu_ms)
    );
    println!(
        "ratio        worker + serve = {:.0}% of the process's CPU; {:.0}% of one core at {} changes/s",
        100.0 * (r.worker_cpu_ms + r.serve_cpu_ms) / r.process_cpu_ms.max(1e-9),
        100.0 * (r.worker_cpu_ms + r.serve_cpu_ms) / (r.elapsed_s * 1000.0),
        args.rate
    );
    println!(
        "memory       VmRSS before start {} MiB, idle after initial sync {} MiB, peak under load {} MiB (one process: serve + worker + scheduler + both simulators)",
        rss_before_rig / 1024,
        r.rss_idle_kib / 1024,
        r.rss_peak_kib / 1024
    );
    Ok(r)
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) of this process's threads whose name starts with `prefix`.
pub fn thread_cpu_ms(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return f64::NAN };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, ms)| ms)
        .sum()
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu_ms() -> f64 {
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| parse_stat(&s)).map_or(f64::NAN, |(_, ms)| ms)
}

/// `(comm, utime + stime in ms)` from a `/proc/…/stat` line (comm may hold spaces).
fn parse_stat(s: &str) -> Option<(String, f64)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 2..)?.split_whitespace().collect();
    // After comm: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) * 1000.0 / USER_HZ))
}

/// Resident memory of this process in KiB.
pub fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

// ---- fanout ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Mailbox counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "20,100")]
    pub mailboxes: Vec<usize>,
    /// helloHQ edits per size.
    #[arg(long, default_value_t = 5)]
    pub edits: usize,
}

#[derive(Debug, Clone, Default)]
pub struct FanoutFigures {
    pub mailboxes: usize,
    pub edits: usize,
    /// Edit acknowledged → first / last mailbox written, averaged.
    pub first_ms: f64,
    pub last_ms: f64,
    pub graph_requests_per_edit: f64,
    pub graph_writes_per_edit: f64,
    pub hq_requests_per_edit: f64,
    pub batch_requests: u64,
    /// Baseline, measured in the same run: the same writes (one per copy)
    /// made straight to the Graph simulator, one after the other and all at
    /// once, averaged per edit.
    pub direct_writes: usize,
    pub direct_sequential_ms: f64,
    pub direct_concurrent_ms: f64,
}

pub async fn fanout(args: FanoutArgs) -> anyhow::Result<Vec<FanoutFigures>> {
    anyhow::ensure!(args.edits > 0 && !args.mailboxes.is_empty(), "--edits and --mailboxes must be given");
    println!("hqsync bench fanout: one helloHQ contact in every mailbox; {} edits per size", args.edits);
    let mut out = Vec::new();
    for &n in &args.mailboxes {
        anyhow::ensure!(n > 0, "--mailboxes: sizes must be at least 1");
        let opts = RigOptions {
            synthetic: Some((n, 1)),
            hellohq: crate::sim::hellohq::HellohqSimConfig {
                seed: crate::sim::hellohq::SeedProfile::Empty,
                ..RigOptions::demo().hellohq
            },
            ..RigOptions::demo()
        };
        let rig = start_settled(opts).await?;
        let links = rig.store().count_links(&rig.tenant, None, Some(Kind::Contact)).await?;
        let any = rig.facts.mailboxes.first().context("no mailbox")?;
        let hq_id = rig
            .store()
            .list_links(&rig.tenant, &MailboxId::parse(any.as_str())?, Kind::Contact)
            .await?
            .into_iter()
            .find_map(|l| l.hq_id)
            .context("the contact was not synced")?;
        eprintln!("  {n} mailboxes: {links} copies of the contact");
        let body = put_body(&rig.hq_request(reqwest::Method::GET, &format!("/v2/ContactPersons/{hq_id}"), None).await?);
        let edit = Edit::Hellohq { hq_id: hq_id.clone(), body };
        rig.wait_idle(SETTLE, SETUP_LIMIT).await?;
        let before = rig.counters().await?;
        let head = rig.journal_head().await?;
        let mut done = Vec::new();
        for i in 0..args.edits {
            done.push(make_edit(&rig, &edit).await?);
            rig.wait_idle(Duration::from_millis(300), SETUP_LIMIT).await?;
            eprintln!("  {n} mailboxes: edit {}/{}", i + 1, args.edits);
        }
        let d = rig.counters().await?.since(&before);
        let journal = rig.journal_after(head).await?;
        let (mut first, mut last) = (0.0, 0.0);
        for (i, e) in done.iter().enumerate() {
            let until = done.get(i + 1).map(|n| n.at);
            let writes: Vec<f64> = journal
                .iter()
                .filter(|j| {
                    j.action == "updated" && e.edit.matches(j) && j.at >= e.at && until.is_none_or(|u| j.at < u)
                })
                .map(|j| ms_between(e.at, j.at))
                .collect();
            first += writes.iter().copied().fold(f64::INFINITY, f64::min);
            last += writes.iter().copied().fold(0.0, f64::max);
        }
        let k = args.edits as f64;
        let f = FanoutFigures {
            mailboxes: n,
            edits: args.edits,
            first_ms: first / k,
            last_ms: last / k,
            graph_requests_per_edit: d.graph_total() as f64 / k,
            graph_writes_per_edit: d.graph_item_writes() as f64 / k,
            hq_requests_per_edit: d.hq_total().saturating_sub(args.edits as u64) as f64 / k,
            batch_requests: d.graph.iter().filter(|(r, _)| r.contains("$batch")).map(|(_, v)| v).sum(),
            ..Default::default()
        };
        // The baseline: the same N writes made straight to the Graph
        // simulator, without hqsync, one after the other and all at once.
        let copies: Vec<(String, String)> = rig
            .store()
            .links_of_hq(&rig.tenant, Kind::Contact, &hq_id)
            .await?
            .into_iter()
            .filter_map(|l| Some((l.mailbox.as_str().to_string(), l.graph_id?)))
            .collect();
        let (mut seq_ms, mut par_ms) = (0.0, 0.0);
        for i in 0..args.edits {
            rig.wait_idle(Duration::from_millis(300), SETUP_LIMIT).await?;
            let tag = format!("Bench {}-direct-{i}", run_tag());
            let t = Instant::now();
            for (m, g) in &copies {
                rig.graph
                    .patch(&format!("/users/{}/contacts/{}", seg(m), seg(g)), &json!({"jobTitle": tag}), None)
                    .await?;
            }
            seq_ms += t.elapsed().as_secs_f64() * 1000.0;
            rig.wait_idle(Duration::from_millis(300), SETUP_LIMIT).await?;
            let tag = format!("Bench {}-direct-all-{i}", run_tag());
            let body = json!({"jobTitle": tag});
            let t = Instant::now();
            let writes = copies.iter().map(|(m, g)| {
                let path = format!("/users/{}/contacts/{}", seg(m), seg(g));
                let (graph, body) = (&rig.graph, &body);
                async move { graph.patch(&path, body, None).await }
            });
            for r in futures::future::join_all(writes).await {
                r?;
            }
            par_ms += t.elapsed().as_secs_f64() * 1000.0;
            eprintln!("  {n} mailboxes: direct writes {}/{}", i + 1, args.edits);
        }
        let f = FanoutFigures {
            direct_sequential_ms: seq_ms / k,
            direct_concurrent_ms: par_ms / k,
            direct_writes: copies.len(),
            ..f
        };
        rig.stop().await;
        println!(
            "N = {:>4}: first mailbox written after {:>7.1} ms, all {} after {:>8.1} ms ({:.2} ms per mailbox); Graph {:.1} requests ({:.1} writes) per edit = {:.2} per mailbox; helloHQ {:.1} per edit; $batch used: {}",
            f.mailboxes,
            f.first_ms,
            f.mailboxes,
            f.last_ms,
            f.last_ms / n as f64,
            f.graph_requests_per_edit,
            f.graph_writes_per_edit,
            f.graph_requests_per_edit / n as f64,
            f.hq_requests_per_edit,
            if f.batch_requests > 0 { "yes" } else { "no (one PATCH per mailbox)" }
        );
        println!(
            "N = {:>4}: baseline, the same {} writes straight to the Graph simulator without hqsync: {:>7.1} ms one after the other, {:>7.1} ms all at once; hqsync's last write = {:.1}× the sequential, {:.1}× the concurrent baseline",
            f.mailboxes,
            f.direct_writes,
            f.direct_sequential_ms,
            f.direct_concurrent_ms,
            f.last_ms / f.direct_sequential_ms.max(1e-9),
            f.last_ms / f.direct_concurrent_ms.max(1e-9)
        );
        out.push(f);
    }
    Ok(out)
}

// ---- initial sync ----------------------------------------------------------------------------

#[derive(Debug, Clone, Args)]
pub struct InitialSyncArgs {
    #[arg(long, default_value_t = 20)]
    pub mailboxes: usize,
    /// helloHQ contact persons (each goes into every mailbox).
    #[arg(long, default_value_t = 100)]
    pub contacts: usize,
    /// Requests allowed per mailbox per window (Outlook: 10,000 per 10 min, scaled down).
    #[arg(long, default_value_t = 20)]
    pub quota: u32,
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// The size: 20 mailboxes × 2,000 contacts.
    #[arg(long)]
    pub full: bool,
    /// Keep the store on this PostgreSQL server (postgres://user@host:port),
    /// in a scratch database the bench makes and drops, instead of the
    /// embedded SQLite: the store a production deployment runs on.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct InitialSyncReport {
    pub mailboxes: usize,
    pub contacts: usize,
    pub elapsed_s: f64,
    /// floor((contacts − 1) / quota) × window: the creates alone at the quota.
    pub min_creates_s: f64,
    /// The same for every Graph request the busiest mailbox needed.
    pub min_all_s: f64,
    pub graph_requests: u64,
    pub throttled: u64,
    pub failed_items: u64,
    pub errors: u64,
}

pub async fn initial_sync(mut args: InitialSyncArgs) -> anyhow::Result<InitialSyncReport> {
    if args.full {
        args.mailboxes = 20;
        args.contacts = 2000;
    }
    anyhow::ensure!(args.mailboxes > 0 && args.contacts > 0 && args.quota > 0, "sizes and --quota must be above 0");
    let window = Duration::from_millis(args.window_ms.max(1));
    // hqsync is told the quota (graph.mailbox_requests / mailbox_window_ms),
    // as an operator tells it Outlook's, and runs a hint per mailbox at once.
    let worker_concurrency = RigOptions::demo().worker_concurrency.max(args.mailboxes);
    println!(
        "hqsync bench initial-sync: {} mailboxes × {} contacts, Graph quota {} requests per {} ms per mailbox (4 concurrent); hqsync: the same budget configured, worker concurrency {worker_concurrency}, store {}",
        args.mailboxes,
        args.contacts,
        args.quota,
        args.window_ms,
        if args.postgres.is_some() { "PostgreSQL (scratch database)" } else { "embedded SQLite" }
    );
    let opts = RigOptions {
        synthetic: Some((args.mailboxes, args.contacts)),
        graph: crate::sim::graph::GraphSimConfig {
            throttle_requests_per_window: args.quota,
            throttle_window: window,
            ..RigOptions::demo().graph
        },
        hellohq: crate::sim::hellohq::HellohqSimConfig {
            seed: crate::sim::hellohq::SeedProfile::Empty,
            ..RigOptions::demo().hellohq
        },
        tick_secs: 1,
        worker_concurrency,
        mailbox_quota: Some(crate::connectors::graph::MailboxQuota { requests: args.quota, window }),
        postgres: args.postgres.clone(),
        ..RigOptions::demo()
    };
    let t = Instant::now();
    let rig = Rig::start(opts).await?;
    let target = args.contacts as u64;
    let total = (args.mailboxes * args.contacts) as u64;
    let ready_s = t.elapsed().as_secs_f64();
    // Per mailbox: when its first contact and its last one were seen (to the 100 ms poll).
    let (mut first_seen, mut done_seen) = (BTreeMap::<String, f64>::new(), BTreeMap::<String, f64>::new());
    let mut last_report = Instant::now();
    loop {
        let s = rig.graph_stats().await?;
        let per: Vec<u64> = s["items"]
            .as_object()
            .map(|m| m.values().map(|v| v["contacts"].as_u64().unwrap_or(0)).collect())
            .unwrap_or_default();
        for (mb, v) in s["items"].as_object().into_iter().flatten() {
            let n = v["contacts"].as_u64().unwrap_or(0);
            let now = t.elapsed().as_secs_f64();
            if n > 0 {
                first_seen.entry(mb.clone()).or_insert(now);
            }
            if n >= target {
                done_seen.entry(mb.clone()).or_insert(now);
            }
        }
        let done: u64 = per.iter().map(|&n| n.min(target)).sum();
        if per.len() == args.mailboxes && per.iter().all(|&n| n >= target) {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "  contacts in Exchange: {done}/{total} ({:.0}/s), 429s so far {}",
                done as f64 / t.elapsed().as_secs_f64(),
                s["throttled"]
            );
            last_report = Instant::now();
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(3600), "initial sync did not finish within an hour");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = t.elapsed().as_secs_f64();
    let s = rig.graph_stats().await?;
    let graph_requests: u64 = counters_total(&s["requests"]);
    let journal = rig.journal_after(0).await?;
    let errors = journal.iter().filter(|e| e.action == "error").count() as u64;
    let failed_items =
        journal.iter().filter(|e| e.action == "error" && (e.hq_id.is_some() || e.graph_id.is_some())).count() as u64;
    rig.stop().await;
    let per_mailbox = graph_requests as f64 / args.mailboxes as f64;
    let min = |n: f64| ((n - 1.0).max(0.0) / args.quota as f64).floor() * window.as_secs_f64();
    let r = InitialSyncReport {
        mailboxes: args.mailboxes,
        contacts: args.contacts,
        elapsed_s: elapsed,
        min_creates_s: min(args.contacts as f64),
        min_all_s: min(per_mailbox.ceil()),
        graph_requests,
        throttled: s["throttled"].as_u64().unwrap_or(0),
        failed_items,
        errors,
    };
    println!(
        "initial sync   {total} contacts written in {:.1} s (from start, subscriptions and folders included)",
        r.elapsed_s
    );
    let span = |m: &BTreeMap<String, f64>| {
        let v: Vec<f64> = m.values().copied().collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let ((first_lo, first_hi), (done_lo, done_hi)) = (span(&first_seen), span(&done_seen));
    println!(
        "timeline       bench ready at {ready_s:.1} s; first contact per mailbox at {first_lo:.1}–{first_hi:.1} s; mailboxes complete at {done_lo:.1}–{done_hi:.1} s"
    );
    println!(
        "ceiling        creates alone at the quota: {:.1} s → {:.0}% of the ceiling (target ≥ 85%)",
        r.min_creates_s,
        100.0 * r.min_creates_s / r.elapsed_s
    );
    println!(
        "ceiling        all {:.0} Graph requests per mailbox at the quota: {:.1} s → {:.0}% of that ceiling",
        per_mailbox,
        r.min_all_s,
        100.0 * r.min_all_s / r.elapsed_s
    );
    println!(
        "429s           answered {} (each retried by the client or, once its budget is spent, by the queue); failed items {}; journal errors {}; $batch: not used (one POST per contact)",
        r.throttled, r.failed_items, r.errors
    );
    Ok(r)
}

fn counters_total(v: &Value) -> u64 {
    v.as_object().map(|m| m.values().map(|n| n.as_u64().unwrap_or(0)).sum()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_times_from_a_proc_stat_line_with_spaces_in_the_name() {
        let line = "4242 (hq worker) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 4 0 100 0 0";
        let (name, ms) = parse_stat(line).unwrap();
        assert_eq!(name, "hq worker");
        assert_eq!(ms, 2000.0);
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn landed_at(target: Target, ms: i64, tag: &str) -> Landed {
        Landed { target, at: at(ms), tag: tag.into() }
    }

    #[test]
    fn e2e_waits_for_every_counterpart_and_never_credits_a_late_write_to_the_next_edit() {
        let hq = |id: &str| Target::Hellohq(id.into());
        let mb = |m: &str| Target::Mailbox(m.into());
        let copies = BTreeMap::from([("7".to_string(), vec!["a@x".to_string(), "b@x".to_string(), "c@x".to_string()])]);
        let edit = Edit::Hellohq { hq_id: "7".into(), body: Value::Null };
        let done = |tag: &str, ms: i64| Done { edit: edit.clone(), tag: tag.into(), at: at(ms), round_trip_ms: 1.0 };
        let log = vec![
            landed_at(hq("7"), 0, "t1"),
            landed_at(mb("a@x"), 10, "t1"),
            landed_at(mb("b@x"), 20, "t1"),
            landed_at(hq("7"), 100, "t2"),
            landed_at(mb("a@x"), 110, "t2"),
            landed_at(mb("b@x"), 115, "t2"),
            // t1's write to c lands after t2 was made: it is t1's last counterpart, not t2's.
            landed_at(mb("c@x"), 130, "t1"),
            landed_at(mb("c@x"), 140, "t2"),
        ];
        let first = |log: &[Landed]| {
            let mut f = FirstLandings::new();
            add_landings(&mut f, log.to_vec());
            f
        };
        let (all, partial) = (first(&log), first(&log[..7]));
        let r = e2e_figures(&[done("t1", 1), done("t2", 101)], &copies, &all, 0.0, chrono::Duration::seconds(10));
        assert_eq!((r.edits, r.samples(), r.missing, r.counterparts), (2, 2, 0, 6), "{r:?}");
        assert_eq!(r.to_exchange.p99_ms, 130.0, "t1: from its own write at 0 to its last one at 130; {r:?}");
        let r = e2e_figures(&[done("t2", 101)], &copies, &all, 0.0, chrono::Duration::seconds(10));
        assert_eq!(r.to_exchange.p50_ms, 40.0, "t2: 100 → 140; {r:?}");
        // Without t2's write to c, t2 is missing and t1 still complete.
        let r = e2e_figures(&[done("t1", 1), done("t2", 101)], &copies, &partial, 0.0, chrono::Duration::seconds(10));
        assert_eq!((r.samples(), r.missing), (1, 1), "{r:?}");
        assert!(r.missing_detail[0].contains("c@x"), "{r:?}");
        // A counterpart later than the timeout is missing too.
        let r = e2e_figures(&[done("t1", 1)], &copies, &all, 0.0, chrono::Duration::milliseconds(100));
        assert_eq!((r.samples(), r.missing), (0, 1), "{r:?}");
    }

    #[test]
    fn latency_percentiles() {
        let l = latency(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((l.samples, l.p50_ms, l.p99_ms), (5, 3.0, 5.0));
        assert!(latency(vec![]).p50_ms.is_nan());
    }
}
