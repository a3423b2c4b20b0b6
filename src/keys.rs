//! Key files of the web and worker roles: generating them once, reading and checking
//! public keys, the TSA's list of authorized worker keys, and the web keys every web unit
//! shares ([`WebKeys`]: TSA host key, session signing key, encryption key), kept in an
//! app-owned Juju secret and written to each web unit's key files from it.
//!
//! Owns: the key files under the roles' `keys` directories (paths are machine paths,
//! mapped through [`Paths::local`](crate::host::Paths::local) for I/O). Invariants: a key
//! is generated once (by the release's `concourse generate-key`) and never rotated by a
//! reconcile; every key file belongs to root (the charm's owner) and appears with one
//! atomic write (`fsutil::replace_file`): the private key 0600, or 0640 with the service
//! user's group when the service runs as that user (web), the public key 0644; the keys
//! directory and the one above it belong to root and are writable by root only, so the
//! service user can plant nothing where root writes (a key directory left to the service
//! user by an older charm is taken back, and its files re-owned without following links);
//! `generate-key` writes into a fresh 0700 directory of root's; public keys from other
//! units are used only after [`is_public_key`] accepted them. Hazards: generation runs a
//! binary from the release volume as root: callers verify the release first.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use crate::config::Secret;
use crate::fsutil;
use crate::host::{Host, KeyKind, Owner, Paths, ProvisionError, Provisioner};

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
/// there; returns whether it generated one. The key files belong to the charm's owner
/// (root); `readers` is the group that may read the private key (the service user's
/// group, for web), `None` for nobody else. See the module docs for the directory.
pub fn ensure_key(
    host: &Host,
    concourse: &Path,
    kind: KeyKind,
    key: &Path,
    readers: Option<u32>,
) -> Result<bool, KeyError> {
    ensure_key_with(
        &host.paths,
        host.provisioner.as_ref(),
        concourse,
        kind,
        key,
        readers,
    )
}

/// [`ensure_key`] with the host's parts it uses.
pub fn ensure_key_with(
    paths: &Paths,
    provisioner: &dyn Provisioner,
    concourse: &Path,
    kind: KeyKind,
    key: &Path,
    readers: Option<u32>,
) -> Result<bool, KeyError> {
    let path = paths.local(key);
    let (uid, root_gid) = provisioner.charm_owner();
    let owner = (uid, readers.unwrap_or(root_gid));
    let private_mode = if readers.is_some() { 0o640 } else { 0o600 };
    let dir = path.parent().unwrap_or(Path::new("/"));
    ensure_root_dir(dir, (uid, root_gid))?;
    let pub_file = pub_path(&path);
    if is_regular_nonempty(&path) && (kind != KeyKind::Ssh || is_regular_nonempty(&pub_file)) {
        // Kept; written by an older charm maybe, with other owners and modes.
        fix_file(&path, owner, private_mode)?;
        if kind == KeyKind::Ssh {
            fix_file(&pub_file, owner, 0o644)?;
        }
        return Ok(false);
    }
    // Generated in a private (0700) directory of our own inside the root-owned keys
    // directory, then copied into place with the charm's one atomic write.
    let staging = tempfile::Builder::new()
        .prefix(".keygen")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(io_error(dir))?;
    let tmp = staging.path().join("key");
    provisioner
        .generate_key(concourse, kind, &tmp)
        .map_err(|source| KeyError::Generate {
            path: key.to_path_buf(),
            source,
        })?;
    let read = |p: &Path| match std::fs::read(p) {
        Ok(b) if !b.is_empty() => Ok(b),
        _ => Err(KeyError::Missing {
            path: key.to_path_buf(),
        }),
    };
    let private = read(&tmp)?;
    if kind == KeyKind::Ssh {
        let public = read(&pub_path(&tmp))?;
        fsutil::replace_file(&pub_file, &public, 0o644, Some(owner))
            .map_err(io_error(&pub_file))?;
    }
    fsutil::replace_file(&path, &private, private_mode, Some(owner)).map_err(io_error(&path))?;
    Ok(true)
}

fn io_error(p: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = p.to_path_buf();
    move |source| KeyError::Io { path, source }
}

