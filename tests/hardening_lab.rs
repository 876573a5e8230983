//! Hardening in the network-namespace lab (issue 12): unicast VRRP where the bridge drops
//! multicast, with proxyha alone and against keepalived 2.2.7 (`unicast_peer`), a rogue
//! priority-255 advert from the client namespace, and forged and replayed membership
//! messages.
//!
//! Root only (a loud SKIP otherwise; `PROXYHA_REQUIRE_ROOT_TESTS=1` turns it into a failure):
//!
//! ```text
//! sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --test hardening_lab
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use proxyha::wire::{membership, vrrp};
use proxyha_lab::{self as lab, AdvertWatch, Daemon, Host, Kind, Lab, Prober, Status, VrrpOpts};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");
/// Slack on top of the RFC timers for a takeover (scheduling, the client's 10 ms probe).
const SLACK: Duration = Duration::from_millis(300);
const KEY: &str = "lab-group-key-0123456789";

struct Cluster {
    lab: Lab,
    nodes: Vec<Host>,
    client: Host,
    prober: Prober,
}

/// Nodes n1.. (octets 11..) answering their name on the echo port, a client (octet 50)
/// probing VIP:echo every 10 ms. `None` when skipped for lack of root.
fn cluster(test: &str, count: usize) -> Option<Cluster> {
    if !lab::require_root(test) {
        return None;
    }
    let mut lab = Lab::new()
        .expect("creating the lab bridge namespace")
        .with_proxyha(BIN);
    let (client, nodes) = lab
        .add_client_and_nodes(count)
        .expect("adding the lab hosts");
    for h in &nodes {
        h.serve_name(lab::ECHO_PORT)
            .expect("starting the name server on a node");
    }
    let prober = Prober::start(&client, SocketAddrV4::new(lab.vip(), lab::ECHO_PORT))
        .expect("starting the client probe");
    Some(Cluster {
        lab,
        nodes,
        client,
        prober,
    })
}

impl Cluster {
    fn addrs(&self) -> Vec<Ipv4Addr> {
        self.nodes.iter().map(|h| h.addr).collect()
    }

    fn status(&self, d: &Daemon) -> Status {
        let mut last = None;
        lab::wait_for(
            Duration::from_secs(3),
            Duration::from_millis(50),
            || match self.lab.status(d) {
                Ok(s) => Some(s),
                Err(e) => {
                    last = Some(e);
                    None
                }
            },
        )
        .unwrap_or_else(|| panic!("status of {}: {last:?}", d.host.name))
    }

    fn wait_sole_holder(&self, who: &str, limit: Duration, what: &str) {
        let mut seen = Vec::new();
        let ok = lab::wait_for(limit, Duration::from_millis(10), || {
            seen = self.lab.vip_holders();
            (seen == [who]).then_some(())
        });
        if ok.is_none() {
            self.lab.dump_logs(30);
            panic!(
                "{what}: expected only {who} to hold the VIP within {limit:?}, holders {seen:?}"
            );
        }
    }

    /// The delay from `after` to the client's first answer from `who` through the VIP.
    fn wait_answer(&self, who: &str, after: Instant, bound: Duration, what: &str) -> Duration {
        let s = self
            .prober
            .wait_answer(who, after, bound + Duration::from_millis(500))
            .unwrap_or_else(|| {
                self.lab.dump_logs(30);
                panic!(
                    "{what}: no answer from {who} via the VIP; holders {:?}",
                    self.lab.vip_holders()
                )
            });
        let took = s.end - after;
        println!("{what}: {who} answers after {} ms", took.as_millis());
        assert!(
            took <= bound,
            "{what}: {who} answered after {took:?}, bound {bound:?}"
        );
        took
    }

    /// proxyha on the first nodes, one priority each, `opts` giving each its settings.
    fn start_all(&self, prios: &[u8], opts: impl Fn(u8) -> VrrpOpts) -> Vec<Daemon> {
        self.nodes
            .iter()
            .zip(prios)
            .map(|(h, p)| {
                self.lab
                    .start_proxyha(h, &opts(*p))
                    .expect("starting proxyha")
            })
            .collect()
    }

    /// Every discard counter of a proxyha node that is not zero.
    fn discards(&self, d: &Daemon) -> Vec<(String, u64)> {
        self.status(d).0["counters"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| k.starts_with("discard_") && v.as_u64() != Some(0))
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect()
    }
}

fn lines(d: &Daemon, needle: &str) -> usize {
    d.log_text().lines().filter(|l| l.contains(needle)).count()
}

