//! The pins of the cluster core: what the director replicates to the standby candidates
//! (by change, [`crate::director::replication`]), what a standby holds, and what a new
//! director continues. The shell reads the kernel and feeds the results in; nothing here
//! reads the whole map on its own schedule.

use super::*;
use crate::dataplane::{FRESH_TIMEOUT, PinReads, PinStage, PinsRead};

/// After a failed stage, the next (of every held pin) waits this long.
const STAGE_RETRY: Duration = Duration::from_secs(10);
use crate::director::replication::{Held, Outbox};
use crate::wire::membership::{Pins, PinsKind, Replica};

impl Cluster {
    pub(super) fn idle(&self) -> Duration {
        Duration::from_secs(u64::from(self.cfg.sticky_idle_s))
    }

    /// Director, once a period: the kernel reads replication needs now. Empty elsewhere.
    pub fn pin_reads(&mut self, now: Instant) -> PinReads {
        if !self.director_role || self.cfg.sticky_idle_s == 0 {
            return PinReads::default();
        }
        // After the pools changed, the whole map: its void pins go (the worker deletes them).
        // Not while a preload is still on its way into the kernel.
        let full = (self.pools_changed || self.outbox.reconcile_due(now))
            && self.preload.is_empty()
            && self.preload_void.is_empty();
        if full {
            self.pools_changed = false;
        }
        PinReads {
            fresh: true,
            lookup: self.outbox.due(now),
            full,
        }
    }

    /// What the shell read for [`Cluster::pin_reads`].
    pub fn handle_pins_read(&mut self, now: Instant, r: PinsRead) {
        if !self.director_role {
            return;
        }
        self.outbox.removed(&r.deleted);
        if let Some(all) = &r.full {
            self.outbox.observe_full(now, all);
        }
        self.outbox.observe_fresh(now, &r.fresh, FRESH_TIMEOUT);
        self.outbox.observe_lookup(now, &r.found, &r.missing);
    }

    /// Pins the director holds (live in its kernel map as last read), or a standby holds.
    pub fn pins_held(&self) -> usize {
        if self.director_role {
            self.outbox.len()
        } else {
            self.held.len()
        }
    }

    /// Standby: how old its newest complete copy of the director's pins is.
    pub fn pins_age(&self, now: Instant) -> Option<Duration> {
        if self.director_role {
            None
        } else {
            self.held.age(now)
        }
    }

    /// Whether a returning higher-priority node may preempt the lower master it hears
    /// without costing clients their pins (the shell's preempt hold), `waiting` since when
    /// it holds back. Ready when we direct, stickiness is off, or we hold a complete copy
    /// of the director's pins. No director announced yet: its announcement is due within a
    /// report period, so wait [`ANNOUNCE_GRACE_PERIODS`] of them; none by then means the
    /// master directs nothing we could lose (a keepalived peer, load sharing off there).
    pub fn preempt_ready(&self, now: Instant, waiting: Option<Instant>) -> PreemptReady {
        if self.director_role || self.cfg.sticky_idle_s == 0 {
            return PreemptReady::Yes;
        }
        match self.director {
            Some(_) if self.held.age(now).is_some() => PreemptReady::Yes,
            Some(_) => PreemptReady::CopyPending,
            None => {
                let grace = self.cfg.report_interval * ANNOUNCE_GRACE_PERIODS;
                match waiting {
                    Some(since) if now.saturating_duration_since(since) >= grace => {
                        PreemptReady::NoDirector
                    }
                    _ => PreemptReady::AwaitingAnnouncement,
                }
            }
        }
    }

    /// Live pins per node (the director's), for status.
    pub(super) fn pinned(&self) -> BTreeMap<Ipv4Addr, u64> {
        self.outbox.per_node()
    }

    /// The data path applied a desired state: replicated pins, once loaded, must not be
    /// loaded again (a later apply would revive pins that have expired since).
    pub fn preload_applied(&mut self) {
        if self.preload.is_empty() && self.preload_void.is_empty() {
            return;
        }
        self.preload.clear();
        self.preload_void.clear();
        // The state without the preload is what the kernel now holds; no apply needed.
        self.last_desired = Some(self.desired());
    }

    /// A new director: what it holds becomes its own (its kernel gets these as the preload).
    /// Staged in the kernel already (the usual case): only the changes not handed to the
    /// data path yet are loaded, and the void ones deleted; else all of them are loaded.
    pub(super) fn start_directing_pins(&mut self, now: Instant, previous: Option<Ipv4Addr>) {
        let all = self.replica_preload(now, previous);
        let keep = self.pin_keeper(previous);
        self.preload_void = self.held.void(&keep);
        let staged = self.staged_ok && self.restage.is_none();
        if staged {
            let rest = self.held.take_staged(now);
            self.preload = rest.upserts;
            self.preload.retain(|e| keep(Ipv4Addr::from(e.mark)));
            self.preload_void.extend(rest.removed);
        } else {
            self.preload = all.clone();
        }
        if !all.is_empty() {
            log::info!(
                "continuing {} client assignments of the previous director ({})",
                all.len(),
                if staged {
                    format!(
                        "staged in the kernel; {} to load, {} to delete",
                        self.preload.len(),
                        self.preload_void.len()
                    )
                } else {
                    "not staged: loading all".to_string()
                }
            );
        }
        self.outbox = Outbox::new(self.idle());
        self.outbox.seed(now, &all);
        self.held.clear();
    }

    /// No longer directing: the next director's pins come by replication (the data path
    /// flushes the maps as this node starts scanning, so kernel and `held` agree: empty).
    pub(super) fn stop_directing_pins(&mut self) {
        self.outbox = Outbox::new(self.idle());
        self.preload.clear();
        self.preload_void.clear();
        self.held = Held::new(self.idle());
        self.staged_ok = true;
        self.restage = None;
    }

