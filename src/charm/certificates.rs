//! TLS for web on this unit: the `certificates` requires endpoint (`tls-certificates`
//! v4, unit mode; the protocol is in [`crate::tls`]).
//!
//! Owns: web's TLS key (`/var/lib/concourse-web/tls/key.pem`, generated on the unit,
//! 0600 root: web, running as `concourse`, never reads it there but gets a copy from
//! systemd, see [`crate::web::tls_unit`]), the served certificate chain (`cert.pem`,
//! 0644), this unit's request record
//! (`/var/lib/concourse-ci/tls-request.json`, 0600) and the unit's
//! `certificate_signing_requests`.
//!
//! Invariants (level-triggered, every hook of a web unit): without a live relation no
//! certificate is served and the cert file is removed (the key stays for the next
//! relation); the CSR names the unit's addresses and external-url's host, and a new CSR
//! (same key) is sent when those names change, when the certificate answering it is
//! revoked, or once 90% of its life has passed; the certificate served is one the
//! provider issued for this key, not revoked and valid now.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::status::{messages as msg, Reports};
use super::workload::live_relations;
use super::CharmError;
use crate::config::CharmConfig;
use crate::fsutil::{self, Owner};
use crate::host::Host;
use crate::juju::{Bag, Juju};
use crate::roles::Roles;
use crate::tls::{self, Request};

pub const ENDPOINT: &str = "certificates";
const CSR_KEY: &str = "certificate_signing_requests";

pub fn tls_dir() -> PathBuf {
    Path::new(crate::web::HOME).join("tls")
}
pub fn key_path() -> PathBuf {
    tls_dir().join("key.pem")
}
pub fn cert_path() -> PathBuf {
    tls_dir().join("cert.pem")
}
fn request_path() -> PathBuf {
    PathBuf::from("/var/lib/concourse-ci/tls-request.json")
}

/// The files web serves HTTPS with, when a certificate is in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CharmError {
    CharmError::Workload(format!("cannot {what} {}: {e}", path.display()))
}

/// The names the CSR carries: external-url's host first (it is what users type), then
/// the unit's addresses on the relation's binding.
fn wanted_names(juju: &Juju, config: &CharmConfig) -> Result<Vec<String>, CharmError> {
    let mut names: Vec<String> = Vec::new();
    if let Some(url) = config.external_url.as_deref() {
        if let Some(host) = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            names.push(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            );
        }
    }
    let info = juju.network_get(ENDPOINT)?;
    for a in info.ingress_addresses.iter().cloned().chain(
        info.bind_addresses
            .iter()
            .flat_map(|b| b.addresses.iter().map(|a| a.value.clone())),
    ) {
        if !a.is_empty() && !names.contains(&a) {
            names.push(a);
        }
    }
    Ok(names)
}

/// The unit's key, made once; root's alone (0600), whoever owned it before (a charm
/// before this one made it 0640 root:concourse).
fn ensure_key(host: &Host) -> Result<String, CharmError> {
    let path = host.paths.local(key_path());
    let owner = Some(host.provisioner.charm_owner());
    if let Ok(pem) = std::fs::read_to_string(&path) {
        if tls::public_key_der(&pem).is_ok() {
            // Level-triggered owner and mode (a restored backup, a strict umask).
            fsutil::write_if_changed(&path, pem.as_bytes(), 0o600, owner)
                .map_err(|e| io_err("write", &path, e))?;
            return Ok(pem);
        }
        warn!(
            "the TLS key {} is unreadable: making a new one",
            key_path().display()
        );
    }
    let pem = tls::generate_key().map_err(|e| CharmError::Workload(crate::error_chain(&e)))?;
    fsutil::write_if_changed(&path, pem.as_bytes(), 0o600, owner)
        .map_err(|e| io_err("write", &path, e))?;
    info!("generated web's TLS key");
    Ok(pem)
}

