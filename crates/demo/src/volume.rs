//! What the release volume(s) hold, read on the host: the layout, the size, and how that
//! compares with one copy of the release per unit.
//!
//! Owns: [`Usage`] (bytes, versions kept, copies) and its text. Read-only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The storage location every unit sees (`docs/architecture.md#volume-layout`).
pub const LOCATION: &str = "/var/lib/concourse";

/// The volumes of the application and what they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// `(label, host dir)`: one `shared` volume, or one per unit.
    pub volumes: Vec<(String, PathBuf)>,
    /// Bytes of regular files on all volumes (hard links counted once).
    pub bytes: u64,
    /// Published versions, each with the bytes of its release directory on each volume.
    pub releases: BTreeMap<String, Vec<u64>>,
}

impl Usage {
    /// Reads the volumes: `(label, host dir)` pairs.
    pub fn read(volumes: Vec<(String, PathBuf)>) -> Usage {
        let mut releases: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut bytes = 0;
        for (_, dir) in &volumes {
            bytes += bytes_under(dir);
            for v in published(dir) {
                let b = bytes_under(&dir.join("releases").join(&v));
                releases.entry(v).or_default().push(b);
            }
        }
        Usage {
            volumes,
            bytes,
            releases,
        }
    }

    /// Distinct versions kept on the volumes.
    pub fn versions_kept(&self) -> usize {
        self.releases.len()
    }

    /// Release directories on all volumes together (copies of some release).
    pub fn copies(&self) -> usize {
        self.releases.values().map(Vec::len).sum()
    }

    /// Bytes on the volumes per version kept, as a multiple of the release's size.
    pub fn ratio(&self, release_bytes: u64) -> f64 {
        let kept = self.versions_kept().max(1) as f64;
        self.bytes as f64 / kept / release_bytes.max(1) as f64
    }

    /// The layout for people: the volume's top level with sizes (shared), or one line per
    /// unit's volume; then the size it would take with one copy per unit.
    pub fn describe(
        &self,
        runs: &BTreeMap<String, usize>,
        units: usize,
        release_bytes: u64,
    ) -> Vec<String> {
        let mut out = Vec::new();
        match self.volumes.as_slice() {
            [(_, dir)] if self.volumes[0].0 == "shared" => {
                out.push(format!(
                    "Volume {LOCATION}: one directory on all {units} units, {}",
                    mib(self.bytes)
                ));
                out.extend(shared_layout(dir, runs));
                let without = units as u64 * release_bytes * self.versions_kept().max(1) as u64;
                out.push(format!(
                    "  {units} units x {} release{} = {} without sharing",
                    mib(release_bytes),
                    plural_versions(self.versions_kept()),
                    mib(without)
                ));
            }
            vols => {
                out.push(format!(
                    "Volumes {LOCATION}: one per unit (shared-storage=none), {} in all",
                    mib(self.bytes)
                ));
                for (label, dir) in vols {
                    let vs: Vec<String> = published(dir).into_iter().collect();
                    out.push(format!(
                        "  {label:<15} {:>10}  releases/ {}",
                        mib(bytes_under(dir)),
                        vs.join(" ")
                    ));
                }
            }
        }
        out
    }
}

fn plural_versions(n: usize) -> String {
    if n > 1 {
        format!(" x {n} versions")
    } else {
        String::new()
    }
}

/// The top level of a shared volume: each release with its size and how many units run
/// it, then the other entries.
fn shared_layout(dir: &Path, runs: &BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    for v in published(dir) {
        let n = runs.get(&v).copied().unwrap_or(0);
        let who = match n {
            0 => "previous release, kept for rollback".to_string(),
            1 => "run by 1 unit".to_string(),
            n => format!("run by {n} units"),
        };
        let name = format!("releases/{v}/");
        out.push(format!(
            "  {name:<18} {:>10}  {who}",
            mib(bytes_under(&dir.join("releases").join(&v)))
        ));
    }
    let mut other = Vec::new();
    let entries = std::fs::read_dir(dir).map(|rd| rd.flatten().collect::<Vec<_>>());
    let mut entries = entries.unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        match name.as_str() {
            "releases" => {}
            "downloads" if is_dir && bytes_under(&e.path()) > 0 => {
                // a partial download: an install in progress, or one to resume
                out.push(format!(
                    "  {:<18} {:>10}  partial download",
                    "downloads/",
                    mib(bytes_under(&e.path()))
                ));
            }
            _ => other.push(if is_dir { format!("{name}/") } else { name }),
        }
    }
    if !other.is_empty() {
        out.push(format!("  {}", other.join("  ")));
    }
    out
}

/// Published versions on a volume (`releases/<v>`, not the hidden staging or trash).
pub fn published(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("releases"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes of the regular files under `dir`, hard links counted once.
pub fn bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
            total += md.len();
        }
    }
    total
}

/// `64.2 MiB`, or `12 KiB` under a MiB.
pub fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume_with(releases: &[(&str, usize)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (v, size) in releases {
            let bin = d.path().join("releases").join(v).join("concourse/bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("concourse"), vec![0u8; *size]).unwrap();
        }
        std::fs::create_dir_all(d.path().join("releases/.staging-9.9.9-x-1")).unwrap();
        std::fs::create_dir_all(d.path().join("units/a-0")).unwrap();
        std::fs::write(d.path().join(".installed_version"), "8.0.0").unwrap();
        d
    }

    #[test]
    fn shared_volume_with_two_versions_is_one_copy_each() {
        let d = volume_with(&[("7.14.3", 1000), ("8.0.0", 1000)]);
        let u = Usage::read(vec![("shared".into(), d.path().to_path_buf())]);
        assert_eq!(u.versions_kept(), 2);
        assert_eq!(u.copies(), 2);
        assert_eq!(u.bytes, 2005);
        assert!((u.ratio(1000) - 1.0025).abs() < 1e-9);
        let runs = [("8.0.0".to_string(), 3)].into();
        let text = u.describe(&runs, 3, 1000).join("\n");
        assert!(text.contains("releases/8.0.0/"), "{text}");
        assert!(text.contains("run by 3 units"), "{text}");
        assert!(text.contains("kept for rollback"), "{text}");
        assert!(!text.contains("staging"), "{text}");
        assert!(text.contains(".installed_version"), "{text}");
        assert!(
            text.contains("3 units x 1 KiB release x 2 versions"),
            "{text}"
        );
    }

    #[test]
    fn per_unit_volumes_count_every_copy() {
        let a = volume_with(&[("8.0.0", 1000)]);
        let b = volume_with(&[("8.0.0", 1000)]);
        let u = Usage::read(vec![
            ("a/0".into(), a.path().to_path_buf()),
            ("a/1".into(), b.path().to_path_buf()),
        ]);
        assert_eq!((u.versions_kept(), u.copies()), (1, 2));
        assert!(u.ratio(1000) > 2.0);
        let text = u.describe(&BTreeMap::new(), 2, 1000).join("\n");
        assert!(text.contains("one per unit"), "{text}");
    }
}
