//! The only code that knows the wire formats of Microsoft Graph and helloHQ.

pub mod graph;
pub mod hellohq;
