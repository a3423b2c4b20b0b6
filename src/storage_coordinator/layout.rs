//! Names of everything on the release volume (`docs/architecture.md#volume-layout`),
//! and validation of the names that come from outside (unit names, versions, download
//! file names).
//!
//! Owns: the mapping from (version, unit, pid, file) to paths under the volume root.
//! Invariants: every path returned stays directly under the volume root (a validated
//! version, unit or file name is a single normal path component); the names here are
//! the only spelling of the layout in the charm.
//! Hazards: `.install.lock` must never be removed or replaced: two processes locking
//! two different inodes would both "hold" the lock.

use std::path::{Path, PathBuf};

/// `flock(2)` target; every writer of `releases/` holds it exclusively. Never removed.
pub const LOCK_FILE: &str = ".install.lock";
/// Version the application targets now.
pub const INSTALLED_VERSION_FILE: &str = ".installed_version";
/// JSON progress of the download under way; informational only, never a lock.
pub const PROGRESS_FILE: &str = ".download_in_progress";
/// Scratch file of the `flock` support probe (never the install lock itself).
pub const FLOCK_PROBE_FILE: &str = ".flock-probe";
/// Resumable downloads (`<file>.partial`).
pub const DOWNLOADS_DIR: &str = "downloads";
/// Published releases (`<version>/`) and staging dirs.
pub const RELEASES_DIR: &str = "releases";
/// Per-unit state (`<unit-dir-name>/state.json`).
pub const UNITS_DIR: &str = "units";
/// Per-unit state file name.
pub const UNIT_STATE_FILE: &str = "state.json";
/// Prefix of staging dirs under `releases/`: `.staging-<version>-<unit>-<pid>`.
pub const STAGING_PREFIX: &str = ".staging-";
/// Prefix of releases being removed under `releases/`: `.trash-<version>-<pid>`.
pub const TRASH_PREFIX: &str = ".trash-";
/// Suffix of resumable downloads.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Completion marker and inventory inside a published release.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The verification result of each published release (`<version>.json`).
pub const VERIFIED_DIR: &str = "verified";
/// Remembered install failures (`<version>.json`): the tarball is not fetched again
/// until its source or expected digest changes.
pub const FAILED_DIR: &str = "failed";

/// Is `unit` a Juju unit name (`<application>/<number>`)?
///
/// The application part is lowercase letters, digits and `-`, starting with a letter,
/// at most 64 bytes; the number is at most 9 digits.
pub fn is_valid_unit_name(unit: &str) -> bool {
    let Some((app, num)) = unit.split_once('/') else {
        return false;
    };
    let app_ok = !app.is_empty()
        && app.len() <= 64
        && app.as_bytes()[0].is_ascii_lowercase()
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let num_ok = !num.is_empty() && num.len() <= 9 && num.bytes().all(|b| b.is_ascii_digit());
    app_ok && num_ok
}

/// The directory name of a unit under `units/` (and in staging names): `/` becomes `-`
/// (`concourse-ci/0` → `concourse-ci-0`). Unique because the number is always last.
pub fn unit_dir_name(unit: &str) -> String {
    unit.replace('/', "-")
}

/// Is `version` safe and plausible as a directory name under `releases/`?
pub fn is_valid_version(version: &str) -> bool {
    crate::config::is_valid_version(version)
}

