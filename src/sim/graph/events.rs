//! Calendar events (single instances): CRUD on `/events` and
//! `/calendar/events`, `transactionId` dedupe, `calendarView`,
//! `calendarView/delta` over a fixed window, `Prefer: outlook.timezone`,
//! extended properties, and attendee copies in the attendees' own mailboxes
//! (same iCalUId, own id) with their own notifications. Recurring series:
//! pattern validation, occurrence expansion with per-occurrence iCalUId,
//! `/instances`, exceptions via PATCH and cancellation via DELETE of an
//! occurrence id. Invitees' answers (`accept`, `decline`, `tentativelyAccept`)
//! on a copy or one occurrence of it, carried to the organizer's event.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::contacts::{self, ext_key};
use super::delta::{self, DeltaSource};
use super::error::{GResult, GraphError, Reply};
use super::model::{DeltaScope, Event, EventException, EventKind, Mailbox, ResourceKind, Tombstone, World};
use super::recurrence;
use super::router::Ctx;
use super::{lock, notifier, subscriptions, tz, wire};

const EVENT_TYPE: &str = "#microsoft.graph.event";
const NO_TIME: &str = "0001-01-01T00:00:00Z";

/// Writable properties with their defaults (wire form).
fn default_props() -> Map<String, Value> {
    let v = json!({
        "subject": "",
        "body": {"contentType": "html", "content": ""},
        "categories": [],
        "importance": "normal",
        "sensitivity": "normal",
        "showAs": "busy",
        "isAllDay": false,
        "isReminderOn": true,
        "reminderMinutesBeforeStart": 15,
        "responseRequested": true,
        "allowNewTimeProposals": true,
        "hideAttendees": false,
        "isOnlineMeeting": false,
        "onlineMeetingProvider": "unknown",
        "location": empty_location(),
        "locations": [],
        "attendees": [],
    });
    v.as_object().cloned().unwrap_or_default()
}

