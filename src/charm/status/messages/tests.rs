//! The catalogue against the texts other modules produce: each is rendered from the real
//! error or progress value and must be found as the intended entry.

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::installer::{InstallError, InstallEvent};
use crate::storage_coordinator::progress::WaitInfo;
use crate::storage_coordinator::{ProgressMarker, StorageError};
use crate::upgrade::{AppUpgrade, OptionNote, Phase, UnitReport};

/// `text` (of `kind`) is an instance of `want` and of no more specific entry.
#[track_caller]
fn is(want: Message, kind: StatusKind, text: &str) {
    assert_eq!(
        find(kind.as_str(), text),
        Some(&want),
        "`{}: {text}` should be the entry `{}`",
        kind.as_str(),
        want.text
    );
}

#[test]
fn matching_placeholders_and_literals() {
    assert!(WEB_READY.matches("Web ready (v7.14.3) http://10.0.0.5:8080"));
    assert!(!WEB_READY.matches("Web ready v7.14.3 http://x"));
    assert!(NO_ROLE.matches("No role for this unit"));
    assert!(!NO_ROLE.matches("No role for this unit!"));
    assert!(APP_READY.matches("v1 on 2 of 3 units"));
    assert!(!APP_READY.matches("v1 on 2 of 3"));
    // a literal `<…>` is text, not a placeholder
    assert!(!STORAGE_NOT_ATTACHED.matches(
        "storage concourse-data is not attached; deploy with --storage concourse-data=ebs,10G"
    ));
    assert_eq!(
        WAITING_FOR_TSA_RELATION.documented(),
        "Waiting for web unit's TSA key (juju integrate <web-app>:tsa <app>:flight)"
    );
    let s = WAITING_FOR_TSA_RELATION.fill(&["workers"]);
    assert_eq!(
        s.message,
        "Waiting for web unit's TSA key (juju integrate <web-app>:tsa workers:flight)"
    );
    assert!(WAITING_FOR_TSA_RELATION.matches(&s.message));
    // the most specific entry wins
    is(APP_READY, StatusKind::Active, "v1 on 2 of 3 units");
    is(
        APP_READY_OPTION_STALE,
        StatusKind::Active,
        "v1 on 2 of 3 units; the version option says 2; align it with: juju config a version=1",
    );
    assert_eq!(
        find("waiting", "Worker ready (v1)"),
        None,
        "kinds must agree"
    );
}

#[test]
fn entries_are_unique_and_documentable() {
    for (i, a) in ALL.iter().enumerate() {
        assert!(
            !ALL[..i]
                .iter()
                .any(|b| b.kind == a.kind && b.documented() == a.documented()),
            "duplicate entry {}",
            a.text
        );
        assert!(!a.text.contains('`'), "{}", a.text);
        assert!(a.kind != StatusKind::Unknown, "{}", a.text);
    }
}

#[test]
fn volume_errors() {
    let p = || PathBuf::from("/var/lib/concourse");
    let b = StatusKind::Blocked;
    for (want, e) in [
        (VOLUME_MISSING, StorageError::VolumeMissing { path: p() }),
        (
            VOLUME_NOT_A_DIRECTORY,
            StorageError::NotADirectory { path: p() },
        ),
        (
            VOLUME_NOT_A_MOUNT_POINT,
            StorageError::NotAMountPoint { path: p() },
        ),
        (VOLUME_READ_ONLY, StorageError::ReadOnly { path: p() }),
        (
            VOLUME_PERMISSION_DENIED,
            StorageError::PermissionDenied { path: p() },
        ),
        (
            VOLUME_TOO_SMALL,
            StorageError::NoSpace {
                path: p(),
                needed: 3 << 30,
                available: 1 << 30,
            },
        ),
        (VOLUME_FULL, StorageError::VolumeFull { path: p() }),
        (
            VOLUME_NO_FLOCK,
            StorageError::LockingUnsupported {
                path: p(),
                detail: "a second open file got the lock".into(),
            },
        ),
    ] {
        is(want, b, &e.to_string());
    }
    let gave_up = StorageError::LockTimeout {
        path: p().join(".install.lock"),
        waited: Duration::from_secs(90),
        holder: None,
    };
    is(
        LOCK_WAIT_GAVE_UP,
        StatusKind::Waiting,
        &InstallError::Storage(gave_up).status_message(),
    );
    let io = StorageError::io(
        "create directory",
        &p(),
        std::io::Error::from_raw_os_error(nix::libc::EIO),
    );
    is(VOLUME_IO, StatusKind::Maintenance, &io.to_string());
}

