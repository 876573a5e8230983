//! The director's sans-IO policy: who gets new clients, and which clients stay put.
//!
//! - [`scheduler`]: per-node weights from capacity and measured load (feedback toward
//!   equal utilisation), and the bucket table `hash(client source IP) mod N → node` that
//!   the shell writes into the nft `buckets` map.
//! - [`sticky`]: client → node pins with idle expiry, the model of the nft `sticky` map,
//!   exported to and imported from a standby director.
//!
//! Like `vrrp`, nothing here does I/O or reads a clock: time is a `u64` millisecond
//! argument from the shell's monotonic clock.

use std::net::Ipv4Addr;

pub mod cluster;
pub mod replication;
pub mod scheduler;
pub mod sticky;

/// A node is named by its management address: stable across restarts and the same on
/// every director candidate, so tables and pins can be replicated as they are. The shell
/// maps it to an nft mark.
pub type NodeId = Ipv4Addr;
