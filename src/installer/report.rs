//! What an install reports while it runs ([`InstallEvent`]) and when it is done
//! ([`Outcome`], [`InstallReport`]), with the status and log texts built from them.
//!
//! Owns: the wording of install progress in `juju status` and of the "who downloaded,
//! who reused" log line.
//! Invariants: pure data and formatting, no I/O; texts name versions and units only
//! (URLs in reports are already redacted).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::manifest::TarballInfo;
use crate::storage_coordinator::{progress, Cleanup, WaitInfo};

/// Progress of [`super::ensure_release`], for statuses and logs.
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
                let amount = progress::amount(*bytes, *total);
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

/// What [`super::ensure_release`] did.
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

    /// A log line naming who downloaded and who reused.
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
    /// The digests of the release's executables, from the verified tarball.
    pub exec: super::trust::ExecDigests,
}

#[cfg(test)]
mod tests {
    use super::*;

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
