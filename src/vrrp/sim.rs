//! Deterministic simulator (quinn-proto style) and the tests of the VRRP core.
//!
//! N routers share a virtual LAN. Virtual time jumps straight to the next deadline (a
//! router timer or a datagram delivery), so a minute of protocol runs in microseconds
//! and every bound of RFC 9568 is asserted to the microsecond. Adverts travel as full
//! IPv4 datagrams (TTL 255, source = the sender's primary address), exactly as the raw
//! socket delivers them, so the receive checks are on the tested path too. Knobs:
//! delivery delay, seeded loss, partitions, crash / restart, shutdown, link down.
//!
//! Log lines go through a capturing `log` backend that prefixes virtual time and node
//! name (the per-node "span"); the test harness shows them when a test fails.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::sync::Once;
use std::time::{Duration, Instant};

use super::{Action, Counters, Router, RouterConfig, State, master_down_interval, skew_time};
use crate::wire::ipv4;
use crate::wire::vrrp::{self, ChecksumMode, MULTICAST_GROUP, Packet, Repr, Version};

// ---------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------

thread_local! {
    /// "[  3.613281s n1]": set while the simulator drives one router.
    static CONTEXT: RefCell<String> = const { RefCell::new(String::new()) };
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let ctx = CONTEXT.with(|c| c.borrow().clone());
        let line = format!("{ctx} {:<5} {}", record.level(), record.args());
        // Captured by the test harness per test thread; printed only on failure.
        eprintln!("{line}");
        LINES.with(|l| l.borrow_mut().push(line));
    }

    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
    LINES.with(|l| l.borrow_mut().clear());
}

/// Log assertions need our capturing logger; no other test of this binary installs one, so
/// finding another is a test-setup bug, not a reason to skip the assertions.
fn assert_logs_captured() {
    let ours = std::ptr::addr_eq(
        log::logger() as *const dyn log::Log,
        &LOGGER as *const CaptureLogger,
    );
    assert!(
        ours,
        "another logger is installed; the log assertions cannot run"
    );
}

/// Captured lines (of this test thread) containing `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    LINES.with(|l| {
        l.borrow()
            .iter()
            .filter(|s| s.contains(needle))
            .cloned()
            .collect()
    })
}

fn assert_logged(needle: &str) {
    {
        assert_logs_captured();
        assert!(
            !log_lines(needle).is_empty(),
            "expected a log line containing {needle:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------

/// xorshift64: a deterministic loss pattern without a dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Node {
    name: String,
    cfg: RouterConfig,
    router: Router,
    /// False after a crash or a shutdown: the box neither sends nor receives.
    alive: bool,
    link: bool,
    /// Nodes only hear each other within the same group.
    group: u8,
    /// Mirrors AddVips / RemoveVips, as the interface would.
    holds_vip: bool,
}

/// One action a router emitted, with its virtual time.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    node: usize,
    action: Action,
}

/// (delivery time, sequence for FIFO among equal times, destination, datagram)
type Delivery = (Instant, u64, usize, Vec<u8>);

struct Sim {
    start: Instant,
    now: Instant,
    nodes: Vec<Node>,
    delay: Duration,
    loss_percent: u64,
    rng: XorShift,
    queue: BinaryHeap<Reverse<Delivery>>,
    seq: u64,
    ip_id: u16,
    trace: Vec<Event>,
}

const DELAY: Duration = Duration::from_millis(1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, last)
}

fn cfg(last: u8, priority: u8) -> RouterConfig {
    RouterConfig {
        version: Version::V3,
        vrid: 51,
        priority,
        advert_interval: Duration::from_secs(1),
        preempt: true,
        vips: vec![VIP],
        primary_addr: addr(last),
        checksum: ChecksumMode::PseudoHeader,
        unicast_peers: vec![],
        allowed_sources: vec![],
    }
}

/// An IPv4 datagram as the raw socket hands it over.
fn datagram(src: Ipv4Addr, ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let header = ipv4::Header {
        src,
        dst: MULTICAST_GROUP,
        ttl,
        protocol,
    };
    let mut buf = vec![0u8; ipv4::MIN_HEADER_LEN + payload.len()];
    ipv4::emit(&mut buf, &header, 1, payload.len());
    buf[ipv4::MIN_HEADER_LEN..].copy_from_slice(payload);
    buf
}

