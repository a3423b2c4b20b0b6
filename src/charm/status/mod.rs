//! Picking the one status a unit shows from what each part of the reconcile reported.
//!
//! Owns: [`Reports`] and, in [`messages`], the catalogue of every status text.
//! Invariant: the most urgent report wins (blocked > maintenance > waiting > active), and
//! among equals the first reported; every status names the version where one is known;
//! notes (warnings about a working unit) are appended to an active status only.

pub mod messages;

use crate::juju::{Status, StatusKind};

/// Collects status reports during one reconcile.
#[derive(Debug, Default)]
pub struct Reports {
    items: Vec<Status>,
    /// Warnings shown after an active status (`; `-joined), never instead of another.
    notes: Vec<String>,
}

fn rank(k: StatusKind) -> u8 {
    match k {
        StatusKind::Blocked => 4,
        StatusKind::Maintenance => 3,
        StatusKind::Waiting => 2,
        StatusKind::Active => 1,
        StatusKind::Unknown => 0,
    }
}

impl Reports {
    pub fn push(&mut self, s: Status) {
        self.items.push(s);
    }

    pub fn blocked(&mut self, m: impl Into<String>) {
        self.push(Status::blocked(m));
    }

    pub fn waiting(&mut self, m: impl Into<String>) {
        self.push(Status::waiting(m));
    }

    pub fn maintenance(&mut self, m: impl Into<String>) {
        self.push(Status::maintenance(m));
    }

    pub fn active(&mut self, m: impl Into<String>) {
        self.push(Status::active(m));
    }

    /// A warning about a working unit, shown at the end of its active status.
    pub fn note(&mut self, m: impl Into<String>) {
        let m = m.into();
        if !self.notes.contains(&m) {
            self.notes.push(m);
        }
    }

    /// Adds `other`'s reports (and notes) after these.
    pub fn append(&mut self, other: Reports) {
        self.items.extend(other.items);
        for n in other.notes {
            self.note(n);
        }
    }

    /// Where the reports stand now, to take what a part of the reconcile reported
    /// ([`Reports::active_since`]).
    pub fn mark(&self) -> (usize, usize) {
        (self.items.len(), self.notes.len())
    }

    /// What was reported since `mark` (statuses, notes), when every status was active.
    pub fn active_since(&self, mark: (usize, usize)) -> Option<(Vec<String>, Vec<String>)> {
        let items = self.items.get(mark.0..)?;
        if !items.iter().all(|s| s.kind == StatusKind::Active) {
            return None;
        }
        let notes = self.notes.get(mark.1..)?.to_vec();
        Some((items.iter().map(|s| s.message.clone()).collect(), notes))
    }

    /// Reports again what [`Reports::active_since`] returned.
    pub fn replay(&mut self, active: &[String], notes: &[String]) {
        for m in active {
            self.active(m.clone());
        }
        for n in notes {
            self.note(n.clone());
        }
    }

    /// Whether every report so far is active (nothing waits, blocks or is under way).
    pub fn all_active(&self) -> bool {
        self.items.iter().all(|s| s.kind == StatusKind::Active)
    }

    pub fn has_blocking(&self) -> bool {
        self.items.iter().any(|s| s.kind == StatusKind::Blocked)
    }

    /// The status to show: the most urgent report; active ones are joined.
    pub fn pick(&self) -> Status {
        let Some(top) = self.items.iter().map(|s| rank(s.kind)).max() else {
            return messages::NOTHING_REPORTED.status();
        };
        let same: Vec<&Status> = self.items.iter().filter(|s| rank(s.kind) == top).collect();
        if same[0].kind == StatusKind::Active {
            let msg = same
                .iter()
                .map(|s| s.message.as_str())
                .chain(self.notes.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("; ");
            return Status::active(msg);
        }
        same[0].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_urgent_wins_and_actives_join() {
        let mut r = Reports::default();
        assert_eq!(r.pick().kind, StatusKind::Waiting);
        r.active("Web ready (v1.0.0) http://x:8080");
        r.active("Worker ready (v1.0.0)");
        assert_eq!(
            r.pick().message,
            "Web ready (v1.0.0) http://x:8080; Worker ready (v1.0.0)"
        );
        r.note("careful");
        r.note("careful");
        assert_eq!(
            r.pick().message,
            "Web ready (v1.0.0) http://x:8080; Worker ready (v1.0.0); careful"
        );
        r.waiting("Waiting for PostgreSQL");
        r.waiting("second");
        assert_eq!(r.pick(), Status::waiting("Waiting for PostgreSQL"));
        r.maintenance("Downloading");
        r.blocked("invalid mode");
        assert_eq!(r.pick(), Status::blocked("invalid mode"));
        assert!(r.has_blocking());
    }
}
