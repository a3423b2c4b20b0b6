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
        assert_eq!(m.deploy_order_problems(u), Vec::<String>::new(), "{u}");
        assert!(m.failed_hooks(u).is_empty());
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
    assert!(install.duplicate_calls().is_empty());
    Ok(())
}

fn wait_running_with_call(m: &Model, unit: &str, hook: &str, tool: &str) -> R {
    m.run_until_named(
        &format!("{unit} running {hook} after calling {tool}"),
        LONG,
        |m| {
            m.running_hook(unit).is_some_and(|h| {
                h.name == hook
                    && h.tool_calls
                        .iter()
                        .any(|c| c.args.first().map(String::as_str) == Some(tool))
            })
        },
    )?;
    Ok(())
}

fn bag_history_values(m: &Model, rel: u32, key: &str) -> Vec<String> {
    m.bag_history(rel)
        .into_iter()
        .filter_map(|c| c.data.get(key).map(|v| format!("{}={v}", c.owner)))
        .collect()
}

const PEER_HANDLERS: &str = r#"
peers-relation-changed)
  if [ -n "$JUJU_REMOTE_UNIT" ]; then
    log "changed $JUJU_REMOTE_UNIT k=$(relation-get k "$JUJU_REMOTE_UNIT")"
  else
    log "app-changed $JUJU_REMOTE_APP k=$(relation-get k)"
  fi ;;
action:do)
  rid=$(peers_id)
  case "$(action-get what)" in
    write) relation-set -r "$rid" k="$(action-get value)" ;;
    writeapp) relation-set -r "$rid" --app k="$(action-get value)" ;;
    writeapp-wait) relation-set -r "$rid" --app k="from-$JUJU_UNIT_NAME"; waitfor /tmp/go ;;
    watch)
      other=$(action-get value)
      first=$(relation-get -r "$rid" k "$other")
      waitfor /tmp/go
      second=$(relation-get -r "$rid" k "$other")
      action-set first="$first" second="$second" ;;
    watchapp)
      first=$(relation-get -r "$rid" --app k app)
      waitfor /tmp/go
      second=$(relation-get -r "$rid" --app k app)
      action-set first="$first" second="$second" ;;
    block) waitfor /tmp/go ;;
    read) action-set v="$(relation-get -r "$rid" k "$(action-get value)")" ;;
    failcommit)
      relation-set -r "$rid" k=committed; state-set s=1; action-set out.deep=x
      action-log working; action-fail nope ;;
    crash) relation-set -r "$rid" k=crashed; action-set out=y; exit 3 ;;
    noop) ;;
  esac ;;
"#;

/// A failing hook's buffered writes (relation data, state, ports) are never committed or seen;
/// its status-set is; the retry starts from committed data.
fn failing_hook_writes_never_seen() -> R {
    let charm = TestCharm::new(&format!(
        r#"config-changed)
  n=$(config-get n)
  relation-set -r "$(peers_id)" k="v$n"
  state-set s="$n"
  open-port "80$n"
  status-set maintenance "trying $n"
  [ "$n" = 2 ] && exit 1
  ;;
{PEER_HANDLERS}"#
    ));
    let m = Model::new(opts())?;
    let units = m.deploy(
        charm.source(),
        "app",
        2,
        DeployOptions {
            config: [("n".to_string(), 2.into())].into(),
            ..DeployOptions::default()
        },
    )?;
    m.run_until(LONG, |m| {
        units.iter().all(|u| {
            m.hooks(u)
                .iter()
                .filter(|h| h.name == "config-changed" && h.exit_code() == Some(1))
                .count()
                >= 2
        })
    })?;
    let rel = m.relation_id("app:peers").expect("peer relation");
    for u in &units {
        assert!(m.in_error(u));
        assert_eq!(
            m.agent_status(u),
            juju_sim::AgentStatus::Error("hook failed: \"config-changed\"".into())
        );
        assert!(!m.databag(rel, u).data.contains_key("k"));
        assert!(m.unit_state(u).is_empty());
        assert!(m.opened_ports(u).is_empty());
        assert_eq!(
            m.unit_status(u).message,
            "trying 2",
            "status-set is immediate"
        );
    }
    m.config("app", [("n", 3)])?;
    m.settle(LONG)?;
    assert!(bag_history_values(&m, rel, "k")
        .iter()
        .all(|v| v.ends_with("=v3")));
    for u in &units {
        assert_eq!(
            m.databag(rel, u).data.get("k").map(String::as_str),
            Some("v3")
        );
        assert_eq!(m.unit_state(u).get("s").map(String::as_str), Some("3"));
        assert_eq!(m.opened_ports(u), vec!["803/tcp".to_string()]);
        let other = units.iter().find(|x| *x != u).expect("other");
        let logs = log_lines(&m, u);
        assert!(logs.iter().all(|l| !l.contains("k=v2")), "{logs:?}");
        assert!(
            logs.contains(&format!("peers:{rel}: changed {other} k=v3")),
            "{logs:?}"
        );
    }
    Ok(())
}

/// Inside a running hook a remote unit's (and the remote app's) committed change is
/// invisible; the next relation-changed for it shows it.
fn remote_change_frozen_in_hook() -> R {
    let charm = TestCharm::new(&format!(
        "config-changed) relation-set -r \"$(peers_id)\" k=\"init-$JUJU_UNIT_NAME\" ;;\n{PEER_HANDLERS}"
    ));
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    let (a, b) = (&units[0], &units[1]);
    assert_eq!(m.leader("app").as_deref(), Some(a.as_str()));
    // Unit data: a watches b.
    let watch = m.queue_action(a, "do", [("what", "watch"), ("value", b)])?;
    wait_running_with_call(&m, a, "do", "relation-get")?;
    let w = m.run_action(b, "do", [("what", "write"), ("value", "new")])?;
    assert_eq!(w.status, juju_sim::ActionStatus::Completed);
    let rel = m.relation_id("app:peers").expect("peers");
    assert_eq!(
        m.databag(rel, b).data.get("k").map(String::as_str),
        Some("new")
    );
    m.write_file(a, "/tmp/go", b"")?;
    let r = m.wait_action(watch, LONG)?;
    assert_eq!(r.results["first"], "init-app/1");
    assert_eq!(
        r.results["second"], "init-app/1",
        "remote data frozen inside the hook"
    );
    m.settle(LONG)?;
    let after: Vec<String> = log_lines(&m, a);
    assert!(
        after.contains(&format!("peers:{rel}: changed {b} k=new")),
        "{after:?}"
    );
    // App data: non-leader b watches while leader a writes.
    let watch = m.queue_action(b, "do", [("what", "watchapp")])?;
    wait_running_with_call(&m, b, "do", "relation-get")?;
    m.run_action(a, "do", [("what", "writeapp"), ("value", "appnew")])?;
    assert_eq!(
        m.databag(rel, "app").data.get("k").map(String::as_str),
        Some("appnew")
    );
    m.write_file(b, "/tmp/go", b"")?;
    let r = m.wait_action(watch, LONG)?;
    assert_eq!(r.results["first"], "", "no app data before");
    assert_eq!(
        r.results["second"], "",
        "remote app data frozen inside the hook"
    );
    m.settle(LONG)?;
    assert!(log_lines(&m, b).contains(&format!("peers:{rel}: app-changed app k=appnew")));
    Ok(())
}

