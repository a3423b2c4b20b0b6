//! The fake `concourse` binary placed at `concourse/bin/concourse` in generated release
//! tarballs, and the parser of the log it writes.
//!
//! Owns: the bash script `fake_concourse.sh` (embedded with `include_str!`), its rendering
//! for a version/variant ([`render_script`], with the version's database schema from
//! [`schema_version`]), and [`read_log`], which turns its JSON-lines log into [`Record`]s.
//!
//! Imitates the `concourse` binary of concourse/concourse v7.14.3: the subcommands of
//! `cmd/concourse/main.go` (`web.go`, `worker.go`, `land_worker.go`, `retire_worker.go`,
//! `generate_key.go`, `migrate`), with their signals, exit codes and readiness:
//! - **Go's default signal handling** before a handler exists (Go `os/signal`): SIGHUP,
//!   SIGINT and SIGTERM kill the process *by the signal* (re-raised, not `exit 143`, so
//!   systemd counts it clean); SIGUSR1/SIGUSR2 are caught and dropped.
//! - **web** (`cmd/concourse/web.go`, `atc/atccmd/command.go` `RunCommand.Runner`,
//!   `tsa/tsacmd/command.go`): opens the database and migrates it up to its schema (a
//!   database it cannot reach: exit 1, as 7.13+ do), then, after `startup-delay`, installs
//!   the SIGHUP handler and starts the TSA, logging `tsa.listening` and `atc.listening`.
//!   Before that SIGHUP, SIGINT and SIGTERM kill it; afterwards SIGHUP reloads the
//!   authorized worker keys (`tsa.reloading-config`) and SIGINT/SIGTERM stop it with exit 0.
//!   A schema newer than it supports does not stop it (`atc/db/migration/migration.go`
//!   `Migrate` runs no unknown down migration): it records `web-on-newer-schema`.
//! - **worker** (`worker/workercmd/worker.go`, `worker/beacon_runner.go`, `worker/beacon.go`,
//!   `worker/signals_unix.go`, `tsa/client.go`): during `Runner()` (`startup-delay`)
//!   SIGUSR1/SIGUSR2 are lost and SIGHUP/SIGINT/SIGTERM kill it by the signal. Then the
//!   beacon registers with the TSA (`worker.beacon-runner.beacon.registered`), retrying
//!   every 5 s **forever** while no TSA answers (it never exits for that). A drain signal
//!   (USR1 land, USR2 retire) is buffered until the current registration attempt ended;
//!   registered, the worker lands or retires (after `land-delay`) and exits 0; when no TSA
//!   answers the drain, it exits 1. SIGINT/SIGTERM after start-up stop it with exit 0
//!   without landing, its build containers left running; SIGHUP always kills it.
//! - **migrate** (`atc/atccmd/command.go` `Migration.Execute`): `--supported-db-version`
//!   (no database needed), `--current-db-version`, `--migrate-db-to-version N` (up or
//!   down), `--migrate-to-latest-version`, upstream's order, output and errors.
//! - `--version`/`-v` prints the version (or [`WRONG_VERSION`] for the wrong-version
//!   variant); `generate-key -t rsa|ssh -f PATH [-b BITS]` writes a PEM private key
//!   (ssh-keygen, else openssl, else an obviously fake PEM; default 1024 bits, not upstream's
//!   4096: the charm never reads the size, and an RSA-2048 key was 13% of the simulator
//!   tier's CPU, 180 ms against 17 ms each) and, for `ssh`, `PATH.pub` in authorized_keys form;
//!   `land-worker`/`retire-worker` signal the worker found in `<run>/worker.pid`.
//!
//! The TSA is a Perl child of web listening on an abstract Unix socket named by the TSA
//! port and the fingerprint of the TSA host key: units of the simulator share one network
//! namespace and addresses, so a TCP port would collide. A worker reaches the TSA its
//! `CONCOURSE_TSA_HOST` port and `CONCOURSE_TSA_PUBLIC_KEY` name, and registers when its
//! public key is in the TSA's authorized keys as last (re)loaded. The database is played
//! through a directory: a `CONCOURSE_POSTGRES_HOST` starting with `/` is a socket directory
//! (as libpq and pgx read it) holding `.s.PGSQL.<port>` and the migration history file
//! `fake-concourse-db.<database>` (`juju_sim::PostgresOptions::data_dir`). Any other host
//! is a database nobody plays: web starts without keeping a schema (`database not played`)
//! and `migrate` cannot reach it.
//!
//! - `web` and `worker` refuse to start (exit 1, `start-failed` record) as the real binary
//!   does: an invalid choice, bool, number, duration or AES key, a missing required
//!   setting, a private key that is not RSA, no main-team user or group (web); and, more
//!   strictly than upstream, any `CONCOURSE_*` variable the release does not define
//!   ([`ENV_TABLE`], taken from Concourse's sources).
//!
//! Invariants: every invocation except usage errors appends at least one record; a record is
//! one line, appended under `flock(1)` when available, so concurrent processes never
//! interleave. Hazards: the log lives in the unit's own `/var/log` (the simulator gives each
//! unit a private view); a service running as a non-root user can only append if the log
//! already exists world-writable (the script creates it 0666) and otherwise writes to the
//! fallback `/tmp/fake-concourse.log` — read both ([`DEFAULT_LOG_PATHS`]). Simplified on
//! purpose: the host part of `CONCOURSE_TSA_HOST` is not checked (port and key are); a TSA
//! with the wrong host key reads as unreachable (upstream retries a handshake error the
//! same way, forever); of the two ready channels Go's `select` picks at random when a drain
//! signal meets a failed registration, the fake always picks the drain.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The script template; `@VERSION@`, `@REPORTED_VERSION@`, `@BROKEN@`, `@SCHEMA@` and
/// `@KNOWN_SCHEMAS@` are substituted.
pub const SCRIPT_TEMPLATE: &str = include_str!("fake_concourse.sh");

