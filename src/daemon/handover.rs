//! The shell side of a planned director handover (`director::cluster::handover` has the
//! protocol): on SIGTERM a director reads its pins once more, names its successor, keeps the
//! VIP while the successor takes over, and leaves when it confirms.

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{HANDOVER_SYNC_WAIT, HANDOVER_WAIT, Shell};
use crate::vrrp::{Router, State};

/// Where a leaving director's handover stands.
#[derive(Debug, Clone, Copy)]
pub(super) enum Leave {
    /// Waiting for the worker's read of the kernel's pins, so the last announcement is fresh.
    Syncing { deadline: Instant },
    /// The successor is named; waiting for its `Done`.
    Waiting {
        successor: Ipv4Addr,
        since: Instant,
        deadline: Instant,
    },
}

impl Leave {
    pub(super) fn deadline(&self) -> Instant {
        match *self {
            Leave::Syncing { deadline } | Leave::Waiting { deadline, .. } => deadline,
        }
    }
}

impl Shell {
    /// SIGTERM on a director with load sharing: start a planned handover (fresh pins first).
    /// False: nothing to hand over, stop at once the RFC way.
    pub(super) fn begin_leave(&mut self, router: &Router) -> bool {
        let Some(lb) = self.lb.as_mut() else {
            return false;
        };
        if router.state() != State::Master || !lb.cluster.is_director() {
            return false;
        }
        let now = Instant::now();
        if lb.cluster.successor(now).is_none() {
            log::info!(
                "handover: no candidate reports a priority; leaving the RFC way (priority 0)"
            );
            return false;
        }
        // The newest pins first (the reply triggers the request to the successor). Not a
        // whole read (void-pin cleanup, 100 ms at 100,000 pins): the successor prunes its own.
        let mut reads = lb.cluster.pin_reads(now);
        reads.fresh = true;
        reads.full = false;
        lb.worker.read_pins(reads);
        self.leave = Some(Leave::Syncing {
            deadline: now + HANDOVER_SYNC_WAIT,
        });
        true
    }

    /// The pins are fresh (or the wait is over): announce them all and name the successor.
    pub(super) fn ask_successor(&mut self, router: &mut Router) {
        let now = Instant::now();
        let successor = self
            .lb
            .as_mut()
            .and_then(|lb| lb.cluster.begin_handover(now));
        match successor {
            Some(successor) => {
                log::info!("handover: asking {successor} to take over as director");
                router.handle_handover_begin();
                self.leave = Some(Leave::Waiting {
                    successor,
                    since: now,
                    deadline: now + HANDOVER_WAIT,
                });
            }
            None => {
                log::info!("handover: no live successor; leaving the RFC way (priority 0)");
                self.leave = None;
                self.exit = true;
            }
        }
    }

    /// Handover signals from the membership core. True when the VRRP core has new actions.
    pub(super) fn handover_signals(&mut self, router: &mut Router) -> bool {
        let mut acted = false;
        while let Some(sig) = self.lb.as_mut().and_then(|lb| lb.cluster.poll_handover()) {
            match sig {
                crate::director::cluster::HandoverSignal::TakeOver { from } => {
                    router.handle_takeover_request(Instant::now(), from);
                    acted = true;
                }
                crate::director::cluster::HandoverSignal::Left { successor } => {
                    if let Some(Leave::Waiting { since, .. }) = self.leave {
                        log::info!(
                            "handover: {successor} holds the VIP after {} ms; leaving",
                            since.elapsed().as_millis()
                        );
                        self.handed_over = true;
                        self.exit = true;
                    }
                }
            }
        }
        acted
    }
}
