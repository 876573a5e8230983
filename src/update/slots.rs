//! What the GRUB environment block means, and every decision about it, sans-IO.
//!
//! Variables (RAUC's GRUB backend, so RAUC could take over): `ORDER` ("A B": preference),
//! `<S>_OK` (1: bootable), `<S>_TRY` (boots started since the slot was last marked good;
//! grub.cfg increments it before booting a slot and gives the slot up, `<S>_OK=0`, when it
//! reaches [`TRIES`]). Ours, kept by GRUB as unknown keys: `<S>_VERSION` (what the slot
//! holds), `TRIAL` (the slot of a freshly installed version until it is committed) and
//! `TRIAL_TIMEOUT` (seconds a trial boot has to become healthy, from the installing node's
//! `[update] health_timeout_s`; read by the image's trial watchdog without proxyha).
//!
//! A committed slot's `<S>_TRY` is reset at every start of `proxyha run` (its boots are not
//! health-gated: a bad config edit must not roll the box back to an older version); only a
//! trial slot waits for the health criterion before it is reset.

use std::fmt;

use super::grubenv::{EnvBlock, EnvError};

/// Boots a slot gets before GRUB gives it up (grub.cfg).
pub const TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot the kernel command line names (`proxyha.slot=A`), set by grub.cfg.
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_whitespace()
            .find_map(|a| a.strip_prefix("proxyha.slot="))
            .and_then(Slot::parse)
    }

    fn key(self, suffix: &str) -> String {
        format!("{}_{suffix}", self.letter())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// A slot as `proxyha update status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    Good,
    /// A trial: `n` boots of it started (0: installed, not booted yet).
    Trying(u32),
    /// Holds a version GRUB gave up or that was marked bad.
    Bad,
    Empty,
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Good => f.write_str("good"),
            SlotState::Trying(0) => write!(f, "installed, trial boot pending"),
            SlotState::Trying(n) => write!(f, "trying {n} of {TRIES}"),
            SlotState::Bad => f.write_str("bad"),
            SlotState::Empty => f.write_str("empty"),
        }
    }
}

fn flag(env: &EnvBlock, key: &str) -> bool {
    env.get(key) == Some("1")
}

fn count(env: &EnvBlock, key: &str) -> u32 {
    env.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn version(env: &EnvBlock, s: Slot) -> Option<&str> {
    env.get(&s.key("VERSION")).filter(|v| !v.is_empty())
}

pub fn trial(env: &EnvBlock) -> Option<Slot> {
    env.get("TRIAL").and_then(Slot::parse)
}

pub fn tries(env: &EnvBlock, s: Slot) -> u32 {
    count(env, &s.key("TRY"))
}

pub fn trial_timeout_s(env: &EnvBlock) -> Option<u32> {
    env.get("TRIAL_TIMEOUT").and_then(|v| v.parse().ok())
}

pub fn state(env: &EnvBlock, s: Slot) -> SlotState {
    let ok = flag(env, &s.key("OK"));
    if ok && trial(env) == Some(s) {
        SlotState::Trying(tries(env, s))
    } else if ok {
        SlotState::Good
    } else if version(env, s).is_some() {
        SlotState::Bad
    } else {
        SlotState::Empty
    }
}

fn order(env: &EnvBlock) -> Vec<Slot> {
    env.get("ORDER")
        .unwrap_or("A B")
        .split_whitespace()
        .filter_map(Slot::parse)
        .collect()
}

/// What GRUB boots next (grub.cfg's choice): the first slot of `ORDER` that is bootable
/// and has tries left.
pub fn next_boot(env: &EnvBlock) -> Option<Slot> {
    order(env)
        .into_iter()
        .find(|&s| flag(env, &s.key("OK")) && tries(env, s) < TRIES)
}

fn set(env: &mut EnvBlock, key: &str, value: &str) -> Result<(), EnvError> {
    env.set(key, value)
}

/// A fresh block for a machine whose block is missing or corrupt: the running slot first
/// and good, the other not bootable (its contents are unknown).
pub fn recreate(booted: Slot, running: &str) -> Result<EnvBlock, EnvError> {
    let mut env = EnvBlock::new();
    let o = booted.other();
    set(&mut env, "ORDER", &format!("{booted} {o}"))?;
    set(&mut env, &booted.key("OK"), "1")?;
    set(&mut env, &booted.key("TRY"), "0")?;
    set(&mut env, &o.key("OK"), "0")?;
    set(&mut env, &o.key("TRY"), "0")?;
    set(&mut env, &booted.key("VERSION"), running)?;
    Ok(env)
}

/// A failed trial found at start: the version, its slot and how many boots it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTrial {
    pub version: String,
    pub slot: Slot,
    pub tries: u32,
}

/// What `proxyha run` does with the boot state at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStart {
    /// Nothing to write.
    Nothing,
    /// A committed slot: write this block (its try counter reset, its version recorded).
    Commit(EnvBlock),
    /// This boot is a trial: mark it good once healthy, within `timeout_s`.
    Trial {
        slot: Slot,
        try_n: u32,
        timeout_s: u32,
    },
    /// We are back on a good slot after a trial failed: record it, write this block.
    RolledBack { failed: FailedTrial, env: EnvBlock },
}

