//! `cargo xtask test`: the README's test command.
//!
//! Owns: the test prerequisites, the binaries the simulator runs (`SIM_DISPATCH`,
//! `SIM_TOOLS`; docs/architecture.md, testing tiers), the tests' `TMPDIR` (on tmpfs, see
//! [`tests_tmpdir`]) and running every test binary of the
//! workspace. `cargo test` runs its test binaries one after another; here the binaries
//! other than the simulator and the doc tests run all at once (about 26 s on 2 cores), each
//! as cargo would run it (from its package's directory, with `CARGO_MANIFEST_DIR` set) and
//! printed whole when it ends, and then the rest of the simulator runs. The simulator keeps
//! both cores busy, so overlapping it with the other binaries gains little: niced beside
//! it, they were starved past their timed checks (a fake TSA not listening within 10 s, a
//! 1 s stop timeout taking 5 s); at normal priority everything took 201 s against 203 s in
//! order. Only the scenario that mostly waits ([`SIM_WAITER`]: the 90 s lock wait) starts
//! at once, beside the other binaries, in a simulator process of its own: once the rest
//! of the simulator had been made cheaper, that wait was its longest scenario.
//!
//! Invariants: every test binary `cargo test --workspace` builds is run (cargo's own
//! `--message-format=json` names them), plus the doc tests and two runs of each hook of
//! `cargo xtask bench-hook` (so that the README's benchmark keeps working); the command
//! fails if any fails.
//! With arguments (`cargo xtask test -- --nocapture`, a filter) it is plain
//! `cargo test --workspace <args>`, since such arguments mean cargo's own rules.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use crate::{ensure_debs, pack, root, run_cmd};

/// One test executable cargo built.
#[derive(Debug, Clone, PartialEq)]
struct TestBinary {
    /// `<package>::<target>`, for the summary.
    name: String,
    executable: PathBuf,
    /// Its package's directory: cargo runs tests from there.
    manifest_dir: PathBuf,
}

