//! Typed hook-tool calls with a per-hook cache.
//!
//! Owns: the exact argv of every hook tool the charm uses and the parsing of their
//! `--format=json` output. Invariants: values Juju freezes for the hook (config,
//! leadership, relation membership, databags, storage, network, secrets, action params)
//! are fetched at most once per hook, through one cache keyed by the call's argv
//! (`Juju::cached`); own writes (`relation-set`, `secret-add`) update the cache the same
//! way Juju's local copy does (merge, empty value deletes). Hazards: `relation-set`,
//! secret changes and ports are committed by Juju only if the hook exits 0;
//! `status-set`, `juju-log`, `action-log` and `application-version-set` take effect at
//! once.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Deserialize;

use super::context::{Context, RelationRef};
use super::tools::{format_argv, FailureKind, ToolError, ToolRunner};

/// A databag: string keys to string values.
pub type Databag = BTreeMap<String, String>;

/// Workload status kinds a charm may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    Maintenance,
    Blocked,
    Waiting,
    Active,
    #[serde(other)]
    Unknown,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Maintenance => "maintenance",
            StatusKind::Blocked => "blocked",
            StatusKind::Waiting => "waiting",
            StatusKind::Active => "active",
            StatusKind::Unknown => "unknown",
        }
    }
}

/// A workload status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub message: String,
}

impl Status {
    pub fn new(kind: StatusKind, message: impl Into<String>) -> Status {
        Status {
            kind,
            message: message.into(),
        }
    }
    pub fn active(m: impl Into<String>) -> Status {
        Status::new(StatusKind::Active, m)
    }
    pub fn blocked(m: impl Into<String>) -> Status {
        Status::new(StatusKind::Blocked, m)
    }
    pub fn waiting(m: impl Into<String>) -> Status {
        Status::new(StatusKind::Waiting, m)
    }
    pub fn maintenance(m: impl Into<String>) -> Status {
        Status::new(StatusKind::Maintenance, m)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// `juju-log` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
        }
    }
}

/// Which databag of a relation to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bag {
    /// A unit's bag (own or remote), by unit name.
    Unit(String),
    /// An application's bag, by application name.
    App(String),
}

/// `storage-get` output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StorageInfo {
    pub kind: String,
    pub location: PathBuf,
}

/// The parts of `network-get` output the charm uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetworkInfo {
    #[serde(rename = "ingress-addresses", default)]
    pub ingress_addresses: Vec<String>,
    #[serde(rename = "egress-subnets", default)]
    pub egress_subnets: Vec<String>,
    #[serde(rename = "bind-addresses", default)]
    pub bind_addresses: Vec<BindAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BindAddress {
    #[serde(rename = "interface-name", default)]
    pub interface_name: String,
    #[serde(default)]
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Address {
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub cidr: String,
}

impl NetworkInfo {
    /// The first ingress address, else the first bound address.
    pub fn primary_address(&self) -> Option<&str> {
        self.ingress_addresses
            .iter()
            .map(String::as_str)
            .chain(
                self.bind_addresses
                    .iter()
                    .flat_map(|b| b.addresses.iter().map(|a| a.value.as_str())),
            )
            .find(|a| !a.is_empty())
    }
}

/// `goal-state` output.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GoalState {
    #[serde(default)]
    pub units: BTreeMap<String, GoalUnit>,
    #[serde(default)]
    pub relations: BTreeMap<String, BTreeMap<String, GoalUnit>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GoalUnit {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub since: Option<String>,
}

impl GoalState {
    /// Units of our application that are not dying (what ops calls planned units).
    pub fn planned_units(&self) -> Vec<String> {
        self.units
            .iter()
            .filter(|(_, u)| u.status != "dying")
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// `secret-info-get` output for one secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SecretInfo {
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
}

/// Who owns a new secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOwner {
    Application,
    Unit,
}

/// How to address a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Id(String),
    Label(String),
}

