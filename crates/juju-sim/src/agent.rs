//! The unit agent: one thread per unit that picks the next operation, runs the charm's
//! `dispatch` inside the unit's machine, and commits or discards; plus the per-unit hook-tool
//! server.
//!
//! Owns: [`Shared`] (the model lock and its condition variable), the agent loop
//! ([`spawn_agent`]), hook process execution, the failure/retry bookkeeping, and
//! [`ToolServer`]; it applies the faults of `crate::faults` where they strike (a tool call
//! served, a hook process waited for).
//!
//! Invariants:
//! * one operation at a time per unit; units run concurrently;
//! * the model lock is never held while a charm process runs, only while choosing, preparing,
//!   serving one tool call, and finishing;
//! * every change to the model is followed by `cond.notify_all()` so waiters re-check;
//! * a hook's context is reachable by its tool calls only while the hook runs (a call with any
//!   other context id gets `error: ...`, exit 1, like a Juju tool whose socket is gone).
//!
//! Hazards: the agent thread lives inside the unit's mount namespace; it must not touch host
//! paths hidden by the per-unit mounts (it only uses the run dir under the state root). The
//! stdout/stderr readers of a hook may outlive it when the hook leaves background processes
//! holding the pipes: output is collected for 100 ms after exit, like Juju.

use crate::context::{self, HookContext, UnitEnv};
use crate::faults::{self, Watch};
use crate::machine::Machine;
use crate::model::{
    self, app_of, ActionStatus, AgentStatus, FailedOp, Life, Outcome, ToolCall, World,
};
use crate::resolver::{self, HookKind, Next, Op};
use crate::tools::{self, Caller, ToolResult};
use crate::wire::{self, Request, Response};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors starting agent pieces.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("binding tool socket {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("spawning thread: {0}")]
    Thread(std::io::Error),
}

/// State shared by the test thread, agents and tool servers.
#[derive(Debug)]
pub struct Shared {
    pub world: Mutex<World>,
    pub cond: Condvar,
    pub machines: Mutex<BTreeMap<String, Arc<Machine>>>,
    pub servers: Mutex<BTreeMap<String, ToolServer>>,
}

impl Shared {
    /// Lock the model (a panicked holder does not poison it for the rest of the test).
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Wake every waiter.
    pub fn notify(&self) {
        self.cond.notify_all();
    }
}

/// A unit's tool server.
#[derive(Debug)]
pub struct ToolServer {
    pub address: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ToolServer {
    /// Stop accepting and join the accept thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = crate::multicall::connect(&self.address);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ToolServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the tool server for `unit` on the abstract socket `address` (`@...`).
pub fn start_tool_server(
    shared: &Arc<Shared>,
    unit: &str,
    address: &str,
) -> Result<ToolServer, AgentError> {
    let bind_err = |source| AgentError::Bind {
        address: address.to_string(),
        source,
    };
    let name = address.trim_start_matches('@');
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(bind_err)?;
    let listener = UnixListener::bind_addr(&addr).map_err(bind_err)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (shared2, unit2, stop2) = (shared.clone(), unit.to_string(), stop.clone());
    let handle = std::thread::Builder::new()
        .name(format!("tools {unit}"))
        .spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (s, u) = (shared2.clone(), unit2.clone());
                let _ = std::thread::Builder::new()
                    .name(format!("tool call {unit2}"))
                    .spawn(move || serve_connection(&s, &u, stream));
            }
        })
        .map_err(AgentError::Thread)?;
    Ok(ToolServer {
        address: address.to_string(),
        stop,
        handle: Some(handle),
    })
}

fn peer_pid(stream: &UnixStream) -> Option<i32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(stream, PeerCredentials).ok().map(|c| c.pid())
}

