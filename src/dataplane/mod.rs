//! The director's kernel data path (issue 3, BRIEF §6 "Data paths tried here").
//!
//! Policy and kernel meet here, netavark style: the daemon describes what it wants as plain
//! data ([`Desired`]); pure functions turn it into an `nft -f` script ([`plan()`]), policy
//! routing ([`routing_plan`]) and host settings ([`host_plan`]), tested without root; a
//! [`Dataplane`] carries them out. [`NftDataplane`] is the real one (nft + netlink + /proc/sys),
//! [`RecordingDataplane`] records calls for tests of the daemon.
//!
//! Marks: the packet mark that routes a client to a node *is the node's IPv4 address* as a
//! `u32` (0 = not decided yet). That keeps a pin meaningful across table changes and across
//! directors (a standby imports `(client, mark)` and the mark still names the same node), and
//! the director's own address marks "serve locally", which the sticky map can remember (a
//! mark of 0 could not be told from a miss).

mod netns;
mod nfnl;
mod nfsock;
mod nft;
mod plan;
mod rtsock;
mod sticky;

use std::net::Ipv4Addr;

pub use crate::config::{Mode, PortRedirect};
pub use nft::{NftDataplane, NftOptions};
pub use plan::{
    BACKEND_RULE_PREF, FRESH_TIMEOUT, FWMARK_RULE_PREF, HostPlan, LOCAL_RULE_PREF, LOCAL_TABLE,
    Route, RoutingPlan, Rule, Selector, TABLE, flush_pins, host_plan, mark_of, plan, preamble,
    preload_pins, routing_plan, void_pins,
};
pub use sticky::{StickyEntry, parse_sticky_dump};

/// Everything the data path should look like on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub vip: Ipv4Addr,
    /// The HA interface (forwarding and the backend return route leave through it).
    pub interface: String,
    pub redirects: Vec<PortRedirect>,
    pub mode: Mode,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This node owns the VIP and hands connections out.
    Director(DirectorState),
    /// This node serves what a director hands it.
    Scanning {
        /// This node's management address (NAT mode: the source of the return rule).
        self_addr: Ipv4Addr,
        /// The current director (NAT mode: replies go back through it); `None` while unknown.
        director: Option<Ipv4Addr>,
    },
    /// Not taking part: nothing of ours in the kernel.
    Idle,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorState {
    /// The director's own management address; its mark means "serve locally".
    pub self_addr: Ipv4Addr,
    /// The other live nodes (not the director itself): routes and NAT rules go to them.
    pub nodes: Vec<Ipv4Addr>,
    /// One pool per set of redirected ports that share a bucket table and serving nodes
    /// (one pool for all ports while every node serves every port).
    pub pools: Vec<PortPool>,
    pub hash_seed: u32,
    /// Idle time after which a client's pin expires; 0 disables stickiness.
    pub sticky_idle_s: u32,
    /// Pins to load into the sticky map (replicated from the previous director): all of
    /// them, or only those not staged yet ([`Dataplane::stage_pins`]).
    pub sticky_preload: Vec<StickyEntry>,
    /// Keys to delete from the sticky map first (staged pins whose node is gone).
    pub sticky_void: Vec<StickyEntry>,
}

/// A standby candidate's changes for its own `sticky` map: the pins it holds from the
/// director, kept in the kernel ahead of a takeover (no rule reads them until it directs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinStage {
    /// Pins to (re)write with their time left.
    pub upserts: Vec<StickyEntry>,
    /// Keys that are gone (mark and time 0).
    pub removed: Vec<StickyEntry>,
    /// The pins' idle timeout (the map's per-element timeout), ms.
    pub timeout_ms: u64,
}

impl PinStage {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// The nodes behind some redirected ports (issue 4: a node whose listener for one port
/// fails leaves that port's pool only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPool {
    /// Redirected (VIP-side) ports.
    pub ports: Vec<u16>,
    /// Nodes a pin for these ports may keep pointing at: live and listening there,
    /// draining ones included (their pinned clients finish). The director's own address
    /// when it serves them itself.
    pub serving: Vec<Ipv4Addr>,
    /// Bucket `b` serves new clients with `jhash(saddr) mod len seed hash_seed == b`
    /// (`director::scheduler::bucket_of`); `None` (or the director's own address) = local.
    pub buckets: Vec<Option<Ipv4Addr>>,
}

/// Errors name the operation and the object; teardown collects all of them.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("planning the data path: {0}")]
    Invalid(String),
    #[error("{op}: {detail}")]
    Op { op: String, detail: String },
    #[error("tearing down the data path: {}", join(.0))]
    Teardown(Vec<DataplaneError>),
}

