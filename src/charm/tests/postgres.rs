//! PostgreSQL on one unit: the leader's request, credentials from a Juju secret (and
//! their rotation) or plain fields, waiting for the provider, and losing the relation.
//! (The plain-credentials and relation-broken parts moved from the simulator's
//! `roles::mode_all_web_port_and_plain_postgresql_credentials`.)

use super::*;

#[test]
fn the_leader_asks_for_the_database_with_secrets() {
    let u = Unit::deployed("auto");
    let rel = u
        .model
        .relate("postgresql", "postgresql", &["postgresql/0"]);
    u.relation_ok(rel, "created", None);
    let request = u.model.bag(rel, APP);
    assert_eq!(request["database"], "concourse");
    assert!(request["requested-secrets"].contains("\"password\""));
    assert_eq!(
        u.status().1,
        "Waiting for PostgreSQL to publish its endpoints"
    );
}

#[test]
fn a_non_leader_does_not_write_the_request() {
    let u = Unit::new(1, false);
    u.model.set_config(&[("mode", json!("all"))]);
    u.deploy();
    let rel = u
        .model
        .relate("postgresql", "postgresql", &["postgresql/0"]);
    u.relation_ok(rel, "created", None);
    assert!(u.model.bag(rel, APP).is_empty());
    assert!(!u
        .model
        .state()
        .calls
        .iter()
        .any(|c| c.starts_with("relation-set -r postgresql:") && c.contains("--app")));
}

#[test]
fn the_provider_is_waited_for_piece_by_piece() {
    let u = Unit::deployed("all");
    let rel = u
        .model
        .relate("postgresql", "postgresql", &["postgresql/0"]);
    u.relation_ok(rel, "created", None);
    assert_eq!(
        u.status().1,
        "Waiting for PostgreSQL to publish its endpoints"
    );
    u.model.set_bag(rel, "postgresql", &[("endpoints", "pg:x")]);
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "PostgreSQL endpoints \"pg:x\" cannot be parsed".into()
        )
    );
    u.model
        .set_bag(rel, "postgresql", &[("endpoints", "10.1.0.99:5432")]);
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    assert_eq!(u.status().1, "Waiting for PostgreSQL credentials");
    assert!(!u.active("concourse-server"));
}

#[test]
fn plain_credentials_from_older_providers() {
    let u = Unit::deployed("all");
    let rel = u
        .model
        .relate("postgresql", "postgresql", &["postgresql/0"]);
    u.model.set_bag(
        rel,
        "postgresql",
        &[
            ("endpoints", "10.1.0.98:6432"),
            ("username", "legacy_user"),
            ("password", "plain-field-pw"),
        ],
    );
    u.relation_ok(rel, "changed", Some("postgresql/0"));
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_POSTGRES_USER"], "legacy_user");
    assert_eq!(env["CONCOURSE_POSTGRES_PASSWORD"], "plain-field-pw");
    assert_eq!(env["CONCOURSE_POSTGRES_HOST"], "10.1.0.98");
    assert_eq!(env["CONCOURSE_POSTGRES_PORT"], "6432");
    assert!(u.active("concourse-server"));
}

#[test]
fn a_rotated_password_restarts_web_and_leaves_the_worker_alone() {
    let u = Unit::deployed("all");
    let rel = u.add_postgresql("first-pw");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_POSTGRES_PASSWORD"], "first-pw");
    let secret = u.model.bag(rel, "postgresql")["secret-user"].clone();
    u.model.rotate_secret(
        &secret,
        &[("username", "relation-7"), ("password", "rotated-pw")],
    );
    let mark = u.mark();
    // secret-changed tells the consumer; only --refresh sees the new revision
    u.ok("secret-changed");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_POSTGRES_PASSWORD"], "rotated-pw");
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["restart concourse-server"]
    );
    assert!(u.touched(mark, "concourse-worker").is_empty());
    assert!(u
        .model
        .state()
        .calls
        .iter()
        .any(|c| c == &format!("secret-get --format=json {secret} --refresh")));
}

#[test]
fn losing_the_database_stops_web_in_the_broken_hook_and_keeps_the_worker() {
    let u = Unit::deployed("all");
    let rel = u.add_postgresql("db-pw");
    let mark = u.mark();
    // In relation-broken Juju may still list the relation: the charm leaves it out.
    u.relation_ok(rel, "broken", None);
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for PostgreSQL relation (juju integrate concourse-ci:postgresql postgresql)"
                .into()
        )
    );
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["stop concourse-server"]
    );
    assert!(u.touched(mark, "concourse-worker").is_empty());
    assert!(!u.active("concourse-server") && u.active("concourse-worker"));
    // and comes back with a new relation
    u.model.unrelate(rel);
    u.add_postgresql("db-pw-2");
    assert!(u.active("concourse-server"));
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_POSTGRES_PASSWORD"], "db-pw-2");
}
