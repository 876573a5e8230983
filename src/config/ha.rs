//! `[ha]`: the group's VRRP instance, its load sharing and who may speak in it.

use std::net::Ipv4Addr;

use toml::de::DeValue;

use super::*;

const KEY_RULE: &str = "must be a secret of 16 to 255 bytes, the same on every node of the group";

impl Cx<'_> {
    pub(super) fn ha(
        &mut self,
        s: &Section<'_, '_>,
        management_ip: Option<Ipv4Addr>,
    ) -> Option<Ha> {
        let interface = match s.get("interface") {
            Some(v) => self.interface(v),
            None => Some("eth0".to_string()),
        };
        let virtual_ip = match s.get("virtual_ip") {
            Some(v) => self.ipv4("ha.virtual_ip", v).and_then(|vip| {
                if Some(vip) == management_ip {
                    self.bad(
                        "ha.virtual_ip",
                        v,
                        "must differ from node.management_ip (each node keeps its own address; \
                         the VIP moves between nodes)",
                    );
                    None
                } else {
                    Some(vip)
                }
            }),
            None => {
                self.required(
                    s,
                    "virtual_ip",
                    "the address clients use, shared by the group, e.g. virtual_ip = \"10.10.74.74\"",
                );
                None
            }
        };
        let id = |cx: &mut Self, key: &str, name: &str| -> Option<u8> {
            match s.get(key) {
                Some(v) => cx
                    .int_in(name, v, 1..=255, "must be 1..=255")
                    .map(|n| n as u8),
                None => Some(51),
            }
        };
        let virtual_router_id = id(self, "virtual_router_id", "ha.virtual_router_id");
        let lb_id = id(self, "lb_id", "ha.lb_id");
        let priority = match s.get("priority") {
            Some(v) => self
                .int_in(
                    "ha.priority",
                    v,
                    0..=254,
                    "must be 0..=254 (255 is reserved for the address owner; \
                     1..=254 makes a director candidate, 0 a scanning node only)",
                )
                .map(|n| n as u8),
            None => {
                self.required(
                    s,
                    "priority",
                    "choose 1..=254 for a director candidate (the highest wins) \
                     or 0 for a scanning node only",
                );
                None
            }
        };
        let preempt = match s.get("preempt") {
            Some(v) => self.boolean("ha.preempt", v),
            None => Some(true),
        };
        let vrrp_version = match s.get("vrrp_version") {
            Some(v) => match self.int_in("ha.vrrp_version", v, 2..=3, "must be 2 or 3") {
                Some(2) => Some(Version::V2),
                Some(_) => Some(Version::V3),
                None => None,
            },
            None => Some(Version::V3),
        };
        let advert_interval_ms = match (s.get("advert_interval_ms"), vrrp_version) {
            (None, _) => Some(1000),
            // Without a valid version we cannot know the rule; the version error stands alone.
            (Some(_), None) => None,
            (Some(v), Some(version)) => self.advert_interval(v, version),
        };
        let vrrp_checksum = match s.get("vrrp_checksum") {
            Some(v) => {
                const RULE: &str = "must be \"pseudo-header\" or \"vrrp-only\"";
                match self.string("ha.vrrp_checksum", v, RULE) {
                    Some("pseudo-header") => Some(ChecksumMode::PseudoHeader),
                    Some("vrrp-only") => Some(ChecksumMode::VrrpOnly),
                    Some(_) => {
                        self.bad("ha.vrrp_checksum", v, RULE);
                        None
                    }
                    None => None,
                }
            }
            None => Some(ChecksumMode::PseudoHeader),
        };
        let port_redirects = match s.get("port_redirects") {
            Some(v) => self.port_redirects(v),
            None => Some(Vec::new()),
        };
        let sticky_idle_s = match s.get("sticky_idle_s") {
            Some(v) => self
                .int_in("ha.sticky_idle_s", v, 1..=86400, "must be 1..=86400")
                .map(|n| n as u32),
            None => Some(300),
        };
        let mode = match s.get("mode") {
            Some(v) => {
                const RULE: &str = "must be \"direct\" or \"nat\"";
                match self.string("ha.mode", v, RULE) {
                    Some("direct") => Some(Mode::Direct),
                    Some("nat") => Some(Mode::Nat),
                    Some(_) => {
                        self.bad("ha.mode", v, RULE);
                        None
                    }
                    None => None,
                }
            }
            None => Some(Mode::Direct),
        };
        let inline_key = match s.get("auth_key") {
            Some(v) => match self.string("ha.auth_key", v, KEY_RULE) {
                Some(k) => self.secret("ha.auth_key", v, k).map(Some),
                None => None,
            },
            None => Some(None),
        };
        let key_file = match s.get("auth_key_file") {
            Some(v) => self.key_file(v).map(Some),
            None => Some(None),
        };
        let (auth_key, auth_key_file) = match (inline_key, key_file, s.get("auth_key_file")) {
            (Some(Some(_)), Some(Some(_)), Some(v)) => {
                self.bad(
                    "ha.auth_key_file",
                    v,
                    "set either ha.auth_key or ha.auth_key_file, not both",
                );
                (None, None)
            }
            (Some(None), Some(Some((path, key))), _) => (Some(key), Some(Some(path))),
            (Some(key), Some(None), _) => (Some(key), Some(None)),
            _ => (None, None),
        };
        let drain = match s.get("drain") {
            Some(v) => {
                const RULE: &str = "must be \"port\" (a failed listener leaves its port's pool) or \"node\" (the whole node leaves)";
                match self.string("ha.drain", v, RULE) {
                    Some("port") => Some(Drain::Port),
                    Some("node") => Some(Drain::Node),
                    Some(_) => {
                        self.bad("ha.drain", v, RULE);
                        None
                    }
                    None => None,
                }
            }
            None => Some(Drain::Port),
        };
        let unicast_peers = match s.get("unicast_peers") {
            Some(v) => self.vrrp_addresses("ha.unicast_peers", v, virtual_ip),
            None => Some(Vec::new()),
        };
        let vrrp_sources = match s.get("vrrp_sources") {
            Some(v) => self.vrrp_addresses("ha.vrrp_sources", v, virtual_ip),
            None => Some(Vec::new()),
        };
        let track = match s.get("track") {
            Some(v) => self.track(v).map(|(t, gateway_at)| {
                if t.gateway_address.is_none() {
                    self.track_gateway_at = gateway_at;
                }
                t
            }),
            None => Some(Track::default()),
        };
        let rt_priority = match s.get("rt_priority") {
            Some(v) => self
                .int_in(
                    "ha.rt_priority",
                    v,
                    1..=99,
                    "must be a SCHED_FIFO priority 1..=99 (keepalived's vrrp_rt_priority; leave it \
                     out for normal scheduling)",
                )
                .map(|n| Some(n as u8)),
            None => Some(None),
        };
        let lock_memory = match s.get("lock_memory") {
            Some(v) => self.boolean("ha.lock_memory", v),
            None => Some(false),
        };
        Some(Ha {
            interface: interface?,
            virtual_ip: virtual_ip?,
            virtual_router_id: virtual_router_id?,
            lb_id: lb_id?,
            priority: priority?,
            advert_interval_ms: advert_interval_ms?,
            preempt: preempt?,
            vrrp_version: vrrp_version?,
            vrrp_checksum: vrrp_checksum?,
            port_redirects: port_redirects?,
            sticky_idle_s: sticky_idle_s?,
            mode: mode?,
            auth_key: auth_key?,
            auth_key_file: auth_key_file?,
            drain: drain?,
            unicast_peers: unicast_peers?,
            vrrp_sources: vrrp_sources?,
            track: track?,
            rt_priority: rt_priority?,
            lock_memory: lock_memory?,
        })
    }

    /// A key of 16 to 255 bytes; never echoed, not even a wrong one: its length is enough.
    fn secret(&mut self, key: &str, v: &Value<'_>, secret: &str) -> Option<String> {
        if (16..=255).contains(&secret.len()) {
            Some(secret.to_string())
        } else {
            self.error(
                v.span(),
                format!("{key} ({} bytes): {KEY_RULE}", secret.len()),
            );
            None
        }
    }

    /// `ha.auth_key_file`: an absolute path; when loading, the file is read (trailing
    /// newline dropped) and must be readable by its owner only. `Some((path, None))` when
    /// parsing text only.
    fn key_file(&mut self, v: &Value<'_>) -> Option<(PathBuf, Option<String>)> {
        const RULE: &str =
            "must be an absolute path such as \"/etc/proxyha/auth.key\" (proxyha setup writes one)";
        let text = self.string("ha.auth_key_file", v, RULE)?;
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            self.bad("ha.auth_key_file", v, RULE);
            return None;
        }
        if !self.read_files {
            return Some((path, None));
        }
        use std::os::unix::fs::MetadataExt;
        let shown = path.display().to_string();
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                let why = format_args!(
                    "{}; create it with `proxyha setup`, or `head -c 32 /dev/urandom | base64 > {shown}` then chmod 600",
                    io_reason(&e)
                );
                self.bad("ha.auth_key_file", v, why);
                return None;
            }
        };
        if meta.mode() & 0o077 != 0 {
            let why = format_args!(
                "mode {:04o} lets other users read the group's key; run chmod 600 {shown}",
                meta.mode() & 0o7777
            );
            self.bad("ha.auth_key_file", v, why);
            return None;
        }
        let content = match std::fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) => {
                let why = format_args!("{}; the key must be text", io_reason(&e));
                self.bad("ha.auth_key_file", v, why);
                return None;
            }
        };
        let key = content.strip_suffix('\n').unwrap_or(&content);
        let key = key.strip_suffix('\r').unwrap_or(key);
        self.secret(&format!("ha.auth_key_file {shown}"), v, key)
            .map(|k| (path, Some(k)))
    }

    /// `ha.unicast_peers` / `ha.vrrp_sources`: distinct unicast addresses of the group's
    /// nodes, never the VIP. This node's own address may be listed (one list for every node).
    fn vrrp_addresses(
        &mut self,
        key: &str,
        v: &Value<'_>,
        vip: Option<Ipv4Addr>,
    ) -> Option<Vec<Ipv4Addr>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.bad(
                key,
                v,
                "must be a list of the group's node addresses, e.g. [\"10.10.74.71\", \"10.10.74.72\"]",
            );
            return None;
        };
        if items.len() > MAX_VRRP_PEERS {
            self.bad(
                key,
                v,
                format_args!(
                    "must list at most {MAX_VRRP_PEERS} addresses (a group has 2 to 8 nodes)"
                ),
            );
            return None;
        }
        let mut out: Vec<Ipv4Addr> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let name = format!("{key}[{i}]");
            match self.ipv4(&name, item) {
                Some(a) if Some(a) == vip => {
                    self.bad(
                        &name,
                        item,
                        "is the virtual_ip: list each node's own address, the VIP moves between them",
                    );
                    ok = false;
                }
                Some(a) if out.contains(&a) => {
                    self.bad(&name, item, "is listed twice");
                    ok = false;
                }
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn interface(&mut self, v: &Value<'_>) -> Option<String> {
        self.ifname("ha.interface", v)
    }

    fn advert_interval(&mut self, v: &Value<'_>, version: Version) -> Option<u32> {
        // v3 carries centiseconds in 12 bits (RFC 9568 §5.2.7); v2 whole seconds in 8 bits
        // (RFC 3768 §5.3.7).
        let (step, range, rule) = match version {
            Version::V3 => (10, 10..=40950, "must be a multiple of 10 in 10..=40950"),
            Version::V2 => (
                1000,
                1000..=255000,
                "must be a multiple of 1000 in 1000..=255000 with vrrp_version = 2",
            ),
        };
        let ms = self.int_in("ha.advert_interval_ms", v, range, rule)?;
        if ms % step != 0 {
            self.bad("ha.advert_interval_ms", v, rule);
            return None;
        }
        Some(ms as u32)
    }

    fn port_redirects(&mut self, v: &Value<'_>) -> Option<Vec<PortRedirect>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.bad(
                "ha.port_redirects",
                v,
                "must be a list of ports or { port = N, to = M } tables, e.g. [9090, 2121]",
            );
            return None;
        };
        let mut out: Vec<PortRedirect> = Vec::new();
        let mut first_index: Vec<usize> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let key = format!("ha.port_redirects[{i}]");
            let Some((redirect, port_value)) = self.port_redirect(&key, item) else {
                ok = false;
                continue;
            };
            if let Some(j) = out.iter().position(|r| r.port == redirect.port) {
                let shown = if matches!(item.get_ref(), DeValue::Table(_)) {
                    format!("{key}.port")
                } else {
                    key
                };
                self.bad(
                    &shown,
                    port_value,
                    format_args!(
                        "duplicate port (also ha.port_redirects[{}]); redirect each port once",
                        first_index[j]
                    ),
                );
                ok = false;
                continue;
            }
            out.push(redirect);
            first_index.push(i);
        }
        ok.then_some(out)
    }

    /// One entry: `9090` or `{ port = 80, to = 9090 }` (`to` defaults to `port`). Returns
    /// the redirect and the value holding its original port (for duplicate errors).
    fn port_redirect<'a, 'i>(
        &mut self,
        key: &str,
        item: &'a Value<'i>,
    ) -> Option<(PortRedirect, &'a Value<'i>)> {
        const PORT: &str = "must be 1..=65535";
        match item.get_ref() {
            DeValue::Integer(_) => {
                let port = self.int_in(key, item, 1..=65535, PORT)? as u16;
                Some((PortRedirect { port, to: port }, item))
            }
            DeValue::Table(table) => {
                let clean = self.unknown_keys(table, key, key, REDIRECT_KEYS);
                let port_key = format!("{key}.port");
                let Some(port_value) = table.get("port") else {
                    self.error(
                        item.span(),
                        format!("{port_key} is required, e.g. {{ port = 80, to = 9090 }}"),
                    );
                    return None;
                };
                let port = self.int_in(&port_key, port_value, 1..=65535, PORT);
                let to = match table.get("to") {
                    Some(v) => self.int_in(&format!("{key}.to"), v, 1..=65535, PORT),
                    None => port,
                };
                if !clean {
                    return None;
                }
                Some((
                    PortRedirect {
                        port: port? as u16,
                        to: to? as u16,
                    },
                    port_value,
                ))
            }
            _ => {
                self.bad(
                    key,
                    item,
                    "must be a port (1..=65535) or { port = N, to = M }",
                );
                None
            }
        }
    }
}
