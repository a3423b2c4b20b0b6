//! The demo's output. On a terminal: milestones scroll above a live `juju status`-style
//! table that is redrawn in place (plain ANSI: cursor up, clear to the end of the screen).
//! Elsewhere: one line per change and no escape codes. With `--quiet`: nothing until the
//! summary.
//!
//! Invariants: on a terminal every live line is cut to the terminal's width minus one and
//! the live region is at most its height minus one, so moving the cursor up by the number
//! of lines drawn always lands on the region's first line (nothing is left behind or
//! overwritten above it). Text that must stay (act ends, the summary) is printed below a
//! frozen region, never redrawn.

use std::io::{IsTerminal, Write};

use crate::observe::{Event, Snapshot};

/// How output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A terminal: live table redrawn in place.
    Live,
    /// Not a terminal: one line per change.
    Lines,
    /// `--quiet`: only the summary.
    Quiet,
}

pub struct Display {
    mode: Mode,
    /// Lines of the live region on screen now (0: none).
    drawn: usize,
    /// The region last drawn, to skip identical redraws.
    last: Vec<String>,
}

/// Lines under the table in the live region: a blank one and the footer.
const FOOTER_LINES: usize = 2;
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Display {
    pub fn new(quiet: bool) -> Display {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            Mode::Live
        } else {
            Mode::Lines
        };
        Display {
            mode,
            drawn: 0,
            last: Vec::new(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `(columns, rows)` of the terminal; 80x24 when unknown.
    fn size() -> (usize, usize) {
        terminal_size::terminal_size()
            .map(|(w, h)| (usize::from(w.0), usize::from(h.0)))
            .filter(|(w, h)| *w >= 20 && *h >= 5)
            .unwrap_or((80, 24))
    }

    /// Writes `text` with the live region moved below it.
    fn emit(&mut self, text: &str) {
        let mut buf = self.clear_region();
        buf.push_str(text);
        let region = std::mem::take(&mut self.last);
        if self.mode == Mode::Live && !region.is_empty() {
            buf.push_str(&region.join("\n"));
            buf.push('\n');
            self.drawn = region.len();
        }
        self.last = region;
        write_out(&buf);
    }

    /// The escape sequence that erases the live region (cursor at its first line).
    fn clear_region(&mut self) -> String {
        let n = std::mem::take(&mut self.drawn);
        if self.mode == Mode::Live && n > 0 {
            format!("\r\x1b[{n}A\x1b[J")
        } else {
            String::new()
        }
    }

    /// A timeline event: above the table on a terminal (milestones only; the table shows
    /// the rest), one line otherwise.
    pub fn event(&mut self, e: &Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.emit(&(event_line(e) + "\n")),
            Mode::Live if e.kind == "act" => {
                let (w, _) = Display::size();
                let text = format!("\n{BOLD}{}{RESET}\n", cut(&e.text, w - 1));
                self.emit(&text)
            }
            Mode::Live if e.kind == "command" => {
                let (w, _) = Display::size();
                let text = wrap(&format!("  {}", e.text), w - 1, 4).join("\n");
                self.emit(&(text + "\n"))
            }
            Mode::Live if e.is_milestone() => {
                let (w, _) = Display::size();
                self.emit(&(wrap(&event_line(e), w - 1, 9).join("\n") + "\n"))
            }
            Mode::Live => {}
        }
    }

    /// Redraws the live region: the table and a footer line (terminal only).
    pub fn frame(&mut self, snap: &Snapshot, footer: &str) {
        if self.mode != Mode::Live {
            return;
        }
        let (w, h) = Display::size();
        let lines = region(snap, footer, w, h);
        if lines == self.last && self.drawn > 0 {
            return;
        }
        let mut buf = self.clear_region();
        buf.push_str(&lines.join("\n"));
        buf.push('\n');
        self.drawn = lines.len();
        self.last = lines;
        write_out(&buf);
    }

    /// Leaves the live region's table on screen as ordinary output, without its footer
    /// (the next frame starts below).
    pub fn freeze(&mut self) {
        if self.mode == Mode::Live && self.drawn > 0 {
            let mut buf = self.clear_region();
            let keep = self.last.len().saturating_sub(FOOTER_LINES);
            buf.push_str(&self.last[..keep].join("\n"));
            buf.push('\n');
            write_out(&buf);
        }
        self.drawn = 0;
        self.last.clear();
    }

    /// A block of text for people (not in `--quiet`), its long lines wrapped on a terminal.
    pub fn print(&mut self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => self.emit(&(text.to_string() + "\n")),
            Mode::Live => {
                let w = Display::size().0 - 1;
                let lines: Vec<String> = text.lines().flat_map(|l| wrap(l, w, 4)).collect();
                self.emit(&(lines.join("\n") + "\n"))
            }
        }
    }

    /// The table now, as ordinary output (cut to the terminal's width on a terminal).
    pub fn print_table(&mut self, snap: &Snapshot) {
        if self.mode != Mode::Quiet {
            let width = self.width();
            self.emit(&(table(snap, width).join("\n") + "\n"));
        }
    }

    /// Text printed in every mode (the summary, errors).
    pub fn always(&mut self, text: &str) {
        self.freeze();
        write_out(&(text.to_string() + "\n"));
    }

    /// Terminal width for static text (None when not a terminal).
    pub fn width(&self) -> Option<usize> {
        (self.mode == Mode::Live).then(|| Display::size().0 - 1)
    }
}

