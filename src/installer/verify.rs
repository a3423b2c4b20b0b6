//! Verification: is this the release it claims to be?
//!
//! Owns: comparing a downloaded tarball's digests with the expected ones
//! (`check_tarball`), asking an attached resource's binary which version it is,
//! checking an installed release ([`verify_release`]: MANIFEST against the tree, then
//! `concourse --version`), and the verification record of each published release
//! (`verify_published` right after publication, [`ensure_verified`] for a release found
//! on the volume): a release is used only once a record says it verified.
//! Invariants: a digest comparison is case-insensitive and fails closed; the binary runs
//! with an empty environment (only a fixed `PATH`), no stdin, bounded output and a time
//! limit, and is killed when it overstays.
//! Hazards: `verify_release` runs a binary from the volume: only call it on a published
//! release (it refuses anything else).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::download;
use super::fetch::Fetched;
use super::manifest::{Manifest, VerifyMode};
use super::trust::{check_release, ExecDigests, HashCache};
use super::InstallError;
use crate::storage_coordinator::{
    layout, progress::unix_now, Backoff, InstallLock, VerifyRecord, Volume,
};

/// How long `concourse --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Verifies a release right after this unit published it (holding `lock`): its
/// executables against the digests from the tarball, then `--version`. Records the
/// result; a definite failure is [`InstallError::Unverified`], a slow binary is
/// transient and not recorded.
pub(crate) fn verify_published(
    lock: &InstallLock<'_>,
    version: &str,
    unit: &str,
    exec: &ExecDigests,
) -> Result<(), InstallError> {
    let release = lock.volume().release_path(version)?;
    let failure = match check_release(&release, exec, &mut HashCache::default()) {
        Err(what) => Some(what),
        Ok(()) => version_failure(&release, version)?,
    };
    record(lock, version, unit, &exec.tarball, failure)
}

/// Makes sure a published release has an ok verification record for the install it
/// holds: returns at once when it has one; verifies it under the lock when there is
/// none (a release published by an older charm: MANIFEST against the tree, its
/// executables against MANIFEST, `--version`). [`InstallError::Unverified`] when it
/// failed, now or before.
pub fn ensure_verified(
    volume: &Volume,
    version: &str,
    unit: &str,
    wait: Duration,
    backoff: &Backoff,
) -> Result<(), InstallError> {
    let release = volume.release_path(version)?;
    let m = Manifest::read(&release)?;
    if let Some(done) = recorded(volume, version, &m)? {
        return done;
    }
    let lock = match volume.try_lock_install()? {
        Some(l) => l,
        None => volume.lock_install(version, wait, backoff, |_| {})?,
    };
    if let Some(done) = recorded(volume, version, &m)? {
        return done;
    }
    let exec = ExecDigests::from_entries(&m.entries, &m.tarball.sha256);
    let failure =
        match verify_release_with_timeout(volume, version, VerifyMode::Quick, VERSION_TIMEOUT) {
            Ok(_) => check_release(&release, &exec, &mut HashCache::default()).err(),
            Err(e @ (InstallError::BinaryTimeout { .. } | InstallError::Storage(_))) => {
                return Err(e)
            }
            Err(e) => Some(e.status_message()),
        };
    record(&lock, version, unit, &m.tarball.sha256, failure)
}

/// The recorded verification of `version` for the install `m` describes, if any.
fn recorded(
    volume: &Volume,
    version: &str,
    m: &Manifest,
) -> Result<Option<Result<(), InstallError>>, InstallError> {
    Ok(volume
        .read_verification(version)?
        .filter(|r| r.tarball_sha256 == m.tarball.sha256)
        .map(|r| {
            if r.ok {
                Ok(())
            } else {
                Err(InstallError::Unverified {
                    version: version.to_string(),
                    detail: r.detail,
                })
            }
        }))
}

/// Why `--version` of the release does not say `version` (`None`: it does).
fn version_failure(release: &Path, version: &str) -> Result<Option<String>, InstallError> {
    let bin = release.join("concourse/bin/concourse");
    match run_version(&bin, VERSION_TIMEOUT) {
        Ok(p) if p == version || p.strip_prefix('v') == Some(version) => Ok(None),
        Ok(p) => Ok(Some(format!(
            "concourse --version printed {:?}, expected {version}",
            p.chars().take(80).collect::<String>()
        ))),
        Err(e @ InstallError::BinaryTimeout { .. }) => Err(e),
        Err(e) => Ok(Some(e.to_string())),
    }
}

/// Writes the verification record and turns a failure into [`InstallError::Unverified`].
fn record(
    lock: &InstallLock<'_>,
    version: &str,
    unit: &str,
    tarball_sha256: &str,
    failure: Option<String>,
) -> Result<(), InstallError> {
    lock.write_verification(&VerifyRecord {
        version: version.to_string(),
        ok: failure.is_none(),
        detail: failure.clone().unwrap_or_default(),
        tarball_sha256: tarball_sha256.to_string(),
        by: unit.to_string(),
        at: unix_now(),
    })?;
    match failure {
        None => Ok(()),
        Some(detail) => Err(InstallError::Unverified {
            version: version.to_string(),
            detail,
        }),
    }
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

/// Where the expected digests of a tarball come from.
pub(crate) struct Expected<'a> {
    /// Tarball file name, for messages.
    pub file: &'a str,
    /// The URL (redacted in messages) or `resource:<path>`.
    pub origin: &'a str,
    /// Upstream's `.sha1` (URL sources; the resource is trusted as the operator's choice).
    pub sha1: Option<&'a str>,
    /// A pinned sha256, checked in addition.
    pub sha256: Option<&'a str>,
    pub from_resource: bool,
}

/// Checks a fetched tarball's digests against `want`.
pub(crate) fn check_tarball(fetched: &Fetched, want: &Expected<'_>) -> Result<(), InstallError> {
    if let Some(sha1) = want.sha1 {
        check_hash(want, "sha1", sha1, &fetched.sha1)?;
    }
    if let Some(sha256) = want.sha256 {
        check_hash(want, "sha256", sha256, &fetched.sha256)?;
    }
    Ok(())
}

fn check_hash(
    want: &Expected<'_>,
    algorithm: &'static str,
    expected: &str,
    actual: &str,
) -> Result<(), InstallError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(InstallError::ChecksumMismatch {
            file: want.file.to_string(),
            origin: download::redact_url(want.origin),
            algorithm,
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
            from_resource: want.from_resource,
        })
    }
}

/// Nothing else ties an attached resource to a version: asks the unpacked binary in
/// `staging`. A binary that cannot run here (noexec mount, other architecture) is left
/// to [`verify_release`]; one that names another valid version is refused.
pub(crate) fn check_resource_version(
    staging: &Path,
    resource: &Path,
    version: &str,
) -> Result<(), InstallError> {
    let bin = staging.join("concourse/bin/concourse");
    if let Ok(found) = run_version(&bin, Duration::from_secs(10)) {
        let found = found.strip_prefix('v').unwrap_or(&found).to_string();
        if found != version && crate::config::is_valid_version(&found) {
            return Err(InstallError::ResourceVersionMismatch {
                path: resource.to_path_buf(),
                found,
                wanted: version.to_string(),
            });
        }
    }
    Ok(())
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
pub(crate) fn run_version(bin: &Path, timeout: Duration) -> Result<String, InstallError> {
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
                return Err(InstallError::BinaryTimeout {
                    path: bin.to_path_buf(),
                    secs: timeout.as_secs(),
                });
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
