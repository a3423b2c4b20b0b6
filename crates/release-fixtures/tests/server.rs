//! The release server: downloads, ranges, request log, faults, GitHub endpoint, shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use release_fixtures::server::{Fault, FaultRule, ReleaseServer, RequestKind, Target};
use release_fixtures::tarball::{list_entries, ReleaseSpec, Tarball, TarballCache, Variant};
use sha1::Digest;

const MIB: u64 = 1 << 20;
const V: &str = "7.14.3";

fn cache() -> TarballCache {
    TarballCache::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs")).unwrap()
}

fn tarball(version: &str, variant: Variant) -> Tarball {
    cache()
        .get(&ReleaseSpec::new(version, 2 * MIB, variant))
        .unwrap()
}

fn server() -> (ReleaseServer, Tarball) {
    let s = ReleaseServer::start().unwrap();
    let t = tarball(V, Variant::Normal);
    s.register(t.clone());
    (s, t)
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, n: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    }
    fn content_length(&self) -> u64 {
        self.header("content-length").unwrap().parse().unwrap()
    }
    /// The body ended before Content-Length (a cut).
    fn short(&self) -> bool {
        (self.body.len() as u64) < self.content_length()
    }
}

/// A raw HTTP/1.1 client: sends `head` (request line + headers) and reads to EOF.
fn raw(s: &ReleaseServer, request: &str) -> Resp {
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    let _ = c.read_to_end(&mut all);
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (a, b) = l.split_once(':').unwrap();
            (a.to_string(), b.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: all[end + 4..].to_vec(),
    }
}

fn get(s: &ReleaseServer, path: &str, extra: &str) -> Resp {
    raw(
        s,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n"),
    )
}

fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_string()
}

