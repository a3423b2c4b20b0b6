//! Shared set-up for the simulator tests: a model, the charm, a release server.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use juju_sim::{CharmSource, DeployOptions, Model, ModelOptions, PostgresOptions, Volume};
use libtest_mimic::{Failed, Trial};
use release_fixtures::server::ReleaseServer;
use release_fixtures::tarball::{ReleaseSpec, TarballCache, Variant};

pub type TestResult = Result<(), Failed>;

/// Generous bound for anything a test waits for.
pub const LONG: Duration = Duration::from_secs(180);

/// Versions used by the tests.
pub const V1: &str = "7.14.3";
pub const V2: &str = "8.0.0";

/// Size of generated test tarballs.
pub const TARBALL_SIZE: u64 = 2 * 1024 * 1024;

/// The longest scenarios in `cargo xtask test`, longest first (`SIM_TIMES=<file>` records
/// every test's wall time). They start first, so that they overlap the rest instead of
/// running alone at the end: the longest are mostly waits, and a long one started last
/// left one core idle for its last 10 s. (Running the rest niced shortened the tier alone,
/// 181.6 -> 165.1 s, but starved scenarios whose production code allows 1.5 s for a crash
/// to show: a worker that crashes on start was seen running and reported switched.)
pub const LONGEST: &[&str] = &[
    "faults::sweep_self_notify",
    "faults::sweep_no_self_notify",
    "upgrade::regression_a_lock_wait_is_not_an_upgrade_failure",
    "storage::wrong_sha1_for_60s_3_units_downloads_at_most_3_times",
    "drain::regression_a_reload_while_web_starts_does_not_kill_it",
    "storage::eight_units_at_once_download_once_5_rounds",
    "roles::auto_mode_web_and_workers_get_their_settings_and_restart_only_when_needed",
    "storage::shared_volume_downloads_once_and_later_units_reuse",
    "roles::web_and_worker_applications_over_tsa_flight",
    "roles::auto_mode_web_stays_on_leader_change_removed_worker_retires_actions",
    "roles::role_changes_stop_what_a_unit_no_longer_runs",
    "drain::regression_escalation_keeps_build_containers",
    "observe::played_prometheus_collector_and_certificate_provider_then_removed",
    "drain::regression_workers_land_once_registered_and_are_never_restarted",
    "storage::upgrade_fault::wrong_sha1_3_units",
    "lifecycle::settled_units_keep_to_four_calls_per_update_status",
    "storage::upgrade_fault::server_error",
    "upgrade::story_pinned_deployment_upgraded_by_action",
    "teams::three_web_units_share_keys_and_every_worker_knows_every_tsa",
    // mostly waits (15 s alone, 2 s of CPU): started last, it was the tier's last 12 s
    "upgrade::action_refusals",
];

/// When the process started its first test (for [`trial`]'s start times).
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// A simulator test. With `SIM_TIMES=<file>` set, its wall time is appended to that file
/// (`<seconds> <name> started at <seconds>`, from the first test's start), so a slow
/// tier can be broken down per test and its schedule seen.
#[allow(clippy::disallowed_methods)] // harness knob, not the charm's environment
pub fn trial(name: impl Into<String>, f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    let name = name.into();
    let label = name.clone();
    Trial::test(name, move || {
        let t0 = std::time::Instant::now();
        let epoch = *EPOCH.get_or_init(|| t0);
        let r = f();
        if let Some(path) = std::env::var_os("SIM_TIMES") {
            use std::io::Write;
            if let Ok(mut out) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(
                    out,
                    "{:8.1} {label} started at {:.1}",
                    t0.elapsed().as_secs_f64(),
                    (t0 - epoch).as_secs_f64()
                );
            }
        }
        r
    })
}

/// Fails the test with a message (and the model dump, when given).
pub fn fail(msg: impl Into<String>) -> Failed {
    Failed::from(msg.into())
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(fail(msg()))
    }
}

/// Where the fake `concourse` reads its control files (crates/release-fixtures/src/fake_concourse.sh).
pub const RUN: &str = "/run/fake-concourse";

/// Sets the fake `concourse`'s control file `name` on `unit` (read when needed).
pub fn control(m: &Model, unit: &str, name: &str, value: &str) -> TestResult {
    m.write_file(unit, &format!("{RUN}/{name}"), value.as_bytes())
        .map_err(|e| fail(format!("{unit}: control {name}: {e}")))
}

pub fn charm() -> CharmSource {
    CharmSource::dir(env!("CARGO_MANIFEST_DIR"), dispatch())
}

/// The `dispatch` the units run: `SIM_DISPATCH` when set (`cargo xtask test` sets it to the
/// release build that `cargo xtask pack` ships), else this build's debug binary.
#[allow(clippy::disallowed_methods)] // harness knob, not the charm's environment
pub fn dispatch() -> std::path::PathBuf {
    std::env::var_os("SIM_DISPATCH")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_dispatch").into())
}

pub fn model() -> Result<Model, Failed> {
    model_with(ModelOptions {
        update_status_interval: Some(Duration::from_secs(3)),
        ..ModelOptions::default()
    })
}

