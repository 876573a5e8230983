use super::*;
use crate::dataplane::{PinsRead, mark_of};

pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
const SEC: Duration = Duration::from_secs(1);

pub(super) fn cfg(name: &str, addr: Ipv4Addr) -> ClusterConfig {
    let mut c = ClusterConfig::new(
        name,
        addr,
        VIP,
        vec![PortRedirect {
            port: 9090,
            to: 9090,
        }],
    );
    c.buckets = 300;
    c
}

pub(super) fn load() -> LocalLoad {
    LocalLoad {
        cpu: 0.1,
        cpu_count: 2,
        conns: BTreeMap::new(),
        listening: [(9090, true)].into_iter().collect(),
        reasons: BTreeMap::new(),
    }
}

fn node(name: &str, addr: Ipv4Addr, now: Instant) -> Cluster {
    let mut c = Cluster::new(cfg(name, addr));
    c.handle_local_load(load());
    c.handle_startup(now);
    c
}

/// A tiny LAN: delivers every transmit (broadcast to all others, unicast to its
/// address) and runs every node's timer up to `until` in 100 ms steps.
pub(super) fn run(
    nodes: &mut [Cluster],
    alive: &[bool],
    from: Instant,
    until: Instant,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut now = from;
    while now <= until {
        for (i, n) in nodes.iter_mut().enumerate() {
            if alive[i] && n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        let mut sent = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while let Some(t) = n.poll_transmit() {
                if alive[i] {
                    sent.push((n.cfg.self_addr, t));
                }
            }
            while let Some(e) = n.poll_event() {
                events.push(e);
            }
        }
        for (src, t) in sent {
            for (i, n) in nodes.iter_mut().enumerate() {
                let to_it = t.dst == membership::BROADCAST || t.dst == n.cfg.self_addr;
                if alive[i] && n.cfg.self_addr != src && to_it {
                    n.handle_datagram(now, src, &t.payload);
                }
            }
        }
        now += Duration::from_millis(100);
    }
    events
}

fn director_state(d: &Desired) -> &DirectorState {
    match &d.role {
        Role::Director(s) => s,
        other => panic!("expected a director, got {other:?}"),
    }
}

#[test]
fn scanning_partners_join_with_their_first_report() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    nodes[0].set_role(t0, true);
    let events = run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    assert!(events.contains(&Event::Joined(B)), "{events:?}");
    assert!(events.contains(&Event::Joined(C)), "{events:?}");
    assert_eq!(nodes[1].director(), Some(A));
    let counts = nodes[0].table(9090).counts();
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
    let mut last = None;
    while let Some(d) = nodes[0].poll_desired() {
        last = Some(d);
    }
    let d = last.expect("director desired state");
    let s = director_state(&d);
    assert_eq!(s.nodes, vec![B, C]);
    assert_eq!(
        s.pools[0].buckets.iter().filter(|b| b.is_none()).count(),
        100
    );
    // A scanning node's status: the director (from its announcements) and itself.
    let st = nodes[1].nodes(Instant::now());
    assert_eq!(st.len(), 2);
    assert_eq!(
        (st[0].name.as_str(), st[0].role.as_str()),
        ("a", "director"),
        "{:?}",
        nodes[1].announced
    );
    assert_eq!((st[1].address, st[1].role.as_str()), (B, "scanning"));
    assert!((st[1].share - 1.0 / 3.0).abs() < 0.01, "{st:?}");
    // The director's: every member, with its table share.
    let st = nodes[0].nodes(Instant::now());
    assert_eq!(
        st.iter().map(|n| n.address).collect::<Vec<_>>(),
        vec![A, B, C]
    );
    assert!(
        st.iter()
            .all(|n| (n.share - 1.0 / 3.0).abs() < 0.01 && n.healthy)
    );
    // Scanning nodes want the scanning data path with the director known.
    let mut last = None;
    while let Some(d) = nodes[1].poll_desired() {
        last = Some(d);
    }
    assert_eq!(
        last.map(|d| d.role),
        Some(Role::Scanning {
            self_addr: B,
            director: Some(A)
        })
    );
}

