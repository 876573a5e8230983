//! One virtual router instance: the RFC 9568 §6.4 state machine.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::{
    Action, Counters, DISCARD_LOG_WINDOW, GARP_REPEAT_DELAY, RouterConfig, SOURCE_LOG_WINDOW,
    State, master_down_interval, skew_time,
};
use crate::wire::ipv4;
use crate::wire::vrrp::{self, Packet, Repr, Version};

/// Bound on the per-sender tables (discard log limiter, VIP mismatch memory): a
/// spoofed flood from many source addresses must not grow memory without limit.
const SENDER_TABLE_CAP: usize = 64;

/// Why a datagram was discarded; each reason is one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Discard {
    IpHeader,
    Ttl,
    Version,
    Type,
    Checksum,
    Length,
    Vrid,
    Interval,
    NoAddresses,
    Auth,
    Own,
    Source,
}

impl Discard {
    fn counter_name(self) -> &'static str {
        match self {
            Discard::IpHeader => "discard_ip_header",
            Discard::Ttl => "discard_ttl",
            Discard::Version => "discard_version",
            Discard::Type => "discard_type",
            Discard::Checksum => "discard_checksum",
            Discard::Length => "discard_length",
            Discard::Vrid => "discard_vrid",
            Discard::Interval => "discard_interval",
            Discard::NoAddresses => "discard_no_addresses",
            Discard::Auth => "discard_auth",
            Discard::Own => "discard_own",
            Discard::Source => "discard_source",
        }
    }

    /// How often one sender's discards of this kind are logged.
    fn log_window(self) -> Duration {
        match self {
            Discard::Source => SOURCE_LOG_WINDOW,
            _ => DISCARD_LOG_WINDOW,
        }
    }

    fn from_wire(e: vrrp::Error) -> Discard {
        match e {
            vrrp::Error::Truncated | vrrp::Error::LengthMismatch => Discard::Length,
            vrrp::Error::Version(_) => Discard::Version,
            vrrp::Error::Type(_) => Discard::Type,
            vrrp::Error::Checksum => Discard::Checksum,
            vrrp::Error::ZeroInterval => Discard::Interval,
            vrrp::Error::NoAddresses => Discard::NoAddresses,
            vrrp::Error::AuthType(_) => Discard::Auth,
        }
    }
}

/// Rate-limiter state for one (sender, reason) pair.
#[derive(Debug)]
struct LogWindow {
    last_logged: Instant,
    suppressed: u64,
}

/// A VRRP router for one VRID on one interface. See the module docs for the call order.
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    /// `VI_<vrid>`, the instance name keepalived administrators expect in log lines.
    name: String,
    /// Our Advertisement_Interval as the wire carries it (see [`RouterConfig`]).
    advert_interval: Duration,
    /// Our advert and our priority-0 advert for each destination, encoded once: nothing to
    /// allocate or checksum on the timer path that the jitter goal depends on.
    adverts: Vec<(Ipv4Addr, Vec<u8>)>,
    adverts_zero: Vec<(Ipv4Addr, Vec<u8>)>,
    /// The VIPs sorted, to compare with received address lists in any order.
    sorted_vips: Vec<Ipv4Addr>,
    state: State,
    state_since: Option<Instant>,
    /// Master_Adver_Interval: ours until a v3 master tells us its own.
    master_adver_interval: Duration,
    /// The router we follow (Backup/Scanning): address and priority.
    master: Option<(Ipv4Addr, u8)>,
    /// Master_Down_Timer (Backup), or the master-expiry timer (Scanning).
    master_down_at: Option<Instant>,
    /// Adver_Timer (Master).
    adver_at: Option<Instant>,
    /// The repeated gratuitous ARP burst (Master).
    garp_at: Option<Instant>,
    actions: VecDeque<Action>,
    counters: Counters,
    discard_log: HashMap<(Option<Ipv4Addr>, Discard), LogWindow>,
    /// Last mismatching address list logged per sender (so each change is logged once),
    /// and when it was last heard (status shows recent ones).
    vip_mismatch_seen: HashMap<Ipv4Addr, (Vec<Ipv4Addr>, Instant)>,
    /// Backup, preempting: the lower-priority master whose advert we last discarded, and when.
    preempting: Option<(Ipv4Addr, Instant)>,
    /// Master: the live master we preempted to get here (`None`: it was silent or resigned).
    preempted: Option<Ipv4Addr>,
    /// Master: the lower master we last re-asserted against, and when (its yielding
    /// advert a moment later needs no second burst).
    reasserted: Option<(Ipv4Addr, Instant)>,
    /// A master handing over to a named successor (planned stop between proxyha nodes):
    /// silent, VIP kept until the successor holds it, lower adverts not answered.
    handing_over: bool,
}

