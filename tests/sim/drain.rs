//! Issue 11 points 7 and 8 with real processes: draining workers as Concourse behaves
//! (signals lost before the beacon runs, exit 1 when a land finds no TSA, build containers
//! that must outlive an escalation), web's reload before its TSA listens, and a rollback
//! that migrates the played database down before web goes back. The fake `concourse`
//! imitates v7.14.3 (release_fixtures::fake_concourse) and the fake systemd its restart
//! rules (fake_systemd).

use std::time::Duration;

use juju_sim::ModelOptions;
use libtest_mimic::{Failed, Trial};
use release_fixtures::fake_concourse::{schema_version, Record};
use release_fixtures::tarball::Variant;

use crate::common::*;

const APP: &str = APP_NAME;

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "drain::regression_workers_land_once_registered_and_are_never_restarted",
            upgrade_lands_registered_workers,
        ),
        // Its build container was once found dead after the escalation: the first
        // worker had started after the config change and was taken for the restarted
        // one (fixed: the restarted worker is the one started with the new tag).
        trial(
            "drain::regression_escalation_keeps_build_containers",
            escalation_keeps_containers,
        ),
        trial(
            "drain::regression_a_reload_while_web_starts_does_not_kill_it",
            reload_while_web_starts,
        ),
        trial(
            "drain::regression_a_rollback_migrates_the_database_down_first",
            rollback_migrates_down,
        ),
    ]
}

/// A deployment of `n` units in `auto` mode on V1 (V2 served as `v2`), version unpinned.
fn deployed(n: usize, v2: Variant, config: &[(&str, &str)]) -> Result<Deployment, Failed> {
    deploy_with(DeploySpec {
        units: n,
        config,
        releases: &[(V1, Variant::Normal), (V2, v2)],
        options: ModelOptions {
            update_status_interval: Some(Duration::from_secs(3)),
            ..ModelOptions::default()
        },
        ..DeploySpec::default()
    })
}

fn web_of(m: &juju_sim::Model) -> Result<String, Failed> {
    let peers = m
        .relation_id(&format!("{APP}:peers"))
        .ok_or_else(|| fail("no peer relation"))?;
    m.databag(peers, APP)
        .data
        .get("web-unit")
        .cloned()
        .ok_or_else(|| fail("no web-unit"))
}

fn upgrade(m: &juju_sim::Model, version: &str) -> TestResult {
    let lead = m.leader(APP).ok_or_else(|| fail("no leader"))?;
    m.run_action(&lead, "upgrade", [("version", version)])
        .map_err(|e| fail(format!("upgrade action: {e}")))?;
    Ok(())
}

fn app_phase(m: &juju_sim::Model) -> String {
    m.relation_id(&format!("{APP}:peers"))
        .and_then(|r| m.databag(r, APP).data.get("upgrade-phase").cloned())
        .unwrap_or_default()
}

