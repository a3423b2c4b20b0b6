//! The version the application should run: the `version` option, or the latest upstream
//! release, looked up at most once per cache period and never older than what runs.
//!
//! Owns: the latest-release cache in this unit's state on the volume. Invariants: a failed
//! lookup falls back to the cached value; without one the leader blocks naming the fix.

use tracing::{info, warn};

use super::super::release;
use super::super::status::Reports;
use crate::config::CharmConfig;
use crate::host::Host;
use crate::installer;
use crate::juju::Juju;
use crate::storage_coordinator::Volume;
use crate::upgrade::AppUpgrade;

/// The version the application should run, per config (pinned or the latest release).
pub fn desired_version(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    vol: &Volume,
    app: &AppUpgrade,
    reports: &mut Reports,
) -> Option<String> {
    if let Some(v) = &config.version {
        return Some(v.clone());
    }
    let me = juju.unit_name();
    let state = vol.read_unit_state(me).ok().flatten().unwrap_or_default();
    let running = (!app.release.is_empty()).then_some(app.release.as_str());
    let mut http = release::install_options(juju, config).http;
    http.extra_ca_pem = config.release_ca.clone();
    let token = match release::github_token(juju, config) {
        Ok(Ok(t)) => t,
        Ok(Err(status)) => {
            reports.push(status);
            return None;
        }
        Err(e) => {
            warn!("reading the GitHub token: {}", crate::error_chain(&e));
            crate::config::Secret::default()
        }
    };
    let lookup = || installer::latest_version(&config.release_api_url, &token, &http);
    match installer::resolve_latest(
        state.latest.as_ref(),
        host.clock.unix_now(),
        installer::LATEST_CACHE_TTL,
        running,
        lookup,
    ) {
        Ok(r) => {
            if let Some(e) = &r.lookup_error {
                warn!(
                    "latest release lookup failed, using the cached v{}: {e}",
                    r.version
                );
            }
            if let Some(newer_upstream) = &r.held_back {
                info!(
                    "upstream latest is v{newer_upstream}, older than v{}: not downgrading",
                    r.version
                );
            }
            if !r.from_cache {
                let cache = r.cache.clone();
                if let Err(e) = vol.update_unit_state(me, |s| s.latest = Some(cache)) {
                    warn!(
                        "cannot cache the latest version: {}",
                        crate::error_chain(&e)
                    );
                }
            }
            Some(r.version)
        }
        Err(e) => {
            reports.blocked(format!(
                "{}; set version= to pin a release",
                e.status_message()
            ));
            None
        }
    }
}
