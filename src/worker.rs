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
use std::time::Duration;

use crate::config::{CharmConfig, WorkerRuntime};
use crate::host::{Host, KeyKind, KillWhom};
use crate::keys::{self, KeyError};
use crate::service::{
    self, apply_service, render_env, Applied, ManagedFile, OnChange, ReadFile, ServiceError,
    UnitSpec,
};

pub const SERVICE: &str = "concourse-worker";
pub const HOME: &str = "/var/lib/concourse-worker";
pub const ENV_FILE: &str = "/etc/concourse/worker.env";

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

/// Creates the worker key if missing, with the release's `concourse` at `concourse` (a
/// local path); returns its public half.
pub fn ensure_key(host: &Host, concourse: &Path) -> Result<String, WorkerError> {
    keys::ensure_key(host, concourse, KeyKind::Ssh, &worker_key(), None)?;
    Ok(keys::public_key_of(host, &worker_key())?)
}

/// Writes the TSA public key, env file and unit; starts or restarts as needed.
/// A restart of a running worker lands it first (the unit's stop signal is SIGUSR1).
pub fn apply(
    host: &Host,
    env_vars: &BTreeMap<String, String>,
    tsa_key: &str,
    spec: &UnitSpec,
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
    Ok(apply_service(host, spec, &files, &key)?)
}

/// Signals the worker's main process (`SIGUSR1` land, `SIGUSR2` retire) and waits for
/// it to exit, up to `timeout`; then kills the whole unit (SIGKILL) and reports the
/// timeout. Returns Ok when it was not running.
pub fn drain(
    host: &Host,
    signal: &str,
    what: &'static str,
    timeout: Duration,
) -> Result<(), WorkerError> {
    let sys = &host.services;
    if !sys.is_active(SERVICE) {
        return Ok(());
    }
    sys.kill(SERVICE, KillWhom::Main, signal)
        .map_err(ServiceError::from)?;
    let deadline = host.clock.monotonic() + timeout;
    while host.clock.monotonic() < deadline {
        if !sys.is_active(SERVICE) {
            return Ok(());
        }
        host.clock.sleep(Duration::from_millis(200));
    }
    sys.kill(SERVICE, KillWhom::All, "SIGKILL")
        .map_err(ServiceError::from)?;
    Err(WorkerError::DrainTimeout {
        what,
        secs: timeout.as_secs(),
    })
}

/// Retires the worker and removes its service (unit removal, role change).
pub fn remove(host: &Host, timeout: Duration) -> Result<(), WorkerError> {
    let drained = drain(host, "SIGUSR2", "retire", timeout);
    service::uninstall(host, SERVICE)?;
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
