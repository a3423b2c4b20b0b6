//! Routing: one entry point per hook or action, each ending in an idempotent reconcile.
//!
//! Owns: which module handles which event and how errors become exit codes.
//! Invariants: every hook runs the same `reconcile` (Juju coalesces and retries
//! hooks, so no handler may assume it runs once or in order); unknown hooks and
//! actions succeed with a debug log; bad config is a `blocked` status, not a failed
//! hook. Hazards: only transient errors (tool failures, I/O, network) may fail a
//! hook, because Juju retries failed hooks and blocks the unit meanwhile.

use tracing::{debug, info};

use crate::config::{CharmConfig, ConfigError};
use crate::juju::{Event, Juju, Status, ToolError};

/// Errors a hook can end with.
#[derive(Debug, thiserror::Error)]
pub enum CharmError {
    #[error("talking to Juju failed")]
    Tool(#[from] ToolError),
}

impl CharmError {
    /// Whether Juju should retry the hook (exit non-zero).
    pub fn retryable(&self) -> bool {
        match self {
            CharmError::Tool(_) => true,
        }
    }
}

/// Runs the handler for the hook or action in `juju`'s context.
pub fn dispatch(juju: &Juju) -> Result<(), CharmError> {
    let event = juju.context().event.clone();
    match &event {
        Event::Unknown(name) => {
            debug!("ignoring hook {name}: nothing to do");
            Ok(())
        }
        Event::Action(name) => run_action(juju, name),
        _ => reconcile(juju),
    }
}

fn run_action(juju: &Juju, name: &str) -> Result<(), CharmError> {
    match name {
        "upgrade" | "get-admin-password" | "check-status" | "restart-services" => {
            juju.action_fail(&format!(
                "action {name} is not available in this revision of the charm"
            ))?;
            Ok(())
        }
        other => {
            debug!("ignoring unknown action {other}");
            Ok(())
        }
    }
}

/// Converges the unit towards its configuration. Safe to run from any hook, any number of times.
fn reconcile(juju: &Juju) -> Result<(), CharmError> {
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => return block_on_config(juju, &errs),
    };
    debug!(mode = config.mode.as_str(), "config valid");
    juju.status_set(
        &Status::waiting("Waiting for Concourse release installation"),
        false,
    )?;
    Ok(())
}

fn block_on_config(juju: &Juju, errs: &[ConfigError]) -> Result<(), CharmError> {
    for e in errs {
        info!("{e}");
    }
    let mut msg = errs[0].status_message();
    if errs.len() > 1 {
        msg.push_str(&format!(
            " (and {} more, see juju debug-log)",
            errs.len() - 1
        ));
    }
    juju.status_set(&Status::blocked(msg), false)?;
    Ok(())
}
