//! Faults the lab bridge can inject (issue 12): multicast (and broadcast) dropped as VMware,
//! Hyper-V and clouds drop it, and partitions between groups of hosts. One nftables table
//! in the bridge namespace (`bridge proxyha_lab`), gone with the namespace at teardown.

use std::io;
use std::net::Ipv4Addr;

use super::{Lab, run};

const TABLE: &str = "proxyha_lab";

impl Lab {
    fn bridge_ns(&self) -> String {
        format!("{}br", self.prefix())
    }

    fn nft(&self, script: &str) -> io::Result<String> {
        let path = self.dir().join("filter.nft");
        std::fs::write(&path, script)?;
        let ns = self.bridge_ns();
        run(
            "ip",
            &["netns", "exec", &ns, "nft", "-f", &path.to_string_lossy()],
        )
    }

    /// Declares the table and its two forward chains (idempotent: `table { … }` adds): the
    /// partition's own, hooked first, and the one for the multicast rules.
    fn ensure_table(&self) -> io::Result<()> {
        self.nft(&format!(
            "table bridge {TABLE} {{\n\
             \x20 chain partition {{ type filter hook forward priority -1; policy accept; }}\n\
             \x20 chain forward {{ type filter hook forward priority 0; policy accept; }}\n}}\n"
        ))
        .map(|_| ())
    }

    /// Drops IPv4 multicast (224.0.0.0/4, so VRRP's 224.0.0.18) between hosts, and with
    /// `broadcast` also the limited broadcast (membership announcements); ARP still passes.
    pub fn drop_multicast(&self, broadcast: bool) -> io::Result<()> {
        self.ensure_table()?;
        // VRRP counted apart (what the tests judge); IGMP and other groups dropped too.
        let mut rules = format!(
            "add rule bridge {TABLE} forward ip daddr 224.0.0.0/4 ip protocol vrrp counter drop comment \"multicast\"\n\
             add rule bridge {TABLE} forward ip daddr 224.0.0.0/4 drop\n"
        );
        if broadcast {
            rules.push_str(&format!(
                "add rule bridge {TABLE} forward ip daddr 255.255.255.255 counter drop comment \"broadcast\"\n"
            ));
        }
        self.nft(&rules).map(|_| ())
    }

    /// Makes the bridge a hub (it never learns addresses, so it floods unicast to every
    /// port): a host on the segment then sees the traffic between others, as on a shared or
    /// mirrored segment an attacker would.
    pub fn hub(&self) -> io::Result<()> {
        let ns = self.bridge_ns();
        run(
            "ip",
            &[
                "-n",
                &ns,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "ageing_time",
                "0",
            ],
        )
        .map(|_| ())
    }

    /// Packets the bridge dropped so far by rules whose comment is `what`
    /// ("multicast": VRRP to 224.0.0.18, "broadcast", "partition").
    pub fn dropped(&self, what: &str) -> io::Result<u64> {
        let ns = self.bridge_ns();
        let out = run(
            "ip",
            &[
                "netns", "exec", &ns, "nft", "-j", "list", "table", "bridge", TABLE,
            ],
        )?;
        let doc: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::other(format!("nft -j list: {e}")))?;
        let mut total = 0;
        for item in doc["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            if rule["comment"].as_str() != Some(what) {
                continue;
            }
            for e in rule["expr"].as_array().into_iter().flatten() {
                total += e["counter"]["packets"].as_u64().unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Drops all traffic between the hosts of `a` and those of `b` (names), both ways,
    /// until [`Lab::heal`]; each side still reaches its own hosts.
    pub fn partition(&self, a: &[&str], b: &[&str]) -> io::Result<()> {
        self.ensure_table()?;
        let set = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("\"v{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (sa, sb) = (set(a), set(b));
        self.nft(&format!(
            "flush chain bridge {TABLE} partition\n\
             add rule bridge {TABLE} partition iifname {{ {sa} }} oifname {{ {sb} }} counter drop comment \"partition\"\n\
             add rule bridge {TABLE} partition iifname {{ {sb} }} oifname {{ {sa} }} counter drop comment \"partition\"\n"
        ))
        .map(|_| ())
    }

    /// Ends a [`Lab::partition`].
    pub fn heal(&self) -> io::Result<()> {
        self.nft(&format!("flush chain bridge {TABLE} partition\n"))
            .map(|_| ())
    }
}

/// An IPv4 datagram (header + `payload`) from `src` to `dst`, for [`super::inject`].
pub fn datagram(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; proxyha::wire::ipv4::MIN_HEADER_LEN + payload.len()];
    let header = proxyha::wire::ipv4::Header {
        src,
        dst,
        ttl,
        protocol,
    };
    proxyha::wire::ipv4::emit(&mut buf, &header, 0x4243, payload.len());
    buf[proxyha::wire::ipv4::MIN_HEADER_LEN..].copy_from_slice(payload);
    buf
}
