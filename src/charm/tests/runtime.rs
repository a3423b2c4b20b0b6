//! The worker's runtime settings and the proxies: what reaches the worker's env, which
//! service a change restarts, and that the charm's own download goes through the proxy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use sha1::Digest;

use super::*;

const WEB: &str = "concourse-server";
const WORKER: &str = "concourse-worker";
/// A worker restart: landed through its unit's stop, then started.
const WORKER_RESTART: [&str; 2] = ["stop concourse-worker", "start concourse-worker"];

/// A ready `mode=all` leader with PostgreSQL: web and worker both run.
fn all_in_one() -> Unit {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert!(u.active(WEB) && u.active(WORKER));
    u
}

#[test]
fn the_worker_uses_concourse_s_own_driver_choice_not_naive() {
    let u = all_in_one();
    let env = u.env(WORKER_ENV);
    assert_eq!(env["CONCOURSE_BAGGAGECLAIM_DRIVER"], "detect");
    assert_eq!(env["CONCOURSE_CONTAINERD_MAX_CONTAINERS"], "250");
    // unset booleans are left out: Concourse reads an empty value as true
    assert!(!env.contains_key("CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE"));
    assert!(!env.contains_key("CONCOURSE_CONTAINERD_DNS_SERVER"));
}

#[test]
fn runtime_options_reach_the_worker_and_restart_only_it() {
    let u = all_in_one();
    let mark = u.mark();
    u.model.set_config(&[
        ("baggageclaim-driver", json!("overlay")),
        ("containerd-dns-server", json!("10.1.0.2, fd42::53")),
        ("containerd-dns-proxy", json!(true)),
        ("worker-max-containers", json!(0)),
    ]);
    u.ok("config-changed");
    let env = u.env(WORKER_ENV);
    assert_eq!(env["CONCOURSE_BAGGAGECLAIM_DRIVER"], "overlay");
    assert_eq!(env["CONCOURSE_CONTAINERD_DNS_SERVER"], "10.1.0.2,fd42::53");
    assert_eq!(env["CONCOURSE_CONTAINERD_DNS_PROXY_ENABLE"], "true");
    assert_eq!(env["CONCOURSE_CONTAINERD_MAX_CONTAINERS"], "0");
    assert_eq!(u.touched(mark, WORKER), WORKER_RESTART);
    assert!(
        u.touched(mark, WEB).is_empty(),
        "{:?}",
        u.touched(mark, WEB)
    );
}

#[test]
fn a_bad_driver_blocks_naming_the_option_and_keeps_the_worker_as_it_was() {
    let u = all_in_one();
    let mark = u.mark();
    u.model.set_config(&[("baggageclaim-driver", json!("zfs"))]);
    u.ok("config-changed");
    assert_eq!(
        u.status(),
        (
            "blocked".into(),
            "invalid baggageclaim-driver: \"zfs\" is not a baggageclaim driver; use one of detect, overlay, btrfs, naive".into()
        )
    );
    assert!(u.touched(mark, WORKER).is_empty());
    assert_eq!(u.env(WORKER_ENV)["CONCOURSE_BAGGAGECLAIM_DRIVER"], "detect");
}

#[test]
fn web_port_on_a_worker_port_in_mode_all_blocks() {
    let u = all_in_one();
    u.model.set_config(&[("web-port", json!(7777))]);
    u.ok("config-changed");
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with("invalid web-port: 7777 is a port the worker binds in mode=all"),
        "{message}"
    );
    assert_eq!(u.env(WEB_ENV)["CONCOURSE_BIND_PORT"], "8080");
}

#[test]
fn the_model_s_proxies_reach_the_worker_and_options_override_them() {
    let u = Unit::deployed("all");
    u.model.state_mut().proxy_env.extend([
        (
            "JUJU_CHARM_HTTP_PROXY".to_string(),
            "http://squid.internal:3128".to_string(),
        ),
        (
            "JUJU_CHARM_HTTPS_PROXY".to_string(),
            "http://squid.internal:3129".to_string(),
        ),
        ("JUJU_CHARM_NO_PROXY".to_string(), "10.0.0.0/8".to_string()),
    ]);
    u.add_postgresql("db-pw");
    let env = u.env(WORKER_ENV);
    assert_eq!(env["http_proxy"], "http://squid.internal:3128");
    assert_eq!(env["https_proxy"], "http://squid.internal:3129");
    assert_eq!(env["no_proxy"], "10.0.0.0/8");
    assert!(!u
        .env(WEB_ENV)
        .keys()
        .any(|k| k.to_lowercase().contains("proxy")));

    // An option wins over the model's setting; only the worker restarts.
    let mark = u.mark();
    u.model
        .set_config(&[("https-proxy", json!("http://user:pw@mine.internal:8080"))]);
    u.ok("config-changed");
    let env = u.env(WORKER_ENV);
    assert_eq!(env["https_proxy"], "http://user:pw@mine.internal:8080");
    assert_eq!(env["http_proxy"], "http://squid.internal:3128");
    assert_eq!(u.touched(mark, WORKER), WORKER_RESTART);
    assert!(u.touched(mark, WEB).is_empty());
    assert!(u.logs.lines().iter().all(|l| !l.contains("user:pw")));

    // The model drops its proxies: the worker loses them (one restart), web is untouched.
    let mark = u.mark();
    u.model.state_mut().proxy_env.clear();
    u.model.set_config(&[("https-proxy", json!(""))]);
    u.ok("config-changed");
    assert!(!u.env(WORKER_ENV).keys().any(|k| k.ends_with("_proxy")));
    assert_eq!(u.touched(mark, WORKER), WORKER_RESTART);
    assert!(u.touched(mark, WEB).is_empty());
    // nothing changes: nothing restarts
    let mark = u.mark();
    u.ok("update-status");
    assert!(u.touched(mark, WORKER).is_empty());
}

