//! Issue 14 in the simulator: several web units. Three `mode=web` units with a
//! `mode=worker` application, and three `mode=all` units, all from one model: every web
//! unit runs with the same TSA host key and session signing key (the app secret the
//! leader created), its own peer address, and authorizes every worker; every worker lists
//! every web unit's TSA, trusts the shared host key and registers (the fake TSA checks
//! the host key and the worker key). PostgreSQL over TLS, and its endpoints withdrawn. A
//! connector's client secret from a user secret, and a new revision of it; every other
//! connector and extra local users, enabled by web as dex would (the strict fake).

use std::collections::BTreeSet;

use juju_sim::{Model, PostgresOptions, Volume};
use libtest_mimic::Trial;
use release_fixtures::tarball::Variant;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "teams::three_web_units_share_keys_and_every_worker_knows_every_tsa",
            three_web_units,
        ),
        trial(
            "teams::postgresql_over_tls_and_endpoints_withdrawn_without_stopping_web",
            postgresql_tls,
        ),
        trial(
            "teams::a_connector_secret_reaches_web_and_a_new_revision_restarts_web_once",
            connector_secret,
        ),
        trial(
            "teams::the_escape_hatch_reaches_web_and_a_typo_blocks_without_touching_it",
            escape_hatch,
        ),
        trial(
            "teams::gitlab_oidc_oauth_ldap_and_local_users_all_enabled_by_web",
            every_connector,
        ),
    ]
}

fn read(m: &Model, unit: &str, path: &str) -> Result<String, libtest_mimic::Failed> {
    m.read_to_string(unit, path)
        .map_err(|e| fail(format!("{unit}: reading {path}: {e}")))
}

/// The environment `concourse <sub>` last started with on `unit`.
fn started_env(
    m: &Model,
    unit: &str,
    sub: &str,
) -> Result<std::collections::BTreeMap<String, String>, libtest_mimic::Failed> {
    // the fake binary logs its start a moment after systemctl returned
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        last_start(m, unit, sub).is_some()
    });
    last_start(m, unit, sub)
        .map(|r| r.env)
        .ok_or_else(|| fail(format!("{unit}: concourse {sub} never started")))
}

const KEYS: &str = "/var/lib/concourse-web/keys";

/// What every web unit of `webs` must agree on, and what each worker of `workers` must
/// see: the same key files, its own peer address, every TSA, every worker key authorized.
fn check_cluster(m: &Model, webs: &[String], workers: &[String]) -> TestResult {
    let first = &webs[0];
    let key = |u: &str, f: &str| read(m, u, &format!("{KEYS}/{f}"));
    let mut tsas = BTreeSet::new();
    let mut peer_addresses = BTreeSet::new();
    for w in webs {
        for f in ["tsa_host_key", "tsa_host_key.pub", "session_signing_key"] {
            ensure(key(w, f)? == key(first, f)?, || {
                format!("{w} and {first} differ in {f}")
            })?;
        }
        let env = started_env(m, w, "web")?;
        let peer = env
            .get("CONCOURSE_PEER_ADDRESS")
            .cloned()
            .unwrap_or_default();
        ensure(!peer.is_empty() && peer != "127.0.0.1", || {
            format!("{w}: CONCOURSE_PEER_ADDRESS={peer:?}")
        })?;
        tsas.insert(format!("{peer}:2222"));
        peer_addresses.insert(peer);
    }
    ensure(peer_addresses.len() == webs.len(), || {
        format!("peer addresses {peer_addresses:?} are not one per web unit")
    })?;
    let host_pub = key(first, "tsa_host_key.pub")?;
    let mut worker_keys = BTreeSet::new();
    for u in workers {
        let env = started_env(m, u, "worker")?;
        let listed: BTreeSet<String> = env
            .get("CONCOURSE_TSA_HOST")
            .map(|h| h.split(',').map(String::from).collect())
            .unwrap_or_default();
        ensure(listed == tsas, || {
            format!("{u} lists TSAs {listed:?}, the web units are {tsas:?}")
        })?;
        let trusted = read(m, u, &env["CONCOURSE_TSA_PUBLIC_KEY"])?;
        ensure(trusted.trim() == host_pub.trim(), || {
            format!("{u} trusts {trusted:?}, the TSAs present {host_pub:?}")
        })?;
        // the fake TSA checked the host key the worker trusts and authorized its key
        run_until(m, &format!("{u} to register"), |m| {
            concourse_log(m, u).iter().any(|r| r.event == "registered")
        })?;
        let private = &env["CONCOURSE_TSA_WORKER_PRIVATE_KEY"];
        worker_keys.insert(read(m, u, &format!("{private}.pub"))?.trim().to_string());
    }
    for w in webs {
        let authorized: BTreeSet<String> = key(w, "authorized_worker_keys")?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        ensure(authorized == worker_keys, || {
            format!("{w} authorizes {authorized:?}, the workers are {worker_keys:?}")
        })?;
    }
    Ok(())
}

