//! In-process scenarios of `charm::dispatch`: one unit's view, run hook by hook against
//! the in-memory Juju model (`juju::fake`), a temporary root with the recording host
//! doubles (`host::fake`), a real volume directory and real release tarballs installed
//! by the real installer. No root, no processes besides `bin/concourse --version`.
//!
//! Each scenario asserts what Juju and the machine saw per hook: statuses, databag
//! writes, ports, action results, files under the root and the service manager's journal.
//! Every status the charm sets is checked against the status catalogue.

mod actions;
mod config;
mod faults;
mod metrics;
mod postgres;
mod restarts;
mod roles;
mod runtime;
mod settled;
mod teams;
mod teardown;
mod tidy;
mod tls;
mod trust;
mod upgrade;
mod web;
mod worker;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use super::{dispatch, CharmError};
use crate::host::fake::FakeHost;
use crate::installer::{self, InstallOptions, Source};
use crate::juju::fake::{Action, Model, StatusRecord};
use crate::juju::log::JujuLogLayer;
use crate::juju::{ToolError, ToolRunner};
use crate::storage_coordinator::Volume;

pub const APP: &str = "concourse-ci";
pub const V1: &str = "7.14.2";
pub const V2: &str = "7.14.3";
pub const WEB_ENV: &str = "/etc/concourse/web.env";
pub const WORKER_ENV: &str = "/etc/concourse/worker.env";
pub const WEB_UNIT_FILE: &str = "/etc/systemd/system/concourse-server.service";
pub const SHARED_TSA_KEY: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nshared-tsa\n-----END RSA PRIVATE KEY-----\n";
pub const SHARED_TSA_PUB: &str = "ssh-rsa AAAAB3NzaSharedTsa shared";
pub const SHARED_SESSION_KEY: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nshared-session\n-----END RSA PRIVATE KEY-----\n";
pub const SHARED_ENCRYPTION_KEY: &str = "0123456789abcdefSharedEncryption";
pub const WORKER_UNIT_FILE: &str = "/etc/systemd/system/concourse-worker.service";

/// A release tarball with the real layout whose `bin/concourse` is a shell script that
/// prints `version` for `--version` (all the charm runs itself; key generation is the
/// provisioner's).
pub fn release_tarball(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("concourse-{version}-linux-amd64.tgz"));
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, mode: u32, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        tar.append_data(&mut h, name, body).unwrap();
    };
    add("concourse/", 0o755, b"");
    add("concourse/bin/", 0o755, b"");
    let script =
        format!("#!/bin/sh\ncase \"$1\" in --version) echo {version} ;; *) exit 0 ;; esac\n");
    add("concourse/bin/concourse", 0o755, script.as_bytes());
    add("concourse/fly-assets/", 0o755, b"");
    add("concourse/fly-assets/README", 0o644, b"fly\n");
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// One unit of the application in a model of its own.
pub struct Unit {
    pub model: Model,
    pub fake: FakeHost,
    pub _root: tempfile::TempDir,
    pub volume: tempfile::TempDir,
    pub tarballs: tempfile::TempDir,
    pub peers: u32,
    /// What the charm logged through `juju-log`, every hook.
    pub logs: LogSink,
    /// Where the last hook's unit statuses start in the model's history.
    last_hook: std::cell::Cell<usize>,
}

/// Records `juju-log` lines (the charm's only log path).
#[derive(Clone, Default)]
pub struct LogSink(Arc<Mutex<Vec<String>>>);

impl ToolRunner for LogSink {
    fn run(&self, _: &str, args: &[String], _: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(args.join(" "));
        }
        Ok(Vec::new())
    }
}

impl LogSink {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// What an action reported.
pub struct ActionRun {
    pub result: Result<(), CharmError>,
    pub action: Action,
}

impl ActionRun {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.action.results.get(key).map(String::as_str)
    }
}

