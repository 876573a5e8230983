//! The config parser's tests: defaults, every rule's message, the example.

use super::*;

const MINIMAL: &str = "[ha]\nvirtual_ip = \"10.10.74.74\"\npriority = 99\n";

fn parse(text: &str) -> Config {
    match Config::parse(text, "proxyha.toml") {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

/// The full error text for `text`.
fn error(text: &str) -> String {
    match Config::parse(text, "proxyha.toml") {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

/// `MINIMAL` with `line` added to [ha]; the error for it (line 4).
fn ha_error(line: &str) -> String {
    error(&format!("{MINIMAL}{line}\n"))
}

#[test]
fn defaults() {
    let config = parse(MINIMAL);
    assert_eq!(config.node.name, hostname().unwrap_or_default());
    assert!(!config.node.name.is_empty());
    assert_eq!(config.node.management_ip, None);
    assert_eq!(config.node.capacity, None);
    let ha = &config.ha;
    assert_eq!(ha.interface, "eth0");
    assert_eq!(ha.virtual_ip, Ipv4Addr::new(10, 10, 74, 74));
    assert_eq!(ha.virtual_router_id, 51);
    assert_eq!(ha.lb_id, 51);
    assert_eq!(ha.priority, 99);
    assert_eq!(ha.advert_interval_ms, 1000);
    assert_eq!(config.advert_interval(), Duration::from_secs(1));
    assert!(ha.preempt);
    assert_eq!(ha.vrrp_version, Version::V3);
    assert_eq!(ha.vrrp_checksum, ChecksumMode::PseudoHeader);
    assert_eq!(ha.port_redirects, vec![]);
    assert_eq!(ha.sticky_idle_s, 300);
    assert_eq!(ha.mode, Mode::Direct);
    assert_eq!(config.control.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(config.control.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(config.log.target, LogTarget::Syslog);
    assert_eq!(config.log.level, LevelFilter::Info);
    assert_eq!(config.log.remote, None);
    assert_eq!(config.network, None);
    assert!(config.appliance.builtin_proxy);
}

#[test]
fn network_defaults() {
    let config = parse(&format!("{MINIMAL}[network]\naddress = \"10.1.2.3/24\"\n"));
    assert_eq!(
        config.network,
        Some(Network {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            gateway: None,
            dns: vec![],
            hostname: None,
            bond: None,
        })
    );
    let config = parse(
        "[ha]\ninterface = \"bond1\"\nvirtual_ip = \"10.10.74.74\"\npriority = 99\n\
         [network]\naddress = \"10.1.2.3/24\"\nbond = { name = \"bond1\", slaves = [\"eth2\"] }\n",
    );
    let network = config.network.unwrap();
    assert_eq!(network.interface, "bond1");
    assert_eq!(network.bond.unwrap().mode, BondMode::ActiveBackup);
    assert_eq!(
        parse(&format!("{MINIMAL}[log]\nremote = \"udp://10.0.0.1\"\n"))
            .log
            .remote,
        Some("10.0.0.1:514".parse().unwrap())
    );
}

#[test]
fn network_rules() {
    let net = |body: &str| {
        error(&format!(
            "{MINIMAL}[network]\naddress = \"10.1.2.3/24\"\n{body}\n"
        ))
    };
    assert_eq!(
        error(&format!("{MINIMAL}[network]\naddress = \"10.1.2.3\"\n")),
        "proxyha.toml:5:11: network.address = \"10.1.2.3\": must be an IPv4 address with prefix \
         length 1..=32, e.g. \"10.10.74.70/24\""
    );
    assert_eq!(
        error(&format!("{MINIMAL}[network]\naddress = \"10.1.2.0/24\"\n")),
        "proxyha.toml:5:11: network.address = \"10.1.2.0/24\": is the subnet's own address; \
         use a host address inside 10.1.2.0/24"
    );
    assert_eq!(
        error(&format!(
            "{MINIMAL}[network]\naddress = \"10.10.74.74/24\"\n"
        )),
        "proxyha.toml:5:11: network.address = \"10.10.74.74/24\": must differ from \
         ha.virtual_ip (the VIP moves between nodes)"
    );
    assert_eq!(
        error(&format!(
            "[node]\nmanagement_ip = \"10.1.2.4\"\n{MINIMAL}[network]\naddress = \"10.1.2.3/24\"\n"
        )),
        "proxyha.toml:7:11: network.address = \"10.1.2.3/24\": must be node.management_ip \
         (10.1.2.4) with its prefix: the node's own address on the HA interface"
    );
    assert_eq!(
        error(&format!(
            "{MINIMAL}[network]\ninterface = \"eth1\"\naddress = \"10.1.2.3/24\"\n"
        )),
        "proxyha.toml:5:13: network.interface = \"eth1\": is \"eth1\" but ha.interface is \
         \"eth0\"; the node's address and VRRP must be on the same interface (set both to \
         \"eth1\")"
    );
    // Without network.interface the address goes on ha.interface.
    let c = parse(
        "[ha]\ninterface = \"eth1\"\nvirtual_ip = \"10.10.74.74\"\npriority = 99\n\
         [network]\naddress = \"10.1.2.3/24\"\n",
    );
    assert_eq!(c.network.map(|n| n.interface).as_deref(), Some("eth1"));
    assert_eq!(
        error(&format!("{MINIMAL}[network]\n")),
        "proxyha.toml:4:1: network.address is required in [network]: this node's address and \
         prefix, e.g. address = \"10.10.74.70/24\""
    );
    assert_eq!(
        net("gateway = \"10.1.3.1\""),
        "proxyha.toml:6:11: network.gateway = \"10.1.3.1\": must be inside the subnet of \
         network.address 10.1.2.0/24"
    );
    assert_eq!(
        net("dns = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", \"10.0.0.4\"]"),
        "proxyha.toml:6:7: network.dns = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", \"10.0.0.4\"]: \
         must list at most 3 servers (the resolver ignores more)"
    );
    assert_eq!(
        net("dns = [\"10.0.0.1\", \"nameserver\"]"),
        "proxyha.toml:6:20: network.dns[1] = \"nameserver\": must be an IPv4 address such as \
         \"10.10.74.74\""
    );
    assert!(
        net("hostname = \"-bad\"")
            .starts_with("proxyha.toml:6:12: network.hostname = \"-bad\": must be a host name")
    );
    assert_eq!(
        net("bond = { name = \"bond0\", slaves = [\"eth0\", \"eth0\"] }"),
        "proxyha.toml:6:44: network.bond.slaves[1] = \"eth0\": duplicate interface; list each \
         slave once"
    );
    assert_eq!(
        net("bond = { name = \"bond0\", slaves = [\"eth0\"], mode = \"lacp\" }"),
        "proxyha.toml:6:52: network.bond.mode = \"lacp\": must be one of \"balance-rr\", \
         \"active-backup\", \"balance-xor\", \"broadcast\", \"802.3ad\", \"balance-tlb\", \
         \"balance-alb\""
    );
    assert_eq!(
        net("bond = { name = \"bond0\", slave = [\"eth0\"] }"),
        "proxyha.toml:6:8: network.bond.slaves is required: the NICs to bond, e.g. slaves = \
         [\"eth0\", \"eth1\"]\n\
         proxyha.toml:6:26: unknown key network.bond.slave (did you mean slaves?); allowed keys \
         in network.bond: name, slaves, mode"
    );
    assert_eq!(
        net("interface = \"eth0\"\nbond = { name = \"bond0\", slaves = [\"eth0\", \"eth1\"] }"),
        "proxyha.toml:6:13: network.interface = \"eth0\": must be the bond's name \"bond0\" when \
         network.bond is set (the address goes on the bond), or left out"
    );
    for (text, expected) in [
        (
            "remote = \"10.0.0.1:514\"",
            "proxyha.toml:5:10: log.remote = \"10.0.0.1:514\": must be",
        ),
        (
            "remote = \"udp://loghost:514\"",
            "proxyha.toml:5:10: log.remote = \"udp://loghost:514\": must be",
        ),
        (
            "remote = \"udp://10.0.0.1:0\"",
            "proxyha.toml:5:10: log.remote = \"udp://10.0.0.1:0\": must be",
        ),
    ] {
        let got = error(&format!("{MINIMAL}[log]\n{text}\n"));
        assert!(got.starts_with(expected), "{got}");
    }
    assert_eq!(
        error(&format!("{MINIMAL}[appliance]\nbuiltin_proxy = \"no\"\n")),
        "proxyha.toml:5:17: appliance.builtin_proxy = \"no\": must be true or false"
    );
}

#[test]
fn get_renders_keys_for_scripts() {
    let config = parse(&format!(
        "{MINIMAL}[log]\nremote = \"udp://10.0.0.9\"\n[network]\naddress = \"10.1.2.3/24\"\n"
    ));
    assert_eq!(config.get("log.remote").as_deref(), Some("10.0.0.9:514"));
    assert_eq!(
        config.get("appliance.builtin_proxy").as_deref(),
        Some("true")
    );
    assert_eq!(
        config.get("network.address").as_deref(),
        Some("10.1.2.3/24")
    );
    assert_eq!(
        config.get("network.hostname"),
        Some(config.node.name.clone())
    );
    assert_eq!(config.get("nope"), None);
    for key in GET_KEYS {
        assert!(config.get(key).is_some(), "{key}");
    }
}

#[test]
fn every_key_set() {
    let config = parse(
        r#"
[node]
name = "jupiter"
management_ip = "10.10.74.70"
capacity = 2

[ha]
interface = "bond0"
virtual_ip = "10.10.74.74"
virtual_router_id = 52
lb_id = 53
priority = 0
advert_interval_ms = 2000
preempt = false
vrrp_version = 2
vrrp_checksum = "vrrp-only"
port_redirects = [9090, { port = 80, to = 9091 }, { port = 2121 }]
sticky_idle_s = 60
mode = "nat"
auth_key = "0123456789abcdef"
drain = "node"

[control]
socket = "/tmp/p.sock"
state_dir = "/srv/proxyha/state"

[log]
target = "file:/var/log/proxyha.log"
level = "debug"
remote = "udp://10.10.74.5:1514"

[network]
address = "10.10.74.70/24"
gateway = "10.10.74.1"
dns = ["10.10.74.2", "10.10.74.3"]
hostname = "jupiter.example.net"
bond = { name = "bond0", slaves = ["eth0", "eth1"], mode = "802.3ad" }

[appliance]
builtin_proxy = false
"#,
    );
    assert_eq!(
        config,
        Config {
            node: Node {
                name: "jupiter".into(),
                management_ip: Some(Ipv4Addr::new(10, 10, 74, 70)),
                capacity: Some(2.0),
            },
            ha: Ha {
                interface: "bond0".into(),
                virtual_ip: Ipv4Addr::new(10, 10, 74, 74),
                virtual_router_id: 52,
                lb_id: 53,
                priority: 0,
                advert_interval_ms: 2000,
                preempt: false,
                vrrp_version: Version::V2,
                vrrp_checksum: ChecksumMode::VrrpOnly,
                port_redirects: vec![
                    PortRedirect {
                        port: 9090,
                        to: 9090
                    },
                    PortRedirect { port: 80, to: 9091 },
                    PortRedirect {
                        port: 2121,
                        to: 2121
                    },
                ],
                sticky_idle_s: 60,
                mode: Mode::Nat,
                auth_key: Some("0123456789abcdef".into()),
                auth_key_file: None,
                drain: Drain::Node,
                unicast_peers: vec![],
                vrrp_sources: vec![],
                track: Track::default(),
                rt_priority: None,
                lock_memory: false,
            },
            control: Control {
                socket: "/tmp/p.sock".into(),
                state_dir: "/srv/proxyha/state".into(),
            },
            log: Log {
                target: LogTarget::File("/var/log/proxyha.log".into()),
                level: LevelFilter::Debug,
                remote: Some("10.10.74.5:1514".parse().unwrap()),
            },
            network: Some(Network {
                interface: "bond0".into(),
                address: Ipv4Addr::new(10, 10, 74, 70),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 10, 74, 1)),
                dns: vec![Ipv4Addr::new(10, 10, 74, 2), Ipv4Addr::new(10, 10, 74, 3)],
                hostname: Some("jupiter.example.net".into()),
                bond: Some(Bond {
                    name: "bond0".into(),
                    slaves: vec!["eth0".into(), "eth1".into()],
                    mode: BondMode::Ieee8023ad,
                }),
            }),
            appliance: Appliance {
                builtin_proxy: false
            },
            update: Update::default(),
        }
    );
    assert_eq!(config.advert_interval(), Duration::from_secs(2));
}

#[test]
fn example_parses() {
    let config = parse(example());
    assert_eq!(config.node.name, "jupiter");
    assert_eq!(config.ha.priority, 99);
    assert_eq!(config.ha.port_redirects.len(), 2);
}

#[test]
fn brief_example_parses() {
    // BRIEF §3, verbatim apart from the capacity float.
    parse(
        r#"
[node]
name = "jupiter"                 # default: hostname
management_ip = "10.10.74.70"    # this node's address on the HA interface
capacity = 2.0                   # optional relative capacity; default: number of CPUs

[ha]
interface = "eth0"               # default eth0; may be a bond
virtual_ip = "10.10.74.74"
virtual_router_id = 51           # 1..=255, default 51
lb_id = 51                       # 1..=255, default 51
priority = 99                    # 1..=254 director candidate; 0 = scanning only
advert_interval_ms = 1000        # 10..=40950, multiple of 10
preempt = true
vrrp_version = 3                 # 3 (default) or 2
port_redirects = [9090, 2121]    # or [{ port = 80, to = 9090 }]
sticky_idle_s = 300
mode = "direct"                  # "direct" (default) or "nat"

[control]
socket = "/run/proxyha/control.sock"

[log]
target = "syslog"                # "syslog" | "stderr" | "file:/path"
"#,
    );
}

#[test]
fn line_and_column_point_at_the_value() {
    let text = "[node]\nname = \"x\"\n[ha]\nvirtual_router_id = 300\n";
    let err = Config::parse(text, "proxyha.toml").unwrap_err();
    let diagnostic = err
        .diagnostics()
        .iter()
        .find(|d| d.message.starts_with("ha.virtual_router_id"))
        .cloned();
    assert_eq!(
        diagnostic,
        Some(Diagnostic {
            line: 4,
            column: 21,
            message: "ha.virtual_router_id = 300: must be 1..=255".into()
        })
    );
    assert!(
        err.to_string()
            .contains("proxyha.toml:4:21: ha.virtual_router_id = 300: must be 1..=255")
    );
    // Columns count characters, not bytes.
    let text =
        "[node]\nname = \"é\"\ncapacity = -1\n[ha]\nvirtual_ip = \"10.0.0.1\"\npriority = 1\n";
    assert_eq!(
        error(text),
        "proxyha.toml:3:12: node.capacity = -1: must be a finite number > 0 (relative to the other nodes)"
    );
    assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    assert_eq!(line_col("ab", 99), (1, 3));
}

#[test]
fn ranges_and_formats() {
    let cases: &[(&str, &str)] = &[
        (
            "virtual_router_id = 300",
            "proxyha.toml:4:21: ha.virtual_router_id = 300: must be 1..=255",
        ),
        (
            "virtual_router_id = 0",
            "proxyha.toml:4:21: ha.virtual_router_id = 0: must be 1..=255",
        ),
        (
            "virtual_router_id = \"51\"",
            "proxyha.toml:4:21: ha.virtual_router_id = \"51\": must be 1..=255 (an integer, without quotes)",
        ),
        (
            "lb_id = -1",
            "proxyha.toml:4:9: ha.lb_id = -1: must be 1..=255",
        ),
        (
            "lb_id = 0x100",
            "proxyha.toml:4:9: ha.lb_id = 0x100: must be 1..=255",
        ),
        (
            "advert_interval_ms = 35",
            "proxyha.toml:4:22: ha.advert_interval_ms = 35: must be a multiple of 10 in 10..=40950",
        ),
        (
            "advert_interval_ms = 0",
            "proxyha.toml:4:22: ha.advert_interval_ms = 0: must be a multiple of 10 in 10..=40950",
        ),
        (
            "advert_interval_ms = 40960",
            "proxyha.toml:4:22: ha.advert_interval_ms = 40960: must be a multiple of 10 in 10..=40950",
        ),
        (
            "preempt = \"yes\"",
            "proxyha.toml:4:11: ha.preempt = \"yes\": must be true or false",
        ),
        (
            "vrrp_version = 4",
            "proxyha.toml:4:16: ha.vrrp_version = 4: must be 2 or 3",
        ),
        (
            "vrrp_checksum = \"none\"",
            "proxyha.toml:4:17: ha.vrrp_checksum = \"none\": must be \"pseudo-header\" or \"vrrp-only\"",
        ),
        (
            "sticky_idle_s = 0",
            "proxyha.toml:4:17: ha.sticky_idle_s = 0: must be 1..=86400",
        ),
        (
            "auth_key = \"short\"",
            "proxyha.toml:4:12: ha.auth_key (5 bytes): must be a secret of 16 to 255 bytes, the same on every node of the group",
        ),
        (
            "mode = \"dr\"",
            "proxyha.toml:4:8: ha.mode = \"dr\": must be \"direct\" or \"nat\"",
        ),
        (
            "drain = \"all\"",
            "proxyha.toml:4:9: ha.drain = \"all\": must be \"port\" (a failed listener leaves its port's pool) or \"node\" (the whole node leaves)",
        ),
        (
            "interface = \"a-very-long-name0\"",
            "proxyha.toml:4:13: ha.interface = \"a-very-long-name0\": must be an interface name of 1 to 15 characters without '/', ':' or spaces",
        ),
        (
            "interface = \"eth0:1\"",
            "proxyha.toml:4:13: ha.interface = \"eth0:1\": must be an interface name of 1 to 15 characters without '/', ':' or spaces",
        ),
        (
            "port_redirects = 9090",
            "proxyha.toml:4:18: ha.port_redirects = 9090: must be a list of ports or { port = N, to = M } tables, e.g. [9090, 2121]",
        ),
        (
            "port_redirects = [0]",
            "proxyha.toml:4:19: ha.port_redirects[0] = 0: must be 1..=65535",
        ),
        (
            "port_redirects = [65536]",
            "proxyha.toml:4:19: ha.port_redirects[0] = 65536: must be 1..=65535",
        ),
        (
            "port_redirects = [\"80\"]",
            "proxyha.toml:4:19: ha.port_redirects[0] = \"80\": must be a port (1..=65535) or { port = N, to = M }",
        ),
        (
            "port_redirects = [{ port = 80, to = 0 }]",
            "proxyha.toml:4:37: ha.port_redirects[0].to = 0: must be 1..=65535",
        ),
        (
            "port_redirects = [{ to = 80 }]",
            "proxyha.toml:4:19: ha.port_redirects[0].port is required, e.g. { port = 80, to = 9090 }",
        ),
        (
            "port_redirects = [{ port = 80, too = 1 }]",
            "proxyha.toml:4:32: unknown key ha.port_redirects[0].too (did you mean to?); allowed keys in ha.port_redirects[0]: port, to",
        ),
        (
            "port_redirects = [9090, 2121, 9090]",
            "proxyha.toml:4:31: ha.port_redirects[2] = 9090: duplicate port (also ha.port_redirects[0]); redirect each port once",
        ),
        (
            "port_redirects = [80, { port = 80, to = 9090 }]",
            "proxyha.toml:4:32: ha.port_redirects[1].port = 80: duplicate port (also ha.port_redirects[0]); redirect each port once",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(ha_error(line), *expected, "for {line}");
    }
}

#[test]
fn priority_rules() {
    assert_eq!(
        ha_error_replacing("priority = 99", "priority = 255"),
        "proxyha.toml:3:12: ha.priority = 255: must be 0..=254 (255 is reserved for the address \
         owner; 1..=254 makes a director candidate, 0 a scanning node only)"
    );
    assert_eq!(
        error("[ha]\nvirtual_ip = \"10.0.0.1\"\n"),
        "proxyha.toml:1:1: ha.priority is required in [ha]: choose 1..=254 for a director \
         candidate (the highest wins) or 0 for a scanning node only"
    );
    assert_eq!(parse(&MINIMAL.replace("99", "0")).ha.priority, 0);
    assert_eq!(parse(&MINIMAL.replace("99", "254")).ha.priority, 254);
}

fn ha_error_replacing(from: &str, to: &str) -> String {
    error(&MINIMAL.replace(from, to))
}

#[test]
fn required_keys_point_at_the_section() {
    assert_eq!(
        error("[node]\nname = \"a\"\n\n[ha]\npriority = 1\n"),
        "proxyha.toml:4:1: ha.virtual_ip is required in [ha]: the address clients use, shared \
         by the group, e.g. virtual_ip = \"10.10.74.74\""
    );
    // No [ha] at all: both required keys, at 1:1.
    let err = error("");
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("proxyha.toml:1:1: ha.")),
        "{err}"
    );
}

#[test]
fn addresses() {
    assert_eq!(
        ha_error_replacing("\"10.10.74.74\"", "\"10.10.74\""),
        "proxyha.toml:2:14: ha.virtual_ip = \"10.10.74\": must be an IPv4 address such as \"10.10.74.74\""
    );
    for (vip, why) in [
        ("224.0.0.18", "multicast"),
        ("0.0.0.0", "the unspecified address"),
        ("127.0.0.1", "loopback"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved (240.0.0.0/4)"),
    ] {
        assert_eq!(
            ha_error_replacing("10.10.74.74", vip),
            format!(
                "proxyha.toml:2:14: ha.virtual_ip = \"{vip}\": must be a unicast IPv4 address, not {why}"
            )
        );
    }
    assert_eq!(
        error(&format!(
            "[node]\nmanagement_ip = \"10.10.74.74\"\n{MINIMAL}"
        )),
        "proxyha.toml:4:14: ha.virtual_ip = \"10.10.74.74\": must differ from node.management_ip \
         (each node keeps its own address; the VIP moves between nodes)"
    );
    assert_eq!(
        error(&format!("[node]\nmanagement_ip = 10\n{MINIMAL}")),
        "proxyha.toml:2:17: node.management_ip = 10: must be an IPv4 address such as \"10.10.74.74\""
    );
}

#[test]
fn node_section() {
    for (line, expected) in [
        (
            "capacity = 0",
            "proxyha.toml:2:12: node.capacity = 0: must be a finite number > 0 (relative to the other nodes)",
        ),
        (
            "capacity = inf",
            "proxyha.toml:2:12: node.capacity = inf: must be a finite number > 0 (relative to the other nodes)",
        ),
        (
            "capacity = nan",
            "proxyha.toml:2:12: node.capacity = nan: must be a finite number > 0 (relative to the other nodes)",
        ),
        (
            "capacity = \"2\"",
            "proxyha.toml:2:12: node.capacity = \"2\": must be a finite number > 0 (relative to the other nodes)",
        ),
        (
            "name = \"\"",
            "proxyha.toml:2:8: node.name = \"\": must be 1 to 64 characters without spaces or control characters",
        ),
        (
            "name = \"a b\"",
            "proxyha.toml:2:8: node.name = \"a b\": must be 1 to 64 characters without spaces or control characters",
        ),
    ] {
        assert_eq!(
            error(&format!("[node]\n{line}\n{MINIMAL}")),
            expected,
            "for {line}"
        );
    }
    assert_eq!(
        parse(&format!("[node]\ncapacity = 0.5\n{MINIMAL}"))
            .node
            .capacity,
        Some(0.5)
    );
}

#[test]
fn v2_interval_rule() {
    let v2 = |ms: &str| format!("{MINIMAL}vrrp_version = 2\nadvert_interval_ms = {ms}\n");
    assert_eq!(parse(&v2("1000")).ha.advert_interval_ms, 1000);
    assert_eq!(parse(&v2("255000")).ha.advert_interval_ms, 255000);
    for ms in ["100", "1500", "0", "256000"] {
        assert_eq!(
            error(&v2(ms)),
            format!(
                "proxyha.toml:5:22: ha.advert_interval_ms = {ms}: must be a multiple of 1000 in \
                 1000..=255000 with vrrp_version = 2"
            )
        );
    }
    // v3 accepts what v2 refuses.
    assert_eq!(
        parse(&format!("{MINIMAL}advert_interval_ms = 30\n"))
            .ha
            .advert_interval_ms,
        30
    );
    assert_eq!(
        parse(&format!("{MINIMAL}advert_interval_ms = 40950\n"))
            .ha
            .advert_interval_ms,
        40950
    );
    // An invalid version hides the interval rule instead of guessing it.
    let err = error(&format!(
        "{MINIMAL}vrrp_version = 1\nadvert_interval_ms = 100\n"
    ));
    assert_eq!(
        err,
        "proxyha.toml:4:16: ha.vrrp_version = 1: must be 2 or 3"
    );
}

#[test]
fn unknown_keys_in_every_section() {
    assert_eq!(
        error(&format!("[node]\nnmae = \"x\"\n{MINIMAL}")),
        "proxyha.toml:2:1: unknown key node.nmae (did you mean name?); allowed keys in [node]: \
         name, management_ip, capacity"
    );
    assert_eq!(
        ha_error("prority = 5"),
        "proxyha.toml:4:1: unknown key ha.prority (did you mean priority?); allowed keys in [ha]: \
         interface, virtual_ip, virtual_router_id, lb_id, priority, advert_interval_ms, preempt, \
         vrrp_version, vrrp_checksum, port_redirects, sticky_idle_s, mode, auth_key, auth_key_file, drain, unicast_peers, vrrp_sources, track, rt_priority, lock_memory"
    );
    assert_eq!(
        error(&format!("{MINIMAL}[control]\npath = \"/x\"\n")),
        "proxyha.toml:5:1: unknown key control.path; allowed keys in [control]: socket, state_dir"
    );
    assert_eq!(
        error(&format!("{MINIMAL}[log]\nlevl = \"info\"\n")),
        "proxyha.toml:5:1: unknown key log.levl (did you mean level?); allowed keys in [log]: \
         target, level, remote"
    );
    assert_eq!(
        error(&format!("{MINIMAL}[vrrp]\n")),
        "proxyha.toml:4:2: unknown section [vrrp]; allowed sections: node, ha, control, log, \
         network, appliance, update"
    );
    assert_eq!(
        error("ha = 1\n"),
        "proxyha.toml:1:6: ha = 1: must be a table, written [ha] on a line of its own"
    );
}

#[test]
fn control_and_log() {
    for (text, expected) in [
        (
            "[control]\nsocket = \"run/x.sock\"",
            "proxyha.toml:5:10: control.socket = \"run/x.sock\": must be an absolute path such as \"/run/proxyha/control.sock\"",
        ),
        (
            "[control]\nstate_dir = \"var/lib/proxyha\"",
            "proxyha.toml:5:13: control.state_dir = \"var/lib/proxyha\": must be an absolute directory path such as \"/var/lib/proxyha\"",
        ),
        (
            "[control]\nstate_dir = 5",
            "proxyha.toml:5:13: control.state_dir = 5: must be an absolute directory path such as \"/var/lib/proxyha\"",
        ),
        (
            "[log]\ntarget = \"file:log.txt\"",
            "proxyha.toml:5:10: log.target = \"file:log.txt\": must be \"syslog\", \"stderr\" or \"file:/absolute/path\"",
        ),
        (
            "[log]\ntarget = \"journal\"",
            "proxyha.toml:5:10: log.target = \"journal\": must be \"syslog\", \"stderr\" or \"file:/absolute/path\"",
        ),
        (
            "[log]\nlevel = \"verbose\"",
            "proxyha.toml:5:9: log.level = \"verbose\": must be \"error\", \"warn\", \"info\", \"debug\" or \"trace\"",
        ),
    ] {
        assert_eq!(error(&format!("{MINIMAL}{text}\n")), expected);
    }
    let long = format!("{MINIMAL}[control]\nsocket = \"/{}\"\n", "a".repeat(107));
    assert!(error(&long).ends_with("must be at most 107 bytes (the Unix socket path limit)"));
    let config = parse(&format!(
        "{MINIMAL}[log]\ntarget = \"stderr\"\nlevel = \"trace\"\n"
    ));
    assert_eq!(config.log.target, LogTarget::Stderr);
    assert_eq!(config.log.level, LevelFilter::Trace);
}

#[test]
fn syntax_errors_have_positions() {
    assert_eq!(
        error("[node]\nname = \"x\"\n[ha\n"),
        "proxyha.toml:3:4: invalid TOML: unclosed table, expected `]`"
    );
    assert!(
        error("[ha]\npriority = 1\npriority = 2\n").starts_with("proxyha.toml:3:1: invalid TOML")
    );
}

#[test]
fn every_problem_is_reported_in_reading_order() {
    let err = error("[ha]\nvirtual_router_id = 0\nlb_id = 0\npriority = 300\nvirtual_ip = \"x\"\n");
    let lines: Vec<&str> = err
        .lines()
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        [
            "proxyha.toml:2:21",
            "proxyha.toml:3:9",
            "proxyha.toml:4:12",
            "proxyha.toml:5:14"
        ]
    );
}

#[test]
fn load_names_the_path_and_the_fix() {
    let err = Config::load(Path::new("/nonexistent/proxyha.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading /nonexistent/proxyha.toml: No such file or directory; create it or pass \
         --config PATH"
    );
}

#[test]
fn vrrp_peers_and_sources() {
    let c = parse(&format!(
        "{MINIMAL}unicast_peers = [\"10.10.74.71\", \"10.10.74.72\"]\nvrrp_sources = [\"10.10.74.73\", \"10.10.74.71\"]\n"
    ));
    assert_eq!(
        c.ha.unicast_peers,
        vec![Ipv4Addr::new(10, 10, 74, 71), Ipv4Addr::new(10, 10, 74, 72)]
    );
    // Union, peers first, no duplicate.
    assert_eq!(
        c.ha.vrrp_allowed_sources(),
        vec![
            Ipv4Addr::new(10, 10, 74, 71),
            Ipv4Addr::new(10, 10, 74, 72),
            Ipv4Addr::new(10, 10, 74, 73)
        ]
    );
    assert!(parse(MINIMAL).ha.vrrp_allowed_sources().is_empty());
    for (line, want) in [
        (
            "unicast_peers = \"10.10.74.71\"",
            "proxyha.toml:4:17: ha.unicast_peers = \"10.10.74.71\": must be a list of the group's node addresses",
        ),
        (
            "unicast_peers = [\"10.10.74.74\"]",
            "proxyha.toml:4:18: ha.unicast_peers[0] = \"10.10.74.74\": is the virtual_ip",
        ),
        (
            "vrrp_sources = [\"10.0.0.1\", \"10.0.0.1\"]",
            "proxyha.toml:4:29: ha.vrrp_sources[1] = \"10.0.0.1\": is listed twice",
        ),
        (
            "vrrp_sources = [\"224.0.0.18\"]",
            "ha.vrrp_sources[0] = \"224.0.0.18\": must be a unicast IPv4 address, not multicast",
        ),
    ] {
        let got = ha_error(line);
        assert!(got.contains(want), "{line}:\n{got}");
    }
    let many: Vec<String> = (1..=17).map(|i| format!("\"10.0.0.{i}\"")).collect();
    let got = ha_error(&format!("unicast_peers = [{}]", many.join(", ")));
    assert!(got.contains("must list at most 16 addresses"), "{got}");
}

#[test]
fn auth_key_file_is_read_by_load_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("proxyha-keyfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("auth.key");
    let conf = dir.join("proxyha.toml");
    let text = format!("{MINIMAL}auth_key_file = \"{}\"\n", key.display());
    std::fs::write(&conf, &text).unwrap();
    let load = || match Config::load(&conf) {
        Ok(c) => Ok(c.ha.auth_key),
        Err(e) => Err(e.to_string()),
    };
    let err = load().unwrap_err();
    assert!(
        err.contains("ha.auth_key_file") && err.contains("proxyha setup"),
        "{err}"
    );
    std::fs::write(&key, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load().unwrap_err();
    assert!(
        err.contains("mode 0644 lets other users read the group's key; run chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        load(),
        Ok(Some("0123456789abcdef0123".to_string())),
        "newline dropped"
    );
    std::fs::write(&key, "short\n").unwrap();
    let err = load().unwrap_err();
    assert!(
        err.contains("(5 bytes): must be a secret of 16 to 255 bytes"),
        "{err}"
    );
    assert!(!err.contains("short"), "the secret is never echoed: {err}");
    // Text only: the path is kept, the file not read.
    let c = parse(&text);
    assert_eq!(c.ha.auth_key_file.as_deref(), Some(key.as_path()));
    assert_eq!(c.ha.auth_key, None);
    // Not both.
    let both = ha_error(&format!(
        "auth_key = \"0123456789abcdef\"\nauth_key_file = \"{}\"",
        key.display()
    ));
    assert!(
        both.contains("set either ha.auth_key or ha.auth_key_file, not both"),
        "{both}"
    );
    assert!(ha_error("auth_key_file = \"auth.key\"").contains("must be an absolute path"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn track_section() {
    let c = parse(&format!(
        "{MINIMAL}[ha.track]\ninterfaces = -20\ngateway = \"fault\"\ngateway_address = \"10.10.74.1\"\nports = -50\n"
    ));
    assert_eq!(
        c.ha.track,
        Track {
            interfaces: Some(Effect::Weight(20)),
            gateway: Some(Effect::Fault),
            gateway_address: Some(Ipv4Addr::new(10, 10, 74, 1)),
            ports: Some(Effect::Weight(50)),
        }
    );
    assert_eq!(c.track_gateway(), Some(Ipv4Addr::new(10, 10, 74, 1)));
    // The gateway defaults to network.gateway; without either it is an error.
    let c = parse(&format!(
        "{MINIMAL}[ha.track]\ngateway = -30\n[network]\naddress = \"10.10.74.70/24\"\ngateway = \"10.10.74.254\"\n"
    ));
    assert_eq!(c.track_gateway(), Some(Ipv4Addr::new(10, 10, 74, 254)));
    let e = error(&format!("{MINIMAL}[ha.track]\ngateway = -30\n"));
    assert!(e.contains("proxyha.toml:5:11: ha.track.gateway: no gateway to probe; set ha.track.gateway_address or network.gateway"), "{e}");
    let e = error(&format!("{MINIMAL}[ha.track]\nports = 20\n"));
    assert!(
        e.contains("ha.track.ports = 20: must be a negative weight -253..=-1"),
        "{e}"
    );
    let e = error(&format!("{MINIMAL}[ha.track]\nport = -20\n"));
    assert!(
        e.contains("unknown key ha.track.port (did you mean ports?)"),
        "{e}"
    );
    let e = error(&format!("{MINIMAL}[ha.track]\ninterfaces = \"down\"\n"));
    assert!(
        e.contains("ha.track.interfaces = \"down\": must be a negative weight"),
        "{e}"
    );
}