    /// Which nodes a continued pin may point at: one we direct to, not the previous
    /// director (we direct because it is gone or stepped down).
    fn pin_keeper(&self, previous: Option<Ipv4Addr>) -> impl Fn(Ipv4Addr) -> bool + use<> {
        let me = self.cfg.self_addr;
        let members: BTreeSet<Ipv4Addr> = self.members.keys().copied().collect();
        move |n| Some(n) != previous && (n == me || members.contains(&n))
    }

    /// Standby candidate, each period: the held pins' changes for its own `sticky` map
    /// (`None` when nothing changed, or this node keeps no pins). With the id to report
    /// back in [`Cluster::stage_done`].
    pub fn pins_to_stage(&mut self, now: Instant) -> Option<(u64, PinStage)> {
        if self.director_role || self.cfg.priority == 0 || self.cfg.sticky_idle_s == 0 {
            return None;
        }
        if self.stage_after.is_some_and(|t| now < t) {
            return None;
        }
        let stage = self.held.take_staged(now);
        if stage.is_empty() {
            return None;
        }
        self.stage_id += 1;
        if !self.staged_ok && self.restage.is_none() {
            self.restage = Some(self.stage_id);
        }
        Some((self.stage_id, stage))
    }

    /// The data path's answer to stage `id`. A failure re-stages every held pin (after a
    /// pause); until a whole stage succeeds a takeover loads all pins instead.
    pub fn stage_done(&mut self, now: Instant, id: u64, ok: bool) {
        if ok {
            if self.restage == Some(id) {
                self.restage = None;
                self.staged_ok = true;
            }
            return;
        }
        if self.director_role {
            // Directing already (the stage was queued before the takeover): the kernel lacks
            // some of the continued pins; those clients follow the bucket table.
            log::warn!("a stage of replicated pins failed just before this node took over");
            return;
        }
        self.staged_ok = false;
        self.restage = None;
        self.held.restage_all();
        self.stage_after = Some(now + STAGE_RETRY);
    }

    /// The replicated pins still worth keeping: to a node we direct to, not expired, not to
    /// the previous director (we direct because it is gone or stepped down).
    pub(super) fn replica_preload(
        &self,
        now: Instant,
        previous: Option<Ipv4Addr>,
    ) -> Vec<StickyEntry> {
        let mut pins = self.held.entries(now, self.pin_keeper(previous));
        pins.sort_unstable_by_key(|e| (e.client, e.port));
        pins
    }

    /// Standby: pins from an older director that still pages them in its announcements
    /// (0.1.0, during a rolling update), taken as a delta.
    pub(super) fn keep_page(&mut self, now: Instant, a: &Announcement) {
        if a.assignments.is_empty() {
            return;
        }
        let p = Pins {
            director: a.director,
            epoch: a.epoch,
            kind: PinsKind::Delta { seq: 0 },
            pins: a.assignments.clone(),
            removed: Vec::new(),
        };
        self.held.handle(now, a.director, &p);
    }

    /// A pins message (director → standby).
    pub(super) fn handle_pins(&mut self, now: Instant, src: Ipv4Addr, p: Pins) {
        self.count("rx_pins");
        if self.director_role || self.cfg.priority == 0 || !self.held.handle(now, src, &p) {
            self.count("discard_pins");
        }
    }

    /// A replica report (standby → director).
    pub(super) fn handle_replica(&mut self, src: Ipv4Addr, r: Replica) {
        if !self.director_role || r.from != src {
            self.count("discard_pins");
            return;
        }
        self.outbox.handle_replica(self.epoch, &r);
    }

    /// Standby, with each report: what it holds, so the director knows whom to catch up.
    pub(super) fn send_replica(&mut self, now: Instant, director: Ipv4Addr) {
        if self.cfg.priority == 0 || self.cfg.sticky_idle_s == 0 {
            return;
        }
        self.held.expire(now);
        let r = self.held.replica(self.cfg.self_addr);
        if let Ok(payload) = self.seal(&Message::Replica(r)) {
            self.transmits.push_back(Transmit {
                dst: director,
                payload,
            });
        }
    }

    /// Director, each period: the deltas and full-cycle pages, unicast to each standby
    /// candidate (priority > 0, heard within the last periods).
    pub(super) fn send_pins(&mut self, now: Instant) {
        if self.cfg.sticky_idle_s == 0 {
            return;
        }
        let me = self.cfg.self_addr;
        let candidates: Vec<(Ipv4Addr, Instant)> = self
            .candidates
            .iter()
            .filter(|(a, _)| **a != me)
            .map(|(a, (_, seen))| (*a, *seen))
            .collect();
        self.outbox.set_standbys(now, candidates);
        for (dst, p) in self.outbox.poll(now, me, self.epoch) {
            match self.seal(&Message::Pins(p)) {
                Ok(payload) => {
                    self.count("tx_pins");
                    *self.counters.entry("tx_pins_bytes").or_insert(0) += payload.len() as u64;
                    self.transmits.push_back(Transmit { dst, payload });
                }
                Err(e) => log::warn!("pins for {dst} not sent: {e}"),
            }
        }
    }

    /// The director's pin of `client` on `port` (node, time left), or the standby's.
    pub(super) fn pin_of(
        &self,
        now: Instant,
        client: Ipv4Addr,
        port: u16,
    ) -> Option<(Ipv4Addr, Duration)> {
        if self.director_role {
            self.outbox.get(now, client, port)
        } else {
            self.held.get(now, client, port)
        }
    }
}
