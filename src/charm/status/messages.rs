//! The status catalogue: every workload status the charm can show, unit or application.
//!
//! Owns: the text of each status, with `{name}` for the parts that vary. Messages the charm
//! composes itself are rendered from here ([`Message::fill`]); messages other modules
//! compose (installer and volume errors, configuration errors, upgrade progress) are listed
//! with the text those modules produce, and the tests below render them to prove it.
//! Invariants: docs/troubleshooting.md has one heading per entry, `` `<kind>: <text>` `` with
//! each `{name}` written `<name>` (checked by tests/it/docs.rs), and every status the in-process
//! scenarios see matches an entry ([`find`]). Hazards: a new status needs an entry here and
//! a heading in the docs; `<…>` outside braces is literal text of the message itself.

use crate::juju::{Status, StatusKind};

/// One status message: its kind and its text with `{placeholders}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub kind: StatusKind,
    pub text: &'static str,
}

const fn blocked(text: &'static str) -> Message {
    Message {
        kind: StatusKind::Blocked,
        text,
    }
}

const fn waiting(text: &'static str) -> Message {
    Message {
        kind: StatusKind::Waiting,
        text,
    }
}

const fn maintenance(text: &'static str) -> Message {
    Message {
        kind: StatusKind::Maintenance,
        text,
    }
}

const fn active(text: &'static str) -> Message {
    Message {
        kind: StatusKind::Active,
        text,
    }
}

/// The text split at its placeholders: literal pieces, one more than placeholders.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push(&rest[..open]);
        rest = &rest[open + close + 1..];
    }
    out.push(rest);
    out
}

impl Message {
    /// The status with the placeholders filled with `args`, in order.
    pub fn fill(&self, args: &[&str]) -> Status {
        let pieces = pieces(self.text);
        debug_assert_eq!(pieces.len(), args.len() + 1, "{:?}", self.text);
        let mut out = String::from(pieces[0]);
        for (i, p) in pieces[1..].iter().enumerate() {
            out.push_str(args.get(i).copied().unwrap_or_default());
            out.push_str(p);
        }
        Status::new(self.kind, out)
    }

    /// The status of a message without placeholders.
    pub fn status(&self) -> Status {
        self.fill(&[])
    }

    /// The text as the docs quote it: `{name}` written `<name>`.
    pub fn documented(&self) -> String {
        self.text.replace('{', "<").replace('}', ">")
    }

    /// Whether `text` is this message with some values in its placeholders.
    pub fn matches(&self, text: &str) -> bool {
        let pieces = pieces(self.text);
        let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
        if pieces.len() == 1 {
            return text == first;
        }
        if text.len() < first.len() + last.len() || !text.starts_with(first) {
            return false;
        }
        if !text.ends_with(last) {
            return false;
        }
        // Leftmost matches of the middle pieces, between the first and the last.
        let mut rest = &text[first.len()..text.len() - last.len()];
        for p in &pieces[1..pieces.len() - 1] {
            match rest.find(p) {
                Some(i) => rest = &rest[i + p.len()..],
                None => return false,
            }
        }
        true
    }
}

// ----- Configuration -----
pub const INVALID_OPTION: Message = blocked("invalid {option}: {problem}; {fix}");

// ----- Storage volume -----
pub const STORAGE_NOT_ATTACHED: Message = blocked(
    "storage concourse-data is not attached; deploy with --storage concourse-data=<pool>,10G",
);
pub const VOLUME_MISSING: Message = blocked("storage volume {path} does not exist; attach the concourse-data storage or mount the shared directory there");
pub const VOLUME_NOT_A_DIRECTORY: Message =
    blocked("storage volume {path} is not a directory; concourse-data must be a filesystem");
pub const VOLUME_NOT_A_MOUNT_POINT: Message = blocked("storage volume {path} is not a mount point; mount the concourse-data volume (or the shared directory) there");
pub const VOLUME_READ_ONLY: Message =
    blocked("storage volume {path} is read-only; remount it read-write");
pub const VOLUME_PERMISSION_DENIED: Message = blocked(
    "cannot write to {path}: permission denied; give the charm (root) write access to the volume",
);
pub const VOLUME_TOO_SMALL: Message = blocked("storage volume {path} has {free} free but {needed} are needed for download and unpack; free space or grow the volume");
pub const VOLUME_FULL: Message = blocked("no space left on {path}; free space or grow the volume");
pub const VOLUME_NO_FLOCK: Message = blocked("the filesystem of {path} does not enforce flock ({detail}); use a filesystem with working locks (local, NFSv4, CephFS) or set shared-storage=none");
pub const VOLUME_IS_OWN_STORAGE: Message = blocked("shared-storage=shared but {path} is this unit's own Juju storage; mount the shared directory there (see docs/shared-storage.md)");
pub const VOLUME_NOT_SHARED: Message = blocked("shared-storage=shared but {path} is not shared with {units}; give every unit the same directory (see docs/shared-storage.md) or set shared-storage=none");
pub const WAITING_FOR_DOWNLOAD: Message =
    waiting("Waiting for {unit} to download v{version} ({percent})");
