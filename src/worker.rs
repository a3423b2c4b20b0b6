//! The Concourse worker role: worker key, env file, systemd unit, landing and retiring.
//!
//! Owns: `/var/lib/concourse-worker` (keys and the local `work` dir: containerd state
//! must never sit on the shared volume), `/etc/concourse/worker.env` (0600),
//! `concourse-worker.service` and its drain drop-in ([`STOP_OVERRIDE`]).
//!
//! How a worker is drained, from concourse/concourse v7.14.3 (`worker/beacon.go`,
//! `worker/beacon_runner.go`, `worker/signals_unix.go`) and systemd's `src/core/service.c`:
//! - Every drain is a `systemctl stop`: a stopped unit is never restarted
//!   (`forbid_restart`), whatever the worker exits with. A worker whose land cannot reach
//!   a TSA exits 1, which `Restart=on-failure` would otherwise restart as a worker that
//!   never landed; a signal sent with `systemctl kill` leaves that door open.
//! - The unit escalates on the main process only: `KillSignal=SIGUSR1` (land), after
//!   drain-timeout `WatchdogSignal=SIGTERM` (`TimeoutStopFailureMode=abort`), after
//!   [`TERM_GRACE`] SIGKILL, all under `KillMode=process`, so build containers (children
//!   left in the cgroup) survive and Concourse reattaches to them; killing the whole
//!   cgroup would end every running build. The sequence is upstream's own advice
//!   (concourse/docs `docs/docs/install/running-worker.md`: `--retry USR1/300/TERM/15/KILL`).
//! - Signals go only to a registered worker: before its beacon runs a land or retire
//!   signal is lost (the stop would then wait for drain-timeout), and without a TSA it
//!   cannot land anyway. [`drain`] waits up to [`READY_WAIT`] for the registration
//!   ([`crate::readiness`]); a worker that does not register is stopped with SIGTERM
//!   (a clean stop; nothing can be landed without a TSA).
//! - Retiring, and stopping an unregistered worker, change the stop signal for that one
//!   stop with a drop-in ([`STOP_OVERRIDE`]) that [`apply`] removes before the worker
//!   starts again.
//!
//! Invariants: no path in the charm signals a worker except through its unit's stop;
//! removal retires (SIGUSR2) so Concourse forgets the worker; the service restarts only
//! when its own inputs changed, landing first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{CharmConfig, WorkerRuntime};
use crate::fsutil;
use crate::host::{Host, KeyKind};
use crate::keys::{self, KeyError};
use crate::readiness::{self, Wait};
use crate::service::{
    self, apply_service, render_env, restart_pending, Applied, ManagedFile, OnChange, ReadFile,
    ServiceError, UnitSpec,
};

pub const SERVICE: &str = "concourse-worker";
pub const HOME: &str = "/var/lib/concourse-worker";
pub const ENV_FILE: &str = "/etc/concourse/worker.env";
/// The drop-in that changes the stop signal for the drain in progress.
pub const STOP_OVERRIDE: &str =
    "/etc/systemd/system/concourse-worker.service.d/50-charm-drain.conf";
