//! systemd units for Concourse: rendering unit and env files and applying them.
//!
//! Owns: the text of `concourse-server.service` and `concourse-worker.service`, and
//! [`apply_service`], the one way a role's files reach the machine and its service is
//! (re)started, with the record of what each service was started with
//! (`/var/lib/concourse-ci/started/<service>.json`, [`StartedWith`]).
//! Invariants: level-triggered: every hook compares what a service was started with
//! (release binary, unit text, env file, keys) with what should run, so a hook that
//! failed half-way is finished by its retry; the record is written only after the
//! (re)start succeeded and emptied before it starts; unit and env files are written only
//! when their content changes (`fsutil::write_if_changed`); systemd re-reads units when a
//! file changed or it reports `NeedDaemonReload`; a change of stop-time settings alone
//! (`TimeoutStopSec=`, `KillSignal=`, `KillMode=`) is a daemon-reload, never a restart; an
//! input that only needs a reload (`ExecReload=`) never restarts the service.
//! Hazards: `stop` and `restart` of a worker land it (`KillSignal=SIGUSR1`) and can take up
//! to `drain-timeout`; retiring uses SIGUSR2 explicitly. A unit set up by a charm revision
//! that recorded nothing has its running services adopted as they are.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

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

/// A file a service reads that [`apply_service`] does not write (a key generated once).
#[derive(Debug, Clone)]
pub struct ReadFile {
    /// The machine path.
    pub path: PathBuf,
    pub on_change: OnChange,
}

/// What [`apply_service`] did to the service.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub started: bool,
    pub restarted: bool,
    pub reloaded: bool,
}

/// Writes a service's files and unit, then brings the service to what should run:
/// starts it when it is not active, restarts it when it was started with another
/// release, unit or restart input than these, reloads it when only a reload input
/// differs, and otherwise leaves it alone (see [`StartedWith`]). Systemd re-reads the
/// unit when the file changed or it reports `NeedDaemonReload`. A reload waits for
/// `ready_to_reload` (web dies on an early SIGHUP): when it says no, nothing is recorded
/// and a later hook reloads.
pub fn apply_service(
    host: &Host,
    spec: &UnitSpec,
    files: &[ManagedFile],
    reads: &[ReadFile],
    ready_to_reload: &dyn Fn() -> bool,
) -> Result<Applied, ServiceError> {
    for f in files {
        let path = host.paths.local(&f.path);
        fsutil::write_if_changed(&path, &f.content, f.mode, Some(f.owner))
            .map_err(|source| ServiceError::Write { path, source })?;
    }
    let unit_change = spec.install(host)?;
    let sys = &host.services;
    let status = sys.status(&spec.name);
    if unit_change.written() || status.needs_daemon_reload {
        sys.daemon_reload()?;
    }
    if unit_change.written() || !status.enabled {
        sys.enable(&spec.name)?;
    }
    let wanted = StartedWith::of(host, spec, files, reads);
    let record = started_record_path(&spec.name);
    let recorded = Recorded::read(host, &record);
    let mut applied = Applied::default();
    match decide(status.active, &recorded, &wanted) {
        Decision::Keep => {}
        Decision::Adopt => info!(
            "{}: adopting the running service (no record of what an older charm started it with)",
            spec.name
        ),
        Decision::Start => {
            info!("starting {}", spec.name);
            forget(host, &record)?;
            sys.start(&spec.name)?;
            applied.started = true;
        }
        Decision::Restart(why) => {
            info!("restarting {}: {why}", spec.name);
            forget(host, &record)?;
            sys.restart(&spec.name)?;
            applied.restarted = true;
        }
        Decision::Reload if !ready_to_reload() => return Ok(applied),
        Decision::Reload => {
            info!(
                "reloading {}: what it re-reads on SIGHUP changed",
                spec.name
            );
            sys.reload(&spec.name)?;
            applied.reloaded = true;
        }
    }
    // A (re)start emptied the record: write it again even when it was right before.
    if applied.started || applied.restarted || recorded.as_ref() != Some(&wanted) {
        remember(host, &record, &wanted)?;
    }
    Ok(applied)
}

