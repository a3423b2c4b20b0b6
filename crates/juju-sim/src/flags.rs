//! Command-line parsing the way Juju's hook tools do it (`juju/gnuflag` with interspersed
//! flags).
//!
//! Owns: flag specs, the parser, and the exact error texts of flag errors.
//!
//! Rules reproduced: flags may follow positionals; `--` ends flags; long flags are `--name`,
//! `--name=value` or `--name value`; short flags are `-x value`, `-x=value`, `-xvalue`, and a
//! run of short bool flags `-ab`; bool flags take no separate value but accept `=true/false`
//! (Go `strconv.ParseBool` spellings); the last occurrence of a flag wins; an unknown flag is
//! `flag provided but not defined: -x` (exit 2 in the caller).
//!
//! Hazards: never panics on any input; slices are taken through `char` boundaries only.

use std::collections::BTreeMap;

/// One flag: its names (short single letters and long names) and whether it takes a value.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    pub names: &'static [&'static str],
    pub takes_value: bool,
}

/// A value-taking flag.
pub const fn value(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: true,
    }
}

/// A bool flag.
pub const fn boolean(names: &'static [&'static str]) -> Flag {
    Flag {
        names,
        takes_value: false,
    }
}

/// Result of parsing: values by the flag's first name, positionals in order.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: BTreeMap<&'static str, String>,
    bools: BTreeMap<&'static str, bool>,
    /// Arguments that are not flags.
    pub positionals: Vec<String>,
    /// `-h`/`--help` was given.
    pub help: bool,
}

impl Parsed {
    /// Value of a value flag (by its first name).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
    /// Whether a bool flag is set (by its first name).
    pub fn flag(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
    /// Whether the flag appeared at all.
    pub fn given(&self, name: &str) -> bool {
        self.values.contains_key(name) || self.bools.contains_key(name)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn find(spec: &[Flag], name: &str) -> Option<Flag> {
    spec.iter().copied().find(|f| f.names.contains(&name))
}

fn dashed(name: &str) -> String {
    if name.chars().count() == 1 {
        format!("-{name}")
    } else {
        format!("--{name}")
    }
}

/// Parse `args` (without the tool name) against `spec`. The error is the message to print
/// after `ERROR ` (exit 2).
pub fn parse(spec: &[Flag], args: &[String]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    let set =
        |out: &mut Parsed, flag: Flag, shown: &str, v: Option<String>| -> Result<(), String> {
            let key = flag.names[0];
            if flag.takes_value {
                out.values.insert(key, v.unwrap_or_default());
            } else {
                let b = match v {
                    None => true,
                    Some(v) => parse_bool(&v).ok_or_else(|| {
                        format!("invalid value {v:?} for flag {shown}: parse error")
                    })?,
                };
                out.bools.insert(key, b);
            }
            Ok(())
        };
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            out.positionals.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            if name == "help" {
                out.help = true;
                continue;
            }
            let shown = format!("--{name}");
            let Some(flag) = find(spec, name).filter(|_| name.chars().count() > 1) else {
                return Err(format!("flag provided but not defined: {shown}"));
            };
            let v = if flag.takes_value && inline.is_none() {
                if i >= args.len() {
                    return Err(format!("flag needs an argument: {shown}"));
                }
                i += 1;
                Some(args[i - 1].clone())
            } else {
                inline
            };
            set(&mut out, flag, &shown, v)?;
            continue;
        }
        if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (pos, c) in short.char_indices() {
                let name = c.to_string();
                if name == "h" {
                    out.help = true;
                    continue;
                }
                let shown = format!("-{name}");
                let Some(flag) = find(spec, &name) else {
                    return Err(format!("flag provided but not defined: {shown}"));
                };
                let rest = &short[pos + c.len_utf8()..];
                if flag.takes_value {
                    let v = if let Some(v) = rest.strip_prefix('=') {
                        v.to_string()
                    } else if !rest.is_empty() {
                        rest.to_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(format!("flag needs an argument: {shown}"));
                    };
                    set(&mut out, flag, &shown, Some(v))?;
                    break;
                }
                if let Some(v) = rest.strip_prefix('=') {
                    set(&mut out, flag, &shown, Some(v.to_string()))?;
                    break;
                }
                set(&mut out, flag, &shown, None)?;
            }
            continue;
        }
        out.positionals.push(arg.clone());
    }
    Ok(out)
}

/// Juju's `unrecognized args: ["a" "b"]` message (Go's `%q` of a string slice).
pub fn unrecognized(extra: &[String]) -> String {
    let quoted: Vec<String> = extra.iter().map(|a| format!("{a:?}")).collect();
    format!("unrecognized args: [{}]", quoted.join(" "))
}

/// Name shown for a flag in messages (`-r` or `--relation`).
pub fn shown(name: &str) -> String {
    dashed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[Flag] = &[
        value(&["r", "relation"]),
        boolean(&["app"]),
        value(&["format"]),
        boolean(&["a", "all"]),
    ];

    fn p(args: &[&str]) -> Result<Parsed, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(SPEC, &args)
    }

    #[test]
    fn flags_after_positionals_and_double_dash() {
        let r = p(&["key", "-r", "peers:3", "--format=json", "--", "--app"]).unwrap();
        assert_eq!(r.positionals, vec!["key", "--app"]);
        assert_eq!(r.value("r"), Some("peers:3"));
        assert_eq!(r.value("format"), Some("json"));
        assert!(!r.flag("app"));
    }

    #[test]
    fn short_forms() {
        assert_eq!(p(&["-r3"]).unwrap().value("r"), Some("3"));
        assert_eq!(p(&["-r=4"]).unwrap().value("r"), Some("4"));
        assert!(p(&["-a"]).unwrap().flag("a"));
        assert!(p(&["--all"]).unwrap().flag("a"));
    }

    #[test]
    fn bools_take_inline_values_only() {
        assert!(!p(&["--app=False"]).unwrap().flag("app"));
        let r = p(&["--app", "True"]).unwrap();
        assert!(r.flag("app"));
        assert_eq!(r.positionals, vec!["True"]);
        assert!(p(&["--app=maybe"]).is_err());
    }

    #[test]
    fn unknown_and_missing() {
        assert_eq!(
            p(&["--bogus"]).unwrap_err(),
            "flag provided but not defined: --bogus"
        );
        assert_eq!(p(&["-x"]).unwrap_err(), "flag provided but not defined: -x");
        assert_eq!(p(&["-r"]).unwrap_err(), "flag needs an argument: -r");
        assert_eq!(
            p(&["--relation"]).unwrap_err(),
            "flag needs an argument: --relation"
        );
        // a long name with a single dash is a run of short flags
        assert_eq!(
            p(&["-format", "json"]).unwrap_err(),
            "flag provided but not defined: -f"
        );
    }

    #[test]
    fn unrecognized_message() {
        assert_eq!(
            unrecognized(&["a".into(), "b c".into()]),
            r#"unrecognized args: ["a" "b c"]"#
        );
    }
}
