//! The download progress marker (`.download_in_progress`) and status wording.
//!
//! Owns: the marker's JSON format, parsing it defensively, the throttle deciding when
//! progress is worth reporting, and the status texts built from it.
//! Invariants: the marker is informational only: it tells humans and waiting units who
//! downloads what and how far; it is never a lock. A marker that cannot be parsed, or
//! whose fields are implausible, reads as "no marker". Only the lock holder writes or
//! removes it (see `InstallLock`), so a marker seen by the lock holder belongs to a dead
//! writer.
//! Hazards: the marker's text ends up in `juju status`: unit, version and host are
//! validated and length-capped before they are shown.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::layout::{is_valid_unit_name, is_valid_version};

/// Contents of `.download_in_progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressMarker {
    /// Version being installed (no leading `v`).
    pub version: String,
    /// Juju unit doing it (`concourse-ci/0`).
    pub unit: String,
    pub pid: u32,
    pub host: String,
    /// Unix time (seconds) the install started.
    pub started: u64,
    /// Bytes of the tarball on disk so far.
    pub bytes: u64,
    /// Size of the tarball, when known.
    pub total: Option<u64>,
}

impl ProgressMarker {
    /// A new marker for this process, starting now.
    pub fn new(version: &str, unit: &str, bytes: u64, total: Option<u64>) -> ProgressMarker {
        ProgressMarker {
            version: version.to_string(),
            unit: unit.to_string(),
            pid: std::process::id(),
            host: hostname(),
            started: unix_now(),
            bytes,
            total,
        }
    }

    /// Parses marker bytes; `None` if they are not a plausible marker (treated as stale).
    pub fn parse(bytes: &[u8]) -> Option<ProgressMarker> {
        if bytes.len() > 4096 {
            return None;
        }
        let m: ProgressMarker = serde_json::from_slice(bytes).ok()?;
        let plausible = is_valid_version(&m.version)
            && is_valid_unit_name(&m.unit)
            && m.host.len() <= 255
            && !m.host.chars().any(char::is_control)
            && m.total.is_none_or(|t| m.bytes <= t);
        plausible.then_some(m)
    }

    /// The marker as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Whole percent done, when the total is known.
    pub fn percent(&self) -> Option<u8> {
        percent(self.bytes, self.total)
    }

    /// `concourse-ci/0 to download v7.14.3 (42%)`.
    pub fn describe(&self) -> String {
        format!(
            "{} to download v{} ({})",
            self.unit,
            self.version,
            amount(self.bytes, self.total)
        )
    }
}

/// `42%` when the total is known, else `123.0 MiB` (`starting` before the first byte, the
/// total being unknown until the server answered).
pub fn amount(bytes: u64, total: Option<u64>) -> String {
    match percent(bytes, total) {
        Some(p) => format!("{p}%"),
        None if bytes == 0 => "starting".to_string(),
        None => super::fmt_bytes(bytes),
    }
}

/// Whole percent, floor, clamped to 100; `None` without a (non-zero) total.
pub fn percent(bytes: u64, total: Option<u64>) -> Option<u8> {
    let total = total.filter(|t| *t > 0)?;
    let p = (u128::from(bytes) * 100 / u128::from(total)).min(100);
    Some(p as u8)
}

/// What a unit waiting for the install lock knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitInfo {
    /// The version this unit wants.
    pub wanted: String,
    /// The marker of the lock holder, if it wrote one.
    pub holder: Option<ProgressMarker>,
    /// How long this unit has waited so far.
    pub waited: Duration,
}

impl WaitInfo {
    /// `Waiting for concourse-ci/0 to download v7.14.3 (42%)`, or a generic text when
    /// the holder wrote no marker (it may be pruning, or just starting).
    pub fn status_message(&self) -> String {
        match &self.holder {
            Some(m) => format!("Waiting for {}", m.describe()),
            None => format!(
                "Waiting for another unit to finish with the release volume (to install v{})",
                self.wanted
            ),
        }
    }
}

/// Decides when progress is worth reporting: the first call, then whenever the whole
/// percent grows by `min_percent` or `min_interval` passed, and always at the end.
#[derive(Debug, Clone)]
pub struct Throttle {
    min_percent: u8,
    min_interval: Duration,
    last: Option<(Instant, Option<u8>, u64)>,
}

impl Throttle {
    pub fn new(min_percent: u8, min_interval: Duration) -> Throttle {
        Throttle {
            min_percent,
            min_interval,
            last: None,
        }
    }

    /// Every 1% or 2 s.
    pub fn standard() -> Throttle {
        Throttle::new(1, Duration::from_secs(2))
    }

