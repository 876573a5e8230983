//! Many client source addresses in one client namespace, and rounds of connections from
//! them (the load-sharing tests: shares, stickiness, moves).
//!
//! Sources live in four /24s outside the lab subnet (`10.79–82.<lab>.x`), added to the
//! client's `eth0` in one `ip -batch`; every node routes them back via the client's lab
//! address, so a node's reply reaches the real client address (direct routing).

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::{Daemon, Host, Lab, run};

/// The client subnets of `lab`: `(second octet, third octet)` of four /24s.
pub fn client_nets(lab: &Lab) -> [(u8, u8); 4] {
    let n = lab.addr(0).octets()[2];
    [(79, n), (80, n), (81, n), (82, n)]
}

/// `count` source addresses spread over the client subnets, host octets from `offset`.
pub fn sources(lab: &Lab, count: usize, offset: u8) -> Vec<Ipv4Addr> {
    let nets = client_nets(lab);
    (0..count)
        .map(|i| {
            let (a, n) = nets[i % 4];
            Ipv4Addr::new(10, a, n, offset.wrapping_add((i / 4) as u8))
        })
        .collect()
}

/// Puts `addrs` on the client's `eth0` (one batch) and routes the client subnets back
/// through the client on every node.
pub fn add_sources(lab: &Lab, client: &Host, nodes: &[Host], addrs: &[Ipv4Addr]) -> io::Result<()> {
    let batch: String = addrs
        .iter()
        .map(|ip| format!("addr add {ip}/32 dev eth0\n"))
        .collect();
    let file = lab.dir().join(format!("{}-addrs.batch", client.name));
    std::fs::write(&file, batch)?;
    run("ip", &["-n", &client.ns, "-batch", &file.to_string_lossy()])?;
    for h in nodes {
        for (a, n) in client_nets(lab) {
            let net = format!("10.{a}.{n}.0/24");
            h.ip(&["route", "replace", &net, "via", &client.addr.to_string()])?;
        }
    }
    Ok(())
}

/// One connection from `src` to `dst:port`, reading the lab peer server's
/// `"<node> <peer>\n"` answer.
pub fn ask(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Result<(String, Ipv4Addr), String> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    s.connect_timeout(
        &SocketAddr::V4(SocketAddrV4::new(dst, port)).into(),
        timeout,
    )
    .map_err(|e| format!("connect: {e}"))?;
    let mut stream: std::net::TcpStream = s.into();
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read: {e}"))?;
    let mut parts = text.split_whitespace();
    let node = parts.next().ok_or("empty answer")?.to_string();
    let peer = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("bad answer {text:?}"))?;
    Ok((node, peer))
}

/// Connects from every `src` to `dst:port` (4 threads in the client namespace); per source
/// the answer `(node, peer seen)` or the error.
pub fn round(
    client: &Host,
    srcs: &[Ipv4Addr],
    dst: Ipv4Addr,
    port: u16,
    timeout: Duration,
) -> Vec<Result<(String, Ipv4Addr), String>> {
    let chunks: Vec<Vec<Ipv4Addr>> = srcs
        .chunks(srcs.len().div_ceil(4).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut handles = Vec::new();
    for chunk in chunks {
        let client = client.clone();
        handles.push(std::thread::spawn(move || {
            client
                .run_in(move || {
                    chunk
                        .iter()
                        .map(|s| ask(*s, dst, port, timeout))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_else(|e| vec![Err(e.to_string())])
        }));
    }
    handles
        .into_iter()
        .flat_map(|h| {
            h.join()
                .unwrap_or_else(|_| vec![Err("client thread panicked".into())])
        })
        .collect()
}

/// Answers of a round: per-node counts and each source's node. A test helper: panics
/// naming the first failed connections, or a server that saw another address than the
/// client's (the real client address must reach the node).
pub fn tally(
    srcs: &[Ipv4Addr],
    answers: &[Result<(String, Ipv4Addr), String>],
) -> (BTreeMap<String, usize>, BTreeMap<Ipv4Addr, String>) {
    let failures: Vec<String> = srcs
        .iter()
        .zip(answers)
        .filter_map(|(s, a)| a.as_ref().err().map(|e| format!("{s}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} connections failed, e.g. {:?}",
        failures.len(),
        srcs.len(),
        &failures[..failures.len().min(5)]
    );
    let mut per = BTreeMap::new();
    let mut by_src = BTreeMap::new();
    for (s, a) in srcs.iter().zip(answers) {
        if let Ok((node, peer)) = a {
            assert_eq!(
                peer, s,
                "server {node} saw {peer}, not the client address {s}"
            );
            *per.entry(node.clone()).or_insert(0) += 1;
            by_src.insert(*s, node.clone());
        }
    }
    (per, by_src)
}

/// A long-lived connection from `client` to `vip:port` on an echo server
/// ([`Host::serve_echo`]), with the name its greeting line gives; the stream is left with a
/// read timeout of `read_timeout` for the exchanges that follow.
pub fn greeted(
    client: &Host,
    vip: Ipv4Addr,
    port: u16,
    read_timeout: Duration,
) -> io::Result<(std::net::TcpStream, String)> {
    let stream = client.run_in(move || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(vip, port)),
            Duration::from_secs(2),
        )
    })??;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = (&stream).read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    if line.is_empty() {
        return Err(io::Error::other(format!("no greeting from {vip}:{port}")));
    }
    stream.set_read_timeout(Some(read_timeout))?;
    Ok((stream, String::from_utf8_lossy(&line).into_owned()))
}

impl Lab {
    /// The layout of the load-sharing tests: a client namespace `c` (octet 50) and nodes
    /// `n1..=n<count>` (octets 11…).
    pub fn add_client_and_nodes(&mut self, count: usize) -> io::Result<(Host, Vec<Host>)> {
        let client = self.add_host("c", 50)?;
        let nodes = (0..count)
            .map(|i| self.add_host(&format!("n{}", i + 1), 11 + i as u8))
            .collect::<io::Result<Vec<Host>>>()?;
        Ok((client, nodes))
    }

    /// Waits until the node shares in `director`'s status have not changed for 2 s (the
    /// load feedback settled after the joins), at most `limit`, then 1 s for the worker to
    /// load the table. `Err` with the last shares when they kept changing.
    pub fn wait_shares_stable(&self, director: &Daemon, limit: Duration) -> Result<(), String> {
        let shares = || -> String {
            self.status(director)
                .map(|s| {
                    s.0["nodes"]
                        .as_array()
                        .map(|a| a.iter().map(|n| n["share"].to_string()).collect::<Vec<_>>())
                        .unwrap_or_default()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let mut last = shares();
        let mut since = std::time::Instant::now();
        let stable = super::wait_for(limit, Duration::from_millis(200), || {
            let now = shares();
            if now != last {
                last = now;
                since = std::time::Instant::now();
            }
            (since.elapsed() >= Duration::from_secs(2)).then_some(())
        });
        if stable.is_none() {
            return Err(format!("the director's table kept changing: {last}"));
        }
        std::thread::sleep(Duration::from_secs(1));
        Ok(())
    }
}
