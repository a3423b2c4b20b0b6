//! Upgrades on one unit's view: the `upgrade` action's refusals, and a leader alone
//! taking every step of the protocol back to back (prepare, download, switch with its
//! worker landed first, verification, finish), going back when the new release does not
//! start, and failing cleanly when the target cannot be installed.

use std::time::Duration;

use super::*;
use crate::host::ServiceManager;

const CURRENT: &str = "/var/lib/concourse-ci/current";

/// The hooks a leader alone needs after a request: Juju does not notify a unit of its
/// own writes, so it acknowledges `prepare` in one hook and takes the remaining steps in
/// the next (update-status on a lone unit).
fn two_hooks(u: &Unit) {
    u.ok("update-status");
    assert!(u.my_bag(u.peers)["upgrade-ack"].ends_with(":prepare"));
    u.ok("update-status");
}

/// The version behind the unit's pointer.
fn pointer(u: &Unit) -> String {
    let target = std::fs::read_link(u.fake.paths.local(CURRENT)).unwrap();
    crate::charm::release::version_of_release_dir(&target).unwrap()
}

/// Every service started on `version` exits at once.
fn crashes_on_start(u: &Unit, version: &str) {
    u.fake
        .services
        .state
        .borrow_mut()
        .crashing_versions
        .insert(version.into());
}

/// The unit went back to V1 and reported that V2 did not start because `service` was not
/// running.
fn went_back_without(u: &Unit, service: &str) {
    assert_eq!(pointer(u), V1, "back on the previous release");
    let mine = u.my_bag(u.peers);
    assert_eq!(
        mine["upgrade-error"],
        format!("v7.14.3 did not start on concourse-ci/0: {service} is not running"),
        "{mine:?}"
    );
}

/// The unit runs V2 and reported its switch.
fn switched_to_v2(u: &Unit) {
    assert_eq!(pointer(u), V2);
    let mine = u.my_bag(u.peers);
    assert!(mine["upgrade-state"].ends_with(":switched"), "{mine:?}");
}

/// Where the first of `entries` stands in `journal` (the test fails without one).
fn first(journal: &[String], entries: &[&str]) -> usize {
    let found = journal.iter().position(|e| entries.contains(&e.as_str()));
    found.unwrap_or_else(|| panic!("no {entries:?} in {journal:?}"))
}

/// Where the last of `entries` stands in `journal` (the test fails without one).
fn last(journal: &[String], entries: &[&str]) -> usize {
    let found = journal.iter().rposition(|e| entries.contains(&e.as_str()));
    found.unwrap_or_else(|| panic!("no {entries:?} in {journal:?}"))
}

/// A ready `mode=all` leader on V1 with V2 already published on its volume.
fn ready_with_v2() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.publish(V2);
    assert_eq!(pointer(&u), V1);
    u
}

fn refused(u: &Unit, params: Value) -> String {
    let a = u.action("upgrade", params);
    assert!(a.result.is_ok(), "a refusal is not a failed hook");
    a.action.failed.expect("the action must fail")
}

#[test]
fn the_action_refuses_what_it_cannot_do_and_says_how() {
    let u = Unit::deployed("all");
    let before = u.app_bag();
    assert!(refused(&u, json!({})).starts_with("missing parameter version"));
    assert!(refused(&u, json!({"version": "abc"})).contains("is not a Concourse version"));
    assert!(refused(&u, json!({"version": V1})).contains("already runs v7.14.2"));
    let why = refused(&u, json!({"version": "7.14.1"}));
    assert!(
        why.contains("allow-downgrade=true") && why.contains("docs/upgrade.md"),
        "{why}"
    );
    u.model.set_config(&[("log-level", json!("loud"))]);
    assert!(refused(&u, json!({"version": V2})).starts_with("fix the configuration first"));
    u.model.set_config(&[("log-level", json!("info"))]);
    // without a resource, the version must exist at release-url
    u.model.state_mut().resources.clear();
    u.model.set_config(&[(
        "release-url",
        json!("http://127.0.0.1:9/v{version}/concourse-{version}.tgz"),
    )]);
    let why = refused(&u, json!({"version": V2}));
    assert!(
        why.starts_with("v7.14.3 is not available: cannot reach http://127.0.0.1:9/"),
        "{why}"
    );
    assert_eq!(u.app_bag(), before, "a refused request changes nothing");
}

