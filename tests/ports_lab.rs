//! Issue 4 in network namespaces: the port monitor and per-port pools, a listener bound to
//! one address, direct-only ports, two groups side by side, and config-mismatch detection.
//!
//! Needs root; without it every test prints a SKIP line (and fails under
//! PROXYHA_REQUIRE_ROOT_TESTS=1). Re-run:
//! `sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --release --test ports_lab -- --nocapture`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proxyha::wire::vrrp;
use proxyha_lab::clients::{self, sources, tally};
use proxyha_lab::{self as lab, Daemon, Host, Lab, VrrpOpts};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");
const WEB: u16 = 9090;
const FTP: u16 = 2121;
/// Served on every node, never redirected (the seed's "test one node on port 9091").
const DIRECT: u16 = 9091;
const CLIENTS: usize = 120;

struct Group {
    lab: Lab,
    client: Host,
    nodes: Vec<Host>,
    daemons: Vec<Daemon>,
    /// Per node, the stop flags of its WEB and FTP servers.
    web: Vec<Arc<AtomicBool>>,
    ftp: Vec<Arc<AtomicBool>>,
}

/// A client namespace and three nodes n1 (99), n2 (89), n3 (0) serving WEB, FTP and
/// DIRECT; proxyha on each with `opts(i)`. Waits until n1 directs `expect` healthy nodes.
fn group(test: &str, opts: impl Fn(usize, VrrpOpts) -> VrrpOpts, expect: usize) -> Option<Group> {
    if !lab::require_root(test) {
        return None;
    }
    let mut lab = Lab::new()
        .expect("creating the lab bridge namespace")
        .with_proxyha(BIN);
    let (client, nodes) = lab
        .add_client_and_nodes(3)
        .expect("adding the client and node namespaces");
    let serve = |h: &Host, port| h.serve_peer(port).expect("starting a server");
    let web = nodes.iter().map(|h| serve(h, WEB)).collect();
    let ftp = nodes.iter().map(|h| serve(h, FTP)).collect();
    for h in &nodes {
        serve(h, DIRECT);
    }
    clients::add_sources(&lab, &client, &nodes, &all_sources(&lab))
        .expect("adding the client addresses");
    let daemons = nodes
        .iter()
        .zip([99u8, 89, 0])
        .enumerate()
        .map(|(i, (h, p))| {
            let o = opts(i, VrrpOpts::new(p, 1000).redirects(&[WEB, FTP]));
            lab.start_proxyha(h, &o).expect("starting proxyha")
        })
        .collect();
    let g = Group {
        lab,
        client,
        nodes,
        daemons,
        web,
        ftp,
    };
    g.wait_director(expect);
    Some(g)
}

/// The sources every test uses (octets 1..) and fresh ones (101..).
fn all_sources(lab: &Lab) -> Vec<Ipv4Addr> {
    sources(lab, CLIENTS, 1)
        .into_iter()
        .chain(sources(lab, CLIENTS, 101))
        .collect()
}

impl Group {
    fn status(&self, i: usize) -> serde_json::Value {
        lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
            self.lab.status(&self.daemons[i]).ok()
        })
        .unwrap_or_else(|| panic!("status of {} failed", self.nodes[i].name))
        .0
    }

    fn node_row(&self, name: &str) -> serde_json::Value {
        let s = self.status(0);
        s["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no row for {name} in {s}"))
    }

    fn wait_director(&self, n: usize) {
        let ok = lab::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
            let s = self.status(0);
            let nodes = s["nodes"].as_array().cloned().unwrap_or_default();
            let healthy = nodes.iter().filter(|x| x["healthy"] == true).count();
            (s["state"] == "master" && nodes.len() == 3 && healthy == n).then_some(())
        });
        if ok.is_none() {
            self.lab.dump_logs(30);
            panic!(
                "n1 did not direct {n} healthy of 3 nodes within 20 s: {}",
                self.status(0)
            );
        }
        // The first load reports settle the weights; then the data path loads.
        std::thread::sleep(Duration::from_secs(3));
    }

    fn round(&self, srcs: &[Ipv4Addr], port: u16) -> Vec<Result<(String, Ipv4Addr), String>> {
        clients::round(
            &self.client,
            srcs,
            self.lab.vip(),
            port,
            Duration::from_secs(3),
        )
    }

    fn log_count(&self, i: usize, needle: &str) -> usize {
        self.daemons[i].log_text().matches(needle).count()
    }
}

