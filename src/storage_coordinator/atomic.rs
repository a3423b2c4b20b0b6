//! Atomic, durable small-file writes on the volume.
//!
//! Owns: replacing a marker or state file on the volume (through the crate's one
//! atomic-write helper, `crate::fsutil::replace_file`), durable removal, and cleaning the
//! temp files an interrupted write left.
//! Invariants: a reader sees either the old or the new content, never a mix or an empty
//! file (see `crate::fsutil`). When the file already holds exactly the new bytes nothing
//! is written (no mtime change, no fsync).
//! Hazards: a crash may leave a `.<name>.tmp-*` file behind; they are harmless and are
//! removed by [`remove_stale_temps`] when the owner of the directory next holds the lock.
//! Missing parent directories are never created (a volume that is not mounted must not
//! be recreated on the root disk).

use std::fs;
use std::io;
use std::path::Path;

use super::StorageError;
use crate::fsutil;

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file now holds the new content.
    Changed,
    /// The file already held exactly this content; nothing was written.
    Unchanged,
}

/// Replaces `path` with `contents` atomically and durably (see the module docs).
/// `mode` applies to a newly written file (e.g. `0o644`).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<Written, StorageError> {
    // Unreadable old content (e.g. a directory in the way): let the rename report it.
    if fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(Written::Unchanged);
    }
    fsutil::replace_file(path, contents, mode, None)
        .map_err(|e| StorageError::io("write", path, e))?;
    Ok(Written::Changed)
}

/// Removes `path` if present and fsyncs its directory. Returns whether it existed.
pub fn remove_durably(path: &Path) -> Result<bool, StorageError> {
    match fs::remove_file(path) {
        Ok(()) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            fsync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    fsutil::fsync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Removes `.<name>.tmp-*` files left in `dir` by interrupted [`write_atomic`] calls.
/// Call only while no other process can be writing in `dir` (i.e. under the lock, or in
/// a directory only this unit writes). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> Result<usize, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            let p = entry.path();
            if fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_replaces_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("marker");
        assert_eq!(write_atomic(&p, b"one", 0o600).unwrap(), Written::Changed);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let ino = fs::metadata(&p).unwrap().ino();
        assert_eq!(write_atomic(&p, b"one", 0o600).unwrap(), Written::Unchanged);
        assert_eq!(
            fs::metadata(&p).unwrap().ino(),
            ino,
            "unchanged: not rewritten"
        );
        assert_eq!(write_atomic(&p, b"two", 0o600).unwrap(), Written::Changed);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino, "replaced by rename");
        // No temp files left.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn failure_leaves_old_content_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"").unwrap();
        // Renaming a file over a non-empty directory fails.
        let err = write_atomic(&p, b"data", 0o644).unwrap_err();
        assert!(err.to_string().contains("sub"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("sub")]);
    }

    #[test]
    fn removes_stale_temps_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".state.json.tmp-12-abcd"), b"x").unwrap();
        fs::write(dir.path().join("state.json"), b"x").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap(), 1);
        assert!(dir.path().join("state.json").exists());
        assert!(remove_durably(&dir.path().join("state.json")).unwrap());
        assert!(!remove_durably(&dir.path().join("state.json")).unwrap());
    }
}