/// Two commits made while a unit is busy reach it as one relation-changed with the latest
/// data; a no-op write produces no hook at all.
fn quick_commits_coalesce() -> R {
    let charm = TestCharm::new(PEER_HANDLERS);
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    let (a, b) = (&units[0], &units[1]);
    let rel = m.relation_id("app:peers").expect("peers");
    let block = m.queue_action(a, "do", [("what", "block")])?;
    wait_running_with_call(&m, a, "do", "action-get")?;
    let before = m.hooks(a).len();
    m.run_action(b, "do", [("what", "write"), ("value", "1")])?;
    m.run_action(b, "do", [("what", "write"), ("value", "2")])?;
    assert_eq!(bag_history_values(&m, rel, "k"), vec!["app/1=1", "app/1=2"]);
    m.write_file(a, "/tmp/go", b"")?;
    m.wait_action(block, LONG)?;
    m.settle(LONG)?;
    let changed: Vec<_> = m.hooks(a)[before..]
        .iter()
        .filter(|h| h.name == "peers-relation-changed" && remote_unit(h) == *b)
        .cloned()
        .collect();
    assert_eq!(changed.len(), 1, "coalesced: {changed:?}");
    assert!(log_lines(&m, a).contains(&format!("peers:{rel}: changed {b} k=2")));
    // Writing the same value again changes nothing and triggers nothing.
    let n = m.hooks(a).len();
    let v = m.databag(rel, b).version;
    m.run_action(b, "do", [("what", "write"), ("value", "2")])?;
    m.settle(LONG)?;
    assert_eq!(m.databag(rel, b).version, v);
    assert_eq!(m.hooks(a).len(), n);
    Ok(())
}

/// The leader's own peer app-data commit notifies it or not, per the model switch; the other
/// units are notified either way.
fn peer_app_self_notification() -> R {
    for notify in [true, false] {
        let charm = TestCharm::new(PEER_HANDLERS);
        let m = Model::new(ModelOptions {
            self_notify_peer_app: notify,
            ..opts()
        })?;
        let units = deploy(&m, &charm, 2, Volume::Shared)?;
        m.settle(LONG)?;
        let marks: Vec<usize> = units.iter().map(|u| m.hooks(u).len()).collect();
        let r = m.run_action(&units[0], "do", [("what", "writeapp"), ("value", "x")])?;
        assert_eq!(r.status, juju_sim::ActionStatus::Completed);
        m.settle(LONG)?;
        for (u, mark) in units.iter().zip(marks) {
            let app_changed = m.hooks(u)[mark..]
                .iter()
                .filter(|h| h.name == "peers-relation-changed" && remote_unit(h).is_empty())
                .count();
            let expected = usize::from(*u != units[0] || notify);
            assert_eq!(app_changed, expected, "{u} with self_notify={notify}");
        }
    }
    Ok(())
}

/// Two units of a charm whose leader runs `body` in config-changed once `n` is 5 (set here),
/// settled first: the model, the units (leader first) and the peer relation.
fn leader_hook_at_n5(body: &str) -> Result<(Model, Vec<String>, u32), Box<dyn std::error::Error>> {
    let charm = TestCharm::new(&format!(
        r#"config-changed)
  if [ "$(config-get n)" = 5 ] && [ "$(is-leader)" = True ]; then
{body}
  fi ;;
{PEER_HANDLERS}"#
    ));
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    let rel = m.relation_id("app:peers").expect("peers");
    m.config("app", [("n", 5)])?;
    Ok((m, units, rel))
}

/// Waits until `b` committed its second config-changed (the one for n=5).
fn b_handled_n5(m: &Model, b: &str) -> R {
    m.run_until(LONG, |m| {
        committed_hooks(m, b)
            .iter()
            .filter(|h| *h == "config-changed")
            .count()
            == 2
    })?;
    Ok(())
}

/// `is-leader` true is guaranteed for 30 s: a leader moved (`set_leader`) during a hook that
/// relied on it keeps leadership to the end of that hook, whose app data commits; the move
/// happens then (leader-elected on the new leader, leader-settings-changed on the old).
fn leadership_moves_after_the_hook_that_claimed_it() -> R {
    let (m, units, rel) = leader_hook_at_n5(
        r#"    waitfor /tmp/go
    relation-set -r "$(peers_id)" --app k="v5-$JUJU_UNIT_NAME""#,
    )?;
    let (a, b) = (&units[0], &units[1]);
    wait_running_with_call(&m, a, "config-changed", "is-leader")?;
    // b must have handled n=5 as a non-leader before it becomes leader: as the leader it
    // would wait for a /tmp/go nobody writes on its machine (seen under load in CI)
    b_handled_n5(&m, b)?;
    m.set_leader(b)?;
    assert_eq!(
        m.leader("app").as_deref(),
        Some(a.as_str()),
        "moved mid-hook"
    );
    m.write_file(a, "/tmp/go", b"")?;
    m.settle(LONG)?;
    assert_eq!(m.leader("app").as_deref(), Some(b.as_str()));
    assert_eq!(
        bag_history_values(&m, rel, "k"),
        vec![format!("app=v5-{a}")]
    );
    assert!(
        m.hooks(a).iter().all(|h| h.committed()),
        "{:?}",
        m.hook_names(a)
    );
    assert!(m.hook_names(b).contains(&"leader-elected".to_string()));
    assert!(m
        .hook_names(a)
        .contains(&"leader-settings-changed".to_string()));
    Ok(())
}

/// A unit that loses leadership during a hook cannot commit the app data it wrote: the whole
/// commit fails and the hook is retried (as a non-leader); for an action the result says so.
fn lost_leadership_commit_fails() -> R {
    let (m, units, rel) = leader_hook_at_n5(
        r#"    relation-set -r "$(peers_id)" --app k="v5-$JUJU_UNIT_NAME"
    relation-set -r "$(peers_id)" mine=set
    waitfor /tmp/go"#,
    )?;
    let (a, b) = (&units[0], &units[1]);
    wait_running_with_call(&m, a, "config-changed", "relation-set")?;
    // b must have handled n=5 as a non-leader before it becomes leader.
    b_handled_n5(&m, b)?;
    m.force_leader(b)?;
    m.write_file(a, "/tmp/go", b"")?;
    m.settle(LONG)?;
    let failed: Vec<_> = m
        .hooks(a)
        .into_iter()
        .filter(|h| {
            h.name == "config-changed" && matches!(h.outcome, juju_sim::Outcome::CommitFailed(_))
        })
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", m.hook_names(a));
    assert!(bag_history_values(&m, rel, "k").is_empty());
    assert!(
        !m.databag(rel, a).data.contains_key("mine"),
        "unit data of the failed commit too"
    );
    // The retry (the failed hook blocks everything else) commits as a non-leader.
    let hooks = m.hooks(a);
    let i = hooks
        .iter()
        .position(|h| matches!(h.outcome, juju_sim::Outcome::CommitFailed(_)))
        .expect("failed commit");
    assert_eq!(hooks[i + 1].name, "config-changed");
    assert!(hooks[i + 1].committed());
    assert_eq!(hooks[i + 2].name, "leader-settings-changed");
    assert!(m.hook_names(b).contains(&"leader-elected".to_string()));
    // Action variant: b is leader now.
    let id = m.queue_action(b, "do", [("what", "writeapp-wait")])?;
    wait_running_with_call(&m, b, "do", "relation-set")?;
    m.force_leader(a)?;
    m.write_file(b, "/tmp/go", b"")?;
    let r = m.wait_action(id, LONG)?;
    assert_eq!(r.status, juju_sim::ActionStatus::Failed);
    assert_eq!(r.message, "committing requested changes failed");
    m.settle(LONG)?;
    assert!(bag_history_values(&m, rel, "k").is_empty());
    Ok(())
}