impl Unit {
    /// Sets the other members of the peer relation (as `relation-list` shows them).
    pub fn set_peer_units(&self, units: Vec<String>) {
        let mut st = self.model.state_mut();
        st.relations
            .get_mut(&self.peers)
            .expect("Unit::new relates the peers")
            .units = units;
    }

    /// Adds `unit` to the other members of the peer relation.
    pub fn add_peer_unit(&self, unit: &str) {
        let mut st = self.model.state_mut();
        st.relations
            .get_mut(&self.peers)
            .expect("Unit::new relates the peers")
            .units
            .push(unit.to_string());
    }

    /// `concourse-ci/<n>` with its volume attached, the peer relation up, the V1 tarball
    /// attached as the resource and `version=V1`; no hook has run yet.
    pub fn new(n: u32, leader: bool) -> Unit {
        let unit = format!("{APP}/{n}");
        let model = Model::new(&unit);
        let (root, volume, tarballs) = (tmp(), tmp(), tmp());
        let peers = model.relate("peers", APP, &[]);
        let tarball = release_tarball(tarballs.path(), V1);
        {
            let mut st = model.state_mut();
            st.leader = leader;
            st.storage.insert(
                "concourse-data".into(),
                vec![("concourse-data/0".into(), volume.path().to_path_buf())],
            );
            st.resources.insert("concourse-release".into(), tarball);
        }
        model.set_config(&[("version", json!(V1))]);
        Unit {
            fake: FakeHost::new(root.path()),
            model,
            _root: root,
            volume,
            tarballs,
            peers,
            logs: LogSink::default(),
            last_hook: std::cell::Cell::new(0),
        }
    }

    /// A leader unit after the deploy hooks, in `mode`.
    pub fn deployed(mode: &str) -> Unit {
        let u = Unit::new(0, true);
        u.model.set_config(&[("mode", json!(mode))]);
        u.deploy();
        u
    }

    /// The hooks Juju runs when a unit comes up, in Juju's order.
    pub fn deploy(&self) {
        for h in [
            "concourse-data-storage-attached",
            "install",
            "leader-settings-changed",
            "config-changed",
            "start",
        ] {
            let h = match h {
                "leader-settings-changed" if self.model.state().leader => "leader-elected",
                h => h,
            };
            self.ok(h);
        }
        self.relation_ok(self.peers, "created", None);
    }

    pub fn volume(&self) -> Volume {
        Volume::new(self.volume.path())
    }

    /// Publishes `version` on the volume with the real installer (as another unit would).
    pub fn publish(&self, version: &str) {
        let tarball = release_tarball(self.tarballs.path(), version);
        let opts = InstallOptions::new(&format!("{APP}/9"));
        installer::ensure_release(
            &self.volume(),
            version,
            &Source::Resource(tarball),
            &opts,
            &mut |_| {},
        )
        .unwrap();
    }

    /// The digests the leader would publish for `versions` on this unit's volume (from
    /// each MANIFEST), as the `release-digests` app value.
    pub fn leader_digests_json(&self, versions: &[&str]) -> String {
        let digests: std::collections::BTreeMap<String, _> = versions
            .iter()
            .map(|v| {
                let m = crate::installer::Manifest::read(&self.volume().layout().release_dir(v))
                    .unwrap();
                let d = crate::installer::trust::ExecDigests::from_entries(
                    &m.entries,
                    &m.tarball.sha256,
                );
                (v.to_string(), d)
            })
            .collect();
        serde_json::to_string(&digests).unwrap()
    }

    /// Writes the leader's digests of `versions` into the app databag (a non-leader runs
    /// a release another unit installed only with them).
    pub fn trust_leader_digests(&self, versions: &[&str]) {
        let json = self.leader_digests_json(versions);
        self.model
            .set_bag(self.peers, APP, &[("release-digests", json.as_str())]);
    }

