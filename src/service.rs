//! systemd units for Concourse: rendering unit and env files and applying them.
//!
//! Owns: the text of `concourse-server.service` and `concourse-worker.service`, and
//! [`apply_service`], the one way a role's files reach the machine and its service is
//! (re)started. Invariants: unit and env files are written only when their content changes
//! (`fsutil::write_if_changed`), `daemon-reload` runs only after a unit file changed, and
//! a service is restarted only when one of its own inputs changed (the caller passes
//! whether the release changed; a unit-file change of stop-time settings alone is not
//! one); a file that only needs a reload (`ExecReload=`) never restarts the service.
//! Hazards: `stop` of a worker lands it (`KillSignal=SIGUSR1`) and can take up to
//! `drain-timeout`; retiring uses SIGUSR2 explicitly.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil::{self, Owner};
use crate::host::{Host, ManagerError};

/// Where unit files live.
pub const UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a unit file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// Unit name without `.service`.
    pub name: String,
    pub description: String,
    pub exec_start: String,
    pub exec_reload: Option<String>,
    pub user: String,
    pub group: String,
    pub working_dir: PathBuf,
    pub env_files: Vec<PathBuf>,
    pub kill_signal: Option<String>,
    pub kill_mode: Option<String>,
    pub timeout_stop: Option<Duration>,
    /// Further `[Service]` lines, in order (e.g. `Delegate=yes`).
    pub extra: Vec<(String, String)>,
}

impl UnitSpec {
    pub fn file_name(&self) -> String {
        format!("{}.service", self.name)
    }

    pub fn path(&self) -> PathBuf {
        Path::new(UNIT_DIR).join(self.file_name())
    }

    /// The unit file text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Managed by the concourse-ci charm; local changes are overwritten."
        );
        let _ = writeln!(s, "[Unit]");
        let _ = writeln!(s, "Description={}", self.description);
        let _ = writeln!(s, "After=network-online.target");
        let _ = writeln!(s, "Wants=network-online.target");
        let _ = writeln!(s);
        let _ = writeln!(s, "[Service]");
        let _ = writeln!(s, "Type=simple");
        let _ = writeln!(s, "User={}", self.user);
        let _ = writeln!(s, "Group={}", self.group);
        let _ = writeln!(s, "WorkingDirectory={}", self.working_dir.display());
        for f in &self.env_files {
            let _ = writeln!(s, "EnvironmentFile={}", f.display());
        }
        let _ = writeln!(s, "ExecStart={}", self.exec_start);
        if let Some(r) = &self.exec_reload {
            let _ = writeln!(s, "ExecReload={r}");
        }
        if let Some(k) = &self.kill_signal {
            let _ = writeln!(s, "KillSignal={k}");
        }
        if let Some(k) = &self.kill_mode {
            let _ = writeln!(s, "KillMode={k}");
        }
        if let Some(t) = self.timeout_stop {
            let _ = writeln!(s, "TimeoutStopSec={}", t.as_secs().max(1));
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}={v}");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "[Install]");
        let _ = writeln!(s, "WantedBy=multi-user.target");
        s
    }

    /// Whether installing this unit would change more than its stop settings (so a running
    /// service would restart for it).
    pub fn would_restart(&self, host: &Host) -> bool {
        match std::fs::read_to_string(host.paths.local(self.path())) {
            Ok(old) => without_stop_settings(&old) != without_stop_settings(&self.render()),
            Err(_) => true,
        }
    }

    /// Writes the unit file if it changed; says whether the running service must restart
    /// for it (see [`UnitChange`]).
    pub fn install(&self, host: &Host) -> Result<UnitChange, ServiceError> {
        let path = host.paths.local(self.path());
        let new = self.render();
        let old = std::fs::read_to_string(&path).ok();
        let written =
            fsutil::write_if_changed(&path, new.as_bytes(), 0o644, None).map_err(|source| {
                ServiceError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
        Ok(match old {
            _ if !written => UnitChange::Unchanged,
            Some(old) if without_stop_settings(&old) == without_stop_settings(&new) => {
                UnitChange::StopSettingsOnly
            }
            _ => UnitChange::Changed,
        })
    }
}

/// How a unit file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitChange {
    Unchanged,
    /// Only settings systemd reads when it stops the service ([`STOP_SETTINGS`]): a
    /// daemon-reload applies them, a restart is not needed (restarting a worker for a new
    /// drain-timeout would land it for nothing).
    StopSettingsOnly,
    /// The service must restart to apply it.
    Changed,
}

impl UnitChange {
    /// The file changed: daemon-reload.
    pub fn written(self) -> bool {
        self != UnitChange::Unchanged
    }
    /// The running service must restart.
    pub fn needs_restart(self) -> bool {
        self == UnitChange::Changed
    }
}

/// The settings systemd reads only when it stops a service (`src/core/service.c`,
/// `service_enter_signal` and `service_dispatch_timer`).
pub const STOP_SETTINGS: [&str; 8] = [
    "TimeoutStopSec=",
    "KillSignal=",
    "KillMode=",
    "TimeoutStopFailureMode=",
    "WatchdogSignal=",
    "TimeoutAbortSec=",
    "SendSIGKILL=",
    "FinalKillSignal=",
];

/// The unit text without the lines only used when stopping.
fn without_stop_settings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !STOP_SETTINGS.iter().any(|k| l.trim_start().starts_with(k)))
        .collect()
}

