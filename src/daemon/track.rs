//! The shell of `[ha.track]` (`vrrp::track::Tracker`): probes the gateway with ARP requests
//! and hears its ARP packets, hands the tracker the bond slaves and this node's listeners, and
//! applies each new verdict to the VRRP core: a lowered priority in place
//! (`Router::reconfigure`), FAULT through the link input.

use std::time::Instant;

use super::sockets::ArpSocket;
use super::{Shell, router_config};
use crate::config::Config;
use crate::vrrp::track::Tracker;
use crate::vrrp::{Router, RouterConfig};
use crate::wire::arp;

impl Shell {
    /// The tracker and, when the gateway is tracked, its ARP socket, for `config`.
    pub(super) fn track_for(
        config: &Config,
        ifindex: u32,
        now: Instant,
    ) -> (Tracker, Option<ArpSocket>) {
        let gateway = config
            .track_gateway()
            .filter(|_| config.ha.track.gateway.is_some());
        let tracker = Tracker::new(
            config.ha.track.clone(),
            gateway,
            config.ha.priority,
            config.advert_interval(),
            now,
        );
        let socket = gateway.and_then(|gw| match ArpSocket::open(ifindex) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("track: gateway {gw} cannot be probed: {e}; the check stays off");
                None
            }
        });
        (tracker, socket)
    }

    /// The core's settings for `config` (the running one, or a reload's), at the priority
    /// tracking allows now, preempting only when the preempt hold allows it.
    /// `outranks`: the running core, a backup, hears a lower master (`Router::outranks_master`).
    pub(super) fn router_cfg(&mut self, config: &Config, outranks: bool) -> RouterConfig {
        let (priority, preempt) = self.wanted(config.ha.priority, config.ha.preempt, outranks);
        let mut c = router_config(config, self.primary);
        c.priority = priority;
        c.preempt = preempt;
        c
    }

    /// (priority, preempt) the core must run at, for the configured `base` and `preempt`.
    fn wanted(&mut self, base: u8, preempt: bool, outranks: bool) -> (u8, bool) {
        let priority = match base {
            0 => 0,
            _ => self.track.current().priority,
        };
        (priority, preempt && self.preempt_now(outranks))
    }

    /// The link as the core must see it: up, and no tracked check forcing FAULT.
    pub(super) fn link_for_core(&self) -> bool {
        self.link.up && !self.track.current().fault
    }

    /// A reload: the tracker takes the new settings (observations kept).
    pub(super) fn track_reconfigure(&mut self, new: &Config) {
        let gateway = new
            .track_gateway()
            .filter(|_| new.ha.track.gateway.is_some());
        if gateway.is_some() && self.arp.is_none() {
            self.arp = ArpSocket::open(self.link.index)
                .map_err(|e| log::error!("track: the gateway cannot be probed: {e}"))
                .ok();
        }
        self.track.reconfigure(
            new.ha.track.clone(),
            gateway,
            new.ha.priority,
            new.advert_interval(),
            Instant::now(),
        );
    }

    /// A probe of the gateway if one is due.
    pub(super) fn probe_gateway(&mut self) {
        if let Some(gw) = self.track.poll_probe(Instant::now())
            && self.arp.is_some()
        {
            let frame = arp::request(self.link.mac, self.primary, gw);
            if let Err(e) = self.garp.send_frame(&frame) {
                log::debug!("track: ARP probe of {gw}: {e}");
            }
        }
    }

    /// An ARP packet arrived: the gateway is alive when it is the sender.
    pub(super) fn heard_arp(&mut self, payload: &[u8]) {
        let gateway = self.config.track_gateway();
        if arp::sender(payload).is_some_and(|s| Some(s) == gateway) {
            self.track.gateway_heard(Instant::now());
        }
    }

    /// The bond's slaves to the tracker (at start and on every bond change).
    pub(super) fn feed_slaves(&mut self) {
        let slaves = self
            .bond
            .as_ref()
            .map(|b| {
                b.slaves
                    .iter()
                    .map(|s| (s.name.clone(), s.link == "up"))
                    .collect()
            })
            .unwrap_or_default();
        self.track.set_slaves(slaves);
    }

    /// After every input: a changed verdict of the tracker, and the preempt hold, reach the
    /// core (only what changed; nothing is rebuilt otherwise).
    pub(super) fn apply_track(&mut self, router: &mut Router) {
        let now = Instant::now();
        let before = self.link_for_core();
        let verdict = if self.config.ha.track.is_empty() {
            None
        } else {
            self.track.verdict(now)
        };
        let (priority, preempt) = self.wanted(
            self.config.ha.priority,
            self.config.ha.preempt,
            router.outranks_master(now),
        );
        if router.config().priority != priority || router.config().preempt != preempt {
            let mut c = router_config(&self.config, self.primary);
            c.priority = priority;
            c.preempt = preempt;
            if !router.reconfigure(now, c) {
                log::error!("track: the VRRP core refused the new priority or preempt mode");
            }
        }
        let after = self.link_for_core();
        if let Some(v) = verdict
            && (before != after || (v.fault && router.state() != crate::vrrp::State::Fault))
        {
            router.handle_link(now, after);
        }
    }
}
