//! Source-IP stickiness: a client keeps its node while seen within `sticky_idle_s`.
//!
//! In the data path the kernel keeps the pins (the nft dynamic map `sticky`, BRIEF §6,
//! since conntrack cannot at a direct-routing director). This is the same state as plain
//! data: the director exports the live pins it reads from the kernel into announcements,
//! a standby imports them and, on takeover, loads them before it serves, so established
//! connections keep their node. Tests use it as the reference model of the kernel map.
//!
//! Pins carry ages, not timestamps, across the wire: directors' clocks differ.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use super::NodeId;
use super::scheduler::BucketTable;
use crate::wire::membership::Assignment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pin {
    node: NodeId,
    last_seen_ms: u64,
}

/// Client → node pins of one redirected port, with idle expiry (the kernel map is keyed
/// by client and port; one table models one port). Time is the caller's monotonic clock
/// in ms.
#[derive(Debug, Clone, Default)]
pub struct StickyTable {
    idle_ms: u64,
    pins: HashMap<Ipv4Addr, Pin>,
}

impl StickyTable {
    /// Pins expire `idle_ms` after the client was last seen (`ha.sticky_idle_s` × 1000).
    pub fn new(idle_ms: u64) -> StickyTable {
        StickyTable {
            idle_ms,
            pins: HashMap::new(),
        }
    }

    fn live(&self, pin: &Pin, now_ms: u64) -> bool {
        now_ms.saturating_sub(pin.last_seen_ms) < self.idle_ms
    }

    /// The node for a packet from `client` at `now_ms`. A live pin wins even when the
    /// table has changed since (only new or idle clients follow new weights); otherwise
    /// the client is pinned to the table's choice for the kernel hash `seed`. Seeing the
    /// client refreshes its pin. `None` while the table is empty (no node has weight).
    ///
    /// A failed node's pins must be removed with [`StickyTable::drop_node`] when it
    /// fails; a draining node (weight 0, still serving) keeps them, which is what draining
    /// means.
    pub fn lookup_or_assign(
        &mut self,
        now_ms: u64,
        client: Ipv4Addr,
        table: &BucketTable,
        seed: u32,
    ) -> Option<NodeId> {
        let live = self
            .pins
            .get(&client)
            .copied()
            .filter(|p| self.live(p, now_ms));
        if let Some(pin) = live {
            self.pins.insert(
                client,
                Pin {
                    node: pin.node,
                    last_seen_ms: now_ms.max(pin.last_seen_ms),
                },
            );
            return Some(pin.node);
        }
        let node = table.lookup(client, seed)?;
        self.pins.insert(
            client,
            Pin {
                node,
                last_seen_ms: now_ms,
            },
        );
        Some(node)
    }

    /// The live pin of `client`, without refreshing it.
    pub fn get(&self, now_ms: u64, client: Ipv4Addr) -> Option<NodeId> {
        self.pins
            .get(&client)
            .filter(|p| self.live(p, now_ms))
            .map(|p| p.node)
    }