pub fn model_with(opts: ModelOptions) -> Result<Model, Failed> {
    Model::new(opts).map_err(|e| fail(format!("model: {e}")))
}

/// Tarballs are generated once, in cargo's per-target temp dir (kept across runs).
pub fn tarballs() -> &'static TarballCache {
    static CACHE: OnceLock<TarballCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        TarballCache::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs"))
            .expect("tarball cache directory")
    })
}

/// A release server with the given versions registered.
pub fn release_server(versions: &[(&str, Variant)]) -> Result<ReleaseServer, Failed> {
    let server = ReleaseServer::start().map_err(|e| fail(format!("release server: {e}")))?;
    for (v, variant) in versions {
        let t = tarballs()
            .get(&ReleaseSpec::new(v, TARBALL_SIZE, *variant))
            .map_err(|e| fail(format!("tarball {v}: {e}")))?;
        server.register(t);
    }
    Ok(server)
}

/// Config pointing the charm at the local server.
pub fn config(server: &ReleaseServer, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c: BTreeMap<String, String> = BTreeMap::new();
    c.insert("release-url".into(), server.release_url_template());
    c.insert("release-api-url".into(), server.github_api_url());
    for (k, v) in pairs {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

pub fn deploy(
    m: &Model,
    app: &str,
    n: usize,
    config: BTreeMap<String, String>,
    storage: Volume,
) -> Result<Vec<String>, Failed> {
    m.deploy(
        charm(),
        app,
        n,
        DeployOptions {
            config: config
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
            storage,
            ..DeployOptions::default()
        },
    )
    .map_err(|e| fail(format!("deploy: {e}")))
}

// ----- fixtures: a deployment in one call -----

/// The charm's application name in the fixtures.
pub const APP_NAME: &str = "concourse-ci";

/// A running deployment: the model, its release server and the charm's units. Dropping it
/// tears the model down first, then the server.
pub struct Deployment {
    pub model: Model,
    pub server: ReleaseServer,
    pub units: Vec<String>,
}

/// What [`deploy_with`] sets up; see [`DeploySpec::default`].
pub struct DeploySpec<'a> {
    pub units: usize,
    /// Charm config besides `release-url` and `release-api-url` (which point at the server).
    pub config: &'a [(&'a str, &'a str)],
    /// Releases the server serves.
    pub releases: &'a [(&'a str, Variant)],
    /// The version the GitHub endpoint calls latest (`None`: the highest served).
    pub latest: Option<&'a str>,
    pub volume: Volume,
    pub options: ModelOptions,
    /// The fake PostgreSQL provider to deploy and relate (`None`: no database).
    pub postgres: Option<PostgresOptions>,
    /// Returns once every unit is `active` with this version in its message.
    pub active_on: &'a str,
}

impl Default for DeploySpec<'_> {
    /// 3 units in `auto` mode (one web, the others workers) on a shared volume, V1 and V2
    /// served with V1 the latest, PostgreSQL related, no version pinned; active on V1.
    fn default() -> Self {
        DeploySpec {
            units: 3,
            config: &[],
            releases: &[(V1, Variant::Normal), (V2, Variant::Normal)],
            latest: Some(V1),
            volume: Volume::Shared,
            options: ModelOptions {
                update_status_interval: Some(Duration::from_secs(3)),
                ..ModelOptions::default()
            },
            postgres: Some(PostgresOptions::default()),
            active_on: V1,
        }
    }
}

/// Deploys what `spec` says and waits until every unit is active on `spec.active_on` and
/// every service it started has logged its start.
pub fn deploy_with(spec: DeploySpec<'_>) -> Result<Deployment, Failed> {
    let server = release_server(spec.releases)?;
    server.set_github_latest(spec.latest);
    let model = model_with(spec.options)?;
    let units = deploy(
        &model,
        APP_NAME,
        spec.units,
        config(&server, spec.config),
        spec.volume,
    )?;
    if let Some(pg) = spec.postgres {
        with_postgresql(&model, APP_NAME, pg)?;
    }
    let version = spec.active_on;
    run_until(&model, &format!("every unit active on {version}"), |m| {
        units.iter().all(|u| {
            let s = m.unit_status(u);
            s.status == "active" && s.message.contains(version) && unlogged_starts(m, u).is_empty()
        })
    })?;
    Ok(Deployment {
        model,
        server,
        units,
    })
}

/// One `mode=all` unit on V1 with PostgreSQL: web and worker on one machine.
pub fn deploy_one_all() -> Result<Deployment, Failed> {
    deploy_with(DeploySpec {
        units: 1,
        config: &[("mode", "all"), ("version", V1)],
        releases: &[(V1, Variant::Normal)],
        ..DeploySpec::default()
    })
}

/// `n` units in `auto` mode with PostgreSQL related, no version pinned (V1 is the latest
/// of V1 and V2), every unit active on V1.
pub fn deploy_auto_with_pg(n: usize) -> Result<Deployment, Failed> {
    deploy_with(DeploySpec {
        units: n,
        ..DeploySpec::default()
    })
}

