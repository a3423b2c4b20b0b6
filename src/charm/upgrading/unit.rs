//! A unit's part of an upgrade: acknowledging phases, switching when granted (landing its
//! worker first), verifying the switch and going back when the new release does not run.
//!
//! Owns: the unit databag's upgrade keys (`upgrade-ack`, `upgrade-state`,
//! `upgrade-error`) and which release the unit points at. Invariants: the pointer moves
//! only to a published release that verified; a unit without a grant keeps what it runs;
//! web moves to a release only once the database is not newer than that release supports
//! (`web::prepare_switch`: migrated down first by the release web leaves), else it stays
//! where it is and the switch fails; a switch of web verifies that its TSA listens.

use std::time::Duration;

use tracing::{info, warn};

use super::super::peers::{self, Peers};
use super::super::release::{self, Installed, RunningRelease};
use super::super::status::{messages as msg, Reports};
use super::super::CharmError;
use super::reports_of;
use crate::config::CharmConfig;
use crate::host::Host;
use crate::installer::{self, VerifyMode};
use crate::juju::Juju;
use crate::roles::Roles;
use crate::storage_coordinator::Volume;
use crate::upgrade::{self, AppUpgrade, UnitReport, UnitState, UnitView};
use crate::web::SchemaGate;
use crate::{readiness, web, worker};

/// How long a switched web may take to start its TSA (open and migrate the database).
const WEB_START_WAIT: Duration = Duration::from_secs(300);

/// How long a restarted service without a readiness proof gets to show that it crashes.
const CRASH_WINDOW: Duration = Duration::from_millis(1500);

/// Shows where a running upgrade is, as of the end of this hook's steps: the leader from
/// every unit's report, a non-leader (which reads only some units' databags) as the
/// leader last published it.
pub fn report_progress(
    juju: &Juju,
    config: &CharmConfig,
    peers: &Peers,
    leader: bool,
    reports: &mut Reports,
) {
    let app = AppUpgrade::from_bag(&peers.app);
    let progress = match peers.app_value(upgrade::K_PROGRESS) {
        Some(p) if !leader => p.to_string(),
        _ => upgrade::progress(&app, &reports_of(juju, config, peers)),
    };
    if app.phase.running() && !progress.is_empty() {
        reports.maintenance(progress);
    }
}

/// The leader adds where the upgrade is to an app databag write this hook makes anyway
/// (never a write of its own: each wakes every unit).
pub fn publish_progress(juju: &Juju, config: &CharmConfig, peers: &mut Peers) {
    if !peers.app_write_pending() {
        return;
    }
    let app = AppUpgrade::from_bag(&peers.app);
    let progress = upgrade::progress(&app, &reports_of(juju, config, peers));
    peers.write_app(&peers::bag([(upgrade::K_PROGRESS, progress)]));
}

/// What the unit runs now, and whether it is switching (for verification).
pub struct UnitOutcome {
    pub running: Option<RunningRelease>,
    /// Set while the unit holds a grant and has not reported the switch: in the hook that
    /// moves the pointer, and in the retries of a hook that failed after it moved.
    pub switched: Option<Switch>,
}

/// A switch to another release for upgrade generation `gen`, to verify in this hook.
#[derive(Debug, Clone)]
pub struct Switch {
    pub gen: u64,
    /// The version the unit ran before, if any.
    pub previous: Option<String>,
    /// The release verified in this hook before the switch: the check after the restart
    /// need not verify it again. A retried switch hook verifies before switching too,
    /// since the unit has not reported the target yet.
    pub verified: bool,
}

