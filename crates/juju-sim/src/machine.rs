//! One simulated machine per unit: a persistent mount namespace in which /etc, /var, /opt,
//! /usr/local (overlayfs over the host directory, with a per-unit upper dir) and /tmp, /run,
//! /root, /home, /srv (empty per-unit directories) are private to the unit, and the storage
//! location is a real directory (shared, per unit, read-only, tmpfs, or absent).
//!
//! Owns: creating the namespace ([`Machine::create`]), entering it from a thread
//! ([`Machine::enter`], [`Machine::run_in`]), seeding files into the unit's view before it is
//! mounted, listing and killing the processes that live in it, and cleaning up the run
//! directories of dead test processes ([`cleanup_stale`], safe while other test processes run
//! models of their own).
//!
//! How: a fresh thread calls `unshare(CLONE_FS | CLONE_NEWNS)`, makes `/` recursively private,
//! mounts everything, and opens `/proc/thread-self/ns/mnt`; that fd keeps the namespace alive
//! after the thread exits. Any thread can later `unshare(CLONE_FS)` and `setns` into it;
//! processes it spawns inherit the unit's view. The namespace (and so every mount in it)
//! disappears when the fd is closed and its last process is gone.
//!
//! Invariants: the simulator's own files (run dir, tool binary, charm staging) live in the
//! model's run directory, which stays visible at its own host path in every unit: it must not
//! be under an overlaid directory (the overlay would hide later host writes), and when it is
//! under a private one (the default, a temp dir under /tmp) it is bound back at its path
//! after the private directories are mounted ([`MachineSpec::run_dir`]). Private directories
//! are mounted last, so their sources and the storage may live under /tmp.
//!
//! Hazards: writes into an overlay upper dir are only made before the overlay is mounted
//! ([`Seed`]); afterwards the unit's files are reached through the namespace. Processes are
//! found by their mount namespace inode, so a process that creates its own mount namespace
//! escapes tracking (nothing in a charm does).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of machine setup and access.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("machine thread panicked")]
    ThreadPanicked,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MachineError + 'a {
    move |source| MachineError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> MachineError {
    let what = what.into();
    move |source| MachineError::Sys { what, source }
}

/// Directories overlaid on the host's (unit path, name of the upper dir).
pub const OVERLAID: [(&str, &str); 4] = [
    ("/etc", "etc"),
    ("/var", "var"),
    ("/usr/local", "usr-local"),
    ("/opt", "opt"),
];
/// Directories replaced by empty per-unit ones (mounted in this order; /tmp last).
pub const PRIVATE: [&str; 5] = ["/srv", "/root", "/home", "/run", "/tmp"];

/// `unit-<app>-<n>`.
pub fn unit_tag(unit: &str) -> String {
    format!("unit-{}", unit.replace('/', "-"))
}

/// The unit's charm dir.
pub fn charm_dir(unit: &str) -> String {
    format!("/var/lib/juju/agents/{}/charm", unit_tag(unit))
}

/// The unit's hook-tools dir.
pub fn tools_dir(unit: &str) -> String {
    format!("/var/lib/juju/tools/{}", unit_tag(unit))
}

/// Where `resource-get` says a resource is.
pub fn resource_path(unit: &str, name: &str, filename: &str) -> String {
    format!(
        "/var/lib/juju/agents/{}/resources/{name}/{filename}",
        unit_tag(unit)
    )
}

/// What to mount at the storage location.
#[derive(Debug, Clone)]
pub enum StorageMount {
    None,
    Bind { host: PathBuf, read_only: bool },
    Tmpfs { bytes: u64 },
}

/// A file to place in the unit's view before mounting.
#[derive(Debug, Clone)]
pub enum Seed {
    /// Hard link (or copy, across filesystems) a host file to a unit path, keeping its mode.
    File { from: PathBuf, to: String },
    /// A symlink at a unit path.
    Symlink { target: String, at: String },
}

/// How to build a machine.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub unit: String,
    /// The model's run directory: kept visible at its own path in the unit.
    pub run_dir: PathBuf,
    /// Host directory holding this unit's upper/work/private dirs.
    pub unit_dir: PathBuf,
    pub storage: StorageMount,
    /// Storage mount point in the unit's view.
    pub location: Option<String>,
    pub seeds: Vec<Seed>,
}

/// A process living in a unit's machine.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: i32,
    pub cmdline: Vec<String>,
}

/// A live machine: its namespace fd and host directories.
#[derive(Debug)]
pub struct Machine {
    pub unit: String,
    pub unit_dir: PathBuf,
    ns: OwnedFd,
    pub ns_inode: u64,
}

