//! Helpers for the simulator's self-tests: a tiny scripted test charm (a bash `dispatch`
//! generated per test) and small assertions over hook histories.

#![allow(dead_code)]

use juju_sim::{CharmSource, HookRecord, Model};
use std::path::PathBuf;
use std::time::Duration;

/// A generous timeout for anything the tests wait for.
pub const LONG: Duration = Duration::from_secs(60);

const METADATA: &str = r#"name: testcharm
summary: juju-sim self-test charm
peers:
  peers:
    interface: test_peers
requires:
  site:
    interface: http
  db:
    interface: postgresql_client
    limit: 1
provides:
  web:
    interface: http
storage:
  data:
    type: filesystem
    location: /var/lib/concourse
resources:
  blob:
    type: file
    filename: blob.bin
"#;

const CONFIG: &str = r#"options:
  n:
    type: int
    default: 1
  mode:
    type: string
    default: a
  flag:
    type: boolean
    default: false
"#;

const ACTIONS: &str = r#"do:
  params:
    what:
      type: string
    value:
      type: string
      default: ""
  required: [what]
  additionalProperties: false
"#;

/// A generated test charm; its directory (a temp dir) is removed on drop.
pub struct TestCharm {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestCharm {
    /// `body` is the inside of a bash `case "$hook" in ... esac` (hook is `JUJU_HOOK_NAME`, or
    /// `action:<name>` for actions). The prelude defines `log MSG` (juju-log), `waitfor FILE`
    /// (poll for a file, up to 60 s) and `peers_id` (the peer relation id).
    pub fn new(body: &str) -> TestCharm {
        let tmp = tempfile::Builder::new()
            .prefix("juju-sim-selftest-charm-")
            .tempdir()
            .expect("charm dir");
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("metadata.yaml"), METADATA).expect("metadata");
        std::fs::write(dir.join("config.yaml"), CONFIG).expect("config");
        std::fs::write(dir.join("actions.yaml"), ACTIONS).expect("actions");
        let script = format!(
            r#"#!/bin/bash
set -u
hook="${{JUJU_HOOK_NAME}}"
if [ -z "$hook" ]; then hook="action:${{JUJU_ACTION_NAME}}"; fi
log() {{ juju-log -- "$*"; }}
waitfor() {{ local i=0; while [ ! -e "$1" ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done; }}
peers_id() {{ relation-ids peers --format=json | tr -d '[]"'; }}
case "$hook" in
{body}
esac
exit 0
"#
        );
        let dispatch = dir.join("dispatch");
        std::fs::write(&dispatch, script).expect("dispatch");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dispatch, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        TestCharm { dir, _tmp: tmp }
    }

    pub fn source(&self) -> CharmSource {
        CharmSource::dir(&self.dir, self.dir.join("dispatch"))
    }
}

/// Committed hook names of a unit, with actions left out.
pub fn committed_hooks(m: &Model, unit: &str) -> Vec<String> {
    m.committed_hook_names(unit)
        .into_iter()
        .filter(|h| !h.starts_with("action:"))
        .collect()
}

/// The `JUJU_REMOTE_UNIT` of a hook record ("" when absent).
pub fn remote_unit(h: &HookRecord) -> String {
    h.env.get("JUJU_REMOTE_UNIT").cloned().unwrap_or_default()
}

/// Log messages of a unit.
pub fn log_lines(m: &Model, unit: &str) -> Vec<String> {
    m.logs(unit).into_iter().map(|l| l.message).collect()
}
