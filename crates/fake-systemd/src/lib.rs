//! A fake `systemctl` that really runs services, for a simulated unit (test support; never
//! shipped).
//!
//! Imitates systemd (systemd/systemd): the verbs, output and exit codes of
//! `src/systemctl/systemctl-start-unit.c`, `systemctl-show.c`, `systemctl-is-active.c`,
//! `systemctl-enable.c`, `systemctl-daemon-reload.c` and `systemctl-kill.c`; the service
//! manager's start, stop, kill and restart rules of `src/core/service.c` and
//! `src/core/unit.c`.
//!
//! Owns: the command line of `systemctl` (the verbs a charm uses, with systemctl's output
//! and exit codes), the unit-file model ([`unit`]), the manager state and journal
//! ([`state`]) and the processes ([`process`]). The simulator puts a symlink named
//! `systemctl` on a unit's PATH pointing at a test executable whose `main` calls [`main`]
//! when argv\[0\] is `systemctl`. It runs inside the unit's private mount namespace and uses
//! real absolute paths: unit files in `/etc/systemd/system/` (plus `<unit>.d/*.conf`
//! drop-ins), state in `/run/fake-systemd/`, the journal in
//! `/var/log/fake-systemctl.journal` (JSON lines, [`read_journal`]), service output in
//! `/var/log/<unit>.log`, users in the unit's `/etc/passwd` and `/etc/group`.
//!
//! How a service runs: `start` resolves the environment (a clean one: PATH, INVOCATION_ID,
//! USER/LOGNAME/HOME/SHELL when `User=` is set, `CREDENTIALS_DIRECTORY` when
//! `LoadCredential=` is ([`credentials`]: a fresh read-only copy per start, a missing
//! source fails the unit 243/CREDENTIALS), then `Environment=`, then
//! `EnvironmentFile=`s, which override), user, groups and working directory, runs
//! `ExecStartPre=` (must succeed unless `-`), then re-executes this binary (argv\[0\]
//! `systemctl`, verb `__supervise`) in a new session. That supervisor stands in for PID 1:
//! it spawns `ExecStart=` in its own session (so the process group is the "cgroup"),
//! with stdin `/dev/null` and output appended to the unit log, records the main PID, waits
//! for it, records the exit status (`ExecMainStatus`, `Result`), and applies `Restart=`.
//!
//! Invariants:
//! - The state file changes only under an exclusive `flock` on `/run/fake-systemd/lock`, and
//!   a supervisor writes only for its own start (`invocation`), so a late writer never
//!   clobbers a newer start.
//! - Like systemd, a unit's configuration is what was loaded (first use, `daemon-reload`, or
//!   the reload implied by `enable`/`disable`): editing a unit file without `daemon-reload`
//!   keeps the old configuration and prints systemd's warning (`NeedDaemonReload=yes`).
//! - `stop` sends `KillSignal=` (after `ExecStop=`) to the main process (`KillMode=process`,
//!   `mixed`) or its process group and descendants (`control-group`), waits up to
//!   `TimeoutStopSec=` capped by `FAKE_SYSTEMCTL_MAX_STOP_SECS` (default 10 s), then
//!   escalates as `service_dispatch_timer` does: with `TimeoutStopFailureMode=abort`,
//!   `WatchdogSignal=` and a wait of `TimeoutAbortSec=` (same cap); then, unless
//!   `SendSIGKILL=no`, `FinalKillSignal=` to the processes `KillMode=` names, journaling
//!   each step; the unit then ends `failed` with `Result=timeout`. A stop is never
//!   restarted (`forbid_restart`), whatever the main process exited with.
//! - A main process that ends by itself is judged as `service_sigchld_event` and
//!   `service_shall_restart` do: exit 0, a `SuccessExitStatus=` code or, for a daemon (not
//!   `Type=oneshot`), death by SIGHUP/SIGINT/SIGTERM/SIGPIPE is `Result=success`; other
//!   codes `exit-code`, other signals `signal`, a core dump `core-dump`; `Restart=` (with
//!   `RestartPreventExitStatus=`, `RestartForceExitStatus=`) decides from that.
//! - [`journalctl`] shows a main process's output (`_PID=`), from the offset the
//!   supervisor recorded when it spawned it.
//! - Every call is journaled (`call`), and so is every effect.
//!
//! Hazards: no real cgroups, so a process that calls `setsid` and reparents itself escapes
//! `control-group` kills; `Type=` forking/notify/oneshot run like `simple`; no start rate
//! limiting; `RestartSec=` is capped by `FAKE_SYSTEMCTL_MAX_RESTART_SECS` (default 1 s).
//! The supervisor is `/proc/self/exe` unless `FAKE_SYSTEMCTL_EXE` names another
//! executable that also dispatches argv\[0\] `systemctl` here.

pub mod credentials;
pub mod journalctl;
pub mod process;
pub mod state;
pub mod unit;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use state::Locked;
pub use state::{read_journal, JournalEntry, Paths, State, UnitState};
use unit::{KillMode, ServiceConfig, ServiceType};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SystemctlError {
    #[error("fake systemd state {path}: {source}")]
    State { path: PathBuf, source: io::Error },
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: io::Error },
}

/// Knobs read once from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Cap on `TimeoutStopSec=` (`FAKE_SYSTEMCTL_MAX_STOP_SECS`, default 10).
    pub max_stop: Duration,
    /// Cap on `RestartSec=` (`FAKE_SYSTEMCTL_MAX_RESTART_SECS`, default 1).
    pub max_restart: Duration,
    /// Executable re-run as the supervisor (`FAKE_SYSTEMCTL_EXE`, default /proc/self/exe).
    pub supervisor_exe: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_stop: Duration::from_secs(10),
            max_restart: Duration::from_secs(1),
            supervisor_exe: PathBuf::from("/proc/self/exe"),
        }
    }
}

impl Settings {
    pub fn from_env() -> Self {
        let secs = |name: &str, default: Duration| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map_or(default, Duration::from_secs_f64)
        };
        let d = Settings::default();
        Settings {
            max_stop: secs("FAKE_SYSTEMCTL_MAX_STOP_SECS", d.max_stop),
            max_restart: secs("FAKE_SYSTEMCTL_MAX_RESTART_SECS", d.max_restart),
            supervisor_exe: std::env::var_os("FAKE_SYSTEMCTL_EXE")
                .map_or(d.supervisor_exe, PathBuf::from),
        }
    }
}

/// Entry point: `args` is argv without argv\[0\]. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("__supervise") {
        return process::supervise();
    }
    let settings = Settings::from_env();
    let stdout = io::stdout();
    let stderr = io::stderr();
    let mut out = stdout.lock();
    let mut err = stderr.lock();
    let code = run(&Paths::system(), &settings, args, &mut out, &mut err);
    let _ = out.flush();
    let _ = err.flush();
    code
}

struct Cli {
    verb: String,
    units: Vec<String>,
    quiet: bool,
    now: bool,
    value: bool,
    no_reload: bool,
    properties: Vec<String>,
    signal: Option<String>,
    kill_whom: Option<String>,
}

