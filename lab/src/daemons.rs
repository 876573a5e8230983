//! VRRP daemons in lab namespaces: `proxyha run` and keepalived 2.2.7, started, crashed,
//! stopped and queried the same way so tests and benchmarks compare like with like.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Host, Lab, extra_pids, run};

/// Which implementation plays a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Proxyha,
    Keepalived,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Proxyha => "proxyha",
            Kind::Keepalived => "keepalived",
        }
    }
}

/// VRRP settings of one node (both implementations).
#[derive(Debug, Clone)]
pub struct VrrpOpts {
    pub priority: u8,
    pub advert_interval_ms: u32,
    pub preempt: bool,
    pub vrrp_version: u8,
    pub vrid: u8,
    /// `ha.port_redirects` of proxyha; empty (the default) = VRRP only, no load sharing.
    pub redirects: Vec<u16>,
    /// `ha.mode` of proxyha ("direct" or "nat").
    pub mode: String,
    /// `node.capacity` of proxyha.
    pub capacity: Option<f64>,
    /// `ha.auth_key` of proxyha.
    pub auth_key: Option<String>,
    /// The VIP; `None`: the lab's ([`Lab::vip`]).
    pub vip: Option<Ipv4Addr>,
    /// `ha.lb_id` of proxyha.
    pub lb_id: u8,
    /// `ha.drain` of proxyha ("port" or "node"); `None`: the default.
    pub drain: Option<String>,
    /// Unicast VRRP: every node's address (proxyha `ha.unicast_peers`; keepalived
    /// `unicast_peer`, its own address left out, and `unicast_src_ip`). Empty: multicast.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// `ha.vrrp_sources` of proxyha.
    pub vrrp_sources: Vec<Ipv4Addr>,
    /// The body of proxyha's `[ha.track]` table (TOML lines), if any.
    pub track: Option<String>,
    /// Real-time VRRP: proxyha `ha.rt_priority` + `ha.lock_memory`; keepalived
    /// `vrrp_rt_priority` + `vrrp_no_swap`.
    pub rt_priority: Option<u8>,
}

impl VrrpOpts {
    pub fn new(priority: u8, advert_interval_ms: u32) -> VrrpOpts {
        VrrpOpts {
            priority,
            advert_interval_ms,
            preempt: true,
            vrrp_version: 3,
            vrid: 51,
            redirects: Vec::new(),
            mode: "direct".into(),
            capacity: None,
            auth_key: None,
            vip: None,
            lb_id: 51,
            drain: None,
            unicast_peers: Vec::new(),
            vrrp_sources: Vec::new(),
            track: None,
            rt_priority: None,
        }
    }

    /// Real-time scheduling of the VRRP loop at `priority`, memory locked (both daemons).
    pub fn realtime(mut self, priority: u8) -> VrrpOpts {
        self.rt_priority = Some(priority);
        self
    }

    /// proxyha's `[ha.track]` with these TOML lines.
    pub fn track(mut self, lines: &str) -> VrrpOpts {
        self.track = Some(lines.to_string());
        self
    }

    /// Unicast VRRP among `peers` (every node's address, this one's included).
    pub fn unicast(mut self, peers: &[Ipv4Addr]) -> VrrpOpts {
        self.unicast_peers = peers.to_vec();
        self
    }

    /// Multicast, adverts accepted only from `sources`.
    pub fn sources(mut self, sources: &[Ipv4Addr]) -> VrrpOpts {
        self.vrrp_sources = sources.to_vec();
        self
    }

    /// Another group on the same LAN: its own VIP, VRID and lb_id.
    pub fn group(mut self, vip: Ipv4Addr, vrid: u8, lb_id: u8) -> VrrpOpts {
        self.vip = Some(vip);
        self.vrid = vrid;
        self.lb_id = lb_id;
        self
    }

    pub fn drain(mut self, drain: &str) -> VrrpOpts {
        self.drain = Some(drain.to_string());
        self
    }

    pub fn auth_key(mut self, key: &str) -> VrrpOpts {
        self.auth_key = Some(key.to_string());
        self
    }

    /// Load sharing on these ports (proxyha only).
    pub fn redirects(mut self, ports: &[u16]) -> VrrpOpts {
        self.redirects = ports.to_vec();
        self
    }

