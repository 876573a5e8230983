//! Membership core, sans-IO (issue 3 item 1): who is in the group, who directs, and what
//! the data path should look like.
//!
//! Inputs, all with the caller's `now`:
//! - [`Cluster::handle_datagram`]: an IP protocol-253 payload and its source address
//!   (decoded here; other `lb_id`s, bad MACs and malformed bodies are dropped and counted);
//! - [`Cluster::handle_local_load`]: this node's load sample, once per report period;
//! - [`Cluster::set_role`]: the VRRP core entered (`true`) or left (`false`) MASTER;
//! - [`Cluster::handle_timeout`]: when [`Cluster::poll_timeout`] is due (a spurious call is
//!   harmless).
//!
//! Outputs, drained after every input: [`Cluster::poll_transmit`] (encoded messages and their
//! destination: the load report unicast to the director, the announcement broadcast when
//! director), [`Cluster::poll_desired`] (the data path this node should have, only when it
//! changed) and [`Cluster::poll_event`] (membership events the shell logs).
//!
//! Every report period (1 s) a node sends its report; the director also receives its own
//! (without the network), feeds every live member's capacity and CPU into
//! [`Weights`], rebuilds the [`BucketTable`] incrementally when the quotas moved by more
//! than 1 % of the table or the eligible set changed, and broadcasts an announcement. A
//! member silent for [`FAIL_PERIODS`] periods is dropped at that exact deadline (not at the
//! next tick), so its clients move within 3 periods plus the time to load the table.

mod handover;
pub use handover::{Signal as HandoverSignal, State as HandoverState};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::NodeId;
use super::scheduler::{BucketTable, DEFAULT_BUCKETS, FeedbackParams, NodeLoad, Weights, quotas};
use crate::config::{Drain, Mode, PortRedirect};
use crate::dataplane::{Desired, DirectorState, PortPool, Role, StickyEntry, mark_of};
use crate::status::{ClientPort, ClientStatus, LoadStatus, Mismatch, NodeStatus, PortStatus};
use crate::wire::membership::{
    self, Announcement, Assignment, Error as WireError, Member, MemberState, Message, PortConns,
    PortHealth, Report,
};

/// Silent report periods after which a member has failed (BRIEF §1, issue 3).
pub const FAIL_PERIODS: u32 = 3;
/// Announcement pages sent per period: 20 × 3072 = 61,440 pins replicated every second;
/// larger sets take turns.
pub const PAGES_PER_PERIOD: usize = 20;
/// How long a failed member stays in status (as "not reporting") after it was dropped.
pub const FAILED_SHOWN: Duration = Duration::from_secs(300);

/// The kernel hash seed of the bucket table. Fixed, so every director candidate hashes a
/// client to the same bucket (pins and tables stay comparable across directors).
pub const HASH_SEED: u32 = 0x5058_4841; // "PXHA"

/// What the core needs to know about this node and the group.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub self_addr: Ipv4Addr,
    pub lb_id: u8,
    /// Optional HMAC-SHA256 key of membership messages.
    pub auth_key: Option<Vec<u8>>,
    pub vip: Ipv4Addr,
    pub interface: String,
    pub redirects: Vec<PortRedirect>,
    pub mode: Mode,
    pub sticky_idle_s: u32,
    /// `node.capacity`; `None`: the CPU count of the load sample.
    pub capacity: Option<f64>,
    /// 0 = scanning only: never director, whatever [`Cluster::set_role`] says.
    pub priority: u8,
    pub report_interval: Duration,
    pub buckets: usize,
    /// The group-relevant config in words (VIP, VRID, lb_id, port redirects, mode), sent in
    /// reports; its SHA-256 is [`ClusterConfig::config_digest`].
    pub group_config: String,
    /// SHA-256 of `group_config`, sent in reports; a peer whose digest differs is a config
    /// mismatch (issue 4 §6).
    pub config_digest: [u8; 32],
    /// What a failed listener takes out of the pool: its port (default) or the whole node.
    pub drain: Drain,
}

impl ClusterConfig {
    /// Defaults for everything but the node and group identity.
    pub fn new(
        name: &str,
        self_addr: Ipv4Addr,
        vip: Ipv4Addr,
        redirects: Vec<PortRedirect>,
    ) -> Self {
        ClusterConfig {
            name: name.to_string(),
            self_addr,
            lb_id: 51,
            auth_key: None,
            vip,
            interface: "eth0".into(),
            redirects,
            mode: Mode::Direct,
            sticky_idle_s: 300,
            capacity: None,
            priority: 100,
            report_interval: Duration::from_secs(1),
            buckets: DEFAULT_BUCKETS,
            group_config: String::new(),
            config_digest: [0; 32],
            drain: Drain::Port,
        }
    }
}

/// This node's load for one period, as the shell measured it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalLoad {
    /// Smoothed CPU utilisation 0..=1.
    pub cpu: f64,
    pub cpu_count: usize,
    /// Established connections per redirected port.
    pub conns: BTreeMap<u16, u32>,
    /// Listening on the wildcard address, per listener (`to`) port.
    pub listening: BTreeMap<u16, bool>,
    /// Why a listener port is not fine ("bound to 10.0.0.5 only"); absent when fine.
    pub reasons: BTreeMap<u16, String>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Unicast to the director, or [`membership::BROADCAST`].
    pub dst: Ipv4Addr,
    pub payload: Vec<u8>,
}

