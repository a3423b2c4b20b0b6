//! The Concourse web role: keys, env file, systemd unit, service lifecycle.
//!
//! Owns: `/var/lib/concourse-web` (keys, owned by user `concourse`), `/etc/concourse/web.env`
//! (0600 root: database password and admin password live only here) and
//! `concourse-server.service`. Invariants: keys are generated once and never rotated by a
//! reconcile; the service restarts only when its unit file (beyond stop settings), env
//! file or release changed; new worker keys are applied with a reload (SIGHUP), never a
//! restart.
//! Hazards: never log env values; the env file is the only place secrets are written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{CharmConfig, Secret};
use crate::fsutil::{self, Owner};
use crate::postgres::DbInfo;
use crate::service::{render_env, ServiceError, Systemctl, UnitSpec};

pub const SERVICE: &str = "concourse-server";
pub const HOME: &str = "/var/lib/concourse-web";
pub const ENV_FILE: &str = "/etc/concourse/web.env";
pub const USER: &str = "concourse";
pub const TSA_PORT: u16 = 2222;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot create the {USER} system user: {0}; check useradd on the unit")]
    User(String),
    #[error("cannot generate {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Paths of the web keys.
pub fn keys_dir() -> PathBuf {
    Path::new(HOME).join("keys")
}
pub fn tsa_host_key() -> PathBuf {
    keys_dir().join("tsa_host_key")
}
pub fn session_signing_key() -> PathBuf {
    keys_dir().join("session_signing_key")
}
pub fn authorized_worker_keys() -> PathBuf {
    keys_dir().join("authorized_worker_keys")
}

/// Everything the web env file is made of.
pub struct WebInputs<'a> {
    pub config: &'a CharmConfig,
    pub external_url: &'a str,
    pub db: &'a DbInfo,
    pub admin_password: &'a Secret,
}

/// The web env file's variables.
pub fn env(i: &WebInputs) -> BTreeMap<String, String> {
    let c = i.config;
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    set("CONCOURSE_BIND_PORT", c.web_port.to_string());
    set("CONCOURSE_LOG_LEVEL", c.log_level.as_str().into());
    set("CONCOURSE_EXTERNAL_URL", i.external_url.into());
    set("CONCOURSE_TSA_BIND_PORT", TSA_PORT.to_string());
    set(
        "CONCOURSE_TSA_HOST_KEY",
        tsa_host_key().display().to_string(),
    );
    set(
        "CONCOURSE_TSA_AUTHORIZED_KEYS",
        authorized_worker_keys().display().to_string(),
    );
    set(
        "CONCOURSE_SESSION_SIGNING_KEY",
        session_signing_key().display().to_string(),
    );
    set("CONCOURSE_POSTGRES_HOST", i.db.host.clone());
    set("CONCOURSE_POSTGRES_PORT", i.db.port.to_string());
    set("CONCOURSE_POSTGRES_DATABASE", i.db.database.clone());
    set("CONCOURSE_POSTGRES_USER", i.db.user.clone());
    set("CONCOURSE_POSTGRES_PASSWORD", i.db.password.expose().into());
    set(
        "CONCOURSE_ADD_LOCAL_USER",
        format!("{}:{}", c.initial_admin_username, i.admin_password.expose()),
    );
    set(
        "CONCOURSE_MAIN_TEAM_LOCAL_USER",
        c.initial_admin_username.clone(),
    );
    m
}

/// The web systemd unit, running the release behind `current` (the unit's pointer).
pub fn unit(config: &CharmConfig, current: &Path) -> UnitSpec {
    let mut extra = vec![
        ("Restart".to_string(), "on-failure".to_string()),
        ("RestartSec".to_string(), "5".to_string()),
        ("LimitNOFILE".to_string(), "65536".to_string()),
    ];
    if config.web_port < 1024 {
        extra.push(("AmbientCapabilities".into(), "CAP_NET_BIND_SERVICE".into()));
    }
    UnitSpec {
        name: SERVICE.into(),
        description: "Concourse CI web (ATC and TSA)".into(),
        exec_start: format!("{}/bin/concourse web", current.display()),
        exec_reload: Some("/bin/kill -HUP $MAINPID".into()),
        user: USER.into(),
        group: USER.into(),
        working_dir: PathBuf::from(HOME),
        env_files: vec![PathBuf::from(ENV_FILE)],
        kill_signal: None,
        kill_mode: None,
        timeout_stop: Some(Duration::from_secs(90)),
        extra,
    }
}

