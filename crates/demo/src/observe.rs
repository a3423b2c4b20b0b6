//! What the demo sees, read from the outside like an operator would: the simulator's
//! `juju status` (statuses, agents, leader, the peer app databag), the processes each unit
//! really runs (from /proc) and the release server's request log.
//!
//! Owns: [`Snapshot`] (one look at everything) and [`Tracker`], which turns two successive
//! snapshots (and the fake `concourse` logs) into timeline [`Event`]s.
//!
//! Invariants: observing never changes the model (reads only); the version a unit "runs"
//! comes from the executable file its Concourse processes have open, never from a status.

use std::collections::BTreeMap;

use juju_sim::model::AgentStatus;
use juju_sim::Model;
use release_fixtures::fake_concourse::Record;
use release_fixtures::server::ReleaseServer;
use serde::Serialize;

pub const APP: &str = "concourse-ci";
pub const POSTGRES: &str = "postgresql";

/// One row of the units table.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRow {
    pub name: String,
    pub leader: bool,
    pub workload: String,
    pub message: String,
    pub agent: String,
    /// `(role, version)` of each Concourse process the unit runs, sorted.
    pub runs: Vec<(String, String)>,
}

impl UnitRow {
    /// The versions the unit's processes run, e.g. `8.0.0` or `7.14.3+8.0.0`; `-` for none.
    pub fn runs_label(&self) -> String {
        let mut v: Vec<&str> = self.runs.iter().map(|(_, v)| v.as_str()).collect();
        v.dedup();
        if v.is_empty() {
            "-".into()
        } else {
            v.join("+")
        }
    }

    /// Whether every Concourse process of the unit runs `version` (and one does).
    pub fn runs_only(&self, version: &str) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|(_, v)| v == version)
    }
}

/// One row of the applications table.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRow {
    pub name: String,
    pub version: String,
    pub status: String,
    pub scale: usize,
    pub message: String,
}

/// Everything the display shows, at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub apps: Vec<AppRow>,
    pub units: Vec<UnitRow>,
    /// The peer app databag (`upgrade-phase`, `upgrade-gen`, `upgrade-grant`, …).
    pub app_data: BTreeMap<String, String>,
    /// Complete tarball downloads per version, from the release server's log.
    pub downloads: BTreeMap<String, usize>,
}

