//! The download → hash → unpack pipeline of one attempt.
//!
//! Owns: streaming the tarball (a kept `.partial` first, then the network tail, or the
//! resource file) through sha1 + sha256 into `downloads/<file>.partial` while a second
//! thread inflates and unpacks the same bytes into the staging dir, plus progress and
//! the `install.downloading` crash checkpoint (half the tarball on disk).
//! Invariants: every byte that reaches the unpacker was first written to the partial
//! (URL sources) and hashed; the unpacked tree is only published by the caller after the
//! hashes match (see `super::verify`); memory stays bounded (a few chunks in flight,
//! buffers recycled).
//! Hazards: on error the staging dir holds a partial tree: the caller removes it. The
//! partial file is not fsynced (it is deleted after publication; after a crash a
//! resumed download is still verified end to end, and a mismatch restarts from zero).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::time::Instant;

use reqwest::blocking::Client;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::download::{redact_url, start_download, Start};
use super::manifest::hex;
use super::unpack::{unpack_tar_gz, UnpackLimits, Unpacked};
use super::{InstallError, InstallEvent};
use crate::checkpoint::checkpoint;
use crate::storage_coordinator::{fscheck, InstallLock, ProgressMarker, StorageError, Throttle};

/// Bytes per chunk handed from the download thread to the unpack thread.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the threads (bounds memory: DEPTH x CHUNK).
const DEPTH: usize = 16;

/// What one successful attempt produced (hashes not yet compared).
#[derive(Debug)]
pub(crate) struct Fetched {
    pub size: u64,
    pub sha1: String,
    pub sha256: String,
    pub unpacked: Unpacked,
    /// Bytes reused from a kept partial.
    pub resumed_from: u64,
    /// Bytes received from the network (or read from the resource) in this attempt.
    pub transferred: u64,
}

/// The fixed parts of an attempt.
pub(crate) struct Job<'a> {
    pub lock: &'a InstallLock<'a>,
    pub version: &'a str,
    pub unit: &'a str,
    pub staging: &'a Path,
    /// Tarball file name, for messages and MANIFEST.
    pub label: &'a str,
    pub limits: UnpackLimits,
    /// Unpacked tree size estimate, as a multiple of the tarball size.
    pub unpack_factor: f64,
    pub throttle: Throttle,
    pub from_resource: bool,
    /// The most a download without a `Content-Length` may bring.
    pub max_download: u64,
}

/// Downloads `url` (resuming `partial` unless `from_zero`) and unpacks it into the
/// staging dir. `resumed_from` is set as soon as the resume point is known.
pub(crate) fn fetch_url(
    job: &mut Job<'_>,
    client: &Client,
    url: &str,
    partial: &Path,
    from_zero: bool,
    resumed_from: &mut u64,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<Fetched, InstallError> {
    let shown = redact_url(url);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(partial)
        .map_err(|e| StorageError::io("open", partial, e))?;
    let mut have = file
        .metadata()
        .map_err(|e| StorageError::io("stat", partial, e))?
        .len();
    if from_zero && have > 0 {
        file.set_len(0)
            .map_err(|e| StorageError::io("truncate", partial, e))?;
        have = 0;
    }
    let start = start_download(client, url, have)?;
    let (mut body, offset, total) = match start {
        Start::Body {
            resp,
            offset,
            total,
        } => (Some(resp), offset, total),
        Start::AlreadyComplete { total } => (None, total, Some(total)),
    };
    if offset < have {
        // 200 to a range request: the server restarts the file.
        file.set_len(offset)
            .map_err(|e| StorageError::io("truncate", partial, e))?;
    }
    *resumed_from = offset;
    if let Some(total) = total {
        check_space(job, total.saturating_sub(offset), total)?;
    }
    // A separate open file description: its offset is independent of `file`'s.
    let prefix = File::open(partial).map_err(|e| StorageError::io("open", partial, e))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| StorageError::io("seek", partial, e))?;

    let mut sources: Vec<Source<'_>> = vec![Source::Prefix(prefix.take(offset))];
    if let Some(resp) = body.as_mut() {
        sources.push(Source::Network(resp, shown.clone()));
    }
    let cap = match total {
        Some(t) => Cap::ContentLength(t),
        None => Cap::NoContentLength(job.max_download),
    };
    let r = run(
        job,
        sources,
        Some((&mut file, partial)),
        (offset, total, cap),
        events,
    )?;
    if let Some(total) = total {
        if r.size != total {
            return Err(InstallError::Truncated {
                url: shown,
                got: r.size,
                expected: total,
            });
        }
    }
    Ok(Fetched {
        resumed_from: offset,
        ..r
    })
}

