//! helloHQ: webhook verification (and, later, the API client).
pub mod client;
pub mod poll;
pub mod webhook;
pub mod wire;