fn serve_connection(shared: &Shared, unit: &str, mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let pid = peer_pid(&stream);
    loop {
        let req: Request = match wire::read_frame(&mut stream) {
            Ok(r) => r,
            Err(_) => return,
        };
        let stdin = match req.stdin() {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("error: {e}\n");
                let _ = wire::write_frame(&mut stream, &Response::done(b"", msg.as_bytes(), 1));
                return;
            }
        };
        let caller = Caller {
            pid,
            cwd: req.cwd.clone(),
        };
        let t0 = Instant::now();
        let result = {
            let mut w = shared.lock();
            let ctx = w.units.get_mut(unit).and_then(|u| u.running.take());
            let result = match ctx {
                Some(mut ctx) if ctx.id == req.context_id => {
                    let fault = faults::at_tool_call(&mut w, &ctx, &req.args, pid);
                    let r = match fault {
                        Some(_) => ToolResult::Done {
                            out: vec![],
                            err: faults::SHUT_DOWN.as_bytes().to_vec(),
                            code: 1,
                        },
                        None => tools::run(&mut w, &mut ctx, &req.args, stdin.as_deref(), &caller),
                    };
                    if let ToolResult::Done { code, .. } = &r {
                        ctx.tool_calls.push(ToolCall {
                            args: req.args.clone(),
                            code: *code,
                            fault,
                            stdin_len: stdin.as_ref().map(Vec::len),
                            elapsed: t0.elapsed(),
                        });
                    }
                    if let Some(u) = w.units.get_mut(unit) {
                        u.running = Some(ctx);
                    }
                    r
                }
                other => {
                    if let Some(u) = w.units.get_mut(unit) {
                        u.running = other;
                    }
                    ToolResult::Done {
                        out: vec![],
                        err: format!(
                            "error: bad request: no hook context {:?} running for {unit}\n",
                            req.context_id
                        )
                        .into_bytes(),
                        code: 1,
                    }
                }
            };
            drop(w);
            shared.notify();
            result
        };
        let resp = match result {
            ToolResult::NeedStdin => Response::NeedStdin,
            ToolResult::Done { out, err, code } => Response::done(&out, &err, code),
        };
        let again = matches!(resp, Response::NeedStdin);
        if wire::write_frame(&mut stream, &resp).is_err() || !again {
            return;
        }
    }
}

/// How a charm process ended.
#[derive(Debug)]
enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
    NoHandler,
    SpawnFailed(String),
}

struct ProcessResult {
    exit: Exit,
    stdout: String,
    stderr: String,
}

/// Start the agent thread of `unit`.
pub fn spawn_agent(
    shared: Arc<Shared>,
    unit: String,
    machine: Arc<Machine>,
    uenv: UnitEnv,
) -> Result<JoinHandle<()>, AgentError> {
    std::thread::Builder::new()
        .name(format!("agent {unit}"))
        .spawn(move || agent_main(&shared, &unit, &machine, &uenv))
        .map_err(AgentError::Thread)
}