#[test]
fn install_progress() {
    let marker = ProgressMarker::new("7.14.3", "concourse-ci/1", 50, Some(100));
    let holder = WaitInfo {
        wanted: "7.14.3".into(),
        holder: Some(marker.clone()),
        waited: Duration::ZERO,
    };
    let w = StatusKind::Waiting;
    is(WAITING_FOR_DOWNLOAD, w, &holder.status_message());
    let nobody = WaitInfo {
        holder: None,
        ..holder.clone()
    };
    is(WAITING_FOR_VOLUME, w, &nobody.status_message());
    let timeout = StorageError::LockTimeout {
        path: PathBuf::from("/v/.lock"),
        waited: Duration::from_secs(90),
        holder: Some(Box::new(marker)),
    };
    is(
        WAITING_FOR_DOWNLOAD,
        w,
        &InstallError::Storage(timeout).status_message(),
    );
    let m = StatusKind::Maintenance;
    let version = || "7.14.3".to_string();
    for (want, ev) in [
        (
            DOWNLOADING,
            InstallEvent::Downloading {
                version: version(),
                bytes: 1,
                total: Some(4),
                from_resource: false,
            },
        ),
        (
            INSTALLING_RESOURCE,
            InstallEvent::Downloading {
                version: version(),
                bytes: 0,
                total: None,
                from_resource: true,
            },
        ),
        (
            DOWNLOAD_RETRY,
            InstallEvent::Retrying {
                version: version(),
                attempt: 1,
                of: 2,
                error: "x".into(),
            },
        ),
        (PUBLISHING, InstallEvent::Publishing { version: version() }),
    ] {
        assert!(!ev.is_waiting());
        is(want, m, &ev.status_message().unwrap());
    }
}

#[test]
fn install_errors() {
    let url = || "https://example.com/concourse-7.14.3-linux-amd64.tgz".to_string();
    let file = || "concourse-7.14.3-linux-amd64.tgz".to_string();
    let path = || PathBuf::from("/var/lib/juju/resources/concourse.tgz");
    let (b, m) = (StatusKind::Blocked, StatusKind::Maintenance);
    let mismatch = |from_resource| InstallError::ChecksumMismatch {
        file: file(),
        origin: url(),
        algorithm: "sha1",
        expected: "aa".into(),
        actual: "bb".into(),
        from_resource,
    };
    let unavailable = |status: Option<u16>| InstallError::ChecksumUnavailable {
        url: url(),
        detail: status.map_or("timed out".into(), |s| format!("HTTP {s}")),
        status,
    };
    let cases = [
        (
            RELEASE_NOT_FOUND,
            b,
            InstallError::Http {
                url: url(),
                status: 404,
            },
        ),
        (
            HTTP_TRANSIENT,
            m,
            InstallError::Http {
                url: url(),
                status: 503,
            },
        ),
        (
            HTTP_REFUSED,
            b,
            InstallError::Http {
                url: url(),
                status: 403,
            },
        ),
        (
            DOWNLOAD_FAILED,
            m,
            InstallError::Network {
                url: url(),
                detail: "connection reset".into(),
            },
        ),
        (
            DOWNLOAD_TRUNCATED,
            m,
            InstallError::Truncated {
                url: url(),
                got: 1,
                expected: 2,
            },
        ),
        (
            BAD_RANGE,
            m,
            InstallError::BadContentRange {
                url: url(),
                detail: "starts at 0".into(),
            },
        ),
        (CHECKSUM_UNAVAILABLE, b, unavailable(Some(403))),
        (CHECKSUM_RETRY, m, unavailable(Some(503))),
        (CHECKSUM_RETRY, m, unavailable(None)),
        (CHECKSUM_NOT_FOUND, b, unavailable(Some(404))),
        (
            CHECKSUM_FILE_INVALID,
            b,
            InstallError::ChecksumFileInvalid { url: url() },
        ),
        (CHECKSUM_MISMATCH, b, mismatch(false)),
        (RESOURCE_CHECKSUM_MISMATCH, b, mismatch(true)),
        (
            RESOURCE_UNREADABLE,
            b,
            InstallError::ResourceUnreadable {
                path: path(),
                source: std::io::Error::from_raw_os_error(nix::libc::EIO),
            },
        ),
        (
            RESOURCE_EMPTY,
            b,
            InstallError::ResourceEmpty { path: path() },
        ),
        (
            RESOURCE_WRONG_VERSION,
            b,
            InstallError::ResourceVersionMismatch {
                path: path(),
                found: "7.14.2".into(),
                wanted: "7.14.3".into(),
            },
        ),
        (
            TARBALL_UNSAFE,
            b,
            InstallError::UnsafeEntry {
                tarball: file(),
                entry: "../x".into(),
                reason: "escapes the release directory".into(),
            },
        ),
        (
            TARBALL_INVALID,
            b,
            InstallError::BadArchive {
                tarball: file(),
                detail: "not gzip".into(),
            },
        ),
        (
            TARBALL_TOO_LARGE,
            b,
            InstallError::TooLarge {
                tarball: file(),
                detail: "over 8 GiB".into(),
            },
        ),
        (
            RELEASE_URL_INVALID,
            b,
            InstallError::InvalidUrl {
                url: url(),
                reason: "no host".into(),
            },
        ),
        (
            PROXY_INVALID,
            b,
            InstallError::InvalidProxy { which: "https" },
        ),
        (
            RELEASE_CORRUPT,
            b,
            InstallError::ReleaseCorrupt {
                path: path(),
                detail: "exists but is not a directory".into(),
            },
        ),
        (INTERNAL_ERROR, m, InstallError::Internal("boom".into())),
    ];
    for (want, kind, e) in cases {
        let class = e.class();
        let expected = match kind {
            StatusKind::Blocked => crate::storage_coordinator::ErrorClass::Permanent,
            _ => crate::storage_coordinator::ErrorClass::Transient,
        };
        assert_eq!(class, expected, "{e}");
        is(want, kind, &e.status_message());
    }
    let latest = InstallError::Latest {
        url: "https://api.github.com/repos/concourse/concourse/releases/latest".into(),
        detail: "HTTP 403".into(),
        permanent: true,
    };
    is(
        LATEST_LOOKUP_FAILED,
        StatusKind::Blocked,
        &format!("{}; set version= to pin a release", latest.status_message()),
    );
}

