//! The peer relation as one hook sees it: app databag, own and remote unit databags.
//!
//! Owns: reading the `peers` relation once per hook and writing our changes back, and
//! (`cache`) the members' databags across hooks as the unit agent keeps them.
//! Invariants: remote data is a frozen snapshot for the hook (Juju's rule), so nothing
//! here polls; writes go through `Juju::relation_set`, which skips unchanged keys.

pub mod cache;

use std::collections::{BTreeMap, BTreeSet};

use crate::host::Host;
use crate::juju::{Bag, Databag, FailureKind, Juju, RelationRef, ToolError};

pub const ENDPOINT: &str = "peers";
/// App key: the unit that runs web in `auto` mode.
pub const WEB_UNIT: &str = "web-unit";
/// App key: id of the app-owned secret holding the admin password.
pub const ADMIN_SECRET: &str = "admin-password-secret";
/// Unit key: random nonce also written on the volume (proof of sharing).
pub const NONCE: &str = "volume-nonce";
/// Unit keys published by a web unit (same names as the Python charm).
pub const TSA_HOST: &str = "tsa-host";
pub const TSA_PUBLIC_KEY: &str = "tsa-public-key";
pub const WEB_IP: &str = "web-ip";
/// Unit key published by a worker.
pub const WORKER_PUBLIC_KEY: &str = "worker-public-key";
/// Unit key: the version this unit runs (also read by the Python charm's workers).
pub const CONCOURSE_VERSION: &str = "concourse-version";

/// Snapshot of the peer relation for this hook, with this hook's own writes applied.
/// Writes are buffered and sent with one `relation-set` per bag by `flush`.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub rel: Option<RelationRef>,
    pub app: Databag,
    pub me: Databag,
    /// The databags of the remote members read in this hook (all of them on the leader;
    /// a non-leader reads only those it needs: docs/scale.md#who-reads-what).
    pub others: BTreeMap<String, Databag>,
    /// Every remote member, read or not.
    pub names: Vec<String>,
    /// The members in this unit's own view (`relation-list`); `names` may add planned ones.
    listed: Vec<String>,
    /// Members whose databag this unit may not read yet (planned, not joined).
    unreadable: BTreeSet<String>,
    /// This unit's databag as Juju had it when the hook read it.
    me_read: Databag,
    pending_app: Databag,
    pending_me: Databag,
}

impl Peers {
    /// Reads the relation with every member's databag (an empty snapshot when the
    /// relation does not exist yet): what the leader and the actions see.
    pub fn read(juju: &Juju) -> Result<Peers, ToolError> {
        let mut p = Peers::read_members(juju, true)?;
        let all = p.names.clone();
        p.read_bags(juju, &all)?;
        Ok(p)
    }

    /// Reads the app databag, this unit's and the member names, but no other unit's
    /// databag (see [`Peers::read_bags`]).
    ///
    /// With `planned`, the members are the units Juju plans for the application
    /// (`goal-state`, minus dying ones) together with this unit's own view
    /// (`relation-list`): a unit's local view lags (a leader may run hooks before it has
    /// seen `relation-joined` for every peer), and a leader deciding from that view alone
    /// would think it is alone. Without it, this unit's view alone.
    pub fn read_members(juju: &Juju, planned: bool) -> Result<Peers, ToolError> {
        let Some(rel) = juju.relation_ids(ENDPOINT)?.into_iter().next() else {
            return Ok(Peers::default());
        };
        let app = juju.own_app_bag(&rel)?;
        let me = juju.own_unit_bag(&rel)?;
        let listed: Vec<String> = juju.relation_list(&rel)?;
        let mut names = listed.clone();
        if planned {
            let goal = juju.goal_state()?;
            let dying = |u: &str| goal.units.get(u).is_some_and(|g| g.status == "dying");
            for u in goal.planned_units() {
                if u != juju.unit_name() && !names.contains(&u) {
                    names.push(u);
                }
            }
            names.retain(|u| !dying(u));
        }
        Ok(Peers {
            rel: Some(rel),
            app,
            me_read: me.clone(),
            me,
            names,
            listed,
            ..Peers::default()
        })
    }

