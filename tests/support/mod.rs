//! Test support for the installer and storage tests: a small std-only HTTP/1.1 release
//! server with fault injection and a request log, and a generator of release tarballs
//! with the real layout (reference B.1) and a fake `concourse` script.
//!
//! Interim: to be replaced by `juju_sim::release` / `juju_sim::tarball` once those land
//! on main. Nothing here panics on a bad request; malformed requests get 400.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha1::Sha1;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- tarballs

/// Which tarball to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Normal,
    /// A regular file `concourse/../../escape` right after `bin/`.
    DotDotEntry,
    /// `concourse/bin/escape -> ../../../../../../tmp` and a file written through it.
    SymlinkEscape,
    /// `--version` prints 0.0.0-wrong.
    WrongVersion,
}

/// A generated tarball.
#[derive(Debug, Clone)]
pub struct Tarball {
    pub version: String,
    pub path: PathBuf,
    pub file_name: String,
    pub size: u64,
    pub sha1: String,
    pub sha256: String,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `concourse-<version>-linux-amd64.tgz` into `dir`, about `padding` bytes of
/// incompressible content spread over `rootfs.tgz` files and the fly assets. The gzip
/// stream uses stored blocks (like real releases, whose bulk is already compressed).
pub fn make_tarball(dir: &Path, version: &str, padding: u64, variant: Variant) -> Tarball {
    let file_name = format!("concourse-{version}-linux-amd64.tgz");
    let path = dir.join(&file_name);
    let out = io::BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
    let mut b = tar::Builder::new(GzEncoder::new(out, Compression::none()));
    let dir_entry = |b: &mut tar::Builder<_>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, io::empty()).unwrap();
    };
    let file_entry =
        |b: &mut tar::Builder<_>, name: &str, mode: u32, size: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(mode);
            h.set_size(size);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, data).unwrap();
        };
    dir_entry(&mut b, "concourse/");
    dir_entry(&mut b, "concourse/bin/");
    let printed = if variant == Variant::WrongVersion {
        "0.0.0-wrong".to_string()
    } else {
        version.to_string()
    };
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  --version|-v) echo {printed} ;;\n  *) echo \"fake concourse $*\" ;;\nesac\n"
    );
    file_entry(
        &mut b,
        "concourse/bin/concourse",
        0o755,
        script.len() as u64,
        &mut script.as_bytes(),
    );
    for stub in [
        "gdn",
        "runc",
        "init",
        "containerd",
        "containerd-shim-runc-v2",
    ] {
        let body = format!("#!/bin/sh\necho {stub}\n");
        file_entry(
            &mut b,
            &format!("concourse/bin/{stub}"),
            0o755,
            body.len() as u64,
            &mut body.as_bytes(),
        );
    }
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(
            &mut h,
            "concourse/bin/containerd-shim",
            "containerd-shim-runc-v2",
        )
        .unwrap();
    }
    match variant {
        Variant::DotDotEntry => raw_entry(
            &mut b,
            "concourse/../../escape",
            tar::EntryType::Regular,
            None,
            b"escaped\n",
        ),
        Variant::SymlinkEscape => {
            raw_entry(
                &mut b,
                "concourse/bin/escape",
                tar::EntryType::Symlink,
                Some("../../../../../../tmp"),
                b"",
            );
            raw_entry(
                &mut b,
                "concourse/bin/escape/concourse-symlink-escape",
                tar::EntryType::Regular,
                None,
                b"escaped\n",
            );
        }
        _ => {}
    }
    let types = ["git", "registry-image", "s3", "time"];
    let parts = types.len() as u64 + 1;
    let mut prng = Prng::new(0x5eed ^ padding ^ version.len() as u64);
    dir_entry(&mut b, "concourse/fly-assets/");
    let fly = padding / parts;
    file_entry(
        &mut b,
        "concourse/fly-assets/fly-linux-amd64.tgz",
        0o644,
        fly,
        &mut prng.reader(fly),
    );
    dir_entry(&mut b, "concourse/resource-types/");
    for (i, t) in types.iter().enumerate() {
        dir_entry(&mut b, &format!("concourse/resource-types/{t}/"));
        let meta = format!("{{\"type\":\"{t}\",\"version\":\"1.0.0\",\"privileged\":false}}\n");
        file_entry(
            &mut b,
            &format!("concourse/resource-types/{t}/resource_metadata.json"),
            0o644,
            meta.len() as u64,
            &mut meta.as_bytes(),
        );
        let n = if i + 1 == types.len() {
            padding - fly - (padding / parts) * (types.len() as u64 - 1)
        } else {
            padding / parts
        };
        file_entry(
            &mut b,
            &format!("concourse/resource-types/{t}/rootfs.tgz"),
            0o644,
            n,
            &mut prng.reader(n),
        );
    }
    let gz = b.into_inner().unwrap();
    let mut out = gz.finish().unwrap();
    out.flush().unwrap();
    drop(out);
    let (sha1, sha256) = hash_file(&path);
    Tarball {
        version: version.to_string(),
        size: fs::metadata(&path).unwrap().len(),
        path,
        file_name,
        sha1,
        sha256,
    }
}

