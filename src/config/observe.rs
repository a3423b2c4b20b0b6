//! Options for the worker's runtime, proxies and metrics (config.yaml's last block).
//!
//! Owns: parsing and validating `baggageclaim-driver`, `containerd-dns-server`,
//! `containerd-dns-proxy`, `worker-max-containers`, `http-proxy`, `https-proxy`,
//! `no-proxy`, `metrics-port`, `tls-port`, `container-placement-strategy` and the
//! `max-active-*-per-worker` limits, and the cross-option port check (`web-port` against
//! the worker's own ports in `mode=all` and against `metrics-port`).
//!
//! Invariants: as in the parent module, each validator reports its own problems and
//! returns a fallback. Proxy values may hold a password: problems show them through
//! [`super::shown_url`] only.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::{shown_url, Errors, FromJuju, Mode, Opt};

/// Ports `concourse worker` binds on the host, their defaults in concourse/concourse
/// v7.14.3 (`worker/workercmd/worker.go`: `CONCOURSE_BIND_PORT` 7777, the container
/// API, `CONCOURSE_DEBUG_BIND_PORT` 7776, `CONCOURSE_HEALTHCHECK_BIND_PORT` 8888;
/// `worker/baggageclaim/baggageclaimcmd/command_linux.go`: baggageclaim 7788, its debug
/// port 7787).
pub const WORKER_PORTS: [u16; 5] = [7776, 7777, 7787, 7788, 8888];

/// Baggageclaim's volume driver (`CONCOURSE_BAGGAGECLAIM_DRIVER`; choices from
/// `worker/baggageclaim/baggageclaimcmd/command_linux.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaggageclaimDriver {
    /// Concourse's own choice (`driver_linux.go`): overlay on kernels >= 4.0, else btrfs
    /// when available, else naive.
    #[default]
    Detect,
    Overlay,
    Btrfs,
    /// Plain directories: every copy-on-write is a full copy.
    Naive,
}

impl BaggageclaimDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            BaggageclaimDriver::Detect => "detect",
            BaggageclaimDriver::Overlay => "overlay",
            BaggageclaimDriver::Btrfs => "btrfs",
            BaggageclaimDriver::Naive => "naive",
        }
    }
}

/// The worker's runtime settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerRuntime {
    pub baggageclaim_driver: BaggageclaimDriver,
    /// `CONCOURSE_CONTAINERD_DNS_SERVER`: nameservers written into containers.
    pub dns_servers: Vec<IpAddr>,
    /// `CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE`.
    pub dns_proxy: bool,
    /// `CONCOURSE_CONTAINERD_MAX_CONTAINERS` (0: no limit).
    pub max_containers: u32,
}

/// How web places containers on workers, and the per-worker limits that go with it
/// (`atc/worker/placement.go`: a `max-active-*` limit acts only with its `limit-active-*`
/// strategy; 0 is no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `CONCOURSE_CONTAINER_PLACEMENT_STRATEGY`, applied in order.
    pub strategies: Vec<String>,
    pub max_active_containers: u32,
    pub max_active_volumes: u32,
    pub max_active_tasks: u32,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            strategies: vec!["volume-locality".into()],
            max_active_containers: 0,
            max_active_volumes: 0,
            max_active_tasks: 0,
        }
    }
}

/// The choices of `--container-placement-strategy` (`atc/worker/placement.go`).
const STRATEGIES: [&str; 6] = [
    "volume-locality",
    "random",
    "fewest-build-containers",
    "limit-active-tasks",
    "limit-active-containers",
    "limit-active-volumes",
];

/// Proxy options; each overrides the model's `juju-*-proxy` setting when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyOptions {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

/// Booleans: JSON booleans, or the strings `true`/`false`.
impl FromJuju for bool {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s.trim() == "true" => Ok(true),
            Value::String(s) if s.trim() == "false" => Ok(false),
            other => Err(format!("expected true or false, got {other}")),
        }
    }
}

/// The raw options of this block, flattened into the parent's `RawConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub(super) struct Raw {
    baggageclaim_driver: Opt<String>,
    containerd_dns_server: Opt<String>,
    containerd_dns_proxy: Opt<bool>,
    worker_max_containers: Opt<i64>,
    http_proxy: Opt<String>,
    https_proxy: Opt<String>,
    no_proxy: Opt<String>,
    metrics_port: Opt<i64>,
    tls_port: Opt<i64>,
    container_placement_strategy: Opt<String>,
    max_active_containers_per_worker: Opt<i64>,
    max_active_volumes_per_worker: Opt<i64>,
    max_active_tasks_per_worker: Opt<i64>,
}