fn agent_main(shared: &Arc<Shared>, unit: &str, machine: &Machine, uenv: &UnitEnv) {
    if let Err(e) = machine.enter() {
        let mut w = shared.lock();
        if let Some(u) = w.units.get_mut(unit) {
            u.agent_status = AgentStatus::Error(format!("cannot enter machine: {e}"));
        }
        return;
    }
    loop {
        let job = {
            let mut w = shared.lock();
            loop {
                if w.shutdown {
                    return;
                }
                if w.units.get(unit).is_none_or(|u| u.life == Life::Dead) {
                    break None;
                }
                let now = Instant::now();
                match resolver::next(&w, unit, now, true) {
                    Next::Run(op) => break Some(begin(&mut w, unit, op, uenv)),
                    Next::Wait(t) => {
                        let d = t.saturating_duration_since(now).min(Duration::from_secs(1));
                        w = shared
                            .cond
                            .wait_timeout(w, d)
                            .map(|r| r.0)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                    Next::Idle => {
                        w = shared
                            .cond
                            .wait_timeout(w, Duration::from_secs(1))
                            .map(|r| r.0)
                            .unwrap_or_else(|e| e.into_inner().0);
                    }
                }
            }
        };
        shared.notify();
        let Some(mut job) = job else { break };
        let result = match swap_charm(uenv, &job.charm_files) {
            Ok(()) => run_process(uenv, &job.env, &job.name, job.timeout, job.watch.as_mut()),
            Err(e) => ProcessResult {
                exit: Exit::SpawnFailed(format!("swapping charm files: {e}")),
                stdout: String::new(),
                stderr: String::new(),
            },
        };
        let mut w = shared.lock();
        finish(&mut w, unit, result, job.watch.as_ref());
        drop(w);
        shared.notify();
    }
    // The unit is dead: stop its processes and free its machine.
    machine.kill_all(Duration::from_secs(10));
    if let Some(mut s) = shared
        .servers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(unit)
    {
        s.stop();
    }
    shared
        .machines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(unit);
    let mut w = shared.lock();
    if let Some(u) = w.units.get_mut(unit) {
        u.gone = true;
    }
    drop(w);
    shared.notify();
}

/// What the agent runs, prepared under the lock.
struct Job {
    env: BTreeMap<String, String>,
    name: String,
    timeout: Duration,
    /// Charm files to put in place first (upgrade-charm): (relative path, staged host path).
    charm_files: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// Checkpoints where an injected fault kills the process.
    watch: Option<Watch>,
}

/// Replace the unit's charm files (in the unit's view; the agent thread is in it).
fn swap_charm(
    uenv: &UnitEnv,
    files: &[(std::path::PathBuf, std::path::PathBuf)],
) -> std::io::Result<()> {
    for (rel, from) in files {
        let to = std::path::Path::new(&uenv.charm_dir).join(rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p)?;
        }
        let tmp = to.with_extension("juju-sim-new");
        std::fs::copy(from, &tmp)?;
        std::fs::rename(&tmp, &to)?;
    }
    Ok(())
}

/// Start an operation: build its context and mark the unit busy.
fn begin(w: &mut World, unit: &str, op: Op, uenv: &UnitEnv) -> Job {
    if let Op::Action(id) = &op {
        if let Some(u) = w.units.get_mut(unit) {
            u.pending_actions.retain(|a| a != id);
        }
        if let Some(a) = w.actions.get_mut(id) {
            a.status = ActionStatus::Running;
        }
    }
    let mut ctx = context::prepare(w, unit, &op, uenv);
    let watch = faults::attach(w, &mut ctx);
    let name = ctx.hook_name.clone();
    if let Op::Hook(h) = &op {
        let juju_status = match h.kind {
            HookKind::Install => Some(("maintenance", "installing charm software")),
            HookKind::Stop => Some(("maintenance", "stopping charm software")),
            HookKind::Remove => Some(("maintenance", "cleaning up prior to charm deletion")),
            _ => None,
        };
        if let Some((s, m)) = juju_status {
            w.set_unit_status(unit, s, m, "");
        }
    }
    let env = ctx.env.clone();
    let timeout = w.opts.hook_timeout;
    let charm_files = match &op {
        Op::Hook(h) if h.kind == HookKind::UpgradeCharm => w
            .apps
            .get(app_of(unit))
            .and_then(|a| a.charm.as_ref())
            .map(|c| c.files.clone())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    if let Some(u) = w.units.get_mut(unit) {
        if u.error.is_none() {
            u.agent_status = AgentStatus::Executing(name.clone());
        }
        u.running_name = Some(name.clone());
        u.running = Some(ctx);
    }
    Job {
        env,
        name,
        timeout,
        charm_files,
        watch,
    }
}

fn read_all(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
            }
        }
        let _ = done.send(());
    });
}