/// The charm's handle on Juju for one hook.
pub struct Juju {
    ctx: Context,
    runner: Box<dyn ToolRunner>,
    /// Parsed answers of read-only tool calls, keyed by the call's argv.
    cache: RefCell<HashMap<String, Box<dyn Any>>>,
    /// Where the statuses last told to Juju are recorded (see [`Juju::record_statuses_in`]).
    status_dir: RefCell<Option<PathBuf>>,
    /// Calls whose effect Juju commits only when the hook exits 0 (see [`Juju::writes`]).
    writes: std::cell::Cell<u32>,
}

type Result<T> = std::result::Result<T, ToolError>;

fn s(x: &str) -> String {
    x.to_string()
}

/// The arguments of `status-set` (the message scrubbed of secrets).
fn status_args(status: &Status, application: bool) -> Vec<String> {
    let mut args = vec![
        format!(
            "--application={}",
            if application { "True" } else { "False" }
        ),
        s(status.kind.as_str()),
    ];
    if !status.message.is_empty() {
        args.push(s("--"));
        args.push(super::tools::scrub(&status.message));
    }
    args
}

impl Juju {
    pub fn new(ctx: Context, runner: Box<dyn ToolRunner>) -> Juju {
        Juju {
            ctx,
            runner,
            cache: RefCell::default(),
            status_dir: RefCell::default(),
            writes: std::cell::Cell::default(),
        }
    }

    /// How many transactional changes (`relation-set`, ports, secrets) this hook made so
    /// far: Juju commits them only when the hook exits 0, and a commit can still fail
    /// after that (lost leadership, a lost controller connection), so a record of what
    /// a hook achieved is trustworthy only when it made none.
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    fn wrote(&self) {
        self.writes.set(self.writes.get().saturating_add(1));
    }

    /// Records each status told to Juju in `dir` (`unit-status`, `app-status`), so that
    /// [`Juju::status_set_if_changed`] does not tell Juju what it shows already. A status
    /// is not transactional: Juju keeps it from the call on, whatever the hook's end.
    pub fn record_statuses_in(&self, dir: PathBuf) {
        *self.status_dir.borrow_mut() = Some(dir);
    }

    /// Forgets what Juju was told: for the hooks before which Juju sets the unit's status
    /// itself (install, stop, remove; and start, which Juju ends with `unknown` when the
    /// charm set none) and when leadership may have passed through another unit.
    pub fn forget_told_statuses(&self) {
        for application in [false, true] {
            if let Some(r) = self.status_record(application) {
                let _ = std::fs::remove_file(r);
            }
        }
    }

    fn status_record(&self, application: bool) -> Option<PathBuf> {
        let name = if application {
            "app-status"
        } else {
            "unit-status"
        };
        self.status_dir.borrow().as_ref().map(|d| d.join(name))
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn unit_name(&self) -> &str {
        &self.ctx.unit_name
    }

    pub fn app_name(&self) -> &str {
        &self.ctx.app_name
    }

    /// The primitive: runs a tool.
    pub fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
        self.runner
            .run(tool, args, stdin)
            .map_err(|e| e.redacted(&[]))
    }

    fn run_json<T: serde::de::DeserializeOwned>(&self, tool: &str, args: &[String]) -> Result<T> {
        let out = self.run(tool, args, None)?;
        parse_json(tool, args, &out)
    }

