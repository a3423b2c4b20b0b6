//! `releases/<version>/MANIFEST`: what a published release contains.
//!
//! Owns: the MANIFEST format (JSON) and checking a release tree against it.
//! Invariants: MANIFEST is written last into the staging dir, after every file was
//! written, and before the publishing rename; it lists every entry of the tree except
//! itself (files with size and sha256, directories, symlinks with their target) and the
//! tarball's size, sha1 and sha256.
//! Hazards: a MANIFEST is read from a shared volume: parse errors are reported, never
//! unwrapped, and listed paths are re-validated before they are joined to the release
//! directory.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::unpack::relative_entry_path;
use super::InstallError;
use crate::storage_coordinator::layout::MANIFEST_FILE;

/// The tarball a release came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarballInfo {
    /// File name (`concourse-7.14.3-linux-amd64.tgz`).
    pub file: String,
    /// Where it came from: a URL without credentials or query, or `resource:<path>`.
    pub source: String,
    pub size: u64,
    pub sha1: String,
    pub sha256: String,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    File {
        path: String,
        size: u64,
        sha256: String,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// Contents of `MANIFEST`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    /// Unit that downloaded and published it.
    pub installed_by: String,
    /// Unix time (seconds) of publication.
    pub installed_at: u64,
    pub tarball: TarballInfo,
    pub entries: Vec<Entry>,
}

/// How thoroughly to check a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Every entry exists with the right type, size and target.
    Quick,
    /// As quick, plus the sha256 of every file.
    Full,
}