/// The unit's part: acknowledge phases, switch when granted, otherwise run the app's release.
pub fn unit(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    peers: &mut Peers,
    roles: Option<Roles>,
    reports: &mut Reports,
) -> Result<UnitOutcome, CharmError> {
    let me = juju.unit_name().to_string();
    let app = AppUpgrade::from_bag(&peers.app);
    let running = release::pointer_version(host).filter(|v| vol.is_published(v).unwrap_or(false));
    let me_report = UnitReport::from_bag(&me, roles.map(|r| r.web).unwrap_or(false), &peers.me);
    let step = upgrade::unit_step(&UnitView {
        app: &app,
        me: &me_report,
        running: running.as_deref(),
        volume_ok: true,
    });
    if let Some((gen, phase)) = step.ack {
        peers.write_me(&peers::bag([(upgrade::K_ACK, format!("{gen}:{phase}"))]));
    }
    let switch_gen = step.switch_to.is_some().then_some(app.gen);
    let Some(version) = version_to_run(step.switch_to, &running, &app, config) else {
        reports.push(msg::WAITING_FOR_VERSION.status());
        return keep(host, vol, &me, None);
    };
    let set_installed = version == app.release;
    let mut install = Reports::default();
    let installed = release::install(
        juju,
        host,
        config,
        vol,
        &version,
        set_installed,
        &mut install,
    )?;
    let blocked = install.has_blocking();
    reports.append(install);
    if let Installed::NotReady = installed {
        // A wait (another unit holds the volume) is tried again in a later hook.
        if let Some(gen) = switch_gen.filter(|_| blocked) {
            report_failure(peers, gen, &format!("cannot install v{version} on {me}"));
        }
        return keep(host, vol, &me, running.as_deref());
    }
    // A retried switch finds the pointer already on the target: what the unit ran before
    // is the version it last reported.
    let previous = match running {
        Some(r) if switch_gen.is_some() && r == version => me_report.version.clone(),
        other => other,
    };
    let mut verified = false;
    if let Some(gen) = switch_gen.filter(|_| previous.as_deref() != Some(version.as_str())) {
        let from = (gen, previous.as_deref());
        if let Some(held) = before_switch(
            juju, host, config, vol, peers, roles, reports, from, &version,
        )? {
            return Ok(held);
        }
        verified = true;
    }
    let now_running = release::point_at(host, vol, &me, &version)?;
    // Verified in every hook until the unit reports the switch (level-triggered: a
    // retried switch hook verifies too).
    let switched = switch_gen.map(|gen| Switch {
        gen,
        previous,
        verified,
    });
    Ok(UnitOutcome {
        running: Some(now_running),
        switched,
    })
}

/// Before switching to `version` in generation `gen` from `previous`: verifies it, lets
/// web's database allow it and lands the worker. `Some`: the unit stays where it is, the
/// failure reported.
#[allow(clippy::too_many_arguments)]
fn before_switch(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    peers: &mut Peers,
    roles: Option<Roles>,
    reports: &mut Reports,
    (gen, previous): (u64, Option<&str>),
    version: &str,
) -> Result<Option<UnitOutcome>, CharmError> {
    let me = juju.unit_name();
    if let Err(e) = installer::verify_release(vol, version, VerifyMode::Quick) {
        let why = format!("v{version} does not verify on {me}: {}", e.status_message());
        report_failure(peers, gen, &why);
        return keep(host, vol, me, previous).map(Some);
    }
    if let (Some(prev), true) = (previous, roles.is_some_and(|r| r.web)) {
        if let SchemaGate::Hold(reason) = web_gate(juju, host, vol, prev, version)? {
            report_failure(peers, gen, &format!("web stays on v{prev}: {reason}"));
            reports.push(msg::WEB_HELD.fill(&[prev, &reason]));
            return keep(host, vol, me, Some(prev)).map(Some);
        }
    }
    if previous.is_some() && roles.is_some_and(|r| r.worker) && !worker_runs(host, vol, version) {
        land_worker(juju, host, config, version)?;
    }
    Ok(None)
}

/// Which version to run now: the granted target, else what runs (a unit on another
/// version than the application's switches only when granted: the leader starts a
/// catch-up generation for it), else the application's, else the pinned one.
fn version_to_run(
    target: Option<String>,
    running: &Option<String>,
    app: &AppUpgrade,
    config: &CharmConfig,
) -> Option<String> {
    target
        .or_else(|| running.clone())
        .or_else(|| (!app.release.is_empty()).then(|| app.release.clone()))
        .or_else(|| config.version.clone())
}

