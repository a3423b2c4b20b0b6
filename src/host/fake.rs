//! Test doubles of the host (tests only): a recording service manager that behaves like
//! systemd towards the charm and like Concourse towards its signals, the journal of what
//! its processes logged, a database schema as `concourse migrate` reports it, a clock that
//! sleeps by moving time on, and a provisioner that makes test keys and uses the current
//! user.
//!
//! Owns: [`Services`], [`FakeJournal`], [`FakeMigrator`], [`FakeClock`],
//! [`FakeProvisioner`] and [`FakeHost`], which builds a [`Host`] over a temporary root from
//! them. Invariants, as systemd has them (`src/systemctl/systemctl-start-unit.c`,
//! `systemctl-kill.c`, `src/core/service.c` in systemd): a service starts only when its
//! unit file exists; a changed unit file or drop-in keeps the loaded definition until
//! `daemon-reload` (`NeedDaemonReload`); `reload` needs an active service whose unit has
//! `ExecReload=`; `kill --kill-whom=main` needs a main process; `start` of an active
//! service does nothing; `stop` sends `KillSignal=` and, when the process stays, moves the
//! clock by `TimeoutStopSec=` and escalates (`TimeoutStopFailureMode=abort`:
//! `WatchdogSignal=`, then after `TimeoutAbortSec=` SIGKILL) to the main process
//! (`KillMode=process`) or all (`escalate main|all <signal> <unit>` in the journal).
//! As Concourse (concourse/concourse v7.14.3): a process is ready ([`Services`] logs
//! `tsa.listening` for web, `beacon.registered` for a worker) at start, or later
//! (`ready_after`), or never (`never_ready`); before that SIGHUP kills web and SIGUSR1/2
//! are lost on a worker; a ready worker exits on SIGUSR1/SIGUSR2 unless it ignores drains;
//! a ready web reloads on SIGHUP; SIGTERM ends both. Web migrates the database up when it
//! starts and runs on a newer schema without complaint, which is recorded. A started
//! process records the binary it runs, resolved through the unit's pointer at start (what
//! `/proc/<pid>/exe` says), and the environment it read; a test can make any call fail
//! (`ServicesState::failing`) the way a failed systemd job does.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Clock, DbEnv, Host, Journal, JournalError, KeyKind, KillWhom, ManagerError, MigrateError,
    Migrator, Owner, Paths, ProvisionError, Provisioner, ServiceManager, UnitStatus,
};
use crate::service::UNIT_DIR;

/// One service as the fake systemd knows it.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub active: bool,
    pub pid: Option<u32>,
    pub enabled: bool,
    /// The unit text (file and drop-ins) systemd loaded (at the last daemon-reload or
    /// first start).
    pub loaded: Option<String>,
    /// When the main process logs its readiness line (fake clock), if ever.
    pub ready_at: Option<Duration>,
    /// The release version the main process runs (from `ExecStart=` through the pointer).
    pub version: Option<String>,
    /// The binary the running process executes, resolved through the unit's pointer at
    /// its start (as the kernel resolves `ExecStart=`; `/proc/<pid>/exe`).
    pub exe: Option<PathBuf>,
    /// What the process read from its `EnvironmentFile=`s when it started.
    pub environment: Option<String>,
}

/// The database as the fake `concourse migrate` and web see it.
#[derive(Debug, Default)]
pub struct FakeDb {
    /// The schema version; None: no migration history yet.
    pub schema: Option<u64>,
    /// `--current-db-version` fails (the database is unreachable).
    pub unreachable: bool,
    /// `--migrate-db-to-version` fails.
    pub migrate_fails: bool,
    /// The supported schema of each version (default: the fake concourse's).
    pub supported: BTreeMap<String, u64>,
    /// Versions whose binary cannot run `migrate` at all.
    pub broken: BTreeSet<String>,
    /// Web starts on a schema newer than its version supports: (version, schema).
    pub newer_schema_starts: Vec<(String, u64)>,
}

impl FakeDb {
    pub fn supported_by(&self, version: &str) -> u64 {
        self.supported
            .get(version)
            .copied()
            .unwrap_or_else(|| release_fixtures::fake_concourse::schema_version(version))
    }
}