#[test]
fn configuration_errors() {
    let mut map = serde_json::Map::new();
    map.insert("log-level".into(), "warn".into());
    map.insert("web-port".into(), 0.into());
    let errs = crate::config::CharmConfig::from_map(&map).unwrap_err();
    assert_eq!(errs.len(), 2);
    for e in &errs {
        is(INVALID_OPTION, StatusKind::Blocked, &e.status_message());
    }
}

#[test]
fn upgrade_progress_and_notes() {
    let app = |phase, rollback| AppUpgrade {
        phase,
        gen: 2,
        target: "7.14.3".into(),
        from: "7.14.2".into(),
        rollback,
        release: "7.14.2".into(),
        ..AppUpgrade::default()
    };
    let web = UnitReport {
        name: "a/0".into(),
        web: true,
        version: Some("7.14.2".into()),
        ..UnitReport::default()
    };
    let worker = UnitReport {
        name: "a/1".into(),
        web: false,
        ..web.clone()
    };
    let on_target = |u: &UnitReport| UnitReport {
        version: Some("7.14.3".into()),
        ..u.clone()
    };
    let m = StatusKind::Maintenance;
    let progress = crate::upgrade::progress;
    let units = [web.clone(), worker.clone()];
    is(
        UPGRADE_PREPARING,
        m,
        &progress(&app(Phase::Prepare, false), &units),
    );
    let acked = |u: &UnitReport| UnitReport {
        ack: Some((2, Phase::Prepare)),
        ..u.clone()
    };
    let prepared = [acked(&web), acked(&worker)];
    is(
        UPGRADE_PREPARED,
        m,
        &progress(&app(Phase::Prepare, false), &prepared),
    );
    is(
        UPGRADE_DOWNLOADING,
        m,
        &progress(&app(Phase::Downloading, false), &units),
    );
    is(
        UPGRADE_SWITCHING_WEB,
        m,
        &progress(&app(Phase::Complete, false), &units),
    );
    let web_done = [on_target(&web), worker.clone()];
    let workers = progress(&app(Phase::Complete, false), &web_done);
    is(UPGRADE_SWITCHING_WORKERS, m, &workers);
    is(
        ROLLBACK_SWITCHING_WEB,
        m,
        &progress(&app(Phase::Complete, true), &units),
    );
    let back = progress(&app(Phase::Complete, true), &web_done);
    is(ROLLBACK_SWITCHING_WORKERS, m, &back);
    let note = OptionNote::Downgrade {
        option: "7.14.1".into(),
        running: "7.14.2".into(),
    };
    is(APP_DOWNGRADE_REFUSED, StatusKind::Blocked, &note.text("ci"));
}

#[test]
fn trust_messages() {
    let b = StatusKind::Blocked;
    let url = || "https://mirror.example/concourse-7.14.3-linux-amd64.tgz".to_string();
    is(
        TLS_VERIFICATION_FAILED,
        b,
        &InstallError::Tls {
            url: url(),
            detail: "invalid peer certificate: UnknownIssuer".into(),
        }
        .status_message(),
    );
    let refused = crate::installer::download::RedirectRefused::Downgrade {
        to: "http://mirror.example/x".into(),
    };
    is(
        REDIRECT_REFUSED,
        b,
        &InstallError::RedirectRefused {
            url: url(),
            detail: refused.to_string(),
        }
        .status_message(),
    );
    is(
        RELEASE_CA_INVALID,
        b,
        &InstallError::InvalidCa {
            detail: "no CERTIFICATE block found".into(),
        }
        .status_message(),
    );
    is(
        RELEASE_SHA256_MISSING,
        b,
        &RELEASE_SHA256_MISSING.fill(&["8.0.0", "8.0.0"]).message,
    );
    is(
        RELEASE_URL_PLAIN_HTTP,
        StatusKind::Active,
        RELEASE_URL_PLAIN_HTTP.text,
    );
}

