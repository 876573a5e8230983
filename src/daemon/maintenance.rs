//! Maintenance state that survives a supervisor restart (`proxyha drain`): one small JSON
//! file in `[control] state_dir`, written atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves the old state or the new one, never half a file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::write_atomic;
use crate::config::io_reason;

/// The file's name inside the state directory.
pub const FILE: &str = "maintenance.json";

/// What is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Maintenance {
    pub draining: bool,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The kept state; the default (not draining) when no file exists yet.
pub fn load(state_dir: &Path) -> Result<Maintenance, String> {
    let path = path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Maintenance::default()),
        Err(e) => {
            return Err(format!(
                "reading maintenance state {}: {}; fix its permissions or run proxyha drain/undrain again",
                path.display(),
                io_reason(&e)
            ));
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "maintenance state {} is not valid ({e}); run proxyha drain or proxyha undrain to rewrite it",
            path.display()
        )
    })
}

/// Writes `m` atomically; the directory is created (0755) if missing.
pub fn save(state_dir: &Path, m: Maintenance) -> Result<(), String> {
    let path = path(state_dir);
    let mut text =
        serde_json::to_vec(&m).map_err(|e| format!("encoding maintenance state: {e}"))?;
    text.push(b'\n');
    write_atomic(&path, &text).map_err(|e| {
        format!(
            "saving maintenance state to {}: {}; check [control] state_dir",
            path.display(),
            io_reason(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("proxyha-maint-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_creates_the_directory_and_leaves_no_temp_file() {
        let dir = scratch("rt").join("nested");
        assert_eq!(
            load(&dir),
            Ok(Maintenance::default()),
            "no file: not draining"
        );
        assert_eq!(save(&dir, Maintenance { draining: true }), Ok(()));
        assert_eq!(load(&dir), Ok(Maintenance { draining: true }));
        assert_eq!(save(&dir, Maintenance { draining: false }), Ok(()));
        assert_eq!(load(&dir), Ok(Maintenance { draining: false }));
        let names: Vec<String> = fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, vec![FILE.to_string()]);
        let _ = fs::remove_dir_all(dir.parent().unwrap_or(&dir));
    }

    #[test]
    fn a_damaged_file_is_named_with_the_fix() {
        let dir = scratch("bad");
        let _ = fs::create_dir_all(&dir);
        let _ = fs::write(path(&dir), "{\"draining\": tru");
        let err = load(&dir).err().unwrap_or_default();
        assert!(
            err.starts_with(&format!(
                "maintenance state {} is not valid",
                path(&dir).display()
            )) && err.ends_with("run proxyha drain or proxyha undrain to rewrite it"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_state_dir_is_an_error_naming_it() {
        // A file where the directory should be.
        let dir = scratch("notdir");
        let _ = fs::create_dir_all(&dir);
        let blocker = dir.join("blocked");
        let _ = fs::write(&blocker, "x");
        let err = save(&blocker, Maintenance { draining: true })
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with(&format!(
                "saving maintenance state to {}/{FILE}:",
                blocker.display()
            )) && err.ends_with("check [control] state_dir"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
