//! Filesystem checks on the release volume, each failing with an error that says what
//! to do.
//!
//! Owns: "is the volume there, a directory (a mount point when asked), writable, big
//! enough, root's alone (a new file is root's, nothing belongs to another or is
//! writable by group or others: root runs what is on it), and does it enforce `flock`?"
//! Invariants: checks only read, except the writability probe (creates and removes one
//! exclusive temp file) and the `flock` probe (locks `.flock-probe`, never the install
//! lock, so a check never makes an installer wait).
//! Hazards: free space changes under our feet: a passing check is advice, and the
//! installer still maps `ENOSPC` to [`StorageError::NoSpace`]. The mount check reads
//! `/proc/self/mountinfo`; it is only asked for when the volume must be a separate
//! filesystem (Juju storage), not for plain directories in tests.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{layout::Layout, lock, StorageError};

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsChecks {
    /// Require the volume root to be a mount point.
    pub require_mount_point: bool,
    /// Require this many bytes available to unprivileged writers.
    pub needed_bytes: u64,
    /// Probe that `flock` is enforced (needed before any shared install).
    pub probe_flock: bool,
    /// The uid that must own the volume: a new file must belong to it, and nothing on the
    /// volume may belong to another or be writable by group or others (the charm's
    /// euid, root; `None`: not checked).
    pub owner: Option<u32>,
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeReport {
    pub available_bytes: u64,
    pub total_bytes: u64,
    pub is_mount_point: bool,
    /// The filesystem id (`statvfs` `f_fsid`), for logs.
    pub fs_id: u64,
}

/// Space for a download of `tarball_bytes` plus its unpacked tree: `factor` x the
/// tarball (2.2 covers the tarball and a tree about 1.2x its size), rounded up.
pub fn space_needed(tarball_bytes: u64, factor: f64) -> u64 {
    let f = if factor.is_finite() && factor > 0.0 {
        factor
    } else {
        1.0
    };
    (tarball_bytes as f64 * f).ceil().min(u64::MAX as f64) as u64
}

/// Runs the checks on `root` in order: exists, directory, mount point (if asked),
/// writable, free space, `flock` (if asked). Stops at the first failure.
pub fn check_volume(root: &Path, checks: &FsChecks) -> Result<VolumeReport, StorageError> {
    let meta = match fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StorageError::VolumeMissing {
                path: root.to_path_buf(),
            })
        }
        Err(e) => return Err(StorageError::io("stat", root, e)),
    };
    if !meta.is_dir() {
        return Err(StorageError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mounted =
        is_mount_point(root).map_err(|e| StorageError::io("check mounts for", root, e))?;
    if checks.require_mount_point && !mounted {
        return Err(StorageError::NotAMountPoint {
            path: root.to_path_buf(),
        });
    }
    let probe_uid = check_writable(root)?;
    if let Some(owner) = checks.owner {
        if probe_uid != owner {
            return Err(StorageError::RootSquashed {
                path: root.to_path_buf(),
                uid: probe_uid,
            });
        }
        check_tree(root, owner)?;
    }
    let (available_bytes, total_bytes, fs_id) = free_space(root)?;
    if available_bytes < checks.needed_bytes {
        return Err(StorageError::NoSpace {
            path: root.to_path_buf(),
            needed: checks.needed_bytes,
            available: available_bytes,
        });
    }
    if checks.probe_flock {
        lock::probe_flock(&Layout::new(root).flock_probe_file())?;
    }
    Ok(VolumeReport {
        available_bytes,
        total_bytes,
        is_mount_point: mounted,
        fs_id,
    })
}

/// `(available to unprivileged users, total, fsid)` in bytes, from `statvfs`.
pub fn free_space(path: &Path) -> Result<(u64, u64, u64), StorageError> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| StorageError::io("statvfs", path, io::Error::from_raw_os_error(e as i32)))?;
    let frsize = st.fragment_size().max(1);
    let avail = (st.blocks_available() as u64).saturating_mul(frsize);
    let total = (st.blocks() as u64).saturating_mul(frsize);
    Ok((avail, total, st.filesystem_id() as u64))
}

/// Name prefix of the writability probe: a temp-file name, so a probe left by a crash is
/// swept with the other temp files by the next lock holder.
pub const WRITE_PROBE_PREFIX: &str = ".write-probe.tmp-";

/// Creates (exclusively, random name), writes, fsyncs and removes a probe file: tells
/// read-only from full from permission-denied. Returns the uid the filesystem gave the
/// new file (another than ours when it squashes root).
pub fn check_writable(root: &Path) -> Result<u32, StorageError> {
    let res = (|| -> io::Result<u32> {
        let mut f = crate::fsutil::create_temp(root, OsStr::new(WRITE_PROBE_PREFIX))?;
        f.as_file_mut().write_all(b"probe")?;
        f.as_file().sync_all()?;
        Ok(f.as_file().metadata()?.uid())
    })();
    res.map_err(|e| StorageError::from_write_error(root, e))
}

