//! Scale benchmark (the scale issue): the director's control-plane cost with many live pins,
//! replication, and a director crash, with the old path's figures beside the new one.
//!
//! ```text
//! cargo build --release && sudo target/release/examples/scale_bench --pins 1000,20000,100000
//! ```
//!
//! Lab per size: n1 (99, the director), n2 (89) and n3 (79), both standby candidates, VIP:9090
//! redirected, a client namespace. N pins are injected into n1's kernel maps as its data path
//! creates them for new clients (`sticky`, and `fresh` where the director learns of new pins),
//! plus 50 real long-lived connections (distinct client addresses, an echo every 100 ms). Then:
//! - pins each standby holds 2 s after the injection;
//! - over 10 s: the director's CPU (itself + the processes it spawned, from /proc/PID/stat), its
//!   RSS, the replication bytes it sent (its `tx_pins_bytes` counter);
//! - the old path in the same map: one `nft -j list map` (what the director ran every second)
//!   and the `nft -f` load of all N (what a new director ran before its VIP);
//! - the standby n2's CPU and RSS over the same 10 s (it stages the pins it holds into its own
//!   kernel map as they change);
//! - a director crash: n2's time from MASTER to its data path with every pin in it (staged:
//!   nothing to load) and to its VIP, and how many of the 50 connections continue;
//! - then n2, directing with every pin, stops: SIGTERM to exit.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use clap::Parser;
use proxyha_lab::clients::{self, sources};
use proxyha_lab::{self as lab, Daemon, Lab, VrrpOpts};
use socket2::{Domain, Socket, Type};

#[derive(Parser)]
#[command(about = "director scale benchmark: CPU, RSS, replication and takeover with many pins")]
struct Args {
    /// Pin counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1000,20000,100000")]
    pins: Vec<u32>,
    /// Seconds of CPU / replication measurement per size.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

const PORT: u16 = 9090;
const ECHO: u16 = 9092;
const FLOWS: usize = 50;

/// CPU ticks of `pid` and its waited-for children, and the tick rate.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: fields 14..=17 are utime stime cutime cstime.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11..15).map_or(0, |v| v.iter().sum())
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

fn status(lab: &Lab, d: &Daemon) -> lab::Status {
    lab::wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        lab.status(d).ok()
    })
    .unwrap_or_else(|| panic!("status of {} failed", d.host.name))
}

fn pins_of(lab: &Lab, d: &Daemon) -> u64 {
    status(lab, d).0["pins"].as_u64().unwrap_or(0)
}

/// A line's timestamp (`2026-12-02T02:37:11.248Z …`) as ms since midnight.
fn log_ms(line: &str) -> Option<u64> {
    let t = line.get(11..23)?;
    let (h, rest) = t.split_once(':')?;
    let (m, s) = rest.split_once(':')?;
    let secs: f64 = s.parse().ok()?;
    Some(
        (h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60) * 1000
            + (secs * 1000.0) as u64,
    )
}

struct Row {
    pins: u32,
    cpu_pct: f64,
    rss: f64,
    repl_mbit: f64,
    held: (u64, u64),
    old_dump_s: f64,
    old_load_s: f64,
    ready_ms: Option<u64>,
    master_to_vip_ms: Option<u64>,
    flows_kept: usize,
    standby_cpu_pct: f64,
    standby_rss: f64,
    shutdown_ms: Option<u64>,
}

