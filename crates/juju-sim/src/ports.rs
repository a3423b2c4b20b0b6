//! Opened ports as Juju keeps them: per unit, grouped by endpoint (`""` = every endpoint),
//! requested by `open-port`/`close-port [--endpoints a,b]` during a hook and applied when
//! the hook commits. Shared by the simulator and the charm's in-process fake Juju.
//!
//! Derived from juju/juju (3.x): the tools in `internal/worker/uniter/runner/jujuc/ports.go`
//! (`--endpoints` is split on `,` and trimmed; one request per endpoint, or one for `""`)
//! and `opened-ports.go` (`--endpoints` shows `80/tcp (a, b)` or `80/tcp (*)`); the hook's
//! recorder in `internal/worker/uniter/runner/context/ports.go` (conflicts are refused
//! when the tool runs; `opened-ports` shows the committed ranges merged with the hook's
//! requests); the commit in `state/machine_ports_ops.go`; parsing, order and conflicts in
//! `core/network/port_range.go`.
//!
//! Invariants (the commit, in Juju's order): an endpoint the charm does not define fails
//! the whole commit (so the hook fails); opens are merged first (a range already open for
//! every endpoint is not opened again for one), then endpoint entries that repeat a
//! wildcard entry are pruned, then closes apply: a close without endpoints removes the
//! range everywhere; a close for one endpoint of a range open for every endpoint replaces
//! the wildcard entry with one entry per other bound endpoint.
//!
//! Hazard (real, and why charms must care): opening a range for an endpoint and closing
//! its wildcard entry in the same hook leaves it closed, because the close applies after
//! the open was found redundant.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A port range's protocol (ordered as Juju sorts them: by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Icmp,
    Tcp,
    Udp,
}

/// One port or range (`80/tcp`, `8000-8999/udp`, `icmp`), ordered by protocol then ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub protocol: Protocol,
    pub from: u16,
    pub to: u16,
}

impl PortRange {
    /// Parses what `open-port` accepts (lower-cased first, as the tool does).
    pub fn parse(spec: &str) -> Result<PortRange, String> {
        let spec = spec.to_ascii_lowercase();
        let bad = || {
            format!(
                "expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp; got {spec:?}"
            )
        };
        if spec == "icmp" {
            return Ok(PortRange {
                protocol: Protocol::Icmp,
                from: 0,
                to: 0,
            });
        }
        let (range, proto) = spec.split_once('/').unwrap_or((&spec, "tcp"));
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => {
                return Err(format!(
                    r#"protocol "icmp" doesn't support any ports; got {range:?}"#
                ))
            }
            _ => {
                return Err(format!(
                    r#"protocol must be "tcp", "udp", or "icmp"; got {proto:?}"#
                ))
            }
        };
        let port = |s: &str| -> Result<u16, String> {
            let n: u32 = s.parse().map_err(|_| bad())?;
            u16::try_from(n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!(r#"port must be in the range [1, 65535]; got "{n}""#))
        };
        let (from, to) = match range.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(range)?, port(range)?),
        };
        if from > to {
            return Err(format!(
                "invalid port range {from}-{to}/{proto}; expected fromPort <= toPort"
            ));
        }
        Ok(PortRange { protocol, from, to })
    }

    /// Whether two ranges overlap (`ConflictsWith`).
    pub fn conflicts_with(&self, other: &PortRange) -> bool {
        self.protocol == other.protocol && self.from <= other.to && other.from <= self.to
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Icmp => return f.write_str("icmp"),
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        if self.from == self.to {
            write!(f, "{}/{proto}", self.from)
        } else {
            write!(f, "{}-{}/{proto}", self.from, self.to)
        }
    }
}

/// One unit's opened ranges by endpoint; `""` holds the ranges open for every endpoint.
pub type Grouped = BTreeMap<String, BTreeSet<PortRange>>;

/// Every unit's opened ranges on one machine (the scope of conflicts).
pub type MachinePorts = BTreeMap<String, Grouped>;

/// The endpoints a request names: `--endpoints a, b` or, without it, every endpoint (`""`).
pub fn endpoints_arg(value: Option<&str>) -> Vec<String> {
    match value {
        None | Some("") => vec![String::new()],
        Some(v) => v.split(',').map(|e| e.trim().to_string()).collect(),
    }
}