fn parse_cli(args: &[String]) -> Result<Cli, String> {
    let mut cli = Cli {
        verb: String::new(),
        units: Vec::new(),
        quiet: false,
        now: false,
        value: false,
        no_reload: false,
        properties: Vec::new(),
        signal: None,
        kill_whom: None,
    };
    let mut positional = Vec::new();
    let mut i = 0;
    let next = |i: &mut usize, name: &str| -> Result<String, String> {
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("systemctl: option '{name}' requires an argument"))
    };
    let mut only_positional = false;
    while i < args.len() {
        let a = args[i].as_str();
        if only_positional || !a.starts_with('-') || a == "-" {
            positional.push(a.to_string());
            i += 1;
            continue;
        }
        match a {
            "--" => only_positional = true,
            "-q" | "--quiet" => cli.quiet = true,
            "--now" => cli.now = true,
            "--value" => cli.value = true,
            "--no-reload" => cli.no_reload = true,
            "--no-block" | "--no-pager" | "--no-legend" | "--no-ask-password" | "--system"
            | "-l" | "--full" | "--plain" | "-a" | "--all" | "-f" | "--force" | "--show-types" => {}
            "-p" | "--property" => {
                let v = next(&mut i, a)?;
                cli.properties.extend(v.split(',').map(String::from));
            }
            "-s" | "--signal" => cli.signal = Some(next(&mut i, a)?),
            "--kill-whom" | "--kill-who" => cli.kill_whom = Some(next(&mut i, a)?),
            "-t" | "--type" | "--state" | "-n" | "--lines" | "-o" | "--output" => {
                next(&mut i, a)?;
            }
            _ => {
                if let Some(v) = a.strip_prefix("--property=") {
                    cli.properties.extend(v.split(',').map(String::from));
                } else if let Some(v) = a.strip_prefix("--signal=") {
                    cli.signal = Some(v.to_string());
                } else if let Some(v) = a
                    .strip_prefix("--kill-whom=")
                    .or_else(|| a.strip_prefix("--kill-who="))
                {
                    cli.kill_whom = Some(v.to_string());
                } else if a.starts_with("--type=")
                    || a.starts_with("--state=")
                    || a.starts_with("--lines=")
                    || a.starts_with("--output=")
                {
                } else if let Some(v) = a
                    .strip_prefix("-p")
                    .filter(|v| !v.is_empty() && !a.starts_with("--"))
                {
                    cli.properties.extend(v.split(',').map(String::from));
                } else if let Some(v) = a
                    .strip_prefix("-s")
                    .filter(|v| !v.is_empty() && !a.starts_with("--"))
                {
                    cli.signal = Some(v.to_string());
                } else if a.starts_with("--") {
                    return Err(format!("systemctl: unrecognized option '{a}'"));
                } else {
                    let c = a.chars().nth(1).unwrap_or('-');
                    return Err(format!("systemctl: invalid option -- '{c}'"));
                }
            }
        }
        i += 1;
    }
    let mut it = positional.into_iter();
    cli.verb = it.next().unwrap_or_else(|| "list-units".to_string());
    cli.units = it.collect();
    Ok(cli)
}

/// `web` → `web.service`; None for names systemd would reject.
fn unit_name(name: &str) -> Option<String> {
    if name.is_empty()
        || name.contains('/')
        || name.len() > 255
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    if name.contains('.') && !name.ends_with(".service") {
        // Another unit type (timer, target, ...): kept as is; never found here.
        return Some(name.to_string());
    }
    Some(if name.ends_with(".service") {
        name.to_string()
    } else {
        format!("{name}.service")
    })
}

struct Ctx<'a> {
    paths: &'a Paths,
    settings: &'a Settings,
    argv: &'a [String],
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl Ctx<'_> {
    fn journal(&self, entry: JournalEntry) {
        state::journal(self.paths, entry);
    }
    fn entry(&self, unit: &str, action: &str) -> JournalEntry {
        JournalEntry::new(self.argv, unit, action)
    }
}

/// Runs one systemctl call with explicit paths and output streams.
pub fn run(
    paths: &Paths,
    settings: &Settings,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut ctx = Ctx {
        paths,
        settings,
        argv: args,
        out,
        err,
    };
    ctx.journal(ctx.entry("", "call"));
    let cli = match parse_cli(args) {
        Ok(c) => c,
        Err(msg) => {
            let _ = writeln!(ctx.err, "{msg}");
            return 1;
        }
    };
    let mut units = Vec::new();
    for u in &cli.units {
        match unit_name(u) {
            Some(n) => units.push(n),
            None => {
                let _ = writeln!(ctx.err, "Invalid unit name \"{u}\" escaped as \"{u}\".");
                return 1;
            }
        }
    }
    let needs_unit = matches!(
        cli.verb.as_str(),
        "start"
            | "stop"
            | "restart"
            | "try-restart"
            | "reload"
            | "reload-or-restart"
            | "kill"
            | "is-active"
            | "is-failed"
            | "is-enabled"
            | "enable"
            | "disable"
            | "cat"
    );
    if needs_unit && units.is_empty() {
        let _ = writeln!(ctx.err, "Too few arguments.");
        return 1;
    }
    let result = match cli.verb.as_str() {
        "daemon-reload" | "daemon-reexec" => daemon_reload(&mut ctx, "daemon-reload"),
        "start" => each(&mut ctx, &units, start),
        "stop" => each(&mut ctx, &units, stop),
        "restart" => each(&mut ctx, &units, |c, u| restart(c, u, false)),
        "try-restart" | "condrestart" => each(&mut ctx, &units, |c, u| restart(c, u, true)),
        "reload" => each(&mut ctx, &units, reload),
        "reload-or-restart" => each(&mut ctx, &units, reload_or_restart),
        "kill" => each(&mut ctx, &units, |c, u| {
            kill_unit(c, u, cli.signal.as_deref(), cli.kill_whom.as_deref())
        }),
        "is-active" => Ok(is_active(&mut ctx, &units, cli.quiet, false)),
        "is-failed" => Ok(is_active(&mut ctx, &units, cli.quiet, true)),
        "is-enabled" => Ok(is_enabled(&mut ctx, &units, cli.quiet)),
        "enable" => enable(&mut ctx, &units, cli.now, cli.no_reload),
        "disable" => disable(&mut ctx, &units, cli.now, cli.no_reload),
        "show" => Ok(show(&mut ctx, &units, &cli.properties, cli.value)),
        "reset-failed" => reset_failed(&mut ctx, &units),
        "status" => Ok(status(&mut ctx, &units)),
        "cat" => Ok(cat(&mut ctx, &units)),
        "list-units" => Ok(list_units(&mut ctx)),
        other => {
            let _ = writeln!(ctx.err, "Unknown command verb '{other}'.");
            return 1;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(ctx.err, "systemctl (fake): {e}");
            ctx.journal(ctx.entry("", "error").detail(e.to_string()));
            1
        }
    }
}

type Verb<'f> = dyn FnMut(&mut Ctx<'_>, &str) -> Result<i32, SystemctlError> + 'f;