/// action-fail followed by exit 0 still commits; a non-zero exit discards; results and logs
/// are reported either way; params are validated with defaults inserted.
fn action_fail_semantics() -> R {
    let charm = TestCharm::new(PEER_HANDLERS);
    let m = Model::new(opts())?;
    let u = &deploy(&m, &charm, 1, Volume::Shared)?[0];
    m.settle(LONG)?;
    let rel = m.relation_id("app:peers").expect("peers");
    let r = m.run_action(u, "do", [("what", "failcommit")])?;
    assert_eq!(r.status, juju_sim::ActionStatus::Failed);
    assert_eq!(r.message, "nope");
    assert_eq!(r.results, serde_json::json!({"out": {"deep": "x"}}));
    assert_eq!(r.logs, vec!["working".to_string()]);
    assert_eq!(r.params["value"], "", "default inserted");
    assert_eq!(
        m.databag(rel, u).data.get("k").map(String::as_str),
        Some("committed")
    );
    assert_eq!(m.unit_state(u).get("s").map(String::as_str), Some("1"));
    let r = m.run_action(u, "do", [("what", "crash")])?;
    assert_eq!(r.status, juju_sim::ActionStatus::Failed);
    assert_eq!(r.message, "exit status 3");
    assert_eq!(r.return_code, Some(3));
    assert_eq!(r.results, serde_json::json!({"out": "y"}));
    assert_eq!(
        m.databag(rel, u).data.get("k").map(String::as_str),
        Some("committed")
    );
    assert!(
        !m.in_error(u),
        "a failed action does not put the unit in error"
    );
    assert!(m.queue_action(u, "do", [("bogus", "1")]).is_err());
    assert!(
        m.queue_action(u, "do", [("value", "1")]).is_err(),
        "what is required"
    );
    assert!(m.queue_action(u, "nope", [("what", "1")]).is_err());
    Ok(())
}

/// A unit in error still runs actions; the failed hook is retried with growing backoff.
fn error_state_actions_and_retry() -> R {
    let charm = TestCharm::new(&format!(
        "config-changed) [ \"$(config-get n)\" = 7 ] && exit 1 ;;\n{PEER_HANDLERS}"
    ));
    let m = Model::new(ModelOptions {
        retry_backoff: Duration::from_millis(100),
        retry_backoff_max: Duration::from_millis(400),
        ..opts()
    })?;
    let u = &m.deploy(
        charm.source(),
        "app",
        1,
        DeployOptions {
            config: [("n".to_string(), 7.into())].into(),
            ..DeployOptions::default()
        },
    )?[0];
    m.run_until(LONG, |m| m.in_error(u))?;
    let r = m.run_action(u, "do", [("what", "noop")])?;
    assert_eq!(r.status, juju_sim::ActionStatus::Completed);
    assert!(m.in_error(u));
    m.run_until(LONG, |m| {
        m.hooks(u)
            .iter()
            .filter(|h| h.name == "config-changed")
            .count()
            >= 4
    })?;
    let starts: Vec<Duration> = m
        .hooks(u)
        .iter()
        .filter(|h| h.name == "config-changed")
        .map(|h| h.started)
        .collect();
    assert!(
        starts[2] - starts[1] >= Duration::from_millis(150),
        "backoff grows: {starts:?}"
    );
    let problems = m.deploy_order_problems(u);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("expected config-changed")),
        "{problems:?}"
    );
    assert!(
        !m.hook_names(u).contains(&"start".to_string()),
        "nothing else runs in error"
    );
    m.config("app", [("n", 1)])?;
    m.settle(LONG)?;
    assert!(committed_hooks(&m, u).contains(&"start".to_string()));
    Ok(())
}

const FILE_HANDLERS: &str = r#"
install)
  tag=$(echo "$JUJU_UNIT_NAME" | tr / -)
  echo "$JUJU_UNIT_NAME" > /etc/sim-unit
  echo "$JUJU_UNIT_NAME" > /tmp/sim-unit
  mkdir -p /opt/sim && echo "$JUJU_UNIT_NAME" > /opt/sim/unit
  echo "$JUJU_UNIT_NAME" > /root/sim-unit
  useradd --system --no-create-home simuser-test || exit 1
  if [ -d /var/lib/concourse ]; then
    if touch "/var/lib/concourse/$tag" 2>/dev/null; then log "storage rw"; else log "storage ro"; fi
    if dd if=/dev/zero of=/var/lib/concourse/big-$tag bs=64k count=64 2>/dev/null; then log "4MiB fit"; else log "4MiB full"; fi
    rm -f /var/lib/concourse/big-$tag
  else
    log "no storage dir"
  fi
  log "storage-list $(storage-list --format=json)"
  ;;
"#;

/// Each unit is its own machine: files under /etc, /tmp, /opt, /root (and users) are private;
/// the shared volume is shared, the per-unit volume is not.
fn machines_private_volume_shared() -> R {
    let charm = TestCharm::new(FILE_HANDLERS);
    let m = Model::new(opts())?;
    let shared = deploy(&m, &charm, 3, Volume::Shared)?;
    let per_unit = m.deploy(
        charm.source(),
        "solo",
        2,
        DeployOptions {
            storage: Volume::PerUnit,
            ..DeployOptions::default()
        },
    )?;
    m.settle(LONG)?;
    for u in shared.iter().chain(&per_unit) {
        for f in [
            "/etc/sim-unit",
            "/tmp/sim-unit",
            "/opt/sim/unit",
            "/root/sim-unit",
        ] {
            assert_eq!(m.read_to_string(u, f)?.trim(), u.as_str(), "{u} {f}");
        }
        assert!(m.read_to_string(u, "/etc/passwd")?.contains("simuser-test"));
        assert!(log_lines(&m, u).contains(&"storage rw".to_string()));
    }
    assert!(
        !std::path::Path::new("/etc/sim-unit").exists(),
        "host /etc untouched"
    );
    assert!(
        !std::path::Path::new("/opt/sim").exists(),
        "host /opt untouched"
    );
    assert!(!std::fs::read_to_string("/etc/passwd")?.contains("simuser-test"));
    let dir = m.storage_dir(&shared[0]).expect("storage dir");
    assert!(shared
        .iter()
        .all(|u| m.storage_dir(u).as_ref() == Some(&dir)));
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert_eq!(files, vec!["app-0", "app-1", "app-2"]);
    for u in &shared {
        for f in &files {
            assert!(
                m.exists(u, &format!("/var/lib/concourse/{f}")),
                "{u} sees {f}"
            );
        }
    }
    let (d0, d1) = (
        m.storage_dir(&per_unit[0]).expect("dir"),
        m.storage_dir(&per_unit[1]).expect("dir"),
    );
    assert_ne!(d0, d1);
    assert!(m.exists(&per_unit[0], "/var/lib/concourse/solo-0"));
    assert!(!m.exists(&per_unit[0], "/var/lib/concourse/solo-1"));
    assert!(!m.exists(&per_unit[1], "/var/lib/concourse/solo-0"));
    Ok(())
}

/// Volume variants: missing (no storage hook, nothing mounted), read-only, a full tmpfs.
fn storage_variants() -> R {
    let charm = TestCharm::new(FILE_HANDLERS);
    let m = Model::new(opts())?;
    let dep = |name: &str, v: Volume| {
        m.deploy(
            charm.source(),
            name,
            1,
            DeployOptions {
                storage: v,
                ..DeployOptions::default()
            },
        )
        .map(|u| u[0].clone())
    };
    let missing = dep("missing", Volume::Missing)?;
    let ro = dep("ro", Volume::ReadOnly)?;
    let small = dep("small", Volume::Tmpfs { bytes: 1 << 20 })?;
    let small_pu = dep("smallpu", Volume::TmpfsPerUnit { bytes: 1 << 20 })?;
    let big = dep("big", Volume::PerUnit)?;
    m.settle(LONG)?;
    assert!(!m.hook_names(&missing).iter().any(|h| h.contains("storage")));
    assert!(log_lines(&m, &missing).contains(&"storage-list []".to_string()));
    assert!(log_lines(&m, &ro).contains(&"storage ro".to_string()));
    assert!(log_lines(&m, &ro)
        .iter()
        .any(|l| l.starts_with("storage-list [\"data/")));
    for u in [&small, &small_pu] {
        assert!(log_lines(&m, u).contains(&"4MiB full".to_string()), "{u}");
    }
    assert!(log_lines(&m, &big).contains(&"4MiB fit".to_string()));
    Ok(())
}

