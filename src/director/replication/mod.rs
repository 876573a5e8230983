//! Pin replication to the standby candidates, by change (the scale issue; BRIEF §6).
//!
//! The director's kernel keeps the pins (the `sticky` map). What standbys need is the same
//! set, so that a new director continues every client on its node. Cost follows change, not
//! the number of clients:
//! - new pins come from the small `fresh` map the data path fills for new clients only (read
//!   every period); pins the director deletes, it knows;
//! - expiries: the kernel moves a pin's deadline on with every packet. The director looks up
//!   (by key, not by dumping the map: a dump of a 100,000-element map costs the kernel
//!   ≈ 0.5 s, a lookup ≈ 4 µs) only the pins whose deadline as last told is near
//!   ([`LOOKAHEAD`]), and tells the standbys a new deadline only when it moved by more than
//!   [`REFRESH_BOUND`] or the told one is about to pass;
//! - each standby gets the whole set again in a slow background cycle ([`FULL_RATE`] pins a
//!   second; [`CATCHUP_RATE`] for one that joined late or came back), which heals any lost
//!   datagram: a standby drops the pins a complete cycle did not contain. The kernel map
//!   itself is read whole only rarely ([`RECONCILE_EVERY`]), to catch pins the `fresh` map
//!   missed.
//!
//! Both ends are sans-IO: [`Outbox`] (director) turns kernel reads into [`Pins`] messages for
//! each standby, [`Held`] (standby) applies them. Deadlines are on each node's own monotonic
//! clock; the wire carries ages ([`Assignment::idle_ms`]), so clocks never meet.
//!
//! Invariant: a standby's deadline for a pin is never later than the director's kernel's (it
//! is told a deadline the kernel had, and the kernel only moves deadlines on), so a standby
//! never continues a pin the director let expire.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::dataplane::StickyEntry;
use crate::wire::membership::{Assignment, MAX_PINS, PinKey, Pins, PinsKind, Replica};

mod held;
pub use held::Held;

/// How often the director reads its whole sticky map (pins the `fresh` map missed).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(300);
/// How often the standbys' full cycles start from a new snapshot of the director's keys.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);
/// An expiry refresh is sent when a pin's deadline moved later by more than this...
pub const REFRESH_BOUND: Duration = Duration::from_secs(30);
/// ...or when the deadline last told is this close.
pub const URGENT: Duration = Duration::from_secs(10);
/// A pin is looked up when its told deadline is this close.
pub const LOOKAHEAD: Duration = Duration::from_secs(60);
/// Background full refresh, pins per second per standby (≈ 16 bytes each: ≈ 32 KB/s).
pub const FULL_RATE: u64 = 2000;
/// Full refresh for a standby that has none yet (joined late, restarted, new epoch).
pub const CATCHUP_RATE: u64 = 40_000;
/// A standby not heard from (no replica report) for this long gets no more pins.
pub const STANDBY_SILENT: Duration = Duration::from_secs(5);

fn key(client: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(client)) << 16) | u64::from(port)
}

fn unkey(k: u64) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from((k >> 16) as u32), k as u16)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the director told standbys about one pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Told {
    mark: u32,
    deadline: Instant,
    /// When to look the pin up next.
    check: Instant,
}

impl Told {
    fn new(mark: u32, deadline: Instant) -> Told {
        Told {
            mark,
            deadline,
            check: deadline.checked_sub(LOOKAHEAD).unwrap_or(deadline),
        }
    }
}

/// One standby as the director sees it.
#[derive(Debug)]
struct Standby {
    /// Sends its full cycles at [`CATCHUP_RATE`] until one completed.
    catching_up: bool,
    cycle: u32,
    /// The snapshot this standby's current cycle walks, and how far it got.
    walk: Option<(Rc<Snapshot>, usize)>,
    /// Pins owed from the rate, carried between periods.
    credit: f64,
}

