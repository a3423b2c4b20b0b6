//! The test layout itself: with `autotests = false`, a test file that no binary declares is
//! never compiled and never runs, silently. Integration tests live in `tests/it/` (this
//! binary) or `tests/sim/` (the simulator binary), each file declared as a module there.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Module files (`name.rs` and `name/mod.rs`) directly in `dir`, `main.rs` excepted.
fn module_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if path.is_dir() && path.join("mod.rs").is_file() {
            out.insert(name);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "main" {
                out.insert(stem.to_string());
            }
        }
    }
    out
}

/// Modules declared (`mod name;`) in a binary's `main.rs`.
fn declared(main: &Path) -> BTreeSet<String> {
    fs::read_to_string(main)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

#[test]
fn no_test_file_outside_a_test_binary() {
    let stray: Vec<String> = fs::read_dir(root().join("tests"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    assert!(
        stray.is_empty(),
        "tests/{stray:?} would never run (autotests = false): move them to tests/it/ and declare them in tests/it/main.rs"
    );
}

#[test]
fn every_test_module_is_declared() {
    for bin in ["it", "sim"] {
        let dir = root().join("tests").join(bin);
        let files = module_files(&dir);
        let mods = declared(&dir.join("main.rs"));
        let missing: Vec<&String> = files.difference(&mods).collect();
        assert!(
            missing.is_empty(),
            "tests/{bin}/: {missing:?} not declared in tests/{bin}/main.rs, so never compiled"
        );
    }
}
