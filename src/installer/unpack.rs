//! Defensive unpacking of a release `.tgz` into a staging directory.
//!
//! Owns: deciding which tar entries are acceptable and writing them, hashing every file
//! (sha256) as it is written, for MANIFEST.
//! Invariants:
//! - Only directories, regular files, symlinks whose target stays inside the tree and
//!   hard links to files already unpacked are written; anything else (absolute paths, `..`
//!   components, devices, FIFOs, sparse files, escaping links) fails the whole unpack
//!   with an error naming the entry.
//! - Entries are created only below real directories created by this unpack: a symlink
//!   is never followed while writing (a parent that is a symlink is an error), and files
//!   are created exclusively (a duplicate entry is an error, never an overwrite).
//! - A symlink target is relative, and after its leading `..` components (which may climb
//!   at most to the tree root) contains only normal names. By induction every accepted
//!   link resolves inside the tree, even through other links.
//! - Total file bytes and the entry count are capped before anything is written.
//! - Modes keep the permission bits (exec bits matter: `bin/concourse`), never setuid,
//!   setgid or sticky; directory modes are applied after all files are written.
//! - The gzip stream is read to its end (trailer CRC checked, trailing garbage rejected).
//!
//! Shape: [`unpack_tar_gz`] feeds each entry to an `Unpacker`, which admits it (the caps:
//! `Unpacker::admit` and the byte cap in `Unpacker::file`), checks its path and hands it
//! to one method per kind (`dir`, `file`, `symlink`, `hard_link`; every other kind is
//! refused by `reject`).
//!
//! Hazards: the caller owns the staging dir: on any error it must remove it, since a
//! partial tree is left behind. Ownership and mtimes are not restored (the charm runs as
//! root; nothing depends on them). The tarball is unpacked while it downloads, before
//! its digest is known: everything here must hold for hostile input.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::manifest::{hex, Entry};
use super::InstallError;
use crate::storage_coordinator::StorageError;

/// Caps on what a tarball may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Sum of the sizes of regular files.
    pub max_bytes: u64,
    /// Number of tar entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 16 << 30,
            max_entries: 100_000,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// Every entry, in archive order (directories created implicitly included).
    pub entries: Vec<Entry>,
    /// Regular files written (absolute paths), for fsync before publication.
    pub files: Vec<PathBuf>,
    /// Directories created (absolute paths), for fsync before publication.
    pub dirs: Vec<PathBuf>,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

/// Checks an archive path and returns it as a relative path of normal components
/// (`./a//b` → `a/b`; `.` or `./` → empty). Errors say why the entry is unsafe.
pub fn relative_entry_path(raw: &[u8]) -> Result<PathBuf, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8".to_string())?;
    if s.starts_with('/') {
        return Err("it is an absolute path".into());
    }
    if s.len() > 4096 {
        return Err("the name is longer than 4096 bytes".into());
    }
    let mut out = PathBuf::new();
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err("it contains a .. component".into()),
            c if c.len() > 255 => return Err("a path component is longer than 255 bytes".into()),
            c => out.push(c),
        }
    }
    // Paranoia: whatever Path thinks of it, only normal components may remain.
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err("it is not a plain relative path".into());
    }
    Ok(out)
}

/// Checks a symlink target for a link at `link` (relative to the tree root): relative,
/// leading `..` climbing no higher than the root, then normal names only.
pub fn check_symlink_target(link: &Path, target: &[u8]) -> Result<(), String> {
    let t = std::str::from_utf8(target).map_err(|_| "its target is not UTF-8".to_string())?;
    if t.is_empty() {
        return Err("it is a symlink with an empty target".into());
    }
    if t.starts_with('/') {
        return Err(format!("its symlink target {t} is absolute"));
    }
    let depth = link.parent().map_or(0, |p| p.components().count());
    let mut ups = 0usize;
    let mut seen_name = false;
    for comp in t.split('/') {
        match comp {
            "" | "." => {}
            ".." if seen_name => {
                return Err(format!(
                "its symlink target {t} has .. after a name (it could escape through another link)"
            ))
            }
            ".." => {
                ups += 1;
                if ups > depth {
                    return Err(format!("its symlink target {t} escapes the release tree"));
                }
            }
            _ => seen_name = true,
        }
    }
    Ok(())
}