    fn run(
        &self,
        name: &str,
        dispatch_path: &str,
        relation: Option<(u32, Option<&str>)>,
        action: Option<Action>,
    ) -> Result<(), CharmError> {
        self.model.begin_hook(name, action);
        let statuses = self.model.state().unit_status.len();
        self.last_hook.set(statuses);
        let app_statuses = self.model.state().app_status.len();
        let juju = self.model.juju(dispatch_path, relation);
        let unit = juju.unit_name().to_string();
        let layer = JujuLogLayer::new(Box::new(self.logs.clone()), &unit, Level::DEBUG, false);
        let subscriber = tracing_subscriber::registry().with(layer);
        let r =
            tracing::subscriber::with_default(subscriber, || dispatch(&juju, &self.fake.host()));
        if let Err(e) = self.model.end_hook(r.is_ok()) {
            panic!("{name}: Juju refused the hook's changes: {e}");
        }
        let st = self.model.state();
        for s in st.unit_status[statuses..]
            .iter()
            .chain(&st.app_status[app_statuses..])
        {
            assert_catalogued(s);
        }
        r
    }

    /// Runs a hook (`install`, `config-changed`, …).
    pub fn hook(&self, name: &str) -> Result<(), CharmError> {
        self.run(name, &format!("hooks/{name}"), None, None)
    }

    /// Runs a hook that must succeed.
    pub fn ok(&self, name: &str) {
        if let Err(e) = self.hook(name) {
            panic!("{name} failed: {}", crate::error_chain(&e));
        }
    }

    /// Runs `<endpoint>-relation-<kind>` for relation `rel`.
    pub fn relation_hook(
        &self,
        rel: u32,
        kind: &str,
        remote: Option<&str>,
    ) -> Result<(), CharmError> {
        let endpoint = self.model.state().relations[&rel].endpoint.clone();
        let name = format!("{endpoint}-relation-{kind}");
        self.run(&name, &format!("hooks/{name}"), Some((rel, remote)), None)
    }

    pub fn relation_ok(&self, rel: u32, kind: &str, remote: Option<&str>) {
        if let Err(e) = self.relation_hook(rel, kind, remote) {
            panic!("relation {rel} {kind} failed: {}", crate::error_chain(&e));
        }
    }

    /// Runs an action with `params`.
    pub fn action(&self, name: &str, params: Value) -> ActionRun {
        let action = Action {
            name: name.to_string(),
            params,
            ..Action::default()
        };
        let result = self.run(name, &format!("actions/{name}"), None, Some(action));
        let action = self.model.state().action.clone().unwrap_or_default();
        ActionRun { result, action }
    }

    /// The unit's status: (kind, message).
    pub fn status(&self) -> (String, String) {
        let s = self.model.last_unit_status().expect("a status was set");
        (s.kind, s.message)
    }

    /// Unit statuses set by the last hook, in order.
    pub fn hook_statuses(&self) -> Vec<StatusRecord> {
        self.model.state().unit_status[self.last_hook.get()..].to_vec()
    }

    pub fn app_version(&self) -> Option<String> {
        self.model.state().app_version.clone()
    }

    pub fn app_status(&self) -> (String, String) {
        let s = self.model.last_app_status().expect("an app status was set");
        (s.kind, s.message)
    }

