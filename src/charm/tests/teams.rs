//! Several web units (issue 14): the web keys every web unit shares through the app
//! secret the leader creates, each web's peer address, and workers that know every TSA.

use super::*;

const KEYS: &str = "/var/lib/concourse-web/keys";

#[test]
fn the_leader_shares_the_web_keys_through_an_app_secret() {
    let u = Unit::deployed("web");
    u.add_postgresql("db-pw");
    let id = u.app_bag()["web-keys-secret"].clone();
    let content = u.model.secret_content(&id).unwrap();
    assert_eq!(
        u.read(&format!("{KEYS}/tsa_host_key")),
        content["tsa-host-key"]
    );
    assert_eq!(
        u.read(&format!("{KEYS}/session_signing_key")),
        content["session-signing-key"]
    );
    assert_eq!(
        u.read(&format!("{KEYS}/tsa_host_key.pub")).trim(),
        content["tsa-public-key"]
    );
    assert_eq!(
        u.my_bag(u.peers)["tsa-public-key"],
        content["tsa-public-key"]
    );
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_PEER_ADDRESS"], "10.1.0.10");
    // generated in a private scratch directory, never in the web keys directory
    let st = u.fake.provisioner.state.borrow();
    assert_eq!(st.keys.len(), 2);
    assert!(st
        .keys
        .iter()
        .all(|(p, _)| p.starts_with(u.fake.paths.local("/var/lib/concourse-ci"))));
    drop(st);
    // once: later hooks read the secret
    for h in ["update-status", "config-changed", "leader-elected"] {
        u.ok(h);
    }
    assert_eq!(u.fake.provisioner.state.borrow().keys.len(), 2);
    assert_eq!(u.app_bag()["web-keys-secret"], id);
}

#[test]
fn a_non_leader_web_waits_for_the_shared_keys_then_uses_them() {
    let u = Unit::new(1, false);
    u.model.set_config(&[("mode", json!("web"))]);
    let admin = u.model.add_own_secret(&[("password", "admin-pw")]);
    u.model
        .set_bag(u.peers, APP, &[("admin-password-secret", &admin)]);
    u.deploy();
    u.add_postgresql("db-pw");
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for the leader to share the web keys".into()
        )
    );
    assert!(!u.active("concourse-server"));
    assert!(u.fake.provisioner.state.borrow().keys.is_empty());
    u.share_web_keys();
    u.relation_ok(u.peers, "changed", Some(APP));
    assert_eq!(u.status().0, "active", "{:?}", u.status());
    assert_eq!(u.read(&format!("{KEYS}/tsa_host_key")), SHARED_TSA_KEY);
    assert_eq!(
        u.read(&format!("{KEYS}/session_signing_key")),
        SHARED_SESSION_KEY
    );
    assert_eq!(u.my_bag(u.peers)["tsa-public-key"], SHARED_TSA_PUB);
    assert!(u.fake.provisioner.state.borrow().keys.is_empty());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(u.fake.paths.local(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&format!("{KEYS}/tsa_host_key")), 0o640);
    assert_eq!(mode(&format!("{KEYS}/session_signing_key")), 0o640);
}

/// A web unit of an older charm generated its own keys; when its unit becomes the leader
/// that shares them, it keeps them, so the workers that trust it keep registering.
#[test]
fn the_leader_seeds_the_shared_keys_with_the_keys_its_web_already_has() {
    let u = Unit::new(0, true);
    u.model.set_config(&[("mode", json!("auto"))]);
    for (name, body) in [
        ("tsa_host_key", "-----BEGIN RSA PRIVATE KEY-----\nold-tsa\n"),
        ("tsa_host_key.pub", "ssh-rsa AAAAB3NzaOldTsa old\n"),
        (
            "session_signing_key",
            "-----BEGIN RSA PRIVATE KEY-----\nold-session\n",
        ),
    ] {
        let p = u.fake.paths.local(format!("{KEYS}/{name}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    u.deploy();
    let id = u.app_bag()["web-keys-secret"].clone();
    let content = u.model.secret_content(&id).unwrap();
    assert_eq!(content["tsa-public-key"], "ssh-rsa AAAAB3NzaOldTsa old");
    assert!(content["session-signing-key"].contains("old-session"));
    assert!(
        u.fake.provisioner.state.borrow().keys.len() <= 1,
        "only the worker key"
    );
}

/// In `auto` mode the web unit need not be the leader: a leader that runs a worker
/// shares the web keys too.
#[test]
fn a_worker_leader_shares_the_web_keys_for_the_web_unit() {
    let u = Unit::new(0, true);
    u.model.set_config(&[("mode", json!("auto"))]);
    u.model
        .set_bag(u.peers, APP, &[("web-unit", "concourse-ci/1")]);
    u.model
        .state_mut()
        .relations
        .get_mut(&u.peers)
        .unwrap()
        .units = vec![format!("{APP}/1")];
    u.deploy();
    let id = u.app_bag()["web-keys-secret"].clone();
    assert!(u.model.secret_content(&id).is_some());
    assert!(!u.exists(&format!("{KEYS}/tsa_host_key")), "no web here");
}

/// `mode=worker` related to a web application of three units: the worker lists every TSA
/// and trusts their (shared) key once.
#[test]
fn a_worker_registers_with_every_web_unit() {
    let u = Unit::deployed("worker");
    let webs = ["web/0", "web/1", "web/2"];
    let flight = u.model.relate("flight", "web", &webs);
    for (i, w) in webs.iter().enumerate() {
        let host = format!("10.1.0.2{i}:2222");
        u.model.set_bag(
            flight,
            w,
            &[
                ("tsa-host", host.as_str()),
                ("tsa-public-key", SHARED_TSA_PUB),
            ],
        );
    }
    u.relation_ok(flight, "joined", Some("web/0"));
    u.relation_ok(flight, "changed", Some("web/2"));
    assert_eq!(u.status().0, "active");
    assert_eq!(
        u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"],
        "10.1.0.20:2222,10.1.0.21:2222,10.1.0.22:2222"
    );
    assert_eq!(
        u.read("/var/lib/concourse-worker/keys/tsa_host_key.pub"),
        format!("{SHARED_TSA_PUB}\n")
    );
    // a web unit with a value that would split the list is left out
    u.model
        .set_bag(flight, "web/1", &[("tsa-host", "10.1.0.21:2222,evil:1")]);
    u.relation_ok(flight, "changed", Some("web/1"));
    assert_eq!(
        u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"],
        "10.1.0.20:2222,10.1.0.22:2222"
    );
}

/// `mode=all`: every unit runs web, so each worker lists its own TSA and its peers'.
#[test]
fn all_mode_workers_list_every_units_tsa() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let key = u.my_bag(u.peers)["tsa-public-key"].clone();
    u.model
        .state_mut()
        .relations
        .get_mut(&u.peers)
        .unwrap()
        .units = vec![format!("{APP}/1"), format!("{APP}/2")];
    for (n, addr) in [(1, "10.1.0.11"), (2, "10.1.0.12")] {
        u.model.set_bag(
            u.peers,
            &format!("{APP}/{n}"),
            &[
                ("tsa-host", format!("{addr}:2222").as_str()),
                ("tsa-public-key", key.as_str()),
            ],
        );
    }
    u.relation_ok(u.peers, "changed", Some("concourse-ci/2"));
    assert_eq!(
        u.env(WORKER_ENV)["CONCOURSE_TSA_HOST"],
        "10.1.0.10:2222,10.1.0.11:2222,10.1.0.12:2222"
    );
}
