//! The options of issue 14 that become `concourse web` (and worker) settings: the
//! authentication connectors, extra local users and main-team membership, encryption at
//! rest, Vault, the secret cache, housekeeping, and the escape hatch.
//!
//! Owns: [`OPTIONS`], one row per option (its Concourse variable and kind), parsing and
//! validating them ([`WebOptions::parse`], errors name the option and the fix), and
//! rendering them ([`WebOptions::env`]) once the charm has read the Juju secrets they name.
//! Names: the variables are Concourse's (`skymarshal/skycmd/*_flags.go`,
//! `atc/atccmd/command.go`, `atc/creds/vault/manager.go`; checked against
//! `crate::concourse_vars`); the option names are those of the Python charm
//! (fourdollars/concourse-ci-machine `config.yaml`) where it had one. Invariants: every
//! client secret, bind password, user password, token and key comes from a Juju secret
//! (a `secret` option: the URI, never the value), so no secret is in the model's config;
//! values never reach statuses or logs. Hazards: Concourse skips a connector with a
//! missing client id or secret silently (`skymarshal/dexserver/dexserver.go`), so the
//! checks here are the only warning an operator gets.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::concourse_vars;
use crate::config::{ConfigError, Secret};

/// How an option's value becomes a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string, passed as is (empty: unset).
    Text,
    /// A comma-separated list (items trimmed, empty ones dropped).
    List,
    /// A boolean, set only when true.
    Flag,
    /// A boolean, always set (`true`/`false`).
    Bool,
    /// A whole number >= 0; 0 means unset.
    Count,
    /// A duration (`90s`, `1h30m`); empty means unset.
    Duration,
    /// A PEM certificate, written to a file the variable names.
    Pem,
    /// A Juju secret URI; the variable gets the secret's value under this key.
    Secret(&'static str),
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub option: &'static str,
    pub var: &'static str,
    pub kind: Kind,
}

const fn o(option: &'static str, var: &'static str, kind: Kind) -> Opt {
    Opt { option, var, kind }
}

use Kind::*;

