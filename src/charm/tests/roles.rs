//! Role changes on one unit: a unit stops and removes what it no longer runs, withdraws
//! what it published for that role, and keeps the rest running.

use super::*;

fn all_mode_ready() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert!(u.active("concourse-server") && u.active("concourse-worker"));
    u
}

#[test]
fn all_to_worker_removes_web_closes_its_ports_and_withdraws_the_tsa() {
    let u = all_mode_ready();
    let mark = u.mark();
    u.model.set_config(&[("mode", json!("worker"))]);
    u.ok("config-changed");
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["stop concourse-server", "disable concourse-server"]
    );
    assert!(!u.exists(WEB_UNIT_FILE));
    assert!(u.model.state().ports.is_empty());
    let bag = u.my_bag(u.peers);
    for k in ["tsa-host", "tsa-public-key", "web-ip"] {
        assert!(!bag.contains_key(k), "{k} still published: {bag:?}");
    }
    assert!(bag.contains_key("worker-public-key"));
    // the worker's TSA was this unit's web: it landed while that TSA still ran (before
    // web stopped), and waits for flight to give it another
    assert_eq!(u.status().0, "waiting");
    let journal = u.journal_since(mark);
    let landed = journal
        .iter()
        .position(|e| e == "exited concourse-worker: SIGUSR1");
    let web_stopped = journal.iter().position(|e| e == "stop concourse-server");
    assert!(landed.is_some() && landed < web_stopped, "{journal:?}");
    assert!(!u.active("concourse-worker"));
}

#[test]
fn all_to_web_retires_the_worker_and_withdraws_its_key() {
    let u = all_mode_ready();
    let mark = u.mark();
    u.model.set_config(&[("mode", json!("web"))]);
    u.ok("config-changed");
    assert_eq!(
        u.touched(mark, "concourse-worker"),
        ["stop concourse-worker", "disable concourse-worker"]
    );
    assert!(u
        .journal_since(mark)
        .contains(&"exited concourse-worker: SIGUSR2".to_string()));
    assert!(!u.exists(WORKER_UNIT_FILE) && !u.active("concourse-worker"));
    assert!(!u.my_bag(u.peers).contains_key("worker-public-key"));
    // web's own worker key is no longer authorized: a reload, not a restart
    assert_eq!(
        u.read("/var/lib/concourse-web/keys/authorized_worker_keys"),
        ""
    );
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["reload concourse-server"]
    );
    assert_eq!(
        u.status(),
        (
            "active".into(),
            format!("Web ready (v{V1}) http://10.1.0.10:8080")
        )
    );
}

#[test]
fn a_web_unit_that_loses_the_web_role_becomes_a_worker() {
    // concourse-ci/1 ran web; the leader (concourse-ci/0) took web over
    let u = Unit::new(1, false);
    u.set_peer_units(vec![format!("{APP}/0")]);
    let admin = u.model.add_own_secret(&[("password", "admin-pw")]);
    u.model.set_bag(
        u.peers,
        APP,
        &[
            ("web-unit", "concourse-ci/1"),
            ("admin-password-secret", &admin),
        ],
    );
    u.share_web_keys();
    u.deploy();
    u.add_postgresql("db-pw");
    assert!(u.exists(WEB_UNIT_FILE) && u.active("concourse-server"));
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/0")]);
    u.model.set_bag(
        u.peers,
        "concourse-ci/0",
        &[
            ("tsa-host", "10.1.0.11:2222"),
            ("tsa-public-key", "ssh-ed25519 AAAAC3NzaNewWeb x"),
        ],
    );
    let mark = u.mark();
    u.relation_ok(u.peers, "changed", Some(APP));
    assert!(!u.exists(WEB_UNIT_FILE) && !u.active("concourse-server"));
    assert!(u
        .touched(mark, "concourse-server")
        .contains(&"stop concourse-server".into()));
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"], "10.1.0.11:2222");
    assert_eq!(
        u.status(),
        ("active".into(), format!("Worker ready (v{V1})"))
    );
}

#[test]
fn the_leader_keeps_a_live_web_unit_and_takes_over_a_gone_one() {
    let u = Unit::new(0, true);
    u.set_peer_units(vec![format!("{APP}/1")]);
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/1")]);
    u.deploy();
    assert_eq!(
        u.app_bag()["web-unit"],
        "concourse-ci/1",
        "sticky while alive"
    );
    assert!(!u.exists(WEB_UNIT_FILE));
    // concourse-ci/1 left the model
    u.set_peer_units(Vec::new());
    u.relation_ok(u.peers, "departed", Some("concourse-ci/1"));
    assert_eq!(u.app_bag()["web-unit"], "concourse-ci/0");
    assert_eq!(u.my_bag(u.peers)["tsa-host"], "10.1.0.10:2222");
    assert!(u.status().1.starts_with("Waiting for PostgreSQL relation"));
}