fn empty_location() -> Value {
    json!({"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}})
}

fn invalid(msg: impl Into<String>) -> GraphError {
    GraphError::bad_request("ErrorInvalidRequest", msg)
}

fn bad_value(name: &str) -> GraphError {
    GraphError::body_read(format!("Cannot convert the literal value for property '{name}' to the expected type."))
}

/// An enum value of a request body. Graph reads enum members without
/// regard to case (Microsoft's own create-event example sends
/// `"contentType": "HTML"`, GRAPH.md key constraint 7) and answers with the
/// documented spelling, so the value is stored in that spelling.
fn one_of(name: &str, v: &Value, allowed: &[&str]) -> GResult<Value> {
    match v.as_str().and_then(|s| allowed.iter().find(|a| a.eq_ignore_ascii_case(s))) {
        Some(canonical) => Ok(Value::String((*canonical).to_string())),
        None => Err(GraphError::body_read(format!("Requested value '{v}' was not found for property '{name}'."))),
    }
}

fn location(v: &Value) -> GResult<Value> {
    let Value::Object(o) = v else { return Err(bad_value("location")) };
    let mut loc = empty_location();
    for (k, val) in o {
        match k.as_str() {
            "displayName" | "locationEmailAddress" | "locationUri" | "uniqueId" => {
                if !(val.is_string() || val.is_null()) {
                    return Err(bad_value(k));
                }
                loc[k] = val.clone();
            }
            "locationType" => {
                loc[k] = one_of(
                    k,
                    val,
                    &[
                        "default",
                        "conferenceRoom",
                        "homeAddress",
                        "businessAddress",
                        "geoCoordinates",
                        "streetAddress",
                        "hotel",
                        "restaurant",
                        "localBusiness",
                        "postalAddress",
                    ],
                )?
            }
            "uniqueIdType" => {
                loc[k] = one_of(k, val, &["unknown", "locationStore", "directory", "private", "bing"])?;
            }
            "address" | "coordinates" => {
                if !(val.is_object() || val.is_null()) {
                    return Err(bad_value(k));
                }
                loc[k] = if val.is_null() { json!({}) } else { val.clone() };
            }
            k if k.starts_with('@') => {}
            other => {
                return Err(GraphError::body_read(format!(
                    "The property '{other}' does not exist on type 'microsoft.graph.location'."
                )))
            }
        }
    }
    Ok(loc)
}

fn attendees(v: &Value) -> GResult<Value> {
    let Value::Array(list) = v else { return Err(bad_value("attendees")) };
    if list.len() > 500 {
        return Err(invalid("An event can have at most 500 attendees."));
    }
    let out: GResult<Vec<Value>> = list
        .iter()
        .map(|a| {
            let email = a.get("emailAddress").ok_or_else(|| bad_value("attendees"))?;
            let address = email.get("address").and_then(Value::as_str).ok_or_else(|| bad_value("emailAddress"))?;
            let name = email.get("name").and_then(Value::as_str).unwrap_or(address);
            let ty = match a.get("type") {
                None | Some(Value::Null) => json!("required"),
                Some(t) => one_of("type", t, &["required", "optional", "resource"])?,
            };
            Ok(json!({
                "type": ty,
                "status": {"response": "none", "time": NO_TIME},
                "emailAddress": {"name": name, "address": address},
            }))
        })
        .collect();
    Ok(Value::Array(out?))
}

struct Input {
    props: Map<String, Value>,
    start: Option<(DateTime<Utc>, String)>,
    end: Option<(DateTime<Utc>, String)>,
    transaction_id: Option<String>,
    ext: Vec<super::model::ExtProp>,
    /// `Some(Null)` removes the pattern.
    recurrence: Option<Value>,
}

fn parse_input(body: &Map<String, Value>) -> GResult<Input> {
    let mut input =
        Input { props: Map::new(), start: None, end: None, transaction_id: None, ext: Vec::new(), recurrence: None };
    for (k, v) in body {
        let key = k.as_str();
        let val = match key {
            _ if key.starts_with('@') => continue,
            "id"
            | "changeKey"
            | "iCalUId"
            | "createdDateTime"
            | "lastModifiedDateTime"
            | "type"
            | "isOrganizer"
            | "organizer"
            | "webLink"
            | "bodyPreview"
            | "originalStartTimeZone"
            | "originalEndTimeZone"
            | "responseStatus"
            | "seriesMasterId"
            | "hasAttachments"
            | "isCancelled"
            | "isDraft" => continue,
            "subject" => match v {
                Value::String(_) => v.clone(),
                Value::Null => json!(""),
                _ => return Err(bad_value(key)),
            },
            "body" => {
                let ct = match v.get("contentType") {
                    None | Some(Value::Null) => json!("text"),
                    Some(c) => one_of("contentType", c, &["text", "html"])?,
                };
                let content = v.get("content").and_then(Value::as_str).unwrap_or_default();
                json!({"contentType": ct, "content": content})
            }
            "categories" => match v {
                Value::Array(a) if a.iter().all(Value::is_string) => v.clone(),
                _ => return Err(bad_value(key)),
            },
            "importance" => one_of(key, v, &["low", "normal", "high"])?,
            "sensitivity" => one_of(key, v, &["normal", "personal", "private", "confidential"])?,
            "showAs" => one_of(key, v, &["free", "tentative", "busy", "oof", "workingElsewhere", "unknown"])?,
            "onlineMeetingProvider" => {
                one_of(key, v, &["unknown", "teamsForBusiness", "skypeForBusiness", "skypeForConsumer"])?
            }
            "isAllDay"
            | "isReminderOn"
            | "responseRequested"
            | "allowNewTimeProposals"
            | "hideAttendees"
            | "isOnlineMeeting" => match v {
                Value::Bool(_) => v.clone(),
                _ => return Err(bad_value(key)),
            },
            "reminderMinutesBeforeStart" => match v.as_i64() {
                Some(_) => v.clone(),
                None => return Err(bad_value(key)),
            },
            "location" => {
                let loc = location(v)?;
                let has_name = loc["displayName"].as_str().is_some_and(|s| !s.is_empty());
                // Setting `location` replaces `locations`.
                input.props.insert("locations".into(), if has_name { json!([loc.clone()]) } else { json!([]) });
                loc
            }
            "locations" => {
                let Value::Array(list) = v else { return Err(bad_value(key)) };
                let locs: Vec<Value> = list.iter().map(location).collect::<GResult<_>>()?;
                let first = locs.first().cloned().unwrap_or_else(empty_location);
                input.props.insert("location".into(), first);
                Value::Array(locs)
            }
            "attendees" => attendees(v)?,
            "start" => {
                input.start = Some(tz::parse_dttz("start", v)?);
                continue;
            }
            "end" => {
                input.end = Some(tz::parse_dttz("end", v)?);
                continue;
            }
            "transactionId" => {
                input.transaction_id = Some(v.as_str().ok_or_else(|| bad_value(key))?.to_string());
                continue;
            }
            "singleValueExtendedProperties" => {
                input.ext = contacts::parse_ext_props(v)?;
                continue;
            }
            "recurrence" => {
                input.recurrence = Some(v.clone());
                continue;
            }
            "multiValueExtendedProperties" | "extensions" => continue,
            other => {
                return Err(GraphError::body_read(format!(
                    "The property '{other}' does not exist on type 'Microsoft.OutlookServices.Event'. Make sure to \
                     only use property names that are defined by the type or mark the type as open type."
                )))
            }
        };
        input.props.insert(k.clone(), val);
    }
    Ok(input)
}

fn check_times(e: &Event) -> GResult<()> {
    if e.end < e.start {
        return Err(invalid("The end time of the event must be after its start time."));
    }
    if let Some(r) = &e.recurrence {
        let zone = tz::resolve(&r.time_zone).map(|z| z.tz).unwrap_or(chrono_tz::UTC);
        if e.start.with_timezone(&zone).date_naive() != r.start_date {
            return Err(invalid(
                "The recurrence range startDate must be the same as the start date of the series master.",
            ));
        }
    }
    if e.props.get("isAllDay") == Some(&json!(true)) {
        let midnight = |t: DateTime<Utc>, zone: &str| {
            let z = tz::resolve(zone).map(|z| z.tz).unwrap_or(chrono_tz::UTC);
            t.with_timezone(&z).naive_local().time() == chrono::NaiveTime::MIN
        };
        if !midnight(e.start, &e.start_tz) || !midnight(e.end, &e.end_tz) || e.end == e.start {
            return Err(invalid(
                "Your request can't be completed. If the event is an all-day event, the start and end times must be \
                 at midnight and the event must last at least one day.",
            ));
        }
    }
    Ok(())
}

fn ical_uid() -> String {
    let hex: String = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    format!(
        "040000008200E00074C5B7101A82E00800000000{hex}{}",
        &uuid::Uuid::new_v4().simple().to_string().to_uppercase()[..16]
    )
}

fn body_preview(body: &Value) -> String {
    let content = body.get("content").and_then(Value::as_str).unwrap_or_default();
    let mut text = String::new();
    let mut in_tag = false;
    for ch in content.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(255).collect()
}

pub(crate) struct EventOpts<'a> {
    pub prefer_tz: Option<&'a str>,
    pub ext_ids: Option<&'a [String]>,
    pub with_type: bool,
    pub context: Option<String>,
}

pub(crate) fn render(e: &Event, o: &EventOpts<'_>) -> Value {
    let mut m = wire::item_head(o.context.as_deref(), o.with_type.then_some(EVENT_TYPE), &e.change_key, &e.id);
    m.insert("createdDateTime".into(), json!(wire::ts_7(e.created)));
    m.insert("lastModifiedDateTime".into(), json!(wire::ts_7(e.modified)));
    m.insert("changeKey".into(), json!(e.change_key));
    if let Some(t) = &e.transaction_id {
        m.insert("transactionId".into(), json!(t));
    }
    m.insert("originalStartTimeZone".into(), json!(e.start_tz));
    m.insert("originalEndTimeZone".into(), json!(e.end_tz));
    m.insert("iCalUId".into(), json!(e.ical_uid));
    m.insert("uid".into(), json!(e.ical_uid));
    m.insert("hasAttachments".into(), json!(false));
    m.insert("bodyPreview".into(), json!(body_preview(&e.props["body"])));
    m.insert("isCancelled".into(), json!(e.is_cancelled));
    m.insert("isOrganizer".into(), json!(e.is_organizer));
    m.insert("seriesMasterId".into(), json!(e.series_master_id));
    let ty = match e.kind {
        EventKind::SingleInstance => "singleInstance",
        EventKind::SeriesMaster => "seriesMaster",
        EventKind::Occurrence => "occurrence",
        EventKind::Exception => "exception",
    };
    m.insert("type".into(), json!(ty));
    if let Some(o) = e.original_start {
        m.insert("originalStart".into(), json!(wire::ts_seconds(o)));
    }
    m.insert(
        "webLink".into(),
        json!(format!(
            "https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item",
            wire::enc_query(&e.id)
        )),
    );
    m.insert("onlineMeetingUrl".into(), Value::Null);
    m.insert("occurrenceId".into(), Value::Null);
    m.insert("isDraft".into(), json!(false));
    m.insert("recurrence".into(), e.recurrence.as_ref().map(|r| r.to_wire()).unwrap_or(Value::Null));
    m.insert("onlineMeeting".into(), Value::Null);
    let time = e.response_time.map(wire::ts_7).unwrap_or_else(|| NO_TIME.to_string());
    m.insert("responseStatus".into(), json!({"response": e.response, "time": time}));
    for (k, v) in &e.props {
        m.insert(k.clone(), v.clone());
    }
    m.insert("start".into(), tz::format_dttz(e.start, o.prefer_tz));
    m.insert("end".into(), tz::format_dttz(e.end, o.prefer_tz));
    m.insert("organizer".into(), json!({"emailAddress": e.organizer}));
    if let Some(found) = o.ext_ids.and_then(|ids| contacts::render_ext(&e.ext, ids)) {
        m.insert("singleValueExtendedProperties".into(), found);
    }
    Value::Object(m)
}

/// The zone for responses (`Prefer: outlook.timezone`), if the simulator knows it.
fn prefer_tz(ctx: &Ctx<'_>) -> Option<String> {
    ctx.prefer("outlook.timezone").filter(|z| tz::known(z))
}

fn with_pref(reply: Reply, pref: &Option<String>) -> Reply {
    match pref {
        Some(z) => reply.header("Preference-Applied", &format!("outlook.timezone=\"{z}\"")),
        None => reply,
    }
}

fn entity_context(ctx: &Ctx<'_>, mb: &Mailbox) -> String {
    format!("{}/$metadata#users('{}')/events/$entity", ctx.graph_root(), mb.id)
}

fn check_if_match(ctx: &Ctx<'_>, e: &Event) -> GResult<()> {
    match ctx.if_match() {
        Some(m) if m != "*" && m != wire::etag(&e.change_key) && m.trim_matches('"') != e.change_key => {
            Err(GraphError::conflict_etag())
        }
        _ => Ok(()),
    }
}

fn mb_index(w: &World, id: &str) -> Option<usize> {
    w.mailboxes.iter().position(|m| m.id == id)
}

/// Queues notifications for one event write.
fn notify(ctx: &Ctx<'_>, w: &World, mb_id: &str, e_id: &str, etag: &str, change: &str) {
    let faults = lock(&ctx.shared.faults).clone();
    let items = subscriptions::matching(w, &faults, mb_id, ResourceKind::Events, None, e_id, etag, change);
    notifier::enqueue(ctx.shared, items);
}

/// Fields the organizer's changes carry into attendee copies.
const SHARED_PROPS: &[&str] = &[
    "subject",
    "body",
    "location",
    "locations",
    "attendees",
    "isAllDay",
    "sensitivity",
    "importance",
    "categories",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "hideAttendees",
    "allowNewTimeProposals",
];

// ------------------------------------------------------------------ series

fn occurrence_id(master_id: &str, orig: DateTime<Utc>) -> String {
    format!("{master_id}_{}", orig.format("%Y%m%dT%H%M%SZ"))
}

fn parse_occurrence_id(id: &str) -> Option<(String, DateTime<Utc>)> {
    let (master, stamp) = id.rsplit_once('_')?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some((master.to_string(), t.and_utc()))
}

/// Exchange puts the occurrence's date into bytes 16–19 of the GlobalObjectId.
fn occurrence_ical_uid(master_uid: &str, date: chrono::NaiveDate) -> String {
    use chrono::Datelike;
    if master_uid.len() < 40 || !master_uid.is_char_boundary(32) || !master_uid.is_char_boundary(40) {
        return master_uid.to_string();
    }
    format!("{}{:04X}{:02X}{:02X}{}", &master_uid[..32], date.year(), date.month(), date.day(), &master_uid[40..])
}

/// Original starts of a master's occurrences up to `until` (cancelled ones included).
fn original_starts(master: &Event, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let Some(r) = &master.recurrence else { return Vec::new() };
    let zone = tz::resolve(&r.time_zone).map(|z| z.tz).unwrap_or(chrono_tz::UTC);
    let local_start = master.start.with_timezone(&zone).naive_local().time();
    r.dates(until.with_timezone(&zone).date_naive())
        .into_iter()
        .filter_map(|d| {
            use chrono::TimeZone;
            zone.from_local_datetime(&d.and_time(local_start)).earliest().map(|t| t.with_timezone(&Utc))
        })
        .collect()
}

/// The occurrence (or exception) of `master` that the pattern puts at `orig`.
fn instance(master: &Event, orig: DateTime<Utc>) -> Event {
    let mut e = master.clone();
    e.id = occurrence_id(&master.id, orig);
    e.ical_uid = occurrence_ical_uid(&master.ical_uid, orig.date_naive());
    e.kind = EventKind::Occurrence;
    e.series_master_id = Some(master.id.clone());
    e.original_start = Some(orig);
    e.start = orig;
    e.end = orig + (master.end - master.start);
    e.transaction_id = None;
    e.recurrence = None;
    e.exceptions.clear();
    e.cancelled.clear();
    e.copies.clear();
    if let Some(x) = master.exceptions.get(&orig.timestamp()) {
        e.kind = EventKind::Exception;
        e.props.extend(x.props.clone());
        e.start = x.start;
        e.end = x.end;
        e.start_tz = x.start_tz.clone();
        e.end_tz = x.end_tz.clone();
        e.change_key = x.change_key.clone();
        e.modified = x.modified;
        if let Some((response, time)) = &x.response {
            e.response = response.clone();
            e.response_time = Some(*time);
        }
    }
    e
}

/// Occurrences and exceptions of `master` overlapping the window.
fn instances_in(master: &Event, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Event> {
    // Exceptions may have moved; look a week past the window for them.
    original_starts(master, end + chrono::Duration::days(7))
        .into_iter()
        .filter(|o| !master.cancelled.contains(&o.timestamp()))
        .map(|o| instance(master, o))
        .filter(|i| overlaps(i, start, end))
        .collect()
}

/// An event by id: a stored one, or an occurrence/exception of a stored series.
fn find(mb: &Mailbox, id: &str) -> Option<Event> {
    if let Some(e) = mb.events.get(id) {
        return Some(e.clone());
    }
    let (mid, orig) = parse_occurrence_id(id)?;
    let master = mb.events.get(&mid)?;
    if master.cancelled.contains(&orig.timestamp()) || !original_starts(master, orig).contains(&orig) {
        return None;
    }
    Some(instance(master, orig))
}

/// What a calendar view shows: single instances plus the instances of series.
fn view_items(mb: &Mailbox, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Event> {
    let mut items: Vec<Event> = Vec::new();
    for e in mb.events.values() {
        match e.kind {
            EventKind::SeriesMaster => items.extend(instances_in(e, start, end)),
            _ if overlaps(e, start, end) => items.push(e.clone()),
            _ => {}
        }
    }
    items.sort_by(|a, b| (a.start, a.order, &a.id).cmp(&(b.start, b.order, &b.id)));
    items
}

fn apply_recurrence(e: &mut Event, rec: Option<Value>) -> GResult<()> {
    match rec {
        None => {}
        Some(Value::Null) => {
            e.recurrence = None;
            e.kind = EventKind::SingleInstance;
            e.exceptions.clear();
            e.cancelled.clear();
        }
        Some(v) => {
            e.recurrence = Some(recurrence::parse(&v, &e.start_tz)?);
            e.kind = EventKind::SeriesMaster;
        }
    }
    Ok(())
}

/// Creates or updates the attendee copies of the organizer's event `org_id`
/// in the mailboxes of attendees that exist in the simulator.
fn sync_copies(ctx: &Ctx<'_>, w: &mut World, org_mb: usize, org_id: &str) {
    let Some(org) = w.mailboxes[org_mb].events.get(org_id).cloned() else { return };
    let org_upn = w.mailboxes[org_mb].upn.clone();
    let addresses: Vec<String> = org.props["attendees"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["emailAddress"]["address"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let now = ctx.shared.clock.now();
    let mut copies = org.copies.clone();
    for addr in addresses {
        if addr.eq_ignore_ascii_case(&org_upn) {
            continue;
        }
        let Some(ai) = w.mailbox_index(&addr) else { continue };
        let att_id = w.mailboxes[ai].id.clone();
        let seq = w.next_seq();
        let existing = copies.iter().find(|(m, _)| *m == att_id).map(|(_, id)| id.clone());
        let (copy_id, change) = match existing.filter(|id| w.mailboxes[ai].events.contains_key(id)) {
            Some(id) => {
                let c = w.mailboxes[ai].events.get_mut(&id).expect("checked above");
                for p in SHARED_PROPS {
                    if let Some(v) = org.props.get(*p) {
                        c.props.insert((*p).to_string(), v.clone());
                    }
                }
                c.start = org.start;
                c.end = org.end;
                c.start_tz = org.start_tz.clone();
                c.end_tz = org.end_tz.clone();
                c.is_cancelled = org.is_cancelled;
                c.kind = org.kind;
                c.recurrence = org.recurrence.clone();
                c.exceptions = keep_answers(&c.exceptions, &org.exceptions);
                c.cancelled = org.cancelled.clone();
                c.change_key = wire::change_key();
                c.modified = now;
                c.seq = seq;
                (id, "updated")
            }
            None => {
                let mut props = default_props();
                for p in SHARED_PROPS {
                    if let Some(v) = org.props.get(*p) {
                        props.insert((*p).to_string(), v.clone());
                    }
                }
                let copy = Event {
                    id: wire::item_id(),
                    ical_uid: org.ical_uid.clone(),
                    props,
                    start: org.start,
                    end: org.end,
                    start_tz: org.start_tz.clone(),
                    end_tz: org.end_tz.clone(),
                    transaction_id: None,
                    ext: Vec::new(),
                    change_key: wire::change_key(),
                    created: now,
                    modified: now,
                    seq,
                    order: seq,
                    is_organizer: false,
                    organizer: org.organizer.clone(),
                    response: "notResponded".into(),
                    response_time: None,
                    is_cancelled: org.is_cancelled,
                    copies: Vec::new(),
                    kind: org.kind,
                    series_master_id: None,
                    original_start: None,
                    recurrence: org.recurrence.clone(),
                    exceptions: org.exceptions.clone(),
                    cancelled: org.cancelled.clone(),
                };
                let id = copy.id.clone();
                w.mailboxes[ai].events.insert(id.clone(), copy);
                copies.push((att_id.clone(), id.clone()));
                (id, "created")
            }
        };
        let etag = wire::etag(&w.mailboxes[ai].events[&copy_id].change_key);
        notify(ctx, w, &att_id, &copy_id, &etag, change);
    }
    if let Some(e) = w.mailboxes[org_mb].events.get_mut(org_id) {
        e.copies = copies;
    }
}

/// Builds a new organizer event in `mb` from a POST body (also used by seeding).
fn new_event(seq: u64, mb: &Mailbox, input: Input, now: DateTime<Utc>) -> GResult<Event> {
    let (start, start_tz) = input.start.clone().ok_or_else(|| invalid("start is required."))?;
    let (end, end_tz) = input.end.clone().ok_or_else(|| invalid("end is required."))?;
    let mut props = default_props();
    props.extend(input.props);
    let mut ext = Vec::new();
    contacts::merge_ext(&mut ext, input.ext);
    let mut e = Event {
        id: wire::item_id(),
        ical_uid: ical_uid(),
        props,
        start,
        end,
        start_tz,
        end_tz,
        transaction_id: input.transaction_id,
        ext,
        change_key: wire::change_key(),
        created: now,
        modified: now,
        seq,
        order: seq,
        is_organizer: true,
        organizer: json!({"name": mb.display_name, "address": mb.upn}),
        response: "organizer".into(),
        response_time: None,
        is_cancelled: false,
        copies: Vec::new(),
        kind: EventKind::SingleInstance,
        series_master_id: None,
        original_start: None,
        recurrence: None,
        exceptions: Default::default(),
        cancelled: Default::default(),
    };
    apply_recurrence(&mut e, input.recurrence)?;
    check_times(&e)?;
    Ok(e)
}

/// An event for a seeded mailbox (Graph event JSON as for POST).
pub(crate) fn seed_event(seq: u64, mb: &Mailbox, body: &Map<String, Value>, now: DateTime<Utc>) -> GResult<Event> {
    new_event(seq, mb, parse_input(body)?, now)
}

pub(crate) fn create(ctx: &Ctx<'_>) -> GResult {
    let body = ctx.json_object()?;
    let input = parse_input(&body)?;
    let pref = prefer_tz(ctx);
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let mb_id = ctx.mailbox_id.clone().unwrap_or_default();
    let mi = mb_index(&w, &mb_id).ok_or_else(GraphError::not_found)?;
    let opts = |ctx: &Ctx<'_>, mb: &Mailbox| EventOpts {
        prefer_tz: pref.as_deref(),
        ext_ids: None,
        with_type: false,
        context: Some(entity_context(ctx, mb)),
    };
    let window = chrono::Duration::from_std(ctx.shared.cfg.transaction_window).unwrap_or_default();
    let tx = input.transaction_id.clone();
    if let Some(t) = &tx {
        // A client's retry of the same POST (same transactionId, same body,
        // soon after) returns the first event. Graph documents no more than
        // "avoids redundant POSTs on client retries" (event resource page):
        // another body, a late replay, or a replay after the first event was
        // deleted creates an event.
        let mb = &w.mailboxes[mi];
        let first = mb
            .transactions
            .iter()
            .rev()
            .find(|(id, sent, at, _)| id == t && *sent == Value::Object(body.clone()) && now - *at <= window)
            .and_then(|(_, _, _, eid)| mb.events.get(eid));
        if let Some(e) = first {
            return Ok(with_pref(Reply::created(render(e, &opts(ctx, mb))), &pref));
        }
    }
    let seq = w.next_seq();
    let e = new_event(seq, &w.mailboxes[mi], input, now)?;
    let id = e.id.clone();
    if let Some(t) = tx {
        let mb = &mut w.mailboxes[mi];
        mb.transactions.retain(|(_, _, at, _)| now - *at <= window);
        mb.transactions.push((t, Value::Object(body.clone()), now, id.clone()));
    }
    let etag = wire::etag(&e.change_key);
    w.mailboxes[mi].events.insert(id.clone(), e);
    notify(ctx, &w, &mb_id, &id, &etag, "created");
    sync_copies(ctx, &mut w, mi, &id);
    let mb = &w.mailboxes[mi];
    let v = render(&mb.events[&id], &opts(ctx, mb));
    drop(w);
    lock(&ctx.shared.stats).count_write("event");
    Ok(with_pref(Reply::created(v), &pref))
}

pub(crate) fn get(ctx: &Ctx<'_>, id: &str) -> GResult {
    let pref = prefer_tz(ctx);
    let ext_ids = contacts::expanded_ext_ids(ctx);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let e = find(mb, id).ok_or_else(GraphError::not_found)?;
    let opts = EventOpts {
        prefer_tz: pref.as_deref(),
        ext_ids: ext_ids.as_deref(),
        with_type: false,
        context: Some(entity_context(ctx, mb)),
    };
    Ok(with_pref(Reply::ok(render(&e, &opts)), &pref))
}

pub(crate) fn update(ctx: &Ctx<'_>, id: &str) -> GResult {
    let body = ctx.json_object()?;
    let input = parse_input(&body)?;
    if input.transaction_id.is_some() {
        return Err(invalid("transactionId cannot be changed."));
    }
    let pref = prefer_tz(ctx);
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let mb_id = ctx.mailbox_id.clone().unwrap_or_default();
    let mi = mb_index(&w, &mb_id).ok_or_else(GraphError::not_found)?;
    if !w.mailboxes[mi].events.contains_key(id) {
        if let Some((master, orig)) = parse_occurrence_id(id) {
            return update_instance(ctx, &mut w, mi, &master, orig, input, pref.as_deref());
        }
    }
    let seq = w.next_seq();
    let e = w.mailboxes[mi].events.get(id).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, e)?;
    let previous = e.clone();
    let mut next = e.clone();
    let moved = input.start.is_some() || input.end.is_some();
    next.props.extend(input.props);
    keep_statuses(&mut next.props, &previous.props);
    if let Some((t, z)) = input.start {
        next.start = t;
        next.start_tz = z;
    }
    if let Some((t, z)) = input.end {
        next.end = t;
        next.end_tz = z;
    }
    contacts::merge_ext(&mut next.ext, input.ext);
    if next.kind == EventKind::SeriesMaster && input.recurrence.is_none() && moved {
        // Moving a series master moves the pattern's start date with it.
        if let Some(r) = next.recurrence.as_mut() {
            let zone = tz::resolve(&r.time_zone).map(|z| z.tz).unwrap_or(chrono_tz::UTC);
            r.start_date = next.start.with_timezone(&zone).date_naive();
        }
    }
    apply_recurrence(&mut next, input.recurrence)?;
    check_times(&next)?;
    next.change_key = wire::change_key();
    next.modified = now;
    next.seq = seq;
    let etag = wire::etag(&next.change_key);
    let is_organizer = next.is_organizer;
    if previous.kind == EventKind::SeriesMaster {
        w.mailboxes[mi].series_history.push((seq, previous));
    }
    w.mailboxes[mi].events.insert(id.to_string(), next);
    notify(ctx, &w, &mb_id, id, &etag, "updated");
    if is_organizer {
        sync_copies(ctx, &mut w, mi, id);
    }
    let mb = &w.mailboxes[mi];
    let opts = EventOpts {
        prefer_tz: pref.as_deref(),
        ext_ids: None,
        with_type: false,
        context: Some(entity_context(ctx, mb)),
    };
    let v = render(&mb.events[id], &opts);
    drop(w);
    lock(&ctx.shared.stats).count_write("event");
    Ok(with_pref(Reply::ok(v), &pref))
}

pub(crate) fn delete(ctx: &Ctx<'_>, id: &str) -> GResult {
    let mut w = lock(&ctx.shared.world);
    let mb_id = ctx.mailbox_id.clone().unwrap_or_default();
    let mi = mb_index(&w, &mb_id).ok_or_else(GraphError::not_found)?;
    if !w.mailboxes[mi].events.contains_key(id) {
        if let Some((master, orig)) = parse_occurrence_id(id) {
            return cancel_instance(ctx, &mut w, mi, &master, orig);
        }
    }
    let seq = w.next_seq();
    let e = w.mailboxes[mi].events.get(id).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, e)?;
    let e = w.mailboxes[mi].events.remove(id).ok_or_else(GraphError::not_found)?;
    w.mailboxes[mi].event_tombstones.push(Tombstone {
        folder_id: String::new(),
        id: id.to_string(),
        seq,
        rest_id: None,
    });
    if e.kind == EventKind::SeriesMaster {
        w.mailboxes[mi].series_history.push((seq, e.clone()));
    }
    notify(ctx, &w, &mb_id, id, &wire::etag(&e.change_key), "deleted");
    if e.is_organizer {
        // Deleting a meeting cancels it for the attendees; their copies stay, marked cancelled.
        let now = ctx.shared.clock.now();
        for (att_mb, copy_id) in &e.copies {
            let Some(ai) = mb_index(&w, att_mb) else { continue };
            let seq = w.next_seq();
            let Some(c) = w.mailboxes[ai].events.get_mut(copy_id) else { continue };
            c.is_cancelled = true;
            let subject = c.props["subject"].as_str().unwrap_or_default().to_string();
            c.props.insert("subject".into(), json!(format!("Canceled: {subject}")));
            c.change_key = wire::change_key();
            c.modified = now;
            c.seq = seq;
            let etag = wire::etag(&c.change_key);
            notify(ctx, &w, att_mb, copy_id, &etag, "updated");
        }
    }
    drop(w);
    lock(&ctx.shared.stats).count_write("event");
    Ok(Reply::no_content())
}

pub(crate) fn list(ctx: &Ctx<'_>) -> GResult {
    let pref = prefer_tz(ctx);
    let top = ctx.page_size(10);
    let skip = ctx.q("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let filter = ctx.q("$filter").map(str::to_string);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let mut items: Vec<&Event> = mb.events.values().collect();
    if let Some(f) = &filter {
        let quoted: Vec<&str> = f.split('\'').skip(1).step_by(2).collect();
        if !(f.to_ascii_lowercase().starts_with("singlevalueextendedproperties/any(") && quoted.len() == 2) {
            return Err(GraphError::bad_request(
                "ErrorInvalidUrlQueryFilter",
                "The $filter expression is not supported.",
            ));
        }
        items.retain(|e| e.ext.iter().any(|x| ext_key(&x.id) == ext_key(quoted[0]) && x.value == quoted[1]));
    }
    items.sort_by_key(|e| e.order);
    page(ctx, items, skip, top, pref, format!("{}/$metadata#users('{}')/events", ctx.graph_root(), mb.id))
}

fn page(ctx: &Ctx<'_>, items: Vec<&Event>, skip: usize, top: usize, pref: Option<String>, context: String) -> GResult {
    let ext_ids = contacts::expanded_ext_ids(ctx);
    let opts = EventOpts { prefer_tz: pref.as_deref(), ext_ids: ext_ids.as_deref(), with_type: false, context: None };
    let total = items.len();
    let value: Vec<Value> = items.iter().skip(skip).take(top).map(|e| render(e, &opts)).collect();
    let mut out = json!({"@odata.context": context, "value": value});
    if skip + top < total {
        let mut q: Vec<(String, String)> =
            ctx.query.iter().filter(|(k, _)| k != "$skip" && k != "$top").cloned().collect();
        q.push(("$top".into(), top.to_string()));
        q.push(("$skip".into(), (skip + top).to_string()));
        let qs = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
        out["@odata.nextLink"] = json!(format!("{}{}?{}", ctx.graph_root(), ctx.req.path, qs));
    }
    Ok(with_pref(Reply::ok(out), &pref))
}

fn window(ctx: &Ctx<'_>) -> GResult<(DateTime<Utc>, DateTime<Utc>)> {
    let missing = || {
        GraphError::bad_request(
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )
    };
    let parse = |s: &str| -> GResult<DateTime<Utc>> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(t.with_timezone(&Utc));
        }
        // Without an offset the time is UTC (or the Prefer zone; UTC is what hqsync sends).
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|n| n.and_utc())
            .map_err(|_| GraphError::bad_request("ErrorInvalidParameter", format!("'{s}' is not a valid DateTime.")))
    };
    let start = parse(ctx.q("startDateTime").ok_or_else(missing)?)?;
    let end = parse(ctx.q("endDateTime").ok_or_else(missing)?)?;
    Ok((start, end))
}

