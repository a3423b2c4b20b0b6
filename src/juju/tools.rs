//! The hook-tool primitive: run one tool, keep everything needed to explain a failure.
//!
//! Owns: spawning hook tools (`ProcessRunner`), the `ToolError` type, the one function
//! that maps Juju's exit codes and stderr text to error kinds (`classify`), and the
//! process's register of secret values ([`register_secret`], [`scrub`]).
//! Invariants: no shell is involved (argv is passed as is); bulk data and secrets go
//! on stdin or in 0600 files, never in argv, because `ToolError` keeps argv for logs;
//! the one exception (`action-set` of the admin password: Juju takes results only as
//! arguments) redacts its values in its errors ([`ToolError::redacted`]); every value
//! registered as secret is replaced by `<redacted>` in tool errors, `juju-log` lines and
//! statuses ([`scrub`]), whatever path carried it there.
//! Hazards: hook tools only work while the hook runs; never call them from a process
//! that may outlive the hook.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// What replaces a secret in messages.
pub const REDACTED: &str = "<redacted>";

/// Secret values this process has seen (`config::Secret::new` registers them).
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Shortest value registered: shorter ones would redact ordinary words.
const MIN_SECRET_LEN: usize = 6;

/// Registers a secret value so that [`scrub`] removes it from messages.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
        // Longest first, so a secret containing another is replaced whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn scrub(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    out
}

/// What kind of refusal a failed tool call was, from Juju's exit code and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `relation not found`: the relation is gone or not in this unit's context.
    RelationNotFound,
    /// `not the leader` / `cannot write relation settings`: leadership required.
    NotLeader,
    /// `permission denied`.
    PermissionDenied,
    /// A secret or other named thing does not exist.
    NotFound,
    /// An action tool was called outside an action.
    NotRunningAction,
    /// Exit 2: Juju rejected the arguments (a bug in the charm).
    Usage,
    /// `error: ...` with exit 1: no hook context (socket gone, called outside a hook).
    Transport,
    /// Any other runtime refusal (exit 1).
    Refused,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::RelationNotFound => "relation not found",
            FailureKind::NotLeader => "not the leader",
            FailureKind::PermissionDenied => "permission denied",
            FailureKind::NotFound => "not found",
            FailureKind::NotRunningAction => "not running an action",
            FailureKind::Usage => "usage error",
            FailureKind::Transport => "no hook context",
            FailureKind::Refused => "refused",
        })
    }
}

/// A failed hook-tool call. `argv` never holds secrets (see module docs).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run hook tool `{argv}`; is dispatch running inside a Juju hook?")]
    Spawn {
        argv: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hook tool `{argv}` failed ({kind}, exit code {code}): {stderr}")]
    Failed {
        argv: String,
        code: i32,
        stderr: String,
        kind: FailureKind,
    },
    #[error("hook tool `{argv}` printed output the charm cannot parse: {why}")]
    BadOutput { argv: String, why: String },
}

