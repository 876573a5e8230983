//! Timers under load (issue 12 item 6): VRRP at 30 ms adverts while busy loops saturate every
//! CPU, proxyha (SCHED_FIFO + mlockall, `ha.rt_priority`), proxyha at normal scheduling, and
//! keepalived 2.2.7 (`vrrp_rt_priority` + `vrrp_no_swap`) side by side in one lab and one run:
//! false transitions during the load, the adverts' largest gap, then master crashes under the
//! same load (client-visible gap, ≥ 10 rounds).
//!
//! ```text
//! cargo build --release && target/release/examples/load_bench --minutes 10 --rounds 10
//! ```
//!
//! Lab: per implementation a pair of nodes (priorities 99/89) with its own VRID and VIP on one
//! bridge, a client probing each VIP every 10 ms and watching the adverts. The busy loops run
//! in this process at normal priority, one per CPU (the CPUs are shared by every namespace).
//! A false transition is the backup becoming master, or the master leaving it, while nothing
//! failed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use proxyha_lab::{self as lab, AdvertWatch, Daemon, Host, Kind, Lab, Prober, VrrpOpts};

#[derive(Parser)]
#[command(about = "VRRP timers under CPU saturation: proxyha vs keepalived")]
struct Args {
    /// Minutes of saturation before the crash rounds.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Master crashes per implementation (under the same load).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Advert interval, ms.
    #[arg(long, default_value_t = 30)]
    interval_ms: u32,
    /// Busy threads (default: one per CPU).
    #[arg(long)]
    busy: Option<usize>,
    /// SCHED_FIFO priority for the real-time rows.
    #[arg(long, default_value_t = 10)]
    rt_priority: u8,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One implementation's pair.
struct Pair {
    label: &'static str,
    kind: Kind,
    hosts: [Host; 2],
    opts: [VrrpOpts; 2],
    daemons: [Daemon; 2],
    prober: Prober,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("load_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Res<()> {
    let args = Args::parse();
    if !lab::require_root("load_bench") {
        std::process::exit(2);
    }
    let bin = lab::proxyha_next_to_exe()?;
    let mut lab = Lab::new()?.with_proxyha(&bin);
    let client = lab.add_host("c", 50)?;
    let rows: [(&'static str, Kind, Option<u8>); 3] = [
        (
            "proxyha (rt_priority, lock_memory)",
            Kind::Proxyha,
            Some(args.rt_priority),
        ),
        ("proxyha (normal scheduling)", Kind::Proxyha, None),
        (
            "keepalived 2.2.7 (vrrp_rt_priority, vrrp_no_swap)",
            Kind::Keepalived,
            Some(args.rt_priority),
        ),
    ];
    let mut pairs = Vec::new();
    for (i, (label, kind, rt)) in rows.into_iter().enumerate() {
        let g = i as u8;
        let vip = lab.addr(100 + g);
        let hosts = [
            lab.add_host(&format!("a{g}"), 11 + 10 * g)?,
            lab.add_host(&format!("b{g}"), 12 + 10 * g)?,
        ];
        for h in &hosts {
            h.serve_name(lab::ECHO_PORT)?;
        }
        let opts = [99u8, 89].map(|p| {
            let o = VrrpOpts::new(p, args.interval_ms).group(vip, 51 + g, 51 + g);
            match rt {
                Some(r) => o.realtime(r),
                None => o,
            }
        });
        let prober = Prober::start(&client, SocketAddrV4::new(vip, lab::ECHO_PORT))?;
        let b = lab.start(kind, &hosts[1], &opts[1])?;
        std::thread::sleep(Duration::from_millis(200));
        let a = lab.start(kind, &hosts[0], &opts[0])?;
        pairs.push(Pair {
            label,
            kind,
            hosts,
            opts,
            daemons: [a, b],
            prober,
        });
    }
    for p in &pairs {
        settle(p)?;
    }
    let watch = AdvertWatch::start(&client)?;

    // Saturation.
    let busy = args
        .busy
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..busy)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let before: Vec<[u64; 2]> = pairs.iter().map(|p| transitions(&lab, p)).collect();
    let span = Duration::from_secs_f64(args.minutes * 60.0);
    eprintln!(
        "load_bench: {busy} busy threads for {:.1} min at {} ms adverts",
        args.minutes, args.interval_ms
    );
    let started = Instant::now();
    let mut adverts: Vec<Vec<Instant>> = vec![Vec::new(); pairs.len()];
    let masters: Vec<Ipv4Addr> = pairs.iter().map(|p| p.hosts[0].addr).collect();
    while started.elapsed() < span {
        let chunk = Duration::from_secs(5).min(span.saturating_sub(started.elapsed()));
        // One collector for all: sort the captured adverts by sender.
        let got = collect_all(&watch, chunk);
        for (src, at) in got {
            if let Some(i) = masters.iter().position(|m| *m == src) {
                adverts[i].push(at);
            }
        }
    }
    let after: Vec<[u64; 2]> = pairs.iter().map(|p| transitions(&lab, p)).collect();

    // Master crashes under the same load.
    let mut gaps: Vec<Vec<Duration>> = Vec::new();
    for p in &mut pairs {
        gaps.push(crashes(&lab, p, &watch, args.rounds)?);
    }
    stop.store(true, Ordering::SeqCst);
    for s in spinners {
        let _ = s.join();
    }

    let o = VrrpOpts::new(89, args.interval_ms);
    println!();
    println!(
        "## VRRP under CPU saturation ({busy} busy threads, {:.1} min, {} ms adverts; crash rounds: {})",
        args.minutes, args.interval_ms, args.rounds
    );
    println!();
    println!(
        "| implementation | false transitions | adverts | advert gap p99 | max | crash gap median | max | theory MDI(89) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, p) in pairs.iter().enumerate() {
        let false_transitions = (after[i][0] - before[i][0]) + (after[i][1] - before[i][1]);
        let mut inter: Vec<Duration> = adverts[i].windows(2).map(|w| w[1] - w[0]).collect();
        inter.sort();
        let q = |v: &[Duration], f: f64| -> String {
            if v.is_empty() {
                return "-".into();
            }
            let k = ((v.len() as f64 - 1.0) * f).round() as usize;
            format!("{:.1} ms", v[k].as_secs_f64() * 1000.0)
        };
        let mut g = gaps[i].clone();
        g.sort();
        println!(
            "| {} | {false_transitions} | {} | {} | {} | {} | {} | {} ms |",
            p.label,
            adverts[i].len(),
            q(&inter, 0.99),
            q(&inter, 1.0),
            q(&g, 0.5),
            q(&g, 1.0),
            o.master_down_interval().as_millis()
        );
    }
    Ok(())
}

/// Every advert the client captures for `span`: (sender, arrival).
fn collect_all(watch: &AdvertWatch, span: Duration) -> Vec<(Ipv4Addr, Instant)> {
    let deadline = Instant::now() + span;
    let mut out = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match watch.next_any(left) {
            Some(a) => out.push((a.src, a.at)),
            None => break,
        }
    }
    out
}

/// Waits until the pair's first node alone holds its VIP and answers.
fn settle(p: &Pair) -> Res<()> {
    let vip = p.opts[0].vip.ok_or("no VIP")?;
    let limit = p.opts[0].master_down_interval() * 2 + Duration::from_secs(5);
    lab::wait_for(limit, Duration::from_millis(20), || {
        (p.hosts[0].serves(vip) && !p.hosts[1].serves(vip)).then_some(())
    })
    .ok_or_else(|| format!("{}: {} did not become master", p.label, p.hosts[0].name))?;
    p.prober
        .wait_answer(&p.hosts[0].name, Instant::now(), Duration::from_secs(3))
        .ok_or_else(|| format!("{}: no answer from {}", p.label, p.hosts[0].name))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// (backup became master, master left master) so far, from each daemon's own record.
fn transitions(lab: &Lab, p: &Pair) -> [u64; 2] {
    match p.kind {
        Kind::Proxyha => {
            let b = lab
                .status(&p.daemons[1])
                .map_or(0, |s| s.counter("became_master"));
            let a = p.daemons[0]
                .log_text()
                .lines()
                .filter(|l| l.contains("Entering BACKUP STATE"))
                .count() as u64;
            [b, a]
        }
        Kind::Keepalived => {
            let count = |d: &Daemon, what: &str| {
                d.log_text().lines().filter(|l| l.contains(what)).count() as u64
            };
            [
                count(&p.daemons[1], "Entering MASTER STATE"),
                count(&p.daemons[0], "Entering BACKUP STATE"),
            ]
        }
    }
}

/// `rounds` master crashes right after one of its adverts: the client-visible gaps.
fn crashes(lab: &Lab, p: &mut Pair, watch: &AdvertWatch, rounds: usize) -> Res<Vec<Duration>> {
    let mut gaps = Vec::new();
    let (a, b) = (p.hosts[0].clone(), p.hosts[1].clone());
    for round in 0..rounds {
        settle(p)?;
        p.prober.clear();
        watch.drain();
        watch
            .next_from(a.addr, Duration::from_secs(2))
            .ok_or_else(|| format!("{}: no advert from {}", p.label, a.name))?;
        let t = Instant::now();
        lab.crash(&p.daemons[0])?;
        let limit = p.opts[1].master_down_interval() + Duration::from_secs(3);
        p.prober
            .wait_answer(&b.name, t, limit)
            .ok_or_else(|| format!("{} round {round}: {} never answered", p.label, b.name))?;
        let g = lab::gap(&p.prober.samples(), t, &b.name).ok_or("no gap")?;
        eprintln!(
            "{:<50} round {round}: gap {} ms",
            p.label,
            g.gap.as_millis()
        );
        gaps.push(g.gap);
        a.flush_addr(p.opts[0].vip.ok_or("no VIP")?)?;
        a.link(true)?;
        p.daemons[0] = lab.start(p.kind, &a, &p.opts[0])?;
    }
    Ok(gaps)
}
