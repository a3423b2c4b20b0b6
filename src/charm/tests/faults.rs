//! Faults the simulator's sweep (`tests/sim/faults.rs`) found, one unit's view: a hook-tool
//! call that fails as when the unit agent lost its controller connection.

use super::*;

const WEB: &str = "concourse-ci/0";
const ME: &str = "concourse-ci/1";
const WEB_TSA: &str = "ssh-ed25519 AAAAC3NzaWebTsaKey web";

/// A worker (`concourse-ci/1`) of an `auto` deployment whose web unit published its TSA,
/// running V1 with V2 published; the leader grants it the switch to V2.
fn granted_worker() -> Unit {
    let u = Unit::new(1, false);
    u.model.set_config(&[("mode", json!("auto"))]);
    u.set_peer_units(vec![WEB.into()]);
    u.model.set_bag(
        u.peers,
        WEB,
        &[
            ("tsa-host", "10.1.0.20:2222"),
            ("tsa-public-key", WEB_TSA),
            ("version", V1),
        ],
    );
    u.model.set_bag(
        u.peers,
        APP,
        &[
            ("web-unit", WEB),
            ("release-version", V1),
            ("config-version", V1),
            ("upgrade-phase", "idle"),
            ("upgrade-gen", "0"),
        ],
    );
    u.deploy();
    assert!(u.active("concourse-worker"));
    u.publish(V2);
    u.trust_leader_digests(&[V1, V2]);
    u.model.set_bag(
        u.peers,
        APP,
        &[
            ("upgrade-phase", "complete"),
            ("upgrade-gen", "1"),
            ("upgrade-target", V2),
            ("upgrade-from", V1),
            ("upgrade-grant", &format!("1:{ME}")),
        ],
    );
    u
}

/// A failed read of a peer's databag was taken for a unit that had not joined yet (an
/// empty bag): in its switch hook a worker then did not find the web unit's TSA, stayed
/// landed, failed its own verification and rolled the whole application back.
#[test]
fn regression_a_failed_read_of_a_peer_is_no_empty_peer() {
    let u = granted_worker();
    let argv = format!("relation-get --format=json -r peers:{} - {WEB}", u.peers);
    u.model
        .state_mut()
        .failing
        .insert(argv, (1, "ERROR connection is shut down".into()));
    let err = u.relation_hook(u.peers, "changed", None).unwrap_err();
    assert!(crate::error_chain(&err).contains("connection is shut down"));
    assert!(
        !u.my_bag(u.peers).contains_key("upgrade-state"),
        "no failure reported: {:?}",
        u.my_bag(u.peers)
    );
    u.model.state_mut().failing.clear();
    u.relation_ok(u.peers, "changed", None);
    let mine = u.my_bag(u.peers);
    assert_eq!(mine["version"], V2);
    assert_eq!(mine["upgrade-state"], "1:switched");
    assert!(u.active("concourse-worker"));
    let exe = u.fake.services.service("concourse-worker").exe.unwrap();
    assert!(exe.to_str().unwrap().contains(&format!("/releases/{V2}/")));
}

/// A peer that is planned but has not joined yet has no databag this unit may read:
/// that alone fails nothing.
#[test]
fn a_peer_without_a_readable_bag_is_an_empty_peer() {
    let u = granted_worker();
    let argv = format!("relation-get --format=json -r peers:{} - {WEB}", u.peers);
    u.model
        .state_mut()
        .failing
        .insert(argv, (1, "ERROR permission denied".into()));
    u.ok("update-status");
}

/// The application version was told to Juju in `update-status` only when the pointer
/// moved in that very hook: a switch in `update-status` that failed at
/// `application-version-set` was retried as `update-status`, found the pointer already
/// moved, and left `juju status` showing the old version.
#[test]
fn regression_the_application_version_follows_a_retried_switch() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.publish(V2);
    u.action("upgrade", json!({"version": V2}));
    u.ok("update-status");
    u.model.state_mut().failing.insert(
        "application-version-set".into(),
        (1, "ERROR connection is shut down".into()),
    );
    assert!(u.hook("update-status").is_err());
    assert_eq!(u.app_version(), Some(V1.to_string()));
    u.model.state_mut().failing.clear();
    u.ok("update-status");
    assert_eq!(u.app_version(), Some(V2.to_string()));
    // and once Juju knows it, update-status does not tell it again
    u.ok("update-status");
    assert!(!u
        .model
        .state()
        .calls
        .iter()
        .any(|c| c.starts_with("application-version-set")));
}