    /// Whether to report `bytes` of `total` at `now`; records the report if so.
    pub fn due(&mut self, now: Instant, bytes: u64, total: Option<u64>) -> bool {
        let pct = percent(bytes, total);
        let due = match self.last {
            None => true,
            Some((t, last_pct, last_bytes)) => {
                let done = total.is_some_and(|t| bytes >= t) && last_bytes != bytes;
                let pct_step = match (pct, last_pct) {
                    (Some(p), Some(lp)) => p >= lp.saturating_add(self.min_percent.max(1)),
                    _ => false,
                };
                done || pct_step
                    || (now.duration_since(t) >= self.min_interval && last_bytes != bytes)
            }
        };
        if due {
            self.last = Some((now, pct, bytes));
        }
        due
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This machine's host name, or `unknown`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h.len() <= 255)
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> ProgressMarker {
        ProgressMarker {
            version: "7.14.3".into(),
            unit: "concourse-ci/0".into(),
            pid: 42,
            host: "juju-1".into(),
            started: 1_700_000_000,
            bytes: 42,
            total: Some(100),
        }
    }

    #[test]
    fn round_trip_and_describe() {
        let m = marker();
        let parsed = ProgressMarker::parse(&m.to_json()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(m.describe(), "concourse-ci/0 to download v7.14.3 (42%)");
        let w = WaitInfo {
            wanted: "7.14.3".into(),
            holder: Some(m),
            waited: Duration::ZERO,
        };
        assert_eq!(
            w.status_message(),
            "Waiting for concourse-ci/0 to download v7.14.3 (42%)"
        );
        let w = WaitInfo { holder: None, ..w };
        assert!(w.status_message().contains("v7.14.3"));
    }

    #[test]
    fn corrupt_or_implausible_markers_read_as_absent() {
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{".to_vec(),
            b"null".to_vec(),
            b"{\"version\":\"7.14.3\"}".to_vec(),
            br#"{"version":"../x","unit":"a/0","pid":1,"host":"h","started":0,"bytes":0,"total":null}"#.to_vec(),
            br#"{"version":"7.14.3","unit":"bad unit","pid":1,"host":"h","started":0,"bytes":0,"total":null}"#.to_vec(),
            br#"{"version":"7.14.3","unit":"a/0","pid":-1,"host":"h","started":0,"bytes":0,"total":null}"#.to_vec(),
            br#"{"version":"7.14.3","unit":"a/0","pid":1,"host":"h","started":0,"bytes":5,"total":4}"#.to_vec(),
            br#"{"version":"7.14.3","unit":"a/0","pid":1,"host":"h\n","started":0,"bytes":0,"total":null}"#.to_vec(),
            vec![b' '; 5000],
            vec![0xff, 0xfe],
        ];
        for c in cases {
            assert_eq!(
                ProgressMarker::parse(&c),
                None,
                "{:?}",
                String::from_utf8_lossy(&c)
            );
        }
        let ok = br#"{"version":"7.14.3","unit":"a/0","pid":1,"host":"h","started":0,"bytes":7,"total":null}"#;
        let m = ProgressMarker::parse(ok).unwrap();
        assert_eq!(m.describe(), "a/0 to download v7.14.3 (7 B)");
        let fresh = ProgressMarker::new("7.14.3", "a/0", 0, None);
        assert_eq!(fresh.describe(), "a/0 to download v7.14.3 (starting)");
    }

    #[test]
    fn percent_is_floored_and_clamped() {
        assert_eq!(percent(0, Some(0)), None);
        assert_eq!(percent(5, None), None);
        assert_eq!(percent(999, Some(1000)), Some(99));
        assert_eq!(percent(1000, Some(1000)), Some(100));
        assert_eq!(percent(u64::MAX, Some(1)), Some(100));
        assert_eq!(amount(3 << 20, None), "3.0 MiB");
        assert_eq!(amount(0, None), "starting");
        assert_eq!(amount(0, Some(10)), "0%");
    }

    #[test]
    fn throttle_reports_each_percent_or_interval() {
        let mut t = Throttle::new(1, Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(t.due(t0, 0, Some(1000)));
        assert!(!t.due(t0, 5, Some(1000)));
        assert!(t.due(t0, 10, Some(1000)), "1%");
        assert!(!t.due(t0, 19, Some(1000)));
        assert!(
            t.due(t0 + Duration::from_secs(2), 19, Some(1000)),
            "interval"
        );
        assert!(
            !t.due(t0 + Duration::from_secs(9), 19, Some(1000)),
            "no change"
        );
        assert!(t.due(t0 + Duration::from_secs(9), 1000, Some(1000)), "end");
        // Unknown total: time only.
        let mut t = Throttle::new(1, Duration::from_secs(2));
        assert!(t.due(t0, 0, None));
        assert!(!t.due(t0 + Duration::from_secs(1), 1 << 30, None));
        assert!(t.due(t0 + Duration::from_secs(2), 1 << 30, None));
    }
}