/// Appends an entry with its name written verbatim (the tar crate refuses `..`).
fn raw_entry<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn hash_file(path: &Path) -> (String, String) {
    let mut f = File::open(path).unwrap();
    let mut s1 = Sha1::new();
    let mut s256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
    }
    (hex(&s1.finalize()), hex(&s256.finalize()))
}

/// xorshift64*: cheap incompressible bytes; a 1 MiB block reused at shifting offsets.
struct Prng {
    block: Arc<Vec<u8>>,
    offset: usize,
}

impl Prng {
    fn new(seed: u64) -> Prng {
        let mut x = seed | 1;
        let mut block = vec![0u8; 1 << 20];
        for chunk in block.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Prng {
            block: Arc::new(block),
            offset: 0,
        }
    }
    fn reader(&mut self, len: u64) -> PrngReader {
        self.offset = (self.offset + 7919) % self.block.len();
        PrngReader {
            block: self.block.clone(),
            pos: self.offset,
            left: len,
        }
    }
}

struct PrngReader {
    block: Arc<Vec<u8>>,
    pos: usize,
    left: u64,
}

impl Read for PrngReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = out
            .len()
            .min(self.block.len() - self.pos)
            .min(self.left.min(usize::MAX as u64) as usize);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------- server

/// What goes wrong for matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and a short body.
    Status(u16),
    /// Send full headers, then this many body bytes, then close.
    CutAfter(u64),
    /// Send the body at this many bytes per second.
    Throttle(u64),
    /// Answer range requests with 200 and the whole file.
    IgnoreRange,
    /// `.sha1` names a wrong checksum.
    WrongSha1,
}

#[derive(Debug, Clone)]
struct Rule {
    path_suffix: String,
    fault: Fault,
    times: Option<u32>,
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    pub body_bytes: u64,
    pub complete: bool,
}

#[derive(Default)]
struct State {
    /// URL path → file (or literal content).
    files: HashMap<String, Served>,
    rules: Vec<Rule>,
    log: Vec<Request>,
    github_latest: Option<String>,
}

#[derive(Clone)]
enum Served {
    File(PathBuf),
    Text(String),
}