fn read_request(host: &Host) -> Option<Request> {
    let text = std::fs::read(host.paths.local(request_path())).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_request(host: &Host, r: &Request) -> Result<(), CharmError> {
    let path = host.paths.local(request_path());
    let text = serde_json::to_vec(r).unwrap_or_default();
    fsutil::write_if_changed(&path, &text, 0o600, None).map_err(|e| io_err("write", &path, e))?;
    Ok(())
}

/// Removes the served certificate (the relation is gone). Cheap when there is none.
fn stop_serving(host: &Host) -> Result<(), CharmError> {
    let path = host.paths.local(cert_path());
    match std::fs::remove_file(&path) {
        Ok(()) => {
            info!("TLS off: no certificates relation");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", &path, e)),
    }
}

/// A unit whose roles are known and exclude web asks for no certificate and serves none
/// (it may have lost the role). Cheap when there is nothing to withdraw.
pub fn withdraw_unless_web(juju: &Juju, host: &Host, roles: Roles) -> Result<(), CharmError> {
    if roles.web {
        return Ok(());
    }
    for rel in live_relations(juju, ENDPOINT)? {
        let mut data = crate::juju::Databag::new();
        data.insert(CSR_KEY.into(), String::new());
        juju.relation_set(&rel, false, &data)?;
    }
    stop_serving(host)
}

/// Requests, renews and installs web's certificate; returns the files to serve HTTPS
/// with, or `None` (no relation, no usable certificate yet, or an http external-url).
pub fn web_tls(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    owner: Owner,
    reports: &mut Reports,
) -> Result<Option<ServedTls>, CharmError> {
    let Some(rel) = live_relations(juju, ENDPOINT)?.into_iter().next() else {
        stop_serving(host)?;
        return Ok(None);
    };
    let key = ensure_key(host)?;
    let public =
        tls::public_key_der(&key).map_err(|e| CharmError::Workload(crate::error_chain(&e)))?;
    let names = wanted_names(juju, config)?;
    let issued = match juju.relation_remote_app(&rel)? {
        Some(app) => {
            let bag = juju.relation_get(&rel, &Bag::App(app))?;
            tls::parse_certificates(bag.get("certificates").map(String::as_str))
        }
        None => Vec::new(),
    };
    let now = i64::try_from(host.clock.unix_now()).unwrap_or(i64::MAX);
    // A request made with another key (the key was lost and made anew) is no request.
    let current =
        read_request(host).filter(|r| r.names == names && tls::csr_is_for(&r.csr, &public));
    let renew = current.as_ref().is_some_and(|r| {
        tls::answer_to(&issued, &r.csr, &public).is_some_and(|i| {
            i.is_revoked() || tls::cert_info(&i.certificate).is_some_and(|c| c.renewal_due(now))
        })
    });
    let request = match current {
        Some(r) if !renew => r,
        _ => {
            let csr =
                tls::csr(&key, &names).map_err(|e| CharmError::Workload(crate::error_chain(&e)))?;
            info!("requesting a TLS certificate for {}", names.join(", "));
            let r = Request { csr, names };
            write_request(host, &r)?;
            r
        }
    };
    let mut data = crate::juju::Databag::new();
    data.insert(CSR_KEY.into(), tls::requests_value(&request.csr));
    juju.relation_set(&rel, false, &data)?;

    let Some(cert) = tls::to_serve(&issued, &request.csr, &public, now) else {
        stop_serving(host)?;
        let app = juju.relation_remote_app(&rel)?.unwrap_or_default();
        reports.note(msg::TLS_WAITING_FOR_CERTIFICATE.fill(&[&app]).message);
        return Ok(None);
    };
    if config
        .external_url
        .as_deref()
        .is_some_and(|u| !u.starts_with("https://"))
    {
        // Concourse refuses TLS with an http external URL (atc/atccmd/command.go, validate).
        stop_serving(host)?;
        reports.note(msg::TLS_EXTERNAL_URL_NOT_HTTPS.text);
        return Ok(None);
    }
    if config.tls_port == config.web_port {
        stop_serving(host)?;
        let port = config.tls_port.to_string();
        reports.note(msg::TLS_PORT_IS_WEB_PORT.fill(&[&port]).message);
        return Ok(None);
    }
    let path = host.paths.local(cert_path());
    fsutil::write_if_changed(&path, cert.fullchain().as_bytes(), 0o644, Some(owner))
        .map_err(|e| io_err("write", &path, e))?;
    Ok(Some(ServedTls {
        cert: cert_path(),
        key: key_path(),
    }))
}
