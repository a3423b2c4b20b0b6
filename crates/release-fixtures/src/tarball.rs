//! Generated Concourse release tarballs (`concourse-<version>-linux-amd64.tgz`) for tests.
//!
//! Owns: writing a tarball with the real layout (upstream builds it in concourse/concourse
//! `ci/tasks/scripts/concourse-build-linux`) whose `concourse/bin/concourse` is the fake
//! binary of [`crate::fake_concourse`], padded with
//! pseudo-random (incompressible) bytes spread over `resource-types/<t>/rootfs.tgz` so the
//! file is about [`ReleaseSpec::padded_size_bytes`] long; the hostile variants
//! ([`Variant`]); and a cache directory so a test suite generates each tarball once.
//!
//! Layout written, in this order (the hostile entries of a variant come right after `bin/`,
//! i.e. in the middle of the stream, so an unpacker has already written files when it meets
//! them):
//! ```text
//! concourse/  concourse/bin/{concourse,gdn,containerd,containerd-shim-runc-v2,ctr,runc,init}
//! [variant entries]
//! concourse/fly-assets/fly-linux-amd64.tgz          (a real tgz holding a fake `fly`)
//! concourse/resource-types/<t>/{resource_metadata.json,rootfs.tgz}  t = git registry-image s3 time
//! ```
//!
//! Invariants:
//! - Generation streams: memory use is bounded (about 10 MiB) whatever the size; the gzip
//!   stream is written by `flate2` at level 0 (stored deflate blocks): a valid gzip that any
//!   decoder reads, which is also what real releases mostly are (their bulk is already
//!   compressed `rootfs.tgz` files). sha1/sha256 are computed on a helper thread while
//!   writing. Padding cycles through one 1 MiB pseudo-random block from a different offset
//!   per file: far beyond deflate's 32 KiB window, so gzip cannot shrink it.
//! - Content is a pure function of the spec (seeded PRNG, fixed mtimes): the same spec
//!   always gives the same bytes and hashes.
//! - A cached tarball is current and complete: its key includes a fingerprint of the generator
//!   and the fake binary; it is generated into a temporary directory, its metadata
//!   (`tarball.json`) written, and the directory renamed into place under a per-key lock.
//!
//! Hazards: `rootfs.tgz` files hold random bytes, not a gzip; the hostile variants really
//! contain escaping entries, so never unpack them with a tool that honours them outside a
//! scratch namespace.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha1::Digest;

use crate::fake_concourse::{self, Behaviour};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("cannot write tarball {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read tarball {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("tarball cache {path}: {source}")]
    Cache { path: PathBuf, source: io::Error },
    #[error("invalid version {0:?}: use digits, letters, '.', '-' and '_' only")]
    BadVersion(String),
}

/// The kind of tarball to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// A well-formed release.
    Normal,
    /// `bin/concourse` exits 1 on `web`, `worker` and `--version`.
    BrokenBinary,
    /// Contains a regular file entry named `concourse/../../escape`.
    DotDotEntry,
    /// Contains a regular file entry named `/tmp/concourse-absolute-escape`.
    AbsolutePath,
    /// Contains a symlink `concourse/bin/escape -> ../../../../../../../../../tmp` followed by a
    /// file entry written through it, `concourse/bin/escape/concourse-symlink-escape`.
    SymlinkEscape,
    /// `--version` prints [`fake_concourse::WRONG_VERSION`].
    WrongVersion,
    /// `--version` works but `web` and `worker` exit 1 at start (a release that installs
    /// and verifies, then fails to run).
    CrashOnStart,
    /// Web runs; `worker` exits 1 at start (an upgrade that fails after web switched).
    WorkerCrashOnStart,
}

