//! Trusted digests of a release's executables, checked before anything from the release
//! runs.
//!
//! Owns: the set of files `concourse` execs ([`EXEC_SET`]), their digests
//! ([`ExecDigests`]), checking a release tree against them ([`check_release`]), and the
//! unit's local store of digests it trusts with a cache of file hashes ([`TrustStore`]).
//! Invariants: digests come from outside the writable volume: from the tarball stream this
//! unit verified itself, or from the peer application data the leader publishes (the
//! leader adopts a release another unit installed by checking its files against its
//! MANIFEST once, then every unit holds every later use to those digests, so a file
//! changed on the volume afterwards is caught); a file is checked without following links
//! and through real directories only; every executable of the set that the release did
//! not ship must be absent; a cached hash is reused only while the file's device, inode,
//! size, mtime and ctime are unchanged (ctime cannot be set back by a writer).
//! Hazards: the first adoption trusts the volume as it is then (published by a unit under
//! the install lock, verified against its MANIFEST): keep the volume writable by root only
//! (`crate::storage_coordinator::fscheck::check_ownership`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{hex, Entry};

/// What `concourse` runs from its release (upstream `cmd/discover_asset.go`, the worker's
/// `guardian.go`/`containerd.go`, `worker/runtime/cni_network.go`): the binary itself,
/// Guardian, containerd with its shim, runc and the container init, and the CNI plugins it
/// configures. Paths are relative to `releases/<version>`.
pub const EXEC_SET: &[&str] = &[
    "concourse/bin/concourse",
    "concourse/bin/gdn",
    "concourse/bin/containerd",
    "concourse/bin/containerd-shim-runc-v2",
    "concourse/bin/runc",
    "concourse/bin/init",
    "concourse/bin/bridge",
    "concourse/bin/host-local",
    "concourse/bin/firewall",
    "concourse/bin/loopback",
];

/// The digests of one install's executables: `path → sha256` (or `symlink:<target>`),
/// tied to the tarball (its sha256) they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecDigests {
    pub tarball: String,
    pub files: BTreeMap<String, String>,
}

impl ExecDigests {
    /// The executables among a tarball's entries (a MANIFEST's, or the unpack's).
    pub fn from_entries(entries: &[Entry], tarball_sha256: &str) -> ExecDigests {
        let files = entries
            .iter()
            .filter(|e| EXEC_SET.contains(&e.path()))
            .filter_map(|e| match e {
                Entry::File { path, sha256, .. } => Some((path.clone(), sha256.clone())),
                Entry::Symlink { path, target } => {
                    Some((path.clone(), format!("symlink:{target}")))
                }
                Entry::Dir { .. } => None,
            })
            .collect();
        ExecDigests {
            tarball: tarball_sha256.to_string(),
            files,
        }
    }
}

/// A file's hash with what identified the file when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamped {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    sha256: String,
}

impl Stamped {
    fn same_file(&self, m: &fs::Metadata) -> bool {
        (self.dev, self.ino, self.size, self.mtime, self.ctime)
            == (
                m.dev(),
                m.ino(),
                m.size(),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            )
    }
}

/// Hashes of files already read, by absolute path.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCache {
    files: BTreeMap<String, Stamped>,
}

