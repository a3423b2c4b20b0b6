//! Typed, validated charm configuration.
//!
//! Owns: turning `config-get --format=json` output into `CharmConfig`, every config
//! error message, and the charm's one version parser ([`parse_version`]).
//!
//! Shape: a serde-derived raw struct (`RawConfig`, kebab-case names as in config.yaml;
//! unknown keys ignored) whose fields accept any JSON value, then one validator per
//! option that reports its own problems and returns a fallback, so one bad option never
//! hides another.
//!
//! Invariants: validation reports *all* bad options, in config.yaml order, each naming
//! the option, the bad value (never for secret options) and the fix; a `CharmConfig`
//! only exists when every option is valid. The messages are quoted in
//! docs/troubleshooting.md (checked by `tests/it/docs.rs`): change both together.
//!
//! Hazards: `github-token` is a secret; its `Debug` is redacted and it never appears in
//! an error.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

mod observe;
pub use observe::{BaggageclaimDriver, Placement, ProxyOptions, WorkerRuntime, WORKER_PORTS};

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
    /// A secret value; registered so that no message shows it (`juju::tools::scrub`).
    pub fn new(s: impl Into<String>) -> Secret {
        let s = s.into();
        crate::juju::tools::register_secret(&s);
        Secret(s)
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
    pub fn new(
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
    /// Deprecated plain token; [`CharmConfig::github_token_secret`] wins when both are set.
    pub github_token: Secret,
    /// URI (`secret:…`) of a user secret with key `token`, read with `secret-get`.
    pub github_token_secret: Option<String>,
    /// Pinned sha256 of the release tarball, per version (`release-sha256`). When any
    /// is set, every version needs one.
    pub release_sha256: std::collections::BTreeMap<String, String>,
    /// Extra CA certificates (PEM) to trust for downloads (`release-ca`).
    pub release_ca: Option<String>,
    pub web_port: u16,
    pub external_url: Option<String>,
    pub log_level: LogLevel,
    pub drain_timeout: Duration,
    pub upgrade_max_unavailable: u32,
    pub tags: Vec<String>,
    pub initial_admin_username: String,
    /// The worker's runtime settings (`baggageclaim-driver`, DNS, limits).
    pub worker_runtime: WorkerRuntime,
    /// `http-proxy`, `https-proxy`, `no-proxy`: override the model's proxy settings.
    pub proxy: ProxyOptions,
    /// Concourse web's Prometheus port (`metrics-port`), served while a metrics relation is up.
    pub metrics_port: u16,
    /// Web's HTTPS port (`tls-port`), served while a certificate from `certificates` is in use.
    pub tls_port: u16,
    /// How web places containers on workers and the per-worker limits.
    pub placement: Placement,
    /// Authentication, credentials, encryption, housekeeping (issue 14; `crate::web_options`).
    pub web_options: crate::web_options::WebOptions,
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

/// `http://<host>:<port>`, with an IPv6 address in brackets.
pub fn http_url(host: &str, port: u16) -> String {
    format!("http://{}", host_port(host, port))
}

/// `<host>:<port>` (Go's `net.JoinHostPort`): an IPv6 address goes in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A URL as messages may show it: no user info, query or fragment (they may hold a
/// token or a signature); `{version}` kept.
pub fn shown_url(raw: &str) -> String {
    let probe = raw.replace("{version}", "0.0.0.0.0");
    match reqwest::Url::parse(&probe) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().replace("0.0.0.0.0", "{version}")
        }
        // Not an http(s) URL (`user:token@host` parses with scheme `user`): drop
        // whatever could be user info, a query or a fragment.
        _ => {
            let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            if scheme.is_empty() {
                rest.to_string()
            } else {
                format!("{scheme}://{rest}")
            }
        }
    }
}

