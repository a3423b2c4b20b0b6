//! An in-memory Juju model for in-process tests: one unit's view of its application,
//! answering the hook tools the charm calls.
//!
//! Owns: config (with config.yaml's defaults), leadership, relations with their databags,
//! secrets with revisions, storage, resources, ports, the unit's and application's status
//! history, the application version, and the running action. Invariants, as Juju's unit
//! agent has them: relation writes, port changes and new secrets are buffered per hook and
//! committed only when the hook succeeds ([`Model::end_hook`]); `status-set`,
//! `application-version-set` and the action tools take effect at once; only the leader
//! writes its application's databags, reads its own application's bag outside the peer
//! relation, owns application secrets and sets the application status; a consumer sees a
//! new secret revision only with `--refresh`. Refusals use Juju's exit codes and messages
//! (1 `ERROR …` for a refusal, 2 for bad usage), so `juju::tools::classify` maps them.
//! Hazards: one unit only; other units exist as names with the databags a test gives them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use juju_sim::ports;
use serde_json::{json, Map, Value};

use super::context::Context;
use super::tools::{classify, format_argv, ToolError, ToolRunner};
use super::{Databag, Juju};

/// A relation in the model.
#[derive(Debug, Clone, Default)]
pub struct Relation {
    pub endpoint: String,
    /// The other application (our own for the peer relation).
    pub remote_app: String,
    /// Remote units this unit sees.
    pub units: Vec<String>,
    /// Databags by owner (unit or application name).
    pub bags: BTreeMap<String, Databag>,
}

/// A secret with its revisions (the last one is the latest).
#[derive(Debug, Clone, Default)]
pub struct Secret {
    pub label: Option<String>,
    /// `application` or `unit` for secrets this application owns; `None` for a secret
    /// another application shared with us.
    pub owner: Option<String>,
    pub revisions: Vec<Databag>,
    /// The revision this unit tracks (index into `revisions`), once it read it.
    pub tracked: Option<usize>,
}

/// A status as set by the charm, with the hook that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub hook: String,
    pub kind: String,
    pub message: String,
}

/// The running action.
#[derive(Debug, Clone, Default)]
pub struct Action {
    pub name: String,
    pub params: Value,
    pub results: BTreeMap<String, String>,
    pub failed: Option<String>,
    pub logs: Vec<String>,
}

/// Writes of the running hook, committed when it succeeds.
#[derive(Debug, Default)]
struct Pending {
    bags: Vec<(u32, String, Databag)>,
    ports: ports::Pending,
    secrets: Vec<(String, Secret)>,
}

/// Everything the model holds.
#[derive(Debug, Default)]
pub struct State {
    pub unit: String,
    pub app: String,
    pub leader: bool,
    pub config: Map<String, Value>,
    pub relations: BTreeMap<u32, Relation>,
    pub secrets: BTreeMap<String, Secret>,
    /// Storage name → instances (id, location).
    pub storage: BTreeMap<String, Vec<(String, PathBuf)>>,
    pub resources: BTreeMap<String, PathBuf>,
    pub address: String,
    /// Opened ports by endpoint (`""`: every endpoint), with Juju's rules
    /// (`juju_sim::ports`, shared with the simulator).
    pub ports: ports::Grouped,
    pub unit_status: Vec<StatusRecord>,
    pub app_status: Vec<StatusRecord>,
    pub app_version: Option<String>,
    pub action: Option<Action>,
    /// Tool calls of the current hook (argv), for assertions on what the charm asked.
    pub calls: Vec<String>,
    /// Every tool call since the model was made: (argv, stdin).
    pub history: Vec<(String, String)>,
    /// Tools (by name) or single calls (by whole argv, as `calls` records them) that fail
    /// while listed (exit code, stderr), as when the controller is away.
    pub failing: BTreeMap<String, (i32, String)>,
    /// The model's proxy settings as hooks see them (`JUJU_CHARM_HTTP_PROXY`, …). Juju
    /// exports the four `JUJU_CHARM_*_PROXY` variables to every hook, empty when unset.
    pub proxy_env: BTreeMap<String, String>,
    hook: String,
    pending: Pending,
    next_id: u32,
}

/// A shared handle on the model; the charm's `Juju` talks to it through [`Model::juju`].
#[derive(Clone, Default)]
pub struct Model(Rc<RefCell<State>>);

