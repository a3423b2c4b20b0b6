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
    u.set_peer_units(vec![format!("{APP}/1")]);
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
    u.set_peer_units(vec![format!("{APP}/1"), format!("{APP}/2")]);
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

/// A connector's client secret comes from the Juju secret its option names; a new
/// revision reaches web with one restart, and an unreadable secret blocks naming the fix.
#[test]
fn a_connector_secret_reaches_web_and_its_rotation_restarts_web_once() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let id = u
        .model
        .add_foreign_secret(&[("client-secret", "gh-secret-1")]);
    u.model.set_config(&[
        ("github-client-id", json!("gh-id")),
        ("github-client-secret", json!(id)),
        ("main-team-github-org", json!("acme")),
    ]);
    u.ok("config-changed");
    assert_eq!(u.status().0, "active", "{:?}", u.status());
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_GITHUB_CLIENT_ID"], "gh-id");
    assert_eq!(env["CONCOURSE_GITHUB_CLIENT_SECRET"], "gh-secret-1");
    assert_eq!(env["CONCOURSE_MAIN_TEAM_GITHUB_ORG"], "acme");
    assert_eq!(env["CONCOURSE_MAIN_TEAM_LOCAL_USER"], "admin");
    let mark = u.mark();
    u.model
        .rotate_secret(&id, &[("client-secret", "gh-secret-2")]);
    u.ok("secret-changed");
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_GITHUB_CLIENT_SECRET"],
        "gh-secret-2"
    );
    assert_eq!(
        u.touched(mark, "concourse-server").len(),
        1,
        "{:?}",
        u.journal_since(mark)
    );
    assert!(u.touched(mark, "concourse-worker").is_empty());
    assert!(!u.logs.lines().iter().any(|l| l.contains("gh-secret")));
    // a key missing from the secret: blocked, web keeps what it runs
    u.model.rotate_secret(&id, &[("token", "x")]);
    u.ok("secret-changed");
    assert_eq!(
        u.status(),
        (
            "blocked".into(),
            format!("the github-client-secret secret {id} has no key client-secret; juju update-secret <secret> client-secret=<value>")
        )
    );
    assert!(u.active("concourse-server"));
}

#[test]
fn half_a_connector_is_blocked_naming_the_option() {
    let u = Unit::deployed("all");
    u.model.set_config(&[("oidc-client-id", json!("x"))]);
    u.ok("config-changed");
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with(
            "invalid oidc-client-id: the oidc connector also needs oidc-issuer, oidc-client-secret"
        ),
        "{message}"
    );
}

/// Encryption at rest: the generated key by default, the operator's key and the old key
/// for a rotation from user secrets.
#[test]
fn encryption_keys_come_from_secrets() {
    let u = Unit::deployed("web");
    u.add_postgresql("db-pw");
    let shared = u.app_bag()["web-keys-secret"].clone();
    let generated = u.model.secret_content(&shared).unwrap()["encryption-key"].clone();
    assert_eq!(generated.len(), 32);
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_ENCRYPTION_KEY"], generated);
    let new = u
        .model
        .add_foreign_secret(&[("key", "fedcba9876543210fedcba9876543210")]);
    let old = u.model.add_foreign_secret(&[("key", generated.as_str())]);
    u.model.set_config(&[
        ("encryption-key", json!(new)),
        ("old-encryption-key", json!(old)),
    ]);
    u.ok("config-changed");
    let env = u.env(WEB_ENV);
    assert_eq!(
        env["CONCOURSE_ENCRYPTION_KEY"],
        "fedcba9876543210fedcba9876543210"
    );
    assert_eq!(env["CONCOURSE_OLD_ENCRYPTION_KEY"], generated);
    let short = u.model.add_foreign_secret(&[("key", "too-short")]);
    u.model.set_config(&[("encryption-key", json!(short))]);
    u.ok("config-changed");
    assert_eq!(u.status().0, "blocked");
    assert!(u.status().1.contains("16, 24 or 32"), "{:?}", u.status());
}

/// PostgreSQL with TLS: the CA from `secret-tls` is written root's and readable, web
/// verifies the server; endpoints withdrawn for a moment do not stop web.
#[test]
fn postgresql_tls_and_endpoints_withdrawn_for_a_moment() {
    let u = Unit::deployed("web");
    let rel = u.add_postgresql("db-pw");
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBpgCA\n-----END CERTIFICATE-----";
    let tls = u
        .model
        .add_foreign_secret(&[("tls", "True"), ("tls-ca", ca)]);
    u.model
        .set_bag(rel, "postgresql", &[("secret-tls", tls.as_str())]);
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_POSTGRES_SSLMODE"], "verify-full");
    let path = "/etc/concourse/ca/postgresql-ca.pem";
    assert_eq!(env["CONCOURSE_POSTGRES_CA_CERT"], path);
    assert_eq!(u.read(path).trim(), ca);
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(u.fake.paths.local(path)).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    // no primary for a moment: web keeps running
    let mark = u.mark();
    u.model.set_bag(rel, "postgresql", &[("endpoints", "")]);
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    assert_eq!(u.status().0, "waiting");
    assert!(u.active("concourse-server"));
    assert!(u.touched(mark, "concourse-server").is_empty());
    u.model
        .set_bag(rel, "postgresql", &[("endpoints", "10.1.0.99:5432")]);
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    assert_eq!(u.status().0, "active");
}

