//! The per-port bucket tables and the data path they make.

use super::*;

impl Cluster {
    /// Feeds the members' loads into the weights and moves the table when the eligible set
    /// changed or a quota moved by more than 1 % of the table (hysteresis: load noise must
    /// not rewrite the kernel map every second).
    pub(super) fn rebuild(&mut self, _now: Instant) {
        if !self.director_role {
            return;
        }
        // Load feedback is among the nodes that take new clients: a draining (or fully
        // failed) node's idle CPU must not pull the mean down, and it comes back at the
        // neutral multiplier like a new node, not with what it drifted to meanwhile.
        let loads: BTreeMap<NodeId, NodeLoad> = self
            .members
            .iter()
            .filter(|(_, m)| self.active(&m.report))
            .map(|(a, m)| {
                (
                    *a,
                    NodeLoad {
                        capacity: m.report.capacity,
                        utilisation: f64::from(m.report.cpu_load),
                    },
                )
            })
            .collect();
        self.weights.update(&loads);
        let mut rebuilt: Vec<(u16, u64, usize)> = Vec::new();
        for r in self.cfg.redirects.clone() {
            let eligible: BTreeSet<Ipv4Addr> = self
                .members
                .iter()
                .filter(|(_, m)| self.takes_new(&m.report, &r))
                .map(|(a, _)| *a)
                .collect();
            let weights = self.weights.weights_where(|n| eligible.contains(&n));
            let empty = self.empty_table();
            let table = self.tables.entry(r.port).or_insert(empty);
            let set_changed =
                self.table_nodes.get(&r.port) != Some(&eligible) || table.table().is_empty();
            let drift = {
                let want = quotas(table.size(), &weights);
                let have = table.counts();
                want.iter()
                    .map(|(n, q)| q.abs_diff(have.get(n).copied().unwrap_or(0)))
                    .max()
                    .unwrap_or(0)
            };
            if set_changed || drift * 100 > table.size() {
                let moved = table.rebuild(&weights);
                let version = table.version();
                self.table_nodes.insert(r.port, eligible);
                if moved > 0 {
                    rebuilt.push((r.port, version, moved));
                }
            }
        }
        // One line for the ports whose tables moved alike (the usual case: all of them).
        while let Some(&(_, version, moved)) = rebuilt.first() {
            let ports: Vec<u16> = rebuilt
                .iter()
                .filter(|(_, v, m)| (*v, *m) == (version, moved))
                .map(|(p, _, _)| *p)
                .collect();
            rebuilt.retain(|(_, v, m)| (*v, *m) != (version, moved));
            self.events.push_back(Event::TableRebuilt {
                ports,
                version,
                moved,
            });
        }
        self.update_desired();
    }

    pub(super) fn desired(&self) -> Desired {
        let role = if self.director_role {
            let me = self.cfg.self_addr;
            let mut pools: Vec<PortPool> = Vec::new();
            for r in &self.cfg.redirects {
                let table = self.tables.get(&r.port);
                let buckets: Vec<Option<Ipv4Addr>> = match table {
                    Some(t) if !t.table().is_empty() => t
                        .table()
                        .iter()
                        .map(|n| if *n == me { None } else { Some(*n) })
                        .collect(),
                    // Nobody takes new clients here: serve locally rather than drop them.
                    _ => vec![None],
                };
                let serving: Vec<Ipv4Addr> = self
                    .members
                    .iter()
                    .filter(|(_, m)| Self::serves(&m.report, r))
                    .map(|(a, _)| *a)
                    .collect();
                // Ports with the same table and serving set share one pool (one nft rule).
                match pools
                    .iter_mut()
                    .find(|p| p.buckets == buckets && p.serving == serving)
                {
                    Some(p) => {
                        if !p.ports.contains(&r.port) {
                            p.ports.push(r.port);
                        }
                    }
                    None => pools.push(PortPool {
                        ports: vec![r.port],
                        serving,
                        buckets,
                    }),
                }
            }
            Role::Director(DirectorState {
                self_addr: me,
                nodes: self.members.keys().copied().filter(|a| *a != me).collect(),
                pools,
                hash_seed: HASH_SEED,
                sticky_idle_s: self.cfg.sticky_idle_s,
                sticky_preload: self.preload.clone(),
                sticky_void: self.preload_void.clone(),
            })
        } else {
            Role::Scanning {
                self_addr: self.cfg.self_addr,
                director: self.director,
            }
        };
        Desired {
            vip: self.cfg.vip,
            interface: self.cfg.interface.clone(),
            redirects: self.cfg.redirects.clone(),
            mode: self.cfg.mode,
            role,
        }
    }

    pub(super) fn update_desired(&mut self) {
        let d = self.desired();
        if self.last_desired.as_ref() != Some(&d) {
            // Pins to a node that left a pool are void now: deleted with the next reads.
            self.pools_changed = self.director_role;
            self.last_desired = Some(d.clone());
            self.pending_desired = Some(d);
        }
    }
}