impl ToolError {
    /// The failure kind, when the tool ran and refused.
    pub fn kind(&self) -> Option<FailureKind> {
        match self {
            ToolError::Failed { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    pub fn is(&self, kind: FailureKind) -> bool {
        self.kind() == Some(kind)
    }

    /// The error with `values` (and every registered secret) replaced by [`REDACTED`] in
    /// its argv and stderr: for tools that had to take a secret as an argument.
    pub fn redacted(self, values: &[&str]) -> ToolError {
        let clean = |s: String| {
            let mut s = scrub(&s);
            for v in values.iter().filter(|v| v.len() >= MIN_SECRET_LEN) {
                s = s.replace(v, REDACTED);
            }
            s
        };
        match self {
            ToolError::Spawn { argv, source } => ToolError::Spawn {
                argv: clean(argv),
                source,
            },
            ToolError::Failed {
                argv,
                code,
                stderr,
                kind,
            } => ToolError::Failed {
                argv: clean(argv),
                code,
                stderr: clean(stderr),
                kind,
            },
            ToolError::BadOutput { argv, why } => ToolError::BadOutput {
                argv: clean(argv),
                why: clean(why),
            },
        }
    }
}

/// The single place where Juju's stderr text is interpreted.
pub fn classify(code: i32, stderr: &str) -> FailureKind {
    let s = stderr.to_ascii_lowercase();
    if s.contains("relation not found") {
        FailureKind::RelationNotFound
    } else if s.contains("not the leader")
        || s.contains("cannot write relation settings")
        || s.contains("cannot write leadership settings")
    {
        FailureKind::NotLeader
    } else if s.contains("permission denied") {
        FailureKind::PermissionDenied
    } else if s.contains("not running an action") {
        FailureKind::NotRunningAction
    } else if s.contains("not found") {
        FailureKind::NotFound
    } else if code == 2 {
        FailureKind::Usage
    } else if s.trim_start().starts_with("error:") {
        FailureKind::Transport
    } else {
        FailureKind::Refused
    }
}

/// Formats argv for messages (tool name first, arguments space separated).
pub fn format_argv(tool: &str, args: &[String]) -> String {
    std::iter::once(tool)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs hook tools. The charm uses `ProcessRunner`; unit tests use a recording fake.
pub trait ToolRunner {
    /// Runs `tool args...` with `stdin` (or an empty stdin) and returns its stdout.
    fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>, ToolError>;
}

/// Spawns the real tool found on `PATH` (Juju puts its tools dir first).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

impl ToolRunner for ProcessRunner {
    fn run(&self, tool: &str, args: &[String], stdin: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
        let spawn_err = |source| ToolError::Spawn {
            argv: format_argv(tool, args),
            source,
        };
        let mut child = Command::new(tool)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status tells the story.
            let _ = pipe.write_all(data);
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let code = out.status.code().unwrap_or(-1);
        Err(ToolError::Failed {
            argv: format_argv(tool, args),
            code,
            kind: classify(code, &stderr),
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_known_juju_messages() {
        let cases = [
            (
                2,
                "ERROR invalid value \"peers:9\" for option -r: relation not found",
                FailureKind::RelationNotFound,
            ),
            (
                1,
                "ERROR cannot write relation settings",
                FailureKind::NotLeader,
            ),
            (
                1,
                "ERROR this unit is not the leader",
                FailureKind::NotLeader,
            ),
            (1, "ERROR permission denied", FailureKind::PermissionDenied),
            (
                1,
                "ERROR secret \"secret:abc\" not found",
                FailureKind::NotFound,
            ),
            (
                1,
                "ERROR not running an action",
                FailureKind::NotRunningAction,
            ),
            (
                2,
                "ERROR flag provided but not defined: -x",
                FailureKind::Usage,
            ),
            (1, "error: JUJU_CONTEXT_ID not set", FailureKind::Transport),
            (1, "ERROR something else", FailureKind::Refused),
        ];
        for (code, stderr, kind) in cases {
            assert_eq!(classify(code, stderr), kind, "{stderr}");
        }
    }

    #[test]
    fn registered_secrets_and_given_values_are_redacted() {
        register_secret("s3cret-registered");
        register_secret("tiny");
        assert_eq!(scrub("a s3cret-registered b tiny"), "a <redacted> b tiny");
        let e = ToolError::Failed {
            argv: "action-set password=hunter22 other=s3cret-registered".into(),
            code: 1,
            stderr: "ERROR bad password=hunter22".into(),
            kind: FailureKind::Refused,
        }
        .redacted(&["hunter22"]);
        let text = e.to_string();
        assert!(
            !text.contains("hunter22") && !text.contains("s3cret-registered"),
            "{text}"
        );
        assert!(text.contains("action-set password=<redacted>"), "{text}");
    }

    #[test]
    fn process_runner_keeps_argv_code_and_stderr() {
        let err = ProcessRunner
            .run(
                "sh",
                &[
                    "-c".into(),
                    "echo 'ERROR permission denied' >&2; exit 1".into(),
                ],
                None,
            )
            .unwrap_err();
        match &err {
            ToolError::Failed {
                argv,
                code,
                stderr,
                kind,
            } => {
                assert!(argv.starts_with("sh -c"));
                assert_eq!(*code, 1);
                assert_eq!(stderr, "ERROR permission denied");
                assert_eq!(*kind, FailureKind::PermissionDenied);
            }
            other => panic!("unexpected {other:?}"),
        }
        let out = ProcessRunner
            .run("sh", &["-c".into(), "cat".into()], Some(b"{\"a\":\"b\"}"))
            .unwrap();
        assert_eq!(out, b"{\"a\":\"b\"}");
        let err = ProcessRunner
            .run("no-such-hook-tool-xyz", &[], None)
            .unwrap_err();
        assert!(matches!(err, ToolError::Spawn { .. }));
        assert!(err.to_string().contains("no-such-hook-tool-xyz"));
    }
}
