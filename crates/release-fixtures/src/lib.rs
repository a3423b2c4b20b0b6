//! Concourse release fixtures for tests (never shipped): what the charm downloads and runs.
//!
//! - [`server`]: a local HTTP release server on 127.0.0.1 with fault injection (status codes,
//!   cuts mid-body, throttling, delays, wrong checksums, substituted tarballs, GitHub rate
//!   limits) and a request log;
//! - [`tls`]: an HTTPS front for that server, with a throwaway CA;
//! - [`github`]: the fake GitHub "latest release" API the server answers;
//! - [`tarball`]: generated `concourse-<version>-linux-amd64.tgz` files with the real layout,
//!   hostile variants, and a cache shared between test processes;
//! - [`fake_concourse`]: the fake `concourse` binary inside those tarballs and the parser of
//!   the log it writes.
//!
//! The installer tests use only this crate; the simulator tests use it next to `juju-sim`
//! and `fake-systemd`. See `docs/architecture.md#testing-tiers` for where each tier runs.
//!
//! Invariants: nothing here writes outside the directories its caller names (a tarball
//! cache, an output path); a generated tarball is a pure function of its spec. Hazards: the
//! hostile tarball variants really contain entries that escape their directory; unpack them
//! only with the code under test, in a scratch directory.

pub mod fake_concourse;
pub mod github;
pub mod server;
pub mod tarball;
pub mod tls;

pub use server::{Fault, FaultRule, ReleaseServer, RequestKind, RequestRecord, Target};
pub use tarball::{ReleaseSpec, Tarball, TarballCache, Variant};
