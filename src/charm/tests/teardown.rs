//! Unit removal on one unit: the worker is retired (never killed without a chance to
//! land), web stopped, both services removed, and the unit forgotten on the volume.

use std::time::Duration;

use super::*;
use crate::host::ServiceManager;

#[test]
fn stop_retires_the_worker_and_removes_both_services() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let me = "concourse-ci/0";
    assert!(u.volume().read_unit_state(me).unwrap().is_some());
    let mark = u.mark();
    u.ok("stop");
    assert_eq!(
        u.status(),
        (
            "maintenance".into(),
            "Retiring worker and stopping services".into()
        )
    );
    assert_eq!(
        u.journal_since(mark),
        [
            // the drop-in that makes this stop retire (KillSignal=SIGUSR2)
            "daemon-reload",
            "stop concourse-worker",
            "exited concourse-worker: SIGUSR2",
            "disable concourse-worker",
            "daemon-reload",
            "stop concourse-server",
            "exited concourse-server: SIGTERM",
            "disable concourse-server",
            "daemon-reload",
        ]
    );
    assert!(!u.exists(WEB_UNIT_FILE) && !u.exists(WORKER_UNIT_FILE));
    assert!(u.volume().read_unit_state(me).unwrap().is_none());
    // remove after stop finds nothing left to do
    let mark = u.mark();
    u.ok("remove");
    assert!(u.journal_since(mark).is_empty());
}

/// The charm used to end a worker that did not retire within drain-timeout with SIGKILL
/// to its whole cgroup, killing every running build container. Now systemd escalates,
/// on the main process only: SIGTERM after drain-timeout, SIGKILL after 15 s more.
#[test]
fn regression_escalation_never_kills_the_worker_cgroup() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.model.set_config(&[("drain-timeout", json!("10m"))]);
    u.ok("config-changed");
    {
        let mut st = u.fake.services.state.borrow_mut();
        st.ignore_drain.insert("concourse-worker".into());
        st.ignore_term.insert("concourse-worker".into());
    }
    let (mark, t0) = (u.mark(), u.fake.clock.elapsed());
    u.ok("stop");
    let waited = u.fake.clock.elapsed() - t0;
    assert!(
        waited >= Duration::from_secs(615) && waited < Duration::from_secs(616),
        "waited {waited:?}"
    );
    let journal = u.journal_since(mark);
    let worker: Vec<&String> = journal
        .iter()
        .filter(|e| e.contains("concourse-worker"))
        .collect();
    assert_eq!(
        worker,
        [
            "stop concourse-worker",
            "escalate main SIGTERM concourse-worker",
            "escalate main SIGKILL concourse-worker",
            "exited concourse-worker: SIGKILL",
            "disable concourse-worker",
        ]
    );
    assert!(
        !journal
            .iter()
            .any(|e| e.contains(" all ") || e.contains("cgroup")),
        "{journal:?}"
    );
    assert!(!u.active("concourse-worker") && !u.exists(WORKER_UNIT_FILE));
}

/// A worker that cannot register (no TSA) cannot retire: it is stopped with SIGTERM
/// through its unit's stop (never restarted), not left to a retire signal it would lose
/// or answer with exit 1. The stop used to wait two minutes for a registration that
/// could not come: by the time a removed unit stops, the other webs have dropped its
/// worker's key (the simulator's churn scenario spent 110 s of its 125 s there).
#[test]
fn regression_a_removed_worker_that_cannot_register_is_stopped_without_waiting() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.fake.services.set_never_ready("concourse-worker");
    u.fake.services.restart("concourse-worker").unwrap();
    let (mark, t0) = (u.mark(), u.fake.clock.elapsed());
    u.ok("stop");
    let waited = u.fake.clock.elapsed() - t0;
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
    let journal = u.journal_since(mark);
    assert!(
        journal.starts_with(&[
            "daemon-reload".to_string(),
            "stop concourse-worker".to_string(),
            "exited concourse-worker: SIGTERM".to_string(),
        ]),
        "{journal:?}"
    );
    assert!(
        !journal.iter().any(|e| e.starts_with("kill ")),
        "{journal:?}"
    );
}

#[test]
fn storage_detaching_leaves_the_services_running() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let mark = u.mark();
    u.ok("concourse-data-storage-detaching");
    assert!(u.journal_since(mark).is_empty());
    assert!(u.active("concourse-server") && u.active("concourse-worker"));
}

/// Over a whole life (deploy, database, rotation, actions, config changes, removal), no
/// secret appears in a status, a `juju-log` line or a tool's argv, except the admin
/// password in `get-admin-password`'s results, which the action exists to show.
#[test]
fn no_secret_in_statuses_logs_or_tool_argv() {
    let u = Unit::deployed("all");
    let rel = u.add_postgresql("db-secret-pw-1");
    let secret = u.model.bag(rel, "postgresql")["secret-user"].clone();
    u.model.rotate_secret(
        &secret,
        &[("username", "relation-7"), ("password", "db-secret-pw-2")],
    );
    u.ok("secret-changed");
    u.model
        .set_config(&[("log-level", json!("debug")), ("web-port", json!(0))]);
    u.ok("config-changed");
    u.model.set_config(&[("web-port", json!(8080))]);
    u.ok("config-changed");
    for a in ["check-status", "restart-services", "get-admin-password"] {
        u.action(a, json!({"verbose": true}));
    }
    assert!(assert_root_owned(&u) > 20, "the owner scan saw too little");
    u.ok("stop");
    let admin_id = u.app_bag()["admin-password-secret"].clone();
    let admin = u.model.secret_content(&admin_id).unwrap()["password"].clone();
    let key = u.read("/var/lib/concourse-worker/keys/worker_key");
    let secrets = [
        "db-secret-pw-1",
        "db-secret-pw-2",
        admin.as_str(),
        key.trim(),
    ];
    let st = u.model.state();
    let statuses = st.unit_status.iter().chain(&st.app_status);
    for s in statuses {
        for x in secrets {
            assert!(!s.message.contains(x), "a secret in status {s:?}");
        }
    }
    let logs = u.logs.lines();
    assert!(logs.len() >= 8, "the charm logs: {logs:?}");
    for line in &logs {
        for x in secrets {
            assert!(!line.contains(x), "a secret in juju-log: {line}");
        }
    }
    for (argv, stdin) in &st.history {
        let shown = argv.starts_with("action-set ") && argv.contains("password=");
        for x in secrets {
            let allowed = shown && x == admin;
            assert!(allowed || !argv.contains(x), "a secret in argv: {argv}");
            assert!(!stdin.contains(x), "a secret on the stdin of {argv}");
        }
    }
}
