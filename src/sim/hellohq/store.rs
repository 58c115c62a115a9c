//! The simulator's in-memory database: one table per helloHQ entity, int32
//! id sequences, audit stamping, full-replace writes with the validation the
//! live API applies, the deletions log and the change feed for webhooks.
//! Rows are stored as JSON in the v2 (camelCase) shape plus a few internal
//! link lists; `render_*` produce the exact v1/v2 wire views. This module
//! never does I/O and never awaits: callers hold its mutex only briefly.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::query::parse_instant;

/// Entities that have webhooks and appear in the deletions log (C2, A15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    Task,
    ContactPerson,
    Company,
    Project,
    Lead,
    User,
    Absence,
}

impl Entity {
    /// Name in webhook `type` and `data.entity` (C2).
    pub fn wire_name(self) -> &'static str {
        match self {
            Entity::Task => "task",
            Entity::ContactPerson => "contactPerson",
            Entity::Company => "company",
            Entity::Project => "project",
            Entity::Lead => "lead",
            Entity::User => "user",
            Entity::Absence => "absence",
        }
    }

    /// `DatabaseObject` of a ConfigSystemEvent (A15).
    pub fn database_object(self) -> &'static str {
        match self {
            Entity::Task => "Task",
            Entity::ContactPerson => "ContactPerson",
            Entity::Company => "Company",
            Entity::Project => "Project",
            Entity::Lead => "Lead",
            Entity::User => "User",
            Entity::Absence => "UserAbsence",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn wire_name(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// One committed change, handed to the webhook dispatcher.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub entity: Entity,
    pub id: i32,
    pub kind: ChangeKind,
    pub at: DateTime<Utc>,
}

/// Who is writing: the sync token (no user context) or one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Sync,
    User(i32),
}

impl Actor {
    /// The audit id: the sync token writes as the system (0).
    fn audit_id(self) -> i32 {
        match self {
            Actor::Sync => 0,
            Actor::User(id) => id,
        }
    }
}

/// Why a write was refused; rendered as RFC 7807 by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("not found")]
    NotFound,
    #[error("validation failed: {0:?}")]
    Invalid(BTreeMap<String, Vec<String>>),
}

fn invalid(field: &str, message: impl Into<String>) -> WriteError {
    WriteError::Invalid(BTreeMap::from([(field.to_string(), vec![message.into()])]))
}

pub type WriteResult<T> = Result<T, WriteError>;

pub const SALUTATION_FORMS: [&str; 3] = ["Formal", "Informal", "Neutral"];

/// `TaskClassification` in the published order (the integer form, A6).
pub const TASK_CLASSIFICATIONS: [&str; 37] = [
    "Project",
    "ContactHistory",
    "File",
    "Private",
    "Lead",
    "SickLeave",
    "Vacation",
    "CompanyAbsence",
    "Template",
    "PrivateAbsence",
    "OvertimeCompensation",
    "PrivateAppointment",
    "PublicAppointment",
    "Outage",
    "Maintenence",
    "BuildingMeasure",
    "ForeignVacation",
    "Risk",
    "ChecklistItem",
    "Article",
    "ChecklistItemTemplate",
    "Checklist",
    "ChecklistTemplate",
    "RecurrencyTask",
    "RecurrencyException",
    "Document",
    "UnscheduledAppointment",
    "ProfessionalEducation",
    "TradeSchool",
    "SpecialLeave",
    "ParentalLeave",
    "VacationUnpaid",
    "PrivateRecurrencyTask",
    "SickLeaveUnpaid",
    "RemoteWork",
    "ChildSick",
    "MaternityLeave",
];

/// v2 absence types (A8).
pub const ABSENCE_TYPES: [&str; 18] = [
    "Vacation",
    "PrivateAbsence",
    "CompanyAbsence",
    "SickLeave",
    "SickLeaveUnpaid",
    "OvertimeCompensation",
    "ProfessionalEducation",
    "TradeSchool",
    "SpecialLeave",
    "ParentalLeave",
    "VacationUnpaid",
    "RemoteWork",
    "ChildSick",
    "MaternityLeave",
    "Outage",
    "Maintenence",
    "BuildingMeasure",
    "ForeignVacation",
];

/// Lead statuses (v1 `LeadStatuses`): id, name, type.
const LEAD_STATUSES: [(i32, &str, &str); 3] =
    [(1, "Offen", "Open"), (2, "Gewonnen", "Successful"), (3, "Verloren", "Unsuccessful")];

// ---- field schemas ---------------------------------------------------------

#[derive(Clone, Copy)]
enum K {
    Str,
    Bool,
    Int,
    IntZero,
    Num,
    Utc,
    Local,
    Any,
}

const TASK_FIELDS: &[(&str, K)] = &[
    ("name", K::Str),
    ("description", K::Str),
    ("startOn", K::Utc),
    ("endOn", K::Utc),
    ("startDate", K::Local),
    ("endDate", K::Local),
    ("isAppointment", K::Bool),
    ("place", K::Str),
    ("iCalUId", K::Str),
    ("recurrencyStorage", K::Str),
    ("originalStartOn", K::Utc),
    ("parentId", K::Int),
    ("projectId", K::Int),
    ("leadId", K::Int),
    ("phaseId", K::Int),
    ("contactPersonHistoryId", K::Int),
    ("isDone", K::Bool),
    ("percentDone", K::IntZero),
    ("isPriority", K::Bool),
    ("plannedEffort", K::Num),
    ("remaining", K::Num),
    ("duration", K::Num),
    ("durationUnit", K::Str),
    ("syncId", K::Str),
    ("lastSyncOn", K::Utc),
    ("shouldBeSynced", K::Bool),
    ("color", K::Str),
    ("taskTypeId", K::Int),
    ("taskTypeStatusId", K::Int),
];

/// TaskBaseDto properties the simulator does not model; served as null.
const TASK_UNSTORED_FIELDS: &[&str] = &[
    "index",
    "depth",
    "baselineStartOn",
    "baselineEndOn",
    "baselinePercentDone",
    "isEmailDone",
    "isAdminPhase",
    "billedSum",
    "billingMode",
    "articleQuantity",
    "articleTargetQuantity",
    "isFixed",
    "currency",
    "isApproved",
    "barcode",
    "jiraProjectName",
    "articleVersionId",
    "aworkSyncId",
    "checklistTemplateId",
    "configWorkflowId",
    "documentId",
    "feedbackFileUniqueId",
    "fileId",
    "financesBookingAccountId",
    "financesCostCenter1Id",
    "financesCostCenter2Id",
    "importTaskId",
    "projectBudgetId",
    "projectRoleId",
    "projectTemplateId",
];

const CONTACT_FIELDS: &[(&str, K)] = &[
    ("firstName", K::Str),
    ("lastName", K::Str),
    ("position", K::Str),
    ("phoneLandline", K::Str),
    ("phoneMobile", K::Str),
    ("salutation", K::Str),
    ("title", K::Str),
    ("language", K::Str),
    ("birthdate", K::Str),
    ("note", K::Str),
    ("customFields", K::Any),
];

const ADDRESS_FIELDS: &[(&str, K)] = &[
    ("alternativeCompanyName", K::Str),
    ("additionalInformation", K::Str),
    ("street", K::Str),
    ("houseNumber", K::Str),
    ("zipCode", K::Str),
    ("city", K::Str),
    ("country", K::Str),
    ("description", K::Str),
    ("phone", K::Str),
    ("email", K::Str),
    ("fax", K::Str),
    ("website", K::Str),
    ("addressLine2", K::Str),
    ("standardForDocumentType", K::Any),
];
const ADDRESS_REQUIRED: [&str; 5] = ["street", "zipCode", "city", "country", "description"];

const COMPANY_FIELDS: &[(&str, K)] = &[
    ("name", K::Str),
    ("industrialSector", K::Str),
    ("description", K::Str),
    ("iban", K::Str),
    ("bic", K::Str),
    ("homepage", K::Str),
    ("vatId", K::Str),
    ("debitorNumber", K::Int),
    ("creditorNumber", K::Int),
    ("routingId", K::Str),
    ("customFields", K::Any),
];

const USER_FIELDS: &[(&str, K)] = &[
    ("firstName", K::Str),
    ("lastName", K::Str),
    ("eMailPrivate", K::Str),
    ("eMailWork", K::Str),
    ("customFields", K::Any),
];

