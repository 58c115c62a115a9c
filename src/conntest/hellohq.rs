//! The helloHQ side of the connection test: whether the API token is
//! accepted, then the probes of what helloHQ does not publish
//! (docs/hellohq-api.md, "Connection-test probes"): which spelling of the
//! list options (`top` or `$top`…) each v2 list hqsync reads honours,
//! whether lists send `helloHQ-NextLink`, whether `expand=resourceToTasks`
//! works on the task list, and whether the deletions log honours its
//! `CreatedOn` filter. Every probe only reads; an answer that cannot be had
//! (too few rows to tell) keeps the safe default and says so.

use chrono::{Duration, Utc};
use serde_json::Value;

use super::Check;
use crate::connectors::hellohq::client::{HellohqClient, HellohqClientConfig, HqError};
use crate::connectors::hellohq::wire::fmt_utc;
use crate::model::capabilities::{HellohqCapabilities, HqSpelling};
use crate::store::Tenant;

/// Every v2 list hqsync reads with list options (polls, lookups, directory).
pub const V2_LISTS: &[&str] = &[
    "/v2/Users",
    "/v2/Companies",
    "/v2/ContactPersons",
    "/v2/Projects",
    "/v2/Projects/Tasks",
    "/v2/Absences",
    "/v2/CompanyTypes",
];

const TASKS: &str = "/v2/Projects/Tasks";
const DELETIONS: &str = "/v1/ConfigSystemEvents/do.GetDeleted()";

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn key(s: HqSpelling, name: &str) -> String {
    match s {
        HqSpelling::Dollar => format!("${name}"),
        HqSpelling::Bare | HqSpelling::Both => name.to_string(),
    }
}

/// Token check, then the probes; they record their answers in `caps`.
pub(super) async fn checks(t: &Tenant, allow_private: bool, caps: &mut HellohqCapabilities) -> Vec<Check> {
    const NAME: &str = "hellohq_token";
    let cfg = HellohqClientConfig {
        allow_private_addresses: allow_private,
        ..HellohqClientConfig::new(t.hellohq.base_url.clone(), t.hellohq.token.clone())
    };
    let c = match HellohqClient::new(cfg) {
        Ok(c) => c,
        Err(e) => return vec![Check::fail(NAME, e.to_string(), "check hellohq.base_url")],
    };
    let token = match c.get::<Value>("/v2/Users", &[("top".into(), "1".into())]).await {
        Ok(_) => Check::pass(NAME, "token accepted"),
        Err(e @ HqError::Unauthorized { .. }) => Check::fail(
            NAME,
            e.to_string(),
            "create a new API token for the sync user in helloHQ and set hellohq.token",
        ),
        Err(e) => Check::fail(NAME, e.to_string(), "check hellohq.base_url and that helloHQ is reachable"),
    };
    if !token.ok {
        return vec![token];
    }
    let mut checks = vec![token];
    checks.extend(spelling_probes(&c, caps).await);
    checks.push(expand_probe(&c, caps).await);
    checks.push(deletions_probe(&c, caps).await);
    checks
}

/// The answer of one list to `top=1` and `$top=1`.
enum Spelled {
    /// Decided; whether the page of one row (of more) carried a next link.
    Honours(HqSpelling, bool),
    /// Fewer than two rows: nothing to compare.
    TooFew,
    /// Both answered more than one row.
    Neither,
}

async fn spelled(c: &HellohqClient, path: &str) -> Result<Spelled, HqError> {
    let bare = c.probe_page(path, &q(&[("top", "1")])).await?;
    let dollar = c.probe_page(path, &q(&[("$top", "1")])).await?;
    let (nb, nd) = (bare.items.len(), dollar.items.len());
    let total = bare.total.or(dollar.total).unwrap_or(0).max(nb.max(nd) as u64);
    Ok(match (nb, nd) {
        (1, n) if n >= 2 => Spelled::Honours(HqSpelling::Bare, bare.next.is_some()),
        (n, 1) if n >= 2 => Spelled::Honours(HqSpelling::Dollar, dollar.next.is_some()),
        (1, 1) if total >= 2 => Spelled::Honours(HqSpelling::Both, bare.next.is_some() && dollar.next.is_some()),
        (b, d) if b >= 2 && d >= 2 => Spelled::Neither,
        _ => Spelled::TooFew,
    })
}