fn moved(a: &BTreeMap<Ipv4Addr, String>, b: &BTreeMap<Ipv4Addr, String>) -> usize {
    a.iter().filter(|(s, n)| b.get(*s) != Some(*n)).count()
}

#[test]
fn a_stopped_listener_moves_only_that_ports_clients_off_the_node() {
    let Some(g) = group("ports_a_listener_stops", |_, o| o, 3) else {
        return;
    };
    let srcs = sources(&g.lab, CLIENTS, 1);
    let (_, web0) = tally(&srcs, &g.round(&srcs, WEB));
    let (per_ftp, ftp0) = tally(&srcs, &g.round(&srcs, FTP));
    let on_n2: Vec<Ipv4Addr> = ftp0
        .iter()
        .filter(|(_, n)| n.as_str() == "n2")
        .map(|(s, _)| *s)
        .collect();
    assert!(!on_n2.is_empty(), "n2 has FTP clients: {per_ftp:?}");

    // n2's FTP listener stops.
    g.ftp[1].store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    let mut served_at = None;
    while stopped.elapsed() < Duration::from_secs(6) {
        let answers = g.round(&on_n2, FTP);
        if answers.iter().all(|a| matches!(a, Ok((n, _)) if n != "n2")) {
            served_at = Some(stopped.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = served_at.unwrap_or_else(|| {
        g.lab.dump_logs(20);
        panic!(
            "n2's FTP clients not served elsewhere within 6 s: {}",
            g.status(0)
        )
    });
    let (_, web1) = tally(&srcs, &g.round(&srcs, WEB));
    let (_, ftp1) = tally(&srcs, &g.round(&srcs, FTP));
    let web_moved = moved(&web0, &web1);
    let ftp_others_moved = ftp0
        .iter()
        .filter(|(_, n)| n.as_str() != "n2")
        .filter(|(s, n)| ftp1.get(*s) != Some(*n))
        .count();
    let row = g.node_row("n2");
    println!(
        "[ports a] n2's FTP listener stopped: its {} FTP clients served by others after {at:?} \
         (bound 3 s); {web_moved} of {CLIENTS} WEB clients moved, {ftp_others_moved} other FTP \
         clients moved\n  n2: {}",
        on_n2.len(),
        row["reason"]
    );
    println!("{}", g.lab.status_table(&g.daemons[0]).unwrap_or_default());
    // Where one of the moved clients goes now, per port, and why. The director deletes void
    // pins when it reads them (every 1 s); the client's next connection pins it anew.
    std::thread::sleep(Duration::from_millis(1200));
    tally(&on_n2, &g.round(&on_n2, FTP));
    std::thread::sleep(Duration::from_millis(1200));
    let c = g
        .lab
        .client_table(&g.daemons[0], on_n2[0])
        .expect("proxyha status --client");
    println!("{c}");
    let ftp_line = c
        .lines()
        .find(|l| l.contains("port 2121"))
        .unwrap_or_default();
    assert!(
        ftp_line.contains(": pinned:") && !ftp_line.contains("n2"),
        "the moved client has a pin of its own elsewhere for 2121: {c}"
    );
    assert!(at <= Duration::from_secs(3), "took {at:?}");
    assert_eq!(
        web_moved, 0,
        "WEB clients of n2 keep working where they were"
    );
    assert_eq!(ftp_others_moved, 0, "FTP clients of n1 and n3 stay");
    assert!(
        web1.values().any(|n| n == "n2"),
        "n2 still serves WEB clients"
    );
    assert_eq!(
        g.log_count(
            1,
            "current state: failure (port 2121: nothing is listening)"
        ),
        1,
        "n2 logs the failure once"
    );
    let ftp_row = row["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["port"] == FTP).cloned())
        .unwrap_or_default();
    assert_eq!(ftp_row["listening"], false, "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("port 2121 down (nothing is listening)"),
        "{row}"
    );

    // Back: logged as ok, and n2 takes new FTP clients again.
    g.ftp[1].store(false, Ordering::SeqCst);
    g.nodes[1]
        .serve_peer(FTP)
        .expect("restarting n2's FTP server");
    let ok = lab::wait_for(Duration::from_secs(4), Duration::from_millis(100), || {
        (g.log_count(1, "current state: ok") == 1).then_some(())
    });
    assert!(ok.is_some(), "n2 logs `current state: ok`");
    let back = lab::wait_for(Duration::from_secs(4), Duration::from_millis(100), || {
        let row = g.node_row("n2");
        row["ports"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["port"] == FTP).cloned())
            .filter(|p| p["share"].as_f64().is_some_and(|s| s > 0.0))
    });
    assert!(
        back.is_some(),
        "n2 back in FTP's pool: {}",
        g.node_row("n2")
    );
    std::thread::sleep(Duration::from_millis(300));
    let fresh = sources(&g.lab, CLIENTS, 101);
    let (per, _) = tally(&fresh, &g.round(&fresh, FTP));
    println!("[ports a] n2's FTP listener back: new FTP clients {per:?}");
    assert!(
        per.get("n2").is_some_and(|n| *n > 0),
        "new FTP clients reach n2 again"
    );
}

#[test]
fn a_listener_bound_to_one_address_drains_that_port() {
    let Some(g) = group("ports_b_specific_bind", |_, o| o, 3) else {
        return;
    };
    // n3's WEB listener moves from 0.0.0.0 to n3's own address: the VIP no longer reaches it.
    g.web[2].store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(50));
    g.nodes[2]
        .serve_peer_on(g.nodes[2].addr, WEB)
        .expect("binding n3's WEB server to its own address");
    let changed = Instant::now();
    let want = format!(
        "bound to {} only; Proxy HA needs it bound to 0.0.0.0",
        g.nodes[2].addr
    );
    let drained = lab::wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let row = g.node_row("n3");
        row["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&want))
            .then_some(row)
    });
    let row =
        drained.unwrap_or_else(|| panic!("n3's reason never said `{want}`: {}", g.node_row("n3")));
    let at = changed.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let fresh = sources(&g.lab, CLIENTS, 101);
    let (per, _) = tally(&fresh, &g.round(&fresh, WEB));
    let (ftp, _) = tally(&fresh, &g.round(&fresh, FTP));
    println!(
        "[ports b] n3 bound WEB to its own address: out of WEB's pool after {at:?}; new WEB \
         clients {per:?}, FTP clients {ftp:?}\n  n3: {}",
        row["reason"]
    );
    // The seed's `mwg-mon -v -c` on that node says why.
    let conf = g.daemons[2].conf.to_string_lossy().into_owned();
    let check = g
        .lab
        .proxyha_in(&g.nodes[2], &["check", "-v", "--config", &conf])
        .expect("running proxyha check in n3");
    let out = String::from_utf8_lossy(&check.stdout).into_owned();
    println!(
        "[ports b] proxyha check -v on n3 (exit {:?}):\n{out}",
        check.status.code()
    );
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        out.contains(&format!(
            "port 9090 is bound to {} only; Proxy HA needs it bound to 0.0.0.0",
            g.nodes[2].addr
        )),
        "{out}"
    );
    assert_eq!(per.get("n3"), None, "no WEB client goes to n3");
    assert!(
        ftp.get("n3").is_some_and(|n| *n > 0),
        "n3 keeps FTP clients"
    );
    assert!(
        g.daemons[2]
            .log_text()
            .contains(&format!("current state: failure (port 9090: {want})")),
        "n3 logs the failure with the reason"
    );
}

