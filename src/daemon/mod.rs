//! The tokio shell around the VRRP core (mini-redis style): `run(config, shutdown)` owns
//! every socket, the netlink handle and the clock, feeds inputs to [`Router`] and
//! carries out the actions it returns. Single-threaded: the core is one state machine
//! and nothing here needs parallelism, and one thread keeps advert timing predictable.

mod control;
pub mod netlink;
mod sockets;

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::status::{Request, Response, Status};
use crate::vrrp::{Action, Router, RouterConfig, State};

use netlink::{LinkEvents, LinkInfo, NetlinkError};
use sockets::{GarpSocket, VrrpSocket};

/// Gratuitous ARPs per burst (keepalived's default `vrrp_garp_master_repeat` is 5).
const GARP_BURST: usize = 5;

/// Why the supervisor could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// Everything the shell tracks beside the core, for status and for idempotence.
struct Shell {
    config: Config,
    link: LinkInfo,
    primary: Ipv4Addr,
    handle: rtnetlink::Handle,
    vrrp: VrrpSocket,
    garp: GarpSocket,
    /// Whether we believe the VIP is on the interface (set by successful add/remove).
    vip_owned: bool,
    started: Instant,
    /// Last time a send error was logged, so a dead link does not flood the log.
    last_send_error_log: Option<Instant>,
}