/// Multicast and broadcast dropped by the bridge: three proxyha nodes in multicast mode all
/// become master (keepalived #1440's symptom, and proof the drop works); a reload to
/// unicast peers leaves one master at once, with the VIP where it belongs; then crash and
/// SIGTERM failovers.
#[test]
fn a_unicast_three_where_multicast_is_dropped() {
    let Some(c) = cluster("a_unicast_three_where_multicast_is_dropped", 3) else {
        return;
    };
    c.lab
        .drop_multicast(true)
        .expect("dropping multicast on the bridge");
    let interval = 100;
    let prios = [99u8, 89, 79];
    let d = c.start_all(&prios, |p| VrrpOpts::new(p, interval));
    let all_master = lab::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        (c.lab.vip_holders().len() == 3).then_some(())
    });
    assert!(
        all_master.is_some(),
        "multicast dropped: every node should think it is alone, holders {:?}",
        c.lab.vip_holders()
    );
    assert!(c.lab.dropped("multicast").expect("nft counters") > 0);
    println!(
        "multicast mode: 3 masters, {} adverts dropped",
        c.lab.dropped("multicast").unwrap_or(0)
    );

    // Unicast peers, by reload: no restart, the one with the highest priority keeps the VIP.
    let peers = c.addrs();
    let t = Instant::now();
    for (i, h) in c.nodes.iter().enumerate() {
        c.lab
            .write_proxyha_config(h, &VrrpOpts::new(prios[i], interval).unicast(&peers))
            .expect("writing the unicast config");
        let out = c
            .lab
            .proxyha_ctl_ok(&d[i], &["reload"])
            .expect("proxyha reload");
        assert!(
            out.contains("unicast_peers"),
            "reload names the change: {out}"
        );
    }
    c.wait_sole_holder("n1", Duration::from_secs(2), "unicast after reload");
    println!(
        "unicast: one master {} ms after the reloads",
        t.elapsed().as_millis()
    );
    let dropped = c.lab.dropped("multicast").unwrap_or(0);
    for (i, x) in d.iter().enumerate() {
        let s = c.status(x);
        let want: Vec<String> = peers
            .iter()
            .filter(|p| **p != c.nodes[i].addr)
            .map(|p| p.to_string())
            .collect();
        let got: Vec<String> = s.0["unicast_peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        assert_eq!(got, want, "{}: status lists its unicast peers", x.host.name);
        assert_eq!(s.master(), Some(c.nodes[0].addr), "{}", x.host.name);
        assert_eq!(c.discards(x), vec![], "{}: nothing discarded", x.host.name);
    }
    let table = c.lab.status_table(&d[1]).expect("status table");
    assert!(table.contains("unicast to"), "{table}");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.lab.dropped("multicast").unwrap_or(0),
        dropped,
        "in unicast mode nothing is sent to 224.0.0.18"
    );

    // Crash of the master: n2 within its Master_Down_Interval.
    let o2 = VrrpOpts::new(89, interval);
    let t = Instant::now();
    c.lab.crash(&d[0]).expect("crashing n1");
    c.wait_answer(
        "n2",
        t,
        o2.master_down_interval() + SLACK,
        "unicast crash of n1",
    );
    c.wait_sole_holder("n2", Duration::from_secs(1), "after the crash");

    // SIGTERM of the new master: its priority-0 adverts reach n3 by unicast.
    let o3 = VrrpOpts::new(79, interval);
    let t = Instant::now();
    c.lab.terminate(&d[1]).expect("SIGTERM to n2");
    c.wait_answer("n3", t, o3.skew_time() + SLACK, "unicast SIGTERM of n2");
    c.wait_sole_holder("n3", Duration::from_secs(1), "after SIGTERM");
    assert!(c.lab.wait_exit(d[1].pid, Duration::from_secs(5)).is_some());
    let s3 = c.status(&d[2]);
    assert_eq!(s3.state(), "master");
    assert!(s3.counter("rx_priority_zero") >= 1, "n3 heard n2 resign");
}