/// Every option of this module, in the order of config.yaml.
pub const OPTIONS: &[Opt] = &[
    // GitHub (skymarshal/skycmd/github_flags.go)
    o("github-client-id", "CONCOURSE_GITHUB_CLIENT_ID", Text),
    o(
        "github-client-secret",
        "CONCOURSE_GITHUB_CLIENT_SECRET",
        Secret("client-secret"),
    ),
    o("github-host", "CONCOURSE_GITHUB_HOST", Text),
    o("github-ca-cert", "CONCOURSE_GITHUB_CA_CERT", Pem),
    o(
        "main-team-github-user",
        "CONCOURSE_MAIN_TEAM_GITHUB_USER",
        List,
    ),
    o(
        "main-team-github-org",
        "CONCOURSE_MAIN_TEAM_GITHUB_ORG",
        List,
    ),
    o(
        "main-team-github-team",
        "CONCOURSE_MAIN_TEAM_GITHUB_TEAM",
        List,
    ),
    // GitLab (skymarshal/skycmd/gitlab_flags.go)
    o("gitlab-client-id", "CONCOURSE_GITLAB_CLIENT_ID", Text),
    o(
        "gitlab-client-secret",
        "CONCOURSE_GITLAB_CLIENT_SECRET",
        Secret("client-secret"),
    ),
    o("gitlab-host", "CONCOURSE_GITLAB_HOST", Text),
    o(
        "main-team-gitlab-user",
        "CONCOURSE_MAIN_TEAM_GITLAB_USER",
        List,
    ),
    o(
        "main-team-gitlab-group",
        "CONCOURSE_MAIN_TEAM_GITLAB_GROUP",
        List,
    ),
    // OIDC (skymarshal/skycmd/oidc_flags.go)
    o("oidc-display-name", "CONCOURSE_OIDC_DISPLAY_NAME", Text),
    o("oidc-issuer", "CONCOURSE_OIDC_ISSUER", Text),
    o("oidc-client-id", "CONCOURSE_OIDC_CLIENT_ID", Text),
    o(
        "oidc-client-secret",
        "CONCOURSE_OIDC_CLIENT_SECRET",
        Secret("client-secret"),
    ),
    o("oidc-scope", "CONCOURSE_OIDC_SCOPE", List),
    o("oidc-groups-key", "CONCOURSE_OIDC_GROUPS_KEY", Text),
    o("oidc-user-name-key", "CONCOURSE_OIDC_USER_NAME_KEY", Text),
    o("oidc-ca-cert", "CONCOURSE_OIDC_CA_CERT", Pem),
    o(
        "oidc-skip-ssl-validation",
        "CONCOURSE_OIDC_SKIP_SSL_VALIDATION",
        Flag,
    ),
    o("main-team-oidc-user", "CONCOURSE_MAIN_TEAM_OIDC_USER", List),
    o(
        "main-team-oidc-group",
        "CONCOURSE_MAIN_TEAM_OIDC_GROUP",
        List,
    ),
    // generic OAuth (skymarshal/skycmd/oauth_flags.go)
    o("oauth-display-name", "CONCOURSE_OAUTH_DISPLAY_NAME", Text),
    o("oauth-client-id", "CONCOURSE_OAUTH_CLIENT_ID", Text),
    o(
        "oauth-client-secret",
        "CONCOURSE_OAUTH_CLIENT_SECRET",
        Secret("client-secret"),
    ),
    o("oauth-auth-url", "CONCOURSE_OAUTH_AUTH_URL", Text),
    o("oauth-token-url", "CONCOURSE_OAUTH_TOKEN_URL", Text),
    o("oauth-userinfo-url", "CONCOURSE_OAUTH_USERINFO_URL", Text),
    o("oauth-scope", "CONCOURSE_OAUTH_SCOPE", List),
    o("oauth-groups-key", "CONCOURSE_OAUTH_GROUPS_KEY", Text),
    o("oauth-user-id-key", "CONCOURSE_OAUTH_USER_ID_KEY", Text),
    o("oauth-user-name-key", "CONCOURSE_OAUTH_USER_NAME_KEY", Text),
    o("oauth-ca-cert", "CONCOURSE_OAUTH_CA_CERT", Pem),
    o(
        "oauth-skip-ssl-validation",
        "CONCOURSE_OAUTH_SKIP_SSL_VALIDATION",
        Flag,
    ),
    o(
        "main-team-oauth-user",
        "CONCOURSE_MAIN_TEAM_OAUTH_USER",
        List,
    ),
    o(
        "main-team-oauth-group",
        "CONCOURSE_MAIN_TEAM_OAUTH_GROUP",
        List,
    ),
    // LDAP (skymarshal/skycmd/ldap_flags.go)
    o("ldap-display-name", "CONCOURSE_LDAP_DISPLAY_NAME", Text),
    o("ldap-host", "CONCOURSE_LDAP_HOST", Text),
    o("ldap-bind-dn", "CONCOURSE_LDAP_BIND_DN", Text),
    o("ldap-bind-pw", "CONCOURSE_LDAP_BIND_PW", Secret("password")),
    o(
        "ldap-insecure-no-ssl",
        "CONCOURSE_LDAP_INSECURE_NO_SSL",
        Flag,
    ),
    o("ldap-start-tls", "CONCOURSE_LDAP_START_TLS", Flag),
    o("ldap-ca-cert", "CONCOURSE_LDAP_CA_CERT", Pem),
    o(
        "ldap-user-search-base-dn",
        "CONCOURSE_LDAP_USER_SEARCH_BASE_DN",
        Text,
    ),
    o(
        "ldap-user-search-filter",
        "CONCOURSE_LDAP_USER_SEARCH_FILTER",
        Text,
    ),
    o(
        "ldap-user-search-username",
        "CONCOURSE_LDAP_USER_SEARCH_USERNAME",
        Text,
    ),
    o(
        "ldap-user-search-id-attr",
        "CONCOURSE_LDAP_USER_SEARCH_ID_ATTR",
        Text,
    ),
    o(
        "ldap-user-search-email-attr",
        "CONCOURSE_LDAP_USER_SEARCH_EMAIL_ATTR",
        Text,
    ),
    o(
        "ldap-user-search-name-attr",
        "CONCOURSE_LDAP_USER_SEARCH_NAME_ATTR",
        Text,
    ),
    o(
        "ldap-group-search-base-dn",
        "CONCOURSE_LDAP_GROUP_SEARCH_BASE_DN",
        Text,
    ),
    o(
        "ldap-group-search-filter",
        "CONCOURSE_LDAP_GROUP_SEARCH_FILTER",
        Text,
    ),
    o(
        "ldap-group-search-user-attr",
        "CONCOURSE_LDAP_GROUP_SEARCH_USER_ATTR",
        Text,
    ),
    o(
        "ldap-group-search-group-attr",
        "CONCOURSE_LDAP_GROUP_SEARCH_GROUP_ATTR",
        Text,
    ),
    o(
        "ldap-group-search-name-attr",
        "CONCOURSE_LDAP_GROUP_SEARCH_NAME_ATTR",
        Text,
    ),
    o("main-team-ldap-user", "CONCOURSE_MAIN_TEAM_LDAP_USER", List),
    o(
        "main-team-ldap-group",
        "CONCOURSE_MAIN_TEAM_LDAP_GROUP",
        List,
    ),
    // local users (skymarshal/skycmd/flags.go: --add-local-user, --main-team-local-user)
    o(
        "extra-local-users",
        "CONCOURSE_ADD_LOCAL_USER",
        Secret("users"),
    ),
    o(
        "main-team-local-user",
        "CONCOURSE_MAIN_TEAM_LOCAL_USER",
        List,
    ),
    // encryption at rest (atc/atccmd/command.go: --encryption-key, --old-encryption-key)
    o("encryption-key", "CONCOURSE_ENCRYPTION_KEY", Secret("key")),
    o(
        "old-encryption-key",
        "CONCOURSE_OLD_ENCRYPTION_KEY",
        Secret("key"),
    ),
    // Vault (atc/creds/vault/manager.go)
    o("vault-url", "CONCOURSE_VAULT_URL", Text),
    o("vault-path-prefix", "CONCOURSE_VAULT_PATH_PREFIX", Text),
    o("vault-shared-path", "CONCOURSE_VAULT_SHARED_PATH", Text),
    o("vault-namespace", "CONCOURSE_VAULT_NAMESPACE", Text),
    o("vault-ca-cert", "CONCOURSE_VAULT_CA_CERT", Pem),
    o("vault-auth-backend", "CONCOURSE_VAULT_AUTH_BACKEND", Text),
    o(
        "vault-auth-backend-max-ttl",
        "CONCOURSE_VAULT_AUTH_BACKEND_MAX_TTL",
        Duration,
    ),
    o(
        "vault-auth-param",
        "CONCOURSE_VAULT_AUTH_PARAM",
        Secret("params"),
    ),
    o(
        "vault-client-token",
        "CONCOURSE_VAULT_CLIENT_TOKEN",
        Secret("token"),
    ),
    o(
        "vault-lookup-templates",
        "CONCOURSE_VAULT_LOOKUP_TEMPLATES",
        List,
    ),
    // the secret cache (atc/atccmd/command.go: CredentialManagement)
    o(
        "secret-cache-enabled",
        "CONCOURSE_SECRET_CACHE_ENABLED",
        Bool,
    ),
    o(
        "secret-cache-duration",
        "CONCOURSE_SECRET_CACHE_DURATION",
        Duration,
    ),
    o(
        "secret-cache-duration-notfound",
        "CONCOURSE_SECRET_CACHE_DURATION_NOTFOUND",
        Duration,
    ),
    // housekeeping (atc/atccmd/command.go; container placement: config/observe.rs)
    o(
        "default-build-logs-to-retain",
        "CONCOURSE_DEFAULT_BUILD_LOGS_TO_RETAIN",
        Count,
    ),
    o(
        "max-build-logs-to-retain",
        "CONCOURSE_MAX_BUILD_LOGS_TO_RETAIN",
        Count,
    ),
    o(
        "default-days-to-retain-build-logs",
        "CONCOURSE_DEFAULT_DAYS_TO_RETAIN_BUILD_LOGS",
        Count,
    ),
    o(
        "max-days-to-retain-build-logs",
        "CONCOURSE_MAX_DAYS_TO_RETAIN_BUILD_LOGS",
        Count,
    ),
    o(
        "gc-failed-grace-period",
        "CONCOURSE_GC_FAILED_GRACE_PERIOD",
        Duration,
    ),
];

