//! TLS for web on one unit, against a played `tls-certificates` provider (v4): the CSR,
//! HTTPS once a certificate arrives (one restart), renewal (a reload), revocation, and
//! the relation's removal (one restart back to plain http).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::*;
use crate::tls::tests::sign;
use crate::tls::Issued;

const WEB: &str = "concourse-server";
const KEY: &str = "/var/lib/concourse-web/tls/key.pem";
const CERT: &str = "/var/lib/concourse-web/tls/cert.pem";
const PROVIDER: &str = "self-signed-certificates";

fn all_in_one() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    u
}

/// The CSRs this unit asks for.
fn csrs(u: &Unit, rel: u32) -> Vec<String> {
    let raw = u.my_bag(rel)["certificate_signing_requests"].clone();
    let v: Value = serde_json::from_str(&raw).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["ca"], json!(false));
            r["certificate_signing_request"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn now(u: &Unit) -> i64 {
    1_700_000_000 + u.fake.clock.elapsed().as_secs() as i64
}

/// The provider answers with `issued` (its whole `certificates` list).
fn provide(u: &Unit, rel: u32, issued: &[Issued]) {
    let list: Vec<Value> = issued
        .iter()
        .map(|i| {
            let mut v = json!({
                "certificate_signing_request": i.certificate_signing_request,
                "certificate": i.certificate,
                "ca": i.ca,
                "chain": i.chain,
            });
            if i.is_revoked() {
                v["revoked"] = json!(true);
            }
            v
        })
        .collect();
    u.model.set_bag(
        rel,
        PROVIDER,
        &[("certificates", &Value::Array(list).to_string())],
    );
    u.relation_ok(rel, "changed", Some(&format!("{PROVIDER}/0")));
}

/// Related, with the first CSR answered: returns the relation and what was issued.
fn with_https(u: &Unit) -> (u32, Issued) {
    let rel = u
        .model
        .relate("certificates", PROVIDER, &[&format!("{PROVIDER}/0")]);
    u.relation_ok(rel, "created", None);
    u.relation_ok(rel, "joined", Some(&format!("{PROVIDER}/0")));
    let csr = csrs(u, rel).remove(0);
    let issued = sign(&csr, now(u) - 60, 90);
    provide(u, rel, std::slice::from_ref(&issued));
    (rel, issued)
}

#[test]
fn a_played_provider_signs_the_csr_and_web_restarts_once_with_https() {
    let u = all_in_one();
    let rel = u
        .model
        .relate("certificates", PROVIDER, &[&format!("{PROVIDER}/0")]);
    let mark = u.mark();
    u.relation_ok(rel, "created", None);
    u.relation_ok(rel, "joined", Some(&format!("{PROVIDER}/0")));
    // The CSR names the unit's address; the key stays on the unit.
    let csr = csrs(&u, rel).remove(0);
    let req = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
    let ip: std::net::IpAddr = "10.1.0.10".parse().unwrap();
    assert!(req
        .params
        .subject_alt_names
        .contains(&rcgen::SanType::IpAddress(ip)));
    // Root's alone: web gets systemd's copy, never this file.
    let meta = std::fs::metadata(u.fake.paths.local(KEY)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let key = u.read(KEY);
    assert!(!u.my_bag(rel).values().any(|v| v.contains(key.trim())));
    assert!(u
        .status()
        .1
        .contains(&format!("waiting for a TLS certificate from {PROVIDER}")));
    assert!(u.touched(mark, WEB).is_empty(), "nothing to serve yet");

    let issued = sign(&csr, now(&u) - 60, 90);
    provide(&u, rel, std::slice::from_ref(&issued));
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_TLS_BIND_PORT"], "8443");
    assert_eq!(env["CONCOURSE_TLS_CERT"], CERT);
    assert!(!env.contains_key("CONCOURSE_TLS_KEY"));
    // The key reaches web through systemd (LoadCredential=), named by the unit.
    let unit = u.read(WEB_UNIT_FILE);
    assert!(
        unit.contains(&format!("LoadCredential=tls-key:{KEY}\n"))
            && unit.contains("Environment=CONCOURSE_TLS_KEY=%d/tls-key\n"),
        "{unit}"
    );
    assert_eq!(env["CONCOURSE_EXTERNAL_URL"], "https://10.1.0.10:8443");
    assert_eq!(u.read(CERT), issued.fullchain());
    // one restart (the unit file changed too, hence the enable)
    assert_eq!(
        u.touched(mark, WEB),
        ["enable concourse-server", "restart concourse-server"]
    );
    assert_eq!(u.model.opened_ports(), ["2222/tcp", "8080/tcp", "8443/tcp"]);
    assert_eq!(
        u.status().1,
        format!("Web ready (v{V1}) https://10.1.0.10:8443; Worker ready (v{V1})")
    );
    // steady: nothing more
    let mark = u.mark();
    u.ok("update-status");
    assert!(u.touched(mark, WEB).is_empty());
    assert_eq!(csrs(&u, rel), [csr]);
}

#[test]
fn renewal_sends_a_new_csr_with_the_same_key_and_reloads_web() {
    let u = all_in_one();
    let (rel, first) = with_https(&u);
    let old_csr = first.certificate_signing_request.clone();
    let key = u.read(KEY);
    // 82 of 90 days later the certificate is due for renewal.
    u.fake.clock.advance(Duration::from_secs(82 * 86_400));
    let mark = u.mark();
    u.ok("update-status");
    let new_csr = csrs(&u, rel).remove(0);
    assert_ne!(new_csr, old_csr);
    assert_eq!(u.read(KEY), key, "renewal keeps the key");
    // the old certificate is served until the new one comes
    assert_eq!(u.read(CERT), first.fullchain());
    assert!(u.touched(mark, WEB).is_empty());
    let second = sign(&new_csr, now(&u) - 60, 90);
    provide(&u, rel, std::slice::from_ref(&second));
    assert_eq!(u.read(CERT), second.fullchain());
    assert_eq!(u.touched(mark, WEB), ["reload concourse-server"]);
}

#[test]
fn a_revoked_certificate_is_not_served_and_a_new_one_is_requested() {
    let u = all_in_one();
    let (rel, first) = with_https(&u);
    let mark = u.mark();
    let mut revoked = first.clone();
    revoked.revoked = Some(true);
    provide(&u, rel, &[revoked]);
    assert!(!u.exists(CERT));
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "http://10.1.0.10:8080"
    );
    assert!(!u.read(WEB_UNIT_FILE).contains("LoadCredential"));
    assert_eq!(
        u.touched(mark, WEB),
        ["enable concourse-server", "restart concourse-server"]
    );
    let new_csr = csrs(&u, rel).remove(0);
    assert_ne!(new_csr, first.certificate_signing_request);
    let second = sign(&new_csr, now(&u) - 60, 90);
    provide(&u, rel, std::slice::from_ref(&second));
    assert_eq!(u.read(CERT), second.fullchain());
    assert!(u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let u = all_in_one();
    let rel = u
        .model
        .relate("certificates", PROVIDER, &[&format!("{PROVIDER}/0")]);
    u.relation_ok(rel, "joined", Some(&format!("{PROVIDER}/0")));
    let csr = csrs(&u, rel).remove(0);
    // signed for a CSR of another key, but listed under ours
    let other_key = crate::tls::generate_key().unwrap();
    let other_csr = crate::tls::csr(&other_key, &["10.1.0.10".into()]).unwrap();
    let mut wrong = sign(&other_csr, now(&u) - 60, 90);
    wrong.certificate_signing_request = csr;
    provide(&u, rel, &[wrong]);
    assert!(!u.exists(CERT));
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
}

#[test]
fn an_http_external_url_keeps_tls_off_and_says_why() {
    let u = all_in_one();
    u.model
        .set_config(&[("external-url", json!("http://ci.example.com"))]);
    u.ok("config-changed");
    let (rel, _) = with_https(&u);
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&csrs(&u, rel)[0]).unwrap();
    let dns = rcgen::SanType::DnsName("ci.example.com".try_into().unwrap());
    assert!(csr.params.subject_alt_names.contains(&dns));
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
    assert!(u.status().1.contains("external-url is not https"));
    // https: served, and a new CSR was not needed for the same host
    u.model
        .set_config(&[("external-url", json!("https://ci.example.com"))]);
    u.ok("config-changed");
    assert!(u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "https://ci.example.com"
    );
}

#[test]
fn tls_port_on_web_port_keeps_tls_off_and_says_why() {
    let u = all_in_one();
    u.model.set_config(&[("web-port", json!(8443))]);
    u.ok("config-changed");
    with_https(&u);
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
    assert!(
        u.status().1.contains("tls-port 8443 is web-port too"),
        "{}",
        u.status().1
    );
    u.model.set_config(&[("tls-port", json!(8444))]);
    u.ok("config-changed");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_TLS_BIND_PORT"], "8444");
}

#[test]
fn a_unit_that_loses_web_withdraws_its_request() {
    let u = all_in_one();
    let (rel, _) = with_https(&u);
    u.model.set_config(&[("mode", json!("worker"))]);
    u.ok("config-changed");
    assert!(!u.my_bag(rel).contains_key("certificate_signing_requests"));
    assert!(!u.exists(CERT));
    assert!(!u.exists(WEB_UNIT_FILE));
}

#[test]
fn removing_the_relation_turns_tls_off_with_one_restart() {
    let u = all_in_one();
    let (rel, _) = with_https(&u);
    let mark = u.mark();
    u.relation_ok(rel, "broken", None);
    u.model.unrelate(rel);
    let env = u.env(WEB_ENV);
    assert!(!env.keys().any(|k| k.starts_with("CONCOURSE_TLS_")));
    assert_eq!(env["CONCOURSE_EXTERNAL_URL"], "http://10.1.0.10:8080");
    assert!(!u.exists(CERT));
    assert!(!u.read(WEB_UNIT_FILE).contains("LoadCredential"));
    let once = ["enable concourse-server", "restart concourse-server"];
    assert_eq!(u.touched(mark, WEB), once);
    assert_eq!(u.model.opened_ports(), ["2222/tcp", "8080/tcp"]);
    u.ok("update-status");
    assert_eq!(u.touched(mark, WEB), once);
}

#[test]
fn ipv6_units_ask_for_an_ip_san_and_serve_a_bracketed_https_url() {
    let u = Unit::new(0, true);
    u.model.state_mut().address = "fd42::10".into();
    u.model.set_config(&[("mode", json!("all"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    let (rel, _) = with_https(&u);
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&csrs(&u, rel)[0]).unwrap();
    let ip: std::net::IpAddr = "fd42::10".parse().unwrap();
    assert!(csr
        .params
        .subject_alt_names
        .contains(&rcgen::SanType::IpAddress(ip)));
    assert_eq!(
        u.env(WEB_ENV)["CONCOURSE_EXTERNAL_URL"],
        "https://[fd42::10]:8443"
    );
}

/// A charm before this one left the key 0640 for web's group; the next hook makes it
/// root's alone, and web keeps serving it through systemd's copy.
#[test]
fn a_tls_key_left_group_readable_by_an_older_charm_becomes_root_only() {
    let u = all_in_one();
    let (_rel, _) = with_https(&u);
    let path = u.fake.paths.local(KEY);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mark = u.mark();
    u.ok("upgrade-charm");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(u.read(WEB_UNIT_FILE).contains("LoadCredential=tls-key:"));
    assert!(u.touched(mark, WEB).is_empty(), "same key, same copy");
}

/// The key file lost (or unreadable) while web serves it: a new key and a new CSR for it
/// (the old request was for the old key), web back to HTTP until the provider answers,
/// then HTTPS again with a restart, so systemd copies the new key.
#[test]
fn a_lost_key_is_replaced_with_a_new_request_and_web_restarts_with_it() {
    let u = all_in_one();
    let (rel, first) = with_https(&u);
    std::fs::remove_file(u.fake.paths.local(KEY)).unwrap();
    let mark = u.mark();
    u.ok("update-status");
    let new_csr = csrs(&u, rel).remove(0);
    assert_ne!(new_csr, first.certificate_signing_request);
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_CERT"));
    let second = sign(&new_csr, now(&u) - 60, 90);
    provide(&u, rel, &[first, second.clone()]);
    assert_eq!(u.read(CERT), second.fullchain());
    assert!(u.read(WEB_UNIT_FILE).contains("LoadCredential=tls-key:"));
    let restarts = u
        .touched(mark, WEB)
        .iter()
        .filter(|t| t.starts_with("restart"))
        .count();
    assert_eq!(restarts, 2, "{:?}", u.touched(mark, WEB));
}

/// The escape hatch cannot set what the certificates relation manages: an env-file
/// CONCOURSE_TLS_KEY would override the unit's path to systemd's copy of the key.
#[test]
fn the_escape_hatch_refuses_the_tls_and_metrics_settings() {
    let u = all_in_one();
    let (_rel, _) = with_https(&u);
    for var in [
        "CONCOURSE_TLS_KEY=/tmp/key.pem",
        "CONCOURSE_PROMETHEUS_BIND_PORT=9999",
    ] {
        u.model.set_config(&[("extra-web-env", json!(var))]);
        u.ok("config-changed");
        let (kind, message) = u.status();
        assert_eq!(kind, "blocked", "{var}: {message}");
        let name = var.split('=').next().unwrap();
        assert!(
            message.contains(&format!("{name} is set by the charm")),
            "{message}"
        );
        assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_TLS_KEY"));
    }
}
