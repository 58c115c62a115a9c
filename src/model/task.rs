//! The canonical task and its two wire conversions: a Graph To Do `todoTask`
//! (GRAPH.md §6.4) plus its `io.hqsync.task` open extension, and a helloHQ
//! task row (HELLOHQ.md A9). To Do has no fields for progress or planned
//! effort, so the exact values live in the open extension (invisible to the
//! user) and a readable footer at the end of the body shows them in Outlook:
//!
//! ```text
//! Angebot prüfen
//!
//! — helloHQ —
//! Soll: 2,5 h · Fortschritt: 40 %
//! ```
//!
//! The footer is stripped before anything else is read from the body and is
//! only a fallback when the extension is missing. Without either, the To Do
//! `status` gives the progress: `notStarted` and `deferred` 0 %, `inProgress`
//! and `waitingOnOthers` 50 %, `completed` 100 %.
//!
//! Canonical rules: `done` ⇔ `percent_done == 100` (Outlook's "completed"
//! is 100 % complete); `completed_at` only when done; dates are calendar
//! dates (To Do shows dates only).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::appointment::{graph_body_text, hq_description, html_to_text, is_absence, looks_like_html, normalize_text};
use super::appointment::{parse_graph_time, parse_graph_wall, wall7, ConvertError};
use super::fingerprint::fingerprint_of;
use super::recurrence::local_to_utc;
use crate::connectors::hellohq::wire;

/// Name of the open extension holding the exact values (same as the Graph connector's).
pub const TASK_EXTENSION: &str = "io.hqsync.task";

/// The line that separates the user's text from hqsync's footer.
pub const FOOTER_MARKER: &str = "— helloHQ —";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    Low,
    #[default]
    Normal,
    High,
}

impl Importance {
    fn graph_name(self) -> &'static str {
        match self {
            Importance::Low => "low",
            Importance::Normal => "normal",
            Importance::High => "high",
        }
    }
}

/// A canonical task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct TaskItem {
    pub title: String,
    /// Plain text without hqsync's footer.
    pub body: String,
    pub start: Option<NaiveDate>,
    pub due: Option<NaiveDate>,
    pub importance: Importance,
    pub done: bool,
    pub completed_at: Option<DateTime<Utc>>,
    /// 0–100.
    pub percent_done: u8,
    /// Planned effort ("Soll"), hours, ≥ 0.
    pub planned_effort_hours: f64,
}

/// helloHQ's `isPriority` is a bool, Outlook's importance has three levels:
/// helloHQ `false` must not flatten an Outlook `low` to `normal`.
pub fn merge_importance(hq_is_priority: bool, graph: Importance) -> Importance {
    match (hq_is_priority, graph) {
        (true, _) => Importance::High,
        (false, Importance::High) => Importance::Normal,
        (false, other) => other,
    }
}

/// Progress a To Do status stands for when nothing more exact is known.
fn status_percent(status: &str) -> u8 {
    match status {
        "completed" => 100,
        "inProgress" | "waitingOnOthers" => 50,
        _ => 0,
    }
}

fn format_hours(h: f64) -> String {
    let text = if h.fract() == 0.0 { format!("{h:.0}") } else { format!("{h}") };
    text.replace('.', ",")
}

/// The footer line for these values.
fn footer_line(hours: f64, percent: u8) -> String {
    format!("Soll: {} h · Fortschritt: {percent} %", format_hours(hours))
}

/// Values read back from a footer line (either may be unreadable).
#[derive(Debug, Default, PartialEq)]
struct Footer {
    hours: Option<f64>,
    percent: Option<u8>,
}

fn parse_footer(line: &str) -> Footer {
    let mut f = Footer::default();
    for part in line.split('·').map(str::trim) {
        if let Some(h) = part.strip_prefix("Soll:") {
            f.hours = h
                .trim()
                .trim_end_matches('h')
                .trim()
                .replace(',', ".")
                .parse()
                .ok()
                .filter(|h: &f64| h.is_finite() && *h >= 0.0);
        } else if let Some(p) = part.strip_prefix("Fortschritt:") {
            f.percent = p.trim().trim_end_matches('%').trim().parse().ok().filter(|p| *p <= 100);
        }
    }
    f
}

