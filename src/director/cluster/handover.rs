//! Planned director change between proxyha nodes (issue 9: a rolling update should cost
//! clients almost nothing). The RFC path alone — priority-0 advert, the successor waits
//! Skew_Time — leaves a new connection's SYN waiting for its 1 s retransmit. Here:
//!
//! 1. every candidate (priority > 0) tells the director its VRRP priority with each report;
//! 2. a leaving director sends its latest pin changes (just read from the kernel) and names
//!    the live candidate with the highest priority (ties: the higher
//!    address, as VRRP breaks them) in a `Request`; it stops advertising but keeps the VIP;
//! 3. the successor, asked by the director it follows, in that director's epoch, takes over
//!    at once (advert, data path, VIP, gratuitous ARPs) and answers `Done`;
//! 4. the old director then leaves without a priority-0 advert (the successor already
//!    advertises; a priority 0 would only make third backups wait Skew_Time against it).
//!
//! keepalived or FRR peers see plain VRRP: a master that stops and a new one that starts.
//! Any step that does not happen in time falls back to the RFC path (the shell's timeout).

use std::net::Ipv4Addr;
use std::time::Instant;

use super::{Cluster, FAIL_PERIODS, Transmit};
use crate::wire::membership::{Handover, HandoverKind, Message};

/// Where a handover stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Idle,
    /// We direct and asked `successor` to take over, in our epoch.
    Leaving { successor: Ipv4Addr, epoch: u64 },
    /// The director `from` asked us to take over in its epoch `epoch`.
    Taking { from: Ipv4Addr, epoch: u64 },
}

/// What the shell must do about a handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Become VRRP master now (`Router::handle_takeover_request`).
    TakeOver { from: Ipv4Addr },
    /// Our successor holds the VIP: leave without a priority-0 advert.
    Left { successor: Ipv4Addr },
}

impl Cluster {
    fn send_handover(&mut self, dst: Ipv4Addr, epoch: u64, kind: HandoverKind) {
        let msg = Message::Handover(Handover {
            from: self.cfg.self_addr,
            epoch,
            kind,
        });
        if let Ok(payload) = self.seal(&msg) {
            self.count("tx_handover");
            self.transmits.push_back(Transmit { dst, payload });
        }
    }

    /// With each report: a candidate's priority for the director's successor choice.
    pub(super) fn send_candidacy(&mut self, director: Ipv4Addr) {
        if self.cfg.priority == 0 {
            return;
        }
        let epoch = self.replica_of.map_or(0, |(_, e)| e);
        let priority = self.cfg.priority;
        self.send_handover(director, epoch, HandoverKind::Candidate { priority });
    }

    pub(super) fn handle_handover(&mut self, now: Instant, src: Ipv4Addr, h: Handover) {
        if h.from != src {
            self.count("discard_bad_message");
            return;
        }
        match (h.kind, self.handover) {
            (HandoverKind::Candidate { priority }, _) if self.director_role && priority > 0 => {
                self.candidates.insert(src, (priority, now));
            }
            (HandoverKind::Request, State::Idle)
                if !self.director_role
                    && self.cfg.priority > 0
                    && self.director == Some(src)
                    && self.replica_of == Some((src, h.epoch)) =>
            {
                self.count("rx_handover_request");
                self.handover = State::Taking {
                    from: src,
                    epoch: h.epoch,
                };
                self.handover_signals
                    .push_back(Signal::TakeOver { from: src });
            }
            (HandoverKind::Done, State::Leaving { successor, epoch })
                if src == successor && h.epoch == epoch =>
            {
                self.count("rx_handover_done");
                self.handover_signals.push_back(Signal::Left { successor });
            }
            _ => self.count("discard_handover"),
        }
    }

    /// The live candidate that should direct after us, if any.
    pub fn successor(&self, now: Instant) -> Option<Ipv4Addr> {
        let fresh = self.cfg.report_interval * FAIL_PERIODS;
        self.candidates
            .iter()
            .filter(|(a, (_, seen))| {
                now.saturating_duration_since(*seen) <= fresh && self.members.contains_key(*a)
            })
            .max_by_key(|(a, (p, _))| (*p, u32::from(**a)))
            .map(|(a, _)| *a)
    }

    /// A leaving director (SIGTERM): send the latest pins now and ask the successor to
    /// take over. `None`: no successor (the shell leaves the RFC way).
    pub fn begin_handover(&mut self, now: Instant) -> Option<Ipv4Addr> {
        if !self.director_role {
            return None;
        }
        let successor = self.successor(now)?;
        // The latest pins out now, not with the next period.
        self.send_pins(now);
        let epoch = self.epoch;
        self.send_handover(successor, epoch, HandoverKind::Request);
        self.handover = State::Leaving { successor, epoch };
        Some(successor)
    }

    /// The successor's VIP and gratuitous ARPs are out: tell the old director.
    pub fn handover_complete(&mut self) {
        if let State::Taking { from, epoch } = self.handover {
            self.send_handover(from, epoch, HandoverKind::Done);
            self.handover = State::Idle;
        }
    }

    pub fn handover_state(&self) -> State {
        self.handover
    }

    pub fn poll_handover(&mut self) -> Option<Signal> {
        self.handover_signals.pop_front()
    }

