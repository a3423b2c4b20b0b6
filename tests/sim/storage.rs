//! Issue 4's acceptance ("Shared storage, user story 1 + 3") for the real charm: one
//! download per volume, every unit runs from the volume, and every fault gives a clear
//! status, publishes nothing, keeps the running version and recovers by itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use juju_sim::{CharmSource, DeployOptions, Model, Volume};
use libtest_mimic::{Failed, Trial};
use release_fixtures::server::{Fault, FaultRule, ReleaseServer, RequestKind, Target};
use release_fixtures::tarball::Variant;

use crate::common::*;

const APP: &str = "concourse-ci";

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "storage::shared_volume_downloads_once_and_later_units_reuse",
            shared_volume_downloads_once,
        ),
        trial(
            "storage::eight_units_at_once_download_once_5_rounds",
            eight_units_download_once,
        ),
        trial(
            "storage::per_unit_volumes_download_once_each",
            per_unit_volumes,
        ),
        trial(
            "storage::fake_shared_volume_blocks_naming_the_peer",
            fake_shared_volume,
        ),
        trial(
            "storage::sigkill_mid_download_resumes_with_range",
            sigkill_resumes,
        ),
        trial(
            "storage::waiter_takes_over_from_a_killed_downloader",
            waiter_takes_over,
        ),
        trial("storage::upgrade_fault::wrong_sha1", || {
            fault_on_upgrade(&WRONG_SHA1, 1)
        }),
        trial("storage::upgrade_fault::not_found", || {
            fault_on_upgrade(&NOT_FOUND, 1)
        }),
        trial("storage::upgrade_fault::server_error", || {
            fault_on_upgrade(&SERVER_ERROR, 1)
        }),
        trial("storage::upgrade_fault::connection_cut", || {
            fault_on_upgrade(&CONNECTION_CUT, 1)
        }),
        trial("storage::upgrade_fault::throttled", || {
            fault_on_upgrade(&THROTTLED, 1)
        }),
        trial("storage::upgrade_fault::dotdot_entry", || {
            fault_on_upgrade(&DOTDOT_ENTRY, 1)
        }),
        trial("storage::upgrade_fault::wrong_sha1_3_units", || {
            fault_on_upgrade(&WRONG_SHA1, 3)
        }),
        trial("storage::upgrade_fault::volume_full", || {
            fault_on_upgrade(&VOLUME_FULL, 1)
        }),
        trial(
            "storage::wrong_sha1_for_60s_3_units_downloads_at_most_3_times",
            wrong_sha1_for_a_minute,
        ),
        trial("storage::volume_missing_blocks", volume_missing),
        trial(
            "storage::resource_installs_without_network",
            resource_without_network,
        ),
        trial(
            "storage::volume_read_only_blocks_then_recovers",
            volume_read_only,
        ),
    ]
}

/// A small deterministic PRNG (xorshift64*), seeded from the clock or `STORAGE_SEED`.
struct Rng(u64);

impl Rng {
    #[allow(clippy::disallowed_methods)] // test knob, not the charm's environment
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("STORAGE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("storage: random seed {seed} (rerun with STORAGE_SEED={seed})");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn shared(server: &ReleaseServer, version: &str) -> BTreeMap<String, String> {
    config(
        server,
        &[("version", version), ("shared-storage", "shared")],
    )
}

/// GET requests for a version's tarball.
fn tarball_gets(server: &ReleaseServer, version: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.kind == RequestKind::Tarball(version.to_string()))
        .count()
}

/// The unit whose juju-log says it downloaded `version`.
fn downloaders(m: &Model, units: &[String], version: &str) -> Vec<String> {
    let needle = format!(" downloaded v{version} from ");
    units
        .iter()
        .filter(|u| log_messages(m, u).iter().any(|l| l.contains(&needle)))
        .cloned()
        .collect()
}

/// Every unit runs `version` from the volume: pointer, services' ExecStart and the
/// binary each running service was started from.
fn runs_from_volume(m: &Model, u: &str, version: &str) -> Result<(), String> {
    let want = Path::new(VOLUME_LOCATION)
        .join("releases")
        .join(version)
        .join("concourse");
    match pointer_target(m, u) {
        Some(t) if t == want => {}
        other => return Err(format!("{u}: pointer {other:?}, want {}", want.display())),
    }
    let services = running_services(m, u);
    if services.is_empty() {
        return Err(format!("{u}: no service runs"));
    }
    for (sub, pid, exe) in &services {
        let unit_file = format!(
            "/etc/systemd/system/concourse-{}.service",
            sub.replace("web", "server")
        );
        let text = m.read_to_string(u, &unit_file).unwrap_or_default();
        if !text.contains(&format!("ExecStart={POINTER}/bin/concourse {sub}")) {
            return Err(format!("{u}: {unit_file} does not start {POINTER}: {text}"));
        }
        if !exe.starts_with(&release_dir_in_unit(version)) {
            return Err(format!(
                "{u}: {sub} (pid {pid}) runs {exe}, not the volume's v{version}"
            ));
        }
    }
    Ok(())
}

