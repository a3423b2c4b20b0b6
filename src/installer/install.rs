//! Installing a release on the volume exactly once: [`ensure_release`].
//!
//! Owns: the install protocol (see `docs/architecture.md#install-protocol`): the
//! lock-free fast path, taking the install lock (waiting with the volume's backoff),
//! re-checking under it, cleaning a dead writer's leftovers, the download or resource
//! attempt(s) with the retry decision of `super::retry`, and publication.
//! Invariants: everything after the fast path runs under the install lock; whatever a
//! previous holder left (marker, staging, temp files) is a dead writer's; on failure no
//! staging dir or marker of ours outlives the call and `releases/` is untouched.
//! Hazards: may block up to `lock_wait` while another unit downloads, and sleeps between
//! retries (calling `events` so the caller can update its status).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::fetch::{self, Fetched};
use super::manifest::{hex, Manifest, TarballInfo};
use super::publish::{fresh_staging, publish};
use super::retry::{self, Failure, Next, RetryState};
use super::trust::ExecDigests;
use super::verify::{self, Expected};
use super::{download, InstallError, InstallEvent, InstallOptions, InstallReport, Outcome, Source};
use crate::checkpoint::checkpoint;
use crate::storage_coordinator::{
    atomic, layout, progress::unix_now, remove_tree, Cleanup, FailureRecord, InstallLock,
    ProgressMarker, StorageError, Throttle, Volume,
};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;

/// Makes sure `releases/<version>` exists on `volume`, downloading it at most once per
/// volume however many units call this at the same time. See the module docs for the
/// guarantees; `events` receives waiting/progress updates.
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
    let file_name = tarball_file_name(source, version);
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

/// The download file name: the URL's last segment when safe, the resource's file name
/// when safe, else `concourse-<version>.tgz`.
fn tarball_file_name(source: &Source, version: &str) -> String {
    match source {
        Source::Url(url) => download::download_file_name(url, version),
        Source::Resource(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| layout::is_safe_file_name(n))
            .unwrap_or_else(|| format!("concourse-{version}.tgz")),
    }
}

/// Downloads (or reads the resource), verifies and publishes, holding `lock`.
fn install_locked(
    lock: &InstallLock<'_>,
    version: &str,
    source: &Source,
    opts: &InstallOptions,
    file_name: &str,
    staging: &Path,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<InstallReport, InstallError> {
    let layout = lock.volume().layout();
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
        max_download: opts
            .max_download
            .unwrap_or_else(|| download_cap(lock.volume())),
    };
    // Tell waiting units who works on what before the first byte arrives.
    let kept = match source {
        Source::Url(_) => fs::metadata(layout.partial_file(file_name)).map_or(0, |m| m.len()),
        Source::Resource(_) => 0,
    };
    lock.write_progress(&ProgressMarker::new(version, &opts.unit, kept, None))?;
    let (fetched, origin, attempts) = fetch_source(&mut job, source, opts, events)?;
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
    let manifest = manifest(version, &opts.unit, &tarball, &fetched);
    publish(staging, &release, &fetched.unpacked, &manifest)?;
    checkpoint("install.published");
    let exec = ExecDigests::from_entries(&fetched.unpacked.entries, &fetched.sha256);
    lock.clear_failure(version)?;
    verify::verify_published(lock, version, &opts.unit, &exec)?;
    after_publish(
        lock,
        version,
        opts,
        (!job.from_resource).then_some(file_name),
    )?;
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
        exec,
    })
}

/// What an attempt fetched from: the source's identity (a hash: a URL may hold
/// credentials) and the digests the tarball had to have.
pub(crate) struct Attempt {
    source: String,
    sha1: Option<String>,
    sha256: Option<String>,
}

