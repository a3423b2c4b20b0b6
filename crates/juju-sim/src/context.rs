//! The hook context: everything one hook or action sees and buffers (Juju:
//! `worker/uniter/runner/context/context.go` and `cache.go`).
//!
//! Owns: [`HookContext`] (snapshots, caches, buffered writes, tool-call log), its creation
//! ([`prepare`]) and the update of the unit's local state when it commits
//! ([`apply_local_effects`]).
//!
//! Invariants:
//! * the membership view, the config and the triggering versions are snapshots taken when the
//!   context is created;
//! * remote unit databags are read through the unit's cross-hook cache, whose entry for the
//!   hook's remote unit is dropped here for `relation-joined`/`relation-changed`;
//! * remote app databags (and non-member unit bags) are cached for this context only;
//! * transactional writes live only in this struct until `model::commit`.

use crate::model::{app_of, hook_name, Data, HookRecord, Outcome, StatusRecord, ToolCall, World};
use crate::resolver::{HookKind, HookOp, Op};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A buffered secret change.
#[derive(Debug, Clone)]
pub enum SecretOp {
    Add {
        id: String,
        owner: crate::model::SecretOwner,
        label: Option<String>,
        description: Option<String>,
        expire: Option<String>,
        rotate: Option<String>,
        data: Data,
    },
    Set {
        id: String,
        label: Option<String>,
        description: Option<String>,
        expire: Option<String>,
        rotate: Option<String>,
        data: Option<Data>,
    },
    Grant {
        id: String,
        grant: crate::model::Grant,
    },
}

/// The running action's parameters and results.
#[derive(Debug, Clone)]
pub struct ActionRun {
    pub id: u64,
    pub name: String,
    pub params: BTreeMap<String, Value>,
    /// Nested map built by `action-set`.
    pub results: serde_json::Map<String, Value>,
    /// `action-fail` message.
    pub failed: Option<String>,
}

/// Per-unit paths and names needed to build a hook's environment.
#[derive(Debug, Clone)]
pub struct UnitEnv {
    pub charm_dir: String,
    pub tools_dir: String,
    pub socket_address: String,
    pub marker: String,
}

/// One hook or action in flight.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub id: String,
    pub unit: String,
    pub app: String,
    pub op: Op,
    /// Hook name, or the action name for actions.
    pub hook_name: String,
    pub relation: Option<u32>,
    pub remote_unit: Option<String>,
    pub remote_app: Option<String>,
    pub storage: Option<String>,
    /// Version that triggered the hook (databag, leadership, config or secret revision).
    pub trigger_version: Option<u64>,
    pub config: BTreeMap<String, Value>,
    /// Relations in context with the unit's local membership view.
    pub members: BTreeMap<u32, BTreeSet<String>>,
    /// Local copies of the own unit bag and (as leader) own app bag, with this hook's writes.
    pub own_bags: BTreeMap<(u32, String), Data>,
    pub dirty_bags: BTreeSet<(u32, String)>,
    /// Per-hook cache of remote app bags and non-member unit bags.
    pub hook_cache: BTreeMap<(u32, String), Data>,
    /// The commit needs the unit to still be leader (app data or app secrets written).
    pub needs_leadership: bool,
    /// Local copy of the unit state (filled at first access).
    pub state: Option<Data>,
    /// This hook's `open-port`/`close-port` requests ([`crate::ports`]).
    pub ports: crate::ports::Pending,
    pub secret_ops: Vec<SecretOp>,
    /// Secret id → (new pinned revision, new consumer label).
    pub secret_pins: BTreeMap<String, (Option<u32>, Option<String>)>,
    /// Secret ids allocated by `secret-add` in this context.
    pub new_secrets: BTreeSet<String>,
    /// `is-leader` returned false once: it stays false.
    pub minion: bool,
    /// When `is-leader` last returned true in this hook (Juju guarantees 30 s from then).
    pub leader_claimed: Option<Instant>,
    pub status_cache: Option<StatusRecord>,
    pub action: Option<ActionRun>,
    pub tool_calls: Vec<ToolCall>,
    pub started: Instant,
    pub started_at: Duration,
    pub env: BTreeMap<String, String>,
}

impl HookContext {
    /// The hook op, if this is a hook.
    pub fn hook(&self) -> Option<&HookOp> {
        match &self.op {
            Op::Hook(h) => Some(h),
            Op::Action(_) => None,
        }
    }

