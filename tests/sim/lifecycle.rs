//! Issue 3's acceptance for the real charm: a 3-unit deployment runs every lifecycle hook
//! without a failed hook, in Juju's order.

use std::time::Duration;

use juju_sim::{CallBudget, Volume};
use libtest_mimic::Trial;
use release_fixtures::tarball::Variant;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "lifecycle::three_units_run_every_hook_in_order",
            three_units,
        ),
        trial(
            "lifecycle::settled_units_keep_to_four_calls_per_update_status",
            settled_units,
        ),
    ]
}

/// Issue 13: once every unit is settled (active, nothing pending), each `update-status`
/// makes at most four hook-tool calls and sets no status; the deploy's hooks keep to
/// their budget too.
fn settled_units() -> TestResult {
    let d = deploy_auto_with_pg(3)?;
    let (m, units) = (&d.model, &d.units);
    within_budget(
        m,
        units,
        Duration::ZERO,
        &CallBudget::per_hook(BUDGET_DEPLOY),
    )?;
    settle(m)?;
    let t0 = m.now();
    let update_statuses = |m: &juju_sim::Model, u: &str| {
        m.hooks(u)
            .into_iter()
            .filter(|h| h.started >= t0 && h.name == "update-status")
            .collect::<Vec<_>>()
    };
    run_until(m, "three update-status per unit", |m| {
        units.iter().all(|u| update_statuses(m, u).len() >= 3)
    })?;
    // The first may still reconcile (a unit settles in it); the others are settled.
    let budget = CallBudget::per_hook(4);
    for u in units {
        let hooks = update_statuses(m, u);
        budget
            .check(hooks[1..].iter().map(|h| (u.as_str(), h)))
            .map_err(fail)?;
        for h in &hooks[1..] {
            ensure(h.calls_of("status-set") == 0, || {
                format!("{u}: a settled update-status set a status")
            })?;
        }
        ensure(m.unit_status(u).status == "active", || {
            format!("{u}: {:?}", m.unit_status(u))
        })?;
    }
    no_failed_hooks(m, units)
}

/// The most hook-tool calls one hook of a 3-unit deploy with PostgreSQL may make
/// (measured: 33, 36 with the COS, TLS and proxy reads of issue 15).
const BUDGET_DEPLOY: usize = 40;

fn three_units() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(
        &m,
        "concourse-ci",
        3,
        config(&server, &[("version", V1)]),
        Volume::Shared,
    )?;
    settle(&m)?;
    // wait for at least one update-status on every unit
    run_until(&m, "update-status on every unit", |m| {
        units
            .iter()
            .all(|u| m.hook_names(u).iter().any(|h| h == "update-status"))
    })?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;
    for u in &units {
        let problems = m.deploy_order_problems(u);
        ensure(problems.is_empty(), || {
            format!("{u}: {problems:?}\n{}", m.dump())
        })?;
        let names = m.committed_hook_names(u);
        let pos = |h: &str| names.iter().position(|n| n == h);
        for h in [
            "concourse-data-storage-attached",
            "install",
            "peers-relation-created",
            "config-changed",
            "start",
            "peers-relation-joined",
            "peers-relation-changed",
            "update-status",
        ] {
            ensure(pos(h).is_some(), || format!("{u} never ran {h}: {names:?}"))?;
        }
        let leader_hook = if m.leader("concourse-ci").as_deref() == Some(u.as_str()) {
            "leader-elected"
        } else {
            "leader-settings-changed"
        };
        ensure(pos(leader_hook).is_some(), || {
            format!("{u} never ran {leader_hook}: {names:?}")
        })?;
        ensure(
            pos("concourse-data-storage-attached") < pos("install"),
            || format!("{u}: {names:?}"),
        )?;
        ensure(pos("start") < pos("peers-relation-joined"), || {
            format!("{u}: {names:?}")
        })?;
        // every hook set a status; none is blocked
        let st = m.unit_status(u);
        ensure(st.status != "blocked", || {
            format!("{u} is blocked: {}", st.message)
        })?;
    }
    for u in &units {
        eprintln!("{u}: {:?}", m.unit_status(u));
    }
    // the leader assigned the web unit and created the admin secret
    let peers = m
        .relation_id("concourse-ci:peers")
        .ok_or_else(|| fail("no peer relation"))?;
    let app = m.databag(peers, "concourse-ci");
    ensure(app.data.contains_key("web-unit"), || {
        format!("no web-unit in {:?}", app.data)
    })?;
    ensure(app.data.contains_key("admin-password-secret"), || {
        format!("no admin secret in {:?}", app.data)
    })?;
    Ok(())
}
