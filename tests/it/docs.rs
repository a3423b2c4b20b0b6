//! Keeps the operator documentation honest.
//!
//! Checks README.md, docs/*.md, tests/integration/ and .github/workflows/ci.yml against
//! the charm itself:
//! - the README's Configuration and Actions tables list exactly the options of
//!   config.yaml and the actions of actions.yaml;
//! - every option, action or other hyphenated name quoted in the docs exists, and every
//!   quoted `option=value` has a value the charm's own config validation accepts;
//! - every `juju config`, `juju run` and `juju deploy --config` command in the docs and
//!   the integration scripts uses real options (valid values) and real actions with real
//!   parameters (required ones present, booleans boolean);
//! - every status message quoted in a heading of docs/troubleshooting.md is made of text
//!   that appears in the charm's source (`src/`, test modules excluded), and every status
//!   literal the charm sets in `src/charm/` is documented there;
//! - every relative link (and `#anchor`) in the docs points at an existing file (heading);
//! - the workflow parses, has the documented jobs on ubuntu-24.04, keeps its `run:` steps
//!   short, and every script it calls exists, is executable and runs `set -euo pipefail`.
//!
//! `checks_catch_broken_docs` feeds deliberately broken text to each check, so a check
//! that silently stopped finding anything fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use concourse_ci::config::CharmConfig;
use serde_json::{Map, Value as Json};
use serde_yaml::Value as Yaml;

