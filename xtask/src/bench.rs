//! `cargo xtask bench-hook`: wall time, peak memory and hook-tool calls (by tool) of a
//! settled unit's `update-status` and of a `config-changed` with nothing to do, of the
//! `dispatch` that `pack` ships (static) against stub hook tools.
//!
//! Scenario: the leader of a 3-unit `auto` deployment, running web with PostgreSQL related,
//! after warm-up hooks (the release installed from the `concourse-release` resource, a
//! real tarball; keys generated, files written, services started). The stubs are one
//! `/bin/sh` script behind every tool name (and `systemctl`), answering like Juju from
//! canned JSON and logging each call; `relation-set` input is folded back into the
//! answers so the steady state is real. The status each measured hook set is printed, so
//! a unit that is not settled (blocked, waiting) shows. The runs happen in a private mount namespace (`unshare`; root)
//! with `/etc` overlaid and the charm's local directories on tmpfs, so the host is untouched.
//! Peak memory is `ru_maxrss` from wait4(2): the largest of dispatch and the tools it ran.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{root, run_cmd};

const VERSION: &str = "7.14.3";
/// Path of the built `dispatch`, handed from the outer run to the `--inside` one.
const DISPATCH_ENV: &str = "XTASK_BENCH_DISPATCH";
const TOOLS: &[&str] = &[
    "config-get",
    "is-leader",
    "relation-ids",
    "relation-list",
    "relation-get",
    "relation-set",
    "storage-list",
    "storage-get",
    "network-get",
    "state-get",
    "state-set",
    "state-delete",
    "goal-state",
    "status-get",
    "status-set",
    "opened-ports",
    "open-port",
    "close-port",
    "juju-log",
    "application-version-set",
    "secret-add",
    "secret-get",
    "secret-set",
    "secret-grant",
    "secret-ids",
    "secret-info-get",
    "resource-get",
    "action-get",
    "action-set",
    "action-log",
    "action-fail",
    "systemctl",
];