fn sha1_hex(b: &[u8]) -> String {
    sha1::Sha1::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn full_download_matches_sha1_file_and_is_logged() {
    let (s, t) = server();
    let tpath = path_of(&s.tarball_url(V));
    assert_eq!(tpath, "/v7.14.3/concourse-7.14.3-linux-amd64.tgz");
    let r = get(&s, &tpath, "Authorization: Bearer nope\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), t.size);
    assert_eq!(r.body.len() as u64, t.size);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let sha = get(&s, &path_of(&s.sha1_url(V)), "");
    assert_eq!(sha.status, 200);
    let text = String::from_utf8(sha.body).unwrap();
    assert_eq!(
        text,
        format!("{}  concourse-7.14.3-linux-amd64.tgz\n", sha1_hex(&r.body))
    );
    assert_eq!(sha1_hex(&r.body), t.sha1_hex);

    let log = s.requests();
    assert_eq!(log.len(), 2);
    let d = log
        .iter()
        .find(|r| r.kind == RequestKind::Tarball(V.into()))
        .unwrap();
    assert_eq!((d.method.as_str(), d.status), ("GET", 200));
    assert!(d.completed && d.reached_end && !d.cut);
    assert_eq!(d.bytes_sent, t.size);
    assert_eq!(d.authorization.as_deref(), Some("Bearer nope"));
    assert_eq!(s.count_complete_downloads(V), 1);
    assert_eq!(s.bytes_served(V), t.size);
    // The .sha1 does not count as a download.
    assert!(log.iter().any(|r| r.kind == RequestKind::Sha1(V.into())));

    // GitHub-style path prefix works too.
    let gh = get(
        &s,
        "/concourse/concourse/releases/download/v7.14.3/concourse-7.14.3-linux-amd64.tgz.sha1",
        "",
    );
    assert_eq!(gh.status, 200);
    // Unknown versions and paths are 404.
    assert_eq!(
        get(&s, "/v9.9.9/concourse-9.9.9-linux-amd64.tgz", "").status,
        404
    );
    assert_eq!(get(&s, "/nothing", "").status, 404);
    // Other methods are refused.
    let post = raw(
        &s,
        &format!("POST {tpath} HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(post.status, 405);
}

#[test]
fn ranges_head_and_resume() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    let full = get(&s, &p, "").body;

    let part = get(&s, &p, "Range: bytes=1000-\r\n");
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range").unwrap(),
        format!("bytes 1000-{}/{}", t.size - 1, t.size)
    );
    assert_eq!(part.content_length(), t.size - 1000);
    assert_eq!(part.body[..], full[1000..]);

    let mid = get(&s, &p, "Range: bytes=10-19\r\n");
    assert_eq!(mid.status, 206);
    assert_eq!(mid.body[..], full[10..20]);

    let out = get(&s, &p, &format!("Range: bytes={}-\r\n", t.size));
    assert_eq!(out.status, 416);
    assert_eq!(
        out.header("content-range").unwrap(),
        format!("bytes */{}", t.size)
    );
    assert!(out.body.is_empty());

    let head = raw(&s, &format!("HEAD {p} HTTP/1.1\r\n\r\n"));
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), t.size);
    assert!(head.body.is_empty());

    // A cut download resumed with Range completes the file: one complete download.
    s.clear_log();
    s.add_fault(FaultRule::once(
        Target::Tarball(V.into()),
        Fault::CutAfter(300_000),
    ));
    let first = get(&s, &p, "");
    assert_eq!(first.status, 200);
    assert!(first.short());
    assert_eq!(first.body.len(), 300_000);
    assert_eq!(s.count_complete_downloads(V), 0);
    let rest = get(&s, &p, "Range: bytes=300000-\r\n");
    assert_eq!(rest.status, 206);
    let mut joined = first.body.clone();
    joined.extend_from_slice(&rest.body);
    assert_eq!(sha1_hex(&joined), t.sha1_hex);
    assert_eq!(s.count_complete_downloads(V), 1);
    assert_eq!(s.bytes_served(V), t.size);
    let log = s.requests();
    assert!(log[0].cut && !log[0].completed && log[0].bytes_sent == 300_000);
    assert_eq!(log[0].faults, vec!["CutAfter(300000)".to_string()]);
    assert_eq!(log[1].range.as_deref(), Some("bytes=300000-"));
    assert_eq!(log[1].range_start, 300_000);
    assert!(log[1].reached_end);
    assert!(s.faults().is_empty(), "a once-rule is used up");
}

