//! Juju model simulator (test support; never shipped).
//!
//! Runs the real charm `dispatch` binary as several units of a simulated Juju 3.6 model, with
//! the unit agent's real semantics: hook priorities, level-triggered relation hooks,
//! transactions committed only on exit 0, frozen remote snapshots, leadership, actions,
//! secrets, storage and one mount namespace ("machine") per unit. The behaviour reproduced
//! is summarised in `docs/architecture.md#how-a-hook-runs`; it is derived from Juju's
//! unit agent (juju/juju, 3.6 branch): `worker/uniter/resolver.go` and
//! `worker/uniter/relation/resolver.go` (which hook next), `worker/uniter/runner/context/`
//! (what a hook sees and commits), `worker/uniter/runner/jujuc/` (the hook tools).
//!
//! Owns nothing outside the model's run directory (a temp dir, see [`machine`]); the fake
//! systemd and the release fixtures are the sibling crates `fake-systemd` and
//! `release-fixtures`, registered as extra multicall tools by the test binary.
//!
//! A test target using it is `harness = false` and starts with:
//!
//! ```text
//! fn main() {
//!     juju_sim::multicall::register("systemctl", my_fake_systemctl_main); // optional extras
//!     juju_sim::multicall::run_if_tool(); // acts as a hook tool and exits, if called as one
//!     // ... then run the tests, e.g. with libtest-mimic
//! }
//! ```
//!
//! Modules: `sim` (the test API), `model` (controller state and commits), `resolver` (what a
//! unit runs next), `context` (one hook's snapshots and buffers), `tools` (hook tools),
//! `agent` (unit threads, processes, tool server), `budget` (calls per hook a scenario
//! allows), `faults` (failing tool calls, killed hooks), `machine` (mount namespaces),
//! `charm` (metadata), `ports` (opened ports by endpoint), `postgres` (fake provider),
//! `multicall` / `wire` / `flags` / `format`.

pub mod agent;
pub mod budget;
pub mod charm;
pub mod context;
pub mod faults;
pub mod flags;
pub mod format;
pub mod machine;
pub mod model;
pub mod multicall;
pub mod ports;
pub mod postgres;
pub mod resolver;
pub mod sim;
pub mod tools;
pub mod wire;

pub use budget::{BudgetReport, CallBudget};
pub use charm::CharmSource;
pub use faults::{Fault, FaultHit, FaultKind, FaultRecord, HookStart};
pub use model::{
    ActionStatus, AgentStatus, Bag, BagChange, HookRecord, LogRecord, ModelOptions, Outcome,
    StatusRecord, Volume,
};
pub use postgres::{Credentials, PostgresOptions};
pub use sim::{ActionResult, DeployOptions, Model, SimError};
