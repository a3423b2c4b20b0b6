//! PostgreSQL over the `postgresql_client` interface: what we ask for, what we read.
//!
//! Owns: the requirer side of the interface. We write `database=concourse` (and the
//! `requested-secrets` list that makes data-platform providers use Juju secrets) in our
//! app databag; we read `endpoints` and the credentials from the `secret-user` secret
//! (`username`, `password`), or plain `username`/`password` fields from older providers.
//! Invariants: parsing never panics on provider data; the password only ever lives in
//! `DbInfo` (redacted `Debug`) and the 0600 web env file.

use std::collections::BTreeMap;

use crate::config::Secret;

/// Database name Concourse uses.
pub const DATABASE: &str = "concourse";
/// Secret fields we ask the provider to deliver as Juju secrets.
pub const REQUESTED_SECRETS: &str = r#"["username","password","tls","tls-ca","uris"]"#;

/// Connection settings for `concourse web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Secret,
    /// `Some` when the provider says TLS is on (`tls` = `True` in `secret-tls` or the
    /// databag), with its CA chain (`tls-ca`) when it published one.
    pub tls: Option<Option<String>>,
}

/// The variables of the connection's TLS (`CONCOURSE_POSTGRES_SSLMODE`, choices in
/// concourse/flag `postgres_config.go`): `verify-full` with the provider's CA written at
/// `ca_file`, `require` when TLS is on without a CA, `disable` otherwise.
pub fn tls_env(db: &DbInfo, ca_file: &std::path::Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mode = match &db.tls {
        Some(Some(_)) => {
            m.insert(
                "CONCOURSE_POSTGRES_CA_CERT".to_string(),
                ca_file.display().to_string(),
            );
            "verify-full"
        }
        Some(None) => "require",
        None => "disable",
    };
    m.insert("CONCOURSE_POSTGRES_SSLMODE".to_string(), mode.to_string());
    m
}

/// Why the database is not usable yet (the charm turns it into a waiting status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbMissing {
    NoRelation,
    NoEndpoints,
    NoCredentials,
    /// The provider's `endpoints` value.
    BadEndpoints(String),
}

/// Our app databag for the relation (written by the leader).
pub fn request() -> BTreeMap<String, String> {
    [
        ("database".to_string(), DATABASE.to_string()),
        (
            "requested-secrets".to_string(),
            REQUESTED_SECRETS.to_string(),
        ),
    ]
    .into_iter()
    .collect()
}

/// Parses `host:port` (first of a comma list; `[v6]:port` accepted; port defaults to 5432).
pub fn parse_endpoint(endpoints: &str) -> Option<(String, u16)> {
    let first = endpoints
        .split(',')
        .map(str::trim)
        .find(|e| !e.is_empty())?;
    if let Some(rest) = first.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if tail.is_empty() => 5432,
            None => return None,
        };
        return (!host.is_empty()).then(|| (host.to_string(), port));
    }
    let (host, port) = match first.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (first, 5432),
    };
    if host.is_empty() || host.contains(':') || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
}

