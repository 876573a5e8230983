//! Client-side instruments: the TCP gap probe (BRIEF §7), an advert watcher and a raw
//! advert injector, all running on threads inside the client namespace.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Host, lock};
use proxyha::wire::vrrp;

/// Probe period: one connection attempt starts every 10 ms.
pub const PROBE_PERIOD: Duration = Duration::from_millis(10);
/// Connect (and read) timeout of one attempt.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// Enough workers that an attempt starts on time even while all earlier ones hang for
/// their full timeout.
const PROBE_WORKERS: u64 = 14;

/// One connection attempt.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the attempt started (its SYN left).
    pub start: Instant,
    pub end: Instant,
    /// The answering node's name on success.
    pub answer: Option<String>,
}

/// The client-visible outage around an event.
#[derive(Debug, Clone)]
pub struct Gap {
    /// First success after the event (answered by the new owner) minus the last success
    /// before it, both taken at attempt start (10 ms resolution).
    pub gap: Duration,
    pub last_before: Option<String>,
    pub first_after: String,
    /// From the event to the first success of the new owner.
    pub since_event: Duration,
}

/// Connects to `target` every 10 ms from the client namespace and records each attempt.
pub struct Prober {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

impl Prober {
    /// Starts probing `target` from `client`; stops when dropped or at lab teardown.
    pub fn start(client: &Host, target: SocketAddrV4) -> io::Result<Prober> {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        for _ in 0..PROBE_WORKERS {
            let (samples, stop, slot) = (samples.clone(), stop.clone(), slot.clone());
            client.spawn_thread(move |lab_stop| {
                while !stop.load(Ordering::Relaxed) && !lab_stop.load(Ordering::Relaxed) {
                    let k = slot.fetch_add(1, Ordering::SeqCst);
                    let at = t0 + PROBE_PERIOD * k as u32;
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    } else if now - at > PROBE_PERIOD {
                        continue; // fell behind: skip the slot rather than bunch attempts
                    }
                    let start = Instant::now();
                    let answer = attempt(target);
                    lock(&samples).push(Sample {
                        start,
                        end: Instant::now(),
                        answer,
                    });
                }
            })?;
        }
        Ok(Prober { samples, stop })
    }

    /// A copy of the samples so far, ordered by start time.
    pub fn samples(&self) -> Vec<Sample> {
        let mut s = lock(&self.samples).clone();
        s.sort_by_key(|s| s.start);
        s
    }

    /// Waits up to `limit` for a success answered by `who` that started after `after`.
    pub fn wait_answer(&self, who: &str, after: Instant, limit: Duration) -> Option<Sample> {
        super::wait_for(limit, Duration::from_millis(5), || {
            lock(&self.samples)
                .iter()
                .filter(|s| s.start > after && s.answer.as_deref() == Some(who))
                .min_by_key(|s| s.start)
                .cloned()
        })
    }

    /// Forgets old samples (keeps memory flat over long benchmarks).
    pub fn clear(&self) {
        lock(&self.samples).clear();
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

fn attempt(target: SocketAddrV4) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(target), PROBE_TIMEOUT).ok()?;
    s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    break;
                }
            }
            Err(_) => return None,
        }
    }
    if got == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&buf[..got]).into_owned())
}

/// The gap around `event` (BRIEF §7): the first success after `event` answered by
/// `new_owner`, minus the last success before that one.
pub fn gap(samples: &[Sample], event: Instant, new_owner: &str) -> Option<Gap> {
    let first = samples
        .iter()
        .filter(|s| s.start > event && s.answer.as_deref() == Some(new_owner))
        .min_by_key(|s| s.start)?;
    // Anything that answered between the event and `first` was still the old owner
    // serving: the client-visible outage starts after the last success of any node.
    let last = samples
        .iter()
        .filter(|s| s.start < first.start && s.answer.is_some())
        .max_by_key(|s| s.start);
    let since_event = first.start - event;
    Some(Gap {
        gap: last.map(|l| first.start - l.start).unwrap_or(since_event),
        last_before: last.and_then(|l| l.answer.clone()),
        first_after: new_owner.to_string(),
        since_event,
    })
}

