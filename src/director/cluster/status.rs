//! Status rows: members, the scanning view, mismatches, one client.

use super::*;

impl Cluster {
    /// Status rows: on the director every member (and members failed within
    /// [`FAILED_SHOWN`]), on a scanning node the director (as far as announcements tell)
    /// and itself. Every row says why its share is what it is.
    pub fn nodes(&self, now: Instant) -> Vec<NodeStatus> {
        if self.director_role {
            let per_node = self.pinned();
            let mut out: Vec<NodeStatus> = self
                .members
                .iter()
                .map(|(a, m)| self.member_row(*a, &m.report, per_node.get(a).copied().unwrap_or(0)))
                .collect();
            for (a, (name, at)) in &self.failed {
                let ago = now.saturating_duration_since(*at).as_secs_f64()
                    + (self.cfg.report_interval * FAIL_PERIODS).as_secs_f64();
                out.push(NodeStatus {
                    name: name.clone(),
                    address: *a,
                    role: "failed".into(),
                    healthy: false,
                    ports: Vec::new(),
                    load: LoadStatus {
                        cpu: 0.0,
                        conns: 0,
                        capacity: 0.0,
                    },
                    weight: 0.0,
                    share: 0.0,
                    pinned: Some(0),
                    reason: format!(
                        "not reporting for {ago:.0} s (failed after {FAIL_PERIODS} missed \
                         reports); its clients moved to the others"
                    ),
                });
            }
            out
        } else {
            self.scanning_rows()
        }
    }

    /// The director's row for one member.
    pub(super) fn member_row(&self, addr: Ipv4Addr, r: &Report, pinned: u64) -> NodeStatus {
        let role = if addr == self.cfg.self_addr {
            "director"
        } else {
            "scanning"
        };
        let ports: Vec<PortStatus> = self
            .cfg
            .redirects
            .iter()
            .map(|red| {
                let t = self.tables.get(&red.port);
                let share = t.map_or(0.0, |t| {
                    t.counts().get(&addr).copied().unwrap_or(0) as f64
                        / t.table().len().max(1) as f64
                });
                let health = r.ports.iter().find(|p| p.port == red.to);
                let listening = health.is_none_or(|p| p.listening);
                let reason = if !listening {
                    let why = health.map_or("not listening", |p| p.reason.as_str());
                    format!("listener {} down ({why}): out of this port's pool", red.to)
                } else if !self.takes_new(r, red) {
                    "no new clients (see the node's reason)".to_string()
                } else {
                    String::new()
                };
                PortStatus {
                    port: red.port,
                    to: red.to,
                    listening,
                    share,
                    reason,
                }
            })
            .collect();
        let share = if ports.is_empty() {
            0.0
        } else {
            ports.iter().map(|p| p.share).sum::<f64>() / ports.len() as f64
        };
        let active = self.active(r);
        let weight = if active {
            self.weights.weight(addr).unwrap_or(0.0)
        } else {
            0.0
        };
        let down: Vec<String> = ports
            .iter()
            .filter(|p| !p.listening)
            .map(|p| {
                let why = r
                    .ports
                    .iter()
                    .find(|h| h.port == p.to)
                    .map_or("not listening", |h| h.reason.as_str());
                format!("port {} down ({why})", p.to)
            })
            .collect();
        let reason = if !self.config_matches(r) {
            format!(
                "config mismatch: theirs `{}`, ours `{}`; no new clients until the group \
                 settings agree",
                r.group_config, self.cfg.group_config
            )
        } else if r.draining {
            format!("draining (proxyha drain): no new clients; {pinned} pinned clients finish")
        } else if !down.is_empty() && self.cfg.drain == Drain::Node {
            format!(
                "{}: ha.drain = \"node\" takes it out of every port's pool",
                down.join(", ")
            )
        } else if !down.is_empty() && !active {
            format!("{}: out of every port's pool", down.join(", "))
        } else {
            let base = match (
                self.weights.multiplier(addr),
                self.weights.mean_utilisation(),
            ) {
                (Some(m), mean) => format!(
                    "weight {weight:.2} = capacity {} × load feedback {m:.2} (cpu {:.0} % vs \
                     group mean {:.0} %)",
                    r.capacity,
                    f64::from(r.cpu_load) * 100.0,
                    mean * 100.0
                ),
                (None, _) => "joined this period; weight from its next report".to_string(),
            };
            if down.is_empty() {
                base
            } else {
                format!("{base}; {}: out of that port's pool only", down.join(", "))
            }
        };
        NodeStatus {
            name: r.name.clone(),
            address: addr,
            role: role.to_string(),
            healthy: active && down.is_empty(),
            ports,
            load: LoadStatus {
                cpu: f64::from(r.cpu_load),
                conns: r.connections.iter().map(|c| u64::from(c.established)).sum(),
                capacity: r.capacity,
            },
            weight,
            share,
            pinned: Some(pinned),
            reason,
        }
    }