fn write(p: &Path, content: &str, mode: u32) -> Result<(), String> {
    fs::write(p, content).map_err(|e| format!("{}: {e}", p.display()))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// The stub behind every tool name.
fn stub_script(a: &Path, volume: &Path) -> String {
    let a = a.display();
    format!(
        r#"#!/bin/sh
t=$(basename "$0")
echo "$t $*" >> '{a}/calls'
case "$t $*" in
  "config-get"*) cat '{a}/config.json' ;;
  "is-leader"*) echo true ;;
  "relation-ids --format=json peers") echo '["peers:0"]' ;;
  "relation-ids --format=json postgresql") echo '["postgresql:1"]' ;;
  "relation-ids"*) echo '[]' ;;
  "relation-list --format=json -r peers:0") echo '["concourse-ci/1","concourse-ci/2"]' ;;
  "relation-list --format=json -r postgresql:1 --app") echo '"postgresql"' ;;
  "relation-list"*) echo '[]' ;;
  "relation-get --format=json -r peers:0 --app - concourse-ci") cat '{a}/app.json' ;;
  "relation-get --format=json -r peers:0 - concourse-ci/0") cat '{a}/me.json' ;;
  "relation-get --format=json -r peers:0 - concourse-ci/"*) cat '{a}/worker.json' ;;
  "relation-get --format=json -r postgresql:1 --app - postgresql") cat '{a}/pg.json' ;;
  "relation-get --format=json -r postgresql:1 --app - concourse-ci") echo '{{"database":"concourse","requested-secrets":"[\"username\",\"password\",\"tls\",\"tls-ca\",\"uris\"]"}}' ;;
  "relation-get"*) echo '{{}}' ;;
  "relation-set -r peers:0 --app"*) cat > '{a}/set-app.json' ;;
  "relation-set -r peers:0"*) cat > '{a}/set-me.json' ;;
  "relation-set"*) cat > /dev/null ;;
  "storage-list"*) echo '["concourse-data/0"]' ;;
  "storage-get"*) echo '{{"kind":"filesystem","location":"{vol}"}}' ;;
  "network-get"*) echo '{{"bind-addresses":[{{"interface-name":"eth0","addresses":[{{"value":"10.0.0.5","cidr":"10.0.0.0/24"}}]}}],"egress-subnets":["10.0.0.5/32"],"ingress-addresses":["10.0.0.5"]}}' ;;
  "state-get"*) echo '{{}}' ;;
  "goal-state"*) echo '{{"units":{{}},"relations":{{}}}}' ;;
  "status-get"*) echo '{{"status":"active","message":""}}' ;;
  "opened-ports --endpoints"*) echo '["8080/tcp (*)","2222/tcp (*)"]' ;;
  "opened-ports"*) echo '["8080/tcp","2222/tcp"]' ;;
  "secret-info-get --format=json --label web-keys")
    [ -f '{a}/web-keys.json' ] || {{ echo 'ERROR secret "web-keys" not found' >&2; exit 1; }}
    echo '{{"cs2":{{"revision":1,"label":"web-keys","owner":"application"}}}}' ;;
  "secret-info-get"*) echo '{{"cs1":{{"revision":1,"label":"admin-password","owner":"application"}}}}' ;;
  "secret-get --format=json secret:cs2"* | "secret-get --format=json --label web-keys"*)
    cat '{a}/web-keys.json' ;;
  "secret-get"*) echo '{{"password":"bench-password"}}' ;;
  "secret-ids"*) echo '["secret:cs1"]' ;;
  "secret-add"*)
    # the web keys: `key#file=path` arguments to a JSON object (values JSON-escaped;
    # a final newline is dropped: the encryption key has none)
    for arg in "$@"; do
      case "$arg" in *'#file='*) printf '%s\n' "${{arg%%#file=*}}" "${{arg#*#file=}}" ;; esac
    done | awk 'NR % 2 == 1 {{ k = $0; next }}
      {{ v = ""; sep = ""; while ((getline l < $0) > 0) {{ v = v sep l; sep = "\\n" }}; close($0)
         gsub(/"/, "\\\"", v); printf "%s\"%s\":\"%s\"", (n++ ? "," : "{{"), k, v }}
      END {{ print "}}" }}' > '{a}/web-keys.json'
    echo 'secret:cs2' ;;
  "action-get"*) echo '{{}}' ;;
  "resource-get"*) echo '{a}/concourse.tgz' ;;
  "systemctl is-active"*) exit 0 ;;
  "systemctl show -p ActiveState,UnitFileState,NeedDaemonReload"*) printf 'ActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=no\n' ;;
  "systemctl show"*) echo 4242 ;;
esac
exit 0
"#,
        vol = volume.display()
    )
}

