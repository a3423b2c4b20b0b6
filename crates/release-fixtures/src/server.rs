//! A local HTTP release server with fault injection, for download tests.
//!
//! Owns: a `hyper` HTTP/1.1 server on `127.0.0.1:<random port>` (its own small tokio
//! runtime) serving registered tarballs at `/v<version>/concourse-<version>-linux-amd64.tgz`
//! (any path prefix is accepted before `/v<version>/`, so GitHub-style
//! `/concourse/concourse/releases/download/v<version>/...` works too) and their
//! upstream-style `.sha1` files, the fake GitHub endpoint of [`crate::github`], the request
//! log, and the faults ([`Fault`]): each response body is a [`FaultBody`]-style stream that
//! throttles, cuts or completes it and records what was really sent.
//!
//! Protocol: `GET` and `HEAD` (others: 405); `Range` is parsed by `http-range-header`: one
//! satisfiable range gives 206 with `Content-Range`, an unsatisfiable one 416 with
//! `Content-Range: bytes */<size>`, a malformed or multi-range header is ignored (200, as
//! RFC 9110 allows). Every response has `Content-Length` (unless [`Fault::NoContentLength`])
//! and `connection: close` (one
//! request per connection). Requests hyper cannot parse get its 4xx answer and are not logged.
//!
//! Invariants:
//! - Every parsed request appears once in [`ReleaseServer::requests`], logged when its
//!   response ends and before the client can see that end (before the last body byte is
//!   handed to the connection, before a cut closes it, or on drop when the client went
//!   away), with the body bytes actually handed over and whether the body completed.
//!   [`ReleaseServer::bytes_served`] also counts bytes of responses still in flight.
//! - A fault rule with `times: Some(n)` applies to the next `n` matching requests, then
//!   disappears; `None` applies until removed.
//! - Dropping the server shuts its runtime down: the port closes, every open connection is
//!   dropped (in-flight downloads see a cut) and its threads are joined.
//!
//! Hazards: bodies stream from the tarball file on disk, so do not delete a registered file
//! while serving it; file reads are small blocking reads on the runtime's two worker threads.
//! Nothing in here panics on input.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::github;
use crate::tarball::{tarball_file_name, Tarball};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(io::Error),
    #[error("cannot start the release server runtime: {0}")]
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
    /// Ignore `Range` and answer 200 with the whole body, like a server or proxy without
    /// range support.
    IgnoreRange,
    /// Send the body without `Content-Length` (chunked), as a server or proxy that does not
    /// know the size.
    NoContentLength,
    /// Answer with this redirect status (301, 302, 307, 308) and a `Location` on this server
    /// under [`REDIRECTED_PREFIX`], where the same file is served (as GitHub redirects release
    /// downloads to its object store). Requests already under the prefix are not redirected.
    Redirect(u16),
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
    /// Tarball body bytes handed over, per version, in-flight responses included.
    served: BTreeMap<String, u64>,
    github_latest: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    next_request: AtomicU64,
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
    fn log(&self, rec: RequestRecord) {
        self.lock().log.push(rec);
        self.changed.notify_all();
    }
}

