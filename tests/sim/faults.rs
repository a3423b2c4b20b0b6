//! Issue 11: the upgrade converges under the faults real Juju produces. The sweep makes
//! every hook-tool call of the hooks that switch web and workers fail (as when the unit
//! agent loses its controller connection) and kills the hook there, in turn, and kills
//! the leader at every named crash checkpoint of the install and the prune; after the
//! faults, every upgrade must finish with every unit's processes (by /proc) on the
//! target, no worker stopped without landing, at most `upgrade-max-unavailable` workers
//! down, the tarball downloaded once, and no hook failed but those a fault hit.
//!
//! How it stays within budget (a mode takes about 40 s and 42 s of CPU alone on 2 cores,
//! about 100 s in the full tier; a coverage model runs about 14 upgrades of 2-4 s, mostly
//! the two 1.5 s crash waits): the call indexes come from a recorded fault-free upgrade (a
//! fault at a call no hook reaches records how many calls the matched hook made), every
//! upgrade carries one fault per switching unit, each model runs a chain of upgrades to
//! ever newer versions, and the models of a mode run in parallel, each taking its share
//! of the indexes. Every model deploys and records once, so fewer, longer chains cost
//! less CPU: 6 coverage models took 41-42 s of CPU against 47-58 s for 12, 94 upgrades
//! against 100, and a few seconds more alone (the tier is CPU-bound, not chain-bound).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use concourse_ci::checkpoint;
use juju_sim::{Fault, FaultKind, FaultRecord, HookStart, Model, ModelOptions, Volume};
use libtest_mimic::{Failed, Trial};
use release_fixtures::server::ReleaseServer;
use release_fixtures::tarball::{ReleaseSpec, Variant};

use crate::common::*;
use crate::upgrade::{proc_versions, workers_landed_one_at_a_time};

const APP: &str = APP_NAME;

/// The models of one notification mode: `SHARES` models of two units (web and a worker)
/// split every fault point between them (the coverage), and one of three units (web and
/// two workers, so that "at most `upgrade-max-unavailable` workers down" can fail) sweeps
/// the first of `WIDE_SHARES` shares of its own points (its upgrades cost a unit more).
/// The switch hooks of the two shapes differ by a call (one peer more to read).
const SHARES: usize = 6;
const WIDE_SHARES: usize = 12;
const UNITS: usize = 2;
const WIDE_UNITS: usize = 3;

/// Two download chunks: the progress statuses are part of the swept calls.
const TARBALL: u64 = 512 * 1024;

/// Time for one upgrade with its faults.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(180);

pub fn trials() -> Vec<Trial> {
    vec![
        trial("faults::sweep_self_notify", || sweep(true)),
        trial("faults::sweep_no_self_notify", || sweep(false)),
    ]
}

/// Whose switch a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Web,
    Worker,
}

/// One fault point: the `n`th call of the switch hook of a `role`, `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    role: Role,
    kind: FaultKind,
    n: usize,
}

/// The version of the `k`th release in a model's chain of upgrades.
fn version(k: usize) -> String {
    format!("9.0.{k}")
}

/// What one model did.
#[derive(Debug, Default)]
struct ModelReport {
    /// Calls of each role's switch hook in the recorded fault-free upgrade.
    recorded: BTreeMap<Role, usize>,
    fired: BTreeSet<Point>,
    /// Faults whose hook ended before their call, with why.
    missed: Vec<String>,
    checkpoints: BTreeSet<String>,
    upgrades: usize,
}