const PROJECT_FIELDS: &[(&str, K)] = &[
    ("name", K::Str),
    ("number", K::Str),
    ("startDate", K::Local),
    ("companyId", K::Int),
    ("internalContactPersonId", K::Int),
    ("customFields", K::Any),
];

const LEAD_FIELDS: &[(&str, K)] = &[
    ("name", K::Str),
    ("number", K::Str),
    ("companyId", K::Int),
    ("statusId", K::Int),
    ("cashOn", K::Local),
    ("closingProbability", K::Num),
    ("currency", K::Str),
    ("volume", K::Num),
    ("responsibleUserId", K::Int),
    ("projectId", K::Int),
];

/// Copies `fields` from `body` into `row`, clearing the omitted ones (the
/// full-replace rule of A5), and checks each value's JSON type.
fn assign(row: &mut Map<String, Value>, body: &Map<String, Value>, fields: &[(&str, K)]) -> WriteResult<()> {
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, kind) in fields {
        let v = body.get(*name).cloned().unwrap_or(Value::Null);
        let v = match (kind, v) {
            (K::Bool, Value::Null) => Value::Bool(false),
            (K::IntZero, Value::Null) => Value::from(0),
            (_, Value::Null) => Value::Null,
            (K::Str, Value::String(s)) => Value::String(s),
            (K::Bool, Value::Bool(b)) => Value::Bool(b),
            (K::Int | K::IntZero, Value::Number(n)) if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) => {
                Value::Number(n)
            }
            (K::Num, Value::Number(n)) => Value::Number(n),
            (K::Utc, Value::String(s)) => match parse_instant(&s) {
                Some(t) => Value::String(fmt_utc(t)),
                None => {
                    errors.entry(name.to_string()).or_default().push(format!("'{s}' is not a date-time"));
                    continue;
                }
            },
            (K::Local, Value::String(s)) => match parse_instant(&s) {
                // `…Date` is local midnight without offset (A4): keep the wall time.
                Some(t) => Value::String(t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string()),
                None => {
                    errors.entry(name.to_string()).or_default().push(format!("'{s}' is not a date"));
                    continue;
                }
            },
            (K::Any, v) => v,
            (_, v) => {
                errors.entry(name.to_string()).or_default().push(format!("unexpected value {v}"));
                continue;
            }
        };
        row.insert(name.to_string(), v);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(WriteError::Invalid(errors))
    }
}

pub fn fmt_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn as_obj(body: &Value) -> WriteResult<&Map<String, Value>> {
    body.as_object().ok_or_else(|| invalid("body", "a JSON object is required"))
}

fn id_of(v: &Value, key: &str) -> Option<i32> {
    v.get(key).and_then(Value::as_i64).and_then(|i| i32::try_from(i).ok())
}

fn nonempty_str<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str).filter(|s| !s.trim().is_empty())
}

/// Accepts an enum as its name or its integer (A6); returns the name.
fn enum_name(v: &Value, names: &[&'static str]) -> Option<&'static str> {
    match v {
        Value::String(s) => names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s.trim()))
            .copied()
            .or_else(|| s.trim().parse::<usize>().ok().and_then(|i| names.get(i).copied())),
        Value::Number(n) => n.as_u64().and_then(|i| names.get(i as usize).copied()),
        _ => None,
    }
}

// ---- the database ----------------------------------------------------------

/// All simulated data of one helloHQ system.
pub struct Db {
    pub users: BTreeMap<i32, Value>,
    pub company_types: BTreeMap<i32, Value>,
    pub companies: BTreeMap<i32, Value>,
    pub contacts: BTreeMap<i32, Value>,
    pub projects: BTreeMap<i32, Value>,
    pub leads: BTreeMap<i32, Value>,
    pub tasks: BTreeMap<i32, Value>,
    pub resources: BTreeMap<i32, Value>,
    pub absences: BTreeMap<i32, Value>,
    /// ConfigSystemEvents (v1 PascalCase), oldest first.
    pub events: Vec<Value>,
    seqs: HashMap<&'static str, i32>,
    last_stamp: DateTime<Utc>,
    /// Writes per entity since the last reset (for `/_sim/stats`).
    pub writes: BTreeMap<&'static str, u64>,
    /// `/_sim/writes` (off until a bench turns it on; a reset turns it off).
    pub write_log: crate::sim::writelog::WriteLog,
    notify: Option<UnboundedSender<ChangeEvent>>,
}

impl Db {
    pub fn new(notify: Option<UnboundedSender<ChangeEvent>>) -> Db {
        Db {
            users: BTreeMap::new(),
            company_types: BTreeMap::new(),
            companies: BTreeMap::new(),
            contacts: BTreeMap::new(),
            projects: BTreeMap::new(),
            leads: BTreeMap::new(),
            tasks: BTreeMap::new(),
            resources: BTreeMap::new(),
            absences: BTreeMap::new(),
            events: Vec::new(),
            seqs: HashMap::new(),
            last_stamp: DateTime::<Utc>::MIN_UTC,
            writes: BTreeMap::new(),
            write_log: crate::sim::writelog::WriteLog::default(),
            notify,
        }
    }

    /// Webhooks off while seeding: seed data is the starting state, not a change.
    pub fn set_notify(&mut self, notify: Option<UnboundedSender<ChangeEvent>>) -> Option<UnboundedSender<ChangeEvent>> {
        std::mem::replace(&mut self.notify, notify)
    }

    /// Each table has its own int32 identity; the ranges start apart so an id
    /// used on the wrong table is caught instead of silently matching.
    fn next_id(&mut self, table: &'static str) -> i32 {
        let start = match table {
            "user" => 1,
            "companyType" => 1,
            "company" => 100,
            "contact" => 200,
            "project" => 300,
            "lead" => 400,
            "task" => 96000,
            "resource" => 1,
            "absence" => 500,
            "address" => 700,
            "assignment" => 1,
            "member" => 1,
            "typeLink" => 1,
            "responsible" => 1,
            "event" => 1,
            _ => 1,
        };
        let n = self.seqs.entry(table).or_insert(start - 1);
        *n += 1;
        *n
    }

    /// Monotonic write clock: two writes never share an `updatedOn`, so a
    /// poll with `gt` after one write sees every later one.
    fn stamp(&mut self) -> DateTime<Utc> {
        let now = Utc::now();
        let now = chrono::DurationRound::duration_trunc(now, Duration::milliseconds(1)).unwrap_or(now);
        let t = if now > self.last_stamp { now } else { self.last_stamp + Duration::milliseconds(1) };
        self.last_stamp = t;
        t
    }

    fn audit_create(&mut self, row: &mut Map<String, Value>, id: i32, actor: Actor) -> DateTime<Utc> {
        let t = self.stamp();
        row.insert("id".into(), id.into());
        row.insert("createdOn".into(), fmt_utc(t).into());
        row.insert("createdBy".into(), actor.audit_id().into());
        row.insert("updatedOn".into(), fmt_utc(t).into());
        row.insert("updatedBy".into(), actor.audit_id().into());
        t
    }

    fn audit_update(&mut self, row: &mut Map<String, Value>, actor: Actor) -> DateTime<Utc> {
        let t = self.stamp();
        row.insert("updatedOn".into(), fmt_utc(t).into());
        row.insert("updatedBy".into(), actor.audit_id().into());
        t
    }