#[test]
fn the_action_runs_on_the_leader_only_and_needs_peers() {
    let u = Unit::new(1, false);
    u.deploy();
    let why = refused(&u, json!({"version": V2}));
    assert_eq!(
        why,
        "run this on the leader: juju run concourse-ci/leader upgrade version=7.14.3"
    );
    let lone = Unit::new(0, true);
    lone.model.unrelate(lone.peers);
    lone.ok("install");
    assert!(refused(&lone, json!({"version": V2})).starts_with("the peer relation is not up yet"));
}

#[test]
fn a_leader_alone_upgrades_back_to_back_landing_its_worker_first() {
    let u = ready_with_v2();
    let a = u.action("upgrade", json!({"version": V2}));
    assert!(a.action.failed.is_none(), "{:?}", a.action.failed);
    assert_eq!(a.get("target"), Some(V2));
    assert_eq!(a.get("from"), Some(V1));
    assert!(a
        .get("note")
        .unwrap()
        .contains("the version option still says 7.14.2"));
    assert_eq!(u.app_bag()["upgrade-phase"], "prepare");
    let (mark, t0) = (u.mark(), u.fake.clock.elapsed());
    two_hooks(&u);
    assert_eq!(pointer(&u), V2);
    let app = u.app_bag();
    assert_eq!(app["release-version"], V2);
    assert_eq!(app["upgrade-phase"], "idle");
    let journal = u.journal_since(mark);
    let land = journal
        .iter()
        .position(|e| e == "exited concourse-worker: SIGUSR1");
    let restart = journal
        .iter()
        .position(|e| e.ends_with(" concourse-worker") && e.starts_with("start"));
    assert!(
        land.is_some() && land < restart,
        "worker landed before the switch: {journal:?}"
    );
    assert!(
        journal.contains(&"restart concourse-server".to_string()),
        "{journal:?}"
    );
    assert!(u
        .hook_statuses()
        .iter()
        .any(|s| s.message == "Draining worker for upgrade to v7.14.3"));
    // web's TSA listening and the worker's beacon registering proved the switch, without
    // the crash window (on the test clock)
    let waited = u.fake.clock.elapsed() - t0;
    assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
    assert_eq!(
        u.status().1,
        format!("Web ready (v{V2}) http://10.1.0.10:8080; Worker ready (v{V2})")
    );
    assert_eq!(
        u.app_status(),
        (
            "active".into(),
            "v7.14.3 on 1 of 1 units; the version option says 7.14.2; align it with: juju config concourse-ci version=7.14.3"
                .into()
        )
    );
    assert_eq!(u.app_version(), Some(V2.to_string()));
    assert_eq!(u.my_bag(u.peers)["version"], V2);
    // the old release is pruned; the volume records the new one
    assert_eq!(u.volume().published_versions().unwrap(), [V1, V2]);
    assert_eq!(u.volume().installed_version().unwrap().as_deref(), Some(V2));
}

#[test]
fn a_version_change_is_an_upgrade_request() {
    let u = ready_with_v2();
    u.model.set_config(&[("version", json!(V2))]);
    u.ok("config-changed");
    assert_eq!(u.app_bag()["upgrade-phase"], "prepare");
    u.ok("update-status");
    assert_eq!(pointer(&u), V2);
    assert_eq!(
        u.app_status(),
        ("active".into(), "v7.14.3 on 1 of 1 units".into())
    );
    // another option later never undoes it
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    assert_eq!(pointer(&u), V2);
}