/// Checks an http(s) URL; `{version}` placeholders are allowed. Problems quote the URL
/// through [`shown_url`].
fn check_url(raw: &str) -> Result<(), String> {
    let shown = shown_url(raw);
    let probe = raw.replace("{version}", "0.0.0");
    let url = reqwest::Url::parse(&probe).map_err(|e| format!("{shown:?} is not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => {}
        // The scheme is not quoted: in `user:token@host` it is the user name.
        _ => return Err(format!("{shown:?} is not an http(s) URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    Ok(())
}

/// A config value as `config-get --format=json` sent it, typed loosely so that one bad
/// value never stops the others from being checked: null or absent is [`Opt::Unset`], a
/// value of the wrong type is [`Opt::WrongType`] with what was wrong.
#[derive(Debug, Clone, Default, PartialEq)]
enum Opt<T> {
    #[default]
    Unset,
    Set(T),
    WrongType(String),
}

/// How a JSON value becomes an option value.
trait FromJuju: Sized {
    fn from_json(v: Value) -> Result<Self, String>;
}

/// String options: strings only (trimmed).
impl FromJuju for String {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::String(s) => Ok(s.trim().to_string()),
            other => Err(format!("expected a string, got {other}")),
        }
    }
}

/// Int options: JSON numbers, or strings holding a whole number.
impl FromJuju for i64 {
    fn from_json(v: Value) -> Result<Self, String> {
        match v {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| format!("expected a whole number, got {n}")),
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("expected a whole number, got {s:?}")),
            other => Err(format!("expected a whole number, got {other}")),
        }
    }
}

impl<'de, T: FromJuju> Deserialize<'de> for Opt<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Opt::Unset,
            v => T::from_json(v).map_or_else(Opt::WrongType, Opt::Set),
        })
    }
}

/// The options of config.yaml as Juju sends them; unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
struct RawConfig {
    mode: Opt<String>,
    version: Opt<String>,
    shared_storage: Opt<String>,
    release_url: Opt<String>,
    release_api_url: Opt<String>,
    github_token: Opt<String>,
    github_token_secret: Opt<String>,
    release_sha256: Opt<String>,
    release_ca: Opt<String>,
    web_port: Opt<i64>,
    external_url: Opt<String>,
    log_level: Opt<String>,
    drain_timeout: Opt<String>,
    upgrade_max_unavailable: Opt<i64>,
    tag: Opt<String>,
    initial_admin_username: Opt<String>,
    #[serde(flatten)]
    observe: observe::Raw,
}

const DEFAULT_RELEASE_URL: &str = "https://github.com/concourse/concourse/releases/download/v{version}/concourse-{version}-linux-amd64.tgz";
const DEFAULT_RELEASE_API_URL: &str =
    "https://api.github.com/repos/concourse/concourse/releases/latest";

/// The errors found so far; each validator adds its own and returns a fallback value.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn add(&mut self, option: &'static str, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigError::new(option, problem, fix));
    }

    /// A string option's value, or `default` when unset, (reported) of the wrong type or
    /// (reported) holding a control character: a newline in a value would end up in an
    /// env file or a status line. The value is never echoed (it may be a secret).
    fn text(&mut self, option: &'static str, raw: Opt<String>, default: &str) -> String {
        self.text_allowing(option, raw, default, &[])
    }

    /// [`Errors::text`], allowing the control characters in `allowed` (a PEM's newlines).
    fn text_allowing(
        &mut self,
        option: &'static str,
        raw: Opt<String>,
        default: &str,
        allowed: &[char],
    ) -> String {
        match raw {
            Opt::Unset => default.to_string(),
            Opt::Set(s) if s.chars().any(|c| c.is_control() && !allowed.contains(&c)) => {
                self.add(
                    option,
                    "the value contains a control character (a newline, tab or escape)",
                    "set it again without control characters",
                );
                default.to_string()
            }
            Opt::Set(s) => s,
            Opt::WrongType(p) => {
                self.add(option, p, "set a string value");
                default.to_string()
            }
        }
    }

    /// An int option's value within `range`, or `default` (errors reported with `fix`
    /// and, for a wrong type, `type_fix`).
    fn int(
        &mut self,
        option: &'static str,
        raw: Opt<i64>,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
        (fix, type_fix): (&str, &str),
    ) -> i64 {
        match raw {
            Opt::Unset => default,
            Opt::Set(n) if range.contains(&n) => n,
            Opt::Set(n) => {
                self.add(option, format!("{n} is out of range"), fix);
                default
            }
            Opt::WrongType(p) => {
                self.add(option, p, type_fix);
                default
            }
        }
    }
}