/// One proxyha and one keepalived 2.2.7 with `unicast_peer`, `first` on n1 (priority 99),
/// multicast dropped: election, SIGTERM and crash failovers, preemption in between.
fn keepalived_unicast(test: &str, first: Kind) {
    let Some(c) = cluster(test, 2) else { return };
    c.lab.drop_multicast(true).expect("dropping multicast");
    let second = match first {
        Kind::Proxyha => Kind::Keepalived,
        Kind::Keepalived => Kind::Proxyha,
    };
    let peers = c.addrs();
    let interval = 1000;
    let o1 = VrrpOpts::new(99, interval).unicast(&peers);
    let o2 = VrrpOpts::new(89, interval).unicast(&peers);
    let what = format!(
        "unicast {} (99) vs {} (89)",
        first.as_str(),
        second.as_str()
    );
    // n1 first, as in vrrp_lab's interop test (keepalived's start-up race at equal starts).
    let t0 = Instant::now();
    let mut d1 = c.lab.start(first, &c.nodes[0], &o1).expect("starting n1");
    thread::sleep(Duration::from_millis(500));
    let d2 = c.lab.start(second, &c.nodes[1], &o2).expect("starting n2");
    c.wait_sole_holder(
        "n1",
        o1.master_down_interval() + Duration::from_secs(1),
        &format!("{what}: election"),
    );
    c.wait_answer(
        "n1",
        t0,
        o1.master_down_interval() + Duration::from_secs(2),
        &format!("{what}: election"),
    );
    let proxyha = |d1: &Daemon| {
        if first == Kind::Proxyha {
            d1.clone()
        } else {
            d2.clone()
        }
    };
    let want = if first == Kind::Proxyha {
        "master"
    } else {
        "backup"
    };
    let ok = lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let s = c.status(&proxyha(&d1));
        (s.state() == want && s.master() == Some(c.nodes[0].addr)).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: proxyha should be {want}: {:?}",
        c.status(&proxyha(&d1)).0
    );

    // SIGTERM of n1: priority 0 by unicast, n2 after its Skew_Time.
    let t = Instant::now();
    c.lab.terminate(&d1).expect("SIGTERM to n1");
    c.wait_answer(
        "n2",
        t,
        o2.skew_time() + SLACK + Duration::from_millis(200),
        &format!("{what}: SIGTERM of n1"),
    );
    assert!(c.lab.wait_exit(d1.pid, Duration::from_secs(5)).is_some());
    c.wait_sole_holder(
        "n2",
        Duration::from_secs(2),
        &format!("{what}: after SIGTERM"),
    );

    // n1 back: preemption.
    let t = Instant::now();
    d1 = c.lab.start(first, &c.nodes[0], &o1).expect("restarting n1");
    c.wait_answer(
        "n1",
        t,
        o1.master_down_interval() + Duration::from_secs(1),
        &format!("{what}: preemption"),
    );
    c.wait_sole_holder(
        "n1",
        Duration::from_secs(2),
        &format!("{what}: after preemption"),
    );

    if first == Kind::Proxyha {
        let s = c.status(&d1);
        assert_eq!(s.state(), "master", "{what}: proxyha preempted");
        assert!(
            s.counter("rx_adverts") > 0,
            "{what}: proxyha heard keepalived"
        );
        assert_eq!(
            c.discards(&d1),
            vec![],
            "{what}: keepalived's unicast adverts all accepted"
        );
    }

    // Crash of n1: n2 after its Master_Down_Interval.
    let t = Instant::now();
    c.lab.crash(&d1).expect("crashing n1");
    c.wait_answer(
        "n2",
        t,
        o2.master_down_interval() + SLACK,
        &format!("{what}: crash of n1"),
    );
    c.wait_sole_holder(
        "n2",
        Duration::from_secs(2),
        &format!("{what}: after the crash"),
    );

    // proxyha understood every keepalived advert (n2 is alive; n1 was restarted).
    let pd = if second == Kind::Proxyha { &d2 } else { &d1 };
    if second == Kind::Proxyha {
        let s = c.status(pd);
        assert_eq!(s.state(), "master", "{what}: proxyha took over");
        assert!(
            s.counter("rx_adverts") > 0,
            "{what}: proxyha heard keepalived"
        );
        assert_eq!(
            c.discards(pd),
            vec![],
            "{what}: keepalived's unicast adverts all accepted"
        );
    }
    println!(
        "{what}: VRRP multicast dropped by the bridge: {}",
        c.lab.dropped("multicast").unwrap_or(0)
    );
}

#[test]
fn b_unicast_proxyha_master_keepalived_backup() {
    keepalived_unicast("b_unicast_proxyha_master_keepalived_backup", Kind::Proxyha);
}

#[test]
fn b_unicast_keepalived_master_proxyha_backup() {
    keepalived_unicast(
        "b_unicast_keepalived_master_proxyha_backup",
        Kind::Keepalived,
    );
}

