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

fn main() {
    juju_sim::multicall::register("systemctl", fake_systemd::main);
    juju_sim::multicall::register("journalctl", fake_systemd::journalctl::main);
    juju_sim::multicall::run_if_tool();
    let args = Arguments::from_args();
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
    libtest_mimic::run(&args, trials).exit();
}
