//! Members: load reports in, announcements out, who is eligible for what.

use super::*;

impl Cluster {
    /// Provisional members from the last announcement (all but us and `previous`).
    pub(super) fn seed_members(&mut self, now: Instant, previous: Option<Ipv4Addr>) {
        let me = self.cfg.self_addr;
        for m in &self.announced {
            if m.address == me || Some(m.address) == previous {
                continue;
            }
            let report = Report {
                name: m.name.clone(),
                address: m.address,
                capacity: if m.weight.is_finite() && m.weight > 0.0 {
                    m.weight
                } else {
                    1.0
                },
                cpu_load: 0.0,
                cpu_count: 1,
                connections: Vec::new(),
                ports: Vec::new(),
                config_digest: [0; 32],
                group_config: String::new(),
                software_version: String::new(),
                draining: m.state == MemberState::Draining,
            };
            self.members.insert(
                m.address,
                MemberEntry {
                    last_report: now,
                    report,
                },
            );
        }
    }

    /// A load report from `src` (the director keeps it; others ignore it).
    pub fn handle_report(&mut self, now: Instant, src: Ipv4Addr, report: Report) {
        self.count("rx_reports");
        if !self.director_role {
            self.count("discard_not_director");
            return;
        }
        // The report names its sender; a mismatch is a spoof or a NAT in between.
        if report.address != src {
            self.count("discard_bad_message");
            return;
        }
        let before = self
            .members
            .get(&src)
            .map(|m| self.pool_signature(&m.report));
        let joined = before.is_none();
        self.check_group(src, &report);
        self.failed.remove(&src);
        let after = self.pool_signature(&report);
        self.members.insert(
            src,
            MemberEntry {
                last_report: now,
                report,
            },
        );
        if joined {
            self.events.push_back(Event::Joined(src));
        }
        // A new node gets clients, and a failed listener or a drain loses them, at once
        // rather than at the next period.
        if before.as_ref() != Some(&after) {
            self.rebuild(now);
        }
    }

    /// What decides a member's place in the pools: per redirected port, whether it serves
    /// pinned clients and whether it takes new ones.
    pub(super) fn pool_signature(&self, report: &Report) -> Vec<(bool, bool)> {
        self.cfg
            .redirects
            .iter()
            .map(|r| (Self::serves(report, r), self.takes_new(report, r)))
            .collect()
    }

    /// Logs a member whose group config differs from ours, once per peer and value.
    pub(super) fn check_group(&mut self, src: Ipv4Addr, report: &Report) {
        if self.config_matches(report) {
            self.mismatch_logged.remove(&src);
            return;
        }
        if self.mismatch_logged.get(&src) == Some(&report.group_config) {
            return;
        }
        self.mismatch_logged
            .insert(src, report.group_config.clone());
        self.count("config_mismatch");
        self.events.push_back(Event::ConfigMismatch {
            peer: src,
            name: report.name.clone(),
            ours: self.cfg.group_config.clone(),
            theirs: report.group_config.clone(),
        });
    }

    /// A provisional member (seeded from an announcement) has no digest yet: unknown is
    /// not a mismatch.
    pub(super) fn config_matches(&self, report: &Report) -> bool {
        report.config_digest == [0; 32] || report.config_digest == self.cfg.config_digest
    }

    /// An announcement from `src`: that node directs.
    pub fn handle_announcement(&mut self, now: Instant, src: Ipv4Addr, a: Announcement) {
        if src == self.cfg.self_addr {
            // Our own broadcast, looped back by the kernel.
            return;
        }
        self.count("rx_announcements");
        if a.director != src {
            self.count("discard_bad_message");
            return;
        }
        self.last_announcement = Some(now);
        self.announced = a.members.clone();
        if !self.director_role {
            self.replica_of = Some((a.director, a.epoch));
            self.keep_page(now, &a);
        }
        if self.director_role {
            // Two directors: VRRP settles it; we keep directing until it does.
            self.count("discard_not_director");
            return;
        }
        if self.director != Some(src) {
            self.director = Some(src);
            self.events.push_back(Event::DirectorSeen(src));
            self.update_desired();
            // Report at once, so a new director learns of us within one round trip.
            self.send_report();
        }
    }

