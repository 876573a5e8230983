//! The operator's commands end to end in a network-namespace lab (issue 4 items 2, 4, 7):
//! `proxyha check -v` inside a node, `proxyha drain` / `undrain` on a scanning node of a
//! three-node group (new clients elsewhere, pinned ones stay, across a restart), and live
//! reload (in place without moving the VIP, an invalid edit refused, SIGHUP, an identity
//! change restarting the instance). Same rules as the other labs: root or a loud SKIP (a
//! failure under `PROXYHA_REQUIRE_ROOT_TESTS=1`), one lab at a time, teardown by guard.
//!
//! ```text
//! sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --release --test maintenance_lab -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use proxyha_lab::clients::{self, sources};
use proxyha_lab::{self as lab, Daemon, Host, Lab, VrrpOpts};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");
const PORT: u16 = 9090;
/// Client source addresses per round.
const ROUND: usize = 120;

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

// ---------------------------------------------------------------------------------------
// proxyha check

#[test]
fn check_names_a_listener_bound_to_the_nodes_own_address_and_passes_a_wildcard_one() {
    if !lab::require_root("maintenance_lab::check") {
        return;
    }
    let mut lab = Lab::new().expect("creating the lab").with_proxyha(BIN);
    let n1 = lab.add_host("n1", 11).expect("adding n1");
    let conf = lab.dir().join("check.toml");
    std::fs::write(
        &conf,
        format!(
            "[node]\nname = \"n1\"\nmanagement_ip = \"{}\"\n[ha]\nvirtual_ip = \"{}\"\npriority = 99\n\
             port_redirects = [{PORT}]\n",
            n1.addr,
            lab.vip()
        ),
    )
    .expect("writing the check config");
    let conf_s = conf.to_string_lossy().into_owned();
    let check = |lab: &Lab| {
        lab.proxyha_in(&n1, &["check", "-v", "--config", &conf_s])
            .expect("running proxyha check in n1")
    };

    // The proxy bound to the node's own address only: the seed's classic mistake.
    let specific = n1
        .listen_on(SocketAddrV4::new(n1.addr, PORT))
        .expect("listening on n1's own address");
    let out = check(&lab);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "exit 1: {out:?}");
    let want = format!(
        "port {PORT} is bound to {} only; Proxy HA needs it bound to 0.0.0.0",
        n1.addr
    );
    assert!(stdout.starts_with(&want), "{want:?} in:\n{stdout}");
    // The owner: this test process holds the socket (a lab thread in n1).
    assert!(
        stdout.contains(&format!("(owner: pid {} ", std::process::id())),
        "owner named: {stdout}"
    );
    println!("check -v with a specific bind:\n{stdout}");

    // Nothing listening.
    specific.store(true, Ordering::Relaxed);
    let gone = lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let out = check(&lab);
        text(&out.stdout)
            .contains("nothing is listening; start the proxy or remove 9090 from ha.port_redirects")
            .then_some(out)
    });
    assert_eq!(gone.and_then(|o| o.status.code()), Some(1));

    // A wildcard listener: exit 0, one line for the port and the ok line.
    n1.serve_name(PORT).expect("serving on 0.0.0.0");
    let out = check(&lab);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "exit 0: {out:?}");
    assert!(
        stdout.starts_with(&format!(
            "port {PORT}: listening on 0.0.0.0 (owner: pid {} ",
            std::process::id()
        )) && stdout.ends_with(&format!(
            "ok: 1 redirected port listening on the wildcard address ({PORT})\n"
        )),
        "{stdout}"
    );
    let quiet = lab
        .proxyha_in(&n1, &["check", "--config", &conf_s])
        .expect("running proxyha check");
    assert_eq!(
        text(&quiet.stdout),
        format!("ok: 1 redirected port listening on the wildcard address ({PORT})\n")
    );
}

// ---------------------------------------------------------------------------------------
// A three-node group with a client namespace (the small parts of director_lab's)

struct Group {
    lab: Lab,
    nodes: Vec<Host>,
    daemons: Vec<Daemon>,
    opts: Vec<VrrpOpts>,
    client: Host,
}

/// Offsets of the fresh source batches: each round of new clients uses its own.
const BATCHES: [u8; 6] = [1, 31, 61, 91, 121, 151];

