//! Failover benchmark (issue 2 item 10, BRIEF §7): the client-visible gap of a master crash
//! and of a graceful stop (SIGTERM), at 1000 ms and 100 ms adverts, proxyha and keepalived
//! 2.2.7 in the same run, plus proxyha's advert jitter at 30 ms.
//!
//! ```text
//! cargo build --release && sudo target/release/examples/failover_bench --rounds 5
//! ```
//! (`cargo build --release` builds the `proxyha` binary the example runs; it is found next to
//! the example's directory, or through `$PROXYHA_BIN`.)
//!
//! Lab: nodes n1 (priority 99) and n2 (priority 89) on a bridge, a client probing VIP:9091
//! every 10 ms (a TCP server on each node answers with its name). One round: n1 is master
//! and serving; the client waits for the next advert from n1 on a raw socket joined to
//! 224.0.0.18 and triggers the event right after it — this removes the random phase between
//! the master's last advert and the event, so both implementations are measured at the same
//! point of the advert cycle (the worst case for a crash: a full Master_Down_Interval). Gap
//! = first success answered by n2 − last success before it. n1 is then restarted (a crashed
//! n1 gets its link back and its stale VIP removed, like a rebooted box) and preempts.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use clap::Parser;
use proxyha_lab::{self as lab, AdvertWatch, Daemon, Host, Kind, Lab, Prober, VrrpOpts};