impl Manifest {
    pub const FORMAT: u32 = 1;

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads `<release>/MANIFEST`.
    pub fn read(release: &Path) -> Result<Manifest, InstallError> {
        let p = release.join(MANIFEST_FILE);
        let mut buf = Vec::new();
        File::open(&p)
            .and_then(|f| f.take(64 << 20).read_to_end(&mut buf))
            .map_err(|e| InstallError::ManifestInvalid {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        let m: Manifest =
            serde_json::from_slice(&buf).map_err(|e| InstallError::ManifestInvalid {
                path: p.clone(),
                detail: e.to_string(),
            })?;
        if m.format != Manifest::FORMAT {
            return Err(InstallError::ManifestInvalid {
                path: p,
                detail: format!("unknown format {}", m.format),
            });
        }
        Ok(m)
    }

    /// Checks the tree at `release` against this manifest. Returns `(files, bytes)`
    /// checked.
    pub fn verify_tree(
        &self,
        release: &Path,
        mode: VerifyMode,
    ) -> Result<(usize, u64), InstallError> {
        let corrupt = |path: &str, detail: String| InstallError::ReleaseCorrupt {
            path: release.join(path),
            detail,
        };
        let (mut files, mut bytes) = (0usize, 0u64);
        for e in &self.entries {
            let rel = relative_entry_path(e.path().as_bytes()).map_err(|r| {
                InstallError::ManifestInvalid {
                    path: release.join(MANIFEST_FILE),
                    detail: format!("entry {:?}: {r}", e.path()),
                }
            })?;
            let p = release.join(&rel);
            let meta = fs::symlink_metadata(&p)
                .map_err(|err| corrupt(e.path(), format!("missing ({err})")))?;
            match e {
                Entry::Dir { .. } => {
                    if !meta.is_dir() {
                        return Err(corrupt(e.path(), "is not a directory".into()));
                    }
                }
                Entry::Symlink { target, .. } => {
                    let actual = fs::read_link(&p)
                        .map_err(|err| corrupt(e.path(), format!("is not a symlink ({err})")))?;
                    if actual.as_os_str().as_encoded_bytes() != target.as_bytes() {
                        return Err(corrupt(
                            e.path(),
                            format!("symlink points to {} instead of {target}", actual.display()),
                        ));
                    }
                }
                Entry::File {
                    size,
                    sha256,
                    mode: m,
                    ..
                } => {
                    if !meta.is_file() {
                        return Err(corrupt(e.path(), "is not a regular file".into()));
                    }
                    if meta.len() != *size {
                        return Err(corrupt(
                            e.path(),
                            format!("size is {} bytes, MANIFEST says {size}", meta.len()),
                        ));
                    }
                    if meta.permissions().mode() & 0o777 != *m & 0o777 {
                        return Err(corrupt(
                            e.path(),
                            format!(
                                "mode is {:o}, MANIFEST says {:o}",
                                meta.permissions().mode() & 0o777,
                                m & 0o777
                            ),
                        ));
                    }
                    if mode == VerifyMode::Full {
                        let actual = sha256_file(&p)
                            .map_err(|err| corrupt(e.path(), format!("unreadable ({err})")))?;
                        if &actual != sha256 {
                            return Err(corrupt(
                                e.path(),
                                format!("sha256 is {actual}, MANIFEST says {sha256}"),
                            ));
                        }
                    }
                    files += 1;
                    bytes += size;
                }
            }
        }
        Ok((files, bytes))
    }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> Manifest {
        fs::create_dir_all(dir.join("concourse/bin")).unwrap();
        fs::write(dir.join("concourse/bin/concourse"), b"hello").unwrap();
        fs::set_permissions(
            dir.join("concourse/bin/concourse"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("concourse", dir.join("concourse/bin/c")).unwrap();
        Manifest {
            format: 1,
            version: "7.14.3".into(),
            installed_by: "concourse-ci/0".into(),
            installed_at: 1,
            tarball: TarballInfo {
                file: "c.tgz".into(),
                source: "https://example.com/c.tgz".into(),
                size: 1,
                sha1: "a".into(),
                sha256: "b".into(),
            },
            entries: vec![
                Entry::Dir {
                    path: "concourse/bin".into(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "concourse/bin/concourse".into(),
                    size: 5,
                    sha256: hex(&Sha256::digest(b"hello")),
                    mode: 0o755,
                },
                Entry::Symlink {
                    path: "concourse/bin/c".into(),
                    target: "concourse".into(),
                },
            ],
        }
    }

    #[test]
    fn hex_and_hash() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"abc").unwrap();
        assert_eq!(
            sha256_file(&d.path().join("f")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn round_trip_and_verify_detects_tampering() {
        let d = tempfile::tempdir().unwrap();
        let m = sample(d.path());
        fs::write(d.path().join(MANIFEST_FILE), m.to_json()).unwrap();
        let back = Manifest::read(d.path()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.verify_tree(d.path(), VerifyMode::Full).unwrap(), (1, 5));
        // Same size, different content: quick passes, full fails.
        fs::write(d.path().join("concourse/bin/concourse"), b"HELLO").unwrap();
        m.verify_tree(d.path(), VerifyMode::Quick).unwrap();
        let e = m.verify_tree(d.path(), VerifyMode::Full).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        fs::write(d.path().join("concourse/bin/concourse"), b"hi").unwrap();
        let e = m.verify_tree(d.path(), VerifyMode::Quick).unwrap_err();
        assert!(e.to_string().contains("size is 2 bytes"), "{e}");
        fs::remove_file(d.path().join("concourse/bin/c")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("concourse/bin/c")).unwrap();
        fs::write(d.path().join("concourse/bin/concourse"), b"hello").unwrap();
        let e = m.verify_tree(d.path(), VerifyMode::Quick).unwrap_err();
        assert!(e.to_string().contains("symlink points to /etc"), "{e}");
    }

    #[test]
    fn bad_manifests_are_errors() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            Manifest::read(d.path()),
            Err(InstallError::ManifestInvalid { .. })
        ));
        fs::write(d.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(matches!(
            Manifest::read(d.path()),
            Err(InstallError::ManifestInvalid { .. })
        ));
        let mut m = sample(d.path());
        m.entries.push(Entry::Dir {
            path: "../outside".into(),
            mode: 0o755,
        });
        let e = m.verify_tree(d.path(), VerifyMode::Quick).unwrap_err();
        assert!(matches!(e, InstallError::ManifestInvalid { .. }), "{e}");
    }
}
