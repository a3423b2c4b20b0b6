//! systemd units for Concourse: rendering unit files and driving `systemctl`.
//!
//! Owns: the text of `concourse-server.service` and `concourse-worker.service`, and every
//! `systemctl` call. Invariants: unit and env files are written only when their content
//! changes (`fsutil::write_if_changed`), `daemon-reload` runs only after a unit file
//! changed, and a service is restarted only when one of its own inputs changed (the
//! caller passes that fact in; a unit-file change of stop-time settings alone is not one). Hazards: `stop` of a worker lands it (`KillSignal=SIGUSR1`)
//! and can take up to `drain-timeout`; retiring uses SIGUSR2 explicitly.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::fsutil;

/// Where unit files live.
pub const UNIT_DIR: &str = "/etc/systemd/system";

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot run systemctl {args}: {source}")]
    Spawn {
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "systemctl {args} failed ({status}): {stderr}; see `journalctl -u {unit}` on the unit"
    )]
    Failed {
        args: String,
        unit: String,
        status: String,
        stderr: String,
    },
    #[error("cannot write {path}: {source}")]
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

    /// Writes the unit file if it changed; says whether the running service must restart
    /// for it (see [`UnitChange`]).
    pub fn install(&self) -> Result<UnitChange, ServiceError> {
        let path = self.path();
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
    /// Only settings systemd reads when it stops the service (`TimeoutStopSec=`,
    /// `KillSignal=`, `KillMode=`): a daemon-reload applies them, a restart is not needed
    /// (restarting a worker for a new drain-timeout would land it for nothing).
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

/// The unit text without the lines only used when stopping.
fn without_stop_settings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            !["TimeoutStopSec=", "KillSignal=", "KillMode="]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
        })
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

/// Thin client over the `systemctl` command.
#[derive(Debug, Default, Clone, Copy)]
pub struct Systemctl;

impl Systemctl {
    fn run(&self, args: &[&str]) -> Result<String, ServiceError> {
        let joined = args.join(" ");
        let out = Command::new("systemctl")
            .args(args)
            .output()
            .map_err(|source| ServiceError::Spawn {
                args: joined.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ServiceError::Failed {
                unit: args.last().copied().unwrap_or("").to_string(),
                args: joined,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    pub fn daemon_reload(&self) -> Result<(), ServiceError> {
        self.run(&["daemon-reload"]).map(drop)
    }

    pub fn enable(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["enable", unit]).map(drop)
    }

    pub fn disable(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["disable", unit]).map(drop)
    }

    pub fn start(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["start", unit]).map(drop)
    }

    pub fn stop(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["stop", unit]).map(drop)
    }

    pub fn restart(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["restart", unit]).map(drop)
    }

    pub fn reload(&self, unit: &str) -> Result<(), ServiceError> {
        self.run(&["reload", unit]).map(drop)
    }

    /// Sends a signal to the main process only.
    pub fn kill_main(&self, unit: &str, signal: &str) -> Result<(), ServiceError> {
        self.run(&["kill", "--kill-whom=main", "-s", signal, unit])
            .map(drop)
    }

    /// Sends a signal to every process of the unit.
    pub fn kill_all(&self, unit: &str, signal: &str) -> Result<(), ServiceError> {
        self.run(&["kill", "--kill-whom=all", "-s", signal, unit])
            .map(drop)
    }

    /// Whether the unit is active (a missing unit is simply inactive).
    pub fn is_active(&self, unit: &str) -> bool {
        Command::new("systemctl")
            .args(["is-active", "--quiet", unit])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The unit's main PID, if it runs.
    pub fn main_pid(&self, unit: &str) -> Option<u32> {
        let out = self.run(&["show", "-p", "MainPID", "--value", unit]).ok()?;
        out.trim().parse().ok().filter(|p| *p > 0)
    }
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
