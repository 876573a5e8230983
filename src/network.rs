//! The appliance's network, sans-IO: what to change, given the `[network]` section and what the
//! kernel has now ([`plan`]), and the bond's state for status and its log lines ([`BondStatus`],
//! [`bond_changes`]). The daemon shell reads links and addresses over rtnetlink and carries out
//! the [`Step`]s; nothing here touches the kernel or a file.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::{BondMode, Network};

/// A link as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND ("bond", "veth", …); `None` for a plain NIC.
    pub kind: Option<String>,
    /// The bond's mode, when `kind` is "bond".
    pub bond_mode: Option<u8>,
    /// The bond's active slave (IFLA_BOND_ACTIVE_SLAVE), when `kind` is "bond".
    pub active_slave: Option<u32>,
    /// IFLA_MASTER: the bond (or bridge) this link is enslaved to.
    pub master: Option<u32>,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_LOWER_UP: carrier.
    pub lower_up: bool,
}

/// An IPv4 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// What the kernel and the files hold now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub hostname: String,
    /// /etc/resolv.conf's text, `None` if unreadable.
    pub resolv_conf: Option<String>,
}

impl Current {
    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// One change, in the order [`plan`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A link of the bond's name that is not a bond of the wanted mode (modes cannot change
    /// while slaves are attached).
    DeleteLink {
        name: String,
    },
    CreateBond {
        name: String,
        mode: BondMode,
    },
    /// The kernel refuses to enslave a link that is up.
    SetDown {
        name: String,
    },
    Enslave {
        slave: String,
        bond: String,
    },
    SetUp {
        name: String,
    },
    /// An address this config does not want on the interface (the VIP, a /32, is the VRRP
    /// core's business and is never touched here).
    RemoveAddress {
        interface: String,
        addr: Ipv4Addr,
        prefix: u8,
    },
    AddAddress {
        interface: String,
        addr: Ipv4Addr,
        prefix: u8,
    },
    /// Idempotent (NLM_F_REPLACE): always part of the plan when a gateway is set.
    ReplaceDefaultRoute {
        gateway: Ipv4Addr,
        interface: String,
    },
    /// Written atomically (temp, fsync, rename).
    WriteResolvConf {
        text: String,
    },
    SetHostname {
        name: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DeleteLink { name } => write!(f, "deleting link {name}"),
            Step::CreateBond { name, mode } => write!(f, "creating bond {name} (mode {mode})"),
            Step::SetDown { name } => write!(f, "setting {name} down"),
            Step::Enslave { slave, bond } => write!(f, "enslaving {slave} to {bond}"),
            Step::SetUp { name } => write!(f, "setting {name} up"),
            Step::RemoveAddress {
                interface,
                addr,
                prefix,
            } => write!(f, "removing {addr}/{prefix} from {interface}"),
            Step::AddAddress {
                interface,
                addr,
                prefix,
            } => write!(f, "adding {addr}/{prefix} to {interface}"),
            Step::ReplaceDefaultRoute { gateway, interface } => {
                write!(f, "setting the default route via {gateway} dev {interface}")
            }
            Step::WriteResolvConf { .. } => write!(f, "writing /etc/resolv.conf"),
            Step::SetHostname { name } => write!(f, "setting the host name to {name}"),
        }
    }
}

/// Why the network cannot be applied as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "network.interface {0}: no such interface; set it to one of: {1} (or configure network.bond)"
    )]
    NoInterface(String, String),
    #[error("network.bond.slaves: interface {0} not found; the NICs here are: {1}")]
    NoSlave(String, String),
    #[error(
        "network.bond.slaves: {slave} is already enslaved to {master}; remove it from there or from the list"
    )]
    SlaveTaken { slave: String, master: String },
}

/// The resolv.conf text for `dns`.
pub fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    let mut text = String::from("# written by proxyha from [network] dns\n");
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

