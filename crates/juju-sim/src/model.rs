//! The controller side of the simulated model: applications, units, relations with their
//! databags, secrets, actions, statuses and logs, plus the commit of a hook's buffered changes.
//!
//! Owns: [`World`], the single mutable state behind one mutex (see `sim.rs`), and
//! [`commit`]. The unit agent's *local* state (what each unit has seen) lives here too, in
//! [`LocalState`], because hook choice is a pure function of both (`resolver.rs`).
//!
//! Invariants:
//! * unit numbers, relation ids, action ids and secret ids are never reused;
//! * a databag's version is bumped only when its content really changes, and each bump is
//!   recorded in [`World::bag_history`];
//! * every unit databag starts with `private-address`, `ingress-address`, `egress-subnets`
//!   (version 1) when the unit enters the relation's scope; app databags start empty at
//!   version 0;
//! * a commit is all-or-nothing: [`commit`] checks everything before it changes anything.
//!
//! Hazards: everything here runs under the model lock; nothing may block or spawn.

use crate::charm::{Charm, Role};
use crate::context::{HookContext, SecretOp};
use crate::ports;
use crate::resolver::HookKind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a commit was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CommitError {
    #[error("cannot commit application data: {unit} is not the leader of {app}")]
    NotLeader { unit: String, app: String },
    #[error("unit state of {unit} would be {size} bytes, over the 2 MiB max-charm-state-size")]
    StateTooLarge { unit: String, size: usize },
    #[error("relation {0} no longer exists")]
    RelationGone(u32),
    /// The controller refused the hook's port changes (`state/machine_ports_ops.go`).
    #[error("{0}")]
    Ports(String),
}

/// Key/value data of a databag.
pub type Data = BTreeMap<String, String>;

/// One databag with its change version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bag {
    pub data: Data,
    pub version: u64,
}

/// One recorded databag change.
#[derive(Debug, Clone)]
pub struct BagChange {
    pub relation: u32,
    /// Unit or application name owning the bag.
    pub owner: String,
    pub version: u64,
    pub data: Data,
    /// Unit (or scripted app) that committed it.
    pub by: String,
    /// Hook or action that committed it.
    pub hook: String,
    pub at: Duration,
}

/// Life of a unit or relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Alive,
    Dying,
    Dead,
}

/// A workload status value with its time.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRecord {
    pub status: String,
    pub message: String,
    pub data: BTreeMap<String, Value>,
    pub at: Duration,
    /// Hook during which it was set (`""` when the simulator set it).
    pub hook: String,
}

/// The unit agent's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentStatus {
    Allocating,
    Idle,
    Executing(String),
    /// `hook failed: "<hook>"`.
    Error(String),
}

/// One hook-tool call.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub args: Vec<String>,
    pub code: i32,
    /// The fault injected at this call (`crate::faults`), if any.
    pub fault: Option<crate::faults::FaultKind>,
    pub stdin_len: Option<usize>,
    pub elapsed: Duration,
}

/// How a hook or action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0, changes committed.
    Committed,
    /// Non-zero exit (or killed); changes discarded.
    Failed { exit_code: Option<i32> },
    /// Exit 0 but the commit was refused.
    CommitFailed(String),
    /// The process could not be started.
    SpawnFailed(String),
}

/// A finished hook or action, as recorded per unit.
#[derive(Debug, Clone)]
pub struct HookRecord {
    /// Hook name (`peers-relation-changed`) or `action:<name>`.
    pub name: String,
    /// Selected `JUJU_*` variables (relation, remote unit/app, departing, storage, action).
    pub env: BTreeMap<String, String>,
    pub context_id: String,
    pub started: Duration,
    pub duration: Duration,
    pub outcome: Outcome,
    pub tool_calls: Vec<ToolCall>,
    pub stdout: String,
    pub stderr: String,
    /// What injected faults did to this hook (`crate::faults`); empty when none applied.
    pub faults: String,
}

