//! The fake systemctl on real processes, inside private mount namespaces.
//!
//! This test binary has its own `main` (`harness = false`): invoked as `systemctl` (argv[0]
//! basename, as the simulator does through a symlink) it is the fake systemctl; otherwise it
//! runs the tests below and prints a libtest-style summary. Every systemctl call runs in a
//! fresh `unshare --mount` namespace where per-test directories are bind-mounted at
//! `/etc/systemd/system`, `/run`, `/var/log`, `/etc/passwd` and `/etc/group`, so the host's
//! real files are never touched and each test is its own "machine".

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fake_systemd::{read_journal, JournalEntry, State};
use release_fixtures::tarball::{ReleaseSpec, TarballCache, Variant};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let name = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    if name == "systemctl" {
        std::process::exit(fake_systemd::main(&argv[1..]));
    }
    if name == "journalctl" {
        std::process::exit(fake_systemd::journalctl::main(&argv[1..]));
    }
    run_tests(&argv[1..]);
}

type TestFn = fn();

const TESTS: &[(&str, TestFn)] = &[
    ("start_show_stop_real_process", start_show_stop_real_process),
    ("restart_and_try_restart", restart_and_try_restart),
    ("kill_signals_main_or_all", kill_signals_main_or_all),
    (
        "reload_runs_exec_reload_with_mainpid",
        reload_runs_exec_reload_with_mainpid,
    ),
    (
        "stop_escalates_to_sigkill_after_timeout",
        stop_escalates_to_sigkill_after_timeout,
    ),
    ("stop_timeout_is_capped", stop_timeout_is_capped),
    ("user_drops_privileges", user_drops_privileges),
    (
        "environment_files_optional_and_required",
        environment_files_optional_and_required,
    ),
    ("enable_disable_and_now", enable_disable_and_now),
    ("daemon_reload_semantics", daemon_reload_semantics),
    (
        "exit_status_and_restart_policy",
        exit_status_and_restart_policy,
    ),
    ("exec_start_pre_must_succeed", exec_start_pre_must_succeed),
    (
        "unknown_units_verbs_and_options",
        unknown_units_verbs_and_options,
    ),
    (
        "fake_concourse_worker_lands_and_stops",
        fake_concourse_worker_lands_and_stops,
    ),
    (
        "signal_deaths_and_restart_on_failure",
        signal_deaths_and_restart_on_failure,
    ),
    (
        "stop_aborts_then_kills_the_main_process_only",
        stop_aborts_then_kills_the_main_process_only,
    ),
    (
        "a_stop_is_never_restarted_whatever_the_exit",
        a_stop_is_never_restarted_whatever_the_exit,
    ),
    (
        "journalctl_shows_each_main_process_output",
        journalctl_shows_each_main_process_output,
    ),
    (
        "load_credential_gives_the_service_user_a_read_only_copy",
        load_credential_gives_the_service_user_a_read_only_copy,
    ),
    (
        "a_reused_main_pid_is_never_signalled",
        a_reused_main_pid_is_never_signalled,
    ),
];

