//! The database schema as a release's `concourse migrate` sees it.
//!
//! Owns: the [`Migrator`] interface and its production implementation [`ConcourseMigrate`],
//! which runs an installed release's binary: `concourse migrate --supported-db-version`
//! (the newest migration the release embeds; needs no database), `--current-db-version`
//! and `--migrate-db-to-version=<n>` (up or down), as `atc/atccmd/command.go`
//! (`Migration.Execute`) of concourse/concourse defines them. Invariants: the database
//! settings reach the process only through its environment (`CONCOURSE_POSTGRES_*`),
//! never its argv; the environment is otherwise empty but for `PATH`; errors carry the
//! flags, the exit status and stderr with the password removed. Hazards: a migration
//! waits without limit for the database's migration lock (another web migrating), so every
//! run is bounded ([`QUERY_TIMEOUT`], [`MIGRATE_TIMEOUT`]) and killed past it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound of `--supported-db-version` and `--current-db-version`.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of a migration.
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The `CONCOURSE_POSTGRES_*` variables of the database (secrets: never printed).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DbEnv(pub BTreeMap<String, String>);

impl std::fmt::Debug for DbEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl DbEnv {
    /// `text` without the database password.
    fn redact(&self, text: &str) -> String {
        match self.0.get("CONCOURSE_POSTGRES_PASSWORD") {
            Some(pw) if !pw.is_empty() => text.replace(pw.as_str(), "<password>"),
            _ => text.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot run {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`concourse migrate {flag}` failed ({status}): {stderr}")]
    Failed {
        flag: String,
        status: String,
        stderr: String,
    },
    #[error("`concourse migrate {flag}` printed {output:?}, not a schema version")]
    Output { flag: String, output: String },
    #[error("`concourse migrate {flag}` did not finish within {secs}s and was killed")]
    TimedOut { flag: String, secs: u64 },
}

/// What the charm asks of a release about the database schema.
pub trait Migrator {
    /// The newest schema version the release at `concourse` (its binary) supports.
    fn supported(&self, concourse: &Path) -> Result<u64, MigrateError>;
    /// The database's schema version, as the release at `concourse` reads it.
    fn current(&self, concourse: &Path, db: &DbEnv) -> Result<u64, MigrateError>;
    /// Migrates the database up or down to `version` with the release at `concourse`.
    fn migrate_to(&self, concourse: &Path, db: &DbEnv, version: u64) -> Result<(), MigrateError>;
}

/// Runs the release's own `concourse migrate`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConcourseMigrate;

impl ConcourseMigrate {
    fn run(
        concourse: &Path,
        flag: &str,
        db: &DbEnv,
        timeout: Duration,
    ) -> Result<String, MigrateError> {
        let mut child = Command::new(concourse)
            .args(["migrate", flag])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(&db.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| MigrateError::Spawn {
                path: concourse.to_path_buf(),
                source,
            })?;
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = child.stdout.take().map(|o| drain(Box::new(o)));
        let err = child.stderr.take().map(|e| drain(Box::new(e)));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().map_err(|source| MigrateError::Spawn {
                path: concourse.to_path_buf(),
                source,
            })? {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MigrateError::TimedOut {
                    flag: flag.to_string(),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let joined = |h: Option<std::thread::JoinHandle<String>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        let (stdout, stderr) = (joined(out), joined(err));
        if !status.success() {
            return Err(MigrateError::Failed {
                flag: flag.to_string(),
                status: status.to_string(),
                stderr: db.redact(stderr.trim()),
            });
        }
        Ok(stdout)
    }

    fn version(concourse: &Path, flag: &str, db: &DbEnv) -> Result<u64, MigrateError> {
        let out = Self::run(concourse, flag, db, QUERY_TIMEOUT)?;
        parse_version(&out).ok_or_else(|| MigrateError::Output {
            flag: flag.to_string(),
            output: db.redact(out.trim()),
        })
    }
}

/// The schema version `concourse migrate` printed (`fmt.Println` of an int).
pub fn parse_version(output: &str) -> Option<u64> {
    output.trim().parse().ok()
}

impl Migrator for ConcourseMigrate {
    fn supported(&self, concourse: &Path) -> Result<u64, MigrateError> {
        Self::version(concourse, "--supported-db-version", &DbEnv::default())
    }

    fn current(&self, concourse: &Path, db: &DbEnv) -> Result<u64, MigrateError> {
        Self::version(concourse, "--current-db-version", db)
    }

    fn migrate_to(&self, concourse: &Path, db: &DbEnv, version: u64) -> Result<(), MigrateError> {
        let flag = format!("--migrate-db-to-version={version}");
        Self::run(concourse, &flag, db, MIGRATE_TIMEOUT).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_redaction() {
        assert_eq!(parse_version("1746768931\n"), Some(1_746_768_931));
        assert_eq!(parse_version("error"), None);
        assert_eq!(parse_version(""), None);
        let db = DbEnv(
            [(
                "CONCOURSE_POSTGRES_PASSWORD".to_string(),
                "s3cr3t".to_string(),
            )]
            .into_iter()
            .collect(),
        );
        assert_eq!(db.redact("auth s3cr3t failed"), "auth <password> failed");
        assert!(!format!("{db:?}").contains("s3cr3t"));
    }

    /// The real process path, with a stand-in binary: flags in argv, settings only in the
    /// environment, failures with their stderr.
    #[test]
    fn runs_the_release_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("concourse");
        let script = "#!/bin/sh\ncase \"$2\" in\n--supported-db-version) echo 1746768931 ;;\n\
             --current-db-version) echo \"$CONCOURSE_POSTGRES_HOST\" | grep -q db && echo 1765921815 || { echo \"error: no db $CONCOURSE_POSTGRES_PASSWORD\" >&2; exit 1; } ;;\n\
             *) echo \"$2\" > \"$(dirname \"$0\")/argv\" ;;\nesac\n";
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let m = ConcourseMigrate;
        assert_eq!(m.supported(&bin).unwrap(), 1_746_768_931);
        let mut env = BTreeMap::new();
        env.insert("CONCOURSE_POSTGRES_HOST".to_string(), "db".to_string());
        env.insert(
            "CONCOURSE_POSTGRES_PASSWORD".to_string(),
            "pw-42".to_string(),
        );
        let db = DbEnv(env);
        assert_eq!(m.current(&bin, &db).unwrap(), 1_765_921_815);
        m.migrate_to(&bin, &db, 1_746_768_931).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("argv")).unwrap(),
            "--migrate-db-to-version=1746768931\n"
        );
        let mut other = db.clone();
        other.0.insert("CONCOURSE_POSTGRES_HOST".into(), "x".into());
        let e = m.current(&bin, &other).unwrap_err().to_string();
        assert!(
            e.contains("no db <password>") && !e.contains("pw-42"),
            "{e}"
        );
    }
}