impl HookRecord {
    /// Exit code, if the process exited.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.outcome {
            Outcome::Committed | Outcome::CommitFailed(_) => Some(0),
            Outcome::Failed { exit_code } => *exit_code,
            Outcome::SpawnFailed(_) => None,
        }
    }
    /// Whether the hook's changes were committed.
    pub fn committed(&self) -> bool {
        self.outcome == Outcome::Committed
    }
    /// Tool calls made more than once with identical arguments (and their counts): the
    /// same datum read or written twice in one hook.
    pub fn duplicate_calls(&self) -> Vec<(Vec<String>, usize)> {
        let mut counts: BTreeMap<&Vec<String>, usize> = BTreeMap::new();
        for c in &self.tool_calls {
            *counts.entry(&c.args).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(a, n)| (a.clone(), n))
            .collect()
    }

    /// How many calls of `tool` the hook made.
    pub fn calls_of(&self, tool: &str) -> usize {
        self.tool_calls
            .iter()
            .filter(|c| c.args.first().map(String::as_str) == Some(tool))
            .count()
    }
}

/// A `juju-log` record.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub unit: String,
    pub level: String,
    pub message: String,
    pub hook: String,
    pub at: Duration,
}

/// State of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

/// An action task and its result.
#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub id: u64,
    pub unit: String,
    pub name: String,
    pub params: BTreeMap<String, Value>,
    pub status: ActionStatus,
    /// `action-fail` message, `exit status N`, or the commit failure.
    pub message: String,
    /// `action-set` results (nested maps of strings).
    pub results: Value,
    pub logs: Vec<String>,
    pub stdout: String,
    pub stderr: String,
    pub return_code: Option<i32>,
}

/// A unit's local view of one relation (what its agent has seen).
#[derive(Debug, Clone, Default)]
pub struct RelLocal {
    /// Members this unit has joined, with the databag version last seen (None: joined, its
    /// `relation-changed` still pending).
    pub members: BTreeMap<String, Option<u64>>,
    pub app_version: u64,
    pub changed_pending: Option<String>,
}

/// The agent's persisted local state (Juju: `worker/uniter/operation/state.go` and the
/// relation state of `worker/uniter/relation/statetracker.go`).
#[derive(Debug, Clone, Default)]
pub struct LocalState {
    pub installed: bool,
    pub started: bool,
    pub stopped: bool,
    pub removed: bool,
    pub leader_known: bool,
    pub leader_settings_seen: Option<u64>,
    pub config_seen: Option<u64>,
    /// Charm version installed (set by install and upgrade-charm).
    pub charm_seen: Option<u64>,
    pub relations: BTreeMap<u32, RelLocal>,
    pub storage_attached: BTreeSet<String>,
    pub next_update_status: Option<Instant>,
    /// Remote unit databags cached across hooks: (relation, unit) → data.
    pub remote_cache: BTreeMap<(u32, String), Data>,
    /// Latest secret revision a `secret-changed` was delivered for.
    pub secret_seen: BTreeMap<String, u32>,
}

/// A failed operation waiting for its retry.
#[derive(Debug, Clone)]
pub struct FailedOp {
    pub op: crate::resolver::Op,
    pub hook: String,
    pub attempts: u32,
    pub retry_at: Option<Instant>,
}

/// A storage instance attached to a unit.
#[derive(Debug, Clone)]
pub struct StorageAttachment {
    /// `<name>/<n>`.
    pub id: String,
    pub name: String,
    pub kind: String,
    pub location: String,
}

/// The storage volume a test gives an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Volume {
    /// One host directory mounted at the storage location on every unit.
    #[default]
    Shared,
    /// A host directory per unit.
    PerUnit,
    /// No storage instance at all: no `storage-attached`, nothing mounted.
    Missing,
    /// One shared host directory mounted read-only on every unit.
    ReadOnly,
    /// One size-limited tmpfs shared by every unit (a volume that fills up).
    Tmpfs { bytes: u64 },
    /// A size-limited tmpfs per unit.
    TmpfsPerUnit { bytes: u64 },
    /// Per-unit directories while the test tells the charm the volume is shared.
    FakeShared,
}

