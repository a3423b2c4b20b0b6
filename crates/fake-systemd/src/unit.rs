//! Parsing of unit files, environment files, command lines and time spans, the way systemd
//! does it (the subset a charm uses): `src/core/load-fragment.c` (settings),
//! `src/basic/env-file.c` (`EnvironmentFile=`), `src/basic/extract-word.c` (command lines)
//! and `src/basic/time-util.c` (time spans) of systemd/systemd. Pure functions; nothing here touches the system or
//! panics on malformed input: bad lines become warnings and keep defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::Signal;

/// One `Key=Value` assignment, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub section: String,
    pub key: String,
    pub value: String,
}

/// Splits unit-file text into assignments (comments, continuations, sections), collecting
/// warnings for lines systemd would ignore.
pub fn parse_ini(text: &str, warnings: &mut Vec<String>) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        // Like systemd, each physical line is stripped before continuations are joined.
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let t = full.trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('[') {
            match t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                Some(name) => section = name.to_string(),
                None => warnings.push(format!("invalid section header: {t}")),
            }
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            warnings.push(format!("missing '=', ignoring line: {t}"));
            continue;
        };
        if section.is_empty() {
            warnings.push(format!("assignment outside of section, ignoring: {t}"));
            continue;
        }
        out.push(Assignment {
            section: section.clone(),
            key: k.trim().to_string(),
            value: v.trim().to_string(),
        });
    }
    if !pending.trim().is_empty() {
        warnings.push("file ends in a line continuation".to_string());
    }
    out
}

/// `Type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Simple,
    Exec,
    /// Runs like `simple`, but its main process is a command, not a daemon: a death by
    /// SIGHUP, SIGINT, SIGTERM or SIGPIPE is not clean (`EXIT_CLEAN_COMMAND` in
    /// `src/core/service.c`).
    Oneshot,
    /// forking, notify, dbus, idle: run like `simple` (documented gap).
    Other,
}

/// `TimeoutStopFailureMode=`: what a stop that timed out does next (`src/core/service.c`,
/// `service_dispatch_timer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// The default: SIGKILL (`FinalKillSignal=`) when `SendSIGKILL=yes`.
    Terminate,
    /// `WatchdogSignal=`, then after `TimeoutAbortSec=` the SIGKILL.
    Abort,
    Kill,
}

/// `KillMode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    ControlGroup,
    Mixed,
    Process,
    None,
}

impl KillMode {
    pub fn as_str(self) -> &'static str {
        match self {
            KillMode::ControlGroup => "control-group",
            KillMode::Mixed => "mixed",
            KillMode::Process => "process",
            KillMode::None => "none",
        }
    }
}

/// `Restart=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    No,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
    Always,
}

/// Exit codes and signals (`SuccessExitStatus=`, `RestartPreventExitStatus=`,
/// `RestartForceExitStatus=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitSet {
    pub codes: Vec<i32>,
    pub signals: Vec<i32>,
}

/// One `Exec*=` command: raw words (expanded at run time) and prefix flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    pub words: Vec<String>,
    /// `-` prefix: a failure is ignored.
    pub ignore_failure: bool,
    /// `+` prefix: runs with full privileges (as root).
    pub privileged: bool,
}

