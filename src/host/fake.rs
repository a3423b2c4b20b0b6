//! Test doubles of the host (tests only): a recording service manager that behaves like
//! systemd towards the charm, a clock that sleeps by moving time on, and a provisioner
//! that makes test keys and uses the current user.
//!
//! Owns: [`Services`], [`FakeClock`], [`FakeProvisioner`] and [`FakeHost`], which builds a
//! [`Host`] over a temporary root from them. Invariants, as systemd has them
//! (`src/systemctl/systemctl-start-unit.c`, `systemctl-kill.c` in systemd): a service
//! starts only when its unit file exists; a changed unit file keeps the loaded definition
//! until `daemon-reload` (`NeedDaemonReload`); `reload` needs an active service whose unit
//! has `ExecReload=`; `kill --kill-whom=main` needs a main process; `start` of an active
//! service does nothing. A worker's main process exits on SIGUSR1 (land) and SIGUSR2
//! (retire) unless the test says it ignores them; SIGHUP (web's reload) keeps it running.
//! A started process records the binary it runs, resolved through the unit's pointer at
//! start (what `/proc/<pid>/exe` says), and a test can make any call fail
//! (`ServicesState::failing`) the way a failed systemd job does.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    Clock, Host, KeyKind, KillWhom, ManagerError, Owner, Paths, ProvisionError, Provisioner,
    ServiceManager, UnitStatus,
};
use crate::service::UNIT_DIR;

/// One service as the fake systemd knows it.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub active: bool,
    pub pid: Option<u32>,
    pub enabled: bool,
    /// The unit file text systemd loaded (at the last daemon-reload or first start).
    pub loaded: Option<String>,
    /// The binary the running process executes, resolved through the unit's pointer at
    /// its start (as the kernel resolves `ExecStart=`; `/proc/<pid>/exe`).
    pub exe: Option<PathBuf>,
    /// What the process read from its `EnvironmentFile=`s when it started.
    pub environment: Option<String>,
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
    /// Services whose main process ignores SIGUSR1/SIGUSR2 (it never lands).
    pub ignore_drain: BTreeSet<String>,
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
    pub state: Rc<RefCell<ServicesState>>,
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
    pub fn new(paths: &Paths) -> Services {
        Services {
            paths: paths.clone(),
            unit_dir: paths.local(UNIT_DIR),
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

    /// Whether the binary `exe` is missing or in a release that crashes.
    fn crashes(&self, exe: Option<&Path>) -> bool {
        let Some(real) = exe else {
            return true;
        };
        let real = real.display().to_string();
        let st = self.state.borrow();
        st.crashing_versions
            .iter()
            .any(|v| real.contains(&format!("/releases/{v}/")))
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

    fn unit_text(&self, unit: &str) -> Option<String> {
        std::fs::read_to_string(self.unit_dir.join(format!("{unit}.service"))).ok()
    }

    /// The journal entries from index `mark` on.
    pub fn journal_since(&self, mark: usize) -> Vec<String> {
        self.state.borrow().journal[mark..].to_vec()
    }

    pub fn journal_len(&self) -> usize {
        self.state.borrow().journal.len()
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
        let release_crashes = self.crashes(exe.as_deref());
        let mut st = self.state.borrow_mut();
        st.next_pid += 1;
        let pid = 1000 + st.next_pid;
        let crashes = release_crashes || st.crash_on_start.contains(unit);
        let svc = st.services.entry(unit.to_string()).or_default();
        svc.loaded = Some(loaded);
        svc.active = !crashes;
        svc.pid = (!crashes).then_some(pid);
        svc.exe = if crashes { None } else { exe };
        svc.environment = (!crashes).then_some(environment);
        Ok(())
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
        if let Some(s) = self.state.borrow_mut().services.get_mut(unit) {
            s.active = false;
            s.pid = None;
            s.exe = None;
            s.environment = None;
        }
        Ok(())
    }

    fn restart(&self, unit: &str) -> Result<(), ManagerError> {
        self.call(format!("restart {unit}"), unit)?;
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
        Ok(())
    }

    fn kill(&self, unit: &str, whom: KillWhom, signal: &str) -> Result<(), ManagerError> {
        self.log(format!("kill {} {signal} {unit}", whom.as_str()));
        let svc = self.service(unit);
        if whom == KillWhom::Main && svc.pid.is_none() {
            let msg = format!("Failed to kill unit {unit}.service: No main process to kill");
            return Err(failed("kill", unit, &msg));
        }
        let ignores = self.state.borrow().ignore_drain.contains(unit);
        let exits = match signal {
            "SIGKILL" | "SIGTERM" => true,
            "SIGUSR1" | "SIGUSR2" => !ignores,
            _ => false,
        };
        if exits {
            if let Some(s) = self.state.borrow_mut().services.get_mut(unit) {
                s.active = false;
                s.pid = None;
                s.exe = None;
                s.environment = None;
            }
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
        FakeHost {
            services: Services::new(&paths),
            paths,
            clock: FakeClock::default(),
            provisioner: FakeProvisioner::default(),
        }
    }

    /// A `Host` sharing these doubles' state.
    pub fn host(&self) -> Host {
        Host {
            services: Box::new(self.services.clone()),
            paths: self.paths.clone(),
            clock: Box::new(self.clock.clone()),
            provisioner: Box::new(self.provisioner.clone()),
        }
    }
}