fn each(
    ctx: &mut Ctx<'_>,
    units: &[String],
    mut f: impl FnMut(&mut Ctx<'_>, &str) -> Result<i32, SystemctlError>,
) -> Result<i32, SystemctlError> {
    let f: &mut Verb<'_> = &mut f;
    let mut code = 0;
    for u in units {
        let c = f(ctx, u)?;
        if c != 0 {
            code = c;
        }
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Unit text on disk: the main file followed by `<unit>.d/*.conf` in name order.
fn disk_text(paths: &Paths, unit: &str) -> Option<String> {
    let mut text = fs::read_to_string(paths.unit_file(unit)).ok()?;
    let dropins = paths.unit_dir.join(format!("{unit}.d"));
    if let Ok(rd) = fs::read_dir(&dropins) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for f in files {
            if let Ok(t) = fs::read_to_string(&f) {
                text.push('\n');
                text.push_str(&t);
            }
        }
    }
    Some(text)
}

fn need_reload(paths: &Paths, unit: &str, u: &UnitState) -> bool {
    match &u.loaded_text {
        Some(t) => disk_text(paths, unit).as_ref() != Some(t),
        None => false,
    }
}

/// The unit's loaded configuration, loading it from disk on first use; warns like systemd
/// when the file changed since it was loaded.
fn load(ctx: &mut Ctx<'_>, l: &mut Locked, unit: &str) -> Option<ServiceConfig> {
    let disk = disk_text(ctx.paths, unit);
    let u = l.unit(unit);
    let text = match (&u.loaded_text, disk) {
        (Some(t), d) => {
            if d.as_ref() != Some(t) {
                let _ = writeln!(
                    ctx.err,
                    "Warning: The unit file, source configuration file or drop-ins of {unit} \
                     changed on disk. Run 'systemctl daemon-reload' to reload units."
                );
                ctx.journal(
                    ctx.entry(unit, "warning")
                        .detail("unit file changed on disk, not reloaded"),
                );
            }
            t.clone()
        }
        (None, Some(d)) => {
            u.loaded_text = Some(d.clone());
            ctx.journal(ctx.entry(unit, "load"));
            d
        }
        (None, None) => return None,
    };
    let cfg = unit::parse_service(&text);
    for w in &cfg.warnings {
        ctx.journal(ctx.entry(unit, "warning").detail(w.clone()));
    }
    Some(cfg)
}

fn daemon_reload(ctx: &mut Ctx<'_>, why: &str) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    l.state.generation += 1;
    let names: Vec<String> = l.state.units.keys().cloned().collect();
    for name in names {
        let disk = disk_text(ctx.paths, &name);
        let u = l.unit(&name);
        let running = matches!(u.active.as_str(), "active" | "activating" | "deactivating");
        match disk {
            Some(d) => u.loaded_text = Some(d),
            // A running unit whose file vanished stays loaded, as in systemd.
            None if running => {}
            None => u.loaded_text = None,
        }
    }
    let generation = l.state.generation;
    l.save()?;
    ctx.journal(
        ctx.entry("", "daemon-reload")
            .detail(format!("{why} generation={generation}")),
    );
    Ok(0)
}

/// The unit state, with a dead main process whose supervisor vanished turned into failed.
fn refreshed(ctx: &Ctx<'_>, unit: &str) -> UnitState {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let u = state::peek(ctx.paths)
            .units
            .get(unit)
            .cloned()
            .unwrap_or_default();
        let live_states = matches!(u.active.as_str(), "active" | "deactivating");
        if !live_states || u.main_pid == 0 || process::alive(u.main_pid, u.main_start_time) {
            return u;
        }
        // Main process gone: its supervisor records it shortly, unless it is gone too.
        let sup_alive = process::alive(u.supervisor_pid, u.supervisor_start_time);
        if !sup_alive || Instant::now() >= deadline {
            if !sup_alive {
                if let Ok(mut l) = state::lock(ctx.paths) {
                    let s = l.unit(unit);
                    if s.invocation == u.invocation && s.main_pid == u.main_pid {
                        s.main_pid = 0;
                        s.result = "signal".into();
                        s.set("failed", "failed");
                        let _ = l.save();
                        ctx.journal(
                            ctx.entry(unit, "exited")
                                .pid(u.main_pid)
                                .detail("main process gone and its supervisor too; status unknown"),
                        );
                    }
                    return l.unit(unit).clone();
                }
            }
            return u;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_running(u: &UnitState) -> bool {
    matches!(u.active.as_str(), "active" | "activating" | "deactivating")
}

// ---------------------------------------------------------------------------------------------
// start

fn job_failed(ctx: &mut Ctx<'_>, unit: &str, why: &str) {
    let _ = writeln!(
        ctx.err,
        "Job for {unit} failed because {why}.\nSee \"systemctl status {unit}\" and \"journalctl -xeu {unit}\" for details."
    );
}

fn record_failure(l: &mut Locked, unit: &str, status: i32, result: &str) {
    let u = l.unit(unit);
    u.exec_main_status = status;
    u.exec_main_code = "exited".into();
    u.result = result.into();
    u.main_pid = 0;
    u.set("failed", "failed");
}

struct Resolved {
    env: BTreeMap<String, String>,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cwd: PathBuf,
}

/// The unit's `LoadCredential=` copies, readable by `owner` (`None`: it has none).
/// Err: the start fails 243/CREDENTIALS (`exec_setup_credentials` in the child).
fn setup_credentials(
    ctx: &Ctx<'_>,
    unit: &str,
    cfg: &ServiceConfig,
    owner: (u32, u32),
    fresh: bool,
) -> Result<Option<PathBuf>, (i32, &'static str, String)> {
    if cfg.load_credentials.is_empty() {
        return Ok(None);
    }
    let creds: Vec<(String, String)> = cfg
        .load_credentials
        .iter()
        .map(|(id, src)| (id.clone(), unit::expand_specifiers(src, unit)))
        .collect();
    credentials::setup(&ctx.paths.credentials, unit, &creds, owner, fresh)
        .map(Some)
        .map_err(|why| {
            (
                credentials::EXIT_CREDENTIALS,
                "exit-code",
                format!("Failed to set up credentials: {why}"),
            )
        })
}

/// Environment, credentials and working directory of a unit. Err((status, result, why)).
/// `fresh`: for a start, whose `LoadCredential=` copies are made anew.
fn resolve(
    ctx: &Ctx<'_>,
    unit: &str,
    cfg: &ServiceConfig,
    fresh: bool,
) -> Result<Resolved, (i32, &'static str, String)> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".to_string(),
    );
    env.insert(
        "INVOCATION_ID".to_string(),
        format!(
            "{:032x}",
            (state::now() * 1e6) as u128 ^ u128::from(std::process::id())
        ),
    );
    let (uid, gid, mut groups, home) = match &cfg.user {
        Some(name) => {
            let Some(user) = process::lookup_user(ctx.paths, name) else {
                return Err((
                    217,
                    "exit-code",
                    format!("user {name} not found in {}", ctx.paths.passwd.display()),
                ));
            };
            env.insert("USER".into(), user.name.clone());
            env.insert("LOGNAME".into(), user.name.clone());
            env.insert("HOME".into(), user.home.clone());
            env.insert("SHELL".into(), user.shell.clone());
            let groups = process::user_groups(ctx.paths, &user.name, user.gid);
            (user.uid, user.gid, groups, user.home)
        }
        None => (0, 0, vec![0], "/root".to_string()),
    };
    let gid = match &cfg.group {
        Some(g) => match process::lookup_group(ctx.paths, g) {
            Some(id) => {
                if !groups.contains(&id) {
                    groups.insert(0, id);
                }
                id
            }
            None => {
                return Err((
                    216,
                    "exit-code",
                    format!("group {g} not found in {}", ctx.paths.group.display()),
                ))
            }
        },
        None => gid,
    };
    if let Some(dir) = setup_credentials(ctx, unit, cfg, (uid, gid), fresh)? {
        env.insert("CREDENTIALS_DIRECTORY".into(), dir.display().to_string());
    }
    for (k, v) in &cfg.environment {
        env.insert(k.clone(), unit::expand_specifiers(v, unit));
    }
    for (path, optional) in &cfg.environment_files {
        let path = unit::expand_specifiers(path, unit);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let mut warnings = Vec::new();
                for (k, v) in unit::parse_env_file(&text, &mut warnings) {
                    env.insert(k, v);
                }
                for w in warnings {
                    ctx.journal(ctx.entry(unit, "warning").detail(format!("{path}: {w}")));
                }
            }
            Err(_) if *optional => {}
            Err(e) => {
                return Err((
                    0,
                    "resources",
                    format!("failed to load environment file {path}: {e}"),
                ));
            }
        }
    }
    let cwd = match &cfg.working_directory {
        None => PathBuf::from("/"),
        Some((dir, optional)) => {
            let dir = unit::expand_specifiers(dir, unit);
            let p = if dir == "~" {
                PathBuf::from(&home)
            } else {
                PathBuf::from(&dir)
            };
            if p.is_dir() {
                p
            } else if *optional {
                PathBuf::from("/")
            } else {
                return Err((
                    200,
                    "exit-code",
                    format!(
                        "changing to the requested working directory failed: {}",
                        p.display()
                    ),
                ));
            }
        }
    };
    Ok(Resolved {
        env,
        uid,
        gid,
        groups,
        cwd,
    })
}

fn exec_spec(
    ctx: &Ctx<'_>,
    unit: &str,
    r: &Resolved,
    cmd: &unit::ExecCommand,
    extra_env: &[(String, String)],
    setsid: bool,
) -> process::ExecSpec {
    let mut env = r.env.clone();
    for (k, v) in extra_env {
        env.insert(k.clone(), v.clone());
    }
    let words: Vec<String> = cmd
        .words
        .iter()
        .map(|w| unit::expand_specifiers(w, unit))
        .collect();
    let argv = unit::expand_words(&words, &env);
    let (uid, gid, groups) = if cmd.privileged {
        (0, 0, vec![0])
    } else {
        (r.uid, r.gid, r.groups.clone())
    };
    process::ExecSpec {
        unit: unit.to_string(),
        argv,
        env,
        uid,
        gid,
        groups,
        cwd: r.cwd.clone(),
        log: ctx.paths.unit_log(unit),
        setsid,
    }
}

fn start(ctx: &mut Ctx<'_>, unit: &str) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let Some(cfg) = load(ctx, &mut l, unit) else {
        l.save()?;
        let _ = writeln!(ctx.err, "Failed to start {unit}: Unit {unit} not found.");
        ctx.journal(
            ctx.entry(unit, "start-failed")
                .status(5)
                .detail("not found"),
        );
        return Ok(5);
    };
    l.save()?;
    drop(l);
    let current = refreshed(ctx, unit);
    let mut l = state::lock(ctx.paths)?;
    if is_running(&current) && (current.main_pid != 0 || current.sub == "auto-restart") {
        ctx.journal(ctx.entry(unit, "start").detail("already active"));
        return Ok(0);
    }
    ctx.journal(ctx.entry(unit, "start"));
    let Some(main_cmd) = cfg.exec_start.first() else {
        record_failure(&mut l, unit, 0, "resources");
        l.save()?;
        let _ = writeln!(
            ctx.err,
            "Failed to start {unit}: Unit {unit} has a bad unit file setting."
        );
        ctx.journal(ctx.entry(unit, "start-failed").detail("no ExecStart="));
        return Ok(1);
    };
    let resolved = match resolve(ctx, unit, &cfg, true) {
        Ok(r) => r,
        Err((status, result, why)) => {
            record_failure(&mut l, unit, status, result);
            l.save()?;
            ctx.journal(
                ctx.entry(unit, "start-failed")
                    .status(status)
                    .detail(why.clone()),
            );
            // Credential and directory errors happen in the forked child: a simple
            // service's start job has already succeeded by then.
            if result == "resources" {
                job_failed(
                    ctx,
                    unit,
                    "of unavailable resources or another system error",
                );
                return Ok(1);
            }
            if cfg.service_type == ServiceType::Exec {
                job_failed(ctx, unit, "the control process exited with error code");
                return Ok(1);
            }
            return Ok(0);
        }
    };
    // New invocation; the lock is released while ExecStartPre runs (it may call systemctl).
    let invocation = {
        let u = l.unit(unit);
        u.invocation += 1;
        u.stop_requested = false;
        u.stop_timed_out = false;
        u.main_pid = 0;
        u.exec_main_status = 0;
        u.exec_main_code = String::new();
        u.result = "success".into();
        u.set("activating", "start-pre");
        u.invocation
    };
    l.save()?;
    drop(l);
    let budget = ctx.settings.max_stop.max(Duration::from_secs(30));
    for pre in &cfg.exec_start_pre {
        let spec = exec_spec(ctx, unit, &resolved, pre, &[], false);
        let exit = process::run_to_completion(&spec, budget);
        let (ok, status) = match exit {
            Ok(e) => (matches!(e, process::Exit::Code(0)), e.status()),
            Err(_) => (false, 203),
        };
        ctx.journal(
            ctx.entry(unit, "exec-start-pre")
                .status(status)
                .detail(spec.argv.join(" ")),
        );
        if !ok && !pre.ignore_failure {
            let mut l = state::lock(ctx.paths)?;
            if l.unit(unit).invocation == invocation {
                record_failure(&mut l, unit, status, "exit-code");
                l.save()?;
            }
            job_failed(ctx, unit, "the control process exited with error code");
            return Ok(1);
        }
    }
    {
        let mut l = state::lock(ctx.paths)?;
        let u = l.unit(unit);
        if u.invocation != invocation || u.stop_requested {
            ctx.journal(
                ctx.entry(unit, "start-failed")
                    .detail("stopped or restarted during ExecStartPre"),
            );
            return Ok(0);
        }
        u.set("activating", "start");
        l.save()?;
    }
    let spec = process::SupervisorSpec {
        paths: ctx.paths.clone(),
        exec: exec_spec(ctx, unit, &resolved, main_cmd, &[], true),
        invocation,
        restart: process::RestartRules {
            policy: cfg.restart,
            prevent: cfg.restart_prevent.clone(),
            force: cfg.restart_force.clone(),
        },
        restart_sec: cfg.restart_sec.min(ctx.settings.max_restart),
        success: unit::ExitSet {
            codes: cfg.success_exit_codes.clone(),
            signals: cfg.success_signals.iter().map(|s| *s as i32).collect(),
        },
        daemon: cfg.service_type != ServiceType::Oneshot,
        caller_argv: ctx.argv.to_vec(),
    };
    let answer = match process::start_supervisor(&spec, &ctx.settings.supervisor_exe) {
        Ok(a) => a,
        Err(e) => {
            let mut l = state::lock(ctx.paths)?;
            record_failure(&mut l, unit, 1, "resources");
            l.save()?;
            return Err(e);
        }
    };
    if answer.starts_with("started ") {
        return Ok(0);
    }
    // The supervisor could not exec the command (203/EXEC) or died.
    if answer.is_empty() {
        let mut l = state::lock(ctx.paths)?;
        if l.unit(unit).invocation == invocation && l.unit(unit).main_pid == 0 {
            record_failure(&mut l, unit, 1, "resources");
            l.save()?;
        }
        ctx.journal(
            ctx.entry(unit, "start-failed")
                .detail("supervisor gave no answer"),
        );
        job_failed(
            ctx,
            unit,
            "of unavailable resources or another system error",
        );
        return Ok(1);
    }
    if cfg.service_type == ServiceType::Exec {
        job_failed(ctx, unit, "the control process exited with error code");
        return Ok(1);
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// stop

/// The processes `KillMode=` names; `main` is (pid, start time): a pid whose start time
/// differs is another process now.
fn targets(mode: KillMode, (main, start): (u32, u64), all: bool) -> Vec<u32> {
    match (mode, all) {
        (KillMode::None, false) => Vec::new(),
        (KillMode::Process, _) | (KillMode::Mixed, false) => {
            if process::alive(main, start) {
                vec![main]
            } else {
                Vec::new()
            }
        }
        _ => process::group_members(main, start),
    }
}

fn signal_all(ctx: &Ctx<'_>, unit: &str, action: &str, pids: &[u32], sig: Signal) {
    for p in pids {
        let ok = process::send(*p, sig);
        ctx.journal(
            ctx.entry(unit, action)
                .pid(*p)
                .signal(sig.as_str())
                .detail(if ok { "sent" } else { "failed" }),
        );
    }
}

fn stop(ctx: &mut Ctx<'_>, unit: &str) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let cfg = load(ctx, &mut l, unit);
    l.save()?;
    drop(l);
    let Some(cfg) = cfg else {
        let _ = writeln!(ctx.err, "Failed to stop {unit}: Unit {unit} not loaded.");
        return Ok(5);
    };
    let u = refreshed(ctx, unit);
    ctx.journal(ctx.entry(unit, "stop").pid(u.main_pid));
    if !is_running(&u) {
        return Ok(0);
    }
    let mut l = state::lock(ctx.paths)?;
    {
        let s = l.unit(unit);
        if s.invocation != u.invocation {
            return Ok(0);
        }
        s.stop_requested = true;
        if s.main_pid == 0 {
            // Between restarts (auto-restart) or never started: nothing to kill.
            s.set("inactive", "dead");
            l.save()?;
            ctx.journal(ctx.entry(unit, "stopped").detail("no main process"));
            return Ok(0);
        }
        s.set("deactivating", "stop-sigterm");
    }
    l.save()?;
    drop(l);
    let main = u.main_pid;
    let cap = ctx.settings.max_stop;
    let budget = cfg.timeout_stop.map_or(cap, |t| t.min(cap));
    let deadline = Instant::now() + budget;
    if !cfg.exec_stop.is_empty() {
        if let Ok(r) = resolve(ctx, unit, &cfg, false) {
            for cmd in &cfg.exec_stop {
                let spec = exec_spec(
                    ctx,
                    unit,
                    &r,
                    cmd,
                    &[("MAINPID".into(), main.to_string())],
                    false,
                );
                let left = deadline.saturating_duration_since(Instant::now());
                let exit = process::run_to_completion(&spec, left);
                ctx.journal(
                    ctx.entry(unit, "exec-stop")
                        .status(exit.map_or(203, |e| e.status()))
                        .detail(spec.argv.join(" ")),
                );
            }
        }
    }
    if cfg.kill_mode == KillMode::None {
        let mut l = state::lock(ctx.paths)?;
        let s = l.unit(unit);
        s.set("inactive", "dead");
        s.main_pid = 0;
        l.save()?;
        credentials::destroy(&ctx.paths.credentials, unit);
        ctx.journal(
            ctx.entry(unit, "stopped")
                .detail("KillMode=none: processes left running"),
        );
        return Ok(0);
    }
    let first = targets(cfg.kill_mode, (main, u.main_start_time), false);
    signal_all(ctx, unit, "signal", &first, cfg.kill_signal);
    if cfg.kill_signal != Signal::SIGKILL && cfg.kill_signal != Signal::SIGCONT {
        for p in &first {
            process::send(*p, Signal::SIGCONT);
        }
    }
    let gone = |mode: KillMode| {
        !process::alive(main, u.main_start_time)
            && (mode == KillMode::Process
                || process::group_members(main, u.main_start_time).is_empty())
    };
    let wait_gone = |limit: Duration| {
        let until = Instant::now() + limit;
        while !gone(cfg.kill_mode) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        gone(cfg.kill_mode)
    };
    if !wait_gone(deadline.saturating_duration_since(Instant::now())) {
        ctx.journal(ctx.entry(unit, "timeout").pid(main).detail(format!(
            "still running after {budget:?} (TimeoutStopSec={:?}, cap {cap:?})",
            cfg.timeout_stop
        )));
        escalate(
            ctx,
            unit,
            &cfg,
            (main, u.main_start_time, u.invocation),
            &wait_gone,
        )?;
    } else if cfg.kill_mode == KillMode::Mixed {
        // mixed: the rest of the group gets SIGKILL once the main process is gone.
        let rest = process::group_members(main, u.main_start_time);
        signal_all(ctx, unit, "escalate", &rest, Signal::SIGKILL);
    }
    // Let the supervisor record the exit; record it ourselves if it is gone.
    let wait_until = Instant::now() + Duration::from_secs(3);
    loop {
        let s = state::peek(ctx.paths)
            .units
            .get(unit)
            .cloned()
            .unwrap_or_default();
        if s.invocation != u.invocation || !matches!(s.active.as_str(), "deactivating" | "active") {
            break;
        }
        let sup_alive = process::alive(s.supervisor_pid, s.supervisor_start_time);
        if !sup_alive || Instant::now() >= wait_until {
            let mut l = state::lock(ctx.paths)?;
            let s = l.unit(unit);
            if s.invocation == u.invocation
                && matches!(s.active.as_str(), "deactivating" | "active")
            {
                s.main_pid = 0;
                if s.stop_timed_out {
                    s.result = "timeout".into();
                    s.set("failed", "failed");
                } else {
                    s.set("inactive", "dead");
                }
                l.save()?;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // An inactive unit's credentials go (`unit_destroy_runtime_data`).
    credentials::destroy(&ctx.paths.credentials, unit);
    let s = state::peek(ctx.paths)
        .units
        .get(unit)
        .cloned()
        .unwrap_or_default();
    ctx.journal(
        ctx.entry(unit, "stopped")
            .pid(main)
            .status(s.exec_main_status)
            .detail(format!("{} ({}) result={}", s.active, s.sub, s.result)),
    );
    Ok(0)
}

/// Marks the stop of `invocation` as timed out (the unit's `Result=timeout`).
fn stop_timed_out(
    ctx: &Ctx<'_>,
    unit: &str,
    invocation: u64,
    sub: &str,
) -> Result<(), SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let s = l.unit(unit);
    if s.invocation == invocation {
        s.stop_timed_out = true;
        s.set("deactivating", sub);
        l.save()?;
    }
    Ok(())
}

/// After `KillSignal=` timed out (`service_dispatch_timer`, state `stop-sigterm`): with
/// `TimeoutStopFailureMode=abort`, `WatchdogSignal=` and `TimeoutAbortSec=` (state
/// `stop-watchdog`); then, with `SendSIGKILL=yes`, `FinalKillSignal=` to the processes
/// `KillMode=` names (state `stop-sigkill`).
fn escalate(
    ctx: &Ctx<'_>,
    unit: &str,
    cfg: &ServiceConfig,
    (main, start, invocation): (u32, u64, u64),
    wait_gone: &dyn Fn(Duration) -> bool,
) -> Result<(), SystemctlError> {
    let cap = ctx.settings.max_stop;
    if cfg.timeout_stop_failure_mode == unit::FailureMode::Abort {
        stop_timed_out(ctx, unit, invocation, "stop-watchdog")?;
        let t = targets(cfg.kill_mode, (main, start), false);
        signal_all(ctx, unit, "abort", &t, cfg.watchdog_signal);
        let abort = cfg.timeout_abort.unwrap_or(cfg.timeout_stop);
        let budget = abort.map_or(cap, |t| t.min(cap));
        if wait_gone(budget) {
            return Ok(());
        }
        ctx.journal(ctx.entry(unit, "timeout").pid(main).detail(format!(
            "still running after {budget:?} (TimeoutAbortSec={abort:?}, cap {cap:?})"
        )));
    }
    if !cfg.send_sigkill {
        stop_timed_out(ctx, unit, invocation, "stop-sigterm")?;
        ctx.journal(
            ctx.entry(unit, "timeout")
                .pid(main)
                .detail("SendSIGKILL=no: processes left running"),
        );
        return Ok(());
    }
    stop_timed_out(ctx, unit, invocation, "stop-sigkill")?;
    let all = targets(cfg.kill_mode, (main, start), true);
    signal_all(ctx, unit, "escalate", &all, cfg.final_kill_signal);
    wait_gone(Duration::from_secs(5));
    Ok(())
}

fn restart(ctx: &mut Ctx<'_>, unit: &str, only_if_active: bool) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let cfg = load(ctx, &mut l, unit);
    l.save()?;
    drop(l);
    if cfg.is_none() {
        let verb = if only_if_active {
            "try-restart"
        } else {
            "restart"
        };
        let _ = writeln!(ctx.err, "Failed to {verb} {unit}: Unit {unit} not found.");
        return Ok(5);
    }
    let u = refreshed(ctx, unit);
    if only_if_active && !is_running(&u) {
        ctx.journal(
            ctx.entry(unit, "restart")
                .detail("not active, nothing to do"),
        );
        return Ok(0);
    }
    ctx.journal(ctx.entry(unit, "restart"));
    if is_running(&u) {
        stop(ctx, unit)?;
    }
    start(ctx, unit)
}

fn reload(ctx: &mut Ctx<'_>, unit: &str) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let cfg = load(ctx, &mut l, unit);
    l.save()?;
    drop(l);
    let Some(cfg) = cfg else {
        let _ = writeln!(ctx.err, "Failed to reload {unit}: Unit {unit} not found.");
        return Ok(5);
    };
    if cfg.exec_reload.is_empty() {
        let _ = writeln!(
            ctx.err,
            "Failed to reload {unit}: Job type reload is not applicable for unit {unit}."
        );
        return Ok(1);
    }
    let u = refreshed(ctx, unit);
    if u.active != "active" || u.main_pid == 0 {
        let _ = writeln!(ctx.err, "{unit} is not active, cannot reload.");
        ctx.journal(ctx.entry(unit, "reload").detail("not active"));
        return Ok(1);
    }
    let r = match resolve(ctx, unit, &cfg, false) {
        Ok(r) => r,
        Err((_, _, why)) => {
            let _ = writeln!(ctx.err, "Failed to reload {unit}: {why}");
            return Ok(1);
        }
    };
    let budget = ctx.settings.max_stop.max(Duration::from_secs(30));
    for cmd in &cfg.exec_reload {
        let spec = exec_spec(
            ctx,
            unit,
            &r,
            cmd,
            &[("MAINPID".into(), u.main_pid.to_string())],
            false,
        );
        let exit = process::run_to_completion(&spec, budget);
        let status = exit.as_ref().map_or(203, |e| e.status());
        ctx.journal(
            ctx.entry(unit, "reload")
                .pid(u.main_pid)
                .status(status)
                .detail(spec.argv.join(" ")),
        );
        if !matches!(exit, Ok(process::Exit::Code(0))) && !cmd.ignore_failure {
            job_failed(ctx, unit, "the control process exited with error code");
            return Ok(1);
        }
    }
    Ok(0)
}

fn reload_or_restart(ctx: &mut Ctx<'_>, unit: &str) -> Result<i32, SystemctlError> {
    let u = refreshed(ctx, unit);
    let has_reload = disk_text(ctx.paths, unit)
        .map(|t| !unit::parse_service(&t).exec_reload.is_empty())
        .unwrap_or(false);
    if u.active == "active" && has_reload {
        reload(ctx, unit)
    } else {
        restart(ctx, unit, false)
    }
}

fn kill_unit(
    ctx: &mut Ctx<'_>,
    unit: &str,
    signal: Option<&str>,
    whom: Option<&str>,
) -> Result<i32, SystemctlError> {
    let sig = match signal {
        None => Signal::SIGTERM,
        Some(s) => match unit::parse_signal(s) {
            Some(sig) => sig,
            None => {
                let _ = writeln!(ctx.err, "Failed to parse signal string {s}.");
                return Ok(1);
            }
        },
    };
    let whom = whom.unwrap_or("all");
    if !matches!(whom, "main" | "all" | "control") {
        let _ = writeln!(ctx.err, "Failed to kill unit {unit}: Invalid argument");
        return Ok(1);
    }
    let mut l = state::lock(ctx.paths)?;
    let cfg = load(ctx, &mut l, unit);
    l.save()?;
    drop(l);
    if cfg.is_none() {
        let _ = writeln!(
            ctx.err,
            "Failed to kill unit {unit}: Unit {unit} not loaded."
        );
        return Ok(5);
    }
    let u = refreshed(ctx, unit);
    let main = if u.main_pid != 0 && process::alive(u.main_pid, u.main_start_time) {
        u.main_pid
    } else {
        0
    };
    let pids = match whom {
        "main" => {
            if main == 0 {
                let _ = writeln!(
                    ctx.err,
                    "Failed to kill unit {unit}: No main process to kill"
                );
                return Ok(1);
            }
            vec![main]
        }
        "control" => Vec::new(),
        _ => process::group_members(main, u.main_start_time),
    };
    ctx.journal(
        ctx.entry(unit, "kill")
            .pid(main)
            .signal(sig.as_str())
            .detail(format!("kill-whom={whom} pids={pids:?}")),
    );
    signal_all(ctx, unit, "signal", &pids, sig);
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// queries

fn is_active(ctx: &mut Ctx<'_>, units: &[String], quiet: bool, failed: bool) -> i32 {
    let mut hit = false;
    for unit in units {
        let u = refreshed(ctx, unit);
        let word = u.active.clone();
        if (!failed && word == "active") || (failed && word == "failed") {
            hit = true;
        }
        if !quiet {
            let _ = writeln!(ctx.out, "{word}");
        }
    }
    match (hit, failed) {
        (true, _) => 0,
        (false, false) => 3,
        (false, true) => 1,
    }
}

/// enabled | disabled | static | not-found
fn enablement(paths: &Paths, unit: &str) -> &'static str {
    if wants_links(paths, unit)
        .iter()
        .any(|p| p.symlink_metadata().is_ok())
    {
        return "enabled";
    }
    match disk_text(paths, unit) {
        None => "not-found",
        Some(t) => {
            if unit::parse_service(&t).installable() {
                "disabled"
            } else {
                "static"
            }
        }
    }
}

/// Existing `*.wants/<unit>` and `*.requires/<unit>` links.
fn wants_links(paths: &Paths, unit: &str) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(&paths.unit_dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "wants" || x == "requires")
        })
        .map(|d| d.join(unit))
        .filter(|l| l.symlink_metadata().is_ok())
        .collect()
}

fn is_enabled(ctx: &mut Ctx<'_>, units: &[String], quiet: bool) -> i32 {
    let mut code = 1;
    for unit in units {
        let e = enablement(ctx.paths, unit);
        if e == "not-found" {
            let _ = writeln!(
                ctx.err,
                "Failed to get unit file state for {unit}: No such file or directory"
            );
            continue;
        }
        if e == "enabled" || e == "static" {
            code = 0;
        }
        if !quiet {
            let _ = writeln!(ctx.out, "{e}");
        }
    }
    code
}

fn enable(
    ctx: &mut Ctx<'_>,
    units: &[String],
    now: bool,
    no_reload: bool,
) -> Result<i32, SystemctlError> {
    for unit in units {
        let Some(text) = disk_text(ctx.paths, unit) else {
            let _ = writeln!(
                ctx.err,
                "Failed to enable unit: Unit file {unit} does not exist."
            );
            return Ok(1);
        };
        let cfg = unit::parse_service(&text);
        if !cfg.installable() {
            let _ = writeln!(
                ctx.err,
                "The unit files have no installation config (WantedBy=, RequiredBy=, Also=,\n\
                 Alias= settings in the [Install] section, and DefaultInstance= for template\n\
                 units). This means they are not meant to be enabled or disabled using systemctl."
            );
            ctx.journal(ctx.entry(unit, "enable").detail("no installation config"));
            continue;
        }
        let target = ctx.paths.unit_file(unit);
        for (t, kind) in cfg
            .wanted_by
            .iter()
            .map(|t| (t, "wants"))
            .chain(cfg.required_by.iter().map(|t| (t, "requires")))
        {
            let dir = ctx.paths.unit_dir.join(format!("{t}.{kind}"));
            let link = dir.join(unit);
            if link.symlink_metadata().is_ok() {
                continue;
            }
            fs::create_dir_all(&dir).map_err(|source| SystemctlError::State {
                path: dir.clone(),
                source,
            })?;
            std::os::unix::fs::symlink(&target, &link).map_err(|source| SystemctlError::State {
                path: link.clone(),
                source,
            })?;
            let _ = writeln!(
                ctx.err,
                "Created symlink {} \u{2192} {}.",
                link.display(),
                target.display()
            );
        }
        ctx.journal(ctx.entry(unit, "enable"));
    }
    if !no_reload {
        daemon_reload(ctx, "enable")?;
    }
    if now {
        return each(ctx, units, start);
    }
    Ok(0)
}

fn disable(
    ctx: &mut Ctx<'_>,
    units: &[String],
    now: bool,
    no_reload: bool,
) -> Result<i32, SystemctlError> {
    for unit in units {
        let links = wants_links(ctx.paths, unit);
        if links.is_empty() && disk_text(ctx.paths, unit).is_none() {
            let _ = writeln!(
                ctx.err,
                "Failed to disable unit: Unit file {unit} does not exist."
            );
            return Ok(1);
        }
        for l in links {
            if fs::remove_file(&l).is_ok() {
                let _ = writeln!(ctx.err, "Removed \"{}\".", l.display());
            }
        }
        ctx.journal(ctx.entry(unit, "disable"));
    }
    if !no_reload {
        daemon_reload(ctx, "disable")?;
    }
    if now {
        return each(ctx, units, stop);
    }
    Ok(0)
}

fn fmt_timespan(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "infinity".to_string();
    };
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut parts = Vec::new();
    for (unit, len) in [("h", 3600), ("min", 60), ("s", 1)] {
        if s >= len {
            parts.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" ")
    }
}

