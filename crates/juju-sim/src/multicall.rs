//! The test executable doubles as every hook tool (and other fakes such as `systemctl`).
//!
//! Owns: the table of tool names, the runtime registry of extra tools, the argv[0] dispatch
//! ([`run_if_tool`]) and the hook-tool client ([`hook_tool_main`]).
//!
//! How it works: a test target that uses the simulator is a `harness = false` target whose
//! `main()` first calls [`run_if_tool`]. The simulator puts, per unit, symlinks named after
//! every hook tool and every registered extra tool into the unit's tools dir, all pointing to a
//! hard link of the test executable. When the charm runs `relation-get`, the test executable
//! starts with argv[0] = `relation-get`, [`run_if_tool`] sees that name and acts as the tool,
//! then exits; it never reaches the tests.
//!
//! Invariants: [`register`] must be called before [`run_if_tool`] and before the first unit is
//! created (the symlinks are made from the registry at unit creation).
//!
//! Hazards: the client must never panic or print anything but the tool's answer: the charm
//! parses its stdout. Transport failures print `error: <msg>` and exit 1, like Juju's `jujuc`.

use crate::wire::{self, Request, Response};
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::Mutex;

/// The hook tools the simulator serves: those of Juju 3.6 machine charms that the charm
/// under test calls (others are absent from the unit's PATH, as an unknown command).
pub const HOOK_TOOLS: &[&str] = &[
    "action-fail",
    "action-get",
    "action-log",
    "action-set",
    "application-version-set",
    "close-port",
    "config-get",
    "goal-state",
    "is-leader",
    "juju-log",
    "network-get",
    "open-port",
    "opened-ports",
    "relation-get",
    "relation-ids",
    "relation-list",
    "relation-set",
    "resource-get",
    "secret-add",
    "secret-get",
    "secret-grant",
    "secret-ids",
    "secret-info-get",
    "secret-set",
    "state-delete",
    "state-get",
    "state-set",
    "status-get",
    "status-set",
    "storage-get",
    "storage-list",
];

/// Entry point of an extra multicall tool: receives the arguments after argv\[0\] (like
/// `fake_systemd::main`), returns the exit code.
pub type ToolMain = fn(&[String]) -> i32;

static EXTRA: Mutex<Vec<(String, ToolMain)>> = Mutex::new(Vec::new());

static EXECUTABLE: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// Serve the tools from `exe` instead of the current executable: a multicall binary that
/// registers the same extra tools (such as `crates/sim-tools`, built small and static so a
/// tool call does not load a whole test binary). Models made afterwards use it.
pub fn set_executable(exe: impl Into<std::path::PathBuf>) {
    *EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(exe.into());
}

/// The executable every tool name links to: the one given to [`set_executable`], else
/// the current executable.
pub fn executable() -> std::io::Result<std::path::PathBuf> {
    match EXECUTABLE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        Some(exe) => Ok(exe),
        None => std::env::current_exe(),
    }
}

/// Register an extra tool (e.g. `register("systemctl", fake_systemd::main)`). A later
/// registration of the same name replaces the earlier one. Hook-tool names cannot be replaced.
pub fn register(name: &str, main: ToolMain) {
    if HOOK_TOOLS.contains(&name) {
        return;
    }
    let mut extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    extra.retain(|(n, _)| n != name);
    extra.push((name.to_string(), main));
}

/// Names of the registered extra tools.
pub fn registered() -> Vec<String> {
    let extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    extra.iter().map(|(n, _)| n.clone()).collect()
}

fn lookup(name: &str) -> Option<ToolMain> {
    let extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    extra.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
}

/// If this process was started as a tool (argv[0]'s file name is a hook tool or a registered
/// tool), run it and exit the process; otherwise return and let the caller run its tests.
pub fn run_if_tool() {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(argv0) = args.first() else { return };
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if HOOK_TOOLS.contains(&name.as_str()) {
        std::process::exit(hook_tool_main(&name, &args[1..]));
    }
    if let Some(main) = lookup(&name) {
        std::process::exit(main(&args[1..]));
    }
}

/// The hook-tool client: forward argv, cwd, `JUJU_CONTEXT_ID` and (on request) stdin to the
/// unit's tool server, print its answer, return its exit code.
pub fn hook_tool_main(tool: &str, args: &[String]) -> i32 {
    match client_round_trip(tool, args) {
        Ok((out, err, code)) => {
            let _ = std::io::stdout().write_all(&out);
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().write_all(&err);
            code
        }
        Err(msg) => {
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            1
        }
    }
}

type Answer = (Vec<u8>, Vec<u8>, i32);

fn client_round_trip(tool: &str, args: &[String]) -> Result<Answer, String> {
    let context_id =
        std::env::var("JUJU_CONTEXT_ID").map_err(|_| "JUJU_CONTEXT_ID not set".to_string())?;
    let network = std::env::var("JUJU_AGENT_SOCKET_NETWORK").unwrap_or_else(|_| "unix".into());
    if network != "unix" {
        return Err(format!("unsupported agent socket network {network:?}"));
    }
    let address = std::env::var("JUJU_AGENT_SOCKET_ADDRESS")
        .map_err(|_| "JUJU_AGENT_SOCKET_ADDRESS not set".to_string())?;
    let mut stream = connect(&address).map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    let mut req = Request {
        context_id,
        cwd,
        args: std::iter::once(tool.to_string())
            .chain(args.iter().cloned())
            .collect(),
        stdin_b64: None,
    };
    loop {
        wire::write_frame(&mut stream, &req).map_err(|e| e.to_string())?;
        match wire::read_frame::<Response>(&mut stream).map_err(|e| e.to_string())? {
            Response::NeedStdin if req.stdin_b64.is_none() => {
                let mut input = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut input)
                    .map_err(|e| format!("reading stdin: {e}"))?;
                req.stdin_b64 = Some(wire::encode(&input));
            }
            Response::NeedStdin => return Err("server asked for stdin twice".into()),
            Response::Done {
                stdout_b64,
                stderr_b64,
                code,
            } => {
                let out = wire::decode(&stdout_b64).map_err(|e| e.to_string())?;
                let err = wire::decode(&stderr_b64).map_err(|e| e.to_string())?;
                return Ok((out, err, code));
            }
        }
    }
}

/// Connect to `@name` (abstract) or a filesystem path.
pub fn connect(address: &str) -> std::io::Result<UnixStream> {
    match address.strip_prefix('@') {
        Some(name) => {
            let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
            UnixStream::connect_addr(&addr)
        }
        None => UnixStream::connect(address),
    }
}