impl Sim {
    fn new(cfgs: Vec<RouterConfig>) -> Sim {
        init_logging();
        // The one clock read: an arbitrary epoch; everything after is virtual.
        let start = Instant::now();
        let nodes = cfgs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| Node {
                name: format!("n{}", i + 1),
                router: Router::new(cfg.clone()),
                cfg,
                alive: true,
                link: true,
                group: 0,
                holds_vip: false,
            })
            .collect();
        Sim {
            start,
            now: start,
            nodes,
            delay: DELAY,
            loss_percent: 0,
            rng: XorShift::new(0x5eed_f7a1),
            queue: BinaryHeap::new(),
            seq: 0,
            ip_id: 0,
            trace: Vec::new(),
        }
    }

    fn at(&self, since_start: Duration) -> Instant {
        self.start + since_start
    }

    /// Seconds since start, for messages.
    fn secs(&self, t: Instant) -> f64 {
        t.duration_since(self.start).as_secs_f64()
    }

    fn enter(&self, i: usize) {
        let ctx = format!("[{:>11.6}s {}]", self.secs(self.now), self.nodes[i].name);
        CONTEXT.with(|c| *c.borrow_mut() = ctx);
    }

    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
    }

    fn start_node(&mut self, i: usize) {
        self.enter(i);
        let (now, link) = (self.now, self.nodes[i].link);
        self.nodes[i].router.handle_startup(now, link);
        self.flush(i);
    }

    /// Drains node `i`'s actions: records them, applies VIP changes, transmits adverts.
    fn flush(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].router.poll_action() {
            self.trace.push(Event {
                at: self.now,
                node: i,
                action: action.clone(),
            });
            match action {
                Action::SendAdvert { to, payload } => self.transmit(i, to, &payload),
                Action::AddVips => self.nodes[i].holds_vip = true,
                Action::RemoveVips => self.nodes[i].holds_vip = false,
                Action::SendGarp => {}
            }
        }
        let node = &self.nodes[i];
        assert_eq!(
            node.holds_vip,
            node.router.state() == State::Master,
            "{}: VIPs must be held exactly while Master",
            node.name
        );
    }

    /// Delivers an advert: to the node group for 224.0.0.18, to the one node holding `dst`
    /// for a unicast peer.
    fn transmit(&mut self, from: usize, dst: Ipv4Addr, payload: &[u8]) {
        let sender = &self.nodes[from];
        assert!(
            sender.alive && sender.link,
            "{} sent while dead or link down",
            sender.name
        );
        let (src, group) = (sender.cfg.primary_addr, sender.group);
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut bytes = datagram(src, vrrp::TTL, vrrp::PROTOCOL, payload);
        ipv4::emit(
            &mut bytes,
            &ipv4::Header {
                src,
                dst,
                ttl: vrrp::TTL,
                protocol: vrrp::PROTOCOL,
            },
            self.ip_id,
            payload.len(),
        );
        for to in 0..self.nodes.len() {
            if to == from || self.nodes[to].group != group {
                continue;
            }
            if dst != MULTICAST_GROUP && self.nodes[to].cfg.primary_addr != dst {
                continue;
            }
            if self.loss_percent > 0 && self.rng.below(100) < self.loss_percent {
                continue;
            }
            self.seq += 1;
            self.queue.push(Reverse((
                self.now + self.delay,
                self.seq,
                to,
                bytes.clone(),
            )));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.router.poll_timeout());
        let delivery = self.queue.peek().map(|Reverse((at, ..))| *at);
        timers.chain(delivery).min()
    }

    /// Runs every event due at or before `until`, then sets the clock to `until`.
    fn run_until(&mut self, until: Instant) {
        let mut steps = 0u32;
        while let Some(deadline) = self.next_deadline().filter(|d| *d <= until) {
            steps += 1;
            assert!(
                steps < 1_000_000,
                "simulation livelock at {:.6}s",
                self.secs(deadline)
            );
            self.now = self.now.max(deadline);
            while let Some(Reverse((at, _, to, bytes))) = self.queue.peek().cloned() {
                if at > self.now {
                    break;
                }
                self.queue.pop();
                if self.nodes[to].alive && self.nodes[to].link {
                    self.enter(to);
                    self.nodes[to].router.handle_datagram(self.now, &bytes);
                    self.flush(to);
                }
            }
            for i in 0..self.nodes.len() {
                let due = self.nodes[i]
                    .router
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now);
                if self.nodes[i].alive && due {
                    self.enter(i);
                    self.nodes[i].router.handle_timeout(self.now);
                    self.flush(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn run_to(&mut self, since_start: Duration) {
        self.run_until(self.at(since_start));
    }

    /// A dead box: no more sending, receiving or timers; its VIP dies with it.
    fn crash(&mut self, i: usize) {
        self.enter(i);
        log::info!("simulator: crash");
        self.nodes[i].alive = false;
        self.nodes[i].holds_vip = false;
    }

    /// A fresh process on a crashed (or shut down) box.
    fn restart(&mut self, i: usize) {
        self.nodes[i].router = Router::new(self.nodes[i].cfg.clone());
        self.nodes[i].alive = true;
        self.start_node(i);
    }

    /// SIGTERM: the router says goodbye, then the process is gone.
    fn shutdown(&mut self, i: usize) {
        self.enter(i);
        let now = self.now;
        self.nodes[i].router.handle_shutdown(now);
        self.flush(i);
        self.nodes[i].alive = false;
    }

    fn set_link(&mut self, i: usize, up: bool) {
        self.enter(i);
        self.nodes[i].link = up;
        let now = self.now;
        self.nodes[i].router.handle_link(now, up);
        self.flush(i);
    }

    /// Group per node; only nodes in the same group hear each other.
    fn partition(&mut self, groups: &[u8]) {
        for (node, group) in self.nodes.iter_mut().zip(groups) {
            node.group = *group;
        }
    }

    fn heal(&mut self) {
        for node in &mut self.nodes {
            node.group = 0;
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive && self.nodes[*i].router.state() == State::Master)
            .collect()
    }

    fn vip_holders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].holds_vip)
            .collect()
    }

    fn router(&self, i: usize) -> &Router {
        &self.nodes[i].router
    }

    fn events(&self, node: usize, pred: impl Fn(&Action) -> bool) -> Vec<Instant> {
        self.trace
            .iter()
            .filter(|e| e.node == node && pred(&e.action))
            .map(|e| e.at)
            .collect()
    }

    /// When node `i` took the VIPs (each time).
    fn became_master_at(&self, i: usize) -> Vec<Instant> {
        self.events(i, |a| *a == Action::AddVips)
    }

    fn adverts_from(&self, i: usize) -> Vec<(Instant, u8)> {
        self.trace
            .iter()
            .filter(|e| e.node == i)
            .filter_map(|e| match &e.action {
                Action::SendAdvert { payload: p, .. } => {
                    Some((e.at, p.get(2).copied().unwrap_or(0)))
                }
                _ => None,
            })
            .collect()
    }

    fn last_advert_before(&self, i: usize, t: Instant) -> Instant {
        self.adverts_from(i)
            .into_iter()
            .map(|(at, _)| at)
            .rfind(|at| *at <= t)
            .expect("node sent no advert before the event")
    }
}

mod unicast;

fn three_nodes() -> Sim {
    Sim::new(vec![cfg(11, 99), cfg(12, 89), cfg(13, 79)])
}

fn mdi(priority: u8, interval: Duration) -> Duration {
    master_down_interval(Version::V3, priority, interval)
}

fn skew(priority: u8, interval: Duration) -> Duration {
    skew_time(Version::V3, priority, interval)
}

const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------
// Timer arithmetic
// ---------------------------------------------------------------------------------

/// RFC 9568 §6.1: "Skew_Time ... (((256 - priority) * Master_Adver_Interval) / 256)",
/// "Master_Down_Interval ... (3 * Master_Adver_Interval) + Skew_Time".
#[test]
fn skew_time_and_master_down_interval_are_computed_exactly_per_rfc9568_6_1() {
    assert_eq!(skew(99, SEC), Duration::from_micros(613_281)); // 157/256 s
    assert_eq!(mdi(99, SEC), Duration::from_micros(3_613_281));
    assert_eq!(mdi(89, SEC), Duration::from_micros(3_652_343));
    // 100 cs * 157 / 256 = 61.328125 ms
    assert_eq!(
        skew(99, Duration::from_millis(100)),
        Duration::from_nanos(61_328_000)
    );
    assert_eq!(
        skew(255, Duration::from_millis(100)),
        Duration::from_nanos(390_000)
    );
    assert_eq!(skew(0, SEC), SEC);
    // Extremes do not overflow.
    assert_eq!(
        mdi(1, Duration::from_millis(40_950)),
        Duration::from_micros(122_850_000 + 40_790_039)
    );
}

/// RFC 3768 §6.1: "Skew_Time ... ((256 - Priority) / 256)" seconds, independent of the
/// advertisement interval.
#[test]
fn vrrpv2_skew_time_is_256_minus_priority_over_256_seconds() {
    assert_eq!(
        skew_time(Version::V2, 99, SEC),
        Duration::from_micros(613_281)
    );
    assert_eq!(
        skew_time(Version::V2, 99, 2 * SEC),
        Duration::from_micros(613_281)
    );
    assert_eq!(
        master_down_interval(Version::V2, 99, 2 * SEC),
        Duration::from_micros(6_613_281)
    );
}

#[test]
fn counters_iter_yields_every_contract_name_in_stable_order() {
    let names: Vec<_> = Counters::default().iter().collect();
    let expected = [
        "rx_adverts",
        "tx_adverts",
        "rx_priority_zero",
        "tx_priority_zero",
        "became_master",
        "discard_ip_header",
        "discard_ttl",
        "discard_source",
        "discard_version",
        "discard_type",
        "discard_checksum",
        "discard_length",
        "discard_vrid",
        "discard_interval",
        "discard_no_addresses",
        "discard_auth",
        "discard_own",
        "vip_mismatch",
    ];
    assert_eq!(names.iter().map(|(n, _)| *n).collect::<Vec<_>>(), expected);
    assert!(names.iter().all(|(_, v)| *v == 0));
    assert_eq!(Counters::NAMES, expected);
    let c = Counters {
        discard_ttl: 3,
        ..Counters::default()
    };
    assert_eq!(c.get("discard_ttl"), Some(3));
    assert_eq!(c.get("nope"), None);
}

