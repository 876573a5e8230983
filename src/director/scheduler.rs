//! Weights and the bucket table (see ARCHITECTURE.md, "Scheduler").
//!
//! [`Weights`] turns each report period's capacity and CPU load into an effective weight
//! per node: `capacity × m`, where the multiplier `m` drifts toward equal utilisation.
//! [`BucketTable`] turns weights into `N` buckets, each owned by one node, with shares
//! exact to one bucket and, when weights or membership change, only the surplus buckets
//! of shrinking nodes moved (the minimum any table can achieve).
//!
//! The kernel picks the bucket: `jhash ip saddr mod N seed S` in nftables. [`bucket_of`]
//! is the same function (Linux `jhash()` + `reciprocal_scale()`, as `nft_hash.c` uses),
//! so status and tests can tell which node a client's first packet goes to.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::NodeId;

/// Tunables of the load feedback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackParams {
    /// Fraction of the utilisation gap corrected per report period. 0.5 moves a node
    /// 30 points hotter than the mean down by 15 % a period: settles within a few seconds
    /// without chasing the noise of one sample (reports are smoothed already).
    pub gain: f64,
    /// Floor of the multiplier. A node busy with something else keeps at least this
    /// fraction of its capacity share: it stays measured and serving, and a wrong load
    /// reading can only halve a node, never empty it.
    pub min: f64,
    /// Ceiling of the multiplier, so an idle node is not handed everything at once.
    pub max: f64,
    /// Utilisation gaps `|ū − u|` up to this are treated as 0. Nodes sampling at different
    /// moments never read exactly the same load; without a dead band the integrator turns
    /// that noise into a random walk of the weights and rewrites the table every period.
    pub deadband: f64,
    /// Within the dead band, this fraction of a multiplier's distance from 1 goes per period:
    /// once the loads agree again, weights return to the capacities, so a transient (a node's
    /// start, a burst of table loads) cannot leave the split skewed for good. A node whose
    /// load stays apart (a CPU hog) stays outside the band and keeps its correction.
    pub leak: f64,
    /// Report periods a node (new, or back) takes part at the neutral multiplier before its
    /// load counts: its first smoothed samples are mostly its own start (the load average's
    /// time constant is 5 s).
    pub warmup: u32,
}

impl Default for FeedbackParams {
    fn default() -> Self {
        FeedbackParams {
            gain: 0.5,
            min: 0.5,
            max: 2.0,
            deadband: 0.05,
            leak: 0.3,
            warmup: 5,
        }
    }
}

/// One node's input for a report period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLoad {
    /// Relative capacity (`node.capacity`, else the CPU count); values that are not
    /// finite and > 0 are treated as 1.
    pub capacity: f64,
    /// Smoothed CPU utilisation 0..=1; clamped into that range.
    pub utilisation: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    capacity: f64,
    utilisation: f64,
    multiplier: f64,
    /// Reports seen (saturating).
    periods: u32,
}

/// Effective weights with utilisation feedback. Deterministic: same reports in, same
/// weights out (nodes are iterated in address order).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    params: FeedbackParams,
    nodes: BTreeMap<NodeId, Entry>,
}

impl Weights {
    pub fn new(params: FeedbackParams) -> Weights {
        Weights {
            params,
            nodes: BTreeMap::new(),
        }
    }