/// The steps that take `current` to what `net` asks for; empty when nothing differs (apart
/// from the always-replaced default route). `node_name` is the host name without
/// `network.hostname`.
pub fn plan(net: &Network, node_name: &str, current: &Current) -> Result<Vec<Step>, PlanError> {
    let mut steps = Vec::new();
    let nics = || {
        let mut names: Vec<&str> = current
            .links
            .iter()
            .filter(|l| l.name != "lo")
            .map(|l| l.name.as_str())
            .collect();
        names.sort_unstable();
        names.join(", ")
    };
    if let Some(bond) = &net.bond {
        let existing = current.link(&bond.name);
        let fresh = match existing {
            None => true,
            Some(l)
                if l.kind.as_deref() == Some("bond") && l.bond_mode == Some(bond.mode as u8) =>
            {
                false
            }
            Some(_) => {
                steps.push(Step::DeleteLink {
                    name: bond.name.clone(),
                });
                true
            }
        };
        if fresh {
            steps.push(Step::CreateBond {
                name: bond.name.clone(),
                mode: bond.mode,
            });
        }
        let bond_index = existing.filter(|_| !fresh).map(|l| l.index);
        for slave in &bond.slaves {
            let Some(link) = current.link(slave) else {
                return Err(PlanError::NoSlave(slave.clone(), nics()));
            };
            if link.master.is_some() && link.master == bond_index {
                continue;
            }
            if let Some(master) = link.master
                && existing.is_none_or(|b| b.index != master)
            {
                let master = current
                    .links
                    .iter()
                    .find(|l| l.index == master)
                    .map_or_else(|| format!("#{master}"), |l| l.name.clone());
                return Err(PlanError::SlaveTaken {
                    slave: slave.clone(),
                    master,
                });
            }
            // Addresses a slave carries would be unreachable behind the bond.
            for a in current.addresses.iter().filter(|a| a.index == link.index) {
                steps.push(Step::RemoveAddress {
                    interface: slave.clone(),
                    addr: a.addr,
                    prefix: a.prefix,
                });
            }
            if link.admin_up {
                steps.push(Step::SetDown {
                    name: slave.clone(),
                });
            }
            steps.push(Step::Enslave {
                slave: slave.clone(),
                bond: bond.name.clone(),
            });
            steps.push(Step::SetUp {
                name: slave.clone(),
            });
        }
    }

    // A bond created by this plan has no state yet: everything below is to be done.
    let created = net.bond.as_ref().is_some_and(|b| b.name == net.interface)
        && steps.iter().any(|s| matches!(s, Step::CreateBond { .. }));
    let iface = match current.link(&net.interface) {
        _ if created => None,
        Some(l) => Some(l),
        None => return Err(PlanError::NoInterface(net.interface.clone(), nics())),
    };
    if !iface.is_some_and(|l| l.admin_up) {
        steps.push(Step::SetUp {
            name: net.interface.clone(),
        });
    }
    let on_iface: Vec<Address> = iface
        .map(|l| {
            current
                .addresses
                .iter()
                .filter(|a| a.index == l.index)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    for a in &on_iface {
        if a.prefix != 32 && !(a.addr == net.address && a.prefix == net.prefix) {
            steps.push(Step::RemoveAddress {
                interface: net.interface.clone(),
                addr: a.addr,
                prefix: a.prefix,
            });
        }
    }
    if !on_iface
        .iter()
        .any(|a| a.addr == net.address && a.prefix == net.prefix)
    {
        steps.push(Step::AddAddress {
            interface: net.interface.clone(),
            addr: net.address,
            prefix: net.prefix,
        });
    }
    if let Some(gateway) = net.gateway {
        steps.push(Step::ReplaceDefaultRoute {
            gateway,
            interface: net.interface.clone(),
        });
    }
    if !net.dns.is_empty() {
        let text = resolv_conf(&net.dns);
        if current.resolv_conf.as_deref() != Some(text.as_str()) {
            steps.push(Step::WriteResolvConf { text });
        }
    }
    let hostname = net.hostname.as_deref().unwrap_or(node_name);
    if current.hostname != hostname {
        steps.push(Step::SetHostname {
            name: hostname.to_string(),
        });
    }
    Ok(steps)
}

// ---------------------------------------------------------------------------------------
// Bond status

/// The HA interface's bond, as `proxyha status` shows it (JSON field `bond`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondStatus {
    pub name: String,
    /// "active-backup", "802.3ad", … (the kernel's number if unknown to us).
    pub mode: String,
    /// The slave carrying traffic (active-backup and the like); null when none is.
    pub active_slave: Option<String>,
    pub slaves: Vec<BondSlave>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondSlave {
    pub name: String,
    /// "up" (administratively up with carrier) or "down".
    pub link: String,
}

/// The bond `name` as seen in `links`, `None` if `name` is not a bond.
pub fn bond_status(name: &str, links: &[Link]) -> Option<BondStatus> {
    let bond = links
        .iter()
        .find(|l| l.name == name && l.kind.as_deref() == Some("bond"))?;
    let mode = match bond.bond_mode {
        Some(n) => BondMode::from_kernel(n).map_or_else(|| format!("mode {n}"), |m| m.to_string()),
        None => "unknown".to_string(),
    };
    let active_slave = bond
        .active_slave
        .filter(|i| *i != 0)
        .and_then(|i| links.iter().find(|l| l.index == i))
        .map(|l| l.name.clone());
    let mut slaves: Vec<BondSlave> = links
        .iter()
        .filter(|l| l.master == Some(bond.index))
        .map(|l| BondSlave {
            name: l.name.clone(),
            link: if l.admin_up && l.lower_up {
                "up"
            } else {
                "down"
            }
            .to_string(),
        })
        .collect();
    slaves.sort_by(|a, b| a.name.cmp(&b.name));
    Some(BondStatus {
        name: bond.name.clone(),
        mode,
        active_slave,
        slaves,
    })
}

/// The log lines for a change of the bond's state: slave links first, then the active slave,
/// e.g. `bond0: slave eth0 link down` and `bond0: active slave eth1 (eth0 link down)`.
pub fn bond_changes(old: &BondStatus, new: &BondStatus) -> Vec<String> {
    let mut lines = Vec::new();
    let link_of = |s: &BondStatus, name: &str| {
        s.slaves
            .iter()
            .find(|x| x.name == name)
            .map(|x| x.link.clone())
    };
    for slave in &new.slaves {
        match link_of(old, &slave.name) {
            None => lines.push(format!(
                "{}: slave {} added, link {}",
                new.name, slave.name, slave.link
            )),
            Some(link) if link != slave.link => lines.push(format!(
                "{}: slave {} link {}",
                new.name, slave.name, slave.link
            )),
            Some(_) => {}
        }
    }
    for slave in &old.slaves {
        if link_of(new, &slave.name).is_none() {
            lines.push(format!("{}: slave {} released", new.name, slave.name));
        }
    }
    if old.active_slave != new.active_slave {
        let why = match &old.active_slave {
            Some(prev) => match link_of(new, prev) {
                Some(link) if link == "down" => format!(" ({prev} link down)"),
                None => format!(" ({prev} released)"),
                Some(_) => format!(" (was {prev})"),
            },
            None => String::new(),
        };
        match &new.active_slave {
            Some(active) => lines.push(format!("{}: active slave {active}{why}", new.name)),
            None => lines.push(format!("{}: no active slave{why}", new.name)),
        }
    }
    lines
}

/// A one-line summary for the start-up log and the status table.
pub fn bond_summary(s: &BondStatus) -> String {
    let slaves: Vec<String> = s
        .slaves
        .iter()
        .map(|x| format!("{} {}", x.name, x.link))
        .collect();
    format!(
        "{}, active {}, slaves: {}",
        s.mode,
        s.active_slave.as_deref().unwrap_or("none"),
        if slaves.is_empty() {
            "none".to_string()
        } else {
            slaves.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bond;

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            bond_mode: None,
            active_slave: None,
            master: None,
            admin_up: true,
            lower_up: true,
        }
    }

    fn net(bond: bool) -> Network {
        Network {
            interface: if bond { "bond0" } else { "eth0" }.into(),
            address: Ipv4Addr::new(10, 1, 2, 3),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 1, 2, 1)),
            dns: vec![Ipv4Addr::new(10, 1, 2, 2)],
            hostname: None,
            bond: bond.then(|| Bond {
                name: "bond0".into(),
                slaves: vec!["eth0".into(), "eth1".into()],
                mode: BondMode::ActiveBackup,
            }),
        }
    }

    fn fresh_box() -> Current {
        Current {
            links: vec![link(1, "lo"), link(2, "eth0"), link(3, "eth1")],
            addresses: vec![],
            hostname: "proxyha".into(),
            resolv_conf: None,
        }
    }

    #[test]
    fn plain_interface_on_a_fresh_box() {
        let steps = plan(&net(false), "jupiter", &fresh_box()).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::AddAddress {
                    interface: "eth0".into(),
                    addr: Ipv4Addr::new(10, 1, 2, 3),
                    prefix: 24
                },
                Step::ReplaceDefaultRoute {
                    gateway: Ipv4Addr::new(10, 1, 2, 1),
                    interface: "eth0".into()
                },
                Step::WriteResolvConf {
                    text: "# written by proxyha from [network] dns\nnameserver 10.1.2.2\n".into()
                },
                Step::SetHostname {
                    name: "jupiter".into()
                },
            ]
        );
    }

    #[test]
    fn applied_state_needs_only_the_route() {
        let mut current = fresh_box();
        current.addresses = vec![
            Address {
                index: 2,
                addr: Ipv4Addr::new(10, 1, 2, 3),
                prefix: 24,
            },
            // The VIP: the VRRP core's, left alone.
            Address {
                index: 2,
                addr: Ipv4Addr::new(10, 1, 2, 100),
                prefix: 32,
            },
        ];
        current.hostname = "jupiter".into();
        current.resolv_conf = Some(resolv_conf(&[Ipv4Addr::new(10, 1, 2, 2)]));
        let steps = plan(&net(false), "jupiter", &current).unwrap();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(matches!(steps[0], Step::ReplaceDefaultRoute { .. }));
    }

    #[test]
    fn an_old_address_is_replaced() {
        let mut current = fresh_box();
        current.links[1].admin_up = false;
        current.addresses = vec![Address {
            index: 2,
            addr: Ipv4Addr::new(10, 9, 9, 9),
            prefix: 16,
        }];
        let steps = plan(&net(false), "jupiter", &current).unwrap();
        assert_eq!(
            &steps[..3],
            &[
                Step::SetUp {
                    name: "eth0".into()
                },
                Step::RemoveAddress {
                    interface: "eth0".into(),
                    addr: Ipv4Addr::new(10, 9, 9, 9),
                    prefix: 16
                },
                Step::AddAddress {
                    interface: "eth0".into(),
                    addr: Ipv4Addr::new(10, 1, 2, 3),
                    prefix: 24
                },
            ]
        );
    }

    #[test]
    fn bond_is_created_and_slaves_enslaved_down_first() {
        let steps = plan(&net(true), "jupiter", &fresh_box()).unwrap();
        let shown: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            &shown[..8],
            &[
                "creating bond bond0 (mode active-backup)",
                "setting eth0 down",
                "enslaving eth0 to bond0",
                "setting eth0 up",
                "setting eth1 down",
                "enslaving eth1 to bond0",
                "setting eth1 up",
                "setting bond0 up",
            ]
        );
        assert_eq!(shown[8], "adding 10.1.2.3/24 to bond0");
    }

    #[test]
    fn existing_bond_is_kept_or_recreated_for_another_mode() {
        let mut current = fresh_box();
        let mut bond = link(4, "bond0");
        bond.kind = Some("bond".into());
        bond.bond_mode = Some(BondMode::ActiveBackup as u8);
        current.links.push(bond);
        current.links[1].master = Some(4);
        current.links[2].master = Some(4);
        let steps = plan(&net(true), "jupiter", &current).unwrap();
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::CreateBond { .. } | Step::Enslave { .. })),
            "{steps:?}"
        );
        current.links[3].bond_mode = Some(BondMode::BalanceRr as u8);
        let steps = plan(&net(true), "jupiter", &current).unwrap();
        assert_eq!(
            steps[0],
            Step::DeleteLink {
                name: "bond0".into()
            }
        );
        assert!(matches!(steps[1], Step::CreateBond { .. }));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::Enslave { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn missing_or_taken_interfaces_are_named() {
        let mut current = fresh_box();
        current.links.remove(2);
        assert_eq!(
            plan(&net(true), "j", &current).unwrap_err().to_string(),
            "network.bond.slaves: interface eth1 not found; the NICs here are: eth0"
        );
        let mut n = net(false);
        n.interface = "ens3".into();
        assert_eq!(
            plan(&n, "j", &current).unwrap_err().to_string(),
            "network.interface ens3: no such interface; set it to one of: eth0 (or configure network.bond)"
        );
        let mut current = fresh_box();
        current.links.push(link(9, "br0"));
        current.links[2].master = Some(9);
        assert_eq!(
            plan(&net(true), "j", &current).unwrap_err().to_string(),
            "network.bond.slaves: eth1 is already enslaved to br0; remove it from there or from the list"
        );
    }

    fn bonded(active: u32, eth0_up: bool) -> Vec<Link> {
        let mut bond = link(4, "bond0");
        bond.kind = Some("bond".into());
        bond.bond_mode = Some(1);
        bond.active_slave = Some(active);
        let mut eth0 = link(2, "eth0");
        eth0.master = Some(4);
        eth0.lower_up = eth0_up;
        let mut eth1 = link(3, "eth1");
        eth1.master = Some(4);
        vec![link(1, "lo"), eth0, eth1, bond]
    }

    #[test]
    fn bond_status_reads_mode_active_and_slaves() {
        let s = bond_status("bond0", &bonded(2, true)).unwrap();
        assert_eq!(s.mode, "active-backup");
        assert_eq!(s.active_slave.as_deref(), Some("eth0"));
        assert_eq!(
            s.slaves,
            vec![
                BondSlave {
                    name: "eth0".into(),
                    link: "up".into()
                },
                BondSlave {
                    name: "eth1".into(),
                    link: "up".into()
                }
            ]
        );
        assert_eq!(
            bond_summary(&s),
            "active-backup, active eth0, slaves: eth0 up, eth1 up"
        );
        assert_eq!(bond_status("eth0", &bonded(2, true)), None);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["active_slave"], "eth0");
        assert_eq!(json["slaves"][1]["link"], "up");
    }

    #[test]
    fn failover_of_the_active_slave_is_logged_with_its_reason() {
        let before = bond_status("bond0", &bonded(2, true)).unwrap();
        let after = bond_status("bond0", &bonded(3, false)).unwrap();
        assert_eq!(
            bond_changes(&before, &after),
            vec![
                "bond0: slave eth0 link down".to_string(),
                "bond0: active slave eth1 (eth0 link down)".to_string(),
            ]
        );
        assert_eq!(bond_changes(&after, &after), Vec::<String>::new());
        let back = bond_status("bond0", &bonded(3, true)).unwrap();
        assert_eq!(
            bond_changes(&after, &back),
            vec!["bond0: slave eth0 link up".to_string()]
        );
    }
}
