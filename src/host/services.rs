//! The service manager: starting, stopping and signalling the Concourse services.
//!
//! Owns: the [`ServiceManager`] interface the charm drives services through, and its
//! production implementation [`Systemctl`] (every `systemctl` call of the charm).
//! Invariants: a missing unit is simply inactive; failures keep the argv and systemctl's
//! stderr and point at the journal. Hazards: `stop` of a worker lands it
//! (`KillSignal=SIGUSR1`) and can take up to `drain-timeout`; signals sent with
//! [`KillWhom::Main`] reach only the main process, [`KillWhom::All`] the whole cgroup
//! (build containers included).

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("cannot run systemctl {args}")]
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
}

/// Which processes of a service a signal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillWhom {
    Main,
    All,
}

impl KillWhom {
    pub fn as_str(self) -> &'static str {
        match self {
            KillWhom::Main => "main",
            KillWhom::All => "all",
        }
    }
}

/// What systemd says of a unit, read in one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitStatus {
    /// `ActiveState` is `active` (or `reloading`), as `systemctl is-active` counts it.
    pub active: bool,
    /// `UnitFileState` is `enabled`.
    pub enabled: bool,
    /// `NeedDaemonReload`: the unit file changed since systemd loaded it.
    pub needs_daemon_reload: bool,
    /// `MainPID`, while there is one.
    pub main_pid: Option<u32>,
}

/// What the charm asks of systemd. `unit` is a service name without `.service`.
pub trait ServiceManager {
    /// Re-reads unit files after one changed.
    fn daemon_reload(&self) -> Result<(), ManagerError>;
    fn enable(&self, unit: &str) -> Result<(), ManagerError>;
    fn disable(&self, unit: &str) -> Result<(), ManagerError>;
    fn start(&self, unit: &str) -> Result<(), ManagerError>;
    fn stop(&self, unit: &str) -> Result<(), ManagerError>;
    fn restart(&self, unit: &str) -> Result<(), ManagerError>;
    /// Runs the unit's `ExecReload=`.
    fn reload(&self, unit: &str) -> Result<(), ManagerError>;
    /// Sends `signal` (`SIGUSR1`, …) to the main process or the whole unit.
    fn kill(&self, unit: &str, whom: KillWhom, signal: &str) -> Result<(), ManagerError>;
    /// Whether the unit is active (a missing unit is simply inactive).
    fn is_active(&self, unit: &str) -> bool;
    /// Active, enabled, loaded state and main PID in one call (a missing unit: none).
    fn status(&self, unit: &str) -> UnitStatus;
    /// The unit's main PID, if it runs.
    fn main_pid(&self, unit: &str) -> Option<u32>;
    /// Whether systemd reports the loaded unit older than its file (`NeedDaemonReload`).
    fn needs_daemon_reload(&self, unit: &str) -> bool;
}

/// The real service manager: the `systemctl` command.
#[derive(Debug, Default, Clone, Copy)]
pub struct Systemctl;

impl Systemctl {
    fn run(&self, args: &[&str]) -> Result<String, ManagerError> {
        let joined = args.join(" ");
        let out = Command::new("systemctl")
            .args(args)
            .output()
            .map_err(|source| ManagerError::Spawn {
                args: joined.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ManagerError::Failed {
                unit: args.last().copied().unwrap_or("").to_string(),
                args: joined,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn show(&self, unit: &str, property: &str) -> Option<String> {
        let out = self.run(&["show", "-p", property, "--value", unit]).ok()?;
        Some(out.trim().to_string())
    }
}

impl ServiceManager for Systemctl {
    fn daemon_reload(&self) -> Result<(), ManagerError> {
        self.run(&["daemon-reload"]).map(drop)
    }

    fn enable(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["enable", unit]).map(drop)
    }

    fn disable(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["disable", unit]).map(drop)
    }

    fn start(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["start", unit]).map(drop)
    }

    fn stop(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["stop", unit]).map(drop)
    }

    fn restart(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["restart", unit]).map(drop)
    }

    fn reload(&self, unit: &str) -> Result<(), ManagerError> {
        self.run(&["reload", unit]).map(drop)
    }

    fn kill(&self, unit: &str, whom: KillWhom, signal: &str) -> Result<(), ManagerError> {
        let whom = format!("--kill-whom={}", whom.as_str());
        self.run(&["kill", &whom, "-s", signal, unit]).map(drop)
    }

    fn is_active(&self, unit: &str) -> bool {
        Command::new("systemctl")
            .args(["is-active", "--quiet", unit])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn status(&self, unit: &str) -> UnitStatus {
        let props = "ActiveState,UnitFileState,NeedDaemonReload,MainPID";
        let Ok(out) = self.run(&["show", "-p", props, unit]) else {
            return UnitStatus::default();
        };
        let value = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or_default()
        };
        UnitStatus {
            active: matches!(value("ActiveState"), "active" | "reloading"),
            enabled: value("UnitFileState") == "enabled",
            needs_daemon_reload: value("NeedDaemonReload") == "yes",
            main_pid: value("MainPID").parse().ok().filter(|p| *p > 0),
        }
    }

    fn main_pid(&self, unit: &str) -> Option<u32> {
        self.show(unit, "MainPID")?.parse().ok().filter(|p| *p > 0)
    }

    fn needs_daemon_reload(&self, unit: &str) -> bool {
        self.show(unit, "NeedDaemonReload").as_deref() == Some("yes")
    }
}
