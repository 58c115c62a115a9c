//! Microsoft Graph: notification payloads and the API client (token cache,
//! one retry policy, per-mailbox concurrency and request budget, `$batch`, delta rounds,
//! folder/list bootstrap and thin resource calls).
pub mod batch;
pub mod bootstrap;
pub mod client;
pub mod delta;
pub mod error;
pub mod notification;
pub mod quota;
pub mod resources;
pub mod share;
mod token;

pub use batch::{BatchRequest, BatchResponse, MAX_BATCH};
pub use bootstrap::{ContactFolders, DEFAULT_TODO_LIST, GLOBAL_CONTACTS_FOLDER, MY_CONTACTS_FOLDER};
pub use client::{GraphClient, GraphClientConfig, GraphResponse, RetryPolicy};
pub use delta::{CalendarWindow, DeltaItem, DeltaRound, DeltaTarget};
pub use error::{parse_retry_after, GraphError};
pub use quota::MailboxQuota;
pub use share::ProcessShare;
