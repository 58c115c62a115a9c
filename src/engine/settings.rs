//! Per-tenant and per-mailbox sync settings, kept as JSON in the store
//! (`tenants.settings`, `mailboxes.settings`) so the admin API and the CLI
//! can change them without a migration. Every key has a default that is
//! right for a new customer; unknown keys are kept but ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Direction, Kind};
use crate::store::{Mailbox, Tenant};

/// Directions per kind (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Directions {
    pub appointment: Direction,
    pub task: Direction,
    pub contact: Direction,
}

impl Default for Directions {
    fn default() -> Self {
        Directions { appointment: Direction::Both, task: Direction::Both, contact: Direction::Both }
    }
}

impl Directions {
    pub fn get(&self, kind: Kind) -> Direction {
        match kind {
            Kind::Appointment => self.appointment,
            Kind::Task => self.task,
            Kind::Contact => self.contact,
        }
    }
}

/// When a pass holds its deletions for approval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeleteHold {
    /// Share of a mailbox's links (percent) a pass may delete unasked.
    pub percent: f64,
    /// Items a pass may delete unasked, whatever the share.
    pub items: u64,
}

impl Default for DeleteHold {
    fn default() -> Self {
        DeleteHold { percent: 20.0, items: 50 }
    }
}

impl DeleteHold {
    /// True when deleting `n` of `links` must wait for approval: more than
    /// `items`, or more than `percent` of the links (a single deletion is
    /// never held for its share alone, or a mailbox with three contacts
    /// could not lose one).
    pub fn holds(&self, n: u64, links: u64) -> bool {
        n > self.items || (n > 1 && (n as f64) > links as f64 * self.percent / 100.0)
    }

    /// Why a pass over `mailbox` holds its `n` deletions of `kind` links
    /// out of `links`, or `None` when it may delete them.
    pub fn held(&self, n: u64, links: u64, kind: crate::model::Kind, tenant: &str, mailbox: &str) -> Option<String> {
        self.holds(n, links).then(|| {
            format!(
                "{n} of {links} {kind} links would be deleted (threshold {}% or {} items); approve with `hqsync approve --tenant {tenant} --mailbox {mailbox} --kind {kind}`",
                self.percent, self.items
            )
        })
    }
}

/// Contact settings (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContactSettings {
    /// "HQ Globale Kontakte" is filled (off: only the user's own contacts).
    pub global_folder: bool,
    /// Subsystems: only "my contacts" are synchronised.
    pub my_contacts_only: bool,
    /// Company type whose contacts are never synchronised.
    pub prospect_type: String,
    /// Type given to a company created for an Exchange contact's company name.
    pub new_company_type: String,
    /// Company an Exchange contact without a company name is attached to.
    pub fallback_company: String,
    /// Country written when helloHQ needs one and the contact has none.
    pub default_country: String,
}

impl Default for ContactSettings {
    fn default() -> Self {
        ContactSettings {
            global_folder: true,
            my_contacts_only: false,
            prospect_type: "Interessent".into(),
            new_company_type: "Kunde".into(),
            fallback_company: "Kontakte aus Outlook".into(),
            default_country: "DE".into(),
        }
    }
}

/// Task settings (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskSettings {
    /// The To Do list (per mailbox) that holds the user's helloHQ tasks.
    pub list_name: String,
    /// The helloHQ project a task created in Outlook / To Do is filed in;
    /// without one such tasks are journalled as not synchronised.
    pub inbox_project: Option<i32>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        TaskSettings { list_name: crate::connectors::graph::bootstrap::DEFAULT_TODO_LIST.into(), inbox_project: None }
    }
}

/// Appointment settings (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppointmentSettings {
    /// IANA zone helloHQ's times are meant in (helloHQ rows carry none,
    /// HELLOHQ.md B10); series repeat in it across daylight-saving changes.
    pub time_zone: String,
    /// helloHQ room name → room mailbox, for rooms helloHQ stores without
    /// an email (C5). A room in neither place travels only as the location.
    pub room_map: BTreeMap<String, String>,
    /// The reconcile window before today (days).
    pub window_past_days: i64,
    /// The reconcile window after today (days).
    pub window_future_days: i64,
    /// The helloHQ project an appointment created in Outlook is filed in
    /// (every helloHQ task has a project); checked by the connection test.
    /// Without one such appointments are journalled as not synchronised.
    pub project: Option<i32>,
}