impl Attempt {
    /// The attempt at the source `identity`, unless it failed before just so.
    fn start(
        job: &fetch::Job<'_>,
        identity: &str,
        sha1: Option<&str>,
        opts: &InstallOptions,
    ) -> Result<Attempt, InstallError> {
        let a = Attempt {
            source: hex(&Sha256::digest(identity.as_bytes())),
            sha1: sha1.map(str::to_string),
            sha256: opts
                .expected_sha256
                .as_ref()
                .map(|p| p.to_ascii_lowercase()),
        };
        a.remembered(job.lock, job.version)?;
        Ok(a)
    }

    /// The failure an earlier attempt at the same tarball ended with, if any: it is not
    /// fetched again (only the cheap `.sha1` was).
    fn remembered(&self, lock: &InstallLock<'_>, version: &str) -> Result<(), InstallError> {
        match lock.volume().read_failure(version)? {
            Some(r)
                if r.same_attempt(&self.source, self.sha1.as_deref(), self.sha256.as_deref()) =>
            {
                tracing::info!(
                    "not fetching v{version} again: it failed before with the same source and checksum ({})",
                    r.message
                );
                Err(InstallError::Remembered { message: r.message })
            }
            _ => Ok(()),
        }
    }
}

/// Records that `attempt` failed with `e` (best effort: a failure to record only means
/// the next hook tries again).
fn remember_failure(
    lock: &InstallLock<'_>,
    version: &str,
    unit: &str,
    a: Attempt,
    e: &InstallError,
) {
    let r = FailureRecord {
        version: version.to_string(),
        source: a.source,
        sha1: a.sha1,
        sha256: a.sha256,
        message: e.status_message(),
        by: unit.to_string(),
        at: unix_now(),
    };
    if let Err(err) = lock.write_failure(&r) {
        tracing::warn!("cannot remember the failed install of v{version}: {err}");
    }
}

/// Records `.installed_version` (when asked) and removes the partial download of
/// `downloaded` (a URL source's file name) now that its release is published.
fn after_publish(
    lock: &InstallLock<'_>,
    version: &str,
    opts: &InstallOptions,
    downloaded: Option<&str>,
) -> Result<(), InstallError> {
    if opts.set_installed_version {
        lock.set_installed_version(version)?;
    }
    if let Some(file_name) = downloaded {
        let partial = lock.volume().layout().partial_file(file_name);
        if let Err(e) = atomic::remove_durably(&partial) {
            tracing::warn!(
                "published v{version} but cannot remove {}: {e}",
                partial.display()
            );
        }
    }
    Ok(())
}

