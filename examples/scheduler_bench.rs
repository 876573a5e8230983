//! Scheduler figures for README/ARCHITECTURE: share vs weight, and buckets (and clients)
//! moved on a weight change and on a node loss against the theoretical minimum, for 3
//! and 8 nodes. Pure computation, deterministic: `cargo run --release --example
//! scheduler_bench`.

use std::net::Ipv4Addr;

use proxyha::director::scheduler::{
    BucketTable, DEFAULT_BUCKETS, bucket_of, integer_min_moves, theoretical_min_moves,
};
use proxyha::director::sticky::StickyTable;

const SEED: u32 = 0x5058_4841;
const CLIENTS: u32 = 100_000;

fn node(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 11 + i as u8)
}

/// Client addresses spread like a real population: consecutive addresses in a few /16s.
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + (i % 4) * 0x0001_0000 + i / 4)
}

fn share_table(t: &BucketTable, w: &[(Ipv4Addr, f64)]) {
    let total: f64 = w.iter().map(|(_, x)| x).sum();
    let counts = t.counts();
    let mut clients = vec![0u32; w.len()];
    for c in 0..CLIENTS {
        let b = bucket_of(client(c), t.size(), SEED);
        let n = t.table()[b];
        if let Some(i) = w.iter().position(|(x, _)| *x == n) {
            clients[i] += 1;
        }
    }
    println!("  node          weight  weight%  buckets%  err(rel)  clients%");
    let mut worst: f64 = 0.0;
    for (i, (n, x)) in w.iter().enumerate() {
        let ws = x / total * 100.0;
        let bs = counts.get(n).copied().unwrap_or(0) as f64 / t.size() as f64 * 100.0;
        let cs = f64::from(clients[i]) / f64::from(CLIENTS) * 100.0;
        let err = (bs - ws).abs() / ws * 100.0;
        worst = worst.max(err);
        println!("  {n:<12} {x:>7.2} {ws:>7.2}% {bs:>8.2}% {err:>8.3}% {cs:>8.2}%");
    }
    println!("  worst bucket-share error: {worst:.3} % of the node's weight share");
}

fn change(name: &str, t: &BucketTable, old: &[(Ipv4Addr, f64)], new: &[(Ipv4Addr, f64)]) {
    let real_min = theoretical_min_moves(t.size(), old, new);
    let int_min = integer_min_moves(t, new);
    let mut inc = t.clone();
    let moved = inc.rebuild(new);
    let fresh = BucketTable::fresh(t.size(), new).expect("valid size");
    let fresh_moved = t
        .table()
        .iter()
        .zip(fresh.table())
        .filter(|(a, b)| a != b)
        .count();

    // Clients: how many change node without stickiness, and with live pins.
    let mut pins = StickyTable::new(300_000);
    let mut without = 0;
    let mut with = 0;
    for c in (0..CLIENTS).map(client) {
        let before = pins.lookup_or_assign(0, c, t, SEED);
        if inc.lookup(c, SEED) != before {
            without += 1;
        }
        if pins.lookup_or_assign(1000, c, &inc, SEED) != before {
            with += 1;
        }
    }
    println!(
        "  {name}: buckets moved {moved} (incremental), {fresh_moved} (fresh Maglev); \
         minimum {real_min:.1} real / {int_min} integer; ratio {:.3} (fresh {:.3})",
        moved as f64 / real_min,
        fresh_moved as f64 / real_min,
    );
    println!(
        "  {name}: clients moved {without} of {CLIENTS} without stickiness ({:.2} %), {with} with live pins",
        f64::from(without) / f64::from(CLIENTS) * 100.0
    );
}

fn main() {
    let scenarios: [(&str, Vec<f64>); 2] = [
        ("3 nodes", vec![2.0, 2.0, 1.0]),
        ("8 nodes", vec![4.0, 4.0, 2.0, 2.0, 2.0, 1.0, 1.0, 0.5]),
    ];
    for (name, caps) in scenarios {
        let w: Vec<_> = caps
            .iter()
            .enumerate()
            .map(|(i, c)| (node(i), *c))
            .collect();
        let t = BucketTable::fresh(DEFAULT_BUCKETS, &w).expect("valid size");
        println!(
            "{name}, {DEFAULT_BUCKETS} buckets, {CLIENTS} clients hashed with jhash seed {SEED:#x}"
        );
        share_table(&t, &w);
        let mut halved = w.clone();
        halved[0].1 /= 2.0;
        change("weight change (node 1 halved)", &t, &w, &halved);
        let lost = w[..w.len() - 1].to_vec();
        change("node loss (last node)", &t, &w, &lost);
        println!();
    }
}