/// Validates this block into `config`, then checks the ports against each other.
pub(super) fn apply(raw: Raw, config: &mut super::CharmConfig, errs: &mut Errors) {
    let runtime = WorkerRuntime {
        baggageclaim_driver: driver(raw.baggageclaim_driver, errs),
        dns_servers: dns_servers(raw.containerd_dns_server, errs),
        dns_proxy: flag("containerd-dns-proxy", raw.containerd_dns_proxy, errs),
        max_containers: max_containers(raw.worker_max_containers, errs),
    };
    let proxy = ProxyOptions {
        http: proxy_url("http-proxy", raw.http_proxy, errs),
        https: proxy_url("https-proxy", raw.https_proxy, errs),
        no_proxy: no_proxy(raw.no_proxy, errs),
    };
    let fix = "use a port between 1 and 65535";
    let port = errs.int(
        "metrics-port",
        raw.metrics_port,
        9391,
        1..=65535,
        (fix, fix),
    );
    config.worker_runtime = runtime;
    config.proxy = proxy;
    config.metrics_port = u16::try_from(port).unwrap_or(9391);
    let tls = errs.int("tls-port", raw.tls_port, 8443, 1..=65535, (fix, fix));
    config.tls_port = u16::try_from(tls).unwrap_or(8443);
    let limits = [
        raw.max_active_containers_per_worker,
        raw.max_active_volumes_per_worker,
        raw.max_active_tasks_per_worker,
    ];
    config.placement = placement(raw.container_placement_strategy, limits, errs);
    check_ports(config, errs);
}

/// `strategy`, then the limits for containers, volumes and tasks.
fn placement(strategy: Opt<String>, limits: [Opt<i64>; 3], errs: &mut Errors) -> Placement {
    let text = errs.text("container-placement-strategy", strategy, "volume-locality");
    let mut strategies: Vec<String> = Vec::new();
    for s in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !STRATEGIES.contains(&s) {
            let shown: String = s.chars().take(40).collect();
            errs.add(
                "container-placement-strategy",
                format!("{shown:?} is not a placement strategy"),
                "list some of volume-locality, random, fewest-build-containers, limit-active-tasks, limit-active-containers, limit-active-volumes, comma-separated, in order",
            );
        } else if !strategies.iter().any(|x| x == s) {
            strategies.push(s.to_string());
        }
    }
    if strategies.is_empty() {
        strategies.push("volume-locality".into());
    }
    let [containers, volumes, tasks] = limits;
    let mut limit = |option: &'static str, value: Opt<i64>, strategy: &str| -> u32 {
        let fixes = (
            "use a number between 0 (no limit) and 100000",
            "use a whole number >= 0",
        );
        let n = errs.int(option, value, 0, 0..=100_000, fixes);
        if n > 0 && !strategies.iter().any(|s| s == strategy) {
            errs.add(
                option,
                format!("{n} has no effect without {strategy} in container-placement-strategy"),
                format!("add {strategy} to container-placement-strategy, or set 0"),
            );
        }
        u32::try_from(n).unwrap_or(0)
    };
    Placement {
        max_active_containers: limit(
            "max-active-containers-per-worker",
            containers,
            "limit-active-containers",
        ),
        max_active_volumes: limit(
            "max-active-volumes-per-worker",
            volumes,
            "limit-active-volumes",
        ),
        max_active_tasks: limit("max-active-tasks-per-worker", tasks, "limit-active-tasks"),
        strategies,
    }
}

fn driver(raw: Opt<String>, errs: &mut Errors) -> BaggageclaimDriver {
    match errs.text("baggageclaim-driver", raw, "detect").as_str() {
        "detect" => BaggageclaimDriver::Detect,
        "overlay" => BaggageclaimDriver::Overlay,
        "btrfs" => BaggageclaimDriver::Btrfs,
        "naive" => BaggageclaimDriver::Naive,
        other => {
            errs.add(
                "baggageclaim-driver",
                format!("{other:?} is not a baggageclaim driver"),
                "use one of detect, overlay, btrfs, naive",
            );
            BaggageclaimDriver::Detect
        }
    }
}