pub const WAITING_FOR_VOLUME: Message =
    waiting("Waiting for another unit to finish with the release volume (to install v{version})");
pub const LOCK_WAIT_GAVE_UP: Message =
    waiting("gave up after {seconds}s waiting for the install lock {path}");

// ----- Download and install -----
pub const DOWNLOADING: Message = maintenance("Downloading v{version} ({percent})");
pub const INSTALLING_RESOURCE: Message =
    maintenance("Installing v{version} from the concourse-release resource ({amount})");
pub const DOWNLOAD_RETRY: Message =
    maintenance("Download of v{version} interrupted; resuming (retry {n} of {m})");
pub const PUBLISHING: Message = maintenance("Publishing v{version}");
pub const RELEASE_NOT_FOUND: Message =
    blocked("release not found at {url} (HTTP {status}); check version and release-url");
pub const HTTP_TRANSIENT: Message = maintenance("{url} answered HTTP {status}; will retry");
pub const HTTP_REFUSED: Message =
    blocked("{url} answered HTTP {status}; check release-url and the proxy settings");
pub const DOWNLOAD_FAILED: Message = maintenance("download of {url} failed: {detail}; will retry");
pub const DOWNLOAD_TRUNCATED: Message =
    maintenance("download of {url} stopped at {got} of {expected} bytes; will resume");
pub const BAD_RANGE: Message =
    maintenance("{url} sent an unusable range response ({detail}); will restart the download");
pub const CHECKSUM_UNAVAILABLE: Message = blocked("cannot fetch the checksum {url} ({detail}); refusing to install an unverified release: check release-url, or attach the tarball as the concourse-release resource");
pub const CHECKSUM_RETRY: Message = maintenance("cannot fetch the checksum {url} ({detail}); refusing to install an unverified release: check release-url, or attach the tarball as the concourse-release resource");
pub const CHECKSUM_NOT_FOUND: Message = blocked("cannot fetch the checksum {url} ({detail}); refusing to install an unverified release: check version and release-url, or attach the tarball as the concourse-release resource");
pub const CHECKSUM_FILE_INVALID: Message =
    blocked("{url} is not a sha1 checksum file; check release-url");
pub const CHECKSUM_MISMATCH: Message = blocked(
    "checksum mismatch for {file} ({algorithm} expected {hex}, got {hex}); check release-url",
);
pub const RESOURCE_CHECKSUM_MISMATCH: Message = blocked("checksum mismatch for {file} ({algorithm} expected {hex}, got {hex}); re-attach the concourse-release resource");
pub const RESOURCE_UNREADABLE: Message = blocked("cannot read the concourse-release resource {path}: {error}; re-attach it with juju attach-resource");
pub const RESOURCE_EMPTY: Message = blocked("the concourse-release resource {path} is empty; attach the release tarball with juju attach-resource");
pub const RESOURCE_WRONG_VERSION: Message = blocked("the concourse-release resource {path} holds v{found}, not v{wanted}; attach the v{wanted} tarball or set version={found}");
pub const TARBALL_UNSAFE: Message = blocked("release tarball {file} is unsafe: entry {entry}: {reason}; nothing was installed, check release-url");
pub const TARBALL_INVALID: Message =
    blocked("release tarball {file} is not a valid .tgz ({detail}); check release-url");
pub const TARBALL_TOO_LARGE: Message =
    blocked("release tarball {file} is too large ({detail}); check release-url");
pub const RELEASE_URL_INVALID: Message =
    blocked("{url} is not a usable release URL ({reason}); check release-url");
pub const PROXY_INVALID: Message = blocked("the proxy setting {which} is not a valid URL; fix the model's juju-http-proxy/juju-https-proxy");
pub const RELEASE_CORRUPT: Message = blocked("release file {path} does not match MANIFEST: {detail}; remove the release directory to reinstall it");
pub const INSTALLED_DOES_NOT_VERIFY: Message =
    blocked("v{version} was installed but does not verify: {reason}");
pub const LATEST_LOOKUP_FAILED: Message =
    blocked("latest release lookup at {url} failed: {detail}; set version= to pin a release");