fn overlaps(e: &Event, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    e.start < end && e.end > start || (e.start == e.end && e.start >= start && e.start < end)
}

pub(crate) fn calendar_view(ctx: &Ctx<'_>) -> GResult {
    let (start, end) = window(ctx)?;
    let pref = prefer_tz(ctx);
    let top = ctx.page_size(10);
    let skip = ctx.q("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let items = view_items(mb, start, end);
    page(ctx, items.iter().collect(), skip, top, pref, format!("{}/$metadata#Collection(event)", ctx.graph_root()))
}

/// `GET /users/{u}/events/{masterId}/instances?startDateTime&endDateTime`.
pub(crate) fn instances(ctx: &Ctx<'_>, id: &str) -> GResult {
    let (start, end) = window(ctx)?;
    let pref = prefer_tz(ctx);
    let top = ctx.page_size(10);
    let skip = ctx.q("$skip").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let w = lock(&ctx.shared.world);
    let mb = contacts::mailbox(&w, ctx)?;
    let master = mb.events.get(id).ok_or_else(GraphError::not_found)?;
    let mut items = if master.kind == EventKind::SeriesMaster { instances_in(master, start, end) } else { Vec::new() };
    items.sort_by_key(|e| e.start);
    page(ctx, items.iter().collect(), skip, top, pref, format!("{}/$metadata#Collection(event)", ctx.graph_root()))
}

/// PATCH of an occurrence: it becomes (or stays) an exception of its series.
fn update_instance(
    ctx: &Ctx<'_>,
    w: &mut World,
    mi: usize,
    master_id: &str,
    orig: DateTime<Utc>,
    input: Input,
    pref: Option<&str>,
) -> GResult {
    if input.recurrence.is_some() {
        return Err(invalid("The recurrence of an occurrence cannot be set."));
    }
    let seq = w.next_seq();
    let now = ctx.shared.clock.now();
    let mb = &w.mailboxes[mi];
    let current = find(mb, &occurrence_id(master_id, orig)).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, &current)?;
    let previous = mb.events.get(master_id).cloned().ok_or_else(GraphError::not_found)?;
    let mut ex = previous.exceptions.get(&orig.timestamp()).cloned().unwrap_or(EventException {
        props: Map::new(),
        start: current.start,
        end: current.end,
        start_tz: current.start_tz.clone(),
        end_tz: current.end_tz.clone(),
        change_key: String::new(),
        modified: now,
        response: None,
    });
    ex.props.extend(input.props);
    if let Some((t, z)) = input.start {
        ex.start = t;
        ex.start_tz = z;
    }
    if let Some((t, z)) = input.end {
        ex.end = t;
        ex.end_tz = z;
    }
    if ex.end < ex.start {
        return Err(invalid("The end time of the event must be after its start time."));
    }
    ex.change_key = wire::change_key();
    ex.modified = now;
    let mut master = previous.clone();
    master.exceptions.insert(orig.timestamp(), ex);
    master.seq = seq;
    let is_organizer = master.is_organizer;
    let mb = &mut w.mailboxes[mi];
    mb.series_history.push((seq, previous));
    mb.events.insert(master_id.to_string(), master);
    let updated = find(&w.mailboxes[mi], &occurrence_id(master_id, orig)).ok_or_else(GraphError::not_found)?;
    let mb_id = w.mailboxes[mi].id.clone();
    notify(ctx, w, &mb_id, &updated.id, &wire::etag(&updated.change_key), "updated");
    if is_organizer {
        sync_copies(ctx, w, mi, master_id);
    }
    let opts = EventOpts {
        prefer_tz: pref,
        ext_ids: None,
        with_type: false,
        context: Some(entity_context(ctx, &w.mailboxes[mi])),
    };
    lock(&ctx.shared.stats).count_write("event");
    Ok(with_pref(Reply::ok(render(&updated, &opts)), &pref.map(str::to_string)))
}

