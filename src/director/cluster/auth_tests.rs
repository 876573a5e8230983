//! Who may speak membership: replayed, forged and unlisted senders (issue 12, item 3).

use super::tests::{cfg, load, run};
use super::*;

const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 66);
const SEC: Duration = Duration::from_secs(1);
const KEY: &[u8] = b"0123456789abcdef";

fn keyed(name: &str, addr: Ipv4Addr, boot: u64, t0: Instant) -> Cluster {
    let mut c = Cluster::new(ClusterConfig {
        auth_key: Some(KEY.to_vec()),
        boot_id: boot,
        ..cfg(name, addr)
    });
    c.handle_local_load(load());
    c.handle_startup(t0);
    c
}

/// A director and a member exchanging for 3 s, every message captured as sent.
fn pair(t0: Instant) -> (Vec<Cluster>, Vec<(Ipv4Addr, Transmit)>) {
    let mut n = vec![keyed("a", A, 7, t0), keyed("b", B, 9, t0)];
    n[0].set_role(t0, true);
    let mut captured = Vec::new();
    let mut now = t0;
    while now <= t0 + 3 * SEC {
        for c in n.iter_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        let mut sent = Vec::new();
        for c in n.iter_mut() {
            while let Some(t) = c.poll_transmit() {
                sent.push((c.cfg.self_addr, t));
            }
        }
        for (src, t) in &sent {
            for c in n.iter_mut() {
                let to_it = t.dst == membership::BROADCAST || t.dst == c.cfg.self_addr;
                if c.cfg.self_addr != *src && to_it {
                    c.handle_datagram(now, *src, &t.payload);
                }
            }
        }
        captured.extend(sent);
        now += Duration::from_millis(100);
    }
    (n, captured)
}

fn weights(c: &Cluster, now: Instant) -> Vec<(Ipv4Addr, String)> {
    c.nodes(now)
        .iter()
        .map(|n| (n.address, format!("{:.3}", n.weight)))
        .collect()
}

#[test]
fn replayed_reports_announcements_and_pins_are_discarded_and_change_nothing() {
    let t0 = Instant::now();
    let (mut n, captured) = pair(t0);
    let t = t0 + 4 * SEC;
    assert_eq!(n[0].nodes(t).len(), 2, "b joined");
    assert_eq!(n[1].director(), Some(A));
    let (members, w) = (n[0].nodes(t).len(), weights(&n[0], t));
    let held = n[1].pins_held();
    // Every captured message once more, as a replayer on the segment would send them.
    let mut replayed = 0;
    for (src, tx) in &captured {
        for c in n.iter_mut() {
            let to_it = tx.dst == membership::BROADCAST || tx.dst == c.cfg.self_addr;
            if c.cfg.self_addr != *src && to_it {
                c.handle_datagram(t, *src, &tx.payload);
                replayed += 1;
            }
        }
    }
    assert!(replayed > 4, "{replayed}");
    let discarded: u64 = n.iter().map(|c| c.counters()["discard_replay"]).sum();
    assert_eq!(discarded, replayed, "every replay is discarded");
    assert_eq!(n[0].nodes(t).len(), members);
    assert_eq!(weights(&n[0], t), w, "no weight moved");
    assert_eq!(n[1].pins_held(), held, "no pin injected");
    // And the live stream goes on: new messages carry newer sequence numbers.
    let before = n[0].counters()["rx_reports"];
    let mut live = n;
    run(&mut live, &[true, true], t, t + 2 * SEC);
    assert!(live[0].counters()["rx_reports"] > before);
}

#[test]
fn a_restarted_sender_is_accepted_and_its_old_boot_is_not() {
    let t0 = Instant::now();
    let (mut n, captured) = pair(t0);
    let old_report = captured
        .iter()
        .find(|(src, t)| *src == B && t.dst == A)
        .map(|(_, t)| t.payload.clone())
        .expect("b reported");
    // b restarts: a larger boot id (the shell persists and increments it).
    let t = t0 + 4 * SEC;
    let mut b2 = keyed("b", B, 10, t);
    b2.handle_timeout(t);
    let mut live = vec![n.remove(0), b2];
    let before = live[0].counters()["rx_reports"];
    run(&mut live, &[true, true], t, t + 2 * SEC);
    assert!(
        live[0].counters()["rx_reports"] > before,
        "the new boot is heard"
    );
    let replays = live[0].counters()["discard_replay"];
    live[0].handle_datagram(t + 3 * SEC, B, &old_report);
    assert_eq!(live[0].counters()["discard_replay"], replays + 1);
}

