use super::*;
use serde_json::json;

fn parse(v: Value) -> Result<WebOptions, Vec<ConfigError>> {
    WebOptions::parse(v.as_object().unwrap(), "admin")
}

fn problems(v: Value) -> Vec<(String, String)> {
    parse(v)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.option.to_string(), e.problem))
        .collect()
}

#[test]
fn every_variable_is_one_concourse_web_defines() {
    for o in OPTIONS {
        assert!(
            concourse_vars::find("web", o.var).is_some(),
            "{} -> {}",
            o.option,
            o.var
        );
    }
    for v in MANAGED {
        assert!(
            concourse_vars::find("web", v).is_some() || concourse_vars::find("worker", v).is_some(),
            "{v}"
        );
    }
}

#[test]
fn every_option_is_in_config_yaml_with_its_type() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(include_str!("../../config.yaml")).unwrap();
    for o in OPTIONS {
        let t = yaml["options"][o.option]["type"].as_str();
        let want = match o.kind {
            Kind::Secret(_) => "secret",
            Kind::Flag | Kind::Bool => "boolean",
            Kind::Count => "int",
            _ => "string",
        };
        assert_eq!(t, Some(want), "{}", o.option);
    }
}

#[test]
fn a_connector_renders_with_its_secret() {
    let w = parse(json!({
        "github-client-id": "abc",
        "github-client-secret": "secret:cgh1",
        "main-team-github-org": "acme, ops ,",
        "secret-cache-enabled": true,
        "gc-failed-grace-period": "2h",
        "max-build-logs-to-retain": 100,
        "default-build-logs-to-retain": 0,
    }))
    .unwrap();
    assert_eq!(
        w.secrets(),
        [(
            "github-client-secret",
            "secret:cgh1".to_string(),
            "client-secret"
        )]
    );
    let secrets = [("github-client-secret", Secret::new("gh-s3cret"))]
        .into_iter()
        .collect();
    let env = w.env(
        &secrets,
        std::path::Path::new("/ca"),
        "admin",
        &Secret::new("pw"),
    );
    assert_eq!(env["CONCOURSE_GITHUB_CLIENT_ID"], "abc");
    assert_eq!(env["CONCOURSE_GITHUB_CLIENT_SECRET"], "gh-s3cret");
    assert_eq!(env["CONCOURSE_MAIN_TEAM_GITHUB_ORG"], "acme,ops");
    assert_eq!(env["CONCOURSE_MAIN_TEAM_LOCAL_USER"], "admin");
    assert_eq!(env["CONCOURSE_ADD_LOCAL_USER"], "admin:pw");
    assert_eq!(env["CONCOURSE_SECRET_CACHE_ENABLED"], "true");
    assert_eq!(env["CONCOURSE_GC_FAILED_GRACE_PERIOD"], "7200s");
    assert_eq!(env["CONCOURSE_MAX_BUILD_LOGS_TO_RETAIN"], "100");
    assert!(!env.contains_key("CONCOURSE_DEFAULT_BUILD_LOGS_TO_RETAIN"));
}

#[test]
fn invalid_combinations_name_the_option_and_the_fix() {
    assert_eq!(
        problems(json!({"github-client-id": "abc"})),
        [(
            "github-client-id".into(),
            "the github connector also needs github-client-secret".into()
        )]
    );
    assert_eq!(
        problems(json!({"main-team-ldap-group": "admins"}))[0].0,
        "main-team-ldap-group"
    );
    // the admin left out of the main team, and nobody else in it
    assert_eq!(
        problems(json!({"main-team-local-user": "alice"}))[0].0,
        "main-team-local-user"
    );
    assert!(
        parse(json!({"main-team-local-user": "alice", "extra-local-users": "secret:u1"})).is_ok()
    );
    assert_eq!(
        problems(json!({"github-client-secret": "not-a-uri"}))[0].0,
        "github-client-secret"
    );
    assert_eq!(
        problems(json!({"vault-url": "https://v:8200"}))[0].0,
        "vault-url"
    );
    assert_eq!(
        problems(json!({"gc-failed-grace-period": "soon"}))[0].0,
        "gc-failed-grace-period"
    );
    assert_eq!(
        problems(json!({"oidc-ca-cert": "/etc/ssl/ca.pem"}))[0].0,
        "oidc-ca-cert"
    );
}

