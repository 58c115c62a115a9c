//! hqsync keeps appointments, tasks and contacts in step between helloHQ and
//! Exchange Online (Microsoft Graph). See DESIGN in README.md for the map of
//! modules; every module is public so integration tests drive the real code.
#![forbid(unsafe_code)]

pub mod config;
pub mod connectors;
pub mod model;
pub mod queue;
pub mod sim;
pub mod store;