/// How long the main process has after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(15);
/// The longest a drain waits for the worker to register before it signals.
pub const READY_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot create {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

pub fn keys_dir() -> PathBuf {
    Path::new(HOME).join("keys")
}
pub fn worker_key() -> PathBuf {
    keys_dir().join("worker_key")
}
pub fn tsa_public_key() -> PathBuf {
    keys_dir().join("tsa_host_key.pub")
}
pub fn work_dir() -> PathBuf {
    Path::new(HOME).join("work")
}

/// The Concourse worker name of a unit (`concourse-ci/3` → `concourse-ci-3`).
pub fn worker_name(unit: &str) -> String {
    unit.replace('/', "-")
}

/// The worker env file's variables.
pub fn env(config: &CharmConfig, unit: &str, tsa_host: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    set("CONCOURSE_NAME", worker_name(unit));
    set("CONCOURSE_WORK_DIR", work_dir().display().to_string());
    set("CONCOURSE_TSA_HOST", tsa_host.into());
    set(
        "CONCOURSE_TSA_PUBLIC_KEY",
        tsa_public_key().display().to_string(),
    );
    set(
        "CONCOURSE_TSA_WORKER_PRIVATE_KEY",
        worker_key().display().to_string(),
    );
    set("CONCOURSE_RUNTIME", "containerd".into());
    set("CONCOURSE_LOG_LEVEL", config.log_level.as_str().into());
    if !config.tags.is_empty() {
        set("CONCOURSE_TAG", config.tags.join(","));
    }
    m.extend(runtime_env(&config.worker_runtime));
    m
}

/// The runtime settings: baggageclaim's driver, containerd's DNS and container limit.
/// A boolean is left out when false: Concourse reads an empty or present value as true.
pub fn runtime_env(r: &WorkerRuntime) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    set(
        "CONCOURSE_BAGGAGECLAIM_DRIVER",
        r.baggageclaim_driver.as_str().into(),
    );
    set(
        "CONCOURSE_CONTAINERD_MAX_CONTAINERS",
        r.max_containers.to_string(),
    );
    if !r.dns_servers.is_empty() {
        let list: Vec<String> = r.dns_servers.iter().map(ToString::to_string).collect();
        set("CONCOURSE_CONTAINERD_DNS_SERVER", list.join(","));
    }
    if r.dns_proxy {
        set("CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE", "true".into());
    }
    m
}

/// The worker systemd unit, running the release behind `current`. Its stop is the drain
/// (module docs): land, then SIGTERM after drain-timeout, SIGKILL after [`TERM_GRACE`],
/// to the main process only.
pub fn unit(config: &CharmConfig, current: &Path) -> UnitSpec {
    UnitSpec {
        name: SERVICE.into(),
        description: "Concourse CI worker".into(),
        exec_start: format!("{}/bin/concourse worker", current.display()),
        exec_reload: None,
        user: "root".into(),
        group: "root".into(),
        working_dir: PathBuf::from(HOME),
        env_files: vec![PathBuf::from(ENV_FILE)],
        kill_signal: Some("SIGUSR1".into()),
        kill_mode: Some("process".into()),
        timeout_stop: Some(config.drain_timeout),
        extra: vec![
            ("TimeoutStopFailureMode".into(), "abort".into()),
            ("WatchdogSignal".into(), "SIGTERM".into()),
            ("TimeoutAbortSec".into(), TERM_GRACE.as_secs().to_string()),
            ("SendSIGKILL".into(), "yes".into()),
            ("Delegate".into(), "yes".into()),
            ("TasksMax".into(), "infinity".into()),
            ("LimitNOFILE".into(), "infinity".into()),
            ("LimitNPROC".into(), "infinity".into()),
            ("Restart".into(), "on-failure".into()),
            ("RestartSec".into(), "5".into()),
        ],
    }
}

/// Creates the worker key if missing, with the release's `concourse` at `concourse` (a
/// local path); returns its public half.
pub fn ensure_key(host: &Host, concourse: &Path) -> Result<String, WorkerError> {
    keys::ensure_key(host, concourse, KeyKind::Ssh, &worker_key(), None)?;
    Ok(keys::public_key_of(host, &worker_key())?)
}

/// How long a drain may wait for the worker to register, and whether it can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyWait {
    /// Concourse logs its readiness at the configured level ([`readiness::observable`]).
    pub observable: bool,
    pub timeout: Duration,
}

impl ReadyWait {
    /// From the charm's configuration: at most [`READY_WAIT`], and never longer than the
    /// drain itself may take.
    pub fn from_config(config: &CharmConfig) -> ReadyWait {
        ReadyWait {
            observable: readiness::observable(config.log_level),
            timeout: READY_WAIT.min(config.drain_timeout),
        }
    }
}

