//! Processes: `/proc` inspection, user lookup in the unit's own `/etc/passwd`, spawning a
//! command with a unit's credentials, and the supervisor that stands in for PID 1 (it is
//! the parent of a service's main process, records its exit status and applies
//! `Restart=`), as systemd's `src/core/service.c` (main PID, exit status, restart) and
//! `src/core/execute.c` (credentials, environment, session) do.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::state::{self, JournalEntry, Paths};
use crate::unit::{ExitSet, RestartPolicy};
use crate::SystemctlError;

/// Fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    pub start_time: u64,
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Alive (not a zombie) and, when `start_time` is non-zero, the same process as recorded.
pub fn alive(pid: u32, start_time: u64) -> bool {
    match proc_stat(pid) {
        Some(s) => {
            s.state != 'Z' && s.state != 'X' && (start_time == 0 || s.start_time == start_time)
        }
        None => false,
    }
}

pub fn start_time(pid: u32) -> u64 {
    proc_stat(pid).map_or(0, |s| s.start_time)
}

/// The processes of a service's "control group": its process group (the main process is a
/// session leader, so pgid = main pid) plus every descendant of the main process.
/// `start_time` (0: unchecked) is the main process's: pids are reused (`pid_max` may be
/// 32768, and every unit and test shares this pid namespace), so a recorded pid names the
/// main process only while its start time matches; otherwise only the process group counts
/// (the kernel keeps a pgid from reuse while any member lives).
pub fn group_members(main_pid: u32, start_time: u64) -> Vec<u32> {
    if main_pid == 0 {
        return Vec::new();
    }
    let mut stats: HashMap<u32, ProcStat> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(s) = proc_stat(pid) {
                    stats.insert(pid, s);
                }
            }
        }
    }
    let mut members: Vec<u32> = stats
        .iter()
        .filter(|(_, s)| s.pgrp == main_pid && s.state != 'Z')
        .map(|(p, _)| *p)
        .collect();
    let main_alive = alive(main_pid, start_time);
    let mut frontier = if main_alive {
        vec![main_pid]
    } else {
        Vec::new()
    };
    while let Some(parent) = frontier.pop() {
        for (pid, s) in &stats {
            if s.ppid == parent && !members.contains(pid) && *pid != parent {
                if s.state != 'Z' {
                    members.push(*pid);
                }
                frontier.push(*pid);
            }
        }
    }
    if main_alive && !members.contains(&main_pid) {
        members.push(main_pid);
    }
    members.sort_unstable();
    members
}

pub fn send(pid: u32, sig: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|p| p > 0 && kill(Pid::from_raw(p), sig).is_ok())
}

/// A user from the unit's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Looks `user` (name or number) up in `paths.passwd`.
pub fn lookup_user(paths: &Paths, user: &str) -> Option<UserInfo> {
    let text = fs::read_to_string(&paths.passwd).unwrap_or_default();
    let numeric = user.parse::<u32>().ok();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
            continue;
        };
        if f[0] == user || numeric == Some(uid) {
            return Some(UserInfo {
                name: f[0].to_string(),
                uid,
                gid,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            });
        }
    }
    // Root exists even with an empty passwd (numeric 0 or "root").
    (user == "root" || numeric == Some(0)).then(|| UserInfo {
        name: "root".into(),
        uid: 0,
        gid: 0,
        home: "/root".into(),
        shell: "/bin/sh".into(),
    })
}

/// Looks a group (name or number) up in `paths.group`.
pub fn lookup_group(paths: &Paths, group: &str) -> Option<u32> {
    let text = fs::read_to_string(&paths.group).unwrap_or_default();
    if let Ok(n) = group.parse::<u32>() {
        return Some(n);
    }
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == group {
            return f[2].parse().ok();
        }
    }
    (group == "root").then_some(0)
}

