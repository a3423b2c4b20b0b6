//! Installing a Concourse release on the volume exactly once (DESIGN §3), checking an
//! installed release, pruning unused ones, and finding the latest version.
//!
//! Owns: [`ensure_release`], [`verify_release`], [`prune_releases`] and the
//! [`InstallError`] classification (permanent → `blocked`, transient → fail the hook,
//! waiting → `waiting`).
//!
//! Invariants:
//! - Safe from any unit, any hook, concurrently: the fast path only reads; everything
//!   else runs under the volume's install lock, re-checks after taking it, and treats
//!   whatever a previous holder left (marker, staging, temp files) as a dead writer's.
//! - Nothing is published unless the tarball's upstream sha1 (and the pinned sha256, if
//!   any) matched, every entry passed the unpack checks, every file and directory was
//!   fsynced and MANIFEST was written: then one `rename(staging, releases/<version>)`.
//!   On any failure the staging dir is removed and `releases/` is untouched.
//! - A URL source is verified against `<url>.sha1` and fails closed when that cannot be
//!   fetched; the Juju resource is trusted as the operator's choice (a pinned sha256
//!   still applies).
//! - A kept partial download is resumed with `Range` (206 required); a mismatch or an
//!   unusable tarball after a resume is retried once from zero before it is reported.
//!
//! Hazards: `ensure_release` may block up to `lock_wait` while another unit downloads
//! (calling the event callback so the caller can update its status). Units run from
//! `releases/<version>`: prune only versions no unit runs (prune also keeps every
//! version recorded in `units/*/state.json` and `.installed_version`).

pub mod download;
mod fetch;
pub mod latest;
pub mod manifest;
pub mod unpack;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::storage_coordinator::{
    atomic, layout, progress::unix_now, remove_tree, Backoff, Cleanup, ErrorClass, InstallLock,
    ProgressMarker, StorageError, Throttle, Volume, WaitInfo,
};

pub use download::HttpOptions;
pub use latest::{latest_version, resolve_latest, ResolvedLatest, LATEST_CACHE_TTL};
pub use manifest::{Manifest, TarballInfo, VerifyMode};
pub use unpack::UnpackLimits;

/// Where the release tarball comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The attached Juju resource `concourse-release` (a local file).
    Resource(PathBuf),
    /// `release-url` with the version filled in.
    Url(String),
}

/// Knobs of [`ensure_release`]; [`InstallOptions::new`] gives the production defaults.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// This unit (`concourse-ci/0`), recorded in the marker, staging name and MANIFEST.
    pub unit: String,
    pub http: HttpOptions,
    /// How long to wait for another unit holding the install lock.
    pub lock_wait: Duration,
    /// Delays between lock attempts while waiting.
    pub backoff: Backoff,
    /// Extra attempts (resuming the partial) after a transient network failure.
    pub retries: u32,
    /// Delay before the first retry (doubles each time, at most 30 s).
    pub retry_delay: Duration,
    /// A pinned sha256 of the tarball (lowercase hex), checked in addition to `.sha1`.
    pub expected_sha256: Option<String>,
    /// Unpacked size estimate as a multiple of the tarball size, for the space check
    /// (download + 1.2 x is the 2.2 x of the design).
    pub unpack_factor: f64,
    pub limits: UnpackLimits,
    /// Write `.installed_version` after publishing.
    pub set_installed_version: bool,
    /// Report progress every this many percent…
    pub progress_percent: u8,
    /// …or this often.
    pub progress_interval: Duration,
}

impl InstallOptions {
    pub fn new(unit: &str) -> InstallOptions {
        InstallOptions {
            unit: unit.to_string(),
            http: HttpOptions::default(),
            lock_wait: Duration::from_secs(600),
            backoff: Backoff::DEFAULT,
            retries: 2,
            retry_delay: Duration::from_secs(2),
            expected_sha256: None,
            unpack_factor: 1.2,
            limits: UnpackLimits::default(),
            set_installed_version: false,
            progress_percent: 1,
            progress_interval: Duration::from_secs(2),
        }
    }
}

