//! The node's `status` document (`proxyha status`, the control socket's `Status` answer):
//! what the shell, the VRRP core and the membership core know, rendered as plain data.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{Shell, redirected_ports};
use crate::status::{Mismatch, Status};
use crate::vrrp::{Router, State};

impl Shell {
    pub(super) fn status(&self, router: &Router) -> Status {
        let now = Instant::now();
        let ha = &self.config.ha;
        Status {
            name: self.config.node.name.clone(),
            version: crate::update::VERSION.to_string(),
            interface: self.link.name.clone(),
            management_ip: Some(self.primary),
            state: router.state().as_str().to_string(),
            priority: ha.priority,
            vrid: ha.virtual_router_id,
            lb_id: ha.lb_id,
            vip: ha.virtual_ip,
            vip_owner: self.vip_owned && router.state() == State::Master,
            master: router.master(),
            master_priority: router.master_priority(),
            // As documented on the field: ours as master, the adopted one as backup.
            advert_interval_ms: router.master_advert_interval().as_millis() as u64,
            vrrp_version: ha.vrrp_version.number(),
            preempt: ha.preempt,
            link_up: self.link.up,
            state_since_s: router
                .state_since()
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            counters: router
                .counters()
                .iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(self.lb.iter().flat_map(|lb| {
                    lb.cluster
                        .counters()
                        .iter()
                        .map(|(k, v)| (format!("membership_{k}"), *v))
                }))
                .collect(),
            director: self.lb.as_ref().and_then(|lb| lb.cluster.director()),
            pins: self.lb.as_ref().map(|lb| lb.cluster.pins_held() as u64),
            pins_age_s: self
                .lb
                .as_ref()
                .and_then(|lb| lb.cluster.pins_age(now))
                .map(|d| d.as_secs_f64()),
            nodes: self
                .lb
                .as_ref()
                .map(|lb| lb.cluster.nodes(now))
                .unwrap_or_default(),
            config_mismatches: self.mismatches(router, now),
            unicast_peers: router
                .config()
                .destinations()
                .into_iter()
                .filter(|a| !a.is_multicast())
                .collect(),
            vrrp_sources: router.config().allowed_sources.clone(),
            track: self.track.current().items,
            effective_priority: Some(router.config().priority),
            membership: self.lb.as_ref().map(|_| {
                if self.config.ha.auth_key.is_some() {
                    "authenticated"
                } else {
                    "unauthenticated"
                }
                .to_string()
            }),
            direct_only_ports: self
                .lb
                .as_ref()
                .map(|lb| {
                    let redirected = redirected_ports(&self.config);
                    lb.listening_ports
                        .iter()
                        .copied()
                        .filter(|p| !redirected.contains(p))
                        .collect()
                })
                .unwrap_or_default(),
            draining: self.draining,
            bond: self.bond.clone().map(Box::new),
            update_missing: self.trial.as_ref().map(|(_, h)| h.missing(now)),
        }
    }

    /// Peers that disagree with our group settings: VRRP adverts for our VRID with other
    /// addresses (heard within the last 10 s) and, on the director, members whose config
    /// digest differs.
    fn mismatches(&self, router: &Router, now: Instant) -> Vec<Mismatch> {
        let ours = self.config.ha.virtual_ip.to_string();
        let mut out: Vec<Mismatch> = router
            .vip_mismatches(now, Duration::from_secs(10))
            .into_iter()
            .map(|(peer, vips)| Mismatch {
                peer,
                name: String::new(),
                source: "vrrp".into(),
                ours: format!("vrid {} vip {ours}", self.config.ha.virtual_router_id),
                theirs: format!(
                    "vrid {} vip {}",
                    self.config.ha.virtual_router_id,
                    vips.iter()
                        .map(Ipv4Addr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
            .collect();
        if let Some(lb) = &self.lb {
            out.extend(lb.cluster.mismatches());
        }
        out
    }
}