/// A host on the segment that is not a node sends priority 255 every 100 ms, to the group
/// and to each node: with `ha.vrrp_sources` the VIP stays, each advert is counted as
/// `discard_source`, and each node logs the sender once.
#[test]
fn c_rogue_priority_255_cannot_take_the_vip() {
    let Some(c) = cluster("c_rogue_priority_255_cannot_take_the_vip", 3) else {
        return;
    };
    let sources = c.addrs();
    let interval = 100;
    let d = c.start_all(&[99, 89, 79], |p| {
        VrrpOpts::new(p, interval).sources(&sources)
    });
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    let before = c.status(&d[0]).counter("became_master");
    let rogue = c.client.addr;
    let vip = c.lab.vip();
    let advert = |dst: Ipv4Addr| {
        let payload = vrrp::Repr::new(
            vrrp::Version::V3,
            51,
            255,
            Duration::from_millis(100),
            vec![vip],
        )
        .expect("valid advert")
        .to_bytes(vrrp::ChecksumMode::PseudoHeader, rogue, dst);
        lab::datagram(rogue, dst, 255, vrrp::PROTOCOL, &payload)
    };
    let rounds = 20;
    for _ in 0..rounds {
        lab::inject(&c.client, advert(vrrp::MULTICAST_GROUP)).expect("rogue multicast advert");
        for h in &c.nodes {
            lab::inject(&c.client, advert(h.addr)).expect("rogue unicast advert");
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    c.wait_sole_holder(
        "n1",
        Duration::from_millis(100),
        "after the rogue's adverts",
    );
    assert_eq!(
        c.status(&d[0]).counter("became_master"),
        before,
        "n1 never left master"
    );
    for x in &d {
        let s = c.status(x);
        assert!(
            s.counter("discard_source") >= 2 * rounds,
            "{}: discard_source {} (multicast and unicast, {rounds} rounds)",
            x.host.name,
            s.counter("discard_source")
        );
        assert_eq!(s.master(), Some(c.nodes[0].addr), "{}", x.host.name);
        let logged = lines(
            x,
            &format!("discarding advert from {rogue}: not in ha.vrrp_sources"),
        );
        assert_eq!(logged, 1, "{}: the rogue is logged once", x.host.name);
    }
    println!(
        "rogue: {} adverts from {rogue} discarded on n1, VIP stayed",
        c.status(&d[0]).counter("discard_source")
    );
}

/// Load sharing with `auth_key`, the bridge a hub (so the client sees reports too): every
/// captured report and announcement replayed from the client is discarded as a replay,
/// forged ones (wrong key, no key) as unauthenticated; members, the director and the
/// standby's pins are unchanged, and each sender is logged once per reason.
#[test]
fn d_forged_and_replayed_membership_is_refused() {
    let Some(c) = cluster("d_forged_and_replayed_membership_is_refused", 3) else {
        return;
    };
    c.lab.hub().expect("bridge as a hub");
    let port = 9090;
    for h in &c.nodes {
        h.serve_name(port).expect("serving the redirected port");
    }
    let d = c.start_all(&[99, 89, 79], |p| {
        VrrpOpts::new(p, 1000).redirects(&[port]).auth_key(KEY)
    });
    c.wait_sole_holder("n1", Duration::from_secs(6), "election");
    let members = |x: &Daemon| -> Vec<String> {
        let mut m: Vec<String> = c.status(x).0["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["address"].as_str().map(str::to_string))
            .collect();
        m.sort();
        m
    };
    let all: Vec<String> = c.addrs().iter().map(|a| a.to_string()).collect();
    let ok = lab::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        (members(&d[0]) == all).then_some(())
    });
    assert!(ok.is_some(), "all three join: {:?}", members(&d[0]));
    let s = c.status(&d[1]);
    assert_eq!(s.0["membership"], "authenticated");

    // What a host on the segment captures: n1's announcements, n2's reports to n1.
    let watch = AdvertWatch::start_membership(&c.client).expect("watching protocol 253");
    let (n1, n2) = (c.nodes[0].addr, c.nodes[1].addr);
    let announcement = watch
        .next_from(n1, Duration::from_secs(3))
        .expect("an announcement");
    let report = lab::sniff(
        &c.client,
        membership::PROTOCOL,
        n2,
        n1,
        Duration::from_secs(3),
    )
    .expect("sniffing")
    .filter(|d| d.get(20 + 6) == Some(&membership::TYPE_REPORT));
    let report = report.expect("a report from n2 to n1");
    drop(watch);
    let before = |x: &Daemon, k: &str| c.status(x).counter(&format!("membership_{k}"));
    let (replay1, replay2, auth1) = (
        before(&d[0], "discard_replay"),
        before(&d[1], "discard_replay"),
        before(&d[0], "discard_auth"),
    );
    let pins2 = c.status(&d[1]).0["pins"].clone();
    let rounds = 5;
    for _ in 0..rounds {
        lab::inject(&c.client, report.clone()).expect("replaying the report");
        lab::inject(&c.client, announcement.datagram.clone()).expect("replaying the announcement");
    }
    // Forgeries from the client's own address: the captured announcement re-signed with a
    // guessed key, and a report claiming a big idle node, unsigned and mis-signed.
    let (_, msg) = membership::decode(&announcement.datagram[20..], 51, Some(KEY.as_bytes()))
        .expect("the test knows the key");
    let rogue = c.client.addr;
    let forged_report = membership::Message::Report(membership::Report {
        name: "rogue".into(),
        address: rogue,
        capacity: 1000.0,
        cpu_load: 0.0,
        cpu_count: 64,
        connections: vec![],
        ports: vec![membership::PortHealth {
            port,
            listening: true,
            reason: String::new(),
        }],
        config_digest: [0; 32],
        group_config: String::new(),
        software_version: "0.1.0".into(),
        draining: false,
    });
    let fresh = membership::Freshness {
        boot: u64::MAX,
        seq: 1,
    };
    let guessed = Some(&b"guessed-key-000000000000"[..]);
    let forgeries = [
        (
            membership::encode_fresh(&msg, 51, guessed, fresh).unwrap(),
            Ipv4Addr::BROADCAST,
        ),
        (
            membership::encode_fresh(&forged_report, 51, guessed, fresh).unwrap(),
            n1,
        ),
        (membership::encode(&forged_report, 51, None).unwrap(), n1),
    ];
    for _ in 0..rounds {
        for (payload, dst) in &forgeries {
            lab::inject(
                &c.client,
                lab::datagram(rogue, *dst, 64, membership::PROTOCOL, payload),
            )
            .expect("injecting a forgery");
        }
    }
    thread::sleep(Duration::from_millis(1500));
    let n = rounds as u64;
    assert!(
        before(&d[0], "discard_replay") >= replay1 + n,
        "n1: replayed reports discarded: {:?}",
        c.status(&d[0]).0["counters"]
    );
    assert!(
        before(&d[1], "discard_replay") >= replay2 + n,
        "n2: replayed announcements discarded: {:?}",
        c.status(&d[1]).0["counters"]
    );
    assert!(
        before(&d[0], "discard_auth") >= auth1 + 3 * n,
        "n1: forgeries discarded: {:?}",
        c.status(&d[0]).0["counters"]
    );
    assert_eq!(members(&d[0]), all, "no member joined or left");
    assert_eq!(c.status(&d[1]).director(), Some(n1), "n2 still follows n1");
    assert_eq!(
        c.status(&d[1]).0["pins"],
        pins2,
        "no pin injected on the standby"
    );
    let logged = lines(
        &d[0],
        &format!("membership: discarding a message from {rogue}"),
    );
    assert_eq!(logged, 1, "n1 logs the forger once (one reason): {logged}");
    let logged = lines(
        &d[0],
        &format!("membership: discarding a message from {n2}: replayed"),
    );
    assert_eq!(logged, 1, "n1 logs the replays of n2's reports once");
    println!(
        "membership: n1 discarded {} replays and {} forgeries, n2 {} replays",
        before(&d[0], "discard_replay") - replay1,
        before(&d[0], "discard_auth") - auth1,
        before(&d[1], "discard_replay") - replay2
    );
}

/// Long-lived connections from `client` to VIP:`port`, each greeted with its node's name:
/// (stream, node). The exchange goes on in [`exchange`].
fn open_flows(
    client: &Host,
    vip: Ipv4Addr,
    port: u16,
    n: usize,
) -> Vec<(std::net::TcpStream, String)> {
    (0..n)
        .map(|_| {
            lab::clients::greeted(client, vip, port, Duration::from_millis(20))
                .expect("opening a long-lived connection via the VIP")
        })
        .collect()
}

/// One round trip on every flow; the flows that failed (reset, closed or silent).
fn exchange(flows: &[(std::net::TcpStream, String)]) -> Vec<String> {
    use std::io::{Read, Write};
    let mut bad = Vec::new();
    for (i, (s, node)) in flows.iter().enumerate() {
        if let Err(e) = (&*s).write_all(b"ping\n") {
            bad.push(format!("flow {i} to {node}: write: {e}"));
            continue;
        }
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match (&*s).read(&mut buf) {
                Ok(0) => bad.push(format!("flow {i} to {node}: closed")),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() < deadline {
                        continue;
                    }
                    bad.push(format!("flow {i} to {node}: no echo within 1 s"));
                }
                Err(e) => bad.push(format!("flow {i} to {node}: read: {e}")),
            }
            break;
        }
    }
    bad
}

