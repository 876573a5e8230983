//! What `proxyha status` shows (BRIEF §3), and the control protocol that carries it.
//!
//! The protocol is one JSON object per line over the Unix control socket: the client sends
//! `{"cmd":"status"}`, the daemon answers `{"status":{...}}` or `{"error":"..."}` and closes.
//! Line-delimited JSON keeps it debuggable with `socat - UNIX-CONNECT:/run/proxyha/control.sock`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::config::io_reason;

/// A node's view of its VRRP instance; `proxyha status --json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `node.name`.
    pub name: String,
    /// Software version of the daemon.
    pub version: String,
    /// The HA interface.
    pub interface: String,
    /// `node.management_ip`, if configured.
    pub management_ip: Option<Ipv4Addr>,
    /// "init" | "backup" | "master" | "fault" | "scanning".
    pub state: String,
    pub priority: u8,
    pub vrid: u8,
    pub lb_id: u8,
    pub vip: Ipv4Addr,
    /// The VIP is configured on this node's interface.
    pub vip_owner: bool,
    /// The current master (this node's address when master), null if unknown.
    pub master: Option<Ipv4Addr>,
    pub master_priority: Option<u8>,
    /// The interval in use: our own as master, the master's (adopted) as backup.
    pub advert_interval_ms: u64,
    /// 2 or 3.
    pub vrrp_version: u8,
    pub preempt: bool,
    pub link_up: bool,
    /// Seconds spent in the current state.
    pub state_since_s: f64,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Every named counter, zero or not (rx_adverts, tx_adverts, discard_*, ...).
    pub counters: BTreeMap<String, u64>,
    /// The current director (this node's address on the director), null while unknown or
    /// when load sharing is off (no `ha.port_redirects`).
    #[serde(default)]
    pub director: Option<Ipv4Addr>,
    /// On the director every member; on a scanning node the director and itself.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// When the HA interface is a bond: its mode, active slave and each slave's link.
    #[serde(default)]
    pub bond: Option<Box<crate::network::BondStatus>>,
    /// Maintenance (`proxyha drain`): no new clients come to this node; pinned ones finish.
    #[serde(default)]
    pub draining: bool,
    /// During a trial boot of a new version: what keeps it from being marked good (empty:
    /// healthy); `None` when this boot is no trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_missing: Option<Vec<String>>,
    /// Peers whose group settings differ from ours: a membership report with another
    /// config digest, or a VRRP advert for our VRID with another VIP list.
    #[serde(default)]
    pub config_mismatches: Vec<Mismatch>,
    /// TCP ports listening on this node that are not redirected: reached on the node's own
    /// address only, never through the VIP's load sharing (the seed's "test one node on
    /// port 9091").
    #[serde(default)]
    pub direct_only_ports: Vec<u16>,
    /// Sticky pins: on the director those in its kernel map (as last read), on a standby
    /// those it holds from the director; null when load sharing is off.
    #[serde(default)]
    pub pins: Option<u64>,
    /// `[ha.track]`: every tracked check, fine or not (empty: nothing tracked).
    #[serde(default)]
    pub track: Vec<crate::vrrp::track::TrackItem>,
    /// The priority the node runs at after tracking (equal to `priority` when every check is
    /// fine).
    #[serde(default)]
    pub effective_priority: Option<u8>,
    /// Load sharing's membership protocol: "authenticated" (HMAC-SHA256 with replay
    /// protection) or "unauthenticated" (any host on the segment can join the pool); null
    /// when load sharing is off.
    #[serde(default)]
    pub membership: Option<String>,
    /// Where this node's adverts go: the unicast peers (this node excluded); empty:
    /// multicast to 224.0.0.18.
    #[serde(default)]
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Who may speak VRRP (`discard_source` for others); empty: any host on the segment,
    /// which can then take the VIP with a higher priority.
    #[serde(default)]
    pub vrrp_sources: Vec<Ipv4Addr>,
    /// Standby: the age in seconds of its newest complete copy of the director's pins (null
    /// before the first, and on the director).
    #[serde(default)]
    pub pins_age_s: Option<f64>,
}

