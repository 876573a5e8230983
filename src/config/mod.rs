//! The configuration file (BRIEF §3): TOML with sections `[node]`, `[ha]`, `[control]`,
//! `[log]`, and on the appliance `[network]` and `[appliance]`, validated in full at load.
//!
//! We walk toml's spanned document tree ([`toml::de::DeTable`]) by hand instead of deriving
//! `Deserialize`: that way every error carries the line and column of the offending value,
//! integers are read wide so a range error can quote the value the administrator wrote, and
//! one pass reports every problem in the file, not just the first.
//!
//! Every problem renders as `<origin>:<line>:<col>: <key> = <value>: <rule>`, for example
//! `proxyha.toml:4:21: ha.virtual_router_id = 300: must be 1..=255`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::wire::vrrp::{ChecksumMode, Version};

/// Where `proxyha run` and `proxyha check` look without `--config`.
pub const DEFAULT_PATH: &str = "/etc/proxyha/proxyha.toml";
/// The control socket without `[control] socket` or `--control`.
pub const DEFAULT_SOCKET: &str = "/run/proxyha/control.sock";
/// Where the supervisor keeps state that must survive a restart (maintenance mode).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/proxyha";

/// A validated configuration: every field holds an allowed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: Node,
    pub ha: Ha,
    pub control: Control,
    pub log: Log,
    /// `[network]`: applied by `proxyha run` at start; `None` (the section is absent) leaves
    /// the interfaces alone, as on a lab or a general-purpose host.
    pub network: Option<Network>,
    pub appliance: Appliance,
    pub update: Update,
}

/// `[update]`: A/B updates of the appliance (`proxyha update`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// A trial boot of a new version that is not healthy this long after start reboots
    /// (after three tries GRUB boots the previous slot again).
    pub health_timeout_s: u32,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            health_timeout_s: DEFAULT_HEALTH_TIMEOUT_S,
        }
    }
}

/// `[update] health_timeout_s` when unset.
pub const DEFAULT_HEALTH_TIMEOUT_S: u32 = 300;

/// `[network]`: the appliance's own addressing, applied through rtnetlink at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The interface that gets `address`; with a bond, the bond's name.
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// At most 3 (the resolver reads no more); empty leaves /etc/resolv.conf alone.
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub bond: Option<Bond>,
}

/// `network.bond`: a Linux bond created at start from `slaves`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bond {
    pub name: String,
    pub slaves: Vec<String>,
    pub mode: BondMode,
}

/// The kernel's bonding modes, by their `ip link` names (numbers are IFLA_BOND_MODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BondMode {
    BalanceRr = 0,
    #[default]
    ActiveBackup = 1,
    BalanceXor = 2,
    Broadcast = 3,
    Ieee8023ad = 4,
    BalanceTlb = 5,
    BalanceAlb = 6,
}