/// The server. Stops on drop.
pub struct ReleaseServer {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
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
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("release-server")
            .enable_io()
            .enable_time()
            .build()
            .map_err(ReleaseError::Spawn)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(ReleaseError::Bind)?;
        let addr = listener.local_addr().map_err(ReleaseError::Bind)?;
        listener.set_nonblocking(true).map_err(ReleaseError::Bind)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(ReleaseError::Bind)?
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            next_request: AtomicU64::new(1),
            addr,
            started: Instant::now(),
        });
        runtime.spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(ReleaseServer {
            shared,
            runtime: Some(runtime),
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

    /// Tarball body bytes of `version` handed over so far, in-flight responses included.
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
        // Drops every task: the listener (the port closes) and every connection (cut).
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let conn = Arc::new(ConnIo::default());
        let io = CountingStream {
            inner: stream,
            stats: Arc::clone(&conn),
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (shared, conn) = (Arc::clone(&shared), Arc::clone(&conn));
                async move { Ok::<_, Infallible>(handle(&shared, &conn, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .await;
        });
    }
}

/// Bytes a connection wrote to its socket, split at the end of the response head (one
/// response per connection, so the first blank line ends the only head).
#[derive(Default)]
struct ConnIo {
    /// Total bytes the socket accepted.
    written: AtomicU64,
    /// Length of the response head, once its end was written (`0`: not yet).
    head: AtomicU64,
    /// The last bytes written before the head ended (a `\r\n\r\n` may span writes).
    tail: Mutex<Vec<u8>>,
}

impl ConnIo {
    fn body_written(&self) -> u64 {
        match self.head.load(Ordering::SeqCst) {
            0 => 0,
            head => self.written.load(Ordering::SeqCst).saturating_sub(head),
        }
    }

    fn record(&self, bufs: &[&[u8]], n: usize) {
        let before = self.written.fetch_add(n as u64, Ordering::SeqCst);
        if self.head.load(Ordering::SeqCst) != 0 {
            return;
        }
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let start = before - tail.len() as u64;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            tail.extend_from_slice(&b[..take]);
            left -= take;
        }
        if let Some(i) = tail.windows(4).position(|w| w == b"\r\n\r\n") {
            self.head.store(start + i as u64 + 4, Ordering::SeqCst);
            tail.clear();
        } else {
            let keep = tail.len().saturating_sub(3);
            tail.drain(..keep);
        }
    }
}

/// The TCP stream hyper writes to, counting what the socket accepted into [`ConnIo`].
struct CountingStream {
    inner: tokio::net::TcpStream,
    stats: Arc<ConnIo>,
}

impl tokio::io::AsyncRead for CountingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.stats.record(&[buf], n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = r {
            let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            self.stats.record(&slices, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// What the handler needs of a request.
struct Req {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
}

impl Req {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// Requests to paths under this prefix are the targets of [`Fault::Redirect`].
pub const REDIRECTED_PREFIX: &str = "/redirected";

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

/// Whether `fault` can apply to this request at all (a rule whose fault cannot apply does
/// not use up its count).
fn applicable(fault: &Fault, kind: &RequestKind, path: &str) -> bool {
    match fault {
        // Only the GitHub endpoint is rate limited.
        Fault::RateLimited => *kind == RequestKind::GithubLatest,
        // The redirect target itself is served.
        Fault::Redirect(_) => !path.starts_with(&format!("{REDIRECTED_PREFIX}/")),
        _ => true,
    }
}

/// Faults that apply to this request, consuming once-rules.
fn take_faults(shared: &Shared, kind: &RequestKind, path: &str) -> Vec<Fault> {
    let mut st = shared.lock();
    let mut out = Vec::new();
    for r in st.rules.iter_mut() {
        if !rule_matches(&r.rule.target, kind, path) || !applicable(&r.rule.fault, kind, path) {
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

/// A response before range handling and faults on the body.
struct Resp {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
    /// Whether Range applies (only to release files).
    rangeable: bool,
}

impl Resp {
    fn text(status: u16, text: &str) -> Self {
        Resp {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: Body::Bytes(text.as_bytes().to_vec()),
            rangeable: false,
        }
    }
    fn json(status: u16, json: String) -> Self {
        Resp {
            status,
            headers: vec![("content-type", "application/json; charset=utf-8".into())],
            body: Body::Bytes(json.into_bytes()),
            rangeable: false,
        }
    }
}

/// What `Range` asks of a body of `size` bytes: `Ok(None)` to serve it all (no header, or one
/// to ignore: malformed or several ranges), `Ok(Some((first, last)))`, or `Err(())` when
/// unsatisfiable (416).
fn requested_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Ok(parsed) = http_range_header::parse_range_header(h.trim()) else {
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(ranges.first().map(|r| (*r.start(), *r.end()))),
        Ok(_) => Ok(None),
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => Err(()),
        Err(_) => Ok(None),
    }
}

fn wrong_sha1(hex: &str) -> String {
    hex.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from_digit(15 - d, 16).unwrap_or('0'),
            None => c,
        })
        .collect()
}

fn route(shared: &Shared, req: &Req, kind: &RequestKind, faults: &[Fault]) -> Resp {
    if let Some(status) = faults.iter().find_map(|f| match f {
        Fault::Status(s) => Some(*s),
        _ => None,
    }) {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Status");
        return Resp::text(status, &format!("{reason} (injected fault)\n"));
    }
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Resp::text(405, "Method Not Allowed\n");
        r.headers.push(("allow", "GET, HEAD".into()));
        return r;
    }
    if let Some(status) = faults.iter().find_map(|f| match f {
        Fault::Redirect(s) => Some(*s),
        _ => None,
    }) {
        let mut r = Resp::text(status, "Redirecting (injected fault)\n");
        let to = format!("{}{REDIRECTED_PREFIX}{}", shared.base_url(), req.path);
        r.headers.push(("location", to));
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
                return rate_limited();
            }
            let latest = st.github_latest.clone().or_else(|| {
                st.releases
                    .keys()
                    .max_by(|a, b| github::compare_versions(a, b))
                    .cloned()
            });
            match latest {
                Some(v) => Resp::json(
                    200,
                    github::latest_release_json(&v, st.releases.get(&v), &shared.base_url()),
                ),
                None => Resp::json(404, github::not_found_json()),
            }
        }
        RequestKind::Tarball(v) | RequestKind::Sha1(v) => {
            let Some(registered) = st.releases.get(v) else {
                return Resp::text(404, "Not Found\n");
            };
            let served = substitute.unwrap_or_else(|| registered.clone());
            if matches!(kind, RequestKind::Tarball(_)) {
                Resp {
                    status: 200,
                    headers: vec![("content-type", "application/gzip".into())],
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
                let mut r = Resp::text(200, &format!("{sha}  {}\n", tarball_file_name(v)));
                r.rangeable = true;
                r
            }
        }
        RequestKind::Other => Resp::text(404, "Not Found\n"),
    }
}

/// GitHub's answer when the unauthenticated rate limit is used up (403 and its headers).
fn rate_limited() -> Resp {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    let mut r = Resp::json(403, github::rate_limited_json());
    r.headers.extend([
        ("x-ratelimit-limit", "60".into()),
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-used", "60".into()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".into()),
    ]);
    r
}

type HttpBody = BoxBody<Bytes, io::Error>;

/// Serves one request: faults, routing, `Range`, then the body as a [`BodyStream`].
async fn handle(
    shared: &Arc<Shared>,
    conn: &Arc<ConnIo>,
    req: Request<hyper::body::Incoming>,
) -> Response<HttpBody> {
    let arrived = Instant::now();
    let id = shared.next_request.fetch_add(1, Ordering::SeqCst);
    let req = Req {
        method: req.method().as_str().to_string(),
        path: req.uri().path().to_string(),
        headers: req.headers().clone(),
    };
    let kind = classify(&req.path);
    let faults = if req.path.starts_with('/') {
        take_faults(shared, &kind, &req.path)
    } else {
        Vec::new()
    };
    if let Some(d) = faults.iter().find_map(|f| match f {
        Fault::Delay(d) => Some(*d),
        _ => None,
    }) {
        tokio::time::sleep(d).await;
    }
    let mut resp = if req.path.starts_with('/') {
        route(shared, &req, &kind, &faults)
    } else {
        Resp::text(400, "Bad Request\n")
    };
    let size = resp.body.len();
    let range = req.header("range");
    let (status, start, len) = apply_range(&mut resp, range.as_deref(), &faults);
    let counted = match (&kind, req.method.as_str()) {
        (RequestKind::Tarball(v), "GET") if status == 200 || status == 206 => Some(v.clone()),
        _ => None,
    };
    let record = RequestRecord {
        id,
        method: req.method.clone(),
        path: req.path.clone(),
        kind,
        range,
        range_start: start,
        status,
        content_length: len,
        bytes_sent: 0,
        completed: false,
        cut: false,
        reached_end: false,
        authorization: req.header("authorization"),
        user_agent: req.header("user-agent"),
        accept: req.header("accept"),
        faults: faults.iter().map(fault_name).collect(),
        started: arrived.duration_since(shared.started),
        duration: Duration::ZERO,
    };
    let mut recorder = Recorder {
        shared: Arc::clone(shared),
        record: Some(record),
        counted,
        ends_file: start + len == size,
        arrived,
    };
    let body: HttpBody = if req.method == "HEAD" || len == 0 {
        recorder.finish(0, true);
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        let stream = BodyStream {
            source: Source::new(resp.body),
            pos: start,
            len,
            limit: cut_after(&faults).map_or(len, |c| c.min(len)),
            throttle: throttle(&faults),
            chunk: throttle(&faults).map_or(64 * 1024, |r| (r / 20).clamp(1, 64 * 1024)),
            sent: 0,
            began: Instant::now(),
            recorder,
            done: false,
            conn: Arc::clone(conn),
        };
        StreamBody::new(futures_util::stream::unfold(stream, BodyStream::step)).boxed()
    };
    let announced = (!faults.contains(&Fault::NoContentLength)).then_some(len);
    into_response(status, resp.headers, announced, body)
}

/// Applies `Range` to a 200 answer of a release file: `(status, first byte, length)`, with
/// the `Accept-Ranges`/`Content-Range` headers added (none under [`Fault::IgnoreRange`]).
fn apply_range(resp: &mut Resp, range: Option<&str>, faults: &[Fault]) -> (u16, u64, u64) {
    let size = resp.body.len();
    if resp.status != 200 || !resp.rangeable || faults.contains(&Fault::IgnoreRange) {
        return (resp.status, 0, size);
    }
    resp.headers.push(("accept-ranges", "bytes".into()));
    match requested_range(range, size) {
        Ok(Some((a, b))) => {
            let r = format!("bytes {a}-{b}/{size}");
            resp.headers.push(("content-range", r));
            (206, a, b - a + 1)
        }
        Ok(None) => (200, 0, size),
        Err(()) => {
            resp.headers
                .push(("content-range", format!("bytes */{size}")));
            (416, 0, 0)
        }
    }
}

/// The hyper response: status, headers (names are lowercase constants), `Content-Length`
/// when `len` is given (else hyper sends the body chunked).
fn into_response(
    status: u16,
    headers: Vec<(&'static str, String)>,
    len: Option<u64>,
    body: HttpBody,
) -> Response<HttpBody> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = response.headers_mut();
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(HeaderName::from_static(name), v);
        }
    }
    if let Some(len) = len {
        h.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    h.insert(
        hyper::header::SERVER,
        HeaderValue::from_static("release-fixtures"),
    );
    response
}

fn cut_after(faults: &[Fault]) -> Option<u64> {
    faults
        .iter()
        .filter_map(|f| match f {
            Fault::CutAfter(n) => Some(*n),
            _ => None,
        })
        .min()
}

fn throttle(faults: &[Fault]) -> Option<u64> {
    faults
        .iter()
        .filter_map(|f| match f {
            Fault::Throttle(n) => Some(*n),
            _ => None,
        })
        .min()
}

fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Substitute(t) => format!("Substitute({})", t.spec.key()),
        other => format!("{other:?}"),
    }
}

