//! End-to-end VRRP tests in a network-namespace lab (issue 2, items 9a–9g).
//!
//! Each test builds its own lab (unique namespace names, torn down by a guard, also on
//! panic). They need root: without it they print a loud SKIP line, and with
//! `PROXYHA_REQUIRE_ROOT_TESTS=1` (CI) they fail instead. Labs run one at a time inside
//! this process (a lock in `Lab::new`) so the timing bounds hold on a 2-core machine.
//!
//! ```text
//! sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --test vrrp_lab
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use proxyha::wire::vrrp;
use proxyha_lab::{self as lab, Daemon, Host, Kind, Lab, Prober, Status, VrrpOpts};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");
/// Slack the issue allows on top of the RFC timers for takeover.
const SLACK: Duration = Duration::from_millis(300);

struct Cluster {
    lab: Lab,
    nodes: Vec<Host>,
    client: Host,
    prober: Prober,
}

/// A lab with nodes n1.. (10.77.N.11..) serving their name on port 9091 and a client
/// (10.77.N.50) probing VIP:9091 every 10 ms. None when skipped for lack of root.
fn cluster(test: &str, nodes: usize) -> Option<Cluster> {
    if !lab::require_root(test) {
        return None;
    }
    let mut lab = Lab::new()
        .expect("creating the lab bridge namespace")
        .with_proxyha(BIN);
    let nodes: Vec<Host> = (0..nodes)
        .map(|i| {
            let h = lab
                .add_host(&format!("n{}", i + 1), 11 + i as u8)
                .expect("adding a node namespace");
            h.serve_name(lab::ECHO_PORT)
                .expect("starting the name server on a node");
            h
        })
        .collect();
    let client = lab.add_host("c", 50).expect("adding the client namespace");
    let prober = Prober::start(&client, SocketAddrV4::new(lab.vip(), lab::ECHO_PORT))
        .expect("starting the client probe");
    Some(Cluster {
        lab,
        nodes,
        client,
        prober,
    })
}

fn opts(priority: u8, interval_ms: u32) -> VrrpOpts {
    VrrpOpts::new(priority, interval_ms)
}

/// Status of a proxyha node, retried briefly while its control socket comes up.
fn status(lab: &Lab, d: &Daemon) -> Status {
    let mut last = None;
    let got = lab::wait_for(
        Duration::from_secs(3),
        Duration::from_millis(50),
        || match lab.status(d) {
            Ok(s) => Some(s),
            Err(e) => {
                last = Some(e);
                None
            }
        },
    );
    got.unwrap_or_else(|| panic!("proxyha status of {} failed: {:?}", d.host.name, last))
}

/// Waits until exactly `who` holds the VIP; returns when that was seen.
fn wait_sole_holder(lab: &Lab, who: &str, limit: Duration, what: &str) -> Instant {
    let mut seen = Vec::new();
    lab::wait_for(limit, Duration::from_millis(10), || {
        seen = lab.vip_holders();
        (seen == [who]).then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!("{what}: expected only {who} to hold the VIP within {limit:?}, holders are {seen:?}")
    })
}

/// Waits for the client to get an answer from `who` through the VIP after `after`;
/// returns the delay from `after` to that answer.
fn wait_answer(c: &Cluster, who: &str, after: Instant, limit: Duration, what: &str) -> Duration {
    let s = c
        .prober
        .wait_answer(who, after, limit + Duration::from_millis(200))
        .unwrap_or_else(|| {
            panic!(
                "{what}: the client got no answer from {who} via the VIP; holders {:?}",
                c.lab.vip_holders()
            )
        });
    s.end - after
}

/// Restarts proxyha on a crashed node the way a rebooted box comes back: link up with the
/// stale VIP still configured, then proxyha, which must remove that VIP at start.
fn restart_crashed(c: &Cluster, i: usize, o: &VrrpOpts) -> Daemon {
    let h = &c.nodes[i];
    h.link(true).expect("link up");
    let d = c.lab.start_proxyha(h, o).expect("restarting proxyha");
    let gone = lab::wait_for(Duration::from_secs(2), Duration::from_millis(5), || {
        (!h.has_addr(c.lab.vip())).then_some(())
    });
    assert!(
        gone.is_some(),
        "proxyha on {} should remove the stale VIP left by the crash at start",
        h.name
    );
    d
}

