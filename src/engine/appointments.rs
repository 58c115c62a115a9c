//! Appointments (SPEC §3): helloHQ task rows with `isAppointment` ↔ events
//! in the Exchange calendars of the tenant's mailboxes.
//!
//! One helloHQ appointment is one meeting. Its event is written only into
//! the **organizer's** mailbox (an existing organizer link, else the
//! helloHQ creator, else the first assigned user with a synced mailbox);
//! Exchange delivers the invitations. The copies that land in other synced
//! mailboxes are *linked* to the same row by `iCalUId` (role `attendee`),
//! never turned into a second appointment. An invitation from an organizer
//! outside the tenant becomes one appointment too (role `invitee`): it
//! follows Exchange, since nobody here may change it.
//!
//! Fields and ownership: subject and body flow only from helloHQ (an
//! Exchange-created event brings both in once, on create); location,
//! times (all-day too), privacy, participants and the series flow both
//! ways. Absences and unscheduled rows are journalled `skipped` and never
//! written, and an Exchange event is only ever created as an appointment
//! type, never as an absence.
//!
//! Invitation guard: every link keeps a fingerprint of what each side
//! showed a person last time (the projection of [`fields`]); a read that
//! hashes the same writes nothing, and a merge without changes writes
//! nothing, so attendees get no mail for our echoes.
//!
//! Series: the pattern travels as `recurrencyStorage` ⇄ `patternedRecurrence`
//! (numbered ranges become end dates, see `model::recurrence`); cancelled
//! occurrences are EXDATEs in helloHQ and deleted occurrences in Exchange.
//! Modified occurrences are `RecurrencyException` rows (C6) in helloHQ and
//! exceptions of the organizer's series in Exchange, paired by their
//! original start; each pair has its own link (role `exception`) and is
//! merged on subject (from helloHQ), location and time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use crate::connectors::graph::client::seg;
use crate::connectors::graph::{GraphClient, GraphError};
use crate::connectors::hellohq::client::{HellohqClient, HqError, ListQuery};
use crate::connectors::hellohq::wire::{self, ContactPerson, TaskAssignment, TaskClassification};
use crate::model::appointment::{is_absence, Appointment, AttendeeKind, ConvertError, Held, Participants, When};
use crate::model::fingerprint::fingerprint_of;
use crate::model::{contact, timezone, Direction, Kind, MailboxId, TenantId};
use crate::store::{Link, Mailbox, Store};

use super::contacts::Plan;
use super::directory::Directory;
use super::merge::{self, FieldRule, Flow, Side};
use super::settings::TenantSettings;
use super::shared::{graph_err, graph_time, graph_version, hq_err, link_holds};
use super::{fingerprint, EngineError};

/// Field rules (SPEC §3): subject and body only from helloHQ.
pub const RULES: [FieldRule; 7] = [
    FieldRule { name: "subject", flow: Flow::FromHellohq },
    FieldRule { name: "body", flow: Flow::FromHellohq },
    FieldRule::both("location"),
    FieldRule::both("when"),
    FieldRule::both("is_private"),
    FieldRule::both("attendees"),
    FieldRule::both("recurrence"),
];

/// Field rules of a modified occurrence: what an exception row holds of its own.
pub const EXCEPTION_RULES: [FieldRule; 3] =
    [FieldRule { name: "subject", flow: Flow::FromHellohq }, FieldRule::both("location"), FieldRule::both("when")];

/// Link roles, kept in the link's `folder` column.
const ORGANIZER: &str = "organizer";
const ATTENDEE: &str = "attendee";
const INVITEE: &str = "invitee";
/// A modified occurrence: the exception row ↔ that occurrence of the organizer's series.
const EXCEPTION: &str = "exception";
const LINKED: &str = "linked";
const PENDING: &str = "pending";
/// Cursor scope of the iCalUId → helloHQ id index (one meeting, one row).
const ICAL_SCOPE: &str = "appointment.ical_uid";
/// Cursor scope of the held `recurrencyStorage` values journalled (key: the
/// helloHQ id, value: the fingerprint of the value): each held value is
/// journalled once, not on every pass.
const HELD_SCOPE: &str = "appointment.held";
/// Why a held series' pattern is left alone.
const HELD_PATTERN: &str = "hqsync cannot read this recurrencyStorage, so it is never overwritten and the Exchange series keeps its own pattern; subject, body, location, participants, privacy and the time of day still sync both ways. Change the pattern in helloHQ to one hqsync can read (RFC 5545) to sync it again";
/// Why a held series is not moved to another day.
const HELD_DAY: &str = "moving a series to another day changes its pattern, and helloHQ's pattern (recurrencyStorage) cannot be read: only a change of time or length on the same day is synchronised; move it on the other side too, or make the pattern readable";
/// Cursor (scope = mailbox) of the last completed appointment pass.
pub const LAST_PASS: &str = "appointment.last_pass";

fn str_of<'v>(v: &'v Value, k: &str) -> Option<&'v str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The Graph `transactionId` of the create for helloHQ appointment `hq_id`:
/// stable across retries and workers, so a replayed POST finds the first event.
pub fn transaction_id(tenant: &TenantId, hq_id: i32) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("hqsync:{tenant}:appointment:{hq_id}").as_bytes())
        .to_string()
}

fn summary(a: &Appointment) -> String {
    format!("appointment {}", if a.subject.is_empty() { "(no subject)" } else { &a.subject })
}

// ---- who is who (C5) ---------------------------------------------------------------

/// Users, contact persons and rooms of a tenant, as helloHQ knows them, plus
/// the tenant's room map and time zone: what turns participants into
/// attendees and back.
#[derive(Debug, Clone, Default)]
pub struct People {
    users: Vec<(i32, String)>,
    contacts: Vec<(i32, String)>,
    rooms: Vec<(i32, String, Option<String>)>,
    room_map: BTreeMap<String, String>,
    time_zone: String,
}

fn lower(s: &str) -> String {
    s.trim().to_lowercase()
}

impl People {
    pub fn new(
        dir: &Directory,
        contacts: &[ContactPerson],
        rooms: &[wire::Resource],
        settings: &TenantSettings,
    ) -> People {
        let users = dir
            .users
            .iter()
            .filter_map(|u| u.e_mail_work.as_deref().filter(|e| e.contains('@')).map(|e| (u.id, lower(e))))
            .collect();
        let contacts = contacts
            .iter()
            .filter_map(|c| {
                contact::from_hq(c, None, None).email.filter(|e| e.contains('@')).map(|e| (c.id, lower(&e)))
            })
            .collect();
        let rooms = rooms
            .iter()
            .map(|r| {
                let email = r.email.as_deref().filter(|e| e.contains('@')).map(lower);
                (r.id, r.name.clone().unwrap_or_default(), email)
            })
            .collect();
        let room_map = settings.appointments.room_map.iter().map(|(k, v)| (lower(k), lower(v))).collect();
        People { users, contacts, rooms, room_map, time_zone: settings.appointments.time_zone.clone() }
    }

    /// The helloHQ identity of an attendee (`u:7`, `c:202`, `r:3`): what
    /// both sides are compared by, so names, kinds and spellings of the
    /// same person never count as a change. `None`: helloHQ cannot hold it.
    pub fn key(&self, email: &str, name: &str, kind: AttendeeKind) -> Option<String> {
        if kind == AttendeeKind::Resource {
            return self.room_by_email(email).or_else(|| self.room_by_name(name)).map(|r| format!("r:{r}"));
        }
        self.user_by_email(email)
            .map(|u| format!("u:{u}"))
            .or_else(|| self.contact_by_email(email).map(|c| format!("c:{c}")))
            .or_else(|| self.room_by_email(email).map(|r| format!("r:{r}")))
    }
}

impl Participants for People {
    fn user_email(&self, user_id: i32) -> Option<String> {
        self.users.iter().find(|(id, _)| *id == user_id).map(|(_, e)| e.clone())
    }
    fn contact_email(&self, contact_person_id: i32) -> Option<String> {
        self.contacts.iter().find(|(id, _)| *id == contact_person_id).map(|(_, e)| e.clone())
    }
    fn room(&self, resource_id: i32) -> Option<(String, Option<String>)> {
        self.rooms.iter().find(|(id, _, _)| *id == resource_id).map(|(_, n, e)| (n.clone(), e.clone()))
    }
    fn user_by_email(&self, email: &str) -> Option<i32> {
        let e = lower(email);
        self.users.iter().find(|(_, x)| *x == e).map(|(id, _)| *id)
    }
    fn contact_by_email(&self, email: &str) -> Option<i32> {
        let e = lower(email);
        self.contacts.iter().find(|(_, x)| *x == e).map(|(id, _)| *id)
    }
    fn room_by_email(&self, email: &str) -> Option<i32> {
        let e = lower(email);
        self.rooms.iter().find(|(_, _, x)| x.as_deref() == Some(e.as_str())).map(|(id, _, _)| *id).or_else(|| {
            let name = self.room_map.iter().find(|(_, v)| **v == e).map(|(k, _)| k.clone())?;
            self.room_by_name(&name)
        })
    }
    fn room_mailbox(&self, room_name: &str) -> Option<String> {
        self.room_map.get(&lower(room_name)).cloned()
    }
    fn room_by_name(&self, room_name: &str) -> Option<i32> {
        let n = lower(room_name);
        (!n.is_empty()).then(|| self.rooms.iter().find(|(_, x, _)| lower(x) == n).map(|(id, _, _)| *id)).flatten()
    }
    fn default_time_zone(&self) -> String {
        self.time_zone.clone()
    }
}

// ---- the compared projection ---------------------------------------------------------

/// What a person sees of an appointment, as merge fields: the attendee list
/// as helloHQ identities (minus the organizer, whom Graph never lists, and
/// minus attendees helloHQ cannot hold), cancelled dates only up to the end
/// of the window (Exchange can only tell those).
pub fn fields(
    a: &Appointment,
    people: &People,
    organizer: Option<&str>,
    window_end: DateTime<Utc>,
) -> Map<String, Value> {
    let skip = organizer.and_then(|o| people.user_by_email(o)).map(|u| format!("u:{u}"));
    let attendees: BTreeSet<String> = a
        .attendees
        .iter()
        .filter_map(|x| people.key(&x.email, &x.name, x.kind))
        .filter(|k| Some(k) != skip.as_ref())
        .collect();
    let recurrence = a.recurrence.clone().map(|mut r| {
        r.exdates.retain(|d| *d < window_end);
        r
    });
    let mut m = Map::new();
    m.insert("subject".into(), json!(a.subject));
    m.insert("body".into(), json!(a.body));
    m.insert("location".into(), json!(a.location));
    m.insert("when".into(), serde_json::to_value(a.when).unwrap_or(Value::Null));
    m.insert("is_private".into(), json!(a.is_private));
    m.insert("attendees".into(), json!(attendees));
    m.insert("recurrence".into(), serde_json::to_value(recurrence).unwrap_or(Value::Null));
    m.retain(|_, v| !v.is_null());
    m
}

/// The Graph members that carry a merge field.
fn graph_members(field: &str) -> &'static [&'static str] {
    match field {
        "subject" => &["subject"],
        "body" => &["body"],
        "location" => &["location"],
        "when" => &["start", "end", "isAllDay"],
        "is_private" => &["sensitivity"],
        "attendees" => &["attendees"],
        "recurrence" => &["recurrence"],
        _ => &[],
    }
}

/// Why an Outlook appointment is not created in helloHQ without a project.
pub const NO_PROJECT: &str = "helloHQ files every appointment in a project and none is configured: set the tenant setting appointments.project to a helloHQ project id (the connection test checks it)";

/// Why a helloHQ row is not written to Exchange, if it is not.
fn not_synced(t: &wire::Task) -> Option<String> {
    match &t.kind {
        Some(k) if is_absence(k) => Some(format!("{k} is an absence; absences are never synchronised (SPEC §3)")),
        Some(TaskClassification::UnscheduledAppointment) => {
            Some("an unscheduled appointment has no time to put in a calendar".into())
        }
        _ => None,
    }
}

/// A modified occurrence of a series (C6): its own row, synchronised with
/// that occurrence of the organizer's series, never as an event of its own.
fn is_exception(t: &wire::Task) -> bool {
    t.kind == Some(TaskClassification::RecurrencyException) || (t.parent_id.is_some() && t.original_start_on.is_some())
}