/// Whether a running service would be restarted by [`apply_service`] with these inputs
/// (no side effects), so a caller can prepare it (a worker lands first).
pub fn restart_pending(
    host: &Host,
    spec: &UnitSpec,
    files: &[ManagedFile],
    reads: &[ReadFile],
) -> bool {
    let wanted = StartedWith::of(host, spec, files, reads);
    let recorded = Recorded::read(host, &started_record_path(&spec.name));
    matches!(decide(true, &recorded, &wanted), Decision::Restart(_))
}

/// Where the records of what each service was started with live (the unit's own disk).
pub const STARTED_DIR: &str = "/var/lib/concourse-ci/started";

/// The record of what `service` was started with (a machine path).
pub fn started_record_path(service: &str) -> PathBuf {
    Path::new(STARTED_DIR).join(format!("{service}.json"))
}

/// The binary a service was started with, per its record (`None`: not recorded).
pub fn started_binary(host: &Host, service: &str) -> Option<PathBuf> {
    match Recorded::read(host, &started_record_path(service)) {
        Recorded::Known(s) => Some(PathBuf::from(s.binary)),
        _ => None,
    }
}

/// What a service was started with, as digests: written after a successful (re)start or
/// reload, compared with what should run in every hook. Digests only: the env file holds
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct StartedWith {
    /// The binary `ExecStart=` runs, resolved through the unit's pointer (the release).
    pub binary: String,
    /// sha256 of the unit text without the settings only read when stopping.
    pub unit: String,
    /// sha256 of each input whose change needs a restart (env file, keys), by path.
    pub restart: BTreeMap<String, String>,
    /// sha256 of each input the service reloads (the TSA's authorized keys), by path.
    pub reload: BTreeMap<String, String>,
}

impl StartedWith {
    /// What should run now: the files as written, the keys as on disk, the pointer as
    /// it resolves.
    fn of(host: &Host, spec: &UnitSpec, files: &[ManagedFile], reads: &[ReadFile]) -> StartedWith {
        let bin = spec
            .exec_start
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let binary = std::fs::canonicalize(host.paths.local(bin))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut s = StartedWith {
            binary,
            unit: digest(&[without_stop_settings(&spec.render()).join("\n").as_bytes()]),
            ..StartedWith::default()
        };
        let mut add = |path: &Path, on_change: OnChange, d: String| {
            let key = path.display().to_string();
            match on_change {
                OnChange::Restart => s.restart.insert(key, d),
                OnChange::Reload => s.reload.insert(key, d),
            };
        };
        for f in files {
            let meta = format!("{:o}:{}:{}", f.mode, f.owner.0, f.owner.1);
            add(&f.path, f.on_change, digest(&[meta.as_bytes(), &f.content]));
        }
        for r in reads {
            let content = std::fs::read(host.paths.local(&r.path)).unwrap_or_default();
            add(&r.path, r.on_change, digest(&[&content]));
        }
        s
    }

    /// What differs from `wanted` that needs a restart, for the log.
    fn restart_reasons(&self, wanted: &StartedWith) -> Vec<String> {
        let mut why = Vec::new();
        if self.binary != wanted.binary {
            why.push(format!("it runs {}", wanted.binary));
        }
        if self.unit != wanted.unit {
            why.push("its unit file changed".to_string());
        }
        let keys = wanted.restart.keys().chain(self.restart.keys());
        let mut changed: Vec<&String> = keys
            .filter(|k| self.restart.get(*k) != wanted.restart.get(*k))
            .collect();
        changed.dedup();
        if !changed.is_empty() {
            let names: Vec<&str> = changed.iter().map(|k| k.as_str()).collect();
            why.push(format!("{} changed", names.join(", ")));
        }
        why
    }
}

fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the unit's disk says a service was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recorded {
    /// No record: the service was set up by a charm revision that did not record.
    Legacy,
    /// An empty (or unreadable) record: a (re)start was under way and did not finish.
    Missing,
    Known(StartedWith),
}

impl Recorded {
    fn read(host: &Host, record: &Path) -> Recorded {
        match std::fs::read(host.paths.local(record)) {
            Ok(b) => serde_json::from_slice(&b).map_or(Recorded::Missing, Recorded::Known),
            Err(_) => Recorded::Legacy,
        }
    }

