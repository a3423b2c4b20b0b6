//! Routing: one entry point per hook or action, each ending in an idempotent reconcile.
//!
//! Owns: which module handles which event, the order of the reconcile steps, and how
//! errors become statuses or exit codes. Everything reaches Juju through `Juju` and the
//! machine through `Host` (`crate::host`), so a whole hook runs in-process in tests
//! (`tests/`: one unit's view, hook by hook). Invariants: every hook runs the same
//! `reconcile` (Juju coalesces and retries hooks, so no handler may assume it runs once
//! or in order); unknown hooks and actions succeed with a debug log; bad input
//! (config, relation data) is a status, never a failed hook; every status text comes
//! from or is listed in `status::messages`. Hazards: only transient errors (tool
//! failures, I/O, network, systemd) may fail a hook, because Juju retries failed hooks
//! and holds the unit's other hooks meanwhile.

pub mod actions;
pub mod certificates;
pub mod failure;
pub mod observe;
pub mod peers;
pub mod release;
pub mod settled;
pub mod status;
pub mod upgrading;
pub mod workload;

use tracing::{debug, info, warn};

use crate::config::{CharmConfig, ConfigError, Mode, SharedStorage};
use crate::host::Host;
use crate::juju::client::{SecretOwner, SecretRef};
use crate::juju::event::StorageHook;
use crate::juju::{Event, Juju, Status, ToolError};
use crate::roles::{choose_web_unit, roles_for, Roles};
use crate::service::ServiceError;
use crate::storage_coordinator::Volume;
use crate::upgrade;
use crate::web::WebError;
use crate::worker::WorkerError;
use peers::{bag, Peers};
use status::{messages as msg, Reports};