/// The open and close requests of one hook, checked as the tools run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    pub open: Grouped,
    pub close: Grouped,
}

/// Whether `pr` for `endpoint` is already among `ranges` of `unit` (Ok(true)), may be
/// added (Ok(false)), or conflicts (`checkForConflict`).
fn check(
    unit: &str,
    endpoint: &str,
    pr: &PortRange,
    other: &str,
    ranges: &Grouped,
    earlier: bool,
) -> Result<bool, String> {
    for (ep, set) in ranges {
        for existing in set.iter().filter(|r| pr.conflicts_with(r)) {
            if other == unit && existing == pr {
                if ep != endpoint {
                    continue;
                }
                return Ok(true);
            }
            let when = if earlier { " requested earlier" } else { "" };
            return Err(format!(
                "port range conflicts with {existing} (unit {other:?}){when}"
            ));
        }
    }
    Ok(false)
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.open.values().all(BTreeSet::is_empty) && self.close.values().all(BTreeSet::is_empty)
    }

    /// `open-port` for one endpoint (`""`: all). `machine` holds the committed ranges of
    /// every unit on the unit's machine.
    pub fn open(
        &mut self,
        unit: &str,
        endpoint: &str,
        pr: PortRange,
        machine: &MachinePorts,
    ) -> Result<(), String> {
        let annotate = |e: String| format!("cannot open {pr} (unit {unit:?}): {e}");
        if let Some(set) = self.close.get_mut(endpoint) {
            set.remove(&pr);
        }
        if check(unit, endpoint, &pr, unit, &self.open, true).map_err(annotate)? {
            return Ok(());
        }
        for (other, ranges) in machine {
            if check(unit, endpoint, &pr, other, ranges, false).map_err(annotate)? {
                return Ok(());
            }
        }
        self.open
            .entry(endpoint.to_string())
            .or_default()
            .insert(pr);
        Ok(())
    }

    /// `close-port` for one endpoint (`""`: all).
    pub fn close(
        &mut self,
        unit: &str,
        endpoint: &str,
        pr: PortRange,
        machine: &MachinePorts,
    ) -> Result<(), String> {
        let annotate = |e: String| format!("cannot close {pr} (unit {unit:?}): {e}");
        if let Some(set) = self.open.get_mut(endpoint) {
            set.remove(&pr);
        }
        if check(unit, endpoint, &pr, unit, &self.close, true).map_err(annotate)? {
            return Ok(());
        }
        for (other, ranges) in machine {
            // An exact match of this unit's own range is what a close is for.
            check(unit, endpoint, &pr, other, ranges, false).map_err(annotate)?;
        }
        if machine.values().all(Grouped::is_empty) {
            return Ok(());
        }
        self.close
            .entry(endpoint.to_string())
            .or_default()
            .insert(pr);
        Ok(())
    }

    /// What `opened-ports` shows during the hook: the committed ranges with this hook's
    /// requests merged per endpoint (`OpenedUnitPortRanges`; a merge, not the commit).
    pub fn view(&self, committed: &Grouped) -> Grouped {
        let mut out = committed.clone();
        for (ep, set) in &self.open {
            out.entry(ep.clone())
                .or_default()
                .extend(set.iter().copied());
        }
        for (ep, set) in &self.close {
            if let Some(have) = out.get_mut(ep) {
                for pr in set {
                    have.remove(pr);
                }
            }
        }
        out.retain(|_, set| !set.is_empty());
        out
    }
}

/// `opened-ports` lines: unique ranges in Juju's order, or with `(endpoints)`/`(*)`.
pub fn render(grouped: &Grouped, with_endpoints: bool) -> Vec<String> {
    let mut by_range: BTreeMap<PortRange, BTreeSet<&str>> = BTreeMap::new();
    for (ep, set) in grouped {
        for pr in set {
            by_range.entry(*pr).or_default().insert(ep.as_str());
        }
    }
    by_range
        .into_iter()
        .map(|(pr, eps)| {
            if !with_endpoints {
                pr.to_string()
            } else if eps.contains("") {
                format!("{pr} (*)")
            } else {
                format!("{pr} ({})", eps.into_iter().collect::<Vec<_>>().join(", "))
            }
        })
        .collect()
}