impl BondMode {
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Ieee8023ad,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }

    /// The mode with kernel number `n` (IFLA_BOND_MODE).
    pub fn from_kernel(n: u8) -> Option<BondMode> {
        BondMode::ALL.into_iter().find(|m| *m as u8 == n)
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[appliance]`: switches of the appliance image's own services (ignored elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    /// The built-in forward proxy (tinyproxy on 0.0.0.0:9090); off for a bring-your-own proxy.
    pub builtin_proxy: bool,
}

impl Default for Appliance {
    fn default() -> Self {
        Appliance {
            builtin_proxy: true,
        }
    }
}

/// `[node]`: this appliance.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Default: the host name.
    pub name: String,
    /// This node's own address on the HA interface (never the VIP).
    pub management_ip: Option<Ipv4Addr>,
    /// Relative capacity (> 0, finite); `None` means "number of CPUs", decided at run time.
    pub capacity: Option<f64>,
}

/// `[ha]`: the Proxy HA group.
#[derive(Debug, Clone, PartialEq)]
pub struct Ha {
    pub interface: String,
    pub virtual_ip: Ipv4Addr,
    pub virtual_router_id: u8,
    pub lb_id: u8,
    /// 1..=254 director candidate, 0 scanning only.
    pub priority: u8,
    /// A multiple of 10 in 10..=40950 (v3) or of 1000 in 1000..=255000 (v2).
    pub advert_interval_ms: u32,
    pub preempt: bool,
    pub vrrp_version: Version,
    pub vrrp_checksum: ChecksumMode,
    pub port_redirects: Vec<PortRedirect>,
    pub sticky_idle_s: u32,
    pub mode: Mode,
    /// Shared secret of the membership protocol's HMAC-SHA256 (inline, or read from
    /// `auth_key_file` by [`Config::load`]); `None`: messages unsigned.
    pub auth_key: Option<String>,
    /// Where the secret is kept (mode 0600 or stricter, enforced), instead of inline.
    pub auth_key_file: Option<PathBuf>,
    /// What a failed listener takes out of the pool.
    pub drain: Drain,
    /// Unicast VRRP: adverts go to each of these instead of 224.0.0.18 (this node's own
    /// address, if listed, is skipped), and only these may speak. Empty: multicast.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Multicast mode: the only sources whose adverts count. Empty (and no unicast peers):
    /// any host on the segment.
    pub vrrp_sources: Vec<Ipv4Addr>,
    /// `[ha.track]`: checks that lower the priority or force FAULT.
    pub track: Track,
    /// SCHED_FIFO priority (1..=99) of the VRRP loop; `None`: normal scheduling.
    pub rt_priority: Option<u8>,
    /// Lock the daemon's memory (mlockall), so the VRRP loop is never paged out.
    pub lock_memory: bool,
}

impl Ha {
    /// Who may speak VRRP in this group: the unicast peers and the listed sources; empty
    /// means anyone on the segment.
    pub fn vrrp_allowed_sources(&self) -> Vec<Ipv4Addr> {
        let mut all = self.unicast_peers.clone();
        all.extend(
            self.vrrp_sources
                .iter()
                .filter(|a| !self.unicast_peers.contains(a)),
        );
        all
    }
}

/// `ha.drain`: what the director takes out of the pool when a node's listener fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drain {
    /// Only that port's pool (other ports keep flowing); the default.
    #[default]
    Port,
    /// The whole node, as the seed's product does (its other ports' pinned clients finish).
    Node,
}

impl Drain {
    pub fn as_str(self) -> &'static str {
        match self {
            Drain::Port => "port",
            Drain::Node => "node",
        }
    }
}

impl fmt::Display for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Client traffic to `port` on the VIP goes to `to` on the chosen scanning node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRedirect {
    pub port: u16,
    pub to: u16,
}

/// How the director hands a connection to a scanning node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Direct routing: replies go straight from the scanning node to the client.
    #[default]
    Direct,
    /// DNAT at the director; replies return through it.
    Nat,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Nat => "nat",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[control]`: the Unix socket `proxyha status` talks to, and the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
    /// State that survives a supervisor restart (`proxyha drain`), written atomically.
    pub state_dir: PathBuf,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub target: LogTarget,
    pub level: LevelFilter,
    /// `remote = "udp://HOST:PORT"`: the appliance's syslogd also sends every line there.
    pub remote: Option<SocketAddrV4>,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// /dev/log, ident `proxyha`, facility daemon.
    #[default]
    Syslog,
    Stderr,
    /// Appended to this absolute path.
    File(PathBuf),
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Syslog => f.write_str("syslog"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// One problem in a configuration text, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {}: {}; {}", path.display(), io_reason(source), read_hint(source))]
    Read { path: PathBuf, source: io::Error },
    /// The text is not valid TOML or breaks a rule; one line per problem.
    #[error("{}", render_diagnostics(origin, diagnostics))]
    Invalid {
        origin: String,
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems found in the text (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

fn render_diagnostics(origin: &str, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics
        .iter()
        .map(|d| format!("{origin}:{}:{}: {}", d.line, d.column, d.message))
        .collect();
    lines.join("\n")
}

/// An I/O error's reason without the "(os error N)" suffix, for messages read by people.
pub fn io_reason(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

fn read_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => "create it or pass --config PATH",
        io::ErrorKind::PermissionDenied => "run as root or make the file readable",
        io::ErrorKind::InvalidData => "the file must be UTF-8 text",
        _ => "check the path or pass --config PATH",
    }
}

impl Config {
    /// The address `[ha.track] gateway` probes: `gateway_address`, else `network.gateway`.
    pub fn track_gateway(&self) -> Option<Ipv4Addr> {
        self.ha
            .track
            .gateway_address
            .or_else(|| self.network.as_ref().and_then(|n| n.gateway))
    }

    /// Reads and validates the file at `path`; errors are prefixed with the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_text(&text, &path.display().to_string(), true)
    }

    /// Validates `text`; `origin` (a file name) prefixes every error.
    /// Files it names are not read: `ha.auth_key_file` is checked by [`Config::load`].
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_text(text, origin, false)
    }

    fn parse_text(text: &str, origin: &str, read_files: bool) -> Result<Config, ConfigError> {
        let mut cx = Cx {
            text,
            diagnostics: Vec::new(),
            read_files,
            track_gateway_at: None,
        };
        let parsed = DeTable::parse(text);
        let config = match parsed {
            Ok(root) => cx.config(root.get_ref()),
            Err(err) => {
                let at = err.span().map_or(0, |span| span.start);
                cx.error(at..at, syntax_message(err.message()));
                None
            }
        };
        // Sections are checked in a fixed order; report in reading order.
        cx.diagnostics.sort_by_key(|d| (d.line, d.column));
        match config {
            Some(config) if cx.diagnostics.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                diagnostics: cx.diagnostics,
            }),
        }
    }

    /// `ha.advert_interval_ms` as a duration.
    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.ha.advert_interval_ms))
    }
}