/// What the wrong-version variant prints for `--version` (what upstream dev builds print).
pub const WRONG_VERSION: &str = "0.0.0-dev";

/// Where records go by default: the primary log, then the fallback for non-root writers.
pub const DEFAULT_LOG_PATHS: [&str; 2] = ["/var/log/fake-concourse.log", "/tmp/fake-concourse.log"];

/// Default directory of pid files and control files (`FAKE_CONCOURSE_RUN`).
pub const DEFAULT_RUN_DIR: &str = "/run/fake-concourse";

/// How the rendered script behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Works as described in the module docs.
    Normal,
    /// `web`, `worker` and `--version` print an error and exit 1.
    Broken,
    /// `--version` prints [`WRONG_VERSION`]; everything else works.
    WrongVersion,
    /// `--version` works; `web` and `worker` print an error and exit 1 (fails to start).
    CrashOnStart,
    /// Web works; `worker` prints an error and exits 1 (a worker that cannot run it).
    WorkerCrashOnStart,
}

/// The newest database migration of each release line (`--supported-db-version`, from
/// the `atc/db/migration/migrations/<version>_*.up.*` files of each tag).
const SCHEMAS: [((u64, u64), u64); 5] = [
    ((7, 9), 1_666_754_000),
    ((7, 14), 1_746_768_931),
    ((8, 0), 1_765_921_815),
    ((8, 1), 1_771_492_499),
    ((8, 2), 1_776_182_280),
];

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut it = version.trim_start_matches('v').split(['.', '-', '+']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The database schema version `version` migrates to: upstream's for 7.9 to 8.2 (7.9 to
/// 7.13 share one), and for other versions a made-up one that keeps the order of versions.
pub fn schema_version(version: &str) -> u64 {
    let Some(mm) = major_minor(version) else {
        return 1_600_000_000;
    };
    if mm < SCHEMAS[0].0 {
        return 1_600_000_000 + mm.0 * 1000 + mm.1.min(999);
    }
    if mm > SCHEMAS[SCHEMAS.len() - 1].0 {
        let (last_mm, last) = SCHEMAS[SCHEMAS.len() - 1];
        return last + ((mm.0 - last_mm.0) * 1000 + mm.1.min(999)) * 1000;
    }
    SCHEMAS
        .iter()
        .rev()
        .find(|(from, _)| mm >= *from)
        .map_or(SCHEMAS[0].1, |(_, s)| *s)
}

/// Every schema version `version` knows (its migrations), ascending.
pub fn known_schemas(version: &str) -> Vec<u64> {
    let own = schema_version(version);
    let mut v: Vec<u64> = SCHEMAS
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| *s < own)
        .collect();
    v.push(own);
    v
}

