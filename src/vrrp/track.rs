//! `[ha.track]`, sans-IO: from the states the shell observes (bond slaves, gateway ARP
//! replies, this node's listeners) to the priority the VRRP core runs at and whether it must
//! be in FAULT, as keepalived's `track_interface` / `vrrp_script` weights do. Every change of
//! the verdict is logged once with its reason.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Effect, Track};

/// Probes the gateway has not answered before it counts as unreachable.
pub const GATEWAY_MISSES: u32 = 3;
/// Shortest probe period, whatever the advert interval (one ARP request a period).
pub const MIN_PROBE_PERIOD: Duration = Duration::from_millis(100);

/// One tracked check, for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackItem {
    /// "interface eth1", "gateway 10.0.0.1", "port 9090".
    pub check: String,
    pub ok: bool,
    /// "-20" or "fault".
    pub effect: String,
    /// Why it fails (empty when fine).
    pub detail: String,
}

/// What the core must run at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub priority: u8,
    pub fault: bool,
    pub items: Vec<TrackItem>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failing: Vec<String> = self
            .items
            .iter()
            .filter(|i| !i.ok)
            .map(|i| format!("{} {} ({})", i.check, i.detail, i.effect))
            .collect();
        if failing.is_empty() {
            f.write_str("every tracked check is fine")
        } else {
            f.write_str(&failing.join("; "))
        }
    }
}

/// The tracker of one node.
#[derive(Debug)]
pub struct Tracker {
    track: Track,
    gateway: Option<Ipv4Addr>,
    base: u8,
    period: Duration,
    slaves: Vec<(String, bool)>,
    ports: Vec<(u16, bool)>,
    started: Instant,
    last_reply: Option<Instant>,
    next_probe: Option<Instant>,
    last: Option<Verdict>,
    /// An input changed (or a probe period passed) since the last verdict: the shell asks
    /// after every event, and only then is anything recomputed.
    dirty: bool,
}

impl Tracker {
    /// `base`: the configured priority; `gateway`: the address to probe (when tracked);
    /// probes every `advert_interval` (at least [`MIN_PROBE_PERIOD`]).
    pub fn new(
        track: Track,
        gateway: Option<Ipv4Addr>,
        base: u8,
        advert_interval: Duration,
        now: Instant,
    ) -> Tracker {
        let mut t = Tracker {
            track: Track::default(),
            gateway: None,
            base,
            period: MIN_PROBE_PERIOD,
            slaves: Vec::new(),
            ports: Vec::new(),
            started: now,
            last_reply: None,
            next_probe: None,
            last: None,
            dirty: true,
        };
        t.reconfigure(track, gateway, base, advert_interval, now);
        t
    }

    /// New settings (reload); observed states are kept.
    pub fn reconfigure(
        &mut self,
        track: Track,
        gateway: Option<Ipv4Addr>,
        base: u8,
        advert_interval: Duration,
        now: Instant,
    ) {
        let probing = track.gateway.is_some() && gateway.is_some();
        if probing && (self.gateway != gateway || self.track.gateway.is_none()) {
            // A new target gets its grace period, as at start.
            self.started = now;
            self.last_reply = None;
            self.next_probe = Some(now);
        }
        if !probing {
            self.next_probe = None;
        }
        self.track = track;
        self.gateway = gateway;
        self.base = base;
        self.dirty = true;
        self.period = advert_interval.max(MIN_PROBE_PERIOD);
    }

    /// The bond slaves of the HA interface and whether each is up.
    pub fn set_slaves(&mut self, slaves: Vec<(String, bool)>) {
        self.dirty |= self.slaves != slaves;
        self.slaves = slaves;
    }

    /// This node's redirected listener ports and whether each listens.
    pub fn set_ports(&mut self, ports: Vec<(u16, bool)>) {
        self.dirty |= self.ports != ports;
        self.ports = ports;
    }

    /// An ARP packet from the gateway arrived.
    pub fn gateway_heard(&mut self, now: Instant) {
        self.last_reply = Some(now);
        self.dirty = true;
    }

