//! Unicast VRRP (`ha.unicast_peers`) and restricted sources (`ha.vrrp_sources`) on the
//! simulated LAN.

use super::*;

/// Three nodes that each list all three addresses (one list for the whole group).
fn unicast(last: u8, priority: u8) -> RouterConfig {
    let peers = vec![addr(11), addr(12), addr(13)];
    RouterConfig {
        unicast_peers: peers.clone(),
        allowed_sources: peers,
        ..cfg(last, priority)
    }
}

fn unicast_three() -> Sim {
    Sim::new(vec![unicast(11, 99), unicast(12, 89), unicast(13, 79)])
}

/// The destinations of node `i`'s adverts, one round at a time.
fn destinations(sim: &Sim, i: usize) -> Vec<Ipv4Addr> {
    sim.trace
        .iter()
        .filter(|e| e.node == i)
        .filter_map(|e| match &e.action {
            Action::SendAdvert { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn unicast_cluster_elects_and_fails_over_with_one_advert_per_peer() {
    let mut sim = unicast_three();
    sim.start_all();
    sim.run_to(10 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.router(1).master(), Some(addr(11)));
    assert_eq!(sim.router(2).master(), Some(addr(11)));
    let to = destinations(&sim, 0);
    assert!(to.len() >= 10, "{to:?}");
    // Each round: the two others, never ourselves, never the group.
    for round in to.chunks(2) {
        assert_eq!(round, [addr(12), addr(13)]);
    }
    // One round counts as one advert.
    assert_eq!(sim.router(0).counters().tx_adverts as usize, to.len() / 2);

    sim.crash(0);
    let crash = sim.now;
    sim.run_to(20 * SEC);
    let gap = sim.became_master_at(1)[0] - sim.last_advert_before(0, crash);
    assert!(
        gap >= mdi(89, SEC) && gap <= mdi(89, SEC) + DELAY,
        "{gap:?}"
    );
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(sim.router(2).master(), Some(addr(12)));

    // SIGTERM of the new master: its priority-0 advert reaches each peer.
    sim.shutdown(1);
    sim.run_to(30 * SEC);
    assert_eq!(sim.masters(), vec![2]);
}

#[test]
fn unicast_v3_checksum_covers_the_peer_address() {
    let mut sim = unicast_three();
    sim.start_all();
    sim.run_to(5 * SEC);
    let sent: Vec<(Ipv4Addr, Vec<u8>)> = sim
        .trace
        .iter()
        .filter(|e| e.node == 0)
        .filter_map(|e| match &e.action {
            Action::SendAdvert { to, payload } => Some((*to, payload.clone())),
            _ => None,
        })
        .collect();
    assert!(sent.len() >= 2, "{sent:?}");
    for (to, payload) in &sent {
        let p = Packet::new_checked(&payload[..]).expect("a whole advert");
        assert!(Repr::parse(&p, Version::V3, addr(11), *to).is_ok());
        // The pseudo-header sum is over this destination: it fails for another peer.
        assert!(p.verify_checksum(addr(11), *to));
        let other = if *to == addr(12) { addr(13) } else { addr(12) };
        assert!(!p.verify_checksum(addr(11), other));
    }
}

/// keepalived accepts any TTL from unicast peers (they may sit behind a router); so do we,
/// and only from listed peers. Multicast keeps RFC 9568 §7.1's TTL 255.
#[test]
fn unicast_accepts_any_ttl_from_a_listed_peer() {
    init_logging();
    let now = Instant::now();
    let mut r = Router::new(unicast(12, 89));
    r.handle_startup(now, true);
    let payload = repr(99).to_bytes(ChecksumMode::PseudoHeader, addr(11), addr(12));
    let mut d = datagram(addr(11), 63, 112, &payload);
    ipv4::emit(
        &mut d,
        &ipv4::Header {
            src: addr(11),
            dst: addr(12),
            ttl: 63,
            protocol: 112,
        },
        7,
        payload.len(),
    );
    r.handle_datagram(now, &d);
    assert_eq!(r.counters().rx_adverts, 1);
    assert_eq!(r.counters().discard_ttl, 0);
    assert_eq!(r.master(), Some(addr(11)));
}

/// A rogue host (not a listed peer) sends priority 255 every second: it is discarded and
/// counted each time, logged once (with a reminder after 10 minutes), and the master stays.
fn rogue_is_discarded(cfgs: Vec<RouterConfig>, rogue_to: Ipv4Addr, needle: &str) {
    let mut sim = Sim::new(cfgs);
    sim.start_all();
    sim.run_to(10 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    let rogue = Ipv4Addr::new(10, 77, 0, 66);
    let payload = repr(255).to_bytes(ChecksumMode::PseudoHeader, rogue, rogue_to);
    let mut d = datagram(rogue, 255, 112, &payload);
    ipv4::emit(
        &mut d,
        &ipv4::Header {
            src: rogue,
            dst: rogue_to,
            ttl: 255,
            protocol: 112,
        },
        9,
        payload.len(),
    );
    for s in 10..40u64 {
        sim.run_to(Duration::from_secs(s));
        for i in 0..3 {
            let now = sim.now;
            sim.enter(i);
            sim.nodes[i].router.handle_datagram(now, &d);
            sim.flush(i);
        }
    }
    sim.run_to(45 * SEC);
    assert_eq!(sim.masters(), vec![0], "the rogue took the VIP");
    for i in 0..3 {
        let c = sim.router(i).counters();
        assert_eq!(c.discard_source, 30, "node {i}");
        assert_eq!(sim.router(i).master(), Some(addr(11)));
    }
    assert_logs_captured();
    let lines = log_lines(&format!("discarding advert from {rogue}: {needle}"));
    // One line per node, not one per packet.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains("(discard_source)"), "{}", lines[0]);
}

#[test]
fn unicast_rogue_priority_255_cannot_take_the_vip() {
    rogue_is_discarded(
        vec![unicast(11, 99), unicast(12, 89), unicast(13, 79)],
        addr(12),
        "not in ha.unicast_peers",
    );
}

#[test]
fn multicast_with_vrrp_sources_rogue_priority_255_cannot_take_the_vip() {
    let sources = vec![addr(11), addr(12), addr(13)];
    let restricted = |last, prio| RouterConfig {
        allowed_sources: sources.clone(),
        ..cfg(last, prio)
    };
    rogue_is_discarded(
        vec![restricted(11, 99), restricted(12, 89), restricted(13, 79)],
        MULTICAST_GROUP,
        "not in ha.vrrp_sources",
    );
}

#[test]
fn without_restriction_a_rogue_priority_255_takes_the_vip() {
    // The case the start log and status warn about: proves the test above can fail.
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let rogue = Ipv4Addr::new(10, 77, 0, 66);
    let payload = repr(255).to_bytes(ChecksumMode::PseudoHeader, rogue, MULTICAST_GROUP);
    let d = datagram(rogue, 255, 112, &payload);
    for i in 0..3 {
        let now = sim.now;
        sim.enter(i);
        sim.nodes[i].router.handle_datagram(now, &d);
        sim.flush(i);
    }
    assert!(
        sim.masters().is_empty(),
        "the master yields to priority 255"
    );
    assert_eq!(sim.router(1).master(), Some(rogue));
}

#[test]
fn reconfigure_switches_between_multicast_and_unicast_in_place() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let now = sim.now;
    for i in 0..3 {
        let c = unicast(11 + i as u8, [99, 89, 79][i]);
        sim.enter(i);
        assert!(sim.nodes[i].router.reconfigure(now, c.clone()));
        sim.nodes[i].cfg = c;
        sim.flush(i);
    }
    let before = destinations(&sim, 0).len();
    sim.run_to(20 * SEC);
    assert_eq!(sim.masters(), vec![0], "the VIP stayed");
    let after: Vec<_> = destinations(&sim, 0).into_iter().skip(before).collect();
    assert!(!after.is_empty() && after.iter().all(|a| *a == addr(12) || *a == addr(13)));
    assert!(sim.became_master_at(1).is_empty() && sim.became_master_at(2).is_empty());
}
