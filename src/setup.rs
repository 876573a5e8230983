//! `proxyha setup`, sans-IO: the serial-console dialogue as a state machine. Lines typed in,
//! prompts and errors out, and at the end the whole configuration text. The shell in `main.rs`
//! only moves lines between the terminal and [`Dialogue`], writes the file atomically and offers
//! the reboot.
//!
//! Each answer is checked by the configuration's own rules: the candidate file (answers so far,
//! the rest from the current config) is parsed with [`Config::parse`] and a diagnostic about the
//! key just asked is shown as the error, so `setup` and `config check` never disagree.

use crate::config::{Config, LogTarget, Mode, Network, PortRedirect};
use crate::wire::vrrp::{ChecksumMode, Version};
use std::fmt::Write as _;

/// The questions, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Question {
    Address,
    Gateway,
    Vip,
    Priority,
    Redirects,
    Peers,
    Key,
}

const QUESTIONS: [Question; 7] = [
    Question::Address,
    Question::Gateway,
    Question::Vip,
    Question::Priority,
    Question::Redirects,
    Question::Peers,
    Question::Key,
];

impl Question {
    fn key(self) -> &'static str {
        match self {
            Question::Address => "network.address",
            Question::Gateway => "network.gateway",
            Question::Vip => "ha.virtual_ip",
            Question::Priority => "ha.priority",
            Question::Redirects => "ha.port_redirects",
            Question::Peers => "ha.unicast_peers",
            Question::Key => "ha.auth_key_file",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Question::Address => "This node's address and prefix (A.B.C.D/N)",
            Question::Gateway => "Default gateway (A.B.C.D, or none)",
            Question::Vip => "Virtual IP shared by the group (A.B.C.D)",
            Question::Priority => {
                "Priority (1..=254 director candidate, highest wins; 0 scanning only)"
            }
            Question::Redirects => {
                "Port redirects (e.g. 9090, 2121 or 80:9090; none for VRRP only)"
            }
            Question::Peers => {
                "The other nodes' addresses, for unicast VRRP where multicast is dropped and so \
                 that only they may speak (A.B.C.D, ...; none: multicast, any host may)"
            }
            Question::Key => {
                "Group key (Enter on the first node; on the others paste the first node's key, \
                 shown by `cat` of the key file; none: unauthenticated)"
            }
        }
    }
}

/// The answers, as text ready for the TOML file (`None`: unset).
#[derive(Debug, Clone, Default)]
struct Answers {
    address: Option<String>,
    gateway: Option<String>,
    vip: Option<String>,
    priority: Option<String>,
    redirects: Option<Vec<PortRedirect>>,
    /// The other nodes (this node is added when written).
    peers: Vec<std::net::Ipv4Addr>,
    /// The group key; `None`: unauthenticated.
    key: Option<String>,
}

/// Where `setup` keeps the group key and the one it offers on a first node.
#[derive(Debug, Clone)]
pub struct KeySetup {
    /// The key file `ha.auth_key_file` names (the shell writes it 0600).
    pub path: std::path::PathBuf,
    /// A fresh random key (the shell draws it), used when none is kept or pasted.
    pub generated: String,
}

/// The dialogue. Call [`Dialogue::prompt`], feed the typed line to [`Dialogue::answer`];
/// repeat until [`Dialogue::finished`] returns the configuration text.
#[derive(Debug, Clone)]
pub struct Dialogue {
    base: Option<Config>,
    answers: Answers,
    step: usize,
    keys: KeySetup,
}

