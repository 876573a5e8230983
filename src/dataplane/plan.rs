//! Pure planning: [`Desired`] → nft script, policy routing, host settings. No I/O.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{DataplaneError, Desired, DirectorState, Mode, Role, StickyEntry};

/// The one nft table proxyha owns (`ip` family: the VIP is IPv4).
pub const TABLE: &str = "proxyha";
/// Preference of the `fwmark <node> lookup <node>` rules (before `local`, which moves).
pub const FWMARK_RULE_PREF: u32 = 100;
/// NAT mode on a scanning node: replies from the service ports go back via the director.
pub const BACKEND_RULE_PREF: u32 = 101;
/// Where the `local` rule moves on a direct-mode director (BRIEF §6): below the fwmark
/// rules, so a marked packet for the VIP is forwarded instead of delivered locally.
pub const LOCAL_RULE_PREF: u32 = 200;
/// The kernel's `local` routing table.
pub const LOCAL_TABLE: u32 = 255;
/// Sticky map capacity. An element costs ~100 bytes in the kernel; 256 Ki clients ≈ 26 MB.
/// When full, new clients still follow the bucket table, they just are not pinned.
const STICKY_SIZE: u32 = 262_144;
/// The `fresh` map: every new pin also goes here for [`FRESH_TIMEOUT`], so the director
/// learns new pins by reading a map as small as the new-client rate (its `sticky` map is
/// never read whole on a schedule; see `director::replication`). When full (more than this
/// many new clients in [`FRESH_TIMEOUT`]), the rare whole read finds the rest.
const FRESH_SIZE: u32 = 262_144;
/// How long a new pin stays in the `fresh` map.
pub const FRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Bucket tables larger than this are refused (the anonymous map lives in one rule).
const MAX_BUCKETS: usize = 65_536;

/// The packet mark (and routing table id) meaning "send to `node`": its address as u32.
pub fn mark_of(node: Ipv4Addr) -> u32 {
    u32::from(node)
}

fn invalid(msg: String) -> DataplaneError {
    DataplaneError::Invalid(msg)
}

fn validate(d: &Desired) -> Result<(), DataplaneError> {
    if d.redirects.is_empty() && !matches!(d.role, Role::Idle) {
        return Err(invalid(
            "no port redirects; set ha.port_redirects (e.g. [9090])".into(),
        ));
    }
    if d.interface.is_empty() || d.interface.len() > 15 || d.interface.contains(char::is_whitespace)
    {
        return Err(invalid(format!(
            "interface name {:?} is not a valid interface name (1-15 characters, no spaces)",
            d.interface
        )));
    }
    if let Role::Director(dir) = &d.role {
        if dir.self_addr.is_unspecified() || dir.nodes.iter().any(|n| n.is_unspecified()) {
            return Err(invalid(
                "node address 0.0.0.0 cannot be marked (mark 0 means undecided)".into(),
            ));
        }
        let known = |n: &Ipv4Addr| *n == dir.self_addr || dir.nodes.contains(n);
        let mut covered = BTreeSet::new();
        for pool in &dir.pools {
            if pool.buckets.is_empty() || pool.buckets.len() > MAX_BUCKETS {
                return Err(invalid(format!(
                    "bucket table of ports {:?} has {} buckets; it needs 1..={MAX_BUCKETS}",
                    pool.ports,
                    pool.buckets.len()
                )));
            }
            for (b, n) in pool.buckets.iter().enumerate() {
                if let Some(n) = n
                    && !known(n)
                {
                    return Err(invalid(format!(
                        "bucket {b} of ports {:?} names node {n}, which is not in the node \
                         list; add the node or rebuild the table from the live members",
                        pool.ports
                    )));
                }
            }
            if let Some(n) = pool.serving.iter().find(|n| !known(n)) {
                return Err(invalid(format!(
                    "ports {:?} list node {n} as serving, which is not in the node list",
                    pool.ports
                )));
            }
            for p in &pool.ports {
                if !covered.insert(*p) {
                    return Err(invalid(format!("port {p} is in two pools")));
                }
            }
        }
        let redirected: BTreeSet<u16> = d.redirects.iter().map(|r| r.port).collect();
        if covered != redirected {
            return Err(invalid(format!(
                "the pools cover ports {covered:?} but the redirected ports are {redirected:?}; \
                 give every redirected port exactly one pool"
            )));
        }
    }
    Ok(())
}