/// A forward proxy on loopback that answers absolute-form requests (`GET http://…`) itself
/// from `files` (path → body) and records each request line.
struct CountingProxy {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    fn start(files: Vec<(String, Vec<u8>)>) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // drain the headers
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                seen.lock().unwrap().push(line.trim().to_string());
                let target = line.split_whitespace().nth(1).unwrap_or("");
                let path = target
                    .strip_prefix("http://releases.invalid")
                    .unwrap_or("<not proxied>");
                let found = files.iter().find(|(p, _)| p == path).map(|(_, b)| b);
                let (status, body) = match found {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
                let _ = conn.flush();
                let _ = reader.read_to_end(&mut Vec::new());
            }
        });
        CountingProxy { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// The download goes through the model's proxy: `releases.invalid` never resolves
/// (RFC 6761), so only the proxy can have answered.
#[test]
fn the_release_download_goes_through_the_model_s_proxy() {
    let u = Unit::new(0, true);
    let tarball = u
        .model
        .state_mut()
        .resources
        .remove("concourse-release")
        .unwrap();
    let name = format!("concourse-{V1}-linux-amd64.tgz");
    let proxy = CountingProxy::start(release_files(V1, &tarball));
    u.model.state_mut().proxy_env.insert(
        "JUJU_CHARM_HTTP_PROXY".into(),
        format!("http://127.0.0.1:{}", proxy.port),
    );
    u.model.set_config(&[
        ("mode", json!("worker")),
        (
            "release-url",
            json!("http://releases.invalid/v{version}/concourse-{version}-linux-amd64.tgz"),
        ),
    ]);
    u.deploy();
    assert!(u.volume().layout().release_dir(V1).exists());
    assert_eq!(
        proxy.lines(),
        [
            format!("GET http://releases.invalid/v{V1}/{name}.sha1 HTTP/1.1"),
            format!("GET http://releases.invalid/v{V1}/{name} HTTP/1.1"),
        ]
    );
    // The http-proxy option wins over the model's proxy: the next version comes
    // through the option's proxy and the model's sees nothing more.
    let v2 = release_tarball(u.tarballs.path(), V2);
    let mine = CountingProxy::start(release_files(V2, &v2));
    u.model.set_config(&[
        (
            "http-proxy",
            json!(format!("http://127.0.0.1:{}", mine.port)),
        ),
        ("version", json!(V2)),
    ]);
    u.ok("config-changed");
    u.ok("update-status");
    assert!(u.volume().layout().release_dir(V2).exists());
    assert_eq!(mine.lines().len(), 2, "{:?}", mine.lines());
    assert_eq!(proxy.lines().len(), 2);
}

/// The tarball at `path` and its `.sha1`, by the paths release-url gives them.
fn release_files(version: &str, path: &Path) -> Vec<(String, Vec<u8>)> {
    let body = std::fs::read(path).unwrap();
    let sha1 = hex(&sha1::Sha1::digest(&body));
    let name = format!("concourse-{version}-linux-amd64.tgz");
    vec![
        (format!("/v{version}/{name}"), body),
        (
            format!("/v{version}/{name}.sha1"),
            format!("{sha1}  {name}\n").into_bytes(),
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn placement_limits_reach_web_and_restart_only_it() {
    let u = all_in_one();
    // Concourse's defaults add nothing to web's env (no restart on a charm upgrade).
    assert!(!u
        .env(WEB_ENV)
        .keys()
        .any(|k| k.contains("PLACEMENT") || k.contains("MAX_ACTIVE")));
    let mark = u.mark();
    u.model.set_config(&[
        (
            "container-placement-strategy",
            json!("limit-active-volumes,volume-locality"),
        ),
        ("max-active-volumes-per-worker", json!(400)),
    ]);
    u.ok("config-changed");
    let env = u.env(WEB_ENV);
    assert_eq!(
        env["CONCOURSE_CONTAINER_PLACEMENT_STRATEGY"],
        "limit-active-volumes,volume-locality"
    );
    assert_eq!(env["CONCOURSE_MAX_ACTIVE_VOLUMES_PER_WORKER"], "400");
    assert_eq!(u.touched(mark, WEB), ["restart concourse-server"]);
    assert!(u.touched(mark, WORKER).is_empty());
}
