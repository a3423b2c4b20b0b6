//! Pruning: removing published releases no unit runs.
//!
//! Owns: [`prune_releases`].
//! Invariants: runs under the install lock; always keeps the requested versions,
//! `.installed_version` and every version a unit records as running
//! (`units/*/state.json`); unpublishing is one rename to `releases/.trash-*` (after it
//! the version is simply absent), then the tree is deleted.
//! Hazards: a unit whose state is missing or stale may still run a release that looks
//! unused: callers keep what they know to be in use (the previous version, see
//! `docs/architecture.md#upgrade-protocol`).
//! A crash between the rename and the delete leaves a trash dir, removed by the next
//! lock holder.

use std::fs;
use std::time::Duration;

use super::InstallError;
use crate::checkpoint::checkpoint;
use crate::storage_coordinator::{atomic, remove_tree, Backoff, StorageError, Volume};

/// What [`prune_releases`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<String>,
    /// Kept versions with the reason (`requested`, `installed`, `used by <unit>`).
    pub kept: Vec<(String, String)>,
}

/// Removes published releases not in `keep`, under the install lock (waiting at most
/// `wait`). Also always keeps `.installed_version` and every version a unit records as
/// running (`units/*/state.json`). Each removal is a rename to `releases/.trash-*` (an
/// atomic unpublish) followed by the delete.
pub fn prune_releases(
    volume: &Volume,
    keep: &[&str],
    wait: Duration,
    backoff: &Backoff,
) -> Result<PruneReport, InstallError> {
    let lock = match volume.try_lock_install()? {
        Some(l) => l,
        None => volume.lock_install("(pruning)", wait, backoff, |_| {})?,
    };
    let mut kept_for: Vec<(String, String)> = keep
        .iter()
        .map(|v| (v.to_string(), "requested".to_string()))
        .collect();
    if let Some(v) = volume.installed_version()? {
        kept_for.push((v, "installed".into()));
    }
    for (unit, s) in volume.unit_states()? {
        if let Some(v) = s.running_version {
            kept_for.push((v, format!("used by {unit}")));
        }
    }
    let mut report = PruneReport::default();
    for v in volume.published_versions()? {
        if let Some((_, why)) = kept_for.iter().find(|(k, _)| *k == v) {
            report.kept.push((v, why.clone()));
            continue;
        }
        let from = volume.layout().release_dir(&v);
        let trash = volume.layout().trash_dir(&v, std::process::id());
        remove_tree(&trash)?;
        fs::rename(&from, &trash).map_err(|e| StorageError::io("unpublish (rename)", &from, e))?;
        atomic::fsync_dir(&volume.layout().releases_dir())?;
        checkpoint("prune.unpublished");
        remove_tree(&trash)?;
        lock.clear_records(&v)?;
        report.removed.push(v);
    }
    drop(lock);
    Ok(report)
}
