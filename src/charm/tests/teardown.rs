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
