//! The machine around the charm, outside the release volume: services, local files, time,
//! users and keys.
//!
//! Owns: the [`Host`] value that `main` builds once (the real machine) and hands to
//! `charm::dispatch` next to `Juju`. Every effect the charm has on the machine goes through
//! it: the service manager ([`ServiceManager`], systemd in production), the local paths
//! ([`Paths`], rooted at `/` in production), the clock ([`Clock`]) and user and key
//! provisioning ([`Provisioner`]).
//! Invariants: production code has one implementation of each part and never asks which
//! one it runs with; tests build a `Host` over a temporary root with recording doubles.
//! Hazards: paths written into files that services read (unit files, env files) are the
//! machine's absolute paths (`/etc/concourse/web.env`); only the charm's own file I/O goes
//! through [`Paths::local`], so a test root changes where files land, not what they say.

pub mod clock;
#[cfg(test)]
pub mod fake;
pub mod paths;
pub mod provision;
pub mod services;

pub use clock::{Clock, SystemClock};
pub use paths::Paths;
pub use provision::{KeyKind, Owner, ProvisionError, Provisioner, System};
pub use services::{KillWhom, ManagerError, ServiceManager, Systemctl, UnitStatus};

/// Everything the charm touches on the machine besides Juju and the volume.
pub struct Host {
    pub services: Box<dyn ServiceManager>,
    pub paths: Paths,
    pub clock: Box<dyn Clock>,
    pub provisioner: Box<dyn Provisioner>,
}

impl Host {
    /// The real machine: systemd, paths under `/`, the system clock, `useradd` and
    /// `concourse generate-key`.
    pub fn system() -> Host {
        Host {
            services: Box::new(Systemctl),
            paths: Paths::system(),
            clock: Box::new(SystemClock),
            provisioner: Box::new(System),
        }
    }
}