    /// A file under the unit's root, by machine path.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.fake.paths.local(path))
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.fake.paths.local(path).exists()
    }

    /// The `KEY=value` lines of an env file.
    pub fn env(&self, path: &str) -> std::collections::BTreeMap<String, String> {
        self.read(path)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    }

    /// The service manager journal since `mark` (from [`Unit::mark`]).
    pub fn journal_since(&self, mark: usize) -> Vec<String> {
        self.fake.services.journal_since(mark)
    }

    pub fn mark(&self) -> usize {
        self.fake.services.journal_len()
    }

    pub fn active(&self, service: &str) -> bool {
        self.fake.services.service(service).active
    }

    /// This unit's committed databag in relation `rel`.
    pub fn my_bag(&self, rel: u32) -> crate::juju::Databag {
        let unit = self.model.state().unit.clone();
        self.model.bag(rel, &unit)
    }

    pub fn app_bag(&self) -> crate::juju::Databag {
        self.model.bag(self.peers, APP)
    }

    /// The web keys secret an earlier leader created, named in the peer app databag;
    /// returns its id.
    pub fn share_web_keys(&self) -> String {
        let id = self.model.add_own_secret(&[
            ("tsa-host-key", SHARED_TSA_KEY),
            ("tsa-public-key", SHARED_TSA_PUB),
            ("session-signing-key", SHARED_SESSION_KEY),
            ("encryption-key", SHARED_ENCRYPTION_KEY),
        ]);
        self.model
            .set_bag(self.peers, APP, &[("web-keys-secret", &id)]);
        id
    }

    /// Adds PostgreSQL (secret credentials) with its answer; returns the relation id.
    pub fn add_postgresql(&self, password: &str) -> u32 {
        let rel = self
            .model
            .relate("postgresql", "postgresql", &["postgresql/0"]);
        let secret = self
            .model
            .add_foreign_secret(&[("username", "relation-7"), ("password", password)]);
        self.model.set_bag(
            rel,
            "postgresql",
            &[
                ("endpoints", "10.1.0.99:5432"),
                ("database", "concourse"),
                ("secret-user", &secret),
            ],
        );
        self.relation_ok(rel, "created", None);
        self.relation_ok(rel, "joined", Some("postgresql/0"));
        self.relation_ok(rel, "changed", Some("postgresql/0"));
        rel
    }

    /// The `services` entries that touched `service` since `mark`.
    pub fn touched(&self, mark: usize, service: &str) -> Vec<String> {
        self.journal_since(mark)
            .into_iter()
            .filter(|e| e.ends_with(&format!(" {service}")))
            .collect()
    }

    /// Runs `hook` and checks that it left `service` alone (it already runs what it should).
    pub fn hook_leaves_alone(&self, hook: &str, service: &str) {
        let mark = self.mark();
        self.ok(hook);
        assert!(
            self.touched(mark, service).is_empty(),
            "{hook} touched {service}: {:?}",
            self.journal_since(mark)
        );
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Issue 12's scan, in-process: under the volume and every directory the charm writes as
/// root, everything belongs to the charm's user (root on a machine, this process's user
/// here) and nothing is writable by "other". Returns how many entries it saw.
pub fn assert_root_owned(u: &Unit) -> usize {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let mut roots: Vec<PathBuf> = [
        "/var/lib/concourse-ci",
        "/var/lib/concourse-web",
        "/var/lib/concourse-worker",
        "/etc/concourse",
        "/etc/systemd/system",
    ]
    .iter()
    .map(|d| u.fake.paths.local(d))
    .collect();
    roots.push(u.volume.path().to_path_buf());
    let mut seen = 0;
    while let Some(p) = roots.pop() {
        let Ok(md) = p.symlink_metadata() else {
            continue;
        };
        if md.file_type().is_symlink() {
            continue;
        }
        seen += 1;
        assert!(
            md.uid() == me && md.mode() & 0o002 == 0,
            "{} is not root's alone (uid {}, mode {:o})",
            p.display(),
            md.uid(),
            md.mode() & 0o7777
        );
        if md.is_dir() {
            roots.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        }
    }
    seen
}

/// Every status the charm sets is one the catalogue (and so the operator docs) knows.
/// An active status may join several reports and notes with `; ` (`Reports::pick`):
/// then each part is an entry.
fn assert_catalogued(s: &StatusRecord) {
    use super::status::messages::find;
    let joined_actives = || {
        s.kind == "active"
            && s.message
                .split("; ")
                .all(|part| find("active", part).is_some())
    };
    assert!(
        find(&s.kind, &s.message).is_some() || joined_actives(),
        "{}: status `{}: {}` is not in the status catalogue",
        s.hook,
        s.kind,
        s.message
    );
}

#[test]
fn passwords_are_random_and_plain() {
    let a = super::random_password(24).unwrap();
    let b = super::random_password(24).unwrap();
    assert_eq!(a.len(), 24);
    assert_ne!(a, b);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
}