type Out = Result<Value, (i32, String)>;

fn refused(msg: impl Into<String>) -> (i32, String) {
    (1, format!("ERROR {}", msg.into()))
}

fn usage(msg: impl Into<String>) -> (i32, String) {
    (2, format!("ERROR {}", msg.into()))
}

/// config.yaml's defaults, as `config-get` reports them for options nobody set.
fn config_defaults() -> Map<String, Value> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../config.yaml")).expect("config.yaml is YAML");
    let mut out = Map::new();
    if let Some(options) = yaml["options"].as_mapping() {
        for (k, v) in options {
            let default = serde_json::to_value(&v["default"]).unwrap_or(Value::Null);
            if let (Some(k), false) = (k.as_str(), default.is_null()) {
                out.insert(k.to_string(), default);
            }
        }
    }
    out
}

/// The endpoints a unit may open ports for: metadata.yaml's and the implicit `juju-info`.
fn bound_endpoints() -> BTreeSet<String> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../metadata.yaml")).expect("metadata.yaml is YAML");
    let mut out: BTreeSet<String> = ["juju-info".to_string()].into();
    for section in ["peers", "provides", "requires"] {
        if let Some(map) = yaml[section].as_mapping() {
            out.extend(map.keys().filter_map(|k| k.as_str()).map(str::to_string));
        }
    }
    out
}

/// Juju's check of a `secret` option's value (`secretC.Coerce` in juju's
/// `internal/charm/config.go`): a string, empty, or a URL whose scheme is `secret`.
fn check_secret_option(key: &str, v: &Value) -> Result<(), String> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../config.yaml")).expect("config.yaml is YAML");
    if yaml["options"][key]["type"].as_str() != Some("secret") {
        return Ok(());
    }
    match v.as_str() {
        Some("") => Ok(()),
        Some(s) => match reqwest::Url::parse(s) {
            Ok(u) if u.scheme() == "secret" => Ok(()),
            Ok(u) => Err(format!("secret URI scheme {:?} not valid", u.scheme())),
            Err(_) => Err("secret URI scheme missing not valid".into()),
        },
        None => Err(format!("option {key:?} expected secret, got {v}")),
    }
}

impl Model {
    /// A model where `unit` (e.g. `concourse-ci/0`) runs alone with config.yaml's defaults.
    pub fn new(unit: &str) -> Model {
        let app = unit.split('/').next().unwrap_or(unit).to_string();
        Model(Rc::new(RefCell::new(State {
            unit: unit.to_string(),
            app,
            config: config_defaults(),
            address: "10.1.0.10".into(),
            next_id: 1,
            ..State::default()
        })))
    }

