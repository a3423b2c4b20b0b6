//! The upgrade state machine's effects (DESIGN §5): choosing versions, the leader's steps,
//! a unit's switch, and the `upgrade` action. The decisions are in `crate::upgrade`.
//!
//! Invariants: every cross-unit step is its own hook (the leader writes and exits when other
//! units must react; with no peers it takes the steps back to back); a unit switches only
//! while it holds a grant for the current generation, lands its worker first, and goes back
//! to the previous release when the new one does not start; the leader's clock alone times
//! the prepare phase. Hazards: landing a worker can take up to `drain-timeout`, inside the
//! granted unit's hook (a local wait, never a wait for another unit).

use std::path::Path;
use std::time::Duration;

use tracing::{info, warn};

use super::peers::{self, Peers};
use super::release::{self, Installed, RunningRelease};
use super::status::{messages as msg, Reports};
use super::CharmError;
use crate::config::CharmConfig;
use crate::host::Host;
use crate::installer::{self, VerifyMode};
use crate::juju::{Event, Juju, Status};
use crate::roles::{roles_for, Roles};
use crate::storage_coordinator::{Backoff, Volume};
use crate::upgrade::{
    self, AppUpgrade, ConfigRequest, LeaderStep, LeaderView, OptionNote, Phase, UnitReport,
    UnitState, UnitView,
};
use crate::{web, worker};

/// How long units have to acknowledge `prepare` before the leader goes on without them.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);

/// Every member as the upgrade sees it (own bag includes this hook's writes).
pub fn reports_of(juju: &Juju, config: &CharmConfig, peers: &Peers) -> Vec<UnitReport> {
    let me = juju.unit_name();
    let web_unit = peers.app_value(peers::WEB_UNIT);
    peers
        .members(me)
        .into_iter()
        .filter_map(|u| {
            let bag = peers.bag(me, &u)?;
            let web = roles_for(config.mode, &u, web_unit)
                .map(|r| r.web)
                .unwrap_or(false);
            Some(UnitReport::from_bag(&u, web, bag))
        })
        .collect()
}

/// The version the application should run, per config (pinned or the latest release).
fn desired_version(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    app: &AppUpgrade,
    reports: &mut Reports,
) -> Option<String> {
    if let Some(v) = &config.version {
        return Some(v.clone());
    }
    let me = juju.unit_name();
    let state = vol.read_unit_state(me).ok().flatten().unwrap_or_default();
    let running = (!app.release.is_empty()).then_some(app.release.as_str());
    let http = release::install_options(juju).http;
    let lookup = || installer::latest_version(&config.release_api_url, &config.github_token, &http);
    match installer::resolve_latest(
        state.latest.as_ref(),
        host.clock.unix_now(),
        installer::LATEST_CACHE_TTL,
        running,
        lookup,
    ) {
        Ok(r) => {
            if let Some(e) = &r.lookup_error {
                warn!(
                    "latest release lookup failed, using the cached v{}: {e}",
                    r.version
                );
            }
            if let Some(newer_upstream) = &r.held_back {
                info!(
                    "upstream latest is v{newer_upstream}, older than v{}: not downgrading",
                    r.version
                );
            }
            if !r.from_cache {
                let cache = r.cache.clone();
                if let Err(e) = vol.update_unit_state(me, |s| s.latest = Some(cache)) {
                    warn!("cannot cache the latest version: {e}");
                }
            }
            Some(r.version)
        }
        Err(e) => {
            reports.blocked(format!(
                "{}; set version= to pin a release",
                e.status_message()
            ));
            None
        }
    }
}

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
    match upgrade::config_request(&app, &wanted, config.version.is_none()) {
        ConfigRequest::Write(next) => {
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
            // A failed upgrade to the same request is tried again only from update-status
            // or a config change: restarting it from the relation-changed that its own
            // failure caused is a hot loop (each round downloads the tarball again).
            let retry_now = matches!(
                juju.context().event,
                Event::UpdateStatus | Event::ConfigChanged | Event::UpgradeCharm
            );
            if let Some(next) = upgrade::retry_failed(&app).filter(|_| retry_now) {
                info!(
                    "retrying the failed upgrade to v{} (generation {})",
                    next.target, next.gen
                );
                peers.write_app(&next.to_bag());
            }
        }
    }
    catch_up(juju, config, peers);
    leader_steps(juju, host, config, vol, peers, reports)
}

