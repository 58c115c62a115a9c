//! The simulator's in-memory state: one tenant with one app registration,
//! its mailboxes (contact folders, contacts, tombstones for delta), the
//! subscriptions, the delta-token store, and the injectable clock.
//! Pure data and seeding; no HTTP here.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::recurrence::Recurrence;
use super::wire;
use super::SeedProfile;
use super::{contacts, events};

/// Real time plus an offset that `/_sim/clock` can advance (subscription
/// expiry and token lifetime run against it).
#[derive(Debug, Default)]
pub(crate) struct SimClock {
    offset: Mutex<Duration>,
}

impl SimClock {
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *super::lock(&self.offset)
    }
    pub fn advance(&self, by: Duration) {
        *super::lock(&self.offset) += by;
    }
    pub fn reset(&self) {
        *super::lock(&self.offset) = Duration::zero();
    }
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub client_id: String,
    pub client_secret: String,
    /// Object id of the app's service principal (subscription `creatorId`).
    pub service_principal_id: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ContactFolder {
    pub id: String,
    pub display_name: String,
    pub parent_folder_id: String,
    /// Sequence number of the last write (folder delta).
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ExtProp {
    pub id: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    /// The immutable id (what a request with `Prefer: IdType="ImmutableId"` sees); the map key.
    pub id: String,
    /// The regular id: the immutable id until the contact is moved to
    /// another folder, a new value after each move (Outlook's default ids
    /// change on a move; learn.microsoft.com/graph/outlook-immutable-id).
    pub rest_id: String,
    pub folder_id: String,
    /// The contact's writable properties, already in wire form (null/[]/{} defaults).
    pub props: Map<String, Value>,
    pub ext: Vec<ExtProp>,
    pub change_key: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    /// Sequence number of the last write (delta watermark comparisons).
    pub seq: u64,
    /// Creation order, for stable listings.
    pub order: u64,
}

/// A deleted item, remembered so that delta rounds can report `@removed`.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub folder_id: String,
    pub id: String,
    pub seq: u64,
    /// Contacts: the regular id the item had in that folder, when it differs from `id` (a move).
    pub rest_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub id: String,
    pub upn: String,
    /// The user's `mail` (primary SMTP address); the UPN when not seeded otherwise.
    pub mail: String,
    /// `proxyAddresses`: `SMTP:` the primary address, `smtp:` each alias.
    pub proxy_addresses: Vec<String>,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// False when the application access policy excludes this mailbox.
    pub in_policy_scope: bool,
    pub root_folder_id: String,
    pub default_contact_folder_id: String,
    pub contact_folders: Vec<ContactFolder>,
    pub contacts: BTreeMap<String, Contact>,
    pub contact_tombstones: Vec<Tombstone>,
    pub folder_tombstones: Vec<Tombstone>,
    pub events: BTreeMap<String, Event>,
    pub event_tombstones: Vec<Tombstone>,
    /// Earlier versions of series masters (with the seq that replaced them), so
    /// that delta can report occurrences that no longer exist as removed.
    pub series_history: Vec<(u64, Event)>,
    pub todo_lists: Vec<TodoList>,
    pub tasks: BTreeMap<String, Task>,
    /// `folder_id` holds the list id.
    pub task_tombstones: Vec<Tombstone>,
    pub list_tombstones: Vec<Tombstone>,
    /// Event POSTs that carried a `transactionId`: (id, the body as sent, when, event id).
    pub transactions: Vec<(String, Value, DateTime<Utc>, String)>,
}

