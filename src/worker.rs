//! The Concourse worker role: worker key, env file, systemd unit, landing and retiring.
//!
//! Owns: `/var/lib/concourse-worker` (keys and the local `work` dir: containerd state
//! must never sit on the shared volume), `/etc/concourse/worker.env` (0600) and
//! `concourse-worker.service`. Invariants: a plain `systemctl stop` lands the worker
//! (`KillSignal=SIGUSR1`, `TimeoutStopSec` = drain-timeout, `KillMode=process`), so no
//! path in the charm kills a worker without landing or retiring it first; removal retires
//! (SIGUSR2) so Concourse forgets the worker. The service restarts only when its own
//! inputs changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::CharmConfig;
use crate::fsutil;
use crate::service::{render_env, ServiceError, Systemctl, UnitSpec};

pub const SERVICE: &str = "concourse-worker";
pub const HOME: &str = "/var/lib/concourse-worker";
pub const ENV_FILE: &str = "/etc/concourse/worker.env";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("worker did not {what} within {secs}s; it was stopped with SIGKILL")]
    DrainTimeout { what: &'static str, secs: u64 },
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
    set("CONCOURSE_BAGGAGECLAIM_DRIVER", "naive".into());
    set("CONCOURSE_LOG_LEVEL", config.log_level.as_str().into());
    if !config.tags.is_empty() {
        set("CONCOURSE_TAG", config.tags.join(","));
    }
    m
}

/// The worker systemd unit, running the release behind `current`.
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
            ("Delegate".into(), "yes".into()),
            ("TasksMax".into(), "infinity".into()),
            ("LimitNOFILE".into(), "infinity".into()),
            ("LimitNPROC".into(), "infinity".into()),
            ("Restart".into(), "on-failure".into()),
            ("RestartSec".into(), "5".into()),
        ],
    }
}

/// What applying the worker role did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub started: bool,
    pub restarted: bool,
}

/// Writes the TSA public key, env file and unit; starts or restarts as needed.
/// A restart of a running worker lands it first (the unit's stop signal is SIGUSR1).
pub fn apply(
    env_vars: &BTreeMap<String, String>,
    tsa_key: &str,
    spec: &UnitSpec,
    release_changed: bool,
) -> Result<Applied, WorkerError> {
    let write = |path: PathBuf, content: &[u8], mode: u32| {
        fsutil::write_if_changed(&path, content, mode, Some((0, 0)))
            .map_err(|source| WorkerError::Write { path, source })
    };
    std::fs::create_dir_all(work_dir()).map_err(|source| WorkerError::Write {
        path: work_dir(),
        source,
    })?;
    let key_changed = write(
        tsa_public_key(),
        format!("{}\n", tsa_key.trim()).as_bytes(),
        0o644,
    )?;
    let env_changed = write(
        PathBuf::from(ENV_FILE),
        render_env(env_vars).as_bytes(),
        0o600,
    )?;
    let unit_change = spec.install()?;
    let unit_changed = unit_change.needs_restart();
    let sys = Systemctl;
    if unit_change.written() {
        sys.daemon_reload()?;
        sys.enable(SERVICE)?;
    }
    let mut applied = Applied::default();
    if !sys.is_active(SERVICE) {
        sys.start(SERVICE)?;
        applied.started = true;
    } else if key_changed || env_changed || unit_changed || release_changed {
        sys.restart(SERVICE)?;
        applied.restarted = true;
    }
    Ok(applied)
}

/// Signals the worker's main process (`SIGUSR1` land, `SIGUSR2` retire) and waits for
/// it to exit, up to `timeout`; then escalates with `systemctl stop` (SIGKILL after
/// TimeoutStopSec) and reports the timeout. Returns Ok when it was not running.
pub fn drain(signal: &str, what: &'static str, timeout: Duration) -> Result<(), WorkerError> {
    let sys = Systemctl;
    if !sys.is_active(SERVICE) {
        return Ok(());
    }
    sys.kill_main(SERVICE, signal)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !sys.is_active(SERVICE) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sys.kill_all(SERVICE, "SIGKILL")?;
    Err(WorkerError::DrainTimeout {
        what,
        secs: timeout.as_secs(),
    })
}

/// Retires the worker and removes its service (unit removal).
pub fn remove(timeout: Duration) -> Result<(), WorkerError> {
    let drained = drain("SIGUSR2", "retire", timeout);
    let sys = Systemctl;
    let path = Path::new(crate::service::UNIT_DIR).join(format!("{SERVICE}.service"));
    if path.exists() {
        let _ = sys.disable(SERVICE);
        let _ = std::fs::remove_file(&path);
        sys.daemon_reload()?;
    }
    drained
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
    fn unit_lands_on_stop() {
        let t = unit(&config(), Path::new("/var/lib/concourse-ci/current")).render();
        assert!(t.contains("KillSignal=SIGUSR1"));
        assert!(t.contains("KillMode=process"));
        assert!(t.contains("TimeoutStopSec=1800"));
        assert!(t.contains("User=root"));
    }
}
