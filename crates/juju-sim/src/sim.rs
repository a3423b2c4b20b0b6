//! The test-facing API: build a model, drive it, wait for it, inspect it.
//!
//! Owns: [`Model`] (the run directory, agents, tool servers and machines of one simulated
//! model) and its tear-down, which kills every process of every unit, detaches every mount
//! and removes the run directory.
//!
//! Invariants: every public method takes `&self` and only holds the model lock briefly, so a
//! predicate given to [`Model::run_until`] may call any inspection method. Waiting is done on
//! the model's condition variable (notified on every change), capped at 100 ms per wait.
//!
//! Hazards: [`Model::new`] needs root (mount namespaces, overlayfs). A model dropped during a
//! panic prints [`Model::dump`] to stderr first (see `ModelOptions::dump_on_panic`).

use crate::agent::{self, Shared};
use crate::charm::{Charm, CharmError, CharmSource, Role};
use crate::context::UnitEnv;
use crate::faults::{self, Fault, FaultRecord, HookStart};
use crate::machine::{self, Machine, MachineError, MachineSpec, ProcessInfo, Seed, StorageMount};
use crate::model::{
    app_of, ActionRecord, ActionStatus, AgentStatus, App, Bag, BagChange, Data, HookRecord, Life,
    LocalState, LogRecord, ModelOptions, RelEnd, Relation, Scripted, Secret, SecretOwner,
    StatusRecord, StorageAttachment, ToolCall, Unit, Volume, World,
};
use crate::postgres::PostgresOptions;
use crate::resolver::{self, Next};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long `is-leader` returning true guarantees leadership (juju `is-leader` help).
pub const LEADER_LEASE: Duration = Duration::from_secs(30);

/// The least time between two checks of a [`Model::run_until`] predicate.
pub const PREDICATE_GAP: Duration = Duration::from_millis(20);

