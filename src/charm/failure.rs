//! Permanent versus transient: what a hook does with an error it ends with.
//!
//! Owns: [`CharmError::class`] and [`settle`]. A permanent error (retrying cannot fix it
//! until the operator acts: an invalid public key, a `generate-key` that fails, a full or
//! read-only disk or volume, an invalid version, unsafe archive content, a certificate
//! that does not verify) becomes a `blocked` status naming the cause and the fix, and
//! the hook exits 0; a transient one (a hook tool, the network, systemd, an I/O hiccup)
//! fails the hook so Juju retries it.
//! Invariants: the blocked text is the specific error's own message (it says what to
//! do), without the generic wrapper of `CharmError`; the next hook (update-status at the
//! latest) runs the reconcile again, so a fixed cause clears by itself.
//! Hazards: a permanent error ends the hook early: nothing buffered for relation data is
//! written, exactly as if it had failed.

use std::io;

use nix::errno::Errno;
use tracing::warn;

use super::release::ReleaseError;
use super::CharmError;
use crate::host::ProvisionError;
use crate::juju::{Juju, Status};
use crate::keys::KeyError;
use crate::service::ServiceError;
use crate::storage_coordinator::ErrorClass;
use crate::web::WebError;
use crate::worker::WorkerError;

impl CharmError {
    /// How the hook should end with this error.
    pub fn class(&self) -> ErrorClass {
        if self.waiting_for().is_some() {
            ErrorClass::Waiting
        } else if self.permanent_cause().is_some() {
            ErrorClass::Permanent
        } else {
            ErrorClass::Transient
        }
    }

    /// The status text of an error that only waits for another unit (`None`: not one).
    pub fn waiting_for(&self) -> Option<String> {
        match self {
            CharmError::Release(ReleaseError::Untrusted { version }) => Some(
                super::status::messages::WAITING_FOR_RELEASE_DIGESTS
                    .fill(&[version])
                    .message,
            ),
            _ => None,
        }
    }

    /// The status text of a permanent error (its cause and fix), `None` when transient.
    pub fn permanent_cause(&self) -> Option<String> {
        match self {
            CharmError::Web(WebError::Key(e)) | CharmError::Worker(WorkerError::Key(e)) => {
                key_cause(e)
            }
            CharmError::Web(WebError::User(e @ ProvisionError::User { .. })) => Some(e.to_string()),
            CharmError::Web(WebError::Service(e))
            | CharmError::Worker(WorkerError::Service(e))
            | CharmError::Service(e) => match e {
                ServiceError::Write { path, source } => local_io(path, source),
                ServiceError::Manager(_) => None,
            },
            CharmError::Worker(WorkerError::Write { path, source }) => local_io(path, source),
            CharmError::Release(ReleaseError::Storage(e)) => {
                (e.class() == ErrorClass::Permanent).then(|| e.to_string())
            }
            CharmError::Release(ReleaseError::Install(e)) => {
                (e.class() == ErrorClass::Permanent).then(|| e.status_message())
            }
            CharmError::Release(ReleaseError::Pointer { link, source, .. }) => {
                local_io(link, source)
            }
            CharmError::Release(e @ ReleaseError::Changed { .. }) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// A key that cannot become right by retrying: invalid, not written, or a generator
/// that fails (it exited non-zero, or cannot run at all here).
fn key_cause(e: &KeyError) -> Option<String> {
    match e {
        KeyError::Invalid { .. } | KeyError::Missing { .. } => Some(e.to_string()),
        KeyError::Generate { source, .. } => {
            let always = match source {
                ProvisionError::KeyGen { .. } => true,
                ProvisionError::Spawn { source: io, .. } => matches!(
                    errno(io),
                    Some(Errno::ENOENT | Errno::EACCES | Errno::ENOEXEC)
                ),
                ProvisionError::User { .. } => false,
            };
            always.then(|| {
                format!(
                    "{}; check that the release's concourse runs on this machine",
                    crate::error_chain(e)
                )
            })
        }
        KeyError::Io { path, source } => local_io(path, source),
    }
}

/// A full or read-only local disk, worded with its fix.
fn local_io(path: &std::path::Path, e: &io::Error) -> Option<String> {
    let path = path.display();
    match errno(e)? {
        Errno::ENOSPC | Errno::EDQUOT => Some(format!(
            "no space left on {path}; free space on the unit's disk"
        )),
        Errno::EROFS => Some(format!(
            "{path} is on a read-only filesystem; remount it read-write"
        )),
        _ => None,
    }
}

fn errno(e: &io::Error) -> Option<Errno> {
    e.raw_os_error().map(Errno::from_raw)
}

/// Ends a hook: a permanent error becomes a `blocked` status and `Ok` (the hook exits 0);
/// anything else is returned as it is.
pub fn settle(juju: &Juju, result: Result<(), CharmError>) -> Result<(), CharmError> {
    let Err(e) = result else {
        return Ok(());
    };
    if let Some(why) = e.waiting_for() {
        juju.status_set(&Status::waiting(why), false)?;
        return Ok(());
    }
    let Some(cause) = e.permanent_cause() else {
        return Err(e);
    };
    warn!(
        "{}; blocked until the cause is fixed (checked again every hook)",
        crate::error_chain(&e)
    );
    juju.status_set(&Status::blocked(cause), false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::installer::InstallError;
    use crate::storage_coordinator::StorageError;
    use std::path::PathBuf;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn permanent_and_transient_errors() {
        let p = || PathBuf::from("/var/lib/concourse-web/keys/tsa_host_key");
        let keygen = KeyError::Generate {
            path: p(),
            source: ProvisionError::KeyGen {
                path: "/c/bin/concourse".into(),
                stderr: "exec format error".into(),
            },
        };
        let permanent: Vec<CharmError> = vec![
            CharmError::Web(WebError::Key(KeyError::Invalid { path: p() })),
            CharmError::Worker(WorkerError::Key(KeyError::Missing { path: p() })),
            CharmError::Web(WebError::Key(keygen)),
            CharmError::Service(ServiceError::Write {
                path: "/etc/concourse/web.env".into(),
                source: os(nix::libc::ENOSPC),
            }),
            CharmError::Release(ReleaseError::Storage(StorageError::ReadOnly {
                path: "/v".into(),
            })),
            CharmError::Release(ReleaseError::Storage(StorageError::InvalidVersion {
                version: "../x".into(),
            })),
            CharmError::Release(ReleaseError::Install(InstallError::Tls {
                url: "https://m/x".into(),
                detail: "invalid peer certificate: UnknownIssuer".into(),
            })),
        ];
        for e in &permanent {
            assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
            let cause = e.permanent_cause().unwrap();
            assert!(!cause.starts_with("setting up"), "{cause}");
        }
        let transient: Vec<CharmError> = vec![
            CharmError::Service(ServiceError::Write {
                path: "/etc/concourse/web.env".into(),
                source: os(nix::libc::EIO),
            }),
            CharmError::Web(WebError::Key(KeyError::Generate {
                path: p(),
                source: ProvisionError::Spawn {
                    path: "/c".into(),
                    source: os(nix::libc::EAGAIN),
                },
            })),
            CharmError::Release(ReleaseError::Install(InstallError::Network {
                url: "u".into(),
                detail: "reset".into(),
            })),
            CharmError::Workload("x".into()),
        ];
        for e in &transient {
            assert_eq!(e.class(), ErrorClass::Transient, "{e:?}");
        }
    }
}