fn port_set(ports: &[u16]) -> String {
    let mut p = ports.to_vec();
    p.sort_unstable();
    p.dedup();
    if p.len() == 1 {
        p[0].to_string()
    } else {
        let list: Vec<String> = p.iter().map(|x| x.to_string()).collect();
        format!("{{ {} }}", list.join(", "))
    }
}

fn ports(d: &Desired) -> String {
    let p: Vec<u16> = d.redirects.iter().map(|r| r.port).collect();
    port_set(&p)
}

/// The complete `nft -f` script for this node.
///
/// Atomic: nft applies a file as one transaction. Idempotent: every object is declared with
/// `add` (a no-op when present), then our chains are flushed and refilled. The table is not
/// deleted and re-created, because that would drop the kernel's `sticky` map, and with it
/// every live client's pin, on each bucket-table change; the objects are the same for every
/// role, so nothing stale can survive a flush. Only [`Role::Idle`] deletes the table (the
/// `add` before `delete` keeps that valid when it is already gone).
pub fn plan(d: &Desired) -> Result<String, DataplaneError> {
    validate(d)?;
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    let role = match &d.role {
        Role::Director(_) => "director",
        Role::Scanning { .. } => "scanning",
        Role::Idle => "idle",
    };
    let _ = writeln!(
        s,
        "# proxyha data path: role {role}, mode {} (generated)",
        d.mode
    );
    let _ = writeln!(s, "add table {t}");
    if matches!(d.role, Role::Idle) {
        let _ = writeln!(s, "delete table {t}");
        return Ok(s);
    }
    maps(&mut s, &t);
    let _ = writeln!(
        s,
        "add chain {t} prerouting {{ type filter hook prerouting priority raw; policy accept; }}"
    );
    let _ = writeln!(
        s,
        "add chain {t} nat_prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    );
    let _ = writeln!(s, "add chain {t} director");
    for c in ["prerouting", "nat_prerouting", "director"] {
        let _ = writeln!(s, "flush chain {t} {c}");
    }
    let vip = d.vip;
    match &d.role {
        Role::Director(dir) => director_rules(&mut s, &t, d, dir),
        Role::Scanning { .. } => {
            // No rule reads the maps here: a standby candidate keeps the pins it holds from
            // the director in `sticky` ahead of a takeover ([`flush_pins`] when it starts).
            // Direct mode: the packet still says VIP:port, so the port changes here.
            // NAT mode: the director already rewrote it to node:to.
            if d.mode == Mode::Direct {
                for r in d.redirects.iter().filter(|r| r.to != r.port) {
                    let _ = writeln!(
                        s,
                        "add rule {t} nat_prerouting ip daddr {vip} tcp dport {} redirect to :{}",
                        r.port, r.to
                    );
                }
            }
        }
        Role::Idle => {}
    }
    Ok(s)
}

fn maps(s: &mut String, t: &str) {
    let _ = writeln!(
        s,
        "add map {t} sticky {{ type ipv4_addr . inet_service : mark; size {STICKY_SIZE}; flags dynamic,timeout; }}"
    );
    let _ = writeln!(
        s,
        "add map {t} fresh {{ type ipv4_addr . inet_service : mark; size {FRESH_SIZE}; flags dynamic,timeout; }}"
    );
}

/// The table and maps alone: what must exist before a new director's replicated pins are
/// loaded into `sticky` (over netlink, before any rule can pin a client anew).
pub fn preamble() -> String {
    let t = format!("ip {TABLE}");
    let mut s = format!("add table {t}\n");
    maps(&mut s, &t);
    s
}

/// Empties both pin maps: what a node runs when it starts scanning (at start, or after
/// directing), so its `sticky` map then holds only what the director replicates to it.
pub fn flush_pins() -> String {
    format!("flush map ip {TABLE} sticky\nflush map ip {TABLE} fresh\n")
}

/// The preload pins a director loads: valid (their node serves their port), not expired.
pub fn preload_pins(dir: &DirectorState) -> Vec<StickyEntry> {
    if dir.sticky_idle_s == 0 {
        return Vec::new();
    }
    dir.sticky_preload
        .iter()
        .filter(|e| pin_valid(dir, e) && e.expires_ms > 0)
        .copied()
        .collect()
}

fn director_rules(s: &mut String, t: &str, d: &Desired, dir: &DirectorState) {
    let vip = d.vip;
    let local = mark_of(dir.self_addr);
    let _ = writeln!(
        s,
        "add rule {t} prerouting ip daddr {vip} tcp dport {} jump director",
        ports(d)
    );
    // Our traffic: start from "undecided" whatever an earlier hook did.
    let _ = writeln!(s, "add rule {t} director meta mark set 0");
    let sticky = dir.sticky_idle_s > 0;
    if sticky {
        // A miss leaves the mark at 0.
        let _ = writeln!(
            s,
            "add rule {t} director meta mark set ip saddr . tcp dport map @sticky"
        );
        // A pin to a node that no longer serves the port (gone, or its listener failed) is
        // void: those clients move at once; its other ports keep their pins.
        for pool in &dir.pools {
            let marks: Vec<String> = pool
                .serving
                .iter()
                .map(|n| format!("{:#010x}", mark_of(*n)))
                .collect();
            let ports = port_set(&pool.ports);
            if marks.is_empty() {
                let _ = writeln!(s, "add rule {t} director tcp dport {ports} meta mark set 0");
            } else {
                let _ = writeln!(
                    s,
                    "add rule {t} director tcp dport {ports} meta mark != {{ {} }} meta mark set 0",
                    marks.join(", ")
                );
            }
        }
    }
    for pool in &dir.pools {
        let entries: Vec<String> = pool
            .buckets
            .iter()
            .enumerate()
            .map(|(b, n)| format!("{b} : {:#010x}", n.map_or(local, mark_of)))
            .collect();
        // An anonymous map inside the rule: nft 1.0.6 crashes listing a named map declared
        // `typeof jhash …`, and the table must stay readable with `nft list ruleset`.
        // A new pin is also noted in `fresh` (replication reads new pins there).
        let fresh = if dir.sticky_idle_s > 0 {
            format!(
                " add @fresh {{ ip saddr . tcp dport timeout {}s : meta mark }}",
                FRESH_TIMEOUT.as_secs()
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "add rule {t} director tcp dport {} meta mark 0 meta mark set jhash ip saddr mod {} seed {:#010x} map {{ {} }}{fresh}",
            port_set(&pool.ports),
            pool.buckets.len(),
            dir.hash_seed,
            entries.join(", ")
        );
    }
    if sticky {
        // Refreshes the pin's timeout on every packet; no conntrack involved (BRIEF §6).
        let _ = writeln!(
            s,
            "add rule {t} director update @sticky {{ ip saddr . tcp dport timeout {}s : meta mark }}",
            dir.sticky_idle_s
        );
    } else {
        let _ = writeln!(s, "flush map {t} sticky");
    }
    match d.mode {
        Mode::Direct => {
            // Forwarded packets bypass conntrack: the director never sees the replies, so
            // conntrack would call the client's ACKs invalid (BRIEF §6).
            let _ = writeln!(
                s,
                "add rule {t} director meta mark != {local:#010x} notrack"
            );
        }
        Mode::Nat => {
            for r in &d.redirects {
                for n in &dir.nodes {
                    let _ = writeln!(
                        s,
                        "add rule {t} nat_prerouting ip daddr {vip} tcp dport {} meta mark {:#010x} dnat ip to {n}:{}",
                        r.port,
                        mark_of(*n),
                        r.to
                    );
                }
            }
        }
    }
    // The director's own share: translate the port here (only tracked, i.e. local, packets
    // reach a nat chain in direct mode).
    for r in d.redirects.iter().filter(|r| r.to != r.port) {
        let _ = writeln!(
            s,
            "add rule {t} nat_prerouting ip daddr {vip} tcp dport {} meta mark {local:#010x} redirect to :{}",
            r.port, r.to
        );
    }
}

/// The pins that point at a node which no longer serves their port (its listener failed,
/// or it left): the kernel voids them per packet, but its `update` refreshes an existing
/// element without replacing its node, so until deleted they would keep such a client on
/// the bucket table instead of on a pin of its own. Empty unless `d` is a director's.
pub fn void_pins(d: &Desired, pins: &[StickyEntry]) -> Vec<StickyEntry> {
    let Role::Director(dir) = &d.role else {
        return Vec::new();
    };
    pins.iter()
        .filter(|e| !pin_valid(dir, e))
        .copied()
        .collect()
}

/// A pin counts when its node serves its port (the same test the kernel's per-pool
/// `meta mark != { … }` rule makes): for preloading and for pruning alike.
fn pin_valid(dir: &DirectorState, e: &StickyEntry) -> bool {
    dir.pools
        .iter()
        .find(|p| p.ports.contains(&e.port))
        .is_some_and(|p| p.serving.iter().any(|n| mark_of(*n) == e.mark))
}

/// Which packets a policy-routing rule matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// `fwmark <mark>`
    FwMark(u32),
    /// `from <addr> ipproto tcp sport <port>`: NAT-mode replies of a scanning node.
    FromTcpSport { from: Ipv4Addr, sport: u16 },
    /// Every packet (the `local` rule).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    pub pref: u32,
    pub selector: Selector,
    pub table: u32,
}

/// `default via <gateway> dev <dev> table <table>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub table: u32,
    pub gateway: Ipv4Addr,
    pub dev: String,
}