#[test]
fn permanent_hook_errors() {
    use crate::charm::release::ReleaseError;
    use crate::charm::CharmError;
    use crate::host::ProvisionError;
    use crate::keys::KeyError;
    use crate::web::WebError;
    let b = StatusKind::Blocked;
    let key = || PathBuf::from("/var/lib/concourse-web/keys/tsa_host_key");
    let os = std::io::Error::from_raw_os_error;
    let cases: Vec<(Message, CharmError)> = vec![
        (
            KEY_INVALID,
            WebError::Key(KeyError::Invalid { path: key() }).into(),
        ),
        (
            KEY_NOT_WRITTEN,
            WebError::Key(KeyError::Missing { path: key() }).into(),
        ),
        (
            KEYGEN_FAILED,
            WebError::Key(KeyError::Generate {
                path: key(),
                source: ProvisionError::KeyGen {
                    path: "/var/lib/concourse-ci/current/bin/concourse".into(),
                    stderr: "exec format error".into(),
                },
            })
            .into(),
        ),
        (
            KEYGEN_FAILED,
            WebError::Key(KeyError::Generate {
                path: key(),
                source: ProvisionError::Spawn {
                    path: "/var/lib/concourse-ci/current/bin/concourse".into(),
                    source: os(nix::libc::ENOEXEC),
                },
            })
            .into(),
        ),
        (
            USER_CREATE_FAILED,
            WebError::User(ProvisionError::User {
                user: "concourse".into(),
                why: "useradd: cannot lock /etc/passwd".into(),
            })
            .into(),
        ),
        (
            LOCAL_DISK_FULL,
            crate::service::ServiceError::Write {
                path: "/etc/concourse/web.env".into(),
                source: os(nix::libc::ENOSPC),
            }
            .into(),
        ),
        (
            LOCAL_READ_ONLY,
            ReleaseError::Pointer {
                link: "/var/lib/concourse-ci/current".into(),
                target: "/v/releases/7.14.3/concourse".into(),
                source: os(nix::libc::EROFS),
            }
            .into(),
        ),
        (
            INVALID_VERSION,
            ReleaseError::Storage(StorageError::InvalidVersion {
                version: "../7.14.3".into(),
            })
            .into(),
        ),
        (
            INVALID_UNIT_NAME,
            ReleaseError::Storage(StorageError::InvalidUnitName {
                unit: "concourse-ci".into(),
            })
            .into(),
        ),
    ];
    for (want, e) in cases {
        is(want, b, &e.permanent_cause().unwrap());
    }
}

#[test]
fn volume_trust_and_release_trust() {
    use crate::charm::release::ReleaseError;
    let b = StatusKind::Blocked;
    let p = || PathBuf::from("/var/lib/concourse");
    for (want, e) in [
        (
            VOLUME_ROOT_SQUASHED,
            StorageError::RootSquashed {
                path: p(),
                uid: 65534,
            },
        ),
        (
            VOLUME_FOREIGN_OWNER,
            StorageError::ForeignOwner {
                path: p().join("releases"),
                uid: 65534,
            },
        ),
        (
            VOLUME_WRITABLE_BY_OTHERS,
            StorageError::WritableByOthers {
                path: p().join("releases"),
                mode: 0o1777,
            },
        ),
    ] {
        is(want, b, &e.to_string());
    }
    let changed = ReleaseError::Changed {
        version: "7.14.3".into(),
        what: "concourse/bin/concourse has changed".into(),
        path: p().join("releases/7.14.3"),
    };
    is(RELEASE_CHANGED, b, &changed.to_string());
    let untrusted = crate::charm::CharmError::Release(ReleaseError::Untrusted {
        version: "7.14.3".into(),
    });
    is(
        WAITING_FOR_RELEASE_DIGESTS,
        StatusKind::Waiting,
        &untrusted.waiting_for().unwrap(),
    );
    is(
        VERSION_TIMEOUT,
        StatusKind::Maintenance,
        &InstallError::BinaryTimeout {
            path: p().join("releases/7.14.3/concourse/bin/concourse"),
            secs: 10,
        }
        .status_message(),
    );
    is(
        INSTALLED_DOES_NOT_VERIFY,
        b,
        &InstallError::Unverified {
            version: "7.14.3".into(),
            detail: "concourse --version printed \"x\", expected 7.14.3".into(),
        }
        .status_message(),
    );
}