/// The live region for a `w` x `h` terminal: the table and the footer, every line shorter
/// than `w` and at most `h - 1` lines (table rows give way first; the footer stays).
pub fn region(snap: &Snapshot, footer: &str, w: usize, h: usize) -> Vec<String> {
    let mut lines = table(snap, Some(w - 1));
    let room = h.saturating_sub(1 + FOOTER_LINES).max(1);
    if lines.len() > room {
        let hidden = lines.len() - (room - 1);
        lines.truncate(room - 1);
        lines.push(cut(
            &format!("… {hidden} more lines: make the terminal taller"),
            w - 1,
        ));
    }
    lines.push(String::new());
    lines.push(cut(footer, w - 1));
    lines
}

fn write_out(s: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (a pager quit) must not stop the demo before it cleans up.
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// `  12.3s  concourse-ci/1   worker landed: …`
pub fn event_line(e: &Event) -> String {
    match &e.unit {
        Some(u) => format!("{:>6.1}s  {u:<15}  {}", e.t, e.text),
        None => format!("{:>6.1}s  {}", e.t, e.text),
    }
}

/// `s` cut to `width` characters, the last one `…` when something was cut.
pub fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Wraps `s` at spaces to `width` characters; continuation lines are indented by `indent`.
pub fn wrap(s: &str, width: usize, indent: usize) -> Vec<String> {
    let indent = indent.min(width / 2);
    let mut lines = Vec::new();
    let mut line = String::new();
    // true while the current line has no word yet
    let mut first = true;
    for word in s.split(' ') {
        let len = line.chars().count();
        if !first && !line.trim().is_empty() && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
            line = " ".repeat(indent);
            first = true;
        }
        if !first {
            line.push(' ');
        }
        line.push_str(word);
        first = false;
    }
    lines.push(line);
    lines.into_iter().map(|l| cut(&l, width)).collect()
}

/// Columns separated by two spaces, each as wide as its widest cell (right-aligned where
/// `right` says), the last one cut so that each line fits `width`.
pub fn columns(rows: &[Vec<String>], right: &[bool], width: Option<usize>) -> Vec<String> {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    line.push_str("  ");
                }
                if right.get(i).copied().unwrap_or(false) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else if i + 1 < r.len() {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(cell);
                }
            }
            let line = line.trim_end().to_string();
            match width {
                Some(w) => cut(&line, w),
                None => line,
            }
        })
        .collect()
}

