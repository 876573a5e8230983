//! Network-namespace lab for the end-to-end tests, the demo and the failover benchmark.
//!
//! ```text
//!   <prefix>br: br0 (mcast_snooping 0, stp_state 0)
//!      ├── v<name> ══ veth ══ eth0 in <prefix><name>  (node or client namespace)
//!      └── …
//! ```
//! Every lab gets a unique prefix ("ph" + 5 characters), a bridge namespace and one
//! namespace per host, joined by veth pairs created *inside* the bridge namespace, so the
//! host's own interfaces and namespace are never touched. Addresses are 10.77.N.0/24 and
//! live only inside the lab. Every external command runs under `timeout`, every wait is
//! bounded, and [`Lab`]'s `Drop` kills the processes it started (by PID), joins its
//! threads and deletes its namespaces — also when a test panics.
//!
//! Labs in one process run one at a time (a process-wide lock held by each [`Lab`]), so
//! timing bounds hold on a small machine even when the test harness runs tests in parallel.

mod cgroup;
pub mod clients;
mod daemons;
mod filter;
mod ops;
pub mod pins;
mod probe;
pub mod soak;

pub use cgroup::CpuCgroup;
pub use daemons::{Daemon, Kind, Status, VrrpOpts};
pub use filter::datagram;
pub use probe::{Advert, AdvertWatch, Gap, Prober, Sample, advert_datagram, gap, inject, sniff};

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Upper bound for any one external command (`ip`, `keepalived` helpers, `proxyha status`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The VIP's last octet in the lab subnet.
pub const VIP_OCTET: u8 = 100;
/// TCP port of the lab's answer-with-my-name server (not a port redirect, so the node
/// that holds the VIP answers itself).
pub const ECHO_PORT: u16 = 9091;

static LAB_LOCK: Mutex<()> = Mutex::new(());
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when the caller may build a lab. Without root it prints a loud SKIP line and
/// returns false — unless `PROXYHA_REQUIRE_ROOT_TESTS=1`, which turns the skip into a panic
/// (CI must never pass by skipping).
pub fn require_root(what: &str) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        return true;
    }
    if std::env::var("PROXYHA_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!(
            "{what}: needs root (network namespaces); PROXYHA_REQUIRE_ROOT_TESTS=1 forbids skipping"
        );
    }
    // Straight to fd 2: the test harness captures `eprintln!`, and a skip must be seen.
    let line = format!(
        "*** SKIP {what}: needs root (network namespaces, raw sockets); run as root to test ***\n"
    );
    let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
    false
}

/// The `proxyha` binary next to a running example (`target/<profile>/examples/x` →
/// `target/<profile>/proxyha`), or `$PROXYHA_BIN`.
pub fn proxyha_next_to_exe() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("PROXYHA_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("proxyha"))
        .ok_or_else(|| io::Error::other("locating proxyha next to the example: no parent dir"))?;
    if !bin.exists() {
        return Err(io::Error::other(format!(
            "proxyha binary {} not found: run `cargo build --release` (or set PROXYHA_BIN)",
            bin.display()
        )));
    }
    Ok(bin)
}

/// Runs `timeout 10 program args…`, returning stdout; a non-zero exit is an error naming
/// the command and its stderr.
pub fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = run_output(program, args)?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], returning the raw output whatever the exit status.
pub fn run_output(program: &str, args: &[&str]) -> io::Result<Output> {
    Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg(COMMAND_TIMEOUT.as_secs().to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running `{program}` under timeout: {e}")))
}

/// Polls `f` every `step` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(step);
    }
}

struct Proc {
    pid: u32,
    child: Child,
    /// Extra PIDs the process wrote to files (keepalived's children), checked against
    /// `/proc/<pid>/cmdline` containing `marker` before they are signalled.
    pidfiles: Vec<PathBuf>,
    marker: String,
}

struct Shared {
    prefix: String,
    dir: PathBuf,
    keep_dir: bool,
    procs: Mutex<Vec<Proc>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    namespaces: Mutex<Vec<String>>,
    /// cgroup directories made by [`Lab::cpu_cgroup`], removed after the processes.
    cgroups: Mutex<Vec<PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lab: a bridge namespace, host namespaces around it, and the processes and threads
/// started in them. Dropping it tears everything down.
pub struct Lab {
    shared: Arc<Shared>,
    subnet: u8,
    hosts: Vec<Host>,
    proxyha_bin: Option<PathBuf>,
    _serial: MutexGuard<'static, ()>,
}

/// One host namespace (`<prefix><name>`) with `eth0` on the lab bridge.
#[derive(Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    shared: Arc<Shared>,
}