/// DELETE of an occurrence: that date of the series is cancelled.
fn cancel_instance(ctx: &Ctx<'_>, w: &mut World, mi: usize, master_id: &str, orig: DateTime<Utc>) -> GResult {
    let seq = w.next_seq();
    let mb = &w.mailboxes[mi];
    let current = find(mb, &occurrence_id(master_id, orig)).ok_or_else(GraphError::not_found)?;
    check_if_match(ctx, &current)?;
    let previous = mb.events.get(master_id).cloned().ok_or_else(GraphError::not_found)?;
    let mut master = previous.clone();
    master.exceptions.remove(&orig.timestamp());
    master.cancelled.insert(orig.timestamp());
    master.change_key = wire::change_key();
    master.seq = seq;
    let is_organizer = master.is_organizer;
    let mb = &mut w.mailboxes[mi];
    mb.series_history.push((seq, previous));
    mb.events.insert(master_id.to_string(), master);
    let mb_id = mb.id.clone();
    notify(ctx, w, &mb_id, &current.id, &wire::etag(&current.change_key), "deleted");
    if is_organizer {
        sync_copies(ctx, w, mi, master_id);
    }
    lock(&ctx.shared.stats).count_write("event");
    Ok(Reply::no_content())
}

/// Occurrence exceptions for an attendee copy after the organizer's series
/// changed: the organizer's exceptions, plus the attendee's own answers to
/// single occurrences (which only live in the attendee's mailbox).
fn keep_answers(
    own: &std::collections::BTreeMap<i64, EventException>,
    org: &std::collections::BTreeMap<i64, EventException>,
) -> std::collections::BTreeMap<i64, EventException> {
    let mut out = org.clone();
    for (ts, ex) in own.iter().filter(|(_, ex)| ex.response.is_some()) {
        match out.get_mut(ts) {
            Some(o) => o.response = ex.response.clone(),
            None => {
                out.insert(*ts, ex.clone());
            }
        }
    }
    out
}