    pub fn mode(mut self, mode: &str) -> VrrpOpts {
        self.mode = mode.to_string();
        self
    }

    pub fn capacity(mut self, capacity: f64) -> VrrpOpts {
        self.capacity = Some(capacity);
        self
    }

    pub fn preempt(mut self, preempt: bool) -> VrrpOpts {
        self.preempt = preempt;
        self
    }

    pub fn version(mut self, v: u8) -> VrrpOpts {
        self.vrrp_version = v;
        self
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.advert_interval_ms))
    }

    /// RFC 9568 §6.1: Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256.
    pub fn skew_time(&self) -> Duration {
        self.interval() * (256 - u32::from(self.priority)) / 256
    }

    /// RFC 9568 §6.1: Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        self.interval() * 3 + self.skew_time()
    }
}

/// A running daemon.
#[derive(Clone)]
pub struct Daemon {
    pub kind: Kind,
    pub host: Host,
    pub pid: u32,
    pub opts: VrrpOpts,
    pub conf: PathBuf,
    /// `[log] target` of proxyha; keepalived's console output for keepalived.
    pub log: PathBuf,
    /// proxyha's control socket.
    pub control: Option<PathBuf>,
    pidfiles: Vec<PathBuf>,
}

/// `proxyha status --json`, with accessors for the fields the tests read.
#[derive(Debug, Clone)]
pub struct Status(pub serde_json::Value);

impl Status {
    pub fn state(&self) -> &str {
        self.0["state"].as_str().unwrap_or("?")
    }

    pub fn master(&self) -> Option<Ipv4Addr> {
        self.0["master"].as_str().and_then(|s| s.parse().ok())
    }

    /// The director load sharing follows (null when unknown or off).
    pub fn director(&self) -> Option<Ipv4Addr> {
        self.0["director"].as_str().and_then(|s| s.parse().ok())
    }

    pub fn vip_owner(&self) -> bool {
        self.0["vip_owner"].as_bool().unwrap_or(false)
    }

    /// A named counter; 0 when absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.0["counters"][name].as_u64().unwrap_or(0)
    }
}

impl Lab {
    /// Starts `kind` on `host` with `opts` (config written to the lab directory). A restart
    /// reuses the same files.
    pub fn start(&self, kind: Kind, host: &Host, opts: &VrrpOpts) -> io::Result<Daemon> {
        match kind {
            Kind::Proxyha => self.start_proxyha(host, opts),
            Kind::Keepalived => self.start_keepalived(host, opts),
        }
    }

    pub fn start_proxyha(&self, host: &Host, opts: &VrrpOpts) -> io::Result<Daemon> {
        let bin = self.proxyha_bin()?.to_path_buf();
        let dir = host.lab_dir();
        let (conf, log, control) = self.write_proxyha_config(host, opts)?;
        let out = dir.join(format!("{}.stderr.log", host.name));
        let conf_s = conf.to_string_lossy().into_owned();
        let pid = host.spawn_net_only(&bin, &["run", "--config", &conf_s], &out)?;
        Ok(Daemon {
            kind: Kind::Proxyha,
            host: host.clone(),
            pid,
            opts: opts.clone(),
            conf,
            log,
            control: Some(control),
            pidfiles: Vec::new(),
        })
    }

