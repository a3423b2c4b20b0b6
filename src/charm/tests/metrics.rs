//! Metrics and COS on one unit: a played Prometheus (prometheus_scrape consumer) and a
//! played collector (cos_agent requirer) read what the charm publishes; web serves its
//! metrics only while one of them is related, and removing it turns them off with one
//! restart and nothing left open.

use super::*;

const WEB: &str = "concourse-server";
const WORKER: &str = "concourse-worker";

/// A ready `mode=all` leader with PostgreSQL.
fn all_in_one() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert!(u.active(WEB));
    u
}

fn ports(u: &Unit) -> Vec<String> {
    u.model.opened_ports_by_endpoint()
}

fn json_of(bag: &crate::juju::Databag, key: &str) -> Value {
    let raw = bag
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing: {bag:?}"));
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("{key} is not JSON ({e}): {raw}"))
}

/// What the prometheus_scrape consumer makes of the provider's data, played after the
/// library's `_relation_hosts` and `expand_wildcard_targets_into_individual_jobs`:
/// (job name, target, juju_unit) per unit that published an address.
fn played_prometheus(u: &Unit, rel: u32) -> Vec<(String, String, String)> {
    let app = u.model.bag(rel, APP);
    let meta = json_of(&app, "scrape_metadata");
    let jobs = json_of(&app, "scrape_jobs");
    let unit = u.model.state().unit.clone();
    let mine = u.model.bag(rel, &unit);
    let mut out = Vec::new();
    let (Some(address), Some(name)) = (
        mine.get("prometheus_scrape_unit_address"),
        mine.get("prometheus_scrape_unit_name"),
    ) else {
        return out;
    };
    let id = format!(
        "{}_{}_{}",
        meta["model"].as_str().unwrap(),
        &meta["model_uuid"].as_str().unwrap()[..8],
        meta["application"].as_str().unwrap()
    );
    for job in jobs.as_array().unwrap() {
        let prefixed = format!(
            "juju_{id}_prometheus_scrape_{}",
            job["job_name"].as_str().unwrap()
        );
        for target in job["static_configs"][0]["targets"].as_array().unwrap() {
            let target = target.as_str().unwrap().replace('*', address);
            let n = name.rsplit('/').next().unwrap();
            out.push((format!("{prefixed}-{n}"), target, name.clone()));
        }
    }
    out
}

#[test]
fn a_played_prometheus_sees_the_web_unit_s_job_and_web_restarts_once() {
    let u = all_in_one();
    assert!(!u
        .env(WEB_ENV)
        .contains_key("CONCOURSE_PROMETHEUS_BIND_PORT"));
    let mark = u.mark();
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    u.relation_ok(rel, "created", None);
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    u.relation_ok(rel, "changed", Some("prometheus/0"));
    assert_eq!(
        played_prometheus(&u, rel),
        [(
            "juju_test-model_00000000_concourse-ci_prometheus_scrape_concourse-0".to_string(),
            "10.1.0.10:9391".to_string(),
            "concourse-ci/0".to_string()
        )]
    );
    let env = u.env(WEB_ENV);
    assert_eq!(env["CONCOURSE_PROMETHEUS_BIND_IP"], "0.0.0.0");
    assert_eq!(env["CONCOURSE_PROMETHEUS_BIND_PORT"], "9391");
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
    assert!(u.touched(mark, WORKER).is_empty());
    // The metrics port is opened for the monitoring endpoint only; web's for all.
    assert_eq!(
        ports(&u),
        ["2222/tcp (*)", "8080/tcp (*)", "9391/tcp (monitoring)"]
    );
    let rules = json_of(&u.model.bag(rel, APP), "alert_rules");
    let names: Vec<&str> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ConcourseWebDown"), "{names:?}");

    // A new metrics-port moves the job and the opened port.
    u.model.set_config(&[("metrics-port", json!(9100))]);
    u.ok("config-changed");
    assert_eq!(played_prometheus(&u, rel)[0].1, "10.1.0.10:9100");
    assert_eq!(
        ports(&u),
        ["2222/tcp (*)", "8080/tcp (*)", "9100/tcp (monitoring)"]
    );

    // Removed: metrics off in the broken hook, one restart, the port closed.
    let mark = u.mark();
    u.relation_ok(rel, "broken", None);
    u.model.unrelate(rel);
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_PROMETHEUS_BIND_IP"));
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
    assert_eq!(ports(&u), ["2222/tcp (*)", "8080/tcp (*)"]);
    u.ok("update-status");
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
}

