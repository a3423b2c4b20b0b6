//! Multi-unit tests of the real `dispatch` in the Juju simulator (`crates/juju-sim`), with
//! the fake systemd (`crates/fake-systemd`) and the release fixtures (`crates/release-fixtures`):
//! tier 4 of `docs/architecture.md#testing-tiers`. Needs root.
//!
//! This binary is also every hook tool and the fake `systemctl` on the simulated units
//! (multicall): `main` hands over to them before running any test.

mod common;
mod drain;
mod faults;
mod lifecycle;
mod observe;
mod roles;
mod storage;
mod teams;
mod upgrade;

use libtest_mimic::{Arguments, Trial};

#[allow(clippy::disallowed_methods)] // harness knobs, not the charm's environment
fn main() {
    sim_tools::register();
    juju_sim::multicall::run_if_tool();
    // `cargo xtask test` builds the same tools small and static (crates/sim-tools): a tool
    // call then costs about a third of loading this binary.
    if let Some(exe) = std::env::var_os("SIM_TOOLS") {
        juju_sim::multicall::set_executable(exe);
    }
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(test_threads());
    }
    let mut trials: Vec<Trial> = Vec::new();
    trials.extend(common::trials());
    trials.extend(drain::trials());
    trials.extend(lifecycle::trials());
    trials.extend(observe::trials());
    trials.extend(roles::trials());
    trials.extend(storage::trials());
    trials.extend(upgrade::trials());
    trials.extend(teams::trials());
    trials.extend(upgrade::bench_trials());
    trials.extend(faults::trials());
    // The longest scenarios first (a stable sort: the others keep their order). A name
    // there that matches no scenario (renamed) would quietly stop ordering it.
    let unknown: Vec<&&str> = common::LONGEST
        .iter()
        .filter(|n| !trials.iter().any(|t| t.name() == **n))
        .collect();
    if !unknown.is_empty() {
        eprintln!("common::LONGEST names no scenario: {unknown:?}");
        std::process::exit(1);
    }
    trials.sort_by_key(|t| {
        common::LONGEST
            .iter()
            .position(|n| t.name() == *n)
            .unwrap_or(common::LONGEST.len())
    });
    libtest_mimic::run(&args, trials).exit();
}

/// Threads when `--test-threads` is not given: `RUST_TEST_THREADS`, else five times the
/// cores. The scenarios mostly wait (for hooks, timers, fake processes). The tier alone on
/// 2 cores: 188 s with 6 threads, 171 s with 8 and 161 s with 10, where the two fault
/// sweeps (started first) end last; the CPU stayed at about 207 s.
#[allow(clippy::disallowed_methods)] // harness knob, not the charm's environment
fn test_threads() -> usize {
    std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| {
            5 * std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
}
