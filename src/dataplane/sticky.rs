//! Reading the kernel's `sticky` map back (`nft -j list map ip proxyha sticky`): the live
//! (client, port) → node pins a standby director replicates.

use std::net::Ipv4Addr;

use serde_json::Value;

/// One pin. `mark` is the node's address as u32 (see the module docs of `dataplane`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StickyEntry {
    pub client: Ipv4Addr,
    /// The redirected (VIP-side) port: pins are per client and port, so a port that fails
    /// on one node moves only that port's clients.
    pub port: u16,
    pub mark: u32,
    /// Time left before the pin expires if the client stays silent. Relative, because
    /// directors' clocks differ.
    pub expires_ms: u64,
}

impl StickyEntry {
    /// The node the pin sends the client to.
    pub fn node(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mark)
    }
}

/// Parses the JSON dump of the sticky map. Elements that do not parse (an unexpected type,
/// an IPv6 key) are skipped rather than failing the whole dump: a pin lost costs one client
/// a new bucket, a failed dump costs every client. Only malformed JSON is an error.
///
/// nft 1.0.6 prints `expires` in whole seconds; later versions may print fractions; both
/// are accepted. An element without an expiry (never the case for a `timeout` map) reads
/// as expiring now.
pub fn parse_sticky_dump(json: &str) -> Result<Vec<StickyEntry>, String> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| format!("parsing the sticky map dump as JSON: {e}"))?;
    let mut out = Vec::new();
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("parsing the sticky map dump: no top-level \"nftables\" array")?;
    for item in items {
        let Some(elems) = item
            .get("map")
            .and_then(|m| m.get("elem"))
            .and_then(Value::as_array)
        else {
            continue;
        };
        out.extend(elems.iter().filter_map(parse_elem));
    }
    Ok(out)
}

fn parse_elem(e: &Value) -> Option<StickyEntry> {
    let pair = e.as_array()?;
    let (key, data) = (pair.first()?, pair.get(1)?);
    // `{"elem": {"val": KEY, "expires": S}}`, or KEY alone; KEY = `{"concat": [ADDR, PORT]}`.
    let (val, expires) = match key.get("elem") {
        Some(inner) => (
            inner.get("val")?,
            inner.get("expires").and_then(Value::as_f64),
        ),
        None => (key, None),
    };
    let parts = val.get("concat")?.as_array()?;
    let client: Ipv4Addr = parts.first()?.as_str()?.parse().ok()?;
    let port = u16::try_from(parts.get(1)?.as_u64()?).ok()?;
    let mark = match data {
        Value::Number(n) => u32::try_from(n.as_u64()?).ok()?,
        Value::String(s) => {
            let hex = s.strip_prefix("0x")?;
            u32::from_str_radix(hex, 16).ok()?
        }
        _ => return None,
    };
    let expires_ms = expires
        .filter(|x| x.is_finite() && *x > 0.0)
        .map_or(0, |s| (s * 1000.0).round() as u64);
    Some(StickyEntry {
        client,
        port,
        mark,
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `nft -j list map ip proxyha sticky` from nft 1.0.6 on this machine.
    const DUMP: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"map": {"family": "ip", "name": "sticky", "table": "proxyha", "type": ["ipv4_addr", "inet_service"], "handle": 1, "map": "mark", "size": 262144, "flags": ["timeout"], "elem": [[{"elem": {"val": {"concat": ["10.88.1.5", 9090]}, "timeout": 300, "expires": 119}}, 173539330], [{"elem": {"val": {"concat": ["10.88.1.6", 2121]}, "timeout": 300, "expires": 0.25}}, "0x0a580003"], [{"concat": ["10.88.1.7", 9090]}, 173539329], [{"elem": {"val": {"concat": ["::1", 9090]}, "expires": 3}}, 1], [{"elem": {"val": {"concat": ["10.88.1.8", 70000]}, "expires": 3}}, 1], [{"elem": {"val": "10.88.1.9", "expires": 3}}, 1], [{"elem": {"val": {"concat": ["10.88.1.8", 9090]}, "expires": 3}}, -4]]}}]}"#;

    #[test]
    fn parses_elements_with_expiry() {
        let got = parse_sticky_dump(DUMP).unwrap();
        assert_eq!(
            got,
            vec![
                StickyEntry {
                    client: Ipv4Addr::new(10, 88, 1, 5),
                    port: 9090,
                    mark: 0x0a58_0002,
                    expires_ms: 119_000
                },
                StickyEntry {
                    client: Ipv4Addr::new(10, 88, 1, 6),
                    port: 2121,
                    mark: 0x0a58_0003,
                    expires_ms: 250
                },
                StickyEntry {
                    client: Ipv4Addr::new(10, 88, 1, 7),
                    port: 9090,
                    mark: 0x0a58_0001,
                    expires_ms: 0
                },
            ]
        );
        assert_eq!(got[0].node(), Ipv4Addr::new(10, 88, 0, 2));
    }

    #[test]
    fn empty_map_and_bad_input() {
        let empty = r#"{"nftables": [{"metainfo": {}}, {"map": {"name": "sticky"}}]}"#;
        assert_eq!(parse_sticky_dump(empty).unwrap(), vec![]);
        assert!(
            parse_sticky_dump("not json")
                .unwrap_err()
                .contains("as JSON")
        );
        assert!(parse_sticky_dump("{}").unwrap_err().contains("nftables"));
        for junk in [
            "[]",
            "{\"nftables\": [1, null, {\"map\": {\"elem\": [[]]}}]}",
        ] {
            let _ = parse_sticky_dump(junk);
        }
    }
}