    /// Feeds one report period. `loads` is the full member set: nodes missing from it are
    /// forgotten, new ones start at multiplier 1 (the normalised mean). Then, with `ū` the
    /// capacity-weighted mean utilisation, every multiplier becomes
    /// `m ← m × (1 + gain × (ū − u))`, is renormalised so the capacity-weighted mean
    /// multiplier is 1, and is clamped to `[min, max]`.
    pub fn update(&mut self, loads: &BTreeMap<NodeId, NodeLoad>) {
        self.nodes.retain(|node, _| loads.contains_key(node));
        for (node, load) in loads {
            let capacity = if load.capacity.is_finite() && load.capacity > 0.0 {
                load.capacity
            } else {
                1.0
            };
            let utilisation = if load.utilisation.is_finite() {
                load.utilisation.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let entry = self.nodes.entry(*node).or_insert(Entry {
                capacity,
                utilisation,
                multiplier: 1.0,
                periods: 0,
            });
            entry.capacity = capacity;
            entry.utilisation = utilisation;
            entry.periods = entry.periods.saturating_add(1);
        }
        let total_capacity: f64 = self.nodes.values().map(|e| e.capacity).sum();
        if total_capacity <= 0.0 {
            return;
        }
        let warm = self.params.warmup;
        let (cu, c) = self
            .nodes
            .values()
            .filter(|e| e.periods > warm)
            .fold((0.0, 0.0), |(cu, c), e| {
                (cu + e.capacity * e.utilisation, c + e.capacity)
            });
        let mean = if c > 0.0 { cu / c } else { 0.0 };
        let gain = self.params.gain;
        let deadband = self.params.deadband.max(0.0);
        let leak = self.params.leak.clamp(0.0, 1.0);
        for e in self.nodes.values_mut() {
            let gap = mean - e.utilisation;
            if e.periods <= warm || gap.abs() <= deadband {
                e.multiplier = 1.0 + (e.multiplier - 1.0) * (1.0 - leak);
            } else {
                e.multiplier *= 1.0 + gain * (gap - deadband.copysign(gap));
            }
        }
        let norm = self
            .nodes
            .values()
            .map(|e| e.capacity * e.multiplier)
            .sum::<f64>()
            / total_capacity;
        for e in self.nodes.values_mut() {
            let m = if norm > 0.0 { e.multiplier / norm } else { 1.0 };
            e.multiplier = m.clamp(self.params.min, self.params.max);
        }
    }

    /// Capacity-weighted mean utilisation `ū = Σ cᵢuᵢ / Σ cᵢ` (0 with no nodes).
    pub fn mean_utilisation(&self) -> f64 {
        let c: f64 = self.nodes.values().map(|e| e.capacity).sum();
        if c <= 0.0 {
            return 0.0;
        }
        self.nodes
            .values()
            .map(|e| e.capacity * e.utilisation)
            .sum::<f64>()
            / c
    }

    pub fn multiplier(&self, node: NodeId) -> Option<f64> {
        self.nodes.get(&node).map(|e| e.multiplier)
    }

    /// Effective weight `capacity × multiplier`.
    pub fn weight(&self, node: NodeId) -> Option<f64> {
        self.nodes.get(&node).map(|e| e.capacity * e.multiplier)
    }

    /// Every node's effective weight, in address order.
    pub fn weights(&self) -> Vec<(NodeId, f64)> {
        self.nodes
            .iter()
            .map(|(n, e)| (*n, e.capacity * e.multiplier))
            .collect()
    }

    /// Weights for one redirected port: nodes for which `eligible` is false (port not
    /// listening, draining) get 0 and so no bucket of that port's table.
    pub fn weights_where(&self, eligible: impl Fn(NodeId) -> bool) -> Vec<(NodeId, f64)> {
        self.weights()
            .into_iter()
            .map(|(n, w)| (n, if eligible(n) { w } else { 0.0 }))
            .collect()
    }
}

/// Why a bucket table cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// Size 0 or above [`MAX_BUCKETS`].
    Size(usize),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Size(n) => write!(
                f,
                "bucket table size {n} out of range (use 1..={MAX_BUCKETS}, at least 100 × nodes)"
            ),
        }
    }
}

impl std::error::Error for TableError {}

/// Largest table: one nft map element per bucket, applied in one batch.
pub const MAX_BUCKETS: usize = 1 << 16;
/// Default table size: ≥ 100 × 8 nodes with room to spare; a power of two is fine (the
/// permutation step is chosen coprime to the size).
pub const DEFAULT_BUCKETS: usize = 4096;

/// Seeds of the two hashes that make each node's permutation (offset, skip). Fixed, so
/// every director candidate builds the same fresh table from the same weights.
const OFFSET_SEED: u32 = 0x5052_4f58; // "PROX"
const SKIP_SEED: u32 = 0x5948_4121; // "YHA!"

/// `N` buckets, each owned by one node; `table()[b]` serves clients with
/// `bucket_of(client) == b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketTable {
    size: usize,
    /// Empty while no node has weight; otherwise exactly `size` entries.
    table: Vec<NodeId>,
    version: u64,
}

impl BucketTable {
    /// An empty table of `size` buckets (no node yet).
    pub fn new(size: usize) -> Result<BucketTable, TableError> {
        if size == 0 || size > MAX_BUCKETS {
            return Err(TableError::Size(size));
        }
        Ok(BucketTable {
            size,
            table: Vec::new(),
            version: 0,
        })
    }