// ---------------------------------------------------------------------------------------
// Repository access

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Files under `dir` (relative to the root) whose name ends with `suffix`, sorted.
fn files_in(dir: &str, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root().join(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(suffix))
                .map(|n| format!("{dir}/{n}"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The operator docs: README.md and docs/*.md.
fn operator_docs() -> Vec<String> {
    let mut v = vec!["README.md".to_string()];
    v.extend(files_in("docs", ".md"));
    v
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------
// The charm: options, actions, other names

#[derive(Debug)]
struct ActionSpec {
    /// param name → JSON-schema type
    params: BTreeMap<String, String>,
    required: Vec<String>,
}

#[derive(Debug)]
struct Charm {
    /// option name → (type, default)
    options: BTreeMap<String, (String, Yaml)>,
    actions: BTreeMap<String, ActionSpec>,
    /// Other hyphenated names the docs may quote: metadata (endpoints, interfaces,
    /// storage, resources), hook names, names the source defines as constants, and a
    /// short list of outside names (Juju, Concourse, LXD, NFS).
    other_names: BTreeSet<String>,
    /// `key=value` keys that are not options or action parameters (LXD device keys …).
    other_keys: BTreeSet<String>,
}

/// Names that are neither the charm's nor Juju hook names but appear in the docs.
const OUTSIDE_NAMES: &[&str] = &[
    // Juju commands, model config and storage pools
    "add-unit",
    "attach-resource",
    "attach-storage",
    "debug-log",
    "show-task",
    "show-unit",
    "juju-http-proxy",
    "juju-https-proxy",
    "update-status-hook-interval",
    // Concourse commands and services
    "land-worker",
    "retire-worker",
    "concourse-web",
    "concourse-worker",
    "concourse-server",
    // metadata.yaml keys and build packages
    "minimum-size",
    "musl-tools",
    // NFS mount options
    "no-root-squash",
    "root-squash",
    // GitHub Actions jobs of .github/workflows/ci.yml
    "unit-test",
    "test-shared-storage-auto",
    "test-shared-storage-all",
    "test-shared-storage-web-worker",
    "setup-lxd",
];

/// `key=value` keys of other tools quoted in the docs.
const OUTSIDE_KEYS: &[&str] = &["shift", "source", "path", "local_lock"];

const STANDARD_HOOKS: &[&str] = &[
    "install",
    "start",
    "stop",
    "remove",
    "config-changed",
    "upgrade-charm",
    "update-status",
    "leader-elected",
    "leader-settings-changed",
    "collect-metrics",
    "secret-changed",
    "secret-expired",
    "secret-remove",
    "secret-rotate",
    "pre-series-upgrade",
    "post-series-upgrade",
];

fn yaml_keys(v: &Yaml) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn load_charm(src: &Source) -> Charm {
    let config = yaml("config.yaml");
    let mut options = BTreeMap::new();
    for (k, v) in config["options"].as_mapping().expect("config.yaml options") {
        let name = k.as_str().expect("option name").to_string();
        let kind = v["type"].as_str().unwrap_or("string").to_string();
        options.insert(name, (kind, v["default"].clone()));
    }
    let actions_yaml = yaml("actions.yaml");
    let mut actions = BTreeMap::new();
    for (k, v) in actions_yaml.as_mapping().expect("actions.yaml is a map") {
        let name = k.as_str().expect("action name").to_string();
        let mut params = BTreeMap::new();
        if let Some(m) = v["params"].as_mapping() {
            for (pk, pv) in m {
                params.insert(
                    pk.as_str().expect("param name").to_string(),
                    pv["type"].as_str().unwrap_or("string").to_string(),
                );
            }
        }
        let required = v["required"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        actions.insert(name, ActionSpec { params, required });
    }
    let meta = yaml("metadata.yaml");
    let mut other: BTreeSet<String> = BTreeSet::new();
    other.insert(meta["name"].as_str().unwrap_or_default().to_string());
    for section in ["peers", "requires", "provides"] {
        for ep in yaml_keys(&meta[section]) {
            if let Some(i) = meta[section][ep.as_str()]["interface"].as_str() {
                other.insert(i.to_string());
            }
            for h in ["created", "joined", "changed", "departed", "broken"] {
                other.insert(format!("{ep}-relation-{h}"));
            }
            other.insert(ep);
        }
    }
    for st in yaml_keys(&meta["storage"]) {
        other.insert(format!("{st}-storage-attached"));
        other.insert(format!("{st}-storage-detaching"));
        other.insert(st);
    }
    other.extend(yaml_keys(&meta["resources"]));
    other.extend(STANDARD_HOOKS.iter().map(|s| s.to_string()));
    other.extend(OUTSIDE_NAMES.iter().map(|s| s.to_string()));
    other.extend(src.consts.values().filter(|v| is_kebab(v)).cloned());
    Charm {
        options,
        actions,
        other_names: other,
        other_keys: OUTSIDE_KEYS.iter().map(|s| s.to_string()).collect(),
    }
}

impl Charm {
    fn is_param(&self, key: &str) -> bool {
        self.actions.values().any(|a| a.params.contains_key(key))
    }

    fn known_name(&self, name: &str) -> bool {
        self.options.contains_key(name)
            || self.actions.contains_key(name)
            || self.is_param(name)
            || self.other_names.contains(name)
    }

    /// Checks `key=value` for an option with the charm's own validation.
    fn check_option_value(&self, key: &str, value: &str) -> Result<(), String> {
        let Some((kind, _)) = self.options.get(key) else {
            return Err(format!("`{key}` is not a config option"));
        };
        if is_placeholder(value) {
            return Ok(());
        }
        let mut map = Map::new();
        for (name, (_, default)) in &self.options {
            map.insert(
                name.clone(),
                serde_json::to_value(default).unwrap_or(Json::Null),
            );
        }
        let v = match kind.as_str() {
            "int" => value
                .parse::<i64>()
                .map(Json::from)
                .unwrap_or_else(|_| Json::String(value.into())),
            "boolean" => match value {
                "true" => Json::Bool(true),
                "false" => Json::Bool(false),
                _ => Json::String(value.into()),
            },
            _ => Json::String(value.into()),
        };
        map.insert(key.to_string(), v);
        match CharmConfig::from_map(&map) {
            Ok(_) => Ok(()),
            Err(errs) => match errs.iter().find(|e| e.option == key) {
                Some(e) => Err(format!("`{key}={value}` is rejected by the charm: {e}")),
                None => Ok(()),
            },
        }
    }
}

fn is_kebab(s: &str) -> bool {
    let mut parts = s.split('-');
    let first_ok = parts.next().is_some_and(|p| {
        !p.is_empty()
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    let rest: Vec<&str> = parts.collect();
    first_ok
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// A value the docs leave to the reader: `<version>`, `$V2`, `"${VERSION}"`.
fn is_placeholder(v: &str) -> bool {
    v.contains('$') || v.contains('<') || v.contains('`') || v.contains('…')
}

// ---------------------------------------------------------------------------------------
// Markdown

#[derive(Debug, Default)]
struct Md {
    /// (line, content) of inline code spans outside fenced blocks.
    spans: Vec<(usize, String)>,
    /// (line, text) of lines inside fenced or indented code blocks (continuations joined).
    code_lines: Vec<(usize, String)>,
    /// (line, text) of ATX headings.
    headings: Vec<(usize, String)>,
    /// (line, target) of inline links.
    links: Vec<(usize, String)>,
}

fn parse_md(text: &str) -> Md {
    let mut md = Md::default();
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    let mut prev_blank = true;
    let mut in_indented = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim_start();
        if let Some(f) = &fence {
            if t.starts_with(f.as_str()) {
                fence = None;
                if let Some(p) = pending.take() {
                    md.code_lines.push(p);
                }
                continue;
            }
            push_code(&mut md, &mut pending, n, raw);
            continue;
        }
        if t.starts_with("```") || t.starts_with("~~~") {
            fence = Some(t[..3].to_string());
            continue;
        }
        let indent = raw.len() - t.len();
        if !t.is_empty() && indent >= 4 && (prev_blank || in_indented) && !t.starts_with(['-', '*'])
        {
            in_indented = true;
            push_code(&mut md, &mut pending, n, raw);
            prev_blank = false;
            continue;
        }
        if let Some(p) = pending.take() {
            md.code_lines.push(p);
        }
        in_indented = in_indented && t.is_empty();
        prev_blank = t.is_empty();
        if t.starts_with('#') {
            md.headings
                .push((n, t.trim_start_matches('#').trim().to_string()));
        }
        scan_inline(&mut md, n, raw);
    }
    if let Some(p) = pending.take() {
        md.code_lines.push(p);
    }
    md
}

fn push_code(md: &mut Md, pending: &mut Option<(usize, String)>, n: usize, raw: &str) {
    let line = raw.trim();
    let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
    if let Some(body) = line.strip_suffix('\\') {
        acc.push_str(body);
        acc.push(' ');
        *pending = Some((start, acc));
    } else {
        acc.push_str(line);
        md.code_lines.push((start, acc));
    }
}

/// Code spans and links of one line of prose.
fn scan_inline(md: &mut Md, n: usize, line: &str) {
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '`' {
            let mut run = 0;
            while i + run < b.len() && b[i + run] == '`' {
                run += 1;
            }
            let start = i + run;
            let mut j = start;
            let mut close = None;
            while j < b.len() {
                if b[j] == '`' {
                    let mut r = 0;
                    while j + r < b.len() && b[j + r] == '`' {
                        r += 1;
                    }
                    if r == run {
                        close = Some(j);
                        break;
                    }
                    j += r;
                } else {
                    j += 1;
                }
            }
            match close {
                Some(c) => {
                    let s: String = b[start..c].iter().collect();
                    md.spans.push((n, s.trim().to_string()));
                    i = c + run;
                }
                None => i = start,
            }
            continue;
        }
        if b[i] == ']' && b.get(i + 1) == Some(&'(') {
            let mut j = i + 2;
            while j < b.len() && b[j] != ')' {
                j += 1;
            }
            let target: String = b[i + 2..j.min(b.len())].iter().collect();
            if let Some(t) = target.split_whitespace().next() {
                md.links.push((n, t.to_string()));
            }
            i = j;
            continue;
        }
        i += 1;
    }
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &Md) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, h) in &md.headings {
        let base = slug(h);
        let k = seen.entry(base.clone()).or_insert(0);
        out.insert(if *k == 0 {
            base.clone()
        } else {
            format!("{base}-{k}")
        });
        *k += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Commands

/// Splits a shell line into words: quotes removed, stops at a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                has = true;
            }
            None if c == '#' && !has && cur.is_empty() => break,
            None if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            None => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

const SEPARATORS: &[&str] = &[
    "|", "||", "&&", ";", ">", ">>", "2>&1", "&", ")", "do", "then",
];

/// Checks every `juju config|run|deploy` command in `text`.
fn check_commands(charm: &Charm, text: &str) -> Vec<String> {
    let w = words(text);
    let mut problems = Vec::new();
    let mut i = 0;
    while i + 1 < w.len() {
        let is_juju = w[i] == "juju" || w[i].ends_with("/juju") || w[i] == "$(juju";
        if !is_juju {
            i += 1;
            continue;
        }
        let sub = w[i + 1].as_str();
        let mut args: Vec<&str> = Vec::new();
        for a in &w[i + 2..] {
            if SEPARATORS.contains(&a.as_str()) {
                break;
            }
            let t = a.trim_end_matches([';', ')']);
            args.push(t);
            if t.len() != a.len() {
                break; // `…;` or `…)` ends the command
            }
        }
        match sub {
            "config" => problems.extend(check_juju_config(charm, &args)),
            "run" => problems.extend(check_juju_run(charm, &args)),
            "deploy" => problems.extend(check_juju_deploy(charm, &args)),
            _ => {}
        }
        i += 2;
    }
    problems
}

fn check_juju_config(charm: &Charm, args: &[&str]) -> Vec<String> {
    let mut p = Vec::new();
    let mut seen_app = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-m" | "--model" | "--file" | "--format" | "-o" | "--output" => {
                it.next();
            }
            "--reset" => {
                if let Some(list) = it.next() {
                    for k in list.split(',') {
                        if !is_placeholder(k) && !charm.options.contains_key(k) {
                            p.push(format!("juju config --reset {k}: not a config option"));
                        }
                    }
                }
            }
            f if f.starts_with('-') => {}
            _ if !seen_app => seen_app = true,
            kv => {
                if let Some((k, v)) = kv.split_once('=') {
                    if is_placeholder(k) {
                        continue;
                    }
                    if let Err(e) = charm.check_option_value(k, v) {
                        p.push(format!("juju config {kv}: {e}"));
                    }
                } else if !is_placeholder(kv) && !charm.options.contains_key(kv) {
                    p.push(format!("juju config {kv}: not a config option"));
                }
            }
        }
    }
    p
}

fn check_juju_run(charm: &Charm, args: &[&str]) -> Vec<String> {
    let mut p = Vec::new();
    let mut action: Option<&str> = None;
    let mut kvs: Vec<(&str, &str)> = Vec::new();
    let mut params_file = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "-m" | "--model" | "--format" | "-o" | "--output" => {
                it.next();
            }
            "--params" => {
                params_file = true;
                it.next();
            }
            f if f.starts_with('-') => {}
            x if action.is_none() => {
                if x.contains('/') || is_placeholder(x) {
                    continue; // a target unit
                }
                action = Some(x);
            }
            kv => match kv.split_once('=') {
                Some((k, v)) => kvs.push((k, v)),
                None => p.push(format!("juju run … {kv}: expected key=value")),
            },
        }
    }
    let Some(name) = action else { return p };
    let Some(spec) = charm.actions.get(name) else {
        p.push(format!("juju run … {name}: no such action in actions.yaml"));
        return p;
    };
    for (k, v) in &kvs {
        match spec.params.get(*k) {
            None => p.push(format!("juju run … {name} {k}={v}: no such parameter")),
            Some(t) if t == "boolean" && !is_placeholder(v) && !matches!(*v, "true" | "false") => {
                p.push(format!("juju run … {name} {k}={v}: {k} is a boolean"))
            }
            Some(_) => {}
        }
    }
    if !params_file {
        for r in &spec.required {
            if !kvs.iter().any(|(k, _)| k == r) {
                p.push(format!("juju run … {name}: missing required parameter {r}"));
            }
        }
    }
    p
}

fn check_juju_deploy(charm: &Charm, args: &[&str]) -> Vec<String> {
    let mut p = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let kv = if *a == "--config" {
            it.next().copied()
        } else {
            a.strip_prefix("--config=")
        };
        let Some(kv) = kv else { continue };
        let Some((k, v)) = kv.split_once('=') else {
            continue; // a config file
        };
        if is_placeholder(k) {
            continue;
        }
        if let Err(e) = charm.check_option_value(k, v) {
            p.push(format!("juju deploy --config {kv}: {e}"));
        }
    }
    p
}

/// Names quoted in prose: hyphenated names must exist; `key=value` must be valid.
fn check_names(charm: &Charm, md: &Md) -> Vec<String> {
    let mut p = Vec::new();
    for (n, span) in &md.spans {
        if span.contains(char::is_whitespace) {
            continue;
        }
        if let Some((k, v)) = span.split_once('=') {
            let key_like = !k.is_empty()
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !key_like {
                continue;
            }
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            if charm.options.contains_key(k) {
                if let Err(e) = charm.check_option_value(k, v) {
                    p.push(format!("line {n}: {e}"));
                }
            } else if !charm.is_param(k) && !charm.other_keys.contains(k) {
                p.push(format!(
                    "line {n}: `{span}`: {k} is not a config option or action parameter"
                ));
            }
        } else if is_kebab(span) && !charm.known_name(span) {
            p.push(format!(
                "line {n}: `{span}` is not a config option, action, parameter or known name"
            ));
        }
    }
    p
}

fn check_doc_commands(charm: &Charm, md: &Md) -> Vec<String> {
    let mut p = Vec::new();
    for (n, text) in md.spans.iter().chain(md.code_lines.iter()) {
        for e in check_commands(charm, text) {
            p.push(format!("line {n}: {e}"));
        }
    }
    p
}

/// Shell scripts: every line with continuations joined.
fn check_script_commands(charm: &Charm, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let mut acc = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if acc.is_empty() {
            start = i + 1;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(body) => {
                acc.push_str(body);
                acc.push(' ');
            }
            None => {
                acc.push_str(line);
                for e in check_commands(charm, &acc) {
                    p.push(format!("line {start}: {e}"));
                }
                acc.clear();
            }
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// The charm's source: string literals and constants

#[derive(Debug, Default)]
struct Source {
    /// Literal text of every string literal, split at format placeholders (constants
    /// used as `{NAME}` are substituted).
    segments: Vec<String>,
    consts: BTreeMap<String, String>,
    /// (file, segments) of string literals passed to a status-setting call in src/charm/.
    status_literals: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Punct(char),
}

/// A small Rust lexer: strings (with escapes, raw and byte strings), words, punctuation;
/// comments and char literals skipped.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if ch == '"' {
            let (s, next) = lex_string(&c, i + 1);
            out.push(Tok::Str(s));
            i = next;
        } else if (ch == 'r' || ch == 'b') && is_raw_start(&c, i) {
            let mut j = i;
            if c[j] == 'b' {
                j += 1;
            }
            if c.get(j) == Some(&'r') {
                j += 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                j += 1; // opening quote
                let start = j;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                        break;
                    }
                    j += 1;
                }
                out.push(Tok::Str(c[start..j.min(c.len())].iter().collect()));
                i = j + 1 + hashes;
            } else {
                let (s, next) = lex_string(&c, j + 1);
                out.push(Tok::Str(s));
                i = next;
            }
        } else if ch == '\'' {
            // char literal ('x', '\n', '\u{..}', '"') or lifetime ('a)
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Word(c[start..i].iter().collect()));
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

fn is_raw_start(c: &[char], i: usize) -> bool {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if c[j] == 'b' {
        j += 1;
        if c.get(j) == Some(&'"') {
            return true;
        }
    }
    if c.get(j) != Some(&'r') {
        return false;
    }
    j += 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    c.get(j) == Some(&'"')
}

fn lex_string(c: &[char], mut i: usize) -> (String, usize) {
    let mut s = String::new();
    while i < c.len() {
        match c[i] {
            '"' => return (s, i + 1),
            '\\' => {
                i += 1;
                match c.get(i) {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('0') => s.push('\0'),
                    Some('\n') => {
                        while i + 1 < c.len() && c[i + 1].is_whitespace() {
                            i += 1;
                        }
                    }
                    Some('u') => {
                        while i < c.len() && c[i] != '}' {
                            i += 1;
                        }
                        s.push('?');
                    }
                    Some('x') => {
                        i += 2;
                        s.push('?');
                    }
                    Some(other) => s.push(*other),
                    None => {}
                }
                i += 1;
            }
            ch => {
                s.push(ch);
                i += 1;
            }
        }
    }
    (s, i)
}

/// Splits a format string at its placeholders; `{{`/`}}` are braces, `{CONST}` is
/// replaced by the constant's value.
fn segments(lit: &str, consts: &BTreeMap<String, String>) -> Vec<String> {
    let c: Vec<char> = lit.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '{' && c.get(i + 1) == Some(&'{') {
            cur.push('{');
            i += 2;
        } else if c[i] == '}' && c.get(i + 1) == Some(&'}') {
            cur.push('}');
            i += 2;
        } else if c[i] == '{' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '}' {
                j += 1;
            }
            let inner: String = c[i + 1..j.min(c.len())].iter().collect();
            let name = inner.split(':').next().unwrap_or_default();
            match consts.get(name) {
                Some(v) => cur.push_str(v),
                None => out.push(std::mem::take(&mut cur)),
            }
            i = j + 1;
        } else {
            cur.push(c[i]);
            i += 1;
        }
    }
    out.push(cur);
    out
}

/// The part of a file before its test module.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

const STATUS_KINDS: &[&str] = &["blocked", "waiting", "maintenance", "active"];

fn load_source() -> Source {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut lexed = Vec::new();
    for f in &files {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = fs::read_to_string(f).expect("read source");
        let rel = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        lexed.push((rel, lex(without_tests(&text))));
    }
    let mut src = Source::default();
    for (_, toks) in &lexed {
        for w in toks.windows(7) {
            if let [Tok::Word(k), Tok::Word(name), Tok::Punct(':'), Tok::Punct('&'), Tok::Word(ty), Tok::Punct('='), Tok::Str(v)] =
                w
            {
                if k == "const" && ty == "str" {
                    src.consts.insert(name.clone(), v.clone());
                }
            }
        }
    }
    for (file, toks) in &lexed {
        for t in toks {
            if let Tok::Str(s) = t {
                src.segments.extend(segments(s, &src.consts));
            }
        }
        if !file.starts_with("src/charm/") {
            continue;
        }
        for (i, t) in toks.iter().enumerate() {
            let Tok::Word(kind) = t else { continue };
            if !STATUS_KINDS.contains(&kind.as_str()) || i < 2 {
                continue;
            }
            let call = match (&toks[i - 1], &toks[i - 2]) {
                (Tok::Punct('.'), Tok::Word(r)) if r == "reports" => true,
                (Tok::Punct(':'), Tok::Punct(':')) => {
                    matches!(toks.get(i.wrapping_sub(3)), Some(Tok::Word(s)) if s == "Status")
                }
                _ => false,
            };
            if !call || toks.get(i + 1) != Some(&Tok::Punct('(')) {
                continue;
            }
            let mut depth = 0;
            let mut segs = Vec::new();
            for t in &toks[i + 1..] {
                match t {
                    Tok::Punct('(') => depth += 1,
                    Tok::Punct(')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Str(s) => segs.extend(segments(s, &src.consts)),
                    _ => {}
                }
            }
            src.status_literals.push((file.clone(), segs));
        }
    }
    src
}

fn alnum(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphanumeric()).count()
}

/// Whether `frag` is literal text of the source: inside one literal segment, or the end
/// of one segment followed by the start of another (text joined through a placeholder,
/// e.g. `"Upgrading to"` + `" v{}: …"`).
fn in_source(src: &Source, frag: &str) -> bool {
    if src.segments.iter().any(|s| s.contains(frag)) {
        return true;
    }
    frag.char_indices().skip(1).any(|(k, _)| {
        let (a, b) = frag.split_at(k);
        alnum(a) >= 4
            && src.segments.iter().any(|s| s.ends_with(a))
            && src.segments.iter().any(|s| s.starts_with(b))
    })
}

/// Literal fragments of a documented message, split at `<placeholders>`.
fn fragments(msg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let c: Vec<char> = msg.chars().collect();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '<' {
            let mut j = i + 1;
            while j < c.len()
                && (c[j].is_ascii_alphanumeric() || matches!(c[j], '-' | '_' | '.' | '|'))
            {
                j += 1;
            }
            if j < c.len() && c[j] == '>' && j > i + 1 {
                out.push(std::mem::take(&mut cur));
                i = j + 1;
                continue;
            }
        }
        cur.push(c[i]);
        i += 1;
    }
    out.push(cur);
    out.into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| alnum(f) >= 3)
        .collect()
}

/// Status messages quoted in headings: (line, kind, message).
fn documented_statuses(md: &Md) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, h) in &md.headings {
        let mut hm = Md::default();
        scan_inline(&mut hm, *n, h);
        for (_, span) in hm.spans {
            if let Some((kind, msg)) = span.split_once(": ") {
                if STATUS_KINDS.contains(&kind) {
                    out.push((*n, kind.to_string(), msg.to_string()));
                }
            }
        }
    }
    out
}

fn check_statuses(src: &Source, md: &Md) -> Vec<String> {
    let mut p = Vec::new();
    for (n, kind, msg) in documented_statuses(md) {
        let frags = fragments(&msg);
        if frags.is_empty() {
            p.push(format!(
                "line {n}: `{kind}: {msg}` has no literal text to check"
            ));
        }
        for f in frags {
            if !in_source(src, &f) {
                p.push(format!(
                    "line {n}: `{kind}: {msg}`: \"{f}\" does not appear in the charm's source"
                ));
            }
        }
    }
    p
}

/// Every status literal the charm sets in src/charm/ appears in a documented heading.
fn check_statuses_documented(src: &Source, md: &Md) -> Vec<String> {
    let documented: Vec<String> = documented_statuses(md)
        .into_iter()
        .map(|(_, _, m)| m)
        .collect();
    let mut p = Vec::new();
    for (file, segs) in &src.status_literals {
        for s in segs {
            let s = s.trim();
            if alnum(s) < 4 {
                continue;
            }
            if !documented.iter().any(|d| d.contains(s)) {
                p.push(format!(
                    "{file}: status text \"{s}\" is not documented in docs/troubleshooting.md"
                ));
            }
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// Links

fn check_links(doc: &str, md: &Md) -> Vec<String> {
    let mut p = Vec::new();
    let dir = Path::new(doc).parent().unwrap_or(Path::new(""));
    for (n, target) in &md.links {
        if target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with("mailto:")
        {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            PathBuf::from(doc)
        } else {
            dir.join(path)
        };
        let abs = root().join(&file);
        if !abs.exists() {
            p.push(format!(
                "line {n}: link {target}: {} does not exist",
                file.display()
            ));
            continue;
        }
        if let Some(a) = anchor {
            if abs.extension().is_some_and(|e| e == "md") {
                let text = fs::read_to_string(&abs).unwrap_or_default();
                if !anchors(&parse_md(&text)).contains(a) {
                    p.push(format!(
                        "line {n}: link {target}: no heading #{a} in {}",
                        file.display()
                    ));
                }
            }
        }
    }
    p
}

// ---------------------------------------------------------------------------------------
// README tables

/// First words of the first column of the table under `## <section>`.
fn table_names(text: &str, section: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("## ") {
            inside = line.trim_start_matches("## ").trim() == section;
            continue;
        }
        if !inside || !line.starts_with('|') {
            continue;
        }
        let cell = line.trim_start_matches('|').split('|').next().unwrap_or("");
        let mut md = Md::default();
        scan_inline(&mut md, 0, cell);
        if let Some((_, span)) = md.spans.first() {
            if let Some(w) = span.split_whitespace().next() {
                names.insert(w.to_string());
            }
        }
    }
    names
}

// ---------------------------------------------------------------------------------------
// The tests

fn setup() -> (Source, Charm) {
    let src = load_source();
    let charm = load_charm(&src);
    (src, charm)
}

#[test]
fn readme_tables_list_every_option_and_action() {
    let (_, charm) = setup();
    let readme = read("README.md");
    let mut p = Vec::new();
    let opts = table_names(&readme, "Configuration");
    let want: BTreeSet<String> = charm.options.keys().cloned().collect();
    for o in want.difference(&opts) {
        p.push(format!(
            "option {o} (config.yaml) is missing from the README's Configuration table"
        ));
    }
    for o in opts.difference(&want) {
        p.push(format!(
            "the README's Configuration table lists {o}, which config.yaml does not define"
        ));
    }
    let acts = table_names(&readme, "Actions");
    let want: BTreeSet<String> = charm.actions.keys().cloned().collect();
    for a in want.difference(&acts) {
        p.push(format!(
            "action {a} (actions.yaml) is missing from the README's Actions table"
        ));
    }
    for a in acts.difference(&want) {
        p.push(format!(
            "the README's Actions table lists {a}, which actions.yaml does not define"
        ));
    }
    report("README tables", &p);
}

#[test]
fn names_quoted_in_the_docs_exist() {
    let (_, charm) = setup();
    let mut p = Vec::new();
    for doc in operator_docs() {
        let md = parse_md(&read(&doc));
        p.extend(
            check_names(&charm, &md)
                .into_iter()
                .map(|e| format!("{doc}: {e}")),
        );
    }
    report("names in the docs", &p);
}

#[test]
fn juju_commands_in_docs_and_scripts_are_valid() {
    let (_, charm) = setup();
    let mut p = Vec::new();
    let mut count = 0;
    let mut docs = operator_docs();
    docs.push("tests/integration/README.md".into());
    for doc in docs {
        let md = parse_md(&read(&doc));
        count += md.code_lines.len() + md.spans.len();
        p.extend(
            check_doc_commands(&charm, &md)
                .into_iter()
                .map(|e| format!("{doc}: {e}")),
        );
    }
    for script in files_in("tests/integration", ".sh") {
        p.extend(
            check_script_commands(&charm, &read(&script))
                .into_iter()
                .map(|e| format!("{script}: {e}")),
        );
    }
    assert!(
        count > 100,
        "found only {count} code lines and spans: is the parser broken?"
    );
    report("juju commands", &p);
}

#[test]
fn troubleshooting_messages_match_the_source() {
    let (src, _) = setup();
    let md = parse_md(&read("docs/troubleshooting.md"));
    let n = documented_statuses(&md).len();
    assert!(
        n >= 40,
        "docs/troubleshooting.md quotes only {n} status messages in headings"
    );
    assert!(
        src.status_literals.len() >= 10,
        "found only {} status calls in src/charm: is the lexer broken?",
        src.status_literals.len()
    );
    let mut p = check_statuses(&src, &md);
    p.extend(check_statuses_documented(&src, &md));
    report("docs/troubleshooting.md", &p);
}

#[test]
fn relative_links_resolve() {
    let mut p = Vec::new();
    let mut docs = operator_docs();
    docs.push("tests/integration/README.md".into());
    for doc in docs {
        let md = parse_md(&read(&doc));
        p.extend(
            check_links(&doc, &md)
                .into_iter()
                .map(|e| format!("{doc}: {e}")),
        );
    }
    report("links", &p);
}

const JOBS: &[&str] = &[
    "unit-test",
    "pack",
    "test-shared-storage-auto",
    "test-shared-storage-all",
    "test-shared-storage-web-worker",
];

fn step_runs(job: &Yaml) -> Vec<String> {
    job["steps"]
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|st| st["run"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `tests/integration/<name>.sh` paths in a run script.
fn script_paths(run: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = run;
    while let Some(i) = rest.find("tests/integration/") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.')))
            .unwrap_or(tail.len());
        let p = &tail[..end];
        if p.ends_with(".sh") {
            out.push(p.to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn workflow_matches_the_scripts() {
    use std::os::unix::fs::PermissionsExt;
    let wf = yaml(".github/workflows/ci.yml");
    let jobs = wf["jobs"].as_mapping().expect("workflow has jobs");
    let ids: BTreeSet<String> = yaml_keys(&wf["jobs"]).into_iter().collect();
    let mut p = Vec::new();
    if wf.get("on").is_none() {
        p.push("the workflow has no `on:` triggers".into());
    }
    for j in JOBS {
        if !ids.contains(*j) {
            p.push(format!("job {j} is missing"));
        }
    }
    let mut called = BTreeSet::new();
    for (id, job) in jobs {
        let id = id.as_str().unwrap_or_default();
        if job["runs-on"].as_str() != Some("ubuntu-24.04") {
            p.push(format!("job {id}: runs-on must be ubuntu-24.04"));
        }
        let needs: Vec<String> = match &job["needs"] {
            Yaml::String(s) => vec![s.clone()],
            Yaml::Sequence(v) => v
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        for n in needs {
            if !ids.contains(&n) {
                p.push(format!("job {id} needs unknown job {n}"));
            }
        }
        if job["steps"].as_sequence().is_none_or(|s| s.is_empty()) {
            p.push(format!("job {id} has no steps"));
        }
        for run in step_runs(job) {
            let lines = run.lines().filter(|l| !l.trim().is_empty()).count();
            if lines > 3 {
                p.push(format!(
                    "job {id}: a run step has {lines} lines; put it in a script under tests/integration/"
                ));
            }
            for s in script_paths(&run) {
                called.insert(s);
            }
        }
    }
    let all: String = jobs
        .values()
        .flat_map(step_runs)
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "cargo xtask test",
        "cargo xtask pack",
        "cargo xtask check-charm",
        "charmcraft pack --destructive-mode",
        "charmcraft analyse",
    ] {
        if !all.contains(needle) {
            p.push(format!("no step runs `{needle}`"));
        }
    }
    if !read("README.md").contains("cargo xtask test") {
        p.push("the README no longer names `cargo xtask test`; update the unit-test job".into());
    }
    for s in &called {
        let path = root().join(s);
        match fs::metadata(&path) {
            Err(_) => p.push(format!("the workflow calls {s}, which does not exist")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                p.push(format!("{s} is not executable"))
            }
            Ok(_) => {}
        }
    }
    for s in files_in("tests/integration", ".sh") {
        let text = read(&s);
        if !text.starts_with("#!/usr/bin/env bash") {
            p.push(format!("{s} does not start with #!/usr/bin/env bash"));
        }
        if !text.contains("set -euo pipefail") {
            p.push(format!("{s} does not run set -euo pipefail"));
        }
        if !s.ends_with("/lib.sh") && !called.contains(&s) {
            p.push(format!("{s} is not called by the workflow"));
        }
    }
    report(".github/workflows/ci.yml", &p);
}

/// The checks above must be able to fail: broken inputs give problems.
#[test]
fn checks_catch_broken_docs() {
    let (src, charm) = setup();
    let bad_cmds = [
        "juju config concourse-ci log-levl=debug",
        "juju config concourse-ci log-level=warn",
        "juju config concourse-ci web-port=70000",
        "juju config concourse-ci --reset shared-storag",
        "juju deploy ./c.charm --config shared-storage=maybe",
        "juju run concourse-ci/leader upgrade versoin=8.0.0",
        "juju run concourse-ci/leader upgrade",
        "juju run concourse-ci/0 check-stats",
        "juju run concourse-ci/0 check-status verbose=yes-please",
    ];
    for c in bad_cmds {
        assert!(!check_commands(&charm, c).is_empty(), "not caught: {c}");
    }
    let good_cmds = [
        "juju config concourse-ci log-level=debug tag=gpu,big",
        "juju run concourse-ci/leader upgrade version=8.0.0 --wait=10m",
        "juju run \"$APP/0\" check-status verbose=true",
        "juju config \"$APP\" \"version=$V2\"",
        "juju deploy ./c.charm -n 3 --config shared-storage=shared --config version=7.14.3",
    ];
    for c in good_cmds {
        let p = check_commands(&charm, c);
        assert!(p.is_empty(), "false alarm on {c}: {p:?}");
    }
    let md = parse_md("Set `drain-timeut` or `log-level=warn` or `max-unavailable=2`.\n");
    assert_eq!(check_names(&charm, &md).len(), 3);
    let md = parse_md(
        "### `waiting: Waiting for PostgreSQL credentialz`\n\
         ### `blocked: storage volume <path> is read-write; remount it`\n\
         ### `maintenance: Upgrading towards v<version>: downloading the release`\n",
    );
    assert_eq!(
        check_statuses(&src, &md).len(),
        3,
        "{:?}",
        check_statuses(&src, &md)
    );
    let md = parse_md(
        "### `waiting: Waiting for PostgreSQL credentials`\n\
         ### `maintenance: Downloading v<version> (<percent>)`\n",
    );
    assert!(
        check_statuses(&src, &md).is_empty(),
        "{:?}",
        check_statuses(&src, &md)
    );
    assert!(!check_statuses_documented(&src, &md).is_empty());
    let md = parse_md("See [x](no-such-file.md) and [y](upgrade.md#no-such-heading).\n");
    assert_eq!(check_links("docs/x.md", &md).len(), 2);
    let md = parse_md("```\njuju run concourse-ci/0 \\\n    check-stats\n```\n");
    assert_eq!(check_doc_commands(&charm, &md).len(), 1);
    let md = parse_md("Text\n\n    juju config concourse-ci log-level=warn\n");
    assert_eq!(check_doc_commands(&charm, &md).len(), 1);
    assert_eq!(
        slug("`blocked: invalid <option>: <problem>; <fix>`"),
        "blocked-invalid-option-problem-fix"
    );
    assert_eq!(
        check_script_commands(&charm, "juju run \"$U\" upgrade \\\n  \"versio=$V\"\n").len(),
        2
    );
}
