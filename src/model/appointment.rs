//! The canonical appointment and its two wire conversions: Graph `event`
//! JSON (GRAPH.md §6.1) and the helloHQ task row an appointment is
//! (HELLOHQ.md A7, C1, C4–C6). The canonical record holds what a sync
//! compares and nothing wire-specific: no ids, etags or audit fields.
//! Conversions are pure; anything a side cannot hold is refused with a
//! [`ConvertError`] naming the field, never half-converted.
//!
//! Conventions: times are UTC instants; all-day appointments are local
//! dates with an exclusive end (one day = D → D+1, as Graph and helloHQ
//! absences count); bodies are plain text (HTML is flattened on read);
//! attendee emails are lower-case and the list is sorted by email.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use super::fingerprint::fingerprint_of;
use super::recurrence::{local_to_utc, Recurrence, Unsupported};
use super::timezone;
use crate::connectors::hellohq::wire;

/// Why a wire record did not become a canonical one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The record is malformed: `field` names what, `reason` how to read it.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The record is valid but is deliberately not synchronised (absences, unscheduled rows, …).
    #[error("not synchronised: {reason}")]
    NotSynced { reason: String },
    /// The record's recurrence cannot be represented on the other side.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConvertError {
    ConvertError::Invalid { field, reason: reason.into() }
}

/// When an appointment takes place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum When {
    Timed {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// Local calendar dates; `end` is exclusive.
    AllDay {
        start: NaiveDate,
        end: NaiveDate,
    },
}

impl Default for When {
    fn default() -> Self {
        When::Timed { start: DateTime::<Utc>::UNIX_EPOCH, end: DateTime::<Utc>::UNIX_EPOCH }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttendeeKind {
    #[default]
    Required,
    Optional,
    /// A room or other bookable resource.
    Resource,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct Attendee {
    /// Lower-case; the key attendees are matched by.
    pub email: String,
    /// Display name; empty when the side knows none (or it only repeats the email).
    pub name: String,
    pub kind: AttendeeKind,
}

/// A canonical appointment (a single instance, a series master or one changed occurrence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct Appointment {
    pub subject: String,
    /// Plain text.
    pub body: String,
    pub location: String,
    pub when: When,
    pub is_private: bool,
    /// Shared by the organizer's and attendees' copies (one helloHQ row per meeting).
    pub ical_uid: Option<String>,
    /// IANA zone the appointment was made in; a series repeats in it.
    pub time_zone: String,
    pub recurrence: Option<Recurrence>,
    pub attendees: Vec<Attendee>,
    /// Graph's `isCancelled` (the organizer cancelled the meeting); helloHQ has no such state.
    pub is_cancelled: bool,
}

impl Default for Appointment {
    fn default() -> Self {
        Appointment {
            subject: String::new(),
            body: String::new(),
            location: String::new(),
            when: When::default(),
            is_private: false,
            ical_uid: None,
            time_zone: "UTC".into(),
            recurrence: None,
            attendees: Vec::new(),
            is_cancelled: false,
        }
    }
}

/// A helloHQ value hqsync cannot read, kept as it is (issue 18 item 6):
/// never overwritten, nothing derived from it written to Exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The helloHQ field (`recurrencyStorage`).
    pub field: &'static str,
    /// The value as helloHQ holds it.
    pub value: String,
    /// Why it cannot be read.
    pub reason: String,
}

/// How much of a held value the journal shows (characters).
pub const HELD_VALUE_SHOWN: usize = 200;

impl Held {
    /// The value as journalled: whole up to [`HELD_VALUE_SHOWN`]
    /// characters, else cut there with `…`.
    pub fn shown(&self) -> String {
        if self.value.chars().count() <= HELD_VALUE_SHOWN {
            return self.value.clone();
        }
        let mut s: String = self.value.chars().take(HELD_VALUE_SHOWN).collect();
        s.push('…');
        s
    }
}

/// What the helloHQ side knows about people and rooms (C5): users by
/// `eMailWork`, contact persons by email, rooms by email or through the
/// tenant's room map (room name → room mailbox).
pub trait Participants {
    fn user_email(&self, user_id: i32) -> Option<String>;
    fn contact_email(&self, contact_person_id: i32) -> Option<String>;
    /// The room's name and, if helloHQ has one, its mailbox.
    fn room(&self, resource_id: i32) -> Option<(String, Option<String>)>;
    fn user_by_email(&self, email: &str) -> Option<i32>;
    fn contact_by_email(&self, email: &str) -> Option<i32>;
    fn room_by_email(&self, email: &str) -> Option<i32>;
    /// The tenant's room map: the mailbox of a room helloHQ knows only by name.
    fn room_mailbox(&self, _room_name: &str) -> Option<String> {
        None
    }
    /// The tenant's room map backwards: the helloHQ room of a room attendee
    /// whose mailbox helloHQ does not store.
    fn room_by_name(&self, _room_name: &str) -> Option<i32> {
        None
    }
    /// The tenant's time zone (HELLOHQ.md B10): helloHQ rows carry none.
    fn default_time_zone(&self) -> String {
        "UTC".into()
    }
}

// ---- shared text and time helpers --------------------------------------------------

/// CRLF/CR become LF, trailing blanks of every line and blank lines at both ends go.
pub fn normalize_text(s: &str) -> String {
    let unified = s.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unified.split('\n').map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').trim_start_matches([' ', '\t']).to_string()
}

/// Whether text holds HTML markup (helloHQ descriptions "may contain HTML").
pub fn looks_like_html(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(2).any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'/' || w[1] == b'!'))
        && s.contains('>')
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Flattens an HTML body (as Exchange returns it) to plain text: block tags
/// and `<br>` become line breaks, `head`/`style`/`script` are dropped, source
/// whitespace collapses as a browser would, entities are decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut skip_until: Option<String> = None;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let Some(close) = after.find('>') else {
                out.push_str(rest);
                break;
            };
            let inner = after[..close].trim();
            rest = &after[close + 1..];
            let closing = inner.starts_with('/');
            let name: String = inner
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if let Some(end) = &skip_until {
                if closing && &name == end {
                    skip_until = None;
                }
                continue;
            }
            match name.as_str() {
                "head" | "style" | "script" | "title" if !closing && !inner.ends_with('/') => skip_until = Some(name),
                "br" => out.push('\n'),
                "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "ul" | "ol" | "table"
                    if !out.ends_with('\n') =>
                {
                    out.push('\n')
                }
                _ => {}
            }
            continue;
        }
        let next = rest.find('<').unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(next);
        rest = tail;
        if skip_until.is_some() {
            continue;
        }
        let mut pending_space = false;
        let mut chars = chunk.char_indices();
        while let Some((i, c)) = chars.next() {
            if c.is_whitespace() {
                pending_space = true;
                continue;
            }
            if pending_space {
                if !out.is_empty() && !out.ends_with('\n') && !out.ends_with(' ') {
                    out.push(' ');
                }
                pending_space = false;
            }
            if c == '&' {
                if let Some(semi) = chunk[i..].find(';').filter(|s| *s <= 10) {
                    if let Some(decoded) = decode_entity(&chunk[i + 1..i + semi]) {
                        out.push(decoded);
                        for _ in 0..semi {
                            chars.next();
                        }
                        continue;
                    }
                }
            }
            out.push(c);
        }
        if pending_space && !out.is_empty() && !out.ends_with('\n') && !out.ends_with(' ') {
            out.push(' ');
        }
    }
    let lines: Vec<&str> = out.split('\n').map(|l| l.trim_matches(' ')).collect();
    normalize_text(&lines.join("\n").replace('\u{a0}', " "))
}