/// Issue 4: 3 units on one shared volume download the pinned release once and run it
/// from the volume (no local copy, disk use about one unpacked release); 2 units added
/// later download nothing; units waiting for the download say whom they wait for; the
/// logs name who downloaded and who reused.
fn shared_volume_downloads_once() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    // Slow enough (about 8 s) that the units installing together wait for the first and,
    // at their second look (after 5 s), see how far it got.
    server.add_fault(FaultRule::once(
        Target::Tarball(V1.into()),
        Fault::Throttle(256 << 10),
    ));
    let m = model()?;
    let mut units = deploy(&m, APP, 3, shared(&server, V1), Volume::Shared)?;
    relate_postgresql(&m, APP)?;
    settle(&m)?;
    run_until(
        &m,
        "every unit active and running v1 from the volume",
        |m| {
            units
                .iter()
                .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
        },
    )?;
    for u in &units {
        runs_from_volume(&m, u, V1).map_err(fail)?;
    }
    ensure(server.count_complete_downloads(V1) == 1, || {
        format!(
            "complete downloads: {}",
            server.count_complete_downloads(V1)
        )
    })?;
    ensure(tarball_gets(&server, V1) == 1, || {
        format!("tarball requests: {:?}", server.requests())
    })?;

    // Disk use: one unpacked release (plus small markers), nothing kept locally.
    let t = tarball(V1, Variant::Normal)?;
    let vol = m
        .storage_dir(&units[0])
        .ok_or_else(|| fail("no storage dir"))?;
    let (apparent, allocated) = disk_use(&vol);
    let (rel_apparent, rel_allocated) = disk_use(&vol.join("releases").join(V1));
    eprintln!(
        "volume: {apparent} B in files, {allocated} B allocated; release: {rel_apparent} B / {rel_allocated} B; tarball {} B, unpacked {} B",
        t.size, t.unpacked_size
    );
    ensure(apparent as f64 <= 1.05 * t.unpacked_size as f64, || {
        format!(
            "volume holds {apparent} B of files, more than 1.05 x the unpacked release ({} B)",
            t.unpacked_size
        )
    })?;
    ensure(allocated as f64 <= 1.05 * rel_allocated as f64, || {
        format!("volume allocates {allocated} B, release alone {rel_allocated} B")
    })?;
    for u in &units {
        let copies = local_release_copies(&m, u);
        ensure(copies.is_empty(), || {
            format!("{u} holds a local copy: {copies:?}")
        })?;
    }
    // The volume records the version the application runs (docs/architecture.md#volume-layout).
    let installed = std::fs::read_to_string(vol.join(".installed_version")).unwrap_or_default();
    ensure(installed.trim() == V1, || {
        format!(".installed_version holds {installed:?}, want {V1}")
    })?;

    // Who downloaded, who reused, who waited.
    let by = downloaders(&m, &units, V1);
    ensure(by.len() == 1, || {
        format!("downloaders: {by:?}\n{}", m.dump())
    })?;
    let by = &by[0];
    let downloading = format!("maintenance: Downloading v{V1} (");
    ensure(
        status_lines(&m, by)
            .iter()
            .any(|s| s.starts_with(&downloading)),
        || {
            format!(
                "{by} never showed {downloading}…: {:?}",
                status_lines(&m, by)
            )
        },
    )?;
    let mut waited = Vec::new();
    for u in units.iter().filter(|u| *u != by) {
        let reuse = format!("{u} reuses v{V1} downloaded by {by}");
        ensure(
            log_messages(&m, u).iter().any(|l| l.contains(&reuse)),
            || format!("{u} never logged {reuse:?}: {:?}", log_messages(&m, u)),
        )?;
        let want = format!("waiting: Waiting for {by} to download v{V1} (");
        if status_lines(&m, u)
            .iter()
            .any(|s| s.starts_with(&want) && s.ends_with("%)"))
        {
            waited.push(u.clone());
        }
    }
    ensure(!waited.is_empty(), || {
        format!(
            "no unit showed 'Waiting for {by} to download v{V1} (N%)': {:?}",
            units
                .iter()
                .map(|u| status_lines(&m, u))
                .collect::<Vec<_>>()
        )
    })?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;

    // Two units added later: no request at all, both active from the volume.
    let before = server.requests().len();
    for _ in 0..2 {
        units.push(
            m.add_unit(APP)
                .map_err(|e| fail(format!("add-unit: {e}")))?,
        );
    }
    settle(&m)?;
    run_until(&m, "the added units active and running v1", |m| {
        units[3..]
            .iter()
            .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
    })?;
    let after = server.requests();
    ensure(after.len() == before, || {
        format!("added units made requests: {:?}", &after[before..])
    })?;
    ensure(server.count_complete_downloads(V1) == 1, || {
        "a second complete download".to_string()
    })?;
    for u in &units[3..] {
        let copies = local_release_copies(&m, u);
        ensure(copies.is_empty(), || {
            format!("{u} holds a local copy: {copies:?}")
        })?;
        let reuse = format!("{u} reuses v{V1} downloaded by {by}");
        ensure(
            log_messages(&m, u).iter().any(|l| l.contains(&reuse)),
            || format!("{u} never logged {reuse:?}: {:?}", log_messages(&m, u)),
        )?;
    }
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;
    never_blocked(&m, &units)?;
    Ok(())
}

