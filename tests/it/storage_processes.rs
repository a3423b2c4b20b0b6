//! Real processes racing `ensure_release` on one volume directory, with real `flock`,
//! real SIGKILL and a real HTTP server: exactly one download, a kill at every named
//! crash checkpoint followed by a retry that succeeds, a waiter taking over, and never a
//! partial release visible under `releases/`.
//!
//! Each "unit" is this test binary re-executed with `CONCOURSE_TEST_HELPER` set: it runs
//! [`helper_process`] only, which prints `EVENT <status>` lines and one `RESULT <json>`.
//! Kills happen at named checkpoints (`concourse_ci::checkpoint`): the unit is started
//! with `CONCOURSE_CI_CHECKPOINT=<name>@<dir>`, parks there, and is killed once
//! `<dir>/<name>` holds its pid; nothing is timed.

use crate::support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concourse_ci::checkpoint;
use concourse_ci::installer::{
    ensure_release, prune_releases, verify_release, InstallEvent, InstallOptions, Outcome, Source,
    VerifyMode,
};
use concourse_ci::storage_coordinator::{Backoff, Volume};
use release_fixtures::server::RequestKind;
use serde::{Deserialize, Serialize};
use support::{
    sha1_requests, tarball, tarball_requests, Fault, ReleaseServer, Tarball, Target, Variant,
};

const HELPER_ENV: &str = "CONCOURSE_TEST_HELPER";

/// What a unit process does.
#[derive(Clone, Serialize, Deserialize)]
enum Job {
    /// `ensure_release(version)` from `url`.
    Install { version: String, url: String },
    /// `prune_releases(keep)`.
    Prune { keep: Vec<String> },
}