/// Unpacks the gzip-compressed tar stream `src` into the existing, empty directory
/// `dest`. `label` names the tarball in errors.
pub fn unpack_tar_gz<R: Read>(
    src: R,
    dest: &Path,
    label: &str,
    limits: &UnpackLimits,
) -> Result<Unpacked, InstallError> {
    let mut u = Unpacker::new(dest, label, limits);
    let mut ar = tar::Archive::new(MultiGzDecoder::new(src));
    for entry in ar.entries().map_err(|e| u.bad(e))? {
        let mut entry = entry.map_err(|e| u.bad(e))?;
        u.entry(&mut entry)?;
    }
    // Read the rest of the gzip stream: checks the trailer (CRC, size) and that nothing
    // but tar padding follows.
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| u.bad(e))?;
    u.finish()
}

/// An archive entry that passed the path checks.
struct Named {
    /// The name as written in the archive (lossy UTF-8), for messages.
    name: String,
    /// The checked relative path.
    rel: PathBuf,
    /// Where it goes: `dest/rel`.
    path: PathBuf,
    /// Permission bits from the header (setuid, setgid and sticky dropped).
    mode: u32,
}

/// The state of one unpack: what was written so far and the caps.
struct Unpacker<'a> {
    dest: &'a Path,
    label: &'a str,
    limits: &'a UnpackLimits,
    out: Unpacked,
    /// Directories known to be real directories created by this unpack.
    known_dirs: HashSet<PathBuf>,
    /// Modes of directory entries, applied last.
    dir_modes: Vec<(PathBuf, u32)>,
    /// Regular files written: (size, sha256, mode), the targets hard links may use.
    files: HashMap<PathBuf, (u64, String, u32)>,
    buf: Vec<u8>,
    count: u64,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &'a Path, label: &'a str, limits: &'a UnpackLimits) -> Unpacker<'a> {
        Unpacker {
            dest,
            label,
            limits,
            out: Unpacked::default(),
            known_dirs: HashSet::new(),
            dir_modes: Vec::new(),
            files: HashMap::new(),
            buf: vec![0u8; 256 << 10],
            count: 0,
        }
    }

    /// Checks and writes one entry, by kind.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), InstallError> {
        self.admit()?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = relative_entry_path(&raw).map_err(|r| self.unsafe_entry(&name, r))?;
        if rel.as_os_str().is_empty() {
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(self.unsafe_entry(&name, "it has an empty path".into())),
            };
        }
        let e = Named {
            path: self.dest.join(&rel),
            mode: entry.header().mode().unwrap_or(0o644) & 0o777,
            name,
            rel,
        };
        let link = || entry.link_name_bytes().map(|t| t.into_owned());
        match kind {
            EntryType::Directory => self.dir(&e),
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                self.file(&e, entry, size)
            }
            EntryType::Symlink => {
                let target = link();
                self.symlink(&e, target)
            }
            EntryType::Link => {
                let target = link();
                self.hard_link(&e, target)
            }
            other => Err(self.reject(&e.name, other)),
        }
    }

    /// Counts the entry against the cap (extension headers included).
    fn admit(&mut self) -> Result<(), InstallError> {
        self.count += 1;
        if self.count > self.limits.max_entries {
            return Err(self.too_large(format!("more than {} entries", self.limits.max_entries)));
        }
        Ok(())
    }

    fn dir(&mut self, e: &Named) -> Result<(), InstallError> {
        self.ensure_dirs(&e.rel, &e.name)?;
        self.dir_modes.push((e.path.clone(), e.mode));
        self.out.entries.push(Entry::Dir {
            path: e.rel.to_string_lossy().into_owned(),
            mode: e.mode,
        });
        Ok(())
    }

    /// A regular file: created exclusively (0600 while written), copied and hashed,
    /// then given its mode; its size must match the header.
    fn file(&mut self, e: &Named, data: &mut impl Read, size: u64) -> Result<(), InstallError> {
        if self.out.bytes.saturating_add(size) > self.limits.max_bytes {
            let max = self.limits.max_bytes;
            return Err(self.too_large(format!(
                "files add up to more than {max} bytes (entry {})",
                e.name
            )));
        }
        self.ensure_parent(e)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&e.path)
            .map_err(|err| self.create_error(err, e))?;
        let (written, sha) = self.copy(data, &mut f, &e.path)?;
        if written != size {
            return Err(InstallError::BadArchive {
                tarball: self.label.to_string(),
                detail: format!("entry {} is truncated ({written} of {size} bytes)", e.name),
            });
        }
        f.set_permissions(fs::Permissions::from_mode(e.mode))
            .map_err(|err| StorageError::io("chmod", &e.path, err))?;
        start_writeback(&f);
        self.out.bytes += size;
        self.files
            .insert(e.rel.clone(), (size, sha.clone(), e.mode));
        self.out.files.push(e.path.clone());
        self.out.entries.push(Entry::File {
            path: e.rel.to_string_lossy().into_owned(),
            size,
            sha256: sha,
            mode: e.mode,
        });
        Ok(())
    }

    /// Copies an entry's data into `f`; returns the bytes written and their sha256.
    fn copy(
        &mut self,
        data: &mut impl Read,
        f: &mut fs::File,
        path: &Path,
    ) -> Result<(u64, String), InstallError> {
        let mut h = Sha256::new();
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.bad(e)),
            };
            f.write_all(&self.buf[..n])
                .map_err(|e| StorageError::io("write", path, e))?;
            h.update(&self.buf[..n]);
            written += n as u64;
        }
        Ok((written, hex(&h.finalize())))
    }

    /// A symlink whose target stays inside the tree ([`check_symlink_target`]).
    fn symlink(&mut self, e: &Named, target: Option<Vec<u8>>) -> Result<(), InstallError> {
        let target = target
            .ok_or_else(|| self.unsafe_entry(&e.name, "it is a symlink without a target".into()))?;
        check_symlink_target(&e.rel, &target).map_err(|r| self.unsafe_entry(&e.name, r))?;
        self.ensure_parent(e)?;
        let target = String::from_utf8_lossy(&target).into_owned();
        std::os::unix::fs::symlink(&target, &e.path).map_err(|err| self.create_error(err, e))?;
        self.out.entries.push(Entry::Symlink {
            path: e.rel.to_string_lossy().into_owned(),
            target,
        });
        Ok(())
    }

    /// A hard link to a regular file unpacked before it.
    fn hard_link(&mut self, e: &Named, target: Option<Vec<u8>>) -> Result<(), InstallError> {
        let raw = target.ok_or_else(|| {
            self.unsafe_entry(&e.name, "it is a hard link without a target".into())
        })?;
        let target = relative_entry_path(&raw).map_err(|r| {
            self.unsafe_entry(&e.name, format!("its hard link target is unsafe: {r}"))
        })?;
        let Some((size, sha256, mode)) = self.files.get(&target).cloned() else {
            return Err(self.unsafe_entry(
                &e.name,
                format!(
                    "it is a hard link to {}, which is not a file unpacked before it",
                    target.display()
                ),
            ));
        };
        self.ensure_parent(e)?;
        fs::hard_link(self.dest.join(&target), &e.path).map_err(|err| self.create_error(err, e))?;
        self.out.entries.push(Entry::File {
            path: e.rel.to_string_lossy().into_owned(),
            size,
            sha256,
            mode,
        });
        Ok(())
    }

    /// Why an entry of another kind is refused.
    fn reject(&self, name: &str, kind: EntryType) -> InstallError {
        let reason = match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                "it is a device or FIFO; releases contain only files, directories and links"
                    .to_string()
            }
            EntryType::GNUSparse => "it is a sparse file (not supported)".to_string(),
            other => format!(
                "its entry type {:?} is not supported",
                other.as_byte() as char
            ),
        };
        self.unsafe_entry(name, reason)
    }

    /// Applies directory modes, deepest first (so a read-only directory never blocked
    /// writes), and returns what was written.
    fn finish(mut self) -> Result<Unpacked, InstallError> {
        self.dir_modes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode) in &self.dir_modes {
            fs::set_permissions(p, fs::Permissions::from_mode(*mode))
                .map_err(|e| StorageError::io("chmod", p, e))?;
        }
        Ok(self.out)
    }

    fn ensure_parent(&mut self, e: &Named) -> Result<(), InstallError> {
        match e.rel.parent() {
            Some(parent) => self.ensure_dirs(parent, &e.name),
            None => Ok(()),
        }
    }

    /// Creates each missing directory of `rel_dir` under `dest`; every existing
    /// component must be a real directory (not a symlink).
    fn ensure_dirs(&mut self, rel_dir: &Path, entry: &str) -> Result<(), InstallError> {
        let mut cur = PathBuf::new();
        for comp in rel_dir.components() {
            cur.push(comp);
            if self.known_dirs.contains(&cur) {
                continue;
            }
            let p = self.dest.join(&cur);
            match fs::create_dir(&p) {
                Ok(()) => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(|e| StorageError::io("chmod", &p, e))?;
                    self.out.dirs.push(p);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                    if !is_dir {
                        return Err(self.unsafe_entry(
                            entry,
                            format!(
                                "its parent {} is not a directory (a link or file is in the way)",
                                cur.display()
                            ),
                        ));
                    }
                }
                Err(e) => return Err(StorageError::io("create directory", &p, e).into()),
            }
            self.known_dirs.insert(cur.clone());
        }
        Ok(())
    }

    fn create_error(&self, e: io::Error, entry: &Named) -> InstallError {
        if e.kind() == io::ErrorKind::AlreadyExists {
            self.unsafe_entry(&entry.name, "it is a duplicate of an earlier entry".into())
        } else {
            StorageError::io("create", &entry.path, e).into()
        }
    }

    fn unsafe_entry(&self, name: &str, reason: String) -> InstallError {
        InstallError::UnsafeEntry {
            tarball: self.label.to_string(),
            entry: name.to_string(),
            reason,
        }
    }

    fn too_large(&self, detail: String) -> InstallError {
        InstallError::TooLarge {
            tarball: self.label.to_string(),
            detail,
        }
    }

    /// A broken archive (truncated, not gzip, bad tar header, …).
    fn bad(&self, e: io::Error) -> InstallError {
        InstallError::BadArchive {
            tarball: self.label.to_string(),
            detail: if e.kind() == io::ErrorKind::UnexpectedEof {
                "the archive is truncated".to_string()
            } else {
                e.to_string()
            },
        }
    }
}

