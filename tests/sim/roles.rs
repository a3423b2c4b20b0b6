//! Issue 5's acceptance for the real charm: the web and worker roles, run by the real
//! `dispatch` in the simulator with the fake `concourse`, the fake `systemctl` and the
//! fake PostgreSQL provider.
//!
//! What the tests look at: statuses; the environment each `concourse web`/`worker` process
//! was started with (the fake binary logs it); the fake systemctl journal (every start,
//! restart, stop, reload, signal); files on the units; relation data; ports; action results.

use std::collections::BTreeSet;

use juju_sim::{Model, PostgresOptions, Volume};
use libtest_mimic::Trial;
use release_fixtures::fake_concourse::Record;
use release_fixtures::tarball::Variant;

use crate::common::*;

const APP: &str = "concourse-ci";

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "roles::auto_mode_web_and_workers_get_their_settings_and_restart_only_when_needed",
            auto_mode_settings_and_restarts,
        ),
        // Once, in a full CI run, the worker it removes could not reach its TSA for two
        // minutes while web kept its pid: the fake TSA then died of SIGPIPE when a worker
        // left before its answer (fixed: fake_web_exits_with_its_tsa). A failure prints
        // both units' full history.
        trial(
            "roles::auto_mode_web_stays_on_leader_change_removed_worker_retires_actions",
            auto_mode_leadership_removal_actions,
        ),
        trial(
            "roles::web_and_worker_applications_over_tsa_flight",
            web_and_worker_apps,
        ),
        trial(
            "roles::role_changes_stop_what_a_unit_no_longer_runs",
            role_changes,
        ),
    ]
}

/// The simulator's address of a unit of the `app_index`-th deployed application.
fn address(app_index: u32, unit: &str) -> String {
    let n: u32 = unit
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("127.0.{}.{}", app_index + 1, n + 1)
}

/// The note an active status carries here: the simulator's release server is plain http.
const PLAIN_HTTP_NOTE: &str = concourse_ci::charm::status::messages::RELEASE_URL_PLAIN_HTTP.text;

fn web_ready(addr: &str, port: u16) -> String {
    format!("Web ready (v{V1}) http://{addr}:{port}; {PLAIN_HTTP_NOTE}")
}

fn worker_ready() -> String {
    format!("Worker ready (v{V1}); {PLAIN_HTTP_NOTE}")
}

/// The unit recorded as `web-unit` in the peer app databag.
fn web_unit(m: &Model, app: &str) -> Option<String> {
    let peers = m.relation_id(&format!("{app}:peers"))?;
    m.databag(peers, app).data.get("web-unit").cloned()
}

fn read(m: &Model, unit: &str, path: &str) -> Result<String, libtest_mimic::Failed> {
    m.read_to_string(unit, path)
        .map_err(|e| fail(format!("{unit}: reading {path}: {e}")))
}

/// Waits until every unit ran one more update-status (a full reconcile with nothing new).
fn another_update_status(m: &Model, units: &[String]) -> TestResult {
    let count = |m: &Model, u: &String| {
        m.hooks(u)
            .iter()
            .filter(|h| h.name == "update-status")
            .count()
    };
    let before: Vec<usize> = units.iter().map(|u| count(m, u)).collect();
    run_until(m, "another update-status on every unit", |m| {
        units.iter().zip(&before).all(|(u, b)| count(m, u) > *b)
    })
}

fn env_of<'a>(r: &'a Record, key: &str) -> &'a str {
    r.env.get(key).map(String::as_str).unwrap_or("")
}

fn started_since(
    m: &Model,
    unit: &str,
    sub: &str,
    since: f64,
) -> Result<Record, libtest_mimic::Failed> {
    // the fake binary logs its start a moment after systemctl returned
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        last_start(m, unit, sub).is_some_and(|r| r.ts >= since)
    });
    last_start(m, unit, sub)
        .filter(|r| r.ts >= since)
        .ok_or_else(|| {
            fail(format!(
                "{unit}: concourse {sub} was not started again; records: {:?}\njournal: {:#?}",
                concourse_log(m, unit)
                    .iter()
                    .filter(|r| r.subcommand != "--version")
                    .map(|r| (&r.subcommand, &r.event, &r.detail))
                    .collect::<Vec<_>>(),
                journal(m, unit)
                    .into_iter()
                    .filter(|e| e.ts >= since - 1.0 && e.action != "call")
                    .collect::<Vec<_>>()
            ))
        })
}

