//! Which operation a unit agent runs next: a pure function of the model and the unit's local
//! state (Juju's `NextOp`: `worker/uniter/resolver.go`, `worker/uniter/relation/resolver.go`,
//! `worker/uniter/leadership/resolver.go`, `worker/uniter/storage/resolver.go`).
//!
//! Owns: [`HookKind`], [`HookOp`], [`Op`] and [`next`].
//!
//! Priorities, highest first: a unit in error runs pending actions, then retries its failed
//! operation when the backoff has elapsed, nothing else; a dying unit tears down
//! (storage-detaching, relation-departed for every member, relation-broken for non-peer
//! relations, stop, remove); otherwise storage-attached before install, install,
//! relation-created, leadership (leader-elected / leader-settings-changed), secret-changed,
//! actions, later storage-attached, the `start` queued by the first config-changed,
//! upgrade-charm (after a refresh; it queues config-changed), config-changed, relation
//! traffic, update-status.
//!
//! Within a relation (RRES `nextHookForRelation`): pending `changed` after a `joined`, then
//! `departed` for members gone from scope, `broken` (non-peer, when dying), app-data `changed`
//! when the remote app's version differs (never for version 0), `joined` for new members in
//! name order, unit-data `changed` for members whose version differs. Being level-triggered,
//! several commits between two looks give one hook.
//!
//! Across relations the order is by id, or rotated per step with
//! `ModelOptions::vary_relation_order` (Juju's order is effectively random).
//!
//! Invariant: `next` never mutates anything; the agent applies an operation's effect on the
//! local state only when the operation commits.

use crate::model::{app_of, Life, RelLocal, Relation, World};
use std::collections::BTreeSet;
use std::time::Instant;

/// Kinds of hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookKind {
    Install,
    Start,
    Stop,
    Remove,
    ConfigChanged,
    UpdateStatus,
    UpgradeCharm,
    LeaderElected,
    LeaderSettingsChanged,
    RelationCreated,
    RelationJoined,
    RelationChanged,
    RelationDeparted,
    RelationBroken,
    StorageAttached,
    StorageDetaching,
    SecretChanged,
}

/// A hook to run, with what its environment names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOp {
    pub kind: HookKind,
    pub relation: Option<u32>,
    pub remote_unit: Option<String>,
    pub remote_app: Option<String>,
    pub departing: Option<String>,
    /// Storage instance id (`<name>/<n>`).
    pub storage: Option<String>,
    /// Secret id (without `secret:`).
    pub secret: Option<String>,
}

impl HookOp {
    /// A hook without relation/storage/secret.
    pub fn plain(kind: HookKind) -> HookOp {
        HookOp {
            kind,
            relation: None,
            remote_unit: None,
            remote_app: None,
            departing: None,
            storage: None,
            secret: None,
        }
    }
    fn rel(kind: HookKind, rel: u32, remote_unit: Option<&str>, remote_app: &str) -> HookOp {
        HookOp {
            relation: Some(rel),
            remote_unit: remote_unit.map(str::to_string),
            remote_app: Some(remote_app.to_string()),
            ..HookOp::plain(kind)
        }
    }
}

/// An operation of the unit agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Hook(HookOp),
    /// Run the action with this id.
    Action(u64),
}

/// The resolver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Run(Op),
    /// Nothing to do before this instant (a retry or update-status is due then).
    Wait(Instant),
    Idle,
}

fn run(op: HookOp) -> Next {
    Next::Run(Op::Hook(op))
}

