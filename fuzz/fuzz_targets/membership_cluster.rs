//! Untrusted protocol-253 payloads into the membership core, as director and as scanning
//! node: no input may panic, and every data path it asks for must plan.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proxyha::config::PortRedirect;
use proxyha::dataplane::plan;
use proxyha::director::cluster::{Cluster, ClusterConfig, LocalLoad};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let me = Ipv4Addr::new(10, 77, 0, 11);
    let mut cfg = ClusterConfig::new(
        "fuzz",
        me,
        Ipv4Addr::new(10, 77, 0, 100),
        vec![PortRedirect { port: 9090, to: 9090 }],
    );
    cfg.buckets = 64;
    let mut c = Cluster::new(cfg);
    let t0 = Instant::now();
    c.handle_local_load(LocalLoad { cpu: 0.5, cpu_count: 2, ..LocalLoad::default() });
    c.handle_startup(t0);
    c.set_role(t0, selector & 1 == 1);
    // The rest: datagrams of (source octet, length byte, bytes), 100 ms apart.
    let mut now = t0;
    let mut input = rest;
    while let [src, len, tail @ ..] = input {
        let n = usize::from(*len).min(tail.len());
        let src = Ipv4Addr::new(10, 77, 0, *src);
        c.handle_datagram(now, src, &tail[..n]);
        input = &tail[n..];
        now += Duration::from_millis(100);
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
        if let Some(d) = c.poll_desired() {
            assert!(plan(&d).is_ok(), "unplannable data path {d:?}");
        }
        let _ = c.nodes();
    }
});