/// The keys the director held at `at`: the order a full cycle walks (the values it sends
/// are the current ones).
#[derive(Debug, Default)]
struct Snapshot {
    at: Option<Instant>,
    keys: Vec<u64>,
}

/// The director's side.
#[derive(Debug)]
pub struct Outbox {
    idle: Duration,
    told: HashMap<u64, Told>,
    /// The first whole read (or the takeover's preload) is the baseline, carried by the
    /// standbys' catch-up cycles rather than as one huge delta.
    primed: bool,
    added: Vec<u64>,
    removed: Vec<u64>,
    seq: u64,
    snapshot: Rc<Snapshot>,
    standbys: BTreeMap<Ipv4Addr, Standby>,
    last_poll: Option<Instant>,
    last_reconcile: Option<Instant>,
}

impl Outbox {
    pub fn new(idle: Duration) -> Outbox {
        Outbox {
            idle,
            told: HashMap::new(),
            primed: false,
            added: Vec::new(),
            removed: Vec::new(),
            seq: 0,
            snapshot: Rc::new(Snapshot::default()),
            standbys: BTreeMap::new(),
            last_poll: None,
            last_reconcile: None,
        }
    }

    /// Pins the director holds (as last read).
    pub fn len(&self) -> usize {
        self.told.len()
    }

    pub fn is_empty(&self) -> bool {
        self.told.is_empty()
    }

    /// Live pins per node, for status.
    pub fn per_node(&self) -> BTreeMap<Ipv4Addr, u64> {
        let mut out = BTreeMap::new();
        for t in self.told.values() {
            *out.entry(Ipv4Addr::from(t.mark)).or_insert(0) += 1;
        }
        out
    }

    /// The pins as the director knows them (for pruning the void ones).
    pub fn pins(&self, now: Instant) -> Vec<StickyEntry> {
        self.told
            .iter()
            .filter_map(|(k, t)| {
                let left = t.deadline.checked_duration_since(now)?;
                let (client, port) = unkey(*k);
                Some(StickyEntry {
                    client,
                    port,
                    mark: t.mark,
                    expires_ms: ms(left),
                })
            })
            .collect()
    }

    /// The kernel's word on one pin: `deadline` is when it expires there.
    fn learn(&mut self, now: Instant, k: u64, mark: u32, deadline: Instant) {
        let changed = match self.told.get_mut(&k) {
            Some(t) if t.mark == mark => {
                if deadline > t.deadline
                    && (deadline > t.deadline + REFRESH_BOUND || t.deadline <= now + URGENT)
                {
                    *t = Told::new(mark, deadline);
                    true
                } else {
                    // Not worth a message yet: look again halfway to the told deadline.
                    let half = t.deadline.saturating_duration_since(now) / 2;
                    t.check = now + half.max(Duration::from_secs(1));
                    false
                }
            }
            _ => {
                self.told.insert(k, Told::new(mark, deadline));
                true
            }
        };
        if changed && self.primed {
            self.added.push(k);
        }
    }

    /// New pins, read from the `fresh` map (elements live `fresh_timeout` from the moment
    /// the pin was created; what is left of that tells the pin's age).
    pub fn observe_fresh(&mut self, now: Instant, fresh: &[StickyEntry], fresh_timeout: Duration) {
        for e in fresh {
            let age = fresh_timeout.saturating_sub(Duration::from_millis(e.expires_ms));
            let Some(left) = self.idle.checked_sub(age) else {
                continue;
            };
            self.learn(now, key(e.client, e.port), e.mark, now + left);
        }
    }

    /// The pins to look up in the kernel now (their told deadline is near).
    pub fn due(&self, now: Instant) -> Vec<(Ipv4Addr, u16)> {
        self.told
            .iter()
            .filter(|(_, t)| t.check <= now)
            .map(|(k, _)| unkey(*k))
            .collect()
    }

