//! What the demo leaves behind: with `--keep DIR`, the volumes, the hook logs and the
//! timeline; after a failure, the hook logs (in DIR or a new temporary directory).
//!
//! Owns the layout of that directory:
//! ```text
//! DIR/timeline.json        every event the demo showed, with its time (s) and act
//! DIR/hooks/<unit>.log     every hook and action of the unit: outcome, juju-log, stderr
//! DIR/model-dump.txt       the simulator's account of the model (statuses, hooks, logs)
//! DIR/volume/              the shared volume (or DIR/volumes/<unit>/ without sharing)
//! ```
//! Must run before the model is dropped (the drop removes the run directory).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use juju_sim::model::Outcome;
use juju_sim::Model;

use crate::observe::Event;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("cannot write {path}; choose another --keep directory")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying the volume {from} to {to} failed: {detail}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        detail: String,
    },
}

fn write(path: &Path, data: &[u8]) -> Result<(), KeepError> {
    let err = |source| KeepError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, data).map_err(|source| KeepError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the hook logs, the model dump and the timeline into `dir`.
pub fn save_logs(
    dir: &Path,
    m: &Model,
    units: &[String],
    timeline: &[Event],
) -> Result<(), KeepError> {
    for u in units {
        let name = format!("{}.log", u.replace('/', "-"));
        write(&dir.join("hooks").join(name), hook_log(m, u).as_bytes())?;
    }
    write(&dir.join("model-dump.txt"), m.dump().as_bytes())?;
    let json = serde_json::to_vec_pretty(timeline).unwrap_or_default();
    write(&dir.join("timeline.json"), &json)
}

/// Copies each volume `(label, host dir)` into `dir` (`volume/`, or `volumes/<label>/`),
/// keeping modes, links and times.
pub fn save_volumes(dir: &Path, volumes: &[(String, PathBuf)]) -> Result<(), KeepError> {
    for (label, from) in volumes {
        let to = if label == "shared" {
            dir.join("volume")
        } else {
            dir.join("volumes").join(label.replace('/', "-"))
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|source| KeepError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let _ = std::fs::remove_dir_all(&to);
        let out = Command::new("cp").arg("-a").arg(from).arg(&to).output();
        let failed = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = failed {
            return Err(KeepError::Copy {
                from: from.clone(),
                to,
                detail,
            });
        }
    }
    Ok(())
}

/// Every hook and action of a unit: when, how long, the outcome, its juju-log lines and
/// its stderr.
pub fn hook_log(m: &Model, unit: &str) -> String {
    let logs = m.logs(unit);
    let mut s = String::new();
    for h in m.hooks(unit) {
        let outcome = match &h.outcome {
            Outcome::Committed => "committed".to_string(),
            Outcome::Failed { exit_code } => match exit_code {
                Some(c) => format!("FAILED with exit code {c}"),
                None => "FAILED (killed)".to_string(),
            },
            Outcome::CommitFailed(e) => format!("COMMIT FAILED: {e}"),
            Outcome::SpawnFailed(e) => format!("NOT STARTED: {e}"),
        };
        let _ = writeln!(
            s,
            "[{:>8.3}s +{:.3}s] {}: {outcome}, {} hook-tool calls",
            h.started.as_secs_f64(),
            h.duration.as_secs_f64(),
            h.name,
            h.tool_calls.len()
        );
        let end = h.started + h.duration;
        for l in logs
            .iter()
            .filter(|l| l.hook == h.name && l.at >= h.started && l.at <= end)
        {
            let _ = writeln!(s, "    {} {}", l.level, l.message);
        }
        for line in h.stderr.lines() {
            let _ = writeln!(s, "    stderr: {line}");
        }
    }
    s
}