impl HashCache {
    /// The sha256 of the regular file at `path` (never through a symlink), from the cache
    /// when the file did not change since.
    fn sha256(&mut self, path: &Path) -> io::Result<String> {
        let key = path.display().to_string();
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        let m = f.metadata()?;
        if let Some(s) = self.files.get(&key).filter(|s| s.same_file(&m)) {
            return Ok(s.sha256.clone());
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut r = &f;
        loop {
            match r.read(&mut buf)? {
                0 => break,
                n => h.update(&buf[..n]),
            }
        }
        let sha256 = hex(&h.finalize());
        self.files.insert(
            key,
            Stamped {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                sha256: sha256.clone(),
            },
        );
        Ok(sha256)
    }

    /// Drops entries under `dir` (a release that is gone).
    fn forget_under(&mut self, dir: &Path) {
        let prefix = format!("{}/", dir.display());
        self.files.retain(|k, _| !k.starts_with(&prefix));
    }
}

/// Checks the executables of the release at `release_dir` against `want`: each listed
/// file has its digest (a symlink its target), each other member of [`EXEC_SET`] is
/// absent, and nothing is reached through a symlinked directory. `Err` says what differs.
pub fn check_release(
    release_dir: &Path,
    want: &ExecDigests,
    cache: &mut HashCache,
) -> Result<(), String> {
    for dir in ["", "concourse", "concourse/bin"] {
        let p = release_dir.join(dir);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", p.display())),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    for rel in EXEC_SET {
        let p = release_dir.join(rel);
        let found = match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{rel}: {e}")),
            Ok(m) if m.file_type().is_symlink() => {
                let t = fs::read_link(&p).map_err(|e| format!("{rel}: {e}"))?;
                Some(format!("symlink:{}", t.display()))
            }
            Ok(m) if m.is_file() => Some(cache.sha256(&p).map_err(|e| format!("{rel}: {e}"))?),
            Ok(_) => return Err(format!("{rel} is not a file")),
        };
        match (want.files.get(*rel), found) {
            (Some(w), Some(f)) if *w == f => {}
            (Some(_), Some(_)) => return Err(format!("{rel} has changed")),
            (Some(_), None) => return Err(format!("{rel} is missing")),
            (None, Some(_)) => return Err(format!("{rel} is not part of the release")),
            (None, None) => {}
        }
    }
    Ok(())
}

/// Where a trusted digest came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustSource {
    /// This unit installed the release and took the digests from the verified tarball.
    Installed,
    /// The leader published them (or this unit adopted the release as the leader).
    Leader,
}

/// Digests a unit trusts for one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    pub digests: ExecDigests,
    pub from: TrustSource,
}

/// The unit's local store (root's file on its own disk): trusted digests per version and
/// the hash cache.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustStore {
    #[serde(default)]
    pub versions: BTreeMap<String, Trusted>,
    #[serde(default)]
    pub hashes: HashCache,
}

