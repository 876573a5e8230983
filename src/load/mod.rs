//! Load sampling for the membership report (issue 3) and the listener check (issue 4).
//!
//! The parsers are sans-IO: they take the text of `/proc/stat`, `/proc/net/tcp` and
//! `/proc/net/tcp6` and never panic on malformed input (bad lines are skipped, since the
//! kernel's format is stable and a half-written line is the only realistic corruption).
//! [`Sampler`] is the thin shell that reads the files; its paths are injectable so tests and
//! the lab can point it at fixtures or another namespace's `/proc/<pid>/net/…`.
//!
//! Why /proc and not sock_diag netlink: the counts are needed once a second, /proc text is
//! the same on every kernel we ship, and parsing it is testable with captured fixtures.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod cgroup;

pub use cgroup::CgroupCpu;

/// Aggregate CPU time from the `cpu ` line of `/proc/stat`, in jiffies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Time doing work: everything but idle and iowait.
    pub busy: u64,
    /// user + nice + system + idle + iowait + irq + softirq + steal. Guest time is already
    /// counted in user/nice, so adding the guest columns would count it twice.
    pub total: u64,
}

/// Parses the aggregate `cpu ` line of `/proc/stat`; `None` when it is missing or short.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .ok()?;
    // Kernels before 2.6.11 had only 4-7 columns; user, nice, system, idle are the minimum.
    if fields.len() < 4 {
        return None;
    }
    let total = fields.iter().fold(0u64, |a, f| a.saturating_add(*f));
    let idle = fields[3].saturating_add(fields.get(4).copied().unwrap_or(0));
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// Number of `cpuN` lines in `/proc/stat` (online CPUs); `None` when there are none.
pub fn parse_cpu_count(text: &str) -> Option<usize> {
    let n = text
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .and_then(|rest| rest.split(char::is_whitespace).next())
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n)
}

/// CPU count for the capacity default: the scheduler's view (cgroup / affinity aware) when
/// available, else 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Utilisation in `[0, 1]` between two samples; 0 when no time passed or the counters went
/// backwards (CPU hot-unplug can shrink the aggregate).
pub fn utilisation(prev: CpuTimes, now: CpuTimes) -> f64 {
    let total = now.total.saturating_sub(prev.total);
    let busy = now.busy.saturating_sub(prev.busy);
    if total == 0 {
        return 0.0;
    }
    (busy as f64 / total as f64).clamp(0.0, 1.0)
}

/// TCP state column values (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

/// One socket line of `/proc/net/tcp{,6}`: local address, local port, state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpLine {
    addr: IpAddr,
    port: u16,
    state: u8,
}

fn parse_tcp_line(line: &str) -> Option<TcpLine> {
    let mut cols = line.split_whitespace();
    let sl = cols.next()?;
    if !sl.ends_with(':') {
        return None; // the header line
    }
    let local = cols.next()?;
    let _remote = cols.next()?;
    let state = u8::from_str_radix(cols.next()?, 16).ok()?;
    let (addr_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    Some(TcpLine {
        addr: parse_hex_addr(addr_hex)?,
        port,
        state,
    })
}

/// The kernel prints addresses as 32-bit words in host byte order (`%08X` of `__be32`
/// read as a native integer), so on little-endian hosts each word's bytes are reversed.
fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(s, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let chunk = hex.get(i * 8..i * 8 + 8)?;
                b[i * 4..i * 4 + 4].copy_from_slice(&word(chunk)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Adds the ESTABLISHED sockets whose *local* port is in `ports` from one `/proc/net/tcp`
/// or `/proc/net/tcp6` text into `counts` (call once per file). Ports not in the list are
/// ignored; every listed port gets an entry, 0 if nothing matched.
pub fn count_established(text: &str, ports: &[u16], counts: &mut BTreeMap<u16, u32>) {
    for p in ports {
        counts.entry(*p).or_insert(0);
    }
    for line in text.lines().filter_map(parse_tcp_line) {
        if line.state == TCP_ESTABLISHED
            && let Some(c) = counts.get_mut(&line.port)
        {
            *c = c.saturating_add(1);
        }
    }
}

/// A listening TCP socket on a redirected port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    pub port: u16,
    /// The bound address: `0.0.0.0` / `::` for a wildcard listener.
    pub addr: IpAddr,
}

impl Listener {
    /// Proxy HA needs wildcard listeners: the VIP (on `lo` or the interface) and the node's
    /// own address must both reach the proxy. `::` also covers IPv4 unless the socket is
    /// IPV6_V6ONLY, which /proc does not show; the port monitor treats `::` as wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.addr.is_unspecified()
    }
}

/// LISTEN sockets on `ports` from one `/proc/net/tcp{,6}` text, in file order.
pub fn listeners(text: &str, ports: &[u16]) -> Vec<Listener> {
    text.lines()
        .filter_map(parse_tcp_line)
        .filter(|l| l.state == TCP_LISTEN && ports.contains(&l.port))
        .map(|l| Listener {
            port: l.port,
            addr: l.addr,
        })
        .collect()
}

/// Ports with a TCP listener reachable from the network (not bound to loopback only); less
/// the redirected ports, a node's "direct-only" ports.
pub fn listening_ports(text: &str) -> std::collections::BTreeSet<u16> {
    text.lines()
        .filter_map(parse_tcp_line)
        .filter(|l| l.state == TCP_LISTEN && !l.addr.is_loopback())
        .map(|l| l.port)
        .collect()
}

/// A LISTEN socket with its inode, for `proxyha check` to name the owning process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenSocket {
    pub port: u16,
    pub addr: IpAddr,
    /// The socket's inode: `/proc/<pid>/fd/*` of the owner links to `socket:[inode]`.
    /// 0 when the kernel shows none (a socket being torn down).
    pub inode: u64,
}