/// A peer that disagrees with our group settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    pub peer: Ipv4Addr,
    /// Its node name, when known.
    pub name: String,
    /// "membership" (config digest of a report) or "vrrp" (VIP list of an advert).
    pub source: String,
    pub ours: String,
    pub theirs: String,
}

/// `proxyha status --client IP`: where that client goes, per redirected port, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientStatus {
    pub client: Ipv4Addr,
    /// The director whose view this is (this node's address on the director).
    pub director: Option<Ipv4Addr>,
    pub ports: Vec<ClientPort>,
    /// How current the answer is ("the director's live pins" or "the last pins the
    /// director announced, N s ago").
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientPort {
    pub port: u16,
    pub node: Option<Ipv4Addr>,
    pub name: String,
    /// "pinned" | "new" (would follow the bucket table) | "none".
    pub how: String,
    /// The why, in words.
    pub detail: String,
}

/// Renders `status --client` for a terminal.
pub fn render_client(c: &ClientStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "client {} ({})", c.client, c.source);
    for p in &c.ports {
        let node = match p.node {
            Some(n) if !p.name.is_empty() => format!("{} {n}", p.name),
            Some(n) => n.to_string(),
            None => "no node".into(),
        };
        let _ = writeln!(out, "  port {:<5}  {node}: {}", p.port, p.detail);
    }
    out
}

/// One member of the load-sharing group (BRIEF §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: Ipv4Addr,
    /// "director" | "scanning".
    pub role: String,
    /// Reporting, and every redirected port listening.
    pub healthy: bool,
    pub ports: Vec<PortStatus>,
    pub load: LoadStatus,
    /// Effective weight (capacity × load feedback); 0 when not eligible for new clients.
    pub weight: f64,
    /// Fraction of the bucket table (new clients) this node gets, 0..=1.
    pub share: f64,
    /// Live sticky pins to this node (director only; null where unknown).
    #[serde(default)]
    pub pinned: Option<u64>,
    /// Why its share is what it is, in words ("weight 2.00 = capacity 2 × load feedback
    /// 1.00", "draining", "port 2121 down: …", "not reporting", "config mismatch", …).
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    /// The redirected (VIP-side) port.
    pub port: u16,
    /// The listener port the monitor checks (`to` of the redirect; = `port` without one).
    #[serde(default)]
    pub to: u16,
    pub listening: bool,
    /// This node's fraction of the port's bucket table (new clients), 0..=1.
    #[serde(default)]
    pub share: f64,
    /// Why the port is out of this node's pool; empty when it is in.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadStatus {
    /// Smoothed CPU utilisation 0..=1.
    pub cpu: f64,
    /// Established connections on the redirected ports.
    pub conns: u64,
    pub capacity: f64,
}

