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
//! - Parsing is bounded whatever the input: entries are read raw, so an extension header
//!   (GNU long name or link, PAX records) is refused by its declared size before a byte of
//!   it is read ([`UnpackLimits::max_extension_bytes`]); total file bytes and the entry
//!   count are capped before anything is written; the whole inflated stream is capped
//!   ([`UnpackLimits::max_inflated_bytes`], a gzip bomb stops there); at most
//!   [`MAX_TRAILING_BYTES`] may follow the end of the archive.
//! - Extension headers apply as GNU tar and PAX define them (PAX `path`/`linkpath`,
//!   GNU long names); a PAX `size` must equal the header's (the stream is framed by the
//!   header), PAX sparse files are refused.
//! - Modes keep the permission bits (exec bits matter: `bin/concourse`) without group or
//!   other write, never setuid, setgid or sticky; directory modes are applied after all
//!   files are written. Root runs these files: nobody else may change them.
//! - A path the filesystem cannot hold (`ENAMETOOLONG`) is an unsafe entry (permanent),
//!   never an I/O error to retry.
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

/// Longest path the kernel takes (`PATH_MAX`, with its NUL).
const PATH_MAX: usize = 4096;
/// Why an entry whose path the filesystem cannot hold is refused.
const TOO_LONG: &str = "its path is too long for this filesystem (ENAMETOOLONG)";
use super::InstallError;
use crate::storage_coordinator::StorageError;

/// Caps on what a tarball may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Sum of the sizes of regular files.
    pub max_bytes: u64,
    /// Number of tar entries (extension headers included).
    pub max_entries: u64,
    /// Size of one extension header (GNU long name or link, PAX records): they are read
    /// into memory.
    pub max_extension_bytes: u64,
    /// The whole inflated stream: files, headers, padding and anything after the end.
    pub max_inflated_bytes: u64,
}

/// Inflated bytes allowed after the tar end-of-archive blocks (GNU tar pads to 10 KiB
/// records; other writers use more, never megabytes).
pub const MAX_TRAILING_BYTES: u64 = 1 << 20;

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 16 << 30,
            max_entries: 100_000,
            max_extension_bytes: 64 << 10,
            max_inflated_bytes: 17 << 30,
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
    let inflated = Capped::new(MultiGzDecoder::new(src), limits.max_inflated_bytes);
    let mut ar = tar::Archive::new(inflated);
    // Raw entries: the extension headers come to us unread, so their size is checked
    // before a byte of them is read (tar would read each one whole into memory).
    let mut ext = Extensions::default();
    for entry in ar.entries().map_err(|e| u.bad(e))?.raw(true) {
        let mut entry = entry.map_err(|e| u.bad(e))?;
        u.admit()?;
        match entry.header().entry_type() {
            EntryType::GNULongName => ext.long_name = Some(u.extension(&mut entry, true)?),
            EntryType::GNULongLink => ext.long_link = Some(u.extension(&mut entry, true)?),
            EntryType::XHeader => ext.pax = Some(u.extension(&mut entry, false)?),
            EntryType::XGlobalHeader => drop(u.extension(&mut entry, false)?),
            _ => u.entry(&mut entry, std::mem::take(&mut ext))?,
        }
    }
    if ext != Extensions::default() {
        return Err(u.bad(io::Error::other(
            "an extension header at the end describes no entry",
        )));
    }
    // Read the rest of the gzip stream: checks the trailer (CRC, size); a little tar
    // padding may follow, never more than MAX_TRAILING_BYTES.
    let mut rest = ar.into_inner();
    let trailing = io::copy(
        &mut (&mut rest).take(MAX_TRAILING_BYTES + 1),
        &mut io::sink(),
    )
    .map_err(|e| u.bad(e))?;
    if trailing > MAX_TRAILING_BYTES {
        return Err(u.too_large(format!(
            "more than {MAX_TRAILING_BYTES} bytes of data after the end of the archive"
        )));
    }
    u.finish()
}

