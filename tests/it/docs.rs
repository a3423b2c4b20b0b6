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
//! - docs/troubleshooting.md has exactly one heading per entry of the charm's status
//!   catalogue (`charm::status::messages`), quoted as `` `<kind>: <text>` ``;
//! - every relative link (and `#anchor`) in the docs points at an existing file (heading);
//! - the workflow parses, has the documented jobs on ubuntu-24.04, keeps its `run:` steps
//!   short, and every script it calls exists, is executable and runs `set -euo pipefail`.
//!
//! Markdown is parsed with `pulldown-cmark`, shell words split with `shlex`.
//! `checks_catch_broken_docs` feeds deliberately broken text to each check, so a check
//! that silently stopped finding anything fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use concourse_ci::charm::peers;
use concourse_ci::charm::status::messages;
use concourse_ci::config::CharmConfig;
use concourse_ci::upgrade;
use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};
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
    /// storage, resources), hook names, the charm's databag keys, and a short list of
    /// outside names (Juju, Concourse, LXD, NFS).
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
    "juju-no-proxy",
    // COS charms (docs/observability.md)
    "opentelemetry-collector",
    "grafana-agent",
    // Concourse's container placement strategies (README)
    "volume-locality",
    "fewest-build-containers",
    "limit-active-tasks",
    "limit-active-containers",
    "limit-active-volumes",
    // a tls-certificates provider (docs/tls.md)
    "self-signed-certificates",
    "update-status-hook-interval",
    // issue 14: the shared secret's label, relation fields, Concourse and Python-charm names
    "web-keys",
    "vault-kv",
    "tls-ca",
    "secret-tls",
    "extra-web-flags",
    "vault-enable-kv-mount-cache",
    "volume-locality",
    "client-secret",
    "verify-full",
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
    // hook tools and xtask commands (docs/scale.md)
    "config-get",
    "is-leader",
    "status-set",
    "relation-get",
    "relation-list",
    "relation-ids",
    "goal-state",
    "application-version-set",
    "bench-hook",
    // hook tools and hooks docs/scale.md names where the calls go (issue 13, wave 4)
    "relation-set",
    "relation-joined",
    "network-get",
    "opened-ports",
    "resource-get",
    // hook tools (docs/observability.md, observe4)
    "open-port",
    "close-port",
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

/// Keys of the peer databags that the docs may quote (from the charm itself).
fn databag_keys() -> Vec<&'static str> {
    vec![
        peers::WEB_UNIT,
        peers::ADMIN_SECRET,
        peers::NONCE,
        peers::TSA_HOST,
        peers::TSA_PUBLIC_KEY,
        peers::WEB_IP,
        peers::WORKER_PUBLIC_KEY,
        peers::CONCOURSE_VERSION,
        concourse_ci::charm::workload::WEB_KEYS_SECRET,
        concourse_ci::charm::release::RELEASE_DIGESTS,
        upgrade::K_PHASE,
        upgrade::K_GEN,
        upgrade::K_TARGET,
        upgrade::K_FROM,
        upgrade::K_GRANT,
        upgrade::K_ERROR,
        upgrade::K_ROLLBACK,
        upgrade::K_RELEASE,
        upgrade::K_CONFIG_VERSION,
        upgrade::K_ACK,
        upgrade::K_STATE,
        upgrade::K_SKIPPED,
        upgrade::K_ACK_FROM,
        upgrade::K_PROGRESS,
    ]
}