#[derive(Debug, Default)]
pub struct ServicesState {
    pub services: BTreeMap<String, Service>,
    /// Every call, in order: `start concourse-server`, `kill main SIGUSR1 concourse-worker`.
    pub journal: Vec<String>,
    /// Services whose process dies right after it starts.
    pub crash_on_start: BTreeSet<String>,
    /// Releases (versions) whose binary dies right after it starts: the service's
    /// `ExecStart=` is resolved through the unit's pointer, as systemd would run it.
    pub crashing_versions: BTreeSet<String>,
    /// (service, version): that service dies right after it starts on that release.
    pub crashes: BTreeSet<(String, String)>,
    /// Services whose main process ignores SIGUSR1/SIGUSR2 (it never lands).
    pub ignore_drain: BTreeSet<String>,
    /// Services whose main process ignores SIGTERM too.
    pub ignore_term: BTreeSet<String>,
    /// Services whose process never logs its readiness (a worker without a TSA).
    pub never_ready: BTreeSet<String>,
    /// How long after starting a service's process logs its readiness (default: at once).
    pub ready_after: BTreeMap<String, Duration>,
    pub db: FakeDb,
    /// Calls that fail while listed (`restart concourse-server`, `daemon-reload`), as
    /// `systemctl` does when a job fails or the manager is busy; the call has no effect.
    pub failing: BTreeSet<String>,
    next_pid: u32,
}

/// A recording service manager over the unit files under a test root.
#[derive(Clone)]
pub struct Services {
    paths: Paths,
    unit_dir: PathBuf,
    clock: FakeClock,
    pub state: Rc<RefCell<ServicesState>>,
}

/// The readiness line a Concourse service logs (`readiness`).
fn ready_line(unit: &str) -> Option<String> {
    let message = match unit {
        "concourse-server" => "tsa.listening",
        "concourse-worker" => "worker.beacon-runner.beacon.registered",
        _ => return None,
    };
    Some(format!(
        r#"{{"timestamp":"0","level":"info","source":"fake","message":"{message}","data":{{}}}}"#
    ))
}

/// The last `key=` value in unit text (drop-ins come after the file).
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

