//! Trust in the release before anything from it runs (issue 12 item 2, issue 11 point 4):
//! a release that failed verification is never used, a binary changed on the volume
//! after verification is never started, and a non-leader holds a release another unit
//! installed to the digests the leader publishes.

use super::*;

/// A release tarball whose `concourse --version` prints `printed`.
fn tarball_printing(dir: &Path, version: &str, printed: &str) -> PathBuf {
    let path = release_tarball(dir, version);
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let script =
        format!("#!/bin/sh\ncase \"$1\" in --version) echo {printed} ;; *) exit 0 ;; esac\n");
    for (name, mode, body) in [
        ("concourse/", 0o755, &b""[..]),
        ("concourse/bin/", 0o755, b""),
        ("concourse/bin/concourse", 0o755, script.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        tar.append_data(&mut h, name, body).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

fn pointer_target(u: &Unit) -> Option<PathBuf> {
    std::fs::read_link(u.fake.paths.local("/var/lib/concourse-ci/current")).ok()
}

#[test]
fn a_release_that_failed_verification_is_never_used_by_a_later_hook() {
    let u = Unit::new(0, true);
    let bad = tarball_printing(u.tarballs.path(), V1, "not-a-version");
    u.model
        .state_mut()
        .resources
        .insert("concourse-release".into(), bad);
    u.model.set_config(&[("mode", json!("all"))]);
    u.deploy();
    u.add_postgresql("db-pw");
    for h in ["update-status", "config-changed", "update-status"] {
        u.ok(h);
        let (kind, message) = u.status();
        assert_eq!(kind, "blocked", "{h}: {message}");
        assert!(
            message.starts_with(&format!("v{V1} was installed but does not verify: ")),
            "{h}: {message}"
        );
        assert_eq!(pointer_target(&u), None, "{h}: the unit points at it");
        assert!(!u.active("concourse-server") && !u.active("concourse-worker"));
    }
    assert_root_owned(&u);
}

#[test]
fn a_binary_changed_on_the_volume_after_verification_is_never_started() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    assert_eq!(u.status().0, "active");
    let bin = u
        .volume
        .path()
        .join(format!("releases/{V1}/concourse/bin/concourse"));
    let mut text = std::fs::read_to_string(&bin).unwrap();
    text.push_str("# planted\n");
    std::fs::write(&bin, text).unwrap();
    let mark = u.mark();
    u.model.set_config(&[("log-level", json!("debug"))]);
    u.ok("config-changed");
    assert!(
        u.touched(mark, "concourse-server").is_empty()
            && u.touched(mark, "concourse-worker").is_empty(),
        "restarted with a changed binary: {:?}",
        u.journal_since(mark)
    );
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with(&format!(
            "v{V1} on the volume changed after it was verified (concourse/bin/concourse has changed); remove "
        )),
        "{message}"
    );
    assert_root_owned(&u);
}

/// The digests the leader would publish for `version` on `u`'s volume (from MANIFEST).
fn leader_digests_json(u: &Unit, version: &str) -> String {
    u.leader_digests_json(&[version])
}

#[test]
fn the_leader_publishes_the_digests_of_its_releases() {
    let u = Unit::deployed("all");
    let published: serde_json::Value =
        serde_json::from_str(&u.app_bag()["release-digests"]).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&leader_digests_json(&u, V1)).unwrap();
    assert_eq!(published, expected);
    assert!(published[V1]["files"]["concourse/bin/concourse"].is_string());
}