/// The `[Service]`, `[Unit]` and `[Install]` settings this fake honours.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub description: String,
    pub service_type: ServiceType,
    pub exec_start: Vec<ExecCommand>,
    pub exec_start_pre: Vec<ExecCommand>,
    pub exec_reload: Vec<ExecCommand>,
    pub exec_stop: Vec<ExecCommand>,
    /// `Environment=` assignments in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths; bool = optional (`-` prefix).
    pub environment_files: Vec<(String, bool)>,
    /// `LoadCredential=` (ID, source) pairs in order ([`crate::credentials`]).
    pub load_credentials: Vec<(String, String)>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Path and optional flag (`-` prefix); `~` means the user's home.
    pub working_directory: Option<(String, bool)>,
    pub kill_signal: Signal,
    pub kill_mode: KillMode,
    /// None = infinity.
    pub timeout_stop: Option<Duration>,
    pub timeout_stop_failure_mode: FailureMode,
    /// `WatchdogSignal=` (default SIGABRT): sent when an aborting stop timed out.
    pub watchdog_signal: Signal,
    /// `TimeoutAbortSec=`: None when unset (then `TimeoutStopSec=` applies); Some(None) =
    /// infinity.
    pub timeout_abort: Option<Option<Duration>>,
    /// `SendSIGKILL=` (default yes).
    pub send_sigkill: bool,
    /// `FinalKillSignal=` (default SIGKILL).
    pub final_kill_signal: Signal,
    pub restart: RestartPolicy,
    pub restart_sec: Duration,
    /// Extra exit codes and signals counted as success (`SuccessExitStatus=`).
    pub success_exit_codes: Vec<i32>,
    pub success_signals: Vec<Signal>,
    pub restart_prevent: ExitSet,
    pub restart_force: ExitSet,
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub warnings: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            description: String::new(),
            service_type: ServiceType::Simple,
            exec_start: Vec::new(),
            exec_start_pre: Vec::new(),
            exec_reload: Vec::new(),
            exec_stop: Vec::new(),
            environment: Vec::new(),
            environment_files: Vec::new(),
            load_credentials: Vec::new(),
            user: None,
            group: None,
            working_directory: None,
            kill_signal: Signal::SIGTERM,
            kill_mode: KillMode::ControlGroup,
            timeout_stop: Some(Duration::from_secs(90)),
            timeout_stop_failure_mode: FailureMode::Terminate,
            watchdog_signal: Signal::SIGABRT,
            timeout_abort: None,
            send_sigkill: true,
            final_kill_signal: Signal::SIGKILL,
            restart: RestartPolicy::No,
            restart_sec: Duration::from_millis(100),
            success_exit_codes: Vec::new(),
            success_signals: Vec::new(),
            restart_prevent: ExitSet::default(),
            restart_force: ExitSet::default(),
            wanted_by: Vec::new(),
            required_by: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl ServiceConfig {
    /// Whether the unit has an `[Install]` section that enable can act on.
    pub fn installable(&self) -> bool {
        !self.wanted_by.is_empty() || !self.required_by.is_empty()
    }
}

