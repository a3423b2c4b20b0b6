//! The machine around the charm, outside the release volume: services, local files, time,
//! users and keys.
//!
//! Owns: the [`Host`] value that `main` builds once (the real machine) and hands to
//! `charm::dispatch` next to `Juju`. Every effect the charm has on the machine goes through
//! it: the service manager ([`ServiceManager`], systemd in production), what services
//! wrote ([`Journal`], journald), the local paths ([`Paths`], rooted at `/` in
//! production), the clock ([`Clock`]), user and key provisioning ([`Provisioner`]) and
//! the database schema as a release sees it ([`Migrator`], `concourse migrate`).
//! Invariants: production code has one implementation of each part and never asks which
//! one it runs with; tests build a `Host` over a temporary root with recording doubles.
//! Hazards: paths written into files that services read (unit files, env files) are the
//! machine's absolute paths (`/etc/concourse/web.env`); only the charm's own file I/O goes
//! through [`Paths::local`], so a test root changes where files land, not what they say.

pub mod clock;
#[cfg(test)]
pub mod fake;
pub mod journal;
pub mod migrate;
pub mod paths;
pub mod provision;
pub mod services;

pub use clock::{Clock, SystemClock};
pub use journal::{Journal, JournalError, Journalctl};
pub use migrate::{ConcourseMigrate, DbEnv, MigrateError, Migrator};
pub use paths::Paths;
pub use provision::{KeyKind, Owner, ProvisionError, Provisioner, System};
pub use services::{KillWhom, ManagerError, ServiceManager, Systemctl, UnitStatus};

/// Everything the charm touches on the machine besides Juju and the volume.
pub struct Host {
    pub services: Box<dyn ServiceManager>,
    pub journal: Box<dyn Journal>,
    pub paths: Paths,
    pub clock: Box<dyn Clock>,
    pub provisioner: Box<dyn Provisioner>,
    pub migrator: Box<dyn Migrator>,
}

impl Host {
    /// The real machine: systemd and journald, paths under `/`, the system clock,
    /// `useradd`, `concourse generate-key` and `concourse migrate`.
    pub fn system() -> Host {
        Host {
            services: Box::new(Systemctl),
            journal: Box::new(Journalctl),
            paths: Paths::system(),
            clock: Box::new(SystemClock),
            provisioner: Box::new(System),
            migrator: Box::new(ConcourseMigrate),
        }
    }
}
