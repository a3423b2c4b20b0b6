//! The ordinary integration tests, as one binary (`cargo test --test it`): the installer and
//! the storage coordinator against a real HTTP server, real tarballs, real processes and real
//! mounts (tier 3 of `docs/architecture.md#testing-tiers`); the generated systemd units;
//! the operator documentation; the test layout.
//!
//! One binary links the charm library once and runs every test in one libtest process
//! (filter by module: `cargo test --test it storage_`). Tests that re-execute this binary
//! as a helper process name their helper by its full test path (`module::test`).
//! The multi-unit simulator tests are their own binary, `tests/sim/` (a multicall binary).

mod support;

mod docs;
mod installer_bench;
mod installer_download;
mod layout;
mod storage_processes;
mod storage_volume;
mod systemd_units;