    /// What the lookups of [`Outbox::due`] found: pins still there (with their expiry now),
    /// and keys gone (expired or deleted: the standbys' deadlines end no later).
    pub fn observe_lookup(
        &mut self,
        now: Instant,
        found: &[StickyEntry],
        missing: &[(Ipv4Addr, u16)],
    ) {
        for e in found {
            let deadline = now + Duration::from_millis(e.expires_ms).min(self.idle);
            self.learn(now, key(e.client, e.port), e.mark, deadline);
        }
        for (c, p) in missing {
            self.told.remove(&key(*c, *p));
        }
    }

    /// Whether the whole map should be read again ([`RECONCILE_EVERY`], and at the start).
    pub fn reconcile_due(&self, now: Instant) -> bool {
        self.last_reconcile
            .is_none_or(|t| now.saturating_duration_since(t) >= RECONCILE_EVERY)
    }

    /// The whole sticky map: what the director did not know goes out with the next delta,
    /// and what is no longer there is forgotten. The first one is the baseline.
    pub fn observe_full(&mut self, now: Instant, all: &[StickyEntry]) {
        let mut keys = Vec::with_capacity(all.len());
        for e in all {
            let k = key(e.client, e.port);
            let deadline = now + Duration::from_millis(e.expires_ms).min(self.idle);
            self.learn(now, k, e.mark, deadline);
            keys.push(k);
        }
        keys.sort_unstable();
        self.told.retain(|k, _| keys.binary_search(k).is_ok());
        self.primed = true;
        self.last_reconcile = Some(now);
        self.take_snapshot(now);
    }

    /// A new director's baseline: the replicated pins it loaded into its kernel.
    pub fn seed(&mut self, now: Instant, pins: &[StickyEntry]) {
        for e in pins {
            let deadline = now + Duration::from_millis(e.expires_ms).min(self.idle);
            self.told
                .insert(key(e.client, e.port), Told::new(e.mark, deadline));
        }
        self.primed = true;
        self.last_reconcile = Some(now);
        self.take_snapshot(now);
    }

    fn take_snapshot(&mut self, now: Instant) {
        let mut keys: Vec<u64> = self.told.keys().copied().collect();
        keys.sort_unstable();
        self.snapshot = Rc::new(Snapshot {
            at: Some(now),
            keys,
        });
    }

    /// The pin of `client` on `port`: its node and the time left, as last read.
    pub fn get(&self, now: Instant, client: Ipv4Addr, port: u16) -> Option<(Ipv4Addr, Duration)> {
        let t = self.told.get(&key(client, port))?;
        Some((
            Ipv4Addr::from(t.mark),
            t.deadline.checked_duration_since(now)?,
        ))
    }

    /// Pins the director deleted (their node left the port's pool).
    pub fn removed(&mut self, pins: &[StickyEntry]) {
        for p in pins {
            let k = key(p.client, p.port);
            if self.told.remove(&k).is_some() {
                self.removed.push(k);
            }
        }
    }

    /// The standby candidates (priority > 0) as the director currently knows them, each with
    /// when it last said so; a new one starts with a fast catch-up cycle.
    pub fn set_standbys(
        &mut self,
        now: Instant,
        candidates: impl IntoIterator<Item = (Ipv4Addr, Instant)>,
    ) {
        let mut next = BTreeMap::new();
        for (addr, heard) in candidates {
            if now.saturating_duration_since(heard) >= STANDBY_SILENT {
                continue;
            }
            let s = self.standbys.remove(&addr).unwrap_or(Standby {
                catching_up: true,
                cycle: 0,
                walk: None,
                credit: 0.0,
            });
            next.insert(addr, s);
        }
        self.standbys = next;
    }

    /// A standby's replica report: one that holds no complete cycle of this epoch (it
    /// restarted, or followed another director) is caught up fast.
    pub fn handle_replica(&mut self, epoch: u64, r: &Replica) {
        if let Some(s) = self.standbys.get_mut(&r.from)
            && (r.epoch != epoch || r.full_cycle == 0)
            && !s.catching_up
            && s.walk.is_none()
        {
            s.catching_up = true;
        }
    }