/// Plain text as HTML that [`html_to_text`] reads back unchanged: `&<>`
/// escaped, line breaks as `<br>`, spaces that HTML would collapse as `&nbsp;`,
/// all in one `<p>` so that it is recognisably markup.
pub fn text_to_html(text: &str) -> String {
    let mut out = String::from("<p>");
    let mut prev = '\n';
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            ' ' if prev == ' ' || prev == '\n' => out.push_str("&nbsp;"),
            c => out.push(c),
        }
        prev = c;
    }
    out.push_str("</p>");
    out
}

/// Text of an `itemBody` (`{contentType, content}`), flattened when HTML.
pub fn graph_body_text(body: Option<&Value>) -> String {
    let content = body.and_then(|b| b.get("content")).and_then(Value::as_str).unwrap_or_default();
    let html =
        body.and_then(|b| b.get("contentType")).and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("html"));
    if html {
        html_to_text(content)
    } else {
        normalize_text(content)
    }
}

fn parse_wall(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim().trim_end_matches(['Z', 'z']);
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// A Graph `dateTimeTimeZone` as its wall time and zone rules (UTC when the zone is absent).
pub fn parse_graph_wall(field: &'static str, v: &Value) -> Result<(NaiveDateTime, chrono_tz::Tz), ConvertError> {
    let text = v
        .get("dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(field, "dateTime is missing; expected {\"dateTime\",\"timeZone\"}"))?;
    let wall =
        parse_wall(text).ok_or_else(|| invalid(field, format!("dateTime {text:?} is not yyyy-mm-ddThh:mm:ss")))?;
    let zone_name = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    let tz = timezone::to_tz(zone_name).ok_or_else(|| invalid(field, format!("time zone {zone_name:?} is unknown")))?;
    Ok((wall, tz))
}

/// A Graph `dateTimeTimeZone` as an instant.
pub fn parse_graph_time(field: &'static str, v: &Value) -> Result<DateTime<Utc>, ConvertError> {
    let (wall, tz) = parse_graph_wall(field, v)?;
    Ok(local_to_utc(tz, wall))
}

/// `2026-05-04T10:00:00.0000000`, the form Graph writes.
pub fn wall7(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.%f").to_string().chars().take(27).collect()
}

/// A date-only `dateTimeTimeZone` (all-day bounds, To Do dates). Read either
/// as local midnight (Graph's floating form) or, when the server converted
/// it to another zone, as the date of that instant in `zone`.
pub fn graph_date(field: &'static str, v: &Value, zone: chrono_tz::Tz) -> Result<NaiveDate, ConvertError> {
    let (wall, tz) = parse_graph_wall(field, v)?;
    if wall.time() == NaiveTime::MIN {
        return Ok(wall.date());
    }
    Ok(local_to_utc(tz, wall).with_timezone(&zone).date_naive())
}

// ---- the record ----------------------------------------------------------------

impl Appointment {
    /// One spelling per meaning: trimmed text, lower-case unique attendee
    /// emails sorted, names that only repeat the email dropped, a normalised
    /// recurrence, no empty iCalUId.
    pub fn normalized(mut self) -> Appointment {
        self.subject = self.subject.trim().to_string();
        self.body = normalize_text(&self.body);
        self.location = self.location.trim().to_string();
        self.ical_uid = self.ical_uid.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        self.recurrence = self.recurrence.map(Recurrence::normalized);
        for a in &mut self.attendees {
            a.email = a.email.trim().to_lowercase();
            a.name = a.name.trim().to_string();
            if a.name.eq_ignore_ascii_case(&a.email) {
                a.name.clear();
            }
        }
        self.attendees.retain(|a| !a.email.is_empty());
        self.attendees.sort_by(|a, b| a.email.cmp(&b.email));
        self.attendees.dedup_by(|later, first| later.email == first.email);
        self
    }

    /// Stable SHA-256 hex over the normalised record.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.clone().normalized())
    }

    fn tz(&self) -> chrono_tz::Tz {
        timezone::to_tz(&self.time_zone).unwrap_or(chrono_tz::UTC)
    }

    // ---- Graph

    /// Reads a Graph event as returned with `Prefer: outlook.timezone="UTC"`
    /// (other zones are read too). The zone comes from the series'
    /// `recurrenceTimeZone`, else `originalStartTimeZone`, else `start.timeZone`.
    pub fn from_graph(event: &Value) -> Result<Appointment, ConvertError> {
        let start_v = event.get("start").filter(|v| v.is_object()).ok_or_else(|| invalid("start", "missing"))?;
        let end_v = event.get("end").filter(|v| v.is_object()).ok_or_else(|| invalid("end", "missing"))?;
        let zone_of = |v: Option<&Value>| v.and_then(Value::as_str).and_then(timezone::to_iana);
        let zone = zone_of(event.get("originalStartTimeZone"))
            .or_else(|| zone_of(start_v.get("timeZone")))
            .unwrap_or("UTC")
            .to_string();
        let all_day = event.get("isAllDay").and_then(Value::as_bool).unwrap_or(false);
        let tz = timezone::to_tz(&zone).unwrap_or(chrono_tz::UTC);
        let when = if all_day {
            let start = graph_date("start", start_v, tz)?;
            let end = graph_date("end", end_v, tz)?;
            When::AllDay { start, end: end.max(start + Duration::days(1)) }
        } else {
            let start = parse_graph_time("start", start_v)?;
            let end = parse_graph_time("end", end_v)?;
            When::Timed { start, end: end.max(start) }
        };
        let recurrence = match event.get("recurrence").filter(|r| r.is_object()) {
            None => None,
            Some(pr) => Some(match when {
                When::Timed { start, .. } => Recurrence::from_graph(pr, start, &zone)?,
                When::AllDay { start, .. } => {
                    let midnight = local_to_utc(tz, start.and_time(NaiveTime::MIN));
                    let mut r = Recurrence::from_graph(pr, midnight, &zone)?;
                    r.all_day = true;
                    r.start = start.and_time(NaiveTime::MIN);
                    r.normalized()
                }
            }),
        };
        let time_zone = match &recurrence {
            Some(r) if !r.all_day => r.time_zone.clone(),
            _ => zone,
        };
        let str_at = |path: &[&str]| -> String {
            path.iter().try_fold(event, |v, k| v.get(k)).and_then(Value::as_str).unwrap_or_default().to_string()
        };
        let attendees = event
            .get("attendees")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(graph_attendee).collect())
            .unwrap_or_default();
        Ok(Appointment {
            subject: str_at(&["subject"]),
            body: graph_body_text(event.get("body")),
            location: str_at(&["location", "displayName"]),
            when,
            is_private: event.get("sensitivity").and_then(Value::as_str) == Some("private"),
            ical_uid: Some(str_at(&["iCalUId"])),
            time_zone,
            recurrence,
            attendees,
            is_cancelled: event.get("isCancelled").and_then(Value::as_bool).unwrap_or(false),
        }
        .normalized())
    }

    /// The event body to create or replace with. Times are written in the
    /// appointment's zone under its Windows name, so Outlook shows them in
    /// that zone and a series keeps its local time across DST. Read-only
    /// members (`iCalUId`, `isCancelled`) are not written.
    pub fn to_graph(&self) -> Value {
        let a = self.clone().normalized();
        let tz = a.tz();
        let zone_name = timezone::graph_name(tz.name());
        let (start, end, all_day) = match a.when {
            When::Timed { start, end } => (
                json!({"dateTime": wall7(start.with_timezone(&tz).naive_local()), "timeZone": zone_name}),
                json!({"dateTime": wall7(end.with_timezone(&tz).naive_local()), "timeZone": zone_name}),
                false,
            ),
            When::AllDay { start, end } => (
                json!({"dateTime": wall7(start.and_time(NaiveTime::MIN)), "timeZone": zone_name}),
                json!({"dateTime": wall7(end.and_time(NaiveTime::MIN)), "timeZone": zone_name}),
                true,
            ),
        };
        let attendees: Vec<Value> = a
            .attendees
            .iter()
            .map(|at| {
                let ty = match at.kind {
                    AttendeeKind::Required => "required",
                    AttendeeKind::Optional => "optional",
                    AttendeeKind::Resource => "resource",
                };
                let name = if at.name.is_empty() { at.email.clone() } else { at.name.clone() };
                json!({"type": ty, "emailAddress": {"address": at.email, "name": name}})
            })
            .collect();
        let mut m = Map::new();
        m.insert("subject".into(), json!(a.subject));
        m.insert("body".into(), json!({"contentType": "text", "content": a.body}));
        m.insert("location".into(), json!({"displayName": a.location}));
        m.insert("sensitivity".into(), json!(if a.is_private { "private" } else { "normal" }));
        m.insert("isAllDay".into(), json!(all_day));
        m.insert("start".into(), start);
        m.insert("end".into(), end);
        m.insert("attendees".into(), Value::Array(attendees));
        if let Some(r) = &a.recurrence {
            let mut pr = r.to_graph();
            // An all-day series repeats on the event's own dates and zone.
            pr["range"]["recurrenceTimeZone"] = json!(zone_name);
            m.insert("recurrence".into(), pr);
        }
        Value::Object(m)
    }

    // ---- helloHQ

    /// Reads a helloHQ task row that is an appointment (A7). Absences and
    /// unscheduled appointments are [`ConvertError::NotSynced`]; rows that are
    /// plain tasks too. Times come from `startOn`/`endOn`, or, for all-day
    /// rows, from the local `startDate`/`endDate`.
    pub fn from_hq(task: &wire::Task, people: &dyn Participants) -> Result<Appointment, ConvertError> {
        use wire::TaskClassification as C;
        let class = task.kind.clone();
        match &class {
            Some(k) if is_absence(k) => {
                return Err(ConvertError::NotSynced {
                    reason: format!("{k} is an absence; absences are never synchronised (SPEC §3)"),
                })
            }
            Some(C::UnscheduledAppointment) => {
                return Err(ConvertError::NotSynced {
                    reason: "an unscheduled appointment has no time to put in a calendar".into(),
                })
            }
            Some(k) if !task.is_appointment && !is_appointment_kind(k) => {
                return Err(ConvertError::NotSynced {
                    reason: format!("task {} of type {k} is not an appointment", task.id),
                })
            }
            None if !task.is_appointment => {
                return Err(ConvertError::NotSynced { reason: format!("task {} is not an appointment", task.id) })
            }
            _ => {}
        }
        let when = match (task.start_on, task.end_on, task.start_date, task.end_date) {
            (Some(start), end, _, _) => When::Timed { start, end: end.unwrap_or(start).max(start) },
            (None, _, Some(start), end) => {
                let start = start.date();
                let end = end.map(|e| e.date()).unwrap_or(start).max(start + Duration::days(1));
                When::AllDay { start, end }
            }
            (None, _, None, _) => {
                return Err(invalid("startOn", format!("appointment {} has neither startOn nor startDate", task.id)))
            }
        };
        let default_tz = people.default_time_zone();
        let recurrence = match task.recurrency_storage.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => {
                let first = match when {
                    When::Timed { start, .. } => start,
                    When::AllDay { start, .. } => start.and_time(NaiveTime::MIN).and_utc(),
                };
                let mut r = Recurrence::from_rfc5545_or(text, first, &default_tz)?;
                if let When::AllDay { start, .. } = when {
                    r.all_day = true;
                    r.start = start.and_time(NaiveTime::MIN);
                    r = r.normalized();
                }
                Some(r)
            }
        };
        let time_zone = match &recurrence {
            Some(r) if !r.all_day => r.time_zone.clone(),
            _ => timezone::to_iana(&default_tz).unwrap_or("UTC").to_string(),
        };
        let description = task.description.as_deref().unwrap_or_default();
        let body = if looks_like_html(description) { html_to_text(description) } else { normalize_text(description) };
        let attendees = task.resource_to_tasks.iter().flatten().filter_map(|a| hq_attendee(a, people)).collect();
        Ok(Appointment {
            subject: task.name.clone().unwrap_or_default(),
            body,
            location: task.place.clone().unwrap_or_default(),
            when,
            is_private: matches!(class, Some(C::PrivateAppointment | C::PrivateRecurrencyTask | C::Private)),
            ical_uid: task.ical_uid.clone(),
            time_zone,
            recurrence,
            attendees,
            is_cancelled: false,
        }
        .normalized())
    }

    /// [`Appointment::from_hq`], except that a `recurrencyStorage` hqsync
    /// cannot read (issue 18 item 6) is held instead of refused: the
    /// appointment comes back without a recurrence (every other field read
    /// as usual), and [`Held`] names the value and why it cannot be read.
    /// Whoever syncs it must leave the pattern alone on both sides.
    pub fn from_hq_holding(
        task: &wire::Task,
        people: &dyn Participants,
    ) -> Result<(Appointment, Option<Held>), ConvertError> {
        match Appointment::from_hq(task, people) {
            Ok(a) => Ok((a, None)),
            Err(ConvertError::Unsupported(why)) => {
                let Some(value) = task.recurrency_storage.clone().filter(|s| !s.trim().is_empty()) else {
                    return Err(ConvertError::Unsupported(why));
                };
                let mut without = task.clone();
                without.recurrency_storage = None;
                let a = Appointment::from_hq(&without, people)?;
                Ok((a, Some(Held { field: "recurrencyStorage", value, reason: why.to_string() })))
            }
            Err(e) => Err(e),
        }
    }

    /// [`Appointment::to_hq`] for a series whose pattern is held: the row's
    /// own `recurrencyStorage` and its series type (private or not, as the
    /// appointment says) are kept exactly as `current` has them.
    pub fn to_hq_keeping_recurrence(&self, current: Option<&wire::Task>, people: &dyn Participants) -> wire::Task {
        let mut t = self.to_hq(current, people);
        t.recurrency_storage = current.and_then(|c| c.recurrency_storage.clone());
        t.kind = Some(hq_kind(current.and_then(|c| c.kind.as_ref()), true, self.is_private));
        t
    }

    /// The full task row to PUT/POST (C4). Starts from `current` so every
    /// field hqsync does not model survives the full replace (A5); keeps the
    /// current HTML description when its text equals the body; keeps
    /// assignments helloHQ cannot put an email to; drops attendees helloHQ
    /// cannot hold (see [`unmapped_attendees`](Self::unmapped_attendees)).
    /// `is_cancelled` is not representable: the caller deletes instead.
    pub fn to_hq(&self, current: Option<&wire::Task>, people: &dyn Participants) -> wire::Task {
        let a = self.clone().normalized();
        let mut t = current.cloned().unwrap_or_default();
        t.is_appointment = true;
        t.name = Some(a.subject.clone());
        t.description = hq_description(t.description.as_deref(), &a.body);
        t.place = Some(a.location.clone()).filter(|l| !l.is_empty());
        match a.when {
            When::Timed { start, end } => {
                (t.start_on, t.end_on, t.start_date, t.end_date) = (Some(start), Some(end), None, None);
            }
            When::AllDay { start, end } => {
                let midnight = |d: NaiveDate| Some(d.and_time(NaiveTime::MIN));
                (t.start_on, t.end_on, t.start_date, t.end_date) = (None, None, midnight(start), midnight(end));
            }
        }
        t.kind = Some(hq_kind(t.kind.as_ref(), a.recurrence.is_some(), a.is_private));
        if a.ical_uid.is_some() {
            t.ical_uid = a.ical_uid.clone();
        }
        t.recurrency_storage = a.recurrence.as_ref().map(Recurrence::to_rfc5545);
        t.resource_to_tasks =
            Some(merge_assignments(t.resource_to_tasks.as_deref().unwrap_or_default(), &a.attendees, people));
        t
    }

    /// Attendees helloHQ cannot hold (neither a user, a contact person nor a
    /// known room): they stay on the Exchange side only (C5), to be journalled.
    pub fn unmapped_attendees<'a>(&'a self, people: &dyn Participants) -> Vec<&'a Attendee> {
        self.attendees.iter().filter(|a| assignment_for(a, people).is_none()).collect()
    }
}

