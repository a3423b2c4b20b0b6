//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `pack [--out FILE]`: build `dispatch` (static musl when possible) and write the
//!   reproducible `concourse-ci_amd64.charm`.
//! - `check-charm FILE [--max-glibc X.Y]`: check a .charm the way Juju will read it.
//! - `hooks`: regenerate `hooks/` symlinks from metadata.yaml.
//! - `test [cargo test args]`: install test prerequisites, then run the whole suite.
//! - `demo [demo args]`: build the release `dispatch` (as `pack` does) and the demo
//!   (`crates/demo`), then run the demo in this process's place.
//! - `bench-hook [--runs N]`: a settled update-status and a no-op config-changed against stub hook tools.

mod bench;
mod check;
mod pack;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pack") => pack::run(&args[1..]),
        Some("check-charm") => check::run(&args[1..]),
        Some("hooks") => pack::write_hooks(&root()).map(|n| println!("wrote {n} hook symlinks")),
        Some("test") => test::run(&args[1..]),
        Some("bench-hook") => bench::run(&args[1..]),
        Some("demo") => run_demo(&args[1..]),
        _ => Err(
            "usage: cargo xtask pack [--out FILE] | check-charm FILE [--max-glibc X.Y] | hooks | test [ARGS] | bench-hook [--runs N] | demo [--help]"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command, failing with its argv when it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// True when `prog` is found on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Installs Debian packages when missing programs need them (we run as root on CI).
pub fn ensure_debs(wanted: &[(&str, &str)]) {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let ok = Command::new("sh")
        .args([
            "-c",
            &format!(
                "(apt-get install -y -qq {0} || (apt-get update -qq && apt-get install -y -qq {0})) >/dev/null 2>&1",
                missing.join(" ")
            ),
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "xtask: could not install {} (continuing)",
            missing.join(" ")
        );
    }
}

/// `cargo xtask demo`: the README's "see it work" command. Builds the release `dispatch`
/// exactly as `pack` does (the binary the .charm ships) and the demo, then replaces this
/// process with the demo, so Ctrl-C reaches the demo alone (it cleans up) and its exit
/// code is the command's. The demo is its own crate so that `pack` never builds the
/// simulator and the release server.
fn run_demo(extra: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let root = root();
    let dispatch = pack::build_dispatch(&root)?;
    let tools = pack::build_sim_tools(&root)?;
    let demo = pack::cargo_build_bin(&root, &["--locked", "--package", "demo"], "demo")?;
    // <target>/debug/demo -> <target>/demo-tarballs
    let cache = demo
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("demo-tarballs"))
        .ok_or_else(|| format!("unexpected demo path {}", demo.display()))?;
    let err = Command::new(&demo)
        .arg("--dispatch")
        .arg(&dispatch)
        .arg("--tools")
        .arg(&tools)
        .arg("--charm-dir")
        .arg(&root)
        .arg("--cache")
        .arg(&cache)
        .args(extra)
        .exec();
    Err(format!("cannot run {}: {err}", demo.display()))
}