/// The connectors: their id prefix, the options that turn them on (all needed) and the
/// options that map main-team members through them. "All needed" is what Concourse
/// requires (each connector's `Validate`, skymarshal/skycmd/*_flags.go: without it the
/// connector is skipped silently) plus what dex needs to open it at start (LDAP's user
/// search base DN and username attribute, concourse/dex connector/ldap/ldap.go: without
/// them web exits 1).
const CONNECTORS: &[(&str, &[&str], &[&str])] = &[
    (
        "github",
        &["github-client-id", "github-client-secret"],
        &[
            "main-team-github-user",
            "main-team-github-org",
            "main-team-github-team",
        ],
    ),
    (
        "gitlab",
        &["gitlab-client-id", "gitlab-client-secret"],
        &["main-team-gitlab-user", "main-team-gitlab-group"],
    ),
    (
        "oidc",
        &["oidc-issuer", "oidc-client-id", "oidc-client-secret"],
        &["main-team-oidc-user", "main-team-oidc-group"],
    ),
    (
        "oauth",
        &[
            "oauth-client-id",
            "oauth-client-secret",
            "oauth-auth-url",
            "oauth-token-url",
            "oauth-userinfo-url",
        ],
        &["main-team-oauth-user", "main-team-oauth-group"],
    ),
    (
        "ldap",
        &[
            "ldap-host",
            "ldap-bind-dn",
            "ldap-bind-pw",
            "ldap-user-search-base-dn",
            "ldap-user-search-username",
        ],
        &["main-team-ldap-user", "main-team-ldap-group"],
    ),
];