#[test]
fn curl_downloads_and_resumes() {
    let (s, t) = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(&t.file_name);
    s.add_fault(FaultRule::once(
        Target::Tarball(V.into()),
        Fault::CutAfter(MIB),
    ));
    let st = Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&out)
        .arg(s.tarball_url(V))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(18), "curl reports a partial transfer");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), MIB);
    let st = Command::new("curl")
        .args(["-fsS", "-C", "-", "-o"])
        .arg(&out)
        .arg(s.tarball_url(V))
        .status()
        .unwrap();
    assert!(st.success());
    let sha = Command::new("curl")
        .args(["-fsS"])
        .arg(s.sha1_url(V))
        .current_dir(dir.path())
        .output()
        .unwrap();
    std::fs::write(dir.path().join("x.sha1"), &sha.stdout).unwrap();
    let check = Command::new("sha1sum")
        .args(["-c", "x.sha1"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(check.success(), "sha1sum -c accepts the .sha1 file");
    assert_eq!(s.count_complete_downloads(V), 1);
}

#[test]
fn status_faults_and_once_semantics() {
    let (s, _t) = server();
    let p = path_of(&s.tarball_url(V));
    let sp = path_of(&s.sha1_url(V));
    let id = s.set_fault(Target::Version(V.into()), Fault::Status(404));
    assert_eq!(get(&s, &p, "").status, 404);
    assert_eq!(get(&s, &sp, "").status, 404);
    s.remove_fault(id);
    assert_eq!(get(&s, &p, "").status, 200);

    s.add_fault(FaultRule::times(
        Target::Tarball(V.into()),
        Fault::Status(500),
        2,
    ));
    assert_eq!(get(&s, &sp, "").status, 200, "sha1 not targeted");
    assert_eq!(get(&s, &p, "").status, 500);
    assert_eq!(get(&s, &p, "").status, 500);
    assert_eq!(get(&s, &p, "").status, 200);

    s.set_fault(Target::All, Fault::Status(503));
    assert_eq!(get(&s, &sp, "").status, 503);
    assert_eq!(
        get(&s, "/repos/concourse/concourse/releases/latest", "").status,
        503
    );
    s.clear_faults();
    assert_eq!(get(&s, &sp, "").status, 200);
    // Path target.
    s.set_fault(Target::Path(sp.clone()), Fault::Status(500));
    assert_eq!(get(&s, &sp, "").status, 500);
    assert_eq!(get(&s, &p, "").status, 200);
    // Failed responses are not downloads.
    assert_eq!(s.count_complete_downloads(V), 3);
}

#[test]
fn cut_always_never_completes() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    s.set_fault(Target::Tarball(V.into()), Fault::CutAfter(1000));
    for _ in 0..3 {
        let r = get(&s, &p, "");
        assert_eq!(r.body.len(), 1000);
        assert!(r.short());
    }
    // Ranged requests are cut too (counted from the range start).
    let r = get(&s, &p, "Range: bytes=5000-\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(s.count_complete_downloads(V), 0);
    assert_eq!(s.bytes_served(V), 4000);
    assert!(s.requests().iter().all(|r| r.cut));
    assert!(t.size > 4000);
}

#[test]
fn throttle_slows_the_body() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    s.set_fault(Target::Tarball(V.into()), Fault::Throttle(1_000_000));
    let start = Instant::now();
    let r = get(&s, &p, "Range: bytes=0-299999\r\n");
    let took = start.elapsed();
    assert_eq!(r.body.len(), 300_000);
    assert!(took >= Duration::from_millis(280), "took {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // While a throttled download runs, bytes_served grows.
    let s = std::sync::Arc::new(s);
    let s2 = s.clone();
    let h = std::thread::spawn(move || get(&s2, &p, ""));
    assert!(s.wait_for_bytes_served(V, 300_000 + 200_000, Duration::from_secs(5)));
    assert!(s.count_complete_downloads(V) == 0);
    s.clear_faults(); // does not speed up the response already running
    let r = h.join().unwrap();
    assert_eq!(r.body.len() as u64, t.size);
    assert_eq!(s.count_complete_downloads(V), 1);
}

#[test]
fn wrong_sha1_and_substituted_tarball() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    let sp = path_of(&s.sha1_url(V));
    s.set_fault(Target::Sha1(V.into()), Fault::WrongSha1);
    let body = String::from_utf8(get(&s, &sp, "").body).unwrap();
    let (hex, name) = body.trim_end().split_once("  ").unwrap();
    assert_eq!(name, t.file_name);
    assert_eq!(hex.len(), 40);
    assert_ne!(hex, t.sha1_hex);
    assert_eq!(sha1_hex(&get(&s, &p, "").body), t.sha1_hex);
    s.clear_faults();

    // A ../ tarball served under the normal name, with a matching .sha1.
    let evil = tarball(V, Variant::DotDotEntry);
    s.set_fault(Target::Version(V.into()), Fault::Substitute(evil.clone()));
    let got = get(&s, &p, "");
    assert_eq!(got.body.len() as u64, evil.size);
    let sha = String::from_utf8(get(&s, &sp, "").body).unwrap();
    assert!(sha.starts_with(&sha1_hex(&got.body)));
    assert!(sha.ends_with("  concourse-7.14.3-linux-amd64.tgz\n"));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.tgz");
    std::fs::write(&f, &got.body).unwrap();
    assert!(list_entries(&f)
        .unwrap()
        .iter()
        .any(|e| e.path == "concourse/../../escape"));
}

