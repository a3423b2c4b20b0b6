//! Which release this unit runs, and pointing the unit at it.
//!
//! Owns: the unit's pointer `/var/lib/concourse-ci/current` → `<volume>/releases/<v>/concourse`
//! and the choice of version. Invariants: the pointer only ever targets a published
//! release; it moves with one atomic rename.

use std::path::{Path, PathBuf};

use super::peers::{self, Peers};
use super::status::Reports;
use super::CharmError;
use crate::config::CharmConfig;
use crate::fsutil;
use crate::juju::Juju;
use crate::upgrade;

pub const STORAGE: &str = "concourse-data";
pub const LOCAL_DIR: &str = "/var/lib/concourse-ci";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot point {link} at {target}: {source}")]
    Pointer {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReleaseError {
    pub fn retryable(&self) -> bool {
        true
    }
}

/// The release the unit runs after `converge`.
#[derive(Debug, Clone)]
pub struct RunningRelease {
    pub version: String,
    pub current: PathBuf,
    pub changed: bool,
}

pub fn current_link() -> PathBuf {
    Path::new(LOCAL_DIR).join("current")
}

/// The version of a release dir `<volume>/releases/<v>/concourse` (the pointer's target).
pub fn version_of_release_dir(p: &Path) -> Option<String> {
    let v = p.parent()?.file_name()?.to_str()?;
    crate::config::is_valid_version(v).then(|| v.to_string())
}

/// Published versions on the volume, sorted.
pub fn versions_on_volume(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("releases"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| crate::config::is_valid_version(n))
        .collect();
    v.sort();
    v
}

/// The volume root from `storage-get`, if storage is attached.
pub fn volume_root(juju: &Juju) -> Result<Option<PathBuf>, CharmError> {
    let Some(id) = juju.storage_list(STORAGE)?.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(juju.storage_get(&id)?.location))
}

/// Makes sure the unit runs a published release; reports what it waits for otherwise.
pub fn converge(
    juju: &Juju,
    config: &CharmConfig,
    peers: &mut Peers,
    reports: &mut Reports,
) -> Result<Option<RunningRelease>, CharmError> {
    let Some(root) = volume_root(juju)? else {
        reports.blocked(format!(
            "storage {STORAGE} is not attached; deploy with --storage {STORAGE}=<pool>,10G"
        ));
        return Ok(None);
    };
    let app_release = peers.app_value(upgrade::K_RELEASE).map(str::to_string);
    let Some(version) = config.version.clone().or(app_release) else {
        reports.waiting("Waiting for the leader to choose the Concourse version");
        return Ok(None);
    };
    let dir = root.join("releases").join(&version).join("concourse");
    if !dir.join("bin/concourse").is_file() {
        reports.waiting(format!(
            "Waiting for Concourse v{version} to be installed on {}",
            root.display()
        ));
        return Ok(None);
    }
    let link = current_link();
    let changed = fsutil::replace_symlink(&dir, &link).map_err(|source| ReleaseError::Pointer {
        link: link.clone(),
        target: dir.clone(),
        source,
    })?;
    peers.write_me(&peers::bag([(upgrade::K_VERSION, version.as_str())]));
    Ok(Some(RunningRelease {
        version,
        current: link,
        changed,
    }))
}