/// Renders an EnvironmentFile: sorted `KEY=value` lines, values double-quoted with
/// `\` and `"` escaped when they contain anything but safe characters.
pub fn render_env(vars: &std::collections::BTreeMap<String, String>) -> String {
    let mut s =
        String::from("# Managed by the concourse-ci charm; local changes are overwritten.\n");
    for (k, v) in vars {
        let safe = v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@+=%".contains(c));
        if safe {
            let _ = writeln!(s, "{k}={v}");
        } else {
            let escaped: String = v
                .chars()
                .flat_map(|c| match c {
                    '\\' => vec!['\\', '\\'],
                    '"' => vec!['\\', '"'],
                    '\n' => vec!['\\', 'n'],
                    c => vec![c],
                })
                .collect();
            let _ = writeln!(s, "{k}=\"{escaped}\"");
        }
    }
    s
}

/// When a changed file takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// The service restarts.
    Restart,
    /// The service reloads (`ExecReload=`), keeping its process.
    Reload,
}

/// A file a service reads, written by [`apply_service`].
#[derive(Debug, Clone)]
pub struct ManagedFile {
    /// The machine path (as the service sees it).
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    pub owner: Owner,
    pub on_change: OnChange,
}

/// What [`apply_service`] did to the service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub started: bool,
    pub restarted: bool,
    pub reloaded: bool,
}

/// Writes a service's files and unit, then starts, restarts or reloads it as needed.
/// `release_changed` is true when the unit's pointer moved to another release.
pub fn apply_service(
    host: &Host,
    spec: &UnitSpec,
    files: &[ManagedFile],
    release_changed: bool,
) -> Result<Applied, ServiceError> {
    let (mut restart, mut reload) = (release_changed, false);
    for f in files {
        let path = host.paths.local(&f.path);
        let changed = fsutil::write_if_changed(&path, &f.content, f.mode, Some(f.owner))
            .map_err(|source| ServiceError::Write { path, source })?;
        match f.on_change {
            OnChange::Restart => restart |= changed,
            OnChange::Reload => reload |= changed,
        }
    }
    let unit_change = spec.install(host)?;
    restart |= unit_change.needs_restart();
    let sys = &host.services;
    if unit_change.written() {
        sys.daemon_reload()?;
        sys.enable(&spec.name)?;
    }
    let mut applied = Applied::default();
    if !sys.is_active(&spec.name) {
        sys.start(&spec.name)?;
        applied.started = true;
    } else if restart {
        sys.restart(&spec.name)?;
        applied.restarted = true;
    } else if reload {
        sys.reload(&spec.name)?;
        applied.reloaded = true;
    }
    Ok(applied)
}

/// Disables a service and removes its unit file (the service is already stopped).
pub fn uninstall(host: &Host, name: &str) -> Result<(), ServiceError> {
    let path = host
        .paths
        .local(Path::new(UNIT_DIR).join(format!("{name}.service")));
    if path.exists() {
        let _ = host.services.disable(name);
        let _ = std::fs::remove_file(&path);
        host.services.daemon_reload()?;
    }
    Ok(())
}

/// Whether a service's unit file is installed.
pub fn is_installed(host: &Host, name: &str) -> bool {
    host.paths
        .local(Path::new(UNIT_DIR).join(format!("{name}.service")))
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn env_quoting() {
        let mut m = BTreeMap::new();
        m.insert("B".to_string(), "plain-value_1.2,3:4/5".to_string());
        m.insert("A".to_string(), "has space \"q\" \\ $x".to_string());
        let s = render_env(&m);
        let lines: Vec<_> = s.lines().skip(1).collect();
        assert_eq!(
            lines,
            vec![r#"A="has space \"q\" \\ $x""#, "B=plain-value_1.2,3:4/5"]
        );
    }

    #[test]
    fn stop_settings_alone_need_no_restart() {
        let base = "[Service]\nExecStart=/x worker\nKillSignal=SIGUSR1\nTimeoutStopSec=3600\n";
        let slower = base.replace("TimeoutStopSec=3600", "TimeoutStopSec=1800");
        assert_eq!(without_stop_settings(base), without_stop_settings(&slower));
        let other = base.replace("/x worker", "/y worker");
        assert_ne!(without_stop_settings(base), without_stop_settings(&other));
        assert!(UnitChange::StopSettingsOnly.written());
        assert!(!UnitChange::StopSettingsOnly.needs_restart());
        assert!(UnitChange::Changed.needs_restart());
        assert!(!UnitChange::Unchanged.written());
    }

    #[test]
    fn unit_render_has_every_setting() {
        let spec = UnitSpec {
            name: "concourse-worker".into(),
            description: "Concourse CI worker".into(),
            exec_start: "/var/lib/concourse-ci/current/bin/concourse worker".into(),
            exec_reload: None,
            user: "root".into(),
            group: "root".into(),
            working_dir: "/var/lib/concourse-worker".into(),
            env_files: vec!["/etc/concourse/worker.env".into()],
            kill_signal: Some("SIGUSR1".into()),
            kill_mode: Some("process".into()),
            timeout_stop: Some(Duration::from_secs(3600)),
            extra: vec![("Delegate".into(), "yes".into())],
        };
        let t = spec.render();
        for needle in [
            "ExecStart=/var/lib/concourse-ci/current/bin/concourse worker",
            "EnvironmentFile=/etc/concourse/worker.env",
            "KillSignal=SIGUSR1",
            "KillMode=process",
            "TimeoutStopSec=3600",
            "Delegate=yes",
            "WantedBy=multi-user.target",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
        assert_eq!(
            spec.path(),
            PathBuf::from("/etc/systemd/system/concourse-worker.service")
        );
    }
}