/// A process a hook starts keeps running with the unit's view; removing the unit or dropping
/// the model kills it, unmounts everything and removes the run directory.
fn services_survive_hooks_teardown_kills() -> R {
    let charm = TestCharm::new(
        r#"start)
  setsid sleep 1000 >/dev/null 2>&1 < /dev/null &
  echo $! > /run/sim-sleep.pid
  sleep 999 &
  ;;
"#,
    );
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    let pid_of = |u: &str| -> Result<i32, Box<dyn std::error::Error>> {
        Ok(m.read_to_string(u, "/run/sim-sleep.pid")?.trim().parse()?)
    };
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    let (p0, p1) = (pid_of(&units[0])?, pid_of(&units[1])?);
    for (u, p) in [(&units[0], p0), (&units[1], p1)] {
        assert!(alive(p));
        let procs = m.processes(u);
        assert!(procs
            .iter()
            .any(|x| x.pid == p && x.cmdline == ["sleep", "1000"]));
        assert!(procs.iter().any(|x| x.cmdline == ["sleep", "999"]));
        let start = m
            .hooks(u)
            .into_iter()
            .find(|h| h.name == "start")
            .expect("start");
        assert!(
            start.duration < Duration::from_secs(5),
            "pipe holders do not block"
        );
    }
    assert!(!m.exists(&units[1], "/run/sim-sleep.pid") || p0 != p1);
    m.remove_unit(&units[1])?;
    m.run_until(LONG, |m| m.unit_gone(&units[1]))?;
    assert!(!alive(p1), "removed unit's processes are killed");
    assert!(alive(p0));
    let run_dir = m.run_dir().to_path_buf();
    drop(m);
    assert!(!alive(p0), "dropping the model kills every process");
    assert!(!run_dir.exists(), "run dir removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(!mounts.contains(&*run_dir.to_string_lossy()));
    Ok(())
}

const DB_HANDLERS: &str = r#"
db-relation-created)
  [ "$(is-leader)" = True ] && relation-set --app database=concourse ;;
db-relation-changed)
  [ -z "$JUJU_REMOTE_UNIT" ] || exit 0
  sec=$(relation-get secret-user)
  if [ -n "$sec" ]; then
    user=$(secret-get "$sec" username); pw=$(secret-get "$sec" password)
  else
    user=$(relation-get username); pw=$(relation-get password)
  fi
  log "db user=$user pw=$pw endpoints=$(relation-get endpoints) database=$(relation-get database)" ;;
secret-changed)
  log "secret-changed pw=$(secret-get --refresh "$JUJU_SECRET_ID" password)" ;;
"#;

/// The fake postgresql answers with credentials in a granted secret or in plain fields; a
/// password rotation reaches secret consumers through secret-changed.
fn postgres_provider() -> R {
    for creds in [juju_sim::Credentials::Secret, juju_sim::Credentials::Plain] {
        let charm = TestCharm::new(DB_HANDLERS);
        let m = Model::new(opts())?;
        let units = deploy(&m, &charm, 2, Volume::Shared)?;
        m.deploy_postgresql(
            "postgresql",
            juju_sim::PostgresOptions {
                credentials: creds,
                ..Default::default()
            },
        )?;
        let rel = m.relate("app:db", "postgresql")?;
        m.settle(LONG)?;
        assert_eq!(
            m.databag(rel, "app")
                .data
                .get("database")
                .map(String::as_str),
            Some("concourse")
        );
        let want = format!(
            "db:{rel}: db user=relation_id_user pw=s3cr3t-pw endpoints=127.0.200.1:5432 database=concourse"
        );
        for u in &units {
            assert!(
                log_lines(&m, u).contains(&want),
                "{creds:?} {u}: {:?}",
                log_lines(&m, u)
            );
            let names = m.hook_names(u);
            assert!(names.contains(&"db-relation-joined".to_string()));
        }
        if creds == juju_sim::Credentials::Secret {
            m.postgres_rotate_password("postgresql", "rotated");
            m.settle(LONG)?;
            for u in &units {
                assert!(log_lines(&m, u).contains(&"secret-changed pw=rotated".to_string()));
            }
        }
    }
    Ok(())
}

/// Removing a unit runs its teardown (storage-detaching, departed, broken for non-peer
/// relations, stop, remove), moves leadership, and never runs relation-broken on peers;
/// removing a relation gives departed then broken.
fn teardown_and_no_peer_broken() -> R {
    let charm = TestCharm::new(DB_HANDLERS);
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 3, Volume::Shared)?;
    m.deploy_postgresql("postgresql", Default::default())?;
    let db = m.relate("app:db", "postgresql")?;
    m.settle(LONG)?;
    let leader = m.leader("app").expect("leader");
    assert_eq!(leader, units[0]);
    let marks: Vec<usize> = units.iter().map(|u| m.hooks(u).len()).collect();
    m.remove_unit(&units[0])?;
    m.settle(LONG)?;
    assert!(m.unit_gone(&units[0]));
    let gone: Vec<String> = m.hooks(&units[0])[marks[0]..]
        .iter()
        .map(|h| h.name.clone())
        .collect();
    assert_eq!(
        gone,
        [
            "data-storage-detaching",
            "peers-relation-departed",
            "peers-relation-departed",
            "db-relation-departed",
            "db-relation-broken",
            "stop",
            "remove"
        ],
        "teardown order"
    );
    for h in m
        .hooks(&units[0])
        .iter()
        .filter(|h| h.name.ends_with("-departed"))
    {
        assert_eq!(h.env.get("JUJU_DEPARTING_UNIT"), Some(&units[0]));
    }
    assert_eq!(m.leader("app").as_deref(), Some(units[1].as_str()));
    for (u, mark) in units.iter().zip(&marks).skip(1) {
        let after: Vec<_> = m.hooks(u)[*mark..].to_vec();
        let departed: Vec<_> = after
            .iter()
            .filter(|h| h.name == "peers-relation-departed")
            .collect();
        assert_eq!(departed.len(), 1);
        assert_eq!(remote_unit(departed[0]), units[0]);
        assert_eq!(departed[0].env.get("JUJU_DEPARTING_UNIT"), Some(&units[0]));
        let lead = if *u == units[1] {
            "leader-elected"
        } else {
            "leader-settings-changed"
        };
        assert!(after.iter().any(|h| h.name == lead), "{u}: {after:?}");
    }
    m.remove_relation(db)?;
    m.settle(LONG)?;
    for u in &units[1..] {
        let names = m.hook_names(u);
        let n = names.len();
        assert_eq!(
            names[n - 2..],
            ["db-relation-departed", "db-relation-broken"]
        );
    }
    for u in &units {
        assert!(!m.hook_names(u).iter().any(|h| h == "peers-relation-broken"));
    }
    assert_eq!(
        m.relation(db).map(|r| r.life),
        Some(juju_sim::model::Life::Dead)
    );
    Ok(())
}