/// Starts writing a finished file's pages back now, so the fsync before publication
/// finds little left to do. Advisory: errors are ignored.
///
/// The one `unsafe` of the installer: no maintained crate wraps `sync_file_range(2)`
/// (`nix` 0.29 and `rustix` do not), and the other ways to start writeback (fsync per
/// file, `fadvise(DONTNEED)`) block or drop the page cache.
fn start_writeback(f: &fs::File) {
    // SAFETY: sync_file_range on a descriptor we own; no memory is involved.
    let _ = unsafe {
        nix::libc::sync_file_range(f.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;

    /// Raw tar entries, so hostile names are written exactly as given.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn tgz(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data, kind, mode, link): (&str, &[u8], EntryType, u32, Option<&str>) =
                match e {
                    E::Dir(n, m) => (n, b"", EntryType::Directory, *m, None),
                    E::File(n, d, m) => (n, d, EntryType::Regular, *m, None),
                    E::Sym(n, t) => (n, b"", EntryType::Symlink, 0o777, Some(t)),
                    E::Hard(n, t) => (n, b"", EntryType::Link, 0o644, Some(t)),
                    E::Fifo(n) => (n, b"", EntryType::Fifo, 0o644, None),
                };
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            // Write the name bytes directly: set_path refuses `..` and absolute paths.
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(t) = link {
                gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
            }
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<Unpacked, InstallError>) {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("stage");
        fs::create_dir(&dest).unwrap();
        let r = unpack_tar_gz(bytes, &dest, "t.tgz", &UnpackLimits::default());
        (d, r)
    }

    #[test]
    fn entry_paths() {
        assert_eq!(
            relative_entry_path(b"./concourse//bin/").unwrap(),
            Path::new("concourse/bin")
        );
        assert_eq!(relative_entry_path(b"./").unwrap(), Path::new(""));
        for (bad, why) in [
            (&b"/etc/passwd"[..], "absolute"),
            (b"concourse/../../x", ".."),
            (b"..", ".."),
            (b"a/\xff", "UTF-8"),
        ] {
            let e = relative_entry_path(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn symlink_targets() {
        let l = Path::new("concourse/bin/link");
        for ok in [
            "gdn",
            "./gdn",
            "../resource-types/git",
            "../../concourse",
            "sub/dir/x",
            ".",
        ] {
            check_symlink_target(l, ok.as_bytes()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "/tmp",
            "../../..",
            "../../../etc",
            "sub/../..",
            "a/../b",
            "x/..",
        ] {
            assert!(check_symlink_target(l, bad.as_bytes()).is_err(), "{bad}");
        }
        // At the root, no climbing at all.
        assert!(check_symlink_target(Path::new("top"), b"..").is_err());
    }

    #[test]
    fn unpacks_files_modes_links_and_hashes() {
        let bytes = tgz(&[
            E::Dir("concourse/", 0o755),
            E::Dir("concourse/bin/", 0o750),
            E::File(
                "concourse/bin/concourse",
                b"#!/bin/sh\necho 7.14.3\n",
                0o4755,
            ),
            E::File("concourse/resource-types/git/rootfs.tgz", b"data", 0o644),
            E::Sym("concourse/bin/alias", "concourse"),
            E::Sym("concourse/bin/types", "../resource-types"),
            E::Hard("concourse/bin/hard", "concourse/bin/concourse"),
        ]);
        let (d, r) = unpack(&bytes);
        let u = r.unwrap();
        let s = d.path().join("stage/concourse");
        let mode = |p: &str| fs::metadata(s.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode("bin/concourse"),
            0o755,
            "exec bits kept, setuid dropped"
        );
        assert_eq!(mode("resource-types/git/rootfs.tgz"), 0o644);
        assert_eq!(mode("bin"), 0o750);
        assert_eq!(
            fs::read_link(s.join("bin/alias")).unwrap(),
            Path::new("concourse")
        );
        assert_eq!(
            fs::read(s.join("bin/types/git/rootfs.tgz")).unwrap(),
            b"data"
        );
        assert_eq!(
            fs::read(s.join("bin/hard")).unwrap(),
            fs::read(s.join("bin/concourse")).unwrap()
        );
        assert_eq!(u.bytes, 22 + 4);
        assert_eq!(u.files.len(), 2);
        let sha = hex(&Sha256::digest(b"data"));
        assert!(u
            .entries
            .iter()
            .any(|e| matches!(e, Entry::File { path, sha256, .. }
            if path == "concourse/resource-types/git/rootfs.tgz" && *sha256 == sha)));
        // Implicit directories are created (resource-types/git had no entry).
        assert!(s.join("resource-types/git").is_dir());
    }

    fn expect_unsafe(entries: &[E], needle: &str) {
        let (d, r) = unpack(&tgz(entries));
        match r {
            Err(InstallError::UnsafeEntry { entry, reason, .. }) => {
                let msg = format!("{entry}: {reason}");
                assert!(msg.contains(needle), "{msg}");
            }
            other => panic!("expected UnsafeEntry containing {needle:?}, got {other:?}"),
        }
        // Nothing was written outside the staging dir.
        let outside: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("stage")]);
    }

    #[test]
    fn hostile_entries_are_rejected_by_name() {
        expect_unsafe(
            &[E::File("concourse/../../escape", b"x", 0o644)],
            "concourse/../../escape: it contains a ..",
        );
        expect_unsafe(
            &[E::File("/tmp/abs", b"x", 0o644)],
            "/tmp/abs: it is an absolute path",
        );
        expect_unsafe(
            &[E::Sym("concourse/bin/escape", "../../../../tmp")],
            "escapes the release tree",
        );
        expect_unsafe(&[E::Sym("c/l", "/etc")], "is absolute");
        expect_unsafe(&[E::Fifo("concourse/fifo")], "device or FIFO");
        expect_unsafe(
            &[E::File("a/x", b"1", 0o644), E::File("a/x", b"2", 0o644)],
            "duplicate",
        );
        expect_unsafe(
            &[E::Hard("a/h", "/etc/passwd")],
            "hard link target is unsafe",
        );
        expect_unsafe(&[E::Hard("a/h", "a/missing")], "not a file unpacked before");
        // A link that is fine by itself must not become a path to write through.
        expect_unsafe(
            &[
                E::Dir("c/", 0o755),
                E::Sym("c/up", "."),
                E::File("c/up/x", b"1", 0o644),
            ],
            "parent c/up is not a directory",
        );
        // The classic two-step escape: `r -> .` then `r/..` is refused lexically.
        expect_unsafe(
            &[E::Sym("r", "."), E::Sym("s", "r/..")],
            "has .. after a name",
        );
    }

    #[test]
    fn caps_and_corruption() {
        let bytes = tgz(&[E::File("a", &[7u8; 1000], 0o644)]);
        let d = tempfile::tempdir().unwrap();
        let r = unpack_tar_gz(
            &bytes[..],
            d.path(),
            "t.tgz",
            &UnpackLimits {
                max_bytes: 999,
                max_entries: 10,
            },
        );
        assert!(matches!(r, Err(InstallError::TooLarge { .. })), "{r:?}");
        assert!(!d.path().join("a").exists(), "nothing written past the cap");
        let many: Vec<E> = (0..5).map(|_| E::Dir("d/", 0o755)).collect();
        let r = unpack_tar_gz(
            &tgz(&many)[..],
            d.path(),
            "t.tgz",
            &UnpackLimits {
                max_bytes: 1,
                max_entries: 3,
            },
        );
        assert!(matches!(r, Err(InstallError::TooLarge { .. })), "{r:?}");
        // Truncated gzip stream.
        let (_d, r) = unpack(&bytes[..bytes.len() / 2]);
        assert!(matches!(r, Err(InstallError::BadArchive { .. })), "{r:?}");
        // Trailing garbage after the gzip member.
        let mut g = bytes.clone();
        g.extend_from_slice(b"garbage!garbage!");
        let (_d, r) = unpack(&g);
        assert!(matches!(r, Err(InstallError::BadArchive { .. })), "{r:?}");
        // Not gzip at all.
        let (_d, r) = unpack(b"plain text, not a tarball");
        assert!(matches!(r, Err(InstallError::BadArchive { .. })), "{r:?}");
        // Corrupted CRC in the trailer.
        let mut c = bytes.clone();
        let n = c.len();
        c[n - 8] ^= 0xff;
        let (_d, r) = unpack(&c);
        assert!(matches!(r, Err(InstallError::BadArchive { .. })), "{r:?}");
    }
}
