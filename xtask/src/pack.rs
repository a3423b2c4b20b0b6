//! `cargo xtask pack`: build `dispatch` and write the .charm zip the way charmcraft does,
//! reproducibly (fixed timestamps, sorted entries), keeping `hooks/` as symlinks.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::{ensure_debs, have, root};

pub const MUSL: &str = "x86_64-unknown-linux-musl";
pub const GNU: &str = "x86_64-unknown-linux-gnu";

pub const MANIFEST: &str = "bases:
- name: ubuntu
  channel: '24.04'
  architectures:
  - amd64
";

/// Hooks every charm gets.
const BASE_HOOKS: &[&str] = &[
    "install",
    "start",
    "stop",
    "remove",
    "config-changed",
    "upgrade-charm",
    "update-status",
    "leader-elected",
    "leader-settings-changed",
    "secret-changed",
    "secret-remove",
];

/// The hook names the charm handles, derived from metadata.yaml.
pub fn hook_names(metadata: &serde_yaml::Value) -> Vec<String> {
    let mut hooks: Vec<String> = BASE_HOOKS.iter().map(|h| h.to_string()).collect();
    for (section, kinds) in [
        ("peers", &["created", "joined", "changed", "departed"][..]),
        (
            "requires",
            &["created", "joined", "changed", "departed", "broken"][..],
        ),
        (
            "provides",
            &["created", "joined", "changed", "departed", "broken"][..],
        ),
    ] {
        if let Some(map) = metadata.get(section).and_then(|v| v.as_mapping()) {
            for ep in map.keys().filter_map(|k| k.as_str()) {
                for k in kinds {
                    hooks.push(format!("{ep}-relation-{k}"));
                }
            }
        }
    }
    if let Some(map) = metadata.get("storage").and_then(|v| v.as_mapping()) {
        for st in map.keys().filter_map(|k| k.as_str()) {
            hooks.push(format!("{st}-storage-attached"));
            hooks.push(format!("{st}-storage-detaching"));
        }
    }
    hooks.sort();
    hooks
}

fn read_metadata(root: &Path) -> Result<serde_yaml::Value, String> {
    let text = fs::read_to_string(root.join("metadata.yaml"))
        .map_err(|e| format!("reading metadata.yaml: {e}"))?;
    serde_yaml::from_str(&text).map_err(|e| format!("metadata.yaml does not parse: {e}"))
}

/// Rewrites `hooks/` with one `../dispatch` symlink per handled hook.
pub fn write_hooks(root: &Path) -> Result<usize, String> {
    let hooks = hook_names(&read_metadata(root)?);
    let dir = root.join("hooks");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("creating hooks/: {e}"))?;
    for h in &hooks {
        std::os::unix::fs::symlink("../dispatch", dir.join(h))
            .map_err(|e| format!("hooks/{h}: {e}"))?;
    }
    Ok(hooks.len())
}

/// Makes the musl target usable if we can; returns the target to build for.
fn choose_target() -> String {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(MUSL))
        .unwrap_or(false);
    let installed = installed
        || Command::new("rustup")
            .args(["target", "add", MUSL])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !installed {
        eprintln!("xtask: the {MUSL} target is not available; building for {GNU}");
        return GNU.into();
    }
    // ring compiles C: it needs a musl C compiler.
    ensure_debs(&[("musl-gcc", "musl-tools")]);
    if have("musl-gcc") {
        MUSL.into()
    } else {
        eprintln!("xtask: musl-gcc (musl-tools) is missing; building for {GNU}");
        GNU.into()
    }
}

/// Builds the release `dispatch`; returns its path.
pub fn build_dispatch(root: &Path) -> Result<PathBuf, String> {
    build_static(root, "concourse-ci", "release", "dispatch")
}

/// Builds the simulator's tools (crates/sim-tools) the way `dispatch` is built, static
/// where it can be, with the start-up-optimized `sim-tools` profile; returns its path.
pub fn build_sim_tools(root: &Path) -> Result<PathBuf, String> {
    build_static(root, "sim-tools", "sim-tools", "sim-tools")
}

/// Builds `bin` of `package` with `profile` for musl (static) when it can, else for glibc.
fn build_static(root: &Path, package: &str, profile: &str, bin: &str) -> Result<PathBuf, String> {
    let target = choose_target();
    let build = |t: &str| {
        cargo_build_bin(
            root,
            &[
                "--profile",
                profile,
                "--locked",
                "--package",
                package,
                "--target",
                t,
            ],
            bin,
        )
    };
    match build(&target) {
        Ok(path) => Ok(path),
        Err(e) if target == GNU => Err(e),
        Err(e) => {
            eprintln!("xtask: musl build failed ({e}); falling back to {GNU}");
            build(GNU)
        }
    }
}