fn load_charm() -> Charm {
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
    other.extend(databag_keys().into_iter().map(String::from));
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
        // issue 14's options go together (connectors): each is checked on its own here
        if let Some(r) = concourse_ci::web_options::check_alone(key, value) {
            return r.map_err(|e| format!("`{key}={value}` is rejected by the charm: {e}"));
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

/// A value the docs leave to the reader: `<version>`, `$V2`, `"${VERSION}"`, or a file
/// (`juju config` reads `key=@path` from the file).
fn is_placeholder(v: &str) -> bool {
    v.contains('$') || v.contains('<') || v.contains('`') || v.contains('…') || v.starts_with('@')
}

// ---------------------------------------------------------------------------------------
// Markdown

/// What the checks need from a Markdown file, with 1-based line numbers.
#[derive(Debug, Default)]
struct Md {
    /// (line, content) of inline code spans, headings included.
    spans: Vec<(usize, String)>,
    /// (line, text) of lines inside code blocks (continuations joined).
    code_lines: Vec<(usize, String)>,
    /// (line, rendered text, code spans) of headings.
    headings: Vec<(usize, String, Vec<String>)>,
    /// (line, target) of links.
    links: Vec<(usize, String)>,
}

fn parse_md(text: &str) -> Md {
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let mut md = Md::default();
    let mut heading: Option<(usize, String, Vec<String>)> = None;
    let mut code_block: Option<usize> = None;
    for (event, range) in Parser::new(text).into_offset_iter() {
        let n = line_of(range.start);
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some((n, String::new(), Vec::new())),
            Event::End(TagEnd::Heading(_)) => md.headings.extend(heading.take()),
            Event::Start(Tag::CodeBlock(kind)) => {
                // the first line of a fenced block is the fence itself
                let fenced = matches!(kind, CodeBlockKind::Fenced(_));
                code_block = Some(n + usize::from(fenced));
            }
            Event::End(TagEnd::CodeBlock) => code_block = None,
            Event::Text(t) if code_block.is_some() => {
                let first = code_block.unwrap_or(n);
                md.code_lines.extend(code_lines(first, &t));
                code_block = Some(first + t.lines().count());
            }
            Event::Code(c) => {
                md.spans.push((n, c.trim().to_string()));
                if let Some((_, text, spans)) = heading.as_mut() {
                    text.push_str(&c);
                    spans.push(c.to_string());
                }
            }
            Event::Text(t) => {
                if let Some((_, text, _)) = heading.as_mut() {
                    text.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. }) => md.links.push((n, dest_url.to_string())),
            _ => {}
        }
    }
    md
}

/// Lines of a code block starting at line `first`, shell continuations (`\`) joined.
fn code_lines(first: usize, block: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in block.lines().enumerate() {
        let line = raw.trim();
        let (start, mut acc) = pending.take().unwrap_or((first + i, String::new()));
        match line.strip_suffix('\\') {
            Some(body) => {
                acc.push_str(body);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    out.extend(pending);
    out
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
    for (_, h, _) in &md.headings {
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

/// Splits a shell line into words (quotes removed, comments dropped), as far as it is
/// valid shell: prose in code spans may have an unbalanced quote.
fn words(line: &str) -> Vec<String> {
    shlex::Shlex::new(line).collect()
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
// Status messages

const STATUS_KINDS: &[&str] = &["blocked", "waiting", "maintenance", "active"];

/// Status messages quoted in headings: (line, `kind: message`).
fn documented_statuses(md: &Md) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, _, spans) in &md.headings {
        for span in spans {
            if let Some((kind, _)) = span.split_once(": ") {
                if STATUS_KINDS.contains(&kind) {
                    out.push((*n, span.clone()));
                }
            }
        }
    }
    out
}

/// The catalogue as the docs quote it: `kind: text` with `<placeholders>`.
fn catalogue() -> Vec<String> {
    messages::ALL
        .iter()
        .map(|m| format!("{}: {}", m.kind.as_str(), m.documented()))
        .collect()
}

/// Every documented status is a catalogue entry, quoted exactly.
fn check_statuses(catalogue: &[String], md: &Md) -> Vec<String> {
    let mut p = Vec::new();
    for (n, quoted) in documented_statuses(md) {
        if !catalogue.contains(&quoted) {
            p.push(format!(
                "line {n}: `{quoted}` is not in the charm's status catalogue (src/charm/status/messages.rs)"
            ));
        }
    }
    p
}

/// Every catalogue entry has a heading.
fn check_statuses_documented(catalogue: &[String], md: &Md) -> Vec<String> {
    let documented: Vec<String> = documented_statuses(md)
        .into_iter()
        .map(|(_, q)| q)
        .collect();
    catalogue
        .iter()
        .filter(|c| !documented.contains(c))
        .map(|c| format!("status `{c}` has no heading in docs/troubleshooting.md"))
        .collect()
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
    let mut first_cell = false;
    let mut in_section = false;
    for event in Parser::new_ext(text, pulldown_cmark::Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading { .. }) => inside = true,
            Event::End(TagEnd::Heading(_)) => inside = false,
            Event::Text(t) if inside => in_section = t.trim() == section,
            Event::Start(Tag::TableRow) => first_cell = true,
            Event::End(TagEnd::TableCell) => first_cell = false,
            Event::Code(c) if in_section && first_cell => {
                if let Some(w) = c.split_whitespace().next() {
                    names.insert(w.to_string());
                }
                first_cell = false;
            }
            _ => {}
        }
    }
    names
}

// ---------------------------------------------------------------------------------------
// The tests

fn setup() -> Charm {
    load_charm()
}

#[test]
fn readme_tables_list_every_option_and_action() {
    let charm = setup();
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
    let charm = setup();
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
    let charm = setup();
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
fn troubleshooting_documents_the_status_catalogue() {
    let md = parse_md(&read("docs/troubleshooting.md"));
    let n = documented_statuses(&md).len();
    assert!(
        n >= 40,
        "docs/troubleshooting.md quotes only {n} status messages in headings"
    );
    let catalogue = catalogue();
    let mut p = check_statuses(&catalogue, &md);
    p.extend(check_statuses_documented(&catalogue, &md));
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
    let charm = setup();
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
    let catalogue = catalogue();
    let md = parse_md(
        "### `waiting: Waiting for PostgreSQL credentialz`\n\
         ### `blocked: storage volume <path> is read-write; remount it`\n\
         ### `maintenance: Upgrading towards v<version>: downloading the release`\n\
         ### `active: Web ready (v<version>)`\n",
    );
    let p = check_statuses(&catalogue, &md);
    assert_eq!(p.len(), 4, "{p:?}");
    let md = parse_md(
        "### `waiting: Waiting for PostgreSQL credentials`\n\
         ### `maintenance: Downloading v<version> (<percent>)`\n",
    );
    let p = check_statuses(&catalogue, &md);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        check_statuses_documented(&catalogue, &md).len(),
        catalogue.len() - 2
    );
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
