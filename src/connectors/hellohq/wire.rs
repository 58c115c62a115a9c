//! helloHQ wire records (reference/HELLOHQ.md A6–A15, C3–C6): the v2 REST
//! shapes (camelCase) and the v1 OData shapes (PascalCase) hqsync reads and
//! writes. Every record keeps the fields it does not model in `extra`, so a
//! read → change → full-replace PUT (A5) never clears a field helloHQ added.
//! Unknown fields are kept, never rejected; enums accept names or integers
//! (A6) and keep names they do not know. This module owns the shapes only:
//! it never does I/O and never maps to the canonical model.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// Fields a record does not model, kept verbatim for the write back.
pub type Extra = Map<String, Value>;

/// Builds an enum that reads a name (case-insensitive) or its integer
/// position in the published order, writes the name, and keeps a name it
/// does not know in `Other` so a full replace sends it back unchanged.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know (kept for the write back).
            Other(String),
        }

        impl $name {
            /// The names in the published order (the integer form, A6).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];

            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                    $name::Other(s) => s,
                }
            }

            /// From a name (any case) or a decimal position; unknown names become `Other`.
            pub fn from_name(s: &str) -> $name {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case(stringify!($variant)) { return $name::$variant; })+
                match t.parse::<usize>() {
                    Ok(i) if i < Self::NAMES.len() => Self::from_name(Self::NAMES[i]),
                    _ => $name::Other(t.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match Value::deserialize(d)? {
                    Value::String(s) => Ok($name::from_name(&s)),
                    Value::Number(n) => match n.as_u64().map(|i| i as usize) {
                        Some(i) if i < Self::NAMES.len() => Ok($name::from_name(Self::NAMES[i])),
                        _ => Err(de::Error::custom(format!(
                            concat!("{} is not a valid ", stringify!($name)),
                            n
                        ))),
                    },
                    other => Err(de::Error::custom(format!(
                        concat!("expected a ", stringify!($name), " name or integer, got {}"),
                        other
                    ))),
                }
            }
        }
    };
}

wire_enum!(
    /// v2 `TaskClassification` (A7), also the type of an absence (A8).
    TaskClassification {
        Project, ContactHistory, File, Private, Lead, SickLeave, Vacation, CompanyAbsence, Template,
        PrivateAbsence, OvertimeCompensation, PrivateAppointment, PublicAppointment, Outage, Maintenence,
        BuildingMeasure, ForeignVacation, Risk, ChecklistItem, Article, ChecklistItemTemplate, Checklist,
        ChecklistTemplate, RecurrencyTask, RecurrencyException, Document, UnscheduledAppointment,
        ProfessionalEducation, TradeSchool, SpecialLeave, ParentalLeave, VacationUnpaid, PrivateRecurrencyTask,
        SickLeaveUnpaid, RemoteWork, ChildSick, MaternityLeave,
    }
);

wire_enum!(
    /// Contact `salutationForm` (A10); v1 adds `NotSet`.
    SalutationForm { Formal, Informal, Neutral, NotSet }
);

wire_enum!(
    /// `ConfigSystemEvent.Type` (A15).
    SystemEventType { EntityCreated, PropertyChanged, EntityDeleted, NotSet }
);

/// `…On` fields: UTC instants. helloHQ writes `Z`; an offset-less value is
/// read as UTC rather than refused.
mod utc_opt {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => super::parse_utc(&s).map(Some).ok_or_else(|| de::Error::custom(format!("bad date-time {s:?}"))),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_str(&super::fmt_utc(*t)),
            None => s.serialize_none(),
        }
    }
}

/// Parses an `…On` value: RFC 3339, or a naive date-time taken as UTC.
pub fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// The form helloHQ writes `…On` values in (milliseconds, `Z`).
pub fn fmt_utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `null` reads as the type's default (helloHQ sends `null` for empty lists
/// and unset flags on some endpoints).
fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---- v2 (camelCase) ----------------------------------------------------------