impl Mailbox {
    pub fn new(upn: &str, display_name: &str, in_policy_scope: bool) -> Self {
        let (given, surname) = match display_name.split_once(' ') {
            Some((g, s)) => (Some(g.to_string()), Some(s.to_string())),
            None => (None, None),
        };
        Mailbox {
            id: uuid::Uuid::new_v4().to_string(),
            upn: upn.to_string(),
            mail: upn.to_string(),
            proxy_addresses: vec![format!("SMTP:{upn}")],
            display_name: display_name.to_string(),
            given_name: given,
            surname,
            in_policy_scope,
            root_folder_id: wire::folder_id(),
            default_contact_folder_id: wire::folder_id(),
            contact_folders: Vec::new(),
            contacts: BTreeMap::new(),
            contact_tombstones: Vec::new(),
            folder_tombstones: Vec::new(),
            events: BTreeMap::new(),
            event_tombstones: Vec::new(),
            series_history: Vec::new(),
            todo_lists: vec![TodoList {
                id: wire::folder_id(),
                display_name: "Tasks".into(),
                wellknown: "defaultList".into(),
                change_key: wire::change_key(),
                seq: 0,
            }],
            tasks: BTreeMap::new(),
            task_tombstones: Vec::new(),
            list_tombstones: Vec::new(),
            transactions: Vec::new(),
        }
    }

    pub fn folder_exists(&self, id: &str) -> bool {
        id == self.default_contact_folder_id || self.contact_folders.iter().any(|f| f.id == id)
    }
}

/// A calendar event (single instance) in one mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub id: String,
    pub ical_uid: String,
    /// Writable properties other than start/end, in wire form.
    pub props: Map<String, Value>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Windows zone names (or `tzone://Microsoft/Custom`) the times were written in.
    pub start_tz: String,
    pub end_tz: String,
    pub transaction_id: Option<String>,
    pub ext: Vec<ExtProp>,
    pub change_key: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub seq: u64,
    pub order: u64,
    pub is_organizer: bool,
    /// `{"name","address"}` of the organizer.
    pub organizer: Value,
    pub response: String,
    /// When this mailbox's owner last answered the invitation (`responseStatus.time`).
    pub response_time: Option<DateTime<Utc>>,
    pub is_cancelled: bool,
    /// Organizer side: the attendee copies (mailbox id, event id).
    pub copies: Vec<(String, String)>,
    pub kind: EventKind,
    /// Occurrences and exceptions: their series master.
    pub series_master_id: Option<String>,
    /// Occurrences and exceptions: the start the pattern gave them.
    pub original_start: Option<DateTime<Utc>>,
    /// Series masters: the pattern.
    pub recurrence: Option<Recurrence>,
    /// Series masters: changed occurrences, by original start (Unix seconds).
    pub exceptions: BTreeMap<i64, EventException>,
    /// Series masters: cancelled occurrences, by original start (Unix seconds).
    pub cancelled: BTreeSet<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    SingleInstance,
    SeriesMaster,
    Occurrence,
    Exception,
}

/// What a PATCH of an occurrence changed.
#[derive(Debug, Clone)]
pub(crate) struct EventException {
    pub props: Map<String, Value>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub start_tz: String,
    pub end_tz: String,
    pub change_key: String,
    pub modified: DateTime<Utc>,
    /// Attendee side: this occurrence's own answer (`responseStatus` response and time).
    pub response: Option<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct TodoList {
    pub id: String,
    pub display_name: String,
    pub wellknown: String,
    pub change_key: String,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub id: String,
    pub list_id: String,
    /// Writable properties in wire form (unset dateTimeTimeZone fields are absent).
    pub props: Map<String, Value>,
    pub linked_resources: Vec<Value>,
    /// Open extensions, each with `extensionName` and its custom properties.
    pub extensions: Vec<Map<String, Value>>,
    pub change_key: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub seq: u64,
    pub order: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Events,
    Contacts,
    /// `users/{id}/todo/lists/{listId}/tasks` (app-only with `Tasks.ReadWrite.All`, current permission table).
    Tasks,
}

#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub id: String,
    /// As echoed: relative, without leading `/`.
    pub resource: String,
    pub kind: ResourceKind,
    pub mailbox_id: String,
    /// For contact subscriptions: the folder watched; for task subscriptions: the list.
    pub folder_id: Option<String>,
    /// Created with `Prefer: IdType="ImmutableId"`: its notifications name immutable ids.
    pub immutable_ids: bool,
    pub change_types: Vec<String>,
    pub notification_url: String,
    pub lifecycle_url: Option<String>,
    pub expiration: DateTime<Utc>,
    pub client_state: Option<String>,
    pub tls: String,
    /// Set by a `reauthorizationRequired` event; delivery pauses until reauthorized.
    pub needs_reauthorization: bool,
    /// When (simulator clock) the last automatic `reauthorizationRequired` went out; a renewal clears it.
    pub last_reauthorization_notice: Option<DateTime<Utc>>,
}