/// Comma-separated IP addresses (Concourse parses each with `net.ParseIP`).
fn dns_servers(raw: Opt<String>, errs: &mut Errors) -> Vec<IpAddr> {
    let text = errs.text("containerd-dns-server", raw, "");
    let mut out: Vec<IpAddr> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.parse::<IpAddr>() {
            Ok(ip) if !out.contains(&ip) => out.push(ip),
            Ok(_) => {}
            Err(_) => {
                let shown: String = item.chars().take(64).collect();
                errs.add(
                    "containerd-dns-server",
                    format!("{shown:?} is not an IP address"),
                    "list nameserver IP addresses, comma-separated, e.g. 10.0.0.2,1.1.1.1",
                );
            }
        }
    }
    out
}

fn flag(option: &'static str, raw: Opt<bool>, errs: &mut Errors) -> bool {
    match raw {
        Opt::Unset => false,
        Opt::Set(b) => b,
        Opt::WrongType(p) => {
            errs.add(option, p, "set true or false");
            false
        }
    }
}

fn max_containers(raw: Opt<i64>, errs: &mut Errors) -> u32 {
    let fixes = (
        "use a number of containers between 0 (no limit) and 100000",
        "use a whole number >= 0",
    );
    let n = errs.int("worker-max-containers", raw, 250, 0..=100_000, fixes);
    u32::try_from(n).unwrap_or(250)
}

/// An http(s) proxy URL with a host, or unset. Never echoes user info.
fn proxy_url(option: &'static str, raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let url = errs.text(option, raw, "");
    if url.is_empty() {
        return None;
    }
    let ok = reqwest::Url::parse(&url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Some(url)
    } else {
        errs.add(
            option,
            format!("{:?} is not an http(s) proxy URL", shown_url(&url)),
            "use a URL such as http://proxy.example.com:3128, or \"\" for the model's setting",
        );
        None
    }
}

/// Comma-separated hosts, domains, IPs or CIDRs without whitespace.
fn no_proxy(raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let text = errs.text("no-proxy", raw, "");
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    if items.iter().any(|i| i.contains(char::is_whitespace)) {
        errs.add(
            "no-proxy",
            "an entry contains whitespace",
            "list hosts, domains, IPs or CIDRs, comma-separated, e.g. 10.0.0.0/8,.internal",
        );
        return None;
    }
    (!items.is_empty()).then(|| items.join(","))
}