    /// The leader's read ([`Peers::read`]) with the copies of earlier hooks
    /// ([`cache`]): a member's databag is read with `relation-get` only when this unit
    /// has no copy of it, which is after every hook Juju ran for that member. Keeps the
    /// copies of the members in this unit's own view for the next hooks.
    pub fn read_kept(juju: &Juju, host: &Host) -> Result<Peers, ToolError> {
        let mut p = Peers::read_members(juju, true)?;
        let Some(rel) = p.rel.as_ref().map(ToString::to_string) else {
            return Ok(p);
        };
        let mut copies = cache::bags(host, &rel);
        copies.retain(|u, _| p.listed.contains(u));
        p.others.extend(copies);
        let all = p.names.clone();
        p.read_bags(juju, &all)?;
        let keep: BTreeMap<String, Databag> = p
            .others
            .iter()
            .filter(|(u, _)| p.listed.contains(u) && !p.unreadable.contains(*u))
            .map(|(u, b)| (u.clone(), b.clone()))
            .collect();
        cache::keep(host, &rel, &keep);
        Ok(p)
    }

    /// Reads the databags of `units` (members not read yet).
    pub fn read_bags(&mut self, juju: &Juju, units: &[String]) -> Result<(), ToolError> {
        let Some(rel) = self.rel.clone() else {
            return Ok(());
        };
        for u in units {
            if self.others.contains_key(u) || !self.names.contains(u) {
                continue;
            }
            // A planned unit that has not joined yet has no databag this unit may read
            // (`permission denied`); any other failure (the agent lost its controller
            // connection) fails the hook: an empty bag would read as a peer without its
            // TSA or key.
            let bag = match juju.relation_get(&rel, &Bag::Unit(u.clone())) {
                Ok(b) => b,
                Err(e) if e.is(FailureKind::PermissionDenied) => {
                    self.unreadable.insert(u.clone());
                    Databag::new()
                }
                Err(e) => return Err(e),
            };
            self.others.insert(u.clone(), bag);
        }
        Ok(())
    }

    /// All current members: this unit and the remote ones.
    pub fn members(&self, me: &str) -> Vec<String> {
        let mut v: Vec<String> = self.names.clone();
        v.push(me.to_string());
        crate::roles::sort_units(&mut v);
        v
    }

    pub fn app_value(&self, key: &str) -> Option<&str> {
        self.app
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The bag of a member (own or remote).
    pub fn bag<'a>(&'a self, me: &str, unit: &str) -> Option<&'a Databag> {
        if unit == me {
            Some(&self.me)
        } else {
            self.others.get(unit)
        }
    }

    /// Merges `data` into the app bag (leader only); sent by `flush`.
    pub fn write_app(&mut self, data: &Databag) {
        merge(&mut self.app, data);
        self.pending_app.extend(data.clone());
    }

    /// Merges `data` into this unit's bag; sent by `flush`.
    pub fn write_me(&mut self, data: &Databag) {
        merge(&mut self.me, data);
        self.pending_me.extend(data.clone());
    }

    /// Whether this hook will change this unit's databag.
    pub fn me_write_pending(&self) -> bool {
        self.pending_me
            .iter()
            .any(|(k, v)| self.me_read.get(k).map_or("", String::as_str) != v.as_str())
    }

    /// Whether this hook will write the app databag.
    pub fn app_write_pending(&self) -> bool {
        !self.pending_app.is_empty()
    }

    /// Sends the buffered writes (Juju commits them when the hook exits 0).
    pub fn flush(&mut self, juju: &Juju) -> Result<(), ToolError> {
        let Some(rel) = &self.rel else {
            return Ok(());
        };
        if !self.pending_app.is_empty() {
            juju.relation_set(rel, true, &self.pending_app)?;
            self.pending_app.clear();
        }
        if !self.pending_me.is_empty() {
            juju.relation_set(rel, false, &self.pending_me)?;
            self.pending_me.clear();
        }
        Ok(())
    }
}

fn merge(bag: &mut Databag, data: &Databag) {
    for (k, v) in data {
        if v.is_empty() {
            bag.remove(k);
        } else {
            bag.insert(k.clone(), v.clone());
        }
    }
}

/// Builds a databag from pairs.
pub fn bag<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Databag {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}
