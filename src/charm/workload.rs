//! Running Concourse on this unit: the web and worker roles wired to Juju data.
//!
//! Owns: what the unit publishes for other units (TSA host and key, worker key) on
//! `peers`, `tsa` and `flight`, what it reads from them and from `postgresql` (credentials
//! and TLS) and `vault-kv`, the admin password secret, the web keys every web unit shares
//! (an app secret the leader creates), the Juju secrets the options name, ports, and
//! stopping the roles a unit no longer has. Invariants: each
//! role's service restarts only when what it runs differs from its own inputs
//! (level-triggered, `service::apply_service`); a unit waits (status) rather
//! than starting a half-configured service; a unit runs no service of a role it lost;
//! secret values are read into memory and written only to the 0600 env files. Hazard: in
//! `<ep>-relation-broken` Juju may still list the relation; read relations through
//! [`live_relations`].

use std::path::PathBuf;

use tracing::{info, warn};

use super::observe::WantedPort;
use super::peers::{self, bag, Peers};
use super::release;
use super::status::{messages as msg, Reports};
use super::CharmError;
use crate::config::{CharmConfig, Mode, Secret};
use crate::host::Host;
use crate::juju::client::{SecretOwner, SecretRef};
use crate::juju::event::RelationHook;
use crate::juju::{Bag, Event, FailureKind, Juju, RelationRef, Status};
use crate::keys;
use crate::postgres::{self, DbInfo, DbMissing};
use crate::roles::Roles;
use crate::service::{self, ServiceError};
use crate::{web, worker};

pub const TSA_ENDPOINT: &str = "tsa";
pub const FLIGHT_ENDPOINT: &str = "flight";
pub const DB_ENDPOINT: &str = "postgresql";

/// The release this unit runs (behind the unit's pointer), as seen by the roles. A
/// service restarts when what it runs differs from it (`service::apply_service`), not
/// because the pointer moved in this hook.
pub struct Running<'a> {
    pub version: &'a str,
}

impl Running<'_> {
    /// The release's `concourse` binary, as the charm runs it.
    pub fn concourse_bin(&self, host: &Host) -> PathBuf {
        host.paths
            .local(release::current_link())
            .join("bin/concourse")
    }
}

/// This unit's address for other units and users.
pub fn unit_address(juju: &Juju) -> Result<String, CharmError> {
    let info = juju.network_get(peers::ENDPOINT)?;
    Ok(info.primary_address().unwrap_or("127.0.0.1").to_string())
}

/// The live relations of an endpoint. In `<endpoint>-relation-broken` Juju 3.x may still
/// list the relation being removed (and serve its remote data): leave it out, as ops does,
/// so the hook that announces the removal already acts on it.
pub fn live_relations(juju: &Juju, endpoint: &str) -> Result<Vec<RelationRef>, CharmError> {
    let ctx = juju.context();
    let broken = match (&ctx.event, &ctx.relation) {
        (
            Event::Relation {
                kind: RelationHook::Broken,
                ..
            },
            Some(r),
        ) => Some(&r.relation),
        _ => None,
    };
    Ok(juju
        .relation_ids(endpoint)?
        .into_iter()
        .filter(|r| Some(r) != broken)
        .collect())
}

/// Reads the database settings, if the relation and the provider's answer are there.
pub fn db_info(juju: &Juju) -> Result<Result<DbInfo, DbMissing>, CharmError> {
    let Some(rel) = live_relations(juju, DB_ENDPOINT)?.into_iter().next() else {
        return Ok(Err(DbMissing::NoRelation));
    };
    let Some(remote_app) = juju.relation_remote_app(&rel)? else {
        return Ok(Err(DbMissing::NoEndpoints));
    };
    let app_bag = juju.relation_get(&rel, &Bag::App(remote_app))?;
    // --refresh: always the provider's latest credentials. Without it secret-get returns
    // the revision this unit tracks, so a rotated password (secret-changed) was never seen.
    let read = |key: &str| -> Result<Option<crate::juju::Databag>, CharmError> {
        match app_bag.get(key).filter(|s| !s.is_empty()) {
            Some(id) => Ok(Some(juju.secret_get(&SecretRef::Id(id.clone()), true)?)),
            None => Ok(None),
        }
    };
    let (user, tls) = (read("secret-user")?, read("secret-tls")?);
    Ok(postgres::db_info(&app_bag, user.as_ref(), tls.as_ref()))
}

