//! What the charm tells Prometheus and the COS collector: pure.
//!
//! Owns: the `prometheus_scrape` provider data (scrape job, scrape metadata, alert rules,
//! the unit's address keys) and the `cos_agent` provider unit data (`config`: scrape
//! jobs, alert rules, dashboards, log slots), the alert rules
//! (`rules/concourse-ci.rules.yaml`) and the Grafana dashboard
//! (`dashboards/concourse-ci.json`), both compiled in, and the list of metrics Concourse
//! really exports.
//!
//! Shapes follow the real libraries: `charms.prometheus_k8s.v0.prometheus_scrape`
//! (LIBPATCH 61, canonical/prometheus-k8s-operator
//! `lib/charms/prometheus_k8s/v0/prometheus_scrape.py`: `set_scrape_job_spec`,
//! `_set_unit_ip`, `expand_wildcard_targets_into_individual_jobs`) and
//! `charms.grafana_agent.v0.cos_agent` (LIBPATCH 26, canonical/grafana-agent-operator
//! `lib/charms/grafana_agent/v0/cos_agent.py`: `CosAgentProviderUnitData`), with cosl's
//! topology labels and dashboard encoding (canonical/cos-lib `juju_topology.py`,
//! `grafana_dashboard.py`, `utils.py` `LZMABase64`).
//!
//! Invariants: every string produced here parses (JSON); every metric the rules and the
//! dashboard query is in [`CONCOURSE_METRICS`] (tested).

use std::net::IpAddr;

use serde_json::{json, Value};

/// The charm's name (metadata.yaml), the topology's `charm_name`.
pub const CHARM_NAME: &str = "concourse-ci";
/// The scrape job's fixed name: the library's docstring warns that a name changing
/// with the units breaks the series' continuity.
pub const JOB_NAME: &str = "concourse";

const RULES_YAML: &str = include_str!("../rules/concourse-ci.rules.yaml");
const CHARM_RULES_YAML: &str = include_str!("../rules/concourse-ci-charm.rules.yaml");
const DASHBOARD_JSON: &str = include_str!("../dashboards/concourse-ci.json");
/// The dashboard's path in the charm, from which its uid is derived.
const DASHBOARD_PATH: &str = "dashboards/concourse-ci.json";

/// Metric families Concourse web exports (concourse/concourse v7.14.3
/// `atc/metric/emitter/prometheus.go`; the same set in v7.11.2 and v8.0.0). Histograms
/// also have `_bucket`, `_sum` and `_count` series. The worker exports none.
pub const CONCOURSE_METRICS: &[&str] = &[
    "concourse_error_logs",
    "concourse_locks_held",
    "concourse_jobs_scheduled_total",
    "concourse_jobs_scheduling",
    "concourse_jobs_schedulingDuration",
    "concourse_builds_started_total",
    "concourse_builds_running",
    "concourse_builds_check_started_total",
    "concourse_builds_check_running",
    "concourse_concurrent_requests_limit_hit_total",
    "concourse_concurrent_requests",
    "concourse_builds_latest_completed_build_status",
    "concourse_steps_waiting",
    "concourse_steps_wait_duration",
    "concourse_builds_finished_total",
    "concourse_builds_succeeded_total",
    "concourse_builds_errored_total",
    "concourse_builds_failed_total",
    "concourse_builds_aborted_total",
    "concourse_builds_finished",
    "concourse_builds_duration_seconds",
    "concourse_builds_check_finished_total",
    "concourse_builds_check_succeeded_total",
    "concourse_builds_check_errored_total",
    "concourse_builds_check_failed_total",
    "concourse_builds_check_aborted_total",
    "concourse_workers_containers",
    "concourse_workers_unknown_containers",
    "concourse_workers_volumes",
    "concourse_workers_unknown_volumes",
    "concourse_workers_tasks",
    "concourse_workers_registered",
    "concourse_http_responses_duration_seconds",
    "concourse_db_queries_total",
    "concourse_db_connections",
    "concourse_lidar_checks_finished_total",
    "concourse_lidar_checks_started_total",
    "concourse_lidar_checks_enqueued_total",
    "concourse_volumes_volumes_streamed",
    "concourse_volumes_orphaned_volumes_to_be_deleted",
    "concourse_caches_get_step_cache_hits",
    "concourse_caches_streamed_resource_caches",
];