/// The policy routing a role needs. `local_moved`: the `local` rule sits at
/// [`LOCAL_RULE_PREF`] instead of 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingPlan {
    pub rules: Vec<Rule>,
    pub routes: Vec<Route>,
    pub local_moved: bool,
}

impl Rule {
    /// The `ip rule` arguments after `add`/`del`.
    pub fn ip_args(&self) -> Vec<String> {
        let mut a = vec!["pref".to_string(), self.pref.to_string()];
        match &self.selector {
            Selector::FwMark(m) => a.extend(["fwmark".into(), format!("{m:#x}")]),
            Selector::FromTcpSport { from, sport } => a.extend([
                "from".into(),
                from.to_string(),
                "ipproto".into(),
                "tcp".into(),
                "sport".into(),
                sport.to_string(),
            ]),
            Selector::All => {}
        }
        a.extend(["lookup".into(), self.table.to_string()]);
        a
    }
}

impl Route {
    /// The `ip route` arguments after `replace`.
    pub fn ip_args(&self) -> Vec<String> {
        vec![
            "default".into(),
            "via".into(),
            self.gateway.to_string(),
            "dev".into(),
            self.dev.clone(),
            "table".into(),
            self.table.to_string(),
        ]
    }
}

/// Direct-mode director: one fwmark rule and table per other node (table id = mark), and
/// the `local` rule moved down. NAT-mode scanning node: replies from the translated ports
/// go back via the director, which undoes the DNAT. Everything else needs none.
pub fn routing_plan(d: &Desired) -> RoutingPlan {
    let mut p = RoutingPlan::default();
    match (&d.role, d.mode) {
        (Role::Director(dir), Mode::Direct) => {
            let mut nodes: Vec<Ipv4Addr> = dir
                .nodes
                .iter()
                .copied()
                .filter(|n| *n != dir.self_addr && !n.is_unspecified())
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            for n in nodes {
                p.rules.push(Rule {
                    pref: FWMARK_RULE_PREF,
                    selector: Selector::FwMark(mark_of(n)),
                    table: mark_of(n),
                });
                p.routes.push(Route {
                    table: mark_of(n),
                    gateway: n,
                    dev: d.interface.clone(),
                });
            }
            p.local_moved = true;
        }
        (
            Role::Scanning {
                self_addr,
                director: Some(director),
            },
            Mode::Nat,
        ) => {
            let mut to: Vec<u16> = d.redirects.iter().map(|r| r.to).collect();
            to.sort_unstable();
            to.dedup();
            let table = mark_of(*director);
            for sport in to {
                p.rules.push(Rule {
                    pref: BACKEND_RULE_PREF,
                    selector: Selector::FromTcpSport {
                        from: *self_addr,
                        sport,
                    },
                    table,
                });
            }
            p.routes.push(Route {
                table,
                gateway: *director,
                dev: d.interface.clone(),
            });
        }
        _ => {}
    }
    p
}