/// Supplementary groups of `user` (its primary group first), like initgroups(3).
pub fn user_groups(paths: &Paths, user: &str, primary: u32) -> Vec<u32> {
    let mut out = vec![primary];
    let text = fs::read_to_string(&paths.group).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[3].split(',').any(|m| m == user) {
            if let Ok(g) = f[2].parse::<u32>() {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
        }
    }
    out
}

/// Everything needed to run one command of a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub unit: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub cwd: PathBuf,
    pub log: PathBuf,
    /// Start a new session (services); control commands stay in the caller's.
    pub setsid: bool,
}

const DEFAULT_PATH_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn resolve_program(p: &str) -> PathBuf {
    if p.contains('/') {
        return PathBuf::from(p);
    }
    DEFAULT_PATH_DIRS
        .iter()
        .map(|d| Path::new(d).join(p))
        .find(|c| c.is_file())
        .unwrap_or_else(|| PathBuf::from(p))
}

/// Spawns `spec` with stdin from /dev/null and stdout/stderr appended to the unit log,
/// a clean environment, its own session (if asked), the unit's groups/gid/uid and cwd.
pub fn spawn(spec: &ExecSpec) -> io::Result<Child> {
    let Some(program) = spec.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    };
    if let Some(dir) = spec.log.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let log2 = log.try_clone()?;
    let cwd = CString::new(spec.cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in WorkingDirectory"))?;
    let mut cmd = Command::new(resolve_program(program));
    cmd.arg0(program)
        .args(spec.argv.iter().skip(1))
        .env_clear()
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let groups: Vec<nix::unistd::Gid> = spec
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let (uid, gid, setsid) = (spec.uid, spec.gid, spec.setsid);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Like systemd, start services with default signal handling: a test run under
            // `nohup` (SIGHUP ignored) must not make the service deaf to reloads.
            for sig in 1..32 {
                if sig != nix::libc::SIGKILL && sig != nix::libc::SIGSTOP {
                    nix::libc::signal(sig, nix::libc::SIG_DFL);
                }
            }
            let mut empty: nix::libc::sigset_t = std::mem::zeroed();
            nix::libc::sigemptyset(&mut empty);
            nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if setsid {
                nix::unistd::setsid().map_err(io::Error::from)?;
            }
            nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
            nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)).map_err(io::Error::from)?;
            nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(io::Error::from)?;
            if nix::libc::chdir(cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            Ok(())
        });
    }
    cmd.spawn()
}

/// How a process ended (`CLD_EXITED`, `CLD_KILLED`, `CLD_DUMPED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Killed by a signal and dumped core.
    Dumped(i32),
}

impl Exit {
    pub fn from_status(s: ExitStatus) -> Exit {
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) if s.core_dumped() => Exit::Dumped(sig),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::Code(255),
        }
    }
    /// systemd's `ExecMainCode`: exited | killed | dumped.
    pub fn code_name(self) -> &'static str {
        match self {
            Exit::Code(_) => "exited",
            Exit::Signal(_) => "killed",
            Exit::Dumped(_) => "dumped",
        }
    }
    pub fn status(self) -> i32 {
        match self {
            Exit::Code(c) | Exit::Signal(c) | Exit::Dumped(c) => c,
        }
    }
    /// `is_clean_exit` (`src/shared/exit-status.c`): exit 0 or a `SuccessExitStatus=` code;
    /// for a daemon (any `Type=` but oneshot, `EXIT_CLEAN_DAEMON`) also a death by SIGHUP,
    /// SIGINT, SIGTERM or SIGPIPE; a `SuccessExitStatus=` signal; never a core dump.
    pub fn clean(self, success: &ExitSet, daemon: bool) -> bool {
        match self {
            Exit::Code(c) => c == 0 || success.codes.contains(&c),
            Exit::Signal(s) => {
                let default_clean = [
                    Signal::SIGHUP as i32,
                    Signal::SIGINT as i32,
                    Signal::SIGTERM as i32,
                    Signal::SIGPIPE as i32,
                ]
                .contains(&s);
                (daemon && default_clean) || success.signals.contains(&s)
            }
            Exit::Dumped(_) => false,
        }
    }
    /// The unit's `Result=` for this exit of the main process (`service_sigchld_event`):
    /// success | exit-code | signal | core-dump.
    pub fn result(self, clean: bool) -> &'static str {
        match self {
            _ if clean => "success",
            Exit::Code(_) => "exit-code",
            Exit::Signal(_) => "signal",
            Exit::Dumped(_) => "core-dump",
        }
    }
    fn matches(self, set: &ExitSet) -> bool {
        match self {
            Exit::Code(c) => set.codes.contains(&c),
            Exit::Signal(s) | Exit::Dumped(s) => set.signals.contains(&s),
        }
    }
}

