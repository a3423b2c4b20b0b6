//! The generated systemd units pass `systemd-analyze verify`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use concourse_ci::config::CharmConfig;
use concourse_ci::service::UnitSpec;
use concourse_ci::{web, worker};

fn config(port: i64) -> CharmConfig {
    let mut m = serde_json::Map::new();
    m.insert("web-port".into(), port.into());
    CharmConfig::from_map(&m).unwrap()
}

/// Writes the unit (with paths rebased into `dir`) and runs systemd-analyze verify on it.
fn verify(dir: &Path, spec: &UnitSpec) -> (bool, String) {
    let current = dir.join("current");
    let bin = current.join("bin/concourse");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = spec.clone();
    spec.exec_start = spec.exec_start.replace(
        "/var/lib/concourse-ci/current",
        &current.display().to_string(),
    );
    // The concourse user does not exist on the test machine.
    spec.user = "root".into();
    spec.group = "root".into();
    spec.working_dir = dir.to_path_buf();
    spec.env_files = vec![dir.join("env")];
    std::fs::write(dir.join("env"), "A=1\n").unwrap();
    let path = dir.join(spec.file_name());
    std::fs::write(&path, spec.render()).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze is installed by `cargo xtask test`");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    // Only findings about our own unit count (the host's other units may be noisy).
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&spec.file_name()))
        .collect();
    (out.status.success() && ours.is_empty(), ours.join("\n"))
}

#[test]
fn web_and_worker_units_verify() {
    let cur = Path::new("/var/lib/concourse-ci/current");
    for spec in [
        web::unit(&config(8080), cur),
        web::unit(&config(443), cur),
        worker::unit(&config(8080), cur),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (ok, findings) = verify(dir.path(), &spec);
        assert!(
            ok,
            "{} failed verification:\n{findings}\n{}",
            spec.file_name(),
            spec.render()
        );
    }
}

#[test]
fn verify_catches_a_broken_unit() {
    let cur = Path::new("/var/lib/concourse-ci/current");
    let mut spec = worker::unit(&config(8080), cur);
    spec.kill_signal = Some("SIGNOPE".into());
    let dir = tempfile::tempdir().unwrap();
    let (ok, _) = verify(dir.path(), &spec);
    assert!(!ok, "an invalid KillSignal must fail verification");
}
