//! The release this unit runs: the volume, installing a version, and the unit's pointer.
//!
//! Owns: the unit's pointer `/var/lib/concourse-ci/current` → `<volume>/releases/<v>/concourse`,
//! the volume checks and proof of sharing run in each hook, and turning installer events and
//! errors into statuses. Invariants: the pointer only ever targets a published release and
//! moves with one atomic rename; a failed install publishes nothing and leaves the running
//! release untouched; permanent problems are `blocked` statuses (exit 0), transient ones fail
//! the hook so Juju retries.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::peers::{self, Peers};
use super::status::{messages as msg, Reports};
use super::CharmError;
use crate::config::{CharmConfig, SharedStorage};
use crate::fsutil;
use crate::host::Host;
use crate::installer::{
    self, InstallError, InstallEvent, InstallOptions, Outcome, Source, VerifyMode,
};
use crate::juju::{Juju, Status};
use crate::storage_coordinator::{Backoff, ErrorClass, FsChecks, StorageError, Volume};

pub const STORAGE: &str = "concourse-data";
pub const RESOURCE: &str = "concourse-release";
pub const LOCAL_DIR: &str = "/var/lib/concourse-ci";
/// How long a hook waits for another unit's download before it reports waiting and exits.
pub const LOCK_WAIT: Duration = Duration::from_secs(90);

/// Errors of this step that fail the hook (transient install problems, pointer I/O).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot point {link} at {target}")]
    Pointer {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The release the unit runs after this step (behind its pointer, [`current_link`]).
/// Whether the pointer moved in this hook is not part of it: services follow what they
/// were started with (`service::apply_service`), whichever hook moved it.
#[derive(Debug, Clone)]
pub struct RunningRelease {
    pub version: String,
}

/// The unit's pointer (a machine path): `/var/lib/concourse-ci/current`.
pub fn current_link() -> PathBuf {
    Path::new(LOCAL_DIR).join("current")
}

/// The version of a release dir `<volume>/releases/<v>/concourse` (the pointer's target).
pub fn version_of_release_dir(p: &Path) -> Option<String> {
    let v = p.parent()?.file_name()?.to_str()?;
    crate::config::is_valid_version(v).then(|| v.to_string())
}

/// The version the unit's pointer targets, if it points at a release.
pub fn pointer_version(host: &Host) -> Option<String> {
    std::fs::read_link(host.paths.local(current_link()))
        .ok()
        .and_then(|p| version_of_release_dir(&p))
}

/// Published versions on the volume, sorted.
pub fn versions_on_volume(root: &Path) -> Vec<String> {
    Volume::new(root).published_versions().unwrap_or_default()
}

/// The volume root from `storage-get`, if storage is attached.
pub fn volume_root(juju: &Juju) -> Result<Option<PathBuf>, CharmError> {
    let Some(id) = juju.storage_list(STORAGE)?.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(juju.storage_get(&id)?.location))
}

/// Opens and checks the volume; reports why it is unusable.
pub fn open_volume(
    juju: &Juju,
    config: &CharmConfig,
    reports: &mut Reports,
) -> Result<Option<Volume>, CharmError> {
    let Some(root) = volume_root(juju)? else {
        reports.push(msg::STORAGE_NOT_ATTACHED.status());
        return Ok(None);
    };
    let vol = Volume::new(root);
    let shared = config.shared_storage == SharedStorage::Shared;
    if shared && crate::storage_coordinator::fscheck::is_juju_own_storage(vol.root()) {
        // On LXD the shared directory is attached after deploy, over Juju's own storage:
        // installing now would download into a directory no other unit sees.
        let root = vol.root().display().to_string();
        reports.push(msg::VOLUME_IS_OWN_STORAGE.fill(&[&root]));
        return Ok(None);
    }
    let checks = FsChecks {
        require_mount_point: shared,
        needed_bytes: 0,
        probe_flock: shared,
    };
    match vol.check(&checks).and_then(|_| vol.ensure_layout()) {
        Ok(()) => Ok(Some(vol)),
        Err(e) => match e.class() {
            ErrorClass::Transient => Err(ReleaseError::Storage(e).into()),
            _ => {
                reports.blocked(e.to_string());
                Ok(None)
            }
        },
    }
}