/// Decides what the running slot's start means. `running` is this binary's version.
pub fn at_start(
    env: &EnvBlock,
    booted: Slot,
    running: &str,
    default_timeout_s: u32,
) -> Result<AtStart, EnvError> {
    match trial(env) {
        Some(t) if t == booted => Ok(AtStart::Trial {
            slot: booted,
            try_n: tries(env, booted),
            timeout_s: trial_timeout_s(env).unwrap_or(default_timeout_s),
        }),
        Some(t) => {
            let failed = FailedTrial {
                version: version(env, t).unwrap_or("unknown").to_string(),
                slot: t,
                tries: tries(env, t).max(if flag(env, &t.key("OK")) { 0 } else { TRIES }),
            };
            let mut new = env.clone();
            new.remove("TRIAL");
            new.remove("TRIAL_TIMEOUT");
            set(&mut new, &t.key("OK"), "0")?;
            set(&mut new, &t.key("TRY"), "0")?;
            set(&mut new, "ORDER", &format!("{booted} {t}"))?;
            commit_fields(&mut new, booted, running)?;
            Ok(AtStart::RolledBack { failed, env: new })
        }
        None => {
            let mut new = env.clone();
            commit_fields(&mut new, booted, running)?;
            Ok(if new == *env {
                AtStart::Nothing
            } else {
                AtStart::Commit(new)
            })
        }
    }
}

fn commit_fields(env: &mut EnvBlock, s: Slot, running: &str) -> Result<(), EnvError> {
    set(env, &s.key("OK"), "1")?;
    set(env, &s.key("TRY"), "0")?;
    set(env, &s.key("VERSION"), running)
}

/// The booted trial slot became healthy (or `proxyha update mark-good`): it is committed.
pub fn mark_good(env: &EnvBlock, booted: Slot, running: &str) -> Result<EnvBlock, EnvError> {
    let mut new = env.clone();
    if trial(env) == Some(booted) {
        new.remove("TRIAL");
        new.remove("TRIAL_TIMEOUT");
    }
    commit_fields(&mut new, booted, running)?;
    Ok(new)
}

/// `proxyha update mark-bad`: the booted slot is given up; the other one boots next.
/// Refused when the other slot is not good (nothing else could boot).
pub fn mark_bad(env: &EnvBlock, booted: Slot) -> Result<EnvBlock, String> {
    let o = booted.other();
    if state(env, o) != SlotState::Good {
        return Err(format!(
            "slot {o} is {}: marking slot {booted} bad would leave nothing to boot",
            state(env, o)
        ));
    }
    let mut new = env.clone();
    let e = |e: EnvError| e.to_string();
    if trial(env) == Some(booted) {
        new.remove("TRIAL");
        new.remove("TRIAL_TIMEOUT");
    }
    set(&mut new, &booted.key("OK"), "0").map_err(e)?;
    set(&mut new, &booted.key("TRY"), "0").map_err(e)?;
    set(&mut new, "ORDER", &format!("{o} {booted}")).map_err(e)?;
    Ok(new)
}

/// Install, first write: the target slot is not bootable while it is written, so a power
/// loss from here on boots the running slot as before.
pub fn install_begin(env: &EnvBlock, target: Slot) -> Result<EnvBlock, EnvError> {
    let mut new = env.clone();
    set(&mut new, &target.key("OK"), "0")?;
    set(&mut new, &target.key("TRY"), "0")?;
    new.remove(&target.key("VERSION"));
    if trial(env) == Some(target) {
        new.remove("TRIAL");
        new.remove("TRIAL_TIMEOUT");
    }
    Ok(new)
}

/// Install, last write (one write of the whole block): the target boots next, as a trial.
pub fn install_commit(
    env: &EnvBlock,
    target: Slot,
    version: &str,
    timeout_s: u32,
) -> Result<EnvBlock, EnvError> {
    let mut new = env.clone();
    set(&mut new, "ORDER", &format!("{target} {}", target.other()))?;
    set(&mut new, &target.key("OK"), "1")?;
    set(&mut new, &target.key("TRY"), "0")?;
    set(&mut new, &target.key("VERSION"), version)?;
    set(&mut new, "TRIAL", target.letter())?;
    set(&mut new, "TRIAL_TIMEOUT", &timeout_s.to_string())?;
    Ok(new)
}