#[test]
fn a_partner_silent_for_three_report_periods_has_failed_and_its_buckets_move() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    let before = nodes[0].table(9090).table().to_vec();
    while nodes[0].poll_desired().is_some() {}
    // C dies: its last report was at most one period before this.
    let dead = t0 + 3 * SEC + Duration::from_millis(100);
    let alive = [true, true, false];
    let events = run(
        &mut nodes,
        &alive,
        dead,
        dead + 2 * SEC + Duration::from_millis(500),
    );
    assert!(
        !events.contains(&Event::Failed(C)),
        "failed too early: {events:?}"
    );
    let events = run(&mut nodes, &alive, dead + 26 * SEC / 10, dead + 4 * SEC);
    assert!(events.contains(&Event::Failed(C)), "{events:?}");
    let after = nodes[0].table(9090).table().to_vec();
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert_eq!(moved, 100, "only C's buckets move");
    assert!(!after.contains(&C));
    let d = nodes[0]
        .poll_desired()
        .expect("a new table after the failure");
    assert_eq!(director_state(&d).nodes, vec![B]);
}

fn two_ports(name: &str, addr: Ipv4Addr, drain: Drain, now: Instant) -> Cluster {
    let mut c = cfg(name, addr);
    c.redirects.push(PortRedirect {
        port: 2121,
        to: 2121,
    });
    c.drain = drain;
    c.group_config = "vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode direct".into();
    c.config_digest = [7; 32];
    let mut n = Cluster::new(c);
    n.handle_local_load(two_port_load(true));
    n.handle_startup(now);
    n
}

/// A directing B and C for 3 s, all serving 9090 and 2121.
fn three_directed(drain: Drain, t0: Instant) -> Vec<Cluster> {
    let mut nodes: Vec<Cluster> = [("a", A), ("b", B), ("c", C)]
        .iter()
        .map(|(n, a)| two_ports(n, *a, drain, t0))
        .collect();
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    nodes
}

fn two_port_load(ftp_up: bool) -> LocalLoad {
    let mut l = load();
    l.listening.insert(2121, ftp_up);
    if !ftp_up {
        l.reasons.insert(2121, "nothing is listening".into());
    }
    l
}

fn pool_of(d: &Desired, port: u16) -> PortPool {
    director_state(d)
        .pools
        .iter()
        .find(|p| p.ports.contains(&port))
        .cloned()
        .expect("every port has a pool")
}

fn last_desired(c: &mut Cluster) -> Desired {
    let mut last = None;
    while let Some(d) = c.poll_desired() {
        last = Some(d);
    }
    last.or_else(|| c.last_desired.clone())
        .expect("a desired state")
}

