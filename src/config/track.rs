//! `[ha.track]`: what lowers this node's VRRP priority or forces FAULT, as keepalived's
//! `track_interface` and `vrrp_script` weights do.
//!
//! ```toml
//! [ha.track]
//! interfaces = -20        # each bond slave of the HA interface that is down: priority - 20
//! gateway = "fault"       # the default gateway answers no ARP probe: FAULT
//! gateway_address = "10.10.74.1"   # default: network.gateway
//! ports = -50             # a redirected listener of this node is down: priority - 50
//! ```

use std::net::Ipv4Addr;

use toml::de::DeValue;

use super::*;

/// What a failed check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Lowers the priority by this much (1..=253) while failing (per failing item).
    Weight(u8),
    /// FAULT while failing: no adverts, no VIP (as a link down).
    Fault,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Weight(w) => write!(f, "-{w}"),
            Effect::Fault => f.write_str("fault"),
        }
    }
}

/// `[ha.track]`; every check is off unless configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Track {
    /// The bond slaves of the HA interface (the interface itself going down is FAULT anyway).
    pub interfaces: Option<Effect>,
    /// ARP reachability of the gateway, probed every advert interval.
    pub gateway: Option<Effect>,
    /// The address probed; `None`: `network.gateway`.
    pub gateway_address: Option<Ipv4Addr>,
    /// This node's own redirected listener ports (`ha.port_redirects` `to`).
    pub ports: Option<Effect>,
}

impl Track {
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_none() && self.gateway.is_none() && self.ports.is_none()
    }
}

pub(super) const TRACK_KEYS: &[&str] = &["interfaces", "gateway", "gateway_address", "ports"];

impl Cx<'_> {
    /// `ha.track`; the span of `gateway` comes back for the check that an address is known.
    pub(super) fn track(&mut self, v: &Value<'_>) -> Option<(Track, Option<Range<usize>>)> {
        let DeValue::Table(t) = v.get_ref() else {
            self.bad(
                "ha.track",
                v,
                "must be a table, written [ha.track] on a line of its own",
            );
            return None;
        };
        if !self.unknown_keys(t, "ha.track", "[ha.track]", TRACK_KEYS) {
            return None;
        }
        let effect = |cx: &mut Self, key: &str| -> Option<Option<Effect>> {
            match t.get(key) {
                Some(v) => cx.effect(&format!("ha.track.{key}"), v).map(Some),
                None => Some(None),
            }
        };
        let interfaces = effect(self, "interfaces");
        let gateway = effect(self, "gateway");
        let ports = effect(self, "ports");
        let gateway_address = match t.get("gateway_address") {
            Some(v) => self.ipv4("ha.track.gateway_address", v).map(Some),
            None => Some(None),
        };
        let gateway_at = t.get("gateway").map(|v| v.span());
        Some((
            Track {
                interfaces: interfaces?,
                gateway: gateway?,
                gateway_address: gateway_address?,
                ports: ports?,
            },
            gateway_at,
        ))
    }

    fn effect(&mut self, key: &str, v: &Value<'_>) -> Option<Effect> {
        const RULE: &str = "must be a negative weight -253..=-1 (the priority is lowered by it \
                            while the check fails) or \"fault\"";
        match v.get_ref() {
            DeValue::String(s) if s.as_ref() == "fault" => Some(Effect::Fault),
            DeValue::Integer(_) => self
                .int_in(key, v, -253..=-1, RULE)
                .map(|n| Effect::Weight(n.unsigned_abs() as u8)),
            _ => {
                self.bad(key, v, RULE);
                None
            }
        }
    }
}
