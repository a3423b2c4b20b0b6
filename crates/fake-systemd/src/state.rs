//! Paths, the persistent manager state under `/run/fake-systemd/` (one JSON file, changed
//! only under an exclusive `flock`), and the journal.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::SystemctlError;

/// Where everything lives. [`Paths::system`] gives the real absolute paths used inside a
/// unit's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paths {
    pub unit_dir: PathBuf,
    pub state_dir: PathBuf,
    pub journal: PathBuf,
    pub log_dir: PathBuf,
    pub passwd: PathBuf,
    pub group: PathBuf,
    /// Where units' credentials directories are made (`/run/credentials`).
    pub credentials: PathBuf,
}

impl Paths {
    pub fn system() -> Self {
        Paths {
            unit_dir: "/etc/systemd/system".into(),
            state_dir: "/run/fake-systemd".into(),
            journal: "/var/log/fake-systemctl.journal".into(),
            log_dir: "/var/log".into(),
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            credentials: "/run/credentials".into(),
        }
    }

    /// The same layout under `root` (for tests that do not use a mount namespace).
    pub fn under(root: &Path) -> Self {
        let s = Self::system();
        let j = |p: PathBuf| root.join(p.strip_prefix("/").unwrap_or(&p));
        Paths {
            unit_dir: j(s.unit_dir),
            state_dir: j(s.state_dir),
            journal: j(s.journal),
            log_dir: j(s.log_dir),
            passwd: j(s.passwd),
            group: j(s.group),
            credentials: j(s.credentials),
        }
    }

    pub fn unit_file(&self, unit: &str) -> PathBuf {
        self.unit_dir.join(unit)
    }

    /// Where a service's stdout/stderr are appended: `/var/log/<unit>.log`.
    pub fn unit_log(&self, unit: &str) -> PathBuf {
        self.log_dir.join(format!("{unit}.log"))
    }

    fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }
}

/// Per-unit runtime state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnitState {
    /// Unit text (main file + drop-ins) as loaded by the last daemon-reload or first use.
    pub loaded_text: Option<String>,
    /// inactive | active | failed | activating | deactivating
    pub active: String,
    /// dead | running | failed | auto-restart | start | stop-sigterm | stop-sigkill
    pub sub: String,
    pub main_pid: u32,
    /// `/proc/<pid>/stat` start time of main_pid (guards against pid reuse).
    pub main_start_time: u64,
    pub supervisor_pid: u32,
    pub supervisor_start_time: u64,
    /// Increments on each start; a supervisor only writes for its own invocation.
    pub invocation: u64,
    pub exec_main_pid: u32,
    pub exec_main_status: i32,
    /// "" | exited | killed
    pub exec_main_code: String,
    /// success | exit-code | signal | timeout | resources
    pub result: String,
    pub n_restarts: u32,
    pub stop_requested: bool,
    pub stop_timed_out: bool,
    pub active_enter_ts: f64,
    pub inactive_enter_ts: f64,
    /// Where each recent main process's output starts in the unit log, oldest first.
    pub outputs: Vec<OutputSpan>,
}

/// A main process and the offset of its first output byte in `/var/log/<unit>.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpan {
    pub pid: u32,
    pub offset: u64,
}

/// How many main processes' output spans a unit keeps.
const OUTPUT_SPANS: usize = 32;

impl Default for UnitState {
    fn default() -> Self {
        UnitState {
            loaded_text: None,
            active: "inactive".into(),
            sub: "dead".into(),
            main_pid: 0,
            main_start_time: 0,
            supervisor_pid: 0,
            supervisor_start_time: 0,
            invocation: 0,
            exec_main_pid: 0,
            exec_main_status: 0,
            exec_main_code: String::new(),
            result: "success".into(),
            n_restarts: 0,
            stop_requested: false,
            stop_timed_out: false,
            active_enter_ts: 0.0,
            inactive_enter_ts: 0.0,
            outputs: Vec::new(),
        }
    }
}

impl UnitState {
    /// Records that main process `pid` writes its output from `offset` on.
    pub fn record_output(&mut self, pid: u32, offset: u64) {
        self.outputs.push(OutputSpan { pid, offset });
        if self.outputs.len() > OUTPUT_SPANS {
            self.outputs.remove(0);
        }
    }