impl Variant {
    /// Stable short name, used in cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::BrokenBinary => "broken-binary",
            Variant::DotDotEntry => "dotdot-entry",
            Variant::AbsolutePath => "absolute-path",
            Variant::SymlinkEscape => "symlink-escape",
            Variant::WrongVersion => "wrong-version",
            Variant::CrashOnStart => "crash-on-start",
            Variant::WorkerCrashOnStart => "worker-crash-on-start",
        }
    }

    fn behaviour(self) -> Behaviour {
        match self {
            Variant::BrokenBinary => Behaviour::Broken,
            Variant::WrongVersion => Behaviour::WrongVersion,
            Variant::CrashOnStart => Behaviour::CrashOnStart,
            Variant::WorkerCrashOnStart => Behaviour::WorkerCrashOnStart,
            _ => Behaviour::Normal,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// e.g. `7.14.3` (no leading `v`).
    pub version: String,
    /// Approximate size of the `.tgz` file; the result is within a few KiB below it (never
    /// smaller than the unpadded layout, about 20 KiB).
    pub padded_size_bytes: u64,
    pub variant: Variant,
}

impl ReleaseSpec {
    pub fn new(version: &str, padded_size_bytes: u64, variant: Variant) -> Self {
        ReleaseSpec {
            version: version.to_string(),
            padded_size_bytes,
            variant,
        }
    }

    /// Cache key: `<version>-<size>-<variant>-<fingerprint>`, where the fingerprint changes
    /// whenever the generator or the fake binary changes (so a stale cache is never used).
    pub fn key(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.version,
            self.padded_size_bytes,
            self.variant.as_str(),
            generator_fingerprint()
        )
    }
}

/// A generated tarball.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tarball {
    pub spec: ReleaseSpec,
    /// Absolute path of the `.tgz`.
    pub path: PathBuf,
    /// `concourse-<version>-linux-amd64.tgz`.
    pub file_name: String,
    /// Size of the `.tgz` in bytes.
    pub size: u64,
    /// Lowercase hex sha1 of the `.tgz` (what upstream's `.sha1` holds).
    pub sha1_hex: String,
    /// Lowercase hex sha256 of the `.tgz`.
    pub sha256_hex: String,
    /// Sum of the sizes of all regular files in the archive.
    pub unpacked_size: u64,
}

impl Tarball {
    /// Content of the upstream-style checksum file: `<sha1>  <file name>\n`.
    pub fn sha1_file_content(&self) -> String {
        format!("{}  {}\n", self.sha1_hex, self.file_name)
    }
}

/// Bump when the archive layout or padding changes (the script is hashed anyway).
const GENERATOR_REVISION: &str = "2";

/// 8 hex digits identifying the generator revision and the fake binary's template.
pub fn generator_fingerprint() -> String {
    let d = sha2::Sha256::digest(
        format!("{GENERATOR_REVISION}\n{}", fake_concourse::SCRIPT_TEMPLATE).as_bytes(),
    );
    hex(&d[..4])
}

/// `concourse-<version>-linux-amd64.tgz`.
pub fn tarball_file_name(version: &str) -> String {
    format!("concourse-{version}-linux-amd64.tgz")
}

/// Resource types written under `concourse/resource-types/`.
pub const RESOURCE_TYPES: [&str; 4] = ["git", "registry-image", "s3", "time"];

/// Stub binaries written under `concourse/bin/` beside `concourse`.
pub const STUB_BINARIES: [&str; 6] = [
    "gdn",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "init",
];

/// Size used by [`generate_benchmark_tarball`]: 512 MiB.
pub const BENCHMARK_SIZE: u64 = 512 << 20;

const MTIME: u64 = 1_700_000_000;

