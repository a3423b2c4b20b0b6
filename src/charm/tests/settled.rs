//! A settled unit's `update-status` (issue 13): at most four hook-tool calls and nothing
//! else while the unit is as its last full reconcile left it; a full reconcile as soon as
//! anything it checks differs (level-triggered: what runs against the record), after any
//! other hook, and while the unit is not settled.

use super::*;

const WORKER: &str = "concourse-worker";
const RECORD: &str = "/var/lib/concourse-ci/settled.json";

/// A unit running web and a worker with PostgreSQL, after one update-status.
fn settled_unit() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.ok("update-status");
    assert!(
        u.exists(RECORD),
        "a full reconcile that left the unit active records it"
    );
    u
}

/// The tool calls of the last hook.
fn calls(u: &Unit) -> Vec<String> {
    u.model.state().calls.clone()
}

/// The last hook was a full reconcile: it read the model's relations.
fn reconciled(u: &Unit) -> bool {
    calls(u).iter().any(|c| c.starts_with("relation-ids"))
}

#[test]
fn a_settled_update_status_makes_at_most_four_calls() {
    let u = settled_unit();
    let mark = u.mark();
    for _ in 0..3 {
        u.ok("update-status");
        let c = calls(&u);
        assert!(c.len() <= 4, "{} calls: {c:?}", c.len());
        assert!(!reconciled(&u), "{c:?}");
        assert!(!c.iter().any(|c| c.starts_with("status-set")), "{c:?}");
    }
    assert!(u.journal_since(mark).is_empty(), "no service touched");
    assert!(u.hook_statuses().is_empty());
    assert_eq!(u.status().0, "active");
}

#[test]
fn a_stopped_service_ends_the_settled_state() {
    let u = settled_unit();
    u.fake.services.set_inactive(WORKER);
    let mark = u.mark();
    u.ok("update-status");
    assert!(reconciled(&u));
    assert!(u.active(WORKER), "{:?}", u.journal_since(mark));
    assert!(!u.touched(mark, WORKER).is_empty());
    u.ok("update-status");
    assert!(!reconciled(&u), "settled again: {:?}", calls(&u));
}

/// Found by the settled state: starting a stopped service emptied its record of what it
/// was started with and did not write it again when it had been right, so the next hook
/// restarted the service for "no record of what it was started with".
#[test]
fn regression_a_service_started_again_keeps_its_record() {
    let u = settled_unit();
    u.fake.services.set_inactive(WORKER);
    u.ok("config-changed");
    let record = u.read("/var/lib/concourse-ci/started/concourse-worker.json");
    assert!(record.contains("binary"), "{record:?}");
    u.hook_leaves_alone("config-changed", WORKER);
}

#[test]
fn a_changed_env_file_ends_the_settled_state() {
    let u = settled_unit();
    let env = u.fake.paths.local(WEB_ENV);
    let text = std::fs::read_to_string(&env).unwrap();
    std::fs::write(&env, format!("{text}EXTRA=1\n")).unwrap();
    u.ok("update-status");
    assert!(reconciled(&u));
    assert!(!u.read(WEB_ENV).contains("EXTRA=1"), "rewritten");
    u.ok("update-status");
    assert!(!reconciled(&u), "settled again: {:?}", calls(&u));
}

/// A key file changed on disk is seen at once (the reconcile checks keys before use).
#[test]
fn a_changed_key_file_ends_the_settled_state() {
    let u = settled_unit();
    let key = u
        .fake
        .paths
        .local("/var/lib/concourse-worker/keys/tsa_host_key.pub");
    std::fs::write(&key, "not a key\n").unwrap();
    u.ok("update-status");
    assert!(reconciled(&u));
}

#[test]
fn a_moved_pointer_ends_the_settled_state() {
    let u = settled_unit();
    u.publish(V2);
    u.trust_leader_digests(&[V1, V2]);
    let link = u.fake.paths.local("/var/lib/concourse-ci/current");
    let v2 = u.volume().layout().release_dir(V2).join("concourse");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(v2, &link).unwrap();
    u.ok("update-status");
    assert!(reconciled(&u));
    assert_eq!(u.my_bag(u.peers)["version"], V2, "reported what it runs");
}

/// A configuration change whose hook has not run yet (or failed) is not settled.
#[test]
fn a_changed_configuration_ends_the_settled_state() {
    let u = settled_unit();
    u.model
        .set_config(&[("log-level", serde_json::json!("debug"))]);
    u.ok("update-status");
    assert!(reconciled(&u));
}

#[test]
fn lost_leadership_ends_the_settled_state() {
    let u = settled_unit();
    u.model.state_mut().leader = false;
    u.ok("update-status");
    assert!(reconciled(&u));
}

/// Any other hook removes the record first: one that fails half-way leaves the unit
/// unsettled, and the next update-status reconciles in full.
#[test]
fn a_failed_hook_leaves_the_unit_unsettled() {
    let u = settled_unit();
    u.model.state_mut().failing.insert(
        "storage-get".into(),
        (1, "ERROR connection is shut down".into()),
    );
    assert!(u.hook("config-changed").is_err());
    assert!(!u.exists(RECORD));
    u.model.state_mut().failing.clear();
    u.ok("update-status");
    assert!(reconciled(&u));
    assert!(u.exists(RECORD));
}