/// Split brain and its heal: the bridge partitions {n1, c1} from {n2, n3, c}; n2 becomes
/// master on its side and the client c follows its gratuitous ARPs. On heal, within one
/// advert interval n1 alone holds the VIP, re-sends gratuitous ARPs, c's neighbour entry
/// points to n1 again, n2 keeps no VIP and gives up directing (n1's announcements rule), and
/// c1's connections through n1 exchange data throughout.
#[test]
fn e_split_brain_heals_to_one_master_and_clients_follow() {
    let Some(mut c) = cluster("e_split_brain_heals_to_one_master_and_clients_follow", 3) else {
        return;
    };
    let port = 9092;
    for h in &c.nodes {
        h.serve_echo(port).expect("echo server");
    }
    let c1 = c.lab.add_host("c1", 51).expect("adding c1");
    let interval = 200;
    let d = c.start_all(&[99, 89, 79], |p| {
        VrrpOpts::new(p, interval).redirects(&[port]).auth_key(KEY)
    });
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    let vip = c.lab.vip();
    let mac = |h: &Host| h.mac().expect("mac");
    let (mac1, mac2) = (mac(&c.nodes[0]), mac(&c.nodes[1]));
    let neighbour = |h: &Host| {
        h.neighbour(vip)
            .ok()
            .flatten()
            .map(|(m, _)| m)
            .unwrap_or_default()
    };
    let t = Instant::now();
    c.wait_answer("n1", t, Duration::from_secs(2), "before the partition");
    assert_eq!(neighbour(&c.client), mac1);

    c.lab
        .partition(&["n1", "c1"], &["n2", "n3", "c"])
        .expect("partitioning the bridge");
    let t = Instant::now();
    let o2 = VrrpOpts::new(89, interval);
    c.wait_answer(
        "n2",
        t,
        o2.master_down_interval() + Duration::from_secs(1),
        "partition: n2 serves its side",
    );
    let mut holders = Vec::new();
    let both = lab::wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        holders = c.lab.vip_holders();
        (holders == ["n1", "n2"]).then_some(())
    });
    assert!(
        both.is_some(),
        "split brain: n1 and n2 both hold the VIP, holders {holders:?}"
    );
    assert_eq!(neighbour(&c.client), mac2, "c follows n2's gratuitous ARPs");
    // c1's clients go through n1, which directs alone once n2 and n3 fail (3 periods).
    let ok = lab::wait_for(Duration::from_secs(8), Duration::from_millis(200), || {
        let s = c.status(&d[0]);
        let active = s.0["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["role"] != "failed")
            .count();
        (active == 1).then_some(())
    });
    assert!(
        ok.is_some(),
        "n1 directs alone in the partition: {:?}",
        c.status(&d[0]).0["nodes"]
    );
    thread::sleep(Duration::from_secs(1));
    let flows = open_flows(&c1, vip, port, 10);
    assert!(
        flows.iter().all(|(_, n)| n == "n1"),
        "{:?}",
        flows.iter().map(|f| &f.1).collect::<Vec<_>>()
    );
    assert_eq!(
        exchange(&flows),
        Vec::<String>::new(),
        "flows before the heal"
    );

    let garps = lines(&d[0], "re-advertising and sending gratuitous ARPs");
    let t = Instant::now();
    c.lab.heal().expect("healing the partition");
    let mut seen = Vec::new();
    let one = lab::wait_for(Duration::from_secs(2), Duration::from_millis(5), || {
        seen = c.lab.vip_holders();
        (seen == ["n1"]).then(Instant::now)
    });
    let one = one.unwrap_or_else(|| panic!("after the heal only n1 should hold the VIP: {seen:?}"));
    let took = one - t;
    println!(
        "split brain: one master {} ms after the heal (advert interval {interval} ms)",
        took.as_millis()
    );
    assert!(
        took <= Duration::from_millis(u64::from(interval)) + SLACK,
        "one master within one advert interval (+ slack), took {took:?}"
    );
    let moved = lab::wait_for(Duration::from_secs(1), Duration::from_millis(5), || {
        (neighbour(&c.client) == mac1).then(Instant::now)
    });
    let moved = moved.unwrap_or_else(|| {
        panic!(
            "c's neighbour entry for the VIP should point to n1 again, is {}",
            neighbour(&c.client)
        )
    });
    println!(
        "split brain: c's neighbour entry back on n1 {} ms after the heal",
        (moved - t).as_millis()
    );
    assert!(
        lines(&d[0], "re-advertising and sending gratuitous ARPs") > garps,
        "n1 re-sent gratuitous ARPs"
    );
    c.wait_answer(
        "n1",
        one,
        Duration::from_secs(1),
        "after the heal c reaches n1",
    );
    assert!(!c.nodes[1].serves(vip), "no VIP on n2's eth0");
    let s2 = c.status(&d[1]);
    assert_eq!(s2.state(), "backup");
    // n2 drops its director state: it follows n1's announcements again, n1 re-admits it.
    let ok = lab::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = c.status(&d[1]);
        (s.director() == Some(c.nodes[0].addr)).then_some(())
    });
    assert!(
        ok.is_some(),
        "n2 follows n1 as director: {:?}",
        c.status(&d[1]).0["director"]
    );
    let ok = lab::wait_for(Duration::from_secs(8), Duration::from_millis(200), || {
        let n = c.status(&d[0]).0["nodes"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|n| n["role"] != "failed").count());
        (n == 3).then_some(())
    });
    assert!(
        ok.is_some(),
        "all three members again: {:?}",
        c.status(&d[0]).0["nodes"]
    );
    for _ in 0..10 {
        assert_eq!(
            exchange(&flows),
            Vec::<String>::new(),
            "c1's flows through n1 after the heal"
        );
        thread::sleep(Duration::from_millis(200));
    }
    c.prober.stop();
}