/// Issue 4: 8 units deployed together (in 5 rounds with random timing: how many start at
/// once, when the rest join, how slow the server answers, the update-status period)
/// download the release exactly once per volume.
fn eight_units_download_once() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let mut rng = Rng::from_env_or_clock();
    let mut contended = 0;
    let mut watched = 0;
    for round in 1..=5 {
        server.clear_faults();
        server.clear_log();
        let delay = Duration::from_millis(rng.range(0, 1500));
        let rate = rng.range(1 << 20, 16 << 20);
        let interval = Duration::from_millis(rng.range(1000, 4000));
        let at_once = rng.range(2, 8) as usize;
        server.set_fault(Target::Tarball(V1.into()), Fault::Delay(delay));
        server.set_fault(Target::Tarball(V1.into()), Fault::Throttle(rate));
        eprintln!(
            "round {round}: {at_once} units at once, the rest within 1.5 s; tarball after {delay:?} at {} KiB/s; update-status every {interval:?}",
            rate >> 10
        );
        let m = model_with(juju_sim::ModelOptions {
            update_status_interval: Some(interval),
            ..juju_sim::ModelOptions::default()
        })?;
        let mut units = deploy(&m, APP, at_once, shared(&server, V1), Volume::Shared)?;
        let vol = m
            .storage_dir(&units[0])
            .ok_or_else(|| fail("no storage dir"))?;
        let watcher = ReleaseWatcher::start(&vol);
        while units.len() < 8 {
            std::thread::sleep(Duration::from_millis(rng.range(0, 1500 / 8)));
            units.push(
                m.add_unit(APP)
                    .map_err(|e| fail(format!("add-unit: {e}")))?,
            );
        }
        run_until(&m, "all 8 units pointing at v1", |m| {
            units
                .iter()
                .all(|u| pointer_version(m, u).as_deref() == Some(V1))
        })?;
        watched += watcher.finish(false)?.saw_staging;
        let complete = server.count_complete_downloads(V1);
        let gets = tarball_gets(&server, V1);
        ensure(complete == 1 && gets == 1, || {
            format!(
                "round {round}: {complete} complete downloads, {gets} tarball requests: {:?}",
                server.requests()
            )
        })?;
        let by = downloaders(&m, &units, V1);
        ensure(by.len() == 1, || {
            format!("round {round}: downloaders {by:?}")
        })?;
        ensure(
            published_versions(&m, &units[0]) == vec![V1.to_string()],
            || {
                format!(
                    "round {round}: published {:?}",
                    published_versions(&m, &units[0])
                )
            },
        )?;
        no_failed_hooks(&m, &units)?;
        no_duplicate_tool_calls(&m, &units)?;
        never_blocked(&m, &units)?;
        let waited = units
            .iter()
            .filter(|u| {
                status_lines(&m, u)
                    .iter()
                    .any(|s| s.starts_with("waiting: Waiting for concourse-ci/"))
            })
            .count();
        eprintln!("round {round}: {waited} units waited for {}", by[0]);
        contended += waited;
    }
    // The rounds must have raced for the lock, and the watcher seen an unpack, or they
    // proved nothing.
    ensure(watched > 0, || {
        "the watcher never saw a release being unpacked".into()
    })?;
    ensure(contended > 0, || "no unit ever waited for the lock".into())
}

/// Issue 4: `shared-storage=none` with a volume per unit: each unit downloads its own
/// copy (3 downloads) and runs it.
fn per_unit_volumes() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(
        &m,
        APP,
        3,
        config(&server, &[("version", V1)]),
        Volume::PerUnit,
    )?;
    relate_postgresql(&m, APP)?;
    settle(&m)?;
    run_until(
        &m,
        "every unit active and running v1 from its volume",
        |m| {
            units
                .iter()
                .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
        },
    )?;
    ensure(server.count_complete_downloads(V1) == 3, || {
        format!("complete downloads: {:?}", server.requests())
    })?;
    let dirs: std::collections::BTreeSet<_> =
        units.iter().filter_map(|u| m.storage_dir(u)).collect();
    ensure(dirs.len() == 3, || format!("volumes: {dirs:?}"))?;
    for u in &units {
        ensure(published_versions(&m, u) == vec![V1.to_string()], || {
            format!("{u}: published {:?}", published_versions(&m, u))
        })?;
    }
    let by = downloaders(&m, &units, V1);
    ensure(by.len() == 3, || format!("downloaders: {by:?}"))?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;
    never_blocked(&m, &units)
}

/// Issue 4: `shared-storage=shared` on volumes that are not shared: every unit is blocked
/// with a message naming the peers it does not share with, by the second update-status
/// after their nonce; nothing hangs; `shared-storage=none` clears it.
fn fake_shared_volume() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let interval = Duration::from_secs(3);
    let m = model_with(juju_sim::ModelOptions {
        update_status_interval: Some(interval),
        ..juju_sim::ModelOptions::default()
    })?;
    let units = deploy(&m, APP, 3, shared(&server, V1), Volume::FakeShared)?;
    let names_all_peers = |m: &Model, u: &String| {
        let st = m.unit_status(u);
        st.status == "blocked"
            && st.message.contains("is not shared with")
            && units
                .iter()
                .filter(|p| *p != u)
                .all(|p| st.message.contains(p.as_str()))
    };
    run_until(&m, "every unit blocked naming its peers", |m| {
        units.iter().all(|u| names_all_peers(m, u))
    })?;
    settle(&m)?;
    let peers = m
        .relation_id(&format!("{APP}:peers"))
        .ok_or_else(|| fail("no peer relation"))?;
    let history = m.bag_history(peers);
    let nonce_at = |p: &str| {
        history
            .iter()
            .find(|c| c.owner == p && c.data.contains_key("volume-nonce"))
            .map(|c| c.at)
    };
    for u in &units {
        let st = m.unit_status(u);
        ensure(
            st.message.starts_with(&format!(
                "shared-storage=shared but {VOLUME_LOCATION} is not shared with "
            )) && st.message.contains("shared-storage=none"),
            || format!("{u}: {st:?}"),
        )?;
        for p in units.iter().filter(|p| *p != u) {
            let published = nonce_at(p).ok_or_else(|| fail(format!("{p} published no nonce")))?;
            let blocked = m
                .status_history(u)
                .into_iter()
                .find(|s| s.status == "blocked" && s.message.contains(p.as_str()))
                .map(|s| s.at)
                .ok_or_else(|| fail(format!("{u} never named {p}")))?;
            // by the end of the second update-status after the nonce (counted in hooks,
            // not seconds: a loaded machine stretches every hook, not the unit's logic)
            let second = m
                .hooks(u)
                .into_iter()
                .filter(|h| h.name == "update-status" && h.started >= published)
                .nth(1)
                .map(|h| h.started + h.duration);
            ensure(second.is_none_or(|end| blocked <= end), || {
                format!(
                    "{u} named {p} at {blocked:?}, after the second update-status since its \
                     nonce was published at {published:?} (it ended at {second:?})"
                )
            })?;
        }
        let long: Vec<_> = m
            .hooks(u)
            .into_iter()
            .filter(|h| h.duration > Duration::from_secs(20))
            .map(|h| (h.name, h.duration))
            .collect();
        ensure(long.is_empty(), || format!("{u}: slow hooks {long:?}"))?;
    }
    no_failed_hooks(&m, &units)?;
    // Telling the charm the truth clears the status.
    m.config(APP, [("shared-storage", "none")])
        .map_err(|e| fail(format!("config: {e}")))?;
    run_until(&m, "no unit blocked with shared-storage=none", |m| {
        units.iter().all(|u| m.unit_status(u).status != "blocked")
    })?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)
}

