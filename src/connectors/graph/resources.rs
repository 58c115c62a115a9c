//! Thin resource calls over [`GraphClient`]: contacts in a folder, events,
//! To Do lists and tasks with the `io.hqsync.task` open extension,
//! subscriptions and users. They build paths (ids percent-encoded), add the
//! query options and headers each call needs, and return wire JSON
//! unchanged; mapping to the canonical model belongs elsewhere.

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{seg, GraphClient};
use super::error::GraphError;

/// The MAPI business fax property (PidTagBusinessFaxNumber), which Graph's contact type lacks.
pub const FAX_PROPERTY_ID: &str = "String 0x3A24";
/// The open extension on To Do tasks that carries fields To Do cannot hold.
pub const TASK_EXTENSION: &str = "io.hqsync.task";

fn expand_fax() -> String {
    format!("$expand=singleValueExtendedProperties($filter=id%20eq%20'{}')", FAX_PROPERTY_ID.replace(' ', "%20"))
}

impl GraphClient {
    // ---- users

    pub async fn get_user(&self, mailbox: &str) -> Result<Value, GraphError> {
        self.get(&format!("/users/{}", seg(mailbox))).await
    }

    // ---- contacts in a folder

    fn contacts_path(mailbox: &str, folder_id: &str) -> String {
        format!("/users/{}/contactFolders/{}/contacts", seg(mailbox), seg(folder_id))
    }

    /// Every contact of a folder, with the fax extended property.
    pub async fn list_contacts(&self, mailbox: &str, folder_id: &str) -> Result<Vec<Value>, GraphError> {
        self.list_all(&format!("{}?{}", Self::contacts_path(mailbox, folder_id), expand_fax())).await
    }

    pub async fn get_contact(&self, mailbox: &str, folder_id: &str, id: &str) -> Result<Value, GraphError> {
        self.get(&format!("{}/{}?{}", Self::contacts_path(mailbox, folder_id), seg(id), expand_fax())).await
    }

    pub async fn create_contact(&self, mailbox: &str, folder_id: &str, contact: &Value) -> Result<Value, GraphError> {
        self.post(&Self::contacts_path(mailbox, folder_id), contact).await
    }

