//! A built-in fake `postgresql` provider: an application with one scripted unit and no charm
//! process, speaking the `postgresql_client` interface of data_platform_libs.
//!
//! Owns: [`PostgresOptions`] and [`react`], which runs after every commit (under the model
//! lock) and answers each related requirer in the provider's app databag with `endpoints`,
//! `database`, `version` and credentials, either in a `secret-user` secret (fields `username`,
//! `password`, `uris`) granted to the relation, or as plain `username`, `password`, `uris`
//! fields.
//!
//! With [`PostgresOptions::data_dir`] the database is *played*: the directory (visible at the
//! same path in every unit, e.g. under the model's run directory) stands for the server, the
//! way libpq and pgx read a host starting with `/` as a Unix socket directory. The provider
//! creates it with the socket file `.s.PGSQL.<port>` and answers with it as the endpoint's
//! host; the fake `concourse` keeps its migration history there, shared by every unit
//! (`release_fixtures::fake_concourse`). Removing the socket file takes the database down.
//!
//! Invariants: it answers a relation once (then only when the test rotates the password); by
//! default only after the requirer's app databag names a `database`, like the real charm.

use crate::model::{Data, Grant, Life, Scripted, Secret, SecretOwner, World};
use std::collections::{BTreeMap, BTreeSet};

/// Where the credentials go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Credentials {
    /// In a `secret-user` secret granted to the relation.
    #[default]
    Secret,
    /// As plain `username`/`password`/`uris` databag fields.
    Plain,
}

/// Options of the fake provider.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub credentials: Credentials,
    /// Answer before the requirer asked for a database (with `database` below or `postgres`).
    pub answer_without_request: bool,
    /// Database name to answer with (default: the requested one).
    pub database: Option<String>,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub version: String,
    /// TLS on, with this CA chain: a `secret-tls` secret (`tls`, `tls-ca`) granted to
    /// the relation, as data_platform_libs writes it.
    pub tls_ca: Option<String>,
    /// Play the database in this directory (see the module docs); `None`: answer with
    /// `host`, a server nobody runs.
    pub data_dir: Option<std::path::PathBuf>,
}

impl PostgresOptions {
    /// The host the provider answers with: the played database's directory, or `host`.
    pub fn endpoint_host(&self) -> String {
        match &self.data_dir {
            Some(d) => d.display().to_string(),
            None => self.host.clone(),
        }
    }

    /// Creates the played database's directory (world-writable and sticky, like `/tmp`:
    /// web runs as its own user) and its socket file.
    pub fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?;
        let socket = dir.join(format!(".s.PGSQL.{}", self.port));
        if !socket.exists() {
            std::fs::write(socket, "")?;
        }
        Ok(())
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            credentials: Credentials::Secret,
            answer_without_request: false,
            database: None,
            host: "127.0.200.1".into(),
            port: 5432,
            username: "relation_id_user".into(),
            password: "s3cr3t-pw".into(),
            version: "16.6".into(),
            tls_ca: None,
            data_dir: None,
        }
    }
}