    /// Writes `host`'s proxyha config for `opts` (also to change it before a reload):
    /// (config, log, control socket) paths.
    pub fn write_proxyha_config(
        &self,
        host: &Host,
        opts: &VrrpOpts,
    ) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
        let dir = host.lab_dir();
        let conf = dir.join(format!("{}.toml", host.name));
        let log = dir.join(format!("{}.log", host.name));
        let control = dir.join(format!("{}.sock", host.name));
        // Per node, inside the lab: never the machine's /var/lib/proxyha.
        let state_dir = dir.join(format!("{}.state", host.name));
        let text = format!(
            r#"[node]
name = "{name}"
management_ip = "{addr}"
{capacity}
[ha]
interface = "eth0"
virtual_ip = "{vip}"
virtual_router_id = {vrid}
lb_id = {lb_id}
priority = {prio}
advert_interval_ms = {int}
preempt = {preempt}
vrrp_version = {ver}
port_redirects = [{redirects}]
mode = "{mode}"
{auth_key}{drain}{peers}{sources}{rt}{track}
[control]
socket = "{control}"
state_dir = "{state_dir}"

[log]
target = "file:{log}"
level = "debug"
"#,
            name = host.name,
            addr = host.addr,
            vip = opts.vip.unwrap_or_else(|| self.vip()),
            vrid = opts.vrid,
            lb_id = opts.lb_id,
            drain = opts
                .drain
                .as_ref()
                .map_or(String::new(), |d| format!("drain = \"{d}\"\n")),
            prio = opts.priority,
            int = opts.advert_interval_ms,
            preempt = opts.preempt,
            ver = opts.vrrp_version,
            capacity = opts
                .capacity
                .map_or(String::new(), |c| format!("capacity = {c:?}\n")),
            redirects = opts
                .redirects
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            mode = opts.mode,
            auth_key = opts
                .auth_key
                .as_ref()
                .map_or(String::new(), |k| format!("auth_key = \"{k}\"\n")),
            control = control.display(),
            state_dir = state_dir.display(),
            log = log.display(),
            peers = toml_list("unicast_peers", &opts.unicast_peers),
            sources = toml_list("vrrp_sources", &opts.vrrp_sources),
            rt = opts.rt_priority.map_or(String::new(), |p| {
                format!("rt_priority = {p}\nlock_memory = true\n")
            }),
            track = opts
                .track
                .as_ref()
                .map_or(String::new(), |t| format!("[ha.track]\n{t}\n")),
        );
        write(&conf, &text)?;
        Ok((conf, log, control))
    }

    pub fn start_keepalived(&self, host: &Host, opts: &VrrpOpts) -> io::Result<Daemon> {
        let dir = host.lab_dir();
        let n = &host.name;
        let conf = dir.join(format!("{n}.keepalived.conf"));
        let log = dir.join(format!("{n}.keepalived.log"));
        let pids: Vec<PathBuf> = ["pid", "vrrp.pid", "check.pid", "bfd.pid"]
            .iter()
            .map(|s| dir.join(format!("{n}.{s}")))
            .collect();
        for p in &pids {
            let _ = std::fs::remove_file(p);
        }
        let interval = if opts.vrrp_version == 3 {
            format!("{}", f64::from(opts.advert_interval_ms) / 1000.0)
        } else {
            format!("{}", opts.advert_interval_ms.div_ceil(1000).max(1))
        };
        let text = format!(
            "{global}\
             vrrp_instance VI_{vrid} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    \
             priority {prio}\n    advert_int {interval}\n{nopreempt}{unicast}    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n}}\n",
            unicast = if opts.unicast_peers.is_empty() {
                String::new()
            } else {
                let peers: String = opts
                    .unicast_peers
                    .iter()
                    .filter(|p| **p != host.addr)
                    .map(|p| format!("        {p}\n"))
                    .collect();
                format!(
                    "    unicast_src_ip {}\n    unicast_peer {{\n{peers}    }}\n",
                    host.addr
                )
            },
            // keepalived speaks v2 unless told otherwise: leave v2 at its default.
            global = {
                let mut g = String::new();
                if opts.vrrp_version == 3 {
                    g.push_str("    vrrp_version 3\n");
                }
                if let Some(p) = opts.rt_priority {
                    g.push_str(&format!("    vrrp_rt_priority {p}\n    vrrp_no_swap\n"));
                }
                if g.is_empty() {
                    g
                } else {
                    format!("global_defs {{\n{g}}}\n")
                }
            },
            vrid = opts.vrid,
            prio = opts.priority,
            nopreempt = if opts.preempt { "" } else { "    nopreempt\n" },
            vip = opts.vip.unwrap_or_else(|| self.vip()),
        );
        write(&conf, &text)?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let (conf_s, p0, p1, p2, p3) =
            (s(&conf), s(&pids[0]), s(&pids[1]), s(&pids[2]), s(&pids[3]));
        let args = [
            "-n", "-l", "-D", "-G", "-f", &conf_s, "-p", &p0, "-r", &p1, "-c", &p2, "-b", &p3,
        ];
        let pid = host.spawn_tracked(
            Path::new("keepalived"),
            &args,
            &log,
            pids[1..].to_vec(),
            conf_s.clone(),
        )?;
        Ok(Daemon {
            kind: Kind::Keepalived,
            host: host.clone(),
            pid,
            opts: opts.clone(),
            conf,
            log,
            control: None,
            pidfiles: pids[1..].to_vec(),
        })
    }

    /// A dead box: the daemon is SIGKILLed (keepalived: parent stopped first so it cannot
    /// respawn, then its children, then itself) and `eth0` goes down, so the stale VIP it
    /// leaves answers nothing (BRIEF §6).
    pub fn crash(&self, d: &Daemon) -> io::Result<()> {
        match d.kind {
            Kind::Proxyha => self.signal(d.pid, Signal::SIGKILL)?,
            Kind::Keepalived => {
                self.signal(d.pid, Signal::SIGSTOP)?;
                for pid in extra_pids(&d.pidfiles, &d.conf.to_string_lossy()) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                self.signal(d.pid, Signal::SIGKILL)?;
            }
        }
        d.host.link(false)?;
        if self.wait_exit(d.pid, Duration::from_secs(5)).is_none() {
            return Err(io::Error::other(format!(
                "{} pid {} survived SIGKILL",
                d.kind.as_str(),
                d.pid
            )));
        }
        Ok(())
    }

    /// Graceful stop (SIGTERM): the daemon sends priority 0 and removes the VIP.
    pub fn terminate(&self, d: &Daemon) -> io::Result<()> {
        self.signal(d.pid, Signal::SIGTERM)
    }

    /// SIGTERM and wait for exit (SIGKILL after `limit`).
    pub fn stop(&self, d: &Daemon, limit: Duration) -> io::Result<()> {
        if !self.is_running(d.pid) {
            let _ = self.wait_exit(d.pid, Duration::ZERO);
            return Ok(());
        }
        self.terminate(d)?;
        if self.wait_exit(d.pid, limit).is_none() {
            self.signal(d.pid, Signal::SIGKILL)?;
            self.wait_exit(d.pid, Duration::from_secs(5));
            return Err(io::Error::other(format!(
                "{} pid {} did not exit within {limit:?} of SIGTERM",
                d.kind.as_str(),
                d.pid
            )));
        }
        Ok(())
    }

    /// `proxyha status --json --control <socket>` of a proxyha node.
    pub fn status(&self, d: &Daemon) -> io::Result<Status> {
        let control = d.control.as_ref().ok_or_else(|| {
            io::Error::other(format!("{} has no control socket", d.kind.as_str()))
        })?;
        let bin = self.proxyha_bin()?.to_string_lossy().into_owned();
        let out = run(
            &bin,
            &["status", "--json", "--control", &control.to_string_lossy()],
        )?;
        serde_json::from_str(&out)
            .map(Status)
            .map_err(|e| io::Error::other(format!("parsing status of {}: {e}: {out}", d.host.name)))
    }

    /// `proxyha status` (the table) of a proxyha node.
    pub fn status_table(&self, d: &Daemon) -> io::Result<String> {
        self.proxyha_ctl_ok(d, &["status"])
    }

    /// `proxyha status --client IP` of a lab proxyha, as an administrator reads it.
    pub fn client_table(&self, d: &Daemon, client: Ipv4Addr) -> io::Result<String> {
        self.proxyha_ctl_ok(d, &["status", "--client", &client.to_string()])
    }
}

impl Daemon {
    /// The daemon's log so far ("" if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `key = ["a", "b"]` and a newline, or nothing for an empty list.
fn toml_list(key: &str, addrs: &[Ipv4Addr]) -> String {
    if addrs.is_empty() {
        return String::new();
    }
    let items: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("{key} = [{}]\n", items.join(", "))
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rfc_9568_timers() {
        let o = VrrpOpts::new(89, 1000);
        // Skew_Time = (256 - 89) * 1 s / 256 = 652.34375 ms.
        assert_eq!(o.skew_time(), Duration::from_nanos(652_343_750));
        assert_eq!(
            o.master_down_interval(),
            Duration::from_nanos(3_652_343_750)
        );
        assert_eq!(
            VrrpOpts::new(99, 100).master_down_interval(),
            Duration::from_nanos(361_328_125)
        );
    }
}