// ---------------------------------------------------------------------------------
// Election and failover on the simulated LAN
// ---------------------------------------------------------------------------------

/// RFC 9568 §6.4.1: "Set the Master_Down_Timer to Master_Down_Interval ... Transition
/// to the {Backup} state"; §6.4.2: when it fires, "Transition to the {Master} state".
/// The highest priority has the shortest timer and wins the election.
#[test]
fn startup_enters_backup_and_highest_priority_becomes_master_after_master_down_interval() {
    let mut sim = three_nodes();
    sim.start_all();
    for i in 0..3 {
        assert_eq!(sim.router(i).state(), State::Backup);
        assert_eq!(sim.router(i).master(), None);
    }
    sim.run_to(60 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.vip_holders(), vec![0]);
    let elected = sim.became_master_at(0);
    assert_eq!(
        elected,
        vec![sim.at(mdi(99, SEC))],
        "exactly once, exactly at MDI(99)"
    );
    assert!(sim.became_master_at(1).is_empty() && sim.became_master_at(2).is_empty());
    for i in 1..3 {
        assert_eq!(sim.router(i).state(), State::Backup);
        assert_eq!(sim.router(i).master(), Some(addr(11)));
        assert_eq!(sim.router(i).master_priority(), Some(99));
    }
    assert_eq!(sim.router(0).master(), Some(addr(11)));
    assert_eq!(sim.router(0).counters().became_master, 1);
    assert_eq!(
        sim.router(1).counters().rx_adverts,
        sim.router(0).counters().tx_adverts
    );
    // Advert every interval on the original cadence: 3.613281 + k.
    let adverts = sim.adverts_from(0);
    for pair in adverts.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, SEC);
    }
    assert_logged("VRRP_Instance(VI_51) Entering MASTER STATE");
    assert_logged("state=master previous=backup");
    assert_logged("Entering BACKUP STATE");
    assert_logged("state=backup previous=init");
}

/// RFC 9568 §6.4.2: "If the Master_Down_Timer fires ... Transition to the {Master}
/// state", after Master_Down_Interval without an advert: no earlier than MDI after the
/// master's last advert, no later than MDI plus the delivery delay.
#[test]
fn backup_takes_over_after_master_crash_no_earlier_than_master_down_interval() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    sim.crash(0);
    let crash = sim.now;
    sim.run_to(30 * SEC);
    let last = sim.last_advert_before(0, crash);
    let takeover = sim.became_master_at(1);
    assert_eq!(takeover.len(), 1);
    let gap = takeover[0] - last;
    assert!(
        gap >= mdi(89, SEC),
        "took over after {gap:?}, before MDI(89)"
    );
    assert!(
        gap <= mdi(89, SEC) + DELAY,
        "took over after {gap:?}, later than MDI(89) + delay"
    );
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(sim.router(2).master(), Some(addr(12)));
    assert!(
        sim.became_master_at(2).is_empty(),
        "79 must never take over while 89 advertises"
    );
}

/// RFC 9568 §6.4.2: "If the Priority in the ADVERTISEMENT is zero, then: Set the
/// Master_Down_Timer to Skew_Time"; §6.4.3 Shutdown: "Send an ADVERTISEMENT with
/// Priority = 0".
#[test]
fn priority_zero_advert_on_shutdown_makes_backup_take_over_after_skew_time() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(Duration::from_millis(10_300));
    sim.shutdown(0);
    let shutdown = sim.now;
    // The goodbye: priority-0 advert, then the VIPs go.
    let tail: Vec<_> = sim
        .trace
        .iter()
        .filter(|e| e.node == 0 && e.at == shutdown)
        .collect();
    assert!(matches!(&tail[0].action, Action::SendAdvert { payload: p, .. } if p[2] == 0));
    assert_eq!(tail[1].action, Action::RemoveVips);
    assert_eq!(sim.router(0).state(), State::Initialize);
    assert_eq!(sim.router(0).counters().tx_priority_zero, 1);
    sim.run_to(30 * SEC);
    let takeover = sim.became_master_at(1);
    assert_eq!(takeover.len(), 1);
    let gap = takeover[0] - shutdown;
    assert!(
        gap >= skew(89, SEC) && gap <= skew(89, SEC) + DELAY,
        "gap {gap:?}"
    );
    assert_eq!(sim.masters(), vec![1]);
    assert!(
        sim.became_master_at(2).is_empty(),
        "79 has the longer skew and must lose"
    );
    assert_eq!(sim.router(1).counters().rx_priority_zero, 1);
    assert_logged("sent 0 priority");
    assert_logged("state=init previous=master");
}

/// RFC 9568 §6.4.2: "If Preempt_Mode is False, or if the Priority in the ADVERTISEMENT
/// is greater than or equal to the local Priority ... Otherwise, discard the
/// ADVERTISEMENT": a returning higher-priority router ignores the lower master and takes
/// over after its own Master_Down_Interval; §6.4.3: the master that hears it yields.
#[test]
fn returning_higher_priority_router_preempts_after_its_master_down_interval() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    sim.crash(0);
    sim.run_to(20 * SEC);
    assert_eq!(sim.masters(), vec![1]);
    sim.restart(0);
    let restart = sim.now;
    sim.run_to(restart - sim.start + 2 * SEC);
    // Only the returning router hears a master it outranks (the shell's preempt hold).
    assert!(sim.router(0).outranks_master(sim.now));
    assert!(!sim.router(2).outranks_master(sim.now), "79 follows 89");
    sim.run_to(40 * SEC);
    assert!(!sim.router(1).outranks_master(sim.now), "89 follows 99");
    assert_eq!(
        sim.became_master_at(0).last(),
        Some(&(restart + mdi(99, SEC)))
    );
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.vip_holders(), vec![0]);
    let yielded = sim.events(1, |a| *a == Action::RemoveVips);
    assert_eq!(yielded, vec![restart + mdi(99, SEC) + DELAY]);
    assert_eq!(sim.router(1).state(), State::Backup);
    assert_eq!(sim.router(1).master(), Some(addr(11)));
    assert_logged("Received higher prio advert");
    assert_logged("state=backup previous=master");
    // The director layer learns whom it preempted (alive) and whom it replaced (failed).
    assert_eq!(sim.router(0).preempted(), Some(addr(12)));
    sim.crash(0);
    sim.run_to(60 * SEC);
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(
        sim.router(1).preempted(),
        None,
        "n1 was silent: no preemption"
    );
}