#[test]
fn a_release_that_does_not_start_is_rolled_back() {
    let u = ready_with_v2();
    crashes_on_start(&u, V2);
    u.action("upgrade", json!({"version": V2}));
    two_hooks(&u);
    assert_eq!(pointer(&u), V1, "back on the previous release");
    assert!(u.active("concourse-server") && u.active("concourse-worker"));
    let mine = u.my_bag(u.peers);
    assert!(mine["upgrade-state"].ends_with(":failed"), "{mine:?}");
    assert!(
        mine["upgrade-error"].starts_with("v7.14.3 did not start on concourse-ci/0: "),
        "{mine:?}"
    );
    let (kind, message) = u.app_status();
    assert_eq!(kind, "blocked", "{message}");
    assert!(message.contains("running v7.14.2"), "{message}");
    assert_eq!(u.app_version(), Some(V1.to_string()));
}

/// Switches a ready `mode=all` leader to V2, `set_up` before V2 is published (a hook
/// would prune it); returns how long the two hooks took on the test clock.
fn switch_to_v2_after(set_up: impl FnOnce(&Unit)) -> (Unit, Duration) {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    set_up(&u);
    u.publish(V2);
    u.action("upgrade", json!({"version": V2}));
    let t0 = u.fake.clock.elapsed();
    two_hooks(&u);
    let waited = u.fake.clock.elapsed() - t0;
    (u, waited)
}

#[test]
fn a_switched_worker_that_does_not_register_gets_the_whole_crash_window() {
    let (u, waited) = switch_to_v2_after(|u| {
        u.fake
            .services
            .set_ready_after("concourse-worker", Duration::from_secs(40));
    });
    switched_to_v2(&u);
    assert!(waited >= Duration::from_millis(1500), "waited {waited:?}");
    assert!(waited < Duration::from_secs(40), "waited {waited:?}");
}

#[test]
fn a_switched_worker_that_dies_before_registering_goes_back_at_once() {
    let (u, waited) = switch_to_v2_after(|u| {
        let mut st = u.fake.services.state.borrow_mut();
        st.crashes.insert(("concourse-worker".into(), V2.into()));
    });
    went_back_without(&u, "concourse-worker");
    assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
    assert!(u.active("concourse-server") && u.active("concourse-worker"));
}

#[test]
fn at_log_level_error_a_switch_waits_the_crash_window() {
    let (u, waited) = switch_to_v2_after(|u| {
        u.model.set_config(&[("log-level", json!("error"))]);
        u.ok("config-changed");
    });
    switched_to_v2(&u);
    assert!(waited >= Duration::from_millis(1500), "waited {waited:?}");
}

/// A web-only leader on V1 with V2 published, the upgrade to V2 requested.
fn web_only_upgrading() -> Unit {
    let u = Unit::deployed("web");
    u.add_postgresql("db-pw");
    u.publish(V2);
    let a = u.action("upgrade", json!({"version": V2}));
    assert!(a.action.failed.is_none(), "{:?}", a.action.failed);
    u
}

#[test]
fn a_web_only_switch_is_proven_by_its_tsa_listening_without_the_crash_window() {
    let u = web_only_upgrading();
    let t0 = u.fake.clock.elapsed();
    two_hooks(&u);
    switched_to_v2(&u);
    let waited = u.fake.clock.elapsed() - t0;
    assert!(waited < Duration::from_millis(1500), "waited {waited:?}");
}

#[test]
fn a_web_only_unit_whose_release_dies_before_listening_goes_back() {
    let u = web_only_upgrading();
    crashes_on_start(&u, V2);
    two_hooks(&u);
    went_back_without(&u, "concourse-server");
    assert!(u.active("concourse-server"));
}

