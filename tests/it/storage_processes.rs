//! Real processes racing `ensure_release` on one volume directory, with real `flock`,
//! real SIGKILL and a real HTTP server: exactly one download, resume after a kill, a
//! waiter taking over, and never a partial release visible under `releases/`.
//!
//! Each "unit" is this test binary re-executed with `CONCOURSE_TEST_HELPER` set: it runs
//! [`helper_process`] only, which prints `EVENT <status>` lines and one `RESULT <json>`.

use crate::support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concourse_ci::installer::{
    ensure_release, verify_release, InstallEvent, InstallOptions, Outcome, Source, VerifyMode,
};
use concourse_ci::storage_coordinator::{Backoff, Volume};
use release_fixtures::server::RequestKind;
use serde::{Deserialize, Serialize};
use support::{
    sha1_requests, tarball, tarball_requests, Fault, ReleaseServer, Tarball, Target, Variant,
};

const HELPER_ENV: &str = "CONCOURSE_TEST_HELPER";

#[derive(Serialize, Deserialize)]
struct Spec {
    volume: PathBuf,
    version: String,
    url: String,
    unit: String,
    lock_wait_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Res {
    outcome: String,
    resumed_from: u64,
    transferred: u64,
    dead_writer: Option<String>,
    error: Option<String>,
}

/// The child side. A no-op (passing) test unless started by [`spawn_unit`].
#[test]
#[allow(clippy::disallowed_methods)] // test harness only: the spec comes from the parent test
fn helper_process() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let spec: Spec = serde_json::from_str(&spec).unwrap();
    // libtest printed "test helper_process ... " without a newline: end that line.
    println!();
    let mut o = InstallOptions::new(&spec.unit);
    o.lock_wait = Duration::from_millis(spec.lock_wait_ms);
    o.backoff = Backoff {
        first: Duration::from_millis(20),
        factor: 2,
        max: Duration::from_millis(100),
    };
    o.retries = 0;
    o.progress_interval = Duration::from_millis(100);
    o.http.read_timeout = Duration::from_secs(20);
    let vol = Volume::new(&spec.volume);
    let mut dead = None;
    let r = ensure_release(
        &vol,
        &spec.version,
        &Source::Url(spec.url.clone()),
        &o,
        &mut |ev| {
            if let InstallEvent::CleanedDeadWriter(c) = ev {
                dead = c.dead_marker.as_ref().map(|m| m.unit.clone());
            }
            if let Some(s) = ev.status_message() {
                println!("EVENT {s}");
            }
        },
    );
    let res = match r {
        Ok(Outcome::Installed(rep)) => Res {
            outcome: "installed".into(),
            resumed_from: rep.resumed_from,
            transferred: rep.transferred,
            dead_writer: dead,
            ..Res::default()
        },
        Ok(Outcome::InstalledByPeer { .. }) => Res {
            outcome: "peer".into(),
            ..Res::default()
        },
        Ok(Outcome::AlreadyPresent { .. }) => Res {
            outcome: "present".into(),
            ..Res::default()
        },
        Err(e) => Res {
            outcome: "error".into(),
            error: Some(e.to_string()),
            ..Res::default()
        },
    };
    println!("RESULT {}", serde_json::to_string(&res).unwrap());
    std::process::exit(0);
}

/// A running unit process and its output lines.
struct Unit {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn_unit(vol: &Path, version: &str, url: &str, unit: &str, lock_wait: Duration) -> Unit {
    let spec = Spec {
        volume: vol.to_path_buf(),
        version: version.into(),
        url: url.into(),
        unit: unit.into(),
        lock_wait_ms: lock_wait.as_millis() as u64,
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "storage_processes::helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, serde_json::to_string(&spec).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(line);
        }
    });
    Unit {
        child,
        lines,
        reader: Some(reader),
    }
}

impl Unit {
    fn finish(mut self) -> (Res, Vec<String>) {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "unit process failed: {st}");
        self.reader.take().unwrap().join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        let res = lines
            .iter()
            .find_map(|l| l.strip_prefix("RESULT "))
            .map(|j| serde_json::from_str(j).unwrap())
            .unwrap_or_else(|| panic!("no RESULT in {lines:?}"));
        (res, lines)
    }
    fn kill(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let st = self.child.wait().unwrap();
        assert!(!st.success());
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }
    fn events(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix("EVENT ").map(str::to_string))
            .collect()
    }
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// Fails if `releases/` ever holds anything but staging dirs and complete releases
/// (a complete release has its MANIFEST, written before the publishing rename).
fn check_no_partial_release(root: &Path) {
    let Ok(entries) = fs::read_dir(root.join("releases")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with(".staging-") || name.starts_with(".trash-") {
            continue;
        }
        let manifest = e.path().join("MANIFEST");
        assert!(
            manifest.exists() || !e.path().exists(),
            "releases/{name} is visible without its MANIFEST"
        );
    }
}