fn syntax_message(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    let mut chars = message.chars();
    let first = chars.next().map(|c| c.to_lowercase().collect::<String>());
    format!(
        "invalid TOML: {}{}",
        first.unwrap_or_default(),
        chars.as_str()
    )
}

/// A commented configuration that parses; a starting point for /etc/proxyha/proxyha.toml.
pub fn example() -> &'static str {
    EXAMPLE
}

// The file is also installed as /usr/share/proxyha/proxyha.toml.example by both image builds
// (image/rootfs-finish.sh), and copied to the ESP as the first-boot template.
const EXAMPLE: &str = include_str!("example.toml");

// ---------------------------------------------------------------------------------------
// The walker

type Value<'i> = Spanned<DeValue<'i>>;

const SECTIONS: &[&str] = &[
    "node",
    "ha",
    "control",
    "log",
    "network",
    "appliance",
    "update",
];
const NODE_KEYS: &[&str] = &["name", "management_ip", "capacity"];
const HA_KEYS: &[&str] = &[
    "interface",
    "virtual_ip",
    "virtual_router_id",
    "lb_id",
    "priority",
    "advert_interval_ms",
    "preempt",
    "vrrp_version",
    "vrrp_checksum",
    "port_redirects",
    "sticky_idle_s",
    "mode",
    "auth_key",
    "auth_key_file",
    "drain",
    "unicast_peers",
    "vrrp_sources",
    "track",
    "rt_priority",
    "lock_memory",
];
const CONTROL_KEYS: &[&str] = &["socket", "state_dir"];
const LOG_KEYS: &[&str] = &["target", "level", "remote"];
const NETWORK_KEYS: &[&str] = &["interface", "address", "gateway", "dns", "hostname", "bond"];
const BOND_KEYS: &[&str] = &["name", "slaves", "mode"];
const APPLIANCE_KEYS: &[&str] = &["builtin_proxy"];
const UPDATE_KEYS: &[&str] = &["health_timeout_s"];
/// The resolver's MAXNS: later `nameserver` lines are ignored.
const MAX_DNS: usize = 3;
/// Addresses in `ha.unicast_peers` / `ha.vrrp_sources` (a group has 2 to 8 nodes).
const MAX_VRRP_PEERS: usize = 16;
/// Slaves of one bond (the appliance has at most a few NICs).
const MAX_SLAVES: usize = 8;
const REDIRECT_KEYS: &[&str] = &["port", "to"];

/// Longest Unix socket path: `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Collects diagnostics while walking one document.
struct Cx<'t> {
    text: &'t str,
    diagnostics: Vec<Diagnostic>,
    /// Read the files the config names (`ha.auth_key_file`): [`Config::load`] does,
    /// [`Config::parse`] (text only) does not.
    read_files: bool,
    /// Where `ha.track.gateway` was set without `gateway_address`: checked against
    /// `network.gateway` once both sections are read.
    track_gateway_at: Option<Range<usize>>,
}

/// A section table and where it was declared (for "is required" errors).
struct Section<'a, 'i> {
    name: &'static str,
    table: Option<&'a DeTable<'i>>,
    at: Range<usize>,
    /// Present but not a table (already reported): keys are not "missing".
    broken: bool,
}

impl<'a, 'i> Section<'a, 'i> {
    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.and_then(|t| t.get(key))
    }
}

