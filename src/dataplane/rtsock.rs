//! Policy routing and the VIP on `lo` over rtnetlink, for the synchronous data-path worker:
//! a current-thread tokio runtime of its own drives one rtnetlink connection, opened in the
//! wanted network namespace. Called on changes only (role, members, mode), never per period.
//!
//! Errors still name the `ip` command that does the same, so an administrator can re-run or
//! inspect it by hand.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::IpProtocol;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};

use super::plan::{LOCAL_TABLE, Route, Rule, Selector};

/// The kernel answers a rule or route request in microseconds; this bounds a stuck one.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A rule as the kernel lists it, sorted into what the data path cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// One of the shapes [`Rule`] describes (fwmark, or from + tcp sport), at any preference.
    Shaped(Rule),
    /// `from all lookup local` at this preference.
    Local(u32),
    /// Anything else (main, default, an administrator's own rules).
    Other,
}

/// Sorts one listed rule (sans-IO, tested without root).
pub fn classify(msg: &RuleMessage) -> Listed {
    if msg.header.family != AddressFamily::Inet || msg.header.action != RuleAction::ToTable {
        return Listed::Other;
    }
    let mut pref = 0;
    let mut table = u32::from(msg.header.table);
    let (mut mark, mut mask, mut src, mut proto, mut sport) = (None, None, None, None, None);
    let mut extra = false;
    for a in &msg.attributes {
        match a {
            RuleAttribute::Priority(p) => pref = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::Source(IpAddr::V4(a)) => src = Some(*a),
            RuleAttribute::IpProtocol(p) => proto = Some(*p),
            RuleAttribute::SourcePortRange(r) => sport = Some((r.start, r.end)),
            // The kernel reports who made a rule, and -1 for the unset suppressors.
            RuleAttribute::Protocol(_) => {}
            RuleAttribute::SuppressPrefixLen(u32::MAX)
            | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
            // Attributes newer than our netlink crate, e.g. Linux 6.15's port masks
            // (FRA_SPORT_MASK, listed as 0xffff when unset): not a selector of ours.
            RuleAttribute::Other(_) => {}
            _ => extra = true,
        }
    }
    let whole_mask = mask.is_none_or(|m| m == u32::MAX);
    let src_host = msg.header.src_len == 32;
    let selector = match (mark, src, proto, sport) {
        _ if extra || msg.header.dst_len != 0 || msg.header.tos != 0 => None,
        (None, None, None, None) if msg.header.src_len == 0 => Some(Selector::All),
        (Some(m), None, None, None) if whole_mask && m != 0 && msg.header.src_len == 0 => {
            Some(Selector::FwMark(m))
        }
        (None, Some(from), Some(IpProtocol::Tcp), Some((lo, hi))) if src_host && lo == hi => {
            Some(Selector::FromTcpSport { from, sport: lo })
        }
        _ => None,
    };
    match selector {
        Some(Selector::All) if table == LOCAL_TABLE => Listed::Local(pref),
        Some(Selector::All) | None => Listed::Other,
        Some(selector) => Listed::Shaped(Rule {
            pref,
            selector,
            table,
        }),
    }
}

