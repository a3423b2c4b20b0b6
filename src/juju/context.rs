//! The hook's Juju context, read from the `JUJU_*` environment.
//!
//! Owns: the only place in the charm that reads the process environment
//! (`Context::from_process_env`); everything else receives a `Context`.
//! Invariants: a `Context` is immutable for the whole hook; mandatory variables
//! are present and well formed, optional ones are `None` when absent *or* empty
//! (Juju exports `JUJU_REMOTE_UNIT`/`JUJU_REMOTE_APP` empty rather than unset).
//! Hazards: never log the whole environment (proxy URLs may carry credentials).

use std::collections::HashMap;
use std::path::PathBuf;

use super::event::{Event, EventParseError};

/// Errors building the context. Each names the variable and what Juju would have set.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("environment variable {0} is not set; dispatch must be run by the Juju unit agent")]
    Missing(&'static str),
    #[error("environment variable {name}={value:?} is malformed: {why}")]
    Malformed {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Event(#[from] EventParseError),
}

/// A relation as named by the hook environment (`peers:3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationRef {
    pub endpoint: String,
    pub id: u32,
}

impl RelationRef {
    /// Parses `<endpoint>:<id>` (as printed by `relation-ids`).
    pub fn parse(s: &str) -> Option<RelationRef> {
        let (endpoint, id) = s.rsplit_once(':')?;
        if endpoint.is_empty() {
            return None;
        }
        Some(RelationRef {
            endpoint: endpoint.to_string(),
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for RelationRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.endpoint, self.id)
    }
}

/// Relation variables of a relation hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationContext {
    pub relation: RelationRef,
    pub remote_unit: Option<String>,
    pub remote_app: Option<String>,
    pub departing_unit: Option<String>,
}

/// Storage variables of a storage hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageContext {
    pub id: String,
    pub location: Option<PathBuf>,
    pub kind: Option<String>,
}

/// Action variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionContext {
    pub name: String,
    pub uuid: Option<String>,
}

/// Secret hook variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretContext {
    pub id: String,
    pub label: Option<String>,
    pub revision: Option<u64>,
}

/// Proxy settings Juju gives the charm for its own downloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

/// Everything the hook environment tells the charm.
#[derive(Debug, Clone)]
pub struct Context {
    pub event: Event,
    pub unit_name: String,
    pub app_name: String,
    pub unit_number: u32,
    pub charm_dir: PathBuf,
    pub model_name: String,
    pub model_uuid: String,
    pub juju_version: String,
    pub machine_id: Option<String>,
    pub relation: Option<RelationContext>,
    pub storage: Option<StorageContext>,
    pub action: Option<ActionContext>,
    pub secret: Option<SecretContext>,
    pub proxies: Proxies,
    /// `JUJU_DEBUG` is set (debug-hooks / debug-code session): log to stderr too.
    pub debug: bool,
}

impl Context {
    /// Reads the real process environment. The only call of `std::env::vars` in the charm.
    #[allow(clippy::disallowed_methods)]
    pub fn from_process_env() -> Result<Context, ContextError> {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Context::from_vars(&vars)
    }

    /// Builds a context from a snapshot of environment variables.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Context, ContextError> {
        let v = Vars(vars);
        let event = Event::parse_dispatch_path(&v.need("JUJU_DISPATCH_PATH")?)?;
        let unit_name = v.need("JUJU_UNIT_NAME")?;
        let (app_name, unit_number) =
            split_unit_name(&unit_name).ok_or_else(|| ContextError::Malformed {
                name: "JUJU_UNIT_NAME",
                value: unit_name.clone(),
                why: "expected <application>/<number>",
            })?;
        let charm_dir = v
            .get("JUJU_CHARM_DIR")
            .or_else(|| v.get("CHARM_DIR"))
            .ok_or(ContextError::Missing("JUJU_CHARM_DIR"))?;
        let relation = v.relation()?;
        let storage = v.get("JUJU_STORAGE_ID").map(|id| StorageContext {
            id,
            location: v.get("JUJU_STORAGE_LOCATION").map(PathBuf::from),
            kind: v.get("JUJU_STORAGE_KIND"),
        });
        let action = match &event {
            Event::Action(name) => Some(ActionContext {
                name: v.get("JUJU_ACTION_NAME").unwrap_or_else(|| name.clone()),
                uuid: v.get("JUJU_ACTION_UUID"),
            }),
            _ => None,
        };
        if event.needs_relation() && relation.is_none() {
            return Err(ContextError::Missing("JUJU_RELATION_ID"));
        }
        if event.needs_storage() && storage.is_none() {
            return Err(ContextError::Missing("JUJU_STORAGE_ID"));
        }
        Ok(Context {
            event,
            app_name,
            unit_number,
            unit_name,
            charm_dir: PathBuf::from(charm_dir),
            model_name: v.get("JUJU_MODEL_NAME").unwrap_or_default(),
            model_uuid: v.get("JUJU_MODEL_UUID").unwrap_or_default(),
            juju_version: v.get("JUJU_VERSION").unwrap_or_default(),
            machine_id: v.get("JUJU_MACHINE_ID"),
            relation,
            storage,
            action,
            secret: v.secret()?,
            proxies: Proxies {
                http: v.get("JUJU_CHARM_HTTP_PROXY"),
                https: v.get("JUJU_CHARM_HTTPS_PROXY"),
                no_proxy: v.get("JUJU_CHARM_NO_PROXY"),
            },
            debug: v.get("JUJU_DEBUG").is_some(),
        })
    }

    /// A short, log-friendly name for what is running (`config-changed`, `action upgrade`).
    pub fn describe(&self) -> String {
        self.event.to_string()
    }
}