pub fn run(extra: &[String]) -> Result<(), String> {
    // Test prerequisites beyond the Rust toolchain: unshare/mount (util-linux),
    // systemd-analyze (unit file checks), shellcheck (integration scripts).
    ensure_debs(&[
        ("unshare", "util-linux"),
        ("systemd-analyze", "systemd"),
        ("shellcheck", "shellcheck"),
    ]);
    // The simulator's units run the `dispatch` that `pack` ships, and their tool calls go
    // to a small static executable instead of the debug test binary.
    let root = root();
    let dispatch = pack::build_dispatch(&root)?;
    let tools = pack::build_sim_tools(&root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tmp = tests_tmpdir();
    let with_env = |cmd: &mut Command| {
        cmd.env("SIM_DISPATCH", &dispatch).env("SIM_TOOLS", &tools);
        if let Some(t) = &tmp {
            cmd.env("TMPDIR", t.path());
        }
    };
    if !extra.is_empty() {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args(["test", "--workspace", "--locked"])
            .args(extra);
        with_env(&mut cmd);
        return run_cmd(&mut cmd);
    }
    let out = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "test",
            "--workspace",
            "--locked",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the tests failed with {}", out.status));
    }
    let binaries = test_binaries(&String::from_utf8_lossy(&out.stdout));
    let mut doc = Command::new(&cargo);
    doc.current_dir(&root)
        .args(["test", "--workspace", "--locked", "--doc", "--quiet"]);
    with_env(&mut doc);
    let bench = {
        let dispatch = dispatch.clone();
        std::thread::spawn(move || crate::bench::smoke(&dispatch))
    };
    let mut failed = in_two_phases(binaries, doc, &with_env)?;
    if !bench.join().unwrap_or(false) {
        failed.push("bench-hook".into());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// Where the tests keep their temporary files when `TMPDIR` is not set: a fresh directory
/// on the tmpfs at `/dev/shm` (removed when dropped), if there is one. The tests make and
/// remove files by the thousand; on this machine's ext4 every new inode then cost a scan
/// past the recently deleted ones (a quarter of an in-process charm test's CPU), and the
/// suite took 156 s against 138 s on tmpfs.
fn tests_tmpdir() -> Option<tempfile::TempDir> {
    if std::env::var_os("TMPDIR").is_some() {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let tmpfs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(1) == Some(&"/dev/shm") && f.get(2) == Some(&"tmpfs")
    });
    if !tmpfs {
        eprintln!("xtask: no tmpfs at /dev/shm: the tests keep their files in the default TMPDIR");
        return None;
    }
    tempfile::Builder::new()
        .prefix("concourse-ci-tests-")
        .tempdir_in("/dev/shm")
        .map_err(|e| eprintln!("xtask: cannot use /dev/shm for the tests' files: {e}"))
        .ok()
}

/// The simulator scenario that spends most of its time waiting, not computing: it waits
/// out the charm's 90 s `LOCK_WAIT` (about 110 s in all, the longest scenario). A
/// simulator process of its own runs it beside the other binaries, and the rest of the
/// simulator skips it.
const SIM_WAITER: &str = "upgrade::regression_a_lock_wait_is_not_an_upgrade_failure";

/// Runs the other binaries, the doc tests and the simulator's [`SIM_WAITER`] all at
/// once, then the rest of the simulator once the other binaries are done; returns the
/// names of those that failed (or could not run).
fn in_two_phases(
    binaries: Vec<TestBinary>,
    mut doc: Command,
    with_env: &(dyn Fn(&mut Command) + Sync),
) -> Result<Vec<String>, String> {
    let (sim, others): (Vec<TestBinary>, Vec<TestBinary>) = binaries
        .into_iter()
        .partition(|b| b.name == "concourse-ci::sim");
    let sim = sim
        .into_iter()
        .next()
        .ok_or("cargo built no simulator tests (concourse-ci::sim)")?;
    let waiters = TestBinary {
        name: format!("{} ({SIM_WAITER})", sim.name),
        ..sim.clone()
    };
    let t0 = Instant::now();
    // each waited for (and its pipes drained) by its own thread; reported whole as it ends
    let failed: Vec<String> = std::thread::scope(|s| {
        let waiters = &waiters;
        let waiting = s.spawn(move || run_waiter(waiters, with_env));
        let runs: Vec<_> = others
            .iter()
            .map(|b| s.spawn(move || run_captured(b, &[], with_env)))
            .collect();
        let doc_ok = doc.status().map(|s| s.success()).unwrap_or(false);
        let mut failed: Vec<String> = runs
            .into_iter()
            .zip(&others)
            .filter_map(|(run, b)| (!run.join().unwrap_or(false)).then(|| b.name.clone()))
            .collect();
        if !doc_ok {
            failed.push("doc tests".into());
        }
        println!(
            "xtask: the other test binaries ran in {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        let t1 = Instant::now();
        let status = spawn(&sim, &waiter_args(false), false, with_env)
            .and_then(|mut c| c.wait().map_err(|e| format!("{}: {e}", sim.name)));
        match status {
            Ok(status) => {
                println!(
                    "xtask: {} ended ({status}) after {:.0} s",
                    sim.name,
                    t1.elapsed().as_secs_f64()
                );
                if !status.success() {
                    failed.push(sim.name.clone());
                }
            }
            Err(e) => {
                eprintln!("xtask: {e}");
                failed.push(sim.name.clone());
            }
        }
        if !waiting.join().unwrap_or(false) {
            failed.push(waiters.name.clone());
        }
        failed
    });
    println!(
        "xtask: every test binary ran in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(failed)
}

/// Runs `b` with `args`, its output captured and printed whole when it ends; whether it
/// passed.
fn run_captured(b: &TestBinary, args: &[String], with_env: &(dyn Fn(&mut Command) + Sync)) -> bool {
    run_captured_output(b, args, with_env).is_some_and(|out| out.status.success())
}

/// [`run_captured`], returning the output (`None`: it could not run).
fn run_captured_output(
    b: &TestBinary,
    args: &[String],
    with_env: &(dyn Fn(&mut Command) + Sync),
) -> Option<Output> {
    let t = Instant::now();
    let out = spawn(b, args, true, with_env)
        .and_then(|c| c.wait_with_output().map_err(|e| format!("{}: {e}", b.name)));
    match out {
        Ok(out) => {
            report(b, &out, t);
            Some(out)
        }
        Err(e) => {
            eprintln!("xtask: {e}");
            None
        }
    }
}

/// Runs [`SIM_WAITER`] alone; whether it ran and passed (a renamed scenario would match
/// nothing and pass silently, so "1 passed" is required).
fn run_waiter(sim: &TestBinary, with_env: &(dyn Fn(&mut Command) + Sync)) -> bool {
    run_captured_output(sim, &waiter_args(true), with_env).is_some_and(|out| {
        let ran = String::from_utf8_lossy(&out.stdout).contains(" 1 passed;");
        if !ran {
            eprintln!("xtask: {SIM_WAITER} did not run: was it renamed?");
        }
        out.status.success() && ran
    })
}

/// The simulator's arguments: only [`SIM_WAITER`] (`only`), or all but it. (The
/// harness takes one name filter, so there is one such scenario.)
fn waiter_args(only: bool) -> Vec<String> {
    let name = SIM_WAITER.to_string();
    let filter = if only {
        vec![name]
    } else {
        vec!["--skip".to_string(), name]
    };
    [filter, vec!["--exact".to_string()]].concat()
}

/// Starts `b` the way `cargo test` does; with `capture` (the binaries before the
/// simulator), its output kept for [`report`].
fn spawn(
    b: &TestBinary,
    args: &[String],
    capture: bool,
    with_env: &(dyn Fn(&mut Command) + Sync),
) -> Result<Child, String> {
    let mut cmd = Command::new(&b.executable);
    cmd.args(args)
        .current_dir(&b.manifest_dir)
        .env("CARGO_MANIFEST_DIR", &b.manifest_dir);
    if capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    with_env(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("cannot run {}: {e}", b.executable.display()))
}

/// Prints a captured binary's output and how long it took.
fn report(b: &TestBinary, out: &Output, t: Instant) {
    println!(
        "xtask: {} ({}) ended ({}) after {:.1} s",
        b.name,
        b.executable.display(),
        out.status,
        t.elapsed().as_secs_f64()
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

/// The test executables in cargo's `--message-format=json` output: `compiler-artifact`
/// messages of a test profile that have an executable.
fn test_binaries(messages: &str) -> Vec<TestBinary> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let executable = PathBuf::from(m["executable"].as_str()?);
            let manifest = Path::new(m["manifest_path"].as_str()?);
            let package = m["package_id"].as_str().map(package_name)?;
            Some(TestBinary {
                name: format!("{package}::{}", m["target"]["name"].as_str()?),
                executable,
                manifest_dir: manifest.parent()?.to_path_buf(),
            })
        })
        .collect()
}

/// The package name in a cargo package id (`path+file:///…/demo#0.1.0`,
/// `path+file:///…/x#name@0.1.0`, or the older `name 0.1.0 (path+file:///…)`).
fn package_name(id: &str) -> String {
    if let Some((url, rest)) = id.split_once('#') {
        match rest.split_once('@') {
            Some((name, _)) => name.to_string(),
            None => url.rsplit('/').next().unwrap_or(url).to_string(),
        }
    } else {
        id.split(' ').next().unwrap_or(id).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_scenario_runs_in_one_simulator_process_and_is_skipped_by_the_other() {
        assert_eq!(waiter_args(true), [SIM_WAITER, "--exact"]);
        assert_eq!(waiter_args(false), ["--skip", SIM_WAITER, "--exact"]);
    }

    #[test]
    fn finds_the_test_executables_and_their_packages() {
        let msgs = [
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#concourse-ci@0.1.0","manifest_path":"/w/Cargo.toml","target":{"name":"sim","kind":["test"]},"profile":{"test":true},"executable":"/w/target/debug/deps/sim-1"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/demo#0.1.0","manifest_path":"/w/crates/demo/Cargo.toml","target":{"name":"demo","kind":["test"]},"profile":{"test":true},"executable":"/w/target/debug/deps/demo-2"}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w#concourse-ci@0.1.0","manifest_path":"/w/Cargo.toml","target":{"name":"dispatch","kind":["bin"]},"profile":{"test":false},"executable":"/w/target/debug/dispatch"}"#,
            r#"{"reason":"compiler-artifact","package_id":"serde 1.0.0 (registry+https://github.com/rust-lang/crates.io-index)","target":{"name":"serde","kind":["lib"]},"profile":{"test":false},"executable":null}"#,
            "not json",
        ]
        .join("\n");
        assert_eq!(
            test_binaries(&msgs),
            [
                TestBinary {
                    name: "concourse-ci::sim".into(),
                    executable: "/w/target/debug/deps/sim-1".into(),
                    manifest_dir: "/w".into(),
                },
                TestBinary {
                    name: "demo::demo".into(),
                    executable: "/w/target/debug/deps/demo-2".into(),
                    manifest_dir: "/w/crates/demo".into(),
                },
            ]
        );
    }
}