    fn changed(&mut self, entity: Entity, id: i32, kind: ChangeKind, at: DateTime<Utc>, actor: Actor) {
        *self.writes.entry(entity.wire_name()).or_default() += 1;
        if self.write_log.recording() {
            let row = match entity {
                Entity::ContactPerson => self.contacts.get(&id),
                Entity::Task => self.tasks.get(&id),
                _ => None,
            };
            let row = row.cloned().unwrap_or(Value::Null);
            self.write_log.record(entity.wire_name(), None, &id.to_string(), &row);
        }
        if kind == ChangeKind::Deleted {
            let eid = self.next_id("event");
            self.events.push(json!({
                "Id": eid,
                "EntityId": id,
                "DatabaseObject": entity.database_object(),
                "PropertyName": null,
                "OldValue": null,
                "NewValue": null,
                "Type": "EntityDeleted",
                "CreatedOn": fmt_utc(at),
                "CreatedBy": actor.audit_id(),
                "UpdatedOn": fmt_utc(at),
                "UpdatedBy": actor.audit_id(),
            }));
        }
        if let Some(tx) = &self.notify {
            // A closed channel means the simulator is shutting down.
            let _ = tx.send(ChangeEvent { entity, id, kind, at });
        }
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("user", self.users.len()),
            ("companyType", self.company_types.len()),
            ("company", self.companies.len()),
            ("contactPerson", self.contacts.len()),
            ("project", self.projects.len()),
            ("lead", self.leads.len()),
            ("task", self.tasks.len()),
            ("resource", self.resources.len()),
            ("absence", self.absences.len()),
            ("deletedEvent", self.events.len()),
        ])
    }

    // ---- users, types, resources ----

    pub fn create_user(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let body = as_obj(body)?;
        if nonempty_str(body, "lastName").is_none() {
            return Err(invalid("lastName", "The LastName field is required."));
        }
        let mut row = Map::new();
        assign(&mut row, body, USER_FIELDS)?;
        row.insert("employeeNumber".into(), body.get("employeeNumber").cloned().unwrap_or(Value::Null));
        let id = self.next_id("user");
        let t = self.audit_create(&mut row, id, actor);
        self.users.insert(id, Value::Object(row));
        self.changed(Entity::User, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    pub fn replace_user(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let body = as_obj(body)?;
        let mut row = self.users.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        assign(&mut row, body, USER_FIELDS)?;
        let t = self.audit_update(&mut row, actor);
        self.users.insert(id, Value::Object(row));
        self.changed(Entity::User, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    pub fn create_company_type(&mut self, name: &str) -> i32 {
        let id = self.next_id("companyType");
        let mut row = Map::new();
        row.insert("name".into(), name.into());
        self.audit_create(&mut row, id, Actor::Sync);
        self.company_types.insert(id, Value::Object(row));
        id
    }

    pub fn create_resource(&mut self, body: &Value) -> WriteResult<i32> {
        let body = as_obj(body)?;
        let name = nonempty_str(body, "name").ok_or_else(|| invalid("name", "The Name field is required."))?;
        let id = self.next_id("resource");
        let mut row = Map::new();
        row.insert("name".into(), name.into());
        row.insert("email".into(), body.get("email").cloned().unwrap_or(Value::Null));
        self.audit_create(&mut row, id, Actor::Sync);
        self.resources.insert(id, Value::Object(row));
        Ok(id)
    }

    // ---- addresses ----

    fn new_address(&mut self, body: &Value, actor: Actor) -> WriteResult<Value> {
        let body = as_obj(body).map_err(|_| invalid("defaultAddress", "an address object is required"))?;
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in ADDRESS_REQUIRED {
            if body.get(f).is_none_or(Value::is_null) {
                errors.entry(format!("defaultAddress.{f}")).or_default().push(format!("The {f} field is required."));
            }
        }
        if !errors.is_empty() {
            return Err(WriteError::Invalid(errors));
        }
        let mut row = Map::new();
        assign(&mut row, body, ADDRESS_FIELDS)?;
        let id = self.next_id("address");
        self.audit_create(&mut row, id, actor);
        Ok(Value::Object(row))
    }

    // ---- companies ----

    pub fn create_company(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let obj = as_obj(body)?;
        if nonempty_str(obj, "name").is_none() {
            return Err(invalid("name", "The Name field is required."));
        }
        let mut row = Map::new();
        assign(&mut row, obj, COMPANY_FIELDS)?;
        let id = self.next_id("company");
        let types = self.type_links(id, obj.get("companyTypes"), actor)?;
        let mut responsible = Vec::new();
        for uid in obj.get("responsibleUserIds").and_then(Value::as_array).into_iter().flatten() {
            let uid = uid.as_i64().and_then(|i| i32::try_from(i).ok()).filter(|u| self.users.contains_key(u));
            let uid = uid.ok_or_else(|| invalid("responsibleUserIds", "unknown user id"))?;
            let rid = self.next_id("responsible");
            responsible.push(json!({"id": rid, "userId": uid}));
        }
        let mut addresses = Vec::new();
        let mut default_id = Value::Null;
        if let Some(a) = obj.get("defaultAddress").filter(|a| !a.is_null()) {
            let a = self.new_address(a, actor)?;
            default_id = a["id"].clone();
            addresses.push(a);
        }
        row.insert("companyTypes".into(), Value::Array(types));
        row.insert("responsibleUsers".into(), Value::Array(responsible));
        row.insert("addresses".into(), Value::Array(addresses));
        row.insert("defaultAddressId".into(), default_id);
        let t = self.audit_create(&mut row, id, actor);
        self.companies.insert(id, Value::Object(row));
        self.changed(Entity::Company, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    fn type_links(&mut self, company_id: i32, v: Option<&Value>, actor: Actor) -> WriteResult<Vec<Value>> {
        let mut out = Vec::new();
        for item in v.and_then(Value::as_array).into_iter().flatten() {
            let tid = id_of(item, "companyTypeId").filter(|t| self.company_types.contains_key(t));
            let tid = tid.ok_or_else(|| invalid("companyTypes", "unknown companyTypeId"))?;
            let lid = self.next_id("typeLink");
            let mut link = Map::new();
            link.insert("companyTypeId".into(), tid.into());
            link.insert("companyId".into(), company_id.into());
            link.insert("number".into(), item.get("number").cloned().unwrap_or(Value::Null));
            self.audit_create(&mut link, lid, actor);
            out.push(Value::Object(link));
        }
        Ok(out)
    }

    /// CompanyPut: types, responsible users and addresses stay as they are.
    pub fn replace_company(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let obj = as_obj(body)?;
        let mut row = self.companies.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        if nonempty_str(obj, "name").is_none() {
            return Err(invalid("name", "The Name field is required."));
        }
        assign(&mut row, obj, COMPANY_FIELDS)?;
        let t = self.audit_update(&mut row, actor);
        self.companies.insert(id, Value::Object(row));
        self.changed(Entity::Company, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    pub fn update_company_types(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        if !self.companies.contains_key(&id) {
            return Err(WriteError::NotFound);
        }
        if !body.is_array() {
            return Err(invalid("body", "an array of {companyTypeId, number} is required"));
        }
        let links = self.type_links(id, Some(body), actor)?;
        let mut row = self.companies[&id].as_object().cloned().unwrap_or_default();
        row.insert("companyTypes".into(), Value::Array(links));
        let t = self.audit_update(&mut row, actor);
        self.companies.insert(id, Value::Object(row));
        self.changed(Entity::Company, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    /// Deleting a company deletes its contact persons; a company that still
    /// has projects cannot be deleted (as in the helloHQ UI).
    pub fn delete_company(&mut self, id: i32, actor: Actor) -> WriteResult<()> {
        if !self.companies.contains_key(&id) {
            return Err(WriteError::NotFound);
        }
        if self.projects.values().any(|p| id_of(p, "companyId") == Some(id)) {
            return Err(invalid("id", "The company still has projects."));
        }
        let contacts: Vec<i32> =
            self.contacts.iter().filter(|(_, c)| id_of(c, "companyId") == Some(id)).map(|(k, _)| *k).collect();
        for c in contacts {
            self.delete_contact(c, actor)?;
        }
        self.companies.remove(&id);
        let t = self.stamp();
        self.changed(Entity::Company, id, ChangeKind::Deleted, t, actor);
        Ok(())
    }

    // ---- contact persons ----

    fn contact_fields(&mut self, row: &mut Map<String, Value>, obj: &Map<String, Value>) -> WriteResult<()> {
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if nonempty_str(obj, "lastName").is_none() {
            errors.insert("lastName".into(), vec!["The LastName field is required.".into()]);
        }
        if nonempty_str(obj, "salutation").is_none() {
            errors.insert("salutation".into(), vec!["The Salutation field is required.".into()]);
        }
        let form = match obj.get("salutationForm") {
            None | Some(Value::Null) => {
                errors.insert("salutationForm".into(), vec!["The SalutationForm field is required.".into()]);
                None
            }
            Some(v) => {
                let f = enum_name(v, &SALUTATION_FORMS);
                if f.is_none() {
                    errors.insert(
                        "salutationForm".into(),
                        vec![format!("The value {v} is not valid for SalutationForm.")],
                    );
                }
                f
            }
        };
        if !errors.is_empty() {
            return Err(WriteError::Invalid(errors));
        }
        assign(row, obj, CONTACT_FIELDS)?;
        row.insert("salutationForm".into(), form.map(Value::from).unwrap_or(Value::Null));
        Ok(())
    }

    pub fn create_contact(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let obj = as_obj(body)?;
        let company = match obj.get("companyId") {
            Some(v) if !v.is_null() => v.as_i64().and_then(|i| i32::try_from(i).ok()),
            _ => return Err(invalid("companyId", "The CompanyId field is required.")),
        };
        let company = company
            .filter(|c| self.companies.contains_key(c))
            .ok_or_else(|| invalid("companyId", "No company found with this id."))?;
        let mut row = Map::new();
        self.contact_fields(&mut row, obj)?;
        let has_address = obj.get("defaultAddress").is_some_and(|a| !a.is_null());
        let has_phone = ["phoneLandline", "phoneMobile"].iter().any(|f| nonempty_str(obj, f).is_some());
        if has_address && has_phone {
            // Observed on live v2 (A10): create first, then PUT the phones.
            return Err(invalid(
                "defaultAddress",
                "Phone numbers cannot be set together with the default address on create.",
            ));
        }
        let mut addresses = Vec::new();
        let mut default_id = Value::Null;
        if has_address {
            let a = self.new_address(&obj["defaultAddress"], actor)?;
            default_id = a["id"].clone();
            addresses.push(a);
        }
        row.insert("companyId".into(), company.into());
        row.insert("addresses".into(), Value::Array(addresses));
        row.insert("defaultAddressId".into(), default_id);
        let id = self.next_id("contact");
        let t = self.audit_create(&mut row, id, actor);
        self.contacts.insert(id, Value::Object(row));
        self.changed(Entity::ContactPerson, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    /// ContactPersonPut: a full replace; `companyId` cannot change, an
    /// omitted `defaultAddress` removes the default address, non-default
    /// addresses (C3 `Privat`) are kept.
    pub fn replace_contact(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let obj = as_obj(body)?;
        let mut row = self.contacts.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        self.contact_fields(&mut row, obj)?;
        let old_default = row.get("defaultAddressId").and_then(Value::as_i64);
        let mut addresses: Vec<Value> = row.get("addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        match obj.get("defaultAddress").filter(|a| !a.is_null()) {
            Some(a) => {
                let existing = addresses.iter().position(|x| x["id"].as_i64() == old_default && old_default.is_some());
                let mut fresh = self.new_address(a, actor)?;
                if let Some(pos) = existing {
                    // Same address row, new values: keep its id and creation audit.
                    let old = addresses[pos].clone();
                    for k in ["id", "createdOn", "createdBy"] {
                        fresh[k] = old[k].clone();
                    }
                    addresses[pos] = fresh;
                } else {
                    row.insert("defaultAddressId".into(), fresh["id"].clone());
                    addresses.push(fresh);
                }
            }
            None => {
                addresses.retain(|x| x["id"].as_i64() != old_default || old_default.is_none());
                row.insert("defaultAddressId".into(), Value::Null);
            }
        }
        row.insert("addresses".into(), Value::Array(addresses));
        let t = self.audit_update(&mut row, actor);
        self.contacts.insert(id, Value::Object(row));
        self.changed(Entity::ContactPerson, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    /// v1 `PUT /v1/ContactPersons({Id})` (C7): PascalCase fields present in
    /// the body are set; `Addresses` replaces the non-default addresses.
    pub fn update_contact_v1(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let obj = as_obj(body)?;
        let mut row = self.contacts.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        for (name, _) in CONTACT_FIELDS {
            if let Some(v) = get_ci(obj, name) {
                let mut one = Map::new();
                let fields: Vec<(&str, K)> = CONTACT_FIELDS.iter().filter(|(n, _)| n == name).copied().collect();
                let mut src = Map::new();
                src.insert(name.to_string(), v.clone());
                assign(&mut one, &src, &fields)?;
                row.extend(one);
            }
        }
        if let Some(v) = get_ci(obj, "SalutationForm") {
            let form = if v.as_str() == Some("NotSet") { None } else { enum_name(v, &SALUTATION_FORMS) };
            let form = form.ok_or_else(|| invalid("SalutationForm", format!("The value {v} is not valid.")))?;
            row.insert("salutationForm".into(), form.into());
        }
        let default_id = row.get("defaultAddressId").and_then(Value::as_i64);
        let mut addresses: Vec<Value> = row.get("addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(list) = get_ci(obj, "Addresses") {
            let list = list.as_array().ok_or_else(|| invalid("Addresses", "an array is required"))?;
            let old = std::mem::take(&mut addresses);
            addresses.extend(old.iter().filter(|a| a["id"].as_i64() == default_id && default_id.is_some()).cloned());
            for a in list {
                if a.get("IsStandard").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let camel = address_from_v1(a);
                let mut fresh = self.new_address(&camel, actor).map_err(|e| rename_errors(e, "Addresses"))?;
                let keep = a
                    .get("Id")
                    .and_then(Value::as_i64)
                    .and_then(|aid| old.iter().find(|o| o["id"].as_i64() == Some(aid) && Some(aid) != default_id));
                if let Some(o) = keep {
                    for k in ["id", "createdOn", "createdBy"] {
                        fresh[k] = o[k].clone();
                    }
                }
                addresses.push(fresh);
            }
        }
        row.insert("addresses".into(), Value::Array(addresses));
        let t = self.audit_update(&mut row, actor);
        self.contacts.insert(id, Value::Object(row));
        self.changed(Entity::ContactPerson, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    /// Adds a non-default address (used by the seed, as the UI would).
    pub fn add_contact_address(&mut self, id: i32, address: &Value, actor: Actor) -> WriteResult<()> {
        let a = self.new_address(address, actor)?;
        let row = self.contacts.get_mut(&id).and_then(Value::as_object_mut).ok_or(WriteError::NotFound)?;
        if let Some(list) = row.get_mut("addresses").and_then(Value::as_array_mut) {
            list.push(a);
        }
        Ok(())
    }

    pub fn delete_contact(&mut self, id: i32, actor: Actor) -> WriteResult<()> {
        self.contacts.remove(&id).ok_or(WriteError::NotFound)?;
        // Links to a deleted row vanish with it (they are child rows in helloHQ).
        for p in self.projects.values_mut().chain(self.leads.values_mut()) {
            if let Some(list) = p.get_mut("contactPersonIds").and_then(Value::as_array_mut) {
                list.retain(|v| v.as_i64() != Some(id.into()));
            }
        }
        for t in self.tasks.values_mut() {
            if let Some(list) = t.get_mut("resourceToTasks").and_then(Value::as_array_mut) {
                list.retain(|a| a["contactPersonId"].as_i64() != Some(id.into()));
            }
        }
        let t = self.stamp();
        self.changed(Entity::ContactPerson, id, ChangeKind::Deleted, t, actor);
        Ok(())
    }

    // ---- projects ----

    pub fn create_project(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let obj = as_obj(body)?;
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in ["name", "startDate", "companyId", "projectTemplateId", "projectStatusId"] {
            if obj.get(f).is_none_or(Value::is_null) {
                errors.insert(f.into(), vec![format!("The {f} field is required.")]);
            }
        }
        if !errors.is_empty() {
            return Err(WriteError::Invalid(errors));
        }
        let mut row = Map::new();
        assign(&mut row, obj, PROJECT_FIELDS)?;
        self.check_project_refs(&row)?;
        for f in ["projectTemplateId", "projectStatusId"] {
            row.insert(f.into(), obj[f].clone());
        }
        row.insert("status".into(), obj.get("status").cloned().unwrap_or_else(|| "InProgress".into()));
        for f in ["plannedFinishDate", "actualFinishDate", "initialContactDate"] {
            row.insert(f.into(), obj.get(f).cloned().unwrap_or(Value::Null));
        }
        let id = self.next_id("project");
        let mut members = Vec::new();
        for m in obj.get("projectMembers").and_then(Value::as_array).into_iter().flatten() {
            let uid = id_of(m, "userId").filter(|u| self.users.contains_key(u));
            let uid = uid.ok_or_else(|| invalid("projectMembers", "unknown userId"))?;
            let mid = self.next_id("member");
            let mut mm = Map::new();
            mm.insert("projectId".into(), id.into());
            mm.insert("userId".into(), uid.into());
            for f in ["projectRoleId", "currency", "externalChargeRateId", "externalChargeRateValue"] {
                mm.insert(f.into(), m.get(f).cloned().unwrap_or(Value::Null));
            }
            self.audit_create(&mut mm, mid, actor);
            members.push(Value::Object(mm));
        }
        row.insert("projectMembers".into(), Value::Array(members));
        // Not in ProjectPost: helloHQ links contacts in the UI; the simulator
        // takes them here so seeds and tests can build "my contacts" cases.
        let contacts = self.contact_ids(obj.get("contactPersonIds"), "contactPersonIds")?;
        row.insert("contactPersonIds".into(), contacts);
        let t = self.audit_create(&mut row, id, actor);
        self.projects.insert(id, Value::Object(row));
        self.changed(Entity::Project, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    fn check_project_refs(&self, row: &Map<String, Value>) -> WriteResult<()> {
        if id_of(&Value::Object(row.clone()), "companyId").is_none_or(|c| !self.companies.contains_key(&c)) {
            return Err(invalid("companyId", "No company found with this id."));
        }
        if let Some(u) = row.get("internalContactPersonId").and_then(Value::as_i64) {
            if !self.users.contains_key(&(u as i32)) {
                return Err(invalid("internalContactPersonId", "No user found with this id."));
            }
        }
        Ok(())
    }

    fn contact_ids(&self, v: Option<&Value>, field: &str) -> WriteResult<Value> {
        let mut out = Vec::new();
        for c in v.and_then(Value::as_array).into_iter().flatten() {
            // Accepts plain ids and v1 objects `{ "Id": 5 }`.
            let cid = c.as_i64().or_else(|| c.get("Id").or_else(|| c.get("id")).and_then(Value::as_i64));
            let cid = cid.and_then(|i| i32::try_from(i).ok()).filter(|i| self.contacts.contains_key(i));
            out.push(Value::from(cid.ok_or_else(|| invalid(field, "unknown contact person id"))?));
        }
        Ok(Value::Array(out))
    }

    pub fn replace_project(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let obj = as_obj(body)?;
        let mut row = self.projects.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        for f in ["name", "startDate", "companyId"] {
            if obj.get(f).is_none_or(Value::is_null) {
                return Err(invalid(f, format!("The {f} field is required.")));
            }
        }
        assign(&mut row, obj, PROJECT_FIELDS)?;
        self.check_project_refs(&row)?;
        let t = self.audit_update(&mut row, actor);
        self.projects.insert(id, Value::Object(row));
        self.changed(Entity::Project, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    // ---- leads (v1, PascalCase on the wire) ----

    pub fn create_lead(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let row = self.lead_row(Map::new(), body)?;
        let mut row = row;
        let id = self.next_id("lead");
        let t = self.audit_create(&mut row, id, actor);
        self.leads.insert(id, Value::Object(row));
        self.changed(Entity::Lead, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    pub fn replace_lead(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let old = self.leads.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        let mut row = self.lead_row(old, body)?;
        let t = self.audit_update(&mut row, actor);
        self.leads.insert(id, Value::Object(row));
        self.changed(Entity::Lead, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    fn lead_row(&self, mut row: Map<String, Value>, body: &Value) -> WriteResult<Map<String, Value>> {
        let obj = as_obj(body)?;
        let camel: Map<String, Value> = obj.iter().map(|(k, v)| (lower_first(k), v.clone())).collect();
        if nonempty_str(&camel, "name").is_none() {
            return Err(invalid("Name", "The Name field is required."));
        }
        assign(&mut row, &camel, LEAD_FIELDS)?;
        if let Some(c) = row.get("companyId").and_then(Value::as_i64) {
            if !self.companies.contains_key(&(c as i32)) {
                return Err(invalid("CompanyId", "No company found with this id."));
            }
        }
        if let Some(u) = row.get("responsibleUserId").and_then(Value::as_i64) {
            if !self.users.contains_key(&(u as i32)) {
                return Err(invalid("ResponsibleUserId", "No user found with this id."));
            }
        }
        if row.get("statusId").is_none_or(Value::is_null) {
            row.insert("statusId".into(), 1.into());
        }
        let contacts = self.contact_ids(camel.get("contactPersons"), "ContactPersons")?;
        row.insert("contactPersonIds".into(), contacts);
        Ok(row)
    }

    pub fn delete_lead(&mut self, id: i32, actor: Actor) -> WriteResult<()> {
        self.leads.remove(&id).ok_or(WriteError::NotFound)?;
        let t = self.stamp();
        self.changed(Entity::Lead, id, ChangeKind::Deleted, t, actor);
        Ok(())
    }

    // ---- tasks and appointments ----

    fn task_row(
        &mut self,
        mut row: Map<String, Value>,
        body: &Value,
        task_id: i32,
        actor: Actor,
        seeding: bool,
    ) -> WriteResult<Map<String, Value>> {
        let mut owned = as_obj(body)?.clone();
        if !seeding {
            // Over HTTP, `resourceToTasks` and `originalStartOn` are read-only
            // (issue 18: no spec has them as writable; unknown fields are
            // ignored, A6): assignments change through the v1 assignment
            // routes, and a replace keeps both as they were.
            owned.remove("resourceToTasks");
            owned.insert("originalStartOn".into(), row.get("originalStartOn").cloned().unwrap_or(Value::Null));
            if let Some(a) = row.get("resourceToTasks").cloned() {
                owned.insert("__keep_assignments".into(), a);
            }
        }
        let obj = &owned;
        if nonempty_str(obj, "name").is_none() {
            return Err(invalid("name", "The Name field is required."));
        }
        assign(&mut row, obj, TASK_FIELDS)?;
        let ty = match obj.get("type") {
            None | Some(Value::Null) => Value::Null,
            Some(v) => enum_name(v, &TASK_CLASSIFICATIONS)
                .map(Value::from)
                .ok_or_else(|| invalid("type", format!("The value {v} is not valid for TaskClassification.")))?,
        };
        row.insert("type".into(), ty);
        if let (Some(s), Some(e)) =
            (row.get("startOn").and_then(Value::as_str), row.get("endOn").and_then(Value::as_str))
        {
            if parse_instant(e) < parse_instant(s) {
                return Err(invalid("endOn", "EndOn must not be before StartOn."));
            }
        }
        if let Some(p) = row.get("projectId").and_then(Value::as_i64) {
            if !self.projects.contains_key(&(p as i32)) {
                return Err(invalid("projectId", "No project found with this id."));
            }
        }
        if let Some(p) = row.get("parentId").and_then(Value::as_i64) {
            if p == i64::from(task_id) || !self.tasks.contains_key(&(p as i32)) {
                return Err(invalid("parentId", "No task found with this id."));
            }
        }
        if let Some(kept) = obj.get("__keep_assignments") {
            row.insert("resourceToTasks".into(), kept.clone());
            return Ok(row);
        }
        let mut assignments = Vec::new();
        for a in obj.get("resourceToTasks").and_then(Value::as_array).into_iter().flatten() {
            let u = id_of(a, "userId");
            let r = id_of(a, "resourceId");
            let c = id_of(a, "contactPersonId");
            let ok = match (u, r, c) {
                (Some(u), None, None) => self.users.contains_key(&u),
                (None, Some(r), None) => self.resources.contains_key(&r),
                (None, None, Some(c)) => self.contacts.contains_key(&c),
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    "resourceToTasks",
                    "Each assignment names exactly one existing userId, resourceId or contactPersonId.",
                ));
            }
            let aid = self.next_id("assignment");
            let mut m = Map::new();
            m.insert("taskId".into(), task_id.into());
            m.insert("userId".into(), u.map(Value::from).unwrap_or(Value::Null));
            m.insert("resourceId".into(), r.map(Value::from).unwrap_or(Value::Null));
            m.insert("contactPersonId".into(), c.map(Value::from).unwrap_or(Value::Null));
            self.audit_create(&mut m, aid, actor);
            assignments.push(Value::Object(m));
        }
        row.insert("resourceToTasks".into(), Value::Array(assignments));
        Ok(row)
    }

    /// A task as the seed (or `/_sim/seed`) makes it: assignments included.
    pub fn create_task(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        self.create_task_with(body, actor, true)
    }

    /// A task created over HTTP (`POST /v2/Projects/{projectId}/Tasks`):
    /// the project is required (v1: "requires a valid project id").
    pub fn create_task_http(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        if id_of(body, "projectId").is_none() {
            return Err(invalid("projectId", "A task requires a valid project id."));
        }
        self.create_task_with(body, actor, false)
    }

    fn create_task_with(&mut self, body: &Value, actor: Actor, seeding: bool) -> WriteResult<i32> {
        let id = self.next_id("task");
        let mut row = self.task_row(Map::new(), body, id, actor, seeding)?;
        let t = self.audit_create(&mut row, id, actor);
        self.tasks.insert(id, Value::Object(row));
        self.changed(Entity::Task, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    pub fn replace_task(&mut self, id: i32, body: &Value, actor: Actor) -> WriteResult<()> {
        let old = self.tasks.get(&id).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        let mut row = self.task_row(old, body, id, actor, false)?;
        let t = self.audit_update(&mut row, actor);
        self.tasks.insert(id, Value::Object(row));
        self.changed(Entity::Task, id, ChangeKind::Updated, t, actor);
        Ok(())
    }

    /// v1 `TaskAssignment`s of a task (published v1): users and resources;
    /// v1 has no contact-person assignment, so those are not listed.
    pub fn assignments_v1(&self, task: i32) -> Option<Vec<Value>> {
        let t = self.tasks.get(&task)?;
        Some(
            t["resourceToTasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| id_of(a, "userId").is_some() || id_of(a, "resourceId").is_some())
                .map(|a| {
                    let mut out = pascal(&pick(a, &["id", "taskId", "userId", "resourceId"], true));
                    out["AssignmentUnit"] = "NotSet".into();
                    out["AssignmentValue"] = Value::Null;
                    out["Resource"] = id_of(a, "resourceId")
                        .and_then(|r| self.resources.get(&r))
                        .map(|r| pascal(&pick(r, &["id", "name"], false)))
                        .unwrap_or(Value::Null);
                    out
                })
                .collect(),
        )
    }

    /// `POST /v1/ProjectTasks({Id})/Assignments`: exactly one of `UserId`,
    /// `ResourceId`, naming an existing user or resource. The task's
    /// `updatedOn` moves (hqsync contract: B12 leaves it open, and the
    /// change poll must see a changed participant list).
    pub fn add_assignment(&mut self, task: i32, body: &Value, actor: Actor) -> WriteResult<i32> {
        let obj = as_obj(body)?;
        let get = |k: &str| {
            obj.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .and_then(|(_, v)| v.as_i64())
                .and_then(|i| i32::try_from(i).ok())
        };
        let (u, r) = (get("UserId"), get("ResourceId"));
        let ok = match (u, r) {
            (Some(u), None) => self.users.contains_key(&u),
            (None, Some(r)) => self.resources.contains_key(&r),
            _ => false,
        };
        if !self.tasks.contains_key(&task) {
            return Err(WriteError::NotFound);
        }
        if !ok {
            return Err(invalid("assignmentExternal", "Exactly one existing UserId or ResourceId is required."));
        }
        let aid = self.next_id("assignment");
        let mut m = Map::new();
        m.insert("taskId".into(), task.into());
        m.insert("userId".into(), u.map(Value::from).unwrap_or(Value::Null));
        m.insert("resourceId".into(), r.map(Value::from).unwrap_or(Value::Null));
        m.insert("contactPersonId".into(), Value::Null);
        self.audit_create(&mut m, aid, actor);
        let mut row = self.tasks.get(&task).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        let mut list = row.get("resourceToTasks").and_then(Value::as_array).cloned().unwrap_or_default();
        list.push(Value::Object(m));
        row.insert("resourceToTasks".into(), Value::Array(list));
        let t = self.audit_update(&mut row, actor);
        self.tasks.insert(task, Value::Object(row));
        self.changed(Entity::Task, task, ChangeKind::Updated, t, actor);
        Ok(aid)
    }

    pub fn assignment_v1(&self, task: i32, aid: i32) -> Option<Value> {
        self.assignments_v1(task)?.into_iter().find(|a| id_of(a, "Id") == Some(aid))
    }

    pub fn delete_assignment(&mut self, task: i32, aid: i32, actor: Actor) -> WriteResult<()> {
        let mut row = self.tasks.get(&task).and_then(Value::as_object).cloned().ok_or(WriteError::NotFound)?;
        let mut list = row.get("resourceToTasks").and_then(Value::as_array).cloned().unwrap_or_default();
        let before = list.len();
        list.retain(|a| id_of(a, "id") != Some(aid));
        if list.len() == before {
            return Err(WriteError::NotFound);
        }
        row.insert("resourceToTasks".into(), Value::Array(list));
        let t = self.audit_update(&mut row, actor);
        self.tasks.insert(task, Value::Object(row));
        self.changed(Entity::Task, task, ChangeKind::Updated, t, actor);
        Ok(())
    }

    /// v1 `Task` (published v1): PascalCase, only the fields v1 has.
    pub fn task_v1(&self, id: i32) -> Option<Value> {
        let t = self.tasks.get(&id)?;
        let mut out = pascal(&pick(
            t,
            &[
                "id",
                "name",
                "description",
                "startOn",
                "endOn",
                "isAppointment",
                "syncId",
                "projectId",
                "parentId",
                "isDone",
                "percentDone",
                "plannedEffort",
                "remaining",
                "taskTypeId",
                "taskTypeStatusId",
            ],
            true,
        ));
        out["Sync"] = t.get("shouldBeSynced").cloned().unwrap_or(Value::Bool(false));
        Some(out)
    }

    /// Deleting a series deletes its exception rows (C6) too.
    pub fn delete_task(&mut self, id: i32, actor: Actor) -> WriteResult<()> {
        self.tasks.remove(&id).ok_or(WriteError::NotFound)?;
        let t = self.stamp();
        self.changed(Entity::Task, id, ChangeKind::Deleted, t, actor);
        let children: Vec<i32> =
            self.tasks.iter().filter(|(_, r)| id_of(r, "parentId") == Some(id)).map(|(k, _)| *k).collect();
        for c in children {
            self.delete_task(c, actor)?;
        }
        Ok(())
    }

    // ---- absences ----

    /// A8: CompanyAbsence/PrivateAbsence are hour-based (UTC, `startOn`);
    /// all others day or half-day based (`startDate`, local, no offset).
    pub fn create_absence(&mut self, body: &Value, actor: Actor) -> WriteResult<i32> {
        let obj = as_obj(body)?;
        let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for f in ["type", "userId", "start", "end"] {
            if obj.get(f).is_none_or(Value::is_null) {
                errors.insert(f.into(), vec![format!("The {f} field is required.")]);
            }
        }
        if !errors.is_empty() {
            return Err(WriteError::Invalid(errors));
        }
        let ty = enum_name(&obj["type"], &ABSENCE_TYPES).ok_or_else(|| invalid("type", "Unknown absence type."))?;
        let user = id_of(&obj["userId"], "").or_else(|| obj["userId"].as_i64().map(|i| i as i32));
        let user = user
            .filter(|u| self.users.contains_key(u))
            .ok_or_else(|| invalid("userId", "No user found with this id."))?;
        let start = obj["start"].as_str().and_then(parse_instant).ok_or_else(|| invalid("start", "not a date-time"))?;
        let end = obj["end"].as_str().and_then(parse_instant).ok_or_else(|| invalid("end", "not a date-time"))?;
        if end <= start {
            return Err(invalid("end", "End must be after start."));
        }
        let hourly = matches!(ty, "CompanyAbsence" | "PrivateAbsence");
        let mut row = Map::new();
        row.insert("type".into(), ty.into());
        row.insert("userId".into(), user.into());
        row.insert("note".into(), obj.get("note").cloned().unwrap_or(Value::Null));
        row.insert("isApproved".into(), obj.get("isApproved").and_then(Value::as_bool).unwrap_or(false).into());
        let local = |t: DateTime<Utc>| Value::from(t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string());
        let hours = (end - start).num_minutes() as f64 / 60.0;
        if hourly {
            row.insert("startOn".into(), fmt_utc(start).into());
            row.insert("endOn".into(), fmt_utc(end).into());
            row.insert("startDate".into(), Value::Null);
            row.insert("endDate".into(), Value::Null);
            row.insert("missedDays".into(), Value::from((hours / 8.0 * 100.0).round() / 100.0));
        } else {
            row.insert("startOn".into(), Value::Null);
            row.insert("endOn".into(), Value::Null);
            row.insert("startDate".into(), local(start));
            row.insert("endDate".into(), local(end));
            row.insert("missedDays".into(), Value::from(working_days(start, end)));
        }
        let id = self.next_id("absence");
        let t = self.audit_create(&mut row, id, actor);
        self.absences.insert(id, Value::Object(row));
        self.changed(Entity::Absence, id, ChangeKind::Created, t, actor);
        Ok(id)
    }

    pub fn delete_absence(&mut self, id: i32, actor: Actor) -> WriteResult<()> {
        self.absences.remove(&id).ok_or(WriteError::NotFound)?;
        let t = self.stamp();
        self.changed(Entity::Absence, id, ChangeKind::Deleted, t, actor);
        Ok(())
    }

    // ---- rendering: v2 ----

    pub fn user_v2(&self, id: i32) -> Option<Value> {
        let u = self.users.get(&id)?;
        Some(pick(u, &["id", "firstName", "lastName", "eMailWork", "eMailPrivate", "employeeNumber"], true))
    }

    fn address_v2(a: &Value) -> Value {
        let mut out = a.clone();
        if let Some(o) = out.as_object_mut() {
            o.remove("isStandard");
        }
        out
    }

    fn default_address(row: &Value) -> Option<&Value> {
        let id = row.get("defaultAddressId").and_then(Value::as_i64)?;
        row.get("addresses")?.as_array()?.iter().find(|a| a["id"].as_i64() == Some(id))
    }

    pub fn company_v2(&self, id: i32, expand_contacts: bool) -> Option<Value> {
        let c = self.companies.get(&id)?;
        let mut out = pick(
            c,
            &[
                "id",
                "name",
                "industrialSector",
                "description",
                "iban",
                "bic",
                "homepage",
                "vatId",
                "debitorNumber",
                "creditorNumber",
                "routingId",
                "defaultAddressId",
                "customFields",
                "financesChargeRateId",
                "standardDeliveryConditionId",
                "standardPaymentConditionId",
                "documentDefaultMailEntityId",
            ],
            true,
        );
        let types: Vec<Value> = c["companyTypes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                let name =
                    id_of(l, "companyTypeId").and_then(|t| self.company_types.get(&t)).map(|t| t["name"].clone());
                let mut l = l.clone();
                l["name"] = name.unwrap_or(Value::Null);
                l
            })
            .collect();
        let responsible: Vec<Value> = c["responsibleUsers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let u = id_of(r, "userId").and_then(|u| self.users.get(&u));
                json!({
                    "id": r["id"], "userId": r["userId"],
                    "firstName": u.map(|u| u["firstName"].clone()), "lastName": u.map(|u| u["lastName"].clone()),
                })
            })
            .collect();
        out["companyTypes"] = Value::Array(types);
        out["responsibleUsers"] = Value::Array(responsible);
        out["addresses"] =
            Value::Array(c["addresses"].as_array().into_iter().flatten().map(Self::address_v2).collect());
        out["defaultAddress"] = Self::default_address(c).map(Self::address_v2).unwrap_or(Value::Null);
        out["subsystems"] = json!([]);
        if expand_contacts {
            let list: Vec<Value> = self
                .contacts
                .iter()
                .filter(|(_, p)| id_of(p, "companyId") == Some(id))
                .filter_map(|(cid, _)| self.contact_v2(*cid, false))
                .collect();
            out["contactPersons"] = Value::Array(list);
        }
        Some(out)
    }

    pub fn contact_v2(&self, id: i32, expand_company: bool) -> Option<Value> {
        let c = self.contacts.get(&id)?;
        let mut out = pick(
            c,
            &[
                "id",
                "firstName",
                "lastName",
                "position",
                "phoneLandline",
                "phoneMobile",
                "salutation",
                "salutationForm",
                "title",
                "language",
                "birthdate",
                "note",
                "companyId",
                "defaultAddressId",
                "customFields",
            ],
            true,
        );
        let def = Self::default_address(c);
        out["eMail"] = def.map(|a| a["email"].clone()).unwrap_or(Value::Null);
        out["defaultAddress"] = def.map(Self::address_v2).unwrap_or(Value::Null);
        if expand_company {
            out["company"] = id_of(c, "companyId")
                .and_then(|cid| self.companies.get(&cid))
                .map(|co| pick(co, &["id", "name", "industrialSector", "homepage"], true))
                .unwrap_or(Value::Null);
        }
        Some(out)
    }

    pub fn project_v2(&self, id: i32, expand: &dyn Fn(&str) -> bool) -> Option<Value> {
        let p = self.projects.get(&id)?;
        let mut out = pick(
            p,
            &[
                "id",
                "name",
                "number",
                "startDate",
                "companyId",
                "status",
                "projectStatusId",
                "projectTemplateId",
                "internalContactPersonId",
                "plannedFinishDate",
                "actualFinishDate",
                "initialContactDate",
                "customFields",
                "aworkSyncId",
                "financesCostCenterId",
            ],
            true,
        );
        if expand("company") {
            out["company"] = id_of(p, "companyId").and_then(|c| self.company_v2(c, false)).unwrap_or(Value::Null);
        }
        if expand("internalContactPerson") {
            out["internalContactPerson"] =
                id_of(p, "internalContactPersonId").and_then(|u| self.user_v2(u)).unwrap_or(Value::Null);
        }
        if expand("projectMembers") {
            out["projectMembers"] = p["projectMembers"].clone();
        }
        if expand("contactPersons") {
            out["contactPersons"] = self.contacts_of(p);
        }
        Some(out)
    }

    fn contacts_of(&self, row: &Value) -> Value {
        Value::Array(
            row["contactPersonIds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_i64().and_then(|c| self.contact_v2(c as i32, false)))
                .collect(),
        )
    }

    pub fn project_members(&self, id: i32) -> Option<Value> {
        Some(self.projects.get(&id)?["projectMembers"].clone())
    }

    pub fn task_v2(&self, id: i32, expand_assignments: bool) -> Option<Value> {
        let t = self.tasks.get(&id)?;
        let mut out = t.clone();
        let o = out.as_object_mut()?;
        let assignments = o.remove("resourceToTasks").unwrap_or_else(|| json!([]));
        // The rest of TaskBaseDto: helloHQ always sends every property.
        for f in TASK_UNSTORED_FIELDS {
            o.entry(*f).or_insert(Value::Null);
        }
        if expand_assignments {
            let list: Vec<Value> = assignments
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let mut a = pick(a, &["id", "taskId", "userId", "resourceId", "contactPersonId"], false);
                    if let Some(u) = id_of(&a, "userId") {
                        a["user"] = self.user_v2(u).unwrap_or(Value::Null);
                    }
                    if let Some(r) = id_of(&a, "resourceId") {
                        a["resource"] = self
                            .resources
                            .get(&r)
                            .map(|r| pick(r, &["id", "name", "email"], false))
                            .unwrap_or(Value::Null);
                    }
                    if let Some(c) = id_of(&a, "contactPersonId") {
                        a["contactPerson"] = self.contact_v2(c, false).unwrap_or(Value::Null);
                    }
                    a
                })
                .collect();
            o.insert("resourceToTasks".into(), Value::Array(list));
        }
        Some(out)
    }

    /// A user token does not see other users' private appointments (A2:
    /// a user token sees what that user may see); everything else is open.
    pub fn task_visible(&self, id: i32, actor: Actor) -> bool {
        let Actor::User(user) = actor else { return true };
        let Some(t) = self.tasks.get(&id) else { return false };
        let private = |t: &Value| matches!(t["type"].as_str(), Some("PrivateAppointment" | "PrivateRecurrencyTask"));
        let series = id_of(t, "parentId").and_then(|p| self.tasks.get(&p));
        if !private(t) && !series.is_some_and(private) {
            return true;
        }
        let involves = |t: &Value| {
            id_of(t, "createdBy") == Some(user)
                || t["resourceToTasks"].as_array().into_iter().flatten().any(|a| id_of(a, "userId") == Some(user))
        };
        involves(t) || series.is_some_and(involves)
    }

    pub fn absence_v2(&self, id: i32) -> Option<Value> {
        let a = self.absences.get(&id)?;
        let mut out = a.clone();
        out["user"] = id_of(a, "userId").and_then(|u| self.user_v2(u)).unwrap_or(Value::Null);
        Some(out)
    }

    // ---- rendering: v1 (PascalCase) ----

    fn address_v1(a: &Value, is_standard: bool) -> Value {
        let mut out = pascal(&pick(
            a,
            &[
                "id",
                "street",
                "houseNumber",
                "zipCode",
                "city",
                "addressLine2",
                "description",
                "country",
                "phone",
                "fax",
                "email",
                "website",
            ],
            true,
        ));
        out["IsStandard"] = is_standard.into();
        out["DefaultForDocumentType"] = a.get("standardForDocumentType").cloned().unwrap_or(Value::Null);
        out
    }

    pub fn contact_v1(&self, id: i32, expand: &dyn Fn(&str) -> bool) -> Option<Value> {
        let c = self.contacts.get(&id)?;
        let mut out = pascal(&pick(
            c,
            &[
                "id",
                "firstName",
                "lastName",
                "position",
                "companyId",
                "phoneLandline",
                "phoneMobile",
                "salutation",
                "title",
                "birthdate",
                "language",
                "defaultAddressId",
            ],
            true,
        ));
        out["CustomFields"] = c.get("customFields").filter(|v| !v.is_null()).cloned().unwrap_or_else(|| json!([]));
        out["SalutationForm"] =
            c.get("salutationForm").filter(|v| !v.is_null()).cloned().unwrap_or_else(|| "NotSet".into());
        out["DefaultAddress"] = Self::default_address(c).map(|a| Self::address_v1(a, true)).unwrap_or(Value::Null);
        if expand("Addresses") {
            let def = c.get("defaultAddressId").and_then(Value::as_i64);
            out["Addresses"] = Value::Array(
                c["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| Self::address_v1(a, def.is_some() && a["id"].as_i64() == def))
                    .collect(),
            );
        }
        if expand("Company") {
            out["Company"] = id_of(c, "companyId").and_then(|co| self.company_v1(co)).unwrap_or(Value::Null);
        }
        Some(out)
    }

    fn company_v1(&self, id: i32) -> Option<Value> {
        let c = self.company_v2(id, false)?;
        Some(pascal(&pick(&c, &["id", "name", "industrialSector", "description", "homepage", "createdOn"], true)))
    }

    fn user_v1(&self, id: i32) -> Option<Value> {
        self.user_v2(id).map(|u| pascal(&u))
    }

    pub fn project_v1(&self, id: i32, expand: &dyn Fn(&str) -> bool) -> Option<Value> {
        let p = self.projects.get(&id)?;
        let mut out = pascal(&pick(
            p,
            &["id", "name", "number", "startDate", "companyId", "projectStatusId", "projectTemplateId", "status"],
            true,
        ));
        out["ResponsibleUserId"] = p["internalContactPersonId"].clone();
        out["PlannedStartDate"] = p["startDate"].clone();
        out["PlannedEndDate"] = p["plannedFinishDate"].clone();
        out["EndDate"] = p["actualFinishDate"].clone();
        for f in ["AworkSyncId", "DeliveryAddressId", "InvoiceAddressId"] {
            out[f] = Value::Null;
        }
        out["LeadId"] = self
            .leads
            .iter()
            .find(|(_, l)| id_of(l, "projectId") == Some(id))
            .map(|(k, _)| Value::from(*k))
            .unwrap_or(Value::Null);
        if expand("Members") {
            out["Members"] = Value::Array(
                p["projectMembers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let mut m = pascal(&pick(
                            m,
                            &[
                                "id",
                                "projectId",
                                "userId",
                                "projectRoleId",
                                "externalChargeRateValue",
                                "createdOn",
                                "createdBy",
                                "updatedOn",
                                "updatedBy",
                            ],
                            false,
                        ));
                        m["ExternalChargeRateCurrency"] = Value::Null;
                        m
                    })
                    .collect(),
            );
        }
        if expand("ContactPersons") {
            out["ContactPersons"] = self.v1_contacts_of(p);
        }
        if expand("Company") {
            out["Company"] = id_of(p, "companyId").and_then(|c| self.company_v1(c)).unwrap_or(Value::Null);
        }
        if expand("ResponsibleUser") {
            out["ResponsibleUser"] =
                id_of(p, "internalContactPersonId").and_then(|u| self.user_v1(u)).unwrap_or(Value::Null);
        }
        Some(out)
    }

    fn v1_contacts_of(&self, row: &Value) -> Value {
        Value::Array(
            row["contactPersonIds"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_i64().and_then(|c| self.contact_v1(c as i32, &|_| false)))
                .collect(),
        )
    }

    pub fn lead_v1(&self, id: i32, expand: &dyn Fn(&str) -> bool) -> Option<Value> {
        let l = self.leads.get(&id)?;
        let mut out = pascal(&pick(
            l,
            &[
                "id",
                "name",
                "number",
                "companyId",
                "statusId",
                "cashOn",
                "closingProbability",
                "currency",
                "volume",
                "responsibleUserId",
                "projectId",
            ],
            true,
        ));
        out["CustomFields"] = json!([]);
        out["SalesCampaigns"] = json!([]);
        out["Subsystems"] = json!([]);
        out["CompanyName"] = id_of(l, "companyId")
            .and_then(|c| self.companies.get(&c))
            .map(|c| c["name"].clone())
            .unwrap_or(Value::Null);
        let status = id_of(l, "statusId").and_then(|s| LEAD_STATUSES.iter().find(|(i, _, _)| *i == s));
        out["Status"] = status.map(|(i, n, t)| json!({"Id": i, "Name": n, "Type": t})).unwrap_or(Value::Null);
        if expand("ContactPersons") {
            out["ContactPersons"] = self.v1_contacts_of(l);
        }
        if expand("ResponsibleUser") {
            out["ResponsibleUser"] = id_of(l, "responsibleUserId").and_then(|u| self.user_v1(u)).unwrap_or(Value::Null);
        }
        if expand("Company") {
            out["Company"] = id_of(l, "companyId").and_then(|c| self.company_v1(c)).unwrap_or(Value::Null);
        }
        if expand("Project") {
            out["Project"] = id_of(l, "projectId").and_then(|p| self.project_v1(p, &|_| false)).unwrap_or(Value::Null);
        }
        Some(out)
    }
}

/// Weekdays between two day-based instants, half days counted as 0.5.
fn working_days(start: DateTime<Utc>, end: DateTime<Utc>) -> f64 {
    use chrono::Datelike;
    let mut days = 0.0;
    let mut d = start;
    while d < end {
        let step = if end - d < Duration::hours(24) { (end - d).num_minutes() as f64 / (24.0 * 60.0) } else { 1.0 };
        if d.weekday().number_from_monday() <= 5 {
            days += if step >= 1.0 {
                1.0
            } else if step > 0.0 {
                0.5
            } else {
                0.0
            };
        }
        d += Duration::hours(24);
    }
    days
}

/// Copies `keys` (plus the audit fields if `audit`) in that order.
fn pick(row: &Value, keys: &[&str], audit: bool) -> Value {
    let mut out = Map::new();
    let audit_keys: &[&str] = if audit { &["createdOn", "createdBy", "updatedOn", "updatedBy"] } else { &[] };
    for k in keys.iter().chain(audit_keys) {
        out.insert((*k).to_string(), row.get(*k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_lowercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// v2 camelCase → v1 PascalCase, recursively (`eMailWork` → `EMailWork`).
pub fn pascal(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (upper_first(k), pascal(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(pascal).collect()),
        other => other.clone(),
    }
}

fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn address_from_v1(a: &Value) -> Value {
    let mut out = Map::new();
    if let Some(o) = a.as_object() {
        for (k, v) in o {
            let k = if k.eq_ignore_ascii_case("DefaultForDocumentType") {
                "standardForDocumentType".into()
            } else {
                lower_first(k)
            };
            out.insert(k, v.clone());
        }
    }
    Value::Object(out)
}

fn rename_errors(e: WriteError, prefix: &str) -> WriteError {
    match e {
        WriteError::Invalid(m) => WriteError::Invalid(
            m.into_iter().map(|(k, v)| (format!("{prefix}.{}", k.trim_start_matches("defaultAddress.")), v)).collect(),
        ),
        other => other,
    }
}
