//! The soak's CI variant (issue 12 item 8): 3 minutes of random faults over a 3-node
//! load-sharing cluster with the invariant checker of `proxyha::lab::soak`. Longer runs:
//! `examples/soak.rs`. `PROXYHA_SOAK_SECS` and `PROXYHA_SOAK_SEED` override length and seed.
//!
//! ```text
//! sudo PROXYHA_REQUIRE_ROOT_TESTS=1 cargo test --release --test soak_lab -- --nocapture
//! ```

use std::time::Duration;

use proxyha::lab::{self, soak};

const BIN: &str = env!("CARGO_BIN_EXE_proxyha");

#[test]
fn soak_three_minutes_of_random_faults_keeps_every_invariant() {
    if !lab::require_root("soak_three_minutes_of_random_faults_keeps_every_invariant") {
        return;
    }
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("PROXYHA_SOAK_SECS").unwrap_or(180);
    // A fixed seed by default: a failure replays with the same faults.
    let seed = env("PROXYHA_SOAK_SEED").unwrap_or(12);
    let r =
        soak::run(BIN.as_ref(), Duration::from_secs(secs), seed, 200).expect("running the soak");
    println!("{}", r.summary(secs, seed));
    assert!(
        r.faults.len() >= (secs / 12) as usize,
        "too few faults: {}",
        r.faults.len()
    );
    assert!(
        r.violations.is_empty(),
        "invariants broken:\n{}",
        r.violations.join("\n")
    );
}
