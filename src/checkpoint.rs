//! Named crash checkpoints: points where a test can make the process park, so that it
//! can be killed exactly there instead of at a time guessed by polling.
//!
//! `CONCOURSE_CI_CHECKPOINT=<name>[,<name>…]@<dir>` (for tests only; never set by the
//! charm or by Juju): when the process reaches a listed checkpoint, it creates
//! `<dir>/<name>` exclusively, writes its pid and a newline into it, and parks (sleeps
//! until it is killed). Each checkpoint fires once per directory: when `<dir>/<name>`
//! already exists the process passes, so a retried hook, or a second process started
//! with the same environment, runs through. A test therefore starts the process with
//! the variable set, waits for `<dir>/<name>` to hold a pid, kills that pid, and checks
//! what a crash at that point leaves.
//!
//! Owns: the variable (read here and nowhere else, once per process) and [`NAMES`], the
//! list of checkpoints with what holds when each fires.
//! Invariants: without the variable (production) [`checkpoint`] does nothing; a
//! malformed value or an unknown name is logged and ignored, never fatal.
//! Hazards: a parked process holds whatever it held (the install lock, a hook's Juju
//! context) until it is killed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the checkpoints to park at.
pub const ENV: &str = "CONCOURSE_CI_CHECKPOINT";

/// Every checkpoint, with what holds when it fires.
pub const NAMES: &[(&str, &str)] = &[
    (
        "install.downloading",
        "the install lock is held and at least half of the tarball (the first chunk when \
         its size is unknown) is in downloads/<file>.partial",
    ),
    (
        "install.downloaded",
        "the whole tarball is downloaded and unpacked into the staging dir; its digests \
         are not compared yet",
    ),
    (
        "install.staged",
        "the tarball verified, the staging tree and its MANIFEST are fsynced; the \
         publishing rename is next",
    ),
    (
        "install.published",
        "releases/<version> is published; .installed_version, the partial download and \
         the progress marker are not updated yet",
    ),
    (
        "prune.unpublished",
        "a pruned release is renamed to releases/.trash-*; it is not deleted yet",
    ),
];

/// What the variable asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    names: Vec<String>,
    dir: PathBuf,
}

/// Parses `<name>[,<name>…]@<dir>`; unknown names are dropped with a warning.
fn parse(value: &str) -> Option<Plan> {
    let Some((names, dir)) = value.split_once('@').filter(|(_, d)| !d.is_empty()) else {
        tracing::warn!("ignoring {ENV}={value:?}: expected <name>[,<name>…]@<dir>");
        return None;
    };
    let names: Vec<String> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .filter(|n| {
            let known = NAMES.iter().any(|(k, _)| k == n);
            if !known {
                tracing::warn!("ignoring unknown checkpoint {n:?} in {ENV}");
            }
            known
        })
        .map(str::to_string)
        .collect();
    Some(Plan {
        names,
        dir: PathBuf::from(dir),
    })
}

/// The plan of this process, read from the environment once.
fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        // The only read of this variable.
        #[allow(clippy::disallowed_methods)]
        let value = std::env::var(ENV).ok()?;
        parse(&value)
    })
    .as_ref()
}

/// Parks the process here if the checkpoint `name` is asked for and has not fired yet
/// (see the module docs); otherwise returns at once.
pub fn checkpoint(name: &str) {
    if let Some(plan) = plan() {
        if plan.names.iter().any(|n| n == name) && claim(&plan.dir, name) {
            park();
        }
    }
}

/// Creates `<dir>/<name>` holding this pid; `false` when it already exists (fired
/// before) or cannot be created (logged).
fn claim(dir: &Path, name: &str) -> bool {
    let path = dir.join(name);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            f.sync_all()
        });
    match created {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            tracing::warn!("checkpoint {name}: cannot create {}: {e}", path.display());
            false
        }
    }
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_directory() {
        assert_eq!(
            parse("install.staged, prune.unpublished@/tmp/x@y"),
            Some(Plan {
                names: vec!["install.staged".into(), "prune.unpublished".into()],
                dir: PathBuf::from("/tmp/x@y"),
            })
        );
        let p = parse("install.staged,no.such.point@/d").unwrap();
        assert_eq!(p.names, vec!["install.staged"], "unknown names dropped");
        assert_eq!(parse("install.staged"), None, "no directory");
        assert_eq!(parse("install.staged@"), None);
    }

    #[test]
    fn names_are_unique_and_documented() {
        for (i, (n, what)) in NAMES.iter().enumerate() {
            assert!(!what.is_empty(), "{n}");
            assert!(!n.contains(['@', ',', '/']), "{n}");
            assert!(NAMES[i + 1..].iter().all(|(m, _)| m != n), "duplicate {n}");
        }
    }

    #[test]
    fn a_checkpoint_fires_once_per_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(claim(d.path(), "install.staged"));
        let pid = std::fs::read_to_string(d.path().join("install.staged")).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()));
        assert!(!claim(d.path(), "install.staged"), "already fired: pass");
        assert!(!claim(&d.path().join("missing"), "install.staged"));
    }
}
