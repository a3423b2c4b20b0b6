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

/// How long a wait gives up after. Only a broken fake takes that long: the whole suite on
/// 2 cores stretched a wait of a tenth of a second to over 10 s.
const PATIENCE: Duration = Duration::from_secs(60);

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
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
    /// Waits until `pid` logged `event` `n` times.
    fn wait_count(&self, pid: u32, event: &str, n: usize) {
        wait_for(event, || {
            let seen = self
                .records()
                .iter()
                .filter(|r| r.pid == pid && r.event == event)
                .count();
            (seen >= n).then_some(())
        })
    }
    fn wait_event(&self, pid: u32, event: &str) -> Record {
        wait_for(event, || {
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
    wait_for("exit", || child.try_wait().unwrap())
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
        .cmd(&["migrate", "--supported-db-version"])
        .output()
        .unwrap();
    assert!(migrate.status.success());
    assert_eq!(String::from_utf8_lossy(&migrate.stdout), "1746768931\n");
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

/// A deployment of the fake binary: a played database, TSA and worker keys, web's env.
struct Site {
    scratch: tempfile::TempDir,
    _release: tempfile::TempDir,
    f: Fake,
}

impl Site {
    fn new(version: &str) -> Site {
        let scratch = tempfile::tempdir().unwrap();
        let (release, root) = unpack(&ReleaseSpec::new(version, MIB, Variant::Normal));
        let f = Fake::new(&root, scratch.path());
        std::fs::create_dir_all(&f.run).unwrap();
        std::fs::write(f.run.join("beacon-retry"), "0.2").unwrap();
        let db = scratch.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join(".s.PGSQL.5432"), "").unwrap();
        for k in ["tsa_key", "worker_key", "stranger_key"] {
            let key = scratch.path().join(k);
            let out = f
                .cmd(&["generate-key", "-t", "ssh", "-f", key.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        std::fs::copy(
            scratch.path().join("worker_key.pub"),
            scratch.path().join("authorized"),
        )
        .unwrap();
        Site {
            scratch,
            _release: release,
            f,
        }
    }
    fn path(&self, p: &str) -> String {
        self.scratch.path().join(p).display().to_string()
    }
    fn web_env(&self) -> Vec<(String, String)> {
        vec![
            ("CONCOURSE_TSA_HOST_KEY".into(), self.path("tsa_key")),
            (
                "CONCOURSE_TSA_AUTHORIZED_KEYS".into(),
                self.path("authorized"),
            ),
            ("CONCOURSE_POSTGRES_HOST".into(), self.path("db")),
            ("CONCOURSE_POSTGRES_DATABASE".into(), "concourse".into()),
            // the fake refuses a web without main-team auth or without any connector,
            // like the real one
            ("CONCOURSE_ADD_LOCAL_USER".into(), "admin:pw".into()),
            ("CONCOURSE_MAIN_TEAM_LOCAL_USER".into(), "admin".into()),
        ]
    }
    fn worker_env(&self, key: &str) -> Vec<(String, String)> {
        vec![
            ("CONCOURSE_TSA_HOST".into(), "10.0.0.1:2222".into()),
            ("CONCOURSE_TSA_PUBLIC_KEY".into(), self.path("tsa_key.pub")),
            ("CONCOURSE_TSA_WORKER_PRIVATE_KEY".into(), self.path(key)),
            (
                "CONCOURSE_WORK_DIR".into(),
                "/var/lib/concourse/worker".into(),
            ),
            ("OTHER_VAR".into(), "not logged".into()),
        ]
    }
    fn spawn(&self, args: &[&str], env: &[(String, String)]) -> Proc {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.f.spawn(args, &env)
    }
    /// Web, once its TSA listens.
    fn web(&self) -> Proc {
        let w = self.spawn(&["web"], &self.web_env());
        self.f.wait_event(w.id(), "listening");
        w
    }
    /// A worker with `key`, once registered.
    fn worker(&self) -> Proc {
        let w = self.spawn(&["worker", "--name", "w1"], &self.worker_env("worker_key"));
        self.f.wait_event(w.id(), "registered");
        w
    }
    fn control(&self, name: &str, value: &str) {
        std::fs::write(self.f.run.join(name), value).unwrap();
    }
    fn clear(&self, name: &str) {
        let _ = std::fs::remove_file(self.f.run.join(name));
    }
}

fn killed_by(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The worker's signals and exit codes (worker/beacon.go, worker/beacon_runner.go,
/// worker/signals_unix.go): lost during start-up, buffered once the beacon runs; land or
/// retire and exit 0 when registered, exit 1 when no TSA answers the drain.
#[test]
fn fake_worker_signals() {
    use nix::sys::signal::Signal;
    let site = Site::new("7.14.3");
    let f = &site.f;
    let _web = site.web();

    // SIGUSR1: lands, exits 0.
    let mut w = site.worker();
    let start = f.wait_event(w.id(), "start");
    assert_eq!(start.subcommand, "worker");
    assert_eq!(start.argv, vec!["worker", "--name", "w1"]);
    assert_eq!(
        start.env.get("CONCOURSE_WORK_DIR").unwrap(),
        "/var/lib/concourse/worker"
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
    let mut w = site.worker();
    signal(&w, Signal::SIGUSR2);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "retired");

    // SIGTERM once running: every member stops cleanly, exit 0, not landed; the build
    // containers keep running.
    site.control("containers", "2");
    let mut w = site.worker();
    let containers: Vec<u32> = wait_for("two containers", || {
        let c: Vec<u32> = f
            .records()
            .iter()
            .filter(|r| r.pid == w.id() && r.event == "container")
            .filter_map(|r| r.signalled_pid)
            .collect();
        (c.len() == 2).then_some(c)
    });
    signal(&w, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "killed without landing");
    for c in &containers {
        assert!(alive(*c), "container {c} died with its worker");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*c as i32), Signal::SIGKILL);
    }
    site.clear("containers");

    // During start-up (Runner()): SIGUSR1 is lost, SIGTERM kills by the signal.
    site.control("startup-delay", "1");
    let mut w = site.spawn(&["worker"], &site.worker_env("worker_key"));
    f.wait_event(w.id(), "start");
    signal(&w, Signal::SIGUSR1);
    f.wait_event(w.id(), "ignored signal");
    signal(&w, Signal::SIGTERM);
    assert_eq!(killed_by(wait_exit(&mut w)), Some(15));
    site.clear("startup-delay");

    // land-worker signals the running worker through its pid file.
    let mut w = site.worker();
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
    assert!(f.cmd(&["retire-worker"]).output().unwrap().status.success());
    let last = f.records().pop().unwrap();
    assert_eq!(last.event, "retire-worker");
    assert_eq!(last.detail.as_deref(), Some("no running worker"));

    // A land delay read from the run dir keeps the worker draining for a while.
    site.control("land-delay", "0.5");
    let mut w = site.worker();
    let t0 = Instant::now();
    signal(&w, Signal::SIGUSR1);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    assert!(t0.elapsed() >= Duration::from_millis(450));
    site.clear("land-delay");

    // SIGHUP kills a worker at any time.
    let mut w = site.worker();
    signal(&w, Signal::SIGHUP);
    assert_eq!(killed_by(wait_exit(&mut w)), Some(1));
}

/// Registration needs a TSA that answers and knows the worker's key; a worker retries
/// forever without one, and a drain it cannot deliver ends it with exit 1.
#[test]
fn fake_worker_needs_its_tsa() {
    use nix::sys::signal::Signal;
    let site = Site::new("7.14.3");
    let f = &site.f;
    // No web yet: the worker keeps trying and does not exit.
    let mut w = site.spawn(&["worker"], &site.worker_env("worker_key"));
    f.wait_count(w.id(), "tsa unreachable", 2);
    assert!(w.try_wait().unwrap().is_none());
    let mut web = site.web();
    f.wait_event(w.id(), "registered");
    // A key the TSA does not know is refused until web reloads the authorized keys.
    let mut stranger = site.spawn(&["worker"], &site.worker_env("stranger_key"));
    f.wait_event(stranger.id(), "tsa unreachable");
    let mut keys = std::fs::read_to_string(site.path("authorized")).unwrap();
    keys.push_str(&std::fs::read_to_string(site.path("stranger_key.pub")).unwrap());
    std::fs::write(site.path("authorized"), keys).unwrap();
    signal(&web, Signal::SIGHUP);
    f.wait_event(web.id(), "reloaded");
    f.wait_event(stranger.id(), "registered");
    // The TSA goes away: both lose their registration and retry; a land now exits 1.
    signal(&web, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut web).code(), Some(0));
    f.wait_event(w.id(), "registration lost");
    signal(&w, Signal::SIGUSR1);
    assert_eq!(wait_exit(&mut w).code(), Some(1));
    f.wait_event(w.id(), "drain failed");
    // A cut network (tsa-unreachable) drops a registered worker too.
    let _web = site.web();
    f.wait_count(stranger.id(), "registered", 2);
    site.control("tsa-unreachable", "");
    f.wait_count(stranger.id(), "registration lost", 2);
    signal(&stranger, Signal::SIGUSR2);
    assert_eq!(wait_exit(&mut stranger).code(), Some(1));
}

/// Two webs with peer addresses and a worker listing both TSAs, registered: the worker,
/// the web it registered through (address, process) and the other web.
fn a_worker_with_two_tsas(site: &Site) -> (Proc, (&'static str, Proc), Vec<(&'static str, Proc)>) {
    let f = &site.f;
    let web_at = |addr: &str| {
        let mut env = site.web_env();
        env.push(("CONCOURSE_PEER_ADDRESS".into(), addr.into()));
        let w = site.spawn(&["web"], &env);
        f.wait_event(w.id(), "listening");
        w
    };
    let mut webs = vec![
        ("10.0.0.1", web_at("10.0.0.1")),
        ("10.0.0.2", web_at("10.0.0.2")),
    ];
    let mut env = site.worker_env("worker_key");
    env.retain(|(k, _)| k != "CONCOURSE_TSA_HOST");
    env.push((
        "CONCOURSE_TSA_HOST".into(),
        "10.0.0.1:2222,10.0.0.2:2222".into(),
    ));
    let w = site.spawn(&["worker"], &env);
    let first = f.wait_event(w.id(), "registered").detail.unwrap();
    let i = webs
        .iter()
        .position(|(a, _)| first == format!("{a}:2222"))
        .unwrap_or_else(|| panic!("registered at {first}"));
    let its = webs.remove(i);
    (w, its, webs)
}

/// Every child of `pid` has exited (a zombie: `pid` is stopped and has not reaped it).
fn children_all_exited(pid: u32) -> bool {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().all(|c| {
        std::fs::read_to_string(format!("/proc/{c}/stat"))
            .map(|st| {
                st.rsplit_once(") ")
                    .is_none_or(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    })
}

/// A worker lists several TSAs (tsa/client.go tryDialAll): it registers through one it can
/// reach and, when that web goes, through another that presents a host key it trusts.
#[test]
fn fake_worker_fails_over_to_another_tsa() {
    use nix::sys::signal::Signal;
    let site = Site::new("7.14.3");
    let f = &site.f;
    let (w, (_, mut gone), webs) = a_worker_with_two_tsas(&site);
    signal(&gone, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut gone).code(), Some(0));
    f.wait_event(w.id(), "registration lost");
    f.wait_count(w.id(), "registered", 2);
    let again: Vec<String> = f
        .records()
        .into_iter()
        .filter(|r| r.pid == w.id() && r.event == "registered")
        .filter_map(|r| r.detail)
        .collect();
    assert_eq!(again[1], format!("{}:2222", webs[0].0), "{again:?}");
}

/// A land dials a connection of its own (tsa/client.go Land → dial → tryDialAll): a worker
/// whose registration's TSA has just gone, before its beacon noticed, lands through another.
#[test]
fn fake_worker_lands_through_another_tsa_when_its_own_is_gone() {
    use nix::sys::signal::Signal;
    let site = Site::new("7.14.3");
    let f = &site.f;
    let (mut w, (_, mut gone), _webs) = a_worker_with_two_tsas(&site);
    // The worker is stopped while its TSA goes and the land is asked: when it runs again,
    // it sees the drain and the lost connection at once.
    signal(&w, Signal::SIGSTOP);
    signal(&gone, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut gone).code(), Some(0));
    wait_for("the registration's connection to end", || {
        children_all_exited(w.id()).then_some(())
    });
    signal(&w, Signal::SIGUSR1);
    signal(&w, Signal::SIGCONT);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    let events: Vec<String> = f
        .records()
        .into_iter()
        .filter(|r| r.pid == w.id())
        .map(|r| r.event)
        .collect();
    assert!(events.iter().any(|e| e == "landed"), "{events:?}");
    assert!(!events.iter().any(|e| e == "drain failed"), "{events:?}");
}

/// Web (cmd/concourse/web.go, tsa/tsacmd/command.go): SIGHUP kills it until the TSA has
/// started, then reloads; SIGTERM stops it with exit 0 once running; a database it cannot
/// reach ends it with exit 1.
#[test]
fn fake_web_signals() {
    use nix::sys::signal::Signal;
    let site = Site::new("7.14.3");
    let f = &site.f;
    site.control("startup-delay", "1");
    let mut w = site.spawn(&["web"], &site.web_env());
    f.wait_event(w.id(), "start");
    signal(&w, Signal::SIGHUP);
    assert_eq!(killed_by(wait_exit(&mut w)), Some(1));
    f.wait_event(w.id(), "killed before the TSA started");
    site.clear("startup-delay");
    let mut w = site.web();
    let start = f.wait_event(w.id(), "start");
    assert_eq!(start.env["CONCOURSE_POSTGRES_DATABASE"], "concourse");
    signal(&w, Signal::SIGUSR1);
    signal(&w, Signal::SIGHUP);
    f.wait_event(w.id(), "reloaded");
    assert!(w.try_wait().unwrap().is_none(), "web must survive SIGHUP");
    signal(&w, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut w).code(), Some(0));
    f.wait_event(w.id(), "stopped");
    // The database is down: exit 1 at once (7.13 and later).
    std::fs::remove_file(site.scratch.path().join("db/.s.PGSQL.5432")).unwrap();
    let mut w = site.spawn(&["web"], &site.web_env());
    assert_eq!(wait_exit(&mut w).code(), Some(1));
    let failed = f.wait_event(w.id(), "start-failed");
    assert!(failed.detail.unwrap().contains("dial error"));
}

/// Web's members run in one ifrit group (cmd/concourse/web.go): when its TSA dies, web
/// exits 1 instead of running on without it; a worker vanishing before the TSA answers
/// does not end the TSA.
#[test]
fn fake_web_exits_with_its_tsa() {
    let site = Site::new("7.14.3");
    let f = &site.f;
    let mut w = site.web();
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", w.id())).unwrap();
    let tsa: i32 = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .find(|p: &i32| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("fake-concourse-tsa"))
        })
        .expect("web's TSA child");
    // a client that sends its key and leaves at once: the TSA's answer meets a closed socket
    let fp_name = std::fs::read_to_string(format!("/proc/{tsa}/cmdline"))
        .unwrap()
        .split('\0')
        .find(|a| a.starts_with("fake-concourse-tsa/"))
        .unwrap()
        .to_string();
    let key = std::fs::read_to_string(site.path("worker_key.pub")).unwrap();
    let key: String = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    for _ in 0..20 {
        use std::io::Write;
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(fp_name.as_bytes()).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
        writeln!(c, "{key}").unwrap();
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(tsa as u32), "a vanished worker ended the TSA");
    assert!(w.try_wait().unwrap().is_none());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tsa),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut w).code(), Some(1));
    let exited = f.wait_event(w.id(), "member exited");
    assert!(exited.detail.unwrap().starts_with("tsa:"));
}

