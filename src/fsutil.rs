//! Atomic, durable file replacement: the one way the charm replaces a file.
//!
//! Owns: [`replace_file`] (used by [`write_if_changed`] for the unit's local files and by
//! `storage_coordinator::atomic` for the volume's markers and state) and
//! [`replace_symlink`].
//!
//! Invariants: a reader sees the old or the new content, never a mix or an empty file:
//! the content goes to a temp file in the same directory, is fsynced, renamed over the
//! target, then the directory is fsynced so the rename survives a crash. The temp file
//! has a random name (`.<name>.tmp-<random>`) and is created with `O_CREAT | O_EXCL`
//! (`tempfile`), so a file or symlink planted at a predictable name is never opened or
//! followed; it is mode 0600 until the final mode and owner are applied to the open
//! descriptor, so a secret is never readable by others even for a moment. A failed
//! write removes its temp file.
//!
//! Hazards: a crash may leave a `.<name>.tmp-*` file behind (harmless; the volume's lock
//! holder removes them, see `storage_coordinator::atomic::remove_stale_temps`). Only
//! [`write_if_changed`] creates missing parent directories: the volume's writers must not
//! recreate an unmounted volume on the root disk.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use tempfile::NamedTempFile;

/// Owner of a written file (uid, gid).
pub type Owner = (u32, u32);

/// Writes `content` to `path` with `mode` (and `owner` when given) atomically, creating
/// missing parent directories. Returns whether anything changed on disk: nothing is
/// written when content, mode and owner already match, so callers can use the flag to
/// decide on restarts.
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
    let (dir, _) = split(path)?;
    create_dirs(dir)?;
    replace_file(path, content, mode, owner)?;
    Ok(true)
}

/// Replaces `path` with `content` atomically and durably (see the module docs): `mode`
/// and `owner` apply to the new file. The parent directory must exist.
pub fn replace_file(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let mut tmp = create_temp(dir, &temp_prefix(name))?;
    let f = tmp.as_file_mut();
    f.write_all(content)?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::fchown(&*f, Some(u), Some(g))?;
    }
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    // On failure the returned temp file is dropped, which removes it.
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// Points `link` at `target` atomically (a new symlink with a random name, then a rename
/// over the old one), creating missing parent directories. Returns whether the link
/// changed.
pub fn replace_symlink(target: &Path, link: &Path) -> io::Result<bool> {
    if fs::read_link(link).ok().as_deref() == Some(target) {
        return Ok(false);
    }
    let (dir, name) = split(link)?;
    create_dirs(dir)?;
    let prefix = temp_prefix(name);
    let tmp = temp_builder(&prefix).make_in(dir, |p| std::os::unix::fs::symlink(target, p))?;
    tmp.persist(link).map_err(|e| e.error)?;
    fsync_dir(dir)?;
    Ok(true)
}

/// Creates `dir` and its missing parents 0755 (whatever the umask: the charm writes
/// there as root, nobody else may).
fn create_dirs(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The temp name prefix of a file: `.<name>.tmp-`.
fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// Random temp names `<prefix><12 random characters>`.
fn temp_builder(prefix: &OsStr) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).rand_bytes(12);
    b
}

/// Creates a new temp file in `dir`: random name, `O_CREAT | O_EXCL | O_NOFOLLOW`,
/// mode 0600. Errors keep their OS error code (volume full, read-only, …).
pub(crate) fn create_temp(dir: &Path, prefix: &OsStr) -> io::Result<NamedTempFile> {
    temp_builder(prefix).make_in(dir, |p| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(p)
    })
}

/// `(directory, file name)` of a file path (`.` for a bare name).
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
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
    fn planted_symlink_at_the_old_predictable_temp_name_is_not_followed() {
        // The temp name used to be `.<name>.tmp-<pid>`, opened without O_EXCL: whoever
        // could write the directory could plant a symlink there and have root overwrite
        // (and chown) its target.
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.path().join("keys/authorized_worker_keys");
        fs::create_dir(d.path().join("keys")).unwrap();
        let planted = d.path().join(format!(
            "keys/.authorized_worker_keys.tmp-{}",
            std::process::id()
        ));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(write_if_changed(&p, b"key", 0o640, Some((65534, 65534))).unwrap());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::metadata(&victim).unwrap().uid(), 0);
        assert_eq!(fs::read(&p).unwrap(), b"key");
        assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
    }

    #[test]
    fn temp_files_are_random_exclusive_and_removed_on_failure() {
        let d = tempfile::tempdir().unwrap();
        // A directory in the way: the rename fails after the temp file was written.
        let p = d.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("x"), b"").unwrap();
        assert!(replace_file(&p, b"data", 0o644, None).is_err());
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("target")]);
        // A missing parent is an error, never created.
        let gone = d.path().join("gone/file");
        assert!(replace_file(&gone, b"x", 0o644, None).is_err());
        assert!(!d.path().join("gone").exists());
        assert_eq!(temp_prefix(OsStr::new("env")), ".env.tmp-");
        // The OS error survives (callers classify read-only and full volumes by it).
        let e = replace_file(&gone, b"x", 0o644, None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(nix::libc::ENOENT), "{e}");
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
