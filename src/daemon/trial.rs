//! The shell side of a trial boot's health-gated commit (`update::health` is the criterion,
//! `update::boot` the block write).

use std::time::Instant;

use super::Shell;
use crate::vrrp::Router;

impl Shell {
    /// A trial boot: feed the VRRP state to the health criterion and, once healthy, mark
    /// the slot good (one small write of the environment block on the ESP, off the loop).
    pub(super) async fn check_trial(
        &mut self,
        router: &Router,
        layout: &crate::update::layout::Layout,
    ) {
        let Some((trial, health)) = self.trial.as_mut() else {
            return;
        };
        let now = Instant::now();
        health.vrrp(now, router.state());
        if !health.healthy(now) {
            return;
        }
        let (slot, try_n) = (trial.slot, trial.try_n);
        let trial = trial.clone();
        let layout = layout.clone();
        let running = crate::update::VERSION;
        let r = tokio::task::spawn_blocking(move || {
            crate::update::boot::commit(&layout, &trial, running)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match r {
            Ok(()) => {
                log::info!(
                    "update: {running} in slot {slot} is healthy {:.1} s after start: marked good (boot {try_n} of {})",
                    self.started.elapsed().as_secs_f64(),
                    crate::update::slots::TRIES,
                );
                self.trial = None;
            }
            Err(e) => {
                // Tried again after the next input; the trial watchdog reboots if this
                // never succeeds, and GRUB falls back after three tries.
                log::error!("update: marking slot good: {e}");
            }
        }
    }
}
