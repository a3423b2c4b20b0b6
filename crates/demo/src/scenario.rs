//! The demo's story, in three acts, driven like an operator drives Juju:
//! 1. deploy PostgreSQL and N `concourse-ci` units (one shared volume by default) against a
//!    local release server serving two generated releases; show the volume and downloads;
//! 2. `juju run concourse-ci/leader upgrade version=<second>`: the phases, each worker
//!    landing and switching, the final state;
//! 3. `juju add-unit concourse-ci`: the new unit joins with no download.
//!
//! Owns the model, the release server and the timeline for the length of a run; waits by
//! polling (never blocking for long) so Ctrl-C is seen within a poll and the model is
//! dropped, which kills every process it started, unmounts and removes its run directory.
//!
//! Invariants: every fact the summary states is read from the outside (statuses, /proc,
//! the server's request log, the volume on the host), never assumed from the script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use juju_sim::model::ActionStatus;
use juju_sim::{CharmSource, DeployOptions, Model, ModelOptions, PostgresOptions, Volume};
use release_fixtures::server::ReleaseServer;
use release_fixtures::tarball::{ReleaseSpec, Tarball, TarballCache, Variant};

use crate::args::Options;
use crate::display::{wrap, Display, Mode};
use crate::observe::{snapshot, Change, Event, Snapshot, Tracker, UnitLogs, APP, POSTGRES};
use crate::volume::{mib, Usage};

/// The release deployed first (what the fake GitHub API calls latest).
pub const FROM: &str = "7.14.3";
/// The release the upgrade moves to.
pub const TO: &str = "8.0.0";
/// How long one act may take before the demo gives up.
const ACT_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(150);
/// Failed hooks in a row after which a unit is taken as broken (the agent would keep
/// retrying; the demo stops and shows the hook logs instead).
const FAILING: usize = 6;
/// Seconds each fake worker takes to land, as if it finished a running build.
const LAND_DELAY: &str = "1";

