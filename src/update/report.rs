//! `proxyha update status`: the document (`--json`) and its table, from the environment
//! block, the booted slot, the failure record and (during a trial) what the supervisor says
//! is still missing. Pure: the caller reads the inputs.

use serde::Serialize;

use super::grubenv::EnvBlock;
use super::slots::{self, Slot};
use super::store;

#[derive(Debug, Clone, Serialize)]
pub struct UpdateStatus {
    pub booted: Slot,
    pub running_version: String,
    pub slots: Vec<SlotRow>,
    pub next_boot: Option<Slot>,
    /// The next boot is another slot than this one (or this one as a pending trial).
    pub reboot_pending: bool,
    pub trial: Option<TrialRow>,
    pub last_failure: Option<store::Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlotRow {
    pub slot: Slot,
    pub version: Option<String>,
    /// "good", "trying N of 3", "installed, trial boot pending", "bad", "empty".
    pub state: String,
    pub booted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialRow {
    pub slot: Slot,
    pub version: Option<String>,
    pub try_n: u32,
    pub tries: u32,
    pub timeout_s: Option<u32>,
    /// What keeps the running trial from being committed (from the supervisor); `None`
    /// when the trial is not this boot or the supervisor did not answer.
    pub missing: Option<Vec<String>>,
}

pub fn build(
    env: &EnvBlock,
    booted: Slot,
    running: &str,
    record: &store::Record,
    missing: Option<Vec<String>>,
) -> UpdateStatus {
    let next = slots::next_boot(env);
    let trial = slots::trial(env).map(|t| TrialRow {
        slot: t,
        version: slots::version(env, t).map(String::from),
        try_n: slots::tries(env, t),
        tries: slots::TRIES,
        timeout_s: slots::trial_timeout_s(env),
        missing: if t == booted { missing } else { None },
    });
    let pending_trial = trial.as_ref().is_some_and(|t| t.slot != booted);
    UpdateStatus {
        booted,
        running_version: running.to_string(),
        slots: [Slot::A, Slot::B]
            .into_iter()
            .map(|s| SlotRow {
                slot: s,
                version: slots::version(env, s).map(String::from),
                state: slots::state(env, s).to_string(),
                booted: s == booted,
            })
            .collect(),
        next_boot: next,
        reboot_pending: next.is_some_and(|n| n != booted) || pending_trial,
        trial,
        last_failure: record.last().cloned(),
    }
}

pub fn render(s: &UpdateStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<16} {v}\n"));
    line(
        &mut out,
        "booted",
        format!("slot {} ({})", s.booted, s.running_version),
    );
    for r in &s.slots {
        line(
            &mut out,
            &format!("slot {}", r.slot),
            format!(
                "{}: {}{}",
                r.version.as_deref().unwrap_or("-"),
                r.state,
                if r.booted { " (running)" } else { "" }
            ),
        );
    }
    line(
        &mut out,
        "next boot",
        match s.next_boot {
            Some(n) => format!(
                "slot {n}{}",
                if s.reboot_pending {
                    " (reboot pending)"
                } else {
                    ""
                }
            ),
            None => "no bootable slot (GRUB will try slot A)".into(),
        },
    );
    if let Some(t) = &s.trial {
        let v = t.version.as_deref().unwrap_or("?");
        if t.slot == s.booted {
            let timeout = t
                .timeout_s
                .map_or(String::new(), |x| format!(", {x} s to become healthy"));
            line(
                &mut out,
                "trial",
                format!(
                    "{v} in slot {}: boot {} of {}{timeout}",
                    t.slot, t.try_n, t.tries
                ),
            );
            match &t.missing {
                Some(m) if m.is_empty() => line(&mut out, "", "healthy: being marked good".into()),
                Some(m) => {
                    for (i, x) in m.iter().enumerate() {
                        line(&mut out, if i == 0 { "missing" } else { "" }, x.clone());
                    }
                }
                None => line(
                    &mut out,
                    "missing",
                    "proxyha run is not running (no answer on its control socket)".into(),
                ),
            }
        } else {
            line(
                &mut out,
                "trial",
                format!("{v} in slot {} boots next (reboot to apply)", t.slot),
            );
        }
    }
    match &s.last_failure {
        Some(f) => {
            line(
                &mut out,
                "last failure",
                format!(
                    "{} in slot {}: failed {} tries; back on {}",
                    f.version, f.slot, f.tries, f.back_on
                ),
            );
            for r in &f.reasons {
                line(&mut out, "", r.clone());
            }
        }
        None => line(&mut out, "last failure", "none".into()),
    }
    out
}

/// The log line of a rollback (also the wording).
pub fn rollback_line(failed: &slots::FailedTrial, running: &str, booted: Slot) -> String {
    format!(
        "update: {} failed its health check {} times; back on {running} (slot {booted})",
        failed.version, failed.tries
    )
}
