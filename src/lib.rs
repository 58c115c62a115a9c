//! hqsync keeps appointments, tasks and contacts in step between helloHQ and
//! Exchange Online (Microsoft Graph). See DESIGN in README.md for the map of
//! modules; every module is public so integration tests drive the real code.
#![forbid(unsafe_code)]

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod conntest;
pub mod demo;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod model;
pub mod netguard;
pub mod ops;
pub mod queue;
pub mod scheduler;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod worker;
