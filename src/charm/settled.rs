//! The settled state: what a unit's last successful full reconcile left, so that
//! `update-status` on a settled unit checks local facts instead of re-reading the model,
//! and a peer relation change that does not concern a non-leader costs it two or four
//! calls (docs/scale.md#a-settled-unit).
//!
//! Owns: `/var/lib/concourse-ci/settled.json` (0600): a hash of the inputs the reconcile
//! acted on (the charm build, the configuration, leadership), the volume and the release
//! the unit runs, the services it left running, the digests of its key files, when the
//! leader's next latest-release lookup or the renewal of web's certificate is due, the
//! members whose databags it read and a digest of what the app databag told it.
//! Invariants: the record is removed before any other hook or a full reconcile does
//! anything, and written only at the end of a successful full reconcile that made no
//! change Juju has yet to commit (a commit can fail after the hook) and left the unit
//! with nothing pending: settled (`idle`: active, idle upgrade, tidy volume, every
//! role's service running from the release the pointer targets) or, on a non-leader
//! during an upgrade, quiet (the same, showing the upgrade's progress, with no step of
//! its own left). A killed or failed hook therefore leaves no record, and its retry (or
//! the next `update-status`) reconciles in full.
//! Hazards: the check is level-triggered: it compares what runs with what the record says
//! should run (pointer, services and the binaries they were started with), never "what
//! changed"; Juju runs a hook for every change of configuration, relation data, secrets,
//! storage and leadership, and each of those reconciles in full unless the change is of
//! a databag the unit did not read or an app databag that tells it what it was told.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::release;
use crate::host::Host;
use crate::juju::{Juju, ToolError};
use crate::storage_coordinator::Volume;

/// The record (a machine path).
pub fn record_path() -> PathBuf {
    Path::new(release::LOCAL_DIR).join("settled.json")
}

/// Why the settled record could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum SettledError {
    #[error("cannot remove the settled-state record {path}; check the unit's disk")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a settled unit's `update-status` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// sha256 of the charm build, the configuration and leadership.
    pub inputs: String,
    /// The volume root and the release the unit's pointer targets.
    pub volume: PathBuf,
    pub release: String,
    /// Whether this unit keeps the volume tidy (its `.installed_version` names `release`).
    pub tidier: bool,
    /// Services left running from `release`.
    pub services: Vec<String>,
    /// The roles' key directories and the digest of each file in them (the reconcile
    /// checks keys before use; a changed key file needs it).
    pub key_dirs: Vec<PathBuf>,
    pub keys: BTreeMap<String, String>,
    /// Unix time (this unit's clock) of the leader's next latest-release lookup or of the
    /// renewal of web's certificate, whichever comes first.
    #[serde(default)]
    pub recheck_at: Option<u64>,
    /// Settled in full: no upgrade under way, the unit (and on the leader the application)
    /// active, so `update-status` has nothing to do. Otherwise the unit is only *quiet*: a
    /// non-leader with nothing pending of its own while an upgrade runs elsewhere (it
    /// shows the leader's progress), which only a change of a databag it reads, of the
    /// app databag or of its inputs can give work.
    pub idle: bool,
    /// The remote members whose databags the reconcile read (a change of another's
    /// databag cannot change what this unit does: docs/scale.md#who-reads-what).
    pub read_units: Vec<String>,
    /// [`app_digest`] of the app databag the reconcile acted on.
    pub app: String,
    /// Every change the recording hook made was committed with it (it made none): the
    /// record may stand for a whole hook. A leader's record may stand for its roles only.
    pub whole: bool,
    /// The leader's roles, when what they did in the recording hook needed nothing
    /// committed (`roles_unchanged`).
    pub roles: Option<RolesRecord>,
}

/// What the leader's roles reported (every status active) and the members' data they
/// acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesRecord {
    pub active: Vec<String>,
    pub notes: Vec<String>,
    /// [`roles_digest`] of the peer data the roles used.
    pub peers: String,
}

/// sha256 of the peer data a unit's roles act on besides the app databag: its own
/// databag and what each member publishes for the roles (worker key, TSA, address).
pub fn roles_digest(peers: &super::peers::Peers) -> String {
    use super::peers::{TSA_HOST, TSA_PUBLIC_KEY, WEB_IP, WORKER_PUBLIC_KEY};
    let mut h = Sha256::new();
    let mut field = |k: &str, v: &str| {
        h.update(format!("{}:{k}={}:{v}\n", k.len(), v.len()).as_bytes());
    };
    for (k, v) in &peers.me {
        field(k, v);
    }
    for (u, bag) in &peers.others {
        field("member", u);
        for k in [WORKER_PUBLIC_KEY, TSA_HOST, TSA_PUBLIC_KEY, WEB_IP] {
            field(k, bag.get(k).map_or("", String::as_str));
        }
    }
    format!("{:x}", h.finalize())
}

/// Reads and removes the record: a full reconcile may use what it says of the leader's
/// roles ([`roles_unchanged`]); nothing else outlives the hook.
pub fn take(host: &Host) -> Result<Option<Settled>, SettledError> {
    let rec = read_record(host);
    forget(host)?;
    Ok(rec)
}