/// The `juju status`-style tables: applications, then units with the leader marked `*`
/// and the version each unit's processes really run.
pub fn table(snap: &Snapshot, width: Option<usize>) -> Vec<String> {
    let mut apps = vec![["App", "Version", "Status", "Scale", "Message"]
        .map(String::from)
        .to_vec()];
    for a in &snap.apps {
        apps.push(vec![
            a.name.clone(),
            a.version.clone(),
            a.status.clone(),
            a.scale.to_string(),
            a.message.clone(),
        ]);
    }
    let mut units = vec![["Unit", "Workload", "Agent", "Runs", "Message"]
        .map(String::from)
        .to_vec()];
    for u in &snap.units {
        units.push(vec![
            format!("{}{}", u.name, if u.leader { "*" } else { "" }),
            u.workload.clone(),
            u.agent.clone(),
            u.runs_label(),
            u.message.clone(),
        ]);
    }
    let mut out = columns(&apps, &[false, false, false, true, false], width);
    out.push(String::new());
    out.extend(columns(&units, &[], width));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{AppRow, UnitRow};

    fn snapshot(units: usize) -> Snapshot {
        Snapshot {
            apps: vec![AppRow {
                name: "concourse-ci".into(),
                version: "7.14.3".into(),
                status: "active".into(),
                scale: units,
                message: String::new(),
            }],
            units: (0..units)
                .map(|i| UnitRow {
                    name: format!("concourse-ci/{i}"),
                    leader: i == 0,
                    workload: "maintenance".into(),
                    message: "Waiting for concourse-ci/0 to download v8.0.0 (42%), a long message"
                        .into(),
                    agent: "executing".into(),
                    runs: vec![("worker".into(), "7.14.3".into())],
                })
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn table_fits_80_columns_and_marks_the_leader() {
        let lines = table(&snapshot(3), Some(79));
        assert!(lines.iter().all(|l| l.chars().count() <= 79), "{lines:#?}");
        assert!(lines
            .iter()
            .any(|l| l.starts_with("concourse-ci/0*  maintenance")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("concourse-ci/1   maintenance")));
        assert!(lines.iter().any(|l| l.ends_with('…')));
        // not cut without a width
        assert!(table(&snapshot(3), None)
            .iter()
            .any(|l| l.ends_with("a long message")));
    }

    #[test]
    fn region_fits_the_terminal_and_keeps_the_footer() {
        let footer = "act 2/3 | upgrade phase complete | downloads 7.14.3 x1, 8.0.0 x1 | 12 s";
        for (w, h, units) in [
            (80, 24, 4),
            (80, 24, 12),
            (40, 10, 12),
            (120, 40, 13),
            (20, 5, 3),
        ] {
            let lines = region(&snapshot(units), footer, w, h);
            assert!(
                lines.len() < h,
                "{w}x{h}, {units} units: {} lines",
                lines.len()
            );
            assert!(
                lines.iter().all(|l| l.chars().count() < w),
                "{w}x{h}: {lines:#?}"
            );
            assert!(lines.last().unwrap().starts_with("act 2/3"), "{lines:#?}");
        }
        let small = region(&snapshot(12), footer, 80, 10);
        assert!(small.iter().any(|l| l.contains("more lines")), "{small:#?}");
        let all = region(&snapshot(12), footer, 80, 24);
        assert!(
            all.iter().any(|l| l.starts_with("concourse-ci/11")),
            "{all:#?}"
        );
    }

    #[test]
    fn columns_align_and_trim() {
        let rows = vec![
            vec!["a".to_string(), "1".into(), "x".into()],
            vec!["long".to_string(), "10".into(), "".into()],
        ];
        assert_eq!(
            columns(&rows, &[false, true], None),
            ["a      1  x", "long  10"]
        );
    }

    #[test]
    fn wrap_keeps_words_and_indents() {
        let lines = wrap("one two three four five six", 12, 2);
        assert_eq!(lines, ["one two", "  three four", "  five six"]);
        assert_eq!(wrap("   1.2s  x", 40, 4), ["   1.2s  x"]);
        assert!(wrap(&"x".repeat(30), 10, 2)
            .iter()
            .all(|l| l.chars().count() <= 10));
        assert_eq!(cut("abcdef", 4), "abc…");
    }

    #[test]
    fn no_escape_codes_unless_live() {
        let mut d = Display {
            mode: Mode::Lines,
            drawn: 0,
            last: Vec::new(),
        };
        assert_eq!(d.clear_region(), "");
        d.mode = Mode::Live;
        d.drawn = 3;
        assert_eq!(d.clear_region(), "\r\x1b[3A\x1b[J");
        assert_eq!(d.drawn, 0);
    }
}