/// A scripted application (no charm process).
#[derive(Debug, Clone)]
pub enum Scripted {
    Postgres(crate::postgres::PostgresOptions),
    /// One unit with one endpoint that does nothing by itself: the test writes its
    /// databags ([`crate::Model::write_played_bag`]), as the counterpart charm would.
    Played {
        endpoint: String,
        interface: String,
        role: crate::charm::Role,
    },
}

/// An application.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub index: u32,
    pub charm: Option<Arc<Charm>>,
    pub scripted: Option<Scripted>,
    pub config_set: BTreeMap<String, Value>,
    pub config_version: u64,
    pub leader: Option<String>,
    pub leadership_version: u64,
    /// A leader named by [`crate::Model::set_leader`] while the current leader runs a hook
    /// in which `is-leader` said true: Juju guarantees that answer for 30 s, so the move
    /// waits for the hook to end.
    pub pending_leader: Option<String>,
    pub status: Option<StatusRecord>,
    pub status_history: Vec<StatusRecord>,
    pub version: String,
    pub volume: Volume,
    pub resources: BTreeMap<String, PathBuf>,
    pub next_unit: u32,
    /// Bumped by every refresh; units run upgrade-charm when theirs differs.
    pub charm_version: u64,
}

/// A unit (model side and the agent's local state).
#[derive(Debug)]
pub struct Unit {
    pub name: String,
    pub app: String,
    pub num: u32,
    pub machine_id: String,
    pub address: String,
    pub life: Life,
    pub status: StatusRecord,
    pub status_history: Vec<StatusRecord>,
    pub charm_set_status: bool,
    pub agent_status: AgentStatus,
    pub state: Data,
    /// Committed opened ports by endpoint (`""`: every endpoint).
    pub ports: ports::Grouped,
    pub local: LocalState,
    pub running: Option<HookContext>,
    /// Name of the running hook or action (also while its context is borrowed by a tool).
    pub running_name: Option<String>,
    pub hooks: Vec<HookRecord>,
    pub pending_actions: VecDeque<u64>,
    pub error: Option<FailedOp>,
    pub storage: Vec<StorageAttachment>,
    pub scripted: bool,
    /// Set once the agent thread has finished and the machine is torn down.
    pub gone: bool,
}

/// One end of a relation.
#[derive(Debug, Clone)]
pub struct RelEnd {
    pub app: String,
    pub endpoint: String,
    pub role: Role,
}

/// A relation.
#[derive(Debug, Clone)]
pub struct Relation {
    pub id: u32,
    pub ends: Vec<RelEnd>,
    pub peer: bool,
    pub life: Life,
    /// Units in scope.
    pub scope: BTreeSet<String>,
    pub app_bags: BTreeMap<String, Bag>,
    pub unit_bags: BTreeMap<String, Bag>,
}

impl Relation {
    /// The end of `app`.
    pub fn end_of(&self, app: &str) -> Option<&RelEnd> {
        self.ends.iter().find(|e| e.app == app)
    }
    /// The other application (own app for peers).
    pub fn remote_app(&self, app: &str) -> Option<&str> {
        if self.peer {
            return self.ends.first().map(|e| e.app.as_str());
        }
        self.ends
            .iter()
            .find(|e| e.app != app)
            .map(|e| e.app.as_str())
    }
    /// `<endpoint>:<id>` as `app`'s units name it.
    pub fn key_for(&self, app: &str) -> String {
        let ep = self.end_of(app).map(|e| e.endpoint.as_str()).unwrap_or("");
        format!("{ep}:{}", self.id)
    }
    /// Whether `app` takes part.
    pub fn involves(&self, app: &str) -> bool {
        self.end_of(app).is_some()
    }
}

/// Who owns a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOwner {
    App(String),
    Unit(String),
    /// A user secret (`juju add-secret`): the model's, read by the applications it is
    /// granted to (`juju grant-secret`).
    Model,
}

/// A consumer's view of a secret.
#[derive(Debug, Clone, Default)]
pub struct Consumer {
    pub pinned: u32,
    pub label: Option<String>,
}

