//! helloHQ: webhook verification, the API client, typed wire records and
//! change polling. The only code that knows helloHQ's wire format.
pub mod budget;
pub mod cache;
pub mod client;
pub mod poll;
pub mod routes;
pub mod webhook;
pub mod wire;