impl Dialogue {
    /// Starts from the current configuration (its values become the defaults), or from
    /// nothing on a fresh appliance.
    pub fn new(base: Option<Config>, keys: KeySetup) -> Dialogue {
        let answers = match &base {
            Some(c) => Answers {
                address: c
                    .network
                    .as_ref()
                    .map(|n| format!("{}/{}", n.address, n.prefix)),
                gateway: c
                    .network
                    .as_ref()
                    .and_then(|n| n.gateway)
                    .map(|g| g.to_string()),
                vip: Some(c.ha.virtual_ip.to_string()),
                priority: Some(c.ha.priority.to_string()),
                redirects: Some(c.ha.port_redirects.clone()),
                peers: c
                    .ha
                    .unicast_peers
                    .iter()
                    .copied()
                    .filter(|p| Some(*p) != c.node.management_ip)
                    .collect(),
                key: c
                    .ha
                    .auth_key
                    .clone()
                    .or_else(|| Some(keys.generated.clone())),
            },
            None => Answers {
                redirects: Some(vec![PortRedirect {
                    port: 9090,
                    to: 9090,
                }]),
                key: Some(keys.generated.clone()),
                ..Answers::default()
            },
        };
        Dialogue {
            base,
            answers,
            step: 0,
            keys,
        }
    }

    /// The group key to write to [`KeySetup::path`] (mode 0600) before the config, once
    /// finished; `None`: unauthenticated.
    pub fn key(&self) -> Option<&str> {
        self.answers.key.as_deref()
    }

    fn question(&self) -> Option<Question> {
        QUESTIONS.get(self.step).copied()
    }

    /// The current question with its default in brackets; `None` once every answer is in.
    pub fn prompt(&self) -> Option<String> {
        let q = self.question()?;
        let default = self.default_of(q);
        Some(match default {
            Some(d) => format!("{} [{d}]: ", q.text()),
            None => format!("{}: ", q.text()),
        })
    }

    fn default_of(&self, q: Question) -> Option<String> {
        let a = &self.answers;
        match q {
            Question::Address => a.address.clone(),
            Question::Gateway => Some(a.gateway.clone().unwrap_or_else(|| "none".into())),
            Question::Vip => a.vip.clone(),
            Question::Priority => a.priority.clone(),
            Question::Redirects => a.redirects.as_ref().map(|r| show_redirects(r)),
            Question::Peers if a.peers.is_empty() => Some("none".into()),
            Question::Peers => Some(
                a.peers
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Question::Key => Some(match (&a.key, self.base_key()) {
                (None, _) => "none".into(),
                (Some(k), Some(b)) if k == b => "keep the current key".into(),
                (Some(k), _) if *k == self.keys.generated => "generate a new key".into(),
                (Some(_), _) => "keep the pasted key".into(),
            }),
        }
    }

    fn base_key(&self) -> Option<&str> {
        self.base.as_ref().and_then(|c| c.ha.auth_key.as_deref())
    }

    /// Takes one typed line. `Err` carries the specific problem; the same question is then
    /// asked again.
    pub fn answer(&mut self, line: &str) -> Result<(), String> {
        let Some(q) = self.question() else {
            return Ok(());
        };
        let line = line.trim();
        if line
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(format!(
                "{}: quotes, backslashes and control characters are not allowed",
                q.key()
            ));
        }
        let mut next = self.answers.clone();
        if line.is_empty() {
            if self.default_of(q).is_none() {
                return Err(format!("{}: an answer is required", q.key()));
            }
        } else {
            match q {
                Question::Address => next.address = Some(line.to_string()),
                Question::Gateway => {
                    next.gateway = (!line.eq_ignore_ascii_case("none")).then(|| line.to_string())
                }
                Question::Vip => next.vip = Some(line.to_string()),
                Question::Priority => {
                    if !line.chars().all(|c| c.is_ascii_digit()) || line.len() > 6 {
                        return Err(format!(
                            "ha.priority = {line}: must be 0..=254 (a whole number)"
                        ));
                    }
                    next.priority = Some(line.to_string());
                }
                Question::Redirects => next.redirects = Some(parse_redirects(line)?),
                Question::Peers => next.peers = parse_peers(line)?,
                Question::Key if line.eq_ignore_ascii_case("none") => next.key = None,
                Question::Key => {
                    if !(16..=255).contains(&line.len()) || line.contains(char::is_whitespace) {
                        return Err(format!(
                            "ha.auth_key_file: the key is {} bytes; paste the whole key of the \
                             first node (16 to 255 characters, no spaces)",
                            line.len()
                        ));
                    }
                    next.key = Some(line.to_string());
                }
            }
        }
        // Judge the candidate by the config's own rules; only the key asked matters here
        // (later questions still hold placeholders).
        let text = render(self.base.as_ref(), &next, &self.keys);
        if let Err(err) = Config::parse(&text, "proxyha.toml") {
            let key = q.key();
            if let Some(d) = err.diagnostics().iter().find(|d| {
                d.message.starts_with(key)
                    || d.message.contains(&format!(" {key}"))
                    || (q == Question::Address && d.message.starts_with("network."))
            }) {
                return Err(d.message.clone());
            }
        }
        self.answers = next;
        self.step += 1;
        Ok(())
    }

