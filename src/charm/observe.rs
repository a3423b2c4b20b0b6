//! Metrics and COS on this unit: the `monitoring` (prometheus_scrape) and `cos-agent`
//! (cos_agent) provider endpoints, and whether and where web serves its metrics.
//!
//! Owns: what the unit (and, as leader, the application) writes on those relations,
//! web's metrics bind address, the reconcile of the unit's opened ports by endpoint
//! ([`port_changes`], [`apply_ports`]), and the unit's upgrade-phase textfile for the
//! COS collector's node-exporter ([`upgrade_textfile`]).
//!
//! Invariants: level-triggered: each hook derives everything from the live relations
//! (a relation in its `-broken` hook is already gone, see [`live_relations`]), from
//! `opened-ports --endpoints` and from the peer data, so removing the last
//! metrics relation turns metrics off, restarts web once and closes the port; writes
//! are diffed, so a steady state writes nothing. Web's metrics are served on every
//! address only while `monitoring` is related, and their port is opened then for the
//! `monitoring` endpoint only (`juju expose --endpoints monitoring` reaches it); with
//! `cos-agent` alone, on the loopback address the collector on the machine scrapes, and
//! nothing is opened. Hazard: Juju applies a hook's opens before its closes
//! (`state/machine_ports_ops.go`), so a port held open for every endpoint (a charm
//! before this one did that) is closed in one hook and opened for `monitoring` in the
//! next (the `config-changed` that follows `upgrade-charm`).

use std::net::IpAddr;

use tracing::info;

use super::workload::live_relations;
use super::CharmError;
use crate::config::CharmConfig;
use crate::cos::{self, Topology};
use crate::host::Host;
use crate::juju::client::OpenedPort;
use crate::juju::{Databag, Juju};
use crate::roles::Roles;
use crate::upgrade::AppUpgrade;

pub const MONITORING: &str = "monitoring";
pub const COS_AGENT: &str = "cos-agent";

/// Unit databag keys of prometheus_scrape (`_set_unit_ip` in the library).
const UNIT_ADDRESS: &str = "prometheus_scrape_unit_address";
const UNIT_NAME: &str = "prometheus_scrape_unit_name";

fn topology(juju: &Juju) -> Topology {
    let ctx = juju.context();
    Topology {
        model: ctx.model_name.clone(),
        model_uuid: ctx.model_uuid.clone(),
        application: ctx.app_name.clone(),
        unit: ctx.unit_name.clone(),
    }
}

/// Where web serves its metrics (`CONCOURSE_PROMETHEUS_BIND_IP`), or `None` when no
/// relation wants them. Concourse joins IP and port with `"%s:%s"`
/// (`atc/metric/emitter/prometheus.go`, `bind()`), so an IPv6 wildcard goes in brackets.
pub fn metrics_bind(juju: &Juju, address: &str) -> Result<Option<String>, CharmError> {
    if !live_relations(juju, MONITORING)?.is_empty() {
        let v6 = matches!(address.parse::<IpAddr>(), Ok(IpAddr::V6(_)));
        return Ok(Some(if v6 { "[::]" } else { "0.0.0.0" }.to_string()));
    }
    if !live_relations(juju, COS_AGENT)?.is_empty() {
        return Ok(Some("127.0.0.1".to_string()));
    }
    Ok(None)
}

/// A TCP port the unit should have open, for `endpoints` (empty: every endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPort {
    pub port: u16,
    pub endpoints: Vec<String>,
}

impl WantedPort {
    /// Open for every endpoint (`open-port <port>/tcp`).
    pub fn everywhere(port: u16) -> WantedPort {
        WantedPort {
            port,
            endpoints: Vec::new(),
        }
    }
}

/// One `open-port`/`close-port <port>/tcp [--endpoints ...]` (no endpoints: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortChange {
    Open(u16, Vec<String>),
    Close(u16, Vec<String>),
}

/// Ports web opens for metrics: the metrics port, for the `monitoring` endpoint only,
/// while `monitoring` is related.
pub fn metrics_ports(juju: &Juju, config: &CharmConfig) -> Result<Vec<WantedPort>, CharmError> {
    Ok(if live_relations(juju, MONITORING)?.is_empty() {
        Vec::new()
    } else {
        vec![WantedPort {
            port: config.metrics_port,
            endpoints: vec![MONITORING.to_string()],
        }]
    })
}

