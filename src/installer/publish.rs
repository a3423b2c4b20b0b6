//! Staging and publication: the only code that creates `releases/<version>`.
//!
//! Owns: a fresh staging dir per attempt ([`fresh_staging`]) and [`publish`]: fsync of
//! every file and directory of the staging tree, MANIFEST written last, one
//! `rename(staging, releases/<version>)`, fsync of `releases/`.
//! Invariants: called only by the install lock holder, only after the tarball's digests
//! matched; `releases/<version>` is complete iff it exists (see
//! `docs/architecture.md#install-protocol`), because nothing is written into the tree
//! after the rename. A `releases/<version>` that appeared while we held the lock is
//! never overwritten.
//! Hazards: a crash before the rename leaves a staging dir (removed by the next lock
//! holder); a crash after it leaves a complete release.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::manifest::Manifest;
use super::unpack::Unpacked;
use super::InstallError;
use crate::checkpoint::checkpoint;
use crate::storage_coordinator::{atomic, layout, remove_tree, StorageError};

/// Replaces whatever is at `staging` (a previous attempt's tree) with an empty dir.
pub(crate) fn fresh_staging(staging: &Path) -> Result<(), InstallError> {
    remove_tree(staging)?;
    // Becomes releases/<version>: 0755 whatever the umask (crate::storage_coordinator
    // refuses a volume tree writable by group or others).
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(0o755)
            .create(staging)
            .map_err(|e| StorageError::io("create directory", staging, e))?;
    }
    Ok(())
}

/// fsyncs every file and directory of the staging tree, writes MANIFEST, and renames the
/// tree into place.
pub(crate) fn publish(
    staging: &Path,
    release: &Path,
    unpacked: &Unpacked,
    manifest: &Manifest,
) -> Result<(), InstallError> {
    for f in &unpacked.files {
        fs::File::open(f)
            .and_then(|h| h.sync_all())
            .map_err(|e| StorageError::io("fsync", f, e))?;
    }
    write_manifest(staging, manifest)?;
    let mut dirs: Vec<&PathBuf> = unpacked.dirs.iter().collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for d in dirs {
        atomic::fsync_dir(d)?;
    }
    atomic::fsync_dir(staging)?;
    checkpoint("install.staged");
    if fs::symlink_metadata(release).is_ok() {
        return Err(InstallError::Internal(format!(
            "{} appeared while this unit held the install lock; something writes releases/ without the lock",
            release.display()
        )));
    }
    fs::rename(staging, release)
        .map_err(|e| StorageError::io("publish (rename) into", release, e))?;
    let parent = release.parent().unwrap_or(Path::new("/"));
    atomic::fsync_dir(parent)?;
    Ok(())
}

/// `<staging>/MANIFEST`, created exclusively and fsynced.
fn write_manifest(staging: &Path, manifest: &Manifest) -> Result<(), InstallError> {
    let path = staging.join(layout::MANIFEST_FILE);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| StorageError::io("create", &path, e))?;
    f.write_all(&manifest.to_json())
        .and_then(|_| f.sync_all())
        .map_err(|e| StorageError::io("write", &path, e))?;
    Ok(())
}