/// Unpacks the resource file at `path` (no partial, no network).
pub(crate) fn fetch_resource(
    job: &mut Job<'_>,
    path: &Path,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<Fetched, InstallError> {
    let unreadable = |e: io::Error| InstallError::ResourceUnreadable {
        path: path.to_path_buf(),
        source: e,
    };
    let f = File::open(path).map_err(unreadable)?;
    let size = f.metadata().map_err(unreadable)?.len();
    if size == 0 {
        return Err(InstallError::ResourceEmpty {
            path: path.to_path_buf(),
        });
    }
    check_space(job, 0, size)?;
    let r = run(
        job,
        vec![Source::Resource(f, path)],
        None,
        (0, Some(size), Cap::ContentLength(size)),
        events,
    )?;
    if r.size != size {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "read {} of {size} bytes (the file changed while reading)",
                r.size
            ),
        )));
    }
    Ok(r)
}

fn check_space(job: &Job<'_>, to_download: u64, total: u64) -> Result<(), InstallError> {
    let root = job.lock.volume().root();
    let needed = to_download.saturating_add(fscheck::space_needed(total, job.unpack_factor));
    let (available, _, _) = fscheck::free_space(root)?;
    if available < needed {
        return Err(StorageError::NoSpace {
            path: root.to_path_buf(),
            needed,
            available,
        }
        .into());
    }
    Ok(())
}

/// Where bytes come from, in order.
enum Source<'a> {
    /// The kept partial's first bytes (already on disk: not written again).
    Prefix(io::Take<File>),
    /// The network body (appended to the partial).
    Network(&'a mut reqwest::blocking::Response, String),
    /// The resource file.
    Resource(File, &'a Path),
}

/// The most bytes an attempt may bring (the whole tarball, a kept partial included).
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// What the server announced (or the resource's size).
    ContentLength(u64),
    /// A cap of our own: the server did not say.
    NoContentLength(u64),
}

impl Cap {
    /// The error when `size` bytes passed the cap.
    fn exceeded(self, label: &str, size: u64) -> Option<InstallError> {
        let detail = match self {
            Cap::ContentLength(max) if size > max => {
                format!("more than the {max} bytes announced (Content-Length or file size)")
            }
            Cap::NoContentLength(max) if size > max => format!(
                "the download passed {} without a Content-Length; at most 3 times the expected size is allowed",
                crate::storage_coordinator::fmt_bytes(max)
            ),
            _ => return None,
        };
        Some(InstallError::TooLarge {
            tarball: label.to_string(),
            detail,
        })
    }
}

/// Why pumping stopped early.
enum Stop {
    Failed(InstallError),
    /// The unpacker hung up (it failed; its error explains why).
    UnpackerGone,
}