    /// The gateway to probe, if a probe is due at `now` (the next one is then scheduled).
    pub fn poll_probe(&mut self, now: Instant) -> Option<Ipv4Addr> {
        let due = self.next_probe.filter(|t| *t <= now)?;
        // The gateway's silence is judged once a period, with the probe.
        self.dirty = true;
        let next = due + self.period;
        self.next_probe = Some(if next > now { next } else { now + self.period });
        self.gateway
    }

    /// When the next probe (or the next verdict change by silence) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_probe
    }

    /// The verdict at `now`, `Some` only when it differs from the last one returned (logged).
    pub fn verdict(&mut self, now: Instant) -> Option<Verdict> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let v = self.compute(now);
        if self.last.as_ref() == Some(&v) {
            return None;
        }
        let old = self.last.replace(v.clone());
        let (old_priority, old_fault) = old
            .as_ref()
            .map_or((self.base, false), |o| (o.priority, o.fault));
        let tracked = !v.items.is_empty() || old.as_ref().is_some_and(|o| !o.items.is_empty());
        if tracked && (old.is_some() || v.priority != self.base || v.fault) {
            let state = match (old_fault, v.fault) {
                (false, true) => "FAULT".to_string(),
                (true, false) => "fault cleared".to_string(),
                _ if old_priority != v.priority => {
                    format!("priority {old_priority} → {}", v.priority)
                }
                _ => format!("priority {}", v.priority),
            };
            if v.fault || v.priority < self.base {
                log::warn!("track: {v}: {state}");
            } else {
                log::info!("track: {v}: {state}");
            }
        }
        Some(v)
    }

    /// The last verdict returned (status), or the fine one before the first.
    pub fn current(&self) -> Verdict {
        self.last.clone().unwrap_or(Verdict {
            priority: self.base,
            fault: false,
            items: Vec::new(),
        })
    }

    fn compute(&self, now: Instant) -> Verdict {
        // Each check with its effect, in status order.
        let mut checks: Vec<(TrackItem, Effect)> = Vec::new();
        if let Some(e) = self.track.interfaces {
            for (name, up) in &self.slaves {
                checks.push((item(format!("interface {name}"), *up, e, "link down"), e));
            }
        }
        if let (Some(e), Some(gw)) = (self.track.gateway, self.gateway) {
            let since = self.last_reply.unwrap_or(self.started);
            let silent = now.saturating_duration_since(since);
            let ok = silent < self.period * GATEWAY_MISSES;
            let detail = match self.last_reply {
                Some(_) => format!("no ARP reply for {} ms", silent.as_millis()),
                None => format!("no ARP reply since start ({} ms)", silent.as_millis()),
            };
            checks.push((item(format!("gateway {gw}"), ok, e, &detail), e));
        }
        if let Some(e) = self.track.ports {
            for (port, up) in &self.ports {
                checks.push((item(format!("port {port}"), *up, e, "not listening"), e));
            }
        }
        let mut fault = false;
        let mut lower: u32 = 0;
        for (_, e) in checks.iter().filter(|(i, _)| !i.ok) {
            match e {
                Effect::Fault => fault = true,
                Effect::Weight(w) => lower += u32::from(*w),
            }
        }
        let priority = if self.base == 0 {
            0
        } else {
            u8::try_from(u32::from(self.base).saturating_sub(lower).max(1)).unwrap_or(1)
        };
        Verdict {
            priority,
            fault,
            items: checks.into_iter().map(|(i, _)| i).collect(),
        }
    }
}

