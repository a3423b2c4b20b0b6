//! When services start, restart, reload or only reload systemd: level-triggered, from
//! what each service was started with against what should run now, so a hook that failed
//! half-way is finished by its retry (Juju retries failed hooks; nothing looks changed
//! to the retry).

use super::*;

const KEYS: &str = "/var/lib/concourse-web/keys";
const WEB: &str = "concourse-server";
const WORKER: &str = "concourse-worker";

/// The release a service's process runs (from the binary it executes), if it runs.
fn runs(u: &Unit, service: &str) -> Option<String> {
    let exe = u.fake.services.service(service).exe?;
    let rest = exe.to_str()?.split("/releases/").nth(1)?;
    Some(rest.split('/').next()?.to_string())
}

/// What a service's process read from its env file when it started.
fn started_env(u: &Unit, service: &str) -> String {
    u.fake
        .services
        .service(service)
        .environment
        .unwrap_or_default()
}

fn fail(u: &Unit, call: &str) {
    u.fake
        .services
        .state
        .borrow_mut()
        .failing
        .insert(call.into());
}

fn heal(u: &Unit) {
    u.fake.services.state.borrow_mut().failing.clear();
}

/// A ready `mode=all` leader alone, with PostgreSQL.
fn all_in_one() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert_eq!(runs(&u, WEB).as_deref(), Some(V1));
    assert_eq!(runs(&u, WORKER).as_deref(), Some(V1));
    u
}

/// A ready leader whose switch hook to V2 failed at `network-get`, after the pointer
/// moved and before the roles were applied.
fn switch_failed_after_the_pointer_moved() -> Unit {
    let u = all_in_one();
    u.publish(V2);
    u.action("upgrade", json!({"version": V2}));
    u.ok("update-status");
    u.model.state_mut().failing.insert(
        "network-get".into(),
        (1, "ERROR connection is shut down".into()),
    );
    assert!(u.hook("update-status").is_err());
    assert!(pointer_names(&u, V2), "the pointer moved");
    u
}

/// Whether the unit's pointer names the release of `version`.
fn pointer_names(u: &Unit, version: &str) -> bool {
    std::fs::read_link(u.fake.paths.local("/var/lib/concourse-ci/current"))
        .is_ok_and(|t| t.ends_with(format!("releases/{version}/concourse")))
}

/// The switch hook fails after the pointer moved (at `network-get`, before the roles
/// were applied): nothing looked changed to the retry, so web kept running the old
/// release while the unit reported the new one, and the switch was never verified.
#[test]
fn regression_a_switch_that_failed_after_the_pointer_moved_restarts_web_on_the_retry() {
    let u = switch_failed_after_the_pointer_moved();
    assert_eq!(
        runs(&u, WEB).as_deref(),
        Some(V1),
        "web was not restarted yet"
    );
    assert!(!u.active(WORKER), "the worker landed before the switch");
    u.model.state_mut().failing.clear();
    u.ok("update-status");
    assert_eq!(
        runs(&u, WEB).as_deref(),
        Some(V2),
        "web runs the new release"
    );
    assert_eq!(runs(&u, WORKER).as_deref(), Some(V2));
    let mine = u.my_bag(u.peers);
    assert_eq!(mine["version"], V2);
    assert!(
        mine["upgrade-state"].ends_with(":switched"),
        "the retried switch was verified: {mine:?}"
    );
    u.ok("update-status");
    assert_eq!(u.app_bag()["upgrade-phase"], "idle");
    assert_eq!(runs(&u, WEB).as_deref(), Some(V2));
}

/// A switch hook verifies its release once; a retried one (the pointer already moved,
/// the target not yet reported) verifies it again before switching. Here a file changed
/// size on the volume between the two hooks, which only the MANIFEST check sees.
#[test]
fn a_retried_switch_verifies_the_release_again() {
    let u = switch_failed_after_the_pointer_moved();
    u.model.state_mut().failing.clear();
    let asset = u
        .volume
        .path()
        .join(format!("releases/{V2}/concourse/fly-assets/README"));
    let mut bytes = std::fs::read(&asset).unwrap();
    bytes.extend_from_slice(b"planted");
    std::fs::write(&asset, bytes).unwrap();
    u.ok("update-status");
    let mine = u.my_bag(u.peers);
    assert!(
        !mine["upgrade-state"].ends_with(":switched"),
        "a changed release was reported switched: {mine:?}"
    );
    let error = &mine["upgrade-error"];
    assert!(
        error.starts_with(&format!("v{V2} does not verify on concourse-ci/0: "))
            && error.contains("fly-assets/README"),
        "{error}"
    );
    assert!(pointer_names(&u, V1), "back on the release it ran");
    assert_eq!(
        runs(&u, WEB).as_deref(),
        Some(V1),
        "web stays on the release it ran"
    );
}

/// A restart that failed (a systemd job failure) left the new env file written: the
/// retry saw no change and web kept its old settings.
#[test]
fn regression_a_failed_restart_is_retried() {
    let u = all_in_one();
    fail(&u, "restart concourse-server");
    u.model.set_config(&[("log-level", json!("debug"))]);
    assert!(u.hook("config-changed").is_err());
    assert!(started_env(&u, WEB).contains("CONCOURSE_LOG_LEVEL=info"));
    heal(&u);
    let mark = u.mark();
    u.ok("config-changed");
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
    assert!(started_env(&u, WEB).contains("CONCOURSE_LOG_LEVEL=debug"));
    // and once it runs what it should, nothing more happens
    u.hook_leaves_alone("update-status", WEB);
}