/// Builds the configuration from unit text (main file followed by drop-ins).
pub fn parse_service(text: &str) -> ServiceConfig {
    let mut c = ServiceConfig::default();
    let mut warnings = Vec::new();
    let assignments = parse_ini(text, &mut warnings);
    for a in assignments {
        let v = a.value.as_str();
        match (a.section.as_str(), a.key.as_str()) {
            ("Unit", "Description") => c.description = v.to_string(),
            ("Service", "Type") => {
                c.service_type = match v {
                    "simple" | "" => ServiceType::Simple,
                    "exec" => ServiceType::Exec,
                    "oneshot" => ServiceType::Oneshot,
                    "forking" | "notify" | "notify-reload" | "dbus" | "idle" => ServiceType::Other,
                    _ => {
                        warnings.push(format!("invalid Type={v}, using simple"));
                        ServiceType::Simple
                    }
                }
            }
            ("Service", "ExecStart") => push_exec(&mut c.exec_start, v, &mut warnings),
            ("Service", "ExecStartPre") => push_exec(&mut c.exec_start_pre, v, &mut warnings),
            ("Service", "ExecReload") => push_exec(&mut c.exec_reload, v, &mut warnings),
            ("Service", "ExecStop") => push_exec(&mut c.exec_stop, v, &mut warnings),
            ("Service", "Environment") => {
                if v.is_empty() {
                    c.environment.clear();
                }
                for w in split_words(v, &mut warnings) {
                    match w.split_once('=') {
                        Some((k, val)) if valid_env_name(k) => {
                            c.environment.push((k.to_string(), val.to_string()))
                        }
                        _ => warnings.push(format!("invalid environment assignment: {w}")),
                    }
                }
            }
            ("Service", "EnvironmentFile") => {
                if v.is_empty() {
                    c.environment_files.clear();
                } else if let Some(p) = v.strip_prefix('-') {
                    c.environment_files.push((p.to_string(), true));
                } else {
                    c.environment_files.push((v.to_string(), false));
                }
            }
            ("Service", "LoadCredential") => {
                if v.is_empty() {
                    c.load_credentials.clear();
                } else {
                    match crate::credentials::parse(v) {
                        // A later assignment of the same ID replaces the source.
                        Ok((id, src)) => match c.load_credentials.iter_mut().find(|x| x.0 == id) {
                            Some(x) => x.1 = src,
                            None => c.load_credentials.push((id, src)),
                        },
                        Err(w) => warnings.push(w),
                    }
                }
            }
            ("Service", "User") => c.user = (!v.is_empty()).then(|| v.to_string()),
            ("Service", "Group") => c.group = (!v.is_empty()).then(|| v.to_string()),
            ("Service", "WorkingDirectory") => {
                c.working_directory = if v.is_empty() {
                    None
                } else if let Some(p) = v.strip_prefix('-') {
                    Some((p.to_string(), true))
                } else {
                    Some((v.to_string(), false))
                }
            }
            ("Service", "KillSignal") => match parse_signal(v) {
                Some(s) => c.kill_signal = s,
                None => warnings.push(format!("invalid KillSignal={v}")),
            },
            ("Service", "KillMode") => {
                c.kill_mode = match v {
                    "control-group" => KillMode::ControlGroup,
                    "mixed" => KillMode::Mixed,
                    "process" => KillMode::Process,
                    "none" => KillMode::None,
                    _ => {
                        warnings.push(format!("invalid KillMode={v}"));
                        c.kill_mode
                    }
                }
            }
            ("Service", "TimeoutStopSec") | ("Service", "TimeoutSec") => match parse_timespan(v) {
                Some(d) => c.timeout_stop = d,
                None => warnings.push(format!("invalid {}={v}", a.key)),
            },
            ("Service", "Restart") => {
                c.restart = match v {
                    "no" => RestartPolicy::No,
                    "on-success" => RestartPolicy::OnSuccess,
                    "on-failure" => RestartPolicy::OnFailure,
                    "on-abnormal" => RestartPolicy::OnAbnormal,
                    "on-abort" => RestartPolicy::OnAbort,
                    "on-watchdog" => RestartPolicy::OnWatchdog,
                    "always" => RestartPolicy::Always,
                    _ => {
                        warnings.push(format!("invalid Restart={v}"));
                        c.restart
                    }
                }
            }
            ("Service", "RestartSec") => match parse_timespan(v) {
                Some(Some(d)) => c.restart_sec = d,
                _ => warnings.push(format!("invalid RestartSec={v}")),
            },
            ("Service", "SuccessExitStatus") => {
                if v.is_empty() {
                    c.success_exit_codes.clear();
                    c.success_signals.clear();
                }
                let mut set = ExitSet::default();
                parse_exit_set(v, a.key.as_str(), &mut set, &mut warnings);
                c.success_exit_codes.extend(set.codes);
                c.success_signals
                    .extend(set.signals.iter().filter_map(|s| Signal::try_from(*s).ok()));
            }
            ("Service", "RestartPreventExitStatus") => {
                parse_exit_set(v, &a.key, &mut c.restart_prevent, &mut warnings)
            }
            ("Service", "RestartForceExitStatus") => {
                parse_exit_set(v, &a.key, &mut c.restart_force, &mut warnings)
            }
            ("Service", "TimeoutStopFailureMode") => {
                c.timeout_stop_failure_mode = match v {
                    "terminate" => FailureMode::Terminate,
                    "abort" => FailureMode::Abort,
                    "kill" => FailureMode::Kill,
                    _ => {
                        warnings.push(format!("invalid TimeoutStopFailureMode={v}"));
                        c.timeout_stop_failure_mode
                    }
                }
            }
            ("Service", "TimeoutAbortSec") => {
                if v.is_empty() {
                    c.timeout_abort = None;
                } else {
                    match parse_timespan(v) {
                        Some(d) => c.timeout_abort = Some(d),
                        None => warnings.push(format!("invalid TimeoutAbortSec={v}")),
                    }
                }
            }
            ("Service", "WatchdogSignal") => match parse_signal(v) {
                Some(s) => c.watchdog_signal = s,
                None => warnings.push(format!("invalid WatchdogSignal={v}")),
            },
            ("Service", "FinalKillSignal") => match parse_signal(v) {
                Some(s) => c.final_kill_signal = s,
                None => warnings.push(format!("invalid FinalKillSignal={v}")),
            },
            ("Service", "SendSIGKILL") => match parse_bool(v) {
                Some(b) => c.send_sigkill = b,
                None => warnings.push(format!("invalid SendSIGKILL={v}")),
            },
            ("Install", "WantedBy") => c.wanted_by.extend(v.split_whitespace().map(String::from)),
            ("Install", "RequiredBy") => {
                c.required_by.extend(v.split_whitespace().map(String::from))
            }
            _ => {}
        }
    }
    c.warnings = warnings;
    c
}