    /// The configuration text once every question is answered and the whole file is valid.
    pub fn finished(&self) -> Option<Result<String, String>> {
        if self.question().is_some() {
            return None;
        }
        let text = render(self.base.as_ref(), &self.answers, &self.keys);
        Some(match Config::parse(&text, "proxyha.toml") {
            Ok(_) => Ok(text),
            Err(e) => Err(e.to_string()),
        })
    }
}

fn parse_peers(line: &str) -> Result<Vec<std::net::Ipv4Addr>, String> {
    if line.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse().map_err(|_| {
                format!("ha.unicast_peers: {w:?} is not an IPv4 address (A.B.C.D, comma-separated)")
            })
        })
        .collect()
}

fn show_redirects(r: &[PortRedirect]) -> String {
    if r.is_empty() {
        return "none".into();
    }
    let items: Vec<String> = r
        .iter()
        .map(|p| {
            if p.port == p.to {
                p.port.to_string()
            } else {
                format!("{}:{}", p.port, p.to)
            }
        })
        .collect();
    items.join(", ")
}

fn parse_redirects(line: &str) -> Result<Vec<PortRedirect>, String> {
    if line.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let port = |s: &str| -> Result<u16, String> {
        s.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            format!(
                "ha.port_redirects: {:?} is not a port; write ports 1..=65535 separated by commas, \
                 PORT:TO to redirect to another port, or none",
                s.trim()
            )
        })
    };
    let mut out: Vec<PortRedirect> = Vec::new();
    for item in line.split([',', ' ']).filter(|s| !s.trim().is_empty()) {
        let r = match item.split_once(':') {
            Some((p, t)) => PortRedirect {
                port: port(p)?,
                to: port(t)?,
            },
            None => {
                let p = port(item)?;
                PortRedirect { port: p, to: p }
            }
        };
        if out.iter().any(|o| o.port == r.port) {
            return Err(format!(
                "ha.port_redirects: port {} is listed twice; redirect each port once",
                r.port
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// The whole file: `base`'s values (defaults where there is none) with the answers in.
fn render(base: Option<&Config>, a: &Answers, keys: &KeySetup) -> String {
    let mut t = String::from(
        "# ProxyHA configuration, written by `proxyha setup`. Check with: proxyha config check FILE\n",
    );
    let node = base.map(|c| &c.node);
    let network = base.and_then(|c| c.network.as_ref());
    let address_ip = a
        .address
        .as_deref()
        .and_then(|s| s.split('/').next())
        .unwrap_or("0.0.0.0");
    t.push_str("\n[node]\n");
    if let Some(n) = node {
        let _ = writeln!(t, "name = {:?}", n.name);
        if let Some(c) = n.capacity {
            let _ = writeln!(t, "capacity = {c:?}");
        }
    }
    // The management address is the node's own address on the HA interface.
    if a.address.is_some() {
        let _ = writeln!(t, "management_ip = \"{address_ip}\"");
    }

    t.push_str("\n[ha]\n");
    let ha = base.map(|c| &c.ha);
    let _ = writeln!(
        t,
        "interface = {:?}",
        ha.map_or_else(
            || network.map_or("eth0".to_string(), |n: &Network| n.interface.clone()),
            |h| h.interface.clone()
        )
    );
    if let Some(v) = &a.vip {
        let _ = writeln!(t, "virtual_ip = \"{v}\"");
    }
    if let Some(p) = &a.priority {
        let _ = writeln!(t, "priority = {p}");
    }
    let redirects = a.redirects.clone().unwrap_or_default();
    let items: Vec<String> = redirects
        .iter()
        .map(|r| {
            if r.port == r.to {
                r.port.to_string()
            } else {
                format!("{{ port = {}, to = {} }}", r.port, r.to)
            }
        })
        .collect();
    let _ = writeln!(t, "port_redirects = [{}]", items.join(", "));
    if !a.peers.is_empty() {
        // One list for every node: this node's own address included.
        let mut all: Vec<String> = Vec::new();
        if a.address.is_some() {
            all.push(format!("\"{address_ip}\""));
        }
        all.extend(a.peers.iter().map(|p| format!("\"{p}\"")));
        let _ = writeln!(t, "unicast_peers = [{}]", all.join(", "));
    }
    if a.key.is_some() {
        let _ = writeln!(t, "auth_key_file = {:?}", keys.path.display().to_string());
    }
    if let Some(h) = ha {
        let _ = writeln!(t, "virtual_router_id = {}", h.virtual_router_id);
        let _ = writeln!(t, "lb_id = {}", h.lb_id);
        let _ = writeln!(t, "advert_interval_ms = {}", h.advert_interval_ms);
        let _ = writeln!(t, "preempt = {}", h.preempt);
        let _ = writeln!(
            t,
            "vrrp_version = {}",
            if h.vrrp_version == Version::V2 { 2 } else { 3 }
        );
        let checksum = match h.vrrp_checksum {
            ChecksumMode::PseudoHeader => "pseudo-header",
            ChecksumMode::VrrpOnly => "vrrp-only",
        };
        let _ = writeln!(t, "vrrp_checksum = \"{checksum}\"");
        let _ = writeln!(t, "sticky_idle_s = {}", h.sticky_idle_s);
        let mode = match h.mode {
            Mode::Direct => "direct",
            Mode::Nat => "nat",
        };
        let _ = writeln!(t, "mode = \"{mode}\"");
        let _ = writeln!(t, "drain = \"{}\"", h.drain);
        if !h.vrrp_sources.is_empty() {
            let s: Vec<String> = h.vrrp_sources.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(t, "vrrp_sources = [{}]", s.join(", "));
        }
    }

    t.push_str("\n[network]\n");
    if let Some(n) = network {
        let _ = writeln!(t, "interface = {:?}", n.interface);
    }
    if let Some(addr) = &a.address {
        let _ = writeln!(t, "address = \"{addr}\"");
    }
    if let Some(g) = &a.gateway {
        let _ = writeln!(t, "gateway = \"{g}\"");
    }
    if let Some(n) = network {
        if !n.dns.is_empty() {
            let dns: Vec<String> = n.dns.iter().map(|d| format!("\"{d}\"")).collect();
            let _ = writeln!(t, "dns = [{}]", dns.join(", "));
        }
        if let Some(h) = &n.hostname {
            let _ = writeln!(t, "hostname = {h:?}");
        }
        if let Some(b) = &n.bond {
            let slaves: Vec<String> = b.slaves.iter().map(|s| format!("{s:?}")).collect();
            let _ = writeln!(
                t,
                "bond = {{ name = {:?}, slaves = [{}], mode = \"{}\" }}",
                b.name,
                slaves.join(", "),
                b.mode
            );
        }
    }

    if let Some(c) = base {
        let _ = write!(
            t,
            "\n[control]\nsocket = {:?}\n",
            c.control.socket.display().to_string()
        );
        t.push_str("\n[log]\n");
        let target = match &c.log.target {
            LogTarget::Syslog => "syslog".to_string(),
            LogTarget::Stderr => "stderr".to_string(),
            LogTarget::File(p) => format!("file:{}", p.display()),
        };
        let _ = writeln!(t, "target = {target:?}");
        let _ = writeln!(
            t,
            "level = \"{}\"",
            c.log.level.to_string().to_ascii_lowercase()
        );
        if let Some(r) = c.log.remote {
            let _ = writeln!(t, "remote = \"udp://{r}\"");
        }
        let _ = write!(
            t,
            "\n[appliance]\nbuiltin_proxy = {}\n",
            c.appliance.builtin_proxy
        );
    }
    t
}

/// The answers a fresh appliance needs, for tests and documentation.
pub fn example_answers() -> [&'static str; 7] {
    [
        "10.10.74.70/24",
        "10.10.74.1",
        "10.10.74.74",
        "99",
        "9090, 2121",
        "10.10.74.71, 10.10.74.72",
        "",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const GENERATED: &str = "00112233445566778899aabbccddeeff0011223344556677";

    fn keys() -> KeySetup {
        KeySetup {
            path: "/etc/proxyha/auth.key".into(),
            generated: GENERATED.into(),
        }
    }

    fn run(base: Option<Config>, lines: &[&str]) -> (Vec<String>, Option<Result<String, String>>) {
        let mut d = Dialogue::new(base, keys());
        let mut errors = Vec::new();
        for line in lines {
            if let Err(e) = d.answer(line) {
                errors.push(e);
            }
        }
        (errors, d.finished())
    }

    #[test]
    fn fresh_appliance_dialogue_writes_a_valid_config() {
        let (errors, done) = run(None, &example_answers());
        assert!(errors.is_empty(), "{errors:?}");
        let text = done.unwrap().unwrap();
        let c = Config::parse(&text, "x").unwrap();
        let n = c.network.unwrap();
        assert_eq!(n.address, Ipv4Addr::new(10, 10, 74, 70));
        assert_eq!(n.prefix, 24);
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 10, 74, 1)));
        assert_eq!(c.node.management_ip, Some(Ipv4Addr::new(10, 10, 74, 70)));
        assert_eq!(c.ha.virtual_ip, Ipv4Addr::new(10, 10, 74, 74));
        assert_eq!(c.ha.priority, 99);
        assert_eq!(c.ha.port_redirects.len(), 2);
        assert_eq!(
            c.ha.unicast_peers,
            [70, 71, 72].map(|o| Ipv4Addr::new(10, 10, 74, o)).to_vec(),
            "one list for every node, this one included"
        );
        assert_eq!(
            c.ha.auth_key_file.as_deref(),
            Some(std::path::Path::new("/etc/proxyha/auth.key"))
        );
        let mut d = Dialogue::new(None, keys());
        for line in example_answers() {
            d.answer(line).unwrap();
        }
        assert_eq!(d.key(), Some(GENERATED), "authenticated by default");
    }

    #[test]
    fn each_bad_answer_is_reasked_with_its_specific_error() {
        let mut d = Dialogue::new(None, keys());
        assert_eq!(
            d.prompt().unwrap(),
            "This node's address and prefix (A.B.C.D/N): "
        );
        assert_eq!(
            d.answer("").unwrap_err(),
            "network.address: an answer is required"
        );
        assert_eq!(
            d.answer("10.10.74.70").unwrap_err(),
            "network.address = \"10.10.74.70\": must be an IPv4 address with prefix length \
             1..=32, e.g. \"10.10.74.70/24\""
        );
        d.answer("10.10.74.70/24").unwrap();
        assert_eq!(
            d.answer("10.9.0.1").unwrap_err(),
            "network.gateway = \"10.9.0.1\": must be inside the subnet of network.address \
             10.10.74.0/24"
        );
        d.answer("").unwrap(); // none
        assert_eq!(
            d.answer("10.10.74.70").unwrap_err(),
            "ha.virtual_ip = \"10.10.74.70\": must differ from node.management_ip (each node \
             keeps its own address; the VIP moves between nodes)"
        );
        d.answer("10.10.74.74").unwrap();
        assert!(
            d.answer("300")
                .unwrap_err()
                .starts_with("ha.priority = 300: must be 0..=254")
        );
        assert!(
            d.answer("high")
                .unwrap_err()
                .starts_with("ha.priority = high: must be 0..=254")
        );
        d.answer("89").unwrap();
        assert!(d.answer("9090, 9090").unwrap_err().contains("listed twice"));
        assert!(
            d.answer("http")
                .unwrap_err()
                .contains("\"http\" is not a port")
        );
        assert_eq!(
            d.prompt().unwrap(),
            "Port redirects (e.g. 9090, 2121 or 80:9090; none for VRRP only) [9090]: "
        );
        d.answer("80:9090").unwrap();
        assert!(
            d.answer("10.10.74.x")
                .unwrap_err()
                .contains("is not an IPv4 address")
        );
        assert!(
            d.answer("10.10.74.74")
                .unwrap_err()
                .contains("is the virtual_ip")
        );
        d.answer("none").unwrap();
        assert!(d.prompt().unwrap().ends_with("[generate a new key]: "));
        assert!(
            d.answer("pasted-but-cut")
                .unwrap_err()
                .contains("the key is 14 bytes; paste the whole key")
        );
        d.answer("none").unwrap();
        assert_eq!(d.prompt(), None);
        assert_eq!(d.key(), None);
        let c = Config::parse(&d.finished().unwrap().unwrap(), "x").unwrap();
        assert_eq!(
            c.ha.port_redirects,
            vec![PortRedirect { port: 80, to: 9090 }]
        );
        assert_eq!(c.network.unwrap().gateway, None);
    }

    #[test]
    fn current_values_are_the_defaults_and_other_keys_survive() {
        let base = Config::parse(
            "[node]\nname = \"n2\"\nmanagement_ip = \"10.1.0.12\"\n[ha]\ninterface = \"bond0\"\n\
             virtual_ip = \"10.1.0.100\"\npriority = 89\nport_redirects = [9090]\nlb_id = 7\n\
             auth_key = \"0123456789abcdef\"\ndrain = \"node\"\nvrrp_sources = [\"10.1.0.11\"]\n\
             unicast_peers = [\"10.1.0.12\", \"10.1.0.13\"]\n[network]\naddress = \"10.1.0.12/24\"\n\
             gateway = \"10.1.0.1\"\ndns = [\"10.1.0.2\"]\n\
             bond = { name = \"bond0\", slaves = [\"eth0\", \"eth1\"] }\n\
             [log]\nremote = \"udp://10.1.0.5:514\"\n[appliance]\nbuiltin_proxy = false\n",
            "x",
        )
        .unwrap();
        let d = Dialogue::new(Some(base.clone()), keys());
        assert_eq!(
            d.prompt().unwrap(),
            "This node's address and prefix (A.B.C.D/N) [10.1.0.12/24]: "
        );
        let (errors, done) = run(Some(base.clone()), &["", "", "", "", "", "", ""]);
        assert!(errors.is_empty(), "{errors:?}");
        let again = Config::parse(&done.unwrap().unwrap(), "x").unwrap();
        // The inline key moves to the key file (written by the shell); all else stays.
        let mut moved = base.clone();
        moved.ha.auth_key = None;
        moved.ha.auth_key_file = Some("/etc/proxyha/auth.key".into());
        assert_eq!(again, moved);
        let mut d = Dialogue::new(Some(base.clone()), keys());
        for _ in 0..7 {
            d.answer("").unwrap();
        }
        assert_eq!(d.key(), Some("0123456789abcdef"), "the current key is kept");
        let (_, done) = run(Some(base.clone()), &["", "", "", "100", "", "", ""]);
        let changed = Config::parse(&done.unwrap().unwrap(), "x").unwrap();
        assert_eq!(changed.ha.priority, 100);
        assert_eq!(changed.ha.lb_id, 7);
    }
}
