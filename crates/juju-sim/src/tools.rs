//! Hook tools, served against a live [`HookContext`], as Juju's `jujuc` commands behave
//! (juju/juju `worker/uniter/runner/jujuc/<tool>.go`).
//!
//! Owns: argument parsing per tool (via `flags.rs`), the permission and leadership checks, the
//! read paths (own local copy, cross-hook remote cache, per-hook cache), buffering of
//! transactional writes, immediate effects (status, logs, application version),
//! and output formatting with Juju's exit codes: 0 success, 1 refusal while running (`ERROR
//! ...`), 2 usage error (`ERROR ...`).
//!
//! Invariants: a tool call never panics on any argv or stdin; it only touches the model
//! through the lock its caller holds; transactional writes go to the context only.
//!
//! Hazards: files named by the charm (`--file PATH`, `key#file=PATH`, `-o FILE`) are in the
//! unit's filesystem view; they are reached through `/proc/<client pid>/root`.

use crate::context::{HookContext, SecretOp};
use crate::flags::{self, boolean, value, Flag, Parsed};
use crate::format::{render, Format};
use crate::model::{
    app_of, is_unit_name, Data, Grant, LogRecord, SecretOwner, StatusRecord, World,
};
use crate::ports::{self, PortRange};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How a tool call failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Refused while running (exit 1).
    #[error("{0}")]
    Refused(String),
    /// The tool needs the client's stdin.
    #[error("stdin required")]
    NeedStdin,
}

use ToolError::{Refused, Usage};

/// Who called: the client's pid (for its filesystem view) and cwd.
#[derive(Debug, Clone)]
pub struct Caller {
    pub pid: Option<i32>,
    pub cwd: String,
}

impl Caller {
    /// Host path of `path` as the caller sees it.
    pub fn host_path(&self, path: &str) -> PathBuf {
        let abs = if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            PathBuf::from(&self.cwd).join(path)
        };
        match self.pid {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root"))
                .join(abs.strip_prefix("/").unwrap_or(&abs)),
            None => abs,
        }
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, ToolError> {
        std::fs::read(self.host_path(path)).map_err(|e| Refused(format!("open {path}: {e}")))
    }
}

/// What a tool call produced.
#[derive(Debug)]
pub enum ToolResult {
    NeedStdin,
    Done {
        out: Vec<u8>,
        err: Vec<u8>,
        code: i32,
    },
}

type Out = Result<Vec<u8>, ToolError>;

/// Run one tool call. `args[0]` is the tool name.
pub fn run(
    w: &mut World,
    ctx: &mut HookContext,
    args: &[String],
    stdin: Option<&[u8]>,
    caller: &Caller,
) -> ToolResult {
    let Some(tool) = args.first() else {
        return ToolResult::Done {
            out: vec![],
            err: b"ERROR no command\n".to_vec(),
            code: 2,
        };
    };
    let rest = &args[1..];
    let t = Tool {
        w,
        ctx,
        stdin,
        caller,
    };
    match t.dispatch(tool, rest) {
        Ok(out) => ToolResult::Done {
            out,
            err: vec![],
            code: 0,
        },
        Err(ToolError::NeedStdin) => ToolResult::NeedStdin,
        Err(Usage(m)) => ToolResult::Done {
            out: vec![],
            err: format!("ERROR {m}\n").into_bytes(),
            code: 2,
        },
        Err(Refused(m)) => ToolResult::Done {
            out: vec![],
            err: format!("ERROR {m}\n").into_bytes(),
            code: 1,
        },
    }
}

const FORMAT: [Flag; 2] = [value(&["format"]), value(&["o", "output"])];
const REL: Flag = value(&["r", "relation"]);

fn spec(extra: &[Flag], formatted: bool) -> Vec<Flag> {
    let mut v = extra.to_vec();
    if formatted {
        v.extend_from_slice(&FORMAT);
    }
    v
}

fn max_positionals(p: &Parsed, n: usize) -> Result<(), ToolError> {
    if p.positionals.len() > n {
        return Err(Usage(flags::unrecognized(&p.positionals[n..])));
    }
    Ok(())
}

