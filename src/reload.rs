//! What a live reload (SIGHUP, `proxyha reload`) changes, sans-IO: the running and the new
//! configuration in, a [`Plan`] out. The daemon applies it; this module only classifies.
//!
//! Three kinds of keys:
//! - in place: the VRRP core and the membership core take the new values without leaving
//!   their state (`Router::reconfigure`, `Cluster::reconfigure`), so the VIP stays where it is
//!   unless the election itself says otherwise (a lowered priority lets a higher backup
//!   preempt, as VRRP wants);
//! - restart: the identity of the VRRP instance or of the node on the LAN (interface,
//!   management address, VRID, VIP, VRRP version, `lb_id`): the instance leaves cleanly
//!   (priority-0 advert, VIP removed, data path torn down) and starts again with the new
//!   values;
//! - next start: what the running process cannot swap (its control socket, its state
//!   directory, its log target); the running values are kept and the log says so.
//!
//! The structs are destructured field by field, so a new config key does not compile until
//! it is classified here.

use std::fmt::Display;

use crate::config::{Appliance, Config, Control, Ha, Log, Node, PortRedirect, Update};

/// How to apply a new configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Applied in place, e.g. `priority 99→89`.
    pub in_place: Vec<String>,
    /// Changes that restart the VRRP instance, e.g. `virtual_router_id 51→52`.
    pub restart: Vec<String>,
    /// Changes kept for the next start, e.g. `control.socket /a→/b`.
    pub next_start: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.in_place.is_empty() && self.restart.is_empty() && self.next_start.is_empty()
    }

    pub fn needs_restart(&self) -> bool {
        !self.restart.is_empty()
    }

    /// Every change, in the order restart, in place, next start.
    pub fn all(&self) -> Vec<String> {
        self.restart
            .iter()
            .chain(&self.in_place)
            .chain(&self.next_start)
            .cloned()
            .collect()
    }
}

fn change<T: PartialEq + Display>(out: &mut Vec<String>, key: &str, old: &T, new: &T) {
    if old != new {
        out.push(format!("{key} {old}→{new}"));
    }
}

fn change_opt<T: PartialEq + Display>(
    out: &mut Vec<String>,
    key: &str,
    old: &Option<T>,
    new: &Option<T>,
) {
    let show = |v: &Option<T>| v.as_ref().map_or("unset".to_string(), |v| v.to_string());
    if old != new {
        out.push(format!("{key} {}→{}", show(old), show(new)));
    }
}

fn track_text(t: &crate::config::Track) -> String {
    let mut parts = Vec::new();
    for (key, e) in [
        ("interfaces", t.interfaces),
        ("gateway", t.gateway),
        ("ports", t.ports),
    ] {
        if let Some(e) = e {
            parts.push(format!("{key} {e}"));
        }
    }
    if let Some(a) = t.gateway_address {
        parts.push(format!("gateway_address {a}"));
    }
    if parts.is_empty() {
        "off".into()
    } else {
        parts.join(", ")
    }
}

fn addresses(a: &[std::net::Ipv4Addr]) -> String {
    let items: Vec<String> = a.iter().map(|a| a.to_string()).collect();
    format!("[{}]", items.join(", "))
}

