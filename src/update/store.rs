//! What the data partition remembers about updates (`[control] state_dir/update.json`,
//! written atomically): versions whose trial failed here, so none is installed again by
//! itself, and the last failure with its reasons. The trial watchdog and the initramfs
//! append one line per failed try to `update-trial.log` beside it (plain text, written
//! without proxyha); the rollback reads those lines into the failure record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub failed: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub version: String,
    pub slot: String,
    pub tries: u32,
    /// Seconds since the epoch (the box's clock, which may be unset on an appliance).
    pub at: u64,
    /// What each try reported (trial watchdog, initramfs), oldest first.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The version the box went back to.
    pub back_on: String,
}

impl Record {
    pub fn has_failed(&self, version: &str) -> Option<&Failure> {
        self.failed.iter().rev().find(|f| f.version == version)
    }

    pub fn last(&self) -> Option<&Failure> {
        self.failed.last()
    }
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("update.json")
}

pub fn trial_log(state_dir: &Path) -> PathBuf {
    state_dir.join("update-trial.log")
}

/// The record; a missing file is an empty record; a corrupt one is an error naming the
/// file (never silently replaced: it holds the versions not to install again).
pub fn load(state_dir: &Path) -> Result<Record, String> {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: {e}; fix or remove it (it lists the versions that failed here)",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(format!("reading {}: {e}", p.display())),
    }
}

pub fn save(state_dir: &Path, record: &Record) -> Result<(), String> {
    let p = path(state_dir);
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    crate::daemon::write_atomic(&p, &bytes).map_err(|e| format!("writing {}: {e}", p.display()))
}

/// The trial log's lines (empty when there is none).
pub fn trial_reasons(state_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(trial_log(state_dir))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::keyring::tests::tempdir;

    #[test]
    fn round_trips_and_refuses_a_corrupt_file() {
        let d = tempdir::Dir::new();
        assert_eq!(load(d.path()).unwrap(), Record::default());
        let r = Record {
            failed: vec![Failure {
                version: "0.2.0".into(),
                slot: "B".into(),
                tries: 3,
                at: 1,
                reasons: vec!["try 1: root slot B did not mount".into()],
                back_on: "0.1.0".into(),
            }],
        };
        save(d.path(), &r).unwrap();
        assert_eq!(load(d.path()).unwrap(), r);
        assert!(load(d.path()).unwrap().has_failed("0.2.0").is_some());
        std::fs::write(path(d.path()), b"{not json").unwrap();
        assert!(load(d.path()).unwrap_err().contains("fix or remove it"));
        std::fs::write(trial_log(d.path()), "try 1: a\n\ntry 2: b\n").unwrap();
        assert_eq!(trial_reasons(d.path()), ["try 1: a", "try 2: b"]);
    }
}