fn sweep(notify: bool) -> TestResult {
    let t0 = Instant::now();
    // (units, share index, shares): the coverage models, then the wide one
    let mut shapes: Vec<(usize, usize, usize)> = (0..SHARES).map(|i| (UNITS, i, SHARES)).collect();
    shapes.push((WIDE_UNITS, 0, WIDE_SHARES));
    let reports: Vec<Result<ModelReport, Failed>> = std::thread::scope(|s| {
        let handles: Vec<_> = shapes
            .iter()
            .map(|&(units, i, shares)| s.spawn(move || run_model(notify, i, shares, units)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fail("a sweep model panicked")))
            })
            .collect()
    });
    let mut all = Vec::new();
    for (i, r) in reports.into_iter().enumerate() {
        all.push(r.map_err(|e| fail(format!("model {i}: {}", e.message().unwrap_or(""))))?);
    }
    let wide = all.pop().ok_or_else(|| fail("no wide model"))?;
    let upgrades: usize = all.iter().map(|r| r.upgrades).sum::<usize>() + wide.upgrades;
    let missed: Vec<&String> = all.iter().chain([&wide]).flat_map(|r| &r.missed).collect();
    let checkpoints: BTreeSet<&String> = all
        .iter()
        .chain([&wide])
        .flat_map(|r| &r.checkpoints)
        .collect();
    println!(
        "faults::sweep (self-notify {notify}): {} tool-call faults ({} in the wide model) and {} checkpoints over {upgrades} upgrades in {} models, wall {:.1}s; recorded calls {:?}, wide {:?}; missed {missed:?}",
        all.iter().chain([&wide]).map(|r| r.fired.len()).sum::<usize>(),
        wide.fired.len(),
        checkpoints.len(),
        shapes.len(),
        t0.elapsed().as_secs_f64(),
        all.iter().map(|r| &r.recorded).collect::<Vec<_>>(),
        wide.recorded,
    );
    // the coverage models agree on the switch hooks (the enumeration is deterministic),
    // and every call of both, both kinds, was hit at least once
    let recorded = &all[0].recorded;
    ensure(all.iter().all(|r| r.recorded == *recorded), || {
        format!(
            "the recorded switch hooks differ: {:?}",
            all.iter().map(|r| &r.recorded).collect::<Vec<_>>()
        )
    })?;
    let mut missing = Vec::new();
    for (&role, &calls) in recorded {
        for kind in [FaultKind::Fail, FaultKind::Kill] {
            for n in 1..=calls {
                let p = Point { role, kind, n };
                if !all.iter().any(|r| r.fired.contains(&p)) {
                    missing.push(p);
                }
            }
        }
    }
    ensure(missing.is_empty(), || {
        format!("fault points never hit: {missing:?}; missed: {missed:?}")
    })?;
    let wanted: Vec<&str> = checkpoint::NAMES.iter().map(|(n, _)| *n).collect();
    ensure(
        wanted.iter().all(|n| checkpoints.iter().any(|c| c == n)),
        || format!("checkpoints hit {checkpoints:?}, wanted {wanted:?}"),
    )
}

/// The units of a model by role.
struct Cast {
    leader: String,
    web: String,
    workers: Vec<String>,
    all: Vec<String>,
}

/// One model of the sweep: deploy, record a fault-free upgrade, then upgrade once per
/// group of this model's share (`index` of `shares`) of the fault points.
fn run_model(
    notify: bool,
    index: usize,
    shares: usize,
    units: usize,
) -> Result<ModelReport, Failed> {
    let server = ReleaseServer::start().map_err(|e| fail(format!("release server: {e}")))?;
    register(&server, &version(0))?;
    server.set_github_latest(Some(&version(0)));
    let m = model_with(ModelOptions {
        self_notify_peer_app: notify,
        update_status_interval: Some(Duration::from_secs(60)),
        ..ModelOptions::default()
    })?;
    let v0 = version(0);
    let deployed = deploy(
        &m,
        APP,
        units,
        config(
            &server,
            &[
                ("shared-storage", "shared"),
                ("version", v0.as_str()),
                ("upgrade-max-unavailable", "1"),
            ],
        ),
        Volume::Shared,
    )?;
    with_postgresql(&m, APP, juju_sim::PostgresOptions::default())?;
    run_until(&m, &format!("every unit active on {v0}"), |m| {
        deployed.iter().all(|u| {
            let s = m.unit_status(u);
            s.status == "active" && s.message.contains(&v0)
        })
    })?;
    // nothing of the deployment pending: the switch hooks are the protocol's own
    settle(&m)?;
    let cast = cast(&m, deployed)?;
    // Every web switch restarts the TSA, and each worker then registers again at its
    // beacon's next attempt, 5 s later upstream (`worker/beacon_runner.go`): most of an
    // upgrade's wall time. The sweep is about faults, not that interval (the drain and
    // upgrade scenarios keep upstream's), so its workers retry every 0.5 s.
    for w in &cast.workers {
        control(&m, w, "beacon-retry", "0.5")?;
    }
    let mut report = ModelReport::default();
    let mut next = 1;
    let mut upgrade =
        |group: &Group, report: &mut ModelReport| -> Result<Vec<(Role, u64)>, Failed> {
            let target = version(next);
            next += 1;
            register(&server, &target)?;
            let armed = arm(&m, &cast, &target, group)?;
            upgrade_to(&m, &server, &cast, &target).map_err(|e| {
                fail(format!(
                    "upgrade to {target} with {group:?}: {}",
                    e.message().unwrap_or("")
                ))
            })?;
            report.upgrades += 1;
            Ok(armed)
        };

    // the recorded fault-free upgrade: a fault at a call no hook reaches counts the calls
    while report.recorded.len() < 2 {
        ensure(report.upgrades < 3, || {
            format!("no switch hook matched in 3 upgrades: {:?}", m.faults())
        })?;
        for (role, id) in upgrade(&Group::observe(), &mut report)? {
            let rec = m.fault(id).ok_or_else(|| fail("observer fault gone"))?;
            if let Some(hit) = rec.hits.first() {
                let calls = report.recorded.entry(role).or_default();
                *calls = (*calls).max(hit.calls);
            }
        }
    }
    // this model's share of the points; a point whose hook did not match (a hook that
    // started before the grant may read it and switch) is tried again in a later upgrade
    let mut queue = Queue::new(&report.recorded, index, shares);
    let mut first = true;
    while let Some(group) = queue.group(cast.workers.len(), first && index == 0) {
        first = false;
        let armed = upgrade(&group, &mut report)?;
        collect(&m, &armed, &mut report, &mut queue)?;
    }
    // over the whole chain
    workers_landed_one_at_a_time(&m, &cast.all, 1)?;
    only_faulted_hooks_failed(&m, &cast.all)?;
    Ok(report)
}