    pub fn state(&self) -> std::cell::Ref<'_, State> {
        self.0.borrow()
    }

    pub fn state_mut(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    fn next_id(&self) -> u32 {
        let mut st = self.0.borrow_mut();
        st.next_id += 1;
        st.next_id
    }

    /// Sets config options (as `juju config` does). Like Juju, refuses (here: panics on)
    /// a value of a `secret` option that is not a secret URI.
    pub fn set_config(&self, pairs: &[(&str, Value)]) {
        let mut st = self.0.borrow_mut();
        for (k, v) in pairs {
            if let Err(e) = check_secret_option(k, v) {
                panic!("juju config {k}={v}: {e}");
            }
            st.config.insert(k.to_string(), v.clone());
        }
    }

    /// Adds a relation on `endpoint` with `remote_app` and its units; returns its id.
    pub fn relate(&self, endpoint: &str, remote_app: &str, units: &[&str]) -> u32 {
        let id = self.next_id();
        self.0.borrow_mut().relations.insert(
            id,
            Relation {
                endpoint: endpoint.into(),
                remote_app: remote_app.into(),
                units: units.iter().map(|u| u.to_string()).collect(),
                bags: BTreeMap::new(),
            },
        );
        id
    }

    pub fn unrelate(&self, id: u32) {
        self.0.borrow_mut().relations.remove(&id);
    }

    /// The id of the first relation on `endpoint`.
    pub fn relation_id(&self, endpoint: &str) -> Option<u32> {
        let st = self.0.borrow();
        st.relations
            .iter()
            .find(|(_, r)| r.endpoint == endpoint)
            .map(|(id, _)| *id)
    }

    /// A databag (committed state) of a relation.
    pub fn bag(&self, rel: u32, owner: &str) -> Databag {
        let st = self.0.borrow();
        st.relations
            .get(&rel)
            .and_then(|r| r.bags.get(owner))
            .cloned()
            .unwrap_or_default()
    }

    /// Merges `data` into a remote databag (another unit or application wrote it).
    pub fn set_bag(&self, rel: u32, owner: &str, data: &[(&str, &str)]) {
        let mut st = self.0.borrow_mut();
        let bag = st
            .relations
            .get_mut(&rel)
            .expect("no such relation")
            .bags
            .entry(owner.to_string())
            .or_default();
        for (k, v) in data {
            if v.is_empty() {
                bag.remove(*k);
            } else {
                bag.insert(k.to_string(), v.to_string());
            }
        }
    }

    /// Adds a secret another application owns and shares with us; returns its id.
    pub fn add_foreign_secret(&self, content: &[(&str, &str)]) -> String {
        self.insert_secret("foreign", None, content)
    }

    /// Adds a secret this application owns (created by an earlier leader); returns its id.
    pub fn add_own_secret(&self, content: &[(&str, &str)]) -> String {
        self.insert_secret("own", Some("application"), content)
    }

    fn insert_secret(&self, prefix: &str, owner: Option<&str>, content: &[(&str, &str)]) -> String {
        let id = format!("secret:{prefix}{}", self.next_id());
        let bag = content
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.borrow_mut().secrets.insert(
            id.clone(),
            Secret {
                owner: owner.map(String::from),
                revisions: vec![bag],
                ..Secret::default()
            },
        );
        id
    }

    /// A new revision of a secret (the owner rotated it).
    pub fn rotate_secret(&self, id: &str, content: &[(&str, &str)]) {
        let bag = content
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .borrow_mut()
            .secrets
            .get_mut(id)
            .expect("no such secret")
            .revisions
            .push(bag);
    }

    /// Content of the latest revision of a secret.
    pub fn secret_content(&self, id: &str) -> Option<Databag> {
        self.0.borrow().secrets.get(id)?.revisions.last().cloned()
    }

    pub fn last_unit_status(&self) -> Option<StatusRecord> {
        self.0.borrow().unit_status.last().cloned()
    }

    pub fn last_app_status(&self) -> Option<StatusRecord> {
        self.0.borrow().app_status.last().cloned()
    }

    /// Starts a hook (or action, with `action` set): clears the per-hook call log.
    pub fn begin_hook(&self, name: &str, action: Option<Action>) {
        let mut st = self.0.borrow_mut();
        st.hook = name.to_string();
        st.calls.clear();
        st.pending = Pending::default();
        st.action = action;
    }

    /// Ends the hook: commits its buffered writes when it succeeded, drops them otherwise.
    /// Like the controller, refuses the whole commit when its port changes are refused
    /// (an endpoint the charm does not define), leaving everything as it was.
    pub fn end_hook(&self, succeeded: bool) -> Result<(), String> {
        let mut st = self.0.borrow_mut();
        let pending = std::mem::take(&mut st.pending);
        if !succeeded {
            return Ok(());
        }
        if !pending.ports.is_empty() {
            let unit = st.unit.clone();
            let machine: ports::MachinePorts = [(unit.clone(), st.ports.clone())].into();
            let after = ports::commit(&machine, &unit, &pending.ports, &bound_endpoints())?;
            st.ports = after.get(&unit).cloned().unwrap_or_default();
        }
        for (rel, owner, delta) in pending.bags {
            if let Some(r) = st.relations.get_mut(&rel) {
                let bag = r.bags.entry(owner).or_default();
                super::client::merge(bag, &delta);
            }
        }
        for (id, secret) in pending.secrets {
            st.secrets.insert(id, secret);
        }
        Ok(())
    }

    /// The unit's committed opened ports, as `opened-ports` lists them (`8080/tcp`).
    pub fn opened_ports(&self) -> Vec<String> {
        ports::render(&self.0.borrow().ports, false)
    }

    /// The same with their endpoints, as `opened-ports --endpoints` lists them
    /// (`8080/tcp (*)`, `9391/tcp (monitoring)`).
    pub fn opened_ports_by_endpoint(&self) -> Vec<String> {
        ports::render(&self.0.borrow().ports, true)
    }

    /// A `Juju` for a hook of this unit. `dispatch` is `hooks/<name>` or `actions/<name>`;
    /// `relation` names the relation of a relation hook and its remote unit.
    pub fn juju(&self, dispatch: &str, relation: Option<(u32, Option<&str>)>) -> Juju {
        let st = self.0.borrow();
        let mut vars: std::collections::HashMap<String, String> = [
            ("JUJU_DISPATCH_PATH", dispatch.to_string()),
            ("JUJU_UNIT_NAME", st.unit.clone()),
            ("JUJU_CHARM_DIR", "/var/lib/juju/charm".into()),
            ("JUJU_MODEL_NAME", "test-model".into()),
            (
                "JUJU_MODEL_UUID",
                "00000000-0000-4000-8000-000000000000".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for k in ["HTTP", "HTTPS", "FTP", "NO"] {
            let name = format!("JUJU_CHARM_{k}_PROXY");
            let value = st.proxy_env.get(&name).cloned().unwrap_or_default();
            vars.insert(name, value);
        }
        let storage_hook = dispatch
            .strip_suffix("-storage-attached")
            .or_else(|| dispatch.strip_suffix("-storage-detaching"));
        if let Some(name) = storage_hook.and_then(|h| h.strip_prefix("hooks/")) {
            if let Some((id, location)) = st.storage.get(name).and_then(|v| v.first()) {
                vars.insert("JUJU_STORAGE_ID".into(), id.clone());
                vars.insert(
                    "JUJU_STORAGE_LOCATION".into(),
                    location.display().to_string(),
                );
            }
        }
        if let Some((id, remote)) = relation {
            let r = st.relations.get(&id);
            let endpoint = r.map(|r| r.endpoint.clone()).unwrap_or_default();
            vars.insert("JUJU_RELATION_ID".into(), format!("{endpoint}:{id}"));
            vars.insert(
                "JUJU_REMOTE_APP".into(),
                r.map(|r| r.remote_app.clone()).unwrap_or_default(),
            );
            if let Some(u) = remote {
                vars.insert("JUJU_REMOTE_UNIT".into(), u.to_string());
            }
        }
        let ctx = Context::from_vars(&vars).expect("a valid hook context");
        Juju::new(ctx, Box::new(self.clone()))
    }
}

impl ToolRunner for Model {
    fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
        let argv = format_argv(tool, args);
        {
            let mut st = self.0.borrow_mut();
            st.calls.push(argv.clone());
            let input = stdin.map(String::from_utf8_lossy).unwrap_or_default();
            st.history.push((argv.clone(), input.into_owned()));
        }
        match self.0.borrow_mut().answer(tool, args, stdin) {
            Ok(Value::Null) => Ok(Vec::new()),
            Ok(Value::String(s)) if !args.iter().any(|a| a == "--format=json") => {
                Ok(format!("{s}\n").into_bytes())
            }
            Ok(v) => Ok(format!("{v}\n").into_bytes()),
            Err((code, stderr)) => Err(ToolError::Failed {
                argv,
                code,
                kind: classify(code, &stderr),
                stderr,
            }),
        }
    }
}

/// The value after `flag` in `args`.
fn opt<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// Arguments that are neither flags nor flag values (`flags_with_value` take one).
fn positionals<'a>(args: &'a [String], flags_with_value: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if flags_with_value.contains(&a.as_str()) {
            it.next();
        } else if a == "--" {
            out.extend(it.by_ref().map(String::as_str));
        } else if a == "-" || !a.starts_with('-') {
            out.push(a.as_str());
        }
    }
    out
}