/// Starts proxyha on every node with `prios`, and checks 9a: within MDI + 1 s exactly the
/// highest node holds the VIP and all statuses agree on it as master.
fn start_all(c: &Cluster, prios: &[u8], interval_ms: u32, preempt: bool) -> Vec<Daemon> {
    let t0 = Instant::now();
    let daemons: Vec<Daemon> = c
        .nodes
        .iter()
        .zip(prios)
        .map(|(h, &p)| {
            c.lab
                .start_proxyha(h, &opts(p, interval_ms).preempt(preempt))
                .expect("starting proxyha")
        })
        .collect();
    let bound = opts(prios[0], interval_ms).master_down_interval() + Duration::from_secs(1);
    let deadline = t0 + bound;
    wait_sole_holder(&c.lab, "n1", bound, "election at start");
    let master = c.nodes[0].addr;
    let mut last = Vec::new();
    let agreed = lab::wait_for(
        deadline.saturating_duration_since(Instant::now()),
        Duration::from_millis(20),
        || {
            last = daemons
                .iter()
                .map(|d| status(&c.lab, d))
                .collect::<Vec<_>>();
            last.iter()
                .all(|s| s.master() == Some(master))
                .then_some(())
        },
    );
    assert!(
        agreed.is_some(),
        "election at start: all nodes should report master {master} within {bound:?}, got {:?}",
        last.iter()
            .map(|s| (s.state().to_string(), s.master()))
            .collect::<Vec<_>>()
    );
    let s1 = &last[0];
    assert_eq!(
        s1.state(),
        "master",
        "n1 (priority {}) should be master",
        prios[0]
    );
    assert!(s1.vip_owner(), "n1 status should say vip_owner = true");
    for (d, s) in daemons.iter().zip(&last).skip(1) {
        assert_eq!(s.state(), "backup", "{} should be backup", d.host.name);
        assert!(
            !s.vip_owner(),
            "{} status should say vip_owner = false",
            d.host.name
        );
    }
    assert_eq!(
        c.lab.vip_holders(),
        ["n1"],
        "exactly one namespace holds the VIP after the election"
    );
    wait_answer(
        c,
        "n1",
        t0,
        Duration::from_secs(2),
        "client reaches the master",
    );
    daemons
}