/// Secrets: app-owned need leadership, labels and revisions, unit-owned for anyone, and a
/// failed hook's secret never exists.
fn secrets_semantics() -> R {
    let charm = TestCharm::new(
        r#"leader-elected)
  [ -z "$(secret-ids)" ] && secret-add --label mine foo=bar >/dev/null ;;
config-changed)
  n=$(config-get n)
  if [ "$(is-leader)" = True ]; then
    id=$(secret-ids --format=json | tr -d '[]"' | cut -d, -f1)
    [ "$n" = 2 ] && secret-set "$id" foo=baz
    log "info $(secret-info-get --label mine --format=json | grep -o '"revision":[0-9]*')"
    log "value $(secret-get "$id" foo)"
    if [ "$n" = 4 ]; then secret-add --label ghost foo=one >/dev/null; exit 1; fi
  else
    out=$(secret-add foo=xyz 2>&1); log "app-secret rc=$? $out"
    secret-add --owner unit --label "u-$JUJU_UNIT_NAME" foo=yyy >/dev/null 2>&1
    log "unit-secret $(secret-get --label "u-$JUJU_UNIT_NAME" --format=json 2>&1)"
    out=$(secret-get --label "u-$JUJU_UNIT_NAME" foo 2>&1); log "label-and-key rc=$? $out"
  fi ;;
"#,
    );
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    m.config("app", [("n", 2)])?;
    m.settle(LONG)?;
    let leader_logs = log_lines(&m, &units[0]);
    assert!(
        leader_logs.ends_with(&["info \"revision\":1".into(), "value bar".into()]),
        "secret-set is buffered until commit: {leader_logs:?}"
    );
    m.config("app", [("n", 3)])?;
    m.settle(LONG)?;
    let leader_logs = log_lines(&m, &units[0]);
    assert!(
        leader_logs.ends_with(&["info \"revision\":2".into(), "value baz".into()]),
        "{leader_logs:?}"
    );
    let other = log_lines(&m, &units[1]);
    assert!(other.contains(&"app-secret rc=1 ERROR this unit is not the leader".to_string()));
    assert!(
        other.contains(&"unit-secret {\"foo\":\"yyy\"}".to_string()),
        "{other:?}"
    );
    assert!(other.contains(&"label-and-key rc=2 ERROR secret URI \"foo\" not valid".to_string()));
    m.config("app", [("n", 4)])?;
    m.run_until(LONG, |m| m.in_error(&units[0]))?;
    m.config("app", [("n", 5)])?;
    m.settle(LONG)?;
    let secrets = m.secrets();
    assert!(secrets.iter().all(|s| s.label.as_deref() != Some("ghost")));
    let mine = secrets
        .iter()
        .find(|s| s.label.as_deref() == Some("mine"))
        .expect("mine");
    assert_eq!(mine.revisions.len(), 2);
    assert_eq!(mine.owner, juju_sim::model::SecretOwner::App("app".into()));
    assert!(secrets
        .iter()
        .any(|s| s.owner == juju_sim::model::SecretOwner::Unit(units[1].clone())));
    Ok(())
}

/// Output formats and read rules of the common tools.
fn tool_outputs() -> R {
    let charm = TestCharm::new(
        r#"config-changed)
  rid=$(peers_id)
  log "cfg $(config-get --format=json)"
  log "n $(config-get n --format=json) smart=$(config-get flag)"
  relation-set -r "$rid" mine=1
  log "own $(relation-get -r "$rid" mine "$JUJU_UNIT_NAME" --format=json)"
  log "missing $(relation-get -r "$rid" nope "$JUJU_UNIT_NAME" --format=json)"
  log "all $(relation-get -r "$rid" - "$JUJU_UNIT_NAME" --format=json)"
  echo '{"a": "1", "b": "x y"}' | relation-set -r "$rid" --file -
  log "file $(relation-get -r "$rid" a "$JUJU_UNIT_NAME")/$(relation-get -r "$rid" b "$JUJU_UNIT_NAME")"
  relation-get -r "$rid" - app >/dev/null 2>&1; log "app-without-flag rc=$?"
  log "ids $(relation-ids peers --format=json) list $(relation-list -r "$rid" --format=json)"
  log "ingress $(network-get peers --ingress-address)"
  log "goal $(goal-state --format=json | grep -o '"units":{[^}]*}')"
  log "leader $(is-leader --format=json)"
  state-set --file - <<< '{"x": "1"}'
  log "state $(state-get --format=json) $(state-get x) [$(state-get nope)]"
  log "twice $(state-get x) $(state-get x)"
  cd /tmp && echo '{"c": "3"}' > f.json && relation-set -r "$rid" --file f.json && cd - >/dev/null
  printf 'pa55' > /tmp/secret-file; uri=$(secret-add --owner unit "password#file=/tmp/secret-file")
  config-get mode -o /tmp/mode.out
  out=$(secret-add --owner unit "pw=x" 2>&1); log "short-key rc=$? $out"
  log "files $(relation-get -r "$rid" c "$JUJU_UNIT_NAME") $(cat /tmp/mode.out) ${uri%%:*}"
  open-port 8080; log "ports-now $(opened-ports --format=json)"
  application-version-set -- 7.1.2
  status-set --application=True active appmsg
  status-set waiting unitmsg
  log "app-status $(status-get --application --format=json | grep -o '"message":"appmsg"')"
  log "unit-status $(status-get --include-data --format=json)"
  log "unit-get rc=$(unit-get private-address >/dev/null 2>&1; echo $?)"
  ;;
"#,
    );
    let m = Model::new(opts())?;
    let u = &deploy(&m, &charm, 1, Volume::Shared)?[0];
    m.settle(LONG)?;
    let logs = log_lines(&m, u);
    for want in [
        r#"cfg {"flag":false,"mode":"a","n":1}"#,
        "n 1 smart=False",
        r#"own "1""#,
        "missing null",
        r#"all {"egress-subnets":"127.0.1.1/32","ingress-address":"127.0.1.1","mine":"1","private-address":"127.0.1.1"}"#,
        "file 1/x y",
        "app-without-flag rc=2",
        r#"ids ["peers:0"] list []"#,
        "ingress 127.0.1.1",
        "leader true",
        r#"state {"x":"1"} 1 []"#,
        // The hook's own open-port shows (juju/juju `runner/context/ports.go`,
        // `OpenedUnitPortRanges` merges the pending requests), committed or not.
        r#"ports-now ["8080/tcp"]"#,
        r#"app-status "message":"appmsg""#,
        r#"unit-status {"message":"unitmsg","status":"waiting","status-data":{}}"#,
        // Tools the charm does not use are not served: command not found.
        "unit-get rc=127",
        "files 3 a secret",
        r#"short-key rc=2 ERROR invalid key "pw""#,
    ] {
        assert!(
            logs.iter().any(|l| l == want),
            "missing {want:?} in {logs:#?}"
        );
    }
    assert!(logs
        .iter()
        .any(|l| l.starts_with("goal \"units\":{\"app/0\":{")));
    assert_eq!(m.opened_ports(u), vec!["8080/tcp".to_string()]);
    assert_eq!(m.app_version("app"), "7.1.2");
    let pw = m
        .secrets()
        .into_iter()
        .find(|s| s.owner == juju_sim::model::SecretOwner::Unit(u.clone()));
    assert_eq!(
        pw.map(|s| s.revisions[0]["password"].clone()).as_deref(),
        Some("pa55")
    );
    assert_eq!(m.app_status("app").message, "appmsg");
    let cc = m
        .hooks(u)
        .into_iter()
        .find(|h| h.name == "config-changed")
        .expect("hook");
    assert!(cc.calls_of("relation-get") >= 6);
    let dups = cc.duplicate_calls();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        dups,
        vec![
            (args(&["relation-ids", "peers", "--format=json"]), 2),
            (args(&["state-get", "x"]), 3)
        ]
    );
    assert_eq!(cc.calls_of("state-set"), 1);
    assert_eq!(
        cc.tool_calls
            .iter()
            .find(|c| c.args[0] == "state-set")
            .and_then(|c| c.stdin_len),
        Some(11)
    );
    Ok(())
}