#[test]
fn a_failed_listener_takes_the_node_out_of_that_ports_pool_only() {
    let t0 = Instant::now();
    let mut nodes = three_directed(Drain::Port, t0);
    let d = last_desired(&mut nodes[0]);
    assert_eq!(
        director_state(&d).pools.len(),
        1,
        "one pool while all serve all"
    );
    let before_9090 = nodes[0].table(9090).table().to_vec();
    // B's FTP listener stops: B logs it, reports it, and leaves 2121's pool only.
    nodes[1].handle_local_load(two_port_load(false));
    let events: Vec<Event> = std::iter::from_fn(|| nodes[1].poll_event()).collect();
    assert_eq!(
        events,
        vec![Event::PortFailure {
            port: 2121,
            reason: "nothing is listening".into()
        }]
    );
    assert_eq!(
        events[0].to_string(),
        "current state: failure (port 2121: nothing is listening)"
    );
    let t1 = t0 + 3 * SEC + Duration::from_millis(50);
    run(&mut nodes, &[true; 3], t1, t1 + 2 * SEC);
    let d = last_desired(&mut nodes[0]);
    let ftp = pool_of(&d, 2121);
    let web = pool_of(&d, 9090);
    assert_eq!(ftp.serving, vec![A, C], "B's FTP pins are void");
    assert!(!ftp.buckets.contains(&Some(B)));
    assert_eq!(web.serving, vec![A, B, C]);
    assert_eq!(
        nodes[0].table(9090).table().to_vec(),
        before_9090,
        "9090's table did not move"
    );
    let row = nodes[0]
        .nodes(t1)
        .into_iter()
        .find(|n| n.address == B)
        .unwrap();
    assert!(
        row.reason
            .contains("port 2121 down (nothing is listening): out of that port's pool only"),
        "{}",
        row.reason
    );
    assert!(row.share > 0.0 && !row.healthy);
    // A pin to B for 2121 read before the kernel replaced it is void, and said so.
    let client = Ipv4Addr::new(10, 9, 1, 9);
    nodes[0].set_pins(
        t1,
        &[
            StickyEntry {
                client,
                port: 2121,
                mark: mark_of(B),
                expires_ms: 290_000,
            },
            StickyEntry {
                client,
                port: 9090,
                mark: mark_of(B),
                expires_ms: 290_000,
            },
        ],
    );
    let c = nodes[0].client(t1, client);
    let by_port: BTreeMap<u16, (Option<Ipv4Addr>, String)> = c
        .ports
        .iter()
        .map(|p| (p.port, (p.node, p.how.clone())))
        .collect();
    assert_eq!(by_port[&9090], (Some(B), "pinned".to_string()));
    assert_eq!(by_port[&2121].1, "new");
    assert_ne!(by_port[&2121].0, Some(B));
    // Back: logged once as ok, and 2121's pool has B again.
    nodes[1].handle_local_load(two_port_load(true));
    let events: Vec<Event> = std::iter::from_fn(|| nodes[1].poll_event()).collect();
    assert_eq!(events, vec![Event::PortsOk]);
    assert_eq!(events[0].to_string(), "current state: ok");
    let t2 = t1 + 3 * SEC;
    run(&mut nodes, &[true; 3], t2, t2 + 2 * SEC);
    let d = last_desired(&mut nodes[0]);
    assert_eq!(pool_of(&d, 2121).serving, vec![A, B, C]);
}

#[test]
fn drain_node_mode_and_maintenance_keep_pins_but_give_no_new_clients() {
    let t0 = Instant::now();
    let mut nodes = three_directed(Drain::Node, t0);
    nodes[1].handle_local_load(two_port_load(false));
    let t1 = t0 + 3 * SEC + Duration::from_millis(50);
    run(&mut nodes, &[true; 3], t1, t1 + 2 * SEC);
    let d = last_desired(&mut nodes[0]);
    let web = pool_of(&d, 9090);
    assert!(
        !web.buckets.contains(&Some(B)),
        "drain = node: no new 9090 clients either"
    );
    assert_eq!(web.serving, vec![A, B, C], "but B's 9090 clients finish");
    assert_eq!(pool_of(&d, 2121).serving, vec![A, C]);
    let row = nodes[0]
        .nodes(t1)
        .into_iter()
        .find(|n| n.address == B)
        .unwrap();
    assert!(row.reason.contains("ha.drain = \"node\""), "{}", row.reason);
    assert_eq!(row.weight, 0.0);
    // Maintenance on C: the same, for every port, with its own reason.
    let t2 = t1 + 3 * SEC;
    nodes[2].set_draining(t2, true);
    run(&mut nodes, &[true; 3], t2, t2 + 2 * SEC);
    let d = last_desired(&mut nodes[0]);
    let web = pool_of(&d, 9090);
    assert!(
        web.buckets.iter().all(|b| b.is_none()),
        "only the director takes new clients"
    );
    assert_eq!(web.serving, vec![A, B, C]);
    let row = nodes[0]
        .nodes(t2)
        .into_iter()
        .find(|n| n.address == C)
        .unwrap();
    assert!(
        row.reason.starts_with("draining (proxyha drain)"),
        "{}",
        row.reason
    );
}

#[test]
fn a_node_back_from_draining_restarts_at_the_neutral_multiplier() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    let busy = |cpu| LocalLoad { cpu, ..load() };
    nodes[0].handle_local_load(busy(0.9));
    nodes[2].handle_local_load(busy(0.9));
    nodes[1].handle_local_load(busy(0.0));
    nodes[0].set_role(t0, true);
    nodes[1].set_draining(t0, true);
    // Twenty periods drained while idle: excluded from the feedback, B does not drift.
    run(&mut nodes, &[true; 3], t0, t0 + 20 * SEC);
    assert_eq!(
        nodes[0].weights.multiplier(B),
        None,
        "out of the feedback while draining"
    );
    let t1 = t0 + 20 * SEC + Duration::from_millis(50);
    nodes[1].set_draining(t1, false);
    run(&mut nodes, &[true; 3], t1, t1 + Duration::from_millis(200));
    let m = nodes[0]
        .weights
        .multiplier(B)
        .expect("back in the feedback");
    assert!(
        m < 1.5,
        "starts near 1 (one feedback step), not at the ceiling: {m}"
    );
}