/// Logs a request exactly once: when its body completes or is cut, or when dropped (the
/// client went away, or the server shut down).
struct Recorder {
    shared: Arc<Shared>,
    record: Option<RequestRecord>,
    /// The tarball version whose bytes this body counts in `bytes_served`.
    counted: Option<String>,
    /// Whether the body runs to the file's last byte.
    ends_file: bool,
    arrived: Instant,
}

impl Recorder {
    fn progress(&self, n: u64) {
        if let Some(v) = &self.counted {
            *self.shared.lock().served.entry(v.clone()).or_insert(0) += n;
            self.shared.changed.notify_all();
        }
    }

    fn finish(&mut self, sent: u64, completed: bool) {
        let Some(mut rec) = self.record.take() else {
            return;
        };
        rec.bytes_sent = sent;
        rec.completed = completed;
        rec.cut = !completed;
        rec.reached_end =
            completed && self.ends_file && self.counted.is_some() && rec.method == "GET";
        rec.duration = self.arrived.elapsed();
        self.shared.log(rec);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let sent = self.record.as_ref().map_or(0, |r| r.bytes_sent);
        self.finish(sent, false);
    }
}

/// Where body bytes come from.
enum Source {
    Bytes(Vec<u8>),
    /// Opened on first read.
    File {
        path: PathBuf,
        file: Option<File>,
    },
}