#[test]
fn a_target_that_cannot_be_installed_fails_the_upgrade_and_keeps_running() {
    // the attached resource holds V1 only
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.action("upgrade", json!({"version": V2}));
    let mark = u.mark();
    two_hooks(&u);
    assert_eq!(pointer(&u), V1);
    let app = u.app_bag();
    assert_eq!(app["upgrade-phase"], "failed");
    assert!(
        app["upgrade-error"]
            .starts_with("concourse-ci/0: cannot install v7.14.3: the concourse-release resource"),
        "{app:?}"
    );
    let (kind, message) = u.app_status();
    assert_eq!(kind, "blocked");
    assert!(message.starts_with("Upgrade failed: concourse-ci/0: cannot install v7.14.3"));
    assert!(
        message.ends_with("Fix the cause, then run: juju run <leader> upgrade version=7.14.3"),
        "{message}"
    );
    assert!(u.journal_since(mark).is_empty(), "nothing was touched");
}

/// The leader used to write the version it runs after its last upgrade step of the hook,
/// so a leader that switched itself (a lone unit, or the web unit of `auto` mode) could
/// not go on until another hook woke it: Juju does not notify a unit of its own writes.
#[test]
fn regression_a_leader_that_switched_itself_goes_on_in_the_same_hook() {
    let u = ready_with_v2();
    u.model.set_config(&[("version", json!(V2))]);
    u.ok("config-changed");
    u.ok("update-status");
    let app = u.app_bag();
    assert_eq!(
        (
            app["upgrade-phase"].as_str(),
            app["release-version"].as_str()
        ),
        ("idle", V2)
    );
    assert_eq!(
        u.status(),
        (
            "active".into(),
            format!("Web ready (v{V2}) http://10.1.0.10:8080; Worker ready (v{V2})")
        ),
        "no stale progress once the upgrade finished"
    );
}