pub const INTERNAL_ERROR: Message = maintenance("internal error: {detail}");
pub const VOLUME_IO: Message = maintenance("cannot {operation} {path}: {error}");

// ----- Roles and relations -----
pub const WAITING_FOR_VERSION: Message =
    waiting("Waiting for the leader to choose the Concourse version");
pub const WAITING_FOR_WEB_UNIT: Message = waiting("Waiting for the leader to assign the web unit");
pub const NO_ROLE: Message = waiting("No role for this unit");
pub const NOTHING_REPORTED: Message = waiting("Waiting for the charm to configure this unit");
pub const WAITING_FOR_DB_RELATION: Message =
    waiting("Waiting for PostgreSQL relation (juju integrate {app}:postgresql postgresql)");
pub const WAITING_FOR_DB_ENDPOINTS: Message =
    waiting("Waiting for PostgreSQL to publish its endpoints");
pub const WAITING_FOR_DB_CREDENTIALS: Message = waiting("Waiting for PostgreSQL credentials");
pub const DB_ENDPOINTS_UNPARSABLE: Message =
    waiting("PostgreSQL endpoints {value} cannot be parsed");
pub const DB_NO_ENDPOINTS_WEB_RUNNING: Message = waiting(
    "PostgreSQL publishes no endpoints (no primary?); web keeps running with its last settings",
);
pub const OPTION_SECRET_UNREADABLE: Message = blocked(
    "cannot read the {option} secret {uri} ({why}); grant it: juju grant-secret <secret> {app}",
);
pub const OPTION_SECRET_NO_KEY: Message = blocked(
    "the {option} secret {uri} has no key {key}; juju update-secret <secret> {key}=<value>",
);
pub const OPTION_SECRET_INVALID: Message = blocked(
    "the {option} secret {uri} is not usable: {problem}; juju update-secret <secret> {key}=<value>",
);
pub const WAITING_FOR_ADMIN_PASSWORD: Message =
    waiting("Waiting for the leader to create the admin password");
pub const WAITING_FOR_WEB_KEYS: Message = waiting("Waiting for the leader to share the web keys");
pub const WAITING_FOR_TSA: Message = waiting("Waiting for web unit's TSA key");
pub const WAITING_FOR_TSA_RELATION: Message =
    waiting("Waiting for web unit's TSA key (juju integrate <web-app>:tsa {app}:flight)");
pub const RETIRING: Message = maintenance("Retiring worker and stopping services");

// ----- Upgrades -----
pub const UPGRADE_PREPARING: Message =
    maintenance("Upgrading to v{version}: waiting for {n} of {m} units to prepare");
pub const UPGRADE_PREPARED: Message =
    maintenance("Upgrading to v{version}: all {n} units prepared");
pub const UPGRADE_DOWNLOADING: Message =
    maintenance("Upgrading to v{version}: downloading the release");
pub const UPGRADE_SWITCHING_WEB: Message = maintenance("Upgrading to v{version}: switching web");
pub const UPGRADE_SWITCHING_WORKERS: Message =
    maintenance("Upgrading to v{version}: waiting for {n} of {m} workers");
pub const DRAINING_FOR_UPGRADE: Message = maintenance("Draining worker for upgrade to v{version}");
pub const WEB_HELD: Message = blocked("Web stays on v{version}: {reason}");
pub const ROLLBACK_SWITCHING_WEB: Message =
    maintenance("Rolling back to v{version}: switching web");
pub const ROLLBACK_SWITCHING_WORKERS: Message =
    maintenance("Rolling back to v{version}: waiting for {n} of {m} workers");
pub const APP_UPGRADING: Message = maintenance("{progress} (generation {n}, phase {phase})");
pub const APP_UPGRADE_FAILED: Message = blocked("Upgrade failed: {error}; running v{version}. Fix the cause, then run: juju run <leader> upgrade version={version}");
pub const APP_CHOOSING_VERSION: Message = waiting("Choosing the Concourse version");

// ----- Ready -----
pub const WEB_READY: Message = active("Web ready (v{version}) {url}");
pub const WORKER_READY: Message = active("Worker ready (v{version})");
pub const APP_READY: Message = active("v{version} on {n} of {m} units");
pub const APP_READY_OPTION_STALE: Message = active("v{version} on {n} of {m} units; the version option says {option}; align it with: juju config {app} version={version}");
pub const APP_UNITS_BEHIND: Message =
    blocked("v{version} on {n} of {m} units; {problem}; tried again on update-status");