/// Polls the volume while `units` run, checking the invariant, until all exit.
fn watch(root: &Path, units: &mut [Unit], timeout: Duration) {
    let t = Instant::now();
    while units.iter_mut().any(Unit::running) {
        check_no_partial_release(root);
        assert!(
            t.elapsed() < timeout,
            "units still running after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    check_no_partial_release(root);
}

fn setup(
    size: u64,
    versions: &[&str],
) -> (tempfile::TempDir, PathBuf, ReleaseServer, Vec<Tarball>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("volume");
    fs::create_dir(&root).unwrap();
    let server = support::server();
    let mut ts = Vec::new();
    for v in versions {
        let t = tarball(v, size, Variant::Normal);
        server.register(t.clone());
        ts.push(t);
    }
    (tmp, root, server, ts)
}

fn throttle(server: &ReleaseServer, version: &str, bytes_per_sec: u64) {
    server.set_fault(
        Target::Tarball(version.to_string()),
        Fault::Throttle(bytes_per_sec),
    );
}

/// Waits until every tarball request of `version` has been logged (`n` of them).
fn wait_logged(server: &ReleaseServer, version: &str, n: usize) {
    let v = version.to_string();
    assert!(
        server.wait_for_requests(Duration::from_secs(10), |log| {
            log.iter()
                .filter(|r| r.kind == RequestKind::Tarball(v.clone()))
                .count()
                >= n
        }),
        "the server did not log {n} requests for {version}"
    );
}

#[test]
fn racing_processes_download_exactly_once() {
    let versions = ["7.14.1", "7.14.2", "7.14.3"];
    let (_tmp, root, server, ts) = setup(4 << 20, &versions);
    for (round, t) in ts.iter().enumerate() {
        let version = t.spec.version.as_str();
        // Slow enough that every process arrives while the first one downloads.
        throttle(&server, version, 8 << 20);
        let url = server.tarball_url(version);
        let mut units: Vec<Unit> = (0..8)
            .map(|i| {
                spawn_unit(
                    &root,
                    version,
                    &url,
                    &format!("concourse-ci/{i}"),
                    Duration::from_secs(60),
                )
            })
            .collect();
        watch(&root, &mut units, Duration::from_secs(120));
        let results: Vec<(Res, Vec<String>)> = units.into_iter().map(Unit::finish).collect();
        let outcomes: Vec<&str> = results.iter().map(|(r, _)| r.outcome.as_str()).collect();
        assert_eq!(
            outcomes.iter().filter(|o| **o == "installed").count(),
            1,
            "round {round}: {outcomes:?} {:?}",
            results.iter().map(|r| &r.0.error).collect::<Vec<_>>()
        );
        assert!(
            outcomes
                .iter()
                .all(|o| ["installed", "peer", "present"].contains(o)),
            "{outcomes:?}"
        );
        wait_logged(&server, version, 1);
        let reqs = tarball_requests(&server, version);
        assert_eq!(
            reqs.len(),
            1,
            "round {round}: exactly one download: {reqs:?}"
        );
        assert!(reqs[0].completed && reqs[0].bytes_sent == t.size);
        assert_eq!(server.count_complete_downloads(version), 1);
        let sha1s = sha1_requests(&server, version).len();
        assert_eq!(sha1s, 1, "only the lock holder fetched the checksum");
        // The waiters said whom they waited for.
        let waited: Vec<String> = results
            .iter()
            .flat_map(|(_, l)| l.iter())
            .filter(|l| l.starts_with("EVENT Waiting for concourse-ci/"))
            .cloned()
            .collect();
        assert!(!waited.is_empty(), "round {round}: some unit waited");
        assert!(
            waited
                .iter()
                .all(|w| w.contains(&format!("to download v{version} ("))),
            "{waited:?}"
        );
        verify_release(&Volume::new(&root), version, VerifyMode::Full).unwrap();
        server.clear_faults();
    }
    let names: Vec<String> = fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// Waits until the partial download of `t` on the volume is at least `bytes` long.
fn wait_for_partial(root: &Path, t: &Tarball, bytes: u64, unit: &mut Unit) {
    let p = Volume::new(root).layout().partial_file(&t.file_name);
    let start = Instant::now();
    loop {
        check_no_partial_release(root);
        if fs::metadata(&p).map(|m| m.len()).unwrap_or(0) >= bytes {
            return;
        }
        assert!(
            unit.running(),
            "the downloader exited early: {:?}",
            unit.lines.lock().unwrap()
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "download did not progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn killed_downloader_is_resumed_by_the_retried_hook() {
    let (_tmp, root, server, ts) = setup(6 << 20, &["7.14.3"]);
    let t = &ts[0];
    let url = server.tarball_url("7.14.3");
    throttle(&server, "7.14.3", 3 << 20);
    let mut a = spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/0",
        Duration::from_secs(5),
    );
    wait_for_partial(&root, t, 2 << 20, &mut a);
    a.kill();
    // Killed mid-download: nothing published, its marker and staging dir remain.
    let vol = Volume::new(&root);
    assert!(!vol.is_published("7.14.3").unwrap());
    let marker = vol.read_progress().expect("the dead writer's marker");
    assert_eq!(marker.unit, "concourse-ci/0");
    let kept = fs::metadata(vol.layout().partial_file(&t.file_name))
        .unwrap()
        .len();
    assert!(kept >= 2 << 20);
    assert!(fs::read_dir(root.join("releases")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".staging-7.14.3-concourse-ci-0-")));

    // Juju retries the hook: a new process of the same unit resumes.
    server.clear_faults();
    wait_logged(&server, "7.14.3", 1);
    let before = server.bytes_served("7.14.3");
    let mut units = vec![spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/0",
        Duration::from_secs(5),
    )];
    watch(&root, &mut units, Duration::from_secs(60));
    let (res, _) = units.pop().unwrap().finish();
    assert_eq!(res.outcome, "installed", "{res:?}");
    assert_eq!(res.dead_writer.as_deref(), Some("concourse-ci/0"));
    assert!(res.resumed_from >= kept, "{res:?} kept {kept}");
    assert_eq!(res.resumed_from + res.transferred, t.size);
    let last = tarball_requests(&server, "7.14.3").pop().unwrap();
    assert_eq!(last.status, 206);
    assert_eq!(last.range, Some(format!("bytes={}-", res.resumed_from)));
    assert_eq!(
        server.bytes_served("7.14.3") - before,
        t.size - res.resumed_from
    );
    // Leftovers are gone and the release is intact.
    assert!(vol.read_progress().is_none());
    let names: Vec<String> = fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["7.14.3"]);
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn waiting_unit_takes_over_from_a_killed_holder() {
    let (_tmp, root, server, ts) = setup(6 << 20, &["7.14.3"]);
    let t = &ts[0];
    let url = server.tarball_url("7.14.3");
    throttle(&server, "7.14.3", 3 << 20);
    let mut a = spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/0",
        Duration::from_secs(5),
    );
    wait_for_partial(&root, t, 1 << 20, &mut a);
    let mut b = spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/1",
        Duration::from_secs(60),
    );
    // B waits, naming A and its progress.
    let start = Instant::now();
    while !b
        .events()
        .iter()
        .any(|e| e.starts_with("Waiting for concourse-ci/0 to download v7.14.3 ("))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B never reported waiting: {:?}",
            b.events()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.running());
    a.kill();
    server.clear_faults();
    let mut units = vec![b];
    watch(&root, &mut units, Duration::from_secs(60));
    let (res, lines) = units.pop().unwrap().finish();
    assert_eq!(res.outcome, "installed", "{res:?} {lines:?}");
    assert_eq!(res.dead_writer.as_deref(), Some("concourse-ci/0"));
    assert!(res.resumed_from >= 1 << 20, "{res:?}");
    wait_logged(&server, "7.14.3", 2);
    // About one tarball's worth of bytes in total (A's last unwritten chunk at most extra).
    let sent = server.bytes_served("7.14.3");
    assert!(
        sent >= t.size && sent <= t.size + (4 << 20),
        "sent {sent}, size {}",
        t.size
    );
    verify_release(&Volume::new(&root), "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn waiter_gives_up_at_its_deadline_while_a_live_holder_works() {
    let (_tmp, root, server, ts) = setup(4 << 20, &["7.14.3"]);
    let t = &ts[0];
    let url = server.tarball_url("7.14.3");
    throttle(&server, "7.14.3", 1 << 20);
    let mut a = spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/0",
        Duration::from_secs(5),
    );
    wait_for_partial(&root, t, 256 << 10, &mut a);
    let b = spawn_unit(
        &root,
        "7.14.3",
        &url,
        "concourse-ci/1",
        Duration::from_millis(300),
    );
    let (res, _) = b.finish();
    assert_eq!(res.outcome, "error");
    let err = res.error.unwrap();
    assert!(
        err.contains("waiting for the install lock") && err.contains("held by concourse-ci/0"),
        "{err}"
    );
    server.clear_faults();
    let (res, _) = a.finish();
    assert_eq!(res.outcome, "installed");
}
