//! The release this unit runs: the volume, installing a version, and the unit's pointer.
//!
//! Owns: the unit's pointer `/var/lib/concourse-ci/current` → `<volume>/releases/<v>/concourse`,
//! the volume checks and proof of sharing run in each hook, and turning installer events and
//! errors into statuses. Invariants: the pointer only ever targets a published release and
//! moves with one atomic rename; a failed install publishes nothing and leaves the running
//! release untouched; permanent problems are `blocked` statuses (exit 0), transient ones fail
//! the hook so Juju retries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::peers::{self, Peers};
use super::status::{messages as msg, Reports};
use super::CharmError;
use crate::config::{CharmConfig, Secret, SharedStorage};
use crate::fsutil;
use crate::host::Host;
use crate::installer::trust::{self, ExecDigests, TrustSource, TrustStore};
use crate::installer::{self, InstallError, InstallEvent, InstallOptions, Outcome, Source};
use crate::juju::client::SecretRef;
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
    /// Nothing trusted for this install of the version yet: wait for the leader.
    #[error("no trusted digests for v{version} yet")]
    Untrusted { version: String },
    /// An executable of the release differs from its trusted digest.
    #[error("v{version} on the volume changed after it was verified ({what}); remove {path} to reinstall it")]
    Changed {
        version: String,
        what: String,
        path: PathBuf,
    },
}

/// App key: the digests of each published release's executables, as the leader trusts
/// them (JSON: version → `installer::trust::ExecDigests`).
pub const RELEASE_DIGESTS: &str = "release-digests";

/// The unit's store of trusted digests (a machine path).
pub fn trust_store_path() -> PathBuf {
    Path::new(LOCAL_DIR).join("trusted-digests.json")
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
        // Root runs what is on the volume: it must be the charm's (root's) alone.
        owner: Some(nix::unistd::geteuid().as_raw()),
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

/// Install options for this unit (the model's proxies, overridden by the options).
pub fn install_options(juju: &Juju, config: &CharmConfig) -> InstallOptions {
    let mut o = InstallOptions::new(juju.unit_name());
    let p = crate::proxy::effective(&juju.context().proxies, &config.proxy);
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
    note_plain_http(juju, config, version, reports)?;
    if vol.is_published(version).map_err(ReleaseError::from)? {
        if pointer_version(host).as_deref() != Some(version) {
            // About to start using a release another unit installed: say who downloaded
            // it, once, not on every hook that finds it in place (nor when it was this one).
            let path = vol.release_path(version).map_err(ReleaseError::from)?;
            let installed_by = installer::Manifest::read(&path)
                .ok()
                .map(|m| m.installed_by);
            if installed_by.as_deref() != Some(juju.unit_name()) {
                let outcome = Outcome::AlreadyPresent { path, installed_by };
                info!("{}", outcome.log_line(juju.unit_name(), version));
            }
        }
        if set_installed_version {
            record_installed_version(vol, version);
        }
        return trust_release(juju, host, vol, version, reports);
    }
    let source = source_for(juju, config, version)?;
    let mut opts = install_options(juju, config);
    opts.set_installed_version = set_installed_version;
    opts.http.extra_ca_pem = config.release_ca.clone();
    match config.pinned_sha256(version) {
        Ok(pin) => opts.expected_sha256 = pin.map(str::to_string),
        Err(_) => {
            reports.push(msg::RELEASE_SHA256_MISSING.fill(&[version, version]));
            return Ok(Installed::NotReady);
        }
    }
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
            if let Outcome::Installed(report) = &outcome {
                // Digests from the tarball this unit just verified: its own to trust.
                let path = host.paths.local(trust_store_path());
                let mut store = TrustStore::load(&path);
                store.trust(version, report.exec.clone(), TrustSource::Installed);
                save_store(&store, &path);
            }
            trust_release(juju, host, vol, version, reports)
        }
        Err(e) => install_failed(juju, version, e, reports),
    }
}

/// The status (or the failed hook) for an install error.
fn install_failed(
    juju: &Juju,
    version: &str,
    e: InstallError,
    reports: &mut Reports,
) -> Result<Installed, CharmError> {
    match e.class() {
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
    }
}

