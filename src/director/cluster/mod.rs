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
mod members;
mod pins;
mod status;
mod tables;
pub use handover::{Signal as HandoverSignal, State as HandoverState};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::NodeId;
use super::scheduler::{BucketTable, DEFAULT_BUCKETS, FeedbackParams, NodeLoad, Weights, quotas};
use crate::config::{Drain, Mode, PortRedirect};
use crate::dataplane::{Desired, DirectorState, PortPool, Role, StickyEntry};
use crate::director::replication::{Held, Outbox};
use crate::status::{ClientPort, ClientStatus, LoadStatus, Mismatch, NodeStatus, PortStatus};
use crate::wire::membership::{
    self, Announcement, Error as WireError, Freshness, Member, MemberState, Message, PortConns,
    PortHealth, Report,
};

/// Silent report periods after which a member has failed (BRIEF §1, issue 3).
pub const FAIL_PERIODS: u32 = 3;
/// Senders remembered for replay checks and the discard log limiter (a group is 2–8 nodes).
const FRESH_TABLE_CAP: usize = 64;
/// A membership discard is logged once per (sender, reason) in this much time.
const DISCARD_LOG_WINDOW: Duration = Duration::from_secs(600);

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
    /// Where announcements go: the unicast VRRP peers (where broadcast is dropped as
    /// multicast is), or, empty, the limited broadcast address.
    pub announce_to: Vec<Ipv4Addr>,
    /// The only senders whose messages count (`discard_source` for any other); empty: any.
    pub allowed_sources: Vec<Ipv4Addr>,
    /// This run's boot id, larger than any earlier run's on this node (the shell persists
    /// it): with `auth_key`, receivers accept our messages only in (boot, seq) order.
    pub boot_id: u64,
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
            announce_to: Vec::new(),
            allowed_sources: Vec::new(),
            boot_id: 0,
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

/// Report periods a returning candidate waits for the director's first announcement
/// before it preempts a master that announced none (`Cluster::preempt_ready`).
pub const ANNOUNCE_GRACE_PERIODS: u32 = 2;

/// Whether a returning candidate may preempt now (`Cluster::preempt_ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreemptReady {
    /// Nothing to lose: we direct, stickiness is off, or we hold the director's pins.
    Yes,
    /// No director announced itself within the grace: the master directs nothing.
    NoDirector,
    /// A master advertises, its director's announcement is not here yet.
    AwaitingAnnouncement,
    /// The director is known, its pins are not all copied yet.
    CopyPending,
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
    /// Members as the director last announced them (scanning nodes' status).
    announced: Vec<Member>,
    /// Director: the pins as last read from the kernel, and what the standbys were told.
    outbox: Outbox,
    /// Director: the pools changed since the void pins were last deleted.
    pools_changed: bool,
    /// Standby: the director's pins as replicated.
    held: Held,
    /// The (director, epoch) we follow, from its announcements.
    replica_of: Option<(Ipv4Addr, u64)>,
    /// New director: the replicated pins to load into the kernel's sticky map, kept in the
    /// desired state until the data path confirms an apply ([`Cluster::preload_applied`]).
    preload: Vec<StickyEntry>,
    /// New director: staged pins to delete first (their node is gone), kept like `preload`.
    preload_void: Vec<StickyEntry>,
    /// Standby: the kernel's `sticky` map holds every change handed to the data path so far
    /// ([`Cluster::pins_to_stage`]); false after a stage failed until a whole one succeeds.
    staged_ok: bool,
    /// Standby: the stage in flight that carries every held pin (after a failure).
    restage: Option<u64>,
    /// Standby: the id of the last stage handed out.
    stage_id: u64,
    /// Standby: no stage before this (after a failure).
    stage_after: Option<Instant>,
    /// Maintenance (`proxyha drain`): our reports say draining, so the director gives us no
    /// new clients while our pinned clients finish.
    draining: bool,
    /// Director: candidates' VRRP priorities and when each last said so (handover).
    candidates: BTreeMap<Ipv4Addr, (u8, Instant)>,
    handover: handover::State,
    handover_signals: VecDeque<handover::Signal>,
    /// With `auth_key`: our next sequence number, and each sender's newest accepted one.
    seq: u64,
    fresh_seen: HashMap<Ipv4Addr, Freshness>,
    /// Set by the shell before the role change: the VRRP master this node preempted, alive.
    preempted: Option<Ipv4Addr>,
    /// When each (sender, reason) discard was last logged.
    discard_log: HashMap<(Ipv4Addr, &'static str), Instant>,
}

