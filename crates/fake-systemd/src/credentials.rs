//! `LoadCredential=` as systemd's service manager sets it up, from systemd/systemd
//! `src/core/exec-credential.c` (`exec_setup_credentials`, `acquire_credentials`,
//! `load_credential`, `write_credential`), `src/shared/creds-util.h` (size limits) and
//! `src/core/load-fragment.c` (`config_parse_load_credential`: `ID[:SOURCE]` split at the
//! first `:`, specifiers expanded in the source, an empty value resets the list).
//!
//! Owns: the unit's credentials directory, `/run/credentials/<unit>` (what `%d` and
//! `$CREDENTIALS_DIRECTORY` name). Invariants, as systemd's: the directory is built in a
//! private workspace and moved into place whole, fresh for each start (a reload or stop
//! command reuses the one its start made); each credential is a copy, mode 0400, owned by
//! the service's user and group (systemd falls back to ownership when its ramfs has no
//! ACLs), in a directory of mode 0500 owned by them (`/run/credentials` itself is 0755);
//! an absolute source that is missing or unreadable fails the start (exit status 243,
//! `CREDENTIALS`); a relative source names a credential in the credential stores and may
//! be missing; one credential, and all of a unit's together (counting their IDs), hold at
//! most 1 MiB. The directory is removed when the unit is stopped.
//!
//! Hazards (documented gaps): a source directory (loaded recursively by systemd) and
//! `AF_UNIX` sockets are refused rather than read; `LoadCredentialEncrypted=`,
//! `SetCredential=` and `ImportCredential=` are not modelled (ignored as unknown
//! settings); no ramfs, so the files are plain files on `/run` (in the unit's namespace).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `CREDENTIAL_SIZE_MAX` (and `CREDENTIALS_TOTAL_SIZE_MAX`, the same).
pub const SIZE_MAX: u64 = 1024 * 1024;

/// `EXIT_CREDENTIALS`: the exit status of a start whose credentials could not be set up.
pub const EXIT_CREDENTIALS: i32 = 243;

/// Where systemd searches a relative credential name (`credential_store_path`).
const STORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];

/// `credential_name_valid`: a valid file name (not `.`/`..`, no `/`) that is also a
/// valid fd name (printable ASCII, no `:`), at most 255 bytes.
pub fn name_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'/' && b != b':')
}

/// Parses one `LoadCredential=` value into (ID, source): `ID:SOURCE`, or `ID` alone (a
/// credential of that name from the stores). Err: systemd's warning; the line is ignored.
pub fn parse(value: &str) -> Result<(String, String), String> {
    let (id, source) = value.split_once(':').unwrap_or((value, value));
    if !name_valid(id) {
        return Err(format!("Credential name \"{id}\" not valid, ignoring."));
    }
    let absolute = source.starts_with('/') && !source.split('/').any(|c| c == "..");
    if !absolute && !name_valid(source) {
        return Err(format!(
            "Credential source \"{source}\" not valid, ignoring."
        ));
    }
    Ok((id.to_string(), source.to_string()))
}

/// The unit's credentials directory under `root` (`/run/credentials`).
pub fn dir(root: &Path, unit: &str) -> PathBuf {
    root.join(unit)
}

/// Sets up the unit's credentials (`fresh`: for a start; otherwise an existing directory
/// is reused) readable by `uid`/`gid`; returns the directory. Err: why, for the journal.
pub fn setup(
    root: &Path,
    unit: &str,
    creds: &[(String, String)],
    owner: (u32, u32),
    fresh: bool,
) -> Result<PathBuf, String> {
    let target = dir(root, unit);
    if !fresh && fs::read_dir(&target).is_ok_and(|mut d| d.next().is_some()) {
        return Ok(target);
    }
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    fs::create_dir_all(root).map_err(|e| io("cannot create", root, e))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .map_err(|e| io("cannot chmod", root, e))?;
    let workspace = root.join(format!(".workspace-{unit}"));
    let _ = fs::remove_dir_all(&workspace);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&workspace)
        .map_err(|e| io("cannot create", &workspace, e))?;
    let filled = fill(&workspace, creds, owner);
    let placed = filled.and_then(|()| {
        let _ = fs::remove_dir_all(&target);
        fs::rename(&workspace, &target).map_err(|e| io("cannot move into place", &target, e))
    });
    if let Err(e) = placed {
        let _ = fs::remove_dir_all(&workspace);
        return Err(e);
    }
    Ok(target)
}