/// systemd's boolean words (`src/basic/parse-util.c`, `parse_boolean`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Exit codes (0-255) and signal names; an empty value resets the list
/// (`config_parse_exit_status` in `src/core/load-fragment.c`).
fn parse_exit_set(v: &str, key: &str, set: &mut ExitSet, warnings: &mut Vec<String>) {
    if v.is_empty() {
        *set = ExitSet::default();
    }
    for w in v.split_whitespace() {
        match w.parse::<i32>() {
            Ok(n) if (0..=255).contains(&n) => set.codes.push(n),
            Ok(_) => warnings.push(format!("invalid {key} entry {w}")),
            Err(_) => match parse_signal(w) {
                Some(s) => set.signals.push(s as i32),
                None => warnings.push(format!("invalid {key} entry {w}")),
            },
        }
    }
}

fn push_exec(list: &mut Vec<ExecCommand>, v: &str, warnings: &mut Vec<String>) {
    if v.is_empty() {
        list.clear();
        return;
    }
    let mut ignore_failure = false;
    let mut privileged = false;
    let mut rest = v;
    while let Some(ch) = rest.chars().next() {
        match ch {
            '-' => ignore_failure = true,
            '+' => privileged = true,
            '@' | ':' | '!' => {}
            _ => break,
        }
        rest = &rest[ch.len_utf8()..];
    }
    let words = split_words(rest, warnings);
    if words.is_empty() {
        warnings.push(format!("empty command line: {v}"));
        return;
    }
    list.push(ExecCommand {
        words,
        ignore_failure,
        privileged,
    });
}