/// The hook environment is built like Juju's (Juju: `worker/uniter/runner/context/env.go`): no HOME/USER, the JUJU_*
/// variables per hook kind, tools dir first on PATH, cwd = charm dir.
fn environment_like_juju() -> R {
    let charm = TestCharm::new(
        r#"config-changed) env | sort > /tmp/env-config-changed ;;
peers-relation-joined) env | sort > /tmp/env-joined; relation-list --format=json > /tmp/list-joined ;;
data-storage-attached) env | sort > /tmp/env-storage ;;
action:do) env | sort > /tmp/env-action ;;
"#,
    );
    let m = Model::new(ModelOptions {
        proxy: juju_sim::model::ProxySettings {
            http: "http://127.0.0.1:3128".into(),
            ..Default::default()
        },
        ..opts()
    })?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    m.run_action(&units[0], "do", [("what", "x")])?;
    let env = |f: &str| -> Result<std::collections::BTreeMap<String, String>, juju_sim::SimError> {
        Ok(m.read_to_string(&units[0], f)?
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    };
    let cc = env("/tmp/env-config-changed")?;
    let charm_dir = "/var/lib/juju/agents/unit-app-0/charm";
    for (k, v) in [
        ("JUJU_DISPATCH_PATH", "hooks/config-changed"),
        ("JUJU_HOOK_NAME", "config-changed"),
        ("JUJU_UNIT_NAME", "app/0"),
        ("JUJU_CHARM_DIR", charm_dir),
        ("CHARM_DIR", charm_dir),
        ("PWD", charm_dir),
        ("JUJU_MODEL_NAME", "sim"),
        ("JUJU_VERSION", "3.6.8"),
        ("JUJU_AGENT_SOCKET_NETWORK", "unix"),
        ("JUJU_PRINCIPAL_UNIT", ""),
        ("JUJU_AVAILABILITY_ZONE", ""),
        ("JUJU_CHARM_HTTP_PROXY", "http://127.0.0.1:3128"),
        ("JUJU_CHARM_HTTPS_PROXY", ""),
        ("JUJU_CHARM_NO_PROXY", ""),
        ("LANG", "C.UTF-8"),
    ] {
        assert_eq!(cc.get(k).map(String::as_str), Some(v), "{k}");
    }
    for k in [
        "HOME",
        "USER",
        "JUJU_RELATION",
        "JUJU_REMOTE_UNIT",
        "JUJU_ACTION_NAME",
    ] {
        assert!(!cc.contains_key(k), "{k} must not be set");
    }
    assert!(cc["JUJU_CONTEXT_ID"].starts_with("app/0-config-changed-"));
    assert!(cc["PATH"].starts_with("/var/lib/juju/tools/unit-app-0:"));
    assert!(!cc["JUJU_MODEL_UUID"].is_empty() && !cc["JUJU_MACHINE_ID"].is_empty());
    let j = env("/tmp/env-joined")?;
    for (k, v) in [
        ("JUJU_RELATION", "peers"),
        ("JUJU_RELATION_ID", "peers:0"),
        ("JUJU_REMOTE_UNIT", "app/1"),
        ("JUJU_REMOTE_APP", "app"),
        ("JUJU_DISPATCH_PATH", "hooks/peers-relation-joined"),
    ] {
        assert_eq!(j.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(
        m.read_to_string(&units[0], "/tmp/list-joined")?,
        "[\"app/1\"]\n"
    );
    let s = env("/tmp/env-storage")?;
    assert!(s["JUJU_STORAGE_ID"].starts_with("data/"));
    assert_eq!(s["JUJU_STORAGE_LOCATION"], "/var/lib/concourse");
    assert_eq!(s["JUJU_STORAGE_KIND"], "filesystem");
    let a = env("/tmp/env-action")?;
    assert_eq!(a["JUJU_DISPATCH_PATH"], "actions/do");
    assert_eq!(a["JUJU_HOOK_NAME"], "");
    assert_eq!(a["JUJU_ACTION_NAME"], "do");
    assert_eq!(a["JUJU_ACTION_UUID"], "1");
    assert_eq!(a["JUJU_ACTION_TAG"], "action-1");
    Ok(())
}

/// Remote unit data read in one hook stays cached across hooks until the relation-changed for
/// that unit: an action queued meanwhile runs first (actions outrank relation hooks) and
/// still sees the old value.
fn remote_cache_across_hooks() -> R {
    let charm = TestCharm::new(&format!(
        "config-changed) relation-set -r \"$(peers_id)\" k=\"init-$JUJU_UNIT_NAME\" ;;\n{PEER_HANDLERS}"
    ));
    let m = Model::new(opts())?;
    let units = deploy(&m, &charm, 2, Volume::Shared)?;
    m.settle(LONG)?;
    let (a, b) = (&units[0], &units[1]);
    let watch = m.queue_action(a, "do", [("what", "watch"), ("value", b)])?;
    wait_running_with_call(&m, a, "do", "relation-get")?;
    m.run_action(b, "do", [("what", "write"), ("value", "new")])?;
    let read = m.queue_action(a, "do", [("what", "read"), ("value", b)])?;
    m.write_file(a, "/tmp/go", b"")?;
    m.wait_action(watch, LONG)?;
    let r = m.wait_action(read, LONG)?;
    assert_eq!(
        r.results["v"], "init-app/1",
        "cached from the previous hook"
    );
    m.settle(LONG)?;
    let names = m.hook_names(a);
    let i = names
        .iter()
        .rposition(|n| n == "action:do")
        .expect("action");
    assert_eq!(names[i + 1], "peers-relation-changed", "{names:?}");
    let r = m.run_action(a, "do", [("what", "read"), ("value", b)])?;
    assert_eq!(r.results["v"], "new", "refreshed by relation-changed");
    Ok(())
}

/// resource-get prints the path of an attached file resource and fails (exit 1) without one.
fn file_resources() -> R {
    let charm = TestCharm::new(
        r#"install)
  p=$(resource-get blob 2>&1); rc=$?
  if [ $rc = 0 ]; then log "blob at $p: $(cat "$p")"; else log "blob rc=$rc $p"; fi ;;
"#,
    );
    let blob = charm.dir.join("blob-src");
    std::fs::write(&blob, "hello-blob")?;
    let m = Model::new(opts())?;
    let with = &m.deploy(
        charm.source(),
        "with",
        1,
        DeployOptions {
            resources: [("blob".to_string(), blob)].into(),
            ..DeployOptions::default()
        },
    )?[0];
    let without = &m.deploy(charm.source(), "without", 1, DeployOptions::default())?[0];
    m.settle(LONG)?;
    assert!(log_lines(&m, with).contains(
        &"blob at /var/lib/juju/agents/unit-with-0/resources/blob/blob.bin: hello-blob".to_string()
    ));
    assert!(
        log_lines(&m, without)
            .iter()
            .any(|l| l.starts_with("blob rc=1 ERROR could not download resource")),
        "{:?}",
        log_lines(&m, without)
    );
    Ok(())
}

fn sim_echo(args: &[String]) -> i32 {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let ctx = std::env::var("JUJU_CONTEXT_ID").is_ok();
    println!("sim-echo {} cwd={cwd} ctx={ctx}", args.join(" "));
    3
}

/// A tool registered with `multicall::register` (how the fake systemctl plugs in) is on every
/// unit's PATH and runs in the unit's view; a hook tool called after its hook ended fails
/// with `error: ...`, exit 1.
fn registered_tools_and_late_calls() -> R {
    let charm = TestCharm::new(
        r#"install) out=$(sim-echo a b); log "echo rc=$? $out" ;;
start)
  (sleep 0.3; is-leader > /tmp/late.out 2>&1; echo "rc=$?" >> /tmp/late.out) >/dev/null 2>&1 </dev/null &
  ;;
"#,
    );
    let m = Model::new(opts())?;
    let u = &deploy(&m, &charm, 1, Volume::Shared)?[0];
    m.settle(LONG)?;
    assert!(log_lines(&m, u).contains(
        &"echo rc=3 sim-echo a b cwd=/var/lib/juju/agents/unit-app-0/charm ctx=true".to_string()
    ));
    m.run_until(LONG, |m| {
        m.read_to_string(u, "/tmp/late.out")
            .is_ok_and(|s| s.contains("rc="))
    })?;
    let late = m.read_to_string(u, "/tmp/late.out")?;
    assert!(late.starts_with("error: "), "{late}");
    assert!(late.ends_with("rc=1\n"), "{late}");
    Ok(())
}

/// `refresh` swaps the charm: every unit runs upgrade-charm with the new dispatch, then
/// config-changed, and no start.
fn refresh_runs_upgrade_charm() -> R {
    let v1 = TestCharm::new("upgrade-charm) log upgraded-v1 ;;\nconfig-changed) log config-v1 ;;");
    let v2 = TestCharm::new("upgrade-charm) log upgraded-v2 ;;\nconfig-changed) log config-v2 ;;");
    let m = Model::new(opts())?;
    let units = deploy(&m, &v1, 2, Volume::Shared)?;
    m.settle(LONG)?;
    m.refresh("app", v2.source())?;
    m.settle(LONG)?;
    for u in &units {
        let names = committed_hooks(&m, u);
        assert_eq!(
            names[names.len() - 2..],
            ["upgrade-charm", "config-changed"],
            "{names:?}"
        );
        assert_eq!(names.iter().filter(|n| *n == "start").count(), 1);
        assert!(log_lines(&m, u).ends_with(&["upgraded-v2".into(), "config-v2".into()]));
    }
    Ok(())
}

/// Figures for the report (run with `-- --ignored bench`): time per empty hook and per hook
/// tool call, measured on the simulator's own records.
fn bench_hook_overhead() -> R {
    let charm = TestCharm::new(
        r#"action:do)
  if [ "$(action-get what)" = tools ]; then for i in $(seq 50); do is-leader >/dev/null; done; fi ;;
"#,
    );
    let m = Model::new(opts())?;
    let u = &deploy(&m, &charm, 1, Volume::Shared)?[0];
    m.settle(LONG)?;
    let t0 = std::time::Instant::now();
    for _ in 0..20 {
        m.run_action(u, "do", [("what", "empty")])?;
    }
    let per_action = t0.elapsed() / 20;
    let empty: Vec<Duration> = m
        .hooks(u)
        .iter()
        .filter(|h| h.name == "action:do")
        .map(|h| h.duration)
        .collect();
    let hook_mean = empty.iter().sum::<Duration>() / empty.len() as u32;
    m.run_action(u, "do", [("what", "tools")])?;
    let h = m.hooks(u).pop().expect("hook");
    let calls: Vec<Duration> = h
        .tool_calls
        .iter()
        .filter(|c| c.args[0] == "is-leader")
        .map(|c| c.elapsed)
        .collect();
    assert_eq!(calls.len(), 50);
    let per_call = (h.duration - hook_mean) / 50;
    println!(
        "empty action process: {hook_mean:?}; queue-to-result round trip: {per_action:?}; \
         is-leader call seen by the hook: {per_call:?} (server side {:?})",
        calls.iter().sum::<Duration>() / 50
    );
    Ok(())
}

/// Across two applications: a secret granted over the relation is readable by the other
/// side; a non-leader cannot read its own app's databag in a non-peer relation; app data
/// reaches only the remote side.
fn cross_app_secret_grant_and_permissions() -> R {
    let charm = TestCharm::new(
        r#"web-relation-created)
  if [ "$(is-leader)" = True ]; then
    uri=$(secret-add --label web-creds token=abc123)
    secret-grant "$uri" -r "$JUJU_RELATION_ID"
    relation-set --app -r "$JUJU_RELATION_ID" sec="$uri"
  fi ;;
site-relation-changed)
  if [ -z "$JUJU_REMOTE_UNIT" ]; then
    log "token=$(secret-get "$(relation-get sec)" token)"
    own=$(relation-get --app - "${JUJU_UNIT_NAME%/*}" 2>&1); log "own-app rc=$? $own"
  fi ;;
"#,
    );
    let m = Model::new(opts())?;
    let prov = m.deploy(charm.source(), "prov", 2, DeployOptions::default())?;
    let cons = m.deploy(charm.source(), "cons", 2, DeployOptions::default())?;
    let rel = m.relate("prov:web", "cons:site")?;
    m.settle(LONG)?;
    for u in &cons {
        assert!(
            log_lines(&m, u).contains(&format!("site:{rel}: token=abc123")),
            "{u}"
        );
    }
    assert!(log_lines(&m, &cons[0]).contains(&format!("site:{rel}: own-app rc=0 {{}}")));
    assert!(log_lines(&m, &cons[1])
        .contains(&format!("site:{rel}: own-app rc=1 ERROR permission denied")));
    for u in &prov {
        let app_changed = m
            .hooks(u)
            .into_iter()
            .filter(|h| h.name == "web-relation-changed" && remote_unit(h).is_empty())
            .count();
        assert_eq!(
            app_changed, 0,
            "a provider is not told about its own app data"
        );
        // once each; in the order the consumers entered scope, which load can swap
        let mut joined: Vec<String> = m
            .hooks(u)
            .iter()
            .filter(|h| h.name == "web-relation-joined")
            .map(remote_unit)
            .collect();
        joined.sort();
        assert_eq!(joined, cons);
    }
    let secret = m
        .secrets()
        .into_iter()
        .find(|s| s.label.as_deref() == Some("web-creds"));
    assert_eq!(secret.map(|s| s.grants.len()), Some(1));
    // The duplicate-call helper sees repeated identical calls.
    let h = m
        .hooks(&cons[0])
        .into_iter()
        .find(|h| h.name == "site-relation-changed" && remote_unit(h).is_empty())
        .expect("hook");
    assert!(h.duplicate_calls().is_empty(), "{:?}", h.duplicate_calls());
    Ok(())
}