/// The leader of two `auto` units, deployed on V1 with PostgreSQL, V2 published; the
/// peer (returned) runs V1 and runs no hook here.
fn auto_leader_with_a_peer_on_v1() -> (Unit, String) {
    let u = Unit::new(0, true);
    let peer = format!("{APP}/1");
    u.set_peer_units(vec![peer.clone()]);
    u.model.set_bag(u.peers, &peer, &[("version", V1)]);
    u.model.set_config(&[("mode", json!("auto"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    u.publish(V2);
    (u, peer)
}

/// The leader's clock (the host's) times the prepare phase and the grants: a peer that
/// never answers is left behind after `PREPARE_TIMEOUT`, and a granted peer that never
/// switches is skipped after `drain-timeout` plus the margin, with a status naming it.
#[test]
fn the_leaders_clock_moves_past_a_silent_peer() {
    let (u, peer) = auto_leader_with_a_peer_on_v1();
    u.action("upgrade", json!({"version": V2}));
    u.ok("update-status");
    u.ok("update-status");
    assert_eq!(
        u.app_bag()["upgrade-phase"],
        "prepare",
        "waiting for {peer}"
    );
    u.fake
        .clock
        .advance(crate::charm::upgrading::PREPARE_TIMEOUT + Duration::from_secs(1));
    // Without the peer: downloading needs nobody's reaction, so the leader downloads,
    // grants the web unit (itself), switches and grants the peer in this one hook.
    u.ok("update-status");
    assert_eq!(pointer(&u), V2, "the web unit (the leader) switched first");
    let app = u.app_bag();
    assert_eq!(app["upgrade-phase"], "complete");
    assert_eq!(
        app["upgrade-grant"],
        format!("{}:{peer}", app["upgrade-gen"])
    );
    u.ok("update-status");
    assert_eq!(u.app_bag()["upgrade-phase"], "complete", "the grant holds");
    let margin = crate::charm::upgrading::GRANT_MARGIN;
    u.fake
        .clock
        .advance(Duration::from_secs(3600) + margin + Duration::from_secs(1));
    u.ok("update-status");
    let app = u.app_bag();
    assert!(app["upgrade-skipped"].ends_with(&peer), "{app:?}");
    u.ok("update-status");
    let app = u.app_bag();
    assert_eq!(
        (
            app["upgrade-phase"].as_str(),
            app["release-version"].as_str()
        ),
        ("idle", V2),
        "finished without {peer}"
    );
    let (kind, message) = u.app_status();
    assert_eq!(kind, "blocked", "{message}");
    assert!(
        message.starts_with("v7.14.3 on 1 of 2 units; concourse-ci/1 did not switch to v7.14.3 in time and was skipped")
            && message.ends_with("; tried again on update-status"),
        "{message}"
    );
}

/// Upgrades a ready `mode=all` leader to V2 and returns the journal of it.
fn upgrade_to_v2(u: &Unit) -> Vec<String> {
    let mark = u.mark();
    u.action("upgrade", json!({"version": V2}));
    two_hooks(u);
    u.journal_since(mark)
}

/// A land signal sent before the worker's beacon runs is lost (`worker/beacon_runner.go`
/// installs the handler): the charm used to send it at once and then wait out
/// drain-timeout and kill the worker's cgroup. Now it waits until the worker registered.
#[test]
fn regression_a_worker_still_starting_is_landed_once_it_registered() {
    let u = ready_with_v2();
    u.fake
        .services
        .set_ready_after("concourse-worker", Duration::from_secs(40));
    // the worker was just (re)started: it registers 40 s from now
    u.fake.services.restart("concourse-worker").unwrap();
    let t0 = u.fake.clock.elapsed();
    let journal = upgrade_to_v2(&u);
    assert_eq!(pointer(&u), V2);
    let landed = journal
        .iter()
        .position(|e| e == "exited concourse-worker: SIGUSR1");
    assert!(landed.is_some(), "{journal:?}");
    assert!(
        !journal
            .iter()
            .any(|e| e.starts_with("kill ") || e.starts_with("escalate")),
        "{journal:?}"
    );
    let took = u.fake.clock.elapsed() - t0;
    assert!(
        took >= Duration::from_secs(40) && took < Duration::from_secs(600),
        "{took:?}"
    );
}

/// A worker that never registers (its TSA is unreachable) cannot land: it is stopped
/// with SIGTERM after the wait, through its unit's stop, so systemd never restarts it.
#[test]
fn regression_a_worker_that_cannot_register_is_stopped_not_signalled() {
    let u = ready_with_v2();
    u.fake.services.set_never_ready("concourse-worker");
    u.fake.services.restart("concourse-worker").unwrap();
    let t0 = u.fake.clock.elapsed();
    let journal = upgrade_to_v2(&u);
    assert_eq!(pointer(&u), V2);
    let stop = first(&journal, &["exited concourse-worker: SIGTERM"]);
    let start = first(&journal, &["start concourse-worker"]);
    assert!(stop < start);
    assert!(
        !journal.iter().any(|e| e.starts_with("kill ")),
        "{journal:?}"
    );
    assert!(u.fake.clock.elapsed() - t0 >= crate::worker::READY_WAIT);
    // the drop-in that made that stop a SIGTERM is gone before the worker started again
    assert!(!u.exists(crate::worker::STOP_OVERRIDE));
    assert!(u.active("concourse-worker"));
}

/// Gives V1 and V2 different schemas (the in-process releases share a release line).
fn distinct_schemas(u: &Unit) {
    let mut st = u.fake.services.state.borrow_mut();
    st.db.supported.insert(V1.into(), 100);
    st.db.supported.insert(V2.into(), 200);
    st.db.schema = Some(100);
}

/// The database is back at V1's schema (100), and no web ever started on a newer one.
fn schema_is_v1s_and_no_web_started_on_a_newer(u: &Unit) {
    let db = &u.fake.services.state.borrow().db;
    assert_eq!(db.schema, Some(100));
    assert!(
        db.newer_schema_starts.is_empty(),
        "{:?}",
        db.newer_schema_starts
    );
}

/// A unit ready to upgrade to V2, whose worker dies on V2, so that web (on V2's newer
/// schema by then) must go back too.
fn web_goes_back_with_its_worker() -> Unit {
    let u = ready_with_v2();
    distinct_schemas(&u);
    let crash = ("concourse-worker".to_string(), V2.to_string());
    u.fake.services.state.borrow_mut().crashes.insert(crash);
    u
}

/// Web does not refuse a database a newer release migrated (atc/db/migration/migration.go):
/// going back without migrating down left it running on a newer schema.
#[test]
fn regression_web_goes_back_only_after_the_database_is_migrated_down() {
    let u = web_goes_back_with_its_worker();
    let journal = upgrade_to_v2(&u);
    assert_eq!(pointer(&u), V1, "back on the previous release");
    schema_is_v1s_and_no_web_started_on_a_newer(&u);
    let down = first(&journal, &["migrate 7.14.3 --migrate-db-to-version=100"]);
    let web_stopped = first(&journal, &["stop concourse-server"]);
    let web_back = last(
        &journal,
        &["start concourse-server", "restart concourse-server"],
    );
    assert!(web_stopped < down && down < web_back, "{journal:?}");
    assert!(u.active("concourse-server"));
    let mine = u.my_bag(u.peers);
    assert!(mine["upgrade-state"].ends_with(":failed"), "{mine:?}");
}

/// When the database cannot be migrated down, web stays on the release it runs, with a
/// status that says why, and the switch counts as failed.
#[test]
fn web_is_held_when_the_database_cannot_be_migrated_down() {
    let u = web_goes_back_with_its_worker();
    u.fake.services.state.borrow_mut().db.migrate_fails = true;
    upgrade_to_v2(&u);
    assert_eq!(pointer(&u), V2, "web stays where the database is");
    let db = &u.fake.services.state.borrow().db;
    assert_eq!(db.schema, Some(200));
    assert!(db.newer_schema_starts.is_empty());
    assert!(u.active("concourse-server"));
    let mine = u.my_bag(u.peers);
    assert!(mine["upgrade-state"].ends_with(":failed"), "{mine:?}");
    assert!(
        mine["upgrade-error"].contains(
            "web stays on v7.14.3: migrating the database down to schema 100 for v7.14.2 failed"
        ),
        "{mine:?}"
    );
}

/// The rollback path: a worker elsewhere failed after web (the leader, `auto`) switched;
/// the rollback grants web first, and web migrates the database down before it goes back.
#[test]
fn regression_a_rollback_migrates_the_database_down_before_web_goes_back() {
    let (u, peer) = auto_leader_with_a_peer_on_v1();
    distinct_schemas(&u);
    u.action("upgrade", json!({"version": V2}));
    u.ok("update-status");
    let gen = u.app_bag()["upgrade-gen"].clone();
    u.model.set_bag(
        u.peers,
        &peer,
        &[("upgrade-ack", &format!("{gen}:prepare"))],
    );
    u.relation_ok(u.peers, "changed", Some(&peer));
    u.ok("update-status");
    u.ok("update-status");
    assert_eq!(pointer(&u), V2, "web switched first");
    assert_eq!(u.fake.services.state.borrow().db.schema, Some(200));
    // the worker fails on V2
    u.model.set_bag(
        u.peers,
        &peer,
        &[
            ("upgrade-state", &format!("{gen}:failed")),
            ("upgrade-error", "v7.14.3 did not start on concourse-ci/1"),
        ],
    );
    let mark = u.mark();
    u.relation_ok(u.peers, "changed", Some(&peer));
    u.ok("update-status");
    assert_eq!(pointer(&u), V1, "web rolled back");
    let app = u.app_bag();
    assert_eq!(app["upgrade-phase"], "failed", "{app:?}");
    assert!(
        app["upgrade-error"].starts_with("upgrade to v7.14.3 failed on concourse-ci/1"),
        "{app:?}"
    );
    schema_is_v1s_and_no_web_started_on_a_newer(&u);
    let journal = u.journal_since(mark);
    let down = first(&journal, &["migrate 7.14.3 --migrate-db-to-version=100"]);
    let start = last(&journal, &["start concourse-server"]);
    assert!(down < start, "{journal:?}");
}