/// The message that adds (or, sent as a delete, removes) `r`: what `ip rule add|del` sends.
pub fn rule_message(r: &Rule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.action = RuleAction::ToTable;
    m.header.table = u8::try_from(r.table).unwrap_or(0);
    m.attributes.push(RuleAttribute::Table(r.table));
    m.attributes.push(RuleAttribute::Priority(r.pref));
    match &r.selector {
        Selector::FwMark(mark) => m.attributes.push(RuleAttribute::FwMark(*mark)),
        Selector::FromTcpSport { from, sport } => {
            m.header.src_len = 32;
            m.attributes.push(RuleAttribute::Source(IpAddr::V4(*from)));
            m.attributes
                .push(RuleAttribute::IpProtocol(IpProtocol::Tcp));
            m.attributes
                .push(RuleAttribute::SourcePortRange(RulePortRange {
                    start: *sport,
                    end: *sport,
                }));
        }
        Selector::All => {}
    }
    m
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// One rtnetlink connection and the runtime that drives it. Debug shows nothing inside.
pub struct RtSock {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

impl std::fmt::Debug for RtSock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RtSock")
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("`{what}`: {e}")
}

impl RtSock {
    /// A connection in the network namespace at `netns` (a /run/netns path), or in ours.
    pub fn open_in(netns: Option<&std::path::Path>) -> io::Result<RtSock> {
        super::netns::open_in(netns, RtSock::open)
    }

    pub fn open() -> io::Result<RtSock> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (conn, handle, _) = {
            let _in = rt.enter();
            rtnetlink::new_connection()?
        };
        rt.spawn(conn);
        Ok(RtSock { rt, handle })
    }

    /// Runs one request to its end, bounded by [`TIMEOUT`].
    fn run<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T, String> {
        match self
            .rt
            .block_on(async move { tokio::time::timeout(TIMEOUT, f).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failed(what, e)),
            Err(_) => Err(failed(what, format!("no answer within {TIMEOUT:?}"))),
        }
    }

    /// Every IPv4 rule, sorted (`ip rule show`).
    pub fn rules(&self) -> Result<Vec<Listed>, String> {
        let req = self.handle.rule().get(IpVersion::V4).execute();
        let msgs: Vec<RuleMessage> = self.run("ip rule show", req.try_collect())?;
        Ok(msgs.iter().map(classify).collect())
    }

    pub fn add_rule(&self, r: &Rule) -> Result<(), String> {
        let mut req = self.handle.rule().add().v4();
        *req.message_mut() = rule_message(r);
        let what = format!("ip rule add {}", r.ip_args().join(" "));
        self.run(&what, req.execute())
    }

    pub fn del_rule(&self, r: &Rule) -> Result<(), String> {
        let req = self.handle.rule().del(rule_message(r));
        let what = format!("ip rule del {}", r.ip_args().join(" "));
        self.run(&what, req.execute())
    }

    fn link_index(&self, name: &str) -> Result<u32, String> {
        let what = format!("ip link show {name}");
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match self.run(&what, links.try_next())? {
            Some(l) => Ok(l.header.index),
            None => Err(failed(&what, "no such interface")),
        }
    }

    /// `ip route replace default via GATEWAY dev DEV table TABLE`.
    pub fn replace_route(&self, r: &Route) -> Result<(), String> {
        let index = self.link_index(&r.dev)?;
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(r.table)
            .gateway(r.gateway)
            .output_interface(index)
            .build();
        let what = format!("ip route replace {}", r.ip_args().join(" "));
        self.run(&what, self.handle.route().add(msg).replace().execute())
    }

    /// `ip route flush table TABLE`: every IPv4 route of that table goes.
    pub fn flush_table(&self, table: u32) -> Result<(), String> {
        let what = format!("ip route flush table {table}");
        let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let req = self.handle.route().get(query).execute();
        let routes: Vec<RouteMessage> = self.run(&what, req.try_collect())?;
        for r in routes.into_iter().filter(|r| route_table(r) == table) {
            match self.run(&what, self.handle.route().del(r).execute()) {
                // Gone meanwhile: goal met.
                Err(e) if e.contains("No such process") => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// `ip addr replace VIP/32 dev lo`, or removes it (absent is fine).
    pub fn vip_on_lo(&self, vip: Ipv4Addr, on: bool) -> Result<(), String> {
        let lo = self.link_index("lo")?;
        if on {
            let what = format!("ip addr replace {vip}/32 dev lo");
            let req = self.handle.address().add(lo, IpAddr::V4(vip), 32).replace();
            return self.run(&what, req.execute());
        }
        let what = format!("ip addr del {vip}/32 dev lo");
        let req = self
            .handle
            .address()
            .get()
            .set_link_index_filter(lo)
            .execute();
        let addrs: Vec<AddressMessage> = self.run(&what, req.try_collect())?;
        let ours = addrs.into_iter().filter(|a| {
            a.header.prefix_len == 32
                && a.attributes
                    .contains(&AddressAttribute::Address(IpAddr::V4(vip)))
        });
        for a in ours {
            self.run(&what, self.handle.address().del(a).execute())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwmark(pref: u32, mark: u32) -> Rule {
        Rule {
            pref,
            selector: Selector::FwMark(mark),
            table: mark,
        }
    }

    #[test]
    fn what_we_send_classifies_back_as_the_same_rule() {
        let rules = [
            fwmark(100, 0x0a58_0002),
            Rule {
                pref: 101,
                selector: Selector::FromTcpSport {
                    from: Ipv4Addr::new(10, 88, 0, 2),
                    sport: 3128,
                },
                table: 173_539_329,
            },
        ];
        for r in rules {
            assert_eq!(classify(&rule_message(&r)), Listed::Shaped(r));
        }
        let local = Rule {
            pref: 200,
            selector: Selector::All,
            table: LOCAL_TABLE,
        };
        assert_eq!(classify(&rule_message(&local)), Listed::Local(200));
    }

    #[test]
    fn the_kernels_own_listing_of_local_and_main_classifies() {
        // What Linux 6.1 lists for `0: from all lookup local` and `32766: from all lookup main`.
        let mut local = RuleMessage::default();
        local.header.family = AddressFamily::Inet;
        local.header.action = RuleAction::ToTable;
        local.header.table = 255;
        local.attributes = vec![
            RuleAttribute::Table(255),
            RuleAttribute::SuppressPrefixLen(u32::MAX),
            RuleAttribute::Protocol(rtnetlink::packet_route::route::RouteProtocol::Kernel),
        ];
        assert_eq!(classify(&local), Listed::Local(0));
        let mut main = local.clone();
        main.header.table = 254;
        main.attributes[0] = RuleAttribute::Table(254);
        main.attributes.push(RuleAttribute::Priority(32766));
        assert_eq!(classify(&main), Listed::Other);
        // A suppressor that is set makes a rule not ours.
        let mut fw = rule_message(&fwmark(100, 7));
        fw.attributes.push(RuleAttribute::SuppressPrefixLen(0));
        assert_eq!(classify(&fw), Listed::Other);
    }

    #[test]
    fn other_rules_are_left_alone() {
        // `from all lookup main`, a masked fwmark, a port range, a /24 source: not ours.
        let main = Rule {
            pref: 32766,
            selector: Selector::All,
            table: 254,
        };
        assert_eq!(classify(&rule_message(&main)), Listed::Other);
        let mut masked = rule_message(&fwmark(100, 7));
        masked.attributes.push(RuleAttribute::FwMask(0xff));
        assert_eq!(classify(&masked), Listed::Other);
        let mut range = rule_message(&Rule {
            pref: 101,
            selector: Selector::FromTcpSport {
                from: Ipv4Addr::new(10, 0, 0, 1),
                sport: 80,
            },
            table: 9,
        });
        range
            .attributes
            .retain(|a| !matches!(a, RuleAttribute::SourcePortRange(_)));
        range
            .attributes
            .push(RuleAttribute::SourcePortRange(RulePortRange {
                start: 80,
                end: 90,
            }));
        assert_eq!(classify(&range), Listed::Other);
        let mut subnet = rule_message(&fwmark(100, 7));
        subnet.header.src_len = 24;
        assert_eq!(classify(&subnet), Listed::Other);
        // A newer kernel's listing adds attributes our crate does not know (a full port
        // mask here, kind 28 on Linux 6.x): still ours.
        let sport = Rule {
            pref: 101,
            selector: Selector::FromTcpSport {
                from: Ipv4Addr::new(10, 88, 0, 2),
                sport: 9090,
            },
            table: 1234,
        };
        let mut newer = rule_message(&sport);
        newer.header.table = 252;
        newer
            .attributes
            .push(RuleAttribute::Other(netlink_packet_core::DefaultNla::new(
                28,
                vec![255, 255],
            )));
        assert_eq!(classify(&newer), Listed::Shaped(sport));
        let mut iif = rule_message(&fwmark(100, 7));
        iif.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(classify(&iif), Listed::Other);
        let mut v6 = rule_message(&fwmark(100, 7));
        v6.header.family = AddressFamily::Inet6;
        assert_eq!(classify(&v6), Listed::Other);
    }
}