/// Watches `<volume>/releases` from a thread until stopped: every entry that is not a
/// dot-entry (staging, trash, temp) must be a complete release (MANIFEST and the binary).
struct ReleaseWatcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<WatchReport>,
}

#[derive(Debug, Default)]
struct WatchReport {
    polls: u64,
    /// Polls that saw a staging dir (the watcher ran while a release was being unpacked).
    saw_staging: u64,
    incomplete: std::collections::BTreeSet<String>,
}

impl ReleaseWatcher {
    fn start(volume: &Path) -> ReleaseWatcher {
        let dir = volume.join("releases");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut r = WatchReport::default();
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                r.polls += 1;
                let mut staging = false;
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".staging-") {
                        staging = true;
                    }
                    if name.starts_with('.') {
                        continue;
                    }
                    let p = e.path();
                    if !p.join("MANIFEST").is_file() || !p.join("concourse/bin/concourse").is_file()
                    {
                        r.incomplete.insert(name);
                    }
                }
                r.saw_staging += u64::from(staging);
                std::thread::sleep(Duration::from_millis(5));
            }
            r
        });
        ReleaseWatcher { stop, handle }
    }

    /// Stops watching; fails on any incomplete release seen, and (if `require_staging`)
    /// when the watcher never saw an unpack in progress (it proved nothing then).
    fn finish(self, require_staging: bool) -> Result<WatchReport, Failed> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let r = self
            .handle
            .join()
            .map_err(|_| fail("the release watcher panicked"))?;
        eprintln!(
            "release watcher: {} polls, {} saw a staging dir, incomplete: {:?}",
            r.polls, r.saw_staging, r.incomplete
        );
        ensure(r.incomplete.is_empty(), || {
            format!("incomplete releases were visible: {:?}", r.incomplete)
        })?;
        ensure(!require_staging || r.saw_staging > 0, || {
            "the watcher never saw a release being unpacked".into()
        })?;
        Ok(r)
    }
}

/// The charm with a `dispatch` that parks at a named crash checkpoint
/// (`concourse_ci::checkpoint`): a wrapper that sets `CONCOURSE_CI_CHECKPOINT` and execs
/// the real `dispatch` (the simulator gives hooks Juju's environment only). The
/// checkpoint fires once: later hooks, retried or on other units, run through.
struct ParkedCharm {
    /// Holds the wrapper, a copy of the real `dispatch` and the checkpoint markers. It
    /// lives in the model's run directory, the one host directory every unit sees at the
    /// same path (the target directory may be under a path that is private to each unit,
    /// such as /tmp when the repository is cloned there).
    dir: tempfile::TempDir,
    checkpoint: &'static str,
}

impl ParkedCharm {
    fn new(m: &Model, checkpoint: &'static str) -> Result<ParkedCharm, Failed> {
        let dir = tempfile::Builder::new()
            .prefix("checkpoints-")
            .tempdir_in(m.run_dir())
            .map_err(|e| fail(format!("checkpoint dir: {e}")))?;
        let real = dir.path().join("dispatch.real");
        std::fs::copy(dispatch(), &real).map_err(|e| fail(format!("copying dispatch: {e}")))?;
        let wrapper = dir.path().join("dispatch");
        let script = format!(
            "#!/bin/sh\nCONCOURSE_CI_CHECKPOINT='{checkpoint}@{}' exec '{}' \"$@\"\n",
            dir.path().display(),
            real.display()
        );
        std::fs::write(&wrapper, script)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            })
            .map_err(|e| fail(format!("dispatch wrapper: {e}")))?;
        Ok(ParkedCharm { dir, checkpoint })
    }

    fn deploy(
        &self,
        m: &Model,
        n: usize,
        config: BTreeMap<String, String>,
    ) -> Result<Vec<String>, Failed> {
        let source = CharmSource::dir(env!("CARGO_MANIFEST_DIR"), self.dir.path().join("dispatch"));
        let config = config
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let opts = DeployOptions {
            config,
            storage: Volume::Shared,
            ..DeployOptions::default()
        };
        m.deploy(source, APP, n, opts)
            .map_err(|e| fail(format!("deploy: {e}")))
    }

    /// Waits for the hook that parked at the checkpoint; returns its pid.
    fn parked_pid(&self, m: &Model) -> Result<i32, Failed> {
        let marker = self.dir.path().join(self.checkpoint);
        let pid = || -> Option<i32> {
            let s = std::fs::read_to_string(&marker).ok()?;
            s.ends_with('\n').then(|| s.trim().parse().ok())?
        };
        run_until(m, &format!("a hook parked at {}", self.checkpoint), |_| {
            pid().is_some()
        })?;
        pid().ok_or_else(|| fail("no parked pid"))
    }
}

/// SIGKILLs `unit`'s hook parked at `charm`'s checkpoint; returns the hook's name.
fn kill_parked(m: &Model, unit: &str, charm: &ParkedCharm) -> Result<String, Failed> {
    let pid = charm.parked_pid(m)?;
    let hook = m
        .running_hook(unit)
        .ok_or_else(|| fail(format!("{unit} runs no hook")))?;
    ensure(m.processes(unit).iter().any(|p| p.pid == pid), || {
        format!(
            "the parked pid {pid} is not {unit}'s: {:?}",
            m.processes(unit)
        )
    })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| fail(format!("kill: {e}")))?;
    eprintln!(
        "killed {unit}'s {} (pid {pid}) at {}",
        hook.name, charm.checkpoint
    );
    Ok(hook.name)
}