/// What the leader's roles reported, when running them again would do nothing: the
/// record's inputs are this hook's, nothing drifted on the unit, the app databag tells
/// the leader what it told the roles (after this hook's steps), the members publish
/// what they did and the leader's own upgrade part has no step to take. Everything
/// else the roles read (other relations, secrets, configuration) has a hook of its own,
/// which reconciles in full.
pub fn roles_unchanged(
    juju: &Juju,
    host: &Host,
    rec: &Settled,
    peers: &super::peers::Peers,
    own_step: bool,
) -> Result<Option<RolesRecord>, ToolError> {
    let Some(roles) = &rec.roles else {
        return Ok(None);
    };
    if own_step
        || rec.app != app_digest(&peers.app, juju.unit_name())
        || roles.peers != roles_digest(peers)
        || rec.inputs != inputs_hash(&juju.config()?, juju.is_leader()?)?
    {
        return Ok(None);
    }
    match unit_drift(host, rec) {
        None => Ok(Some(roles.clone())),
        Some(why) => {
            debug!("the roles run again: {why}");
            Ok(None)
        }
    }
}

/// sha256 of what the app databag tells unit `me`: every key but the upgrade's
/// progress (which a quiet unit only shows), with the grant and the units asked to
/// acknowledge reduced to whether they name `me` (the leader moving the grant from one
/// other unit to the next gives `me` nothing to do).
pub fn app_digest(app: &crate::juju::Databag, me: &str) -> String {
    use crate::upgrade::{AppUpgrade, K_ACK_FROM, K_GRANT, K_PROGRESS};
    let up = AppUpgrade::from_bag(app);
    let mut h = Sha256::new();
    for (k, v) in app {
        if ![K_PROGRESS, K_GRANT, K_ACK_FROM].contains(&k.as_str()) {
            h.update(format!("{}:{k}={}:{v}\n", k.len(), v.len()).as_bytes());
        }
    }
    h.update(format!("granted={} ", up.grant.iter().any(|u| u == me)).as_bytes());
    h.update(format!("asked={}", up.must_ack(me)).as_bytes());
    format!("{:x}", h.finalize())
}

/// Hash of the inputs a reconcile acts on besides relation data (whose every change
/// runs a relation hook): the charm build, the configuration and leadership.
pub fn inputs_hash(
    config: &serde_json::Map<String, serde_json::Value>,
    leader: bool,
) -> Result<String, ToolError> {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0, u8::from(leader), 0]);
    // A map serialises the same way every time (sorted keys).
    h.update(
        serde_json::Value::Object(config.clone())
            .to_string()
            .as_bytes(),
    );
    Ok(format!("{:x}", h.finalize()))
}

/// Removes the record: done before anything else in every hook but a settled
/// `update-status`.
pub fn forget(host: &Host) -> Result<(), SettledError> {
    let path = host.paths.local(record_path());
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SettledError::Remove { path, source }),
    }
}

/// Writes the record at the end of a successful full reconcile (best effort: without
/// it the next `update-status` reconciles in full).
pub fn record(host: &Host, settled: &Settled) {
    let path = host.paths.local(record_path());
    let Ok(text) = serde_json::to_vec_pretty(settled) else {
        return;
    };
    if let Err(e) = crate::fsutil::write_if_changed(&path, &text, 0o600, None) {
        warn!("cannot record the settled state in {}: {e}", path.display());
    }
}

/// Whether the unit is still as its last full reconcile left it, so `update-status` has
/// nothing to do. Costs `config-get` and `is-leader` (cached for the hook, so a full
/// reconcile after a miss does not ask again).
pub fn holds(juju: &Juju, host: &Host) -> Result<bool, ToolError> {
    let Some(rec) = read_record(host) else {
        debug!("not settled: no record");
        return Ok(false);
    };
    if !rec.idle || !rec.whole {
        debug!("not settled: an upgrade is under way");
        return Ok(false);
    }
    still_holds(juju, host, &rec)
}

/// Whether a `relation-changed` for the peer `remote`'s databag leaves this unit nothing
/// to do: a non-leader that did not read that databag in its last full reconcile
/// (settled or quiet), with the same inputs and nothing drifted. Nothing it acts on
/// changed: Juju runs a hook for every change of a databag it reads, of the app databag,
/// of the configuration and of leadership, and each of those reconciles in full. Costs
/// `config-get` and `is-leader`, like a settled `update-status`.
pub fn unread_change(juju: &Juju, host: &Host, remote: &str) -> Result<bool, ToolError> {
    let Some(rec) = read_record(host) else {
        return Ok(false);
    };
    if !rec.whole || rec.read_units.iter().any(|u| u == remote) || juju.is_leader()? {
        return Ok(false);
    }
    still_holds(juju, host, &rec)
}

