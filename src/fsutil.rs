//! Durable file writes for the unit's local files (unit files, env files, keys, state).
//!
//! Owns: `write_if_changed`, the one way the charm writes a local file. Invariants: a
//! reader sees the old or the new content, never a mix (temp file in the same directory,
//! fsync, rename, fsync of the directory); nothing is written when content, mode and
//! owner already match, so callers can use the returned flag to decide on restarts.
//! Hazards: the temp file is created 0600 before the final mode is applied, so a secret
//! is never readable by others even for a moment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Owner of a written file (uid, gid).
pub type Owner = (u32, u32);

/// Writes `content` to `path` with `mode` (and `owner` when given) atomically.
/// Returns whether anything changed on disk.
pub fn write_if_changed(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> io::Result<bool> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && owner.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g)
            && meta.len() == content.len() as u64
            && fs::read(path)? == content
        {
            return Ok(false);
        }
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no parent directory", path.display()),
            )
        })?;
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        if let Some((u, g)) = owner {
            std::os::unix::fs::fchown(&f, Some(u), Some(g))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

/// Points `link` at `target` atomically (new symlink, then rename over the old one).
/// Returns whether the link changed.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<bool> {
    if fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(false);
    }
    let dir = link.parent().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent", link.display()),
        )
    })?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        link.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_reports_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/env");
        assert!(write_if_changed(&p, b"A=1\n", 0o600, None).unwrap());
        assert!(!write_if_changed(&p, b"A=1\n", 0o600, None).unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // mode change alone is a change
        assert!(write_if_changed(&p, b"A=1\n", 0o644, None).unwrap());
        assert!(write_if_changed(&p, b"A=2\n", 0o644, None).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"A=2\n");
        // no temp files left behind
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn owner_is_applied() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        write_if_changed(&p, b"k", 0o600, Some((65534, 65534))).unwrap();
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        assert!(!write_if_changed(&p, b"k", 0o600, Some((65534, 65534))).unwrap());
        assert!(write_if_changed(&p, b"k", 0o600, Some((0, 0))).unwrap());
    }

    #[test]
    fn symlink_replacement() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("current");
        assert!(replace_symlink(Path::new("/a"), &link).unwrap());
        assert!(!replace_symlink(Path::new("/a"), &link).unwrap());
        assert!(replace_symlink(Path::new("/b"), &link).unwrap());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/b"));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