/// The unit named in the volume's progress marker (who holds the install lock).
fn marker_unit(vol: &Path) -> Option<String> {
    let b = std::fs::read(vol.join(".download_in_progress")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
    v.get("unit")?.as_str().map(str::to_string)
}

/// The resumed request: a 206 that started past 0 and delivered the tarball's end.
fn resumed_requests(server: &ReleaseServer, version: &str) -> Vec<(u16, u64, bool)> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.kind == RequestKind::Tarball(version.to_string()))
        .filter(|r| r.range.is_some())
        .map(|r| (r.status, r.range_start, r.reached_end))
        .collect()
}

/// Issue 4: the downloading hook is SIGKILLed; Juju retries it; the retry resumes the
/// kept partial with Range (206) and finishes; no incomplete release is ever visible.
/// The killed hook is the one failed hook (expected).
fn sigkill_resumes() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let t = tarball(V1, Variant::Normal)?;
    // The first request is slow, so the bytes in flight when the hook is killed stay few
    // (the resumed one runs at full speed); the kill itself waits for the checkpoint.
    server.add_fault(FaultRule::once(
        Target::Tarball(V1.into()),
        Fault::Throttle(256 << 10),
    ));
    let m = model()?;
    let charm = ParkedCharm::new(&m, "install.downloading")?;
    let units = charm.deploy(&m, 1, shared(&server, V1))?;
    let u = &units[0];
    let vol = m.storage_dir(u).ok_or_else(|| fail("no storage dir"))?;
    let watcher = ReleaseWatcher::start(&vol);
    let killed = kill_parked(&m, u, &charm)?;
    run_until(&m, "the unit running v1", |m| {
        pointer_version(m, u).as_deref() == Some(V1)
    })?;
    watcher.finish(true)?;
    let resumed = resumed_requests(&server, V1);
    ensure(
        resumed.len() == 1 && resumed[0].0 == 206 && resumed[0].1 >= 256 << 10 && resumed[0].2,
        || format!("resumed requests (status, start, reached end): {resumed:?}"),
    )?;
    ensure(server.count_complete_downloads(V1) == 1, || {
        format!("requests: {:?}", server.requests())
    })?;
    let served = server.bytes_served(V1);
    ensure(served < t.size + (512 << 10), || {
        format!(
            "{served} bytes served for a {} byte tarball: not resumed",
            t.size
        )
    })?;
    let failed: Vec<String> = m.failed_hooks(u).into_iter().map(|h| h.name).collect();
    ensure(failed == vec![killed.clone()], || {
        format!("failed hooks {failed:?}, killed {killed}")
    })?;
    let resumed_from = format!("resumed from {}", resumed[0].1);
    ensure(
        log_messages(&m, u)
            .iter()
            .any(|l| l.contains(&format!("{u} downloaded v{V1}")) && l.contains(&resumed_from)),
        || format!("no log of the resumed download: {:?}", log_messages(&m, u)),
    )?;
    ensure(published_versions(&m, u) == vec![V1.to_string()], || {
        format!("published {:?}", published_versions(&m, u))
    })?;
    let leftovers: Vec<_> = std::fs::read_dir(vol.join("downloads"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure(leftovers.is_empty(), || {
        format!("downloads/ keeps {leftovers:?}")
    })?;
    never_blocked(&m, &units)
}

/// Issue 4: the downloading unit's hook is killed and the unit does not come back (hooks
/// are not retried in this model); the unit waiting on the lock takes over, resumes the
/// partial with Range and finishes. Only the killed hook failed.
fn waiter_takes_over() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    server.add_fault(FaultRule::once(
        Target::Tarball(V1.into()),
        Fault::Throttle(256 << 10),
    ));
    let m = model_with(juju_sim::ModelOptions {
        update_status_interval: Some(Duration::from_secs(3)),
        auto_retry: false,
        ..juju_sim::ModelOptions::default()
    })?;
    let charm = ParkedCharm::new(&m, "install.downloading")?;
    let units = charm.deploy(&m, 2, shared(&server, V1))?;
    let vol = m
        .storage_dir(&units[0])
        .ok_or_else(|| fail("no storage dir"))?;
    let watcher = ReleaseWatcher::start(&vol);
    charm.parked_pid(&m)?;
    let holder = marker_unit(&vol).ok_or_else(|| fail("no progress marker"))?;
    let waiter = units
        .iter()
        .find(|u| **u != holder)
        .cloned()
        .ok_or_else(|| fail("no waiter"))?;
    let waiting = format!("waiting: Waiting for {holder} to download v{V1} (");
    run_until(&m, "the other unit waiting for the holder", |m| {
        status_lines(m, &waiter)
            .iter()
            .any(|s| s.starts_with(&waiting))
    })?;
    let killed = kill_parked(&m, &holder, &charm)?;
    run_until(&m, "the waiter running v1", |m| {
        pointer_version(m, &waiter).as_deref() == Some(V1)
    })?;
    watcher.finish(true)?;
    let resumed = resumed_requests(&server, V1);
    ensure(
        resumed.len() == 1 && resumed[0].0 == 206 && resumed[0].1 >= 256 << 10 && resumed[0].2,
        || format!("resumed requests (status, start, reached end): {resumed:?}"),
    )?;
    ensure(server.count_complete_downloads(V1) == 1, || {
        format!("requests: {:?}", server.requests())
    })?;
    ensure(
        log_messages(&m, &waiter).iter().any(|l| {
            l.contains(&format!("{waiter} downloaded v{V1}")) && l.contains("resumed from")
        }),
        || {
            format!(
                "{waiter} did not log the resumed download: {:?}",
                log_messages(&m, &waiter)
            )
        },
    )?;
    ensure(m.in_error(&holder), || format!("{holder} came back"))?;
    let failed: Vec<String> = m
        .failed_hooks(&holder)
        .into_iter()
        .map(|h| h.name)
        .collect();
    ensure(failed == vec![killed], || {
        format!("{holder} failed hooks {failed:?}")
    })?;
    no_failed_hooks(&m, std::slice::from_ref(&waiter))?;
    no_duplicate_tool_calls(&m, &units)?;
    never_blocked(&m, &units)
}