    /// A table built from nothing: weighted Maglev (every node walks its own permutation
    /// of the buckets, taking turns in proportion to its quota). No history, so two
    /// directors with the same weights get the same table.
    pub fn fresh(size: usize, weights: &[(NodeId, f64)]) -> Result<BucketTable, TableError> {
        let mut t = BucketTable::new(size)?;
        t.rebuild(weights);
        Ok(t)
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Bucket → node, `size()` entries (empty while no node has weight): what the shell
    /// writes into the nft map.
    pub fn table(&self) -> &[NodeId] {
        &self.table
    }

    /// Increments on every rebuild that changed a bucket (the announcement's
    /// `table_version`).
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn node_of_bucket(&self, bucket: usize) -> Option<NodeId> {
        self.table.get(bucket).copied()
    }

    /// The node a new client goes to when the kernel hashes with `seed`.
    pub fn lookup(&self, client: Ipv4Addr, seed: u32) -> Option<NodeId> {
        self.node_of_bucket(bucket_of(client, self.size, seed))
    }

    /// Buckets per node.
    pub fn counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for n in &self.table {
            *counts.entry(*n).or_insert(0) += 1;
        }
        counts
    }

    /// Moves the table to new weights with the fewest bucket moves: every node keeps its
    /// buckets up to its new quota (those earliest in its own permutation), the surplus of
    /// shrinking or departed nodes is freed, and growing nodes take free buckets in
    /// weighted-Maglev order. Shares are then exact to one bucket and the number moved is
    /// `Σ max(0, old_countᵢ − quotaᵢ)`, the minimum for integer buckets. Returns it.
    pub fn rebuild(&mut self, weights: &[(NodeId, f64)]) -> usize {
        let n = self.size;
        let quota = quotas(n, weights);
        if quota.is_empty() {
            let moved = self.table.len();
            if moved > 0 {
                self.table.clear();
                self.version += 1;
            }
            return moved;
        }
        let perms: BTreeMap<NodeId, Permutation> = quota
            .keys()
            .map(|node| (*node, Permutation::new(*node, n)))
            .collect();

        // Keep what the old table gives nodes that still have a quota.
        let mut owner: Vec<Option<NodeId>> = if self.table.len() == n {
            self.table
                .iter()
                .map(|node| quota.contains_key(node).then_some(*node))
                .collect()
        } else {
            vec![None; n]
        };
        let mut held: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (bucket, node) in owner.iter().enumerate() {
            if let Some(node) = node {
                held.entry(*node).or_default().push(bucket);
            }
        }
        // Free each node's surplus, latest in its permutation first, so a node's buckets
        // drift back toward its fresh-table positions instead of depending on history.
        let mut count: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (node, mut buckets) in held {
            let q = quota[&node];
            if buckets.len() > q {
                let perm = &perms[&node];
                buckets.sort_by_key(|b| std::cmp::Reverse(perm.rank(*b)));
                for b in &buckets[..buckets.len() - q] {
                    owner[*b] = None;
                }
            }
            count.insert(node, buckets.len().min(q));
        }

        // Fill free buckets: the node furthest behind on its own deficit goes next
        // (ties to the lower address), taking the next free bucket in its permutation.
        let mut fill: Vec<Filler> = quota
            .iter()
            .filter_map(|(node, q)| {
                let have = count.get(node).copied().unwrap_or(0);
                (have < *q).then(|| Filler {
                    node: *node,
                    need: (q - have) as u64,
                    got: 0,
                    cursor: 0,
                })
            })
            .collect();
        loop {
            let mut best: Option<usize> = None;
            for (i, f) in fill.iter().enumerate() {
                if f.got == f.need {
                    continue;
                }
                best = match best {
                    // got/need smaller wins; compare cross-multiplied to stay in integers.
                    Some(j) if fill[j].got * f.need <= f.got * fill[j].need => Some(j),
                    _ => Some(i),
                };
            }
            let Some(i) = best else { break };
            let f = &mut fill[i];
            let perm = &perms[&f.node];
            // Each node's cursor passes each bucket at most once; free buckets exist
            // while any deficit does, since quotas sum to n.
            while f.cursor < n as u64 {
                let b = perm.slot(f.cursor);
                f.cursor += 1;
                if owner[b].is_none() {
                    owner[b] = Some(f.node);
                    break;
                }
            }
            f.got += 1;
        }

        let new: Vec<NodeId> = owner
            .into_iter()
            .zip(
                self.table
                    .iter()
                    .chain(std::iter::repeat(&Ipv4Addr::UNSPECIFIED)),
            )
            .map(|(o, old)| o.unwrap_or(*old))
            .collect();
        let moved = if self.table.len() == n {
            new.iter().zip(&self.table).filter(|(a, b)| a != b).count()
        } else {
            n
        };
        if moved > 0 {
            self.version += 1;
        }
        self.table = new;
        moved
    }
}