fn secs(text: &str, key: &str, default: u64) -> Duration {
    Duration::from_secs(
        setting(text, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn failed(args: &str, unit: &str, stderr: &str) -> ManagerError {
    ManagerError::Failed {
        args: args.to_string(),
        unit: unit.to_string(),
        status: "exit status: 1".into(),
        stderr: stderr.to_string(),
    }
}

impl Services {
    pub fn new(paths: &Paths, clock: &FakeClock) -> Services {
        Services {
            paths: paths.clone(),
            unit_dir: paths.local(UNIT_DIR),
            clock: clock.clone(),
            state: Rc::default(),
        }
    }

    /// The binary a unit text starts, resolved through symlinks; `None` when it is
    /// missing (systemd cannot exec it).
    fn exe_of(&self, text: &str) -> Option<PathBuf> {
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart="))?;
        let bin = exec.split_whitespace().next().unwrap_or_default();
        std::fs::canonicalize(self.paths.local(bin)).ok()
    }

    /// The text of the unit's `EnvironmentFile=`s now, as a starting process reads them.
    fn environment_of(&self, text: &str) -> String {
        text.lines()
            .filter_map(|l| l.strip_prefix("EnvironmentFile="))
            .filter_map(|f| std::fs::read_to_string(self.paths.local(f)).ok())
            .collect()
    }

    /// The release version a resolved binary belongs to (`…/releases/<version>/…`).
    fn version_of(real: &Path) -> Option<String> {
        let real = real.display().to_string();
        real.split("/releases/")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
    }

    /// Logs a call; fails it when the test lists it in `failing`.
    fn call(&self, entry: String, unit: &str) -> Result<(), ManagerError> {
        let refused = self.state.borrow().failing.contains(&entry);
        self.log(entry.clone());
        if refused {
            let msg = format!("Job for {unit}.service failed (test: `{entry}` is failing).");
            return Err(failed(&entry, unit, &msg));
        }
        Ok(())
    }

    /// The unit file and its drop-ins, as systemd loads them.
    fn unit_text(&self, unit: &str) -> Option<String> {
        let mut text =
            std::fs::read_to_string(self.unit_dir.join(format!("{unit}.service"))).ok()?;
        let dir = self.unit_dir.join(format!("{unit}.service.d"));
        let mut dropins: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dropins.retain(|p| p.extension().is_some_and(|x| x == "conf"));
        dropins.sort();
        for d in dropins {
            text.push('\n');
            text.push_str(&std::fs::read_to_string(d).unwrap_or_default());
        }
        Some(text)
    }

    /// Whether the service's process has logged its readiness by now.
    pub fn ready(&self, unit: &str) -> bool {
        let svc = self.service(unit);
        svc.active && svc.ready_at.is_some_and(|t| t <= self.clock.elapsed())
    }

    /// The process of `unit` ended (journaled as `exited <unit>: <why>`).
    fn exited(&self, unit: &str, why: &str) {
        self.log(format!("exited {unit}: {why}"));
        if let Some(s) = self.state.borrow_mut().services.get_mut(unit) {
            s.active = false;
            s.pid = None;
            s.exe = None;
            s.environment = None;
        }
    }

    /// What the main process of `unit` does with `signal` (Concourse's handlers): true
    /// when it ends. SIGHUP reloads a ready web and kills anything else.
    fn deliver(&self, unit: &str, signal: &str) -> bool {
        let st = self.state.borrow();
        let ready = self.ready(unit);
        let ends = match signal {
            "SIGKILL" => true,
            "SIGTERM" | "SIGINT" => !st.ignore_term.contains(unit),
            "SIGUSR1" | "SIGUSR2" => {
                unit == "concourse-worker" && ready && !st.ignore_drain.contains(unit)
            }
            "SIGHUP" => !(unit == "concourse-server" && ready),
            _ => false,
        };
        drop(st);
        if ends {
            self.exited(unit, signal);
        }
        ends
    }

    /// The journal entries from index `mark` on.
    pub fn journal_since(&self, mark: usize) -> Vec<String> {
        self.state.borrow().journal[mark..].to_vec()
    }

    pub fn journal_len(&self) -> usize {
        self.state.borrow().journal.len()
    }

    /// From now on `unit`'s process logs its readiness `after` its start.
    pub fn set_ready_after(&self, unit: &str, after: Duration) {
        self.state
            .borrow_mut()
            .ready_after
            .insert(unit.into(), after);
    }

    /// From now on `unit`'s process never logs its readiness.
    pub fn set_never_ready(&self, unit: &str) {
        self.state.borrow_mut().never_ready.insert(unit.into());
    }

    /// `unit` stops behind the charm's back (its process died, or an operator stopped it).
    pub fn set_inactive(&self, unit: &str) {
        let mut st = self.state.borrow_mut();
        let s = st.services.get_mut(unit);
        s.unwrap_or_else(|| panic!("{unit} was never started"))
            .active = false;
    }

    pub fn service(&self, unit: &str) -> Service {
        self.state
            .borrow()
            .services
            .get(unit)
            .cloned()
            .unwrap_or_default()
    }

    fn log(&self, entry: String) {
        self.state.borrow_mut().journal.push(entry);
    }

    /// Starts the process of `unit` (its unit file must exist).
    fn launch(&self, verb: &str, unit: &str) -> Result<(), ManagerError> {
        let Some(text) = self.unit_text(unit) else {
            return Err(failed(
                verb,
                unit,
                &format!("Unit {unit}.service not found."),
            ));
        };
        let loaded = self.service(unit).loaded.unwrap_or(text);
        let exe = self.exe_of(&loaded);
        let environment = self.environment_of(&loaded);
        let version = exe.as_deref().and_then(Self::version_of);
        let now = self.clock.elapsed();
        let mut st = self.state.borrow_mut();
        st.next_pid += 1;
        let pid = 1000 + st.next_pid;
        let crashes = exe.is_none()
            || st.crash_on_start.contains(unit)
            || version.as_ref().is_some_and(|v| {
                st.crashing_versions.contains(v)
                    || st.crashes.contains(&(unit.to_string(), v.clone()))
            });
        let ready_at = (!st.never_ready.contains(unit))
            .then(|| now + st.ready_after.get(unit).copied().unwrap_or_default());
        if unit == "concourse-server" && !crashes {
            if let Some(v) = &version {
                web_migrates(&mut st.db, v);
            }
        }
        let svc = st.services.entry(unit.to_string()).or_default();
        svc.loaded = Some(loaded);
        svc.active = !crashes;
        svc.pid = (!crashes).then_some(pid);
        svc.ready_at = ready_at;
        svc.version = version;
        svc.exe = if crashes { None } else { exe };
        svc.environment = (!crashes).then_some(environment);
        Ok(())
    }

    /// `systemctl stop` of an active unit: `KillSignal=`, then the escalation.
    fn stop_process(&self, unit: &str) {
        let text = self.service(unit).loaded.unwrap_or_default();
        let whom = match setting(&text, "KillMode") {
            Some("process") | Some("mixed") => "main",
            _ => "all",
        };
        let kill = setting(&text, "KillSignal").unwrap_or("SIGTERM");
        if self.deliver(unit, kill) {
            return;
        }
        self.clock.advance(secs(&text, "TimeoutStopSec", 90));
        if setting(&text, "TimeoutStopFailureMode") == Some("abort") {
            let sig = setting(&text, "WatchdogSignal").unwrap_or("SIGABRT");
            self.log(format!("escalate {whom} {sig} {unit}"));
            if self.deliver(unit, sig) {
                return;
            }
            self.clock.advance(secs(&text, "TimeoutAbortSec", 90));
        }
        self.log(format!("escalate {whom} SIGKILL {unit}"));
        self.deliver(unit, "SIGKILL");
    }
}

/// Web's start: migrations up to what `version` supports; a newer schema is kept and
/// recorded (upstream does not refuse it).
fn web_migrates(db: &mut FakeDb, version: &str) {
    let supported = db.supported_by(version);
    match db.schema {
        Some(s) if s > supported => db.newer_schema_starts.push((version.to_string(), s)),
        _ => db.schema = Some(supported),
    }
}

impl ServiceManager for Services {
    fn daemon_reload(&self) -> Result<(), ManagerError> {
        self.call("daemon-reload".into(), "")?;
        let names: Vec<String> = self.state.borrow().services.keys().cloned().collect();
        for n in names {
            let text = self.unit_text(&n);
            if let Some(s) = self.state.borrow_mut().services.get_mut(&n) {
                s.loaded = text;
            }
        }
        Ok(())
    }

    fn enable(&self, unit: &str) -> Result<(), ManagerError> {
        self.log(format!("enable {unit}"));
        let Some(text) = self.unit_text(unit) else {
            let msg = format!("Failed to enable unit: Unit file {unit}.service does not exist.");
            return Err(failed("enable", unit, &msg));
        };
        let mut st = self.state.borrow_mut();
        let svc = st.services.entry(unit.to_string()).or_default();
        svc.enabled = true;
        svc.loaded.get_or_insert(text);
        Ok(())
    }

    fn disable(&self, unit: &str) -> Result<(), ManagerError> {
        self.log(format!("disable {unit}"));
        if let Some(s) = self.state.borrow_mut().services.get_mut(unit) {
            s.enabled = false;
        }
        Ok(())
    }

    fn start(&self, unit: &str) -> Result<(), ManagerError> {
        self.call(format!("start {unit}"), unit)?;
        if self.is_active(unit) {
            return Ok(());
        }
        self.launch("start", unit)
    }

    fn stop(&self, unit: &str) -> Result<(), ManagerError> {
        self.log(format!("stop {unit}"));
        let known = self.state.borrow().services.contains_key(unit);
        if !known && self.unit_text(unit).is_none() {
            let msg = format!("Failed to stop {unit}.service: Unit {unit}.service not loaded.");
            return Err(failed("stop", unit, &msg));
        }
        if self.is_active(unit) {
            self.stop_process(unit);
        }
        Ok(())
    }

    fn restart(&self, unit: &str) -> Result<(), ManagerError> {
        self.call(format!("restart {unit}"), unit)?;
        if self.is_active(unit) {
            self.stop_process(unit);
        }
        self.launch("restart", unit)
    }

    fn reload(&self, unit: &str) -> Result<(), ManagerError> {
        self.call(format!("reload {unit}"), unit)?;
        let svc = self.service(unit);
        if !svc.active {
            let msg = format!("{unit}.service is not active, cannot reload.");
            return Err(failed("reload", unit, &msg));
        }
        if !svc.loaded.unwrap_or_default().contains("\nExecReload=") {
            let msg = format!("Job type reload is not applicable for unit {unit}.service.");
            return Err(failed("reload", unit, &msg));
        }
        // ExecReload=/bin/kill -HUP $MAINPID
        self.deliver(unit, "SIGHUP");
        Ok(())
    }

    fn kill(&self, unit: &str, whom: KillWhom, signal: &str) -> Result<(), ManagerError> {
        self.log(format!("kill {} {signal} {unit}", whom.as_str()));
        let svc = self.service(unit);
        if whom == KillWhom::Main && svc.pid.is_none() {
            let msg = format!("Failed to kill unit {unit}.service: No main process to kill");
            return Err(failed("kill", unit, &msg));
        }
        if whom == KillWhom::All && signal == "SIGKILL" {
            self.log(format!("cgroup of {unit} killed: its build containers too"));
        }
        if svc.active {
            self.deliver(unit, signal);
        }
        Ok(())
    }

    fn is_active(&self, unit: &str) -> bool {
        self.service(unit).active
    }

    fn status(&self, unit: &str) -> UnitStatus {
        let svc = self.service(unit);
        UnitStatus {
            active: svc.active,
            enabled: svc.enabled,
            needs_daemon_reload: self.needs_daemon_reload(unit),
            main_pid: svc.pid,
        }
    }

    fn main_pid(&self, unit: &str) -> Option<u32> {
        self.service(unit).pid
    }

    fn needs_daemon_reload(&self, unit: &str) -> bool {
        let svc = self.service(unit);
        svc.loaded.is_some() && svc.loaded != self.unit_text(unit)
    }
}

/// A clock whose `sleep` moves time on at once.
#[derive(Clone, Default)]
pub struct FakeClock {
    elapsed: Rc<Cell<Duration>>,
}

/// Where the fake wall clock starts (2023-11-14).
const EPOCH_OFFSET: Duration = Duration::from_secs(1_700_000_000);

impl FakeClock {
    pub fn advance(&self, d: Duration) {
        self.elapsed.set(self.elapsed.get() + d);
    }

    pub fn elapsed(&self) -> Duration {
        self.elapsed.get()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + EPOCH_OFFSET + self.elapsed.get()
    }

    fn monotonic(&self) -> Duration {
        self.elapsed.get()
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

#[derive(Debug, Default)]
pub struct ProvisionState {
    /// Users created, with their home.
    pub users: Vec<(String, PathBuf)>,
    /// Keys generated (destination, kind).
    pub keys: Vec<(PathBuf, &'static str)>,
    /// Make `generate-key` fail.
    pub fail_keygen: bool,
    /// The service users' (uid, gid) instead of the current user (tests that check
    /// ownership, as root).
    pub service_user: Option<Owner>,
    /// The directory each key was generated in: (path, owner uid, mode), seen at the time.
    pub key_dirs: Vec<(PathBuf, u32, u32)>,
}

/// Users are the current user; keys are unique test strings in the generator's format.
#[derive(Clone, Default)]
pub struct FakeProvisioner {
    pub state: Rc<RefCell<ProvisionState>>,
}

fn current_user() -> Owner {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

impl Provisioner for FakeProvisioner {
    fn ensure_user(&self, name: &str, home: &Path) -> Result<Owner, ProvisionError> {
        let mut st = self.state.borrow_mut();
        if !st.users.iter().any(|(u, _)| u == name) {
            st.users.push((name.to_string(), home.to_path_buf()));
        }
        Ok(st.service_user.unwrap_or_else(current_user))
    }

    fn charm_owner(&self) -> Owner {
        current_user()
    }

    fn generate_key(
        &self,
        concourse: &Path,
        kind: KeyKind,
        dest: &Path,
    ) -> Result<(), ProvisionError> {
        let mut st = self.state.borrow_mut();
        if st.fail_keygen || !concourse.exists() {
            return Err(ProvisionError::KeyGen {
                path: concourse.to_path_buf(),
                stderr: "generate-key failed (test)".into(),
            });
        }
        let n = st.keys.len();
        let io = |source| ProvisionError::Spawn {
            path: concourse.to_path_buf(),
            source,
        };
        std::fs::write(dest, format!("-----BEGIN TEST KEY {n}-----\n")).map_err(io)?;
        if kind == KeyKind::Ssh {
            let public = format!("ssh-ed25519 AAAAC3NzaTestKey{n} generated\n");
            std::fs::write(crate::keys::pub_path(dest), public).map_err(io)?;
        }
        st.keys.push((dest.to_path_buf(), kind.as_str()));
        if let Some(dir) = dest.parent() {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(dir).map_err(io)?;
            st.key_dirs
                .push((dir.to_path_buf(), m.uid(), m.mode() & 0o7777));
        }
        Ok(())
    }
}

/// The journal of the fake services: a process's readiness line once it is ready.
#[derive(Clone)]
pub struct FakeJournal {
    services: Services,
}

impl Journal for FakeJournal {
    fn output(&self, unit: &str, pid: u32) -> Result<Vec<String>, JournalError> {
        let svc = self.services.service(unit);
        let current = svc.pid == Some(pid);
        Ok(ready_line(unit)
            .filter(|_| current && self.services.ready(unit))
            .into_iter()
            .collect())
    }
}

/// `concourse migrate` of the fake releases over [`FakeDb`]; every call is journaled
/// (`migrate <version> <flag>`) with the service manager's.
#[derive(Clone)]
pub struct FakeMigrator {
    services: Services,
}

impl FakeMigrator {
    /// The version of a release binary `<volume>/releases/<v>/concourse/bin/concourse`.
    fn version(concourse: &Path) -> String {
        concourse
            .ancestors()
            .nth(3)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn call(&self, concourse: &Path, flag: &str) -> (String, std::cell::RefMut<'_, ServicesState>) {
        let v = Self::version(concourse);
        self.services.log(format!("migrate {v} {flag}"));
        (v, self.services.state.borrow_mut())
    }

    fn failed(flag: &str, why: &str) -> MigrateError {
        MigrateError::Failed {
            flag: flag.to_string(),
            status: "exit status: 1".into(),
            stderr: format!("error: {why}"),
        }
    }
}

impl Migrator for FakeMigrator {
    fn supported(&self, concourse: &Path) -> Result<u64, MigrateError> {
        let (v, st) = self.call(concourse, "--supported-db-version");
        if st.db.broken.contains(&v) {
            return Err(Self::failed("--supported-db-version", "broken binary"));
        }
        Ok(st.db.supported_by(&v))
    }

    fn current(&self, concourse: &Path, _db: &DbEnv) -> Result<u64, MigrateError> {
        let flag = "--current-db-version";
        let (_, st) = self.call(concourse, flag);
        match st.db.schema {
            _ if st.db.unreachable => Err(Self::failed(flag, "failed to connect to database")),
            Some(s) => Ok(s),
            None => Err(Self::failed(
                flag,
                "relation \"migrations_history\" does not exist",
            )),
        }
    }

    fn migrate_to(&self, concourse: &Path, _db: &DbEnv, version: u64) -> Result<(), MigrateError> {
        let flag = format!("--migrate-db-to-version={version}");
        let (_, mut st) = self.call(concourse, &flag);
        if st.db.unreachable || st.db.migrate_fails {
            return Err(Self::failed(&flag, "could not migrate to version"));
        }
        st.db.schema = Some(version);
        Ok(())
    }
}

/// The doubles of one test unit's host, kept for assertions.
#[derive(Clone)]
pub struct FakeHost {
    pub paths: Paths,
    pub services: Services,
    pub clock: FakeClock,
    pub provisioner: FakeProvisioner,
}

impl FakeHost {
    /// Doubles over the test root `root`.
    pub fn new(root: &Path) -> FakeHost {
        let paths = Paths::under(root);
        let clock = FakeClock::default();
        FakeHost {
            services: Services::new(&paths, &clock),
            paths,
            clock,
            provisioner: FakeProvisioner::default(),
        }
    }

    /// A `Host` sharing these doubles' state.
    pub fn host(&self) -> Host {
        Host {
            services: Box::new(self.services.clone()),
            journal: Box::new(FakeJournal {
                services: self.services.clone(),
            }),
            paths: self.paths.clone(),
            clock: Box::new(self.clock.clone()),
            provisioner: Box::new(self.provisioner.clone()),
            migrator: Box::new(FakeMigrator {
                services: self.services.clone(),
            }),
        }
    }
}