/// Something the shell logs (BRIEF §5 wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Joined(Ipv4Addr),
    Failed(Ipv4Addr),
    /// Another node announced itself as director.
    DirectorSeen(Ipv4Addr),
    /// The table of some redirected ports changed: buckets moved.
    TableRebuilt {
        ports: Vec<u16>,
        version: u64,
        moved: usize,
    },
    /// The port monitor found a listener port not fine (BRIEF §5 wording).
    PortFailure {
        port: u16,
        reason: String,
    },
    /// Every listener port is fine again.
    PortsOk,
    /// A member's group config differs from ours (logged once per peer and value).
    ConfigMismatch {
        peer: Ipv4Addr,
        name: String,
        ours: String,
        theirs: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Joined(ip) => write!(f, "Scanning partner joined {ip}"),
            Event::Failed(ip) => write!(f, "Scanning partner has failed {ip}"),
            Event::DirectorSeen(ip) => write!(f, "director is {ip}"),
            Event::TableRebuilt {
                ports,
                version,
                moved,
            } => {
                write!(
                    f,
                    "bucket table of port(s) {ports:?} version {version}: {moved} buckets moved"
                )
            }
            Event::PortFailure { port, reason } => {
                write!(f, "current state: failure (port {port}: {reason})")
            }
            Event::PortsOk => write!(f, "current state: ok"),
            Event::ConfigMismatch {
                peer,
                name,
                ours,
                theirs,
            } => write!(
                f,
                "config mismatch with {name} ({peer}): theirs `{theirs}`, ours `{ours}`; it \
                 gets no new clients until the group settings agree"
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct MemberEntry {
    last_report: Instant,
    report: Report,
}

/// The membership core. See the module docs for the call order.
#[derive(Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    director_role: bool,
    /// The director we report to (ourselves when director).
    director: Option<Ipv4Addr>,
    last_announcement: Option<Instant>,
    epoch: u64,
    members: BTreeMap<Ipv4Addr, MemberEntry>,
    weights: Weights,
    /// One table per redirected (VIP-side) port; identical while every node serves every
    /// port, apart when a listener fails on some node.
    tables: BTreeMap<u16, BucketTable>,
    /// The eligible set each port's table was last built for.
    table_nodes: BTreeMap<u16, BTreeSet<Ipv4Addr>>,
    /// Port monitor: the listener ports last reported not fine, with the reason.
    port_failures: BTreeMap<u16, String>,
    /// Director: members dropped for silence, shown in status for [`FAILED_SHOWN`].
    failed: BTreeMap<Ipv4Addr, (String, Instant)>,
    /// Director: the group config last logged as mismatching, per peer.
    mismatch_logged: BTreeMap<Ipv4Addr, String>,
    next_tick: Option<Instant>,
    local: LocalLoad,
    last_desired: Option<Desired>,
    pending_desired: Option<Desired>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: BTreeMap<&'static str, u64>,
    /// Live pins per node, as the shell last read them from the kernel.
    pinned: BTreeMap<Ipv4Addr, u64>,
    /// Members as the director last announced them (scanning nodes' status).
    announced: Vec<Member>,
    /// Director: the live pins as last read from the kernel, announced every period.
    pins: Vec<Assignment>,
    /// Director: the next page of `pins` to announce when there are more pages than
    /// [`PAGES_PER_PERIOD`].
    page_cursor: usize,
    /// Standby: the director's pins, page by page, each with when it came and the
    /// announcing (director, epoch); a takeover by someone else starts over.
    replica: BTreeMap<u16, (Instant, Vec<Assignment>)>,
    replica_of: Option<(Ipv4Addr, u64)>,
    /// New director: the replicated pins to load into the kernel's sticky map, kept in the
    /// desired state until the data path confirms an apply ([`Cluster::preload_applied`]).
    preload: Vec<StickyEntry>,
    /// Maintenance (`proxyha drain`): our reports say draining, so the director gives us no
    /// new clients while our pinned clients finish.
    draining: bool,
    /// Director: candidates' VRRP priorities and when each last said so (handover).
    candidates: BTreeMap<Ipv4Addr, (u8, Instant)>,
    handover: handover::State,
    handover_signals: VecDeque<handover::Signal>,
}

impl Cluster {
    pub fn new(mut cfg: ClusterConfig) -> Cluster {
        if BucketTable::new(cfg.buckets).is_err() {
            cfg.buckets = DEFAULT_BUCKETS;
        }
        Cluster {
            cfg,
            director_role: false,
            director: None,
            last_announcement: None,
            epoch: 0,
            members: BTreeMap::new(),
            weights: Weights::new(FeedbackParams::default()),
            tables: BTreeMap::new(),
            table_nodes: BTreeMap::new(),
            port_failures: BTreeMap::new(),
            failed: BTreeMap::new(),
            mismatch_logged: BTreeMap::new(),
            next_tick: None,
            local: LocalLoad::default(),
            last_desired: None,
            pending_desired: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: [
                "rx_reports",
                "rx_announcements",
                "tx_reports",
                "tx_announcements",
                "discard_other_lb_id",
                "discard_bad_message",
                "discard_auth",
                "discard_not_director",
                "config_mismatch",
                "tx_handover",
                "rx_handover_request",
                "rx_handover_done",
                "discard_handover",
            ]
            .into_iter()
            .map(|k| (k, 0))
            .collect(),
            pinned: BTreeMap::new(),
            announced: Vec::new(),
            pins: Vec::new(),
            page_cursor: 0,
            replica: BTreeMap::new(),
            replica_of: None,
            preload: Vec::new(),
            draining: false,
            candidates: BTreeMap::new(),
            handover: handover::State::Idle,
            handover_signals: VecDeque::new(),
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_insert(0) += 1;
    }

    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    pub fn is_director(&self) -> bool {
        self.director_role
    }

    pub fn director(&self) -> Option<Ipv4Addr> {
        self.director
    }

    /// The bucket table of redirected port `port` (empty before the first rebuild).
    pub fn table(&self, port: u16) -> BucketTable {
        self.tables
            .get(&port)
            .cloned()
            .unwrap_or_else(|| self.empty_table())
    }

    fn empty_table(&self) -> BucketTable {
        BucketTable::new(self.cfg.buckets)
            .unwrap_or_else(|_| unreachable!("size checked in Cluster::new"))
    }

    /// Starts the core: the first period is due at once, and the scanning data path is
    /// wanted from the start (the VIP on `lo`, ready for a director).
    pub fn handle_startup(&mut self, now: Instant) {
        self.next_tick = Some(now);
        self.update_desired();
    }

    /// The VRRP core entered (`director = true`) or left MASTER.
    pub fn set_role(&mut self, now: Instant, director: bool) {
        let director = director && self.cfg.priority > 0;
        if director == self.director_role {
            return;
        }
        self.director_role = director;
        self.candidates.clear();
        // A handover ends with the role change, except on the successor, which still owes
        // the old director its `Done` once the VIP is out.
        if !(director && matches!(self.handover, handover::State::Taking { .. })) {
            self.handover = handover::State::Idle;
        }
        if director {
            self.epoch += 1;
            let previous = self.director;
            self.director = Some(self.cfg.self_addr);
            self.members.retain(|a, _| *a == self.cfg.self_addr);
            // Continue the previous director's work (issue 3 §6): the members it announced
            // stay in the pool provisionally (a real report replaces the entry within a
            // period; a silent one fails after FAIL_PERIODS as usual), and its live pins are
            // loaded into the kernel, so established connections to surviving nodes keep
            // their node. The previous director itself is left out: we direct because it
            // is gone or stepped down, and if alive it rejoins with its next report.
            self.seed_members(now, previous);
            self.preload = self.replica_preload(now, previous);
            if !self.preload.is_empty() {
                log::info!(
                    "continuing {} client assignments of the previous director",
                    self.preload.len()
                );
            }
            self.table_nodes.clear();
            // A new director starts from fresh tables (see ARCHITECTURE.md, Scheduler).
            self.tables.clear();
            self.failed.clear();
            self.mismatch_logged.clear();
            self.self_report(now);
            self.rebuild(now);
            self.announce();
        } else {
            self.members.clear();
            self.table_nodes.clear();
            self.pinned.clear();
            self.pins.clear();
            self.preload.clear();
            if self.director == Some(self.cfg.self_addr) {
                self.director = None;
                self.last_announcement = None;
            }
        }
        self.update_desired();
    }

    /// Maintenance mode: while draining, this node's reports say so and the director takes
    /// it out of the bucket table (no new clients) but keeps forwarding its pinned clients.
    /// The director hears it with the report sent at once; on the director its own table
    /// moves at once.
    pub fn set_draining(&mut self, now: Instant, draining: bool) {
        if self.draining == draining {
            return;
        }
        self.draining = draining;
        if self.director_role {
            self.self_report(now);
            self.rebuild(now);
            self.announce();
        } else {
            self.send_report();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Live reload: takes the new name, capacity, priority, redirects, mode, sticky idle
    /// time, key and digest in place; members, table and pins stay, so no client moves
    /// unless its node's eligibility changed. Returns false and changes nothing when `cfg`
    /// is another node or group (address or `lb_id` differ): the shell starts a new core.
    pub fn reconfigure(&mut self, now: Instant, cfg: ClusterConfig) -> bool {
        if cfg.self_addr != self.cfg.self_addr || cfg.lb_id != self.cfg.lb_id {
            return false;
        }
        let ports_changed = cfg.redirects != self.cfg.redirects;
        self.cfg = cfg;
        if ports_changed {
            // Last period's listener map is for the old ports; the shell samples again.
            let to: BTreeSet<u16> = self.cfg.redirects.iter().map(|r| r.to).collect();
            let ports: BTreeSet<u16> = self.cfg.redirects.iter().map(|r| r.port).collect();
            self.local.listening.retain(|p, _| to.contains(p));
            self.local.reasons.retain(|p, _| to.contains(p));
            self.port_failures.retain(|p, _| to.contains(p));
            self.tables.retain(|p, _| ports.contains(p));
            self.table_nodes.retain(|p, _| ports.contains(p));
        }
        if self.director_role && self.cfg.priority == 0 {
            // Scanning only from now on; the VRRP core resigns too.
            self.set_role(now, false);
        } else if self.director_role {
            self.self_report(now);
            self.rebuild(now);
            self.announce();
        } else {
            self.send_report();
        }
        self.update_desired();
        true
    }

    /// This node's load for the current period; sent with the next report.
    /// Also the port monitor: a listener port that turns not fine is logged as
    /// `current state: failure (port N: reason)`, all fine again as `current state: ok`.
    pub fn handle_local_load(&mut self, load: LocalLoad) {
        let mut failures = BTreeMap::new();
        for r in &self.cfg.redirects {
            if !load.listening.get(&r.to).copied().unwrap_or(false) {
                let reason = load
                    .reasons
                    .get(&r.to)
                    .cloned()
                    .unwrap_or_else(|| "not listening on the wildcard address".into());
                failures.insert(r.to, reason);
            }
        }
        for (port, reason) in &failures {
            if self.port_failures.get(port) != Some(reason) {
                self.events.push_back(Event::PortFailure {
                    port: *port,
                    reason: reason.clone(),
                });
            }
        }
        if failures.is_empty() && !self.port_failures.is_empty() {
            self.events.push_back(Event::PortsOk);
        }
        self.port_failures = failures;
        self.local = load;
    }

    /// The live pins as read from the kernel: counted per node for status, and announced
    /// to the standby directors with the next announcement.
    pub fn set_pins(&mut self, entries: &[StickyEntry]) {
        let timeout_ms = u64::from(self.cfg.sticky_idle_s) * 1000;
        self.pinned.clear();
        self.pins.clear();
        for e in entries {
            *self.pinned.entry(e.node()).or_insert(0) += 1;
            let idle = timeout_ms.saturating_sub(e.expires_ms);
            self.pins.push(Assignment {
                client: e.client,
                port: e.port,
                node: e.node(),
                idle_ms: u32::try_from(idle).unwrap_or(u32::MAX),
            });
        }
        // In client order, so a client stays on its page while others come and go.
        self.pins.sort_unstable_by_key(|a| (a.client, a.port));
    }

    /// The data path applied a desired state: replicated pins, once loaded, must not be
    /// loaded again (a later apply would revive pins that have expired since).
    pub fn preload_applied(&mut self) {
        if self.preload.is_empty() {
            return;
        }
        self.preload.clear();
        // The state without the preload is what the kernel now holds; no apply needed.
        self.last_desired = Some(self.desired());
    }

    /// Provisional members from the last announcement (all but us and `previous`).
    fn seed_members(&mut self, now: Instant, previous: Option<Ipv4Addr>) {
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

    /// The replicated pins still worth keeping: to a node we direct to, not expired.
    /// A client found on two pages (the set shifted between the periods that carried
    /// them) keeps its freshest pin.
    fn replica_preload(&self, now: Instant, previous: Option<Ipv4Addr>) -> Vec<StickyEntry> {
        let timeout_ms = u64::from(self.cfg.sticky_idle_s) * 1000;
        let mut best: BTreeMap<(Ipv4Addr, u16), StickyEntry> = BTreeMap::new();
        for (at, page) in self.replica.values() {
            let age_ms =
                u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(u64::MAX);
            for a in page {
                if Some(a.node) == previous
                    || !(a.node == self.cfg.self_addr || self.members.contains_key(&a.node))
                {
                    continue;
                }
                let Some(left) =
                    timeout_ms.checked_sub(u64::from(a.idle_ms).saturating_add(age_ms))
                else {
                    continue;
                };
                if left == 0 {
                    continue;
                }
                let e = StickyEntry {
                    client: a.client,
                    port: a.port,
                    mark: mark_of(a.node),
                    expires_ms: left,
                };
                best.entry((a.client, a.port))
                    .and_modify(|old| {
                        if left > old.expires_ms {
                            *old = e;
                        }
                    })
                    .or_insert(e);
            }
        }
        best.into_values().collect()
    }

    /// Standby: keeps one announced page of the director's pins.
    fn keep_page(&mut self, now: Instant, a: Announcement) {
        let of = (a.director, a.epoch);
        if self.replica_of != Some(of) {
            self.replica.clear();
            self.replica_of = Some(of);
        }
        // The set shrank: pages past its end are gone.
        let _ = self.replica.split_off(&a.pages);
        self.replica.insert(a.page, (now, a.assignments));
    }

    /// A protocol-253 payload (IP header removed) from `src`.
    pub fn handle_datagram(&mut self, now: Instant, src: Ipv4Addr, payload: &[u8]) {
        match membership::decode(payload, self.cfg.lb_id, self.cfg.auth_key.as_deref()) {
            Ok((_, Message::Report(r))) => self.handle_report(now, src, r),
            Ok((_, Message::Announcement(a))) => self.handle_announcement(now, src, a),
            Ok((_, Message::Handover(h))) => self.handle_handover(now, src, h),
            Err(WireError::OtherGroup(_)) => self.count("discard_other_lb_id"),
            Err(WireError::BadMac | WireError::MissingMac | WireError::UnexpectedMac) => {
                self.count("discard_auth")
            }
            Err(_) => self.count("discard_bad_message"),
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
    fn pool_signature(&self, report: &Report) -> Vec<(bool, bool)> {
        self.cfg
            .redirects
            .iter()
            .map(|r| (Self::serves(report, r), self.takes_new(report, r)))
            .collect()
    }

    /// Logs a member whose group config differs from ours, once per peer and value.
    fn check_group(&mut self, src: Ipv4Addr, report: &Report) {
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
    fn config_matches(&self, report: &Report) -> bool {
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
            self.keep_page(now, a);
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

    /// Runs the periodic work when due: report, announce, fail silent members, rebuild.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Failure deadlines first: they are exact, not rounded to a tick.
        if self.director_role {
            let limit = self.cfg.report_interval * FAIL_PERIODS;
            let me = self.cfg.self_addr;
            let failed: Vec<Ipv4Addr> = self
                .members
                .iter()
                .filter(|(a, m)| **a != me && now.duration_since(m.last_report) >= limit)
                .map(|(a, _)| *a)
                .collect();
            for a in &failed {
                if let Some(m) = self.members.remove(a) {
                    self.failed.insert(*a, (m.report.name, now));
                }
                self.events.push_back(Event::Failed(*a));
            }
            self.failed
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < FAILED_SHOWN);
            if !failed.is_empty() {
                self.rebuild(now);
            }
        } else if let (Some(d), Some(t)) = (self.director, self.last_announcement)
            && now.duration_since(t) >= self.cfg.report_interval * FAIL_PERIODS
        {
            // The director went quiet: forget it until a new one announces.
            let _ = d;
            self.director = None;
            self.last_announcement = None;
            self.update_desired();
        }
        let Some(tick) = self.next_tick else {
            return;
        };
        if now < tick {
            return;
        }
        // Next period from the schedule, not from `now`, unless we fell far behind.
        let mut next = tick + self.cfg.report_interval;
        if next <= now {
            next = now + self.cfg.report_interval;
        }
        self.next_tick = Some(next);
        if self.director_role {
            self.self_report(now);
            self.rebuild(now);
            self.announce();
        } else {
            self.send_report();
        }
    }

    /// The next time [`Cluster::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_tick;
        let mut earlier = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        let limit = self.cfg.report_interval * FAIL_PERIODS;
        if self.director_role {
            for (a, m) in &self.members {
                if *a != self.cfg.self_addr {
                    earlier(m.last_report + limit);
                }
            }
        } else if let Some(t) = self.last_announcement {
            earlier(t + limit);
        }
        at
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_desired(&mut self) -> Option<Desired> {
        self.pending_desired.take()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn report(&self) -> Report {
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

    fn self_report(&mut self, now: Instant) {
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

    fn send_report(&mut self) {
        let Some(director) = self.director else {
            return;
        };
        if director == self.cfg.self_addr {
            return;
        }
        let msg = Message::Report(self.report());
        if let Ok(payload) = membership::encode(&msg, self.cfg.lb_id, self.cfg.auth_key.as_deref())
        {
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
    fn port_up(report: &Report, to: u16) -> bool {
        !report.ports.iter().any(|p| p.port == to && !p.listening)
    }

    /// Pins of redirected port `r` may keep pointing at this member.
    fn serves(report: &Report, r: &PortRedirect) -> bool {
        Self::port_up(report, r.to)
    }

    /// The member takes new clients on redirected port `r`.
    fn takes_new(&self, report: &Report, r: &PortRedirect) -> bool {
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
    fn active(&self, report: &Report) -> bool {
        self.cfg.redirects.iter().any(|r| self.takes_new(report, r))
    }

    /// Every pin page at once (a leaving director's last word), not just this period's share.
    fn announce_all(&mut self) {
        let pages = self.pins.len().div_ceil(membership::MAX_ASSIGNMENTS).max(1);
        for _ in 0..pages.div_ceil(PAGES_PER_PERIOD) {
            self.announce();
        }
    }

    fn announce(&mut self) {
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
        // The pins, MAX_ASSIGNMENTS a page; every page each period up to PAGES_PER_PERIOD,
        // beyond that in turns (each page then refreshes every ⌈pages / 16⌉ periods).
        let chunks: Vec<&[Assignment]> = if self.pins.is_empty() {
            vec![&[]]
        } else {
            self.pins
                .chunks(membership::MAX_ASSIGNMENTS)
                .take(usize::from(u16::MAX))
                .collect()
        };
        let pages = chunks.len();
        let send = pages.min(PAGES_PER_PERIOD);
        let first = if pages > PAGES_PER_PERIOD {
            self.page_cursor % pages
        } else {
            0
        };
        let mut out = Vec::with_capacity(send);
        for i in 0..send {
            let page = (first + i) % pages;
            let a = Announcement {
                director: self.cfg.self_addr,
                epoch: self.epoch,
                members: members.clone(),
                table_version: self.tables.values().map(BucketTable::version).sum(),
                page: page as u16,
                pages: pages as u16,
                assignments: chunks[page].to_vec(),
            };
            let msg = Message::Announcement(a);
            out.push((
                page,
                membership::encode(&msg, self.cfg.lb_id, self.cfg.auth_key.as_deref()),
            ));
        }
        self.page_cursor = (first + send) % pages;
        for (page, encoded) in out {
            match encoded {
                Ok(payload) => {
                    self.count("tx_announcements");
                    self.transmits.push_back(Transmit {
                        dst: membership::BROADCAST,
                        payload,
                    });
                }
                Err(e) => log::warn!("announcement page {page} of {pages} not sent: {e}"),
            }
        }
    }

    /// Feeds the members' loads into the weights and moves the table when the eligible set
    /// changed or a quota moved by more than 1 % of the table (hysteresis: load noise must
    /// not rewrite the kernel map every second).
    fn rebuild(&mut self, _now: Instant) {
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

    fn desired(&self) -> Desired {
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

    fn update_desired(&mut self) {
        let d = self.desired();
        if self.last_desired.as_ref() != Some(&d) {
            self.last_desired = Some(d.clone());
            self.pending_desired = Some(d);
        }
    }

    /// Status rows: on the director every member (and members failed within
    /// [`FAILED_SHOWN`]), on a scanning node the director (as far as announcements tell)
    /// and itself. Every row says why its share is what it is.
    pub fn nodes(&self, now: Instant) -> Vec<NodeStatus> {
        if self.director_role {
            let mut out: Vec<NodeStatus> = self
                .members
                .iter()
                .map(|(a, m)| self.member_row(*a, &m.report))
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
    fn member_row(&self, addr: Ipv4Addr, r: &Report) -> NodeStatus {
        let role = if addr == self.cfg.self_addr {
            "director"
        } else {
            "scanning"
        };
        let pinned = self.pinned.get(&addr).copied().unwrap_or(0);
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
    fn scanning_rows(&self) -> Vec<NodeStatus> {
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

    fn port_up_all(r: &Report) -> bool {
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
        let (pins, age, source): (Vec<&Assignment>, Duration, String) = if self.director_role {
            (
                self.pins.iter().filter(|a| a.client == ip).collect(),
                Duration::ZERO,
                "the director's live pins, read every second".into(),
            )
        } else {
            let newest = self.replica.values().map(|(at, _)| *at).max();
            let age = newest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            (
                self.replica
                    .values()
                    .flat_map(|(_, p)| p.iter())
                    .filter(|a| a.client == ip)
                    .collect(),
                age,
                match self.director {
                    Some(d) => format!(
                        "the pins director {d} last announced, {:.0} s ago; ask the director for \
                         live ones",
                        age.as_secs_f64()
                    ),
                    None => "no director known; nothing is pinned".into(),
                },
            )
        };
        let ports = self
            .cfg
            .redirects
            .iter()
            .map(|r| {
                // A pin to a node that no longer serves the port is void in the kernel too.
                let valid = |a: &&&Assignment| {
                    !self.director_role
                        || self
                            .members
                            .get(&a.node)
                            .is_some_and(|m| Self::serves(&m.report, r))
                };
                if let Some(pin) = pins.iter().filter(valid).find(|a| a.port == r.port) {
                    let idle = Duration::from_millis(u64::from(pin.idle_ms)) + age;
                    let left = timeout_s.saturating_sub(idle.as_secs());
                    return ClientPort {
                        port: r.port,
                        node: Some(pin.node),
                        name: name_of(pin.node),
                        how: "pinned".into(),
                        detail: format!(
                            "pinned: last seen {:.0} s ago, the pin expires after {left} s more \
                             of silence (ha.sticky_idle_s = {timeout_s})",
                            idle.as_secs_f64()
                        ),
                    };
                }
                let table = self.tables.get(&r.port);
                match table.and_then(|t| t.lookup(ip, HASH_SEED).map(|n| (t, n))) {
                    Some((t, n)) if self.director_role => {
                        let b = super::scheduler::bucket_of(ip, t.size(), HASH_SEED);
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 100);
    const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
    const SEC: Duration = Duration::from_secs(1);

    pub(super) fn cfg(name: &str, addr: Ipv4Addr) -> ClusterConfig {
        let mut c = ClusterConfig::new(
            name,
            addr,
            VIP,
            vec![PortRedirect {
                port: 9090,
                to: 9090,
            }],
        );
        c.buckets = 300;
        c
    }

    pub(super) fn load() -> LocalLoad {
        LocalLoad {
            cpu: 0.1,
            cpu_count: 2,
            conns: BTreeMap::new(),
            listening: [(9090, true)].into_iter().collect(),
            reasons: BTreeMap::new(),
        }
    }

    fn node(name: &str, addr: Ipv4Addr, now: Instant) -> Cluster {
        let mut c = Cluster::new(cfg(name, addr));
        c.handle_local_load(load());
        c.handle_startup(now);
        c
    }

    /// A tiny LAN: delivers every transmit (broadcast to all others, unicast to its
    /// address) and runs every node's timer up to `until` in 100 ms steps.
    pub(super) fn run(
        nodes: &mut [Cluster],
        alive: &[bool],
        from: Instant,
        until: Instant,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut now = from;
        while now <= until {
            for (i, n) in nodes.iter_mut().enumerate() {
                if alive[i] && n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
            let mut sent = Vec::new();
            for (i, n) in nodes.iter_mut().enumerate() {
                while let Some(t) = n.poll_transmit() {
                    if alive[i] {
                        sent.push((n.cfg.self_addr, t));
                    }
                }
                while let Some(e) = n.poll_event() {
                    events.push(e);
                }
            }
            for (src, t) in sent {
                for (i, n) in nodes.iter_mut().enumerate() {
                    let to_it = t.dst == membership::BROADCAST || t.dst == n.cfg.self_addr;
                    if alive[i] && n.cfg.self_addr != src && to_it {
                        n.handle_datagram(now, src, &t.payload);
                    }
                }
            }
            now += Duration::from_millis(100);
        }
        events
    }

    fn director_state(d: &Desired) -> &DirectorState {
        match &d.role {
            Role::Director(s) => s,
            other => panic!("expected a director, got {other:?}"),
        }
    }

    #[test]
    fn scanning_partners_join_with_their_first_report() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        let events = run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        assert!(events.contains(&Event::Joined(B)), "{events:?}");
        assert!(events.contains(&Event::Joined(C)), "{events:?}");
        assert_eq!(nodes[1].director(), Some(A));
        let counts = nodes[0].table(9090).counts();
        assert_eq!(
            counts.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
        let mut last = None;
        while let Some(d) = nodes[0].poll_desired() {
            last = Some(d);
        }
        let d = last.expect("director desired state");
        let s = director_state(&d);
        assert_eq!(s.nodes, vec![B, C]);
        assert_eq!(
            s.pools[0].buckets.iter().filter(|b| b.is_none()).count(),
            100
        );
        // A scanning node's status: the director (from its announcements) and itself.
        let st = nodes[1].nodes(Instant::now());
        assert_eq!(st.len(), 2);
        assert_eq!(
            (st[0].name.as_str(), st[0].role.as_str()),
            ("a", "director"),
            "{:?}",
            nodes[1].announced
        );
        assert_eq!((st[1].address, st[1].role.as_str()), (B, "scanning"));
        assert!((st[1].share - 1.0 / 3.0).abs() < 0.01, "{st:?}");
        // The director's: every member, with its table share.
        let st = nodes[0].nodes(Instant::now());
        assert_eq!(
            st.iter().map(|n| n.address).collect::<Vec<_>>(),
            vec![A, B, C]
        );
        assert!(
            st.iter()
                .all(|n| (n.share - 1.0 / 3.0).abs() < 0.01 && n.healthy)
        );
        // Scanning nodes want the scanning data path with the director known.
        let mut last = None;
        while let Some(d) = nodes[1].poll_desired() {
            last = Some(d);
        }
        assert_eq!(
            last.map(|d| d.role),
            Some(Role::Scanning {
                self_addr: B,
                director: Some(A)
            })
        );
    }

    #[test]
    fn a_partner_silent_for_three_report_periods_has_failed_and_its_buckets_move() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        let before = nodes[0].table(9090).table().to_vec();
        while nodes[0].poll_desired().is_some() {}
        // C dies: its last report was at most one period before this.
        let dead = t0 + 3 * SEC + Duration::from_millis(100);
        let alive = [true, true, false];
        let events = run(
            &mut nodes,
            &alive,
            dead,
            dead + 2 * SEC + Duration::from_millis(500),
        );
        assert!(
            !events.contains(&Event::Failed(C)),
            "failed too early: {events:?}"
        );
        let events = run(&mut nodes, &alive, dead + 26 * SEC / 10, dead + 4 * SEC);
        assert!(events.contains(&Event::Failed(C)), "{events:?}");
        let after = nodes[0].table(9090).table().to_vec();
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        assert_eq!(moved, 100, "only C's buckets move");
        assert!(!after.contains(&C));
        let d = nodes[0]
            .poll_desired()
            .expect("a new table after the failure");
        assert_eq!(director_state(&d).nodes, vec![B]);
    }

    fn two_ports(name: &str, addr: Ipv4Addr, drain: Drain, now: Instant) -> Cluster {
        let mut c = cfg(name, addr);
        c.redirects.push(PortRedirect {
            port: 2121,
            to: 2121,
        });
        c.drain = drain;
        c.group_config = "vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode direct".into();
        c.config_digest = [7; 32];
        let mut n = Cluster::new(c);
        n.handle_local_load(two_port_load(true));
        n.handle_startup(now);
        n
    }

    /// A directing B and C for 3 s, all serving 9090 and 2121.
    fn three_directed(drain: Drain, t0: Instant) -> Vec<Cluster> {
        let mut nodes: Vec<Cluster> = [("a", A), ("b", B), ("c", C)]
            .iter()
            .map(|(n, a)| two_ports(n, *a, drain, t0))
            .collect();
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        nodes
    }

    fn two_port_load(ftp_up: bool) -> LocalLoad {
        let mut l = load();
        l.listening.insert(2121, ftp_up);
        if !ftp_up {
            l.reasons.insert(2121, "nothing is listening".into());
        }
        l
    }

    fn pool_of(d: &Desired, port: u16) -> PortPool {
        director_state(d)
            .pools
            .iter()
            .find(|p| p.ports.contains(&port))
            .cloned()
            .expect("every port has a pool")
    }

    fn last_desired(c: &mut Cluster) -> Desired {
        let mut last = None;
        while let Some(d) = c.poll_desired() {
            last = Some(d);
        }
        last.or_else(|| c.last_desired.clone())
            .expect("a desired state")
    }

    #[test]
    fn a_failed_listener_takes_the_node_out_of_that_ports_pool_only() {
        let t0 = Instant::now();
        let mut nodes = three_directed(Drain::Port, t0);
        let d = last_desired(&mut nodes[0]);
        assert_eq!(
            director_state(&d).pools.len(),
            1,
            "one pool while all serve all"
        );
        let before_9090 = nodes[0].table(9090).table().to_vec();
        // B's FTP listener stops: B logs it, reports it, and leaves 2121's pool only.
        nodes[1].handle_local_load(two_port_load(false));
        let events: Vec<Event> = std::iter::from_fn(|| nodes[1].poll_event()).collect();
        assert_eq!(
            events,
            vec![Event::PortFailure {
                port: 2121,
                reason: "nothing is listening".into()
            }]
        );
        assert_eq!(
            events[0].to_string(),
            "current state: failure (port 2121: nothing is listening)"
        );
        let t1 = t0 + 3 * SEC + Duration::from_millis(50);
        run(&mut nodes, &[true; 3], t1, t1 + 2 * SEC);
        let d = last_desired(&mut nodes[0]);
        let ftp = pool_of(&d, 2121);
        let web = pool_of(&d, 9090);
        assert_eq!(ftp.serving, vec![A, C], "B's FTP pins are void");
        assert!(!ftp.buckets.contains(&Some(B)));
        assert_eq!(web.serving, vec![A, B, C]);
        assert_eq!(
            nodes[0].table(9090).table().to_vec(),
            before_9090,
            "9090's table did not move"
        );
        let row = nodes[0]
            .nodes(t1)
            .into_iter()
            .find(|n| n.address == B)
            .unwrap();
        assert!(
            row.reason
                .contains("port 2121 down (nothing is listening): out of that port's pool only"),
            "{}",
            row.reason
        );
        assert!(row.share > 0.0 && !row.healthy);
        // A pin to B for 2121 read before the kernel replaced it is void, and said so.
        let client = Ipv4Addr::new(10, 9, 1, 9);
        nodes[0].set_pins(&[
            StickyEntry {
                client,
                port: 2121,
                mark: mark_of(B),
                expires_ms: 290_000,
            },
            StickyEntry {
                client,
                port: 9090,
                mark: mark_of(B),
                expires_ms: 290_000,
            },
        ]);
        let c = nodes[0].client(t1, client);
        let by_port: BTreeMap<u16, (Option<Ipv4Addr>, String)> = c
            .ports
            .iter()
            .map(|p| (p.port, (p.node, p.how.clone())))
            .collect();
        assert_eq!(by_port[&9090], (Some(B), "pinned".to_string()));
        assert_eq!(by_port[&2121].1, "new");
        assert_ne!(by_port[&2121].0, Some(B));
        // Back: logged once as ok, and 2121's pool has B again.
        nodes[1].handle_local_load(two_port_load(true));
        let events: Vec<Event> = std::iter::from_fn(|| nodes[1].poll_event()).collect();
        assert_eq!(events, vec![Event::PortsOk]);
        assert_eq!(events[0].to_string(), "current state: ok");
        let t2 = t1 + 3 * SEC;
        run(&mut nodes, &[true; 3], t2, t2 + 2 * SEC);
        let d = last_desired(&mut nodes[0]);
        assert_eq!(pool_of(&d, 2121).serving, vec![A, B, C]);
    }

    #[test]
    fn drain_node_mode_and_maintenance_keep_pins_but_give_no_new_clients() {
        let t0 = Instant::now();
        let mut nodes = three_directed(Drain::Node, t0);
        nodes[1].handle_local_load(two_port_load(false));
        let t1 = t0 + 3 * SEC + Duration::from_millis(50);
        run(&mut nodes, &[true; 3], t1, t1 + 2 * SEC);
        let d = last_desired(&mut nodes[0]);
        let web = pool_of(&d, 9090);
        assert!(
            !web.buckets.contains(&Some(B)),
            "drain = node: no new 9090 clients either"
        );
        assert_eq!(web.serving, vec![A, B, C], "but B's 9090 clients finish");
        assert_eq!(pool_of(&d, 2121).serving, vec![A, C]);
        let row = nodes[0]
            .nodes(t1)
            .into_iter()
            .find(|n| n.address == B)
            .unwrap();
        assert!(row.reason.contains("ha.drain = \"node\""), "{}", row.reason);
        assert_eq!(row.weight, 0.0);
        // Maintenance on C: the same, for every port, with its own reason.
        let t2 = t1 + 3 * SEC;
        nodes[2].set_draining(t2, true);
        run(&mut nodes, &[true; 3], t2, t2 + 2 * SEC);
        let d = last_desired(&mut nodes[0]);
        let web = pool_of(&d, 9090);
        assert!(
            web.buckets.iter().all(|b| b.is_none()),
            "only the director takes new clients"
        );
        assert_eq!(web.serving, vec![A, B, C]);
        let row = nodes[0]
            .nodes(t2)
            .into_iter()
            .find(|n| n.address == C)
            .unwrap();
        assert!(
            row.reason.starts_with("draining (proxyha drain)"),
            "{}",
            row.reason
        );
    }

    #[test]
    fn a_node_back_from_draining_restarts_at_the_neutral_multiplier() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        let busy = |cpu| LocalLoad { cpu, ..load() };
        nodes[0].handle_local_load(busy(0.9));
        nodes[2].handle_local_load(busy(0.9));
        nodes[1].handle_local_load(busy(0.0));
        nodes[0].set_role(t0, true);
        nodes[1].set_draining(t0, true);
        // Twenty periods drained while idle: excluded from the feedback, B does not drift.
        run(&mut nodes, &[true; 3], t0, t0 + 20 * SEC);
        assert_eq!(
            nodes[0].weights.multiplier(B),
            None,
            "out of the feedback while draining"
        );
        let t1 = t0 + 20 * SEC + Duration::from_millis(50);
        nodes[1].set_draining(t1, false);
        run(&mut nodes, &[true; 3], t1, t1 + Duration::from_millis(200));
        let m = nodes[0]
            .weights
            .multiplier(B)
            .expect("back in the feedback");
        assert!(
            m < 1.5,
            "starts near 1 (one feedback step), not at the ceiling: {m}"
        );
    }

    #[test]
    fn a_config_mismatch_is_logged_once_shown_and_gets_no_new_clients() {
        let t0 = Instant::now();
        let mut nodes: Vec<Cluster> = [("a", A), ("b", B)]
            .iter()
            .map(|(n, a)| two_ports(n, *a, Drain::Port, t0))
            .collect();
        nodes[1].cfg.group_config =
            "vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode nat".into();
        nodes[1].cfg.config_digest = [8; 32];
        nodes[0].set_role(t0, true);
        let events = run(&mut nodes, &[true; 2], t0, t0 + 4 * SEC);
        let mismatches: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::ConfigMismatch { .. }))
            .collect();
        assert_eq!(
            mismatches.len(),
            1,
            "once per peer, not once per report: {events:?}"
        );
        let line = mismatches[0].to_string();
        assert!(
            line.contains("config mismatch with b (10.9.0.2): theirs `vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode nat`, ours `vip 10.9.0.100 vrid 51 lb_id 51 ports [9090, 2121] mode direct`"),
            "{line}"
        );
        let m = nodes[0].mismatches();
        assert_eq!(
            (m.len(), m[0].peer, m[0].source.as_str()),
            (1, B, "membership")
        );
        let d = last_desired(&mut nodes[0]);
        assert!(!pool_of(&d, 9090).buckets.contains(&Some(B)));
        assert_eq!(nodes[0].counters()["config_mismatch"], 1);
    }

    #[test]
    fn status_client_says_pinned_or_which_bucket_and_why() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 2], t0, t0 + 3 * SEC);
        let client = Ipv4Addr::new(10, 9, 1, 7);
        nodes[0].set_pins(&[StickyEntry {
            client,
            port: 9090,
            mark: mark_of(B),
            expires_ms: 280_000,
        }]);
        let c = nodes[0].client(t0 + 3 * SEC, client);
        assert_eq!(c.ports.len(), 1);
        assert_eq!(
            (c.ports[0].node, c.ports[0].how.as_str()),
            (Some(B), "pinned")
        );
        assert!(
            c.ports[0].detail.contains("last seen 20 s ago"),
            "{}",
            c.ports[0].detail
        );
        let other = Ipv4Addr::new(10, 9, 1, 8);
        let c = nodes[0].client(t0 + 3 * SEC, other);
        let want = nodes[0].table(9090).lookup(other, HASH_SEED);
        assert_eq!((c.ports[0].node, c.ports[0].how.as_str()), (want, "new"));
        assert!(
            c.ports[0].detail.contains("bucket"),
            "{}",
            c.ports[0].detail
        );
        // A standby answers from the announced pins, and says so.
        run(&mut nodes, &[true; 2], t0 + 3 * SEC, t0 + 5 * SEC);
        let c = nodes[1].client(t0 + 5 * SEC, client);
        assert_eq!(c.ports[0].how, "pinned");
        assert!(c.source.contains("last announced"), "{}", c.source);
    }

    #[test]
    fn pins_beyond_one_page_are_announced_in_pages_and_all_continue() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        // 10,000 clients: four pages of 3072.
        let pins: Vec<StickyEntry> = (0..10_000u32)
            .map(|i| StickyEntry {
                port: 9090,
                client: Ipv4Addr::from(0x0a80_0000 + i),
                mark: mark_of(if i % 2 == 0 { B } else { C }),
                expires_ms: 290_000,
            })
            .collect();
        nodes[0].set_pins(&pins);
        nodes[0].handle_timeout(t0 + 4 * SEC);
        let pages: Vec<Transmit> = std::iter::from_fn(|| nodes[0].poll_transmit())
            .filter(|t| t.dst == membership::BROADCAST)
            .collect();
        assert_eq!(pages.len(), 4, "one announcement per page");
        for t in &pages {
            assert!(t.payload.len() <= 65_535 - 20, "{} bytes", t.payload.len());
            nodes[1].handle_datagram(t0 + 4 * SEC, A, &t.payload);
        }
        assert_eq!(
            nodes[1].replica.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        nodes[1].set_role(t0 + 6 * SEC, true);
        let d = nodes[1].poll_desired().expect("director data path");
        let preload = &director_state(&d).sticky_preload;
        assert_eq!(preload.len(), 10_000, "every pin continues");
        // The set shrinks to one page: the stale pages go with the next announcement.
        let mut c = node("c2", C, t0);
        for t in &pages {
            c.handle_datagram(t0 + 4 * SEC, A, &t.payload);
        }
        nodes[0].set_pins(&pins[..10]);
        nodes[0].handle_timeout(t0 + 5 * SEC);
        while let Some(t) = nodes[0].poll_transmit() {
            if t.dst == membership::BROADCAST {
                c.handle_datagram(t0 + 5 * SEC, A, &t.payload);
            }
        }
        assert_eq!(c.replica.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(c.replica[&0].1.len(), 10);
    }

    #[test]
    fn more_pages_than_a_period_carries_take_turns() {
        let t0 = Instant::now();
        let mut a = node("a", A, t0);
        a.set_role(t0, true);
        while a.poll_transmit().is_some() {}
        let n = (PAGES_PER_PERIOD + 4) * membership::MAX_ASSIGNMENTS;
        let pins: Vec<StickyEntry> = (0..n as u32)
            .map(|i| StickyEntry {
                port: 9090,
                client: Ipv4Addr::from(0x0a00_0000 + i),
                mark: mark_of(A),
                expires_ms: 1000,
            })
            .collect();
        a.set_pins(&pins);
        let lb_id = a.cfg.lb_id;
        let mut sent = Vec::new();
        for k in 1..=2u32 {
            a.handle_timeout(t0 + k * SEC);
            let pages: Vec<u16> = std::iter::from_fn(|| a.poll_transmit())
                .filter(|t| t.dst == membership::BROADCAST)
                .map(|t| match membership::decode(&t.payload, lb_id, None) {
                    Ok((_, Message::Announcement(x))) => {
                        assert_eq!(usize::from(x.pages), PAGES_PER_PERIOD + 4);
                        x.page
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            sent.push(pages);
        }
        assert_eq!(sent[0], (0..20).collect::<Vec<u16>>());
        assert_eq!(sent[1], (20..24).chain(0..16).collect::<Vec<u16>>());
    }

    #[test]
    fn a_new_director_continues_the_announced_pins_to_surviving_nodes() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        // The kernel's pins on A: clients on B, C and A itself, with 290 s left of 300.
        let pin = |client: u8, node: Ipv4Addr| StickyEntry {
            client: Ipv4Addr::new(10, 9, 1, client),
            port: 9090,
            mark: mark_of(node),
            expires_ms: 290_000,
        };
        nodes[0].set_pins(&[pin(1, B), pin(2, C), pin(3, A)]);
        let t1 = t0 + 3 * SEC + Duration::from_millis(100);
        run(&mut nodes, &[true; 3], t1, t1 + SEC);
        assert_eq!(
            nodes[1]
                .replica
                .values()
                .map(|(_, p)| p.len())
                .sum::<usize>(),
            3,
            "B holds A's pins from its announcement"
        );
        // A crashes; VRRP makes B master two seconds later.
        let t2 = t1 + 3 * SEC;
        while nodes[1].poll_desired().is_some() {}
        nodes[1].set_role(t2, true);
        let d = nodes[1].poll_desired().expect("director data path");
        let s = director_state(&d);
        assert_eq!(
            s.nodes,
            vec![C],
            "C stays in the pool before its first report to B"
        );
        let mut clients: Vec<_> = s
            .sticky_preload
            .iter()
            .map(|e| (e.client, e.node()))
            .collect();
        clients.sort();
        assert_eq!(
            clients,
            vec![
                (Ipv4Addr::new(10, 9, 1, 1), B),
                (Ipv4Addr::new(10, 9, 1, 2), C)
            ],
            "pins to surviving nodes continue; the dead director's own clients do not"
        );
        // Ages carry over: 10 s idle when announced, about 2 s since the last announcement.
        let left = s.sticky_preload[0].expires_ms;
        assert!((287_000..=288_500).contains(&left), "{left}");
        // Loaded once: after the data path confirms, the preload is gone for good.
        nodes[1].preload_applied();
        assert!(
            nodes[1].poll_desired().is_none(),
            "no second apply for the preload"
        );
        nodes[1].handle_timeout(t2 + SEC);
        if let Some(d) = nodes[1].poll_desired() {
            assert!(director_state(&d).sticky_preload.is_empty());
        }
    }

    #[test]
    fn other_lb_ids_are_ignored_and_counted() {
        let t0 = Instant::now();
        let mut d = node("a", A, t0);
        d.set_role(t0, true);
        let mut other = Cluster::new(ClusterConfig {
            lb_id: 52,
            ..cfg("x", B)
        });
        other.handle_local_load(load());
        other.handle_startup(t0);
        let a = Announcement {
            director: B,
            epoch: 1,
            members: Vec::new(),
            table_version: 0,
            page: 0,
            pages: 1,
            assignments: Vec::new(),
        };
        let bytes = membership::encode(&Message::Announcement(a), 52, None).unwrap_or_default();
        other.handle_datagram(t0, B, &bytes);
        d.handle_datagram(t0, B, &bytes);
        assert_eq!(d.counters()["discard_other_lb_id"], 1);
        let r = membership::encode(&Message::Report(other.report()), 52, None).unwrap_or_default();
        d.handle_datagram(t0, B, &r);
        assert_eq!(d.counters()["discard_other_lb_id"], 2);
        assert_eq!(
            d.nodes(Instant::now()).len(),
            1,
            "no member from another group"
        );
    }

    #[test]
    fn messages_signed_with_another_key_are_dropped_and_counted() {
        let t0 = Instant::now();
        let keyed = |name: &str, addr, key: &[u8]| {
            let mut c = Cluster::new(ClusterConfig {
                auth_key: Some(key.to_vec()),
                ..cfg(name, addr)
            });
            c.handle_local_load(load());
            c.handle_startup(t0);
            c
        };
        let mut nodes = vec![
            keyed("a", A, b"0123456789abcdef"),
            keyed("b", B, b"0123456789abcdef"),
            keyed("c", C, b"another-key-0000"),
        ];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        let members: Vec<Ipv4Addr> = nodes[0]
            .nodes(Instant::now())
            .iter()
            .map(|n| n.address)
            .collect();
        assert_eq!(members, vec![A, B], "C signs with another key");
        assert!(nodes[2].counters()["discard_auth"] > 0);
        assert_eq!(nodes[2].director(), None);
    }

    #[test]
    fn priority_zero_never_directs() {
        let t0 = Instant::now();
        let mut c = Cluster::new(ClusterConfig {
            priority: 0,
            ..cfg("s", C)
        });
        c.handle_startup(t0);
        c.set_role(t0, true);
        assert!(!c.is_director());
        assert!(matches!(
            c.poll_desired().map(|d| d.role),
            Some(Role::Scanning { .. })
        ));
    }

    #[test]
    fn roles_follow_vrrp_and_the_data_path_changes_only_on_change() {
        let t0 = Instant::now();
        let mut c = node("a", A, t0);
        assert!(matches!(
            c.poll_desired().map(|d| d.role),
            Some(Role::Scanning { director: None, .. })
        ));
        c.handle_timeout(t0);
        assert_eq!(c.poll_desired(), None, "nothing changed");
        c.set_role(t0, true);
        let d = c.poll_desired().expect("director data path");
        assert_eq!(director_state(&d).pools[0].buckets.len(), 300);
        assert!(
            director_state(&d).pools[0]
                .buckets
                .iter()
                .all(|b| b.is_none()),
            "alone: all local"
        );
        assert_eq!(
            c.poll_transmit().map(|t| t.dst),
            Some(membership::BROADCAST),
            "announces at once"
        );
        c.handle_timeout(t0 + SEC);
        assert_eq!(c.poll_desired(), None, "same table");
        c.set_role(t0 + SEC, false);
        assert!(matches!(
            c.poll_desired().map(|d| d.role),
            Some(Role::Scanning { director: None, .. })
        ));
        assert!(c.nodes(Instant::now()).iter().all(|n| n.role == "scanning"));
    }

    #[test]
    fn a_node_not_listening_gets_no_buckets_but_stays_a_member() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
        nodes[1].handle_local_load(LocalLoad {
            listening: [(9090, false)].into_iter().collect(),
            ..load()
        });
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 2], t0, t0 + 3 * SEC);
        assert_eq!(nodes[0].table(9090).counts().get(&B), None);
        let st = nodes[0].nodes(Instant::now());
        assert_eq!(st.len(), 2);
        assert!(!st[1].healthy);
        while let Some(d) = nodes[0].poll_desired() {
            assert!(
                director_state(&d).pools[0]
                    .buckets
                    .iter()
                    .all(|b| b.is_none())
            );
        }
    }

    #[test]
    fn a_draining_node_gets_no_new_buckets_but_keeps_its_pins_forwarded() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0), node("c", C, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 3], t0, t0 + 3 * SEC);
        assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&100));
        while nodes[0].poll_desired().is_some() {}
        let t1 = t0 + 3 * SEC + Duration::from_millis(50);
        nodes[1].set_draining(t1, true);
        assert!(nodes[1].is_draining());
        // The report, and the candidacy that rides with every report.
        let sent: Vec<Transmit> = std::iter::from_fn(|| nodes[1].poll_transmit()).collect();
        assert_eq!(sent.len(), 2, "the report goes out at once: {sent:?}");
        assert_eq!(sent[0].payload[6], membership::TYPE_REPORT);
        assert_eq!(sent[1].payload[6], membership::TYPE_HANDOVER);
        nodes[0].handle_datagram(t1, B, &sent[0].payload);
        assert_eq!(
            nodes[0].table(9090).counts().get(&B),
            None,
            "no new clients"
        );
        let d = nodes[0].poll_desired().expect("a new table");
        let s = director_state(&d);
        assert!(
            s.nodes.contains(&B),
            "pinned clients are still forwarded to B"
        );
        assert!(!s.pools[0].buckets.contains(&Some(B)));
        let st = nodes[0].nodes(Instant::now());
        let b = st.iter().find(|n| n.address == B).expect("B still listed");
        assert_eq!((b.weight, b.share), (0.0, 0.0));
        // It stays out while draining, and comes back on undrain.
        run(&mut nodes, &[true; 3], t1, t1 + 3 * SEC);
        assert_eq!(nodes[0].table(9090).counts().get(&B), None);
        let t2 = t1 + 3 * SEC + Duration::from_millis(50);
        nodes[1].set_draining(t2, false);
        run(&mut nodes, &[true; 3], t2, t2 + SEC);
        assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&100));
    }

    #[test]
    fn a_draining_director_keeps_directing_but_serves_no_new_clients_itself() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 2], t0, t0 + 2 * SEC);
        nodes[0].set_draining(t0 + 2 * SEC, true);
        assert!(nodes[0].is_director());
        assert_eq!(nodes[0].table(9090).counts().get(&A), None);
        assert_eq!(nodes[0].table(9090).counts().get(&B), Some(&300));
    }

    #[test]
    fn reconfigure_in_place_keeps_members_and_table() {
        let t0 = Instant::now();
        let mut nodes = vec![node("a", A, t0), node("b", B, t0)];
        nodes[0].set_role(t0, true);
        run(&mut nodes, &[true; 2], t0, t0 + 2 * SEC);
        let table = nodes[0].table(9090).table().to_vec();
        while nodes[0].poll_desired().is_some() {}
        let mut c = cfg("a", A);
        c.sticky_idle_s = 60;
        assert!(nodes[0].reconfigure(t0 + 2 * SEC, c));
        assert_eq!(nodes[0].table(9090).table(), &table[..], "no client moves");
        assert_eq!(nodes[0].nodes(Instant::now()).len(), 2, "members stay");
        let d = nodes[0].poll_desired().expect("new sticky timeout");
        assert_eq!(director_state(&d).sticky_idle_s, 60);
        // Another address or group is a new core, not a reconfiguration.
        assert!(!nodes[0].reconfigure(t0, cfg("a", C)));
        assert!(!nodes[0].reconfigure(
            t0,
            ClusterConfig {
                lb_id: 9,
                ..cfg("a", A)
            }
        ));
        // Priority 0: the director steps down to the scanning data path.
        let c = ClusterConfig {
            priority: 0,
            ..cfg("a", A)
        };
        assert!(nodes[0].reconfigure(t0 + 2 * SEC, c));
        assert!(!nodes[0].is_director());
        assert!(matches!(
            nodes[0].poll_desired().map(|d| d.role),
            Some(Role::Scanning { .. })
        ));
    }
}
