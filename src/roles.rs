//! Which Concourse roles a unit runs: pure decisions from config and peer data.
//!
//! Owns: the role rules (docs/architecture.md#roles-and-relations). Invariants: in `auto` mode exactly
//! one unit is the web unit, chosen by the leader and recorded in peer app data
//! (`web-unit`); it stays while that unit is alive, whatever happens to leadership; every
//! other unit is a worker. A unit that has not yet learnt the web unit runs nothing rather
//! than guessing.

use crate::config::Mode;
use crate::juju::context::split_unit_name;

/// The roles of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles {
    pub web: bool,
    pub worker: bool,
}

impl Roles {
    pub const NONE: Roles = Roles {
        web: false,
        worker: false,
    };
    pub const WEB: Roles = Roles {
        web: true,
        worker: false,
    };
    pub const WORKER: Roles = Roles {
        web: false,
        worker: true,
    };
    pub const ALL: Roles = Roles {
        web: true,
        worker: true,
    };

    pub fn describe(self) -> &'static str {
        match (self.web, self.worker) {
            (true, true) => "web+worker",
            (true, false) => "web",
            (false, true) => "worker",
            (false, false) => "none",
        }
    }
}

/// The roles of `unit`, given the mode and the recorded web unit (auto mode).
/// `None` means "not decided yet" (auto mode before the leader recorded `web-unit`).
pub fn roles_for(mode: Mode, unit: &str, web_unit: Option<&str>) -> Option<Roles> {
    match mode {
        Mode::All => Some(Roles::ALL),
        Mode::Web => Some(Roles::WEB),
        Mode::Worker => Some(Roles::WORKER),
        Mode::Auto => web_unit.map(|w| if w == unit { Roles::WEB } else { Roles::WORKER }),
    }
}

/// The leader's choice of web unit in auto mode: keep the recorded one while it is still
/// a live unit of the application; otherwise the leader itself (it is certainly alive
/// and runs this hook).
pub fn choose_web_unit(recorded: Option<&str>, live_units: &[String], leader: &str) -> String {
    match recorded {
        Some(r) if live_units.iter().any(|u| u == r) => r.to_string(),
        _ => leader.to_string(),
    }
}

/// Sorts unit names by unit number (`app/10` after `app/9`).
pub fn sort_units(units: &mut [String]) {
    units.sort_by_key(|u| split_unit_name(u).unwrap_or_else(|| (u.clone(), u32::MAX)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fixed_modes_ignore_web_unit() {
        for w in [None, Some("a/0"), Some("a/1")] {
            assert_eq!(roles_for(Mode::All, "a/1", w), Some(Roles::ALL));
            assert_eq!(roles_for(Mode::Web, "a/1", w), Some(Roles::WEB));
            assert_eq!(roles_for(Mode::Worker, "a/1", w), Some(Roles::WORKER));
        }
    }

    #[test]
    fn auto_mode_needs_the_recorded_web_unit() {
        assert_eq!(roles_for(Mode::Auto, "a/1", None), None);
        assert_eq!(roles_for(Mode::Auto, "a/1", Some("a/1")), Some(Roles::WEB));
        assert_eq!(
            roles_for(Mode::Auto, "a/2", Some("a/1")),
            Some(Roles::WORKER)
        );
    }

    #[test]
    fn web_unit_is_sticky_across_leadership() {
        let live = units(&["a/0", "a/1", "a/2"]);
        // leader moved from a/0 to a/2: web stays on a/0
        assert_eq!(choose_web_unit(Some("a/0"), &live, "a/2"), "a/0");
        // first assignment: the leader
        assert_eq!(choose_web_unit(None, &live, "a/1"), "a/1");
        // recorded web unit gone: the leader takes over
        assert_eq!(
            choose_web_unit(Some("a/0"), &units(&["a/1", "a/2"]), "a/2"),
            "a/2"
        );
    }

    #[test]
    fn unit_sorting_is_numeric() {
        let mut u = units(&["a/10", "a/9", "a/1"]);
        sort_units(&mut u);
        assert_eq!(u, units(&["a/1", "a/9", "a/10"]));
    }
}