/// RFC 9568 §6.4.2 with Preempt_Mode False: every advert resets the timer, so a
/// returning higher-priority router stays Backup.
#[test]
fn with_preempt_mode_false_a_returning_higher_priority_router_stays_backup() {
    let cfgs = [cfg(11, 99), cfg(12, 89), cfg(13, 79)]
        .into_iter()
        .map(|c| RouterConfig {
            preempt: false,
            ..c
        })
        .collect();
    let mut sim = Sim::new(cfgs);
    sim.start_all();
    sim.run_to(10 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    sim.crash(0);
    sim.run_to(20 * SEC);
    sim.restart(0);
    sim.run_to(120 * SEC);
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(sim.router(0).state(), State::Backup);
    assert_eq!(sim.router(0).master(), Some(addr(12)));
    assert_eq!(
        sim.became_master_at(0).len(),
        1,
        "only the initial election"
    );
}

/// RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is equal to the local
/// Priority and the primary IPvX Address of the sender is greater than the local
/// primary IPvX Address, then ... Transition to the {Backup} state".
#[test]
fn equal_priority_tie_is_broken_by_the_higher_primary_address() {
    let mut sim = Sim::new(vec![cfg(11, 100), cfg(12, 100)]);
    sim.start_all();
    sim.run_to(30 * SEC);
    // Equal timers: both become master at once, then the lower address yields.
    let t = sim.at(mdi(100, SEC));
    assert_eq!(sim.became_master_at(0), vec![t]);
    assert_eq!(sim.became_master_at(1), vec![t]);
    assert_eq!(sim.events(0, |a| *a == Action::RemoveVips), vec![t + DELAY]);
    assert_eq!(sim.masters(), vec![1]);
    assert_eq!(sim.router(0).master(), Some(addr(12)));
    // The higher one heard an equal-priority, lower-address advert: re-asserted at once.
    assert!(
        sim.events(1, |a| *a == Action::SendGarp)
            .contains(&(t + DELAY))
    );
}

/// RFC 9568 §6.4.2: "Set Master_Adver_Interval to Adver Interval contained in the
/// ADVERTISEMENT. Recompute the Skew_Time. Recompute the Master_Down_Interval."
#[test]
fn backup_adopts_the_master_advert_interval_and_recomputes_master_down_interval() {
    let fast = Duration::from_millis(100);
    let master = RouterConfig {
        advert_interval: fast,
        ..cfg(11, 99)
    };
    let mut sim = Sim::new(vec![master, cfg(12, 89)]);
    sim.start_all();
    sim.run_to(5 * SEC);
    assert_eq!(sim.became_master_at(0), vec![sim.at(mdi(99, fast))]);
    assert_eq!(sim.router(1).master_advert_interval(), fast);
    assert_eq!(sim.router(1).master_down_interval(), mdi(89, fast));
    sim.crash(0);
    let last = sim.last_advert_before(0, sim.now);
    sim.run_to(10 * SEC);
    let gap = sim.became_master_at(1)[0] - last;
    assert!(
        gap >= mdi(89, fast) && gap <= mdi(89, fast) + DELAY,
        "gap {gap:?}"
    );
    // Once master, it advertises its own interval again.
    assert_eq!(sim.router(1).master_advert_interval(), SEC);
    let adverts = sim.adverts_from(1);
    assert_eq!(adverts[1].0 - adverts[0].0, SEC);
}

/// Three nodes, 99 cut off from 89 and 79 for 20 s: a master on each side.
fn split_brain() -> Sim {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    sim.partition(&[1, 0, 0]);
    sim.run_to(30 * SEC);
    assert_eq!(
        sim.masters(),
        vec![0, 1],
        "each side of the partition has a master"
    );
    sim
}

/// Split brain: during a partition each side elects a master; on healing, the lower
/// master yields (RFC 9568 §6.4.3) and the higher one, hearing a lower-priority advert,
/// re-advertises at once and re-sends gratuitous ARPs (keepalived behaviour) so
/// neighbours move back.
#[test]
fn split_brain_heals_to_one_master_and_the_higher_master_re_advertises_and_sends_garp() {
    let mut sim = split_brain();
    assert_eq!(sim.router(2).master(), Some(addr(12)));
    // Heal right after 99's advert so that 89 speaks first across the healed LAN.
    let next_99 = sim
        .router(0)
        .poll_timeout()
        .expect("master has an advert timer");
    sim.run_until(next_99);
    sim.heal();
    let healed = sim.now;
    sim.run_to(40 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.vip_holders(), vec![0]);
    let garps: Vec<_> = sim.events(0, |a| *a == Action::SendGarp);
    let recovery: Vec<_> = garps.iter().filter(|t| **t > healed).collect();
    assert_eq!(
        recovery.len(),
        1,
        "one GARP burst on hearing the lower master"
    );
    let yielded = sim.events(1, |a| *a == Action::RemoveVips);
    assert_eq!(yielded.len(), 1);
    assert!(yielded[0] - healed <= SEC + 2 * DELAY);
    // The re-advert went out at the same instant as the GARP.
    assert!(sim.adverts_from(0).iter().any(|(t, _)| t == recovery[0]));
    assert_eq!(sim.router(2).master(), Some(addr(11)));
}

/// The other crossing at a heal: the higher master's advert reaches the lower one before
/// the lower one's next advert. The lower yields with one last advert, so the winner still
/// hears that a split brain ended and re-sends its gratuitous ARPs (without that advert it
/// never learnt it: in the lab soak the client's neighbour entry stayed on the loser's MAC
/// until the next takeover, its connections served by the loser's VIP on lo past the director).
#[test]
fn split_brain_healed_by_the_higher_masters_advert_still_ends_in_its_garp() {
    let mut sim = split_brain();
    // Heal right after 89's advert (lost to the partition): 99 speaks first across the
    // healed LAN, and 89 hears it before it speaks again.
    let sent_89 = sim.router(1).poll_timeout().expect("89 advertises");
    sim.run_until(sent_89);
    sim.heal();
    let healed = sim.now;
    let next_89 = healed + SEC;
    sim.run_to(40 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.vip_holders(), vec![0]);
    let yielded = sim.events(1, |a| *a == Action::RemoveVips);
    assert_eq!(yielded.len(), 1);
    assert!(
        yielded[0] < next_89,
        "89 yielded on 99's advert, before its own next one"
    );
    let last: Vec<_> = sim
        .adverts_from(1)
        .into_iter()
        .filter(|(t, _)| *t > healed)
        .collect();
    assert_eq!(
        last,
        vec![(yielded[0], 89)],
        "one last advert at 89's priority as it yields, then silence"
    );
    let recovery: Vec<_> = sim
        .events(0, |a| *a == Action::SendGarp)
        .into_iter()
        .filter(|t| *t > healed)
        .collect();
    assert_eq!(
        recovery.len(),
        1,
        "99 re-sends its GARPs on the last advert"
    );
    assert!(recovery[0] - yielded[0] <= 2 * DELAY);
    assert_eq!(sim.router(2).master(), Some(addr(11)));
}

/// Seeded loss: a backup may take over when three adverts in a row are lost, but the
/// split brain resolves by itself and the highest priority ends as the only master.
#[test]
fn under_random_loss_the_lan_converges_to_the_highest_priority_master() {
    let mut sim = three_nodes();
    sim.loss_percent = 40;
    sim.start_all();
    sim.run_to(300 * SEC);
    sim.loss_percent = 0;
    sim.run_to(305 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.vip_holders(), vec![0]);
    assert!(
        sim.router(1).counters().became_master > 0,
        "40 % loss should have caused at least one spurious takeover (seed changed?)"
    );
}

/// Link down: Fault (keepalived's FAULT), VIPs removed, no adverts; the backup takes
/// over within Master_Down_Interval. Link up: Backup, then preemption as usual.
#[test]
fn link_down_enters_fault_and_removes_vips_and_link_up_returns_to_backup() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    sim.set_link(0, false);
    let down = sim.now;
    assert_eq!(sim.router(0).state(), State::Fault);
    assert_eq!(sim.events(0, |a| *a == Action::RemoveVips), vec![down]);
    assert_eq!(
        sim.router(0).poll_timeout(),
        None,
        "no advert timer in Fault"
    );
    assert_eq!(sim.router(0).master(), None);
    sim.run_to(20 * SEC);
    assert!(sim.adverts_from(0).iter().all(|(t, _)| *t <= down));
    let last = sim.last_advert_before(0, down);
    let gap = sim.became_master_at(1)[0] - last;
    assert!(
        gap >= mdi(89, SEC) && gap <= mdi(89, SEC) + DELAY,
        "gap {gap:?}"
    );
    sim.set_link(0, true);
    let up = sim.now;
    assert_eq!(sim.router(0).state(), State::Backup);
    sim.run_to(40 * SEC);
    assert_eq!(sim.became_master_at(0).last(), Some(&(up + mdi(99, SEC))));
    assert_eq!(sim.masters(), vec![0]);
    assert_logged("Entering FAULT STATE");
    assert_logged("state=fault previous=master");
    assert_logged("state=backup previous=fault");
}