/// A unit that waits (here for PostgreSQL) is not settled: every update-status looks again.
#[test]
fn a_waiting_unit_is_not_settled() {
    let u = Unit::deployed("all");
    u.ok("update-status");
    assert_eq!(u.status().0, "waiting");
    assert!(!u.exists(RECORD));
    u.ok("update-status");
    assert!(reconciled(&u));
}

/// The volume is checked too: a broken `.installed_version` is seen at once.
#[test]
fn a_volume_that_needs_tidying_ends_the_settled_state() {
    let u = settled_unit();
    let installed = u.volume().layout().installed_version_file();
    std::fs::remove_file(&installed).unwrap();
    u.ok("update-status");
    assert!(reconciled(&u));
    assert_eq!(u.volume().installed_version().unwrap().as_deref(), Some(V1));
}

/// A full reconcile tells Juju a status or the application version only when it differs
/// from what the unit's record says Juju shows; a status told by a hook that died before
/// recording it is told again.
#[test]
fn a_full_reconcile_tells_juju_only_what_changed() {
    let u = settled_unit();
    u.ok("config-changed");
    assert!(reconciled(&u));
    let told = |u: &Unit| {
        calls(u)
            .into_iter()
            .filter(|c| c.starts_with("status-set") || c.starts_with("application-version-set"))
            .collect::<Vec<_>>()
    };
    assert!(told(&u).is_empty(), "{:?}", told(&u));
    std::fs::remove_file(u.fake.paths.local("/var/lib/concourse-ci/told/unit-status")).unwrap();
    u.ok("config-changed");
    assert_eq!(told(&u).len(), 1, "{:?}", told(&u));
    assert!(told(&u)[0].starts_with("status-set --application=False active"));
}

/// Found by the simulator: Juju sets the unit's status itself before `install` (and
/// `stop`, `remove`; `start` ends with `unknown` when the charm set none), so a unit whose
/// record said Juju showed its status already stayed `installing charm software`.
#[test]
fn regression_juju_sets_the_status_of_install_itself() {
    let u = settled_unit();
    let (kind, message) = u.status();
    u.model.state_mut().unit_status.push(StatusRecord {
        hook: "install".into(),
        kind: "maintenance".into(),
        message: "installing charm software".into(),
    });
    u.ok("install");
    assert_eq!(u.status(), (kind, message));
}

// ----- peer relation changes that do not concern a unit (issue 13, 20-unit upgrade) -----

/// A worker (not the leader) of a three-unit application whose web unit is
/// concourse-ci/0, after a hook that changed nothing (so it holds a record).
fn quiet_worker() -> Unit {
    let u = Unit::new(1, false);
    u.set_peer_units(vec![format!("{APP}/0"), format!("{APP}/2")]);
    u.model.set_bag(
        u.peers,
        APP,
        &[("web-unit", "concourse-ci/0"), ("release-version", V1)],
    );
    u.model.set_bag(
        u.peers,
        "concourse-ci/0",
        &[
            ("tsa-host", "10.1.0.11:2222"),
            ("tsa-public-key", "ssh-ed25519 AAAAC3NzaWeb x"),
        ],
    );
    u.deploy();
    u.ok("update-status");
    assert!(u.exists(RECORD), "{:?}", u.status());
    assert_eq!(u.status().0, "active");
    u
}

/// The last hook read the volume (the full reconcile does, the light paths do not).
fn full(u: &Unit) -> bool {
    calls(u).iter().any(|c| c.starts_with("storage-list"))
}

#[test]
fn a_change_of_a_databag_a_worker_does_not_read_costs_two_calls() {
    let u = quiet_worker();
    u.model
        .set_bag(u.peers, "concourse-ci/2", &[("version", V2)]);
    let mark = u.mark();
    u.relation_ok(u.peers, "changed", Some("concourse-ci/2"));
    let c = calls(&u);
    assert!(c.len() <= 2 && !full(&u), "{c:?}");
    assert!(u.journal_since(mark).is_empty());
    assert!(u.exists(RECORD));
    // the web unit's databag, which it reads, reconciles in full
    u.model
        .set_bag(u.peers, "concourse-ci/0", &[("tsa-host", "10.1.0.12:2222")]);
    u.relation_ok(u.peers, "changed", Some("concourse-ci/0"));
    assert!(full(&u), "{:?}", calls(&u));
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"], "10.1.0.12:2222");
}