/// What turns the single TCP ports in `opened` into `wanted` (other entries, such as
/// ranges an operator opened, are left alone). Pure. A port open for every endpoint but
/// wanted for some is only closed here: Juju would drop an open for an endpoint made in
/// the same hook as the close of the wildcard entry (opens apply first, and find it open).
pub fn port_changes(opened: &[OpenedPort], wanted: &[WantedPort]) -> Vec<PortChange> {
    let minus = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    let mut out = Vec::new();
    for o in opened {
        let Some(port) = o.tcp_port() else { continue };
        let Some(w) = wanted.iter().find(|w| w.port == port) else {
            out.push(PortChange::Close(port, Vec::new()));
            continue;
        };
        match (w.endpoints.is_empty(), o.endpoints.is_empty()) {
            (true, true) => {}
            (true, false) => out.push(PortChange::Open(port, Vec::new())),
            (false, true) => out.push(PortChange::Close(port, Vec::new())),
            (false, false) => {
                let extra = minus(&o.endpoints, &w.endpoints);
                let missing = minus(&w.endpoints, &o.endpoints);
                if !extra.is_empty() {
                    out.push(PortChange::Close(port, extra));
                }
                if !missing.is_empty() {
                    out.push(PortChange::Open(port, missing));
                }
            }
        }
    }
    for w in wanted {
        if !opened.iter().any(|o| o.tcp_port() == Some(w.port)) {
            out.push(PortChange::Open(w.port, w.endpoints.clone()));
        }
    }
    out
}

/// Makes the unit's opened TCP ports `wanted` (read once per hook, changed when they
/// differ; committed with the hook).
pub fn apply_ports(juju: &Juju, wanted: &[WantedPort]) -> Result<(), CharmError> {
    let opened = juju.opened_ports()?;
    for change in port_changes(&opened, wanted) {
        match &change {
            PortChange::Open(port, eps) => {
                let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                juju.open_port(*port, "tcp", &eps)?;
            }
            PortChange::Close(port, eps) => {
                let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
                if eps.is_empty() && wanted.iter().any(|w| w.port == *port) {
                    info!("closing {port}/tcp for every endpoint; a later hook opens it for its own endpoints");
                }
                juju.close_port(*port, "tcp", &eps)?;
            }
        }
    }
    Ok(())
}

/// Publishes this unit's (and, on the leader, the application's) data on every live
/// `monitoring` and `cos-agent` relation. Units without the web role export no
/// metrics: they publish no scrape address (the consumer skips such units).
pub fn publish(
    juju: &Juju,
    config: &CharmConfig,
    leader: bool,
    roles: Roles,
) -> Result<(), CharmError> {
    let topo = topology(juju);
    let monitoring = live_relations(juju, MONITORING)?;
    if !monitoring.is_empty() {
        // The address on the relation's own binding, as the library's `_set_unit_ip`.
        let info = juju.network_get(MONITORING)?;
        let address = info.primary_address().unwrap_or("127.0.0.1");
        let unit: Databag = if roles.web {
            bag(&[
                (UNIT_ADDRESS, cos::scrape_address(address)),
                (UNIT_NAME, juju.unit_name().to_string()),
            ])
        } else {
            bag(&[(UNIT_ADDRESS, String::new()), (UNIT_NAME, String::new())])
        };
        let app = bag(&[
            ("scrape_metadata", topo.scrape_metadata().to_string()),
            (
                "scrape_jobs",
                cos::scrape_jobs(config.metrics_port).to_string(),
            ),
            ("alert_rules", cos::alert_rules(&topo).to_string()),
        ]);
        for rel in &monitoring {
            juju.relation_set(rel, false, &unit)?;
            if leader {
                juju.relation_set(rel, true, &app)?;
            }
        }
    }
    for rel in live_relations(juju, COS_AGENT)? {
        let port = roles.web.then_some(config.metrics_port);
        let data = cos::cos_agent_config(&topo, port).to_string();
        juju.relation_set(&rel, false, &bag(&[("config", data)]))?;
    }
    Ok(())
}