#[test]
fn link_down_at_startup_enters_fault_and_sends_nothing() {
    let mut sim = Sim::new(vec![cfg(11, 99)]);
    sim.nodes[0].link = false;
    sim.start_all();
    sim.run_to(60 * SEC);
    assert_eq!(sim.router(0).state(), State::Fault);
    assert!(sim.trace.is_empty());
    sim.set_link(0, true);
    sim.run_to(70 * SEC);
    assert_eq!(
        sim.became_master_at(0),
        vec![sim.at(60 * SEC + mdi(99, SEC))]
    );
}

/// RFC 3768 timing: the v2 skew does not scale with the interval, and v2 routers
/// advertise their own configured interval.
#[test]
fn vrrpv2_election_and_failover_follow_rfc3768_timers() {
    let v2 = |last, prio| RouterConfig {
        version: Version::V2,
        advert_interval: 2 * SEC,
        checksum: ChecksumMode::VrrpOnly,
        ..cfg(last, prio)
    };
    let mut sim = Sim::new(vec![v2(11, 99), v2(12, 89)]);
    sim.start_all();
    sim.run_to(20 * SEC);
    let mdi_v2 = |p| master_down_interval(Version::V2, p, 2 * SEC);
    assert_eq!(mdi_v2(99), Duration::from_micros(6_613_281));
    assert_eq!(sim.became_master_at(0), vec![sim.at(mdi_v2(99))]);
    assert_eq!(sim.router(1).master(), Some(addr(11)));
    assert_eq!(
        sim.router(1).counters().rx_adverts,
        sim.router(0).counters().tx_adverts
    );
    sim.crash(0);
    let last = sim.last_advert_before(0, sim.now);
    sim.run_to(40 * SEC);
    let gap = sim.became_master_at(1)[0] - last;
    assert!(
        gap >= mdi_v2(89) && gap <= mdi_v2(89) + DELAY,
        "gap {gap:?}"
    );
}

/// Priority 0 in our config: a scanning node follows the master, never sends, never
/// takes over, and forgets a master that went silent for Master_Down_Interval.
#[test]
fn priority_zero_scanning_node_never_becomes_master() {
    let mut sim = Sim::new(vec![cfg(11, 99), cfg(12, 89), cfg(13, 0)]);
    sim.start_all();
    assert_eq!(sim.router(2).state(), State::Scanning);
    sim.run_to(10 * SEC);
    assert_eq!(sim.router(2).master(), Some(addr(11)));
    assert_eq!(sim.router(2).master_priority(), Some(99));
    sim.crash(0);
    sim.run_to(30 * SEC);
    assert_eq!(sim.router(2).master(), Some(addr(12)));
    sim.crash(1);
    sim.run_to(300 * SEC);
    assert_eq!(sim.router(2).state(), State::Scanning);
    assert_eq!(sim.router(2).master(), None, "no master heard for MDI");
    assert!(
        sim.trace.iter().all(|e| e.node != 2),
        "a scanning node emits nothing"
    );
    assert_eq!(sim.router(2).poll_timeout(), None);
    // Shutdown of a scanning node sends nothing either.
    sim.shutdown(2);
    assert!(sim.trace.iter().all(|e| e.node != 2));
}

#[test]
fn scanning_node_forgets_the_master_after_master_down_interval() {
    let mut sim = Sim::new(vec![cfg(11, 99), cfg(13, 0)]);
    sim.start_all();
    sim.run_to(10 * SEC);
    sim.crash(0);
    let last = sim.last_advert_before(0, sim.now);
    let expiry = last + DELAY + master_down_interval(Version::V3, 0, SEC);
    sim.run_until(expiry - Duration::from_micros(1));
    assert_eq!(sim.router(1).master(), Some(addr(11)));
    sim.run_until(expiry);
    assert_eq!(sim.router(1).master(), None);
}

/// Issue 2 item 4: five gratuitous ARPs on becoming master and five more 5 s later;
/// the repeat is cancelled if mastership ends first.
#[test]
fn second_garp_burst_follows_five_seconds_after_becoming_master() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(60 * SEC);
    let t = sim.at(mdi(99, SEC));
    assert_eq!(
        sim.events(0, |a| *a == Action::SendGarp),
        vec![t, t + 5 * SEC]
    );
    // The order on becoming master: advert, VIPs, GARP.
    let first: Vec<_> = sim
        .trace
        .iter()
        .filter(|e| e.node == 0 && e.at == t)
        .map(|e| &e.action)
        .collect();
    assert!(matches!(first[0], Action::SendAdvert { payload: _, .. }));
    assert_eq!(first[1..], [&Action::AddVips, &Action::SendGarp]);
}

#[test]
fn second_garp_burst_is_cancelled_when_mastership_ends_before_it() {
    let mut sim = Sim::new(vec![cfg(11, 99), cfg(12, 89)]);
    // 89 starts first and becomes master at 3.65 s; 99 starts 1 s later and preempts at
    // 4.61 s, before 89's repeat at 8.65 s.
    sim.start_node(1);
    sim.run_to(SEC);
    sim.start_node(0);
    sim.run_to(60 * SEC);
    let became = sim.became_master_at(1);
    assert_eq!(became.len(), 1);
    assert_eq!(sim.events(1, |a| *a == Action::SendGarp), vec![became[0]]);
    assert_eq!(sim.masters(), vec![0]);
}

// ---------------------------------------------------------------------------------
// One router, driven by hand
// ---------------------------------------------------------------------------------

/// A backup (10.77.0.12, priority 89) that follows 10.77.0.11 (priority 99).
fn following_backup() -> (Router, Instant) {
    init_logging();
    let now = Instant::now();
    let mut r = Router::new(cfg(12, 89));
    r.handle_startup(now, true);
    let now = now + SEC;
    r.handle_datagram(now, &advert_datagram(11, &repr(99)));
    assert_eq!(r.master(), Some(addr(11)));
    assert_eq!(r.counters().rx_adverts, 1);
    while r.poll_action().is_some() {}
    (r, now)
}

fn repr(priority: u8) -> Repr {
    Repr::new(Version::V3, 51, priority, SEC, vec![VIP]).expect("valid advert")
}

fn advert_datagram(from: u8, repr: &Repr) -> Vec<u8> {
    let payload = repr.to_bytes(ChecksumMode::PseudoHeader, addr(from), MULTICAST_GROUP);
    datagram(addr(from), 255, 112, &payload)
}

