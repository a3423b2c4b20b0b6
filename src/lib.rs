//! concourse-ci charm library: everything `dispatch` runs lives here so tests can reach it.