/// Runs the supervisor until `shutdown` completes, then leaves the group cleanly:
/// priority-0 advert, VIP removed, control socket removed.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let ifname = config.ha.interface.clone();
    // Subscribe before reading the initial state so a change in between is not lost.
    let mut link_events = LinkEvents::subscribe()?;
    let link = netlink::link_by_name(&handle, &ifname).await?;
    link_events.watch(link.index);
    let primary = primary_address(&handle, &config, &link).await?;
    let vip = config.ha.virtual_ip;

    // A VIP left behind by a crash must go: we start as backup and only the master holds it.
    if netlink::remove_vip(&handle, &link, vip).await? {
        log::warn!("removed stale VIP {vip} from {ifname} left by a previous run");
    }

    let vrrp = VrrpSocket::open(&ifname, link.index, primary)?;
    let garp = GarpSocket::open(link.index)?;
    let (_control, mut requests) = control::ControlServer::start(&config.control.socket).await?;

    let mut router = Router::new(router_config(&config, primary));
    let mut shell = Shell {
        config,
        link,
        primary,
        handle,
        vrrp,
        garp,
        vip_owned: false,
        started: Instant::now(),
        last_send_error_log: None,
    };
    log::info!(
        "proxyha {} starting on {ifname} ({primary}), VRID {}, priority {}, VIP {vip}, link {}",
        env!("CARGO_PKG_VERSION"),
        shell.config.ha.virtual_router_id,
        shell.config.ha.priority,
        if shell.link.up { "up" } else { "down" },
    );
    router.handle_startup(Instant::now(), shell.link.up);
    shell.execute(&mut router).await;

    tokio::pin!(shutdown);
    let mut buf = vec![0u8; 65_536];
    loop {
        let deadline = router.poll_timeout();
        tokio::select! {
            // Shutdown first: a stop request must not wait behind a packet flood.
            biased;
            () = &mut shutdown => break,
            received = shell.vrrp.recv(&mut buf) => {
                match received {
                    Ok(n) => {
                        router.handle_datagram(Instant::now(), &buf[..n]);
                        // Drain what queued meanwhile before acting, bounded so timers still run.
                        for _ in 0..64 {
                            match shell.vrrp.try_recv(&mut buf) {
                                Ok(Some(n)) => router.handle_datagram(Instant::now(), &buf[..n]),
                                _ => break,
                            }
                        }
                    }
                    Err(e) => {
                        log::warn!("receiving VRRP on {}: {e}", shell.link.name);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            () = sleep_until(deadline) => router.handle_timeout(Instant::now()),
            event = link_events.next() => match event {
                Some(up) if up != shell.link.up => {
                    shell.link.up = up;
                    log::info!("link {} on {}", if up { "up" } else { "down" }, shell.link.name);
                    router.handle_link(Instant::now(), up);
                }
                Some(_) => {}
                None => {
                    log::error!("netlink link monitor ended; resubscribing");
                    link_events = LinkEvents::subscribe()?;
                    link_events.watch(shell.link.index);
                }
            },
            Some((request, reply)) = requests.recv() => {
                let response = match request {
                    Request::Status => Response::Status(shell.status(&router)),
                };
                let _ = reply.send(response);
            }
        }
        shell.execute(&mut router).await;
    }

    log::info!("stopping on signal");
    router.handle_shutdown(Instant::now());
    shell.execute(&mut router).await;
    // Belt and braces: whatever state we were in, never leave the VIP behind.
    if let Err(e) = netlink::remove_vip(&shell.handle, &shell.link, vip).await {
        log::error!("{e}");
    }
    log::info!("stopped");
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The address we advertise from: `node.management_ip`, which must be on the interface,
/// or else the interface's first IPv4 address that is not the VIP.
async fn primary_address(
    handle: &rtnetlink::Handle,
    config: &Config,
    link: &LinkInfo,
) -> Result<Ipv4Addr, DaemonError> {
    let addrs = netlink::ipv4_addresses(handle, link.index).await?;
    let vip = config.ha.virtual_ip;
    match config.node.management_ip {
        Some(ip) if addrs.iter().any(|(a, _)| *a == ip) => Ok(ip),
        Some(ip) => Err(DaemonError::Setup(format!(
            "node.management_ip {ip} is not configured on {}; add it (ip addr add {ip}/24 dev {}) or fix the key",
            link.name, link.name
        ))),
        None => addrs
            .iter()
            .map(|(a, _)| *a)
            .find(|a| *a != vip)
            .ok_or_else(|| {
                DaemonError::Setup(format!(
                    "interface {} has no IPv4 address; configure one or set node.management_ip",
                    link.name
                ))
            }),
    }
}

fn router_config(config: &Config, primary: Ipv4Addr) -> RouterConfig {
    RouterConfig {
        version: config.ha.vrrp_version,
        vrid: config.ha.virtual_router_id,
        priority: config.ha.priority,
        advert_interval: config.advert_interval(),
        preempt: config.ha.preempt,
        vips: vec![config.ha.virtual_ip],
        primary_addr: primary,
        checksum: config.ha.vrrp_checksum,
    }
}

impl Shell {
    /// Carries out every pending action of the core, in order.
    async fn execute(&mut self, router: &mut Router) {
        while let Some(action) = router.poll_action() {
            match action {
                Action::SendAdvert(payload) => {
                    if let Err(e) = self.vrrp.send(&payload) {
                        let now = Instant::now();
                        let quiet = self
                            .last_send_error_log
                            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
                        if !quiet {
                            log::warn!("sending VRRP advert on {}: {e}", self.link.name);
                            self.last_send_error_log = Some(now);
                        }
                    }
                }
                Action::AddVips => {
                    let vip = self.config.ha.virtual_ip;
                    log::info!("VRRP_Instance(VI_{}) setting VIPs: {vip}", self.vrid());
                    match netlink::add_vip(&self.handle, &self.link, vip).await {
                        Ok(()) => self.vip_owned = true,
                        Err(e) => log::error!("{e}"),
                    }
                }
                Action::RemoveVips => {
                    let vip = self.config.ha.virtual_ip;
                    log::info!("VRRP_Instance(VI_{}) removing VIPs: {vip}", self.vrid());
                    match netlink::remove_vip(&self.handle, &self.link, vip).await {
                        Ok(_) => self.vip_owned = false,
                        Err(e) => log::error!("{e}"),
                    }
                }
                Action::SendGarp => {
                    let vip = self.config.ha.virtual_ip;
                    log::info!(
                        "VRRP_Instance(VI_{}) Sending gratuitous ARPs on {} for {vip}",
                        self.vrid(),
                        self.link.name
                    );
                    if let Err(e) = self.garp.announce(self.link.mac, vip, GARP_BURST) {
                        log::warn!("sending gratuitous ARP on {}: {e}", self.link.name);
                    }
                }
            }
        }
    }

    fn vrid(&self) -> u8 {
        self.config.ha.virtual_router_id
    }

    fn status(&self, router: &Router) -> Status {
        let now = Instant::now();
        let ha = &self.config.ha;
        Status {
            name: self.config.node.name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            interface: self.link.name.clone(),
            management_ip: Some(self.primary),
            state: router.state().as_str().to_string(),
            priority: ha.priority,
            vrid: ha.virtual_router_id,
            lb_id: ha.lb_id,
            vip: ha.virtual_ip,
            vip_owner: self.vip_owned && router.state() == State::Master,
            master: router.master(),
            master_priority: router.master_priority(),
            advert_interval_ms: self.config.advert_interval().as_millis() as u64,
            vrrp_version: ha.vrrp_version.number(),
            preempt: ha.preempt,
            link_up: self.link.up,
            state_since_s: router
                .state_since()
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            counters: router
                .counters()
                .iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}