/// A payload edited after encoding, with its checksum made valid again so only the
/// intended field is wrong.
fn edited(repr: &Repr, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut payload = repr.to_bytes(ChecksumMode::PseudoHeader, addr(11), MULTICAST_GROUP);
    edit(&mut payload);
    if payload.len() >= 8 {
        Packet::new_unchecked(&mut payload[..]).fill_checksum(
            ChecksumMode::PseudoHeader,
            addr(11),
            MULTICAST_GROUP,
        );
    }
    datagram(addr(11), 255, 112, &payload)
}

/// Feeds a malformed datagram and checks RFC 9568 §7.1: "... MUST be discarded": the
/// named counter moves by one and nothing else does (state, timer, master, actions).
fn assert_discarded(counter: &str, bytes: &[u8]) {
    let (mut r, now) = following_backup();
    let before = r.counters().clone();
    let timer = r.poll_timeout();
    r.handle_datagram(now + Duration::from_millis(500), bytes);
    assert_eq!(
        r.counters().get(counter),
        before.get(counter).map(|v| v + 1),
        "{counter}"
    );
    let moved: Vec<_> = r
        .counters()
        .iter()
        .zip(before.iter())
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    assert_eq!(moved, vec![counter], "only {counter} may move");
    assert_eq!(r.state(), State::Backup);
    assert_eq!(
        r.poll_timeout(),
        timer,
        "a discarded advert must not reset the timer"
    );
    assert_eq!(r.master(), Some(addr(11)));
    assert_eq!(r.poll_action(), None);
    assert_logged(&format!("({counter})"));
}

#[test]
fn rfc9568_7_1_ttl_not_255_is_discarded() {
    let payload = repr(99).to_bytes(ChecksumMode::PseudoHeader, addr(11), MULTICAST_GROUP);
    assert_discarded("discard_ttl", &datagram(addr(11), 64, 112, &payload));
    assert_logged("discarding advert from 10.77.0.11: TTL 64 is not 255");
}

#[test]
fn rfc9568_7_1_wrong_version_is_discarded() {
    assert_discarded("discard_version", &edited(&repr(99), |p| p[0] = 0x21));
}

#[test]
fn rfc9568_7_1_type_other_than_advertisement_is_discarded() {
    assert_discarded("discard_type", &edited(&repr(99), |p| p[0] = 0x32));
}

#[test]
fn rfc9568_7_1_bad_checksum_is_discarded() {
    let mut bytes = advert_datagram(11, &repr(99));
    bytes[27] ^= 0x01;
    assert_discarded("discard_checksum", &bytes);
}

#[test]
fn rfc9568_7_1_truncated_advert_is_discarded() {
    assert_discarded("discard_length", &edited(&repr(99), |p| p.truncate(10)));
    assert_discarded("discard_length", &edited(&repr(99), |p| p.truncate(5)));
}

#[test]
fn rfc9568_7_1_length_not_matching_the_address_count_is_discarded() {
    assert_discarded(
        "discard_length",
        &edited(&repr(99), |p| p.extend_from_slice(&[10, 77, 0, 101])),
    );
}

#[test]
fn rfc9568_7_1_vrid_not_ours_is_discarded() {
    let other = Repr {
        vrid: 52,
        ..repr(99)
    };
    assert_discarded("discard_vrid", &advert_datagram(11, &other));
}

#[test]
fn rfc9568_7_1_zero_advert_interval_is_discarded() {
    let zero = Repr {
        advert_int: 0,
        ..repr(99)
    };
    assert_discarded("discard_interval", &advert_datagram(11, &zero));
}

#[test]
fn rfc9568_5_2_5_zero_address_count_is_discarded() {
    let none = Repr {
        addresses: vec![],
        ..repr(99)
    };
    assert_discarded("discard_no_addresses", &advert_datagram(11, &none));
}

#[test]
fn our_own_advert_looped_back_is_discarded() {
    assert_discarded("discard_own", &advert_datagram(12, &repr(99)));
}

#[test]
fn unreadable_ip_header_or_other_protocol_is_discarded() {
    let payload = repr(99).to_bytes(ChecksumMode::PseudoHeader, addr(11), MULTICAST_GROUP);
    assert_discarded("discard_ip_header", &datagram(addr(11), 255, 6, &payload));
    assert_discarded("discard_ip_header", &[0x45, 0, 0]);
    assert_discarded("discard_ip_header", &[]);
    let mut v6 = advert_datagram(11, &repr(99));
    v6[0] = 0x65;
    assert_discarded("discard_ip_header", &v6);
}

/// RFC 3768 §7.1: "MUST verify that the Adver Interval in the ADVERTISEMENT packet is
/// the same as the locally configured for this virtual router"; auth type must be 0
/// for us (we neither send nor check authentication data).
#[test]
fn rfc3768_7_1_interval_mismatch_and_auth_type_are_discarded() {
    init_logging();
    let now = Instant::now();
    let v2 = RouterConfig {
        version: Version::V2,
        ..cfg(12, 89)
    };
    let mut r = Router::new(v2);
    r.handle_startup(now, true);
    let timer = r.poll_timeout();
    let send = |r: &mut Router, repr: &Repr, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut p = repr.to_bytes(ChecksumMode::VrrpOnly, addr(11), MULTICAST_GROUP);
        edit(&mut p);
        Packet::new_unchecked(&mut p[..]).fill_checksum(
            ChecksumMode::VrrpOnly,
            addr(11),
            MULTICAST_GROUP,
        );
        r.handle_datagram(now, &datagram(addr(11), 255, 112, &p));
    };
    let slow = Repr::new(Version::V2, 51, 99, 2 * SEC, vec![VIP]).expect("valid");
    send(&mut r, &slow, &|_| {});
    assert_eq!(r.counters().discard_interval, 1);
    let ok = Repr::new(Version::V2, 51, 99, SEC, vec![VIP]).expect("valid");
    send(&mut r, &ok, &|p| p[4] = 1);
    assert_eq!(r.counters().discard_auth, 1);
    assert_eq!(r.poll_timeout(), timer);
    assert_eq!(r.counters().rx_adverts, 0);
    send(&mut r, &ok, &|_| {});
    assert_eq!(r.counters().rx_adverts, 1);
    assert_eq!(r.master(), Some(addr(11)));
    // A v3 packet at a v2 router is a version error.
    r.handle_datagram(now, &advert_datagram(11, &repr(99)));
    assert_eq!(r.counters().discard_version, 1);
}

/// Discards are logged once per (sender, reason) per 10 s of injected time, with the
/// number suppressed in between.
#[test]
fn discard_log_lines_are_rate_limited_per_sender_and_reason() {
    let (mut r, now) = following_backup();
    let payload = repr(99).to_bytes(ChecksumMode::PseudoHeader, addr(11), MULTICAST_GROUP);
    let bad_ttl = datagram(addr(11), 1, 112, &payload);
    for ms in 0..100 {
        r.handle_datagram(now + Duration::from_millis(ms * 10), &bad_ttl);
    }
    // A different reason from the same sender has its own window.
    r.handle_datagram(
        now,
        &advert_datagram(
            11,
            &Repr {
                vrid: 7,
                ..repr(99)
            },
        ),
    );
    assert_eq!(r.counters().discard_ttl, 100);
    {
        assert_logs_captured();
        assert_eq!(log_lines("(discard_ttl)").len(), 1);
        assert_eq!(log_lines("(discard_vrid)").len(), 1);
    }
    r.handle_datagram(now + 10 * SEC, &bad_ttl);
    {
        assert_logs_captured();
        let lines = log_lines("(discard_ttl)");
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("99 more suppressed in the last 10s"),
            "{}",
            lines[1]
        );
    }
    // A flood from many spoofed senders stays bounded and does not panic.
    for i in 0..10_000u32 {
        let src = Ipv4Addr::from(0x0a00_0000 + i);
        r.handle_datagram(now + 11 * SEC, &datagram(src, 1, 112, &payload));
    }
    assert_eq!(r.counters().discard_ttl, 10_101);
    {
        assert_logs_captured();
        assert!(log_lines("(discard_ttl)").len() < 200);
    }
}

