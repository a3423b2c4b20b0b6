//! The web role on one unit: keys, env file, unit file, ports, the TSA data it publishes,
//! the worker keys it authorizes, and when it starts, restarts or reloads.
//! (The `web-port` part moved from the simulator's
//! `roles::mode_all_web_port_and_plain_postgresql_credentials`.)

use std::time::Duration;

use super::*;

const KEYS: &str = "/var/lib/concourse-web/keys";

/// The leader of an `auto` deployment of one unit, with PostgreSQL: it runs web.
fn web_unit() -> Unit {
    let u = Unit::deployed("auto");
    u.add_postgresql("db-pw");
    u
}

#[test]
fn all_mode_unit_comes_up_and_waits_for_postgresql() {
    let u = Unit::deployed("all");
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for PostgreSQL relation (juju integrate concourse-ci:postgresql postgresql)"
                .into()
        )
    );
    assert!(
        !u.active("concourse-server"),
        "web must wait for its database"
    );
    assert!(!u.exists(WEB_ENV));
    // the ports and the TSA data are there already, for workers to find
    assert_eq!(u.model.opened_ports(), ["2222/tcp", "8080/tcp"]);
    assert_eq!(u.app_version(), Some(V1.to_string()));
}

#[test]
fn web_gets_its_settings_from_its_env_file() {
    let u = web_unit();
    assert_eq!(
        u.status(),
        (
            "active".into(),
            format!("Web ready (v{V1}) http://10.1.0.10:8080")
        )
    );
    let admin_id = u.app_bag()["admin-password-secret"].clone();
    let admin = u.model.secret_content(&admin_id).unwrap()["password"].clone();
    assert_eq!(admin.len(), 24);
    let env = u.env(WEB_ENV);
    for (k, v) in [
        ("CONCOURSE_POSTGRES_HOST", "10.1.0.99"),
        ("CONCOURSE_POSTGRES_PORT", "5432"),
        ("CONCOURSE_POSTGRES_DATABASE", "concourse"),
        ("CONCOURSE_POSTGRES_USER", "relation-7"),
        ("CONCOURSE_POSTGRES_PASSWORD", "db-pw"),
        ("CONCOURSE_EXTERNAL_URL", "http://10.1.0.10:8080"),
        ("CONCOURSE_ADD_LOCAL_USER", &format!("admin:{admin}")),
        ("CONCOURSE_MAIN_TEAM_LOCAL_USER", "admin"),
        ("CONCOURSE_TSA_HOST_KEY", &format!("{KEYS}/tsa_host_key")),
        (
            "CONCOURSE_SESSION_SIGNING_KEY",
            &format!("{KEYS}/session_signing_key"),
        ),
        (
            "CONCOURSE_TSA_AUTHORIZED_KEYS",
            &format!("{KEYS}/authorized_worker_keys"),
        ),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        let m = std::fs::metadata(u.fake.paths.local(p)).unwrap();
        m.permissions().mode() & 0o777
    };
    assert_eq!(mode(WEB_ENV), 0o600, "the env file holds the passwords");
    // root's, readable by the service's group
    assert_eq!(mode(&format!("{KEYS}/tsa_host_key")), 0o640);
    assert_eq!(mode(&format!("{KEYS}/tsa_host_key.pub")), 0o644);
    let unit = u.read(WEB_UNIT_FILE);
    assert!(unit.contains("ExecStart=/var/lib/concourse-ci/current/bin/concourse web"));
    assert!(
        unit.contains("User=concourse") && unit.contains("EnvironmentFile=/etc/concourse/web.env")
    );
    assert!(!unit.contains("AmbientCapabilities"));
    let users = u.fake.provisioner.state.borrow().users.clone();
    assert_eq!(
        users,
        [("concourse".to_string(), "/var/lib/concourse-web".into())]
    );
    // no worker on the web unit of an auto deployment
    assert!(!u.exists(WORKER_UNIT_FILE));
    assert!(u.active("concourse-server"));
}

