//! Users and keys on the machine: the service user and `concourse generate-key`.
//!
//! Owns: creating the system user a service runs as, the owner of the files the charm
//! writes for itself, and running the release's key generator. Invariants: a user is looked
//! up through NSS (`nix::unistd::User`), never by parsing `/etc/passwd`; `useradd` runs only
//! when the lookup finds nothing, and a lost race with another creator is not an error;
//! key material is written only by the generator, into the path it is given.
//! Hazards: `generate_key` runs a binary from the release volume as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::User;

pub use crate::fsutil::Owner;

/// Errors of this module; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot create the {user} system user: {why}; check useradd on the unit")]
    User { user: String, why: String },
    #[error("cannot run {path} generate-key")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} generate-key failed: {stderr}")]
    KeyGen { path: PathBuf, stderr: String },
}

/// Key kinds `concourse generate-key -t` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An SSH key pair: the private key and `<path>.pub`.
    Ssh,
    /// An RSA private key (session signing), no public file.
    Rsa,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Ssh => "ssh",
            KeyKind::Rsa => "rsa",
        }
    }
}

pub trait Provisioner {
    /// Creates the system user `name` (home `home`, own group, no login) if missing and
    /// returns its (uid, gid).
    fn ensure_user(&self, name: &str, home: &Path) -> Result<Owner, ProvisionError>;

    /// The owner of the files the charm keeps for itself (root on a real machine).
    fn charm_owner(&self) -> Owner;

    /// Runs `<concourse> generate-key -t <kind> -f <dest>`: writes the private key at
    /// `dest` (and `<dest>.pub` for [`KeyKind::Ssh`]).
    fn generate_key(
        &self,
        concourse: &Path,
        kind: KeyKind,
        dest: &Path,
    ) -> Result<(), ProvisionError>;
}

/// The real machine: NSS lookups, `useradd`, the release's `concourse` binary.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

/// (uid, gid) of a user, if it exists.
pub fn lookup_user(name: &str) -> Option<Owner> {
    User::from_name(name)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

impl Provisioner for System {
    fn ensure_user(&self, name: &str, home: &Path) -> Result<Owner, ProvisionError> {
        if let Some(o) = lookup_user(name) {
            return Ok(o);
        }
        let err = |why: String| ProvisionError::User {
            user: name.to_string(),
            why,
        };
        let out = Command::new("useradd")
            .args(["--system", "--shell", "/usr/sbin/nologin", "--home-dir"])
            .arg(home)
            .args(["--user-group", name])
            .output()
            .map_err(|e| err(e.to_string()))?;
        // Another process may have created it meanwhile: the lookup decides.
        lookup_user(name).ok_or_else(|| {
            err(if out.status.success() {
                "user not found after useradd".into()
            } else {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            })
        })
    }

    fn charm_owner(&self) -> Owner {
        (0, 0)
    }

    fn generate_key(
        &self,
        concourse: &Path,
        kind: KeyKind,
        dest: &Path,
    ) -> Result<(), ProvisionError> {
        let out = Command::new(concourse)
            .args(["generate-key", "-t", kind.as_str(), "-f"])
            .arg(dest)
            .output()
            .map_err(|source| ProvisionError::Spawn {
                path: concourse.to_path_buf(),
                source,
            })?;
        if !out.status.success() {
            return Err(ProvisionError::KeyGen {
                path: concourse.to_path_buf(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lookup_through_nss() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-xyz"), None);
    }
}