/// An address list that differs from ours is counted and logged once per change, and
/// the advert is still processed (keepalived does the same).
#[test]
fn advert_with_other_addresses_counts_vip_mismatch_and_is_still_processed() {
    let (mut r, now) = following_backup();
    let other = Repr {
        addresses: vec![Ipv4Addr::new(10, 77, 0, 200)],
        ..repr(99)
    };
    let timer = r.poll_timeout();
    for k in 1..=3u32 {
        r.handle_datagram(now + k * SEC, &advert_datagram(11, &other));
    }
    assert_eq!(r.counters().vip_mismatch, 3);
    assert_eq!(r.counters().rx_adverts, 4);
    assert!(
        r.poll_timeout() > timer,
        "still processed: the timer was reset"
    );
    {
        assert_logs_captured();
        assert_eq!(log_lines("carries addresses").len(), 1);
    }
    let third = Repr {
        addresses: vec![VIP, Ipv4Addr::new(10, 77, 0, 201)],
        ..repr(99)
    };
    r.handle_datagram(now + 4 * SEC, &advert_datagram(11, &third));
    {
        assert_logs_captured();
        assert_eq!(log_lines("carries addresses").len(), 2);
    }
}

/// quinn-proto's rule, and our documented call order: a timeout before the deadline
/// changes nothing.
#[test]
fn spurious_handle_timeout_is_a_no_op() {
    let (mut r, now) = following_backup();
    let deadline = r.poll_timeout().expect("backup has Master_Down_Timer");
    for t in [now, now + SEC, deadline - Duration::from_micros(1)] {
        r.handle_timeout(t);
        assert_eq!(r.state(), State::Backup);
        assert_eq!(r.poll_timeout(), Some(deadline));
        assert_eq!(r.poll_action(), None);
    }
    r.handle_timeout(deadline);
    assert_eq!(r.state(), State::Master);
    while r.poll_action().is_some() {}
    let next = r.poll_timeout().expect("master has Adver_Timer");
    r.handle_timeout(next - Duration::from_micros(1));
    r.handle_timeout(deadline);
    assert_eq!(r.poll_action(), None);
    assert_eq!(r.poll_timeout(), Some(next));
    assert_eq!(r.counters().became_master, 1);
    // A late wake-up keeps the cadence instead of drifting.
    r.handle_timeout(next + Duration::from_millis(7));
    assert!(matches!(
        r.poll_action(),
        Some(Action::SendAdvert { payload: _, .. })
    ));
    assert_eq!(r.poll_timeout(), Some(next + SEC));
    // Initialize and Fault have no timers at all.
    let mut idle = Router::new(cfg(13, 50));
    idle.handle_timeout(now);
    assert_eq!((idle.poll_timeout(), idle.poll_action()), (None, None));
}

/// RFC 9568 §6.4.3: "If the Priority in the ADVERTISEMENT is zero, then: Send an
/// ADVERTISEMENT; Reset the Adver_Timer to Advertisement_Interval".
#[test]
fn master_receiving_priority_zero_advertises_at_once() {
    let mut sim = Sim::new(vec![cfg(11, 99)]);
    sim.start_all();
    sim.run_to(5 * SEC);
    let now = sim.now;
    let r = &mut sim.nodes[0].router;
    r.handle_datagram(now, &advert_datagram(12, &repr(0)));
    assert!(matches!(r.poll_action(), Some(Action::SendAdvert { payload: p, .. }) if p[2] == 99));
    assert_eq!(r.poll_action(), None);
    assert_eq!(r.poll_timeout(), Some(now + SEC));
    assert_eq!(r.state(), State::Master);
}

#[test]
fn shutdown_outside_master_sends_nothing_and_returns_to_initialize() {
    let (mut r, now) = following_backup();
    r.handle_shutdown(now);
    assert_eq!(r.state(), State::Initialize);
    assert_eq!(
        (r.poll_action(), r.poll_timeout(), r.master()),
        (None, None, None)
    );
    r.handle_shutdown(now);
    r.handle_link(now, false);
    assert_eq!(
        r.state(),
        State::Initialize,
        "not running: link events are ignored"
    );
    r.handle_startup(now, true);
    assert_eq!(r.state(), State::Backup, "a restart after shutdown works");
}

/// Emitted adverts are what the wire codec parses back, with our priority, VRID,
/// interval and addresses, and the checksum mode asked for.
#[test]
fn emitted_advert_round_trips_through_the_codec() {
    for mode in [ChecksumMode::PseudoHeader, ChecksumMode::VrrpOnly] {
        let mut r = Router::new(RouterConfig {
            checksum: mode,
            priority: 255,
            ..cfg(11, 99)
        });
        r.handle_startup(Instant::now(), true);
        let Some(Action::SendAdvert { payload: p, .. }) = r.poll_action() else {
            panic!("owner advertises at once")
        };
        let packet = Packet::new_checked(&p[..]).expect("header");
        let back = Repr::parse(&packet, Version::V3, addr(11), MULTICAST_GROUP).expect("valid");
        assert_eq!(
            back,
            Repr::new(Version::V3, 51, 255, SEC, vec![VIP]).expect("valid")
        );
        let plain = crate::wire::vrrp::checksum::fold(crate::wire::vrrp::checksum::sum(&p)) == 0;
        assert_eq!(plain, mode == ChecksumMode::VrrpOnly);
    }
}

/// No input panics: random bytes, and valid datagrams with random corruption, through
/// handle_datagram in every state (the module is fuzzed through this entry point).
#[test]
fn no_datagram_panics_in_any_state() {
    init_logging();
    let mut rng = XorShift::new(42);
    let now = Instant::now();
    let mut routers: Vec<Router> = Vec::new();
    for (prio, link) in [(89, true), (255, true), (0, true), (89, false)] {
        let mut r = Router::new(cfg(12, prio));
        r.handle_startup(now, link);
        routers.push(r);
    }
    routers.push(Router::new(cfg(12, 89)));
    let valid = advert_datagram(11, &repr(99));
    for n in 0..50_000u64 {
        let bytes: Vec<u8> = if n % 2 == 0 {
            let len = rng.below(64) as usize;
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = valid.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = rng.next() as u8;
            }
            b.truncate(rng.below(b.len() as u64 + 8) as usize);
            b
        };
        for r in &mut routers {
            r.handle_datagram(now + Duration::from_millis(n), &bytes);
            while r.poll_action().is_some() {}
        }
    }
}

// ---------------------------------------------------------------------------------
// Live reload (issue 4 item 7)
// ---------------------------------------------------------------------------------