fn bag_json(bag: &Databag) -> Value {
    json!(bag)
}

impl State {
    fn answer(&mut self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Out {
        let argv = format_argv(tool, args);
        if let Some(fault) = self.failing.get(tool).or(self.failing.get(&argv)) {
            return Err(fault.clone());
        }
        match tool {
            "config-get" => Ok(Value::Object(self.config.clone())),
            "is-leader" => Ok(json!(self.leader)),
            "relation-ids" => self.relation_ids(args),
            "relation-list" => self.relation_list(args),
            "relation-get" => self.relation_get(args),
            "relation-set" => self.relation_set(args, stdin),
            "status-set" => self.status_set(args),
            "application-version-set" => {
                self.app_version = positionals(args, &[]).first().map(|v| v.to_string());
                Ok(Value::Null)
            }
            "action-get" | "action-set" | "action-fail" | "action-log" => self.action(tool, args),
            "storage-list" => self.storage_list(args),
            "storage-get" => self.storage_get(args),
            "resource-get" => self.resource_get(args),
            "network-get" => Ok(json!({
                "bind-addresses": [{"interface-name": "eth0", "addresses": [
                    {"value": self.address, "cidr": format!("{}/24", self.address)}]}],
                "egress-subnets": [format!("{}/32", self.address)],
                "ingress-addresses": [self.address],
            })),
            "opened-ports" => {
                let view = self.pending.ports.view(&self.ports);
                Ok(json!(ports::render(
                    &view,
                    args.iter().any(|a| a == "--endpoints")
                )))
            }
            "open-port" | "close-port" => self.port(tool == "open-port", args),
            "goal-state" => Ok(self.goal_state()),
            "secret-add" => self.secret_add(args),
            "secret-get" => self.secret_get(args),
            "secret-info-get" => self.secret_info_get(args),
            other => Err(usage(format!("unknown hook tool {other:?}"))),
        }
    }

    /// `open-port`/`close-port <range> [--endpoints a,b]`, checked as Juju's tools do.
    fn port(&mut self, open: bool, args: &[String]) -> Out {
        let spec = positionals(args, &["--endpoints", "--format"]);
        let [spec] = spec.as_slice() else {
            return Err(usage("no port or range specified"));
        };
        let range = ports::PortRange::parse(spec).map_err(usage)?;
        let machine: ports::MachinePorts = [(self.unit.clone(), self.ports.clone())].into();
        for ep in ports::endpoints_arg(opt(args, "--endpoints")) {
            let unit = &self.unit;
            if open {
                self.pending.ports.open(unit, &ep, range, &machine)
            } else {
                self.pending.ports.close(unit, &ep, range, &machine)
            }
            .map_err(refused)?;
        }
        Ok(Value::Null)
    }

    fn relation_arg(&self, args: &[String]) -> Result<u32, (i32, String)> {
        let raw = opt(args, "-r").ok_or_else(|| usage("no relation id specified"))?;
        let id = raw
            .rsplit_once(':')
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .ok_or_else(|| usage(format!("invalid relation id {raw:?}")))?;
        if self.relations.contains_key(&id) {
            Ok(id)
        } else {
            Err(usage(format!(
                "invalid value {raw:?} for option -r: relation not found"
            )))
        }
    }

    fn relation_ids(&self, args: &[String]) -> Out {
        let endpoint = positionals(args, &[]).first().map(|e| e.to_string());
        let ids: Vec<String> = self
            .relations
            .iter()
            .filter(|(_, r)| Some(&r.endpoint) == endpoint.as_ref())
            .map(|(id, r)| format!("{}:{id}", r.endpoint))
            .collect();
        Ok(json!(ids))
    }

    fn relation_list(&self, args: &[String]) -> Out {
        let rel = &self.relations[&self.relation_arg(args)?];
        if args.iter().any(|a| a == "--app") {
            Ok(json!(rel.remote_app))
        } else {
            Ok(json!(rel.units))
        }
    }

    /// A bag as this hook sees it: committed state with this hook's own writes.
    fn visible_bag(&self, rel: u32, owner: &str) -> Databag {
        let mut bag = self.relations[&rel]
            .bags
            .get(owner)
            .cloned()
            .unwrap_or_default();
        for (r, o, delta) in &self.pending.bags {
            if *r == rel && o == owner {
                super::client::merge(&mut bag, delta);
            }
        }
        bag
    }

    fn relation_get(&self, args: &[String]) -> Out {
        let id = self.relation_arg(args)?;
        let rel = &self.relations[&id];
        let target = positionals(args, &["-r"])
            .get(1)
            .map(|t| t.to_string())
            .ok_or_else(|| usage("no unit or application specified"))?;
        let app = args.iter().any(|a| a == "--app");
        let peers = rel.remote_app == self.app;
        if app && target == self.app && !peers && !self.leader {
            return Err(refused("permission denied"));
        }
        let known = if app {
            target == self.app || target == rel.remote_app
        } else {
            target == self.unit || rel.units.contains(&target)
        };
        if !known {
            return Err(refused(format!(
                "cannot read settings for {target}: not found"
            )));
        }
        Ok(bag_json(&self.visible_bag(id, &target)))
    }

    fn relation_set(&mut self, args: &[String], stdin: Option<&[u8]>) -> Out {
        let id = self.relation_arg(args)?;
        let app = args.iter().any(|a| a == "--app");
        if app && !self.leader {
            return Err(refused("cannot write relation settings"));
        }
        let body = stdin.ok_or_else(|| usage("--file - needs stdin"))?;
        let delta: Databag =
            serde_json::from_slice(body).map_err(|e| usage(format!("bad settings: {e}")))?;
        let owner = if app {
            self.app.clone()
        } else {
            self.unit.clone()
        };
        self.pending.bags.push((id, owner, delta));
        Ok(Value::Null)
    }

    fn status_set(&mut self, args: &[String]) -> Out {
        let application = args.iter().any(|a| a == "--application=True");
        let pos = positionals(args, &[]);
        let kind = pos.first().ok_or_else(|| usage("no status given"))?;
        if !["maintenance", "blocked", "waiting", "active"].contains(kind) {
            return Err(usage(format!("invalid status {kind:?}")));
        }
        if application && !self.leader {
            return Err(refused("this unit is not the leader"));
        }
        let record = StatusRecord {
            hook: self.hook.clone(),
            kind: kind.to_string(),
            message: pos.get(1).map(|m| m.to_string()).unwrap_or_default(),
        };
        if application {
            self.app_status.push(record);
        } else {
            self.unit_status.push(record);
        }
        Ok(Value::Null)
    }

    fn action(&mut self, tool: &str, args: &[String]) -> Out {
        let action = self
            .action
            .as_mut()
            .ok_or_else(|| refused("not running an action"))?;
        match tool {
            "action-get" => Ok(action.params.clone()),
            "action-set" => {
                for kv in args {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| usage(format!("argument {kv:?} must be key=value")))?;
                    action.results.insert(k.to_string(), v.to_string());
                }
                Ok(Value::Null)
            }
            "action-fail" => {
                action.failed = Some(positionals(args, &[]).join(" "));
                Ok(Value::Null)
            }
            _ => {
                action.logs.push(positionals(args, &[]).join(" "));
                Ok(Value::Null)
            }
        }
    }

