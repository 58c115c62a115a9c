//! Delta rounds (GRAPH.md §5) for a mailbox's calendar view (a configurable
//! window), a contact folder, and a To Do list: start from the stored
//! `@odata.deltaLink` (or the initial query), follow every `@odata.nextLink`
//! (empty pages too), collect items and `@removed` tombstones, and hand back
//! the new deltaLink. The link is written to `cursors` only by
//! [`DeltaRound::commit`], which the caller runs after it applied the round,
//! so a crash mid-round restarts from the old link. A lost sync state (410,
//! `syncStateNotFound`, `resyncRequired`) restarts the round from the
//! initial query once and marks it `reset`. It never decides what an item
//! means; that is the engine's job.

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::Value;

use super::client::{seg, GraphClient};
use super::error::GraphError;
use crate::model::TenantId;
use crate::store::Store;

/// Which change feed a round reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaTarget {
    /// The default calendar's view between two instants (fixed once a round starts).
    CalendarView { start: DateTime<Utc>, end: DateTime<Utc> },
    /// One contact folder.
    Contacts { folder_id: String },
    /// The tasks of one To Do list.
    TodoTasks { list_id: String },
}

/// The calendar window relative to now (e.g. −30 days … +365 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarWindow {
    pub days_back: i64,
    pub days_ahead: i64,
}

impl Default for CalendarWindow {
    fn default() -> Self {
        CalendarWindow { days_back: 30, days_ahead: 365 }
    }
}

impl CalendarWindow {
    /// The target for a window around `now`, cut to whole days so that
    /// rounds started on the same day ask for the same window.
    pub fn target(&self, now: DateTime<Utc>) -> DeltaTarget {
        let day = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        DeltaTarget::CalendarView {
            start: day - ChronoDuration::days(self.days_back),
            end: day + ChronoDuration::days(self.days_ahead),
        }
    }
}

impl DeltaTarget {
    /// `cursors.name` of this feed: `delta.<kind>.<folder-or-list-id>`.
    pub fn cursor_name(&self) -> String {
        match self {
            DeltaTarget::CalendarView { .. } => "delta.events.calendar".to_string(),
            DeltaTarget::Contacts { folder_id } => format!("delta.contacts.{folder_id}"),
            DeltaTarget::TodoTasks { list_id } => format!("delta.tasks.{list_id}"),
        }
    }

    /// The query that starts a fresh round.
    pub fn initial_path(&self, mailbox: &str) -> String {
        let u = seg(mailbox);
        match self {
            DeltaTarget::CalendarView { start, end } => format!(
                "/users/{u}/calendarView/delta?startDateTime={}&endDateTime={}",
                start.to_rfc3339_opts(SecondsFormat::Secs, true),
                end.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            DeltaTarget::Contacts { folder_id } => {
                format!("/users/{u}/contactFolders/{}/contacts/delta", seg(folder_id))
            }
            DeltaTarget::TodoTasks { list_id } => format!("/users/{u}/todo/lists/{}/tasks/delta", seg(list_id)),
        }
    }
}

/// One entry of a delta round.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaItem {
    /// A created or changed item (possibly only its changed properties).
    Changed(Value),
    /// `@removed`: deleted, or (calendar view) changed outside the window; confirm with a GET.
    Removed { id: String, reason: String },
}

/// A completed round, not yet committed.
#[derive(Debug, Clone)]
pub struct DeltaRound {
    pub mailbox: String,
    pub cursor_name: String,
    pub items: Vec<DeltaItem>,
    /// The sync state was lost and the round started from scratch: known
    /// items not seen in it are deletion candidates (confirm each with a GET).
    pub reset: bool,
    /// Pages fetched (for metrics and tests).
    pub pages: u32,
    delta_link: String,
}

impl DeltaRound {
    pub fn delta_link(&self) -> &str {
        &self.delta_link
    }

    /// Stores the deltaLink for the next round. Call only after the round was applied.
    pub async fn commit(&self, store: &Store, tenant: &TenantId) -> Result<(), GraphError> {
        store.set_cursor(tenant, &self.mailbox, &self.cursor_name, &self.delta_link).await?;
        Ok(())
    }
}

impl GraphClient {
    /// Reads one whole delta round of `target` in `mailbox`, starting from
    /// the committed deltaLink if there is one.
    pub async fn delta_round(
        &self,
        store: &Store,
        tenant: &TenantId,
        mailbox: &str,
        target: &DeltaTarget,
    ) -> Result<DeltaRound, GraphError> {
        let name = target.cursor_name();
        let stored = store.get_cursor(tenant, mailbox, &name).await?.filter(|l| !l.is_empty());
        let initial = target.initial_path(mailbox);
        let from_scratch = stored.is_none();
        match self.delta_pages(stored.as_deref().unwrap_or(&initial)).await {
            Ok((items, link, pages)) => Ok(DeltaRound {
                mailbox: mailbox.to_string(),
                cursor_name: name,
                items,
                reset: false,
                pages,
                delta_link: link,
            }),
            Err(GraphError::DeltaReset { code, .. }) => {
                tracing::info!(mailbox, cursor = %name, %code, from_scratch, "delta state lost; starting a fresh round");
                // Our own initial query, not the 410's Location: the window is ours to choose.
                let (items, link, pages) = self.delta_pages(&initial).await?;
                Ok(DeltaRound {
                    mailbox: mailbox.to_string(),
                    cursor_name: name,
                    items,
                    reset: true,
                    pages,
                    delta_link: link,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn delta_pages(&self, start: &str) -> Result<(Vec<DeltaItem>, String, u32), GraphError> {
        let prefer = format!("odata.maxpagesize={}, outlook.timezone=\"UTC\"", self.config().page_size);
        let mut items = Vec::new();
        let mut next = start.to_string();
        let mut pages = 0u32;
        loop {
            pages += 1;
            let page = self.send(Method::GET, &next, None, &[("Prefer", &prefer)]).await?.body;
            for v in page.get("value").and_then(Value::as_array).into_iter().flatten() {
                items.push(match v.get("@removed") {
                    Some(r) => DeltaItem::Removed {
                        id: v.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                        reason: r.get("reason").and_then(Value::as_str).unwrap_or("deleted").to_string(),
                    },
                    None => DeltaItem::Changed(v.clone()),
                });
            }
            if let Some(n) = page.get("@odata.nextLink").and_then(Value::as_str) {
                next = n.to_string();
                continue;
            }
            if let Some(d) = page.get("@odata.deltaLink").and_then(Value::as_str) {
                return Ok((items, d.to_string(), pages));
            }
            return Err(GraphError::Decode("delta page with neither nextLink nor deltaLink".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_names_carry_kind_and_container() {
        assert_eq!(DeltaTarget::Contacts { folder_id: "F1".into() }.cursor_name(), "delta.contacts.F1");
        assert_eq!(DeltaTarget::TodoTasks { list_id: "L=".into() }.cursor_name(), "delta.tasks.L=");
    }

    #[test]
    fn calendar_window_is_whole_days_around_now() {
        let now = DateTime::parse_from_rfc3339("2026-05-04T13:45:00Z").unwrap().with_timezone(&Utc);
        let t = CalendarWindow { days_back: 30, days_ahead: 365 }.target(now);
        assert_eq!(
            t.initial_path("anna@x.de"),
            "/users/anna@x.de/calendarView/delta?startDateTime=2026-04-04T00:00:00Z&endDateTime=2027-05-04T00:00:00Z"
        );
    }
}