/// Host settings: sysctls (`/proc/sys` relative paths, value) and whether the VIP sits on
/// `lo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPlan {
    pub sysctls: Vec<(String, String)>,
    pub vip_on_lo: bool,
}

/// Director: forwarding on; in direct mode no ICMP redirects (it sends packets back out of
/// the interface they came in on, which would otherwise tell clients to go to the node).
/// Direct-mode scanning node: the VIP on `lo`, answering no ARP for it and never using it
/// as an ARP source (the `all` and per-interface values are combined by max, so set both).
pub fn host_plan(d: &Desired) -> HostPlan {
    let mut h = HostPlan::default();
    let ifc = &d.interface;
    let mut set = |k: String, v: &str| h.sysctls.push((k, v.to_string()));
    match (&d.role, d.mode) {
        (Role::Director(_), mode) => {
            set("net/ipv4/ip_forward".into(), "1");
            if mode == Mode::Direct {
                set("net/ipv4/conf/all/send_redirects".into(), "0");
                set(format!("net/ipv4/conf/{ifc}/send_redirects"), "0");
            }
        }
        (Role::Scanning { .. }, Mode::Direct) => {
            for scope in ["all", ifc.as_str()] {
                set(format!("net/ipv4/conf/{scope}/arp_ignore"), "1");
                set(format!("net/ipv4/conf/{scope}/arp_announce"), "2");
            }
            h.vip_on_lo = true;
        }
        _ => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::super::{PortPool, StickyEntry};
    use super::*;

    const D: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
    const N2: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
    const N3: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 3);

    use super::tests_support::desired;

    fn director(preload: Vec<StickyEntry>) -> Role {
        Role::Director(DirectorState {
            self_addr: D,
            nodes: vec![N2, N3],
            pools: vec![PortPool {
                ports: vec![9090, 80],
                serving: vec![D, N2, N3],
                buckets: vec![None, Some(N2), Some(N3), Some(D), Some(N2), Some(N3)],
            }],
            hash_seed: 0x5eed,
            sticky_idle_s: 300,
            sticky_preload: preload,
            sticky_void: vec![],
        })
    }

    const HEAD: &str = "add table ip proxyha
add map ip proxyha sticky { type ipv4_addr . inet_service : mark; size 262144; flags dynamic,timeout; }
add map ip proxyha fresh { type ipv4_addr . inet_service : mark; size 262144; flags dynamic,timeout; }
add chain ip proxyha prerouting { type filter hook prerouting priority raw; policy accept; }
add chain ip proxyha nat_prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain ip proxyha director
flush chain ip proxyha prerouting
flush chain ip proxyha nat_prerouting
flush chain ip proxyha director
";

    const MARKING: &str = "add rule ip proxyha prerouting ip daddr 10.88.0.100 tcp dport { 80, 9090 } jump director
add rule ip proxyha director meta mark set 0
add rule ip proxyha director meta mark set ip saddr . tcp dport map @sticky
add rule ip proxyha director tcp dport { 80, 9090 } meta mark != { 0x0a580001, 0x0a580002, 0x0a580003 } meta mark set 0
add rule ip proxyha director tcp dport { 80, 9090 } meta mark 0 meta mark set jhash ip saddr mod 6 seed 0x00005eed map { 0 : 0x0a580001, 1 : 0x0a580002, 2 : 0x0a580003, 3 : 0x0a580001, 4 : 0x0a580002, 5 : 0x0a580003 } add @fresh { ip saddr . tcp dport timeout 5s : meta mark }
add rule ip proxyha director update @sticky { ip saddr . tcp dport timeout 300s : meta mark }
";

    pub(crate) fn golden_director_direct() -> String {
        format!(
            "# proxyha data path: role director, mode direct (generated)\n{HEAD}{MARKING}\
add rule ip proxyha director meta mark != 0x0a580001 notrack
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 80 meta mark 0x0a580001 redirect to :3128
"
        )
    }

    fn preload() -> Vec<StickyEntry> {
        vec![
            StickyEntry {
                client: Ipv4Addr::new(10, 88, 1, 5),
                port: 9090,
                mark: mark_of(N2),
                expires_ms: 120_000,
            },
            // A pin to a node that is gone is not loaded.
            StickyEntry {
                client: Ipv4Addr::new(10, 88, 1, 6),
                port: 9090,
                mark: mark_of(Ipv4Addr::new(10, 88, 0, 9)),
                expires_ms: 120_000,
            },
        ]
    }

    #[test]
    fn golden_director_direct_plan() {
        // The preload is not in the script: it goes over netlink, after the preamble.
        let got = plan(&desired(Mode::Direct, director(preload()))).unwrap();
        assert_eq!(got, golden_director_direct());
        assert_eq!(
            preamble(),
            HEAD.lines()
                .take(3)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        let Role::Director(dir) = director(preload()) else {
            unreachable!()
        };
        assert_eq!(
            preload_pins(&dir),
            preload()[..1],
            "the pin to a gone node is not loaded"
        );
    }

    #[test]
    fn golden_director_nat_plan() {
        let got = plan(&desired(Mode::Nat, director(vec![]))).unwrap();
        let want = format!(
            "# proxyha data path: role director, mode nat (generated)\n{HEAD}{MARKING}\
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 9090 meta mark 0x0a580002 dnat ip to 10.88.0.2:9090
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 9090 meta mark 0x0a580003 dnat ip to 10.88.0.3:9090
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 80 meta mark 0x0a580002 dnat ip to 10.88.0.2:3128
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 80 meta mark 0x0a580003 dnat ip to 10.88.0.3:3128
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 80 meta mark 0x0a580001 redirect to :3128
"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn golden_scanning_plans() {
        let role = Role::Scanning {
            self_addr: N2,
            director: Some(D),
        };
        let got = plan(&desired(Mode::Direct, role.clone())).unwrap();
        let want = format!(
            "# proxyha data path: role scanning, mode direct (generated)\n{HEAD}\
add rule ip proxyha nat_prerouting ip daddr 10.88.0.100 tcp dport 80 redirect to :3128
"
        );
        assert_eq!(got, want);
        let nat = plan(&desired(Mode::Nat, role)).unwrap();
        assert!(!nat.contains("flush map"), "the maps stay: {nat}");
    }

    #[test]
    fn a_port_down_on_one_node_gets_its_own_pool() {
        // N3's listener for 80 failed: 80 keeps D and N2, 9090 keeps all three.
        let role = Role::Director(DirectorState {
            self_addr: D,
            nodes: vec![N2, N3],
            pools: vec![
                PortPool {
                    ports: vec![9090],
                    serving: vec![D, N2, N3],
                    buckets: vec![None, Some(N2), Some(N3)],
                },
                PortPool {
                    ports: vec![80],
                    serving: vec![D, N2],
                    buckets: vec![None, Some(N2), Some(N2)],
                },
            ],
            hash_seed: 1,
            sticky_idle_s: 300,
            sticky_preload: vec![
                StickyEntry {
                    client: Ipv4Addr::new(10, 88, 1, 5),
                    port: 80,
                    mark: mark_of(N3),
                    expires_ms: 1000,
                },
                StickyEntry {
                    client: Ipv4Addr::new(10, 88, 1, 5),
                    port: 9090,
                    mark: mark_of(N3),
                    expires_ms: 1000,
                },
            ],
            sticky_void: vec![],
        });
        let Role::Director(dir) = &role else {
            unreachable!()
        };
        let loaded = preload_pins(dir);
        let got = plan(&desired(Mode::Direct, role.clone())).unwrap();
        for want in [
            "director tcp dport 9090 meta mark != { 0x0a580001, 0x0a580002, 0x0a580003 } meta mark set 0",
            "director tcp dport 80 meta mark != { 0x0a580001, 0x0a580002 } meta mark set 0",
            "director tcp dport 9090 meta mark 0 meta mark set jhash ip saddr mod 3 seed 0x00000001 map { 0 : 0x0a580001, 1 : 0x0a580002, 2 : 0x0a580003 }",
            "director tcp dport 80 meta mark 0 meta mark set jhash ip saddr mod 3 seed 0x00000001 map { 0 : 0x0a580001, 1 : 0x0a580002, 2 : 0x0a580002 }",
        ] {
            assert!(got.contains(want), "missing `{want}` in\n{got}");
        }
        assert_eq!(
            loaded.iter().map(|e| e.port).collect::<Vec<_>>(),
            [9090],
            "the pin of the failed port is void"
        );
    }

    #[test]
    fn pins_to_a_node_that_no_longer_serves_their_port_are_void_and_deleted_by_key() {
        let role = Role::Director(DirectorState {
            self_addr: D,
            nodes: vec![N2, N3],
            pools: vec![
                PortPool {
                    ports: vec![9090],
                    serving: vec![D, N2, N3],
                    buckets: vec![None],
                },
                PortPool {
                    ports: vec![80],
                    serving: vec![D, N2],
                    buckets: vec![None],
                },
            ],
            hash_seed: 1,
            sticky_idle_s: 300,
            sticky_preload: vec![],
            sticky_void: vec![],
        });
        let d = desired(Mode::Direct, role);
        let pin = |port, node| StickyEntry {
            client: Ipv4Addr::new(10, 88, 1, 5),
            port,
            mark: mark_of(node),
            expires_ms: 1000,
        };
        let gone = Ipv4Addr::new(10, 88, 0, 9);
        let pins = [
            pin(9090, N3),
            pin(80, N3),
            pin(80, N2),
            pin(9090, gone),
            pin(443, D),
        ];
        let void = void_pins(&d, &pins);
        assert_eq!(void, vec![pin(80, N3), pin(9090, gone), pin(443, D)]);
        assert!(void_pins(&desired(Mode::Direct, Role::Idle), &pins).is_empty());
    }

    #[test]
    fn golden_idle_plan_deletes_the_table() {
        let got = plan(&desired(Mode::Direct, Role::Idle)).unwrap();
        assert_eq!(
            got,
            "# proxyha data path: role idle, mode direct (generated)\n\
             add table ip proxyha\ndelete table ip proxyha\n"
        );
    }

    #[test]
    fn sticky_off_flushes_the_map_and_skips_the_update() {
        let mut d = desired(Mode::Direct, director(vec![]));
        if let Role::Director(dir) = &mut d.role {
            dir.sticky_idle_s = 0;
        }
        let s = plan(&d).unwrap();
        assert!(!s.contains("@sticky"), "{s}");
        assert!(s.contains("flush map ip proxyha sticky"));
    }

    #[test]
    fn invalid_input_names_the_object_and_the_fix() {
        let mut d = desired(Mode::Direct, director(vec![]));
        if let Role::Director(dir) = &mut d.role {
            dir.pools[0].buckets[2] = Some(Ipv4Addr::new(10, 88, 0, 9));
        }
        let e = plan(&d).unwrap_err().to_string();
        assert!(
            e.contains("bucket 2 of ports [9090, 80] names node 10.88.0.9"),
            "{e}"
        );
        let mut d = desired(Mode::Direct, director(vec![]));
        if let Role::Director(dir) = &mut d.role {
            dir.pools[0].buckets.clear();
        }
        assert!(plan(&d).unwrap_err().to_string().contains("0 buckets"));
        let mut d = desired(Mode::Direct, director(vec![]));
        if let Role::Director(dir) = &mut d.role {
            dir.pools[0].ports = vec![9090];
        }
        let e = plan(&d).unwrap_err().to_string();
        assert!(
            e.contains("give every redirected port exactly one pool"),
            "{e}"
        );
        let mut d = desired(Mode::Direct, director(vec![]));
        if let Role::Director(dir) = &mut d.role {
            dir.pools[0].serving.push(Ipv4Addr::new(10, 88, 0, 9));
        }
        assert!(plan(&d).unwrap_err().to_string().contains("serving"));
        let mut d = desired(Mode::Direct, Role::Idle);
        d.interface = "eth0; flush ruleset".into();
        assert!(
            plan(&d).is_err(),
            "interface names never reach a command line unchecked"
        );
    }

    #[test]
    fn routing_for_a_direct_director_moves_local_below_fwmark_rules() {
        let r = routing_plan(&desired(Mode::Direct, director(vec![])));
        assert!(r.local_moved);
        assert_eq!(
            r.rules
                .iter()
                .map(|r| r.ip_args().join(" "))
                .collect::<Vec<_>>(),
            vec![
                "pref 100 fwmark 0xa580002 lookup 173539330",
                "pref 100 fwmark 0xa580003 lookup 173539331"
            ]
        );
        assert_eq!(
            r.routes[0].ip_args().join(" "),
            "default via 10.88.0.2 dev eth0 table 173539330"
        );
        const { assert!(LOCAL_RULE_PREF > FWMARK_RULE_PREF) };
        assert_eq!(
            routing_plan(&desired(Mode::Nat, director(vec![]))),
            RoutingPlan::default()
        );
    }

    #[test]
    fn routing_for_a_nat_backend_returns_replies_via_the_director() {
        let d = desired(
            Mode::Nat,
            Role::Scanning {
                self_addr: N2,
                director: Some(D),
            },
        );
        let r = routing_plan(&d);
        assert!(!r.local_moved);
        let rules: Vec<String> = r.rules.iter().map(|r| r.ip_args().join(" ")).collect();
        assert_eq!(
            rules,
            vec![
                "pref 101 from 10.88.0.2 ipproto tcp sport 3128 lookup 173539329",
                "pref 101 from 10.88.0.2 ipproto tcp sport 9090 lookup 173539329"
            ]
        );
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn host_settings_per_role() {
        let h = host_plan(&desired(Mode::Direct, director(vec![])));
        assert!(!h.vip_on_lo);
        assert!(
            h.sysctls
                .contains(&("net/ipv4/ip_forward".into(), "1".into()))
        );
        assert!(
            h.sysctls
                .contains(&("net/ipv4/conf/eth0/send_redirects".into(), "0".into()))
        );
        let s = host_plan(&desired(
            Mode::Direct,
            Role::Scanning {
                self_addr: N2,
                director: None,
            },
        ));
        assert!(s.vip_on_lo);
        assert!(
            s.sysctls
                .contains(&("net/ipv4/conf/all/arp_ignore".into(), "1".into()))
        );
        assert!(
            s.sysctls
                .contains(&("net/ipv4/conf/eth0/arp_announce".into(), "2".into()))
        );
        assert_eq!(
            host_plan(&desired(Mode::Direct, Role::Idle)),
            HostPlan::default()
        );
    }
}

/// `nft -c` (check mode: parsed and validated by the kernel, nothing committed) on every
/// golden plan. Needs CAP_NET_ADMIN; skips loudly otherwise, fails under
/// PROXYHA_REQUIRE_ROOT_TESTS=1.
#[cfg(test)]
mod nft_check {
    use super::tests_support::all_plans;
    use std::io::Write;
    use std::process::{Command, Stdio};

    #[test]
    fn generated_scripts_pass_nft_check_mode() {
        if !crate::test_support::require_root("generated_scripts_pass_nft_check_mode") {
            return;
        }
        let required = std::env::var("PROXYHA_REQUIRE_ROOT_TESTS").is_ok_and(|v| v == "1");
        let have_nft = Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have_nft {
            assert!(!required, "nft check needs nft (install nftables)");
            eprintln!("SKIPPED generated_scripts_pass_nft_check_mode: needs nft");
            return;
        }
        for (name, script) in all_plans() {
            let mut child = Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(Stdio::piped())
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
                "nft -c rejected the {name} plan: {}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::super::{DirectorState, PortPool, PortRedirect, StickyEntry};
    use super::*;

    /// VIP 10.88.0.100 on eth0, redirecting 9090 and 80 → 3128.
    pub(crate) fn desired(mode: Mode, role: Role) -> Desired {
        Desired {
            vip: Ipv4Addr::new(10, 88, 0, 100),
            interface: "eth0".into(),
            redirects: vec![
                PortRedirect {
                    port: 9090,
                    to: 9090,
                },
                PortRedirect { port: 80, to: 3128 },
            ],
            mode,
            role,
        }
    }

    /// Every role × mode, with a preload, port translation and a full-size table.
    pub(crate) fn all_plans() -> Vec<(String, String)> {
        let d = Ipv4Addr::new(10, 88, 0, 1);
        let nodes = vec![Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3)];
        let buckets = (0..4096)
            .map(|i| match i % 3 {
                0 => None,
                k => Some(nodes[k - 1]),
            })
            .collect();
        let director = Role::Director(DirectorState {
            self_addr: d,
            nodes: nodes.clone(),
            pools: vec![
                PortPool {
                    ports: vec![9090],
                    serving: vec![d, nodes[0], nodes[1]],
                    buckets,
                },
                PortPool {
                    ports: vec![80],
                    serving: vec![],
                    buckets: vec![None],
                },
            ],
            hash_seed: 0xdead_beef,
            sticky_idle_s: 300,
            sticky_preload: vec![StickyEntry {
                client: Ipv4Addr::new(10, 88, 1, 5),
                port: 9090,
                mark: mark_of(nodes[0]),
                expires_ms: 1234,
            }],
            sticky_void: vec![],
        });
        let scanning = Role::Scanning {
            self_addr: nodes[0],
            director: Some(d),
        };
        let mut out = Vec::new();
        for mode in [Mode::Direct, Mode::Nat] {
            for (rname, role) in [
                ("director", director.clone()),
                ("scanning", scanning.clone()),
                ("idle", Role::Idle),
            ] {
                let script = plan(&desired(mode, role)).expect("valid desired state");
                out.push((format!("{rname}/{mode}"), script));
            }
        }
        out
    }
}