impl Default for AppointmentSettings {
    fn default() -> Self {
        AppointmentSettings {
            time_zone: "Europe/Berlin".into(),
            room_map: BTreeMap::new(),
            window_past_days: 30,
            window_future_days: 365,
            project: None,
        }
    }
}

/// Everything a tenant's `settings` JSON may say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// The system-wide switch (SPEC §6).
    pub sync_enabled: bool,
    pub directions: Directions,
    pub contacts: ContactSettings,
    pub tasks: TaskSettings,
    pub appointments: AppointmentSettings,
    pub deletes: DeleteHold,
    /// `pilot`: only `pilot_mailbox` syncs; `all`: every user's mailbox.
    pub rollout: String,
    /// The test user's mailbox (SPEC §6): synced first, alone during the pilot.
    pub pilot_mailbox: Option<String>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            sync_enabled: true,
            directions: Directions::default(),
            contacts: ContactSettings::default(),
            tasks: TaskSettings::default(),
            appointments: AppointmentSettings::default(),
            deletes: DeleteHold::default(),
            rollout: "all".into(),
            pilot_mailbox: None,
        }
    }
}

impl TenantSettings {
    /// The tenant's settings; a malformed document falls back to the
    /// defaults key by key rather than stopping the sync.
    pub fn of(t: &Tenant) -> TenantSettings {
        serde_json::from_value(t.settings.clone()).unwrap_or_else(|e| {
            tracing::warn!(tenant = %t.id, error = %e, "tenant settings unreadable; using defaults");
            TenantSettings::default()
        })
    }

    /// The state a newly discovered mailbox starts in, and why, under the
    /// rollout: during the pilot only the pilot mailbox syncs.
    pub fn initial_state(&self, mailbox: &str) -> (crate::store::MailboxState, Option<&'static str>) {
        use crate::store::MailboxState;
        let is_pilot = self.pilot_mailbox.as_deref().is_some_and(|p| p.trim().eq_ignore_ascii_case(mailbox));
        match (self.rollout.as_str(), is_pilot) {
            ("pilot", true) => (MailboxState::Pilot, None),
            ("pilot", false) => (MailboxState::Disabled, Some("rollout")),
            (_, true) => (MailboxState::Pilot, None),
            _ => (MailboxState::Active, None),
        }
    }

    /// The direction for `kind` in `mailbox`: the user's override, else the
    /// tenant default; `off` everywhere while the system switch is off.
    pub fn direction(&self, mailbox: &Mailbox, kind: Kind) -> Direction {
        if !self.sync_enabled {
            return Direction::Off;
        }
        mailbox
            .settings
            .get("directions")
            .and_then(|d| d.get(kind.as_str()))
            .cloned()
            .and_then(|v: Value| serde_json::from_value::<Direction>(v).ok())
            .unwrap_or_else(|| self.directions.get(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_threshold() {
        let h = DeleteHold::default();
        assert!(!h.holds(1, 3), "one deletion is never held for its share");
        assert!(h.holds(2, 5));
        assert!(!h.holds(2, 10));
        assert!(h.holds(51, 10_000));
        assert!(!h.holds(50, 10_000));
    }

    #[test]
    fn partial_settings_keep_defaults() {
        let s: TenantSettings =
            serde_json::from_value(serde_json::json!({"contacts": {"global_folder": false}})).unwrap();
        assert!(!s.contacts.global_folder);
        assert_eq!(s.contacts.prospect_type, "Interessent");
        assert_eq!(s.directions.contact, Direction::Both);
        assert_eq!((s.tasks.list_name.as_str(), s.tasks.inbox_project), ("helloHQ", None));
        let s: TenantSettings = serde_json::from_value(serde_json::json!({"tasks": {"inbox_project": 12}})).unwrap();
        assert_eq!((s.tasks.list_name.as_str(), s.tasks.inbox_project), ("helloHQ", Some(12)));
        assert_eq!(s.appointments.time_zone, "Europe/Berlin");
        let a: TenantSettings = serde_json::from_value(
            serde_json::json!({"appointments": {"room_map": {"Raum Elbe": "raum.elbe@agentur.de"}}}),
        )
        .unwrap();
        assert_eq!(a.appointments.room_map.get("Raum Elbe").map(String::as_str), Some("raum.elbe@agentur.de"));
        assert_eq!(a.appointments.window_future_days, 365);
    }
}