impl ListenSocket {
    pub fn listener(&self) -> Listener {
        Listener {
            port: self.port,
            addr: self.addr,
        }
    }
}

/// Like [`listeners`], with each socket's inode (the tenth column).
pub fn listen_sockets(text: &str, ports: &[u16]) -> Vec<ListenSocket> {
    text.lines()
        .filter_map(|line| {
            let l = parse_tcp_line(line)?;
            if l.state != TCP_LISTEN || !ports.contains(&l.port) {
                return None;
            }
            let inode = line
                .split_whitespace()
                .nth(9)
                .and_then(|c| c.parse::<u64>().ok())?;
            Some(ListenSocket {
                port: l.port,
                addr: l.addr,
                inode,
            })
        })
        .collect()
}

/// The inode of a `/proc/<pid>/fd/<n>` link target `socket:[12345]`; `None` for any other
/// kind of file.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Per-port verdict for the port monitor (issue 4): listening on a wildcard address, only
/// on specific addresses (the seed's "a listener bound to one IP breaks Proxy HA"), or not
/// at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortListen {
    Wildcard,
    SpecificOnly(Vec<IpAddr>),
    NotListening,
}

impl PortListen {
    /// Why the port monitor fails the port (issue 4 §1); `None` when it is fine.
    pub fn reason(&self) -> Option<String> {
        match self {
            PortListen::Wildcard => None,
            PortListen::NotListening => Some("nothing is listening".into()),
            PortListen::SpecificOnly(addrs) => {
                let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                Some(format!(
                    "bound to {} only; Proxy HA needs it bound to 0.0.0.0",
                    list.join(", ")
                ))
            }
        }
    }
}

/// Folds [`listeners`] of both files into one verdict per port.
pub fn port_listen_state(found: &[Listener], ports: &[u16]) -> BTreeMap<u16, PortListen> {
    ports
        .iter()
        .map(|p| {
            let mine: Vec<&Listener> = found.iter().filter(|l| l.port == *p).collect();
            let state = if mine.iter().any(|l| l.is_wildcard()) {
                PortListen::Wildcard
            } else if mine.is_empty() {
                PortListen::NotListening
            } else {
                let mut addrs: Vec<IpAddr> = mine.iter().map(|l| l.addr).collect();
                addrs.sort();
                addrs.dedup();
                PortListen::SpecificOnly(addrs)
            };
            (*p, state)
        })
        .collect()
}

/// Exponentially weighted moving average with a time constant: after a step, the value
/// covers 63 % of it in `tau`. Time is injected, so irregular sampling (a late tick) weighs
/// a sample by the time it stands for rather than counting ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    tau_s: f64,
    value: Option<f64>,
}