/// `n` units in `auto` mode with PostgreSQL related, pinned to `version`
/// (`--config version=<version>`; served with V1 and V2), every unit active on it.
pub fn deployed_on(version: &str, n: usize) -> Result<Deployment, Failed> {
    deploy_with(DeploySpec {
        units: n,
        config: &[("version", version)],
        releases: &[
            (V1, Variant::Normal),
            (V2, Variant::Normal),
            (version, Variant::Normal),
        ],
        active_on: version,
        ..DeploySpec::default()
    })
}

/// The fixtures' own checks (small deployments, a few seconds each).
pub fn trials() -> Vec<Trial> {
    vec![
        trial("fixtures::deploy_auto_with_pg", fixture_auto_with_pg),
        trial(
            "fixtures::deployed_on_pins_the_version",
            fixture_deployed_on,
        ),
        trial(
            "fixtures::the_secret_scan_reports_what_it_finds",
            secret_scan_reports,
        ),
    ]
}

/// The scan behind [`assert_no_secret_leaks`] finds a secret in any world-readable file
/// (binary too, nested too), and only there.
fn secret_scan_reports() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().map_err(|e| fail(format!("temp dir: {e}")))?;
    let write = |rel: &str, bytes: &[u8], mode: u32| -> TestResult {
        let p = dir.path().join(rel);
        let io = |e: std::io::Error| fail(format!("{rel}: {e}"));
        std::fs::create_dir_all(p.parent().unwrap_or(dir.path())).map_err(io)?;
        std::fs::write(&p, bytes).map_err(io)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io)
    };
    write(
        "bin/tarball",
        b"\x1f\x8b\xff\xfe pw-secret-one \x00\xff",
        0o644,
    )?;
    write("a/b/c/env", b"PASSWORD=pw-secret-two\n", 0o604)?;
    write("private", b"pw-secret-one", 0o600)?;
    write("var/log/fake-concourse.log", b"pw-secret-two", 0o666)?;
    write("clean", b"nothing here", 0o644)?;
    let secrets: SecretValues = vec![
        ("one".into(), "pw-secret-one".into()),
        ("two".into(), "pw-secret-two".into()),
        ("short".into(), "pw".into()),
    ];
    let mut scan = SecretScan::new(&secrets);
    scan.files("u/0", dir.path());
    scan.check("a status", b"set pw-secret-two");
    let mut leaks = scan.leaks;
    leaks.sort();
    let at = |rel: &str| format!("u/0 file {}", dir.path().join(rel).display());
    let want = vec![
        format!("one in {}", at("bin/tarball")),
        "two in a status".to_string(),
        format!("two in {}", at("a/b/c/env")),
    ];
    ensure(leaks == want, || {
        format!("found {leaks:#?}, want {want:#?}")
    })
}

fn fixture_auto_with_pg() -> TestResult {
    let d = deploy_auto_with_pg(2)?;
    let m = &d.model;
    ensure(
        m.relation_id(&format!("{APP_NAME}:postgresql")).is_some(),
        || "PostgreSQL is not related".into(),
    )?;
    for u in &d.units {
        ensure(pointer_version(m, u).as_deref() == Some(V1), || {
            format!("{u} points at {:?}", pointer_target(m, u))
        })?;
    }
    no_failed_hooks(m, &d.units)
}

fn fixture_deployed_on() -> TestResult {
    let d = deployed_on(V2, 1)?;
    let u = &d.units[0];
    ensure(pointer_version(&d.model, u).as_deref() == Some(V2), || {
        format!("{u} points at {:?}", pointer_target(&d.model, u))
    })?;
    ensure(d.server.count_complete_downloads(V1) == 0, || {
        "the pinned deployment downloaded V1".into()
    })
}

pub fn settle(m: &Model) -> TestResult {
    m.settle(LONG).map_err(|e| fail(format!("settle: {e}")))
}

pub fn run_until(m: &Model, what: &str, pred: impl Fn(&Model) -> bool) -> TestResult {
    m.run_until_named(what, LONG, pred)
        .map_err(|e| fail(format!("waiting for {what}: {e}")))
}

/// No unit of the list had a failed hook.
pub fn no_failed_hooks(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        let failed = m.failed_hooks(u);
        ensure(failed.is_empty(), || {
            format!(
                "{u} had failed hooks: {:?}\n{}",
                failed
                    .iter()
                    .map(|h| (&h.name, &h.stderr))
                    .collect::<Vec<_>>(),
                m.dump()
            )
        })?;
    }
    Ok(())
}

/// No hook of these units read or wrote the same datum twice (the per-hook cache works).
pub fn no_duplicate_tool_calls(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        for h in m.hooks(u) {
            let d: Vec<_> = h
                .duplicate_calls()
                .into_iter()
                .filter(|(args, _)| {
                    !matches!(
                        args.first().map(String::as_str),
                        Some("juju-log" | "action-log")
                    )
                })
                .collect();
            ensure(d.is_empty(), || {
                format!("{u} {}: repeated tool calls {d:?}", h.name)
            })?;
        }
    }
    Ok(())
}