fn run_process(
    uenv: &UnitEnv,
    env: &BTreeMap<String, String>,
    hook: &str,
    timeout: Duration,
    watch: Option<&mut Watch>,
) -> ProcessResult {
    let dispatch = format!("{}/dispatch", uenv.charm_dir);
    let mut program = dispatch.clone();
    if std::fs::symlink_metadata(&dispatch).is_err() {
        let legacy = format!(
            "{}/{}",
            uenv.charm_dir,
            env.get("JUJU_DISPATCH_PATH")
                .map(String::as_str)
                .unwrap_or(hook)
        );
        if std::fs::symlink_metadata(&legacy).is_err() {
            return ProcessResult {
                exit: Exit::NoHandler,
                stdout: String::new(),
                stderr: String::new(),
            };
        }
        program = legacy;
    }
    let mut cmd = Command::new(&program);
    cmd.current_dir(&uenv.charm_dir)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A charm file swapped in just now (upgrade-charm) can still be open for writing in a
    // child that another agent thread forked meanwhile (the fd is only closed at its exec):
    // exec then fails with ETXTBSY for a moment. Retry briefly, as that window is short.
    let mut spawned = cmd.spawn();
    for _ in 0..50 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = cmd.spawn();
            }
            _ => break,
        }
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return ProcessResult {
                exit: Exit::SpawnFailed(format!("{program}: {e}")),
                stdout: String::new(),
                stderr: String::new(),
            }
        }
    };
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    if let Some(s) = child.stdout.take() {
        read_all(s, out.clone(), done_tx.clone());
    }
    if let Some(s) = child.stderr.take() {
        read_all(s, err.clone(), done_tx.clone());
    }
    drop(done_tx);
    let pid = child.id() as i32;
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let status = match wait_watching(&exit_rx, timeout, watch) {
        Some(s) => Some(s),
        None => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = exit_rx.recv();
            None
        }
    };
    let drain_until = Instant::now() + Duration::from_millis(100);
    for _ in 0..2 {
        let left = drain_until.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let exit = match status {
        None => Exit::TimedOut,
        Some(Err(e)) => Exit::SpawnFailed(format!("waiting for {program}: {e}")),
        Some(Ok(s)) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            _ => Exit::SpawnFailed("unknown exit status".into()),
        },
    };
    let text = |b: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&b.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    ProcessResult {
        exit,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// Waits for the hook's exit up to `timeout` (`None`: timed out), killing it where it
/// parks at a watched checkpoint meanwhile.
fn wait_watching<T>(
    exit: &mpsc::Receiver<T>,
    timeout: Duration,
    watch: Option<&mut Watch>,
) -> Option<T> {
    let Some(watch) = watch else {
        return exit.recv_timeout(timeout).ok();
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match exit.recv_timeout(left.min(Duration::from_millis(10))) {
            Ok(s) => return Some(s),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                watch.poll();
            }
        }
    }
}

/// Retry delay after `attempts` failures.
pub fn backoff(w: &World, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (w.opts.retry_backoff * factor).min(w.opts.retry_backoff_max)
}

