//! The simulator's extra tools, registered in one place for every executable that serves
//! them: the `sim-tools` binary and the test binaries' multicall `main` must offer the same
//! tools, since a model links every tool name to whichever of them it was given.

/// Registers the fake `systemctl` and `journalctl` with the simulator's multicall table.
pub fn register() {
    juju_sim::multicall::register("systemctl", fake_systemd::main);
    juju_sim::multicall::register("journalctl", fake_systemd::journalctl::main);
}