/// The hooks of `units` that started at or after `since` keep to `budget` (issue 13:
/// a regression in call counts fails the scenario). Returns what was measured.
pub fn within_budget(
    m: &Model,
    units: &[String],
    since: Duration,
    budget: &juju_sim::CallBudget,
) -> Result<juju_sim::BudgetReport, Failed> {
    let hooks: Vec<(String, juju_sim::HookRecord)> = units
        .iter()
        .flat_map(|u| {
            m.hooks(u)
                .into_iter()
                .filter(|h| h.started >= since)
                .map(move |h| (u.clone(), h))
        })
        .collect();
    let report = budget
        .check(hooks.iter().map(|(u, h)| (u.as_str(), h)))
        .map_err(fail)?;
    eprintln!(
        "call budget: {} hooks, {} calls, max {} per hook, mean {:.2}",
        report.hooks, report.calls, report.max, report.mean
    );
    Ok(report)
}

// ----- helpers for the role tests (issue 5) -----

/// Host directory holding a unit's overlay upper dirs and private dirs; it outlives the
/// unit, so logs of a removed unit can still be read.
pub fn unit_dir(m: &Model, unit: &str) -> std::path::PathBuf {
    m.run_dir()
        .join("units")
        .join(juju_sim::machine::unit_tag(unit))
}

/// Host path of a file the unit wrote at `unit_path` (under /etc, /var, /opt, /usr/local,
/// /tmp, /run, /root, /home or /srv).
pub fn unit_file(m: &Model, unit: &str, unit_path: &str) -> std::path::PathBuf {
    juju_sim::machine::upper_path(&unit_dir(m, unit), unit_path)
        .unwrap_or_else(|| panic!("{unit_path} is not a per-unit path"))
}

/// When the model was created (seconds since the epoch). A unit's /var is an overlay on
/// the host's: a log that already existed on the host (other tests running there) is
/// copied up whole on the unit's first append, so older lines are not the unit's.
pub fn model_birth(m: &Model) -> f64 {
    std::fs::metadata(m.run_dir().join(juju_sim::machine::OWNER_LOCK))
        .and_then(|md| md.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64() - 1.0)
        .unwrap_or(0.0)
}

/// Records of the fake `concourse` binary on a unit (primary and fallback log), by time.
pub fn concourse_log(m: &Model, unit: &str) -> Vec<release_fixtures::fake_concourse::Record> {
    let birth = model_birth(m);
    let mut all = Vec::new();
    for p in release_fixtures::fake_concourse::DEFAULT_LOG_PATHS {
        all.extend(
            release_fixtures::fake_concourse::read_log(&unit_file(m, unit, p)).unwrap_or_default(),
        );
    }
    all.retain(|r| r.ts >= birth);
    all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    all
}

/// The fake systemctl journal of a unit.
pub fn journal(m: &Model, unit: &str) -> Vec<fake_systemd::JournalEntry> {
    let birth = model_birth(m);
    let mut j = fake_systemd::read_journal(&unit_file(m, unit, "/var/log/fake-systemctl.journal"))
        .unwrap_or_default();
    j.retain(|e| e.ts >= birth);
    j
}

/// What a failure needs to be understood: every `concourse <sub>` record of `unit` (pid, event,
/// detail, TSA settings), its hooks and its systemd journal, with times relative to `mark`.
pub fn history(m: &Model, unit: &str, sub: &str, mark: f64) -> String {
    let mut out = format!("{unit}: {sub} records:\n");
    for r in concourse_log(m, unit)
        .iter()
        .filter(|r| r.subcommand == sub)
    {
        out += &format!(
            "  {:+8.2} pid {} {} {:?} tsa={} key={}\n",
            r.ts - mark,
            r.pid,
            r.event,
            r.detail,
            r.env.get("CONCOURSE_TSA_HOST").map_or("", String::as_str),
            r.env
                .get("CONCOURSE_TSA_PUBLIC_KEY")
                .map_or("", String::as_str),
        );
    }
    out += "hooks:\n";
    for h in m.hooks(unit) {
        out += &format!("  {:?} {} {:?}\n", h.started, h.name, h.outcome);
    }
    out += "juju-log (info and above):\n";
    for l in m.logs(unit).iter().filter(|l| l.level != "DEBUG") {
        out += &format!("  {:?} {} {} {}\n", l.at, l.hook, l.level, l.message);
    }
    out += "journal:\n";
    for e in journal(m, unit).iter().filter(|e| e.action != "call") {
        out += &format!(
            "  {:+8.2} {} {} {:?}\n",
            e.ts - mark,
            e.unit,
            e.action,
            e.argv
        );
    }
    out
}