#[test]
fn unlisted_and_forged_senders_cannot_join_or_steer() {
    let t0 = Instant::now();
    let mut d = Cluster::new(ClusterConfig {
        auth_key: Some(KEY.to_vec()),
        allowed_sources: vec![A, B],
        ..cfg("a", A)
    });
    d.handle_local_load(load());
    d.handle_startup(t0);
    d.set_role(t0, true);
    let mut rogue = keyed("rogue", ROGUE, 1, t0);
    let report = Message::Report(rogue.report());
    // With the group's key, from an address that is not listed.
    let signed = rogue.seal(&report).expect("encodes");
    d.handle_datagram(t0, ROGUE, &signed);
    assert_eq!(d.counters()["discard_source"], 1);
    // Without the key, from a listed address (spoofed source).
    let forged = membership::encode_fresh(
        &report,
        51,
        Some(b"guessed-key-0000"),
        Freshness { boot: 99, seq: 1 },
    )
    .expect("encodes");
    d.handle_datagram(t0, B, &forged);
    let unsigned = membership::encode(&report, 51, None).expect("encodes");
    d.handle_datagram(t0, B, &unsigned);
    assert_eq!(d.counters()["discard_auth"], 2);
    assert_eq!(d.counters()["rx_reports"], 0);
    assert_eq!(d.nodes(t0).len(), 1, "nobody joined");
}

/// A returning higher-priority node that preempts a live director keeps that director in
/// the pool and its clients' pins (the old director goes on serving as a scanning node); one
/// that replaces a failed director drops the failed one's pins.
#[test]
fn preempting_a_live_director_keeps_its_pins_and_membership() {
    let t0 = Instant::now();
    for (alive, want_kept) in [(true, true), (false, false)] {
        let mut b = keyed("b", B, 1, t0);
        let mut a = keyed("a", A, 2, t0);
        // b directs; a is a standby holding b's pins (one client pinned to b itself).
        b.set_role(t0, true);
        let mut n = vec![b, a];
        run(&mut n, &[true, true], t0, t0 + 3 * SEC);
        a = n.pop().expect("a");
        let client = Ipv4Addr::new(10, 99, 0, 7);
        let pins = membership::Message::Pins(membership::Pins {
            director: B,
            epoch: n[0].epoch,
            kind: membership::PinsKind::Full {
                cycle: 1,
                page: 0,
                pages: 1,
                age_ms: 0,
            },
            pins: vec![membership::Assignment {
                client,
                port: 9090,
                node: B,
                idle_ms: 0,
            }],
            removed: vec![],
        });
        let bytes = n[0].seal(&pins).expect("encodes");
        a.handle_datagram(t0 + 3 * SEC, B, &bytes);
        assert_eq!(a.pins_held(), 1, "a holds b's pin");
        let t = t0 + 4 * SEC;
        a.set_preempted(if alive { Some(B) } else { None });
        a.set_role(t, true);
        let d = a.poll_desired().expect("director data path");
        let kept = match &d.role {
            Role::Director(s) => !s.sticky_void.iter().any(|e| e.client == client),
            other => panic!("{other:?}"),
        };
        assert_eq!(kept, want_kept, "alive {alive}");
        let members: Vec<Ipv4Addr> = a.nodes(t).iter().map(|m| m.address).collect();
        assert_eq!(
            members.contains(&B),
            want_kept,
            "alive {alive}: {members:?}"
        );
        // The live director we preempted is logged as joining our pool (the rolling
        // update's test waits for that line); one that failed is not.
        let joined = std::iter::from_fn(|| a.poll_event()).any(|e| e == Event::Joined(B));
        assert_eq!(joined, want_kept, "alive {alive}: Joined({B})");
    }
}