/// A PATCH that rewrites `attendees` keeps the answers of people who stay on
/// the list (Exchange tracks responses per attendee, not per write).
fn keep_statuses(props: &mut Map<String, Value>, previous: &Map<String, Value>) {
    let Some(old) = previous.get("attendees").and_then(Value::as_array) else { return };
    let Some(Value::Array(list)) = props.get_mut("attendees") else { return };
    for a in list.iter_mut() {
        let Some(addr) = a["emailAddress"]["address"].as_str() else { continue };
        let before =
            old.iter().find(|o| o["emailAddress"]["address"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(addr)));
        if let Some(b) = before {
            a["status"] = b["status"].clone();
            if let Some(p) = b.get("proposedNewTime") {
                a["proposedNewTime"] = p.clone();
            }
        }
    }
}

// ------------------------------------------------------------------ responses

/// An invitee's answer: `POST …/events/{id}/accept|decline|tentativelyAccept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Accept,
    Decline,
    TentativelyAccept,
}

impl Answer {
    /// The action named by a path segment (already lower-cased), with or without the `microsoft.graph.` prefix.
    pub(crate) fn from_segment(seg: &str) -> Option<Answer> {
        match seg.strip_prefix("microsoft.graph.").unwrap_or(seg) {
            "accept" => Some(Answer::Accept),
            "decline" => Some(Answer::Decline),
            "tentativelyaccept" => Some(Answer::TentativelyAccept),
            _ => None,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Answer::Accept => "accept",
            Answer::Decline => "decline",
            Answer::TentativelyAccept => "tentativelyAccept",
        }
    }

