//! `cargo xtask demo`: see the charm work without Juju. The real `dispatch` runs as units
//! in the Juju simulator (`crates/juju-sim`), deployed, upgraded and scaled while a
//! `juju status`-style table shows what each unit really runs.
//!
//! This executable is also every hook tool and the fake `systemctl` of the simulated units
//! (multicall): `main` hands over to them before anything else.

mod args;
mod display;
mod keep;
mod observe;
mod scenario;
mod volume;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use args::{Command, Options};
use display::Display;
use scenario::{Demo, DemoError, Paths, Summary, FROM, TO};

fn main() -> ExitCode {
    sim_tools::register();
    juju_sim::multicall::run_if_tool();
    let opts = match args::parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {}\n\n{}", chain(&e), args::USAGE);
            return ExitCode::from(2);
        }
    };
    // Ctrl-C, a closed terminal or a kill set the flag; the demo sees it within a poll and
    // drops the model, which stops every process it started and removes its mounts.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("demo: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(tools) = &opts.tools {
        if !tools.is_file() {
            eprintln!(
                "demo: --tools {}: no such file; build crates/sim-tools or leave the option out",
                tools.display()
            );
            return ExitCode::from(2);
        }
        // before the first model: units link their tools to it when they are made
        juju_sim::multicall::set_executable(tools);
    }
    let paths = paths(&opts);
    run(opts, &paths, stop)
}

fn paths(o: &Options) -> Paths {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Paths {
        dispatch: o
            .dispatch
            .clone()
            .unwrap_or_else(|| exe_dir.join("dispatch")),
        charm_dir: o.charm_dir.clone().unwrap_or(repo),
        cache: o
            .cache
            .clone()
            .unwrap_or_else(|| exe_dir.join("..").join("demo-tarballs")),
    }
}

/// An error and its sources, `outer: inner: …` (each message leaves its source out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `path` relative to the current directory when it is below it (shorter to read).
fn shown(path: &Path) -> &Path {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok())
        .unwrap_or(path)
}

fn run(opts: Options, paths: &Paths, stop: Arc<AtomicBool>) -> ExitCode {
    let start = Instant::now();
    let mut display = Display::new(opts.quiet);
    if let Err(e) = scenario::preflight(paths) {
        eprintln!("demo: {}", chain(&e));
        return ExitCode::from(2);
    }
    display.print(&format!(
        "Release tarballs v{FROM} and v{TO}: {} MiB each, generated once into {}",
        opts.release_mib,
        shown(&paths.cache).display()
    ));
    let tarballs = match scenario::tarballs(&paths.cache, opts.release_mib) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("demo: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut demo = match Demo::new(opts.clone(), display, tarballs, stop.clone(), start) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("demo: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let intro = format!(
        "The real charm binary ({}) runs as {} concourse-ci units in the Juju simulator \
         (process-level, per-unit mount namespaces), next to PostgreSQL (played by the \
         simulator) and a release server on 127.0.0.1 serving v{FROM} and v{TO}. \
         Ctrl-C stops and cleans up.",
        shown(&paths.dispatch).display(),
        opts.units
    );
    let intro = demo.paragraph(&intro);
    demo.display.print(&intro);
    let result = demo.run(paths);
    let code = finish(&mut demo, &opts, result);
    let interrupted = stop.load(Ordering::SeqCst);
    drop(demo);
    if interrupted {
        println!("Stopped every process of the model, removed its mounts and run directory.");
    }
    code
}

/// Keeps what was asked for (or the hook logs after a failure), prints the summary or
/// the failure, and says where the logs are.
fn finish(demo: &mut Demo, opts: &Options, result: Result<Summary, DemoError>) -> ExitCode {
    let failed = !matches!(result, Ok(_) | Err(DemoError::Interrupted));
    let keep_dir = match (&opts.keep, failed) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => tempfile::Builder::new()
            .prefix("concourse-ci-demo-")
            .tempdir()
            .map(|d| d.keep())
            .ok(),
        (None, false) => None,
    };
    let kept = keep_dir.map(|dir| (save(demo, opts, &dir), dir));
    let mut text = Vec::new();
    let code = match &result {
        Ok(summary) => {
            text.push(summary.text());
            ExitCode::SUCCESS
        }
        Err(DemoError::Interrupted) => {
            text.push("Interrupted: stopping the model and cleaning up.".to_string());
            ExitCode::from(130)
        }
        Err(e) => {
            text.push(format!("demo failed: {}", chain(e)));
            // a terminal still shows the live table; elsewhere show how things stood
            if demo.display.mode() != display::Mode::Live {
                text.push(demo.last_table(None));
            }
            ExitCode::FAILURE
        }
    };
    match kept {
        Some((Ok(()), dir)) => text.push(kept_text(&dir, opts.keep.is_some())),
        Some((Err(e), _)) => text.push(format!("Could not keep the logs: {}", chain(&e))),
        None => {}
    }
    demo.display.always(&text.join("\n"));
    code
}

fn save(demo: &Demo, opts: &Options, dir: &Path) -> Result<(), keep::KeepError> {
    let units = demo.m.units(observe::APP);
    keep::save_logs(dir, &demo.m, &units, &demo.timeline)?;
    if opts.keep.is_some() {
        keep::save_volumes(dir, &demo.volumes())?;
    }
    Ok(())
}

fn kept_text(dir: &Path, volumes: bool) -> String {
    let dir: PathBuf = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let d = dir.display();
    let mut s = format!("Hook logs: {d}/hooks/ (and {d}/model-dump.txt, {d}/timeline.json)");
    if volumes {
        s.push_str(&format!(
            "\nVolumes: {d}/volume{}",
            if dir.join("volume").exists() {
                "/"
            } else {
                "s/"
            }
        ));
    }
    s
}