fn check_version(version: &str) -> Result<(), TarballError> {
    let ok = !version.is_empty()
        && version.len() <= 40
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !version.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(TarballError::BadVersion(version.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming writers

/// splitmix64: deterministic and fast.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Size of the random block that padding streams cycle through. Far larger than deflate's
/// 32 KiB window, so gzip cannot compress the padding.
const RANDOM_BLOCK: usize = 1 << 20;

fn random_block(seed: u64) -> Arc<Vec<u8>> {
    let mut rng = SplitMix(seed);
    let mut block = vec![0u8; RANDOM_BLOCK];
    for c in block.chunks_exact_mut(8) {
        c.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Arc::new(block)
}

/// An incompressible stream of `remaining` bytes: the shared random block, read cyclically
/// from a per-stream offset (cheap even in unoptimised builds).
struct Padding {
    block: Arc<Vec<u8>>,
    pos: usize,
    remaining: u64,
}

impl Read for Padding {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.block.len().saturating_sub(self.pos);
        let n = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len())
            .min(avail);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos >= self.block.len() {
            self.pos = 0;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn seed_of(spec: &ReleaseSpec, salt: u64) -> u64 {
    let digest = sha2::Sha256::digest(format!("{}#{salt}", spec.key()).as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(b)
}

/// Writes bytes through to a file while two helper threads hash them (sha1, sha256), so
/// hashing overlaps writing.
struct HashingWriter {
    file: File,
    txs: Vec<mpsc::SyncSender<Arc<Vec<u8>>>>,
    sha1: Option<thread::JoinHandle<String>>,
    sha256: Option<thread::JoinHandle<String>>,
    len: u64,
}

fn hasher_thread<D: Digest + Send + 'static>(
    rx: mpsc::Receiver<Arc<Vec<u8>>>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut d = D::new();
        for chunk in rx {
            d.update(chunk.as_slice());
        }
        hex(&d.finalize())
    })
}

impl HashingWriter {
    fn new(file: File) -> Self {
        let (tx1, rx1) = mpsc::sync_channel(8);
        let (tx2, rx2) = mpsc::sync_channel(8);
        HashingWriter {
            file,
            txs: vec![tx1, tx2],
            sha1: Some(hasher_thread::<sha1::Sha1>(rx1)),
            sha256: Some(hasher_thread::<sha2::Sha256>(rx2)),
            len: 0,
        }
    }

    /// Closes the channels and returns (file, bytes, sha1 hex, sha256 hex).
    fn finish(mut self) -> io::Result<(File, u64, String, String)> {
        self.txs.clear();
        let join = |h: Option<thread::JoinHandle<String>>| {
            h.ok_or_else(|| io::Error::other("hasher already finished"))?
                .join()
                .map_err(|_| io::Error::other("hashing thread panicked"))
        };
        let sha1 = join(self.sha1.take())?;
        let sha256 = join(self.sha256.take())?;
        Ok((self.file, self.len, sha1, sha256))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.txs.is_empty() {
            return Err(io::Error::other("write after finish"));
        }
        let n = self.file.write(buf)?;
        let chunk = Arc::new(buf[..n].to_vec());
        for tx in &self.txs {
            tx.send(Arc::clone(&chunk))
                .map_err(|_| io::Error::other("hashing thread stopped"))?;
        }
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Largest tar stream whose stored-block gzip fits in `gz_len` bytes: the gzip header and
/// trailer (18 bytes), a small margin, and 5 bytes of block header per stored block. Blocks
/// are assumed as small as 16 KiB (zlib's stored blocks are at most 64 KiB, and bounded by
/// its output buffer), so the file never exceeds `gz_len` and is within 0.03% below it.
fn tar_len_for_gz(gz_len: u64) -> u64 {
    const BLOCK: u64 = 16 * 1024;
    gz_len.saturating_sub(64) * BLOCK / (BLOCK + 5)
}

// ---------------------------------------------------------------------------------------------
// Archive content

enum Body {
    Bytes(Vec<u8>),
    Random { offset: usize, len: u64 },
}

enum Kind {
    Dir,
    File(Body),
    Symlink(String),
}

struct Entry {
    name: String,
    mode: u32,
    kind: Kind,
}

impl Entry {
    fn dir(name: &str) -> Self {
        Entry {
            name: name.to_string(),
            mode: 0o755,
            kind: Kind::Dir,
        }
    }
    fn file(name: &str, mode: u32, bytes: Vec<u8>) -> Self {
        Entry {
            name: name.to_string(),
            mode,
            kind: Kind::File(Body::Bytes(bytes)),
        }
    }
    fn data_len(&self) -> u64 {
        match &self.kind {
            Kind::File(Body::Bytes(b)) => b.len() as u64,
            Kind::File(Body::Random { len, .. }) => *len,
            _ => 0,
        }
    }
    /// Bytes this entry takes in the tar stream (header + data padded to 512).
    fn tar_len(&self) -> u64 {
        512 + self.data_len().div_ceil(512) * 512
    }
}

fn stub_script(name: &str, version: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\n# fake {name} from a juju-sim release fixture (concourse {version})\n\
         echo \"fake {name} {version}\"\n"
    )
    .into_bytes()
}

fn fly_asset(version: &str) -> Result<Vec<u8>, io::Error> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let script = format!("#!/bin/sh\necho \"fly version {version} (fake)\"\n");
    let mut h = tar::Header::new_gnu();
    h.set_path("fly")?;
    h.set_size(script.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(MTIME);
    h.set_cksum();
    b.append(&h, script.as_bytes())?;
    b.into_inner()?.finish()
}

fn resource_metadata(t: &str) -> Vec<u8> {
    format!(
        "{{\"type\":\"{t}\",\"version\":\"1.0.0-fake\",\"privileged\":false,\
         \"unique_version_history\":false}}\n"
    )
    .into_bytes()
}

/// The full list of entries for `spec`, padding included.
fn entries(spec: &ReleaseSpec) -> Result<Vec<Entry>, io::Error> {
    let v = &spec.version;
    let mut out = vec![Entry::dir("concourse/"), Entry::dir("concourse/bin/")];
    out.push(Entry::file(
        "concourse/bin/concourse",
        0o755,
        fake_concourse::render_script(v, spec.variant.behaviour()).into_bytes(),
    ));
    for b in STUB_BINARIES {
        out.push(Entry::file(
            &format!("concourse/bin/{b}"),
            0o755,
            stub_script(b, v),
        ));
    }
    match spec.variant {
        Variant::DotDotEntry => out.push(Entry::file(
            "concourse/../../escape",
            0o644,
            b"escaped through ..\n".to_vec(),
        )),
        Variant::AbsolutePath => out.push(Entry::file(
            "/tmp/concourse-absolute-escape",
            0o644,
            b"escaped through an absolute path\n".to_vec(),
        )),
        Variant::SymlinkEscape => {
            out.push(Entry {
                name: "concourse/bin/escape".to_string(),
                mode: 0o777,
                kind: Kind::Symlink("../../../../../../../../../tmp".to_string()),
            });
            out.push(Entry::file(
                "concourse/bin/escape/concourse-symlink-escape",
                0o644,
                b"escaped through a symlink\n".to_vec(),
            ));
        }
        _ => {}
    }
    out.push(Entry::dir("concourse/fly-assets/"));
    out.push(Entry::file(
        "concourse/fly-assets/fly-linux-amd64.tgz",
        0o644,
        fly_asset(v)?,
    ));
    out.push(Entry::dir("concourse/resource-types/"));
    let mut rootfs_at = Vec::new();
    for t in RESOURCE_TYPES {
        out.push(Entry::dir(&format!("concourse/resource-types/{t}/")));
        out.push(Entry::file(
            &format!("concourse/resource-types/{t}/resource_metadata.json"),
            0o644,
            resource_metadata(t),
        ));
        rootfs_at.push(out.len());
        out.push(Entry {
            name: format!("concourse/resource-types/{t}/rootfs.tgz"),
            mode: 0o644,
            kind: Kind::File(Body::Random { offset: 0, len: 0 }),
        });
    }
    // Spread the padding so that the gzip file is about padded_size_bytes.
    let fixed: u64 = out.iter().map(Entry::tar_len).sum::<u64>() + 1024;
    let padding = tar_len_for_gz(spec.padded_size_bytes).saturating_sub(fixed);
    let per = padding / rootfs_at.len() as u64 / 512 * 512;
    for (i, idx) in rootfs_at.iter().enumerate() {
        if let Some(e) = out.get_mut(*idx) {
            let offset = (seed_of(spec, i as u64) as usize) % RANDOM_BLOCK;
            e.kind = Kind::File(Body::Random { offset, len: per });
        }
    }
    Ok(out)
}

fn header_for(entry: &Entry) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // Names are written raw (the tar crate refuses `..` and absolute paths, which the hostile
    // variants need). All names here are shorter than the 100-byte field.
    {
        let old = h.as_old_mut();
        let n = entry.name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&entry.name.as_bytes()[..n]);
    }
    h.set_mode(entry.mode);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    match &entry.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        }
        Kind::File(_) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(entry.data_len());
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let old = h.as_old_mut();
            let n = target.len().min(old.linkname.len());
            old.linkname[..n].copy_from_slice(&target.as_bytes()[..n]);
        }
    }
    h.set_cksum();
    h
}