/// Splits a body into the user's text and hqsync's footer (the last marker line and what follows).
fn strip_footer(text: &str) -> (String, Option<Footer>) {
    let lines: Vec<&str> = text.split('\n').collect();
    match lines.iter().rposition(|l| l.trim() == FOOTER_MARKER) {
        Some(i) => (normalize_text(&lines[..i].join("\n")), Some(parse_footer(&lines[i + 1..].join(" ")))),
        None => (normalize_text(text), None),
    }
}

/// The planned hours and percent hqsync's footer in a todoTask's body
/// states (each None when unreadable; None when there is no footer).
pub fn footer_numbers(task: &Value) -> Option<(Option<f64>, Option<u8>)> {
    let (_, footer) = strip_footer(&graph_body_text(task.get("body")));
    footer.map(|f| (f.hours, f.percent))
}

/// A To Do date (`startDateTime`, `dueDateTime`): the wall date when it is
/// midnight; otherwise the server moved a midnight into another zone, and the
/// nearest midnight is the date meant (right for every offset within ±12 h).
fn todo_date(field: &'static str, v: &Value) -> Result<NaiveDate, ConvertError> {
    let (wall, tz) = parse_graph_wall(field, v)?;
    if wall.time() == NaiveTime::MIN {
        return Ok(wall.date());
    }
    Ok((local_to_utc(tz, wall) + Duration::hours(12)).date_naive())
}

fn todo_date_value(d: NaiveDate) -> Value {
    json!({"dateTime": wall7(d.and_time(NaiveTime::MIN)), "timeZone": "UTC"})
}

/// The `io.hqsync.task` extension among a task's expanded `extensions`.
fn find_extension(task: &Value) -> Option<&Map<String, Value>> {
    let matches = |e: &&Map<String, Value>| {
        ["extensionName", "id"].iter().filter_map(|k| e.get(*k).and_then(Value::as_str)).any(|name| {
            let lower = name.to_ascii_lowercase();
            lower.strip_prefix("microsoft.outlookservices.opentypeextension.").unwrap_or(&lower) == TASK_EXTENSION
        })
    };
    task.get("extensions")?.as_array()?.iter().filter_map(Value::as_object).find(matches)
}

impl TaskItem {
    /// One spelling per meaning (see the module rules).
    pub fn normalized(mut self) -> TaskItem {
        self.title = self.title.trim().to_string();
        self.body = normalize_text(&self.body);
        self.percent_done = self.percent_done.min(100);
        if self.done || self.percent_done == 100 {
            self.done = true;
            self.percent_done = 100;
        } else {
            self.completed_at = None;
        }
        if !self.planned_effort_hours.is_finite() || self.planned_effort_hours < 0.0 {
            self.planned_effort_hours = 0.0;
        }
        self
    }

