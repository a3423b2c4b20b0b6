//! Per-scenario budgets of hook-tool calls per hook. Every hook-tool call is a round trip
//! to the unit agent in real Juju, so call counts are behaviour: a scenario states the
//! most calls one hook may make (a default, overridden by hook name), optionally the most
//! on average, and [`CallBudget::check`] fails naming every hook over it. `juju-log` and
//! `action-log` are not counted (they log; they read or change nothing in the model).
//!
//! Owns nothing but the arithmetic; the hooks come from [`crate::Model::hooks`].

use crate::model::HookRecord;

/// The most hook-tool calls per hook a scenario allows.
#[derive(Debug, Clone)]
pub struct CallBudget {
    default_max: usize,
    /// (hook name, or a prefix ending in `*`; max calls), first match wins.
    per_hook: Vec<(String, usize)>,
    mean_max: Option<f64>,
}

/// What [`CallBudget::check`] measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetReport {
    pub hooks: usize,
    pub calls: usize,
    pub max: usize,
    pub mean: f64,
}

impl CallBudget {
    /// At most `max` calls in any hook.
    pub fn per_hook(max: usize) -> CallBudget {
        CallBudget {
            default_max: max,
            per_hook: Vec::new(),
            mean_max: None,
        }
    }

    /// At most `max` calls in hooks named `name` (`peers-relation-*` matches a prefix).
    pub fn hook(mut self, name: &str, max: usize) -> CallBudget {
        self.per_hook.push((name.to_string(), max));
        self
    }

    /// At most `max` calls per hook on average.
    pub fn mean(mut self, max: f64) -> CallBudget {
        self.mean_max = Some(max);
        self
    }

    /// The most calls a hook named `hook` may make.
    pub fn limit_for(&self, hook: &str) -> usize {
        self.per_hook
            .iter()
            .find(|(n, _)| match n.strip_suffix('*') {
                Some(prefix) => hook.starts_with(prefix),
                None => hook == n,
            })
            .map_or(self.default_max, |(_, m)| *m)
    }

    /// The calls of `h` that count (all but logging).
    pub fn counted(h: &HookRecord) -> usize {
        h.tool_calls
            .iter()
            .filter(|c| {
                !matches!(
                    c.args.first().map(String::as_str),
                    Some("juju-log" | "action-log")
                )
            })
            .count()
    }

    /// Checks `(unit, hook)` pairs against the budget; the error lists every hook over it
    /// (with its calls by tool) and the mean when that is over.
    pub fn check<'a>(
        &self,
        hooks: impl IntoIterator<Item = (&'a str, &'a HookRecord)>,
    ) -> Result<BudgetReport, String> {
        let mut report = BudgetReport::default();
        let mut over = Vec::new();
        for (unit, h) in hooks {
            let n = Self::counted(h);
            report.hooks += 1;
            report.calls += n;
            report.max = report.max.max(n);
            let limit = self.limit_for(&h.name);
            if n > limit {
                over.push(format!(
                    "{unit} {} at {:.1}s: {n} calls > {limit} {:?}",
                    h.name,
                    h.started.as_secs_f64(),
                    by_tool(h)
                ));
            }
        }
        report.mean = report.calls as f64 / report.hooks.max(1) as f64;
        if let Some(m) = self.mean_max.filter(|m| report.mean > *m) {
            over.push(format!(
                "mean {:.2} calls per hook > {m} over {} hooks",
                report.mean, report.hooks
            ));
        }
        if over.is_empty() {
            Ok(report)
        } else {
            Err(format!("over the call budget:\n{}", over.join("\n")))
        }
    }
}

/// Counted calls of a hook by tool name.
fn by_tool(h: &HookRecord) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for c in &h.tool_calls {
        if let Some(t) = c.args.first() {
            *m.entry(t.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Outcome, ToolCall};
    use std::time::Duration;

    fn hook(name: &str, tools: &[&str]) -> HookRecord {
        HookRecord {
            name: name.into(),
            env: Default::default(),
            context_id: String::new(),
            started: Duration::ZERO,
            duration: Duration::ZERO,
            outcome: Outcome::Committed,
            tool_calls: tools
                .iter()
                .map(|t| ToolCall {
                    args: vec![t.to_string()],
                    code: 0,
                    fault: None,
                    stdin_len: None,
                    elapsed: Duration::ZERO,
                })
                .collect(),
            stdout: String::new(),
            stderr: String::new(),
            faults: String::new(),
        }
    }

    #[test]
    fn hooks_over_their_limit_fail_and_logging_is_free() {
        let b = CallBudget::per_hook(3)
            .hook("update-status", 2)
            .hook("peers-relation-*", 4);
        let ok = hook("update-status", &["config-get", "is-leader", "juju-log"]);
        let over = hook("update-status", &["config-get", "is-leader", "status-set"]);
        let rel = hook("peers-relation-changed", &["a", "b", "c", "d"]);
        let r = b.check([("u/0", &ok), ("u/0", &rel)]).unwrap();
        assert_eq!((r.hooks, r.calls, r.max), (2, 6, 4));
        let e = b.check([("u/1", &over)]).unwrap_err();
        assert!(e.contains("u/1 update-status at 0.0s: 3 calls > 2"), "{e}");
        assert_eq!(b.limit_for("install"), 3);
    }

    #[test]
    fn a_mean_over_its_limit_fails() {
        let b = CallBudget::per_hook(10).mean(2.0);
        let a = hook("x", &["a"]);
        let c = hook("x", &["a", "b", "c", "d"]);
        assert!(b.check([("u/0", &a), ("u/0", &a)]).is_ok());
        let e = b.check([("u/0", &a), ("u/0", &c)]).unwrap_err();
        assert!(e.contains("mean 2.50"), "{e}");
    }
}