    pub(super) fn report(&self) -> Report {
        let ports: Vec<u16> = self.cfg.redirects.iter().map(|r| r.to).collect();
        let capacity = match self.cfg.capacity {
            Some(c) if c.is_finite() && c > 0.0 => c,
            _ => self.local.cpu_count.max(1) as f64,
        };
        Report {
            name: self.cfg.name.clone(),
            address: self.cfg.self_addr,
            capacity,
            cpu_load: self.local.cpu.clamp(0.0, 1.0) as f32,
            cpu_count: u16::try_from(self.local.cpu_count).unwrap_or(u16::MAX),
            connections: ports
                .iter()
                .map(|p| PortConns {
                    port: *p,
                    established: self.local.conns.get(p).copied().unwrap_or(0),
                })
                .collect(),
            ports: ports
                .iter()
                .map(|p| {
                    let listening = self.local.listening.get(p).copied().unwrap_or(false);
                    PortHealth {
                        port: *p,
                        listening,
                        reason: if listening {
                            String::new()
                        } else {
                            self.local
                                .reasons
                                .get(p)
                                .cloned()
                                .unwrap_or_else(|| "not listening on the wildcard address".into())
                        },
                    }
                })
                .collect(),
            config_digest: self.cfg.config_digest,
            group_config: self.cfg.group_config.clone(),
            software_version: crate::update::VERSION.to_string(),
            draining: self.draining,
        }
    }

    pub(super) fn self_report(&mut self, now: Instant) {
        let me = self.cfg.self_addr;
        let report = self.report();
        self.members.insert(
            me,
            MemberEntry {
                last_report: now,
                report,
            },
        );
    }

    pub(super) fn send_report(&mut self) {
        let Some(director) = self.director else {
            return;
        };
        if director == self.cfg.self_addr {
            return;
        }
        let msg = Message::Report(self.report());
        if let Ok(payload) = self.seal(&msg) {
            self.count("tx_reports");
            self.transmits.push_back(Transmit {
                dst: director,
                payload,
            });
        }
        self.send_candidacy(director);
    }

    /// The listener port `to` is not known to be down on this member (a provisional
    /// member seeded from an announcement has no port list yet).
    pub(super) fn port_up(report: &Report, to: u16) -> bool {
        !report.ports.iter().any(|p| p.port == to && !p.listening)
    }

    /// Pins of redirected port `r` may keep pointing at this member.
    pub(super) fn serves(report: &Report, r: &PortRedirect) -> bool {
        Self::port_up(report, r.to)
    }

    /// The member takes new clients on redirected port `r`.
    pub(super) fn takes_new(&self, report: &Report, r: &PortRedirect) -> bool {
        let ports_ok = match self.cfg.drain {
            Drain::Port => Self::port_up(report, r.to),
            Drain::Node => self
                .cfg
                .redirects
                .iter()
                .all(|x| Self::port_up(report, x.to)),
        };
        ports_ok && !report.draining && self.config_matches(report)
    }

    /// Active in announcements: takes new clients on some port.
    pub(super) fn active(&self, report: &Report) -> bool {
        self.cfg.redirects.iter().any(|r| self.takes_new(report, r))
    }

    pub(super) fn announce(&mut self) {
        let members: Vec<Member> = self
            .members
            .iter()
            .map(|(a, m)| Member {
                address: *a,
                name: m.report.name.clone(),
                weight: self.weights.weight(*a).unwrap_or(0.0),
                state: if self.active(&m.report) {
                    MemberState::Active
                } else {
                    MemberState::Draining
                },
            })
            .take(membership::MAX_MEMBERS)
            .collect();
        // No pins here: they go to the standby candidates by change (`pins`); the
        // broadcast stays small whatever the number of clients.
        let a = Announcement {
            director: self.cfg.self_addr,
            epoch: self.epoch,
            members,
            table_version: self.tables.values().map(BucketTable::version).sum(),
            page: 0,
            pages: 1,
            assignments: Vec::new(),
        };
        match self.seal(&Message::Announcement(a)) {
            Ok(payload) => {
                self.count("tx_announcements");
                if self.cfg.announce_to.is_empty() {
                    self.transmits.push_back(Transmit {
                        dst: membership::BROADCAST,
                        payload,
                    });
                } else {
                    let me = self.cfg.self_addr;
                    for dst in self.cfg.announce_to.iter().filter(|a| **a != me) {
                        self.transmits.push_back(Transmit {
                            dst: *dst,
                            payload: payload.clone(),
                        });
                    }
                }
            }
            Err(e) => log::warn!("announcement not sent: {e}"),
        }
    }
}
