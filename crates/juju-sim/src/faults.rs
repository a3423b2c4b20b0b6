//! Fault injection: a hook-tool call that fails as it does when the unit agent lost its
//! controller connection, a hook killed at its Nth tool call, and a hook killed where the
//! charm parks at one of its named crash checkpoints.
//!
//! What is reproduced: when the agent's API connection drops, a hook tool that needs the
//! controller fails with the RPC layer's `connection is shut down` (juju/juju
//! `rpc/client.go`, `ErrShutdown`), printed by the tool's `Main` as `ERROR <message>` with
//! exit code 1 (`github.com/juju/cmd` `cmd.go`); the call has no effect. A hook process
//! that is killed (machine reboot, OOM killer, an operator) fails and is run again
//! (juju/juju `worker/uniter/operation/runhook.go`: `ErrTerminated`). A charm that parks at
//! a named checkpoint (`<var>=<name>[,<name>…]@<dir>`: it writes its pid to
//! `<dir>/<name>`, once per directory, and sleeps) is killed there, so a crash lands
//! exactly at that point instead of at a guessed time.
//!
//! Owns: [`Fault`], the armed faults in `World::faults` and what became of them
//! ([`FaultRecord`]). Invariants: a fault applies to hooks (or actions) of one unit for
//! which its filter, evaluated under the model lock when the hook's context is prepared,
//! holds; a tool-call fault is used up by the first such hook (fired, or missed when the
//! hook made fewer calls); a checkpoint fault is offered to every such hook until each of
//! its checkpoints fired (one checkpoint fault per hook at a time); the kill is SIGKILL of
//! the hook process itself (found from the calling tool's parents), never of the
//! services it started. Hazards: a parked charm holds whatever it held (a lock) until it
//! is killed; the watcher polls every 10 ms.

use crate::context::HookContext;
use crate::model::{Data, World};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the faulted tool call or the killed process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The call fails (`ERROR connection is shut down`, exit 1) and has no effect; the
    /// charm goes on as it decides.
    Fail,
    /// The hook process is killed (SIGKILL) when it makes the call; the call is not served.
    Kill,
}

/// Where a hook is hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The `n`th tool call of the hook (1-based).
    ToolCall { n: usize, kind: FaultKind },
    /// SIGKILL when the charm parks at one of `names`, passed in the environment variable
    /// `var` as `<names>@<dir>` (each name fires once).
    Checkpoint { var: String, names: Vec<String> },
}

/// The hook about to start, for a fault's filter.
pub struct HookStart<'a> {
    pub world: &'a World,
    pub unit: &'a str,
    /// Hook name, or the action's name.
    pub hook: &'a str,
    pub is_action: bool,
}

impl HookStart<'_> {
    /// A committed application databag of relation `rel`.
    pub fn app_bag(&self, rel: u32, app: &str) -> Option<&Data> {
        Some(&self.world.relations.get(&rel)?.app_bags.get(app)?.data)
    }

    /// A committed unit databag of relation `rel`.
    pub fn unit_bag(&self, rel: u32, unit: &str) -> Option<&Data> {
        Some(&self.world.relations.get(&rel)?.unit_bags.get(unit)?.data)
    }
}

/// Decides which hooks a fault applies to.
pub type HookFilter = Arc<dyn Fn(&HookStart) -> bool + Send + Sync>;

/// What a fault did in one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultHit {
    pub hook: String,
    pub context_id: String,
    /// Whether the fault struck (false: the hook ended before it could).
    pub fired: bool,
    /// Tool calls the hook had made before the fault struck, or in all when it missed.
    pub calls: usize,
    /// `call 12 (status-set) failed`, `killed at call 12 (relation-get)`, `killed at
    /// checkpoint install.staged`, `missed: the hook made 9 calls`.
    pub what: String,
}

/// An armed fault and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    pub id: u64,
    pub unit: String,
    pub fault: Fault,
    /// Used up: the tool call was reached or missed, or every checkpoint fired.
    pub done: bool,
    pub hits: Vec<FaultHit>,
}

/// A fault in the model.
pub struct Armed {
    pub record: FaultRecord,
    pub when: HookFilter,
    /// Where the charm writes its checkpoint files (checkpoint faults).
    pub dir: PathBuf,
    /// Checkpoints reached so far (checkpoint faults).
    pub fired: Vec<String>,
    /// The context the fault is attached to now.
    pub active_in: Option<String>,
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Armed")
            .field("record", &self.record)
            .field("dir", &self.dir)
            .field("fired", &self.fired)
            .field("active_in", &self.active_in)
            .finish_non_exhaustive()
    }
}

/// The stderr of a faulted call.
pub const SHUT_DOWN: &str = "ERROR connection is shut down\n";

