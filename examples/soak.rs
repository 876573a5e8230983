//! The long soak (issue 12 item 8): random faults over a 3-node load-sharing cluster with the
//! invariant checker of `proxyha_lab::soak`; prints the figures and every violation.
//!
//! ```text
//! cargo build --release && target/release/examples/soak --minutes 30 --seed 7
//! ```

use std::time::Duration;

use clap::Parser;
use proxyha_lab::{self as lab, soak};

#[derive(Parser)]
#[command(about = "Random faults over a 3-node cluster, with invariants checked")]
struct Args {
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    interval_ms: u32,
    /// Faults to inject first, in order, as FAULT@NODE (e.g. `linkflap@n1,restart@n2`);
    /// then random ones from the seed.
    #[arg(long, value_delimiter = ',', value_parser = fault_at)]
    faults: Vec<(soak::Fault, usize)>,
}

fn fault_at(s: &str) -> Result<(soak::Fault, usize), String> {
    let (f, n) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected FAULT@NODE, e.g. linkflap@n1"))?;
    let node = match n {
        "n1" => 0,
        "n2" => 1,
        "n3" => 2,
        _ => return Err(format!("{s:?}: the node is n1, n2 or n3")),
    };
    Ok((f.parse()?, node))
}

fn main() {
    let args = Args::parse();
    if !lab::require_root("soak") {
        std::process::exit(2);
    }
    let bin = match lab::proxyha_next_to_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    };
    let secs = (args.minutes * 60.0) as u64;
    match soak::run(
        &bin,
        Duration::from_secs(secs),
        args.seed,
        args.interval_ms,
        &args.faults,
    ) {
        Ok(r) => {
            println!("{}", r.summary(secs, args.seed));
            for v in &r.violations {
                println!("VIOLATION: {v}");
            }
            std::process::exit(if r.violations.is_empty() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(1);
        }
    }
}
