//! Vault over the `vault-kv` relation, as the Vault charm speaks it
//! (`charms.vault_k8s.v0.vault_kv`, LIBPATCH 16, canonical/vault-k8s-operator).
//!
//! Owns: the requirer side. The leader writes `mount_suffix` in our app databag; every
//! unit writes `egress_subnet` (its egress subnets and bind CIDR, comma-joined) and a
//! stable per-unit `nonce` in its unit databag. Vault answers in its app databag with
//! `vault_url`, `ca_certificate`, `mount` (`charm-<app>-<suffix>`, a KV v2 engine) and
//! `credentials`, a JSON map from each requirer nonce to a Juju secret holding that unit's
//! AppRole `role-id` and `role-secret-id`. Invariants: parsing never panics on provider
//! data; the nonce never changes for a unit (Vault keys the credentials by it); the role
//! secret id lives only in Juju secrets, process memory and the 0600 web env file.
//! Hazards: Vault binds the secret id to the advertised subnets, so a unit that moves gets
//! new credentials (a new secret revision, read with `--refresh`).

use std::collections::BTreeMap;

/// The relation endpoint.
pub const ENDPOINT: &str = "vault-kv";
/// What we ask Vault to name the mount after (`charm-<app>-concourse`), as the Python
/// charm did.
pub const MOUNT_SUFFIX: &str = "concourse";

/// What Vault published for this unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultKv {
    pub url: String,
    pub ca_certificate: String,
    pub mount: String,
    /// The Juju secret with this unit's `role-id` and `role-secret-id`.
    pub credentials_secret: String,
}

/// Reads Vault's app databag for the unit whose nonce is `nonce`; `None` until every
/// field is there and valid (what the library's `ready` event waits for).
pub fn provider_data(app: &BTreeMap<String, String>, nonce: &str) -> Option<VaultKv> {
    let get = |k: &str| app.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let url = get("vault_url")?;
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return None;
    }
    let ca = get("ca_certificate").filter(|c| c.contains("-----BEGIN CERTIFICATE-----"))?;
    let mount = get("mount")?;
    if !mount
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b))
    {
        return None;
    }
    let creds: BTreeMap<String, String> = serde_json::from_str(get("credentials")?).ok()?;
    let secret = creds.get(nonce).filter(|s| s.starts_with("secret:"))?;
    Some(VaultKv {
        url: url.to_string(),
        ca_certificate: format!("{ca}\n"),
        mount: mount.trim_matches('/').to_string(),
        credentials_secret: secret.clone(),
    })
}

/// `egress_subnet`: every egress subnet, then the CIDR of the first bind address (the
/// library's `get_egress_subnets`).
pub fn egress_subnet(egress: &[String], bind_cidr: Option<&str>) -> String {
    let mut v: Vec<&str> = egress.iter().map(String::as_str).collect();
    if let Some(c) = bind_cidr.filter(|c| !c.is_empty()) {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v.join(",")
}

/// The web variables for Vault through the relation: AppRole login with this unit's
/// credentials, secrets under the mount (Concourse's lookup templates apply below it).
/// `ca_file` is where the CA is written.
pub fn env(
    kv: &VaultKv,
    role_id: &str,
    secret_id: &str,
    ca_file: &std::path::Path,
) -> BTreeMap<String, String> {
    [
        ("CONCOURSE_VAULT_URL", kv.url.clone()),
        ("CONCOURSE_VAULT_CA_CERT", ca_file.display().to_string()),
        ("CONCOURSE_VAULT_PATH_PREFIX", format!("/{}", kv.mount)),
        ("CONCOURSE_VAULT_AUTH_BACKEND", "approle".to_string()),
        (
            "CONCOURSE_VAULT_AUTH_PARAM",
            format!("role_id:{role_id},secret_id:{secret_id}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

    #[test]
    fn vaults_answer_for_our_nonce() {
        let app = bag(&[
            ("vault_url", "https://10.0.0.10:8200"),
            ("ca_certificate", CA),
            ("mount", "charm-concourse-ci-concourse"),
            (
                "credentials",
                r#"{"abc": "secret://m/c1", "def": "secret://m/c2"}"#,
            ),
        ]);
        let kv = provider_data(&app, "def").unwrap();
        assert_eq!(kv.credentials_secret, "secret://m/c2");
        assert_eq!(kv.mount, "charm-concourse-ci-concourse");
        assert_eq!(provider_data(&app, "zzz"), None);
        let e = env(&kv, "r", "s", std::path::Path::new("/ca.pem"));
        assert_eq!(
            e["CONCOURSE_VAULT_PATH_PREFIX"],
            "/charm-concourse-ci-concourse"
        );
        assert_eq!(e["CONCOURSE_VAULT_AUTH_PARAM"], "role_id:r,secret_id:s");
        for (k, v) in [
            ("vault_url", "ftp://x"),
            ("ca_certificate", "nope"),
            ("mount", "a b"),
            ("credentials", "[1]"),
        ] {
            let mut bad = app.clone();
            bad.insert(k.into(), v.into());
            assert_eq!(provider_data(&bad, "def"), None, "{k}");
        }
    }

    #[test]
    fn egress_is_the_subnets_then_the_bind_cidr() {
        let e = vec!["10.0.0.21/32".to_string()];
        assert_eq!(
            egress_subnet(&e, Some("10.0.0.0/24")),
            "10.0.0.21/32,10.0.0.0/24"
        );
        assert_eq!(egress_subnet(&e, Some("10.0.0.21/32")), "10.0.0.21/32");
    }
}
