//! A standby's side of replication: the director's pins as they arrive (20 bytes each),
//! pruned by complete full cycles, and the changes since the last look for the standby's own
//! kernel map (staged there ahead of a takeover, read by no rule until it directs).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{key, ms, unkey};
use crate::dataplane::{PinStage, StickyEntry, mark_of};
use crate::wire::membership::{Assignment, Pins, PinsKind, Replica};

/// One pin a standby holds: 20 bytes with its key. Times are whole seconds since the
/// table's base, deadlines rounded down (never later than the director's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pin {
    mark: u32,
    deadline_s: u32,
    /// When a message last confirmed it.
    confirmed_s: u32,
}

/// The full cycle a standby is receiving.
#[derive(Debug)]
struct Cycle {
    id: u32,
    pages: u32,
    got: Vec<bool>,
    received: u32,
    /// Pins confirmed before this (the cycle's snapshot) and not in the cycle are gone.
    cutoff_s: u32,
}

/// A standby's side: the director's pins as replicated.
#[derive(Debug)]
pub struct Held {
    idle: Duration,
    /// Set with the first message: times are seconds since then.
    base: Option<Instant>,
    of: Option<(Ipv4Addr, u64)>,
    pins: HashMap<u64, Pin>,
    delta_seq: u64,
    cycle: Option<Cycle>,
    full_cycle: u32,
    last_full: Option<Instant>,
    /// Deltas that did not follow the previous one (lost datagrams, healed by the cycle).
    pub gaps: u64,
    /// Keys changed (added, moved, refreshed, removed) since [`Held::take_staged`] last ran.
    dirty: HashSet<u64>,
}
/// A key alone (mark and time 0), for deletes.
fn key_only(k: u64) -> StickyEntry {
    let (client, port) = unkey(k);
    StickyEntry {
        client,
        port,
        mark: 0,
        expires_ms: 0,
    }
}

impl Held {
    pub fn new(idle: Duration) -> Held {
        Held {
            idle,
            base: None,
            of: None,
            pins: HashMap::new(),
            delta_seq: 0,
            cycle: None,
            full_cycle: 0,
            last_full: None,
            gaps: 0,
            dirty: HashSet::new(),
        }
    }

    fn secs(&self, t: Instant) -> u32 {
        self.base.map_or(0, |b| {
            u32::try_from(t.saturating_duration_since(b).as_secs()).unwrap_or(u32::MAX)
        })
    }

    fn at(&self, secs: u32) -> Option<Instant> {
        Some(self.base? + Duration::from_secs(u64::from(secs)))
    }

