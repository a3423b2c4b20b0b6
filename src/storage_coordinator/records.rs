//! Per-version records on the volume: the verification result of a published release
//! and the last install failure worth remembering.
//!
//! Owns: `verified/<version>.json` ([`VerifyRecord`]) and `failed/<version>.json`
//! ([`FailureRecord`]), written only by the install lock holder (the methods live on
//! `InstallLock`), read by anyone.
//! Invariants: a published release is used only with an `ok` verification record
//! (`docs/architecture.md#install-protocol`); a failure record names the source (a hash:
//! URLs may hold credentials) and the digests it was expected to have, so any change of
//! either makes it stale; records are replaced atomically and removed with the release.
//! Hazards: the records sit on the shared, writable volume like the release itself: they
//! say what a unit found, they are not the trust anchor (the leader's published digests
//! are, see `crate::installer::trust`).

use serde::{Deserialize, Serialize};

/// The verification of one published release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub version: String,
    pub ok: bool,
    /// Why it failed (empty when ok).
    #[serde(default)]
    pub detail: String,
    /// The sha256 of the tarball the release came from (ties the record to one install).
    pub tarball_sha256: String,
    /// The unit that verified it, and when (Unix seconds).
    pub by: String,
    pub at: u64,
}

/// An install that failed on the tarball's content (digest, archive): not tried again
/// while the source and the expected digests are the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub version: String,
    /// sha256 of the source's identity: the URL (with its query), or the resource's
    /// path, size and modification time.
    pub source: String,
    /// The upstream `.sha1` the tarball was checked against (URL sources).
    pub sha1: Option<String>,
    /// The pinned sha256 (`release-sha256`), if any.
    pub sha256: Option<String>,
    /// The status message of the failure.
    pub message: String,
    pub by: String,
    pub at: u64,
}

impl FailureRecord {
    /// Whether this failure is about the same tarball as an attempt with these inputs.
    pub fn same_attempt(&self, source: &str, sha1: Option<&str>, sha256: Option<&str>) -> bool {
        self.source == source && self.sha1.as_deref() == sha1 && self.sha256.as_deref() == sha256
    }
}

pub(super) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_the_same_attempt_only_with_the_same_source_and_digests() {
        let r = FailureRecord {
            version: "7.14.3".into(),
            source: "s".into(),
            sha1: Some("a".into()),
            sha256: None,
            message: "m".into(),
            by: "u/0".into(),
            at: 1,
        };
        assert!(r.same_attempt("s", Some("a"), None));
        assert!(!r.same_attempt("s", Some("b"), None), ".sha1 changed");
        assert!(!r.same_attempt("t", Some("a"), None), "source changed");
        assert!(!r.same_attempt("s", Some("a"), Some("p")), "pin changed");
        let back: FailureRecord = serde_json::from_slice(&to_json(&r)).unwrap();
        assert_eq!(back, r);
    }
}
