//! Data-path benchmark (issue 3): download throughput through the VIP versus straight to the
//! scanning node, alternating in one run, and the bytes the director's interface carries for a
//! download-heavy load versus the bytes served. Three proxyha nodes (99 director, 89, 0) in the
//! namespace lab, direct mode (or `--mode nat`); the client's source address is chosen so the director sends it to
//! another node, which then replies straight to the client.
//!
//! ```text
//! cargo build --release --bin proxyha --examples && sudo target/release/examples/datapath_bench
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use proxyha_lab::{self as lab, Host, Lab, VrrpOpts};
use socket2::{Domain, Socket, Type};

const PORT: u16 = 9095;

#[derive(Parser)]
#[command(about = "ProxyHA data-path benchmark: via VIP vs direct, director bytes vs served bytes")]
struct Args {
    /// MiB per download.
    #[arg(long, default_value_t = 256)]
    mib: u64,
    /// Downloads per path (alternating VIP / direct).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// `ha.mode`: "direct" (replies bypass the director) or "nat" (they return through it).
    #[arg(long, default_value = "direct", value_parser = ["direct", "nat"])]
    mode: String,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args = Args::parse();
    if !lab::require_root("datapath_bench") {
        std::process::exit(2);
    }
    if let Err(e) = bench(&args) {
        eprintln!("datapath_bench: {e}");
        std::process::exit(1);
    }
}

/// Per connection: writes the node's name and a newline, reads an 8-byte big-endian length,
/// sends that many bytes, closes.
fn serve_bulk(host: &Host) -> Res<()> {
    let name = host.name.clone();
    host.serve_tcp(PORT, move |mut s, _, _| {
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(format!("{name}\n").as_bytes());
            let mut len = [0u8; 8];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(len);
            let chunk = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
        });
    })?;
    Ok(())
}

/// Downloads `bytes` from `dst` bound to `src`; returns the answering node and the seconds taken.
fn download(src: Ipv4Addr, dst: Ipv4Addr, bytes: u64) -> Result<(String, f64), String> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    s.connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(dst, PORT)).into(),
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect {dst}: {e}"))?;
    let mut s = TcpStream::from(s);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    s.write_all(&bytes.to_be_bytes())
        .map_err(|e| e.to_string())?;
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).map_err(|e| e.to_string())? == 1 && b[0] != b'\n' {
        name.push(b[0]);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("reading from {dst}: {e}")),
        }
    }
    if got != bytes {
        return Err(format!("short download from {dst}: {got} of {bytes} bytes"));
    }
    Ok((
        String::from_utf8_lossy(&name).into_owned(),
        t.elapsed().as_secs_f64(),
    ))
}

/// rx + tx bytes of eth0 in `host`'s namespace.
fn link_bytes(host: &Host) -> Res<u64> {
    let out = host.ip(&["-s", "-j", "link", "show", "eth0"])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let st = &v[0]["stats64"];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    Ok(n(&st["rx"]["bytes"]) + n(&st["tx"]["bytes"]))
}

fn bench(args: &Args) -> Res<()> {
    let bin = lab::proxyha_next_to_exe()?;
    let mut lab = Lab::new()?.with_proxyha(bin);
    let client = lab.add_host("c", 50)?;
    let nodes: Vec<Host> = (0..3)
        .map(|i| lab.add_host(&format!("n{}", i + 1), 11 + i as u8))
        .collect::<Result<_, _>>()?;
    for h in &nodes {
        serve_bulk(h)?;
    }
    // Candidate client sources in the lab subnet (on-link for every node, no routes needed).
    let sources: Vec<Ipv4Addr> = (60..90).map(|o| lab.addr(o)).collect();
    for s in &sources {
        client.ip(&["addr", "add", &format!("{s}/32"), "dev", "eth0"])?;
    }
    let daemons: Vec<_> = nodes
        .iter()
        .zip([99u8, 89, 0])
        .map(|(h, p)| {
            let opts = VrrpOpts::new(p, 1000).redirects(&[PORT]).mode(&args.mode);
            lab.start_proxyha(h, &opts)
        })
        .collect::<Result<_, _>>()?;
    let ready = lab::wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let s = lab.status(&daemons[0]).ok()?;
        let nodes = s.0["nodes"].as_array()?.len();
        (s.state() == "master" && nodes == 3).then_some(())
    });
    ready.ok_or("n1 did not become director of 3 nodes within 20 s")?;
    std::thread::sleep(Duration::from_secs(3));
    let vip = lab.vip();
    // A source the director sends to n2.
    let probe = sources.clone();
    let mapped: Vec<(Ipv4Addr, String)> = client.run_in(move || {
        probe
            .iter()
            .filter_map(|s| download(*s, vip, 1).ok().map(|(n, _)| (*s, n)))
            .collect()
    })?;
    let src = mapped
        .iter()
        .find(|(_, n)| n == "n2")
        .map(|(s, _)| *s)
        .ok_or_else(|| format!("no source maps to n2: {mapped:?}"))?;
    let n2 = nodes[1].addr;
    let bytes = args.mib * 1024 * 1024;
    let (mut via, mut direct) = (Vec::new(), Vec::new());
    let mut director_bytes = 0u64;
    for round in 0..args.rounds {
        let before = link_bytes(&nodes[0])?;
        let (node, secs) = client.run_in(move || download(src, vip, bytes))??;
        director_bytes += link_bytes(&nodes[0])?.saturating_sub(before);
        if node != "n2" {
            return Err(format!("round {round}: VIP download served by {node}, not n2").into());
        }
        via.push(bytes as f64 / secs / 1e6);
        let (_, secs) = client.run_in(move || download(src, n2, bytes))??;
        direct.push(bytes as f64 / secs / 1e6);
        eprintln!(
            "round {round}: via VIP {:.0} MB/s, direct {:.0} MB/s",
            via[round], direct[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (mv, md) = (median(&mut via), median(&mut direct));
    let served = bytes * args.rounds as u64;
    println!(
        "\n## Data path ({} mode, {} MiB downloads, {} rounds each, alternating)\n",
        args.mode, args.mib, args.rounds
    );
    println!("| path | median MB/s |");
    println!("|---|---|");
    let reply = if args.mode == "nat" {
        "reply back through n1"
    } else {
        "reply straight from n2"
    };
    println!("| client → VIP (director n1 → n2, {reply}) | {mv:.0} |");
    println!("| client → n2 directly | {md:.0} |");
    println!("\nvia VIP / direct = {:.2}", mv / md);
    println!(
        "director eth0 bytes (rx+tx) during the VIP downloads: {director_bytes} for {served} bytes served = {:.4}",
        director_bytes as f64 / served as f64
    );
    Ok(())
}