/// Per v2 list: which spelling it honours (a separate check for each
/// list whose answer is a problem), and, from the same pages, whether
/// next links are sent.
async fn spelling_probes(c: &HellohqClient, caps: &mut HellohqCapabilities) -> Vec<Check> {
    let mut found = Vec::new();
    let mut checks = Vec::new();
    let mut links: Vec<bool> = Vec::new();
    for path in V2_LISTS {
        match spelled(c, path).await {
            Ok(Spelled::Honours(s, next)) => {
                caps.spelling.insert(path.to_string(), s);
                links.push(next);
                found.push(format!(
                    "{path} {}",
                    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
                ));
            }
            Ok(Spelled::TooFew) => found.push(format!(
                "{path} undecided (fewer than 2 rows to compare: the bare spelling is sent and each page checked)"
            )),
            Ok(Spelled::Neither) => checks.push(Check::fail(
                "probe_spelling",
                format!("{path}: neither top=1 nor $top=1 limited the list to one row"),
                "helloHQ ignores the list options on this endpoint: report it to helloHQ support; \
                 hqsync sends the bare spelling and stops a list whose pages do not match what it asked",
            )),
            Err(e) => checks.push(Check::fail(
                "probe_spelling",
                format!("{path}: {e}"),
                "check that the sync user may read this list in helloHQ, then run the test again",
            )),
        }
    }
    checks.insert(0, Check::pass("probe_spelling", found.join("; ")));
    caps.next_links = !links.is_empty() && links.iter().all(|l| *l);
    checks.insert(
        1,
        Check::pass(
            "probe_next_links",
            if links.is_empty() {
                "undecided (no list with two rows): hqsync follows next links and pages with skip after a full page without one".to_string()
            } else if caps.next_links {
                "lists send helloHQ-NextLink".to_string()
            } else {
                "lists do not send helloHQ-NextLink: hqsync continues with skip after each full page".to_string()
            },
        ),
    );
    checks
}

/// `expand=resourceToTasks` on the task list, compared with the published
/// v1 assignments of the same task: honoured only when a task with
/// assignments lists them inline (an empty list proves nothing: a server
/// that ignored the expand could answer one, and hqsync would then remove
/// every attendee in Exchange).
async fn expand_probe(c: &HellohqClient, caps: &mut HellohqCapabilities) -> Check {
    const NAME: &str = "probe_expand";
    let s = caps.spelling.get(TASKS).copied().unwrap_or(HqSpelling::Bare);
    let query = vec![(key(s, "top"), "20".to_string()), (key(s, "expand"), "resourceToTasks".to_string())];
    let outcome = async {
        let page = c.probe_page(TASKS, &query).await?;
        for row in page.items.iter().take(20) {
            let Some(id) = row.get("id").and_then(Value::as_i64).and_then(|i| i32::try_from(i).ok()) else { continue };
            // Participants and rooms (v1 lists users and resources only).
            let counted = |a: &&Value| ["userId", "resourceId"].iter().any(|k| a.get(*k).is_some_and(|v| !v.is_null()));
            let inline = row.get("resourceToTasks").and_then(Value::as_array).map(|l| l.iter().filter(counted).count());
            let Some(n) = inline else {
                return Ok(Some((false, format!("task {id} came without resourceToTasks"))));
            };
            let v1 = c.task_assignments(id).await?.len();
            if v1 == 0 && n == 0 {
                continue;
            }
            return Ok(Some(if n == v1 {
                (true, format!("task {id}: its {n} participants and rooms came inline"))
            } else {
                (false, format!("task {id}: {n} participants and rooms inline, {v1} in v1"))
            }));
        }
        Ok::<_, HqError>(None)
    }
    .await;
    match outcome {
        Ok(Some((honoured, why))) => {
            caps.expand_assignments = honoured;
            Check::pass(
                NAME,
                if honoured {
                    format!("expand=resourceToTasks honoured ({why}): participants come with the task list")
                } else {
                    format!("expand=resourceToTasks not honoured ({why}): participants are read from v1 assignments per task")
                },
            )
        }
        Ok(None) => Check::pass(
            NAME,
            "undecided (no task with assignments among the first 20): participants are read from v1 assignments per task",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("the task list could not be read: {e}"),
            "check that the sync user may read tasks in helloHQ, then run the test again",
        ),
    }
}

/// The deletions log asked for events after tomorrow: honoured when it
/// answers none while it holds some.
async fn deletions_probe(c: &HellohqClient, caps: &mut HellohqCapabilities) -> Check {
    const NAME: &str = "probe_deletions_filter";
    let outcome = async {
        let any = c.probe_page(DELETIONS, &q(&[("$top", "1")])).await?;
        if any.items.is_empty() {
            return Ok(None);
        }
        let later = fmt_utc(Utc::now() + Duration::days(1));
        let filtered =
            c.probe_page(DELETIONS, &q(&[("$filter", &format!("CreatedOn gt {later}")), ("$top", "1")])).await?;
        Ok::<_, HqError>(Some(filtered.items.is_empty()))
    }
    .await;
    match outcome {
        Ok(Some(honoured)) => {
            caps.deletions_filter = honoured;
            Check::pass(
                NAME,
                if honoured {
                    "the deletions log honours $filter=CreatedOn: it is read from its watermark"
                } else {
                    "the deletions log ignores $filter: hqsync reads it whole each poll and filters it itself (correct, at the cost of the log's size)"
                },
            )
        }
        Ok(None) => {
            Check::pass(NAME, "undecided (the deletions log is empty): it is read whole and filtered by hqsync")
        }
        Err(e) => Check::fail(
            NAME,
            format!("the deletions log could not be read: {e}"),
            "check that the sync user may read ConfigSystemEvents in helloHQ, then run the test again",
        ),
    }
}