/// Seconds since the epoch (the clock of journal entries and fake concourse records).
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What disturbed the `service` (`concourse-server` or `concourse-worker`) of a unit since
/// `since`: journal effects (start, restart, stop, reload, kill, exits) and the fake
/// binary's records (start, stopped, landing, retiring, reloaded, killed without landing).
pub fn disturbances(m: &Model, unit: &str, service: &str, since: f64) -> Vec<String> {
    let sub = match service {
        "concourse-server" => "web",
        "concourse-worker" => "worker",
        other => other,
    };
    let mut out = Vec::new();
    for e in journal(m, unit) {
        if e.ts < since || !e.unit.starts_with(service) {
            continue;
        }
        let effect = match e.action.as_str() {
            "start" => e.detail.as_deref() != Some("already active"),
            "restart" | "stop" | "reload" | "kill" | "signal" | "started" | "exited"
            | "escalate" => true,
            _ => false,
        };
        if effect {
            out.push(format!(
                "journal {} {} {}",
                e.action,
                e.signal.unwrap_or_default(),
                e.detail.unwrap_or_default()
            ));
        }
    }
    // What the fake binary reports without being disturbed: its beacon (re)registering,
    // web's TSA listening and migrating, build containers.
    let quiet = [
        "version",
        "registered",
        "registration lost",
        "tsa unreachable",
        "listening",
        "migrated",
        "container",
        "database not played",
    ];
    for r in concourse_log(m, unit) {
        if r.ts >= since && r.subcommand == sub && !quiet.contains(&r.event.as_str()) {
            out.push(format!(
                "concourse {} {}",
                r.event,
                r.detail.unwrap_or_default()
            ));
        }
    }
    out
}

/// The last `start` record of `concourse <subcommand>` on a unit.
pub fn last_start(
    m: &Model,
    unit: &str,
    subcommand: &str,
) -> Option<release_fixtures::fake_concourse::Record> {
    concourse_log(m, unit)
        .into_iter()
        .rev()
        .find(|r| r.event == "start" && r.subcommand == subcommand)
}

/// Whether the process of `concourse <subcommand>` started last on the unit still runs.
pub fn service_pid(m: &Model, unit: &str, subcommand: &str) -> Option<u32> {
    let rec = last_start(m, unit, subcommand)?;
    let alive = m.processes(unit).iter().any(|p| p.pid as u32 == rec.pid);
    alive.then_some(rec.pid)
}

/// `opts` with the database played in the model's run directory (visible in every unit),
/// unless it names a directory already: the fake `concourse` keeps its schema there.
pub fn played(m: &Model, opts: juju_sim::PostgresOptions) -> juju_sim::PostgresOptions {
    juju_sim::PostgresOptions {
        data_dir: opts
            .data_dir
            .clone()
            .or_else(|| Some(m.run_dir().join("postgresql"))),
        ..opts
    }
}

/// Deploys the fake PostgreSQL (played, see [`played`]) and relates it to `app`.
pub fn with_postgresql(
    m: &Model,
    app: &str,
    opts: juju_sim::PostgresOptions,
) -> Result<u32, Failed> {
    m.deploy_postgresql("postgresql", played(m, opts))
        .map_err(|e| fail(format!("deploy postgresql: {e}")))?;
    m.relate(&format!("{app}:postgresql"), "postgresql")
        .map_err(|e| fail(format!("relate postgresql: {e}")))
}

/// Waits until every listed unit shows `status` with exactly `message`.
pub fn wait_status<S: AsRef<str> + std::fmt::Debug>(
    m: &Model,
    units: &[S],
    status: &str,
    message: &str,
) -> TestResult {
    run_until(m, &format!("{units:?} to be {status}: {message}"), |m| {
        units.iter().all(|u| {
            let s = m.unit_status(u.as_ref());
            s.status == status && s.message == message
        })
    })
}

/// Sets config and waits until the model settled.
pub fn set_config(m: &Model, app: &str, pairs: &[(&str, &str)]) -> TestResult {
    m.config(
        app,
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))),
    )
    .map_err(|e| fail(format!("config {pairs:?}: {e}")))?;
    settle(m)
}

/// The secrets a leak scan looks for: (what, value).
pub type SecretValues = Vec<(String, String)>;

/// The admin password from the app secret labelled `admin-password`.
pub fn admin_password(m: &Model) -> Option<String> {
    m.secrets()
        .into_iter()
        .find(|s| s.label.as_deref() == Some("admin-password"))
        .and_then(|s| s.revisions.last().and_then(|r| r.get("password").cloned()))
}

/// Distinctive lines of the private keys a unit holds (PEM body lines), as secrets.
pub fn private_key_secrets(m: &Model, unit: &str) -> SecretValues {
    let mut out = Vec::new();
    for p in [
        "/var/lib/concourse-web/keys/tsa_host_key",
        "/var/lib/concourse-web/keys/session_signing_key",
        "/var/lib/concourse-worker/keys/worker_key",
    ] {
        let Ok(text) = std::fs::read_to_string(unit_file(m, unit, p)) else {
            continue;
        };
        // the longest base64 line of the body is unique to the key
        if let Some(line) = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .max_by_key(|l| l.len())
        {
            if line.len() >= 40 {
                out.push((format!("{unit}:{p}"), line.to_string()));
            }
        }
    }
    out
}