/// The charm's table of the variables Concourse defines (see the file's header).
pub const ENV_TABLE: &str = include_str!("../../../data/concourse-env-vars.tsv");

/// The rows of [`ENV_TABLE`] the release `version` defines (`command name type choices`),
/// matched by major.minor against the tags read; every row when no tag matches.
pub fn env_table_for(version: &str) -> String {
    let minor = |v: &str| v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    let rows: Vec<Vec<&str>> = ENV_TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    let known = rows.iter().any(|r| {
        r.get(4)
            .is_some_and(|t| t.split(',').any(|t| minor(t) == minor(version)))
    });
    rows.iter()
        .filter(|r| {
            !known
                || r.get(4)
                    .is_some_and(|t| t.split(',').any(|t| minor(t) == minor(version)))
        })
        .map(|r| r.iter().take(4).copied().collect::<Vec<_>>().join("\t"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace('\'', "")
}

/// [`env_table_for`] as the bodies of two bash associative arrays keyed by
/// `<command>:<name>`: the types and the choices (the table has no single quotes).
fn env_arrays_for(version: &str) -> (String, String) {
    let (mut kinds, mut choices) = (Vec::new(), Vec::new());
    for row in env_table_for(version).lines() {
        let mut f = row.split('\t');
        let (Some(cmd), Some(name), Some(kind)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let key = format!("['{cmd}:{name}']");
        kinds.push(format!("{key}='{kind}'"));
        choices.push(format!("{key}='{}'", f.next().unwrap_or("")));
    }
    (kinds.join(" "), choices.join(" "))
}

/// Renders the fake binary for `version`.
pub fn render_script(version: &str, behaviour: Behaviour) -> String {
    let reported = match behaviour {
        Behaviour::WrongVersion => WRONG_VERSION,
        _ => version,
    };
    let broken = match behaviour {
        Behaviour::Broken => "1",
        Behaviour::CrashOnStart => "2",
        Behaviour::WorkerCrashOnStart => "3",
        _ => "0",
    };
    let known: Vec<String> = known_schemas(version).iter().map(u64::to_string).collect();
    // The version is placed inside single quotes: drop quotes so it cannot break the script.
    let clean = |s: &str| s.replace(['\'', '\n', '\\'], "");
    let (kinds, choices) = env_arrays_for(version);
    SCRIPT_TEMPLATE
        .replace("@VERSION@", &clean(version))
        .replace("@REPORTED_VERSION@", &clean(reported))
        .replace("@BROKEN@", broken)
        .replace("@ENV_KIND@", &kinds)
        .replace("@ENV_CHOICES@", &choices)
        .replace("@SCHEMA@", &schema_version(version).to_string())
        .replace("@KNOWN_SCHEMAS@", &known.join(" "))
}

/// One event logged by the fake binary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    /// Seconds since the epoch (bash `EPOCHREALTIME`).
    #[serde(default)]
    pub ts: f64,
    /// `start`, `start-failed`, `listening`, `registered`, `registration lost`,
    /// `tsa unreachable`, `drain requested`, `drain failed`, `container`, `landing`,
    /// `landed`, `retiring`, `retired`, `killed without landing`,
    /// `killed before the TSA started`, `stopped`, `reloaded`, `ignored signal`,
    /// `ignoring SIGTERM`, `migrated`, `web-on-newer-schema`, `database not played`,
    /// `version`, `generate-key`, `generate-key-failed`, `land-worker`, `retire-worker`,
    /// `migrate`, `migrate-failed`, `unknown-command`.
    pub event: String,
    /// First argument (`web`, `worker`, `--version`, ...).
    #[serde(default)]
    pub subcommand: String,
    /// Arguments after argv\[0\].
    #[serde(default)]
    pub argv: Vec<String>,
    /// `CONCOURSE_*` variables plus lowercase `http_proxy`, `https_proxy`, `no_proxy`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// argv\[0\] made absolute (the path it was started by, e.g. through a symlink).
    #[serde(default)]
    pub exe: String,
    /// `readlink -f` of argv\[0\]: the real file, e.g. `.../releases/7.14.3/concourse/bin/concourse`.
    #[serde(default)]
    pub exe_resolved: String,
    /// The version this fake binary belongs to (not what `--version` prints).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub ppid: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub cwd: String,
    /// `PATH` of the process.
    #[serde(default)]
    pub path_env: String,
    /// Free text: the signal, the key file, the failure reason.
    #[serde(default)]
    pub detail: Option<String>,
    /// For `land-worker`/`retire-worker`: the worker pid that was signalled; for
    /// `container`: the container's pid.
    #[serde(default)]
    pub signalled_pid: Option<u32>,
}

/// Reads a log written by the fake binary. A missing file gives no records; lines that are
/// not valid records (a torn write, garbage) are skipped, never a panic.
pub fn read_log(path: &Path) -> std::io::Result<Vec<Record>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse_log(&bytes))
}