/// `[ha.track] gateway`: the master (n1) loses its gateway (the bridge cuts n1 from gw only):
/// its priority drops below n2's, n2 takes over; the gateway back, n1 preempts.
#[test]
fn f_track_gateway_unreachable_on_the_master_moves_the_vip_and_back() {
    let Some(mut c) = cluster("f_track_gateway_unreachable_on_the_master", 2) else {
        return;
    };
    let gw = c.lab.add_host("gw", 1).expect("adding the gateway");
    let interval = 200;
    let track = format!("gateway = -30\ngateway_address = \"{}\"", gw.addr);
    let o = |p| VrrpOpts::new(p, interval).track(&track);
    let d = c.start_all(&[99, 89], o);
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    let s = c.status(&d[0]);
    assert_eq!(s.0["track"][0]["check"], format!("gateway {}", gw.addr));
    assert_eq!(s.0["track"][0]["ok"], true, "{:?}", s.0["track"]);

    c.lab
        .partition(&["n1"], &["gw"])
        .expect("cutting n1 from the gateway");
    let t = Instant::now();
    let probe = Duration::from_millis(u64::from(interval));
    let bound = probe * 3 + probe + o(89).master_down_interval() + SLACK;
    c.wait_answer("n2", t, bound, "gateway lost on n1");
    c.wait_sole_holder("n2", Duration::from_secs(1), "after the gateway loss");
    let s = c.status(&d[0]);
    assert_eq!(s.0["effective_priority"], 69, "{:?}", s.0["track"]);
    assert_eq!(s.0["track"][0]["ok"], false);
    let table = c.lab.status_table(&d[0]).expect("status table");
    assert!(
        table.contains("69 (configured 99, lowered by [ha.track])"),
        "{table}"
    );
    assert!(table.contains("FAILING, no ARP reply for"), "{table}");
    assert!(lines(&d[0], "track: gateway") >= 1, "logged");

    c.lab.heal().expect("the gateway back");
    let t = Instant::now();
    let bound = probe * 2 + o(99).master_down_interval() + SLACK;
    c.wait_answer("n1", t, bound, "gateway back: n1 preempts");
    c.wait_sole_holder("n1", Duration::from_secs(1), "after the gateway is back");
    assert_eq!(c.status(&d[0]).0["effective_priority"], 99);
}

