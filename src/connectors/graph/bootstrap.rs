//! Per-mailbox bootstrap of the containers hqsync writes into: the contact
//! folders "HQ Globale Kontakte" and "HQ Meine Kontakte" and the To Do list
//! for helloHQ tasks (GRAPH.md §6.3). Each is looked up by `displayName`
//! first and created only when missing; a `409` (another worker created it
//! meanwhile) leads to a second lookup. The ids are remembered in `cursors`
//! (scope = mailbox; `folder.global`, `folder.mine`, `todo.list`) so later
//! calls do not list. Within one process bootstrap is serialised per
//! mailbox; across processes, because To Do accepts duplicate list names, a
//! worker that finds a twin of the list it just created deletes its own. It
//! never renames a folder or list and never deletes one it did not just create.

use std::sync::Arc;

use serde_json::{json, Value};

use super::client::{seg, GraphClient};
use super::error::GraphError;
use crate::model::TenantId;
use crate::store::Store;

pub const GLOBAL_CONTACTS_FOLDER: &str = "HQ Globale Kontakte";
pub const MY_CONTACTS_FOLDER: &str = "HQ Meine Kontakte";
pub const DEFAULT_TODO_LIST: &str = "helloHQ";

const CURSOR_GLOBAL: &str = "folder.global";
const CURSOR_MINE: &str = "folder.mine";
const CURSOR_TODO: &str = "todo.list";

/// The two contact folders of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactFolders {
    pub global_id: String,
    pub mine_id: String,
}

impl GraphClient {
    /// Finds or creates both contact folders of `mailbox`.
    pub async fn ensure_contact_folders(
        &self,
        store: &Store,
        tenant: &TenantId,
        mailbox: &str,
    ) -> Result<ContactFolders, GraphError> {
        let lock = self.bootstrap_lock(mailbox);
        let _guard = lock.lock().await;
        let path = format!("/users/{}/contactFolders", seg(mailbox));
        let global_id = self.ensure_named(store, tenant, mailbox, CURSOR_GLOBAL, &path, GLOBAL_CONTACTS_FOLDER).await?;
        let mine_id = self.ensure_named(store, tenant, mailbox, CURSOR_MINE, &path, MY_CONTACTS_FOLDER).await?;
        Ok(ContactFolders { global_id, mine_id })
    }

    /// Finds or creates the To Do list `name` of `mailbox` and returns its id.
    pub async fn ensure_todo_list(
        &self,
        store: &Store,
        tenant: &TenantId,
        mailbox: &str,
        name: &str,
    ) -> Result<String, GraphError> {
        let lock = self.bootstrap_lock(mailbox);
        let _guard = lock.lock().await;
        let path = format!("/users/{}/todo/lists", seg(mailbox));
        self.ensure_named(store, tenant, mailbox, CURSOR_TODO, &path, name).await
    }

    /// Forgets the remembered ids of `mailbox` (after a 404 on a folder or
    /// list, or when the configured list name changed).
    pub async fn forget_bootstrap(&self, store: &Store, tenant: &TenantId, mailbox: &str) -> Result<(), GraphError> {
        for name in [CURSOR_GLOBAL, CURSOR_MINE, CURSOR_TODO] {
            store.set_cursor(tenant, mailbox, name, "").await?;
        }
        Ok(())
    }

    fn bootstrap_lock(&self, mailbox: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.bootstrap.lock().entry(mailbox.to_lowercase()).or_default().clone()
    }

    async fn ensure_named(
        &self,
        store: &Store,
        tenant: &TenantId,
        mailbox: &str,
        cursor: &str,
        collection: &str,
        name: &str,
    ) -> Result<String, GraphError> {
        if let Some(id) = store.get_cursor(tenant, mailbox, cursor).await?.filter(|id| !id.is_empty()) {
            return Ok(id);
        }
        let id = self.find_or_create(collection, name).await?;
        store.set_cursor(tenant, mailbox, cursor, &id).await?;
        Ok(id)
    }

    /// Looks `name` up and creates it when missing. Contact folders are
    /// unique by name (a racing create gets `409`: look again). To Do lists
    /// are not, so after creating one we list again and, if another worker's
    /// list of that name exists, delete ours (it is empty: we just made it)
    /// and use theirs; if both yielded, a short random pause and another try.
    async fn find_or_create(&self, collection: &str, name: &str) -> Result<String, GraphError> {
        const ATTEMPTS: u32 = 3;
        for attempt in 1..=ATTEMPTS {
            if let Some(id) = self.find_by_name(collection, name).await?.into_iter().next() {
                return Ok(id);
            }
            let mine = match self.post(collection, &json!({"displayName": name})).await {
                Ok(created) => id_of(&created)?,
                Err(GraphError::Status { status: 409, .. }) => continue,
                Err(e) => return Err(e),
            };
            let others: Vec<String> =
                self.find_by_name(collection, name).await?.into_iter().filter(|id| *id != mine).collect();
            let Some(theirs) = others.into_iter().next() else {
                return Ok(mine);
            };
            tracing::info!(name, "another worker created the same entry meanwhile; using theirs");
            match self.delete(&format!("{collection}/{}", seg(&mine)), None).await {
                Ok(()) | Err(GraphError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if self.find_by_name(collection, name).await?.contains(&theirs) {
                return Ok(theirs);
            }
            if attempt < ATTEMPTS {
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 20..200);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
        }
        Err(GraphError::Decode(format!("could not settle on one '{name}' after {ATTEMPTS} attempts")))
    }

    /// The ids of the entries named `name` (case-insensitive, as Outlook
    /// compares folder names), sorted so that every worker picks the same one.
    async fn find_by_name(&self, collection: &str, name: &str) -> Result<Vec<String>, GraphError> {
        let all = self.list_all(collection).await?;
        let mut ids: Vec<String> = all
            .iter()
            .filter(|v| v.get("displayName").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn id_of(v: &Value) -> Result<String, GraphError> {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| GraphError::Decode("created entry without id".into()))
}
