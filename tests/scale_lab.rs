//! Pin replication at scale in a network-namespace lab (the scale issue): pins go unicast to
//! the standby candidates, by change; the broadcast stays small; a new director continues
//! every replicated pin. Three proxyha nodes (99, 89, 79: two standby candidates) redirect
//! VIP:9090; 20,000 pins are injected into the director's kernel maps as its data path would
//! create them for new clients. Root or a loud SKIP (a failure under
//! `PROXYHA_REQUIRE_ROOT_TESTS=1`); teardown by guard, also on panic.
//!
//! ```text
//! sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --release --test scale_lab -- --nocapture
//! ```

use std::time::{Duration, Instant};

use proxyha::dataplane::{Dataplane, NftDataplane, NftOptions, PinReads};
use proxyha::wire::membership::{self, Message};
use proxyha_lab::{self as lab, AdvertWatch, Daemon, Host, Lab, VrrpOpts};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");
const PORT: u16 = 9090;
const PINS: u32 = 20_000;

struct Group {
    lab: Lab,
    nodes: Vec<Host>,
    daemons: Vec<Daemon>,
    client: Host,
}

fn group(test: &str) -> Option<Group> {
    if !lab::require_root(test) {
        return None;
    }
    let mut lab = Lab::new()
        .expect("creating the lab bridge namespace")
        .with_proxyha(BIN);
    let (client, nodes) = lab
        .add_client_and_nodes(3)
        .expect("adding the client and node namespaces");
    for h in &nodes {
        h.serve_peer(PORT).expect("starting the peer server");
    }
    let daemons = nodes
        .iter()
        .zip([99u8, 89, 79])
        .map(|(h, p)| {
            lab.start_proxyha(h, &VrrpOpts::new(p, 1000).redirects(&[PORT]))
                .expect("starting proxyha")
        })
        .collect();
    let g = Group {
        lab,
        nodes,
        daemons,
        client,
    };
    let ok = lab::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let s = g.status(0);
        let n = s.0["nodes"].as_array().map_or(0, |a| a.len());
        (s.state() == "master" && n == 3).then_some(())
    });
    if ok.is_none() {
        g.lab.dump_logs(40);
        panic!("n1 did not direct three nodes: {}", g.status(0).0);
    }
    Some(g)
}

impl Group {
    fn status(&self, i: usize) -> lab::Status {
        lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
            self.lab.status(&self.daemons[i]).ok()
        })
        .unwrap_or_else(|| panic!("status of {} failed", self.nodes[i].name))
    }

    fn pins(&self, i: usize) -> u64 {
        self.status(i).0["pins"].as_u64().unwrap_or(0)
    }
}

#[test]
fn pins_replicate_unicast_by_change_and_a_new_director_continues_them() {
    let Some(g) = group("pins_replicate_unicast") else {
        return;
    };
    let watch = AdvertWatch::start_membership(&g.client).expect("watching protocol 253");
    // Every candidate has caught up with the (empty) set; then the pins appear.
    std::thread::sleep(Duration::from_secs(2));
    watch.drain();
    let nodes = [g.nodes[1].addr, g.nodes[2].addr];
    let pins = lab::pins::pins(PINS, PORT, &nodes, Duration::from_secs(290));
    let took = lab::pins::inject(&g.nodes[0], &pins, Duration::from_secs(300), g.lab.dir())
        .expect("injecting pins");
    let t = Instant::now();
    let held = lab::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (g.pins(1) >= u64::from(PINS) && g.pins(2) >= u64::from(PINS)).then(|| t.elapsed())
    });
    let Some(held) = held else {
        g.lab.dump_logs(30);
        panic!(
            "the standbys hold {} and {} of {PINS} pins 10 s after injection",
            g.pins(1),
            g.pins(2)
        );
    };
    println!(
        "{PINS} pins injected (nft -f, {took:?}); both standbys held all {held:?} later; director \
         counts {}",
        g.pins(0)
    );
    assert_eq!(
        g.pins(0),
        u64::from(PINS),
        "the director learned them from its fresh map"
    );
    // Two more seconds of watching: the client (no member) sees only small broadcasts.
    std::thread::sleep(Duration::from_secs(2));
    let seen = watch.collect_from(g.nodes[0].addr, Duration::from_millis(100));
    let mut broadcasts = 0;
    for a in &seen {
        let dst = std::net::Ipv4Addr::new(
            a.datagram[16],
            a.datagram[17],
            a.datagram[18],
            a.datagram[19],
        );
        let ihl = usize::from(a.datagram[0] & 0x0f) * 4;
        let payload = &a.datagram[ihl..];
        match membership::decode(payload, 51, None) {
            Ok((_, Message::Announcement(x))) => {
                assert!(x.assignments.is_empty(), "an announcement with pins");
                assert!(
                    payload.len() < 512,
                    "announcement of {} bytes",
                    payload.len()
                );
                assert_eq!(dst, membership::BROADCAST);
                broadcasts += 1;
            }
            Ok((_, Message::Pins(_))) => panic!("pins reached the client ({dst})"),
            _ => {}
        }
    }
    assert!(broadcasts >= 3, "{broadcasts} announcements in 4 s");
    let s = g.status(0);
    let sent = s.counter("membership_tx_pins_bytes");
    println!(
        "announcements seen by the client: {broadcasts}, none with pins; pins sent unicast: {} \
         messages, {sent} bytes",
        s.counter("membership_tx_pins")
    );
    // The director crashes: n2 takes over with every pin.
    let t = Instant::now();
    g.lab.crash(&g.daemons[0]).expect("crashing n1");
    let took = lab::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let s = g.status(1);
        (s.state() == "master" && s.vip_owner()).then(|| t.elapsed())
    });
    let took = took.unwrap_or_else(|| panic!("n2 did not take over: {}", g.status(1).0));
    let log = std::fs::read_to_string(&g.daemons[1].log).unwrap_or_default();
    let continuing = log
        .lines()
        .find(|l| l.contains("client assignments of the previous director"))
        .unwrap_or_else(|| panic!("n2 did not continue the pins:\n{log}"));
    println!("n2 master and VIP owner {took:?} after the crash; {continuing}");
    // n2 had staged them in its own map as they came: nothing (or the last period's few)
    // to load at the takeover.
    assert!(continuing.contains("staged in the kernel"), "{continuing}");
    let in_kernel = NftDataplane::new(NftOptions {
        netns: Some(format!("/run/netns/{}", g.nodes[1].ns).into()),
        ..NftOptions::default()
    })
    .read_pins(&PinReads {
        full: true,
        ..PinReads::default()
    })
    .expect("reading n2's sticky map")
    .full
    .unwrap_or_default();
    let ours = in_kernel.iter().filter(|e| e.port == PORT).count();
    println!(
        "n2's kernel map after the takeover: {} pins ({ours} injected)",
        in_kernel.len()
    );
    assert!(
        ours >= PINS as usize,
        "every injected pin is in the new director's kernel map: {ours} of {PINS}"
    );
    assert_eq!(
        g.pins(1),
        u64::from(PINS),
        "the new director holds every pin"
    );
}
