//! Stateful simulators of Microsoft Graph and helloHQ (DESIGN §8), reached
//! only over HTTP exactly like the real services. Used by tests, benchmarks,
//! `hqsync sim` and `hqsync demo`.

pub mod graph;
pub mod hellohq;

pub mod writelog;