fn mode(raw: Opt<String>, errs: &mut Errors) -> Mode {
    match errs.text("mode", raw, "auto").as_str() {
        "auto" => Mode::Auto,
        "all" => Mode::All,
        "web" => Mode::Web,
        "worker" => Mode::Worker,
        other => {
            errs.add(
                "mode",
                format!("{other:?} is not a mode"),
                "use one of auto, all, web, worker",
            );
            Mode::Auto
        }
    }
}

fn version(raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let raw = errs.text("version", raw, "");
    let v = raw.strip_prefix('v').unwrap_or(&raw);
    if v.is_empty() {
        None
    } else if is_valid_version(v) {
        Some(v.to_string())
    } else {
        errs.add(
            "version",
            format!("{v:?} is not a version"),
            "use a release number such as 7.14.3, or \"\" for the latest",
        );
        None
    }
}

fn shared_storage(raw: Opt<String>, errs: &mut Errors) -> SharedStorage {
    match errs.text("shared-storage", raw, "none").as_str() {
        "none" | "" => SharedStorage::None,
        "shared" | "lxc" => SharedStorage::Shared,
        other => {
            errs.add(
                "shared-storage",
                format!("{other:?} is not a storage mode"),
                "use none or shared",
            );
            SharedStorage::None
        }
    }
}

fn release_url(raw: Opt<String>, errs: &mut Errors) -> String {
    let url = errs.text("release-url", raw, DEFAULT_RELEASE_URL);
    if let Err(p) = check_url(&url) {
        errs.add("release-url", p, "use an http(s) URL containing {version}");
    } else if !url.contains("{version}") {
        errs.add(
            "release-url",
            "has no {version} placeholder",
            "include {version} where the release number goes",
        );
    }
    url
}

fn release_api_url(raw: Opt<String>, errs: &mut Errors) -> String {
    let url = errs.text("release-api-url", raw, DEFAULT_RELEASE_API_URL);
    if let Err(p) = check_url(&url) {
        errs.add("release-api-url", p, "use an http(s) URL");
    }
    url
}

/// Never echoes the value, not even a wrong-typed one.
fn github_token(raw: Opt<String>, errs: &mut Errors) -> Secret {
    match raw {
        Opt::Unset => Secret::default(),
        Opt::Set(t) => Secret::new(errs.text("github-token", Opt::Set(t), "")),
        Opt::WrongType(_) => {
            errs.add("github-token", "expected a string", "set a token string");
            Secret::default()
        }
    }
}

/// A Juju secret URI (`secret:<id>`, as `juju add-secret` prints it), or unset.
fn github_token_secret(raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let uri = errs.text("github-token-secret", raw, "");
    if uri.is_empty() {
        return None;
    }
    let id = uri.strip_prefix("secret:").unwrap_or_default();
    let id = id
        .strip_prefix("//")
        .map_or(id, |rest| rest.rsplit('/').next().unwrap_or(""));
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        errs.add(
            "github-token-secret",
            "is not a secret URI",
            "juju add-secret github-token token=<token>, juju grant-secret github-token <app>, then set the secret:<id> it printed",
        );
        return None;
    }
    Some(uri)
}