/// The state as an administrator reads it: MASTER (director), BACKUP, FAULT, ...
fn state_label(state: &str) -> String {
    match state {
        "master" => "MASTER (director)".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

/// "12.3s", "3m 12s", "1h 02m", "2d 03h".
fn human_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".to_string();
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        0..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The table `proxyha status` prints: one "label  value" row per item, labels aligned.
pub fn render_table(status: &Status) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let address = match status.management_ip {
        Some(ip) => format!("{ip} on {}", status.interface),
        None => format!("on {}", status.interface),
    };
    rows.push(("node", format!("{} ({address})", status.name)));
    rows.push((
        "state",
        format!(
            "{} for {}",
            state_label(&status.state),
            human_duration(status.state_since_s)
        ),
    ));
    let owned = if status.vip_owner {
        "owned here"
    } else {
        "not here"
    };
    rows.push(("vip", format!("{} ({owned})", status.vip)));
    let is_self = status.state == "master"
        || (status.master.is_some() && status.master == status.management_ip);
    let master = match (status.master, status.master_priority) {
        (None, _) => "unknown".to_string(),
        (Some(ip), priority) => {
            let mut notes = Vec::new();
            if is_self {
                notes.push("this node".to_string());
            }
            if let Some(priority) = priority {
                notes.push(format!("priority {priority}"));
            }
            if notes.is_empty() {
                ip.to_string()
            } else {
                format!("{ip} ({})", notes.join(", "))
            }
        }
    };
    rows.push(("master", master));
    let priority = match (status.priority, status.effective_priority) {
        (0, _) => "0 (scanning only, never director)".to_string(),
        (p, Some(e)) if e != p => format!("{e} (configured {p}, lowered by [ha.track])"),
        (p, _) => p.to_string(),
    };
    rows.push(("priority", priority));
    let track: Vec<String> = status
        .track
        .iter()
        .map(|t| {
            if t.ok {
                format!("{}: ok", t.check)
            } else {
                format!("{}: FAILING, {} ({})", t.check, t.detail, t.effect)
            }
        })
        .collect();
    if !track.is_empty() {
        push_list(&mut rows, "track", track);
    }
    rows.push((
        "maintenance",
        if status.draining {
            "DRAINING (no new clients; pinned clients finish; proxyha undrain ends it)"
        } else {
            "no"
        }
        .to_string(),
    ));
    rows.push(("vrid", status.vrid.to_string()));
    rows.push(("lb_id", status.lb_id.to_string()));
    rows.push((
        "advert interval",
        format!("{} ms", status.advert_interval_ms),
    ));
    rows.push(("vrrp version", status.vrrp_version.to_string()));
    let list = |a: &[Ipv4Addr]| {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push((
        "vrrp peers",
        if status.unicast_peers.is_empty() {
            "multicast 224.0.0.18".to_string()
        } else {
            format!("unicast to {}", list(&status.unicast_peers))
        },
    ));
    rows.push((
        "vrrp sources",
        if status.vrrp_sources.is_empty() {
            "ANY host on the segment can take the VIP (set ha.unicast_peers or ha.vrrp_sources)"
                .to_string()
        } else {
            format!("only {}", list(&status.vrrp_sources))
        },
    ));
    rows.push(("preempt", yes_no(status.preempt).to_string()));
    rows.push((
        "link",
        if status.link_up { "up" } else { "DOWN" }.to_string(),
    ));
    if let Some(bond) = &status.bond {
        rows.push(("bond", crate::network::bond_summary(bond)));
    }
    rows.push(("uptime", human_duration(status.uptime_s)));
    let count = |name: &str| status.counters.get(name).copied().unwrap_or(0);
    rows.push((
        "adverts",
        format!("rx {}, tx {}", count("rx_adverts"), count("tx_adverts")),
    ));
    let nonzero = |discard: bool| -> Vec<String> {
        status
            .counters
            .iter()
            .filter(|(name, n)| {
                **n > 0
                    && name.starts_with("discard_") == discard
                    && !matches!(name.as_str(), "rx_adverts" | "tx_adverts")
            })
            .map(|(name, n)| format!("{name} {n}"))
            .collect()
    };
    push_list(&mut rows, "discards", nonzero(true));
    let events = nonzero(false);
    if !events.is_empty() {
        push_list(&mut rows, "events", events);
    }
    rows.push(("version", status.version.clone()));
    if let Some(d) = status.director {
        rows.push(("director", d.to_string()));
    }
    if let Some(m) = &status.membership {
        let text = if m == "unauthenticated" {
            "unauthenticated: any host on the segment can join the pool and get clients \
             (set ha.auth_key_file; proxyha setup writes one)"
                .to_string()
        } else {
            format!("{m} (HMAC-SHA256, replays refused)")
        };
        rows.push(("membership", text));
    }
    if let Some(p) = status.pins {
        let held = match (status.director == status.management_ip, status.pins_age_s) {
            (true, _) => format!("{p} (live, in this director's kernel map)"),
            (false, Some(age)) => {
                format!("{p} held from the director (complete copy {age:.0} s old)")
            }
            (false, None) => format!("{p} held from the director (no complete copy yet)"),
        };
        rows.push(("pins", held));
    }
    for (i, n) in status.nodes.iter().enumerate() {
        let ports: Vec<String> = n
            .ports
            .iter()
            .map(|p| {
                if !p.listening {
                    format!("{} DOWN", p.port)
                } else if n.pinned.is_some() {
                    format!("{} {:.0} %", p.port, p.share * 100.0)
                } else {
                    p.port.to_string()
                }
            })
            .collect();
        let pinned = n.pinned.map_or(String::new(), |p| format!(", {p} pinned"));
        rows.push((
            if i == 0 { "nodes" } else { "" },
            format!(
                "{} {} {}{}: cpu {:.0} %, {} conns, capacity {}, weight {:.2}, share {:.1} %{pinned}, ports [{}]",
                n.name,
                n.address,
                n.role,
                if n.healthy { "" } else { " (UNHEALTHY)" },
                n.load.cpu * 100.0,
                n.load.conns,
                n.load.capacity,
                n.weight,
                n.share * 100.0,
                ports.join(", ")
            ),
        ));
        if !n.reason.is_empty() {
            rows.push(("", format!("  why: {}", n.reason)));
        }
    }
    let mismatches: Vec<String> = status
        .config_mismatches
        .iter()
        .map(|m| {
            format!(
                "{} {} ({}): theirs `{}`, ours `{}`",
                m.name, m.peer, m.source, m.theirs, m.ours
            )
        })
        .collect();
    if !mismatches.is_empty() {
        push_list(&mut rows, "MISMATCH", mismatches);
    }
    if !status.direct_only_ports.is_empty() {
        let ports: Vec<String> = status
            .direct_only_ports
            .iter()
            .map(u16::to_string)
            .collect();
        rows.push((
            "direct only",
            format!(
                "{} (not redirected; reach them on this node's own address)",
                ports.join(", ")
            ),
        ));
    }

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
    out
}

/// One item per row under `label`, "none" if empty.
fn push_list(rows: &mut Vec<(&'static str, String)>, label: &'static str, items: Vec<String>) {
    if items.is_empty() {
        rows.push((label, "none".to_string()));
    }
    for (i, item) in items.into_iter().enumerate() {
        rows.push((if i == 0 { label } else { "" }, item));
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

// ---------------------------------------------------------------------------------------
// Control protocol

/// A request line: `{"cmd":"status"}`, `{"cmd":"drain"}`, `{"cmd":"undrain"}`,
/// `{"cmd":"reload"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Where client `ip` goes and why (`proxyha status --client`).
    Client {
        ip: Ipv4Addr,
    },
    /// Maintenance on: no new clients, pinned ones finish; kept across restarts.
    Drain,
    /// Maintenance off.
    Undrain,
    /// Re-read the configuration file the supervisor was started with.
    Reload,
}

/// A response line: `{"status":{...}}`, `{"ok":"..."}` (a command's confirmation) or
/// `{"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Boxed: the status document is far larger than the other answers.
    Status(Box<Status>),
    Client(ClientStatus),
    Ok(String),
    Error(String),
}

/// How long `request` waits for connect, send and answer together.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The longest line either side accepts.
pub const MAX_LINE: usize = 1 << 20;

/// Why a control request failed; each names the socket and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connecting to {}: {}; {}", socket.display(), io_reason(source), connect_hint(source))]
    Connect { socket: PathBuf, source: io::Error },
    #[error("{op} {}: {}; check the log of proxyha run", socket.display(), io_reason(source))]
    Io {
        socket: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "{} closed the connection without answering; check the log of proxyha run",
        socket.display()
    )]
    Closed { socket: PathBuf },
    #[error(
        "no answer from {} within {} ms; proxyha run may be stuck, check its log",
        socket.display(), timeout.as_millis()
    )]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error(
        "unreadable answer from {}: {source}; are proxyha and proxyha run the same version?",
        socket.display()
    )]
    Decode {
        socket: PathBuf,
        source: serde_json::Error,
    },
}

