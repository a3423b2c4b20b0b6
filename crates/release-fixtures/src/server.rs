//! A local HTTP/1.1 release server with fault injection, for download tests.
//!
//! Owns: a listener on `127.0.0.1:<random port>` with one thread per connection, serving
//! registered tarballs at `/v<version>/concourse-<version>-linux-amd64.tgz` (any path prefix
//! is accepted before `/v<version>/`, so GitHub-style `/concourse/concourse/releases/download/
//! v<version>/...` works too) and their upstream-style `.sha1` files, the fake GitHub
//! endpoint of [`crate::github`], the request log, and the faults.
//!
//! Protocol: `GET` and `HEAD`; `Range: bytes=N-`, `bytes=N-M` and `bytes=-N` give 206 with
//! `Content-Range`; a start beyond the end gives 416 with `Content-Range: bytes */<size>`;
//! unparsable or multi-range headers are ignored (200, as RFC 9110 allows). Every response
//! has `Content-Length` and `Connection: close` (one request per connection).
//!
//! Invariants:
//! - Every request that reached the server appears once in [`ReleaseServer::requests`] when its
//!   response ends, with the bytes of body actually written and whether the body completed.
//!   [`ReleaseServer::bytes_served`] also counts bytes of responses still in flight.
//! - A fault rule with `times: Some(n)` applies to the next `n` matching requests, then
//!   disappears; `None` applies until removed.
//! - Dropping the server stops accepting, shuts down every open connection (in-flight
//!   downloads see a cut), and joins all threads.
//!
//! Hazards: bodies stream from the tarball file on disk, so do not delete a registered file
//! while serving it; throttled and delayed responses sleep in 20 ms slices, so shutdown
//! takes up to that long per connection. Malformed requests get 400 and are logged; nothing
//! in here panics on input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::github;
use crate::tarball::{tarball_file_name, Tarball};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(io::Error),
    #[error("cannot start the release server thread: {0}")]
    Spawn(io::Error),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every request, the GitHub endpoint included.
    All,
    /// The tarball and its `.sha1` for this version.
    Version(String),
    /// Only the tarball of this version.
    Tarball(String),
    /// Only the `.sha1` of this version.
    Sha1(String),
    /// The GitHub "latest release" endpoint.
    GithubLatest,
    /// Requests whose path (without query) is exactly this.
    Path(String),
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the headers (full Content-Length) and this many body bytes, then close.
    CutAfter(u64),
    /// Answer with this status (404, 500, 503, ...) and a short text body.
    Status(u16),
    /// Send the body at this many bytes per second.
    Throttle(u64),
    /// Wait this long before sending the response headers.
    Delay(Duration),
    /// The `.sha1` file names a checksum that does not match the tarball.
    WrongSha1,
    /// Serve this tarball's bytes (and, for `.sha1`, its checksum) in place of the registered
    /// one, e.g. a `DotDotEntry` variant of the same version.
    Substitute(Tarball),
    /// GitHub endpoint only: 403 with GitHub's rate-limit body and headers.
    RateLimited,
}

/// A fault, the requests it applies to, and how many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub target: Target,
    pub fault: Fault,
    /// `Some(n)`: the next n matching requests; `None`: until removed.
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule that applies until removed.
    pub fn always(target: Target, fault: Fault) -> Self {
        FaultRule {
            target,
            fault,
            times: None,
        }
    }
    /// A rule for the next matching request only.
    pub fn once(target: Target, fault: Fault) -> Self {
        Self::times(target, fault, 1)
    }
    /// A rule for the next `n` matching requests.
    pub fn times(target: Target, fault: Fault, n: u32) -> Self {
        FaultRule {
            target,
            fault,
            times: Some(n),
        }
    }
}

/// Identifies an installed rule for [`ReleaseServer::remove_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultId(u64);

/// What a request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Tarball(String),
    Sha1(String),
    GithubLatest,
    Other,
}