/// `[ha.track] ports`: the master's own proxy port stops listening: n2 takes over; the
/// listener back, n1 preempts.
#[test]
fn g_track_own_port_down_on_the_master_moves_the_vip_and_back() {
    let Some(c) = cluster("g_track_own_port_down_on_the_master", 2) else {
        return;
    };
    let port = 9090;
    let mut stop = None;
    for (i, h) in c.nodes.iter().enumerate() {
        let s = h.serve_peer(port).expect("listener");
        if i == 0 {
            stop = Some(s);
        }
    }
    let interval = 200;
    let o = |p| {
        VrrpOpts::new(p, interval)
            .redirects(&[port])
            .track("ports = -30")
    };
    let d = c.start_all(&[99, 89], o);
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    let ok = lab::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        (c.status(&d[0]).0["track"][0]["ok"] == true).then_some(())
    });
    assert!(ok.is_some(), "{:?}", c.status(&d[0]).0["track"]);

    stop.expect("n1's listener")
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    // The port monitor samples once a second.
    let bound =
        Duration::from_secs(1) + o(89).master_down_interval() + SLACK + Duration::from_millis(200);
    c.wait_answer("n2", t, bound, "n1's proxy port down");
    c.wait_sole_holder("n2", Duration::from_secs(1), "after the port went down");
    let s = c.status(&d[0]);
    assert_eq!(s.0["effective_priority"], 69, "{:?}", s.0["track"]);
    assert_eq!(s.0["track"][0]["check"], format!("port {port}"));

    c.nodes[0].serve_peer(port).expect("listener back");
    let t = Instant::now();
    let bound =
        Duration::from_secs(1) + o(99).master_down_interval() + SLACK + Duration::from_millis(200);
    c.wait_answer("n1", t, bound, "port back: n1 preempts");
    c.wait_sole_holder("n1", Duration::from_secs(1), "after the port is back");
}