    /// Removes pins idle for `idle_ms` or longer; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let before = self.pins.len();
        let idle = self.idle_ms;
        self.pins
            .retain(|_, p| now_ms.saturating_sub(p.last_seen_ms) < idle);
        before - self.pins.len()
    }

    /// Forgets every pin to `node` (it failed): its clients follow the table at once.
    /// Returns how many moved.
    pub fn drop_node(&mut self, node: NodeId) -> usize {
        let before = self.pins.len();
        self.pins.retain(|_, p| p.node != node);
        before - self.pins.len()
    }

    /// Pins held, live or not yet expired by [`StickyTable::expire`].
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Live pins per node (status: "pinned clients").
    pub fn pinned_per_node(&self, now_ms: u64) -> BTreeMap<NodeId, usize> {
        let mut out = BTreeMap::new();
        for p in self.pins.values().filter(|p| self.live(p, now_ms)) {
            *out.entry(p.node).or_insert(0) += 1;
        }
        out
    }

    /// Live pins with their idle ages, as assignments of redirected port `port`, sorted by
    /// client (deterministic announcements).
    pub fn export(&self, now_ms: u64, port: u16) -> Vec<Assignment> {
        let mut out: Vec<Assignment> = self
            .pins
            .iter()
            .filter(|(_, p)| self.live(p, now_ms))
            .map(|(client, p)| Assignment {
                client: *client,
                port,
                node: p.node,
                idle_ms: u32::try_from(now_ms.saturating_sub(p.last_seen_ms)).unwrap_or(u32::MAX),
            })
            .collect();
        out.sort_by_key(|a| a.client);
        out
    }

    /// Merges pins received from the director: each becomes last seen `idle_ms` before
    /// `now_ms`. Already expired ones are skipped; where we hold a more recent sighting
    /// of the same client, ours wins. Only assignments of `port` are taken. Returns how
    /// many were taken.
    pub fn import(&mut self, now_ms: u64, port: u16, assignments: &[Assignment]) -> usize {
        let mut taken = 0;
        for a in assignments.iter().filter(|a| a.port == port) {
            if u64::from(a.idle_ms) >= self.idle_ms {
                continue;
            }
            let pin = Pin {
                node: a.node,
                last_seen_ms: now_ms.saturating_sub(u64::from(a.idle_ms)),
            };
            match self.pins.get(&a.client) {
                Some(ours) if ours.last_seen_ms > pin.last_seen_ms => {}
                _ => {
                    self.pins.insert(a.client, pin);
                    taken += 1;
                }
            }
        }
        taken
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const IDLE: u64 = 300_000;
    const SEED: u32 = 0x1234;

    fn node(i: u8) -> NodeId {
        Ipv4Addr::new(10, 77, 0, i)
    }

    fn client(i: u16) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, (i >> 8) as u8, i as u8)
    }

    fn equal(n: u8) -> BucketTable {
        let w: Vec<_> = (1..=n).map(|i| (node(i), 1.0)).collect();
        BucketTable::fresh(4096, &w).unwrap()
    }

    #[test]
    fn a_new_client_follows_the_table_and_stays() {
        let t = equal(3);
        let mut s = StickyTable::new(IDLE);
        let c = client(1);
        let first = s.lookup_or_assign(0, c, &t, SEED).unwrap();
        assert_eq!(Some(first), t.lookup(c, SEED));
        assert_eq!(s.lookup_or_assign(1000, c, &t, SEED), Some(first));
    }

    /// Issue 3 §5 / done-when c: after a weight change, active clients stay (0 moved),
    /// new clients follow the new table.
    #[test]
    fn live_pins_survive_a_weight_change_and_new_clients_follow_it() {
        let mut t = equal(3);
        let mut s = StickyTable::new(IDLE);
        let before: Vec<_> = (0..300)
            .map(|i| s.lookup_or_assign(0, client(i), &t, SEED).unwrap())
            .collect();
        t.rebuild(&[(node(1), 0.5), (node(2), 1.0), (node(3), 1.0)]);
        let moved = (0..300)
            .filter(|i| {
                s.lookup_or_assign(10_000, client(*i), &t, SEED) != Some(before[*i as usize])
            })
            .count();
        assert_eq!(moved, 0);
        for i in 1000..1300 {
            assert_eq!(
                s.lookup_or_assign(10_000, client(i), &t, SEED),
                t.lookup(client(i), SEED)
            );
        }
    }

    #[test]
    fn an_idle_client_follows_the_new_table() {
        let mut t = BucketTable::fresh(64, &[(node(1), 1.0)]).unwrap();
        let mut s = StickyTable::new(IDLE);
        let c = client(9);
        assert_eq!(s.lookup_or_assign(0, c, &t, SEED), Some(node(1)));
        t.rebuild(&[(node(2), 1.0)]);
        assert_eq!(s.lookup_or_assign(IDLE - 1, c, &t, SEED), Some(node(1)));
        // Seen at IDLE - 1: expires at 2 × IDLE - 1.
        assert_eq!(s.get(2 * IDLE - 2, c), Some(node(1)));
        assert_eq!(s.get(2 * IDLE - 1, c), None);
        assert_eq!(s.lookup_or_assign(2 * IDLE - 1, c, &t, SEED), Some(node(2)));
    }

    #[test]
    fn a_failed_nodes_clients_move_at_once() {
        let mut t = equal(3);
        let mut s = StickyTable::new(IDLE);
        for i in 0..300 {
            s.lookup_or_assign(0, client(i), &t, SEED);
        }
        let on_1 = s.pinned_per_node(0)[&node(1)];
        assert_eq!(s.drop_node(node(1)), on_1);
        t.rebuild(&[(node(2), 1.0), (node(3), 1.0)]);
        for i in 0..300 {
            assert_ne!(s.lookup_or_assign(1, client(i), &t, SEED), Some(node(1)));
        }
    }

    #[test]
    fn expire_removes_only_idle_pins() {
        let t = equal(2);
        let mut s = StickyTable::new(IDLE);
        s.lookup_or_assign(0, client(1), &t, SEED);
        s.lookup_or_assign(100_000, client(2), &t, SEED);
        assert_eq!(s.expire(IDLE), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s.get(IDLE, client(2)), t.lookup(client(2), SEED));
        // A clock that goes backwards (it should not) keeps pins rather than panicking.
        assert_eq!(s.expire(0), 0);
    }

    #[test]
    fn empty_table_assigns_nothing() {
        let t = BucketTable::new(16).unwrap();
        let mut s = StickyTable::new(IDLE);
        assert_eq!(s.lookup_or_assign(0, client(1), &t, SEED), None);
        assert!(s.is_empty());
    }

    /// Issue 3 §6: a standby that imports the export continues every live assignment.
    #[test]
    fn export_import_round_trip_keeps_assignments_and_ages() {
        let t = equal(3);
        let mut director = StickyTable::new(IDLE);
        for i in 0..100 {
            director.lookup_or_assign(u64::from(i) * 1000, client(i), &t, SEED);
        }
        let now = 250_000;
        let exported = director.export(now, 9090);
        assert_eq!(exported.len(), 100, "all seen within IDLE of {now}");
        assert!(exported.windows(2).all(|w| w[0].client < w[1].client));
        assert_eq!(exported[0].idle_ms, 250_000);

        // The standby's clock is unrelated to the director's.
        let mut standby = StickyTable::new(IDLE);
        let later = 9_000_000;
        assert_eq!(
            standby.import(later, 2121, &exported),
            0,
            "another port's pins"
        );
        assert_eq!(standby.import(later, 9090, &exported), 100);
        // A different table on the standby must not matter for pinned clients.
        let other = BucketTable::fresh(4096, &[(node(3), 1.0)]).unwrap();
        for a in &exported {
            assert_eq!(
                standby.lookup_or_assign(later, a.client, &other, SEED),
                Some(a.node)
            );
        }
        // Ages carried over: client 0 (idle 250 s) expires 50 s later, not 300 s later.
        let mut fresh = StickyTable::new(IDLE);
        fresh.import(later, 9090, &exported);
        assert_eq!(
            fresh.get(later + 49_999, client(0)),
            exported.first().map(|a| a.node)
        );
        assert_eq!(fresh.get(later + 50_000, client(0)), None);
    }

    #[test]
    fn import_skips_expired_and_keeps_newer_local_sightings() {
        let t = BucketTable::fresh(64, &[(node(1), 1.0)]).unwrap();
        let mut s = StickyTable::new(IDLE);
        s.lookup_or_assign(1_000_000, client(1), &t, SEED);
        let stale = [
            Assignment {
                client: client(1),
                port: 9090,
                node: node(2),
                idle_ms: 5_000,
            },
            Assignment {
                client: client(2),
                port: 9090,
                node: node(2),
                idle_ms: IDLE as u32,
            },
        ];
        assert_eq!(s.import(1_000_000, 9090, &stale), 0);
        assert_eq!(s.get(1_000_000, client(1)), Some(node(1)));
        assert_eq!(s.get(1_000_000, client(2)), None);
    }
}
