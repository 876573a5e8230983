//! The preempt hold: a returning higher-priority director candidate does not preempt the
//! current director before it holds a complete copy of the director's pins
//! (`Cluster::preempt_ready`), at most [`PREEMPT_HOLD_MAX`]; otherwise the clients pinned to
//! other nodes would meet a director without their pins and be reset. A master whose
//! director has not announced itself yet (the returning node hears adverts every interval,
//! announcements only every report period) gets a couple of report periods to do so. It
//! still takes over at once when the director fails (Master_Down_Timer): only preemption
//! waits. keepalived's `preempt_delay` waits a fixed time; this waits for the state that
//! matters.

use std::time::{Duration, Instant};

use super::Shell;
use crate::director::cluster::PreemptReady;

/// Longest preempt hold (replication broken, or a very slow copy).
pub const PREEMPT_HOLD_MAX: Duration = Duration::from_secs(30);

impl Shell {
    /// Whether the core may preempt now (`ha.preempt` and no hold). `outranks`: as a backup,
    /// we hear a master of lower priority (`Router::outranks_master`); only then could we
    /// preempt, so only then can a hold matter.
    pub(super) fn preempt_now(&mut self, outranks: bool) -> bool {
        let now = Instant::now();
        let ready = match (&self.lb, outranks) {
            (Some(lb), true) => lb.cluster.preempt_ready(now, self.preempt_hold),
            _ => PreemptReady::Yes,
        };
        let waited = |since: Instant| now.duration_since(since).as_millis();
        match (ready, self.preempt_hold) {
            (PreemptReady::Yes | PreemptReady::NoDirector, None) => true,
            (PreemptReady::Yes, Some(since)) => {
                log::info!(
                    "preempt hold: the director's pins are copied after {} ms; preempting is allowed again",
                    waited(since)
                );
                self.preempt_hold = None;
                self.preempt_gave_up = false;
                true
            }
            (PreemptReady::NoDirector, Some(since)) => {
                log::info!(
                    "preempt hold: no director announced itself in {} ms; preempting is allowed again",
                    waited(since)
                );
                self.preempt_hold = None;
                self.preempt_gave_up = false;
                true
            }
            (_, None) => {
                log::info!(
                    "preempt hold: not preempting the master before the director's pins are copied (at most {} s)",
                    PREEMPT_HOLD_MAX.as_secs()
                );
                self.preempt_hold = Some(now);
                false
            }
            (_, Some(since)) if now.duration_since(since) >= PREEMPT_HOLD_MAX => {
                // Once, not at every input while the copy stays incomplete.
                if !self.preempt_gave_up {
                    log::warn!(
                        "preempt hold: no complete copy of the director's pins after {} s; preempting anyway",
                        PREEMPT_HOLD_MAX.as_secs()
                    );
                    self.preempt_gave_up = true;
                }
                true
            }
            (_, Some(_)) => false,
        }
    }
}