/// The extension headers read for the next entry.
#[derive(Debug, Default, PartialEq, Eq)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// A reader that fails once more than `max` bytes came through (the inflated stream:
/// a gzip bomb stops here).
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R> Capped<R> {
    fn new(inner: R, max: u64) -> Capped<R> {
        Capped {
            inner,
            left: max,
            max,
        }
    }
}

/// The error [`Capped`] fails with; recognised by [`Unpacker::bad`].
#[derive(Debug)]
struct InflatedTooLarge(u64);

impl std::fmt::Display for InflatedTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the archive inflates to more than {} bytes", self.0)
    }
}

impl std::error::Error for InflatedTooLarge {}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more than allowed, or the end: only the inner reader knows.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(InflatedTooLarge(self.max))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
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

    /// Reads an extension header's content (a GNU long name or link: `name`, trailing
    /// NULs dropped; PAX records otherwise), refusing one over the cap before reading.
    fn extension<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: bool,
    ) -> Result<Vec<u8>, InstallError> {
        let size = entry.size();
        let max = self.limits.max_extension_bytes;
        if size > max {
            return Err(self.too_large(format!(
                "an extension header ({:?}) of {size} bytes; at most {max} are allowed",
                entry.header().entry_type()
            )));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut data).map_err(|e| self.bad(e))?;
        if name {
            while data.last() == Some(&0) {
                data.pop();
            }
        }
        Ok(data)
    }

    /// The entry's path and link target, with its extension headers applied: PAX
    /// `path`/`linkpath` over GNU long names over the header. A PAX `size` must agree with
    /// the header (raw entries are framed by the header's size), and PAX sparse files are
    /// refused like GNU ones.
    fn names<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        ext: Extensions,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), InstallError> {
        let mut path = ext
            .long_name
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let mut link = ext
            .long_link
            .or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        let shown = |p: &[u8]| {
            String::from_utf8_lossy(p)
                .chars()
                .take(200)
                .collect::<String>()
        };
        if let Some(records) = &ext.pax {
            for r in tar::PaxExtensions::new(records) {
                let r = r.map_err(|e| self.bad(e))?;
                match r.key_bytes() {
                    b"path" => path = r.value_bytes().to_vec(),
                    b"linkpath" => link = Some(r.value_bytes().to_vec()),
                    b"size" if r.value().ok() != Some(entry.size().to_string().as_str()) => {
                        return Err(self.unsafe_entry(
                            &shown(&path),
                            "its PAX size disagrees with its header".into(),
                        ))
                    }
                    k if k.starts_with(b"GNU.sparse.") => {
                        return Err(self.unsafe_entry(
                            &shown(&path),
                            "it is a sparse file (not supported)".into(),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok((path, link))
    }

    /// Checks and writes one entry, by kind, with the extension headers read before it.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        ext: Extensions,
    ) -> Result<(), InstallError> {
        let kind = entry.header().entry_type();
        let (raw, link) = self.names(entry, ext)?;
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = relative_entry_path(&raw).map_err(|r| self.unsafe_entry(&name, r))?;
        if rel.as_os_str().is_empty() {
            return match kind {
                EntryType::Directory => Ok(()),
                _ => Err(self.unsafe_entry(&name, "it has an empty path".into())),
            };
        }
        let path = self.dest.join(&rel);
        if path.as_os_str().len() >= PATH_MAX {
            return Err(self.unsafe_entry(&name, TOO_LONG.into()));
        }
        let e = Named {
            path,
            mode: entry.header().mode().unwrap_or(0o644) & 0o777 & !0o022,
            name,
            rel,
        };
        let link = || link.clone();
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
                Err(e) if e.raw_os_error() == Some(nix::libc::ENAMETOOLONG) => {
                    return Err(self.unsafe_entry(entry, TOO_LONG.into()))
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
        } else if e.raw_os_error() == Some(nix::libc::ENAMETOOLONG) {
            self.unsafe_entry(&entry.name, TOO_LONG.into())
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

    /// A broken archive (truncated, not gzip, bad tar header, …), or one that inflates
    /// past the cap.
    fn bad(&self, e: io::Error) -> InstallError {
        if let Some(big) = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<InflatedTooLarge>())
        {
            return self.too_large(big.to_string());
        }
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
                ..UnpackLimits::default()
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
                ..UnpackLimits::default()
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

    /// Counts the bytes an unpack reads from its source.
    struct Counting<R> {
        inner: R,
        read: std::rc::Rc<std::cell::Cell<u64>>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n as u64);
            Ok(n)
        }
    }

    /// Unpacks `bytes`, returning the result and how many bytes of them were read.
    fn unpack_counted(
        bytes: &[u8],
        limits: &UnpackLimits,
    ) -> (Result<Unpacked, InstallError>, u64) {
        let d = tempfile::tempdir().unwrap();
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let src = Counting {
            inner: bytes,
            read: read.clone(),
        };
        let r = unpack_tar_gz(src, d.path(), "t.tgz", limits);
        (r, read.get())
    }

    /// A tar (gzip without compression, so bytes read = bytes inflated) with an
    /// extension member of `kind` declaring `size` bytes of `fill`, then a file.
    fn with_extension(kind: EntryType, size: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::none()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_cksum();
        b.append(&h, io::repeat(b'a').take(size)).unwrap();
        let mut f = tar::Header::new_gnu();
        f.set_size(1);
        f.set_mode(0o644);
        b.append_data(&mut f, "concourse/x", &b"x"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn world_writable_modes_are_masked_on_unpack() {
        let bytes = tgz(&[
            E::Dir("concourse/", 0o777),
            E::Dir("concourse/bin/", 0o775),
            E::File("concourse/bin/concourse", b"#!/bin/sh\n", 0o777),
            E::File("concourse/data", b"d", 0o666),
            E::File("concourse/sticky", b"s", 0o1777),
        ]);
        let (d, r) = unpack(&bytes);
        let u = r.unwrap();
        let s = d.path().join("stage/concourse");
        let mode = |p: &str| fs::metadata(s.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(""), 0o755);
        assert_eq!(mode("bin"), 0o755);
        assert_eq!(mode("bin/concourse"), 0o755);
        assert_eq!(mode("data"), 0o644);
        assert_eq!(mode("sticky"), 0o755);
        assert!(
            u.entries.iter().all(|e| match e {
                Entry::File { mode, .. } | Entry::Dir { mode, .. } => mode & 0o022 == 0,
                Entry::Symlink { .. } => true,
            }),
            "MANIFEST records the masked modes"
        );
    }

    #[test]
    fn a_huge_gnu_long_name_fails_at_its_header_without_being_read() {
        // tar reads a long-name member whole into memory: one such header could take all
        // of it.
        for kind in [
            EntryType::GNULongName,
            EntryType::GNULongLink,
            EntryType::XHeader,
            EntryType::XGlobalHeader,
        ] {
            let bytes = with_extension(kind, 64 << 20);
            let (r, read) = unpack_counted(&bytes, &UnpackLimits::default());
            assert!(
                matches!(&r, Err(InstallError::TooLarge { detail, .. }) if detail.contains("extension header")),
                "{kind:?}: {r:?}"
            );
            assert!(
                read < 4 << 20,
                "{kind:?}: read {read} bytes of a 64 MiB header"
            );
        }
    }

    #[test]
    fn data_after_the_end_of_the_archive_is_bounded() {
        // The tar end, then 32 MiB more in the same gzip stream: it used to be drained to
        // the end (any size) to check the trailer.
        let mut b = tar::Builder::new(Vec::new());
        let mut f = tar::Header::new_gnu();
        f.set_size(1);
        f.set_mode(0o644);
        b.append_data(&mut f, "concourse/x", &b"x"[..]).unwrap();
        let mut raw = b.into_inner().unwrap();
        raw.extend(std::iter::repeat_n(0u8, 32 << 20));
        let mut gz = GzEncoder::new(Vec::new(), Compression::none());
        gz.write_all(&raw).unwrap();
        let bytes = gz.finish().unwrap();
        let (r, read) = unpack_counted(&bytes, &UnpackLimits::default());
        assert!(
            matches!(&r, Err(InstallError::TooLarge { detail, .. }) if detail.contains("after the end")),
            "{r:?}"
        );
        assert!(read < 4 << 20, "read {read} bytes");
        // Ordinary padding (GNU tar pads to 10 KiB records) is fine.
        let (_d, r) = unpack(&tgz(&[E::File("concourse/y", b"y", 0o644)]));
        r.unwrap();
    }

    #[test]
    fn a_path_too_long_for_the_filesystem_is_an_unsafe_entry_not_an_io_error() {
        // Every component is short enough, the whole is not (with the staging path in
        // front): ENAMETOOLONG used to be an I/O error, retried forever.
        let name: String = (0..20).map(|i| format!("{i:0>203}/")).collect::<String>() + "f";
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &name, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let (_d, r) = unpack(&bytes);
        match r {
            Err(e @ InstallError::UnsafeEntry { .. }) => {
                assert!(
                    e.to_string().contains("too long"),
                    "{}",
                    &e.to_string()[..100]
                );
                assert_eq!(e.class(), crate::storage_coordinator::ErrorClass::Permanent);
            }
            Err(e) => panic!("{}", &e.to_string()[..300]),
            Ok(_) => panic!("unpacked"),
        }
    }

    #[test]
    fn long_names_and_pax_paths_still_unpack() {
        let long = format!("concourse/{}/file", "d".repeat(150));
        let link = format!("concourse/{}/link", "l".repeat(120));
        let target = format!("../{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"data"[..]).unwrap(); // GNU long name
        let mut s = tar::Header::new_gnu();
        s.set_entry_type(EntryType::Symlink);
        s.set_size(0);
        b.append_link(&mut s, &link, &target).unwrap(); // long name and long link
        b.append_pax_extensions([("path", "concourse/pax-named".as_bytes())])
            .unwrap();
        let mut p = tar::Header::new_ustar();
        p.set_size(3);
        p.set_mode(0o600);
        p.set_path("concourse/placeholder").unwrap();
        p.set_cksum();
        b.append(&p, &b"pax"[..]).unwrap();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let (d, r) = unpack(&bytes);
        r.unwrap();
        let s = d.path().join("stage");
        assert_eq!(fs::read(s.join(&long)).unwrap(), b"data");
        assert_eq!(fs::read(s.join(&link)).unwrap(), b"data");
        assert_eq!(fs::read(s.join("concourse/pax-named")).unwrap(), b"pax");
        assert!(!s.join("concourse/placeholder").exists());
    }

    #[test]
    fn a_pax_size_that_disagrees_with_the_header_is_refused() {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        b.append_pax_extensions([("size", "3".as_bytes())]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(512);
        h.set_mode(0o644);
        h.set_path("concourse/x").unwrap();
        h.set_cksum();
        b.append(&h, &[0u8; 512][..]).unwrap();
        let bytes = b.into_inner().unwrap().finish().unwrap();
        let (_d, r) = unpack(&bytes);
        assert!(
            matches!(&r, Err(InstallError::UnsafeEntry { reason, .. }) if reason.contains("PAX size")),
            "{r:?}"
        );
    }

    #[test]
    fn the_inflated_stream_is_capped() {
        // Many small files within the file-byte cap, past the stream cap (headers and
        // padding count there too).
        let files: Vec<(String, Vec<u8>)> = (0..64)
            .map(|i| (format!("concourse/f{i}"), vec![1u8; 1000]))
            .collect();
        let entries: Vec<E> = files
            .iter()
            .map(|(n, d)| E::File(n.as_str(), d.as_slice(), 0o644))
            .collect();
        let bytes = tgz(&entries);
        let limits = UnpackLimits {
            max_inflated_bytes: 32 << 10,
            ..UnpackLimits::default()
        };
        let (r, _) = unpack_counted(&bytes, &limits);
        assert!(
            matches!(&r, Err(InstallError::TooLarge { detail, .. }) if detail.contains("inflates to more than 32768 bytes")),
            "{r:?}"
        );
        let (r, _) = unpack_counted(&bytes, &UnpackLimits::default());
        assert_eq!(r.unwrap().files.len(), 64);
    }
}
