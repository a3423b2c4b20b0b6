//! The release volume (`docs/architecture.md#volume-layout`,
//! `docs/architecture.md#proving-sharing`): its layout, the install lock, the progress
//! marker, per-unit state, filesystem checks and the proof of sharing.
//!
//! Owns: every path under the volume root and every write to the volume's markers and
//! state files. Juju stays out: callers pass the volume root, unit names and versions,
//! and get typed results they turn into statuses.
//!
//! Modules: [`layout`] (names), [`lock`] (`flock`), [`backoff`] (the charm's one
//! backoff policy), [`atomic`] (marker and state writes), [`progress`] (the marker and
//! its wording), [`unit_state`], [`fscheck`] (volume checks).
//!
//! Invariants (see `docs/architecture.md#invariants`):
//! - Every writer of `releases/`, `downloads/`, `.download_in_progress` and
//!   `.installed_version` holds the exclusive `flock` on `.install.lock`; the methods that
//!   write them live on [`InstallLock`], so holding the guard is the proof.
//! - `releases/<version>` is complete iff it exists (publication is one rename, done by
//!   the installer) and nothing writes inside it afterwards.
//! - Markers and state files are replaced atomically and durably ([`atomic`]), and only
//!   when their content changes.
//! - A progress marker, staging dir or temp file found by the lock holder belongs to a
//!   dead writer (a live one would hold the lock) and is garbage, whatever its age.
//!
//! Hazards: never remove `.install.lock`. A volume that looks shared may not be
//! (per-unit volumes at the same path): prove it with the nonce ([`Volume::sees_nonce`])
//! before relying on "someone else installed it". A filesystem without working `flock`
//! must make shared mode refuse to run ([`StorageError::LockingUnsupported`]).

pub mod atomic;
pub mod backoff;
pub mod fscheck;
pub mod layout;
pub mod lock;
pub mod progress;
pub mod records;
pub mod unit_state;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

pub use atomic::Written;
pub use backoff::Backoff;
pub use fscheck::{FsChecks, VolumeReport};
pub use layout::Layout;
pub use lock::ExclusiveLock;
pub use progress::{ProgressMarker, Throttle, WaitInfo};
pub use records::{FailureRecord, VerifyRecord};
pub use unit_state::{CachedLatest, UnitState};

/// How the charm should react to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retrying will not help until the operator acts: set `blocked` with the message,
    /// exit 0, and check again on the next hook.
    Permanent,
    /// Retrying may help (network, I/O hiccup): fail the hook so Juju retries it.
    Transient,
    /// Another unit is busy with the volume: set `waiting`, exit 0, check again later.
    Waiting,
}

/// Errors of the storage coordinator. Each names the path and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage volume {path} does not exist; attach the concourse-data storage or mount the shared directory there")]
    VolumeMissing { path: PathBuf },
    #[error("storage volume {path} is not a directory; concourse-data must be a filesystem")]
    NotADirectory { path: PathBuf },
    #[error("storage volume {path} is not a mount point; mount the concourse-data volume (or the shared directory) there")]
    NotAMountPoint { path: PathBuf },
    #[error("storage volume {path} is read-only; remount it read-write")]
    ReadOnly { path: PathBuf },
    #[error("cannot write to {path}: permission denied; give the charm (root) write access to the volume")]
    PermissionDenied { path: PathBuf },
    #[error("storage volume {path} has {} free but {} are needed for download and unpack; free space or grow the volume", fmt_bytes(*available), fmt_bytes(*needed))]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("no space left on {path}; free space or grow the volume")]
    VolumeFull { path: PathBuf },
    #[error("the filesystem of {path} does not enforce flock ({detail}); use a filesystem with working locks (local, NFSv4, CephFS) or set shared-storage=none")]
    LockingUnsupported { path: PathBuf, detail: String },
    #[error("gave up after {}s waiting for the install lock {path}{}", waited.as_secs(), holder.as_ref().map(|m| format!(" (held by {} downloading v{})", m.unit, m.version)).unwrap_or_default())]
    LockTimeout {
        path: PathBuf,
        waited: Duration,
        holder: Option<Box<ProgressMarker>>,
    },
    #[error("{unit:?} is not a Juju unit name (expected <application>/<number>)")]
    InvalidUnitName { unit: String },
    #[error("{version:?} is not a Concourse version (expected e.g. 7.14.3)")]
    InvalidVersion { version: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the operating system's random number generator failed: {0}")]
    Entropy(String),
    #[error("files created on {path} belong to uid {uid}, not to the charm (root): the volume squashes root (NFS root_squash?), so others could replace what root runs; export it with no_root_squash to the units only, or set shared-storage=none (see docs/shared-storage.md)")]
    RootSquashed { path: PathBuf, uid: u32 },
    #[error("{path} on the volume belongs to uid {uid}, not root: its owner could change what root runs; chown -R root:root the volume (see docs/shared-storage.md)")]
    ForeignOwner { path: PathBuf, uid: u32 },
    #[error("{path} on the volume is writable by group or others (mode {mode:o}); run chmod -R go-w on the volume (see docs/shared-storage.md)")]
    WritableByOthers { path: PathBuf, mode: u32 },
}

