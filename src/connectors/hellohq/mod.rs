//! helloHQ: webhook verification (and, later, the API client).
pub mod webhook;