fn group(test: &str, prios: &[u8]) -> Option<Group> {
    if !lab::require_root(test) {
        return None;
    }
    let mut lab = Lab::new().expect("creating the lab").with_proxyha(BIN);
    let (client, nodes) = lab
        .add_client_and_nodes(prios.len())
        .expect("adding the client and node namespaces");
    for h in &nodes {
        h.serve_peer(PORT).expect("starting the peer server");
    }
    let all: Vec<Ipv4Addr> = BATCHES
        .iter()
        .flat_map(|off| sources(&lab, ROUND, *off))
        .collect();
    clients::add_sources(&lab, &client, &nodes, &all).expect("adding the client addresses");
    let opts: Vec<VrrpOpts> = prios
        .iter()
        .map(|p| VrrpOpts::new(*p, 1000).redirects(&[PORT]))
        .collect();
    let daemons = nodes
        .iter()
        .zip(&opts)
        .map(|(h, o)| lab.start_proxyha(h, o).expect("starting proxyha"))
        .collect();
    let g = Group {
        lab,
        nodes,
        daemons,
        opts,
        client,
    };
    g.wait_director(|nodes| {
        nodes.len() == prios.len() && nodes.iter().all(|n| n["healthy"] == true)
    });
    Some(g)
}

impl Group {
    fn status(&self, i: usize) -> lab::Status {
        lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
            self.lab.status(&self.daemons[i]).ok()
        })
        .unwrap_or_else(|| panic!("no status from {}", self.nodes[i].name))
    }

    /// Waits until n1 directs and its node list passes `ok`, the table has not changed for
    /// 2 s, then a second for the worker to load it.
    fn wait_director(&self, ok: impl Fn(&[serde_json::Value]) -> bool) {
        let nodes = |s: &lab::Status| s.0["nodes"].as_array().cloned().unwrap_or_default();
        let reached = lab::wait_for(Duration::from_secs(25), Duration::from_millis(200), || {
            let s = self.status(0);
            (s.state() == "master" && ok(&nodes(&s))).then_some(())
        });
        if reached.is_none() {
            self.lab.dump_logs(40);
            panic!(
                "the director did not reach the wanted state: {}",
                self.status(0).0
            );
        }
        if let Err(e) = self
            .lab
            .wait_shares_stable(&self.daemons[0], Duration::from_secs(20))
        {
            panic!("{e}");
        }
    }

    /// One connection from every source to VIP:9090; the answering node per source.
    /// Panics naming the first failures, or a server that saw another address.
    fn round(&self, srcs: &[Ipv4Addr]) -> BTreeMap<Ipv4Addr, String> {
        let answers = clients::round(
            &self.client,
            srcs,
            self.lab.vip(),
            PORT,
            Duration::from_secs(2),
        );
        clients::tally(srcs, &answers).1
    }
}

fn per_node(answers: &BTreeMap<Ipv4Addr, String>) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for n in answers.values() {
        *per.entry(n.clone()).or_insert(0) += 1;
    }
    per
}

