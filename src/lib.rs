//! concourse-ci: a Juju machine charm for Concourse CI, as one `dispatch` executable.
//!
//! `main` builds a `juju::Context` from the environment and the real `host::Host`, and
//! hands both to `charm::dispatch`, which routes the event and converges the unit.

pub mod charm;
pub mod checkpoint;
pub mod concourse_vars;
pub mod config;
pub mod cos;
pub mod fsutil;
pub mod host;
pub mod installer;
pub mod juju;
pub mod keys;
pub mod postgres;
pub mod proxy;
pub mod readiness;
pub mod roles;
pub mod service;
pub mod storage_coordinator;
pub mod tls;
pub mod upgrade;
pub mod vault;
pub mod web;
pub mod web_options;
pub mod worker;

/// Formats an error and its sources as `outer: inner: root`, each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let s = src.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = src.source();
    }
    out
}