#[test]
fn a_non_leader_runs_a_release_another_unit_installed_only_with_the_leaders_digests() {
    let u = Unit::new(1, false);
    u.model.set_config(&[("mode", json!("all"))]);
    u.share_web_keys();
    u.publish(V1); // by concourse-ci/9, on this unit's volume
    u.deploy();
    assert_eq!(
        u.status(),
        (
            "waiting".into(),
            format!("Waiting for the leader to record the digests of v{V1}")
        )
    );
    assert_eq!(pointer_target(&u), None);
    assert!(
        !u.exists(WORKER_UNIT_FILE),
        "nothing set up from an untrusted release"
    );
    // The leader's digests of another build of the binary: refused.
    let wrong = leader_digests_json(&u, V1).replacen(
        "\"concourse/bin/concourse\":\"",
        "\"concourse/bin/concourse\":\"0",
        1,
    );
    u.model
        .set_bag(u.peers, APP, &[("release-digests", &wrong)]);
    u.relation_ok(u.peers, "changed", Some(APP));
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked", "{message}");
    assert!(
        message.contains("concourse/bin/concourse has changed"),
        "{message}"
    );
    assert_eq!(pointer_target(&u), None);
    // The right ones: it runs.
    u.model.set_bag(
        u.peers,
        APP,
        &[("release-digests", &leader_digests_json(&u, V1))],
    );
    u.relation_ok(u.peers, "changed", Some(APP));
    assert!(pointer_target(&u).is_some(), "{:?}", u.status());
    assert!(u.exists(WORKER_UNIT_FILE));
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    crate::installer::manifest::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `release-sha256` pins the tarball (the resource too); pins are all or nothing.
#[test]
fn release_sha256_pins_are_required_to_match() {
    let u = Unit::new(0, true);
    let tarball = u.model.state().resources["concourse-release"].clone();
    let good = sha256_of(&tarball);
    let wrong = "0".repeat(64);
    u.model.set_config(&[
        ("mode", json!("all")),
        ("release-sha256", json!(format!("{V1}={wrong}"))),
    ]);
    u.deploy();
    let (kind, message) = u.status();
    assert_eq!(kind, "blocked");
    assert!(
        message.starts_with(&format!(
            "checksum mismatch for concourse-{V1}-linux-amd64.tgz (sha256 expected {wrong}, got {good})"
        )),
        "{message}"
    );
    assert_eq!(pointer_target(&u), None);
    u.model
        .set_config(&[("release-sha256", json!(format!("{V2}={good}")))]);
    u.ok("config-changed");
    assert_eq!(
        u.status(),
        (
            "blocked".into(),
            format!("release-sha256 pins no digest for v{V1}; add {V1}=<sha256> to release-sha256 (pins are all or nothing)")
        )
    );
    u.model
        .set_config(&[("release-sha256", json!(format!("{V2}={wrong},{V1}={good}")))]);
    u.ok("config-changed");
    assert!(pointer_target(&u).is_some(), "{:?}", u.status());
}

/// A plain http release-url without a pin is noted on the active status.
#[test]
fn a_plain_http_release_url_is_noted_on_the_active_status() {
    let server = release_fixtures::ReleaseServer::start().unwrap();
    let dir = tmp();
    let cache = release_fixtures::TarballCache::new(dir.path()).unwrap();
    let t = cache
        .get(&release_fixtures::ReleaseSpec::new(
            V1,
            1 << 20,
            release_fixtures::Variant::Normal,
        ))
        .unwrap();
    server.register(t.clone());
    let u = Unit::new(0, true);
    u.model.state_mut().resources.clear();
    u.model.set_config(&[
        ("mode", json!("all")),
        ("release-url", json!(server.release_url_template())),
    ]);
    u.deploy();
    u.add_postgresql("db-pw");
    let note = crate::charm::status::messages::RELEASE_URL_PLAIN_HTTP.text;
    let (kind, message) = u.status();
    assert_eq!(kind, "active", "{message}");
    assert!(message.ends_with(&format!("; {note}")), "{message}");
    // Pinned: no note.
    u.model
        .set_config(&[("release-sha256", json!(format!("{V1}={}", t.sha256_hex)))]);
    u.ok("config-changed");
    assert!(!u.status().1.contains(note), "{:?}", u.status());
}

/// The restart-services action started the services from a release nobody checked.
#[test]
fn restart_services_does_not_run_a_changed_binary() {
    let u = Unit::deployed("all");
    u.add_postgresql("db-pw");
    let bin = u
        .volume
        .path()
        .join(format!("releases/{V1}/concourse/bin/concourse"));
    std::fs::write(&bin, "#!/bin/sh\necho planted\n").unwrap();
    let mark = u.mark();
    let run = u.action("restart-services", json!({}));
    run.result.unwrap();
    let failed = run.action.failed.clone().unwrap_or_default();
    assert!(
        failed.starts_with("not restarting: ")
            && failed.contains("concourse/bin/concourse has changed"),
        "{failed:?}"
    );
    assert!(
        u.touched(mark, "concourse-server").is_empty()
            && u.touched(mark, "concourse-worker").is_empty(),
        "{:?}",
        u.journal_since(mark)
    );
}