/// Who may speak VRRP, for the start and reload lines.
pub fn speakers(cfg: &RouterConfig) -> String {
    let list = |a: &[Ipv4Addr]| {
        a.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (cfg.unicast_peers.is_empty(), cfg.allowed_sources.is_empty()) {
        (false, _) => format!(
            "unicast to {}, adverts accepted only from {}",
            list(&cfg.destinations()),
            list(&cfg.allowed_sources)
        ),
        (true, false) => format!(
            "multicast 224.0.0.18, adverts accepted only from {}",
            list(&cfg.allowed_sources)
        ),
        (true, true) => {
            "multicast 224.0.0.18, adverts accepted from any host on the segment".into()
        }
    }
}

/// `now + d` without the overflow panic of `Instant + Duration`; an instant that far in
/// the future can only come from a broken caller, and "never" is the safe reading.
fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// Rounds an interval to what the version's field can carry, so that the interval we
/// time ourselves by is the one we advertise.
fn wire_interval(version: Version, interval: Duration) -> Duration {
    match version {
        Version::V3 => {
            let cs = ((interval.as_millis() + 5) / 10).clamp(1, 4095);
            Duration::from_millis(u64::try_from(cs * 10).unwrap_or(40_950))
        }
        Version::V2 => {
            let s = ((interval.as_millis() + 500) / 1000).clamp(1, 255);
            Duration::from_secs(u64::try_from(s).unwrap_or(255))
        }
    }
}

type Encoded = Vec<(Ipv4Addr, Vec<u8>)>;

/// Our advert and our priority-0 advert for `cfg` at the wire interval `advert_interval`,
/// one of each per destination (the v3 pseudo-header checksum covers the destination).
fn encode(cfg: &RouterConfig, advert_interval: Duration) -> (Encoded, Encoded) {
    let advert_int = match cfg.version {
        Version::V3 => advert_interval.as_millis() / 10,
        Version::V2 => advert_interval.as_millis() / 1000,
    };
    let template = Repr {
        version: cfg.version,
        vrid: cfg.vrid,
        priority: cfg.priority,
        advert_int: u16::try_from(advert_int).unwrap_or(1),
        addresses: cfg.vips.iter().copied().take(255).collect(),
    };
    let destinations = cfg.destinations();
    let encode = |priority| -> Encoded {
        let repr = Repr {
            priority,
            ..template.clone()
        };
        destinations
            .iter()
            .map(|to| (*to, repr.to_bytes(cfg.checksum, cfg.primary_addr, *to)))
            .collect()
    };
    (encode(cfg.priority), encode(0))
}

impl Router {
    /// A router in Initialize; nothing happens until [`Router::handle_startup`].
    pub fn new(cfg: RouterConfig) -> Router {
        let name = format!("VRRP_Instance(VI_{})", cfg.vrid);
        let advert_interval = wire_interval(cfg.version, cfg.advert_interval);
        if advert_interval != cfg.advert_interval {
            warn!(
                "{name} advert interval {:?} cannot be carried by VRRPv{}: using {:?}",
                cfg.advert_interval,
                cfg.version.number(),
                advert_interval
            );
        }
        if cfg.vips.is_empty() {
            // Peers will discard our adverts (discard_no_addresses); we still run so the
            // misconfiguration shows in status instead of a crash loop.
            warn!("{name} has no virtual address: peers will discard its adverts, add one");
        }
        if !cfg.unicast_peers.is_empty() && cfg.destinations().is_empty() {
            warn!(
                "{name} unicast peers {:?} list only ourselves: no advert will reach anyone, add the other nodes",
                cfg.unicast_peers
            );
        }
        let (adverts, adverts_zero) = encode(&cfg, advert_interval);
        let mut sorted_vips = cfg.vips.clone();
        sorted_vips.sort_unstable();
        Router {
            name,
            advert_interval,
            adverts,
            adverts_zero,
            sorted_vips,
            state: State::Initialize,
            state_since: None,
            master_adver_interval: advert_interval,
            master: None,
            master_down_at: None,
            adver_at: None,
            garp_at: None,
            actions: VecDeque::new(),
            counters: Counters::default(),
            discard_log: HashMap::new(),
            vip_mismatch_seen: HashMap::new(),
            handing_over: false,
            preempting: None,
            reasserted: None,
            preempted: None,
            cfg,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// When the current state was entered; `None` before the first transition.
    pub fn state_since(&self) -> Option<Instant> {
        self.state_since
    }

    /// The current master: ourselves when Master, the router we follow when Backup or
    /// Scanning (once an advert arrived), `None` otherwise.
    pub fn master(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => Some(self.cfg.primary_addr),
            State::Backup | State::Scanning => self.master.map(|(addr, _)| addr),
            State::Initialize | State::Fault => None,
        }
    }

    /// As backup: a live master advertises a lower priority than ours (the one we are
    /// preempting, or that we follow because preemption is off or held).
    pub fn outranks_master(&self, now: Instant) -> bool {
        let mdi = self.master_down_interval();
        self.state == State::Backup
            && (self
                .preempting
                .is_some_and(|(_, at)| now.saturating_duration_since(at) <= mdi)
                || self.master.is_some_and(|(_, p)| p < self.cfg.priority))
    }

    pub fn master_priority(&self) -> Option<u8> {
        match self.state {
            State::Master => Some(self.cfg.priority),
            State::Backup | State::Scanning => self.master.map(|(_, prio)| prio),
            State::Initialize | State::Fault => None,
        }
    }

    /// Master_Adver_Interval: our own interval, or the one a v3 master advertises.
    pub fn master_advert_interval(&self) -> Duration {
        match self.state {
            State::Master => self.advert_interval,
            _ => self.master_adver_interval,
        }
    }

    /// Skew_Time for our priority at the current Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        skew_time(
            self.cfg.version,
            self.cfg.priority,
            self.master_adver_interval,
        )
    }

    /// Master_Down_Interval for our priority at the current Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(
            self.cfg.version,
            self.cfg.priority,
            self.master_adver_interval,
        )
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The earliest pending timer, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.master_down_at, self.adver_at, self.garp_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next action to carry out; drain after every `handle_*` call.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Live reload: takes a new priority, preempt mode, advert interval or checksum mode
    /// without leaving the current state, so the VIP stays where it is unless the election
    /// itself moves it (a lowered priority lets a higher preempting backup take over after
    /// its Master_Down_Interval, as on any VRRP router). A master advertises the new values
    /// at once. A change to or from priority 0 moves between Backup and Scanning (a master
    /// resigns first: priority-0 advert, VIPs removed).
    ///
    /// Returns false and changes nothing when `cfg` names another instance (VRID, version,
    /// addresses or source address differ): the shell must restart the instance instead
    /// ([`Router::handle_shutdown`], then a new router).
    pub fn reconfigure(&mut self, now: Instant, cfg: RouterConfig) -> bool {
        // Peers and allowed sources may change in place (a node added to the group).
        let same_instance = cfg.vrid == self.cfg.vrid
            && cfg.version == self.cfg.version
            && cfg.vips == self.cfg.vips
            && cfg.primary_addr == self.cfg.primary_addr;
        if !same_instance {
            return false;
        }
        if cfg == self.cfg {
            return true;
        }
        let resign = self.adverts_zero.clone();
        let advert_interval = wire_interval(cfg.version, cfg.advert_interval);
        let (adverts, adverts_zero) = encode(&cfg, advert_interval);
        let old = std::mem::replace(&mut self.cfg, cfg);
        let interval_changed = advert_interval != self.advert_interval;
        self.advert_interval = advert_interval;
        self.adverts = adverts;
        self.adverts_zero = adverts_zero;
        info!(
            "{} reconfigured: priority {}, advert interval {:?}, preempt {}, {}",
            self.name,
            self.cfg.priority,
            self.advert_interval,
            self.cfg.preempt,
            speakers(&self.cfg)
        );
        self.discard_log
            .retain(|(_, reason), _| *reason != Discard::Source);
        let scanning_only = self.cfg.priority == 0;
        match self.state {
            State::Master if scanning_only => {
                self.counters.tx_adverts += 1;
                self.counters.tx_priority_zero += 1;
                self.push_adverts(&resign);
                info!("{} sent 0 priority", self.name);
                self.master_adver_interval = self.advert_interval;
                self.enter_backup(now);
            }
            State::Master => {
                // Backups learn the new priority and interval now, not one interval later.
                self.master_adver_interval = self.advert_interval;
                self.send_advert();
                self.adver_at = after(now, self.advert_interval);
            }
            State::Backup | State::Scanning if scanning_only != (old.priority == 0) => {
                // Backup ↔ Scanning: a candidate gets its Master_Down_Timer, a scanning
                // node loses it; the master we follow stays known.
                if self.master.is_none() {
                    self.master_adver_interval = self.advert_interval;
                }
                self.enter_backup(now);
            }
            State::Backup | State::Scanning => {
                if self.master.is_none() && interval_changed {
                    // No master heard yet: our own interval is the one we time by.
                    self.master_adver_interval = self.advert_interval;
                    if self.state == State::Backup {
                        self.master_down_at = after(now, self.master_down_interval());
                    }
                }
            }
            State::Initialize | State::Fault => {
                self.master_adver_interval = self.advert_interval;
            }
        }
        true
    }

    /// RFC 9568 §6.4.1 Startup. `link_up` is the interface state the shell observed.
    /// Ignored unless in Initialize, so a duplicate call cannot reset the timers.
    pub fn handle_startup(&mut self, now: Instant, link_up: bool) {
        if self.state != State::Initialize {
            debug!("{} startup ignored in state {}", self.name, self.state);
            return;
        }
        self.master_adver_interval = self.advert_interval;
        self.master = None;
        if !link_up {
            self.set_state(now, State::Fault);
        } else if self.cfg.priority == 255 {
            // The address owner does not wait (RFC 9568 §6.4.1).
            self.become_master(now);
        } else {
            self.enter_backup(now);
        }
    }

    /// A full IPv4 datagram from the raw socket. Runs the receive checks of RFC 9568
    /// §7.1 (each failure is counted and logged, rate-limited) and hands a valid advert
    /// to [`Router::handle_advert`]. Never panics, whatever the bytes.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        let (header, payload) = match ipv4::parse(datagram) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Name the sender if the bytes at least reach the source field.
                let src = datagram
                    .get(12..16)
                    .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                return self.discard(now, src, Discard::IpHeader, &e);
            }
        };
        let src = Some(header.src);
        if header.protocol != vrrp::PROTOCOL {
            let why = format_args!("IP protocol {} is not {}", header.protocol, vrrp::PROTOCOL);
            return self.discard(now, src, Discard::IpHeader, &why);
        }
        if !self.cfg.allowed_sources.is_empty()
            && !self.cfg.allowed_sources.contains(&header.src)
            && header.src != self.cfg.primary_addr
        {
            let why = if self.cfg.unicast_peers.is_empty() {
                "not in ha.vrrp_sources (add it there if it is a node of this group)"
            } else {
                "not in ha.unicast_peers (add it there if it is a node of this group)"
            };
            return self.discard(now, src, Discard::Source, &why);
        }
        if header.ttl != vrrp::TTL && self.cfg.unicast_peers.is_empty() {
            // "MUST verify that the IPv4 TTL is 255": the packet crossed a router. Unicast
            // peers (listed, so already vetted) may sit behind one: any TTL, as keepalived.
            let why = format_args!("TTL {} is not {}", header.ttl, vrrp::TTL);
            return self.discard(now, src, Discard::Ttl, &why);
        }
        let repr = match Packet::new_checked(payload)
            .and_then(|p| Repr::parse(&p, self.cfg.version, header.src, header.dst))
        {
            Ok(repr) => repr,
            Err(e) => return self.discard(now, src, Discard::from_wire(e), &e),
        };
        if repr.vrid != self.cfg.vrid {
            let ours = self.cfg.vrid;
            let why = format_args!("VRID {} is not ours ({ours})", repr.vrid);
            return self.discard(now, src, Discard::Vrid, &why);
        }
        if header.src == self.cfg.primary_addr {
            let why = "our own advert (multicast loop or address conflict)";
            return self.discard(now, src, Discard::Own, &why);
        }
        if self.cfg.version == Version::V2 && repr.interval() != self.advert_interval {
            // RFC 3768 §7.1: "MUST verify that the Adver Interval in the ADVERTISEMENT
            // packet is the same as the locally configured for this virtual router".
            let ours = self.advert_interval;
            let why = format_args!(
                "advert interval {:?} differs from ours ({ours:?})",
                repr.interval()
            );
            return self.discard(now, src, Discard::Interval, &why);
        }
        self.handle_advert(now, header.src, &repr);
    }

    /// A valid advert for our VRID from `src` (RFC 9568 §6.4.2, §6.4.3). Public so that
    /// a shell with its own receive path can use it; `handle_datagram` calls it after
    /// the checks.
    pub fn handle_advert(&mut self, now: Instant, src: Ipv4Addr, repr: &Repr) {
        if repr.vrid != self.cfg.vrid || repr.version != self.cfg.version {
            debug!(
                "{} ignoring advert from {src} for another VRID or version",
                self.name
            );
            return;
        }
        self.counters.rx_adverts += 1;
        if repr.priority == 0 {
            self.counters.rx_priority_zero += 1;
        }
        self.check_vips(now, src, repr);
        // v3 backups follow the master's interval (RFC 9568 §6.4.2); v2 routers all use
        // the configured one, and handle_datagram discards any other.
        let interval = match self.cfg.version {
            Version::V3 => repr.interval(),
            Version::V2 => self.advert_interval,
        };
        match self.state {
            State::Initialize | State::Fault => {
                debug!(
                    "{} ignoring advert from {src} in state {}",
                    self.name, self.state
                );
            }
            State::Backup => self.backup_advert(now, src, repr.priority, interval),
            State::Scanning => self.scanning_advert(now, src, repr.priority, interval),
            State::Master => self.master_advert(now, src, repr.priority, interval),
        }
    }

    /// Fires the timers whose deadline is at or before `now`; otherwise a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        match self.state {
            State::Backup if due(self.master_down_at) => {
                info!(
                    "{} Master_Down_Timer expired, taking over (Master_Down_Interval {:?}, Skew_Time {:?})",
                    self.name,
                    self.master_down_interval(),
                    self.skew_time()
                );
                self.become_master(now);
            }
            State::Scanning if due(self.master_down_at) => {
                info!(
                    "{} master {:?} is silent, no master known",
                    self.name,
                    self.master()
                );
                self.master = None;
                self.master_down_at = None;
            }
            State::Master => {
                if let Some(deadline) = self.adver_at.filter(|t| *t <= now) {
                    self.send_advert();
                    // Keep the cadence of the original deadline when the shell woke
                    // late, so jitter does not accumulate; after a long stall (a
                    // suspended VM) restart from now instead of sending a burst.
                    let next = after(deadline, self.advert_interval).filter(|t| *t > now);
                    self.adver_at = next.or_else(|| after(now, self.advert_interval));
                }
                if due(self.garp_at) {
                    self.garp_at = None;
                    self.actions.push_back(Action::SendGarp);
                }
            }
            _ => {}
        }
    }

    /// Interface carrier change. Down: Fault from any running state (VIPs removed, no
    /// adverts, since a master that cannot reach the LAN must not keep the VIP). Up:
    /// Fault → Backup (Scanning for priority 0). Ignored in Initialize: the router is
    /// not running until `handle_startup`, which takes the link state itself.
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        match (self.state, up) {
            (State::Initialize, _) => {
                debug!(
                    "{} link {} ignored before startup",
                    self.name,
                    if up { "up" } else { "down" }
                );
            }
            (State::Fault, true) => {
                self.master_adver_interval = self.advert_interval;
                self.master = None;
                self.enter_backup(now);
            }
            (State::Fault, false) | (_, true) => {}
            (_, false) => {
                self.master = None;
                self.master_down_at = None;
                self.set_state(now, State::Fault);
            }
        }
    }

    /// RFC 9568 §6.4.3 Shutdown: a master sends one advert with priority 0 so that
    /// backups take over after Skew_Time instead of Master_Down_Interval, then removes
    /// its VIPs. Any state ends in Initialize.
    pub fn handle_shutdown(&mut self, now: Instant) {
        if self.state == State::Initialize {
            return;
        }
        self.handing_over = false;
        if self.state == State::Master {
            self.counters.tx_adverts += 1;
            self.counters.tx_priority_zero += 1;
            let resign = std::mem::take(&mut self.adverts_zero);
            self.push_adverts(&resign);
            self.adverts_zero = resign;
            info!("{} sent 0 priority", self.name);
        }
        self.master = None;
        self.master_down_at = None;
        self.set_state(now, State::Initialize);
    }

    /// Planned handover, leaving master: stop advertising (the successor's adverts must not
    /// meet a higher priority) but keep the VIP, so clients are served until the successor's
    /// gratuitous ARPs move them. Ends with [`Router::handle_shutdown`] (the successor never
    /// confirmed: the RFC path, priority 0) or [`Router::handle_handed_over`].
    pub fn handle_handover_begin(&mut self) {
        if self.state != State::Master {
            return;
        }
        self.handing_over = true;
        self.adver_at = None;
        self.garp_at = None;
        info!(
            "{} handing over: adverts stopped, the VIP stays until the successor holds it",
            self.name
        );
    }

    /// Planned handover, leaving master: the successor holds the VIP; leave without a
    /// priority-0 advert (it would only make third backups wait Skew_Time against a
    /// master that is already advertising). Any state ends in Initialize.
    pub fn handle_handed_over(&mut self, now: Instant) {
        if self.state == State::Master {
            info!(
                "{} handed over: leaving without a priority-0 advert",
                self.name
            );
        }
        self.handing_over = false;
        self.master = None;
        self.master_down_at = None;
        self.set_state(now, State::Initialize);
    }

    /// Planned handover, successor: the master we follow asked us to take over now, instead
    /// of after its priority-0 advert and our Skew_Time.
    pub fn handle_takeover_request(&mut self, now: Instant, from: Ipv4Addr) {
        if self.state != State::Backup {
            debug!(
                "{} takeover request from {from} ignored in state {}",
                self.name, self.state
            );
            return;
        }
        info!("{} master {from} hands over: taking over now", self.name);
        self.become_master(now);
    }

    /// As master: the live, lower-priority master this node preempted to become master
    /// (`None` when the old master was silent, resigned or unknown).
    pub fn preempted(&self) -> Option<Ipv4Addr> {
        match self.state {
            State::Master => self.preempted,
            _ => None,
        }
    }

    pub fn is_handing_over(&self) -> bool {
        self.handing_over
    }

    /// RFC 9568 §6.4.2, advert received in Backup.
    fn backup_advert(&mut self, now: Instant, src: Ipv4Addr, priority: u8, interval: Duration) {
        if priority == 0 {
            // The master resigned: wait only Skew_Time, so the highest backup (the
            // shortest skew) speaks first.
            if self.master.is_some_and(|(addr, _)| addr == src) {
                self.master = None;
            }
            self.preempting = None;
            self.master_down_at = after(now, self.skew_time());
            info!(
                "{} master {src} resigned (priority 0), waiting Skew_Time",
                self.name
            );
        } else if !self.cfg.preempt || priority >= self.cfg.priority {
            self.follow(now, src, priority, interval);
        } else {
            // Preempt: let Master_Down_Timer run out and take over from a lower master.
            self.preempting = Some((src, now));
            debug!(
                "{} discarding lower priority advert from {src} ({priority} < {}), preempting",
                self.name, self.cfg.priority
            );
        }
    }

    /// Scanning: follow the strongest live master, never take over.
    fn scanning_advert(&mut self, now: Instant, src: Ipv4Addr, priority: u8, interval: Duration) {
        let known = self.master;
        if priority == 0 {
            if known.is_some_and(|(addr, _)| addr == src) {
                self.master = None;
                self.master_down_at = None;
            }
            return;
        }
        // During a split brain two masters advertise; follow the one that will win,
        // rather than flapping between them.
        let stronger = |(addr, prio): (Ipv4Addr, u8)| {
            addr == src || (priority, u32::from(src)) > (prio, u32::from(addr))
        };
        if known.is_none_or(stronger) {
            self.follow(now, src, priority, interval);
        }
    }

    /// Record the master and restart Master_Down_Timer at its interval.
    fn follow(&mut self, now: Instant, src: Ipv4Addr, priority: u8, interval: Duration) {
        self.preempting = None;
        if self.master != Some((src, priority)) {
            info!("{} following master {src} (priority {priority})", self.name);
        }
        if interval != self.master_adver_interval {
            info!(
                "{} adopting master advert interval {:?} (was {:?})",
                self.name, interval, self.master_adver_interval
            );
        }
        self.master = Some((src, priority));
        self.master_adver_interval = interval;
        self.master_down_at = after(now, self.master_down_interval());
    }

    /// RFC 9568 §6.4.3, advert received in Master.
    fn master_advert(&mut self, now: Instant, src: Ipv4Addr, priority: u8, interval: Duration) {
        let ours = (self.cfg.priority, u32::from(self.cfg.primary_addr));
        if priority == 0 {
            // Another master resigned; answer at once so backups do not take over
            // after Skew_Time.
            self.send_advert();
            self.adver_at = after(now, self.advert_interval);
        } else if self.handing_over && (priority, u32::from(src)) < ours {
            // Our successor advertises: let it, we are leaving.
            debug!(
                "{} successor {src} advertises (priority {priority}) while we hand over",
                self.name
            );
        } else if (priority, u32::from(src)) > ours {
            info!(
                "{} Received higher prio advert from {src} (priority {priority} > {})",
                self.name, self.cfg.priority
            );
            // One last advert at our priority before yielding. When a split brain heals
            // the winner's advert may reach us before ours reaches it: it would then never
            // learn that the neighbours we pointed at us during the partition still send
            // to our MAC (and, in direct mode, our VIP on lo keeps serving them past the
            // director). Hearing this lower-priority advert it re-sends its gratuitous
            // ARPs (below). On the wire it is the advert a master may send an instant
            // before it hears a higher one, so every peer already copes with it.
            self.send_advert();
            self.set_state(now, State::Backup);
            self.follow(now, src, priority, interval);
        } else if self.reasserted.is_some_and(|(a, at)| {
            a == src && now.saturating_duration_since(at) < self.advert_interval
        }) {
            // Its last advert as it yields to the burst we just sent.
            debug!(
                "{} lower priority advert from {src} ({priority}) right after re-asserting: ignored",
                self.name
            );
        } else {
            // RFC 9568 would discard it. keepalived instead re-asserts: after a split
            // brain heals, the lower master hears us at once and the neighbours that
            // it re-pointed at itself learn our MAC again.
            self.reasserted = Some((src, now));
            info!(
                "{} lower priority advert from {src} ({priority}), re-advertising and sending gratuitous ARPs",
                self.name
            );
            self.send_advert();
            self.adver_at = after(now, self.advert_interval);
            self.actions.push_back(Action::SendGarp);
        }
    }

    /// Master_Down_Timer expired (or address owner at startup): RFC 9568 §6.4.2 order:
    /// advert first (backups stop their timers), then the VIPs, then gratuitous ARPs
    /// (only once the VIP is ours may neighbours be pointed at us).
    fn become_master(&mut self, now: Instant) {
        // Preempting a master that still advertised within our timer: it lives on as a
        // backup (its clients stay where they are, the director layer keeps their pins).
        let mdi = self.master_down_interval();
        self.preempted = self
            .preempting
            .take()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= mdi)
            .map(|(a, _)| a);
        self.master = None;
        self.master_down_at = None;
        self.set_state(now, State::Master);
        self.counters.became_master += 1;
        self.send_advert();
        self.actions.push_back(Action::AddVips);
        self.actions.push_back(Action::SendGarp);
        self.adver_at = after(now, self.advert_interval);
        self.garp_at = after(now, GARP_REPEAT_DELAY);
    }

    /// Backup (or Scanning for priority 0) with Master_Down_Timer at MDI.
    fn enter_backup(&mut self, now: Instant) {
        if self.cfg.priority == 0 {
            // A scanning node has no takeover timer; it only times out the master.
            self.master_down_at = None;
            self.set_state(now, State::Scanning);
        } else {
            self.master_down_at = after(now, self.master_down_interval());
            self.set_state(now, State::Backup);
        }
    }

    fn send_advert(&mut self) {
        self.counters.tx_adverts += 1;
        let adverts = std::mem::take(&mut self.adverts);
        self.push_adverts(&adverts);
        self.adverts = adverts;
    }

    /// One advert round: a copy to each destination.
    fn push_adverts(&mut self, adverts: &[(Ipv4Addr, Vec<u8>)]) {
        for (to, payload) in adverts {
            self.actions.push_back(Action::SendAdvert {
                to: *to,
                payload: payload.clone(),
            });
        }
    }

    /// The one place that changes state, so the log lines and the invariant "VIPs are
    /// held exactly while Master" cannot be forgotten on some path.
    fn set_state(&mut self, now: Instant, new: State) {
        let old = self.state;
        if old == new {
            return;
        }
        if old == State::Master {
            self.adver_at = None;
            self.garp_at = None;
            self.handing_over = false;
            self.actions.push_back(Action::RemoveVips);
        }
        self.state = new;
        self.state_since = Some(now);
        info!("{} Entering {} STATE", self.name, new.log_name());
        info!("{} state={} previous={}", self.name, new, old);
    }

    /// Counts an advert whose address list differs from ours and logs each new list
    /// once per sender: a VRID collision or a config mismatch, worth one line, not one
    /// per second. The advert is still processed (keepalived does the same).
    fn check_vips(&mut self, now: Instant, src: Ipv4Addr, repr: &Repr) {
        if repr.addresses == self.cfg.vips {
            self.vip_mismatch_seen.remove(&src);
            return;
        }
        let mut theirs = repr.addresses.clone();
        theirs.sort_unstable();
        if theirs == self.sorted_vips {
            self.vip_mismatch_seen.remove(&src);
            return;
        }
        self.counters.vip_mismatch += 1;
        if let Some((seen, at)) = self.vip_mismatch_seen.get_mut(&src)
            && *seen == theirs
        {
            *at = now;
            return;
        }
        warn!(
            "{} advert from {src} carries addresses {:?}, ours are {:?}: check virtual_ip and virtual_router_id on both",
            self.name, repr.addresses, self.cfg.vips
        );
        if self.vip_mismatch_seen.len() >= SENDER_TABLE_CAP {
            self.vip_mismatch_seen.clear();
        }
        self.vip_mismatch_seen.insert(src, (theirs, now));
    }

    /// Senders of adverts for our VRID with another address list, heard within `within`
    /// before `now`: (sender, their addresses), in address order.
    pub fn vip_mismatches(&self, now: Instant, within: Duration) -> Vec<(Ipv4Addr, Vec<Ipv4Addr>)> {
        let mut out: Vec<(Ipv4Addr, Vec<Ipv4Addr>)> = self
            .vip_mismatch_seen
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) <= within)
            .map(|(a, (v, _))| (*a, v.clone()))
            .collect();
        out.sort();
        out
    }

    /// Counts a discarded datagram and logs it, at most once per (sender, reason) per
    /// [`DISCARD_LOG_WINDOW`], with the number of lines suppressed since.
    fn discard(
        &mut self,
        now: Instant,
        sender: Option<Ipv4Addr>,
        reason: Discard,
        detail: &dyn fmt::Display,
    ) {
        let counter = match reason {
            Discard::IpHeader => &mut self.counters.discard_ip_header,
            Discard::Ttl => &mut self.counters.discard_ttl,
            Discard::Version => &mut self.counters.discard_version,
            Discard::Type => &mut self.counters.discard_type,
            Discard::Checksum => &mut self.counters.discard_checksum,
            Discard::Length => &mut self.counters.discard_length,
            Discard::Vrid => &mut self.counters.discard_vrid,
            Discard::Interval => &mut self.counters.discard_interval,
            Discard::NoAddresses => &mut self.counters.discard_no_addresses,
            Discard::Auth => &mut self.counters.discard_auth,
            Discard::Own => &mut self.counters.discard_own,
            Discard::Source => &mut self.counters.discard_source,
        };
        *counter += 1;

        let mut key = (sender, reason);
        if !self.discard_log.contains_key(&key) && self.discard_log.len() >= SENDER_TABLE_CAP {
            self.discard_log.retain(|(_, reason), w| {
                now.saturating_duration_since(w.last_logged) < reason.log_window()
            });
            if self.discard_log.len() >= SENDER_TABLE_CAP {
                // Too many senders at once (a spoofed flood): share one window.
                key = (None, reason);
            }
        }
        let suppressed = match self.discard_log.entry(key) {
            Entry::Vacant(v) => {
                v.insert(LogWindow {
                    last_logged: now,
                    suppressed: 0,
                });
                0
            }
            Entry::Occupied(mut o) => {
                let w = o.get_mut();
                if now.saturating_duration_since(w.last_logged) < reason.log_window() {
                    w.suppressed += 1;
                    return;
                }
                w.last_logged = now;
                std::mem::take(&mut w.suppressed)
            }
        };
        let from = match (sender, key.0) {
            (Some(addr), Some(_)) => addr.to_string(),
            (Some(addr), None) => format!("{addr} (and other senders)"),
            (None, _) => "unknown sender".to_string(),
        };
        if suppressed > 0 {
            warn!(
                "{} discarding advert from {from}: {detail} ({}); {suppressed} more suppressed in the last {}s",
                self.name,
                reason.counter_name(),
                reason.log_window().as_secs()
            );
        } else {
            warn!(
                "{} discarding advert from {from}: {detail} ({})",
                self.name,
                reason.counter_name()
            );
        }
    }
}