/// A release-server fault hit while upgrading a running unit from V1 to V2.
struct UpgradeFault {
    /// Installs the fault for V2.
    install: fn(&ReleaseServer) -> TestResult,
    /// The status the unit must show (kind, then fragments of the message).
    status: &'static str,
    message: &'static [&'static str],
    /// Transient: the charm fails the hook so Juju retries it (failed hooks expected).
    transient: bool,
    /// Leave the fault in place (it ends by itself, e.g. a slow download).
    keep: bool,
    storage: Volume,
    /// Removes the fault (default: clear the server's faults).
    clear: Option<fn(&Model, &str) -> TestResult>,
}

const WRONG_SHA1: UpgradeFault = UpgradeFault {
    install: |s| {
        s.set_fault(Target::Sha1(V2.into()), Fault::WrongSha1);
        Ok(())
    },
    status: "blocked",
    message: &[
        "checksum mismatch for concourse-8.0.0-linux-amd64.tgz (sha1 expected ",
        ", got ",
        "); check release-url",
    ],
    transient: false,
    keep: false,
    storage: Volume::Shared,
    clear: None,
};

const NOT_FOUND: UpgradeFault = UpgradeFault {
    install: |s| {
        s.set_fault(Target::Version(V2.into()), Fault::Status(404));
        Ok(())
    },
    status: "blocked",
    message: &["v8.0.0", "HTTP 404", "check version and release-url"],
    transient: false,
    keep: false,
    storage: Volume::Shared,
    clear: None,
};

const SERVER_ERROR: UpgradeFault = UpgradeFault {
    install: |s| {
        s.set_fault(Target::Tarball(V2.into()), Fault::Status(500));
        Ok(())
    },
    status: "maintenance",
    message: &["concourse-8.0.0-linux-amd64.tgz answered HTTP 500; will retry"],
    transient: true,
    keep: false,
    storage: Volume::Shared,
    clear: None,
};

const CONNECTION_CUT: UpgradeFault = UpgradeFault {
    install: |s| {
        s.set_fault(Target::Tarball(V2.into()), Fault::CutAfter(64 << 10));
        Ok(())
    },
    status: "maintenance",
    message: &["Download of v8.0.0 interrupted; resuming (retry 1 of 2)"],
    transient: true,
    keep: false,
    storage: Volume::Shared,
    clear: None,
};

const THROTTLED: UpgradeFault = UpgradeFault {
    install: |s| {
        s.add_fault(FaultRule::once(
            Target::Tarball(V2.into()),
            Fault::Throttle(512 << 10),
        ));
        Ok(())
    },
    status: "maintenance",
    message: &["Downloading v8.0.0 (", "%)"],
    transient: false,
    keep: true,
    storage: Volume::Shared,
    clear: None,
};

const DOTDOT_ENTRY: UpgradeFault = UpgradeFault {
    install: |s| {
        let bad = tarball(V2, Variant::DotDotEntry)?;
        s.set_fault(Target::Version(V2.into()), Fault::Substitute(bad));
        Ok(())
    },
    status: "blocked",
    message: &[
        "release tarball concourse-8.0.0-linux-amd64.tgz is unsafe: entry concourse/../../escape",
        "nothing was installed, check release-url",
    ],
    transient: false,
    keep: false,
    storage: Volume::Shared,
    clear: None,
};

/// The services each unit runs: (subcommand, pid).
type Services = BTreeMap<String, Vec<(String, u32)>>;

fn services_of(m: &Model, units: &[String]) -> Services {
    units
        .iter()
        .map(|u| {
            let s = running_services(m, u)
                .into_iter()
                .map(|(sub, pid, _)| (sub, pid))
                .collect();
            (u.clone(), s)
        })
        .collect()
}

/// `n` units running V1 on a shared volume (web with its database, workers), with the
/// services they run.
fn running_v1(
    server: &ReleaseServer,
    storage: Volume,
    n: usize,
) -> Result<(Model, Vec<String>, Services), Failed> {
    let m = model_with(juju_sim::ModelOptions {
        update_status_interval: Some(Duration::from_secs(2)),
        retry_backoff_max: Duration::from_secs(1),
        ..juju_sim::ModelOptions::default()
    })?;
    let units = deploy(&m, APP, n, shared(server, V1), storage)?;
    relate_postgresql(&m, APP)?;
    run_until(&m, "the units running v1", |m| {
        units
            .iter()
            .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
    })?;
    let services = services_of(&m, &units);
    Ok((m, units, services))
}

/// V1 still runs untouched everywhere (same service processes) and nothing else is
/// published.
fn still_on_v1(m: &Model, units: &[String], services: &Services) -> Result<(), String> {
    for u in units {
        if published_versions(m, u) != vec![V1.to_string()] {
            return Err(format!("published: {:?}", published_versions(m, u)));
        }
        runs_from_volume(m, u, V1)?;
    }
    let now = services_of(m, units);
    if &now != services {
        return Err(format!("services changed: {now:?}, were {services:?}"));
    }
    Ok(())
}