/// Whether a `relation-changed` for the app databag leaves this non-leader nothing to
/// do but show the upgrade's new progress: the databag tells it what it told the last
/// full reconcile ([`app_digest`]), with the same inputs and nothing drifted. Sets the
/// status when the progress shown changes. Costs `config-get`, `is-leader`,
/// `relation-ids`, `relation-get` (and `status-set`), all cached for a full reconcile
/// after a miss.
pub fn app_change_only_progress(juju: &Juju, host: &Host) -> Result<bool, ToolError> {
    let Some(rec) = read_record(host) else {
        return Ok(false);
    };
    if !rec.whole || juju.is_leader()? {
        return Ok(false);
    }
    let Some(rel) = juju
        .relation_ids(super::peers::ENDPOINT)?
        .into_iter()
        .next()
    else {
        return Ok(false);
    };
    let app = juju.own_app_bag(&rel)?;
    if app_digest(&app, juju.unit_name()) != rec.app || !still_holds(juju, host, &rec)? {
        return Ok(false);
    }
    if rec.idle {
        return Ok(true);
    }
    let progress = app
        .get(crate::upgrade::K_PROGRESS)
        .filter(|p| !p.is_empty());
    let Some(progress) = progress else {
        return Ok(false);
    };
    juju.status_set_if_changed(&crate::juju::Status::maintenance(progress.clone()), false)?;
    Ok(true)
}

fn read_record(host: &Host) -> Option<Settled> {
    std::fs::read(host.paths.local(record_path()))
        .ok()
        .and_then(|b| serde_json::from_slice::<Settled>(&b).ok())
}

/// The record's inputs are this hook's and nothing drifted from it.
fn still_holds(juju: &Juju, host: &Host, rec: &Settled) -> Result<bool, ToolError> {
    if rec.inputs != inputs_hash(&juju.config()?, juju.is_leader()?)? {
        debug!("not settled: the configuration or leadership changed");
        return Ok(false);
    }
    match drift(host, rec) {
        None => Ok(true),
        Some(why) => {
            debug!("not settled: {why}");
            Ok(false)
        }
    }
}

/// What differs between the unit and its record, if anything.
fn drift(host: &Host, rec: &Settled) -> Option<String> {
    if let Some(why) = unit_drift(host, rec) {
        return Some(why);
    }
    let vol = Volume::new(&rec.volume);
    if rec.tidier && vol.installed_version().ok().flatten().as_deref() != Some(&rec.release) {
        return Some("the volume does not record the release as installed".into());
    }
    None
}

/// What differs between the unit's release, services, keys and due checks and its
/// record (everything but the volume's tidiness), if anything.
fn unit_drift(host: &Host, rec: &Settled) -> Option<String> {
    let vol = Volume::new(&rec.volume);
    if !vol.is_published(&rec.release).unwrap_or(false) {
        return Some(format!(
            "v{} is not on {}",
            rec.release,
            rec.volume.display()
        ));
    }
    if release::pointer_version(host).as_deref() != Some(rec.release.as_str()) {
        return Some("the pointer moved".into());
    }
    if super::told_version(host).as_deref() != Some(rec.release.as_str()) {
        return Some("Juju was not told the running version".into());
    }
    let Some(dir) = vol
        .release_path(&rec.release)
        .ok()
        .and_then(|d| std::fs::canonicalize(d).ok())
    else {
        return Some(format!("v{} has no release directory", rec.release));
    };
    for s in &rec.services {
        let from_release =
            crate::service::started_binary(host, s).is_some_and(|b| b.starts_with(&dir));
        if !from_release || !host.services.is_active(s) {
            return Some(format!("{s} is not running from v{}", rec.release));
        }
        if let Some(why) = crate::service::started_inputs_differ(host, s) {
            return Some(why);
        }
    }
    if key_digests(host, &rec.key_dirs) != rec.keys {
        return Some("a key file changed".into());
    }
    if rec.recheck_at.is_some_and(|t| host.clock.unix_now() >= t) {
        return Some("the latest release is due to be looked up".into());
    }
    None
}

/// sha256 of the content and mode of every file in `dirs` (machine paths), by path.
pub fn key_digests(host: &Host, dirs: &[PathBuf]) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(host.paths.local(d)) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            let mut h = Sha256::new();
            h.update(format!("{:o}:{}:{}:", md.mode(), md.uid(), md.gid()).as_bytes());
            h.update(std::fs::read(e.path()).unwrap_or_default());
            out.insert(
                d.join(e.file_name()).display().to_string(),
                format!("{:x}", h.finalize()),
            );
        }
    }
    out
}

/// When the certificate web serves is due for renewal (unix seconds; `Ok(None)`: none
/// is served), so that `update-status` renews it then; `Err` when it cannot be read.
pub(super) fn certificate_due(host: &Host) -> Result<Option<u64>, ()> {
    let path = host.paths.local(super::certificates::cert_path());
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(_) => return Err(()),
    };
    let c = crate::tls::cert_info(&pem).ok_or(())?;
    let life = (c.not_after - c.not_before).max(0);
    Ok(Some(
        u64::try_from(c.not_before + life * 9 / 10).unwrap_or(0),
    ))
}
