//! TLS for web through the `tls-certificates` interface (v4, unit mode): the private key,
//! the certificate signing request, and reading what the provider issued. Pure apart
//! from the key generator's randomness.
//!
//! Protocol (canonical/tls-certificates-interface
//! `lib/charms/tls_certificates_interface/v4/tls_certificates.py`, LIBPATCH 27): each
//! requirer unit writes `certificate_signing_requests`, a JSON list of
//! `{"certificate_signing_request": <PEM, stripped>, "ca": false}`, in its unit
//! databag; the provider answers in its app databag with `certificates`, a JSON list of
//! `{"certificate_signing_request", "certificate", "ca", "chain"[, "revoked": true]}`.
//! The requirer matches an entry by CSR equality and checks that the certificate's
//! public key is its own (`_find_certificate_in_relation_data`); a revoked entry is not
//! used. Renewal is the requirer's: a new CSR with the same key once 90% of the
//! certificate's life has passed (`renewal_relative_time`, default 0.9).
//!
//! Hazards: the private key never leaves the unit (no databag, no log); provider data is
//! outside input: malformed entries are skipped, never a panic.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the TLS private key")]
    Key(#[source] rcgen::Error),
    #[error("the TLS private key on disk cannot be read; remove it and a new one is made")]
    BadKey(#[source] rcgen::Error),
    #[error("cannot build the certificate signing request for {name:?}")]
    Csr {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A new private key (ECDSA P-256), PEM. Concourse loads it with Go's
/// `tls.LoadX509KeyPair`, which takes ECDSA keys too.
pub fn generate_key() -> Result<String, TlsError> {
    rcgen::KeyPair::generate()
        .map(|k| k.serialize_pem())
        .map_err(TlsError::Key)
}

/// The SubjectPublicKeyInfo (DER) of a PEM private key.
pub fn public_key_der(key_pem: &str) -> Result<Vec<u8>, TlsError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(TlsError::BadKey)?;
    Ok(key.public_key_der())
}

/// A CSR (PEM, stripped) for `names`: the first is the common name; IP addresses become
/// IP SANs, others DNS SANs.
pub fn csr(key_pem: &str, names: &[String]) -> Result<String, TlsError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(TlsError::BadKey)?;
    let first = names.first().cloned().unwrap_or_default();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, first.clone());
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => match rcgen::Ia5String::try_from(n.as_str()) {
                Ok(dns) => rcgen::SanType::DnsName(dns),
                Err(source) => {
                    return Err(TlsError::Csr {
                        name: n.clone(),
                        source,
                    })
                }
            },
        };
        params.subject_alt_names.push(san);
    }
    let req = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|source| TlsError::Csr {
            name: first,
            source,
        })?;
    Ok(req.trim().to_string())
}

/// The unit databag value of `certificate_signing_requests` for one CSR.
pub fn requests_value(csr: &str) -> String {
    json!([{"certificate_signing_request": csr.trim(), "ca": false}]).to_string()
}

/// One entry of the provider's `certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Issued {
    pub certificate_signing_request: String,
    pub certificate: String,
    #[serde(default)]
    pub ca: String,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub revoked: Option<bool>,
}

impl Issued {
    pub fn is_revoked(&self) -> bool {
        self.revoked == Some(true)
    }

    /// What web serves: the leaf then the rest of the chain (the leaf once).
    pub fn fullchain(&self) -> String {
        let leaf = self.certificate.trim();
        let mut out = format!("{leaf}\n");
        for c in self.chain.iter().map(|c| c.trim()).filter(|c| *c != leaf) {
            out.push_str(c);
            out.push('\n');
        }
        out
    }
}

/// The provider's entries; a value that is not the expected JSON gives none, a malformed
/// entry is skipped.
pub fn parse_certificates(raw: Option<&str>) -> Vec<Issued> {
    let Some(Ok(serde_json::Value::Array(items))) =
        raw.map(serde_json::from_str::<serde_json::Value>)
    else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    pub public_key: Vec<u8>,
}

/// Parses a PEM certificate (the first one).
pub fn cert_info(pem: &str) -> Option<CertInfo> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
    let cert = p.parse_x509().ok()?;
    let v = cert.validity();
    Some(CertInfo {
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
        public_key: cert.public_key().raw.to_vec(),
    })
}

impl CertInfo {
    /// 90% of its life has passed (the library's default renewal point).
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_before + life * 9 / 10
    }

    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Whether `csr` (PEM) was made with the key whose SubjectPublicKeyInfo is `public_key`