/// Publishes this unit's nonce and checks every peer's (shared mode only; see
/// docs/architecture.md#proving-sharing).
pub fn prove_sharing(
    vol: &Volume,
    me: &str,
    peers: &mut Peers,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    let nonce = vol.ensure_nonce(me).map_err(ReleaseError::from)?;
    peers.write_me(&peers::bag([(peers::NONCE, nonce.as_str())]));
    let mut strangers = Vec::new();
    for (peer, bag) in &peers.others {
        if let Some(n) = bag.get(peers::NONCE).filter(|n| !n.is_empty()) {
            if !vol.sees_nonce(peer, n).map_err(ReleaseError::from)? {
                strangers.push(peer.clone());
            }
        }
    }
    if !strangers.is_empty() {
        warn!(
            "the volume {} is not shared with {}",
            vol.root().display(),
            strangers.join(", ")
        );
        let root = vol.root().display().to_string();
        reports.push(msg::VOLUME_NOT_SHARED.fill(&[&root, &strangers.join(", ")]));
    }
    Ok(())
}

/// Where to install `version` from: the attached resource, else `release-url`.
pub fn source_for(juju: &Juju, config: &CharmConfig, version: &str) -> Result<Source, CharmError> {
    Ok(match juju.resource_get(RESOURCE)? {
        Some(path) => Source::Resource(path),
        None => Source::Url(config.release_url_for(version)),
    })
}

/// Install options for this unit (proxies from the hook environment).
pub fn install_options(juju: &Juju) -> InstallOptions {
    let mut o = InstallOptions::new(juju.unit_name());
    let p = &juju.context().proxies;
    o.http.http_proxy = p.http.clone();
    o.http.https_proxy = p.https.clone();
    o.http.no_proxy = p.no_proxy.clone();
    o.lock_wait = LOCK_WAIT;
    o
}

/// Result of [`install`] that is not an error of the hook.
pub enum Installed {
    Ready,
    /// Not installed; the status says why (blocked or waiting).
    NotReady,
}

/// Makes sure `version` is published on the volume, showing progress as status.
pub fn install(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    version: &str,
    set_installed_version: bool,
    reports: &mut Reports,
) -> Result<Installed, CharmError> {
    if vol.is_published(version).map_err(ReleaseError::from)? {
        if pointer_version(host).as_deref() != Some(version) {
            // About to start using a release another unit installed: say who downloaded
            // it, once, not on every hook that finds it in place.
            let path = vol.release_path(version).map_err(ReleaseError::from)?;
            let installed_by = installer::Manifest::read(&path)
                .ok()
                .map(|m| m.installed_by);
            let outcome = Outcome::AlreadyPresent { path, installed_by };
            info!("{}", outcome.log_line(juju.unit_name(), version));
        }
        if set_installed_version {
            record_installed_version(vol, version);
        }
        return Ok(Installed::Ready);
    }
    let source = source_for(juju, config, version)?;
    let mut opts = install_options(juju);
    opts.set_installed_version = set_installed_version;
    let mut last = String::new();
    let mut on_event = |e: &InstallEvent| {
        let Some(msg) = e.status_message() else {
            return;
        };
        if msg == last {
            return;
        }
        let status = if e.is_waiting() {
            Status::waiting(msg.clone())
        } else {
            Status::maintenance(msg.clone())
        };
        // status-set is immediate: operators watch progress while the hook runs.
        if let Err(err) = juju.status_set(&status, false) {
            warn!("status-set failed: {}", crate::error_chain(&err));
        }
        last = msg;
    };
    match installer::ensure_release(vol, version, &source, &opts, &mut on_event) {
        Ok(outcome) => {
            info!("{}", outcome.log_line(juju.unit_name(), version));
            if matches!(outcome, Outcome::Installed(_)) {
                if let Err(e) = installer::verify_release(vol, version, VerifyMode::Quick) {
                    let why = e.status_message();
                    reports.push(msg::INSTALLED_DOES_NOT_VERIFY.fill(&[version, &why]));
                    return Ok(Installed::NotReady);
                }
            }
            Ok(Installed::Ready)
        }
        Err(e) => match e.class() {
            ErrorClass::Permanent => {
                warn!("installing v{version}: {}", crate::error_chain(&e));
                reports.blocked(e.status_message());
                Ok(Installed::NotReady)
            }
            ErrorClass::Waiting => {
                reports.waiting(e.status_message());
                Ok(Installed::NotReady)
            }
            ErrorClass::Transient => {
                juju.status_set(&Status::maintenance(e.status_message()), false)?;
                Err(ReleaseError::Install(e).into())
            }
        },
    }
}

