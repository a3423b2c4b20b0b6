//! Issue 15 in the simulator: the model's proxy settings reach the real downloader and the
//! running worker, and the worker runs with Concourse's own volume driver choice.
//!
//! The release server doubles as the model's HTTP proxy: hyper answers absolute-form
//! requests (`GET http://releases.invalid/...`) by their path, and `releases.invalid`
//! never resolves (RFC 6761), so every request the server logs came through the proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use juju_sim::model::ProxySettings;
use juju_sim::{ModelOptions, PostgresOptions, Volume};
use libtest_mimic::Trial;
use release_fixtures::server::RequestKind;
use release_fixtures::tarball::Variant;

use crate::common::*;

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "observe::model_proxies_reach_the_download_and_the_worker_which_runs_the_detected_driver",
        proxies_and_runtime,
    )]
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