/// Splits a command line or `Environment=` value into words: whitespace separates, double
/// and single quotes group, C-style backslash escapes are decoded. Unbalanced quotes end
/// the word at the end of the text (with a warning).
pub fn split_words(s: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('t') => cur.push('\t'),
                    Some('r') => cur.push('\r'),
                    Some(other) => cur.push(other),
                    None => cur.push('\\'),
                }
            }
            (_, c) => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if quote.is_some() {
        warnings.push(format!("unbalanced quotes in: {s}"));
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(k: &str) -> bool {
    let mut it = k.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses an environment file with the state machine of systemd's `parse_env_file_internal`:
/// `KEY=VALUE` lines; `#`/`;` comment lines; whitespace around the key and before the value
/// ignored; quotes only open at the start of a value (or right after a closing quote):
/// double quotes honour `\"`, `\\`, `\$`, `` \` `` and backslash-newline, single quotes are
/// literal; unquoted backslash escapes the next character (backslash-newline continues the
/// line); trailing unquoted whitespace is trimmed. Invalid keys are skipped with a warning.
/// No `export` keyword, no inline comments.
pub fn parse_env_file(text: &str, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        Single,
        Double,
        DoubleEscape,
        Comment,
        CommentEscape,
    }
    let mut out = Vec::new();
    let mut st = St::PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Length of `value` without trailing unquoted whitespace.
    let mut keep = 0usize;
    let mut finish = |key: &mut String, value: &mut String, keep: usize, out: &mut Vec<_>| {
        value.truncate(keep);
        let k = key.trim_end().to_string();
        if valid_env_name(&k) {
            out.push((k, std::mem::take(value)));
        } else {
            warnings.push(format!("invalid variable name in env file: {k:?}"));
        }
        key.clear();
        value.clear();
    };
    for c in text.chars() {
        match st {
            St::PreKey => {
                if c == '#' || c == ';' {
                    st = St::Comment;
                } else if !c.is_whitespace() {
                    st = St::Key;
                    key.push(c);
                }
            }
            St::Key => {
                if c == '\n' || c == '\r' {
                    st = St::PreKey;
                    key.clear();
                } else if c == '=' {
                    st = St::PreValue;
                    value.clear();
                    keep = 0;
                } else {
                    key.push(c);
                }
            }
            St::PreValue => {
                if c == '\n' || c == '\r' {
                    st = St::PreKey;
                    finish(&mut key, &mut value, keep, &mut out);
                } else if c == '\'' {
                    st = St::Single;
                } else if c == '"' {
                    st = St::Double;
                } else if c == '\\' {
                    st = St::ValueEscape;
                } else if !c.is_whitespace() {
                    st = St::Value;
                    value.push(c);
                    keep = value.len();
                }
            }
            St::Value => {
                if c == '\n' || c == '\r' {
                    st = St::PreKey;
                    finish(&mut key, &mut value, keep, &mut out);
                } else if c == '\\' {
                    st = St::ValueEscape;
                } else {
                    value.push(c);
                    if !c.is_whitespace() {
                        keep = value.len();
                    }
                }
            }
            St::ValueEscape => {
                st = St::Value;
                if c != '\n' {
                    value.push(c);
                    keep = value.len();
                }
            }
            St::Single => {
                if c == '\'' {
                    st = St::PreValue;
                } else {
                    value.push(c);
                    keep = value.len();
                }
            }
            St::Double => {
                if c == '"' {
                    st = St::PreValue;
                } else if c == '\\' {
                    st = St::DoubleEscape;
                } else {
                    value.push(c);
                    keep = value.len();
                }
            }
            St::DoubleEscape => {
                st = St::Double;
                if matches!(c, '"' | '\\' | '`' | '$') {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
                keep = value.len();
            }
            St::Comment => {
                if c == '\\' {
                    st = St::CommentEscape;
                } else if c == '\n' || c == '\r' {
                    st = St::PreKey;
                }
            }
            St::CommentEscape => st = St::Comment,
        }
    }
    match st {
        St::PreValue | St::Value | St::ValueEscape | St::Single | St::Double | St::DoubleEscape => {
            if st == St::ValueEscape {
                keep = value.len();
            }
            finish(&mut key, &mut value, keep, &mut out);
        }
        St::Key if !key.trim().is_empty() => {
            warnings.push(format!("env file line without '=': {}", key.trim()));
        }
        _ => {}
    }
    out
}

/// Parses `infinity` (Ok(None)), plain seconds (`90`, `1.5`) or spans (`1h 30min`, `5min`,
/// `100ms`). None when invalid.
pub fn parse_timespan(v: &str) -> Option<Option<Duration>> {
    let v = v.trim();
    if v == "infinity" {
        return Some(None);
    }
    if v.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604800.0,
            _ => return None,
        };
        total += num * mult;
    }
    if !total.is_finite() || total < 0.0 {
        return None;
    }
    if total == 0.0 {
        // systemd: 0 disables the timeout.
        return Some(None);
    }
    Some(Some(Duration::from_secs_f64(total)))
}

/// `SIGTERM`, `TERM`, `sigterm`, `15`.
pub fn parse_signal(v: &str) -> Option<Signal> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let up = v.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<Signal>().ok()
}