/// One request, logged when its response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Order of arrival, from 1.
    pub id: u64,
    pub method: String,
    /// Request target without the query string.
    pub path: String,
    pub kind: RequestKind,
    /// Raw `Range` header.
    pub range: Option<String>,
    /// First body byte sent (0 unless 206).
    pub range_start: u64,
    pub status: u16,
    /// Announced `Content-Length` of the body.
    pub content_length: u64,
    /// Body bytes actually written.
    pub bytes_sent: u64,
    /// The whole announced body was written (HEAD and bodiless answers: true).
    pub completed: bool,
    /// The body stopped early: a `CutAfter` fault, the client went away, or shutdown.
    pub cut: bool,
    /// The tarball's last byte was delivered (a complete 200, or a 206 that ran to the end).
    pub reached_end: bool,
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    pub accept: Option<String>,
    /// Debug names of the faults that applied.
    pub faults: Vec<String>,
    /// When the request arrived, from server start.
    pub started: Duration,
    pub duration: Duration,
}

struct Rule {
    id: u64,
    rule: FaultRule,
}

#[derive(Default)]
struct State {
    releases: BTreeMap<String, Tarball>,
    rules: Vec<Rule>,
    next_rule: u64,
    log: Vec<RequestRecord>,
    /// Tarball body bytes written, per version, in-flight responses included.
    served: BTreeMap<String, u64>,
    github_latest: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
    next_request: AtomicU64,
    conns: Mutex<Vec<(u64, TcpStream)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    addr: SocketAddr,
    started: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent in a way that
        // matters to tests; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The server. Stops on drop.
pub struct ReleaseServer {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReleaseServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseServer")
            .field("addr", &self.shared.addr)
            .finish()
    }
}

impl ReleaseServer {
    /// Listens on 127.0.0.1 with a random port and starts serving.
    pub fn start() -> Result<Self, ReleaseError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(ReleaseError::Bind)?;
        let addr = listener.local_addr().map_err(ReleaseError::Bind)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            shutdown: AtomicBool::new(false),
            next_request: AtomicU64::new(1),
            conns: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            addr,
            started: Instant::now(),
        });
        let s2 = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("release-accept".into())
            .spawn(move || accept_loop(listener, s2))
            .map_err(ReleaseError::Spawn)?;
        Ok(ReleaseServer {
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.shared.base_url()
    }

    /// Value for the charm's `release-url` option: `<base>/v{version}/concourse-{version}-linux-amd64.tgz`.
    pub fn release_url_template(&self) -> String {
        format!(
            "{}/v{{version}}/concourse-{{version}}-linux-amd64.tgz",
            self.base_url()
        )
    }

    /// Value for the charm's `release-api-url` option.
    pub fn github_api_url(&self) -> String {
        format!("{}{}", self.base_url(), github::LATEST_PATH)
    }

    pub fn tarball_url(&self, version: &str) -> String {
        format!(
            "{}/v{version}/{}",
            self.base_url(),
            tarball_file_name(version)
        )
    }

    pub fn sha1_url(&self, version: &str) -> String {
        format!("{}.sha1", self.tarball_url(version))
    }

    /// Serves `tarball` under its version (replacing any previous one).
    pub fn register(&self, tarball: Tarball) {
        let mut st = self.shared.lock();
        st.releases.insert(tarball.spec.version.clone(), tarball);
    }

    /// Stops serving `version` (404 from now on).
    pub fn unregister(&self, version: &str) {
        self.shared.lock().releases.remove(version);
    }

    /// Makes the GitHub endpoint answer `version` (`None`: the highest registered version).
    pub fn set_github_latest(&self, version: Option<&str>) {
        self.shared.lock().github_latest = version.map(str::to_string);
    }

    /// Installs a fault rule.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        let mut st = self.shared.lock();
        st.next_rule += 1;
        let id = st.next_rule;
        st.rules.push(Rule { id, rule });
        FaultId(id)
    }

    /// Shorthand for [`add_fault`](Self::add_fault)`(FaultRule::always(target, fault))`.
    pub fn set_fault(&self, target: Target, fault: Fault) -> FaultId {
        self.add_fault(FaultRule::always(target, fault))
    }

    pub fn remove_fault(&self, id: FaultId) {
        self.shared.lock().rules.retain(|r| r.id != id.0);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().rules.clear();
    }

    /// Rules still installed (once-rules disappear when used up).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.shared
            .lock()
            .rules
            .iter()
            .map(|r| r.rule.clone())
            .collect()
    }

    /// The request log, in completion order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// Forgets logged requests and byte counters.
    pub fn clear_log(&self) {
        let mut st = self.shared.lock();
        st.log.clear();
        st.served.clear();
    }

    /// Requests to the GitHub endpoint (each with the `Authorization` header it carried).
    pub fn github_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.kind == RequestKind::GithubLatest)
            .collect()
    }

    /// GET responses that delivered the last byte of `version`'s tarball (a full 200, or a
    /// ranged 206 that completed a resumed download).
    pub fn count_complete_downloads(&self, version: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| {
                r.method == "GET"
                    && r.kind == RequestKind::Tarball(version.to_string())
                    && r.reached_end
            })
            .count()
    }

    /// Tarball body bytes of `version` written so far, in-flight responses included.
    pub fn bytes_served(&self, version: &str) -> u64 {
        self.shared.lock().served.get(version).copied().unwrap_or(0)
    }

    /// Waits until at least `bytes` of `version` were served; false on timeout.
    pub fn wait_for_bytes_served(&self, version: &str, bytes: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| {
            st.served.get(version).copied().unwrap_or(0) >= bytes
        })
    }

    /// Waits until `pred` holds for the request log; false on timeout.
    pub fn wait_for_requests(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[RequestRecord]) -> bool,
    ) -> bool {
        self.wait_until(timeout, |st| pred(&st.log))
    }

    fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = match self.shared.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for (_, s) in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .shared
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for h in threads {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conn_id = 0u64;
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        conn_id += 1;
        let id = conn_id;
        if let Ok(clone) = stream.try_clone() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((id, clone));
        }
        let s2 = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("release-conn".into())
            .spawn(move || {
                handle_connection(stream, &s2);
                s2.conns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(i, _)| *i != id);
            });
        let mut threads = shared.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|h| !h.is_finished());
        if let Ok(h) = spawned {
            threads.push(h);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

const MAX_HEAD: usize = 16 * 1024;

/// Reads up to the end of the request head. Ok(None): the peer closed before sending one.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incomplete request head",
                ))
            };
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(from + pos);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
}