/// The longest stretch between two answered probes (any cause), zero with fewer than two.
pub fn max_outage(samples: &[Sample]) -> Duration {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.answer.is_some()).collect();
    ok.windows(2)
        .map(|w| w[1].start.saturating_duration_since(w[0].end))
        .max()
        .unwrap_or_default()
}

/// A received VRRP datagram (IP header included) and when it arrived.
#[derive(Debug, Clone)]
pub struct Advert {
    pub at: Instant,
    pub src: Ipv4Addr,
    pub datagram: Vec<u8>,
}

/// Watches IP protocol 112 on the client's `eth0` (a raw socket joined to 224.0.0.18).
pub struct AdvertWatch {
    rx: Receiver<Advert>,
    stop: Arc<AtomicBool>,
}

impl AdvertWatch {
    pub fn start(client: &Host) -> io::Result<AdvertWatch> {
        AdvertWatch::start_protocol(client, vrrp::PROTOCOL)
    }

    /// The same for membership messages (protocol 253): what reaches a client that is no
    /// member (broadcasts, and unicast the bridge floods).
    pub fn start_membership(client: &Host) -> io::Result<AdvertWatch> {
        AdvertWatch::start_protocol(client, proxyha::wire::membership::PROTOCOL)
    }

    fn start_protocol(client: &Host, protocol: u8) -> io::Result<AdvertWatch> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let my_stop = stop.clone();
        let addr = client.addr;
        client.spawn_thread(move |lab_stop| {
            let sock = match raw_socket(protocol).and_then(|s| {
                if protocol == vrrp::PROTOCOL {
                    s.join_multicast_v4(&vrrp::MULTICAST_GROUP, &addr)?;
                }
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(s)
            }) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            watch_loop(&sock, &tx, &my_stop, &lab_stop);
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("advert watcher did not start"))??;
        Ok(AdvertWatch { rx, stop })
    }

    /// Drops everything received so far.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The next advert (after any already queued) whose source is `src`, within `limit`.
    pub fn next_from(&self, src: Ipv4Addr, limit: Duration) -> Option<Advert> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(a) if a.src == src => return Some(a),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The next advert from anyone, within `limit`.
    pub fn next_any(&self, limit: Duration) -> Option<Advert> {
        self.rx.recv_timeout(limit).ok()
    }

    /// Collects every advert from `src` for `span`.
    pub fn collect_from(&self, src: Ipv4Addr, span: Duration) -> Vec<Advert> {
        let deadline = Instant::now() + span;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(a) if a.src == src => out.push(a),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for AdvertWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn watch_loop(sock: &Socket, tx: &Sender<Advert>, stop: &AtomicBool, lab_stop: &AtomicBool) {
    let mut buf = vec![0u8; 65_536];
    let mut reader = sock;
    while !stop.load(Ordering::Relaxed) && !lab_stop.load(Ordering::Relaxed) {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let at = Instant::now();
        if n < 20 {
            continue;
        }
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        if tx
            .send(Advert {
                at,
                src,
                datagram: buf[..n].to_vec(),
            })
            .is_err()
        {
            return;
        }
    }
}

fn raw_socket(protocol: u8) -> io::Result<Socket> {
    Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol))),
    )
}

/// A VRRP datagram (IPv4 header + `vrrp_bytes`) from `src` to 224.0.0.18, for [`inject`].
pub fn advert_datagram(src: Ipv4Addr, ttl: u8, vrrp_bytes: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; proxyha::wire::ipv4::MIN_HEADER_LEN + vrrp_bytes.len()];
    let header = proxyha::wire::ipv4::Header {
        src,
        dst: vrrp::MULTICAST_GROUP,
        ttl,
        protocol: vrrp::PROTOCOL,
    };
    proxyha::wire::ipv4::emit(&mut buf, &header, 0x4242, vrrp_bytes.len());
    buf[proxyha::wire::ipv4::MIN_HEADER_LEN..].copy_from_slice(vrrp_bytes);
    buf
}

