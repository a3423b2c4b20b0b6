//! The leader's part of an upgrade: turning requests into generations, catching up stray
//! units, and taking the protocol's steps until one needs other units to react.
//!
//! Owns: the app databag's upgrade keys (through `crate::upgrade`'s decisions), the
//! download of a target by the leader, and the leader's local clock of the prepare phase
//! and of grants. The finish only writes the final state: recording the installed
//! version and pruning follow from it in every hook (`release::tidy_volume`).
//! Invariants: at most eight steps per hook; a step that other units must see ends the
//! hook's steps (going from prepare to downloading is not one: the leader downloads in
//! the same hook, so units see phase complete next unless the download must wait).

use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use super::super::peers::Peers;
use super::super::release::{self, Installed};
use super::super::status::Reports;
use super::super::CharmError;
use super::desired::desired_version;
use super::reports_of;
use crate::config::CharmConfig;
use crate::host::Host;
use crate::juju::{Event, Juju};
use crate::storage_coordinator::Volume;
use crate::upgrade::{self, AppUpgrade, ConfigRequest, LeaderStep, LeaderView, Phase};

/// How long units have to acknowledge `prepare` before the leader goes on without them.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
/// How much longer than `drain-timeout` a granted unit may take to switch before the
/// leader skips it (a lost machine, a planned unit that never started).
pub const GRANT_MARGIN: Duration = Duration::from_secs(600);

/// The leader's part: the application's version and the upgrade's steps.
///
/// The `version` option (or the latest release) and the `upgrade` action are both
/// requests and the last one wins: only a change of the configuration's version is
/// acted on (`config-version` in the app databag records the last value acted on).
pub fn leader(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    peers: &mut Peers,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    if peers.rel.is_none() {
        return Ok(());
    }
    let app = AppUpgrade::from_bag(&peers.app);
    let Some(wanted) = desired_version(juju, host, config, vol, &app, reports) else {
        return Ok(());
    };
    // A failure is tried again only from update-status or a config change: restarting
    // it from the relation-changed that the failure itself caused is a hot loop (each
    // round downloads the tarball again, or fails the same switch again).
    let retry_now = matches!(
        juju.context().event,
        Event::UpdateStatus | Event::ConfigChanged | Event::UpgradeCharm
    );
    match upgrade::config_request(&app, &wanted, config.version.is_none()) {
        ConfigRequest::Write(mut next) => {
            super::name_ackers(juju, config, peers, &app, &mut next)?;
            if app.release.is_empty() {
                info!("the application will run v{wanted}");
            } else if next.gen != app.gen {
                info!(
                    "starting upgrade generation {} to v{wanted} (configuration)",
                    next.gen
                );
            } else if app.phase == Phase::Failed && next.phase == Phase::Idle {
                info!("version set to the running v{wanted}: the failed upgrade is settled");
            } else {
                info!("the configuration asks for v{wanted}: recorded");
            }
            peers.write_app(&next.to_bag());
        }
        ConfigRequest::Later(e) => {
            info!("the configuration asks for v{wanted}; taken when the running upgrade ends: {e}")
        }
        ConfigRequest::Downgrade { running, requested } => {
            info!("the configuration asks for v{requested}, older than the running v{running}: not downgrading")
        }
        ConfigRequest::Seen => {
            if let Some(mut next) = upgrade::retry_failed(&app).filter(|_| retry_now) {
                super::name_ackers(juju, config, peers, &app, &mut next)?;
                info!(
                    "retrying the failed upgrade to v{} (generation {})",
                    next.target, next.gen
                );
                peers.write_app(&next.to_bag());
            }
        }
    }
    catch_up(juju, config, peers, retry_now);
    leader_steps(juju, host, config, vol, peers, reports)
}

/// While idle, a unit on another version than the application's gets a catch-up
/// generation (it switches only when granted).
fn catch_up(juju: &Juju, config: &CharmConfig, peers: &mut Peers, retry_now: bool) {
    let app = AppUpgrade::from_bag(&peers.app);
    let units = reports_of(juju, config, peers);
    if let Some(next) = upgrade::next_catch_up(&app, &units, retry_now) {
        info!(
            "units run v{} instead of v{}: catch-up generation {}",
            next.from, app.release, next.gen
        );
        peers.write_app(&next.to_bag());
    }
}

