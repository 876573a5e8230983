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

    /// The core's settings for `config`, at the priority tracking allows now.
    pub(super) fn router_cfg(&self, config: &Config) -> RouterConfig {
        let mut c = router_config(config, self.primary);
        if c.priority != 0 {
            c.priority = self.track.current().priority;
        }
        c
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

    /// Feeds the tracker what the shell knows now, and applies a changed verdict.
    pub(super) fn apply_track(&mut self, router: &mut Router) {
        if self.config.ha.track.is_empty() {
            return;
        }
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
        if let Some(lb) = &self.lb {
            self.track.set_ports(lb.ports_listening.clone());
        }
        let before = self.link_for_core();
        let now = Instant::now();
        let Some(v) = self.track.verdict(now) else {
            return;
        };
        let cfg = self.router_cfg(&self.config);
        if router.config().priority != cfg.priority && !router.reconfigure(now, cfg) {
            log::error!("track: the VRRP core refused the new priority");
        }
        let after = self.link_for_core();
        if before != after || (v.fault && router.state() != crate::vrrp::State::Fault) {
            router.handle_link(now, after);
        }
    }
}
