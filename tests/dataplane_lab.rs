//! Kernel check of the director data path (issue 3, direct and NAT mode): a bridge namespace, a
//! director, two real servers and a client, all built here. Needs root; skips loudly
//! without it, fails under PROXYHA_REQUIRE_ROOT_TESTS=1.
//!
//! Verifies: every connection succeeds, the answering node is the one our `bucket_of`
//! predicts (so nft's `jhash … seed S` is our jhash), servers see the real client address,
//! and after a bucket rewrite no pinned client moves while new clients follow the new table.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxyha::dataplane::{
    Dataplane, Desired, DirectorState, Mode, NftDataplane, NftOptions, PinReads, PinStage,
    PortPool, PortRedirect, Role, StickyEntry,
};
use proxyha::director::scheduler::bucket_of;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 100);
const DIR: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const N2: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const N3: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);
const SEED: u32 = 0x5eed_1234;
const BUCKETS: usize = 64;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// Runs a command with a timeout; panics with the command and its stderr on failure.
fn sh(args: &[&str]) -> String {
    try_sh(args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_sh(args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {args:?}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{args:?} timed out"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

struct Lab {
    prefix: String,
    servers: Vec<Child>,
}

impl Lab {
    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in ["b", "d", "n2", "n3", "c"] {
            let _ = try_sh(&["ip", "netns", "del", &self.ns(n)]);
        }
    }
}

const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9090)); s.listen(512)
def serve(c, a):
    try: c.sendall(("%s %s\n" % (name, a[0])).encode())
    finally: c.close()
while True:
    c, a = s.accept(); threading.Thread(target=serve, args=(c, a), daemon=True).start()
"#;

const CLIENT: &str = r#"
import socket, sys
for src in sys.argv[2:]:
    try:
        c = socket.socket(); c.settimeout(3); c.bind((src, 0)); c.connect((sys.argv[1], 9090))
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk: break
            data += chunk
        print(src, data.decode().strip()); c.close()
    except Exception as e:
        print(src, "ERROR", type(e).__name__)
"#;

fn build(lab: &mut Lab) {
    let b = lab.ns("b");
    for n in ["b", "d", "n2", "n3", "c"] {
        sh(&["ip", "netns", "add", &lab.ns(n)]);
        sh(&["ip", "-n", &lab.ns(n), "link", "set", "lo", "up"]);
    }
    sh(&[
        "ip",
        "-n",
        &b,
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "stp_state",
        "0",
        "mcast_snooping",
        "0",
    ]);
    sh(&["ip", "-n", &b, "link", "set", "br0", "up"]);
    for (n, addr) in [
        ("d", "10.88.0.1/16"),
        ("n2", "10.88.0.2/16"),
        ("n3", "10.88.0.3/16"),
        ("c", "10.88.1.99/16"),
    ] {
        let ns = lab.ns(n);
        let v = format!("v{n}");
        sh(&[
            "ip", "-n", &b, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        sh(&["ip", "-n", &b, "link", "set", &v, "master", "br0", "up"]);
        sh(&["ip", "-n", &ns, "addr", "add", addr, "dev", "eth0"]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    }
    // The director holds the VIP on its interface (the VRRP side's job in the product).
    sh(&[
        "ip",
        "-n",
        &lab.ns("d"),
        "addr",
        "add",
        "10.88.0.100/32",
        "dev",
        "eth0",
    ]);
    let c = lab.ns("c");
    for i in 0..60 {
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            &format!("10.88.1.{}/16", 100 + i),
            "dev",
            "eth0",
        ]);
    }
    for i in 0..30 {
        sh(&[
            "ip",
            "-n",
            &c,
            "addr",
            "add",
            &format!("10.88.2.{}/16", 100 + i),
            "dev",
            "eth0",
        ]);
    }
    for (n, name) in [("d", "director"), ("n2", "n2"), ("n3", "n3")] {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(n), "python3", "-c", SERVER, name])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting a python3 server");
        lab.servers.push(child);
    }
}

fn dp(lab: &Lab, n: &str) -> NftDataplane {
    NftDataplane::new(NftOptions {
        wrap: vec!["ip".into(), "netns".into(), "exec".into(), lab.ns(n)],
        timeout: Duration::from_secs(10),
        netns: Some(format!("/run/netns/{}", lab.ns(n)).into()),
    })
}

fn desired(mode: Mode, role: Role) -> Desired {
    Desired {
        vip: VIP,
        interface: "eth0".into(),
        redirects: vec![PortRedirect {
            port: 9090,
            to: 9090,
        }],
        mode,
        role,
    }
}

fn director_role(buckets: Vec<Option<Ipv4Addr>>) -> Role {
    Role::Director(DirectorState {
        self_addr: DIR,
        nodes: vec![N2, N3],
        pools: vec![PortPool {
            ports: vec![9090],
            serving: vec![DIR, N2, N3],
            buckets,
        }],
        hash_seed: SEED,
        sticky_idle_s: 300,
        sticky_preload: vec![],
        sticky_void: vec![],
    })
}