fn properties(paths: &Paths, unit: &str, u: &UnitState) -> Vec<(&'static str, String)> {
    let cfg = u.loaded_text.as_deref().map(unit::parse_service);
    let loaded = cfg.is_some() || disk_text(paths, unit).is_some();
    let cfg = cfg.or_else(|| disk_text(paths, unit).map(|t| unit::parse_service(&t)));
    let c = cfg.clone().unwrap_or_default();
    let file = paths.unit_file(unit);
    let main = if u.main_pid != 0 && process::alive(u.main_pid, u.main_start_time) {
        u.main_pid
    } else {
        0
    };
    let en = enablement(paths, unit);
    vec![
        ("Id", unit.to_string()),
        ("Names", unit.to_string()),
        (
            "Description",
            if c.description.is_empty() {
                unit.to_string()
            } else {
                c.description.clone()
            },
        ),
        (
            "LoadState",
            if loaded { "loaded" } else { "not-found" }.to_string(),
        ),
        ("ActiveState", u.active.clone()),
        ("SubState", u.sub.clone()),
        ("Result", u.result.clone()),
        ("MainPID", main.to_string()),
        ("ExecMainPID", u.exec_main_pid.to_string()),
        (
            "ExecMainCode",
            match u.exec_main_code.as_str() {
                "exited" => "1",
                "killed" => "2",
                "dumped" => "3",
                _ => "0",
            }
            .to_string(),
        ),
        ("ExecMainStatus", u.exec_main_status.to_string()),
        ("NRestarts", u.n_restarts.to_string()),
        (
            "FragmentPath",
            if file.exists() {
                file.display().to_string()
            } else {
                String::new()
            },
        ),
        (
            "UnitFileState",
            if en == "not-found" {
                String::new()
            } else {
                en.to_string()
            },
        ),
        (
            "NeedDaemonReload",
            if need_reload(paths, unit, u) {
                "yes"
            } else {
                "no"
            }
            .to_string(),
        ),
        (
            "Type",
            match c.service_type {
                ServiceType::Simple => "simple",
                ServiceType::Exec => "exec",
                ServiceType::Oneshot => "oneshot",
                ServiceType::Other => "other",
            }
            .to_string(),
        ),
        ("User", c.user.clone().unwrap_or_default()),
        ("Group", c.group.clone().unwrap_or_default()),
        (
            "WorkingDirectory",
            c.working_directory
                .as_ref()
                .map(|w| w.0.clone())
                .unwrap_or_default(),
        ),
        ("KillMode", c.kill_mode.as_str().to_string()),
        ("KillSignal", (c.kill_signal as i32).to_string()),
        ("TimeoutStopUSec", fmt_timespan(c.timeout_stop)),
        (
            "Environment",
            c.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "EnvironmentFiles",
            c.environment_files
                .iter()
                .map(|(p, o)| format!("{p} (ignore_errors={})", if *o { "yes" } else { "no" }))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("InvocationID", u.invocation.to_string()),
    ]
}

fn show(ctx: &mut Ctx<'_>, units: &[String], props: &[String], value: bool) -> i32 {
    if units.is_empty() {
        let s = state::peek(ctx.paths);
        let list = [
            ("Version", "fake".to_string()),
            ("NNames", s.units.len().to_string()),
            ("DaemonReloadGeneration", s.generation.to_string()),
        ];
        for (k, v) in list {
            if props.is_empty() || props.iter().any(|p| p == k) {
                let _ = if value {
                    writeln!(ctx.out, "{v}")
                } else {
                    writeln!(ctx.out, "{k}={v}")
                };
            }
        }
        return 0;
    }
    for (i, unit) in units.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(ctx.out);
        }
        let u = refreshed(ctx, unit);
        let all = properties(ctx.paths, unit, &u);
        if props.is_empty() {
            for (k, v) in &all {
                let _ = if value {
                    writeln!(ctx.out, "{v}")
                } else {
                    writeln!(ctx.out, "{k}={v}")
                };
            }
        } else {
            for p in props {
                if let Some((k, v)) = all.iter().find(|(k, _)| k == p) {
                    let _ = if value {
                        writeln!(ctx.out, "{v}")
                    } else {
                        writeln!(ctx.out, "{k}={v}")
                    };
                }
            }
        }
    }
    0
}