/// Applies `unit`'s requests to its machine's ranges, as the controller does when the
/// hook commits. `bound` is every endpoint of the unit's charm. On error nothing changed.
pub fn commit(
    machine: &MachinePorts,
    unit: &str,
    pending: &Pending,
    bound: &BTreeSet<String>,
) -> Result<MachinePorts, String> {
    let prefix = "cannot open/close ports";
    for (verb, requests) in [("open", &pending.open), ("close", &pending.close)] {
        if let Some(ep) = requests
            .keys()
            .find(|ep| !ep.is_empty() && !bound.contains(*ep))
        {
            return Err(format!(
                "{prefix}: {verb} port range: endpoint {ep:?} for unit {unit:?} not found"
            ));
        }
    }
    let mut out = machine.clone();
    let owner = |out: &MachinePorts, pr: &PortRange| -> Option<String> {
        out.iter()
            .find(|(_, g)| g.values().any(|s| s.contains(pr)))
            .map(|(u, _)| u.clone())
    };
    let conflict = |out: &MachinePorts, pr: &PortRange| -> Result<(), String> {
        for (u, g) in out {
            if let Some(x) = g.values().flatten().find(|x| x.conflicts_with(pr)) {
                return Err(format!(
                    "port ranges {x} ({u:?}) and {pr} ({unit:?}) conflict"
                ));
            }
        }
        Ok(())
    };
    for (ep, set) in &pending.open {
        for pr in set {
            let mine = out.get(unit).cloned().unwrap_or_default();
            if owner(&out, pr).as_deref() == Some(unit) {
                let has = |e: &str| mine.get(e).is_some_and(|s| s.contains(pr));
                if has("") || has(ep) {
                    continue;
                }
            } else {
                conflict(&out, pr).map_err(|e| format!("cannot open ports {pr}: {e}"))?;
            }
            let g = out.entry(unit.to_string()).or_default();
            g.entry(ep.clone()).or_default().insert(*pr);
        }
    }
    if let Some(g) = out.get_mut(unit) {
        let wildcard = g.get("").cloned().unwrap_or_default();
        for (_, set) in g.iter_mut().filter(|(ep, _)| !ep.is_empty()) {
            set.retain(|pr| !wildcard.contains(pr));
        }
    }
    for (ep, set) in &pending.close {
        for pr in set {
            if owner(&out, pr).as_deref() != Some(unit) {
                conflict(&out, pr).map_err(|e| format!("cannot close ports {pr}: {e}"))?;
                continue;
            }
            if let Some(g) = out.get_mut(unit) {
                remove(g, ep, pr, bound);
            }
        }
    }
    for g in out.values_mut() {
        g.retain(|_, set| !set.is_empty());
    }
    out.retain(|_, g| !g.is_empty());
    Ok(out)
}