    /// The value of `responseStatus.response` / `attendees[].status.response` it sets.
    fn response(self) -> &'static str {
        match self {
            Answer::Accept => "accepted",
            Answer::Decline => "declined",
            Answer::TentativelyAccept => "tentativelyAccepted",
        }
    }

    /// Exchange's answer when the organizer tries to answer their own meeting
    /// (EWS ResponseCode names; see the module doc of `sim::graph` for what is unconfirmed).
    fn organizer_error(self) -> GraphError {
        let (code, verb) = match self {
            Answer::Accept => ("ErrorCalendarIsOrganizerForAccept", "accept"),
            Answer::Decline => ("ErrorCalendarIsOrganizerForDecline", "decline"),
            Answer::TentativelyAccept => ("ErrorCalendarIsOrganizerForTentative", "tentatively accept"),
        };
        GraphError::bad_request(code, format!("You can't {verb} this meeting because you're the meeting organizer."))
    }
}

struct AnswerParams {
    send_response: bool,
    /// `proposedNewTime` as a timeSlot in UTC wire form.
    proposed: Option<Value>,
}

fn parse_answer(body: &Map<String, Value>, answer: Answer) -> GResult<AnswerParams> {
    let mut p = AnswerParams { send_response: true, proposed: None };
    for (k, v) in body {
        match k.as_str() {
            _ if k.starts_with('@') => {}
            "comment" => {
                if !(v.is_string() || v.is_null()) {
                    return Err(bad_value(k));
                }
            }
            "sendResponse" => match v {
                Value::Bool(b) => p.send_response = *b,
                Value::Null => {}
                _ => return Err(bad_value(k)),
            },
            "proposedNewTime" if answer != Answer::Accept && !v.is_null() => {
                let Value::Object(slot) = v else { return Err(bad_value(k)) };
                let start = tz::parse_dttz("start", slot.get("start").unwrap_or(&Value::Null))?.0;
                let end = tz::parse_dttz("end", slot.get("end").unwrap_or(&Value::Null))?.0;
                if end < start {
                    return Err(invalid("The end time of the proposed new time must be after its start time."));
                }
                p.proposed = Some(json!({"start": tz::format_dttz(start, None), "end": tz::format_dttz(end, None)}));
            }
            other => {
                return Err(GraphError::body_read(format!(
                    "The parameter '{other}' in the request payload is not a valid parameter for the operation '{}'.",
                    answer.action()
                )))
            }
        }
    }
    if p.proposed.is_some() && !p.send_response {
        return Err(invalid("A new time can only be proposed when the response is sent to the organizer."));
    }
    Ok(p)
}

