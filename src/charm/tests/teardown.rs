//! Unit removal on one unit: the worker is retired (never killed without a chance to
//! land), web stopped, both services removed, and the unit forgotten on the volume.

use super::*;

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
            "kill main SIGUSR2 concourse-worker",
            "disable concourse-worker",
            "daemon-reload",
            "stop concourse-server",
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

#[test]
fn a_worker_that_never_retires_is_killed_after_drain_timeout() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.model.set_config(&[("drain-timeout", json!("10m"))]);
    u.ok("config-changed");
    u.fake
        .services
        .state
        .borrow_mut()
        .ignore_drain
        .insert("concourse-worker".into());
    let (mark, t0) = (u.mark(), u.fake.clock.elapsed());
    u.ok("stop");
    let waited = u.fake.clock.elapsed() - t0;
    assert!(
        waited >= std::time::Duration::from_secs(600)
            && waited < std::time::Duration::from_secs(601),
        "waited {waited:?}"
    );
    let journal = u.journal_since(mark);
    assert_eq!(journal[0], "kill main SIGUSR2 concourse-worker");
    assert_eq!(journal[1], "kill all SIGKILL concourse-worker");
    assert!(!u.active("concourse-worker") && !u.exists(WORKER_UNIT_FILE));
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