impl Cx<'_> {
    fn error(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.diagnostics.push(Diagnostic {
            line,
            column,
            message,
        });
    }

    /// A range or format violation: `key = value: rule`.
    fn bad(&mut self, key: &str, v: &Value<'_>, rule: impl fmt::Display) {
        self.error(v.span(), format!("{key} = {}: {rule}", show(v.get_ref())));
    }

    fn config(&mut self, root: &DeTable<'_>) -> Option<Config> {
        for (key, _) in root.iter() {
            let name: &str = key.get_ref();
            if !SECTIONS.contains(&name) {
                self.error(
                    key.span(),
                    format!(
                        "unknown section [{name}]{}; allowed sections: {}",
                        suggest(name, SECTIONS),
                        SECTIONS.join(", ")
                    ),
                );
            }
        }
        let node = self.section(root, "node", NODE_KEYS);
        let ha = self.section(root, "ha", HA_KEYS);
        let control = self.section(root, "control", CONTROL_KEYS);
        let log = self.section(root, "log", LOG_KEYS);
        let network = self.section(root, "network", NETWORK_KEYS);
        let appliance = self.section(root, "appliance", APPLIANCE_KEYS);
        let update = self.section(root, "update", UPDATE_KEYS);

        let node = self.node(&node);
        let ha = self.ha(&ha, node.as_ref().and_then(|n| n.management_ip));
        let control = self.control(&control);
        let log = self.log(&log);
        let network = self.network(
            &network,
            node.as_ref().and_then(|n| n.management_ip),
            ha.as_ref().map(|h| h.virtual_ip),
            ha.as_ref().map(|h| h.interface.clone()),
        );
        let appliance = self.appliance(&appliance);
        let update = self.update(&update);
        let has_gateway = network
            .as_ref()
            .is_some_and(|n| n.as_ref().is_some_and(|n| n.gateway.is_some()));
        if let Some(at) = self.track_gateway_at.take()
            && !has_gateway
        {
            self.error(
                at,
                "ha.track.gateway: no gateway to probe; set ha.track.gateway_address or \
                 network.gateway"
                    .into(),
            );
            return None;
        }
        Some(Config {
            node: node?,
            ha: ha?,
            control: control?,
            log: log?,
            network: network?,
            appliance: appliance?,
            update: update?,
        })
    }

    fn section<'a, 'i>(
        &mut self,
        root: &'a DeTable<'i>,
        name: &'static str,
        allowed: &[&str],
    ) -> Section<'a, 'i> {
        let Some((key, value)) = root.get_key_value(name) else {
            return Section {
                name,
                table: None,
                at: 0..0,
                broken: false,
            };
        };
        let DeValue::Table(table) = value.get_ref() else {
            self.error(
                value.span(),
                format!(
                    "{name} = {}: must be a table, written [{name}] on a line of its own",
                    show(value.get_ref())
                ),
            );
            return Section {
                name,
                table: None,
                at: key.span(),
                broken: true,
            };
        };
        self.unknown_keys(table, name, &format!("[{name}]"), allowed);
        Section {
            name,
            table: Some(table),
            at: key.span(),
            broken: false,
        }
    }

    /// Reports every key of `table` not in `allowed`; true if there was none.
    fn unknown_keys(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        within: &str,
        allowed: &[&str],
    ) -> bool {
        let mut clean = true;
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if !allowed.contains(&name) {
                self.error(
                    key.span(),
                    format!(
                        "unknown key {prefix}.{name}{}; allowed keys in {within}: {}",
                        suggest(name, allowed),
                        allowed.join(", ")
                    ),
                );
                clean = false;
            }
        }
        clean
    }

    fn required(&mut self, section: &Section<'_, '_>, key: &str, why: &str) {
        if section.broken {
            return;
        }
        let name = section.name;
        // Point at the '[' of a "[ha]" header rather than at the name inside it.
        let mut at = section.at.start;
        if self
            .text
            .get(..at)
            .is_some_and(|before| before.ends_with('['))
        {
            at -= 1;
        }
        let at = at..at;
        self.error(at, format!("{name}.{key} is required in [{name}]: {why}"));
    }

    // --- typed readers: each reports a wrong type and returns None ---

    /// A string; `rule` (the rule for its content) is the message for any other type.
    fn string<'v>(&mut self, key: &str, v: &'v Value<'_>, rule: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.bad(key, v, rule);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.bad(key, v, "must be true or false");
                None
            }
        }
    }

    /// An integer in `range`; `rule` is the whole rule as shown to the administrator.
    fn int_in(
        &mut self,
        key: &str,
        v: &Value<'_>,
        range: RangeInclusive<i64>,
        rule: &str,
    ) -> Option<i64> {
        let DeValue::Integer(int) = v.get_ref() else {
            let hint = match v.get_ref() {
                DeValue::String(_) => "an integer, without quotes",
                _ => "an integer",
            };
            self.bad(key, v, format_args!("{rule} ({hint})"));
            return None;
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.bad(key, v, rule);
                None
            }
        }
    }

    fn ipv4(&mut self, key: &str, v: &Value<'_>) -> Option<Ipv4Addr> {
        const RULE: &str = "must be an IPv4 address such as \"10.10.74.74\"";
        let text = self.string(key, v, RULE)?;
        let Ok(addr) = text.parse::<Ipv4Addr>() else {
            self.bad(key, v, RULE);
            return None;
        };
        let not = if addr.is_unspecified() {
            Some("the unspecified address")
        } else if addr.is_loopback() {
            Some("loopback")
        } else if addr.is_multicast() {
            Some("multicast")
        } else if addr.is_broadcast() {
            Some("broadcast")
        } else if addr.octets()[0] >= 240 {
            Some("reserved (240.0.0.0/4)")
        } else {
            None
        };
        if let Some(not) = not {
            self.bad(
                key,
                v,
                format_args!("must be a unicast IPv4 address, not {not}"),
            );
            return None;
        }
        Some(addr)
    }

    // --- sections ---

    fn node(&mut self, s: &Section<'_, '_>) -> Option<Node> {
        let name = match s.get("name") {
            Some(v) => self.name(v),
            None => match hostname() {
                Some(name) => Some(name),
                None => {
                    self.error(
                        s.at.clone(),
                        "node.name: the host name cannot be read; set name in [node]".into(),
                    );
                    None
                }
            },
        };
        let management_ip = match s.get("management_ip") {
            Some(v) => self.ipv4("node.management_ip", v).map(Some),
            None => Some(None),
        };
        let capacity = match s.get("capacity") {
            Some(v) => self.capacity(v).map(Some),
            None => Some(None),
        };
        Some(Node {
            name: name?,
            management_ip: management_ip?,
            capacity: capacity?,
        })
    }

    fn name(&mut self, v: &Value<'_>) -> Option<String> {
        const RULE: &str = "must be 1 to 64 characters without spaces or control characters";
        let name = self.string("node.name", v, RULE)?;
        let ok = !name.is_empty()
            && name.chars().count() <= 64
            && !name.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            self.bad("node.name", v, RULE);
            return None;
        }
        Some(name.to_string())
    }

    fn capacity(&mut self, v: &Value<'_>) -> Option<f64> {
        const RULE: &str = "must be a finite number > 0 (relative to the other nodes)";
        let value = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().unwrap_or(f64::NAN),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map(|n| n as f64)
                .unwrap_or(f64::NAN),
            _ => f64::NAN,
        };
        if value.is_finite() && value > 0.0 {
            Some(value)
        } else {
            self.bad("node.capacity", v, RULE);
            None
        }
    }

    fn control(&mut self, s: &Section<'_, '_>) -> Option<Control> {
        let socket = match s.get("socket") {
            Some(v) => self.socket(v),
            None => Some(PathBuf::from(DEFAULT_SOCKET)),
        };
        let state_dir = match s.get("state_dir") {
            Some(v) => {
                const RULE: &str =
                    "must be an absolute directory path such as \"/var/lib/proxyha\"";
                match self.string("control.state_dir", v, RULE) {
                    Some(path) if path.starts_with('/') && !path.contains('\0') => {
                        Some(PathBuf::from(path))
                    }
                    Some(_) => {
                        self.bad("control.state_dir", v, RULE);
                        None
                    }
                    None => None,
                }
            }
            None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
        };
        Some(Control {
            socket: socket?,
            state_dir: state_dir?,
        })
    }

    fn socket(&mut self, v: &Value<'_>) -> Option<PathBuf> {
        const RULE: &str = "must be an absolute path such as \"/run/proxyha/control.sock\"";
        let path = self.string("control.socket", v, RULE)?;
        if !path.starts_with('/') || path.ends_with('/') {
            self.bad("control.socket", v, RULE);
            return None;
        }
        if path.len() > MAX_SOCKET_PATH {
            self.bad(
                "control.socket",
                v,
                format_args!(
                    "must be at most {MAX_SOCKET_PATH} bytes (the Unix socket path limit)"
                ),
            );
            return None;
        }
        Some(PathBuf::from(path))
    }

    fn log(&mut self, s: &Section<'_, '_>) -> Option<Log> {
        let target = match s.get("target") {
            Some(v) => {
                const RULE: &str = "must be \"syslog\", \"stderr\" or \"file:/absolute/path\"";
                match self.string("log.target", v, RULE) {
                    Some("syslog") => Some(LogTarget::Syslog),
                    Some("stderr") => Some(LogTarget::Stderr),
                    Some(other) => match other.strip_prefix("file:") {
                        Some(path) if path.starts_with('/') && !path.ends_with('/') => {
                            Some(LogTarget::File(PathBuf::from(path)))
                        }
                        _ => {
                            self.bad("log.target", v, RULE);
                            None
                        }
                    },
                    None => None,
                }
            }
            None => Some(LogTarget::Syslog),
        };
        let level = match s.get("level") {
            Some(v) => {
                const RULE: &str = "must be \"error\", \"warn\", \"info\", \"debug\" or \"trace\"";
                match self.string("log.level", v, RULE) {
                    Some("error") => Some(LevelFilter::Error),
                    Some("warn") => Some(LevelFilter::Warn),
                    Some("info") => Some(LevelFilter::Info),
                    Some("debug") => Some(LevelFilter::Debug),
                    Some("trace") => Some(LevelFilter::Trace),
                    Some(_) => {
                        self.bad("log.level", v, RULE);
                        None
                    }
                    None => None,
                }
            }
            None => Some(LevelFilter::Info),
        };
        let remote = match s.get("remote") {
            Some(v) => self.remote(v).map(Some),
            None => Some(None),
        };
        Some(Log {
            target: target?,
            level: level?,
            remote: remote?,
        })
    }

    fn remote(&mut self, v: &Value<'_>) -> Option<SocketAddrV4> {
        const RULE: &str = "must be \"udp://A.B.C.D\" or \"udp://A.B.C.D:PORT\" (an IPv4 address: \
                            the log must not depend on DNS; port 1..=65535, default 514)";
        let text = self.string("log.remote", v, RULE)?;
        let Some(rest) = text.strip_prefix("udp://") else {
            self.bad("log.remote", v, RULE);
            return None;
        };
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p != 0)),
            None => (rest, Some(514)),
        };
        match (host.parse::<Ipv4Addr>(), port) {
            (Ok(addr), Some(port))
                if !addr.is_unspecified() && !addr.is_multicast() && !addr.is_broadcast() =>
            {
                Some(SocketAddrV4::new(addr, port))
            }
            _ => {
                self.bad("log.remote", v, RULE);
                None
            }
        }
    }

    fn appliance(&mut self, s: &Section<'_, '_>) -> Option<Appliance> {
        let builtin_proxy = match s.get("builtin_proxy") {
            Some(v) => self.boolean("appliance.builtin_proxy", v)?,
            None => true,
        };
        Some(Appliance { builtin_proxy })
    }

    fn update(&mut self, s: &Section<'_, '_>) -> Option<Update> {
        let health_timeout_s = match s.get("health_timeout_s") {
            Some(v) => self.int_in(
                "update.health_timeout_s",
                v,
                30..=3600,
                "must be 30..=3600 (seconds)",
            )? as u32,
            None => DEFAULT_HEALTH_TIMEOUT_S,
        };
        Some(Update { health_timeout_s })
    }

    /// An interface name as the kernel's dev_valid_name() accepts it.
    fn ifname(&mut self, key: &str, v: &Value<'_>) -> Option<String> {
        const RULE: &str =
            "must be an interface name of 1 to 15 characters without '/', ':' or spaces";
        let name = self.string(key, v, RULE)?;
        let ok = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if !ok {
            self.bad(key, v, RULE);
            return None;
        }
        Some(name.to_string())
    }

    fn network(
        &mut self,
        s: &Section<'_, '_>,
        management_ip: Option<Ipv4Addr>,
        vip: Option<Ipv4Addr>,
        ha_interface: Option<String>,
    ) -> Option<Option<Network>> {
        if s.table.is_none() {
            // Absent: proxyha leaves the network alone. Present but not a table: reported.
            return if s.broken { None } else { Some(None) };
        }
        let bond = match s.get("bond") {
            Some(v) => self.bond(v).map(Some),
            None => Some(None),
        };
        let interface = match (s.get("interface"), &bond) {
            (Some(v), Some(Some(bond))) => self.ifname("network.interface", v).and_then(|name| {
                if name == bond.name {
                    Some(name)
                } else {
                    self.bad(
                        "network.interface",
                        v,
                        format_args!(
                            "must be the bond's name {:?} when network.bond is set \
                             (the address goes on the bond), or left out",
                            bond.name
                        ),
                    );
                    None
                }
            }),
            (Some(v), _) => self.ifname("network.interface", v),
            (None, Some(Some(bond))) => Some(bond.name.clone()),
            // The address goes where VRRP runs.
            (None, _) => Some(ha_interface.clone().unwrap_or_else(|| "eth0".to_string())),
        };
        // The management address and VRRP share one interface: the adverts' source is the
        // interface's primary address.
        let interface = match (interface, &ha_interface) {
            (Some(name), Some(ha_if)) if name != *ha_if => {
                if let Some(v) = s.get("interface").or_else(|| s.get("bond")) {
                    self.bad(
                        "network.interface",
                        v,
                        format_args!(
                            "is {name:?} but ha.interface is {ha_if:?}; the node's address and \
                             VRRP must be on the same interface (set both to {name:?})"
                        ),
                    );
                }
                None
            }
            (i, _) => i,
        };
        let address = match s.get("address") {
            Some(v) => self.cidr(v, management_ip, vip),
            None => {
                self.required(
                    s,
                    "address",
                    "this node's address and prefix, e.g. address = \"10.10.74.70/24\"",
                );
                None
            }
        };
        let gateway = match s.get("gateway") {
            Some(v) => self
                .ipv4("network.gateway", v)
                .and_then(|gw| match address {
                    Some((addr, prefix)) if !same_subnet(gw, addr, prefix) => {
                        self.bad(
                            "network.gateway",
                            v,
                            format_args!(
                                "must be inside the subnet of network.address {}/{prefix}",
                                subnet(addr, prefix)
                            ),
                        );
                        None
                    }
                    Some((addr, _)) if gw == addr => {
                        self.bad(
                            "network.gateway",
                            v,
                            "must be a router on the subnet, not this node's own address",
                        );
                        None
                    }
                    _ => Some(Some(gw)),
                }),
            None => Some(None),
        };
        let dns = match s.get("dns") {
            Some(v) => self.dns(v),
            None => Some(Vec::new()),
        };
        let hostname = match s.get("hostname") {
            Some(v) => self.hostname(v).map(Some),
            None => Some(None),
        };
        let (address, prefix) = address?;
        Some(Some(Network {
            interface: interface?,
            address,
            prefix,
            gateway: gateway?,
            dns: dns?,
            hostname: hostname?,
            bond: bond?,
        }))
    }

    /// `"A.B.C.D/N"`: a host address (not the subnet or its broadcast) with prefix 1..=32.
    fn cidr(
        &mut self,
        v: &Value<'_>,
        management_ip: Option<Ipv4Addr>,
        vip: Option<Ipv4Addr>,
    ) -> Option<(Ipv4Addr, u8)> {
        const RULE: &str =
            "must be an IPv4 address with prefix length 1..=32, e.g. \"10.10.74.70/24\"";
        let text = self.string("network.address", v, RULE)?;
        let parsed = text.split_once('/').and_then(|(a, p)| {
            let addr = a.parse::<Ipv4Addr>().ok()?;
            let prefix = p.parse::<u8>().ok().filter(|p| (1..=32).contains(p))?;
            Some((addr, prefix))
        });
        let Some((addr, prefix)) = parsed else {
            self.bad("network.address", v, RULE);
            return None;
        };
        let bits = u32::from(addr);
        let host_mask = if prefix == 32 { 0 } else { u32::MAX >> prefix };
        let problem = if addr.is_unspecified()
            || addr.is_loopback()
            || addr.is_multicast()
            || addr.is_broadcast()
            || addr.octets()[0] >= 240
        {
            Some("must be a unicast address".to_string())
        } else if prefix <= 30 && bits & host_mask == 0 {
            Some(format!(
                "is the subnet's own address; use a host address inside {}/{prefix}",
                subnet(addr, prefix)
            ))
        } else if prefix <= 30 && bits & host_mask == host_mask {
            Some(format!(
                "is the broadcast address of {}/{prefix}; use a host address",
                subnet(addr, prefix)
            ))
        } else if management_ip.is_some_and(|m| m != addr) {
            Some(format!(
                "must be node.management_ip ({}) with its prefix: the node's own address on the \
                 HA interface",
                management_ip.unwrap_or(addr)
            ))
        } else if vip == Some(addr) {
            Some("must differ from ha.virtual_ip (the VIP moves between nodes)".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.bad("network.address", v, problem);
            return None;
        }
        Some((addr, prefix))
    }

    fn dns(&mut self, v: &Value<'_>) -> Option<Vec<Ipv4Addr>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.bad(
                "network.dns",
                v,
                "must be a list of up to 3 IPv4 addresses, e.g. [\"10.10.74.2\"]",
            );
            return None;
        };
        if items.len() > MAX_DNS {
            self.bad(
                "network.dns",
                v,
                format_args!("must list at most {MAX_DNS} servers (the resolver ignores more)"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.ipv4(&format!("network.dns[{i}]"), item) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn hostname(&mut self, v: &Value<'_>) -> Option<String> {
        const RULE: &str = "must be a host name: labels of 1 to 63 letters, digits or '-' \
                            (not at either end), separated by '.', 253 characters at most";
        let name = self.string("network.hostname", v, RULE)?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            self.bad("network.hostname", v, RULE);
            return None;
        }
        Some(name.to_string())
    }

    fn bond(&mut self, v: &Value<'_>) -> Option<Bond> {
        const SHAPE: &str = "must be a table such as { name = \"bond0\", slaves = [\"eth0\", \"eth1\"], \
                             mode = \"active-backup\" }";
        let DeValue::Table(table) = v.get_ref() else {
            self.bad("network.bond", v, SHAPE);
            return None;
        };
        let clean = self.unknown_keys(table, "network.bond", "network.bond", BOND_KEYS);
        let name = match table.get("name") {
            Some(n) => self.ifname("network.bond.name", n),
            None => {
                self.error(
                    v.span(),
                    "network.bond.name is required, e.g. name = \"bond0\"".into(),
                );
                None
            }
        };
        let slaves = match table.get("slaves") {
            Some(list) => self.slaves(list, name.as_deref()),
            None => {
                self.error(
                    v.span(),
                    "network.bond.slaves is required: the NICs to bond, e.g. slaves = [\"eth0\", \"eth1\"]"
                        .into(),
                );
                None
            }
        };
        let mode = match table.get("mode") {
            Some(m) => {
                let names: Vec<String> = BondMode::ALL
                    .iter()
                    .map(|m| format!("\"{}\"", m.as_str()))
                    .collect();
                let rule = format!("must be one of {}", names.join(", "));
                match self.string("network.bond.mode", m, &rule) {
                    Some(text) => match BondMode::ALL.into_iter().find(|b| b.as_str() == text) {
                        Some(mode) => Some(mode),
                        None => {
                            self.bad("network.bond.mode", m, rule);
                            None
                        }
                    },
                    None => None,
                }
            }
            None => Some(BondMode::ActiveBackup),
        };
        if !clean {
            return None;
        }
        Some(Bond {
            name: name?,
            slaves: slaves?,
            mode: mode?,
        })
    }

    fn slaves(&mut self, v: &Value<'_>, bond: Option<&str>) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.bad(
                "network.bond.slaves",
                v,
                "must be a list of 1 to 8 interface names, e.g. [\"eth0\", \"eth1\"]",
            );
            return None;
        };
        if items.is_empty() || items.len() > MAX_SLAVES {
            self.bad(
                "network.bond.slaves",
                v,
                format_args!("must list 1 to {MAX_SLAVES} interfaces"),
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let key = format!("network.bond.slaves[{i}]");
            let Some(name) = self.ifname(&key, item) else {
                ok = false;
                continue;
            };
            if Some(name.as_str()) == bond {
                self.bad(&key, item, "must not be the bond itself");
                ok = false;
            } else if out.contains(&name) {
                self.bad(&key, item, "duplicate interface; list each slave once");
                ok = false;
            } else {
                out.push(name);
            }
        }
        ok.then_some(out)
    }
}

