//! The shell around [`crate::network`]: reads links, addresses, the host name and
//! /etc/resolv.conf, carries out the plan at start, and watches the HA interface's bond.

use super::atomic::write_atomic;
use std::path::{Path, PathBuf};

use rtnetlink::Handle;

use super::DaemonError;
use super::netlink;
use crate::config::Config;
use crate::network::{self, BondStatus, Current, Step};

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Applies `[network]` (when present) before anything looks the HA interface up.
pub async fn apply(handle: &Handle, config: &Config) -> Result<(), DaemonError> {
    let Some(net) = &config.network else {
        return Ok(());
    };
    let current = Current {
        links: netlink::links(handle).await?,
        addresses: netlink::addresses(handle).await?,
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        resolv_conf: std::fs::read_to_string(RESOLV_CONF).ok(),
    };
    let steps = network::plan(net, &config.node.name, &current)
        .map_err(|e| DaemonError::Setup(e.to_string()))?;
    for step in &steps {
        log::info!("network: {step}");
        match step {
            Step::WriteResolvConf { text } => write_atomic(&resolv_target(), text.as_bytes())
                .map_err(|e| DaemonError::Setup(format!("writing {RESOLV_CONF}: {e}")))?,
            Step::SetHostname { name } => nix::unistd::sethostname(name)
                .map_err(|e| DaemonError::Setup(format!("setting the host name to {name}: {e}")))?,
            _ => netlink::apply_step(handle, step).await?,
        }
    }
    Ok(())
}

/// /etc/resolv.conf, or the file its symlink names: on the appliance /etc is read-only and
/// the link points at the data partition; renaming over the link itself would fail there.
fn resolv_target() -> PathBuf {
    match std::fs::read_link(RESOLV_CONF) {
        Ok(target) if target.is_absolute() => target,
        Ok(target) => Path::new("/etc").join(target),
        Err(_) => PathBuf::from(RESOLV_CONF),
    }
}

/// The HA interface's bond, read fresh; `None` when it is not a bond.
pub async fn bond(handle: &Handle, ifname: &str) -> Result<Option<BondStatus>, DaemonError> {
    let links = netlink::links(handle).await?;
    Ok(network::bond_status(ifname, &links))
}