fn register(server: &ReleaseServer, version: &str) -> TestResult {
    let t = tarballs()
        .get(&ReleaseSpec::new(version, TARBALL, Variant::Normal))
        .map_err(|e| fail(format!("tarball {version}: {e}")))?;
    server.register(t);
    Ok(())
}

fn cast(m: &Model, all: Vec<String>) -> Result<Cast, Failed> {
    let rel = peers(m)?;
    let web = m
        .databag(rel, APP)
        .data
        .get("web-unit")
        .cloned()
        .ok_or_else(|| fail("no web unit"))?;
    let leader = m.leader(APP).ok_or_else(|| fail("no leader"))?;
    let workers = all.iter().filter(|u| **u != web).cloned().collect();
    Ok(Cast {
        leader,
        web,
        workers,
        all,
    })
}

fn peers(m: &Model) -> Result<u32, Failed> {
    m.relation_id(&format!("{APP}:peers"))
        .ok_or_else(|| fail("no peer relation"))
}

/// The faults of one upgrade: at most one per switching unit, and maybe the checkpoints.
#[derive(Debug, Clone, Default)]
struct Group {
    web: Option<Point>,
    /// One per worker, in the order of `Cast::workers`.
    workers: Vec<Option<Point>>,
    checkpoints: bool,
}

impl Group {
    /// Faults at a call no hook reaches: they only record the hooks they match.
    fn observe() -> Group {
        let far = |role| Point {
            role,
            kind: FaultKind::Fail,
            n: 100_000,
        };
        Group {
            web: Some(far(Role::Web)),
            workers: vec![Some(far(Role::Worker))],
            checkpoints: false,
        }
    }
}

/// How often a point whose hook did not match is tried again.
const TRIES: usize = 3;

/// This model's share of the fault points (every `shares`th, from `index`), handed out
/// one per switching unit per upgrade.
struct Queue {
    web: std::collections::VecDeque<Point>,
    worker: std::collections::VecDeque<Point>,
    tries: BTreeMap<Point, usize>,
}

impl Queue {
    fn new(recorded: &BTreeMap<Role, usize>, index: usize, shares: usize) -> Queue {
        let points = |role: Role| {
            let calls = recorded.get(&role).copied().unwrap_or(0);
            (1..=calls)
                .flat_map(|n| {
                    [FaultKind::Fail, FaultKind::Kill].map(|kind| Point { role, kind, n })
                })
                .enumerate()
                .filter(|(i, _)| i % shares == index)
                .map(|(_, p)| p)
                .collect()
        };
        Queue {
            web: points(Role::Web),
            worker: points(Role::Worker),
            tries: BTreeMap::new(),
        }
    }

    /// The next upgrade's faults, if any are left. With `checkpoints` the leader is
    /// killed at every checkpoint and web gets no tool-call fault (a kill in the download
    /// would use up web's fault before its call).
    fn group(&mut self, workers: usize, checkpoints: bool) -> Option<Group> {
        let web = if checkpoints {
            None
        } else {
            self.web.pop_front()
        };
        let g = Group {
            web,
            workers: (0..workers).map(|_| self.worker.pop_front()).collect(),
            checkpoints,
        };
        (checkpoints || g.web.is_some() || g.workers.iter().any(Option::is_some)).then_some(g)
    }