/// While idle, a unit on another version than the application's gets a catch-up
/// generation (it switches only when granted).
fn catch_up(juju: &Juju, config: &CharmConfig, peers: &mut Peers) {
    let app = AppUpgrade::from_bag(&peers.app);
    if app.phase != Phase::Idle || app.release.is_empty() {
        return;
    }
    let units = reports_of(juju, config, peers);
    let Some(odd) = units
        .iter()
        .find(|u| u.version.as_deref().is_some_and(|v| v != app.release))
    else {
        return;
    };
    let next = upgrade::catch_up(&app, odd.version.as_deref().unwrap_or_default());
    info!(
        "{} runs v{} instead of v{}: catch-up generation {}",
        odd.name,
        odd.version.as_deref().unwrap_or_default(),
        app.release,
        next.gen
    );
    peers.write_app(&next.to_bag());
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
        };
        match upgrade::leader_step(&view) {
            LeaderStep::Wait(why) => {
                if !why.is_empty() {
                    info!("upgrade: {why}");
                }
                return Ok(());
            }
            LeaderStep::Download => {
                match release::install(juju, host, config, vol, &app.target, false, reports)? {
                    Installed::Ready => continue,
                    Installed::NotReady if !reports.has_blocking() => {
                        // Waiting (another unit holds the volume): try again later.
                        return Ok(());
                    }
                    Installed::NotReady => {
                        // The status says why (blocked: bad checksum, 404, …): fail the
                        // upgrade, keeping the reason for the application status.
                        let failed = AppUpgrade {
                            phase: Phase::Failed,
                            error: format!(
                                "{}: cannot install v{}: {}",
                                juju.unit_name(),
                                app.target,
                                reports.pick().message
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
                if !peers.others.is_empty() {
                    return Ok(());
                }
            }
            LeaderStep::Finish(done) => {
                info!(
                    "upgrade generation {} finished: {} (release v{})",
                    done.gen, done.phase, done.release
                );
                peers.write_app(&done.to_bag());
                finish(vol, &done);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// After the last unit switched: record the installed version and prune old releases.
fn finish(vol: &Volume, done: &AppUpgrade) {
    let lock = match vol.try_lock_install() {
        Ok(Some(l)) => Some(l),
        Ok(None) => vol
            .lock_install(
                "(recording the installed version)",
                release::LOCK_WAIT,
                &Backoff::DEFAULT,
                |_| {},
            )
            .ok(),
        Err(e) => {
            warn!("cannot lock the volume to record v{}: {e}", done.release);
            None
        }
    };
    if let Some(lock) = lock {
        if let Err(e) = lock.set_installed_version(&done.release) {
            warn!("cannot record the installed version: {e}");
        }
    }
    let keep: Vec<&str> = [done.release.as_str(), done.from.as_str()]
        .into_iter()
        .filter(|v| !v.is_empty())
        .collect();
    match installer::prune_releases(vol, &keep, release::LOCK_WAIT, &Backoff::DEFAULT) {
        Ok(r) if !r.removed.is_empty() => info!("removed unused releases {}", r.removed.join(", ")),
        Ok(_) => {}
        Err(e) => warn!("pruning releases: {e}"),
    }
}

/// The leader's own clock for the prepare phase (kept on local disk, per generation).
fn prepare_timed_out(host: &Host, app: &AppUpgrade) -> bool {
    if app.phase != Phase::Prepare {
        return false;
    }
    let path = host
        .paths
        .local(Path::new(release::LOCAL_DIR).join("prepare-started"));
    let now = host.clock.unix_now();
    let key = format!("{}", app.gen);
    let started = std::fs::read_to_string(&path).ok().and_then(|s| {
        let (g, t) = s.trim().split_once(' ')?;
        (g == key).then(|| t.parse::<u64>().ok()).flatten()
    });
    match started {
        Some(t) => now.saturating_sub(t) > PREPARE_TIMEOUT.as_secs(),
        None => {
            let _ = crate::fsutil::write_if_changed(
                &path,
                format!("{key} {now}\n").as_bytes(),
                0o644,
                None,
            );
            false
        }
    }
}

/// Shows where a running upgrade is, as of the end of this hook's steps.
pub fn report_progress(juju: &Juju, config: &CharmConfig, peers: &Peers, reports: &mut Reports) {
    let app = AppUpgrade::from_bag(&peers.app);
    let progress = upgrade::progress(&app, &reports_of(juju, config, peers));
    if app.phase.running() && !progress.is_empty() {
        reports.maintenance(progress);
    }
}

/// What the unit runs now, and whether it switched in this hook (for verification).
pub struct UnitOutcome {
    pub running: Option<RunningRelease>,
    /// Set when this hook switched to a new version for an upgrade.
    pub switched: Option<Switch>,
}

/// A switch to another release made in this hook for upgrade generation `gen`.
#[derive(Debug, Clone)]
pub struct Switch {
    pub gen: u64,
    /// The version the unit ran before, if any.
    pub previous: Option<String>,
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

    // Which version to run now.
    let (version, switch_gen) = if let Some(target) = step.switch_to {
        (target, Some(app.gen))
    } else if let Some(r) = &running {
        // A unit on another version than the application's switches only when granted
        // (the leader starts a catch-up generation for it).
        (r.clone(), None)
    } else if !app.release.is_empty() {
        (app.release.clone(), None)
    } else if let Some(v) = &config.version {
        (v.clone(), None)
    } else {
        reports.push(msg::WAITING_FOR_VERSION.status());
        return Ok(UnitOutcome {
            running: None,
            switched: None,
        });
    };

    let set_installed = version == app.release;
    match release::install(juju, host, config, vol, &version, set_installed, reports)? {
        Installed::Ready => {}
        Installed::NotReady => {
            if let Some(gen) = switch_gen {
                report_failure(peers, gen, &format!("cannot install v{version} on {me}"));
            }
            let kept = match &running {
                Some(r) => Some(release::point_at(host, vol, &me, r)?),
                None => None,
            };
            return Ok(UnitOutcome {
                running: kept,
                switched: None,
            });
        }
    }
    let previous = running.clone();
    if switch_gen.is_some() && previous.as_deref() != Some(version.as_str()) {
        if let Err(e) = installer::verify_release(vol, &version, VerifyMode::Quick) {
            let gen = switch_gen.unwrap_or(app.gen);
            report_failure(
                peers,
                gen,
                &format!("v{version} does not verify on {me}: {}", e.status_message()),
            );
            let kept = match &previous {
                Some(r) => Some(release::point_at(host, vol, &me, r)?),
                None => None,
            };
            return Ok(UnitOutcome {
                running: kept,
                switched: None,
            });
        }
        if previous.is_some() && roles.is_some_and(|r| r.worker) {
            land_worker(juju, host, config, &version)?;
        }
    }
    let now_running = release::point_at(host, vol, &me, &version)?;
    let switched = match switch_gen {
        Some(gen) if now_running.changed => Some(Switch { gen, previous }),
        _ => None,
    };
    Ok(UnitOutcome {
        running: Some(now_running),
        switched,
    })
}

/// Lands the worker before switching (SIGUSR1; escalates after drain-timeout).
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
    match worker::drain(host, "SIGUSR1", "land", config.drain_timeout) {
        Ok(()) => info!("worker landed for the upgrade to v{version}"),
        Err(e) => warn!("{}; switching to v{version} anyway", crate::error_chain(&e)),
    }
    Ok(())
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

/// After the roles restarted on a switched release: check it really runs; go back if not.
pub fn verify_switch(
    juju: &Juju,
    host: &Host,
    vol: &Volume,
    peers: &mut Peers,
    roles: Roles,
    running: &RunningRelease,
    switch: Switch,
) -> Result<Option<RunningRelease>, CharmError> {
    let Switch { gen, previous } = switch;
    let me = juju.unit_name().to_string();
    let mut problems = Vec::new();
    if let Err(e) = installer::verify_release(vol, &running.version, VerifyMode::Quick) {
        problems.push(e.status_message());
    }
    // Give a crashing service a moment to show it.
    host.clock.sleep(Duration::from_millis(1500));
    // A web unit still waiting for its database has no service to check yet.
    for (has_role, service, env_file) in [
        (roles.web, web::SERVICE, web::ENV_FILE),
        (roles.worker, worker::SERVICE, worker::ENV_FILE),
    ] {
        let configured = host.paths.local(env_file).exists();
        if has_role && configured && !host.services.is_active(service) {
            problems.push(format!("{service} is not running"));
        }
    }
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
    let reason = format!(
        "v{} did not start on {me}: {}",
        running.version,
        problems.join("; ")
    );
    report_failure(peers, gen, &reason);
    match previous {
        Some(prev) => {
            warn!("going back to v{prev}");
            Ok(Some(release::point_at(host, vol, &me, &prev)?))
        }
        None => Ok(None),
    }
}

/// Status of the application (leader only) from the upgrade state and the `version`
/// option (`option`), which may differ from what runs after an action.
pub fn app_status(
    app: &AppUpgrade,
    units: &[UnitReport],
    option: Option<&str>,
    app_name: &str,
) -> Status {
    match app.phase {
        Phase::Idle => {
            let on = units
                .iter()
                .filter(|u| u.version.as_deref() == Some(app.release.as_str()))
                .count();
            let (release, n) = (&app.release, units.len());
            let (on, n) = (on.to_string(), n.to_string());
            match upgrade::option_note(app, option) {
                _ if release.is_empty() => msg::APP_CHOOSING_VERSION.status(),
                Some(note @ OptionNote::Downgrade { .. }) => Status::blocked(note.text(app_name)),
                Some(OptionNote::Stale { option, .. }) => msg::APP_READY_OPTION_STALE
                    .fill(&[release, &on, &n, &option, app_name, release]),
                None => msg::APP_READY.fill(&[release, &on, &n]),
            }
        }
        Phase::Failed => Status::blocked(format!(
            "{}; running v{}. Fix the cause, then run: juju run <leader> upgrade version={}",
            upgrade::progress(app, units),
            app.release,
            // after a rollback the failed target is `from`; a failure before any unit
            // switched leaves the target in `target`
            if app.target != app.release {
                &app.target
            } else {
                &app.from
            }
        )),
        _ => msg::APP_UPGRADING.fill(&[
            &upgrade::progress(app, units),
            &app.gen.to_string(),
            app.phase.as_str(),
        ]),
    }
}

/// The `upgrade` action: validate, then start the protocol (the leader's hooks do the rest).
/// It is a request like a change of the `version` option, and it may move the
/// application away from the option's value; an older version needs `allow-downgrade`.
pub fn action(juju: &Juju) -> Result<(), CharmError> {
    let params = juju.action_params()?;
    let Some(version) = params
        .get("version")
        .and_then(|v| v.as_str())
        .map(|v| v.trim().trim_start_matches('v').to_string())
    else {
        juju.action_fail(
            "missing parameter version: juju run concourse-ci/leader upgrade version=7.14.3",
        )?;
        return Ok(());
    };
    let allow_downgrade = params
        .get("allow-downgrade")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if !juju.is_leader()? {
        juju.action_fail(&format!(
            "run this on the leader: juju run {}/leader upgrade version={version}",
            juju.app_name()
        ))?;
        return Ok(());
    }
    if !crate::config::is_valid_version(&version) {
        juju.action_fail(&format!(
            "{version:?} is not a Concourse version (expected e.g. 7.14.3)"
        ))?;
        return Ok(());
    }
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => {
            juju.action_fail(&format!("fix the configuration first: {}", errs[0]))?;
            return Ok(());
        }
    };
    let mut peers = Peers::read(juju)?;
    if peers.rel.is_none() {
        juju.action_fail(
            "the peer relation is not up yet; wait for the units to settle and retry",
        )?;
        return Ok(());
    }
    let mut app = AppUpgrade::from_bag(&peers.app);
    if app.config_version.is_empty() {
        // Deployed by a charm that did not record it: the option as it is now is the
        // request already acted on.
        app.config_version = config.version.clone().unwrap_or_default();
    }
    if app.release == version {
        if let Some(settled) = upgrade::settle(&app) {
            peers.write_app(&settled.to_bag());
            peers.flush(juju)?;
            juju.action_log(&format!(
                "the application runs v{version}: the failed upgrade is settled"
            ))?;
            juju.action_set(&results(&[("settled", "true".into()), ("target", version)]))?;
            return Ok(());
        }
    }
    let next = match upgrade::start(&app, &version, allow_downgrade) {
        Ok(n) => n,
        Err(upgrade::StartError::SameRunning { gen, phase, .. }) => {
            let units = reports_of(juju, &config, &peers);
            let line = upgrade::progress(&app, &units);
            juju.action_log(&format!("already upgrading: {line}"))?;
            juju.action_set(&results(&[
                ("generation", gen.to_string()),
                ("phase", phase.to_string()),
                ("progress", line),
            ]))?;
            return Ok(());
        }
        Err(e @ upgrade::StartError::Downgrade { .. }) => {
            juju.action_fail(&format!(
                "{e}: juju run {}/leader upgrade version={version} allow-downgrade=true (see docs/upgrade.md: an older web may refuse a database a newer one migrated)",
                juju.app_name()
            ))?;
            return Ok(());
        }
        Err(e) => {
            juju.action_fail(&e.to_string())?;
            return Ok(());
        }
    };
    // Refuse versions the source does not have (a resource is checked when installed).
    if juju.resource_get(release::RESOURCE)?.is_none() {
        let url = config.release_url_for(&version);
        if let Err(why) = exists_at_source(juju, &url) {
            juju.action_fail(&format!("v{version} is not available: {why}"))?;
            return Ok(());
        }
    }
    peers.write_app(&next.to_bag());
    peers.flush(juju)?;
    juju.action_log(&format!(
        "upgrade generation {} to v{version} started (from v{}); units prepare, the leader downloads once, then web and workers switch one by one",
        next.gen, next.from
    ))?;
    let follow = format!("juju status {} --watch 5s", juju.app_name());
    let mut out = vec![
        ("generation", next.gen.to_string()),
        ("target", version.clone()),
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

fn results(pairs: &[(&str, String)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// HEAD of the release's `.sha1` (small): 2xx means the release exists.
fn exists_at_source(juju: &Juju, url: &str) -> Result<(), String> {
    let http = release::install_options(juju).http;
    let client = crate::installer::download::build_client(&http).map_err(|e| e.to_string())?;
    let sha1 = format!("{url}.sha1");
    match client.head(&sha1).send() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "{} answered HTTP {}; check the version and release-url",
            crate::installer::download::redact_url(&sha1),
            r.status().as_u16()
        )),
        Err(e) => Err(format!(
            "cannot reach {}: {e}",
            crate::installer::download::redact_url(&sha1)
        )),
    }
}