#[test]
fn ports_outside_the_redirects_are_direct_only() {
    let Some(g) = group("ports_c_direct_only", |_, o| o, 3) else {
        return;
    };
    let srcs = sources(&g.lab, 20, 1);
    // Through the VIP, 9091 is the director's own port: never handed to another node.
    let via_vip = clients::round(
        &g.client,
        &srcs,
        g.lab.vip(),
        DIRECT,
        Duration::from_secs(3),
    );
    let (per, _) = tally(&srcs, &via_vip);
    // On a node's own address it is that node's.
    let direct = clients::round(
        &g.client,
        &srcs,
        g.nodes[1].addr,
        DIRECT,
        Duration::from_secs(3),
    );
    let (per_n2, _) = tally(&srcs, &direct);
    let listed: Vec<Vec<u64>> = (0..3)
        .map(|i| {
            g.status(i)["direct_only_ports"]
                .as_array()
                .map(|a| a.iter().filter_map(|p| p.as_u64()).collect())
                .unwrap_or_default()
        })
        .collect();
    println!(
        "[ports c] VIP:9091 answered by {per:?}; n2:9091 by {per_n2:?}; direct-only ports per node {listed:?}"
    );
    assert_eq!(per.keys().collect::<Vec<_>>(), vec!["n1"]);
    assert_eq!(per_n2.keys().collect::<Vec<_>>(), vec!["n2"]);
    for ports in &listed {
        assert!(ports.contains(&u64::from(DIRECT)), "{listed:?}");
        assert!(!ports.contains(&u64::from(WEB)) && !ports.contains(&u64::from(FTP)));
    }
    let table = g.lab.status_table(&g.daemons[1]).unwrap_or_default();
    assert!(table.contains("direct only"), "{table}");
}

