//! `sim-tools`: every hook tool of the Juju simulator plus the fake `systemctl` and
//! `journalctl`, in one executable chosen by argv\[0\], exactly as the test binaries'
//! multicall `main` serves them (`tests/sim/main.rs`, `crates/demo/src/main.rs`).
//!
//! Why it exists: a charm hook makes dozens of tool calls, and each call of a test binary
//! (a debug build of ~100 MB with tens of thousands of dynamic relocations) costs well over
//! a millisecond of CPU before `main`. `cargo xtask test` builds this one static and
//! optimized and hands it to the simulator (`SIM_TOOLS`, [`juju_sim::multicall::set_executable`]).
//!
//! Invariant: it serves the same extra tools as the test binaries that use it
//! ([`sim_tools::register`]).

fn main() {
    sim_tools::register();
    juju_sim::multicall::run_if_tool();
    eprintln!(
        "sim-tools: called as {:?}, which is not a simulator tool; link it under a tool's name",
        std::env::args().next().unwrap_or_default()
    );
    std::process::exit(2);
}