/// A snapshot of the environment: values trimmed, empty ones absent.
struct Vars<'a>(&'a HashMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &'static str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn need(&self, name: &'static str) -> Result<String, ContextError> {
        self.get(name).ok_or(ContextError::Missing(name))
    }

    fn relation(&self) -> Result<Option<RelationContext>, ContextError> {
        let Some(raw) = self.get("JUJU_RELATION_ID") else {
            return Ok(None);
        };
        let relation = RelationRef::parse(&raw).ok_or(ContextError::Malformed {
            name: "JUJU_RELATION_ID",
            value: raw.clone(),
            why: "expected <endpoint>:<number>",
        })?;
        Ok(Some(RelationContext {
            relation,
            remote_unit: self.get("JUJU_REMOTE_UNIT"),
            remote_app: self.get("JUJU_REMOTE_APP"),
            departing_unit: self.get("JUJU_DEPARTING_UNIT"),
        }))
    }

    fn secret(&self) -> Result<Option<SecretContext>, ContextError> {
        let Some(id) = self.get("JUJU_SECRET_ID") else {
            return Ok(None);
        };
        let revision = match self.get("JUJU_SECRET_REVISION") {
            None => None,
            Some(raw) => Some(raw.parse().map_err(|_| ContextError::Malformed {
                name: "JUJU_SECRET_REVISION",
                value: raw.clone(),
                why: "expected a number",
            })?),
        };
        Ok(Some(SecretContext {
            id,
            label: self.get("JUJU_SECRET_LABEL"),
            revision,
        }))
    }
}