    /// A scanning node stops (SIGTERM, a reboot into an update): one last report saying every
    /// listener is going, so the director moves this node's clients now instead of after
    /// FAIL_PERIODS of silence.
    pub fn handle_shutdown(&mut self) {
        let Some(director) = self.director.filter(|d| *d != self.cfg.self_addr) else {
            return;
        };
        if self.director_role {
            return;
        }
        let mut r = self.report();
        for p in &mut r.ports {
            p.listening = false;
            p.reason = "node stopping".into();
        }
        if let Ok(payload) = self.seal(&Message::Report(r)) {
            self.count("tx_reports");
            self.transmits.push_back(Transmit {
                dst: director,
                payload,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{cfg, load, run};
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
    const D: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 4);
    const SEC: Duration = Duration::from_secs(1);

    /// a directs (99); b 89, c 79 and d 0 (scanning only) report to it.
    fn group(t0: Instant) -> Vec<Cluster> {
        let mut nodes: Vec<Cluster> = [("a", A, 99), ("b", B, 89), ("c", C, 79), ("d", D, 0)]
            .iter()
            .map(|(n, a, p)| {
                let mut c = cfg(n, *a);
                c.priority = *p;
                let mut c = Cluster::new(c);
                c.handle_local_load(load());
                c.handle_startup(t0);
                c
            })
            .collect();
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 4], t0, t0 + 3 * SEC);
        nodes
    }

    /// Delivers every pending transmit once (unicast to its address, broadcast to all).
    fn deliver(nodes: &mut [Cluster], now: Instant) {
        let mut sent = Vec::new();
        for n in nodes.iter_mut() {
            while let Some(t) = n.poll_transmit() {
                sent.push((n.cfg.self_addr, t));
            }
        }
        for (src, t) in sent {
            for n in nodes.iter_mut() {
                if n.cfg.self_addr != src
                    && (t.dst == crate::wire::membership::BROADCAST || t.dst == n.cfg.self_addr)
                {
                    n.handle_datagram(now, src, &t.payload);
                }
            }
        }
    }

    #[test]
    fn the_highest_live_candidate_is_named_and_confirms_after_its_takeover() {
        let t0 = Instant::now();
        let mut n = group(t0);
        let t = t0 + 3 * SEC;
        assert_eq!(
            n[0].successor(t),
            Some(B),
            "89 beats 79; the scanning node is no candidate"
        );
        assert_eq!(n[0].begin_handover(t), Some(B));
        assert_eq!(
            n[0].handover_state(),
            State::Leaving {
                successor: B,
                epoch: 1
            }
        );
        deliver(&mut n, t);
        assert_eq!(n[1].poll_handover(), Some(Signal::TakeOver { from: A }));
        assert_eq!(n[2].poll_handover(), None, "only the successor is asked");
        // b becomes VRRP master: the shell tells its core, then confirms once the VIP is out.
        n[1].set_role(t, true);
        n[1].handover_complete();
        deliver(&mut n, t);
        assert_eq!(n[0].poll_handover(), Some(Signal::Left { successor: B }));
        assert!(n[1].counters()["tx_handover"] >= 1);
    }

    #[test]
    fn a_stopping_scanning_node_leaves_every_pool_at_once() {
        let t0 = Instant::now();
        let mut n = group(t0);
        let t = t0 + 3 * SEC;
        let before = n[0].table(9090).counts();
        assert!(before.get(&C).is_some_and(|c| *c > 0), "{before:?}");
        n[2].handle_shutdown();
        deliver(&mut n, t);
        let after = n[0].table(9090).counts();
        assert_eq!(after.get(&C), None, "c's buckets moved at once: {after:?}");
    }

    #[test]
    fn a_silent_candidate_is_not_named_and_none_means_the_rfc_path() {
        let t0 = Instant::now();
        let mut n = group(t0);
        // b and c stop reporting: after FAIL_PERIODS they are no candidates.
        let t = t0 + 3 * SEC;
        let alive = [true, false, false, true];
        run(&mut n, &alive, t, t + 4 * SEC);
        assert_eq!(n[0].successor(t + 4 * SEC), None);
        assert_eq!(n[0].begin_handover(t + 4 * SEC), None);
        assert_eq!(n[0].handover_state(), State::Idle);
    }

    #[test]
    fn requests_from_another_node_or_epoch_and_stray_confirmations_are_discarded() {
        let t0 = Instant::now();
        let mut n = group(t0);
        let t = t0 + 3 * SEC;
        let forge = |from: Ipv4Addr, epoch: u64, kind: HandoverKind| {
            crate::wire::membership::encode(
                &Message::Handover(Handover { from, epoch, kind }),
                51,
                None,
            )
            .unwrap()
        };
        // c claims to be the director; a replays an old epoch; d says Done to a.
        n[1].handle_datagram(t, C, &forge(C, 1, HandoverKind::Request));
        n[1].handle_datagram(t, A, &forge(A, 0, HandoverKind::Request));
        n[1].handle_datagram(t, C, &forge(A, 1, HandoverKind::Request));
        n[0].handle_datagram(t, D, &forge(D, 1, HandoverKind::Done));
        assert_eq!(n[1].poll_handover(), None);
        assert_eq!(n[0].poll_handover(), None);
        assert_eq!(n[1].counters()["discard_handover"], 2);
        assert_eq!(
            n[1].counters()["discard_bad_message"],
            1,
            "from differs from the source"
        );
        assert_eq!(n[0].counters()["discard_handover"], 1);
        // The real one works.
        n[1].handle_datagram(t, A, &forge(A, 1, HandoverKind::Request));
        assert_eq!(n[1].poll_handover(), Some(Signal::TakeOver { from: A }));
    }
}