/// The helloHQ description for a plain-text body: the current one when it
/// already says the same (keeps helloHQ's HTML), else the text itself, or
/// escaped HTML when helloHQ would take the text for markup.
pub(crate) fn hq_description(current: Option<&str>, body: &str) -> Option<String> {
    if let Some(d) = current.filter(|d| looks_like_html(d) && html_to_text(d) == body) {
        return Some(d.to_string());
    }
    let text = if looks_like_html(body) { text_to_html(body) } else { body.to_string() };
    Some(text).filter(|b| !b.is_empty())
}

fn graph_attendee(v: &Value) -> Option<Attendee> {
    let email = v.get("emailAddress")?;
    let address = email.get("address").and_then(Value::as_str)?.trim().to_lowercase();
    if address.is_empty() {
        return None;
    }
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("optional") => AttendeeKind::Optional,
        Some("resource") => AttendeeKind::Resource,
        _ => AttendeeKind::Required,
    };
    Some(Attendee { email: address, name: email.get("name").and_then(Value::as_str).unwrap_or_default().into(), kind })
}

fn hq_attendee(a: &wire::TaskAssignment, people: &dyn Participants) -> Option<Attendee> {
    if let Some(id) = a.user_id {
        return people.user_email(id).map(|email| Attendee {
            email,
            name: String::new(),
            kind: AttendeeKind::Required,
        });
    }
    if let Some(id) = a.contact_person_id {
        return people.contact_email(id).map(|email| Attendee {
            email,
            name: String::new(),
            kind: AttendeeKind::Required,
        });
    }
    let id = a.resource_id?;
    let (name, email) = people
        .room(id)
        .or_else(|| a.resource.as_ref().map(|r| (r.name.clone().unwrap_or_default(), r.email.clone())))?;
    let email = email.filter(|e| !e.trim().is_empty()).or_else(|| people.room_mailbox(&name))?;
    Some(Attendee { email, name, kind: AttendeeKind::Resource })
}

