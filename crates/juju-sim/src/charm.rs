//! The charm under test: where its files are and what its metadata declares.
//!
//! Owns: [`CharmSource`] (what a test points at) and [`Charm`] (parsed `metadata.yaml`,
//! `config.yaml`, `actions.yaml`), plus config value coercion and action parameter validation.
//!
//! Invariants: a [`Charm`] is immutable once loaded; config defaults come from `config.yaml`.
//!
//! Hazards: only the subset of the metadata schema the simulator needs is read; unknown keys
//! are ignored rather than rejected.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Errors while loading a charm or checking values against it.
#[derive(Debug, thiserror::Error)]
pub enum CharmError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("unknown config option {0:?}")]
    UnknownOption(String),
    #[error("config option {key:?}: {msg}")]
    BadValue { key: String, msg: String },
    #[error("action {0:?} is not defined in actions.yaml")]
    UnknownAction(String),
    #[error("action {action:?}: {msg}")]
    BadParams { action: String, msg: String },
}

/// Where a charm comes from: a directory with `metadata.yaml` (and optionally `config.yaml`,
/// `actions.yaml`, `hooks/`) plus the executable to install as `dispatch`.
#[derive(Debug, Clone)]
pub struct CharmSource {
    pub root: PathBuf,
    pub dispatch: PathBuf,
}

impl CharmSource {
    /// A charm whose metadata lives in `root` and whose `dispatch` is `dispatch`.
    pub fn dir(root: impl Into<PathBuf>, dispatch: impl Into<PathBuf>) -> CharmSource {
        CharmSource {
            root: root.into(),
            dispatch: dispatch.into(),
        }
    }
}

/// Role of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Peer,
    Provides,
    Requires,
}

/// A relation endpoint declared by the charm.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    pub interface: String,
    pub role: Role,
    pub limit: Option<u32>,
}

/// A storage declaration.
#[derive(Debug, Clone)]
pub struct StorageDecl {
    pub name: String,
    pub kind: String,
    pub location: String,
}

/// A resource declaration.
#[derive(Debug, Clone)]
pub struct ResourceDecl {
    pub name: String,
    pub filename: String,
}

/// A config option.
#[derive(Debug, Clone)]
pub struct ConfigOption {
    pub kind: String,
    pub default: Option<Value>,
}

/// An action declaration.
#[derive(Debug, Clone)]
pub struct ActionDecl {
    pub params: BTreeMap<String, Value>,
    pub required: Vec<String>,
    pub additional_properties: bool,
}

/// A loaded charm.
#[derive(Debug, Clone)]
pub struct Charm {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub storage: Vec<StorageDecl>,
    pub resources: Vec<ResourceDecl>,
    pub options: BTreeMap<String, ConfigOption>,
    pub actions: BTreeMap<String, ActionDecl>,
    pub source: CharmSource,
    /// Files to copy into the unit's charm dir (relative path, source path).
    pub files: Vec<(PathBuf, PathBuf)>,
}

fn read_yaml(path: &Path, required: bool) -> Result<Option<serde_yaml::Value>, CharmError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .map(Some)
            .map_err(|source| CharmError::Yaml {
                path: path.into(),
                source,
            }),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CharmError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn to_json(v: &serde_yaml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn str_of(v: &serde_yaml::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_string)
}