/// Injected faults: the Nth tool call of a hook fails like a call whose agent lost its
/// controller connection, or the hook is killed there or where the charm parks at a named
/// checkpoint; Juju runs the hook again and the retry commits.
fn fault_injection() -> R {
    use juju_sim::{Fault, FaultKind};
    let charm = TestCharm::new(
        r#"config-changed)
  n=$(config-get n)
  status-set maintenance "one $n" || exit 1
  status-set maintenance "two $n" || exit 1
  relation-set -r "$(peers_id)" k="v$n" || exit 1
  spec="${CKPT:-}"
  if [ -n "$spec" ] && ( set -o noclobber; echo $$ > "${spec##*@}/point" ) 2>/dev/null; then
    while :; do sleep 1; done
  fi
  status-set active "done $n" || exit 1
  ;;
"#,
    );
    let m = Model::new(opts())?;
    let u = deploy(&m, &charm, 1, Volume::Shared)?.remove(0);
    m.settle(LONG)?;
    let rel = m.relation_id("app:peers").expect("peers");
    let k = |m: &Model| m.databag(rel, &u).data.get("k").cloned();
    let config_changed = |h: &juju_sim::HookStart| h.hook == "config-changed";
    let last_config_changed = |m: &Model, n: usize| {
        let hooks: Vec<_> = m
            .hooks(&u)
            .into_iter()
            .filter(|h| h.name == "config-changed")
            .collect();
        hooks[hooks.len() - n..].to_vec()
    };

    // the second call fails; the charm gives up; the retry commits
    let fail = m.arm_fault(
        &u,
        Fault::ToolCall {
            n: 2,
            kind: FaultKind::Fail,
        },
        config_changed,
    )?;
    m.config("app", [("n", 2)])?;
    m.settle(LONG)?;
    let [failed, retry] = &last_config_changed(&m, 2)[..] else {
        unreachable!()
    };
    assert_eq!(failed.exit_code(), Some(1));
    assert_eq!(failed.tool_calls.len(), 2);
    let call = &failed.tool_calls[1];
    assert_eq!((call.args[0].as_str(), call.code), ("status-set", 1));
    assert_eq!(call.fault, Some(FaultKind::Fail));
    assert!(
        retry.committed() && retry.tool_calls.len() == 6,
        "{retry:?}"
    );
    assert_eq!(k(&m).as_deref(), Some("v2"));
    let rec = m.fault(fail).expect("fault");
    assert!(
        rec.done && rec.hits.len() == 1 && rec.hits[0].fired,
        "{rec:?}"
    );
    assert_eq!(rec.hits[0].what, "call 2 (status-set) failed");
    assert_eq!(rec.hits[0].context_id, failed.context_id);
    assert_eq!(
        failed.faults,
        format!("fault {fail}: call 2 (status-set) failed")
    );

    // killed at the fifth call (relation-set): nothing of it committed, the status set
    // before it stays
    let killed = m.arm_fault(
        &u,
        Fault::ToolCall {
            n: 5,
            kind: FaultKind::Kill,
        },
        config_changed,
    )?;
    m.config("app", [("n", 3)])?;
    m.run_until(LONG, |m| m.fault(killed).is_some_and(|f| f.done))?;
    let ctx = m.fault(killed).expect("fault").hits[0].context_id.clone();
    let hook = |m: &Model| m.hooks(&u).into_iter().find(|h| h.context_id == ctx);
    m.run_until(LONG, |m| hook(m).is_some())?;
    let h = hook(&m).expect("hook");
    assert_eq!(h.outcome, juju_sim::Outcome::Failed { exit_code: None });
    assert!(h.stderr.contains("(killed by signal 9)"), "{}", h.stderr);
    m.settle(LONG)?;
    assert_eq!(k(&m).as_deref(), Some("v3"));
    // what the killed hook did: the calls before the fifth; none of its writes
    let end = h.started + h.duration;
    let at = |msg: &str| {
        m.status_history(&u)
            .into_iter()
            .find(|s| s.message == msg)
            .map(|s| s.at)
    };
    assert!(at("two 3").is_some_and(|t| t < end));
    assert!(at("done 3").is_some_and(|t| t > end));
    assert_eq!(h.tool_calls.len(), 5);
    assert_eq!(h.tool_calls[4].fault, Some(FaultKind::Kill));
    let v3 = m
        .bag_history(rel)
        .into_iter()
        .find(|c| c.data.get("k").map(String::as_str) == Some("v3"))
        .expect("v3 committed");
    assert!(v3.at > end, "committed by the retry");
    assert_eq!(
        m.fault(killed).expect("fault").hits[0].what,
        "killed at call 5 (relation-set)"
    );

    // a call the hook never makes: missed, the hook runs through
    let missed = m.arm_fault(
        &u,
        Fault::ToolCall {
            n: 50,
            kind: FaultKind::Kill,
        },
        config_changed,
    )?;
    m.config("app", [("n", 4)])?;
    m.settle(LONG)?;
    let rec = m.fault(missed).expect("fault");
    assert!(rec.done && !rec.hits[0].fired, "{rec:?}");
    assert_eq!(rec.hits[0].what, "missed: the hook made 6 calls");
    assert_eq!(k(&m).as_deref(), Some("v4"));

    // parked at a checkpoint: killed there; the retry passes it (it fired once)
    let parked = m.arm_fault(
        &u,
        Fault::Checkpoint {
            var: "CKPT".into(),
            names: vec!["point".into()],
        },
        config_changed,
    )?;
    let never = m.arm_fault(
        &u,
        Fault::ToolCall {
            n: 1,
            kind: FaultKind::Fail,
        },
        |h| h.hook == "no-such-hook",
    )?;
    m.config("app", [("n", 5)])?;
    m.settle(LONG)?;
    let [killed, retry] = &last_config_changed(&m, 2)[..] else {
        unreachable!()
    };
    assert_eq!(
        killed.outcome,
        juju_sim::Outcome::Failed { exit_code: None }
    );
    assert!(retry.committed());
    assert_eq!(k(&m).as_deref(), Some("v5"));
    let rec = m.fault(parked).expect("fault");
    assert!(rec.done, "{rec:?}");
    assert_eq!(rec.hits[0].what, "killed at checkpoint point");
    assert_eq!(rec.hits[0].context_id, killed.context_id);
    let rec = m.fault(never).expect("fault");
    assert!(!rec.done && rec.hits.is_empty(), "{rec:?}");
    Ok(())
}