impl Ewma {
    /// Default time constant: 5 s smooths one-second noise but follows a real change
    /// within the 10 s the issue allows for rebalancing.
    pub const DEFAULT_TAU: Duration = Duration::from_secs(5);

    pub fn new(tau: Duration) -> Ewma {
        Ewma {
            tau_s: tau.as_secs_f64(),
            value: None,
        }
    }

    /// Feeds a sample that stands for the last `dt`; the first sample is taken as is.
    /// Non-finite samples are ignored.
    pub fn update(&mut self, sample: f64, dt: Duration) -> f64 {
        if !sample.is_finite() {
            return self.value.unwrap_or(0.0);
        }
        let v = match self.value {
            None => sample,
            Some(_) if self.tau_s <= 0.0 => sample,
            Some(prev) => {
                let alpha = 1.0 - (-dt.as_secs_f64() / self.tau_s).exp();
                prev + alpha * (sample - prev)
            }
        };
        self.value = Some(v);
        v
    }

    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma::new(Ewma::DEFAULT_TAU)
    }
}

/// Where the sampler reads; [`SamplerPaths::default`] is the host's /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerPaths {
    pub stat: PathBuf,
    pub tcp: PathBuf,
    pub tcp6: PathBuf,
    /// `/proc/self/cgroup` and `/proc/self/mountinfo`: a CPU quota on our cgroup makes
    /// the cgroup the node ([`cgroup`]).
    pub self_cgroup: PathBuf,
    pub mountinfo: PathBuf,
}

impl Default for SamplerPaths {
    fn default() -> Self {
        SamplerPaths {
            stat: "/proc/stat".into(),
            tcp: "/proc/net/tcp".into(),
            tcp6: "/proc/net/tcp6".into(),
            self_cgroup: "/proc/self/cgroup".into(),
            mountinfo: "/proc/self/mountinfo".into(),
        }
    }
}

/// One smoothed sample for the load report.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSample {
    /// Smoothed CPU utilisation 0..=1 (0 until two /proc/stat readings exist).
    pub cpu: f64,
    /// Raw utilisation of the last interval.
    pub cpu_raw: f64,
    pub cpu_count: usize,
    /// The cgroup whose quota the CPU figures are measured against; `None`: /proc/stat.
    pub cgroup: Option<CgroupCpu>,
    /// Smoothed established connections per redirected port.
    pub conns: BTreeMap<u16, f64>,
    /// Raw counts of this sample.
    pub conns_raw: BTreeMap<u16, u32>,
    /// The port monitor's verdict per redirected (listener) port.
    pub listen: BTreeMap<u16, PortListen>,
    /// Every port with a listener reachable from the network (not loopback only); less the
    /// redirected ports, the node's direct-only ports.
    pub listening_ports: std::collections::BTreeSet<u16>,
}

/// Reads /proc once per call (the daemon calls it every second with the elapsed time).
#[derive(Debug, Clone)]
pub struct Sampler {
    paths: SamplerPaths,
    ports: Vec<u16>,
    prev: Option<CpuTimes>,
    /// The cgroup source and its last usage reading (µs), when one applies.
    cgroup: Option<(CgroupCpu, Option<u64>)>,
    /// `/proc/self/cgroup` and the mountinfo read with it: mountinfo is read again only
    /// when our cgroup changes, not every sample.
    mounts: Option<(String, String)>,
    cpu: Ewma,
    conns: BTreeMap<u16, Ewma>,
    tau: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}; load sampling needs a mounted /proc")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("parsing {path}: no aggregate `cpu` line; is it /proc/stat?")]
    Stat { path: String },
}

