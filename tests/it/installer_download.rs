//! `ensure_release` against a real HTTP server on 127.0.0.1 (the simulator's release
//! server), real generated tarballs and real directories: the happy path, every fault of
//! issue 4, resume, the resource source, verify, prune and the latest-version lookup.

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use concourse_ci::config::CharmConfig;
use concourse_ci::installer::{
    self, ensure_release, ensure_verified, latest_version, prune_releases, verify_release,
    InstallError, InstallEvent, InstallOptions, Outcome, Source, VerifyMode,
};
use concourse_ci::storage_coordinator::{Backoff, ErrorClass, ProgressMarker, Volume};
use support::{
    tarball, tarball_requests, Fault, FaultRule, NoRangeServer, ReleaseServer, Tarball, Target,
    Variant,
};

const UNIT: &str = "concourse-ci/0";
const V: &str = "7.14.3";

fn opts() -> InstallOptions {
    let mut o = InstallOptions::new(UNIT);
    o.retries = 0;
    o.retry_backoff = Backoff {
        first: Duration::from_millis(10),
        factor: 2,
        max: Duration::from_millis(50),
    };
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
    tmp: tempfile::TempDir,
    vol: Volume,
    server: ReleaseServer,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("volume");
    fs::create_dir_all(&root).unwrap();
    Env {
        vol: Volume::new(&root),
        tmp,
        server: support::server(),
    }
}