fn key_values(items: &[String]) -> Result<Vec<(String, String)>, ToolError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in items {
        let Some((k, v)) = a.split_once('=') else {
            return Err(Usage(format!("expected \"key=value\", got {a:?}")));
        };
        if k.is_empty() {
            return Err(Usage(format!("expected \"key=value\", got {a:?}")));
        }
        if out.iter().any(|(x, _)| x == k) {
            return Err(Usage(format!("duplicate key specified: {k:?}")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn yaml_string_map(bytes: &[u8]) -> Result<Vec<(String, String)>, ToolError> {
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| Refused(format!("cannot parse settings: {e}")))?;
    let Some(map) = v.as_mapping() else {
        if v.is_null() {
            return Ok(vec![]);
        }
        return Err(Refused("cannot parse settings: expected a map".into()));
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(k) = k.as_str() else {
            return Err(Refused(
                "cannot parse settings: keys must be strings".into(),
            ));
        };
        let v = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Null => String::new(),
            other => {
                return Err(Refused(format!(
                    "cannot parse settings: expected string value for key {k:?}, got {}",
                    serde_yaml::to_string(other).unwrap_or_default().trim()
                )))
            }
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

/// Merge settings into a map; an empty value deletes the key.
fn merge(map: &mut Data, pairs: Vec<(String, String)>) {
    for (k, v) in pairs {
        if v.is_empty() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
}

fn data_value(d: &Data) -> Value {
    Value::Object(d.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn status_value(s: &StatusRecord) -> Value {
    json!({
        "status": s.status,
        "message": s.message,
        "status-data": Value::Object(s.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
    })
}

struct Tool<'a> {
    w: &'a mut World,
    ctx: &'a mut HookContext,
    stdin: Option<&'a [u8]>,
    caller: &'a Caller,
}

impl Tool<'_> {
    fn parse(&self, spec: &[Flag], args: &[String]) -> Result<Parsed, ToolError> {
        flags::parse(spec, args).map_err(Usage)
    }

    fn emit(&self, p: &Parsed, v: Value) -> Out {
        let fmt = Format::parse(p.value("format")).map_err(Usage)?;
        let text = render(&v, fmt);
        if let Some(path) = p.value("o").filter(|s| !s.is_empty()) {
            std::fs::write(self.caller.host_path(path), text.as_bytes())
                .map_err(|e| Refused(format!("cannot write {path}: {e}")))?;
            return Ok(vec![]);
        }
        Ok(text.into_bytes())
    }

    /// Settings from `--file PATH|-` (a YAML map of strings) then `key=value` arguments,
    /// which override the file.
    fn settings(&self, p: &Parsed) -> Result<Vec<(String, String)>, ToolError> {
        let cli = key_values(&p.positionals)?;
        let mut pairs = match p.value("file") {
            Some(path) => yaml_string_map(&self.stdin_or_file(path)?)?,
            None => vec![],
        };
        pairs.extend(cli);
        Ok(pairs)
    }

    fn stdin_or_file(&self, path: &str) -> Result<Vec<u8>, ToolError> {
        if path == "-" {
            return self.stdin.map(<[u8]>::to_vec).ok_or(ToolError::NeedStdin);
        }
        self.caller.read(path)
    }

    fn is_leader(&self) -> bool {
        self.w.is_leader(&self.ctx.unit)
    }

    /// The relation named by `-r` (or the hook's relation).
    fn relation(&self, p: &Parsed) -> Result<u32, ToolError> {
        match p.value("r") {
            Some(v) => {
                let bad = |why: &str| Usage(format!("invalid value {v:?} for option -r: {why}"));
                let num = v.rsplit(':').next().unwrap_or(v);
                let id: u32 = num.parse().map_err(|_| bad("invalid relation id"))?;
                if self.ctx.members.contains_key(&id) {
                    Ok(id)
                } else {
                    Err(bad("relation not found"))
                }
            }
            None => self
                .ctx
                .relation
                .ok_or_else(|| Usage("no relation id specified".into())),
        }
    }

    fn dispatch(mut self, tool: &str, args: &[String]) -> Out {
        match tool {
            "relation-ids" => self.relation_ids(args),
            "relation-list" => self.relation_list(args),
            "relation-get" => self.relation_get(args),
            "relation-set" => self.relation_set(args),
            "config-get" => self.config_get(args),
            "is-leader" => self.is_leader_tool(args),
            "status-set" => self.status_set(args),
            "status-get" => self.status_get(args),
            "action-get" => self.action_get(args),
            "action-set" => self.action_set(args),
            "action-fail" => self.action_fail(args),
            "action-log" => self.action_log(args),
            "juju-log" => self.juju_log(args),
            "storage-list" => self.storage_list(args),
            "storage-get" => self.storage_get(args),
            "application-version-set" => self.app_version_set(args),
            "open-port" => self.port(args, true),
            "close-port" => self.port(args, false),
            "opened-ports" => self.opened_ports(args),
            "network-get" => self.network_get(args),
            "secret-add" => self.secret_add(args),
            "secret-get" => self.secret_get(args),
            "secret-info-get" => self.secret_info_get(args),
            "secret-set" => self.secret_set(args),
            "secret-grant" => self.secret_grant(args),
            "secret-ids" => self.secret_ids(args),
            "state-get" => self.state_get(args),
            "state-set" => self.state_set(args),
            "state-delete" => self.state_delete(args),
            "resource-get" => self.resource_get(args),
            "goal-state" => self.goal_state(args),
            other => Err(Refused(format!("unknown command {other:?}"))),
        }
    }

    // ----- relations -----

    fn relation_ids(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 1)?;
        let name = match p.positionals.first() {
            Some(n) => n.clone(),
            None => {
                let hook_ep = self
                    .ctx
                    .relation
                    .and_then(|r| self.w.relations.get(&r))
                    .and_then(|r| r.end_of(&self.ctx.app))
                    .map(|e| e.endpoint.clone());
                hook_ep.ok_or_else(|| Usage("no endpoint name specified".into()))?
            }
        };
        let mut ids: Vec<String> = self
            .ctx
            .members
            .keys()
            .filter_map(|id| self.w.relations.get(id))
            .filter(|r| r.end_of(&self.ctx.app).is_some_and(|e| e.endpoint == name))
            .map(|r| r.key_for(&self.ctx.app))
            .collect();
        ids.sort();
        self.emit(&p, json!(ids))
    }

    fn relation_list(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[REL, boolean(&["app"])], true), args)?;
        max_positionals(&p, 0)?;
        let rel = self.relation(&p)?;
        if p.flag("app") {
            let remote = self
                .w
                .relations
                .get(&rel)
                .and_then(|r| r.remote_app(&self.ctx.app))
                .unwrap_or_default()
                .to_string();
            return self.emit(&p, json!(remote));
        }
        let members: Vec<String> = self
            .ctx
            .members
            .get(&rel)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        self.emit(&p, json!(members))
    }

    /// The own unit bag or own app bag (local copy incl. this hook's writes).
    fn own_bag(&mut self, rel: u32, owner: &str) -> &mut Data {
        let key = (rel, owner.to_string());
        if !self.ctx.own_bags.contains_key(&key) {
            let data = self.w.bag(rel, owner).data;
            self.ctx.own_bags.insert(key.clone(), data);
        }
        self.ctx.own_bags.entry(key).or_default()
    }

    fn read_bag(&mut self, rel: u32, target: &str, app: bool) -> Result<Data, ToolError> {
        let denied = || Refused("permission denied".into());
        let Some(r) = self.w.relations.get(&rel).cloned() else {
            return Err(Refused("relation not found".into()));
        };
        let own_app = self.ctx.app.clone();
        if !app && target == self.ctx.unit {
            return Ok(self.own_bag(rel, target).clone());
        }
        if app && target == own_app {
            if self.is_leader() {
                return Ok(self.own_bag(rel, target).clone());
            }
            if !r.peer {
                return Err(denied());
            }
        }
        let target_app = if app { target } else { app_of(target) };
        if !r.involves(target_app) {
            return Err(denied());
        }
        if !app {
            if !r.unit_bags.contains_key(target) {
                return Err(denied());
            }
            let member = self
                .ctx
                .members
                .get(&rel)
                .is_some_and(|m| m.contains(target));
            if member {
                let key = (rel, target.to_string());
                let unit = self.ctx.unit.clone();
                let cached = self
                    .w
                    .units
                    .get(&unit)
                    .and_then(|u| u.local.remote_cache.get(&key))
                    .cloned();
                if let Some(d) = cached {
                    return Ok(d);
                }
                let d = self.w.bag(rel, target).data;
                if let Some(u) = self.w.units.get_mut(&unit) {
                    u.local.remote_cache.insert(key, d.clone());
                }
                return Ok(d);
            }
        }
        let key = (rel, target.to_string());
        if let Some(d) = self.ctx.hook_cache.get(&key) {
            return Ok(d.clone());
        }
        let d = self.w.bag(rel, target).data;
        self.ctx.hook_cache.insert(key, d.clone());
        Ok(d)
    }

    fn relation_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[REL, boolean(&["app"])], true), args)?;
        max_positionals(&p, 2)?;
        let rel = self.relation(&p)?;
        let key = p
            .positionals
            .first()
            .filter(|k| k.as_str() != "-" && !k.is_empty())
            .cloned();
        let mut app = p.flag("app");
        let target = match p.positionals.get(1) {
            Some(t) => t.clone(),
            None => match (&self.ctx.remote_unit, &self.ctx.remote_app) {
                (Some(u), _) if !app && !u.is_empty() => u.clone(),
                (Some(u), _) if app && !u.is_empty() => app_of(u).to_string(),
                (_, Some(a)) if !a.is_empty() && self.ctx.relation == Some(rel) => {
                    app = true;
                    a.clone()
                }
                _ => return Err(Usage("no unit or application specified".into())),
            },
        };
        let target = if app && is_unit_name(&target) {
            app_of(&target).to_string()
        } else if !app && !is_unit_name(&target) {
            return Err(Usage(format!(
                "expected unit name, got application name {target:?}"
            )));
        } else {
            target
        };
        let data = self.read_bag(rel, &target, app)?;
        let v = match key {
            Some(k) => data.get(&k).map(|s| json!(s)).unwrap_or(Value::Null),
            None => data_value(&data),
        };
        self.emit(&p, v)
    }

    fn relation_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &[REL, boolean(&["app"]), value(&["file"]), value(&["format"])],
            args,
        )?;
        let rel = self.relation(&p)?;
        let pairs = self.settings(&p)?;
        let owner = if p.flag("app") {
            if !self.is_leader() {
                return Err(Refused("cannot write relation settings".into()));
            }
            self.ctx.needs_leadership = true;
            self.ctx.app.clone()
        } else {
            self.ctx.unit.clone()
        };
        merge(self.own_bag(rel, &owner), pairs);
        self.ctx.dirty_bags.insert((rel, owner));
        Ok(vec![])
    }

    // ----- config, leadership, status -----

    fn config_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[boolean(&["a", "all"])], true), args)?;
        max_positionals(&p, 1)?;
        if let Some(k) = p.positionals.first() {
            let v = self.ctx.config.get(k).cloned().unwrap_or(Value::Null);
            return self.emit(&p, v);
        }
        let mut m: Map<String, Value> = self
            .ctx
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if p.flag("a") {
            if let Some(charm) = self.w.apps.get(&self.ctx.app).and_then(|a| a.charm.clone()) {
                for k in charm.options.keys() {
                    m.entry(k.clone()).or_insert(Value::Null);
                }
            }
        }
        self.emit(&p, Value::Object(m))
    }

    fn is_leader_tool(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 0)?;
        let leader = !self.ctx.minion && self.is_leader();
        if leader {
            self.ctx.leader_claimed = Some(std::time::Instant::now());
        } else {
            self.ctx.minion = true;
        }
        self.emit(&p, json!(leader))
    }

    fn status_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[boolean(&["application"])], args)?;
        let Some(status) = p.positionals.first() else {
            return Err(Usage(
                "invalid args, require <status> [message] [data]".into(),
            ));
        };
        const VALID: [&str; 4] = ["maintenance", "blocked", "waiting", "active"];
        if !VALID.contains(&status.as_str()) {
            return Err(Usage(format!(
                "invalid status {status:?}, expected one of [{}]",
                VALID.join(" ")
            )));
        }
        max_positionals(&p, 2)?;
        let message = p.positionals.get(1).cloned().unwrap_or_default();
        let hook = self.ctx.hook_name.clone();
        if p.flag("application") {
            if !self.is_leader() {
                return Err(Refused("this unit is not the leader".into()));
            }
            let at = self.w.now();
            if let Some(a) = self.w.apps.get_mut(&self.ctx.app) {
                let rec = StatusRecord {
                    status: status.clone(),
                    message,
                    data: BTreeMap::new(),
                    at,
                    hook,
                };
                a.status = Some(rec.clone());
                a.status_history.push(rec);
            }
        } else {
            let unit = self.ctx.unit.clone();
            self.w.set_unit_status(&unit, status, &message, &hook);
            if let Some(u) = self.w.units.get_mut(&unit) {
                u.charm_set_status = true;
            }
        }
        Ok(vec![])
    }

    fn status_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &spec(
                &[boolean(&["include-data"]), boolean(&["application"])],
                true,
            ),
            args,
        )?;
        max_positionals(&p, 0)?;
        if p.flag("application") {
            if !self.is_leader() {
                return Err(Refused(
                    "finding application status: this unit is not the leader".into(),
                ));
            }
            let app = self.ctx.app.clone();
            let units: Map<String, Value> = self
                .w
                .units
                .values()
                .filter(|u| u.app == app && !u.gone)
                .map(|u| (u.name.clone(), status_value(&u.status)))
                .collect();
            let st = crate::sim::app_status_of(self.w, &app);
            let mut v = status_value(&st);
            if let Some(o) = v.as_object_mut() {
                o.insert("units".into(), Value::Object(units));
            }
            return self.emit(&p, json!({ "application-status": v }));
        }
        if self.ctx.status_cache.is_none() {
            self.ctx.status_cache = self.w.units.get(&self.ctx.unit).map(|u| u.status.clone());
        }
        let st = self.ctx.status_cache.clone().unwrap_or(StatusRecord {
            status: "unknown".into(),
            message: String::new(),
            data: BTreeMap::new(),
            at: Default::default(),
            hook: String::new(),
        });
        if p.flag("include-data") {
            self.emit(&p, status_value(&st))
        } else {
            self.emit(&p, json!(st.status))
        }
    }

    // ----- actions -----

    fn action(&mut self) -> Result<&mut crate::context::ActionRun, ToolError> {
        self.ctx
            .action
            .as_mut()
            .ok_or_else(|| Refused("not running an action".into()))
    }

    fn action_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 1)?;
        let params = Value::Object(
            self.action()?
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let v = match p.positionals.first() {
            None => params,
            Some(path) => {
                let mut cur = &params;
                for seg in path.split('.') {
                    match cur.get(seg) {
                        Some(next) => cur = next,
                        None => return self.emit(&p, Value::Null),
                    }
                }
                cur.clone()
            }
        };
        self.emit(&p, v)
    }

    fn action_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        if p.positionals.is_empty() {
            return Err(Usage("no key=value pairs specified".into()));
        }
        let mut sets = Vec::new();
        for a in &p.positionals {
            let Some((k, v)) = a.split_once('=') else {
                return Err(Usage(format!(
                    "argument {a:?} must be of the form key.key...=value"
                )));
            };
            let segs: Vec<&str> = k.split('.').collect();
            for s in &segs {
                let ok = !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !s.starts_with('-')
                    && !s.ends_with('-');
                if !ok {
                    return Err(Usage(format!(
                        "key {k:?} must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric, hyphens and periods"
                    )));
                }
                if ["stdout", "stdout-encoding", "stderr", "stderr-encoding"].contains(s) {
                    return Err(Usage(format!("cannot set reserved action key {s:?}")));
                }
            }
            sets.push((
                segs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                v.to_string(),
            ));
        }
        let act = self.action()?;
        for (segs, v) in sets {
            set_nested(&mut act.results, &segs, v);
        }
        Ok(vec![])
    }

    fn action_fail(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        max_positionals(&p, 1)?;
        let msg = p.positionals.first().cloned().unwrap_or_else(|| {
            "action failed without reason given, check action for errors".into()
        });
        self.action()?.failed = Some(msg);
        Ok(vec![])
    }

    fn action_log(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        if p.positionals.is_empty() {
            return Err(Usage("no message specified".into()));
        }
        let msg = p.positionals.join(" ");
        let id = self.action()?.id;
        if let Some(a) = self.w.actions.get_mut(&id) {
            a.logs.push(msg);
        }
        Ok(vec![])
    }

    fn juju_log(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &[
                value(&["l", "log-level"]),
                boolean(&["debug"]),
                value(&["format"]),
            ],
            args,
        )?;
        if p.positionals.is_empty() {
            return Err(Usage("no message specified".into()));
        }
        let level = if p.flag("debug") {
            "DEBUG".to_string()
        } else {
            match p.value("l").map(str::to_uppercase).as_deref() {
                None | Some("") => "INFO".to_string(),
                Some(l @ ("TRACE" | "DEBUG" | "INFO" | "WARNING" | "ERROR" | "CRITICAL")) => {
                    l.to_string()
                }
                Some(_) => "INFO".to_string(),
            }
        };
        let message = format!("{}{}", self.ctx.log_prefix(self.w), p.positionals.join(" "));
        let at = self.w.now();
        self.w.logs.push(LogRecord {
            unit: self.ctx.unit.clone(),
            level,
            message,
            hook: self.ctx.hook_name.clone(),
            at,
        });
        Ok(vec![])
    }

    // ----- storage -----

    fn storage_list(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 1)?;
        let filter = p.positionals.first();
        let ids: Vec<String> = self
            .w
            .units
            .get(&self.ctx.unit)
            .map(|u| {
                u.storage
                    .iter()
                    .filter(|s| filter.is_none_or(|f| *f == s.name))
                    .map(|s| s.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.emit(&p, json!(ids))
    }

    fn storage_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[value(&["s"])], true), args)?;
        max_positionals(&p, 1)?;
        let storage = self
            .w
            .units
            .get(&self.ctx.unit)
            .map(|u| u.storage.clone())
            .unwrap_or_default();
        let id = match p.value("s") {
            Some(s) => {
                if !storage.iter().any(|a| a.id == s) {
                    return Err(Usage(format!(
                        "invalid value {s:?} for option -s: storage instance {s:?} not found"
                    )));
                }
                s.to_string()
            }
            None => self
                .ctx
                .storage
                .clone()
                .ok_or_else(|| Usage("no storage instance specified".into()))?,
        };
        let Some(att) = storage.iter().find(|a| a.id == id) else {
            return Err(Refused(format!("storage instance {id:?} not found")));
        };
        let v = match p.positionals.first().map(String::as_str) {
            None => json!({ "kind": att.kind, "location": att.location }),
            Some("kind") => json!(att.kind),
            Some("location") => json!(att.location),
            Some(other) => return Err(Refused(format!("invalid storage attribute {other:?}"))),
        };
        self.emit(&p, v)
    }

    // ----- misc immediate -----

    fn app_version_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        let Some(v) = p.positionals.first().cloned() else {
            return Err(Usage("no version specified".into()));
        };
        max_positionals(&p, 1)?;
        if let Some(a) = self.w.apps.get_mut(&self.ctx.app) {
            a.version = v;
        }
        Ok(vec![])
    }

    fn port(&mut self, args: &[String], open: bool) -> Out {
        let p = self.parse(&[value(&["endpoints"]), value(&["format"])], args)?;
        let Some(spec) = p.positionals.first() else {
            return Err(Usage("no port or range specified".into()));
        };
        max_positionals(&p, 1)?;
        let range = PortRange::parse(spec).map_err(Usage)?;
        let machine = self.w.machine_ports(&self.ctx.unit);
        // One request per endpoint, in order: the first refusal ends the tool
        // (jujuc/ports.go, makePortRangeCommand).
        for ep in ports::endpoints_arg(p.value("endpoints")) {
            let unit = &self.ctx.unit;
            if open {
                self.ctx.ports.open(unit, &ep, range, &machine)
            } else {
                self.ctx.ports.close(unit, &ep, range, &machine)
            }
            .map_err(Refused)?;
        }
        Ok(vec![])
    }

    fn opened_ports(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[boolean(&["endpoints"])], true), args)?;
        max_positionals(&p, 0)?;
        let committed = self
            .w
            .units
            .get(&self.ctx.unit)
            .map(|u| u.ports.clone())
            .unwrap_or_default();
        let view = self.ctx.ports.view(&committed);
        self.emit(&p, json!(ports::render(&view, p.flag("endpoints"))))
    }

    fn address(&self) -> String {
        self.w
            .units
            .get(&self.ctx.unit)
            .map(|u| u.address.clone())
            .unwrap_or_default()
    }

    fn network_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &spec(
                &[
                    REL,
                    boolean(&["primary-address"]),
                    boolean(&["bind-address"]),
                    boolean(&["ingress-address"]),
                    boolean(&["egress-subnets"]),
                ],
                true,
            ),
            args,
        )?;
        let Some(binding) = p.positionals.first().cloned() else {
            return Err(Usage("no arguments specified".into()));
        };
        max_positionals(&p, 1)?;
        if p.value("r").is_some() {
            self.relation(&p)?;
        }
        let known = binding == "juju-info"
            || self
                .w
                .apps
                .get(&self.ctx.app)
                .and_then(|a| a.charm.as_ref())
                .is_some_and(|c| c.endpoint(&binding).is_some());
        if !known {
            return Err(Refused(format!(
                "no network config found for binding {binding:?}"
            )));
        }
        let addr = self.address();
        let full = json!({
            "bind-addresses": [{
                "mac-address": "00:16:3e:00:00:01",
                "interface-name": "eth0",
                "addresses": [{ "hostname": "", "value": addr, "cidr": "127.0.0.0/8" }],
                "macaddress": "00:16:3e:00:00:01",
                "interfacename": "eth0",
            }],
            "egress-subnets": [format!("{addr}/32")],
            "ingress-addresses": [addr],
        });
        let selected: Vec<Value> = [
            ("primary-address", json!(addr)),
            ("bind-address", json!(addr)),
            ("ingress-address", json!(addr)),
            ("egress-subnets", json!(format!("{addr}/32"))),
        ]
        .into_iter()
        .filter(|(f, _)| p.flag(f))
        .map(|(_, v)| v)
        .collect();
        match selected.len() {
            0 => self.emit(&p, full),
            1 => self.emit(&p, selected.into_iter().next().unwrap_or(Value::Null)),
            _ => {
                let m: Map<String, Value> = [
                    "primary-address",
                    "bind-address",
                    "ingress-address",
                    "egress-subnets",
                ]
                .iter()
                .filter(|f| p.flag(f))
                .map(|f| {
                    let v = match *f {
                        "egress-subnets" => json!([format!("{addr}/32")]),
                        "ingress-address" => json!([addr]),
                        _ => json!(addr),
                    };
                    (f.to_string(), v)
                })
                .collect();
                self.emit(&p, Value::Object(m))
            }
        }
    }

    // ----- secrets -----

    fn parse_secret_values(&self, items: &[String]) -> Result<Data, ToolError> {
        let mut d = Data::new();
        for a in items {
            let Some((k, v)) = a.split_once('=') else {
                return Err(Usage(format!("key value {a:?} not valid")));
            };
            let (key, v) = if let Some(key) = k.strip_suffix("#file") {
                let bytes = self.caller.read(v)?;
                (key, String::from_utf8_lossy(&bytes).into_owned())
            } else if let Some(key) = k.strip_suffix("#base64") {
                let bytes = crate::wire::decode(v)
                    .map_err(|e| Usage(format!("invalid base64 value for key {key:?}: {e}")))?;
                (key, String::from_utf8_lossy(&bytes).into_owned())
            } else {
                (k, v.to_string())
            };
            let valid = key.len() >= 3
                && key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !key.ends_with('-')
                && !key.contains("--");
            if !valid {
                return Err(Usage(format!("invalid key {key:?}")));
            }
            d.insert(key.to_string(), v);
        }
        Ok(d)
    }

    /// Resolve `<id>` (`secret:x`, `secret://model/x` or `x`) or a label to a secret id.
    fn find_secret(&self, id: Option<&str>, label: Option<&str>) -> Result<String, ToolError> {
        if let Some(id) = id {
            let bare = parse_secret_uri(id)?;
            if self.w.secrets.contains_key(&bare) || self.ctx.new_secrets.contains(&bare) {
                return Ok(bare);
            }
            return Err(Refused(format!("secret {id:?} not found")));
        }
        let Some(label) = label else {
            return Err(Usage("require either a secret URI or label".into()));
        };
        let unit = &self.ctx.unit;
        let app = &self.ctx.app;
        for s in self.w.secrets.values() {
            let owner_label = s.owned_by(unit, app) && s.label.as_deref() == Some(label);
            let consumer_label =
                s.consumers.get(unit).and_then(|c| c.label.as_deref()) == Some(label);
            let pending_label =
                self.ctx.secret_pins.get(&s.id).and_then(|p| p.1.as_deref()) == Some(label);
            if owner_label || consumer_label || pending_label {
                return Ok(s.id.clone());
            }
        }
        Err(Refused(format!("secret {label:?} not found")))
    }

    fn check_owner(&mut self, id: &str) -> Result<(), ToolError> {
        let unit = self.ctx.unit.clone();
        let app = self.ctx.app.clone();
        let owner = match self.w.secrets.get(id) {
            Some(s) => s.owner.clone(),
            None => {
                // Created in this very hook: find its pending add.
                self.ctx
                    .secret_ops
                    .iter()
                    .find_map(|op| match op {
                        SecretOp::Add { id: i, owner, .. } if i == id => Some(owner.clone()),
                        _ => None,
                    })
                    .ok_or_else(|| Refused(format!("secret {id:?} not found")))?
            }
        };
        match owner {
            SecretOwner::App(a) if a == app => {
                if !self.is_leader() {
                    return Err(Refused("this unit is not the leader".into()));
                }
                self.ctx.needs_leadership = true;
                Ok(())
            }
            SecretOwner::Unit(u) if u == unit => Ok(()),
            _ => Err(Refused("permission denied".into())),
        }
    }

    fn secret_add(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &[
                value(&["label"]),
                value(&["description"]),
                value(&["expire"]),
                value(&["rotate"]),
                value(&["owner"]),
            ],
            args,
        )?;
        let data = self.parse_secret_values(&p.positionals)?;
        if data.is_empty() {
            return Err(Usage("missing secret value".into()));
        }
        let owner = match p.value("owner").unwrap_or("application") {
            "application" => SecretOwner::App(self.ctx.app.clone()),
            "unit" => SecretOwner::Unit(self.ctx.unit.clone()),
            other => return Err(Usage(format!("invalid secret owner {other:?}"))),
        };
        if let Some(r) = p.value("rotate") {
            const POLICIES: [&str; 7] = [
                "never",
                "hourly",
                "daily",
                "weekly",
                "monthly",
                "quarterly",
                "yearly",
            ];
            if !POLICIES.contains(&r) {
                return Err(Usage(format!("invalid rotate policy {r:?}")));
            }
        }
        if matches!(owner, SecretOwner::App(_)) {
            if !self.is_leader() {
                return Err(Refused("this unit is not the leader".into()));
            }
            self.ctx.needs_leadership = true;
        }
        let label = p.value("label").map(str::to_string);
        if let Some(l) = &label {
            let (unit, app) = (&self.ctx.unit, &self.ctx.app);
            let taken = self
                .w
                .secrets
                .values()
                .any(|s| s.owned_by(unit, app) && s.label.as_deref() == Some(l))
                || self
                    .ctx
                    .secret_ops
                    .iter()
                    .any(|op| matches!(op, SecretOp::Add { label: Some(x), .. } if x == l));
            if taken {
                return Err(Refused(format!("secret with label {l:?} already exists")));
            }
        }
        let id = self.w.new_secret_id();
        self.ctx.new_secrets.insert(id.clone());
        self.ctx.secret_ops.push(SecretOp::Add {
            id: id.clone(),
            owner,
            label,
            description: p.value("description").map(str::to_string),
            expire: p.value("expire").map(str::to_string),
            rotate: p.value("rotate").map(str::to_string),
            data,
        });
        Ok(format!("secret:{id}\n").into_bytes())
    }

    fn secret_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &spec(
                &[value(&["label"]), boolean(&["refresh"]), boolean(&["peek"])],
                true,
            ),
            args,
        )?;
        max_positionals(&p, 2)?;
        if p.flag("refresh") && p.flag("peek") {
            return Err(Usage(
                "specify one of --peek or --refresh but not both".into(),
            ));
        }
        let uri = p.positionals.first().map(String::as_str);
        let label = p.value("label");
        let id = self.find_secret(uri, label)?;
        let key = p.positionals.get(1).cloned();
        let unit = self.ctx.unit.clone();
        let app = self.ctx.app.clone();
        let Some(s) = self.w.secrets.get(&id) else {
            return Err(Refused(format!("secret {id:?} not found")));
        };
        let data = if s.owned_by(&unit, &app) {
            s.revisions.last().cloned().unwrap_or_default()
        } else {
            if !self.w.secret_visible_to(s, &unit) {
                return Err(Refused("permission denied".into()));
            }
            let current_pin = self
                .ctx
                .secret_pins
                .get(&id)
                .and_then(|p| p.0)
                .or_else(|| s.consumers.get(&unit).map(|c| c.pinned))
                .filter(|r| *r > 0);
            let latest = s.latest();
            let rev = if p.flag("peek") {
                latest
            } else if p.flag("refresh") || current_pin.is_none() {
                let entry = self.ctx.secret_pins.entry(id.clone()).or_default();
                entry.0 = Some(latest);
                latest
            } else {
                current_pin.unwrap_or(latest)
            };
            if uri.is_some() {
                if let Some(l) = label {
                    self.ctx.secret_pins.entry(id.clone()).or_default().1 = Some(l.to_string());
                }
            }
            s.revisions
                .get(rev.saturating_sub(1) as usize)
                .cloned()
                .unwrap_or_default()
        };
        match key {
            Some(k) => self.emit(&p, data.get(&k).map(|v| json!(v)).unwrap_or(Value::Null)),
            None => self.emit(&p, data_value(&data)),
        }
    }

    fn secret_info_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[value(&["label"])], true), args)?;
        max_positionals(&p, 1)?;
        if !p.positionals.is_empty() && p.value("label").is_some() {
            return Err(Usage(
                "specify either a secret URI or label but not both".into(),
            ));
        }
        let id = self.find_secret(p.positionals.first().map(String::as_str), p.value("label"))?;
        let (unit, app) = (self.ctx.unit.clone(), self.ctx.app.clone());
        let Some(s) = self.w.secrets.get(&id).filter(|s| s.owned_by(&unit, &app)) else {
            return Err(Refused(format!("secret {id:?} not found")));
        };
        let owner = match s.owner {
            SecretOwner::App(_) => "application",
            SecretOwner::Unit(_) => "unit",
            SecretOwner::Model => "model",
        };
        let mut info = json!({
            "revision": s.latest(),
            "owner": owner,
            "rotation": s.rotate.clone().unwrap_or_else(|| "never".into()),
        });
        if let Some(o) = info.as_object_mut() {
            if let Some(l) = &s.label {
                o.insert("label".into(), json!(l));
            }
            if let Some(d) = &s.description {
                o.insert("description".into(), json!(d));
            }
            if let Some(e) = &s.expire {
                o.insert("expiry".into(), json!(e));
            }
        }
        self.emit(&p, json!({ id: info }))
    }

    fn secret_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(
            &[
                value(&["label"]),
                value(&["description"]),
                value(&["expire"]),
                value(&["rotate"]),
                value(&["owner"]),
            ],
            args,
        )?;
        let Some(uri) = p.positionals.first().cloned() else {
            return Err(Usage("missing secret URI".into()));
        };
        let data = self.parse_secret_values(&p.positionals[1..])?;
        let id = self.find_secret(Some(&uri), None)?;
        self.check_owner(&id)?;
        self.ctx.secret_ops.push(SecretOp::Set {
            id,
            label: p.value("label").map(str::to_string),
            description: p.value("description").map(str::to_string),
            expire: p.value("expire").map(str::to_string),
            rotate: p.value("rotate").map(str::to_string),
            data: (!data.is_empty()).then_some(data),
        });
        Ok(vec![])
    }

    fn secret_grant(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[REL, value(&["unit"])], args)?;
        let Some(uri) = p.positionals.first().cloned() else {
            return Err(Usage("missing secret URI".into()));
        };
        max_positionals(&p, 1)?;
        if p.value("r").is_none() {
            return Err(Usage("missing relation".into()));
        }
        let rel = self.relation(&p)?;
        let id = self.find_secret(Some(&uri), None)?;
        self.check_owner(&id)?;
        let unit = p.value("unit").map(str::to_string);
        self.ctx.secret_ops.push(SecretOp::Grant {
            id,
            grant: Grant {
                relation: rel,
                unit,
            },
        });
        Ok(vec![])
    }

    fn secret_ids(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 0)?;
        let (unit, app) = (&self.ctx.unit, &self.ctx.app);
        let ids: Vec<String> = self
            .w
            .secrets
            .values()
            .filter(|s| s.owned_by(unit, app))
            .map(|s| format!("secret:{}", s.id))
            .collect();
        self.emit(&p, json!(ids))
    }

    // ----- unit state -----

    fn state(&mut self) -> &mut Data {
        if self.ctx.state.is_none() {
            self.ctx.state = Some(
                self.w
                    .units
                    .get(&self.ctx.unit)
                    .map(|u| u.state.clone())
                    .unwrap_or_default(),
            );
        }
        self.ctx.state.get_or_insert_with(Data::new)
    }

    fn state_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[boolean(&["strict"])], true), args)?;
        max_positionals(&p, 1)?;
        let data = self.state().clone();
        match p.positionals.first().filter(|k| k.as_str() != "-") {
            Some(k) => match data.get(k) {
                Some(v) => self.emit(&p, json!(v)),
                None if p.flag("strict") => Err(Refused(format!("{k:?} not found"))),
                None => self.emit(&p, json!("")),
            },
            None => self.emit(&p, data_value(&data)),
        }
    }

    fn state_set(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[value(&["file"])], args)?;
        let pairs = self.settings(&p)?;
        for (k, v) in &pairs {
            if k.len() > 256 {
                return Err(Refused(format!(
                    "key {:?}... is longer than 256 bytes",
                    k.chars().take(16).collect::<String>()
                )));
            }
            if v.len() > 64 << 10 {
                return Err(Refused(format!("value of {k:?} is larger than 64 KiB")));
            }
        }
        merge(self.state(), pairs);
        Ok(vec![])
    }

    fn state_delete(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        let Some(k) = p.positionals.first().cloned() else {
            return Err(Usage("no key specified".into()));
        };
        max_positionals(&p, 1)?;
        self.state().remove(&k);
        Ok(vec![])
    }

    // ----- resources, goal state -----

    fn resource_get(&mut self, args: &[String]) -> Out {
        let p = self.parse(&[], args)?;
        let Some(name) = p.positionals.first().cloned() else {
            return Err(Usage("missing required resource name".into()));
        };
        max_positionals(&p, 1)?;
        let app = self.ctx.app.clone();
        let Some(a) = self.w.apps.get(&app) else {
            return Err(Refused("application not found".into()));
        };
        let decl = a
            .charm
            .as_ref()
            .and_then(|c| c.resources.iter().find(|r| r.name == name).cloned());
        let Some(decl) = decl else {
            return Err(Refused(format!(
                "could not download resource: resource {name:?} not found"
            )));
        };
        if !a.resources.contains_key(&name) {
            return Err(Refused(format!(
                "could not download resource: HTTP request failed: Get https://127.0.0.1:17070/units/unit-{}/resources/{name}: resource#{app}/{name} not found",
                self.ctx.unit.replace('/', "-")
            )));
        }
        Ok(format!(
            "{}\n",
            crate::machine::resource_path(&self.ctx.unit, &name, &decl.filename)
        )
        .into_bytes())
    }

    fn goal_state(&mut self, args: &[String]) -> Out {
        let p = self.parse(&spec(&[], true), args)?;
        max_positionals(&p, 0)?;
        let app = self.ctx.app.clone();
        let since = "2025-01-01 00:00:00Z";
        let unit_entry = |w: &World, name: &str| -> Value {
            let st = match w.units.get(name) {
                Some(u) if u.life != crate::model::Life::Alive => "dying".to_string(),
                Some(u) => u.status.status.clone(),
                None => "unknown".to_string(),
            };
            json!({ "status": st, "since": since })
        };
        let mut units = Map::new();
        for u in self.w.units.values().filter(|u| u.app == app && !u.gone) {
            units.insert(u.name.clone(), unit_entry(self.w, &u.name));
        }
        let mut relations = Map::new();
        for r in self.w.relations.values() {
            if r.life == crate::model::Life::Dead {
                continue;
            }
            let Some(end) = r.end_of(&app) else { continue };
            let remote = r.remote_app(&app).unwrap_or_default().to_string();
            let ep = relations
                .entry(end.endpoint.clone())
                .or_insert_with(|| json!({}));
            let Some(ep) = ep.as_object_mut() else {
                continue;
            };
            if !r.peer {
                ep.insert(
                    remote.clone(),
                    json!({ "status": "joined", "since": since }),
                );
            }
            for u in self.w.units.values() {
                if u.app == remote && !u.gone && u.name != self.ctx.unit {
                    let status = if r.scope.contains(&u.name) {
                        "joined"
                    } else {
                        "joining"
                    };
                    ep.insert(u.name.clone(), json!({ "status": status, "since": since }));
                }
            }
        }
        self.emit(&p, json!({ "units": units, "relations": relations }))
    }
}

