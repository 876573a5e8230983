//! The health criterion of a trial boot, sans-IO: `proxyha run` commits a freshly installed
//! version only when it does its job. Healthy means all of:
//! - the configuration loaded (implied: the supervisor runs);
//! - VRRP has been running without FAULT (or INIT) for at least three advert intervals
//!   (a node that cannot send or whose link is down never counts);
//! - with load sharing on, the data path was applied to the kernel at least once;
//! - with the built-in proxy on, the local proxy listens on the wildcard address (every
//!   redirected port's listener, as the port monitor sees them).
//!
//! Inputs carry their time; [`Health::missing`] lists what is still missing, in words, for
//! `proxyha update status` and the log.

use std::time::{Duration, Instant};

use crate::vrrp::State;

/// VRRP must run this many advert intervals without FAULT.
pub const VRRP_INTERVALS: u32 = 3;

#[derive(Debug, Clone)]
pub struct Health {
    interval: Duration,
    needs_data_path: bool,
    needs_proxy: bool,
    vrrp_ok_since: Option<Instant>,
    data_path: bool,
    proxy: bool,
}

impl Health {
    pub fn new(advert_interval: Duration, needs_data_path: bool, needs_proxy: bool) -> Health {
        Health {
            interval: advert_interval,
            needs_data_path,
            needs_proxy,
            vrrp_ok_since: None,
            data_path: false,
            proxy: false,
        }
    }

    /// The VRRP state after each input; FAULT (or INIT) restarts the clock.
    pub fn vrrp(&mut self, now: Instant, state: State) {
        match state {
            State::Fault | State::Initialize => self.vrrp_ok_since = None,
            _ => {
                self.vrrp_ok_since.get_or_insert(now);
            }
        }
    }

    pub fn data_path_applied(&mut self) {
        self.data_path = true;
    }

    /// The port monitor's latest verdict on the local proxy.
    pub fn proxy_listening(&mut self, up: bool) {
        self.proxy = up;
    }

    /// What keeps this boot from being healthy; empty: healthy.
    pub fn missing(&self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let need = self.interval * VRRP_INTERVALS;
        match self.vrrp_ok_since {
            None => out.push(format!(
                "VRRP is not running outside FAULT (needs {:.1} s = {VRRP_INTERVALS} advert intervals)",
                need.as_secs_f64()
            )),
            Some(t) if now.saturating_duration_since(t) < need => out.push(format!(
                "VRRP has run without FAULT for {:.1} s of the {:.1} s needed ({VRRP_INTERVALS} advert intervals)",
                now.saturating_duration_since(t).as_secs_f64(),
                need.as_secs_f64()
            )),
            Some(_) => {}
        }
        if self.needs_data_path && !self.data_path {
            out.push("the data path (nftables, policy routing) is not applied yet".into());
        }
        if self.needs_proxy && !self.proxy {
            out.push(
                "the built-in proxy does not listen on every redirected port yet ([appliance] builtin_proxy)"
                    .into(),
            );
        }
        out
    }

    /// `missing(now).is_empty()` without building the texts (checked after every input of
    /// the supervisor's loop during a trial).
    pub fn healthy(&self, now: Instant) -> bool {
        self.vrrp_ready_at().is_some_and(|t| now >= t)
            && (self.data_path || !self.needs_data_path)
            && (self.proxy || !self.needs_proxy)
    }

    /// When VRRP alone will have run long enough (for a timer), if it runs now.
    pub fn vrrp_ready_at(&self) -> Option<Instant> {
        self.vrrp_ok_since
            .map(|t| t + self.interval * VRRP_INTERVALS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_every_part_is() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new(s, true, true);
        assert_eq!(h.missing(t0).len(), 3);
        h.vrrp(t0, State::Backup);
        assert!(h.missing(t0 + 2 * s)[0].contains("for 2.0 s of the 3.0 s needed"));
        h.data_path_applied();
        h.proxy_listening(true);
        assert!(!h.healthy(t0 + 2 * s));
        assert!(h.healthy(t0 + 3 * s));
        assert!(h.missing(t0 + 3 * s).is_empty());
        assert_eq!(h.vrrp_ready_at(), Some(t0 + 3 * s));
    }

    #[test]
    fn fault_restarts_the_vrrp_clock_and_a_lost_listener_counts() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new(s, false, true);
        h.proxy_listening(true);
        h.vrrp(t0, State::Master);
        h.vrrp(t0 + 2 * s, State::Fault);
        h.vrrp(t0 + 4 * s, State::Backup);
        assert!(!h.healthy(t0 + 6 * s));
        assert!(h.healthy(t0 + 7 * s));
        h.proxy_listening(false);
        assert!(h.missing(t0 + 8 * s)[0].contains("built-in proxy"));
        let vrrp_only = Health::new(s, false, false);
        assert!(vrrp_only.missing(t0)[0].contains("not running outside FAULT"));
    }
}