/// `authorized_worker_keys` content: valid-looking public keys, sorted, unique.
pub fn authorized_keys_text<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = keys
        .into_iter()
        .map(str::trim)
        .filter(|k| is_public_key(k))
        .collect();
    v.sort_unstable();
    v.dedup();
    v.iter().map(|k| format!("{k}\n")).collect()
}

/// One line of `ssh-rsa|ssh-ed25519|ecdsa-… AAAA… [comment]` without control characters.
pub fn is_public_key(k: &str) -> bool {
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    (kind.starts_with("ssh-") || kind.starts_with("ecdsa-"))
        && body.starts_with("AAAA")
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
        && !k.contains(['\n', '\r', '\0'])
}

/// Creates the `concourse` system user if missing; returns its (uid, gid).
pub fn ensure_user() -> Result<Owner, WebError> {
    if let Some(o) = lookup_user(USER) {
        return Ok(o);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--shell",
            "/usr/sbin/nologin",
            "--home-dir",
            HOME,
            "--user-group",
            USER,
        ])
        .output()
        .map_err(|e| WebError::User(e.to_string()))?;
    if !out.status.success() && lookup_user(USER).is_none() {
        return Err(WebError::User(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    lookup_user(USER).ok_or_else(|| WebError::User("user not found after useradd".into()))
}

/// (uid, gid) of a user from /etc/passwd.
pub fn lookup_user(name: &str) -> Option<Owner> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || f[0] != name {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?))
    })
}

