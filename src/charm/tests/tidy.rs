//! The volume after an upgrade: `.installed_version` names the application's release and
//! releases nobody needs are removed, level-triggered in every hook (a finish that failed
//! is done by a later hook), on every unit's own volume when volumes are per unit.

use super::*;

/// An older release nobody runs.
const OLD: &str = "7.14.1";

/// The finish of an upgrade (recording `.installed_version`, pruning) failed and was only
/// logged: nothing ever tried again, so the volume kept every old release and recorded
/// the previous version forever.
#[test]
fn regression_a_finish_that_failed_is_retried() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.publish(V2);
    let installed = u.volume().layout().installed_version_file();
    u.action("upgrade", json!({"version": V2}));
    u.publish(OLD);
    // the finish cannot read or write .installed_version
    std::fs::remove_file(&installed).unwrap();
    std::fs::create_dir(&installed).unwrap();
    u.ok("update-status");
    u.ok("update-status");
    assert_eq!(u.app_bag()["upgrade-phase"], "idle");
    assert_eq!(u.app_bag()["release-version"], V2);
    assert_eq!(u.volume().published_versions().unwrap(), [OLD, V1, V2]);
    std::fs::remove_dir(&installed).unwrap();
    u.ok("update-status");
    assert_eq!(u.volume().installed_version().unwrap().as_deref(), Some(V2));
    assert_eq!(
        u.volume().published_versions().unwrap(),
        [V1, V2],
        "only the release and the previous one stay"
    );
}

/// The finish says why it cannot tidy the volume, and the hook still succeeds (the
/// upgrade is over; only the volume's housekeeping waits).
#[test]
fn a_volume_that_cannot_be_tidied_says_so() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let installed = u.volume().layout().installed_version_file();
    std::fs::remove_file(&installed).unwrap();
    std::fs::create_dir(&installed).unwrap();
    u.ok("update-status");
    let (kind, message) = u.status();
    assert_eq!(kind, "maintenance");
    assert!(
        message.starts_with("cannot read ") && message.contains(".installed_version"),
        "{message}"
    );
}

/// The application's databag after generation 1, an upgrade from `from`, ended: idle on V2.
fn app_is_idle_on_v2(u: &Unit, from: &str) {
    u.model.set_bag(
        u.peers,
        APP,
        &[
            ("upgrade-phase", "idle"),
            ("upgrade-gen", "1"),
            ("upgrade-target", V2),
            ("upgrade-from", from),
            ("release-version", V2),
        ],
    );
}

/// With per-unit volumes (`shared-storage=none`) only the leader pruned, and only its own
/// volume: every other unit's volume kept every version it ever ran.
#[test]
fn regression_every_unit_prunes_its_own_volume() {
    let u = Unit::new(1, false);
    app_is_idle_on_v2(&u, V1);
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/0")]);
    u.publish(OLD);
    u.publish(V1);
    u.publish(V2);
    u.trust_leader_digests(&[V2]);
    u.deploy();
    assert_eq!(u.my_bag(u.peers)["version"], V2);
    assert_eq!(u.volume().installed_version().unwrap().as_deref(), Some(V2));
    assert_eq!(u.volume().published_versions().unwrap(), [V1, V2]);
}

/// A unit that does not run the application's release yet (a catch-up is due) keeps what
/// it runs and does not record the release as installed on its own volume.
#[test]
fn a_unit_behind_keeps_what_it_runs() {
    let u = Unit::new(1, false);
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/0")]);
    u.publish(OLD);
    u.deploy();
    assert_eq!(u.my_bag(u.peers)["version"], V1);
    u.publish(V2);
    app_is_idle_on_v2(&u, V2);
    u.ok("update-status");
    assert_eq!(u.my_bag(u.peers)["version"], V1);
    assert_eq!(
        u.volume().installed_version().unwrap(),
        None,
        "not v{V2} yet"
    );
    assert_eq!(u.volume().published_versions().unwrap(), [V1, V2]);
}
