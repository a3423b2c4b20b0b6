//! Key files of the web and worker roles: generating them once, reading and checking
//! public keys, and the TSA's list of authorized worker keys.
//!
//! Owns: the key files under the roles' `keys` directories (paths are machine paths,
//! mapped through [`Paths::local`](crate::host::Paths::local) for I/O). Invariants: a key
//! is generated once (by the release's `concourse generate-key`) and never rotated by a
//! reconcile; a new key appears with one rename, private key 0600 and public key 0644,
//! both owned by the given owner; public keys from other units are used only after
//! [`is_public_key`] accepted them. Hazards: the keys directory of web belongs to the
//! service user, and generation stages in a temporary directory inside it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::host::{Host, KeyKind, Owner, ProvisionError};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate {path}")]
    Generate {
        path: PathBuf,
        #[source]
        source: ProvisionError,
    },
    #[error("{path} was not written by generate-key; check the release's concourse binary")]
    Missing { path: PathBuf },
    #[error("{path} is not a valid public key; delete it so it is generated again")]
    Invalid { path: PathBuf },
}

/// `<path>.pub`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// One line of `ssh-rsa|ssh-ed25519|ecdsa-… AAAA… [comment]` without control characters.
pub fn is_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && body.starts_with("AAAA")
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        && !k.contains(['\n', '\r', '\0'])
}

/// Reads a public key file (first line, trimmed), if valid.
pub fn read_public_key(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().next()?.trim().to_string();
    is_public_key(&line).then_some(line)
}

/// `authorized_worker_keys` content: valid-looking public keys, sorted, unique.
pub fn authorized_keys_text<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = keys
        .into_iter()
        .map(str::trim)
        .filter(|k| is_public_key(k))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.iter().map(|k| format!("{k}\n")).collect()
}

/// Generates the key at machine path `key` with `concourse` (a local path) unless it is
/// there; returns whether it generated one.
pub fn ensure_key(
    host: &Host,
    concourse: &Path,
    kind: KeyKind,
    key: &Path,
    owner: Owner,
) -> Result<bool, KeyError> {
    let path = host.paths.local(key);
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| KeyError::Io { path, source }
    };
    let have_pub = kind != KeyKind::Ssh || pub_path(&path).exists();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) && have_pub {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1)).map_err(io(dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".keygen")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let tmp = staging.path().join("key");
    host.provisioner
        .generate_key(concourse, kind, &tmp)
        .map_err(|source| KeyError::Generate {
            path: key.to_path_buf(),
            source,
        })?;
    if !tmp.exists() {
        return Err(KeyError::Missing {
            path: key.to_path_buf(),
        });
    }
    let fix = |p: &Path, mode: u32| -> Result<(), KeyError> {
        std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1)).map_err(io(p))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io(p))
    };
    fix(&tmp, 0o600)?;
    if kind == KeyKind::Ssh {
        fix(&pub_path(&tmp), 0o644)?;
        std::fs::rename(pub_path(&tmp), pub_path(&path)).map_err(io(&path))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(true)
}

/// The public half of the SSH key at machine path `key`, checked.
pub fn public_key_of(host: &Host, key: &Path) -> Result<String, KeyError> {
    read_public_key(&host.paths.local(pub_path(key))).ok_or_else(|| KeyError::Invalid {
        path: pub_path(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_keys_filtering() {
        let t = authorized_keys_text([
            "ssh-rsa AAAAB3Nza worker-1",
            "  ssh-rsa AAAAB3Nza worker-1 ",
            "ssh-rsa AAAAA0b",
            "garbage",
            "ssh-rsa notbase64!",
            "",
        ]);
        assert_eq!(t, "ssh-rsa AAAAA0b\nssh-rsa AAAAB3Nza worker-1\n");
        assert!(!is_public_key("ssh-rsa AAAA\rinjected"));
    }
}