/// The values of the Juju secrets the options name (`secret` options of
/// `crate::web_options`), read with `--refresh` so that a new revision reaches web (one
/// restart, through its env file). `Err` is the blocked status saying what to fix.
fn option_secrets(
    juju: &Juju,
    config: &CharmConfig,
) -> Result<Result<std::collections::BTreeMap<&'static str, Secret>, Status>, CharmError> {
    let mut out = std::collections::BTreeMap::new();
    for (option, uri, key) in config.web_options.secrets() {
        let content = match juju.secret_get(&SecretRef::Id(uri.clone()), true) {
            Ok(c) => c,
            Err(e) if e.kind().is_some() => {
                let why = e.kind().map(|k| k.to_string()).unwrap_or_default();
                let app = juju.app_name();
                return Ok(Err(
                    msg::OPTION_SECRET_UNREADABLE.fill(&[option, &uri, &why, app])
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let Some(value) = content.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            return Ok(Err(
                msg::OPTION_SECRET_NO_KEY.fill(&[option, &uri, key, key])
            ));
        };
        let checked = match option {
            "extra-local-users" => crate::web_options::local_users(value),
            "encryption-key" | "old-encryption-key" if !matches!(value.len(), 16 | 24 | 32) => {
                Err("an encryption key is 16, 24 or 32 characters".into())
            }
            _ if value.chars().any(char::is_control) => Err("it holds a newline".into()),
            _ => Ok(value.to_string()),
        };
        match checked {
            Ok(v) => {
                out.insert(option, Secret::new(v));
            }
            Err(problem) => {
                return Ok(Err(
                    msg::OPTION_SECRET_INVALID.fill(&[option, &uri, &problem, key])
                ))
            }
        }
    }
    Ok(Ok(out))
}

/// Where this unit keeps its `vault-kv` nonce (stable for the unit's life: Vault keys
/// its credentials by it).
const VAULT_NONCE_FILE: &str = "/var/lib/concourse-ci/vault-kv-nonce";

/// This unit's `vault-kv` nonce, made once (32 hex digits from the OS CSPRNG).
fn vault_nonce(host: &Host) -> Result<String, CharmError> {
    let path = host.paths.local(VAULT_NONCE_FILE);
    if let Ok(n) = std::fs::read_to_string(&path) {
        let n = n.trim();
        if n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(n.to_string());
        }
    }
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| CharmError::Workload(format!("no randomness: {e}")))?;
    let nonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::fsutil::write_if_changed(&path, nonce.as_bytes(), 0o600, None)
        .map_err(|e| CharmError::Workload(format!("cannot write {}: {e}", path.display())))?;
    Ok(nonce)
}

/// The `vault-kv` relation, requirer side (`crate::vault`): asks for credentials (the
/// leader the mount suffix, this unit its nonce and subnets) and returns the web
/// variables and the CA once Vault answered for this unit. Without the relation, or
/// before the answer, web runs without it.
fn vault_kv(juju: &Juju, host: &Host) -> Result<Option<VaultAnswer>, CharmError> {
    let Some(rel) = live_relations(juju, crate::vault::ENDPOINT)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    if juju.is_leader()? {
        juju.relation_set(
            &rel,
            true,
            &bag([("mount_suffix", crate::vault::MOUNT_SUFFIX)]),
        )?;
    }
    let nonce = vault_nonce(host)?;
    let net = juju.network_get(crate::vault::ENDPOINT)?;
    let cidr = net
        .bind_addresses
        .first()
        .and_then(|b| b.addresses.first())
        .map(|a| a.cidr.as_str());
    let egress = crate::vault::egress_subnet(&net.egress_subnets, cidr);
    juju.relation_set(
        &rel,
        false,
        &bag([
            ("egress_subnet", egress.as_str()),
            ("nonce", nonce.as_str()),
        ]),
    )?;
    let Some(remote) = juju.relation_remote_app(&rel)? else {
        return Ok(None);
    };
    let app = juju.relation_get(&rel, &Bag::App(remote))?;
    let Some(kv) = crate::vault::provider_data(&app, &nonce) else {
        return Ok(None);
    };
    let creds = juju.secret_get(&SecretRef::Id(kv.credentials_secret.clone()), true)?;
    let (Some(role), Some(secret)) = (creds.get("role-id"), creds.get("role-secret-id")) else {
        warn!("Vault's credentials secret has no role-id/role-secret-id yet");
        return Ok(None);
    };
    let secret = Secret::new(secret.clone());
    let ca_file = web::ca_dir().join(VAULT_KV_CA_FILE);
    let env = crate::vault::env(&kv, role, secret.expose(), &ca_file);
    Ok(Some((env, kv.ca_certificate)))
}