/// A release server on 127.0.0.1.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicU64::new(0));
        let (st, sp, fl) = (state.clone(), stop.clone(), in_flight.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, sp, fl) = (st.clone(), sp.clone(), fl.clone());
                fl.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = handle(conn, &st, &sp);
                    fl.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            addr,
            state,
            stop,
            in_flight,
            accept: Some(accept),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `release-url` template.
    pub fn release_url_template(&self) -> String {
        format!(
            "{}/v{{version}}/concourse-{{version}}-linux-amd64.tgz",
            self.base_url()
        )
    }

    pub fn tarball_url(&self, version: &str) -> String {
        self.release_url_template().replace("{version}", version)
    }

    fn tarball_path(version: &str) -> String {
        format!("/v{version}/concourse-{version}-linux-amd64.tgz")
    }

    /// Serves the tarball and its `.sha1` (`<hex>  <file>\n`).
    pub fn register(&self, t: &Tarball) {
        let mut s = self.state.lock().unwrap();
        let p = Self::tarball_path(&t.version);
        s.files.insert(p.clone(), Served::File(t.path.clone()));
        s.files.insert(
            format!("{p}.sha1"),
            Served::Text(format!("{}  {}\n", t.sha1, t.file_name)),
        );
    }

    /// Serves `t`'s bytes under `version`'s URL but keeps `version`'s registered `.sha1`
    /// (e.g. a hostile tarball in place of the real one).
    pub fn substitute_tarball(&self, version: &str, t: &Tarball) {
        let mut s = self.state.lock().unwrap();
        s.files
            .insert(Self::tarball_path(version), Served::File(t.path.clone()));
    }

    /// Serves `text` at `path`.
    pub fn serve_text(&self, path: &str, text: &str) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), Served::Text(text.to_string()));
    }

    pub fn unregister_sha1(&self, version: &str) {
        self.state
            .lock()
            .unwrap()
            .files
            .remove(&format!("{}.sha1", Self::tarball_path(version)));
    }

    /// Adds a fault for requests whose path ends with `path_suffix`; `times: None` =
    /// until cleared.
    pub fn fault(&self, path_suffix: &str, fault: Fault, times: Option<u32>) {
        self.state.lock().unwrap().rules.push(Rule {
            path_suffix: path_suffix.to_string(),
            fault,
            times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    /// Logged requests for the tarball of `version` (not its `.sha1`).
    pub fn tarball_requests(&self, version: &str) -> Vec<Request> {
        let p = Self::tarball_path(version);
        self.requests()
            .into_iter()
            .filter(|r| r.path == p)
            .collect()
    }

    /// Body bytes of `version`'s tarball sent so far (finished requests only).
    pub fn tarball_bytes_sent(&self, version: &str) -> u64 {
        self.tarball_requests(version)
            .iter()
            .map(|r| r.body_bytes)
            .sum()
    }

    /// Waits until no connection is being served (so the log is final).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The fake GitHub "latest release" endpoint, at `/repos/concourse/concourse/releases/latest`.
    pub fn set_github_latest(&self, version: &str) {
        self.state.lock().unwrap().github_latest = Some(version.to_string());
    }

    pub fn github_api_url(&self) -> String {
        format!(
            "{}/repos/concourse/concourse/releases/latest",
            self.base_url()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if headers.len() > 100 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_string();
    let range = headers.get("range").cloned();
    let mut rec = Request {
        path: path.clone(),
        range: range.clone(),
        authorization: headers.get("authorization").cloned(),
        status: 0,
        body_bytes: 0,
        complete: false,
    };
    // Faults for this request.
    let (served, faults, latest) = {
        let mut s = state.lock().unwrap();
        let mut faults = Vec::new();
        for r in s.rules.iter_mut() {
            if path.ends_with(&r.path_suffix) && r.times != Some(0) {
                faults.push(r.fault.clone());
                if let Some(t) = r.times.as_mut() {
                    *t -= 1;
                }
            }
        }
        (s.files.get(&path).cloned(), faults, s.github_latest.clone())
    };
    let result = respond(
        &mut w, method, &path, served, latest, range, &faults, &mut rec, stop,
    );
    state.lock().unwrap().log.push(rec);
    result
}

#[allow(clippy::too_many_arguments)]
fn respond(
    w: &mut TcpStream,
    method: &str,
    path: &str,
    served: Option<Served>,
    latest: Option<String>,
    range: Option<String>,
    faults: &[Fault],
    rec: &mut Request,
    stop: &AtomicBool,
) -> io::Result<()> {
    let simple = |w: &mut TcpStream,
                  rec: &mut Request,
                  status: u16,
                  body: &str,
                  extra: &str|
     -> io::Result<()> {
        rec.status = status;
        write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )?;
        rec.body_bytes = body.len() as u64;
        rec.complete = true;
        Ok(())
    };
    if method != "GET" {
        return simple(w, rec, 400, "bad request\n", "");
    }
    if let Some(Fault::Status(s)) = faults.iter().find(|f| matches!(f, Fault::Status(_))) {
        return simple(w, rec, *s, "fault\n", "");
    }
    if path == "/repos/concourse/concourse/releases/latest" {
        return match latest {
            Some(v) => simple(
                w,
                rec,
                200,
                &format!("{{\"tag_name\":\"v{v}\",\"assets\":[]}}"),
                "Content-Type: application/json\r\n",
            ),
            None => simple(w, rec, 404, "{}", ""),
        };
    }
    let Some(served) = served else {
        return simple(w, rec, 404, "not found\n", "");
    };
    let (mut body, size): (Box<dyn ReadSeek>, u64) = match served {
        Served::Text(mut t) => {
            if faults.contains(&Fault::WrongSha1) {
                t = format!("{}  wrong\n", "0".repeat(40));
            }
            let n = t.len() as u64;
            (Box::new(io::Cursor::new(t.into_bytes())), n)
        }
        Served::File(p) => {
            let f = File::open(&p)?;
            let n = f.metadata()?.len();
            (Box::new(f), n)
        }
    };
    let mut start = 0u64;
    let mut status = 200;
    let mut extra = String::new();
    if let Some(r) = range.filter(|_| !faults.contains(&Fault::IgnoreRange)) {
        if let Some(from) = r
            .strip_prefix("bytes=")
            .and_then(|x| x.strip_suffix('-'))
            .and_then(|x| x.parse::<u64>().ok())
        {
            if from >= size {
                return simple(
                    w,
                    rec,
                    416,
                    "",
                    &format!("Content-Range: bytes */{size}\r\n"),
                );
            }
            start = from;
            status = 206;
            extra = format!("Content-Range: bytes {from}-{}/{size}\r\n", size - 1);
        }
    }
    let len = size - start;
    rec.status = status;
    write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n"
    )?;
    body.seek(SeekFrom::Start(start))?;
    let cut = faults.iter().find_map(|f| match f {
        Fault::CutAfter(n) => Some(*n),
        _ => None,
    });
    let rate = faults.iter().find_map(|f| match f {
        Fault::Throttle(r) => Some((*r).max(1)),
        _ => None,
    });
    let limit = cut.map_or(len, |c| c.min(len));
    let mut sent = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    let t0 = Instant::now();
    while sent < limit {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut want = (limit - sent).min(buf.len() as u64) as usize;
        if let Some(rate) = rate {
            // Send a 20 ms slice at a time, keeping to the average rate.
            want = want.min((rate / 50).max(1) as usize);
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let n = body.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if w.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        rec.body_bytes = sent;
    }
    rec.complete = sent == len;
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Both);
    Ok(())
}

trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

// ---------------------------------------------------------------- mounts

/// A tmpfs mounted on a temp dir (needs root); unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs failed: these tests need root (CAP_SYS_ADMIN), as on CI"
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