    /// `<endpoint>:<id>: ` prefix for juju-log in relation hooks.
    pub fn log_prefix(&self, w: &World) -> String {
        match self.relation.and_then(|r| w.relations.get(&r)) {
            Some(r) => format!("{}: ", r.key_for(&self.app)),
            None => String::new(),
        }
    }

    /// A summary of the finished context for the unit's history.
    pub fn record(&self, outcome: Outcome, stdout: String, stderr: String) -> HookRecord {
        let name = match &self.op {
            Op::Hook(_) => self.hook_name.clone(),
            Op::Action(_) => format!("action:{}", self.hook_name),
        };
        let env = self
            .env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("JUJU_RELATION")
                    || k.starts_with("JUJU_REMOTE")
                    || k.starts_with("JUJU_DEPARTING")
                    || k.starts_with("JUJU_STORAGE")
                    || k.starts_with("JUJU_ACTION")
                    || k.starts_with("JUJU_SECRET")
                    || *k == "JUJU_DISPATCH_PATH"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        HookRecord {
            name,
            env,
            context_id: self.id.clone(),
            started: self.started_at,
            duration: self.started.elapsed(),
            outcome,
            tool_calls: self.tool_calls.clone(),
            stdout,
            stderr,
            faults: String::new(),
        }
    }
}

