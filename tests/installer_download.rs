//! `ensure_release` against a real HTTP server on 127.0.0.1, real tarballs and real
//! directories: the happy path, every fault of issue 4, resume, the resource source,
//! verify, prune and the latest-version lookup.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use concourse_ci::config::CharmConfig;
use concourse_ci::installer::{
    self, ensure_release, latest_version, prune_releases, verify_release, InstallError,
    InstallEvent, InstallOptions, Outcome, Source, VerifyMode,
};
use concourse_ci::storage_coordinator::{Backoff, ErrorClass, Volume};
use support::{make_tarball, Fault, Server, Tarball, Variant};

const UNIT: &str = "concourse-ci/0";

fn opts() -> InstallOptions {
    let mut o = InstallOptions::new(UNIT);
    o.retries = 0;
    o.retry_delay = Duration::from_millis(10);
    o.backoff = Backoff {
        first: Duration::from_millis(10),
        factor: 2,
        max: Duration::from_millis(50),
    };
    o.http.read_timeout = Duration::from_secs(10);
    o.http.connect_timeout = Duration::from_secs(5);
    o
}

struct Env {
    _tmp: tempfile::TempDir,
    tarballs: std::path::PathBuf,
    vol: Volume,
    server: Server,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let tarballs = tmp.path().join("tarballs");
    let root = tmp.path().join("volume");
    fs::create_dir_all(&tarballs).unwrap();
    fs::create_dir_all(&root).unwrap();
    Env {
        vol: Volume::new(&root),
        tarballs,
        _tmp: tmp,
        server: Server::start(),
    }
}