/// Web's ports (`web-port`, `metrics-port`, `tls-port`) must differ from each other
/// (tls-port from web-port: when TLS is on) and from what else binds on the unit: the TSA always, the worker's own ports when web
/// and worker share the unit (`mode=all`).
fn check_ports(c: &super::CharmConfig, errs: &mut Errors) {
    let taken = |p: u16| -> Option<&'static str> {
        if p == crate::web::TSA_PORT {
            Some("the TSA's port")
        } else if c.mode == Mode::All && WORKER_PORTS.contains(&p) {
            Some("a port the worker binds in mode=all")
        } else {
            None
        }
    };
    let list = "2222, 7776, 7777, 7787, 7788, 8888 are taken";
    let ports = [
        ("web-port", c.web_port, None, "8080"),
        (
            "metrics-port",
            c.metrics_port,
            Some(("web-port", c.web_port)),
            "9391",
        ),
        // tls-port = web-port is checked only when a certificate is in use
        // (charm::certificates), so web-port=8443 deployments stay valid without TLS.
        ("tls-port", c.tls_port, None, "8443"),
    ];
    for (option, port, other, example) in ports {
        let clash = match other {
            Some((name, p)) if p == port => Some(format!("{port} is {name} too")),
            _ => taken(port).map(|what| format!("{port} is {what} ({list})")),
        };
        let clash = clash.or_else(|| {
            (option == "tls-port" && port == c.metrics_port)
                .then(|| format!("{port} is metrics-port too"))
        });
        if let Some(problem) = clash {
            errs.add(
                option,
                problem,
                format!("choose another port, e.g. {example}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::CharmConfig;
    use super::*;
    use serde_json::{json, Map};

    fn parse(v: Value) -> Result<CharmConfig, Vec<super::super::ConfigError>> {
        CharmConfig::from_map(v.as_object().unwrap_or(&Map::new()))
    }

    #[test]
    fn defaults_are_what_concourse_picks() {
        let c = parse(json!({})).unwrap();
        assert_eq!(
            c.worker_runtime.baggageclaim_driver,
            BaggageclaimDriver::Detect
        );
        assert!(c.worker_runtime.dns_servers.is_empty());
        assert!(!c.worker_runtime.dns_proxy);
        assert_eq!(c.worker_runtime.max_containers, 250);
        assert_eq!(c.proxy, ProxyOptions::default());
        assert_eq!(c.metrics_port, 9391);
        assert_eq!(c.tls_port, 8443);
    }

    #[test]
    fn values_parse() {
        let c = parse(json!({
            "baggageclaim-driver": "naive", "containerd-dns-server": "10.0.0.2, fd00::53,10.0.0.2",
            "containerd-dns-proxy": true, "worker-max-containers": 0,
            "http-proxy": "http://u:p@proxy:3128", "https-proxy": "http://proxy:3128",
            "no-proxy": "10.0.0.0/8, .internal", "metrics-port": 9100
        }))
        .unwrap();
        let r = &c.worker_runtime;
        assert_eq!(r.baggageclaim_driver, BaggageclaimDriver::Naive);
        assert_eq!(r.dns_servers.len(), 2);
        assert!(r.dns_proxy);
        assert_eq!(r.max_containers, 0);
        assert_eq!(c.proxy.no_proxy.as_deref(), Some("10.0.0.0/8,.internal"));
        assert_eq!(c.metrics_port, 9100);
    }

    #[test]
    fn bad_values_are_named_and_proxy_passwords_never_shown() {
        let errs = parse(json!({
            "baggageclaim-driver": "zfs", "containerd-dns-server": "dns.example.com",
            "containerd-dns-proxy": "yes", "worker-max-containers": -1,
            "http-proxy": "socks5://user:hunter2@proxy:1080", "no-proxy": "a b"
        }))
        .unwrap_err();
        let named: Vec<&str> = errs.iter().map(|e| e.option).collect();
        assert_eq!(
            named,
            [
                "baggageclaim-driver",
                "containerd-dns-server",
                "containerd-dns-proxy",
                "worker-max-containers",
                "http-proxy",
                "no-proxy"
            ]
        );
        assert!(errs.iter().all(|e| !e.to_string().contains("hunter2")));
    }

    #[test]
    fn placement_limits_need_their_strategy() {
        let c = parse(json!({
            "container-placement-strategy": "volume-locality, limit-active-volumes",
            "max-active-volumes-per-worker": 500
        }))
        .unwrap();
        assert_eq!(
            c.placement.strategies,
            ["volume-locality", "limit-active-volumes"]
        );
        assert_eq!(c.placement.max_active_volumes, 500);
        let errs = parse(json!({"max-active-containers-per-worker": 10})).unwrap_err();
        assert_eq!(errs[0].to_string(), "config option max-active-containers-per-worker: 10 has no effect without limit-active-containers in container-placement-strategy; fix: add limit-active-containers to container-placement-strategy, or set 0");
        let errs = parse(json!({"container-placement-strategy": "nearest"})).unwrap_err();
        assert_eq!(errs[0].option, "container-placement-strategy");
        assert_eq!(parse(json!({})).unwrap().placement, Placement::default());
    }

    #[test]
    fn web_port_colliding_with_worker_ports_in_mode_all_is_refused() {
        for port in WORKER_PORTS {
            let errs = parse(json!({"mode": "all", "web-port": port})).unwrap_err();
            assert_eq!(errs[0].option, "web-port", "{port}");
            // another mode has no worker beside web
            parse(json!({"mode": "web", "web-port": port})).unwrap();
        }
        let errs = parse(json!({"web-port": 2222})).unwrap_err();
        assert_eq!(errs[0].option, "web-port");
        let errs = parse(json!({"web-port": 9391})).unwrap_err();
        assert_eq!(errs[0].option, "metrics-port");
        let errs = parse(json!({"mode": "all", "metrics-port": 8888})).unwrap_err();
        assert_eq!(errs[0].option, "metrics-port");
        let errs = parse(json!({"tls-port": 9391})).unwrap_err();
        assert_eq!(errs[0].option, "tls-port");
        let errs = parse(json!({"tls-port": 2222})).unwrap_err();
        assert_eq!(errs[0].to_string(), "config option tls-port: 2222 is the TSA's port (2222, 7776, 7777, 7787, 7788, 8888 are taken); fix: choose another port, e.g. 8443");
        parse(json!({"web-port": 8443})).unwrap();
    }
}