fn parse_request(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let version = first.next()?;
    if first.next().is_some()
        || !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return None;
    }
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':')?;
        if n.is_empty() || n.contains(' ') {
            return None;
        }
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

fn classify(path: &str) -> RequestKind {
    if path == github::LATEST_PATH {
        return RequestKind::GithubLatest;
    }
    let mut segs = path.rsplit('/');
    let (Some(file), Some(dir)) = (segs.next(), segs.next()) else {
        return RequestKind::Other;
    };
    let Some(version) = dir.strip_prefix('v') else {
        return RequestKind::Other;
    };
    let tgz = tarball_file_name(version);
    if file == tgz {
        RequestKind::Tarball(version.to_string())
    } else if file.strip_suffix(".sha1") == Some(tgz.as_str()) {
        RequestKind::Sha1(version.to_string())
    } else {
        RequestKind::Other
    }
}

fn rule_matches(target: &Target, kind: &RequestKind, path: &str) -> bool {
    match (target, kind) {
        (Target::All, _) => true,
        (Target::Version(v), RequestKind::Tarball(k) | RequestKind::Sha1(k)) => v == k,
        (Target::Tarball(v), RequestKind::Tarball(k)) => v == k,
        (Target::Sha1(v), RequestKind::Sha1(k)) => v == k,
        (Target::GithubLatest, RequestKind::GithubLatest) => true,
        (Target::Path(p), _) => p == path,
        _ => false,
    }
}

/// Faults that apply to this request, consuming once-rules.
fn take_faults(shared: &Shared, kind: &RequestKind, path: &str) -> Vec<Fault> {
    let mut st = shared.lock();
    let mut out = Vec::new();
    for r in st.rules.iter_mut() {
        if !rule_matches(&r.rule.target, kind, path) {
            continue;
        }
        // RateLimited only concerns the GitHub endpoint; do not use up its count elsewhere.
        if r.rule.fault == Fault::RateLimited && *kind != RequestKind::GithubLatest {
            continue;
        }
        out.push(r.rule.fault.clone());
        if let Some(n) = r.rule.times.as_mut() {
            *n = n.saturating_sub(1);
        }
    }
    st.rules.retain(|r| r.rule.times != Some(0));
    out
}