    /// The per-hook cache: answers `tool args` from an earlier identical call, else runs
    /// `fetch` and keeps its value. Only for values Juju freezes for the hook.
    fn cached<T: Clone + 'static>(
        &self,
        tool: &str,
        args: &[String],
        fetch: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let key = format_argv(tool, args);
        if let Some(v) = self
            .cache
            .borrow()
            .get(&key)
            .and_then(|b| b.downcast_ref::<T>())
        {
            return Ok(v.clone());
        }
        let v = fetch()?;
        self.cache.borrow_mut().insert(key, Box::new(v.clone()));
        Ok(v)
    }

    /// [`Juju::cached`] for a `--format=json` call; `null` is `T::default()`.
    fn cached_json<T>(&self, tool: &str, args: Vec<String>) -> Result<T>
    where
        T: serde::de::DeserializeOwned + Clone + Default + 'static,
    {
        self.cached(tool, &args, || {
            Ok(self.run_json::<Option<T>>(tool, &args)?.unwrap_or_default())
        })
    }

    /// Replaces what the cache answers for `tool args` (own writes Juju applies locally).
    fn remember<T: 'static>(&self, tool: &str, args: &[String], value: T) {
        self.cache
            .borrow_mut()
            .insert(format_argv(tool, args), Box::new(value));
    }

    // ----- config and leadership -----

    /// All config options (set or defaulted), cached for the hook.
    pub fn config(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.cached_json("config-get", vec![s("--format=json")])
    }

    /// Whether this unit leads its application. Cached for the hook.
    pub fn is_leader(&self) -> Result<bool> {
        self.cached_json("is-leader", vec![s("--format=json")])
    }

    // ----- relations -----

    /// Relations on an endpoint (`relation-ids`).
    pub fn relation_ids(&self, endpoint: &str) -> Result<Vec<RelationRef>> {
        let args = vec![s("--format=json"), s(endpoint)];
        self.cached("relation-ids", &args, || {
            let raw: Option<Vec<String>> = self.run_json("relation-ids", &args)?;
            raw.unwrap_or_default()
                .iter()
                .map(|r| {
                    RelationRef::parse(r).ok_or_else(|| ToolError::BadOutput {
                        argv: format_argv("relation-ids", &args),
                        why: format!("relation id {r:?} is not <endpoint>:<number>"),
                    })
                })
                .collect()
        })
    }

    /// The remote units this unit currently sees in a relation (`relation-list`).
    pub fn relation_list(&self, rel: &RelationRef) -> Result<Vec<String>> {
        self.cached_json(
            "relation-list",
            vec![s("--format=json"), s("-r"), rel.to_string()],
        )
    }

    /// The remote application of a relation (`relation-list --app`), from the hook's
    /// environment when it names it, else from the tool; `None` when Juju knows none.
    pub fn relation_remote_app(&self, rel: &RelationRef) -> Result<Option<String>> {
        if let Some(r) = &self.ctx.relation {
            if &r.relation == rel && r.remote_app.is_some() {
                return Ok(r.remote_app.clone());
            }
        }
        let app: Option<String> = self.cached_json(
            "relation-list",
            vec![s("--format=json"), s("-r"), rel.to_string(), s("--app")],
        )?;
        Ok(app.filter(|a| !a.is_empty()))
    }

    fn relation_get_args(rel: &RelationRef, bag: &Bag) -> Vec<String> {
        let mut args = vec![s("--format=json"), s("-r"), rel.to_string()];
        let target = match bag {
            Bag::Unit(u) => u.clone(),
            Bag::App(a) => {
                args.push(s("--app"));
                a.clone()
            }
        };
        args.push(s("-"));
        args.push(target);
        args
    }

    /// A whole databag (`relation-get - <unit|app>`), cached for the hook.
    pub fn relation_get(&self, rel: &RelationRef, bag: &Bag) -> Result<Databag> {
        self.cached_json("relation-get", Self::relation_get_args(rel, bag))
    }

    /// This unit's own databag in a relation.
    pub fn own_unit_bag(&self, rel: &RelationRef) -> Result<Databag> {
        self.relation_get(rel, &Bag::Unit(self.ctx.unit_name.clone()))
    }

    /// This application's databag in a relation (peers: readable by all units).
    pub fn own_app_bag(&self, rel: &RelationRef) -> Result<Databag> {
        self.relation_get(rel, &Bag::App(self.ctx.app_name.clone()))
    }

    /// Merges `data` into this unit's bag (`app=false`) or the app bag (`app=true`,
    /// leader only). An empty value deletes the key. Writes only keys whose value
    /// differs from what this hook already sees; no call at all when nothing changes.
    pub fn relation_set(&self, rel: &RelationRef, app: bool, data: &Databag) -> Result<()> {
        let bag = if app {
            Bag::App(self.ctx.app_name.clone())
        } else {
            Bag::Unit(self.ctx.unit_name.clone())
        };
        let mut current = self.relation_get(rel, &bag)?;
        let delta: Databag = data
            .iter()
            .filter(|(k, v)| current.get(*k).map(String::as_str).unwrap_or("") != v.as_str())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if delta.is_empty() {
            return Ok(());
        }
        let mut args = vec![s("-r"), rel.to_string()];
        if app {
            args.push(s("--app"));
        }
        args.push(s("--file"));
        args.push(s("-"));
        let body = serde_json::to_vec(&delta).map_err(|e| ToolError::BadOutput {
            argv: s("relation-set"),
            why: e.to_string(),
        })?;
        self.wrote();
        self.run("relation-set", &args, Some(&body))?;
        merge(&mut current, &delta);
        self.remember("relation-get", &Self::relation_get_args(rel, &bag), current);
        Ok(())
    }

    // ----- status -----

    /// Sets the unit (or, for the leader, application) workload status. Immediate.
    pub fn status_set(&self, status: &Status, application: bool) -> Result<()> {
        let args = status_args(status, application);
        // No record while the call is under way: a hook killed between the call and the
        // record leaves none, so the next status is told.
        let record = self.status_record(application);
        if let Some(r) = &record {
            let _ = std::fs::remove_file(r);
        }
        self.run("status-set", &args, None)?;
        if let Some(r) = &record {
            // best effort: without a record the next status is simply told again
            let _ = crate::fsutil::write_if_changed(r, args.join(" ").as_bytes(), 0o600, None);
        }
        Ok(())
    }

    /// Sets the status unless the record says Juju shows it already (see
    /// [`Juju::record_statuses_in`]; without a record, always).
    pub fn status_set_if_changed(&self, status: &Status, application: bool) -> Result<()> {
        let told = self
            .status_record(application)
            .and_then(|r| std::fs::read_to_string(r).ok());
        let line = status_args(status, application);
        if told.as_deref() == Some(line.join(" ").as_str()) {
            return Ok(());
        }
        self.status_set(status, application)
    }

    /// Shows the running workload version in `juju status`. Immediate.
    pub fn application_version_set(&self, version: &str) -> Result<()> {
        self.run("application-version-set", &[s("--"), s(version)], None)
            .map(drop)
    }

    // ----- actions -----

    /// The action's parameters (defaults already filled in by Juju).
    pub fn action_params(&self) -> Result<serde_json::Value> {
        self.cached_json("action-get", vec![s("--format=json")])
    }

    /// Adds results (`key=value`; dotted keys nest). Keys must be lowercase kebab-case.
    pub fn action_set(&self, results: &BTreeMap<String, String>) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        let args: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // The values may be a secret (get-admin-password): never in the error.
        let values: Vec<&str> = results.values().map(String::as_str).collect();
        self.run("action-set", &args, None)
            .map(drop)
            .map_err(|e| e.redacted(&values))
    }

    /// Marks the action failed; buffered changes still commit if the process exits 0.
    pub fn action_fail(&self, message: &str) -> Result<()> {
        self.run("action-fail", &[s("--"), s(message)], None)
            .map(drop)
    }

    /// Streams a progress line to `juju run`. Immediate.
    pub fn action_log(&self, message: &str) -> Result<()> {
        self.run("action-log", &[s("--"), s(message)], None)
            .map(drop)
    }

    // ----- storage and resources -----

    /// Storage instance ids for a storage name.
    pub fn storage_list(&self, name: &str) -> Result<Vec<String>> {
        self.cached_json("storage-list", vec![s("--format=json"), s(name)])
    }

    /// Kind and location of a storage instance (`concourse-data/0`).
    pub fn storage_get(&self, id: &str) -> Result<StorageInfo> {
        let args = vec![s("--format=json"), s("-s"), s(id)];
        self.cached("storage-get", &args, || self.run_json("storage-get", &args))
    }

    /// Local path of an attached file resource, or `None` when none is attached (or
    /// the attached file is empty, the usual placeholder).
    pub fn resource_get(&self, name: &str) -> Result<Option<PathBuf>> {
        let args = vec![s(name)];
        self.cached("resource-get", &args, || {
            match self.run("resource-get", &args, None) {
                Ok(out) => {
                    let path = PathBuf::from(String::from_utf8_lossy(&out).trim());
                    let nonempty = std::fs::metadata(&path)
                        .map(|m| m.is_file() && m.len() > 0)
                        .unwrap_or(false);
                    Ok((!path.as_os_str().is_empty() && nonempty).then_some(path))
                }
                Err(ToolError::Failed { code: 1, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    // ----- network and ports -----

    /// `network-get <binding>`, cached per binding.
    pub fn network_get(&self, binding: &str) -> Result<NetworkInfo> {
        self.cached_json("network-get", vec![s("--format=json"), s(binding)])
    }

    /// Ports opened by this unit with their endpoints (`opened-ports --endpoints`), read
    /// once per hook: Juju shows this hook's own requests too, so read before changing.
    pub fn opened_ports(&self) -> Result<Vec<OpenedPort>> {
        let args = vec![s("--endpoints"), s("--format=json")];
        self.cached("opened-ports", &args, || {
            let entries: Vec<String> = self
                .run_json::<Option<Vec<String>>>("opened-ports", &args)?
                .unwrap_or_default();
            entries
                .iter()
                .map(|e| {
                    OpenedPort::parse(e).ok_or_else(|| ToolError::BadOutput {
                        argv: format_argv("opened-ports", &args),
                        why: format!("unexpected entry {e:?}"),
                    })
                })
                .collect()
        })
    }

    /// Opens `port/proto` for `endpoints`, or for every endpoint when it is empty
    /// (committed with the hook).
    pub fn open_port(&self, port: u16, proto: &str, endpoints: &[&str]) -> Result<()> {
        self.wrote();
        self.run("open-port", &port_args(port, proto, endpoints), None)
            .map(drop)
    }

    /// Closes `port/proto` for `endpoints`, or everywhere when it is empty (committed
    /// with the hook).
    pub fn close_port(&self, port: u16, proto: &str, endpoints: &[&str]) -> Result<()> {
        self.wrote();
        self.run("close-port", &port_args(port, proto, endpoints), None)
            .map(drop)
    }

    // ----- goal state -----

    /// `goal-state`, cached for the hook.
    pub fn goal_state(&self) -> Result<GoalState> {
        self.cached_json("goal-state", vec![s("--format=json")])
    }

    // ----- secrets -----

    fn secret_get_args(secret: &SecretRef, refresh: bool) -> Vec<String> {
        let mut args = vec![s("--format=json")];
        match secret {
            SecretRef::Id(id) => args.push(id.clone()),
            SecretRef::Label(l) => args.extend([s("--label"), l.clone()]),
        }
        if refresh {
            args.push(s("--refresh"));
        }
        args
    }

    /// Creates a secret. Values travel in 0600 files (`key#file=`), never in argv.
    pub fn secret_add(
        &self,
        content: &BTreeMap<String, String>,
        label: Option<&str>,
        owner: SecretOwner,
        description: Option<&str>,
    ) -> Result<String> {
        let files = SecretFiles::write(content)?;
        let mut args = Vec::new();
        if let Some(l) = label {
            args.extend([s("--label"), s(l)]);
        }
        if let Some(d) = description {
            args.extend([s("--description"), s(d)]);
        }
        args.extend([
            s("--owner"),
            s(match owner {
                SecretOwner::Application => "application",
                SecretOwner::Unit => "unit",
            }),
        ]);
        args.extend(files.args());
        self.wrote();
        let out = self.run("secret-add", &args, None)?;
        let uri = String::from_utf8_lossy(&out).trim().to_string();
        if uri.is_empty() {
            return Err(ToolError::BadOutput {
                argv: s("secret-add"),
                why: "no secret URI printed".into(),
            });
        }
        let mut refs = vec![SecretRef::Id(uri.clone())];
        refs.extend(label.map(|l| SecretRef::Label(l.to_string())));
        for r in refs {
            self.remember(
                "secret-get",
                &Self::secret_get_args(&r, false),
                content.clone(),
            );
        }
        Ok(uri)
    }

    /// Reads a secret's content (`refresh`: the latest revision, and track it). Cached
    /// per reference for the hook.
    pub fn secret_get(
        &self,
        secret: &SecretRef,
        refresh: bool,
    ) -> Result<BTreeMap<String, String>> {
        self.cached_json("secret-get", Self::secret_get_args(secret, refresh))
    }

    /// Metadata of an owned secret, or `None` when it does not exist.
    pub fn secret_info(&self, secret: &SecretRef) -> Result<Option<(String, SecretInfo)>> {
        let args = Self::secret_get_args(secret, false);
        self.cached("secret-info-get", &args, || {
            match self.run_json::<BTreeMap<String, SecretInfo>>("secret-info-get", &args) {
                Ok(map) => Ok(map.into_iter().next()),
                Err(e) if e.is(FailureKind::NotFound) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
}

/// Merges a relation-set delta the way Juju's local copy does.
pub(crate) fn merge(bag: &mut BTreeMap<String, String>, delta: &BTreeMap<String, String>) {
    for (k, v) in delta {
        if v.is_empty() {
            bag.remove(k);
        } else {
            bag.insert(k.clone(), v.clone());
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    tool: &str,
    args: &[String],
    out: &[u8],
) -> Result<T> {
    serde_json::from_slice(out).map_err(|e| ToolError::BadOutput {
        argv: format_argv(tool, args),
        why: format!("{e} in {:?}", String::from_utf8_lossy(out)),
    })
}

/// Secret values written to 0600 files in a private directory, removed on drop.
struct SecretFiles {
    dir: tempfile::TempDir,
    keys: Vec<String>,
}

impl SecretFiles {
    fn write(content: &BTreeMap<String, String>) -> Result<SecretFiles> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| ToolError::Spawn {
            argv: s("secret-add/secret-set (writing value files)"),
            source: e,
        };
        let dir = tempfile::Builder::new()
            .prefix("concourse-ci-secret")
            .tempdir()
            .map_err(io)?;
        for (k, v) in content {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.path().join(k))
                .map_err(io)?;
            f.write_all(v.as_bytes()).map_err(io)?;
        }
        Ok(SecretFiles {
            dir,
            keys: content.keys().cloned().collect(),
        })
    }

    fn args(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{k}#file={}", self.dir.path().join(k).display()))
            .collect()
    }
}

/// A port range this unit opened (`opened-ports --endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenedPort {
    /// `9391/tcp`, `8000-8100/udp` or `icmp`.
    pub range: String,
    /// The endpoints it is open for; empty when it is open for every endpoint (`(*)`).
    pub endpoints: Vec<String>,
}

impl OpenedPort {
    /// One entry: `80/tcp (*)` or `9391/tcp (cos-agent, monitoring)`
    /// (juju/juju `internal/worker/uniter/runner/jujuc/opened-ports.go`).
    fn parse(entry: &str) -> Option<OpenedPort> {
        let (range, rest) = entry.split_once(" (")?;
        let list = rest.strip_suffix(')')?;
        let endpoints = match list {
            "*" => Vec::new(),
            _ => list.split(", ").map(str::to_string).collect(),
        };
        Some(OpenedPort {
            range: range.to_string(),
            endpoints,
        })
    }

    /// The port when this is one TCP port.
    pub fn tcp_port(&self) -> Option<u16> {
        self.range.strip_suffix("/tcp")?.parse().ok()
    }
}

/// `<port>/<proto> [--endpoints a,b]`.
fn port_args(port: u16, proto: &str, endpoints: &[&str]) -> Vec<String> {
    let mut args = vec![format!("{port}/{proto}")];
    if !endpoints.is_empty() {
        args.extend([s("--endpoints"), endpoints.join(",")]);
    }
    args
}

#[cfg(test)]
mod tests;