/// n2's row in the director's status.
fn row(g: &Group, name: &str) -> serde_json::Value {
    g.status(0).0["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Drain / undrain

#[test]
fn drain_sends_new_clients_elsewhere_keeps_pinned_ones_survives_a_restart_and_undrain_ends_it() {
    let Some(mut g) = group("maintenance_lab::drain", &[99, 89, 0]) else {
        return;
    };
    // Clients pinned before the drain: some on n2.
    let pinned_srcs = sources(&g.lab, ROUND, BATCHES[0]);
    let before = g.round(&pinned_srcs);
    let on_n2: Vec<Ipv4Addr> = before
        .iter()
        .filter(|(_, n)| *n == "n2")
        .map(|(s, _)| *s)
        .collect();
    println!("before the drain: {:?}", per_node(&before));
    assert!(!on_n2.is_empty(), "n2 got no clients before the drain");

    let out = g
        .lab
        .proxyha_ctl(&g.daemons[1], &["drain"])
        .expect("proxyha drain");
    assert!(out.status.success(), "drain exits 0: {out:?}");
    assert!(
        text(&out.stdout)
            .starts_with("n2 is draining: no new clients come here, pinned clients finish"),
        "{out:?}"
    );
    assert!(
        g.status(1).0["draining"] == true,
        "n2's status says draining"
    );
    assert!(
        g.lab
            .status_table(&g.daemons[1])
            .unwrap_or_default()
            .contains("DRAINING (no new clients; pinned clients finish"),
        "the table shows it"
    );
    g.wait_director(|_| row(&g, "n2")["share"] == 0.0);
    assert!(
        g.daemons[1]
            .log_text()
            .contains("maintenance: draining (no new clients; pinned clients finish)")
    );
    let again = g
        .lab
        .proxyha_ctl(&g.daemons[1], &["drain"])
        .expect("drain again");
    assert!(
        text(&again.stdout).contains("already draining"),
        "{again:?}"
    );

    // New clients: none on n2. Pinned clients: all where they were, n2's included.
    let fresh = g.round(&sources(&g.lab, ROUND, BATCHES[1]));
    println!("new clients while draining: {:?}", per_node(&fresh));
    assert_eq!(
        per_node(&fresh).get("n2"),
        None,
        "a new client landed on n2"
    );
    let after = g.round(&pinned_srcs);
    assert_eq!(
        after, before,
        "pinned clients stay on their node while n2 drains"
    );

    // A restart of n2's supervisor keeps the drain (state file in its state_dir).
    g.lab
        .stop(&g.daemons[1], Duration::from_secs(5))
        .expect("stopping n2's proxyha");
    g.daemons[1] = g
        .lab
        .start_proxyha(&g.nodes[1], &g.opts[1])
        .expect("restarting n2's proxyha");
    let restored = lab::wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        g.lab
            .status(&g.daemons[1])
            .ok()
            .filter(|s| s.0["director"].is_string())
    })
    .expect("n2 back with a director");
    assert!(restored.0["draining"] == true, "drain survived the restart");
    assert!(g.daemons[1].log_text().contains("restored from"));
    g.wait_director(|nodes| nodes.len() == 3 && row(&g, "n2")["share"] == 0.0);
    let fresh = g.round(&sources(&g.lab, ROUND, BATCHES[2]));
    println!("new clients after n2's restart: {:?}", per_node(&fresh));
    assert_eq!(
        per_node(&fresh).get("n2"),
        None,
        "a new client landed on n2"
    );

    // Undrain: new clients come back to n2.
    let out = g
        .lab
        .proxyha_ctl(&g.daemons[1], &["undrain"])
        .expect("proxyha undrain");
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).starts_with("n2 is back in service"),
        "{out:?}"
    );
    // Back in the table. Its share is capacity × load feedback; the feedback multiplier
    // kept integrating while n2 was out, so it need not be a third at once.
    g.wait_director(|_| row(&g, "n2")["share"].as_f64().unwrap_or(0.0) > 0.05);
    println!("n2 after undrain: {}", row(&g, "n2"));
    assert!(g.daemons[1].log_text().contains("maintenance: undrained"));
    assert!(g.status(1).0["draining"] == false);
    let fresh = g.round(&sources(&g.lab, ROUND, BATCHES[3]));
    let per = per_node(&fresh);
    println!("new clients after undrain: {per:?}");
    let n2 = per.get("n2").copied().unwrap_or(0);
    assert!(
        n2 as f64 >= 0.05 * ROUND as f64,
        "n2 got {n2} of {ROUND} new clients after undrain: {per:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Live reload

/// Replaces the line starting with `key =` in `d`'s config (a lab config has each once).
fn edit(d: &Daemon, key: &str, value: &str) -> String {
    let text = std::fs::read_to_string(&d.conf).expect("reading the config");
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "{key} not in {}", d.conf.display());
    let text = lines.join("\n") + "\n";
    std::fs::write(&d.conf, &text).expect("writing the config");
    text
}

/// Samples the VIP holders every 50 ms until stopped; every sample that is not exactly
/// `want`.
fn watch_vip(
    hosts: Vec<Host>,
    vip: Ipv4Addr,
    want: &'static str,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<Vec<String>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut wrong = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let holders: Vec<String> = hosts
                .iter()
                .filter(|h| h.serves(vip))
                .map(|h| h.name.clone())
                .collect();
            if holders != [want] {
                wrong.push(holders);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        wrong
    });
    (stop, handle)
}