/// Pumps `sources` to the unpacker thread (and new network bytes to the partial file,
/// `sink`), hashing everything; then waits for the unpack to finish.
fn run(
    job: &mut Job<'_>,
    sources: Vec<Source<'_>>,
    mut sink: Option<(&mut File, &Path)>,
    (offset, total, cap): (u64, Option<u64>, Cap),
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<Fetched, InstallError> {
    let (tx, rx) = sync_channel::<(Vec<u8>, usize)>(DEPTH);
    let (pool_tx, pool_rx) = channel::<Vec<u8>>();
    let (staging, label, limits) = (job.staging.to_path_buf(), job.label.to_string(), job.limits);
    std::thread::scope(|scope| {
        let unpacker = std::thread::Builder::new()
            .name("unpack".into())
            .spawn_scoped(scope, move || {
                let reader = ChannelReader {
                    rx,
                    cur: None,
                    pos: 0,
                    pool: pool_tx,
                };
                unpack_tar_gz(reader, &staging, &label, &limits)
            })
            .map_err(|e| InstallError::Internal(format!("cannot start the unpack thread: {e}")))?;
        let mut tally = Tally::new(offset, total, cap);
        let pumped = pump_sources(job, sources, &mut sink, &mut tally, &tx, &pool_rx, events);
        drop(tx);
        let unpacked = unpacker
            .join()
            .unwrap_or_else(|_| Err(InstallError::Internal("the unpack thread panicked".into())));
        let unpacked = match pumped {
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::UnpackerGone) => {
                return Err(unpacked.err().unwrap_or_else(|| {
                    InstallError::Internal("the unpacker stopped early without an error".into())
                }))
            }
            Ok(()) => unpacked?,
        };
        if let Some((f, p)) = sink.as_mut() {
            f.flush().map_err(|e| StorageError::io("write", p, e))?;
        }
        report(job, tally.started, tally.size, total, events);
        Ok(tally.finish(unpacked))
    })
}

/// Running totals of one attempt: digests, sizes and progress.
struct Tally {
    sha1: Sha1,
    sha256: Sha256,
    /// Bytes hashed (the whole tarball so far).
    size: u64,
    /// Bytes received from the network or read from the resource (not the kept prefix).
    transferred: u64,
    /// Unix time the attempt started, for the progress marker.
    started: u64,
    /// Bytes already on disk before this attempt (the kept partial).
    offset: u64,
    total: Option<u64>,
    cap: Cap,
    midway: Midway,
}

impl Tally {
    fn new(offset: u64, total: Option<u64>, cap: Cap) -> Tally {
        Tally {
            sha1: Sha1::new(),
            sha256: Sha256::new(),
            size: 0,
            transferred: 0,
            started: crate::storage_coordinator::progress::unix_now(),
            offset,
            total,
            cap,
            midway: Midway::new(total),
        }
    }

    fn add(&mut self, chunk: &[u8], counts: bool) {
        self.sha1.update(chunk);
        self.sha256.update(chunk);
        self.size += chunk.len() as u64;
        if counts {
            self.transferred += chunk.len() as u64;
        }
    }

    /// Bytes of the tarball on disk (read so far, for the resource).
    fn on_disk(&self, from_resource: bool) -> u64 {
        if from_resource {
            self.size
        } else {
            self.size.max(self.offset)
        }
    }

    fn finish(self, unpacked: Unpacked) -> Fetched {
        Fetched {
            size: self.size,
            sha1: hex(&self.sha1.finalize()),
            sha256: hex(&self.sha256.finalize()),
            unpacked,
            resumed_from: 0,
            transferred: self.transferred,
        }
    }
}