/// `<version>=<sha256>[,<version>=<sha256>…]`.
fn release_sha256(
    raw: Opt<String>,
    errs: &mut Errors,
) -> std::collections::BTreeMap<String, String> {
    let text = errs.text("release-sha256", raw, "");
    let mut out = std::collections::BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let parsed = item.split_once('=').and_then(|(v, h)| {
            let (v, h) = (v.trim().trim_start_matches('v'), h.trim());
            let hex = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
            (is_valid_version(v) && hex).then(|| (v.to_string(), h.to_ascii_lowercase()))
        });
        match parsed {
            Some((v, h)) => {
                out.insert(v, h);
            }
            None => {
                let shown: String = item.chars().take(80).collect();
                errs.add(
                    "release-sha256",
                    format!("{shown:?} is not <version>=<sha256>"),
                    "list the tarballs' digests as 7.14.3=<64 hex digits>, comma-separated",
                );
            }
        }
    }
    out
}

/// PEM certificates (newlines allowed); must hold at least one certificate.
fn release_ca(raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let pem = errs.text_allowing("release-ca", raw, "", &['\n', '\r']);
    if pem.is_empty() {
        return None;
    }
    match crate::installer::download::parse_ca_bundle(&pem) {
        Ok(_) => Some(pem),
        Err(_) => {
            errs.add(
                "release-ca",
                "holds no PEM certificate",
                "set it to the CA certificate(s) in PEM: juju config <app> release-ca=@ca.pem",
            );
            None
        }
    }
}

fn web_port(raw: Opt<i64>, errs: &mut Errors) -> u16 {
    let fix = "use a port between 1 and 65535";
    let port = errs.int("web-port", raw, 8080, 1..=65535, (fix, fix));
    u16::try_from(port).unwrap_or(8080)
}

fn external_url(raw: Opt<String>, errs: &mut Errors) -> Option<String> {
    let url = errs.text("external-url", raw, "");
    if url.is_empty() {
        return None;
    }
    match check_url(&url) {
        Ok(()) if !url.contains('{') => Some(url.trim_end_matches('/').to_string()),
        Ok(()) => {
            errs.add(
                "external-url",
                format!("{:?} contains a placeholder", shown_url(&url)),
                "use a URL such as https://ci.example.com",
            );
            None
        }
        Err(p) => {
            errs.add(
                "external-url",
                p,
                "use a URL such as https://ci.example.com, or \"\" for the unit address",
            );
            None
        }
    }
}

fn log_level(raw: Opt<String>, errs: &mut Errors) -> LogLevel {
    match errs.text("log-level", raw, "info").as_str() {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "error" => LogLevel::Error,
        "fatal" => LogLevel::Fatal,
        other => {
            errs.add(
                "log-level",
                format!("{other:?} is not a Concourse log level"),
                "use one of debug, info, error, fatal",
            );
            LogLevel::Info
        }
    }
}

fn drain_timeout(raw: Opt<String>, errs: &mut Errors) -> Duration {
    let raw = errs.text("drain-timeout", raw, "1h");
    match parse_duration(&raw) {
        Some(d) if d >= Duration::from_secs(1) => d,
        _ => {
            errs.add(
                "drain-timeout",
                format!("{raw:?} is not a duration of at least 1s"),
                "use a duration such as 90s, 30m, 1h or 1h30m",
            );
            Duration::from_secs(3600)
        }
    }
}

fn upgrade_max_unavailable(raw: Opt<i64>, errs: &mut Errors) -> u32 {
    let fixes = (
        "use a number of workers between 1 and 1000",
        "use a whole number >= 1",
    );
    let n = errs.int("upgrade-max-unavailable", raw, 1, 1..=1000, fixes);
    u32::try_from(n).unwrap_or(1)
}

/// Comma-separated, trimmed, empty ones dropped, duplicates dropped; every tag with
/// whitespace is reported.
fn tags(raw: Opt<String>, errs: &mut Errors) -> Vec<String> {
    let raw = errs.text("tag", raw, "");
    let mut tags: Vec<String> = Vec::new();
    for t in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errs.add(
                "tag",
                format!("tag {t:?} contains whitespace"),
                "use comma-separated tags without spaces",
            );
        } else if !tags.iter().any(|x| x == t) {
            tags.push(t.to_string());
        }
    }
    tags
}

