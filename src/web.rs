//! The Concourse web role: its env file, systemd unit, keys, service lifecycle and the
//! database schema it runs against.
//!
//! Owns: `/var/lib/concourse-web` (home of user `concourse`; keys in `keys/`),
//! `/etc/concourse/web.env` (0600 root: the database and admin passwords live only here),
//! and `concourse-server.service`. Invariants: keys are generated once and
//! never rotated by a reconcile; the service restarts only when its unit file (beyond stop
//! settings), env file or release changed; new worker keys are applied with a reload
//! (SIGHUP), never a restart, and only once web's TSA listens: before that SIGHUP kills
//! web (Go's default; `tsa/tsacmd/command.go` installs the handler after the database
//! is open and migrated), and web reads the keys file when its TSA starts anyway. Which
//! keys the running web has is in its started record (`service::StartedWith`), so a
//! reload missed by a failed hook or a starting web happens in a later one. Web never
//! starts a release that supports an older schema than the database has
//! ([`prepare_switch`]). Hazards: never log env values; the env file is the only place
//! secrets are written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{CharmConfig, Secret};
use crate::host::{DbEnv, Host, Owner, ProvisionError};
use crate::keys::{self, KeyError};
use crate::postgres::DbInfo;
use crate::readiness::{self, Wait};
use crate::service::{
    self, apply_service, render_env, Applied, ManagedFile, OnChange, ReadFile, ServiceError,
    UnitSpec,
};

pub const SERVICE: &str = "concourse-server";
pub const HOME: &str = "/var/lib/concourse-web";
pub const ENV_FILE: &str = "/etc/concourse/web.env";
pub const USER: &str = "concourse";
pub const TSA_PORT: u16 = 2222;
/// How long a hook waits for a starting web before it leaves a reload to a later hook.
pub const RELOAD_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    User(#[from] ProvisionError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
/// CA certificates web reads (the PostgreSQL CA, the connectors' and Vault's): root's,
/// 0644 (certificates are public; only root writes them).
pub fn ca_dir() -> PathBuf {
    Path::new("/etc/concourse/ca").to_path_buf()
}
pub const PG_CA_FILE: &str = "postgresql-ca.pem";

/// Everything the web env file is made of.
pub struct WebInputs<'a> {
    pub config: &'a CharmConfig,
    pub external_url: &'a str,
    /// This unit's address, for the other web units (`CONCOURSE_PEER_ADDRESS`).
    pub peer_address: &'a str,
    pub db: &'a DbInfo,
    pub admin_password: &'a Secret,
}