fn run_tests(args: &[String]) {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--list") {
        for (n, _) in TESTS {
            println!("{n}: test");
        }
        return;
    }
    let selected: Vec<&(&str, TestFn)> = TESTS
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    let filtered_out = TESTS.len() - selected.len();
    if !Path::new("/etc/systemd/system").is_dir() {
        eprintln!("fixtures_systemctl needs /etc/systemd/system to exist as a bind-mount target");
        std::process::exit(101);
    }
    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let threads: usize = args
        .iter()
        .find_map(|a| {
            a.strip_prefix("--test-threads=")
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(4);
    let queue = std::sync::Mutex::new(selected.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().next();
                let Some((name, f)) = next else { break };
                let ok = std::panic::catch_unwind(f).is_ok();
                println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
                results.lock().unwrap().push((*name, ok));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    let passed = results.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for f in &failed {
            println!("    {f}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------------------------------
// Sandbox: one simulated machine per test

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
concourse:x:999:998::/var/lib/concourse:/bin/false\n";
const GROUP: &str = "root:x:0:\nconcourse:x:998:\nextra:x:997:concourse\n";

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("fake-systemctl-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        for d in ["units", "run", "log", "bin", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("passwd"), PASSWD).unwrap();
        std::fs::write(root.join("group"), GROUP).unwrap();
        for d in [&root, &root.join("bin"), &root.join("work")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(root.join("log"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let exe = std::env::current_exe().unwrap();
        std::os::unix::fs::symlink(&exe, root.join("bin/systemctl")).unwrap();
        std::os::unix::fs::symlink(&exe, root.join("bin/journalctl")).unwrap();
        Sandbox { _dir: dir, root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write_unit(&self, name: &str, text: &str) {
        std::fs::write(self.path("units").join(name), text).unwrap();
    }

    /// A script under the sandbox (visible at the same path inside the namespace).
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path("bin").join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn systemctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.tool("systemctl", args, env)
    }

    fn journalctl(&self, args: &[&str]) -> Output {
        self.tool("journalctl", args, &[])
    }

    /// Runs `bin/<tool>` in the sandbox's mount namespace.
    fn tool(&self, tool: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let r = self.root.display().to_string();
        let setup = format!(
            "set -e; mount --bind '{r}/units' /etc/systemd/system; mount --bind '{r}/run' /run; \
             mount --bind '{r}/log' /var/log; mount --bind '{r}/passwd' /etc/passwd; \
             mount --bind '{r}/group' /etc/group; exec '{r}/bin/{tool}' \"$@\""
        );
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &setup,
            "sh",
        ])
        .args(args)
        .env("FAKE_SYSTEMCTL_MAX_STOP_SECS", "5");
        for (k, v) in env {
            c.env(k, v);
        }
        let start = Instant::now();
        let out = c.output().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "systemctl {args:?} took {:?}",
            start.elapsed()
        );
        out
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        self.systemctl_env(args, &[])
    }

    /// Runs systemctl and asserts the exit code; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.systemctl(args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "systemctl {args:?}: {}",
            show_output(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn prop(&self, unit: &str, p: &str) -> String {
        self.ok(&["show", unit, "-p", p, "--value"])
            .trim()
            .to_string()
    }

    fn journal(&self) -> Vec<JournalEntry> {
        read_journal(&self.path("log/fake-systemctl.journal")).unwrap()
    }

    fn actions(&self, unit: &str) -> Vec<String> {
        self.journal()
            .into_iter()
            .filter(|e| e.unit == unit)
            .map(|e| e.action)
            .collect()
    }

    fn unit_log(&self, unit: &str) -> String {
        std::fs::read_to_string(self.path("log").join(format!("{unit}.log"))).unwrap_or_default()
    }

    fn state(&self) -> State {
        std::fs::read(self.path("run/fake-systemd/state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kill whatever a failed test left running: services (their process groups) and
        // supervisors.
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for u in self.state().units.values() {
            if u.supervisor_pid > 0 {
                let _ = kill(Pid::from_raw(u.supervisor_pid as i32), Signal::SIGKILL);
            }
            for pid in [u.main_pid, u.exec_main_pid] {
                if pid > 0 {
                    let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }
}

fn show_output(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let st = s.rsplit(')').next().unwrap_or("").trim_start();
            !st.starts_with('Z')
        })
        .unwrap_or(false)
}

/// How long a wait gives up after. Only a broken fake takes that long: the whole suite on
/// 2 cores stretched a wait of a tenth of a second to over 10 s.
const PATIENCE: Duration = Duration::from_secs(60);

/// The bound on a stop that must not wait out a timeout (systemd's default of 90 s, a unit's
/// `1h`, or none at all): far above what a loaded machine adds, far below what it bounds.
const PROMPT: Duration = Duration::from_secs(30);

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A service that reports itself in its log and records signals it receives.
fn sleeper(sb: &Sandbox, name: &str) -> PathBuf {
    sb.script(
        name,
        r#"for s in HUP USR1 USR2; do trap "echo got $s" $s; done
echo "started pid=$$ uid=$(id -u) gid=$(id -g) groups=$(id -G) user=${USER:-} home=${HOME:-} cwd=$PWD args=$*"
env | sort | sed 's/^/env: /'
echo env-done
while :; do sleep 0.2 & wait $!; done
"#,
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

fn start_show_stop_real_process() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "demo.service",
        &format!(
            "[Unit]\nDescription=Demo\n[Service]\nType=simple\nExecStart={} one \"two words\"\n",
            bin.display()
        ),
    );
    assert_eq!(sb.systemctl(&["is-active", "demo"]).status.code(), Some(3));
    assert_eq!(sb.ok(&["start", "demo"]), "");
    assert_eq!(sb.ok(&["is-active", "demo.service"]).trim(), "active");
    let quiet = sb.systemctl(&["is-active", "--quiet", "demo"]);
    assert_eq!((quiet.status.code(), quiet.stdout.len()), (Some(0), 0));
    let pid: u32 = sb.prop("demo", "MainPID").parse().unwrap();
    assert!(pid > 0 && alive(pid));
    let log = wait_for("service output", || {
        let l = sb.unit_log("demo.service");
        l.contains("started").then_some(l)
    });
    assert!(log.contains(&format!("started pid={pid} uid=0")), "{log}");
    assert!(log.contains("args=one two words"), "{log}");
    assert!(log.contains("cwd=/\n") || log.contains("cwd=/ "), "{log}");
    assert!(log.contains("env: INVOCATION_ID="), "{log}");
    assert!(
        !log.contains("env: FAKE_SYSTEMCTL_MAX_STOP_SECS"),
        "clean environment: {log}"
    );
    let show = sb.ok(&[
        "show",
        "demo",
        "-p",
        "ActiveState,SubState",
        "-p",
        "MainPID",
        "-p",
        "FragmentPath",
    ]);
    assert_eq!(
        show,
        format!(
            "ActiveState=active\nSubState=running\nMainPID={pid}\nFragmentPath=/etc/systemd/system/demo.service\n"
        )
    );
    let status = sb.systemctl(&["status", "demo"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&status.stdout).contains("Active: active (running)"));
    // Starting again is a no-op.
    sb.ok(&["start", "demo"]);
    assert_eq!(sb.prop("demo", "MainPID"), pid.to_string());

    let t0 = Instant::now();
    sb.ok(&["stop", "demo"]);
    assert!(t0.elapsed() < PROMPT);
    assert!(!alive(pid), "main process gone after stop");
    let o = sb.systemctl(&["is-active", "demo"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "inactive");
    assert_eq!(sb.prop("demo", "MainPID"), "0");
    assert_eq!(sb.prop("demo", "Result"), "success");
    assert_eq!(sb.systemctl(&["status", "demo"]).status.code(), Some(3));
    let cat = sb.ok(&["cat", "demo"]);
    assert!(cat.starts_with("# /etc/systemd/system/demo.service\n[Unit]"));

    let actions = sb.actions("demo.service");
    for a in [
        "load", "start", "started", "stop", "signal", "exited", "stopped",
    ] {
        assert!(
            actions.contains(&a.to_string()),
            "{a} missing from {actions:?}"
        );
    }
    let j = sb.journal();
    let sig = j.iter().find(|e| e.action == "signal").unwrap();
    assert_eq!(sig.signal.as_deref(), Some("SIGTERM"));
    assert!(j
        .iter()
        .any(|e| e.action == "call" && e.argv == ["stop", "demo"]));
    let started = j.iter().find(|e| e.action == "started").unwrap();
    assert_eq!(started.pid, Some(pid));
}

fn restart_and_try_restart() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "r.service",
        &format!("[Service]\nExecStart={}\n", bin.display()),
    );
    // try-restart of an inactive unit does nothing.
    sb.ok(&["try-restart", "r"]);
    assert_eq!(sb.systemctl(&["is-active", "r"]).status.code(), Some(3));
    sb.ok(&["restart", "r"]);
    let p1: u32 = sb.prop("r", "MainPID").parse().unwrap();
    sb.ok(&["restart", "r"]);
    let p2: u32 = sb.prop("r", "MainPID").parse().unwrap();
    assert_ne!(p1, p2);
    assert!(!alive(p1) && alive(p2));
    sb.ok(&["try-restart", "r"]);
    let p3: u32 = sb.prop("r", "MainPID").parse().unwrap();
    assert_ne!(p2, p3);
    assert_eq!(
        sb.prop("r", "NRestarts"),
        "0",
        "manual restarts are not counted"
    );
    sb.ok(&["stop", "r"]);
    assert!(!alive(p3));
}

fn kill_signals_main_or_all() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "k.service",
        &format!("[Service]\nExecStart={}\n", bin.display()),
    );
    sb.ok(&["start", "k"]);
    let pid: u32 = sb.prop("k", "MainPID").parse().unwrap();
    wait_for("started", || {
        sb.unit_log("k.service").contains("started").then_some(())
    });
    sb.ok(&["kill", "-s", "USR1", "--kill-whom=main", "k"]);
    wait_for("USR1", || {
        sb.unit_log("k.service").contains("got USR1").then_some(())
    });
    sb.ok(&[
        "kill",
        "--signal=SIGUSR2",
        "--kill-who",
        "main",
        "k.service",
    ]);
    wait_for("USR2", || {
        sb.unit_log("k.service").contains("got USR2").then_some(())
    });
    sb.ok(&["kill", "-s", "HUP", "k"]); // whom=all by default
    wait_for("HUP", || {
        sb.unit_log("k.service").contains("got HUP").then_some(())
    });
    assert!(alive(pid));
    let kills: Vec<_> = sb
        .journal()
        .into_iter()
        .filter(|e| e.action == "kill")
        .collect();
    assert_eq!(kills.len(), 3);
    assert_eq!(kills[0].signal.as_deref(), Some("SIGUSR1"));
    assert!(kills[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("kill-whom=main"));
    assert!(kills[2]
        .detail
        .as_deref()
        .unwrap()
        .contains("kill-whom=all"));
    // kill -s TERM --kill-whom=all ends it; the unit is then inactive (SIGTERM is clean).
    sb.ok(&["kill", "-s", "TERM", "k"]);
    wait_for("exit", || (!alive(pid)).then_some(()));
    wait_for("inactive", || {
        (sb.prop("k", "ActiveState") == "inactive").then_some(())
    });
    assert_eq!(sb.prop("k", "ExecMainCode"), "2");
    assert_eq!(sb.prop("k", "ExecMainStatus"), "15");
    let o = sb.systemctl(&["kill", "-s", "USR1", "--kill-whom=main", "k"]);
    assert_eq!(o.status.code(), Some(1), "no main process to kill");
    assert_eq!(
        sb.systemctl(&["kill", "-s", "NOPE", "k"]).status.code(),
        Some(1)
    );
}

fn reload_runs_exec_reload_with_mainpid() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "web.service",
        &format!(
            "[Service]\nExecStart={}\nExecReload=/bin/kill -HUP $MAINPID\n",
            bin.display()
        ),
    );
    sb.write_unit(
        "noreload.service",
        &format!("[Service]\nExecStart={}\n", bin.display()),
    );
    let o = sb.systemctl(&["reload", "web"]);
    assert_eq!(o.status.code(), Some(1), "inactive unit cannot reload");
    sb.ok(&["start", "web"]);
    wait_for("started", || {
        sb.unit_log("web.service").contains("started").then_some(())
    });
    sb.ok(&["reload", "web"]);
    wait_for("HUP", || {
        sb.unit_log("web.service").contains("got HUP").then_some(())
    });
    let r = sb
        .journal()
        .into_iter()
        .find(|e| e.action == "reload" && e.status.is_some())
        .unwrap();
    let pid = sb.prop("web", "MainPID");
    assert_eq!(
        r.detail.as_deref(),
        Some(format!("/bin/kill -HUP {pid}").as_str())
    );
    assert_eq!(r.status, Some(0));
    sb.ok(&["start", "noreload"]);
    assert_eq!(sb.systemctl(&["reload", "noreload"]).status.code(), Some(1));
    sb.ok(&["stop", "web", "noreload"]);
}

fn stop_escalates_to_sigkill_after_timeout() {
    let sb = Sandbox::new();
    let bin = sb.script(
        "stubborn",
        "trap '' TERM\necho ready\nwhile :; do sleep 0.1; done\n",
    );
    sb.write_unit(
        "stubborn.service",
        &format!("[Service]\nExecStart={}\nTimeoutStopSec=1\n", bin.display()),
    );
    sb.ok(&["start", "stubborn"]);
    let pid: u32 = sb.prop("stubborn", "MainPID").parse().unwrap();
    wait_for("ready", || {
        sb.unit_log("stubborn.service")
            .contains("ready")
            .then_some(())
    });
    let t0 = Instant::now();
    sb.ok(&["stop", "stubborn"]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(950), "took {took:?}");
    assert!(took < PROMPT, "took {took:?}");
    assert!(!alive(pid));
    assert_eq!(sb.prop("stubborn", "ActiveState"), "failed");
    assert_eq!(sb.prop("stubborn", "Result"), "timeout");
    let j = sb.journal();
    assert!(j.iter().any(|e| e.action == "timeout"));
    let esc: Vec<_> = j.iter().filter(|e| e.action == "escalate").collect();
    assert!(esc
        .iter()
        .any(|e| e.pid == Some(pid) && e.signal.as_deref() == Some("SIGKILL")));
    // reset-failed clears it.
    sb.ok(&["reset-failed", "stubborn"]);
    assert_eq!(sb.prop("stubborn", "ActiveState"), "inactive");
}

fn stop_timeout_is_capped() {
    let sb = Sandbox::new();
    let bin = sb.script(
        "stubborn",
        "trap '' TERM USR2\necho ready\nwhile :; do sleep 0.1; done\n",
    );
    sb.write_unit(
        "capped.service",
        &format!(
            "[Service]\nExecStart={}\nTimeoutStopSec=1h\nKillSignal=SIGUSR2\nKillMode=process\n",
            bin.display()
        ),
    );
    sb.ok(&["start", "capped"]);
    assert_eq!(sb.prop("capped", "TimeoutStopUSec"), "1h");
    let pid: u32 = sb.prop("capped", "MainPID").parse().unwrap();
    wait_for("ready", || {
        sb.unit_log("capped.service")
            .contains("ready")
            .then_some(())
    });
    let t0 = Instant::now();
    let o = sb.systemctl_env(
        &["stop", "capped"],
        &[("FAKE_SYSTEMCTL_MAX_STOP_SECS", "0.5")],
    );
    assert_eq!(o.status.code(), Some(0));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < PROMPT,
        "{took:?}"
    );
    assert!(!alive(pid));
    let j = sb.journal();
    let sig = j.iter().find(|e| e.action == "signal").unwrap();
    assert_eq!(sig.signal.as_deref(), Some("SIGUSR2"));
    assert!(j.iter().any(|e| e.action == "escalate"));
}

fn user_drops_privileges() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "web.service",
        &format!(
            "[Service]\nUser=concourse\nGroup=concourse\nWorkingDirectory={}\nExecStart={}\n",
            sb.path("work").display(),
            bin.display()
        ),
    );
    sb.ok(&["start", "web"]);
    let log = wait_for("started", || {
        let l = sb.unit_log("web.service");
        l.contains("env-done").then_some(l)
    });
    assert!(log.contains("uid=999 gid=998"), "{log}");
    assert!(
        log.contains("groups=998 997") || log.contains("groups=997 998"),
        "{log}"
    );
    assert!(
        log.contains("user=concourse home=/var/lib/concourse"),
        "{log}"
    );
    assert!(
        log.contains(&format!("cwd={}", sb.path("work").display())),
        "{log}"
    );
    assert!(log.contains("env: LOGNAME=concourse"), "{log}");
    let pid: u32 = sb.prop("web", "MainPID").parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("999")));
    assert_eq!(sb.prop("web", "User"), "concourse");
    sb.ok(&["stop", "web"]);

    // An unknown user: the start job of a simple service succeeds, the unit fails 217/USER.
    sb.write_unit(
        "nouser.service",
        &format!("[Service]\nUser=nobody-here\nExecStart={}\n", bin.display()),
    );
    sb.ok(&["start", "nouser"]);
    assert_eq!(sb.prop("nouser", "ActiveState"), "failed");
    assert_eq!(sb.prop("nouser", "ExecMainStatus"), "217");
    // Type=exec reports it.
    sb.write_unit(
        "nouser2.service",
        &format!(
            "[Service]\nType=exec\nUser=nobody-here\nExecStart={}\n",
            bin.display()
        ),
    );
    assert_eq!(sb.systemctl(&["start", "nouser2"]).status.code(), Some(1));
}

