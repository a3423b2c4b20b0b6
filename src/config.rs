//! Typed, validated charm configuration.
//!
//! Owns: turning `config-get` output into `CharmConfig` and every config error
//! message. Invariants: validation reports *all* bad options, each naming the option,
//! the bad value (never for secret options) and the fix; a `CharmConfig` only exists
//! when every option is valid. Hazards: `github-token` is a secret; its `Debug` is
//! redacted and it never appears in an error.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// Role selection (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    All,
    Web,
    Worker,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::All => "all",
            Mode::Web => "web",
            Mode::Worker => "worker",
        }
    }
}

/// `shared-storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedStorage {
    None,
    Shared,
}

/// Concourse log levels (`log-level`); Concourse has no `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Error,
    Fatal,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        }
    }
}

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

/// One invalid option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config option {option}: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub option: &'static str,
    pub problem: String,
    pub fix: String,
}

impl ConfigError {
    fn new(
        option: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            option,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A short form for `juju status` (`blocked: invalid log-level "warn": use one of ...`).
    pub fn status_message(&self) -> String {
        format!("invalid {}: {}; {}", self.option, self.problem, self.fix)
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CharmConfig {
    pub mode: Mode,
    /// Pinned version, or `None` for "latest".
    pub version: Option<String>,
    pub shared_storage: SharedStorage,
    pub release_url: String,
    pub release_api_url: String,
    pub github_token: Secret,
    pub web_port: u16,
    pub external_url: Option<String>,
    pub log_level: LogLevel,
    pub drain_timeout: Duration,
    pub upgrade_max_unavailable: u32,
    pub tags: Vec<String>,
    pub initial_admin_username: String,
}

fn get_str(map: &Map<String, Value>, key: &str, default: &str) -> Result<String, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.trim().to_string()),
        Some(other) => Err(format!("expected a string, got {other}")),
    }
}

fn get_int(map: &Map<String, Value>, key: &str, default: i64) -> Result<i64, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("expected a whole number, got {n}")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("expected a whole number, got {s:?}")),
        Some(other) => Err(format!("expected a whole number, got {other}")),
    }
}

/// Parses a Concourse version (`7.14.3`, `8.0.0-rc.1`; callers strip a leading `v`) by
/// semver's rules, without build metadata, and short enough to be a directory name
/// under `releases/` (each number below 1,000,000, a pre-release of at most 32 bytes).
/// The one version parser of the charm: validation and ordering both use it.
pub fn parse_version(v: &str) -> Option<semver::Version> {
    let parsed = semver::Version::parse(v).ok()?;
    let short = [parsed.major, parsed.minor, parsed.patch]
        .iter()
        .all(|n| *n < 1_000_000)
        && parsed.pre.len() <= 32;
    (short && parsed.build.is_empty()).then_some(parsed)
}

/// Is `v` a plausible Concourse version (see [`parse_version`])?
pub fn is_valid_version(v: &str) -> bool {
    parse_version(v).is_some()
}