impl StorageError {
    /// An I/O error on `path`; read-only, full and permission errors get their own
    /// variants so they are classified and worded right.
    pub fn io(op: &'static str, path: &Path, e: io::Error) -> StorageError {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EROFS) => StorageError::ReadOnly {
                path: path.to_path_buf(),
            },
            Some(Errno::ENOSPC | Errno::EDQUOT) => StorageError::VolumeFull {
                path: path.to_path_buf(),
            },
            Some(Errno::EACCES | Errno::EPERM) => StorageError::PermissionDenied {
                path: path.to_path_buf(),
            },
            _ => StorageError::Io {
                op,
                path: path.to_path_buf(),
                source: e,
            },
        }
    }

    /// An error from writing into the volume at `root`.
    pub(crate) fn from_write_error(root: &Path, e: io::Error) -> StorageError {
        StorageError::io("write to", root, e)
    }

    /// How the charm should react.
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::LockTimeout { .. } => ErrorClass::Waiting,
            StorageError::Io { .. } | StorageError::Entropy(_) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// `1.5 GiB`, `512.0 MiB`, `42 B`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A release volume rooted at a directory. Building one does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    layout: Layout,
}

/// What [`InstallLock::clean_dead_writer`] found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// The dead writer's marker (removed).
    pub dead_marker: Option<ProgressMarker>,
    /// A marker that could not be parsed (removed).
    pub corrupt_marker: bool,
    /// Staging and trash dirs removed from `releases/`.
    pub removed_dirs: Vec<PathBuf>,
    /// Partial downloads of other files removed from `downloads/`.
    pub removed_partials: Vec<PathBuf>,
    /// The partial kept for resuming, with its length.
    pub kept_partial: Option<(PathBuf, u64)>,
}