fn connect_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            "is proxyha run started? (see --control)"
        }
        io::ErrorKind::PermissionDenied => "run as root",
        _ => "check the path given with --control",
    }
}

/// `value` as one JSON line, newline included.
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|e| {
        // Only maps with non-string keys fail to encode; none of our types have them. Still,
        // answer with something the peer can parse rather than panic in the daemon.
        let fallback = serde_json::json!({ "error": format!("encoding the answer: {e}") });
        fallback.to_string().into_bytes()
    });
    line.push(b'\n');
    line
}

/// One JSON line (the trailing newline may be present or not).
pub fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(line)
}

/// Reads one line of at most [`MAX_LINE`] bytes; `Ok(None)` at end of stream. A last line
/// without its newline still counts.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let limit = MAX_LINE as u64 + 1;
    (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(Some(line))
}

/// Sends `req` to the daemon at `socket` and returns its answer, within [`TIMEOUT`].
pub async fn request(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    request_within(socket, req, TIMEOUT).await
}

async fn request_within(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    match tokio::time::timeout(timeout, exchange(socket, req)).await {
        Ok(result) => result,
        Err(_) => Err(ControlError::Timeout {
            socket: socket.to_path_buf(),
            timeout,
        }),
    }
}

async fn exchange(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    let io_error = |op: &'static str| {
        move |source| ControlError::Io {
            socket: socket.to_path_buf(),
            op,
            source,
        }
    };
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ControlError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    stream
        .write_all(&encode_line(req))
        .await
        .map_err(io_error("sending to"))?;
    let mut reader = BufReader::new(stream);
    let closed = || ControlError::Closed {
        socket: socket.to_path_buf(),
    };
    let line = match read_line(&mut reader).await {
        Ok(Some(line)) => line,
        Ok(None) => return Err(closed()),
        // The daemon hung up before reading all we sent: same meaning as a plain close.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(closed()),
        Err(e) => return Err(io_error("reading from")(e)),
    };
    decode_line(&line).map_err(|source| ControlError::Decode {
        socket: socket.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    fn sample() -> Status {
        let counters = [
            ("rx_adverts", 1234),
            ("tx_adverts", 0),
            ("became_master", 0),
            ("discard_ttl", 3),
            ("discard_checksum", 1),
            ("discard_vrid", 0),
            ("vip_mismatch", 0),
        ];
        Status {
            name: "jupiter".into(),
            version: "0.1.0".into(),
            interface: "eth0".into(),
            management_ip: Some(Ipv4Addr::new(10, 10, 74, 70)),
            state: "backup".into(),
            priority: 89,
            vrid: 51,
            lb_id: 52,
            vip: Ipv4Addr::new(10, 10, 74, 74),
            vip_owner: false,
            master: Some(Ipv4Addr::new(10, 10, 74, 71)),
            master_priority: Some(99),
            advert_interval_ms: 1000,
            vrrp_version: 3,
            preempt: true,
            link_up: true,
            state_since_s: 192.4,
            uptime_s: 3725.0,
            counters: counters
                .iter()
                .map(|(name, n)| (name.to_string(), *n))
                .collect(),
            director: Some(Ipv4Addr::new(10, 10, 74, 71)),
            bond: None,
            nodes: vec![NodeStatus {
                name: "jupiter".into(),
                address: Ipv4Addr::new(10, 10, 74, 71),
                role: "director".into(),
                healthy: true,
                ports: vec![
                    PortStatus {
                        port: 9090,
                        to: 9090,
                        listening: true,
                        share: 0.5,
                        reason: String::new(),
                    },
                    PortStatus {
                        port: 2121,
                        to: 2121,
                        listening: false,
                        share: 0.0,
                        reason:
                            "listener 2121 down (nothing is listening): out of this port's pool"
                                .into(),
                    },
                ],
                load: LoadStatus {
                    cpu: 0.25,
                    conns: 12,
                    capacity: 2.0,
                },
                weight: 2.0,
                share: 0.5,
                pinned: Some(7),
                reason:
                    "weight 2.00 = capacity 2 × load feedback 1.00 (cpu 25 % vs group mean 25 %); \
                         port 2121 down (nothing is listening): out of that port's pool only"
                        .into(),
            }],
            config_mismatches: vec![Mismatch {
                peer: Ipv4Addr::new(10, 10, 74, 73),
                name: "saturn".into(),
                source: "membership".into(),
                ours: "vip 10.10.74.74 vrid 51 lb_id 51 ports [9090, 2121] mode direct".into(),
                theirs: "vip 10.10.74.74 vrid 51 lb_id 51 ports [9090, 2121] mode nat".into(),
            }],
            direct_only_ports: vec![22, 9091],
            draining: false,
            update_missing: None,
            pins: Some(1234),
            pins_age_s: Some(12.0),
            unicast_peers: vec![],
            vrrp_sources: vec![],
            membership: Some("unauthenticated".into()),
            track: vec![],
            effective_priority: None,
        }
    }

    fn scratch_socket(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("proxyha-status-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn json_round_trip() {
        let status = sample();
        let line = encode_line(&Response::Status(Box::new(status.clone())));
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Response = decode_line(&line).unwrap_or(Response::Error("bad".into()));
        assert_eq!(back, Response::Status(Box::new(status)));
    }

    #[test]
    fn json_has_the_brief_fields() {
        let value = serde_json::to_value(sample()).unwrap_or_default();
        for field in [
            "state",
            "priority",
            "vrid",
            "lb_id",
            "vip",
            "vip_owner",
            "master",
            "advert_interval_ms",
            "counters",
        ] {
            assert!(value.get(field).is_some(), "missing {field} in {value}");
        }
        assert_eq!(value["state"], "backup");
        assert_eq!(value["vip"], "10.10.74.74");
        assert_eq!(value["master"], "10.10.74.71");
        assert_eq!(value["counters"]["discard_ttl"], 3);
        let unknown = Status {
            master: None,
            ..sample()
        };
        assert!(serde_json::to_value(unknown).unwrap_or_default()["master"].is_null());
    }

    #[test]
    fn protocol_lines() {
        assert_eq!(encode_line(&Request::Status), b"{\"cmd\":\"status\"}\n");
        assert_eq!(
            decode_line::<Request>(b"{\"cmd\":\"status\"}\n").ok(),
            Some(Request::Status)
        );
        assert!(decode_line::<Request>(b"{\"cmd\":\"reboot\"}").is_err());
        for (req, line) in [
            (Request::Drain, &b"{\"cmd\":\"drain\"}\n"[..]),
            (Request::Undrain, b"{\"cmd\":\"undrain\"}\n"),
            (Request::Reload, b"{\"cmd\":\"reload\"}\n"),
        ] {
            assert_eq!(encode_line(&req), line);
            assert_eq!(decode_line::<Request>(line).ok(), Some(req));
        }
        assert_eq!(
            encode_line(&Response::Ok("draining".into())),
            b"{\"ok\":\"draining\"}\n"
        );
        assert_eq!(
            encode_line(&Response::Error("no such command".into())),
            b"{\"error\":\"no such command\"}\n"
        );
        let line = encode_line(&Response::Status(Box::new(sample())));
        assert!(line.starts_with(b"{\"status\":{\"name\":\"jupiter\""));
    }

    #[test]
    fn table_shows_the_key_items() {
        let table = render_table(&sample());
        for item in [
            "jupiter (10.10.74.70 on eth0)",
            "BACKUP for 3m 12s",
            "10.10.74.74 (not here)",
            "10.10.74.71 (priority 99)",
            "priority         89",
            "vrid             51",
            "lb_id            52",
            "1000 ms",
            "vrrp version     3",
            "preempt          yes",
            "link             up",
            "uptime           1h 02m",
            "adverts          rx 1234, tx 0",
            "discards         discard_checksum 1\n                 discard_ttl 3\n",
        ] {
            assert!(table.contains(item), "missing {item:?} in\n{table}");
        }
        assert!(!table.contains("events"), "{table}");
        assert!(!table.contains("discard_vrid"), "{table}");
        // Every row: label padded to one width, two spaces, value.
        assert!(
            table.lines().all(|l| l.len() > 17 && &l[15..17] == "  "),
            "{table}"
        );
    }

    #[test]
    fn draining_shows_in_the_table_and_the_json() {
        let mut status = sample();
        assert!(render_table(&status).contains("maintenance      no\n"));
        assert_eq!(
            serde_json::to_value(&status).unwrap_or_default()["draining"],
            false
        );
        status.draining = true;
        assert!(
            render_table(&status)
                .contains("maintenance      DRAINING (no new clients; pinned clients finish;")
        );
        assert_eq!(
            serde_json::to_value(&status).unwrap_or_default()["draining"],
            true
        );
        // A status from an older daemon without the field still reads.
        let mut value = serde_json::to_value(sample()).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.remove("draining");
        }
        let back: Option<Status> = serde_json::from_value(value).ok();
        assert_eq!(back.map(|s| s.draining), Some(false));
    }

    #[test]
    fn table_for_a_master() {
        let mut status = sample();
        status.state = "master".into();
        status.vip_owner = true;
        status.master = status.management_ip;
        status.master_priority = Some(89);
        status.state_since_s = 4.25;
        status.counters = [
            ("rx_adverts".to_string(), 0),
            ("became_master".to_string(), 1),
        ]
        .into_iter()
        .collect();
        let table = render_table(&status);
        for item in [
            "MASTER (director) for 4.2s",
            "10.10.74.74 (owned here)",
            "10.10.74.70 (this node, priority 89)",
            "discards         none",
            "events           became_master 1",
        ] {
            assert!(table.contains(item), "missing {item:?} in\n{table}");
        }
        status.state = "scanning".into();
        status.priority = 0;
        status.master = None;
        status.link_up = false;
        let table = render_table(&status);
        for item in [
            "SCANNING for",
            "master           unknown",
            "0 (scanning only",
            "link             DOWN",
        ] {
            assert!(table.contains(item), "missing {item:?} in\n{table}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.0), "0.0s");
        assert_eq!(human_duration(59.94), "59.9s");
        assert_eq!(human_duration(60.0), "1m 00s");
        assert_eq!(human_duration(86_399.0), "23h 59m");
        assert_eq!(human_duration(90_000.0), "1d 01h");
        assert_eq!(human_duration(f64::NAN), "?");
    }

    #[tokio::test]
    async fn request_round_trip() {
        let path = scratch_socket("ok");
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(e) => panic!("binding {}: {e}", path.display()),
        };
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.ok()?;
            let mut stream = BufReader::new(stream);
            let line = read_line(&mut stream).await.ok()??;
            let req: Request = decode_line(&line).ok()?;
            let answer = match req {
                Request::Status => Response::Status(Box::new(sample())),
                _ => Response::Error("unexpected".into()),
            };
            stream
                .get_mut()
                .write_all(&encode_line(&answer))
                .await
                .ok()?;
            Some(req)
        });
        let response = request(&path, &Request::Status).await;
        assert_eq!(response.ok(), Some(Response::Status(Box::new(sample()))));
        assert_eq!(server.await.ok().flatten(), Some(Request::Status));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn request_errors_name_the_socket_and_the_fix() {
        let path = Path::new("/nonexistent/proxyha/control.sock");
        let err = request(path, &Request::Status).await.err();
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            "connecting to /nonexistent/proxyha/control.sock: No such file or directory; \
             is proxyha run started? (see --control)"
        );

        // A daemon that accepts but never answers.
        let path = scratch_socket("silent");
        let listener = UnixListener::bind(&path).ok();
        let err = request_within(&path, &Request::Status, Duration::from_millis(50))
            .await
            .err();
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            format!(
                "no answer from {} within 50 ms; proxyha run may be stuck, check its log",
                path.display()
            )
        );

        drop(listener);
        let _ = std::fs::remove_file(&path);

        // A daemon that hangs up without answering, then one that answers garbage.
        for (name, answer, expected) in [
            (
                "hangup",
                &b""[..],
                "closed the connection without answering",
            ),
            ("garbage", &b"hello\n"[..], "unreadable answer from"),
        ] {
            let path = scratch_socket(name);
            let listener = UnixListener::bind(&path).ok();
            let accept = async {
                if let Some(listener) = &listener
                    && let Ok((stream, _)) = listener.accept().await
                {
                    let mut stream = BufReader::new(stream);
                    let _ = read_line(&mut stream).await;
                    let _ = stream.get_mut().write_all(answer).await;
                }
            };
            let (_, result) = tokio::join!(accept, request(&path, &Request::Status));
            let text = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.contains(expected) && text.contains(&path.display().to_string()),
                "{text}"
            );
            let _ = std::fs::remove_file(&path);
        }
    }

    #[tokio::test]
    async fn read_line_is_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut reader = BufReader::new(&long[..]);
        let err = read_line(&mut reader).await.err();
        assert_eq!(err.map(|e| e.kind()), Some(io::ErrorKind::InvalidData));
        let mut reader = BufReader::new(&b"{}\nlast"[..]);
        assert_eq!(
            read_line(&mut reader).await.ok().flatten(),
            Some(b"{}\n".to_vec())
        );
        assert_eq!(
            read_line(&mut reader).await.ok().flatten(),
            Some(b"last".to_vec())
        );
        assert_eq!(read_line(&mut reader).await.ok().flatten(), None);
    }
}