fn main() {
    juju_sim::multicall::register("sim-echo", sim_echo);
    juju_sim::multicall::run_if_tool();
    let args = Arguments::from_args();
    let tests: Vec<(&str, TestFn)> = vec![
        ("deploy_hook_order", deploy_hook_order),
        ("tool_exit_codes", tool_exit_codes),
        (
            "failing_hook_writes_never_seen",
            failing_hook_writes_never_seen,
        ),
        ("remote_change_frozen_in_hook", remote_change_frozen_in_hook),
        ("quick_commits_coalesce", quick_commits_coalesce),
        ("peer_app_self_notification", peer_app_self_notification),
        ("lost_leadership_commit_fails", lost_leadership_commit_fails),
        (
            "leadership_moves_after_the_hook_that_claimed_it",
            leadership_moves_after_the_hook_that_claimed_it,
        ),
        ("action_fail_semantics", action_fail_semantics),
        (
            "error_state_actions_and_retry",
            error_state_actions_and_retry,
        ),
        (
            "machines_private_volume_shared",
            machines_private_volume_shared,
        ),
        ("storage_variants", storage_variants),
        (
            "services_survive_hooks_teardown_kills",
            services_survive_hooks_teardown_kills,
        ),
        ("postgres_provider", postgres_provider),
        ("teardown_and_no_peer_broken", teardown_and_no_peer_broken),
        ("secrets_semantics", secrets_semantics),
        ("tool_outputs", tool_outputs),
        ("environment_like_juju", environment_like_juju),
        ("remote_cache_across_hooks", remote_cache_across_hooks),
        ("file_resources", file_resources),
        (
            "registered_tools_and_late_calls",
            registered_tools_and_late_calls,
        ),
        ("refresh_runs_upgrade_charm", refresh_runs_upgrade_charm),
        ("fault_injection", fault_injection),
        (
            "cross_app_secret_grant_and_permissions",
            cross_app_secret_grant_and_permissions,
        ),
    ];
    let mut trials: Vec<Trial> = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, move || f().map_err(|e| Failed::from(e.to_string()))))
        .collect();
    trials.push(
        Trial::test("bench_hook_overhead", || {
            bench_hook_overhead().map_err(|e| Failed::from(e.to_string()))
        })
        .with_ignored_flag(true),
    );
    libtest_mimic::run(&args, trials).exit();
}