impl Machine {
    /// Build the unit's directories and namespace.
    pub fn create(spec: &MachineSpec) -> Result<Machine, MachineError> {
        let dir = &spec.unit_dir;
        for (_, name) in OVERLAID {
            for sub in ["upper", "work"] {
                let p = dir.join(sub).join(name);
                fs::create_dir_all(&p).map_err(io("creating", &p))?;
            }
        }
        for d in PRIVATE {
            let p = dir.join(d.trim_start_matches('/'));
            fs::create_dir_all(&p).map_err(io("creating", &p))?;
            let mode = match d {
                "/tmp" => 0o1777,
                "/root" => 0o700,
                _ => 0o755,
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io("chmod", &p))?;
            // The mount point must exist on the host.
            let host = Path::new(d);
            if !host.exists() {
                fs::create_dir_all(host).map_err(io("creating", host))?;
            }
        }
        for seed in &spec.seeds {
            place_seed(dir, seed)?;
        }
        let spec2 = spec.clone();
        let ns: OwnedFd = std::thread::spawn(move || setup_namespace(&spec2))
            .join()
            .map_err(|_| MachineError::ThreadPanicked)??;
        let ns_inode = fs::File::from(ns.try_clone().map_err(io("dup", dir))?)
            .metadata()
            .map_err(io("stat namespace of", dir))?
            .ino();
        fs::write(dir.join("ns-inode"), ns_inode.to_string())
            .map_err(io("writing", &dir.join("ns-inode")))?;
        Ok(Machine {
            unit: spec.unit.clone(),
            unit_dir: dir.clone(),
            ns,
            ns_inode,
        })
    }

    /// Move the calling thread into this machine's view. Only for threads that never go
    /// back to the host view (agent threads) or that end soon after.
    pub fn enter(&self) -> Result<(), MachineError> {
        unshare(CloneFlags::CLONE_FS).map_err(sys("unshare(CLONE_FS)"))?;
        setns(self.ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(sys("setns(mnt)"))?;
        Ok(())
    }

    /// Run `f` on a short-lived thread inside this machine's view.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, MachineError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .map_err(|_| MachineError::ThreadPanicked)?
        })
    }

    /// Processes whose mount namespace is this machine's.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        processes_in(self.ns_inode)
    }

    /// SIGKILL every process of this machine until none is left (or `timeout`). Returns how
    /// many were killed.
    pub fn kill_all(&self, timeout: Duration) -> usize {
        kill_ns(self.ns_inode, timeout)
    }
}

fn place_seed(unit_dir: &Path, seed: &Seed) -> Result<(), MachineError> {
    let at = match seed {
        Seed::File { to, .. } => to,
        Seed::Symlink { at, .. } => at,
    };
    let host = upper_path(unit_dir, at).ok_or_else(|| MachineError::Io {
        what: "seeding (path outside the per-unit dirs)",
        path: PathBuf::from(at),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    if let Some(parent) = host.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    let _ = fs::remove_file(&host);
    match seed {
        Seed::File { from, .. } => {
            if fs::hard_link(from, &host).is_err() {
                fs::copy(from, &host).map_err(io("copying", from))?;
            }
        }
        Seed::Symlink { target, .. } => {
            std::os::unix::fs::symlink(target, &host).map_err(io("symlinking", &host))?;
        }
    }
    Ok(())
}

/// Host path backing a unit path before mounting (upper dir or private dir).
pub fn upper_path(unit_dir: &Path, unit_path: &str) -> Option<PathBuf> {
    for (prefix, name) in OVERLAID {
        if let Some(rest) = unit_path.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(
                    unit_dir
                        .join("upper")
                        .join(name)
                        .join(rest.trim_start_matches('/')),
                );
            }
        }
    }
    for d in PRIVATE {
        if let Some(rest) = unit_path.strip_prefix(d) {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(
                    unit_dir
                        .join(d.trim_start_matches('/'))
                        .join(rest.trim_start_matches('/')),
                );
            }
        }
    }
    None
}