/// Sends `datagram` (a complete IPv4 datagram, header included, any protocol and source)
/// from the client's `eth0` to its destination (e.g. 224.0.0.18) through a raw socket with
/// IP_HDRINCL.
pub fn inject(client: &Host, datagram: Vec<u8>) -> io::Result<()> {
    let addr = client.addr;
    client.run_in(move || -> io::Result<()> {
        let protocol = datagram.get(9).copied().unwrap_or(vrrp::PROTOCOL);
        let sock = raw_socket(protocol)?;
        sock.set_header_included_v4(true)?;
        if datagram.get(16..20) == Some(&[255, 255, 255, 255][..]) {
            // The limited broadcast has no route: it leaves through the bound interface.
            sock.set_broadcast(true)?;
            sock.bind_device(Some(b"eth0"))?;
        }
        sock.set_multicast_if_v4(&addr)?;
        let dst = if datagram.len() >= 20 {
            Ipv4Addr::new(datagram[16], datagram[17], datagram[18], datagram[19])
        } else {
            vrrp::MULTICAST_GROUP
        };
        let n = sock.send_to(&datagram, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
        if n != datagram.len() {
            return Err(io::Error::other(format!(
                "raw send wrote {n} of {} bytes",
                datagram.len()
            )));
        }
        Ok(())
    })?
}

/// The first IPv4 datagram of `protocol` from `src` to `dst` that crosses `host`'s `eth0`
/// within `limit`, also one addressed to another host (an AF_PACKET socket sees the frames a
/// hub floods): what a sniffer on the segment captures to replay.
pub fn sniff(
    host: &Host,
    protocol: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    limit: Duration,
) -> io::Result<Option<Vec<u8>>> {
    host.run_in(move || -> io::Result<Option<Vec<u8>>> {
        const ETH_P_IP: u16 = 0x0800;
        let sock = Socket::new(
            Domain::PACKET,
            Type::DGRAM,
            Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
        )?;
        // Held as a UdpSocket for a plain recv(2) into a safe buffer (link header removed).
        let sock = std::net::UdpSocket::from(sock);
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            let d = &buf[..n];
            if n >= 20 && d[9] == protocol && d[12..16] == src.octets() && d[16..20] == dst.octets()
            {
                return Ok(Some(d.to_vec()));
            }
        }
        Ok(None)
    })?
}

#[cfg(test)]
mod test {
    use super::*;

    fn sample(t0: Instant, ms: u64, answer: Option<&str>) -> Sample {
        let start = t0 + Duration::from_millis(ms);
        Sample {
            start,
            end: start + Duration::from_millis(1),
            answer: answer.map(str::to_string),
        }
    }

    #[test]
    fn gap_runs_from_last_success_to_first_answer_of_new_owner() {
        let t0 = Instant::now();
        let samples = vec![
            sample(t0, 0, Some("n1")),
            sample(t0, 10, Some("n1")),
            sample(t0, 20, None),
            sample(t0, 30, None),
            sample(t0, 40, Some("n2")),
            sample(t0, 50, Some("n2")),
        ];
        // Event at 5 ms: n1 still answered at 10 ms, so the outage starts there.
        let g = gap(&samples, t0 + Duration::from_millis(5), "n2").unwrap();
        assert_eq!(g.gap, Duration::from_millis(30));
        assert_eq!(g.last_before.as_deref(), Some("n1"));
        assert_eq!(g.since_event, Duration::from_millis(35));
        assert!(gap(&samples, t0 + Duration::from_millis(5), "n3").is_none());
    }
}