    pub fn set(&mut self, active: &str, sub: &str) {
        if self.active != "active" && active == "active" {
            self.active_enter_ts = now();
        }
        if self.active != "inactive"
            && self.active != "failed"
            && (active == "inactive" || active == "failed")
        {
            self.inactive_enter_ts = now();
        }
        self.active = active.to_string();
        self.sub = sub.to_string();
    }
}

/// The whole manager state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Number of daemon-reloads so far (explicit or implied by enable/disable).
    pub generation: u64,
    pub units: BTreeMap<String, UnitState>,
}

/// The state, held under the exclusive lock until dropped.
pub struct Locked {
    _lock: File,
    pub state: State,
    path: PathBuf,
}

impl Locked {
    /// Writes the state atomically (temp file + rename).
    pub fn save(&self) -> Result<(), SystemctlError> {
        let err = |source| SystemctlError::State {
            path: self.path.clone(),
            source,
        };
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| err(io::Error::other(e)))?;
        fs::write(&tmp, json).map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)?;
        Ok(())
    }

    pub fn unit(&mut self, name: &str) -> &mut UnitState {
        self.state.units.entry(name.to_string()).or_default()
    }
}

/// Takes the manager lock (blocking) and reads the state. A corrupt state file is treated
/// as empty (and reported in the journal by the caller's effects), never a panic.
pub fn lock(paths: &Paths) -> Result<Locked, SystemctlError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SystemctlError::State { path, source }
    };
    fs::create_dir_all(&paths.state_dir).map_err(err(&paths.state_dir))?;
    let lock_path = paths.state_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(err(&lock_path))?;
    file.lock().map_err(err(&lock_path))?;
    let path = paths.state_file();
    let state = match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(err(&path)(e)),
    };
    Ok(Locked {
        _lock: file,
        state,
        path,
    })
}

/// Reads the state without locking (a consistent snapshot thanks to rename).
pub fn peek(paths: &Paths) -> State {
    fs::read(paths.state_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One journal line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalEntry {
    /// Seconds since the epoch.
    pub ts: f64,
    /// Pid of the systemctl (or supervisor) process that wrote the entry.
    pub caller_pid: u32,
    /// argv (without argv\[0\]) of the call that caused the event.
    pub argv: Vec<String>,
    /// Unit name, empty for manager-wide events.
    pub unit: String,
    /// call, load, warning, daemon-reload, enable, disable, start, exec-start-pre, started,
    /// start-failed, exited, restart-scheduled, stop, signal, exec-stop, timeout, escalate,
    /// stopped, reload, kill, reset-failed, error.
    pub action: String,
    /// Process concerned (main pid, killed pid, ...).
    pub pid: Option<u32>,
    /// Signal name, e.g. SIGTERM.
    pub signal: Option<String>,
    /// Exit status or signal number, for exited/start-failed.
    pub status: Option<i32>,
    pub detail: Option<String>,
}

impl JournalEntry {
    pub fn new(argv: &[String], unit: &str, action: &str) -> Self {
        JournalEntry {
            ts: now(),
            caller_pid: std::process::id(),
            argv: argv.to_vec(),
            unit: unit.to_string(),
            action: action.to_string(),
            ..Default::default()
        }
    }
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }
    pub fn signal(mut self, sig: &str) -> Self {
        self.signal = Some(sig.to_string());
        self
    }
    pub fn status(mut self, s: i32) -> Self {
        self.status = Some(s);
        self
    }
    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

/// Appends one entry (one `write` of one line, O_APPEND). Errors are ignored: the journal
/// is an observation aid and must never change the outcome of a call.
pub fn journal(paths: &Paths, entry: JournalEntry) {
    let Ok(mut line) = serde_json::to_string(&entry) else {
        return;
    };
    line.push('\n');
    if let Some(dir) = paths.journal.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.journal)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Reads a journal; a missing file gives nothing, unparsable lines are skipped.
pub fn read_journal(path: &Path) -> io::Result<Vec<JournalEntry>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}