#[test]
fn reload_applies_in_place_without_moving_the_vip_refuses_an_invalid_edit_and_restarts_on_identity_change()
 {
    let Some(g) = group("maintenance_lab::reload", &[99, 89]) else {
        return;
    };
    let n1 = &g.daemons[0];
    assert_eq!(g.lab.vip_holders(), vec!["n1"]);

    // In place: priority 99→95 (still above n2's 89) and a faster advert interval.
    let (stop, watcher) = watch_vip(g.nodes.clone(), g.lab.vip(), "n1");
    edit(n1, "priority", "95");
    edit(n1, "advert_interval_ms", "500");
    let t = Instant::now();
    let out = g.lab.proxyha_ctl(n1, &["reload"]).expect("proxyha reload");
    let took = t.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "reload: applied (changed: priority 99→95, advert_interval_ms 1000→500)\n"
    );
    println!(
        "proxyha reload (in place) answered in {} ms",
        took.as_millis()
    );
    let adopted = lab::wait_for(Duration::from_secs(3), Duration::from_millis(100), || {
        let s = g.status(1);
        (s.0["master_priority"] == 95 && s.0["advert_interval_ms"] == 500).then_some(())
    });
    assert!(
        adopted.is_some(),
        "n2 follows 95 at 500 ms: {}",
        g.status(1).0
    );
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let wrong = watcher.join().unwrap_or_default();
    assert!(
        wrong.is_empty(),
        "the VIP left n1 during an in-place reload: {wrong:?}"
    );
    let s = g.status(0);
    assert_eq!((s.state(), s.0["priority"].as_u64()), ("master", Some(95)));
    assert!(
        n1.log_text()
            .contains("reload: applied (changed: priority 99→95")
    );
    assert_eq!(s.counter("became_master"), 1, "n1 never left MASTER");

    // Nothing changed.
    let out = g.lab.proxyha_ctl(n1, &["reload"]).expect("proxyha reload");
    assert_eq!(
        text(&out.stdout),
        "reload: configuration unchanged\n",
        "{out:?}"
    );

    // An invalid edit: refused with file:line:col, the running config stays.
    let conf_text = edit(n1, "priority", "300");
    let line = conf_text
        .lines()
        .position(|l| l.starts_with("priority ="))
        .map_or(0, |i| i + 1);
    let out = g.lab.proxyha_ctl(n1, &["reload"]).expect("proxyha reload");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let want = format!(
        "{}:{line}:12: ha.priority = 300: must be 0..=254",
        n1.conf.display()
    );
    assert!(text(&out.stderr).contains(&want), "{want:?} in {out:?}");
    assert!(text(&out.stderr).contains("reload refused, the running configuration is kept"));
    assert!(n1.log_text().contains(&want), "the refusal is logged");
    let s = g.status(0);
    assert_eq!((s.state(), s.0["priority"].as_u64()), ("master", Some(95)));
    assert!(g.lab.is_running(n1.pid));

    // SIGHUP with priority 80: below n2's 89, so n2 preempts, as VRRP wants.
    edit(n1, "priority", "80");
    g.lab.signal(n1.pid, Signal::SIGHUP).expect("SIGHUP");
    let moved = lab::wait_for(Duration::from_secs(6), Duration::from_millis(100), || {
        (g.lab.vip_holders() == ["n2"]).then_some(())
    });
    assert!(
        moved.is_some(),
        "n2 did not preempt: {:?}",
        g.lab.vip_holders()
    );
    let log = n1.log_text();
    assert!(log.contains("reload: SIGHUP"));
    assert!(log.contains("reload: applied (changed: priority 95→80)"));

    // Identity: another lb_id restarts the VRRP instance; back at 99 it takes over again.
    edit(n1, "priority", "99");
    edit(n1, "lb_id", "52");
    let out = g.lab.proxyha_ctl(n1, &["reload"]).expect("proxyha reload");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        "reload: applied (changed: lb_id 51→52, priority 80→99)\n"
    );
    assert!(
        n1.log_text()
            .contains("reload: restarting the VRRP instance (lb_id 51→52)")
    );
    let back = lab::wait_for(Duration::from_secs(8), Duration::from_millis(100), || {
        let s = g.status(0);
        (s.state() == "master" && s.0["lb_id"] == 52 && g.lab.vip_holders() == ["n1"]).then_some(())
    });
    assert!(
        back.is_some(),
        "n1 back as master of lb_id 52: {}",
        g.status(0).0
    );
    assert!(
        g.lab.is_running(n1.pid),
        "the same process, not a restart of proxyha"
    );
}