enum Body {
    Bytes(Vec<u8>),
    File { path: PathBuf, size: u64 },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File { size, .. } => *size,
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    /// Whether Range applies (only to release files).
    rangeable: bool,
}

impl Response {
    fn text(status: u16, text: &str) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text.as_bytes().to_vec()),
            rangeable: false,
        }
    }
    fn json(status: u16, json: String) -> Self {
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: Body::Bytes(json.into_bytes()),
            rangeable: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Parses a single `bytes=` range against `size`. Ok(None): ignore the header (serve all);
/// Err(()): not satisfiable (416).
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        return Ok(Some((size.saturating_sub(n), size - 1)));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn wrong_sha1(hex: &str) -> String {
    hex.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from_digit(15 - d, 16).unwrap_or('0'),
            None => c,
        })
        .collect()
}

fn route(shared: &Shared, req: &Request, kind: &RequestKind, faults: &[Fault]) -> Response {
    if let Some(status) = faults.iter().find_map(|f| match f {
        Fault::Status(s) => Some(*s),
        _ => None,
    }) {
        return Response::text(status, &format!("{} (injected fault)\n", reason(status)));
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text(405, "Method Not Allowed\n");
        r.headers.push(("Allow".into(), "GET, HEAD".into()));
        return r;
    }
    let substitute = faults.iter().find_map(|f| match f {
        Fault::Substitute(t) => Some(t.clone()),
        _ => None,
    });
    let st = shared.lock();
    match kind {
        RequestKind::GithubLatest => {
            if faults.contains(&Fault::RateLimited) {
                let reset = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() + 3600)
                    .unwrap_or(0);
                let mut r = Response::json(403, github::rate_limited_json());
                r.headers.extend([
                    ("x-ratelimit-limit".into(), "60".into()),
                    ("x-ratelimit-remaining".into(), "0".into()),
                    ("x-ratelimit-used".into(), "60".into()),
                    ("x-ratelimit-reset".into(), reset.to_string()),
                    ("x-ratelimit-resource".into(), "core".into()),
                ]);
                return r;
            }
            let latest = st.github_latest.clone().or_else(|| {
                st.releases
                    .keys()
                    .max_by(|a, b| github::compare_versions(a, b))
                    .cloned()
            });
            match latest {
                Some(v) => Response::json(
                    200,
                    github::latest_release_json(&v, st.releases.get(&v), &shared.base_url()),
                ),
                None => Response::json(404, github::not_found_json()),
            }
        }
        RequestKind::Tarball(v) | RequestKind::Sha1(v) => {
            let Some(registered) = st.releases.get(v) else {
                return Response::text(404, "Not Found\n");
            };
            let served = substitute.unwrap_or_else(|| registered.clone());
            if matches!(kind, RequestKind::Tarball(_)) {
                Response {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/gzip".into())],
                    body: Body::File {
                        path: served.path.clone(),
                        size: served.size,
                    },
                    rangeable: true,
                }
            } else {
                let sha = if faults.contains(&Fault::WrongSha1) {
                    wrong_sha1(&served.sha1_hex)
                } else {
                    served.sha1_hex.clone()
                };
                let mut r = Response::text(200, &format!("{sha}  {}\n", tarball_file_name(v)));
                r.rangeable = true;
                r
            }
        }
        RequestKind::Other => Response::text(404, "Not Found\n"),
    }
}

struct Sent {
    bytes: u64,
    completed: bool,
}