/// A secret grant: to the remote app of a relation, or to one unit of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub relation: u32,
    pub unit: Option<String>,
}

/// A secret.
#[derive(Debug, Clone)]
pub struct Secret {
    pub id: String,
    pub owner: SecretOwner,
    pub label: Option<String>,
    pub description: Option<String>,
    pub expire: Option<String>,
    pub rotate: Option<String>,
    /// Revision n is `revisions[n - 1]`.
    pub revisions: Vec<Data>,
    pub grants: BTreeSet<Grant>,
    /// Applications a user secret is granted to.
    pub granted_apps: BTreeSet<String>,
    pub consumers: BTreeMap<String, Consumer>,
}

impl Secret {
    /// Latest revision number.
    pub fn latest(&self) -> u32 {
        self.revisions.len() as u32
    }
    /// Whether `unit` owns it (unit-owned, or app-owned by its application).
    pub fn owned_by(&self, unit: &str, app: &str) -> bool {
        match &self.owner {
            SecretOwner::App(a) => a == app,
            SecretOwner::Unit(u) => u == unit,
            SecretOwner::Model => false,
        }
    }
}

/// Proxy settings exported to hooks as `JUJU_CHARM_*_PROXY`.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    pub http: String,
    pub https: String,
    pub ftp: String,
    pub no_proxy: String,
}

/// Model-wide options.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub name: String,
    /// Whether the leader receives `relation-changed` for its own peer app-data commits
    /// (true in Juju 3.6; the docs and ops Harness say false).
    pub self_notify_peer_app: bool,
    /// `update-status` period (None: never).
    pub update_status_interval: Option<Duration>,
    /// First retry delay after a failed hook; doubles per attempt up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// `automatically-retry-hooks`.
    pub auto_retry: bool,
    /// A hook or action running longer is killed and counted as failed (Juju has no limit;
    /// this keeps a hung test from hanging forever).
    pub hook_timeout: Duration,
    pub proxy: ProxySettings,
    /// Where the model's run directory (`juju-sim-XXXXXX`) is made; default: the system
    /// temp dir. Not under /etc, /var, /usr/local or /opt (every unit overlays those).
    pub state_root: PathBuf,
    /// Print [`crate::Model::dump`] to stderr when a model is dropped during a panic.
    pub dump_on_panic: bool,
    /// Vary which relation a unit serves first (Juju iterates a Go map, so the order across
    /// relations is effectively random). Off: relations are served in id order.
    pub vary_relation_order: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            name: "sim".into(),
            self_notify_peer_app: true,
            update_status_interval: Some(Duration::from_secs(300)),
            retry_backoff: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(2),
            auto_retry: true,
            hook_timeout: Duration::from_secs(300),
            proxy: ProxySettings::default(),
            state_root: std::env::temp_dir(),
            dump_on_panic: true,
            vary_relation_order: false,
        }
    }
}

/// All model state, behind the model lock.
#[derive(Debug)]
pub struct World {
    pub opts: ModelOptions,
    pub uuid: String,
    pub started: Instant,
    pub shutdown: bool,
    pub apps: BTreeMap<String, App>,
    pub units: BTreeMap<String, Unit>,
    pub relations: BTreeMap<u32, Relation>,
    pub secrets: BTreeMap<String, Secret>,
    pub actions: BTreeMap<u64, ActionRecord>,
    pub logs: Vec<LogRecord>,
    pub bag_history: Vec<BagChange>,
    pub next_relation: u32,
    pub next_action: u64,
    pub next_secret: u64,
    pub next_machine: u32,
    pub next_storage: BTreeMap<String, u32>,
    pub next_context: u64,
    /// Armed faults (`crate::faults`), in the order they were armed.
    pub faults: Vec<crate::faults::Armed>,
    pub next_fault: u64,
}