/// A flood of control connections (held open, and opened and closed as fast as 4 threads
/// can) on the master at 100 ms adverts: the 17th concurrent one is told `busy`, the adverts
/// keep their pace (no gap near the backup's Master_Down_Interval: the backup never takes
/// over), and `status` answers again once the flood ends.
#[test]
fn h_control_socket_flood_does_not_delay_adverts() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let Some(c) = cluster("h_control_socket_flood_does_not_delay_adverts", 2) else {
        return;
    };
    let interval = 100;
    let d = c.start_all(&[99, 89], |p| VrrpOpts::new(p, interval));
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    let before = c.status(&d[1]).counter("became_master");
    let socket = d[0].control.clone().expect("control socket");
    let watch = AdvertWatch::start(&c.client).expect("watching adverts");
    let n1 = c.nodes[0].addr;
    let gaps = |adverts: &[lab::Advert]| -> Duration {
        adverts
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .max()
            .unwrap_or_default()
    };
    let quiet = gaps(&watch.collect_from(n1, Duration::from_secs(3)));

    // 16 connections held open (silent: each waits out its 3 s read timeout).
    let held: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&socket).expect("connecting"))
        .collect();
    thread::sleep(Duration::from_millis(100));
    let mut extra = UnixStream::connect(&socket).expect("connecting the 17th");
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.contains("busy: 16 control connections are open"),
        "{answer:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = (0..4)
        .map(|_| {
            let (stop, opened, socket) = (stop.clone(), opened.clone(), socket.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(mut s) = UnixStream::connect(&socket) {
                        let _ = s.write_all(b"{\"cmd\":\"status\"}\n");
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    watch.drain();
    let flooded = watch.collect_from(n1, Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        let _ = f.join();
    }
    drop(held);
    let flood_gap = gaps(&flooded);
    println!(
        "control flood: {} connections in 5 s; largest advert gap {} ms during it, {} ms before (interval {interval} ms)",
        opened.load(Ordering::Relaxed),
        flood_gap.as_millis(),
        quiet.as_millis()
    );
    assert!(
        flooded.len() >= 25,
        "adverts kept coming: {}",
        flooded.len()
    );
    let mdi = VrrpOpts::new(89, interval).master_down_interval();
    assert!(
        flood_gap < mdi,
        "an advert gap of {flood_gap:?} would let the backup take over"
    );
    assert_eq!(
        c.status(&d[1]).counter("became_master"),
        before,
        "no false takeover"
    );
    c.wait_sole_holder("n1", Duration::from_millis(100), "after the flood");
    let ok = lab::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        c.lab.status(&d[0]).ok()
    });
    assert!(ok.is_some(), "status answers after the flood");
}

/// `ha.rt_priority` + `ha.lock_memory`: the VRRP loop (the main thread) runs SCHED_FIFO at
/// that priority, the data-path worker at normal priority, and the memory is locked.
#[test]
fn i_realtime_vrrp_loop_and_normal_worker() {
    let Some(c) = cluster("i_realtime_vrrp_loop_and_normal_worker", 1) else {
        return;
    };
    c.nodes[0].serve_name(9090).expect("listener");
    let d = c
        .lab
        .start_proxyha(
            &c.nodes[0],
            &VrrpOpts::new(99, 100).redirects(&[9090]).realtime(20),
        )
        .expect("starting proxyha");
    c.wait_sole_holder("n1", Duration::from_secs(3), "election");
    // /proc/PID/task/TID/stat: comm in parentheses, then fields from 3 on; policy is field 41,
    // rt_priority field 40.
    let sched = |tid: &str| -> (String, u32, u32) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", d.pid)).unwrap_or_default();
        let comm = stat
            .split('(')
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or("")
            .to_string();
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(99);
        (comm, field(40), field(41))
    };
    let tasks: Vec<(String, u32, u32)> = std::fs::read_dir(format!("/proc/{}/task", d.pid))
        .expect("tasks")
        .filter_map(|e| e.ok())
        .map(|e| sched(&e.file_name().to_string_lossy()))
        .collect();
    println!("threads (comm, rt_priority, policy): {tasks:?}");
    let main = sched(&d.pid.to_string());
    assert_eq!(
        (main.1, main.2),
        (20, 1),
        "the VRRP loop runs SCHED_FIFO 20: {tasks:?}"
    );
    let worker = tasks
        .iter()
        .find(|t| t.0 == "dataplane")
        .expect("the data-path worker");
    assert_eq!(
        (worker.1, worker.2),
        (0, 0),
        "the worker runs SCHED_OTHER: {tasks:?}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid)).unwrap_or_default();
    let locked = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(locked > 0, "memory locked: {status}");
    assert!(lines(&d, "VRRP loop: SCHED_FIFO priority 20") == 1);
}