/// Juju's `secrets.ParseURI`: `secret:<id>`, `secret://<model>/<id>` or a bare id (20
/// characters of `[0-9a-v]`).
fn parse_secret_uri(uri: &str) -> Result<String, ToolError> {
    let bare = uri
        .strip_prefix("secret://")
        .map(|r| r.rsplit('/').next().unwrap_or(r))
        .or_else(|| uri.strip_prefix("secret:"))
        .unwrap_or(uri);
    let valid = bare.len() == 20
        && bare
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
    if !valid {
        return Err(Usage(format!("secret URI {uri:?} not valid")));
    }
    Ok(bare.to_string())
}

/// Set `segs` (a dotted key) to `v` in a nested map, replacing non-map intermediates.
fn set_nested(map: &mut Map<String, Value>, segs: &[String], v: String) {
    match segs {
        [] => {}
        [last] => {
            map.insert(last.clone(), json!(v));
        }
        [first, rest @ ..] => {
            let entry = map.entry(first.clone()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(obj) = entry.as_object_mut() {
                set_nested(obj, rest, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoint-scoped ports: kept by endpoint, shown to the hook at once, and an
    /// endpoint the charm does not define fails the commit with nothing applied.
    #[test]
    fn ports_by_endpoint_commit_or_fail_whole() {
        use crate::context::{prepare, UnitEnv};
        use crate::resolver::{HookKind, HookOp, Op};
        let mut w = crate::model::test_world();
        let uenv = UnitEnv {
            charm_dir: "/c".into(),
            tools_dir: "/t".into(),
            socket_address: "@x".into(),
            marker: "m".into(),
        };
        let caller = Caller {
            pid: None,
            cwd: "/".into(),
        };
        let op = Op::Hook(HookOp::plain(HookKind::ConfigChanged));
        let call = |w: &mut World, ctx: &mut HookContext, argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            match run(w, ctx, &argv, None, &caller) {
                ToolResult::Done { code, out, err } => (
                    code,
                    String::from_utf8_lossy(&out).trim().to_string(),
                    String::from_utf8_lossy(&err).to_string(),
                ),
                ToolResult::NeedStdin => panic!("stdin"),
            }
        };
        let mut ctx = prepare(&mut w, "a/0", &op, &uenv);
        assert_eq!(call(&mut w, &mut ctx, &["open-port", "8080"]).0, 0);
        let r = call(
            &mut w,
            &mut ctx,
            &["open-port", "9391/tcp", "--endpoints", "juju-info"],
        );
        assert_eq!(r.0, 0);
        let shown = call(
            &mut w,
            &mut ctx,
            &["opened-ports", "--endpoints", "--format=json"],
        );
        assert_eq!(shown.1, r#"["8080/tcp (*)","9391/tcp (juju-info)"]"#);
        let conflict = call(&mut w, &mut ctx, &["open-port", "8000-8100"]);
        assert_eq!(conflict.0, 1, "{conflict:?}");
        crate::model::commit(&mut w, "a/0", &ctx).unwrap();
        assert_eq!(
            ports::render(&w.units["a/0"].ports, true),
            ["8080/tcp (*)", "9391/tcp (juju-info)"]
        );
        let mut ctx = prepare(&mut w, "a/0", &op, &uenv);
        call(&mut w, &mut ctx, &["close-port", "8080"]);
        let r = call(
            &mut w,
            &mut ctx,
            &["open-port", "9100", "--endpoints", "metrics"],
        );
        assert_eq!(r.0, 0, "the tool accepts it; the controller refuses it");
        let e = crate::model::commit(&mut w, "a/0", &ctx).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"endpoint "metrics" for unit "a/0" not found"#),
            "{e}"
        );
        assert_eq!(
            ports::render(&w.units["a/0"].ports, false),
            ["8080/tcp", "9391/tcp"]
        );
    }

    /// Odd argv and stdin thrown at every tool: never a panic, always a Juju-style answer.
    #[test]
    fn no_panic_on_malformed_calls() {
        use crate::context::{prepare, UnitEnv};
        use crate::resolver::{HookKind, HookOp, Op};
        let mut w = crate::model::test_world();
        let uenv = UnitEnv {
            charm_dir: "/c".into(),
            tools_dir: "/t".into(),
            socket_address: "@x".into(),
            marker: "m".into(),
        };
        let ops = [
            Op::Hook(HookOp::plain(HookKind::ConfigChanged)),
            Op::Hook(HookOp {
                relation: Some(0),
                remote_unit: Some("a/1".into()),
                remote_app: Some("a".into()),
                ..HookOp::plain(HookKind::RelationChanged)
            }),
        ];
        let odd: &[&[&str]] = &[
            &[],
            &["-"],
            &["--"],
            &["-r"],
            &["-r", "x:y:z"],
            &["-r", ":"],
            &["-r", "99999999999999999999"],
            &["--format"],
            &["--format=", "-o", ""],
            &["=", "=="],
            &["a=b", "a=c"],
            &["k.=v", ".k=v", "K=v", "stdout=x"],
            &["-s", ""],
            &["secret:", "x#file=", "y#base64=!!"],
            &["secret://", "--label"],
            &["\u{ff}é", "-é", "--é=é"],
            &["--file", "-"],
            &["--file", "/nonexistent/x"],
            &["--app", "a/99", "a/1", "b"],
            &["-", "a"],
            &["80-70/tcp"],
            &["--revision", "x", "secret:00000000000000000000"],
            &["--application", "active", "m", "x"],
        ];
        let caller = Caller {
            pid: None,
            cwd: "/".into(),
        };
        for op in &ops {
            for tool in crate::multicall::HOOK_TOOLS {
                for args in odd {
                    for stdin in [None, Some(&b"\xff\x00: [}"[..])] {
                        let mut ctx = prepare(&mut w, "a/1", op, &uenv);
                        let mut argv = vec![tool.to_string()];
                        argv.extend(args.iter().map(|s| s.to_string()));
                        match run(&mut w, &mut ctx, &argv, stdin, &caller) {
                            ToolResult::NeedStdin => assert!(stdin.is_none()),
                            ToolResult::Done { code, err, .. } => {
                                assert!((0..=2).contains(&code), "{argv:?}");
                                if code != 0 {
                                    let e = String::from_utf8_lossy(&err);
                                    assert!(e.starts_with("ERROR "), "{argv:?}: {e}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn settings_files() {
        let m = yaml_string_map(b"{\"a\": \"1\", \"b\": null}").unwrap();
        assert_eq!(m, vec![("a".into(), "1".into()), ("b".into(), "".into())]);
        assert!(yaml_string_map(b"{\"a\": 1}").is_err());
        assert!(yaml_string_map(b"[1,2]").is_err());
        assert!(yaml_string_map(b"").unwrap().is_empty());
    }

    #[test]
    fn key_value_rules() {
        assert!(key_values(&["a=b=c".into()]).unwrap()[0].1 == "b=c");
        assert!(key_values(&["novalue".into()]).is_err());
        assert!(key_values(&["a=1".into(), "a=2".into()]).is_err());
    }
}
