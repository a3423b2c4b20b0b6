//! `cargo xtask bench-hook`: wall time, peak memory and hook-tool calls of a no-op
//! `update-status` run of the release `dispatch` against stub hook tools.
//!
//! The stubs are `/bin/sh` scripts that answer like Juju (canned JSON) and append their
//! name to a calls file, so the figures include the cost of the tools the hook runs.
//! Peak memory is `ru_maxrss` from wait4(2): the largest of dispatch and the tools it ran.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{root, run_cmd};

fn stub(dir: &Path, name: &str, out: &str) -> Result<(), String> {
    let calls = dir.join("calls");
    let script = format!(
        "#!/bin/sh\necho {name} >> '{}'\ncat <<'JSON'\n{out}\nJSON\n",
        calls.display()
    );
    let p = dir.join(name);
    fs::write(&p, script).map_err(|e| e.to_string())?;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// Config defaults from config.yaml, as `config-get --format=json` prints them.
fn config_defaults(root: &Path) -> Result<String, String> {
    let text = fs::read_to_string(root.join("config.yaml")).map_err(|e| e.to_string())?;
    let y: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    let mut out = serde_json::Map::new();
    for (k, v) in y
        .get("options")
        .and_then(|o| o.as_mapping())
        .into_iter()
        .flatten()
    {
        if let (Some(k), Some(d)) = (k.as_str(), v.get("default")) {
            let j: serde_json::Value = serde_json::to_value(d).map_err(|e| e.to_string())?;
            out.insert(k.to_string(), j);
        }
    }
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

/// Runs one hook; returns (wall time, max rss KiB, exit ok).
fn run_once(dispatch: &Path, tools: &Path, charm: &Path) -> Result<(Duration, i64, bool), String> {
    let start = Instant::now();
    let child = Command::new(dispatch)
        .current_dir(charm)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", tools.display()))
        .env("JUJU_DISPATCH_PATH", "hooks/update-status")
        .env("JUJU_HOOK_NAME", "update-status")
        .env("JUJU_UNIT_NAME", "concourse-ci/0")
        .env("JUJU_CHARM_DIR", charm)
        .env("JUJU_MODEL_NAME", "bench")
        .env("JUJU_MODEL_UUID", "00000000-0000-0000-0000-000000000000")
        .env("JUJU_VERSION", "3.6.8")
        .env("JUJU_CONTEXT_ID", "concourse-ci/0-update-status-1")
        .spawn()
        .map_err(|e| format!("spawning dispatch: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if r != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    let ok = std::process::ExitStatus::from_raw(status).success();
    Ok((wall, ru.ru_maxrss, ok))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let runs: usize = match args {
        [] => 50,
        [f, n] if f == "--runs" => n.parse().map_err(|_| format!("bad --runs {n}"))?,
        _ => return Err("usage: cargo xtask bench-hook [--runs N]".into()),
    };
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_cmd(Command::new(cargo).current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "--package",
        "concourse-ci",
        "--bin",
        "dispatch",
    ]))?;
    let dispatch = root.join("target/release/dispatch");

    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tools = tmp.path().join("tools");
    let charm = tmp.path().join("charm");
    let volume = tmp.path().join("volume");
    for d in [&tools, &charm, &volume] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let answers: BTreeMap<&str, String> = [
        ("config-get", config_defaults(&root)?),
        ("is-leader", "true".into()),
        ("relation-ids", r#"["peers:0"]"#.into()),
        ("relation-list", "[]".into()),
        ("relation-get", "{}".into()),
        ("storage-list", r#"["concourse-data/0"]"#.into()),
        (
            "storage-get",
            format!(r#"{{"kind":"filesystem","location":"{}"}}"#, volume.display()),
        ),
        (
            "network-get",
            r#"{"bind-addresses":[{"interface-name":"eth0","addresses":[{"value":"10.0.0.5","cidr":"10.0.0.0/24"}]}],"egress-subnets":["10.0.0.5/32"],"ingress-addresses":["10.0.0.5"]}"#.into(),
        ),
        ("state-get", "{}".into()),
        ("goal-state", r#"{"units":{"concourse-ci/0":{"status":"active"}},"relations":{}}"#.into()),
        ("status-get", r#"{"status":"maintenance","message":""}"#.into()),
        ("opened-ports", "[]".into()),
        ("secret-ids", "[]".into()),
        ("action-get", "{}".into()),
    ]
    .into_iter()
    .collect();
    for tool in [
        "status-set",
        "juju-log",
        "relation-set",
        "application-version-set",
        "open-port",
        "close-port",
        "state-set",
        "state-delete",
        "secret-add",
        "secret-get",
        "secret-set",
        "secret-grant",
        "secret-info-get",
        "resource-get",
        "action-set",
        "action-log",
        "action-fail",
    ] {
        stub(&tools, tool, "")?;
    }
    for (tool, out) in &answers {
        stub(&tools, tool, out)?;
    }

    let calls_file = tools.join("calls");
    let mut walls = Vec::with_capacity(runs);
    let mut peak = 0;
    let mut calls_per_run = 0;
    for i in 0..runs {
        let _ = fs::remove_file(&calls_file);
        let (wall, rss, ok) = run_once(&dispatch, &tools, &charm)?;
        if !ok {
            return Err(format!("run {i}: dispatch failed"));
        }
        walls.push(wall);
        peak = peak.max(rss);
        let text = fs::read_to_string(&calls_file).unwrap_or_default();
        calls_per_run = text.lines().count();
        if i == 0 {
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for l in text.lines() {
                *count.entry(l).or_default() += 1;
            }
            println!("hook-tool calls in one update-status: {count:?}");
        }
    }
    walls.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "update-status x{runs}: median {:.2} ms, p90 {:.2} ms, min {:.2} ms; peak RSS {} KiB; {} hook-tool calls per hook",
        ms(walls[runs / 2]),
        ms(walls[(runs * 9 / 10).min(runs - 1)]),
        ms(walls[0]),
        peak,
        calls_per_run
    );
    Ok(())
}