/// The three address keys every unit databag starts with.
pub fn address_data(address: &str) -> Data {
    [
        ("private-address", address.to_string()),
        ("ingress-address", address.to_string()),
        ("egress-subnets", format!("{address}/32")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Application name of a unit name (`app/3` → `app`).
pub fn app_of(unit: &str) -> &str {
    unit.rsplit_once('/').map(|(a, _)| a).unwrap_or(unit)
}

/// Whether `s` looks like a unit name.
pub fn is_unit_name(s: &str) -> bool {
    match s.rsplit_once('/') {
        Some((a, n)) => !a.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

impl World {
    /// A fresh, empty model.
    pub fn new(opts: ModelOptions, uuid: String) -> World {
        World {
            opts,
            uuid,
            started: Instant::now(),
            shutdown: false,
            apps: BTreeMap::new(),
            units: BTreeMap::new(),
            relations: BTreeMap::new(),
            secrets: BTreeMap::new(),
            actions: BTreeMap::new(),
            logs: Vec::new(),
            bag_history: Vec::new(),
            next_relation: 0,
            next_action: 1,
            next_secret: 1,
            next_machine: 0,
            next_storage: BTreeMap::new(),
            next_context: 1,
            faults: Vec::new(),
            next_fault: 1,
        }
    }

    /// Time since the model started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Effective config of an application.
    pub fn config_of(&self, app: &str) -> BTreeMap<String, Value> {
        match self.apps.get(app) {
            Some(App {
                charm: Some(charm),
                config_set,
                ..
            }) => charm.effective_config(config_set),
            _ => BTreeMap::new(),
        }
    }

    /// Committed opened ports of every unit on `unit`'s machine (itself included), the
    /// scope in which Juju refuses conflicting ranges.
    pub fn machine_ports(&self, unit: &str) -> ports::MachinePorts {
        let machine = self.units.get(unit).map(|u| u.machine_id.as_str());
        self.units
            .values()
            .filter(|u| {
                u.name == unit || (machine.is_some_and(|m| !m.is_empty() && u.machine_id == m))
            })
            .map(|u| (u.name.clone(), u.ports.clone()))
            .collect()
    }

    /// The endpoints an application's units may open ports for: its charm's (or played
    /// endpoint's) and the implicit `juju-info` every charm provides.
    pub fn bound_endpoints(&self, app: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = ["juju-info".to_string()].into();
        if let Some(a) = self.apps.get(app) {
            if let Some(c) = &a.charm {
                out.extend(c.endpoints.iter().map(|e| e.name.clone()));
            }
            if let Some(Scripted::Played { endpoint, .. }) = &a.scripted {
                out.insert(endpoint.clone());
            }
        }
        out
    }

    /// Whether `unit` is its application's leader right now.
    pub fn is_leader(&self, unit: &str) -> bool {
        self.apps
            .get(app_of(unit))
            .and_then(|a| a.leader.as_deref())
            == Some(unit)
    }

    /// Alive units of an application, by number.
    pub fn alive_units(&self, app: &str) -> Vec<String> {
        let mut v: Vec<&Unit> = self
            .units
            .values()
            .filter(|u| u.app == app && u.life == Life::Alive)
            .collect();
        v.sort_by_key(|u| u.num);
        v.into_iter().map(|u| u.name.clone()).collect()
    }

    /// Elect the lowest-numbered alive unit if the application has no live leader.
    pub fn ensure_leader(&mut self, app: &str) {
        let alive = self.alive_units(app);
        let Some(a) = self.apps.get_mut(app) else {
            return;
        };
        if a.scripted.is_some() {
            return;
        }
        let ok = a.leader.as_ref().is_some_and(|l| alive.contains(l));
        if !ok {
            a.leader = alive.first().cloned();
            a.leadership_version += 1;
            a.pending_leader = None;
        }
    }

    /// Set a unit's workload status (immediate) and record it.
    pub fn set_unit_status(&mut self, unit: &str, status: &str, message: &str, hook: &str) {
        let at = self.now();
        if let Some(u) = self.units.get_mut(unit) {
            let rec = StatusRecord {
                status: status.into(),
                message: message.into(),
                data: BTreeMap::new(),
                at,
                hook: hook.into(),
            };
            u.status = rec.clone();
            u.status_history.push(rec);
        }
    }

    /// Enter a unit into a relation's scope, creating its databag.
    pub fn enter_scope(&mut self, rel: u32, unit: &str) {
        let Some(address) = self.units.get(unit).map(|u| u.address.clone()) else {
            return;
        };
        let at = self.now();
        let Some(r) = self.relations.get_mut(&rel) else {
            return;
        };
        if r.life != Life::Alive {
            return;
        }
        r.scope.insert(unit.to_string());
        if !r.unit_bags.contains_key(unit) {
            let bag = Bag {
                data: address_data(&address),
                version: 1,
            };
            self.bag_history.push(BagChange {
                relation: rel,
                owner: unit.into(),
                version: 1,
                data: bag.data.clone(),
                by: "juju".into(),
                hook: "enter-scope".into(),
                at,
            });
            r.unit_bags.insert(unit.to_string(), bag);
        }
    }

    /// Replace a databag's content, bumping its version only on a real change. Returns whether
    /// it changed.
    pub fn write_bag(&mut self, rel: u32, owner: &str, data: Data, by: &str, hook: &str) -> bool {
        let at = self.now();
        let Some(r) = self.relations.get_mut(&rel) else {
            return false;
        };
        let bag = if is_unit_name(owner) {
            r.unit_bags.entry(owner.to_string()).or_default()
        } else {
            r.app_bags.entry(owner.to_string()).or_default()
        };
        if bag.data == data {
            return false;
        }
        bag.data = data;
        bag.version += 1;
        self.bag_history.push(BagChange {
            relation: rel,
            owner: owner.into(),
            version: bag.version,
            data: bag.data.clone(),
            by: by.into(),
            hook: hook.into(),
            at,
        });
        true
    }

    /// Current databag (empty default if absent).
    pub fn bag(&self, rel: u32, owner: &str) -> Bag {
        self.relations
            .get(&rel)
            .and_then(|r| {
                if is_unit_name(owner) {
                    r.unit_bags.get(owner)
                } else {
                    r.app_bags.get(owner)
                }
            })
            .cloned()
            .unwrap_or_default()
    }

    /// Allocate a context id.
    pub fn context_id(&mut self, unit: &str, name: &str) -> String {
        let n = self.next_context;
        self.next_context += 1;
        let mix = (n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ (self.now().as_nanos() as u64);
        format!("{unit}-{name}-{mix:016x}{n:016x}")
    }

    /// Allocate a secret id (20 characters, never reused in the model).
    pub fn new_secret_id(&mut self) -> String {
        let n = self.next_secret;
        self.next_secret += 1;
        let prefix: String = self
            .uuid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(12)
            .collect();
        format!("{prefix:0>12}{n:08x}")
    }

    /// Whether `unit` may read a secret (owner, or granted through a live relation).
    pub fn secret_visible_to(&self, s: &Secret, unit: &str) -> bool {
        let app = app_of(unit);
        if s.owned_by(unit, app) || s.granted_apps.contains(app) {
            return true;
        }
        s.grants.iter().any(|g| {
            let Some(r) = self.relations.get(&g.relation) else {
                return false;
            };
            r.life != Life::Dead && r.involves(app) && g.unit.as_deref().is_none_or(|u| u == unit)
        })
    }
}

/// Apply a finished hook's buffered changes (exit 0). Checks first, then applies; on error
/// nothing changed.
pub fn commit(w: &mut World, unit: &str, ctx: &HookContext) -> Result<(), CommitError> {
    let app = app_of(unit).to_string();
    if ctx.needs_leadership && !w.is_leader(unit) {
        return Err(CommitError::NotLeader {
            unit: unit.into(),
            app,
        });
    }
    for (rel, _) in ctx.dirty_bags.iter() {
        if !w.relations.contains_key(rel) {
            return Err(CommitError::RelationGone(*rel));
        }
    }
    let machine = w.machine_ports(unit);
    let new_ports = if ctx.ports.is_empty() {
        None
    } else {
        let bound = w.bound_endpoints(&app);
        Some(ports::commit(&machine, unit, &ctx.ports, &bound).map_err(CommitError::Ports)?)
    };
    let new_state = ctx.state.clone();
    if let Some(state) = &new_state {
        let size: usize = state.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > 2 << 20 {
            return Err(CommitError::StateTooLarge {
                unit: unit.into(),
                size,
            });
        }
    }
    // Everything checked: apply.
    let hook = ctx.hook_name.clone();
    for (rel, owner) in ctx.dirty_bags.iter() {
        if let Some(data) = ctx.own_bags.get(&(*rel, owner.clone())) {
            let changed = w.write_bag(*rel, owner, data.clone(), unit, &hook);
            let peer = w.relations.get(rel).is_some_and(|r| r.peer);
            if changed && peer && !is_unit_name(owner) && !w.opts.self_notify_peer_app {
                // The writer is not told about its own app-data change.
                let v = w.bag(*rel, owner).version;
                if let Some(l) = w
                    .units
                    .get_mut(unit)
                    .and_then(|u| u.local.relations.get_mut(rel))
                {
                    l.app_version = v;
                }
            }
        }
    }
    if let Some(u) = w.units.get_mut(unit) {
        if let Some(state) = new_state {
            u.state = state;
        }
    }
    if let Some(new_ports) = new_ports {
        // `machine` names every unit on the machine, this one included.
        for name in machine.keys() {
            if let Some(u) = w.units.get_mut(name) {
                u.ports = new_ports.get(name).cloned().unwrap_or_default();
            }
        }
    }
    for op in &ctx.secret_ops {
        apply_secret_op(w, unit, op);
    }
    for (id, pin) in &ctx.secret_pins {
        if let Some(s) = w.secrets.get_mut(id) {
            let c = s.consumers.entry(unit.to_string()).or_default();
            if let Some(rev) = pin.0 {
                c.pinned = rev;
            }
            if let Some(label) = &pin.1 {
                c.label = Some(label.clone());
            }
        }
    }
    Ok(())
}

fn apply_secret_op(w: &mut World, unit: &str, op: &SecretOp) {
    match op {
        SecretOp::Add {
            id,
            owner,
            label,
            description,
            expire,
            rotate,
            data,
        } => {
            w.secrets.insert(
                id.clone(),
                Secret {
                    id: id.clone(),
                    owner: owner.clone(),
                    label: label.clone(),
                    description: description.clone(),
                    expire: expire.clone(),
                    rotate: rotate.clone(),
                    revisions: vec![data.clone()],
                    grants: BTreeSet::new(),
                    granted_apps: BTreeSet::new(),
                    consumers: BTreeMap::new(),
                },
            );
        }
        SecretOp::Set {
            id,
            label,
            description,
            expire,
            rotate,
            data,
        } => {
            if let Some(s) = w.secrets.get_mut(id) {
                if let Some(d) = data {
                    if s.revisions.last() != Some(d) {
                        s.revisions.push(d.clone());
                    }
                }
                if label.is_some() {
                    s.label = label.clone();
                }
                if description.is_some() {
                    s.description = description.clone();
                }
                if expire.is_some() {
                    s.expire = expire.clone();
                }
                if rotate.is_some() {
                    s.rotate = rotate.clone();
                }
            }
        }
        SecretOp::Grant { id, grant } => {
            if let Some(s) = w.secrets.get_mut(id) {
                s.grants.insert(grant.clone());
            }
        }
    }
    let _ = unit;
}

/// The hook name for a kind on an endpoint/storage.
pub fn hook_name(kind: HookKind, endpoint: Option<&str>, storage: Option<&str>) -> String {
    let ep = endpoint.unwrap_or("");
    let st = storage.unwrap_or("");
    match kind {
        HookKind::Install => "install".into(),
        HookKind::Start => "start".into(),
        HookKind::Stop => "stop".into(),
        HookKind::Remove => "remove".into(),
        HookKind::ConfigChanged => "config-changed".into(),
        HookKind::UpdateStatus => "update-status".into(),
        HookKind::UpgradeCharm => "upgrade-charm".into(),
        HookKind::LeaderElected => "leader-elected".into(),
        HookKind::LeaderSettingsChanged => "leader-settings-changed".into(),
        HookKind::RelationCreated => format!("{ep}-relation-created"),
        HookKind::RelationJoined => format!("{ep}-relation-joined"),
        HookKind::RelationChanged => format!("{ep}-relation-changed"),
        HookKind::RelationDeparted => format!("{ep}-relation-departed"),
        HookKind::RelationBroken => format!("{ep}-relation-broken"),
        HookKind::StorageAttached => format!("{st}-storage-attached"),
        HookKind::StorageDetaching => format!("{st}-storage-detaching"),
        HookKind::SecretChanged => "secret-changed".into(),
    }
}

/// A model with app "a" (units a/0 leader, a/1), a peer relation 0, both units installed,
/// started, config and leadership seen, in scope and joined to each other.
#[cfg(test)]
pub(crate) fn test_world() -> World {
    use crate::sim::{new_unit, NewUnit};
    let mut w = World::new(ModelOptions::default(), "uuid".into());
    w.apps.insert(
        "a".into(),
        App {
            name: "a".into(),
            index: 0,
            charm: None,
            scripted: None,
            config_set: BTreeMap::new(),
            config_version: 1,
            leader: Some("a/0".into()),
            leadership_version: 1,
            pending_leader: None,
            status: None,
            status_history: vec![],
            version: String::new(),
            volume: Volume::Shared,
            resources: BTreeMap::new(),
            next_unit: 2,
            charm_version: 1,
        },
    );
    for n in 0..2 {
        let name = format!("a/{n}");
        let mut u = new_unit(
            &w,
            NewUnit {
                name: &name,
                app: "a",
                num: n,
                app_index: 0,
                machine_id: n.to_string(),
                storage: vec![],
                scripted: false,
            },
        );
        let l = &mut u.local;
        l.installed = true;
        l.started = true;
        l.config_seen = Some(1);
        l.charm_seen = Some(1);
        l.leader_known = n == 0;
        l.leader_settings_seen = Some(1);
        let other = format!("a/{}", 1 - n);
        l.relations
            .entry(0)
            .or_default()
            .members
            .insert(other, Some(1));
        w.units.insert(name, u);
    }
    let bag = |v| Bag {
        data: BTreeMap::new(),
        version: v,
    };
    w.relations.insert(
        0,
        Relation {
            id: 0,
            ends: vec![RelEnd {
                app: "a".into(),
                endpoint: "peers".into(),
                role: Role::Peer,
            }],
            peer: true,
            life: Life::Alive,
            scope: BTreeSet::from(["a/0".to_string(), "a/1".to_string()]),
            app_bags: BTreeMap::new(),
            unit_bags: BTreeMap::from([("a/0".into(), bag(1)), ("a/1".into(), bag(1))]),
        },
    );
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert!(is_unit_name("concourse-ci/0"));
        assert!(!is_unit_name("concourse-ci"));
        assert!(!is_unit_name("a/b"));
        assert_eq!(app_of("pg/12"), "pg");
    }

    #[test]
    fn write_bag_bumps_only_on_change() {
        let mut w = World::new(ModelOptions::default(), "u".into());
        w.relations.insert(
            0,
            Relation {
                id: 0,
                ends: vec![],
                peer: true,
                life: Life::Alive,
                scope: BTreeSet::new(),
                app_bags: BTreeMap::new(),
                unit_bags: BTreeMap::new(),
            },
        );
        let d: Data = [("k".to_string(), "v".to_string())].into();
        assert!(w.write_bag(0, "app", d.clone(), "app/0", "h"));
        assert!(!w.write_bag(0, "app", d, "app/0", "h"));
        assert_eq!(w.bag(0, "app").version, 1);
        assert_eq!(w.bag_history.len(), 1);
    }
}
