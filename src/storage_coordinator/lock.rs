//! The one lock module: exclusive `flock(2)` locks with RAII guards.
//!
//! Owns: opening a lock file, taking `LOCK_EX` without blocking (`nix::fcntl::Flock`),
//! waiting for it with a deadline and exponential backoff, and telling "busy" apart from
//! "this filesystem cannot lock".
//! Invariants: an [`ExclusiveLock`] exists only while its open file description holds
//! `LOCK_EX`; dropping it unlocks and closes. `flock` locks belong to the open file
//! description, so two `open()`s in one process exclude each other just like two
//! processes do, and the kernel releases the lock when the holder dies (SIGKILL
//! included): a crashed holder never leaves the lock taken.
//! Hazards: never continue without the lock: a filesystem that refuses `flock`
//! (`ENOLCK`, `EOPNOTSUPP`) is an error ([`StorageError::LockingUnsupported`]), never
//! a warning. On NFS, Linux emulates `flock` with whole-file POSIX locks, which work
//! across clients only when the server supports locking (NFSv4, or v3 with lockd); a
//! local probe cannot prove cross-host exclusion. Waiting polls with non-blocking
//! attempts, so a waiter may lose the race to a newcomer (no fairness); that is fine
//! for the few units of one application. `nix`'s guard panics when unlocking fails twice
//! (possible only on a network filesystem that lost its lock server); the panic aborts
//! the hook, the kernel releases the lock with the process, and Juju retries the hook.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StorageError;

pub use super::backoff::Backoff;

/// An exclusive `flock` on a file; unlocked when dropped (or when the process dies).
#[derive(Debug)]
pub struct ExclusiveLock {
    /// `None` only while dropping.
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl ExclusiveLock {
    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        // Unlock explicitly so a failure is logged; closing the descriptor releases the
        // lock anyway. `Flock`'s own drop retries the unlock and panics if that fails
        // too (see the module hazards).
        if let Some(lock) = self.lock.take() {
            if let Err((_still_locked, e)) = lock.unlock() {
                tracing::warn!("cannot unlock {}: {}", self.path.display(), e.desc());
            }
        }
    }
}

/// Opens (creating if needed, mode 0644) `path` and takes `LOCK_EX` without blocking.
/// `Ok(None)`: another open file description holds it.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<ExclusiveLock>, StorageError> {
    let file = open_lock_file(path)?;
    try_lock_file(file, path)
}

/// Takes `LOCK_EX` on `path`, waiting at most `wait`: tries at once, then sleeps per
/// `backoff` between non-blocking attempts, calling `on_wait(waited_so_far)` before each
/// sleep (so the caller can refresh a status). On timeout returns
/// [`StorageError::LockTimeout`] (its `holder` is left empty; callers that know the
/// holder fill it in).
pub fn lock_exclusive_with_deadline(
    path: &Path,
    wait: Duration,
    backoff: &Backoff,
    mut on_wait: impl FnMut(Duration),
) -> Result<ExclusiveLock, StorageError> {
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        if let Some(lock) = try_lock_exclusive(path)? {
            return Ok(lock);
        }
        let waited = start.elapsed();
        let Some(sleep) = backoff.sleep_before(attempt, waited, wait) else {
            return Err(StorageError::LockTimeout {
                path: path.to_path_buf(),
                waited,
                holder: None,
            });
        };
        on_wait(waited);
        std::thread::sleep(sleep);
        attempt = attempt.saturating_add(1);
    }
}

fn open_lock_file(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| StorageError::io("open lock file", path, e))
}

fn try_lock_file(mut file: File, path: &Path) -> Result<Option<ExclusiveLock>, StorageError> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                return Ok(Some(ExclusiveLock {
                    lock: Some(lock),
                    path: path.to_path_buf(),
                }))
            }
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e @ (Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS | Errno::EINVAL))) => {
                return Err(StorageError::LockingUnsupported {
                    path: path.to_path_buf(),
                    detail: format!("flock(LOCK_EX) failed: {}", e.desc()),
                })
            }
            Err((_, e)) => {
                return Err(StorageError::io(
                    "flock",
                    path,
                    std::io::Error::from_raw_os_error(e as i32),
                ))
            }
        }
    }
}

/// Proves that `probe_path`'s filesystem enforces `flock`: one open file description
/// takes the lock, a second one must be refused. `Ok(())` also when someone else
/// holds the probe lock (that refusal proves the same thing).
pub fn probe_flock(probe_path: &Path) -> Result<(), StorageError> {
    let Some(first) = try_lock_exclusive(probe_path)? else {
        return Ok(());
    };
    let second = try_lock_exclusive(probe_path)?;
    drop(first);
    match second {
        None => Ok(()),
        Some(_) => Err(StorageError::LockingUnsupported {
            path: probe_path.to_path_buf(),
            detail: "a second open file description was granted the same exclusive flock".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_file_description_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".install.lock");
        let a = try_lock_exclusive(&p).unwrap().expect("first lock");
        assert!(try_lock_exclusive(&p).unwrap().is_none(), "must be busy");
        drop(a);
        assert!(try_lock_exclusive(&p).unwrap().is_some(), "free again");
    }

    #[test]
    fn deadline_times_out_and_reports_waits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".install.lock");
        let _held = try_lock_exclusive(&p).unwrap().unwrap();
        let b = Backoff {
            first: Duration::from_millis(5),
            factor: 2,
            max: Duration::from_millis(20),
        };
        let mut waits = 0;
        let t = Instant::now();
        // Bounds with room for a loaded machine (a sleep can overrun by a lot): the
        // deadline is honoured, the wait ends, and it waited more than once.
        let err = lock_exclusive_with_deadline(&p, Duration::from_millis(300), &b, |_| waits += 1)
            .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(30));
        assert!(waits >= 2, "{waits}");
        assert!(matches!(err, StorageError::LockTimeout { .. }), "{err}");
    }

    #[test]
    fn waiter_gets_the_lock_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".install.lock");
        let held = try_lock_exclusive(&p).unwrap().unwrap();
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let b = Backoff {
                first: Duration::from_millis(2),
                factor: 2,
                max: Duration::from_millis(10),
            };
            lock_exclusive_with_deadline(&p2, Duration::from_secs(10), &b, |_| {}).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn probe_succeeds_on_a_local_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        probe_flock(&dir.path().join(".flock-probe")).unwrap();
    }
}