/// Where a delta round reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeltaScope {
    FolderContacts {
        mailbox_id: String,
        folder_id: String,
    },
    ContactFolders {
        mailbox_id: String,
    },
    /// `calendarView/delta`: the window (Unix seconds) is fixed by the first request.
    CalendarView {
        mailbox_id: String,
        start: i64,
        end: i64,
    },
    TodoLists {
        mailbox_id: String,
    },
    TodoTasks {
        mailbox_id: String,
        list_id: String,
    },
}

/// Server-side state behind an opaque `$skiptoken` / `$deltatoken`.
#[derive(Debug, Clone)]
pub(crate) struct DeltaCursor {
    pub scope: DeltaScope,
    /// Path (below `/v1.0`) the links are built on.
    pub path: String,
    /// Ids still to be returned in this round (skiptoken) — empty for a deltatoken.
    pub pending: VecDeque<String>,
    /// Sequence number at the start of the round: the next round reports changes after it.
    pub watermark: u64,
    pub select: Option<Vec<String>>,
    pub page_size: usize,
    /// Ids of the page this cursor's link followed (for the replay fault).
    pub last_page: Vec<String>,
    /// The page this link followed was an injected empty one (so the next is not).
    pub after_empty: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct World {
    pub tenant_id: String,
    pub domain: String,
    pub app: App,
    pub mailboxes: Vec<Mailbox>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub delta_tokens: HashMap<String, DeltaCursor>,
    pub seq: u64,
}

/// Explicit seed (`POST /_sim/seed`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct SeedSpec {
    pub profile: Option<String>,
    pub tenant_id: Option<String>,
    pub domain: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// The application permissions the token's `roles` claim lists (default: all four hqsync needs).
    pub roles: Option<Vec<String>>,
    pub mailboxes: Vec<SeedMailbox>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeedMailbox {
    pub user_principal_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default = "yes")]
    pub in_policy_scope: bool,
    /// The user's mail address when it is not the UPN (test seeds; the
    /// demo's users have none: their mail is their UPN).
    #[serde(default)]
    pub mail: Option<String>,
    /// Further SMTP addresses (aliases), without the `smtp:` prefix.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Contacts in the default Contacts folder (Graph contact JSON).
    #[serde(default)]
    pub contacts: Vec<Map<String, Value>>,
    #[serde(default)]
    pub contact_folders: Vec<SeedFolder>,
    /// Events in the primary calendar (Graph event JSON as for POST; this mailbox organizes them).
    #[serde(default)]
    pub events: Vec<Map<String, Value>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeedFolder {
    pub display_name: String,
    #[serde(default)]
    pub contacts: Vec<Map<String, Value>>,
}

pub(crate) const DEMO_TENANT_ID: &str = "3f2a6c1e-8b4d-4e7a-9c5f-1d2e3f4a5b6c";
pub(crate) const DEMO_CLIENT_ID: &str = "b7e4c2a9-5d1f-4a3b-8e6c-9f0a1b2c3d4e";
pub(crate) const DEMO_CLIENT_SECRET: &str = "hqsync-sim~Secret.0123456789abcdefghij";
pub(crate) const DEMO_DOMAIN: &str = "agentur-beispiel.de";