/// Progress of [`ensure_release`], for statuses and logs.
#[derive(Debug, Clone)]
pub enum InstallEvent {
    /// Another unit holds the lock; we wait.
    Waiting(WaitInfo),
    /// A dead writer's leftovers were cleaned.
    CleanedDeadWriter(Cleanup),
    /// Download (or resource unpack) progress.
    Downloading {
        version: String,
        bytes: u64,
        total: Option<u64>,
        from_resource: bool,
    },
    /// A transient failure; trying again (resuming).
    Retrying {
        version: String,
        attempt: u32,
        of: u32,
        error: String,
    },
    /// Verified; syncing and renaming into place.
    Publishing { version: String },
}

impl InstallEvent {
    /// The status to show, if any: `maintenance` for our own work, `waiting` for
    /// [`InstallEvent::Waiting`] (see [`InstallEvent::is_waiting`]).
    pub fn status_message(&self) -> Option<String> {
        match self {
            InstallEvent::Waiting(w) => Some(w.status_message()),
            InstallEvent::CleanedDeadWriter(_) => None,
            InstallEvent::Downloading {
                version,
                bytes,
                total,
                from_resource,
            } => {
                let amount = crate::storage_coordinator::progress::amount(*bytes, *total);
                Some(if *from_resource {
                    format!("Installing v{version} from the concourse-release resource ({amount})")
                } else {
                    format!("Downloading v{version} ({amount})")
                })
            }
            InstallEvent::Retrying {
                version,
                attempt,
                of,
                ..
            } => Some(format!(
                "Download of v{version} interrupted; resuming (retry {attempt} of {of})"
            )),
            InstallEvent::Publishing { version } => Some(format!("Publishing v{version}")),
        }
    }

    /// Whether the status is `waiting` (another unit works) rather than `maintenance`.
    pub fn is_waiting(&self) -> bool {
        matches!(self, InstallEvent::Waiting(_))
    }
}

/// What [`ensure_release`] did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `releases/<version>` already existed (no lock taken).
    AlreadyPresent {
        path: PathBuf,
        installed_by: Option<String>,
    },
    /// Another unit published it while we waited for the lock.
    InstalledByPeer {
        path: PathBuf,
        waited: Duration,
        installed_by: Option<String>,
    },
    /// This call downloaded, verified and published it.
    Installed(Box<InstallReport>),
}

impl Outcome {
    /// `releases/<version>`.
    pub fn path(&self) -> &Path {
        match self {
            Outcome::AlreadyPresent { path, .. } | Outcome::InstalledByPeer { path, .. } => path,
            Outcome::Installed(r) => &r.path,
        }
    }

    /// A log line naming who downloaded and who reused (FR-009).
    pub fn log_line(&self, unit: &str, version: &str) -> String {
        let by = |b: &Option<String>| b.clone().unwrap_or_else(|| "an unknown unit".into());
        match self {
            Outcome::AlreadyPresent { installed_by, .. } => {
                format!("{unit} reuses v{version} downloaded by {}", by(installed_by))
            }
            Outcome::InstalledByPeer {
                installed_by,
                waited,
                ..
            } => format!(
                "{unit} reuses v{version} downloaded by {} (waited {}s)",
                by(installed_by),
                waited.as_secs()
            ),
            Outcome::Installed(r) => format!(
                "{unit} downloaded v{version} from {} ({} bytes, {} transferred, resumed from {}, sha1 {}) in {:.1}s",
                r.tarball.source,
                r.tarball.size,
                r.transferred,
                r.resumed_from,
                r.tarball.sha1,
                r.elapsed.as_secs_f64()
            ),
        }
    }
}

/// Details of an install done by this call.
#[derive(Debug, Clone)]
pub struct InstallReport {
    pub path: PathBuf,
    pub version: String,
    pub tarball: TarballInfo,
    /// Bytes reused from a kept partial (0 for a fresh download).
    pub resumed_from: u64,
    /// Bytes received (or read from the resource) by this call.
    pub transferred: u64,
    pub files: usize,
    pub unpacked_bytes: u64,
    /// Attempts made (1 when nothing failed).
    pub attempts: u32,
    /// Time spent waiting for the lock.
    pub waited: Duration,
    pub elapsed: Duration,
    pub cleanup: Cleanup,
}