/// Where this unit is in the model (cosl `JujuTopology`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub model: String,
    pub model_uuid: String,
    pub application: String,
    pub unit: String,
}

impl Topology {
    /// `scrape_metadata`: `JujuTopology.as_dict()`.
    pub fn scrape_metadata(&self) -> Value {
        json!({
            "model": self.model,
            "model_uuid": self.model_uuid,
            "application": self.application,
            "unit": self.unit,
            "charm_name": CHARM_NAME,
        })
    }

    /// `JujuTopology.identifier`: `<model>_<first 8 of the uuid>_<application>`.
    fn identifier(&self) -> String {
        let short: String = self.model_uuid.chars().take(8).collect();
        format!("{}_{short}_{}", self.model, self.application).replace('/', "_")
    }

    /// The labels every alert rule carries (`label_matcher_dict`), so the consumer can
    /// inject them into each expression.
    fn labels(&self) -> Value {
        json!({
            "juju_model": self.model,
            "juju_model_uuid": self.model_uuid,
            "juju_application": self.application,
            "juju_charm": CHARM_NAME,
        })
    }
}

/// The scrape job: a wildcard target the consumer expands once per unit that published
/// an address (`expand_wildcard_targets_into_individual_jobs`). Concourse serves its
/// metrics on every path (`promhttp.Handler()` without a mux), `/metrics` included.
pub fn scrape_jobs(metrics_port: u16) -> Value {
    json!([{
        "job_name": JOB_NAME,
        "metrics_path": "/metrics",
        "static_configs": [{"targets": [format!("*:{metrics_port}")]}],
    }])
}

/// The address a unit publishes as `prometheus_scrape_unit_address`. The consumer
/// replaces `*` in `*:<port>` with it as text, so an IPv6 address is sent in brackets:
/// the bare one the library sends would make the target `fd42::5:9391`.
pub fn scrape_address(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    }
}