fn join(errs: &[DataplaneError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the director's replication needs read from (and deleted in) the kernel this period
/// (`director::cluster::Cluster::pin_reads`): each part costs what changed, not the number
/// of clients, except the rare whole read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinReads {
    /// Read the `fresh` map (new pins).
    pub fresh: bool,
    /// Look these pins up in `sticky` (their told deadline is near).
    pub lookup: Vec<(Ipv4Addr, u16)>,
    /// Read the whole `sticky` map (the reconcile, every few minutes, and after the pools
    /// changed): the worker then deletes the void pins it finds ([`void_pins`]).
    pub full: bool,
}

impl PinReads {
    pub fn is_empty(&self) -> bool {
        *self == PinReads::default()
    }
}

/// What was read for a [`PinReads`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinsRead {
    pub fresh: Vec<StickyEntry>,
    /// Looked-up pins still there, with their expiry now.
    pub found: Vec<StickyEntry>,
    /// Looked-up keys gone (expired).
    pub missing: Vec<(Ipv4Addr, u16)>,
    pub full: Option<Vec<StickyEntry>>,
    /// The void pins deleted after a whole read (not in `full`).
    pub deleted: Vec<StickyEntry>,
}

/// The seam between the daemon's policy and the kernel.
pub trait Dataplane {
    /// Makes the kernel match `desired`. Idempotent; keeps live sticky pins across calls.
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError>;
    /// Removes everything this data path added; carries on past failures and reports all.
    fn teardown(&mut self) -> Result<(), DataplaneError>;
    /// The director's pin reads for replication.
    fn read_pins(&mut self, reads: &PinReads) -> Result<PinsRead, DataplaneError>;
    /// Deletes these pins from `sticky` (see [`void_pins`]); one that expired meanwhile is
    /// not an error.
    fn delete_pins(&mut self, pins: &[StickyEntry]) -> Result<(), DataplaneError>;
    /// A scanning node: writes a [`PinStage`] into its `sticky` map. An error when the node
    /// is not scanning (its table is not a scanning node's).
    fn stage_pins(&mut self, stage: &PinStage) -> Result<(), DataplaneError>;
}

/// One recorded call of [`RecordingDataplane`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The desired state and the nft script it planned to.
    Apply {
        desired: Desired,
        script: String,
    },
    Teardown,
    ReadPins(PinReads),
    DeletePins(Vec<StickyEntry>),
    StagePins(PinStage),
}

/// A [`Dataplane`] for tests: records calls, plans (so invalid input still fails like the
/// real one) and touches nothing.
#[derive(Debug, Default)]
pub struct RecordingDataplane {
    pub calls: Vec<Call>,
    /// The kernel's `sticky` map as [`Dataplane::read_pins`] sees it.
    pub sticky: Vec<StickyEntry>,
    /// The kernel's `fresh` map.
    pub fresh: Vec<StickyEntry>,
}

impl Dataplane for RecordingDataplane {
    fn apply(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        let script = plan(desired)?;
        self.calls.push(Call::Apply {
            desired: desired.clone(),
            script,
        });
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), DataplaneError> {
        self.calls.push(Call::Teardown);
        Ok(())
    }

    fn read_pins(&mut self, reads: &PinReads) -> Result<PinsRead, DataplaneError> {
        self.calls.push(Call::ReadPins(reads.clone()));
        let mut out = PinsRead::default();
        if reads.fresh {
            out.fresh = self.fresh.clone();
        }
        for k in &reads.lookup {
            match self.sticky.iter().find(|e| (e.client, e.port) == *k) {
                Some(e) => out.found.push(*e),
                None => out.missing.push(*k),
            }
        }
        if reads.full {
            out.full = Some(self.sticky.clone());
        }
        Ok(out)
    }

    fn delete_pins(&mut self, pins: &[StickyEntry]) -> Result<(), DataplaneError> {
        self.calls.push(Call::DeletePins(pins.to_vec()));
        let keys: Vec<(Ipv4Addr, u16)> = pins.iter().map(|e| (e.client, e.port)).collect();
        self.sticky.retain(|e| !keys.contains(&(e.client, e.port)));
        Ok(())
    }

    fn stage_pins(&mut self, stage: &PinStage) -> Result<(), DataplaneError> {
        self.calls.push(Call::StagePins(stage.clone()));
        let gone: Vec<(Ipv4Addr, u16)> = stage
            .removed
            .iter()
            .chain(&stage.upserts)
            .map(|e| (e.client, e.port))
            .collect();
        self.sticky.retain(|e| !gone.contains(&(e.client, e.port)));
        self.sticky.extend(stage.upserts.iter().copied());
        Ok(())
    }
}