    /// A point whose hook did not match goes back in the queue; false once it had its tries.
    fn again(&mut self, p: Point) -> bool {
        let tries = self.tries.entry(p).or_insert(1);
        *tries += 1;
        if *tries > TRIES {
            return false;
        }
        match p.role {
            Role::Web => self.web.push_back(p),
            Role::Worker => self.worker.push_back(p),
        }
        true
    }
}

/// Arms a group's faults for the upgrade to `target`; returns (role, fault id).
fn arm(m: &Model, cast: &Cast, target: &str, g: &Group) -> Result<Vec<(Role, u64)>, Failed> {
    let rel = peers(m)?;
    let mut ids = Vec::new();
    let err = |e: juju_sim::SimError| fail(format!("arming a fault: {e}"));
    if let Some(p) = g.web {
        let when = web_switch(rel, cast.web.clone(), target.to_string());
        let f = Fault::ToolCall {
            n: p.n,
            kind: p.kind,
        };
        ids.push((Role::Web, m.arm_fault(&cast.web, f, when).map_err(err)?));
    }
    for (w, p) in cast.workers.iter().zip(&g.workers) {
        if let Some(p) = p {
            let when = worker_switch(rel, w.clone(), target.to_string());
            let f = Fault::ToolCall {
                n: p.n,
                kind: p.kind,
            };
            ids.push((Role::Worker, m.arm_fault(w, f, when).map_err(err)?));
        }
    }
    if g.checkpoints {
        let names = checkpoint::NAMES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        let f = Fault::Checkpoint {
            var: checkpoint::ENV.into(),
            names,
        };
        let target = target.to_string();
        let when = move |h: &HookStart| {
            !h.is_action
                && h.app_bag(rel, APP)
                    .is_some_and(|b| b.get("upgrade-target") == Some(&target))
        };
        ids.push((Role::Web, m.arm_fault(&cast.leader, f, when).map_err(err)?));
    }
    Ok(ids)
}

/// The hook the protocol's commits cause; the only kind swept, so that every swept hook
/// makes the same calls (another hook kind reads its own relation differently).
const SWEPT_HOOK: &str = "peers-relation-changed";

/// The web unit's switch: its first hook once the target is being downloaded or
/// switched to, or once every unit the leader named acknowledged prepare, while it does
/// not report the target (the leader downloads and grants itself in one hook).
fn web_switch(rel: u32, unit: String, target: String) -> impl Fn(&HookStart) -> bool {
    move |h: &HookStart| {
        let app = h.app_bag(rel, APP);
        let get = |k: &str| app.and_then(|b| b.get(k)).map(String::as_str);
        let prepared = || {
            let gen = get("upgrade-gen").unwrap_or_default();
            let Some((g, named)) = get("upgrade-ack-from").and_then(|v| v.split_once(':')) else {
                return false;
            };
            let acked = |u: &str| {
                h.unit_bag(rel, u)
                    .and_then(|b| b.get("upgrade-ack"))
                    .is_some_and(|a| a.starts_with(&format!("{gen}:")))
            };
            g == gen && named.split(',').filter(|u| !u.is_empty()).all(acked)
        };
        h.hook == SWEPT_HOOK
            && get("upgrade-target") == Some(target.as_str())
            && (matches!(get("upgrade-phase"), Some("downloading" | "complete"))
                || (get("upgrade-phase") == Some("prepare") && prepared()))
            && not_on(h, rel, &unit, &target)
    }
}

/// A worker's switch: its first hook once it holds a grant for the target.
fn worker_switch(rel: u32, unit: String, target: String) -> impl Fn(&HookStart) -> bool {
    move |h: &HookStart| {
        let app = h.app_bag(rel, APP);
        let get = |k: &str| app.and_then(|b| b.get(k)).map(String::as_str);
        let granted = get("upgrade-grant")
            .and_then(|g| g.split_once(':'))
            .is_some_and(|(_, units)| units.split(',').any(|u| u == unit));
        h.hook == SWEPT_HOOK
            && get("upgrade-target") == Some(target.as_str())
            && get("upgrade-phase") == Some("complete")
            && granted
            && not_on(h, rel, &unit, &target)
    }
}

fn not_on(h: &HookStart, rel: u32, unit: &str, target: &str) -> bool {
    h.unit_bag(rel, unit)
        .and_then(|b| b.get("version"))
        .map(String::as_str)
        != Some(target)
}