impl Env {
    fn published(&self, version: &str) -> Tarball {
        let t = tarball(version, 2 << 20, Variant::Normal);
        self.server.register(t.clone());
        t
    }
    fn fault_once(&self, fault: Fault) {
        self.server
            .add_fault(FaultRule::once(Target::Tarball(V.into()), fault));
    }
    fn url(&self, version: &str) -> Source {
        Source::Url(self.server.tarball_url(version))
    }
    fn install(&self, version: &str, o: &InstallOptions) -> Result<Outcome, InstallError> {
        ensure_release(&self.vol, version, &self.url(version), o, &mut |_| {})
    }
    /// Everything under releases/ (staging and trash dirs would show up here).
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

/// Published nothing new, kept `keep` intact, removed the marker.
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
fn installs_verifies_and_then_takes_the_fast_path() {
    let e = env();
    let t = e.published(V);
    let mut o = opts();
    o.set_installed_version = true;
    let mut events = Vec::new();
    let out = ensure_release(&e.vol, V, &e.url(V), &o, &mut |ev| events.push(ev.clone())).unwrap();
    let r = installed(&out);
    assert_eq!(r.tarball.sha1, t.sha1_hex);
    assert_eq!(r.tarball.sha256, t.sha256_hex);
    assert_eq!(r.tarball.size, t.size);
    assert_eq!(r.unpacked_bytes, t.unpacked_size);
    assert_eq!((r.resumed_from, r.transferred, r.attempts), (0, t.size, 1));
    assert_eq!(e.releases(), vec![V]);
    assert_eq!(e.vol.installed_version().unwrap().as_deref(), Some(V));
    // Exec bits survived; the marker and the partial are gone.
    let bin = e.vol.root().join("releases/7.14.3/concourse/bin/concourse");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(!e.partial(&t).exists());
    assert!(!e.vol.layout().progress_file().exists());
    // Progress was reported, ending at 100%, then publication.
    let statuses: Vec<String> = events.iter().filter_map(|e| e.status_message()).collect();
    assert!(
        statuses.iter().any(|s| s == "Downloading v7.14.3 (100%)"),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().unwrap(), "Publishing v7.14.3");
    // Verify: full hashes, and the binary prints the version.
    let v = verify_release(&e.vol, V, VerifyMode::Full).unwrap();
    assert_eq!(v.binary_version, V);
    assert_eq!(v.installed_by, UNIT);
    assert_eq!(v.bytes, t.unpacked_size);
    // Fast path: no lock, no request.
    let before = e.server.requests().len();
    let again = e.install(V, &o).unwrap();
    assert!(
        matches!(again, Outcome::AlreadyPresent { ref installed_by, .. } if installed_by.as_deref() == Some(UNIT)),
        "{again:?}"
    );
    assert!(again
        .log_line("concourse-ci/1", V)
        .contains("concourse-ci/1 reuses v7.14.3 downloaded by concourse-ci/0"));
    assert_eq!(e.server.requests().len(), before);
}

#[test]
fn verify_detects_a_tampered_release_and_a_wrong_or_broken_binary() {
    let e = env();
    e.published(V);
    e.install(V, &opts()).unwrap();
    let f = e
        .vol
        .root()
        .join("releases/7.14.3/concourse/resource-types/git/resource_metadata.json");
    let mut content = fs::read(&f).unwrap();
    content[0] ^= 1;
    fs::write(&f, &content).unwrap();
    verify_release(&e.vol, V, VerifyMode::Quick).unwrap();
    let err = verify_release(&e.vol, V, VerifyMode::Full).unwrap_err();
    assert!(matches!(err, InstallError::ReleaseCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("resource_metadata.json"), "{err}");

    e.server
        .register(tarball("7.14.4", 1 << 20, Variant::WrongVersion));
    // The install itself verifies and records the failure on the volume...
    let err = e.install("7.14.4", &opts()).unwrap_err();
    assert!(
        matches!(&err, InstallError::Unverified { detail, .. } if detail.contains("printed \"0.0.0-dev\", expected 7.14.4")),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    // ...so that no later hook or unit uses it (it used to be used from the next hook).
    assert!(matches!(
        e.install("7.14.4", &opts()).unwrap(),
        Outcome::AlreadyPresent { .. }
    ));
    let later = ensure_verified(
        &e.vol,
        "7.14.4",
        "concourse-ci/1",
        Duration::ZERO,
        &Backoff::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(later, InstallError::Unverified { .. }), "{later}");
    let record = e.vol.read_verification("7.14.4").unwrap().unwrap();
    assert!(!record.ok && record.by == UNIT, "{record:?}");
    let err = verify_release(&e.vol, "7.14.4", VerifyMode::Quick).unwrap_err();
    assert!(matches!(err, InstallError::BinaryFailed { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("printed \"0.0.0-dev\", expected 7.14.4"),
        "{err}"
    );

    e.server
        .register(tarball("7.14.5", 1 << 20, Variant::BrokenBinary));
    let err = e.install("7.14.5", &opts()).unwrap_err();
    assert!(matches!(err, InstallError::Unverified { .. }), "{err}");
    let err = verify_release(&e.vol, "7.14.5", VerifyMode::Quick).unwrap_err();
    assert!(matches!(err, InstallError::BinaryFailed { .. }), "{err}");

    let err = verify_release(&e.vol, "9.9.9", VerifyMode::Quick).unwrap_err();
    assert!(matches!(err, InstallError::NotInstalled { .. }), "{err}");
}

#[test]
fn wrong_sha1_is_a_permanent_mismatch_then_recovers() {
    let e = env();
    e.published("7.14.2");
    e.install("7.14.2", &opts()).unwrap();
    let t = e.published(V);
    e.server.set_fault(Target::Sha1(V.into()), Fault::WrongSha1);
    let err = e.install(V, &opts()).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    let msg = err.status_message();
    assert!(
        msg.starts_with("checksum mismatch for concourse-7.14.3-linux-amd64.tgz (sha1 expected ")
            && msg.contains(&format!(", got {})", t.sha1_hex))
            && msg.ends_with("; check release-url"),
        "{msg}"
    );
    assert!(!e.partial(&t).exists(), "a mismatching partial is deleted");
    assert_failed_cleanly(&e, &err, &["7.14.2"]);
    e.server.clear_faults();
    installed(&e.install(V, &opts()).unwrap());
    assert_eq!(e.releases(), vec!["7.14.2", V]);
}

#[test]
fn pinned_sha256_is_checked_too() {
    let e = env();
    let t = e.published(V);
    let mut o = opts();
    o.expected_sha256 = Some("ab".repeat(32));
    let err = e.install(V, &o).unwrap_err();
    assert!(err.to_string().contains("sha256 expected abab"), "{err}");
    assert_failed_cleanly(&e, &err, &[]);
    o.expected_sha256 = Some(t.sha256_hex.to_uppercase());
    installed(&e.install(V, &o).unwrap());
}

#[test]
fn tarball_404_and_missing_sha1_fail_closed() {
    let e = env();
    // Nothing registered: the .sha1 is fetched first and is missing.
    let err = e.install(V, &opts()).unwrap_err();
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
    e.published(V);
    e.fault_once(Fault::Status(404));
    let err = e.install(V, &opts()).unwrap_err();
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
    // The .sha1 unavailable while the tarball exists: no tarball request at all.
    let id = e
        .server
        .set_fault(Target::Sha1(V.into()), Fault::Status(404));
    let n = tarball_requests(&e.server, V).len();
    let err = e.install(V, &opts()).unwrap_err();
    assert!(
        matches!(err, InstallError::ChecksumUnavailable { .. }),
        "{err}"
    );
    assert_eq!(
        tarball_requests(&e.server, V).len(),
        n,
        "no unverifiable download"
    );
    e.server.remove_fault(id);
    installed(&e.install(V, &opts()).unwrap());
}

#[test]
fn server_errors_are_transient_and_retried() {
    let e = env();
    e.published(V);
    e.fault_once(Fault::Status(500));
    let err = e.install(V, &opts()).unwrap_err();
    assert!(
        matches!(err, InstallError::Http { status: 500, .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(
        err.to_string().ends_with("answered HTTP 500; will retry"),
        "{err}"
    );
    assert_failed_cleanly(&e, &err, &[]);
    // With retries, one 503 is ridden out inside the call.
    e.fault_once(Fault::Status(503));
    let mut o = opts();
    o.retries = 2;
    let mut retried = Vec::new();
    let out = ensure_release(&e.vol, V, &e.url(V), &o, &mut |ev| {
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
fn cut_connection_keeps_the_partial_and_the_next_call_resumes_with_range() {
    let e = env();
    let t = e.published(V);
    let cut = 1_000_000;
    e.fault_once(Fault::CutAfter(cut));
    let err = e.install(V, &opts()).unwrap_err();
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
    let out = e.install(V, &opts()).unwrap();
    let r = installed(&out);
    assert_eq!(r.resumed_from, kept);
    assert_eq!(r.transferred, t.size - kept);
    assert_eq!(r.tarball.sha1, t.sha1_hex);
    let reqs = tarball_requests(&e.server, V);
    let last = reqs.last().unwrap();
    assert_eq!(
        last.range.as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(last.status, 206);
    verify_release(&e.vol, V, VerifyMode::Full).unwrap();
}

#[test]
fn cuts_are_ridden_out_by_internal_retries() {
    let e = env();
    let t = e.published(V);
    e.server.add_fault(FaultRule::times(
        Target::Tarball(V.into()),
        Fault::CutAfter(700_000),
        2,
    ));
    let mut o = opts();
    o.retries = 3;
    let r = e.install(V, &o).unwrap();
    let r = installed(&r);
    assert_eq!(r.attempts, 3);
    assert!(r.resumed_from > 0);
    let ranged = tarball_requests(&e.server, V)
        .into_iter()
        .filter(|q| q.status == 206)
        .count();
    assert_eq!(ranged, 2, "two resumes");
    assert_eq!(e.server.count_complete_downloads(V), 1);
    // Everything was transferred about once in total.
    let sent = e.server.bytes_served(V);
    assert!(
        sent >= t.size && sent < t.size + 2 * (256 << 10),
        "sent {sent} of {}",
        t.size
    );
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let e = env();
    let t = tarball(V, 2 << 20, Variant::Normal);
    let s = NoRangeServer::start(&t);
    // A partial from an earlier, interrupted download.
    fs::create_dir_all(e.vol.layout().downloads_dir()).unwrap();
    let head: Vec<u8> = fs::read(&t.path).unwrap()[..500_000].to_vec();
    fs::write(e.partial(&t), head).unwrap();
    let out = ensure_release(&e.vol, V, &Source::Url(s.url(&t)), &opts(), &mut |_| {}).unwrap();
    let r = installed(&out);
    assert_eq!((r.resumed_from, r.transferred), (0, t.size));
    assert_eq!(r.tarball.sha1, t.sha1_hex);
    verify_release(&e.vol, V, VerifyMode::Full).unwrap();
}

#[test]
fn corrupt_partial_is_detected_and_downloaded_again_from_zero() {
    let e = env();
    let t = e.published(V);
    e.fault_once(Fault::CutAfter(600_000));
    e.install(V, &opts()).unwrap_err();
    // Flip bytes in the kept partial (e.g. writes lost in a crash).
    let p = e.partial(&t);
    let mut b = fs::read(&p).unwrap();
    let n = b.len();
    for x in &mut b[n - 1000..] {
        *x ^= 0x55;
    }
    fs::write(&p, &b).unwrap();
    let r = e.install(V, &opts()).unwrap();
    let r = installed(&r);
    assert_eq!((r.resumed_from, r.attempts), (0, 2), "{r:?}");
    verify_release(&e.vol, V, VerifyMode::Full).unwrap();
}

#[test]
fn partial_already_complete_is_answered_416_and_used() {
    let e = env();
    let t = e.published(V);
    fs::create_dir_all(e.vol.layout().downloads_dir()).unwrap();
    fs::copy(&t.path, e.partial(&t)).unwrap();
    let r = e.install(V, &opts()).unwrap();
    let r = installed(&r);
    assert_eq!((r.resumed_from, r.transferred), (t.size, 0));
    assert_eq!(tarball_requests(&e.server, V).last().unwrap().status, 416);
}

#[test]
fn throttled_server_reports_progress_and_finishes() {
    let e = env();
    let t = tarball(V, 3 << 20, Variant::Normal);
    e.server.register(t.clone());
    e.server
        .set_fault(Target::Tarball(V.into()), Fault::Throttle(4 << 20));
    let mut o = opts();
    o.progress_interval = Duration::from_millis(100);
    let mut seen = Vec::new();
    let out = ensure_release(&e.vol, V, &e.url(V), &o, &mut |ev| {
        if let InstallEvent::Downloading { bytes, total, .. } = ev {
            seen.push((*bytes, *total))
        }
    })
    .unwrap();
    installed(&out);
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "monotonic: {seen:?}"
    );
    assert_eq!(seen.last().unwrap(), &(t.size, Some(t.size)));
}

#[test]
fn unresponsive_server_times_out_as_transient() {
    let e = env();
    e.published(V);
    let mut o = opts();
    o.http.read_timeout = Duration::from_millis(300);
    e.fault_once(Fault::Delay(Duration::from_secs(3)));
    let err = e.install(V, &o).unwrap_err();
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
            Variant::AbsolutePath,
            "entry /tmp/concourse-absolute-escape: it is an absolute path",
        ),
        (
            Variant::SymlinkEscape,
            "entry concourse/bin/escape: its symlink target ../../../../../../../../../tmp escapes the release tree",
        ),
    ] {
        let e = env();
        e.published("7.14.2");
        e.install("7.14.2", &opts()).unwrap();
        let bad = tarball(V, 1 << 20, variant);
        e.server.register(bad.clone());
        let err = e.install(V, &opts()).unwrap_err();
        assert!(matches!(err, InstallError::UnsafeEntry { .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Permanent);
        assert!(err.to_string().contains(needle), "{err}");
        assert_failed_cleanly(&e, &err, &["7.14.2"]);
        assert!(!e.vol.root().join("escape").exists());
        assert!(!e.tmp.path().join("escape").exists());
        assert!(!Path::new("/tmp/concourse-absolute-escape").exists());
        assert!(!Path::new("/tmp/concourse-symlink-escape").exists());
        assert!(!e.partial(&bad).exists(), "hostile bytes are not kept");
        // The fault goes away (a good tarball is published upstream): it installs.
        e.published(V);
        installed(&e.install(V, &opts()).unwrap());
    }
}

#[test]
fn not_a_tarball_is_a_permanent_bad_archive() {
    let e = env();
    let mut t = e.published(V);
    let junk = e.tmp.path().join("junk.tgz");
    fs::write(&junk, vec![b'x'; 10_000]).unwrap();
    let (sha1, sha256) = release_fixtures::tarball::hash_file(&junk).unwrap();
    t.path = junk;
    t.size = 10_000;
    t.sha1_hex = sha1;
    t.sha256_hex = sha256;
    e.server.register(t);
    let err = e.install(V, &opts()).unwrap_err();
    assert!(matches!(err, InstallError::BadArchive { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn resource_installs_with_no_network_at_all() {
    let e = env();
    let t = tarball(V, 2 << 20, Variant::Normal);
    let mut o = opts();
    // A proxy that does not exist: any network use would fail.
    o.http.http_proxy = Some("http://127.0.0.1:9".into());
    o.http.https_proxy = Some("http://127.0.0.1:9".into());
    let mut statuses = Vec::new();
    let out = ensure_release(
        &e.vol,
        V,
        &Source::Resource(t.path.clone()),
        &o,
        &mut |ev| statuses.extend(ev.status_message()),
    )
    .unwrap();
    let r = installed(&out);
    assert_eq!(r.tarball.sha1, t.sha1_hex);
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
    verify_release(&e.vol, V, VerifyMode::Full).unwrap();
    // An empty resource (Juju's placeholder) is a clear error.
    let empty = e.tmp.path().join("empty.tgz");
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
fn resource_of_another_version_is_refused() {
    let e = env();
    let other = tarball("7.14.2", 1 << 20, Variant::Normal);
    let err = ensure_release(
        &e.vol,
        V,
        &Source::Resource(other.path.clone()),
        &opts(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, InstallError::ResourceVersionMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string().contains(
            "holds v7.14.2, not v7.14.3; attach the v7.14.3 tarball or set version=7.14.2"
        ),
        "{err}"
    );
    assert_failed_cleanly(&e, &err, &[]);
    // The matching one installs.
    let t = tarball(V, 1 << 20, Variant::Normal);
    installed(
        &ensure_release(
            &e.vol,
            V,
            &Source::Resource(t.path.clone()),
            &opts(),
            &mut |_| {},
        )
        .unwrap(),
    );
}

#[test]
fn a_stray_file_at_the_release_path_is_reported() {
    let e = env();
    e.published(V);
    e.vol.ensure_layout().unwrap();
    fs::write(e.vol.root().join("releases").join(V), b"junk").unwrap();
    let err = e.install(V, &opts()).unwrap_err();
    assert!(matches!(err, InstallError::ReleaseCorrupt { .. }), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(e.server.requests().is_empty(), "nothing downloaded");
}

#[test]
fn not_enough_space_is_refused_before_downloading() {
    let e = env();
    e.published(V);
    let mut o = opts();
    o.unpack_factor = 1e9; // pretend the tree would be enormous
    let err = e.install(V, &o).unwrap_err();
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
    e.published(V);
    let mut o = opts();
    o.limits.max_bytes = 1 << 20;
    let err = e.install(V, &o).unwrap_err();
    assert!(matches!(err, InstallError::TooLarge { .. }), "{err}");
    assert_failed_cleanly(&e, &err, &[]);
}

#[test]
fn dead_writer_leftovers_are_cleaned_and_its_partial_resumed() {
    let e = env();
    let t = e.published(V);
    let l = e.vol.layout();
    e.vol.ensure_layout().unwrap();
    // A dead writer: marker, staging dir, partial of this file, partial of another.
    let m = ProgressMarker::new(V, "concourse-ci/7", 1 << 20, Some(t.size));
    fs::write(l.progress_file(), m.to_json()).unwrap();
    let st = l.staging_dir(V, "concourse-ci/7", 4242);
    fs::create_dir_all(st.join("concourse/bin")).unwrap();
    let head: Vec<u8> = fs::read(&t.path).unwrap()[..1 << 20].to_vec();
    fs::write(l.partial_file(&t.file_name), head).unwrap();
    fs::write(l.partial_file("concourse-7.0.0-linux-amd64.tgz"), b"old").unwrap();
    let mut cleaned = None;
    let out = ensure_release(&e.vol, V, &e.url(V), &opts(), &mut |ev| {
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
    assert_eq!(e.releases(), vec![V]);
}

#[test]
fn prune_keeps_requested_installed_and_running_versions() {
    let e = env();
    for v in ["7.13.0", "7.14.0", "7.14.2", V] {
        e.published(v);
        e.install(v, &opts()).unwrap();
    }
    e.vol
        .try_lock_install()
        .unwrap()
        .unwrap()
        .set_installed_version(V)
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
    assert_eq!(e.releases(), vec!["7.14.0", "7.14.2", V]);
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
    e.server.set_github_latest(Some("8.2.5"));
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
        .github_requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(auth, vec![None, Some("Bearer ghp_secret".to_string())]);
    // Errors are typed and never show the token.
    e.server
        .add_fault(FaultRule::once(Target::GithubLatest, Fault::RateLimited));
    let err = latest_version(&c.release_api_url, &c.github_token, &http).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.to_string().contains("rate limit"), "{err}");
    e.server
        .add_fault(FaultRule::once(Target::GithubLatest, Fault::Status(401)));
    let err = latest_version(&c.release_api_url, &c.github_token, &http).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string().contains("GitHub token was rejected"),
        "{err}"
    );
    assert!(!err.to_string().contains("ghp_secret"));
    e.server
        .add_fault(FaultRule::once(Target::GithubLatest, Fault::Status(502)));
    let err = latest_version(&c.release_api_url, &c.github_token, &http).unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
}

#[test]
fn a_download_without_content_length_is_capped() {
    // Without a Content-Length nothing bounded a download: a server (or a proxy) could
    // fill the volume.
    let e = env();
    let t = e.published(V);
    e.server
        .set_fault(Target::Tarball(V.into()), Fault::NoContentLength);
    let mut o = opts();
    o.max_download = Some(t.size / 2);
    let err = e.install(V, &o).unwrap_err();
    assert!(
        matches!(&err, InstallError::TooLarge { detail, .. } if detail.contains("without a Content-Length")),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert_failed_cleanly(&e, &err, &[]);
    // Remembered: the same tarball is not fetched again...
    let requests = support::tarball_requests(&e.server, V).len();
    let again = e.install(V, &o).unwrap_err();
    assert_eq!(again.status_message(), err.status_message());
    assert_eq!(support::tarball_requests(&e.server, V).len(), requests);
    // ...until something asks for it again (the upgrade action forgets the failure);
    // with a cap it fits under, the same server is fine.
    let lock = e.vol.try_lock_install().unwrap().unwrap();
    assert!(lock.clear_failure(V).unwrap());
    drop(lock);
    o.max_download = Some(t.size * 3);
    e.install(V, &o).unwrap();
}

/// The release server behind an HTTPS front with its own CA.
fn https_env() -> (Env, release_fixtures::tls::TlsFront) {
    let e = env();
    let front = release_fixtures::tls::TlsFront::start(e.server.addr()).unwrap();
    (e, front)
}

#[test]
fn an_https_mirror_signed_by_release_ca_installs() {
    let (e, front) = https_env();
    e.published(V);
    let mut o = opts();
    o.http.extra_ca_pem = Some(front.ca_pem().to_string());
    let url = Source::Url(front.url_of(&e.server.tarball_url(V)));
    let out = ensure_release(&e.vol, V, &url, &o, &mut |_| {}).unwrap();
    assert!(matches!(out, Outcome::Installed(_)), "{out:?}");
}

#[test]
fn an_untrusted_certificate_is_a_permanent_tls_error_naming_release_ca() {
    let (e, front) = https_env();
    e.published(V);
    let url = Source::Url(front.url_of(&e.server.tarball_url(V)));
    let err = ensure_release(&e.vol, V, &url, &opts(), &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.class(), ErrorClass::Permanent, "{msg}");
    assert!(msg.contains("TLS") && msg.contains("release-ca"), "{msg}");
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert_failed_cleanly(&e, &err, &[]);
    assert!(support::tarball_requests(&e.server, V).is_empty());
}

#[test]
fn an_https_to_http_redirect_is_refused() {
    // The front serves https; the server's redirect points at its own plain http URL.
    let (e, front) = https_env();
    e.published(V);
    e.server
        .set_fault(Target::Tarball(V.into()), Fault::Redirect(302));
    let mut o = opts();
    o.http.extra_ca_pem = Some(front.ca_pem().to_string());
    let url = Source::Url(front.url_of(&e.server.tarball_url(V)));
    let err = ensure_release(&e.vol, V, &url, &o, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.class(), ErrorClass::Permanent, "{msg}");
    assert!(msg.contains("redirect") && msg.contains("http://"), "{msg}");
    assert_failed_cleanly(&e, &err, &[]);
    // Nothing was fetched from the plain http location.
    assert!(
        !e.server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/redirected/")),
        "{:?}",
        e.server.requests()
    );
}

/// Issue 11 point 5: after a checksum failure every hook of every unit downloaded the
/// whole tarball again; now only the `.sha1` is fetched until it (or the source) changes.
#[test]
fn a_wrong_sha1_is_not_downloaded_again_until_the_sha1_changes() {
    let e = env();
    e.published(V);
    let id = e.server.set_fault(Target::Sha1(V.into()), Fault::WrongSha1);
    let first = e.install(V, &opts()).unwrap_err();
    assert!(
        matches!(first, InstallError::ChecksumMismatch { .. }),
        "{first}"
    );
    assert_eq!(tarball_requests(&e.server, V).len(), 1);
    let sha1s = support::sha1_requests(&e.server, V).len();
    for unit in ["concourse-ci/0", "concourse-ci/1", "concourse-ci/2"] {
        let mut o = opts();
        o.unit = unit.into();
        let again = e.install(V, &o).unwrap_err();
        assert_eq!(again.status_message(), first.status_message());
        assert_eq!(again.class(), ErrorClass::Permanent);
    }
    assert_eq!(tarball_requests(&e.server, V).len(), 1, "not fetched again");
    assert_eq!(support::sha1_requests(&e.server, V).len(), sha1s + 3);
    let record = e.vol.read_failure(V).unwrap().unwrap();
    assert!(
        !record.source.contains("127.0.0.1"),
        "a hash, not the URL: {record:?}"
    );
    // Another release-url is another source: fetched again.
    let other = Source::Url(format!("{}?mirror=2", e.server.tarball_url(V)));
    ensure_release(&e.vol, V, &other, &opts(), &mut |_| {}).unwrap_err();
    assert_eq!(tarball_requests(&e.server, V).len(), 2);
    // The mirror fixes its .sha1: downloaded and installed, the failure forgotten.
    e.server.remove_fault(id);
    e.install(V, &opts()).unwrap();
    assert_eq!(tarball_requests(&e.server, V).len(), 3);
    assert_eq!(e.vol.read_failure(V).unwrap(), None);
}

#[test]
fn an_unsafe_resource_is_not_read_again_until_it_changes() {
    let e = env();
    let bad = tarball(V, 1 << 20, Variant::DotDotEntry);
    let res = e.tmp.path().join("concourse.tgz");
    fs::copy(&bad.path, &res).unwrap();
    let read = |e: &Env| {
        let mut bytes = 0;
        let r = ensure_release(
            &e.vol,
            V,
            &Source::Resource(res.clone()),
            &opts(),
            &mut |ev| {
                if let InstallEvent::Downloading { bytes: b, .. } = ev {
                    bytes = bytes.max(*b);
                }
            },
        );
        (r, bytes)
    };
    let (r, bytes) = read(&e);
    assert!(matches!(r, Err(InstallError::UnsafeEntry { .. })), "{r:?}");
    assert!(bytes > 0);
    let (r, bytes) = read(&e);
    assert!(matches!(r, Err(InstallError::Remembered { .. })), "{r:?}");
    assert_eq!(bytes, 0, "the resource was not read again");
    // A new resource (juju attach-resource) is read.
    let good = tarball(V, 1 << 20, Variant::Normal);
    fs::copy(&good.path, &res).unwrap();
    let (r, _) = read(&e);
    assert!(matches!(r, Ok(Outcome::Installed(_))), "{r:?}");
}