impl Source {
    fn new(body: Body) -> Self {
        match body {
            Body::Bytes(b) => Source::Bytes(b),
            Body::File { path, .. } => Source::File { path, file: None },
        }
    }

    /// Up to `want` bytes at `pos` (empty at the end).
    fn read(&mut self, pos: u64, want: usize) -> io::Result<Vec<u8>> {
        match self {
            Source::Bytes(b) => {
                let from = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
                Ok(b[from..].iter().take(want).copied().collect())
            }
            Source::File { path, file } => {
                if file.is_none() {
                    let mut f = File::open(&*path)?;
                    f.seek(SeekFrom::Start(pos))?;
                    *file = Some(f);
                }
                let mut buf = vec![0u8; want];
                let n = match file.as_mut() {
                    Some(f) => f.read(&mut buf)?,
                    None => 0,
                };
                buf.truncate(n);
                Ok(buf)
            }
        }
    }
}

/// The fault-injecting body: hands out `len` bytes from `pos` in chunks, paced by a
/// throttle, ending in an error (which makes hyper drop the connection) at a cut.
struct BodyStream {
    source: Source,
    pos: u64,
    len: u64,
    /// Bytes to hand out before cutting (`len`: no cut).
    limit: u64,
    /// Bytes per second.
    throttle: Option<u64>,
    chunk: u64,
    sent: u64,
    began: Instant,
    recorder: Recorder,
    done: bool,
    /// What the connection really wrote, to cut only after the bytes before the cut left.
    conn: Arc<ConnIo>,
}

