//! Juju model simulator (test support; never shipped).

pub mod fake_concourse;
pub mod tarball;