impl World {
    pub fn new(tenant_id: &str, domain: &str, client_id: &str, client_secret: &str) -> Self {
        World {
            tenant_id: tenant_id.to_string(),
            domain: domain.to_string(),
            app: App {
                client_id: client_id.to_string(),
                client_secret: client_secret.to_string(),
                service_principal_id: uuid::Uuid::new_v4().to_string(),
                roles: ["Calendars.ReadWrite", "Contacts.ReadWrite", "Tasks.ReadWrite.All", "User.Read.All"]
                    .map(String::from)
                    .to_vec(),
            },
            mailboxes: Vec::new(),
            subscriptions: BTreeMap::new(),
            delta_tokens: HashMap::new(),
            seq: 0,
        }
    }

    pub fn seeded(profile: SeedProfile) -> Self {
        let mut w = World::new(DEMO_TENANT_ID, DEMO_DOMAIN, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET);
        if profile == SeedProfile::Demo {
            // Infallible: the demo data below is well-formed.
            let _ = w.apply_seed(demo_seed());
        }
        w
    }

    /// Replaces tenant/app (when given) and adds the mailboxes of `spec`.
    pub fn from_spec(spec: SeedSpec) -> Result<Self, String> {
        let mut w = World::new(
            spec.tenant_id.as_deref().unwrap_or(DEMO_TENANT_ID),
            spec.domain.as_deref().unwrap_or(DEMO_DOMAIN),
            spec.client_id.as_deref().unwrap_or(DEMO_CLIENT_ID),
            spec.client_secret.as_deref().unwrap_or(DEMO_CLIENT_SECRET),
        );
        if let Some(roles) = spec.roles {
            w.app.roles = roles;
        }
        w.apply_seed(spec.mailboxes)?;
        Ok(w)
    }

