//! Issue 15 in the simulator: the model's proxy settings reach the real downloader and the
//! running worker, and the worker runs with Concourse's own volume driver choice.
//!
//! The release server doubles as the model's HTTP proxy: hyper answers absolute-form
//! requests (`GET http://releases.invalid/...`) by their path, and `releases.invalid`
//! never resolves (RFC 6761), so every request the server logs came through the proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use juju_sim::charm::Role;
use juju_sim::model::ProxySettings;
use juju_sim::{Model, ModelOptions, PostgresOptions, Volume};
use libtest_mimic::Trial;
use release_fixtures::server::RequestKind;
use release_fixtures::tarball::Variant;
use serde_json::{json, Value};

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "observe::model_proxies_reach_the_download_and_the_worker_which_runs_the_detected_driver",
            proxies_and_runtime,
        ),
        trial(
            "observe::played_prometheus_collector_and_certificate_provider_then_removed",
            played_counterparts,
        ),
    ]
}

fn proxies_and_runtime() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let proxy = server.base_url();
    let m = model_with(ModelOptions {
        update_status_interval: Some(Duration::from_secs(3)),
        proxy: ProxySettings {
            http: proxy.clone(),
            no_proxy: "127.0.0.1,localhost".into(),
            ..ProxySettings::default()
        },
        ..ModelOptions::default()
    })?;
    let config: BTreeMap<String, String> = [
        ("mode", "all"),
        ("version", V1),
        (
            "release-url",
            "http://releases.invalid/v{version}/concourse-{version}-linux-amd64.tgz",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let units = deploy(&m, APP_NAME, 1, config, Volume::Shared)?;
    with_postgresql(&m, APP_NAME, PostgresOptions::default())?;
    let unit = &units[0];
    run_until(&m, "web and worker active", |m| {
        let s = m.unit_status(unit);
        s.status == "active"
            && s.message.contains("Web ready")
            && s.message.contains("Worker ready")
    })?;

    let through_proxy: Vec<RequestKind> = server.requests().into_iter().map(|r| r.kind).collect();
    ensure(
        through_proxy.contains(&RequestKind::Sha1(V1.into()))
            && server.count_complete_downloads(V1) == 1,
        || format!("the release did not come through the proxy once: {through_proxy:?}"),
    )?;

    let started_both = |m: &juju_sim::Model| {
        let r = concourse_log(m, unit);
        ["web", "worker"]
            .iter()
            .all(|sub| r.iter().any(|r| r.event == "start" && r.subcommand == *sub))
    };
    run_until(&m, "web and worker processes started", started_both)?;
    let records = concourse_log(&m, unit);
    let started = |sub: &str| {
        records
            .iter()
            .rev()
            .find(|r| r.event == "start" && r.subcommand == sub)
            .map(|r| r.env.clone())
    };
    let worker = started("worker").ok_or_else(|| fail("the worker never started"))?;
    ensure(worker.get("http_proxy") == Some(&proxy), || {
        format!("the worker's http_proxy: {:?}", worker.get("http_proxy"))
    })?;
    ensure(
        worker.get("no_proxy").map(String::as_str) == Some("127.0.0.1,localhost"),
        || format!("the worker's no_proxy: {:?}", worker.get("no_proxy")),
    )?;
    ensure(
        worker
            .get("CONCOURSE_BAGGAGECLAIM_DRIVER")
            .map(String::as_str)
            == Some("detect"),
        || format!("driver: {:?}", worker.get("CONCOURSE_BAGGAGECLAIM_DRIVER")),
    )?;
    let web = started("web").ok_or_else(|| {
        let seen: Vec<(&str, &str)> = records
            .iter()
            .map(|r| (r.event.as_str(), r.subcommand.as_str()))
            .collect();
        fail(format!("web never started: {seen:?}"))
    })?;
    ensure(!web.contains_key("http_proxy"), || {
        "web was given the proxy".into()
    })?;
    no_failed_hooks(&m, &units)
}

/// The environment of the last `concourse web` start, and how many starts there were.
fn web_starts(m: &Model, unit: &str) -> (usize, BTreeMap<String, String>) {
    let starts: Vec<_> = concourse_log(m, unit)
        .into_iter()
        .filter(|r| r.event == "start" && r.subcommand == "web")
        .collect();
    let env = starts.last().map(|r| r.env.clone()).unwrap_or_default();
    (starts.len(), env)
}

fn json_in(m: &Model, rel: u32, owner: &str, key: &str) -> Result<Value, libtest_mimic::Failed> {
    let bag = m.databag(rel, owner).data;
    let raw = bag
        .get(key)
        .ok_or_else(|| fail(format!("{owner} has no {key} in relation {rel}: {bag:?}")))?;
    serde_json::from_str(raw).map_err(|e| fail(format!("{key} is not JSON ({e}): {raw}")))
}

/// Signs `csr` with a throw-away CA, as a provider would: the `certificates` entry.
fn sign(csr: &str) -> Value {
    sign_valid(csr, -5 * 60, 90 * 86_400)
}

/// [`sign`], valid from `from` to `to` seconds from now.
fn sign_valid(csr: &str, from: i64, to: i64) -> Value {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec!["played-ca".to_string()]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut params = req.params;
    params.not_before = now + time::Duration::seconds(from);
    params.not_after = now + time::Duration::seconds(to);
    let cert = params.signed_by(&req.public_key, &ca, &ca_key).unwrap();
    json!({
        "certificate_signing_request": csr,
        "certificate": cert.pem().trim(),
        "ca": ca.pem().trim(),
        "chain": [cert.pem().trim(), ca.pem().trim()],
    })
}

/// A Prometheus, a certificate provider and a COS collector, each played as its library
/// behaves, related to one `mode=all` unit and removed again: what each reads, web
/// restarted once per change, nothing left open.
fn played_counterparts() -> TestResult {
    let d = deploy_one_all()?;
    let (m, unit) = (&d.model, d.units[0].clone());
    let played = |name: &str, ep: &str, iface: &str, role: Role| {
        m.deploy_played(name, ep, iface, role)
            .map_err(|e| fail(format!("deploy {name}: {e}")))
    };
    let relate = |a: &str, b: &str| m.relate(a, b).map_err(|e| fail(format!("relate {a}: {e}")));

    // Prometheus: one job for the web unit's address, web restarted once with metrics on.
    run_until(m, "web started", |m| web_starts(m, &unit).0 > 0)?;
    settle(m)?;
    let (starts, _) = web_starts(m, &unit);
    played(
        "prometheus",
        "metrics-endpoint",
        "prometheus_scrape",
        Role::Requires,
    )?;
    let prom = relate("concourse-ci:monitoring", "prometheus")?;
    run_until(m, "web serving metrics", |m| {
        web_starts(m, &unit)
            .1
            .contains_key("CONCOURSE_PROMETHEUS_BIND_PORT")
    })?;
    settle(m)?;
    let address = m
        .databag(prom, &unit)
        .data
        .get("prometheus_scrape_unit_address")
        .cloned();
    let jobs = json_in(m, prom, APP_NAME, "scrape_jobs")?;
    json_in(m, prom, APP_NAME, "alert_rules")?;
    json_in(m, prom, APP_NAME, "scrape_metadata")?;
    let target = jobs[0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap_or_default()
        .replace('*', address.as_deref().unwrap_or("<none>"));
    ensure(target == "127.0.1.1:9391", || {
        format!("Prometheus would scrape {target}")
    })?;
    ensure(web_starts(m, &unit).0 == starts + 1, || {
        "web did not restart exactly once".into()
    })?;
    // The metrics port is opened for the monitoring endpoint only.
    let open = m.opened_ports_by_endpoint(&unit);
    ensure(
        open == ["2222/tcp (*)", "8080/tcp (*)", "9391/tcp (monitoring)"],
        || format!("ports: {open:?}"),
    )?;

    // A certificate provider signs the CSR: one restart with HTTPS.
    played("tls", "certificates", "tls-certificates", Role::Provides)?;
    let tls = relate("concourse-ci:certificates", "tls")?;
    run_until(m, "a CSR", |m| {
        m.databag(tls, &unit)
            .data
            .contains_key("certificate_signing_requests")
    })?;
    let csr = json_in(m, tls, &unit, "certificate_signing_requests")?[0]
        ["certificate_signing_request"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (starts, _) = web_starts(m, &unit);
    let answer = json!([sign(&csr)]).to_string();
    m.write_played_bag(tls, "tls", [("certificates".to_string(), answer)].into());
    run_until(m, "web serving https", |m| {
        web_starts(m, &unit).1.contains_key("CONCOURSE_TLS_CERT")
    })?;
    settle(m)?;
    let (n, env) = web_starts(m, &unit);
    ensure(n == starts + 1, || {
        format!("web started {} times for TLS", n - starts)
    })?;
    ensure(
        env.get("CONCOURSE_EXTERNAL_URL").map(String::as_str) == Some("https://127.0.1.1:8443"),
        || format!("external url {:?}", env.get("CONCOURSE_EXTERNAL_URL")),
    )?;
    // Web (user concourse) got the key from systemd's credentials directory; the key
    // itself is root's alone.
    ensure(
        env.get("CONCOURSE_TLS_KEY").map(String::as_str)
            == Some("/run/credentials/concourse-server.service/tls-key"),
        || format!("key path {:?}", env.get("CONCOURSE_TLS_KEY")),
    )?;
    let key = unit_file(m, &unit, "/var/lib/concourse-web/tls/key.pem");
    let meta = std::fs::metadata(&key).map_err(|e| fail(format!("{}: {e}", key.display())))?;
    use std::os::unix::fs::MetadataExt;
    ensure((meta.mode() & 0o777, meta.uid()) == (0o600, 0), || {
        format!("key mode {:o} uid {}", meta.mode() & 0o777, meta.uid())
    })?;
    let copy = unit_file(
        m,
        &unit,
        "/run/credentials/concourse-server.service/tls-key",
    );
    let cmeta = std::fs::metadata(&copy).map_err(|e| fail(format!("{}: {e}", copy.display())))?;
    ensure(cmeta.mode() & 0o777 == 0o400 && cmeta.uid() != 0, || {
        format!("copy mode {:o} uid {}", cmeta.mode() & 0o777, cmeta.uid())
    })?;
    let open = m.opened_ports_by_endpoint(&unit);
    ensure(
        open == [
            "2222/tcp (*)",
            "8080/tcp (*)",
            "8443/tcp (*)",
            "9391/tcp (monitoring)",
        ],
        || format!("ports with TLS: {open:?}"),
    )?;

    // Renewal (the requirer's, at 90% of the certificate's life): a certificate near its
    // end brings a new CSR for the same key; its certificate is applied with a reload.
    let web_pid = service_pid(m, &unit, "web").ok_or_else(|| fail("web is not running"))?;
    let csr_now = |m: &Model| {
        json_in(m, tls, &unit, "certificate_signing_requests")
            .ok()
            .and_then(|v| {
                v[0]["certificate_signing_request"]
                    .as_str()
                    .map(String::from)
            })
    };
    let old = sign_valid(&csr, -9 * 86_400, 86_400);
    m.write_played_bag(
        tls,
        "tls",
        [("certificates".to_string(), json!([old]).to_string())].into(),
    );
    run_until(m, "a renewal CSR", |m| csr_now(m).is_some_and(|c| c != csr))?;
    let renewal = csr_now(m).unwrap_or_default();
    let new = sign(&renewal);
    let renewed_at = epoch_now();
    m.write_played_bag(
        tls,
        "tls",
        [("certificates".to_string(), json!([old, new]).to_string())].into(),
    );
    let served = |m: &Model| {
        m.read_to_string(&unit, "/var/lib/concourse-web/tls/cert.pem")
            .unwrap_or_default()
    };
    let new_cert = new["certificate"].as_str().unwrap_or_default().to_string();
    run_until(m, "the renewed certificate served", |m| {
        served(m).starts_with(&new_cert)
    })?;
    settle(m)?;
    ensure(
        service_pid(m, &unit, "web") == Some(web_pid)
            && concourse_log(m, &unit)
                .iter()
                .any(|r| r.pid == web_pid && r.event == "reloaded" && r.ts >= renewed_at),
        || "the renewed certificate was not applied with a reload".into(),
    )?;

    // Revocation: the revoked certificate is no longer served, a new CSR follows, and the
    // certificate issued for it turns HTTPS on again.
    let mut revoked = new.clone();
    revoked["revoked"] = json!(true);
    m.write_played_bag(
        tls,
        "tls",
        [("certificates".to_string(), json!([revoked]).to_string())].into(),
    );
    run_until(m, "a CSR after the revocation", |m| {
        csr_now(m).is_some_and(|c| c != renewal && c != csr)
    })?;
    run_until(m, "web without the revoked certificate", |m| {
        !web_starts(m, &unit).1.contains_key("CONCOURSE_TLS_CERT")
    })?;
    let third = sign(&csr_now(m).unwrap_or_default());
    m.write_played_bag(
        tls,
        "tls",
        [(
            "certificates".to_string(),
            json!([revoked, third]).to_string(),
        )]
        .into(),
    );
    let third_cert = third["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    run_until(m, "HTTPS with the new certificate", |m| {
        served(m).starts_with(&third_cert)
            && web_starts(m, &unit).1.contains_key("CONCOURSE_TLS_CERT")
    })?;
    settle(m)?;

    // A COS collector gets jobs, rules and a dashboard that decode; its node-exporter's
    // textfile directory (made by the collector) gets the unit's upgrade phase.
    let textfiles = "/var/snap/node-exporter/common/textfile-collector.d";
    m.write_file(&unit, &format!("{textfiles}/other.prom"), b"")
        .map_err(|e| fail(format!("textfile dir: {e}")))?;
    let phase_file = format!("{textfiles}/concourse-ci_0.prom");
    played("otelcol", "cos-agent", "cos_agent", Role::Requires)?;
    let cos = relate("concourse-ci:cos-agent", "otelcol")?;
    run_until(m, "cos-agent config", |m| {
        m.databag(cos, &unit).data.contains_key("config")
    })?;
    let config = json_in(m, cos, &unit, "config")?;
    let dashboard = config["dashboards"][0].as_str().unwrap_or_default();
    let xz = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, dashboard)
        .map_err(|e| fail(format!("dashboard base64: {e}")))?;
    let mut text = Vec::new();
    lzma_rs::xz_decompress(&mut xz.as_slice(), &mut text)
        .map_err(|e| fail(format!("dashboard xz: {e}")))?;
    let board: Value = serde_json::from_slice(&text).map_err(|e| fail(format!("{e}")))?;
    ensure(board["title"] == "Concourse CI", || {
        "dashboard title".into()
    })?;
    ensure(config["metrics_alert_rules"]["groups"].is_array(), || {
        "rules".into()
    })?;
    run_until(m, "the upgrade phase textfile", |m| {
        m.exists(&unit, &phase_file)
    })?;
    let text = m
        .read_file(&unit, &phase_file)
        .map_err(|e| fail(format!("{phase_file}: {e}")))?;
    let text = String::from_utf8_lossy(&text);
    ensure(
        text.contains(r#"charm_unit="concourse-ci/0",phase="idle""#),
        || format!("textfile: {text}"),
    )?;

    // Removed one by one: web restarts once each time, into what is left.
    type EnvCheck = fn(&BTreeMap<String, String>) -> bool;
    let steps: [(u32, &str, EnvCheck); 3] = [
        (prom, "metrics on loopback only (cos-agent stays)", |e| {
            e.get("CONCOURSE_PROMETHEUS_BIND_IP").map(String::as_str) == Some("127.0.0.1")
        }),
        (tls, "TLS off", |e| !e.contains_key("CONCOURSE_TLS_CERT")),
        (cos, "metrics off", |e| {
            !e.contains_key("CONCOURSE_PROMETHEUS_BIND_IP")
        }),
    ];
    for (rel, what, check) in steps {
        let (starts, _) = web_starts(m, &unit);
        m.remove_relation(rel)
            .map_err(|e| fail(format!("remove {rel}: {e}")))?;
        run_until(m, what, |m| {
            let (n, env) = web_starts(m, &unit);
            n > starts && check(&env)
        })?;
        settle(m)?;
        let (n, _) = web_starts(m, &unit);
        ensure(n == starts + 1, || {
            format!("{what}: web started {} times", n - starts)
        })?;
    }
    let (_, env) = web_starts(m, &unit);
    ensure(
        !env.keys()
            .any(|k| k.starts_with("CONCOURSE_TLS_") || k.starts_with("CONCOURSE_PROMETHEUS_")),
        || format!("web still runs with {env:?}"),
    )?;
    let open = m.opened_ports_by_endpoint(&unit);
    ensure(open == ["2222/tcp (*)", "8080/tcp (*)"], || {
        format!("ports left open: {open:?}")
    })?;
    ensure(!m.exists(&unit, &phase_file), || {
        "the upgrade phase textfile outlived cos-agent".into()
    })?;
    no_failed_hooks(m, &d.units)?;
    no_duplicate_tool_calls(m, &d.units)
}
