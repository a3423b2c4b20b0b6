//! The worker role on one unit: finding its TSA (peers, `flight`, or the local web),
//! exchanging keys, its env and unit files, and restarts that land it first.
//! (The local-TSA part moved from the simulator's
//! `roles::mode_all_web_port_and_plain_postgresql_credentials`.)

use super::*;
use crate::host::ServiceManager;

const KEYS: &str = "/var/lib/concourse-worker/keys";
const WEB_TSA: &str = "ssh-ed25519 AAAAC3NzaWebTsaKey web";

/// A `mode=worker` unit, related over `flight` to a web application whose unit
/// published its TSA; returns the unit and the relation id.
fn flight_worker() -> (Unit, u32) {
    let u = Unit::deployed("worker");
    let flight = u.model.relate("flight", "web", &["web/0"]);
    u.model.set_bag(
        flight,
        "web/0",
        &[("tsa-host", "10.1.0.20:2222"), ("tsa-public-key", WEB_TSA)],
    );
    u.relation_ok(flight, "joined", Some("web/0"));
    u.relation_ok(flight, "changed", Some("web/0"));
    (u, flight)
}

#[test]
fn a_worker_application_waits_for_flight_and_starts_nothing() {
    let u = Unit::deployed("worker");
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for web unit's TSA key (juju integrate <web-app>:tsa concourse-ci:flight)"
                .into()
        )
    );
    assert!(!u.exists(WORKER_UNIT_FILE));
    assert!(!u.active("concourse-worker"));
    // its key is published already, for the web side to authorize
    assert!(u.my_bag(u.peers)["worker-public-key"].starts_with("ssh-ed25519 AAAA"));
}

#[test]
fn a_worker_gets_its_tsa_over_flight_and_publishes_its_key() {
    let (u, flight) = flight_worker();
    assert_eq!(
        u.status(),
        ("active".into(), format!("Worker ready (v{V1})"))
    );
    let env = u.env(WORKER_ENV);
    for (k, v) in [
        ("CONCOURSE_NAME", "concourse-ci-0"),
        ("CONCOURSE_TSA_HOST", "10.1.0.20:2222"),
        (
            "CONCOURSE_TSA_PUBLIC_KEY",
            &format!("{KEYS}/tsa_host_key.pub"),
        ),
        (
            "CONCOURSE_TSA_WORKER_PRIVATE_KEY",
            &format!("{KEYS}/worker_key"),
        ),
        ("CONCOURSE_WORK_DIR", "/var/lib/concourse-worker/work"),
        ("CONCOURSE_RUNTIME", "containerd"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(
        u.read(&format!("{KEYS}/tsa_host_key.pub")),
        format!("{WEB_TSA}\n")
    );
    let public = u.read(&format!("{KEYS}/worker_key.pub"));
    assert_eq!(u.my_bag(flight)["worker-public-key"], public.trim());
    assert!(u.exists("/var/lib/concourse-worker/work"));
    let unit = u.read(WORKER_UNIT_FILE);
    for line in [
        "KillSignal=SIGUSR1",
        "KillMode=process",
        "TimeoutStopSec=3600",
        "User=root",
    ] {
        assert!(unit.contains(line), "{line} missing:\n{unit}");
    }
    assert!(u.active("concourse-worker"));
    assert!(u.model.state().ports.is_empty(), "a worker opens no port");
}

#[test]
fn a_tsa_without_a_valid_key_is_not_used() {
    let u = Unit::deployed("worker");
    let flight = u.model.relate("flight", "web", &["web/0"]);
    u.model.set_bag(
        flight,
        "web/0",
        &[
            ("tsa-host", "10.1.0.20:2222"),
            ("tsa-public-key", "not a key"),
        ],
    );
    u.relation_ok(flight, "changed", Some("web/0"));
    assert_eq!(u.status().0, "waiting");
    assert!(!u.exists(WORKER_ENV));
}

#[test]
fn a_new_tsa_key_restarts_the_worker_after_landing_it() {
    let (u, flight) = flight_worker();
    let mark = u.mark();
    let other = "ssh-ed25519 AAAAC3NzaOtherTsa web";
    u.model
        .set_bag(flight, "web/0", &[("tsa-public-key", other)]);
    u.relation_ok(flight, "changed", Some("web/0"));
    assert_eq!(
        u.read(&format!("{KEYS}/tsa_host_key.pub")),
        format!("{other}\n")
    );
    // the worker is landed through its unit's stop (KillSignal=SIGUSR1), then started
    assert_eq!(
        u.touched(mark, "concourse-worker"),
        ["stop concourse-worker", "start concourse-worker"]
    );
    assert!(u
        .journal_since(mark)
        .contains(&"exited concourse-worker: SIGUSR1".to_string()));
}

#[test]
fn tag_restarts_and_drain_timeout_only_reloads_the_unit() {
    let (u, _) = flight_worker();
    let mark = u.mark();
    u.model.set_config(&[("drain-timeout", json!("30m"))]);
    u.ok("config-changed");
    assert!(u.read(WORKER_UNIT_FILE).contains("TimeoutStopSec=1800"));
    assert_eq!(
        u.journal_since(mark),
        ["daemon-reload", "enable concourse-worker"]
    );
    assert!(!u.fake.services.needs_daemon_reload("concourse-worker"));
    let mark = u.mark();
    u.model.set_config(&[("tag", json!("gpu,big"))]);
    u.ok("config-changed");
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_TAG"], "gpu,big");
    assert_eq!(
        u.touched(mark, "concourse-worker"),
        ["stop concourse-worker", "start concourse-worker"]
    );
}

#[test]
fn an_auto_worker_waits_for_the_web_unit_then_follows_its_tsa() {
    let u = Unit::new(1, false);
    u.set_peer_units(vec![format!("{APP}/0")]);
    u.deploy();
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for the leader to assign the web unit".into()
        )
    );
    // the leader chose concourse-ci/0, which then published its TSA
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/0")]);
    u.relation_ok(u.peers, "changed", Some(APP));
    assert_eq!(
        u.status(),
        ("waiting".into(), "Waiting for web unit's TSA key".into())
    );
    assert!(u.my_bag(u.peers)["worker-public-key"].starts_with("ssh-"));
    u.model.set_bag(
        u.peers,
        "concourse-ci/0",
        &[("tsa-host", "10.1.0.10:2222"), ("tsa-public-key", WEB_TSA)],
    );
    u.relation_ok(u.peers, "changed", Some("concourse-ci/0"));
    assert_eq!(
        u.status(),
        ("active".into(), format!("Worker ready (v{V1})"))
    );
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"], "10.1.0.10:2222");
    assert!(!u.exists(WEB_UNIT_FILE), "a worker unit runs no web");
}

#[test]
fn all_mode_worker_uses_every_web_units_tsa_and_web_authorizes_it() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"], "10.1.0.10:2222");
    assert_eq!(
        u.read(&format!("{KEYS}/tsa_host_key.pub")),
        u.read("/var/lib/concourse-web/keys/tsa_host_key.pub")
    );
    let own = u.read(&format!("{KEYS}/worker_key.pub"));
    let authorized = u.read("/var/lib/concourse-web/keys/authorized_worker_keys");
    assert_eq!(authorized.trim(), own.trim());
    assert!(u.active("concourse-worker") && u.active("concourse-server"));
}