/// Web's dex server (skymarshal/dexserver/dexserver.go, skymarshal/skycmd/*_flags.go,
/// concourse/dex connector/ldap/ldap.go): a connector without all its required settings
/// is skipped silently; LDAP without its user search settings, local users with another
/// password connector, or no connector at all make web exit 1.
#[test]
fn fake_web_auth_connectors() {
    let site = Site::new("7.14.3");
    let f = &site.f;
    let with = |extra: &[(&str, &str)]| {
        let mut env = site.web_env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let full = [
        ("CONCOURSE_GITHUB_CLIENT_ID", "id"),
        ("CONCOURSE_GITHUB_CLIENT_SECRET", "s"),
        ("CONCOURSE_GITLAB_CLIENT_ID", "id"),
        ("CONCOURSE_GITLAB_CLIENT_SECRET", "s"),
        ("CONCOURSE_OIDC_ISSUER", "https://id.example"),
        ("CONCOURSE_OIDC_CLIENT_ID", "id"),
        ("CONCOURSE_OIDC_CLIENT_SECRET", "s"),
        // generic OAuth without its userinfo URL: skipped
        ("CONCOURSE_OAUTH_AUTH_URL", "https://o.example/auth"),
        ("CONCOURSE_OAUTH_TOKEN_URL", "https://o.example/token"),
        ("CONCOURSE_OAUTH_CLIENT_ID", "id"),
        ("CONCOURSE_OAUTH_CLIENT_SECRET", "s"),
        ("CONCOURSE_LDAP_HOST", "ldap.example:636"),
        ("CONCOURSE_LDAP_BIND_DN", "cn=ro"),
        ("CONCOURSE_LDAP_BIND_PW", "pw"),
        ("CONCOURSE_LDAP_USER_SEARCH_BASE_DN", "ou=people"),
        ("CONCOURSE_LDAP_USER_SEARCH_USERNAME", "uid"),
    ];
    let mut w = site.spawn(&["web"], &with(&full));
    f.wait_event(w.id(), "listening");
    let on = f.wait_event(w.id(), "connectors");
    assert_eq!(on.detail.as_deref(), Some("local,github,gitlab,oidc,ldap"));
    let skipped = f.wait_event(w.id(), "connector skipped");
    assert_eq!(
        skipped.detail.as_deref(),
        Some("oauth: missing USERINFO_URL")
    );
    signal(&w, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(wait_exit(&mut w).code(), Some(0));

    let refused = |extra: &[(&str, &str)], want: &str| {
        let mut w = site.spawn(&["web"], &with(extra));
        assert_eq!(wait_exit(&mut w).code(), Some(1), "{want}");
        let failed = f.wait_event(w.id(), "start-failed");
        assert!(
            failed.detail.as_deref().unwrap_or("").contains(want),
            "{:?}, want {want}",
            failed.detail
        );
    };
    refused(
        &[
            ("CONCOURSE_LDAP_HOST", "ldap.example:636"),
            ("CONCOURSE_LDAP_BIND_DN", "cn=ro"),
            ("CONCOURSE_LDAP_BIND_PW", "pw"),
            ("CONCOURSE_LDAP_USER_SEARCH_BASE_DN", "ou=people"),
        ],
        "missing required field \"userSearch.username\"",
    );
    refused(
        &[("CONCOURSE_PASSWORD_CONNECTOR", "ldap")],
        "can only set --add-local-user with --password-connector=local",
    );
    let mut no_local = site.web_env();
    no_local.retain(|(k, _)| k != "CONCOURSE_ADD_LOCAL_USER");
    let mut w = site.spawn(&["web"], &no_local);
    assert_eq!(wait_exit(&mut w).code(), Some(1));
    let failed = f.wait_event(w.id(), "start-failed");
    assert_eq!(
        failed.detail.as_deref(),
        Some("server: no connectors specified")
    );
}

/// `concourse migrate` and web's own migrations (atc/atccmd/command.go Migration.Execute,
/// atc/db/migration/migration.go): up on start, down only by a binary that knows the
/// newer migrations, and an older web starting on a newer schema without complaint.
#[test]
fn fake_migrate_schema() {
    let new = Site::new("8.0.0");
    let (_d, old_root) = unpack(&ReleaseSpec::new("7.14.3", MIB, Variant::Normal));
    let old = Fake::new(&old_root, new.scratch.path());
    let db: Vec<(String, String)> = new.web_env();
    let run = |f: &Fake, args: &[&str]| {
        let out = f.cmd(args).envs(db.iter().cloned()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    // A fresh database has no migration history.
    assert_eq!(run(&new.f, &["migrate", "--current-db-version"]).0, Some(1));
    assert_eq!(
        run(&old, &["migrate", "--supported-db-version"]),
        (Some(0), "1746768931".into())
    );
    // web 8.0.0 migrates up on start.
    drop(new.web());
    assert_eq!(
        run(&new.f, &["migrate", "--current-db-version"]),
        (Some(0), "1765921815".into())
    );
    // Down with the new binary; then the older web starts on the schema it supports.
    assert_eq!(
        run(&new.f, &["migrate", "--migrate-db-to-version=1746768931"]),
        (
            Some(0),
            "Successfully migrated to version: 1746768931".into()
        )
    );
    assert_eq!(
        run(&new.f, &["migrate", "--current-db-version"]),
        (Some(0), "1746768931".into())
    );
    let old_web = old.spawn(
        &["web"],
        &db.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    old.wait_event(old_web.id(), "listening");
    drop(old_web);
    assert!(!old
        .records()
        .iter()
        .any(|r| r.event == "web-on-newer-schema"));
    // An older binary cannot migrate down what it does not know: its web then runs on a
    // newer schema, which the fake records.
    drop(new.web());
    assert_eq!(
        run(&old, &["migrate", "--migrate-db-to-version", "1666754000"]).0,
        Some(0)
    );
    let old_web = old.spawn(
        &["web"],
        &db.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let newer = old.wait_event(old_web.id(), "web-on-newer-schema");
    assert!(newer.detail.unwrap().contains("schema 1765921815"));
    old.wait_event(old_web.id(), "listening");
    // Usage errors.
    assert_eq!(run(&new.f, &["migrate"]).0, Some(1));
    assert_eq!(run(&new.f, &["migrate", "--frobnicate"]).0, Some(1));
    assert_eq!(
        run(&new.f, &["migrate", "--migrate-db-to-version=x"]).0,
        Some(1)
    );
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
