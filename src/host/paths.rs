//! Where the charm's local files live.
//!
//! Owns: mapping a machine path (`/etc/concourse/web.env`, as services and operators see
//! it) to the path the charm reads and writes. Invariants: production maps every path to
//! itself (root `/`); a test root maps `/x/y` to `<root>/x/y`, like `DESTDIR` for
//! `make install`. Hazards: only absolute machine paths may be mapped; the volume is not
//! under the root (its location comes from Juju's `storage-get`).

use std::path::{Path, PathBuf};

/// The root under which the machine's paths are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    /// The real machine: every path is itself.
    pub fn system() -> Paths {
        Paths {
            root: PathBuf::from("/"),
        }
    }

    /// Paths under `root` (tests).
    pub fn under(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    /// The path the charm uses for the machine path `path`.
    pub fn local(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_are_themselves_and_test_roots_prefix() {
        assert_eq!(
            Paths::system().local("/etc/concourse/web.env"),
            PathBuf::from("/etc/concourse/web.env")
        );
        assert_eq!(
            Paths::under("/tmp/r").local("/etc/concourse/web.env"),
            PathBuf::from("/tmp/r/etc/concourse/web.env")
        );
    }
}