/// The next operation for `unit`. With `periodic = false`, update-status is never proposed
/// (used to decide whether the model has settled).
pub fn next(w: &World, unit: &str, now: Instant, periodic: bool) -> Next {
    let Some(u) = w.units.get(unit) else {
        return Next::Idle;
    };
    if u.scripted || u.gone || u.life == Life::Dead {
        return Next::Idle;
    }
    let Some(app) = w.apps.get(&u.app) else {
        return Next::Idle;
    };
    if let Some(failed) = &u.error {
        if let Some(id) = u.pending_actions.front() {
            return Next::Run(Op::Action(*id));
        }
        return match failed.retry_at {
            Some(t) if now >= t => Next::Run(failed.op.clone()),
            Some(t) => Next::Wait(t),
            None => Next::Idle,
        };
    }
    let l = &u.local;
    if u.life == Life::Dying {
        for st in &u.storage {
            if l.storage_attached.contains(&st.id) {
                return run(HookOp {
                    storage: Some(st.id.clone()),
                    ..HookOp::plain(HookKind::StorageDetaching)
                });
            }
        }
        for (id, rl) in &l.relations {
            if let Some(op) = w
                .relations
                .get(id)
                .and_then(|r| relation_op(r, unit, &u.app, rl, true))
            {
                return run(op);
            }
        }
        if l.installed && !l.stopped {
            return run(HookOp::plain(HookKind::Stop));
        }
        if !l.removed {
            return run(HookOp::plain(HookKind::Remove));
        }
        return Next::Idle;
    }
    if !l.installed {
        if let Some(st) = u
            .storage
            .iter()
            .find(|s| !l.storage_attached.contains(&s.id))
        {
            return run(HookOp {
                storage: Some(st.id.clone()),
                ..HookOp::plain(HookKind::StorageAttached)
            });
        }
        return run(HookOp::plain(HookKind::Install));
    }
    for r in w.relations.values() {
        if r.life == Life::Alive && r.involves(&u.app) && !l.relations.contains_key(&r.id) {
            let remote = r.remote_app(&u.app).unwrap_or_default();
            return run(HookOp::rel(HookKind::RelationCreated, r.id, None, remote));
        }
    }
    let is_leader = app.leader.as_deref() == Some(unit);
    if is_leader && !l.leader_known {
        return run(HookOp::plain(HookKind::LeaderElected));
    }
    if !is_leader && (l.leader_known || l.leader_settings_seen != Some(app.leadership_version)) {
        return run(HookOp::plain(HookKind::LeaderSettingsChanged));
    }
    for s in w.secrets.values() {
        let Some(c) = s.consumers.get(unit) else {
            continue;
        };
        let seen = l.secret_seen.get(&s.id).copied().unwrap_or(c.pinned);
        if s.latest() > c.pinned && s.latest() > seen && w.secret_visible_to(s, unit) {
            return run(HookOp {
                secret: Some(s.id.clone()),
                ..HookOp::plain(HookKind::SecretChanged)
            });
        }
    }
    if let Some(id) = u.pending_actions.front() {
        return Next::Run(Op::Action(*id));
    }
    if let Some(st) = u
        .storage
        .iter()
        .find(|s| !l.storage_attached.contains(&s.id))
    {
        return run(HookOp {
            storage: Some(st.id.clone()),
            ..HookOp::plain(HookKind::StorageAttached)
        });
    }
    if l.config_seen.is_some() && !l.started {
        return run(HookOp::plain(HookKind::Start));
    }
    if l.charm_seen.is_some_and(|v| v != app.charm_version) {
        return run(HookOp::plain(HookKind::UpgradeCharm));
    }
    if l.config_seen != Some(app.config_version) {
        return run(HookOp::plain(HookKind::ConfigChanged));
    }
    let mut order: Vec<(&u32, &RelLocal)> = l.relations.iter().collect();
    if w.opts.vary_relation_order && !order.is_empty() {
        // Deterministic per unit and step, different from step to step.
        let k = (u.hooks.len() + u.num as usize * 7) % order.len();
        order.rotate_left(k);
    }
    for (id, rl) in order {
        if let Some(op) = w
            .relations
            .get(id)
            .and_then(|r| relation_op(r, unit, &u.app, rl, false))
        {
            return run(op);
        }
    }
    if periodic && l.started {
        match l.next_update_status {
            Some(t) if now >= t => return run(HookOp::plain(HookKind::UpdateStatus)),
            Some(t) => return Next::Wait(t),
            None => {}
        }
    }
    Next::Idle
}

/// Units in `r`'s scope that `unit` (of `app`) should see as members.
pub fn scope_members(r: &Relation, unit: &str, app: &str) -> BTreeSet<String> {
    r.scope
        .iter()
        .filter(|m| m.as_str() != unit && (app_of(m) == app) == r.peer)
        .cloned()
        .collect()
}

