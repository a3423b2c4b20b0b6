//! The installer's errors and how the charm reacts to each.
//!
//! Owns: [`InstallError`], its wording (each message names the URL or path and says
//! what to do) and its classification ([`InstallError::class`]: permanent → `blocked`,
//! transient → fail the hook so Juju retries it, waiting → `waiting`).
//! Invariants: no message carries credentials (URLs are redacted by whoever builds the
//! error) or a secret; a 404/410 and every content error is permanent, network
//! trouble is transient.

use std::io;
use std::path::PathBuf;

use super::download;
use crate::storage_coordinator::{ErrorClass, StorageError};

/// Errors of the installer. Each names the URL/path and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{url} is not a usable release URL ({reason}); check release-url")]
    InvalidUrl { url: String, reason: String },
    #[error("the proxy setting {which} is not a valid URL; fix the model's juju-http-proxy/juju-https-proxy")]
    InvalidProxy { which: &'static str },
    #[error("TLS verification of {url} failed ({detail}); if a proxy inspects TLS, set release-ca to its CA certificate (PEM), else fix the mirror's certificate")]
    Tls { url: String, detail: String },
    #[error("{url}: {detail}; refusing to leave https: fix the mirror, or set release-url to where it redirects")]
    RedirectRefused { url: String, detail: String },
    #[error("release-ca holds no usable CA certificate ({detail}); set it to the PEM certificate of the mirror's or proxy's CA")]
    InvalidCa { detail: String },
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
    #[error("{path} --version did not finish within {secs}s; will retry")]
    BinaryTimeout { path: PathBuf, secs: u64 },
    #[error("v{version} was installed but does not verify: {detail}")]
    Unverified { version: String, detail: String },
    /// A failure remembered from an earlier attempt with the same source and digests
    /// (`crate::storage_coordinator::FailureRecord`): its message as it was.
    #[error("{message}")]
    Remembered { message: String },
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
            | BinaryTimeout { .. }
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

    /// A failure of the tarball itself, worth remembering so that the same tarball is
    /// not fetched again (`crate::storage_coordinator::FailureRecord`).
    pub(crate) fn is_about_the_tarball(&self) -> bool {
        self.is_content_error()
            || matches!(
                self,
                InstallError::ChecksumMismatch { .. }
                    | InstallError::ResourceVersionMismatch { .. }
            )
    }

    /// A problem with the tarball's content (as opposed to its transport).
    pub(crate) fn is_content_error(&self) -> bool {
        matches!(
            self,
            InstallError::UnsafeEntry { .. }
                | InstallError::BadArchive { .. }
                | InstallError::TooLarge { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
