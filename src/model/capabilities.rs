//! What a tenant's real services were found to do, as the connection test
//! (`tenant test`, `POST …/test`) probed them. Where a fact about helloHQ or
//! Exchange Online is not published, hqsync does not guess: the connection
//! test asks the customer's own system, and the answer is kept here, per
//! tenant, for the connectors to follow.
//!
//! Every field's default is the **safe** choice, the one that is correct
//! whatever the real service does (at the price of more requests): a tenant
//! never tested, or one whose probe could not run, gets the defaults.
//! The record is stored as JSON with the tenant (`Store::set_capabilities`);
//! unknown fields are ignored and missing ones take their defaults, so a
//! newer or older hqsync reads it either way.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The capability record of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Capabilities {
    /// When the connection test last probed; `null`: never (every field then
    /// holds its safe default).
    pub tested_at: Option<DateTime<Utc>>,
    /// What the tenant's helloHQ system was found to do.
    pub hellohq: HellohqCapabilities,
    /// What the tenant's Exchange Online (Microsoft Graph) was found to do.
    pub graph: GraphCapabilities,
}

/// helloHQ's answers to the connection test's probes (see
/// `docs/hellohq-api.md`, "Connection-test probes", for each assumption,
/// its provenance, and what hqsync does under each answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct HellohqCapabilities {
    /// Per v2 list path hqsync reads (`/v2/Projects/Tasks`…), the spelling of
    /// the list options (`top` or `$top`…) the probe found honoured. A path
    /// not listed was not decided (fewer than two rows to compare on, or the
    /// probe failed): hqsync then sends the guide's bare spelling and checks
    /// every page it reads (a filter or order that was not applied, a list
    /// shorter than its `helloHQ-Count`) instead of trusting it.
    pub spelling: BTreeMap<String, HqSpelling>,
    /// v2 lists answered a `top=1` read of a longer list with a
    /// `helloHQ-NextLink`. Informational: hqsync follows a next link when
    /// there is one and continues with `skip` after a full page without one
    /// either way.
    pub next_links: bool,
    /// `GET /v2/Projects/Tasks` honoured `expand=resourceToTasks` (the
    /// assignments came inline). Without it (the safe default) each task's
    /// participants and rooms are read from the published
    /// `GET /v1/ProjectTasks({Id})/Assignments`.
    pub expand_assignments: bool,
    /// The deletions log (`/v1/ConfigSystemEvents/do.GetDeleted()`) honoured
    /// `$filter=CreatedOn gt …`. Without it (the safe default) hqsync reads
    /// the whole log and filters it itself, on a longer interval.
    pub deletions_filter: bool,
}

/// Which spelling of the list options an endpoint was found to honour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HqSpelling {
    /// `top`, `filter`, `orderby`, `expand` only.
    Bare,
    /// `$top`, `$filter`, `$orderby`, `$expand` only.
    Dollar,
    /// Either.
    Both,
}

/// Microsoft Graph's answers to the connection test's probes (see
/// `docs/graph-api.md`, "Connection-test probes"). `false` is each one's
/// safe default: not known to work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct GraphCapabilities {
    /// A contact PATCH with a stale `If-Match` was answered `412`. Without
    /// it, hqsync reads a contact before it writes it (no read-free PATCH
    /// on the version a link holds), so no Outlook edit is overwritten.
    pub if_match_enforced: bool,
    /// A change-notification subscription on the pilot mailbox's To Do
    /// tasks was accepted (app-only `Tasks.ReadWrite.All`). Without it,
    /// To Do changes arrive with the delta poll only.
    pub todo_subscription_accepted: bool,
    /// The pilot mailbox answered a contact created with
    /// `Prefer: IdType="ImmutableId"` under the same id on a re-read.
    pub immutable_ids_honoured: bool,
    /// The `io.hqsync.task` open extension written on a To Do task was read
    /// back from `…/tasks/{id}/extensions/io.hqsync.task`.
    pub todo_extension_readable: bool,
}

impl Capabilities {
    /// Reads a stored record; anything unreadable is the safe defaults.
    pub fn from_json(s: &str) -> Capabilities {
        serde_json::from_str(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unreadable_record_is_the_safe_defaults() {
        assert_eq!(Capabilities::from_json(""), Capabilities::default());
        assert_eq!(Capabilities::from_json("{}"), Capabilities::default());
        assert_eq!(Capabilities::from_json("[1]"), Capabilities::default());
        // Fields a newer hqsync wrote are ignored, not an error.
        assert_eq!(
            Capabilities::from_json(r#"{"hellohq": {"unknown_probe": true}, "later": 1}"#),
            Capabilities::default()
        );
    }

    #[test]
    fn the_record_round_trips() {
        let c = Capabilities { tested_at: Some(Utc::now()), ..Default::default() };
        let back = Capabilities::from_json(&serde_json::to_string(&c).unwrap());
        assert_eq!(back, c);
    }
}