/// Parses log content; see [`read_log`].
pub fn parse_log(bytes: &[u8]) -> Vec<Record> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let text = String::from_utf8_lossy(line);
            let text = text.trim();
            if text.is_empty() {
                return None;
            }
            serde_json::from_str::<Record>(text).ok()
        })
        .collect()
}

/// Reads the primary and fallback logs under `root` (a unit's filesystem root as seen from
/// the host, or `/` inside the unit) and returns all records sorted by time.
pub fn read_logs_under(root: &Path) -> std::io::Result<Vec<Record>> {
    let mut all = Vec::new();
    for p in DEFAULT_LOG_PATHS {
        all.extend(read_log(&root.join(p.trim_start_matches('/')))?);
    }
    all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_substitutes_markers() {
        let s = render_script("7.14.3", Behaviour::WrongVersion);
        assert!(s.contains("FAKE_VERSION='7.14.3'"));
        assert!(s.contains("REPORTED_VERSION='0.0.0-dev'"));
        assert!(s.contains("BROKEN='0'"));
        assert!(!s.contains("@VERSION@") && !s.contains("@REPORTED_VERSION@"));
        assert!(!s.contains("@BROKEN@"));
        let b = render_script("1'2", Behaviour::Broken);
        assert!(b.contains("FAKE_VERSION='12'"));
        assert!(b.contains("BROKEN='1'"));
    }

    #[test]
    fn the_env_table_follows_the_version() {
        let t = env_table_for("7.14.3");
        assert!(t.contains("web\tCONCOURSE_SIGNING_KEY_CHECK_INTERVAL\t"));
        assert!(!t.contains("CONCOURSE_GITEA_CLIENT_ID"));
        assert!(env_table_for("8.2.5").contains("web\tCONCOURSE_GITEA_CLIENT_ID\t"));
        assert!(!env_table_for("7.11.2").contains("CONCOURSE_SIGNING_KEY_CHECK_INTERVAL"));
        // an unknown version: the union
        assert!(env_table_for("9.9.9").contains("CONCOURSE_GITEA_CLIENT_ID"));
        let s = render_script("7.14.3", Behaviour::Normal);
        assert!(s.contains("['web:CONCOURSE_PEER_ADDRESS']='string'"));
        assert!(s.contains("['worker:CONCOURSE_BAGGAGECLAIM_DRIVER']='choice'"));
        assert!(!s.contains("CONCOURSE_GITEA_CLIENT_ID"));
    }

    /// Runs the rendered fake's `sub` with only `env` (and PATH/HOME), for at most `secs`;
    /// returns (exit code, stderr); 124 means it was still running (it started). A refusal
    /// ends by itself, so its checks get a minute: on a loaded machine the fake's start-up
    /// checks alone took over 2 s.
    fn run_fake(dir: &Path, sub: &str, env: &[(&str, String)], secs: u32) -> (i32, String) {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("concourse");
        std::fs::write(&script, render_script("7.14.3", Behaviour::Normal)).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = std::process::Command::new("timeout");
        cmd.arg(secs.to_string()).arg(&script).arg(sub).env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.env("FAKE_CONCOURSE_LOG", dir.join("log"));
        cmd.env("FAKE_CONCOURSE_FALLBACK_LOG", dir.join("log2"));
        cmd.env("FAKE_CONCOURSE_RUN", dir.join("run"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn web_refuses_to_start_like_the_real_binary() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = dir.path().join("rsa");
        std::fs::write(
            &rsa,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let ssh = dir.path().join("openssh");
        std::fs::write(&ssh, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n").unwrap();
        let key = rsa.display().to_string();
        let good = vec![
            ("CONCOURSE_TSA_HOST_KEY", key.clone()),
            ("CONCOURSE_ADD_LOCAL_USER", "admin:pw".to_string()),
            ("CONCOURSE_MAIN_TEAM_LOCAL_USER", "admin".to_string()),
            ("CONCOURSE_LOG_LEVEL", "info".to_string()),
            // a database nobody plays: web carries on (see the script's run_web)
            ("CONCOURSE_POSTGRES_HOST", "127.0.0.1".to_string()),
        ];
        assert_eq!(
            run_fake(dir.path(), "web", &good, 2).0,
            124,
            "a valid web starts"
        );
        let with = |k: &'static str, v: &str| {
            let mut e = good.clone();
            e.retain(|(n, _)| *n != k);
            e.push((k, v.to_string()));
            run_fake(dir.path(), "web", &e, 60)
        };
        for (k, v, says) in [
            (
                "CONCOURSE_ENABLE_ACROSS_STEPS",
                "true",
                "defines no setting",
            ),
            ("CONCOURSE_LOG_LEVEL", "warn", "Invalid value `warn'"),
            ("CONCOURSE_POSTGRES_SSLMODE", "prefer", "Invalid value"),
            (
                "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY",
                "random,fastest",
                "Invalid value",
            ),
            ("CONCOURSE_ENCRYPTION_KEY", "short", "invalid key size 5"),
            ("CONCOURSE_GC_FAILED_GRACE_PERIOD", "90", "invalid duration"),
            (
                "CONCOURSE_TSA_HOST_KEY",
                &ssh.display().to_string(),
                "not a valid RSA private key",
            ),
            (
                "CONCOURSE_BAGGAGECLAIM_DRIVER",
                "naive",
                "defines no setting",
            ),
        ] {
            let (code, err) = with(k, v);
            assert_eq!(code, 1, "{k}={v}: {err}");
            assert!(err.contains(says), "{k}={v}: {err}");
        }
        let (code, err) = run_fake(dir.path(), "web", &good[1..], 60);
        assert_eq!(code, 1);
        assert!(err.contains("the required flag `--tsa-host-key'"), "{err}");
        let (code, err) = run_fake(dir.path(), "web", &[good[0].clone(), good[3].clone()], 60);
        assert_eq!(code, 1);
        assert!(err.contains("default team auth not configured"), "{err}");
    }

    #[test]
    fn schemas_follow_upstream_and_keep_order() {
        assert_eq!(schema_version("7.13.2"), 1_666_754_000);
        assert_eq!(schema_version("7.14.3"), 1_746_768_931);
        assert_eq!(schema_version("8.0.0"), 1_765_921_815);
        assert_eq!(schema_version("8.2.5"), 1_776_182_280);
        let order = [
            "0.1.0", "7.0.0", "7.9.1", "7.14.0", "8.0.1", "8.1.0", "8.2.9", "9.9.9",
        ];
        for w in order.windows(2) {
            assert!(schema_version(w[0]) < schema_version(w[1]), "{w:?}");
        }
        assert_eq!(
            known_schemas("8.0.0"),
            [1_666_754_000, 1_746_768_931, 1_765_921_815]
        );
        assert_eq!(known_schemas("7.0.0"), [schema_version("7.0.0")]);
        let s = render_script("8.0.0", Behaviour::Normal);
        assert!(s.contains("SCHEMA='1765921815'"));
        assert!(s.contains("KNOWN_SCHEMAS='1666754000 1746768931 1765921815'"));
    }

    #[test]
    fn parse_skips_garbage() {
        let log = b"{\"event\":\"start\",\"pid\":5}\nnot json\n\xff\xfe\n{\"event\":\"x\"";
        let recs = parse_log(log);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].event, "start");
        assert_eq!(recs[0].pid, 5);
    }
}