fn initial_admin_username(raw: Opt<String>, errs: &mut Errors) -> String {
    let user = errs.text("initial-admin-username", raw, "admin");
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        errs.add(
            "initial-admin-username",
            format!("{user:?} is not a valid user name"),
            "use letters, digits, '-', '_', '.', '@' (at most 64)",
        );
    }
    user
}

impl CharmConfig {
    /// Validates `config-get --format=json` output. Returns every problem found, in the
    /// order of config.yaml.
    pub fn from_map(map: &Map<String, Value>) -> Result<CharmConfig, Vec<ConfigError>> {
        // Every field is an `Opt`, which accepts any JSON value: this cannot fail.
        let raw: RawConfig = serde_json::from_value(Value::Object(map.clone())).map_err(|e| {
            vec![ConfigError::new(
                "config",
                e.to_string(),
                "check juju config",
            )]
        })?;
        let mut errs = Errors::default();
        let mut config = CharmConfig {
            mode: mode(raw.mode, &mut errs),
            version: version(raw.version, &mut errs),
            shared_storage: shared_storage(raw.shared_storage, &mut errs),
            release_url: release_url(raw.release_url, &mut errs),
            release_api_url: release_api_url(raw.release_api_url, &mut errs),
            github_token: github_token(raw.github_token, &mut errs),
            github_token_secret: github_token_secret(raw.github_token_secret, &mut errs),
            release_sha256: release_sha256(raw.release_sha256, &mut errs),
            release_ca: release_ca(raw.release_ca, &mut errs),
            web_port: web_port(raw.web_port, &mut errs),
            external_url: external_url(raw.external_url, &mut errs),
            log_level: log_level(raw.log_level, &mut errs),
            drain_timeout: drain_timeout(raw.drain_timeout, &mut errs),
            upgrade_max_unavailable: upgrade_max_unavailable(
                raw.upgrade_max_unavailable,
                &mut errs,
            ),
            tags: tags(raw.tag, &mut errs),
            initial_admin_username: initial_admin_username(raw.initial_admin_username, &mut errs),
            worker_runtime: WorkerRuntime::default(),
            proxy: ProxyOptions::default(),
            metrics_port: 0,
            tls_port: 0,
            placement: Placement::default(),
            web_options: Default::default(),
        };
        // After the options above, so errors keep config.yaml's order.
        observe::apply(raw.observe, &mut config, &mut errs);
        match crate::web_options::WebOptions::parse(map, &config.initial_admin_username) {
            Ok(w) => config.web_options = w,
            Err(e) => errs.0.extend(e),
        }
        if errs.0.is_empty() {
            Ok(config)
        } else {
            Err(errs.0)
        }
    }

    /// The download URL of a version.
    pub fn release_url_for(&self, version: &str) -> String {
        self.release_url.replace("{version}", version)
    }

    /// The pinned sha256 of `version`'s tarball: `Ok(None)` when nothing is pinned,
    /// `Err` when other versions are pinned but not this one (pins are all or nothing).
    pub fn pinned_sha256(&self, version: &str) -> Result<Option<&str>, String> {
        if self.release_sha256.is_empty() {
            return Ok(None);
        }
        self.release_sha256
            .get(version)
            .map(|h| Some(h.as_str()))
            .ok_or_else(|| version.to_string())
    }

    /// Whether `release-url` downloads over plain http.
    pub fn release_url_is_plain_http(&self) -> bool {
        self.release_url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
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
    fn juju_json_types_are_accepted_and_unknown_keys_ignored() {
        let c = CharmConfig::from_map(&map(json!({
            "web-port": "443", "upgrade-max-unavailable": 3, "mode": null,
            "some-future-option": true, "another": {"nested": [1, 2]}
        })))
        .unwrap();
        assert_eq!((c.web_port, c.upgrade_max_unavailable), (443, 3));
        assert_eq!(c.mode, Mode::Auto, "null is the default");
        let errs = CharmConfig::from_map(&map(json!({
            "mode": true, "web-port": 80.5, "upgrade-max-unavailable": false
        })))
        .unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ConfigError::status_message).collect();
        assert_eq!(
            msgs,
            vec![
                "invalid mode: expected a string, got true; set a string value",
                "invalid web-port: expected a whole number, got 80.5; use a port between 1 and 65535",
                "invalid upgrade-max-unavailable: expected a whole number, got false; use a whole number >= 1",
            ]
        );
    }

