//! The members' databags across hooks, kept the way the unit agent keeps its own copy.
//!
//! Owns: `/var/lib/concourse-ci/peer-bags.json` (0600): the peer relation's id and, per
//! remote member, the databag this unit last read. Juju's unit agent caches every remote
//! unit's databag across hooks and drops a member's entry only when it creates the
//! context of a `relation-joined`, `-changed` or `-departed` hook for that member
//! (`internal/worker/uniter/runner/context/cache.go` and `contextfactory.go` in
//! juju/juju; docs/architecture.md#how-a-hook-runs): in any other hook `relation-get`
//! answers from that copy. This cache follows the same rule, dropping the member's
//! entry before the hook does anything else ([`invalidate`]), so what it answers is
//! what `relation-get` would: the databag as of the last hook Juju ran for that member,
//! whose newer commits each bring another such hook. The leader, which reads every
//! member's databag, reads only the hook's own member and those it has no copy of.
//!
//! Invariants: an entry is only ever a databag read with `relation-get` (never one this
//! unit wrote, never a planned member's that could not be read); a hook for a member
//! drops its entry first, and a hook that cannot drop it fails (Juju retries it); a
//! copy that cannot be written is removed, so no entry outlives a newer read. The
//! whole copy goes with the hooks after which the agent may have restarted or the
//! charm changed (install, start, upgrade-charm) and when leadership arrives.
//! Hazards: the agent keeps its copy in memory and refetches after a restart; this one
//! survives it, which only matters for data no hook was run for yet (and will be).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::super::release;
use crate::host::Host;
use crate::juju::event::RelationHook;
use crate::juju::{Databag, Event, Juju};

/// The copy (a machine path).
pub fn path() -> PathBuf {
    Path::new(release::LOCAL_DIR).join("peer-bags.json")
}

/// Why the copy could not be brought in line with the hook.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot drop {unit}'s databag from {path}; check the unit's disk")]
    Invalidate {
        unit: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Copy {
    /// The charm build that wrote it.
    build: String,
    /// The peer relation (`peers:N`).
    relation: String,
    bags: BTreeMap<String, Databag>,
}

fn load(host: &Host) -> Option<Copy> {
    let c: Copy = serde_json::from_slice(&std::fs::read(host.paths.local(path())).ok()?).ok()?;
    (c.build == env!("CARGO_PKG_VERSION")).then_some(c)
}

/// First thing in every hook: drops what the agent drops when it creates this hook's
/// context (the hook's member on the peer relation; everything after a restart, a new
/// charm or a new leadership).
pub fn invalidate(juju: &Juju, host: &Host) -> Result<(), CacheError> {
    let ctx = juju.context();
    let file = host.paths.local(path());
    let fail = |unit: &str| {
        let (unit, path) = (unit.to_string(), file.clone());
        move |source| CacheError::Invalidate { unit, path, source }
    };
    let member = match (&ctx.event, &ctx.relation) {
        (Event::Install | Event::Start | Event::UpgradeCharm | Event::LeaderElected, _) => {
            return remove(&file).map_err(fail("every member"));
        }
        (Event::Relation { endpoint, kind }, Some(rel)) if endpoint == super::ENDPOINT => {
            match kind {
                RelationHook::Created | RelationHook::Broken => {
                    return remove(&file).map_err(fail("every member"))
                }
                _ => rel.remote_unit.as_deref(),
            }
        }
        _ => None,
    };
    let Some(member) = member else {
        return Ok(());
    };
    let Some(mut copy) = load(host) else {
        return remove(&file).map_err(fail(member));
    };
    if copy.bags.remove(member).is_none() {
        return Ok(());
    }
    write(&file, &copy)
        .or_else(|_| remove(&file))
        .map_err(fail(member))
}

fn remove(file: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write(file: &Path, copy: &Copy) -> std::io::Result<()> {
    let text = serde_json::to_vec(copy).map_err(std::io::Error::other)?;
    crate::fsutil::write_if_changed(file, &text, 0o600, None).map(drop)
}

/// The copies of the members' databags of relation `rel` (`peers:N`).
pub fn bags(host: &Host, rel: &str) -> BTreeMap<String, Databag> {
    load(host)
        .filter(|c| c.relation == rel)
        .map(|c| c.bags)
        .unwrap_or_default()
}

/// Keeps `bags` (read with `relation-get` in this hook, or copies still valid) as the
/// copy of relation `rel`. Best effort: a copy that cannot be written is removed, and
/// without one the next hook reads every databag.
pub fn keep(host: &Host, rel: &str, bags: &BTreeMap<String, Databag>) {
    let file = host.paths.local(path());
    let copy = Copy {
        build: env!("CARGO_PKG_VERSION").to_string(),
        relation: rel.to_string(),
        bags: bags.clone(),
    };
    // write_if_changed: an unchanged copy (the same bytes) is not written again
    if let Err(e) = write(&file, &copy) {
        warn!(
            "cannot keep the members' databags in {}: {e}",
            file.display()
        );
        if let Err(e) = remove(&file) {
            warn!("cannot remove {}: {e}", file.display());
        }
    }
}