fn matches_status(line: &str, status: &str, fragments: &[&str]) -> bool {
    line.starts_with(&format!("{status}: ")) && fragments.iter().all(|f| line.contains(f))
}

/// Issue 4: a fault while upgrading V1 → V2 (via config) on `n` units gives the
/// documented status on the leader (who downloads), publishes nothing, keeps V1 running
/// on every unit, and the upgrade completes by itself once the fault is gone (next hook
/// retry or update-status; no `juju resolve`).
fn fault_on_upgrade(case: &UpgradeFault, n: usize) -> TestResult {
    let server = release_server(&[(V1, Variant::Normal), (V2, Variant::Normal)])?;
    let (m, units, services) = running_v1(&server, case.storage, n)?;
    let lead = m.leader(APP).ok_or_else(|| fail("no leader"))?;
    let vol = m.storage_dir(&lead).ok_or_else(|| fail("no storage dir"))?;
    let failed_before: usize = units.iter().map(|u| m.failed_hooks(u).len()).sum();
    (case.install)(&server)?;
    m.config(APP, [("version", V2)])
        .map_err(|e| fail(format!("config: {e}")))?;
    let seen = |m: &Model| {
        status_lines(m, &lead)
            .iter()
            .any(|l| matches_status(l, case.status, case.message))
    };
    run_until(&m, &format!("{}: {:?}", case.status, case.message), seen)?;
    still_on_v1(&m, &units, &services).map_err(fail)?;
    if !case.keep {
        // It stays so: the next hook (a retry, update-status) changes nothing.
        let hooks = m.hooks(&lead).len();
        run_until(&m, "one more hook", |m| m.hooks(&lead).len() > hooks)?;
        still_on_v1(&m, &units, &services).map_err(fail)?;
        if !case.transient {
            // The application says why the upgrade failed, and the failure is retried
            // from update-status only (no hot loop of hooks and downloads).
            let app = m.app_status_history(APP);
            ensure(
                app.iter().any(|s| {
                    s.status == "blocked"
                        && s.message.contains("cannot install v8.0.0: ")
                        && case.message.iter().all(|f| s.message.contains(f))
                }),
                || format!("application status history {app:?}"),
            )?;
            // Every attempt fetches the .sha1 first.
            let attempts = |s: &ReleaseServer| {
                s.requests()
                    .iter()
                    .filter(|r| r.kind == RequestKind::Sha1(V2.to_string()))
                    .count()
            };
            let before = attempts(&server);
            std::thread::sleep(Duration::from_secs(6));
            let more = attempts(&server) - before;
            eprintln!("{more} more attempts to install v2 in 6 s");
            ensure(more <= 4, || {
                format!("{more} more attempts to install v2 in 6 s (update-status every 2 s)")
            })?;
            still_on_v1(&m, &units, &services).map_err(fail)?;
        }
        ensure(
            !vol.join("escape").exists() && !vol.join("releases/escape").exists(),
            || "an entry escaped the staging dir".into(),
        )?;
        match case.clear {
            Some(clear) => clear(&m, &lead)?,
            None => server.clear_faults(),
        }
    }
    // Complete downloads before the fault was cleared (a wrong checksum is only found
    // at the end); one in flight while clearing may still finish after.
    let before = server.count_complete_downloads(V2);
    run_until(&m, "the units running v2", |m| {
        units
            .iter()
            .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V2).is_ok())
    })?;
    let after = server.count_complete_downloads(V2) - before;
    ensure((1..=2).contains(&after), || {
        format!(
            "{after} complete downloads after the fault was gone: {:?}",
            server.requests()
        )
    })?;
    ensure(
        published_versions(&m, &lead) == vec![V1.to_string(), V2.to_string()]
            || published_versions(&m, &lead) == vec![V2.to_string()],
        || format!("published: {:?}", published_versions(&m, &lead)),
    )?;
    let failed = units.iter().map(|u| m.failed_hooks(u).len()).sum::<usize>() - failed_before;
    if case.transient {
        ensure(failed > 0, || "a transient fault failed no hook".into())?;
    } else {
        no_failed_hooks(&m, &units)?;
    }
    no_duplicate_tool_calls(&m, &units)
}

/// Issue 11's acceptance: a wrong `.sha1` kept for 60 s with 3 units on a shared volume
/// causes at most 3 tarball downloads in total (it was one per hook per unit: the units
/// only fetch the `.sha1` again); once the mirror is fixed the units install and run the
/// release with one more download; then issue 12's scan (secrets, owners, modes) over the
/// whole life, failures included.
fn wrong_sha1_for_a_minute() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    server.set_fault(Target::Sha1(V1.into()), Fault::WrongSha1);
    let m = model_with(juju_sim::ModelOptions {
        update_status_interval: Some(Duration::from_secs(2)),
        retry_backoff_max: Duration::from_secs(1),
        ..juju_sim::ModelOptions::default()
    })?;
    let units = deploy(&m, APP, 3, shared(&server, V1), Volume::Shared)?;
    relate_postgresql(&m, APP)?;
    run_until(&m, "every unit blocked on the checksum", |m| {
        units.iter().all(|u| {
            let s = m.unit_status(u);
            s.status == "blocked" && s.message.starts_with("checksum mismatch for ")
        })
    })?;
    let hooks_before: usize = units.iter().map(|u| m.hooks(u).len()).sum();
    std::thread::sleep(Duration::from_secs(60));
    let hooks = units.iter().map(|u| m.hooks(u).len()).sum::<usize>() - hooks_before;
    let gets = tarball_gets(&server, V1);
    eprintln!("{gets} tarball downloads and {hooks} hooks in the minute of the wrong .sha1");
    ensure(hooks >= 30, || format!("only {hooks} hooks ran in 60 s"))?;
    ensure(gets <= 3, || {
        format!("{gets} tarball downloads while the .sha1 was wrong (at most 3)")
    })?;
    server.clear_faults();
    run_until(&m, "the units running v1", |m| {
        units
            .iter()
            .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
    })?;
    let more = tarball_gets(&server, V1) - gets;
    ensure((1..=2).contains(&more), || {
        format!("{more} downloads once the .sha1 was fixed")
    })?;
    no_failed_hooks(&m, &units)?;
    let mut secrets: SecretValues = Vec::new();
    secrets.extend(admin_password(&m).map(|p| ("admin password".to_string(), p)));
    for u in &units {
        secrets.extend(private_key_secrets(&m, u));
    }
    assert_no_secret_leaks(&m, &[APP], &units, &secrets)
}