fn reset_failed(ctx: &mut Ctx<'_>, units: &[String]) -> Result<i32, SystemctlError> {
    let mut l = state::lock(ctx.paths)?;
    let names: Vec<String> = if units.is_empty() {
        l.state.units.keys().cloned().collect()
    } else {
        units.to_vec()
    };
    for n in names {
        let u = l.unit(&n);
        if u.active == "failed" {
            u.set("inactive", "dead");
            u.result = "success".into();
        }
        u.n_restarts = 0;
        ctx.journal(ctx.entry(&n, "reset-failed"));
    }
    l.save()?;
    Ok(0)
}

fn status(ctx: &mut Ctx<'_>, units: &[String]) -> i32 {
    let mut code = 0;
    for unit in units {
        let u = refreshed(ctx, unit);
        let props: BTreeMap<&str, String> = properties(ctx.paths, unit, &u).into_iter().collect();
        if props.get("LoadState").map(String::as_str) == Some("not-found") {
            let _ = writeln!(ctx.err, "Unit {unit} could not be found.");
            code = 4;
            continue;
        }
        let get = |k: &str| props.get(k).cloned().unwrap_or_default();
        let dot = if u.active == "active" {
            "\u{25cf}"
        } else {
            "\u{25cb}"
        };
        let _ = writeln!(ctx.out, "{dot} {unit} - {}", get("Description"));
        let _ = writeln!(
            ctx.out,
            "     Loaded: loaded ({}; {})",
            get("FragmentPath"),
            get("UnitFileState")
        );
        let mut active = format!("{} ({})", u.active, u.sub);
        if u.active == "failed" {
            active.push_str(&format!(" (Result: {})", u.result));
        }
        let _ = writeln!(ctx.out, "     Active: {active}");
        if get("MainPID") != "0" {
            let _ = writeln!(ctx.out, "   Main PID: {}", get("MainPID"));
        } else if !u.exec_main_code.is_empty() {
            let _ = writeln!(
                ctx.out,
                "   Main PID: {} (code={}, status={})",
                u.exec_main_pid, u.exec_main_code, u.exec_main_status
            );
        }
        if u.active != "active" && code == 0 {
            code = 3;
        }
    }
    code
}

