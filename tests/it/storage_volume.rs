//! Filesystem faults on real mounts (a small tmpfs, mounted read-only or too small for
//! the release; needs root, as CI has): each gives its typed, permanent error, publishes
//! nothing, leaves the published version running, and recovers once the fault is gone.

use crate::support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use concourse_ci::installer::{
    ensure_release, verify_release, InstallError, InstallOptions, Outcome, Source, VerifyMode,
};
use concourse_ci::storage_coordinator::{ErrorClass, FsChecks, StorageError, Volume};
use support::{tarball, tarball_requests, Tmpfs, Variant};

fn opts() -> InstallOptions {
    let mut o = InstallOptions::new("concourse-ci/0");
    o.retries = 0;
    o.http.read_timeout = Duration::from_secs(10);
    o
}

fn releases(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.join("releases"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn read_only_volume_is_blocked_keeps_the_running_release_and_recovers() {
    let server = support::server();
    server.register(tarball("7.14.2", 1 << 20, Variant::Normal));
    server.register(tarball("7.14.3", 1 << 20, Variant::Normal));
    let fs_ = Tmpfs::mount("64m");
    let vol = Volume::new(fs_.path());
    let url = |v: &str| Source::Url(server.tarball_url(v));
    ensure_release(&vol, "7.14.2", &url("7.14.2"), &opts(), &mut |_| {}).unwrap();

    fs_.remount("ro");
    let err = ensure_release(&vol, "7.14.3", &url("7.14.3"), &opts(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, InstallError::Storage(StorageError::ReadOnly { .. })),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("is read-only; remount it read-write"),
        "{err}"
    );
    let checks = FsChecks {
        require_mount_point: true,
        needed_bytes: 0,
        probe_flock: false,
        owner: None,
    };
    let e = vol.check(&checks).unwrap_err();
    assert!(matches!(e, StorageError::ReadOnly { .. }), "{e}");
    // The running release is untouched and still usable from a read-only volume.
    assert_eq!(releases(fs_.path()), vec!["7.14.2"]);
    verify_release(&vol, "7.14.2", VerifyMode::Full).unwrap();
    assert!(matches!(
        ensure_release(&vol, "7.14.2", &url("7.14.2"), &opts(), &mut |_| {}).unwrap(),
        Outcome::AlreadyPresent { .. }
    ));
    assert!(
        tarball_requests(&server, "7.14.3").is_empty(),
        "nothing downloaded"
    );

    fs_.remount("rw");
    vol.check(&checks).unwrap();
    ensure_release(&vol, "7.14.3", &url("7.14.3"), &opts(), &mut |_| {}).unwrap();
    assert_eq!(releases(fs_.path()), vec!["7.14.2", "7.14.3"]);
}

#[test]
fn full_volume_is_refused_up_front_or_on_enospc_and_recovers() {
    let server = support::server();
    server.register(tarball("7.14.2", 256 << 10, Variant::Normal));
    let big = tarball("7.14.3", 8 << 20, Variant::Normal);
    server.register(big.clone());
    let fs_ = Tmpfs::mount("12m");
    let vol = Volume::new(fs_.path());
    let url = |v: &str| Source::Url(server.tarball_url(v));
    ensure_release(&vol, "7.14.2", &url("7.14.2"), &opts(), &mut |_| {}).unwrap();

    // 1. The space check (download + 1.2 x unpack > 12 MiB) refuses before the body.
    let err = ensure_release(&vol, "7.14.3", &url("7.14.3"), &opts(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, InstallError::Storage(StorageError::NoSpace { .. })),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("free but"), "{err}");
    assert!(
        server.bytes_served("7.14.3") < big.size,
        "body not downloaded"
    );

    // 2. An optimistic estimate passes the check; the writes then hit ENOSPC.
    let mut o = opts();
    o.unpack_factor = 0.01;
    let err = ensure_release(&vol, "7.14.3", &url("7.14.3"), &o, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, InstallError::Storage(StorageError::VolumeFull { .. })),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(
        releases(fs_.path()),
        vec!["7.14.2"],
        "nothing published, no staging left"
    );
    verify_release(&vol, "7.14.2", VerifyMode::Full).unwrap();
    assert!(vol.read_progress().is_none());

    // 3. The operator grows the volume: the install resumes and succeeds.
    fs_.remount("size=64m");
    let out = ensure_release(&vol, "7.14.3", &url("7.14.3"), &opts(), &mut |_| {}).unwrap();
    match out {
        Outcome::Installed(r) => assert!(r.resumed_from > 0, "{r:?}"),
        other => panic!("{other:?}"),
    }
    verify_release(&vol, "7.14.3", VerifyMode::Full).unwrap();
}

#[test]
fn volume_checks_on_a_real_mount() {
    let fs_ = Tmpfs::mount("16m");
    let vol = Volume::new(fs_.path());
    let r = vol
        .check(&FsChecks {
            require_mount_point: true,
            needed_bytes: 8 << 20,
            probe_flock: true,
            owner: None,
        })
        .unwrap();
    assert!(r.is_mount_point);
    assert!(
        r.total_bytes >= 15 << 20 && r.total_bytes <= 17 << 20,
        "{r:?}"
    );
    let e = vol
        .check(&FsChecks {
            require_mount_point: true,
            needed_bytes: 32 << 20,
            probe_flock: true,
            owner: None,
        })
        .unwrap_err();
    assert!(matches!(e, StorageError::NoSpace { .. }), "{e}");
    // A directory inside the mount is not a mount point.
    fs::create_dir(fs_.path().join("sub")).unwrap();
    let e = Volume::new(fs_.path().join("sub"))
        .check(&FsChecks {
            require_mount_point: true,
            needed_bytes: 0,
            probe_flock: false,
            owner: None,
        })
        .unwrap_err();
    assert!(matches!(e, StorageError::NotAMountPoint { .. }), "{e}");
    assert!(
        e.to_string().contains("mount the concourse-data volume"),
        "{e}"
    );
}

#[test]
fn missing_volume_is_blocked_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = Volume::new(tmp.path().join("not-mounted"));
    let err = ensure_release(
        &vol,
        "7.14.3",
        &Source::Url("http://127.0.0.1:9/x.tgz".into()),
        &opts(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Storage(StorageError::VolumeMissing { .. })
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("not-mounted does not exist; attach"),
        "{err}"
    );
}

/// The volume root squashes (a new file is not the charm's), or others can write what
/// root runs: refused, naming the offender. Real files, modes and owners (as root).
#[test]
fn a_volume_that_squashes_root_or_that_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fs_ = Tmpfs::mount("8m");
    let vol = Volume::new(fs_.path());
    vol.ensure_layout().unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let checks = |owner: u32| FsChecks {
        require_mount_point: true,
        needed_bytes: 0,
        probe_flock: false,
        owner: Some(owner),
    };
    vol.check(&checks(me)).unwrap();
    // A filesystem that gives the charm's new files to someone else (NFS root_squash
    // gives root's to nobody): here, the charm expecting uid 4242 gets files of `me`.
    let e = vol.check(&checks(4242)).unwrap_err();
    assert!(
        matches!(e, StorageError::RootSquashed { uid, .. } if uid == me),
        "{e}"
    );
    assert!(e.to_string().contains("no_root_squash"), "{e}");
    assert_eq!(e.class(), ErrorClass::Permanent);
    // A release file others can write.
    let bin = fs_.path().join("releases/7.14.3/concourse/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join("concourse"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(bin.join("concourse"), fs::Permissions::from_mode(0o757)).unwrap();
    let e = vol.check(&checks(me)).unwrap_err();
    assert!(
        matches!(&e, StorageError::WritableByOthers { path, mode: 0o757 } if *path == bin.join("concourse")),
        "{e}"
    );
    fs::set_permissions(bin.join("concourse"), fs::Permissions::from_mode(0o755)).unwrap();
    // One that belongs to nobody.
    std::os::unix::fs::chown(&bin, Some(65534), Some(65534)).unwrap();
    let e = vol.check(&checks(me)).unwrap_err();
    assert!(
        matches!(&e, StorageError::ForeignOwner { path, uid: 65534 } if *path == bin),
        "{e}"
    );
    std::os::unix::fs::chown(&bin, Some(me), Some(0)).unwrap();
    vol.check(&checks(me)).unwrap();
}
