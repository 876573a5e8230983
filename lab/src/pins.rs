//! Pins injected into a node's kernel maps, as its data path would create them for new
//! clients (the scale lab and `examples/scale_bench`): into `sticky`, and into `fresh`, where
//! the director learns of new pins.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::Host;
use proxyha::dataplane::{FRESH_TIMEOUT, StickyEntry, TABLE, mark_of};

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

/// Adds `pins` to `host`'s `sticky` map (timeout `idle`) with `nft -f` (what the old data path
/// did to load a new director's pins), then to its `fresh` map; returns how long the `sticky`
/// loads took.
pub fn inject(
    host: &Host,
    pins: &[StickyEntry],
    idle: Duration,
    dir: &std::path::Path,
) -> io::Result<Duration> {
    let script = |map: &str, timeout: Duration, pins: &[StickyEntry]| {
        let mut s = String::with_capacity(pins.len() * 100);
        for chunk in pins.chunks(5000) {
            s.push_str(&format!("add element ip {TABLE} {map} {{ "));
            for (i, p) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let expires = Duration::from_millis(p.expires_ms).min(timeout);
                s.push_str(&format!(
                    "{} . {} timeout {}s expires {}ms : {:#010x}",
                    p.client,
                    p.port,
                    timeout.as_secs(),
                    expires.as_millis().max(1),
                    p.mark
                ));
            }
            s.push_str(" }\n");
        }
        s
    };
    let file = dir.join(format!("{}-pins.nft", host.name));
    let run = |text: String| -> io::Result<Duration> {
        std::fs::write(&file, text)?;
        let t = Instant::now();
        host.exec("nft", &["-f", &file.to_string_lossy()])?;
        Ok(t.elapsed())
    };
    // In transactions of 25,000: nft fails a larger one with ENOBUFS here.
    let mut took = Duration::ZERO;
    for chunk in pins.chunks(25_000) {
        took += run(script("sticky", idle, chunk))?;
    }
    for chunk in pins.chunks(20_000) {
        run(script("fresh", FRESH_TIMEOUT, chunk))?;
    }
    let _ = std::fs::remove_file(&file);
    Ok(took)
}