/// The subnet address of `addr/prefix`.
fn subnet(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Ipv4Addr::from(u32::from(addr) & mask)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    subnet(a, prefix) == subnet(b, prefix)
}

impl Config {
    /// The value of a key scripts read (`proxyha config get`), rendered for a shell: `None`
    /// for an unknown key, `Some("")` for an unset optional one.
    pub fn get(&self, key: &str) -> Option<String> {
        let network = self.network.as_ref();
        Some(match key {
            "node.name" => self.node.name.clone(),
            "ha.interface" => self.ha.interface.clone(),
            "ha.virtual_ip" => self.ha.virtual_ip.to_string(),
            "log.remote" => self.log.remote.map(|a| a.to_string()).unwrap_or_default(),
            "appliance.builtin_proxy" => self.appliance.builtin_proxy.to_string(),
            "update.health_timeout_s" => self.update.health_timeout_s.to_string(),
            "network.interface" => network.map(|n| n.interface.clone()).unwrap_or_default(),
            "network.address" => network
                .map(|n| format!("{}/{}", n.address, n.prefix))
                .unwrap_or_default(),
            "network.hostname" => network
                .map(|n| n.hostname.clone().unwrap_or_else(|| self.node.name.clone()))
                .unwrap_or_default(),
            _ => return None,
        })
    }
}