type Step = Option<(Result<Frame<Bytes>, io::Error>, BodyStream)>;

impl BodyStream {
    async fn step(mut self) -> Step {
        if self.done || self.sent >= self.len {
            return None;
        }
        if self.sent >= self.limit {
            // hyper drops buffered bytes when a body fails: let the ones before the cut
            // reach the socket first (bounded, in case the client stopped reading).
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.conn.body_written() < self.sent && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            return self.fail("cut (injected fault)");
        }
        let want = (self.limit - self.sent).min(self.chunk);
        let data = match self.source.read(self.pos + self.sent, want as usize) {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => return self.fail("the file ended early"),
            Err(e) => return self.fail(&format!("reading the body: {e}")),
        };
        if let Some(rate) = self.throttle {
            // Each chunk leaves when the rate allows its last byte, so the body ends late too.
            let done = self.sent + data.len() as u64;
            let due = Duration::from_secs_f64(done as f64 / rate.max(1) as f64);
            tokio::time::sleep_until((self.began + due).into()).await;
        }
        self.sent += data.len() as u64;
        self.recorder.progress(data.len() as u64);
        if let Some(r) = self.recorder.record.as_mut() {
            r.bytes_sent = self.sent;
        }
        if self.sent == self.len {
            // Logged before the last bytes can reach the client.
            self.recorder.finish(self.sent, true);
        }
        Some((Ok(Frame::data(Bytes::from(data))), self))
    }

    fn fail(mut self, why: &str) -> Step {
        self.recorder.finish(self.sent, false);
        self.done = true;
        Some((Err(io::Error::other(why.to_string())), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |h: &str, size| requested_range(Some(h), size);
        assert_eq!(requested_range(None, 10), Ok(None));
        assert_eq!(r("bytes=0-", 10), Ok(Some((0, 9))));
        assert_eq!(r("bytes=4-", 10), Ok(Some((4, 9))));
        assert_eq!(r("bytes=4-6", 10), Ok(Some((4, 6))));
        assert_eq!(r("bytes=4-60", 10), Ok(Some((4, 9))));
        assert_eq!(r("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(r("bytes=10-", 10), Err(()));
        assert_eq!(r("bytes=6-4", 10), Ok(None));
        assert_eq!(r("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(r("items=0-1", 10), Ok(None));
        assert_eq!(r("bytes=x-", 10), Ok(None));
        assert_eq!(r("bytes=-0", 10), Err(()));
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
    fn random_headers_never_panic() {
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
            let text = String::from_utf8_lossy(&bytes);
            let _ = requested_range(Some(&text), next() % 100);
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
