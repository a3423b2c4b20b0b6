//! What a service's processes wrote: the journal.
//!
//! Owns: the [`Journal`] interface the charm reads a service's output through, and its
//! production implementation [`Journalctl`]. Journald records a service's stdout and
//! stderr with the `_PID=` of its main process (systemd's `src/core/execute.c` sets up the
//! stream in the forked child before exec), so one process's lines are
//! `journalctl _SYSTEMD_UNIT=<unit>.service _PID=<pid> --output=cat`. Invariants: only
//! the asked process's lines, oldest first; no lines is not an error. Hazards: journald
//! may drop lines under rate limiting; a reused pid could show an older process's lines
//! (callers ask for the current main pid only).

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot run journalctl")]
    Spawn(#[source] std::io::Error),
    #[error("journalctl {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
}

/// Reads what services wrote.
pub trait Journal {
    /// The lines main process `pid` of service `unit` (without `.service`) wrote.
    fn output(&self, unit: &str, pid: u32) -> Result<Vec<String>, JournalError>;
}

/// The real journal: the `journalctl` command.
#[derive(Debug, Default, Clone, Copy)]
pub struct Journalctl;

impl Journal for Journalctl {
    fn output(&self, unit: &str, pid: u32) -> Result<Vec<String>, JournalError> {
        let args = [
            format!("_SYSTEMD_UNIT={unit}.service"),
            format!("_PID={pid}"),
            "--output=cat".to_string(),
            "--no-pager".to_string(),
            "--quiet".to_string(),
        ];
        let out = Command::new("journalctl")
            .args(&args)
            .output()
            .map_err(JournalError::Spawn)?;
        if !out.status.success() {
            return Err(JournalError::Failed {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}