/// Issue 12's acceptance scan, on every listed unit (removed units too): no secret
/// anywhere (below), then [`assert_root_owned`]. Scans everything a secret must never
/// reach:
/// unit and application statuses (whole history), juju-log records, hook stdout/stderr,
/// every hook-tool argv (except `action-set` in `get-admin-password`, the one way Juju
/// offers to return a value), every relation databag (except the provider's own bag of
/// the PostgreSQL relation), the argv the fake systemctl and the fake `concourse` were
/// called with, the cmdline of every live process, and every file readable by "other"
/// in the unit's own filesystem (overlay upper dirs, private dirs) and in its volume.
/// Excluded fixture file: the fake concourse log (it records the environment of
/// `concourse web` on purpose; the simulator creates it world-writable).
pub fn assert_no_secret_leaks(
    m: &Model,
    apps: &[&str],
    units: &[String],
    secrets: &SecretValues,
) -> TestResult {
    let mut scan = SecretScan::new(secrets);
    ensure(!scan.finders.is_empty(), || "no secrets to scan for".into())?;
    for app in apps {
        for s in m.app_status_history(app) {
            scan.check(&format!("{app} app status"), s.message.as_bytes());
        }
    }
    let mut scanned = std::collections::BTreeSet::new();
    for u in units {
        for s in m.status_history(u) {
            scan.check(&format!("{u} status ({})", s.hook), s.message.as_bytes());
        }
        for l in m.logs(u) {
            scan.check(&format!("{u} juju-log ({})", l.hook), l.message.as_bytes());
        }
        for h in m.hooks(u) {
            scan.check(&format!("{u} {} stdout", h.name), h.stdout.as_bytes());
            scan.check(&format!("{u} {} stderr", h.name), h.stderr.as_bytes());
            for c in &h.tool_calls {
                if h.name == "action:get-admin-password"
                    && c.args.first().map(String::as_str) == Some("action-set")
                {
                    continue;
                }
                scan.check(
                    &format!("{u} {} argv {:?}", h.name, c.args.first()),
                    c.args.join(" ").as_bytes(),
                );
            }
        }
        for e in journal(m, u) {
            scan.check(&format!("{u} systemctl argv"), e.argv.join(" ").as_bytes());
        }
        for r in concourse_log(m, u) {
            scan.check(
                &format!("{u} concourse {} argv", r.subcommand),
                r.argv.join(" ").as_bytes(),
            );
        }
        for p in m.processes(u) {
            scan.check(
                &format!("{u} process {} cmdline", p.pid),
                p.cmdline.join(" ").as_bytes(),
            );
        }
        let dir = unit_dir(m, u);
        let mut roots = vec![dir.join("upper")];
        for d in juju_sim::machine::PRIVATE {
            roots.push(dir.join(d.trim_start_matches('/')));
        }
        // a shared volume once, not once per unit
        roots.extend(m.storage_dir(u).filter(|v| scanned.insert(v.clone())));
        for root in roots {
            scan.files(u, &root);
        }
    }
    // relation ids are small and dense; a removed relation keeps its history
    for rel in 0..64u32 {
        for c in m.bag_history(rel) {
            if c.owner == "postgresql" || c.owner.starts_with("postgresql/") {
                continue;
            }
            scan.check(
                &format!("relation {rel} databag of {} ({})", c.owner, c.hook),
                format!("{:?}", c.data).as_bytes(),
            );
        }
    }
    let leaks = scan.leaks;
    ensure(leaks.is_empty(), || format!("secrets leaked: {leaks:#?}"))?;
    assert_root_owned(m, units)
}

/// What [`assert_no_secret_leaks`] looks for (secrets of at least 6 bytes, as bytes) and
/// what it found.
pub struct SecretScan<'a> {
    finders: Vec<(&'a str, memchr::memmem::Finder<'a>)>,
    pub leaks: Vec<String>,
}