fn environment_files_optional_and_required() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    let envfile = sb.path("work/config.env");
    std::fs::write(
        &envfile,
        "# managed\nCONCOURSE_BIND_PORT=8080\nCONCOURSE_EXTERNAL_URL=\"http://10.0.0.5:8080\"\n\
         CONCOURSE_ADD_LOCAL_USER='admin:pa ss'\nFROM_UNIT=overridden\n  SPACED = value with spaces  \n",
    )
    .unwrap();
    sb.write_unit(
        "envy.service",
        &format!(
            "[Service]\nEnvironment=FROM_UNIT=unit \"QUOTED=a b\"\nEnvironmentFile=-/nonexistent/optional.env\n\
             EnvironmentFile={}\nExecStart={}\n",
            envfile.display(),
            bin.display()
        ),
    );
    sb.ok(&["start", "envy"]);
    let log = wait_for("env", || {
        let l = sb.unit_log("envy.service");
        l.contains("env-done").then_some(l)
    });
    for want in [
        "env: CONCOURSE_BIND_PORT=8080\n",
        "env: CONCOURSE_EXTERNAL_URL=http://10.0.0.5:8080\n",
        "env: CONCOURSE_ADD_LOCAL_USER=admin:pa ss\n",
        "env: FROM_UNIT=overridden\n",
        "env: QUOTED=a b\n",
        "env: SPACED=value with spaces\n",
        "env: PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\n",
    ] {
        assert!(log.contains(want), "missing {want:?} in {log}");
    }
    sb.ok(&["stop", "envy"]);

    // A required file that is missing fails the start job.
    sb.write_unit(
        "strict.service",
        &format!(
            "[Service]\nEnvironmentFile=/nonexistent/required.env\nExecStart={}\n",
            bin.display()
        ),
    );
    let o = sb.systemctl(&["start", "strict"]);
    assert_eq!(o.status.code(), Some(1), "{}", show_output(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Job for strict.service failed"));
    assert_eq!(sb.prop("strict", "ActiveState"), "failed");
    assert_eq!(sb.prop("strict", "Result"), "resources");
    assert!(sb.journal().iter().any(|e| e.unit == "strict.service"
        && e.action == "start-failed"
        && e.detail.as_deref().unwrap_or("").contains("required.env")));
}

fn enable_disable_and_now() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "w.service",
        &format!(
            "[Service]\nExecStart={}\n[Install]\nWantedBy=multi-user.target\n",
            bin.display()
        ),
    );
    sb.write_unit(
        "static.service",
        &format!("[Service]\nExecStart={}\n", bin.display()),
    );
    let o = sb.systemctl(&["is-enabled", "w"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(1), "disabled")
    );
    let o = sb.systemctl(&["enable", "w"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "Created symlink /etc/systemd/system/multi-user.target.wants/w.service \u{2192} /etc/systemd/system/w.service."
    ));
    let link = sb.path("units/multi-user.target.wants/w.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/systemd/system/w.service")
    );
    assert_eq!(sb.ok(&["is-enabled", "w"]).trim(), "enabled");
    assert_eq!(
        sb.systemctl(&["is-active", "w"]).status.code(),
        Some(3),
        "enable alone does not start"
    );
    sb.ok(&["disable", "w"]);
    assert!(link.symlink_metadata().is_err());
    sb.ok(&["enable", "--now", "w"]);
    assert_eq!(sb.ok(&["is-active", "w"]).trim(), "active");
    let pid: u32 = sb.prop("w", "MainPID").parse().unwrap();
    sb.ok(&["disable", "--now", "w"]);
    assert!(!alive(pid));
    assert_eq!(sb.systemctl(&["is-enabled", "w"]).status.code(), Some(1));
    assert_eq!(sb.ok(&["is-enabled", "static"]).trim(), "static");
    let o = sb.systemctl(&["enable", "static"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no installation config"));
    assert_eq!(sb.systemctl(&["enable", "missing"]).status.code(), Some(1));
    // enable and disable imply a daemon-reload.
    assert!(
        sb.journal()
            .iter()
            .filter(|e| e.action == "daemon-reload")
            .count()
            >= 4
    );
}

fn daemon_reload_semantics() {
    let sb = Sandbox::new();
    let a = sb.script(
        "a",
        "echo variant-a; while :; do sleep 0.2 & wait $!; done\n",
    );
    let b = sb.script(
        "b",
        "echo variant-b; while :; do sleep 0.2 & wait $!; done\n",
    );
    sb.write_unit(
        "dr.service",
        &format!("[Service]\nExecStart={}\n", a.display()),
    );
    sb.ok(&["start", "dr"]);
    wait_for("a", || {
        sb.unit_log("dr.service")
            .contains("variant-a")
            .then_some(())
    });
    sb.ok(&["stop", "dr"]);
    // Change the file without daemon-reload: the old configuration is used, with a warning.
    sb.write_unit(
        "dr.service",
        &format!("[Service]\nExecStart={}\n", b.display()),
    );
    assert_eq!(sb.prop("dr", "NeedDaemonReload"), "yes");
    let o = sb.systemctl(&["start", "dr"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("changed on disk. Run 'systemctl daemon-reload'"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!sb.unit_log("dr.service").contains("variant-b"));
    sb.ok(&["stop", "dr"]);
    assert!(sb
        .journal()
        .iter()
        .any(|e| e.action == "warning" && e.unit == "dr.service"));
    let gen0 = sb.state().generation;
    sb.ok(&["daemon-reload"]);
    assert_eq!(sb.state().generation, gen0 + 1);
    assert_eq!(sb.prop("dr", "NeedDaemonReload"), "no");
    let o = sb.systemctl(&["restart", "dr"]);
    assert!(o.stderr.is_empty(), "{}", show_output(&o));
    wait_for("b", || {
        sb.unit_log("dr.service")
            .contains("variant-b")
            .then_some(())
    });
    // Drop-ins are part of the unit.
    std::fs::create_dir_all(sb.path("units/dr.service.d")).unwrap();
    std::fs::write(
        sb.path("units/dr.service.d/10-env.conf"),
        "[Service]\nEnvironment=DROPIN=yes\n",
    )
    .unwrap();
    assert_eq!(sb.prop("dr", "NeedDaemonReload"), "yes");
    sb.ok(&["daemon-reload"]);
    assert_eq!(sb.prop("dr", "Environment"), "DROPIN=yes");
    sb.ok(&["stop", "dr"]);
}

fn exit_status_and_restart_policy() {
    let sb = Sandbox::new();
    let quitter = sb.script("quitter", "echo run; sleep 0.2; exit 3\n");
    sb.write_unit(
        "q.service",
        &format!("[Service]\nExecStart={}\n", quitter.display()),
    );
    sb.ok(&["start", "q"]);
    wait_for("failed", || {
        (sb.prop("q", "ActiveState") == "failed").then_some(())
    });
    assert_eq!(sb.prop("q", "ExecMainStatus"), "3");
    assert_eq!(sb.prop("q", "ExecMainCode"), "1");
    assert_eq!(sb.prop("q", "Result"), "exit-code");
    let o = sb.systemctl(&["is-active", "q"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(3), "failed")
    );
    assert_eq!(sb.systemctl(&["is-failed", "q"]).status.code(), Some(0));
    let e = sb
        .journal()
        .into_iter()
        .find(|e| e.action == "exited")
        .unwrap();
    assert_eq!(e.status, Some(3));

    // Restart=on-failure brings it back, counting NRestarts.
    sb.write_unit(
        "rq.service",
        &format!(
            "[Service]\nExecStart={}\nRestart=on-failure\nRestartSec=100ms\n",
            quitter.display()
        ),
    );
    sb.ok(&["start", "rq"]);
    wait_for("restarts", || {
        (sb.prop("rq", "NRestarts").parse::<u32>().unwrap_or(0) >= 2).then_some(())
    });
    assert!(sb
        .actions("rq.service")
        .contains(&"restart-scheduled".to_string()));
    sb.ok(&["stop", "rq"]);
    let n = sb.prop("rq", "NRestarts");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(sb.prop("rq", "NRestarts"), n, "no restart after stop");
    assert_ne!(sb.prop("rq", "ActiveState"), "active");

    // A clean exit is not restarted by on-failure, and leaves the unit inactive.
    let clean = sb.script("clean", "sleep 0.2; exit 0\n");
    sb.write_unit(
        "c.service",
        &format!(
            "[Service]\nExecStart={}\nRestart=on-failure\n",
            clean.display()
        ),
    );
    sb.ok(&["start", "c"]);
    wait_for("inactive", || {
        (sb.prop("c", "ActiveState") == "inactive").then_some(())
    });
    assert_eq!(sb.prop("c", "NRestarts"), "0");

    // A missing binary: 203/EXEC.
    sb.write_unit("nobin.service", "[Service]\nExecStart=/nonexistent/bin/x\n");
    sb.ok(&["start", "nobin"]);
    assert_eq!(sb.prop("nobin", "ActiveState"), "failed");
    assert_eq!(sb.prop("nobin", "ExecMainStatus"), "203");
}

fn exec_start_pre_must_succeed() {
    let sb = Sandbox::new();
    let bin = sleeper(&sb, "svc");
    let marker = sb.path("work/pre-ran");
    sb.write_unit(
        "pre.service",
        &format!(
            "[Service]\nExecStartPre=-/bin/false\nExecStartPre=/bin/touch {}\nExecStart={}\n",
            marker.display(),
            bin.display()
        ),
    );
    sb.ok(&["start", "pre"]);
    assert!(marker.exists());
    sb.ok(&["stop", "pre"]);
    sb.write_unit(
        "badpre.service",
        &format!(
            "[Service]\nExecStartPre=/bin/false\nExecStart={}\n",
            bin.display()
        ),
    );
    let o = sb.systemctl(&["start", "badpre"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(sb.prop("badpre", "ActiveState"), "failed");
    assert_eq!(sb.prop("badpre", "MainPID"), "0");
    assert!(sb
        .actions("badpre.service")
        .contains(&"exec-start-pre".to_string()));
}

fn unknown_units_verbs_and_options() {
    let sb = Sandbox::new();
    let o = sb.systemctl(&["start", "ghost"]);
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Failed to start ghost.service: Unit ghost.service not found."
    );
    assert_eq!(sb.systemctl(&["stop", "ghost"]).status.code(), Some(5));
    assert_eq!(sb.systemctl(&["restart", "ghost"]).status.code(), Some(5));
    let o = sb.systemctl(&["is-active", "ghost"]);
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).trim()),
        (Some(3), "inactive")
    );
    assert_eq!(
        sb.systemctl(&["is-enabled", "ghost"]).status.code(),
        Some(1)
    );
    assert_eq!(sb.systemctl(&["status", "ghost"]).status.code(), Some(4));
    assert_eq!(sb.prop("ghost", "LoadState"), "not-found");
    assert_eq!(sb.systemctl(&["cat", "ghost"]).status.code(), Some(1));
    let o = sb.systemctl(&["frobnicate", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Unknown command verb"));
    let o = sb.systemctl(&["start", "--bogus", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unrecognized option '--bogus'"));
    assert_eq!(sb.systemctl(&["start"]).status.code(), Some(1));
    assert_eq!(sb.systemctl(&["start", "../etc"]).status.code(), Some(1));
    // Garbage unit files never crash it.
    sb.write_unit(
        "junk.service",
        "\u{1}[[[\n=\\\nExecStart=\"\n[Service]\nExecStart=\nKillSignal=99\n",
    );
    let o = sb.systemctl(&["start", "junk"]);
    assert_eq!(o.status.code(), Some(1), "{}", show_output(&o));
    sb.ok(&["show", "junk"]);
    // Every call was journaled.
    let calls = sb
        .journal()
        .into_iter()
        .filter(|e| e.action == "call")
        .count();
    assert!(calls >= 14, "{calls}");
}

/// The fake `concourse` under the fake systemd: web's TSA, a worker that registers with
/// it, readiness in the journal, landing through `systemctl stop`, and the restart a
/// `systemctl kill` lets happen when the land fails (TSA gone: exit 1).
fn fake_concourse_worker_lands_and_stops() {
    let sb = Sandbox::new();
    let cache =
        TarballCache::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs")).unwrap();
    let t = cache
        .get(&ReleaseSpec::new("7.14.3", 1 << 20, Variant::Normal))
        .unwrap();
    let rel = sb.path("work/release");
    std::fs::create_dir_all(&rel).unwrap();
    assert!(Command::new("tar")
        .arg("-xzf")
        .arg(&t.path)
        .arg("-C")
        .arg(&rel)
        .status()
        .unwrap()
        .success());
    let bin = rel.join("concourse/bin/concourse");
    let work = sb.path("work");
    for k in ["tsa_key", "worker_key"] {
        let o = Command::new(&bin)
            .args(["generate-key", "-t", "ssh", "-f"])
            .arg(work.join(k))
            .env("FAKE_CONCOURSE_LOG", sb.path("log/fake-concourse.log"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show_output(&o));
    }
    std::fs::copy(work.join("worker_key.pub"), work.join("authorized")).unwrap();
    let db = work.join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join(".s.PGSQL.5432"), "").unwrap();
    let w = |p: &str| work.join(p).display().to_string();
    std::fs::write(
        work.join("web.env"),
        format!(
            // the fake refuses a web without main-team auth, like the real one
            "CONCOURSE_TSA_HOST_KEY={}\nCONCOURSE_TSA_AUTHORIZED_KEYS={}\nCONCOURSE_POSTGRES_HOST={}\nCONCOURSE_POSTGRES_DATABASE=concourse\nCONCOURSE_ADD_LOCAL_USER=admin:pw\nCONCOURSE_MAIN_TEAM_LOCAL_USER=admin\n",
            w("tsa_key"),
            w("authorized"),
            db.display()
        ),
    )
    .unwrap();
    std::fs::write(
        work.join("worker.env"),
        format!(
            // and a worker without its (required) work dir
            "CONCOURSE_TSA_HOST=127.0.0.1:2222\nCONCOURSE_TSA_PUBLIC_KEY={}\nCONCOURSE_TSA_WORKER_PRIVATE_KEY={}\nCONCOURSE_WORK_DIR={}\n",
            w("tsa_key.pub"),
            w("worker_key"),
            w("work")
        ),
    )
    .unwrap();
    sb.write_unit(
        "concourse-server.service",
        &format!(
            "[Service]\nEnvironmentFile={}\nExecStart={} web\nRestart=on-failure\n",
            w("web.env"),
            bin.display()
        ),
    );
    sb.write_unit(
        "concourse-worker.service",
        &format!(
            "[Service]\nUser=root\nEnvironmentFile={}\nExecStart={} worker\nRestart=on-failure\nRestartSec=100ms\nKillSignal=SIGUSR1\nKillMode=process\nTimeoutStopSec=5\n",
            w("worker.env"),
            bin.display()
        ),
    );
    std::fs::create_dir_all(sb.path("run/fake-concourse")).unwrap();
    std::fs::write(sb.path("run/fake-concourse/beacon-retry"), "0.2").unwrap();
    let log = sb.path("log/fake-concourse.log");
    let event = |pid: u32, event: &str| {
        release_fixtures::fake_concourse::read_log(&log)
            .unwrap()
            .into_iter()
            .find(|r| r.event == event && r.pid == pid)
    };
    let output = |unit: &str, pid: u32| {
        let o = sb.journalctl(&[
            &format!("_SYSTEMD_UNIT={unit}"),
            &format!("_PID={pid}"),
            "--output=cat",
            "--quiet",
        ]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    sb.ok(&["start", "concourse-server"]);
    let web: u32 = sb.prop("concourse-server", "MainPID").parse().unwrap();
    wait_for("web listening", || event(web, "listening"));
    assert!(output("concourse-server.service", web).contains("\"message\":\"tsa.listening\""));
    let start_worker = || {
        sb.ok(&["start", "concourse-worker"]);
        let pid: u32 = sb.prop("concourse-worker", "MainPID").parse().unwrap();
        wait_for("worker registered", || event(pid, "registered"));
        pid
    };
    let pid = start_worker();
    let start = event(pid, "start").unwrap();
    assert_eq!(start.exe_resolved, bin.display().to_string());
    assert!(output("concourse-worker.service", pid)
        .contains("\"message\":\"worker.beacon-runner.beacon.registered\""));
    // Land through the unit's stop (KillSignal=SIGUSR1): exit 0, never restarted.
    sb.ok(&["stop", "concourse-worker"]);
    assert!(event(pid, "landed").is_some());
    assert_eq!(sb.prop("concourse-worker", "ActiveState"), "inactive");
    assert_eq!(sb.prop("concourse-worker", "NRestarts"), "0");
    // With the TSA gone, a land signal sent with `systemctl kill` makes the worker exit 1,
    // and Restart=on-failure starts it again: a worker the sender believes landed.
    let pid = start_worker();
    sb.ok(&["stop", "concourse-server"]);
    wait_for("registration lost", || event(pid, "registration lost"));
    sb.ok(&["kill", "-s", "USR1", "--kill-whom=main", "concourse-worker"]);
    let again: u32 = wait_for("restarted", || {
        let p: u32 = sb.prop("concourse-worker", "MainPID").parse().unwrap_or(0);
        (p != 0 && p != pid).then_some(p)
    });
    assert!(event(pid, "drain failed").is_some());
    assert_eq!(sb.prop("concourse-worker", "NRestarts"), "1");
    // The same through `systemctl stop`: exit 1, but a stop is never restarted.
    wait_for("beacon running", || event(again, "tsa unreachable"));
    sb.ok(&["stop", "concourse-worker"]);
    assert!(event(again, "drain failed").is_some());
    assert_eq!(
        (
            sb.prop("concourse-worker", "ActiveState"),
            sb.prop("concourse-worker", "Result")
        ),
        ("failed".to_string(), "exit-code".to_string())
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(sb.prop("concourse-worker", "NRestarts"), "1");
}

/// Exit codes and signal deaths as `service_sigchld_event` and `service_shall_restart`
/// (`src/core/service.c`) treat them: a daemon dying by SIGHUP is clean and not restarted
/// by `Restart=on-failure`; a SIGKILL through `systemctl kill` is a failure and restarted.
fn signal_deaths_and_restart_on_failure() {
    let sb = Sandbox::new();
    let hup = sb.script("hup", "echo up; sleep 0.2; kill -HUP $$; sleep 5\n");
    sb.write_unit(
        "hup.service",
        &format!(
            "[Service]\nExecStart={}\nRestart=on-failure\nRestartSec=100ms\n",
            hup.display()
        ),
    );
    sb.ok(&["start", "hup"]);
    wait_for("dead by SIGHUP", || {
        (sb.prop("hup", "ExecMainStatus") == "1" && sb.prop("hup", "ActiveState") == "inactive")
            .then_some(())
    });
    assert_eq!(sb.prop("hup", "ExecMainCode"), "2");
    assert_eq!(sb.prop("hup", "Result"), "success");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(sb.prop("hup", "NRestarts"), "0");

    let bin = sleeper(&sb, "svc");
    sb.write_unit(
        "k.service",
        &format!(
            "[Service]\nExecStart={}\nRestart=on-failure\nRestartSec=100ms\n",
            bin.display()
        ),
    );
    sb.ok(&["start", "k"]);
    let pid: u32 = sb.prop("k", "MainPID").parse().unwrap();
    sb.ok(&["kill", "-s", "KILL", "--kill-whom=main", "k"]);
    let again: u32 = wait_for("restarted", || {
        let p: u32 = sb.prop("k", "MainPID").parse().unwrap_or(0);
        (p != 0 && p != pid).then_some(p)
    });
    assert_eq!(sb.prop("k", "NRestarts"), "1");
    assert!(alive(again));
    sb.ok(&["stop", "k"]);
}

/// `KillMode=process` with `TimeoutStopFailureMode=abort`: `KillSignal=`, then after
/// `TimeoutStopSec=` `WatchdogSignal=`, then after `TimeoutAbortSec=` SIGKILL, each to the
/// main process only: its children (a worker's build containers) live on.
fn stop_aborts_then_kills_the_main_process_only() {
    let sb = Sandbox::new();
    let bin = sb.script(
        "stubborn",
        "trap 'echo got USR1' USR1\ntrap 'echo got TERM' TERM\n\
         sleep 300 &\necho child=$!\nwhile :; do sleep 0.1; done\n",
    );
    sb.write_unit(
        "w.service",
        &format!(
            "[Service]\nExecStart={}\nKillSignal=SIGUSR1\nKillMode=process\nTimeoutStopSec=1\n\
             TimeoutStopFailureMode=abort\nWatchdogSignal=SIGTERM\nTimeoutAbortSec=1\n\
             Restart=on-failure\n",
            bin.display()
        ),
    );
    sb.ok(&["start", "w"]);
    let pid: u32 = sb.prop("w", "MainPID").parse().unwrap();
    let child: u32 = wait_for("child", || {
        sb.unit_log("w.service")
            .lines()
            .find_map(|l| l.strip_prefix("child=").and_then(|c| c.parse().ok()))
    });
    let t0 = Instant::now();
    sb.ok(&["stop", "w"]);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
    assert!(!alive(pid));
    assert!(alive(child), "KillMode=process never kills the children");
    let log = sb.unit_log("w.service");
    assert!(
        log.contains("got USR1") && log.contains("got TERM"),
        "{log}"
    );
    let sent: Vec<(String, Option<String>, Option<u32>)> = sb
        .journal()
        .into_iter()
        .filter(|e| matches!(e.action.as_str(), "signal" | "abort" | "escalate"))
        .map(|e| (e.action, e.signal, e.pid))
        .collect();
    assert_eq!(
        sent,
        [
            ("signal".to_string(), Some("SIGUSR1".to_string()), Some(pid)),
            ("abort".to_string(), Some("SIGTERM".to_string()), Some(pid)),
            (
                "escalate".to_string(),
                Some("SIGKILL".to_string()),
                Some(pid)
            ),
        ]
    );
    assert_eq!(sb.prop("w", "Result"), "timeout");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sb.prop("w", "NRestarts"), "0", "a stop is never restarted");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// A service that exits 1 on SIGUSR1 (a worker whose land failed): `systemctl kill` lets
/// `Restart=on-failure` bring it back; `systemctl stop` never does (`forbid_restart`).
fn a_stop_is_never_restarted_whatever_the_exit() {
    let sb = Sandbox::new();
    let bin = sb.script(
        "lander",
        "trap 'echo landing; exit 1' USR1\necho up\nwhile :; do sleep 0.1; done\n",
    );
    sb.write_unit(
        "l.service",
        &format!(
            "[Service]\nExecStart={}\nKillSignal=SIGUSR1\nKillMode=process\nRestart=on-failure\nRestartSec=100ms\n",
            bin.display()
        ),
    );
    sb.ok(&["start", "l"]);
    let pid: u32 = sb.prop("l", "MainPID").parse().unwrap();
    sb.ok(&["kill", "-s", "USR1", "--kill-whom=main", "l"]);
    let again: u32 = wait_for("restarted", || {
        let p: u32 = sb.prop("l", "MainPID").parse().unwrap_or(0);
        (p != 0 && p != pid).then_some(p)
    });
    assert_eq!(sb.prop("l", "NRestarts"), "1");
    sb.ok(&["stop", "l"]);
    assert!(!alive(again));
    assert_eq!(
        (sb.prop("l", "ActiveState"), sb.prop("l", "Result")),
        ("failed".to_string(), "exit-code".to_string())
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.prop("l", "NRestarts"), "1");
    assert_eq!(sb.prop("l", "MainPID"), "0");
}

/// `journalctl _SYSTEMD_UNIT=<unit> _PID=<pid> -o cat` prints what that main process wrote.
fn journalctl_shows_each_main_process_output() {
    let sb = Sandbox::new();
    let bin = sb.script(
        "talker",
        "echo \"hello from $$\"\nwhile :; do sleep 0.1; done\n",
    );
    sb.write_unit(
        "t.service",
        &format!("[Service]\nExecStart={}\n", bin.display()),
    );
    sb.ok(&["start", "t"]);
    let first = sb.prop("t", "MainPID");
    wait_for("output", || {
        sb.unit_log("t.service").contains(&first).then_some(())
    });
    sb.ok(&["restart", "t"]);
    let second = sb.prop("t", "MainPID");
    wait_for("output", || {
        sb.unit_log("t.service").contains(&second).then_some(())
    });
    for pid in [&first, &second] {
        let o = sb.journalctl(&[
            "_SYSTEMD_UNIT=t.service",
            &format!("_PID={pid}"),
            "--output=cat",
            "--no-pager",
            "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", show_output(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("hello from {pid}\n")
        );
    }
    let o = sb.journalctl(&["-u", "t", "_PID=1", "-o", "cat"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "-- No entries --\n");
    assert_eq!(
        sb.journalctl(&["-u", "t", "-o", "json"]).status.code(),
        Some(1)
    );
    sb.ok(&["stop", "t"]);
}

/// `LoadCredential=` (systemd `src/core/exec-credential.c`): the service, running as its
/// user, reads a 0400 copy it owns in `$CREDENTIALS_DIRECTORY` (also `%d`) while the
/// source stays root's 0600; the copy is read-only, gone after a stop, and a missing
/// source fails the unit with 243/CREDENTIALS (the start job of a simple service succeeds).
fn load_credential_gives_the_service_user_a_read_only_copy() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new();
    let key = sb.path("work/key.pem");
    std::fs::write(&key, "the-private-key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bin = sb.script(
        "cred",
        r#"f="$CREDENTIALS_DIRECTORY/tls-key"
echo "dir=$CREDENTIALS_DIRECTORY via-d=$KEY_PATH key=$(cat "$f") mode=$(stat -c %a "$f") owner=$(stat -c %u "$f") dirmode=$(stat -c %a "$CREDENTIALS_DIRECTORY")"
if ( : >>"$f" ) 2>/dev/null; then echo write=allowed; else echo write=denied; fi
if cat "$(dirname "$0")/../work/key.pem" >/dev/null 2>&1; then echo source=readable; else echo source=unreadable; fi
echo env-done
while :; do sleep 0.2 & wait $!; done
"#,
    );
    sb.write_unit(
        "cred.service",
        &format!(
            "[Service]\nUser=concourse\nGroup=concourse\nLoadCredential=tls-key:{}\n\
             Environment=KEY_PATH=%d/tls-key\nExecStart={}\n",
            key.display(),
            bin.display()
        ),
    );
    sb.ok(&["start", "cred"]);
    let log = wait_for("started", || {
        let l = sb.unit_log("cred.service");
        l.contains("env-done").then_some(l)
    });
    let dir = "/run/credentials/cred.service";
    for want in [
        format!("dir={dir} via-d={dir}/tls-key key=the-private-key mode=400 owner=999 dirmode=500"),
        "write=denied".to_string(),
        "source=unreadable".to_string(),
    ] {
        assert!(log.contains(&want), "missing {want:?} in {log}");
    }
    let copy = sb.path("run/credentials/cred.service/tls-key");
    let m = std::fs::metadata(&copy).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o400, 999, 998));
    sb.ok(&["stop", "cred"]);
    assert!(!sb.path("run/credentials/cred.service").exists());

    std::fs::remove_file(&key).unwrap();
    sb.ok(&["start", "cred"]);
    assert_eq!(sb.prop("cred", "ActiveState"), "failed");
    assert_eq!(sb.prop("cred", "ExecMainStatus"), "243");
    assert_eq!(sb.prop("cred", "Result"), "exit-code");
    assert!(sb.journal().iter().any(|e| e.unit == "cred.service"
        && e.action == "start-failed"
        && e.detail
            .as_deref()
            .unwrap_or("")
            .contains("Failed to set up credentials")));
}

/// A recorded main pid names the main process only while its start time matches: pids
/// are reused (`pid_max` may be 32768, shared by every unit and test), and signalling a
/// reused pid would kill a stranger (another test's build container, say).
fn a_reused_main_pid_is_never_signalled() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let sb = Sandbox::new();
    let bin = sb.script("quiet", "while :; do sleep 0.1; done\n");
    sb.write_unit(
        "x.service",
        &format!("[Service]\nExecStart={}\nTimeoutStopSec=1\n", bin.display()),
    );
    sb.ok(&["start", "x"]);
    let pid: u32 = sb.prop("x", "MainPID").parse().unwrap();
    let sup = sb.state().units["x.service"].supervisor_pid;
    // the supervisor cannot record the death: the state keeps a stale pid
    kill(Pid::from_raw(sup as i32), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    wait_for("the main process gone", || (!alive(pid)).then_some(()));
    let mut stranger = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let mut st = sb.state();
    st.units.get_mut("x.service").unwrap().main_pid = stranger.id();
    std::fs::write(
        sb.path("run/fake-systemd/state.json"),
        serde_json::to_vec(&st).unwrap(),
    )
    .unwrap();
    sb.ok(&["stop", "x"]);
    let _ = kill(Pid::from_raw(sup as i32), Signal::SIGKILL);
    let alive_after = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(alive_after, "stop signalled a reused pid");
    assert!(
        !sb.journal()
            .iter()
            .any(|e| e.pid == Some(stranger.id()) && e.signal.is_some()),
        "{:?}",
        sb.journal()
    );
}
