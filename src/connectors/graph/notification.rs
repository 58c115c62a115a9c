//! Graph change and lifecycle notification payloads (reference GRAPH.md §4.4,
//! §4.6; Microsoft's samples 01 and 03). Parsing is per item: one malformed
//! item is dropped and counted, the rest of the batch still counts.
//! Nothing here decides whether an item is trusted: that is the ingress's
//! check against the stored subscription.

use serde::Deserialize;

use crate::queue::Change;

/// Graph's lifecycle events (GRAPH.md §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    SubscriptionRemoved,
    Missed,
    ReauthorizationRequired,
}

impl LifecycleEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
        }
    }
}

/// One item of a notification POST, as far as hqsync needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationItem {
    pub subscription_id: String,
    pub client_state: Option<String>,
    pub tenant_id: Option<String>,
    pub kind: ItemKind,
    /// Graph's own notification id, when it sends one (stable across retries).
    pub notification_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    Change {
        change: Change,
        /// The item's Graph id (from `resourceData.id`, else the `resource` path).
        resource_id: Option<String>,
        /// The version the change produced (`resourceData.@odata.etag`), when Graph sends it.
        version: Option<String>,
    },
    Lifecycle(LifecycleEvent),
}

/// Why an item (or the whole body) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("body is not a JSON object with a `value` array")]
    NotABatch,
    #[error("item has no subscriptionId")]
    NoSubscription,
    #[error("item has neither a known changeType nor a known lifecycleEvent")]
    UnknownType,
}

#[derive(Deserialize)]
struct WireBatch {
    value: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireItem {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    change_type: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_data: Option<WireResourceData>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Deserialize)]
struct WireResourceData {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "@odata.etag")]
    etag: Option<String>,
}

/// The common case in one pass: every item has the expected shape.
#[derive(Deserialize)]
struct TypedBatch {
    value: Vec<WireItem>,
}

/// Parses a notification body: `Err` when the body as a whole is not a
/// batch (answer 400), else one result per item in order.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Result<NotificationItem, NotificationError>>, NotificationError> {
    if let Ok(batch) = serde_json::from_slice::<TypedBatch>(body) {
        return Ok(batch.value.into_iter().map(parse_wire_item).collect());
    }
    // Some item is malformed (or the body is no batch): item by item, so one
    // bad item does not cost the others.
    let batch: WireBatch = serde_json::from_slice(body).map_err(|_| NotificationError::NotABatch)?;
    Ok(batch.value.into_iter().map(parse_item).collect())
}

fn parse_item(v: serde_json::Value) -> Result<NotificationItem, NotificationError> {
    let item: WireItem = serde_json::from_value(v).map_err(|_| NotificationError::UnknownType)?;
    parse_wire_item(item)
}

fn parse_wire_item(item: WireItem) -> Result<NotificationItem, NotificationError> {
    let subscription_id = item.subscription_id.filter(|s| !s.is_empty()).ok_or(NotificationError::NoSubscription)?;
    let kind = if let Some(ev) = item.lifecycle_event {
        ItemKind::Lifecycle(match ev.as_str() {
            "subscriptionRemoved" => LifecycleEvent::SubscriptionRemoved,
            "missed" => LifecycleEvent::Missed,
            "reauthorizationRequired" => LifecycleEvent::ReauthorizationRequired,
            _ => return Err(NotificationError::UnknownType),
        })
    } else {
        let change = match item.change_type.as_deref().map(str::trim) {
            Some("created") => Change::Created,
            Some("updated") => Change::Updated,
            Some("deleted") => Change::Deleted,
            _ => return Err(NotificationError::UnknownType),
        };
        let (id, version) = item.resource_data.map(|d| (d.id, d.etag)).unwrap_or_default();
        let resource_id = id.filter(|s| !s.is_empty()).or_else(|| item.resource.as_deref().and_then(last_segment_id));
        ItemKind::Change { change, resource_id, version: version.filter(|s| !s.is_empty()) }
    };
    Ok(NotificationItem {
        subscription_id,
        client_state: item.client_state,
        tenant_id: item.tenant_id,
        kind,
        notification_id: item.id.filter(|s| !s.is_empty()),
    })
}

/// The item id at the end of a resource path, in either of Graph's syntaxes:
/// `Users/{u}/Events/{id}` or `Users('{u}')/Events('{id}')`.
fn last_segment_id(resource: &str) -> Option<String> {
    let last = resource.trim_end_matches('/').rsplit('/').next()?;
    let id = match last.find("('") {
        Some(start) if last.ends_with("')") => &last[start + 2..last.len() - 2],
        _ => last,
    };
    (!id.is_empty() && resource.contains('/')).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_microsofts_basic_sample() {
        let body = include_bytes!("../../../tests/fixtures/graph/change-notification-basic.json");
        let items = parse_batch(body).unwrap();
        assert_eq!(items.len(), 1);
        let item = items[0].as_ref().unwrap();
        assert_eq!(item.subscription_id, "{subscription_guid}");
        assert_eq!(item.client_state.as_deref(), Some("secretClientValue"));
        assert_eq!(item.tenant_id.as_deref(), Some("84bd8158-6d4d-4958-8b9f-9d6445542f95"));
        assert_eq!(item.notification_id.as_deref(), Some("lsgTZMr9KwAAA"));
        assert_eq!(
            item.kind,
            ItemKind::Change {
                change: Change::Created,
                resource_id: Some("{long_id_string}".into()),
                version: Some("W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"".into())
            }
        );
    }

    #[test]
    fn reads_microsofts_lifecycle_sample() {
        let body = include_str!("../../../tests/fixtures/graph/lifecycle-notification.json")
            .replace("subscriptionRemoved or missed or reauthorizationRequired", "missed");
        let items = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(items[0].as_ref().unwrap().kind, ItemKind::Lifecycle(LifecycleEvent::Missed));
    }

    #[test]
    fn one_bad_item_does_not_spoil_the_batch() {
        let body = br#"{"value":[{"changeType":"updated"},{"subscriptionId":"s","changeType":"updated","resource":"Users('u')/Events('AAMk=')"},{"subscriptionId":"s","changeType":"exploded"},7]}"#;
        let items = parse_batch(body).unwrap();
        assert_eq!(items[0], Err(NotificationError::NoSubscription));
        assert_eq!(
            items[1].as_ref().unwrap().kind,
            ItemKind::Change { change: Change::Updated, resource_id: Some("AAMk=".into()), version: None }
        );
        assert_eq!(items[2], Err(NotificationError::UnknownType));
        assert_eq!(items[3], Err(NotificationError::UnknownType));
    }

    #[test]
    fn non_batches_are_refused_whole() {
        assert_eq!(parse_batch(b"{}"), Err(NotificationError::NotABatch));
        assert_eq!(parse_batch(b"[1]"), Err(NotificationError::NotABatch));
        assert_eq!(parse_batch(b"not json"), Err(NotificationError::NotABatch));
    }

    #[test]
    fn resource_path_ids_in_both_syntaxes() {
        assert_eq!(last_segment_id("Users/u1/Events/AAMk"), Some("AAMk".into()));
        assert_eq!(last_segment_id("Users('u1')/events('AA=')"), Some("AA=".into()));
        assert_eq!(last_segment_id("nothing"), None);
    }
}