/// The web env file's variables.
pub fn env(i: &WebInputs) -> BTreeMap<String, String> {
    let c = i.config;
    let mut m = db_env(i.db).0;
    let mut set = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    set("CONCOURSE_BIND_PORT", c.web_port.to_string());
    set("CONCOURSE_LOG_LEVEL", c.log_level.as_str().into());
    set("CONCOURSE_EXTERNAL_URL", i.external_url.into());
    // Other web nodes reach this one here for forwarded worker connections
    // (cmd/concourse/web.go, --peer-address; the default 127.0.0.1 only works alone).
    set("CONCOURSE_PEER_ADDRESS", i.peer_address.into());
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

/// The web variables of the options of issue 14 (`crate::web_options`), with the values
/// of the Juju secrets they name, and the encryption key: the operator's
/// (`encryption-key`) or the one the leader generated in the shared secret.
pub fn options_env(
    config: &CharmConfig,
    secrets: &BTreeMap<&'static str, Secret>,
    shared: &keys::WebKeys,
    admin_password: &Secret,
) -> BTreeMap<String, String> {
    let mut m = config.web_options.env(
        secrets,
        &ca_dir(),
        &config.initial_admin_username,
        admin_password,
    );
    m.entry("CONCOURSE_ENCRYPTION_KEY".to_string())
        .or_insert_with(|| shared.encryption_key.expose().to_string());
    m
}

/// Concourse's Prometheus endpoint (`atc/metric/emitter/prometheus.go`: enabled when both
/// variables are non-empty; no default port). `bind_ip` is `None` while no relation
/// wants metrics: the variables are left out and the endpoint is off.
pub fn metrics_env(bind_ip: Option<&str>, port: u16) -> BTreeMap<String, String> {
    bind_ip
        .map(|ip| {
            BTreeMap::from([
                ("CONCOURSE_PROMETHEUS_BIND_IP".to_string(), ip.to_string()),
                (
                    "CONCOURSE_PROMETHEUS_BIND_PORT".to_string(),
                    port.to_string(),
                ),
            ])
        })
        .unwrap_or_default()
}

/// Container placement and the per-worker limits (`atc/worker/placement.go`); only
/// what differs from Concourse's defaults, so a default deployment's env is unchanged.
pub fn placement_env(p: &crate::config::Placement) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if *p != crate::config::Placement::default() {
        m.insert(
            "CONCOURSE_CONTAINER_PLACEMENT_STRATEGY".to_string(),
            p.strategies.join(","),
        );
    }
    for (k, v) in [
        (
            "CONCOURSE_MAX_ACTIVE_CONTAINERS_PER_WORKER",
            p.max_active_containers,
        ),
        (
            "CONCOURSE_MAX_ACTIVE_VOLUMES_PER_WORKER",
            p.max_active_volumes,
        ),
        ("CONCOURSE_MAX_ACTIVE_TASKS_PER_WORKER", p.max_active_tasks),
    ] {
        if v > 0 {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

/// HTTPS with the certificate from `certificates` (`atc/atccmd/command.go`: TLS needs
/// `CONCOURSE_TLS_BIND_PORT`, the cert and key files, and an https external URL; the
/// plain port then redirects to it). Nothing while no certificate is in use. The key's
/// path is the unit's ([`tls_unit`]), not the env file's.
pub fn tls_env(
    tls: Option<&crate::charm::certificates::ServedTls>,
    port: u16,
) -> BTreeMap<String, String> {
    let Some(t) = tls else {
        return BTreeMap::new();
    };
    BTreeMap::from([
        ("CONCOURSE_TLS_BIND_PORT".to_string(), port.to_string()),
        (
            "CONCOURSE_TLS_CERT".to_string(),
            t.cert.display().to_string(),
        ),
    ])
}

/// The credential ID of web's TLS key in its systemd unit.
const TLS_KEY_CREDENTIAL: &str = "tls-key";

/// Web's TLS key, while a certificate is in use, through systemd: `LoadCredential=` gives
/// web (user `concourse`) a read-only copy of the root-only key in its credentials
/// directory at each start (systemd `src/core/exec-credential.c`; a missing key fails
/// the start with 243/CREDENTIALS), and `CONCOURSE_TLS_KEY` names that copy (`%d`, the
/// credentials directory). Concourse takes the key as a file path (`flag.File`, which
/// must exist when web starts).
pub fn tls_unit(spec: &mut UnitSpec, tls: Option<&crate::charm::certificates::ServedTls>) {
    let Some(t) = tls else { return };
    spec.extra.extend([
        (
            "LoadCredential".to_string(),
            format!("{TLS_KEY_CREDENTIAL}:{}", t.key.display()),
        ),
        (
            "Environment".to_string(),
            format!("CONCOURSE_TLS_KEY=%d/{TLS_KEY_CREDENTIAL}"),
        ),
    ]);
}

/// Whether `spec` hands web its TLS key ([`tls_unit`]).
fn loads_tls_key(spec: &UnitSpec) -> bool {
    spec.extra
        .iter()
        .any(|(k, v)| k == "LoadCredential" && v.starts_with(&format!("{TLS_KEY_CREDENTIAL}:")))
}

/// The database settings of web and `concourse migrate` (`CONCOURSE_POSTGRES_*`).
pub fn db_env(db: &DbInfo) -> DbEnv {
    DbEnv(
        [
            ("CONCOURSE_POSTGRES_HOST", db.host.clone()),
            ("CONCOURSE_POSTGRES_PORT", db.port.to_string()),
            ("CONCOURSE_POSTGRES_DATABASE", db.database.clone()),
            ("CONCOURSE_POSTGRES_USER", db.user.clone()),
            (
                "CONCOURSE_POSTGRES_PASSWORD",
                db.password.expose().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(crate::postgres::tls_env(db, &ca_dir().join(PG_CA_FILE)))
        .collect(),
    )
}

/// The web systemd unit, running the release behind `current` (the unit's pointer).
pub fn unit(config: &CharmConfig, current: &Path) -> UnitSpec {
    let mut extra = vec![
        ("Restart".to_string(), "on-failure".to_string()),
        ("RestartSec".to_string(), "5".to_string()),
        ("LimitNOFILE".to_string(), "65536".to_string()),
    ];
    if config.web_port < 1024 || config.tls_port < 1024 {
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

/// Creates the service user and writes the web keys every web unit shares (TSA host
/// key, session signing key) when they differ; returns the owner of the files web reads
/// (root, with the service user's group).
pub fn install_keys(host: &Host, shared: &keys::WebKeys) -> Result<Owner, WebError> {
    let service = host.provisioner.ensure_user(USER, Path::new(HOME))?;
    // Root's files, readable by the service's group (see crate::keys).
    let owner = (host.provisioner.charm_owner().0, service.1);
    shared.install(
        &host.paths,
        host.provisioner.as_ref(),
        &tsa_host_key(),
        &session_signing_key(),
        owner.1,
    )?;
    Ok(owner)
}

/// The keys a web unit generated for itself before they were shared (an older charm).
pub fn local_keys(host: &Host) -> Option<keys::WebKeys> {
    keys::WebKeys::from_files(&host.paths, &tsa_host_key(), &session_signing_key())
}

/// Writes the env file and the authorized worker keys, then (re)starts web, or reloads
/// it when only the worker keys differ from what it runs, once its TSA listens (see the
/// module docs; a reload not done yet is done by a later hook). `owner` owns the keys
/// (root, the service's group); `observable`: web logs its readiness.
pub fn apply(
    host: &Host,
    env_vars: &BTreeMap<String, String>,
    authorized_keys: &str,
    ca_files: &[(String, String)],
    spec: &UnitSpec,
    owner: Owner,
    observable: bool,
) -> Result<Applied, WebError> {
    let mut files = vec![
        ManagedFile {
            path: PathBuf::from(ENV_FILE),
            content: render_env(env_vars).into_bytes(),
            mode: 0o600,
            owner: host.provisioner.charm_owner(),
            on_change: OnChange::Restart,
        },
        ManagedFile {
            path: authorized_worker_keys(),
            content: authorized_keys.as_bytes().to_vec(),
            mode: 0o644,
            owner,
            on_change: OnChange::Reload,
        },
    ];
    let root = host.provisioner.charm_owner();
    files.extend(ca_files.iter().map(|(name, pem)| ManagedFile {
        path: ca_dir().join(name),
        content: pem.as_bytes().to_vec(),
        mode: 0o644,
        owner: root,
        on_change: OnChange::Restart,
    }));
    let keys = [tsa_host_key(), session_signing_key()].map(|path| ReadFile {
        path,
        on_change: OnChange::Restart,
    });
    let ready = || !observable || tsa_listens(host);
    let reads = [keys.as_slice(), &tls_reads(spec)].concat();
    Ok(apply_service(host, spec, &files, &reads, &ready)?)
}

/// Whether web's TSA listens, waiting up to [`RELOAD_WAIT`] for a starting web.
fn tsa_listens(host: &Host) -> bool {
    match readiness::wait(host, SERVICE, readiness::web_listening, RELOAD_WAIT) {
        Ok(Wait::Ready) => true,
        Ok(_) => {
            info!("web is starting: its worker keys are reloaded once its TSA listens");
            false
        }
        Err(e) => {
            warn!(
                "cannot tell whether web's TSA listens ({}); not reloading it now",
                crate::error_chain(&e)
            );
            false
        }
    }
}

/// Whether web may switch releases now (see [`prepare_switch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaGate {
    Proceed,
    /// Web must stay on the release it runs, for this reason.
    Hold(String),
}

/// Prepares the database for web switching from release `from` to release `to` (their
/// `concourse` binaries and versions). Web does not refuse a schema newer than it supports
/// (`atc/db/migration/migration.go`: `Migrate` knows no newer down migration and returns
/// nil), so before an older release runs, `from`'s binary, which knows the newer
/// migrations, migrates the database down to what `to` supports, with web stopped.
/// Holds web on `from` when that cannot be done or checked. `db`: the database settings,
/// when there is a database.
pub fn prepare_switch(
    host: &Host,
    db: Option<&DbEnv>,
    from: (&str, &Path),
    to: (&str, &Path),
) -> Result<SchemaGate, WebError> {
    let m = &host.migrator;
    let from_schema = match m.supported(from.1) {
        Ok(v) => v,
        Err(e) => {
            // A binary that cannot even say this never migrated anything.
            warn!(
                "v{} cannot tell its schema ({e}): it migrated nothing",
                from.0
            );
            return Ok(SchemaGate::Proceed);
        }
    };
    let to_schema = match m.supported(to.1) {
        Ok(v) => v,
        Err(e) => return Ok(hold(format!("v{} cannot tell its schema: {e}", to.0))),
    };
    let Some(db) = db.filter(|_| to_schema < from_schema) else {
        return Ok(SchemaGate::Proceed);
    };
    let was_active = host.services.is_active(SERVICE);
    if was_active {
        host.services.stop(SERVICE).map_err(ServiceError::from)?;
    }
    let gate = migrate_down(host, db, from, to, to_schema);
    if let SchemaGate::Hold(reason) = &gate {
        warn!("web cannot switch: {reason}");
        if was_active {
            // back on the release it runs (the pointer did not move)
            host.services.start(SERVICE).map_err(ServiceError::from)?;
        }
    }
    Ok(gate)
}

/// With web stopped: the database down to `to_schema` with `from`'s binary, checked.
fn migrate_down(
    host: &Host,
    db: &DbEnv,
    from: (&str, &Path),
    to: (&str, &Path),
    to_schema: u64,
) -> SchemaGate {
    let m = &host.migrator;
    let unreadable = |e| SchemaGate::Hold(format!("cannot read the database schema: {e}"));
    let current = match m.current(from.1, db) {
        Ok(v) => v,
        Err(e) => return unreadable(e),
    };
    if current <= to_schema {
        return SchemaGate::Proceed;
    }
    info!(
        "migrating the database down from schema {current} to {to_schema} (v{}) with v{}",
        to.0, from.0
    );
    if let Err(e) = m.migrate_to(from.1, db, to_schema) {
        return SchemaGate::Hold(format!(
            "migrating the database down to schema {to_schema} for v{} failed: {e}",
            to.0
        ));
    }
    match m.current(from.1, db) {
        Ok(v) if v <= to_schema => SchemaGate::Proceed,
        Ok(v) => SchemaGate::Hold(format!(
            "the database is still at schema {v} after migrating down to {to_schema}"
        )),
        Err(e) => unreadable(e),
    }
}

fn hold(reason: String) -> SchemaGate {
    warn!("web cannot switch: {reason}");
    SchemaGate::Hold(reason)
}

/// Web reloads its TLS certificate and key on SIGHUP (`atc/tls/runner.go`,
/// `signal.Notify(..., syscall.SIGHUP)`): a renewed certificate is applied with a reload.
/// The key web reads is systemd's copy, made at start, so a new key (made only when the
/// old one became unreadable) needs a restart; while no certificate is served the key is
/// not web's concern.
fn tls_reads(spec: &UnitSpec) -> Vec<ReadFile> {
    let mut reads = vec![ReadFile {
        path: crate::charm::certificates::cert_path(),
        on_change: OnChange::Reload,
    }];
    if loads_tls_key(spec) {
        reads.push(ReadFile {
            path: crate::charm::certificates::key_path(),
            on_change: OnChange::Restart,
        });
    }
    reads
}

/// Stops web and removes its service (unit removal, role change).
pub fn remove(host: &Host) -> Result<(), WebError> {
    if host.services.is_active(SERVICE) {
        host.services.stop(SERVICE).map_err(ServiceError::from)?;
    }
    Ok(service::uninstall(host, SERVICE)?)
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
            tls: None,
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
            peer_address: "10.0.0.5",
            db: &db,
            admin_password: &pw,
        });
        assert_eq!(e["CONCOURSE_POSTGRES_HOST"], "10.0.0.7");
        assert_eq!(e["CONCOURSE_POSTGRES_PASSWORD"], "db-pw");
        assert_eq!(e["CONCOURSE_ADD_LOCAL_USER"], "admin:admin-pw");
        assert_eq!(e["CONCOURSE_EXTERNAL_URL"], "http://10.0.0.5:8080");
        assert_eq!(e["CONCOURSE_BIND_PORT"], "8080");
        assert_eq!(e["CONCOURSE_PEER_ADDRESS"], "10.0.0.5");
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
}