/// (false for a CSR that does not parse).
pub fn csr_is_for(csr: &str, public_key: &[u8]) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((_, p)) = x509_parser::pem::parse_x509_pem(csr.trim().as_bytes()) else {
        return false;
    };
    x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
        .is_ok_and(|(_, r)| r.certification_request_info.subject_pki.raw == public_key)
}

/// The entry answering `csr` whose certificate carries `public_key` (revoked or not).
pub fn answer_to<'a>(issued: &'a [Issued], csr: &str, public_key: &[u8]) -> Option<&'a Issued> {
    issued.iter().find(|i| {
        i.certificate_signing_request.trim() == csr.trim()
            && cert_info(&i.certificate).is_some_and(|c| c.public_key == public_key)
    })
}

/// The certificate to serve: not revoked, valid now, for this key; the one answering
/// the current CSR first, else the longest-lived other (an older CSR's, while a renewal
/// is pending).
pub fn to_serve<'a>(
    issued: &'a [Issued],
    csr: &str,
    public_key: &[u8],
    now: i64,
) -> Option<&'a Issued> {
    let usable = |i: &&Issued| {
        !i.is_revoked()
            && cert_info(&i.certificate)
                .is_some_and(|c| c.public_key == public_key && c.valid_at(now))
    };
    if let Some(i) = answer_to(issued, csr, public_key).filter(usable) {
        return Some(i);
    }
    issued
        .iter()
        .filter(usable)
        .max_by_key(|i| cert_info(&i.certificate).map_or(0, |c| c.not_after))
}

/// The unit's current request, as recorded on the unit (0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub csr: String,
    /// The names the CSR was made for (common name first).
    pub names: Vec<String>,
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A provider's answer to `csr`, signed by a throw-away CA, valid from `from` for
    /// `days` days (unix seconds).
    pub fn sign(csr: &str, from: i64, days: i64) -> Issued {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(vec!["test-ca".to_string()]).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let req = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
        let mut params = req.params;
        params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(from + days * 86_400).unwrap();
        let cert = params.signed_by(&req.public_key, &ca, &ca_key).unwrap();
        Issued {
            certificate_signing_request: csr.to_string(),
            certificate: cert.pem().trim().to_string(),
            ca: ca.pem().trim().to_string(),
            chain: vec![cert.pem().trim().to_string(), ca.pem().trim().to_string()],
            revoked: None,
        }
    }

    #[test]
    fn a_csr_carries_the_names_and_a_signed_answer_matches_the_key() {
        let key = generate_key().unwrap();
        let names = vec![
            "ci.example.com".to_string(),
            "10.1.0.10".into(),
            "fd42::10".into(),
        ];
        let csr = csr(&key, &names).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert_eq!(parsed.params.subject_alt_names.len(), 3);
        let issued = vec![sign(&csr, 1_700_000_000, 90)];
        let spki = public_key_der(&key).unwrap();
        assert!(answer_to(&issued, &csr, &spki).is_some());
        let other = public_key_der(&generate_key().unwrap()).unwrap();
        assert!(answer_to(&issued, &csr, &other).is_none(), "another key's");
        assert!(csr_is_for(&csr, &spki));
        assert!(!csr_is_for(&csr, &other));
        assert!(!csr_is_for("not a csr", &spki));
        let info = cert_info(&issued[0].certificate).unwrap();
        assert!(!info.renewal_due(1_700_000_000 + 80 * 86_400));
        assert!(info.renewal_due(1_700_000_000 + 82 * 86_400));
        assert!(to_serve(&issued, &csr, &spki, 1_700_000_100).is_some());
        assert!(to_serve(&issued, &csr, &spki, 1_700_000_000 + 91 * 86_400).is_none());
        let mut revoked = issued.clone();
        revoked[0].revoked = Some(true);
        assert!(to_serve(&revoked, &csr, &spki, 1_700_000_100).is_none());
    }

    #[test]
    fn provider_data_that_is_not_the_schema_gives_nothing() {
        assert!(parse_certificates(None).is_empty());
        assert!(parse_certificates(Some("not json")).is_empty());
        assert!(parse_certificates(Some("{}")).is_empty());
        let one = parse_certificates(Some(
            r#"[{"certificate_signing_request": "x", "certificate": "y"}, {"bad": 1}]"#,
        ));
        assert_eq!(one.len(), 1);
        assert!(cert_info("garbage").is_none());
    }
}