impl Env {
    fn tarball(&self, version: &str, padding: u64, variant: Variant) -> Tarball {
        let dir = self.tarballs.join(format!("{version}-{variant:?}"));
        fs::create_dir_all(&dir).unwrap();
        make_tarball(&dir, version, padding, variant)
    }
    fn published(&self, version: &str) -> Tarball {
        let t = self.tarball(version, 2 << 20, Variant::Normal);
        self.server.register(&t);
        t
    }
    fn url(&self, version: &str) -> Source {
        Source::Url(self.server.tarball_url(version))
    }
    fn install(&self, version: &str, o: &InstallOptions) -> Result<Outcome, InstallError> {
        ensure_release(&self.vol, version, &self.url(version), o, &mut |_| {})
    }
    /// Nothing but published versions under releases/ (no staging, no trash).
    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.vol.root().join("releases"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn partial(&self, t: &Tarball) -> std::path::PathBuf {
        self.vol.layout().partial_file(&t.file_name)
    }
}

fn installed(o: &Outcome) -> &installer::InstallReport {
    match o {
        Outcome::Installed(r) => r,
        other => panic!("expected Installed, got {other:?}"),
    }
}

#[test]
fn installs_verifies_and_then_takes_the_fast_path() {
    let e = env();
    let t = e.published("7.14.3");
    let mut o = opts();
    o.set_installed_version = true;
    let mut events = Vec::new();
    let out = ensure_release(&e.vol, "7.14.3", &e.url("7.14.3"), &o, &mut |ev| {
        events.push(ev.clone())
    })
    .unwrap();
    let r = installed(&out);
    assert_eq!(r.tarball.sha1, t.sha1);
    assert_eq!(r.tarball.sha256, t.sha256);
    assert_eq!(r.tarball.size, t.size);
    assert_eq!((r.resumed_from, r.transferred, r.attempts), (0, t.size, 1));
    assert_eq!(e.releases(), vec!["7.14.3"]);
    assert_eq!(
        e.vol.installed_version().unwrap().as_deref(),
        Some("7.14.3")
    );
    // Exec bits survived; the marker and the partial are gone.
    let bin = e.vol.root().join("releases/7.14.3/concourse/bin/concourse");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(e.vol.read_progress().is_none());
    assert!(!e.partial(&t).exists());
    assert!(!e.vol.layout().progress_file().exists());
    // Progress was reported, ending at 100%, then publication.
    let statuses: Vec<String> = events.iter().filter_map(|e| e.status_message()).collect();
    assert!(
        statuses.iter().any(|s| s == "Downloading v7.14.3 (100%)"),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().unwrap(), "Publishing v7.14.3");
    // Verify: quick and full, and the binary prints the version.
    let v = verify_release(&e.vol, "7.14.3", VerifyMode::Full).unwrap();
    assert_eq!(v.binary_version, "7.14.3");
    assert_eq!(v.installed_by, UNIT);
    assert!(v.files >= 10 && v.bytes > 2 << 20, "{v:?}");
    // Fast path: no lock, no request.
    let before = e.server.requests().len();
    let again = e.install("7.14.3", &o).unwrap();
    assert!(
        matches!(again, Outcome::AlreadyPresent { ref installed_by, .. } if installed_by.as_deref() == Some(UNIT))
    );
    assert!(again
        .log_line("concourse-ci/1", "7.14.3")
        .contains("reuses v7.14.3 downloaded by concourse-ci/0"));
    assert_eq!(e.server.requests().len(), before);
}

#[test]
fn verify_detects_a_tampered_release_and_a_wrong_binary() {
    let e = env();
    e.published("7.14.3");
    e.install("7.14.3", &opts()).unwrap();
    let f = e
        .vol
        .root()
        .join("releases/7.14.3/concourse/resource-types/git/resource_metadata.json");
    let mut content = fs::read(&f).unwrap();
    content[0] ^= 1;
    fs::write(&f, &content).unwrap();
    verify_release(&e.vol, "7.14.3", VerifyMode::Quick).unwrap();
    let err = verify_release(&e.vol, "7.14.3", VerifyMode::Full).unwrap_err();
    assert!(matches!(err, InstallError::ReleaseCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("resource_metadata.json"), "{err}");

    let t = e.tarball("7.14.4", 1 << 20, Variant::WrongVersion);
    e.server.register(&t);
    e.install("7.14.4", &opts()).unwrap();
    let err = verify_release(&e.vol, "7.14.4", VerifyMode::Quick).unwrap_err();
    assert!(matches!(err, InstallError::BinaryFailed { .. }), "{err}");
    assert!(err.to_string().contains("0.0.0-wrong"), "{err}");
    let err = verify_release(&e.vol, "9.9.9", VerifyMode::Quick).unwrap_err();
    assert!(matches!(err, InstallError::NotInstalled { .. }), "{err}");
}

/// Publishes nothing, keeps `keep` intact, and gives a permanent error.
fn assert_failed_cleanly(e: &Env, err: &InstallError, keep: &[&str]) {
    assert_eq!(e.releases(), keep, "after {err}");
    for v in keep {
        verify_release(&e.vol, v, VerifyMode::Full).unwrap();
    }
    assert!(
        e.vol.read_progress().is_none(),
        "marker removed after {err}"
    );
}

#[test]
fn wrong_sha1_is_a_permanent_mismatch_then_recovers() {
    let e = env();
    e.published("7.14.2");
    e.install("7.14.2", &opts()).unwrap();
    let t = e.published("7.14.3");
    e.server.fault(".sha1", Fault::WrongSha1, None);
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.status_message();
    assert!(
        msg.starts_with(&format!(
            "checksum mismatch for {} (sha1 expected 0000000000000000000000000000000000000000, got {})",
            t.file_name, t.sha1
        )),
        "{msg}"
    );
    assert!(msg.ends_with("check release-url"), "{msg}");
    assert!(!e.partial(&t).exists(), "a mismatching partial is deleted");
    assert_failed_cleanly(&e, &err, &["7.14.2"]);
    e.server.clear_faults();
    installed(&e.install("7.14.3", &opts()).unwrap());
    assert_eq!(e.releases(), vec!["7.14.2", "7.14.3"]);
}

#[test]
fn pinned_sha256_is_checked_too() {
    let e = env();
    let t = e.published("7.14.3");
    let mut o = opts();
    o.expected_sha256 = Some("ab".repeat(32));
    let err = e.install("7.14.3", &o).unwrap_err();
    assert!(err.to_string().contains("sha256 expected abab"), "{err}");
    assert_failed_cleanly(&e, &err, &[]);
    o.expected_sha256 = Some(t.sha256.to_uppercase());
    installed(&e.install("7.14.3", &o).unwrap());
}

#[test]
fn tarball_404_and_missing_sha1_fail_closed() {
    let e = env();
    // Nothing registered: the .sha1 is fetched first and is missing.
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::ChecksumUnavailable {
                status: Some(404),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("refusing to install an unverified release"),
        "{err}"
    );
    // Tarball 404 while the .sha1 exists.
    let t = e.published("7.14.3");
    e.server.fault(&t.file_name, Fault::Status(404), Some(1));
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert!(
        matches!(err, InstallError::Http { status: 404, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string().contains("check version and release-url"),
        "{err}"
    );
    assert_failed_cleanly(&e, &err, &[]);
    // The .sha1 missing while the tarball exists: no tarball request at all.
    e.server.unregister_sha1("7.14.3");
    let n = e.server.tarball_requests("7.14.3").len();
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert!(
        matches!(err, InstallError::ChecksumUnavailable { .. }),
        "{err}"
    );
    assert_eq!(
        e.server.tarball_requests("7.14.3").len(),
        n,
        "no unverifiable download"
    );
    e.server.register(&t);
    installed(&e.install("7.14.3", &opts()).unwrap());
}

#[test]
fn server_errors_are_transient_and_retried() {
    let e = env();
    let t = e.published("7.14.3");
    e.server.fault(&t.file_name, Fault::Status(500), Some(1));
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert!(
        matches!(err, InstallError::Http { status: 500, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_failed_cleanly(&e, &err, &[]);
    // With retries, one 503 is ridden out inside the call.
    e.server.fault(&t.file_name, Fault::Status(503), Some(1));
    let mut o = opts();
    o.retries = 2;
    let mut retried = Vec::new();
    let out = ensure_release(&e.vol, "7.14.3", &e.url("7.14.3"), &o, &mut |ev| {
        if let InstallEvent::Retrying { .. } = ev {
            retried.push(ev.status_message().unwrap())
        }
    })
    .unwrap();
    assert_eq!(installed(&out).attempts, 2);
    assert_eq!(
        retried,
        vec!["Download of v7.14.3 interrupted; resuming (retry 1 of 2)"]
    );
}

#[test]
fn cut_connection_keeps_the_partial_and_the_retry_resumes_with_range() {
    let e = env();
    let t = e.published("7.14.3");
    let cut = 1_000_000;
    e.server.fault(&t.file_name, Fault::CutAfter(cut), Some(1));
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(
        matches!(
            err,
            InstallError::Network { .. } | InstallError::Truncated { .. }
        ),
        "{err}"
    );
    assert_failed_cleanly(&e, &err, &[]);
    let kept = fs::metadata(e.partial(&t)).unwrap().len();
    assert!(kept > 0 && kept <= cut, "kept {kept}");
    // Next call: resumes from the partial with a 206.
    let out = e.install("7.14.3", &opts()).unwrap();
    let r = installed(&out);
    eprintln!("{r:?} {:?}", e.server.requests());
    assert_eq!(r.resumed_from, kept);
    assert_eq!(r.transferred, t.size - kept);
    assert_eq!(r.tarball.sha1, t.sha1);
    let reqs = e.server.tarball_requests("7.14.3");
    let last = reqs.last().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(last.status, 206);
    verify_release(&e.vol, "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn cut_is_ridden_out_by_internal_retries() {
    let e = env();
    let t = e.published("7.14.3");
    e.server
        .fault(&t.file_name, Fault::CutAfter(700_000), Some(2));
    let mut o = opts();
    o.retries = 3;
    let r = e.install("7.14.3", &o).unwrap();
    let r = installed(&r);
    assert_eq!(r.attempts, 3);
    assert!(r.resumed_from > 0);
    let ranged: Vec<_> = e
        .server
        .tarball_requests("7.14.3")
        .into_iter()
        .filter(|q| q.status == 206)
        .collect();
    assert_eq!(ranged.len(), 2, "two resumes");
    // Everything was transferred about once in total.
    let sent = e.server.tarball_bytes_sent("7.14.3");
    assert!(
        sent >= t.size && sent < t.size + 2 * (256 << 10),
        "sent {sent} of {}",
        t.size
    );
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let e = env();
    let t = e.published("7.14.3");
    e.server
        .fault(&t.file_name, Fault::CutAfter(500_000), Some(1));
    e.install("7.14.3", &opts()).unwrap_err();
    e.server.fault(&t.file_name, Fault::IgnoreRange, None);
    let r = e.install("7.14.3", &opts()).unwrap();
    let r = installed(&r);
    assert_eq!(r.resumed_from, 0);
    assert_eq!(r.transferred, t.size);
    assert_eq!(r.tarball.sha1, t.sha1);
}

#[test]
fn corrupt_partial_is_detected_and_downloaded_again_from_zero() {
    let e = env();
    let t = e.published("7.14.3");
    e.server
        .fault(&t.file_name, Fault::CutAfter(600_000), Some(1));
    e.install("7.14.3", &opts()).unwrap_err();
    // Flip bytes in the kept partial (e.g. lost writes after a crash).
    let p = e.partial(&t);
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    for x in &mut b[n - 1000..] {
        *x ^= 0x55;
    }
    fs::write(&p, &b).unwrap();
    let r = e.install("7.14.3", &opts()).unwrap();
    let r = installed(&r);
    assert_eq!((r.resumed_from, r.attempts), (0, 2), "{r:?}");
    verify_release(&e.vol, "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn partial_already_complete_is_answered_416_and_used() {
    let e = env();
    let t = e.published("7.14.3");
    fs::create_dir_all(e.vol.layout().downloads_dir()).unwrap();
    fs::copy(&t.path, e.partial(&t)).unwrap();
    let r = e.install("7.14.3", &opts()).unwrap();
    let r = installed(&r);
    assert_eq!((r.resumed_from, r.transferred), (t.size, 0));
    assert_eq!(
        e.server.tarball_requests("7.14.3").last().unwrap().status,
        416
    );
}

#[test]
fn throttled_server_reports_progress_and_finishes() {
    let e = env();
    let t = e.tarball("7.14.3", 3 << 20, Variant::Normal);
    e.server.register(&t);
    e.server.fault(&t.file_name, Fault::Throttle(4 << 20), None);
    let mut o = opts();
    o.progress_interval = Duration::from_millis(100);
    let mut pcts = Vec::new();
    let out = ensure_release(&e.vol, "7.14.3", &e.url("7.14.3"), &o, &mut |ev| {
        if let InstallEvent::Downloading { bytes, total, .. } = ev {
            pcts.push((*bytes, *total))
        }
    })
    .unwrap();
    installed(&out);
    assert!(pcts.len() >= 5, "{pcts:?}");
    assert!(
        pcts.windows(2).all(|w| w[0].0 <= w[1].0),
        "monotonic: {pcts:?}"
    );
    assert_eq!(pcts.last().unwrap(), &(t.size, Some(t.size)));
}

#[test]
fn slow_server_times_out_as_transient() {
    let e = env();
    let t = e.published("7.14.3");
    let mut o = opts();
    o.http.read_timeout = Duration::from_millis(300);
    // 2 bytes/s: a byte every 500 ms, longer than the read timeout.
    e.server.fault(&t.file_name, Fault::Throttle(2), None);
    let err = e.install("7.14.3", &o).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.to_string().contains("will retry"), "{err}");
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn hostile_tarballs_publish_nothing_and_touch_nothing_outside() {
    for (variant, needle) in [
        (
            Variant::DotDotEntry,
            "entry concourse/../../escape: it contains a .. component",
        ),
        (
            Variant::SymlinkEscape,
            "entry concourse/bin/escape: its symlink target ../../../../../../tmp escapes",
        ),
    ] {
        let e = env();
        e.published("7.14.2");
        e.install("7.14.2", &opts()).unwrap();
        let bad = e.tarball("7.14.3", 1 << 20, variant);
        e.server.register(&bad);
        let err = e.install("7.14.3", &opts()).unwrap_err();
        assert!(matches!(err, InstallError::UnsafeEntry { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(err.to_string().contains(needle), "{err}");
        assert_failed_cleanly(&e, &err, &["7.14.2"]);
        assert!(!e.vol.root().join("escape").exists());
        assert!(!e.vol.root().parent().unwrap().join("escape").exists());
        assert!(!Path::new("/tmp/concourse-symlink-escape").exists());
        assert!(!e.partial(&bad).exists(), "hostile bytes are not kept");
        // The fault goes away (a good tarball is published upstream): it installs.
        let good = e.tarball("7.14.3", 1 << 20, Variant::Normal);
        e.server.register(&good);
        installed(&e.install("7.14.3", &opts()).unwrap());
    }
}

#[test]
fn not_a_tarball_is_a_permanent_bad_archive() {
    let e = env();
    let t = e.published("7.14.3");
    let junk = e.tarballs.join("junk.tgz");
    fs::write(&junk, vec![b'x'; 10_000]).unwrap();
    let (sha1, _) = support::hash_file(&junk);
    e.server.substitute_tarball(
        "7.14.3",
        &Tarball {
            path: junk,
            sha1: sha1.clone(),
            ..t.clone()
        },
    );
    e.server.serve_text(
        &format!("/v7.14.3/{}.sha1", t.file_name),
        &format!("{sha1}  {}\n", t.file_name),
    );
    let err = e.install("7.14.3", &opts()).unwrap_err();
    assert!(matches!(err, InstallError::BadArchive { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn resource_installs_with_no_network_at_all() {
    let e = env();
    let t = e.tarball("7.14.3", 2 << 20, Variant::Normal);
    let mut o = opts();
    // A proxy that does not exist: any network use would fail.
    o.http.http_proxy = Some("http://127.0.0.1:9".into());
    o.http.https_proxy = Some("http://127.0.0.1:9".into());
    let mut statuses = Vec::new();
    let out = ensure_release(
        &e.vol,
        "7.14.3",
        &Source::Resource(t.path.clone()),
        &o,
        &mut |ev| statuses.extend(ev.status_message()),
    )
    .unwrap();
    let r = installed(&out);
    assert_eq!(r.tarball.sha1, t.sha1);
    assert!(r.tarball.source.starts_with("resource:"));
    assert!(
        statuses
            .iter()
            .any(|s| s == "Installing v7.14.3 from the concourse-release resource (100%)"),
        "{statuses:?}"
    );
    assert!(e.server.requests().is_empty());
    assert!(
        fs::read_dir(e.vol.layout().downloads_dir())
            .unwrap()
            .next()
            .is_none(),
        "no partial for a resource"
    );
    verify_release(&e.vol, "7.14.3", VerifyMode::Full).unwrap();
    // An empty resource (Juju's placeholder) is a clear error.
    let empty = e.tarballs.join("empty.tgz");
    fs::write(&empty, b"").unwrap();
    let err =
        ensure_release(&e.vol, "7.14.4", &Source::Resource(empty), &o, &mut |_| {}).unwrap_err();
    assert!(matches!(err, InstallError::ResourceEmpty { .. }), "{err}");
    assert!(err.to_string().contains("juju attach-resource"), "{err}");
    // A pinned sha256 applies to the resource too.
    o.expected_sha256 = Some("00".repeat(32));
    let err = ensure_release(
        &e.vol,
        "7.14.5",
        &Source::Resource(t.path.clone()),
        &o,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("re-attach the concourse-release resource"),
        "{err}"
    );
}

#[test]
fn not_enough_space_is_refused_before_downloading() {
    let e = env();
    e.published("7.14.3");
    let mut o = opts();
    o.unpack_factor = 1e9; // pretend the tree would be enormous
    let err = e.install("7.14.3", &o).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("are needed for download and unpack"),
        "{err}"
    );
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn caps_on_unpacked_size_apply() {
    let e = env();
    e.published("7.14.3");
    let mut o = opts();
    o.limits.max_bytes = 1 << 20;
    let err = e.install("7.14.3", &o).unwrap_err();
    assert!(matches!(err, InstallError::TooLarge { .. }), "{err}");
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn dead_writer_leftovers_are_cleaned_and_its_partial_resumed() {
    let e = env();
    let t = e.published("7.14.3");
    let l = e.vol.layout();
    e.vol.ensure_layout().unwrap();
    // A dead writer: marker, staging dir with junk, partial of this file, partial of another.
    let m = concourse_ci::storage_coordinator::ProgressMarker::new(
        "7.14.3",
        "concourse-ci/7",
        1 << 20,
        Some(t.size),
    );
    fs::write(l.progress_file(), m.to_json()).unwrap();
    let st = l.staging_dir("7.14.3", "concourse-ci/7", 4242);
    fs::create_dir_all(st.join("concourse/bin")).unwrap();
    fs::copy(&t.path, l.partial_file(&t.file_name)).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(l.partial_file(&t.file_name))
        .unwrap();
    f.set_len(1 << 20).unwrap();
    fs::write(l.partial_file("concourse-7.0.0-linux-amd64.tgz"), b"old").unwrap();
    let mut cleaned = None;
    let out = ensure_release(&e.vol, "7.14.3", &e.url("7.14.3"), &opts(), &mut |ev| {
        if let InstallEvent::CleanedDeadWriter(c) = ev {
            cleaned = Some(c.clone())
        }
    })
    .unwrap();
    let r = installed(&out);
    let c = cleaned.expect("cleanup reported");
    assert_eq!(c.dead_marker.unwrap().unit, "concourse-ci/7");
    assert_eq!(c.removed_dirs, vec![st.clone()]);
    assert_eq!(c.removed_partials.len(), 1);
    assert_eq!(r.resumed_from, 1 << 20);
    assert!(!st.exists());
    assert_eq!(e.releases(), vec!["7.14.3"]);
}

#[test]
fn prune_keeps_requested_installed_and_running_versions() {
    let e = env();
    for v in ["7.13.0", "7.14.0", "7.14.2", "7.14.3"] {
        e.published(v);
        e.install(v, &opts()).unwrap();
    }
    e.vol
        .try_lock_install()
        .unwrap()
        .unwrap()
        .set_installed_version("7.14.3")
        .unwrap();
    e.vol
        .update_unit_state("concourse-ci/2", |s| {
            s.running_version = Some("7.14.0".into())
        })
        .unwrap();
    let r = prune_releases(
        &e.vol,
        &["7.14.2"],
        Duration::from_secs(1),
        &Backoff::DEFAULT,
    )
    .unwrap();
    assert_eq!(r.removed, vec!["7.13.0"]);
    assert_eq!(e.releases(), vec!["7.14.0", "7.14.2", "7.14.3"]);
    let why: Vec<&str> = r.kept.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(
        why,
        vec!["used by concourse-ci/2", "requested", "installed"]
    );
    // Under the lock: a held lock makes prune wait, then give up as Waiting.
    let _g = e.vol.try_lock_install().unwrap().unwrap();
    let b = Backoff {
        first: Duration::from_millis(5),
        factor: 2,
        max: Duration::from_millis(10),
    };
    let err = prune_releases(&e.vol, &[], Duration::from_millis(50), &b).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Waiting);
}

#[test]
fn latest_version_lookup_sends_the_token_only_when_set() {
    let e = env();
    e.server.set_github_latest("8.2.5");
    let cfg = |token: &str| {
        let mut m = serde_json::Map::new();
        m.insert("github-token".into(), token.into());
        m.insert("release-api-url".into(), e.server.github_api_url().into());
        CharmConfig::from_map(&m).unwrap()
    };
    let http = opts().http;
    let c = cfg("");
    assert_eq!(
        latest_version(&c.release_api_url, &c.github_token, &http).unwrap(),
        "8.2.5"
    );
    let c = cfg("ghp_secret");
    assert_eq!(
        latest_version(&c.release_api_url, &c.github_token, &http).unwrap(),
        "8.2.5"
    );
    let auth: Vec<Option<String>> = e
        .server
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(auth, vec![None, Some("Bearer ghp_secret".to_string())]);
    // Rate limited / errors: typed, never showing the token.
    e.server
        .fault("releases/latest", Fault::Status(401), Some(1));
    let err = latest_version(&c.release_api_url, &c.github_token, &http).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string().contains("github-token was rejected"),
        "{err}"
    );
    assert!(!err.to_string().contains("ghp_secret"));
    e.server
        .fault("releases/latest", Fault::Status(502), Some(1));
    let err = latest_version(&c.release_api_url, &c.github_token, &http).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}