/// Variables the charm sets itself: the escape hatch may not override them.
pub const MANAGED: &[&str] = &[
    "CONCOURSE_BIND_PORT",
    "CONCOURSE_EXTERNAL_URL",
    "CONCOURSE_PEER_ADDRESS",
    "CONCOURSE_TSA_BIND_PORT",
    "CONCOURSE_TSA_HOST_KEY",
    "CONCOURSE_TSA_AUTHORIZED_KEYS",
    "CONCOURSE_SESSION_SIGNING_KEY",
    "CONCOURSE_POSTGRES_HOST",
    "CONCOURSE_POSTGRES_PORT",
    "CONCOURSE_POSTGRES_DATABASE",
    "CONCOURSE_POSTGRES_USER",
    "CONCOURSE_POSTGRES_PASSWORD",
    "CONCOURSE_POSTGRES_SSLMODE",
    "CONCOURSE_POSTGRES_CA_CERT",
    "CONCOURSE_NAME",
    "CONCOURSE_WORK_DIR",
    "CONCOURSE_TSA_HOST",
    "CONCOURSE_TSA_PUBLIC_KEY",
    "CONCOURSE_TSA_WORKER_PRIVATE_KEY",
    "CONCOURSE_LOG_LEVEL",
    "CONCOURSE_TAG",
    // the placement options (config/observe.rs)
    "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY",
    "CONCOURSE_MAX_ACTIVE_TASKS_PER_WORKER",
    "CONCOURSE_MAX_ACTIVE_CONTAINERS_PER_WORKER",
    "CONCOURSE_MAX_ACTIVE_VOLUMES_PER_WORKER",
    // TLS and metrics (web::tls_env, web::tls_unit, web::metrics_env): set from the
    // certificates and metrics relations; an env-file CONCOURSE_TLS_KEY would override
    // the unit's credential path
    "CONCOURSE_TLS_BIND_PORT",
    "CONCOURSE_TLS_CERT",
    "CONCOURSE_TLS_KEY",
    "CONCOURSE_PROMETHEUS_BIND_IP",
    "CONCOURSE_PROMETHEUS_BIND_PORT",
];