/// The keys [`Config::get`] knows, for its error message.
pub const GET_KEYS: &[&str] = &[
    "node.name",
    "ha.interface",
    "ha.virtual_ip",
    "log.remote",
    "appliance.builtin_proxy",
    "update.health_timeout_s",
    "network.interface",
    "network.address",
    "network.hostname",
];

// ---------------------------------------------------------------------------------------
// Helpers

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A short TOML-like rendering of a value for messages.
fn show(value: &DeValue<'_>) -> String {
    const MAX: usize = 60;
    let mut out = String::new();
    render(value, &mut out);
    if out.chars().count() > MAX {
        let cut: String = out.chars().take(MAX - 3).collect();
        return format!("{cut}...");
    }
    out
}

fn render(value: &DeValue<'_>, out: &mut String) {
    use std::fmt::Write as _;
    match value {
        DeValue::String(s) => {
            let _ = write!(out, "{:?}", s.as_ref());
        }
        DeValue::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        DeValue::Float(f) => out.push_str(f.as_str()),
        DeValue::Boolean(b) => {
            let _ = write!(out, "{b}");
        }
        DeValue::Datetime(d) => {
            let _ = write!(out, "{d}");
        }
        DeValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item.get_ref(), out);
            }
            out.push(']');
        }
        DeValue::Table(table) => {
            out.push_str("{ ");
            for (i, (key, item)) in table.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key.get_ref());
                out.push_str(" = ");
                render(item.get_ref(), out);
            }
            out.push_str(" }");
        }
    }
}

/// " (did you mean X?)" when an allowed name is within two edits of `name`.
fn suggest(name: &str, allowed: &[&str]) -> String {
    allowed
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= (name.chars().count() / 3).max(1))
        .min()
        .map(|(_, candidate)| format!(" (did you mean {candidate}?)"))
        .unwrap_or_default()
}

/// Optimal string alignment distance: edits, with a swap of neighbours counted as one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The host name, for the default `node.name`.
fn hostname() -> Option<String> {
    let valid = |name: String| {
        let name = name.trim().to_string();
        (!name.is_empty()).then_some(name)
    };
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .and_then(valid)
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(valid)
        })
}

mod ha;
mod track;

pub use track::{Effect, Track};

#[cfg(test)]
mod tests;