fn read(path: &Path) -> Result<String, LoadError> {
    read_proc(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a /proc file in as few read(2) calls as it takes: `/proc/net/tcp` walks the kernel's
/// socket table again on every call, and `read_to_string`'s small first reads (32 bytes, then
/// doubling) made that six walks of ~0.6 ms each per file and period.
fn read_proc(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl Sampler {
    pub fn new(paths: SamplerPaths, ports: Vec<u16>, tau: Duration) -> Sampler {
        Sampler {
            paths,
            ports,
            prev: None,
            cgroup: None,
            mounts: None,
            cpu: Ewma::new(tau),
            conns: BTreeMap::new(),
            tau,
        }
    }

    /// Reads the files and folds them into the averages; `dt` is the time since the last
    /// call. A missing tcp6 file (IPv6 disabled) counts as empty.
    pub fn sample(&mut self, dt: Duration) -> Result<LoadSample, LoadError> {
        let (cpu_raw, cpu_count, cgroup) = match self.cgroup_cpu(dt) {
            Some(v) => v,
            None => self.stat_cpu()?,
        };
        let cpu = match cpu_raw {
            Some(u) => self.cpu.update(u, dt),
            None => 0.0,
        };
        let cpu_raw = cpu_raw.unwrap_or(0.0);

        // Each file once: connection counts, the listener check and the listening ports.
        let mut texts = vec![read(&self.paths.tcp)?];
        match read_proc(&self.paths.tcp6) {
            Ok(t) => texts.push(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LoadError::Read {
                    path: self.paths.tcp6.display().to_string(),
                    source,
                });
            }
        }
        let mut raw = BTreeMap::new();
        let mut found = Vec::new();
        let mut listening_ports = std::collections::BTreeSet::new();
        for t in &texts {
            count_established(t, &self.ports, &mut raw);
            found.extend(listeners(t, &self.ports));
            listening_ports.extend(self::listening_ports(t));
        }
        let tau = self.tau;
        let conns = raw
            .iter()
            .map(|(p, c)| {
                let e = self.conns.entry(*p).or_insert_with(|| Ewma::new(tau));
                (*p, e.update(f64::from(*c), dt))
            })
            .collect();
        Ok(LoadSample {
            cpu,
            cpu_raw,
            cpu_count,
            cgroup,
            conns,
            conns_raw: raw,
            listen: port_listen_state(&found, &self.ports),
            listening_ports,
        })
    }

    /// CPU from the cgroup when our cgroup has a quota (resolved every sample, so a daemon
    /// moved into or out of a cgroup follows). `None`: use /proc/stat. The utilisation is
    /// `None` on the first reading of a source.
    fn cgroup_cpu(&mut self, dt: Duration) -> Option<(Option<f64>, usize, Option<CgroupCpu>)> {
        let self_cgroup = std::fs::read_to_string(&self.paths.self_cgroup).ok()?;
        if self.mounts.as_ref().is_none_or(|(c, _)| *c != self_cgroup) {
            let mi = std::fs::read_to_string(&self.paths.mountinfo).ok()?;
            self.mounts = Some((self_cgroup, mi));
        }
        let (self_cgroup, mi) = self.mounts.as_ref()?;
        let found = cgroup::resolve(self_cgroup, mi, |p| std::fs::read_to_string(p).ok());
        let Some(found) = found else {
            self.cgroup = None;
            return None;
        };
        let now_us = std::fs::read_to_string(&found.usage)
            .ok()
            .and_then(|t| found.parse_usage_us(&t));
        let prev_us = match self.cgroup.take() {
            Some((old, prev)) if old.usage == found.usage => prev,
            _ => {
                log::info!(
                    "CPU load is measured in cgroup {} (quota {:.2} CPU), not /proc/stat",
                    found.path,
                    found.cpus
                );
                None
            }
        };
        let util = match (prev_us, now_us) {
            (Some(a), Some(b)) => Some(cgroup::utilisation(
                a,
                b,
                u64::try_from(dt.as_micros()).unwrap_or(u64::MAX),
                found.cpus,
            )),
            _ => None,
        };
        self.prev = None;
        let count = (found.cpus.round() as usize).max(1);
        self.cgroup = Some((found.clone(), now_us));
        Some((util, count, Some(found)))
    }

    /// CPU from the machine's /proc/stat.
    fn stat_cpu(&mut self) -> Result<(Option<f64>, usize, Option<CgroupCpu>), LoadError> {
        let stat = read(&self.paths.stat)?;
        let times = parse_proc_stat(&stat).ok_or_else(|| LoadError::Stat {
            path: self.paths.stat.display().to_string(),
        })?;
        let cpu_count = parse_cpu_count(&stat).unwrap_or_else(cpu_count);
        let util = self.prev.map(|p| utilisation(p, times));
        self.prev = Some(times);
        Ok((util, cpu_count, None))
    }

    /// The redirected ports to count and check, after a reload changed them.
    pub fn set_ports(&mut self, ports: Vec<u16>) {
        self.conns.retain(|p, _| ports.contains(p));
        self.ports = ports;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_larger_than_the_first_buffer_are_read_whole() {
        let dir = std::env::temp_dir().join(format!("proxyha-readproc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tcp");
        let text: String = (0..3000)
            .map(|i| format!("{i:>6}: line of the table\n"))
            .collect();
        assert!(text.len() > 64 * 1024);
        std::fs::write(&p, &text).unwrap();
        assert_eq!(read_proc(&p).unwrap(), text);
        std::fs::write(&p, [0xffu8, 0xfe]).unwrap();
        assert!(read_proc(&p).is_err(), "not UTF-8");
        std::fs::remove_dir_all(&dir).unwrap();
        // The real thing: whole, and the same as the slow way.
        if let Ok(slow) = std::fs::read_to_string("/proc/self/mountinfo") {
            assert_eq!(read_proc(Path::new("/proc/self/mountinfo")).unwrap(), slow);
        }
    }

    // Captured on the build machine (2 CPUs), trimmed.
    const STAT_A: &str = "cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0\n\
cpu0 1393280 32966 429713 5761541 2005 0 13524 0 0 0\n\
cpu1 1335845 36258 411702 5838963 1893 0 4366 0 0 0\n\
intr 1462898 0 0\nctxt 7017063\nbtime 1700000000\nprocesses 26577\n";
    const STAT_B: &str = "cpu  10132253 290696 3084819 46828683 16683 0 25195 0 0 0\n\
cpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\n";

    // A wildcard listener on 9090, a 127.0.0.1-only listener on 2121, two established
    // connections to 9090 (one to the VIP 10.88.0.100), one established from an ephemeral
    // port, a TIME_WAIT on 9090.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21456 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:0849 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21457 1 0000000000000000 100 0 0 10 0\n\
   2: 6400580A:2382 6501580A:C350 01 00000000:00000000 00:00000000 00000000     0        0 31001 1 0000000000000000 20 4 30 10 -1\n\
   3: 0200580A:2382 6601580A:C351 01 00000000:00000000 00:00000000 00000000     0        0 31002 1 0000000000000000 20 4 30 10 -1\n\
   4: 0200580A:C352 0300580A:2382 01 00000000:00000000 00:00000000 00000000     0        0 31003 1 0000000000000000 20 4 30 10 -1\n\
   5: 0200580A:2382 6701580A:C353 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n";

    // `::` listening on 3128, `::1` on 9090, one IPv4-mapped established connection to 9090.
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000000000000000000000000000:0C38 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0000000000000000FFFF00000200580A:2382 0000000000000000FFFF00006801580A:C354 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait_and_guest_is_not_double_counted() {
        let t = parse_proc_stat(STAT_A).unwrap();
        assert_eq!(
            t.total,
            10132153 + 290696 + 3084719 + 46828483 + 16683 + 25195
        );
        assert_eq!(t.busy, t.total - 46828483 - 16683);
        assert_eq!(parse_cpu_count(STAT_A), Some(2));
    }

    #[test]
    fn utilisation_between_samples() {
        let a = parse_proc_stat(STAT_A).unwrap();
        let b = parse_proc_stat(STAT_B).unwrap();
        // +100 user, +100 system, +200 idle
        assert!((utilisation(a, b) - 0.5).abs() < 1e-12);
        assert_eq!(
            utilisation(b, a),
            0.0,
            "counters going backwards read as idle"
        );
        assert_eq!(utilisation(a, a), 0.0);
    }

    #[test]
    fn garbage_does_not_panic() {
        for t in [
            "",
            "cpu",
            "cpu  x y z",
            "cpu 1 2",
            "\u{0}\u{ff}",
            "cpu  1 2 3 4",
        ] {
            let _ = parse_proc_stat(t);
            let _ = parse_cpu_count(t);
            let mut m = BTreeMap::new();
            count_established(t, &[9090], &mut m);
            let _ = listeners(t, &[9090]);
        }
        assert_eq!(
            parse_proc_stat("cpu  1 2 3 4"),
            Some(CpuTimes { busy: 6, total: 10 })
        );
        let mut m = BTreeMap::new();
        count_established(
            "  0: ZZ:2382 0:0 01\n  1: 00000000:99999 0:0 01\n",
            &[9090],
            &mut m,
        );
        assert_eq!(m[&9090], 0);
    }

    #[test]
    fn established_counts_local_port_only_in_both_files() {
        let mut m = BTreeMap::new();
        count_established(TCP, &[9090, 2121, 80], &mut m);
        count_established(TCP6, &[9090, 2121, 80], &mut m);
        assert_eq!(
            m[&9090], 3,
            "two IPv4 + one v4-mapped; TIME_WAIT and the outgoing one excluded"
        );
        assert_eq!(m[&2121], 0);
        assert_eq!(m[&80], 0);
    }

    #[test]
    fn addresses_decode_in_host_byte_order() {
        let l = parse_tcp_line(TCP.lines().nth(3).unwrap()).unwrap();
        assert_eq!(l.addr, IpAddr::V4(Ipv4Addr::new(10, 88, 0, 100)));
        assert_eq!(l.port, 9090);
        let l6 = parse_tcp_line(TCP6.lines().nth(2).unwrap()).unwrap();
        assert_eq!(l6.addr, "::1".parse::<IpAddr>().unwrap());
        let m = parse_tcp_line(TCP6.lines().nth(3).unwrap()).unwrap();
        assert_eq!(m.addr, "::ffff:10.88.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn listener_check_tells_wildcard_from_specific() {
        let mut found = listeners(TCP, &[9090, 2121, 3128, 8080]);
        found.extend(listeners(TCP6, &[9090, 2121, 3128, 8080]));
        let s = port_listen_state(&found, &[9090, 2121, 3128, 8080]);
        assert_eq!(s[&9090], PortListen::Wildcard, "0.0.0.0 wins over ::1");
        assert_eq!(
            s[&2121],
            PortListen::SpecificOnly(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(s[&3128], PortListen::Wildcard, ":: counts as wildcard");
        assert_eq!(s[&8080], PortListen::NotListening);
    }

    #[test]
    fn listen_sockets_carry_the_inode_for_the_owner_lookup() {
        let mut found = listen_sockets(TCP, &[9090, 2121]);
        found.extend(listen_sockets(TCP6, &[9090, 2121]));
        assert_eq!(
            found,
            vec![
                ListenSocket {
                    port: 9090,
                    addr: "0.0.0.0".parse().unwrap(),
                    inode: 21456
                },
                ListenSocket {
                    port: 2121,
                    addr: "127.0.0.1".parse().unwrap(),
                    inode: 21457
                },
                ListenSocket {
                    port: 9090,
                    addr: "::1".parse().unwrap(),
                    inode: 2
                },
            ],
            "LISTEN only: established and TIME_WAIT lines are left out"
        );
        let as_listeners: Vec<Listener> = found.iter().map(|s| s.listener()).collect();
        let mut plain = listeners(TCP, &[9090, 2121]);
        plain.extend(listeners(TCP6, &[9090, 2121]));
        assert_eq!(as_listeners, plain);
        // A line cut before the inode column is skipped, not misread.
        assert_eq!(
            listen_sockets(
                "   0: 00000000:2382 00000000:0000 0A 0:0 00:0 0 0 0\n",
                &[9090]
            ),
            vec![]
        );
    }

    #[test]
    fn socket_links_name_the_inode() {
        assert_eq!(socket_inode("socket:[21456]"), Some(21456));
        for other in [
            "pipe:[21456]",
            "/dev/null",
            "socket:[]",
            "socket:[12x]",
            "socket:[1",
            "",
            "anon_inode:[eventpoll]",
        ] {
            assert_eq!(socket_inode(other), None, "{other}");
        }
    }

    #[test]
    fn ewma_follows_a_step_by_the_time_constant() {
        let mut e = Ewma::new(Duration::from_secs(5));
        assert_eq!(e.update(0.0, Duration::from_secs(1)), 0.0);
        let mut v = 0.0;
        for _ in 0..5 {
            v = e.update(1.0, Duration::from_secs(1));
        }
        assert!(
            (v - (1.0 - (-1.0f64).exp())).abs() < 1e-9,
            "63 % after tau: {v}"
        );
        // One 5 s step weighs as much as five 1 s steps.
        let mut f = Ewma::new(Duration::from_secs(5));
        f.update(0.0, Duration::ZERO);
        assert!((f.update(1.0, Duration::from_secs(5)) - v).abs() < 1e-9);
        assert_eq!(
            f.update(f64::NAN, Duration::from_secs(1)),
            f.value().unwrap()
        );
    }

    #[test]
    fn sampler_reads_injected_paths() {
        let dir = std::env::temp_dir().join(format!("proxyha-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = SamplerPaths {
            stat: dir.join("stat"),
            tcp: dir.join("tcp"),
            tcp6: dir.join("tcp6-missing"),
            self_cgroup: dir.join("cgroup-missing"),
            mountinfo: dir.join("mountinfo-missing"),
        };
        std::fs::write(&paths.stat, STAT_A).unwrap();
        std::fs::write(&paths.tcp, TCP).unwrap();
        let mut s = Sampler::new(paths.clone(), vec![9090, 2121], Ewma::DEFAULT_TAU);
        let first = s.sample(Duration::from_secs(1)).unwrap();
        assert_eq!(first.cpu, 0.0);
        assert_eq!(first.cpu_count, 2);
        assert_eq!(first.conns_raw[&9090], 2);
        std::fs::write(&paths.stat, STAT_B).unwrap();
        let second = s.sample(Duration::from_secs(1)).unwrap();
        assert!((second.cpu_raw - 0.5).abs() < 1e-12);
        assert!(
            (second.cpu - 0.5).abs() < 1e-12,
            "first real sample taken as is"
        );
        assert_eq!(
            second.listen[&2121],
            PortListen::SpecificOnly(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(second.listen[&9090], PortListen::Wildcard);
        assert!(
            second.listening_ports.contains(&9090) && !second.listening_ports.contains(&2121),
            "loopback-only listeners are not reachable: {:?}",
            second.listening_ports
        );
        std::fs::remove_file(&paths.stat).unwrap();
        let err = s.sample(Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.starts_with("reading ") && err.contains("stat"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sampler_measures_a_cgroup_with_a_quota_and_falls_back_when_it_goes() {
        let dir = std::env::temp_dir().join(format!("proxyha-cg-{}", std::process::id()));
        let node = dir.join("node");
        std::fs::create_dir_all(&node).unwrap();
        let paths = SamplerPaths {
            stat: dir.join("stat"),
            tcp: dir.join("tcp"),
            tcp6: dir.join("tcp6-missing"),
            self_cgroup: dir.join("self-cgroup"),
            mountinfo: dir.join("mountinfo"),
        };
        std::fs::write(&paths.stat, STAT_A).unwrap();
        std::fs::write(&paths.tcp, TCP).unwrap();
        std::fs::write(&paths.self_cgroup, "0::/node\n").unwrap();
        std::fs::write(
            &paths.mountinfo,
            format!("35 24 0:30 / {} rw - cgroup2 cgroup2 rw\n", dir.display()),
        )
        .unwrap();
        std::fs::write(node.join("cpu.max"), "100000 100000\n").unwrap();
        std::fs::write(node.join("cpu.stat"), "usage_usec 1000000\n").unwrap();
        let mut s = Sampler::new(paths.clone(), vec![9090], Ewma::DEFAULT_TAU);
        let first = s.sample(Duration::from_secs(1)).unwrap();
        assert_eq!((first.cpu, first.cpu_count), (0.0, 1));
        assert_eq!(
            first.cgroup.as_ref().map(|c| c.path.as_str()),
            Some("/node")
        );
        // 0.9 CPU-seconds in 1 s of a 1-CPU quota; /proc/stat (0.5 busy) is not used.
        std::fs::write(node.join("cpu.stat"), "usage_usec 1900000\n").unwrap();
        std::fs::write(&paths.stat, STAT_B).unwrap();
        let second = s.sample(Duration::from_secs(1)).unwrap();
        assert!((second.cpu_raw - 0.9).abs() < 1e-9, "{second:?}");
        // Quota lifted: back to /proc/stat, starting a fresh pair of readings.
        std::fs::write(node.join("cpu.max"), "max 100000\n").unwrap();
        let third = s.sample(Duration::from_secs(1)).unwrap();
        assert_eq!(
            (third.cgroup, third.cpu_count, third.cpu_raw),
            (None, 2, 0.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