#[test]
fn a_config_mismatch_is_logged_once_shown_and_gets_no_new_clients() {
    let t0 = Instant::now();
    let mut nodes: Vec<Cluster> = [("a", A), ("b", B)]
        .iter()
        .map(|(n, a)| two_ports(n, *a, Drain::Port, t0))
        .collect();
    nodes[1].cfg.group_config =
        "vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode nat".into();
    nodes[1].cfg.config_digest = [8; 32];
    nodes[0].set_role(t0, true);
    let events = run(&mut nodes, &[true; 2], t0, t0 + 4 * SEC);
    let mismatches: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ConfigMismatch { .. }))
        .collect();
    assert_eq!(
        mismatches.len(),
        1,
        "once per peer, not once per report: {events:?}"
    );
    let line = mismatches[0].to_string();
    assert!(
        line.contains("config mismatch with b (10.9.0.2): theirs `vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode nat`, ours `vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode direct`"),
        "{line}"
    );
    let m = nodes[0].mismatches();
    assert_eq!(
        (m.len(), m[0].peer, m[0].source.as_str()),
        (1, B, "membership")
    );
    let d = last_desired(&mut nodes[0]);
    assert!(!pool_of(&d, 9090).buckets.contains(&Some(B)));
    assert_eq!(nodes[0].counters()["config_mismatch"], 1);
}

#[test]
fn status_client_says_pinned_or_which_bucket_and_why() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 2], t0, t0 + 3 * SEC);
    let client = Ipv4Addr::new(10, 9, 1, 7);
    nodes[0].set_pins(
        t0 + 3 * SEC,
        &[StickyEntry {
            client,
            port: 9090,
            mark: mark_of(B),
            expires_ms: 280_000,
        }],
    );
    let c = nodes[0].client(t0 + 3 * SEC, client);
    assert_eq!(c.ports.len(), 1);
    assert_eq!(
        (c.ports[0].node, c.ports[0].how.as_str()),
        (Some(B), "pinned")
    );
    assert!(
        c.ports[0].detail.contains("last seen 20 s ago"),
        "{}",
        c.ports[0].detail
    );
    let other = Ipv4Addr::new(10, 9, 1, 8);
    let c = nodes[0].client(t0 + 3 * SEC, other);
    let want = nodes[0].table(9090).lookup(other, HASH_SEED);
    assert_eq!((c.ports[0].node, c.ports[0].how.as_str()), (want, "new"));
    assert!(
        c.ports[0].detail.contains("bucket"),
        "{}",
        c.ports[0].detail
    );
    // A standby answers from the replicated pins, and says so.
    run(&mut nodes, &[true; 2], t0 + 3 * SEC, t0 + 5 * SEC);
    let c = nodes[1].client(t0 + 5 * SEC, client);
    assert_eq!(c.ports[0].how, "pinned");
    assert!(
        c.source.contains("replicated from director"),
        "{}",
        c.source
    );
}

impl Cluster {
    /// The director's kernel map as the shell would read it whole.
    fn set_pins(&mut self, now: Instant, all: &[StickyEntry]) {
        self.handle_pins_read(
            now,
            PinsRead {
                full: Some(all.to_vec()),
                ..PinsRead::default()
            },
        );
    }
}