/// The unit's textfile in the collector's node-exporter directory.
fn textfile_path(juju: &Juju) -> std::path::PathBuf {
    let name = format!("{}.prom", juju.unit_name().replace('/', "_"));
    std::path::Path::new(cos::TEXTFILE_DIR).join(name)
}

/// Writes the upgrade phase this unit sees (`app`, the peer app databag's) where the COS
/// collector's node-exporter reads textfiles, while `cos-agent` is related and that
/// directory exists (opentelemetry-collector makes it; the charm never does), and
/// removes it otherwise. Level-triggered: every full reconcile writes what it sees
/// (only when it differs); a unit whose hooks stop keeps its last phase, which the
/// upgrade-stuck alert then reports.
pub fn upgrade_textfile(juju: &Juju, host: &Host, app: &AppUpgrade) -> Result<(), CharmError> {
    let path = host.paths.local(textfile_path(juju));
    let io = |what: &str, e: std::io::Error| {
        CharmError::Workload(format!("cannot {what} {}: {e}", path.display()))
    };
    let wanted = !live_relations(juju, COS_AGENT)?.is_empty()
        && path.parent().is_some_and(std::path::Path::is_dir);
    if !wanted {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", e)),
            _ => Ok(()),
        };
    }
    let text =
        cos::upgrade_phase_textfile(&topology(juju), app.phase.as_str(), app.gen, &app.target);
    let root = host.provisioner.charm_owner();
    crate::fsutil::write_if_changed(&path, text.as_bytes(), 0o644, Some(root))
        .map_err(|e| io("write", e))?;
    Ok(())
}

fn bag(pairs: &[(&str, String)]) -> Databag {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(range: &str, eps: &[&str]) -> OpenedPort {
        OpenedPort {
            range: range.to_string(),
            endpoints: eps.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn wanted(port: u16, eps: &[&str]) -> WantedPort {
        WantedPort {
            port,
            endpoints: eps.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn eps(e: &[&str]) -> Vec<String> {
        e.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_steady_state_changes_nothing() {
        let o = [opened("8080/tcp", &[]), opened("9391/tcp", &["monitoring"])];
        let w = [wanted(8080, &[]), wanted(9391, &["monitoring"])];
        assert!(port_changes(&o, &w).is_empty());
    }

    #[test]
    fn unwanted_ports_close_everywhere_and_missing_ones_open_as_wanted() {
        let o = [opened("9391/tcp", &["monitoring"]), opened("8080/tcp", &[])];
        let w = [
            wanted(8080, &[]),
            wanted(8443, &[]),
            wanted(9100, &["monitoring"]),
        ];
        assert_eq!(
            port_changes(&o, &w),
            [
                PortChange::Close(9391, vec![]),
                PortChange::Open(8443, vec![]),
                PortChange::Open(9100, eps(&["monitoring"])),
            ]
        );
    }

    #[test]
    fn a_unit_wide_port_wanted_for_one_endpoint_is_only_closed_in_this_hook() {
        let o = [opened("9391/tcp", &[])];
        let w = [wanted(9391, &["monitoring"])];
        assert_eq!(port_changes(&o, &w), [PortChange::Close(9391, vec![])]);
        // and the next hook, which finds it closed, opens it for the endpoint
        assert_eq!(
            port_changes(&[], &w),
            [PortChange::Open(9391, eps(&["monitoring"]))]
        );
    }

    #[test]
    fn scoped_ports_are_narrowed_widened_and_extended() {
        let o = [
            opened("9391/tcp", &["cos-agent", "monitoring"]),
            opened("8080/tcp", &["monitoring"]),
            opened("2222/tcp", &["peers"]),
        ];
        let w = [
            wanted(9391, &["monitoring"]),
            wanted(8080, &[]),
            wanted(2222, &["peers", "tsa"]),
        ];
        assert_eq!(
            port_changes(&o, &w),
            [
                PortChange::Close(9391, eps(&["cos-agent"])),
                PortChange::Open(8080, vec![]),
                PortChange::Open(2222, eps(&["tsa"])),
            ]
        );
    }

    #[test]
    fn ranges_and_other_protocols_are_left_alone() {
        let o = [
            opened("8000-8100/tcp", &[]),
            opened("53/udp", &[]),
            opened("icmp", &[]),
        ];
        assert!(port_changes(&o, &[]).is_empty());
    }
}