/// Generates a key with the release's `concourse generate-key` unless it exists.
/// The private key is written 0600 owned by `owner`; `ssh` keys also get `<path>.pub`.
pub fn ensure_key(
    concourse: &Path,
    kind: &str,
    path: &Path,
    owner: Owner,
) -> Result<bool, WebError> {
    let key_err = |why: String| WebError::Key {
        path: path.to_path_buf(),
        why,
    };
    let have_pub = kind != "ssh" || pub_path(path).exists();
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) && have_pub {
        return Ok(false);
    }
    let dir = path
        .parent()
        .ok_or_else(|| key_err("no parent directory".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| key_err(e.to_string()))?;
    std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1))
        .map_err(|e| key_err(e.to_string()))?;
    let staging = tempfile::Builder::new()
        .prefix(".keygen")
        .tempdir_in(dir)
        .map_err(|e| key_err(e.to_string()))?;
    let tmp = staging.path().join("key");
    let out = Command::new(concourse)
        .args(["generate-key", "-t", kind, "-f"])
        .arg(&tmp)
        .output()
        .map_err(|e| key_err(format!("cannot run {}: {e}", concourse.display())))?;
    if !out.status.success() || !tmp.exists() {
        return Err(key_err(format!(
            "{} generate-key failed: {}",
            concourse.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let fix = |p: &Path, mode: u32| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(p, Some(owner.0), Some(owner.1))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    };
    fix(&tmp, 0o600).map_err(|e| key_err(e.to_string()))?;
    if kind == "ssh" {
        fix(&pub_path(&tmp), 0o644).map_err(|e| key_err(e.to_string()))?;
        std::fs::rename(pub_path(&tmp), pub_path(path)).map_err(|e| key_err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| key_err(e.to_string()))?;
    Ok(true)
}

/// `<path>.pub`.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Reads a public key file (first line, trimmed), if valid.
pub fn read_public_key(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().next()?.trim().to_string();
    is_public_key(&line).then_some(line)
}

/// What applying the web role did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub started: bool,
    pub restarted: bool,
    pub reloaded: bool,
}

/// Writes env file, authorized keys and unit, then starts, restarts or reloads as needed.
/// `release_changed` is true when the unit's pointer moved to another release.
pub fn apply(
    env_vars: &BTreeMap<String, String>,
    authorized_keys: &str,
    spec: &UnitSpec,
    owner: Owner,
    release_changed: bool,
) -> Result<Applied, WebError> {
    let write = |path: PathBuf, content: &[u8], mode: u32, own: Option<Owner>| {
        fsutil::write_if_changed(&path, content, mode, own)
            .map_err(|source| WebError::Write { path, source })
    };
    let env_changed = write(
        PathBuf::from(ENV_FILE),
        render_env(env_vars).as_bytes(),
        0o600,
        Some((0, 0)),
    )?;
    let keys_changed = write(
        authorized_worker_keys(),
        authorized_keys.as_bytes(),
        0o644,
        Some(owner),
    )?;
    let unit_change = spec.install()?;
    let unit_changed = unit_change.needs_restart();
    let sys = Systemctl;
    if unit_change.written() {
        sys.daemon_reload()?;
        sys.enable(SERVICE)?;
    }
    let mut applied = Applied::default();
    if !sys.is_active(SERVICE) {
        sys.start(SERVICE)?;
        applied.started = true;
    } else if env_changed || unit_changed || release_changed {
        sys.restart(SERVICE)?;
        applied.restarted = true;
    } else if keys_changed {
        sys.reload(SERVICE)?;
        applied.reloaded = true;
    }
    Ok(applied)
}

/// Stops and disables the web service (unit removal, role change).
pub fn remove() -> Result<(), WebError> {
    let sys = Systemctl;
    if sys.is_active(SERVICE) {
        sys.stop(SERVICE)?;
    }
    let path = Path::new(crate::service::UNIT_DIR).join(format!("{SERVICE}.service"));
    if path.exists() {
        let _ = sys.disable(SERVICE);
        let _ = std::fs::remove_file(&path);
        sys.daemon_reload()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CharmConfig;

    fn config(port: i64) -> CharmConfig {
        let mut m = serde_json::Map::new();
        m.insert("web-port".into(), port.into());
        CharmConfig::from_map(&m).unwrap()
    }

    fn db() -> DbInfo {
        DbInfo {
            host: "10.0.0.7".into(),
            port: 5432,
            database: "concourse".into(),
            user: "relation-5".into(),
            password: Secret::new("db-pw"),
        }
    }

    #[test]
    fn env_has_db_keys_and_admin() {
        let c = config(8080);
        let pw = Secret::new("admin-pw");
        let db = db();
        let e = env(&WebInputs {
            config: &c,
            external_url: "http://10.0.0.5:8080",
            db: &db,
            admin_password: &pw,
        });
        assert_eq!(e["CONCOURSE_POSTGRES_HOST"], "10.0.0.7");
        assert_eq!(e["CONCOURSE_POSTGRES_PASSWORD"], "db-pw");
        assert_eq!(e["CONCOURSE_ADD_LOCAL_USER"], "admin:admin-pw");
        assert_eq!(e["CONCOURSE_EXTERNAL_URL"], "http://10.0.0.5:8080");
        assert_eq!(e["CONCOURSE_BIND_PORT"], "8080");
        assert_eq!(e["CONCOURSE_LOG_LEVEL"], "info");
    }

    #[test]
    fn low_port_gets_capability() {
        let cur = Path::new("/var/lib/concourse-ci/current");
        assert!(unit(&config(80), cur)
            .render()
            .contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
        assert!(!unit(&config(8080), cur)
            .render()
            .contains("AmbientCapabilities"));
        assert!(unit(&config(8080), cur)
            .render()
            .contains("ExecStart=/var/lib/concourse-ci/current/bin/concourse web"));
    }

    #[test]
    fn authorized_keys_filtering() {
        let t = authorized_keys_text([
            "ssh-rsa AAAAB3Nza worker-1",
            "  ssh-rsa AAAAB3Nza worker-1 ",
            "ssh-rsa AAAAA0b",
            "garbage",
            "ssh-rsa notbase64!",
            "",
        ]);
        assert_eq!(t, "ssh-rsa AAAAA0b\nssh-rsa AAAAB3Nza worker-1\n");
        assert!(!is_public_key("ssh-rsa AAAA\rinjected"));
    }

    #[test]
    fn passwd_lookup() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-xyz"), None);
    }
}