/// The alert rules, `{"groups": [...]}` as the libraries send them: group names
/// prefixed with the topology identifier and ending in `_rules` (cosl `rules.py`),
/// every rule labelled with the topology.
pub fn alert_rules(t: &Topology) -> Value {
    let Ok(mut rules) = serde_yaml::from_str::<Value>(RULES_YAML) else {
        return json!({});
    };
    let prefix = t.identifier();
    if let Some(groups) = rules["groups"].as_array_mut() {
        for g in groups {
            let name = g["name"].as_str().unwrap_or("alerts").to_string();
            let name = format!("{prefix}_{name}_rules");
            g["name"] = Value::String(sanitize_group_name(&name));
            for rule in g["rules"].as_array_mut().into_iter().flatten() {
                let labels = rule
                    .as_object_mut()
                    .map(|r| r.entry("labels").or_insert_with(|| json!({})));
                if let Some(Value::Object(l)) = labels {
                    for (k, v) in t.labels().as_object().into_iter().flatten() {
                        l.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
        }
    }
    rules
}

/// cosl replaces characters outside `[a-zA-Z0-9_:]` in group names with `_`.
fn sanitize_group_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The dashboard as cos_agent sends it: the uid cosl prescribes
/// (`DashboardPath40UID.generate`: shake_256 of `<charm>-<path>`, 40 hex digits), the
/// `charm: <name>` tag, then `base64(xz(json))` (`LZMABase64.compress`).
pub fn encoded_dashboard() -> Option<String> {
    use base64::Engine as _;
    let mut d: Value = serde_json::from_str(DASHBOARD_JSON).ok()?;
    d["uid"] = Value::String(dashboard_uid());
    let tag = format!("charm: {CHARM_NAME}");
    if let Some(tags) = d["tags"].as_array_mut() {
        if !tags
            .iter()
            .any(|t| t.as_str().is_some_and(|s| s.starts_with("charm: ")))
        {
            tags.push(Value::String(tag));
        }
    }
    let text = serde_json::to_vec(&d).ok()?;
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut text.as_slice(), &mut xz).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(xz))
}

fn dashboard_uid() -> String {
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    let mut h = sha3::Shake256::default();
    h.update(format!("{CHARM_NAME}-{DASHBOARD_PATH}").as_bytes());
    let mut out = [0u8; 20];
    h.finalize_xof().read(&mut out);
    out.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `cos_agent` unit databag's `config` (`CosAgentProviderUnitData`): all five
/// required fields always present. `metrics_port` is set on units that run web; the
/// collector runs on the same machine, so the target is the loopback address.
/// Metrics the charm itself writes for the collector's node-exporter (textfile
/// collector), besides Concourse's.
pub const CHARM_METRICS: &[&str] = &["concourse_ci_upgrade_phase"];

/// Where opentelemetry-collector's node-exporter reads `*.prom` files
/// (canonical/opentelemetry-collector-operator `src/constants.py`,
/// `NODE_EXPORTER_TEXTFILE_DIRECTORY`, enabled with `textfile.directory=`).
pub const TEXTFILE_DIR: &str = "/var/snap/node-exporter/common/textfile-collector.d";

/// The rules on the charm's own metrics (`rules/concourse-ci-charm.rules.yaml`): group
/// names prefixed as cosl does, the application's model uuid and name filled in, and
/// no juju_* labels (see the file).
pub fn charm_alert_rules(t: &Topology) -> Value {
    let text = CHARM_RULES_YAML
        .replace("%%charm_model_uuid%%", &t.model_uuid)
        .replace("%%charm_application%%", &t.application);
    let Ok(mut rules) = serde_yaml::from_str::<Value>(&text) else {
        return json!({"groups": []});
    };
    let prefix = t.identifier();
    for g in rules["groups"].as_array_mut().into_iter().flatten() {
        let name = g["name"].as_str().unwrap_or("alerts").to_string();
        g["name"] = Value::String(sanitize_group_name(&format!("{prefix}_{name}_rules")));
    }
    rules
}

/// The rules sent over `cos-agent`: Concourse's and the charm's.
pub fn cos_agent_alert_rules(t: &Topology) -> Value {
    let mut rules = alert_rules(t);
    let extra = charm_alert_rules(t)["groups"].clone();
    if let (Some(groups), Value::Array(more)) = (rules["groups"].as_array_mut(), extra) {
        groups.extend(more);
    }
    rules
}

/// A Prometheus label value in the text exposition format (`\`, `"` and newlines
/// escaped).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The unit's textfile for node-exporter: the upgrade phase it last saw (1), with the
/// generation and target, labelled with the charm's own topology (`charm_*`: the
/// series' `juju_*` labels are the collector's).
pub fn upgrade_phase_textfile(t: &Topology, phase: &str, generation: u64, target: &str) -> String {
    let labels = [
        ("charm_model", t.model.as_str()),
        ("charm_model_uuid", t.model_uuid.as_str()),
        ("charm_application", t.application.as_str()),
        ("charm_unit", t.unit.as_str()),
        ("phase", phase),
        ("generation", &generation.to_string()),
        ("target", target),
    ]
    .iter()
    .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
    .collect::<Vec<_>>()
    .join(",");
    format!(
        "# HELP concourse_ci_upgrade_phase Upgrade phase of the concourse-ci application as this unit last saw it.\n\
         # TYPE concourse_ci_upgrade_phase gauge\n\
         concourse_ci_upgrade_phase{{{labels}}} 1\n"
    )
}

pub fn cos_agent_config(t: &Topology, metrics_port: Option<u16>) -> Value {
    let jobs: Vec<Value> = metrics_port
        .map(|port| {
            json!({
                "job_name": format!("{}_{JOB_NAME}", t.application),
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [format!("127.0.0.1:{port}")]}],
            })
        })
        .into_iter()
        .collect();
    json!({
        "metrics_alert_rules": cos_agent_alert_rules(t),
        "log_alert_rules": {},
        "dashboards": encoded_dashboard().into_iter().collect::<Vec<_>>(),
        "metrics_scrape_jobs": jobs,
        // Concourse is not a snap: the collector reads /var/log and the journal itself.
        "log_slots": [],
        "subordinate": null,
        "tracing_protocols": null,
    })
}