const VAULT_KV_CA_FILE: &str = "vault-kv-ca.pem";

/// The web variables Vault's answer gives, and its CA certificate.
type VaultAnswer = (std::collections::BTreeMap<String, String>, String);

/// The admin password from the app secret the leader created.
pub fn admin_password(juju: &Juju, peers: &Peers) -> Result<Option<Secret>, CharmError> {
    let Some(id) = peers.app_value(peers::ADMIN_SECRET) else {
        return Ok(None);
    };
    let content = juju.secret_get(&SecretRef::Id(id.to_string()), false)?;
    Ok(content
        .get("password")
        .filter(|p| !p.is_empty())
        .map(|p| Secret::new(p.clone())))
}

/// Stops what this unit no longer runs (a `mode` change, or the web role moving to the
/// leader because the web unit left): without the web role, web is stopped and removed,
/// its ports closed and the unit's TSA data withdrawn; without the worker role, the worker
/// is retired (so Concourse forgets it, like on unit removal) and its key withdrawn, so
/// web stops authorizing it. Cheap when there is nothing to do (two file checks).
pub fn drop_other_roles(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    peers: &mut Peers,
    roles: Roles,
) -> Result<(), CharmError> {
    let installed = |name: &str| service::is_installed(host, name);
    // The published TSA data commits together with the port changes, so while it is in
    // our bag the ports may still be open (a hook that removed the unit file can still fail).
    let was_web = peers.me.contains_key(peers::TSA_HOST) || peers.me.contains_key(peers::WEB_IP);
    if !roles.web && (was_web || installed(web::SERVICE)) {
        if roles.worker && host.services.is_active(worker::SERVICE) {
            // Its worker is registered with this web's TSA (mode=all): it lands while
            // that TSA still runs; afterwards it could not.
            info!("landing the worker before its TSA (this unit's web) goes");
            worker::drain(
                host,
                worker::Drain::Land,
                worker::ReadyWait::from_config(config),
            )?;
        }
        info!("this unit no longer runs web: stopping and removing it");
        super::observe::apply_ports(juju, &[])?;
        web::remove(host)?;
        peers.write_me(&bag([
            (peers::TSA_HOST, ""),
            (peers::TSA_PUBLIC_KEY, ""),
            (peers::WEB_IP, ""),
        ]));
    }
    if !roles.worker {
        if installed(worker::SERVICE) {
            info!("this unit no longer runs a worker: retiring it");
            if let Err(e) = worker::remove(host, worker::ReadyWait::from_config(config)) {
                warn!("retiring the worker: {}", crate::error_chain(&e));
            }
        }
        peers.write_me(&bag([(peers::WORKER_PUBLIC_KEY, "")]));
    }
    Ok(())
}

/// Peer app key: id of the app-owned secret holding the web keys every web unit shares.
pub const WEB_KEYS_SECRET: &str = "web-keys-secret";
/// The label of that secret (the leader's own name for it).
pub const WEB_KEYS_LABEL: &str = "web-keys";