fn redirects(r: &[PortRedirect]) -> String {
    let items: Vec<String> = r
        .iter()
        .map(|r| {
            if r.port == r.to {
                r.port.to_string()
            } else {
                format!("{}→{}", r.port, r.to)
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Classifies every difference between the running config `old` and the new one.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    let Config {
        node: Node {
            name,
            management_ip,
            capacity,
        },
        ha:
            Ha {
                interface,
                virtual_ip,
                virtual_router_id,
                lb_id,
                priority,
                advert_interval_ms,
                preempt,
                vrrp_version,
                vrrp_checksum,
                port_redirects,
                sticky_idle_s,
                mode,
                auth_key,
                auth_key_file,
                drain,
                unicast_peers,
                vrrp_sources,
                track,
                rt_priority,
                lock_memory,
            },
        control: Control { socket, state_dir },
        log: Log {
            target,
            level,
            remote,
        },
        network,
        appliance: Appliance { builtin_proxy },
        update: Update { health_timeout_s },
    } = new;
    let o = old;

    // Identity: restart the instance.
    let r = &mut p.restart;
    change(r, "interface", &o.ha.interface, interface);
    change_opt(r, "management_ip", &o.node.management_ip, management_ip);
    change(
        r,
        "virtual_router_id",
        &o.ha.virtual_router_id,
        virtual_router_id,
    );
    change(r, "virtual_ip", &o.ha.virtual_ip, virtual_ip);
    change(
        r,
        "vrrp_version",
        &o.ha.vrrp_version.number(),
        &vrrp_version.number(),
    );
    change(r, "lb_id", &o.ha.lb_id, lb_id);

    // In place.
    let i = &mut p.in_place;
    change(i, "priority", &o.ha.priority, priority);
    change(
        i,
        "advert_interval_ms",
        &o.ha.advert_interval_ms,
        advert_interval_ms,
    );
    change(i, "preempt", &o.ha.preempt, preempt);
    if o.ha.vrrp_checksum != *vrrp_checksum {
        i.push(format!(
            "vrrp_checksum {:?}→{:?}",
            o.ha.vrrp_checksum, vrrp_checksum
        ));
    }
    if o.ha.port_redirects != *port_redirects {
        i.push(format!(
            "port_redirects {}→{}",
            redirects(&o.ha.port_redirects),
            redirects(port_redirects)
        ));
    }
    change(i, "sticky_idle_s", &o.ha.sticky_idle_s, sticky_idle_s);
    change(i, "mode", &o.ha.mode, mode);
    change(i, "drain", &o.ha.drain, drain);
    for (key, old, new) in [
        ("unicast_peers", &o.ha.unicast_peers, unicast_peers),
        ("vrrp_sources", &o.ha.vrrp_sources, vrrp_sources),
    ] {
        if old != new {
            i.push(format!("{key} {}→{}", addresses(old), addresses(new)));
        }
    }
    if o.ha.auth_key != *auth_key {
        // Never log a secret; that it changed is enough.
        i.push(
            match (&o.ha.auth_key, auth_key) {
                (None, Some(_)) => "auth_key set",
                (Some(_), None) => "auth_key removed",
                _ => "auth_key changed",
            }
            .to_string(),
        );
    }
    if o.ha.auth_key_file != *auth_key_file {
        let show = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or("unset".to_string(), |p| p.display().to_string())
        };
        i.push(format!(
            "auth_key_file {}→{}",
            show(&o.ha.auth_key_file),
            show(auth_key_file)
        ));
    }
    if o.ha.track != *track {
        i.push(format!(
            "track {}→{}",
            track_text(&o.ha.track),
            track_text(track)
        ));
    }
    change(i, "name", &o.node.name, name);
    change_opt(i, "capacity", &o.node.capacity, capacity);
    change(i, "log.level", &o.log.level, level);

    // Only at the next start.
    let n = &mut p.next_start;
    change_opt(n, "rt_priority", &o.ha.rt_priority, rt_priority);
    change(n, "lock_memory", &o.ha.lock_memory, lock_memory);
    let show = |p: &std::path::Path| p.display().to_string();
    change(n, "control.socket", &show(&o.control.socket), &show(socket));
    change(
        n,
        "control.state_dir",
        &show(&o.control.state_dir),
        &show(state_dir),
    );
    change(n, "log.target", &o.log.target, target);
    // The image's boot script applies these (syslogd, the built-in proxy), and proxyha
    // applies [network] once at start: changing the network under a running VRRP instance
    // is what a reboot is for.
    if o.log.remote != *remote {
        n.push("log.remote".to_string());
    }
    if o.network != *network {
        n.push("[network]".to_string());
    }
    change(
        n,
        "appliance.builtin_proxy",
        &o.appliance.builtin_proxy,
        builtin_proxy,
    );
    // In place: `proxyha update install` reads it from the file when it arms a trial boot;
    // the running supervisor never holds it.
    change(
        &mut p.in_place,
        "update.health_timeout_s",
        &o.update.health_timeout_s,
        health_timeout_s,
    );
    p
}

/// `new` with the keys the running process cannot swap set back to `old`'s values: what
/// the daemon runs with after the reload.
pub fn effective(old: &Config, new: &Config) -> Config {
    let mut c = new.clone();
    c.control = old.control.clone();
    c.log.target = old.log.target.clone();
    c.log.remote = old.log.remote;
    c.network = old.network.clone();
    c.appliance = old.appliance.clone();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_ha: &str) -> Config {
        let text = format!(
            "[node]\nname = \"n1\"\nmanagement_ip = \"10.1.0.11\"\n[ha]\nvirtual_ip = \"10.1.0.100\"\n\
             priority = 99\nport_redirects = [9090]\n{extra_ha}\n"
        );
        match Config::parse(&text, "t.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let p = plan(&config(""), &config(""));
        assert!(p.is_empty(), "{p:?}");
        assert!(!p.needs_restart());
    }

    #[test]
    fn election_and_load_sharing_keys_apply_in_place() {
        let old = config("");
        let mut new = config(
            "advert_interval_ms = 500\npreempt = false\n\
             sticky_idle_s = 60\nmode = \"nat\"\nauth_key = \"0123456789abcdef\"",
        );
        new.ha
            .port_redirects
            .push(PortRedirect { port: 80, to: 3128 });
        new.ha.priority = 89;
        new.node.capacity = Some(2.0);
        new.log.level = log::LevelFilter::Debug;
        let p = plan(&old, &new);
        assert!(!p.needs_restart(), "{p:?}");
        assert_eq!(
            p.in_place,
            vec![
                "priority 99→89",
                "advert_interval_ms 1000→500",
                "preempt true→false",
                "port_redirects [9090]→[9090, 80→3128]",
                "sticky_idle_s 300→60",
                "mode direct→nat",
                "auth_key set",
                "capacity unset→2",
                "log.level INFO→DEBUG",
            ]
        );
        assert!(
            !p.all().iter().any(|c| c.contains("0123456789abcdef")),
            "the secret is never shown"
        );
    }

    #[test]
    fn identity_keys_restart_the_instance() {
        let old = config("");
        let new =
            config("interface = \"eth1\"\nvirtual_router_id = 52\nlb_id = 53\nvrrp_version = 2");
        let new = Config {
            ha: Ha {
                virtual_ip: "10.1.0.101".parse().unwrap_or(new.ha.virtual_ip),
                ..new.ha
            },
            ..new
        };
        let p = plan(&old, &new);
        assert_eq!(
            p.restart,
            vec![
                "interface eth0→eth1",
                "virtual_router_id 51→52",
                "virtual_ip 10.1.0.100→10.1.0.101",
                "vrrp_version 3→2",
                "lb_id 51→53",
            ]
        );
        assert!(p.needs_restart());
        let mut moved = config("");
        moved.node.management_ip = Some("10.1.0.12".parse().unwrap_or(old.ha.virtual_ip));
        assert_eq!(
            plan(&old, &moved).restart,
            vec!["management_ip 10.1.0.11→10.1.0.12"]
        );
    }

    #[test]
    fn process_keys_wait_for_the_next_start_and_keep_running_values() {
        let old = config("");
        let mut new = config("");
        new.control.socket = "/tmp/other.sock".into();
        new.control.state_dir = "/tmp/state".into();
        new.log.target = crate::config::LogTarget::Stderr;
        new.ha.priority = 50;
        let p = plan(&old, &new);
        assert_eq!(
            p.next_start,
            vec![
                "control.socket /run/proxyha/control.sock→/tmp/other.sock",
                "control.state_dir /var/lib/proxyha→/tmp/state",
                "log.target syslog→stderr",
            ]
        );
        let e = effective(&old, &new);
        assert_eq!(e.control, old.control);
        assert_eq!(e.log.target, old.log.target);
        assert_eq!(e.ha.priority, 50);
    }
}
