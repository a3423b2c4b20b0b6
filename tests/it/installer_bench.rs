//! Benchmark (issue 4): fetch + verify + unpack of a 512 MiB release tarball from a local
//! server with `ensure_release`, next to `curl -s URL | tee >(sha1sum) | tar -xz` from
//! the same server in the same run; prints wall times, the ratio and the install's peak
//! RSS (wait4 rusage of the child process that runs it).
//!
//! Run: `cargo test --release --test it installer_bench -- --ignored --nocapture`
//! (`BENCH_MIB=<n>` changes the size; `BENCH_ROUNDS=<n>` the rounds, default 3;
//! `BENCH_BREAKDOWN=1` also times each stage of the baseline pipeline alone).

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use concourse_ci::installer::{ensure_release, InstallOptions, Outcome, Source};
use concourse_ci::storage_coordinator::Volume;
use support::{ReleaseSpec, TarballCache, Variant};

const HELPER_ENV: &str = "CONCOURSE_BENCH_HELPER";

/// Child side: installs `version` from `url` into the volume given as `root|version|url`.
#[test]
#[allow(clippy::disallowed_methods)] // test harness only: the spec comes from the parent test
fn bench_helper() {
    let Ok(spec) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, '|');
    let (root, version, url) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let o = InstallOptions::new("concourse-ci/0");
    let out = ensure_release(
        &Volume::new(root),
        version,
        &Source::Url(url.to_string()),
        &o,
        &mut |_| {},
    );
    match out {
        Ok(Outcome::Installed(_)) => std::process::exit(0),
        other => {
            eprintln!("bench install failed: {other:?}");
            std::process::exit(1)
        }
    }
}

/// Runs `cmd`, returns (wall time, peak RSS in KiB of the child) via wait4.
fn run_measured(cmd: &mut Command) -> (Duration, u64) {
    let t = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as nix::libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { nix::libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    assert_eq!(rc, pid, "wait4 failed");
    assert!(
        nix::libc::WIFEXITED(status) && nix::libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: status {status}"
    );
    std::mem::forget(child);
    (wall, ru.ru_maxrss as u64)
}

fn sync_disks() {
    Command::new("sync").status().unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: cargo test --release --test it installer_bench -- --ignored --nocapture"]
#[allow(clippy::disallowed_methods)] // benchmark knobs from the environment, test only
fn bench_install() {
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Work next to the build (a disk filesystem), not on a tmpfs /tmp.
    let base: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join("bench-install");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let generated = TarballCache::new(base.join("cache"))
        .unwrap()
        .get_timed(&ReleaseSpec::new("7.14.3", mib << 20, Variant::Normal))
        .unwrap();
    let tb = generated.tarball;
    println!(
        "generated {} ({} bytes) in {:.1}s",
        tb.file_name,
        tb.size,
        generated.elapsed.as_secs_f64()
    );
    let server = support::server();
    server.register(tb.clone());
    let url = server.tarball_url("7.14.3");
    let exe = std::env::current_exe().unwrap();

    let mut base_times = Vec::new();
    let mut ours_times = Vec::new();
    let mut peak_rss = 0u64;
    for round in 0..rounds {
        // Baseline: curl | tee >(sha1sum) | tar -xz, waiting for sha1sum too.
        let out = base.join("baseline");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        sync_disks();
        let script = r#"set -e; curl -sf "$URL" | tee >(sha1sum > "$OUT/../baseline.sha1") | tar -xz -C "$OUT"; wait $!"#;
        let (bt, _) = run_measured(
            Command::new("bash")
                .args(["-c", script])
                .env("URL", &url)
                .env("OUT", &out),
        );
        let sum = fs::read_to_string(base.join("baseline.sha1")).unwrap();
        assert!(sum.starts_with(&tb.sha1_hex), "baseline sha1 {sum}");
        base_times.push(bt);

        // Ours, in a child process (so its RSS is measured alone).
        let vol = base.join("volume");
        let _ = fs::remove_dir_all(&vol);
        fs::create_dir_all(&vol).unwrap();
        sync_disks();
        let (ot, rss) = run_measured(
            Command::new(&exe)
                .args([
                    "--exact",
                    "installer_bench::bench_helper",
                    "--test-threads=1",
                ])
                .env(HELPER_ENV, format!("{}|7.14.3|{}", vol.display(), url))
                .stdout(std::process::Stdio::null()),
        );
        assert!(Path::new(&vol).join("releases/7.14.3/MANIFEST").exists());
        ours_times.push(ot);
        peak_rss = peak_rss.max(rss);
        println!(
            "round {}: baseline {:.2}s, ensure_release {:.2}s (ratio {:.2}), peak RSS {} KiB",
            round + 1,
            bt.as_secs_f64(),
            ot.as_secs_f64(),
            ot.as_secs_f64() / bt.as_secs_f64(),
            rss
        );
    }
    if std::env::var("BENCH_BREAKDOWN").is_ok() {
        // What bounds the baseline: each stage of the pipeline alone.
        let out = base.join("baseline");
        for (name, script) in [
            ("curl > /dev/null", r#"curl -sf "$URL" > /dev/null"#),
            ("curl | sha1sum", r#"curl -sf "$URL" | sha1sum > /dev/null"#),
            (
                "curl | tar -xz",
                r#"rm -rf "$OUT" && mkdir "$OUT" && curl -sf "$URL" | tar -xz -C "$OUT""#,
            ),
        ] {
            sync_disks();
            let (t, _) = run_measured(
                Command::new("bash")
                    .args(["-c", script])
                    .env("URL", &url)
                    .env("OUT", &out),
            );
            println!("  stage {name}: {:.2}s", t.as_secs_f64());
        }
    }
    let (b, o) = (median(base_times), median(ours_times));
    let mb = tb.size as f64 / (1 << 20) as f64;
    println!(
        "median: baseline {:.2}s ({:.0} MiB/s), ensure_release {:.2}s ({:.0} MiB/s, fsynced), ratio {:.2} (target <= 1.20); peak RSS {:.1} MiB (target < 64)",
        b.as_secs_f64(),
        mb / b.as_secs_f64(),
        o.as_secs_f64(),
        mb / o.as_secs_f64(),
        o.as_secs_f64() / b.as_secs_f64(),
        peak_rss as f64 / 1024.0
    );
    let _ = fs::remove_dir_all(&base);
}