/// Copies every credential into `dir` and makes it read-only for its owner.
fn fill(dir: &Path, creds: &[(String, String)], (uid, gid): (u32, u32)) -> Result<(), String> {
    let mut left = SIZE_MAX;
    for (id, source) in creds {
        let Some(data) = read_source(source)? else {
            continue;
        };
        let add = (id.len() + data.len()) as u64;
        if add > left {
            return Err(format!(
                "credential '{id}': Argument list too long (over 1 MiB)"
            ));
        }
        left -= add;
        let path = dir.join(id);
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(&data)?;
            f.set_permissions(fs::Permissions::from_mode(0o400))?;
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
        };
        write().map_err(|e| format!("Failed to write credential '{id}': {e}"))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o500))
        .and_then(|()| std::os::unix::fs::chown(dir, Some(uid), Some(gid)))
        .map_err(|e| format!("cannot hand {} to the service: {e}", dir.display()))
}

/// The bytes of a credential source, `None` for a relative name found in no store.
fn read_source(source: &str) -> Result<Option<Vec<u8>>, String> {
    let fail = |e: String| format!("Failed to read credential '{source}': {e}");
    if !source.starts_with('/') {
        for store in STORES {
            match read_capped(&Path::new(store).join(source)) {
                Ok(d) => return Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        return Ok(None);
    }
    let meta = fs::metadata(source).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file (not modelled)".into()));
    }
    read_capped(Path::new(source))
        .map(Some)
        .map_err(|e| fail(e.to_string()))
}

/// `read_full_file_full` with `READ_FULL_FILE_FAIL_WHEN_LARGER`: over 1 MiB is E2BIG.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    let data = fs::read(path)?;
    if data.len() as u64 > SIZE_MAX {
        return Err(std::io::Error::from_raw_os_error(nix::libc::E2BIG));
    }
    Ok(data)
}

/// Removes the unit's credentials directory (`exec_context_destroy_credentials`).
pub fn destroy(root: &Path, unit: &str) {
    let _ = fs::remove_dir_all(dir(root, unit));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_as_load_fragment_does() {
        assert_eq!(
            parse("tls-key:/var/lib/x/key.pem").unwrap(),
            ("tls-key".into(), "/var/lib/x/key.pem".into())
        );
        // the source keeps every further ':' (split at the first one only)
        assert_eq!(parse("k:/a:b").unwrap().1, "/a:b");
        assert_eq!(parse("k").unwrap(), ("k".into(), "k".into()));
        for bad in ["", ".", "a/b:/x", "k:../x", "k:/a/../b", "bad\tname:/x"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn copies_read_only_for_the_owner_and_fails_on_a_missing_source() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("key.pem");
        fs::write(&src, "secret").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
        let root = t.path().join("run-credentials");
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let creds = vec![
            ("tls-key".to_string(), src.display().to_string()),
            ("absent-ok".to_string(), "absent-ok".to_string()),
        ];
        let d = setup(&root, "web.service", &creds, me, true).unwrap();
        assert_eq!(d, root.join("web.service"));
        let f = fs::metadata(d.join("tls-key")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o400);
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o7777, 0o500);
        assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, 0o755);
        assert!(!d.join("absent-ok").exists());
        // a reload reuses it; a start copies afresh
        fs::write(&src, "rotated").unwrap();
        setup(&root, "web.service", &creds, me, false).unwrap();
        assert_eq!(fs::read_to_string(d.join("tls-key")).unwrap(), "secret");
        setup(&root, "web.service", &creds, me, true).unwrap();
        assert_eq!(fs::read_to_string(d.join("tls-key")).unwrap(), "rotated");
        fs::remove_file(&src).unwrap();
        let e = setup(&root, "web.service", &creds, me, true).unwrap_err();
        assert!(e.contains("No such file or directory"), "{e}");
        destroy(&root, "web.service");
        assert!(!d.exists());
    }

    #[test]
    fn over_one_mebibyte_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let big = t.path().join("big");
        fs::write(&big, vec![b'x'; (SIZE_MAX + 1) as usize]).unwrap();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let creds = vec![("big".to_string(), big.display().to_string())];
        assert!(setup(&t.path().join("r"), "u.service", &creds, me, true).is_err());
    }
}