/// A parsed option value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Plain(String),
    Pem(String),
    Secret { uri: String, key: &'static str },
}

/// The options of this module, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebOptions {
    values: BTreeMap<&'static str, (Opt, ValDbg)>,
    /// `extra-web-env` and `extra-worker-env`, checked.
    pub extra_web_env: BTreeMap<String, String>,
    pub extra_worker_env: BTreeMap<String, String>,
}

/// [`Val`] with a redacting `Debug` (a PEM or URI is no secret, but stay terse).
#[derive(Clone, PartialEq, Eq)]
struct ValDbg(Val);

impl std::fmt::Debug for ValDbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Val::Secret { uri, .. } => write!(f, "secret {uri}"),
            _ => f.write_str("<value>"),
        }
    }
}

impl PartialEq for Opt {
    fn eq(&self, other: &Self) -> bool {
        self.option == other.option
    }
}
impl Eq for Opt {}

fn err(option: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    // Option names come from OPTIONS, which are 'static; map back to keep the type.
    let name = OPTIONS
        .iter()
        .map(|o| o.option)
        .chain(["extra-web-env", "extra-worker-env"])
        .find(|n| *n == option)
        .unwrap_or("config");
    ConfigError::new(name, problem, fix)
}

/// A secret URI (`secret:<id>` or `secret://<model>/<id>`).
fn is_secret_uri(uri: &str) -> bool {
    let id = uri.strip_prefix("secret:").unwrap_or_default();
    let id = id
        .strip_prefix("//")
        .map_or(id, |rest| rest.rsplit('/').next().unwrap_or(""));
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses one option; `Ok(None)` when unset.
fn parse_one(opt: &Opt, raw: Option<&Value>) -> Result<Option<Val>, ConfigError> {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = as_text(raw).ok_or_else(|| err(opt.option, "expected a value", "set a string"))?;
    let allowed_control = if opt.kind == Pem { "\n\r" } else { "" };
    if text
        .chars()
        .any(|c| c.is_control() && !allowed_control.contains(c))
    {
        return Err(err(
            opt.option,
            "the value contains a control character",
            "set it again without control characters",
        ));
    }
    let plain = |s: String| Ok((!s.is_empty()).then_some(Val::Plain(s)));
    match opt.kind {
        Text => plain(text),
        List => plain(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(","),
        ),
        Flag => match text.as_str() {
            "true" => plain("true".into()),
            "false" | "" => Ok(None),
            _ => Err(err(opt.option, "expected true or false", "set true or false")),
        },
        Bool => match text.as_str() {
            "true" | "false" => plain(text),
            _ => Err(err(opt.option, "expected true or false", "set true or false")),
        },
        Count => match text.parse::<u32>() {
            Ok(0) => Ok(None),
            Ok(n) => plain(n.to_string()),
            Err(_) => Err(err(
                opt.option,
                format!("{text:?} is not a whole number >= 0"),
                "set a number of builds or days (0 for Concourse's default)",
            )),
        },
        Duration if text.is_empty() => Ok(None),
        Duration => match crate::config::parse_duration(&text) {
            Some(d) => plain(format!("{}s", d.as_secs())),
            None => Err(err(
                opt.option,
                format!("{text:?} is not a duration"),
                "use e.g. 90s, 30m, 1h or 1h30m",
            )),
        },
        Pem if text.is_empty() => Ok(None),
        Pem if !text.contains("-----BEGIN CERTIFICATE-----") => Err(err(
            opt.option,
            "is not a PEM certificate",
            format!("juju config <app> {}=@ca.pem", opt.option),
        )),
        Pem => Ok(Some(Val::Pem(text))),
        Secret(_) if text.is_empty() => Ok(None),
        Secret(key) if is_secret_uri(&text) => Ok(Some(Val::Secret { uri: text, key })),
        Secret(key) => Err(err(
            opt.option,
            "is not a secret URI",
            format!(
                "juju add-secret <name> {key}=<value>, juju grant-secret <name> <app>, then set the secret:<id> it printed"
            ),
        )),
    }
}

/// Checks one option's value on its own (what the docs' examples are checked with; the
/// combinations are checked by [`WebOptions::parse`]). `None` when it is not an option of
/// this module.
pub fn check_alone(option: &str, value: &str) -> Option<Result<(), String>> {
    let v = Value::String(value.to_string());
    if let Some(opt) = OPTIONS.iter().find(|o| o.option == option) {
        return Some(
            parse_one(opt, Some(&v))
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
    }
    let command = match option {
        "extra-web-env" => "web",
        "extra-worker-env" => "worker",
        _ => return None,
    };
    let mut errs = Vec::new();
    let name = if command == "web" {
        "extra-web-env"
    } else {
        "extra-worker-env"
    };
    parse_extra_env(name, command, Some(&v), &mut errs);
    Some(errs.first().map_or(Ok(()), |e| Err(e.to_string())))
}

/// Parses `KEY=value` words (whitespace-separated) for `command`, against the table of
/// variables Concourse defines.
fn parse_extra_env(
    option: &'static str,
    command: &str,
    raw: Option<&Value>,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let text = match raw.filter(|v| !v.is_null()) {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errs.push(err(option, "expected a string", "set KEY=value words"));
            return out;
        }
    };
    for word in text.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            errs.push(err(
                option,
                format!("{word:?} is not KEY=value"),
                "write CONCOURSE_<NAME>=<value>, separated by spaces",
            ));
            continue;
        };
        if k == "CONCOURSE_PASSWORD_CONNECTOR" && v != "local" {
            // skymarshal/dexserver/dexserver.go: local users only with the local password
            // connector, and the charm always adds the admin as a local user.
            errs.push(err(
                option,
                format!("{k}={v} cannot start: the charm adds the admin as a local user, and Concourse allows local users only with the local password connector"),
                "remove it; log in with fly login -u admin, or through the connector in the browser",
            ));
            continue;
        }
        if MANAGED.contains(&k) || OPTIONS.iter().any(|o| o.var == k) {
            errs.push(err(
                option,
                format!("{k} is set by the charm"),
                "use the charm's option for it (see README)",
            ));
            continue;
        }
        let Some(var) = concourse_vars::find(command, k) else {
            errs.push(err(option, format!("concourse {command} defines no {k}"), "check the name against Concourse's documentation; a typo would be ignored silently by Concourse"));
            continue;
        };
        if let Some(problem) = concourse_vars::check_value(&var, v) {
            errs.push(err(option, problem, "fix the value"));
            continue;
        }
        out.insert(k.to_string(), v.to_string());
    }
    out
}