    /// Stable SHA-256 hex over the normalised record.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.clone().normalized())
    }

    // ---- Graph

    /// Reads a `todoTask` fetched with `$expand=extensions($filter=id eq 'io.hqsync.task')`.
    pub fn from_graph(task: &Value) -> Result<TaskItem, ConvertError> {
        let (body, footer) = strip_footer(&graph_body_text(task.get("body")));
        let footer = footer.unwrap_or_default();
        let ext = find_extension(task);
        let status = task.get("status").and_then(Value::as_str).unwrap_or("notStarted");
        let done = status == "completed";
        let ext_percent = ext
            .and_then(|e| e.get("percentDone"))
            .and_then(Value::as_f64)
            .filter(|p| (0.0..=100.0).contains(p))
            .map(|p| p.round() as u8);
        let percent = match ext_percent.or(footer.percent) {
            _ if done => 100,
            // The user re-opened a task we had written as complete.
            Some(100) | None => status_percent(status).min(99),
            Some(p) => p,
        };
        let effort = ext
            .and_then(|e| e.get("plannedEffortHours"))
            .and_then(Value::as_f64)
            .filter(|h| h.is_finite() && *h >= 0.0)
            .or(footer.hours)
            .unwrap_or(0.0);
        let importance = match task.get("importance").and_then(Value::as_str) {
            Some("low") => Importance::Low,
            Some("high") => Importance::High,
            _ => Importance::Normal,
        };
        let date = |field: &'static str| -> Result<Option<NaiveDate>, ConvertError> {
            task.get(field).filter(|v| v.is_object()).map(|v| todo_date(field, v)).transpose()
        };
        let completed_at = match task.get("completedDateTime").filter(|v| v.is_object()) {
            Some(v) if done => Some(parse_graph_time("completedDateTime", v)?),
            _ => None,
        };
        Ok(TaskItem {
            title: task.get("title").and_then(Value::as_str).unwrap_or_default().to_string(),
            body,
            start: date("startDateTime")?,
            due: date("dueDateTime")?,
            importance,
            done,
            completed_at,
            percent_done: percent,
            planned_effort_hours: effort,
        }
        .normalized())
    }

    /// The task body (with the footer) and the extension fields to write.
    /// Dates are midnight UTC (To Do shows the date); absent dates are
    /// `null` so a PATCH clears them.
    pub fn to_graph(&self) -> (Value, Value) {
        let t = self.clone().normalized();
        let footer = format!("{FOOTER_MARKER}\n{}", footer_line(t.planned_effort_hours, t.percent_done));
        let content = if t.body.is_empty() { footer } else { format!("{}\n\n{footer}", t.body) };
        let status = match t.percent_done {
            _ if t.done => "completed",
            0 => "notStarted",
            _ => "inProgress",
        };
        let mut m = Map::new();
        m.insert("title".into(), json!(t.title));
        m.insert("body".into(), json!({"content": content, "contentType": "text"}));
        m.insert("importance".into(), json!(t.importance.graph_name()));
        m.insert("status".into(), json!(status));
        m.insert("startDateTime".into(), t.start.map(todo_date_value).unwrap_or(Value::Null));
        m.insert("dueDateTime".into(), t.due.map(todo_date_value).unwrap_or(Value::Null));
        if let Some(c) = t.completed_at {
            m.insert("completedDateTime".into(), json!({"dateTime": wall7(c.naive_utc()), "timeZone": "UTC"}));
        }
        let ext = json!({"percentDone": t.percent_done, "plannedEffortHours": t.planned_effort_hours});
        (Value::Object(m), ext)
    }

    // ---- helloHQ

    /// Reads a helloHQ task row (A9). Appointments and absences are
    /// [`ConvertError::NotSynced`] here (they are [`super::appointment::Appointment`]s
    /// or never synced). helloHQ keeps no completion date: `updatedOn` of a
    /// done row stands in for it (B9).
    pub fn from_hq(task: &wire::Task) -> Result<TaskItem, ConvertError> {
        if let Some(k) = task.kind.as_ref().filter(|k| is_absence(k)) {
            return Err(ConvertError::NotSynced { reason: format!("{k} is an absence, not a task (SPEC §3)") });
        }
        if task.is_appointment {
            return Err(ConvertError::NotSynced { reason: format!("task {} is an appointment", task.id) });
        }
        let description = task.description.as_deref().unwrap_or_default();
        let body = if looks_like_html(description) { html_to_text(description) } else { normalize_text(description) };
        let percent = task.percent_done.unwrap_or(0).clamp(0, 100) as u8;
        Ok(TaskItem {
            title: task.name.clone().unwrap_or_default(),
            body,
            start: task.start_date.map(|d| d.date()).or_else(|| task.start_on.map(|t| t.date_naive())),
            due: task.end_date.map(|d| d.date()).or_else(|| task.end_on.map(|t| t.date_naive())),
            importance: if task.is_priority { Importance::High } else { Importance::Normal },
            done: task.is_done,
            completed_at: if task.is_done { task.updated_on } else { None },
            percent_done: percent,
            planned_effort_hours: task.planned_effort.unwrap_or(0.0),
        }
        .normalized())
    }

    /// The full row to PUT/POST, starting from `current` so fields hqsync does
    /// not model survive the full replace (A5). Dates go to `startDate`/`endDate`;
    /// a current `startOn`/`endOn` on the same day keeps its time. Low and
    /// normal importance are both `isPriority: false`; `completed_at` has no
    /// place in helloHQ.
    pub fn to_hq(&self, current: Option<&wire::Task>) -> wire::Task {
        let item = self.clone().normalized();
        let mut t = current.cloned().unwrap_or_default();
        t.is_appointment = false;
        t.name = Some(item.title.clone());
        t.description = hq_description(t.description.as_deref(), &item.body);
        let keep = |on: Option<DateTime<Utc>>, d: Option<NaiveDate>| on.filter(|on| Some(on.date_naive()) == d);
        t.start_on = keep(t.start_on, item.start);
        t.end_on = keep(t.end_on, item.due);
        t.start_date = item.start.map(|d| d.and_time(NaiveTime::MIN));
        t.end_date = item.due.map(|d| d.and_time(NaiveTime::MIN));
        t.is_priority = item.importance == Importance::High;
        t.is_done = item.done;
        t.percent_done = Some(i32::from(item.percent_done));
        if item.planned_effort_hours != 0.0 || t.planned_effort.is_some() {
            t.planned_effort = Some(item.planned_effort_hours);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    /// Shape of Microsoft's todoTask sample, with our extension expanded.
    fn graph_task() -> Value {
        json!({
            "@odata.etag": "W/\"xzyPKP0BiUGgld+lMKXwbQAAgdhkVw==\"",
            "importance": "low",
            "isReminderOn": false,
            "status": "inProgress",
            "title": "Angebot prüfen",
            "createdDateTime": "2026-04-22T11:48:07.6366226Z",
            "lastModifiedDateTime": "2026-04-22T11:49:07.0013412Z",
            "categories": [],
            "id": "AlMKXwbQAAAJws6wcAAAA=",
            "body": {"content": "Bitte bis Freitag.\r\n\r\n— helloHQ —\r\nSoll: 4 h · Fortschritt: 30 %", "contentType": "text"},
            "dueDateTime": {"dateTime": "2026-05-08T00:00:00.0000000", "timeZone": "UTC"},
            "startDateTime": {"dateTime": "2026-05-03T22:00:00.0000000", "timeZone": "UTC"},
            "extensions": [{
                "@odata.type": "#microsoft.graph.openTypeExtension",
                "id": "Microsoft.OutlookServices.OpenTypeExtension.io.hqsync.task",
                "extensionName": "io.hqsync.task",
                "percentDone": 40, "plannedEffortHours": 2.5
            }]
        })
    }

    #[test]
    fn graph_task_reads_the_extension_and_strips_the_footer() {
        let t = TaskItem::from_graph(&graph_task()).unwrap();
        assert_eq!(t.title, "Angebot prüfen");
        assert_eq!(t.body, "Bitte bis Freitag.");
        assert_eq!(t.percent_done, 40, "the extension wins over the footer");
        assert_eq!(t.planned_effort_hours, 2.5);
        assert_eq!(t.importance, Importance::Low);
        assert_eq!(t.start, Some(date("2026-05-04")), "a Berlin midnight converted to UTC is still 4 May");
        assert_eq!(t.due, Some(date("2026-05-08")));
        assert!(!t.done);
    }

    #[test]
    fn without_extension_the_footer_then_the_status_give_the_numbers() {
        let mut v = graph_task();
        v["extensions"] = json!([]);
        let t = TaskItem::from_graph(&v).unwrap();
        assert_eq!((t.percent_done, t.planned_effort_hours), (30, 4.0));
        v["body"] = json!({"content": "<html><body><p>Bitte bis Freitag.</p></body></html>", "contentType": "html"});
        let t = TaskItem::from_graph(&v).unwrap();
        assert_eq!((t.body.as_str(), t.percent_done, t.planned_effort_hours), ("Bitte bis Freitag.", 50, 0.0));
        for (status, percent) in [("notStarted", 0), ("deferred", 0), ("waitingOnOthers", 50), ("completed", 100)] {
            v["status"] = json!(status);
            assert_eq!(TaskItem::from_graph(&v).unwrap().percent_done, percent, "{status}");
        }
    }

    #[test]
    fn ticking_off_in_to_do_means_done_and_reopening_drops_the_100() {
        let mut v = graph_task();
        v["status"] = json!("completed");
        v["completedDateTime"] = json!({"dateTime": "2026-05-06T00:00:00.0000000", "timeZone": "UTC"});
        let t = TaskItem::from_graph(&v).unwrap();
        assert!(t.done);
        assert_eq!(t.percent_done, 100);
        assert_eq!(t.completed_at, Some(date("2026-05-06").and_time(NaiveTime::MIN).and_utc()));
        v["status"] = json!("notStarted");
        v["extensions"][0]["percentDone"] = json!(100);
        let t = TaskItem::from_graph(&v).unwrap();
        assert!(!t.done);
        assert_eq!((t.percent_done, t.completed_at), (0, None));
    }

    #[test]
    fn graph_write_has_status_footer_and_extension() {
        let t = TaskItem {
            title: "Angebot prüfen".into(),
            body: "Bitte bis Freitag.".into(),
            due: Some(date("2026-05-08")),
            percent_done: 40,
            planned_effort_hours: 2.5,
            ..TaskItem::default()
        };
        let (body, ext) = t.to_graph();
        assert_eq!(body["status"], "inProgress");
        assert_eq!(body["body"]["content"], "Bitte bis Freitag.\n\n— helloHQ —\nSoll: 2,5 h · Fortschritt: 40 %");
        assert_eq!(body["dueDateTime"], json!({"dateTime": "2026-05-08T00:00:00.0000000", "timeZone": "UTC"}));
        assert_eq!(body["startDateTime"], Value::Null);
        assert_eq!(ext, json!({"percentDone": 40, "plannedEffortHours": 2.5}));
        let zero = TaskItem { percent_done: 0, ..t.clone() }.to_graph().0;
        assert_eq!(zero["status"], "notStarted");
        let done = TaskItem { done: true, ..t }.to_graph();
        assert_eq!(done.0["status"], "completed");
        assert_eq!(done.1["percentDone"], 100);
    }

    fn hq_task() -> wire::Task {
        serde_json::from_value(json!({
            "id": 5012, "name": "Konzept schreiben", "description": "<p>Gliederung &amp; Entwurf</p>",
            "isAppointment": false, "type": "Project", "projectId": 17, "isDone": false, "percentDone": 25,
            "isPriority": true, "plannedEffort": 6.0, "remaining": 4.5, "startDate": "2026-05-04T00:00:00",
            "endDate": "2026-05-15T00:00:00", "startOn": "2026-05-04T07:00:00.000Z", "endOn": "2026-05-15T16:00:00.000Z",
            "taskTypeStatusId": 3, "updatedOn": "2026-05-05T09:00:00.000Z"
        }))
        .unwrap()
    }

    #[test]
    fn hq_task_reads_and_writes_back_keeping_what_it_does_not_model() {
        let row = hq_task();
        let t = TaskItem::from_hq(&row).unwrap();
        assert_eq!(t.body, "Gliederung & Entwurf");
        assert_eq!((t.start, t.due), (Some(date("2026-05-04")), Some(date("2026-05-15"))));
        assert_eq!((t.importance, t.percent_done, t.planned_effort_hours), (Importance::High, 25, 6.0));
        let back = t.to_hq(Some(&row));
        assert_eq!(back, row, "an unchanged task writes back the row it came from");
        let moved = TaskItem { due: Some(date("2026-05-20")), importance: Importance::Low, ..t }.to_hq(Some(&row));
        assert_eq!(moved.end_on, None, "a time on another day is dropped");
        assert_eq!(moved.start_on, row.start_on);
        assert!(!moved.is_priority);
        assert_eq!(moved.remaining, Some(4.5));
        assert_eq!(moved.extra.get("taskTypeStatusId"), Some(&json!(3)));
    }

    #[test]
    fn appointments_and_absences_are_not_tasks() {
        let mut row = hq_task();
        row.is_appointment = true;
        assert!(matches!(TaskItem::from_hq(&row), Err(ConvertError::NotSynced { .. })));
        row.is_appointment = false;
        row.kind = Some(wire::TaskClassification::Vacation);
        assert!(matches!(TaskItem::from_hq(&row), Err(ConvertError::NotSynced { .. })));
    }

    #[test]
    fn extension_name_is_the_one_the_graph_connector_expands() {
        assert_eq!(TASK_EXTENSION, crate::connectors::graph::resources::TASK_EXTENSION);
    }

    #[test]
    fn hq_false_does_not_flatten_outlook_low() {
        assert_eq!(merge_importance(false, Importance::Low), Importance::Low);
        assert_eq!(merge_importance(false, Importance::Normal), Importance::Normal);
        assert_eq!(merge_importance(false, Importance::High), Importance::Normal);
        assert_eq!(merge_importance(true, Importance::Low), Importance::High);
    }

    #[test]
    fn done_means_complete_and_fingerprints_follow() {
        let a = TaskItem { percent_done: 100, ..TaskItem::default() }.normalized();
        assert!(a.done);
        let b = TaskItem { done: true, percent_done: 60, ..TaskItem::default() };
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), TaskItem::default().fingerprint());
    }

    // ---- properties

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9äöü .,!?&<>\n-]{0,40}".prop_map(|s| normalize_text(&s))
    }

    fn task(hq_only: bool) -> impl Strategy<Value = TaskItem> {
        let importance = if hq_only {
            prop::sample::select(vec![Importance::Normal, Importance::High]).boxed()
        } else {
            prop::sample::select(vec![Importance::Low, Importance::Normal, Importance::High]).boxed()
        };
        (
            (text(), text()),
            (prop::option::of(0i64..800), prop::option::of(0i64..800)),
            importance,
            0u8..=100,
            prop::option::of(0i64..100_000),
            (0u32..400).prop_map(|q| f64::from(q) / 4.0),
        )
            .prop_map(move |((title, body), (s, d), importance, percent, completed, effort)| {
                let day = |o: i64| date("2026-01-01") + Duration::days(o);
                TaskItem {
                    title,
                    body,
                    start: s.map(day),
                    due: d.map(day),
                    importance,
                    done: percent == 100,
                    completed_at: if hq_only {
                        None
                    } else {
                        completed.map(|m| date("2026-01-01").and_time(NaiveTime::MIN).and_utc() + Duration::minutes(m))
                    },
                    percent_done: percent,
                    planned_effort_hours: effort,
                }
                .normalized()
            })
    }

    /// To Do's answer: the task with the extension expanded.
    fn graph_echo(body: Value, ext: Value) -> Value {
        let mut t = body;
        let mut e = ext;
        e["extensionName"] = json!(TASK_EXTENSION);
        e["id"] = json!(TASK_EXTENSION);
        t["extensions"] = json!([e]);
        t["id"] = json!("AAMkADAwATM0MDAAMS1iNTcwLWI2NTEtMDACLTAwCgBGAAAD");
        t
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn canonical_graph_canonical_is_identity(t in task(false)) {
            let (body, ext) = t.to_graph();
            let back = TaskItem::from_graph(&graph_echo(body, ext)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(back.fingerprint(), t.fingerprint());
        }

        #[test]
        fn footer_alone_carries_the_numbers(t in task(false)) {
            let (body, _) = t.to_graph();
            let back = TaskItem::from_graph(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.percent_done, t.percent_done);
            prop_assert_eq!(back.planned_effort_hours, t.planned_effort_hours);
            prop_assert_eq!(back.body, t.body);
        }

        #[test]
        fn canonical_hq_canonical_is_identity(t in task(true)) {
            let row = t.to_hq(None);
            let row: wire::Task = serde_json::from_value(serde_json::to_value(&row).unwrap()).unwrap();
            let back = TaskItem::from_hq(&row).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, t);
        }
    }
}