/// Writes the TSA public key, env file and unit; starts or restarts as needed. A running
/// worker that must restart is drained (landed) first.
pub fn apply(
    host: &Host,
    env_vars: &BTreeMap<String, String>,
    tsa_key: &str,
    spec: &UnitSpec,
    ready: ReadyWait,
) -> Result<Applied, WorkerError> {
    let work = host.paths.local(work_dir());
    std::fs::create_dir_all(&work).map_err(|source| WorkerError::Write { path: work, source })?;
    let root = host.provisioner.charm_owner();
    let files = [
        ManagedFile {
            path: tsa_public_key(),
            content: format!("{}\n", tsa_key.trim()).into_bytes(),
            mode: 0o644,
            owner: root,
            on_change: OnChange::Restart,
        },
        ManagedFile {
            path: PathBuf::from(ENV_FILE),
            content: render_env(env_vars).into_bytes(),
            mode: 0o600,
            owner: root,
            on_change: OnChange::Restart,
        },
    ];
    let key = [ReadFile {
        path: worker_key(),
        on_change: OnChange::Restart,
    }];
    if host.services.is_active(SERVICE) && restart_pending(host, spec, &files, &key) {
        // A worker whose TSA moved (web left) cannot register again before it restarts:
        // land it if it is registered now, without waiting.
        let moved = tsa_moved(host, &files[0].content, env_vars);
        let ready = ReadyWait {
            timeout: if moved { Duration::ZERO } else { ready.timeout },
            ..ready
        };
        drain(host, Drain::Land, ready)?;
    }
    set_stop_override(host, None)?;
    Ok(apply_service(host, spec, &files, &key, &|| true)?)
}

/// Whether the worker's TSA (its host or key) is not the one it runs with.
fn tsa_moved(host: &Host, tsa_key_file: &[u8], env_vars: &BTreeMap<String, String>) -> bool {
    let env = std::fs::read_to_string(host.paths.local(ENV_FILE)).unwrap_or_default();
    let tsa_host = env_vars
        .get("CONCOURSE_TSA_HOST")
        .map(String::as_str)
        .unwrap_or_default();
    differs(host, &tsa_public_key(), tsa_key_file)
        || !env
            .lines()
            .any(|l| l == format!("CONCOURSE_TSA_HOST={tsa_host}"))
}

/// Whether the machine file `path` does not hold `content`.
fn differs(host: &Host, path: &Path, content: &[u8]) -> bool {
    std::fs::read(host.paths.local(path)).map_or(true, |old| old != content)
}

/// What a drain asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// SIGUSR1: finish its builds, then exit; it comes back with the same name.
    Land,
    /// SIGUSR2: finish its builds, then Concourse forgets it.
    Retire,
}