#[test]
fn a_three_nodes_elect_the_highest_priority() {
    let Some(c) = cluster("a_three_nodes_elect_the_highest_priority", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    // Stable: still exactly n1 one interval later, statuses unchanged.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(c.lab.vip_holders(), ["n1"], "VIP should stay on n1 alone");
    for x in &d {
        assert_eq!(
            status(&c.lab, x).master(),
            Some(c.nodes[0].addr),
            "{} should still see n1 as master",
            x.host.name
        );
    }
}

/// Crashes the master (SIGKILL + link down) and checks 9b; returns the daemons with n1 dead.
fn crash_master(c: &Cluster, d: &[Daemon]) -> Instant {
    // The client has an ARP entry for the VIP pointing at n1.
    let n1_mac = c.nodes[0].mac().expect("n1 MAC");
    let (mac, _) = c
        .client
        .neighbour(c.lab.vip())
        .expect("client neigh")
        .expect("client has a VIP entry");
    assert_eq!(
        mac, n1_mac,
        "before the crash the client's VIP entry should be n1's MAC"
    );
    let t = Instant::now();
    c.lab.crash(&d[0]).expect("crashing n1");
    let bound = opts(89, 1000).master_down_interval() + SLACK;
    let took = wait_answer(c, "n2", t, bound, "takeover after master crash");
    assert!(
        took <= bound,
        "n2 should answer via the VIP within MDI(89) + 300 ms = {bound:?}, took {took:?}"
    );
    assert!(
        c.nodes[1].has_addr(c.lab.vip()),
        "n2 should hold the VIP after the crash"
    );
    assert!(
        !c.nodes[2].has_addr(c.lab.vip()),
        "n3 must not hold the VIP"
    );
    let n2_mac = c.nodes[1].mac().expect("n2 MAC");
    let (mac, state) = c
        .client
        .neighbour(c.lab.vip())
        .expect("client neigh")
        .expect("client has a VIP entry");
    assert_eq!(
        mac, n2_mac,
        "the client's neighbour entry for the VIP should be n2's MAC (state {state})"
    );
    let s2 = status(&c.lab, &d[1]);
    assert_eq!(s2.state(), "master", "n2 should report master");
    assert_eq!(
        s2.master(),
        Some(c.nodes[1].addr),
        "n2 should report itself as master"
    );
    eprintln!("crash: n2 answered {took:?} after the crash (bound {bound:?})");
    t
}

#[test]
fn b_master_crash_moves_vip_to_next_priority() {
    let Some(c) = cluster("b_master_crash_moves_vip_to_next_priority", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    crash_master(&c, &d);
    let s3 = status(&c.lab, &d[2]);
    assert_eq!(s3.state(), "backup", "n3 should stay backup");
    assert_eq!(
        s3.master(),
        Some(c.nodes[1].addr),
        "n3 should follow n2 as master"
    );
}

#[test]
fn c_returning_master_preempts() {
    let Some(c) = cluster("c_returning_master_preempts", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    crash_master(&c, &d);
    let t = Instant::now();
    let d1 = restart_crashed(&c, 0, &opts(99, 1000));
    let bound = opts(99, 1000).master_down_interval() + Duration::from_secs(1);
    wait_sole_holder(&c.lab, "n1", bound, "preemption by the returning n1");
    wait_answer(&c, "n1", t, bound, "client reaches n1 after preemption");
    let s1 = status(&c.lab, &d1);
    assert_eq!(
        s1.state(),
        "master",
        "n1 should be master again after preempting"
    );
    let s2 = status(&c.lab, &d[1]);
    assert_eq!(s2.state(), "backup", "n2 should step down to backup");
    assert_eq!(
        s2.master(),
        Some(c.nodes[0].addr),
        "n2 should see n1 as master"
    );
}

#[test]
fn c_returning_master_does_not_preempt_when_preempt_false() {
    let Some(c) = cluster("c_returning_master_does_not_preempt_when_preempt_false", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, false);
    crash_master(&c, &d);
    let d1 = restart_crashed(&c, 0, &opts(99, 1000).preempt(false));
    // Well past the time it would take to preempt.
    let hold = opts(99, 1000).master_down_interval() * 2;
    let end = Instant::now() + hold;
    while Instant::now() < end {
        assert_eq!(
            c.lab.vip_holders(),
            ["n2"],
            "with preempt = false the VIP must stay on n2 alone"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s1 = status(&c.lab, &d1);
    assert_eq!(
        s1.state(),
        "backup",
        "returning n1 should stay backup without preemption"
    );
    assert_eq!(
        s1.master(),
        Some(c.nodes[1].addr),
        "returning n1 should see n2 as master"
    );
    assert_eq!(
        status(&c.lab, &d[1]).state(),
        "master",
        "n2 should stay master"
    );
}

#[test]
fn d_sigterm_hands_over_within_skew_time() {
    let Some(c) = cluster("d_sigterm_hands_over_within_skew_time", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    let t = Instant::now();
    c.lab.terminate(&d[0]).expect("SIGTERM to n1");
    let bound = opts(89, 1000).skew_time() + SLACK;
    let took = wait_answer(&c, "n2", t, bound, "takeover after SIGTERM");
    assert!(
        took <= bound,
        "n2 should answer via the VIP within Skew_Time(89) + 300 ms = {bound:?}, took {took:?}"
    );
    eprintln!("sigterm: n2 answered {took:?} after SIGTERM (bound {bound:?})");
    let exit = c.lab.wait_exit(d[0].pid, Duration::from_secs(5));
    assert!(
        exit.is_some_and(|s| s.success()),
        "proxyha on n1 should exit 0 after SIGTERM, got {exit:?}"
    );
    assert!(
        !c.nodes[0].has_addr(c.lab.vip()),
        "n1 should have removed the VIP on SIGTERM"
    );
    assert_eq!(c.lab.vip_holders(), ["n2"], "only n2 should hold the VIP");
    let log = d[0].log_text();
    assert!(
        log.contains("sent 0 priority"),
        "n1's log should say `sent 0 priority`:\n{log}"
    );
}

#[test]
fn e_link_down_on_master_enters_fault() {
    let Some(c) = cluster("e_link_down_on_master_enters_fault", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    let t = Instant::now();
    c.nodes[0].link(false).expect("n1 link down");
    let mut last = None;
    let fault = lab::wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        let s = status(&c.lab, &d[0]);
        let ok = s.state() == "fault";
        last = Some(s);
        ok.then_some(())
    });
    assert!(
        fault.is_some(),
        "n1 should report fault after link down, got {:?}",
        last.map(|s| s.0)
    );
    let gone = lab::wait_for(Duration::from_secs(1), Duration::from_millis(20), || {
        (!c.nodes[0].has_addr(c.lab.vip())).then_some(())
    });
    assert!(gone.is_some(), "n1 should remove the VIP in fault state");
    let bound = opts(89, 1000).master_down_interval() + SLACK;
    let took = wait_answer(&c, "n2", t, bound, "takeover after link down on the master");
    assert!(
        took <= bound,
        "n2 should answer within MDI(89) + 300 ms = {bound:?}, took {took:?}"
    );
    assert_eq!(c.lab.vip_holders(), ["n2"], "only n2 should hold the VIP");
    assert!(
        d[0].log_text().contains("Entering FAULT STATE"),
        "n1's log should say `Entering FAULT STATE`"
    );
    // Link back: n1 leaves fault and, being the highest priority, preempts again.
    c.nodes[0].link(true).expect("n1 link up");
    let bound = opts(99, 1000).master_down_interval() + Duration::from_secs(1);
    wait_sole_holder(&c.lab, "n1", bound, "n1 back from fault preempts");
    assert_eq!(
        status(&c.lab, &d[0]).state(),
        "master",
        "n1 should be master after link up"
    );
}

/// 9f: one proxyha and one keepalived, `first` on n1 (priority 99), the other on n2 (89):
/// election, failover (crash of n1) and preemption (n1 returns).
fn interop(test: &str, first: Kind, version: u8) {
    let Some(c) = cluster(test, 2) else { return };
    let second = if first == Kind::Proxyha {
        Kind::Keepalived
    } else {
        Kind::Proxyha
    };
    let interval = 1000;
    let o1 = opts(99, interval).version(version);
    let o2 = opts(89, interval).version(version);
    let what = format!(
        "{} (99) vs {} (89), VRRPv{version}",
        first.as_str(),
        second.as_str()
    );
    // n1 starts half a second ahead: with both started at once, the two Master_Down_Intervals
    // (3.613 s for 99, 3.652 s for 89) end 40 ms apart, keepalived's start-up is longer than that,
    // so n2 becomes master first and keepalived 2.2.7, seeing the lower-priority advert just as
    // its own timer ends, sometimes waits more than an advert interval before it preempts (1 run
    // in 6: > 4.6 s). That start-up race is keepalived's; the preemption itself is tested below.
    let t0 = Instant::now();
    let d1 = c.lab.start(first, &c.nodes[0], &o1).expect("starting n1");
    thread::sleep(Duration::from_millis(500));
    let d2 = c.lab.start(second, &c.nodes[1], &o2).expect("starting n2");
    let proxyha = if first == Kind::Proxyha { &d1 } else { &d2 };
    wait_sole_holder(
        &c.lab,
        "n1",
        o1.master_down_interval() + Duration::from_secs(1),
        &format!("{what}: election"),
    );
    wait_answer(
        &c,
        "n1",
        t0,
        Duration::from_secs(2),
        &format!("{what}: client reaches n1"),
    );
    let expect_state = if first == Kind::Proxyha {
        "master"
    } else {
        "backup"
    };
    let ok = lab::wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
        let s = status(&c.lab, proxyha);
        (s.state() == expect_state && s.master() == Some(c.nodes[0].addr)).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: proxyha should be {expect_state} with master n1: {:?}",
        status(&c.lab, proxyha).0
    );
    // Failover.
    let t = Instant::now();
    c.lab.crash(&d1).expect("crashing n1");
    let bound = o2.master_down_interval() + SLACK;
    let took = wait_answer(&c, "n2", t, bound, &format!("{what}: failover"));
    assert!(
        took <= bound,
        "{what}: n2 should take over within {bound:?}, took {took:?}"
    );
    assert_eq!(
        c.lab.vip_holders(),
        ["n2"],
        "{what}: only n2 should hold the VIP after the crash"
    );
    // Preemption by the returning n1 (a rebooted box: link up, no stale VIP for keepalived,
    // which does not clean up after a crash; proxyha must do it itself).
    let t = Instant::now();
    let d1 = if first == Kind::Keepalived {
        c.nodes[0]
            .flush_addr(c.lab.vip())
            .expect("flushing the stale VIP on n1");
        c.nodes[0].link(true).expect("n1 link up");
        c.lab
            .start(first, &c.nodes[0], &o1)
            .expect("restarting keepalived on n1")
    } else {
        restart_crashed(&c, 0, &o1)
    };
    let bound = o1.master_down_interval() + Duration::from_secs(1);
    wait_sole_holder(
        &c.lab,
        "n1",
        bound,
        &format!("{what}: preemption by returning n1"),
    );
    wait_answer(
        &c,
        "n1",
        t,
        bound,
        &format!("{what}: client reaches n1 after preemption"),
    );
    let proxyha = if first == Kind::Proxyha { &d1 } else { &d2 };
    let ok = lab::wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
        let s = status(&c.lab, proxyha);
        (s.state() == expect_state && s.master() == Some(c.nodes[0].addr)).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: after preemption proxyha should be {expect_state}: {:?}",
        status(&c.lab, proxyha).0
    );
    // Every keepalived advert was understood: received, none discarded.
    let s = status(&c.lab, proxyha);
    assert!(
        s.counter("rx_adverts") > 0,
        "{what}: proxyha should have received keepalived's adverts"
    );
    let discards: Vec<(String, u64)> = s.0["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| k.starts_with("discard_") && v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    assert!(
        discards.is_empty(),
        "{what}: proxyha discarded keepalived's adverts: {discards:?}"
    );
}

#[test]
fn f_interop_v3_proxyha_master_keepalived_backup() {
    interop(
        "f_interop_v3_proxyha_master_keepalived_backup",
        Kind::Proxyha,
        3,
    );
}

#[test]
fn f_interop_v3_keepalived_master_proxyha_backup() {
    interop(
        "f_interop_v3_keepalived_master_proxyha_backup",
        Kind::Keepalived,
        3,
    );
}

#[test]
fn f_interop_v2_proxyha_master_keepalived_backup() {
    interop(
        "f_interop_v2_proxyha_master_keepalived_backup",
        Kind::Proxyha,
        2,
    );
}

#[test]
fn f_interop_v2_keepalived_master_proxyha_backup() {
    interop(
        "f_interop_v2_keepalived_master_proxyha_backup",
        Kind::Keepalived,
        2,
    );
}

/// A datagram (IPv4 header + VRRP) built with the crate's codecs.
fn datagram(src: Ipv4Addr, ttl: u8, vrrp_bytes: &[u8]) -> Vec<u8> {
    lab::advert_datagram(src, ttl, vrrp_bytes)
}

/// Recomputes the VRRP checksum (pseudo-header form) after a mutation.
fn refill(mut bytes: Vec<u8>, src: Ipv4Addr) -> Vec<u8> {
    vrrp::Packet::new_unchecked(&mut bytes[..]).fill_checksum(
        vrrp::ChecksumMode::PseudoHeader,
        src,
        vrrp::MULTICAST_GROUP,
    );
    bytes
}

#[test]
fn g_malformed_adverts_are_counted_and_ignored() {
    let Some(c) = cluster("g_malformed_adverts_are_counted_and_ignored", 3) else {
        return;
    };
    let d = start_all(&c, &[99, 89, 79], 1000, true);
    let vip = c.lab.vip();
    let rogue = c.client.addr;
    let n1 = c.nodes[0].addr;
    // A valid advert that would win every election (priority 254) if it were accepted.
    let good = |vrid: u8, prio: u8, src: Ipv4Addr| {
        vrrp::Repr::new(
            vrrp::Version::V3,
            vrid,
            prio,
            Duration::from_secs(1),
            vec![vip],
        )
        .expect("valid advert")
        .to_bytes(vrrp::ChecksumMode::PseudoHeader, src, vrrp::MULTICAST_GROUP)
    };
    let all = [0usize, 1, 2];
    let mut cases: Vec<(&str, &str, Vec<u8>, &[usize])> = Vec::new();
    cases.push((
        "TTL 64",
        "discard_ttl",
        datagram(rogue, 64, &good(51, 254, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[0] = 0x21; // version 2 on a v3 router
    cases.push((
        "version 2",
        "discard_version",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[0] = 0x32; // type 2
    cases.push((
        "type 2",
        "discard_type",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[6] ^= 0x5a;
    cases.push((
        "bad checksum",
        "discard_checksum",
        datagram(rogue, 255, &v),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[3] = 2; // count 2, one address present
    cases.push((
        "truncated",
        "discard_length",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v.extend_from_slice(&[10, 77, 0, 1]); // count 1, two addresses present
    cases.push((
        "length mismatch",
        "discard_length",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    cases.push((
        "VRID 52",
        "discard_vrid",
        datagram(rogue, 255, &good(52, 254, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[4] = 0;
    v[5] = 0;
    cases.push((
        "zero interval",
        "discard_interval",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    let mut v = good(51, 254, rogue);
    v[3] = 0;
    v.truncate(8);
    cases.push((
        "no addresses",
        "discard_no_addresses",
        datagram(rogue, 255, &refill(v, rogue)),
        &all,
    ));
    // n1's own address as source (and n1's own priority: to n2 and n3 it is just n1's advert).
    // Linux drops a datagram whose source is a local address as martian before any socket
    // sees it, unless accept_local is set; a daemon meets its own adverts only through
    // multicast loop (which proxyha turns off) or such a setting, so the lab sets it on n1.
    c.nodes[0]
        .sysctl("net.ipv4.conf.eth0.accept_local", "1")
        .expect("accept_local on n1");
    cases.push((
        "own address",
        "discard_own",
        datagram(n1, 255, &good(51, 99, n1)),
        &[0],
    ));

    let before_master = status(&c.lab, &d[0]).counter("became_master");
    for (what, counter, bytes, on) in &cases {
        let before: Vec<u64> = d
            .iter()
            .map(|x| status(&c.lab, x).counter(counter))
            .collect();
        lab::inject(&c.client, bytes.clone()).unwrap_or_else(|e| panic!("injecting {what}: {e}"));
        for &i in *on {
            let mut now = 0;
            let ok = lab::wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
                now = status(&c.lab, &d[i]).counter(counter);
                (now > before[i]).then_some(())
            });
            assert!(
                ok.is_some(),
                "{what}: {counter} on n{} should increase (was {}, now {now}): {:?}",
                i + 1,
                before[i],
                status(&c.lab, &d[i]).0["counters"]
            );
        }
        let s1 = status(&c.lab, &d[0]);
        assert_eq!(s1.state(), "master", "{what}: n1 must stay master");
        for x in &d[1..] {
            let s = status(&c.lab, x);
            assert_eq!(
                s.state(),
                "backup",
                "{what}: {} must stay backup",
                x.host.name
            );
            assert_eq!(
                s.master(),
                Some(n1),
                "{what}: {} must keep n1 as master",
                x.host.name
            );
        }
    }
    // Long enough for a wrongly accepted priority-254 advert to have unseated n1.
    std::thread::sleep(Duration::from_millis(1500));
    let s1 = status(&c.lab, &d[0]);
    assert_eq!(
        s1.state(),
        "master",
        "n1 must still be master after all malformed adverts"
    );
    assert_eq!(
        s1.counter("became_master"),
        before_master,
        "n1 must never have left master"
    );
    assert_eq!(
        c.lab.vip_holders(),
        ["n1"],
        "only n1 holds the VIP after all malformed adverts"
    );
}

/// The harness itself, with keepalived playing both nodes (100 ms adverts): crash and SIGTERM
/// failover, preemption. Also the baseline the benchmark compares against.
#[test]
fn lab_harness_with_keepalived() {
    let Some(c) = cluster("lab_harness_with_keepalived", 2) else {
        return;
    };
    let (o1, o2) = (opts(99, 100), opts(89, 100));
    // n1 first, n2 once n1 is master. Started together, both keepalived instances can become
    // master at once; n2's gratuitous ARPs may then land after n1's, and keepalived (unlike
    // proxyha, which re-announces on hearing a lower-priority master) does not re-send them,
    // so the client keeps n2's MAC until its ARP entry goes stale (seen here 1 run in 10).
    let t0 = Instant::now();
    let d1 = c
        .lab
        .start_keepalived(&c.nodes[0], &o1)
        .expect("starting keepalived on n1");
    let elected = wait_sole_holder(
        &c.lab,
        "n1",
        o1.master_down_interval() + Duration::from_secs(2),
        "keepalived election",
    );
    let _d2 = c
        .lab
        .start_keepalived(&c.nodes[1], &o2)
        .expect("starting keepalived on n2");
    wait_answer(
        &c,
        "n1",
        elected.max(t0),
        Duration::from_secs(2),
        "client reaches keepalived n1",
    );
    // n2 must have heard n1 before the crash, or the failover below is only n2's start-up.
    std::thread::sleep(o2.master_down_interval() + Duration::from_millis(200));
    assert_eq!(
        c.lab.vip_holders(),
        ["n1"],
        "n1 stays the only holder once n2 runs"
    );
    let t = Instant::now();
    c.lab.crash(&d1).expect("crashing keepalived n1");
    let bound = o2.master_down_interval() + SLACK;
    let took = wait_answer(&c, "n2", t, bound, "keepalived failover");
    assert!(
        took <= bound,
        "keepalived n2 should answer within {bound:?}, took {took:?}"
    );
    let mac = c.nodes[1].mac().expect("n2 MAC");
    let entry = c.client.neighbour(c.lab.vip()).expect("neigh");
    assert_eq!(
        entry.map(|e| e.0),
        Some(mac),
        "client's VIP entry should be n2's MAC"
    );
    c.nodes[0]
        .flush_addr(c.lab.vip())
        .expect("flushing stale VIP");
    c.nodes[0].link(true).expect("n1 link up");
    let d1 = c
        .lab
        .start_keepalived(&c.nodes[0], &o1)
        .expect("restarting keepalived on n1");
    wait_sole_holder(
        &c.lab,
        "n1",
        o1.master_down_interval() + Duration::from_secs(1),
        "keepalived preemption",
    );
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    c.lab.terminate(&d1).expect("SIGTERM keepalived n1");
    let bound = o2.skew_time() + SLACK;
    let took = wait_answer(&c, "n2", t, bound, "keepalived SIGTERM handover");
    assert!(
        took <= bound,
        "keepalived n2 should answer within {bound:?} of SIGTERM, took {took:?}"
    );
}