fn node_name(n: Option<Ipv4Addr>) -> &'static str {
    match n {
        Some(a) if a == N2 => "n2",
        Some(a) if a == N3 => "n3",
        _ => "director",
    }
}

/// Connects from each source; returns source → (node, peer address seen).
fn connect(lab: &Lab, sources: &[Ipv4Addr]) -> BTreeMap<Ipv4Addr, (String, String)> {
    let mut args = vec![
        "ip".to_string(),
        "netns".into(),
        "exec".into(),
        lab.ns("c"),
        "python3".into(),
        "-c".into(),
        CLIENT.into(),
        VIP.to_string(),
    ];
    args.extend(sources.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sh(&argv);
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let src: Ipv4Addr = f.next()?.parse().ok()?;
            Some((
                src,
                (f.next()?.to_string(), f.next().unwrap_or("").to_string()),
            ))
        })
        .collect()
}

fn wait_listening(lab: &Lab) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in ["d", "n2", "n3"] {
        loop {
            let out = try_sh(&[
                "ip",
                "netns",
                "exec",
                &lab.ns(n),
                "ss",
                "-Htln",
                "sport",
                "= :9090",
            ])
            .unwrap_or_default();
            if !out.trim().is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server in {n} not listening within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn direct_mode_director_spreads_by_kernel_jhash_and_keeps_pins() {
    run_lab(Mode::Direct, "r");
}

#[test]
fn nat_mode_director_spreads_by_kernel_jhash_and_keeps_pins() {
    run_lab(Mode::Nat, "t");
}

fn run_lab(mode: Mode, tag: &str) {
    if !is_root() {
        assert!(
            std::env::var("PROXYHA_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
            "dataplane lab needs root"
        );
        eprintln!(
            "SKIPPED direct_mode_director_spreads_by_kernel_jhash_and_keeps_pins: needs root"
        );
        return;
    }
    let mut lab = Lab {
        prefix: format!("phdp{}{tag}", std::process::id()),
        servers: Vec::new(),
    };
    build(&mut lab);
    wait_listening(&lab);

    let mut scanners = [dp(&lab, "n2"), dp(&lab, "n3")];
    for (s, addr) in scanners.iter_mut().zip([N2, N3]) {
        s.apply(&desired(
            mode,
            Role::Scanning {
                self_addr: addr,
                director: Some(DIR),
            },
        ))
        .expect("applying the scanning role");
    }
    let nodes = [None, Some(N2), Some(N3)];
    let table1: Vec<Option<Ipv4Addr>> = (0..BUCKETS).map(|b| nodes[b % 3]).collect();
    let mut director = dp(&lab, "d");
    director
        .apply(&desired(mode, director_role(table1.clone())))
        .expect("applying the director role");
    // Applying twice is a no-op (idempotent), not an error.
    director
        .apply(&desired(mode, director_role(table1.clone())))
        .expect("re-applying the director role");

    let first: Vec<Ipv4Addr> = (0..60).map(|i| Ipv4Addr::new(10, 88, 1, 100 + i)).collect();
    let got = connect(&lab, &first);
    let mut share: BTreeMap<String, usize> = BTreeMap::new();
    for src in &first {
        let (node, peer) = got
            .get(src)
            .unwrap_or_else(|| panic!("no answer line for {src}"));
        assert_ne!(node, "ERROR", "connection from {src} failed");
        let want = node_name(table1[bucket_of(*src, BUCKETS, SEED)]);
        assert_eq!(
            node, want,
            "client {src}: kernel jhash bucket disagrees with bucket_of"
        );
        assert_eq!(
            peer,
            &src.to_string(),
            "server {node} saw {peer}, not the client address {src}"
        );
        *share.entry(node.clone()).or_default() += 1;
    }
    eprintln!("{mode}: round 1: 60/60 connections; share {share:?}");
    assert_eq!(share.len(), 3, "every node served some clients: {share:?}");

    // Rewrite the table (rotate every bucket to the next node): pins must hold.
    let table2: Vec<Option<Ipv4Addr>> = (0..BUCKETS).map(|b| nodes[(b + 1) % 3]).collect();
    director
        .apply(&desired(mode, director_role(table2.clone())))
        .expect("applying the new table");
    let read = director
        .read_pins(&PinReads {
            fresh: true,
            full: true,
            ..PinReads::default()
        })
        .expect("reading pins over netlink");
    let pins = read.full.unwrap_or_default();
    assert_eq!(
        pins.len(),
        60,
        "one pin per client survived the table change"
    );
    // New pins also went into the `fresh` map, where the director reads new pins from.
    assert_eq!(read.fresh.len(), 60, "every new pin noted in fresh");
    // Looking pins up by key: found, with their node; an unknown key is missing.
    let keys: Vec<(Ipv4Addr, u16)> = first
        .iter()
        .map(|c| (*c, 9090))
        .chain([(Ipv4Addr::new(10, 88, 9, 9), 9090)])
        .collect();
    let looked = director
        .read_pins(&PinReads {
            lookup: keys,
            ..PinReads::default()
        })
        .expect("looking pins up");
    assert_eq!((looked.found.len(), looked.missing.len()), (60, 1));
    let again = connect(&lab, &first);
    let moved = first
        .iter()
        .filter(|s| again.get(*s).map(|r| &r.0) != got.get(*s).map(|r| &r.0))
        .count();
    eprintln!("{mode}: round 2: after rotating all buckets, {moved} of 60 pinned clients moved");
    assert_eq!(moved, 0);
    let fresh: Vec<Ipv4Addr> = (0..30).map(|i| Ipv4Addr::new(10, 88, 2, 100 + i)).collect();
    let new = connect(&lab, &fresh);
    let mut followed = 0;
    for src in &fresh {
        let (node, _) = new
            .get(src)
            .unwrap_or_else(|| panic!("no answer line for {src}"));
        assert_eq!(
            node,
            node_name(table2[bucket_of(*src, BUCKETS, SEED)]),
            "new client {src}"
        );
        followed += 1;
    }
    eprintln!("{mode}: round 2: {followed}/30 new clients followed the new table");
    staging(&mut scanners[0], mode, &pins);

    director.teardown().expect("tearing down the director");
    for s in &mut scanners {
        s.teardown().expect("tearing down a scanning node");
    }
    for n in ["d", "n2", "n3"] {
        let tables = sh(&["ip", "netns", "exec", &lab.ns(n), "nft", "list", "tables"]);
        assert!(!tables.contains("proxyha"), "table left in {n}: {tables}");
        let rules = sh(&["ip", "-n", &lab.ns(n), "rule", "show"]);
        assert!(
            rules.starts_with("0:"),
            "local rule back at 0 in {n}: {rules}"
        );
        assert!(
            !rules.contains("fwmark"),
            "fwmark rule left in {n}: {rules}"
        );
    }
    let lo = sh(&["ip", "-n", &lab.ns("n2"), "addr", "show", "dev", "lo"]);
    assert!(!lo.contains("10.88.0.100"), "VIP left on lo: {lo}");
}

/// A standby candidate keeps the director's pins in its own `sticky` map (staged by change);
/// taking over keeps them (minus the void ones) without loading; scanning again flushes.
fn staging(n2: &mut NftDataplane, mode: Mode, director_pins: &[StickyEntry]) {
    let held = |dp: &mut NftDataplane| -> BTreeMap<(Ipv4Addr, u16), u32> {
        dp.read_pins(&PinReads {
            full: true,
            ..PinReads::default()
        })
        .expect("reading n2's sticky map")
        .full
        .unwrap_or_default()
        .into_iter()
        .map(|e| ((e.client, e.port), e.mark))
        .collect()
    };
    let want: BTreeMap<_, _> = director_pins
        .iter()
        .map(|e| ((e.client, e.port), e.mark))
        .collect();
    n2.stage_pins(&PinStage {
        upserts: director_pins.to_vec(),
        removed: vec![],
        timeout_ms: 300_000,
    })
    .expect("staging the director's pins on n2");
    assert_eq!(held(n2), want, "n2 holds every staged pin");
    // A moved pin and a removed one, by change only.
    let mut moved = director_pins[0];
    moved.mark = if moved.mark == u32::from(N3) {
        u32::from(N2)
    } else {
        u32::from(N3)
    };
    let removed = director_pins[1];
    n2.stage_pins(&PinStage {
        upserts: vec![moved],
        removed: vec![removed],
        timeout_ms: 300_000,
    })
    .expect("staging a change");
    let mut want2 = want.clone();
    want2.insert((moved.client, moved.port), moved.mark);
    want2.remove(&(removed.client, removed.port));
    assert_eq!(
        held(n2),
        want2,
        "the change is in n2's map, nothing else moved"
    );
    // n2 takes over: nothing to load, one void pin to delete; the rest stays.
    let void = director_pins[2];
    let mut role = director_role((0..BUCKETS).map(|_| None).collect());
    if let Role::Director(d) = &mut role {
        d.self_addr = N2;
        d.nodes = vec![N3, DIR];
        d.sticky_void = vec![void];
    }
    n2.apply(&desired(mode, role))
        .expect("n2 taking over with staged pins");
    assert_eq!(held(n2), want2, "staged pins survive the takeover");
    // The worker deletes the void ones right after (the rules ignore them meanwhile).
    n2.delete_pins(&[void]).expect("deleting the void pin");
    want2.remove(&(void.client, void.port));
    assert_eq!(held(n2), want2, "only the void one went");
    eprintln!(
        "{mode}: staging: {} pins staged on n2, a move and a removal by change, {} kept through its takeover",
        want.len(),
        want2.len()
    );
    // Scanning again: its own pins go (the next director replicates anew).
    n2.apply(&desired(
        mode,
        Role::Scanning {
            self_addr: N2,
            director: Some(DIR),
        },
    ))
    .expect("n2 scanning again");
    assert!(
        held(n2).is_empty(),
        "a node that starts scanning flushes its maps"
    );
}