#[test]
fn pins_go_unicast_to_the_standby_candidates_and_all_continue() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    let pins: Vec<StickyEntry> = (0..10_000u32)
        .map(|i| StickyEntry {
            port: 9090,
            client: Ipv4Addr::from(0x0a80_0000 + i),
            mark: mark_of(if i % 2 == 0 { B } else { C }),
            expires_ms: 290_000,
        })
        .collect();
    let t1 = t0 + 3 * SEC + Duration::from_millis(50);
    nodes[0].set_pins(t1, &pins);
    // One period later every candidate holds every pin (a catch-up cycle), and no
    // announcement carries a pin or is larger than a few hundred bytes.
    let mut a = nodes.remove(0);
    a.handle_timeout(t0 + 4 * SEC);
    let sent: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
    let broadcast: Vec<&Transmit> = sent
        .iter()
        .filter(|t| t.dst == membership::BROADCAST)
        .collect();
    assert_eq!(broadcast.len(), 1);
    assert!(
        broadcast[0].payload.len() < 512,
        "{} bytes",
        broadcast[0].payload.len()
    );
    let lb_id = a.cfg.lb_id;
    match membership::decode(&broadcast[0].payload, lb_id, None) {
        Ok((_, Message::Announcement(x))) => assert!(x.assignments.is_empty()),
        other => panic!("{other:?}"),
    }
    for t in &sent {
        assert!(
            t.payload.len() + 20 <= 1500,
            "{} bytes: fragmented",
            t.payload.len()
        );
        for n in nodes.iter_mut().filter(|n| n.cfg.self_addr == t.dst) {
            n.handle_datagram(t0 + 4 * SEC, A, &t.payload);
        }
    }
    for n in &nodes {
        assert_eq!(n.pins_held(), 10_000, "{}", n.cfg.name);
        assert!(n.pins_age(t0 + 4 * SEC).is_some());
    }
    assert_eq!(a.pins_held(), 10_000);
    nodes.insert(0, a);
    nodes[1].set_role(t0 + 6 * SEC, true);
    let d = nodes[1].poll_desired().expect("director data path");
    let preload = &director_state(&d).sticky_preload;
    assert_eq!(preload.len(), 10_000, "every pin continues");
    // a node of priority 0 is no candidate: it gets no pins
    let mut p0 = cfg("z", Ipv4Addr::new(10, 9, 0, 9));
    p0.priority = 0;
    let mut z = Cluster::new(p0);
    z.handle_local_load(load());
    z.handle_startup(t0);
    let mut lan = vec![nodes.remove(1), z];
    run(&mut lan, &[true; 2], t0 + 6 * SEC, t0 + 9 * SEC);
    assert_eq!(lan[1].pins_held(), 0);
}

#[test]
fn a_new_director_continues_the_replicated_pins_to_surviving_nodes() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    // The kernel's pins on A: clients on B, C and A itself, with 290 s left of 300.
    let pin = |client: u8, node: Ipv4Addr| StickyEntry {
        client: Ipv4Addr::new(10, 9, 1, client),
        port: 9090,
        mark: mark_of(node),
        expires_ms: 290_000,
    };
    let t1 = t0 + 3 * SEC + Duration::from_millis(100);
    nodes[0].set_pins(t1, &[pin(1, B), pin(2, C), pin(3, A)]);
    run(&mut nodes, &[true; 3], t1, t1 + SEC);
    assert_eq!(nodes[1].pins_held(), 3, "B holds A's pins");
    // A crashes; VRRP makes B master three seconds later.
    let t2 = t1 + 3 * SEC;
    while nodes[1].poll_desired().is_some() {}
    nodes[1].set_role(t2, true);
    let d = nodes[1].poll_desired().expect("director data path");
    let s = director_state(&d);
    assert_eq!(
        s.nodes,
        vec![C],
        "C stays in the pool before its first report to B"
    );
    let mut clients: Vec<_> = s
        .sticky_preload
        .iter()
        .map(|e| (e.client, e.node()))
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        vec![
            (Ipv4Addr::new(10, 9, 1, 1), B),
            (Ipv4Addr::new(10, 9, 1, 2), C)
        ],
        "pins to surviving nodes continue; the dead director's own clients do not"
    );
    // Ages carry over (never later than A's kernel: 290 s from t1, 3 s ago).
    let left = s.sticky_preload[0].expires_ms;
    assert!((285_500..=287_000).contains(&left), "{left}");
    // Loaded once: after the data path confirms, the preload is gone for good.
    nodes[1].preload_applied();
    assert!(
        nodes[1].poll_desired().is_none(),
        "no second apply for the preload"
    );
    nodes[1].handle_timeout(t2 + SEC);
    if let Some(d) = nodes[1].poll_desired() {
        assert!(director_state(&d).sticky_preload.is_empty());
    }
    // The new director holds them as its own, without reading its kernel first.
    assert_eq!(nodes[1].pins_held(), 2);
}