fn cat(ctx: &mut Ctx<'_>, units: &[String]) -> i32 {
    let mut code = 0;
    for unit in units {
        let file = ctx.paths.unit_file(unit);
        match fs::read_to_string(&file) {
            Ok(t) => {
                let _ = writeln!(ctx.out, "# {}", file.display());
                let _ = write!(ctx.out, "{t}");
                let dropins = ctx.paths.unit_dir.join(format!("{unit}.d"));
                let mut files: Vec<PathBuf> = fs::read_dir(&dropins)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                            .collect()
                    })
                    .unwrap_or_default();
                files.sort();
                for f in files {
                    if let Ok(t) = fs::read_to_string(&f) {
                        let _ = writeln!(ctx.out, "\n# {}", f.display());
                        let _ = write!(ctx.out, "{t}");
                    }
                }
            }
            Err(_) => {
                let _ = writeln!(ctx.err, "No files found for {unit}.");
                code = 1;
            }
        }
    }
    code
}

fn list_units(ctx: &mut Ctx<'_>) -> i32 {
    let s = state::peek(ctx.paths);
    for (name, u) in &s.units {
        let _ = writeln!(ctx.out, "{name} loaded {} {}", u.active, u.sub);
    }
    0
}

/// Reads the journal of a unit's filesystem root as seen from outside (`root` = `/` inside).
pub fn read_journal_under(root: &Path) -> io::Result<Vec<JournalEntry>> {
    read_journal(&Paths::under(root).journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cli_parsing() {
        let c = parse_cli(&s(&["kill", "-s", "USR1", "--kill-whom=main", "web"])).unwrap();
        assert_eq!((c.verb.as_str(), c.units.clone()), ("kill", s(&["web"])));
        assert_eq!(c.signal.as_deref(), Some("USR1"));
        assert_eq!(c.kill_whom.as_deref(), Some("main"));
        let c = parse_cli(&s(&[
            "show",
            "web",
            "-p",
            "ActiveState,MainPID",
            "--property=NRestarts",
            "--value",
        ]))
        .unwrap();
        assert_eq!(c.properties, s(&["ActiveState", "MainPID", "NRestarts"]));
        assert!(c.value);
        let c = parse_cli(&s(&["kill", "--signal=SIGHUP", "--kill-who", "all", "x"])).unwrap();
        assert_eq!(c.signal.as_deref(), Some("SIGHUP"));
        assert_eq!(c.kill_whom.as_deref(), Some("all"));
        assert!(parse_cli(&s(&["start", "--bogus", "x"])).is_err());
        assert!(parse_cli(&s(&["start", "-Z", "x"])).is_err());
        assert!(parse_cli(&s(&["kill", "-s"])).is_err());
        let c = parse_cli(&s(&["is-active", "--quiet", "x"])).unwrap();
        assert!(c.quiet);
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("web").as_deref(), Some("web.service"));
        assert_eq!(unit_name("web.service").as_deref(), Some("web.service"));
        assert_eq!(unit_name("a.timer").as_deref(), Some("a.timer"));
        assert_eq!(unit_name("../x"), None);
        assert_eq!(unit_name(""), None);
    }

    #[test]
    fn timespan_format() {
        assert_eq!(fmt_timespan(Some(Duration::from_secs(90))), "1min 30s");
        assert_eq!(fmt_timespan(Some(Duration::from_millis(1500))), "1500ms");
        assert_eq!(fmt_timespan(None), "infinity");
    }
}
