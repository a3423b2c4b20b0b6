//! Whether a Concourse process is ready to be signalled, from the lines it logs.
//!
//! Owns: which upstream log lines mean ready, and waiting for them. Concourse has no
//! `sd_notify`; its own test waits for log lines (`cmd/concourse/concourse_test.go`), and
//! so does the charm, reading the main process's output from the journal:
//! - **web** is ready once it logged `tsa.listening` (`tsa/tsacmd/server_runner.go`):
//!   the TSA binds after the database is open and migrated, and after
//!   `TSACommand.Runner` made SIGHUP a reload (`tsa/tsacmd/command.go`). Before that,
//!   SIGHUP kills web (Go's default signal handling).
//! - **a worker** is ready while its beacon is registered
//!   (`worker.beacon-runner.beacon.registered`, or `...beacon.rebalance.registered`, from
//!   `worker/beacon.go`) and has not failed since (`...beacon.exited-with-error`,
//!   `worker.beacon-runner.failed`). Before its beacon runs, a land or retire signal is
//!   lost; while no TSA answers, a drain makes the worker exit 1 instead of landing
//!   (`worker/beacon_runner.go`).
//!
//! Invariants: only the current main process's lines count; a service that stops while
//! waited for ends the wait. Hazards: at `log-level` error or fatal Concourse does not log
//! these info lines, so readiness cannot be observed ([`observable`]) and callers go on
//! without it.

use std::time::Duration;

use crate::config::LogLevel;
use crate::host::{Host, JournalError};
use crate::storage_coordinator::Backoff;

/// How often a wait looks again: soon at first (a fresh web's TSA or a worker's beacon
/// usually answers within a fraction of a second), then every half second. Each look
/// runs `systemctl` and `journalctl`.
const POLL: Backoff = Backoff {
    first: Duration::from_millis(100),
    factor: 2,
    max: Duration::from_millis(500),
};

/// How a wait for readiness ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Ready,
    /// The service is not running (any more).
    Stopped,
    TimedOut,
}

/// Whether Concourse logs its readiness lines at this level (they are info lines).
pub fn observable(level: LogLevel) -> bool {
    matches!(level, LogLevel::Debug | LogLevel::Info)
}

/// The `message` of a lager JSON line (`{"timestamp":…,"message":"tsa.listening",…}`).
fn message(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

/// Web's TSA listens (and SIGHUP reloads it).
pub fn web_listening(lines: &[String]) -> bool {
    lines
        .iter()
        .any(|l| message(l).as_deref() == Some("tsa.listening"))
}

/// The worker's beacon is registered with a TSA now.
pub fn worker_registered(lines: &[String]) -> bool {
    let mut registered = false;
    for m in lines.iter().filter_map(|l| message(l)) {
        if m.starts_with("worker.beacon-runner.beacon") && m.ends_with(".registered") {
            registered = true;
        } else if m == "worker.beacon-runner.beacon.exited-with-error"
            || m == "worker.beacon-runner.failed"
        {
            registered = false;
        }
    }
    registered
}

/// Waits up to `timeout` (the host's clock) until `ready` holds for the lines of the
/// current main process of `service`.
pub fn wait(
    host: &Host,
    service: &str,
    ready: fn(&[String]) -> bool,
    timeout: Duration,
) -> Result<Wait, JournalError> {
    let deadline = host.clock.monotonic() + timeout;
    let mut look = 0;
    loop {
        let st = host.services.status(service);
        let Some(pid) = st.main_pid.filter(|_| st.active) else {
            return Ok(Wait::Stopped);
        };
        if ready(&host.journal.output(service, pid)?) {
            return Ok(Wait::Ready);
        }
        let now = host.clock.monotonic();
        if now >= deadline {
            return Ok(Wait::TimedOut);
        }
        host.clock
            .sleep(POLL.delay(look).min(deadline.saturating_sub(now)));
        look = look.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(messages: &[&str]) -> Vec<String> {
        let mut v = vec!["fake concourse worker 7.14.3 running".to_string()];
        v.extend(messages.iter().map(|m| {
            format!(r#"{{"timestamp":"1.0","level":"info","source":"worker","message":"{m}","data":{{}}}}"#)
        }));
        v
    }

    #[test]
    fn web_is_ready_once_its_tsa_listens() {
        assert!(!web_listening(&lines(&["atc.cmd.start", "atc.cmd.finish"])));
        assert!(web_listening(&lines(&["atc.cmd.start", "tsa.listening"])));
        assert!(!web_listening(&["tsa.listening".to_string()]));
    }

    #[test]
    fn a_worker_is_ready_while_registered() {
        let base = "worker.beacon-runner";
        assert!(!worker_registered(&lines(&["worker.garden.started"])));
        assert!(worker_registered(&lines(&[&format!(
            "{base}.beacon.registered"
        )])));
        assert!(!worker_registered(&lines(&[
            &format!("{base}.beacon.registered"),
            &format!("{base}.beacon.exited-with-error"),
            &format!("{base}.failed"),
            &format!("{base}.restarting"),
            &format!("{base}.beacon.dial.failed-to-connect-to-tsa"),
        ])));
        assert!(worker_registered(&lines(&[
            &format!("{base}.failed"),
            &format!("{base}.beacon.rebalance.registered"),
        ])));
    }

    #[test]
    fn readiness_is_seen_at_info_and_debug_only() {
        assert!(observable(LogLevel::Info) && observable(LogLevel::Debug));
        assert!(!observable(LogLevel::Error) && !observable(LogLevel::Fatal));
    }
}