/// Generates the tarball for `spec` at `out` (any file name). Streams; overwrites `out`.
pub fn generate_to(spec: &ReleaseSpec, out: &Path) -> Result<Tarball, TarballError> {
    check_version(&spec.version)?;
    let werr = |source: io::Error| TarballError::Write {
        path: out.to_path_buf(),
        source,
    };
    let list = entries(spec).map_err(werr)?;
    let unpacked_size = list
        .iter()
        .filter(|e| matches!(e.kind, Kind::File(_)))
        .map(Entry::data_len)
        .sum();
    let block = random_block(seed_of(spec, u64::MAX));
    let file = File::create(out).map_err(werr)?;
    let hashing = HashingWriter::new(file);
    // Level 0: stored deflate blocks, valid gzip that any decoder reads, written at copy speed.
    let gz = flate2::GzBuilder::new()
        .mtime(MTIME as u32)
        .operating_system(3)
        .write(
            BufWriter::with_capacity(1 << 20, hashing),
            flate2::Compression::none(),
        );
    let mut builder = tar::Builder::new(gz);
    for e in &list {
        let h = header_for(e);
        match &e.kind {
            Kind::File(Body::Bytes(b)) => builder.append(&h, b.as_slice()),
            Kind::File(Body::Random { offset, len }) => builder.append(
                &h,
                Padding {
                    block: Arc::clone(&block),
                    pos: *offset,
                    remaining: *len,
                },
            ),
            _ => builder.append(&h, io::empty()),
        }
        .map_err(werr)?;
    }
    let gz = builder.into_inner().map_err(werr)?;
    let buffered = gz.finish().map_err(werr)?;
    let hashing = buffered.into_inner().map_err(|e| werr(e.into_error()))?;
    let (file, len, sha1_hex, sha256_hex) = hashing.finish().map_err(werr)?;
    drop(file);
    let path = fs::canonicalize(out).map_err(werr)?;
    Ok(Tarball {
        spec: spec.clone(),
        path,
        file_name: tarball_file_name(&spec.version),
        size: len,
        sha1_hex,
        sha256_hex,
        unpacked_size,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Hex sha1 and sha256 of any file, streamed.
pub fn hash_file(path: &Path) -> Result<(String, String), TarballError> {
    let rerr = |source| TarballError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(rerr)?;
    let mut s1 = sha1::Sha1::new();
    let mut s2 = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(rerr)?;
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s2.update(&buf[..n]);
    }
    Ok((hex(&s1.finalize()), hex(&s2.finalize())))
}

// ---------------------------------------------------------------------------------------------
// Cache

/// Result of [`TarballCache::get_timed`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub tarball: Tarball,
    /// Time spent generating (zero when cached).
    pub elapsed: Duration,
    /// Whether the tarball came from the cache.
    pub cached: bool,
}

/// A directory of generated tarballs, one subdirectory per spec key
/// (`<dir>/<key>/concourse-<v>-linux-amd64.tgz` + `tarball.json`). Safe to share between
/// threads and processes: generation of one key happens under an exclusive file lock.
#[derive(Debug, Clone)]
pub struct TarballCache {
    dir: PathBuf,
}

impl TarballCache {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, TarballError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| TarballError::Cache {
            path: dir.clone(),
            source,
        })?;
        Ok(TarballCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tarball for `spec`, generated on first use.
    pub fn get(&self, spec: &ReleaseSpec) -> Result<Tarball, TarballError> {
        Ok(self.get_timed(spec)?.tarball)
    }

    /// Like [`get`](Self::get), and says whether it was generated and how long that took.
    pub fn get_timed(&self, spec: &ReleaseSpec) -> Result<Generated, TarballError> {
        check_version(&spec.version)?;
        let key = spec.key();
        let final_dir = self.dir.join(&key);
        let cerr = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TarballError::Cache { path, source }
        };
        if let Some(t) = self.load(&final_dir, spec) {
            return Ok(Generated {
                tarball: t,
                elapsed: Duration::ZERO,
                cached: true,
            });
        }
        let lock_path = self.dir.join(format!(".{key}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(cerr(&lock_path))?;
        lock.lock().map_err(cerr(&lock_path))?;
        if let Some(t) = self.load(&final_dir, spec) {
            return Ok(Generated {
                tarball: t,
                elapsed: Duration::ZERO,
                cached: true,
            });
        }
        let tmp = self.dir.join(format!(".{key}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(cerr(&tmp))?;
        let started = Instant::now();
        let mut t = generate_to(spec, &tmp.join(tarball_file_name(&spec.version)))?;
        let elapsed = started.elapsed();
        t.path = final_dir.join(&t.file_name);
        let json = serde_json::to_vec_pretty(&t).map_err(|e| TarballError::Cache {
            path: tmp.clone(),
            source: io::Error::other(e),
        })?;
        fs::write(tmp.join("tarball.json"), json).map_err(cerr(&tmp))?;
        let _ = fs::remove_dir_all(&final_dir);
        fs::rename(&tmp, &final_dir).map_err(cerr(&final_dir))?;
        drop(lock);
        Ok(Generated {
            tarball: t,
            elapsed,
            cached: false,
        })
    }

    fn load(&self, dir: &Path, spec: &ReleaseSpec) -> Option<Tarball> {
        let bytes = fs::read(dir.join("tarball.json")).ok()?;
        let mut t: Tarball = serde_json::from_slice(&bytes).ok()?;
        if &t.spec != spec {
            return None;
        }
        t.path = dir.join(&t.file_name);
        let meta = fs::metadata(&t.path).ok()?;
        (meta.len() == t.size).then_some(t)
    }
}

/// Generates (or finds in `cache_dir`) a 512 MiB normal tarball of `version`, for the
/// download benchmark, and says how long generation took.
pub fn generate_benchmark_tarball(
    cache_dir: &Path,
    version: &str,
) -> Result<Generated, TarballError> {
    TarballCache::new(cache_dir)?.get_timed(&ReleaseSpec::new(
        version,
        BENCHMARK_SIZE,
        Variant::Normal,
    ))
}

// ---------------------------------------------------------------------------------------------
// Reading back (for tests)

/// One entry of an archive as stored, without interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// The raw path bytes as text (lossy), e.g. `concourse/../../escape`.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    /// Symlink/hardlink target.
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Lists the entries of a `.tgz` (streams; reads data to skip it).
pub fn list_entries(path: &Path) -> Result<Vec<EntryInfo>, TarballError> {
    let rerr = |source| TarballError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(rerr)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(f)));
    let mut out = Vec::new();
    for e in ar.entries().map_err(rerr)? {
        let e = e.map_err(rerr)?;
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        out.push(EntryInfo {
            path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            kind,
            size: h.size().map_err(rerr)?,
            mode: h.mode().map_err(rerr)?,
            link: e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_deterministic_and_exact_length() {
        let read = |offset: usize, len: u64| {
            let mut v = Vec::new();
            Padding {
                block: random_block(7),
                pos: offset,
                remaining: len,
            }
            .read_to_end(&mut v)
            .unwrap();
            v
        };
        let a = read(RANDOM_BLOCK - 10, 3 * RANDOM_BLOCK as u64 + 1001);
        assert_eq!(a.len(), 3 * RANDOM_BLOCK + 1001);
        assert_eq!(a, read(RANDOM_BLOCK - 10, 3 * RANDOM_BLOCK as u64 + 1001));
        assert_ne!(a[..4096], read(0, 4096)[..]);
    }

    #[test]
    fn padded_sizes_stay_at_or_below_the_request() {
        for mib in [1u64, 2, 3, 64] {
            let tar = tar_len_for_gz(mib << 20);
            assert!(tar < mib << 20);
            assert!(
                tar > (mib << 20) - (mib << 20) / 3000 - 64,
                "{mib} MiB: {tar}"
            );
        }
    }

    #[test]
    fn bad_versions_are_refused() {
        for v in ["", "../x", "1 2", "a/b", ".1"] {
            assert!(check_version(v).is_err(), "{v}");
        }
        assert!(check_version("7.14.3-rc.1").is_ok());
    }
}