/// Expands `$VAR` (a whole word: split on whitespace into several words), `${VAR}`
/// (substituted in place) and `$$` in command words, with `env`.
pub fn expand_words(words: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for w in words {
        if let Some(name) = w.strip_prefix('$') {
            if valid_env_name(name) {
                if let Some(val) = env.get(name) {
                    out.extend(val.split_whitespace().map(String::from));
                }
                continue;
            }
        }
        let mut s = String::new();
        let mut rest = w.as_str();
        while let Some(pos) = rest.find('$') {
            s.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(a) = after.strip_prefix('$') {
                s.push('$');
                rest = a;
            } else if let Some(b) = after.strip_prefix('{') {
                match b.find('}') {
                    Some(end) => {
                        if let Some(val) = env.get(&b[..end]) {
                            s.push_str(val);
                        }
                        rest = &b[end + 1..];
                    }
                    None => {
                        s.push('$');
                        rest = after;
                    }
                }
            } else {
                s.push('$');
                rest = after;
            }
        }
        s.push_str(rest);
        out.push(s);
    }
    out
}

/// Expands the unit specifiers `%n` (full name), `%N` (name without suffix), `%p` (prefix),
/// `%i` (instance, empty), `%t` (`/run`), `%d` (the credentials directory,
/// `/run/credentials/<unit>`), `%%`. Others are kept verbatim.
pub fn expand_specifiers(s: &str, unit: &str) -> String {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    let prefix = stem.split('@').next().unwrap_or(stem);
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('i') => {}
            Some('t') => out.push_str("/run"),
            Some('d') => {
                out.push_str("/run/credentials/");
                out.push_str(unit);
            }
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_file() {
        let text = "\
# comment
[Unit]
Description=Concourse CI Web Server
[Service]
Type=simple
User=concourse
Group=concourse
WorkingDirectory=-/var/lib/concourse
EnvironmentFile=-/var/lib/concourse/config.env
EnvironmentFile=/etc/default/concourse
Environment=\"A=1 2\" B=3 'C=x y'
Environment=D=4 \\
  E=5
ExecStartPre=-/bin/true
ExecStart=/var/lib/concourse/bin/concourse web --peer \"a b\"
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGUSR2
KillMode=process
TimeoutStopSec=5min 30s
Restart=on-failure
RestartSec=5
SuccessExitStatus=143 SIGUSR1
LimitNOFILE=infinity
garbage line
[Install]
WantedBy=multi-user.target
";
        let c = parse_service(text);
        assert_eq!(c.description, "Concourse CI Web Server");
        assert_eq!(c.user.as_deref(), Some("concourse"));
        assert_eq!(
            c.working_directory,
            Some(("/var/lib/concourse".to_string(), true))
        );
        assert_eq!(
            c.environment_files,
            vec![
                ("/var/lib/concourse/config.env".to_string(), true),
                ("/etc/default/concourse".to_string(), false)
            ]
        );
        assert_eq!(
            c.environment,
            vec![
                ("A".into(), "1 2".into()),
                ("B".into(), "3".into()),
                ("C".into(), "x y".into()),
                ("D".into(), "4".into()),
                ("E".into(), "5".into())
            ]
        );
        assert_eq!(c.exec_start[0].words[3], "a b");
        assert!(c.exec_start_pre[0].ignore_failure);
        assert_eq!(c.exec_reload[0].words[2], "$MAINPID");
        assert_eq!(c.kill_signal, Signal::SIGUSR2);
        assert_eq!(c.kill_mode, KillMode::Process);
        assert_eq!(c.timeout_stop, Some(Duration::from_secs(330)));
        assert_eq!(c.restart, RestartPolicy::OnFailure);
        assert_eq!(c.restart_sec, Duration::from_secs(5));
        assert_eq!(c.success_exit_codes, vec![143]);
        assert_eq!(c.success_signals, vec![Signal::SIGUSR1]);
        assert_eq!(c.wanted_by, vec!["multi-user.target"]);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    }

    #[test]
    fn empty_assignment_resets_lists() {
        let c = parse_service(
            "[Service]\nExecStart=/a\nExecStart=\nExecStart=/b\nEnvironment=A=1\nEnvironment=\n",
        );
        assert_eq!(c.exec_start.len(), 1);
        assert_eq!(c.exec_start[0].words, vec!["/b"]);
        assert!(c.environment.is_empty());
    }

    #[test]
    fn malformed_units_do_not_panic() {
        for t in [
            "",
            "[",
            "[Service",
            "=",
            "[Service]\n=\nExecStart=\"unterminated",
            "[Service]\nTimeoutStopSec=abc\nKillSignal=SIGNOPE\nRestartSec=-1\n",
            "[Service]\nExecStart=\\",
            "\u{0}\u{1}[Service]\nExecStart=-@+:!",
        ] {
            let _ = parse_service(t);
        }
    }

    #[test]
    fn env_file() {
        let text = "\
# comment
; other comment
A=1
  B = two words  
C=\"quoted # not a comment\"
D='single $x'
E=esc\\ aped
F=\"multi\\
line\"
export G=no
1BAD=x
H=
I=\"a\"b'c'
J=value # kept
K=\"unterminated
";
        let mut w = Vec::new();
        let env = parse_env_file(text, &mut w);
        let m: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "quoted # not a comment");
        assert_eq!(m["D"], "single $x");
        assert_eq!(m["E"], "esc aped");
        assert_eq!(m["F"], "multiline");
        assert_eq!(m["H"], "");
        assert_eq!(m["I"], "ab'c'", "quotes only open at the start of a value");
        assert_eq!(m["J"], "value # kept");
        assert_eq!(m["K"], "unterminated\n");
        assert!(!m.contains_key("G") && !m.contains_key("export G"));
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn random_input_never_panics() {
        let alphabet: Vec<char> = "[]=\\\"' \t\n\r#;$%{}-+@:!ABCxyz019.é\u{0}"
            .chars()
            .collect();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 27)
        };
        let env: BTreeMap<String, String> = [("A".to_string(), "x y".to_string())].into();
        for _ in 0..3000 {
            let len = (next() % 80) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut w = Vec::new();
            let _ = parse_service(&format!("[Service]\n{text}"));
            let _ = parse_service(&text);
            let _ = parse_env_file(&text, &mut w);
            let _ = parse_timespan(&text);
            let _ = parse_signal(&text);
            let words = split_words(&text, &mut w);
            let _ = expand_words(&words, &env);
            let _ = expand_specifiers(&text, "x.service");
        }
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("90"), Some(Some(Duration::from_secs(90))));
        assert_eq!(parse_timespan("90s"), Some(Some(Duration::from_secs(90))));
        assert_eq!(parse_timespan("5min"), Some(Some(Duration::from_secs(300))));
        assert_eq!(parse_timespan("1h"), Some(Some(Duration::from_secs(3600))));
        assert_eq!(
            parse_timespan("1min 30s"),
            Some(Some(Duration::from_secs(90)))
        );
        assert_eq!(
            parse_timespan("500ms"),
            Some(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_timespan("infinity"), Some(None));
        assert_eq!(parse_timespan("0"), Some(None));
        assert_eq!(parse_timespan("5 parsecs"), None);
        assert_eq!(parse_timespan("-1"), None);
        assert_eq!(parse_timespan(""), None);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("hup"), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("10"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }

    #[test]
    fn expansion() {
        let env: BTreeMap<String, String> = [
            ("MAINPID".to_string(), "42".to_string()),
            ("FLAGS".to_string(), "-a  -b".to_string()),
        ]
        .into_iter()
        .collect();
        let w: Vec<String> = [
            "/bin/kill",
            "-HUP",
            "$MAINPID",
            "$FLAGS",
            "x${MAINPID}y",
            "$$",
            "$UNSET",
            "${NOPE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            expand_words(&w, &env),
            vec!["/bin/kill", "-HUP", "42", "-a", "-b", "x42y", "$", "${NOPE"]
        );
        assert_eq!(
            expand_specifiers("%n %N %p %% %z", "web.service"),
            "web.service web web % %z"
        );
    }
}