impl Volume {
    pub fn new(root: impl Into<PathBuf>) -> Volume {
        Volume {
            layout: Layout::new(root),
        }
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs the filesystem checks of [`fscheck::check_volume`].
    pub fn check(&self, checks: &FsChecks) -> Result<VolumeReport, StorageError> {
        fscheck::check_volume(self.root(), checks)
    }

    /// Creates `downloads/`, `releases/`, `units/`, `verified/` and `failed/` (0755,
    /// whatever the umask) if missing. The root itself must exist (it is the mount).
    pub fn ensure_layout(&self) -> Result<(), StorageError> {
        self.check_root()?;
        for dir in [
            self.layout.downloads_dir(),
            self.layout.releases_dir(),
            self.layout.units_dir(),
            self.layout.verified_dir(),
            self.layout.failed_dir(),
        ] {
            create_dir_0755(&dir)?;
        }
        Ok(())
    }

    /// The verification record of `version`; `None` when absent or unreadable (a
    /// corrupt record counts as absent: the release is verified again).
    pub fn read_verification(&self, version: &str) -> Result<Option<VerifyRecord>, StorageError> {
        check_version(version)?;
        Ok(read_record(&self.layout.verified_file(version)))
    }

    /// The remembered install failure of `version`, if any.
    pub fn read_failure(&self, version: &str) -> Result<Option<FailureRecord>, StorageError> {
        check_version(version)?;
        Ok(read_record(&self.layout.failed_file(version)))
    }

    /// The root exists and is a directory.
    fn check_root(&self) -> Result<(), StorageError> {
        match fs::metadata(self.root()) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StorageError::NotADirectory {
                    path: self.root().to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::VolumeMissing {
                    path: self.root().to_path_buf(),
                })
            }
            Err(e) => return Err(StorageError::io("stat", self.root(), e)),
        }
        Ok(())
    }

    /// `releases/<version>`, after validating the version.
    pub fn release_path(&self, version: &str) -> Result<PathBuf, StorageError> {
        check_version(version)?;
        Ok(self.layout.release_dir(version))
    }

    /// Whether `releases/<version>` is published (exists as a directory).
    pub fn is_published(&self, version: &str) -> Result<bool, StorageError> {
        let p = self.release_path(version)?;
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(m.is_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("stat", &p, e)),
        }
    }

    /// Published versions, sorted by name (staging and trash dirs excluded).
    pub fn published_versions(&self) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = list_dir(&self.layout.releases_dir())?
            .into_iter()
            .filter(|(name, _, t)| t.is_some_and(|t| t.is_dir()) && layout::is_valid_version(name))
            .map(|(name, _, _)| name)
            .collect();
        out.sort();
        Ok(out)
    }

    /// The version in `.installed_version`; `None` when absent or not a version.
    pub fn installed_version(&self) -> Result<Option<String>, StorageError> {
        let p = self.layout.installed_version_file();
        match fs::read(&p) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let v = s.trim();
                Ok(layout::is_valid_version(v).then(|| v.to_string()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", &p, e)),
        }
    }

    /// The progress marker, if present and parseable (a corrupt one reads as `None`).
    pub fn read_progress(&self) -> Option<ProgressMarker> {
        fs::read(self.layout.progress_file())
            .ok()
            .and_then(|b| ProgressMarker::parse(&b))
    }

    /// Takes the install lock if it is free.
    pub fn try_lock_install(&self) -> Result<Option<InstallLock<'_>>, StorageError> {
        self.check_root()?;
        Ok(
            lock::try_lock_exclusive(&self.layout.lock_file())?.map(|l| InstallLock {
                volume: self,
                _lock: l,
            }),
        )
    }

    /// Takes the install lock, waiting at most `wait` with `backoff` between attempts.
    /// Before each sleep, calls `on_wait` with what is known about the holder (from the
    /// progress marker) so the caller can show "Waiting for concourse-ci/0 to download
    /// v7.14.3 (42%)". `wanted` is the version the caller wants (for the message when
    /// there is no marker). On timeout the error names the holder.
    pub fn lock_install(
        &self,
        wanted: &str,
        wait: Duration,
        backoff: &Backoff,
        mut on_wait: impl FnMut(&WaitInfo),
    ) -> Result<InstallLock<'_>, StorageError> {
        self.check_root()?;
        let res =
            lock::lock_exclusive_with_deadline(&self.layout.lock_file(), wait, backoff, |waited| {
                on_wait(&WaitInfo {
                    wanted: wanted.to_string(),
                    holder: self.read_progress(),
                    waited,
                })
            });
        match res {
            Ok(l) => Ok(InstallLock {
                volume: self,
                _lock: l,
            }),
            Err(StorageError::LockTimeout { path, waited, .. }) => Err(StorageError::LockTimeout {
                path,
                waited,
                holder: self.read_progress().map(Box::new),
            }),
            Err(e) => Err(e),
        }
    }

    /// This unit's (or a peer's) state; `None` when absent or corrupt.
    pub fn read_unit_state(&self, unit: &str) -> Result<Option<UnitState>, StorageError> {
        check_unit(unit)?;
        let p = self.layout.unit_state_file(unit);
        match fs::read(&p) {
            Ok(b) => {
                let s = UnitState::parse(&b);
                if s.is_none() {
                    tracing::warn!("ignoring corrupt unit state {}", p.display());
                }
                Ok(s)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", &p, e)),
        }
    }

    /// Writes a unit's state (atomically; skipped when unchanged). Only the unit itself
    /// may call this for its own name.
    pub fn write_unit_state(&self, unit: &str, state: &UnitState) -> Result<Written, StorageError> {
        check_unit(unit)?;
        // Never create_dir_all: a missing (unmounted) volume must not be recreated on
        // the root disk.
        self.ensure_layout()?;
        create_dir_0755(&self.layout.unit_dir(unit))?;
        atomic::write_atomic(&self.layout.unit_state_file(unit), &state.to_json(), 0o644)
    }

    /// Reads, changes and writes back a unit's state; returns the new state.
    pub fn update_unit_state(
        &self,
        unit: &str,
        change: impl FnOnce(&mut UnitState),
    ) -> Result<UnitState, StorageError> {
        let mut s = self.read_unit_state(unit)?.unwrap_or_default();
        change(&mut s);
        self.write_unit_state(unit, &s)?;
        Ok(s)
    }

    /// Removes a departed unit's state directory. Returns whether it existed.
    pub fn remove_unit_state(&self, unit: &str) -> Result<bool, StorageError> {
        check_unit(unit)?;
        let dir = self.layout.unit_dir(unit);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io("remove", &dir, e)),
        }
    }

    /// Every readable unit state on the volume, as `(unit name, state)`, sorted.
    pub fn unit_states(&self) -> Result<Vec<(String, UnitState)>, StorageError> {
        let mut out = Vec::new();
        for (name, _, _) in list_dir(&self.layout.units_dir())? {
            let Some((app, num)) = name.rsplit_once('-') else {
                continue;
            };
            let unit = format!("{app}/{num}");
            if !layout::is_valid_unit_name(&unit) {
                continue;
            }
            if let Some(s) = self.read_unit_state(&unit)? {
                out.push((unit, s));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// This unit's sharing nonce, creating one if it has none. Publish the result in the
    /// peer unit databag *after* this returns (the volume write comes first).
    pub fn ensure_nonce(&self, unit: &str) -> Result<String, StorageError> {
        if let Some(n) = self.read_unit_state(unit)?.and_then(|s| s.nonce) {
            if !n.is_empty() {
                return Ok(n);
            }
        }
        self.write_nonce(unit)
    }

    /// Writes a fresh random nonce into this unit's state (the previous one stays valid
    /// for peers holding an older relation snapshot) and returns it.
    pub fn write_nonce(&self, unit: &str) -> Result<String, StorageError> {
        let nonce = unit_state::new_nonce().map_err(|e| StorageError::Entropy(e.to_string()))?;
        let n = nonce.clone();
        self.update_unit_state(unit, move |s| {
            s.previous_nonce = s.nonce.take();
            s.nonce = Some(n);
        })?;
        Ok(nonce)
    }

    /// Whether `peer`'s state on this volume carries `nonce` (its current or previous
    /// one). `false` when the peer has no (readable) state here: the volume is not
    /// shared with it (or it has not written yet: only conclude "not shared" for a nonce
    /// the peer already published in relation data).
    pub fn sees_nonce(&self, peer: &str, nonce: &str) -> Result<bool, StorageError> {
        Ok(self
            .read_unit_state(peer)?
            .is_some_and(|s| s.has_nonce(nonce)))
    }
}

/// The exclusive install lock of a volume. Methods that write the install markers live
/// here, so holding this guard is the proof the writer holds the lock. Dropping it
/// unlocks.
#[derive(Debug)]
pub struct InstallLock<'v> {
    volume: &'v Volume,
    _lock: ExclusiveLock,
}

impl InstallLock<'_> {
    pub fn volume(&self) -> &Volume {
        self.volume
    }

    /// Writes the progress marker (atomically; skipped when unchanged).
    pub fn write_progress(&self, marker: &ProgressMarker) -> Result<Written, StorageError> {
        atomic::write_atomic(
            &self.volume.layout.progress_file(),
            &marker.to_json(),
            0o644,
        )
    }

    /// Removes the progress marker. Returns whether there was one.
    pub fn clear_progress(&self) -> Result<bool, StorageError> {
        atomic::remove_durably(&self.volume.layout.progress_file())
    }

    /// Records the verification result of a published release.
    pub fn write_verification(&self, r: &VerifyRecord) -> Result<Written, StorageError> {
        check_version(&r.version)?;
        self.volume.ensure_layout()?;
        let path = self.volume.layout.verified_file(&r.version);
        atomic::write_atomic(&path, &records::to_json(r), 0o644)
    }

    /// Remembers an install failure (replacing an older one of the version).
    pub fn write_failure(&self, r: &FailureRecord) -> Result<Written, StorageError> {
        check_version(&r.version)?;
        self.volume.ensure_layout()?;
        let path = self.volume.layout.failed_file(&r.version);
        atomic::write_atomic(&path, &records::to_json(r), 0o644)
    }

    /// Forgets the install failure of `version` (it installed, or an action asks).
    pub fn clear_failure(&self, version: &str) -> Result<bool, StorageError> {
        check_version(version)?;
        atomic::remove_durably(&self.volume.layout.failed_file(version))
    }

    /// Removes every record of `version` (its release was pruned).
    pub fn clear_records(&self, version: &str) -> Result<(), StorageError> {
        check_version(version)?;
        atomic::remove_durably(&self.volume.layout.verified_file(version))?;
        self.clear_failure(version)?;
        Ok(())
    }

    /// Records the version the application targets (`.installed_version`).
    pub fn set_installed_version(&self, version: &str) -> Result<Written, StorageError> {
        check_version(version)?;
        atomic::write_atomic(
            &self.volume.layout.installed_version_file(),
            format!("{version}\n").as_bytes(),
            0o644,
        )
    }

    /// Cleans what a dead writer left (we hold the lock, so any writer that left these
    /// is gone): the progress marker, every staging and trash dir under `releases/`,
    /// temp files of interrupted atomic writes, and every `downloads/*.partial` except
    /// `keep_partial` (a download file name), which is kept for resuming.
    pub fn clean_dead_writer(&self, keep_partial: Option<&str>) -> Result<Cleanup, StorageError> {
        let l = &self.volume.layout;
        let mut c = Cleanup::default();
        match fs::read(l.progress_file()) {
            Ok(b) => {
                c.dead_marker = ProgressMarker::parse(&b);
                c.corrupt_marker = c.dead_marker.is_none();
                self.clear_progress()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("read", &l.progress_file(), e)),
        }
        for dir in [l.root().to_path_buf(), l.verified_dir(), l.failed_dir()] {
            atomic::remove_stale_temps(&dir)?;
        }
        let releases = l.releases_dir();
        for (name, path, _) in list_dir(&releases)? {
            if name.starts_with(layout::STAGING_PREFIX) || name.starts_with(layout::TRASH_PREFIX) {
                remove_tree(&path)?;
                c.removed_dirs.push(path);
            } else if name.starts_with('.') && name.contains(".tmp-") {
                let _ = fs::remove_file(&path);
            }
        }
        let keep = keep_partial.map(|f| l.partial_file(f));
        for (_, path, kind) in list_dir(&l.downloads_dir())? {
            let is_file = kind.is_some_and(|t| t.is_file());
            if Some(&path) == keep.as_ref() && is_file {
                let len = fs::metadata(&path)
                    .map_err(|e| StorageError::io("stat", &path, e))?
                    .len();
                c.kept_partial = Some((path, len));
            } else if is_file {
                fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
                c.removed_partials.push(path);
            } else {
                remove_tree(&path)?;
                c.removed_partials.push(path);
            }
        }
        Ok(c)
    }
}