/// A stand-in `concourse` binary in the published release (keys via ssh-keygen).
const FAKE_CONCOURSE: &str = r#"#!/bin/sh
case "$1" in
  --version|-v) echo 7.14.3 ;;
  generate-key)
    shift; t=rsa; f=
    while [ $# -gt 0 ]; do case "$1" in -t) t=$2; shift 2;; -f) f=$2; shift 2;; *) shift;; esac; done
    ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f "$f" >/dev/null
    [ "$t" = ssh ] || rm -f "$f.pub" ;;
esac
"#;

fn merge_json(target: &Path, update: &Path) -> Result<(), String> {
    let Ok(text) = fs::read_to_string(update) else {
        return Ok(());
    };
    let mut base: BTreeMap<String, String> =
        serde_json::from_str(&fs::read_to_string(target).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let upd: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    for (k, v) in upd {
        if v.is_empty() {
            base.remove(&k);
        } else {
            base.insert(k, v);
        }
    }
    fs::write(
        target,
        serde_json::to_string(&base).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    fs::remove_file(update).map_err(|e| e.to_string())
}

/// Runs one hook; returns (wall time, max rss KiB, exit ok).
fn run_once(
    dispatch: &Path,
    tools: &Path,
    charm: &Path,
    hook: &str,
) -> Result<(Duration, i64, bool), String> {
    let start = Instant::now();
    let child = Command::new(dispatch)
        .current_dir(charm)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", tools.display()),
        )
        .env("JUJU_DISPATCH_PATH", format!("hooks/{hook}"))
        .env("JUJU_HOOK_NAME", hook)
        .env("JUJU_UNIT_NAME", "concourse-ci/0")
        .env("JUJU_CHARM_DIR", charm)
        .env("JUJU_MODEL_NAME", "bench")
        .env("JUJU_MODEL_UUID", "00000000-0000-0000-0000-000000000000")
        .env("JUJU_VERSION", "3.6.8")
        .env("JUJU_CONTEXT_ID", format!("concourse-ci/0-{hook}-1"))
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

/// Mounts a private /etc overlay and tmpfs on the charm's local directories.
fn isolate(scratch: &Path) -> Result<(), String> {
    let up = scratch.join("etc-up");
    let work = scratch.join("etc-work");
    fs::create_dir_all(&up).map_err(|e| e.to_string())?;
    fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let sh = |cmd: String| run_cmd(Command::new("sh").args(["-c", &cmd]));
    sh(format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc",
        up.display(),
        work.display()
    ))?;
    for d in [
        "/var/lib/concourse-ci",
        "/var/lib/concourse-web",
        "/var/lib/concourse-worker",
    ] {
        sh(format!("mkdir -p {d} && mount -t tmpfs tmpfs {d}"))?;
    }
    Ok(())
}

/// The measuring run of `dispatch`: this program again, `--inside` a private mount
/// namespace.
fn isolated(dispatch: &Path, runs: usize) -> Result<Command, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--"])
        .arg(me)
        .args(["bench-hook", "--inside", "--runs", &runs.to_string()])
        .env(DISPATCH_ENV, dispatch);
    Ok(cmd)
}

/// Two runs of each measured hook with `dispatch` (`cargo xtask test` runs it beside the
/// test binaries, so that the benchmark cannot rot unnoticed: its stubs once fell behind
/// the charm's tool calls); its output is printed when it ends. Whether it worked.
pub fn smoke(dispatch: &Path) -> bool {
    let out = isolated(dispatch, 2).and_then(|mut c| c.output().map_err(|e| e.to_string()));
    match out {
        Ok(out) => {
            println!("xtask: bench-hook --runs 2 ended ({})", out.status);
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            out.status.success()
        }
        Err(e) => {
            eprintln!("xtask: bench-hook: {e}");
            false
        }
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let (inside, rest) = match args.first().map(String::as_str) {
        Some("--inside") => (true, &args[1..]),
        _ => (false, args),
    };
    let runs: usize = match rest {
        [] => 50,
        [f, n] if f == "--runs" => n.parse().map_err(|_| format!("bad --runs {n}"))?,
        _ => return Err("usage: cargo xtask bench-hook [--runs N]".into()),
    };
    let root = root();
    if !inside {
        let dispatch = crate::pack::build_dispatch(&root)?;
        return run_cmd(&mut isolated(&dispatch, runs)?);
    }
    let dispatch = PathBuf::from(
        std::env::var_os(DISPATCH_ENV)
            .ok_or("bench-hook --inside: the dispatch path is missing")?,
    );
    let tmp = tempfile::Builder::new()
        .prefix("bench-hook")
        .tempdir_in("/var/tmp")
        .map_err(|e| e.to_string())?;
    isolate(tmp.path())?;
    let a = tmp.path().join("answers");
    let tools = tmp.path().join("tools");
    let charm = tmp.path().join("charm");
    let volume = tmp.path().join("volume");
    let bin = tmp.path().join("tarball/concourse/bin");
    for d in [&a, &tools, &charm, &bin, &volume] {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    write(&bin.join("concourse"), FAKE_CONCOURSE, 0o755)?;
    // The release as the `concourse-release` resource: the warm-up installs it for real.
    run_cmd(
        Command::new("tar")
            .arg("-C")
            .arg(tmp.path().join("tarball"))
            .arg("-czf")
            .arg(a.join("concourse.tgz"))
            .arg("concourse"),
    )?;
    write(&tools.join("stub"), &stub_script(&a, &volume), 0o755)?;
    for t in TOOLS {
        std::os::unix::fs::symlink("stub", tools.join(t)).map_err(|e| e.to_string())?;
    }
    let mut config = serde_json::Map::new();
    let text = fs::read_to_string(root.join("config.yaml")).map_err(|e| e.to_string())?;
    let y: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
    for (k, v) in y
        .get("options")
        .and_then(|o| o.as_mapping())
        .into_iter()
        .flatten()
    {
        if let (Some(k), Some(d)) = (k.as_str(), v.get("default")) {
            config.insert(
                k.into(),
                serde_json::to_value(d).map_err(|e| e.to_string())?,
            );
        }
    }
    config.insert("version".into(), VERSION.into());
    write(
        &a.join("config.json"),
        &serde_json::Value::Object(config).to_string(),
        0o644,
    )?;
    write(
        &a.join("app.json"),
        &format!(
            r#"{{"web-unit":"concourse-ci/0","admin-password-secret":"secret:cs1","release-version":"{VERSION}"}}"#
        ),
        0o644,
    )?;
    write(
        &a.join("me.json"),
        r#"{"private-address":"10.0.0.5"}"#,
        0o644,
    )?;
    write(
        &a.join("worker.json"),
        r#"{"private-address":"10.0.0.6","worker-public-key":"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 worker"}"#,
        0o644,
    )?;
    write(
        &a.join("pg.json"),
        r#"{"endpoints":"10.0.0.9:5432","database":"concourse","username":"u","password":"p"}"#,
        0o644,
    )?;

    // Warm-up: install, generate keys and files, fold the unit's own writes back into
    // the answers.
    for i in 0..3 {
        let hook = ["install", "config-changed", "update-status"][i];
        let (_, _, ok) = run_once(&dispatch, &tools, &charm, hook)?;
        if !ok {
            let calls = fs::read_to_string(a.join("calls")).unwrap_or_default();
            let tail: Vec<&str> = calls.lines().rev().take(12).collect();
            return Err(format!(
                "warm-up {hook}: dispatch failed; its last hook-tool calls, newest first:\n{}",
                tail.join("\n")
            ));
        }
        merge_json(&a.join("me.json"), &a.join("set-me.json"))?;
        merge_json(&a.join("app.json"), &a.join("set-app.json"))?;
    }
    let bench = Bench {
        dispatch: &dispatch,
        tools: &tools,
        charm: &charm,
        answers: &a,
    };
    bench.measure("update-status", runs)?;
    bench.measure("config-changed", runs)
}

/// The stubbed unit, ready to run measured hooks.
struct Bench<'a> {
    dispatch: &'a Path,
    tools: &'a Path,
    charm: &'a Path,
    answers: &'a Path,
}

impl Bench<'_> {
    /// Runs `hook` `runs` times; prints the calls by tool, the status it set, wall time
    /// and peak memory.
    fn measure(&self, hook: &str, runs: usize) -> Result<(), String> {
        let calls_file = self.answers.join("calls");
        let mut walls = Vec::with_capacity(runs);
        let mut peak = 0;
        let (mut calls, mut tools, mut writes) = (0, 0, 0);
        for i in 0..runs {
            let _ = fs::remove_file(&calls_file);
            let (wall, rss, ok) = run_once(self.dispatch, self.tools, self.charm, hook)?;
            if !ok {
                return Err(format!("{hook} run {i}: dispatch failed"));
            }
            walls.push(wall);
            peak = peak.max(rss);
            let text = fs::read_to_string(&calls_file).unwrap_or_default();
            let names: Vec<&str> = text
                .lines()
                .map(|l| l.split(' ').next().unwrap_or(""))
                .collect();
            calls = names.len();
            tools = names.iter().filter(|n| **n != "systemctl").count();
            writes += names.iter().filter(|n| **n == "relation-set").count();
            if i == 0 {
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for n in &names {
                    *count.entry(n).or_default() += 1;
                }
                println!("{hook}: calls by tool {count:?}");
                for l in text
                    .lines()
                    .filter(|l| l.starts_with("status-set") || l.starts_with("juju-log"))
                {
                    println!("{hook}: {l}");
                }
            }
        }
        walls.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{hook} x{runs}: {tools} hook-tool calls per hook ({calls} with systemctl); wall median {:.2} ms, p90 {:.2} ms, min {:.2} ms; peak RSS {peak} KiB; {writes} relation-set calls in all runs",
            ms(walls[runs / 2]),
            ms(walls[(runs * 9 / 10).min(runs - 1)]),
            ms(walls[0]),
        );
        Ok(())
    }
}
