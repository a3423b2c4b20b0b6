//! Installing a Concourse release on the volume exactly once, checking an installed
//! release, pruning unused ones, and finding the latest version.
//!
//! Modules, one job each:
//! - [`install`]: [`ensure_release`], the install protocol under the volume's lock;
//! - `retry`: the pure decision after a failed attempt;
//! - `fetch` (download → hash → unpack pipeline of one attempt), [`download`] (HTTP),
//!   [`unpack`] (defensive tar extraction);
//! - [`verify`]: digests, the resource's version, [`verify_release`];
//! - `publish`: staging dirs and the publishing rename;
//! - [`prune`]: pruning unused releases ([`prune_releases`]);
//! - [`manifest`]: the MANIFEST format; [`latest`]: the "latest release" lookup;
//! - [`error`] ([`InstallError`] and its classification), [`report`] (events, outcomes).
//!
//! Invariants (see `docs/architecture.md#install-protocol`):
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
//! - Crash checkpoints (`crate::checkpoint`: `install.*`, `prune.*`) mark the points
//!   where the tests kill an install; a kill anywhere leaves either no release or a
//!   complete one.
//!
//! Hazards: `ensure_release` may block up to `lock_wait` while another unit downloads
//! (calling the event callback so the caller can update its status). Units run from
//! `releases/<version>`: prune only versions no unit runs (prune also keeps every
//! version recorded in `units/*/state.json` and `.installed_version`).

pub mod download;
pub mod error;
mod fetch;
pub mod install;
pub mod latest;
pub mod manifest;
pub mod prune;
mod publish;
pub mod report;
mod retry;
pub mod trust;
pub mod unpack;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use crate::storage_coordinator::Backoff;

pub use download::HttpOptions;
pub use error::InstallError;
pub use install::ensure_release;
pub use latest::{latest_version, resolve_latest, ResolvedLatest, LATEST_CACHE_TTL};
pub use manifest::{Manifest, TarballInfo, VerifyMode};
pub use prune::{prune_releases, PruneReport};
pub use report::{InstallEvent, InstallReport, Outcome};
pub use unpack::UnpackLimits;
pub use verify::{ensure_verified, verify_release, verify_release_with_timeout, VerifyReport};

/// The download cap without a `Content-Length` and without an earlier install to compare
/// with: three times 1 GiB (a release tarball is a few hundred MiB).
pub const DEFAULT_MAX_DOWNLOAD: u64 = 3 << 30;

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
    /// Delays between those attempts.
    pub retry_backoff: Backoff,
    /// A pinned sha256 of the tarball (lowercase hex), checked in addition to `.sha1`.
    pub expected_sha256: Option<String>,
    /// Unpacked size estimate as a multiple of the tarball size, for the space check
    /// (the download plus 1.2 x its size).
    pub unpack_factor: f64,
    pub limits: UnpackLimits,
    /// The most a download may bring when the server does not say its size
    /// (`Content-Length`); `None`: three times the largest tarball installed on the volume
    /// before, or [`DEFAULT_MAX_DOWNLOAD`].
    pub max_download: Option<u64>,
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
            retry_backoff: Backoff::DOWNLOAD_RETRY,
            expected_sha256: None,
            unpack_factor: 1.2,
            limits: UnpackLimits::default(),
            max_download: None,
            set_installed_version: false,
            progress_percent: 1,
            progress_interval: Duration::from_secs(2),
        }
    }
}
