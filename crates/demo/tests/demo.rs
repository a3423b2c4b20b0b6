//! Issue 16's acceptance tests: the demo binary, run as `cargo xtask demo` runs it, with
//! the debug `dispatch` that `cargo test --workspace` builds next to this test's
//! executable (`<target>/debug/dispatch`; build it with `cargo build --bin dispatch` when
//! running this package alone). Needs root, as the simulator tests do.
//!
//! - `--quiet` prints only the summary, and the summary says what happened: every unit
//!   active on the new version, one download per version, a volume of about one release
//!   per version kept; without sharing the same summary shows a copy per unit.
//! - Ctrl-C (SIGINT) mid-upgrade: the demo exits 130 and leaves no process, mount or run
//!   directory behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generated release size for the tests (the demo's default is 64 MiB).
const MIB: &str = "8";

/// One demo at a time: the Ctrl-C test makes this process the subreaper of every orphan
/// and counts its children.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn target_debug() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/debug/deps/demo-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable under <target>/debug/deps")
        .to_path_buf()
}

/// The demo with the repository and a tarball cache in the target dir, and the dispatch
/// and hook tools `cargo xtask test` gives the simulator (`SIM_DISPATCH`, `SIM_TOOLS`:
/// the shipped build and the small static tools), else the debug dispatch and the demo
/// itself as the tools.
#[allow(clippy::disallowed_methods)] // harness knobs, not the charm's environment
fn demo(args: &[&str]) -> Command {
    let debug = target_debug();
    let dispatch = std::env::var_os("SIM_DISPATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| debug.join("dispatch"));
    assert!(
        dispatch.is_file(),
        "{} is missing: build it with `cargo build --bin dispatch` (cargo test --workspace does)",
        dispatch.display()
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_demo"));
    c.arg("--dispatch")
        .arg(&dispatch)
        .arg("--charm-dir")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .arg("--cache")
        .arg(debug.join("..").join("demo-tarballs"))
        .args(["--release-mib", MIB])
        .args(args);
    if let Some(tools) = std::env::var_os("SIM_TOOLS") {
        c.arg("--tools").arg(tools);
    }
    c
}

/// The value after `key` on the summary line starting with `  <key>`.
fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    let prefix = format!("  {key} ");
    summary
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key:?} line in the summary:\n{summary}"))
}

/// The `= N.NNx the release` figure of the summary.
fn ratio(summary: &str) -> f64 {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("= ")?.split_once("x the release"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no ratio in the summary:\n{summary}"))
}

fn run_quiet(args: &[&str]) -> String {
    let out = demo(args)
        .arg("--quiet")
        .output()
        .expect("running the demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.trim_start().starts_with("Summary\n"),
        "--quiet printed more than the summary:\n{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "escape codes without a terminal");
    stdout
}

#[test]
fn quiet_summary_shows_the_upgrade_one_download_per_version_and_one_copy() {
    let _one = serial();
    let s = run_quiet(&[]);
    assert!(
        field(&s, "units").starts_with("4 of 4 active on v8.0.0, 4 of 4 run it"),
        "{s}"
    );
    assert!(
        field(&s, "downloads").starts_with("v7.14.3: 1, v8.0.0: 1 "),
        "{s}"
    );
    assert_eq!(
        field(&s, "joined"),
        "concourse-ci/3 after no download",
        "{s}"
    );
    assert!(
        field(&s, "volume").contains("on 1 shared volume for 2 versions kept"),
        "{s}"
    );
    let r = ratio(&s);
    assert!((0.99..1.05).contains(&r), "volume is {r}x the release: {s}");
    assert!(field(&s, "took").ends_with(" 0 failed"), "{s}");
}

#[test]
fn without_sharing_the_summary_counts_a_copy_and_a_download_per_unit() {
    let _one = serial();
    let s = run_quiet(&["--no-shared", "--units", "2"]);
    assert!(
        field(&s, "units").starts_with("3 of 3 active on v8.0.0, 3 of 3 run it"),
        "{s}"
    );
    assert!(
        field(&s, "downloads").starts_with("v7.14.3: 2, v8.0.0: 3 "),
        "{s}"
    );
    assert_eq!(
        field(&s, "joined"),
        "concourse-ci/2 after 1 download",
        "{s}"
    );
    // 2 volumes hold both versions, the added unit's only the new one: 5 copies of 2
    assert!(
        field(&s, "volume").contains("on 3 volumes (5 release copies)"),
        "{s}"
    );
    let r = ratio(&s);
    assert!(
        (2.45..2.6).contains(&r),
        "volumes are {r}x the release: {s}"
    );
}

/// Live processes whose parent is this process (orphans of the demo land here: we are
/// their subreaper). Those that were killed are reaped first.
fn live_children() -> Vec<(u32, String)> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let zombie = fields.first() == Some(&"Z");
        if !zombie && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, cmd.replace('\0', " ")));
        }
    }
    out
}

#[test]
fn ctrl_c_mid_upgrade_stops_everything_and_removes_the_model() {
    let _one = serial();
    nix::sys::prctl::set_child_subreaper(true).expect("becoming a subreaper");
    // the model's run directory goes under TMPDIR: a fresh one shows what is left
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut child = demo(&[])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        seen.push(line.clone());
        if line.contains("now runs web v8.0.0") || Instant::now() > deadline {
            break;
        }
    }
    let run_dirs = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("juju-sim-"))
            .collect()
    };
    assert_eq!(
        run_dirs(tmp.path()).len(),
        1,
        "no model running:\n{}",
        seen.join("\n")
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let rest: String = lines.map_while(Result::ok).collect::<Vec<_>>().join("\n");
    let out = child.wait_with_output().expect("waiting for the demo");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}\n{rest}\n{}",
        seen.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rest.contains("Interrupted"), "{rest}");
    // not a terminal: one line per change, no escape codes
    assert!(!seen.iter().any(|l| l.contains('\x1b')) && !rest.contains('\x1b'));
    assert!(seen
        .iter()
        .any(|l| l.contains("now runs web v7.14.3 (by /proc)")));
    assert!(
        rest.contains("Stopped every process of the model"),
        "{rest}"
    );
    // orphans would have been reparented to us
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(live_children(), Vec::new(), "processes left behind");
    assert_eq!(
        run_dirs(tmp.path()),
        Vec::<String>::new(),
        "run directory left behind"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let tmp_path = tmp.path().to_string_lossy();
    assert!(!mounts.contains(tmp_path.as_ref()), "mounts left: {mounts}");
}