impl WebOptions {
    /// Validates the options of this module from `config-get` output.
    pub fn parse(map: &Map<String, Value>, admin: &str) -> Result<WebOptions, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut w = WebOptions::default();
        for opt in OPTIONS {
            match parse_one(opt, map.get(opt.option)) {
                Ok(Some(v)) => {
                    w.values.insert(opt.option, (*opt, ValDbg(v)));
                }
                Ok(None) => {}
                Err(e) => errs.push(e),
            }
        }
        w.extra_web_env =
            parse_extra_env("extra-web-env", "web", map.get("extra-web-env"), &mut errs);
        w.extra_worker_env = parse_extra_env(
            "extra-worker-env",
            "worker",
            map.get("extra-worker-env"),
            &mut errs,
        );
        w.check_connectors(admin, &mut errs);
        if errs.is_empty() {
            Ok(w)
        } else {
            Err(errs)
        }
    }

    fn plain(&self, option: &str) -> Option<&str> {
        match self.values.get(option).map(|(_, v)| &v.0) {
            Some(Val::Plain(s)) => Some(s),
            _ => None,
        }
    }

    fn is_set(&self, option: &str) -> bool {
        self.values.contains_key(option)
    }

    /// A connector half configured, main-team members through a connector that is off,
    /// or a main team nobody can log in to.
    fn check_connectors(&self, admin: &str, errs: &mut Vec<ConfigError>) {
        let mut any_member = false;
        for (name, needs, members) in CONNECTORS {
            let set: Vec<&&str> = needs.iter().filter(|o| self.is_set(o)).collect();
            let on = set.len() == needs.len();
            if !set.is_empty() && !on {
                let missing: Vec<&str> =
                    needs.iter().filter(|o| !self.is_set(o)).copied().collect();
                errs.push(err(
                    set[0],
                    format!("the {name} connector also needs {}", missing.join(", ")),
                    format!("set {} (or unset {})", missing.join(", "), set[0]),
                ));
            }
            for m in members.iter().filter(|m| self.is_set(m)) {
                if on {
                    any_member = true;
                } else {
                    errs.push(err(
                        m,
                        format!("the {name} connector is not configured"),
                        format!("set {} first", needs.join(", ")),
                    ));
                }
            }
        }
        if let Some(locals) = self.plain("main-team-local-user") {
            let admin_in = locals.split(',').any(|u| u == admin);
            if !admin_in && !any_member && !self.is_set("extra-local-users") {
                errs.push(err(
                    "main-team-local-user",
                    format!("leaves {admin} out of the main team and names no user that can log in"),
                    format!("add {admin}, set extra-local-users, or map main-team members through a connector"),
                ));
            }
        }
        if self.is_set("vault-url")
            && !self.is_set("vault-client-token")
            && !self.is_set("vault-auth-backend")
        {
            errs.push(err(
                "vault-url",
                "Vault needs a client token or an auth backend (atc/creds/vault/manager.go)",
                "set vault-client-token, or vault-auth-backend=approle with vault-auth-param",
            ));
        }
    }

    /// The secrets to read: (option, uri, key).
    pub fn secrets(&self) -> Vec<(&'static str, String, &'static str)> {
        self.values
            .values()
            .filter_map(|(o, v)| match &v.0 {
                Val::Secret { uri, key } => Some((o.option, uri.clone(), *key)),
                _ => None,
            })
            .collect()
    }

    /// The PEM files to write: (file name, content).
    pub fn pem_files(&self) -> Vec<(String, String)> {
        self.values
            .values()
            .filter_map(|(o, v)| match &v.0 {
                Val::Pem(p) => Some((format!("{}.pem", o.option), p.clone())),
                _ => None,
            })
            .collect()
    }

    /// The web variables, with `secrets` (option → value read from its Juju secret),
    /// PEM files under `pem_dir` (a machine path), and the local users.
    pub fn env(
        &self,
        secrets: &BTreeMap<&'static str, Secret>,
        pem_dir: &std::path::Path,
        admin: &str,
        admin_password: &Secret,
    ) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (o, v) in self.values.values() {
            let value = match &v.0 {
                Val::Plain(s) => s.clone(),
                Val::Pem(_) => pem_dir
                    .join(format!("{}.pem", o.option))
                    .display()
                    .to_string(),
                Val::Secret { .. } => match secrets.get(o.option) {
                    Some(s) => s.expose().to_string(),
                    None => continue,
                },
            };
            m.insert(o.var.to_string(), value);
        }
        let mut users = format!("{admin}:{}", admin_password.expose());
        if let Some(extra) = secrets.get("extra-local-users") {
            users.push(',');
            users.push_str(extra.expose());
        }
        m.insert("CONCOURSE_ADD_LOCAL_USER".into(), users);
        m.entry("CONCOURSE_MAIN_TEAM_LOCAL_USER".into())
            .or_insert_with(|| admin.to_string());
        m.extend(self.extra_web_env.clone());
        m
    }
}

/// Checks and normalises the content of the `extra-local-users` secret: `user:password`
/// pairs, comma- or newline-separated (a password may hold ':' but not ','; Concourse
/// splits the list on ',', see concourse.md of the research notes / go-flags convert.go).
pub fn local_users(raw: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for item in raw
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match item.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() && !u.contains(char::is_whitespace) => {
                out.push(format!("{u}:{p}"))
            }
            _ => return Err("each entry must be user:password".into()),
        }
    }
    if out.is_empty() {
        return Err("it names no user".into());
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests;