/// A published release is ready for this unit once it verified (the record on the
/// volume, `installer::ensure_verified`) and its executables match digests this unit
/// trusts: its own from the tarball, else the leader's from the peer app data; the leader
/// adopts a release it finds (MANIFEST's digests, checked against the files). A
/// non-leader without digests waits for the leader.
fn trust_release(
    juju: &Juju,
    host: &Host,
    vol: &Volume,
    version: &str,
    reports: &mut Reports,
) -> Result<Installed, CharmError> {
    let unit = juju.unit_name();
    if let Err(e) = installer::ensure_verified(vol, version, unit, LOCK_WAIT, &Backoff::DEFAULT) {
        return install_failed(juju, version, e, reports);
    }
    let release = vol.release_path(version).map_err(ReleaseError::from)?;
    let manifest = match installer::Manifest::read(&release) {
        Ok(m) => m,
        Err(e) => return install_failed(juju, version, e, reports),
    };
    let path = host.paths.local(trust_store_path());
    let mut store = TrustStore::load(&path);
    if let Some(d) = leader_digests(juju)?.remove(version) {
        store.trust(version, d, TrustSource::Leader);
    }
    let tarball = &manifest.tarball.sha256;
    if store.digests_for(version, tarball).is_none() && juju.is_leader()? {
        let adopted = ExecDigests::from_entries(&manifest.entries, tarball);
        store.trust(version, adopted, TrustSource::Leader);
    }
    let Some(want) = store.digests_for(version, tarball).cloned() else {
        reports.push(msg::WAITING_FOR_RELEASE_DIGESTS.fill(&[version]));
        return Ok(Installed::NotReady);
    };
    let checked = trust::check_release(&release, &want, &mut store.hashes);
    store.retain(
        &vol.published_versions().unwrap_or_default(),
        &vol.layout().releases_dir(),
    );
    save_store(&store, &path);
    match checked {
        Ok(()) => Ok(Installed::Ready),
        Err(what) => {
            let e = ReleaseError::Changed {
                version: version.to_string(),
                what,
                path: release,
            };
            warn!("{e}");
            reports.blocked(e.to_string());
            Ok(Installed::NotReady)
        }
    }
}

/// The digests the leader published (an empty map when none or unreadable).
fn leader_digests(juju: &Juju) -> Result<BTreeMap<String, ExecDigests>, CharmError> {
    let Some(rel) = juju.relation_ids(peers::ENDPOINT)?.into_iter().next() else {
        return Ok(BTreeMap::new());
    };
    let bag = juju.own_app_bag(&rel)?;
    Ok(bag
        .get(RELEASE_DIGESTS)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default())
}

fn save_store(store: &TrustStore, path: &Path) {
    if let Err(e) = store.save(path) {
        warn!("cannot write {}: {e}", path.display());
    }
}

/// Before the unit points at (and so runs) `version`: its executables must match the
/// digests this unit trusts for it (see [`trust_release`]).
pub fn check_before_use(host: &Host, vol: &Volume, version: &str) -> Result<(), ReleaseError> {
    let release = vol.release_path(version)?;
    let tarball = installer::Manifest::read(&release)?.tarball.sha256;
    let path = host.paths.local(trust_store_path());
    let mut store = TrustStore::load(&path);
    let Some(want) = store.digests_for(version, &tarball).cloned() else {
        return Err(ReleaseError::Untrusted {
            version: version.to_string(),
        });
    };
    let checked = trust::check_release(&release, &want, &mut store.hashes);
    save_store(&store, &path);
    checked.map_err(|what| ReleaseError::Changed {
        version: version.to_string(),
        what,
        path: release,
    })
}

/// Checks the release the unit's pointer targets (see [`check_before_use`]) before
/// something restarts its services outside a reconcile (an action); `Err` says why not.
pub fn check_running_release(juju: &Juju, host: &Host) -> Result<Result<(), String>, CharmError> {
    let (Some(version), Some(root)) = (pointer_version(host), volume_root(juju)?) else {
        return Ok(Ok(()));
    };
    Ok(check_before_use(host, &Volume::new(root), &version).map_err(|e| e.to_string()))
}

