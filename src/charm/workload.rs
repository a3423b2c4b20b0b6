//! Running Concourse on this unit: the web and worker roles wired to Juju data.
//!
//! Owns: what the unit publishes for other units (TSA host and key, worker key) on
//! `peers`, `tsa` and `flight`, what it reads from them and from `postgresql`, the admin
//! password secret, ports, and stopping the roles a unit no longer has. Invariants: each
//! role's service restarts only when what it runs differs from its own inputs
//! (level-triggered, `service::apply_service`); a unit waits (status) rather
//! than starting a half-configured service; a unit runs no service of a role it lost;
//! secret values are read into memory and written only to the 0600 env files. Hazard: in
//! `<ep>-relation-broken` Juju may still list the relation; read relations through
//! [`live_relations`].

use std::path::PathBuf;

use tracing::{info, warn};

use super::peers::{self, bag, Peers};
use super::release;
use super::status::{messages as msg, Reports};
use super::CharmError;
use crate::config::{CharmConfig, Mode, Secret};
use crate::host::Host;
use crate::juju::client::SecretRef;
use crate::juju::event::RelationHook;
use crate::juju::{Bag, Event, Juju, RelationRef, Status};
use crate::keys;
use crate::postgres::{self, DbInfo, DbMissing};
use crate::roles::Roles;
use crate::service::{self, Applied, ServiceError};
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
    let secret = match app_bag.get("secret-user").filter(|s| !s.is_empty()) {
        Some(id) => Some(juju.secret_get(&SecretRef::Id(id.clone()), true)?),
        None => None,
    };
    Ok(postgres::db_info(&app_bag, secret.as_ref()))
}

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
        for p in juju.opened_ports()? {
            if let Some((port, proto)) = p.split_once('/') {
                if let Ok(port) = port.parse::<u16>() {
                    juju.close_port(port, proto)?;
                }
            }
        }
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

/// Runs (or keeps running) the web role.
pub fn web_role(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    peers: &mut Peers,
    running: &Running,
    reports: &mut Reports,
) -> Result<(), CharmError> {
    let (owner, tsa_pub) = web::ensure_keys(host, &running.concourse_bin(host))?;
    let address = unit_address(juju)?;
    let tsa_host = crate::config::host_port(&address, web::TSA_PORT);
    let publish = bag([
        (peers::TSA_HOST, tsa_host.as_str()),
        (peers::TSA_PUBLIC_KEY, tsa_pub.as_str()),
        (peers::WEB_IP, address.as_str()),
        (peers::CONCOURSE_VERSION, running.version),
    ]);
    peers.write_me(&publish);
    let mut worker_keys: Vec<String> = peers
        .others
        .values()
        .chain(std::iter::once(&peers.me))
        .filter_map(|b| b.get(peers::WORKER_PUBLIC_KEY).cloned())
        .collect();
    for rel in live_relations(juju, TSA_ENDPOINT)? {
        juju.relation_set(&rel, false, &publish)?;
        for u in juju.relation_list(&rel)? {
            if let Some(k) = juju
                .relation_get(&rel, &Bag::Unit(u))?
                .get(peers::WORKER_PUBLIC_KEY)
            {
                worker_keys.push(k.clone());
            }
        }
    }
    let tls = super::certificates::web_tls(juju, host, config, owner, reports)?;
    let mut extra_ports = super::observe::metrics_ports(juju, config)?;
    extra_ports.extend(tls.as_ref().map(|_| config.tls_port));
    open_ports(juju, config.web_port, &extra_ports)?;

    let db = match db_info(juju)? {
        Ok(db) => db,
        Err(missing) => {
            stop_web_if_running(host)?;
            reports.push(db_missing(&missing, juju.app_name()));
            return Ok(());
        }
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
    let mut env = web::env(&web::WebInputs {
        config,
        external_url: &external_url,
        db: &db,
        admin_password: &password,
    });
    env.extend(web::tls_env(tls.as_ref(), config.tls_port));
    env.extend(web::placement_env(&config.placement));
    env.extend(web::metrics_env(
        super::observe::metrics_bind(juju, &address)?.as_deref(),
        config.metrics_port,
    ));
    let keys_text = keys::authorized_keys_text(worker_keys.iter().map(String::as_str));
    let spec = web::unit(config, &release::current_link());
    let observable = crate::readiness::observable(config.log_level);
    let applied = web::apply(host, &env, &keys_text, &spec, owner, observable)?;
    if applied != Applied::default() {
        info!("web service: {applied:?}");
    }
    reports.push(msg::WEB_READY.fill(&[running.version, &external_url]));
    Ok(())
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

/// Opens the web and TSA ports (and `extra`) and closes other TCP ports this unit opened.
fn open_ports(juju: &Juju, web_port: u16, extra: &[u16]) -> Result<(), CharmError> {
    let mut wanted = vec![web_port, web::TSA_PORT];
    wanted.extend_from_slice(extra);
    let opened = juju.opened_ports()?;
    for p in &opened {
        if let Some(port) = p.strip_suffix("/tcp").and_then(|n| n.parse::<u16>().ok()) {
            if !wanted.contains(&port) {
                juju.close_port(port, "tcp")?;
            }
        }
    }
    for port in wanted {
        if !opened.iter().any(|p| p == &format!("{port}/tcp")) {
            juju.open_port(port, "tcp")?;
        }
    }
    Ok(())
}

/// Where this worker finds its TSA: (host:port, public key), if known yet.
fn find_tsa(
    juju: &Juju,
    host: &Host,
    config: &CharmConfig,
    peers: &Peers,
) -> Result<Option<(String, String)>, CharmError> {
    let from_bag =
        |b: &crate::juju::Databag| match (b.get(peers::TSA_HOST), b.get(peers::TSA_PUBLIC_KEY)) {
            (Some(h), Some(k)) if !h.is_empty() && keys::is_public_key(k) => {
                Some((h.clone(), k.clone()))
            }
            _ => None,
        };
    Ok(match config.mode {
        Mode::All => keys::public_key_of(host, &web::tsa_host_key())
            .ok()
            .map(|k| (format!("127.0.0.1:{}", web::TSA_PORT), k)),
        Mode::Auto => peers
            .app_value(peers::WEB_UNIT)
            .and_then(|w| peers.others.get(w))
            .and_then(from_bag),
        Mode::Worker => {
            let mut found = None;
            for rel in live_relations(juju, FLIGHT_ENDPOINT)? {
                for u in juju.relation_list(&rel)? {
                    if let Some(t) = from_bag(&juju.relation_get(&rel, &Bag::Unit(u))?) {
                        found = Some(t);
                        break;
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            found
        }
        Mode::Web => None,
    })
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
    let Some((tsa_host, tsa_key)) = find_tsa(juju, host, config, peers)? else {
        reports.push(match config.mode {
            Mode::Worker => msg::WAITING_FOR_TSA_RELATION.fill(&[juju.app_name()]),
            _ => msg::WAITING_FOR_TSA.status(),
        });
        return Ok(());
    };
    let mut env = worker::env(config, juju.unit_name(), &tsa_host);
    env.extend(crate::proxy::worker_env(&crate::proxy::effective(
        &juju.context().proxies,
        &config.proxy,
    )));
    let spec = worker::unit(config, &release::current_link());
    let ready = worker::ReadyWait::from_config(config);
    let applied = worker::apply(host, &env, &tsa_key, &spec, ready)?;
    if applied != Applied::default() {
        info!("worker service: {applied:?}");
    }
    reports.push(msg::WORKER_READY.fill(&[running.version]));
    Ok(())
}
