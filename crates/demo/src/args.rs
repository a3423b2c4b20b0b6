//! The demo's command line. Owns the flags, their defaults and the usage text.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: cargo xtask demo [--units N] [--shared | --no-shared] [--step] [--keep DIR] [--quiet]

Deploys the real dispatch as concourse-ci units in the Juju simulator (root needed),
with PostgreSQL and a local release server, upgrades them and adds a unit.

  --units N          concourse-ci units to deploy (1 to 12, default 3)
  --shared           one volume mounted on every unit (the default)
  --no-shared        one volume per unit (shared-storage=none)
  --step             pause between acts until Enter is pressed
  --keep DIR         leave the volumes, hook logs and a JSON timeline in DIR
  --quiet            print only the final summary
  --release-mib N    size of each generated release tarball (default 64)
  --dispatch PATH    the charm's dispatch (default: next to this program)
  --tools PATH       the units' hook tools: a build of crates/sim-tools (default: this
                     program; cargo xtask demo gives the small static one, much cheaper
                     to start)
  --charm-dir DIR    the charm's metadata (default: this repository)
  --cache DIR        where generated tarballs are kept (default: target/demo-tarballs)";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub units: usize,
    pub shared: bool,
    pub step: bool,
    pub keep: Option<PathBuf>,
    pub quiet: bool,
    pub release_mib: u64,
    pub dispatch: Option<PathBuf>,
    pub tools: Option<PathBuf>,
    pub charm_dir: Option<PathBuf>,
    pub cache: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            units: 3,
            shared: true,
            step: false,
            keep: None,
            quiet: false,
            release_mib: 64,
            dispatch: None,
            tools: None,
            charm_dir: None,
            cache: None,
        }
    }
}

/// A parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Flag(#[from] lexopt::Error),
    #[error("--units {0}: give a number from 1 to 12")]
    Units(String),
    #[error("--release-mib {0}: give a number from 1 to 1024")]
    Size(String),
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, ArgsError> {
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next()? {
        match arg {
            Long("units") => {
                let v = p.value()?.string()?;
                o.units = match v.parse() {
                    Ok(n) if (1..=12).contains(&n) => n,
                    _ => return Err(ArgsError::Units(v)),
                };
            }
            Long("release-mib") => {
                let v = p.value()?.string()?;
                o.release_mib = match v.parse() {
                    Ok(n) if (1..=1024).contains(&n) => n,
                    _ => return Err(ArgsError::Size(v)),
                };
            }
            Long("shared") => o.shared = true,
            Long("no-shared") => o.shared = false,
            Long("step") => o.step = true,
            Long("quiet") | Short('q') => o.quiet = true,
            Long("keep") => o.keep = Some(p.value()?.into()),
            Long("dispatch") => o.dispatch = Some(p.value()?.into()),
            Long("tools") => o.tools = Some(p.value()?.into()),
            Long("charm-dir") => o.charm_dir = Some(p.value()?.into()),
            Long("cache") => o.cache = Some(p.value()?.into()),
            Long("help") | Short('h') => return Ok(Command::Help),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(Command::Run(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from)) {
            Ok(Command::Run(o)) => Ok(o),
            Ok(Command::Help) => Err("help".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn defaults_are_three_shared_units() {
        assert_eq!(run(&[]), Ok(Options::default()));
        assert_eq!(Options::default().units, 3);
        assert!(Options::default().shared);
    }

    #[test]
    fn flags_set_their_option() {
        let o = run(&[
            "--units",
            "5",
            "--no-shared",
            "--step",
            "--quiet",
            "--keep",
            "/tmp/x",
            "--release-mib=8",
            "--tools",
            "/x/sim-tools",
        ])
        .unwrap();
        assert_eq!(o.units, 5);
        assert!(!o.shared && o.step && o.quiet);
        assert_eq!(o.keep, Some(PathBuf::from("/tmp/x")));
        assert_eq!(o.release_mib, 8);
        assert_eq!(o.tools, Some(PathBuf::from("/x/sim-tools")));
        assert!(run(&["--no-shared", "--shared"]).unwrap().shared);
    }

    #[test]
    fn bad_values_name_the_flag() {
        assert!(run(&["--units", "0"]).unwrap_err().contains("--units 0"));
        assert!(run(&["--units", "x"]).unwrap_err().contains("--units x"));
        assert!(run(&["--release-mib", "0"])
            .unwrap_err()
            .contains("--release-mib"));
        assert!(run(&["--frobnicate"]).unwrap_err().contains("frobnicate"));
        assert!(run(&["--keep"]).unwrap_err().contains("keep"));
        assert_eq!(run(&["--help"]), Err("help".into()));
    }
}