    #[test]
    fn every_option_of_config_yaml_is_read_and_reported_by_name() {
        let yaml: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml")).unwrap(),
        )
        .unwrap();
        let options: Vec<String> = yaml["options"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(options.len(), 16 + 13 + 81, "{options:?}");
        // A wrong type for every option at once: every one is reported, in order.
        let all_wrong: Map<String, Value> =
            options.iter().map(|o| (o.clone(), json!([1]))).collect();
        let errs = CharmConfig::from_map(&all_wrong).unwrap_err();
        let named: Vec<&str> = errs.iter().map(|e| e.option).collect();
        assert_eq!(named, options, "{errs:?}");
        assert!(errs.iter().all(|e| !e.fix.is_empty()));
    }

    #[test]
    fn wrong_typed_token_is_never_echoed() {
        let errs = CharmConfig::from_map(&map(json!({"github-token": 424242}))).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(!errs[0].to_string().contains("424242"), "{}", errs[0]);
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
    #[test]
    fn external_url_with_an_embedded_newline_is_refused() {
        // Url::parse drops tabs and newlines, so this used to pass and be written to
        // web.env with the newline in it.
        let errs = CharmConfig::from_map(&map(json!({
            "external-url": "https://ci.example.com/\nCONCOURSE_EVIL=1"
        })))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].option, "external-url");
        assert!(errs[0].problem.contains("control character"), "{errs:?}");
    }

    #[test]
    fn control_characters_are_refused_in_every_string_option() {
        for (option, good) in [
            ("mode", "auto"),
            ("version", "7.14.3"),
            ("shared-storage", "none"),
            ("release-url", "https://m.example/{version}/c.tgz"),
            ("release-api-url", "https://api.example/latest"),
            ("github-token", "ghp_abc"),
            ("external-url", "https://ci.example.com"),
            ("log-level", "info"),
            ("drain-timeout", "1h"),
            ("tag", "gpu"),
            ("initial-admin-username", "admin"),
        ] {
            for bad in ["\n", "\r", "\u{1b}[2J", "\0", "\t"] {
                let value = format!("{}{bad}x{}", &good[..1], &good[1..]);
                let mut m = Map::new();
                m.insert(option.to_string(), json!(value));
                let errs = CharmConfig::from_map(&m).unwrap_err();
                assert_eq!(errs.len(), 1, "{option}={value:?}: {errs:?}");
                assert_eq!(errs[0].option, option);
                assert!(
                    errs[0].problem.contains("control character"),
                    "{option}: {errs:?}"
                );
                if option == "github-token" {
                    assert!(!errs[0].to_string().contains("ghp"), "{errs:?}");
                }
            }
        }
    }

    #[test]
    fn release_url_credentials_never_reach_the_status() {
        for url in [
            "ftp://mirror-user:s3cr3t-token@mirror.example/{version}/c.tgz?sig=s3cr3t-sig",
            "https://mirror-user:s3cr3t-token@mirror.example/c.tgz?sig=s3cr3t-sig",
            "mirror-user:s3cr3t-token@mirror.example/{version}?sig=s3cr3t-sig",
        ] {
            for option in ["release-url", "release-api-url", "external-url"] {
                let mut m = Map::new();
                m.insert(option.into(), json!(url));
                let Err(errs) = CharmConfig::from_map(&m) else {
                    continue;
                };
                for e in &errs {
                    let msg = e.status_message();
                    assert!(!msg.contains("s3cr3t"), "{option}: {msg}");
                    assert!(!msg.contains("mirror-user"), "{option}: {msg}");
                }
            }
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_urls_and_host_ports() {
        assert_eq!(http_url("fd42::5", 8080), "http://[fd42::5]:8080");
        assert_eq!(host_port("fd42::5", 2222), "[fd42::5]:2222");
        assert_eq!(host_port("[fd42::5]", 2222), "[fd42::5]:2222");
        assert_eq!(http_url("10.0.0.5", 8080), "http://10.0.0.5:8080");
        assert_eq!(host_port("ci.example.com", 2222), "ci.example.com:2222");
        reqwest::Url::parse(&http_url("fd42::5", 8080)).unwrap();
    }

    #[test]
    fn release_sha256_pins_are_all_or_nothing() {
        let h1 = "a".repeat(64);
        let h2 = "B".repeat(64);
        let c = CharmConfig::from_map(&map(json!({
            "release-sha256": format!(" 7.14.3={h1}, v7.14.2 = {h2} ")
        })))
        .unwrap();
        assert_eq!(c.pinned_sha256("7.14.3"), Ok(Some(h1.as_str())));
        assert_eq!(c.pinned_sha256("7.14.2"), Ok(Some("b".repeat(64).as_str())));
        assert_eq!(c.pinned_sha256("8.0.0"), Err("8.0.0".to_string()));
        let none = CharmConfig::from_map(&Map::new()).unwrap();
        assert_eq!(none.pinned_sha256("8.0.0"), Ok(None));
        for bad in [
            "7.14.3".to_string(),
            "7.14.3=abc".to_string(),
            format!("latest={h1}"),
            format!("7.14.3:{h1}"),
        ] {
            let errs = CharmConfig::from_map(&map(json!({ "release-sha256": bad }))).unwrap_err();
            assert_eq!(errs[0].option, "release-sha256", "{bad}");
        }
    }

    #[test]
    fn release_ca_takes_pem_with_newlines_only() {
        let errs =
            CharmConfig::from_map(&map(json!({"release-ca": "not a certificate"}))).unwrap_err();
        assert_eq!(errs[0].option, "release-ca");
        assert!(errs[0].fix.contains("PEM"), "{errs:?}");
        let front = release_fixtures::tls::TlsFront::start("127.0.0.1:9".parse().unwrap()).unwrap();
        let c = CharmConfig::from_map(&map(json!({"release-ca": front.ca_pem()}))).unwrap();
        assert_eq!(c.release_ca.as_deref(), Some(front.ca_pem().trim()));
        let tabbed = front.ca_pem().replace('\n', "\n\t");
        let errs = CharmConfig::from_map(&map(json!({"release-ca": tabbed}))).unwrap_err();
        assert!(errs[0].problem.contains("control character"), "{errs:?}");
    }

    #[test]
    fn github_token_secret_is_a_secret_uri() {
        for ok in [
            "secret:cs2ejb6mp25c76kp6f8g",
            "secret://model-uuid/cs2ejb6mp25c76kp6f8g",
        ] {
            let c = CharmConfig::from_map(&map(json!({"github-token-secret": ok}))).unwrap();
            assert_eq!(c.github_token_secret.as_deref(), Some(ok));
        }
        for bad in ["ghp_plaintoken", "secret:", "secret:a b"] {
            let errs =
                CharmConfig::from_map(&map(json!({"github-token-secret": bad}))).unwrap_err();
            assert_eq!(errs[0].option, "github-token-secret");
            assert!(!errs[0].to_string().contains("ghp_"), "{errs:?}");
            assert!(errs[0].fix.contains("juju grant-secret"), "{errs:?}");
        }
    }

    #[test]
    fn plain_http_release_urls_are_recognised() {
        let c = |u: &str| {
            CharmConfig::from_map(&map(json!({"release-url": u})))
                .unwrap()
                .release_url_is_plain_http()
        };
        assert!(c("http://mirror/{version}/c.tgz"));
        assert!(c("HTTP://mirror/{version}/c.tgz"));
        assert!(!c("https://mirror/{version}/c.tgz"));
        assert!(!CharmConfig::from_map(&Map::new())
            .unwrap()
            .release_url_is_plain_http());
    }
}