/// Builds `DbInfo` from the provider's app databag and, when it names one, the
/// content of its `secret-user` secret.
pub fn db_info(
    app_bag: &BTreeMap<String, String>,
    secret_user: Option<&BTreeMap<String, String>>,
    secret_tls: Option<&BTreeMap<String, String>>,
) -> Result<DbInfo, DbMissing> {
    let endpoints = app_bag
        .get("endpoints")
        .filter(|e| !e.trim().is_empty())
        .ok_or(DbMissing::NoEndpoints)?;
    let (host, port) =
        parse_endpoint(endpoints).ok_or_else(|| DbMissing::BadEndpoints(endpoints.clone()))?;
    let pick = |k: &str| {
        secret_user
            .and_then(|s| s.get(k))
            .or_else(|| app_bag.get(k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (user, password) = match (pick("username"), pick("password")) {
        (Some(u), Some(p)) => (u, p),
        _ => return Err(DbMissing::NoCredentials),
    };
    let database = app_bag
        .get("database")
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| DATABASE.to_string());
    let tls_field = |k: &str| {
        secret_tls
            .and_then(|s| s.get(k))
            .or_else(|| app_bag.get(k))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    // data_platform_libs writes "True"/"False" (capitalised); a CA without a PEM block
    // is ignored rather than written for Concourse to fail on.
    let tls = tls_field("tls")
        .filter(|t| t.eq_ignore_ascii_case("true"))
        .map(|_| tls_field("tls-ca").filter(|c| c.contains("-----BEGIN CERTIFICATE-----")));
    Ok(DbInfo {
        host,
        port,
        database,
        user,
        password: Secret::new(password),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("10.0.0.7:5432"),
            Some(("10.0.0.7".into(), 5432))
        );
        assert_eq!(
            parse_endpoint(" db.example:6432,10.0.0.8:5432"),
            Some(("db.example".into(), 6432))
        );
        assert_eq!(parse_endpoint("db"), Some(("db".into(), 5432)));
        assert_eq!(
            parse_endpoint("[fd00::1]:5433"),
            Some(("fd00::1".into(), 5433))
        );
        for bad in [
            "",
            ",",
            "h:port",
            ":5432",
            "[fd00::1",
            "fd00::1:5432",
            "a b:1",
            "h:99999",
        ] {
            assert_eq!(parse_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn secret_credentials_win_over_plain_fields() {
        let app = bag(&[
            ("endpoints", "10.0.0.7:5432"),
            ("database", "concourse"),
            ("secret-user", "secret:abc"),
        ]);
        let sec = bag(&[("username", "relation-5"), ("password", "pw")]);
        let info = db_info(&app, Some(&sec), None).unwrap();
        assert_eq!(info.user, "relation-5");
        assert_eq!(info.password.expose(), "pw");
        assert!(!format!("{info:?}").contains("pw\""));
    }

    #[test]
    fn plain_fields_from_older_providers() {
        let app = bag(&[
            ("endpoints", "pg:5432"),
            ("username", "u"),
            ("password", "p"),
        ]);
        let info = db_info(&app, None, None).unwrap();
        assert_eq!(
            (info.host.as_str(), info.port, info.database.as_str()),
            ("pg", 5432, "concourse")
        );
    }

    #[test]
    fn tls_from_the_tls_secret() {
        let app = bag(&[
            ("endpoints", "pg:5432"),
            ("username", "u"),
            ("password", "p"),
        ]);
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let on = bag(&[("tls", "True"), ("tls-ca", ca)]);
        let info = db_info(&app, None, Some(&on)).unwrap();
        assert_eq!(info.tls, Some(Some(ca.trim().to_string())));
        let e = tls_env(&info, std::path::Path::new("/ca.pem"));
        assert_eq!(e["CONCOURSE_POSTGRES_SSLMODE"], "verify-full");
        assert_eq!(e["CONCOURSE_POSTGRES_CA_CERT"], "/ca.pem");
        let no_ca = db_info(&app, None, Some(&bag(&[("tls", "True"), ("tls-ca", "")]))).unwrap();
        assert_eq!(
            tls_env(&no_ca, std::path::Path::new("/x"))["CONCOURSE_POSTGRES_SSLMODE"],
            "require"
        );
        let off = db_info(&app, None, Some(&bag(&[("tls", "False")]))).unwrap();
        assert_eq!(off.tls, None);
        assert_eq!(
            tls_env(&off, std::path::Path::new("/x"))["CONCOURSE_POSTGRES_SSLMODE"],
            "disable"
        );
    }

    #[test]
    fn missing_pieces() {
        assert_eq!(db_info(&bag(&[]), None, None), Err(DbMissing::NoEndpoints));
        assert_eq!(
            db_info(&bag(&[("endpoints", "pg:1")]), None, None),
            Err(DbMissing::NoCredentials)
        );
        assert!(matches!(
            db_info(&bag(&[("endpoints", "pg:x")]), None, None),
            Err(DbMissing::BadEndpoints(_))
        ));
    }
}