/// Runs a control command (ExecStartPre/ExecReload/ExecStop) to completion, killing it
/// after `timeout`.
pub fn run_to_completion(spec: &ExecSpec, timeout: Duration) -> io::Result<Exit> {
    let mut child = spawn(spec)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Exit::from_status(st));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let st = child.wait()?;
            return Ok(Exit::from_status(st));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What systemctl hands the supervisor on its stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorSpec {
    pub paths: Paths,
    pub exec: ExecSpec,
    pub invocation: u64,
    pub restart: RestartRules,
    pub restart_sec: Duration,
    /// `SuccessExitStatus=`.
    pub success: ExitSet,
    /// The main process is a daemon (every `Type=` but oneshot).
    pub daemon: bool,
    /// argv of the systemctl call that started it (for journal entries).
    pub caller_argv: Vec<String>,
}

/// `Restart=` with `RestartPreventExitStatus=` and `RestartForceExitStatus=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartRules {
    pub policy: RestartPolicy,
    pub prevent: ExitSet,
    pub force: ExitSet,
}

/// Whether the service restarts after its main process ended with `exit` and the unit's
/// `result` (`service_shall_restart` in `src/core/service.c`). A stop (`forbid_restart`)
/// is the caller's check.
pub fn should_restart(rules: &RestartRules, result: &str, exit: Exit) -> bool {
    if exit.matches(&rules.prevent) {
        return false;
    }
    if exit.matches(&rules.force) {
        return true;
    }
    match rules.policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnSuccess => result == "success",
        RestartPolicy::OnFailure => result != "success",
        RestartPolicy::OnAbnormal => !matches!(result, "success" | "exit-code"),
        RestartPolicy::OnWatchdog => result == "watchdog",
        RestartPolicy::OnAbort => matches!(result, "signal" | "core-dump"),
    }
}

fn close_inherited_fds() {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // Closing the read_dir fd (already closed) just fails with EBADF.
        let _ = nix::unistd::close(fd);
    }
}

