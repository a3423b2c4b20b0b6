//! `cargo xtask check-charm FILE`: what Juju needs from a .charm, checked offline.
//!
//! Reports every problem found: unsafe zip paths, missing or non-executable `dispatch`,
//! a dispatch that is not x86-64 ELF or needs a GLIBC newer than allowed, YAML that does
//! not parse, missing manifest/bases, config and action schema errors, and names that
//! disagree between files (charm file name, metadata, hooks, resources).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use object::{Object, ObjectSection};

use crate::pack::hook_names;

/// One archive entry.
pub struct Entry {
    pub mode: Option<u32>,
    pub symlink: bool,
    pub data: Vec<u8>,
}

pub fn read_zip(path: &Path) -> Result<BTreeMap<String, Entry>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("{}: not a zip: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let name = f.name().to_string();
        let mode = f.unix_mode();
        let symlink = f.is_symlink();
        let mut data = Vec::new();
        f.read_to_end(&mut data)
            .map_err(|e| format!("{name}: {e}"))?;
        out.insert(
            name,
            Entry {
                mode,
                symlink,
                data,
            },
        );
    }
    Ok(out)
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Checks the ELF: x86-64, and static or needing at most `max_glibc`.
pub fn check_elf(data: &[u8], max_glibc: (u32, u32), problems: &mut Vec<String>) -> String {
    let file = match object::File::parse(data) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("dispatch is not an executable Juju can run: {e}"));
            return "not ELF".into();
        }
    };
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
    {
        problems.push(format!(
            "dispatch is {:?}/{:?}, expected ELF x86-64",
            file.format(),
            file.architecture()
        ));
    }
    let dynamic = file.section_by_name(".interp").is_some();
    if !dynamic {
        return "static".into();
    }
    let mut newest = (0, 0);
    if let Some(dynstr) = file.section_by_name(".dynstr").and_then(|s| s.data().ok()) {
        for s in dynstr.split(|b| *b == 0) {
            if let Some(v) = std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.strip_prefix("GLIBC_"))
            {
                if let Some(v) = parse_version(v) {
                    newest = newest.max(v);
                }
            }
        }
    }
    if newest > max_glibc {
        problems.push(format!(
            "dispatch needs GLIBC_{}.{}, newer than the allowed {}.{}; build the static musl binary (cargo xtask pack does when the target is installed)",
            newest.0, newest.1, max_glibc.0, max_glibc.1
        ));
    }
    format!("dynamic, needs GLIBC_{}.{}", newest.0, newest.1)
}

fn yaml(
    entries: &BTreeMap<String, Entry>,
    name: &str,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<serde_yaml::Value> {
    let Some(e) = entries.get(name) else {
        if required {
            problems.push(format!("{name} is missing"));
        }
        return None;
    };
    match serde_yaml::from_slice::<serde_yaml::Value>(&e.data) {
        Ok(v) if v.is_mapping() => Some(v),
        Ok(_) => {
            problems.push(format!("{name} is not a YAML mapping"));
            None
        }
        Err(err) => {
            problems.push(format!("{name} does not parse: {err}"));
            None
        }
    }
}

fn valid_action_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && n != "juju"
        && !n.starts_with("juju-")
}