impl Sim {
    /// `proxyha reload` on node `i` with `cfg`; true if applied in place.
    fn reconfigure(&mut self, i: usize, cfg: RouterConfig) -> bool {
        self.enter(i);
        let now = self.now;
        let applied = self.nodes[i].router.reconfigure(now, cfg.clone());
        if applied {
            self.nodes[i].cfg = cfg;
        }
        self.flush(i);
        applied
    }
}

#[test]
fn reload_lowering_the_master_priority_above_the_backup_keeps_the_vip_where_it_is() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    let at = sim.now;
    assert!(sim.reconfigure(0, cfg(11, 95)), "in place");
    sim.run_to(30 * SEC);
    assert_eq!(sim.masters(), vec![0], "95 still beats 89");
    assert_eq!(sim.became_master_at(0).len(), 1, "the VIP never left n1");
    assert!(sim.became_master_at(1).is_empty(), "n2 never took over");
    // The new priority is advertised at once, not one interval later.
    let first = sim
        .adverts_from(0)
        .into_iter()
        .find(|(t, _)| *t >= at)
        .expect("an advert after the reload");
    assert_eq!(first, (at, 95));
    assert_eq!(sim.router(1).master_priority(), Some(95));
}

#[test]
fn reload_lowering_the_master_below_a_preempting_backup_hands_over_by_the_rfc() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let at = sim.now;
    assert!(sim.reconfigure(0, cfg(11, 80)));
    sim.run_to(30 * SEC);
    assert_eq!(sim.masters(), vec![1], "89 preempts 80");
    // n2 ignores the lower advert sent at `at`: its timer, started by n1's last advert at
    // 99, runs out within one Master_Down_Interval.
    let took = sim.became_master_at(1)[0];
    assert!(
        took > at && took <= at + mdi(89, SEC) + DELAY,
        "took over {:?} after the reload",
        took - at
    );
    assert_eq!(sim.vip_holders(), vec![1]);
}

#[test]
fn reload_of_the_advert_interval_is_adopted_by_the_backups() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let mut c = cfg(11, 99);
    c.advert_interval = Duration::from_millis(200);
    assert!(sim.reconfigure(0, c));
    sim.run_to(20 * SEC);
    assert_eq!(sim.masters(), vec![0]);
    assert_eq!(sim.became_master_at(0).len(), 1);
    assert_eq!(
        sim.router(1).master_advert_interval(),
        Duration::from_millis(200)
    );
    let late: Vec<Instant> = sim
        .adverts_from(0)
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| *t >= sim.at(15 * SEC))
        .collect();
    assert!(
        late.windows(2)
            .all(|w| w[1] - w[0] == Duration::from_millis(200)),
        "adverts every 200 ms"
    );
}

#[test]
fn reload_to_priority_zero_resigns_and_scans_and_back_makes_a_candidate() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let at = sim.now;
    assert!(sim.reconfigure(0, cfg(11, 0)));
    assert_eq!(sim.router(0).state(), State::Scanning);
    assert_eq!(
        sim.adverts_from(0).last(),
        Some(&(at, 0)),
        "sent 0 priority"
    );
    sim.run_to(20 * SEC);
    assert_eq!(sim.masters(), vec![1], "n2 took over after its Skew_Time");
    assert_eq!(sim.became_master_at(1), vec![at + DELAY + skew(89, SEC)]);
    assert!(sim.reconfigure(0, cfg(11, 99)));
    assert_eq!(sim.router(0).state(), State::Backup);
    sim.run_to(40 * SEC);
    assert_eq!(sim.masters(), vec![0], "a candidate again, and it preempts");
}

#[test]
fn reload_with_another_vrid_or_address_is_refused_for_a_restart() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(10 * SEC);
    let mut other = cfg(11, 99);
    other.vrid = 52;
    assert!(!sim.reconfigure(0, other));
    let mut other = cfg(11, 99);
    other.vips = vec![addr(101)];
    assert!(!sim.reconfigure(0, other));
    assert!(!sim.reconfigure(0, cfg(21, 99)));
    assert_eq!(sim.router(0).config(), &cfg(11, 99), "unchanged");
    let before = sim.adverts_from(0).len();
    assert!(
        sim.reconfigure(0, cfg(11, 99)),
        "the same config is a no-op"
    );
    assert_eq!(sim.adverts_from(0).len(), before);
}

/// Planned handover between proxyha nodes (issue 9): the leaving master stops advertising
/// but keeps the VIP; the named successor takes over at once instead of after the
/// priority-0 advert and its Skew_Time; the old master does not answer the successor's
/// lower adverts, and leaves without a priority-0 advert, so the third router never
/// shortens its timer against the new master.
#[test]
fn a_named_successor_takes_over_at_once_and_the_leaving_master_sends_no_priority_zero() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(Duration::from_millis(10_300));
    assert_eq!(sim.masters(), vec![0]);
    sim.enter(0);
    sim.nodes[0].router.handle_handover_begin();
    sim.flush(0);
    assert!(sim.router(0).is_handing_over());
    let asked = sim.now;
    sim.enter(1);
    sim.nodes[1].router.handle_takeover_request(asked, addr(11));
    sim.flush(1);
    assert_eq!(
        sim.became_master_at(1),
        vec![asked],
        "the successor takes over at once"
    );
    // Both hold the VIP until the old master hears it may go; it never re-asserts.
    sim.run_to(Duration::from_millis(10_500));
    assert_eq!(sim.vip_holders(), vec![0, 1]);
    let old_adverts = sim.events(0, |a| {
        matches!(a, Action::SendAdvert { payload: _, .. } | Action::SendGarp)
    });
    assert!(
        old_adverts.iter().all(|t| *t < asked),
        "no advert or ARP from the leaving master after the handover began: {old_adverts:?}"
    );
    sim.enter(0);
    let now = sim.now;
    sim.nodes[0].router.handle_handed_over(now);
    sim.flush(0);
    sim.nodes[0].alive = false;
    assert_eq!(sim.router(0).counters().tx_priority_zero, 0);
    assert_eq!(sim.router(0).state(), State::Initialize);
    sim.run_to(30 * SEC);
    assert_eq!(sim.masters(), vec![1]);
    assert!(
        sim.became_master_at(2).is_empty(),
        "79 follows the successor"
    );
    assert_eq!(sim.router(2).master(), Some(addr(12)));
    assert_logged("hands over: taking over now");
    assert_logged("handed over: leaving without a priority-0 advert");
}

/// A handover whose successor never answers ends the RFC way: the shell's timeout calls
/// `handle_shutdown`, which sends the priority-0 advert as usual.
#[test]
fn a_handover_without_a_successor_falls_back_to_the_priority_zero_advert() {
    let mut sim = three_nodes();
    sim.start_all();
    sim.run_to(Duration::from_millis(10_300));
    sim.enter(0);
    sim.nodes[0].router.handle_handover_begin();
    sim.flush(0);
    sim.run_to(Duration::from_millis(11_800));
    assert_eq!(
        sim.masters(),
        vec![0],
        "a silent master stays master until its timeout"
    );
    sim.shutdown(0);
    assert_eq!(sim.router(0).counters().tx_priority_zero, 1);
    let stop = sim.now;
    sim.run_to(30 * SEC);
    let takeover = sim.became_master_at(1);
    assert_eq!(takeover.len(), 1);
    assert!(
        takeover[0] - stop <= skew(89, SEC) + DELAY,
        "{:?}",
        takeover[0] - stop
    );
}