    fn assignment(idle: Duration, now: Instant, k: u64, t: &Told) -> Option<Assignment> {
        let left = t.deadline.checked_duration_since(now)?;
        let (client, port) = unkey(k);
        Some(Assignment {
            client,
            port,
            node: Ipv4Addr::from(t.mark),
            idle_ms: u32::try_from(ms(idle.saturating_sub(left))).unwrap_or(u32::MAX),
        })
    }

    /// This period's messages: the delta (the same to every standby) and each standby's share
    /// of its full cycle. Call once a period.
    pub fn poll(&mut self, now: Instant, director: Ipv4Addr, epoch: u64) -> Vec<(Ipv4Addr, Pins)> {
        let elapsed = self
            .last_poll
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(5));
        self.last_poll = Some(now);
        // Told deadlines that passed without a refresh: the kernel's passed too.
        self.told.retain(|_, t| t.deadline > now);
        if self
            .snapshot
            .at
            .is_none_or(|at| now.saturating_duration_since(at) >= SNAPSHOT_EVERY)
        {
            self.take_snapshot(now);
        }
        // The delta: every pin at most once (its latest state), then the removals.
        let mut added = std::mem::take(&mut self.added);
        added.sort_unstable();
        added.dedup();
        let pins: Vec<Assignment> = added
            .iter()
            .filter_map(|k| {
                self.told
                    .get(k)
                    .and_then(|t| Self::assignment(self.idle, now, *k, t))
            })
            .collect();
        let mut removed = std::mem::take(&mut self.removed);
        removed.sort_unstable();
        removed.dedup();
        let removed: Vec<PinKey> = removed
            .into_iter()
            .filter(|k| !self.told.contains_key(k))
            .map(|k| {
                let (client, port) = unkey(k);
                PinKey { client, port }
            })
            .collect();
        let mut deltas = Vec::new();
        let (mut p, mut r) = (&pins[..], &removed[..]);
        while !p.is_empty() || !r.is_empty() {
            let np = p.len().min(MAX_PINS);
            let nr = r.len().min(MAX_PINS - np);
            self.seq += 1;
            deltas.push(Pins {
                director,
                epoch,
                kind: PinsKind::Delta { seq: self.seq },
                pins: p[..np].to_vec(),
                removed: r[..nr].to_vec(),
            });
            p = &p[np..];
            r = &r[nr..];
        }
        let mut out = Vec::new();
        let addrs: Vec<Ipv4Addr> = self.standbys.keys().copied().collect();
        for addr in addrs {
            out.extend(deltas.iter().map(|d| (addr, d.clone())));
            let pages = self.full_share(now, addr, elapsed, director, epoch);
            out.extend(pages.into_iter().map(|p| (addr, p)));
        }
        out
    }

    /// One standby's full-cycle pages for this period.
    fn full_share(
        &mut self,
        now: Instant,
        addr: Ipv4Addr,
        elapsed: Duration,
        director: Ipv4Addr,
        epoch: u64,
    ) -> Vec<Pins> {
        let snapshot = Rc::clone(&self.snapshot);
        let (idle, told) = (self.idle, &self.told);
        let Some(s) = self.standbys.get_mut(&addr) else {
            return Vec::new();
        };
        let rate = if s.catching_up {
            CATCHUP_RATE
        } else {
            FULL_RATE
        };
        s.credit = (s.credit + rate as f64 * elapsed.as_secs_f64()).min(rate as f64 * 2.0);
        let mut out = Vec::new();
        while s.credit >= MAX_PINS as f64 {
            let (snap, cursor) = match s.walk.take() {
                Some(w) => w,
                None => {
                    s.cycle = s.cycle.wrapping_add(1).max(1);
                    (Rc::clone(&snapshot), 0)
                }
            };
            let pages = snap.keys.len().div_ceil(MAX_PINS).max(1);
            let end = (cursor + MAX_PINS).min(snap.keys.len());
            s.credit -= MAX_PINS as f64;
            let pins = snap.keys[cursor..end]
                .iter()
                .filter_map(|k| told.get(k).and_then(|t| Self::assignment(idle, now, *k, t)))
                .collect();
            out.push(Pins {
                director,
                epoch,
                kind: PinsKind::Full {
                    cycle: s.cycle,
                    page: (cursor / MAX_PINS) as u32,
                    pages: pages as u32,
                    age_ms: u32::try_from(ms(snap
                        .at
                        .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))))
                    .unwrap_or(u32::MAX),
                },
                pins,
                removed: Vec::new(),
            });
            if end >= snap.keys.len() {
                // Cycle complete; a catch-up ends with it. The next starts next period.
                s.catching_up = false;
                break;
            }
            s.walk = Some((snap, end));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::mark_of;
    use crate::wire::membership::{Message, encode};

    const IDLE: Duration = Duration::from_secs(300);
    const FRESH: Duration = Duration::from_secs(5);
    const D: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const S: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const N3: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

    fn client(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a01_0000 + i)
    }

    /// The director's kernel map, as far as replication sees it.
    #[derive(Default)]
    struct Kernel {
        pins: HashMap<(Ipv4Addr, u16), (u32, Instant)>,
        /// Pins created in the last FRESH, with when.
        fresh: Vec<((Ipv4Addr, u16), Instant)>,
        lookups: usize,
    }

    impl Kernel {
        fn create(&mut self, now: Instant, c: Ipv4Addr, node: Ipv4Addr) {
            self.pins.insert((c, 9090), (mark_of(node), now + IDLE));
            self.fresh.push(((c, 9090), now));
        }
        fn entry(&self, now: Instant, k: &(Ipv4Addr, u16)) -> Option<StickyEntry> {
            let (mark, deadline) = self.pins.get(k)?;
            let left = deadline.checked_duration_since(now)?;
            Some(StickyEntry {
                client: k.0,
                port: k.1,
                mark: *mark,
                expires_ms: ms(left),
            })
        }
        fn all(&self, now: Instant) -> Vec<StickyEntry> {
            self.pins
                .keys()
                .filter_map(|k| self.entry(now, k))
                .collect()
        }
        fn fresh(&mut self, now: Instant) -> Vec<StickyEntry> {
            self.fresh
                .retain(|(_, t)| now.saturating_duration_since(*t) < FRESH);
            self.fresh
                .iter()
                .filter_map(|(k, t)| {
                    let e = self.entry(now, k)?;
                    let left = FRESH.saturating_sub(now.saturating_duration_since(*t));
                    Some(StickyEntry {
                        expires_ms: ms(left),
                        ..e
                    })
                })
                .collect()
        }
    }

    /// Runs `secs` periods of the director's loop (fresh read, due lookups, poll) against
    /// `k`; `deliver` decides which messages reach the standby. Returns the bytes sent.
    fn run(
        out: &mut Outbox,
        held: &mut Held,
        k: &mut Kernel,
        t0: Instant,
        from: u64,
        secs: u64,
        deliver: impl Fn(&Pins) -> bool,
    ) -> usize {
        let mut bytes = 0;
        for s in from..from + secs {
            let now = t0 + Duration::from_secs(s);
            k.pins.retain(|_, (_, d)| *d > now);
            out.set_standbys(now, [(S, now)]);
            if out.reconcile_due(now) {
                out.observe_full(now, &k.all(now));
            }
            let fresh = k.fresh(now);
            out.observe_fresh(now, &fresh, FRESH);
            let due = out.due(now);
            k.lookups += due.len();
            let found: Vec<StickyEntry> = due.iter().filter_map(|key| k.entry(now, key)).collect();
            let missing: Vec<(Ipv4Addr, u16)> = due
                .iter()
                .filter(|key| k.entry(now, key).is_none())
                .copied()
                .collect();
            out.observe_lookup(now, &found, &missing);
            for (to, p) in out.poll(now, D, 1) {
                assert_eq!(to, S);
                bytes += encode(&Message::Pins(p.clone()), 1, None).unwrap().len();
                if deliver(&p) {
                    held.handle(now, D, &p);
                }
            }
            held.expire(now);
            out.handle_replica(1, &held.replica(S));
        }
        bytes
    }

    fn held_set(held: &Held, now: Instant) -> Vec<(Ipv4Addr, u32)> {
        let mut v: Vec<_> = held
            .entries(now, |_| true)
            .iter()
            .map(|p| (p.client, p.mark))
            .collect();
        v.sort();
        v
    }

    fn kernel_set(k: &Kernel, now: Instant) -> Vec<(Ipv4Addr, u32)> {
        let mut v: Vec<_> = k.all(now).iter().map(|p| (p.client, p.mark)).collect();
        v.sort();
        v
    }

    fn no_deltas(p: &Pins) -> bool {
        !matches!(p.kind, PinsKind::Delta { .. })
    }

    #[test]
    fn new_pins_reach_the_standby_within_a_period_and_a_late_one_catches_up_fast() {
        let t0 = Instant::now();
        let (mut out, mut held, mut k) = (Outbox::new(IDLE), Held::new(IDLE), Kernel::default());
        for i in 0..20_000 {
            k.create(t0, client(i), N3);
        }
        k.fresh.clear();
        // a standby joining a director with 20,000 pins: one catch-up cycle (CATCHUP_RATE)
        run(&mut out, &mut held, &mut k, t0, 0, 2, |_| true);
        assert_eq!(held.len(), 20_000);
        assert!(
            held.age(t0 + Duration::from_secs(2)).is_some(),
            "a complete cycle"
        );
        // a pin created 2 s before the director reads the fresh map is there a period later,
        // with a deadline no later than the kernel's
        k.create(t0, client(99_999), S);
        run(&mut out, &mut held, &mut k, t0, 2, 1, |_| true);
        let now = t0 + Duration::from_secs(2);
        let got = held
            .entries(now, |_| true)
            .into_iter()
            .find(|e| e.client == client(99_999))
            .unwrap();
        let kernel = k.entry(now, &(client(99_999), 9090)).unwrap();
        assert!(
            got.expires_ms <= kernel.expires_ms && got.expires_ms + 1500 > kernel.expires_ms,
            "{got:?} vs {kernel:?}"
        );
    }

    #[test]
    fn a_standby_missing_every_delta_for_10_s_converges_from_the_full_refresh() {
        let t0 = Instant::now();
        let (mut out, mut held, mut k) = (Outbox::new(IDLE), Held::new(IDLE), Kernel::default());
        for i in 0..5_000 {
            k.create(t0, client(i), N3);
        }
        run(&mut out, &mut held, &mut k, t0, 0, 3, |_| true);
        assert_eq!(
            held_set(&held, t0 + Duration::from_secs(3)),
            kernel_set(&k, t0 + Duration::from_secs(3))
        );
        // The standby's own kernel map, fed only with what changed (staged pins).
        let mut mirror: BTreeMap<(Ipv4Addr, u16), u32> = BTreeMap::new();
        let mut stage = |held: &mut Held, now: Instant| {
            let s = held.take_staged(now);
            for e in s.removed.iter().chain(&s.upserts) {
                mirror.remove(&(e.client, e.port));
            }
            for e in &s.upserts {
                mirror.insert((e.client, e.port), e.mark);
            }
            let mut v: Vec<_> = mirror.iter().map(|((c, _), m)| (*c, *m)).collect();
            v.sort();
            (v, s.upserts.len() + s.removed.len())
        };
        let (_, n) = stage(&mut held, t0 + Duration::from_secs(3));
        assert_eq!(n, 5_000);
        assert_eq!(stage(&mut held, t0 + Duration::from_secs(3)).1, 0);
        // 10 s in which no delta arrives: 500 new pins, 300 moved to another node (the
        // director deleted them, their clients came back and got S), 200 deleted
        let t3 = t0 + Duration::from_secs(3);
        for i in 10_000..10_500 {
            k.create(t3, client(i), S);
        }
        let moved: Vec<StickyEntry> = (0..500)
            .filter_map(|i| k.entry(t3, &(client(i), 9090)))
            .collect();
        out.removed(&moved);
        for e in &moved {
            k.pins.remove(&(e.client, e.port));
        }
        for i in 0..300 {
            k.create(t3, client(i), S);
        }
        run(&mut out, &mut held, &mut k, t0, 3, 10, no_deltas);
        // then the slow full cycle (FULL_RATE, from a snapshot at most SNAPSHOT_EVERY old)
        // heals everything
        let need = (k.pins.len() as u64).div_ceil(FULL_RATE) * 2 + SNAPSHOT_EVERY.as_secs() + 2;
        run(&mut out, &mut held, &mut k, t0, 13, need, no_deltas);
        let now = t0 + Duration::from_secs(13 + need);
        assert_eq!(held_set(&held, now), kernel_set(&k, now));
        // ... and the standby's kernel map with it (the moved and deleted pins included).
        assert_eq!(stage(&mut held, now).0, kernel_set(&k, now));
        assert!(
            held.gaps == 0,
            "deltas were dropped before they were numbered: no gap seen"
        );
    }

    #[test]
    fn steady_state_costs_follow_change_not_size() {
        let t0 = Instant::now();
        let (mut out, mut held, mut k) = (Outbox::new(IDLE), Held::new(IDLE), Kernel::default());
        for i in 0..100_000 {
            k.create(t0, client(i), N3);
        }
        k.fresh.clear();
        run(&mut out, &mut held, &mut k, t0, 0, 5, |_| true);
        assert_eq!(held.len(), 100_000);
        // unchanged pins: no delta, no lookup for a minute; only the background cycle
        let lookups = k.lookups;
        let bytes = run(&mut out, &mut held, &mut k, t0, 5, 60, |_| true);
        let mbit = bytes as f64 * 8.0 / 60.0 / 1e6;
        assert!(mbit < 1.0, "{mbit:.2} Mbit/s");
        assert_eq!(k.lookups, lookups);
        assert_eq!(held.gaps, 0);
    }

    #[test]
    fn expiries_are_refreshed_by_lookups_near_the_deadline_and_never_later_than_the_kernel() {
        let t0 = Instant::now();
        let (mut out, mut held, mut k) = (Outbox::new(IDLE), Held::new(IDLE), Kernel::default());
        // an active client (its deadline moves on with every packet) and an idle one
        k.create(t0, client(1), N3);
        k.create(t0, client(2), N3);
        for s in 0..400u64 {
            let now = t0 + Duration::from_secs(s);
            k.pins.get_mut(&(client(1), 9090)).unwrap().1 = now + IDLE;
            run(&mut out, &mut held, &mut k, t0, s, 1, |_| true);
            for e in held.entries(now, |_| true) {
                let kernel = k
                    .entry(now, &(e.client, e.port))
                    .expect("the standby holds only live pins");
                assert!(
                    e.expires_ms <= kernel.expires_ms + 1000,
                    "{e:?} vs {kernel:?}"
                );
            }
            let active = held
                .entries(now, |_| true)
                .iter()
                .any(|e| e.client == client(1));
            assert!(active, "the active client is always held (second {s})");
        }
        // the idle client expired on both; the active one was looked up about once per
        // (idle - lookahead), not every second
        let now = t0 + Duration::from_secs(400);
        assert!(
            held.entries(now, |_| true)
                .iter()
                .all(|e| e.client != client(2))
        );
        assert!(k.lookups < 40, "{} lookups in 400 s", k.lookups);
    }
}