struct Filler {
    node: NodeId,
    need: u64,
    got: u64,
    cursor: u64,
}

/// A node's walk over the buckets: `slot(j) = (offset + j × skip) mod N` with `skip`
/// coprime to `N`, so the walk visits every bucket once (Maglev §3.4, generalised from a
/// prime `N` to any `N`).
struct Permutation {
    n: u64,
    offset: u64,
    skip: u64,
    skip_inv: u64,
}

impl Permutation {
    fn new(node: NodeId, n: usize) -> Permutation {
        let n = n as u64;
        let key = node.octets();
        let offset = u64::from(jhash(&key, OFFSET_SEED)) % n;
        let mut skip = if n > 1 {
            u64::from(jhash(&key, SKIP_SEED)) % (n - 1) + 1
        } else {
            1
        };
        while gcd(skip, n) != 1 {
            skip = skip % (n - 1) + 1;
        }
        Permutation {
            n,
            offset,
            skip,
            skip_inv: mod_inverse(skip, n),
        }
    }

    fn slot(&self, j: u64) -> usize {
        ((self.offset + j % self.n * self.skip) % self.n) as usize
    }

    /// Position of `bucket` in this walk (inverse of `slot`).
    fn rank(&self, bucket: usize) -> u64 {
        let d = (bucket as u64 + self.n - self.offset) % self.n;
        (d as u128 * self.skip_inv as u128 % self.n as u128) as u64
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Inverse of `a` modulo `n` for coprime `a`, `n` (extended Euclid); 0 when `n == 1`.
fn mod_inverse(a: u64, n: u64) -> u64 {
    let (mut r0, mut r1) = (n as i128, a as i128);
    let (mut t0, mut t1) = (0i128, 1i128);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(n as i128) as u64
}

/// Integer bucket counts for `weights` summing to `size` (largest remainder; ties to the
/// lower address). Nodes whose weight is not finite and > 0 get none and are left out.
pub fn quotas(size: usize, weights: &[(NodeId, f64)]) -> BTreeMap<NodeId, usize> {
    let valid: BTreeMap<NodeId, f64> = weights
        .iter()
        .filter(|(_, w)| w.is_finite() && *w > 0.0)
        .map(|(n, w)| (*n, *w))
        .collect();
    let total: f64 = valid.values().sum();
    if valid.is_empty() || !total.is_finite() || total <= 0.0 {
        return BTreeMap::new();
    }
    let mut out = BTreeMap::new();
    let mut rest = Vec::new();
    let mut given = 0usize;
    for (node, w) in &valid {
        let exact = w / total * size as f64;
        let floor = (exact.floor() as usize).min(size);
        given += floor;
        out.insert(*node, floor);
        rest.push((exact - floor as f64, *node));
    }
    // Largest remainders first; the sort is stable, so equal remainders keep address order.
    rest.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, node) in rest.iter().cycle().take(size.saturating_sub(given)) {
        *out.entry(*node).or_insert(0) += 1;
    }
    out.retain(|_, q| *q > 0);
    out
}

/// The bucket nftables computes for `jhash ip saddr mod size seed seed`: Linux
/// `reciprocal_scale(jhash(saddr, 4, seed), size)` (net/netfilter/nft_hash.c). The
/// shell must give nft the seed explicitly: without one the kernel picks a random one.
pub fn bucket_of(client: Ipv4Addr, size: usize, seed: u32) -> usize {
    let h = jhash(&client.octets(), seed);
    ((u64::from(h) * size as u64) >> 32) as usize
}

/// Bob Jenkins' lookup3 as Linux `jhash()` (include/linux/jhash.h) computes it on a
/// little-endian host: 12-byte blocks as three little-endian words, the tail bytewise.
pub fn jhash(key: &[u8], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
        b = b.wrapping_add(u32::from_le_bytes([k[4], k[5], k[6], k[7]]));
        c = c.wrapping_add(u32::from_le_bytes([k[8], k[9], k[10], k[11]]));
        // __jhash_mix
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c);
        a ^= c.rotate_left(16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= a.rotate_left(19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= b.rotate_left(4);
        b = b.wrapping_add(a);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    b = b.wrapping_add(u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]));
    c = c.wrapping_add(u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]));
    // __jhash_final
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