impl TrustStore {
    /// Reads the store; a missing or corrupt one is empty (digests are then taken again
    /// from the leader).
    pub fn load(path: &Path) -> TrustStore {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!("ignoring the corrupt {}: {e}", path.display());
                TrustStore::default()
            }),
            Err(_) => TrustStore::default(),
        }
    }

    /// Writes the store (0600, atomically, only when it changed).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut b = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        b.push(b'\n');
        crate::fsutil::write_if_changed(path, &b, 0o600, None).map(drop)
    }

    /// The digests to hold `version` to, for a tree that says it came from the tarball
    /// `tarball_sha256`: this unit's own (from that tarball) first, else the leader's (for
    /// that tarball). `None`: nothing trusted for this install of the version.
    pub fn digests_for(&self, version: &str, tarball_sha256: &str) -> Option<&ExecDigests> {
        let t = self.versions.get(version)?;
        (t.digests.tarball == tarball_sha256).then_some(&t.digests)
    }

    /// Records digests for `version`; the unit's own install wins over the leader's for
    /// the same tarball.
    pub fn trust(&mut self, version: &str, digests: ExecDigests, from: TrustSource) {
        if let Some(t) = self.versions.get(version) {
            let own = t.from == TrustSource::Installed && from == TrustSource::Leader;
            if own && t.digests.tarball == digests.tarball {
                return;
            }
        }
        self.versions
            .insert(version.to_string(), Trusted { digests, from });
    }

    /// Forgets versions not in `keep` (pruned releases), with their cached hashes.
    pub fn retain(&mut self, keep: &[String], releases_dir: &Path) {
        let gone: Vec<String> = self
            .versions
            .keys()
            .filter(|v| !keep.contains(v))
            .cloned()
            .collect();
        for v in gone {
            self.versions.remove(&v);
            self.hashes.forget_under(&releases_dir.join(&v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn release(dir: &Path) -> ExecDigests {
        let bin = dir.join("concourse/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("concourse"), b"#!/bin/sh\n").unwrap();
        fs::write(bin.join("gdn"), b"gdn").unwrap();
        std::os::unix::fs::symlink("gdn", bin.join("runc")).unwrap();
        let entries = vec![
            Entry::File {
                path: "concourse/bin/concourse".into(),
                size: 10,
                sha256: hex(&Sha256::digest(b"#!/bin/sh\n")),
                mode: 0o755,
            },
            Entry::File {
                path: "concourse/bin/gdn".into(),
                size: 3,
                sha256: hex(&Sha256::digest(b"gdn")),
                mode: 0o755,
            },
            Entry::Symlink {
                path: "concourse/bin/runc".into(),
                target: "gdn".into(),
            },
            Entry::File {
                path: "concourse/fly-assets/fly.tgz".into(),
                size: 1,
                sha256: "x".into(),
                mode: 0o644,
            },
        ];
        ExecDigests::from_entries(&entries, "tarball-sha")
    }

    #[test]
    fn a_release_checks_until_an_executable_changes() {
        let d = tempfile::tempdir().unwrap();
        let want = release(d.path());
        assert_eq!(want.files.len(), 3, "{want:?}");
        let mut cache = HashCache::default();
        check_release(d.path(), &want, &mut cache).unwrap();
        let bin = d.path().join("concourse/bin");
        // Rewritten in place with the same size: ctime moves, the cache is not trusted.
        fs::write(bin.join("concourse"), b"#!/bin/bad").unwrap();
        let e = check_release(d.path(), &want, &mut cache).unwrap_err();
        assert_eq!(e, "concourse/bin/concourse has changed");
        fs::write(bin.join("concourse"), b"#!/bin/sh\n").unwrap();
        check_release(d.path(), &want, &mut cache).unwrap();
        // An executable the release did not ship.
        fs::write(bin.join("containerd"), b"x").unwrap();
        let e = check_release(d.path(), &want, &mut cache).unwrap_err();
        assert_eq!(e, "concourse/bin/containerd is not part of the release");
        fs::remove_file(bin.join("containerd")).unwrap();
        // A binary replaced by a link to another file.
        fs::remove_file(bin.join("gdn")).unwrap();
        std::os::unix::fs::symlink("/bin/sh", bin.join("gdn")).unwrap();
        let e = check_release(d.path(), &want, &mut cache).unwrap_err();
        assert_eq!(e, "concourse/bin/gdn has changed");
    }

    #[test]
    fn a_symlinked_bin_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let want = release(d.path());
        let elsewhere = d.path().join("elsewhere");
        fs::rename(d.path().join("concourse/bin"), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join("concourse/bin")).unwrap();
        let e = check_release(d.path(), &want, &mut HashCache::default()).unwrap_err();
        assert!(e.ends_with("concourse/bin is not a directory"), "{e}");
    }

    #[test]
    fn the_store_prefers_the_units_own_digests_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let own = ExecDigests {
            tarball: "t1".into(),
            files: BTreeMap::from([("concourse/bin/concourse".into(), "a".into())]),
        };
        let leader = ExecDigests {
            tarball: "t1".into(),
            files: BTreeMap::from([("concourse/bin/concourse".into(), "b".into())]),
        };
        let mut s = TrustStore::default();
        s.trust("7.14.3", own.clone(), TrustSource::Installed);
        s.trust("7.14.3", leader.clone(), TrustSource::Leader);
        assert_eq!(s.digests_for("7.14.3", "t1"), Some(&own));
        assert_eq!(s.digests_for("7.14.3", "t2"), None, "another install");
        let other = ExecDigests {
            tarball: "t2".into(),
            ..leader
        };
        s.trust("7.14.3", other.clone(), TrustSource::Leader);
        assert_eq!(s.digests_for("7.14.3", "t2"), Some(&other));
        let p = d.path().join("trusted.json");
        s.save(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(TrustStore::load(&p), s);
        s.retain(&[], d.path());
        assert!(s.versions.is_empty());
    }
}