/// Splits `app/3` into (`app`, 3).
pub fn split_unit_name(unit: &str) -> Option<(String, u32)> {
    let (app, n) = unit.rsplit_once('/')?;
    if app.is_empty() {
        return None;
    }
    Some((app.to_string(), n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("JUJU_DISPATCH_PATH", "hooks/install"),
            ("JUJU_HOOK_NAME", "install"),
            ("JUJU_UNIT_NAME", "concourse-ci/2"),
            (
                "JUJU_CHARM_DIR",
                "/var/lib/juju/agents/unit-concourse-ci-2/charm",
            ),
            ("JUJU_MODEL_NAME", "ci"),
            ("JUJU_MODEL_UUID", "abc"),
            ("JUJU_VERSION", "3.6.8"),
            ("JUJU_REMOTE_UNIT", ""),
            ("JUJU_REMOTE_APP", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn parses_install() {
        let ctx = Context::from_vars(&base()).unwrap();
        assert_eq!(ctx.event, Event::Install);
        assert_eq!(ctx.app_name, "concourse-ci");
        assert_eq!(ctx.unit_number, 2);
        assert!(ctx.relation.is_none());
        assert!(!ctx.debug);
        assert_eq!(ctx.proxies, Proxies::default());
    }

    #[test]
    fn relation_hook_reads_relation_vars() {
        let mut v = base();
        v.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/peers-relation-changed".into(),
        );
        v.insert("JUJU_RELATION_ID".into(), "peers:7".into());
        v.insert("JUJU_REMOTE_UNIT".into(), "concourse-ci/0".into());
        v.insert("JUJU_REMOTE_APP".into(), "concourse-ci".into());
        let ctx = Context::from_vars(&v).unwrap();
        let rel = ctx.relation.unwrap();
        assert_eq!(
            rel.relation,
            RelationRef {
                endpoint: "peers".into(),
                id: 7
            }
        );
        assert_eq!(rel.remote_unit.as_deref(), Some("concourse-ci/0"));
        assert_eq!(rel.departing_unit, None);
    }

    #[test]
    fn empty_remote_unit_is_none() {
        let mut v = base();
        v.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/peers-relation-changed".into(),
        );
        v.insert("JUJU_RELATION_ID".into(), "peers:0".into());
        v.insert("JUJU_REMOTE_APP".into(), "concourse-ci".into());
        let ctx = Context::from_vars(&v).unwrap();
        assert_eq!(ctx.relation.unwrap().remote_unit, None);
    }

    #[test]
    fn missing_mandatory_vars_are_named() {
        for name in ["JUJU_DISPATCH_PATH", "JUJU_UNIT_NAME", "JUJU_CHARM_DIR"] {
            let mut v = base();
            v.remove(name);
            let err = Context::from_vars(&v).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn legacy_charm_dir_accepted() {
        let mut v = base();
        let dir = v.remove("JUJU_CHARM_DIR").unwrap();
        v.insert("CHARM_DIR".into(), dir.clone());
        assert_eq!(
            Context::from_vars(&v).unwrap().charm_dir,
            PathBuf::from(dir)
        );
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        let cases = [
            ("JUJU_UNIT_NAME", "concourse-ci"),
            ("JUJU_UNIT_NAME", "/3"),
            ("JUJU_UNIT_NAME", "app/x"),
            ("JUJU_DISPATCH_PATH", "nonsense"),
            ("JUJU_DISPATCH_PATH", "hooks/"),
        ];
        for (name, value) in cases {
            let mut v = base();
            v.insert(name.into(), value.into());
            let err = Context::from_vars(&v).unwrap_err();
            assert!(
                err.to_string().contains(name) || err.to_string().contains(value),
                "{name}={value}: {err}"
            );
        }
        let mut v = base();
        v.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/peers-relation-changed".into(),
        );
        v.insert("JUJU_RELATION_ID".into(), "peers:x".into());
        assert!(Context::from_vars(&v)
            .unwrap_err()
            .to_string()
            .contains("JUJU_RELATION_ID"));
        v.insert("JUJU_RELATION_ID".into(), "".into());
        assert!(matches!(
            Context::from_vars(&v).unwrap_err(),
            ContextError::Missing("JUJU_RELATION_ID")
        ));
        let mut v = base();
        v.insert("JUJU_DISPATCH_PATH".into(), "hooks/secret-changed".into());
        v.insert("JUJU_SECRET_ID".into(), "secret:abc".into());
        v.insert("JUJU_SECRET_REVISION".into(), "two".into());
        assert!(Context::from_vars(&v)
            .unwrap_err()
            .to_string()
            .contains("JUJU_SECRET_REVISION"));
    }

    #[test]
    fn storage_and_action_and_proxies() {
        let mut v = base();
        v.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/concourse-data-storage-attached".into(),
        );
        v.insert("JUJU_STORAGE_ID".into(), "concourse-data/0".into());
        v.insert("JUJU_STORAGE_LOCATION".into(), "/var/lib/concourse".into());
        v.insert("JUJU_STORAGE_KIND".into(), "filesystem".into());
        v.insert("JUJU_CHARM_HTTPS_PROXY".into(), "http://proxy:3128".into());
        v.insert("JUJU_DEBUG".into(), "1".into());
        let ctx = Context::from_vars(&v).unwrap();
        let st = ctx.storage.clone().unwrap();
        assert_eq!(st.id, "concourse-data/0");
        assert_eq!(st.location, Some(PathBuf::from("/var/lib/concourse")));
        assert_eq!(ctx.proxies.https.as_deref(), Some("http://proxy:3128"));
        assert!(ctx.debug);

        let mut v = base();
        v.insert("JUJU_DISPATCH_PATH".into(), "actions/upgrade".into());
        v.insert("JUJU_HOOK_NAME".into(), "".into());
        v.insert("JUJU_ACTION_NAME".into(), "upgrade".into());
        v.insert("JUJU_ACTION_UUID".into(), "7".into());
        let ctx = Context::from_vars(&v).unwrap();
        assert_eq!(ctx.action.unwrap().uuid.as_deref(), Some("7"));

        let mut v = base();
        v.insert(
            "JUJU_DISPATCH_PATH".into(),
            "hooks/concourse-data-storage-detaching".into(),
        );
        assert!(matches!(
            Context::from_vars(&v).unwrap_err(),
            ContextError::Missing("JUJU_STORAGE_ID")
        ));
    }

    #[test]
    fn relation_ref_parse() {
        assert_eq!(RelationRef::parse("tsa:12").unwrap().id, 12);
        assert_eq!(RelationRef::parse("a:b:3").unwrap().endpoint, "a:b");
        assert!(RelationRef::parse(":3").is_none());
        assert!(RelationRef::parse("peers").is_none());
        assert!(RelationRef::parse("peers:-1").is_none());
    }
}