fn three_web_units() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let webs = deploy(
        &m,
        "web",
        3,
        config(&server, &[("version", V1), ("mode", "web")]),
        Volume::Shared,
    )?;
    let workers = deploy(
        &m,
        "workers",
        2,
        config(&server, &[("version", V1), ("mode", "worker")]),
        Volume::Shared,
    )?;
    let all = deploy(
        &m,
        "all",
        3,
        config(&server, &[("version", V1), ("mode", "all")]),
        Volume::Shared,
    )?;
    let pg = PostgresOptions::default();
    with_postgresql(&m, "web", pg.clone())?;
    m.relate("all:postgresql", "postgresql")
        .map_err(|e| fail(format!("relate: {e}")))?;
    m.relate("web:tsa", "workers:flight")
        .map_err(|e| fail(format!("relate: {e}")))?;
    let mut units: Vec<String> = webs.clone();
    units.extend(workers.iter().cloned());
    units.extend(all.iter().cloned());
    run_until(&m, "every unit active", |m| {
        units.iter().all(|u| m.unit_status(u).status == "active")
    })?;
    settle(&m)?;
    check_cluster(&m, &webs, &workers)?;
    check_cluster(&m, &all, &all)?;
    // one shared-keys secret per application, created once
    let web_key_secrets = m
        .secrets()
        .into_iter()
        .filter(|s| s.label.as_deref() == Some("web-keys"))
        .count();
    ensure(web_key_secrets == 2, || {
        format!("{web_key_secrets} web-keys secrets, expected one per web application")
    })?;
    no_failed_hooks(&m, &units)?;
    let mut secrets: SecretValues = vec![("db password".into(), pg.password.clone())];
    for u in &units {
        secrets.extend(private_key_secrets(&m, u));
    }
    for s in m.secrets() {
        if let Some(k) = s.revisions.last().and_then(|r| r.get("encryption-key")) {
            secrets.push(("encryption key".into(), k.clone()));
        }
    }
    assert_no_secret_leaks(&m, &["web", "workers", "all"], &units, &secrets)
}

const PG_CA: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBsimulatedPostgresCA\n-----END CERTIFICATE-----";