/// v2 `UserGet` (A14). `eMailWork` ties a user to a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default, rename = "eMailWork")]
    pub e_mail_work: Option<String>,
    #[serde(default, rename = "eMailPrivate")]
    pub e_mail_private: Option<String>,
    #[serde(default)]
    pub employee_number: Option<String>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v2 `CompanyAddressBase` (A10): the default address of a contact or company.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    #[serde(default)]
    pub street: Option<String>,
    #[serde(default)]
    pub house_number: Option<String>,
    #[serde(default)]
    pub zip_code: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub address_line2: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub fax: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A company-type link of a company (A11); match types by `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyTypeLink {
    #[serde(default)]
    pub id: Option<i32>,
    #[serde(default)]
    pub company_type_id: Option<i32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub number: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A responsible user of a company (A11).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponsibleUser {
    #[serde(default)]
    pub id: Option<i32>,
    #[serde(default)]
    pub user_id: Option<i32>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v2 `CompanyGetRelated` (A11). `CompanyPut` cannot change types or
/// responsible users; those go through [`CompanyPost`] or `UpdateCompanyTypes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub company_types: Vec<CompanyTypeLink>,
    #[serde(default, deserialize_with = "null_default")]
    pub responsible_users: Vec<ResponsibleUser>,
    #[serde(default)]
    pub default_address_id: Option<i32>,
    #[serde(default)]
    pub default_address: Option<Address>,
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<Address>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Company {
    /// True when one of the company's types has this name (e.g. "Interessent").
    pub fn has_type(&self, name: &str) -> bool {
        self.company_types.iter().any(|t| t.name.as_deref().is_some_and(|n| n.trim().eq_ignore_ascii_case(name)))
    }
}

/// A per-tenant company type (`GET /v2/CompanyTypes`, A11).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyType {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `CompanyPost` (A11): types by id, responsible users by id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyPost {
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub company_types: Vec<CompanyTypeRef>,
    #[serde(default, deserialize_with = "null_default")]
    pub responsible_user_ids: Vec<i32>,
    #[serde(default)]
    pub default_address: Option<Address>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompanyTypeRef {
    pub company_type_id: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<Value>,
}

/// v2 `ContactPersonGetRelated` (A10). The email lives on the default
/// address (`eMail` only mirrors it); write it through `default_address`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactPerson {
    #[serde(default)]
    pub id: i32,
    /// Required on create; never sent on replace (`ContactPersonPut`).
    #[serde(default)]
    pub company_id: Option<i32>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub position: Option<String>,
    #[serde(default)]
    pub phone_landline: Option<String>,
    #[serde(default)]
    pub phone_mobile: Option<String>,
    #[serde(default, rename = "eMail")]
    pub e_mail: Option<String>,
    /// "Herr" / "Frau" / "Divers".
    #[serde(default)]
    pub salutation: Option<String>,
    #[serde(default)]
    pub salutation_form: Option<SalutationForm>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub birthdate: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub default_address_id: Option<i32>,
    #[serde(default)]
    pub default_address: Option<Address>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v2 `ProjectGet(Related)` (A12).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub company_id: Option<i32>,
    /// A **user** id (A12).
    #[serde(default)]
    pub internal_contact_person_id: Option<i32>,
    #[serde(default)]
    pub project_members: Option<Vec<ProjectMember>>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectMember {
    #[serde(default)]
    pub id: Option<i32>,
    #[serde(default)]
    pub user_id: Option<i32>,
    #[serde(default)]
    pub project_role_id: Option<i32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One assignment of a task (C5): exactly one of `user_id`, `resource_id`,
/// `contact_person_id` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskAssignment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i32>,
    #[serde(default)]
    pub user_id: Option<i32>,
    #[serde(default)]
    pub resource_id: Option<i32>,
    #[serde(default)]
    pub contact_person_id: Option<i32>,
    /// Expanded room (`{id, name, email}`), read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TaskAssignment {
    /// The write form (C5): the same assignment without ids, audit fields
    /// or expanded navigation objects.
    pub fn for_write(&self) -> TaskAssignment {
        let mut extra = self.extra.clone();
        for k in ["user", "contactPerson", "createdOn", "createdBy", "updatedOn", "updatedBy"] {
            extra.remove(k);
        }
        TaskAssignment {
            id: None,
            task_id: None,
            user_id: self.user_id,
            resource_id: self.resource_id,
            contact_person_id: self.contact_person_id,
            resource: None,
            extra,
        }
    }
}