/// An exception entry for the occurrence `current` that changes nothing yet.
fn blank_exception(current: &Event, now: DateTime<Utc>) -> EventException {
    EventException {
        props: Map::new(),
        start: current.start,
        end: current.end,
        start_tz: current.start_tz.clone(),
        end_tz: current.end_tz.clone(),
        change_key: String::new(),
        modified: now,
        response: None,
    }
}

/// Sets `address`'s status in an attendee list; false when they are not on it.
fn set_status(
    attendees: &mut Value,
    address: &str,
    response: &str,
    now: DateTime<Utc>,
    proposed: &Option<Value>,
) -> bool {
    let Some(list) = attendees.as_array_mut() else { return false };
    let Some(a) = list
        .iter_mut()
        .find(|a| a["emailAddress"]["address"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(address)))
    else {
        return false;
    };
    a["status"] = json!({"response": response, "time": wire::ts_7(now)});
    match proposed {
        Some(slot) => a["proposedNewTime"] = slot.clone(),
        None => {
            if let Some(o) = a.as_object_mut() {
                o.remove("proposedNewTime");
            }
        }
    }
    true
}

/// `POST /users/{u}/events/{id}/accept|decline|tentativelyAccept` on an
/// attendee copy (or one occurrence of it): the copy's `responseStatus`
/// changes and, with `sendResponse` (default true), the attendee's status on
/// the organizer's event of the same iCalUId. Answers 202 without a body.
pub(crate) fn respond(ctx: &Ctx<'_>, id: &str, answer: Answer) -> GResult {
    let body = ctx.json_object()?;
    let params = parse_answer(&body, answer)?;
    let now = ctx.shared.clock.now();
    let mut w = lock(&ctx.shared.world);
    let mb_id = ctx.mailbox_id.clone().unwrap_or_default();
    let mi = mb_index(&w, &mb_id).ok_or_else(GraphError::not_found)?;
    let current = find(&w.mailboxes[mi], id).ok_or_else(GraphError::not_found)?;
    if current.is_organizer {
        return Err(answer.organizer_error());
    }
    if params.proposed.is_some() && current.props.get("allowNewTimeProposals") == Some(&json!(false)) {
        return Err(invalid("The organizer of this meeting doesn't allow new time proposals."));
    }
    let occurrence = current.series_master_id.clone().zip(current.original_start);
    let seq = w.next_seq();
    // The copy's own answer.
    let (series_uid, etag) = match &occurrence {
        None => {
            let e = w.mailboxes[mi].events.get_mut(id).ok_or_else(GraphError::not_found)?;
            e.response = answer.response().to_string();
            e.response_time = Some(now);
            e.change_key = wire::change_key();
            e.modified = now;
            e.seq = seq;
            (e.ical_uid.clone(), wire::etag(&e.change_key))
        }
        Some((master_id, orig)) => {
            let mb = &mut w.mailboxes[mi];
            let previous = mb.events.get(master_id).cloned().ok_or_else(GraphError::not_found)?;
            let mut master = previous.clone();
            let ex = master.exceptions.entry(orig.timestamp()).or_insert_with(|| blank_exception(&current, now));
            ex.response = Some((answer.response().to_string(), now));
            ex.change_key = wire::change_key();
            ex.modified = now;
            let etag = wire::etag(&ex.change_key);
            master.seq = seq;
            let uid = master.ical_uid.clone();
            mb.series_history.push((seq, previous));
            mb.events.insert(master_id.clone(), master);
            (uid, etag)
        }
    };
    notify(ctx, &w, &mb_id, &current.id, &etag, "updated");
    if params.send_response {
        let attendee = w.mailboxes[mi].upn.clone();
        let organizer = current.organizer["address"].as_str().unwrap_or_default().to_string();
        let orig = occurrence.map(|(_, o)| o);
        tell_organizer(ctx, &mut w, &organizer, &series_uid, orig, &attendee, answer, now, &params.proposed);
    }
    drop(w);
    lock(&ctx.shared.stats).count_write("event");
    Ok(Reply { status: axum::http::StatusCode::ACCEPTED, headers: Default::default(), body: None })
}