/// Whether the running slot may install into the other one now.
pub fn may_install(env: &EnvBlock, booted: Slot) -> Result<Slot, String> {
    if trial(env) == Some(booted) {
        return Err(format!(
            "this boot is a trial of {} in slot {booted}, not yet marked good; installing now would \
             overwrite the fallback in slot {}: wait until proxyha update status says good (or run \
             proxyha update mark-good)",
            version(env, booted).unwrap_or("a new version"),
            booted.other()
        ));
    }
    Ok(booted.other())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> EnvBlock {
        // What image/build.sh writes into a new image.
        let mut e = EnvBlock::new();
        for (k, v) in [
            ("ORDER", "A B"),
            ("A_OK", "1"),
            ("A_TRY", "0"),
            ("B_OK", "0"),
            ("B_TRY", "0"),
            ("A_VERSION", "0.1.0"),
        ] {
            e.set(k, v).unwrap();
        }
        e
    }

    /// grub.cfg's choice, applied: the slot it boots and the block after its `save_env`.
    fn grub_boots(env: &mut EnvBlock) -> Option<Slot> {
        for s in order(env) {
            if flag(env, &s.key("OK")) {
                let t = tries(env, s);
                if t < TRIES {
                    env.set(&s.key("TRY"), &(t + 1).to_string()).unwrap();
                    return Some(s);
                }
                env.set(&s.key("OK"), "0").unwrap();
            }
        }
        None
    }

    #[test]
    fn a_committed_slot_resets_its_counter_at_every_start() {
        let mut env = fresh();
        assert_eq!(grub_boots(&mut env), Some(Slot::A));
        assert_eq!(state(&env, Slot::A), SlotState::Good);
        let AtStart::Commit(new) = at_start(&env, Slot::A, "0.1.0", 300).unwrap() else {
            panic!()
        };
        assert_eq!(new, fresh());
        assert_eq!(
            at_start(&fresh(), Slot::A, "0.1.0", 300).unwrap(),
            AtStart::Nothing
        );
    }

    #[test]
    fn install_then_healthy_trial_commits_the_new_slot() {
        let env = fresh();
        assert_eq!(may_install(&env, Slot::A), Ok(Slot::B));
        let begun = install_begin(&env, Slot::B).unwrap();
        assert_eq!(
            next_boot(&begun),
            Some(Slot::A),
            "a power loss while writing boots A"
        );
        let mut env = install_commit(&begun, Slot::B, "0.2.0", 60).unwrap();
        assert_eq!(state(&env, Slot::B), SlotState::Trying(0));
        assert_eq!(next_boot(&env), Some(Slot::B));
        assert_eq!(grub_boots(&mut env), Some(Slot::B));
        assert_eq!(
            at_start(&env, Slot::B, "0.2.0", 300).unwrap(),
            AtStart::Trial {
                slot: Slot::B,
                try_n: 1,
                timeout_s: 60
            }
        );
        assert!(
            may_install(&env, Slot::B)
                .unwrap_err()
                .contains("not yet marked good")
        );
        let env = mark_good(&env, Slot::B, "0.2.0").unwrap();
        assert_eq!(state(&env, Slot::B), SlotState::Good);
        assert_eq!(state(&env, Slot::A), SlotState::Good, "A is the fallback");
        assert_eq!(trial(&env), None);
        assert_eq!(next_boot(&env), Some(Slot::B));
    }

    #[test]
    fn three_failed_trial_boots_roll_back_and_are_recorded() {
        let mut env = install_commit(
            &install_begin(&fresh(), Slot::B).unwrap(),
            Slot::B,
            "0.2.0",
            60,
        )
        .unwrap();
        for n in 1..=TRIES {
            assert_eq!(grub_boots(&mut env), Some(Slot::B), "try {n}");
            assert_eq!(state(&env, Slot::B), SlotState::Trying(n));
        }
        assert_eq!(
            grub_boots(&mut env),
            Some(Slot::A),
            "GRUB falls back after {TRIES} tries"
        );
        let AtStart::RolledBack { failed, env } = at_start(&env, Slot::A, "0.1.0", 300).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            failed,
            FailedTrial {
                version: "0.2.0".into(),
                slot: Slot::B,
                tries: 3
            }
        );
        assert_eq!(state(&env, Slot::B), SlotState::Bad);
        assert_eq!(state(&env, Slot::A), SlotState::Good);
        assert_eq!(next_boot(&env), Some(Slot::A));
        assert_eq!(trial(&env), None);
        assert_eq!(
            at_start(&env, Slot::A, "0.1.0", 300).unwrap(),
            AtStart::Nothing
        );
    }

    #[test]
    fn mark_bad_needs_a_good_other_slot() {
        let env = fresh();
        assert!(
            mark_bad(&env, Slot::A)
                .unwrap_err()
                .contains("nothing to boot")
        );
        let mut env =
            install_commit(&install_begin(&env, Slot::B).unwrap(), Slot::B, "0.2.0", 60).unwrap();
        grub_boots(&mut env);
        let env = mark_bad(&env, Slot::B).unwrap();
        assert_eq!(next_boot(&env), Some(Slot::A));
        assert_eq!(state(&env, Slot::B), SlotState::Bad);
    }

    #[test]
    fn a_recreated_block_boots_the_running_slot() {
        let env = recreate(Slot::B, "0.2.0").unwrap();
        assert_eq!(next_boot(&env), Some(Slot::B));
        assert_eq!(state(&env, Slot::A), SlotState::Empty);
        assert_eq!(
            Slot::from_cmdline("root=PARTLABEL=rootB ro proxyha.slot=B quiet"),
            Some(Slot::B)
        );
        assert_eq!(Slot::from_cmdline("root=/dev/sda1"), None);
    }
}
