//! Pins injected into a node's kernel maps, as its data path would create them for new
//! clients (the scale lab and `examples/scale_bench`): into `sticky`, and into `fresh`, where
//! the director learns of new pins.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::Host;
use crate::dataplane::{FRESH_TIMEOUT, StickyEntry, TABLE, mark_of};

/// `n` pins from distinct client addresses (10.200.0.0/16 upwards, never configured on any
/// interface: the kernel map only holds them) on `port`, spread over `nodes`.
pub fn pins(n: u32, port: u16, nodes: &[Ipv4Addr], expires: Duration) -> Vec<StickyEntry> {
    (0..n)
        .map(|i| StickyEntry {
            client: Ipv4Addr::from(0x0ac8_0000 + i),
            port,
            mark: mark_of(nodes[i as usize % nodes.len()]),
            expires_ms: u64::try_from(expires.as_millis()).unwrap_or(u64::MAX),
        })
        .collect()
}

/// Adds `pins` to `host`'s `sticky` map (timeout `idle`) and `fresh` map with one `nft -f`
/// (what the old data path used, fine for injecting); returns how long nft took.
pub fn inject(
    host: &Host,
    pins: &[StickyEntry],
    idle: Duration,
    dir: &std::path::Path,
) -> io::Result<Duration> {
    let mut script = String::with_capacity(pins.len() * 120);
    for (map, timeout) in [("sticky", idle), ("fresh", FRESH_TIMEOUT)] {
        for chunk in pins.chunks(5000) {
            script.push_str(&format!("add element ip {TABLE} {map} {{ "));
            for (i, p) in chunk.iter().enumerate() {
                if i > 0 {
                    script.push_str(", ");
                }
                let expires = if map == "sticky" {
                    Duration::from_millis(p.expires_ms).min(idle)
                } else {
                    timeout
                };
                script.push_str(&format!(
                    "{} . {} timeout {}s expires {}ms : {:#010x}",
                    p.client,
                    p.port,
                    timeout.as_secs(),
                    expires.as_millis().max(1),
                    p.mark
                ));
            }
            script.push_str(" }\n");
        }
    }
    let file = dir.join(format!("{}-pins.nft", host.name));
    std::fs::write(&file, script)?;
    let t = Instant::now();
    host.exec("nft", &["-f", &file.to_string_lossy()])?;
    let took = t.elapsed();
    let _ = std::fs::remove_file(&file);
    Ok(took)
}