fn credentials(o: &PostgresOptions, db: &str) -> Data {
    [
        ("username", o.username.clone()),
        ("password", o.password.clone()),
        (
            "uris",
            format!(
                "postgresql://{}:{}@{}:{}/{db}",
                o.username,
                o.password,
                o.endpoint_host(),
                o.port
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Answer every related requirer that is waiting for an answer.
pub fn react(w: &mut World) {
    let scripted: Vec<(String, PostgresOptions)> = w
        .apps
        .values()
        .filter_map(|a| match &a.scripted {
            Some(Scripted::Postgres(o)) => Some((a.name.clone(), o.clone())),
            _ => None,
        })
        .collect();
    for (app, opts) in scripted {
        let rels: Vec<(u32, String)> = w
            .relations
            .values()
            .filter(|r| r.life == Life::Alive && !r.peer && r.involves(&app))
            .filter_map(|r| Some((r.id, r.remote_app(&app)?.to_string())))
            .collect();
        for (rel, requirer) in rels {
            let mine = w.bag(rel, &app).data;
            // answered once (a test may withdraw the endpoints afterwards)
            if mine.contains_key("endpoints") || mine.contains_key("database") {
                continue;
            }
            let asked = w.bag(rel, &requirer).data.get("database").cloned();
            let db = match (&opts.database, asked) {
                (Some(d), _) => d.clone(),
                (None, Some(d)) => d,
                (None, None) if opts.answer_without_request => "postgres".into(),
                (None, None) => continue,
            };
            if opts.prepare().is_err() {
                continue;
            }
            let host = opts.endpoint_host();
            let mut data: Data = [
                ("endpoints", format!("{host}:{}", opts.port)),
                ("read-only-endpoints", format!("{host}:{}", opts.port)),
                ("database", db.clone()),
                ("version", opts.version.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let creds = credentials(&opts, &db);
            match opts.credentials {
                Credentials::Plain => data.extend(creds),
                Credentials::Secret => {
                    let id = w.new_secret_id();
                    w.secrets.insert(
                        id.clone(),
                        Secret {
                            id: id.clone(),
                            owner: SecretOwner::App(app.clone()),
                            label: Some(format!("{requirer}.{rel}.user.secret")),
                            description: None,
                            expire: None,
                            rotate: None,
                            revisions: vec![creds],
                            grants: BTreeSet::from([Grant {
                                relation: rel,
                                unit: None,
                            }]),
                            granted_apps: BTreeSet::new(),
                            consumers: BTreeMap::new(),
                        },
                    );
                    data.insert("secret-user".into(), format!("secret:{id}"));
                }
            }
            if let Some(ca) = &opts.tls_ca {
                let tls: Data = [("tls", "True".to_string()), ("tls-ca", ca.clone())]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                let id = w.new_secret_id();
                w.secrets.insert(
                    id.clone(),
                    Secret {
                        id: id.clone(),
                        owner: SecretOwner::App(app.clone()),
                        label: Some(format!("{requirer}.{rel}.tls.secret")),
                        description: None,
                        expire: None,
                        rotate: None,
                        revisions: vec![tls],
                        grants: BTreeSet::from([Grant {
                            relation: rel,
                            unit: None,
                        }]),
                        granted_apps: BTreeSet::new(),
                        consumers: BTreeMap::new(),
                    },
                );
                data.insert("secret-tls".into(), format!("secret:{id}"));
            }
            let unit = format!("{app}/0");
            w.write_bag(rel, &app, data, &unit, "scripted");
        }
    }
}

/// Withdraw (`None`, no primary for a moment) or publish again the provider's
/// `endpoints` on every relation it answered.
pub fn set_endpoints(w: &mut World, app: &str, endpoints: Option<&str>) {
    let rels: Vec<u32> = w
        .relations
        .values()
        .filter(|r| r.life == Life::Alive && r.involves(app) && !r.peer)
        .map(|r| r.id)
        .collect();
    for rel in rels {
        let mut data = w.bag(rel, app).data;
        if !data.contains_key("database") {
            continue;
        }
        match endpoints {
            Some(e) => data.insert("endpoints".to_string(), e.to_string()),
            None => data.remove("endpoints"),
        };
        let unit = format!("{app}/0");
        w.write_bag(rel, app, data, &unit, "scripted");
    }
}

/// Change the password the provider hands out: a new secret revision, or new plain fields.
pub fn rotate_password(w: &mut World, app: &str, password: &str) {
    let Some(Scripted::Postgres(mut opts)) = w.apps.get(app).and_then(|a| a.scripted.clone())
    else {
        return;
    };
    opts.password = password.to_string();
    if let Some(a) = w.apps.get_mut(app) {
        a.scripted = Some(Scripted::Postgres(opts.clone()));
    }
    let rels: Vec<u32> = w
        .relations
        .values()
        .filter(|r| r.life == Life::Alive && r.involves(app) && !r.peer)
        .map(|r| r.id)
        .collect();
    for rel in rels {
        let mut data = w.bag(rel, app).data;
        let Some(db) = data.get("database").cloned() else {
            continue;
        };
        let creds = credentials(&opts, &db);
        match data.get("secret-user").cloned() {
            Some(uri) => {
                let id = uri.trim_start_matches("secret:").to_string();
                if let Some(s) = w.secrets.get_mut(&id) {
                    s.revisions.push(creds);
                }
            }
            None => {
                data.extend(creds);
                let unit = format!("{app}/0");
                w.write_bag(rel, app, data, &unit, "scripted");
            }
        }
    }
}