/// Where things are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub dispatch: PathBuf,
    pub charm_dir: PathBuf,
    pub cache: PathBuf,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the Juju simulator needs root (mount namespaces and overlayfs), as the tests do; run the demo as root")]
    NotRoot,
    #[error("no charm binary at {0}: build it with `cargo build --release -p concourse-ci --bin dispatch` (cargo xtask demo does)")]
    NoDispatch(PathBuf),
    #[error("no metadata.yaml in {0}: pass the repository with --charm-dir")]
    NoCharm(PathBuf),
    #[error("generating the v{version} tarball in {dir}")]
    Tarball {
        version: String,
        dir: PathBuf,
        source: release_fixtures::tarball::TarballError,
    },
    #[error("starting the release server")]
    Server(#[from] release_fixtures::server::ReleaseError),
    #[error("the Juju simulator")]
    Sim(#[from] juju_sim::SimError),
    #[error("interrupted")]
    Interrupted,
    #[error("gave up after {} s waiting for {what}", ACT_TIMEOUT.as_secs())]
    Timeout { what: String },
    #[error("the upgrade action failed: {0}")]
    Action(String),
    #[error("{unit} failed {n} hooks in a row, the last one {hook}")]
    Failing {
        unit: String,
        hook: String,
        n: usize,
    },
}

/// What the final summary states (all of it observed).
#[derive(Debug, Clone)]
pub struct Summary {
    pub units: usize,
    pub active_on_target: usize,
    pub running_target: usize,
    pub downloads: BTreeMap<String, usize>,
    /// The unit added in act 3 and the downloads it caused.
    pub joined: (String, usize),
    pub usage: Usage,
    pub release_bytes: u64,
    pub hooks: usize,
    pub failed_hooks: usize,
    pub elapsed: Duration,
}

impl Summary {
    pub fn text(&self) -> String {
        let per_version: Vec<String> = self
            .downloads
            .iter()
            .map(|(v, n)| format!("v{v}: {n}"))
            .collect();
        let shared = matches!(self.usage.volumes.as_slice(), [(l, _)] if l == "shared");
        let volumes = if shared {
            "1 shared volume".to_string()
        } else {
            let n = self.usage.volumes.len();
            format!("{n} volumes ({} release copies)", self.usage.copies())
        };
        let kept = self.usage.versions_kept();
        let pad = " ".repeat("  downloads  ".len());
        let mut lines = vec![
            "\nSummary".to_string(),
            format!(
                "  units      {} of {} active on v{TO}, {} of {} run it (read from /proc)",
                self.active_on_target, self.units, self.running_target, self.units
            ),
            format!(
                "  downloads  {} (release server log)",
                per_version.join(", ")
            ),
            format!(
                "  joined     {} after {}",
                self.joined.0,
                downloads(self.joined.1)
            ),
            format!(
                "  volume     {} on {volumes} for {kept} versions kept",
                mib(self.usage.bytes)
            ),
            format!(
                "{pad}= {:.2}x the release ({}) per version kept",
                self.usage.ratio(self.release_bytes),
                mib(self.release_bytes)
            ),
        ];
        if shared {
            let copies = self.units as u64 * self.release_bytes * kept as u64;
            lines.push(format!(
                "{pad}(one copy per unit: {} units x {} x {kept} = {})",
                self.units,
                mib(self.release_bytes),
                mib(copies)
            ));
        }
        lines.push(format!(
            "  took       {:.1} s, {} hooks run, {} failed",
            self.elapsed.as_secs_f64(),
            self.hooks,
            self.failed_hooks
        ));
        lines.join("\n")
    }
}

/// Checks what a run needs before anything starts.
pub fn preflight(paths: &Paths) -> Result<(), DemoError> {
    if !paths.dispatch.is_file() {
        return Err(DemoError::NoDispatch(paths.dispatch.clone()));
    }
    if !paths.charm_dir.join("metadata.yaml").is_file() {
        return Err(DemoError::NoCharm(paths.charm_dir.clone()));
    }
    Ok(())
}

/// The two releases, generated once into the cache.
pub fn tarballs(cache: &std::path::Path, mib: u64) -> Result<Vec<Tarball>, DemoError> {
    let err = |version: &str| {
        let (version, dir) = (version.to_string(), cache.to_path_buf());
        move |source| DemoError::Tarball {
            version,
            dir,
            source,
        }
    };
    let c = TarballCache::new(cache).map_err(err(FROM))?;
    [FROM, TO]
        .iter()
        .map(|v| {
            c.get(&ReleaseSpec::new(v, mib << 20, Variant::Normal))
                .map_err(err(v))
        })
        .collect()
}

/// A run of the demo. Field order is drop order: the model (and every process and mount
/// it made) goes before the server it downloads from.
pub struct Demo {
    pub m: Model,
    server: ReleaseServer,
    opts: Options,
    pub display: Display,
    tracker: Tracker,
    pub timeline: Vec<Event>,
    start: Instant,
    /// The epoch second the demo started (fake `concourse` records before it are not ours).
    birth: f64,
    act: u8,
    stop: Arc<AtomicBool>,
    release_bytes: u64,
    last: Snapshot,
}

impl Demo {
    /// Starts the release server and an empty model.
    pub fn new(
        opts: Options,
        display: Display,
        tarballs: Vec<Tarball>,
        stop: Arc<AtomicBool>,
        start: Instant,
    ) -> Result<Demo, DemoError> {
        let server = ReleaseServer::start()?;
        server.set_github_latest(Some(FROM));
        let release_bytes = tarballs.iter().map(|t| t.unpacked_size).max().unwrap_or(0);
        for t in tarballs {
            server.register(t);
        }
        let m = Model::new(ModelOptions {
            update_status_interval: Some(Duration::from_secs(5)),
            dump_on_panic: false,
            ..ModelOptions::default()
        })
        .map_err(|e| match e {
            juju_sim::SimError::NotRoot => DemoError::NotRoot,
            e => DemoError::Sim(e),
        })?;
        Ok(Demo {
            m,
            server,
            opts,
            display,
            tracker: Tracker::default(),
            timeline: Vec::new(),
            start,
            birth: epoch_now(),
            act: 0,
            stop,
            release_bytes,
            last: Snapshot::default(),
        })
    }

    /// Records an event and shows it.
    pub fn note(&mut self, kind: &'static str, unit: Option<String>, text: String) {
        let e = Event {
            t: self.start.elapsed().as_secs_f64(),
            act: self.act,
            kind,
            unit,
            text,
        };
        self.display.event(&e);
        self.timeline.push(e);
    }

    /// An act's title and what the operator does (`$ …`) or should expect.
    fn begin_act(&mut self, n: u8, title: &str, lines: &[String]) {
        self.act = n;
        self.display.freeze();
        self.note("act", None, format!("Act {n}/3: {title}"));
        for l in lines {
            self.note("command", None, l.clone());
        }
    }

    /// One look: snapshot, changes into the timeline, redraw.
    fn poll(&mut self) -> Result<Snapshot, DemoError> {
        let snap = snapshot(&self.m, &self.server, &[FROM, TO]);
        let logs = self.unit_logs(&snap);
        let failing = logs.iter().find_map(|(unit, l)| {
            (l.failing >= FAILING).then(|| DemoError::Failing {
                unit: unit.clone(),
                hook: l.failed.last().map(|h| h.0.clone()).unwrap_or_default(),
                n: l.failing,
            })
        });
        for Change { kind, unit, text } in self.tracker.update(&snap, &logs) {
            self.note(kind, unit, text);
        }
        let footer = self.footer(&snap);
        self.display.frame(&snap, &footer);
        self.last = snap.clone();
        match failing {
            Some(e) => Err(e),
            None => Ok(snap),
        }
    }

    fn footer(&self, snap: &Snapshot) -> String {
        let phase = match snap.phase() {
            "" => "-",
            p => p,
        };
        let downloads: Vec<String> = snap
            .downloads
            .iter()
            .map(|(v, n)| format!("{v} x{n}"))
            .collect();
        format!(
            "act {}/3 | upgrade phase {phase} | downloads {} | {:.0} s",
            self.act,
            downloads.join(", "),
            self.start.elapsed().as_secs_f64()
        )
    }

    fn unit_logs(&self, snap: &Snapshot) -> BTreeMap<String, UnitLogs> {
        snap.units
            .iter()
            .map(|u| {
                let dir = self
                    .m
                    .run_dir()
                    .join("units")
                    .join(juju_sim::machine::unit_tag(&u.name));
                let mut records = Vec::new();
                for p in release_fixtures::fake_concourse::DEFAULT_LOG_PATHS {
                    if let Some(host) = juju_sim::machine::upper_path(&dir, p) {
                        records.extend(
                            release_fixtures::fake_concourse::read_log(&host).unwrap_or_default(),
                        );
                    }
                }
                records.retain(|r| r.ts >= self.birth);
                let hooks = self.m.hooks(&u.name);
                let failing = hooks.iter().rev().take_while(|h| !h.committed()).count();
                let failed = hooks
                    .iter()
                    .filter(|h| !h.committed())
                    .map(|h| (h.name.clone(), h.exit_code()))
                    .collect();
                let logs = UnitLogs {
                    records,
                    failed,
                    failing,
                };
                (u.name.clone(), logs)
            })
            .collect()
    }

    /// Polls until `done` holds for the model and a fresh snapshot.
    fn wait(
        &mut self,
        what: &str,
        done: impl Fn(&Model, &Snapshot) -> bool,
    ) -> Result<Snapshot, DemoError> {
        let deadline = Instant::now() + ACT_TIMEOUT;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            let snap = self.poll()?;
            if done(&self.m, &snap) {
                return Ok(snap);
            }
            if Instant::now() > deadline {
                return Err(DemoError::Timeout { what: what.into() });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every unit's storage: one shared volume, or one per unit.
    pub fn volumes(&self) -> Vec<(String, PathBuf)> {
        let units = self.m.units(APP);
        if self.opts.shared {
            units
                .first()
                .and_then(|u| self.m.storage_dir(u))
                .map(|d| vec![("shared".to_string(), d)])
                .unwrap_or_default()
        } else {
            units
                .iter()
                .filter_map(|u| self.m.storage_dir(u).map(|d| (u.clone(), d)))
                .collect()
        }
    }

    /// Leaves the table on screen (printing it when there is no live table).
    fn show_table(&mut self, snap: &Snapshot) {
        self.display.freeze();
        if self.display.mode() == Mode::Lines {
            self.display.print_table(snap);
        }
    }

    /// Leaves the table on screen and prints the volume layout and the downloads so far.
    fn act_end(&mut self, snap: &Snapshot) {
        self.show_table(snap);
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for u in &snap.units {
            for v in u
                .runs
                .iter()
                .map(|(_, v)| v)
                .collect::<std::collections::BTreeSet<_>>()
            {
                *runs.entry(v.clone()).or_default() += 1;
            }
        }
        let usage = Usage::read(self.volumes());
        let mut text = vec![String::new()];
        text.extend(usage.describe(&runs, snap.units.len(), self.release_bytes));
        let downloads: Vec<String> = snap
            .downloads
            .iter()
            .map(|(v, n)| format!("v{v} {n}"))
            .collect();
        text.push(format!(
            "Tarball downloads (release server log): {}",
            downloads.join(", ")
        ));
        self.display.print(&text.join("\n"));
    }

    /// `--step`: waits for Enter (or the end of input), or for Ctrl-C.
    fn pause(&mut self) -> Result<(), DemoError> {
        if !self.opts.step || self.display.mode() == Mode::Quiet {
            return Ok(());
        }
        self.display
            .print("\n-- press Enter for the next act (Ctrl-C stops and cleans up) --");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(DemoError::Interrupted);
            }
            if rx.recv_timeout(POLL).is_ok() {
                return Ok(());
            }
        }
    }

    /// The three acts, then the summary.
    pub fn run(&mut self, paths: &Paths) -> Result<Summary, DemoError> {
        self.deploy(paths)?;
        self.pause()?;
        self.upgrade()?;
        self.pause()?;
        let joined = self.add_unit()?;
        Ok(self.summary(joined))
    }

    fn deploy(&mut self, paths: &Paths) -> Result<(), DemoError> {
        let n = self.opts.units;
        let (storage, volume) = if self.opts.shared {
            ("shared", "one shared volume")
        } else {
            ("none", "a volume per unit")
        };
        self.begin_act(
            1,
            &format!("deploy {n} units on {volume}, with PostgreSQL"),
            &[
                format!("$ juju deploy {APP} -n {n} --config shared-storage={storage}"),
                format!("$ juju deploy {POSTGRES} && juju integrate {APP} {POSTGRES}"),
                format!("No version is pinned: the charm installs the latest release, v{FROM}."),
            ],
        );
        let mut config: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        config.insert(
            "release-url".into(),
            self.server.release_url_template().into(),
        );
        config.insert(
            "release-api-url".into(),
            self.server.github_api_url().into(),
        );
        config.insert("shared-storage".into(), storage.into());
        let charm = CharmSource::dir(&paths.charm_dir, &paths.dispatch);
        let units = self.m.deploy(
            charm,
            APP,
            n,
            DeployOptions {
                config,
                storage: if self.opts.shared {
                    Volume::Shared
                } else {
                    Volume::PerUnit
                },
                ..DeployOptions::default()
            },
        )?;
        self.m
            .deploy_postgresql(POSTGRES, PostgresOptions::default())?;
        self.m.relate(&format!("{APP}:postgresql"), POSTGRES)?;
        for u in &units {
            self.slow_landing(u);
        }
        let snap = self.wait(&format!("every unit active on v{FROM}"), |m, s| {
            s.all_on(FROM) && m.is_settled()
        })?;
        self.act_end(&snap);
        Ok(())
    }

    /// Makes the unit's fake worker take [`LAND_DELAY`] seconds to land, like a worker
    /// that finishes a build (a control file of the fake `concourse`).
    fn slow_landing(&mut self, unit: &str) {
        let path = format!(
            "{}/land-delay",
            release_fixtures::fake_concourse::DEFAULT_RUN_DIR
        );
        if let Err(e) = self.m.write_file(unit, &path, LAND_DELAY.as_bytes()) {
            self.note(
                "note",
                Some(unit.into()),
                format!("could not slow its landing: {e}"),
            );
        }
    }

    fn upgrade(&mut self) -> Result<(), DemoError> {
        let leader = self.m.leader(APP).unwrap_or_else(|| format!("{APP}/0"));
        self.begin_act(
            2,
            &format!("upgrade to v{TO}"),
            &[
                format!("$ juju run {APP}/leader upgrade version={TO}"),
                format!(
                    "{} web switches first, then each worker lands (its fake Concourse \
                     takes {LAND_DELAY} s, as if finishing a build) and switches.",
                    if self.opts.shared {
                        format!("The leader ({leader}) downloads v{TO} once;")
                    } else {
                        format!("Each unit downloads v{TO} to its own volume;")
                    }
                ),
            ],
        );
        let id = self.m.queue_action(&leader, "upgrade", [("version", TO)])?;
        self.wait("the upgrade action to return", |m, _| {
            m.action(id)
                .is_some_and(|a| matches!(a.status, ActionStatus::Completed | ActionStatus::Failed))
        })?;
        if let Some(a) = self.m.action(id) {
            if a.status == ActionStatus::Failed {
                return Err(DemoError::Action(a.message));
            }
            let results = results_text(&a.results);
            self.note("action", Some(leader), format!("upgrade action: {results}"));
        }
        let snap = self.wait(
            &format!("every unit on v{TO}, upgrade phase idle"),
            |m, s| s.phase() == "idle" && s.all_on(TO) && m.is_settled(),
        )?;
        self.act_end(&snap);
        Ok(())
    }

    fn add_unit(&mut self) -> Result<(String, usize), DemoError> {
        self.begin_act(
            3,
            "add a unit",
            &[
                format!("$ juju add-unit {APP}"),
                if self.opts.shared {
                    format!("The new unit finds v{TO} on the volume and downloads nothing.")
                } else {
                    format!("The new unit has a volume of its own: it downloads v{TO}.")
                },
            ],
        );
        let before = self.last.total_downloads();
        let unit = self.m.add_unit(APP)?;
        self.slow_landing(&unit);
        let u = unit.clone();
        let snap = self.wait(&format!("{unit} active on v{TO}"), |m, s| {
            s.unit(&u).is_some() && s.all_on(TO) && m.is_settled()
        })?;
        let extra = snap.total_downloads() - before.min(snap.total_downloads());
        self.note(
            "unit",
            Some(unit.clone()),
            format!("joined: runs v{TO}, after {}", downloads(extra)),
        );
        self.show_table(&snap);
        Ok((unit, extra))
    }

    fn summary(&self, joined: (String, usize)) -> Summary {
        let snap = &self.last;
        let units = self.m.units(APP);
        let (mut hooks, mut failed) = (0, 0);
        for u in &units {
            let h = self.m.hooks(u);
            hooks += h.len();
            failed += h.iter().filter(|h| !h.committed()).count();
        }
        Summary {
            units: snap.units.len(),
            active_on_target: snap
                .units
                .iter()
                .filter(|u| u.workload == "active" && u.message.contains(TO))
                .count(),
            running_target: snap.units.iter().filter(|u| u.runs_only(TO)).count(),
            downloads: snap.downloads.clone(),
            joined,
            usage: Usage::read(self.volumes()),
            release_bytes: self.release_bytes,
            hooks,
            failed_hooks: failed,
            elapsed: self.start.elapsed(),
        }
    }

    /// The table as last seen, for a failure report.
    pub fn last_table(&self, width: Option<usize>) -> String {
        crate::display::table(&self.last, width).join("\n")
    }

    /// Wraps a paragraph to the terminal (or leaves it whole).
    pub fn paragraph(&self, text: &str) -> String {
        match self.display.width() {
            Some(w) => wrap(text, w, 2).join("\n"),
            None => text.to_string(),
        }
    }
}

/// `no download`, `1 download`, `2 downloads`.
fn downloads(n: usize) -> String {
    match n {
        0 => "no download".into(),
        1 => "1 download".into(),
        n => format!("{n} downloads"),
    }
}

/// An action's results as `key: value; …` (nested maps flattened with dots).
fn results_text(v: &serde_json::Value) -> String {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::String(s) => out.push(format!("{prefix}: {s}")),
            other => out.push(format!("{prefix}: {other}")),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out.join("; ")
}

/// Seconds since the epoch (the clock of the fake `concourse` records).
fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