    fn apply_seed(&mut self, mailboxes: Vec<SeedMailbox>) -> Result<(), String> {
        let now = Utc::now();
        for m in mailboxes {
            if self.mailbox_index(&m.user_principal_name).is_some() {
                return Err(format!("duplicate mailbox {}", m.user_principal_name));
            }
            let display = m.display_name.clone().unwrap_or_else(|| m.user_principal_name.clone());
            let mut mb = Mailbox::new(&m.user_principal_name, &display, m.in_policy_scope);
            if let Some(mail) = m.mail.filter(|s| !s.trim().is_empty()) {
                mb.proxy_addresses = vec![format!("SMTP:{mail}")];
                mb.mail = mail;
            }
            mb.proxy_addresses.extend(m.aliases.iter().map(|a| format!("smtp:{a}")));
            let default_folder = mb.default_contact_folder_id.clone();
            for c in m.contacts {
                let contact =
                    contacts::new_contact(self.next_seq(), &default_folder, &c, now).map_err(|e| e.message)?;
                mb.contacts.insert(contact.id.clone(), contact);
            }
            for f in m.contact_folders {
                let folder = ContactFolder {
                    id: wire::folder_id(),
                    display_name: f.display_name,
                    parent_folder_id: mb.default_contact_folder_id.clone(),
                    seq: self.next_seq(),
                };
                for c in f.contacts {
                    let contact = contacts::new_contact(self.next_seq(), &folder.id, &c, now).map_err(|e| e.message)?;
                    mb.contacts.insert(contact.id.clone(), contact);
                }
                mb.contact_folders.push(folder);
            }
            for e in m.events {
                let event = events::seed_event(self.next_seq(), &mb, &e, now).map_err(|e| e.message)?;
                mb.events.insert(event.id.clone(), event);
            }
            self.mailboxes.push(mb);
        }
        Ok(())
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Finds a mailbox by id or UPN (UPNs compare case-insensitively, ids exactly).
    pub fn mailbox_index(&self, user: &str) -> Option<usize> {
        self.mailboxes.iter().position(|m| m.id == user || m.upn.eq_ignore_ascii_case(user))
    }

    /// True when `user` is one of a mailbox's email addresses (mail or a
    /// proxy address) but not its UPN: Graph does not take it as a key.
    pub fn is_address_not_key(&self, user: &str) -> bool {
        self.mailbox_index(user).is_none()
            && self.mailboxes.iter().any(|m| {
                m.mail.eq_ignore_ascii_case(user)
                    || m.proxy_addresses
                        .iter()
                        .any(|p| p.split_once(':').is_some_and(|(_, a)| a.eq_ignore_ascii_case(user)))
            })
    }
}

fn demo_seed() -> Vec<SeedMailbox> {
    let people = [
        ("anna.schmidt", "Anna Schmidt"),
        ("ben.mueller", "Ben Müller"),
        ("clara.wagner", "Clara Wagner"),
        ("david.fischer", "David Fischer"),
    ];
    let contact = |given: &str, surname: &str, company: &str, email: &str, phone: &str| -> Map<String, Value> {
        let v = serde_json::json!({
            "givenName": given, "surname": surname, "displayName": format!("{given} {surname}"),
            "companyName": company, "businessPhones": [phone],
            "emailAddresses": [{"name": format!("{given} {surname}"), "address": email}],
        });
        v.as_object().cloned().unwrap_or_default()
    };
    people
        .iter()
        .enumerate()
        .map(|(i, (local, name))| SeedMailbox {
            user_principal_name: format!("{local}@{DEMO_DOMAIN}"),
            display_name: Some(name.to_string()),
            in_policy_scope: true,
            mail: None,
            aliases: Vec::new(),
            contacts: match i {
                0 => vec![
                    contact(
                        "Jonas",
                        "Becker",
                        "Bäckerei Becker GmbH",
                        "jonas.becker@baeckerei-becker.de",
                        "+49 30 1234567",
                    ),
                    contact(
                        "Lena",
                        "Hoffmann",
                        "Hoffmann & Partner",
                        "l.hoffmann@hoffmann-partner.de",
                        "+49 89 7654321",
                    ),
                ],
                1 => {
                    vec![contact("Felix", "Koch", "Koch Logistik AG", "felix.koch@koch-logistik.de", "+49 40 5550101")]
                }
                _ => Vec::new(),
            },
            contact_folders: Vec::new(),
            events: demo_events(i),
        })
        .collect()
}

/// A few appointments already in Exchange, in the coming weeks (Berlin time).
fn demo_events(person: usize) -> Vec<Map<String, Value>> {
    let monday = {
        let today = Utc::now().date_naive();
        today + chrono::Duration::days(7 - i64::from(chrono::Datelike::weekday(&today).num_days_from_monday()))
    };
    let at = |days: i64, hour: u32| format!("{}T{hour:02}:00:00", monday + chrono::Duration::days(days));
    let event = |subject: &str, days: i64, hour: u32, hours: u32, extra: Value| -> Map<String, Value> {
        let mut v = serde_json::json!({
            "subject": subject,
            "body": {"contentType": "html", "content": ""},
            "start": {"dateTime": at(days, hour), "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": at(days, hour + hours), "timeZone": "W. Europe Standard Time"},
        });
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v.as_object().cloned().unwrap_or_default()
    };
    match person {
        0 => vec![
            event(
                "Kundentermin Bäckerei Becker",
                1,
                10,
                1,
                serde_json::json!({"location": {"displayName": "Berlin, Hauptstraße 5"}}),
            ),
            event(
                "Team-Meeting",
                0,
                9,
                1,
                serde_json::json!({"recurrence": {
                    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "monday"},
                    "range": {"type": "noEnd", "startDate": monday.to_string(), "recurrenceTimeZone": "W. Europe Standard Time"},
                }}),
            ),
        ],
        1 => vec![event("Zahnarzt", 2, 15, 1, serde_json::json!({"sensitivity": "private"}))],
        _ => Vec::new(),
    }
}