/// The leader publishes the digests of every published release it trusts (and drops
/// those of pruned ones) in the peer app data, for the other units to hold their
/// releases to.
pub fn publish_digests(host: &Host, vol: &Volume, peers: &mut Peers) {
    if peers.rel.is_none() {
        return;
    }
    let store = TrustStore::load(&host.paths.local(trust_store_path()));
    let mut out: BTreeMap<String, ExecDigests> = BTreeMap::new();
    for v in vol.published_versions().unwrap_or_default() {
        let verified = vol
            .read_verification(&v)
            .ok()
            .flatten()
            .is_some_and(|r| r.ok);
        let Ok(m) = installer::Manifest::read(&vol.layout().release_dir(&v)) else {
            continue;
        };
        if let Some(d) = store
            .digests_for(&v, &m.tarball.sha256)
            .filter(|_| verified)
        {
            out.insert(v, d.clone());
        }
    }
    let json = serde_json::to_string(&out).unwrap_or_default();
    let current = peers.app_value(RELEASE_DIGESTS).unwrap_or("{}");
    if json != current && !(out.is_empty() && current == "{}") {
        debug!(
            "publishing the digests of v{}",
            out.keys().cloned().collect::<Vec<_>>().join(", v")
        );
        peers.write_app(&peers::bag([(RELEASE_DIGESTS, json.as_str())]));
    }
}

/// Forgets a remembered install failure of `version` (the `upgrade` action asks for it
/// again), when the volume is not busy.
pub fn forget_install_failure(juju: &Juju, version: &str) {
    let Ok(Some(root)) = volume_root(juju) else {
        return;
    };
    let vol = Volume::new(root);
    if let Ok(Some(lock)) = vol.try_lock_install() {
        if let Ok(true) = lock.clear_failure(version) {
            info!("forgot the failed install of v{version}: the next attempt downloads it again");
        }
    }
}

/// The token for the latest-release lookup: the `token` key of the user secret that
/// `github-token-secret` names (latest revision), else the deprecated plain
/// `github-token`. `Err` is the status saying why the secret cannot be read.
pub fn github_token(
    juju: &Juju,
    config: &CharmConfig,
) -> Result<Result<Secret, Status>, CharmError> {
    let Some(uri) = &config.github_token_secret else {
        if !config.github_token.is_empty() {
            warn!(
                "github-token is deprecated: keep the token in a Juju secret (github-token-secret)"
            );
        }
        return Ok(Ok(config.github_token.clone()));
    };
    let content = match juju.secret_get(&SecretRef::Id(uri.clone()), true) {
        Ok(c) => c,
        Err(e) if e.kind().is_some() => {
            let why = e.kind().map(|k| k.to_string()).unwrap_or_default();
            return Ok(Err(msg::GITHUB_TOKEN_SECRET_UNREADABLE.fill(&[
                uri,
                &why,
                juju.app_name(),
            ])));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match content.get("token").filter(|t| !t.is_empty()) {
        Some(t) => Ok(Secret::new(t.clone())),
        None => Err(msg::GITHUB_TOKEN_SECRET_NO_TOKEN.fill(&[uri])),
    })
}

/// Warns (a note on the active status) when `version` comes from a plain http
/// `release-url` without a pinned sha256: its `.sha1` comes from the same server, so it
/// only guards against corruption. Asks for the resource only then.
fn note_plain_http(
    juju: &Juju,
    config: &CharmConfig,
    version: &str,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    if !config.release_url_is_plain_http() || matches!(config.pinned_sha256(version), Ok(Some(_))) {
        return Ok(());
    }
    if juju.resource_get(RESOURCE)?.is_none() {
        reports.note(msg::RELEASE_URL_PLAIN_HTTP.text);
    }
    Ok(())
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
/// Returns whether the volume is tidy (false: left for a later hook).
pub fn tidy_volume(
    vol: &Volume,
    app: &crate::upgrade::AppUpgrade,
    shared: bool,
    pointer: Option<&str>,
    reports: &mut Reports,
) -> bool {
    use crate::upgrade::Phase;
    if !matches!(app.phase, Phase::Idle | Phase::Failed) || app.release.is_empty() {
        return false;
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
        Ok(()) => true,
        Err(e) => match e.class() {
            ErrorClass::Waiting => {
                info!("the volume is busy: tidying it in a later hook");
                false
            }
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
                false
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
    check_before_use(host, vol, version)?;
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
        // the service's own start or restart line and the switch's line say it at info
        debug!("{me} now runs v{version} from {}", target.display());
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