/// The last start record of `concourse <sub>` (waiting briefly for it to be written).
fn wait_start(m: &Model, unit: &str, sub: &str) -> Result<Record, libtest_mimic::Failed> {
    started_since(m, unit, sub, 0.0)
}

/// The pid of the running `concourse <sub>` (waiting briefly for its start record).
fn running_pid(m: &Model, unit: &str, sub: &str) -> Result<u32, libtest_mimic::Failed> {
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        service_pid(m, unit, sub).is_some()
    });
    service_pid(m, unit, sub).ok_or_else(|| fail(format!("{unit}: concourse {sub} is not running")))
}

/// A worker restarted since `since` was landed first, never killed.
fn landed_not_killed(m: &Model, unit: &str, since: f64) -> TestResult {
    let events: Vec<String> = concourse_log(m, unit)
        .into_iter()
        .filter(|r| r.ts >= since && r.subcommand == "worker")
        .map(|r| r.event)
        .collect();
    ensure(
        events.iter().any(|e| e == "landed")
            && !events.iter().any(|e| e == "killed without landing"),
        || format!("{unit}: worker events since the change: {events:?}"),
    )
}

/// 3 units in `auto` mode with PostgreSQL: one web, two workers; each process got its
/// settings from its env file; config changes restart exactly the services they affect;
/// a refresh re-renders without restarting anything; no secret leaks anywhere.
fn auto_mode_settings_and_restarts() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(
        &m,
        APP,
        3,
        config(&server, &[("version", V1)]),
        Volume::Shared,
    )?;
    let pg = played(&m, PostgresOptions::default());
    with_postgresql(&m, APP, pg.clone())?;
    settle(&m)?;
    let web = web_unit(&m, APP).ok_or_else(|| fail(format!("no web-unit\n{}", m.dump())))?;
    let workers: Vec<String> = units.iter().filter(|u| **u != web).cloned().collect();
    let web_addr = address(0, &web);
    wait_status(&m, &[&web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    no_failed_hooks(&m, &units)?;
    ensure(m.app_version(APP) == V1, || {
        format!("application version {:?}", m.app_version(APP))
    })?;

    // web: database, keys, external URL, admin user, all from its env file
    let admin = admin_password(&m).ok_or_else(|| fail("no admin-password secret"))?;
    let w = wait_start(&m, &web, "web")?;
    for (k, v) in [
        ("CONCOURSE_POSTGRES_HOST", pg.endpoint_host().as_str()),
        ("CONCOURSE_POSTGRES_PORT", "5432"),
        ("CONCOURSE_POSTGRES_USER", pg.username.as_str()),
        ("CONCOURSE_POSTGRES_PASSWORD", pg.password.as_str()),
        ("CONCOURSE_POSTGRES_DATABASE", "concourse"),
        ("CONCOURSE_EXTERNAL_URL", &format!("http://{web_addr}:8080")),
        ("CONCOURSE_BIND_PORT", "8080"),
        ("CONCOURSE_LOG_LEVEL", "info"),
        ("CONCOURSE_ADD_LOCAL_USER", &format!("admin:{admin}")),
        ("CONCOURSE_MAIN_TEAM_LOCAL_USER", "admin"),
    ] {
        ensure(env_of(&w, k) == v, || {
            format!("web env {k}={:?}, want {v:?}", env_of(&w, k))
        })?;
    }
    ensure(w.user == "concourse", || format!("web runs as {}", w.user))?;
    ensure(w.exe_resolved.contains(&format!("/releases/{V1}/")), || {
        format!("web runs {}", w.exe_resolved)
    })?;
    for k in [
        "CONCOURSE_TSA_HOST_KEY",
        "CONCOURSE_SESSION_SIGNING_KEY",
        "CONCOURSE_TSA_AUTHORIZED_KEYS",
    ] {
        let text = read(&m, &web, env_of(&w, k))?;
        ensure(!text.trim().is_empty(), || format!("web {k} file is empty"))?;
    }
    let tsa_pub = read(
        &m,
        &web,
        &format!("{}.pub", env_of(&w, "CONCOURSE_TSA_HOST_KEY")),
    )?;
    ensure(
        m.opened_ports(&web).contains(&"8080/tcp".to_string()),
        || format!("web ports {:?}", m.opened_ports(&web)),
    )?;

    // workers: TSA host and keys; web authorizes exactly their keys
    let mut worker_keys = BTreeSet::new();
    for u in &workers {
        let r = wait_start(&m, u, "worker")?;
        ensure(
            env_of(&r, "CONCOURSE_TSA_HOST") == format!("{web_addr}:2222"),
            || format!("{u} TSA host {:?}", env_of(&r, "CONCOURSE_TSA_HOST")),
        )?;
        let known = read(&m, u, env_of(&r, "CONCOURSE_TSA_PUBLIC_KEY"))?;
        ensure(known.trim() == tsa_pub.trim(), || {
            format!("{u} trusts TSA key {known:?}, web has {tsa_pub:?}")
        })?;
        let private = env_of(&r, "CONCOURSE_TSA_WORKER_PRIVATE_KEY");
        ensure(!read(&m, u, private)?.trim().is_empty(), || {
            format!("{u}: empty worker key")
        })?;
        worker_keys.insert(read(&m, u, &format!("{private}.pub"))?.trim().to_string());
        ensure(r.user == "root", || {
            format!("{u} worker runs as {}", r.user)
        })?;
        ensure(env_of(&r, "CONCOURSE_RUNTIME") == "containerd", || {
            format!("{u} runtime {:?}", env_of(&r, "CONCOURSE_RUNTIME"))
        })?;
        let work = env_of(&r, "CONCOURSE_WORK_DIR");
        ensure(
            !work.is_empty() && !work.starts_with("/var/lib/concourse/"),
            || format!("{u} work dir {work:?} must be local, not on the volume"),
        )?;
        ensure(m.opened_ports(u).is_empty(), || {
            format!("worker {u} opened {:?}", m.opened_ports(u))
        })?;
    }
    let authorized: BTreeSet<String> = read(&m, &web, env_of(&w, "CONCOURSE_TSA_AUTHORIZED_KEYS"))?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    ensure(authorized == worker_keys, || {
        format!("authorized {authorized:?}, workers {worker_keys:?}")
    })?;

    // a change no service depends on restarts nothing (update-status neither); neither
    // does drain-timeout: it only changes how long a stop may take (daemon-reload)
    let mark = quiet_mark(&m, &[APP]);
    set_config(
        &m,
        APP,
        &[("upgrade-max-unavailable", "2"), ("drain-timeout", "30m")],
    )?;
    another_update_status(&m, &units)?;
    for u in &workers {
        let unit_text = read(&m, u, "/etc/systemd/system/concourse-worker.service")?;
        ensure(unit_text.contains("TimeoutStopSec=1800"), || {
            format!("{u}: drain-timeout not in the unit: {unit_text}")
        })?;
        ensure(
            journal(&m, u)
                .iter()
                .any(|e| e.ts >= mark && e.action == "daemon-reload"),
            || format!("{u}: no daemon-reload after the unit changed"),
        )?;
    }
    for (u, svc) in std::iter::once((&web, "concourse-server"))
        .chain(workers.iter().map(|u| (u, "concourse-worker")))
    {
        let d = disturbances(&m, u, svc, mark);
        ensure(d.is_empty(), || format!("{u} {svc} disturbed: {d:?}"))?;
    }

    // log-level: both roles restart; workers are drained first. Web restarts at the same
    // time on its own unit: a worker whose land meets no TSA exits 1 (upstream), and its
    // unit's stop means systemd does not restart it.
    let mark = quiet_mark(&m, &[APP]);
    set_config(&m, APP, &[("log-level", "debug")])?;
    let r = started_since(&m, &web, "web", mark)?;
    ensure(env_of(&r, "CONCOURSE_LOG_LEVEL") == "debug", || {
        format!("web log level {:?}", env_of(&r, "CONCOURSE_LOG_LEVEL"))
    })?;
    for u in &workers {
        let r = started_since(&m, u, "worker", mark)?;
        ensure(env_of(&r, "CONCOURSE_LOG_LEVEL") == "debug", || {
            format!("{u} log level {:?}", env_of(&r, "CONCOURSE_LOG_LEVEL"))
        })?;
        drained_not_restarted(&m, u, mark, &["landed", "drain failed"])?;
    }

    // tag: workers only
    let mark = quiet_mark(&m, &[APP]);
    set_config(&m, APP, &[("tag", "gpu,big")])?;
    another_update_status(&m, &units)?;
    for u in &workers {
        let r = started_since(&m, u, "worker", mark)?;
        ensure(env_of(&r, "CONCOURSE_TAG") == "gpu,big", || {
            format!("{u} tags {:?}", env_of(&r, "CONCOURSE_TAG"))
        })?;
        landed_not_killed(&m, u, mark)?;
    }
    let d = disturbances(&m, &web, "concourse-server", mark);
    ensure(d.is_empty(), || format!("tag change disturbed web: {d:?}"))?;

    // the provider rotates the password (a new revision of secret-user): web restarts
    // with it, workers are left alone
    let mark = quiet_mark(&m, &[APP]);
    let rotated = "rotated-pw-2";
    m.postgres_rotate_password("postgresql", rotated);
    settle(&m)?;
    let r = started_since(&m, &web, "web", mark)?;
    ensure(env_of(&r, "CONCOURSE_POSTGRES_PASSWORD") == rotated, || {
        "web did not pick up the rotated database password".into()
    })?;
    for u in &workers {
        let d = disturbances(&m, u, "concourse-worker", mark);
        ensure(d.is_empty(), || format!("rotation disturbed {u}: {d:?}"))?;
    }

    // refresh: upgrade-charm re-renders, restarts nothing
    let mark = quiet_mark(&m, &[APP]);
    m.refresh(APP, charm())
        .map_err(|e| fail(format!("refresh: {e}")))?;
    settle(&m)?;
    for u in &units {
        ensure(m.hook_names(u).iter().any(|h| h == "upgrade-charm"), || {
            format!("{u} did not run upgrade-charm")
        })?;
    }
    another_update_status(&m, &units)?;
    for (u, svc) in std::iter::once((&web, "concourse-server"))
        .chain(workers.iter().map(|u| (u, "concourse-worker")))
    {
        let d = disturbances(&m, u, svc, mark);
        ensure(d.is_empty(), || {
            format!("refresh disturbed {u} {svc}: {d:?}")
        })?;
    }
    wait_status(&m, &[&web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    no_failed_hooks(&m, &units)?;
    no_duplicate_tool_calls(&m, &units)?;

    let mut secrets: SecretValues = vec![
        ("db password".into(), pg.password.clone()),
        ("rotated db password".into(), rotated.into()),
        ("admin password".into(), admin),
    ];
    for u in &units {
        secrets.extend(private_key_secrets(&m, u));
    }
    assert_no_secret_leaks(&m, &[APP], &units, &secrets)
}

/// A value of an action's results by dotted key (`services.web`).
fn result(a: &juju_sim::ActionResult, key: &str) -> Option<String> {
    let mut v = &a.results;
    for k in key.split('.') {
        v = v.get(k)?;
    }
    v.as_str().map(str::to_string)
}

fn action_ok(
    m: &Model,
    unit: &str,
    name: &str,
    params: &[(&str, serde_json::Value)],
) -> Result<juju_sim::ActionResult, libtest_mimic::Failed> {
    let a = m
        .run_action(unit, name, params.iter().map(|(k, v)| (*k, v.clone())))
        .map_err(|e| fail(format!("{unit} {name}: {e}")))?;
    ensure(a.status == juju_sim::model::ActionStatus::Completed, || {
        format!("{unit} {name}: {:?} {} {}", a.status, a.message, a.stderr)
    })?;
    Ok(a)
}

/// Auto mode, 3 units: moving leadership does not move web; every unit shows the same
/// admin password (the app secret); removing a worker retires it and web drops its key
/// with a reload. (check-status and restart-services are in-process scenarios now:
/// `src/charm/tests/actions.rs`.)
fn auto_mode_leadership_removal_actions() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(
        &m,
        APP,
        3,
        config(&server, &[("version", V1)]),
        Volume::Shared,
    )?;
    let pg = played(&m, PostgresOptions::default());
    with_postgresql(&m, APP, pg.clone())?;
    settle(&m)?;
    let web = web_unit(&m, APP).ok_or_else(|| fail(format!("no web-unit\n{}", m.dump())))?;
    let workers: Vec<String> = units.iter().filter(|u| **u != web).cloned().collect();
    let web_addr = address(0, &web);
    wait_status(&m, &[&web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    let web_pid = running_pid(&m, &web, "web")?;

    // leadership moves to a worker: web stays where it is, untouched
    let mark = quiet_mark(&m, &[APP]);
    let new_leader = workers[0].clone();
    m.set_leader(&new_leader)
        .map_err(|e| fail(format!("set_leader: {e}")))?;
    settle(&m)?;
    ensure(
        m.hook_names(&new_leader)
            .iter()
            .any(|h| h == "leader-elected"),
        || format!("{new_leader} never ran leader-elected"),
    )?;
    another_update_status(&m, &units)?;
    ensure(web_unit(&m, APP).as_deref() == Some(web.as_str()), || {
        format!("web-unit moved to {:?}", web_unit(&m, APP))
    })?;
    ensure(service_pid(&m, &web, "web") == Some(web_pid), || {
        format!("web process changed: {:?}", service_pid(&m, &web, "web"))
    })?;
    let d = disturbances(&m, &web, "concourse-server", mark);
    ensure(d.is_empty(), || format!("web disturbed: {d:?}"))?;
    ensure(last_start(&m, &new_leader, "web").is_none(), || {
        format!("{new_leader} started web")
    })?;
    ensure(
        !m.exists(&new_leader, "/etc/systemd/system/concourse-server.service"),
        || format!("{new_leader} has a web unit file"),
    )?;
    wait_status(&m, &[&web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(&m, &workers, "active", &worker_ready())?;

    // actions: the admin password is the same everywhere and is the secret's
    let admin = admin_password(&m).ok_or_else(|| fail("no admin-password secret"))?;
    for u in &units {
        let a = action_ok(&m, u, "get-admin-password", &[])?;
        ensure(result(&a, "username").as_deref() == Some("admin"), || {
            format!("{u}: username {:?}", result(&a, "username"))
        })?;
        ensure(
            result(&a, "password").as_deref() == Some(admin.as_str()),
            || format!("{u}: password differs from the secret's"),
        )?;
    }
    // removing a worker retires it; web forgets its key with a reload, not a restart
    let gone = workers[1].clone();
    let gone_key = read(&m, &gone, "/var/lib/concourse-worker/keys/worker_key.pub")?;
    let kept_key = read(
        &m,
        &workers[0],
        "/var/lib/concourse-worker/keys/worker_key.pub",
    )?;
    let mut secrets: SecretValues = vec![
        ("db password".into(), pg.password.clone()),
        ("admin password".into(), admin),
    ];
    for u in &units {
        secrets.extend(private_key_secrets(&m, u));
    }
    let mark = quiet_mark(&m, &[APP]);
    m.remove_unit(&gone)
        .map_err(|e| fail(format!("remove_unit: {e}")))?;
    run_until(&m, "the worker to be gone", |m| m.unit_gone(&gone))?;
    settle(&m)?;
    let events: Vec<String> = concourse_log(&m, &gone)
        .into_iter()
        .filter(|r| r.ts >= mark && r.subcommand == "worker")
        .map(|r| r.event)
        .collect();
    ensure(
        events.iter().any(|e| e == "retired")
            && !events
                .iter()
                .any(|e| e == "killed without landing" || e == "landing"),
        || {
            format!(
                "{gone} worker events on removal: {events:?}\n{}\n{}",
                history(&m, &gone, "worker", mark),
                history(&m, &web, "web", mark)
            )
        },
    )?;
    let authorized = read(
        &m,
        &web,
        "/var/lib/concourse-web/keys/authorized_worker_keys",
    )?;
    ensure(
        authorized.trim() == kept_key.trim() && !authorized.contains(gone_key.trim()),
        || format!("authorized keys after removal: {authorized:?}"),
    )?;
    let d = disturbances(&m, &web, "concourse-server", mark);
    ensure(
        // `systemctl reload` (the journal) is the charm's part; the fake web's own
        // "reloaded" record can lag the hook under load, or merge with an earlier HUP.
        d.iter().any(|e| e.contains("reload")) && service_pid(&m, &web, "web") == Some(web_pid),
        || format!("web after the worker left: {d:?}"),
    )?;
    let live: Vec<String> = units.iter().filter(|u| **u != gone).cloned().collect();
    no_failed_hooks(&m, &live)?;
    assert_no_secret_leaks(&m, &[APP], &units, &secrets)
}

/// `mode=web` and `mode=worker` applications related over `tsa`/`flight`: workers wait for
/// the relation, then get the web's TSA host and key; web authorizes each worker key and
/// applies a new worker's key with a reload (SIGHUP), not a restart.
fn web_and_worker_apps() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let webs = deploy(
        &m,
        "web",
        1,
        config(&server, &[("version", V1), ("mode", "web")]),
        Volume::Shared,
    )?;
    let mut workers = deploy(
        &m,
        "workers",
        2,
        config(&server, &[("version", V1), ("mode", "worker")]),
        Volume::Shared,
    )?;
    let pg = played(&m, PostgresOptions::default());
    with_postgresql(&m, "web", pg.clone())?;
    settle(&m)?;
    let web = &webs[0];
    let web_addr = address(0, web);
    wait_status(&m, &[web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(
        &m,
        &workers,
        "waiting",
        "Waiting for web unit's TSA key (juju integrate <web-app>:tsa workers:flight)",
    )?;
    ensure(last_start(&m, &workers[0], "worker").is_none(), || {
        "a worker started without a TSA".into()
    })?;

    m.relate("web:tsa", "workers:flight")
        .map_err(|e| fail(format!("relate: {e}")))?;
    settle(&m)?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    let tsa_pub = read(&m, web, "/var/lib/concourse-web/keys/tsa_host_key.pub")?;
    let keys_of =
        |m: &Model, units: &[String]| -> Result<BTreeSet<String>, libtest_mimic::Failed> {
            let mut keys = BTreeSet::new();
            for u in units {
                let r = wait_start(m, u, "worker")?;
                ensure(
                    env_of(&r, "CONCOURSE_TSA_HOST") == format!("{web_addr}:2222"),
                    || format!("{u} TSA host {:?}", env_of(&r, "CONCOURSE_TSA_HOST")),
                )?;
                let known = read(m, u, env_of(&r, "CONCOURSE_TSA_PUBLIC_KEY"))?;
                ensure(known.trim() == tsa_pub.trim(), || {
                    format!("{u} trusts {known:?}, web has {tsa_pub:?}")
                })?;
                let private = env_of(&r, "CONCOURSE_TSA_WORKER_PRIVATE_KEY");
                keys.insert(read(m, u, &format!("{private}.pub"))?.trim().to_string());
            }
            Ok(keys)
        };
    let authorized = |m: &Model| -> Result<BTreeSet<String>, libtest_mimic::Failed> {
        Ok(
            read(m, web, "/var/lib/concourse-web/keys/authorized_worker_keys")?
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
        )
    };
    let want = keys_of(&m, &workers)?;
    run_until(&m, "web to authorize both workers", |m| {
        authorized(m).is_ok_and(|a| a == want)
    })?;

    // a third worker: its key is applied with a reload
    let web_pid = running_pid(&m, web, "web")?;
    let mark = quiet_mark(&m, &["web", "workers"]);
    workers.push(
        m.add_unit("workers")
            .map_err(|e| fail(format!("add_unit: {e}")))?,
    );
    settle(&m)?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    let want = keys_of(&m, &workers)?;
    run_until(&m, "web to authorize the new worker", |m| {
        authorized(m).is_ok_and(|a| a == want)
    })?;
    run_until(&m, "web to reload", |m| {
        disturbances(m, web, "concourse-server", mark)
            .iter()
            .any(|e| e.contains("reload"))
    })?;
    let d = disturbances(&m, web, "concourse-server", mark);
    ensure(
        service_pid(&m, web, "web") == Some(web_pid)
            && !d.iter().any(|e| e.contains("start") || e.contains("stop")),
        || format!("web restarted for a new worker key: {d:?}"),
    )?;

    let mut all: Vec<String> = webs.clone();
    all.extend(workers.iter().cloned());
    no_failed_hooks(&m, &all)?;
    let mut secrets: SecretValues = vec![
        ("db password".into(), pg.password.clone()),
        (
            "admin password".into(),
            admin_password(&m).ok_or_else(|| fail("no admin-password secret"))?,
        ),
    ];
    for u in &all {
        secrets.extend(private_key_secrets(&m, u));
    }
    assert_no_secret_leaks(&m, &["web", "workers"], &all, &secrets)
}

fn both_ready(addr: &str, port: u16) -> String {
    format!("Web ready (v{V1}) http://{addr}:{port}; {}", worker_ready())
}

/// Worker events of a unit since `since`.
fn worker_events(m: &Model, unit: &str, since: f64) -> Vec<String> {
    concourse_log(m, unit)
        .into_iter()
        .filter(|r| r.ts >= since && r.subcommand == "worker")
        .map(|r| r.event)
        .collect()
}

/// Checks that a unit that lost its worker role retired the worker (Concourse forgets it)
/// and removed the service.
fn worker_retired(m: &Model, unit: &str, since: f64) -> TestResult {
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        worker_events(m, unit, since).iter().any(|e| e == "retired")
    });
    let ev = worker_events(m, unit, since);
    ensure(
        ev.iter().any(|e| e == "retired") && !ev.iter().any(|e| e == "killed without landing"),
        || format!("{unit}: worker events after losing the role: {ev:?}"),
    )?;
    ensure(service_pid(m, unit, "worker").is_none(), || {
        format!("{unit}: a worker still runs")
    })?;
    ensure(
        !m.exists(unit, "/etc/systemd/system/concourse-worker.service"),
        || format!("{unit}: the worker unit file is still installed"),
    )
}

/// A worker whose TSA went away with its web unit cannot land or retire (upstream: the
/// drain needs a TSA): it was stopped cleanly (SIGTERM through its unit's stop), never
/// signalled into an exit 1 that systemd would restart.
fn stopped_without_its_tsa(m: &Model, unit: &str, since: f64) -> TestResult {
    drained_not_restarted(
        m,
        unit,
        since,
        &[
            "killed without landing",
            "drain failed",
            "retired",
            "landed",
        ],
    )
}

/// The worker ended one of the `ends` ways since `since` (nothing lost before its beacon
/// ran) and systemd did not restart it.
fn drained_not_restarted(m: &Model, unit: &str, since: f64, ends: &[&str]) -> TestResult {
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        worker_events(m, unit, since)
            .iter()
            .any(|e| ends.contains(&e.as_str()))
    });
    let ev = worker_events(m, unit, since);
    ensure(
        ev.iter().any(|e| ends.contains(&e.as_str())) && !ev.iter().any(|e| e == "ignored signal"),
        || format!("{unit}: worker events: {ev:?}"),
    )?;
    let restarted: Vec<_> = journal(m, unit)
        .into_iter()
        .filter(|e| e.ts >= since && e.action == "restart-scheduled")
        .collect();
    ensure(restarted.is_empty(), || {
        format!("{unit}: systemd restarted a stopped worker: {restarted:?}")
    })
}

/// Checks that a unit that lost its web role stopped web, removed the service and closed
/// its ports.
fn web_removed(m: &Model, unit: &str) -> TestResult {
    let _ = m.run_until(std::time::Duration::from_secs(10), |m| {
        service_pid(m, unit, "web").is_none()
    });
    ensure(service_pid(m, unit, "web").is_none(), || {
        format!("{unit}: web still runs")
    })?;
    ensure(
        !m.exists(unit, "/etc/systemd/system/concourse-server.service"),
        || format!("{unit}: the web unit file is still installed"),
    )?;
    ensure(m.opened_ports(unit).is_empty(), || {
        format!("{unit}: ports still open: {:?}", m.opened_ports(unit))
    })
}

/// `mode=all` → `auto`: the web unit retires its worker, the others land their workers
/// while their own web still runs, stop web, close its ports and point their workers at
/// the web unit. Then the web unit (the leader) is removed: its TSA goes with it, so the
/// other workers can no longer land or retire (upstream's drain needs a TSA); the new
/// leader takes web over and stops its own worker, the remaining worker is stopped
/// without a long wait and follows the new TSA. Web authorizes exactly the live workers'
/// keys throughout.
fn role_changes() -> TestResult {
    let server = release_server(&[(V1, Variant::Normal)])?;
    let m = model()?;
    let units = deploy(
        &m,
        APP,
        3,
        config(
            &server,
            &[("version", V1), ("mode", "all"), ("drain-timeout", "15s")],
        ),
        Volume::Shared,
    )?;
    with_postgresql(&m, APP, PostgresOptions::default())?;
    settle(&m)?;
    for u in &units {
        wait_status(&m, &[u], "active", &both_ready(&address(0, u), 8080))?;
    }
    let authorized = |m: &Model, web: &str| -> BTreeSet<String> {
        m.read_to_string(web, "/var/lib/concourse-web/keys/authorized_worker_keys")
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let worker_key = |m: &Model, u: &str| {
        m.read_to_string(u, "/var/lib/concourse-worker/keys/worker_key.pub")
            .unwrap_or_default()
            .trim()
            .to_string()
    };

    // all -> auto
    let mark = quiet_mark(&m, &[APP]);
    set_config(&m, APP, &[("mode", "auto")])?;
    let web = web_unit(&m, APP).ok_or_else(|| fail("no web-unit"))?;
    let workers: Vec<String> = units.iter().filter(|u| **u != web).cloned().collect();
    let web_addr = address(0, &web);
    wait_status(&m, &[&web], "active", &web_ready(&web_addr, 8080))?;
    wait_status(&m, &workers, "active", &worker_ready())?;
    worker_retired(&m, &web, mark)?;
    for u in &workers {
        web_removed(&m, u)?;
        let r = started_since(&m, u, "worker", mark)?;
        ensure(
            env_of(&r, "CONCOURSE_TSA_HOST") == format!("{web_addr}:2222"),
            || format!("{u} TSA host {:?}", env_of(&r, "CONCOURSE_TSA_HOST")),
        )?;
        landed_not_killed(&m, u, mark)?;
    }
    let want: BTreeSet<String> = workers.iter().map(|u| worker_key(&m, u)).collect();
    run_until(&m, "web to authorize only the workers", |m| {
        authorized(m, &web) == want
    })?;

    // the web unit (leader) goes away: the new leader takes web over
    ensure(m.leader(APP).as_deref() == Some(web.as_str()), || {
        format!("the web unit {web} is not the leader {:?}", m.leader(APP))
    })?;
    let mark = quiet_mark(&m, &[APP]);
    m.remove_unit(&web)
        .map_err(|e| fail(format!("remove_unit: {e}")))?;
    run_until(&m, "the web unit to be gone", |m| m.unit_gone(&web))?;
    settle(&m)?;
    // the removed unit stopped web itself (the simulator SIGKILLs what is left)
    let stopped = concourse_log(&m, &web)
        .iter()
        .any(|r| r.ts >= mark && r.subcommand == "web" && r.event == "stopped");
    ensure(stopped, || format!("{web}: web was not stopped on removal"))?;
    let new_web = web_unit(&m, APP).ok_or_else(|| fail("no web-unit"))?;
    ensure(
        Some(new_web.as_str()) == m.leader(APP).as_deref() && new_web != web,
        || format!("web-unit {new_web}, leader {:?}", m.leader(APP)),
    )?;
    let rest: Vec<String> = workers.iter().filter(|u| **u != new_web).cloned().collect();
    let new_addr = address(0, &new_web);
    wait_status(&m, &[&new_web], "active", &web_ready(&new_addr, 8080))?;
    wait_status(&m, &rest, "active", &worker_ready())?;
    stopped_without_its_tsa(&m, &new_web, mark)?;
    ensure(service_pid(&m, &new_web, "worker").is_none(), || {
        format!("{new_web}: a worker still runs")
    })?;
    let new_tsa = read(&m, &new_web, "/var/lib/concourse-web/keys/tsa_host_key.pub")?;
    for u in &rest {
        let r = started_since(&m, u, "worker", mark)?;
        ensure(
            env_of(&r, "CONCOURSE_TSA_HOST") == format!("{new_addr}:2222"),
            || format!("{u} TSA host {:?}", env_of(&r, "CONCOURSE_TSA_HOST")),
        )?;
        let trusted = read(&m, u, env_of(&r, "CONCOURSE_TSA_PUBLIC_KEY"))?;
        ensure(trusted.trim() == new_tsa.trim(), || {
            format!("{u} trusts the old TSA key")
        })?;
        stopped_without_its_tsa(&m, u, mark)?;
    }
    let want: BTreeSet<String> = rest.iter().map(|u| worker_key(&m, u)).collect();
    run_until(
        &m,
        "the new web to authorize only the remaining worker",
        |m| authorized(m, &new_web) == want,
    )?;
    no_failed_hooks(&m, &workers)?;
    no_duplicate_tool_calls(&m, &units)
}