/// All checks; returns the problems found (empty = good) and a summary line.
/// Charmcraft's conventions a charm user reads (canonical/charmcraft
/// `docs/reference/files/charmcraft-yaml-file.rst` and `icon-svg-file.rst`): a one-line
/// summary of at most 78 characters, `optional` on every relation endpoint, an
/// `icon.svg` on a 100x100 canvas, and a Juju version in `assumes`.
fn check_conventions(
    md: &serde_yaml::Value,
    entries: &BTreeMap<String, Entry>,
    p: &mut Vec<String>,
) {
    let summary = md.get("summary").and_then(|v| v.as_str()).unwrap_or("");
    if summary.contains('\n') || summary.chars().count() > 78 {
        p.push("metadata.yaml summary is not one line of at most 78 characters".into());
    }
    for section in ["requires", "provides"] {
        for (ep, spec) in md
            .get(section)
            .and_then(|s| s.as_mapping())
            .into_iter()
            .flatten()
        {
            if spec.get("optional").and_then(|o| o.as_bool()).is_none() {
                let ep = ep.as_str().unwrap_or("?");
                p.push(format!(
                    "metadata.yaml {section}.{ep} does not say whether it is optional"
                ));
            }
        }
    }
    let assumes_juju = md
        .get("assumes")
        .and_then(|a| a.as_sequence())
        .is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with("juju >=")))
        });
    if !assumes_juju {
        p.push("metadata.yaml assumes no Juju version (juju >= 3.6)".into());
    }
    match entries.get("icon.svg") {
        None => p.push("icon.svg is missing".into()),
        Some(icon) => {
            let text = String::from_utf8_lossy(&icon.data);
            if !text.contains("<svg") || !text.contains("viewBox=\"0 0 100 100\"") {
                p.push("icon.svg is not an SVG on a 100x100 canvas".into());
            }
        }
    }
}

