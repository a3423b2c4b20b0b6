//! Shared set-up for the simulator tests: a model, the charm, a release server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use juju_sim::release::ReleaseServer;
use juju_sim::tarball::{ReleaseSpec, TarballCache, Variant};
use juju_sim::{CharmSource, DeployOptions, Model, ModelOptions, Volume};
use libtest_mimic::{Failed, Trial};

pub type TestResult = Result<(), Failed>;

/// Generous bound for anything a test waits for.
pub const LONG: Duration = Duration::from_secs(180);

/// Versions used by the tests.
pub const V1: &str = "7.14.3";
pub const V2: &str = "8.0.0";

/// Size of generated test tarballs.
pub const TARBALL_SIZE: u64 = 2 * 1024 * 1024;

pub fn trial(name: &str, f: fn() -> TestResult) -> Trial {
    Trial::test(name, f)
}

/// Fails the test with a message (and the model dump, when given).
pub fn fail(msg: impl Into<String>) -> Failed {
    Failed::from(msg.into())
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(fail(msg()))
    }
}

pub fn charm() -> CharmSource {
    CharmSource::dir(env!("CARGO_MANIFEST_DIR"), env!("CARGO_BIN_EXE_dispatch"))
}

pub fn model() -> Result<Model, Failed> {
    model_with(ModelOptions {
        update_status_interval: Some(Duration::from_secs(3)),
        ..ModelOptions::default()
    })
}

pub fn model_with(opts: ModelOptions) -> Result<Model, Failed> {
    Model::new(opts).map_err(|e| fail(format!("model: {e}")))
}

/// Tarballs are generated once per test run.
pub fn tarballs() -> &'static TarballCache {
    static CACHE: OnceLock<TarballCache> = OnceLock::new();
    CACHE.get_or_init(|| TarballCache::shared().expect("tarball cache directory"))
}

/// A release server with the given versions registered.
pub fn release_server(versions: &[(&str, Variant)]) -> Result<ReleaseServer, Failed> {
    let server = ReleaseServer::start().map_err(|e| fail(format!("release server: {e}")))?;
    for (v, variant) in versions {
        let t = tarballs()
            .get(&ReleaseSpec::new(v, TARBALL_SIZE, *variant))
            .map_err(|e| fail(format!("tarball {v}: {e}")))?;
        server.register(t);
    }
    Ok(server)
}

/// Config pointing the charm at the local server.
pub fn config(server: &ReleaseServer, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut c: BTreeMap<String, String> = BTreeMap::new();
    c.insert("release-url".into(), server.release_url_template());
    c.insert("release-api-url".into(), server.github_api_url());
    for (k, v) in pairs {
        c.insert(k.to_string(), v.to_string());
    }
    c
}

pub fn deploy(
    m: &Model,
    app: &str,
    n: usize,
    config: BTreeMap<String, String>,
    storage: Volume,
) -> Result<Vec<String>, Failed> {
    m.deploy(
        charm(),
        app,
        n,
        DeployOptions {
            config: config
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect(),
            storage,
            ..DeployOptions::default()
        },
    )
    .map_err(|e| fail(format!("deploy: {e}")))
}

pub fn settle(m: &Model) -> TestResult {
    m.settle(LONG).map_err(|e| fail(format!("settle: {e}")))
}

pub fn run_until(m: &Model, what: &str, pred: impl Fn(&Model) -> bool) -> TestResult {
    m.run_until_named(what, LONG, pred)
        .map_err(|e| fail(format!("waiting for {what}: {e}")))
}

/// No unit of the list had a failed hook.
pub fn no_failed_hooks(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        let failed = m.failed_hooks(u);
        ensure(failed.is_empty(), || {
            format!(
                "{u} had failed hooks: {:?}\n{}",
                failed
                    .iter()
                    .map(|h| (&h.name, &h.stderr))
                    .collect::<Vec<_>>(),
                m.dump()
            )
        })?;
    }
    Ok(())
}

/// No hook of these units read or wrote the same datum twice (the per-hook cache works).
pub fn no_duplicate_tool_calls(m: &Model, units: &[String]) -> TestResult {
    for u in units {
        for h in m.hooks(u) {
            let d: Vec<_> = h
                .duplicate_calls()
                .into_iter()
                .filter(|(args, _)| {
                    !matches!(
                        args.first().map(String::as_str),
                        Some("juju-log" | "action-log")
                    )
                })
                .collect();
            ensure(d.is_empty(), || {
                format!("{u} {}: repeated tool calls {d:?}", h.name)
            })?;
        }
    }
    Ok(())
}