    fn storage_list(&self, args: &[String]) -> Out {
        let name = positionals(args, &[]).first().map(|n| n.to_string());
        let ids: Vec<&String> = name
            .and_then(|n| self.storage.get(&n))
            .map(|v| v.iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        Ok(json!(ids))
    }

    fn storage_get(&self, args: &[String]) -> Out {
        let id = opt(args, "-s").ok_or_else(|| usage("no storage instance specified"))?;
        let found = self.storage.values().flatten().find(|(i, _)| i == id);
        let (_, location) =
            found.ok_or_else(|| refused(format!("storage instance {id:?} not found")))?;
        Ok(json!({"kind": "filesystem", "location": location}))
    }

    fn resource_get(&self, args: &[String]) -> Out {
        let name = positionals(args, &[]).first().map(|n| n.to_string());
        match name.and_then(|n| self.resources.get(&n)) {
            Some(p) => Ok(Value::String(p.display().to_string())),
            None => Err(refused("could not download resource: resource not found")),
        }
    }

    fn goal_state(&self) -> Value {
        let mut units = Map::new();
        units.insert(self.unit.clone(), json!({"status": "active", "since": ""}));
        for r in self.relations.values() {
            if r.remote_app == self.app {
                for u in &r.units {
                    units.insert(u.clone(), json!({"status": "active", "since": ""}));
                }
            }
        }
        json!({"units": units, "relations": {}})
    }

    fn secret_add(&mut self, args: &[String]) -> Out {
        let owner = opt(args, "--owner").unwrap_or("application").to_string();
        if owner == "application" && !self.leader {
            return Err(refused("this unit is not the leader"));
        }
        let mut content = Databag::new();
        for kv in positionals(args, &["--label", "--description", "--owner"]) {
            let (key, value) = match kv.split_once("#file=") {
                Some((k, path)) => {
                    let v = std::fs::read_to_string(path)
                        .map_err(|e| refused(format!("reading {path}: {e}")))?;
                    (k.to_string(), v)
                }
                None => {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| usage(format!("{kv:?} is not key=value")))?;
                    (k.to_string(), v.to_string())
                }
            };
            content.insert(key, value);
        }
        let id = format!("secret:own{}", self.next_id + 1);
        self.next_id += 1;
        let secret = Secret {
            label: opt(args, "--label").map(str::to_string),
            owner: Some(owner),
            revisions: vec![content],
            tracked: None,
        };
        self.pending.secrets.push((id.clone(), secret));
        Ok(Value::String(id))
    }

