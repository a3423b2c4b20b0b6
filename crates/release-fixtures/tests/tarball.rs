//! Generated release tarballs and the fake `concourse` binary they carry.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use release_fixtures::fake_concourse::{read_log, Record, WRONG_VERSION};
use release_fixtures::tarball::{
    hash_file, list_entries, EntryKind, ReleaseSpec, TarballCache, Variant, RESOURCE_TYPES,
    STUB_BINARIES,
};

const MIB: u64 = 1 << 20;

fn cache() -> TarballCache {
    TarballCache::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs")).unwrap()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unpacks a normal tarball with the system tar into a fresh dir; returns (tempdir, root).
fn unpack(spec: &ReleaseSpec) -> (tempfile::TempDir, PathBuf) {
    let t = cache().get(spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&t.path)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let root = dir.path().join("concourse");
    (dir, root)
}

struct Fake {
    bin: PathBuf,
    log: PathBuf,
    run: PathBuf,
}

impl Fake {
    fn new(root: &Path, scratch: &Path) -> Fake {
        Fake {
            bin: root.join("bin/concourse"),
            log: scratch.join("fake.log"),
            run: scratch.join("run"),
        }
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("FAKE_CONCOURSE_LOG", &self.log)
            .env("FAKE_CONCOURSE_RUN", &self.run)
            .env(
                "FAKE_CONCOURSE_FALLBACK_LOG",
                self.log.with_extension("fallback"),
            );
        c
    }
    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut c = self.cmd(args);
        c.envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // Default signal handling, whatever the test runner inherited (e.g. nohup ignores
        // SIGHUP, and bash cannot trap a signal ignored at its start).
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                for sig in [
                    libc::SIGHUP,
                    libc::SIGUSR1,
                    libc::SIGUSR2,
                    libc::SIGTERM,
                    libc::SIGINT,
                ] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        Proc(c.spawn().unwrap())
    }
    fn records(&self) -> Vec<Record> {
        read_log(&self.log).unwrap()
    }
    fn wait_event(&self, pid: u32, event: &str) -> Record {
        wait_for(event, Duration::from_secs(10), || {
            self.records()
                .into_iter()
                .find(|r| r.pid == pid && r.event == event)
        })
    }
}

/// A spawned fake binary in its own process group, killed (with its children) on drop so a
/// failing test leaves nothing running.
struct Proc(Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    wait_for("exit", Duration::from_secs(10), || {
        child.try_wait().unwrap()
    })
}

#[test]
fn layout_size_and_hashes() {
    let spec = ReleaseSpec::new("7.14.3", 3 * MIB, Variant::Normal);
    let t = cache().get(&spec).unwrap();
    assert_eq!(t.file_name, "concourse-7.14.3-linux-amd64.tgz");
    assert!(t.path.ends_with("concourse-7.14.3-linux-amd64.tgz"));
    let size = std::fs::metadata(&t.path).unwrap().len();
    assert_eq!(size, t.size);
    assert!(size <= 3 * MIB && size > 3 * MIB - 64 * 1024, "size {size}");
    let (sha1, sha256) = hash_file(&t.path).unwrap();
    assert_eq!(sha1, t.sha1_hex);
    assert_eq!(sha256, t.sha256_hex);
    assert_eq!(
        t.sha1_file_content(),
        format!("{sha1}  concourse-7.14.3-linux-amd64.tgz\n")
    );

    // The system sha1sum agrees (independent implementation).
    let out = Command::new("sha1sum").arg(&t.path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sha1));

    let entries = list_entries(&t.path).unwrap();
    let has = |p: &str, k: EntryKind| entries.iter().any(|e| e.path == p && e.kind == k);
    assert!(has("concourse/", EntryKind::Dir));
    assert!(has("concourse/bin/concourse", EntryKind::File));
    for b in STUB_BINARIES {
        assert!(has(&format!("concourse/bin/{b}"), EntryKind::File), "{b}");
    }
    assert!(has(
        "concourse/fly-assets/fly-linux-amd64.tgz",
        EntryKind::File
    ));
    for t in RESOURCE_TYPES {
        assert!(has(
            &format!("concourse/resource-types/{t}/resource_metadata.json"),
            EntryKind::File
        ));
        assert!(has(
            &format!("concourse/resource-types/{t}/rootfs.tgz"),
            EntryKind::File
        ));
    }
    let unpacked: u64 = entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.size)
        .sum();
    assert_eq!(unpacked, t.unpacked_size);
    assert!(entries.iter().all(|e| !e.path.contains("..")));
    let bin = entries
        .iter()
        .find(|e| e.path == "concourse/bin/concourse")
        .unwrap();
    assert_eq!(bin.mode & 0o111, 0o111);

    // The padding is incompressible: gzip -1 cannot shrink the archive's content much.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc '{}' | gzip -1 | wc -c", t.path.display()))
        .output()
        .unwrap();
    let recompressed: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        recompressed > size * 95 / 100,
        "recompressed {recompressed}"
    );
}

