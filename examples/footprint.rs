//! Footprint of an idle `proxyha run` (BRIEF §7): two nodes in the namespace lab (priorities
//! 99/89, 1 s adverts, VRRP only), CPU time used over a window and resident memory at its end,
//! read from /proc/PID/stat and /proc/PID/status.
//!
//! ```text
//! cargo build --release --bin proxyha --examples && sudo target/release/examples/footprint --secs 60
//! ```

use std::time::Duration;

use clap::Parser;
use proxyha_lab::{self as lab, Lab, VrrpOpts};

#[derive(Parser)]
#[command(about = "ProxyHA idle footprint: CPU time and RSS of proxyha run over a window")]
struct Args {
    /// Length of the measurement window in seconds (after the election).
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args = Args::parse();
    if !lab::require_root("footprint") {
        std::process::exit(2);
    }
    if let Err(e) = footprint(args.secs) {
        eprintln!("footprint: {e}");
        std::process::exit(1);
    }
}

/// utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat, after the comm field).
fn cpu_ticks(pid: u32) -> Res<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit_once(')').ok_or("unreadable /proc/PID/stat")?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field =
        |i: usize| -> Res<u64> { Ok(fields.get(i).ok_or("short /proc/PID/stat")?.parse()?) };
    // after_comm starts at field 3 (state); utime is field 14, stime 15.
    Ok(field(11)? + field(12)?)
}

fn rss_kib(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/PID/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("unreadable VmRSS")?
        .parse()?)
}

fn footprint(secs: u64) -> Res<()> {
    let bin = lab::proxyha_next_to_exe()?;
    let mut lab = Lab::new()?.with_proxyha(bin);
    let n1 = lab.add_host("n1", 11)?;
    let n2 = lab.add_host("n2", 12)?;
    let d1 = lab.start_proxyha(&n1, &VrrpOpts::new(99, 1000))?;
    let d2 = lab.start_proxyha(&n2, &VrrpOpts::new(89, 1000))?;
    lab::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (lab.vip_holders() == ["n1"]).then_some(())
    })
    .ok_or("n1 did not become master within 10 s")?;
    // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux (x86_64 ABI).
    let hz = 100.0;
    let before = [cpu_ticks(d1.pid)?, cpu_ticks(d2.pid)?];
    std::thread::sleep(Duration::from_secs(secs));
    let after = [cpu_ticks(d1.pid)?, cpu_ticks(d2.pid)?];
    println!("\n## Idle footprint of proxyha run ({secs} s window, 1 s adverts)\n");
    println!("| node | role | CPU time in window | CPU share | RSS |");
    println!("|---|---|---|---|---|");
    for (i, (d, role)) in [(&d1, "master"), (&d2, "backup")].into_iter().enumerate() {
        let cpu = (after[i] - before[i]) as f64 / hz;
        println!(
            "| {} | {role} | {cpu:.2} s | {:.3} % | {:.1} MB |",
            d.host.name,
            100.0 * cpu / secs as f64,
            rss_kib(d.pid)? as f64 / 1024.0
        );
    }
    Ok(())
}
