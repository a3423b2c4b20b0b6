//! The charm's one log path: `tracing` events to `juju-log` (and stderr when debugging).
//!
//! Owns: the `tracing` subscriber installed by `main`. Invariants: every line carries
//! the unit name (`[concourse-ci/1] Downloading v7.14.3`); a failing `juju-log` is
//! reported once on stderr and never fails the hook or logs recursively.
//! Hazards: log messages must never contain secrets; callers log names, not values.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

use super::client::LogLevel;
use super::tools::ToolRunner;

thread_local! {
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// Sends events at or above `min_level` to `juju-log`.
pub struct JujuLogLayer {
    runner: Box<dyn ToolRunner + Send + Sync>,
    prefix: String,
    min_level: Level,
    stderr: bool,
    failed_once: AtomicBool,
}

impl JujuLogLayer {
    pub fn new(
        runner: Box<dyn ToolRunner + Send + Sync>,
        unit: &str,
        min_level: Level,
        stderr: bool,
    ) -> JujuLogLayer {
        JujuLogLayer {
            runner,
            prefix: format!("[{unit}]"),
            min_level,
            stderr,
            failed_once: AtomicBool::new(false),
        }
    }

    /// The juju-log level for a tracing level.
    pub fn juju_level(level: &Level) -> LogLevel {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warning,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }

    fn emit(&self, level: &Level, line: &str) {
        let line = &super::tools::scrub(line);
        if self.stderr {
            eprintln!("{} {line}", level);
        }
        if *level > self.min_level {
            return;
        }
        let reentered = IN_LOG.with(|f| f.replace(true));
        if reentered {
            return;
        }
        let args = [
            "--log-level".to_string(),
            Self::juju_level(level).as_str().to_string(),
            "--".to_string(),
            line.to_string(),
        ];
        if let Err(e) = self.runner.run("juju-log", &args, None) {
            if !self.failed_once.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "juju-log failed, logging to stderr only: {}",
                    crate::error_chain(&e)
                );
            }
            if !self.stderr {
                eprintln!("{} {line}", level);
            }
        }
        IN_LOG.with(|f| f.set(false));
    }
}

#[derive(Default)]
struct Message {
    text: String,
    fields: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for JujuLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let level = event.metadata().level();
        if *level > self.min_level && !self.stderr {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        self.emit(level, &format!("{} {}{}", self.prefix, m.text, m.fields));
    }
}

/// Installs the charm's subscriber for this process. Debug events reach juju-log
/// only in debug sessions (`JUJU_DEBUG`), where everything is also echoed to stderr.
pub fn init(runner: Box<dyn ToolRunner + Send + Sync>, unit: &str, debug: bool) {
    let min = if debug { Level::DEBUG } else { Level::INFO };
    let layer = JujuLogLayer::new(runner, unit, min, debug);
    let subscriber = tracing_subscriber::registry().with(layer);
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::tools::ToolError;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Rec(Arc<Mutex<Vec<Vec<String>>>>, bool);
    impl ToolRunner for Rec {
        fn run(&self, tool: &str, args: &[String], _: Option<&[u8]>) -> Result<Vec<u8>, ToolError> {
            let mut v = vec![tool.to_string()];
            v.extend(args.iter().cloned());
            self.0.lock().unwrap().push(v);
            // A logging call inside the runner must not recurse into juju-log.
            tracing::error!("inner event while logging");
            if self.1 {
                return Err(ToolError::Failed {
                    argv: "juju-log".into(),
                    code: 1,
                    stderr: "error: no context".into(),
                    kind: crate::juju::tools::FailureKind::Transport,
                });
            }
            Ok(Vec::new())
        }
    }

    #[test]
    fn levels_prefix_and_filter() {
        let rec = Rec::default();
        let layer = JujuLogLayer::new(Box::new(rec.clone()), "concourse-ci/1", Level::INFO, false);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("Waiting for binaries...");
            tracing::warn!(version = "7.14.3", "slow download");
            tracing::error!("boom");
            tracing::debug!("hidden");
        });
        let calls = rec.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(
            calls[0],
            vec![
                "juju-log",
                "--log-level",
                "INFO",
                "--",
                "[concourse-ci/1] Waiting for binaries..."
            ]
        );
        assert_eq!(calls[1][2], "WARNING");
        assert_eq!(calls[1][4], "[concourse-ci/1] slow download version=7.14.3");
        assert_eq!(calls[2][2], "ERROR");
    }

    #[test]
    fn failing_juju_log_does_not_recurse_or_panic() {
        let rec = Rec(Arc::default(), true);
        let layer = JujuLogLayer::new(Box::new(rec.clone()), "u/0", Level::DEBUG, false);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::info!("one");
            tracing::info!("two");
        });
        // exactly one juju-log attempt per event; the inner error event was swallowed
        assert_eq!(rec.0.lock().unwrap().len(), 2);
    }

    #[test]
    fn an_error_chain_holding_a_secret_is_logged_without_it() {
        let pw = crate::config::Secret::new("db-pw-in-a-chain-7c1e");
        let rec = Rec::default();
        let layer = JujuLogLayer::new(Box::new(rec.clone()), "u/0", Level::INFO, false);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::error!("hook failed: cannot connect: password {}", pw.expose());
        });
        let calls = rec.0.lock().unwrap().clone();
        assert_eq!(
            calls[0][4],
            "[u/0] hook failed: cannot connect: password <redacted>"
        );
    }
}