#[test]
fn a_standby_stages_its_pins_so_a_takeover_loads_only_the_rest() {
    let t0 = Instant::now();
    let pin = |client: u8, node: Ipv4Addr| StickyEntry {
        client: Ipv4Addr::new(10, 9, 1, client),
        port: 9090,
        mark: mark_of(node),
        expires_ms: 290_000,
    };
    for fail in [false, true] {
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        let t1 = t0 + 3 * SEC + Duration::from_millis(100);
        nodes[0].set_pins(t1, &[pin(1, B), pin(2, C), pin(3, A)]);
        run(&mut nodes, &[true; 3], t1, t1 + SEC);
        // B's data path gets the three, once: a second look finds nothing new.
        let b = &mut nodes[1];
        let (id, stage) = b.pins_to_stage(t1 + SEC).expect("a stage");
        let mut got: Vec<_> = stage.upserts.iter().map(|e| e.client).collect();
        got.sort();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(stage.removed.is_empty());
        assert_eq!(stage.timeout_ms, 300_000);
        assert!(b.pins_to_stage(t1 + SEC).is_none(), "cost by change");
        b.stage_done(t1 + SEC, id, !fail);
        if fail {
            // A failed stage: after the pause, every held pin again.
            assert!(b.pins_to_stage(t1 + 2 * SEC).is_none(), "paused");
            let (_, again) = b.pins_to_stage(t1 + 12 * SEC).expect("a whole stage");
            assert_eq!(again.upserts.len(), 3);
        }
        // A crashes; B takes over.
        while b.poll_desired().is_some() {}
        b.set_role(t1 + 13 * SEC, true);
        let d = b.poll_desired().expect("director data path");
        let s = director_state(&d);
        let void: Vec<_> = s.sticky_void.iter().map(|e| e.client).collect();
        assert_eq!(void, [Ipv4Addr::new(10, 9, 1, 3)], "A's own client goes");
        if fail {
            // The whole stage was never confirmed: everything is loaded as before.
            assert_eq!(s.sticky_preload.len(), 2);
        } else {
            assert!(s.sticky_preload.is_empty(), "staged: nothing to load");
        }
        assert_eq!(b.pins_held(), 2, "it directs the two surviving pins");
        b.preload_applied();
        assert!(b.poll_desired().is_none());
    }
}

#[test]
fn other_lb_ids_are_ignored_and_counted() {
    let t0 = Instant::now();
    let mut d = node("a", A, t0);
    d.set_role(t0, true);
    let mut other = Cluster::new(ClusterConfig {
        lb_id: 52,
        ..cfg("x", B)
    });
    other.handle_local_load(load());
    other.handle_startup(t0);
    let a = Announcement {
        director: B,
        epoch: 1,
        members: Vec::new(),
        table_version: 0,
        page: 0,
        pages: 1,
        assignments: Vec::new(),
    };
    let bytes = membership::encode(&Message::Announcement(a), 52, None).unwrap_or_default();
    other.handle_datagram(t0, B, &bytes);
    d.handle_datagram(t0, B, &bytes);
    assert_eq!(d.counters()["discard_other_lb_id"], 1);
    let r = membership::encode(&Message::Report(other.report()), 52, None).unwrap_or_default();
    d.handle_datagram(t0, B, &r);
    assert_eq!(d.counters()["discard_other_lb_id"], 2);
    assert_eq!(
        d.nodes(Instant::now()).len(),
        1,
        "no member from another group"
    );
}