fn events(records: &[Record], sub: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.subcommand == sub)
        .map(|r| {
            format!(
                "{} {} {}",
                r.pid,
                r.event,
                r.detail.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// Web died of a SIGHUP sent before its TSA started (a reload too early).
fn killed_by_hup(r: &Record) -> bool {
    r.event == "killed before the TSA started" && r.detail.as_deref() == Some("SIGHUP")
}

/// The fake systemd restarted the unit's `service` by itself (Restart=).
fn restarts(m: &juju_sim::Model, unit: &str, service: &str) -> Vec<String> {
    journal(m, unit)
        .into_iter()
        .filter(|e| e.unit == format!("{service}.service") && e.action == "restart-scheduled")
        .map(|e| format!("{} {:?}", e.action, e.detail))
        .collect()
}

/// An upgrade while web is slow to start its TSA: workers lose their registration when
/// web switches and register again only once web listens. The charm used to grant and
/// signal them at once: their land found no TSA, they exited 1 and systemd restarted them
/// (Restart=on-failure) as workers that never landed.
fn upgrade_lands_registered_workers() -> TestResult {
    let d = deployed(3, Variant::Normal, &[])?;
    let m = &d.model;
    let web = web_of(m)?;
    let workers: Vec<String> = d.units.iter().filter(|u| **u != web).cloned().collect();
    // web 8.0.0 takes 8 s to open and migrate the database before its TSA listens
    control(m, &web, "startup-delay", "8")?;
    let since = epoch_now();
    upgrade(m, V2)?;
    m.run_until_named("upgrade done", LONG * 2, |m| {
        app_phase(m) == "idle"
            && d.units
                .iter()
                .all(|u| pointer_version(m, u).as_deref() == Some(V2))
            && d.units.iter().all(|u| m.unit_status(u).status == "active")
    })
    .map_err(|e| fail(format!("{e}")))?;
    for w in &workers {
        let recs: Vec<Record> = concourse_log(m, w)
            .into_iter()
            .filter(|r| r.ts >= since && r.subcommand == "worker")
            .collect();
        let bad: Vec<&Record> = recs
            .iter()
            .filter(|r| {
                matches!(
                    r.event.as_str(),
                    "drain failed" | "killed without landing" | "ignored signal"
                )
            })
            .collect();
        ensure(bad.is_empty(), || {
            format!("{w}: {:?}\n{:?}", bad, events(&recs, "worker"))
        })?;
        ensure(recs.iter().any(|r| r.event == "landed"), || {
            format!("{w} never landed: {:?}", events(&recs, "worker"))
        })?;
        let r = restarts(m, w, "concourse-worker");
        ensure(r.is_empty(), || format!("{w}: systemd restarted it: {r:?}"))?;
    }
    let web_log = concourse_log(m, &web);
    ensure(!web_log.iter().any(killed_by_hup), || {
        format!("{web}: {:?}", events(&web_log, "web"))
    })?;
    no_failed_hooks(m, &d.units)
}

/// A worker that does not land within drain-timeout (for an upgrade): systemd sends
/// SIGTERM, then SIGKILL, to its main process only. The charm used to SIGKILL the worker's whole cgroup, ending
/// the build containers Concourse reattaches to.
fn escalation_keeps_containers() -> TestResult {
    let d = deployed(2, Variant::Normal, &[("drain-timeout", "3s")])?;
    let m = &d.model;
    let web = web_of(m)?;
    let w = d
        .units
        .iter()
        .find(|u| **u != web)
        .cloned()
        .ok_or_else(|| fail("no worker"))?;
    // the worker runs a build container once it registered (restart it to get one), and
    // registers again within 0.5 s when its TSA comes back
    control(m, &w, "containers", "1")?;
    control(m, &w, "beacon-retry", "0.5")?;
    let restart_since = epoch_now();
    m.config(APP, [("tag", "gpu")])
        .map_err(|e| fail(e.to_string()))?;
    // the container of the worker started for the change: started with the tag (under
    // load the first worker can start, or register, after the change was made)
    let restarted_container = |m: &juju_sim::Model| {
        let log = concourse_log(m, &w);
        let started: Vec<u32> = log
            .iter()
            .filter(|r| {
                r.ts >= restart_since
                    && r.event == "start"
                    && r.subcommand == "worker"
                    && r.env.get("CONCOURSE_TAG").map(String::as_str) == Some("gpu")
            })
            .map(|r| r.pid)
            .collect();
        log.iter()
            .rev()
            .filter(|r| r.event == "container" && started.contains(&r.pid))
            .find_map(|r| Some((r.pid, r.signalled_pid?)))
    };
    m.run_until_named("a build container of the restarted worker", LONG, |m| {
        restarted_container(m).is_some()
    })
    .map_err(|e| fail(e.to_string()))?;
    let (worker_pid, container) = restarted_container(m).ok_or_else(|| fail("no container pid"))?;
    ensure(
        last_start(m, &w, "worker").map(|r| r.pid) == Some(worker_pid),
        || "the worker restarted twice for one change".into(),
    )?;
    // its build never finishes, and it ignores SIGTERM too
    control(m, &w, "land-delay", "600")?;
    control(m, &w, "ignore-term", "")?;
    // the upgrade lands the worker (once it registered again after web switched): the
    // drain escalates
    let since = epoch_now();
    upgrade(m, V2)?;
    m.run_until_named("the worker on V2", LONG, |m| {
        pointer_version(m, &w).as_deref() == Some(V2) && service_pid(m, &w, "worker").is_some()
    })
    .map_err(|e| fail(e.to_string()))?;
    ensure(!pid_alive(worker_pid), || {
        "the old worker still runs".into()
    })?;
    ensure(pid_alive(container), || {
        format!(
            "the build container {container} died with its worker: {}\n{:?}",
            history(m, &w, "worker", since),
            journal(m, &w)
                .iter()
                .filter(|e| e.ts >= since && e.unit == "concourse-worker.service")
                .map(|e| format!("{} {:?} {:?} {:?}", e.action, e.signal, e.pid, e.detail))
                .collect::<Vec<_>>()
        )
    })?;
    let steps: Vec<(String, Option<String>, Option<u32>)> = journal(m, &w)
        .into_iter()
        .filter(|e| e.ts >= since && e.unit == "concourse-worker.service")
        .filter(|e| matches!(e.action.as_str(), "signal" | "abort" | "escalate"))
        .map(|e| (e.action, e.signal, e.pid))
        .collect();
    let want = |a: &str, s: &str| (a.to_string(), Some(s.to_string()), Some(worker_pid));
    ensure(
        steps
            == [
                want("signal", "SIGUSR1"),
                want("abort", "SIGTERM"),
                want("escalate", "SIGKILL"),
            ],
        || format!("escalation {steps:?}\n{}", history(m, &w, "worker", since)),
    )?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(container as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    no_failed_hooks(m, &d.units)
}

/// Web dies on SIGHUP until its TSA started, and systemd does not restart it (a clean
/// death). The charm used to reload web as soon as a new worker's key arrived.
fn reload_while_web_starts() -> TestResult {
    let d = deployed(1, Variant::Normal, &[])?;
    let m = &d.model;
    let web = d.units[0].clone();
    m.run_until_named("web listening", LONG, |m| {
        last_start(m, &web, "web").is_some_and(|s| {
            concourse_log(m, &web)
                .iter()
                .any(|r| r.pid == s.pid && r.event == "listening")
        })
    })
    .map_err(|e| fail(e.to_string()))?;
    control(m, &web, "startup-delay", "40")?;
    // web restarts (a new log level) and spends 40 s before its TSA listens
    m.config(APP, [("log-level", "debug")])
        .map_err(|e| fail(e.to_string()))?;
    let since = epoch_now();
    m.run_until_named("web restarted", LONG, |m| {
        concourse_log(m, &web)
            .iter()
            .any(|r| r.ts >= since && r.subcommand == "web" && r.event == "start")
    })
    .map_err(|e| fail(e.to_string()))?;
    // a new worker: its key reaches web while web starts
    let added = m.add_unit(APP).map_err(|e| fail(e.to_string()))?;
    m.run_until_named("the new worker registered", LONG, |m| {
        concourse_log(m, &added)
            .iter()
            .any(|r| r.event == "registered")
    })
    .map_err(|e| fail(e.to_string()))?;
    // web loads the worker keys when its TSA starts, so the worker can register before the
    // reload that the charm sends once web listens (the next hook after that)
    let _ = m.run_until(LONG, |m| {
        concourse_log(m, &web)
            .iter()
            .any(|r| r.ts >= since && r.event == "reloaded")
    });
    let log = concourse_log(m, &web);
    ensure(!log.iter().any(killed_by_hup), || {
        format!("{web}: {:?}", events(&log, "web"))
    })?;
    let starts = log
        .iter()
        .filter(|r| r.ts >= since && r.subcommand == "web" && r.event == "start")
        .count();
    ensure(starts == 1, || {
        format!("web started {starts} times: {:?}", events(&log, "web"))
    })?;
    ensure(
        log.iter().any(|r| r.ts >= since && r.event == "reloaded"),
        || format!("web never reloaded: {:?}", events(&log, "web")),
    )?;
    no_failed_hooks(m, &m.units(APP))
}

/// An upgrade that fails after web switched (the worker cannot run V2): the rollback takes
/// web back only after V2's binary migrated the played database down to what V1
/// supports. An older web does not refuse a newer schema (it runs on it, which the fake
/// records as `web-on-newer-schema`): that must never happen.
fn rollback_migrates_down() -> TestResult {
    let d = deployed(2, Variant::WorkerCrashOnStart, &[])?;
    let m = &d.model;
    let web = web_of(m)?;
    upgrade(m, V2)?;
    m.run_until_named("the upgrade failed and rolled back", LONG * 2, |m| {
        app_phase(m) == "failed"
            && d.units
                .iter()
                .all(|u| pointer_version(m, u).as_deref() == Some(V1))
            && service_pid(m, &web, "web").is_some()
    })
    .map_err(|e| fail(e.to_string()))?;
    let log = concourse_log(m, &web);
    let newer: Vec<&Record> = log
        .iter()
        .filter(|r| r.event == "web-on-newer-schema")
        .collect();
    ensure(newer.is_empty(), || {
        format!("web ran on a newer schema: {newer:?}")
    })?;
    let (v1_schema, v2_schema) = (schema_version(V1), schema_version(V2));
    let migrated_up = log
        .iter()
        .position(|r| r.subcommand == "web" && r.version == V2 && r.event == "migrated")
        .ok_or_else(|| fail(format!("web V2 never migrated: {:?}", events(&log, "web"))))?;
    let down = log
        .iter()
        .position(|r| {
            r.subcommand == "migrate"
                && r.version == V2
                && r.event == "migrated"
                && r.detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with(&format!("from {v2_schema} to {v1_schema}")))
        })
        .ok_or_else(|| fail(format!("no down migration: {:?}", events(&log, "migrate"))))?;
    let back = log
        .iter()
        .rposition(|r| r.subcommand == "web" && r.version == V1 && r.event == "start")
        .ok_or_else(|| fail("web V1 never started again"))?;
    ensure(migrated_up < down && down < back, || {
        format!("order: up {migrated_up}, down {down}, V1 web {back}")
    })?;
    // the migration's settings came through the environment, never argv
    let argv = &log[down].argv;
    ensure(
        argv == &[
            "migrate".to_string(),
            format!("--migrate-db-to-version={v1_schema}"),
        ],
        || format!("argv {argv:?}"),
    )?;
    no_failed_hooks(m, &d.units)
}