#[test]
fn a_steady_state_writes_nothing_to_the_metrics_relations() {
    let u = all_in_one();
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    let cos = u.model.relate(
        "cos-agent",
        "opentelemetry-collector",
        &["opentelemetry-collector/0"],
    );
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    u.relation_ok(cos, "joined", Some("opentelemetry-collector/0"));
    u.ok("update-status");
    assert!(
        !u.model
            .state()
            .calls
            .iter()
            .any(|c| c.starts_with("relation-set")),
        "{:?}",
        u.model.state().calls
    );
}

#[test]
fn a_worker_unit_publishes_no_scrape_address() {
    let u = Unit::deployed("worker");
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    assert!(played_prometheus(&u, rel).is_empty());
    // the leader still describes the job and the rules
    assert!(u.model.bag(rel, APP).contains_key("scrape_jobs"));
    assert!(u.model.state().ports.is_empty());
}

#[test]
fn ipv6_web_units_publish_a_bracketed_address() {
    let u = Unit::new(0, true);
    u.model.state_mut().address = "fd42::10".into();
    u.model.set_config(&[("mode", json!("all"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    assert_eq!(played_prometheus(&u, rel)[0].1, "[fd42::10]:9391");
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_PROMETHEUS_BIND_IP"], "[::]");
}

#[test]
fn a_played_collector_gets_jobs_rules_and_a_dashboard_over_cos_agent() {
    use base64::Engine as _;
    let u = all_in_one();
    let mark = u.mark();
    let rel = u.model.relate(
        "cos-agent",
        "opentelemetry-collector",
        &["opentelemetry-collector/0"],
    );
    u.relation_ok(rel, "created", None);
    u.relation_ok(rel, "joined", Some("opentelemetry-collector/0"));
    let config = json_of(&u.my_bag(rel), "config");
    for k in crate::cos::COS_AGENT_REQUIRED {
        assert!(!config[k].is_null(), "{k}: {config}");
    }
    assert_eq!(
        config["metrics_scrape_jobs"][0]["static_configs"][0]["targets"],
        json!(["127.0.0.1:9391"])
    );
    let groups = config["metrics_alert_rules"]["groups"].as_array().unwrap();
    assert_eq!(groups[0]["rules"].as_array().unwrap().len(), 4);
    let xz = base64::engine::general_purpose::STANDARD
        .decode(config["dashboards"][0].as_str().unwrap())
        .unwrap();
    let mut text = Vec::new();
    lzma_rs::xz_decompress(&mut xz.as_slice(), &mut text).unwrap();
    let dashboard: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(dashboard["title"], "Concourse CI");
    // The collector on this machine scrapes the loopback address: nothing is opened.
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_PROMETHEUS_BIND_IP"], "127.0.0.1");
    assert_eq!(ports(&u), ["2222/tcp (*)", "8080/tcp (*)"]);
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);

    let mark = u.mark();
    u.relation_ok(rel, "broken", None);
    u.model.unrelate(rel);
    assert!(!u.env(WEB_ENV).contains_key("CONCOURSE_PROMETHEUS_BIND_IP"));
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
}

/// Before this charm, the metrics port was opened for every endpoint. After a refresh the
/// unit-wide entry goes (in upgrade-charm) and the port comes back for `monitoring` only
/// (in the config-changed Juju runs next): Juju drops an endpoint open made in the same
/// hook as the close of the wildcard entry, so one hook cannot do both.
#[test]
fn a_metrics_port_opened_unit_wide_before_an_upgrade_is_scoped_to_monitoring_after_it() {
    let u = all_in_one();
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    // As the previous charm left it: 9391 open for every endpoint.
    let everywhere = juju_sim::ports::PortRange::parse("9391/tcp").unwrap();
    {
        let mut st = u.model.state_mut();
        st.ports.values_mut().for_each(|s| {
            s.remove(&everywhere);
        });
        st.ports
            .entry(String::new())
            .or_default()
            .insert(everywhere);
    }
    assert_eq!(ports(&u), ["2222/tcp (*)", "8080/tcp (*)", "9391/tcp (*)"]);
    u.ok("upgrade-charm");
    assert_eq!(ports(&u), ["2222/tcp (*)", "8080/tcp (*)"]);
    u.ok("config-changed");
    assert_eq!(
        ports(&u),
        ["2222/tcp (*)", "8080/tcp (*)", "9391/tcp (monitoring)"]
    );
    // Settled: the next hooks change no port.
    u.ok("update-status");
    u.ok("config-changed");
    let calls = u.model.state().calls.clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("open-port") || c.starts_with("close-port")),
        "{calls:?}"
    );
}

/// A port opened for more endpoints than wanted (here by hand, for `cos-agent` too) is
/// closed on the extra ones only; web's ports opened for one endpoint become unit-wide.
#[test]
fn ports_opened_for_other_endpoints_are_narrowed_or_widened() {
    let u = all_in_one();
    let rel = u
        .model
        .relate("monitoring", "prometheus", &["prometheus/0"]);
    u.relation_ok(rel, "joined", Some("prometheus/0"));
    {
        let mut st = u.model.state_mut();
        let pr = |s: &str| juju_sim::ports::PortRange::parse(s).unwrap();
        st.ports.clear();
        st.ports
            .entry("cos-agent".into())
            .or_default()
            .extend([pr("9391/tcp"), pr("8080/tcp")]);
        st.ports
            .entry("monitoring".into())
            .or_default()
            .insert(pr("9391/tcp"));
    }
    u.ok("config-changed");
    assert_eq!(
        ports(&u),
        ["2222/tcp (*)", "8080/tcp (*)", "9391/tcp (monitoring)"]
    );
}

/// With the COS collector's node-exporter textfile directory on the machine, every hook
/// writes the upgrade phase the unit sees there; without `cos-agent`, or without the
/// directory, there is no file (and the charm never makes the directory).
#[test]
fn the_upgrade_phase_reaches_the_collector_s_textfile_directory_while_cos_agent_is_related() {
    let u = all_in_one();
    let dir = u.fake.paths.local(crate::cos::TEXTFILE_DIR);
    let file = dir.join("concourse-ci_0.prom");
    let rel = u.model.relate(
        "cos-agent",
        "opentelemetry-collector",
        &["opentelemetry-collector/0"],
    );
    u.relation_ok(rel, "joined", Some("opentelemetry-collector/0"));
    assert!(!dir.exists(), "the charm made the collector's directory");

    std::fs::create_dir_all(&dir).unwrap();
    u.ok("config-changed");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(
            r#"charm_application="concourse-ci",charm_unit="concourse-ci/0",phase="idle""#
        ),
        "{text}"
    );
    // An upgrade under way (here: what the leader makes of a failed generation whose
    // target no longer matches): the file says the phase the peer data holds.
    u.model.set_bag(
        u.peers,
        APP,
        &[
            ("upgrade-phase", "failed"),
            ("upgrade-gen", "7"),
            ("upgrade-target", "9.9.9"),
            ("upgrade-error", "checksum mismatch"),
        ],
    );
    u.ok("config-changed");
    let text = std::fs::read_to_string(&file).unwrap();
    let app = u.app_bag();
    let (phase, gen) = (&app["upgrade-phase"], &app["upgrade-gen"]);
    assert_ne!(phase, "idle");
    let want = format!(
        r#"phase="{phase}",generation="{gen}",target="{}"}} 1"#,
        app["upgrade-target"]
    );
    assert!(text.contains(&want), "{want} in {text}");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o644
    );

    u.relation_ok(rel, "broken", None);
    u.model.unrelate(rel);
    assert!(!file.exists(), "left after cos-agent went");
    assert!(dir.exists(), "the collector's directory is not the charm's");
}