    /// A scanning node knows the director's announcements and itself.
    pub(super) fn scanning_rows(&self) -> Vec<NodeStatus> {
        let mut out = Vec::new();
        let announced = |a: Ipv4Addr| self.announced.iter().find(|m| m.address == a);
        let total: f64 = self
            .announced
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.weight)
            .sum();
        let share = |a: Ipv4Addr| match announced(a) {
            Some(m) if m.state == MemberState::Active && total > 0.0 => m.weight / total,
            _ => 0.0,
        };
        if let Some(d) = self.director {
            out.push(NodeStatus {
                name: announced(d).map(|m| m.name.clone()).unwrap_or_default(),
                address: d,
                role: "director".into(),
                healthy: announced(d).is_none_or(|m| m.state == MemberState::Active),
                ports: Vec::new(),
                load: LoadStatus {
                    cpu: 0.0,
                    conns: 0,
                    capacity: 0.0,
                },
                weight: announced(d).map_or(0.0, |m| m.weight),
                share: share(d),
                pinned: None,
                reason: "directs: owns the VIP and hands out the clients".into(),
            });
        }
        let me = self.cfg.self_addr;
        let r = self.report();
        let ports: Vec<PortStatus> = self
            .cfg
            .redirects
            .iter()
            .map(|red| {
                let h = r.ports.iter().find(|p| p.port == red.to);
                let listening = h.is_some_and(|p| p.listening);
                PortStatus {
                    port: red.port,
                    to: red.to,
                    listening,
                    share: if listening { share(me) } else { 0.0 },
                    reason: if listening {
                        String::new()
                    } else {
                        format!(
                            "listener {} down ({}): out of this port's pool",
                            red.to,
                            h.map_or("not listening", |p| p.reason.as_str())
                        )
                    },
                }
            })
            .collect();
        let reason = match (self.director, announced(me)) {
            (None, _) => "not yet joined: no director has announced itself (same lb_id and \
                          auth_key on every node? is a director candidate up?)"
                .to_string(),
            (Some(d), None) => {
                format!("not yet joined: director {d} has not listed this node yet")
            }
            (Some(_), Some(_)) if self.draining => {
                "draining (proxyha drain): no new clients; pinned clients finish".to_string()
            }
            (Some(_), Some(m)) if m.state != MemberState::Active => {
                "no new clients: the director counts it draining or every port down".to_string()
            }
            (Some(_), Some(m)) => {
                format!("weight {:.2} from the director's announcement", m.weight)
            }
        };
        out.push(NodeStatus {
            name: r.name.clone(),
            address: me,
            role: "scanning".into(),
            healthy: Self::port_up_all(&r) && !self.draining,
            ports,
            load: LoadStatus {
                cpu: f64::from(r.cpu_load),
                conns: r.connections.iter().map(|c| u64::from(c.established)).sum(),
                capacity: r.capacity,
            },
            weight: announced(me).map_or(0.0, |m| m.weight),
            share: share(me),
            pinned: None,
            reason,
        });
        out
    }

    pub(super) fn port_up_all(r: &Report) -> bool {
        r.ports.iter().all(|p| p.listening)
    }

    /// Members whose group config differs from ours (director only).
    pub fn mismatches(&self) -> Vec<Mismatch> {
        self.members
            .iter()
            .filter(|(_, m)| !self.config_matches(&m.report))
            .map(|(a, m)| Mismatch {
                peer: *a,
                name: m.report.name.clone(),
                source: "membership".into(),
                ours: self.cfg.group_config.clone(),
                theirs: m.report.group_config.clone(),
            })
            .collect()
    }

    /// `proxyha status --client IP`: per redirected port, the node that client goes to and
    /// why — its live pin (director: as last read from the kernel; standby: as last
    /// announced), else the bucket table.
    pub fn client(&self, now: Instant, ip: Ipv4Addr) -> ClientStatus {
        let name_of = |a: Ipv4Addr| -> String {
            self.members
                .get(&a)
                .map(|m| m.report.name.clone())
                .or_else(|| {
                    self.announced
                        .iter()
                        .find(|m| m.address == a)
                        .map(|m| m.name.clone())
                })
                .unwrap_or_default()
        };
        let timeout_s = u64::from(self.cfg.sticky_idle_s);
        let source = if self.director_role {
            "the director's pins, as its kernel map last said".to_string()
        } else {
            match (self.director, self.held.age(now)) {
                (Some(d), Some(age)) => format!(
                    "the pins replicated from director {d} (newest complete copy {:.0} s old); ask \
                     the director for live ones",
                    age.as_secs_f64()
                ),
                (Some(d), None) => format!(
                    "the pins replicated from director {d} so far (no complete copy yet); ask the \
                     director for live ones"
                ),
                (None, _) => "no director known; nothing is pinned".into(),
            }
        };
        let ports = self
            .cfg
            .redirects
            .iter()
            .map(|r| {
                // A pin to a node that no longer serves the port is void in the kernel too.
                let pin = self.pin_of(now, ip, r.port).filter(|(node, _)| {
                    !self.director_role
                        || self
                            .members
                            .get(node)
                            .is_some_and(|m| Self::serves(&m.report, r))
                });
                if let Some((node, left)) = pin {
                    let idle = Duration::from_secs(timeout_s).saturating_sub(left);
                    return ClientPort {
                        port: r.port,
                        node: Some(node),
                        name: name_of(node),
                        how: "pinned".into(),
                        detail: format!(
                            "pinned: last seen {:.0} s ago, the pin expires after {:.0} s more \
                             of silence (ha.sticky_idle_s = {timeout_s})",
                            idle.as_secs_f64(),
                            left.as_secs_f64()
                        ),
                    };
                }
                let table = self.tables.get(&r.port);
                match table.and_then(|t| t.lookup(ip, HASH_SEED).map(|n| (t, n))) {
                    Some((t, n)) if self.director_role => {
                        let b = crate::director::scheduler::bucket_of(ip, t.size(), HASH_SEED);
                        ClientPort {
                            port: r.port,
                            node: Some(n),
                            name: name_of(n),
                            how: "new".into(),
                            detail: format!(
                                "not pinned: its next connection takes bucket {b} of {} → this \
                                 node (weight {:.2}), and is pinned there",
                                t.size(),
                                self.weights.weight(n).unwrap_or(0.0)
                            ),
                        }
                    }
                    _ => ClientPort {
                        port: r.port,
                        node: None,
                        name: String::new(),
                        how: "none".into(),
                        detail: if self.director_role {
                            "not pinned, and no node takes new clients on this port".into()
                        } else {
                            "not pinned as far as the last announcement says; the director's \
                             bucket table decides"
                                .into()
                        },
                    },
                }
            })
            .collect();
        ClientStatus {
            client: ip,
            director: self.director,
            ports,
            source,
        }
    }
}