/// Errors a hook can end with.
#[derive(Debug, thiserror::Error)]
pub enum CharmError {
    #[error("talking to Juju failed")]
    Tool(#[from] ToolError),
    #[error("managing a service failed")]
    Service(#[from] ServiceError),
    #[error("setting up the web role failed")]
    Web(#[from] WebError),
    #[error("setting up the worker role failed")]
    Worker(#[from] WorkerError),
    #[error("{0}")]
    Workload(String),
    #[error("installing the release failed")]
    Release(#[from] release::ReleaseError),
    #[error("forgetting the settled state failed")]
    Settled(#[from] settled::SettledError),
}

/// Runs the handler for the hook or action in `juju`'s context, acting on `host`.
pub fn dispatch(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let event = juju.context().event.clone();
    juju.record_statuses_in(host.paths.local(release::LOCAL_DIR).join("told"));
    if matches!(
        event,
        Event::Install
            | Event::Start
            | Event::Stop
            | Event::Remove
            | Event::LeaderElected
            | Event::UpgradeCharm
    ) {
        juju.forget_told_statuses();
    }
    // Anything but update-status may change what the unit should be: settled no more.
    if !matches!(event, Event::Unknown(_) | Event::UpdateStatus) {
        settled::forget(host)?;
    }
    match &event {
        Event::Unknown(name) => {
            debug!("ignoring hook {name}: nothing to do");
            Ok(())
        }
        Event::Action(name) => run_action(juju, host, name),
        Event::Stop | Event::Remove => teardown(juju, host),
        Event::Storage {
            kind: StorageHook::Detaching,
            ..
        } => {
            info!("storage detaching: services keep running until the unit stops");
            Ok(())
        }
        Event::UpdateStatus => failure::settle(juju, reconcile_unless_settled(juju, host)),
        _ => failure::settle(juju, reconcile(juju, host)),
    }
}

/// `update-status`: nothing to do when the unit is as its last full reconcile left it
/// (`settled`); otherwise a full reconcile.
fn reconcile_unless_settled(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    if settled::holds(juju, host)? {
        debug!("settled: nothing to do");
        return Ok(());
    }
    settled::forget(host)?;
    reconcile(juju, host)
}

fn run_action(juju: &Juju, host: &Host, name: &str) -> Result<(), CharmError> {
    match name {
        "get-admin-password" => actions::get_admin_password(juju),
        "check-status" => actions::check_status(juju, host),
        "restart-services" => actions::restart_services(juju, host),
        "upgrade" => upgrading::action(juju),
        other => {
            debug!("ignoring unknown action {other}");
            Ok(())
        }
    }
}

/// Unit removal: retire the worker (so Concourse forgets it) and stop web.
fn teardown(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let ready = juju
        .config()
        .ok()
        .and_then(|c| CharmConfig::from_map(&c).ok())
        .map(|c| crate::worker::ReadyWait::from_config(&c))
        .unwrap_or_default();
    juju.status_set(&msg::RETIRING.status(), false)?;
    if let Err(e) = crate::worker::remove(host, ready) {
        warn!("retiring the worker: {}", crate::error_chain(&e));
    }
    crate::web::remove(host)?;
    // Forget this unit on the volume so its release can be pruned (best effort: the
    // storage may already be detaching).
    if let Ok(Some(root)) = release::volume_root(juju) {
        let vol = crate::storage_coordinator::Volume::new(root);
        if let Err(e) = vol.remove_unit_state(juju.unit_name()) {
            warn!(
                "removing this unit's state from the volume: {}",
                crate::error_chain(&e)
            );
        }
    }
    Ok(())
}

/// Converges the unit towards its configuration. Safe to run from any hook, any number of times.
fn reconcile(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => return block_on_config(juju, &errs),
    };
    let mut reports = Reports::default();
    let leader = juju.is_leader()?;
    let mut peers = read_peers(juju, &config, leader)?;
    if leader {
        leader_duties(juju, &config, &mut peers)?;
    }
    let me = juju.unit_name().to_string();
    let roles = roles_for(config.mode, &me, peers.app_value(peers::WEB_UNIT));
    let mut tidied = None;
    let vol = release::open_volume(juju, &config, &mut reports)?;
    if let Some(vol) = &vol {
        if config.shared_storage == SharedStorage::Shared {
            release::prove_sharing(vol, &me, &mut peers, &mut reports)?;
        }
        let unit = UnitRun {
            juju,
            host,
            config: &config,
            vol,
            leader,
        };
        if leader {
            upgrading::leader(juju, host, &config, vol, &mut peers, &mut reports)?;
        }
        unit.run(&mut peers, roles, &mut reports)?;
        if leader {
            release::publish_digests(host, vol, &mut peers);
        }
        // One writer per volume: the leader for a shared one, every unit for its own.
        let shared = config.shared_storage == SharedStorage::Shared;
        if leader || !shared {
            let app = upgrade::AppUpgrade::from_bag(&peers.app);
            let pointer = release::pointer_version(host);
            tidied = Some(release::tidy_volume(
                vol,
                &app,
                shared,
                pointer.as_deref(),
                &mut reports,
            ));
        }
        if leader {
            upgrading::publish_progress(juju, &config, &mut peers);
        }
        upgrading::report_progress(juju, &config, &peers, leader, &mut reports);
    }
    observe::publish(juju, &config, leader, roles.unwrap_or_default())?;
    observe::upgrade_textfile(juju, host, &upgrade::AppUpgrade::from_bag(&peers.app))?;
    if let Some(roles) = roles {
        certificates::withdraw_unless_web(juju, host, roles)?;
    }
    peers.flush(juju)?;
    let unit_status = reports.pick();
    juju.status_set_if_changed(&unit_status, false)?;
    let mut app_status = None;
    if leader && peers.rel.is_some() {
        let app = upgrade::AppUpgrade::from_bag(&peers.app);
        let units = upgrading::reports_of(juju, &config, &peers);
        let status =
            upgrading::app_status(&app, &units, config.version.as_deref(), juju.app_name());
        juju.status_set_if_changed(&status, true)?;
        app_status = Some(status);
    }
    let ending = Ending {
        leader,
        config: &config,
        peers: &peers,
        roles,
        unit_status: &unit_status,
        app_status: app_status.as_ref(),
        tidied,
    };
    if let Some(vol) = &vol {
        if let Some(rec) = ending.settled(juju, host, vol)? {
            settled::record(host, &rec);
        }
    }
    Ok(())
}

/// How a full reconcile ended, as far as settling goes.
struct Ending<'a> {
    leader: bool,
    config: &'a CharmConfig,
    peers: &'a Peers,
    roles: Option<Roles>,
    unit_status: &'a Status,
    app_status: Option<&'a Status>,
    /// Whether the volume is tidy, when this unit tidies it.
    tidied: Option<bool>,
}

impl Ending<'_> {
    /// The settled record when the unit has nothing pending: active (and the application
    /// too, on the leader), the upgrade idle without error, the volume tidy, the unit on
    /// the application's release and every role's service running. `None` otherwise.
    fn settled(
        &self,
        juju: &Juju,
        host: &Host,
        vol: &Volume,
    ) -> Result<Option<settled::Settled>, CharmError> {
        use crate::juju::StatusKind::Active;
        let app = upgrade::AppUpgrade::from_bag(&self.peers.app);
        let quiet = self.unit_status.kind == Active
            && self.app_status.is_none_or(|s| s.kind == Active)
            && app.phase == upgrade::Phase::Idle
            && app.error.is_empty()
            && self.tidied != Some(false);
        let pointer = release::pointer_version(host);
        let (Some(roles), Some(release), true) = (self.roles, pointer, quiet) else {
            return Ok(None);
        };
        if release != app.release || roles == Roles::NONE {
            return Ok(None);
        }
        let services: Vec<String> = [
            (roles.web, crate::web::SERVICE),
            (roles.worker, crate::worker::SERVICE),
        ]
        .into_iter()
        .filter(|(has, _)| *has)
        .map(|(_, s)| s.to_string())
        .collect();
        if !services.iter().all(|s| host.services.is_active(s)) {
            return Ok(None);
        }
        let latest_due = match (&self.config.version, self.leader) {
            (None, true) => {
                let state = vol.read_unit_state(juju.unit_name()).ok().flatten();
                let Some(cache) = state.and_then(|s| s.latest) else {
                    return Ok(None);
                };
                Some(cache.checked_at + crate::installer::LATEST_CACHE_TTL.as_secs())
            }
            _ => None,
        };
        let Ok(certificate_due) = settled::certificate_due(host) else {
            return Ok(None);
        };
        let recheck_at = latest_due.into_iter().chain(certificate_due).min();
        let key_dirs: Vec<std::path::PathBuf> = [
            (roles.web, crate::web::keys_dir()),
            (roles.worker, crate::worker::keys_dir()),
        ]
        .into_iter()
        .filter_map(|(has, d)| has.then_some(d))
        .collect();
        Ok(Some(settled::Settled {
            keys: settled::key_digests(host, &key_dirs),
            key_dirs,
            inputs: settled::inputs_hash(&juju.config()?, self.leader)?,
            volume: vol.root().to_path_buf(),
            release,
            tidier: self.tidied.is_some(),
            services,
            recheck_at,
        }))
    }
}

/// The peer relation as this unit needs it (docs/scale.md#who-reads-what): the leader
/// reads every member's databag; a non-leader reads the app's, its own, and only the
/// members' it uses: the web unit's (a worker in `auto` mode needs its TSA), every one
/// when it runs web for them (their worker keys: the web unit in `auto` mode, every unit
/// in `mode=all`), and in shared mode those whose state is not on this unit's volume yet
/// (proving sharing needs their nonce).
fn read_peers(juju: &Juju, config: &CharmConfig, leader: bool) -> Result<Peers, CharmError> {
    if leader {
        return Ok(Peers::read(juju)?);
    }
    let mut peers = Peers::read_members(juju, false)?;
    let me = juju.unit_name();
    let web = peers.app_value(peers::WEB_UNIT).map(str::to_string);
    let all = match config.mode {
        Mode::All => true,
        Mode::Auto => web.as_deref() == Some(me),
        Mode::Web | Mode::Worker => false,
    };
    let mut wanted: Vec<String> = if all {
        peers.names.clone()
    } else {
        web.into_iter().collect()
    };
    if config.shared_storage == SharedStorage::Shared {
        if let Some(root) = release::volume_root(juju)? {
            let vol = Volume::new(root);
            let proven =
                |u: &str| matches!(vol.read_unit_state(u), Ok(Some(s)) if s.nonce.is_some());
            wanted.extend(peers.names.iter().filter(|u| !proven(u)).cloned());
        }
    }
    peers.read_bags(juju, &wanted)?;
    Ok(peers)
}

/// This unit's part of a reconcile once its volume is usable.
struct UnitRun<'a> {
    juju: &'a Juju,
    host: &'a Host,
    config: &'a CharmConfig,
    vol: &'a Volume,
    leader: bool,
}

impl UnitRun<'_> {
    /// Runs the release the upgrade state says (switching when granted), the unit's roles
    /// on it, and verifies a switch (going back when it failed).
    fn run(
        &self,
        peers: &mut Peers,
        roles: Option<Roles>,
        reports: &mut Reports,
    ) -> Result<(), CharmError> {
        let (juju, host, config, vol) = (self.juju, self.host, self.config, self.vol);
        let outcome = upgrading::unit(juju, host, config, vol, peers, roles, reports)?;
        let (roles, mut r) = match (roles, outcome.running) {
            (None, _) => {
                reports.push(msg::WAITING_FOR_WEB_UNIT.status());
                return Ok(());
            }
            (Some(Roles::NONE), _) => {
                reports.push(msg::NO_ROLE.status());
                return Ok(());
            }
            (Some(_), None) => return Ok(()),
            (Some(roles), Some(r)) => (roles, r),
        };
        let role = RoleRun {
            juju,
            host,
            config,
            roles,
        };
        role.apply(peers, &r, reports)?;
        let switched = outcome.switched.is_some();
        if let Some(switch) = outcome.switched {
            let back = upgrading::verify_switch(juju, host, config, vol, peers, roles, &r, switch)?;
            if let Some(back) = back {
                // back to the previous release: restart the roles on it
                role.apply(peers, &back, &mut Reports::default())?;
                r = back;
            }
        }
        // Before the leader's steps: its own switch is what lets it go on in this hook.
        peers.write_me(&bag([(upgrade::K_VERSION, r.version.as_str())]));
        if switched && self.leader {
            upgrading::leader_steps(juju, host, config, vol, peers, reports)?;
        }
        set_app_version(juju, self.host, &r.version)
    }
}

/// Tells Juju the version this unit runs when the unit's record of what Juju was last
/// told differs (the first hook, a switch, a hook that switched and died before telling
/// it). The version is not transactional: Juju keeps it from the call on.
fn set_app_version(juju: &Juju, host: &Host, version: &str) -> Result<(), CharmError> {
    let record = app_version_record(host);
    let told = told_version(host);
    if told.as_deref() == Some(version) {
        return Ok(());
    }
    juju.application_version_set(version)?;
    if let Err(e) = crate::fsutil::write_if_changed(&record, version.as_bytes(), 0o644, None) {
        warn!(
            "cannot record the application version in {}: {e}",
            record.display()
        );
    }
    Ok(())
}

fn app_version_record(host: &Host) -> std::path::PathBuf {
    host.paths
        .local(std::path::Path::new(release::LOCAL_DIR).join("application-version"))
}

/// The workload version this unit last told Juju, per its record.
fn told_version(host: &Host) -> Option<String> {
    std::fs::read_to_string(app_version_record(host)).ok()
}

/// Applying this unit's roles in one hook.
struct RoleRun<'a> {
    juju: &'a Juju,
    host: &'a Host,
    config: &'a CharmConfig,
    roles: Roles,
}

