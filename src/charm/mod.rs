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
use crate::juju::event::{RelationHook, StorageHook};
use crate::juju::{Event, FailureKind, Juju, Status, ToolError};
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
    #[error("forgetting a member's databag failed")]
    PeerCache(#[from] peers::cache::CacheError),
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
    // What Juju's agent forgets of the members' databags when it starts this hook.
    peers::cache::invalidate(juju, host)?;
    let unread = peer_change(juju);
    // Anything but update-status (and a change of a peer's databag this unit does not
    // read) may change what the unit should be: settled no more.
    if !matches!(event, Event::Unknown(_) | Event::UpdateStatus) && unread.is_none() {
        settled::forget(host)?;
    }
    if let Some(remote) = unread {
        return failure::settle(juju, reconcile_unless_unread(juju, host, remote));
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

/// Whose databag a `peers-relation-changed` is for.
#[derive(Debug, Clone, Copy)]
enum PeerChange<'a> {
    Unit(&'a str),
    App,
}

/// The databag a `peers-relation-changed` is for: the change may be one that gives this
/// unit nothing to do ([`settled::unread_change`], [`settled::app_change_only_progress`]).
fn peer_change(juju: &Juju) -> Option<PeerChange<'_>> {
    let ctx = juju.context();
    match (&ctx.event, &ctx.relation) {
        (
            Event::Relation {
                endpoint,
                kind: RelationHook::Changed,
            },
            Some(rel),
        ) if endpoint == peers::ENDPOINT => match rel.remote_unit.as_deref() {
            Some(u) if u.contains('/') => Some(PeerChange::Unit(u)),
            _ => Some(PeerChange::App),
        },
        _ => None,
    }
}

/// A peer's or the app's databag changed: nothing to do (but show the upgrade's
/// progress) when the change does not concern this unit and it is as its last full
/// reconcile left it; otherwise a full reconcile.
fn reconcile_unless_unread(
    juju: &Juju,
    host: &Host,
    change: PeerChange<'_>,
) -> Result<(), CharmError> {
    let nothing = match change {
        PeerChange::Unit(remote) => settled::unread_change(juju, host, remote)?,
        PeerChange::App => settled::app_change_only_progress(juju, host)?,
    };
    if nothing {
        debug!("the change of {change:?}'s databag gives this unit nothing to do");
        return Ok(());
    }
    let kept = settled::take(host)?;
    reconcile_from(juju, host, kept)
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
///
/// Stop runs after this unit's relation-departed hooks, while every other web drops this
/// worker's key in its own: a worker registered now keeps its connection and retires,
/// one that is not cannot register any more, so it is stopped at once, not waited for.
fn teardown(juju: &Juju, host: &Host) -> Result<(), CharmError> {
    let ready = juju
        .config()
        .ok()
        .and_then(|c| CharmConfig::from_map(&c).ok())
        .map(|c| crate::worker::ReadyWait::from_config(&c))
        .unwrap_or_default();
    let ready = crate::worker::ReadyWait {
        timeout: std::time::Duration::ZERO,
        ..ready
    };
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
    reconcile_from(juju, host, None)
}

/// [`reconcile`], with the settled record the hook found (`kept`), whose account of the
/// leader's roles spares running them again when nothing they use changed.
fn reconcile_from(
    juju: &Juju,
    host: &Host,
    kept: Option<settled::Settled>,
) -> Result<(), CharmError> {
    let config = match CharmConfig::from_map(&juju.config()?) {
        Ok(c) => c,
        Err(errs) => return block_on_config(juju, &errs),
    };
    let mut reports = Reports::default();
    let leader = juju.is_leader()?;
    let mut peers = read_peers(juju, host, &config, leader)?;
    if leader {
        leader_duties(juju, &config, &mut peers)?;
    }
    let me = juju.unit_name().to_string();
    let roles = roles_for(config.mode, &me, peers.app_value(peers::WEB_UNIT));
    let mut part = VolumePart::default();
    let vol = release::open_volume(juju, &config, &mut reports)?;
    if let Some(vol) = &vol {
        let unit = UnitRun {
            juju,
            host,
            config: &config,
            vol,
            leader,
        };
        part = unit.on_volume(&mut peers, roles, kept.as_ref(), &mut reports)?;
    } else if leader {
        leader_setup(juju, &mut peers)?;
    }
    if !part.roles_skipped {
        observe::publish(juju, &config, leader, roles.unwrap_or_default())?;
        if let Some(roles) = roles {
            certificates::withdraw_unless_web(juju, host, roles)?;
        }
    }
    observe::upgrade_textfile(juju, host, &upgrade::AppUpgrade::from_bag(&peers.app))?;
    // Changes Juju has yet to commit, besides the app databag the leader decides anew
    // in every hook.
    let uncommitted = juju.writes() > 0 || peers.me_write_pending();
    let app_written = peers.app_write_pending();
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
        part,
        uncommitted,
        app_written,
    };
    if let Some(vol) = &vol {
        if let Some(rec) = ending.settled(juju, host, vol)? {
            settled::record(host, &rec);
        }
    }
    Ok(())
}

/// What the part of a reconcile on the volume left, as far as settling goes.
#[derive(Debug, Default)]
struct VolumePart {
    /// Whether the volume is tidy, when this unit tidies it.
    tidied: Option<bool>,
    /// Whether every report but the upgrade's progress was active.
    all_active: bool,
    /// What the roles (and the unit's own upgrade part) reported, when all active.
    roles_active: Option<(Vec<String>, Vec<String>)>,
    /// The leader did not run its roles again (`settled::roles_unchanged`).
    roles_skipped: bool,
}

/// How a full reconcile ended, as far as settling goes.
struct Ending<'a> {
    leader: bool,
    config: &'a CharmConfig,
    peers: &'a Peers,
    roles: Option<Roles>,
    unit_status: &'a Status,
    app_status: Option<&'a Status>,
    part: VolumePart,
    /// The hook made changes Juju has yet to commit (the app databag aside).
    uncommitted: bool,
    /// The hook wrote the app databag.
    app_written: bool,
}