pub const APP_DOWNGRADE_REFUSED: Message = blocked("version={option} is older than the running v{version}: not downgrading; set version={version} or run: juju run {app}/leader upgrade version={option} allow-downgrade=true");

// ----- Trust: the mirror, the volume, keys and secrets -----
pub const RELEASE_URL_PLAIN_HTTP: Message = active("release-url is plain http, so a tampered download is caught only by a .sha1 from the same server: use https, or pin the tarball with release-sha256");
pub const RELEASE_SHA256_MISSING: Message = blocked("release-sha256 pins no digest for v{version}; add {version}=<sha256> to release-sha256 (pins are all or nothing)");
pub const TLS_VERIFICATION_FAILED: Message = blocked("TLS verification of {url} failed ({detail}); if a proxy inspects TLS, set release-ca to its CA certificate (PEM), else fix the mirror's certificate");
pub const REDIRECT_REFUSED: Message = blocked(
    "{url}: {detail}; refusing to leave https: fix the mirror, or set release-url to where it redirects",
);
pub const GITHUB_TOKEN_SECRET_UNREADABLE: Message = blocked(
    "cannot read the github-token-secret {uri} ({why}); grant it: juju grant-secret <secret> {app}",
);
pub const GITHUB_TOKEN_SECRET_NO_TOKEN: Message = blocked(
    "the github-token-secret {uri} has no key token; juju update-secret <secret> token=<token>",
);
pub const KEY_INVALID: Message =
    blocked("{path} is not a valid public key; delete it so it is generated again");
pub const KEY_NOT_WRITTEN: Message =
    blocked("{path} was not written by generate-key; check the release's concourse binary");
pub const KEYGEN_FAILED: Message = blocked(
    "cannot generate {path}: {error}; check that the release's concourse runs on this machine",
);
pub const USER_CREATE_FAILED: Message =
    blocked("cannot create the {user} system user: {why}; check useradd on the unit");
pub const LOCAL_DISK_FULL: Message =
    blocked("no space left on {path}; free space on the unit's disk");
pub const LOCAL_READ_ONLY: Message =
    blocked("{path} is on a read-only filesystem; remount it read-write");
pub const INVALID_VERSION: Message =
    blocked("{version} is not a Concourse version (expected e.g. 7.14.3)");
pub const INVALID_UNIT_NAME: Message =
    blocked("{unit} is not a Juju unit name (expected <application>/<number>)");
pub const WAITING_FOR_RELEASE_DIGESTS: Message =
    waiting("Waiting for the leader to record the digests of v{version}");
pub const RELEASE_CHANGED: Message = blocked(
    "v{version} on the volume changed after it was verified ({what}); remove {path} to reinstall it",
);
pub const VERSION_TIMEOUT: Message =
    maintenance("{path} --version did not finish within {secs}s; will retry");
pub const VOLUME_ROOT_SQUASHED: Message = blocked("files created on {path} belong to uid {uid}, not to the charm (root): the volume squashes root (NFS root_squash?), so others could replace what root runs; export it with no_root_squash to the units only, or set shared-storage=none (see docs/shared-storage.md)");
pub const VOLUME_FOREIGN_OWNER: Message = blocked("{path} on the volume belongs to uid {uid}, not root: its owner could change what root runs; chown -R root:root the volume (see docs/shared-storage.md)");
pub const VOLUME_WRITABLE_BY_OTHERS: Message = blocked("{path} on the volume is writable by group or others (mode {mode}); run chmod -R go-w on the volume (see docs/shared-storage.md)");
pub const RELEASE_CA_INVALID: Message = blocked("release-ca holds no usable CA certificate ({detail}); set it to the PEM certificate of the mirror's or proxy's CA");