/// A JSON record, `None` when absent or unparsable.
fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = fs::read(path).ok()?;
    let r = serde_json::from_slice(&bytes).ok();
    if r.is_none() {
        tracing::warn!("ignoring the unreadable record {}", path.display());
    }
    r
}

/// Creates a directory 0755 (an existing one is fine); the umask can only make it
/// stricter.
pub(crate) fn create_dir_0755(dir: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::io("create directory", dir, e)),
    }
}

/// `(name, path, file type)` of each entry; empty when `dir` is missing.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, Option<fs::FileType>)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path(), entry.file_type().ok()));
    }
    Ok(out)
}

/// Removes a directory tree (or a file) that may be missing.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StorageError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

fn check_version(version: &str) -> Result<(), StorageError> {
    if layout::is_valid_version(version) {
        Ok(())
    } else {
        Err(StorageError::InvalidVersion {
            version: version.to_string(),
        })
    }
}

fn check_unit(unit: &str) -> Result<(), StorageError> {
    if layout::is_valid_unit_name(unit) {
        Ok(())
    } else {
        Err(StorageError::InvalidUnitName {
            unit: unit.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol() -> (tempfile::TempDir, Volume) {
        let d = tempfile::tempdir().unwrap();
        let v = Volume::new(d.path());
        v.ensure_layout().unwrap();
        (d, v)
    }

    #[test]
    fn layout_is_created_and_versions_listed() {
        let (_d, v) = vol();
        assert!(v.root().join("releases").is_dir());
        assert!(v.published_versions().unwrap().is_empty());
        fs::create_dir(v.root().join("releases/7.14.3")).unwrap();
        fs::create_dir(v.root().join("releases/.staging-7.14.4-a-0-1")).unwrap();
        fs::write(v.root().join("releases/8.0.0"), b"not a dir").unwrap();
        assert_eq!(v.published_versions().unwrap(), vec!["7.14.3"]);
        assert!(v.is_published("7.14.3").unwrap());
        assert!(!v.is_published("8.0.0").unwrap());
        assert!(matches!(
            v.is_published("../x"),
            Err(StorageError::InvalidVersion { .. })
        ));
    }

    #[test]
    fn missing_volume_is_a_clear_permanent_error_and_never_recreated() {
        let d = tempfile::tempdir().unwrap();
        let v = Volume::new(d.path().join("gone"));
        let e = v.ensure_layout().unwrap_err();
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().contains("gone") && e.to_string().contains("attach"));
        let e = v.write_nonce("concourse-ci/0").unwrap_err();
        assert!(matches!(e, StorageError::VolumeMissing { .. }), "{e}");
        assert!(matches!(
            v.try_lock_install(),
            Err(StorageError::VolumeMissing { .. })
        ));
        assert!(
            !d.path().join("gone").exists(),
            "the mount point was not recreated"
        );
    }

    #[test]
    fn clean_dead_writer_keeps_only_the_matching_partial() {
        let (_d, v) = vol();
        let l = v.layout();
        let m = ProgressMarker::new("7.14.3", "concourse-ci/1", 10, Some(100));
        fs::write(l.progress_file(), m.to_json()).unwrap();
        fs::create_dir_all(
            l.staging_dir("7.14.3", "concourse-ci/1", 7)
                .join("concourse"),
        )
        .unwrap();
        fs::create_dir_all(l.trash_dir("7.0.0", 7)).unwrap();
        fs::create_dir(l.release_dir("7.13.0")).unwrap();
        fs::write(l.partial_file("a.tgz"), b"0123456789").unwrap();
        fs::write(l.partial_file("old.tgz"), b"x").unwrap();
        fs::write(l.root().join(".installed_version.tmp-1-2"), b"x").unwrap();
        let g = v.try_lock_install().unwrap().unwrap();
        let c = g.clean_dead_writer(Some("a.tgz")).unwrap();
        assert_eq!(c.dead_marker, Some(m));
        assert!(!c.corrupt_marker);
        assert_eq!(c.removed_dirs.len(), 2);
        assert_eq!(c.removed_partials, vec![l.partial_file("old.tgz")]);
        assert_eq!(c.kept_partial, Some((l.partial_file("a.tgz"), 10)));
        assert!(v.read_progress().is_none());
        assert!(
            l.release_dir("7.13.0").is_dir(),
            "published releases untouched"
        );
        assert!(!l.root().join(".installed_version.tmp-1-2").exists());
        // Corrupt marker is cleaned too.
        fs::write(l.progress_file(), b"{garbage").unwrap();
        let c = g.clean_dead_writer(None).unwrap();
        assert!(c.corrupt_marker && c.dead_marker.is_none());
        assert!(!l.progress_file().exists());
        assert!(!l.partial_file("a.tgz").exists());
    }

    #[test]
    fn write_probe_left_by_a_crash_is_swept_by_the_next_lock_holder() {
        // The probe used to be `.write-probe-<pid>-<n>`, which no cleanup matched.
        let (_d, v) = vol();
        let probe = v
            .root()
            .join(format!("{}crashed", fscheck::WRITE_PROBE_PREFIX));
        fs::write(&probe, b"probe").unwrap();
        let g = v.try_lock_install().unwrap().unwrap();
        g.clean_dead_writer(None).unwrap();
        assert!(!probe.exists());
        fscheck::check_writable(v.root()).unwrap();
        assert_eq!(
            fs::read_dir(v.root()).unwrap().count(),
            6,
            "only the lock file and the layout dirs: no probe left"
        );
    }

    #[test]
    fn lock_is_exclusive_and_wait_reports_the_holder() {
        let (_d, v) = vol();
        let g = v.try_lock_install().unwrap().unwrap();
        g.write_progress(&ProgressMarker::new(
            "7.14.3",
            "concourse-ci/0",
            42,
            Some(100),
        ))
        .unwrap();
        assert!(v.try_lock_install().unwrap().is_none());
        let b = Backoff {
            first: Duration::from_millis(5),
            factor: 2,
            max: Duration::from_millis(10),
        };
        let mut seen = Vec::new();
        let e = v
            .lock_install("7.14.3", Duration::from_millis(40), &b, |w| {
                seen.push(w.status_message())
            })
            .unwrap_err();
        assert_eq!(e.class(), ErrorClass::Waiting);
        assert!(e.to_string().contains("concourse-ci/0"), "{e}");
        assert!(!seen.is_empty());
        assert!(seen
            .iter()
            .all(|s| s == "Waiting for concourse-ci/0 to download v7.14.3 (42%)"));
        drop(g);
        assert!(v.lock_install("7.14.3", Duration::ZERO, &b, |_| {}).is_ok());
    }

    #[test]
    fn installed_version_round_trip() {
        let (_d, v) = vol();
        assert_eq!(v.installed_version().unwrap(), None);
        let g = v.try_lock_install().unwrap().unwrap();
        g.set_installed_version("7.14.3").unwrap();
        assert_eq!(v.installed_version().unwrap().as_deref(), Some("7.14.3"));
        assert!(g.set_installed_version("bad/version").is_err());
        fs::write(v.layout().installed_version_file(), b"garbage\n").unwrap();
        assert_eq!(v.installed_version().unwrap(), None);
    }

    #[test]
    fn unit_state_and_nonces() {
        let (d, v) = vol();
        assert_eq!(v.read_unit_state("concourse-ci/0").unwrap(), None);
        let n0 = v.ensure_nonce("concourse-ci/0").unwrap();
        assert_eq!(v.ensure_nonce("concourse-ci/0").unwrap(), n0, "stable");
        assert!(v.sees_nonce("concourse-ci/0", &n0).unwrap());
        let n1 = v.write_nonce("concourse-ci/0").unwrap();
        assert_ne!(n0, n1);
        assert!(v.sees_nonce("concourse-ci/0", &n1).unwrap());
        assert!(
            v.sees_nonce("concourse-ci/0", &n0).unwrap(),
            "previous still valid"
        );
        assert!(!v.sees_nonce("concourse-ci/1", &n1).unwrap());
        // A unit on another (unshared) volume does not see it.
        let other = tempfile::tempdir().unwrap();
        let v2 = Volume::new(other.path());
        v2.ensure_layout().unwrap();
        assert!(!v2.sees_nonce("concourse-ci/0", &n1).unwrap());
        let s = v
            .update_unit_state("concourse-ci/0", |s| {
                s.role = Some("web".into());
                s.running_version = Some("7.14.3".into());
            })
            .unwrap();
        assert_eq!(s.nonce.as_deref(), Some(n1.as_str()));
        assert_eq!(
            v.unit_states().unwrap(),
            vec![("concourse-ci/0".to_string(), s.clone())]
        );
        assert_eq!(
            v.write_unit_state("concourse-ci/0", &s).unwrap(),
            Written::Unchanged
        );
        fs::write(v.layout().unit_state_file("concourse-ci/0"), b"{oops").unwrap();
        assert_eq!(v.read_unit_state("concourse-ci/0").unwrap(), None);
        assert!(!v.sees_nonce("concourse-ci/0", &n1).unwrap());
        assert!(v.remove_unit_state("concourse-ci/0").unwrap());
        assert!(matches!(
            v.read_unit_state("../etc"),
            Err(StorageError::InvalidUnitName { .. })
        ));
        drop(d);
    }

    #[test]
    fn error_classes_and_messages() {
        let p = Path::new("/srv/vol");
        let ro = StorageError::io(
            "write",
            p,
            io::Error::from_raw_os_error(Errno::EROFS as i32),
        );
        assert!(matches!(ro, StorageError::ReadOnly { .. }));
        assert!(ro.to_string().contains("remount it read-write"));
        let full = StorageError::io(
            "write",
            p,
            io::Error::from_raw_os_error(Errno::ENOSPC as i32),
        );
        assert!(matches!(full, StorageError::VolumeFull { .. }));
        assert_eq!(full.class(), ErrorClass::Permanent);
        let eio = StorageError::io("read", p, io::Error::from_raw_os_error(Errno::EIO as i32));
        assert_eq!(eio.class(), ErrorClass::Transient);
        assert!(eio.to_string().starts_with("cannot read /srv/vol"));
        let ns = StorageError::NoSpace {
            path: p.into(),
            needed: 3 << 30,
            available: 1 << 29,
        };
        assert_eq!(
            ns.to_string(),
            "storage volume /srv/vol has 512.0 MiB free but 3.0 GiB are needed for download and unpack; free space or grow the volume"
        );
        assert_eq!(fmt_bytes(42), "42 B");
    }
}
