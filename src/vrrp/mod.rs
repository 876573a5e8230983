//! The VRRP state machine (RFC 9568 §6; RFC 3768 for VRRPv2), sans-IO.
//!
//! The core never reads a clock, never touches a socket and never sleeps: the shell
//! feeds it events stamped with the time it observed them and carries out the
//! [`Action`]s it asks for. That keeps every timing rule of the RFC testable on virtual
//! time (see the simulator in `sim.rs`), and keeps the failover path free of I/O.
//!
//! Call order, as the shell's event loop drives it:
//!
//! 1. [`Router::new`], then [`Router::handle_startup`] once the interface state is known.
//! 2. Loop: wait for a datagram, a link change, a shutdown signal, or the instant of
//!    [`Router::poll_timeout`], whichever comes first, and pass it to
//!    [`Router::handle_datagram`], [`Router::handle_link`], [`Router::handle_shutdown`]
//!    or [`Router::handle_timeout`].
//! 3. After *every* `handle_*` call, drain [`Router::poll_action`] until it returns
//!    `None` and execute the actions in order (the order matters: an advert goes out
//!    before the VIP is added and before the gratuitous ARPs, as in RFC 9568 §6.4.2),
//!    then ask [`Router::poll_timeout`] again, since any input may move the deadline.
//!
//! Calling `handle_timeout` early, late or twice is harmless: it only acts on timers
//! whose deadline has passed.

mod counters;
mod router;
#[cfg(test)]
mod sim;
pub mod track;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use counters::Counters;
pub use router::{Router, speakers};

use crate::wire::vrrp::{ChecksumMode, MULTICAST_GROUP, Version};

/// The gratuitous ARPs sent on becoming master are repeated once after this delay
/// (issue 2, item 4): switches and neighbours that were busy during the first burst
/// (or an STP port that was still learning) get a second chance to move the VIP.
pub const GARP_REPEAT_DELAY: Duration = Duration::from_secs(5);

/// A discard log line is written at most once per (sender, reason) in this much
/// injected time; a flood of bad packets must not flood syslog.
pub const DISCARD_LOG_WINDOW: Duration = Duration::from_secs(10);

/// An advert from a sender that may not speak (`discard_source`) is logged once per sender
/// in this much time: the first one says who; a rogue that keeps sending gets one reminder
/// with its count every 10 minutes, not a line every 10 s.
pub const SOURCE_LOG_WINDOW: Duration = Duration::from_secs(600);

/// What one virtual router instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub version: Version,
    /// Virtual router ID; adverts for other VRIDs are counted and discarded.
    pub vrid: u8,
    /// 1..=254: candidate for master. 0: scanning node only, it tracks the master but
    /// never sends and never takes over. 255 (address owner, RFC 9568 §6.4.1) starts as
    /// master; the config layer does not offer it.
    pub priority: u8,
    /// Our Advertisement_Interval. v3 carries centiseconds (10 ms..=40.95 s), v2 whole
    /// seconds (1..=255 s); other values are rounded to the nearest one the wire can
    /// carry, with a warning, because a router must still come up.
    pub advert_interval: Duration,
    /// Preempt_Mode: whether a higher-priority backup takes over from a lower master.
    pub preempt: bool,
    /// The virtual addresses we advertise and own as master.
    pub vips: Vec<Ipv4Addr>,
    /// Our source address: used to recognise our own adverts and to break priority ties.
    pub primary_addr: Ipv4Addr,
    /// Whether emitted v3 checksums include the IPv4 pseudo-header (v2 never does).
    pub checksum: ChecksumMode,
    /// Unicast VRRP: one advert to each of these instead of one to 224.0.0.18 (our own
    /// address is skipped). Any TTL is accepted then (the packets may cross a router, as
    /// keepalived accepts with `unicast_peer`); multicast adverts must carry TTL 255.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The only senders whose adverts count (`discard_source` for any other); empty: any.
    pub allowed_sources: Vec<Ipv4Addr>,
}

impl RouterConfig {
    /// Where our adverts go: each unicast peer but ourselves, or the VRRP group.
    pub fn destinations(&self) -> Vec<Ipv4Addr> {
        if self.unicast_peers.is_empty() {
            return vec![MULTICAST_GROUP];
        }
        let mut to: Vec<Ipv4Addr> = Vec::new();
        for p in &self.unicast_peers {
            if *p != self.primary_addr && !to.contains(p) {
                to.push(*p);
            }
        }
        to
    }
}

/// The states of RFC 9568 §6.4 plus two of ours: `Fault` (link down, keepalived's
/// FAULT) and `Scanning` (priority 0: a passive member that only follows the master).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
    Scanning,
}

impl State {
    /// The name used in `status --json` and in `state=… previous=…` log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
            State::Scanning => "scanning",
        }
    }

    /// The word keepalived prints in "Entering … STATE", which administrators grep for.
    fn log_name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
            State::Scanning => "SCANNING",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the shell must do, in the order the core returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A VRRP message (the IP payload) to send to `to` (224.0.0.18, or a unicast peer)
    /// with TTL 255 from `primary_addr`. The v3 pseudo-header checksum covers `to`.
    SendAdvert { to: Ipv4Addr, payload: Vec<u8> },
    /// Configure the VIPs on the interface.
    AddVips,
    /// Remove the VIPs from the interface.
    RemoveVips,
    /// Send one burst of gratuitous ARPs for each VIP (the shell sends 5 frames).
    SendGarp,
}

/// Skew_Time for a router of `priority` following a master that advertises every
/// `master_adver_interval`.
///
/// v3 (RFC 9568 §6.1): `((256 - Priority) * Master_Adver_Interval) / 256`.
/// v2 (RFC 3768 §6.1): `(256 - Priority) / 256` seconds, whatever the interval.
///
/// Computed in whole microseconds with integer arithmetic so that repeated
/// recomputation never drifts; keepalived truncates the v3 value to centiseconds,
/// which makes it up to 10 ms shorter than ours.
pub fn skew_time(version: Version, priority: u8, master_adver_interval: Duration) -> Duration {
    let weight = 256 - u128::from(priority);
    let micros = match version {
        Version::V3 => weight * master_adver_interval.as_micros() / 256,
        Version::V2 => weight * 1_000_000 / 256,
    };
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time` (RFC 9568 §6.1; RFC
/// 3768 uses its Advertisement_Interval, which is the same value there since v2
/// routers must agree on the interval).
pub fn master_down_interval(
    version: Version,
    priority: u8,
    master_adver_interval: Duration,
) -> Duration {
    master_adver_interval
        .saturating_mul(3)
        .saturating_add(skew_time(version, priority, master_adver_interval))
}
