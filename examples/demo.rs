//! Demonstration: a 3-node proxyha cluster in network namespaces (priorities 99/89/79,
//! 1 s adverts), `proxyha status` of every node, a crash of the master (SIGKILL + link down),
//! the takeover with the client-visible gap, then teardown.
//!
//! ```text
//! cargo build --release && sudo target/release/examples/demo
//! ```
//! (`--interval-ms 100` for a faster run.) Everything lives in namespaces named
//! `ph<5 chars><node>` with 10.77.N.0/24 addresses, all removed at exit.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use clap::Parser;
use proxyha_lab::{self as lab, Daemon, Lab, Prober, VrrpOpts};

#[derive(Parser)]
#[command(
    about = "ProxyHA demo: a 3-node cluster in network namespaces, a master crash and the takeover"
)]
struct Args {
    /// VRRP advert interval in ms.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u32,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args = Args::parse();
    if !lab::require_root("demo") {
        std::process::exit(2);
    }
    if let Err(e) = demo(args.interval_ms) {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

fn show(lab: &Lab, daemons: &[Daemon]) {
    for d in daemons {
        println!("--- proxyha status on {} ({}) ---", d.host.name, d.host.ns);
        match lab.status_table(d) {
            Ok(t) => println!("{}", t.trim_end()),
            Err(e) => println!("(no status: {e})"),
        }
    }
    println!("VIP {} is on: {:?}\n", lab.vip(), lab.vip_holders());
}

fn demo(interval_ms: u32) -> Res<()> {
    let bin = lab::proxyha_next_to_exe()?;
    let mut lab = Lab::new()?.with_proxyha(bin);
    println!(
        "lab {}: bridge namespace {}br, subnet {}/24, VIP {}",
        lab.prefix(),
        lab.prefix(),
        lab.addr(0),
        lab.vip()
    );
    let prios = [99u8, 89, 79];
    let mut nodes = Vec::new();
    for (i, _) in prios.iter().enumerate() {
        let h = lab.add_host(&format!("n{}", i + 1), 11 + i as u8)?;
        h.serve_name(lab::ECHO_PORT)?;
        nodes.push(h);
    }
    let client = lab.add_host("c", 50)?;
    let prober = Prober::start(&client, SocketAddrV4::new(lab.vip(), lab::ECHO_PORT))?;
    let mut daemons = Vec::new();
    for (h, p) in nodes.iter().zip(prios) {
        println!("starting proxyha on {} ({}), priority {p}", h.name, h.addr);
        daemons.push(lab.start_proxyha(h, &VrrpOpts::new(p, interval_ms))?);
    }
    let mdi = VrrpOpts::new(99, interval_ms).master_down_interval();
    println!("waiting for the election (Master_Down_Interval {mdi:?}) …\n");
    lab::wait_for(
        mdi * 2 + Duration::from_secs(2),
        Duration::from_millis(20),
        || (lab.vip_holders() == ["n1"]).then_some(()),
    )
    .ok_or("n1 did not become master")?;
    prober
        .wait_answer("n1", Instant::now(), Duration::from_secs(3))
        .ok_or("client got no answer from n1")?;
    std::thread::sleep(Duration::from_millis(u64::from(interval_ms) * 2));
    show(&lab, &daemons);

    println!(
        "client {} → {}:{} answered by n1; crashing n1 (SIGKILL + eth0 down) …",
        client.addr,
        lab.vip(),
        lab::ECHO_PORT
    );
    let t = Instant::now();
    lab.crash(&daemons[0])?;
    let limit = VrrpOpts::new(89, interval_ms).master_down_interval() + Duration::from_secs(3);
    prober
        .wait_answer("n2", t, limit)
        .ok_or("n2 did not take over")?;
    let g = lab::gap(&prober.samples(), t, "n2").ok_or("no gap measured")?;
    println!(
        "takeover: n2 answers; client-visible gap {} ms (Master_Down_Interval(89) = {} ms)\n",
        g.gap.as_millis(),
        VrrpOpts::new(89, interval_ms)
            .master_down_interval()
            .as_millis()
    );
    std::thread::sleep(Duration::from_millis(u64::from(interval_ms) * 2));
    show(&lab, &daemons[1..]);
    println!("tearing down lab {}", lab.prefix());
    drop(prober);
    drop(lab);
    Ok(())
}