#[test]
fn cache_reuses_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let c = TarballCache::new(dir.path()).unwrap();
    let spec = ReleaseSpec::new("8.0.1", MIB, Variant::Normal);
    let a = c.get_timed(&spec).unwrap();
    assert!(!a.cached);
    let b = c.get_timed(&spec).unwrap();
    assert!(b.cached);
    assert_eq!(a.tarball, b.tarball);
    // A fresh cache produces the same bytes.
    let dir2 = tempfile::tempdir().unwrap();
    let c2 = TarballCache::new(dir2.path()).unwrap().get(&spec).unwrap();
    assert_eq!(c2.sha1_hex, a.tarball.sha1_hex);
    // Different size or variant -> a different file.
    let other = c
        .get(&ReleaseSpec::new("8.0.1", MIB, Variant::WrongVersion))
        .unwrap();
    assert_ne!(other.path, a.tarball.path);
    assert_ne!(other.sha1_hex, a.tarball.sha1_hex);
    // Concurrent requests of a new key generate once and agree.
    let spec2 = ReleaseSpec::new("8.0.2", MIB, Variant::Normal);
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| c.get_timed(&spec2).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|g| !g.cached).count(), 1);
    assert!(results.windows(2).all(|w| w[0].tarball == w[1].tarball));
}

#[test]
fn hostile_variants_contain_their_entries() {
    let c = cache();
    let dd = c
        .get(&ReleaseSpec::new("7.14.3", MIB, Variant::DotDotEntry))
        .unwrap();
    let e = list_entries(&dd.path).unwrap();
    assert!(e
        .iter()
        .any(|e| e.path == "concourse/../../escape" && e.kind == EntryKind::File));

    let abs = c
        .get(&ReleaseSpec::new("7.14.3", MIB, Variant::AbsolutePath))
        .unwrap();
    let e = list_entries(&abs.path).unwrap();
    assert!(e.iter().any(|e| e.path.starts_with('/')));

    let sl = c
        .get(&ReleaseSpec::new("7.14.3", MIB, Variant::SymlinkEscape))
        .unwrap();
    let e = list_entries(&sl.path).unwrap();
    let link = e.iter().find(|e| e.kind == EntryKind::Symlink).unwrap();
    assert!(link.link.as_deref().unwrap().starts_with("../../../"));
    assert!(e
        .iter()
        .any(|e| e.path == "concourse/bin/escape/concourse-symlink-escape"));

    // The normal layout is still there in every hostile variant.
    for t in [&dd, &abs, &sl] {
        let e = list_entries(&t.path).unwrap();
        assert!(e.iter().any(|e| e.path == "concourse/bin/concourse"));
        assert!(e
            .iter()
            .any(|e| e.path == "concourse/resource-types/git/rootfs.tgz"));
    }
}