/// The supervisor process (`systemctl __supervise`): reads a [`SupervisorSpec`] from stdin,
/// runs the service, answers `started <pid>` or `failed <status> <why>` on stdout, then
/// waits for the main process, records how it ended, and restarts it per `Restart=`.
pub fn supervise() -> i32 {
    close_inherited_fds();
    let mut input = String::new();
    if io::stdin().lock().read_line(&mut input).is_err() {
        return 1;
    }
    let Ok(spec) = serde_json::from_str::<SupervisorSpec>(&input) else {
        println!("failed 1 bad supervisor spec");
        return 1;
    };
    let mut reply = Some(io::stdout());
    let paths = &spec.paths;
    let unit = spec.exec.unit.as_str();
    let argv = &spec.caller_argv;
    let me = std::process::id();
    loop {
        let mut spawn_error = None;
        // Where this process's output starts in the unit log (for `journalctl _PID=`).
        let offset = fs::metadata(&spec.exec.log).map_or(0, |m| m.len());
        let child = spawn(&spec.exec);
        let exit = match child {
            Err(e) => {
                // 203/EXEC (also covers credential and chdir failures in the child).
                state::journal(
                    paths,
                    JournalEntry::new(argv, unit, "start-failed")
                        .status(203)
                        .detail(format!("{}: {e}", spec.exec.argv.join(" "))),
                );
                // The answer is sent once the failure is recorded (below), so that the caller
                // of `systemctl start` already sees the unit failed.
                spawn_error = Some(e.to_string());
                Exit::Code(203)
            }
            Ok(mut child) => {
                let pid = child.id();
                {
                    let Ok(mut l) = state::lock(paths) else {
                        return 1;
                    };
                    let u = l.unit(unit);
                    if u.invocation != spec.invocation || u.stop_requested {
                        drop(l);
                        let _ = child.kill();
                        let _ = child.wait();
                        return 0;
                    }
                    u.main_pid = pid;
                    u.record_output(pid, offset);
                    u.main_start_time = start_time(pid);
                    u.exec_main_pid = pid;
                    u.supervisor_pid = me;
                    u.supervisor_start_time = start_time(me);
                    u.set("active", "running");
                    let _ = l.save();
                }
                state::journal(paths, JournalEntry::new(argv, unit, "started").pid(pid));
                if let Some(mut out) = reply.take() {
                    let _ = writeln!(out, "started {pid}");
                    let _ = out.flush();
                }
                match child.wait() {
                    Ok(st) => Exit::from_status(st),
                    Err(_) => Exit::Code(255),
                }
            }
        };
        let clean = exit.clean(&spec.success, spec.daemon);
        let Ok(mut l) = state::lock(paths) else {
            return 1;
        };
        let u = l.unit(unit);
        if u.invocation != spec.invocation {
            return 0;
        }
        u.exec_main_status = exit.status();
        u.exec_main_code = exit.code_name().to_string();
        u.main_pid = 0;
        u.main_start_time = 0;
        let result = if u.stop_timed_out {
            "timeout"
        } else {
            exit.result(clean)
        };
        // A stop forbids the restart (`forbid_restart`, set by `service_stop`).
        let restart = !u.stop_requested && should_restart(&spec.restart, result, exit);
        u.result = result.to_string();
        let stopping = u.stop_requested;
        if restart {
            u.n_restarts += 1;
            u.set("activating", "auto-restart");
        } else if result == "success" {
            u.set("inactive", "dead");
        } else {
            u.set("failed", "failed");
        }
        let _ = l.save();
        drop(l);
        if let (Some(e), Some(mut out)) = (spawn_error, reply.take()) {
            let _ = writeln!(out, "failed 203 {e}");
            let _ = out.flush();
        }
        let mut entry = JournalEntry::new(argv, unit, "exited")
            .status(exit.status())
            .detail(format!(
                "code={} result={result}{}",
                exit.code_name(),
                if stopping { " (stop)" } else { "" }
            ));
        if let Exit::Signal(s) | Exit::Dumped(s) = exit {
            if let Ok(sig) = Signal::try_from(s) {
                entry = entry.signal(sig.as_str());
            }
        }
        state::journal(paths, entry);
        if !restart {
            return 0;
        }
        state::journal(
            paths,
            JournalEntry::new(argv, unit, "restart-scheduled")
                .detail(format!("in {:?}", spec.restart_sec)),
        );
        let until = Instant::now() + spec.restart_sec;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
            let s = state::peek(paths);
            match s.units.get(unit) {
                Some(u) if u.invocation == spec.invocation && !u.stop_requested => {}
                _ => return 0,
            }
        }
    }
}