fn setup_namespace(spec: &MachineSpec) -> Result<OwnedFd, MachineError> {
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;
    let dir = &spec.unit_dir;
    for (target, name) in OVERLAID {
        let opts = format!(
            "lowerdir={target},upperdir={},workdir={}",
            dir.join("upper").join(name).display(),
            dir.join("work").join(name).display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(sys(format!("mounting overlay on {target}")))?;
    }
    if let Some(loc) = &spec.location {
        match &spec.storage {
            StorageMount::None => {}
            StorageMount::Bind { host, read_only } => {
                fs::create_dir_all(loc).map_err(io("creating", Path::new(loc)))?;
                mount(
                    Some(host.as_path()),
                    loc.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(sys(format!("binding storage on {loc}")))?;
                if *read_only {
                    mount(
                        None::<&str>,
                        loc.as_str(),
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .map_err(sys(format!("remounting {loc} read-only")))?;
                }
            }
            StorageMount::Tmpfs { bytes } => {
                fs::create_dir_all(loc).map_err(io("creating", Path::new(loc)))?;
                let opts = format!("size={bytes},mode=0755");
                mount(
                    Some("tmpfs"),
                    loc.as_str(),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    Some(opts.as_str()),
                )
                .map_err(sys(format!("mounting tmpfs on {loc}")))?;
            }
        }
    }
    // Opened in this namespace before the private dirs may hide it; bound back below.
    let run_dir = fs::File::open(&spec.run_dir).map_err(io("opening", &spec.run_dir))?;
    for d in PRIVATE {
        let src = dir.join(d.trim_start_matches('/'));
        mount(
            Some(src.as_path()),
            d,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!("binding {d}")))?;
    }
    if PRIVATE.iter().any(|d| spec.run_dir.starts_with(d)) {
        fs::create_dir_all(&spec.run_dir).map_err(io("creating", &spec.run_dir))?;
        let fd_path = format!("/proc/thread-self/fd/{}", run_dir.as_raw_fd());
        mount(
            Some(fd_path.as_str()),
            spec.run_dir.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!(
            "binding the run dir {}",
            spec.run_dir.display()
        )))?;
    }
    drop(run_dir);
    let f = fs::File::open("/proc/thread-self/ns/mnt")
        .map_err(io("opening", Path::new("/proc/thread-self/ns/mnt")))?;
    Ok(OwnedFd::from(f))
}

/// Processes whose mount namespace has inode `ino`.
pub fn processes_in(ino: u64) -> Vec<ProcessInfo> {
    let me = std::process::id() as i32;
    let want = format!("mnt:[{ino}]");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if link.to_string_lossy() != want {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(ProcessInfo { pid, cmdline });
    }
    out
}

fn kill_ns(ino: u64, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let procs = processes_in(ino);
        if procs.is_empty() || Instant::now() >= deadline {
            return killed.len();
        }
        for p in procs {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            killed.insert(p.pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mount points under `dir` in the host's mount table, deepest first.
pub fn host_mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Detach every host mount under `dir`.
pub fn unmount_under(dir: &Path) {
    for m in host_mounts_under(dir) {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
}

/// Prefix of run directory names (`<state root>/juju-sim-XXXXXX`).
pub const RUN_PREFIX: &str = "juju-sim-";
/// File in a run directory locked (`flock`, exclusive) by the owning process while it lives.
pub const OWNER_LOCK: &str = "owner.lock";

/// Whether `dir` is under a directory that every unit overlays (where a run directory must
/// not be: the unit would see a frozen copy and overlayfs refuses nested layers).
pub fn is_overlaid(dir: &Path) -> bool {
    OVERLAID.iter().any(|(d, _)| dir.starts_with(d))
}

/// Takes the owner lock of a new run directory: locked under a temporary name, then renamed
/// into place, so [`cleanup_stale`] never sees the lock file unlocked while its owner lives.
pub fn lock_run_dir(run: &Path) -> Result<fs::File, MachineError> {
    let tmp = run.join(format!("{OWNER_LOCK}.tmp"));
    let f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
    f.lock().map_err(io("locking", &tmp))?;
    let path = run.join(OWNER_LOCK);
    fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
    Ok(f)
}

/// Removes the run directories under `root` whose owning process is gone: kills what is left
/// in their units' namespaces, detaches their mounts and deletes them.
///
/// Safe with concurrent test processes on the machine: a run is stale only when its owner
/// lock can be taken (the owner holds it until it exits, and the kernel drops it when the
/// owner dies), the lock is held while cleaning (so two cleaners never race), and a process
/// is killed only if its mount namespace is the recorded one *and* its mount table shows this
/// run's overlays (a namespace inode can be reused by a live model after the old one died).
pub fn cleanup_stale(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(RUN_PREFIX) {
            continue;
        }
        let run = e.path();
        let Ok(lock) = fs::File::open(run.join(OWNER_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        if let Ok(units) = fs::read_dir(run.join("units")) {
            for u in units.flatten() {
                if let Some(ino) = fs::read_to_string(u.path().join("ns-inode"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    kill_ns_of_run(ino, &run, Duration::from_secs(5));
                }
            }
        }
        unmount_under(&run);
        let _ = fs::remove_dir_all(&run);
    }
}

/// Like [`kill_ns`], for processes whose mount table also names `run` (see [`cleanup_stale`]).
fn kill_ns_of_run(ino: u64, run: &Path, timeout: Duration) {
    let marker = format!("upperdir={}/", run.display());
    let deadline = Instant::now() + timeout;
    loop {
        let procs: Vec<ProcessInfo> = processes_in(ino)
            .into_iter()
            .filter(|p| {
                fs::read_to_string(format!("/proc/{}/mountinfo", p.pid))
                    .is_ok_and(|m| m.contains(&marker))
            })
            .collect();
        if procs.is_empty() || Instant::now() >= deadline {
            return;
        }
        for p in procs {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_paths() {
        let d = Path::new("/r/u");
        assert_eq!(
            upper_path(d, "/var/lib/x").unwrap(),
            PathBuf::from("/r/u/upper/var/lib/x")
        );
        assert_eq!(
            upper_path(d, "/usr/local/bin/y").unwrap(),
            PathBuf::from("/r/u/upper/usr-local/bin/y")
        );
        assert_eq!(
            upper_path(d, "/tmp/z").unwrap(),
            PathBuf::from("/r/u/tmp/z")
        );
        assert!(upper_path(d, "/variable").is_none());
        assert!(upper_path(d, "/usr/bin/x").is_none());
    }

    #[test]
    fn names() {
        assert_eq!(charm_dir("a-b/3"), "/var/lib/juju/agents/unit-a-b-3/charm");
        assert_eq!(tools_dir("a/0"), "/var/lib/juju/tools/unit-a-0");
    }
}