/// The unit keeps running `version` (if any), without a switch.
fn keep(
    host: &Host,
    vol: &Volume,
    me: &str,
    version: Option<&str>,
) -> Result<UnitOutcome, CharmError> {
    let running = match version {
        Some(v) => Some(release::point_at(host, vol, me, v)?),
        None => None,
    };
    Ok(UnitOutcome {
        running,
        switched: None,
    })
}

/// Whether the worker runs `version` already (a retried switch that started it).
fn worker_runs(host: &Host, vol: &Volume, version: &str) -> bool {
    let Some(dir) = vol
        .release_path(version)
        .ok()
        .and_then(|d| std::fs::canonicalize(d).ok())
    else {
        return false;
    };
    host.services.is_active(worker::SERVICE)
        && crate::service::started_binary(host, worker::SERVICE)
            .is_some_and(|b| b.starts_with(&dir))
}

/// Lands the worker before switching: once it registered, through its unit's stop
/// (`worker::drain`: systemd escalates after drain-timeout and never restarts it).
fn land_worker(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    version: &str,
) -> Result<(), CharmError> {
    if !host.services.is_active(worker::SERVICE) {
        return Ok(());
    }
    juju.status_set(&msg::DRAINING_FOR_UPGRADE.fill(&[version]), false)?;
    let ready = worker::ReadyWait::from_config(config);
    match worker::drain(host, worker::Drain::Land, ready)? {
        worker::Drained::Drained { waited } if waited >= config.drain_timeout => warn!(
            "the worker did not land within drain-timeout ({}s): systemd stopped it (SIGTERM, then SIGKILL to its main process); switching to v{version}",
            config.drain_timeout.as_secs()
        ),
        worker::Drained::NotRegistered => warn!(
            "the worker was not registered with a TSA, so nothing could be landed; switching to v{version}"
        ),
        _ => info!("worker landed for the upgrade to v{version}"),
    }
    Ok(())
}

/// The database's part of moving web from release `from` to `to` (`web::prepare_switch`).
fn web_gate(
    juju: &Juju,
    host: &Host,
    vol: &Volume,
    from: &str,
    to: &str,
) -> Result<SchemaGate, CharmError> {
    let db = super::super::workload::db_info(juju)?
        .ok()
        .map(|db| web::db_env(&db));
    let bin = |v: &str| -> Result<std::path::PathBuf, CharmError> {
        Ok(vol
            .release_path(v)
            .map_err(release::ReleaseError::from)?
            .join("concourse/bin/concourse"))
    };
    let (from_bin, to_bin) = (bin(from)?, bin(to)?);
    Ok(web::prepare_switch(
        host,
        db.as_ref(),
        (from, &from_bin),
        (to, &to_bin),
    )?)
}

fn report_failure(peers: &mut Peers, gen: u64, reason: &str) {
    warn!("upgrade generation {gen} failed here: {reason}");
    peers.write_me(&peers::bag([
        (
            upgrade::K_STATE,
            format!("{gen}:{}", UnitState::Failed.as_str()),
        ),
        (upgrade::K_ERROR, reason.to_string()),
    ]));
}

