//! Self-tests of the Juju simulator: each proves one semantic with a tiny scripted charm.
//!
//! A `harness = false` target: `main` first lets the executable act as a hook tool when it
//! was started as one (the simulator symlinks every tool name to it), then runs the tests
//! with libtest-mimic.

mod support;

use juju_sim::{DeployOptions, Model, ModelOptions, Volume};
use libtest_mimic::{Arguments, Failed, Trial};
use std::time::Duration;
use support::*;

type R = Result<(), Box<dyn std::error::Error>>;
type TestFn = fn() -> R;

fn opts() -> ModelOptions {
    ModelOptions {
        update_status_interval: Some(Duration::from_secs(3600)),
        ..ModelOptions::default()
    }
}

fn deploy(
    m: &Model,
    charm: &TestCharm,
    n: usize,
    storage: Volume,
) -> Result<Vec<String>, juju_sim::SimError> {
    m.deploy(
        charm.source(),
        "app",
        n,
        DeployOptions {
            storage,
            ..DeployOptions::default()
        },
    )
}

/// Deploying 3 units runs the lifecycle hooks in Juju's order on every unit.
fn deploy_hook_order() -> R {
    let charm = TestCharm::new("");
    let m = Model::new(ModelOptions {
        update_status_interval: Some(Duration::from_millis(500)),
        ..opts()
    })?;
    let units = deploy(&m, &charm, 3, Volume::Shared)?;
    m.settle(LONG)?;
    let leader = m.leader("app").expect("a leader");
    m.run_until(LONG, |m| {
        units
            .iter()
            .all(|u| committed_hooks(m, u).iter().any(|h| h == "update-status"))
    })?;
    for u in &units {
        let hooks = committed_hooks(&m, u);
        let lead = if *u == leader {
            "leader-elected"
        } else {
            "leader-settings-changed"
        };
        assert_eq!(
            hooks[..6],
            [
                "data-storage-attached",
                "install",
                "peers-relation-created",
                lead,
                "config-changed",
                "start"
            ],
            "{u}: {hooks:?}"
        );
        // Then peer traffic: joined immediately followed by changed, for each other unit.
        let recs: Vec<_> = m
            .hooks(u)
            .into_iter()
            .filter(|h| {
                h.name == "peers-relation-joined"
                    || (h.name == "peers-relation-changed" && !remote_unit(h).is_empty())
            })
            .collect();
        let mut joined = Vec::new();
        for (i, h) in recs.iter().enumerate() {
            if h.name == "peers-relation-joined" {
                let next = recs.get(i + 1).expect("changed after joined");
                assert_eq!(
                    next.name, "peers-relation-changed",
                    "{u}: joined then changed"
                );
                assert_eq!(remote_unit(next), remote_unit(h));
                joined.push(remote_unit(h));
            }
        }
        joined.sort();
        let others: Vec<String> = units.iter().filter(|x| *x != u).cloned().collect();
        assert_eq!(joined, others, "{u} joined every other unit once");
        assert_eq!(
            hooks.iter().filter(|h| *h == "leader-elected").count(),
            usize::from(*u == leader)
        );
        let first_us = hooks.iter().position(|h| h == "update-status").unwrap_or(0);
        assert!(
            first_us
                > hooks
                    .iter()
                    .position(|h| h == "start")
                    .unwrap_or(usize::MAX)
        );
    }
    Ok(())
}

/// Bad hook-tool calls fail like Juju's: usage errors exit 2, refusals exit 1.
fn tool_exit_codes() -> R {
    let charm = TestCharm::new(
        r#"install)
  for cmd in "config-get --bogus" "status-set bogus" "relation-get" "is-leader --format=xml" \
             "action-get" "juju-log" "relation-list -r peers:99" "relation-get --app - app" \
             "storage-get -s nope/9" "status-set active one two" "application-version-set"; do
    out=$($cmd 2>&1); log "[$cmd] rc=$? $out"
  done
  ;;
"#,
    );
    let m = Model::new(opts())?;
    let u = &deploy(&m, &charm, 1, Volume::Shared)?[0];
    m.settle(LONG)?;
    let logs = log_lines(&m, u).join("\n");
    for (cmd, rc, text) in [
        (
            "config-get --bogus",
            2,
            "ERROR flag provided but not defined: --bogus",
        ),
        (
            "status-set bogus",
            2,
            "ERROR invalid status \"bogus\", expected one of [maintenance blocked waiting active]",
        ),
        ("relation-get", 2, "ERROR no relation id specified"),
        (
            "is-leader --format=xml",
            2,
            "ERROR invalid value \"xml\" for option --format",
        ),
        ("action-get", 1, "ERROR not running an action"),
        ("juju-log", 2, "ERROR no message specified"),
        ("relation-list -r peers:99", 2, "relation not found"),
        (
            "storage-get -s nope/9",
            2,
            "storage instance \"nope/9\" not found",
        ),
        (
            "status-set active one two",
            2,
            "ERROR unrecognized args: [\"two\"]",
        ),
        ("application-version-set", 2, "ERROR no version specified"),
    ] {
        let line = logs
            .lines()
            .find(|l| l.starts_with(&format!("[{cmd}]")))
            .unwrap_or_else(|| panic!("no log for {cmd}: {logs}"));
        assert!(line.contains(&format!("rc={rc} ")), "{cmd}: {line}");
        assert!(line.contains(text), "{cmd}: {line}");
    }
    // Every call was counted.
    let install = m
        .hooks(u)
        .into_iter()
        .find(|h| h.name == "install")
        .expect("install");
    assert_eq!(install.calls_of("juju-log"), 12);
    assert_eq!(install.calls_of("config-get"), 1);
    Ok(())
}

fn main() {
    juju_sim::multicall::run_if_tool();
    let args = Arguments::from_args();
    let tests: Vec<(&str, TestFn)> = vec![
        ("deploy_hook_order", deploy_hook_order),
        ("tool_exit_codes", tool_exit_codes),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, move || f().map_err(|e| Failed::from(e.to_string()))))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