fn item(check: String, ok: bool, effect: Effect, detail: &str) -> TrackItem {
    TrackItem {
        check,
        ok,
        effect: effect.to_string(),
        detail: if ok {
            String::new()
        } else {
            detail.to_string()
        },
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn tracker(track: Track, now: Instant) -> Tracker {
        Tracker::new(track, Some(GW), 99, Duration::from_millis(100), now)
    }

    #[test]
    fn weights_add_up_per_failing_item_and_fault_wins() {
        let t0 = Instant::now();
        let mut t = tracker(
            Track {
                interfaces: Some(Effect::Weight(20)),
                ports: Some(Effect::Weight(30)),
                ..Track::default()
            },
            t0,
        );
        t.set_slaves(vec![("eth0".into(), true), ("eth1".into(), true)]);
        t.set_ports(vec![(9090, true), (2121, true)]);
        let v = t.verdict(t0).expect("first verdict");
        assert_eq!((v.priority, v.fault), (99, false));
        assert_eq!(t.verdict(t0), None, "unchanged");
        t.set_ports(vec![(9090, true), (2121, true)]);
        assert_eq!(
            t.verdict(t0),
            None,
            "the same ports again: nothing recomputed"
        );
        t.set_slaves(vec![("eth0".into(), true), ("eth1".into(), false)]);
        t.set_ports(vec![(9090, false), (2121, true)]);
        let v = t.verdict(t0).expect("changed");
        assert_eq!(v.priority, 99 - 20 - 30);
        assert_eq!(
            v.to_string(),
            "interface eth1 link down (-20); port 9090 not listening (-30)"
        );
        t.set_ports(vec![(9090, false), (2121, false)]);
        t.set_slaves(vec![("eth0".into(), false), ("eth1".into(), false)]);
        assert_eq!(t.verdict(t0).unwrap().priority, 1, "never below 1");
        let mut f = tracker(
            Track {
                ports: Some(Effect::Fault),
                ..Track::default()
            },
            t0,
        );
        f.set_ports(vec![(9090, false)]);
        assert!(f.verdict(t0).unwrap().fault);
        f.set_ports(vec![(9090, true)]);
        let v = f.verdict(t0).unwrap();
        assert!(!v.fault && v.priority == 99);
    }

    #[test]
    fn gateway_fails_after_three_unanswered_probes_and_recovers_on_a_reply() {
        let t0 = Instant::now();
        let mut t = tracker(
            Track {
                gateway: Some(Effect::Weight(30)),
                ..Track::default()
            },
            t0,
        );
        // A probe at once, then every 100 ms.
        assert_eq!(t.poll_probe(t0), Some(GW));
        assert_eq!(t.poll_probe(t0 + 50 * MS), None);
        assert_eq!(t.poll_timeout(), Some(t0 + 100 * MS));
        assert_eq!(t.verdict(t0).unwrap().priority, 99, "grace at start");
        t.gateway_heard(t0 + 5 * MS);
        assert_eq!(t.verdict(t0 + 299 * MS), None, "answered 294 ms ago: fine");
        // The shell's probe timer is what wakes the silence check.
        assert_eq!(t.poll_probe(t0 + 305 * MS), Some(GW));
        let v = t.verdict(t0 + 305 * MS).expect("silent for 3 periods");
        assert_eq!(v.priority, 69);
        assert_eq!(v.items[0].detail, "no ARP reply for 300 ms");
        t.gateway_heard(t0 + 400 * MS);
        assert_eq!(t.verdict(t0 + 400 * MS).unwrap().priority, 99);
        // A long stall does not make a burst of probes.
        assert_eq!(t.poll_probe(t0 + 10_000 * MS), Some(GW));
        assert_eq!(t.poll_timeout(), Some(t0 + 10_100 * MS));
    }

    #[test]
    fn scanning_nodes_stay_at_priority_zero_and_untracked_is_silent() {
        let t0 = Instant::now();
        let mut t = Tracker::new(
            Track {
                ports: Some(Effect::Weight(10)),
                ..Track::default()
            },
            None,
            0,
            Duration::from_secs(1),
            t0,
        );
        t.set_ports(vec![(9090, false)]);
        assert_eq!(t.verdict(t0).unwrap().priority, 0);
        let mut none = Tracker::new(Track::default(), None, 50, Duration::from_secs(1), t0);
        assert_eq!(none.poll_probe(t0), None);
        assert_eq!(none.poll_timeout(), None);
        let v = none.verdict(t0).unwrap();
        assert_eq!((v.priority, v.fault, v.items.len()), (50, false, 0));
    }
}