impl Charm {
    /// Load a charm from its source directory.
    pub fn load(src: &CharmSource) -> Result<Charm, CharmError> {
        let meta_path = src.root.join("metadata.yaml");
        let meta = read_yaml(&meta_path, true)?.unwrap_or_default();
        let invalid = |msg: &str| CharmError::Invalid {
            path: meta_path.clone(),
            msg: msg.to_string(),
        };
        let name = str_of(&meta, "name").ok_or_else(|| invalid("no name"))?;
        let mut endpoints = Vec::new();
        for (section, role) in [
            ("peers", Role::Peer),
            ("provides", Role::Provides),
            ("requires", Role::Requires),
        ] {
            if let Some(map) = meta.get(section).and_then(|m| m.as_mapping()) {
                for (k, v) in map {
                    let ep = k.as_str().ok_or_else(|| invalid("endpoint name"))?;
                    endpoints.push(Endpoint {
                        name: ep.to_string(),
                        interface: str_of(v, "interface").unwrap_or_default(),
                        role,
                        limit: v.get("limit").and_then(|l| l.as_u64()).map(|l| l as u32),
                    });
                }
            }
        }
        let mut storage = Vec::new();
        if let Some(map) = meta.get("storage").and_then(|m| m.as_mapping()) {
            for (k, v) in map {
                let st = k.as_str().ok_or_else(|| invalid("storage name"))?;
                storage.push(StorageDecl {
                    name: st.to_string(),
                    kind: str_of(v, "type").unwrap_or_else(|| "filesystem".into()),
                    location: str_of(v, "location")
                        .unwrap_or_else(|| format!("/var/lib/juju/storage/{st}")),
                });
            }
        }
        let mut resources = Vec::new();
        if let Some(map) = meta.get("resources").and_then(|m| m.as_mapping()) {
            for (k, v) in map {
                let r = k.as_str().ok_or_else(|| invalid("resource name"))?;
                resources.push(ResourceDecl {
                    name: r.to_string(),
                    filename: str_of(v, "filename").unwrap_or_else(|| r.to_string()),
                });
            }
        }
        let mut options = BTreeMap::new();
        let config = read_yaml(&src.root.join("config.yaml"), false)?.unwrap_or_default();
        if let Some(map) = config.get("options").and_then(|m| m.as_mapping()) {
            for (k, v) in map {
                let Some(key) = k.as_str() else { continue };
                options.insert(
                    key.to_string(),
                    ConfigOption {
                        kind: str_of(v, "type").unwrap_or_else(|| "string".into()),
                        default: v.get("default").map(to_json).filter(|d| !d.is_null()),
                    },
                );
            }
        }
        let mut actions = BTreeMap::new();
        let acts = read_yaml(&src.root.join("actions.yaml"), false)?.unwrap_or_default();
        if let Some(map) = acts.as_mapping() {
            for (k, v) in map {
                let Some(name) = k.as_str() else { continue };
                let params = v
                    .get("params")
                    .and_then(|p| p.as_mapping())
                    .map(|p| {
                        p.iter()
                            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v))))
                            .collect()
                    })
                    .unwrap_or_default();
                let required = v
                    .get("required")
                    .and_then(|r| r.as_sequence())
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let additional_properties = v
                    .get("additionalProperties")
                    .and_then(|a| a.as_bool())
                    .unwrap_or(false);
                actions.insert(
                    name.to_string(),
                    ActionDecl {
                        params,
                        required,
                        additional_properties,
                    },
                );
            }
        }
        let mut files = Vec::new();
        for f in [
            "metadata.yaml",
            "config.yaml",
            "actions.yaml",
            "manifest.yaml",
        ] {
            let p = src.root.join(f);
            if p.is_file() {
                files.push((PathBuf::from(f), p));
            }
        }
        let hooks = src.root.join("hooks");
        if let Ok(rd) = std::fs::read_dir(&hooks) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    files.push((PathBuf::from("hooks").join(e.file_name()), e.path()));
                }
            }
        }
        files.push((PathBuf::from("dispatch"), src.dispatch.clone()));
        Ok(Charm {
            name,
            endpoints,
            storage,
            resources,
            options,
            actions,
            source: src.clone(),
            files,
        })
    }

    /// The endpoint called `name`.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// Effective config: defaults overlaid with `set` (options without default nor value are
    /// absent).
    pub fn effective_config(&self, set: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        for (k, opt) in &self.options {
            if let Some(v) = set.get(k).or(opt.default.as_ref()) {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    /// Coerce a value given by a test to the option's type (strings are parsed like
    /// `juju config` parses them).
    pub fn coerce(&self, key: &str, v: Value) -> Result<Value, CharmError> {
        let opt = self
            .options
            .get(key)
            .ok_or_else(|| CharmError::UnknownOption(key.into()))?;
        let bad = |msg: String| CharmError::BadValue {
            key: key.into(),
            msg,
        };
        match (opt.kind.as_str(), v) {
            // Juju's `secretC.Coerce` (juju `internal/charm/config.go`): empty, or a URL
            // whose scheme is `secret`.
            ("secret", Value::String(s)) => match s.split_once(':') {
                _ if s.is_empty() => Ok(Value::String(s)),
                Some(("secret", rest)) if !rest.is_empty() => Ok(Value::String(s)),
                Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => {
                    Err(bad(format!("secret URI scheme {scheme:?} not valid")))
                }
                _ => Err(bad("secret URI scheme missing not valid".into())),
            },
            ("secret", other) => Err(bad(format!("expected secret, got {other}"))),
            ("string", Value::String(s)) => Ok(Value::String(s)),
            ("string", other) => Ok(Value::String(match other {
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                o => return Err(bad(format!("expected string, got {o}"))),
            })),
            ("int", Value::Number(n)) if n.is_i64() => Ok(Value::Number(n)),
            ("int", Value::String(s)) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad(format!("expected int, got {s:?}"))),
            ("float", Value::Number(n)) => Ok(Value::Number(n)),
            ("float", Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad(format!("expected float, got {s:?}"))),
            ("boolean", Value::Bool(b)) => Ok(Value::Bool(b)),
            ("boolean", Value::String(s)) => crate::flags::parse_bool(s.trim())
                .map(Value::Bool)
                .ok_or_else(|| bad(format!("expected boolean, got {s:?}"))),
            (kind, other) => Err(bad(format!("expected {kind}, got {other}"))),
        }
    }

    /// Validate action params against actions.yaml and insert defaults (what the controller
    /// does before queueing).
    pub fn validate_action(
        &self,
        action: &str,
        params: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, Value>, CharmError> {
        let decl = self
            .actions
            .get(action)
            .ok_or_else(|| CharmError::UnknownAction(action.into()))?;
        let bad = |msg: String| CharmError::BadParams {
            action: action.into(),
            msg,
        };
        let mut out = BTreeMap::new();
        for (k, v) in params {
            match decl.params.get(k) {
                None if !decl.additional_properties => {
                    return Err(bad(format!("additional property {k:?} is not allowed")))
                }
                None => {}
                Some(schema) => {
                    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
                    let ok = match ty {
                        "string" => v.is_string(),
                        "boolean" => v.is_boolean(),
                        "integer" => v.is_i64() || v.is_u64(),
                        "number" => v.is_number(),
                        "object" => v.is_object(),
                        "array" => v.is_array(),
                        _ => true,
                    };
                    if !ok {
                        return Err(bad(format!("{k}: expected {ty}, got {v}")));
                    }
                }
            }
            out.insert(k.clone(), v.clone());
        }
        for (k, schema) in &decl.params {
            if !out.contains_key(k) {
                if let Some(d) = schema.get("default") {
                    out.insert(k.clone(), d.clone());
                }
            }
        }
        for r in &decl.required {
            if !out.contains_key(r) {
                return Err(bad(format!("{r} is required")));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_option_takes_only_secret_uris() {
        let charm = Charm {
            name: "c".into(),
            endpoints: Vec::new(),
            storage: Vec::new(),
            resources: Vec::new(),
            options: BTreeMap::from([(
                "token".to_string(),
                ConfigOption {
                    kind: "secret".into(),
                    default: None,
                },
            )]),
            actions: BTreeMap::new(),
            source: CharmSource::dir("/nonexistent", "/nonexistent/dispatch"),
            files: Vec::new(),
        };
        for ok in [
            "",
            "secret:cs2ejb6mp25c76kp6f8g",
            "secret://m/cs2ejb6mp25c76kp6f8g",
        ] {
            assert_eq!(
                charm.coerce("token", Value::String(ok.into())).unwrap(),
                Value::String(ok.into())
            );
        }
        for bad in [
            Value::String("ghp_plaintoken".into()),
            Value::String("https://example.com/x".into()),
            Value::String("secret:".into()),
            Value::Bool(true),
        ] {
            assert!(
                matches!(
                    charm.coerce("token", bad.clone()),
                    Err(CharmError::BadValue { .. })
                ),
                "{bad}"
            );
        }
    }
}