/// Fetches and unpacks the tarball from `source`: the fetched tree, where it came from
/// (redacted) and how many attempts it took. A failure about the tarball itself is
/// remembered on the volume, so it is not fetched again for nothing.
fn fetch_source(
    job: &mut fetch::Job<'_>,
    source: &Source,
    opts: &InstallOptions,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<(Fetched, String, u32), InstallError> {
    let mut attempt: Option<Attempt> = None;
    let fetched = match source {
        Source::Url(url) => fetch_from_url(job, url, opts, &mut attempt, events)
            .map(|(f, n)| (f, download::redact_url(url), n)),
        Source::Resource(path) => fetch_from_resource(job, path, opts, &mut attempt, events)
            .map(|f| (f, format!("resource:{}", path.display()), 1)),
    };
    if let Err(e) = &fetched {
        if let Some(a) = attempt.filter(|_| e.is_about_the_tarball()) {
            remember_failure(job.lock, job.version, &opts.unit, a, e);
        }
    }
    fetched
}

/// Downloads `url` into the staging dir, resuming a kept partial, verified against
/// upstream's `.sha1` (and the pinned sha256); retries per [`retry::decide`]. Returns
/// what was fetched and the number of attempts.
fn fetch_from_url(
    job: &mut fetch::Job<'_>,
    url: &str,
    opts: &InstallOptions,
    attempt: &mut Option<Attempt>,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<(Fetched, u32), InstallError> {
    download::parse_url(url)?;
    let client = download::build_client(&opts.http)?;
    let sha1 = download::fetch_sha1(&client, url)?;
    *attempt = Some(Attempt::start(
        job,
        &format!("url:{url}"),
        Some(&sha1),
        opts,
    )?);
    let want = Expected {
        file: job.label,
        origin: url,
        sha1: Some(&sha1),
        sha256: opts.expected_sha256.as_deref(),
        from_resource: false,
    };
    let partial = job.lock.volume().layout().partial_file(job.label);
    let policy = retry::Policy {
        retries: opts.retries,
        backoff: opts.retry_backoff,
    };
    let mut state = RetryState::default();
    let mut from_zero = false;
    let mut attempts = 0u32;
    loop {
        // Bounded: retry::decide allows at most `retries` retries and one restart.
        attempts = attempts.saturating_add(1);
        fresh_staging(job.staging)?;
        let mut resumed_from = 0u64;
        let r = fetch::fetch_url(
            job,
            &client,
            url,
            &partial,
            from_zero,
            &mut resumed_from,
            events,
        )
        .and_then(|f| {
            checkpoint("install.downloaded");
            verify::check_tarball(&f, &want).map(|()| f)
        });
        let e = match r {
            Ok(f) => return Ok((f, attempts)),
            Err(e) => e,
        };
        let decision = retry::decide(Failure::of(&e, resumed_from), &mut state, &policy);
        if decision.discard_partial {
            // The bytes are wrong: never resume from them again.
            let _ = atomic::remove_durably(&partial);
        }
        match decision.next {
            Next::RestartFromZero => {
                tracing::warn!("{e}; downloading again from the start");
                from_zero = true;
            }
            Next::Retry {
                retry,
                of,
                delay,
                from_zero: z,
            } => {
                events(&InstallEvent::Retrying {
                    version: job.version.to_string(),
                    attempt: retry,
                    of,
                    error: e.to_string(),
                });
                std::thread::sleep(delay);
                from_zero = z;
            }
            Next::GiveUp => return Err(e),
        }
    }
}

/// Unpacks the attached resource into the staging dir (no retries: a local file), checks
/// the pinned sha256 and the binary's version.
fn fetch_from_resource(
    job: &mut fetch::Job<'_>,
    path: &Path,
    opts: &InstallOptions,
    attempt: &mut Option<Attempt>,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<Fetched, InstallError> {
    // A new resource is a new file: its size or modification time differs.
    let stamp = fs::metadata(path)
        .map(|m| format!("{}:{}:{}", m.len(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    let identity = format!("resource:{}:{stamp}", path.display());
    *attempt = Some(Attempt::start(job, &identity, None, opts)?);
    fresh_staging(job.staging)?;
    let f = fetch::fetch_resource(job, path, events)?;
    checkpoint("install.downloaded");
    let origin = format!("resource:{}", path.display());
    let want = Expected {
        file: job.label,
        origin: &origin,
        sha1: None,
        sha256: opts.expected_sha256.as_deref(),
        from_resource: true,
    };
    verify::check_tarball(&f, &want)?;
    verify::check_resource_version(job.staging, path, job.version)?;
    Ok(f)
}

/// The MANIFEST of a release built from `fetched`, installed by `unit` now.
fn manifest(version: &str, unit: &str, tarball: &TarballInfo, fetched: &Fetched) -> Manifest {
    Manifest {
        format: Manifest::FORMAT,
        version: version.to_string(),
        installed_by: unit.to_string(),
        installed_at: unix_now(),
        tarball: tarball.clone(),
        entries: fetched.unpacked.entries.clone(),
    }
}

/// Three times the largest tarball installed on the volume so far (MANIFEST), else
/// [`super::DEFAULT_MAX_DOWNLOAD`].
fn download_cap(volume: &Volume) -> u64 {
    let largest = volume
        .published_versions()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| Manifest::read(&volume.layout().release_dir(v)).ok())
        .map(|m| m.tarball.size)
        .max();
    largest.map_or(super::DEFAULT_MAX_DOWNLOAD, |s| s.saturating_mul(3))
}

fn installed_by(release: &Path) -> Option<String> {
    Manifest::read(release).ok().map(|m| m.installed_by)
}
