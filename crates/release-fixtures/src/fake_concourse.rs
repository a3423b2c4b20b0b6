//! The fake `concourse` binary placed at `concourse/bin/concourse` in generated release
//! tarballs, and the parser of the log it writes.
//!
//! Owns: the bash script `fake_concourse.sh` (embedded with `include_str!`), its rendering
//! for a version/variant, and [`read_log`], which turns its JSON-lines log into [`Record`]s.
//!
//! Imitates the `concourse` binary of concourse/concourse: the subcommands of
//! `cmd/concourse/main.go` (`web.go`, `worker.go`, `land_worker.go`, `retire_worker.go`,
//! `generate_key.go`, `migrate.go`), with their signals and exit codes.
//!
//! Behaviour of the script (see the script header for control files):
//! - `--version`/`-v` prints the version (or [`WRONG_VERSION`] for the wrong-version variant);
//! - `generate-key -t rsa|ssh -f PATH [-b BITS]` writes a PEM private key (ssh-keygen, else
//!   openssl, else an obviously fake PEM; default 2048 bits, not upstream's 4096, for speed)
//!   and, for `ssh`, `PATH.pub` in authorized_keys form;
//! - `web` and `worker` log a `start` record, write `<run>/<subcommand>.pid`, then run until
//!   signalled: the worker lands on SIGUSR1 and retires on SIGUSR2 (exit 0), logs
//!   "killed without landing" on SIGTERM (exit 143); web logs "stopped" and exits 0 on SIGTERM
//!   and logs "reloaded" on SIGHUP. `worker` refuses to run unless root, like upstream.
//! - `land-worker`/`retire-worker` signal the worker found in `<run>/worker.pid`;
//!   `migrate` logs and exits 0.
//!
//! Invariants: every invocation except usage errors appends at least one record; a record is
//! one line, appended under `flock(1)` when available, so concurrent processes never
//! interleave. Hazards: the log lives in the unit's own `/var/log` (the simulator gives each
//! unit a private view); a service running as a non-root user can only append if the log
//! already exists world-writable (the script creates it 0666) and otherwise writes to the
//! fallback `/tmp/fake-concourse.log` — read both ([`DEFAULT_LOG_PATHS`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The script template; `@VERSION@`, `@REPORTED_VERSION@` and `@BROKEN@` are substituted.
pub const SCRIPT_TEMPLATE: &str = include_str!("fake_concourse.sh");

/// What the wrong-version variant prints for `--version` (what upstream dev builds print).
pub const WRONG_VERSION: &str = "0.0.0-dev";

/// Where records go by default: the primary log, then the fallback for non-root writers.
pub const DEFAULT_LOG_PATHS: [&str; 2] = ["/var/log/fake-concourse.log", "/tmp/fake-concourse.log"];

/// Default directory of pid files and control files (`FAKE_CONCOURSE_RUN`).
pub const DEFAULT_RUN_DIR: &str = "/run/fake-concourse";

/// How the rendered script behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Works as described in the module docs.
    Normal,
    /// `web`, `worker` and `--version` print an error and exit 1.
    Broken,
    /// `--version` prints [`WRONG_VERSION`]; everything else works.
    WrongVersion,
    /// `--version` works; `web` and `worker` print an error and exit 1 (fails to start).
    CrashOnStart,
}

/// Renders the fake binary for `version`.
pub fn render_script(version: &str, behaviour: Behaviour) -> String {
    let reported = match behaviour {
        Behaviour::WrongVersion => WRONG_VERSION,
        _ => version,
    };
    let broken = match behaviour {
        Behaviour::Broken => "1",
        Behaviour::CrashOnStart => "2",
        _ => "0",
    };
    // The version is placed inside single quotes: drop quotes so it cannot break the script.
    let clean = |s: &str| s.replace(['\'', '\n', '\\'], "");
    SCRIPT_TEMPLATE
        .replace("@VERSION@", &clean(version))
        .replace("@REPORTED_VERSION@", &clean(reported))
        .replace("@BROKEN@", broken)
}

/// One event logged by the fake binary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    /// Seconds since the epoch (bash `EPOCHREALTIME`).
    #[serde(default)]
    pub ts: f64,
    /// `start`, `start-failed`, `landing`, `landed`, `retiring`, `retired`,
    /// `killed without landing`, `stopped`, `reloaded`, `ignored signal`,
    /// `ignoring SIGTERM`, `version`, `generate-key`, `generate-key-failed`, `land-worker`,
    /// `retire-worker`, `migrate`, `unknown-command`.
    pub event: String,
    /// First argument (`web`, `worker`, `--version`, ...).
    #[serde(default)]
    pub subcommand: String,
    /// Arguments after argv\[0\].
    #[serde(default)]
    pub argv: Vec<String>,
    /// `CONCOURSE_*` variables plus lowercase `http_proxy`, `https_proxy`, `no_proxy`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// argv\[0\] made absolute (the path it was started by, e.g. through a symlink).
    #[serde(default)]
    pub exe: String,
    /// `readlink -f` of argv\[0\]: the real file, e.g. `.../releases/7.14.3/concourse/bin/concourse`.
    #[serde(default)]
    pub exe_resolved: String,
    /// The version this fake binary belongs to (not what `--version` prints).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub ppid: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub cwd: String,
    /// `PATH` of the process.
    #[serde(default)]
    pub path_env: String,
    /// Free text: the signal, the key file, the failure reason.
    #[serde(default)]
    pub detail: Option<String>,
    /// For `land-worker`/`retire-worker`: the worker pid that was signalled.
    #[serde(default)]
    pub signalled_pid: Option<u32>,
}

/// Reads a log written by the fake binary. A missing file gives no records; lines that are
/// not valid records (a torn write, garbage) are skipped, never a panic.
pub fn read_log(path: &Path) -> std::io::Result<Vec<Record>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_log(&bytes))
}

/// Parses log content; see [`read_log`].
pub fn parse_log(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let text = String::from_utf8_lossy(line);
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            serde_json::from_str::<Record>(text).ok()
        })
        .collect()
}

/// Reads the primary and fallback logs under `root` (a unit's filesystem root as seen from
/// the host, or `/` inside the unit) and returns all records sorted by time.
pub fn read_logs_under(root: &Path) -> std::io::Result<Vec<Record>> {
    let mut all = Vec::new();
    for p in DEFAULT_LOG_PATHS {
        all.extend(read_log(&root.join(p.trim_start_matches('/')))?);
    }
    all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_substitutes_markers() {
        let s = render_script("7.14.3", Behaviour::WrongVersion);
        assert!(s.contains("FAKE_VERSION='7.14.3'"));
        assert!(s.contains("REPORTED_VERSION='0.0.0-dev'"));
        assert!(s.contains("BROKEN='0'"));
        assert!(!s.contains("@VERSION@") && !s.contains("@REPORTED_VERSION@"));
        assert!(!s.contains("@BROKEN@"));
        let b = render_script("1'2", Behaviour::Broken);
        assert!(b.contains("FAKE_VERSION='12'"));
        assert!(b.contains("BROKEN='1'"));
    }

    #[test]
    fn parse_skips_garbage() {
        let log = b"{\"event\":\"start\",\"pid\":5}\nnot json\n\xff\xfe\n{\"event\":\"x\"";
        let recs = parse_log(log);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].event, "start");
        assert_eq!(recs[0].pid, 5);
    }
}