/// v1 `TaskAssignment` (A7, C5; published v1 `/v1/ProjectTasks({Id})/Assignments`):
/// a `UserId` is a participant, a `ResourceId` (with `Resource{Id, Name}`) a
/// room. v1 has no contact-person assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskAssignmentV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceV1>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v1 `Resource` (`{Id, Name}`); an `EMail` is read where an instance sends one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceV1 {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, alias = "Email", rename = "EMail", skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl TaskAssignmentV1 {
    /// The v2-shaped assignment hqsync's model reads (C5).
    pub fn to_v2(&self) -> TaskAssignment {
        TaskAssignment {
            id: self.id,
            task_id: self.task_id,
            user_id: self.user_id,
            resource_id: self.resource_id,
            contact_person_id: None,
            resource: self.resource.as_ref().map(|r| Resource {
                id: r.id,
                name: r.name.clone(),
                email: r.email.clone(),
                extra: Extra::new(),
            }),
            extra: Extra::new(),
        }
    }
}

/// A room or other resource as seen inside an assignment (C5: no endpoint
/// lists resources).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v2 `TaskBaseDto` (A7, A9, C1, C4–C6): tasks and appointments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, with = "utc_opt")]
    pub start_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub end_on: Option<DateTime<Utc>>,
    /// Local calendar dates (A4): never converted.
    #[serde(default)]
    pub start_date: Option<NaiveDateTime>,
    #[serde(default)]
    pub end_date: Option<NaiveDateTime>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_appointment: bool,
    #[serde(default, rename = "type")]
    pub kind: Option<TaskClassification>,
    #[serde(default)]
    pub place: Option<String>,
    #[serde(default, rename = "iCalUId")]
    pub ical_uid: Option<String>,
    /// RFC 5545 text (C1); `None`/empty = not recurring.
    #[serde(default)]
    pub recurrency_storage: Option<String>,
    /// Recurrence id of an exception row (C6).
    #[serde(default, with = "utc_opt")]
    pub original_start_on: Option<DateTime<Utc>>,
    #[serde(default)]
    pub parent_id: Option<i32>,
    #[serde(default)]
    pub project_id: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_done: bool,
    #[serde(default)]
    pub percent_done: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_priority: bool,
    #[serde(default)]
    pub planned_effort: Option<f64>,
    #[serde(default)]
    pub remaining: Option<f64>,
    /// Present only with `expand=resourceToTasks`; a replace without it
    /// would drop every participant, so the client always expands it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_to_tasks: Option<Vec<TaskAssignment>>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v2 `AbsencesGetRelated` (A8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Absence {
    #[serde(default)]
    pub id: i32,
    #[serde(default, rename = "type")]
    pub kind: Option<TaskClassification>,
    #[serde(default)]
    pub user_id: Option<i32>,
    #[serde(default, with = "utc_opt")]
    pub start_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub end_on: Option<DateTime<Utc>>,
    #[serde(default)]
    pub start_date: Option<NaiveDateTime>,
    #[serde(default)]
    pub end_date: Option<NaiveDateTime>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub is_approved: bool,
    #[serde(default)]
    pub missed_days: Option<f64>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---- v1 (PascalCase) ---------------------------------------------------------

/// v1 `CompanyAddress` (A10).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressV1 {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i32>,
    #[serde(default)]
    pub street: Option<String>,
    #[serde(default)]
    pub house_number: Option<String>,
    #[serde(default)]
    pub zip_code: Option<String>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub address_line2: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub fax: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_standard: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The description that marks a contact's private address (C3).
pub const PRIVATE_ADDRESS_DESCRIPTION: &str = "Privat";

impl AddressV1 {
    /// C3: described "Privat" (trimmed, any case).
    pub fn is_private(&self) -> bool {
        self.description.as_deref().is_some_and(|d| d.trim().eq_ignore_ascii_case(PRIVATE_ADDRESS_DESCRIPTION))
    }
}

/// v1 `ContactPerson` with `$expand=Addresses` (A10, C3, C7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContactPersonV1 {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub company_id: Option<i32>,
    #[serde(default)]
    pub default_address_id: Option<i32>,
    #[serde(default)]
    pub default_address: Option<AddressV1>,
    /// All addresses, the default one included (`IsStandard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<AddressV1>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ContactPersonV1 {
    fn is_default(&self, a: &AddressV1) -> bool {
        a.is_standard == Some(true) || (a.id.is_some() && a.id == self.default_address_id)
    }

    /// The private address (C3): described "Privat" and not the default
    /// address (a default address described "Privat" is still business).
    pub fn private_address(&self) -> Option<&AddressV1> {
        self.addresses.iter().flatten().find(|a| a.is_private() && !self.is_default(a))
    }

    /// The non-default addresses, as C7's `Addresses` list takes them.
    pub fn other_addresses(&self) -> Vec<AddressV1> {
        self.addresses.iter().flatten().filter(|a| !self.is_default(a)).cloned().collect()
    }
}