#[test]
fn delay_fault_holds_the_headers() {
    let (s, _t) = server();
    s.add_fault(FaultRule::once(
        Target::Sha1(V.into()),
        Fault::Delay(Duration::from_millis(300)),
    ));
    let t0 = Instant::now();
    assert_eq!(get(&s, &path_of(&s.sha1_url(V)), "").status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(290));
}

#[test]
fn github_latest_endpoint() {
    let s = ReleaseServer::start().unwrap();
    assert!(s
        .github_api_url()
        .ends_with("/repos/concourse/concourse/releases/latest"));
    let p = path_of(&s.github_api_url());
    // Nothing registered: GitHub's 404.
    assert_eq!(get(&s, &p, "").status, 404);
    let old = tarball("7.14.3", Variant::Normal);
    let new = tarball("8.0.1", Variant::Normal);
    s.register(old);
    s.register(new.clone());
    let r = get(
        &s,
        &p,
        "Authorization: Bearer ghp_test\r\nAccept: application/vnd.github+json\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tag_name"], "v8.0.1");
    assert_eq!(v["draft"], false);
    let asset = &v["assets"][0];
    assert_eq!(asset["name"], "concourse-8.0.1-linux-amd64.tgz");
    assert_eq!(asset["size"], new.size);
    let url = asset["browser_download_url"].as_str().unwrap();
    assert_eq!(url, s.tarball_url("8.0.1"));
    let dl = get(&s, &path_of(url), "");
    assert_eq!(sha1_hex(&dl.body), new.sha1_hex);
    let sha_asset = &v["assets"][1];
    assert_eq!(sha_asset["browser_download_url"], s.sha1_url("8.0.1"));

    let gh = s.github_requests();
    assert_eq!(gh.len(), 2);
    assert_eq!(gh[0].authorization, None);
    assert_eq!(gh[1].authorization.as_deref(), Some("Bearer ghp_test"));
    assert_eq!(gh[1].accept.as_deref(), Some("application/vnd.github+json"));

    // Explicit latest.
    s.set_github_latest(Some("7.14.3"));
    let v: serde_json::Value = serde_json::from_slice(&get(&s, &p, "").body).unwrap();
    assert_eq!(v["tag_name"], "v7.14.3");
    s.set_github_latest(None);

    // Rate limit once, then fine.
    s.add_fault(FaultRule::once(Target::GithubLatest, Fault::RateLimited));
    let limited = get(&s, &p, "");
    assert_eq!(limited.status, 403);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let msg: serde_json::Value = serde_json::from_slice(&limited.body).unwrap();
    assert!(msg["message"]
        .as_str()
        .unwrap()
        .starts_with("API rate limit exceeded"));
    assert_eq!(get(&s, &p, "").status, 200);
    // RateLimited on All never touches downloads.
    s.set_fault(Target::All, Fault::RateLimited);
    assert_eq!(get(&s, &path_of(&s.sha1_url("8.0.1")), "").status, 200);
    assert_eq!(get(&s, &p, "").status, 403);
}

#[test]
fn malformed_requests_get_4xx_and_server_survives() {
    let (s, _t) = server();
    for junk in [
        "garbage\r\n\r\n",
        "GET\r\n\r\n",
        "GET nopath HTTP/1.1\r\n\r\n",
        "GET / SPDY/9\r\n\r\n",
        "GET / HTTP/1.1\r\nno-colon-here\r\n\r\n",
    ] {
        assert_eq!(raw(&s, junk).status, 400, "{junk:?}");
    }
    // Oversized head: hyper answers 431 (Request Header Fields Too Large).
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(40_000));
    let status = raw(&s, &big).status;
    assert!(status == 431 || status == 400, "{status}");
    // Invalid UTF-8 and a connection closed mid-head.
    {
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"GET /\xff\xfe HTTP/1.1\r\n\r\n").unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        assert!(v.starts_with(b"HTTP/1.1 400"));
        let mut c = TcpStream::connect(s.addr()).unwrap();
        c.write_all(b"GET /v7").unwrap();
        drop(c);
        drop(TcpStream::connect(s.addr()).unwrap());
    }
    assert_eq!(get(&s, &path_of(&s.sha1_url(V)), "").status, 200);
    // Only requests that parsed (here the target without a leading slash) are logged.
    let log = s.requests();
    assert_eq!(log.iter().filter(|r| r.status == 400).count(), 1, "{log:?}");
}