impl<'a> SecretScan<'a> {
    pub fn new(secrets: &'a SecretValues) -> SecretScan<'a> {
        let finders = secrets
            .iter()
            .filter(|(_, v)| v.len() >= 6)
            .map(|(what, v)| (what.as_str(), memchr::memmem::Finder::new(v.as_bytes())))
            .collect();
        SecretScan {
            finders,
            leaks: Vec::new(),
        }
    }

    /// Records every secret found in `bytes`, as seen at `place`.
    pub fn check(&mut self, place: &str, bytes: &[u8]) {
        for (what, f) in &self.finders {
            if f.find(bytes).is_some() {
                self.leaks.push(format!("{what} in {place}"));
            }
        }
    }

    /// [`SecretScan::check`] of every world-readable file under `root` but the fake
    /// concourse log (it records web's environment on purpose, and is made world-writable).
    pub fn files(&mut self, who: &str, root: &std::path::Path) {
        for (path, bytes) in world_readable_files(root) {
            let name = path.to_string_lossy();
            if !name.ends_with("fake-concourse.log") {
                self.check(&format!("{who} file {name}"), &bytes);
            }
        }
    }
}

/// The directories each unit's charm writes as root (the volume comes on top).
pub const ROOT_DIRS: [&str; 5] = [
    "/var/lib/concourse-ci",
    "/var/lib/concourse-web",
    "/var/lib/concourse-worker",
    "/etc/concourse",
    "/etc/systemd/system",
];

/// Issue 12's scan of owners and modes: under the volume and every directory the charm
/// writes as root ([`ROOT_DIRS`]), on every listed unit, nothing belongs to another user
/// and nothing is writable by "other" (links are not followed; their own mode means
/// nothing).
pub fn assert_root_owned(m: &Model, units: &[String]) -> TestResult {
    let mut bad: Vec<String> = Vec::new();
    let mut seen = 0;
    for u in units {
        let mut roots: Vec<std::path::PathBuf> =
            ROOT_DIRS.iter().map(|d| unit_file(m, u, d)).collect();
        roots.extend(m.storage_dir(u));
        for root in roots {
            let (n, found) = not_roots(&root);
            seen += n;
            bad.extend(found.into_iter().map(|p| format!("{u}: {p}")));
        }
    }
    ensure(seen >= 20 * units.len().min(1), || {
        format!("the owner scan saw only {seen} entries: is it looking in the right place?")
    })?;
    bad.sort();
    bad.dedup();
    ensure(bad.is_empty(), || {
        format!("files not root's alone: {bad:#?}")
    })
}

/// (entries seen, entries under `root` owned by a uid other than 0 or writable by
/// "other").
fn not_roots(root: &std::path::Path) -> (usize, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = p.symlink_metadata() else {
            continue;
        };
        if md.file_type().is_symlink() {
            continue;
        }
        seen += 1;
        if md.uid() != 0 || md.mode() & 0o002 != 0 {
            out.push(format!(
                "{} (uid {}, mode {:o})",
                p.display(),
                md.uid(),
                md.mode() & 0o7777
            ));
        }
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (seen, out)
}

/// Regular files under `root` whose mode lets "other" read them, with their content.
fn world_readable_files(root: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() && md.permissions().mode() & 0o004 != 0 && md.len() < 64 << 20 {
                if let Ok(b) = std::fs::read(e.path()) {
                    out.push((e.path(), b));
                }
            }
        }
    }
    out
}

/// A time mark for "nothing happened since" checks, taken once the journals and fake
/// concourse logs of the applications' units stopped growing and every live `concourse`
/// process systemd started has logged its start (a service signalled or started just
/// before may log a moment later, under load hundreds of milliseconds after systemd's
/// `started`; that must not count against the next step).
pub fn quiet_mark(m: &Model, apps: &[&str]) -> f64 {
    let units: Vec<String> = apps.iter().flat_map(|a| m.units(a)).collect();
    let size = |m: &Model| -> usize {
        units
            .iter()
            .map(|u| {
                journal(m, u).iter().filter(|e| e.action != "call").count()
                    + concourse_log(m, u).len()
            })
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = size(m);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = size(m);
        let logged = units.iter().all(|u| unlogged_starts(m, u).is_empty());
        if (now == last && logged) || std::time::Instant::now() > deadline {
            return epoch_now();
        }
        last = now;
    }
}

/// Live `concourse` main processes that systemd reports `started` on `unit` but that have
/// not yet written their `start` record.
fn unlogged_starts(m: &Model, unit: &str) -> Vec<u32> {
    let live: BTreeSet<u32> = m
        .processes(unit)
        .iter()
        .filter(|p| p.cmdline.iter().any(|a| a.ends_with("/concourse")))
        .map(|p| p.pid as u32)
        .collect();
    let logged: BTreeSet<u32> = concourse_log(m, unit)
        .iter()
        .filter(|r| r.event == "start")
        .map(|r| r.pid)
        .collect();
    journal(m, unit)
        .iter()
        .filter(|e| e.action == "started")
        .filter_map(|e| e.pid)
        .filter(|p| live.contains(p) && !logged.contains(p))
        .collect()
}

// ----- release and volume inspection (storage tests) -----

/// The unit's release pointer, as the charm keeps it.
pub const POINTER: &str = "/var/lib/concourse-ci/current";
/// The storage location of `concourse-data` in every unit's view.
pub const VOLUME_LOCATION: &str = "/var/lib/concourse";

/// Host directory holding a unit's private directories (overlay uppers, /tmp, /root, …);
/// the same as [`unit_dir`].
pub fn unit_host_dir(m: &Model, unit: &str) -> std::path::PathBuf {
    unit_dir(m, unit)
}

