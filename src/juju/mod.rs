//! Everything that talks to Juju: the hook context, events, and hook tools.
//!
//! `context` reads the environment once; `event` names what Juju asked for; `tools`
//! runs one hook tool and classifies failures; `client` offers typed, cached calls;
//! `log` routes `tracing` events to `juju-log`; `fake` (tests only) is an in-memory
//! model answering the hook tools.

pub mod client;
pub mod context;
pub mod event;
#[cfg(test)]
pub mod fake;
pub mod log;
pub mod tools;

pub use client::{Bag, Databag, Juju, LogLevel, Status, StatusKind};
pub use context::{Context, RelationRef};
pub use event::Event;
pub use tools::{FailureKind, ProcessRunner, ToolError, ToolRunner};