    /// The secret an argv names (by id or `--label`), committed or added in this hook.
    fn find_secret(&mut self, args: &[String]) -> Result<(String, &mut Secret), (i32, String)> {
        let label = opt(args, "--label").map(str::to_string);
        let id = match &label {
            Some(_) => None,
            None => positionals(args, &[]).first().map(|s| s.to_string()),
        };
        let matches = |sid: &String, s: &Secret| match (&id, &label) {
            (Some(want), _) => sid == want,
            (None, Some(l)) => s.label.as_ref() == Some(l),
            (None, None) => false,
        };
        let name = id.clone().or(label.clone()).unwrap_or_default();
        let not_found = || refused(format!("secret {name:?} not found"));
        if let Some(i) = self
            .pending
            .secrets
            .iter()
            .position(|(sid, s)| matches(sid, s))
        {
            let (sid, s) = &mut self.pending.secrets[i];
            return Ok((sid.clone(), s));
        }
        let (sid, s) = self
            .secrets
            .iter_mut()
            .find(|(sid, s)| matches(sid, s))
            .ok_or_else(not_found)?;
        Ok((sid.clone(), s))
    }

    fn secret_get(&mut self, args: &[String]) -> Out {
        let refresh = args.iter().any(|a| a == "--refresh");
        let (_, s) = self.find_secret(args)?;
        let latest = s.revisions.len().saturating_sub(1);
        let rev = if s.owner.is_some() || refresh {
            latest
        } else {
            s.tracked.unwrap_or(latest)
        };
        if s.owner.is_none() {
            s.tracked = Some(rev);
        }
        Ok(bag_json(&s.revisions[rev]))
    }