/// After the roles restarted on a switched release: check it really runs (web: its TSA
/// listens); go back if not (web only once the database allows it, see [`web_gate`]).
#[allow(clippy::too_many_arguments)]
pub fn verify_switch(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    peers: &mut Peers,
    roles: Roles,
    running: &RunningRelease,
    switch: Switch,
) -> Result<Option<RunningRelease>, CharmError> {
    let Switch {
        gen,
        previous,
        verified,
    } = switch;
    let me = juju.unit_name().to_string();
    let problems = switch_problems(host, config, vol, roles, &running.version, verified);
    if problems.is_empty() {
        info!("{me} switched to v{} (generation {gen})", running.version);
        peers.write_me(&peers::bag([
            (
                upgrade::K_STATE,
                format!("{gen}:{}", UnitState::Switched.as_str()),
            ),
            (upgrade::K_ERROR, String::new()),
        ]));
        return Ok(None);
    }
    let mut reason = format!(
        "v{} did not start on {me}: {}",
        running.version,
        problems.join("; ")
    );
    let Some(prev) = previous else {
        report_failure(peers, gen, &reason);
        return Ok(None);
    };
    if roles.web {
        if let SchemaGate::Hold(why) = web_gate(juju, host, vol, &running.version, &prev)? {
            reason.push_str(&format!("; web stays on v{}: {why}", running.version));
            report_failure(peers, gen, &reason);
            return Ok(None);
        }
    }
    report_failure(peers, gen, &reason);
    warn!("going back to v{prev}");
    Ok(Some(release::point_at(host, vol, &me, &prev)?))
}

/// What is wrong with the roles running `version` after a switch (empty: nothing). Web's
/// proof is its TSA listening (a crash before that ends the wait); a worker's is its
/// beacon registering, which ends [`CRASH_WINDOW`] early. A worker that does not register
/// within the window (no TSA answers yet), or a service whose readiness lines are not
/// logged, gets the whole window to show a crash instead.
fn switch_problems(
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    roles: Roles,
    version: &str,
    verified: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !verified {
        if let Err(e) = installer::verify_release(vol, version, VerifyMode::Quick) {
            problems.push(e.status_message());
        }
    }
    let start = host.clock.monotonic();
    // A web unit still waiting for its database has no service to check yet.
    let configured = |env_file: &str| host.paths.local(env_file).exists();
    let (web_on, worker_on) = (
        roles.web && configured(web::ENV_FILE),
        roles.worker && configured(worker::ENV_FILE),
    );
    let observable = problems.is_empty() && readiness::observable(config.log_level);
    let web_proof = web_on && observable;
    if web_proof {
        if let Some(p) = web_listens(host) {
            problems.push(p);
        }
    }
    let window_left = || CRASH_WINDOW.saturating_sub(host.clock.monotonic().saturating_sub(start));
    let unproven = (web_on && !web_proof)
        || (worker_on && !(observable && worker_registers_or_stops(host, window_left())));
    if unproven {
        host.clock.sleep(window_left());
    }
    for (on, service) in [(web_on, web::SERVICE), (worker_on, worker::SERVICE)] {
        let down = format!("{service} is not running");
        if on && !host.services.is_active(service) && !problems.contains(&down) {
            problems.push(down);
        }
    }
    problems
}

/// Waits up to `within` for a switched worker's beacon to register or the worker to stop
/// (the caller then finds it not running); false when neither happened (or the journal
/// cannot tell).
fn worker_registers_or_stops(host: &Host, within: Duration) -> bool {
    match readiness::wait(host, worker::SERVICE, readiness::worker_registered, within) {
        Ok(readiness::Wait::Ready | readiness::Wait::Stopped) => true,
        Ok(readiness::Wait::TimedOut) => false,
        Err(e) => {
            warn!(
                "cannot tell whether the worker registered: {}",
                crate::error_chain(&e)
            );
            false
        }
    }
}

/// Waits for a switched web's TSA to listen: `None` once it does (or when the journal
/// cannot tell), else what went wrong.
fn web_listens(host: &Host) -> Option<String> {
    match readiness::wait(host, web::SERVICE, readiness::web_listening, WEB_START_WAIT) {
        Ok(readiness::Wait::Ready) => None,
        Ok(readiness::Wait::Stopped) => Some(format!("{} is not running", web::SERVICE)),
        Ok(readiness::Wait::TimedOut) => Some(format!(
            "{}'s TSA did not listen within {}s",
            web::SERVICE,
            WEB_START_WAIT.as_secs()
        )),
        Err(e) => {
            warn!(
                "cannot tell whether web's TSA listens: {}",
                crate::error_chain(&e)
            );
            None
        }
    }
}