/// Whether `p` is a non-empty regular file (a symlink is not).
fn is_regular_nonempty(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// Makes `dir` (and a missing parent) a real directory owned by `owner`, not writable by
/// group or others, so nobody else can plant a file or link where root writes. A symlink
/// in its place is removed.
fn ensure_root_dir(dir: &Path, owner: Owner) -> Result<(), KeyError> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => std::fs::remove_file(dir).map_err(io_error(dir))?,
        Err(_) => {}
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    fix_dir(dir, owner)?;
    if let Some(parent) = dir.parent() {
        // The service's home: root's too (web needs no write access to it).
        if std::fs::symlink_metadata(parent)
            .is_ok_and(|m| m.uid() != owner.0 || m.mode() & 0o7777 != 0o755)
        {
            fix_dir(parent, owner)?;
        }
    }
    Ok(())
}

/// Gives an existing directory `owner` and mode 0755 (the service user passes through,
/// only root writes), without following a symlink.
fn fix_dir(dir: &Path, owner: Owner) -> Result<(), KeyError> {
    let f = open_nofollow(dir, true).map_err(io_error(dir))?;
    std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1)).map_err(io_error(dir))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io_error(dir))
}

/// Gives an existing key file `owner` and `mode`, without following a symlink.
fn fix_file(p: &Path, owner: Owner, mode: u32) -> Result<(), KeyError> {
    let f = open_nofollow(p, false).map_err(io_error(p))?;
    let m = f.metadata().map_err(io_error(p))?;
    if (m.uid(), m.gid()) != owner {
        std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1)).map_err(io_error(p))?;
    }
    if m.mode() & 0o7777 != mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_error(p))?;
    }
    Ok(())
}

fn open_nofollow(p: &Path, dir: bool) -> std::io::Result<std::fs::File> {
    let mut flags = nix::libc::O_NOFOLLOW;
    if dir {
        flags |= nix::libc::O_DIRECTORY;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(p)
}

/// The public half of the SSH key at machine path `key`, checked.
pub fn public_key_of(host: &Host, key: &Path) -> Result<String, KeyError> {
    read_public_key(&host.paths.local(pub_path(key))).ok_or_else(|| KeyError::Invalid {
        path: pub_path(key),
    })
}

// ----- the web keys every web unit shares (an app-owned Juju secret) -----

/// Content keys of the app secret holding the shared web keys.
pub const K_TSA_HOST_KEY: &str = "tsa-host-key";
pub const K_TSA_PUBLIC_KEY: &str = "tsa-public-key";
pub const K_SESSION_SIGNING_KEY: &str = "session-signing-key";
/// The key Concourse encrypts credentials at rest with (`CONCOURSE_ENCRYPTION_KEY`, an
/// AES key of 16, 24 or 32 bytes: concourse/flag `cipher.go`, `aes.NewCipher`).
pub const K_ENCRYPTION_KEY: &str = "encryption-key";

/// The TSA host key and session signing key every web unit of the application uses.
/// Concourse derives its OAuth client secrets from the signing key and rewrites them in
/// the shared database at each start, and workers check the TSA's host key: web units
/// with keys of their own lock each other's users and workers out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebKeys {
    pub tsa_host_key: Secret,
    pub tsa_public_key: String,
    pub session_signing_key: Secret,
    pub encryption_key: Secret,
}

