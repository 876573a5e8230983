//! The preempt hold: a returning higher-priority director candidate does not preempt the
//! current director before it holds a complete copy of the director's pins
//! (`Cluster::has_pins_copy`), at most [`PREEMPT_HOLD_MAX`]; otherwise the clients pinned to
//! other nodes would meet a director without their pins and be reset. It still takes over at
//! once when the director fails (Master_Down_Timer): only preemption waits. keepalived's
//! `preempt_delay` waits a fixed time; this waits for the state that matters.

use std::time::{Duration, Instant};

use super::Shell;

/// Longest preempt hold (replication broken, or a very slow copy).
pub const PREEMPT_HOLD_MAX: Duration = Duration::from_secs(30);

impl Shell {
    /// Whether the core may preempt now (`ha.preempt` and no hold). `outranks`: as a backup,
    /// we hear a master of lower priority (`Router::outranks_master`); only then could we
    /// preempt, so only then can a hold matter.
    pub(super) fn preempt_now(&mut self, outranks: bool) -> bool {
        let now = Instant::now();
        let ready = !outranks
            || self
                .lb
                .as_ref()
                .is_none_or(|lb| lb.cluster.has_pins_copy(now));
        match (ready, self.preempt_hold) {
            (true, None) => true,
            (true, Some(since)) => {
                log::info!(
                    "preempt hold: the director's pins are copied after {} ms; preempting is allowed again",
                    now.duration_since(since).as_millis()
                );
                self.preempt_hold = None;
                true
            }
            (false, None) => {
                log::info!(
                    "preempt hold: not preempting the director before its pins are copied (at most {} s)",
                    PREEMPT_HOLD_MAX.as_secs()
                );
                self.preempt_hold = Some(now);
                false
            }
            (false, Some(since)) if now.duration_since(since) >= PREEMPT_HOLD_MAX => {
                log::warn!(
                    "preempt hold: no complete copy of the director's pins after {} s; preempting anyway",
                    PREEMPT_HOLD_MAX.as_secs()
                );
                true
            }
            (false, Some(_)) => false,
        }
    }
}