impl Ending<'_> {
    /// The settled record when the unit has nothing pending: active (and the application
    /// too, on the leader), the upgrade idle without error, the volume tidy, the unit on
    /// the application's release and every role's service running. On a non-leader
    /// during an upgrade, a quiet record (`idle: false`) when the unit only shows the
    /// upgrade's progress and has no step of its own to take (no acknowledgement, no
    /// granted switch). On the leader, a record of its roles when they reported only
    /// active statuses. None from a hook whose changes Juju has yet to commit: a failed
    /// commit is retried as the same hook, which must not skip what was lost.
    fn settled(
        &self,
        juju: &Juju,
        host: &Host,
        vol: &Volume,
    ) -> Result<Option<settled::Settled>, CharmError> {
        use crate::juju::StatusKind::Active;
        let app = upgrade::AppUpgrade::from_bag(&self.peers.app);
        let whole = !self.uncommitted && !self.app_written;
        let idle = whole
            && self.unit_status.kind == Active
            && self.app_status.is_none_or(|s| s.kind == Active)
            && app.phase == upgrade::Phase::Idle
            && app.error.is_empty()
            && self.part.tidied != Some(false);
        let pointer = release::pointer_version(host);
        let quiet = !self.leader
            && whole
            && self.part.all_active
            && self.waits_for_others(juju.unit_name(), &app, &pointer);
        let leader_roles = (self.leader && !self.uncommitted)
            .then(|| self.part.roles_active.clone())
            .flatten();
        let (Some(roles), Some(release)) = (self.roles, pointer) else {
            return Ok(None);
        };
        let on_release = match idle {
            true => release == app.release,
            false => self.peers.me.get(upgrade::K_VERSION) == Some(&release),
        };
        if !(idle || quiet || leader_roles.is_some()) || !on_release || roles == Roles::NONE {
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
        let Some(recheck_at) = self.recheck_at(juju, host, vol) else {
            return Ok(None);
        };
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
            tidier: self.part.tidied.is_some(),
            services,
            recheck_at,
            idle,
            read_units: self.peers.others.keys().cloned().collect(),
            app: settled::app_digest(&self.peers.app, juju.unit_name()),
            whole: idle || quiet,
            roles: leader_roles.map(|(active, notes)| settled::RolesRecord {
                active,
                notes,
                peers: settled::roles_digest(self.peers),
            }),
        }))
    }

    /// When the leader's next latest-release lookup or the renewal of web's certificate
    /// is due (`Some(None)`: neither); `None` when it cannot be told.
    fn recheck_at(&self, juju: &Juju, host: &Host, vol: &Volume) -> Option<Option<u64>> {
        let latest_due = match (&self.config.version, self.leader) {
            (None, true) => {
                let state = vol.read_unit_state(juju.unit_name()).ok().flatten();
                let cache = state.and_then(|s| s.latest)?;
                Some(cache.checked_at + crate::installer::LATEST_CACHE_TTL.as_secs())
            }
            _ => None,
        };
        let certificate_due = settled::certificate_due(host).ok()?;
        Some(latest_due.into_iter().chain(certificate_due).min())
    }

    /// During an upgrade: the unit has no step of its own left (the phase asks it for
    /// no acknowledgement and grants it no switch it has not reported), so only the
    /// leader's next step can give it one.
    fn waits_for_others(
        &self,
        me: &str,
        app: &upgrade::AppUpgrade,
        pointer: &Option<String>,
    ) -> bool {
        app.phase.running() && !own_step(app, me, self.roles, self.peers, pointer.as_deref())
    }
}