#[test]
fn messages_signed_with_another_key_are_dropped_and_counted() {
    let t0 = Instant::now();
    let keyed = |name: &str, addr, key: &[u8]| {
        let mut c = Cluster::new(ClusterConfig {
            auth_key: Some(key.to_vec()),
            ..cfg(name, addr)
        });
        c.handle_local_load(load());
        c.handle_startup(t0);
        c
    };
    let mut nodes = vec![
        keyed("a", A, b"0123456789abcdef"),
        keyed("b", B, b"0123456789abcdef"),
        keyed("c", C, b"another-key-0000"),
    ];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    let members: Vec<Ipv4Addr> = nodes[0]
        .nodes(Instant::now())
        .iter()
        .map(|n| n.address)
        .collect();
    assert_eq!(members, vec![A, B], "C signs with another key");
    assert!(nodes[2].counters()["discard_auth"] > 0);
    assert_eq!(nodes[2].director(), None);
}

#[test]
fn priority_zero_never_directs() {
    let t0 = Instant::now();
    let mut c = Cluster::new(ClusterConfig {
        priority: 0,
        ..cfg("s", C)
    });
    c.handle_startup(t0);
    c.set_role(t0, true);
    assert!(!c.is_director());
    assert!(matches!(
        c.poll_desired().map(|d| d.role),
        Some(Role::Scanning { .. })
    ));
}

#[test]
fn roles_follow_vrrp_and_the_data_path_changes_only_on_change() {
    let t0 = Instant::now();
    let mut c = node("a", A, t0);
    assert!(matches!(
        c.poll_desired().map(|d| d.role),
        Some(Role::Scanning { director: None, .. })
    ));
    c.handle_timeout(t0);
    assert_eq!(c.poll_desired(), None, "nothing changed");
    c.set_role(t0, true);
    let d = c.poll_desired().expect("director data path");
    assert_eq!(director_state(&d).pools[0].buckets.len(), 300);
    assert!(
        director_state(&d).pools[0]
            .buckets
            .iter()
            .all(|b| b.is_none()),
        "alone: all local"
    );
    assert_eq!(
        c.poll_transmit().map(|t| t.dst),
        Some(membership::BROADCAST),
        "announces at once"
    );
    c.handle_timeout(t0 + SEC);
    assert_eq!(c.poll_desired(), None, "same table");
    c.set_role(t0 + SEC, false);
    assert!(matches!(
        c.poll_desired().map(|d| d.role),
        Some(Role::Scanning { director: None, .. })
    ));
    assert!(c.nodes(Instant::now()).iter().all(|n| n.role == "scanning"));
}

#[test]
fn a_node_not_listening_gets_no_buckets_but_stays_a_member() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
    nodes[1].handle_local_load(LocalLoad {
        listening: [(9090, false)].into_iter().collect(),
        ..load()
    });
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 2], t0, t0 + 3 * SEC);
    assert_eq!(nodes[0].table(9090).counts().get(&B), None);
    let st = nodes[0].nodes(Instant::now());
    assert_eq!(st.len(), 2);
    assert!(!st[1].healthy);
    while let Some(d) = nodes[0].poll_desired() {
        assert!(
            director_state(&d).pools[0]
                .buckets
                .iter()
                .all(|b| b.is_none())
        );
    }
}

#[test]
fn a_draining_node_gets_no_new_buckets_but_keeps_its_pins_forwarded() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
    assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&100));
    while nodes[0].poll_desired().is_some() {}
    let t1 = t0 + 3 * SEC + Duration::from_millis(50);
    nodes[1].set_draining(t1, true);
    assert!(nodes[1].is_draining());
    // The report, and the candidacy that rides with every report.
    let sent: Vec<Transmit> = std::iter::from_fn(|| nodes[1].poll_transmit()).collect();
    assert_eq!(sent.len(), 2, "the report goes out at once: {sent:?}");
    assert_eq!(sent[0].payload[6], membership::TYPE_REPORT);
    assert_eq!(sent[1].payload[6], membership::TYPE_HANDOVER);
    nodes[0].handle_datagram(t1, B, &sent[0].payload);
    assert_eq!(
        nodes[0].table(9090).counts().get(&B),
        None,
        "no new clients"
    );
    let d = nodes[0].poll_desired().expect("a new table");
    let s = director_state(&d);
    assert!(
        s.nodes.contains(&B),
        "pinned clients are still forwarded to B"
    );
    assert!(!s.pools[0].buckets.contains(&Some(B)));
    let st = nodes[0].nodes(Instant::now());
    let b = st.iter().find(|n| n.address == B).expect("B still listed");
    assert_eq!((b.weight, b.share), (0.0, 0.0));
    // It stays out while draining, and comes back on undrain.
    run(&mut nodes, &[true; 3], t1, t1 + 3 * SEC);
    assert_eq!(nodes[0].table(9090).counts().get(&B), None);
    let t2 = t1 + 3 * SEC + Duration::from_millis(50);
    nodes[1].set_draining(t2, false);
    run(&mut nodes, &[true; 3], t2, t2 + SEC);
    assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&100));
}