fn relation_op(r: &Relation, unit: &str, app: &str, rl: &RelLocal, dying: bool) -> Option<HookOp> {
    let gone = dying || r.life != Life::Alive;
    let remote_app = r.remote_app(app).unwrap_or_default().to_string();
    if let Some(x) = &rl.changed_pending {
        return Some(HookOp::rel(
            HookKind::RelationChanged,
            r.id,
            Some(x),
            app_of(x),
        ));
    }
    let now_members = if gone {
        BTreeSet::new()
    } else {
        scope_members(r, unit, app)
    };
    if let Some(m) = rl.members.keys().find(|m| !now_members.contains(*m)) {
        let mut op = HookOp::rel(HookKind::RelationDeparted, r.id, Some(m), app_of(m));
        op.departing = Some(if dying { unit.to_string() } else { m.clone() });
        return Some(op);
    }
    if gone {
        if r.peer {
            return None;
        }
        return Some(HookOp::rel(
            HookKind::RelationBroken,
            r.id,
            None,
            &remote_app,
        ));
    }
    let v = r.app_bags.get(&remote_app).map(|b| b.version).unwrap_or(0);
    if v != 0 && v != rl.app_version {
        return Some(HookOp::rel(
            HookKind::RelationChanged,
            r.id,
            None,
            &remote_app,
        ));
    }
    if let Some(m) = now_members.iter().find(|m| !rl.members.contains_key(*m)) {
        return Some(HookOp::rel(
            HookKind::RelationJoined,
            r.id,
            Some(m),
            app_of(m),
        ));
    }
    for (m, seen) in &rl.members {
        let current = r.unit_bags.get(m).map(|b| b.version).unwrap_or(0);
        if let Some(seen) = seen {
            if *seen != current {
                return Some(HookOp::rel(
                    HookKind::RelationChanged,
                    r.id,
                    Some(m),
                    app_of(m),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_world as world;
    use crate::model::{Bag, FailedOp};
    use std::collections::BTreeSet;

    fn hook(w: &World, unit: &str) -> Option<HookOp> {
        match next(w, unit, Instant::now(), false) {
            Next::Run(Op::Hook(h)) => Some(h),
            _ => None,
        }
    }

    #[test]
    fn settled_world_is_idle() {
        let w = world();
        assert_eq!(next(&w, "a/0", Instant::now(), false), Next::Idle);
        assert_eq!(next(&w, "a/1", Instant::now(), false), Next::Idle);
    }

    #[test]
    fn several_commits_give_one_changed() {
        let mut w = world();
        w.relations
            .get_mut(&0)
            .unwrap()
            .unit_bags
            .get_mut("a/1")
            .unwrap()
            .version = 3;
        let h = hook(&w, "a/0").unwrap();
        assert_eq!(h.kind, HookKind::RelationChanged);
        assert_eq!(h.remote_unit.as_deref(), Some("a/1"));
        // Once it has seen version 3, nothing is left.
        w.units
            .get_mut("a/0")
            .unwrap()
            .local
            .relations
            .get_mut(&0)
            .unwrap()
            .members
            .insert("a/1".into(), Some(3));
        assert_eq!(hook(&w, "a/0"), None);
    }

    #[test]
    fn app_data_changed_never_for_version_zero_and_before_joins() {
        let mut w = world();
        w.relations
            .get_mut(&0)
            .unwrap()
            .app_bags
            .insert("a".into(), Bag::default());
        assert_eq!(hook(&w, "a/1"), None);
        let r = w.relations.get_mut(&0).unwrap();
        r.app_bags.get_mut("a").unwrap().version = 1;
        r.scope.insert("a/2".into());
        let h = hook(&w, "a/1").unwrap();
        assert_eq!(
            (h.kind, h.remote_unit.clone()),
            (HookKind::RelationChanged, None)
        );
        assert_eq!(h.remote_app.as_deref(), Some("a"));
    }

    #[test]
    fn joined_then_changed_then_departed() {
        let mut w = world();
        w.relations.get_mut(&0).unwrap().scope.insert("a/2".into());
        let h = hook(&w, "a/0").unwrap();
        assert_eq!(
            (h.kind, h.remote_unit.as_deref()),
            (HookKind::RelationJoined, Some("a/2"))
        );
        let rl = w
            .units
            .get_mut("a/0")
            .unwrap()
            .local
            .relations
            .get_mut(&0)
            .unwrap();
        rl.members.insert("a/2".into(), None);
        rl.changed_pending = Some("a/2".into());
        // Even if a/2 already left scope, the pending changed comes first, then departed.
        w.relations.get_mut(&0).unwrap().scope.remove("a/2");
        let h = hook(&w, "a/0").unwrap();
        assert_eq!(
            (h.kind, h.remote_unit.as_deref()),
            (HookKind::RelationChanged, Some("a/2"))
        );
        w.units
            .get_mut("a/0")
            .unwrap()
            .local
            .relations
            .get_mut(&0)
            .unwrap()
            .changed_pending = None;
        let h = hook(&w, "a/0").unwrap();
        assert_eq!(h.kind, HookKind::RelationDeparted);
        assert_eq!(h.departing.as_deref(), Some("a/2"));
    }

    #[test]
    fn dying_unit_never_breaks_a_peer_relation() {
        let mut w = world();
        w.units.get_mut("a/1").unwrap().life = Life::Dying;
        let h = hook(&w, "a/1").unwrap();
        assert_eq!(h.kind, HookKind::RelationDeparted);
        assert_eq!(h.departing.as_deref(), Some("a/1"));
        w.units
            .get_mut("a/1")
            .unwrap()
            .local
            .relations
            .get_mut(&0)
            .unwrap()
            .members
            .clear();
        assert_eq!(hook(&w, "a/1").unwrap().kind, HookKind::Stop);
    }

    #[test]
    fn error_state_runs_actions_then_waits_for_retry() {
        let mut w = world();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let failed = Op::Hook(HookOp::plain(HookKind::ConfigChanged));
        let u = w.units.get_mut("a/1").unwrap();
        u.error = Some(FailedOp {
            op: failed.clone(),
            hook: "config-changed".into(),
            attempts: 1,
            retry_at: Some(later),
        });
        u.pending_actions.push_back(7);
        w.relations
            .get_mut(&0)
            .unwrap()
            .unit_bags
            .get_mut("a/0")
            .unwrap()
            .version = 2;
        assert_eq!(
            next(&w, "a/1", Instant::now(), true),
            Next::Run(Op::Action(7))
        );
        w.units.get_mut("a/1").unwrap().pending_actions.clear();
        assert_eq!(next(&w, "a/1", Instant::now(), true), Next::Wait(later));
        assert_eq!(next(&w, "a/1", later, true), Next::Run(failed));
    }

    #[test]
    fn relation_order_varies_when_asked() {
        let mut w = world();
        let mut r1 = w.relations[&0].clone();
        r1.id = 1;
        w.relations.insert(1, r1);
        for u in ["a/0", "a/1"] {
            let l = &mut w.units.get_mut(u).unwrap().local;
            let rl = l.relations[&0].clone();
            l.relations.insert(1, rl);
        }
        for r in w.relations.values_mut() {
            r.unit_bags.get_mut("a/1").unwrap().version = 2;
        }
        assert_eq!(hook(&w, "a/0").unwrap().relation, Some(0));
        w.opts.vary_relation_order = true;
        let mut seen = BTreeSet::new();
        for n in 0..4 {
            let u = w.units.get_mut("a/0").unwrap();
            u.hooks = vec![sample_record(); n];
            seen.insert(hook(&w, "a/0").unwrap().relation);
        }
        assert_eq!(seen.len(), 2, "both relations come first at some step");
    }

    fn sample_record() -> crate::model::HookRecord {
        crate::model::HookRecord {
            name: String::new(),
            env: Default::default(),
            context_id: String::new(),
            started: Default::default(),
            duration: Default::default(),
            outcome: crate::model::Outcome::Committed,
            tool_calls: vec![],
            stdout: String::new(),
            stderr: String::new(),
            faults: String::new(),
        }
    }

    #[test]
    fn leadership_change_and_priorities() {
        let mut w = world();
        let a = w.apps.get_mut("a").unwrap();
        a.leader = Some("a/1".into());
        a.leadership_version = 2;
        a.config_version = 2;
        assert_eq!(hook(&w, "a/1").unwrap().kind, HookKind::LeaderElected);
        assert_eq!(
            hook(&w, "a/0").unwrap().kind,
            HookKind::LeaderSettingsChanged
        );
        // Actions come after leadership but before config-changed.
        w.units.get_mut("a/0").unwrap().pending_actions.push_back(1);
        let l = &mut w.units.get_mut("a/0").unwrap().local;
        l.leader_known = false;
        l.leader_settings_seen = Some(2);
        assert_eq!(
            next(&w, "a/0", Instant::now(), false),
            Next::Run(Op::Action(1))
        );
        w.units.get_mut("a/0").unwrap().pending_actions.clear();
        assert_eq!(hook(&w, "a/0").unwrap().kind, HookKind::ConfigChanged);
    }
}
