//! Test support shared by the installer and storage tests, on top of the release fixtures
//! (`release_fixtures::server`, `release_fixtures::tarball`): tarballs from
//! the suite's cache, a tmpfs mount for filesystem faults, and a server that ignores
//! `Range`.

#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use release_fixtures::server::{Fault, FaultRule, ReleaseServer, Target};
use release_fixtures::server::{RequestKind, RequestRecord};
pub use release_fixtures::tarball::{ReleaseSpec, Tarball, TarballCache, Variant};

/// The tarball cache of the test suite, in cargo's per-target temp dir (kept across runs).
pub fn tarball_cache() -> TarballCache {
    TarballCache::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/release-tarballs")).unwrap()
}

/// A generated release tarball (cached across tests and runs).
pub fn tarball(version: &str, size: u64, variant: Variant) -> Tarball {
    tarball_cache()
        .get(&ReleaseSpec::new(version, size, variant))
        .unwrap()
}

pub fn server() -> ReleaseServer {
    ReleaseServer::start().unwrap()
}

/// GET requests for `version`'s tarball (not its `.sha1`), in completion order.
pub fn tarball_requests(s: &ReleaseServer, version: &str) -> Vec<RequestRecord> {
    s.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.kind == RequestKind::Tarball(version.to_string()))
        .collect()
}

/// Requests for `version`'s `.sha1`.
pub fn sha1_requests(s: &ReleaseServer, version: &str) -> Vec<RequestRecord> {
    s.requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Sha1(version.to_string()))
        .collect()
}

/// A tmpfs mounted on a temp dir (needs root, as on CI); unmounted on drop.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs failed: these tests need root (CAP_SYS_ADMIN), as on CI"
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn remount(&self, opts: &str) {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Serves one tarball and its `.sha1`, always `200` with the whole body, whatever `Range`
/// says (like a server or proxy without range support).
pub struct NoRangeServer {
    server: ReleaseServer,
}

impl NoRangeServer {
    pub fn start(t: &Tarball) -> NoRangeServer {
        let server = server();
        server.register(t.clone());
        server.set_fault(Target::All, Fault::IgnoreRange);
        NoRangeServer { server }
    }

    pub fn url(&self, t: &Tarball) -> String {
        self.server.tarball_url(&t.spec.version)
    }
}