/// Runs `cargo build <args> --bin <bin>` in `dir` and returns the path of the executable
/// cargo reports having built. The path comes from cargo's own JSON messages, so it is right
/// wherever the target directory is (`CARGO_TARGET_DIR`, `build.target-dir`, `--target`).
pub fn cargo_build_bin(dir: &Path, args: &[&str], bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir).arg("build").args(args);
    run_build(cmd, bin)
}

/// Runs a prepared `cargo build` command for `bin`; see [`cargo_build_bin`].
fn run_build(mut cmd: Command, bin: &str) -> Result<PathBuf, String> {
    cmd.args(["--bin", bin, "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed with {}", out.status));
    }
    built_executable(&String::from_utf8_lossy(&out.stdout), bin)
        .ok_or_else(|| format!("{cmd:?} reported no executable named {bin}"))
}

/// The `executable` of the last `compiler-artifact` message for binary `bin` in cargo's
/// `--message-format=json` output (one JSON object per line; other lines are ignored).
pub fn built_executable(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// Writes the charm zip from the project files and a built binary.
pub fn write_charm(root: &Path, dispatch: &Path, out: &Path) -> Result<(), String> {
    let metadata = read_metadata(root)?;
    let hooks = hook_names(&metadata);
    let tmp = out.with_extension("charm.tmp");
    let file = fs::File::create(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut zip = ZipWriter::new(file);
    let opts = |mode: u32| {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .last_modified_time(DateTime::default())
            .unix_permissions(mode)
    };
    let add = |zip: &mut ZipWriter<fs::File>, name: &str, data: &[u8], mode: u32| {
        zip.start_file(name, opts(mode))
            .and_then(|_| zip.write_all(data).map_err(Into::into))
            .map_err(|e| format!("adding {name}: {e}"))
    };
    let read = |p: PathBuf| fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()));

    add(&mut zip, "LICENSE", &read(root.join("LICENSE"))?, 0o644)?;
    add(&mut zip, "README.md", &read(root.join("README.md"))?, 0o644)?;
    add(&mut zip, "icon.svg", &read(root.join("icon.svg"))?, 0o644)?;
    add(
        &mut zip,
        "actions.yaml",
        &read(root.join("actions.yaml"))?,
        0o644,
    )?;
    add(
        &mut zip,
        "config.yaml",
        &read(root.join("config.yaml"))?,
        0o644,
    )?;
    add(&mut zip, "dispatch", &read(dispatch.to_path_buf())?, 0o755)?;
    for h in &hooks {
        zip.add_symlink(format!("hooks/{h}"), "../dispatch", opts(0o777))
            .map_err(|e| format!("adding hooks/{h}: {e}"))?;
    }
    add(&mut zip, "manifest.yaml", MANIFEST.as_bytes(), 0o644)?;
    add(
        &mut zip,
        "metadata.yaml",
        &read(root.join("metadata.yaml"))?,
        0o644,
    )?;
    zip.finish().map_err(|e| format!("finishing zip: {e}"))?;
    fs::rename(&tmp, out).map_err(|e| format!("renaming to {}: {e}", out.display()))?;
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let root = root();
    let out = match args {
        [] => root.join("concourse-ci_amd64.charm"),
        [flag, path] if flag == "--out" => PathBuf::from(path),
        _ => return Err("usage: cargo xtask pack [--out FILE]".into()),
    };
    let dispatch = build_dispatch(&root)?;
    write_charm(&root, &dispatch, &out)?;
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} KiB, dispatch {} KiB)",
        out.display(),
        size / 1024,
        fs::metadata(&dispatch).map(|m| m.len()).unwrap_or(0) / 1024
    );
    println!("check it:  cargo xtask check-charm {}", out.display());
    println!(
        "deploy it: juju deploy {} -n 3 --config shared-storage=shared",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_executable_reads_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"serde","kind":["lib"]},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"dispatch","kind":["bin"]},"executable":"/x/t/release/dispatch"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            built_executable(msgs, "dispatch"),
            Some(PathBuf::from("/x/t/release/dispatch"))
        );
        assert_eq!(built_executable(msgs, "other"), None);
    }

    /// Regression (`cargo xtask pack` ignored `CARGO_TARGET_DIR`): a real cargo build of a
    /// tiny crate with the target directory outside the project finds the binary there.
    #[test]
    fn cargo_build_bin_honours_cargo_target_dir() {
        let project = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        fs::create_dir_all(project.path().join("src")).unwrap();
        fs::write(
            project.path().join("Cargo.toml"),
            "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        fs::write(project.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(project.path())
            .env("CARGO_TARGET_DIR", target.path())
            .args(["build", "--offline", "--quiet"]);
        let built = run_build(cmd, "tiny").unwrap();
        assert!(built.starts_with(target.path()), "{built:?}");
        assert!(built.is_file());
        assert!(!project.path().join("target").exists());
    }
}