impl Snapshot {
    pub fn phase(&self) -> &str {
        self.app_data
            .get("upgrade-phase")
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn unit(&self, name: &str) -> Option<&UnitRow> {
        self.units.iter().find(|u| u.name == name)
    }

    /// Every unit is active, mentions `version` in its status and runs only `version`.
    pub fn all_on(&self, version: &str) -> bool {
        !self.units.is_empty()
            && self.units.iter().all(|u| {
                u.workload == "active" && u.message.contains(version) && u.runs_only(version)
            })
    }

    pub fn total_downloads(&self) -> usize {
        self.downloads.values().sum()
    }
}

/// Looks at the model and the server now; `versions` are the releases served.
pub fn snapshot(m: &Model, server: &ReleaseServer, versions: &[&str]) -> Snapshot {
    let leader = m.leader(APP);
    let units: Vec<UnitRow> = m
        .units(APP)
        .into_iter()
        .map(|name| {
            let s = m.unit_status(&name);
            UnitRow {
                leader: leader.as_deref() == Some(name.as_str()),
                workload: s.status,
                message: s.message,
                agent: agent_label(&m.agent_status(&name)),
                runs: proc_runs(m, &name),
                name,
            }
        })
        .collect();
    let app = m.app_status(APP);
    let pg = m.app_status(POSTGRES);
    let apps = vec![
        AppRow {
            name: APP.into(),
            version: m.app_version(APP),
            status: app.status,
            scale: units.len(),
            message: app.message,
        },
        AppRow {
            name: POSTGRES.into(),
            version: String::new(),
            status: pg.status,
            scale: m.units(POSTGRES).len(),
            message: pg.message,
        },
    ];
    let app_data = m
        .relation_id(&format!("{APP}:peers"))
        .map(|rel| m.databag(rel, APP).data)
        .unwrap_or_default();
    let downloads = versions
        .iter()
        .map(|v| (v.to_string(), server.count_complete_downloads(v)))
        .collect();
    Snapshot {
        apps,
        units,
        app_data,
        downloads,
    }
}

fn agent_label(a: &AgentStatus) -> String {
    match a {
        AgentStatus::Allocating => "allocating",
        AgentStatus::Idle => "idle",
        AgentStatus::Executing(_) => "executing",
        AgentStatus::Error(_) => "error",
    }
    .into()
}

/// `(role, version)` of each Concourse process of the unit, read from /proc: bash keeps the
/// script it runs open on fd 255, and the kernel names the file it resolved
/// (`…/releases/<version>/concourse/bin/concourse`), whatever symlink started it (as
/// `proc_versions` in tests/sim/upgrade.rs).
pub fn proc_runs(m: &Model, unit: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = m
        .processes(unit)
        .iter()
        .filter_map(|p| {
            let role = p
                .cmdline
                .iter()
                .find(|a| *a == "web" || *a == "worker")?
                .clone();
            let target = std::fs::read_link(format!("/proc/{}/fd/255", p.pid)).ok()?;
            let s = target.to_string_lossy().into_owned();
            let version = s.split("/releases/").nth(1)?.split('/').next()?.to_string();
            Some((role, version))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One entry of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the demo started.
    pub t: f64,
    pub act: u8,
    /// `act` (a title), `command` (what the operator types, or what to expect), `status`,
    /// `app`, `runs`, `phase`, `grant`, `worker`, `download`, `unit`, `hook-failed`,
    /// `action`, `note`.
    pub kind: &'static str,
    pub unit: Option<String>,
    pub text: String,
}

impl Event {
    /// Whether the live display prints it above the table (the others are in the table).
    pub fn is_milestone(&self) -> bool {
        !matches!(self.kind, "status" | "app")
    }
}

/// Turns successive snapshots into events.
#[derive(Debug, Default)]
pub struct Tracker {
    prev: Option<Snapshot>,
    /// Fake `concourse` records already seen, per unit.
    records_seen: BTreeMap<String, usize>,
    /// Failed hooks already reported, per unit.
    failed_seen: BTreeMap<String, usize>,
}

/// What the tracker reads besides the snapshot: each unit's fake `concourse` records and
/// its failed hooks `(name, exit code)`, oldest first.
pub struct UnitLogs {
    pub records: Vec<Record>,
    pub failed: Vec<(String, Option<i32>)>,
    /// Hooks that failed since the last one that committed.
    pub failing: usize,
}

impl Tracker {
    /// Changes between the previous snapshot and `now` (the first snapshot is compared
    /// with an empty one).
    pub fn update(&mut self, now: &Snapshot, logs: &BTreeMap<String, UnitLogs>) -> Vec<Change> {
        let empty = Snapshot::default();
        let prev = self.prev.take().unwrap_or(empty);
        let mut out = Out(Vec::new());
        // in the order things happen when several show up in one look: a release is
        // downloaded, the leader moves the phase on and grants, a worker lands, it stops
        // and runs the new version
        for (v, n) in &now.downloads {
            let before = prev.downloads.get(v).copied().unwrap_or(0);
            if *n > before {
                let text =
                    format!("release server: v{v} tarball downloaded (download {n} of v{v})");
                out.push(("download", None, text));
            }
        }
        upgrade_changes(&prev, now, &mut out);
        for (unit, l) in logs {
            self.log_changes(unit, l, &mut out);
        }
        unit_changes(&prev, now, &mut out);
        app_changes(&prev, now, &mut out);
        self.prev = Some(now.clone());
        out.0
    }

    fn log_changes(&mut self, unit: &str, l: &UnitLogs, out: &mut Out) {
        let seen = self.records_seen.entry(unit.to_string()).or_default();
        for r in l.records.iter().skip(*seen) {
            let text = match (r.subcommand.as_str(), r.event.as_str()) {
                ("worker", "landing") => "worker landing: takes no new builds, finishes its own",
                ("worker", "landed") => "worker landed: stopped with no build lost",
                (_, "killed without landing") => "worker killed without landing",
                _ => continue,
            };
            out.push(("worker", Some(unit.to_string()), text.to_string()));
        }
        *seen = l.records.len().max(*seen);
        let failed = self.failed_seen.entry(unit.to_string()).or_default();
        for (name, code) in l.failed.iter().skip(*failed) {
            let code = code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "killed".into());
            let text = format!("hook {name} failed (exit {code}); the agent retries it");
            out.push(("hook-failed", Some(unit.to_string()), text));
        }
        *failed = l.failed.len().max(*failed);
    }
}

/// One change seen by the [`Tracker`]: an [`Event`] without its time and act.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: &'static str,
    pub unit: Option<String>,
    pub text: String,
}

struct Out(Vec<Change>);

impl Out {
    fn push(&mut self, (kind, unit, text): (&'static str, Option<String>, String)) {
        self.0.push(Change { kind, unit, text });
    }
}

fn unit_changes(prev: &Snapshot, now: &Snapshot, out: &mut Out) {
    for u in &now.units {
        let before = prev.unit(&u.name);
        if before.is_none() {
            out.push(("unit", Some(u.name.clone()), "unit added".into()));
        }
        if before.map(|b| (&b.workload, &b.message)) != Some((&u.workload, &u.message)) {
            let text = format!("{}: {}", u.workload, u.message);
            out.push(("status", Some(u.name.clone()), text));
        }
        if before.map(|b| &b.runs) != Some(&u.runs) && !(before.is_none() && u.runs.is_empty()) {
            let text = if u.runs.is_empty() {
                "runs no Concourse process".to_string()
            } else {
                let parts: Vec<String> = u.runs.iter().map(|(r, v)| format!("{r} v{v}")).collect();
                format!("now runs {} (by /proc)", parts.join(", "))
            };
            out.push(("runs", Some(u.name.clone()), text));
        }
    }
}

fn app_changes(prev: &Snapshot, now: &Snapshot, out: &mut Out) {
    for a in &now.apps {
        let before = prev.apps.iter().find(|b| b.name == a.name);
        if before.map(|b| (&b.status, &b.message)) != Some((&a.status, &a.message)) {
            let text = format!("{}: {}", a.status, a.message);
            let text = text.trim_end_matches(": ").to_string();
            out.push(("app", Some(a.name.clone()), text));
        }
    }
}

fn upgrade_changes(prev: &Snapshot, now: &Snapshot, out: &mut Out) {
    let get = |s: &Snapshot, k: &str| s.app_data.get(k).cloned().unwrap_or_default();
    let (phase, target) = (now.phase(), get(now, "upgrade-target"));
    if phase != prev.phase() && !phase.is_empty() {
        let gen = get(now, "upgrade-gen");
        let text = match phase {
            "prepare" => format!(
                "upgrade phase prepare (gen {gen}): every unit checks it can take v{target}"
            ),
            "downloading" => {
                format!("upgrade phase downloading: the leader installs v{target} once")
            }
            "complete" => {
                format!("upgrade phase complete: v{target} published; units switch one at a time")
            }
            "idle" if prev.phase().is_empty() => "upgrade phase idle".to_string(),
            "idle" => format!(
                "upgrade phase idle: every unit runs v{}",
                get(now, "release-version")
            ),
            "failed" => format!("upgrade phase failed: {}", get(now, "upgrade-error")),
            other => format!("upgrade phase {other}"),
        };
        out.push(("phase", None, text));
    }
    let grant = get(now, "upgrade-grant");
    if grant != get(prev, "upgrade-grant") && !grant.is_empty() {
        let who = grant.split_once(':').map(|(_, w)| w).unwrap_or(&grant);
        if !who.is_empty() {
            let text = format!(
                "leader grants {}: switch to v{target} now",
                who.replace(',', ", ")
            );
            out.push(("grant", None, text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, status: &str, msg: &str, runs: &[(&str, &str)]) -> UnitRow {
        UnitRow {
            name: name.into(),
            leader: false,
            workload: status.into(),
            message: msg.into(),
            agent: "idle".into(),
            runs: runs
                .iter()
                .map(|(r, v)| (r.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn snap(units: Vec<UnitRow>, data: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            units,
            app_data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn runs_label_and_all_on() {
        let u = unit(
            "a/0",
            "active",
            "Worker ready (v8.0.0)",
            &[("worker", "8.0.0")],
        );
        assert_eq!(u.runs_label(), "8.0.0");
        let mixed = unit(
            "a/1",
            "active",
            "x",
            &[("web", "7.14.3"), ("worker", "8.0.0")],
        );
        assert_eq!(mixed.runs_label(), "7.14.3+8.0.0");
        assert_eq!(unit("a/2", "active", "", &[]).runs_label(), "-");
        assert!(snap(vec![u.clone()], &[]).all_on("8.0.0"));
        // the status alone does not count: the process must run it
        let claims = unit(
            "a/3",
            "active",
            "Worker ready (v8.0.0)",
            &[("worker", "7.14.3")],
        );
        assert!(!snap(vec![u, claims], &[]).all_on("8.0.0"));
        assert!(!snap(vec![], &[]).all_on("8.0.0"));
    }

    #[test]
    fn tracker_reports_phases_grants_and_switches() {
        let mut t = Tracker::default();
        let logs = BTreeMap::new();
        let a = snap(
            vec![unit("a/0", "active", "ok", &[("worker", "7.14.3")])],
            &[("upgrade-phase", "idle")],
        );
        let first = t.update(&a, &logs);
        assert!(first.iter().any(|e| e.kind == "unit"));
        assert!(first
            .iter()
            .any(|e| e.kind == "runs" && e.text.contains("worker v7.14.3")));
        assert!(t.update(&a, &logs).is_empty(), "no change, no event");
        let b = snap(
            vec![unit("a/0", "active", "ok", &[("worker", "8.0.0")])],
            &[
                ("upgrade-phase", "complete"),
                ("upgrade-target", "8.0.0"),
                ("upgrade-grant", "2:a/0"),
            ],
        );
        let kinds: Vec<&str> = t.update(&b, &logs).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["phase", "grant", "runs"]);
    }

    #[test]
    fn tracker_reports_each_landing_once() {
        let mut t = Tracker::default();
        let rec = |event: &str| Record {
            ts: 1.0,
            event: event.into(),
            subcommand: "worker".into(),
            argv: vec![],
            env: BTreeMap::new(),
            exe: String::new(),
            exe_resolved: String::new(),
            version: "7.14.3".into(),
            pid: 1,
            ppid: 1,
            uid: 0,
            gid: 0,
            user: String::new(),
            cwd: String::new(),
            path_env: String::new(),
            detail: None,
            signalled_pid: None,
        };
        let mut logs = BTreeMap::new();
        logs.insert(
            "a/1".to_string(),
            UnitLogs {
                records: vec![rec("start"), rec("landing")],
                failed: vec![("install".into(), Some(1))],
                failing: 1,
            },
        );
        let s = snap(vec![], &[]);
        let e = t.update(&s, &logs);
        let worker: Vec<&String> = e
            .iter()
            .filter(|e| e.kind == "worker")
            .map(|e| &e.text)
            .collect();
        assert_eq!(worker.len(), 1);
        assert!(worker[0].contains("landing"));
        assert!(e
            .iter()
            .any(|e| e.kind == "hook-failed" && e.text.contains("install")));
        assert!(t.update(&s, &logs).is_empty());
    }
}