/// PostgreSQL with TLS on: web verifies the server against the CA from `secret-tls`; the
/// provider withdrawing its endpoints (no primary for a moment) does not stop or restart
/// web, and their return settles the unit without a restart.
fn postgresql_tls() -> TestResult {
    let d = deploy_with(DeploySpec {
        units: 1,
        config: &[("mode", "all"), ("version", V1)],
        releases: &[(V1, Variant::Normal)],
        postgres: Some(PostgresOptions {
            tls_ca: Some(PG_CA.into()),
            ..PostgresOptions::default()
        }),
        ..DeploySpec::default()
    })?;
    let (m, unit) = (&d.model, &d.units[0]);
    let env = started_env(m, unit, "web")?;
    ensure(
        env.get("CONCOURSE_POSTGRES_SSLMODE").map(String::as_str) == Some("verify-full"),
        || format!("sslmode {:?}", env.get("CONCOURSE_POSTGRES_SSLMODE")),
    )?;
    let ca_path = env
        .get("CONCOURSE_POSTGRES_CA_CERT")
        .cloned()
        .unwrap_or_default();
    ensure(read(m, unit, &ca_path)?.trim() == PG_CA, || {
        format!("{ca_path} does not hold the provider's CA")
    })?;
    let pid = service_pid(m, unit, "web").ok_or_else(|| fail("web is not running"))?;
    let rel = m
        .relation_id(&format!("{APP_NAME}:postgresql"))
        .ok_or_else(|| fail("no postgresql relation"))?;
    let endpoints = m
        .databag(rel, "postgresql")
        .data
        .get("endpoints")
        .cloned()
        .ok_or_else(|| fail("postgresql published no endpoints"))?;
    let mark = quiet_mark(m, &[APP_NAME]);
    m.postgres_set_endpoints("postgresql", None);
    let msg = concourse_ci::charm::status::messages::DB_NO_ENDPOINTS_WEB_RUNNING.text;
    run_until(m, "the unit to report withdrawn endpoints", |m| {
        m.unit_status(unit).message.starts_with(msg)
    })?;
    m.postgres_set_endpoints("postgresql", Some(&endpoints));
    run_until(m, "the unit to be active again", |m| {
        m.unit_status(unit).status == "active"
    })?;
    settle(m)?;
    let d2 = disturbances(m, unit, "concourse-server", mark);
    ensure(
        service_pid(m, unit, "web") == Some(pid) && d2.is_empty(),
        || format!("web was disturbed while the endpoints were away: {d2:?}"),
    )?;
    no_failed_hooks(m, &d.units)
}

/// The starts of `concourse web` on `unit` since `since` (epoch seconds).
fn web_starts(
    m: &Model,
    unit: &str,
    since: f64,
) -> Vec<std::collections::BTreeMap<String, String>> {
    concourse_log(m, unit)
        .into_iter()
        .filter(|r| r.ts >= since && r.event == "start" && r.subcommand == "web")
        .map(|r| r.env)
        .collect()
}

/// A GitHub connector whose client secret is a user secret (`juju add-secret`,
/// `juju grant-secret`): the running web gets it (the strict fake refuses variables the
/// release does not define); `juju update-secret` restarts web once with the new value
/// and leaves the worker alone; the value is never in statuses, logs or argv.
fn connector_secret() -> TestResult {
    let d = deploy_one_all()?;
    let (m, unit) = (&d.model, &d.units[0]);
    let uri = m.add_user_secret(&[("client-secret", "gh-secret-1")]);
    m.grant_user_secret(&uri, APP_NAME)
        .map_err(|e| fail(e.to_string()))?;
    let worker = service_pid(m, unit, "worker").ok_or_else(|| fail("no worker"))?;
    let mark = quiet_mark(m, &[APP_NAME]);
    m.config(
        APP_NAME,
        [
            ("github-client-id", "gh-id"),
            ("github-client-secret", uri.as_str()),
            ("main-team-github-org", "acme"),
        ],
    )
    .map_err(|e| fail(e.to_string()))?;
    let has = |m: &Model, since: f64, value: &str| {
        web_starts(m, unit, since)
            .iter()
            .any(|e| e.get("CONCOURSE_GITHUB_CLIENT_SECRET").map(String::as_str) == Some(value))
    };
    run_until(m, "web with the connector", |m| has(m, mark, "gh-secret-1"))?;
    settle(m)?;
    let env = started_env(m, unit, "web")?;
    for (k, v) in [
        ("CONCOURSE_GITHUB_CLIENT_ID", "gh-id"),
        ("CONCOURSE_GITHUB_CLIENT_SECRET", "gh-secret-1"),
        ("CONCOURSE_MAIN_TEAM_GITHUB_ORG", "acme"),
    ] {
        ensure(env.get(k).map(String::as_str) == Some(v), || {
            format!("{k} is {:?}", env.get(k))
        })?;
    }
    // the fake logs its connectors after its start and migrations: a moment later under load
    run_until(m, "web's connectors", |m| {
        connectors(m, unit, mark).0.is_some()
    })?;
    let (on, skipped) = connectors(m, unit, mark);
    ensure(
        on.as_deref() == Some("local,github") && skipped.is_empty(),
        || format!("web enabled {on:?}, skipped {skipped:?}"),
    )?;
    ensure(m.unit_status(unit).status == "active", || {
        format!("{:?}", m.unit_status(unit))
    })?;
    let mark = quiet_mark(m, &[APP_NAME]);
    m.update_user_secret(&uri, &[("client-secret", "gh-secret-2")])
        .map_err(|e| fail(e.to_string()))?;
    run_until(m, "web with the new revision", |m| {
        has(m, mark, "gh-secret-2")
    })?;
    settle(m)?;
    let starts = web_starts(m, unit, mark).len();
    ensure(starts == 1, || {
        format!("web started {starts} times for one new revision")
    })?;
    let w = disturbances(m, unit, "concourse-worker", mark);
    ensure(
        w.is_empty() && service_pid(m, unit, "worker") == Some(worker),
        || format!("the worker was disturbed by the web's secret: {w:?}"),
    )?;
    no_failed_hooks(m, &d.units)?;
    let secrets: SecretValues = vec![
        ("client secret".into(), "gh-secret-1".into()),
        ("client secret".into(), "gh-secret-2".into()),
    ];
    assert_no_secret_leaks(m, &[APP_NAME], &d.units, &secrets)
}