#[derive(Parser)]
#[command(about = "VRRP failover benchmark: proxyha vs keepalived in a network-namespace lab")]
struct Args {
    /// Rounds per (implementation, interval, event).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Advert intervals to measure, in ms.
    #[arg(long, value_delimiter = ',', default_value = "1000,100")]
    intervals: Vec<u32>,
    /// Implementations to measure (proxyha, keepalived).
    #[arg(long, value_delimiter = ',', default_value = "proxyha,keepalived")]
    impls: Vec<String>,
    /// Seconds of advert capture for the 30 ms jitter measurement (0 = skip).
    #[arg(long, default_value_t = 10)]
    jitter_secs: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    Crash,
    Sigterm,
    /// SIGTERM with load sharing on: proxyha hands the director role over explicitly
    /// (`director::cluster::handover`); keepalived has no such path (its row shows "-").
    Handover,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The redirected port of the handover rows (its listener keeps the port monitor content).
const REDIRECTED: u16 = 9090;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("failover_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Res<()> {
    let args = Args::parse();
    if !lab::require_root("failover_bench") {
        std::process::exit(2);
    }
    let mut kinds = Vec::new();
    for s in &args.impls {
        kinds.push(match s.as_str() {
            "proxyha" => Kind::Proxyha,
            "keepalived" => Kind::Keepalived,
            other => return Err(format!("--impls {other}: must be proxyha or keepalived").into()),
        });
    }
    let bin = if kinds.contains(&Kind::Proxyha) {
        Some(lab::proxyha_next_to_exe()?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for &interval in &args.intervals {
        for event in [Event::Crash, Event::Sigterm, Event::Handover] {
            let mut row = Vec::new();
            for &kind in &kinds {
                if event == Event::Handover && kind != Kind::Proxyha {
                    row.push((kind, Vec::new()));
                    continue;
                }
                let gaps = measure(bin.as_deref(), kind, interval, event, args.rounds)?;
                row.push((kind, gaps));
            }
            rows.push((interval, event, row));
        }
    }
    println!();
    println!(
        "## Failover gap (client-visible, ms; {} rounds each, priorities 99/89)",
        args.rounds
    );
    println!();
    let mut header = String::from("| advert interval | event | theory |");
    let mut sep = String::from("|---|---|---|");
    for k in &kinds {
        header.push_str(&format!(" {0} median | {0} max |", k.as_str()));
        sep.push_str("---|---|");
    }
    println!("{header}");
    println!("{sep}");
    for (interval, event, row) in &rows {
        let o = VrrpOpts::new(89, *interval);
        let theory = match event {
            Event::Crash => format!("MDI(89) = {}", o.master_down_interval().as_millis()),
            Event::Sigterm => format!("Skew(89) = {}", o.skew_time().as_millis()),
            Event::Handover => "ARP + data path".to_string(),
        };
        let ev = match event {
            Event::Crash => "crash (SIGKILL + link down)",
            Event::Sigterm => "SIGTERM",
            Event::Handover => "planned stop (SIGTERM, load sharing on: handover)",
        };
        let mut line = format!("| {interval} ms | {ev} | {theory} |");
        for (_, gaps) in row {
            line.push_str(&format!(
                " {} | {} |",
                fmt_ms(median(gaps)),
                fmt_ms(gaps.iter().max().copied())
            ));
        }
        println!("{line}");
    }
    if args.jitter_secs > 0 {
        println!();
        println!(
            "## Advert jitter at 30 ms (inter-arrival − 30 ms, at the client, {} s)",
            args.jitter_secs
        );
        println!();
        println!("| implementation | adverts | median | p99 | max |");
        println!("|---|---|---|---|---|");
        for &kind in &kinds {
            let (n, med, p99, max) =
                jitter(bin.as_deref(), kind, Duration::from_secs(args.jitter_secs))?;
            println!(
                "| {} | {n} | {med:.2} ms | {p99:.2} ms | {max:.2} ms |",
                kind.as_str()
            );
        }
    }
    Ok(())
}

fn fmt_ms(d: Option<Duration>) -> String {
    d.map(|d| d.as_millis().to_string())
        .unwrap_or_else(|| "-".into())
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

struct Bench {
    lab: Lab,
    n1: Host,
    n2: Host,
    client: Host,
    kind: Kind,
    o1: VrrpOpts,
    o2: VrrpOpts,
}

fn build(bin: Option<&std::path::Path>, kind: Kind, interval: u32) -> Res<Bench> {
    let mut lab = Lab::new()?;
    if let Some(b) = bin {
        lab = lab.with_proxyha(b);
    }
    let n1 = lab.add_host("n1", 11)?;
    let n2 = lab.add_host("n2", 12)?;
    let client = lab.add_host("c", 50)?;
    n1.serve_name(lab::ECHO_PORT)?;
    n2.serve_name(lab::ECHO_PORT)?;
    Ok(Bench {
        lab,
        n1,
        n2,
        client,
        kind,
        o1: VrrpOpts::new(99, interval),
        o2: VrrpOpts::new(89, interval),
    })
}

/// Waits until n1 alone holds the VIP and answers the client.
fn settle(b: &Bench, prober: &Prober) -> Res<()> {
    let limit = b.o1.master_down_interval() * 2 + Duration::from_secs(3);
    let t = Instant::now();
    lab::wait_for(limit, Duration::from_millis(20), || {
        (b.lab.vip_holders() == ["n1"]).then_some(())
    })
    .ok_or_else(|| {
        format!(
            "{}: n1 did not become the only VIP holder within {limit:?}",
            b.kind.as_str()
        )
    })?;
    prober
        .wait_answer(
            "n1",
            Instant::now(),
            limit.saturating_sub(t.elapsed()) + Duration::from_secs(1),
        )
        .ok_or_else(|| format!("{}: client got no answer from n1", b.kind.as_str()))?;
    // A few adverts so n2 has adopted n1 as master.
    std::thread::sleep(b.o1.interval() * 2);
    Ok(())
}

fn measure(
    bin: Option<&std::path::Path>,
    kind: Kind,
    interval: u32,
    event: Event,
    rounds: usize,
) -> Res<Vec<Duration>> {
    let mut b = build(bin, kind, interval)?;
    if event == Event::Handover {
        // Load sharing on (a redirected port with a listener on each node), so the nodes
        // speak the membership protocol; the probe stays on the direct-only port.
        for h in [&b.n1, &b.n2] {
            h.serve_name(REDIRECTED)?;
        }
        b.o1 = b.o1.clone().redirects(&[REDIRECTED]);
        b.o2 = b.o2.clone().redirects(&[REDIRECTED]);
    }
    let target = SocketAddrV4::new(b.lab.vip(), lab::ECHO_PORT);
    let prober = Prober::start(&b.client, target)?;
    let watch = AdvertWatch::start(&b.client)?;
    let _d2 = b.lab.start(kind, &b.n2, &b.o2)?;
    let mut d1: Daemon = b.lab.start(kind, &b.n1, &b.o1)?;
    let mut gaps = Vec::new();
    for round in 0..rounds {
        settle(&b, &prober)?;
        if event == Event::Handover {
            // n2's first report (with its candidacy) follows n1's first announcement.
            std::thread::sleep(Duration::from_millis(1500));
        }
        prober.clear();
        watch.drain();
        let advert = watch.next_from(b.n1.addr, b.o1.interval() * 3 + Duration::from_secs(1));
        if advert.is_none() {
            return Err(format!("{}: no advert from n1 seen by the client", kind.as_str()).into());
        }
        let t_event = Instant::now();
        match event {
            Event::Crash => b.lab.crash(&d1)?,
            Event::Sigterm | Event::Handover => b.lab.terminate(&d1)?,
        }
        let limit = b.o2.master_down_interval() + Duration::from_secs(3);
        if prober.wait_answer("n2", t_event, limit).is_none() {
            b.lab.dump_logs(30);
            return Err(format!(
                "{} {event:?} round {round}: n2 never answered within {limit:?}",
                kind.as_str()
            )
            .into());
        }
        let g = lab::gap(&prober.samples(), t_event, "n2").ok_or("no gap computed")?;
        eprintln!(
            "{:<10} {:>4} ms {:?} round {round}: gap {} ms (first n2 answer {} ms after the event)",
            kind.as_str(),
            interval,
            event,
            g.gap.as_millis(),
            g.since_event.as_millis()
        );
        gaps.push(g.gap);
        // Bring n1 back: it preempts.
        match event {
            Event::Crash => {
                b.n1.flush_addr(b.lab.vip())?;
                b.n1.link(true)?;
            }
            Event::Sigterm | Event::Handover => {
                b.lab.stop(&d1, Duration::from_secs(5))?;
            }
        }
        d1 = b.lab.start(kind, &b.n1, &b.o1)?;
    }
    Ok(gaps)
}

/// Inter-arrival deviation from 30 ms of the adverts of a lone master: (count, median, p99, max) in ms.
fn jitter(
    bin: Option<&std::path::Path>,
    kind: Kind,
    span: Duration,
) -> Res<(usize, f64, f64, f64)> {
    let b = build(bin, kind, 30)?;
    let watch = AdvertWatch::start(&b.client)?;
    let _d1 = b.lab.start(kind, &b.n1, &b.o1)?;
    lab::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        b.n1.has_addr(b.lab.vip()).then_some(())
    })
    .ok_or_else(|| format!("{}: n1 did not become master at 30 ms", kind.as_str()))?;
    std::thread::sleep(Duration::from_millis(300));
    watch.drain();
    let adverts = watch.collect_from(b.n1.addr, span);
    let mut dev: Vec<f64> = adverts
        .windows(2)
        .map(|w| ((w[1].at - w[0].at).as_secs_f64() * 1000.0 - 30.0).abs())
        .collect();
    if dev.is_empty() {
        return Err(format!("{}: no adverts captured at 30 ms", kind.as_str()).into());
    }
    dev.sort_by(|a, b| a.total_cmp(b));
    let n = dev.len();
    let p = |q: f64| dev[((n as f64 - 1.0) * q).round() as usize];
    Ok((adverts.len(), p(0.5), p(0.99), dev[n - 1]))
}