/// The assignment an attendee becomes (C5), ids only.
fn assignment_for(a: &Attendee, people: &dyn Participants) -> Option<wire::TaskAssignment> {
    let mut out = wire::TaskAssignment::default();
    match a.kind {
        AttendeeKind::Resource => {
            out.resource_id = Some(people.room_by_email(&a.email).or_else(|| people.room_by_name(&a.name))?);
        }
        AttendeeKind::Required | AttendeeKind::Optional => {
            if let Some(u) = people.user_by_email(&a.email) {
                out.user_id = Some(u);
            } else {
                out.contact_person_id = Some(people.contact_by_email(&a.email)?);
            }
        }
    }
    Some(out)
}

/// Keeps the current assignments that are still attendees (or that have no
/// email to compare), in their order, then adds the new attendees.
fn merge_assignments(
    current: &[wire::TaskAssignment],
    attendees: &[Attendee],
    people: &dyn Participants,
) -> Vec<wire::TaskAssignment> {
    let mut wanted: Vec<&Attendee> = attendees.iter().collect();
    let mut out = Vec::new();
    for a in current {
        match hq_attendee(a, people) {
            None => out.push(a.for_write()),
            Some(found) => {
                if let Some(pos) = wanted.iter().position(|w| w.email == found.email.trim().to_lowercase()) {
                    wanted.remove(pos);
                    out.push(a.for_write());
                }
            }
        }
    }
    out.extend(wanted.into_iter().filter_map(|w| assignment_for(w, people)));
    out
}