/// `extra-web-env`: a variable Concourse defines reaches the running web (the strict fake
/// refuses any it does not define); a typo is a blocked status naming it, and the web
/// that runs is left alone.
fn escape_hatch() -> TestResult {
    let d = deploy_one_all()?;
    let (m, unit) = (&d.model, &d.units[0]);
    let mark = quiet_mark(m, &[APP_NAME]);
    m.config(
        APP_NAME,
        [("extra-web-env", "CONCOURSE_ENABLE_ACROSS_STEP=true")],
    )
    .map_err(|e| fail(e.to_string()))?;
    run_until(m, "web with the extra setting", |m| {
        web_starts(m, unit, mark)
            .iter()
            .any(|e| e.get("CONCOURSE_ENABLE_ACROSS_STEP").map(String::as_str) == Some("true"))
    })?;
    settle(m)?;
    let pid = service_pid(m, unit, "web").ok_or_else(|| fail("web is not running"))?;
    let mark = quiet_mark(m, &[APP_NAME]);
    m.config(
        APP_NAME,
        [("extra-web-env", "CONCOURSE_ENABLE_ACROSS_STEPS=true")],
    )
    .map_err(|e| fail(e.to_string()))?;
    run_until(m, "the typo blocked", |m| {
        let s = m.unit_status(unit);
        s.status == "blocked" && s.message.contains("CONCOURSE_ENABLE_ACROSS_STEPS")
    })?;
    settle(m)?;
    let w = disturbances(m, unit, "concourse-server", mark);
    ensure(
        w.is_empty() && service_pid(m, unit, "web") == Some(pid),
        || format!("web was disturbed by a refused setting: {w:?}"),
    )?;
    no_failed_hooks(m, &d.units)
}

/// What web's dex server enabled at its last start on `unit` (the fake's `connectors`
/// record, skymarshal/dexserver/dexserver.go), and the connectors it skipped.
fn connectors(m: &Model, unit: &str, since: f64) -> (Option<String>, Vec<String>) {
    let log: Vec<_> = concourse_log(m, unit)
        .into_iter()
        .filter(|r| r.ts >= since && r.subcommand == "web")
        .collect();
    let on = log
        .iter()
        .rev()
        .find(|r| r.event == "connectors")
        .and_then(|r| r.detail.clone());
    let skipped = log
        .iter()
        .filter(|r| r.event == "connector skipped")
        .filter_map(|r| r.detail.clone())
        .collect();
    (on, skipped)
}