    fn as_ref(&self) -> Option<&StartedWith> {
        match self {
            Recorded::Known(s) => Some(s),
            _ => None,
        }
    }
}

/// What to do with a service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Keep,
    /// Record what should run as what runs, touching nothing (see [`Recorded::Legacy`]).
    Adopt,
    Start,
    /// Restart, saying why.
    Restart(String),
    Reload,
}

/// Pure: compares what runs with what should run.
fn decide(active: bool, recorded: &Recorded, wanted: &StartedWith) -> Decision {
    let was = match recorded {
        _ if !active => return Decision::Start,
        Recorded::Legacy => return Decision::Adopt,
        Recorded::Missing => {
            return Decision::Restart("no record of what it was started with".into())
        }
        Recorded::Known(was) => was,
    };
    let why = was.restart_reasons(wanted);
    if !why.is_empty() {
        Decision::Restart(why.join("; "))
    } else if was.reload != wanted.reload {
        Decision::Reload
    } else {
        Decision::Keep
    }
}

/// Empties the record before a (re)start: a start that is interrupted leaves it empty,
/// so the next hook restarts.
fn forget(host: &Host, record: &Path) -> Result<(), ServiceError> {
    write_record(host, record, b"")
}

/// Records what a service was started with.
fn remember(host: &Host, record: &Path, with: &StartedWith) -> Result<(), ServiceError> {
    let json = serde_json::to_vec_pretty(with).unwrap_or_default();
    write_record(host, record, &json)
}

/// Writes a record (temp + fsync + rename; 0600 root).
fn write_record(host: &Host, record: &Path, content: &[u8]) -> Result<(), ServiceError> {
    let path = host.paths.local(record);
    fsutil::write_if_changed(&path, content, 0o600, None)
        .map(drop)
        .map_err(|source| ServiceError::Write { path, source })
}

/// Removes a service's record (its unit is uninstalled).
fn remove_record(host: &Host, service: &str) -> Result<(), ServiceError> {
    let path = host.paths.local(started_record_path(service));
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ServiceError::Write { path, source: e })
        }
        _ => Ok(()),
    }
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
    remove_record(host, name)
}

/// Whether a service's unit file is installed.
pub fn is_installed(host: &Host, name: &str) -> bool {
    host.paths
        .local(Path::new(UNIT_DIR).join(format!("{name}.service")))
        .exists()
}

/// Whether what `service` was started with (its record) still matches the disk: the
/// binary behind the pointer, the unit file, every file it restarts or reloads on. `None`
/// says what differs. For a settled unit's `update-status` (`charm::settled`), which
/// does not render what should run; a full reconcile does.
pub fn started_inputs_differ(host: &Host, service: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let Recorded::Known(s) = Recorded::read(host, &started_record_path(service)) else {
        return Some(format!(
            "{service} has no record of what it was started with"
        ));
    };
    let unit_file = Path::new(UNIT_DIR).join(format!("{service}.service"));
    let text = std::fs::read_to_string(host.paths.local(&unit_file)).unwrap_or_default();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    let bin = std::fs::canonicalize(host.paths.local(exec)).map(|p| p.display().to_string());
    if bin.ok() != Some(s.binary.clone()) {
        return Some(format!("{service} was started from another binary"));
    }
    if digest(&[without_stop_settings(&text).join("\n").as_bytes()]) != s.unit {
        return Some(format!("{} changed", unit_file.display()));
    }
    for (path, want) in s.restart.iter().chain(&s.reload) {
        let local = host.paths.local(path);
        let content = std::fs::read(&local).unwrap_or_default();
        let meta = std::fs::metadata(&local)
            .map(|m| format!("{:o}:{}:{}", m.mode() & 0o7777, m.uid(), m.gid()))
            .unwrap_or_default();
        // a file the charm writes (its mode and owner count) or one it only reads
        if digest(&[meta.as_bytes(), &content]) != *want && digest(&[&content]) != *want {
            return Some(format!("{path} changed"));
        }
    }
    None
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