/// Buckets a change must move at least, from real-valued shares:
/// `Σ max(0, old_shareᵢ − new_shareᵢ) × N` (nodes absent on one side have share 0).
pub fn theoretical_min_moves(size: usize, old: &[(NodeId, f64)], new: &[(NodeId, f64)]) -> f64 {
    let share = |w: &[(NodeId, f64)]| -> BTreeMap<NodeId, f64> {
        let valid: Vec<_> = w
            .iter()
            .filter(|(_, x)| x.is_finite() && *x > 0.0)
            .collect();
        let total: f64 = valid.iter().map(|(_, x)| x).sum();
        valid.iter().map(|(n, x)| (*n, x / total)).collect()
    };
    let (o, n) = (share(old), share(new));
    o.iter()
        .map(|(node, s)| (s - n.get(node).copied().unwrap_or(0.0)).max(0.0))
        .sum::<f64>()
        * size as f64
}

/// The same minimum for integer bucket counts: `Σ max(0, old_countᵢ − new_quotaᵢ)`.
pub fn integer_min_moves(old: &BucketTable, new_weights: &[(NodeId, f64)]) -> usize {
    let q = quotas(old.size(), new_weights);
    old.counts()
        .iter()
        .map(|(node, c)| c.saturating_sub(q.get(node).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod test {
    use super::*;

    fn node(i: u8) -> NodeId {
        Ipv4Addr::new(10, 77, 0, i)
    }

    /// Deterministic generator (SplitMix64) for the property tests: reproducible runs,
    /// no dev-dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn weight(&mut self) -> f64 {
            0.25 + (self.below(1000) as f64) / 1000.0 * 3.75
        }
    }

    fn random_weights(rng: &mut Rng, nodes: usize) -> Vec<(NodeId, f64)> {
        (0..nodes)
            .map(|i| (node(10 + i as u8), rng.weight()))
            .collect()
    }

    fn max_share_error(t: &BucketTable, w: &[(NodeId, f64)]) -> f64 {
        let total: f64 = w.iter().map(|(_, x)| x).sum();
        let counts = t.counts();
        w.iter()
            .map(|(n, x)| {
                let share = counts.get(n).copied().unwrap_or(0) as f64 / t.size() as f64;
                (share - x / total).abs() / (x / total)
            })
            .fold(0.0, f64::max)
    }

    /// lookup3 reference values (Bob Jenkins, lookup3.c driver5: `hashlittle`, which
    /// Linux `jhash` equals on little-endian hosts).
    #[test]
    fn jhash_matches_lookup3_reference_values() {
        assert_eq!(jhash(b"", 0), 0xdead_beef);
        assert_eq!(jhash(b"Four score and seven years ago", 0), 0x1777_0551);
        assert_eq!(jhash(b"Four score and seven years ago", 1), 0xcd62_8161);
    }

    #[test]
    fn bucket_of_is_reciprocal_scale_and_in_range() {
        let mut rng = Rng(1);
        for size in [1, 7, 16, 4096, 4099] {
            for _ in 0..1000 {
                let ip = Ipv4Addr::from(rng.next() as u32);
                assert!(bucket_of(ip, size, 0) < size);
            }
        }
        let ip = Ipv4Addr::new(10, 77, 1, 5);
        let h = jhash(&ip.octets(), 42);
        assert_eq!(bucket_of(ip, 4096, 42), (h >> 20) as usize);
    }

    #[test]
    fn permutation_visits_every_bucket_once_and_rank_inverts_it() {
        for n in [1usize, 2, 16, 97, 4096, 4099] {
            let p = Permutation::new(node(3), n);
            let mut seen = vec![false; n];
            for j in 0..n as u64 {
                let s = p.slot(j);
                assert!(!seen[s], "n={n} slot {s} twice");
                seen[s] = true;
                assert_eq!(p.rank(s), j);
            }
        }
    }

    #[test]
    fn quotas_sum_to_size_and_follow_weights() {
        let q = quotas(10, &[(node(1), 1.0), (node(2), 1.0), (node(3), 1.0)]);
        assert_eq!(q.values().sum::<usize>(), 10);
        assert_eq!(q[&node(1)], 4, "tie goes to the lower address");
        let q = quotas(100, &[(node(1), 1.0), (node(2), 0.0), (node(3), f64::NAN)]);
        assert_eq!(q.len(), 1);
        assert_eq!(q[&node(1)], 100);
        assert!(quotas(100, &[(node(1), 0.0)]).is_empty());
    }

    #[test]
    fn table_size_is_checked() {
        assert_eq!(BucketTable::new(0), Err(TableError::Size(0)));
        assert!(BucketTable::new(MAX_BUCKETS + 1).is_err());
        let e = TableError::Size(0).to_string();
        assert!(e.starts_with("bucket table size 0") && e.contains("use 1..="));
    }

    #[test]
    fn no_weight_means_no_table() {
        let mut t = BucketTable::fresh(64, &[(node(1), 1.0)]).unwrap();
        assert_eq!(t.table().len(), 64);
        assert_eq!(t.rebuild(&[(node(1), 0.0)]), 64);
        assert!(t.table().is_empty());
        assert_eq!(t.lookup(Ipv4Addr::new(1, 2, 3, 4), 0), None);
        assert_eq!(t.rebuild(&[(node(2), 1.0)]), 64);
        assert_eq!(t.counts()[&node(2)], 64);
    }

    #[test]
    fn fresh_tables_are_deterministic_and_interleaved() {
        let w = [(node(1), 1.0), (node(2), 1.0), (node(3), 1.0)];
        let a = BucketTable::fresh(4096, &w).unwrap();
        let b = BucketTable::fresh(4096, &w).unwrap();
        assert_eq!(a, b);
        // Maglev spreads each node over the whole table, not in one run.
        let runs = a.table().windows(2).filter(|p| p[0] != p[1]).count();
        assert!(runs > 1000, "{runs} runs");
    }

    /// Issue 3 §3: shares within 1 % of weights when buckets ≥ 100 × nodes.
    #[test]
    fn property_bucket_shares_within_one_percent_of_weights() {
        let mut rng = Rng(7);
        for round in 0..200 {
            let nodes = 1 + rng.below(8) as usize;
            let size = [100 * nodes, 1009, 4096][round % 3].max(100 * nodes);
            let w = random_weights(&mut rng, nodes);
            let t = BucketTable::fresh(size, &w).unwrap();
            assert_eq!(t.table().len(), size);
            // Quotas are exact to one bucket; relative error is < 1/(share × size), which
            // is ≤ 1 % for every node holding ≥ 100 buckets, and absolute error < 1/size.
            let total: f64 = w.iter().map(|(_, x)| x).sum();
            for (n, x) in &w {
                let c = t.counts().get(n).copied().unwrap_or(0) as f64;
                let ideal = x / total * size as f64;
                assert!((c - ideal).abs() < 1.0, "round {round}: {c} vs {ideal}");
                if ideal >= 100.0 {
                    assert!((c - ideal).abs() / ideal <= 0.01);
                }
            }
        }
        // Equal weights at exactly 100 buckets per node: within 1 % relative.
        for nodes in 2..=8 {
            let w: Vec<_> = (0..nodes).map(|i| (node(i as u8 + 1), 1.0)).collect();
            let t = BucketTable::fresh(100 * nodes, &w).unwrap();
            assert!(max_share_error(&t, &w) <= 0.01);
        }
    }

    /// Issue 3 §3: a weight change or node loss moves ≤ 1.1 × the theoretical minimum.
    #[test]
    fn property_moves_within_one_point_one_of_minimum() {
        let mut rng = Rng(11);
        for round in 0..300 {
            let nodes = 2 + rng.below(7) as usize;
            let size = [4096, 100 * nodes, 1009][round % 3].max(100 * nodes);
            let old_w = random_weights(&mut rng, nodes);
            let mut new_w = old_w.clone();
            match rng.below(3) {
                0 => {
                    let i = rng.below(nodes as u64) as usize;
                    new_w[i].1 = rng.weight();
                }
                1 => {
                    new_w.remove(rng.below(nodes as u64) as usize);
                }
                _ => {
                    for w in &mut new_w {
                        w.1 *= 0.8 + rng.below(400) as f64 / 1000.0;
                    }
                }
            }
            // From a fresh table and from one with history (after an earlier change).
            let mut t = BucketTable::fresh(size, &old_w).unwrap();
            if round % 2 == 1 {
                let mut detour = old_w.clone();
                detour[0].1 *= 2.0;
                t.rebuild(&detour);
                t.rebuild(&old_w);
            }
            let int_min = integer_min_moves(&t, &new_w);
            let real_min = theoretical_min_moves(size, &old_w, &new_w);
            let moved = t.rebuild(&new_w);
            assert_eq!(moved, int_min, "round {round}: exactly the integer minimum");
            // Against real-valued shares, rounding adds < 1 bucket per node.
            assert!(
                moved as f64 <= 1.1 * real_min + nodes as f64,
                "round {round}: moved {moved}, minimum {real_min}"
            );
            if real_min >= 10.0 * nodes as f64 {
                assert!(moved as f64 <= 1.1 * real_min, "round {round}");
            }
            // And shares stay exact after the change.
            let q = quotas(size, &new_w);
            assert_eq!(t.counts(), q, "round {round}");
        }
    }

    #[test]
    fn node_loss_moves_only_the_lost_nodes_buckets() {
        let w: Vec<_> = (1..=8).map(|i| (node(i), 1.0)).collect();
        let mut t = BucketTable::fresh(4096, &w).unwrap();
        let before = t.table().to_vec();
        let moved = t.rebuild(&w[1..]);
        assert_eq!(moved, 512);
        for (b, old) in before.iter().enumerate() {
            if *old != node(1) {
                assert_eq!(t.table()[b], *old);
            }
        }
    }

    #[test]
    fn a_returning_node_takes_exactly_its_quota_from_the_others() {
        let w: Vec<_> = (1..=3).map(|i| (node(i), 1.0)).collect();
        let mut t = BucketTable::fresh(999, &w).unwrap();
        t.rebuild(&w[1..]);
        let before = t.table().to_vec();
        assert_eq!(t.rebuild(&w), 333);
        let kept = before.iter().zip(t.table()).filter(|(a, b)| a == b).count();
        assert_eq!(kept, 999 - 333);
        assert_eq!(t.counts()[&node(1)], 333);
    }

    #[test]
    fn version_counts_changes_only() {
        let w = [(node(1), 1.0), (node(2), 1.0)];
        let mut t = BucketTable::fresh(100, &w).unwrap();
        assert_eq!(t.version(), 1);
        assert_eq!(t.rebuild(&w), 0);
        assert_eq!(t.version(), 1);
        t.rebuild(&[(node(1), 1.0), (node(2), 3.0)]);
        assert_eq!(t.version(), 2);
    }

    fn loads(v: &[(NodeId, f64, f64)]) -> BTreeMap<NodeId, NodeLoad> {
        v.iter()
            .map(|(n, c, u)| {
                (
                    *n,
                    NodeLoad {
                        capacity: *c,
                        utilisation: *u,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn equal_nodes_stay_equal() {
        let mut w = Weights::new(FeedbackParams::default());
        for _ in 0..50 {
            w.update(&loads(&[
                (node(1), 2.0, 0.4),
                (node(2), 2.0, 0.4),
                (node(3), 2.0, 0.4),
            ]));
        }
        for i in 1..=3 {
            assert_eq!(w.weight(node(i)), w.weight(node(1)));
            assert!((w.weight(node(i)).unwrap() - 2.0).abs() < 1e-9);
        }
    }

    #[test]
    fn a_transient_does_not_leave_the_weights_skewed_once_loads_agree() {
        let mut w = Weights::new(FeedbackParams::default());
        // Past their warm-up, a burst on node 1 for a few periods, then all three equally
        // idle.
        for _ in 0..=FeedbackParams::default().warmup {
            w.update(&loads(&[
                (node(1), 1.0, 0.02),
                (node(2), 1.0, 0.02),
                (node(3), 1.0, 0.02),
            ]));
        }
        for _ in 0..4 {
            w.update(&loads(&[
                (node(1), 1.0, 0.5),
                (node(2), 1.0, 0.02),
                (node(3), 1.0, 0.02),
            ]));
        }
        assert!(w.multiplier(node(1)).unwrap() < 0.8, "the burst counted");
        for _ in 0..12 {
            w.update(&loads(&[
                (node(1), 1.0, 0.03),
                (node(2), 1.0, 0.02),
                (node(3), 1.0, 0.04),
            ]));
        }
        for i in 1..=3 {
            let m = w.multiplier(node(i)).unwrap();
            assert!(
                (m - 1.0).abs() < 0.02,
                "node {i}: multiplier {m} after the loads agreed"
            );
        }
        // A node whose load stays apart keeps its correction.
        for _ in 0..20 {
            w.update(&loads(&[
                (node(1), 1.0, 1.0),
                (node(2), 1.0, 0.02),
                (node(3), 1.0, 0.02),
            ]));
        }
        assert_eq!(w.multiplier(node(1)), Some(0.5));
    }

    #[test]
    fn a_half_capacity_node_gets_half() {
        let mut w = Weights::new(FeedbackParams::default());
        w.update(&loads(&[(node(1), 1.0, 0.3), (node(2), 2.0, 0.3)]));
        assert_eq!(w.weight(node(1)), Some(1.0));
        assert_eq!(w.weight(node(2)), Some(2.0));
        let t = BucketTable::fresh(4096, &w.weights()).unwrap();
        assert_eq!(t.counts()[&node(1)], 1365);
    }

    #[test]
    fn a_hot_nodes_share_falls_and_recovers() {
        let mut w = Weights::new(FeedbackParams::default());
        let hot = loads(&[
            (node(1), 1.0, 0.9),
            (node(2), 1.0, 0.3),
            (node(3), 1.0, 0.3),
        ]);
        // Its first reports are its start: they do not count yet.
        for _ in 0..FeedbackParams::default().warmup {
            w.update(&hot);
        }
        assert_eq!(w.multiplier(node(1)), Some(1.0), "warming up");
        w.update(&hot);
        let first = w.weight(node(1)).unwrap();
        assert!(first < 1.0 && w.weight(node(2)).unwrap() > 1.0);
        for _ in 0..10 {
            w.update(&hot);
        }
        assert_eq!(w.multiplier(node(1)), Some(0.5), "floored at min");
        let cool = loads(&[
            (node(1), 1.0, 0.1),
            (node(2), 1.0, 0.3),
            (node(3), 1.0, 0.3),
        ]);
        w.update(&cool);
        assert!(w.multiplier(node(1)).unwrap() > 0.5);
    }

    #[test]
    fn missing_nodes_are_forgotten_and_new_ones_start_average() {
        let mut w = Weights::new(FeedbackParams::default());
        w.update(&loads(&[(node(1), 1.0, 0.9), (node(2), 1.0, 0.1)]));
        w.update(&loads(&[(node(2), 1.0, 0.1), (node(3), 1.0, 0.1)]));
        assert_eq!(w.weight(node(1)), None);
        // Node 3 entered at 1 (the mean) and saw no utilisation gap, so only the
        // renormalisation moved it: within the bounds, close to 1.
        let m3 = w.multiplier(node(3)).unwrap();
        assert!((0.5..=2.0).contains(&m3) && (m3 - 1.0).abs() < 0.2, "{m3}");
        let bogus = loads(&[(node(4), f64::NAN, f64::INFINITY)]);
        w.update(&bogus);
        assert_eq!(w.weight(node(4)), Some(1.0));
    }

    #[test]
    fn ineligible_nodes_get_zero_for_that_port() {
        let mut w = Weights::new(FeedbackParams::default());
        w.update(&loads(&[(node(1), 1.0, 0.2), (node(2), 1.0, 0.2)]));
        let port = w.weights_where(|n| n != node(2));
        assert_eq!(port, vec![(node(1), 1.0), (node(2), 0.0)]);
        let t = BucketTable::fresh(100, &port).unwrap();
        assert_eq!(t.counts().len(), 1);
    }

    /// Closed loop: three 2-CPU nodes, a CPU hog taking one CPU on node 1, proxy load
    /// that would put each node at 30 % if shared equally. Utilisation follows the share
    /// of the last period (new clients follow the table); the hot node's share must fall
    /// to about half its fair share within 10 periods and stay there.
    #[test]
    fn closed_loop_with_a_cpu_hog_settles_at_half_share_within_ten_periods() {
        let mut w = Weights::new(FeedbackParams::default());
        let nodes = [node(1), node(2), node(3)];
        let mut share = [1.0 / 3.0; 3];
        for period in 1..=20 {
            let l: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let hog: f64 = if i == 0 { 0.5 } else { 0.0 };
                    (*n, 2.0, (hog + 0.9 * share[i]).min(1.0))
                })
                .collect();
            w.update(&loads(&l));
            let total: f64 = w.weights().iter().map(|(_, x)| x).sum();
            for (i, n) in nodes.iter().enumerate() {
                share[i] = w.weight(*n).unwrap() / total;
            }
            if period >= 10 {
                assert!(
                    (share[0] - 1.0 / 6.0).abs() <= 0.10,
                    "period {period}: share {share:?}"
                );
            }
        }
    }
}
