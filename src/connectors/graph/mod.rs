//! Microsoft Graph: notification payloads (and, later, the API client).
pub mod notification;
