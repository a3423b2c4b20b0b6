//! Metrics and COS on this unit: the `monitoring` (prometheus_scrape) and `cos-agent`
//! (cos_agent) provider endpoints, and whether and where web serves its metrics.
//!
//! Owns: what the unit (and, as leader, the application) writes on those relations,
//! and web's metrics bind address and opened port. Invariants: level-triggered: each
//! hook derives everything from the live relations (a relation in its `-broken` hook is
//! already gone, see [`live_relations`]), so removing the last metrics relation turns
//! metrics off and restarts web once; writes are diffed, so a steady state writes
//! nothing. Web's metrics are served on every address only while `monitoring` is
//! related (and the port is opened then only); with `cos-agent` alone, on the loopback
//! address the collector scrapes.

use std::net::IpAddr;

use super::workload::live_relations;
use super::CharmError;
use crate::config::CharmConfig;
use crate::cos::{self, Topology};
use crate::juju::{Databag, Juju};
use crate::roles::Roles;

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

/// Ports web opens for metrics: the metrics port while `monitoring` is related.
pub fn metrics_ports(juju: &Juju, config: &CharmConfig) -> Result<Vec<u16>, CharmError> {
    Ok(if live_relations(juju, MONITORING)?.is_empty() {
        Vec::new()
    } else {
        vec![config.metrics_port]
    })
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

fn bag(pairs: &[(&str, String)]) -> Databag {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}