#[test]
fn ignore_range_serves_the_whole_body() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    s.set_fault(Target::Tarball(V.into()), Fault::IgnoreRange);
    let r = get(&s, &p, "Range: bytes=1000-\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("accept-ranges"), None);
    assert_eq!(r.body.len() as u64, t.size);
    assert_eq!(sha1_hex(&r.body), t.sha1_hex);
    assert_eq!(s.count_complete_downloads(V), 1);
}

#[test]
fn redirect_points_at_the_same_file() {
    let (s, t) = server();
    let p = path_of(&s.tarball_url(V));
    s.add_fault(FaultRule::once(
        Target::Tarball(V.into()),
        Fault::Redirect(302),
    ));
    let r = get(&s, &p, "");
    assert_eq!(r.status, 302);
    let to = r.header("location").unwrap().to_string();
    assert_eq!(to, format!("{}/redirected{p}", s.base_url()));
    // The target is served even while the rule applies to every request.
    s.set_fault(Target::All, Fault::Redirect(307));
    let d = get(&s, &path_of(&to), "");
    assert_eq!(d.status, 200);
    assert_eq!(sha1_hex(&d.body), t.sha1_hex);
    // curl follows it, as the charm's client must.
    let out = Command::new("curl")
        .args(["-fsSL", "-o", "/dev/null", "-w", "%{num_redirects}"])
        .arg(s.tarball_url(V))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1");
    assert_eq!(s.count_complete_downloads(V), 2);
}

#[test]
fn drop_cuts_in_flight_downloads_and_closes_the_port() {
    let (s, t) = server();
    s.set_fault(Target::Tarball(V.into()), Fault::Throttle(100_000));
    let addr = s.addr();
    let p = path_of(&s.tarball_url(V));
    let h = std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(format!("GET {p} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        v.len()
    });
    assert!(s.wait_for_bytes_served(V, 20_000, Duration::from_secs(5)));
    let t0 = Instant::now();
    drop(s);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let got = h.join().unwrap();
    assert!((got as u64) < t.size);
    assert!(TcpStream::connect(addr).is_err(), "port closed after drop");
}

/// Server throughput on the 512 MiB benchmark tarball, measured with curl; run with
/// `--ignored --nocapture`.
#[test]
#[ignore = "generates and serves 512 MiB; run explicitly to measure"]
fn bench_serve_512mib() {
    let g = release_fixtures::tarball::generate_benchmark_tarball(
        std::path::Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs")),
        "7.14.3",
    )
    .unwrap();
    println!(
        "generation: {:.2}s (cached: {})",
        g.elapsed.as_secs_f64(),
        g.cached
    );
    let s = ReleaseServer::start().unwrap();
    s.register(g.tarball.clone());
    let t0 = Instant::now();
    let st = Command::new("curl")
        .args(["-fsS", "-o", "/dev/null"])
        .arg(s.tarball_url("7.14.3"))
        .status()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(st.success());
    assert_eq!(s.count_complete_downloads("7.14.3"), 1);
    println!(
        "served {} bytes in {secs:.2}s ({:.0} MiB/s)",
        g.tarball.size,
        g.tarball.size as f64 / (1 << 20) as f64 / secs
    );
}