/// Finish the running operation of `unit`: commit or discard, record, update statuses.
fn finish(w: &mut World, unit: &str, result: ProcessResult, watch: Option<&Watch>) {
    let Some(ctx) = w.units.get_mut(unit).and_then(|u| {
        u.running_name = None;
        u.running.take()
    }) else {
        return;
    };
    let fault_summary = faults::after_hook(w, &ctx, watch);
    let outcome = match &result.exit {
        Exit::Code(0) | Exit::NoHandler => match model::commit(w, unit, &ctx) {
            Ok(()) => Outcome::Committed,
            Err(e) => Outcome::CommitFailed(e.to_string()),
        },
        Exit::Code(c) => Outcome::Failed {
            exit_code: Some(*c),
        },
        Exit::Signal(_) | Exit::TimedOut => Outcome::Failed { exit_code: None },
        Exit::SpawnFailed(e) => Outcome::SpawnFailed(e.clone()),
    };
    let committed = outcome == Outcome::Committed;
    match &ctx.op {
        Op::Action(id) => finish_action(w, *id, &ctx, &result, &outcome),
        Op::Hook(h) => {
            if committed {
                context::apply_local_effects(w, unit, &ctx);
                let failed_op_done = w
                    .units
                    .get(unit)
                    .and_then(|u| u.error.as_ref())
                    .is_some_and(|f| f.op == ctx.op);
                let charm_set_status = w.units.get(unit).is_some_and(|u| u.charm_set_status);
                if h.kind == HookKind::Start && !charm_set_status {
                    w.set_unit_status(unit, "unknown", "", "");
                }
                if let Some(u) = w.units.get_mut(unit) {
                    if failed_op_done {
                        u.error = None;
                    }
                    if h.kind == HookKind::Remove {
                        u.life = Life::Dead;
                    }
                }
                if h.kind == HookKind::RelationBroken {
                    if let Some(id) = h.relation {
                        retire_relation_if_done(w, id);
                    }
                }
            } else {
                let attempts = w
                    .units
                    .get(unit)
                    .and_then(|u| u.error.as_ref())
                    .filter(|f| f.op == ctx.op)
                    .map(|f| f.attempts)
                    .unwrap_or(0)
                    + 1;
                let retry_at = w
                    .opts
                    .auto_retry
                    .then(|| Instant::now() + backoff(w, attempts));
                if let Some(u) = w.units.get_mut(unit) {
                    u.error = Some(FailedOp {
                        op: ctx.op.clone(),
                        hook: ctx.hook_name.clone(),
                        attempts,
                        retry_at,
                    });
                }
            }
        }
    }
    if let Some(u) = w.units.get_mut(unit) {
        u.agent_status = match &u.error {
            Some(f) => AgentStatus::Error(format!("hook failed: {:?}", f.hook)),
            None => AgentStatus::Idle,
        };
        let mut rec = ctx.record(outcome, result.stdout, result.stderr);
        rec.faults = fault_summary;
        match &result.exit {
            Exit::SpawnFailed(e) => rec.stderr.push_str(e),
            Exit::Signal(sig) => rec.stderr.push_str(&format!("(killed by signal {sig})")),
            Exit::TimedOut => rec.stderr.push_str("(killed: hook timeout)"),
            _ => {}
        }
        u.hooks.push(rec);
    }
    // the lease this hook relied on ends with it
    let app = crate::model::app_of(unit);
    let alive = w.alive_units(app);
    if let Some(a) = w.apps.get_mut(app) {
        if a.leader.as_deref() == Some(unit) {
            if let Some(next) = a.pending_leader.take().filter(|n| alive.contains(n)) {
                a.leader = Some(next);
                a.leadership_version += 1;
            }
        }
    }
    if committed {
        crate::postgres::react(w);
    }
}

fn finish_action(
    w: &mut World,
    id: u64,
    ctx: &HookContext,
    result: &ProcessResult,
    outcome: &Outcome,
) {
    let Some(a) = w.actions.get_mut(&id) else {
        return;
    };
    let run = ctx.action.clone();
    a.results =
        serde_json::Value::Object(run.as_ref().map(|r| r.results.clone()).unwrap_or_default());
    a.stdout = result.stdout.clone();
    a.stderr = result.stderr.clone();
    a.return_code = match &result.exit {
        Exit::Code(c) => Some(*c),
        Exit::NoHandler => Some(0),
        _ => None,
    };
    let fail_msg = run.and_then(|r| r.failed);
    (a.status, a.message) = match outcome {
        Outcome::Committed => match fail_msg {
            Some(m) => (ActionStatus::Failed, m),
            None => (ActionStatus::Completed, String::new()),
        },
        Outcome::Failed { exit_code } => (
            ActionStatus::Failed,
            match exit_code {
                Some(c) => format!("exit status {c}"),
                None => "action terminated".to_string(),
            },
        ),
        Outcome::CommitFailed(e) => {
            a.stderr.push_str(e);
            (
                ActionStatus::Failed,
                "committing requested changes failed".to_string(),
            )
        }
        Outcome::SpawnFailed(e) => (ActionStatus::Failed, e.clone()),
    };
}

/// Mark a dying relation dead once no unit holds local state for it.
pub fn retire_relation_if_done(w: &mut World, id: u32) {
    let held = w
        .units
        .values()
        .any(|u| !u.gone && u.life != Life::Dead && u.local.relations.contains_key(&id));
    if let Some(r) = w.relations.get_mut(&id) {
        if r.life == Life::Dying && !held {
            r.life = Life::Dead;
        }
    }
}