/// Walks the volume (without following links): every directory and file must belong to
/// `owner` and be writable by it alone. The first offender is the error.
pub fn check_tree(root: &Path, owner: u32) -> Result<(), StorageError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Removed meanwhile by another unit (its probe or temp file, a staging dir).
            Err(e) if e.kind() == io::ErrorKind::NotFound && p != root => continue,
            Err(e) => return Err(StorageError::io("stat", &p, e)),
        };
        if m.file_type().is_symlink() {
            continue;
        }
        if m.uid() != owner {
            return Err(StorageError::ForeignOwner {
                path: p,
                uid: m.uid(),
            });
        }
        if m.mode() & 0o022 != 0 {
            return Err(StorageError::WritableByOthers {
                path: p,
                mode: m.mode() & 0o7777,
            });
        }
        if m.is_dir() {
            let entries = match fs::read_dir(&p) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io("list", &p, e)),
            };
            for e in entries {
                match e {
                    Ok(e) => stack.push(e.path()),
                    // Removed meanwhile (a temp file): nothing to check.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("list", &p, e)),
                }
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point, per `/proc/self/mountinfo` (falls back to comparing
/// the device with the parent's when mountinfo is unreadable).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let canon = fs::canonicalize(path)?;
    if canon == Path::new("/") {
        return Ok(true);
    }
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(info) => Ok(mountinfo_has(&info, &canon)),
        Err(_) => {
            let parent = canon.parent().unwrap_or(Path::new("/"));
            Ok(fs::metadata(&canon)?.dev() != fs::metadata(parent)?.dev())
        }
    }
}

/// Where Juju keeps the per-unit directories of `rootfs`-pool storage on a machine.
pub const JUJU_STORAGE_DIR: &str = "/var/lib/juju/storage";

/// The source (mountinfo field 4, the mounted directory within its filesystem) of the
/// last mount at `path`, if `path` is a mount point.
pub fn mount_source(path: &Path) -> io::Result<Option<String>> {
    let canon = fs::canonicalize(path)?;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_source_in(&info, &canon))
}

fn mount_source_in(info: &str, mount_point: &Path) -> Option<String> {
    info.lines()
        .rev()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let root = f.nth(3)?;
            let mp = f.next()?;
            (Path::new(&unescape_mountinfo(mp)) == mount_point).then(|| unescape_mountinfo(root))
        })
        .next()
}

/// Whether the volume at `path` is this unit's own Juju `rootfs` storage (a bind mount of
/// a directory under [`JUJU_STORAGE_DIR`]): then it cannot be shared with other units.
pub fn is_juju_own_storage(path: &Path) -> bool {
    mount_source(path)
        .ok()
        .flatten()
        .is_some_and(|src| Path::new(&src).starts_with(JUJU_STORAGE_DIR))
}

/// Whether a mountinfo text lists `mount_point` (field 5, octal-escaped).
fn mountinfo_has(info: &str, mount_point: &Path) -> bool {
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(&unescape_mountinfo(mp)) == mount_point)
    })
}

/// Undoes mountinfo's `\040`-style escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {

    #[test]
    fn mount_source_takes_the_last_mount_at_the_path() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    40 22 8:1 /var/lib/juju/storage/concourse-data-0 /var/lib/concourse rw - ext4 /dev/vda rw\n\
                    41 40 0:50 /srv/concourse-data /var/lib/concourse rw - nfs4 srv:/x rw\n";
        assert_eq!(
            mount_source_in(info, Path::new("/var/lib/concourse")).as_deref(),
            Some("/srv/concourse-data")
        );
        let only_juju = info.lines().take(2).collect::<Vec<_>>().join("\n");
        let src = mount_source_in(&only_juju, Path::new("/var/lib/concourse")).unwrap();
        assert!(Path::new(&src).starts_with(JUJU_STORAGE_DIR));
        assert_eq!(mount_source_in(info, Path::new("/nope")), None);
    }

    use super::*;

    #[test]
    fn space_estimate() {
        assert_eq!(space_needed(1000, 2.2), 2200);
        assert_eq!(space_needed(1000, f64::NAN), 1000);
        assert_eq!(space_needed(u64::MAX, 2.2), u64::MAX);
    }

    #[test]
    fn mountinfo_parsing() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    40 22 0:50 / /srv/my\\040vol rw - tmpfs tmpfs rw\n";
        assert!(mountinfo_has(info, Path::new("/srv/my vol")));
        assert!(!mountinfo_has(info, Path::new("/srv/my")));
        assert_eq!(unescape_mountinfo("a\\134b\\"), "a\\b\\");
        assert_eq!(unescape_mountinfo("\\04"), "\\04");
    }

    #[test]
    fn a_plain_directory_passes_and_is_not_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let r = check_volume(
            dir.path(),
            &FsChecks {
                require_mount_point: false,
                needed_bytes: 1,
                probe_flock: true,
                owner: None,
            },
        )
        .unwrap();
        assert!(!r.is_mount_point);
        assert!(r.available_bytes > 0);
        let err = check_volume(
            dir.path(),
            &FsChecks {
                require_mount_point: true,
                needed_bytes: 0,
                probe_flock: false,
                owner: None,
            },
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::NotAMountPoint { .. }), "{err}");
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
    }

    #[test]
    fn missing_file_and_too_small() {
        let dir = tempfile::tempdir().unwrap();
        let none = FsChecks {
            require_mount_point: false,
            needed_bytes: 0,
            probe_flock: false,
            owner: None,
        };
        let err = check_volume(&dir.path().join("nope"), &none).unwrap_err();
        assert!(matches!(err, StorageError::VolumeMissing { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
        let f = dir.path().join("file");
        fs::write(&f, b"").unwrap();
        let err = check_volume(&f, &none).unwrap_err();
        assert!(matches!(err, StorageError::NotADirectory { .. }), "{err}");
        let huge = FsChecks {
            needed_bytes: u64::MAX,
            ..none
        };
        let err = check_volume(dir.path(), &huge).unwrap_err();
        assert!(matches!(err, StorageError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("free"), "{err}");
    }
}
