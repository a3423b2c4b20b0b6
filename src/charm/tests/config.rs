//! Configuration on one unit: invalid values block naming the option, valid ones recover
//! without touching services that do not depend on them; missing storage and an
//! unresolvable latest version block with the fix.
//! (Moved from the simulator's `roles::invalid_config_blocks_naming_the_option_and_recovers`.)

use super::*;

/// A `mode=all` unit with PostgreSQL, ready.
fn ready_unit() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert_eq!(u.status(), ready(8080));
    u
}

fn ready(port: u16) -> (String, String) {
    (
        "active".into(),
        format!("Web ready (v{V1}) http://10.1.0.10:{port}; Worker ready (v{V1})"),
    )
}

#[test]
fn invalid_values_block_naming_the_option_and_recover_without_restarts() {
    let u = ready_unit();
    let mark = u.mark();
    for (option, bad, good, allowed) in [
        (
            "mode",
            json!("both"),
            json!("all"),
            "auto, all, web, worker",
        ),
        (
            "log-level",
            json!("warn"),
            json!("info"),
            "debug, info, error, fatal",
        ),
        ("web-port", json!(0), json!(8080), "between 1 and 65535"),
        ("web-port", json!(70000), json!(8080), "between 1 and 65535"),
        (
            "external-url",
            json!("ci.example.com"),
            json!(""),
            "https://",
        ),
        (
            "external-url",
            json!("ftp://ci.example.com"),
            json!(""),
            "https://",
        ),
        ("drain-timeout", json!("soon"), json!("1h"), "1h30m"),
        (
            "upgrade-max-unavailable",
            json!(0),
            json!(1),
            "between 1 and 1000",
        ),
    ] {
        u.model.set_config(&[(option, bad.clone())]);
        u.ok("config-changed");
        let (kind, message) = u.status();
        assert_eq!(kind, "blocked", "{option}={bad}: {message}");
        assert!(
            message.starts_with(&format!("invalid {option}: ")) && message.contains(allowed),
            "{option}={bad}: {message:?} must name the option and say what is allowed"
        );
        u.model.set_config(&[(option, good)]);
        u.ok("config-changed");
        assert_eq!(u.status(), ready(8080), "{option} recovered");
    }
    let touched: Vec<String> = u
        .journal_since(mark)
        .into_iter()
        .filter(|e| !e.starts_with("daemon-reload"))
        .collect();
    assert!(
        touched.is_empty(),
        "invalid values touched services: {touched:?}"
    );
}

#[test]
fn several_invalid_options_are_counted() {
    let u = ready_unit();
    u.model
        .set_config(&[("log-level", json!("warn")), ("web-port", json!(0))]);
    u.ok("config-changed");
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.ends_with("(and 1 more, see juju debug-log)"),
        "{message}"
    );
}

#[test]
fn external_url_reaches_web_only() {
    let u = ready_unit();
    let mark = u.mark();
    u.model
        .set_config(&[("external-url", json!("https://ci.example.com/"))]);
    u.ok("config-changed");
    assert_eq!(
        u.status().1,
        format!("Web ready (v{V1}) https://ci.example.com; Worker ready (v{V1})")
    );
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "https://ci.example.com"
    );
    assert_eq!(
        u.touched(mark, "concourse-server"),
        ["restart concourse-server"]
    );
    assert!(u.touched(mark, "concourse-worker").is_empty());
}

#[test]
fn without_storage_the_unit_blocks_with_the_fix() {
    let u = Unit::new(0, true);
    u.model.state_mut().storage.clear();
    u.ok("install");
    assert_eq!(
        u.status(),
        (
            "blocked".into(),
            "storage concourse-data is not attached; deploy with --storage concourse-data=<pool>,10G"
                .into()
        )
    );
    assert!(!u.exists(WEB_UNIT_FILE) && !u.exists(WORKER_UNIT_FILE));
}

#[test]
fn an_unresolvable_latest_version_blocks_the_leader() {
    let u = Unit::new(0, true);
    u.model.state_mut().resources.clear();
    u.model.set_config(&[
        ("version", json!("")),
        ("release-api-url", json!("http://127.0.0.1:9/latest")),
    ]);
    u.deploy();
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with("latest release lookup at http://127.0.0.1:9/latest failed: ")
            && message.ends_with("; set version= to pin a release"),
        "{message}"
    );
    assert_eq!(
        u.app_status(),
        ("waiting".into(), "Choosing the Concourse version".into())
    );
}

#[test]
fn a_non_leader_without_a_version_waits_for_the_leader() {
    let u = Unit::new(1, false);
    u.model.set_config(&[("version", json!(""))]);
    u.deploy();
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            "Waiting for the leader to choose the Concourse version".into()
        )
    );
}

/// A leader that looks up the latest release at a local GitHub endpoint.
fn latest_lookup_unit(server: &release_fixtures::ReleaseServer, token_secret: &str) -> Unit {
    let u = Unit::new(0, true);
    u.model.set_config(&[
        ("version", json!("")),
        ("release-api-url", json!(server.github_api_url())),
        ("github-token-secret", json!(token_secret)),
    ]);
    u
}

#[test]
fn the_github_token_comes_from_a_granted_juju_secret() {
    let server = release_fixtures::ReleaseServer::start().unwrap();
    server.set_github_latest(Some(V1));
    let u = latest_lookup_unit(&server, "");
    // A user secret granted to the application reads like one another owner shares.
    let granted = u
        .model
        .add_foreign_secret(&[("token", "ghp_from_the_secret")]);
    u.model
        .set_config(&[("github-token-secret", json!(granted))]);
    u.deploy();
    let auth: Vec<Option<String>> = server
        .github_requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(auth, [Some("Bearer ghp_from_the_secret".to_string())]);
    assert_eq!(u.status().0, "waiting", "{:?}", u.status());
    let leaks: Vec<String> = u
        .logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("ghp_"))
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
}

#[test]
#[should_panic(expected = "secret URI scheme")]
fn juju_refuses_a_plain_token_in_the_secret_option() {
    let u = Unit::new(0, true);
    u.model
        .set_config(&[("github-token-secret", json!("ghp_plaintoken"))]);
}

#[test]
fn an_ungranted_github_token_secret_blocks_naming_grant_secret() {
    let server = release_fixtures::ReleaseServer::start().unwrap();
    let u = latest_lookup_unit(&server, "secret:cs2ejb6mp25c76kp6f8g");
    u.deploy();
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with("cannot read the github-token-secret secret:cs2ejb6mp25c76kp6f8g (")
            && message.ends_with("grant it: juju grant-secret <secret> concourse-ci"),
        "{message}"
    );
    assert!(
        server.github_requests().is_empty(),
        "no lookup without the token"
    );
}

/// Root runs the release from the volume: a volume others can write (or that belongs to
/// someone else) was used as it was.
#[test]
fn a_volume_others_can_write_is_refused_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert_eq!(u.status().0, "active");
    let releases = u.volume.path().join("releases");
    std::fs::set_permissions(&releases, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mark = u.mark();
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    assert_eq!(
        u.status(),
        (
            "blocked".into(),
            format!(
                "{} on the volume is writable by group or others (mode 777); run chmod -R go-w on the volume (see docs/shared-storage.md)",
                releases.display()
            )
        )
    );
    assert!(
        u.journal_since(mark).is_empty(),
        "{:?}",
        u.journal_since(mark)
    );
    std::fs::set_permissions(&releases, std::fs::Permissions::from_mode(0o755)).unwrap();
    u.ok("update-status");
    assert_eq!(u.status().0, "active");
}