/// Is `name` a safe single file name for `downloads/` (no separators, not hidden,
/// only `[A-Za-z0-9._+-]`, at most 200 bytes)?
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// The paths of one volume. Pure: building one does no I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }
    pub fn installed_version_file(&self) -> PathBuf {
        self.root.join(INSTALLED_VERSION_FILE)
    }
    pub fn progress_file(&self) -> PathBuf {
        self.root.join(PROGRESS_FILE)
    }
    pub fn flock_probe_file(&self) -> PathBuf {
        self.root.join(FLOCK_PROBE_FILE)
    }
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join(DOWNLOADS_DIR)
    }
    /// `downloads/<file>.partial`; `file` must satisfy [`is_safe_file_name`].
    pub fn partial_file(&self, file: &str) -> PathBuf {
        self.downloads_dir().join(format!("{file}{PARTIAL_SUFFIX}"))
    }
    pub fn releases_dir(&self) -> PathBuf {
        self.root.join(RELEASES_DIR)
    }
    /// `releases/<version>`; `version` must satisfy [`is_valid_version`].
    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.releases_dir().join(version)
    }
    /// `releases/.staging-<version>-<unit-dir-name>-<pid>`.
    pub fn staging_dir(&self, version: &str, unit: &str, pid: u32) -> PathBuf {
        self.releases_dir().join(format!(
            "{STAGING_PREFIX}{version}-{}-{pid}",
            unit_dir_name(unit)
        ))
    }
    /// `releases/.trash-<version>-<pid>`.
    pub fn trash_dir(&self, version: &str, pid: u32) -> PathBuf {
        self.releases_dir()
            .join(format!("{TRASH_PREFIX}{version}-{pid}"))
    }
    pub fn units_dir(&self) -> PathBuf {
        self.root.join(UNITS_DIR)
    }
    /// `units/<unit-dir-name>`; `unit` must satisfy [`is_valid_unit_name`].
    pub fn unit_dir(&self, unit: &str) -> PathBuf {
        self.units_dir().join(unit_dir_name(unit))
    }
    pub fn unit_state_file(&self, unit: &str) -> PathBuf {
        self.unit_dir(unit).join(UNIT_STATE_FILE)
    }
    pub fn verified_dir(&self) -> PathBuf {
        self.root.join(VERIFIED_DIR)
    }
    /// `verified/<version>.json`; `version` must satisfy [`is_valid_version`].
    pub fn verified_file(&self, version: &str) -> PathBuf {
        self.verified_dir().join(format!("{version}.json"))
    }
    pub fn failed_dir(&self) -> PathBuf {
        self.root.join(FAILED_DIR)
    }
    /// `failed/<version>.json`; `version` must satisfy [`is_valid_version`].
    pub fn failed_file(&self, version: &str) -> PathBuf {
        self.failed_dir().join(format!("{version}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        for ok in ["concourse-ci/0", "a/12", "web2/3", "x-y-z/999999999"] {
            assert!(is_valid_unit_name(ok), "{ok}");
        }
        for bad in [
            "",
            "concourse-ci",
            "concourse-ci/",
            "/0",
            "Concourse/0",
            "0app/1",
            "a/b/1",
            "a/../1",
            "../0",
            "a/1 ",
            "a/-1",
            "a/1234567890",
            "a.b/1",
        ] {
            assert!(!is_valid_unit_name(bad), "{bad}");
        }
        assert_eq!(unit_dir_name("concourse-ci/10"), "concourse-ci-10");
    }

    #[test]
    fn file_names() {
        assert!(is_safe_file_name("concourse-7.14.3-linux-amd64.tgz"));
        for bad in ["", ".hidden", "a/b", "..", "a b", "a\0b", "ü.tgz"] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
        assert!(!is_safe_file_name(&"a".repeat(201)));
    }

    #[test]
    fn paths_stay_under_the_root() {
        let l = Layout::new("/srv/vol");
        assert_eq!(l.lock_file(), Path::new("/srv/vol/.install.lock"));
        assert_eq!(
            l.release_dir("7.14.3"),
            Path::new("/srv/vol/releases/7.14.3")
        );
        assert_eq!(
            l.staging_dir("7.14.3", "concourse-ci/0", 42),
            Path::new("/srv/vol/releases/.staging-7.14.3-concourse-ci-0-42")
        );
        assert_eq!(
            l.partial_file("c.tgz"),
            Path::new("/srv/vol/downloads/c.tgz.partial")
        );
        assert_eq!(
            l.unit_state_file("concourse-ci/3"),
            Path::new("/srv/vol/units/concourse-ci-3/state.json")
        );
    }
}
