//! Operator actions: `get-admin-password`, `check-status`, `restart-services`
//! (`upgrade` lives with the upgrade wiring).
//!
//! Invariants: an action that cannot do its job calls `action-fail` with a message that
//! says what to do and exits 0 (so Juju still commits what it wrote); results never carry
//! a secret other than the one the action exists to show.

use std::collections::BTreeMap;

use super::peers::{self, Peers};
use super::{release, CharmError};
use crate::config::CharmConfig;
use crate::host::Host;
use crate::juju::Juju;
use crate::roles::roles_for;
use crate::service::ServiceError;
use crate::{web, worker};

/// Action results from pairs.
pub(super) fn results(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// `get-admin-password`: username and password of the local admin user.
pub fn get_admin_password(juju: &Juju) -> Result<(), CharmError> {
    let config = juju.config()?;
    let username = config
        .get("initial-admin-username")
        .and_then(|v| v.as_str())
        .unwrap_or("admin")
        .to_string();
    let peers = Peers::read(juju)?;
    match super::workload::admin_password(juju, &peers)? {
        Some(pw) => {
            // action-set only takes key=value arguments: the password is in its argv for
            // the few milliseconds the tool runs; it is never logged.
            juju.action_set(&results(&[
                ("username", username),
                ("password", pw.expose().to_string()),
                ("message", "Use these credentials to log in to Concourse".into()),
            ]))?;
        }
        None => juju.action_fail(
            "the admin password does not exist yet: the leader creates it once the peer relation is up; \
             wait for `juju status` to settle and run the action again",
        )?,
    }
    Ok(())
}

fn service_state(host: &Host, unit: &str) -> String {
    if host.services.is_active(unit) {
        "active".into()
    } else {
        "inactive".into()
    }
}

/// `check-status`: what this unit runs and how the volume and upgrade look.
pub fn check_status(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let verbose = juju
        .action_params()?
        .get("verbose")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => {
            juju.action_fail(&format!("configuration is invalid: {}", errs[0]))?;
            return Ok(());
        }
    };
    let peers = Peers::read(juju)?;
    let me = juju.unit_name();
    let roles = roles_for(config.mode, me, peers.app_value(peers::WEB_UNIT));
    let mut r = vec![
        ("unit", me.to_string()),
        ("mode", config.mode.as_str().to_string()),
        (
            "role",
            roles
                .map(|r| r.describe())
                .unwrap_or("undecided")
                .to_string(),
        ),
        (
            "version",
            release::pointer_version(host).unwrap_or_else(|| "none".into()),
        ),
        ("services.web", service_state(host, web::SERVICE)),
        ("services.worker", service_state(host, worker::SERVICE)),
    ];
    let app = crate::upgrade::AppUpgrade::from_bag(&peers.app);
    r.push(("upgrade.phase", app.phase.as_str().to_string()));
    if app.phase.running() || app.phase == crate::upgrade::Phase::Failed {
        r.push(("upgrade.target", app.target.clone()));
        r.push(("upgrade.generation", app.gen.to_string()));
    }
    if !app.error.is_empty() {
        r.push(("upgrade.error", app.error.clone()));
    }
    if !app.release.is_empty() {
        r.push(("application.version", app.release.clone()));
    }
    r.push((
        "application.version-option",
        config.version.clone().unwrap_or_else(|| "latest".into()),
    ));
    if let Some(note) = crate::upgrade::option_note(&app, config.version.as_deref()) {
        r.push(("application.note", note.text(juju.app_name())));
    }
    match release::volume_root(juju)? {
        Some(root) => {
            r.push(("volume.path", root.display().to_string()));
            r.push((
                "volume.versions",
                release::versions_on_volume(&root).join(","),
            ));
            if verbose {
                r.push((
                    "volume.shared-storage",
                    format!("{:?}", config.shared_storage).to_lowercase(),
                ));
                r.push(("volume.release-version", app.release.clone()));
                r.push(("pointer", release::current_link().display().to_string()));
            }
        }
        None => r.push(("volume.path", "not attached".into())),
    }
    if verbose {
        let mut members = peers.members(me);
        members.retain(|u| u != me);
        r.push(("peers", members.join(",")));
    }
    juju.action_set(&results(&r))?;
    Ok(())
}

/// `restart-services`: restarts this unit's services; a worker is landed first.
pub fn restart_services(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let ready = CharmConfig::from_map(&juju.config()?)
        .map(|c| worker::ReadyWait::from_config(&c))
        .unwrap_or_default();
    if let Err(why) = release::check_running_release(juju, host)? {
        juju.action_fail(&format!("not restarting: {why}"))?;
        return Ok(());
    }
    let sys = &host.services;
    let mut done = Vec::new();
    if sys.is_active(worker::SERVICE) {
        juju.action_log("landing the worker")?;
        if let Err(e) = worker::drain(host, worker::Drain::Land, ready) {
            juju.action_log(&crate::error_chain(&e))?;
        }
        worker::start(host)?;
        done.push("worker");
    }
    if sys.is_active(web::SERVICE) {
        sys.restart(web::SERVICE).map_err(ServiceError::from)?;
        done.push("web");
    }
    if done.is_empty() {
        juju.action_fail(
            "no Concourse service runs on this unit; see `juju status` for what it waits for",
        )?;
    } else {
        juju.action_set(&results(&[("restarted", done.join(","))]))?;
    }
    Ok(())
}