/// The organizer's side of an answer: the attendee's status on the organizer's
/// event (or that one occurrence of it). Nothing happens when the organizer's
/// mailbox or event is not in the simulator or no longer lists the attendee.
#[allow(clippy::too_many_arguments)]
fn tell_organizer(
    ctx: &Ctx<'_>,
    w: &mut World,
    organizer: &str,
    uid: &str,
    orig: Option<DateTime<Utc>>,
    attendee: &str,
    answer: Answer,
    now: DateTime<Utc>,
    proposed: &Option<Value>,
) {
    let Some(oi) = w.mailbox_index(organizer) else { return };
    let org_mb = w.mailboxes[oi].id.clone();
    let Some(org_id) =
        w.mailboxes[oi].events.values().find(|e| e.is_organizer && e.ical_uid == uid).map(|e| e.id.clone())
    else {
        return;
    };
    let seq = w.next_seq();
    match orig {
        None => {
            let Some(e) = w.mailboxes[oi].events.get_mut(&org_id) else { return };
            let Some(list) = e.props.get_mut("attendees") else { return };
            if !set_status(list, attendee, answer.response(), now, proposed) {
                return;
            }
            e.change_key = wire::change_key();
            e.modified = now;
            e.seq = seq;
            let etag = wire::etag(&e.change_key);
            notify(ctx, w, &org_mb, &org_id, &etag, "updated");
        }
        Some(orig) => {
            let occ_id = occurrence_id(&org_id, orig);
            let mb = &mut w.mailboxes[oi];
            let Some(current) = find(mb, &occ_id) else { return };
            let Some(previous) = mb.events.get(&org_id).cloned() else { return };
            let mut list = current.props.get("attendees").cloned().unwrap_or_else(|| json!([]));
            if !set_status(&mut list, attendee, answer.response(), now, proposed) {
                return;
            }
            let mut master = previous.clone();
            let ex = master.exceptions.entry(orig.timestamp()).or_insert_with(|| blank_exception(&current, now));
            ex.props.insert("attendees".into(), list);
            ex.change_key = wire::change_key();
            ex.modified = now;
            let etag = wire::etag(&ex.change_key);
            master.seq = seq;
            mb.series_history.push((seq, previous));
            mb.events.insert(org_id.clone(), master);
            notify(ctx, w, &org_mb, &occ_id, &etag, "updated");
        }
    }
}

struct WindowSource {
    mailbox_id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl WindowSource {
    fn mailbox<'w>(&self, w: &'w World) -> Option<&'w Mailbox> {
        w.mailboxes.iter().find(|m| m.id == self.mailbox_id)
    }
}

impl DeltaSource for WindowSource {
    fn initial_ids(&self, w: &World) -> Vec<String> {
        let Some(mb) = self.mailbox(w) else { return Vec::new() };
        view_items(mb, self.start, self.end).into_iter().map(|e| e.id).collect()
    }

    fn changed_ids(&self, w: &World, watermark: u64) -> Vec<String> {
        let Some(mb) = self.mailbox(w) else { return Vec::new() };
        let mut changed: Vec<(u64, String)> = Vec::new();
        for e in mb.events.values().filter(|e| e.seq > watermark) {
            match e.kind {
                EventKind::SeriesMaster => {
                    changed.extend(instances_in(e, self.start, self.end).into_iter().map(|i| (e.seq, i.id)))
                }
                _ => changed.push((e.seq, e.id.clone())),
            }
        }
        // Occurrences of earlier versions of a series: gone ones come back as removed.
        for (seq, old) in mb.series_history.iter().filter(|(seq, _)| *seq > watermark) {
            changed.extend(instances_in(old, self.start, self.end).into_iter().map(|i| (*seq, i.id)));
        }
        changed.extend(mb.event_tombstones.iter().filter(|t| t.seq > watermark).map(|t| (t.seq, t.id.clone())));
        changed.sort();
        let mut seen = HashSet::new();
        changed.into_iter().filter(|(_, id)| seen.insert(id.clone())).map(|(_, id)| id).collect()
    }
}

/// `GET /users/{u}/calendarView/delta?startDateTime&endDateTime` (window fixed by the first request).
pub(crate) fn view_delta(ctx: &Ctx<'_>) -> GResult {
    let pref = prefer_tz(ctx);
    let mut w = lock(&ctx.shared.world);
    let mb_id = contacts::mailbox(&w, ctx)?.id.clone();
    let token = ctx.q("$skiptoken").or_else(|| ctx.q("$deltatoken")).filter(|t| !t.is_empty());
    let (start, end) = match token {
        // The window is encoded in the token itself, so it survives eviction (for the 410 Location).
        Some(tok) => delta::window_of(tok).ok_or_else(|| {
            GraphError::new(
                axum::http::StatusCode::GONE,
                "syncStateNotFound",
                "The sync state generation is not found.",
            )
        })?,
        None => window(ctx)?,
    };
    let scope = DeltaScope::CalendarView { mailbox_id: mb_id.clone(), start: start.timestamp(), end: end.timestamp() };
    let source = WindowSource { mailbox_id: mb_id.clone(), start, end };
    let path = ctx.req.path.clone();
    let page = delta::next_page(&mut w, ctx, scope, &path, &source)?;
    let mb = contacts::mailbox(&w, ctx)?;
    let opts = EventOpts { prefer_tz: pref.as_deref(), ext_ids: None, with_type: true, context: None };
    let out = page.body(ctx, "event", EVENT_TYPE, |id| {
        find(mb, id).filter(|e| e.kind != EventKind::SeriesMaster && overlaps(e, start, end)).map(|e| render(&e, &opts))
    });
    Ok(with_pref(Reply::ok(out), &pref))
}

pub(crate) fn counts(mb: &Mailbox) -> usize {
    mb.events.len()
}