/// A release check's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: usize,
    pub bytes: u64,
    /// What `concourse --version` printed.
    pub binary_version: String,
    pub installed_by: String,
}

/// What [`prune_releases`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<String>,
    /// Kept versions with the reason (`requested`, `installed`, `used by <unit>`).
    pub kept: Vec<(String, String)>,
}

/// Errors of the installer. Each names the URL/path and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{url} is not a usable release URL ({reason}); check release-url")]
    InvalidUrl { url: String, reason: String },
    #[error("the proxy setting {which} is not a valid URL; fix the model's juju-http-proxy/juju-https-proxy")]
    InvalidProxy { which: &'static str },
    #[error("{}", http_message(url, *status))]
    Http { url: String, status: u16 },
    #[error("download of {url} failed: {detail}; will retry")]
    Network { url: String, detail: String },
    #[error("download of {url} stopped at {got} of {expected} bytes; will resume")]
    Truncated {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("{url} sent an unusable range response ({detail}); will restart the download")]
    BadContentRange { url: String, detail: String },
    #[error("cannot fetch the checksum {url} ({detail}); refusing to install an unverified release: check {}release-url, or attach the tarball as the concourse-release resource", if matches!(status, Some(404 | 410)) { "version and " } else { "" })]
    ChecksumUnavailable {
        url: String,
        detail: String,
        status: Option<u16>,
    },
    #[error("{url} is not a sha1 checksum file; check release-url")]
    ChecksumFileInvalid { url: String },
    #[error("checksum mismatch for {file} ({algorithm} expected {expected}, got {actual}); {}", if *from_resource { "re-attach the concourse-release resource" } else { "check release-url" })]
    ChecksumMismatch {
        file: String,
        origin: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
        from_resource: bool,
    },
    #[error("cannot read the concourse-release resource {path}: {source}; re-attach it with juju attach-resource")]
    ResourceUnreadable { path: PathBuf, source: io::Error },
    #[error("the concourse-release resource {path} is empty; attach the release tarball with juju attach-resource")]
    ResourceEmpty { path: PathBuf },
    #[error("the concourse-release resource {path} holds v{found}, not v{wanted}; attach the v{wanted} tarball or set version={found}")]
    ResourceVersionMismatch {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("release tarball {tarball} is unsafe: entry {entry}: {reason}; nothing was installed, check release-url")]
    UnsafeEntry {
        tarball: String,
        entry: String,
        reason: String,
    },
    #[error("release tarball {tarball} is not a valid .tgz ({detail}); check release-url")]
    BadArchive { tarball: String, detail: String },
    #[error("release tarball {tarball} is too large ({detail}); check release-url")]
    TooLarge { tarball: String, detail: String },
    #[error("release v{version} is not installed at {path}")]
    NotInstalled { version: String, path: PathBuf },
    #[error("{path} is unusable ({detail}); remove the release directory to reinstall it")]
    ManifestInvalid { path: PathBuf, detail: String },
    #[error("release file {path} does not match MANIFEST: {detail}; remove the release directory to reinstall it")]
    ReleaseCorrupt { path: PathBuf, detail: String },
    #[error("{path} --version {detail}")]
    BinaryFailed { path: PathBuf, detail: String },
    #[error("latest release lookup at {url} failed: {detail}")]
    Latest {
        url: String,
        detail: String,
        permanent: bool,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

fn http_message(url: &str, status: u16) -> String {
    match status {
        404 | 410 => {
            format!("release not found at {url} (HTTP {status}); check version and release-url")
        }
        s if download::status_is_transient(s) => format!("{url} answered HTTP {s}; will retry"),
        s => format!("{url} answered HTTP {s}; check release-url and the proxy settings"),
    }
}

impl InstallError {
    /// How the charm should react.
    pub fn class(&self) -> ErrorClass {
        use InstallError::*;
        match self {
            Storage(e) => e.class(),
            Http { status, .. } if download::status_is_transient(*status) => ErrorClass::Transient,
            ChecksumUnavailable {
                status: Some(s), ..
            } if !download::status_is_transient(*s) => ErrorClass::Permanent,
            ChecksumUnavailable { .. }
            | Network { .. }
            | Truncated { .. }
            | BadContentRange { .. } => ErrorClass::Transient,
            Latest {
                permanent: false, ..
            }
            | Internal(_) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }

    /// The status text (`blocked`/`waiting`/`maintenance` per [`InstallError::class`]).
    pub fn status_message(&self) -> String {
        match self {
            InstallError::Storage(StorageError::LockTimeout {
                holder: Some(m), ..
            }) => {
                format!("Waiting for {}", m.describe())
            }
            e => e.to_string(),
        }
    }

    /// A problem with the tarball's content (as opposed to its transport).
    fn is_content_error(&self) -> bool {
        matches!(
            self,
            InstallError::UnsafeEntry { .. }
                | InstallError::BadArchive { .. }
                | InstallError::TooLarge { .. }
        )
    }
}

/// Makes sure `releases/<version>` exists on `volume`, downloading it at most once per
/// volume however many units call this at the same time (DESIGN §3). See the module
/// docs for the guarantees; `events` receives waiting/progress updates.
pub fn ensure_release(
    volume: &Volume,
    version: &str,
    source: &Source,
    opts: &InstallOptions,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<Outcome, InstallError> {
    if !layout::is_valid_unit_name(&opts.unit) {
        return Err(StorageError::InvalidUnitName {
            unit: opts.unit.clone(),
        }
        .into());
    }
    let path = volume.release_path(version)?;
    if volume.is_published(version)? {
        return Ok(Outcome::AlreadyPresent {
            installed_by: installed_by(&path),
            path,
        });
    }
    volume.ensure_layout()?;
    let t0 = Instant::now();
    let lock = match volume.try_lock_install()? {
        Some(l) => l,
        None => volume.lock_install(version, opts.lock_wait, &opts.backoff, |w| {
            events(&InstallEvent::Waiting(w.clone()))
        })?,
    };
    let waited = t0.elapsed();
    if volume.is_published(version)? {
        return Ok(Outcome::InstalledByPeer {
            installed_by: installed_by(&path),
            path,
            waited,
        });
    }
    let file_name = match source {
        Source::Url(url) => download::download_file_name(url, version),
        Source::Resource(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| layout::is_safe_file_name(n))
            .unwrap_or_else(|| format!("concourse-{version}.tgz")),
    };
    let keep = matches!(source, Source::Url(_)).then_some(file_name.as_str());
    let cleanup = lock.clean_dead_writer(keep)?;
    if cleanup != Cleanup::default() {
        events(&InstallEvent::CleanedDeadWriter(cleanup.clone()));
    }
    let staging = volume
        .layout()
        .staging_dir(version, &opts.unit, std::process::id());
    let res = install_locked(&lock, version, source, opts, &file_name, &staging, events);
    // Whatever happened, no marker or staging dir of ours outlives this call.
    let _ = lock.clear_progress();
    match res {
        Ok(mut report) => {
            report.waited = waited;
            report.elapsed = t0.elapsed();
            report.cleanup = cleanup;
            Ok(Outcome::Installed(Box::new(report)))
        }
        Err(e) => {
            let _ = remove_tree(&staging);
            Err(e)
        }
    }
}

fn install_locked(
    lock: &InstallLock<'_>,
    version: &str,
    source: &Source,
    opts: &InstallOptions,
    file_name: &str,
    staging: &Path,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<InstallReport, InstallError> {
    let volume = lock.volume();
    let layout = volume.layout();
    let release = layout.release_dir(version);
    if fs::symlink_metadata(&release).is_ok() {
        // Not a directory (is_published said no), e.g. a stray file or link.
        return Err(InstallError::ReleaseCorrupt {
            path: release,
            detail: "exists but is not a directory".into(),
        });
    }
    let mut job = fetch::Job {
        lock,
        version,
        unit: &opts.unit,
        staging,
        label: file_name,
        limits: opts.limits,
        unpack_factor: opts.unpack_factor,
        throttle: Throttle::new(opts.progress_percent, opts.progress_interval),
        from_resource: matches!(source, Source::Resource(_)),
    };
    // Tell waiting units who works on what before the first byte arrives.
    let kept = match source {
        Source::Url(_) => fs::metadata(layout.partial_file(file_name)).map_or(0, |m| m.len()),
        Source::Resource(_) => 0,
    };
    lock.write_progress(&ProgressMarker::new(version, &opts.unit, kept, None))?;
    let mut attempts = 0u32;
    let (fetched, origin) = match source {
        Source::Url(url) => {
            download::parse_url(url)?;
            let client = download::build_client(&opts.http)?;
            let expected_sha1 = download::fetch_sha1(&client, url)?;
            let partial = layout.partial_file(file_name);
            let mut from_zero = false;
            let mut restarted = false;
            let mut retries = 0u32;
            let fetched = loop {
                attempts += 1;
                remove_tree(staging)?;
                fs::create_dir(staging)
                    .map_err(|e| StorageError::io("create directory", staging, e))?;
                let mut resumed_from = 0u64;
                let r = fetch::fetch_url(
                    &mut job,
                    &client,
                    url,
                    &partial,
                    from_zero,
                    &mut resumed_from,
                    events,
                )
                .and_then(|f| {
                    check_hash(file_name, url, "sha1", &expected_sha1, &f.sha1, false)?;
                    if let Some(want) = &opts.expected_sha256 {
                        check_hash(file_name, url, "sha256", want, &f.sha256, false)?;
                    }
                    Ok(f)
                });
                match r {
                    Ok(f) => break f,
                    Err(e) => {
                        let bad_bytes = matches!(e, InstallError::ChecksumMismatch { .. })
                            || e.is_content_error();
                        if bad_bytes {
                            // The bytes are wrong: never resume from them again.
                            let _ = atomic::remove_durably(&partial);
                        }
                        let restartable =
                            bad_bytes || matches!(e, InstallError::BadContentRange { .. });
                        if restartable && resumed_from > 0 && !restarted {
                            // Maybe only the kept partial was bad: once more, from zero.
                            tracing::warn!("{e}; downloading again from the start");
                            restarted = true;
                            from_zero = true;
                            continue;
                        }
                        if e.class() == ErrorClass::Transient && retries < opts.retries {
                            retries += 1;
                            events(&InstallEvent::Retrying {
                                version: version.to_string(),
                                attempt: retries,
                                of: opts.retries,
                                error: e.to_string(),
                            });
                            std::thread::sleep(fetch::retry_delay(opts.retry_delay, retries));
                            from_zero = matches!(e, InstallError::BadContentRange { .. });
                            continue;
                        }
                        return Err(e);
                    }
                }
            };
            (fetched, download::redact_url(url))
        }
        Source::Resource(path) => {
            attempts = 1;
            remove_tree(staging)?;
            fs::create_dir(staging)
                .map_err(|e| StorageError::io("create directory", staging, e))?;
            let f = fetch::fetch_resource(&mut job, path, events)?;
            let origin = format!("resource:{}", path.display());
            if let Some(want) = &opts.expected_sha256 {
                check_hash(file_name, &origin, "sha256", want, &f.sha256, true)?;
            }
            // Nothing else ties an attached file to a version: ask the binary. A binary
            // that cannot run here (noexec mount, other arch) is left to verify_release.
            let bin = staging.join("concourse/bin/concourse");
            if let Ok(found) = run_version(&bin, Duration::from_secs(10)) {
                let found = found.strip_prefix('v').unwrap_or(&found).to_string();
                if found != version && crate::config::is_valid_version(&found) {
                    return Err(InstallError::ResourceVersionMismatch {
                        path: path.clone(),
                        found,
                        wanted: version.to_string(),
                    });
                }
            }
            (f, origin)
        }
    };

    events(&InstallEvent::Publishing {
        version: version.to_string(),
    });
    let tarball = TarballInfo {
        file: file_name.to_string(),
        source: origin,
        size: fetched.size,
        sha1: fetched.sha1.clone(),
        sha256: fetched.sha256.clone(),
    };
    let manifest = Manifest {
        format: Manifest::FORMAT,
        version: version.to_string(),
        installed_by: opts.unit.clone(),
        installed_at: unix_now(),
        tarball: tarball.clone(),
        entries: fetched.unpacked.entries.clone(),
    };
    publish(staging, &release, &fetched.unpacked, &manifest)?;
    if opts.set_installed_version {
        lock.set_installed_version(version)?;
    }
    if !job.from_resource {
        let partial = layout.partial_file(file_name);
        if let Err(e) = atomic::remove_durably(&partial) {
            tracing::warn!(
                "published v{version} but cannot remove {}: {e}",
                partial.display()
            );
        }
    }
    Ok(InstallReport {
        path: release,
        version: version.to_string(),
        tarball,
        resumed_from: fetched.resumed_from,
        transferred: fetched.transferred,
        files: fetched.unpacked.files.len(),
        unpacked_bytes: fetched.unpacked.bytes,
        attempts,
        waited: Duration::ZERO,
        elapsed: Duration::ZERO,
        cleanup: Cleanup::default(),
    })
}

fn check_hash(
    file: &str,
    origin: &str,
    algorithm: &'static str,
    expected: &str,
    actual: &str,
    from_resource: bool,
) -> Result<(), InstallError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(InstallError::ChecksumMismatch {
            file: file.to_string(),
            origin: download::redact_url(origin),
            algorithm,
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
            from_resource,
        })
    }
}

/// fsyncs every file and directory of the staging tree, writes MANIFEST, and renames the
/// tree into place.
fn publish(
    staging: &Path,
    release: &Path,
    unpacked: &unpack::Unpacked,
    manifest: &Manifest,
) -> Result<(), InstallError> {
    for f in &unpacked.files {
        fs::File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(|e| StorageError::io("fsync", f, e))?;
    }
    let mpath = staging.join(layout::MANIFEST_FILE);
    {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&mpath)
            .map_err(|e| StorageError::io("create", &mpath, e))?;
        f.write_all(&manifest.to_json())
            .and_then(|_| f.sync_all())
            .map_err(|e| StorageError::io("write", &mpath, e))?;
    }
    let mut dirs: Vec<&PathBuf> = unpacked.dirs.iter().collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in dirs {
        atomic::fsync_dir(d)?;
    }
    atomic::fsync_dir(staging)?;
    if fs::symlink_metadata(release).is_ok() {
        return Err(InstallError::Internal(format!(
            "{} appeared while this unit held the install lock; something writes releases/ without the lock",
            release.display()
        )));
    }
    fs::rename(staging, release)
        .map_err(|e| StorageError::io("publish (rename) into", release, e))?;
    let parent = release.parent().unwrap_or(Path::new("/"));
    atomic::fsync_dir(parent)?;
    Ok(())
}

fn installed_by(release: &Path) -> Option<String> {
    Manifest::read(release).ok().map(|m| m.installed_by)
}

/// Checks an installed release: MANIFEST against the tree (`Quick`: types, sizes,
/// modes, link targets; `Full`: also every sha256), and that
/// `concourse/bin/concourse --version` prints `version` (within 10 s).
pub fn verify_release(
    volume: &Volume,
    version: &str,
    mode: VerifyMode,
) -> Result<VerifyReport, InstallError> {
    verify_release_with_timeout(volume, version, mode, Duration::from_secs(10))
}

/// [`verify_release`] with an explicit time limit for `--version`.
pub fn verify_release_with_timeout(
    volume: &Volume,
    version: &str,
    mode: VerifyMode,
    timeout: Duration,
) -> Result<VerifyReport, InstallError> {
    let release = volume.release_path(version)?;
    if !volume.is_published(version)? {
        return Err(InstallError::NotInstalled {
            version: version.to_string(),
            path: release,
        });
    }
    let m = Manifest::read(&release)?;
    if m.version != version {
        return Err(InstallError::ManifestInvalid {
            path: release.join(layout::MANIFEST_FILE),
            detail: format!("it describes v{}, not v{version}", m.version),
        });
    }
    let (files, bytes) = m.verify_tree(&release, mode)?;
    let bin = release.join("concourse/bin/concourse");
    let printed = run_version(&bin, timeout)?;
    if printed != version && printed.strip_prefix('v') != Some(version) {
        return Err(InstallError::BinaryFailed {
            path: bin,
            detail: format!(
                "printed {:?}, expected {version}",
                printed.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(VerifyReport {
        files,
        bytes,
        binary_version: printed,
        installed_by: m.installed_by,
    })
}

/// Runs `<bin> --version` with an empty environment; returns trimmed stdout.
fn run_version(bin: &Path, timeout: Duration) -> Result<String, InstallError> {
    let failed = |detail: String| InstallError::BinaryFailed {
        path: bin.to_path_buf(),
        detail,
    };
    let mut child = Command::new(bin)
        .arg("--version")
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run: {e}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "did not finish within {}s",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(failed(format!("cannot wait: {e}"))),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.by_ref().take(64 << 10).read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(4 << 10).read_to_string(&mut err);
    }
    if !status.success() {
        return Err(failed(format!(
            "failed ({status}): {}",
            err.trim().chars().take(200).collect::<String>()
        )));
    }
    Ok(out.trim().to_string())
}

/// Removes published releases not in `keep`, under the install lock (waiting at most
/// `wait`). Also always keeps `.installed_version` and every version a unit records as
/// running (`units/*/state.json`). Each removal is a rename to `releases/.trash-*` (an
/// atomic unpublish) followed by the delete.
pub fn prune_releases(
    volume: &Volume,
    keep: &[&str],
    wait: Duration,
    backoff: &Backoff,
) -> Result<PruneReport, InstallError> {
    let lock = match volume.try_lock_install()? {
        Some(l) => l,
        None => volume.lock_install("(pruning)", wait, backoff, |_| {})?,
    };
    let mut kept_for: Vec<(String, String)> = keep
        .iter()
        .map(|v| (v.to_string(), "requested".to_string()))
        .collect();
    if let Some(v) = volume.installed_version()? {
        kept_for.push((v, "installed".into()));
    }
    for (unit, s) in volume.unit_states()? {
        if let Some(v) = s.running_version {
            kept_for.push((v, format!("used by {unit}")));
        }
    }
    let mut report = PruneReport::default();
    for v in volume.published_versions()? {
        if let Some((_, why)) = kept_for.iter().find(|(k, _)| *k == v) {
            report.kept.push((v, why.clone()));
            continue;
        }
        let from = volume.layout().release_dir(&v);
        let trash = volume.layout().trash_dir(&v, std::process::id());
        remove_tree(&trash)?;
        fs::rename(&from, &trash).map_err(|e| StorageError::io("unpublish (rename)", &from, e))?;
        atomic::fsync_dir(&volume.layout().releases_dir())?;
        remove_tree(&trash)?;
        report.removed.push(v);
    }
    drop(lock);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        use ErrorClass::*;
        let cases: Vec<(InstallError, ErrorClass)> = vec![
            (
                InstallError::Http {
                    url: "u".into(),
                    status: 404,
                },
                Permanent,
            ),
            (
                InstallError::Http {
                    url: "u".into(),
                    status: 503,
                },
                Transient,
            ),
            (
                InstallError::Http {
                    url: "u".into(),
                    status: 429,
                },
                Transient,
            ),
            (
                InstallError::Network {
                    url: "u".into(),
                    detail: "reset".into(),
                },
                Transient,
            ),
            (
                InstallError::Truncated {
                    url: "u".into(),
                    got: 1,
                    expected: 2,
                },
                Transient,
            ),
            (
                InstallError::ChecksumUnavailable {
                    url: "u".into(),
                    detail: "HTTP 404".into(),
                    status: Some(404),
                },
                Permanent,
            ),
            (
                InstallError::ChecksumUnavailable {
                    url: "u".into(),
                    detail: "HTTP 502".into(),
                    status: Some(502),
                },
                Transient,
            ),
            (
                InstallError::ChecksumUnavailable {
                    url: "u".into(),
                    detail: "timed out".into(),
                    status: None,
                },
                Transient,
            ),
            (
                InstallError::UnsafeEntry {
                    tarball: "t".into(),
                    entry: "e".into(),
                    reason: "r".into(),
                },
                Permanent,
            ),
            (
                InstallError::BadArchive {
                    tarball: "t".into(),
                    detail: "d".into(),
                },
                Permanent,
            ),
            (
                StorageError::VolumeFull { path: "/v".into() }.into(),
                Permanent,
            ),
            (
                StorageError::LockTimeout {
                    path: "/v".into(),
                    waited: Duration::ZERO,
                    holder: None,
                }
                .into(),
                Waiting,
            ),
            (
                InstallError::Latest {
                    url: "u".into(),
                    detail: "d".into(),
                    permanent: false,
                },
                Transient,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.class(), want, "{e}");
        }
    }

    #[test]
    fn messages_name_what_and_what_to_do() {
        let e = InstallError::ChecksumMismatch {
            file: "concourse-7.14.3-linux-amd64.tgz".into(),
            origin: "https://h/c.tgz".into(),
            algorithm: "sha1",
            expected: "aa".into(),
            actual: "bb".into(),
            from_resource: false,
        };
        assert_eq!(
            e.status_message(),
            "checksum mismatch for concourse-7.14.3-linux-amd64.tgz (sha1 expected aa, got bb); check release-url"
        );
        // A missing .sha1 usually means a missing release: say which setting to check.
        let e = InstallError::ChecksumUnavailable {
            url: "https://h/c.tgz.sha1".into(),
            detail: "HTTP 404".into(),
            status: Some(404),
        };
        assert_eq!(
            e.status_message(),
            "cannot fetch the checksum https://h/c.tgz.sha1 (HTTP 404); refusing to install an unverified release: check version and release-url, or attach the tarball as the concourse-release resource"
        );
        let e = InstallError::ChecksumUnavailable {
            url: "https://h/c.tgz.sha1".into(),
            detail: "connection refused".into(),
            status: None,
        };
        assert!(e
            .status_message()
            .contains(": check release-url, or attach"));
        let e = InstallError::Http {
            url: "https://h/c.tgz".into(),
            status: 404,
        };
        assert_eq!(
            e.to_string(),
            "release not found at https://h/c.tgz (HTTP 404); check version and release-url"
        );
        let e = InstallError::UnsafeEntry {
            tarball: "c.tgz".into(),
            entry: "concourse/../../x".into(),
            reason: "it contains a .. component".into(),
        };
        assert!(e
            .to_string()
            .contains("entry concourse/../../x: it contains a .. component"));
        let m = crate::storage_coordinator::ProgressMarker::new(
            "7.14.3",
            "concourse-ci/0",
            42,
            Some(100),
        );
        let e: InstallError = StorageError::LockTimeout {
            path: "/v/.install.lock".into(),
            waited: Duration::from_secs(600),
            holder: Some(Box::new(m)),
        }
        .into();
        assert_eq!(
            e.status_message(),
            "Waiting for concourse-ci/0 to download v7.14.3 (42%)"
        );
    }

    #[test]
    fn event_statuses() {
        let d = InstallEvent::Downloading {
            version: "7.14.3".into(),
            bytes: 42,
            total: Some(100),
            from_resource: false,
        };
        assert_eq!(d.status_message().unwrap(), "Downloading v7.14.3 (42%)");
        assert!(!d.is_waiting());
        let r = InstallEvent::Downloading {
            version: "7.14.3".into(),
            bytes: 1,
            total: Some(2),
            from_resource: true,
        };
        assert_eq!(
            r.status_message().unwrap(),
            "Installing v7.14.3 from the concourse-release resource (50%)"
        );
    }
}