/// Errors of the test API.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("juju-sim needs root (mount namespaces and overlayfs); run the tests as root")]
    NotRoot,
    #[error(
        "the state root {0} is under a directory every unit overlays (/etc, /var, /usr/local, /opt); set ModelOptions::state_root or TMPDIR to a directory elsewhere, e.g. /tmp"
    )]
    StateRoot(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Charm(#[from] CharmError),
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error("application {0:?} already exists")]
    AppExists(String),
    #[error("unknown application {0:?}")]
    UnknownApp(String),
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    #[error("unknown relation {0}")]
    UnknownRelation(u32),
    #[error("cannot relate {a} and {b}: {why}")]
    Relate { a: String, b: String, why: String },
    #[error("no user secret {0} (juju add-secret)")]
    UnknownSecret(String),
    #[error("timed out after {after:?} waiting for {what}\n{dump}")]
    Timeout {
        what: String,
        after: Duration,
        dump: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SimError + 'a {
    move |source| SimError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Options of one deployment.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Config values (coerced to the option's type; strings are parsed like `juju config`).
    pub config: BTreeMap<String, Value>,
    /// What to mount at every declared storage location.
    pub storage: Volume,
    /// File resources: name → host file.
    pub resources: BTreeMap<String, PathBuf>,
}

/// A running hook as seen from outside.
#[derive(Debug, Clone)]
pub struct RunningHook {
    pub name: String,
    pub context_id: String,
    pub tool_calls: Vec<ToolCall>,
}

/// An action's final record.
pub type ActionResult = ActionRecord;

static RUNS: AtomicU64 = AtomicU64::new(0);

/// A simulated Juju model.
#[derive(Debug)]
pub struct Model {
    shared: Arc<Shared>,
    run_dir: PathBuf,
    run_id: String,
    /// Held (locked) while the model lives: tells [`machine::cleanup_stale`] it is not stale.
    _owner_lock: std::fs::File,
    jujuc: PathBuf,
    agents: Mutex<Vec<JoinHandle<()>>>,
    /// Default wait of [`Model::run_action`].
    pub action_timeout: Duration,
}

impl Model {
    /// Create an empty model with a fresh run directory under `opts.state_root` (first
    /// removing the run directories of dead test processes there).
    pub fn new(opts: ModelOptions) -> Result<Model, SimError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(SimError::NotRoot);
        }
        let root =
            std::path::absolute(&opts.state_root).map_err(io("locating", &opts.state_root))?;
        if machine::is_overlaid(&root) {
            return Err(SimError::StateRoot(root));
        }
        machine::cleanup_stale(&root);
        let pid = std::process::id();
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        std::fs::create_dir_all(&root).map_err(io("creating", &root))?;
        // Removed on error until the owner lock makes it the model's (then Drop removes it).
        let tmp = tempfile::Builder::new()
            .prefix(machine::RUN_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir_in(&root)
            .map_err(io("creating a run directory in", &root))?;
        let run_dir = tmp.path().to_path_buf();
        let owner_lock = machine::lock_run_dir(&run_dir)?;
        let _ = tmp.keep();
        let run_id = run_dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::create_dir_all(run_dir.join("bin")).map_err(io("creating", &run_dir))?;
        let exe = crate::multicall::executable()
            .map_err(io("locating", Path::new("the tools' executable")))?;
        let jujuc = run_dir.join("bin").join("jujuc");
        if std::fs::hard_link(&exe, &jujuc).is_err() {
            std::fs::copy(&exe, &jujuc).map_err(io("copying", &exe))?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let h = nanos ^ (u64::from(pid) << 32) ^ n;
        let uuid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (h >> 32) as u32,
            (h >> 16) as u16,
            (h & 0xfff) as u16,
            (n & 0xfff) as u16,
            h & 0xffff_ffff_ffff
        );
        let world = World::new(opts, uuid);
        Ok(Model {
            shared: Arc::new(Shared {
                world: Mutex::new(world),
                cond: Condvar::new(),
                machines: Mutex::new(BTreeMap::new()),
                servers: Mutex::new(BTreeMap::new()),
            }),
            run_dir,
            run_id,
            _owner_lock: owner_lock,
            jujuc,
            agents: Mutex::new(Vec::new()),
            action_timeout: Duration::from_secs(120),
        })
    }

    /// The run directory (host path).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    fn storage_root(&self, app: &str) -> PathBuf {
        self.run_dir.join("storage").join(app)
    }

    /// Deploy `units` units of a charm as application `name`. Returns the unit names.
    pub fn deploy(
        &self,
        source: CharmSource,
        name: &str,
        units: usize,
        opts: DeployOptions,
    ) -> Result<Vec<String>, SimError> {
        let charm = Charm::load(&source)?;
        let mut config_set = BTreeMap::new();
        for (k, v) in opts.config {
            let v = charm.coerce(&k, v)?;
            config_set.insert(k, v);
        }
        // Stage the charm and resources outside every overlaid path.
        let files = self.stage_charm(name, 1, &charm)?;
        let mut resources = BTreeMap::new();
        for (rname, src) in opts.resources {
            let decl = charm
                .resources
                .iter()
                .find(|r| r.name == rname)
                .ok_or_else(|| {
                    SimError::Charm(CharmError::Invalid {
                        path: source.root.join("metadata.yaml"),
                        msg: format!("no resource {rname:?} declared"),
                    })
                })?;
            let dir = self.run_dir.join("resources").join(name).join(&rname);
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            let dst = dir.join(&decl.filename);
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(io("copying", &src))?;
            }
            resources.insert(rname, dst);
        }
        let sroot = self.storage_root(name);
        match opts.storage {
            Volume::Shared | Volume::ReadOnly | Volume::Tmpfs { .. } => {
                let d = sroot.join("shared");
                std::fs::create_dir_all(&d).map_err(io("creating", &d))?;
                if let Volume::Tmpfs { bytes } = opts.storage {
                    let o = format!("size={bytes},mode=0755");
                    nix::mount::mount(
                        Some("tmpfs"),
                        &d,
                        Some("tmpfs"),
                        nix::mount::MsFlags::empty(),
                        Some(o.as_str()),
                    )
                    .map_err(|source| MachineError::Sys {
                        what: format!("mounting tmpfs on {}", d.display()),
                        source,
                    })?;
                }
            }
            _ => {}
        }
        let mut charm = charm;
        charm.files = files;
        let charm = Arc::new(charm);
        {
            let mut w = self.shared.lock();
            if w.apps.contains_key(name) {
                return Err(SimError::AppExists(name.into()));
            }
            let index = w.apps.len() as u32;
            let peers: Vec<String> = charm
                .endpoints
                .iter()
                .filter(|e| e.role == Role::Peer)
                .map(|e| e.name.clone())
                .collect();
            w.apps.insert(
                name.to_string(),
                App {
                    name: name.to_string(),
                    index,
                    charm: Some(charm.clone()),
                    scripted: None,
                    config_set,
                    config_version: 1,
                    leader: None,
                    leadership_version: 0,
                    pending_leader: None,
                    status: None,
                    status_history: Vec::new(),
                    version: String::new(),
                    volume: opts.storage,
                    resources,
                    next_unit: 0,
                    charm_version: 1,
                },
            );
            for ep in peers {
                let id = w.next_relation;
                w.next_relation += 1;
                w.relations.insert(
                    id,
                    Relation {
                        id,
                        ends: vec![RelEnd {
                            app: name.to_string(),
                            endpoint: ep,
                            role: Role::Peer,
                        }],
                        peer: true,
                        life: Life::Alive,
                        scope: BTreeSet::new(),
                        app_bags: BTreeMap::new(),
                        unit_bags: BTreeMap::new(),
                    },
                );
            }
        }
        let mut names = Vec::new();
        for _ in 0..units {
            names.push(self.add_unit(name)?);
        }
        Ok(names)
    }

    /// Copy a charm's files to the run dir (outside every overlaid path); returns the staged
    /// (relative path, host path) list.
    fn stage_charm(
        &self,
        app: &str,
        version: u64,
        charm: &Charm,
    ) -> Result<Vec<(PathBuf, PathBuf)>, SimError> {
        let stage = self
            .run_dir
            .join("charms")
            .join(format!("{app}-v{version}"));
        let mut files = Vec::new();
        for (rel, src) in &charm.files {
            let dst = stage.join(rel);
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(io("creating", p))?;
            }
            std::fs::copy(src, &dst).map_err(io("copying", src))?;
            files.push((rel.clone(), dst));
        }
        Ok(files)
    }

    /// `juju refresh`: replace the application's charm. Every installed unit runs
    /// upgrade-charm (its charm dir is swapped just before) and then config-changed.
    pub fn refresh(&self, app: &str, source: CharmSource) -> Result<(), SimError> {
        let mut charm = Charm::load(&source)?;
        let version = {
            let w = self.shared.lock();
            let a = w
                .apps
                .get(app)
                .ok_or_else(|| SimError::UnknownApp(app.into()))?;
            a.charm_version + 1
        };
        charm.files = self.stage_charm(app, version, &charm)?;
        let mut w = self.shared.lock();
        let a = w
            .apps
            .get_mut(app)
            .ok_or_else(|| SimError::UnknownApp(app.into()))?;
        a.charm = Some(Arc::new(charm));
        a.charm_version = version;
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// Deploy the built-in fake `postgresql` provider (one scripted unit, endpoint
    /// `database`).
    pub fn deploy_postgresql(&self, name: &str, opts: PostgresOptions) -> Result<String, SimError> {
        self.deploy_scripted(name, Scripted::Postgres(opts), "16.6")
    }

    /// Deploy a played application: one scripted unit `<name>/0` with one endpoint, which
    /// writes nothing unless the test does ([`Model::write_played_bag`]). It plays the
    /// charms at the other end of a relation (a Prometheus, a COS collector, a
    /// certificate provider) as their libraries would.
    pub fn deploy_played(
        &self,
        name: &str,
        endpoint: &str,
        interface: &str,
        role: crate::charm::Role,
    ) -> Result<String, SimError> {
        let scripted = Scripted::Played {
            endpoint: endpoint.into(),
            interface: interface.into(),
            role,
        };
        self.deploy_scripted(name, scripted, "")
    }

    /// One scripted application with its leader unit `<name>/0`, active.
    fn deploy_scripted(
        &self,
        name: &str,
        scripted: Scripted,
        version: &str,
    ) -> Result<String, SimError> {
        let mut w = self.shared.lock();
        if w.apps.contains_key(name) {
            return Err(SimError::AppExists(name.into()));
        }
        let index = w.apps.len() as u32;
        let unit = format!("{name}/0");
        w.apps.insert(
            name.to_string(),
            App {
                name: name.to_string(),
                index,
                charm: None,
                scripted: Some(scripted),
                config_set: BTreeMap::new(),
                config_version: 1,
                leader: Some(unit.clone()),
                leadership_version: 1,
                pending_leader: None,
                status: None,
                status_history: Vec::new(),
                version: version.into(),
                volume: Volume::Missing,
                resources: BTreeMap::new(),
                next_unit: 1,
                charm_version: 1,
            },
        );
        let u = new_unit(
            &w,
            NewUnit {
                name: &unit,
                app: name,
                num: 0,
                app_index: index,
                machine_id: String::new(),
                storage: Vec::new(),
                scripted: true,
            },
        );
        w.units.insert(unit.clone(), u);
        w.set_unit_status(&unit, "active", "", "");
        drop(w);
        self.shared.notify();
        Ok(unit)
    }

    /// Replace a played application's (or its unit's) databag in relation `rel`, as its
    /// charm would at the end of a hook; the other side sees relation-changed.
    pub fn write_played_bag(&self, rel: u32, owner: &str, data: Data) {
        let mut w = self.shared.lock();
        let by = format!("{}/0", owner.split('/').next().unwrap_or(owner));
        w.write_bag(rel, owner, data, &by, "played");
        drop(w);
        self.shared.notify();
    }

    /// Add a unit to an application; returns its name once its machine and agent run.
    pub fn add_unit(&self, app: &str) -> Result<String, SimError> {
        let (unit, spec, uenv) = {
            let mut w = self.shared.lock();
            let a = w
                .apps
                .get_mut(app)
                .ok_or_else(|| SimError::UnknownApp(app.into()))?;
            let charm = a
                .charm
                .clone()
                .ok_or_else(|| SimError::UnknownApp(app.into()))?;
            let num = a.next_unit;
            a.next_unit += 1;
            let (index, volume, resources) = (a.index, a.volume, a.resources.clone());
            let unit = format!("{app}/{num}");
            let mut storage = Vec::new();
            if volume != Volume::Missing {
                for decl in &charm.storage {
                    let n = w.next_storage.entry(decl.name.clone()).or_insert(0);
                    let id = format!("{}/{}", decl.name, *n);
                    *n += 1;
                    storage.push(StorageAttachment {
                        id,
                        name: decl.name.clone(),
                        kind: decl.kind.clone(),
                        location: decl.location.clone(),
                    });
                }
            }
            let machine_id = w.next_machine.to_string();
            w.next_machine += 1;
            let location = storage.first().map(|s| s.location.clone());
            let u = new_unit(
                &w,
                NewUnit {
                    name: &unit,
                    app,
                    num,
                    app_index: index,
                    machine_id,
                    storage,
                    scripted: false,
                },
            );
            w.units.insert(unit.clone(), u);
            let tag = machine::unit_tag(&unit);
            let sroot = self.storage_root(app);
            let storage_mount = match volume {
                Volume::Missing => StorageMount::None,
                Volume::Shared | Volume::Tmpfs { .. } => StorageMount::Bind {
                    host: sroot.join("shared"),
                    read_only: false,
                },
                Volume::ReadOnly => StorageMount::Bind {
                    host: sroot.join("shared"),
                    read_only: true,
                },
                Volume::PerUnit | Volume::FakeShared => StorageMount::Bind {
                    host: sroot.join(&tag),
                    read_only: false,
                },
                Volume::TmpfsPerUnit { bytes } => StorageMount::Tmpfs { bytes },
            };
            if let StorageMount::Bind { host, .. } = &storage_mount {
                std::fs::create_dir_all(host).map_err(io("creating", host))?;
            }
            let charm_dir = machine::charm_dir(&unit);
            let tools_dir = machine::tools_dir(&unit);
            let mut seeds: Vec<Seed> = charm
                .files
                .iter()
                .map(|(rel, from)| Seed::File {
                    from: from.clone(),
                    to: format!("{charm_dir}/{}", rel.display()),
                })
                .collect();
            let jujuc = self.jujuc.to_string_lossy().into_owned();
            for tool in crate::multicall::HOOK_TOOLS
                .iter()
                .map(|s| s.to_string())
                .chain(crate::multicall::registered())
            {
                seeds.push(Seed::Symlink {
                    target: jujuc.clone(),
                    at: format!("{tools_dir}/{tool}"),
                });
            }
            for (rname, path) in &resources {
                let filename = path
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                seeds.push(Seed::File {
                    from: path.clone(),
                    to: machine::resource_path(&unit, rname, &filename),
                });
            }
            let spec = MachineSpec {
                unit: unit.clone(),
                run_dir: self.run_dir.clone(),
                unit_dir: self.run_dir.join("units").join(&tag),
                storage: if location.is_some() {
                    storage_mount
                } else {
                    StorageMount::None
                },
                location,
                seeds,
            };
            let uenv = UnitEnv {
                charm_dir,
                tools_dir,
                socket_address: format!("@juju-sim/{}/{tag}/agent.socket", self.run_id),
                marker: format!("{}/{unit}", self.run_id),
            };
            (unit, spec, uenv)
        };
        let m = Arc::new(Machine::create(&spec)?);
        let server = agent::start_tool_server(&self.shared, &unit, &uenv.socket_address)?;
        self.shared
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.clone(), server);
        self.shared
            .machines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(unit.clone(), m.clone());
        let h = agent::spawn_agent(self.shared.clone(), unit.clone(), m, uenv)?;
        self.agents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h);
        {
            let mut w = self.shared.lock();
            if let Some(u) = w.units.get_mut(&unit) {
                u.agent_status = AgentStatus::Idle;
            }
            w.ensure_leader(app);
        }
        self.shared.notify();
        Ok(unit)
    }

    /// Start removing a unit (teardown hooks run; its processes are killed once it is dead).
    pub fn remove_unit(&self, unit: &str) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        let u = w
            .units
            .get_mut(unit)
            .ok_or_else(|| SimError::UnknownUnit(unit.into()))?;
        if u.life != Life::Alive {
            return Ok(());
        }
        u.life = Life::Dying;
        let app = u.app.clone();
        let pending: Vec<u64> = u.pending_actions.drain(..).collect();
        for id in pending {
            if let Some(a) = w.actions.get_mut(&id) {
                a.status = ActionStatus::Failed;
                a.message = "unit is being removed".into();
            }
        }
        for r in w.relations.values_mut() {
            r.scope.remove(unit);
        }
        w.ensure_leader(&app);
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// Make `unit` the leader of its application: at once, or, while the leader runs a
    /// hook in which `is-leader` said true less than [`LEADER_LEASE`] ago (Juju guarantees
    /// that answer for as long), when that hook ends. [`Model::force_leader`] does not wait.
    pub fn set_leader(&self, unit: &str) -> Result<(), SimError> {
        self.move_leader(unit, true)
    }

    /// Make `unit` the leader at once, even during a hook of the leader that relied on
    /// `is-leader`: what happens when the leader's agent loses the controller for longer than
    /// the lease, or its hook outlives the guarantee (its app-data commit then fails).
    pub fn force_leader(&self, unit: &str) -> Result<(), SimError> {
        self.move_leader(unit, false)
    }

    fn move_leader(&self, unit: &str, honour_lease: bool) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        if !w.units.get(unit).is_some_and(|u| u.life == Life::Alive) {
            return Err(SimError::UnknownUnit(unit.into()));
        }
        let a = w
            .apps
            .get(app_of(unit))
            .ok_or_else(|| SimError::UnknownApp(unit.into()))?;
        let held = honour_lease
            && a.leader.as_deref().is_some_and(|l| {
                w.units
                    .get(l)
                    .and_then(|u| u.running.as_ref())
                    .and_then(|ctx| ctx.leader_claimed)
                    .is_some_and(|at| at.elapsed() < LEADER_LEASE)
            });
        let a = w
            .apps
            .get_mut(app_of(unit))
            .ok_or_else(|| SimError::UnknownApp(unit.into()))?;
        if held && a.leader.as_deref() != Some(unit) {
            a.pending_leader = Some(unit.to_string());
        } else {
            a.pending_leader = None;
            if a.leader.as_deref() != Some(unit) {
                a.leader = Some(unit.to_string());
                a.leadership_version += 1;
            }
        }
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// The application's leader.
    pub fn leader(&self, app: &str) -> Option<String> {
        self.shared
            .lock()
            .apps
            .get(app)
            .and_then(|a| a.leader.clone())
    }

    /// Set config values (`juju config app k=v ...`). A change queues config-changed.
    pub fn config<K, V>(
        &self,
        app: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), SimError>
    where
        K: Into<String>,
        V: Into<Value>,
    {
        self.change_config(app, |charm, set| {
            for (k, v) in pairs {
                let k = k.into();
                let v = charm.coerce(&k, v.into())?;
                set.insert(k, v);
            }
            Ok(())
        })
    }

    /// Reset config options to their defaults.
    pub fn reset_config(&self, app: &str, keys: &[&str]) -> Result<(), SimError> {
        self.change_config(app, |_, set| {
            for k in keys {
                set.remove(*k);
            }
            Ok(())
        })
    }

    /// Apply `f` to the set config values; a change of the effective config queues
    /// config-changed.
    fn change_config(
        &self,
        app: &str,
        f: impl FnOnce(&Charm, &mut BTreeMap<String, Value>) -> Result<(), CharmError>,
    ) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        let a = w
            .apps
            .get_mut(app)
            .ok_or_else(|| SimError::UnknownApp(app.into()))?;
        let charm = a
            .charm
            .clone()
            .ok_or_else(|| SimError::UnknownApp(app.into()))?;
        let before = charm.effective_config(&a.config_set);
        let mut set = a.config_set.clone();
        f(&charm, &mut set)?;
        a.config_set = set;
        if charm.effective_config(&a.config_set) != before {
            a.config_version += 1;
        }
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// `juju integrate a b`, each side `app` or `app:endpoint`. Returns the relation id.
    pub fn relate(&self, a: &str, b: &str) -> Result<u32, SimError> {
        let mut w = self.shared.lock();
        let fail = |why: String| SimError::Relate {
            a: a.into(),
            b: b.into(),
            why,
        };
        let ends_of =
            |w: &World, spec: &str| -> Result<Vec<(String, String, String, Role)>, SimError> {
                let (app, ep) = match spec.split_once(':') {
                    Some((x, y)) => (x, Some(y)),
                    None => (spec, None),
                };
                let ap = w
                    .apps
                    .get(app)
                    .ok_or_else(|| SimError::UnknownApp(app.into()))?;
                let eps: Vec<(String, String, String, Role)> = match (&ap.charm, &ap.scripted) {
                    (Some(c), _) => c
                        .endpoints
                        .iter()
                        .filter(|e| e.role != Role::Peer)
                        .map(|e| (app.to_string(), e.name.clone(), e.interface.clone(), e.role))
                        .collect(),
                    (
                        None,
                        Some(Scripted::Played {
                            endpoint,
                            interface,
                            role,
                        }),
                    ) => vec![(app.to_string(), endpoint.clone(), interface.clone(), *role)],
                    (None, Some(Scripted::Postgres(_))) => vec![(
                        app.to_string(),
                        "database".into(),
                        "postgresql_client".into(),
                        Role::Provides,
                    )],
                    (None, None) => vec![],
                };
                Ok(eps
                    .into_iter()
                    .filter(|e| ep.is_none_or(|n| n == e.1))
                    .collect())
            };
        let ea = ends_of(&w, a)?;
        let eb = ends_of(&w, b)?;
        let mut matches = Vec::new();
        for x in &ea {
            for y in &eb {
                if x.2 == y.2 && x.3 != y.3 {
                    matches.push((x.clone(), y.clone()));
                }
            }
        }
        let (x, y) = match matches.len() {
            1 => matches.remove(0),
            0 => return Err(fail("no matching endpoints".into())),
            _ => return Err(fail("ambiguous; name the endpoints".into())),
        };
        let exists = w.relations.values().any(|r| {
            r.life == Life::Alive
                && r.ends.iter().any(|e| e.app == x.0 && e.endpoint == x.1)
                && r.ends.iter().any(|e| e.app == y.0 && e.endpoint == y.1)
        });
        if exists {
            return Err(fail("already related".into()));
        }
        let id = w.next_relation;
        w.next_relation += 1;
        w.relations.insert(
            id,
            Relation {
                id,
                ends: vec![
                    RelEnd {
                        app: x.0.clone(),
                        endpoint: x.1.clone(),
                        role: x.3,
                    },
                    RelEnd {
                        app: y.0.clone(),
                        endpoint: y.1.clone(),
                        role: y.3,
                    },
                ],
                peer: false,
                life: Life::Alive,
                scope: BTreeSet::new(),
                app_bags: BTreeMap::new(),
                unit_bags: BTreeMap::new(),
            },
        );
        let scripted_units: Vec<String> = w
            .units
            .values()
            .filter(|u| u.scripted && (u.app == x.0 || u.app == y.0))
            .map(|u| u.name.clone())
            .collect();
        for u in scripted_units {
            w.enter_scope(id, &u);
        }
        crate::postgres::react(&mut w);
        drop(w);
        self.shared.notify();
        Ok(id)
    }

    /// `juju remove-relation`: every unit departs then runs relation-broken.
    pub fn remove_relation(&self, id: u32) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        let r = w
            .relations
            .get_mut(&id)
            .ok_or(SimError::UnknownRelation(id))?;
        if r.peer {
            return Err(SimError::Relate {
                a: r.key_for(""),
                b: String::new(),
                why: "peer relations cannot be removed".into(),
            });
        }
        if r.life == Life::Alive {
            r.life = Life::Dying;
            r.scope.clear();
        }
        agent::retire_relation_if_done(&mut w, id);
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// Change the fake postgresql's password (new secret revision or new plain fields).
    pub fn postgres_rotate_password(&self, app: &str, password: &str) {
        crate::postgres::rotate_password(&mut self.shared.lock(), app, password);
        self.shared.notify();
    }

    /// Withdraw (`None`) or publish again the fake postgresql's `endpoints`.
    pub fn postgres_set_endpoints(&self, app: &str, endpoints: Option<&str>) {
        crate::postgres::set_endpoints(&mut self.shared.lock(), app, endpoints);
        self.shared.notify();
    }

    /// Queue an action; returns its id. Params are validated against actions.yaml and
    /// defaults inserted, like the controller does.
    pub fn queue_action(
        &self,
        unit: &str,
        name: &str,
        params: impl IntoIterator<Item = (impl Into<String>, impl Into<Value>)>,
    ) -> Result<u64, SimError> {
        let params: BTreeMap<String, Value> = params
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let mut w = self.shared.lock();
        let charm = w
            .apps
            .get(app_of(unit))
            .and_then(|a| a.charm.clone())
            .ok_or_else(|| SimError::UnknownUnit(unit.into()))?;
        if !w.units.contains_key(unit) {
            return Err(SimError::UnknownUnit(unit.into()));
        }
        let params = charm.validate_action(name, &params)?;
        let id = w.next_action;
        w.next_action += 1;
        w.actions.insert(
            id,
            ActionRecord {
                id,
                unit: unit.into(),
                name: name.into(),
                params,
                status: ActionStatus::Pending,
                message: String::new(),
                results: Value::Object(Default::default()),
                logs: Vec::new(),
                stdout: String::new(),
                stderr: String::new(),
                return_code: None,
            },
        );
        if let Some(u) = w.units.get_mut(unit) {
            u.pending_actions.push_back(id);
        }
        drop(w);
        self.shared.notify();
        Ok(id)
    }

    /// Wait for an action to finish.
    pub fn wait_action(&self, id: u64, timeout: Duration) -> Result<ActionResult, SimError> {
        let mut out = None;
        self.run_until_named(&format!("action {id} to finish"), timeout, |m| {
            let a = m.action(id);
            let done = a.as_ref().is_some_and(|a| {
                matches!(a.status, ActionStatus::Completed | ActionStatus::Failed)
            });
            if done {
                out = a;
            }
            done
        })?;
        out.ok_or_else(|| SimError::Timeout {
            what: format!("action {id}"),
            after: timeout,
            dump: String::new(),
        })
    }

    /// `juju run <unit> <action> k=v...` and wait (up to [`Model::action_timeout`]).
    pub fn run_action(
        &self,
        unit: &str,
        name: &str,
        params: impl IntoIterator<Item = (impl Into<String>, impl Into<Value>)>,
    ) -> Result<ActionResult, SimError> {
        let id = self.queue_action(unit, name, params)?;
        self.wait_action(id, self.action_timeout)
    }

    /// An action's record.
    pub fn action(&self, id: u64) -> Option<ActionRecord> {
        self.shared.lock().actions.get(&id).cloned()
    }

    /// `juju resolve <unit>`: retry the failed hook now.
    pub fn resolve(&self, unit: &str) {
        let mut w = self.shared.lock();
        if let Some(f) = w.units.get_mut(unit).and_then(|u| u.error.as_mut()) {
            f.retry_at = Some(Instant::now());
        }
        drop(w);
        self.shared.notify();
    }

    /// Time since the model started (the clock of hook records and statuses).
    pub fn now(&self) -> Duration {
        self.shared.lock().now()
    }

    /// Wait until `pred` holds (checked after model changes, at most every
    /// [`PREDICATE_GAP`], and at least every 100 ms), or time out with a dump.
    pub fn run_until(
        &self,
        timeout: Duration,
        pred: impl FnMut(&Model) -> bool,
    ) -> Result<(), SimError> {
        self.run_until_named("predicate", timeout, pred)
    }

    /// [`Model::run_until`] with a description for the timeout message.
    pub fn run_until_named(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Model) -> bool,
    ) -> Result<(), SimError> {
        let start = Instant::now();
        loop {
            let checked = Instant::now();
            if pred(self) {
                return Ok(());
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(SimError::Timeout {
                    what: what.into(),
                    after: timeout,
                    dump: self.dump(),
                });
            }
            let w = self.shared.lock();
            let wait = (timeout - elapsed).min(Duration::from_millis(100));
            let _ = self.shared.cond.wait_timeout(w, wait);
            // every tool call is a change: without a gap, predicates that read files
            // (logs, /proc) ran hundreds of times a second per waiting test
            let since = checked.elapsed();
            if since < PREDICATE_GAP {
                std::thread::sleep(PREDICATE_GAP - since);
            }
        }
    }

    /// Whether nothing is running or pending anywhere (update-status aside) and no unit is in
    /// error.
    pub fn is_settled(&self) -> bool {
        let w = self.shared.lock();
        let now = Instant::now();
        w.units
            .values()
            .filter(|u| !u.scripted && !u.gone)
            .all(|u| {
                u.running_name.is_none()
                    && u.error.is_none()
                    && u.pending_actions.is_empty()
                    && u.life != Life::Dead
                    && resolver::next(&w, &u.name, now, false) == Next::Idle
            })
    }

    /// Wait until [`Model::is_settled`].
    pub fn settle(&self, timeout: Duration) -> Result<(), SimError> {
        self.run_until_named("the model to settle", timeout, |m| m.is_settled())
    }

    // ----- inspection -----

    /// Units of an application that still exist (not yet torn down), by number.
    pub fn units(&self, app: &str) -> Vec<String> {
        let w = self.shared.lock();
        let mut v: Vec<&Unit> = w
            .units
            .values()
            .filter(|u| u.app == app && !u.gone)
            .collect();
        v.sort_by_key(|u| u.num);
        v.into_iter().map(|u| u.name.clone()).collect()
    }

    /// Whether a unit has been removed completely.
    pub fn unit_gone(&self, unit: &str) -> bool {
        self.shared.lock().units.get(unit).is_none_or(|u| u.gone)
    }

    fn with_unit<T>(&self, unit: &str, f: impl FnOnce(&Unit) -> T) -> Option<T> {
        self.shared.lock().units.get(unit).map(f)
    }

    /// Current workload status.
    pub fn unit_status(&self, unit: &str) -> StatusRecord {
        self.with_unit(unit, |u| u.status.clone())
            .unwrap_or_else(|| StatusRecord {
                status: "unknown".into(),
                message: format!("no unit {unit}"),
                data: BTreeMap::new(),
                at: Duration::ZERO,
                hook: String::new(),
            })
    }

    /// Workload status history, oldest first.
    pub fn status_history(&self, unit: &str) -> Vec<StatusRecord> {
        self.with_unit(unit, |u| u.status_history.clone())
            .unwrap_or_default()
    }

    /// Application status: as set by the leader, else derived from the units.
    pub fn app_status(&self, app: &str) -> StatusRecord {
        app_status_of(&self.shared.lock(), app)
    }

    /// Application status history (as set by the leader).
    pub fn app_status_history(&self, app: &str) -> Vec<StatusRecord> {
        self.shared
            .lock()
            .apps
            .get(app)
            .map(|a| a.status_history.clone())
            .unwrap_or_default()
    }

    /// The unit agent's status.
    pub fn agent_status(&self, unit: &str) -> AgentStatus {
        self.with_unit(unit, |u| u.agent_status.clone())
            .unwrap_or(AgentStatus::Allocating)
    }

    /// Whether the unit is in a hook-error state.
    pub fn in_error(&self, unit: &str) -> bool {
        self.with_unit(unit, |u| u.error.is_some()).unwrap_or(false)
    }

    /// Finished hooks and actions of a unit, oldest first.
    pub fn hooks(&self, unit: &str) -> Vec<HookRecord> {
        self.with_unit(unit, |u| u.hooks.clone())
            .unwrap_or_default()
    }

    /// Names of the finished hooks (and `action:<name>`) of a unit.
    pub fn hook_names(&self, unit: &str) -> Vec<String> {
        self.with_unit(unit, |u| u.hooks.iter().map(|h| h.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Names of the hooks of a unit that committed.
    pub fn committed_hook_names(&self, unit: &str) -> Vec<String> {
        self.with_unit(unit, |u| {
            u.hooks
                .iter()
                .filter(|h| h.committed())
                .map(|h| h.name.clone())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Hooks and actions of a unit that did not commit.
    pub fn failed_hooks(&self, unit: &str) -> Vec<HookRecord> {
        self.hooks(unit)
            .into_iter()
            .filter(|h| !h.committed())
            .collect()
    }

    /// What is wrong with the order of a deployed unit's hooks
    /// (`docs/architecture.md#how-a-hook-runs`); empty when all is well. Checks the committed hooks: `<storage>-storage-attached` for each storage
    /// instance, `install`, at least one `*-relation-created` (the peer relation),
    /// `leader-elected` or `leader-settings-changed`, `config-changed`, `start`; then that every
    /// `relation-joined` is followed, within its relation, by `relation-changed` for the same
    /// unit; and that no peer relation was ever broken.
    pub fn deploy_order_problems(&self, unit: &str) -> Vec<String> {
        let hooks: Vec<HookRecord> = self
            .hooks(unit)
            .into_iter()
            .filter(|h| h.committed() && !h.name.starts_with("action:"))
            .collect();
        let storage: Vec<String> = self
            .with_unit(unit, |u| u.storage.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
        let mut i = 0;
        let mut expect = |ok: &dyn Fn(&str) -> bool, what: &str, i: &mut usize| match names.get(*i)
        {
            Some(n) if ok(n) => *i += 1,
            other => problems.push(format!("hook #{}: expected {what}, got {other:?}", *i)),
        };
        for st in &storage {
            let want = format!("{st}-storage-attached");
            expect(&|n| n == want, &want, &mut i);
        }
        expect(&|n| n == "install", "install", &mut i);
        expect(
            &|n| n.ends_with("-relation-created"),
            "*-relation-created",
            &mut i,
        );
        while names
            .get(i)
            .is_some_and(|n| n.ends_with("-relation-created"))
        {
            i += 1;
        }
        expect(
            &|n| n == "leader-elected" || n == "leader-settings-changed",
            "leader-elected or leader-settings-changed",
            &mut i,
        );
        expect(&|n| n == "config-changed", "config-changed", &mut i);
        expect(&|n| n == "start", "start", &mut i);
        let rel_of = |h: &HookRecord| h.env.get("JUJU_RELATION_ID").cloned();
        let remote = |h: &HookRecord| h.env.get("JUJU_REMOTE_UNIT").cloned().unwrap_or_default();
        for (k, h) in hooks.iter().enumerate() {
            if h.name.ends_with("-relation-joined") {
                let next = hooks[k + 1..].iter().find(|n| rel_of(n) == rel_of(h));
                let ok = next.is_some_and(|n| {
                    n.name.ends_with("-relation-changed") && remote(n) == remote(h)
                });
                if !ok {
                    problems.push(format!(
                        "hook #{k} {} ({}) not followed by relation-changed for it in its relation",
                        h.name,
                        remote(h)
                    ));
                }
            }
        }
        let peer_eps: Vec<String> = self
            .shared
            .lock()
            .relations
            .values()
            .filter(|r| r.peer && r.involves(app_of(unit)))
            .filter_map(|r| r.end_of(app_of(unit)).map(|e| e.endpoint.clone()))
            .collect();
        for ep in peer_eps {
            if names.contains(&format!("{ep}-relation-broken").as_str()) {
                problems.push(format!("peer relation {ep} got relation-broken"));
            }
        }
        problems
    }

    /// The hook or action running on a unit now.
    pub fn running_hook(&self, unit: &str) -> Option<RunningHook> {
        self.with_unit(unit, |u| {
            u.running.as_ref().map(|c| RunningHook {
                name: c.hook_name.clone(),
                context_id: c.id.clone(),
                tool_calls: c.tool_calls.clone(),
            })
        })
        .flatten()
    }

    /// The unit's local agent state (what it has seen).
    pub fn local_state(&self, unit: &str) -> Option<LocalState> {
        self.with_unit(unit, |u| u.local.clone())
    }

    /// Relation id for `app:endpoint` (the first live one).
    pub fn relation_id(&self, spec: &str) -> Option<u32> {
        let (app, ep) = spec.split_once(':')?;
        self.shared
            .lock()
            .relations
            .values()
            .find(|r| {
                r.life != Life::Dead && r.ends.iter().any(|e| e.app == app && e.endpoint == ep)
            })
            .map(|r| r.id)
    }

    /// A relation (model side).
    pub fn relation(&self, id: u32) -> Option<Relation> {
        self.shared.lock().relations.get(&id).cloned()
    }

    /// Current databag of a unit or application in a relation.
    pub fn databag(&self, rel: u32, owner: &str) -> Bag {
        self.shared.lock().bag(rel, owner)
    }

    /// Every committed version of every databag of a relation, oldest first.
    pub fn bag_history(&self, rel: u32) -> Vec<BagChange> {
        self.shared
            .lock()
            .bag_history
            .iter()
            .filter(|c| c.relation == rel)
            .cloned()
            .collect()
    }

    /// juju-log records of a unit.
    pub fn logs(&self, unit: &str) -> Vec<LogRecord> {
        self.shared
            .lock()
            .logs
            .iter()
            .filter(|l| l.unit == unit)
            .cloned()
            .collect()
    }

    /// The unit's committed state-set store.
    pub fn unit_state(&self, unit: &str) -> Data {
        self.with_unit(unit, |u| u.state.clone())
            .unwrap_or_default()
    }

    /// Committed open ports of a unit, as `opened-ports` lists them (`80/tcp`).
    pub fn opened_ports(&self, unit: &str) -> Vec<String> {
        self.with_unit(unit, |u| crate::ports::render(&u.ports, false))
            .unwrap_or_default()
    }

    /// Committed open ports of a unit with their endpoints, as `opened-ports --endpoints`
    /// lists them (`80/tcp (*)`, `9391/tcp (monitoring)`).
    pub fn opened_ports_by_endpoint(&self, unit: &str) -> Vec<String> {
        self.with_unit(unit, |u| crate::ports::render(&u.ports, true))
            .unwrap_or_default()
    }

    /// `application-version-set` value.
    pub fn app_version(&self, app: &str) -> String {
        self.shared
            .lock()
            .apps
            .get(app)
            .map(|a| a.version.clone())
            .unwrap_or_default()
    }

    /// `juju add-secret`: a user secret with `data`; returns its URI (`secret:<id>`).
    pub fn add_user_secret(&self, data: &[(&str, &str)]) -> String {
        let mut w = self.shared.lock();
        let id = w.new_secret_id();
        let data: Data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        w.secrets.insert(
            id.clone(),
            Secret {
                id: id.clone(),
                owner: SecretOwner::Model,
                label: None,
                description: None,
                expire: None,
                rotate: None,
                revisions: vec![data],
                grants: BTreeSet::new(),
                granted_apps: BTreeSet::new(),
                consumers: BTreeMap::new(),
            },
        );
        format!("secret:{id}")
    }

    /// `juju grant-secret <uri> <app>`.
    pub fn grant_user_secret(&self, uri: &str, app: &str) -> Result<(), SimError> {
        self.with_user_secret(uri, |s| {
            s.granted_apps.insert(app.to_string());
        })
    }

    /// `juju update-secret <uri> k=v ...`: a new revision; consumers get `secret-changed`.
    pub fn update_user_secret(&self, uri: &str, data: &[(&str, &str)]) -> Result<(), SimError> {
        let data: Data = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.with_user_secret(uri, |s| s.revisions.push(data))
    }

    /// Applies `f` to the user secret `uri` and wakes the model.
    fn with_user_secret(&self, uri: &str, f: impl FnOnce(&mut Secret)) -> Result<(), SimError> {
        let mut w = self.shared.lock();
        let id = uri.strip_prefix("secret:").unwrap_or(uri);
        let s = w
            .secrets
            .get_mut(id)
            .filter(|s| s.owner == SecretOwner::Model)
            .ok_or_else(|| SimError::UnknownSecret(uri.to_string()))?;
        f(s);
        drop(w);
        self.shared.notify();
        Ok(())
    }

    /// All committed secrets.
    pub fn secrets(&self) -> Vec<Secret> {
        self.shared.lock().secrets.values().cloned().collect()
    }

    fn machine(&self, unit: &str) -> Result<Arc<Machine>, SimError> {
        self.shared
            .machines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(unit)
            .cloned()
            .ok_or_else(|| SimError::UnknownUnit(unit.into()))
    }

    /// Runs `f` on a short-lived thread inside the unit's machine (its mount namespace), e.g.
    /// to remount its volume the way an operator on that machine would.
    pub fn run_in_machine<T: Send>(
        &self,
        unit: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, SimError> {
        Ok(self.machine(unit)?.run_in(f)?)
    }

    /// Read a file as the unit sees it.
    pub fn read_file(&self, unit: &str, path: &str) -> Result<Vec<u8>, SimError> {
        let m = self.machine(unit)?;
        let p = PathBuf::from(path);
        m.run_in(|| std::fs::read(&p))?
            .map_err(io("reading", Path::new(path)))
    }

    /// Read a file as the unit sees it, as text (lossy).
    pub fn read_to_string(&self, unit: &str, path: &str) -> Result<String, SimError> {
        self.read_file(unit, path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Write a file in the unit's view (parents created).
    pub fn write_file(&self, unit: &str, path: &str, data: &[u8]) -> Result<(), SimError> {
        let m = self.machine(unit)?;
        let p = PathBuf::from(path);
        m.run_in(|| {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, data)
        })?
        .map_err(io("writing", Path::new(path)))
    }

    /// Whether a path exists in the unit's view.
    pub fn exists(&self, unit: &str, path: &str) -> bool {
        let Ok(m) = self.machine(unit) else {
            return false;
        };
        let p = PathBuf::from(path);
        m.run_in(|| std::fs::symlink_metadata(&p).is_ok())
            .unwrap_or(false)
    }

    /// Host directory backing the unit's storage location (None when not mounted or tmpfs
    /// per unit).
    pub fn storage_dir(&self, unit: &str) -> Option<PathBuf> {
        let w = self.shared.lock();
        let u = w.units.get(unit)?;
        let a = w.apps.get(&u.app)?;
        if u.storage.is_empty() {
            return None;
        }
        let root = self.storage_root(&u.app);
        match a.volume {
            Volume::Shared | Volume::ReadOnly | Volume::Tmpfs { .. } => Some(root.join("shared")),
            Volume::PerUnit | Volume::FakeShared => Some(root.join(machine::unit_tag(unit))),
            Volume::Missing | Volume::TmpfsPerUnit { .. } => None,
        }
    }

    /// Processes living in the unit's machine.
    pub fn processes(&self, unit: &str) -> Vec<ProcessInfo> {
        self.machine(unit)
            .map(|m| m.processes())
            .unwrap_or_default()
    }

    /// A readable account of the model: per unit its statuses, hooks and last log lines.
    pub fn dump(&self) -> String {
        dump_world(&self.shared.lock())
    }

    // ----- fault injection (see `crate::faults`) -----

    /// Arms `fault` for the hooks and actions of `unit` for which `when` holds (checked
    /// under the model lock as each one's context is prepared, so `when` reads the
    /// [`HookStart`] it is given and never calls back into the model). A tool-call fault
    /// is used up by the first such hook; a checkpoint fault applies to each until all
    /// its checkpoints fired. Returns the fault's id.
    pub fn arm_fault(
        &self,
        unit: &str,
        fault: Fault,
        when: impl Fn(&HookStart) -> bool + Send + Sync + 'static,
    ) -> Result<u64, SimError> {
        let mut w = self.shared.lock();
        if !w.units.contains_key(unit) {
            return Err(SimError::UnknownUnit(unit.into()));
        }
        let id = w.next_fault;
        w.next_fault += 1;
        let dir = self.run_dir.join("faults").join(id.to_string());
        if matches!(fault, Fault::Checkpoint { .. }) {
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        }
        w.faults.push(faults::Armed {
            record: FaultRecord {
                id,
                unit: unit.into(),
                fault,
                done: false,
                hits: Vec::new(),
            },
            when: Arc::new(when),
            dir,
            fired: Vec::new(),
            active_in: None,
        });
        drop(w);
        self.shared.notify();
        Ok(id)
    }

    /// What became of an armed fault.
    pub fn fault(&self, id: u64) -> Option<FaultRecord> {
        let w = self.shared.lock();
        w.faults
            .iter()
            .find(|a| a.record.id == id)
            .map(|a| a.record.clone())
    }

    /// Every fault armed in the model, in order.
    pub fn faults(&self) -> Vec<FaultRecord> {
        let w = self.shared.lock();
        w.faults.iter().map(|a| a.record.clone()).collect()
    }

    /// Withdraws a fault that has not struck yet (a hook it is attached to keeps it).
    pub fn disarm(&self, id: u64) {
        let mut w = self.shared.lock();
        if let Some(a) = w.faults.iter_mut().find(|a| a.record.id == id) {
            a.record.done = true;
        }
    }
}

/// Identity of a new unit.
pub(crate) struct NewUnit<'a> {
    pub name: &'a str,
    pub app: &'a str,
    pub num: u32,
    pub app_index: u32,
    pub machine_id: String,
    pub storage: Vec<StorageAttachment>,
    pub scripted: bool,
}

pub(crate) fn new_unit(w: &World, n: NewUnit<'_>) -> Unit {
    let NewUnit {
        name,
        app,
        num,
        app_index: index,
        machine_id,
        storage,
        scripted,
    } = n;
    let status = StatusRecord {
        status: "waiting".into(),
        message: "waiting for machine".into(),
        data: BTreeMap::new(),
        at: w.now(),
        hook: String::new(),
    };
    Unit {
        name: name.into(),
        app: app.into(),
        num,
        machine_id,
        address: format!("127.0.{}.{}", (index % 250) + 1, (num % 250) + 1),
        life: Life::Alive,
        status: status.clone(),
        status_history: vec![status],
        charm_set_status: false,
        agent_status: AgentStatus::Allocating,
        state: Data::new(),
        ports: Default::default(),
        local: LocalState::default(),
        running: None,
        running_name: None,
        hooks: Vec::new(),
        pending_actions: VecDeque::new(),
        error: None,
        storage,
        scripted,
        gone: false,
    }
}

/// Application status as `status-get --application` and `juju status` show it.
pub fn app_status_of(w: &World, app: &str) -> StatusRecord {
    if let Some(s) = w.apps.get(app).and_then(|a| a.status.clone()) {
        return s;
    }
    let rank = |s: &str| match s {
        "error" => 6,
        "blocked" => 5,
        "maintenance" => 4,
        "waiting" => 3,
        "active" => 2,
        _ => 1,
    };
    w.units
        .values()
        .filter(|u| u.app == app && !u.gone)
        .map(|u| u.status.clone())
        .max_by_key(|s| rank(&s.status))
        .unwrap_or(StatusRecord {
            status: "unknown".into(),
            message: String::new(),
            data: BTreeMap::new(),
            at: Duration::ZERO,
            hook: String::new(),
        })
}

fn dump_world(w: &World) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "=== juju-sim model {} at {:?} ===", w.uuid, w.now());
    for a in w.apps.values() {
        let st = app_status_of(w, &a.name);
        let _ = writeln!(
            s,
            "app {} leader={:?} status={} {:?} version={:?}",
            a.name, a.leader, st.status, st.message, a.version
        );
    }
    for r in w.relations.values() {
        let ends: Vec<String> = r
            .ends
            .iter()
            .map(|e| format!("{}:{}", e.app, e.endpoint))
            .collect();
        let _ = writeln!(
            s,
            "relation {} [{}] {:?} scope={:?}",
            r.id,
            ends.join(" "),
            r.life,
            r.scope
        );
        for (o, b) in r.app_bags.iter().chain(r.unit_bags.iter()) {
            let _ = writeln!(s, "  {o} v{}: {:?}", b.version, b.data);
        }
    }
    for u in w.units.values().filter(|u| !u.scripted) {
        let _ = writeln!(
            s,
            "unit {} {:?} agent={:?} workload={} {:?}",
            u.name, u.life, u.agent_status, u.status.status, u.status.message
        );
        if let Some(name) = &u.running_name {
            let _ = writeln!(s, "  running: {name}");
        }
        for h in &u.hooks {
            let _ = writeln!(
                s,
                "  {:>9.3}s {:<40} {:?} {:>6}ms tools={} {}",
                h.started.as_secs_f64(),
                h.name,
                h.outcome,
                h.duration.as_millis(),
                h.tool_calls.len(),
                h.env
                    .get("JUJU_REMOTE_UNIT")
                    .filter(|x| !x.is_empty())
                    .or(h.env.get("JUJU_REMOTE_APP"))
                    .cloned()
                    .unwrap_or_default()
            );
            if !h.faults.is_empty() {
                let _ = writeln!(s, "      {}", h.faults);
            }
            if !h.committed() && !h.stderr.is_empty() {
                for line in h
                    .stderr
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    let _ = writeln!(s, "      stderr: {line}");
                }
            }
        }
        let logs: Vec<&LogRecord> = w.logs.iter().filter(|l| l.unit == u.name).collect();
        for l in logs
            .iter()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let _ = writeln!(
                s,
                "  log {:>9.3}s {} [{}] {}",
                l.at.as_secs_f64(),
                l.level,
                l.hook,
                l.message
            );
        }
    }
    s
}

impl Drop for Model {
    fn drop(&mut self) {
        let dump_on_panic = self.shared.lock().opts.dump_on_panic;
        if std::thread::panicking() && dump_on_panic {
            eprintln!("{}", self.dump());
        }
        self.shared.lock().shutdown = true;
        self.shared.notify();
        let machines: Vec<Arc<Machine>> = self
            .shared
            .machines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for m in &machines {
            m.kill_all(Duration::from_secs(10));
        }
        let agents: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.agents.lock().unwrap_or_else(|e| e.into_inner()));
        let deadline = Instant::now() + Duration::from_secs(20);
        for h in agents {
            while !h.is_finished() && Instant::now() < deadline {
                for m in &machines {
                    m.kill_all(Duration::from_millis(100));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let servers: Vec<agent::ToolServer> = std::mem::take(
            &mut *self
                .shared
                .servers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
        .into_values()
        .collect();
        drop(servers);
        for m in &machines {
            m.kill_all(Duration::from_secs(5));
        }
        drop(machines);
        self.shared
            .machines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        machine::unmount_under(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