pub fn check(path: &Path, max_glibc: (u32, u32)) -> Result<(Vec<String>, String), String> {
    let entries = read_zip(path)?;
    let mut p = Vec::new();

    for name in entries.keys() {
        if name.starts_with('/') || name.split('/').any(|c| c == "..") {
            p.push(format!("unsafe path in archive: {name}"));
        }
    }

    let mut summary = String::new();
    match entries.get("dispatch") {
        None => p.push("dispatch is missing".into()),
        Some(d) if d.symlink => p.push("dispatch is a symlink, expected a regular file".into()),
        Some(d) => {
            match d.mode {
                None => p.push("dispatch has no unix mode (zip not created on unix); Juju will not be able to run it".into()),
                Some(m) if m & 0o100 == 0 => p.push(format!(
                    "dispatch is not executable (mode {:o}); Juju runs it directly and needs the exec bit",
                    m & 0o7777
                )),
                Some(_) => {}
            }
            summary = check_elf(&d.data, max_glibc, &mut p);
        }
    }

    let metadata = yaml(&entries, "metadata.yaml", true, &mut p);
    let manifest = yaml(&entries, "manifest.yaml", true, &mut p);
    let config = yaml(&entries, "config.yaml", false, &mut p);
    let actions = yaml(&entries, "actions.yaml", false, &mut p);

    if let Some(m) = &manifest {
        let ok = m
            .get("bases")
            .and_then(|b| b.as_sequence())
            .is_some_and(|bases| {
                bases.iter().any(|b| {
                    b.get("name").and_then(|v| v.as_str()) == Some("ubuntu")
                        && b.get("channel").and_then(|v| v.as_str()) == Some("24.04")
                        && b.get("architectures")
                            .and_then(|a| a.as_sequence())
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("amd64")))
                })
            });
        if !ok {
            p.push("manifest.yaml has no bases entry for ubuntu 24.04 amd64".into());
        }
    }

    if let Some(md) = &metadata {
        for key in ["name", "summary", "description"] {
            if md
                .get(key)
                .and_then(|v| v.as_str())
                .is_none_or(str::is_empty)
            {
                p.push(format!("metadata.yaml has no {key}"));
            }
        }
        if md.get("series").is_some() {
            p.push("metadata.yaml has series; with manifest bases Juju rejects it".into());
        }
        check_conventions(md, &entries, &mut p);
        let name = md.get("name").and_then(|v| v.as_str()).unwrap_or("");
        if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
            if let Some((prefix, _)) = file.split_once('_') {
                if file.ends_with(".charm") && prefix != name {
                    p.push(format!(
                        "file name {file} does not match metadata name {name:?}"
                    ));
                }
            }
        }
        if let Some(res) = md.get("resources").and_then(|v| v.as_mapping()) {
            for (k, v) in res {
                let k = k.as_str().unwrap_or("?");
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("file") => match v.get("filename").and_then(|f| f.as_str()) {
                        Some(f) if !f.is_empty() && !f.contains('/') => {}
                        _ => p.push(format!(
                            "resource {k}: file resources need a filename without '/'"
                        )),
                    },
                    Some("oci-image") => {}
                    other => p.push(format!(
                        "resource {k}: type {other:?} is not file or oci-image"
                    )),
                }
            }
        }
        // hooks/ entries must be symlinks to ../dispatch named after hooks metadata declares
        let expected = hook_names(md);
        for (n, e) in entries.iter().filter(|(n, _)| n.starts_with("hooks/")) {
            let hook = &n["hooks/".len()..];
            if !e.symlink || e.data != b"../dispatch" {
                p.push(format!("{n} should be a symlink to ../dispatch"));
            }
            if !expected.iter().any(|h| h == hook) {
                p.push(format!(
                    "{n} names no hook of an endpoint or storage in metadata.yaml"
                ));
            }
        }
    }

    if let Some(c) = &config {
        match c.get("options").and_then(|o| o.as_mapping()) {
            None => p.push("config.yaml has no options mapping".into()),
            Some(opts) => {
                for (k, v) in opts {
                    let k = k.as_str().unwrap_or("?");
                    let ty = v.get("type").and_then(|t| t.as_str());
                    let default = v.get("default");
                    let ok = match (ty, default) {
                        (Some("string" | "secret"), None | Some(serde_yaml::Value::String(_))) => {
                            true
                        }
                        (Some("int"), None | Some(serde_yaml::Value::Number(_))) => {
                            default.is_none_or(|d| d.as_i64().is_some())
                        }
                        (Some("float"), None | Some(serde_yaml::Value::Number(_))) => true,
                        (Some("boolean"), None | Some(serde_yaml::Value::Bool(_))) => true,
                        _ => false,
                    };
                    if !ok {
                        p.push(format!("config option {k}: type {ty:?} missing/invalid or default of the wrong type"));
                    }
                }
            }
        }
    }

    if let Some(a) = &actions {
        for (k, v) in a.as_mapping().into_iter().flatten() {
            let k = k.as_str().unwrap_or("?");
            if !valid_action_name(k) {
                p.push(format!("action name {k:?} is not valid"));
            }
            if v.get("params").is_some_and(|p| !p.is_mapping()) {
                p.push(format!("action {k}: params must be a mapping"));
            }
        }
    }

    Ok((p, format!("{} entries; dispatch {summary}", entries.len())))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut file = None;
    let mut max = (2, 35);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--max-glibc" => {
                let v = it.next().ok_or("--max-glibc needs a value such as 2.35")?;
                max = parse_version(v).ok_or(format!("bad --max-glibc {v}"))?;
            }
            f if file.is_none() => file = Some(f.to_string()),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    let file = file.ok_or("usage: cargo xtask check-charm FILE [--max-glibc 2.35]")?;
    let (problems, summary) = check(Path::new(&file), max)?;
    if problems.is_empty() {
        println!("{file}: ok ({summary})");
        Ok(())
    } else {
        for pr in &problems {
            eprintln!("{file}: {pr}");
        }
        Err(format!("{} problem(s) in {file}", problems.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{write_charm, MANIFEST};
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// A real, small, dynamically linked ELF to pack.
    fn some_elf() -> std::path::PathBuf {
        std::path::PathBuf::from("/bin/true")
    }

    #[test]
    fn packed_project_passes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("concourse-ci_amd64.charm");
        write_charm(&crate::root(), &some_elf(), &out).unwrap();
        let (problems, _) = check(&out, (2, 99)).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // reproducible: same inputs, same bytes
        let out2 = dir.path().join("again/concourse-ci_amd64.charm");
        std::fs::create_dir_all(out2.parent().unwrap()).unwrap();
        write_charm(&crate::root(), &some_elf(), &out2).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
        // hooks are symlinks
        let e = read_zip(&out).unwrap();
        assert!(e["hooks/install"].symlink);
        assert!(e.contains_key("hooks/peers-relation-changed"));
        assert_eq!(e["dispatch"].mode.unwrap() & 0o777, 0o755);
    }

    fn zip_with(
        dir: &Path,
        dispatch_mode: u32,
        drop: &[&str],
        extra: &[(&str, &[u8])],
    ) -> std::path::PathBuf {
        let out = dir.join("concourse-ci_amd64.charm");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
        let root = crate::root();
        let mut files: Vec<(String, Vec<u8>, u32)> = vec![
            (
                "metadata.yaml".into(),
                std::fs::read(root.join("metadata.yaml")).unwrap(),
                0o644,
            ),
            (
                "config.yaml".into(),
                std::fs::read(root.join("config.yaml")).unwrap(),
                0o644,
            ),
            (
                "actions.yaml".into(),
                std::fs::read(root.join("actions.yaml")).unwrap(),
                0o644,
            ),
            ("manifest.yaml".into(), MANIFEST.as_bytes().to_vec(), 0o644),
            (
                "icon.svg".into(),
                std::fs::read(root.join("icon.svg")).unwrap(),
                0o644,
            ),
            (
                "dispatch".into(),
                std::fs::read(some_elf()).unwrap(),
                dispatch_mode,
            ),
        ];
        files.retain(|f| !drop.contains(&f.0.as_str()));
        for (n, d) in extra {
            files.push((n.to_string(), d.to_vec(), 0o644));
        }
        for (n, d, m) in files {
            z.start_file(n, SimpleFileOptions::default().unix_permissions(m))
                .unwrap();
            z.write_all(&d).unwrap();
        }
        z.finish().unwrap();
        out
    }

    #[test]
    fn rejects_a_missing_icon_and_an_endpoint_without_optional() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::read_to_string(crate::root().join("metadata.yaml"))
            .unwrap()
            .replacen("    optional: true\n", "", 1);
        let out = zip_with(
            dir.path(),
            0o755,
            &["icon.svg", "metadata.yaml"],
            &[("metadata.yaml", meta.as_bytes())],
        );
        let (problems, _) = check(&out, (2, 99)).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("does not say whether it is optional"));
        assert_eq!(problems[1], "icon.svg is missing");
    }

    #[test]
    fn rejects_dispatch_without_exec_bit() {
        let dir = tempfile::tempdir().unwrap();
        let out = zip_with(dir.path(), 0o644, &[], &[]);
        let (problems, _) = check(&out, (2, 99)).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("not executable"), "{problems:?}");
    }

    #[test]
    fn rejects_missing_manifest_bad_yaml_and_new_glibc() {
        let dir = tempfile::tempdir().unwrap();
        let out = zip_with(dir.path(), 0o755, &["manifest.yaml"], &[]);
        let (problems, _) = check(&out, (2, 99)).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("manifest.yaml is missing")),
            "{problems:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let out = zip_with(
            dir.path(),
            0o755,
            &["config.yaml"],
            &[("config.yaml", b"options: [unclosed")],
        );
        let (problems, _) = check(&out, (2, 99)).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("config.yaml does not parse")),
            "{problems:?}"
        );

        // /bin/true is a dynamic glibc binary: any GLIBC_2.x exceeds 2.0
        let dir = tempfile::tempdir().unwrap();
        let out = zip_with(dir.path(), 0o755, &[], &[]);
        let (problems, summary) = check(&out, (2, 0)).unwrap();
        assert!(summary.contains("dynamic"), "{summary}");
        assert!(problems.iter().any(|p| p.contains("GLIBC")), "{problems:?}");
    }

    #[test]
    fn rejects_name_mismatch_and_unknown_hook() {
        let dir = tempfile::tempdir().unwrap();
        let out = zip_with(
            dir.path(),
            0o755,
            &[],
            &[("hooks/bogus-relation-joined", b"../dispatch")],
        );
        let renamed = dir.path().join("other_amd64.charm");
        std::fs::rename(&out, &renamed).unwrap();
        let (problems, _) = check(&renamed, (2, 99)).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("does not match metadata name")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("hooks/bogus-relation-joined")),
            "{problems:?}"
        );
    }
}