    fn secret_info_get(&mut self, args: &[String]) -> Out {
        let (id, s) = self.find_secret(args)?;
        let Some(owner) = s.owner.clone() else {
            return Err(refused(format!("secret {id:?} not found")));
        };
        let short = id.trim_start_matches("secret:").to_string();
        Ok(json!({ short: {"revision": s.revisions.len(), "label": s.label, "owner": owner}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the controller: a port for an endpoint the charm does not define fails the
    /// hook's whole commit; one it defines is kept by endpoint.
    #[test]
    fn ports_are_kept_by_endpoint_and_unknown_endpoints_refuse_the_commit() {
        let m = Model::new("concourse-ci/0");
        m.begin_hook("config-changed", None);
        let j = m.juju("hooks/config-changed", None);
        j.open_port(9391, "tcp", &["monitoring"]).unwrap();
        j.open_port(8080, "tcp", &[]).unwrap();
        m.end_hook(true).unwrap();
        assert_eq!(
            m.opened_ports_by_endpoint(),
            ["8080/tcp (*)", "9391/tcp (monitoring)"]
        );
        m.begin_hook("config-changed", None);
        let j = m.juju("hooks/config-changed", None);
        j.close_port(8080, "tcp", &[]).unwrap();
        j.open_port(9100, "tcp", &["metrics"]).unwrap();
        let e = m.end_hook(true).unwrap_err();
        assert!(e.contains(r#"endpoint "metrics""#), "{e}");
        assert_eq!(m.opened_ports(), ["8080/tcp", "9391/tcp"]);
        m.begin_hook("config-changed", None);
        let j = m.juju("hooks/config-changed", None);
        let e = j.open_port(0, "tcp", &[]).unwrap_err();
        assert!(e.to_string().contains("port must be in the range"), "{e}");
    }
}