#[test]
fn two_groups_on_one_subnet_run_side_by_side() {
    if !lab::require_root("ports_d_two_groups") {
        return;
    }
    let mut lab = Lab::new()
        .expect("creating the lab bridge namespace")
        .with_proxyha(BIN);
    let client = lab.add_host("c", 50).expect("client");
    let hosts: Vec<Host> = ["n1", "n2", "m1", "m2"]
        .iter()
        .zip([11u8, 12, 21, 22])
        .map(|(n, o)| lab.add_host(n, o).expect("node"))
        .collect();
    for h in &hosts {
        h.serve_peer(WEB).expect("server");
    }
    let vip1 = lab.vip();
    let vip2 = lab.addr(101);
    clients::add_sources(&lab, &client, &hosts, &sources(&lab, 40, 1)).expect("sources");
    let daemons: Vec<Daemon> = hosts
        .iter()
        .zip([99u8, 89, 99, 89])
        .enumerate()
        .map(|(i, (h, p))| {
            let mut o = VrrpOpts::new(p, 1000).redirects(&[WEB]);
            if i >= 2 {
                o = o.group(vip2, 52, 52);
            }
            lab.start_proxyha(h, &o).expect("proxyha")
        })
        .collect();
    let members = |i: usize| -> Option<Vec<String>> {
        let s = lab.status(&daemons[i]).ok()?.0;
        (s["state"] == "master").then(|| {
            let mut v: Vec<String> = s["nodes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| n["name"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        })
    };
    let both = lab::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let (a, b) = (members(0)?, members(2)?);
        (a.len() == 2 && b.len() == 2).then_some((a, b))
    });
    let (a, b) = both.unwrap_or_else(|| {
        lab.dump_logs(20);
        panic!("both groups did not form within 20 s")
    });
    std::thread::sleep(Duration::from_secs(2));
    let srcs = sources(&lab, 40, 1);
    let (per1, _) = tally(
        &srcs,
        &clients::round(&client, &srcs, vip1, WEB, Duration::from_secs(3)),
    );
    let (per2, _) = tally(
        &srcs,
        &clients::round(&client, &srcs, vip2, WEB, Duration::from_secs(3)),
    );
    let s1 = lab.status(&daemons[0]).expect("status").0;
    let other_lb = s1["counters"]["membership_discard_other_lb_id"]
        .as_u64()
        .unwrap_or(0);
    let nft1 = hosts[0]
        .exec("nft", &["list", "table", "ip", "proxyha"])
        .unwrap_or_default();
    println!(
        "[ports d] group 1 {a:?} serves {vip1}: {per1:?}; group 2 {b:?} serves {vip2}: {per2:?}; \
         n1 ignored {other_lb} membership messages of lb_id 52"
    );
    assert_eq!(a, vec!["n1", "n2"]);
    assert_eq!(b, vec!["m1", "m2"]);
    assert!(
        per1.keys().all(|n| n.starts_with('n')) && per1.len() == 2,
        "{per1:?}"
    );
    assert!(
        per2.keys().all(|n| n.starts_with('m')) && per2.len() == 2,
        "{per2:?}"
    );
    assert!(
        other_lb > 0,
        "the other group's announcements reach n1 and are ignored"
    );
    assert!(hosts[0].serves(vip1) && !hosts[0].serves(vip2));
    assert!(hosts[2].serves(vip2) && !hosts[2].serves(vip1));
    assert!(!nft1.contains(&vip2.to_string()), "{nft1}");
    assert!(
        s1["config_mismatches"]
            .as_array()
            .is_some_and(|m| m.is_empty()),
        "another group is not a mismatch: {s1}"
    );
}

#[test]
fn a_config_mismatch_is_logged_once_shown_and_gets_no_new_clients() {
    // n3 runs NAT while the others run direct: a different group config.
    let Some(g) = group(
        "ports_e_mismatch",
        |i, o| if i == 2 { o.mode("nat") } else { o },
        2,
    ) else {
        return;
    };
    std::thread::sleep(Duration::from_secs(2));
    let s = g.status(0);
    let m = s["config_mismatches"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fresh = sources(&g.lab, CLIENTS, 101);
    let (per, _) = tally(&fresh, &g.round(&fresh, WEB));
    let logged = g.log_count(0, &format!("config mismatch with n3 ({})", g.nodes[2].addr));
    println!("[ports e] mismatches {m:?}; new clients {per:?}; logged {logged} time(s)");
    println!("{}", g.lab.status_table(&g.daemons[0]).unwrap_or_default());
    assert_eq!(m.len(), 1, "{s}");
    assert_eq!(m[0]["name"], "n3");
    assert_eq!(m[0]["source"], "membership");
    assert!(
        m[0]["theirs"].as_str().unwrap_or("").ends_with("mode nat"),
        "{m:?}"
    );
    assert!(
        m[0]["ours"].as_str().unwrap_or("").ends_with("mode direct"),
        "{m:?}"
    );
    assert_eq!(logged, 1, "once per peer, not per report");
    assert_eq!(
        per.get("n3"),
        None,
        "a mismatching node gets no new clients"
    );

    // A VRRP advert for our VRID carrying another VIP (from the client namespace).
    let rogue = g.client.addr;
    let other_vip = g.lab.addr(123);
    let advert = vrrp::Repr::new(
        vrrp::Version::V3,
        51,
        50,
        Duration::from_secs(1),
        vec![other_vip],
    )
    .expect("valid advert")
    .to_bytes(
        vrrp::ChecksumMode::PseudoHeader,
        rogue,
        vrrp::MULTICAST_GROUP,
    );
    for _ in 0..3 {
        lab::inject(&g.client, lab::advert_datagram(rogue, 255, &advert)).expect("injecting");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = lab::wait_for(Duration::from_secs(3), Duration::from_millis(100), || {
        let s = g.status(0);
        s["config_mismatches"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["source"] == "vrrp").cloned())
    });
    let v = seen.unwrap_or_else(|| panic!("no vrrp mismatch in {}", g.status(0)));
    println!("[ports e] vrrp mismatch {v}");
    assert_eq!(v["peer"], rogue.to_string());
    assert!(
        v["theirs"]
            .as_str()
            .unwrap_or("")
            .contains(&other_vip.to_string())
    );
    let lines = g.log_count(0, &format!("advert from {rogue} carries addresses"));
    assert_eq!(lines, 1, "logged once for three adverts");
}