#[test]
fn the_escape_hatch_accepts_a_real_variable_and_blocks_a_typo() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u.model.set_config(&[
        ("extra-web-env", json!("CONCOURSE_ENABLE_ACROSS_STEP=true")),
        (
            "extra-worker-env",
            json!("CONCOURSE_BAGGAGECLAIM_DRIVER=overlay"),
        ),
    ]);
    u.ok("config-changed");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_ENABLE_ACROSS_STEP"], "true");
    assert_eq!(
        u.env(WORKER_ENV)["CONCOURSE_BAGGAGECLAIM_DRIVER"],
        "overlay"
    );
    u.model
        .set_config(&[("extra-web-env", json!("CONCOURSE_ENABLE_ACROSS_STEPS=true"))]);
    u.ok("config-changed");
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.contains("concourse web defines no CONCOURSE_ENABLE_ACROSS_STEPS"),
        "{message}"
    );
}

/// `vault-kv` as the Vault charm speaks it: the leader asks for the mount, the unit sends
/// a stable nonce and its subnets, and once Vault answered for that nonce web logs in
/// with the unit's AppRole through the CA Vault published.
#[test]
fn vault_kv_gives_web_approle_credentials() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let rel = u.model.relate("vault-kv", "vault", &["vault/0"]);
    u.relation_ok(rel, "joined", Some("vault/0"));
    assert_eq!(u.model.bag(rel, APP)["mount_suffix"], "concourse");
    let mine = u.my_bag(rel);
    let nonce = mine["nonce"].clone();
    assert_eq!(nonce.len(), 32);
    assert!(!mine["egress_subnet"].is_empty());
    assert!(
        !u.env(WEB_ENV).contains_key("CONCOURSE_VAULT_URL"),
        "not before Vault answered"
    );
    let creds = u
        .model
        .add_foreign_secret(&[("role-id", "role-1"), ("role-secret-id", "sid-1")]);
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBvault\n-----END CERTIFICATE-----";
    let credentials = format!("{{\"{nonce}\": \"{creds}\"}}");
    u.model.set_bag(
        rel,
        "vault",
        &[
            ("vault_url", "https://10.1.0.50:8200"),
            ("ca_certificate", ca),
            ("mount", "charm-concourse-ci-concourse"),
            ("credentials", credentials.as_str()),
        ],
    );
    u.relation_ok(rel, "changed", Some("vault/0"));
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_VAULT_URL"], "https://10.1.0.50:8200");
    assert_eq!(env["CONCOURSE_VAULT_AUTH_BACKEND"], "approle");
    assert_eq!(
        env["CONCOURSE_VAULT_AUTH_PARAM"],
        "role_id:role-1,secret_id:sid-1"
    );
    assert_eq!(
        env["CONCOURSE_VAULT_PATH_PREFIX"],
        "/charm-concourse-ci-concourse"
    );
    assert_eq!(u.read(&env["CONCOURSE_VAULT_CA_CERT"]).trim(), ca);
    assert_eq!(u.my_bag(rel)["nonce"], nonce, "the nonce is stable");
    // Vault issued a new secret id (the unit's subnets changed): one web restart
    let mark = u.mark();
    u.model.rotate_secret(
        &creds,
        &[("role-id", "role-1"), ("role-secret-id", "sid-2")],
    );
    u.ok("secret-changed");
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_VAULT_AUTH_PARAM"],
        "role_id:role-1,secret_id:sid-2"
    );
    assert_eq!(u.touched(mark, "concourse-server").len(), 1);
}

/// The install hook runs before the peer relation exists: a web-keys secret created then
/// committed without its id reaching the app data, and every later hook's secret-add
/// failed on the taken label. The leader creates it only with the peer relation, and
/// adopts a labelled secret whose id was lost.
#[test]
fn regression_a_web_keys_secret_whose_id_was_lost_is_found_by_its_label() {
    let u = Unit::new(0, true);
    u.model.set_config(&[("mode", json!("all"))]);
    let id = u.model.add_own_secret(&[
        ("tsa-host-key", SHARED_TSA_KEY),
        ("tsa-public-key", SHARED_TSA_PUB),
        ("session-signing-key", SHARED_SESSION_KEY),
        ("encryption-key", SHARED_ENCRYPTION_KEY),
    ]);
    u.model.state_mut().secrets.get_mut(&id).unwrap().label = Some("web-keys".into());
    u.deploy();
    assert_eq!(u.app_bag()["web-keys-secret"], id);
    assert_eq!(u.read(&format!("{KEYS}/tsa_host_key")), SHARED_TSA_KEY);
    assert!(
        u.fake.provisioner.state.borrow().keys.len() <= 1,
        "only the worker key"
    );
}

#[test]
fn regression_no_web_keys_secret_before_the_peer_relation() {
    let u = Unit::new(0, true);
    u.model.set_config(&[("mode", json!("all"))]);
    u.model.state_mut().relations.remove(&u.peers);
    for h in [
        "concourse-data-storage-attached",
        "install",
        "leader-elected",
    ] {
        u.ok(h);
    }
    assert!(u
        .model
        .state()
        .secrets
        .values()
        .all(|s| s.label.as_deref() != Some("web-keys")));
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for the leader to share the web keys".into()
        )
    );
}
