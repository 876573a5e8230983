//! The update side of `proxyha run`'s start and of a trial's commit: the thin I/O around
//! [`slots::at_start`] and [`slots::mark_good`]. Off the appliance (no `proxyha.slot=` on the
//! kernel command line) everything here is a no-op.

use std::path::Path;

use super::layout::Layout;
use super::report;
use super::slots::{self, AtStart, Slot};
use super::store;

/// A trial boot in progress: commit it once healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub slot: Slot,
    pub try_n: u32,
    pub timeout_s: u32,
}

/// Reads the boot state at start and acts on it: resets a committed slot's try counter,
/// records and logs a rolled-back trial, or returns the trial this boot is.
pub fn at_start(
    layout: &Layout,
    state_dir: &Path,
    running: &str,
    default_timeout_s: u32,
) -> Option<Trial> {
    let booted = layout.booted()?;
    let env = match layout.read_env() {
        Ok(env) => env,
        Err(e) => {
            log::warn!("update: {e}; recreating it with slot {booted} first");
            match slots::recreate(booted, running) {
                Ok(env) => {
                    write(layout, &env);
                    env
                }
                Err(e) => {
                    log::error!("update: {e}");
                    return None;
                }
            }
        }
    };
    match slots::at_start(&env, booted, running, default_timeout_s) {
        Ok(AtStart::Nothing) => None,
        Ok(AtStart::Commit(new)) => {
            write(layout, &new);
            None
        }
        Ok(AtStart::Trial {
            slot,
            try_n,
            timeout_s,
        }) => {
            log::info!(
                "update: trial boot {try_n} of {} of {running} in slot {slot}: marked good once healthy \
                 (within {timeout_s} s)",
                slots::TRIES
            );
            Some(Trial {
                slot,
                try_n,
                timeout_s,
            })
        }
        Ok(AtStart::RolledBack { failed, env: new }) => {
            log::error!("{}", report::rollback_line(&failed, running, booted));
            let reasons = store::trial_reasons(state_dir);
            for r in &reasons {
                log::error!("update: {} {r}", failed.version);
            }
            // The record first: should the block write fail, the next start finds the trial
            // again and records it once more (the same version twice is harmless).
            match store::load(state_dir) {
                Ok(mut record) => {
                    record.failed.push(store::Failure {
                        version: failed.version.clone(),
                        slot: failed.slot.to_string(),
                        tries: failed.tries,
                        at: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        reasons,
                        back_on: running.to_string(),
                    });
                    if let Err(e) = store::save(state_dir, &record) {
                        log::error!("update: {e}");
                    } else {
                        let _ = std::fs::remove_file(store::trial_log(state_dir));
                    }
                }
                Err(e) => log::error!("update: {e}"),
            }
            write(layout, &new);
            None
        }
        Err(e) => {
            log::error!("update: {}: {e}", layout.grubenv().display());
            None
        }
    }
}

/// The trial is healthy: commit it (`<S>_TRY=0`, trial markers removed).
pub fn commit(layout: &Layout, trial: &Trial, running: &str) -> Result<(), String> {
    let env = layout.read_env()?;
    let new = slots::mark_good(&env, trial.slot, running).map_err(|e| e.to_string())?;
    layout.save_env(&new)
}

fn write(layout: &Layout, env: &super::grubenv::EnvBlock) {
    if let Err(e) = layout.save_env(env) {
        log::error!("update: {e}");
    }
}