impl RoleRun<'_> {
    /// Stops the roles the unit lost, then runs its roles on release `r`.
    fn apply(
        &self,
        peers: &mut Peers,
        r: &release::RunningRelease,
        reports: &mut Reports,
    ) -> Result<(), CharmError> {
        let (juju, host, config) = (self.juju, self.host, self.config);
        let running = workload::Running {
            version: &r.version,
        };
        workload::drop_other_roles(juju, host, config, peers, self.roles)?;
        if self.roles.web {
            workload::web_role(juju, host, config, peers, &running, reports)?;
        }
        if self.roles.worker {
            workload::worker_role(juju, host, config, peers, &running, reports)?;
        }
        Ok(())
    }
}

/// What only the leader does: choose the web unit, create the admin password, ask
/// PostgreSQL for our database.
fn leader_duties(juju: &Juju, config: &CharmConfig, peers: &mut Peers) -> Result<(), CharmError> {
    if peers.rel.is_none() {
        return Ok(());
    }
    let me = juju.unit_name().to_string();
    if config.mode == Mode::Auto {
        let chosen = choose_web_unit(peers.app_value(peers::WEB_UNIT), &peers.members(&me), &me);
        if peers.app_value(peers::WEB_UNIT) != Some(chosen.as_str()) {
            info!("assigning the web role to {chosen}");
            peers.write_app(&bag([(peers::WEB_UNIT, chosen.as_str())]));
        }
    }
    let have_secret = match peers.app_value(peers::ADMIN_SECRET) {
        Some(id) => juju.secret_info(&SecretRef::Id(id.to_string()))?.is_some(),
        None => false,
    };
    if !have_secret {
        let password = random_password(24)?;
        let content = bag([("password", password.as_str())]);
        let id = juju.secret_add(
            &content,
            Some("admin-password"),
            SecretOwner::Application,
            Some("Concourse local admin password"),
        )?;
        info!("created the admin password secret {id}");
        peers.write_app(&bag([(peers::ADMIN_SECRET, id.as_str())]));
    }
    for rel in juju.relation_ids(workload::DB_ENDPOINT)? {
        juju.relation_set(&rel, true, &crate::postgres::request())?;
    }
    Ok(())
}

/// A random password from the OS CSPRNG (letters and digits, no shell or env specials).
pub fn random_password(len: usize) -> Result<String, CharmError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)
            .map_err(|e| CharmError::Workload(format!("no randomness: {e}")))?;
        for b in buf {
            // rejection sampling keeps the distribution uniform
            let limit = 256 - (256 % ALPHABET.len());
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests;