/// Create the context for `op` on `unit` (under the model lock): snapshots, cache
/// invalidation, environment.
pub fn prepare(w: &mut World, unit: &str, op: &Op, uenv: &UnitEnv) -> HookContext {
    let app = app_of(unit).to_string();
    let config = w.config_of(&app);
    let mut members: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    if let Some(u) = w.units.get(unit) {
        for (id, rl) in &u.local.relations {
            members.insert(*id, rl.members.keys().cloned().collect());
        }
    }
    let (mut relation, mut remote_unit, mut remote_app, mut storage, mut action) =
        (None, None, None, None, None);
    let mut trigger_version = None;
    let mut env_extra: Vec<(String, String)> = Vec::new();
    let hook_name = match op {
        Op::Hook(h) => {
            relation = h.relation;
            remote_unit = h.remote_unit.clone();
            remote_app = h.remote_app.clone();
            storage = h.storage.clone();
            let r = h.relation.and_then(|id| w.relations.get(&id));
            let endpoint = r.and_then(|r| r.end_of(&app)).map(|e| e.endpoint.clone());
            let st_name = h
                .storage
                .as_deref()
                .map(|s| s.split('/').next().unwrap_or(s).to_string());
            let name = hook_name(h.kind, endpoint.as_deref(), st_name.as_deref());
            let a = w.apps.get(&app);
            match h.kind {
                HookKind::RelationCreated | HookKind::RelationBroken => {
                    if let Some(id) = h.relation {
                        members.entry(id).or_default();
                    }
                }
                HookKind::RelationJoined => {
                    if let (Some(id), Some(x)) = (h.relation, &h.remote_unit) {
                        members.entry(id).or_default().insert(x.clone());
                    }
                }
                HookKind::RelationDeparted => {
                    if let (Some(id), Some(x)) = (h.relation, &h.remote_unit) {
                        members.entry(id).or_default().remove(x);
                    }
                }
                _ => {}
            }
            if matches!(h.kind, HookKind::RelationBroken) {
                if let Some(id) = h.relation {
                    members.insert(id, BTreeSet::new());
                }
            }
            trigger_version = match h.kind {
                HookKind::RelationChanged => r.map(|r| match &h.remote_unit {
                    Some(x) => r.unit_bags.get(x).map(|b| b.version).unwrap_or(0),
                    None => h
                        .remote_app
                        .as_ref()
                        .and_then(|ra| r.app_bags.get(ra))
                        .map(|b| b.version)
                        .unwrap_or(0),
                }),
                HookKind::LeaderElected | HookKind::LeaderSettingsChanged => {
                    a.map(|a| a.leadership_version)
                }
                HookKind::ConfigChanged => a.map(|a| a.config_version),
                HookKind::Install | HookKind::UpgradeCharm => a.map(|a| a.charm_version),
                HookKind::SecretChanged => h
                    .secret
                    .as_ref()
                    .and_then(|s| w.secrets.get(s))
                    .map(|s| u64::from(s.latest())),
                _ => None,
            };
            // A relation-joined/changed for a remote unit refreshes that unit's cache entry.
            if matches!(h.kind, HookKind::RelationJoined | HookKind::RelationChanged) {
                if let (Some(id), Some(x)) = (h.relation, &h.remote_unit) {
                    if let Some(u) = w.units.get_mut(unit) {
                        u.local.remote_cache.remove(&(id, x.clone()));
                    }
                }
            }
            if let (Some(r), Some(ep)) = (r, endpoint) {
                env_extra.push(("JUJU_RELATION".into(), ep.clone()));
                env_extra.push(("JUJU_RELATION_ID".into(), format!("{ep}:{}", r.id)));
                env_extra.push((
                    "JUJU_REMOTE_UNIT".into(),
                    h.remote_unit.clone().unwrap_or_default(),
                ));
                env_extra.push((
                    "JUJU_REMOTE_APP".into(),
                    h.remote_app.clone().unwrap_or_default(),
                ));
                if let Some(d) = &h.departing {
                    env_extra.push(("JUJU_DEPARTING_UNIT".into(), d.clone()));
                }
            }
            if let Some(sid) = &h.storage {
                if let Some(att) = w
                    .units
                    .get(unit)
                    .and_then(|u| u.storage.iter().find(|s| &s.id == sid))
                {
                    env_extra.push(("JUJU_STORAGE_ID".into(), att.id.clone()));
                    env_extra.push(("JUJU_STORAGE_LOCATION".into(), att.location.clone()));
                    env_extra.push(("JUJU_STORAGE_KIND".into(), att.kind.clone()));
                }
            }
            if let Some(sid) = &h.secret {
                let label = w
                    .secrets
                    .get(sid)
                    .and_then(|s| s.consumers.get(unit))
                    .and_then(|c| c.label.clone())
                    .unwrap_or_default();
                env_extra.push(("JUJU_SECRET_ID".into(), format!("secret:{sid}")));
                env_extra.push(("JUJU_SECRET_LABEL".into(), label));
            }
            name
        }
        Op::Action(id) => {
            let rec = w.actions.get(id);
            let name = rec.map(|a| a.name.clone()).unwrap_or_default();
            action = Some(ActionRun {
                id: *id,
                name: name.clone(),
                params: rec.map(|a| a.params.clone()).unwrap_or_default(),
                results: serde_json::Map::new(),
                failed: None,
            });
            env_extra.push(("JUJU_ACTION_NAME".into(), name.clone()));
            env_extra.push(("JUJU_ACTION_UUID".into(), id.to_string()));
            env_extra.push(("JUJU_ACTION_TAG".into(), format!("action-{id}")));
            name
        }
    };
    let id = w.context_id(unit, &hook_name);
    let (machine_id, model_name, uuid) = (
        w.units
            .get(unit)
            .map(|u| u.machine_id.clone())
            .unwrap_or_default(),
        w.opts.name.clone(),
        w.uuid.clone(),
    );
    let proxy = w.opts.proxy.clone();
    let is_action = matches!(op, Op::Action(_));
    let dispatch_path = if is_action {
        format!("actions/{hook_name}")
    } else {
        format!("hooks/{hook_name}")
    };
    let mut env: BTreeMap<String, String> = [
        ("JUJU_DISPATCH_PATH", dispatch_path),
        (
            "JUJU_HOOK_NAME",
            if is_action {
                String::new()
            } else {
                hook_name.clone()
            },
        ),
        ("JUJU_UNIT_NAME", unit.to_string()),
        ("JUJU_CHARM_DIR", uenv.charm_dir.clone()),
        ("CHARM_DIR", uenv.charm_dir.clone()),
        ("JUJU_CONTEXT_ID", id.clone()),
        ("JUJU_AGENT_SOCKET_ADDRESS", uenv.socket_address.clone()),
        ("JUJU_AGENT_SOCKET_NETWORK", "unix".into()),
        ("JUJU_MODEL_UUID", uuid),
        ("JUJU_MODEL_NAME", model_name),
        ("JUJU_API_ADDRESSES", "127.0.0.1:17070".into()),
        ("JUJU_MACHINE_ID", machine_id),
        ("JUJU_PRINCIPAL_UNIT", String::new()),
        ("JUJU_AVAILABILITY_ZONE", String::new()),
        ("JUJU_VERSION", "3.6.8".into()),
        ("CLOUD_API_VERSION", String::new()),
        ("JUJU_CHARM_HTTP_PROXY", proxy.http),
        ("JUJU_CHARM_HTTPS_PROXY", proxy.https),
        ("JUJU_CHARM_FTP_PROXY", proxy.ftp),
        ("JUJU_CHARM_NO_PROXY", proxy.no_proxy),
        (
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                uenv.tools_dir
            ),
        ),
        ("LANG", "C.UTF-8".into()),
        ("TERM", "tmux-256color".into()),
        ("DEBIAN_FRONTEND", "noninteractive".into()),
        ("APT_LISTCHANGES_FRONTEND", "none".into()),
        ("JUJU_SIM_UNIT", uenv.marker.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    env.extend(env_extra);
    HookContext {
        id,
        unit: unit.to_string(),
        app,
        op: op.clone(),
        hook_name,
        relation,
        remote_unit,
        remote_app,
        storage,
        trigger_version,
        config,
        members,
        own_bags: BTreeMap::new(),
        dirty_bags: BTreeSet::new(),
        hook_cache: BTreeMap::new(),
        needs_leadership: false,
        state: None,
        ports: crate::ports::Pending::default(),
        secret_ops: Vec::new(),
        secret_pins: BTreeMap::new(),
        new_secrets: BTreeSet::new(),
        minion: false,
        leader_claimed: None,
        status_cache: None,
        action,
        tool_calls: Vec::new(),
        started: Instant::now(),
        started_at: w.now(),
        env,
    }
}

/// Update the unit's local state after `ctx` committed (or was resolved without retry).
pub fn apply_local_effects(w: &mut World, unit: &str, ctx: &HookContext) {
    let Op::Hook(h) = &ctx.op else { return };
    let interval = w.opts.update_status_interval;
    let scope_entry = matches!(h.kind, HookKind::RelationCreated);
    let Some(u) = w.units.get_mut(unit) else {
        return;
    };
    let l = &mut u.local;
    let v = ctx.trigger_version;
    match h.kind {
        HookKind::Install => {
            l.installed = true;
            l.charm_seen = v;
        }
        HookKind::UpgradeCharm => {
            l.charm_seen = v;
            l.config_seen = None;
        }
        HookKind::Start => {
            l.started = true;
            l.next_update_status = interval.map(|i| Instant::now() + i);
        }
        HookKind::Stop => l.stopped = true,
        HookKind::Remove => l.removed = true,
        HookKind::ConfigChanged => l.config_seen = v,
        HookKind::UpdateStatus => l.next_update_status = interval.map(|i| Instant::now() + i),
        HookKind::LeaderElected => {
            l.leader_known = true;
            l.leader_settings_seen = v;
        }
        HookKind::LeaderSettingsChanged => {
            l.leader_known = false;
            l.leader_settings_seen = v;
        }
        HookKind::RelationCreated => {
            if let Some(id) = h.relation {
                l.relations.entry(id).or_default();
            }
        }
        HookKind::RelationJoined => {
            if let (Some(id), Some(x)) = (h.relation, &h.remote_unit) {
                let rl = l.relations.entry(id).or_default();
                rl.members.insert(x.clone(), None);
                rl.changed_pending = Some(x.clone());
            }
        }
        HookKind::RelationChanged => {
            if let Some(rl) = h.relation.and_then(|id| l.relations.get_mut(&id)) {
                match &h.remote_unit {
                    Some(x) => {
                        if rl.changed_pending.as_ref() == Some(x) {
                            rl.changed_pending = None;
                        }
                        if let Some(seen) = rl.members.get_mut(x) {
                            *seen = Some(v.unwrap_or(0));
                        }
                    }
                    None => rl.app_version = v.unwrap_or(0),
                }
            }
        }
        HookKind::RelationDeparted => {
            if let (Some(id), Some(x)) = (h.relation, &h.remote_unit) {
                if let Some(rl) = l.relations.get_mut(&id) {
                    rl.members.remove(x);
                    if rl.changed_pending.as_ref() == Some(x) {
                        rl.changed_pending = None;
                    }
                }
                l.remote_cache.remove(&(id, x.clone()));
            }
        }
        HookKind::RelationBroken => {
            if let Some(id) = h.relation {
                l.relations.remove(&id);
                l.remote_cache.retain(|(r, _), _| *r != id);
            }
        }
        HookKind::StorageAttached => {
            if let Some(s) = &h.storage {
                l.storage_attached.insert(s.clone());
            }
        }
        HookKind::StorageDetaching => {
            if let Some(s) = &h.storage {
                l.storage_attached.remove(s);
            }
        }
        HookKind::SecretChanged => {
            if let (Some(s), Some(v)) = (&h.secret, v) {
                l.secret_seen.insert(s.clone(), v as u32);
            }
        }
    }
    if scope_entry {
        if let Some(id) = h.relation {
            w.enter_scope(id, unit);
        }
    }
}