/// Attaches the faults that apply to the hook whose context was just prepared (under the
/// model lock); returns the checkpoints to watch, if any.
pub fn attach(w: &mut World, ctx: &mut HookContext) -> Option<Watch> {
    let is_action = ctx.hook().is_none();
    let mut tool_taken = false;
    let mut watch = None;
    let mut chosen = Vec::new();
    for (i, a) in w.faults.iter().enumerate() {
        if a.record.done || a.active_in.is_some() || a.record.unit != ctx.unit {
            continue;
        }
        let tool = matches!(a.record.fault, Fault::ToolCall { .. });
        if (tool && tool_taken) || (!tool && watch.is_some()) {
            continue;
        }
        let start = HookStart {
            world: w,
            unit: &ctx.unit,
            hook: &ctx.hook_name,
            is_action,
        };
        if !(a.when)(&start) {
            continue;
        }
        match &a.record.fault {
            Fault::ToolCall { .. } => tool_taken = true,
            Fault::Checkpoint { var, names } => {
                let left: Vec<String> = names
                    .iter()
                    .filter(|n| !a.fired.contains(n))
                    .cloned()
                    .collect();
                let value = format!("{}@{}", left.join(","), a.dir.display());
                ctx.env.insert(var.clone(), value);
                watch = Some(Watch {
                    id: a.record.id,
                    dir: a.dir.clone(),
                    names: left,
                    fired: Vec::new(),
                });
            }
        }
        chosen.push(i);
    }
    for i in chosen {
        w.faults[i].active_in = Some(ctx.id.clone());
    }
    watch
}

/// The fault due at the tool call about to be served in `ctx`, if any: `Some(kind)` once
/// the fault struck (the caller answers with [`SHUT_DOWN`], exit 1). `caller` is the pid of
/// the calling tool process.
pub fn at_tool_call(
    w: &mut World,
    ctx: &HookContext,
    args: &[String],
    caller: Option<i32>,
) -> Option<FaultKind> {
    let n = ctx.tool_calls.len() + 1;
    let armed = w.faults.iter_mut().find(|a| {
        !a.record.done
            && a.active_in.as_deref() == Some(ctx.id.as_str())
            && matches!(a.record.fault, Fault::ToolCall { n: m, .. } if m == n)
    })?;
    let Fault::ToolCall { kind, .. } = armed.record.fault else {
        return None;
    };
    let tool = args.first().map(String::as_str).unwrap_or("?");
    let what = match kind {
        FaultKind::Fail => format!("call {n} ({tool}) failed"),
        FaultKind::Kill => {
            match caller.and_then(hook_process) {
                Some(pid) => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                None => return None,
            }
            format!("killed at call {n} ({tool})")
        }
    };
    armed.record.done = true;
    armed.record.hits.push(FaultHit {
        hook: ctx.hook_name.clone(),
        context_id: ctx.id.clone(),
        fired: true,
        calls: n - 1,
        what,
    });
    Some(kind)
}

/// The hook process a tool process runs under: the ancestor whose parent is this process
/// (the agent spawned it), through any shells in between.
fn hook_process(tool: i32) -> Option<i32> {
    let me = std::process::id() as i32;
    let mut pid = tool;
    for _ in 0..64 {
        let parent = parent_of(pid)?;
        if parent == me {
            return Some(pid);
        }
        if parent <= 1 {
            return None;
        }
        pid = parent;
    }
    None
}

/// The parent pid from `/proc/<pid>/stat` (the field after the parenthesised command).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Checkpoints watched while one hook runs.
#[derive(Debug)]
pub struct Watch {
    id: u64,
    dir: PathBuf,
    names: Vec<String>,
    /// Checkpoints reached (and killed) in this hook.
    pub fired: Vec<String>,
}

impl Watch {
    /// Kills a process parked at a watched checkpoint, if any; true when it did.
    pub fn poll(&mut self) -> bool {
        for name in &self.names {
            if self.fired.contains(name) {
                continue;
            }
            if let Some(pid) = parked_pid(&self.dir.join(name)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                self.fired.push(name.clone());
                return true;
            }
        }
        false
    }
}

/// The pid in a checkpoint file, once the charm wrote it whole (`<pid>\n`).
fn parked_pid(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.strip_suffix('\n')?.trim().parse().ok()
}

/// Records what the faults attached to the finished hook did; returns a summary for its
/// record (empty when no fault applied).
pub fn after_hook(w: &mut World, ctx: &HookContext, watch: Option<&Watch>) -> String {
    let mut summary = Vec::new();
    for a in w.faults.iter_mut() {
        if a.active_in.as_deref() != Some(ctx.id.as_str()) {
            continue;
        }
        a.active_in = None;
        match &a.record.fault {
            Fault::ToolCall { .. } => {
                if !a.record.done {
                    a.record.done = true;
                    a.record.hits.push(FaultHit {
                        hook: ctx.hook_name.clone(),
                        context_id: ctx.id.clone(),
                        fired: false,
                        calls: ctx.tool_calls.len(),
                        what: format!("missed: the hook made {} calls", ctx.tool_calls.len()),
                    });
                }
            }
            Fault::Checkpoint { names, .. } => {
                let fired = watch
                    .filter(|wt| wt.id == a.record.id)
                    .map(|wt| wt.fired.clone())
                    .unwrap_or_default();
                for name in fired {
                    a.record.hits.push(FaultHit {
                        hook: ctx.hook_name.clone(),
                        context_id: ctx.id.clone(),
                        fired: true,
                        calls: ctx.tool_calls.len(),
                        what: format!("killed at checkpoint {name}"),
                    });
                    a.fired.push(name);
                }
                a.record.done = names.iter().all(|n| a.fired.contains(n));
            }
        }
        if let Some(h) = a.record.hits.last().filter(|h| h.context_id == ctx.id) {
            summary.push(format!("fault {}: {}", a.record.id, h.what));
        }
    }
    summary.join("; ")
}