/// Records `version` in `.installed_version` when the volume has none yet: a release
/// installed before the application chose its version (in the install hook, before the
/// peer relation) was published without it. Never replaces a recorded version (only the
/// upgrade's finish moves it; a unit acting on an older snapshot must not move it back),
/// and never waits: when the volume is busy a later hook does it.
fn record_installed_version(vol: &Volume, version: &str) {
    if !matches!(vol.installed_version(), Ok(None)) {
        return;
    }
    let Ok(Some(lock)) = vol.try_lock_install() else {
        return;
    };
    if !matches!(vol.installed_version(), Ok(None)) {
        return;
    }
    match lock.set_installed_version(version) {
        Ok(_) => info!("recorded v{version} as the installed version of the volume"),
        Err(e) => warn!(
            "cannot record the installed version v{version}: {}",
            crate::error_chain(&e)
        ),
    }
}

/// Keeps a volume tidy once an upgrade is over (phase idle or failed), level-triggered
/// in every hook so that what a failed or killed hook left undone is done by a later
/// one: `.installed_version` names the application's release (on a per-unit volume only
/// once this unit runs it), and published releases other than the release, the previous
/// one and the target are removed unless a unit records it runs them (see
/// `installer::prune_releases`). The caller picks who tidies: the leader for a shared
/// volume, every unit for its own. Never waits for the lock: when another unit holds
/// it, a later hook tidies. Errors are reported and tried again in the next hook.
pub fn tidy_volume(
    vol: &Volume,
    app: &crate::upgrade::AppUpgrade,
    shared: bool,
    pointer: Option<&str>,
    reports: &mut Reports,
) {
    use crate::upgrade::Phase;
    if !matches!(app.phase, Phase::Idle | Phase::Failed) || app.release.is_empty() {
        return;
    }
    let record = shared || pointer == Some(app.release.as_str());
    let keep: Vec<&str> = [&app.release, &app.from, &app.target]
        .into_iter()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    let done = record_release(vol, &app.release, record).and_then(|()| {
        if !has_prunable(vol, &keep)? {
            return Ok(());
        }
        let report = installer::prune_releases(vol, &keep, Duration::ZERO, &Backoff::DEFAULT)?;
        if !report.removed.is_empty() {
            info!("removed unused releases {}", report.removed.join(", "));
        }
        Ok(())
    });
    match done {
        Ok(()) => {}
        Err(e) => match e.class() {
            ErrorClass::Waiting => info!("the volume is busy: tidying it in a later hook"),
            class => {
                warn!(
                    "tidying {}: {}",
                    vol.root().display(),
                    crate::error_chain(&e)
                );
                match class {
                    ErrorClass::Permanent => reports.blocked(e.status_message()),
                    _ => reports.maintenance(e.status_message()),
                }
            }
        },
    }
}

/// Records `release` in `.installed_version` when `record` and it says otherwise.
fn record_release(vol: &Volume, release: &str, record: bool) -> Result<(), InstallError> {
    if !record || vol.installed_version()?.as_deref() == Some(release) {
        return Ok(());
    }
    let Some(lock) = vol.try_lock_install()? else {
        return Err(StorageError::LockTimeout {
            path: vol.layout().lock_file(),
            waited: Duration::ZERO,
            holder: None,
        }
        .into());
    };
    lock.set_installed_version(release)?;
    info!("recorded v{release} as the installed version of the volume");
    Ok(())
}

/// Whether prune would remove anything (read without the lock; prune decides again under it).
fn has_prunable(vol: &Volume, keep: &[&str]) -> Result<bool, InstallError> {
    let mut kept: Vec<String> = keep.iter().map(|v| v.to_string()).collect();
    kept.extend(vol.installed_version()?);
    kept.extend(
        vol.unit_states()?
            .into_iter()
            .filter_map(|(_, s)| s.running_version),
    );
    Ok(vol.published_versions()?.iter().any(|v| !kept.contains(v)))
}

/// Points the unit at `version` (already published) and records it on the volume.
pub fn point_at(
    host: &Host,
    vol: &Volume,
    me: &str,
    version: &str,
) -> Result<RunningRelease, CharmError> {
    let target = vol
        .release_path(version)
        .map_err(ReleaseError::from)?
        .join("concourse");
    let link = host.paths.local(current_link());
    let changed =
        fsutil::replace_symlink(&target, &link).map_err(|source| ReleaseError::Pointer {
            link: link.clone(),
            target: target.clone(),
            source,
        })?;
    if changed {
        info!("{me} now runs v{version} from {}", target.display());
    }
    vol.update_unit_state(me, |s| {
        s.running_version = Some(version.to_string());
        s.pointer_target = Some(target.display().to_string());
    })
    .map_err(ReleaseError::from)?;
    Ok(RunningRelease {
        version: version.to_string(),
    })
}