#[test]
fn web_publishes_its_tsa_for_workers() {
    let u = web_unit();
    let bag = u.my_bag(u.peers);
    let tsa_pub = u.read(&format!("{KEYS}/tsa_host_key.pub"));
    assert_eq!(bag["tsa-host"], "10.1.0.10:2222");
    assert_eq!(bag["web-ip"], "10.1.0.10");
    assert_eq!(bag["tsa-public-key"], tsa_pub.trim());
    assert_eq!(bag["version"], V1);
    assert_eq!(u.app_bag()["web-unit"], "concourse-ci/0");
    // and on `tsa` to worker applications
    let tsa = u.model.relate("tsa", "workers", &["workers/0"]);
    u.relation_ok(tsa, "joined", Some("workers/0"));
    let published = u.my_bag(tsa);
    assert_eq!(published["tsa-host"], "10.1.0.10:2222");
    assert_eq!(published["tsa-public-key"], tsa_pub.trim());
}

#[test]
fn ipv6_unit_address_is_bracketed_in_the_external_url_and_tsa_host() {
    let u = Unit::new(0, true);
    u.model.state_mut().address = "fd42:7e6e::10".into();
    u.model.set_config(&[("mode", json!("auto"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "http://[fd42:7e6e::10]:8080"
    );
    let bag = u.my_bag(u.peers);
    assert_eq!(bag["tsa-host"], "[fd42:7e6e::10]:2222");
    assert_eq!(
        u.status(),
        (
            "active".into(),
            format!("Web ready (v{V1}) http://[fd42:7e6e::10]:8080")
        )
    );
}

/// Runs `sh -c <script>` as `nobody` (uid and gid 65534); whether it succeeded.
fn as_nobody(script: &str) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .args(["-c", script])
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap()
        .success()
}

/// Needs root (real chown to another user), as the simulator tier does.
#[test]
fn web_keys_dir_is_not_given_to_the_service_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let u = Unit::new(0, true);
    u.fake.provisioner.state.borrow_mut().service_user = Some((65534, 65534));
    // let the service user reach the keys, as on a machine
    std::fs::set_permissions(u._root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    u.model.set_config(&[("mode", json!("auto"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    let keys = u.fake.paths.local(KEYS);
    let md = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap();
    for dir in [keys.clone(), u.fake.paths.local("/var/lib/concourse-web")] {
        let m = md(&dir);
        assert_eq!(m.uid(), 0, "{} belongs to root", dir.display());
        assert_eq!(
            m.mode() & 0o022,
            0,
            "{} is writable by root only",
            dir.display()
        );
    }
    for (name, mode) in [
        ("tsa_host_key", 0o640),
        ("session_signing_key", 0o640),
        ("tsa_host_key.pub", 0o644),
        ("authorized_worker_keys", 0o644),
    ] {
        let m = md(&keys.join(name));
        assert_eq!((m.uid(), m.gid()), (0, 65534), "{name}");
        assert_eq!(m.mode() & 0o7777, mode, "{name}");
    }
    // The service user reads its keys, and cannot plant a link where root writes.
    let k = keys.display();
    assert!(as_nobody(&format!(
        "cat {k}/tsa_host_key {k}/session_signing_key >/dev/null"
    )));
    assert!(!as_nobody(&format!(
        "ln -s /etc/passwd {k}/.authorized_worker_keys.tmp-planted"
    )));
    assert!(!as_nobody(&format!("mv {k}/authorized_worker_keys {k}/x")));
    // generate-key wrote into a private directory of root's, not into a directory the
    // service user could write.
    let dirs = u.fake.provisioner.state.borrow().key_dirs.clone();
    assert_eq!(dirs.len(), 2);
    for (dir, uid, mode) in dirs {
        assert_eq!((uid, mode), (0, 0o700), "{}", dir.display());
    }
    // A keys directory an older charm gave to the service user, where that user planted
    // a link at a key's name: taken back, and the link's target is left alone.
    let victim = u._root.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&keys, Some(65534), Some(65534)).unwrap();
    let planted = keys.join("session_signing_key");
    std::fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    std::os::unix::fs::lchown(&planted, Some(65534), Some(65534)).unwrap();
    u.ok("config-changed");
    let v = md(&victim);
    assert_eq!((v.uid(), v.gid(), v.mode() & 0o777), (0, 0, 0o600));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(md(&keys).uid(), 0);
    assert!(md(&planted).is_file(), "the link was replaced by a key");
}

#[test]
fn keys_are_generated_once() {
    let u = web_unit();
    let generated = u.fake.provisioner.state.borrow().keys.len();
    assert_eq!(generated, 2, "TSA host key and session signing key");
    let tsa_pub = u.read(&format!("{KEYS}/tsa_host_key.pub"));
    for h in ["update-status", "config-changed", "upgrade-charm"] {
        u.ok(h);
    }
    assert_eq!(u.fake.provisioner.state.borrow().keys.len(), generated);
    assert_eq!(u.read(&format!("{KEYS}/tsa_host_key.pub")), tsa_pub);
}

/// It used to fail the hook, retried forever although every run fails the same way.
#[test]
fn a_key_generator_that_fails_blocks_naming_the_fix_and_starts_nothing() {
    let u = Unit::new(0, true);
    u.model.set_config(&[("mode", json!("auto"))]);
    u.fake.provisioner.state.borrow_mut().fail_keygen = true;
    let mark = u.mark();
    u.deploy();
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(!u.app_bag().contains_key("web-keys-secret"));
    assert!(
        message.starts_with("cannot generate /var/lib/concourse-ci/tsa_host_key: ")
            && message.contains("generate-key failed")
            && message.ends_with("; check that the release's concourse runs on this machine"),
        "{message}"
    );
    assert!(u.touched(mark, "concourse-server").is_empty());
    u.fake.provisioner.state.borrow_mut().fail_keygen = false;
    u.ok("config-changed");
    assert!(u.exists(&format!("{KEYS}/tsa_host_key.pub")));
}

/// An invalid `.pub` file failed every hook; the keys now come from the shared secret,
/// so a damaged local copy is written again, and a secret without valid keys is replaced
/// by the leader.
#[test]
fn damaged_web_keys_are_written_again_from_the_shared_secret() {
    let u = web_unit();
    let pubfile = format!("{KEYS}/tsa_host_key.pub");
    let good = u.read(&pubfile);
    std::fs::write(u.fake.paths.local(&pubfile), "not a key\n").unwrap();
    u.ok("update-status");
    assert_eq!(u.read(&pubfile), good);
    assert_eq!(u.status().0, "active");
    let id = u.model.add_own_secret(&[("tsa-public-key", "not a key")]);
    u.model.set_bag(u.peers, APP, &[("web-keys-secret", &id)]);
    // a changed databag comes with its relation hook (a settled update-status does not
    // read the model)
    u.relation_ok(u.peers, "changed", None);
    let replaced = u.app_bag()["web-keys-secret"].clone();
    assert_ne!(replaced, id);
    assert_eq!(u.status().0, "active");
}

#[test]
fn nothing_restarts_when_nothing_changed() {
    let u = web_unit();
    let mark = u.mark();
    for h in [
        "update-status",
        "config-changed",
        "upgrade-charm",
        "leader-elected",
    ] {
        u.ok(h);
    }
    u.model
        .set_config(&[("upgrade-max-unavailable", json!(2)), ("tag", json!("gpu"))]);
    u.ok("config-changed");
    assert!(
        u.journal_since(mark).is_empty(),
        "{:?}",
        u.journal_since(mark)
    );
}

#[test]
fn log_level_restarts_web() {
    let u = web_unit();
    let pid = u.fake.services.service("concourse-server").pid;
    let mark = u.mark();
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_LOG_LEVEL"], "debug");
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["restart concourse-server"]
    );
    assert_ne!(u.fake.services.service("concourse-server").pid, pid);
}

#[test]
fn a_new_worker_key_is_applied_with_a_reload() {
    let u = web_unit();
    let pid = u.fake.services.service("concourse-server").pid;
    let key = "ssh-ed25519 AAAAC3NzaWorkerOne concourse-ci-1";
    u.set_peer_units(vec![format!("{APP}/1")]);
    u.model
        .set_bag(u.peers, &format!("{APP}/1"), &[("worker-public-key", key)]);
    let mark = u.mark();
    u.relation_ok(u.peers, "changed", Some(&format!("{APP}/1")));
    assert_eq!(
        u.read(&format!("{KEYS}/authorized_worker_keys")),
        format!("{key}\n")
    );
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["reload concourse-server"]
    );
    assert_eq!(u.fake.services.service("concourse-server").pid, pid);
    // a key that is not a public key is never authorized
    u.model.set_bag(
        u.peers,
        &format!("{APP}/1"),
        &[("worker-public-key", "ssh-rsa AAAA\ncommand=\"sh\" x")],
    );
    u.relation_ok(u.peers, "changed", Some(&format!("{APP}/1")));
    assert_eq!(u.read(&format!("{KEYS}/authorized_worker_keys")), "");
}

#[test]
fn web_port_moves_the_port_and_restarts_web_only() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let mark = u.mark();
    u.model.set_config(&[("web-port", json!(80))]);
    u.ok("config-changed");
    assert_eq!(u.model.opened_ports(), ["80/tcp", "2222/tcp"]);
    assert!(u
        .read(WEB_UNIT_FILE)
        .contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_BIND_PORT"], "80");
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "http://10.1.0.10:80"
    );
    assert!(u
        .touched(mark, "concourse-server")
        .contains(&"restart concourse-server".into()));
    assert!(u.touched(mark, "concourse-worker").is_empty());
    assert_eq!(
        u.status().1,
        format!("Web ready (v{V1}) http://10.1.0.10:80; Worker ready (v{V1})")
    );
    u.model.set_config(&[("web-port", json!(8443))]);
    u.ok("config-changed");
    assert!(!u.read(WEB_UNIT_FILE).contains("AmbientCapabilities"));
    assert_eq!(u.model.opened_ports(), ["2222/tcp", "8443/tcp"]);
}

#[test]
fn a_failed_hook_commits_nothing_and_the_retry_converges() {
    let u = Unit::deployed("auto");
    // the last call of the hook fails, after the charm wrote its request
    u.model.state_mut().failing.insert(
        "status-set".into(),
        (1, "ERROR connection is shut down".into()),
    );
    let rel = u
        .model
        .relate("postgresql", "postgresql", &["postgresql/0"]);
    let err = u.relation_hook(rel, "created", None).unwrap_err();
    assert!(crate::error_chain(&err).contains("status-set"));
    assert!(u
        .model
        .state()
        .calls
        .iter()
        .any(|c| c.starts_with("relation-set -r postgresql:")));
    assert!(
        u.model.bag(rel, APP).is_empty(),
        "the request was rolled back"
    );
    u.model.state_mut().failing.clear();
    u.relation_ok(rel, "created", None);
    assert_eq!(u.model.bag(rel, APP)["database"], "concourse");
}

/// Joins a peer unit with a worker key and runs web's relation-changed for it.
fn a_worker_key_arrives(u: &Unit, n: u32) {
    let peer = format!("{APP}/{n}");
    let key = format!("ssh-ed25519 AAAAC3NzaWorker{n} concourse-ci-{n}");
    u.add_peer_unit(&peer);
    u.model
        .set_bag(u.peers, &peer, &[("worker-public-key", key.as_str())]);
    u.relation_ok(u.peers, "changed", Some(&peer));
}

/// Web dies on SIGHUP until its TSA started (after the database is open and migrated,
/// `tsa/tsacmd/command.go`), and systemd does not restart it (SIGHUP is a clean death).
/// The charm used to reload web as soon as a worker key changed.
#[test]
fn regression_a_reload_waits_until_the_tsa_listens() {
    let u = web_unit();
    // web restarts (log level) and takes 5 s to open the database before its TSA listens
    u.fake
        .services
        .set_ready_after("concourse-server", Duration::from_secs(5));
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    let pid = u.fake.services.service("concourse-server").pid;
    assert!(!u.fake.services.ready("concourse-server"));
    let (mark, t0) = (u.mark(), u.fake.clock.elapsed());
    a_worker_key_arrives(&u, 1);
    assert!(u.active("concourse-server"), "{:?}", u.journal_since(mark));
    assert_eq!(u.fake.services.service("concourse-server").pid, pid);
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["reload concourse-server"]
    );
    assert!(u.fake.clock.elapsed() - t0 >= Duration::from_secs(5));
}

/// A web that is not listening within the hook is left alone; a later hook reloads it
/// once it listens (the loaded keys are recorded per main process).
#[test]
fn a_reload_missed_while_web_starts_happens_in_a_later_hook() {
    let u = web_unit();
    u.fake
        .services
        .set_ready_after("concourse-server", Duration::from_secs(600));
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    let mark = u.mark();
    a_worker_key_arrives(&u, 1);
    assert!(u.touched(mark, "concourse-server").is_empty());
    assert!(u.active("concourse-server"));
    u.fake.clock.advance(Duration::from_secs(600));
    u.ok("update-status");
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["reload concourse-server"]
    );
    let mark = u.mark();
    u.ok("update-status");
    assert!(u.journal_since(mark).is_empty(), "reloaded once");
}
