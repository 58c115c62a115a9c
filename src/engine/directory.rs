//! Who is whose contact: a snapshot of the helloHQ records that decide in
//! which mailbox and folder a contact belongs (users, companies with their
//! types and responsible users, projects with their teams and contact
//! persons, leads with their responsible user and contact persons).
//!
//! SPEC §5: a contact is in a user's "HQ Meine Kontakte" when the user is a
//! responsible person of its company, is in the team of a project the
//! contact is a contact person of, or is responsible for a lead the contact
//! is assigned to; otherwise in "HQ Globale Kontakte" (when that folder is
//! on); never both; never when its company is a prospect.

use std::collections::{BTreeSet, HashMap};

use crate::connectors::hellohq::client::{HellohqClient, HqError, ListQuery};
use crate::connectors::hellohq::wire::{Company, LeadV1, ProjectV1, User};

use super::settings::ContactSettings;

/// Which of the two contact folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Folder {
    Global,
    Mine,
    /// One of the user's own contact folders: the user moved hqsync's copy
    /// there in Outlook. Never a rule's choice; the copy is synced where it
    /// is (immutable ids keep it the same item) and never moved back.
    Own,
}

impl Folder {
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Global => "global",
            Folder::Mine => "mine",
            Folder::Own => "own",
        }
    }

    pub fn parse(s: &str) -> Option<Folder> {
        match s {
            "global" => Some(Folder::Global),
            "mine" => Some(Folder::Mine),
            "own" => Some(Folder::Own),
            _ => None,
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Folder::Global => crate::connectors::graph::bootstrap::GLOBAL_CONTACTS_FOLDER,
            Folder::Mine => crate::connectors::graph::bootstrap::MY_CONTACTS_FOLDER,
            Folder::Own => "a folder of the user's own",
        }
    }
}

/// The snapshot.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub users: Vec<User>,
    pub companies: HashMap<i32, Company>,
    /// Trimmed, lower-cased company name → id (first one wins).
    pub company_by_name: HashMap<String, i32>,
    /// Contact person id → users for whom it is "mine" through a project or lead.
    pub mine_via: HashMap<i32, BTreeSet<i32>>,
}