fn sleep_unless_shutdown(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Writes `len` body bytes from `start`, honouring cut/throttle; reports progress.
#[allow(clippy::too_many_arguments)]
fn send_body(
    stream: &mut TcpStream,
    shared: &Shared,
    body: &Body,
    start: u64,
    len: u64,
    cut_after: Option<u64>,
    throttle: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Sent {
    let limit = cut_after.map_or(len, |c| c.min(len));
    let chunk_size = throttle.map_or(64 * 1024, |r| (r / 20).clamp(1, 64 * 1024)) as usize;
    let mut sent = 0u64;
    let began = Instant::now();
    let mut file = match body {
        Body::File { path, .. } => match File::open(path) {
            Ok(mut f) => {
                if f.seek(SeekFrom::Start(start)).is_err() {
                    return Sent {
                        bytes: 0,
                        completed: false,
                    };
                }
                Some(f)
            }
            Err(_) => {
                return Sent {
                    bytes: 0,
                    completed: false,
                }
            }
        },
        Body::Bytes(_) => None,
    };
    let mut buf = vec![0u8; chunk_size];
    while sent < limit {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        let want = ((limit - sent) as usize).min(chunk_size);
        let n = match (&mut file, body) {
            (Some(f), _) => match f.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            (None, Body::Bytes(b)) => {
                let from = usize::try_from(start + sent).unwrap_or(usize::MAX);
                let slice = b.get(from..).unwrap_or(&[]);
                let n = slice.len().min(want);
                if n == 0 {
                    break;
                }
                buf[..n].copy_from_slice(&slice[..n]);
                n
            }
            (None, Body::File { .. }) => break,
        };
        if stream.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        progress(n as u64);
        if let Some(rate) = throttle {
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            let elapsed = began.elapsed();
            if due > elapsed && !sleep_unless_shutdown(shared, due - elapsed) {
                break;
            }
        }
    }
    let _ = stream.flush();
    Sent {
        bytes: sent,
        completed: sent == len,
    }
}

fn handle_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let arrived = Instant::now();
    let head = match read_head(&mut stream) {
        Ok(Some(h)) => Some(h),
        Ok(None) => return,
        Err(_) => None,
    };
    if shared.shutdown.load(Ordering::SeqCst) {
        return;
    }
    let id = shared.next_request.fetch_add(1, Ordering::SeqCst);
    let req = head.as_deref().and_then(parse_request);
    let Some(req) = req else {
        let body = b"Bad Request\n";
        let _ = write!(
            stream,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
        log(
            shared,
            RequestRecord {
                id,
                method: String::new(),
                path: String::new(),
                kind: RequestKind::Other,
                range: None,
                range_start: 0,
                status: 400,
                content_length: body.len() as u64,
                bytes_sent: body.len() as u64,
                completed: true,
                cut: false,
                reached_end: false,
                authorization: None,
                user_agent: None,
                accept: None,
                faults: Vec::new(),
                started: arrived.duration_since(shared.started),
                duration: arrived.elapsed(),
            },
        );
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    let kind = classify(&req.path);
    let faults = take_faults(shared, &kind, &req.path);
    if let Some(d) = faults.iter().find_map(|f| match f {
        Fault::Delay(d) => Some(*d),
        _ => None,
    }) {
        if !sleep_unless_shutdown(shared, d) {
            return;
        }
    }
    let mut resp = route(shared, &req, &kind, &faults);
    let size = resp.body.len();
    let range_header = req.header("range");
    let mut status = resp.status;
    let (mut start, mut len) = (0, size);
    if resp.status == 200 && resp.rangeable {
        resp.headers.push(("Accept-Ranges".into(), "bytes".into()));
        if let Some(h) = &range_header {
            match parse_range(h, size) {
                Ok(Some((a, b))) => {
                    status = 206;
                    start = a;
                    len = b - a + 1;
                    resp.headers
                        .push(("Content-Range".into(), format!("bytes {a}-{b}/{size}")));
                }
                Ok(None) => {}
                Err(()) => {
                    status = 416;
                    len = 0;
                    resp.headers
                        .push(("Content-Range".into(), format!("bytes */{size}")));
                }
            }
        }
    }
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in &resp.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\nServer: juju-sim-release\r\n\r\n"
    ));
    let head_ok = stream.write_all(head.as_bytes()).is_ok();
    let cut_after = faults
        .iter()
        .filter_map(|f| match f {
            Fault::CutAfter(n) => Some(*n),
            _ => None,
        })
        .min();
    let throttle = faults
        .iter()
        .filter_map(|f| match f {
            Fault::Throttle(n) => Some(*n),
            _ => None,
        })
        .min();
    let counted = match (&kind, req.method.as_str()) {
        (RequestKind::Tarball(v), "GET") if status == 200 || status == 206 => Some(v.clone()),
        _ => None,
    };
    let sent = if req.method == "HEAD" || !head_ok || len == 0 {
        Sent {
            bytes: 0,
            completed: head_ok,
        }
    } else {
        send_body(
            &mut stream,
            shared,
            &resp.body,
            start,
            len,
            cut_after,
            throttle,
            |n| {
                if let Some(v) = &counted {
                    let mut st = shared.lock();
                    *st.served.entry(v.clone()).or_insert(0) += n;
                    drop(st);
                    shared.changed.notify_all();
                }
            },
        )
    };
    let reached_end =
        counted.is_some() && sent.completed && start + len == size && req.method == "GET";
    // Log before closing: a client that saw EOF finds its request in the log.
    log(
        shared,
        RequestRecord {
            id,
            method: req.method.clone(),
            path: req.path.clone(),
            kind,
            range: range_header,
            range_start: start,
            status,
            content_length: len,
            bytes_sent: sent.bytes,
            completed: sent.completed,
            cut: !sent.completed,
            reached_end,
            authorization: req.header("authorization"),
            user_agent: req.header("user-agent"),
            accept: req.header("accept"),
            faults: faults.iter().map(fault_name).collect(),
            started: arrived.duration_since(shared.started),
            duration: arrived.elapsed(),
        },
    );
    let _ = stream.shutdown(Shutdown::Both);
}

fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Substitute(t) => format!("Substitute({})", t.spec.key()),
        other => format!("{other:?}"),
    }
}