/// True when the row is an appointment hqsync decides about (absence rows
/// included: they are ours to skip, never a plain task to mirror).
fn is_ours(t: &wire::Task) -> bool {
    use TaskClassification as C;
    t.is_appointment
        || matches!(
            &t.kind,
            Some(k) if is_absence(k) || matches!(k, C::PublicAppointment | C::PrivateAppointment | C::UnscheduledAppointment
                | C::RecurrencyTask | C::RecurrencyException | C::PrivateRecurrencyTask)
        )
}

/// The first helloHQ user (creator, then assignments in order) whose
/// mailbox syncs: the one whose calendar holds the meeting.
fn organizer_of<'m>(t: &wire::Task, dir: &Directory, mailboxes: &'m [Mailbox]) -> Option<&'m Mailbox> {
    let created_by = t.extra.get("createdBy").and_then(Value::as_i64).and_then(|i| i32::try_from(i).ok());
    let users = created_by.into_iter().chain(t.resource_to_tasks.iter().flatten().filter_map(|a| a.user_id));
    for u in users.filter(|u| *u > 0) {
        let email = dir.users.iter().find(|x| x.id == u).and_then(|x| x.e_mail_work.as_deref()).map(lower);
        let found = mailboxes.iter().find(|m| {
            m.hq_user_id.as_deref() == Some(u.to_string().as_str())
                || email.as_deref().is_some_and(|e| m.id.as_str().eq_ignore_ascii_case(e))
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// A helloHQ appointment as read: the row and its canonical record.
#[derive(Debug, Clone)]
pub struct HqAppointment {
    pub task: wire::Task,
    pub appt: Appointment,
    /// The row's `recurrencyStorage` when hqsync cannot read it (issue 18
    /// item 6): `appt` then has no recurrence, and the series' pattern is
    /// left alone on both sides.
    pub held: Option<Held>,
}

/// Whether moving a series from `from` to `to` keeps it on the same day
/// (in the series' zone `tz`) and of the same kind: then its pattern, which
/// hqsync may not be able to read, still fits.
fn same_series_day(from: &When, to: &When, tz: chrono_tz::Tz) -> bool {
    match (from, to) {
        (When::Timed { start: a, .. }, When::Timed { start: b, .. }) => {
            a.with_timezone(&tz).date_naive() == b.with_timezone(&tz).date_naive()
        }
        (When::AllDay { start: a, .. }, When::AllDay { start: b, .. }) => a == b,
        _ => false,
    }
}

/// One tenant's appointment sync, for the duration of one hint.
pub struct Appointments<'a> {
    pub store: &'a Store,
    pub tenant: &'a TenantId,
    pub settings: &'a TenantSettings,
    pub graph: &'a GraphClient,
    pub hq: &'a HellohqClient,
    pub hint_id: Option<uuid::Uuid>,
}

impl<'a> Appointments<'a> {
    async fn journal(
        &self,
        mailbox: Option<&MailboxId>,
        action: &str,
        hq_id: Option<String>,
        graph_id: Option<String>,
        detail: Value,
    ) {
        let j = super::shared::Journal {
            store: self.store,
            tenant: self.tenant,
            kind: Kind::Appointment,
            hint_id: self.hint_id,
        };
        j.record(mailbox, action, hq_id, graph_id, detail).await
    }

    /// Journals a held `recurrencyStorage` (issue 18 item 6) with its value
    /// (cut at [`crate::model::appointment::HELD_VALUE_SHOWN`] characters),
    /// once per value and row.
    async fn journal_held(
        &self,
        mailbox: Option<&MailboxId>,
        hq: &HqAppointment,
        h: &Held,
        reason: String,
    ) -> Result<(), EngineError> {
        let id = hq.task.id.to_string();
        let seen = fingerprint_of(&h.value);
        if self.store.get_cursor(self.tenant, HELD_SCOPE, &id).await?.as_deref() == Some(seen.as_str()) {
            return Ok(());
        }
        let detail = json!({"side": "both", "summary": summary(&hq.appt), "field": h.field, "value": h.shown(),
            "length": h.value.chars().count(), "parse_error": h.reason, "reason": reason});
        self.journal(mailbox, "held", Some(id.clone()), None, detail).await;
        self.store.set_cursor(self.tenant, HELD_SCOPE, &id, &seen).await?;
        Ok(())
    }

    async fn mailboxes(&self) -> Result<Vec<Mailbox>, EngineError> {
        super::shared::syncing_mailboxes(self.store, self.tenant, self.graph).await
    }

    fn window(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let s = &self.settings.appointments;
        let day = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        (day - Duration::days(s.window_past_days), day + Duration::days(s.window_future_days))
    }

    /// Users, contacts and rooms for this hint: contacts from the tenant's
    /// cache (listed once, kept current by the change poll's hints), rooms
    /// as seen in task assignments (no endpoint lists them, C5).
    pub async fn people(&self, dir: &Directory) -> Result<People, EngineError> {
        let contacts: Vec<ContactPerson> = self.hq.contact_persons().await.map_err(hq_err)?;
        let rooms = self.hq.known_rooms();
        Ok(People::new(dir, &contacts, &rooms, self.settings))
    }

    fn tz_default(&self) -> String {
        timezone::to_iana(&self.settings.appointments.time_zone).unwrap_or("Europe/Berlin").to_string()
    }

    // ---- reading -------------------------------------------------------------------

    async fn read_hq(&self, id: i32) -> Result<Option<wire::Task>, EngineError> {
        match self.hq.get_task(id).await {
            Ok(t) => Ok(Some(t)),
            Err(HqError::NotFound { .. }) => Ok(None),
            Err(e) => Err(hq_err(e)),
        }
    }

    async fn read_graph(&self, mailbox: &str, id: &str) -> Result<Option<Value>, EngineError> {
        match self.graph.get_event(mailbox, id).await {
            Ok(v) => Ok(Some(v)),
            Err(GraphError::NotFound { .. }) => Ok(None),
            Err(e) => Err(graph_err(e)),
        }
    }

    /// The canonical record of an Exchange event. A series master gets its
    /// cancelled dates by comparing the pattern with its instances (Graph
    /// v1.0 lists none, GRAPH.md §6.1), up to the end of the window.
    async fn graph_appt(&self, mailbox: &str, ev: &Value) -> Result<Result<Appointment, ConvertError>, EngineError> {
        let mut a = match Appointment::from_graph(ev) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        if let (Some(r), Some(id)) = (a.recurrence.as_mut(), str_of(ev, "id")) {
            let (_, end) = self.window();
            let first = r.instant_on(r.start.date());
            let instances = self.graph.event_instances(mailbox, id, first, end).await.map_err(graph_err)?;
            let seen: HashSet<DateTime<Utc>> =
                instances.iter().filter_map(|i| graph_time(i, "originalStart")).collect();
            r.exdates = r.occurrences(first, end).into_iter().filter(|t| !seen.contains(t)).collect();
        }
        Ok(Ok(a))
    }

    /// The occurrence of series `master` that originally started at `at`.
    async fn occurrence_id(
        &self,
        mailbox: &str,
        master: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, EngineError> {
        let list = self
            .graph
            .event_instances(mailbox, master, at - Duration::days(1), at + Duration::days(2))
            .await
            .map_err(graph_err)?;
        Ok(list
            .iter()
            .find(|i| graph_time(i, "originalStart") == Some(at))
            .and_then(|i| str_of(i, "id"))
            .map(str::to_string))
    }

    // ---- links ---------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    async fn save_link(
        &self,
        m: &Mailbox,
        hq_id: i32,
        graph_id: Option<&str>,
        role: &str,
        base: &Map<String, Value>,
        hq_fp: Option<String>,
        graph_fp: Option<String>,
        graph_version: Option<String>,
    ) -> Result<(), EngineError> {
        self.store
            .upsert_link(&Link {
                tenant: self.tenant.clone(),
                mailbox: m.id.clone(),
                kind: Kind::Appointment,
                hq_id: Some(hq_id.to_string()),
                graph_id: graph_id.map(str::to_string),
                folder: Some(role.into()),
                base: Value::Object(base.clone()),
                hq_fingerprint: hq_fp,
                graph_fingerprint: graph_fp,
                hq_version: None,
                graph_version,
                state: LINKED.into(),
                updated_at: Utc::now(),
            })
            .await?;
        Ok(())
    }

    async fn index_ical(&self, uid: Option<&str>, hq_id: i32) -> Result<(), EngineError> {
        if let Some(uid) = uid.filter(|u| !u.is_empty()) {
            self.store.set_cursor(self.tenant, ICAL_SCOPE, uid, &hq_id.to_string()).await?;
        }
        Ok(())
    }

    async fn hq_of_ical(&self, uid: Option<&str>) -> Result<Option<i32>, EngineError> {
        let Some(uid) = uid.filter(|u| !u.is_empty()) else { return Ok(None) };
        Ok(self.store.get_cursor(self.tenant, ICAL_SCOPE, uid).await?.and_then(|v| v.parse().ok()))
    }

    async fn drop_link(&self, m: &MailboxId, l: &Link) -> Result<(), EngineError> {
        self.store.delete_link(self.tenant, m, Kind::Appointment, l.hq_id.as_deref(), l.graph_id.as_deref()).await?;
        Ok(())
    }

    // ---- helloHQ → Exchange ------------------------------------------------------------

    /// A helloHQ task row changed (or was deleted). Returns `Ok(false)` when
    /// the row is not an appointment (nor an absence) and has no appointment
    /// links: a plain task, someone else's business.
    pub async fn on_hq_appointment(&self, dir: &Directory, id: i32) -> Result<bool, EngineError> {
        let links = self.store.links_of_hq(self.tenant, Kind::Appointment, &id.to_string()).await?;
        let Some(task) = self.read_hq(id).await? else {
            if links.is_empty() {
                return Ok(false);
            }
            self.hq_deleted(id, &links, "deleted in helloHQ").await?;
            return Ok(true);
        };
        if !is_ours(&task) {
            return Ok(!links.is_empty());
        }
        let people = self.people(dir).await?;
        let mailboxes = self.mailboxes().await?;
        self.settle_hq(dir, &people, &mailboxes, &task, links, None, &mut None).await?;
        Ok(true)
    }

    /// Deleted in helloHQ: the organizer's event is deleted (Exchange sends
    /// the cancellations); attendee and invitee copies are only unlinked.
    async fn hq_deleted(&self, id: i32, links: &[Link], reason: &str) -> Result<(), EngineError> {
        let all = self.mailboxes().await?;
        for l in links {
            let m = all.iter().find(|m| m.id == l.mailbox);
            let to_ex = m.is_some_and(|m| {
                matches!(self.settings.direction(m, Kind::Appointment), Direction::Both | Direction::ToExchange)
            });
            if let (Some(ORGANIZER), Some(gid), true) = (l.folder.as_deref(), l.graph_id.as_deref(), to_ex) {
                match self.graph.delete_event(l.mailbox.as_str(), gid, None).await {
                    Ok(()) | Err(GraphError::NotFound { .. }) => {}
                    Err(e) => return Err(graph_err(e)),
                }
                self.journal(
                    Some(&l.mailbox),
                    "deleted",
                    Some(id.to_string()),
                    Some(gid.to_string()),
                    json!({"side": "exchange", "summary": format!("appointment #{id}"), "reason": reason}),
                )
                .await;
            }
            self.drop_link(&l.mailbox, l).await?;
        }
        Ok(())
    }

    /// Brings one helloHQ row in step with its organizer's event. `ev` is the
    /// organizer's event when already read.
    #[allow(clippy::too_many_arguments)]
    async fn settle_hq(
        &self,
        dir: &Directory,
        people: &People,
        mailboxes: &[Mailbox],
        task: &wire::Task,
        links: Vec<Link>,
        ev: Option<Value>,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let id = task.id;
        if let Some(reason) = not_synced(task) {
            if plan.is_none() && links.is_empty() {
                let name = task.name.clone().unwrap_or_default();
                self.journal(
                    None,
                    "skipped",
                    Some(id.to_string()),
                    None,
                    json!({"side": "exchange", "summary": format!("appointment {name}"), "reason": reason}),
                )
                .await;
            }
            return Ok(());
        }
        if is_exception(task) {
            return self.exception_changed(people, mailboxes, task, plan).await;
        }
        let (appt, held) = match Appointment::from_hq_holding(task, people) {
            Ok(a) => a,
            Err(e) => {
                if plan.is_none() {
                    let name = task.name.clone().unwrap_or_default();
                    self.journal(
                        None,
                        "skipped",
                        Some(id.to_string()),
                        None,
                        json!({"side": "exchange", "summary": format!("appointment {name}"), "reason": e.to_string()}),
                    )
                    .await;
                }
                return Ok(());
            }
        };
        let hq = HqAppointment { task: task.clone(), appt, held };
        let org_link = links.iter().find(|l| l.folder.as_deref() == Some(ORGANIZER)).cloned();
        if let Some(h) = &hq.held {
            // A series is never created from a pattern hqsync cannot read.
            let in_exchange = links.iter().any(|l| l.state == LINKED && l.graph_id.is_some());
            if plan.is_none() {
                let reason = if in_exchange {
                    HELD_PATTERN.to_string()
                } else {
                    format!("{HELD_PATTERN}. Not created in Exchange: a series cannot be written without its pattern")
                };
                self.journal_held(None, &hq, h, reason).await?;
            }
            if !org_link.as_ref().is_some_and(|l| l.state == LINKED && l.graph_id.is_some()) {
                return Ok(());
            }
        }
        let m = match &org_link {
            Some(l) => mailboxes.iter().find(|m| m.id == l.mailbox),
            // Copies without an organizer here: a new event elsewhere would
            // be a second meeting in the attendees' calendars.
            None if !links.is_empty() => None,
            None => organizer_of(task, dir, mailboxes),
        };
        let Some(m) = m else {
            if links.iter().any(|l| l.folder.as_deref() == Some(INVITEE)) && plan.is_none() {
                self.journal(None, "skipped", Some(id.to_string()), None, json!({"side": "exchange", "summary": summary(&hq.appt), "reason": "the meeting is organised outside this tenant; only its organizer can change it in Exchange"})).await;
            }
            return Ok(());
        };
        let direction = self.settings.direction(m, Kind::Appointment);
        let to_ex = matches!(direction, Direction::Both | Direction::ToExchange);
        match org_link {
            Some(l) if l.state == LINKED && l.graph_id.is_some() => {
                self.update_pair(people, m, &hq, &l, ev, direction, plan).await
            }
            _ => {
                if !to_ex {
                    return Ok(());
                }
                if let Some(p) = plan.as_deref_mut() {
                    p.create_in_exchange.push(summary(&hq.appt));
                    return Ok(());
                }
                self.create_in_exchange(people, m, &hq).await
            }
        }
    }

    /// Creates the meeting in the organizer's calendar (idempotent through
    /// `transactionId`), then cancels the series' EXDATEs there.
    async fn create_in_exchange(&self, people: &People, m: &Mailbox, hq: &HqAppointment) -> Result<(), EngineError> {
        super::no_create_in_flight(self.store, self.tenant, &m.id, Kind::Appointment).await?;
        let id = hq.task.id;
        // A pass's list can be older than a deletion made since (reading each
        // row's assignments takes a while): the row is confirmed first.
        if self.read_hq(id).await?.is_none() {
            return Ok(());
        }
        let (_, window_end) = self.window();
        // Pending first, claimed atomically: a crash after the POST replays
        // with the same transactionId, and a link completed meanwhile (by a
        // worker that read later than this one) is left alone.
        let claim = super::claim_create(
            self.store,
            &Link {
                tenant: self.tenant.clone(),
                mailbox: m.id.clone(),
                kind: Kind::Appointment,
                hq_id: Some(id.to_string()),
                graph_id: None,
                folder: Some(ORGANIZER.into()),
                base: json!({}),
                hq_fingerprint: None,
                graph_fingerprint: None,
                hq_version: None,
                graph_version: None,
                state: PENDING.into(),
                updated_at: Utc::now(),
            },
            self.hint_id,
        )
        .await?;
        if let super::Claim::Done(l) = &claim {
            // Linked by another worker meanwhile, maybe from an older read
            // than this one: merged into, not taken as synced.
            if l.state != LINKED || l.graph_id.is_none() {
                return Err(super::linked_meanwhile("the organizer's event of this appointment"));
            }
            let direction = self.settings.direction(m, Kind::Appointment);
            return Box::pin(self.update_pair(people, m, hq, l, None, direction, &mut None)).await;
        }
        // Every event hqsync creates carries its helloHQ id as a
        // single-value extended property. An unfinished claim (its holder
        // failed or crashed, maybe after the POST) first looks for the
        // tagged event; a live claim of another worker is waited for.
        // `transactionId` stays as a second guard: Graph documents it only
        // against a client's retry of the same POST.
        let found = match claim {
            super::Claim::Mine => None,
            super::Claim::Busy => return Err(super::busy("the organizer's event of this appointment")),
            super::Claim::Stale(_) | super::Claim::Done(_) => self.find_tagged_event(m, id).await?,
        };
        let created = match found {
            Some(ev) => ev,
            None => {
                let mut body = self.exchange_body(&hq.appt, m, &[]);
                body["singleValueExtendedProperties"] =
                    json!([{"id": contact::HQ_ID_PROPERTY_ID, "value": id.to_string()}]);
                self.graph
                    .create_event(m.id.as_str(), &body, &transaction_id(self.tenant, id))
                    .await
                    .map_err(graph_err)?
            }
        };
        let gid = str_of(&created, "id").unwrap_or_default().to_string();
        if let Some(r) = &hq.appt.recurrence {
            for d in r.exdates.iter().filter(|d| **d < window_end) {
                if let Some(occ) = self.occurrence_id(m.id.as_str(), &gid, *d).await? {
                    match self.graph.delete_event(m.id.as_str(), &occ, None).await {
                        Ok(()) | Err(GraphError::NotFound { .. }) => {}
                        Err(e) => return Err(graph_err(e)),
                    }
                }
            }
        }
        let uid = str_of(&created, "iCalUId").map(str::to_string);
        let hq_fields = fields(&hq.appt, people, Some(m.id.as_str()), window_end);
        let ex_fields = match self.graph_appt(m.id.as_str(), &created).await? {
            Ok(a) => fields(&a, people, Some(m.id.as_str()), window_end),
            Err(_) => hq_fields.clone(),
        };
        self.index_ical(uid.as_deref(), id).await?;
        // The same transactionId answers with the event an earlier attempt
        // (or a twin hint) created from an older read: linked as what it
        // holds, then merged, so helloHQ's newer values reach it instead of
        // passing for synced.
        let older = ex_fields != hq_fields;
        let mut base = if older { ex_fields.clone() } else { hq_fields.clone() };
        base.insert("ical_uid".into(), json!(uid));
        self.save_link(
            m,
            id,
            Some(&gid),
            ORGANIZER,
            &base,
            (!older).then(|| fingerprint(&hq_fields)),
            Some(fingerprint(&ex_fields)),
            graph_version(&created),
        )
        .await?;
        if older {
            if let Some(l) = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Appointment, &id.to_string()).await? {
                let direction = self.settings.direction(m, Kind::Appointment);
                self.update_pair(people, m, hq, &l, None, direction, &mut None).await?;
            }
        }
        self.journal(
            Some(&m.id),
            "created",
            Some(id.to_string()),
            Some(gid),
            json!({"side": "exchange", "summary": summary(&hq.appt), "organizer": m.id.as_str()}),
        )
        .await;
        Ok(())
    }

    /// The event of `m` tagged with helloHQ id `hq_id` (the extended
    /// property every event hqsync creates carries), found with the
    /// `$filter` Graph documents for extended properties.
    async fn find_tagged_event(&self, m: &Mailbox, hq_id: i32) -> Result<Option<Value>, EngineError> {
        let prop = contact::HQ_ID_PROPERTY_ID.replace(' ', "%20").replace('{', "%7B").replace('}', "%7D");
        let path = format!(
            "/users/{}/events?$filter=singleValueExtendedProperties/any(ep:%20ep/id%20eq%20'{prop}'%20and%20ep/value%20eq%20'{hq_id}')",
            seg(m.id.as_str())
        );
        let found = self.graph.list_all(&path).await.map_err(graph_err)?;
        Ok(found.into_iter().next())
    }

    /// The Graph body for `a` written from `organizer`'s mailbox: the
    /// organizer is not an attendee of their own meeting; `keep` are
    /// attendees helloHQ cannot hold that stay on the Exchange side.
    fn exchange_body(&self, a: &Appointment, organizer: &Mailbox, keep: &[Value]) -> Value {
        let mut a = a.clone();
        // Single instances are shown in the tenant's zone; a series keeps its own.
        if a.recurrence.is_none() {
            a.time_zone = self.tz_default();
        }
        a.attendees.retain(|x| !x.email.eq_ignore_ascii_case(organizer.id.as_str()));
        let mut body = a.to_graph();
        if let Some(list) = body.get_mut("attendees").and_then(Value::as_array_mut) {
            list.extend(keep.iter().cloned());
        }
        body
    }

    /// Both sides exist and are linked (organizer or invitee role): merge
    /// against the base, write only what changed where it may go.
    #[allow(clippy::too_many_arguments)]
    async fn update_pair(
        &self,
        people: &People,
        m: &Mailbox,
        hq: &HqAppointment,
        l: &Link,
        ev: Option<Value>,
        direction: Direction,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        if plan.is_none() && super::newer_than_reads(l) {
            // Merged by another worker since this hint read the sides: the
            // link first, then both sides again, so the base is never newer.
            let id = hq.task.id.to_string();
            let fresh = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Appointment, &id).await?;
            let Some(fresh) = fresh.filter(|f| f.state == LINKED && f.graph_id.is_some() && f.folder == l.folder)
            else {
                return Err(super::relinked_meanwhile());
            };
            let Some(task) = self.read_hq(hq.task.id).await? else {
                return Ok(()); // deleted in helloHQ meanwhile: its hint follows
            };
            let Ok((appt, held)) = Appointment::from_hq_holding(&task, people) else {
                return Ok(()); // no longer an appointment hqsync can hold: its hint journals why
            };
            let hq = HqAppointment { task, appt, held };
            // Read, not skipped when helloHQ is unchanged: the edit this
            // hint may carry is newer than that link.
            let gid = fresh.graph_id.clone().unwrap_or_default();
            let Some(ev) = self.read_graph(m.id.as_str(), &gid).await? else {
                return Ok(()); // deleted in Exchange meanwhile: its own hint decides
            };
            return self.merge_linked(people, m, &hq, &fresh, Some(ev), direction, plan).await;
        }
        self.merge_linked(people, m, hq, l, ev, direction, plan).await
    }

    /// [`Appointments::update_pair`] on reads no older than the link's base.
    #[allow(clippy::too_many_arguments)]
    async fn merge_linked(
        &self,
        people: &People,
        m: &Mailbox,
        hq: &HqAppointment,
        l: &Link,
        ev: Option<Value>,
        direction: Direction,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let (_, window_end) = self.window();
        let role = l.folder.as_deref().unwrap_or(ORGANIZER);
        let organizer = (role == ORGANIZER).then_some(m.id.as_str());
        let hq_fields = fields(&hq.appt, people, organizer, window_end);
        let hq_fp = fingerprint(&hq_fields);
        let gid = l.graph_id.clone().unwrap_or_default();
        if ev.is_none() && l.hq_fingerprint.as_deref() == Some(hq_fp.as_str()) {
            if let Some(p) = plan.as_deref_mut() {
                p.unchanged += 1;
            }
            return Ok(());
        }
        let ev = match ev {
            Some(e) => e,
            None => match self.read_graph(m.id.as_str(), &gid).await? {
                Some(e) => e,
                None => return Ok(()), // deleted in Exchange: its own hint decides
            },
        };
        let ex_appt = match self.graph_appt(m.id.as_str(), &ev).await? {
            Ok(a) => a,
            Err(e) => {
                if plan.is_none() {
                    self.journal(
                        Some(&m.id),
                        "skipped",
                        Some(hq.task.id.to_string()),
                        Some(gid),
                        json!({"side": "hellohq", "summary": summary(&hq.appt), "reason": e.to_string()}),
                    )
                    .await;
                }
                return Ok(());
            }
        };
        let ex_fields = fields(&ex_appt, people, organizer, window_end);
        let ex_fp = fingerprint(&ex_fields);
        if l.hq_fingerprint.as_deref() == Some(hq_fp.as_str()) && l.graph_fingerprint.as_deref() == Some(ex_fp.as_str())
        {
            if let Some(p) = plan.as_deref_mut() {
                p.unchanged += 1;
            }
            return Ok(());
        }
        let base = l.base.as_object().filter(|b| b.contains_key("when")).cloned();
        let newer = match (hq.task.updated_on, graph_time(&ev, "lastModifiedDateTime")) {
            (Some(a), Some(b)) if b > a => Side::Exchange,
            _ => Side::Hellohq,
        };
        // An invitee copy belongs to an outside organizer: nothing is written to it.
        let direction = if role == INVITEE {
            match direction {
                Direction::Both | Direction::ToHellohq => Direction::ToHellohq,
                _ => Direction::Off,
            }
        } else {
            direction
        };
        // A held pattern (issue 18 item 6) takes no part: neither side's series is changed from it.
        let rules: Vec<FieldRule> =
            RULES.iter().filter(|r| hq.held.is_none() || r.name != "recurrence").copied().collect();
        let mut result = merge::merge(base.as_ref(), Some(&hq_fields), Some(&ex_fields), &rules, direction, newer);
        let mut held_notes: Vec<(Side, &str, &str)> = Vec::new();
        if hq.held.is_some() {
            self.hold_series(&mut result, base.as_ref(), hq, &ex_appt, &mut held_notes);
            let ex_changed = l.graph_fingerprint.as_deref() != Some(ex_fp.as_str());
            let ex_pattern = ex_fields.get("recurrence");
            if ex_changed && base.as_ref().is_some_and(|b| b.get("recurrence") != ex_pattern) {
                held_notes.push((Side::Exchange, "recurrence", "the series' pattern changed in Outlook; helloHQ holds a pattern hqsync cannot read (recurrencyStorage), so the change is not written over it"));
            }
            let hq_changed = l.hq_fingerprint.as_deref() != Some(hq_fp.as_str());
            held_notes.retain(|(from, field, _)| {
                *field == "recurrence" || if *from == Side::Hellohq { hq_changed } else { ex_changed }
            });
        }
        // SPEC §3: an Outlook edit of subject or body is not taken; helloHQ's
        // value goes back with the next helloHQ-side write (not on its own,
        // which would mail every attendee for nothing).
        if !result.to_exchange.is_empty() {
            for b in result.blocked.iter().filter(|b| b.from == Side::Exchange) {
                let owned = RULES.iter().any(|r| r.name == b.field && r.flow == Flow::FromHellohq);
                if owned && !result.to_exchange.contains(&b.field) {
                    match hq_fields.get(&b.field) {
                        Some(v) => result.merged.insert(b.field.clone(), v.clone()),
                        None => result.merged.remove(&b.field),
                    };
                    result.to_exchange.push(b.field.clone());
                }
            }
        }
        if let Some(p) = plan.as_deref_mut() {
            p.record_merge(&summary(&hq.appt), &result);
            return Ok(());
        }
        // Held until the link is saved (dropped on every way out).
        let _pair = super::lock_pair_to_write(self.store, l, &result).await?;
        for (from, field, reason) in &held_notes {
            let side = if *from == Side::Hellohq { "exchange" } else { "hellohq" };
            self.journal(
                Some(&m.id),
                "held",
                Some(hq.task.id.to_string()),
                Some(gid.clone()),
                json!({"side": side, "summary": summary(&hq.appt), "field": field, "reason": reason}),
            )
            .await;
        }
        for c in &result.conflicts {
            self.journal(Some(&m.id), "conflict", Some(hq.task.id.to_string()), Some(gid.clone()), json!({"side": "both", "summary": summary(&hq.appt), "field": c.field, "hellohq": c.hellohq, "exchange": c.exchange, "winner": c.winner})).await;
        }
        for b in
            result.blocked.iter().filter(|b| b.from == Side::Exchange && (b.field == "subject" || b.field == "body"))
        {
            self.journal(Some(&m.id), "skipped", Some(hq.task.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": summary(&hq.appt), "field": b.field, "reason": "subject and body flow only from helloHQ (SPEC §3); helloHQ's value is written back with its next change"})).await;
        }
        let mut hq_after = hq_fields.clone();
        if !result.to_hellohq.is_empty() {
            let written = self.write_hq(people, m, role, hq, &ex_appt, &result.to_hellohq).await?;
            hq_after = fields(&written, people, organizer, window_end);
            self.journal(Some(&m.id), "updated", Some(hq.task.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": summary(&hq.appt), "fields": result.to_hellohq, "from": m.id.as_str()})).await;
        }
        let mut ex_after = ex_fields.clone();
        let mut version = graph_version(&ev);
        if !result.to_exchange.is_empty() {
            version = self.write_exchange(people, m, hq, &ev, &ex_appt, &result.to_exchange).await?.or(version);
            ex_after = merge::apply(&ex_fields, &result, &result.to_exchange);
            self.journal(
                Some(&m.id),
                "updated",
                Some(hq.task.id.to_string()),
                Some(gid.clone()),
                json!({"side": "exchange", "summary": summary(&hq.appt), "fields": result.to_exchange}),
            )
            .await;
        }
        let mut new_base = result.merged.clone();
        new_base.insert("ical_uid".into(), json!(ex_appt.ical_uid));
        self.save_link(
            m,
            hq.task.id,
            Some(&gid),
            role,
            &new_base,
            Some(fingerprint(&hq_after)),
            Some(fingerprint(&ex_after)),
            version,
        )
        .await
    }

    /// A held series (issue 18 item 6) in a merge: its pattern keeps the
    /// last synchronised value in the base (so a readable value later is
    /// merged against it), and a time change flows only when it keeps the
    /// series on its day; a move to another day stays where it was made
    /// (base unchanged), noted in `notes` as (the side it came from, field, why).
    fn hold_series(
        &self,
        result: &mut merge::Merge,
        base: Option<&Map<String, Value>>,
        hq: &HqAppointment,
        ex: &Appointment,
        notes: &mut Vec<(Side, &'static str, &'static str)>,
    ) {
        match base.and_then(|b| b.get("recurrence")) {
            Some(r) => result.merged.insert("recurrence".into(), r.clone()),
            None => result.merged.remove("recurrence"),
        };
        let tz = timezone::to_tz(&ex.time_zone).unwrap_or(chrono_tz::UTC);
        let moves = [
            (
                Side::Hellohq,
                result.to_exchange.iter().any(|f| f == "when") && !same_series_day(&ex.when, &hq.appt.when, tz),
            ),
            (
                Side::Exchange,
                result.to_hellohq.iter().any(|f| f == "when") && !same_series_day(&hq.appt.when, &ex.when, tz),
            ),
        ];
        for (from, blocked) in moves {
            if !blocked {
                continue;
            }
            result.to_exchange.retain(|f| f != "when");
            result.to_hellohq.retain(|f| f != "when");
            result.conflicts.retain(|c| c.field != "when");
            match base.and_then(|b| b.get("when")) {
                Some(w) => result.merged.insert("when".into(), w.clone()),
                None => result.merged.remove("when"),
            };
            notes.push((from, "when", HELD_DAY));
        }
    }

    /// Writes `changed` fields of the helloHQ side into the organizer's
    /// event (one PATCH, `If-Match`), then cancels newly cancelled dates.
    async fn write_exchange(
        &self,
        people: &People,
        m: &Mailbox,
        hq: &HqAppointment,
        ev: &Value,
        ex_appt: &Appointment,
        changed: &[String],
    ) -> Result<Option<String>, EngineError> {
        let gid = str_of(ev, "id").unwrap_or_default().to_string();
        // Attendees helloHQ cannot hold stay as Exchange has them.
        let keep: Vec<Value> = ev
            .get("attendees")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| {
                let email = a["emailAddress"]["address"].as_str().unwrap_or_default();
                let name = a["emailAddress"]["name"].as_str().unwrap_or_default();
                let kind = if a["type"] == "resource" { AttendeeKind::Resource } else { AttendeeKind::Required };
                people.key(email, name, kind).is_none()
            })
            .map(|a| json!({"type": a["type"], "emailAddress": a["emailAddress"]}))
            .collect();
        // A held series is written in its own zone, its pattern as Exchange has it (never patched from helloHQ).
        let full = if hq.held.is_some() {
            let mut a = hq.appt.clone();
            a.recurrence = ex_appt.recurrence.clone();
            a.time_zone = ex_appt.time_zone.clone();
            self.exchange_body(&a, m, &keep)
        } else {
            self.exchange_body(&hq.appt, m, &keep)
        };
        let mut patch = Map::new();
        let pattern_changed = hq.appt.recurrence.as_ref().map(|r| (&r.pattern, r.interval, r.start, r.end))
            != ex_appt.recurrence.as_ref().map(|r| (&r.pattern, r.interval, r.start, r.end));
        for f in changed {
            if f == "recurrence" && !pattern_changed {
                continue; // only cancelled dates differ: handled below
            }
            for k in graph_members(f) {
                patch.insert((*k).to_string(), full.get(*k).cloned().unwrap_or(Value::Null));
            }
        }
        let mut version = None;
        if !patch.is_empty() {
            let out = match self
                .graph
                .update_event(m.id.as_str(), &gid, &Value::Object(patch), graph_version(ev).as_deref())
                .await
            {
                Ok(v) => v,
                Err(GraphError::Conflict { .. }) => {
                    return Err(EngineError::Waiting("Exchange event changed during the merge".into()))
                }
                Err(GraphError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(graph_err(e)),
            };
            version = graph_version(&out);
        }
        if changed.iter().any(|f| f == "recurrence") {
            let (_, window_end) = self.window();
            let had: HashSet<DateTime<Utc>> =
                ex_appt.recurrence.iter().flat_map(|r| r.exdates.iter().copied()).collect();
            for d in hq
                .appt
                .recurrence
                .iter()
                .flat_map(|r| r.exdates.iter())
                .filter(|d| **d < window_end && !had.contains(d))
            {
                if let Some(occ) = self.occurrence_id(m.id.as_str(), &gid, *d).await? {
                    match self.graph.delete_event(m.id.as_str(), &occ, None).await {
                        Ok(()) | Err(GraphError::NotFound { .. }) => {}
                        Err(e) => return Err(graph_err(e)),
                    }
                }
            }
        }
        Ok(version)
    }

    /// Writes `changed` fields of the Exchange side into the helloHQ row
    /// (read-modify-write) and returns the record helloHQ now holds.
    async fn write_hq(
        &self,
        people: &People,
        m: &Mailbox,
        role: &str,
        hq: &HqAppointment,
        ex: &Appointment,
        changed: &[String],
    ) -> Result<Appointment, EngineError> {
        let (_, window_end) = self.window();
        let mut next = hq.appt.clone();
        for f in changed {
            match f.as_str() {
                "location" => next.location = ex.location.clone(),
                "when" => next.when = ex.when,
                "is_private" => next.is_private = ex.is_private,
                "attendees" => {
                    next.attendees = ex.attendees.clone();
                    if role == ORGANIZER {
                        next.attendees.push(crate::model::appointment::Attendee {
                            email: m.id.as_str().to_lowercase(),
                            name: String::new(),
                            kind: AttendeeKind::Required,
                        });
                    }
                }
                "recurrence" => {
                    // Exchange knows cancelled dates only inside the window; later ones stay.
                    let later: Vec<DateTime<Utc>> = hq
                        .appt
                        .recurrence
                        .iter()
                        .flat_map(|r| r.exdates.iter().copied())
                        .filter(|d| *d >= window_end)
                        .collect();
                    next.recurrence = ex.recurrence.clone().map(|mut r| {
                        r.exdates.extend(later);
                        r.exdates.sort();
                        r.exdates.dedup();
                        r
                    });
                    next.time_zone = ex.time_zone.clone();
                }
                _ => {}
            }
        }
        if let Err(e) = next.recurrence.as_ref().map(|r| r.validate()).transpose() {
            self.journal(
                Some(&m.id),
                "skipped",
                Some(hq.task.id.to_string()),
                None,
                json!({"side": "hellohq", "summary": summary(&hq.appt), "reason": e.to_string()}),
            )
            .await;
            return Ok(hq.appt.clone());
        }
        let target = next.clone();
        // A held recurrencyStorage (and the row's series type) is written back exactly as helloHQ has it.
        let keep_pattern = hq.held.is_some();
        let written = self
            .hq
            .update_task_if(hq.task.id, hq.task.updated_on, move |cur| {
                *cur = if keep_pattern {
                    target.to_hq_keeping_recurrence(Some(cur), people)
                } else {
                    target.to_hq(Some(cur), people)
                }
            })
            .await
            .map_err(hq_err)?;
        Ok(Appointment::from_hq_holding(&written, people).map(|(a, _)| a).unwrap_or(next))
    }

    // ---- modified occurrences (C6) ----------------------------------------------------

    /// An exception row changed in helloHQ: its series' exceptions are
    /// brought in step in the organizer's calendar.
    async fn exception_changed(
        &self,
        people: &People,
        mailboxes: &[Mailbox],
        task: &wire::Task,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let Some(parent) = task.parent_id else { return Ok(()) };
        let links = self.store.links_of_hq(self.tenant, Kind::Appointment, &parent.to_string()).await?;
        let Some(l) = links.into_iter().find(|l| l.folder.as_deref() == Some(ORGANIZER) && l.state == LINKED) else {
            return Ok(()); // the series is not in Exchange (yet): its own sync brings this along
        };
        if !mailboxes.iter().any(|m| m.id == l.mailbox) {
            return Ok(());
        }
        let Some(series) = self.read_hq(parent).await? else { return Ok(()) };
        let Some(m) = mailboxes.iter().find(|m| m.id == l.mailbox) else { return Ok(()) };
        self.sync_exceptions(people, m, &series, &l, plan).await
    }

    /// Pairs the series' exception rows with its occurrences in the
    /// organizer's calendar by original start, and settles each pair; an
    /// exception made in Exchange without a row becomes one.
    async fn sync_exceptions(
        &self,
        people: &People,
        m: &Mailbox,
        series: &wire::Task,
        series_link: &Link,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let Some(gid) = series_link.graph_id.as_deref() else { return Ok(()) };
        let Some(first) = series.start_on.or(series.start_date.map(|d| d.and_utc())) else { return Ok(()) };
        let (_, end) = self.window();
        let instances =
            self.graph.event_instances(m.id.as_str(), gid, first - Duration::days(1), end).await.map_err(graph_err)?;
        let by_orig: HashMap<DateTime<Utc>, &Value> =
            instances.iter().filter_map(|i| graph_time(i, "originalStart").map(|o| (o, i))).collect();
        let q = ListQuery::filter(format!("parentId eq {}", series.id));
        let rows: Vec<wire::Task> = self.hq.list_tasks(&q).await.map_err(hq_err)?;
        // Checked here too: a filter the endpoint ignores lists every row.
        let rows: Vec<wire::Task> = rows.into_iter().filter(|r| r.parent_id == Some(series.id)).collect();
        let mut claimed: HashSet<DateTime<Utc>> = HashSet::new();
        for row in rows.iter().filter(|r| is_exception(r)) {
            let Some(orig) = row.original_start_on else { continue };
            claimed.insert(orig);
            // Cancelled (an EXDATE) or outside the window: nothing to pair with.
            let Some(inst) = by_orig.get(&orig) else { continue };
            let link = self.store.get_link_by_hq(self.tenant, &m.id, Kind::Appointment, &row.id.to_string()).await?;
            self.settle_exception(people, m, row, inst, link, plan).await?;
        }
        let direction = self.settings.direction(m, Kind::Appointment);
        if !matches!(direction, Direction::Both | Direction::ToHellohq) {
            return Ok(());
        }
        // A modified occurrence made in Exchange has no row to go to: the
        // field that would name its original start (`originalStartOn`, C6)
        // is in no spec, so hqsync does not write it (issue 18). It stays in
        // Exchange, journalled once per change of the occurrence.
        for (_, inst) in by_orig.iter().filter(|(o, i)| i["type"] == "exception" && !claimed.contains(*o)) {
            let Ok(ex) = Appointment::from_graph(inst) else { continue };
            if plan.is_some() {
                continue;
            }
            let occ = str_of(inst, "id").unwrap_or_default().to_string();
            if self.store.get_link_by_graph(self.tenant, &m.id, Kind::Appointment, &occ).await?.is_some() {
                continue;
            }
            self.journal(Some(&m.id), "skipped", Some(series.id.to_string()), Some(occ), json!({"side": "hellohq", "summary": format!("{} (modified occurrence)", summary(&ex)), "reason": "helloHQ has no published field for an occurrence's original start (originalStartOn is in no spec): the change stays in Exchange; change the series or the occurrence in helloHQ"})).await;
        }
        Ok(())
    }

    fn exception_fields(&self, a: &Appointment, people: &People) -> Map<String, Value> {
        let (_, end) = self.window();
        let mut f = fields(a, people, None, end);
        f.retain(|k, _| EXCEPTION_RULES.iter().any(|r| r.name == k));
        f
    }

    /// One exception row and its occurrence: merged on subject (from
    /// helloHQ), location and time; a write only where something differs.
    async fn settle_exception(
        &self,
        people: &People,
        m: &Mailbox,
        row: &wire::Task,
        inst: &Value,
        link: Option<Link>,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let Ok(hq_appt) = Appointment::from_hq(row, people) else { return Ok(()) };
        let Ok(ex_appt) = Appointment::from_graph(inst) else { return Ok(()) };
        let occ = str_of(inst, "id").unwrap_or_default().to_string();
        let (hq_f, ex_f) = (self.exception_fields(&hq_appt, people), self.exception_fields(&ex_appt, people));
        let (hq_fp, ex_fp) = (fingerprint(&hq_f), fingerprint(&ex_f));
        if let Some(l) = &link {
            if l.hq_fingerprint.as_deref() == Some(hq_fp.as_str())
                && l.graph_fingerprint.as_deref() == Some(ex_fp.as_str())
            {
                return Ok(());
            }
        }
        // An occurrence not yet modified in Exchange holds nothing of its own:
        // the row's values are the change (a first pairing with an Exchange
        // exception merges without a base, newer side first).
        let base = link
            .as_ref()
            .and_then(|l| l.base.as_object())
            .filter(|b| b.contains_key("when"))
            .cloned()
            .or_else(|| (inst["type"] == "occurrence").then(|| ex_f.clone()));
        let direction = self.settings.direction(m, Kind::Appointment);
        let newer = match (row.updated_on, graph_time(inst, "lastModifiedDateTime")) {
            (Some(a), Some(b)) if b > a => Side::Exchange,
            _ => Side::Hellohq,
        };
        let result = merge::merge(base.as_ref(), Some(&hq_f), Some(&ex_f), &EXCEPTION_RULES, direction, newer);
        if let Some(p) = plan.as_deref_mut() {
            if !result.to_exchange.is_empty() {
                p.update_exchange.push(format!(
                    "{} (modified occurrence): {}",
                    summary(&hq_appt),
                    result.to_exchange.join(", ")
                ));
            }
            if !result.to_hellohq.is_empty() {
                p.update_hellohq.push(format!(
                    "{} (modified occurrence): {}",
                    summary(&hq_appt),
                    result.to_hellohq.join(", ")
                ));
            }
            return Ok(());
        }
        let mut hq_after = hq_f.clone();
        if !result.to_hellohq.is_empty() {
            let mut next = hq_appt.clone();
            for f in &result.to_hellohq {
                match f.as_str() {
                    "location" => next.location = ex_appt.location.clone(),
                    "when" => next.when = ex_appt.when,
                    _ => {}
                }
            }
            let target = next.clone();
            let written = self
                .hq
                .update_task_if(row.id, row.updated_on, move |cur| *cur = target.to_hq(Some(cur), people))
                .await
                .map_err(hq_err)?;
            hq_after = self.exception_fields(&Appointment::from_hq(&written, people).unwrap_or(next), people);
            self.journal(Some(&m.id), "updated", Some(row.id.to_string()), Some(occ.clone()), json!({"side": "hellohq", "summary": format!("{} (modified occurrence)", summary(&hq_appt)), "fields": result.to_hellohq})).await;
        }
        let mut ex_after = ex_f.clone();
        let mut version = graph_version(inst);
        if !result.to_exchange.is_empty() {
            let full = self.exchange_body(&hq_appt, m, &[]);
            let mut patch = Map::new();
            for f in &result.to_exchange {
                for k in graph_members(f) {
                    patch.insert((*k).to_string(), full.get(*k).cloned().unwrap_or(Value::Null));
                }
            }
            let out = match self.graph.update_event(m.id.as_str(), &occ, &Value::Object(patch), None).await {
                Ok(v) => v,
                Err(GraphError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(graph_err(e)),
            };
            version = graph_version(&out);
            ex_after = merge::apply(&ex_f, &result, &result.to_exchange);
            self.journal(Some(&m.id), "updated", Some(row.id.to_string()), Some(occ.clone()), json!({"side": "exchange", "summary": format!("{} (modified occurrence)", summary(&hq_appt)), "fields": result.to_exchange})).await;
        }
        self.save_link(
            m,
            row.id,
            Some(&occ),
            EXCEPTION,
            &result.merged,
            Some(fingerprint(&hq_after)),
            Some(fingerprint(&ex_after)),
            version,
        )
        .await
    }

    // ---- Exchange → helloHQ ------------------------------------------------------------

    /// An Exchange event changed, was created or deleted. `version`: the version the
    /// change produced, as the notification named it (never given for a
    /// deletion); when the event's link already holds it, this is the echo
    /// of hqsync's own write (or a duplicate) and costs no request.
    pub async fn on_exchange_event(
        &self,
        dir: &Directory,
        m: &Mailbox,
        graph_id: &str,
        version: Option<&str>,
    ) -> Result<(), EngineError> {
        let direction = self.settings.direction(m, Kind::Appointment);
        if direction == Direction::Off {
            return Ok(());
        }
        let link = self.store.get_link_by_graph(self.tenant, &m.id, Kind::Appointment, graph_id).await?;
        // Maybe the echo of a merge of this pair still writing: its link.
        let link = super::link_after_running_merge(self.store, link, version).await?;
        if let (Some(_), Some(l)) = (version, &link) {
            if link_holds(l, version) {
                return Ok(()); // our own write's echo, or a duplicate
            }
            // An attendee's copy of a meeting whose organizer is synced
            // changed (not deleted): Exchange updating it from the
            // organizer's event, or the attendee's answer. The organizer's
            // event carries the meeting, its cancellation included, so
            // reading the copy would change nothing.
            if l.state == LINKED && l.hq_id.is_some() && l.folder.as_deref() == Some(ATTENDEE) {
                return Ok(());
            }
        }
        let Some(ev) = self.read_graph(m.id.as_str(), graph_id).await? else {
            // 404 after a notification: an explicit deletion in Exchange.
            let Some(l) = link else { return Ok(()) };
            super::not_while_created(&l, "the helloHQ appointment of this deleted event")?;
            if l.hq_id.is_none() && l.state == PENDING {
                return self.drop_unlinked_create(m, &l, direction).await;
            }
            return self.exchange_deleted(m, &l, direction).await;
        };
        // An occurrence or exception: its series is what is linked.
        if let Some(master) = str_of(&ev, "seriesMasterId").filter(|s| *s != graph_id) {
            let master = master.to_string();
            return Box::pin(self.on_exchange_event(dir, m, &master, None)).await;
        }
        let people = self.people(dir).await?;
        self.settle_exchange(&people, m, ev, link, &mut None).await
    }

    /// One Exchange event (not an occurrence) and its link, if any.
    async fn settle_exchange(
        &self,
        people: &People,
        m: &Mailbox,
        ev: Value,
        link: Option<Link>,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let direction = self.settings.direction(m, Kind::Appointment);
        let gid = str_of(&ev, "id").unwrap_or_default().to_string();
        let cancelled = ev.get("isCancelled").and_then(Value::as_bool).unwrap_or(false);
        let is_organizer = ev.get("isOrganizer").and_then(Value::as_bool).unwrap_or(true);
        let uid = str_of(&ev, "iCalUId").map(str::to_string);
        if let Some(l) = link {
            if cancelled {
                if plan.is_none() {
                    return self.exchange_deleted(m, &l, direction).await;
                }
                return Ok(());
            }
            let Some(hq_id) = l.hq_id.as_deref().and_then(|s| s.parse::<i32>().ok()) else {
                // A create that stopped half-way: finish it (it finds its row).
                if l.state == PENDING && matches!(direction, Direction::Both | Direction::ToHellohq) {
                    return self.create_in_hellohq(people, m, &ev, is_organizer, plan).await;
                }
                return Ok(());
            };
            if l.folder.as_deref() == Some(ATTENDEE) {
                return Ok(()); // the organizer's event carries the meeting
            }
            let Some(task) = self.read_hq(hq_id).await? else { return Ok(()) }; // its own hint removes the copy
            let (appt, held) = match Appointment::from_hq_holding(&task, people) {
                Ok(a) => a,
                Err(_) => return Ok(()),
            };
            let series = (appt.recurrence.is_some() || held.is_some()) && l.folder.as_deref() == Some(ORGANIZER);
            let hq = HqAppointment { task, appt, held };
            if let (Some(h), None) = (&hq.held, plan.as_deref()) {
                self.journal_held(Some(&m.id), &hq, h, HELD_PATTERN.to_string()).await?;
            }
            self.update_pair(people, m, &hq, &l, Some(ev), direction, plan).await?;
            if series {
                self.sync_exceptions(people, m, &hq.task, &l, plan).await?;
            }
            return Ok(());
        }
        if cancelled {
            return Ok(());
        }
        // Linked since the lookup above (the create that made this very
        // event finished meanwhile): merged as linked. Linked again below
        // without a base, every field would count as changed on both sides
        // and the conflict rule could take the event's older values.
        if plan.is_none() {
            if let Some(l) = self.store.get_link_by_graph(self.tenant, &m.id, Kind::Appointment, &gid).await? {
                return Box::pin(self.settle_exchange(people, m, ev, Some(l), plan)).await;
            }
        }
        // Our own create, seen before its link was completed.
        if let Some(tx) = str_of(&ev, "transactionId") {
            for l in self.store.list_links(self.tenant, &m.id, Kind::Appointment).await? {
                let Some(h) = l.hq_id.as_deref().and_then(|s| s.parse::<i32>().ok()) else { continue };
                if l.state == PENDING && transaction_id(self.tenant, h) == tx {
                    return Ok(()); // the creating worker completes the link
                }
            }
        }
        // A copy of a meeting that already has its helloHQ row.
        if let Some(hq_id) = self.hq_of_ical(uid.as_deref()).await? {
            let others = self.store.links_of_hq(self.tenant, Kind::Appointment, &hq_id.to_string()).await?;
            let role = if others.iter().any(|o| o.folder.as_deref() == Some(ORGANIZER) && o.mailbox != m.id) {
                ATTENDEE
            } else if is_organizer {
                ORGANIZER
            } else {
                INVITEE
            };
            if let Some(p) = plan.as_deref_mut() {
                p.matched.push(format!("appointment #{hq_id} ↔ event in {} (by iCalUId, {role})", m.id));
                return Ok(());
            }
            // This mailbox already holds the meeting as another event: never re-point that link.
            if others.iter().any(|o| o.mailbox == m.id && o.graph_id.is_some() && o.graph_id.as_deref() != Some(&gid)) {
                return Ok(());
            }
            // Linked to this very event meanwhile (fault suite, seed 19): as above.
            if let Some(l) = others.into_iter().find(|o| o.mailbox == m.id && o.graph_id.as_deref() == Some(&gid)) {
                return Box::pin(self.settle_exchange(people, m, ev, Some(l), plan)).await;
            }
            self.save_link(m, hq_id, Some(&gid), role, &Map::new(), None, None, graph_version(&ev)).await?;
            self.journal(
                Some(&m.id),
                "linked",
                Some(hq_id.to_string()),
                Some(gid.clone()),
                json!({"side": "exchange", "matched_by": "iCalUId", "role": role}),
            )
            .await;
            if role != ATTENDEE {
                // First pairing: the merge fills gaps both ways.
                if let Some(l) = self.store.get_link_by_graph(self.tenant, &m.id, Kind::Appointment, &gid).await? {
                    if let Some(task) = self.read_hq(hq_id).await? {
                        if let Ok((appt, held)) = Appointment::from_hq_holding(&task, people) {
                            let hq = HqAppointment { task, appt, held };
                            return self.update_pair(people, m, &hq, &l, Some(ev), direction, plan).await;
                        }
                    }
                }
            }
            return Ok(());
        }
        // An invitation from a synced organizer: their event makes the row.
        if !is_organizer {
            let org = ev["organizer"]["emailAddress"]["address"].as_str().unwrap_or_default();
            let synced = self.mailboxes().await?.iter().any(|x| x.id.as_str().eq_ignore_ascii_case(org));
            if synced {
                return Ok(());
            }
        }
        if !matches!(direction, Direction::Both | Direction::ToHellohq) {
            return Ok(());
        }
        self.create_in_hellohq(people, m, &ev, is_organizer, plan).await
    }

    /// A new Exchange event becomes one helloHQ appointment (never an
    /// absence), subject and body included; the mailbox's user is its
    /// first participant, so its calendar stays the organizer's.
    async fn create_in_hellohq(
        &self,
        people: &People,
        m: &Mailbox,
        ev: &Value,
        is_organizer: bool,
        plan: &mut Option<&mut Plan>,
    ) -> Result<(), EngineError> {
        let gid = str_of(ev, "id").unwrap_or_default().to_string();
        let appt = match self.graph_appt(m.id.as_str(), ev).await? {
            Ok(a) => a,
            Err(e) => {
                if plan.is_none() {
                    let subject = ev["subject"].as_str().unwrap_or_default();
                    self.journal(Some(&m.id), "skipped", None, Some(gid), json!({"side": "hellohq", "summary": format!("appointment {subject}"), "reason": e.to_string()})).await;
                }
                return Ok(());
            }
        };
        if let Some(p) = plan.as_deref_mut() {
            p.create_in_hellohq.push(summary(&appt));
            return Ok(());
        }
        // Every helloHQ task has a project (v1: "requires a valid project
        // id"): without the tenant's `appointments.project` the event stays in
        // Exchange, journalled with the fix, never dropped silently.
        let Some(project) = self.settings.appointments.project else {
            self.journal(
                Some(&m.id),
                "skipped",
                None,
                Some(gid),
                json!({"side": "hellohq", "summary": summary(&appt), "reason": NO_PROJECT}),
            )
            .await;
            return Ok(());
        };
        let role = if is_organizer { ORGANIZER } else { INVITEE };
        // A pending half link: an earlier attempt may have created the row
        // (it carries the event's iCalUId); find it instead of a second one.
        let half = self
            .store
            .get_link_by_graph(self.tenant, &m.id, Kind::Appointment, &gid)
            .await?
            .filter(|l| l.hq_id.is_none());
        // A live claim of another worker: let it finish.
        if half.as_ref().is_some_and(super::claimed_elsewhere) {
            return Err(super::busy("the helloHQ appointment for this event"));
        }
        // A claim left by a failed or crashed run: resumed once taken over
        // atomically (two workers resuming it would create two rows).
        if let Some(l) = &half {
            if !super::take_over(self.store, l, self.hint_id).await? {
                return Err(super::busy("the helloHQ appointment for this event"));
            }
        }
        let pending = half.is_some();
        if pending {
            if let Some(uid) = appt.ical_uid.as_deref() {
                let q = ListQuery::filter(format!("iCalUId eq '{}'", uid.replace('\'', "''")));
                let found: Vec<wire::Task> = self.hq.list_v2("/v2/Projects/Tasks", &q).await.map_err(hq_err)?.items;
                if let Some(row) = found.iter().find(|t| t.ical_uid.as_deref() == Some(uid)) {
                    // helloHQ's webhook for the row, no longer waiting for the
                    // claim, may have put hqsync's own copy of it beside this
                    // event: that copy is a second meeting and goes.
                    let beside: Vec<Link> = self
                        .store
                        .links_of_hq(self.tenant, Kind::Appointment, &row.id.to_string())
                        .await?
                        .into_iter()
                        .filter(|o| o.mailbox == m.id && o.graph_id.as_deref() != Some(gid.as_str()))
                        .collect();
                    self.hq_deleted(
                        row.id,
                        &beside,
                        "a second copy beside the Outlook event this helloHQ appointment was made from",
                    )
                    .await?;
                    self.index_ical(Some(uid), row.id).await?;
                    // No base: the first merge settles any difference.
                    return self
                        .save_link(m, row.id, Some(&gid), role, &Map::new(), None, None, graph_version(ev))
                        .await;
                }
            }
        } else {
            // Claim the event first, atomically: a second worker (or a
            // replay) sees the half link and does not create a second row.
            let claim = super::claim_create(
                self.store,
                &Link {
                    tenant: self.tenant.clone(),
                    mailbox: m.id.clone(),
                    kind: Kind::Appointment,
                    hq_id: None,
                    graph_id: Some(gid.clone()),
                    folder: Some(role.into()),
                    base: json!({}),
                    hq_fingerprint: None,
                    graph_fingerprint: None,
                    hq_version: None,
                    graph_version: None,
                    state: PENDING.into(),
                    updated_at: Utc::now(),
                },
                self.hint_id,
            )
            .await?;
            match claim {
                super::Claim::Mine => {}
                super::Claim::Done(_) => return Err(super::linked_meanwhile("the event")),
                super::Claim::Busy | super::Claim::Stale(_) => {
                    return Err(super::busy("the helloHQ appointment for this event"))
                }
            }
        }
        let mut row = appt.to_hq(None, people);
        row.project_id = Some(project);
        // Tagged with the event: a create cut off before its link is found
        // again (`drop_unlinked_create`) instead of staying behind.
        row.extra.insert("syncId".into(), json!(gid));
        // The mailbox's user first: the creator of the meeting in helloHQ.
        if let Some(u) = people.user_by_email(m.id.as_str()) {
            let mut list: Vec<TaskAssignment> =
                row.resource_to_tasks.take().unwrap_or_default().into_iter().filter(|a| a.user_id != Some(u)).collect();
            list.insert(0, TaskAssignment { user_id: Some(u), ..Default::default() });
            row.resource_to_tasks = Some(list);
        }
        let created = self.hq.create_task(&row).await.map_err(hq_err)?;
        let (_, window_end) = self.window();
        let organizer = (role == ORGANIZER).then_some(m.id.as_str());
        let hq_now = Appointment::from_hq(&created, people).unwrap_or_else(|_| appt.clone());
        let hq_fields = fields(&hq_now, people, organizer, window_end);
        let ex_fields = fields(&appt, people, organizer, window_end);
        self.index_ical(appt.ical_uid.as_deref(), created.id).await?;
        let mut base = hq_fields.clone();
        base.insert("ical_uid".into(), json!(appt.ical_uid));
        self.save_link(
            m,
            created.id,
            Some(&gid),
            role,
            &base,
            Some(fingerprint(&hq_fields)),
            Some(fingerprint(&ex_fields)),
            graph_version(ev),
        )
        .await?;
        for x in appt.unmapped_attendees(people) {
            self.journal(Some(&m.id), "skipped", Some(created.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": summary(&appt), "attendee": x.email, "reason": "neither a helloHQ user, a contact person nor a known room: kept only in Exchange (C5)"})).await;
        }
        self.journal(
            Some(&m.id),
            "created",
            Some(created.id.to_string()),
            Some(gid),
            json!({"side": "hellohq", "summary": summary(&appt), "from": m.id.as_str(), "role": role}),
        )
        .await;
        Ok(())
    }

    /// A row hqsync made from event `gid` of `m` (tagged with it in
    /// `syncId`) by a create cut off between the row and its assignments,
    /// adopted by a pass through its iCalUId: the organizer's assignment
    /// that create would have written next is written now. Without it the
    /// appointment is nobody's in helloHQ, and no merge adds it (fault
    /// suite, seed 9: a worker killed right after the row).
    async fn complete_cut_off_create(
        &self,
        people: &People,
        m: &Mailbox,
        gid: &str,
        row: Option<&wire::Task>,
    ) -> Result<(), EngineError> {
        let Some(row) = row.filter(|t| t.extra.get("syncId").and_then(Value::as_str) == Some(gid)) else {
            return Ok(());
        };
        let Some(u) = people.user_by_email(m.id.as_str()) else { return Ok(()) };
        if row.resource_to_tasks.iter().flatten().any(|a| a.user_id == Some(u)) {
            return Ok(());
        }
        self.hq
            .update_task(row.id, |t| {
                let mut list = t.resource_to_tasks.take().unwrap_or_default();
                list.insert(0, TaskAssignment { user_id: Some(u), ..Default::default() });
                t.resource_to_tasks = Some(list);
            })
            .await
            .map_err(hq_err)?;
        self.journal(
            Some(&m.id),
            "updated",
            Some(row.id.to_string()),
            Some(gid.to_string()),
            json!({"side": "hellohq", "summary": format!("appointment {}", row.name.clone().unwrap_or_default()), "reason": "the organizer's assignment a cut-off create had not written yet"}),
        )
        .await;
        Ok(())
    }

    /// Deleted in Exchange while its helloHQ appointment was being created
    /// by a run that failed or was killed (its claim `l` is left, no longer
    /// live): that run may have made the row (tagged with the event's id in
    /// `syncId`), and helloHQ's webhook, which no longer waited for the
    /// claim, may have mirrored the row into mailboxes meanwhile. The row
    /// and those copies go, like the event.
    async fn drop_unlinked_create(&self, m: &Mailbox, l: &Link, direction: Direction) -> Result<(), EngineError> {
        if !super::take_over(self.store, l, self.hint_id).await? {
            return Err(super::busy("the helloHQ appointment of this deleted event"));
        }
        let gid = l.graph_id.clone().unwrap_or_default();
        if matches!(direction, Direction::Both | Direction::ToHellohq) {
            let q = ListQuery::filter(format!("isAppointment eq true and syncId eq '{}'", gid.replace('\'', "''")));
            let found: Vec<wire::Task> = self.hq.list_v2("/v2/Projects/Tasks", &q).await.map_err(hq_err)?.items;
            let tagged = |t: &&wire::Task| t.extra.get("syncId").and_then(Value::as_str) == Some(gid.as_str());
            for row in found.iter().filter(|t| is_ours(t)).filter(tagged) {
                let copies = self.store.links_of_hq(self.tenant, Kind::Appointment, &row.id.to_string()).await?;
                match self.hq.delete_task(row.id).await {
                    Ok(()) | Err(HqError::NotFound { .. }) => {}
                    Err(e) => return Err(hq_err(e)),
                }
                self.hq_deleted(row.id, &copies, "deleted in Exchange while its helloHQ appointment was being created")
                    .await?;
                let what = row.name.clone().unwrap_or_else(|| format!("appointment #{}", row.id));
                self.journal(Some(&m.id), "deleted", Some(row.id.to_string()), Some(gid.clone()), json!({"side": "hellohq", "summary": what, "from": m.id.as_str(), "reason": "deleted in Exchange while its helloHQ appointment was being created"})).await;
            }
        }
        self.drop_link(&m.id, l).await
    }

    /// Deleted (or cancelled) in Exchange. The organizer's deletion deletes
    /// the helloHQ row; an invitee's deletes it when no other copy is left;
    /// an attendee's copy only loses its link (the organizer decides).
    async fn exchange_deleted(&self, m: &Mailbox, l: &Link, direction: Direction) -> Result<(), EngineError> {
        self.drop_link(&m.id, l).await?;
        let Some(id) = l.hq_id.as_deref().and_then(|s| s.parse::<i32>().ok()) else { return Ok(()) };
        let role = l.folder.as_deref().unwrap_or(ORGANIZER);
        if role == ATTENDEE {
            return Ok(());
        }
        if role == INVITEE && !self.store.links_of_hq(self.tenant, Kind::Appointment, &id.to_string()).await?.is_empty()
        {
            return Ok(());
        }
        if !matches!(direction, Direction::Both | Direction::ToHellohq) {
            self.journal(Some(&m.id), "skipped", l.hq_id.clone(), l.graph_id.clone(), json!({"side": "hellohq", "summary": format!("appointment #{id}"), "reason": "deleted in Exchange; the direction does not allow deleting in helloHQ"})).await;
            return Ok(());
        }
        // Only an appointment row is deleted (never an absence or a plain task).
        match self.read_hq(id).await? {
            Some(t) if is_ours(&t) && not_synced(&t).is_none() => match self.hq.delete_task(id).await {
                Ok(()) | Err(HqError::NotFound { .. }) => {}
                Err(e) => return Err(hq_err(e)),
            },
            _ => return Ok(()),
        }
        for other in self.store.links_of_hq(self.tenant, Kind::Appointment, &id.to_string()).await? {
            self.drop_link(&other.mailbox, &other).await?;
        }
        self.journal(
            Some(&m.id),
            "deleted",
            l.hq_id.clone(),
            l.graph_id.clone(),
            json!({"side": "hellohq", "summary": format!("appointment #{id}"), "from": m.id.as_str()}),
        )
        .await;
        Ok(())
    }

    // ---- the pass ----------------------------------------------------------------------

    /// Every helloHQ appointment row (with assignments).
    async fn list_hq(&self) -> Result<Vec<wire::Task>, EngineError> {
        let q = ListQuery::filter("isAppointment eq true");
        self.hq.list_tasks(&q).await.map_err(hq_err)
    }

    /// The window's events, series as their masters (read once each).
    async fn list_graph(&self, m: &Mailbox) -> Result<Vec<Value>, EngineError> {
        let (start, end) = self.window();
        let path = format!(
            "/users/{}/calendarView?startDateTime={}&endDateTime={}",
            seg(m.id.as_str()),
            start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let view = self.graph.list_all(&path).await.map_err(graph_err)?;
        let mut out = Vec::new();
        let mut masters = BTreeSet::new();
        for v in view {
            match str_of(&v, "seriesMasterId") {
                Some(master) => {
                    masters.insert(master.to_string());
                }
                None => out.push(v),
            }
        }
        for id in masters {
            if let Some(v) = self.read_graph(m.id.as_str(), &id).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn starts_before(a: &Appointment, end: DateTime<Utc>) -> bool {
        match a.when {
            When::Timed { start, .. } => start < end,
            When::AllDay { start, .. } => start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() < end,
        }
    }

    fn in_window(a: &Appointment, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        use crate::model::appointment::When;
        let (s, e) = match a.when {
            When::Timed { start, end } => (start, end),
            When::AllDay { start, end } => (
                start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
                end.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            ),
        };
        match &a.recurrence {
            None => s < end && e >= start,
            Some(r) => s < end && !r.occurrences(start, end).is_empty(),
        }
    }

    /// Reconciles one mailbox's calendar over the window. With `dry_run`,
    /// writes nothing and returns what it would do. Existing events are
    /// matched (iCalUId, then subject + start) before anything is created;
    /// deletions are confirmed one by one and held above the threshold.
    pub async fn pass(
        &self,
        dir: &Directory,
        m: &Mailbox,
        dry_run: bool,
        approved: &super::approvals::Approval,
    ) -> Result<Plan, EngineError> {
        let mut plan = Plan { mailbox: m.id.to_string(), ..Default::default() };
        let direction = self.settings.direction(m, Kind::Appointment);
        if direction == Direction::Off {
            return Ok(plan);
        }
        let (w_start, w_end) = self.window();
        let people = self.people(dir).await?;
        let mailboxes = self.mailboxes().await?;
        let hq_all = self.list_hq().await?;
        let events = self.list_graph(m).await?;
        let mut links = self.store.list_links(self.tenant, &m.id, Kind::Appointment).await?;
        let hq_by_id: HashMap<i32, &wire::Task> = hq_all.iter().map(|t| (t.id, t)).collect();
        let ev_by_id: HashMap<String, &Value> =
            events.iter().filter_map(|v| str_of(v, "id").map(|id| (id.to_string(), v))).collect();

        // Rows never written are journalled once, on the mailbox's first pass.
        let first_pass = self.store.get_cursor(self.tenant, m.id.as_str(), LAST_PASS).await?.is_none();
        if first_pass && !dry_run {
            for t in &hq_all {
                let Some(reason) = not_synced(t) else { continue };
                if organizer_of(t, dir, &mailboxes).is_some_and(|o| o.id == m.id) {
                    let name = t.name.clone().unwrap_or_default();
                    self.journal(
                        Some(&m.id),
                        "skipped",
                        Some(t.id.to_string()),
                        None,
                        json!({"side": "exchange", "summary": format!("appointment {name}"), "reason": reason}),
                    )
                    .await;
                }
            }
        }
        // helloHQ rows this mailbox organises, inside the window.
        let mine: Vec<(&wire::Task, Appointment)> = hq_all
            .iter()
            .filter(|t| not_synced(t).is_none() && !is_exception(t))
            .filter_map(|t| Appointment::from_hq_holding(t, &people).ok().map(|(a, held)| (t, a, held.is_some())))
            .filter(|(t, a, held)| {
                // A held series' pattern is unknown: it may reach into the window from any start before its end.
                let inside = if *held { Self::starts_before(a, w_end) } else { Self::in_window(a, w_start, w_end) };
                inside && organizer_of(t, dir, &mailboxes).is_some_and(|o| o.id == m.id)
            })
            .map(|(t, a, _)| (t, a))
            .collect();

        // 1. Match unlinked events before creating anything.
        let linked_ev: HashSet<String> =
            links.iter().filter(|l| l.hq_id.is_some()).filter_map(|l| l.graph_id.clone()).collect();
        let linked_hq: HashSet<String> = links.iter().filter_map(|l| l.hq_id.clone()).collect();
        let mut free: Vec<&(&wire::Task, Appointment)> =
            mine.iter().filter(|(t, _)| !linked_hq.contains(&t.id.to_string())).collect();
        let mut unclaimed: Vec<&Value> = Vec::new();
        for v in &events {
            let gid = str_of(v, "id").unwrap_or_default();
            if linked_ev.contains(gid) || v.get("isCancelled").and_then(Value::as_bool).unwrap_or(false) {
                continue;
            }
            let uid = str_of(v, "iCalUId");
            let by_uid = match self.hq_of_ical(uid).await? {
                Some(id) => Some(id),
                None => hq_all.iter().find(|t| t.ical_uid.as_deref().is_some_and(|u| Some(u) == uid)).map(|t| t.id),
            };
            let is_organizer = v.get("isOrganizer").and_then(Value::as_bool).unwrap_or(true);
            let by_time = || {
                let a = Appointment::from_graph(v).ok()?;
                free.iter().position(|(_, h)| h.subject == a.subject && h.when == a.when)
            };
            let (hq_id, how, role) = if let Some(id) = by_uid {
                let others = self.store.links_of_hq(self.tenant, Kind::Appointment, &id.to_string()).await?;
                let role = if others.iter().any(|o| o.folder.as_deref() == Some(ORGANIZER) && o.mailbox != m.id) {
                    ATTENDEE
                } else if is_organizer {
                    ORGANIZER
                } else {
                    INVITEE
                };
                free.retain(|(t, _)| t.id != id);
                (id, "iCalUId", role)
            } else if let Some(pos) = is_organizer.then(by_time).flatten() {
                let (t, _) = free.remove(pos);
                (t.id, "subject and start", ORGANIZER)
            } else {
                unclaimed.push(v);
                continue;
            };
            plan.matched.push(format!(
                "appointment #{hq_id} ↔ event {:?} (by {how}, {role})",
                v["subject"].as_str().unwrap_or("")
            ));
            let link = Link {
                tenant: self.tenant.clone(),
                mailbox: m.id.clone(),
                kind: Kind::Appointment,
                hq_id: Some(hq_id.to_string()),
                graph_id: Some(gid.to_string()),
                folder: Some(role.into()),
                base: Value::Null,
                hq_fingerprint: None,
                graph_fingerprint: None,
                hq_version: None,
                graph_version: graph_version(v),
                state: LINKED.into(),
                updated_at: Utc::now(),
            };
            if !dry_run {
                // A row already linked here (an earlier copy) keeps that link.
                if self.store.get_link_by_hq(self.tenant, &m.id, Kind::Appointment, &hq_id.to_string()).await?.is_some()
                {
                    continue;
                }
                self.store.upsert_link(&link).await?;
                self.index_ical(str_of(v, "iCalUId"), hq_id).await?;
                if role == ORGANIZER {
                    self.complete_cut_off_create(&people, m, gid, hq_by_id.get(&hq_id).copied()).await?;
                }
                self.journal(
                    Some(&m.id),
                    "linked",
                    Some(hq_id.to_string()),
                    Some(gid.to_string()),
                    json!({"side": "exchange", "matched_by": how, "role": role}),
                )
                .await;
            }
            links.push(link);
        }

        // 2. Deletions: confirmed by a read each, then held or done.
        let mut hq_gone: Vec<Link> = Vec::new();
        let mut ex_gone: Vec<Link> = Vec::new();
        for l in links.iter().filter(|l| l.state == LINKED) {
            let hq_id = l.hq_id.as_deref().and_then(|s| s.parse::<i32>().ok());
            if let Some(id) = hq_id.filter(|i| !hq_by_id.contains_key(i)) {
                if self.read_hq(id).await?.is_none() {
                    hq_gone.push(l.clone());
                    continue;
                }
            }
            if let Some(g) = l.graph_id.as_deref().filter(|g| !ev_by_id.contains_key(*g)) {
                if self.read_graph(m.id.as_str(), g).await?.is_none() {
                    ex_gone.push(l.clone());
                }
            }
        }
        let total = links.len() as u64;
        let candidates: Vec<&Link> = hq_gone.iter().chain(ex_gone.iter()).collect();
        let (held_now, covered) = super::approvals::decide(approved, &candidates, |n| {
            self.settings.deletes.held(n, total, Kind::Appointment, self.tenant.as_str(), m.id.as_str())
        });
        plan.held = held_now;
        let hold = plan.held.is_some();
        // Held: the approved candidates still go; the others are listed.
        let n_hq = hq_gone.len();
        let held_items: Vec<super::approvals::HeldItem> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| hold && !covered[*i])
            .map(|(i, l)| {
                super::approvals::HeldItem::of(l, held_name(l), if i < n_hq { "exchange" } else { "hellohq" })
            })
            .collect();
        let (hq_gone_now, ex_gone_now): (Vec<Link>, Vec<Link>) = if hold {
            (
                hq_gone.iter().zip(&covered).filter(|(_, c)| **c).map(|(l, _)| l.clone()).collect(),
                ex_gone.iter().zip(&covered[n_hq..]).filter(|(_, c)| **c).map(|(l, _)| l.clone()).collect(),
            )
        } else {
            (hq_gone.clone(), ex_gone.clone())
        };
        if hold && !dry_run {
            let n_held = held_items.len();
            self.journal(Some(&m.id), "held", None, None, json!({"side": "both", "summary": format!("{n_held} appointment deletions"), "count": n_held, "items": held_items, "reason": plan.held})).await;
        }
        for l in &hq_gone_now {
            if dry_run {
                if l.folder.as_deref() == Some(ORGANIZER) {
                    plan.delete_in_exchange.push(format!("appointment #{}", l.hq_id.as_deref().unwrap_or("?")));
                }
            } else {
                let id = l.hq_id.as_deref().and_then(|s| s.parse::<i32>().ok()).unwrap_or_default();
                self.hq_deleted(id, std::slice::from_ref(l), "deleted in helloHQ").await?;
            }
        }
        for l in &ex_gone_now {
            if dry_run {
                if l.folder.as_deref() != Some(ATTENDEE) {
                    plan.delete_in_hellohq.push(format!("appointment #{}", l.hq_id.as_deref().unwrap_or("?")));
                }
            } else {
                self.exchange_deleted(m, l, direction).await?;
            }
        }
        if !dry_run {
            let record = plan.held.clone().map(|reason| super::approvals::Held {
                kind: Kind::Appointment,
                at: Utc::now(),
                reason,
                items: held_items,
            });
            super::approvals::record_held(self.store, self.tenant, &m.id, Kind::Appointment, record.as_ref()).await?;
        }
        let gone: HashSet<String> = hq_gone.iter().chain(ex_gone.iter()).filter_map(|l| l.hq_id.clone()).collect();

        // 3. Rows this mailbox organises: create or update.
        let mut plan_ref = if dry_run { Some(&mut plan) } else { None };
        let by_hq: HashMap<String, Link> =
            links.iter().filter_map(|l| l.hq_id.clone().map(|h| (h, l.clone()))).collect();
        for (t, _) in &mine {
            if gone.contains(&t.id.to_string()) {
                continue;
            }
            let link = by_hq.get(&t.id.to_string()).filter(|l| l.folder.as_deref() == Some(ORGANIZER)).cloned();
            let ev =
                link.as_ref().and_then(|l| l.graph_id.as_ref()).and_then(|g| ev_by_id.get(g)).map(|v| (*v).clone());
            let all_links = self.store.links_of_hq(self.tenant, Kind::Appointment, &t.id.to_string()).await?;
            self.settle_hq(dir, &people, &mailboxes, t, all_links, ev, &mut plan_ref).await?;
            // Its modified occurrences, both ways, once the series is in Exchange.
            if t.recurrency_storage.as_deref().is_some_and(|r| !r.trim().is_empty()) && !dry_run {
                if let Some(l) =
                    self.store.get_link_by_hq(self.tenant, &m.id, Kind::Appointment, &t.id.to_string()).await?
                {
                    if l.folder.as_deref() == Some(ORGANIZER) && l.state == LINKED {
                        self.sync_exceptions(&people, m, t, &l, &mut plan_ref).await?;
                    }
                }
            }
        }
        // 4. Linked invitee/organizer events whose row another mailbox does not organise: merge from Exchange.
        for l in links
            .iter()
            .filter(|l| l.state == LINKED && !matches!(l.folder.as_deref(), Some(ATTENDEE) | Some(EXCEPTION)))
        {
            let Some(h) = l.hq_id.as_deref() else { continue };
            if gone.contains(h) || mine.iter().any(|(t, _)| t.id.to_string() == h) {
                continue;
            }
            let Some(ev) = l.graph_id.as_ref().and_then(|g| ev_by_id.get(g)) else { continue };
            self.settle_exchange(&people, m, (*ev).clone(), Some(l.clone()), &mut plan_ref).await?;
        }
        // 5. Events nobody claimed become helloHQ appointments.
        for v in unclaimed {
            self.settle_exchange(&people, m, v.clone(), None, &mut plan_ref).await?;
        }
        if !dry_run {
            self.store.set_cursor(self.tenant, m.id.as_str(), LAST_PASS, &Utc::now().to_rfc3339()).await?;
        }
        Ok(plan)
    }
}

/// The name a held appointment deletion is listed under: its subject as
/// last synced, else its helloHQ id.
fn held_name(l: &Link) -> String {
    l.base
        .get("subject")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("appointment #{}", l.hq_id.as_deref().unwrap_or("?")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::hellohq::wire::User;
    use crate::model::appointment::{Attendee, When};

    fn people() -> People {
        let dir = Directory::build(
            vec![
                User { id: 1, e_mail_work: Some("anna@agentur.de".into()), ..Default::default() },
                User { id: 2, e_mail_work: Some("Ben@Agentur.de".into()), ..Default::default() },
            ],
            vec![],
            vec![],
            vec![],
        );
        let rooms = vec![
            wire::Resource { id: 3, name: Some("Raum Elbe".into()), email: None, ..Default::default() },
            wire::Resource {
                id: 4,
                name: Some("Raum Alster".into()),
                email: Some("alster@agentur.de".into()),
                ..Default::default()
            },
        ];
        let mut s = TenantSettings::default();
        s.appointments.room_map.insert("Raum Elbe".into(), "elbe@agentur.de".into());
        People::new(&dir, &[], &rooms, &s)
    }

    #[test]
    fn rooms_map_both_ways_through_email_the_room_map_or_the_name() {
        let p = people();
        assert_eq!(p.room_by_email("ALSTER@agentur.de"), Some(4));
        assert_eq!(p.room_by_email("elbe@agentur.de"), Some(3), "through the room map");
        assert_eq!(p.room_mailbox("raum elbe").as_deref(), Some("elbe@agentur.de"));
        assert_eq!(p.key("other@rooms.example", "Raum Elbe", AttendeeKind::Resource).as_deref(), Some("r:3"));
        assert_eq!(p.key("ben@agentur.de", "Ben", AttendeeKind::Optional).as_deref(), Some("u:2"));
        assert_eq!(p.key("extern@partner.example", "", AttendeeKind::Required), None);
    }

    #[test]
    fn the_projection_ignores_the_organizer_names_kinds_and_externals() {
        let p = people();
        let at = |email: &str, name: &str, kind| Attendee { email: email.into(), name: name.into(), kind };
        let end = Utc::now() + Duration::days(400);
        let hq = Appointment {
            subject: "Jour fixe".into(),
            attendees: vec![
                at("anna@agentur.de", "", AttendeeKind::Required),
                at("ben@agentur.de", "", AttendeeKind::Required),
                at("elbe@agentur.de", "Raum Elbe", AttendeeKind::Resource),
            ],
            ..Default::default()
        };
        let ex = Appointment {
            subject: "Jour fixe".into(),
            attendees: vec![
                at("ben@agentur.de", "Ben Müller", AttendeeKind::Optional),
                at("elbe@agentur.de", "Elbe", AttendeeKind::Resource),
                at("extern@partner.example", "Extern", AttendeeKind::Required),
            ],
            ..Default::default()
        };
        let a = fields(&hq, &p, Some("anna@agentur.de"), end);
        let b = fields(&ex, &p, Some("anna@agentur.de"), end);
        assert_eq!(a, b);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_eq!(a["attendees"], json!(["r:3", "u:2"]));
        let mut moved = ex.clone();
        moved.when = When::Timed { start: Utc::now(), end: Utc::now() };
        assert_ne!(fields(&moved, &p, Some("anna@agentur.de"), end), a);
    }

    #[test]
    fn an_outlook_subject_edit_is_blocked_and_a_location_edit_flows() {
        let p = people();
        let end = Utc::now() + Duration::days(400);
        let base = Appointment { subject: "A".into(), location: "Elbe".into(), ..Default::default() };
        let mut ex = base.clone();
        ex.subject = "B".into();
        ex.location = "Alster".into();
        let f = |a: &Appointment| fields(a, &p, None, end);
        let m = merge::merge(Some(&f(&base)), Some(&f(&base)), Some(&f(&ex)), &RULES, Direction::Both, Side::Exchange);
        assert_eq!(m.to_hellohq, ["location"]);
        assert!(m.to_exchange.is_empty(), "a blocked subject is not written back by itself: {:?}", m.to_exchange);
        assert_eq!(m.blocked.len(), 1);
    }

    #[test]
    fn absences_and_unscheduled_rows_are_never_synced_but_are_ours_and_exceptions_are_occurrences() {
        for kind in ["Vacation", "SickLeave", "UnscheduledAppointment"] {
            let t = wire::Task {
                id: 1,
                kind: Some(TaskClassification::from_name(kind)),
                is_appointment: false,
                ..Default::default()
            };
            assert!(not_synced(&t).is_some(), "{kind}");
            assert!(is_ours(&t), "{kind}");
            assert!(!is_exception(&t), "{kind}");
        }
        let exception = wire::Task {
            id: 3,
            kind: Some(TaskClassification::RecurrencyException),
            is_appointment: true,
            parent_id: Some(1),
            original_start_on: Some(Utc::now()),
            ..Default::default()
        };
        assert!(not_synced(&exception).is_none());
        assert!(is_exception(&exception) && is_ours(&exception));
        let plain = wire::Task { id: 2, kind: Some(TaskClassification::Project), ..Default::default() };
        assert!(!is_ours(&plain));
    }

    #[test]
    fn the_transaction_id_is_stable_per_tenant_and_row() {
        let t = TenantId::parse("demo").unwrap();
        let u = TenantId::parse("other").unwrap();
        assert_eq!(transaction_id(&t, 7), transaction_id(&t, 7));
        assert_ne!(transaction_id(&t, 7), transaction_id(&t, 8));
        assert_ne!(transaction_id(&t, 7), transaction_id(&u, 7));
    }
}