/// The web keys every web unit shares, from the app secret the leader creates: seeded
/// from this unit's own keys when it ran web before they were shared (its workers keep
/// trusting it), else generated with the release's `concourse`. `None` on a non-leader
/// until the leader has created the secret. A secret that disappeared or holds no valid
/// keys is replaced by the leader.
pub fn shared_web_keys(
    juju: &Juju,
    host: &Host,
    peers: &mut Peers,
    running: &Running,
) -> Result<Option<keys::WebKeys>, CharmError> {
    let leader = juju.is_leader()?;
    if let Some(id) = peers.app_value(WEB_KEYS_SECRET) {
        // Never rotated (a new secret replaces one without valid keys): the revision
        // this unit tracks is the one; a secret created earlier in this hook is read
        // from the client's cache.
        match juju.secret_get(&SecretRef::Id(id.to_string()), false) {
            Ok(content) => match keys::WebKeys::from_content(&content) {
                Some(k) => return Ok(Some(k)),
                None => warn!("the web keys secret {id} holds no valid keys"),
            },
            Err(e) if leader && e.is(FailureKind::NotFound) => {
                warn!("the web keys secret {id} is gone: creating another")
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Without the peer relation the secret's id could not be recorded.
    if !leader || peers.rel.is_none() {
        return Ok(None);
    }
    // A secret an earlier hook created but whose id did not reach the app data.
    let labelled = juju.secret_info(&SecretRef::Label(WEB_KEYS_LABEL.into()))?;
    if let Some((id, _)) = &labelled {
        // secret-info-get names the secret by its bare id
        let id = match id.starts_with("secret:") {
            true => id.clone(),
            false => format!("secret:{id}"),
        };
        let content = juju.secret_get(&SecretRef::Id(id.clone()), false)?;
        if let Some(k) = keys::WebKeys::from_content(&content) {
            peers.write_app(&bag([(WEB_KEYS_SECRET, id.as_str())]));
            return Ok(Some(k));
        }
    }
    let shared = match web::local_keys(host) {
        Some(k) => k,
        None => keys::WebKeys::generate(
            &host.paths,
            host.provisioner.as_ref(),
            &running.concourse_bin(host),
            std::path::Path::new(release::LOCAL_DIR),
        )
        .map_err(web::WebError::from)?,
    };
    let id = juju.secret_add(
        &shared.content(),
        // the label is taken by a secret without valid keys: the new one goes without
        labelled.is_none().then_some(WEB_KEYS_LABEL),
        SecretOwner::Application,
        Some("Concourse TSA host key and session signing key, shared by every web unit"),
    )?;
    info!("created the web keys secret {id}");
    peers.write_app(&bag([(WEB_KEYS_SECRET, id.as_str())]));
    Ok(Some(shared))
}

/// Runs (or keeps running) the web role.
pub fn web_role(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    peers: &mut Peers,
    running: &Running,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    let Some(shared) = shared_web_keys(juju, host, peers, running)? else {
        reports.push(msg::WAITING_FOR_WEB_KEYS.status());
        return Ok(());
    };
    let owner = web::install_keys(host, &shared)?;
    let tsa_pub = shared.tsa_public_key.clone();
    let address = unit_address(juju)?;
    let tsa_host = crate::config::host_port(&address, web::TSA_PORT);
    let publish = bag([
        (peers::TSA_HOST, tsa_host.as_str()),
        (peers::TSA_PUBLIC_KEY, tsa_pub.as_str()),
        (peers::WEB_IP, address.as_str()),
        (peers::CONCOURSE_VERSION, running.version),
    ]);
    let worker_keys = publish_tsa(juju, peers, &publish)?;
    let tls = super::certificates::web_tls(juju, host, config, owner, reports)?;
    let mut extra_ports = super::observe::metrics_ports(juju, config)?;
    extra_ports.extend(
        tls.as_ref()
            .map(|_| WantedPort::everywhere(config.tls_port)),
    );
    open_ports(juju, config.web_port, &extra_ports)?;

    let Some(db) = web_database(juju, host, reports)? else {
        return Ok(());
    };
    let Some(password) = admin_password(juju, peers)? else {
        reports.push(msg::WAITING_FOR_ADMIN_PASSWORD.status());
        return Ok(());
    };
    let external_url = config.external_url.clone().unwrap_or_else(|| match &tls {
        Some(_) => format!(
            "https://{}",
            crate::config::host_port(&address, config.tls_port)
        ),
        None => crate::config::http_url(&address, config.web_port),
    });
    let Some(teams) = teams_env(juju, host, config, &db, &shared, &password, reports)? else {
        return Ok(());
    };
    let mut env = web::env(&web::WebInputs {
        config,
        external_url: &external_url,
        peer_address: &address,
        db: &db,
        admin_password: &password,
    });
    env.extend(web::tls_env(tls.as_ref(), config.tls_port));
    env.extend(web::placement_env(&config.placement));
    env.extend(web::metrics_env(
        super::observe::metrics_bind(juju, &address)?.as_deref(),
        config.metrics_port,
    ));
    let (teams_vars, ca_files) = teams;
    env.extend(teams_vars);
    let keys_text = keys::authorized_keys_text(worker_keys.iter().map(String::as_str));
    let mut spec = web::unit(config, &release::current_link());
    web::tls_unit(&mut spec, tls.as_ref());
    let observable = crate::readiness::observable(config.log_level);
    web::apply(host, &env, &keys_text, &ca_files, &spec, owner, observable)?;
    reports.push(msg::WEB_READY.fill(&[running.version, &external_url]));
    Ok(())
}

/// The database web runs with, or `None` with the status in `reports`: without endpoints
/// for a moment (a failover, data_platform_libs withdraws the key) a running web keeps its
/// last settings rather than going down with the primary; otherwise web is stopped.
fn web_database(
    juju: &Juju,
    host: &Host,
    reports: &mut Reports,
) -> Result<Option<DbInfo>, CharmError> {
    match db_info(juju)? {
        Ok(db) => Ok(Some(db)),
        Err(DbMissing::NoEndpoints) if host.services.is_active(web::SERVICE) => {
            reports.push(msg::DB_NO_ENDPOINTS_WEB_RUNNING.status());
            Ok(None)
        }
        Err(missing) => {
            stop_web_if_running(host)?;
            reports.push(db_missing(&missing, juju.app_name()));
            Ok(None)
        }
    }
}

/// Web's variables of issue 14 (Vault through `vault-kv`, then the options with the Juju
/// secrets they name, the encryption key) and the CA files web reads (the options', Vault's,
/// PostgreSQL's). `None` when a secret cannot be used: the blocked status is in `reports`.
fn teams_env(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    db: &DbInfo,
    shared: &keys::WebKeys,
    password: &Secret,
    reports: &mut Reports,
) -> Result<Option<(Env, CaFiles)>, CharmError> {
    let secrets = match option_secrets(juju, config)? {
        Ok(s) => s,
        Err(status) => {
            reports.push(status);
            return Ok(None);
        }
    };
    let mut env = Env::new();
    let mut ca_files = config.web_options.pem_files();
    if let Some((vault_env, ca)) = vault_kv(juju, host)? {
        // the relation's Vault; the vault-* options, set below, win over it
        env.extend(vault_env);
        ca_files.push((VAULT_KV_CA_FILE.to_string(), ca));
    }
    env.extend(web::options_env(config, &secrets, shared, password));
    if let Some(Some(ca)) = &db.tls {
        ca_files.push((web::PG_CA_FILE.to_string(), format!("{}\n", ca.trim())));
    }
    Ok(Some((env, ca_files)))
}

/// Variables of an env file.
type Env = std::collections::BTreeMap<String, String>;
/// CA files web reads: (file name under `web::ca_dir`, PEM).
type CaFiles = Vec<(String, String)>;

/// Publishes this web unit's TSA (`publish`) on `peers` and every `tsa` relation; returns
/// the worker keys web authorizes (peers' and related workers').
fn publish_tsa(
    juju: &Juju,
    peers: &mut Peers,
    publish: &crate::juju::Databag,
) -> Result<Vec<String>, CharmError> {
    peers.write_me(publish);
    let mut worker_keys: Vec<String> = peers
        .others
        .values()
        .chain(std::iter::once(&peers.me))
        .filter_map(|b| b.get(peers::WORKER_PUBLIC_KEY).cloned())
        .collect();
    for rel in live_relations(juju, TSA_ENDPOINT)? {
        juju.relation_set(&rel, false, publish)?;
        for u in juju.relation_list(&rel)? {
            if let Some(k) = juju
                .relation_get(&rel, &Bag::Unit(u))?
                .get(peers::WORKER_PUBLIC_KEY)
            {
                worker_keys.push(k.clone());
            }
        }
    }
    Ok(worker_keys)
}

/// The waiting status for a database that is not usable yet; `app` is this application.
fn db_missing(missing: &DbMissing, app: &str) -> Status {
    match missing {
        DbMissing::NoRelation => msg::WAITING_FOR_DB_RELATION.fill(&[app]),
        DbMissing::NoEndpoints => msg::WAITING_FOR_DB_ENDPOINTS.status(),
        DbMissing::NoCredentials => msg::WAITING_FOR_DB_CREDENTIALS.status(),
        DbMissing::BadEndpoints(e) => msg::DB_ENDPOINTS_UNPARSABLE.fill(&[&format!("{e:?}")]),
    }
}

fn stop_web_if_running(host: &Host) -> Result<(), CharmError> {
    if host.services.is_active(web::SERVICE) {
        info!("stopping web: no usable database");
        host.services
            .stop(web::SERVICE)
            .map_err(ServiceError::from)?;
    }
    Ok(())
}

/// Opens the web and TSA ports for every endpoint (and `extra` as they say) and closes
/// other TCP ports this unit opened.
fn open_ports(juju: &Juju, web_port: u16, extra: &[WantedPort]) -> Result<(), CharmError> {
    let mut wanted = vec![
        WantedPort::everywhere(web_port),
        WantedPort::everywhere(web::TSA_PORT),
    ];
    wanted.extend_from_slice(extra);
    super::observe::apply_ports(juju, &wanted)
}

/// Every TSA a worker can register with: each web unit's `host:port`, and the public
/// keys those TSAs present (one in the normal case, since web units share their keys).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tsas {
    pub hosts: Vec<String>,
    pub keys: Vec<String>,
}

impl Tsas {
    fn add(&mut self, b: &crate::juju::Databag) {
        if let (Some(h), Some(k)) = (b.get(peers::TSA_HOST), b.get(peers::TSA_PUBLIC_KEY)) {
            if !h.is_empty() && !h.contains([',', '\n']) && keys::is_public_key(k) {
                self.hosts.push(h.clone());
                self.keys.push(k.trim().to_string());
            }
        }
    }

    /// Sorted and unique, so the worker's files do not change with the reading order.
    fn tidy(mut self) -> Option<Tsas> {
        for v in [&mut self.hosts, &mut self.keys] {
            v.sort();
            v.dedup();
        }
        (!self.hosts.is_empty()).then_some(self)
    }
}

/// Where this worker finds its TSAs, if known yet: every web unit of the application
/// (`all`: every unit; `auto`: the web unit) or of the related web applications
/// (`worker`). Concourse's worker takes a list (`CONCOURSE_TSA_HOST`, worker/tsa_config.go)
/// and registers through any of them; its public key file may hold several keys.
fn find_tsa(juju: &Juju, config: &CharmConfig, peers: &Peers) -> Result<Option<Tsas>, CharmError> {
    let mut t = Tsas::default();
    match config.mode {
        Mode::All => {
            t.add(&peers.me);
            peers.others.values().for_each(|b| t.add(b));
        }
        Mode::Auto => {
            if let Some(b) = peers
                .app_value(peers::WEB_UNIT)
                .and_then(|w| peers.others.get(w))
            {
                t.add(b);
            }
        }
        Mode::Worker => {
            for rel in live_relations(juju, FLIGHT_ENDPOINT)? {
                for u in juju.relation_list(&rel)? {
                    t.add(&juju.relation_get(&rel, &Bag::Unit(u))?);
                }
            }
        }
        Mode::Web => {}
    }
    Ok(t.tidy())
}

/// Runs (or keeps running) the worker role.
pub fn worker_role(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    peers: &mut Peers,
    running: &Running,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    let public = worker::ensure_key(host, &running.concourse_bin(host))?;
    let publish = bag([(peers::WORKER_PUBLIC_KEY, public.as_str())]);
    peers.write_me(&publish);
    for rel in live_relations(juju, FLIGHT_ENDPOINT)? {
        juju.relation_set(&rel, false, &publish)?;
    }
    if config.mode == Mode::Auto && juju.is_leader()? {
        // The web unit may not be the leader: the leader shares the web keys anyway.
        shared_web_keys(juju, host, peers, running)?;
    }
    let Some(tsas) = find_tsa(juju, config, peers)? else {
        reports.push(match config.mode {
            Mode::Worker => msg::WAITING_FOR_TSA_RELATION.fill(&[juju.app_name()]),
            _ => msg::WAITING_FOR_TSA.status(),
        });
        return Ok(());
    };
    let mut env = worker::env(config, juju.unit_name(), &tsas.hosts.join(","));
    env.extend(crate::proxy::worker_env(&crate::proxy::effective(
        &juju.context().proxies,
        &config.proxy,
    )));
    // the escape hatch, checked against the variables `concourse worker` defines
    env.extend(config.web_options.extra_worker_env.clone());
    let spec = worker::unit(config, &release::current_link());
    let ready = worker::ReadyWait::from_config(config);
    worker::apply(host, &env, &tsas.keys.join("\n"), &spec, ready)?;
    reports.push(msg::WORKER_READY.fill(&[running.version]));
    Ok(())
}
