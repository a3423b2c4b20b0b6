//! The operator actions on one unit: `get-admin-password`, `check-status`,
//! `restart-services` (`upgrade` is in `upgrade.rs`). (Moved from the action part of the
//! simulator's `roles::auto_mode_web_stays_on_leader_change_removed_worker_retires_actions`.)

use super::*;

#[test]
fn get_admin_password_shows_the_secret() {
    let u = Unit::deployed("all");
    let id = u.app_bag()["admin-password-secret"].clone();
    let want = u.model.secret_content(&id).unwrap()["password"].clone();
    let a = u.action("get-admin-password", json!({}));
    assert!(a.result.is_ok() && a.action.failed.is_none());
    assert_eq!(a.get("username"), Some("admin"));
    assert_eq!(a.get("password"), Some(want.as_str()));
    // the operator renamed the user
    u.model
        .set_config(&[("initial-admin-username", json!("ops"))]);
    assert_eq!(
        u.action("get-admin-password", json!({})).get("username"),
        Some("ops")
    );
}

#[test]
fn get_admin_password_before_the_leader_created_it_fails_with_advice() {
    let u = Unit::new(1, false);
    u.deploy();
    let a = u.action("get-admin-password", json!({}));
    assert!(a.result.is_ok(), "a refusal is not a failed hook");
    let why = a.action.failed.expect("action-fail");
    assert!(why.contains("run the action again"), "{why}");
    assert!(a.action.results.is_empty());
}

#[test]
fn check_status_reports_role_version_services_and_volume() {
    let u = Unit::deployed("auto");
    u.add_postgresql("db-pw");
    let a = u.action("check-status", json!({"verbose": false}));
    let volume = u.volume.path().display().to_string();
    for (k, v) in [
        ("unit", "concourse-ci/0"),
        ("mode", "auto"),
        ("role", "web"),
        ("version", V1),
        ("services.web", "active"),
        ("services.worker", "inactive"),
        ("upgrade.phase", "idle"),
        ("application.version", V1),
        ("application.version-option", V1),
        ("volume.path", volume.as_str()),
        ("volume.versions", V1),
    ] {
        assert_eq!(a.get(k), Some(v), "{k} in {:?}", a.action.results);
    }
    assert_eq!(a.get("peers"), None, "details only with verbose");
    let a = u.action("check-status", json!({"verbose": true}));
    assert_eq!(a.get("pointer"), Some("/var/lib/concourse-ci/current"));
    assert_eq!(a.get("volume.shared-storage"), Some("none"));
    assert_eq!(a.get("peers"), Some(""));
}

#[test]
fn check_status_with_invalid_config_fails_naming_it() {
    let u = Unit::deployed("all");
    u.model.set_config(&[("mode", json!("both"))]);
    let a = u.action("check-status", json!({"verbose": false}));
    let why = a.action.failed.expect("action-fail");
    assert!(
        why.starts_with("configuration is invalid: ") && why.contains("mode"),
        "{why}"
    );
}

#[test]
fn restart_services_lands_the_worker_then_restarts_both() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let mark = u.mark();
    let a = u.action("restart-services", json!({}));
    assert_eq!(a.get("restarted"), Some("worker,web"));
    assert_eq!(
        u.journal_since(mark),
        [
            // the unit's stop lands it (KillSignal=SIGUSR1)
            "stop concourse-worker",
            "exited concourse-worker: SIGUSR1",
            "start concourse-worker",
            "restart concourse-server",
            "exited concourse-server: SIGTERM",
        ]
    );
    assert_eq!(a.action.logs, ["landing the worker"]);
    assert!(u.active("concourse-worker") && u.active("concourse-server"));
}

#[test]
fn restart_services_with_nothing_running_fails_with_advice() {
    let u = Unit::deployed("worker");
    let a = u.action("restart-services", json!({}));
    let why = a.action.failed.expect("action-fail");
    assert!(
        why.contains("no Concourse service runs on this unit"),
        "{why}"
    );
}

/// action-set carries the admin password in its argv (Juju takes no other way); when it
/// failed, the error kept that argv, and main logged the error chain through juju-log.
#[test]
fn a_failing_action_set_keeps_the_admin_password_out_of_the_error() {
    let u = Unit::deployed("all");
    let admin_id = u.app_bag()["admin-password-secret"].clone();
    let admin = u.model.secret_content(&admin_id).unwrap()["password"].clone();
    u.model.state_mut().failing.insert(
        "action-set".into(),
        (
            1,
            format!("ERROR cannot set password={admin}: connection is shut down"),
        ),
    );
    let run = u.action("get-admin-password", json!({}));
    let err = run.result.expect_err("action-set failed");
    let chain = crate::error_chain(&err);
    assert!(chain.contains("action-set"), "{chain}");
    assert!(
        !chain.contains(&admin),
        "the password in the error: {chain}"
    );
    assert!(
        !format!("{err:?}").contains(&admin),
        "the password in {err:?}"
    );
}

/// The leader checks the admin password secret with the read web makes anyway: one
/// `secret-get` of it per hook, no `secret-info-get`.
#[test]
fn a_leader_hook_reads_the_admin_password_secret_once() {
    let u = Unit::deployed("all");
    let id = u.app_bag()["admin-password-secret"].clone();
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    let calls = u.model.state().calls.clone();
    let of = |tool: &str| {
        calls
            .iter()
            .filter(|c| c.starts_with(tool) && c.contains(&id))
            .count()
    };
    assert_eq!(of("secret-get "), 1, "{calls:?}");
    assert_eq!(of("secret-info-get "), 0, "{calls:?}");
}

/// A removed admin password secret is not found by that read: the leader makes a new one.
#[test]
fn a_removed_admin_password_secret_is_made_again() {
    let u = Unit::deployed("all");
    let id = u.app_bag()["admin-password-secret"].clone();
    u.model.state_mut().secrets.remove(&id);
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    let new = u.app_bag()["admin-password-secret"].clone();
    assert_ne!(new, id);
    let want = u.model.secret_content(&new).unwrap()["password"].clone();
    let a = u.action("get-admin-password", json!({}));
    assert_eq!(a.get("password"), Some(want.as_str()));
}