/// v1 project member (A12).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectMemberV1 {
    #[serde(default)]
    pub id: Option<i32>,
    #[serde(default)]
    pub user_id: Option<i32>,
    #[serde(default)]
    pub project_role_id: Option<i32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v1 `Project` with `$expand=Members,ContactPersons` (A12).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectV1 {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub company_id: Option<i32>,
    #[serde(default)]
    pub responsible_user_id: Option<i32>,
    #[serde(default)]
    pub lead_id: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub members: Vec<ProjectMemberV1>,
    #[serde(default, deserialize_with = "null_default")]
    pub contact_persons: Vec<ContactPersonV1>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v1 `Lead` (A13).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LeadV1 {
    #[serde(default)]
    pub id: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub company_id: Option<i32>,
    #[serde(default)]
    pub status_id: Option<i32>,
    #[serde(default)]
    pub responsible_user_id: Option<i32>,
    #[serde(default)]
    pub project_id: Option<i32>,
    #[serde(default, deserialize_with = "null_default")]
    pub contact_persons: Vec<ContactPersonV1>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(default, with = "utc_opt")]
    pub updated_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// v1 `ConfigSystemEvent` (A15): the deletions log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigSystemEvent {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub entity_id: Option<i64>,
    #[serde(default)]
    pub database_object: Option<String>,
    #[serde(default, rename = "Type")]
    pub kind: Option<SystemEventType>,
    #[serde(default, with = "utc_opt")]
    pub created_on: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enums_read_names_and_integers_and_keep_unknown_names() {
        let t: TaskClassification = serde_json::from_value(json!("publicAppointment")).unwrap();
        assert_eq!(t, TaskClassification::PublicAppointment);
        let t: TaskClassification = serde_json::from_value(json!(12)).unwrap();
        assert_eq!(t, TaskClassification::PublicAppointment);
        let f: SalutationForm = serde_json::from_value(json!("0")).unwrap();
        assert_eq!(f, SalutationForm::Formal);
        let t: TaskClassification = serde_json::from_value(json!("HoloMeeting")).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), json!("HoloMeeting"));
        assert!(serde_json::from_value::<TaskClassification>(json!(999)).is_err());
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let wire = json!({"id": 5, "lastName": "Weiß", "companyId": 100, "salutationForm": 1,
                          "newHelloHqField": {"a": [1, 2]}, "updatedOn": "2026-05-04T08:00:00.123Z"});
        let c: ContactPerson = serde_json::from_value(wire).unwrap();
        assert_eq!(c.salutation_form, Some(SalutationForm::Informal));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["newHelloHqField"], json!({"a": [1, 2]}));
        assert_eq!(back["updatedOn"], json!("2026-05-04T08:00:00.123Z"));
        assert_eq!(back["salutationForm"], json!("Informal"));
    }

    #[test]
    fn private_address_is_the_non_default_one_described_privat() {
        let c: ContactPersonV1 = serde_json::from_value(json!({
            "Id": 1, "DefaultAddressId": 10,
            "Addresses": [
                {"Id": 10, "Description": "Privat", "IsStandard": true, "City": "Büro"},
                {"Id": 11, "Description": " privat ", "IsStandard": false, "City": "Zuhause"},
                {"Id": 12, "Description": "Lager", "IsStandard": false}
            ]
        }))
        .unwrap();
        assert_eq!(c.private_address().and_then(|a| a.city.as_deref()), Some("Zuhause"));
        assert_eq!(c.other_addresses().len(), 2);
    }

    #[test]
    fn offsetless_instants_are_read_as_utc() {
        assert_eq!(fmt_utc(parse_utc("2026-05-04T08:00:00").unwrap()), "2026-05-04T08:00:00.000Z");
        assert_eq!(fmt_utc(parse_utc("2026-05-04T10:00:00+02:00").unwrap()), "2026-05-04T08:00:00.000Z");
    }
}
