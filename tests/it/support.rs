//! Test support shared by the installer and storage tests, on top of the release
//! fixtures (`release_fixtures::server`, `release_fixtures::tarball`): tarballs from
//! the suite's cache, a tmpfs mount for filesystem faults, and a tiny server that ignores
//! `Range` (a behaviour the fixture server does not offer).

#![allow(dead_code, unused_imports)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// Serves one tarball at `/<file>` and its `.sha1`, always `200` with the whole body,
/// whatever `Range` says (like a server or proxy without range support).
pub struct NoRangeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NoRangeServer {
    pub fn start(t: &Tarball) -> NoRangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, path, name, sha1) = (
            stop.clone(),
            t.path.clone(),
            t.file_name.clone(),
            t.sha1_file_content(),
        );
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let _ = serve(c, &path, &name, &sha1);
                }
            }
        });
        NoRangeServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, t: &Tarball) -> String {
        format!("http://{}/{}", self.addr, t.file_name)
    }
}

fn serve(c: TcpStream, path: &PathBuf, name: &str, sha1: &str) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut w = c;
    if target == format!("/{name}.sha1") {
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sha1}",
            sha1.len()
        )?;
    } else if target == format!("/{name}") {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
        }
    } else {
        write!(
            w,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
    }
    w.flush()
}

impl Drop for NoRangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