/// Whether this unit has a step of its own in the upgrade: an acknowledgement to
/// write, a granted switch it has not reported, a refusal.
fn own_step(
    app: &upgrade::AppUpgrade,
    me: &str,
    roles: Option<Roles>,
    peers: &Peers,
    pointer: Option<&str>,
) -> bool {
    let me = upgrade::UnitReport::from_bag(me, roles.is_some_and(|r| r.web), &peers.me);
    let step = upgrade::unit_step(&upgrade::UnitView {
        app,
        me: &me,
        running: pointer,
        volume_ok: true,
    });
    step.ack.is_some() || step.switch_to.is_some() || step.refuse.is_some()
}

/// The peer relation as this unit needs it (docs/scale.md#who-reads-what): the leader
/// reads every member's databag; a non-leader reads the app's, its own, and only the
/// members' it uses: the web unit's (a worker in `auto` mode needs its TSA), every one
/// when it runs web for them (their worker keys: the web unit in `auto` mode, every unit
/// in `mode=all`), and in shared mode those whose state is not on this unit's volume yet
/// (proving sharing needs their nonce).
fn read_peers(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    leader: bool,
) -> Result<Peers, CharmError> {
    if leader {
        return Ok(Peers::read_kept(juju, host)?);
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
    /// The reconcile's part on a usable volume: proving sharing, the leader's upgrade
    /// steps, this unit's upgrade part and roles (unless the leader's are as `kept`
    /// says), the volume's housekeeping and the upgrade's progress.
    fn on_volume(
        &self,
        peers: &mut Peers,
        roles: Option<Roles>,
        kept: Option<&settled::Settled>,
        reports: &mut Reports,
    ) -> Result<VolumePart, CharmError> {
        let (juju, host, config, vol, leader) =
            (self.juju, self.host, self.config, self.vol, self.leader);
        let me = juju.unit_name().to_string();
        let mut part = VolumePart::default();
        if config.shared_storage == SharedStorage::Shared {
            release::prove_sharing(vol, &me, peers, reports)?;
        }
        let mut skip = None;
        if leader {
            upgrading::leader(juju, host, config, vol, peers, reports)?;
            let app = upgrade::AppUpgrade::from_bag(&peers.app);
            let pointer = release::pointer_version(host);
            let step = own_step(&app, &me, roles, peers, pointer.as_deref());
            if let Some(rec) = kept {
                skip = settled::roles_unchanged(juju, host, rec, peers, step)?;
            }
        }
        let mark = reports.mark();
        match &skip {
            Some(r) => reports.replay(&r.active, &r.notes),
            None => {
                if leader {
                    leader_setup(juju, peers)?;
                }
                self.run(peers, roles, reports)?
            }
        }
        part.roles_active = reports.active_since(mark);
        part.roles_skipped = skip.is_some();
        if leader {
            release::publish_digests(host, vol, peers);
        }
        // One writer per volume: the leader for a shared one, every unit for its own.
        let shared = config.shared_storage == SharedStorage::Shared;
        if leader || !shared {
            let app = upgrade::AppUpgrade::from_bag(&peers.app);
            let pointer = release::pointer_version(host);
            part.tidied = Some(release::tidy_volume(
                vol,
                &app,
                shared,
                pointer.as_deref(),
                reports,
            ));
        }
        if leader {
            upgrading::publish_progress(juju, config, peers);
        }
        // Before the upgrade's progress, which a quiet unit shows while it waits.
        part.all_active = reports.all_active();
        upgrading::report_progress(juju, config, peers, leader, reports);
        Ok(part)
    }

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

/// What only the leader does first: choose the web unit.
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
    Ok(())
}

/// What only the leader does for the roles: create the admin password, ask PostgreSQL
/// for our database (with the roles: when they need not run again, neither need these).
fn leader_setup(juju: &Juju, peers: &mut Peers) -> Result<(), CharmError> {
    if peers.rel.is_none() {
        return Ok(());
    }
    // Read, not `secret-info-get`: web reads the same content later in the hook (cached).
    let have_secret = match peers.app_value(peers::ADMIN_SECRET) {
        Some(id) => match juju.secret_get(&SecretRef::Id(id.to_string()), false) {
            Ok(_) => true,
            Err(e) if e.is(FailureKind::NotFound) => false,
            Err(e) => return Err(e.into()),
        },
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
