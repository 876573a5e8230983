//! A blocking NETLINK_NETFILTER socket for the sticky maps: dumps and batched changes
//! ([`super::nfnl`] builds and parses the messages). Owned by the data-path worker thread.

use std::io;
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::nfnl::{self, Op};
use super::sticky::StickyEntry;

/// Elements per batch while the send buffer is the default (a netlink datagram must fit it):
/// ≈ 170 KB. With SO_SNDBUFFORCE (root) one batch takes up to [`BIG_BATCH`].
const SMALL_BATCH: usize = 3000;
const BIG_BATCH: usize = 100_000;
/// Found pins, and the keys that are gone.
pub type Lookup = (Vec<StickyEntry>, Vec<(std::net::Ipv4Addr, u16)>);

/// Get requests per datagram (≈ 64 bytes each).
const GET_CHUNK: usize = 1000;
/// The kernel never answers slower than this unless something is wrong.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Debug shows the state, not the socket.
pub struct NfSock {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    batch: usize,
}

impl std::fmt::Debug for NfSock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NfSock")
            .field("seq", &self.seq)
            .field("batch", &self.batch)
            .finish()
    }
}

fn os(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl NfSock {
    /// A socket in the network namespace at `netns` (a /run/netns path), or in ours.
    pub fn open_in(netns: Option<&std::path::Path>) -> io::Result<NfSock> {
        super::netns::open_in(netns, NfSock::open)
    }

    pub fn open() -> io::Result<NfSock> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let fd = &sock;
        let tv = TimeVal::new(TIMEOUT.as_secs() as i64, 0);
        setsockopt(fd, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
        // Big dumps and many acks: a large receive buffer; root may force it.
        let _ = setsockopt(fd, sockopt::RcvBufForce, &(8 << 20));
        let batch = if setsockopt(fd, sockopt::SndBufForce, &(16 << 20)).is_ok() {
            BIG_BATCH
        } else {
            SMALL_BATCH
        };
        Ok(NfSock {
            sock,
            seq: 1,
            buf: vec![0; 256 * 1024],
            batch,
        })
    }

    fn recv(&mut self) -> Result<usize, String> {
        let mut b = &mut self.buf[..];
        self.sock
            .recv(&mut b, 0)
            .map_err(|e| os("reading the nf_tables netlink socket", e))
    }

    /// Every element of `ip TABLE SET`. `Ok((pins, skipped))`; a dump the kernel marked as
    /// interrupted (the set changed meanwhile) is read again once.
    pub fn dump(&mut self, table: &str, set: &str) -> Result<(Vec<StickyEntry>, usize), String> {
        for attempt in 0..2 {
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            let req = nfnl::dump_request(table, set, seq);
            self.sock
                .send(&req, 0)
                .map_err(|e| os(&format!("requesting the elements of {table} {set}"), e))?;
            let mut pins = Vec::new();
            let mut skipped = 0;
            let mut interrupted = false;
            loop {
                let n = self.recv()?;
                let (reply, s) = nfnl::parse(&self.buf[..n], &mut pins)?;
                skipped += s;
                interrupted |= reply.interrupted;
                if let Some((_, errno)) = reply.errors.first() {
                    return Err(format!(
                        "dumping {table} {set}: {}",
                        io::Error::from_raw_os_error(*errno)
                    ));
                }
                if reply.done {
                    break;
                }
            }
            if !interrupted || attempt == 1 {
                return Ok((pins, skipped));
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Applies `op` to `pins` in as few transactions as the send buffer allows. A failure
    /// names the first errno; earlier batches stay applied.
    pub fn apply(
        &mut self,
        table: &str,
        set: &str,
        op: Op,
        pins: &[StickyEntry],
    ) -> Result<(), String> {
        for chunk in pins.chunks(self.batch) {
            let first = self.seq;
            let (bytes, next) = nfnl::batch(table, set, op, chunk, first);
            self.seq = next;
            self.sock.send(&bytes, 0).map_err(|e| {
                os(
                    &format!("sending {} elements to {table} {set}", chunk.len()),
                    e,
                )
            })?;
            // The element messages are first+1 ..= next-2; each one is acked or fails.
            let want = (next.wrapping_sub(first)).saturating_sub(2) as usize;
            let mut seen = 0;
            let mut failed = None;
            while seen < want {
                let n = self.recv()?;
                let mut none = Vec::new();
                let (reply, _) = nfnl::parse(&self.buf[..n], &mut none)?;
                seen += reply.acked.len() + reply.errors.len();
                if failed.is_none() {
                    failed = reply.errors.first().map(|e| e.1);
                }
                if reply.acked.is_empty() && reply.errors.is_empty() {
                    break;
                }
            }
            if let Some(errno) = failed {
                return Err(format!(
                    "{} {} elements of {table} {set}: {}",
                    match op {
                        Op::Add { .. } => "adding",
                        Op::Delete => "deleting",
                    },
                    chunk.len(),
                    io::Error::from_raw_os_error(errno)
                ));
            }
        }
        Ok(())
    }

    /// The elements with these keys: `(found, missing)`; a key is missing when its pin
    /// expired or was deleted. One message per key, sent in datagrams of [`GET_CHUNK`].
    pub fn get(
        &mut self,
        table: &str,
        set: &str,
        keys: &[(std::net::Ipv4Addr, u16)],
    ) -> Result<Lookup, String> {
        let mut found = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for chunk in keys.chunks(GET_CHUNK) {
            let first = self.seq;
            let (bytes, next) = nfnl::get_requests(table, set, chunk, first);
            self.seq = next;
            self.sock.send(&bytes, 0).map_err(|e| {
                os(
                    &format!("asking for {} elements of {table} {set}", chunk.len()),
                    e,
                )
            })?;
            let mut answered = 0;
            while answered < chunk.len() {
                let n = self.recv()?;
                let before = found.len();
                let (reply, skipped) = nfnl::parse(&self.buf[..n], &mut found)?;
                for (seq, errno) in &reply.errors {
                    let i = seq.wrapping_sub(first) as usize;
                    match chunk.get(i) {
                        Some(k) if *errno == libc::ENOENT => missing.push(*k),
                        Some(_) => {
                            return Err(format!(
                                "asking for an element of {table} {set}: {}",
                                io::Error::from_raw_os_error(*errno)
                            ));
                        }
                        None => {}
                    }
                }
                let got = found.len() - before + skipped + reply.errors.len();
                if got == 0 {
                    break;
                }
                answered += got;
            }
        }
        Ok((found, missing))
    }

    /// Deletes `pins`, any of which may be missing (expired meanwhile, or never there):
    /// looks them up first (a missing element fails a whole delete transaction), deletes the
    /// present ones in one transaction, and only if one expired in between, one by one.
    /// Returns how many were deleted.
    pub fn delete_present(
        &mut self,
        table: &str,
        set: &str,
        pins: &[StickyEntry],
    ) -> Result<usize, String> {
        if pins.is_empty() {
            return Ok(0);
        }
        let keys: Vec<(std::net::Ipv4Addr, u16)> =
            pins.iter().map(|p| (p.client, p.port)).collect();
        let (present, _) = self.get(table, set, &keys)?;
        if present.is_empty() || self.apply(table, set, Op::Delete, &present).is_ok() {
            return Ok(present.len());
        }
        let mut deleted = 0;
        for p in &present {
            match self.apply(table, set, Op::Delete, std::slice::from_ref(p)) {
                Ok(()) => deleted += 1,
                Err(e) if e.ends_with(&io::Error::from_raw_os_error(libc::ENOENT).to_string()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// Against the kernel, in a network namespace of the test's own (an anonymous one: it goes
/// with the thread). Root only; skips loudly otherwise, fails under
/// PROXYHA_REQUIRE_ROOT_TESTS=1.
#[cfg(test)]
mod kernel {
    use super::*;
    use std::io::Write;
    use std::net::Ipv4Addr;
    use std::process::{Command, Stdio};
    use std::time::Instant;

    use crate::dataplane::parse_sticky_dump;

    fn nft(script: &str) -> String {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_json_dump() -> Vec<StickyEntry> {
        let out = Command::new("nft")
            .args(["-j", "list", "map", "ip", "t", "m"])
            .output()
            .unwrap();
        assert!(out.status.success());
        parse_sticky_dump(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    fn pins(n: u32, expires_ms: u64) -> Vec<StickyEntry> {
        (0..n)
            .map(|i| StickyEntry {
                client: Ipv4Addr::from(0x0a40_0000 + i),
                port: 9090 + (i % 3) as u16,
                mark: 0x0a58_0002 + i % 4,
                expires_ms,
            })
            .collect()
    }

    fn sorted(mut v: Vec<StickyEntry>) -> Vec<(Ipv4Addr, u16, u32)> {
        let mut out: Vec<_> = v.drain(..).map(|e| (e.client, e.port, e.mark)).collect();
        out.sort();
        out
    }

    #[test]
    fn adds_dumps_and_deletes_agree_with_nft_in_both_directions() {
        if !crate::test_support::require_root("nfsock kernel test") {
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            nft("add table ip t\nadd map ip t m { type ipv4_addr . inet_service : mark; size 262144; flags dynamic,timeout; }\n");
            let mut s = NfSock::open().expect("netlink socket");
            // ours → nft
            let ours = pins(5000, 120_000);
            s.apply("t", "m", Op::Add { timeout_ms: 300_000 }, &ours).unwrap();
            let seen = nft_json_dump();
            assert_eq!(sorted(seen.clone()), sorted(ours.clone()));
            assert!(seen.iter().all(|e| (118_000..=120_000).contains(&e.expires_ms)), "{:?}", &seen[..2]);
            // nft → ours
            nft("add element ip t m { 10.9.9.9 . 443 timeout 300s expires 60s : 0x0a580009 }\n");
            let (dumped, skipped) = s.dump("t", "m").unwrap();
            assert_eq!(skipped, 0);
            assert_eq!(dumped.len(), 5001);
            let one = dumped.iter().find(|e| e.client == Ipv4Addr::new(10, 9, 9, 9)).unwrap();
            assert_eq!((one.port, one.mark), (443, 0x0a58_0009));
            assert!((58_000..=60_000).contains(&one.expires_ms), "{one:?}");
            // re-adding a present pin with the same node is fine; another node is refused
            s.apply("t", "m", Op::Add { timeout_ms: 300_000 }, &ours[..10]).unwrap();
            let mut other = ours[0];
            other.mark += 100;
            assert!(s.apply("t", "m", Op::Add { timeout_ms: 300_000 }, &[other]).is_err());
            // asking for known keys: found with their expiry, or missing
            let keys: Vec<(Ipv4Addr, u16)> = ours[..3000]
                .iter()
                .map(|e| (e.client, e.port))
                .chain([(Ipv4Addr::new(10, 1, 2, 3), 80)])
                .collect();
            let (found, missing) = s.get("t", "m", &keys).unwrap();
            assert_eq!(found.len(), 3000);
            assert_eq!(missing, [(Ipv4Addr::new(10, 1, 2, 3), 80)]);
            assert_eq!(sorted(found), sorted(ours[..3000].to_vec()));
            // deleting, some already gone: the present ones go
            let mut doomed = ours[..100].to_vec();
            doomed.push(StickyEntry { client: Ipv4Addr::new(10, 1, 2, 3), ..ours[0] });
            assert_eq!(s.delete_present("t", "m", &doomed).unwrap(), 100);
            assert_eq!(s.dump("t", "m").unwrap().0.len(), 4901);
            // at scale: figures for the README (not asserted: timing belongs to benches)
            nft("flush map ip t m\n");
            let big = pins(100_000, 250_000);
            let t = Instant::now();
            s.apply("t", "m", Op::Add { timeout_ms: 300_000 }, &big).unwrap();
            let add = t.elapsed();
            let t = Instant::now();
            let (all, _) = s.dump("t", "m").unwrap();
            let dump = t.elapsed();
            assert_eq!(all.len(), 100_000);
            let keys: Vec<(Ipv4Addr, u16)> = big[..5000].iter().map(|e| (e.client, e.port)).collect();
            let t = Instant::now();
            let (found, _) = s.get("t", "m", &keys).unwrap();
            let get = t.elapsed();
            assert_eq!(found.len(), 5000);
            eprintln!("nfsock: 100,000 pins added in {add:?}, dumped in {dump:?}; 5,000 looked up in {get:?}");
        })
        .join()
        .unwrap();
    }
}