/// Versions published on the unit's volume (read on the host), sorted.
pub fn published_versions(m: &Model, unit: &str) -> Vec<String> {
    let Some(dir) = m.storage_dir(unit) else {
        return Vec::new();
    };
    let mut out: Vec<String> = std::fs::read_dir(dir.join("releases"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Where the unit's pointer points (read from its `/var` overlay upper dir on the host).
pub fn pointer_target(m: &Model, unit: &str) -> Option<std::path::PathBuf> {
    let link = juju_sim::machine::upper_path(&unit_host_dir(m, unit), POINTER)?;
    std::fs::read_link(link).ok()
}

/// The version the unit's pointer targets, if it targets `<volume>/releases/<v>/concourse`.
pub fn pointer_version(m: &Model, unit: &str) -> Option<String> {
    let t = pointer_target(m, unit)?;
    let rest = t
        .strip_prefix(std::path::Path::new(VOLUME_LOCATION).join("releases"))
        .ok()?;
    let mut parts = rest.components();
    let v = parts.next()?.as_os_str().to_string_lossy().into_owned();
    let leaf = parts.next()?.as_os_str().to_string_lossy().into_owned();
    (leaf == "concourse" && parts.next().is_none()).then_some(v)
}

/// Records of the fake `concourse` binary on a unit (both log locations), oldest first.
pub fn concourse_records(m: &Model, unit: &str) -> Vec<release_fixtures::fake_concourse::Record> {
    let mut all = Vec::new();
    for p in release_fixtures::fake_concourse::DEFAULT_LOG_PATHS {
        if let Ok(b) = m.read_file(unit, p) {
            all.extend(release_fixtures::fake_concourse::parse_log(&b));
        }
    }
    all.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    all
}

/// Whether a process is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// The `web`/`worker` services running on a unit now: (subcommand, pid, resolved binary
/// path) of each `start` record whose process is still alive.
pub fn running_services(m: &Model, unit: &str) -> Vec<(String, u32, String)> {
    concourse_records(m, unit)
        .into_iter()
        .filter(|r| r.event == "start" && (r.subcommand == "web" || r.subcommand == "worker"))
        .filter(|r| pid_alive(r.pid))
        .map(|r| (r.subcommand, r.pid, r.exe_resolved))
        .collect()
}

/// `releases/<version>/` as the units see it, for comparing with resolved binary paths.
pub fn release_dir_in_unit(version: &str) -> String {
    format!("{VOLUME_LOCATION}/releases/{version}/")
}

/// Every status a unit has shown, oldest first, as `status: message`.
pub fn status_lines(m: &Model, unit: &str) -> Vec<String> {
    m.status_history(unit)
        .into_iter()
        .map(|s| format!("{}: {}", s.status, s.message))
        .collect()
}

/// Juju-log messages of a unit.
pub fn log_messages(m: &Model, unit: &str) -> Vec<String> {
    m.logs(unit).into_iter().map(|l| l.message).collect()
}

/// `(apparent bytes of regular files, allocated bytes)` under `dir`, hard links counted once.
pub fn disk_use(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::BTreeSet::new();
    let (mut apparent, mut allocated) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        if !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        allocated += md.blocks() * 512;
        if md.is_file() {
            apparent += md.len();
        } else if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (apparent, allocated)
}

/// Files under a unit's private host directories that look like a Concourse release or
/// tarball (a `concourse` binary, a `.tgz`, a `.partial`, a release tree), i.e. a local copy.
pub fn local_release_copies(m: &Model, unit: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![unit_host_dir(m, unit)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                if matches!(name.as_str(), "resource-types" | "fly-assets") {
                    out.push(p.clone());
                }
                stack.push(p);
            } else if t.is_file()
                && (name == "concourse" || name.ends_with(".tgz") || name.ends_with(".partial"))
            {
                out.push(p);
            }
        }
    }
    out
}

/// A generated tarball of the size the tests use.
pub fn tarball(
    version: &str,
    variant: Variant,
) -> Result<release_fixtures::tarball::Tarball, Failed> {
    tarballs()
        .get(&ReleaseSpec::new(version, TARBALL_SIZE, variant))
        .map_err(|e| fail(format!("tarball {version}: {e}")))
}

/// Deploys the fake PostgreSQL provider and relates it, so web units run their service.
pub fn relate_postgresql(m: &Model, app: &str) -> TestResult {
    m.deploy_postgresql("postgresql", juju_sim::PostgresOptions::default())
        .map_err(|e| fail(format!("deploy postgresql: {e}")))?;
    m.relate(&format!("{app}:postgresql"), "postgresql")
        .map_err(|e| fail(format!("relate postgresql: {e}")))?;
    Ok(())
}

/// [`deploy`] with file resources (name → host file).
pub fn deploy_with_resources(
    m: &Model,
    app: &str,
    n: usize,
    config: BTreeMap<String, String>,
    storage: Volume,
    resources: BTreeMap<String, std::path::PathBuf>,
) -> Result<Vec<String>, Failed> {
    m.deploy(
        charm(),
        app,
        n,
        DeployOptions {
            config: config
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
            storage,
            resources,
        },
    )
    .map_err(|e| fail(format!("deploy: {e}")))
}

/// No unit of the list ever showed `blocked`.
pub fn never_blocked(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        let lines = status_lines(m, u);
        ensure(!lines.iter().any(|s| s.starts_with("blocked")), || {
            format!("{u} was blocked: {lines:?}")
        })?;
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the unit's mount namespace, e.g. to remount its volume.
pub fn in_unit_namespace<T: Send>(
    m: &Model,
    unit: &str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, Failed> {
    m.run_in_machine(unit, f)
        .map_err(|e| fail(format!("entering {unit}'s machine: {e}")))
}

/// `mount(2)` with a remount of `target` (`flags`, `MS_*` bits, added to `MS_REMOUNT`), for
/// tests that fix a volume (read-only → read-write, a full tmpfs → a bigger one).
pub fn remount(target: &str, flags: u64, data: Option<&str>) -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::from_bits_truncate(flags),
        data,
    )
    .map_err(std::io::Error::from)
}