impl Lab {
    /// Creates the bridge namespace. Waits for any other lab of this process to finish.
    pub fn new() -> io::Result<Lab> {
        let serial = LAB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let (prefix, subnet) = unique_prefix()?;
        let dir = std::env::temp_dir().join(format!("proxyha-lab-{prefix}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
        let shared = Arc::new(Shared {
            prefix: prefix.clone(),
            dir,
            keep_dir: std::env::var("PROXYHA_LAB_KEEP").as_deref() == Ok("1"),
            procs: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            namespaces: Mutex::new(Vec::new()),
            cgroups: Mutex::new(Vec::new()),
        });
        // From here on Drop cleans up whatever was created.
        let lab = Lab {
            shared,
            subnet,
            hosts: Vec::new(),
            proxyha_bin: None,
            _serial: serial,
        };
        let br = format!("{prefix}br");
        run("ip", &["netns", "add", &br])?;
        lock(&lab.shared.namespaces).push(br.clone());
        run("ip", &["-n", &br, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                &br,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
                "stp_state",
                "0",
            ],
        )?;
        run("ip", &["-n", &br, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// Sets the `proxyha` binary used by [`Lab::start_proxyha`].
    pub fn with_proxyha(mut self, bin: impl Into<PathBuf>) -> Lab {
        self.proxyha_bin = Some(bin.into());
        self
    }

    pub fn proxyha_bin(&self) -> io::Result<&Path> {
        self.proxyha_bin
            .as_deref()
            .ok_or_else(|| io::Error::other("lab has no proxyha binary: call Lab::with_proxyha"))
    }

    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// Per-lab directory for configs, logs, pid files and control sockets.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// `10.77.N.<octet>`, N unique to this lab.
    pub fn addr(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, octet)
    }

    pub fn vip(&self) -> Ipv4Addr {
        self.addr(VIP_OCTET)
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Adds host `name` (≤ 6 characters) with `10.77.N.<octet>/24` on its `eth0`.
    pub fn add_host(&mut self, name: &str, octet: u8) -> io::Result<Host> {
        if name.is_empty() || name.len() > 6 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(io::Error::other(format!(
                "host name {name:?}: must be 1..=6 ASCII letters or digits"
            )));
        }
        let prefix = self.shared.prefix.clone();
        let ns = format!("{prefix}{name}");
        let br = format!("{prefix}br");
        let addr = self.addr(octet);
        run("ip", &["netns", "add", &ns])?;
        lock(&self.shared.namespaces).push(ns.clone());
        let outer = format!("v{name}");
        // Created inside the bridge namespace with the peer moved straight into the host
        // namespace: no interface ever appears in the caller's namespace.
        run(
            "ip",
            &[
                "-n", &br, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        )?;
        run(
            "ip",
            &["-n", &br, "link", "set", &outer, "master", "br0", "up"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        let cidr = format!("{addr}/24");
        run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        let host = Host {
            name: name.to_string(),
            ns,
            addr,
            shared: self.shared.clone(),
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The hosts that serve the VIP: it is on their `eth0` and `eth0` is up. (A crashed
    /// node whose link is down may still have the address configured; it answers nothing.)
    pub fn vip_holders(&self) -> Vec<String> {
        let vip = self.vip();
        self.hosts
            .iter()
            .filter(|h| h.serves(vip))
            .map(|h| h.name.clone())
            .collect()
    }

    /// Sends `signal` to a process this lab started.
    pub fn signal(&self, pid: u32, signal: Signal) -> io::Result<()> {
        if !lock(&self.shared.procs).iter().any(|p| p.pid == pid) {
            return Err(io::Error::other(format!(
                "pid {pid} was not started by this lab"
            )));
        }
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| io::Error::other(format!("kill {pid} {signal}: {e}")))
    }

    /// Waits up to `limit` for a process this lab started to exit; reaps it.
    pub fn wait_exit(&self, pid: u32, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, Duration::from_millis(10), || {
            let mut procs = lock(&self.shared.procs);
            let i = procs.iter().position(|p| p.pid == pid)?;
            match procs[i].child.try_wait() {
                Ok(Some(status)) => {
                    procs.remove(i);
                    Some(status)
                }
                _ => None,
            }
        })
    }

    /// True while a process this lab started has not exited.
    pub fn is_running(&self, pid: u32) -> bool {
        let mut procs = lock(&self.shared.procs);
        procs
            .iter_mut()
            .any(|p| p.pid == pid && matches!(p.child.try_wait(), Ok(None)))
    }

    /// Prints the last lines of every log file of the lab (for failing tests).
    pub fn dump_logs(&self, lines: usize) {
        let Ok(entries) = std::fs::read_dir(&self.shared.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            eprintln!(
                "----- {} (last {} lines) -----",
                path.display(),
                all.len() - from
            );
            for l in &all[from..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab {}: test failed, logs follow", self.shared.prefix);
            self.dump_logs(60);
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        // Processes first (by PID, only ours), so nothing holds a namespace busy.
        let procs: Vec<Proc> = lock(&self.shared.procs).drain(..).collect();
        for mut p in procs {
            for pid in extra_pids(&p.pidfiles, &p.marker) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = p.child.kill();
            if wait_child(&mut p.child, Duration::from_secs(5)).is_none() {
                errors.push(format!("pid {} did not exit after SIGKILL", p.pid));
            }
        }
        let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        let cgroups: Vec<PathBuf> = lock(&self.shared.cgroups).drain(..).collect();
        for dir in cgroups {
            // A killed task leaves its cgroup a moment after it is reaped.
            let gone = wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
                std::fs::remove_dir(&dir).ok()
            });
            if gone.is_none() {
                errors.push(format!("removing cgroup {}", dir.display()));
            }
        }
        let namespaces: Vec<String> = lock(&self.shared.namespaces).drain(..).collect();
        for ns in namespaces.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                errors.push(format!("deleting namespace {ns}: {e}"));
            }
        }
        if !self.shared.keep_dir {
            let _ = std::fs::remove_dir_all(&self.shared.dir);
        }
        for e in errors {
            eprintln!("lab {} teardown: {e}", self.shared.prefix);
        }
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    wait_for(limit, Duration::from_millis(10), || {
        child.try_wait().ok().flatten()
    })
}

/// PIDs from `pidfiles` whose command line still mentions `marker` (guards against PID reuse).
fn extra_pids(pidfiles: &[PathBuf], marker: &str) -> Vec<u32> {
    pidfiles
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

fn unique_prefix() -> io::Result<(String, u8)> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..20 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = u64::from(std::process::id())
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(
                u64::from(LAB_COUNTER.fetch_add(1, Ordering::SeqCst))
                    .wrapping_mul(0xbf58_476d_1ce4_e5b9),
            )
            .wrapping_add(nanos as u64);
        let mut x = n ^ (n >> 31);
        let mut prefix = String::from("ph");
        for _ in 0..5 {
            prefix.push(ALPHABET[(x % 36) as usize] as char);
            x /= 36;
        }
        let subnet = 20 + (n % 200) as u8;
        if !Path::new("/run/netns").join(format!("{prefix}br")).exists() {
            return Ok((prefix, subnet));
        }
    }
    Err(io::Error::other(
        "no unused lab prefix found after 20 tries",
    ))
}

impl Host {
    /// `timeout 10 ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `timeout 10 ip netns exec <ns> program args…`, returning stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["netns", "exec", self.ns.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Starts `program args…` in the namespace with stdout and stderr appended to `log`.
    /// The process belongs to the lab (killed by PID on drop) and gets SIGKILL if the
    /// thread that started it dies. Returns its PID.
    pub fn spawn(&self, program: &Path, args: &[&str], log: &Path) -> io::Result<u32> {
        self.spawn_tracked(program, args, log, Vec::new(), String::new())
    }

    /// Like [`Host::spawn`], but only the network namespace is entered (`nsenter --net`),
    /// not a fresh mount namespace with this namespace's /sys as `ip netns exec` makes: the
    /// process sees the machine's cgroup hierarchies, like a container with its cgroupfs.
    /// proxyha runs so ([`Lab::cpu_cgroup`]); it reads the network only through netlink and
    /// /proc, which follow the network namespace.
    pub fn spawn_net_only(&self, program: &Path, args: &[&str], log: &Path) -> io::Result<u32> {
        let netns = format!("--net=/run/netns/{}", self.ns);
        let mut full: Vec<&str> = vec![&netns, "--"];
        let program = program.to_string_lossy();
        full.push(&program);
        full.extend_from_slice(args);
        self.spawn_with("nsenter", &full, log, Vec::new(), String::new())
    }

    pub(crate) fn spawn_tracked(
        &self,
        program: &Path,
        args: &[&str],
        log: &Path,
        pidfiles: Vec<PathBuf>,
        marker: String,
    ) -> io::Result<u32> {
        let program = program.to_string_lossy();
        let mut full: Vec<&str> = vec!["netns", "exec", &self.ns, &program];
        full.extend_from_slice(args);
        self.spawn_with("ip", &full, log, pidfiles, marker)
    }

    fn spawn_with(
        &self,
        launcher: &str,
        args: &[&str],
        log: &Path,
        pidfiles: Vec<PathBuf>,
        marker: String,
    ) -> io::Result<u32> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", log.display())))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(launcher);
        cmd.args(args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        set_pdeathsig(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("starting {launcher} {} in {}: {e}", args.join(" "), self.ns),
            )
        })?;
        let pid = child.id();
        lock(&self.shared.procs).push(Proc {
            pid,
            child,
            pidfiles,
            marker,
        });
        Ok(pid)
    }

    /// Sets `eth0` up or down.
    pub fn link(&self, up: bool) -> io::Result<()> {
        self.ip(&["link", "set", "eth0", if up { "up" } else { "down" }])
            .map(drop)
    }

    /// IPv4 addresses on `eth0`.
    pub fn addresses(&self) -> io::Result<Vec<Ipv4Addr>> {
        let out = self.ip(&["-j", "addr", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::other(format!("parsing `ip -j addr` of {}: {e}", self.ns)))?;
        let mut addrs = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["family"] == "inet"
                    && let Some(ip) = a["local"].as_str().and_then(|s| s.parse().ok())
                {
                    addrs.push(ip);
                }
            }
        }
        Ok(addrs)
    }

    /// True when `eth0` holds `ip` (false if it cannot be read).
    pub fn has_addr(&self, ip: Ipv4Addr) -> bool {
        self.addresses().map(|a| a.contains(&ip)).unwrap_or(false)
    }

    /// True when `eth0` is administratively up and holds `ip`.
    pub fn serves(&self, ip: Ipv4Addr) -> bool {
        let Ok(out) = self.ip(&["-j", "addr", "show", "dev", "eth0"]) else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let want = ip.to_string();
        v.as_array().into_iter().flatten().any(|link| {
            let up = link["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "UP"));
            up && link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"].as_str() == Some(&want))
        })
    }

    /// Sets a sysctl inside the namespace (`sysctl -w key=value`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Removes `ip` from `eth0` if present (a rebooted box has no stale VIP).
    pub fn flush_addr(&self, ip: Ipv4Addr) -> io::Result<()> {
        let out = self.ip(&["-j", "addr", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["local"].as_str() == Some(&ip.to_string()) {
                    let cidr = format!("{ip}/{}", a["prefixlen"].as_u64().unwrap_or(32));
                    self.ip(&["addr", "del", &cidr, "dev", "eth0"])?;
                }
            }
        }
        Ok(())
    }

    /// MAC address of `eth0`.
    pub fn mac(&self) -> io::Result<String> {
        let out = self.ip(&["-j", "link", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::other(format!("parsing `ip -j link` of {}: {e}", self.ns)))?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| io::Error::other(format!("no MAC on eth0 of {}", self.ns)))
    }

    /// Link state of `eth0` as `ip` reports it ("UP", "DOWN", …).
    pub fn operstate(&self) -> io::Result<String> {
        let out = self.ip(&["-j", "link", "show", "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(v[0]["operstate"].as_str().unwrap_or("?").to_string())
    }

    /// The neighbour (ARP) entry for `ip`: (MAC, state), if any.
    pub fn neighbour(&self, ip: Ipv4Addr) -> io::Result<Option<(String, String)>> {
        let out = self.ip(&["-j", "neigh", "show", &ip.to_string(), "dev", "eth0"])?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        Ok(v.as_array().and_then(|a| a.first()).and_then(|e| {
            let mac = e["lladdr"].as_str()?.to_string();
            let state = e["state"]
                .as_array()
                .and_then(|s| s.first())
                .and_then(|s| s.as_str())
                .unwrap_or("");
            Some((mac, state.to_string()))
        }))
    }

    /// Runs `f` on a fresh thread that entered this namespace (setns(2)), returning its
    /// result: sockets it opens live in the namespace.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let ns = self.ns.clone();
        std::thread::spawn(move || {
            enter(&ns)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other(format!("thread in namespace {} panicked", self.ns)))?
    }

    /// Spawns a lab thread in this namespace running `f(stop)`; `stop` turns true at teardown
    /// and `f` must return soon after (poll it at least every 100 ms).
    pub fn spawn_thread(&self, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> io::Result<()> {
        let ns = self.ns.clone();
        let stop = self.shared.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let entered = enter(&ns);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if ok {
                f(stop);
            }
        });
        let entered = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other(format!("thread entering {} did not report", self.ns)))?;
        lock(&self.shared.threads).push(handle);
        entered
    }

    /// Starts a TCP server on 0.0.0.0:`port` in this namespace, calling
    /// `handle(stream, peer, lab_stop)` on the accepting thread for every connection (a
    /// long-lived handler spawns its own thread and ends when `lab_stop` turns true).
    /// Returns once the port is bound; setting the returned flag stops the listener
    /// (within a few ms), and lab teardown stops it too.
    pub fn serve_tcp(
        &self,
        port: u16,
        handle: impl Fn(TcpStream, SocketAddr, &Arc<AtomicBool>) + Send + 'static,
    ) -> io::Result<Arc<AtomicBool>> {
        self.serve_tcp_on(Ipv4Addr::UNSPECIFIED, port, handle)
    }

    /// [`Host::serve_tcp`] bound to `addr`. The listening socket closes within a few
    /// milliseconds of the returned flag being set.
    pub fn serve_tcp_on(
        &self,
        addr: Ipv4Addr,
        port: u16,
        handle: impl Fn(TcpStream, SocketAddr, &Arc<AtomicBool>) + Send + 'static,
    ) -> io::Result<Arc<AtomicBool>> {
        let own = Arc::new(AtomicBool::new(false));
        let own2 = own.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.spawn_thread(move |stop| {
            let listener = match TcpListener::bind(SocketAddrV4::new(addr, port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop.load(Ordering::Relaxed) && !own2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        handle(s, peer, &stop);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other(format!("TCP server in {} did not start", self.ns)))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("binding {addr}:{port} in {}: {e}", self.ns),
                )
            })?;
        Ok(own)
    }

    /// A server on `port` answering every connection with the host name, then closing.
    pub fn serve_name(&self, port: u16) -> io::Result<()> {
        let name = self.name.clone();
        self.serve_tcp(port, move |mut s, _, _| {
            use std::io::Write;
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(name.as_bytes());
        })
        .map(|_| ())
    }

    /// [`Host::serve_peer`] bound to `addr` only (the seed's broken setup: a proxy listening
    /// on one address, which the VIP does not reach).
    pub fn serve_peer_on(&self, addr: Ipv4Addr, port: u16) -> io::Result<Arc<AtomicBool>> {
        let name = self.name.clone();
        self.serve_tcp_on(addr, port, move |mut s, peer, _| {
            use std::io::Write;
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
        })
    }

    /// A server on `port` answering every connection with `"<host name> <peer address>\n"`,
    /// then closing; the returned flag stops it.
    pub fn serve_peer(&self, port: u16) -> io::Result<Arc<AtomicBool>> {
        let name = self.name.clone();
        self.serve_tcp(port, move |mut s, peer, _| {
            use std::io::Write;
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
        })
    }

    /// A long-lived echo server on `port`: greets each connection with the host name and a
    /// newline, then echoes until the peer closes or the lab stops (its own thread each).
    pub fn serve_echo(&self, port: u16) -> io::Result<()> {
        self.serve_echo_stoppable(port).map(|_| ())
    }

    /// [`Host::serve_echo`] whose listener stops when the returned flag is set (the
    /// connections already open go on).
    pub fn serve_echo_stoppable(&self, port: u16) -> io::Result<Arc<AtomicBool>> {
        let name = self.name.clone();
        self.serve_tcp(port, move |mut s, _, stop| {
            let name = name.clone();
            let stop = stop.clone();
            // The accepted socket lives in the namespace already; any thread may use it.
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.write_all(format!("{name}\n").as_bytes());
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
            });
        })
    }

    pub(crate) fn lab_dir(&self) -> &Path {
        &self.shared.dir
    }
}

/// Moves the calling thread into namespace `ns`.
fn enter(ns: &str) -> io::Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let fd = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("setns into {ns}: {e}")))
}

#[allow(unsafe_code)]
fn set_pdeathsig(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and takes no locks. PDEATHSIG survives the
    // exec of `ip netns exec` and of the daemon it execs, so a lab killed hard (test
    // timeout) does not leave daemons behind.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
}