/// A random key of 32 letters and digits (an AES-256 key as Concourse reads it: the
/// bytes of the string) from the OS CSPRNG.
pub fn random_encryption_key() -> Result<Secret, KeyError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    let mut buf = [0u8; 64];
    while out.len() < 32 {
        getrandom::fill(&mut buf).map_err(|e| KeyError::Io {
            path: PathBuf::from("getrandom"),
            source: std::io::Error::other(e.to_string()),
        })?;
        // 248 = 4 * 62: rejection sampling keeps the distribution uniform
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() < 32 {
                out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(Secret::new(out))
}

/// A PEM block (what `generate-key` writes), without NUL bytes.
fn looks_like_pem(s: &str) -> bool {
    s.trim_start().starts_with("-----BEGIN ") && !s.contains('\0')
}

impl WebKeys {
    /// Parses the secret's content; `None` when a key is missing or malformed.
    pub fn from_content(c: &BTreeMap<String, String>) -> Option<WebKeys> {
        let host = c.get(K_TSA_HOST_KEY).filter(|k| looks_like_pem(k))?;
        let public = c.get(K_TSA_PUBLIC_KEY).map(|k| k.trim())?;
        let session = c.get(K_SESSION_SIGNING_KEY).filter(|k| looks_like_pem(k))?;
        let encryption = c.get(K_ENCRYPTION_KEY).filter(|k| {
            matches!(k.len(), 16 | 24 | 32) && !k.contains(',') && !k.chars().any(char::is_control)
        })?;
        is_public_key(public).then(|| WebKeys {
            tsa_host_key: Secret::new(host.clone()),
            tsa_public_key: public.to_string(),
            session_signing_key: Secret::new(session.clone()),
            encryption_key: Secret::new(encryption.clone()),
        })
    }

    /// The secret's content.
    pub fn content(&self) -> BTreeMap<String, String> {
        [
            (K_TSA_HOST_KEY, self.tsa_host_key.expose()),
            (K_TSA_PUBLIC_KEY, self.tsa_public_key.as_str()),
            (K_SESSION_SIGNING_KEY, self.session_signing_key.expose()),
            (K_ENCRYPTION_KEY, self.encryption_key.expose()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Keys a web unit generated for itself before they were shared (an older charm),
    /// at machine paths `tsa` (with `.pub`) and `session`: kept, so its workers keep
    /// trusting it.
    pub fn from_files(paths: &Paths, tsa: &Path, session: &Path) -> Option<WebKeys> {
        let read = |p: &Path| {
            let l = paths.local(p);
            is_regular_nonempty(&l)
                .then(|| std::fs::read_to_string(&l).ok())
                .flatten()
        };
        let content = [
            (K_TSA_HOST_KEY, read(tsa)?),
            (K_TSA_PUBLIC_KEY, read(&pub_path(tsa))?),
            (K_SESSION_SIGNING_KEY, read(session)?),
            (
                K_ENCRYPTION_KEY,
                random_encryption_key().ok()?.expose().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        WebKeys::from_content(&content)
    }

    /// Generates a new pair with the release's `concourse` (a local path), in a private
    /// (0700) directory of root's under `scratch` (a machine path), removed afterwards.
    pub fn generate(
        paths: &Paths,
        provisioner: &dyn Provisioner,
        concourse: &Path,
        scratch: &Path,
    ) -> Result<WebKeys, KeyError> {
        let dir = paths.local(scratch);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let staging = tempfile::Builder::new()
            .prefix(".keygen")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&dir)
            .map_err(io_error(&dir))?;
        let gen = |name: &str, kind: KeyKind| -> Result<PathBuf, KeyError> {
            let p = staging.path().join(name);
            provisioner
                .generate_key(concourse, kind, &p)
                .map_err(|source| KeyError::Generate {
                    path: scratch.join(name),
                    source,
                })?;
            Ok(p)
        };
        let tsa = gen("tsa_host_key", KeyKind::Ssh)?;
        let session = gen("session_signing_key", KeyKind::Rsa)?;
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(s) if !s.is_empty() => Ok(s),
            _ => Err(KeyError::Missing {
                path: scratch.join(p.file_name().unwrap_or_default()),
            }),
        };
        let content = [
            (K_TSA_HOST_KEY, read(&tsa)?),
            (K_TSA_PUBLIC_KEY, read(&pub_path(&tsa))?),
            (K_SESSION_SIGNING_KEY, read(&session)?),
            (
                K_ENCRYPTION_KEY,
                random_encryption_key()?.expose().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        WebKeys::from_content(&content).ok_or_else(|| KeyError::Invalid {
            path: pub_path(&scratch.join("tsa_host_key")),
        })
    }

    /// Writes the keys at machine paths `tsa` (and `.pub`) and `session`, owned by root
    /// with group `readers` (0640; the public key 0644), each only when it differs.
    pub fn install(
        &self,
        paths: &Paths,
        provisioner: &dyn Provisioner,
        tsa: &Path,
        session: &Path,
        readers: u32,
    ) -> Result<(), KeyError> {
        let (uid, root_gid) = provisioner.charm_owner();
        let owner = (uid, readers);
        let public = format!("{}\n", self.tsa_public_key);
        for (path, body, mode) in [
            (tsa, self.tsa_host_key.expose(), 0o640),
            (&pub_path(tsa), public.as_str(), 0o644),
            (session, self.session_signing_key.expose(), 0o640),
        ] {
            let local = paths.local(path);
            let dir = local.parent().unwrap_or(Path::new("/"));
            ensure_root_dir(dir, (uid, root_gid))?;
            if std::fs::read(&local).is_ok_and(|b| b == body.as_bytes()) {
                fix_file(&local, owner, mode)?;
                continue;
            }
            fsutil::replace_file(&local, body.as_bytes(), mode, Some(owner))
                .map_err(io_error(&local))?;
        }
        Ok(())
    }
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