    pub async fn update_contact(
        &self,
        mailbox: &str,
        folder_id: &str,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, GraphError> {
        self.patch(&format!("{}/{}", Self::contacts_path(mailbox, folder_id), seg(id)), patch, if_match).await
    }

    pub async fn delete_contact(
        &self,
        mailbox: &str,
        folder_id: &str,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), GraphError> {
        self.delete(&format!("{}/{}", Self::contacts_path(mailbox, folder_id), seg(id)), if_match).await
    }

    // ---- events (default calendar), times in UTC

    fn utc_headers() -> [(&'static str, &'static str); 1] {
        [("Prefer", "outlook.timezone=\"UTC\"")]
    }

    pub async fn get_event(&self, mailbox: &str, id: &str) -> Result<Value, GraphError> {
        let path = format!("/users/{}/events/{}", seg(mailbox), seg(id));
        Ok(self.send(Method::GET, &path, None, &Self::utc_headers()).await?.body)
    }

    /// Creates an event; `transaction_id` makes a retried POST idempotent.
    pub async fn create_event(&self, mailbox: &str, event: &Value, transaction_id: &str) -> Result<Value, GraphError> {
        let mut body = event.clone();
        body["transactionId"] = json!(transaction_id);
        let path = format!("/users/{}/events", seg(mailbox));
        Ok(self.send(Method::POST, &path, Some(&body), &Self::utc_headers()).await?.body)
    }

    pub async fn update_event(
        &self,
        mailbox: &str,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, GraphError> {
        let path = format!("/users/{}/events/{}", seg(mailbox), seg(id));
        let mut h = vec![("Prefer", "outlook.timezone=\"UTC\"")];
        if let Some(v) = if_match {
            h.push(("If-Match", v));
        }
        Ok(self.send(Method::PATCH, &path, Some(patch), &h).await?.body)
    }

    pub async fn delete_event(&self, mailbox: &str, id: &str, if_match: Option<&str>) -> Result<(), GraphError> {
        self.delete(&format!("/users/{}/events/{}", seg(mailbox), seg(id)), if_match).await
    }

    /// Occurrences and exceptions of a series between two instants.
    pub async fn event_instances(
        &self,
        mailbox: &str,
        series_id: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<Value>, GraphError> {
        let path = format!(
            "/users/{}/events/{}/instances?startDateTime={}&endDateTime={}",
            seg(mailbox),
            seg(series_id),
            start.to_rfc3339_opts(SecondsFormat::Secs, true),
            end.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        let prefer = format!("odata.maxpagesize={}, outlook.timezone=\"UTC\"", self.config().page_size);
        let mut out = Vec::new();
        let mut next = Some(path);
        while let Some(p) = next.take() {
            let page = self.send(Method::GET, &p, None, &[("Prefer", &prefer)]).await?.body;
            out.extend(page.get("value").and_then(Value::as_array).into_iter().flatten().cloned());
            next = page.get("@odata.nextLink").and_then(Value::as_str).map(str::to_string);
        }
        Ok(out)
    }

    // ---- To Do lists and tasks

    fn tasks_path(mailbox: &str, list_id: &str) -> String {
        format!("/users/{}/todo/lists/{}/tasks", seg(mailbox), seg(list_id))
    }

    pub async fn list_todo_lists(&self, mailbox: &str) -> Result<Vec<Value>, GraphError> {
        self.list_all(&format!("/users/{}/todo/lists", seg(mailbox))).await
    }

    pub async fn get_todo_list(&self, mailbox: &str, list_id: &str) -> Result<Value, GraphError> {
        self.get(&format!("/users/{}/todo/lists/{}", seg(mailbox), seg(list_id))).await
    }

    pub async fn create_todo_list(&self, mailbox: &str, name: &str) -> Result<Value, GraphError> {
        self.post(&format!("/users/{}/todo/lists", seg(mailbox)), &json!({"displayName": name})).await
    }

    pub async fn delete_todo_list(&self, mailbox: &str, list_id: &str) -> Result<(), GraphError> {
        self.delete(&format!("/users/{}/todo/lists/{}", seg(mailbox), seg(list_id)), None).await
    }

    /// A task with its linked resources (hqsync's own copy carries its
    /// helloHQ id there from the POST on). Its `io.hqsync.task` extension is
    /// read apart ([`GraphClient::get_task_extension`], 404 = none), and only
    /// when needed.
    pub async fn get_task(&self, mailbox: &str, list_id: &str, id: &str) -> Result<Value, GraphError> {
        let path = format!("{}/{}?$expand=linkedResources", Self::tasks_path(mailbox, list_id), seg(id));
        self.get(&path).await
    }

    pub async fn create_task(&self, mailbox: &str, list_id: &str, task: &Value) -> Result<Value, GraphError> {
        self.post(&Self::tasks_path(mailbox, list_id), task).await
    }

    pub async fn update_task(
        &self,
        mailbox: &str,
        list_id: &str,
        id: &str,
        patch: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, GraphError> {
        self.patch(&format!("{}/{}", Self::tasks_path(mailbox, list_id), seg(id)), patch, if_match).await
    }

    pub async fn delete_task(&self, mailbox: &str, list_id: &str, id: &str) -> Result<(), GraphError> {
        self.delete(&format!("{}/{}", Self::tasks_path(mailbox, list_id), seg(id)), None).await
    }

    /// Creates the `io.hqsync.task` open extension with `fields` (an object).
    pub async fn create_task_extension(
        &self,
        mailbox: &str,
        list_id: &str,
        task_id: &str,
        fields: &Value,
    ) -> Result<Value, GraphError> {
        let mut body = json!({"@odata.type": "#microsoft.graph.openTypeExtension", "extensionName": TASK_EXTENSION});
        if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                b.insert(k.clone(), v.clone());
            }
        }
        let path = format!("{}/{}/extensions", Self::tasks_path(mailbox, list_id), seg(task_id));
        self.post(&path, &body).await
    }

    pub async fn update_task_extension(
        &self,
        mailbox: &str,
        list_id: &str,
        task_id: &str,
        fields: &Value,
    ) -> Result<Value, GraphError> {
        let path = format!("{}/{}/extensions/{}", Self::tasks_path(mailbox, list_id), seg(task_id), TASK_EXTENSION);
        self.patch(&path, fields, None).await
    }

    pub async fn get_task_extension(&self, mailbox: &str, list_id: &str, task_id: &str) -> Result<Value, GraphError> {
        let path = format!("{}/{}/extensions/{}", Self::tasks_path(mailbox, list_id), seg(task_id), TASK_EXTENSION);
        self.get(&path).await
    }

    // ---- subscriptions (the app's own)

    pub async fn create_subscription(&self, subscription: &Value) -> Result<Value, GraphError> {
        self.post("/subscriptions", subscription).await
    }

    /// Renews (and thereby reauthorizes) a subscription.
    pub async fn renew_subscription(&self, id: &str, expires: DateTime<Utc>) -> Result<Value, GraphError> {
        let body = json!({"expirationDateTime": expires.to_rfc3339_opts(SecondsFormat::Millis, true)});
        self.patch(&format!("/subscriptions/{}", seg(id)), &body, None).await
    }

    pub async fn reauthorize_subscription(&self, id: &str) -> Result<(), GraphError> {
        self.send(Method::POST, &format!("/subscriptions/{}/reauthorize", seg(id)), None, &[]).await.map(|_| ())
    }

    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        self.delete(&format!("/subscriptions/{}", seg(id)), None).await
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Value>, GraphError> {
        self.list_all("/subscriptions").await
    }
}
