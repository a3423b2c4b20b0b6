//! A fake `journalctl` over the output the fake systemd collects (test support; never
//! shipped).
//!
//! Imitates `journalctl` of systemd/systemd (`src/journal/journalctl.c`) for what a charm
//! asks: the output lines of one service's main process, `journalctl _SYSTEMD_UNIT=<unit>
//! _PID=<pid> --output=cat --no-pager --quiet` (`-u <unit>` works as well). Journald
//! records a service's stdout and stderr with the `_PID=` of the process that set up the
//! stream, the main process (`src/core/execute.c`, `connect_logger_as`, runs in the forked
//! child before exec). Here each main process's output is the part of
//! `/var/log/<unit>.log` from the offset the supervisor recorded when it spawned it
//! ([`crate::state::OutputSpan`]) to the next process's.
//!
//! Owns: the command line (field matches `_SYSTEMD_UNIT=`, `_PID=`; `-u/--unit`;
//! `-o/--output` with `cat` only; `--no-pager`, `-q/--quiet`), exit codes (0; 1 with
//! journalctl's message for a bad option) and `-- No entries --` when nothing matches and
//! `--quiet` is not given. Hazards: other outputs (`short`, `json`), time filters and
//! other fields are refused rather than half-done; lines written by a process that
//! outlived its successor's start are attributed to the successor.

use std::io::Write;

use crate::state::{self, Paths};

/// Entry point: `args` is argv without argv\[0\]. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let code = run(&Paths::system(), args, &mut out, &mut err);
    let _ = out.flush();
    let _ = err.flush();
    code
}

#[derive(Debug, Default, PartialEq)]
struct Query {
    unit: Option<String>,
    pid: Option<u32>,
    quiet: bool,
}

fn service_name(u: &str) -> String {
    if u.contains('.') {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

fn parse(args: &[String]) -> Result<Query, String> {
    let mut q = Query::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let a = a.as_str();
        let value = |it: &mut std::slice::Iter<String>, name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("journalctl: option '{name}' requires an argument"))
        };
        let output = match a {
            "-u" | "--unit" => {
                q.unit = Some(service_name(&value(&mut it, a)?));
                None
            }
            "-o" | "--output" => Some(value(&mut it, a)?),
            "--no-pager" | "--no-hostname" => None,
            "-q" | "--quiet" => {
                q.quiet = true;
                None
            }
            _ if a.starts_with("--unit=") => {
                q.unit = Some(service_name(&a["--unit=".len()..]));
                None
            }
            _ if a.starts_with("--output=") => Some(a["--output=".len()..].to_string()),
            _ if a.starts_with("-o") && a.len() > 2 => Some(a[2..].to_string()),
            _ if a.starts_with('-') => {
                return Err(format!("journalctl: unrecognized option '{a}'"))
            }
            _ => {
                match a.split_once('=') {
                    Some(("_SYSTEMD_UNIT", u)) => q.unit = Some(u.to_string()),
                    Some(("_PID", p)) => {
                        q.pid = Some(
                            p.parse()
                                .map_err(|_| format!("Failed to add match '{a}'"))?,
                        )
                    }
                    _ => return Err(format!("fake journalctl: unsupported match '{a}'")),
                }
                None
            }
        };
        if let Some(o) = output {
            if o != "cat" {
                return Err(format!(
                    "fake journalctl: output mode '{o}' is not supported"
                ));
            }
        }
    }
    Ok(q)
}

/// Runs one journalctl call with explicit paths and output streams.
pub fn run(paths: &Paths, args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let q = match parse(args) {
        Ok(q) => q,
        Err(msg) => {
            let _ = writeln!(err, "{msg}");
            return 1;
        }
    };
    let Some(unit) = q.unit.as_deref() else {
        let _ = writeln!(
            err,
            "fake journalctl: give -u <unit> or _SYSTEMD_UNIT=<unit>"
        );
        return 1;
    };
    let text = std::fs::read(paths.unit_log(unit)).unwrap_or_default();
    let spans = state::peek(paths)
        .units
        .get(unit)
        .map(|u| u.outputs.clone())
        .unwrap_or_default();
    let range = match q.pid {
        None => Some((0, text.len())),
        Some(pid) => spans.iter().position(|s| s.pid == pid).map(|i| {
            let from = usize::try_from(spans[i].offset).unwrap_or(usize::MAX);
            let to = spans
                .get(i + 1)
                .and_then(|n| usize::try_from(n.offset).ok())
                .unwrap_or(text.len());
            (from.min(text.len()), to.min(text.len()))
        }),
    };
    let body = range.map_or(&[][..], |(from, to)| &text[from..to.max(from)]);
    if body.is_empty() {
        if !q.quiet {
            let _ = writeln!(out, "-- No entries --");
        }
        return 0;
    }
    let _ = out.write_all(body);
    if !body.ends_with(b"\n") {
        let _ = writeln!(out);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_what_the_charm_asks() {
        let q = parse(&s(&[
            "_SYSTEMD_UNIT=concourse-worker.service",
            "_PID=42",
            "--output=cat",
            "--no-pager",
            "--quiet",
        ]))
        .unwrap();
        assert_eq!(
            q,
            Query {
                unit: Some("concourse-worker.service".into()),
                pid: Some(42),
                quiet: true
            }
        );
        assert_eq!(
            parse(&s(&["-u", "web", "-o", "cat"]))
                .unwrap()
                .unit
                .as_deref(),
            Some("web.service")
        );
        assert!(parse(&s(&["-o", "json", "-u", "x"])).is_err());
        assert!(parse(&s(&["--since=today"])).is_err());
        assert!(parse(&s(&["_PID=x"])).is_err());
        assert!(parse(&s(&["MESSAGE=x"])).is_err());
        assert!(parse(&s(&["-u"])).is_err());
    }

    #[test]
    fn prints_one_process_output() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.log_dir).unwrap();
        std::fs::write(paths.unit_log("w.service"), "a1\na2\nb1\nb2").unwrap();
        {
            let mut l = state::lock(&paths).unwrap();
            let u = l.unit("w.service");
            u.record_output(10, 0);
            u.record_output(11, 6);
            l.save().unwrap();
        }
        let call = |args: &[&str]| {
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let code = run(&paths, &s(args), &mut o, &mut e);
            (code, String::from_utf8(o).unwrap())
        };
        assert_eq!(
            call(&["-u", "w", "_PID=10", "-o", "cat"]),
            (0, "a1\na2\n".into())
        );
        assert_eq!(call(&["-u", "w", "_PID=11", "-q"]), (0, "b1\nb2\n".into()));
        assert_eq!(call(&["-u", "w", "_PID=12", "-q"]), (0, String::new()));
        assert_eq!(
            call(&["-u", "w", "_PID=12"]),
            (0, "-- No entries --\n".into())
        );
        assert_eq!(call(&["_PID=12"]).0, 1);
    }
}