fn measure(n: u32, secs: u64) -> Row {
    let bin = lab::proxyha_next_to_exe().expect("the proxyha binary (cargo build --release)");
    let mut lab = Lab::new().expect("creating the lab").with_proxyha(bin);
    let (client, nodes) = lab.add_client_and_nodes(3).expect("adding namespaces");
    for h in &nodes {
        h.serve_peer(PORT).expect("peer server");
        h.serve_echo(ECHO).expect("starting the echo server");
    }
    // More sources than flows: those the director sends to itself die with it, by nature;
    // the 50 measured are on n2 and n3.
    let srcs = sources(&lab, FLOWS * 2, 1);
    clients::add_sources(&lab, &client, &nodes, &srcs).expect("client addresses");
    let daemons: Vec<Daemon> = nodes
        .iter()
        .zip([99u8, 89, 79])
        .map(|(h, p)| {
            lab.start_proxyha(h, &VrrpOpts::new(p, 1000).redirects(&[PORT, ECHO]))
                .expect("starting proxyha")
        })
        .collect();
    lab::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let s = status(&lab, &daemons[0]);
        let k = s.0["nodes"].as_array().map_or(0, |a| a.len());
        (s.state() == "master" && k == 3).then_some(())
    })
    .expect("n1 directing three nodes");
    std::thread::sleep(Duration::from_secs(3));
    // 50 long-lived connections first (real pins), then the injected ones.
    let vip = lab.vip();
    let streams = client
        .run_in(move || {
            srcs.iter()
                .map(|src| {
                    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
                    s.bind(&SocketAddr::V4(SocketAddrV4::new(*src, 0)).into())?;
                    s.connect_timeout(
                        &SocketAddr::V4(SocketAddrV4::new(vip, ECHO)).into(),
                        Duration::from_secs(2),
                    )?;
                    Ok(std::net::TcpStream::from(s))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("client namespace")
        .expect("50 connections via the VIP");
    let mut flows: Vec<(std::net::TcpStream, String, bool)> = streams
        .into_iter()
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while let Ok(1) = (&s).read(&mut b) {
                if b[0] == b'\n' {
                    break;
                }
                line.push(b[0]);
            }
            s.set_read_timeout(Some(Duration::from_millis(2))).ok();
            (s, String::from_utf8_lossy(&line).into_owned(), true)
        })
        .filter(|f| f.1 == "n2" || f.1 == "n3")
        .take(FLOWS)
        .collect();
    assert_eq!(flows.len(), FLOWS, "enough connections on n2/n3");
    let to = [nodes[1].addr, nodes[2].addr];
    let injected = lab::pins::pins(n, PORT, &to, Duration::from_secs(290));
    let old_load = lab::pins::inject(&nodes[0], &injected, Duration::from_secs(300), lab.dir())
        .expect("injecting pins");
    let t_inj = Instant::now();
    std::thread::sleep(Duration::from_secs(2).saturating_sub(t_inj.elapsed()));
    let held = (pins_of(&lab, &daemons[1]), pins_of(&lab, &daemons[2]));
    // The old path's per-second dump, in the same map.
    let t = Instant::now();
    let _ = nodes[0].exec("nft", &["-j", "list", "map", "ip", "proxyha", "sticky"]);
    let old_dump = t.elapsed();
    // Steady state: CPU, RSS, replication bytes.
    std::thread::sleep(Duration::from_secs(3));
    let pid = daemons[0].pid;
    let bytes0 = status(&lab, &daemons[0]).counter("membership_tx_pins_bytes");
    let ticks0 = cpu_ticks(pid);
    let standby_ticks0 = cpu_ticks(daemons[1].pid);
    let t0 = Instant::now();
    let exchange = |flows: &mut Vec<(std::net::TcpStream, String, bool)>| {
        for f in flows.iter_mut().filter(|f| f.2) {
            if (&f.0).write_all(b"ping\n").is_err() {
                f.2 = false;
                continue;
            }
            let mut buf = [0u8; 64];
            match (&f.0).read(&mut buf) {
                Ok(0) => f.2 = false,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => f.2 = false,
            }
        }
    };
    while t0.elapsed() < Duration::from_secs(secs) {
        exchange(&mut flows);
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = t0.elapsed().as_secs_f64();
    // /proc counts in USER_HZ, 100 on Linux whatever the kernel's HZ.
    let tck = 100.0;
    let cpu_pct = (cpu_ticks(pid) - ticks0) as f64 / tck / wall * 100.0;
    let standby_cpu_pct = (cpu_ticks(daemons[1].pid) - standby_ticks0) as f64 / tck / wall * 100.0;
    let rss = rss_mib(pid);
    let standby_rss = rss_mib(daemons[1].pid);
    let bytes1 = status(&lab, &daemons[0]).counter("membership_tx_pins_bytes");
    let repl_mbit = (bytes1 - bytes0) as f64 * 8.0 / wall / 1e6;
    // The director crashes; the flows keep exchanging.
    lab.crash(&daemons[0]).expect("crashing n1");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        exchange(&mut flows);
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = flows.iter().filter(|f| f.2).count();
    // The new director, all pins in its map, stops (SIGTERM to exit: adverts, VIP, teardown).
    let t = Instant::now();
    lab.terminate(&daemons[1]).expect("SIGTERM to n2");
    let shutdown_ms = lab
        .wait_exit(daemons[1].pid, Duration::from_secs(10))
        .map(|_| t.elapsed().as_millis() as u64);
    let log = std::fs::read_to_string(&daemons[1].log).unwrap_or_default();
    let master = log
        .lines()
        .find(|l| l.contains("Entering MASTER STATE"))
        .and_then(log_ms);
    // What the new director found: staged pins (nothing to load) or a load of all.
    let continuing = log
        .lines()
        .find(|l| l.contains("client assignments of the previous director"))
        .map(|l| l.split_once("INFO ").map_or(l, |(_, r)| r));
    // MASTER → the director data path in the kernel (the VIP waits for it).
    let from = log
        .lines()
        .position(|l| l.contains("Entering MASTER STATE"))
        .unwrap_or(0);
    let ready = log
        .lines()
        .skip(from)
        .find(|l| l.contains("data path applied"))
        .and_then(log_ms);
    let ready_ms = master.zip(ready).map(|(m, r)| r.saturating_sub(m));
    let vip = log
        .lines()
        .find(|l| l.contains("setting VIPs"))
        .and_then(log_ms);
    let master_to_vip_ms = master.zip(vip).map(|(m, v)| v.saturating_sub(m));
    if std::env::var_os("SCALE_BENCH_LOG").is_some() {
        for l in log.lines().skip(from).take(40) {
            println!("    n2: {l}");
        }
        // Its stop: the last lines.
        let lines: Vec<&str> = log.lines().collect();
        for l in &lines[lines.len().saturating_sub(16)..] {
            println!("    n2: {l}");
        }
        // The successor it handed over to.
        let log3 = std::fs::read_to_string(&daemons[2].log).unwrap_or_default();
        let lines: Vec<&str> = log3.lines().collect();
        for l in &lines[lines.len().saturating_sub(14)..] {
            println!("    n3: {l}");
        }
    }
    println!(
        "  {n:>7} pins: n2/n3 hold {}/{} after 2 s; director cpu {cpu_pct:.1} %, rss {rss:.1} MiB, \
         replication {repl_mbit:.3} Mbit/s; standby n2 cpu {standby_cpu_pct:.1} %, rss {standby_rss:.1} MiB; after the crash: {} (MASTER → data path {ready_ms:?} ms, → VIP {master_to_vip_ms:?} ms), \
         {kept}/{FLOWS} connections continue; n2 SIGTERM to exit {shutdown_ms:?} ms; old path: nft -j list {:.3} s, nft -f load {:.3} s",
        held.0,
        held.1,
        continuing.unwrap_or("no pins continued"),
        old_dump.as_secs_f64(),
        old_load.as_secs_f64()
    );
    Row {
        pins: n,
        cpu_pct,
        rss,
        repl_mbit,
        held,
        old_dump_s: old_dump.as_secs_f64(),
        old_load_s: old_load.as_secs_f64(),
        ready_ms,
        master_to_vip_ms,
        flows_kept: kept,
        standby_cpu_pct,
        standby_rss,
        shutdown_ms,
    }
}

fn main() {
    let args = Args::parse();
    if !lab::require_root("scale_bench") {
        std::process::exit(2);
    }
    let rows: Vec<Row> = args.pins.iter().map(|n| measure(*n, args.secs)).collect();
    println!();
    println!(
        "| live pins | director CPU (self + children) | RSS | replication | standbys hold after 2 s | \
         standby CPU / RSS | takeover: MASTER → data path ready / → VIP | connections kept | \
         director SIGTERM → exit | old: `nft -j list` (every s) | old: `nft -f` load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} % | {:.1} MiB | {:.3} Mbit/s | {} / {} | {:.1} % / {:.1} MiB | {} ms / {} ms | {}/{FLOWS} | {} ms | {:.3} s | {:.3} s |",
            r.pins,
            r.cpu_pct,
            r.rss,
            r.repl_mbit,
            r.held.0,
            r.held.1,
            r.standby_cpu_pct,
            r.standby_rss,
            r.ready_ms.map_or("-".into(), |m| m.to_string()),
            r.master_to_vip_ms.map_or("-".into(), |m| m.to_string()),
            r.flows_kept,
            r.shutdown_ms.map_or("-".into(), |m| m.to_string()),
            r.old_dump_s,
            r.old_load_s
        );
    }
}