/// GitLab, OIDC, generic OAuth and LDAP with their secrets from user secrets, extra local
/// users, and main-team members through each: one config change restarts web once, and
/// web's dex enables every connector (the fake skips one missing a setting Concourse
/// requires, and refuses LDAP without the settings dex needs, as the real ones do).
fn every_connector() -> TestResult {
    let d = deploy_one_all()?;
    let (m, unit) = (&d.model, &d.units[0]);
    let mut uris = Vec::new();
    for (key, value) in [
        ("client-secret", "gl-secret"),
        ("client-secret", "oidc-secret"),
        ("client-secret", "oauth-secret"),
        ("password", "ldap-bind-secret"),
        ("users", "alice:alice-pw,bob:bob-pw"),
    ] {
        let uri = m.add_user_secret(&[(key, value)]);
        m.grant_user_secret(&uri, APP_NAME)
            .map_err(|e| fail(e.to_string()))?;
        uris.push(uri);
    }
    let (u_gl, u_oidc, u_oauth, u_ldap, u_users) =
        (&uris[0], &uris[1], &uris[2], &uris[3], &uris[4]);
    let mark = quiet_mark(m, &[APP_NAME]);
    m.config(
        APP_NAME,
        [
            ("gitlab-client-id", "gl-id"),
            ("gitlab-client-secret", u_gl.as_str()),
            ("main-team-gitlab-group", "ops"),
            ("oidc-issuer", "https://sso.example.com/realms/ci"),
            ("oidc-client-id", "oidc-id"),
            ("oidc-client-secret", u_oidc.as_str()),
            ("main-team-oidc-group", "ci-admins"),
            ("oauth-client-id", "oauth-id"),
            ("oauth-client-secret", u_oauth.as_str()),
            ("oauth-auth-url", "https://idp.example.com/authorize"),
            ("oauth-token-url", "https://idp.example.com/token"),
            ("oauth-userinfo-url", "https://idp.example.com/userinfo"),
            ("main-team-oauth-user", "carol"),
            ("ldap-host", "ldap.example.com:636"),
            ("ldap-bind-dn", "cn=concourse,dc=example,dc=com"),
            ("ldap-bind-pw", u_ldap.as_str()),
            ("ldap-user-search-base-dn", "ou=people,dc=example,dc=com"),
            ("ldap-user-search-username", "uid"),
            ("main-team-ldap-group", "ci"),
            ("extra-local-users", u_users.as_str()),
            ("main-team-local-user", "admin,alice"),
        ],
    )
    .map_err(|e| fail(e.to_string()))?;
    run_until(m, "web with every connector", |m| {
        connectors(m, unit, mark).0.is_some()
    })?;
    settle(m)?;
    let (on, skipped) = connectors(m, unit, mark);
    ensure(
        on.as_deref() == Some("local,gitlab,oidc,oauth,ldap") && skipped.is_empty(),
        || format!("web enabled {on:?}, skipped {skipped:?}"),
    )?;
    let starts = web_starts(m, unit, mark);
    ensure(starts.len() == 1, || {
        format!(
            "web started {} times for one config change\n{}",
            starts.len(),
            history(m, unit, "web", mark)
        )
    })?;
    let env = &starts[0];
    let admin = admin_password(m).ok_or_else(|| fail("no admin-password secret"))?;
    for (k, v) in [
        ("CONCOURSE_GITLAB_CLIENT_SECRET", "gl-secret"),
        ("CONCOURSE_OIDC_CLIENT_SECRET", "oidc-secret"),
        ("CONCOURSE_OAUTH_CLIENT_SECRET", "oauth-secret"),
        ("CONCOURSE_LDAP_BIND_PW", "ldap-bind-secret"),
        (
            "CONCOURSE_ADD_LOCAL_USER",
            &format!("admin:{admin},alice:alice-pw,bob:bob-pw"),
        ),
        ("CONCOURSE_MAIN_TEAM_LOCAL_USER", "admin,alice"),
        ("CONCOURSE_MAIN_TEAM_OAUTH_USER", "carol"),
    ] {
        ensure(env.get(k).map(String::as_str) == Some(v), || {
            format!(
                "{k} is {}",
                if env.contains_key(k) {
                    "wrong"
                } else {
                    "unset"
                }
            )
        })?;
    }
    ensure(m.unit_status(unit).status == "active", || {
        format!("{:?}", m.unit_status(unit))
    })?;
    no_failed_hooks(m, &d.units)?;
    let mut secrets: SecretValues = [
        "gl-secret",
        "oidc-secret",
        "oauth-secret",
        "ldap-bind-secret",
        "alice-pw",
        "bob-pw",
    ]
    .iter()
    .map(|v| ("connector secret".to_string(), v.to_string()))
    .collect();
    secrets.push(("admin password".into(), admin));
    assert_no_secret_leaks(m, &[APP_NAME], &d.units, &secrets)
}