impl Drain {
    fn signal(self) -> &'static str {
        match self {
            Drain::Land => "SIGUSR1",
            Drain::Retire => "SIGUSR2",
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// No worker was running.
    NotRunning,
    /// The registered worker was landed or retired (escalated if it took longer than
    /// drain-timeout); `waited` is how long the stop took.
    Drained { waited: Duration },
    /// The worker did not register within the wait: stopped with SIGTERM, nothing landed.
    NotRegistered,
}

/// Drains the worker through its unit's stop (module docs): waits for it to register,
/// then lands or retires it; systemd escalates after drain-timeout and never restarts it.
/// Blocks until the worker stopped.
pub fn drain(host: &Host, how: Drain, ready: ReadyWait) -> Result<Drained, WorkerError> {
    let sys = &host.services;
    if !service::is_installed(host, SERVICE) {
        return Ok(Drained::NotRunning);
    }
    if !sys.is_active(SERVICE) {
        // Also cancels a restart systemd may have scheduled.
        sys.stop(SERVICE).map_err(ServiceError::from)?;
        return Ok(Drained::NotRunning);
    }
    let registered = !ready.observable
        || match readiness::wait(host, SERVICE, readiness::worker_registered, ready.timeout) {
            Ok(Wait::Ready) => true,
            Ok(Wait::Stopped) => {
                sys.stop(SERVICE).map_err(ServiceError::from)?;
                return Ok(Drained::NotRunning);
            }
            Ok(Wait::TimedOut) => false,
            Err(e) => {
                warn!(
                    "cannot tell whether the worker registered ({}); draining it anyway",
                    crate::error_chain(&e)
                );
                true
            }
        };
    let signal = if registered { how.signal() } else { "SIGTERM" };
    if !registered {
        warn!(
            "the worker did not register with a TSA within {}s: nothing can be landed; stopping it with SIGTERM",
            ready.timeout.as_secs()
        );
    }
    set_stop_override(host, (signal != Drain::Land.signal()).then_some(signal))?;
    let t0 = host.clock.monotonic();
    info!("draining the worker: systemctl stop ({signal})");
    sys.stop(SERVICE).map_err(ServiceError::from)?;
    let waited = host.clock.monotonic().saturating_sub(t0);
    Ok(if registered {
        Drained::Drained { waited }
    } else {
        Drained::NotRegistered
    })
}

/// Writes the drain drop-in with `signal` as the stop signal, or removes it (`None`), and
/// reloads systemd when it changed.
fn set_stop_override(host: &Host, signal: Option<&str>) -> Result<(), WorkerError> {
    let path = host.paths.local(STOP_OVERRIDE);
    let changed = match signal {
        Some(sig) => {
            let text = format!(
                "# Written by the concourse-ci charm for the drain in progress; removed before the worker starts again.\n[Service]\nKillSignal={sig}\n"
            );
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| WorkerError::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let root = host.provisioner.charm_owner();
            fsutil::write_if_changed(&path, text.as_bytes(), 0o644, Some(root)).map_err(
                |source| WorkerError::Write {
                    path: path.clone(),
                    source,
                },
            )?
        }
        None if path.exists() => {
            std::fs::remove_file(&path).map_err(|source| WorkerError::Write {
                path: path.clone(),
                source,
            })?;
            true
        }
        None => false,
    };
    if changed {
        host.services.daemon_reload().map_err(ServiceError::from)?;
    }
    Ok(())
}

/// Starts the worker again after a drain (without the drain's stop signal).
pub fn start(host: &Host) -> Result<(), WorkerError> {
    set_stop_override(host, None)?;
    host.services.start(SERVICE).map_err(ServiceError::from)?;
    Ok(())
}

impl Default for ReadyWait {
    /// When the configuration cannot be read: observable, [`READY_WAIT`].
    fn default() -> Self {
        ReadyWait {
            observable: true,
            timeout: READY_WAIT,
        }
    }
}

/// Retires the worker and removes its service (unit removal, role change).
pub fn remove(host: &Host, ready: ReadyWait) -> Result<Drained, WorkerError> {
    let drained = drain(host, Drain::Retire, ready)?;
    if let Some(dir) = host.paths.local(STOP_OVERRIDE).parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    service::uninstall(host, SERVICE)?;
    Ok(drained)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CharmConfig {
        let mut m = serde_json::Map::new();
        m.insert("tag".into(), "gpu,big".into());
        m.insert("drain-timeout".into(), "30m".into());
        CharmConfig::from_map(&m).unwrap()
    }

    #[test]
    fn env_names_the_worker_and_tsa() {
        let e = env(&config(), "concourse-ci/3", "10.0.0.5:2222");
        assert_eq!(e["CONCOURSE_NAME"], "concourse-ci-3");
        assert_eq!(e["CONCOURSE_TSA_HOST"], "10.0.0.5:2222");
        assert_eq!(e["CONCOURSE_TAG"], "gpu,big");
        assert_eq!(e["CONCOURSE_WORK_DIR"], "/var/lib/concourse-worker/work");
        assert_eq!(e["CONCOURSE_RUNTIME"], "containerd");
    }

    #[test]
    fn unit_lands_on_stop_and_escalates_on_the_main_process_only() {
        let t = unit(&config(), Path::new("/var/lib/concourse-ci/current")).render();
        for line in [
            "KillSignal=SIGUSR1",
            "KillMode=process",
            "TimeoutStopSec=1800",
            "TimeoutStopFailureMode=abort",
            "WatchdogSignal=SIGTERM",
            "TimeoutAbortSec=15",
            "SendSIGKILL=yes",
            "Restart=on-failure",
            "User=root",
        ] {
            assert!(t.contains(line), "{line} missing in\n{t}");
        }
    }

    #[test]
    fn the_wait_for_registration_is_bounded_by_the_drain() {
        let mut c = config();
        assert_eq!(ReadyWait::from_config(&c).timeout, READY_WAIT);
        c.drain_timeout = Duration::from_secs(20);
        assert_eq!(ReadyWait::from_config(&c).timeout, Duration::from_secs(20));
        assert!(ReadyWait::from_config(&c).observable);
    }
}