#[test]
fn a_draining_director_keeps_directing_but_serves_no_new_clients_itself() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 2], t0, t0 + 2 * SEC);
    nodes[0].set_draining(t0 + 2 * SEC, true);
    assert!(nodes[0].is_director());
    assert_eq!(nodes[0].table(9090).counts().get(&A), None);
    assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&300));
}

#[test]
fn reconfigure_in_place_keeps_members_and_table() {
    let t0 = Instant::now();
    let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
    nodes[0].set_role(t0, true);
    run(&mut nodes, &[true; 2], t0, t0 + 2 * SEC);
    let table = nodes[0].table(9090).table().to_vec();
    while nodes[0].poll_desired().is_some() {}
    let mut c = cfg("a", A);
    c.sticky_idle_s = 60;
    assert!(nodes[0].reconfigure(t0 + 2 * SEC, c));
    assert_eq!(nodes[0].table(9090).table(), &table[..], "no client moves");
    assert_eq!(nodes[0].nodes(Instant::now()).len(), 2, "members stay");
    let d = nodes[0].poll_desired().expect("new sticky timeout");
    assert_eq!(director_state(&d).sticky_idle_s, 60);
    // Another address or group is a new core, not a reconfiguration.
    assert!(!nodes[0].reconfigure(t0, cfg("a", C)));
    assert!(!nodes[0].reconfigure(
        t0,
        ClusterConfig {
            lb_id: 9,
            ..cfg("a", A)
        }
    ));
    // Priority 0: the director steps down to the scanning data path.
    let c = ClusterConfig {
        priority: 0,
        ..cfg("a", A)
    };
    assert!(nodes[0].reconfigure(t0 + 2 * SEC, c));
    assert!(!nodes[0].is_director());
    assert!(matches!(
        nodes[0].poll_desired().map(|d| d.role),
        Some(Role::Scanning { .. })
    ));
}

/// The preempt hold's verdict for a returning higher-priority node (b) that hears a lower
/// master: wait for the director's announcement (at most the grace), then for a complete
/// copy of its pins.
#[test]
fn a_returning_candidate_may_preempt_once_it_holds_the_directors_pins() {
    let t0 = Instant::now();
    let grace = SEC * ANNOUNCE_GRACE_PERIODS;
    let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
    let b = &nodes[1];
    assert_eq!(
        b.preempt_ready(t0, None),
        PreemptReady::AwaitingAnnouncement
    );
    assert_eq!(
        b.preempt_ready(t0 + grace - Duration::from_millis(1), Some(t0)),
        PreemptReady::AwaitingAnnouncement
    );
    assert_eq!(
        b.preempt_ready(t0 + grace, Some(t0)),
        PreemptReady::NoDirector,
        "no announcement within the grace: the master directs nothing"
    );
    nodes[0].set_role(t0, true);
    // a's announcement is out, its pins page not yet delivered.
    while let Some(t) = nodes[0].poll_transmit() {
        if matches!(
            membership::decode(&t.payload, nodes[0].cfg.lb_id, None).map(|(_, m)| m),
            Ok(Message::Announcement(_))
        ) {
            nodes[1].handle_datagram(t0, A, &t.payload);
        }
    }
    assert_eq!(
        nodes[1].preempt_ready(t0, Some(t0)),
        PreemptReady::CopyPending
    );
    run(&mut nodes, &[true, true], t0, t0 + 3 * SEC);
    assert_eq!(
        nodes[1].preempt_ready(t0 + 3 * SEC, Some(t0)),
        PreemptReady::Yes
    );
    assert_eq!(
        nodes[0].preempt_ready(t0, None),
        PreemptReady::Yes,
        "the director itself"
    );
}