/// Parses `90s`, `30m`, `1h`, `1h30m`, `2h15m10s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let c = rest.chars().next()?;
        if c.is_ascii_digit() {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, mult) = if let Some(r) = rest.strip_prefix("ms") {
            rest = r;
            ("ms", 0)
        } else if let Some(r) = rest.strip_prefix('h') {
            rest = r;
            ("h", 3600)
        } else if let Some(r) = rest.strip_prefix('m') {
            rest = r;
            ("m", 60)
        } else if let Some(r) = rest.strip_prefix('s') {
            rest = r;
            ("s", 1)
        } else {
            return None;
        };
        if num.is_empty() || unit == "ms" {
            return None;
        }
        let n: u64 = num.parse().ok()?;
        total = total.checked_add(n.checked_mul(mult)?)?;
        num.clear();
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// Checks an http(s) URL; `{version}` placeholders are allowed.
fn check_url(raw: &str) -> Result<(), String> {
    let probe = raw.replace("{version}", "0.0.0");
    let url = reqwest::Url::parse(&probe).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("{raw:?} uses scheme {other:?}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(())
}

impl CharmConfig {
    /// Validates `config-get` output. Returns every problem found.
    pub fn from_map(map: &Map<String, Value>) -> Result<CharmConfig, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let str_opt = |key: &'static str, default: &str, errs: &mut Vec<ConfigError>| {
            get_str(map, key, default).unwrap_or_else(|p| {
                errs.push(ConfigError::new(key, p, "set a string value"));
                default.to_string()
            })
        };

        let mode_raw = str_opt("mode", "auto", &mut errs);
        let mode = match mode_raw.as_str() {
            "auto" => Mode::Auto,
            "all" => Mode::All,
            "web" => Mode::Web,
            "worker" => Mode::Worker,
            other => {
                errs.push(ConfigError::new(
                    "mode",
                    format!("{other:?} is not a mode"),
                    "use one of auto, all, web, worker",
                ));
                Mode::Auto
            }
        };

        let version_raw = str_opt("version", "", &mut errs);
        let version_raw = version_raw
            .strip_prefix('v')
            .unwrap_or(&version_raw)
            .to_string();
        let version = if version_raw.is_empty() {
            None
        } else if is_valid_version(&version_raw) {
            Some(version_raw)
        } else {
            errs.push(ConfigError::new(
                "version",
                format!("{version_raw:?} is not a version"),
                "use a release number such as 7.14.3, or \"\" for the latest",
            ));
            None
        };

        let ss_raw = str_opt("shared-storage", "none", &mut errs);
        let shared_storage = match ss_raw.as_str() {
            "none" | "" => SharedStorage::None,
            "shared" | "lxc" => SharedStorage::Shared,
            other => {
                errs.push(ConfigError::new(
                    "shared-storage",
                    format!("{other:?} is not a storage mode"),
                    "use none or shared",
                ));
                SharedStorage::None
            }
        };

        let release_url = str_opt(
            "release-url",
            "https://github.com/concourse/concourse/releases/download/v{version}/concourse-{version}-linux-amd64.tgz",
            &mut errs,
        );
        if let Err(p) = check_url(&release_url) {
            errs.push(ConfigError::new(
                "release-url",
                p,
                "use an http(s) URL containing {version}",
            ));
        } else if !release_url.contains("{version}") {
            errs.push(ConfigError::new(
                "release-url",
                "has no {version} placeholder",
                "include {version} where the release number goes",
            ));
        }
        let release_api_url = str_opt(
            "release-api-url",
            "https://api.github.com/repos/concourse/concourse/releases/latest",
            &mut errs,
        );
        if let Err(p) = check_url(&release_api_url) {
            errs.push(ConfigError::new("release-api-url", p, "use an http(s) URL"));
        }
        let github_token = match get_str(map, "github-token", "") {
            Ok(t) => Secret(t),
            Err(_) => {
                errs.push(ConfigError::new(
                    "github-token",
                    "expected a string",
                    "set a token string",
                ));
                Secret::default()
            }
        };

        let web_port = match get_int(map, "web-port", 8080) {
            Ok(p) if (1..=65535).contains(&p) => p as u16,
            Ok(p) => {
                errs.push(ConfigError::new(
                    "web-port",
                    format!("{p} is out of range"),
                    "use a port between 1 and 65535",
                ));
                8080
            }
            Err(p) => {
                errs.push(ConfigError::new(
                    "web-port",
                    p,
                    "use a port between 1 and 65535",
                ));
                8080
            }
        };

        let ext_raw = str_opt("external-url", "", &mut errs);
        let external_url = if ext_raw.is_empty() {
            None
        } else {
            match check_url(&ext_raw) {
                Ok(()) if !ext_raw.contains('{') => Some(ext_raw.trim_end_matches('/').to_string()),
                Ok(()) => {
                    errs.push(ConfigError::new(
                        "external-url",
                        format!("{ext_raw:?} contains a placeholder"),
                        "use a URL such as https://ci.example.com",
                    ));
                    None
                }
                Err(p) => {
                    errs.push(ConfigError::new(
                        "external-url",
                        p,
                        "use a URL such as https://ci.example.com, or \"\" for the unit address",
                    ));
                    None
                }
            }
        };

        let ll_raw = str_opt("log-level", "info", &mut errs);
        let log_level = match ll_raw.as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "error" => LogLevel::Error,
            "fatal" => LogLevel::Fatal,
            other => {
                errs.push(ConfigError::new(
                    "log-level",
                    format!("{other:?} is not a Concourse log level"),
                    "use one of debug, info, error, fatal",
                ));
                LogLevel::Info
            }
        };

        let dt_raw = str_opt("drain-timeout", "1h", &mut errs);
        let drain_timeout = match parse_duration(&dt_raw) {
            Some(d) if d >= Duration::from_secs(1) => d,
            _ => {
                errs.push(ConfigError::new(
                    "drain-timeout",
                    format!("{dt_raw:?} is not a duration of at least 1s"),
                    "use a duration such as 90s, 30m, 1h or 1h30m",
                ));
                Duration::from_secs(3600)
            }
        };

        let upgrade_max_unavailable = match get_int(map, "upgrade-max-unavailable", 1) {
            Ok(n) if (1..=1000).contains(&n) => n as u32,
            Ok(n) => {
                errs.push(ConfigError::new(
                    "upgrade-max-unavailable",
                    format!("{n} is out of range"),
                    "use a number of workers between 1 and 1000",
                ));
                1
            }
            Err(p) => {
                errs.push(ConfigError::new(
                    "upgrade-max-unavailable",
                    p,
                    "use a whole number >= 1",
                ));
                1
            }
        };

        let tag_raw = str_opt("tag", "", &mut errs);
        let mut tags: Vec<String> = Vec::new();
        for t in tag_raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errs.push(ConfigError::new(
                    "tag",
                    format!("tag {t:?} contains whitespace"),
                    "use comma-separated tags without spaces",
                ));
            } else if !tags.iter().any(|x| x == t) {
                tags.push(t.to_string());
            }
        }

        let user = str_opt("initial-admin-username", "admin", &mut errs);
        let user_ok = !user.is_empty()
            && user.len() <= 64
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !user_ok {
            errs.push(ConfigError::new(
                "initial-admin-username",
                format!("{user:?} is not a valid user name"),
                "use letters, digits, '-', '_', '.', '@' (at most 64)",
            ));
        }

        if errs.is_empty() {
            Ok(CharmConfig {
                mode,
                version,
                shared_storage,
                release_url,
                release_api_url,
                github_token,
                web_port,
                external_url,
                log_level,
                drain_timeout,
                upgrade_max_unavailable,
                tags,
                initial_admin_username: user,
            })
        } else {
            Err(errs)
        }
    }

    /// The download URL of a version.
    pub fn release_url_for(&self, version: &str) -> String {
        self.release_url.replace("{version}", version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_are_valid() {
        let c = CharmConfig::from_map(&Map::new()).unwrap();
        assert_eq!(c.mode, Mode::Auto);
        assert_eq!(c.version, None);
        assert_eq!(c.shared_storage, SharedStorage::None);
        assert_eq!(c.web_port, 8080);
        assert_eq!(c.drain_timeout, Duration::from_secs(3600));
        assert_eq!(c.initial_admin_username, "admin");
        assert_eq!(
            c.release_url_for("7.14.3"),
            "https://github.com/concourse/concourse/releases/download/v7.14.3/concourse-7.14.3-linux-amd64.tgz"
        );
    }

    #[test]
    fn parses_values() {
        let c = CharmConfig::from_map(&map(json!({
            "mode": "all", "version": "v7.14.3", "shared-storage": "lxc", "web-port": 443,
            "external-url": "https://ci.example.com/", "log-level": "debug",
            "drain-timeout": "1h30m", "upgrade-max-unavailable": 2, "tag": "gpu, big,gpu",
            "github-token": "ghp_x"
        })))
        .unwrap();
        assert_eq!(c.mode, Mode::All);
        assert_eq!(c.version.as_deref(), Some("7.14.3"));
        assert_eq!(c.shared_storage, SharedStorage::Shared);
        assert_eq!(c.web_port, 443);
        assert_eq!(c.external_url.as_deref(), Some("https://ci.example.com"));
        assert_eq!(c.drain_timeout, Duration::from_secs(5400));
        assert_eq!(c.tags, vec!["gpu", "big"]);
        assert_eq!(format!("{:?}", c.github_token), "<redacted>");
        assert!(!format!("{c:?}").contains("ghp_x"));
    }

    #[test]
    fn every_bad_option_is_named_with_a_fix() {
        let cases = [
            ("mode", json!("both")),
            ("version", json!("latest")),
            ("shared-storage", json!("nfs")),
            ("release-url", json!("ftp://x/{version}")),
            ("release-url", json!("https://mirror/concourse.tgz")),
            ("release-api-url", json!("not a url")),
            ("web-port", json!(0)),
            ("web-port", json!(70000)),
            ("web-port", json!("http")),
            ("external-url", json!("ci.example.com")),
            ("log-level", json!("warn")),
            ("drain-timeout", json!("soon")),
            ("drain-timeout", json!("0s")),
            ("upgrade-max-unavailable", json!(0)),
            ("tag", json!("a b")),
            ("initial-admin-username", json!("ad:min")),
            ("initial-admin-username", json!("")),
        ];
        for (key, value) in cases {
            let mut m = Map::new();
            m.insert(key.to_string(), value.clone());
            let errs = CharmConfig::from_map(&m).unwrap_err();
            assert_eq!(errs.len(), 1, "{key}={value}: {errs:?}");
            assert_eq!(errs[0].option, key);
            let msg = errs[0].status_message();
            assert!(msg.contains(key) && !errs[0].fix.is_empty(), "{msg}");
        }
    }

    #[test]
    fn several_errors_reported_together_and_token_never_shown() {
        let errs = CharmConfig::from_map(&map(json!({
            "mode": "x", "log-level": "warn", "github-token": 5
        })))
        .unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.option).collect();
        assert_eq!(names, vec!["mode", "github-token", "log-level"]);
    }

    #[test]
    fn versions() {
        for v in [
            "7.14.3",
            "8.0.0-rc.1",
            "10.20.30",
            "8.0.0-beta-2.x",
            "999999.0.0",
        ] {
            assert!(is_valid_version(v), "{v}");
        }
        for v in [
            "",
            "7",
            "7.14",
            "7.14.3.1",
            "7.x.3",
            "../7.1.1",
            "7.1.1-",
            "7.1.1-a/b",
            "7.1.1 ",
            "7.14.3+build.1",
            "07.14.3",
            "8.0.0-rc.01",
            "8.0.0-rc..1",
            "1000000.0.0",
            "v7.14.3",
        ] {
            assert!(!is_valid_version(v), "{v}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h15m10s"), Some(Duration::from_secs(8110)));
        for bad in [
            "",
            "h",
            "1x",
            "1h30",
            "10ms",
            "-5s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