/// The absence types (A7, A8): never synchronised (SPEC §3).
pub(crate) fn is_absence(k: &wire::TaskClassification) -> bool {
    use wire::TaskClassification as C;
    matches!(
        k,
        C::Vacation
            | C::SickLeave
            | C::SickLeaveUnpaid
            | C::CompanyAbsence
            | C::PrivateAbsence
            | C::OvertimeCompensation
            | C::ForeignVacation
            | C::VacationUnpaid
            | C::ProfessionalEducation
            | C::TradeSchool
            | C::SpecialLeave
            | C::ParentalLeave
            | C::RemoteWork
            | C::ChildSick
            | C::MaternityLeave
            | C::Outage
            | C::Maintenence
            | C::BuildingMeasure
    )
}

fn is_appointment_kind(k: &wire::TaskClassification) -> bool {
    use wire::TaskClassification as C;
    matches!(
        k,
        C::PublicAppointment
            | C::PrivateAppointment
            | C::RecurrencyTask
            | C::RecurrencyException
            | C::PrivateRecurrencyTask
    )
}

/// The row type for a (series?, private?) appointment. An exception row stays
/// one (C6); a current type that already says the same thing is kept.
fn hq_kind(current: Option<&wire::TaskClassification>, series: bool, private: bool) -> wire::TaskClassification {
    use wire::TaskClassification as C;
    let says = |k: &C| match k {
        C::RecurrencyTask => Some((true, false)),
        C::PrivateRecurrencyTask => Some((true, true)),
        C::PrivateAppointment | C::Private => Some((false, true)),
        C::PublicAppointment => Some((false, false)),
        C::RecurrencyException => None,
        other if is_absence(other) || matches!(other, C::UnscheduledAppointment) => Some((!series, !private)),
        _ => Some((false, false)),
    };
    match current {
        Some(C::RecurrencyException) if !series => C::RecurrencyException,
        Some(k) if says(k) == Some((series, private)) => k.clone(),
        _ => match (series, private) {
            (true, true) => C::PrivateRecurrencyTask,
            (true, false) => C::RecurrencyTask,
            (false, true) => C::PrivateAppointment,
            (false, false) => C::PublicAppointment,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::recurrence::{End, Pattern};
    use chrono::Weekday;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A small directory: users 7 (anna) and 8 (ben), contact 202 (kunde),
    /// rooms 3 "Raum Elbe" (with mailbox) and 4 "Raum Alster" (room map only).
    struct Directory;

    const USERS: [(i32, &str); 2] = [(7, "anna@agentur.de"), (8, "ben@agentur.de")];
    const CONTACTS: [(i32, &str); 1] = [(202, "kunde@nordlicht.de")];
    const ROOMS: [(i32, &str, Option<&str>); 2] = [(3, "Raum Elbe", Some("elbe@agentur.de")), (4, "Raum Alster", None)];
    const ROOM_MAP: [(&str, &str); 1] = [("Raum Alster", "alster@agentur.de")];

    impl Participants for Directory {
        fn user_email(&self, id: i32) -> Option<String> {
            USERS.iter().find(|(i, _)| *i == id).map(|(_, e)| e.to_string())
        }
        fn contact_email(&self, id: i32) -> Option<String> {
            CONTACTS.iter().find(|(i, _)| *i == id).map(|(_, e)| e.to_string())
        }
        fn room(&self, id: i32) -> Option<(String, Option<String>)> {
            ROOMS.iter().find(|(i, ..)| *i == id).map(|(_, n, e)| (n.to_string(), e.map(str::to_string)))
        }
        fn user_by_email(&self, email: &str) -> Option<i32> {
            USERS.iter().find(|(_, e)| *e == email).map(|(i, _)| *i)
        }
        fn contact_by_email(&self, email: &str) -> Option<i32> {
            CONTACTS.iter().find(|(_, e)| *e == email).map(|(i, _)| *i)
        }
        fn room_by_email(&self, email: &str) -> Option<i32> {
            ROOMS.iter().find(|(_, _, e)| *e == Some(email)).map(|(i, ..)| *i)
        }
        fn room_mailbox(&self, name: &str) -> Option<String> {
            ROOM_MAP.iter().find(|(n, _)| *n == name).map(|(_, e)| e.to_string())
        }
        fn room_by_name(&self, name: &str) -> Option<i32> {
            ROOMS.iter().find(|(_, n, _)| *n == name).map(|(i, ..)| *i)
        }
        fn default_time_zone(&self) -> String {
            "Europe/Berlin".into()
        }
    }

    /// A series master as Graph returns it with `Prefer: outlook.timezone="UTC"` (shape of Microsoft's sample).
    fn graph_series() -> Value {
        json!({
            "@odata.etag": "W/\"DwAAABYAAAB1\"",
            "id": "AAMkAGI1AAAt9AHjAAA=",
            "createdDateTime": "2026-04-20T09:12:01.1234567Z",
            "changeKey": "DwAAABYAAAB1",
            "originalStartTimeZone": "W. Europe Standard Time",
            "originalEndTimeZone": "W. Europe Standard Time",
            "iCalUId": "040000008200E00074C5B7101A82E0080000000020A3",
            "subject": "Jour fixe Agentur",
            "bodyPreview": "Wöchentliche Abstimmung",
            "body": {"contentType": "html", "content": "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\"><style>p {margin:0}</style></head><body><div>Wöchentliche&nbsp;Abstimmung<br>Agenda &amp; Themen</div></body></html>"},
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": false,
            "isCancelled": false,
            "isOrganizer": true,
            "type": "seriesMaster",
            "start": {"dateTime": "2026-05-04T08:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-05-04T08:30:00.0000000", "timeZone": "UTC"},
            "location": {"displayName": "Raum Elbe", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}},
            "locations": [{"displayName": "Raum Elbe"}],
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "month": 0, "dayOfMonth": 0, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday", "index": "first"},
                "range": {"type": "numbered", "startDate": "2026-05-04", "endDate": "0001-01-01", "recurrenceTimeZone": "W. Europe Standard Time", "numberOfOccurrences": 10}
            },
            "attendees": [
                {"type": "required", "status": {"response": "accepted", "time": "2026-04-20T10:00:00Z"}, "emailAddress": {"name": "Ben Berger", "address": "Ben@Agentur.de"}},
                {"type": "optional", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}, "emailAddress": {"name": "extern@partner.example", "address": "extern@partner.example"}},
                {"type": "resource", "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"}, "emailAddress": {"name": "Raum Elbe", "address": "elbe@agentur.de"}}
            ],
            "organizer": {"emailAddress": {"name": "Anna Albers", "address": "anna@agentur.de"}}
        })
    }

    #[test]
    fn graph_series_master_reads_into_the_canonical_record() {
        let a = Appointment::from_graph(&graph_series()).unwrap();
        assert_eq!(a.subject, "Jour fixe Agentur");
        assert_eq!(a.body, "Wöchentliche Abstimmung\nAgenda & Themen");
        assert_eq!(a.location, "Raum Elbe");
        assert_eq!(a.when, When::Timed { start: utc("2026-05-04T08:00:00Z"), end: utc("2026-05-04T08:30:00Z") });
        assert_eq!(a.time_zone, "Europe/Berlin");
        assert!(!a.is_private);
        assert_eq!(a.ical_uid.as_deref(), Some("040000008200E00074C5B7101A82E0080000000020A3"));
        let r = a.recurrence.as_ref().unwrap();
        assert_eq!(r.end, End::Until(NaiveDate::from_ymd_opt(2026, 7, 6).unwrap()), "10 Mondays from 4 May");
        assert_eq!(r.start, NaiveDate::from_ymd_opt(2026, 5, 4).unwrap().and_hms_opt(10, 0, 0).unwrap());
        assert_eq!(
            a.attendees,
            vec![
                Attendee { email: "ben@agentur.de".into(), name: "Ben Berger".into(), kind: AttendeeKind::Required },
                Attendee { email: "elbe@agentur.de".into(), name: "Raum Elbe".into(), kind: AttendeeKind::Resource },
                Attendee { email: "extern@partner.example".into(), name: String::new(), kind: AttendeeKind::Optional },
            ]
        );
    }

    #[test]
    fn graph_series_is_written_in_the_users_windows_zone() {
        let a = Appointment::from_graph(&graph_series()).unwrap();
        let body = a.to_graph();
        assert_eq!(
            body["start"],
            json!({"dateTime": "2026-05-04T10:00:00.0000000", "timeZone": "W. Europe Standard Time"})
        );
        assert_eq!(
            body["recurrence"]["range"],
            json!({"type": "endDate", "startDate": "2026-05-04", "endDate": "2026-07-06", "recurrenceTimeZone": "W. Europe Standard Time"})
        );
        assert_eq!(body["sensitivity"], "normal");
        assert_eq!(
            body["attendees"][1],
            json!({"type": "resource", "emailAddress": {"address": "elbe@agentur.de", "name": "Raum Elbe"}})
        );
        assert!(body.get("iCalUId").is_none());
    }

    #[test]
    fn private_all_day_event_from_the_simulator_shape() {
        // The simulator renders an all-day Berlin event in UTC: 22:00 the day before.
        let e = json!({
            "subject": "Zahnarzt", "sensitivity": "private", "isAllDay": true,
            "originalStartTimeZone": "W. Europe Standard Time",
            "start": {"dateTime": "2026-05-03T22:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-05-04T22:00:00.0000000", "timeZone": "UTC"},
            "body": {"contentType": "text", "content": ""}, "attendees": [], "recurrence": null, "iCalUId": ""
        });
        let a = Appointment::from_graph(&e).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 5, 4).unwrap();
        assert_eq!(a.when, When::AllDay { start: day, end: day + Duration::days(1) });
        assert!(a.is_private);
        assert_eq!(a.ical_uid, None);
        // Real Graph's floating form reads the same.
        let mut floating = e.clone();
        floating["start"] = json!({"dateTime": "2026-05-04T00:00:00.0000000", "timeZone": "UTC"});
        floating["end"] = json!({"dateTime": "2026-05-05T00:00:00.0000000", "timeZone": "UTC"});
        assert_eq!(Appointment::from_graph(&floating).unwrap(), a);
        let out = a.to_graph();
        assert_eq!(
            out["start"],
            json!({"dateTime": "2026-05-04T00:00:00.0000000", "timeZone": "W. Europe Standard Time"})
        );
        assert_eq!(out["isAllDay"], true);
        assert_eq!(out["sensitivity"], "private");
    }

    #[test]
    fn graph_event_without_start_names_the_field() {
        let err = Appointment::from_graph(&json!({"subject": "x"})).unwrap_err();
        assert_eq!(err, ConvertError::Invalid { field: "start", reason: "missing".into() });
        let bad = json!({"start": {"dateTime": "morgen", "timeZone": "UTC"}, "end": {"dateTime": "2026-05-04T10:00:00", "timeZone": "UTC"}});
        assert!(matches!(Appointment::from_graph(&bad), Err(ConvertError::Invalid { field: "start", .. })));
        let hourly = json!({"start": {"dateTime": "2026-05-04T10:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-05-04T11:00:00", "timeZone": "UTC"},
            "recurrence": {"pattern": {"type": "hourly", "interval": 1}, "range": {"type": "noEnd", "startDate": "2026-05-04"}}});
        assert!(matches!(Appointment::from_graph(&hourly), Err(ConvertError::Unsupported(_))));
    }

    fn hq_series() -> wire::Task {
        serde_json::from_value(json!({
            "id": 96095, "name": "Jour fixe Agentur", "description": "<p>Wöchentliche Abstimmung</p>",
            "isAppointment": true, "type": "RecurrencyTask", "place": "Raum Elbe", "projectId": null,
            "iCalUId": null, "color": "#336699", "shouldBeSynced": true,
            "recurrencyStorage": "DTSTART;TZID=Europe/Berlin:20260504T100000\r\nRRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO\r\nEXDATE;TZID=Europe/Berlin:20260511T100000",
            "startOn": "2026-05-04T08:00:00.000Z", "endOn": "2026-05-04T08:30:00.000Z",
            "resourceToTasks": [
                {"id": 1, "taskId": 96095, "userId": 7, "resourceId": null, "contactPersonId": null},
                {"id": 2, "taskId": 96095, "userId": 8, "resourceId": null, "contactPersonId": null},
                {"id": 3, "taskId": 96095, "userId": 99, "resourceId": null, "contactPersonId": null},
                {"id": 4, "taskId": 96095, "userId": null, "resourceId": 3, "contactPersonId": null, "resource": {"id": 3, "name": "Raum Elbe", "email": null}},
                {"id": 5, "taskId": 96095, "userId": null, "resourceId": null, "contactPersonId": 202}
            ],
            "updatedOn": "2026-04-30T12:00:00.000Z"
        }))
        .unwrap()
    }

    #[test]
    fn hq_series_reads_with_participants_and_rooms() {
        let a = Appointment::from_hq(&hq_series(), &Directory).unwrap();
        assert_eq!(a.body, "Wöchentliche Abstimmung");
        assert_eq!(a.time_zone, "Europe/Berlin");
        let r = a.recurrence.as_ref().unwrap();
        assert_eq!(r.pattern, Pattern::Weekly { days: vec![Weekday::Mon], first_day_of_week: Weekday::Mon });
        assert_eq!(r.exdates, vec![utc("2026-05-11T08:00:00Z")]);
        let emails: Vec<&str> = a.attendees.iter().map(|a| a.email.as_str()).collect();
        assert_eq!(emails, ["anna@agentur.de", "ben@agentur.de", "elbe@agentur.de", "kunde@nordlicht.de"]);
        assert_eq!(a.attendees[2].kind, AttendeeKind::Resource);
    }

    #[test]
    fn hq_write_keeps_unknown_fields_html_and_unmappable_assignments() {
        let current = hq_series();
        let mut a = Appointment::from_hq(&current, &Directory).unwrap();
        a.attendees.retain(|x| x.email != "ben@agentur.de");
        a.attendees.push(Attendee {
            email: "alster@agentur.de".into(),
            name: "Raum Alster".into(),
            kind: AttendeeKind::Resource,
        });
        a.attendees.push(Attendee {
            email: "extern@partner.example".into(),
            name: String::new(),
            kind: AttendeeKind::Optional,
        });
        let t = a.to_hq(Some(&current), &Directory);
        assert_eq!(t.extra.get("color"), Some(&json!("#336699")));
        assert_eq!(t.extra.get("shouldBeSynced"), Some(&json!(true)));
        assert_eq!(t.id, 96095);
        assert_eq!(
            t.description.as_deref(),
            Some("<p>Wöchentliche Abstimmung</p>"),
            "HTML kept when its text is unchanged"
        );
        assert_eq!(t.kind, Some(wire::TaskClassification::RecurrencyTask));
        let ids: Vec<(Option<i32>, Option<i32>, Option<i32>)> =
            t.resource_to_tasks.iter().flatten().map(|x| (x.user_id, x.resource_id, x.contact_person_id)).collect();
        assert_eq!(
            ids,
            vec![
                (Some(7), None, None),
                (Some(99), None, None),
                (None, Some(3), None),
                (None, None, Some(202)),
                (None, Some(4), None)
            ]
        );
        assert!(t.resource_to_tasks.iter().flatten().all(|x| x.id.is_none() && x.resource.is_none()));
        let unmapped: Vec<&str> = a.unmapped_attendees(&Directory).iter().map(|x| x.email.as_str()).collect();
        assert_eq!(unmapped, ["extern@partner.example"]);
    }

    #[test]
    fn a_recurrency_storage_that_cannot_be_read_is_held_and_kept_on_write() {
        let mut t = hq_series();
        t.kind = Some(wire::TaskClassification::PrivateRecurrencyTask);
        let odd = format!("Jeden zweiten Mittwoch außer in den Ferien {}", "x".repeat(300));
        t.recurrency_storage = Some(odd.clone());
        assert!(matches!(Appointment::from_hq(&t, &Directory), Err(ConvertError::Unsupported(_))));
        let (a, held) = Appointment::from_hq_holding(&t, &Directory).unwrap();
        let held = held.expect("held");
        assert_eq!((held.field, held.value.as_str()), ("recurrencyStorage", odd.as_str()));
        assert!(!held.reason.is_empty());
        assert_eq!(held.shown().chars().count(), HELD_VALUE_SHOWN + 1, "cut, with …");
        assert!(held.shown().ends_with('…'));
        assert_eq!(a.recurrence, None);
        assert_eq!(a.subject, t.name.clone().unwrap());
        assert!(a.is_private);
        // Written back: the value and the series type stay as helloHQ has them.
        let mut edit = a.clone();
        edit.location = "Raum Alster".into();
        let w = edit.to_hq_keeping_recurrence(Some(&t), &Directory);
        assert_eq!(w.recurrency_storage.as_deref(), Some(odd.as_str()));
        assert_eq!(w.kind, Some(wire::TaskClassification::PrivateRecurrencyTask));
        assert_eq!(w.place.as_deref(), Some("Raum Alster"));
        // A value that reads is not held; a row that is no appointment is still refused.
        let (_, none) = Appointment::from_hq_holding(&hq_series(), &Directory).unwrap();
        assert_eq!(none, None);
        let mut plain = t.clone();
        plain.kind = Some(wire::TaskClassification::from_name("Vacation"));
        assert!(matches!(Appointment::from_hq_holding(&plain, &Directory), Err(ConvertError::NotSynced { .. })));
    }

    #[test]
    fn hq_types_decide_privacy_and_what_is_not_synced() {
        let mut t = hq_series();
        t.kind = Some(wire::TaskClassification::PrivateRecurrencyTask);
        assert!(Appointment::from_hq(&t, &Directory).unwrap().is_private);
        for (kind, why) in
            [("Vacation", "absence"), ("SickLeave", "absence"), ("UnscheduledAppointment", "unscheduled")]
        {
            t.kind = Some(wire::TaskClassification::from_name(kind));
            match Appointment::from_hq(&t, &Directory) {
                Err(ConvertError::NotSynced { reason }) => assert!(reason.contains(why), "{kind}: {reason}"),
                other => panic!("{kind}: {other:?}"),
            }
        }
        t.kind = None;
        t.is_appointment = false;
        assert!(matches!(Appointment::from_hq(&t, &Directory), Err(ConvertError::NotSynced { .. })));
        t.is_appointment = true;
        t.start_on = None;
        assert!(matches!(Appointment::from_hq(&t, &Directory), Err(ConvertError::Invalid { field: "startOn", .. })));
    }

    #[test]
    fn private_flag_maps_to_the_row_type_and_exceptions_stay_exceptions() {
        use wire::TaskClassification as C;
        assert_eq!(hq_kind(None, false, true), C::PrivateAppointment);
        assert_eq!(hq_kind(Some(&C::PrivateAppointment), false, false), C::PublicAppointment);
        assert_eq!(hq_kind(Some(&C::RecurrencyTask), true, true), C::PrivateRecurrencyTask);
        assert_eq!(hq_kind(Some(&C::RecurrencyException), false, false), C::RecurrencyException);
        assert_eq!(hq_kind(Some(&C::ContactHistory), false, false), C::ContactHistory);
    }

    #[test]
    fn html_flattens_like_a_browser() {
        assert_eq!(html_to_text("<p>Hallo\n  Welt</p><p>Zeile&nbsp;2 &lt;3&#33;</p>"), "Hallo Welt\nZeile 2 <3!");
        assert_eq!(html_to_text("a<br/>b<br>c"), "a\nb\nc");
        assert_eq!(html_to_text("<head><title>t</title></head><body>x</body>"), "x");
        assert!(looks_like_html("<p>x</p>"));
        assert!(!looks_like_html("a < b > c"));
    }

    #[test]
    fn fingerprint_ignores_order_and_case_of_attendees() {
        let a = Appointment::from_graph(&graph_series()).unwrap();
        let mut b = a.clone();
        b.attendees.reverse();
        b.attendees[0].email = b.attendees[0].email.to_uppercase();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.location = "Raum Alster".into();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    // ---- properties

    /// Graph's answer to a write, read back with `Prefer: outlook.timezone="UTC"`.
    fn graph_echo(written: &Value) -> Value {
        let mut e = written.clone();
        let zone = written["start"]["timeZone"].clone();
        e["originalStartTimeZone"] = zone;
        for k in ["start", "end"] {
            let t = parse_graph_time("start", &written[k]).unwrap();
            e[k] = json!({"dateTime": wall7(t.naive_utc()), "timeZone": "UTC"});
        }
        e["iCalUId"] = json!("040000008200E00074C5B7101A82E008000000001");
        e["isCancelled"] = json!(false);
        e
    }

    const ZONES: [&str; 5] = ["Europe/Berlin", "UTC", "America/New_York", "Asia/Tokyo", "Europe/London"];

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[a-zA-Z0-9äöüß]{1,8}".prop_map(String::from),
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just(" & <b> ".to_string())
            ],
            0..max,
        )
        .prop_map(|parts| normalize_text(&parts.concat()))
    }

    fn attendee(hq_only: bool) -> impl Strategy<Value = Attendee> {
        let users = prop::sample::select(vec!["anna@agentur.de", "ben@agentur.de", "kunde@nordlicht.de"]);
        let rooms = prop::sample::select(vec![("elbe@agentur.de", "Raum Elbe"), ("alster@agentur.de", "Raum Alster")]);
        let other = "[a-z]{1,6}@[a-z]{1,5}\\.example";
        if hq_only {
            prop_oneof![
                users.prop_map(|e| Attendee { email: e.into(), name: String::new(), kind: AttendeeKind::Required }),
                rooms.prop_map(|(e, n)| Attendee { email: e.into(), name: n.into(), kind: AttendeeKind::Resource }),
            ]
            .boxed()
        } else {
            (other, "[A-Z][a-z]{0,6}( [A-Z][a-z]{0,6})?", 0usize..3)
                .prop_map(|(email, name, k)| Attendee {
                    email,
                    name,
                    kind: [AttendeeKind::Required, AttendeeKind::Optional, AttendeeKind::Resource][k],
                })
                .boxed()
        }
    }

    fn appointment(hq_only: bool) -> impl Strategy<Value = Appointment> {
        let series = crate::model::recurrence::tests::recurrence();
        (
            (text(6), text(12), text(3), prop::bool::ANY),
            0usize..ZONES.len(),
            prop::option::of(series),
            prop::collection::vec(attendee(hq_only), 0..4),
            (0i64..3000, 0i64..600, prop::bool::ANY),
        )
            .prop_map(
                move |((subject, body, location, is_private), z, recurrence, attendees, (start_min, len, all_day))| {
                    let tz = ZONES[z];
                    let (when, recurrence, time_zone) = match recurrence {
                        Some(mut r) if !r.all_day => {
                            r.time_zone = tz.to_string();
                            let start = r.instant_on(r.start.date());
                            (When::Timed { start, end: start + Duration::minutes(len) }, Some(r), tz)
                        }
                        Some(r) => {
                            let d = r.start.date();
                            (When::AllDay { start: d, end: d + Duration::days(1) }, Some(r), tz)
                        }
                        None if all_day => {
                            let d = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(start_min % 400);
                            (When::AllDay { start: d, end: d + Duration::days(1 + len % 3) }, None, tz)
                        }
                        None => {
                            let s = utc("2026-01-01T00:00:00Z") + Duration::minutes(start_min * 15);
                            (When::Timed { start: s, end: s + Duration::minutes(len) }, None, tz)
                        }
                    };
                    Appointment {
                        subject,
                        body,
                        location,
                        when,
                        is_private,
                        ical_uid: None,
                        time_zone: if hq_only && recurrence.as_ref().is_none_or(|r| r.all_day) {
                            "Europe/Berlin".into()
                        } else {
                            time_zone.into()
                        },
                        recurrence: recurrence.map(|mut r| {
                            if !hq_only {
                                r.exdates.clear(); // Graph v1.0 lists no cancelled dates on the master.
                            }
                            r
                        }),
                        attendees,
                        is_cancelled: false,
                    }
                    .normalized()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn canonical_graph_canonical_is_identity(a in appointment(false)) {
            let back = Appointment::from_graph(&graph_echo(&a.to_graph())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want = a.clone();
            want.ical_uid = Some("040000008200E00074C5B7101A82E008000000001".into());
            prop_assert_eq!(back, want);
        }

        #[test]
        fn canonical_hq_canonical_is_identity(a in appointment(true), uid in prop::option::of("[A-F0-9]{16}")) {
            let mut a = a;
            a.ical_uid = uid;
            let row = a.to_hq(None, &Directory);
            // Through the wire JSON, as helloHQ would store and return it.
            let row: wire::Task = serde_json::from_value(serde_json::to_value(&row).unwrap()).unwrap();
            let back = Appointment::from_hq(&row, &Directory).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &a);
            prop_assert_eq!(back.fingerprint(), a.fingerprint());
        }

        #[test]
        fn hq_write_with_current_changes_nothing_when_nothing_changed(a in appointment(true)) {
            let first = a.to_hq(None, &Directory);
            let again = Appointment::from_hq(&first, &Directory).unwrap().to_hq(Some(&first), &Directory);
            prop_assert_eq!(again, first);
        }
    }
}
