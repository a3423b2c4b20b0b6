//! The `upgrade` action: validating a request and starting the protocol (the leader's
//! hooks do the rest).
//!
//! Invariants: a refused request changes nothing and says how to do it right
//! (`action-fail`, exit 0); an accepted one only writes the new generation.

use super::super::actions::results;
use super::super::peers::Peers;
use super::super::release;
use super::super::CharmError;
use super::reports_of;
use crate::config::CharmConfig;
use crate::juju::Juju;
use crate::upgrade::{self, AppUpgrade};

/// What `action-fail` says when the action refuses a request.
type Refusal = String;

/// The `upgrade` action: validate, then start the protocol (the leader's hooks do the rest).
/// It is a request like a change of the `version` option, and it may move the
/// application away from the option's value; an older version needs `allow-downgrade`.
pub fn action(juju: &Juju) -> Result<(), CharmError> {
    if let Err(why) = run(juju)? {
        juju.action_fail(&why)?;
    }
    Ok(())
}

/// The requested version and whether a downgrade is allowed.
struct Request {
    version: String,
    allow_downgrade: bool,
}

fn run(juju: &Juju) -> Result<Result<(), Refusal>, CharmError> {
    let req = match request(juju)? {
        Ok(r) => r,
        Err(why) => return Ok(Err(why)),
    };
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => return Ok(Err(format!("fix the configuration first: {}", errs[0]))),
    };
    let mut peers = Peers::read(juju)?;
    if peers.rel.is_none() {
        return Ok(Err(
            "the peer relation is not up yet; wait for the units to settle and retry".into(),
        ));
    }
    let mut app = AppUpgrade::from_bag(&peers.app);
    if app.config_version.is_empty() {
        // Deployed by a charm that did not record it: the option as it is now is the
        // request already acted on.
        app.config_version = config.version.clone().unwrap_or_default();
    }
    let version = req.version.as_str();
    if let Some(settled) = upgrade::settle(&app).filter(|_| app.release == version) {
        peers.write_app(&settled.to_bag());
        peers.flush(juju)?;
        juju.action_log(&format!(
            "the application runs v{version}: the failed upgrade is settled"
        ))?;
        juju.action_set(&results(&[
            ("settled", "true".into()),
            ("target", version.into()),
        ]))?;
        return Ok(Ok(()));
    }
    let mut next = match upgrade::start(&app, version, req.allow_downgrade) {
        Ok(n) => n,
        Err(upgrade::StartError::SameRunning { gen, phase, .. }) => {
            let line = upgrade::progress(&app, &reports_of(juju, &config, &peers));
            juju.action_log(&format!("already upgrading: {line}"))?;
            juju.action_set(&results(&[
                ("generation", gen.to_string()),
                ("phase", phase.to_string()),
                ("progress", line),
            ]))?;
            return Ok(Ok(()));
        }
        Err(e @ upgrade::StartError::Downgrade { .. }) => return Ok(Err(format!(
            "{e}: juju run {}/leader upgrade version={version} allow-downgrade=true (see docs/upgrade.md: an older web may refuse a database a newer one migrated)",
            juju.app_name()
        ))),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(why) = available(juju, &config, version)? {
        return Ok(Err(why));
    }
    release::forget_install_failure(juju, version);
    super::name_ackers(juju, &config, &peers, &app, &mut next)?;
    peers.write_app(&next.to_bag());
    peers.flush(juju)?;
    report_started(juju, &config, &next)?;
    Ok(Ok(()))
}

/// The action's parameters, checked: a version, asked of the leader.
fn request(juju: &Juju) -> Result<Result<Request, Refusal>, CharmError> {
    let params = juju.action_params()?;
    let Some(version) = params
        .get("version")
        .and_then(|v| v.as_str())
        .map(|v| v.trim().trim_start_matches('v').to_string())
    else {
        return Ok(Err(
            "missing parameter version: juju run concourse-ci/leader upgrade version=7.14.3".into(),
        ));
    };
    if !juju.is_leader()? {
        return Ok(Err(format!(
            "run this on the leader: juju run {}/leader upgrade version={version}",
            juju.app_name()
        )));
    }
    if !crate::config::is_valid_version(&version) {
        return Ok(Err(format!(
            "{version:?} is not a Concourse version (expected e.g. 7.14.3)"
        )));
    }
    let allow_downgrade = params
        .get("allow-downgrade")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    Ok(Ok(Request {
        version,
        allow_downgrade,
    }))
}

/// Refuses versions the source does not have (a resource is checked when installed).
fn available(
    juju: &Juju,
    config: &CharmConfig,
    version: &str,
) -> Result<Result<(), Refusal>, CharmError> {
    if juju.resource_get(release::RESOURCE)?.is_some() {
        return Ok(Ok(()));
    }
    let url = config.release_url_for(version);
    let mut http = release::install_options(juju, config).http;
    http.extra_ca_pem = config.release_ca.clone();
    Ok(crate::installer::download::exists_at_source(&http, &url)
        .map_err(|why| format!("v{version} is not available: {why}")))
}

/// Tells the operator the upgrade started and how to follow it.
fn report_started(juju: &Juju, config: &CharmConfig, next: &AppUpgrade) -> Result<(), CharmError> {
    let version = next.target.as_str();
    juju.action_log(&format!(
        "upgrade generation {} to v{version} started (from v{}); units prepare, the leader downloads once, then web and workers switch one by one",
        next.gen, next.from
    ))?;
    let follow = format!("juju status {} --watch 5s", juju.app_name());
    let mut out = vec![
        ("generation", next.gen.to_string()),
        ("target", version.to_string()),
        ("from", next.from.clone()),
        ("follow", follow),
    ];
    if let Some(pinned) = config.version.as_deref().filter(|p| *p != version) {
        out.push((
            "note",
            format!(
                "the version option still says {pinned}; it is not a new request until it changes (align: juju config {} version={version})",
                juju.app_name()
            ),
        ));
    }
    juju.action_set(&results(&out))?;
    Ok(())
}