impl Cluster {
    pub fn new(mut cfg: ClusterConfig) -> Cluster {
        if BucketTable::new(cfg.buckets).is_err() {
            cfg.buckets = DEFAULT_BUCKETS;
        }
        let idle = Duration::from_secs(u64::from(cfg.sticky_idle_s));
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
                "discard_replay",
                "discard_source",
                "discard_not_director",
                "config_mismatch",
                "tx_handover",
                "rx_handover_request",
                "rx_handover_done",
                "discard_handover",
                "rx_pins",
                "tx_pins",
                "tx_pins_bytes",
                "discard_pins",
            ]
            .into_iter()
            .map(|k| (k, 0))
            .collect(),
            announced: Vec::new(),
            outbox: Outbox::new(idle),
            pools_changed: false,
            held: Held::new(idle),
            replica_of: None,
            preload: Vec::new(),
            preload_void: Vec::new(),
            staged_ok: true,
            restage: None,
            stage_id: 0,
            stage_after: None,
            draining: false,
            candidates: BTreeMap::new(),
            handover: handover::State::Idle,
            handover_signals: VecDeque::new(),
            seq: 0,
            fresh_seen: HashMap::new(),
            preempted: None,
            discard_log: HashMap::new(),
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_insert(0) += 1;
    }

    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// The VRRP core became master by preempting `master`, which still advertised: call
    /// before [`Cluster::set_role`], which then keeps that director's pins and membership.
    pub fn set_preempted(&mut self, master: Option<Ipv4Addr>) {
        self.preempted = master;
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
            // A previous director we preempted lives on as a scanning node: it stays a member
            // and keeps its clients; one that failed or stepped down leaves the pool.
            let alive = self.preempted.take().is_some_and(|p| Some(p) == previous);
            let gone = if alive { None } else { previous };
            self.director = Some(self.cfg.self_addr);
            self.members.retain(|a, _| *a == self.cfg.self_addr);
            // Continue the previous director's work (issue 3 §6): the members it announced
            // stay in the pool provisionally (a real report replaces the entry within a
            // period; a silent one fails after FAIL_PERIODS as usual), and its live pins are
            // loaded into the kernel, so established connections to surviving nodes keep
            // their node. The previous director itself is left out: we direct because it
            // is gone or stepped down, and if alive it rejoins with its next report.
            self.seed_members(now, gone);
            if let Some(p) = previous.filter(|p| alive && self.members.contains_key(p)) {
                // The director we preempted scans for us from now on (its next report
                // replaces the provisional entry): say so, as for any node that joins.
                self.events.push_back(Event::Joined(p));
            }
            self.start_directing_pins(now, gone);
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
            self.stop_directing_pins();
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
        // Our sequence numbers go on: the boot id stays this run's.
        let boot_id = self.cfg.boot_id;
        self.cfg = cfg;
        self.cfg.boot_id = boot_id;
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

    /// A protocol-253 payload (IP header removed) from `src`.
    pub fn handle_datagram(&mut self, now: Instant, src: Ipv4Addr, payload: &[u8]) {
        if !self.cfg.allowed_sources.is_empty()
            && src != self.cfg.self_addr
            && !self.cfg.allowed_sources.contains(&src)
        {
            let why = "not in ha.unicast_peers / ha.vrrp_sources";
            return self.discard(now, src, "discard_source", &why);
        }
        let msg =
            match membership::decode_fresh(payload, self.cfg.lb_id, self.cfg.auth_key.as_deref()) {
                Ok((_, msg, fresh)) => {
                    if let Some(fresh) = fresh
                        && !self.fresh_enough(src, fresh)
                    {
                        let last = self.fresh_seen.get(&src).copied().unwrap_or_default();
                        let why = format_args!(
                            "replayed or stale (boot {} seq {}, newest accepted boot {} seq {})",
                            fresh.boot, fresh.seq, last.boot, last.seq
                        );
                        return self.discard(now, src, "discard_replay", &why);
                    }
                    msg
                }
                Err(WireError::OtherGroup(_)) => return self.count("discard_other_lb_id"),
                Err(
                    e @ (WireError::BadMac
                    | WireError::MissingMac
                    | WireError::UnexpectedMac
                    | WireError::NoFreshness),
                ) => return self.discard(now, src, "discard_auth", &e),
                Err(e) => return self.discard(now, src, "discard_bad_message", &e),
            };
        match msg {
            Message::Report(r) => self.handle_report(now, src, r),
            Message::Announcement(a) => self.handle_announcement(now, src, a),
            Message::Handover(h) => self.handle_handover(now, src, h),
            Message::Pins(p) => self.handle_pins(now, src, p),
            Message::Replica(r) => self.handle_replica(src, r),
        }
    }

    /// Accepts `fresh` from `src` when it is newer than everything accepted from `src`
    /// (a later boot, or a later sequence number of the same boot) and remembers it.
    /// After our own restart the first message of each sender is taken as its newest.
    fn fresh_enough(&mut self, src: Ipv4Addr, fresh: Freshness) -> bool {
        if let Some(last) = self.fresh_seen.get(&src) {
            if fresh <= *last {
                return false;
            }
        } else if self.fresh_seen.len() >= FRESH_TABLE_CAP {
            // Only key holders get here; a group has at most a few dozen nodes.
            self.fresh_seen.clear();
        }
        self.fresh_seen.insert(src, fresh);
        true
    }

    /// `msg` encoded for the group: with `auth_key`, our boot id, the next sequence number
    /// and the MAC.
    fn seal(&mut self, msg: &Message) -> Result<Vec<u8>, WireError> {
        self.seq += 1;
        let fresh = Freshness {
            boot: self.cfg.boot_id,
            seq: self.seq,
        };
        membership::encode_fresh(msg, self.cfg.lb_id, self.cfg.auth_key.as_deref(), fresh)
    }

    /// Counts a discarded message and logs it once per (sender, reason) per
    /// [`DISCARD_LOG_WINDOW`]: a forger or a replayer shows once, not once a second.
    fn discard(
        &mut self,
        now: Instant,
        src: Ipv4Addr,
        reason: &'static str,
        why: &dyn std::fmt::Display,
    ) {
        self.count(reason);
        let key = (src, reason);
        if let Some(at) = self.discard_log.get(&key)
            && now.saturating_duration_since(*at) < DISCARD_LOG_WINDOW
        {
            return;
        }
        if self.discard_log.len() >= FRESH_TABLE_CAP {
            self.discard_log
                .retain(|_, at| now.saturating_duration_since(*at) < DISCARD_LOG_WINDOW);
        }
        if self.discard_log.len() < FRESH_TABLE_CAP {
            self.discard_log.insert(key, now);
        }
        log::warn!(
            "membership: discarding a message from {src}: {why} (membership_{reason}; logged once per sender per {} min)",
            DISCARD_LOG_WINDOW.as_secs() / 60
        );
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
            self.send_pins(now);
        } else {
            self.send_report();
            if let Some(d) = self.director {
                self.send_replica(now, d);
            }
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
}

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod tests;