/// Runs the leader's decisions until one needs other units to react.
pub fn leader_steps(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    peers: &mut Peers,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    for _ in 0..8 {
        let app = AppUpgrade::from_bag(&peers.app);
        let units = reports_of(juju, config, peers);
        let published = !app.target.is_empty() && vol.is_published(&app.target).unwrap_or(false);
        let view = LeaderView {
            app: &app,
            units: &units,
            target_published: published,
            max_unavailable: config.upgrade_max_unavailable as usize,
            prepare_timed_out: prepare_timed_out(host, &app),
            grant_expired: grant_timed_out(host, &app, config),
        };
        match upgrade::leader_step(&view) {
            LeaderStep::Wait(why) => {
                if !why.is_empty() {
                    info!("upgrade: {why}");
                }
                return Ok(());
            }
            LeaderStep::Download => {
                // Only the install's own reports say whether it failed: another part of
                // the reconcile may be blocked for reasons of its own.
                let mut install = Reports::default();
                let installed =
                    release::install(juju, host, config, vol, &app.target, false, &mut install)?;
                let blocked = install.has_blocking().then(|| install.pick().message);
                reports.append(install);
                match (installed, blocked) {
                    (Installed::Ready, _) => continue,
                    // Waiting (another unit holds the volume): try again later.
                    (Installed::NotReady, None) => return Ok(()),
                    (Installed::NotReady, Some(why)) => {
                        // Blocked (bad checksum, 404, …): fail the upgrade, keeping the
                        // reason for the application status.
                        let failed = AppUpgrade {
                            phase: Phase::Failed,
                            error: format!(
                                "{}: cannot install v{}: {why}",
                                juju.unit_name(),
                                app.target
                            ),
                            grant: Vec::new(),
                            ..app
                        };
                        peers.write_app(&failed.to_bag());
                        return Ok(());
                    }
                }
            }
            LeaderStep::Write(next) => {
                info!(
                    "upgrade generation {}: phase {}, grant [{}]",
                    next.gen,
                    next.phase,
                    next.grant.join(", ")
                );
                peers.write_app(&next.to_bag());
                if !peers.others.is_empty() && others_must_react(&app, &next) {
                    return Ok(());
                }
            }
            LeaderStep::Finish(done) => {
                info!(
                    "upgrade generation {} finished: {} (release v{})",
                    done.gen, done.phase, done.release
                );
                // Recording the installed version and pruning follow from the idle
                // state in every hook (`release::tidy_volume`), so they are retried.
                peers.write_app(&done.to_bag());
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Whether the step from `app` to `next` needs other units to react in their own hooks.
/// Downloading needs none: the leader downloads in the same hook (a wait for the volume
/// leaves the phase for the units to see and acknowledge, which wakes the leader again).
fn others_must_react(app: &AppUpgrade, next: &AppUpgrade) -> bool {
    !(app.phase == Phase::Prepare && next.phase == Phase::Downloading)
}

/// The leader's own clock for the prepare phase (kept on local disk, per generation).
fn prepare_timed_out(host: &Host, app: &AppUpgrade) -> bool {
    app.phase == Phase::Prepare
        && held_longer_than(
            host,
            "prepare-started",
            &app.gen.to_string(),
            PREPARE_TIMEOUT,
        )
}

/// The leader's own clock for the current grant: its holders had longer than a worker
/// may take to land (`drain-timeout`) plus a margin, so they are lost or never started.
fn grant_timed_out(host: &Host, app: &AppUpgrade, config: &CharmConfig) -> bool {
    if app.phase != Phase::Complete || app.grant.is_empty() {
        return false;
    }
    let key = format!("{}:{}", app.gen, app.grant.join(","));
    let limit = config.drain_timeout + GRANT_MARGIN;
    held_longer_than(host, "grant-started", &key, limit)
}

/// Whether `key` was first seen by this unit's clock more than `limit` ago. The first
/// sighting is recorded in `<LOCAL_DIR>/<file>`; a new key restarts the clock. Only the
/// leader's own clock is used (nothing compares timestamps written on other machines).
fn held_longer_than(host: &Host, file: &str, key: &str, limit: Duration) -> bool {
    let path = host.paths.local(Path::new(release::LOCAL_DIR).join(file));
    let now = host.clock.unix_now();
    let started = std::fs::read_to_string(&path).ok().and_then(|s| {
        let (k, t) = s.trim().rsplit_once(' ')?;
        (k == key).then(|| t.parse::<u64>().ok()).flatten()
    });
    match started {
        Some(t) => now.saturating_sub(t) > limit.as_secs(),
        None => {
            let line = format!("{key} {now}\n");
            if let Err(e) = crate::fsutil::write_if_changed(&path, line.as_bytes(), 0o644, None) {
                warn!(
                    "cannot record when {key} started in {}: {e}",
                    path.display()
                );
            }
            false
        }
    }
}