/// A reload (SIGHUP) for a new worker key that failed was never tried again: web never
/// authorized the worker.
#[test]
fn regression_a_failed_reload_is_retried() {
    let u = all_in_one();
    let peer = format!("{APP}/1");
    u.set_peer_units(vec![peer.clone()]);
    let key = "ssh-ed25519 AAAAC3NzaWorkerOne concourse-ci-1";
    u.model
        .set_bag(u.peers, &peer, &[("worker-public-key", key)]);
    fail(&u, "reload concourse-server");
    assert!(u.relation_hook(u.peers, "changed", Some(&peer)).is_err());
    assert!(u
        .read(&format!("{KEYS}/authorized_worker_keys"))
        .contains(key));
    heal(&u);
    let mark = u.mark();
    let pid = u.fake.services.service(WEB).pid;
    u.relation_ok(u.peers, "changed", Some(&peer));
    assert_eq!(u.touched(mark, WEB), ["reload concourse-server"]);
    assert_eq!(
        u.fake.services.service(WEB).pid,
        pid,
        "a reload, not a restart"
    );
    u.hook_leaves_alone("update-status", WEB);
}

/// A unit file written in a hook whose daemon-reload failed stayed unloaded
/// (`NeedDaemonReload=yes`): the retry found the file unchanged, did not reload systemd,
/// and did not restart web for its new setting and env.
#[test]
fn regression_a_unit_file_systemd_never_loaded_is_loaded_and_applied() {
    let u = all_in_one();
    fail(&u, "daemon-reload");
    u.model.set_config(&[("web-port", json!(80))]);
    assert!(u.hook("config-changed").is_err());
    heal(&u);
    u.ok("config-changed");
    let web = u.fake.services.service(WEB);
    assert_eq!(web.loaded.as_deref(), Some(u.read(WEB_UNIT_FILE).as_str()));
    assert!(web
        .loaded
        .unwrap_or_default()
        .contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert!(started_env(&u, WEB).contains("CONCOURSE_BIND_PORT=80"));
}

/// Settings systemd reads only when it stops a service (the worker's `TimeoutStopSec=`
/// from drain-timeout) need a daemon-reload, never a restart (which would land the
/// worker): also when the hook that wrote them failed before the daemon-reload.
#[test]
fn regression_a_stop_setting_never_loaded_is_loaded_without_a_restart() {
    let u = all_in_one();
    let pid = u.fake.services.service(WORKER).pid;
    fail(&u, "daemon-reload");
    u.model.set_config(&[("drain-timeout", json!("30m"))]);
    assert!(u.hook("config-changed").is_err());
    heal(&u);
    let mark = u.mark();
    u.ok("config-changed");
    assert_eq!(u.journal_since(mark), ["daemon-reload"]);
    let worker = u.fake.services.service(WORKER);
    assert_eq!(worker.pid, pid, "the worker kept running");
    assert!(worker
        .loaded
        .unwrap_or_default()
        .contains("TimeoutStopSec=1800"));
}

/// A service that should run and does not is started, whatever stopped it.
#[test]
fn a_service_that_should_run_is_started() {
    let u = all_in_one();
    use crate::host::ServiceManager;
    u.fake.services.stop(WEB).unwrap();
    let mark = u.mark();
    u.ok("update-status");
    assert_eq!(u.touched(mark, WEB), ["start concourse-server"]);
    assert_eq!(runs(&u, WEB).as_deref(), Some(V1));
}

/// A (re)start interrupted before it was recorded (the record is left empty) is redone:
/// what the running service was started with is unknown.
#[test]
fn a_start_that_was_not_recorded_is_redone() {
    let u = all_in_one();
    let record = u.fake.paths.local(crate::service::started_record_path(WEB));
    std::fs::write(&record, "").unwrap();
    let mark = u.mark();
    u.ok("update-status");
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
    assert!(!std::fs::read_to_string(&record).unwrap().is_empty());
    assert!(u.touched(mark, WORKER).is_empty());
}

/// A unit set up by a charm that recorded nothing (a refresh from an older revision)
/// adopts its running services as they are instead of restarting (and landing) them all
/// at once.
#[test]
fn running_services_of_an_older_charm_are_adopted() {
    let u = all_in_one();
    let dir = u.fake.paths.local(crate::service::STARTED_DIR);
    std::fs::remove_dir_all(&dir).unwrap();
    let mark = u.mark();
    u.ok("upgrade-charm");
    assert!(
        u.journal_since(mark).is_empty(),
        "{:?}",
        u.journal_since(mark)
    );
    assert!(u
        .fake
        .paths
        .local(crate::service::started_record_path(WORKER))
        .exists());
    // from then on it is level-triggered
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    assert!(started_env(&u, WORKER).contains("CONCOURSE_LOG_LEVEL=debug"));
}

/// The record of what a service was started with holds digests only: the env file it
/// describes holds the passwords.
#[test]
fn the_record_holds_no_secret() {
    let u = all_in_one();
    let text = u.read(crate::service::started_record_path(WEB).to_str().unwrap());
    assert!(!text.contains("db-pw"), "{text}");
    let admin_id = u.app_bag()["admin-password-secret"].clone();
    let admin = u.model.secret_content(&admin_id).unwrap()["password"].clone();
    assert!(!text.contains(&admin), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let path = u.fake.paths.local(crate::service::started_record_path(WEB));
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