/// Starts the supervisor (`/proc/self/exe` with argv\[0\] `systemctl` and the hidden verb
/// `__supervise`) in its own session and returns its answer line.
pub fn start_supervisor(spec: &SupervisorSpec, exe: &Path) -> Result<String, SystemctlError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.exec.log)
        .map_err(|source| SystemctlError::Spawn {
            what: format!("log {}", spec.exec.log.display()),
            source,
        })?;
    let mut cmd = Command::new(exe);
    cmd.arg0("systemctl")
        .arg("__supervise")
        .arg(&spec.exec.unit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let spawn_err = |source| SystemctlError::Spawn {
        what: format!("supervisor {}", exe.display()),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    let json = serde_json::to_string(spec).map_err(|e| spawn_err(io::Error::other(e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{json}").map_err(spawn_err)?;
    }
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(spawn_err)?;
    }
    // The supervisor lives on (reparented); its exit status is not ours to collect.
    std::mem::forget(child);
    Ok(line.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(policy: RestartPolicy) -> RestartRules {
        RestartRules {
            policy,
            prevent: ExitSet::default(),
            force: ExitSet::default(),
        }
    }

    /// The table of `service_shall_restart` (`src/core/service.c`) for the results a
    /// simple service's main process can end with.
    #[test]
    fn restart_policy() {
        let none = ExitSet::default();
        let cases = [
            (Exit::Code(0), "success"),
            (Exit::Code(1), "exit-code"),
            (Exit::Signal(Signal::SIGTERM as i32), "success"),
            (Exit::Signal(Signal::SIGKILL as i32), "signal"),
            (Exit::Dumped(Signal::SIGABRT as i32), "core-dump"),
        ];
        for (exit, result) in cases {
            assert_eq!(exit.result(exit.clean(&none, true)), result, "{exit:?}");
        }
        let expect = |p: RestartPolicy, want: [bool; 5]| {
            for ((exit, result), w) in cases.iter().zip(want) {
                assert_eq!(
                    should_restart(&rules(p), result, *exit),
                    w,
                    "{p:?} {exit:?}"
                );
            }
        };
        expect(RestartPolicy::No, [false; 5]);
        expect(RestartPolicy::Always, [true; 5]);
        expect(RestartPolicy::OnSuccess, [true, false, true, false, false]);
        expect(RestartPolicy::OnFailure, [false, true, false, true, true]);
        expect(RestartPolicy::OnAbnormal, [false, false, false, true, true]);
        expect(RestartPolicy::OnAbort, [false, false, false, true, true]);
        expect(RestartPolicy::OnWatchdog, [false; 5]);
        assert!(should_restart(
            &rules(RestartPolicy::OnFailure),
            "timeout",
            Exit::Signal(9)
        ));
        let mut r = rules(RestartPolicy::OnFailure);
        r.prevent.codes.push(1);
        assert!(!should_restart(&r, "exit-code", Exit::Code(1)));
        r.force.codes.push(0);
        assert!(should_restart(&r, "success", Exit::Code(0)));
    }

    #[test]
    fn clean_exits() {
        let none = ExitSet::default();
        let set = |codes: &[i32], signals: &[i32]| ExitSet {
            codes: codes.to_vec(),
            signals: signals.to_vec(),
        };
        assert!(Exit::Code(0).clean(&none, true));
        assert!(!Exit::Code(143).clean(&none, true));
        assert!(Exit::Code(143).clean(&set(&[143], &[]), true));
        assert!(Exit::Signal(15).clean(&none, true));
        assert!(Exit::Signal(1).clean(&none, true));
        // a oneshot's command dying by SIGTERM failed (EXIT_CLEAN_COMMAND)
        assert!(!Exit::Signal(15).clean(&none, false));
        assert!(!Exit::Signal(9).clean(&none, true));
        assert!(!Exit::Signal(10).clean(&none, true));
        assert!(Exit::Signal(10).clean(&set(&[], &[10]), true));
        assert!(!Exit::Dumped(6).clean(&set(&[], &[6]), true));
    }

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id();
        let s = proc_stat(me).unwrap();
        assert_ne!(s.state, 'Z');
        assert!(alive(me, s.start_time));
        assert!(!alive(me, s.start_time + 1));
        assert!(proc_stat(0).is_none());
    }
}