#[test]
fn the_escape_hatch_accepts_real_variables_and_blocks_typos() {
    let w = parse(json!({
        "extra-web-env": "CONCOURSE_ENABLE_ACROSS_STEP=true CONCOURSE_BUILD_TRACKER_INTERVAL=20s",
        "extra-worker-env": "CONCOURSE_BAGGAGECLAIM_DRIVER=overlay",
    }))
    .unwrap();
    assert_eq!(w.extra_web_env["CONCOURSE_ENABLE_ACROSS_STEP"], "true");
    assert_eq!(
        w.extra_worker_env["CONCOURSE_BAGGAGECLAIM_DRIVER"],
        "overlay"
    );
    let p = problems(json!({"extra-web-env": "CONCOURSE_ENABLE_ACROSS_STEPS=true"}));
    assert_eq!(p[0].0, "extra-web-env");
    assert!(
        p[0].1.contains("defines no CONCOURSE_ENABLE_ACROSS_STEPS"),
        "{p:?}"
    );
    // a worker variable is no web variable
    assert!(!problems(json!({"extra-web-env": "CONCOURSE_BAGGAGECLAIM_DRIVER=naive"})).is_empty());
    // an invalid choice, a managed variable, not KEY=value
    for bad in [
        "CONCOURSE_LOG_LEVEL=warn",
        "CONCOURSE_POSTGRES_PASSWORD=x",
        "CONCOURSE_GITHUB_CLIENT_SECRET=x",
        "enable-across-step",
    ] {
        assert!(!problems(json!({"extra-web-env": bad})).is_empty(), "{bad}");
    }
    assert!(!problems(json!({"extra-worker-env": "CONCOURSE_BAGGAGECLAIM_DRIVER=zfs"})).is_empty());
}

#[test]
fn local_users_are_pairs() {
    assert_eq!(local_users("a:x,b:y:z\nc:w").unwrap(), "a:x,b:y:z,c:w");
    assert!(local_users("a").is_err());
    assert!(local_users(" , ").is_err());
}

/// Regression: generic OAuth without its userinfo URL passed the charm's checks, and
/// Concourse then skipped the connector silently (skymarshal/skycmd/oauth_flags.go).
#[test]
fn regression_oauth_without_userinfo_url_was_accepted_and_silently_dropped() {
    let mut oauth = json!({
        "oauth-client-id": "ci",
        "oauth-client-secret": "secret:co1",
        "oauth-auth-url": "https://idp/authorize",
        "oauth-token-url": "https://idp/token",
    });
    assert_eq!(
        problems(oauth.clone()),
        [(
            "oauth-client-id".into(),
            "the oauth connector also needs oauth-userinfo-url".into()
        )]
    );
    oauth["oauth-userinfo-url"] = json!("https://idp/userinfo");
    assert!(parse(oauth).is_ok());
}

/// Regression: LDAP without a bind DN and password passed the charm's checks (Concourse
/// skips it silently: skymarshal/skycmd/ldap_flags.go), and LDAP without a user search
/// username attribute made web exit 1 at start (concourse/dex connector/ldap/ldap.go).
#[test]
fn regression_ldap_without_bind_or_username_attribute_was_accepted() {
    let full = json!({
        "ldap-host": "ldap:636",
        "ldap-bind-dn": "cn=ro",
        "ldap-bind-pw": "secret:cl1",
        "ldap-user-search-base-dn": "ou=people",
        "ldap-user-search-username": "uid",
    });
    assert!(parse(full.clone()).is_ok());
    for drop in ["ldap-bind-dn", "ldap-bind-pw", "ldap-user-search-username"] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(drop);
        let p = problems(v);
        assert_eq!(p.len(), 1, "{drop}: {p:?}");
        assert_eq!(p[0].0, "ldap-host");
        assert_eq!(p[0].1, format!("the ldap connector also needs {drop}"));
    }
}

/// Concourse refuses local users with another password connector
/// (skymarshal/dexserver/dexserver.go), and the charm always adds the admin.
#[test]
fn the_escape_hatch_refuses_a_password_connector_that_cannot_start() {
    let p = problems(json!({"extra-web-env": "CONCOURSE_PASSWORD_CONNECTOR=ldap"}));
    assert_eq!(p[0].0, "extra-web-env");
    assert!(p[0].1.contains("local password connector"), "{p:?}");
    assert!(parse(json!({"extra-web-env": "CONCOURSE_PASSWORD_CONNECTOR=local"})).is_ok());
}