#[test]
fn fake_version_and_variants() {
    let scratch = tempfile::tempdir().unwrap();
    let (_d, root) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::Normal));
    let f = Fake::new(&root, scratch.path());
    for flag in ["--version", "-v"] {
        let out = f.cmd(&[flag]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "7.14.3\n");
    }
    let recs = f.records();
    assert_eq!(recs.iter().filter(|r| r.event == "version").count(), 2);
    let r = &recs[0];
    assert_eq!(r.version, "7.14.3");
    assert_eq!(
        Path::new(&r.exe_resolved),
        std::fs::canonicalize(&f.bin).unwrap()
    );
    assert_eq!(r.uid, 0);

    let (_d2, wroot) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::WrongVersion));
    let out = Fake::new(&wroot, scratch.path())
        .cmd(&["--version"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), WRONG_VERSION);

    let (_d3, broot) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::BrokenBinary));
    let b = Fake::new(&broot, scratch.path());
    for args in [&["--version"][..], &["web"], &["worker"]] {
        let out = b.cmd(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    let unknown = f.cmd(&["frobnicate"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let migrate = f
        .cmd(&["migrate", "--current-db-version"])
        .output()
        .unwrap();
    assert!(migrate.status.success());
    assert!(f.records().iter().any(|r| r.event == "migrate"));
}

#[test]
fn fake_generate_key() {
    let scratch = tempfile::tempdir().unwrap();
    let (_d, root) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::Normal));
    let f = Fake::new(&root, scratch.path());
    let rsa = scratch.path().join("session_signing_key");
    let out = f
        .cmd(&["generate-key", "-t", "rsa", "-f", rsa.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("wrote private key to {}\n", rsa.display())
    );
    let pem = std::fs::read_to_string(&rsa).unwrap();
    assert!(pem.starts_with("-----BEGIN ") && pem.contains("PRIVATE KEY-----"));
    assert!(!rsa.with_extension("pub").exists());
    assert!(!Path::new(&format!("{}.pub", rsa.display())).exists());

    let ssh = scratch.path().join("tsa_host_key");
    let out = f
        .cmd(&[
            "generate-key",
            "-t",
            "ssh",
            "-f",
            ssh.to_str().unwrap(),
            "-b",
            "1024",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("wrote private key to {}", ssh.display())));
    assert!(stdout.contains(&format!("wrote ssh public key to {}.pub", ssh.display())));
    let public = std::fs::read_to_string(format!("{}.pub", ssh.display())).unwrap();
    assert!(public.starts_with("ssh-rsa AAAA"), "{public}");
    // Regenerating overwrites without prompting.
    let again = f
        .cmd(&["generate-key", "-t", "ssh", "-f", ssh.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(again.status.success());
    // Usage errors fail.
    assert_eq!(
        f.cmd(&["generate-key", "-t", "dsa", "-f", "/tmp/x"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        f.cmd(&["generate-key", "-t", "rsa"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn fake_worker_signals() {
    use nix::sys::signal::Signal;
    let scratch = tempfile::tempdir().unwrap();
    let (_d, root) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::Normal));
    let f = Fake::new(&root, scratch.path());
    let env = [
        ("CONCOURSE_WORK_DIR", "/var/lib/concourse/worker"),
        ("CONCOURSE_TSA_HOST", "10.0.0.1:2222"),
        ("OTHER_VAR", "not logged"),
    ];

    // SIGUSR1: lands, exits 0.
    let mut w = f.spawn(&["worker", "--name", "w1"], &env);
    let start = f.wait_event(w.id(), "start");
    assert_eq!(start.subcommand, "worker");
    assert_eq!(start.argv, vec!["worker", "--name", "w1"]);
    assert_eq!(
        start.env.get("CONCOURSE_WORK_DIR").unwrap(),
        "/var/lib/concourse/worker"
    );
    assert_eq!(
        start.env.get("CONCOURSE_TSA_HOST").unwrap(),
        "10.0.0.1:2222"
    );
    assert!(!start.env.contains_key("OTHER_VAR"));
    assert_eq!(start.user, "root");
    let pidfile = std::fs::read_to_string(f.run.join("worker.pid")).unwrap();
    assert_eq!(pidfile.trim(), w.id().to_string());
    signal(&w, Signal::SIGUSR1);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "landing");
    f.wait_event(w.id(), "landed");

    // SIGUSR2: retires, exits 0.
    let mut w = f.spawn(&["worker"], &env);
    f.wait_event(w.id(), "start");
    signal(&w, Signal::SIGUSR2);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "retiring");

    // SIGTERM: killed without landing, exit 143.
    let mut w = f.spawn(&["worker"], &env);
    f.wait_event(w.id(), "start");
    signal(&w, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut w).code(), Some(143));
    f.wait_event(w.id(), "killed without landing");

    // land-worker signals the running worker through its pid file.
    let mut w = f.spawn(&["worker"], &env);
    f.wait_event(w.id(), "start");
    let out = f.cmd(&["land-worker", "--name", "w1"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    let lw = f
        .records()
        .into_iter()
        .find(|r| r.event == "land-worker")
        .unwrap();
    assert_eq!(lw.signalled_pid, Some(w.id()));
    f.wait_event(w.id(), "landing");

    // retire-worker likewise; with no worker running it still exits 0 and says so.
    let mut w = f.spawn(&["worker"], &env);
    f.wait_event(w.id(), "start");
    assert!(f.cmd(&["retire-worker"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "retiring");
    assert!(f.cmd(&["retire-worker"]).output().unwrap().status.success());
    let last = f.records().pop().unwrap();
    assert_eq!(last.event, "retire-worker");
    assert_eq!(last.detail.as_deref(), Some("no running worker"));

    // A land delay read from the run dir keeps the worker draining for a while.
    std::fs::write(f.run.join("land-delay"), "0.5").unwrap();
    let mut w = f.spawn(&["worker"], &env);
    f.wait_event(w.id(), "start");
    let t0 = Instant::now();
    signal(&w, Signal::SIGUSR1);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    assert!(t0.elapsed() >= Duration::from_millis(450));
}

#[test]
fn fake_web_signals() {
    use nix::sys::signal::Signal;
    let scratch = tempfile::tempdir().unwrap();
    let (_d, root) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::Normal));
    let f = Fake::new(&root, scratch.path());
    let mut w = f.spawn(&["web"], &[("CONCOURSE_BIND_PORT", "8080")]);
    let start = f.wait_event(w.id(), "start");
    assert_eq!(start.env.get("CONCOURSE_BIND_PORT").unwrap(), "8080");
    signal(&w, Signal::SIGHUP);
    f.wait_event(w.id(), "reloaded");
    assert!(w.try_wait().unwrap().is_none(), "web must survive SIGHUP");
    signal(&w, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "stopped");
}

/// Generation time of the 512 MiB benchmark tarball; run with `--ignored --nocapture`.
#[test]
#[ignore = "writes 512 MiB; run explicitly to measure"]
fn bench_generate_512mib() {
    let dir = tempfile::tempdir().unwrap();
    let g = release_fixtures::tarball::generate_benchmark_tarball(dir.path(), "7.14.3").unwrap();
    assert!(!g.cached);
    let secs = g.elapsed.as_secs_f64();
    println!(
        "generated {} bytes in {:.2}s ({:.0} MiB/s)",
        g.tarball.size,
        secs,
        g.tarball.size as f64 / (1 << 20) as f64 / secs
    );
    assert!(g.tarball.size > 511 * MIB && g.tarball.size <= 512 * MIB);
}