/// The fields of the cos-agent unit data its requirer validates as required
/// (`CosAgentProviderUnitData`).
#[cfg(test)]
pub(crate) const COS_AGENT_REQUIRED: [&str; 5] = [
    "metrics_alert_rules",
    "log_alert_rules",
    "dashboards",
    "metrics_scrape_jobs",
    "log_slots",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology {
            model: "prod".into(),
            model_uuid: "8f4c1f4e-3d2b-4a8e-9b1a-2c5d6e7f8a9b".into(),
            application: "concourse-ci".into(),
            unit: "concourse-ci/0".into(),
        }
    }

    /// The metric names an expression mentions (`concourse_…`), histogram suffixes off.
    fn metrics_in(expr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(i) = rest.find("concourse_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.push(base.to_string());
            rest = &tail[end..];
        }
        out
    }

    #[test]
    fn rules_and_dashboard_query_only_metrics_concourse_exports() {
        let rules = alert_rules(&topo());
        let mut exprs: Vec<String> = rules["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(exprs.len(), 4);
        let d: Value = serde_json::from_str(DASHBOARD_JSON).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                exprs.push(t["expr"].as_str().unwrap().to_string());
            }
        }
        let mut seen = 0;
        for e in &exprs {
            for m in metrics_in(e) {
                let known =
                    CONCOURSE_METRICS.contains(&m.as_str()) || CHARM_METRICS.contains(&m.as_str());
                assert!(known, "{m} in {e}");
                seen += 1;
            }
        }
        // The charm's own rules query only the charm's metrics.
        for g in charm_alert_rules(&topo())["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                let e = r["expr"].as_str().unwrap();
                let ms = metrics_in(e);
                assert!(
                    !ms.is_empty() && ms.iter().all(|m| CHARM_METRICS.contains(&m.as_str())),
                    "{e}"
                );
            }
        }
        assert!(seen > 15, "{seen}");
        assert!(metrics_in("rate(concourse_x_bucket[5m])") == ["concourse_x"]);
    }

    #[test]
    fn every_rule_carries_the_topology_and_groups_are_prefixed() {
        let rules = alert_rules(&topo());
        let g = &rules["groups"][0];
        assert_eq!(g["name"], "prod_8f4c1f4e_concourse_ci_concourse_rules");
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["labels"]["juju_application"], "concourse-ci");
            assert_eq!(r["labels"]["juju_model_uuid"], topo().model_uuid);
            assert_eq!(r["labels"]["juju_charm"], "concourse-ci");
            assert!(r["labels"]["severity"].is_string());
            assert!(r["for"].is_string() && r["annotations"]["summary"].is_string());
        }
    }

    #[test]
    fn ipv6_unit_addresses_are_bracketed_for_the_wildcard() {
        assert_eq!(scrape_address("10.0.0.5"), "10.0.0.5");
        assert_eq!(scrape_address("fd42::5"), "[fd42::5]");
        let target = scrape_jobs(9391)[0]["static_configs"][0]["targets"][0]
            .as_str()
            .unwrap()
            .replace('*', &scrape_address("fd42::5"));
        assert_eq!(target, "[fd42::5]:9391");
    }

    #[test]
    fn the_dashboard_decodes_as_the_collector_decodes_it() {
        use base64::Engine as _;
        let enc = encoded_dashboard().unwrap();
        assert!(enc.starts_with("/Td6WFoA"), "xz magic: {}", &enc[..12]);
        let xz = base64::engine::general_purpose::STANDARD
            .decode(&enc)
            .unwrap();
        let mut json_bytes = Vec::new();
        lzma_rs::xz_decompress(&mut xz.as_slice(), &mut json_bytes).unwrap();
        let d: Value = serde_json::from_slice(&json_bytes).unwrap();
        assert_eq!(d["uid"].as_str().unwrap().len(), 40);
        assert!(d["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("charm: concourse-ci")));
        // Python's lzma.decompress is what the collector runs, when it is here to ask.
        let python = std::process::Command::new("python3")
            .args([
                "-c",
                "import base64,json,lzma,sys; print(json.loads(lzma.decompress(base64.b64decode(sys.stdin.read())))['title'])",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        if let Ok(mut child) = python {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(enc.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Concourse CI");
        }
    }

    #[test]
    fn the_cos_agent_config_has_every_required_field() {
        let c = cos_agent_config(&topo(), Some(9391));
        for k in COS_AGENT_REQUIRED {
            assert!(!c[k].is_null(), "{k}");
        }
        assert_eq!(
            c["metrics_scrape_jobs"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:9391"
        );
        let worker = cos_agent_config(&topo(), None);
        assert_eq!(worker["metrics_scrape_jobs"], json!([]));
        assert_eq!(worker["dashboards"].as_array().unwrap().len(), 1);
    }

    /// The upgrade-stuck rule selects the charm's textfile series by their charm_*
    /// labels and carries no juju_* label, which Prometheus would inject into it and so
    /// never match the collector-labelled series.
    #[test]
    fn the_upgrade_stuck_rule_matches_the_textfile_series_and_has_no_topology_labels() {
        let rules = cos_agent_alert_rules(&topo());
        let groups = rules["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        let g = &groups[1];
        assert_eq!(
            g["name"],
            "prod_8f4c1f4e_concourse_ci_concourse_charm_rules"
        );
        let r = &g["rules"][0];
        assert_eq!(r["alert"], "ConcourseUpgradeStuck");
        assert_eq!(r["for"], "1h");
        let labels = r["labels"].as_object().unwrap();
        assert!(labels.keys().all(|k| !k.starts_with("juju_")), "{labels:?}");
        let expr = r["expr"].as_str().unwrap();
        let text = upgrade_phase_textfile(&topo(), "downloading", 3, "7.14.3");
        for want in [
            format!("charm_model_uuid=\"{}\"", topo().model_uuid),
            "charm_application=\"concourse-ci\"".to_string(),
        ] {
            assert!(
                expr.contains(&want) && text.contains(&want),
                "{want}: {expr} / {text}"
            );
        }
        assert!(!expr.contains("%%"), "{expr}");
        // only over cos-agent
        assert_eq!(alert_rules(&topo())["groups"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_textfile_is_prometheus_text_with_escaped_labels() {
        let text = upgrade_phase_textfile(&topo(), "complete", 12, "7.14.3\"x\\y\nz");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("# HELP concourse_ci_upgrade_phase "));
        assert_eq!(lines[1], "# TYPE concourse_ci_upgrade_phase gauge");
        assert!(lines[2].starts_with("concourse_ci_upgrade_phase{charm_model=\"prod\","));
        assert!(lines[2].contains(",phase=\"complete\",generation=\"12\","));
        assert!(
            lines[2].ends_with(r#"target="7.14.3\"x\\y\nz"} 1"#),
            "{}",
            lines[2]
        );
        assert!(text.ends_with('\n'));
    }
}