fn log(shared: &Shared, rec: RequestRecord) {
    shared.lock().log.push(rec);
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=4-", 10), Ok(Some((4, 9))));
        assert_eq!(parse_range("bytes=4-6", 10), Ok(Some((4, 6))));
        assert_eq!(parse_range("bytes=4-60", 10), Ok(Some((4, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Err(()));
        assert_eq!(parse_range("bytes=6-4", 10), Ok(None));
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(parse_range("items=0-1", 10), Ok(None));
        assert_eq!(parse_range("bytes=x-", 10), Ok(None));
        assert_eq!(parse_range("bytes=-0", 10), Err(()));
    }

    #[test]
    fn classify_paths() {
        assert_eq!(
            classify("/v7.14.3/concourse-7.14.3-linux-amd64.tgz"),
            RequestKind::Tarball("7.14.3".into())
        );
        assert_eq!(
            classify("/concourse/concourse/releases/download/v7.14.3/concourse-7.14.3-linux-amd64.tgz.sha1"),
            RequestKind::Sha1("7.14.3".into())
        );
        assert_eq!(
            classify("/v7.14.3/concourse-7.14.4-linux-amd64.tgz"),
            RequestKind::Other
        );
        assert_eq!(classify("/"), RequestKind::Other);
        assert_eq!(classify(github::LATEST_PATH), RequestKind::GithubLatest);
    }

    #[test]
    fn malformed_requests_do_not_parse() {
        for head in [
            &b"GET /x"[..],
            b"get /x HTTP/1.1",
            b"GET x HTTP/1.1",
            b"GET /x HTTP/1.1\r\nbad header",
            b"\xff\xfe",
            b"",
        ] {
            assert!(parse_request(head).is_none(), "{head:?}");
        }
        let r = parse_request(b"GET /a?b=c HTTP/1.1\r\nRange: bytes=1-\r\nHost: x").unwrap();
        assert_eq!(r.path, "/a");
        assert_eq!(r.header("range").as_deref(), Some("bytes=1-"));
    }

    #[test]
    fn random_requests_never_panic() {
        let alphabet = b"GET HTTP/1.1\r\n:/?#=-,bytes0123456789\xff\x00 ";
        let mut state = 42u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 27)
        };
        for _ in 0..3000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse_request(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_range(&text, next() % 100);
            let _ = classify(&text);
        }
    }

    #[test]
    fn wrong_sha1_differs_and_stays_hex() {
        let w = wrong_sha1("0123456789abcdef0123456789abcdef01234567");
        assert_eq!(w.len(), 40);
        assert_ne!(w, "0123456789abcdef0123456789abcdef01234567");
        assert!(w.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