/// Every entry, in the order of docs/troubleshooting.md.
pub const ALL: &[Message] = &[
    INVALID_OPTION,
    STORAGE_NOT_ATTACHED,
    VOLUME_MISSING,
    VOLUME_NOT_A_DIRECTORY,
    VOLUME_NOT_A_MOUNT_POINT,
    VOLUME_READ_ONLY,
    VOLUME_PERMISSION_DENIED,
    VOLUME_TOO_SMALL,
    VOLUME_FULL,
    VOLUME_NO_FLOCK,
    VOLUME_IS_OWN_STORAGE,
    VOLUME_NOT_SHARED,
    WAITING_FOR_DOWNLOAD,
    WAITING_FOR_VOLUME,
    LOCK_WAIT_GAVE_UP,
    DOWNLOADING,
    INSTALLING_RESOURCE,
    DOWNLOAD_RETRY,
    PUBLISHING,
    RELEASE_NOT_FOUND,
    HTTP_TRANSIENT,
    HTTP_REFUSED,
    DOWNLOAD_FAILED,
    DOWNLOAD_TRUNCATED,
    BAD_RANGE,
    CHECKSUM_UNAVAILABLE,
    CHECKSUM_RETRY,
    CHECKSUM_NOT_FOUND,
    CHECKSUM_FILE_INVALID,
    CHECKSUM_MISMATCH,
    RESOURCE_CHECKSUM_MISMATCH,
    RESOURCE_UNREADABLE,
    RESOURCE_EMPTY,
    RESOURCE_WRONG_VERSION,
    TARBALL_UNSAFE,
    TARBALL_INVALID,
    TARBALL_TOO_LARGE,
    RELEASE_URL_INVALID,
    PROXY_INVALID,
    RELEASE_CORRUPT,
    INSTALLED_DOES_NOT_VERIFY,
    LATEST_LOOKUP_FAILED,
    INTERNAL_ERROR,
    VOLUME_IO,
    WAITING_FOR_VERSION,
    WAITING_FOR_WEB_UNIT,
    NO_ROLE,
    NOTHING_REPORTED,
    WAITING_FOR_DB_RELATION,
    WAITING_FOR_DB_ENDPOINTS,
    WAITING_FOR_DB_CREDENTIALS,
    DB_ENDPOINTS_UNPARSABLE,
    DB_NO_ENDPOINTS_WEB_RUNNING,
    OPTION_SECRET_UNREADABLE,
    OPTION_SECRET_NO_KEY,
    OPTION_SECRET_INVALID,
    WAITING_FOR_ADMIN_PASSWORD,
    WAITING_FOR_WEB_KEYS,
    WAITING_FOR_TSA,
    WAITING_FOR_TSA_RELATION,
    RETIRING,
    UPGRADE_PREPARING,
    UPGRADE_PREPARED,
    UPGRADE_DOWNLOADING,
    UPGRADE_SWITCHING_WEB,
    UPGRADE_SWITCHING_WORKERS,
    DRAINING_FOR_UPGRADE,
    WEB_HELD,
    ROLLBACK_SWITCHING_WEB,
    ROLLBACK_SWITCHING_WORKERS,
    APP_UPGRADING,
    APP_UPGRADE_FAILED,
    APP_CHOOSING_VERSION,
    WEB_READY,
    WORKER_READY,
    APP_READY,
    APP_READY_OPTION_STALE,
    APP_UNITS_BEHIND,
    APP_DOWNGRADE_REFUSED,
    RELEASE_URL_PLAIN_HTTP,
    RELEASE_SHA256_MISSING,
    TLS_VERIFICATION_FAILED,
    REDIRECT_REFUSED,
    RELEASE_CA_INVALID,
    GITHUB_TOKEN_SECRET_UNREADABLE,
    GITHUB_TOKEN_SECRET_NO_TOKEN,
    KEY_INVALID,
    KEY_NOT_WRITTEN,
    KEYGEN_FAILED,
    USER_CREATE_FAILED,
    LOCAL_DISK_FULL,
    LOCAL_READ_ONLY,
    INVALID_VERSION,
    INVALID_UNIT_NAME,
    WAITING_FOR_RELEASE_DIGESTS,
    RELEASE_CHANGED,
    VERSION_TIMEOUT,
    VOLUME_ROOT_SQUASHED,
    VOLUME_FOREIGN_OWNER,
    VOLUME_WRITABLE_BY_OTHERS,
    TLS_WAITING_FOR_CERTIFICATE,
    TLS_EXTERNAL_URL_NOT_HTTPS,
    TLS_PORT_IS_WEB_PORT,
];

// ----- Observability and TLS (notes on the active status) -----
pub const TLS_WAITING_FOR_CERTIFICATE: Message =
    active("waiting for a TLS certificate from {app}; web serves http until it arrives");
pub const TLS_PORT_IS_WEB_PORT: Message = active(
    "a TLS certificate is ready but tls-port {port} is web-port too: set another tls-port to serve it",
);
pub const TLS_EXTERNAL_URL_NOT_HTTPS: Message = active(
    "a TLS certificate is ready but external-url is not https: set an https external-url to serve it",
);

/// The entry a status (`kind` as `status-set` spells it) is an instance of. When several
/// match, the one with the most literal text.
pub fn find(kind: &str, text: &str) -> Option<&'static Message> {
    ALL.iter()
        .filter(|m| m.kind.as_str() == kind && m.matches(text))
        .max_by_key(|m| pieces(m.text).iter().map(|p| p.len()).sum::<usize>())
}

#[cfg(test)]
mod tests;
