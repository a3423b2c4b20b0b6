//! Per-unit state on the volume: `units/<unit>/state.json`.
//!
//! Owns: the state file format (role, running version, pointer target, heartbeat,
//! sharing nonce, cached latest-version lookup) and its forward compatibility: fields
//! this revision does not know are kept on rewrite.
//! Invariants: only the unit itself writes its own file (Juju runs one hook at a time
//! per unit), always through an atomic write that is skipped when nothing changed; other
//! units only read it. A missing, unreadable-as-JSON or implausible file reads as "no
//! state" (the charm recomputes everything it records here).
//! Hazards: on a volume that is not really shared, each unit sees only its own file;
//! that is exactly what the nonce check detects (`docs/architecture.md#proving-sharing`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A cached result of the "latest release" lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLatest {
    /// Version found (no leading `v`).
    pub version: String,
    /// Unix time (seconds) of the lookup, by this unit's clock.
    pub checked_at: u64,
}

/// Contents of `units/<unit>/state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitState {
    /// `web`, `worker` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Version this unit's services run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    /// Where this unit's release pointer points (e.g. `<volume>/releases/7.14.3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer_target: Option<String>,
    /// Unix time (seconds) of the last hook that touched this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<u64>,
    /// Proof-of-sharing nonce (`docs/architecture.md#proving-sharing`), also published in
    /// the peer unit databag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The nonce before the last rotation: peers may still see it in a frozen
    /// relation snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_nonce: Option<String>,
    /// Cached "latest release" lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<CachedLatest>,
    /// Fields written by other revisions of the charm, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl UnitState {
    /// Parses a state file; `None` when it is not a JSON object of the expected shape.
    pub fn parse(bytes: &[u8]) -> Option<UnitState> {
        if bytes.len() > 1 << 20 {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_else(|_| b"{}".to_vec());
        v.push(b'\n');
        v
    }

    /// Whether `nonce` is this unit's current or previous nonce.
    pub fn has_nonce(&self, nonce: &str) -> bool {
        !nonce.is_empty()
            && (self.nonce.as_deref() == Some(nonce)
                || self.previous_nonce.as_deref() == Some(nonce))
    }
}

/// A new random nonce: 128 bits from the OS CSPRNG, as 32 lowercase hex digits.
pub fn new_nonce() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_and_defaults_apply() {
        let s = UnitState::parse(br#"{"role":"web","future":{"a":1}}"#).unwrap();
        assert_eq!(s.role.as_deref(), Some("web"));
        assert_eq!(s.running_version, None);
        let back = String::from_utf8(s.to_json()).unwrap();
        assert!(back.contains("\"future\""), "{back}");
        assert!(!back.contains("running_version"), "{back}");
    }

    #[test]
    fn corrupt_reads_as_none() {
        for bad in [&b""[..], b"[]", b"{", b"{\"role\":5}", b"\xff"] {
            assert_eq!(UnitState::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nonces() {
        let a = new_nonce().unwrap();
        let b = new_nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let s = UnitState {
            nonce: Some(a.clone()),
            previous_nonce: Some(b.clone()),
            ..Default::default()
        };
        assert!(s.has_nonce(&a) && s.has_nonce(&b));
        assert!(!s.has_nonce("") && !s.has_nonce("x"));
    }
}