/// Normalised company name for lookups.
pub fn name_key(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

impl Directory {
    /// Reads the snapshot (five listings, paged).
    pub async fn load(hq: &HellohqClient) -> Result<Directory, HqError> {
        let users = hq.list_users().await?;
        let companies: Vec<Company> = hq.list_v2("/v2/Companies", &ListQuery::default()).await?.items;
        let projects: Vec<ProjectV1> =
            hq.list_v1("/v1/Projects", &ListQuery::default().expand("Members,ContactPersons")).await?.items;
        let leads: Vec<LeadV1> = hq.list_v1("/v1/Leads", &ListQuery::default().expand("ContactPersons")).await?.items;
        Ok(Directory::build(users, companies, projects, leads))
    }

    pub fn build(users: Vec<User>, companies: Vec<Company>, projects: Vec<ProjectV1>, leads: Vec<LeadV1>) -> Directory {
        let mut d = Directory { users, ..Default::default() };
        for c in companies {
            if let Some(n) = c.name.as_deref() {
                d.company_by_name.entry(name_key(n)).or_insert(c.id);
            }
            d.companies.insert(c.id, c);
        }
        for p in projects {
            let team: Vec<i32> = p.members.iter().filter_map(|m| m.user_id).collect();
            for cp in &p.contact_persons {
                d.mine_via.entry(cp.id).or_default().extend(team.iter().copied());
            }
        }
        for l in leads {
            if let Some(u) = l.responsible_user_id {
                for cp in &l.contact_persons {
                    d.mine_via.entry(cp.id).or_default().insert(u);
                }
            }
        }
        d
    }

    pub fn company(&self, id: Option<i32>) -> Option<&Company> {
        id.and_then(|i| self.companies.get(&i))
    }

    /// The helloHQ user whose work email is `mailbox`.
    pub fn user_by_mailbox(&self, mailbox: &str) -> Option<&User> {
        self.users.iter().find(|u| u.e_mail_work.as_deref().is_some_and(|m| m.trim().eq_ignore_ascii_case(mailbox)))
    }

    /// Why a contact is not synchronised at all, if it is not.
    pub fn excluded(&self, company_id: Option<i32>, s: &ContactSettings) -> Option<String> {
        let c = self.company(company_id)?;
        c.has_type(&s.prospect_type).then(|| {
            format!(
                "its company {:?} is of type {:?}, whose contacts are never synchronised",
                c.name.as_deref().unwrap_or(""),
                s.prospect_type
            )
        })
    }

    /// The folder of contact `contact_id` (company `company_id`) in the
    /// mailbox of helloHQ user `user` (None: a mailbox without a user gets
    /// only global contacts); `None` when it does not belong there.
    pub fn folder_for(
        &self,
        contact_id: i32,
        company_id: Option<i32>,
        user: Option<i32>,
        s: &ContactSettings,
    ) -> Option<Folder> {
        if self.excluded(company_id, s).is_some() {
            return None;
        }
        let mine = user.is_some_and(|u| {
            self.company(company_id).is_some_and(|c| c.responsible_users.iter().any(|r| r.user_id == Some(u)))
                || self.mine_via.get(&contact_id).is_some_and(|set| set.contains(&u))
        });
        if mine {
            Some(Folder::Mine)
        } else if s.global_folder && !s.my_contacts_only {
            Some(Folder::Global)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::hellohq::wire::{CompanyTypeLink, ContactPersonV1, ProjectMemberV1, ResponsibleUser};

    fn company(id: i32, name: &str, ty: &str, resp: &[i32]) -> Company {
        Company {
            id,
            name: Some(name.into()),
            company_types: vec![CompanyTypeLink { name: Some(ty.into()), ..Default::default() }],
            responsible_users: resp
                .iter()
                .map(|u| ResponsibleUser { user_id: Some(*u), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    fn dir() -> Directory {
        let project = ProjectV1 {
            id: 1,
            members: vec![ProjectMemberV1 { user_id: Some(3), ..Default::default() }],
            contact_persons: vec![ContactPersonV1 { id: 20, ..Default::default() }],
            ..Default::default()
        };
        let lead = LeadV1 {
            id: 1,
            responsible_user_id: Some(4),
            contact_persons: vec![ContactPersonV1 { id: 30, ..Default::default() }],
            ..Default::default()
        };
        Directory::build(
            vec![],
            vec![company(1, "Nordlicht", "Kunde", &[1]), company(2, "Zukunft", "Interessent", &[1])],
            vec![project],
            vec![lead],
        )
    }

    #[test]
    fn folders_follow_responsibility_projects_and_leads() {
        let d = dir();
        let s = ContactSettings::default();
        assert_eq!(d.folder_for(10, Some(1), Some(1), &s), Some(Folder::Mine), "responsible for the company");
        assert_eq!(d.folder_for(10, Some(1), Some(2), &s), Some(Folder::Global));
        assert_eq!(d.folder_for(20, Some(1), Some(3), &s), Some(Folder::Mine), "in the project team");
        assert_eq!(d.folder_for(30, Some(1), Some(4), &s), Some(Folder::Mine), "responsible for the lead");
        assert_eq!(d.folder_for(10, Some(2), Some(1), &s), None, "prospects never");
        assert_eq!(d.folder_for(10, Some(1), None, &s), Some(Folder::Global));
    }

    #[test]
    fn global_folder_off_and_my_contacts_only() {
        let d = dir();
        let off = ContactSettings { global_folder: false, ..Default::default() };
        assert_eq!(d.folder_for(10, Some(1), Some(2), &off), None);
        assert_eq!(d.folder_for(10, Some(1), Some(1), &off), Some(Folder::Mine));
        let mine = ContactSettings { my_contacts_only: true, ..Default::default() };
        assert_eq!(d.folder_for(10, Some(1), Some(2), &mine), None);
    }
}