/// Asks for `target` and checks the upgrade finished as it must, faults or not.
fn upgrade_to(m: &Model, server: &ReleaseServer, cast: &Cast, target: &str) -> TestResult {
    let rel = peers(m)?;
    m.config(APP, [("version", target)])
        .map_err(|e| fail(format!("config: {e}")))?;
    let what = format!("the upgrade to {target} to finish");
    m.run_until_named(&what, UPGRADE_TIMEOUT, |m| {
        let app = m.databag(rel, APP).data;
        app.get("upgrade-phase").map(String::as_str) == Some("idle")
            && app.get("release-version").map(String::as_str) == Some(target)
            && cast
                .all
                .iter()
                .all(|u| m.databag(rel, u).data.get("version").map(String::as_str) == Some(target))
    })
    .map_err(|e| fail(format!("{what}: {e}")))?;
    let what = format!("every concourse process on {target} by /proc");
    m.run_until_named(&what, LONG, |m| {
        cast.all.iter().all(|u| {
            let v = proc_versions(m, u);
            !v.is_empty() && v.iter().all(|x| x == target)
        })
    })
    .map_err(|e| {
        let seen: Vec<(String, Vec<String>)> = cast
            .all
            .iter()
            .map(|u| (u.clone(), proc_versions(m, u)))
            .collect();
        fail(format!("{what}: {e}; running: {seen:?}"))
    })?;
    // Downloaded once: one request from the first byte; every other one resumes the
    // partial download a killed hook left (Range). The server cannot tell how much of a
    // response a killed client kept, so it counts a resumed download's end twice.
    let tarball = format!("concourse-{target}-linux-amd64.tgz");
    let gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&tarball))
        .collect();
    let fresh = gets.iter().filter(|r| r.range.is_none()).count();
    let ended = gets.iter().any(|r| r.reached_end);
    ensure(fresh == 1 && ended, || {
        let downloads = fresh;
        let requests: Vec<String> = server
            .requests()
            .iter()
            .filter(|r| r.path.contains(&format!("concourse-{target}-")))
            .map(|r| {
                format!(
                    "{} {} range={:?} status={} sent={} end={}",
                    r.method, r.path, r.range, r.status, r.bytes_sent, r.reached_end
                )
            })
            .collect();
        format!(
            "{target} downloaded {downloads} times: {requests:#?}\nfaults: {:#?}",
            m.faults()
        )
    })?;
    m.settle(LONG)
        .map_err(|e| fail(format!("settling after {target}: {e}")))
}

/// Records what the faults of one upgrade did; puts back the points no hook matched.
fn collect(
    m: &Model,
    armed: &[(Role, u64)],
    report: &mut ModelReport,
    queue: &mut Queue,
) -> TestResult {
    for (role, id) in armed {
        let rec: FaultRecord = m.fault(*id).ok_or_else(|| fail("fault gone"))?;
        match &rec.fault {
            Fault::ToolCall { n, kind } => {
                let kind = *kind;
                let p = Point {
                    role: *role,
                    kind,
                    n: *n,
                };
                let why = match rec.hits.first() {
                    Some(h) if h.fired => {
                        report.fired.insert(p);
                        continue;
                    }
                    Some(h) => h.what.clone(),
                    None => {
                        let recent: Vec<String> = m
                            .hooks(&rec.unit)
                            .iter()
                            .rev()
                            .take(8)
                            .map(|h| format!("{} ({} calls)", h.name, h.tool_calls.len()))
                            .collect();
                        format!("no hook matched; its last hooks, newest first: {recent:?}")
                    }
                };
                let again = queue.again(p);
                report.missed.push(format!(
                    "{role:?} {kind:?} {n} on {}: {why}{}",
                    rec.unit,
                    if again { " (tried again)" } else { "" }
                ));
            }
            Fault::Checkpoint { .. } => {
                for h in rec.hits.iter().filter(|h| h.fired) {
                    if let Some(name) = h.what.strip_prefix("killed at checkpoint ") {
                        report.checkpoints.insert(name.to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every hook that failed was hit by a fault: no fault leaves a state a retry fails on.
fn only_faulted_hooks_failed(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        let bad: Vec<String> = m
            .hooks(u)
            .iter()
            .filter(|h| !h.committed() && h.faults.is_empty())
            .map(|h| format!("{} {}: {}", h.name, h.context_id, h.stderr))
            .collect();
        ensure(bad.is_empty(), || {
            format!("{u}: hooks failed without a fault: {bad:?}\n{}", m.dump())
        })?;
    }
    Ok(())
}