/// Pumps every source in order; network bytes are appended to `sink` before they are
/// hashed and handed on. Reports progress and fires `install.downloading` midway.
fn pump_sources(
    job: &mut Job<'_>,
    sources: Vec<Source<'_>>,
    sink: &mut Option<(&mut File, &Path)>,
    tally: &mut Tally,
    tx: &SyncSender<(Vec<u8>, usize)>,
    pool: &Receiver<Vec<u8>>,
    events: &mut dyn FnMut(&InstallEvent),
) -> Result<(), Stop> {
    for mut src in sources {
        let append = matches!(src, Source::Network(..));
        let counts = !matches!(src, Source::Prefix(_));
        pump(&mut src, tx, pool, |chunk| {
            if let Some(e) = tally
                .cap
                .exceeded(job.label, tally.size + chunk.len() as u64)
            {
                return Err(Stop::Failed(e));
            }
            if append {
                if let Some((f, p)) = sink.as_mut() {
                    f.write_all(chunk)
                        .map_err(|e| Stop::Failed(StorageError::io("write", p, e).into()))?;
                }
            }
            tally.add(chunk, counts);
            let on_disk = tally.on_disk(job.from_resource);
            if job.throttle.due(Instant::now(), on_disk, tally.total) {
                report(job, tally.started, on_disk, tally.total, events);
            }
            if tally.midway.reached(on_disk) {
                checkpoint("install.downloading");
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Fires once, when the bytes on disk first reach half the total (or the first chunk
/// when the total is unknown): where the `install.downloading` checkpoint parks.
struct Midway {
    at: u64,
    fired: bool,
}

impl Midway {
    fn new(total: Option<u64>) -> Midway {
        Midway {
            at: total.map_or(1, |t| (t / 2).max(1)),
            fired: false,
        }
    }

    fn reached(&mut self, on_disk: u64) -> bool {
        let now = !self.fired && on_disk >= self.at;
        self.fired |= now;
        now
    }
}

fn report(
    job: &Job<'_>,
    started: u64,
    bytes: u64,
    total: Option<u64>,
    events: &mut dyn FnMut(&InstallEvent),
) {
    let mut m = ProgressMarker::new(job.version, job.unit, bytes, total.map(|t| t.max(bytes)));
    m.started = started;
    if let Err(e) = job.lock.write_progress(&m) {
        tracing::warn!("cannot update the progress marker: {e}");
    }
    events(&InstallEvent::Downloading {
        version: job.version.to_string(),
        bytes,
        total,
        from_resource: job.from_resource,
    });
}

/// Reads `src` in chunks of [`CHUNK`], calls `each` on each chunk, then hands it to the
/// unpacker.
fn pump(
    src: &mut Source<'_>,
    tx: &SyncSender<(Vec<u8>, usize)>,
    pool: &Receiver<Vec<u8>>,
    mut each: impl FnMut(&[u8]) -> Result<(), Stop>,
) -> Result<(), Stop> {
    loop {
        let mut buf = pool.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let mut n = 0;
        let mut eof = false;
        while n < buf.len() {
            let r = match src {
                Source::Prefix(f) => f.read(&mut buf[n..]),
                Source::Network(resp, _) => resp.read(&mut buf[n..]),
                Source::Resource(f, _) => f.read(&mut buf[n..]),
            };
            match r {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Stop::Failed(read_error(src, e))),
            }
        }
        if n > 0 {
            each(&buf[..n])?;
            tx.send((buf, n)).map_err(|_| Stop::UnpackerGone)?;
        }
        if eof {
            return Ok(());
        }
    }
}

fn read_error(src: &Source<'_>, e: io::Error) -> InstallError {
    match src {
        Source::Prefix(_) => {
            InstallError::Internal(format!("cannot read the kept partial download: {e}"))
        }
        Source::Network(_, url) => InstallError::Network {
            url: url.clone(),
            detail: crate::error_chain(&e),
        },
        Source::Resource(_, path) => InstallError::ResourceUnreadable {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// `Read` over the chunks sent by the download thread; EOF when it hangs up. Drained
/// buffers go back to the pool.
struct ChannelReader {
    rx: Receiver<(Vec<u8>, usize)>,
    cur: Option<(Vec<u8>, usize)>,
    pos: usize,
    pool: Sender<Vec<u8>>,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((buf, len)) = &self.cur {
                if self.pos < *len {
                    let n = (*len - self.pos).min(out.len());
                    out[..n].copy_from_slice(&buf[self.pos..self.pos + n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            if let Some((buf, _)) = self.cur.take() {
                let _ = self.pool.send(buf);
            }
            match self.rx.recv() {
                Ok(next) => {
                    self.cur = Some(next);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midway_fires_once_at_half_or_at_the_first_byte() {
        let mut m = Midway::new(Some(100));
        assert!(!m.reached(49));
        assert!(m.reached(60));
        assert!(!m.reached(100), "once");
        let mut m = Midway::new(None);
        assert!(m.reached(1));
        let mut m = Midway::new(Some(1));
        assert!(m.reached(1));
    }

    #[test]
    fn channel_reader_reassembles_and_recycles() {
        let (tx, rx) = sync_channel(4);
        let (ptx, prx) = channel();
        let mut r = ChannelReader {
            rx,
            cur: None,
            pos: 0,
            pool: ptx,
        };
        tx.send((b"hello____".to_vec(), 5)).unwrap();
        tx.send((b" world".to_vec(), 6)).unwrap();
        drop(tx);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
        assert_eq!(prx.try_iter().count(), 2, "both buffers recycled");
    }
}