#[derive(Serialize, Deserialize)]
struct Spec {
    volume: PathBuf,
    job: Job,
    unit: String,
    lock_wait_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Res {
    outcome: String,
    resumed_from: u64,
    transferred: u64,
    dead_writer: Option<String>,
    removed: Vec<String>,
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
    let res = match &spec.job {
        Job::Install { version, url } => install(&spec, version, url),
        Job::Prune { keep } => prune(&spec, keep),
    };
    println!("RESULT {}", serde_json::to_string(&res).unwrap());
    std::process::exit(0);
}

fn helper_backoff() -> Backoff {
    Backoff {
        first: Duration::from_millis(20),
        factor: 2,
        max: Duration::from_millis(100),
    }
}

fn install(spec: &Spec, version: &str, url: &str) -> Res {
    let mut o = InstallOptions::new(&spec.unit);
    o.lock_wait = Duration::from_millis(spec.lock_wait_ms);
    o.backoff = helper_backoff();
    o.retries = 0;
    o.progress_interval = Duration::from_millis(100);
    o.http.read_timeout = Duration::from_secs(20);
    let vol = Volume::new(&spec.volume);
    let mut dead = None;
    let r = ensure_release(&vol, version, &Source::Url(url.into()), &o, &mut |ev| {
        if let InstallEvent::CleanedDeadWriter(c) = ev {
            dead = c.dead_marker.as_ref().map(|m| m.unit.clone());
        }
        if let Some(s) = ev.status_message() {
            println!("EVENT {s}");
        }
    });
    match r {
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
    }
}

fn prune(spec: &Spec, keep: &[String]) -> Res {
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let vol = Volume::new(&spec.volume);
    let wait = Duration::from_millis(spec.lock_wait_ms);
    match prune_releases(&vol, &keep, wait, &helper_backoff()) {
        Ok(r) => Res {
            outcome: "pruned".into(),
            removed: r.removed,
            ..Res::default()
        },
        Err(e) => Res {
            outcome: "error".into(),
            error: Some(e.to_string()),
            ..Res::default()
        },
    }
}

/// A running unit process and its output lines. Killed if dropped while running (a
/// failed assertion must not leave a parked process behind).
struct Unit {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Where a unit parks, if anywhere.
struct Park<'a> {
    name: &'a str,
    dir: &'a Path,
}

fn spawn(vol: &Path, job: Job, unit: &str, lock_wait: Duration, park: Option<Park>) -> Unit {
    let spec = Spec {
        volume: vol.to_path_buf(),
        job,
        unit: unit.into(),
        lock_wait_ms: lock_wait.as_millis() as u64,
    };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "storage_processes::helper_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HELPER_ENV, serde_json::to_string(&spec).unwrap())
    .env_remove(checkpoint::ENV)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Some(p) = park {
        cmd.env(checkpoint::ENV, format!("{}@{}", p.name, p.dir.display()));
    }
    let mut child = cmd.spawn().unwrap();
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

fn spawn_unit(vol: &Path, version: &str, url: &str, unit: &str, lock_wait: Duration) -> Unit {
    let job = Job::Install {
        version: version.into(),
        url: url.into(),
    };
    spawn(vol, job, unit, lock_wait, None)
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

impl Drop for Unit {
    fn drop(&mut self) {
        if self.reader.is_some() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `unit` parks at checkpoint `name` (its pid in `<dir>/<name>`), checking
/// the volume's invariant meanwhile.
fn wait_parked(root: &Path, dir: &Path, name: &str, unit: &mut Unit) {
    let marker = dir.join(name);
    let start = Instant::now();
    loop {
        check_no_partial_release(root);
        if let Ok(pid) = fs::read_to_string(&marker) {
            if pid.ends_with('\n') {
                assert_eq!(pid.trim(), unit.child.id().to_string(), "who parked");
                return;
            }
        }
        assert!(
            unit.running(),
            "the unit exited before reaching {name}: {:?}",
            unit.lines.lock().unwrap()
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the unit never reached {name}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fails if `releases/` ever holds anything but staging and trash dirs and complete
/// releases (a complete release has its MANIFEST, written before the publishing rename).
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

/// Names under `releases/`, sorted.
fn releases(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn setup(
    size: u64,
    versions: &[&str],
) -> (tempfile::TempDir, PathBuf, ReleaseServer, Vec<Tarball>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("volume");
    fs::create_dir(&root).unwrap();
    fs::create_dir(tmp.path().join("checkpoints")).unwrap();
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
    assert_eq!(releases(&root).len(), 3, "{:?}", releases(&root));
}

/// Kills an installing unit parked at `name`; returns the volume for inspection.
fn kill_install_at(
    name: &str,
    root: &Path,
    ckpt: &Path,
    server: &ReleaseServer,
    version: &str,
) -> Volume {
    let job = Job::Install {
        version: version.into(),
        url: server.tarball_url(version),
    };
    let park = Park { name, dir: ckpt };
    let mut a = spawn(
        root,
        job,
        "concourse-ci/0",
        Duration::from_secs(5),
        Some(park),
    );
    wait_parked(root, ckpt, name, &mut a);
    a.kill();
    check_no_partial_release(root);
    Volume::new(root)
}

/// The retried hook (same environment: the checkpoint already fired, so it passes).
fn retry(root: &Path, ckpt: &Path, server: &ReleaseServer, version: &str, name: &str) -> Res {
    let job = Job::Install {
        version: version.into(),
        url: server.tarball_url(version),
    };
    let park = Park { name, dir: ckpt };
    let mut units = vec![spawn(
        root,
        job,
        "concourse-ci/0",
        Duration::from_secs(5),
        Some(park),
    )];
    watch(root, &mut units, Duration::from_secs(60));
    units.pop().unwrap().finish().0
}

#[test]
fn killed_downloader_is_resumed_by_the_retried_hook() {
    let (tmp, root, server, ts) = setup(6 << 20, &["7.14.3"]);
    let t = &ts[0];
    let ckpt = tmp.path().join("checkpoints");
    let vol = kill_install_at("install.downloading", &root, &ckpt, &server, "7.14.3");
    // Killed mid-download: nothing published, its marker and staging dir remain.
    assert!(!vol.is_published("7.14.3").unwrap());
    let marker = vol.read_progress().expect("the dead writer's marker");
    assert_eq!(marker.unit, "concourse-ci/0");
    let kept = fs::metadata(vol.layout().partial_file(&t.file_name))
        .unwrap()
        .len();
    assert!(kept >= t.size / 2, "kept {kept} of {}", t.size);
    assert!(releases(&root)
        .iter()
        .any(|n| n.starts_with(".staging-7.14.3-concourse-ci-0-")));

    // Juju retries the hook: a new process of the same unit resumes.
    wait_logged(&server, "7.14.3", 1);
    let before = server.bytes_served("7.14.3");
    let res = retry(&root, &ckpt, &server, "7.14.3", "install.downloading");
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
    assert_eq!(releases(&root), vec!["7.14.3"]);
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
}

/// A kill before the publishing rename (after the download, after the staging tree was
/// fsynced) publishes nothing; the retried hook installs, resuming the complete partial
/// without downloading the body again.
#[test]
fn kill_before_publication_publishes_nothing_and_the_retry_installs() {
    for name in ["install.downloaded", "install.staged"] {
        let (tmp, root, server, ts) = setup(2 << 20, &["7.14.3"]);
        let t = &ts[0];
        let ckpt = tmp.path().join("checkpoints");
        let vol = kill_install_at(name, &root, &ckpt, &server, "7.14.3");
        assert!(!vol.is_published("7.14.3").unwrap(), "{name}");
        let names = releases(&root);
        assert!(
            names.len() == 1 && names[0].starts_with(".staging-7.14.3-"),
            "{name}: {names:?}"
        );
        if name == "install.staged" {
            let staging = root.join("releases").join(&names[0]);
            assert!(
                staging.join("MANIFEST").is_file(),
                "staged with its MANIFEST"
            );
        }
        let kept = fs::metadata(vol.layout().partial_file(&t.file_name))
            .unwrap()
            .len();
        assert_eq!(kept, t.size, "{name}: the whole tarball was kept");

        let res = retry(&root, &ckpt, &server, "7.14.3", name);
        assert_eq!(res.outcome, "installed", "{name}: {res:?}");
        assert_eq!(res.dead_writer.as_deref(), Some("concourse-ci/0"));
        assert_eq!((res.resumed_from, res.transferred), (t.size, 0), "{name}");
        assert_eq!(server.count_complete_downloads("7.14.3"), 1, "{name}");
        assert_eq!(releases(&root), vec!["7.14.3"], "{name}");
        assert!(vol.read_progress().is_none());
        assert!(!vol.layout().partial_file(&t.file_name).exists());
        verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
    }
}

/// A kill right after the publishing rename leaves a complete release: the retried hook
/// finds it and downloads nothing.
#[test]
fn kill_after_publication_leaves_a_complete_release() {
    let (tmp, root, server, _ts) = setup(2 << 20, &["7.14.3"]);
    let ckpt = tmp.path().join("checkpoints");
    let vol = kill_install_at("install.published", &root, &ckpt, &server, "7.14.3");
    assert_eq!(releases(&root), vec!["7.14.3"]);
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
    let res = retry(&root, &ckpt, &server, "7.14.3", "install.published");
    assert_eq!(res.outcome, "present", "{res:?}");
    assert_eq!(tarball_requests(&server, "7.14.3").len(), 1);
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
}

/// A prune killed between unpublishing (the rename to trash) and deleting: the version
/// is gone at once, the others are intact, and the next lock holder removes the trash.
#[test]
fn prune_killed_after_unpublishing_leaves_only_trash_for_the_next_holder() {
    let (tmp, root, server, _ts) = setup(1 << 20, &["7.14.2", "7.14.3", "7.14.4"]);
    let ckpt = tmp.path().join("checkpoints");
    for v in ["7.14.2", "7.14.3"] {
        let (res, _) = spawn_unit(
            &root,
            v,
            &server.tarball_url(v),
            "concourse-ci/0",
            Duration::ZERO,
        )
        .finish();
        assert_eq!(res.outcome, "installed", "{res:?}");
    }
    let job = Job::Prune {
        keep: vec!["7.14.3".into()],
    };
    let park = Park {
        name: "prune.unpublished",
        dir: &ckpt,
    };
    let mut p = spawn(&root, job, "concourse-ci/0", Duration::ZERO, Some(park));
    wait_parked(&root, &ckpt, "prune.unpublished", &mut p);
    p.kill();
    let vol = Volume::new(&root);
    assert_eq!(vol.published_versions().unwrap(), vec!["7.14.3"]);
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
    let names = releases(&root);
    assert!(
        names.iter().any(|n| n.starts_with(".trash-7.14.2-")),
        "{names:?}"
    );
    let url = server.tarball_url("7.14.4");
    let (res, _) = spawn_unit(&root, "7.14.4", &url, "concourse-ci/0", Duration::ZERO).finish();
    assert_eq!(res.outcome, "installed", "{res:?}");
    assert_eq!(releases(&root), vec!["7.14.3", "7.14.4"]);
}

#[test]
fn waiting_unit_takes_over_from_a_killed_holder() {
    let (tmp, root, server, ts) = setup(6 << 20, &["7.14.3"]);
    let t = &ts[0];
    let ckpt = tmp.path().join("checkpoints");
    let url = server.tarball_url("7.14.3");
    let job = Job::Install {
        version: "7.14.3".into(),
        url: url.clone(),
    };
    let park = |dir| {
        Some(Park {
            name: "install.downloading",
            dir,
        })
    };
    let mut a = spawn(
        &root,
        job.clone(),
        "concourse-ci/0",
        Duration::from_secs(5),
        park(&ckpt),
    );
    wait_parked(&root, &ckpt, "install.downloading", &mut a);
    // B has the same environment: the checkpoint fired already, so B will pass it.
    let b = spawn(
        &root,
        job,
        "concourse-ci/1",
        Duration::from_secs(60),
        park(&ckpt),
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
    a.kill();
    let mut units = vec![b];
    watch(&root, &mut units, Duration::from_secs(60));
    let (res, lines) = units.pop().unwrap().finish();
    assert_eq!(res.outcome, "installed", "{res:?} {lines:?}");
    assert_eq!(res.dead_writer.as_deref(), Some("concourse-ci/0"));
    assert!(res.resumed_from >= t.size / 2, "{res:?}");
    wait_logged(&server, "7.14.3", 2);
    // B resumed A's partial: its request asked for exactly the rest.
    let last = tarball_requests(&server, "7.14.3").pop().unwrap();
    assert_eq!((last.status, last.range_start), (206, res.resumed_from));
    assert_eq!(last.bytes_sent, t.size - res.resumed_from);
    assert!(last.reached_end);
    verify_release(&Volume::new(&root), "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn waiter_gives_up_at_its_deadline_while_a_live_holder_works() {
    let (tmp, root, server, _ts) = setup(4 << 20, &["7.14.3"]);
    let ckpt = tmp.path().join("checkpoints");
    let url = server.tarball_url("7.14.3");
    let job = Job::Install {
        version: "7.14.3".into(),
        url: url.clone(),
    };
    let park = Park {
        name: "install.downloading",
        dir: &ckpt,
    };
    let mut a = spawn(
        &root,
        job,
        "concourse-ci/0",
        Duration::from_secs(5),
        Some(park),
    );
    wait_parked(&root, &ckpt, "install.downloading", &mut a);
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
    assert!(a.running(), "the holder is still at work");
    a.kill();
}