/// A tmpfs that holds V1 and its download (2.2 x a 2 MiB tarball) but not V2 beside it.
const VOLUME_FULL: UpgradeFault = UpgradeFault {
    install: |_| Ok(()),
    status: "blocked",
    message: &[
        "storage volume /var/lib/concourse has ",
        " free but ",
        " are needed for download and unpack; free space or grow the volume",
    ],
    transient: false,
    keep: false,
    storage: Volume::Tmpfs { bytes: 5 << 20 },
    clear: Some(|m, u| {
        let dir = m.storage_dir(u).ok_or_else(|| fail("no storage dir"))?;
        remount(&dir.to_string_lossy(), 0, Some("size=32m"))
            .map_err(|e| fail(format!("growing the tmpfs: {e}")))
    }),
};

/// Issue 4: no volume at all: a blocked status that says how to attach it; no request,
/// nothing written locally, no failed hook, the model settles.
fn volume_missing() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(&m, APP, 1, shared(&server, V1), Volume::Missing)?;
    let u = &units[0];
    run_until(&m, "blocked: storage not attached", |m| {
        let st = m.unit_status(u);
        st.status == "blocked"
            && st.message
                == "storage concourse-data is not attached; deploy with --storage concourse-data=<pool>,10G"
    })?;
    settle(&m)?;
    ensure(server.requests().is_empty(), || {
        format!("requests without a volume: {:?}", server.requests())
    })?;
    let copies = local_release_copies(&m, u);
    ensure(copies.is_empty(), || format!("local copies: {copies:?}"))?;
    ensure(!m.exists(u, &format!("{VOLUME_LOCATION}/releases")), || {
        "the charm created the volume layout on the root disk".into()
    })?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)
}

/// Issue 4: a read-only volume: blocked naming the path and the fix, no request, no
/// failed hook; remounted read-write, the unit installs and runs by itself.
fn volume_read_only() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model_with(juju_sim::ModelOptions {
        update_status_interval: Some(Duration::from_secs(2)),
        ..juju_sim::ModelOptions::default()
    })?;
    let units = deploy(&m, APP, 1, shared(&server, V1), Volume::ReadOnly)?;
    let u = &units[0];
    relate_postgresql(&m, APP)?;
    run_until(&m, "blocked: read-only", |m| {
        let st = m.unit_status(u);
        st.status == "blocked"
            && st.message == "storage volume /var/lib/concourse is read-only; remount it read-write"
    })?;
    settle(&m)?;
    ensure(server.requests().is_empty(), || {
        format!("requests on a read-only volume: {:?}", server.requests())
    })?;
    no_failed_hooks(&m, &units)?;
    in_unit_namespace(&m, u, || remount(VOLUME_LOCATION, nix::libc::MS_BIND, None))?
        .map_err(|e| fail(format!("remount read-write: {e}")))?;
    run_until(&m, "the unit running v1", |m| {
        m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok()
    })?;
    ensure(server.count_complete_downloads(V1) == 1, || {
        format!("requests: {:?}", server.requests())
    })?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)
}

/// Issue 4: with the `concourse-release` resource attached, the release installs (once,
/// for 2 units on a shared volume) with no network: the release server, which refuses
/// everything, gets no request at all.
fn resource_without_network() -> TestResult {
    let server = release_server(&[])?;
    server.set_fault(Target::All, Fault::Status(403));
    let t = tarball(V1, Variant::Normal)?;
    let m = model()?;
    let units = deploy_with_resources(
        &m,
        APP,
        2,
        shared(&server, V1),
        Volume::Shared,
        [("concourse-release".to_string(), t.path.clone())].into(),
    )?;
    relate_postgresql(&m, APP)?;
    settle(&m)?;
    run_until(&m, "every unit active and running v1", |m| {
        units
            .iter()
            .all(|u| m.unit_status(u).status == "active" && runs_from_volume(m, u, V1).is_ok())
    })?;
    ensure(server.requests().is_empty(), || {
        format!("requests: {:?}", server.requests())
    })?;
    let by = downloaders(&m, &units, V1);
    ensure(by.len() == 1, || format!("installers: {by:?}"))?;
    let installing = format!("maintenance: Installing v{V1} from the concourse-release resource (");
    ensure(
        status_lines(&m, &by[0])
            .iter()
            .any(|s| s.starts_with(&installing)),
        || format!("{}: {:?}", by[0], status_lines(&m, &by[0])),
    )?;
    ensure(
        log_messages(&m, &by[0])
            .iter()
            .any(|l| l.contains(&format!("downloaded v{V1} from resource:"))),
        || format!("{}: {:?}", by[0], log_messages(&m, &by[0])),
    )?;
    for u in &units {
        let copies = local_release_copies(&m, u);
        // The resource file itself is Juju's copy on each unit; nothing else.
        let extra: Vec<_> = copies
            .iter()
            .filter(|p| {
                !p.to_string_lossy()
                    .contains("/resources/concourse-release/")
            })
            .collect();
        ensure(extra.is_empty(), || {
            format!("{u} holds a local copy: {extra:?}")
        })?;
    }
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;
    never_blocked(&m, &units)
}