#[test]
fn a_worker_waiting_for_its_grant_only_shows_the_progress() {
    let u = quiet_worker();
    let upgrade = |more: &[(&str, &str)]| {
        let mut bag = vec![
            ("upgrade-gen", "1"),
            ("upgrade-target", V2),
            ("upgrade-from", V1),
        ];
        bag.extend_from_slice(more);
        u.model.set_bag(u.peers, APP, &bag);
        u.relation_ok(u.peers, "changed", Some(APP));
    };
    // asked to acknowledge prepare: it writes, so it records nothing (a failed commit
    // would be retried as the same hook, which must not skip the lost acknowledgement)
    upgrade(&[
        ("upgrade-phase", "prepare"),
        ("upgrade-ack-from", "1:concourse-ci/1"),
        (
            "upgrade-progress",
            "Upgrading to v7.14.3: waiting for 1 of 3 units to prepare",
        ),
    ]);
    assert_eq!(u.my_bag(u.peers)["upgrade-ack"], "1:prepare");
    assert!(!u.exists(RECORD));
    // another unit granted: the next hook reconciles in full and records a quiet unit
    upgrade(&[
        ("upgrade-phase", "complete"),
        ("upgrade-grant", "1:concourse-ci/0"),
        ("upgrade-progress", "Upgrading to v7.14.3: switching web"),
    ]);
    assert!(full(&u));
    assert!(u.exists(RECORD));
    assert_eq!(u.status().1, "Upgrading to v7.14.3: switching web");
    // the grant moves to the third unit: the worker shows the progress, nothing else
    let mark = u.mark();
    upgrade(&[
        ("upgrade-grant", "1:concourse-ci/2"),
        (
            "upgrade-progress",
            "Upgrading to v7.14.3: waiting for 2 of 2 workers",
        ),
    ]);
    let c = calls(&u);
    assert!(c.len() <= 5 && !full(&u), "{c:?}");
    assert_eq!(
        u.status(),
        (
            "maintenance".into(),
            "Upgrading to v7.14.3: waiting for 2 of 2 workers".into()
        )
    );
    assert!(u.journal_since(mark).is_empty());
    // so does a change of the databag of a unit it does not read
    u.relation_ok(u.peers, "changed", Some("concourse-ci/2"));
    assert!(calls(&u).len() <= 2);
    // the upgrade ends: a full reconcile
    upgrade(&[
        ("upgrade-phase", "idle"),
        ("upgrade-grant", ""),
        ("upgrade-progress", ""),
    ]);
    assert!(full(&u));
}

#[test]
fn the_leader_reads_only_the_member_whose_hook_runs_and_runs_its_roles_when_they_need_it() {
    let u = Unit::new(0, true);
    u.set_peer_units(vec![format!("{APP}/1"), format!("{APP}/2")]);
    for n in [1, 2] {
        let key = format!("ssh-ed25519 AAAAC3NzaWorker{n} x");
        u.model.set_bag(
            u.peers,
            &format!("{APP}/{n}"),
            &[("worker-public-key", key.as_str())],
        );
    }
    u.deploy();
    u.add_postgresql("db-pw");
    let reads = |u: &Unit| -> Vec<String> {
        calls(u)
            .into_iter()
            .filter(|c| c.starts_with("relation-get") && c.contains(&format!("{APP}/")))
            .filter(|c| !c.ends_with(&format!("{APP}/0")))
            .collect()
    };
    u.ok("update-status");
    u.model.set_bag(
        u.peers,
        "concourse-ci/2",
        &[("worker-public-key", "ssh-ed25519 AAAAC3NzaWorker2New x")],
    );
    u.relation_ok(u.peers, "changed", Some("concourse-ci/2"));
    let r = reads(&u);
    assert!(
        r.len() == 1 && r[0].ends_with("concourse-ci/2"),
        "reads {r:?}"
    );
    let keys = u.read("/var/lib/concourse-web/keys/authorized_worker_keys");
    assert!(
        keys.contains("Worker2New") && keys.contains("Worker1"),
        "{keys}"
    );
    // a change the roles do not use: the leader does not run them again
    let roles_ran = |u: &Unit| calls(u).iter().any(|c| c.starts_with("network-get"));
    u.relation_ok(u.peers, "changed", Some("concourse-ci/2"));
    assert!(u.exists(RECORD), "a hook that changed nothing records");
    u.model
        .set_bag(u.peers, "concourse-ci/1", &[("version", V1)]);
    let mark = u.mark();
    u.relation_ok(u.peers, "changed", Some("concourse-ci/1"));
    assert!(!roles_ran(&u), "{:?}", calls(&u));
    assert!(u.journal_since(mark).is_empty());
    assert_eq!(u.status().0, "active");
    // a new worker key: they run again, and web authorizes it
    u.model.set_bag(
        u.peers,
        "concourse-ci/1",
        &[("worker-public-key", "ssh-ed25519 AAAAC3NzaWorker1New x")],
    );
    u.relation_ok(u.peers, "changed", Some("concourse-ci/1"));
    assert!(roles_ran(&u));
    let keys = u.read("/var/lib/concourse-web/keys/authorized_worker_keys");
    assert!(keys.contains("Worker1New"), "{keys}");
    // a hook for no member reads none of them again
    u.ok("config-changed");
    assert!(reads(&u).is_empty(), "{:?}", reads(&u));
    // a new leadership forgets the copies
    u.ok("leader-elected");
    assert_eq!(reads(&u).len(), 2, "{:?}", reads(&u));
}
