//! Juju model simulator (test support; never shipped).