    /// The pin of `client` on `port`: its node and the time left.
    pub fn get(&self, now: Instant, client: Ipv4Addr, port: u16) -> Option<(Ipv4Addr, Duration)> {
        let p = self.pins.get(&key(client, port))?;
        let left = self.at(p.deadline_s)?.checked_duration_since(now)?;
        Some((Ipv4Addr::from(p.mark), left))
    }

    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// How old the newest complete full view is (`None`: none yet).
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_full.map(|t| now.saturating_duration_since(t))
    }

    fn put(&mut self, now: Instant, a: &Assignment) {
        let k = key(a.client, a.port);
        let left = self
            .idle
            .saturating_sub(Duration::from_millis(u64::from(a.idle_ms)));
        self.dirty.insert(k);
        if left.is_zero() {
            self.pins.remove(&k);
            return;
        }
        let pin = Pin {
            mark: mark_of(a.node),
            deadline_s: self.secs(now + left),
            confirmed_s: self.secs(now),
        };
        self.pins.insert(k, pin);
    }

    /// A pins message from `src` (already authenticated by the codec). False when it does
    /// not come from the director it names.
    pub fn handle(&mut self, now: Instant, src: Ipv4Addr, p: &Pins) -> bool {
        if p.director != src {
            return false;
        }
        self.base.get_or_insert(now);
        if self.of != Some((p.director, p.epoch)) {
            // A new director (or epoch): its deltas and cycles count from the start; what
            // we hold stays until its first complete cycle says otherwise.
            self.of = Some((p.director, p.epoch));
            self.delta_seq = 0;
            self.cycle = None;
            self.full_cycle = 0;
        }
        match p.kind {
            PinsKind::Delta { seq } => {
                if self.delta_seq != 0 && seq != self.delta_seq + 1 {
                    self.gaps += 1;
                }
                self.delta_seq = self.delta_seq.max(seq);
                for a in &p.pins {
                    self.put(now, a);
                }
                for r in &p.removed {
                    let k = key(r.client, r.port);
                    self.pins.remove(&k);
                    self.dirty.insert(k);
                }
            }
            PinsKind::Full {
                cycle,
                page,
                pages,
                age_ms,
            } => {
                if self
                    .cycle
                    .as_ref()
                    .is_none_or(|c| c.id != cycle || c.pages != pages)
                {
                    let snap = now
                        .checked_sub(Duration::from_millis(u64::from(age_ms)))
                        .unwrap_or(now);
                    self.cycle = Some(Cycle {
                        id: cycle,
                        pages,
                        got: vec![false; pages.min(1 << 20) as usize],
                        received: 0,
                        cutoff_s: self.secs(snap),
                    });
                }
                for a in &p.pins {
                    self.put(now, a);
                }
                let done =
                    self.cycle
                        .as_mut()
                        .is_some_and(|c| match c.got.get_mut(page as usize) {
                            Some(g) if !*g => {
                                *g = true;
                                c.received += 1;
                                c.received == c.pages
                            }
                            _ => false,
                        });
                if done && let Some(c) = self.cycle.take() {
                    // Everything the director held at the snapshot came in this cycle or in
                    // a message since: the rest is gone.
                    let dirty = &mut self.dirty;
                    self.pins.retain(|k, pin| {
                        let keep = pin.confirmed_s >= c.cutoff_s;
                        if !keep {
                            dirty.insert(*k);
                        }
                        keep
                    });
                    self.full_cycle = cycle;
                    self.last_full = Some(now);
                }
            }
        }
        true
    }

    /// Drops expired pins.
    pub fn expire(&mut self, now: Instant) {
        let now_s = self.secs(now);
        self.pins.retain(|_, p| p.deadline_s > now_s);
    }

    /// What to tell the director.
    pub fn replica(&self, me: Ipv4Addr) -> Replica {
        Replica {
            from: me,
            epoch: self.of.map_or(0, |(_, e)| e),
            pins: u32::try_from(self.pins.len()).unwrap_or(u32::MAX),
            full_cycle: self.full_cycle,
            delta_seq: self.delta_seq,
        }
    }

    fn entry(&self, now: Instant, k: u64, p: &Pin) -> Option<StickyEntry> {
        let left = self.at(p.deadline_s)?.checked_duration_since(now)?;
        if left.is_zero() {
            return None;
        }
        let (client, port) = unkey(k);
        Some(StickyEntry {
            client,
            port,
            mark: p.mark,
            expires_ms: ms(left).max(1),
        })
    }

    /// The live pins whose node `keep` accepts, for a new director's kernel map.
    pub fn entries(&self, now: Instant, keep: impl Fn(Ipv4Addr) -> bool) -> Vec<StickyEntry> {
        self.pins
            .iter()
            .filter(|(_, p)| keep(Ipv4Addr::from(p.mark)))
            .filter_map(|(k, p)| self.entry(now, *k, p))
            .collect()
    }

    /// The held pins whose node `keep` refuses (a new director deletes them from its map).
    pub fn void(&self, keep: impl Fn(Ipv4Addr) -> bool) -> Vec<StickyEntry> {
        self.pins
            .iter()
            .filter(|(_, p)| !keep(Ipv4Addr::from(p.mark)))
            .map(|(k, _)| key_only(*k))
            .collect()
    }

    /// What changed since the last call: cost by change (the full cycles' pages count as
    /// changes: they refresh the kernel's deadlines).
    pub fn take_staged(&mut self, now: Instant) -> PinStage {
        let mut out = PinStage {
            timeout_ms: ms(self.idle),
            ..PinStage::default()
        };
        for k in std::mem::take(&mut self.dirty) {
            match self.pins.get(&k).and_then(|p| self.entry(now, k, p)) {
                Some(e) => out.upserts.push(e),
                None => out.removed.push(key_only(k)),
            }
        }
        out
    }

    /// Every held pin counts as changed (the kernel's copy failed or was flushed).
    pub fn restage_all(&mut self) {
        self.dirty = self.pins.keys().copied().collect();
    }

    /// Forgets everything (this node directs now, or left the group).
    pub fn clear(&mut self) {
        self.pins = HashMap::new();
        self.dirty = HashSet::new();
        self.of = None;
        self.cycle = None;
        self.delta_seq = 0;
        self.full_cycle = 0;
        self.last_full = None;
    }
}