/// `removePortRange`: a wildcard close removes the range everywhere; an endpoint close
/// removes it there and turns a wildcard entry into entries for the other endpoints.
fn remove(g: &mut Grouped, endpoint: &str, pr: &PortRange, bound: &BTreeSet<String>) {
    if endpoint.is_empty() {
        for set in g.values_mut() {
            set.remove(pr);
        }
        return;
    }
    if let Some(set) = g.get_mut(endpoint) {
        set.remove(pr);
    }
    if g.get_mut("").is_some_and(|set| set.remove(pr)) {
        for ep in bound.iter().filter(|ep| *ep != endpoint) {
            g.entry(ep.clone()).or_default().insert(*pr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(s: &str) -> PortRange {
        PortRange::parse(s).unwrap()
    }

    fn bound() -> BTreeSet<String> {
        ["monitoring", "peers", "juju-info"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn machine(unit: &str, pairs: &[(&str, &str)]) -> MachinePorts {
        let mut g = Grouped::new();
        for (ep, p) in pairs {
            g.entry(ep.to_string()).or_default().insert(pr(p));
        }
        [(unit.to_string(), g)].into()
    }

    #[test]
    fn parses_and_prints_as_juju() {
        assert_eq!(pr("80").to_string(), "80/tcp");
        assert_eq!(pr("8000-8999/UDP").to_string(), "8000-8999/udp");
        assert_eq!(pr("icmp").to_string(), "icmp");
        for bad in ["0", "9-1", "80/sctp", "70000", "x", "80/icmp"] {
            assert!(PortRange::parse(bad).is_err(), "{bad}");
        }
        let mut v = [pr("9391"), pr("80"), pr("53/udp"), pr("icmp"), pr("2222")];
        v.sort();
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["icmp", "80/tcp", "2222/tcp", "9391/tcp", "53/udp"]);
    }

    #[test]
    fn endpoint_scoped_open_and_render() {
        let mut p = Pending::default();
        for ep in endpoints_arg(Some("monitoring, peers")) {
            p.open("a/0", &ep, pr("9391"), &MachinePorts::new())
                .unwrap();
        }
        p.open("a/0", "", pr("8080"), &MachinePorts::new()).unwrap();
        let m = commit(&MachinePorts::new(), "a/0", &p, &bound()).unwrap();
        assert_eq!(
            render(&m["a/0"], true),
            ["8080/tcp (*)", "9391/tcp (monitoring, peers)"]
        );
        assert_eq!(render(&m["a/0"], false), ["8080/tcp", "9391/tcp"]);
    }

    #[test]
    fn unknown_endpoint_fails_the_commit() {
        let mut p = Pending::default();
        p.open("a/0", "nope", pr("9391"), &MachinePorts::new())
            .unwrap();
        let e = commit(&MachinePorts::new(), "a/0", &p, &bound()).unwrap_err();
        assert!(
            e.contains(r#"endpoint "nope" for unit "a/0" not found"#),
            "{e}"
        );
    }

    #[test]
    fn wildcard_close_and_scoped_open_in_one_hook_leave_it_closed() {
        let m = machine("a/0", &[("", "9391")]);
        let mut p = Pending::default();
        p.close("a/0", "", pr("9391"), &m).unwrap();
        p.open("a/0", "monitoring", pr("9391"), &m).unwrap();
        let after = commit(&m, "a/0", &p, &bound()).unwrap();
        assert!(after.is_empty(), "{after:?}");
    }

    #[test]
    fn scoped_close_of_a_wildcard_range_keeps_it_on_the_other_endpoints() {
        let m = machine("a/0", &[("", "9391")]);
        let mut p = Pending::default();
        p.close("a/0", "peers", pr("9391"), &m).unwrap();
        let after = commit(&m, "a/0", &p, &bound()).unwrap();
        assert_eq!(
            render(&after["a/0"], true),
            ["9391/tcp (juju-info, monitoring)"]
        );
    }

    #[test]
    fn wildcard_open_absorbs_scoped_entries_and_wildcard_close_removes_all() {
        let m = machine("a/0", &[("monitoring", "9391")]);
        let mut p = Pending::default();
        p.open("a/0", "", pr("9391"), &m).unwrap();
        let after = commit(&m, "a/0", &p, &bound()).unwrap();
        assert_eq!(render(&after["a/0"], true), ["9391/tcp (*)"]);
        let mut p = Pending::default();
        p.close("a/0", "", pr("9391"), &after).unwrap();
        assert!(commit(&after, "a/0", &p, &bound()).unwrap().is_empty());
    }

    #[test]
    fn conflicts_are_refused_when_the_tool_runs() {
        let mut m = machine("a/0", &[("", "8000-8100")]);
        let mut p = Pending::default();
        let e = p.open("a/0", "", pr("8080"), &m).unwrap_err();
        assert!(e.contains("conflicts with 8000-8100/tcp"), "{e}");
        m.insert("b/0".into(), Grouped::new());
        let e = p.open("b/0", "", pr("8080"), &m).unwrap_err();
        assert!(e.contains(r#"(unit "a/0")"#), "{e}");
        p.open("a/0", "", pr("9000"), &m).unwrap();
        let e = p.open("a/0", "", pr("8990-9010"), &m).unwrap_err();
        assert!(e.ends_with("requested earlier"), "{e}");
    }

    #[test]
    fn the_hook_sees_its_own_requests() {
        let m = machine("a/0", &[("", "8080")]);
        let mut p = Pending::default();
        p.open("a/0", "monitoring", pr("9391"), &m).unwrap();
        p.close("a/0", "", pr("8080"), &m).unwrap();
        assert_eq!(render(&p.view(&m["a/0"]), true), ["9391/tcp (monitoring)"]);
    }

    #[test]
    fn closing_on_a_machine_without_ports_is_a_no_op() {
        let mut p = Pending::default();
        p.close("a/0", "", pr("8080"), &MachinePorts::new())
            .unwrap();
        assert!(p.is_empty());
    }
}
