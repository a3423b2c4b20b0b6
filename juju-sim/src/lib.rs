//! Juju model simulator (test support; never shipped).

pub mod fake_concourse;
pub mod github;
pub mod release;
pub mod systemctl;
pub mod tarball;
