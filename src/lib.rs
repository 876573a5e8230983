//! ProxyHA: VRRP failover and kernel-level load sharing for a group of web proxies.
//!
//! Layering (see ARCHITECTURE.md): `wire` (codecs, no I/O) → `vrrp` (sans-IO protocol
//! core) → `daemon` (the tokio shell; the only place that touches sockets, netlink,
//! files and clocks). `config`, `status` and `logging` are shared plain-data modules.
#![deny(unsafe_code)]

pub mod check;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod load;
pub mod logging;
pub mod network;
pub mod reload;
pub mod setup;
pub mod status;
#[cfg(test)]
mod test_support;
pub mod update;
pub mod vrrp;
pub mod wire;
