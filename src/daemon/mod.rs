//! The tokio shell around the VRRP core (mini-redis style): `run(config, shutdown)` owns
//! every socket, the netlink handle and the clock, feeds inputs to [`Router`] and
//! carries out the actions it returns. Single-threaded: the core is one state machine
//! and nothing here needs parallelism, and one thread keeps advert timing predictable.

mod atomic;
mod boot_id;
mod control;
mod handover;
pub mod maintenance;
pub mod netlink;
mod network;
mod preempt;
mod realtime;
mod reload;
pub use atomic::{write_atomic, write_atomic_mode};
pub use realtime::normal_scheduling;
mod sockets;
mod status;
mod track;
mod trial;
mod worker;

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::director::cluster::{Cluster, ClusterConfig, LocalLoad};
use crate::load::{PortListen, Sampler, SamplerPaths};
use crate::status::{Request, Response};
use crate::vrrp::{Action, Router, RouterConfig, State};
use crate::wire::ipv4;

use handover::Leave;
use netlink::{LinkEvents, LinkInfo, NetlinkError};
use sockets::{GarpSocket, MembershipSocket, VrrpSocket};
use worker::{Done, Worker};

/// Wait before applying the data path again after a failed apply.
const APPLY_RETRY: Duration = Duration::from_secs(5);

/// Gratuitous ARPs per burst (keepalived's default `vrrp_garp_master_repeat` is 5).
const GARP_BURST: usize = 5;
/// Longest a new director waits for its data path before taking the VIP anyway (see
/// `Shell::takeover`); an apply takes tens of milliseconds.
const TAKEOVER_WAIT: Duration = Duration::from_millis(1000);
/// Planned stop: longest wait for the kernel's pins before naming the successor, and for the
/// successor's `Done` (its data path, VIP and ARPs) before leaving the RFC way.
const HANDOVER_SYNC_WAIT: Duration = Duration::from_millis(300);
const HANDOVER_WAIT: Duration = Duration::from_millis(1500);

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
    /// Becoming director with load sharing on: the VIP (and its gratuitous ARPs) waits until
    /// the director data path is in the kernel, at most until this deadline. Clients reach
    /// us only after the ARPs; were the VIP here before the rules, a packet of a connection
    /// pinned to another node would be answered locally with a reset.
    takeover: Option<Instant>,
    /// Load sharing (issue 3), when `ha.port_redirects` is not empty.
    lb: Option<LoadSharing>,
    /// Maintenance (`proxyha drain`), as kept in `[control] state_dir`.
    draining: bool,
    /// The file `proxyha run` read its config from; SIGHUP and `proxyha reload` re-read it.
    config_path: Option<PathBuf>,
    /// For the data-path worker of a load-sharing core started by a reload.
    done_tx: tokio::sync::mpsc::UnboundedSender<Done>,
    /// The HA interface's bond as last read (None: not a bond).
    bond: Option<crate::network::BondStatus>,
    /// A trial boot of a freshly installed version, until it is healthy and marked good.
    trial: Option<(crate::update::boot::Trial, crate::update::health::Health)>,
    /// A planned stop handing the director role over (see `director::cluster::handover`).
    leave: Option<Leave>,
    /// The successor confirmed: leave without a priority-0 advert.
    handed_over: bool,
    /// Leave the select loop after this iteration (a handover ended, or has no successor).
    exit: bool,
    /// `[ha.track]`: the tracker, and the ARP socket hearing the gateway (when tracked).
    track: crate::vrrp::track::Tracker,
    arp: Option<sockets::ArpSocket>,
    /// Since when preemption waits for the director's pins (see `preempt`).
    preempt_hold: Option<Instant>,
    /// The hold ran out without a copy (logged once; preempting allowed until it ends).
    preempt_gave_up: bool,
}

/// The membership core and its I/O: protocol-253 socket, load sampler, data-path worker.
struct LoadSharing {
    cluster: Cluster,
    socket: MembershipSocket,
    sampler: Sampler,
    worker: Worker,
    /// `lo`, where a scanning node holds the VIP (direct mode).
    lo: LinkInfo,
    last_sample: Instant,
    ticks: u64,
    /// Ports with a listener reachable from the network, as last sampled (status lists
    /// those not redirected as direct-only).
    listening_ports: std::collections::BTreeSet<u16>,
    /// The newest data path handed to the worker, and when to hand it again after a failure.
    desired: Option<crate::dataplane::Desired>,
    retry_at: Option<Instant>,
    /// This node's redirected listener ports and whether each listens, as last sampled
    /// (`[ha.track] ports`).
    ports_listening: Vec<(u16, bool)>,
}

/// Runs the supervisor until `shutdown` completes, then leaves the group cleanly:
/// priority-0 advert, VIP removed, control socket removed. `config_path` is the file
/// `config` came from: SIGHUP and `proxyha reload` re-read it (`None`: reload refused).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let ifname = config.ha.interface.clone();
    // [network] (the appliance): addresses, bond, route, resolver, host name first.
    network::apply(&handle, &config).await?;
    // Subscribe before reading the initial state so a change in between is not lost.
    let mut link_events = LinkEvents::subscribe()?;
    let bond_events = netlink::AnyLinkEvents::subscribe()?;
    let bond = network::bond(&handle, &ifname).await?;
    let mut bond_events = match &bond {
        Some(b) => {
            log::info!("{ifname} is a bond: {}", crate::network::bond_summary(b));
            Some(bond_events)
        }
        None => {
            drop(bond_events);
            None
        }
    };
    let link = netlink::link_by_name(&handle, &ifname).await?;
    link_events.watch(link.index);
    let primary = primary_address(&handle, &config, &link).await?;
    let vip = config.ha.virtual_ip;

    // A VIP left behind by a crash must go: we start as backup and only the master holds it.
    if netlink::remove_vip(&handle, &link, vip).await? {
        log::warn!("removed stale VIP {vip} from {ifname} left by a previous run");
    }

    let vrrp = VrrpSocket::open(
        &ifname,
        link.index,
        primary,
        config.ha.unicast_peers.is_empty(),
    )?;
    let garp = GarpSocket::open(link.index)?;
    let (_control, mut requests) = control::ControlServer::start(&config.control.socket).await?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

    // A drained node stays drained across restarts (and reboots).
    let draining = match maintenance::load(&config.control.state_dir) {
        Ok(m) => m.draining,
        Err(e) => {
            log::error!("{e}; starting in service");
            false
        }
    };
    if draining {
        log::info!(
            "maintenance: draining (no new clients; pinned clients finish); restored from {}",
            maintenance::path(&config.control.state_dir).display()
        );
    }

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let lb = if config.ha.port_redirects.is_empty() {
        log::info!("no ha.port_redirects: load sharing off, VRRP only");
        None
    } else {
        Some(LoadSharing::start(&config, primary, &handle, draining, done_tx.clone()).await?)
    };

    let (track, arp) = Shell::track_for(&config, link.index, Instant::now());
    let mut router = Router::new(router_config(&config, primary));
    log_speakers(router.config(), &config);
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
        takeover: None,
        lb,
        draining,
        config_path,
        done_tx,
        bond,
        trial: None,
        leave: None,
        handed_over: false,
        exit: false,
        track,
        arp,
        preempt_hold: None,
        preempt_gave_up: false,
    };
    log::info!(
        "proxyha {} starting on {ifname} ({primary}), VRID {}, priority {}, VIP {vip}, link {}",
        crate::update::VERSION,
        shell.config.ha.virtual_router_id,
        shell.config.ha.priority,
        if shell.link.up { "up" } else { "down" },
    );
    if let Some(lb) = shell.lb.as_mut() {
        lb.sample();
    }
    // The A/B boot state (appliance only): a committed slot's try counter is reset, a
    // rolled-back trial recorded, a trial boot armed for its health-gated commit.
    let layout = crate::update::layout::Layout::system();
    if let Some(t) = crate::update::boot::at_start(
        &layout,
        &shell.config.control.state_dir,
        crate::update::VERSION,
        shell.config.update.health_timeout_s,
    ) {
        let health = crate::update::health::Health::new(
            shell.config.advert_interval(),
            shell.lb.is_some(),
            shell.lb.is_some() && shell.config.appliance.builtin_proxy,
        );
        shell.trial = Some((t, health));
    }
    shell.feed_slaves();
    shell.apply_track(&mut router);
    router.handle_startup(Instant::now(), shell.link_for_core());
    shell.execute(&mut router).await;
    shell.drive_cluster(&router);

    // The threads that exist now (the data-path worker) and later reset themselves to
    // normal scheduling; only this loop runs real-time.
    realtime::apply(shell.config.ha.rt_priority, shell.config.ha.lock_memory);

    tokio::pin!(shutdown);
    let mut abuf = vec![0u8; 1500];
    let mut stopping = false;
    let mut buf = vec![0u8; 65_536];
    let mut mbuf = vec![0u8; 65_536];
    loop {
        let deadline = router.poll_timeout();
        let lb_deadline =
            shell
                .lb
                .as_ref()
                .and_then(|lb| match (lb.cluster.poll_timeout(), lb.retry_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                });
        tokio::select! {
            // Shutdown first: a stop request must not wait behind a packet flood.
            biased;
            () = &mut shutdown, if !stopping => {
                stopping = true;
                if !shell.begin_leave(&router) {
                    break;
                }
            }
            () = sleep_until(shell.leave.map(|l| l.deadline())) => match shell.leave {
                Some(Leave::Syncing { .. }) => shell.ask_successor(&mut router),
                Some(Leave::Waiting { successor, .. }) => {
                    log::warn!(
                        "handover: no confirmation from {successor} within {} ms; leaving the RFC way (priority 0)",
                        HANDOVER_WAIT.as_millis()
                    );
                    break;
                }
                None => break,
            },
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
            () = sleep_until(shell.track.poll_timeout()) => shell.probe_gateway(),
            received = recv_arp(shell.arp.as_ref(), &mut abuf) => match received {
                Ok(n) => shell.heard_arp(&abuf[..n]),
                Err(e) => {
                    log::debug!("track: receiving ARP on {}: {e}", shell.link.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = sleep_until(shell.takeover) => {
                log::warn!(
                    "director data path not ready after {} ms; taking the VIP anyway",
                    TAKEOVER_WAIT.as_millis()
                );
                shell.complete_takeover().await;
            }
            // Membership after VRRP: adverts never wait behind reports.
            received = recv_membership(shell.lb.as_ref(), &mut mbuf) => {
                match received {
                    Ok(n) => {
                        if let Some(lb) = shell.lb.as_mut()
                            && let Ok((header, payload)) = ipv4::parse(&mbuf[..n])
                        {
                            lb.cluster.handle_datagram(Instant::now(), header.src, payload);
                        }
                    }
                    Err(e) => {
                        log::warn!("receiving membership messages on {}: {e}", shell.link.name);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            () = sleep_until(lb_deadline) => {
                if let Some(lb) = shell.lb.as_mut() {
                    let now = Instant::now();
                    if lb.retry_at.is_some_and(|t| t <= now) {
                        lb.retry_at = None;
                        if let Some(d) = lb.desired.clone() {
                            lb.worker.apply(d);
                        }
                    }
                    if lb.cluster.poll_timeout().is_some_and(|t| t <= now) {
                        // A period starts: sample first so the report carries fresh load.
                        let listening = lb.sample();
                        shell.track.set_ports(lb.ports_listening.clone());
                        if let Some((_, h)) = shell.trial.as_mut() {
                            h.proxy_listening(listening);
                        }
                    }
                    lb.cluster.handle_timeout(now);
                }
            }
            Some(done) = done_rx.recv() => match done {
                Done::Applied(Ok(()), preload, director) => {
                    log::debug!("data path applied");
                    if let Some((_, h)) = shell.trial.as_mut() {
                        h.data_path_applied();
                    }
                    if director {
                        shell.complete_takeover().await;
                    }
                    if preload && let Some(lb) = shell.lb.as_mut() {
                        lb.cluster.preload_applied();
                    }
                }
                Done::Applied(Err(e), _, _) => {
                    // Whatever failed (nft missing, a busy lock), try the newest state again.
                    log::error!("{e}; retrying in {}s", APPLY_RETRY.as_secs());
                    if let Some(lb) = shell.lb.as_mut() {
                        lb.retry_at.get_or_insert(Instant::now() + APPLY_RETRY);
                    }
                }
                Done::Staged(id, ok) => {
                    if let Some(lb) = shell.lb.as_mut() {
                        lb.cluster.stage_done(Instant::now(), id, ok);
                    }
                }
                Done::PinsRead(r) => {
                    if let Some(lb) = shell.lb.as_mut() {
                        lb.cluster.handle_pins_read(Instant::now(), r);
                    }
                    if matches!(shell.leave, Some(Leave::Syncing { .. })) {
                        shell.ask_successor(&mut router);
                    }
                }
            },
            event = link_events.next() => match event {
                Some(up) if up != shell.link.up => {
                    shell.link.up = up;
                    log::info!("link {} on {}", if up { "up" } else { "down" }, shell.link.name);
                    router.handle_link(Instant::now(), shell.link_for_core());
                }
                Some(_) => {}
                None => {
                    log::error!("netlink link monitor ended; resubscribing");
                    link_events = LinkEvents::subscribe()?;
                    link_events.watch(shell.link.index);
                }
            },
            event = next_bond_event(bond_events.as_mut()) => match event {
                Some(()) => shell.refresh_bond().await,
                None => {
                    log::error!("netlink link monitor (bond) ended; resubscribing");
                    bond_events = Some(netlink::AnyLinkEvents::subscribe()?);
                }
            },
            Some((request, reply)) = requests.recv() => {
                let response = match request {
                    Request::Status => Response::Status(Box::new(shell.status(&router))),
                    Request::Client { ip } => match &shell.lb {
                        Some(lb) => Response::Client(lb.cluster.client(Instant::now(), ip)),
                        None => Response::Error(
                            "load sharing is off (ha.port_redirects is empty): no client is \
                             redirected"
                                .into(),
                        ),
                    },
                    Request::Drain => shell.set_draining(true),
                    Request::Undrain => shell.set_draining(false),
                    Request::Reload => match shell.reload(&mut router, &mut link_events).await {
                        Ok(text) => Response::Ok(text),
                        Err(e) => Response::Error(e),
                    },
                };
                let _ = reply.send(response);
            }
            Some(()) = hangup.recv() => {
                log::info!("reload: SIGHUP");
                // The outcome is logged either way; nobody waits for an answer.
                let _ = shell.reload(&mut router, &mut link_events).await;
            }
        }
        shell.apply_track(&mut router);
        shell.execute(&mut router).await;
        shell.drive_cluster(&router);
        if shell.handover_signals(&mut router) {
            shell.execute(&mut router).await;
            shell.drive_cluster(&router);
        }
        shell.check_trial(&router, &layout).await;
        if shell.exit {
            break;
        }
    }

    log::info!("stopping on signal");
    // The whole node is going down (the appliance's rcK leaves `stopping` beside the control
    // socket before its SIGTERM): a scanning node's clients move to the others at once. A
    // restart of proxyha alone leaves them where they are (the proxy keeps serving).
    let node_stopping = shell
        .config
        .control
        .socket
        .parent()
        .is_some_and(|d| d.join("stopping").exists());
    if let Some(lb) = shell.lb.as_mut().filter(|_| node_stopping) {
        log::info!("the node is stopping: telling the director to move its clients now");
        lb.cluster.handle_shutdown();
        while let Some(t) = lb.cluster.poll_transmit() {
            if let Err(e) = lb.socket.send(t.dst, &t.payload) {
                log::debug!("sending membership message to {}: {e}", t.dst);
            }
        }
    }
    if shell.handed_over {
        router.handle_handed_over(Instant::now());
    } else {
        router.handle_shutdown(Instant::now());
    }
    shell.execute(&mut router).await;
    // Belt and braces: whatever state we were in, never leave the VIP behind.
    if let Err(e) = netlink::remove_vip(&shell.handle, &shell.link, vip).await {
        log::error!("{e}");
    }
    // After the VIP is gone (no more client traffic is ours): the table, rules, sysctls and
    // the VIP on lo go too.
    if let Some(lb) = shell.lb.take() {
        lb.worker.teardown().await;
    }
    log::info!("stopped");
    Ok(())
}

/// Whether `ifc` answers ARP only for its own addresses (`arp_ignore` ≥ 1, as the scanning
/// data path sets it), so a VIP on lo is not announced from it. Read once per role change.
fn arp_ignores(ifc: &str) -> bool {
    let read = |scope: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{scope}/arp_ignore"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    read("all").max(read(ifc)) >= 1
}

/// The next link change while the HA interface is a bond; never completes otherwise.
async fn next_bond_event(events: Option<&mut netlink::AnyLinkEvents>) -> Option<()> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// Waits for an ARP packet; never completes when the gateway is not tracked.
async fn recv_arp(arp: Option<&sockets::ArpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match arp {
        Some(a) => a.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Waits for a membership datagram; never completes when load sharing is off.
async fn recv_membership(lb: Option<&LoadSharing>, buf: &mut [u8]) -> std::io::Result<usize> {
    match lb {
        Some(lb) => lb.socket.recv(buf).await,
        None => std::future::pending().await,
    }
}

impl LoadSharing {
    /// Opens the membership socket, starts the data-path worker and the membership core.
    async fn start(
        config: &Config,
        primary: Ipv4Addr,
        handle: &rtnetlink::Handle,
        draining: bool,
        done_tx: tokio::sync::mpsc::UnboundedSender<Done>,
    ) -> Result<LoadSharing, DaemonError> {
        let lo = netlink::link_by_name(handle, "lo").await?;
        let socket = MembershipSocket::open(&config.ha.interface)?;
        let ports: Vec<u16> = config.ha.port_redirects.iter().map(|r| r.to).collect();
        let sampler = Sampler::new(
            SamplerPaths::default(),
            ports,
            crate::load::Ewma::DEFAULT_TAU,
        );
        let worker = Worker::start(done_tx)?;
        let now = Instant::now();
        let mut cfg = cluster_config(config, primary);
        let (boot, warning) = boot_id::next(&config.control.state_dir, boot_id::wall_clock_ms());
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        cfg.boot_id = boot;
        if config.ha.auth_key.is_none() {
            log::warn!(
                "membership: unauthenticated: any host on {} can join the pool, report load and \
                 receive client traffic; set ha.auth_key_file on every node (proxyha setup writes one)",
                config.ha.interface
            );
        }
        let mut cluster = Cluster::new(cfg);
        cluster.set_draining(now, draining);
        cluster.handle_startup(now);
        Ok(LoadSharing {
            cluster,
            socket,
            sampler,
            worker,
            lo,
            last_sample: now,
            ticks: 0,
            listening_ports: std::collections::BTreeSet::new(),
            ports_listening: Vec::new(),
            desired: None,
            retry_at: None,
        })
    }

    /// Reads /proc (a few small files; fast enough to do inline) into the core. Returns
    /// whether every redirected port's listener is up on the wildcard address.
    fn sample(&mut self) -> bool {
        let mut all_listening = false;
        let now = Instant::now();
        let dt = now.duration_since(self.last_sample);
        self.last_sample = now;
        let mut load = LocalLoad::default();
        match self.sampler.sample(dt) {
            Ok(s) => {
                all_listening = s.listen.iter().all(|(_, st)| *st == PortListen::Wildcard);
                load.cpu = s.cpu;
                load.cpu_count = s.cpu_count;
                load.conns = s.conns_raw;
                self.ports_listening = s
                    .listen
                    .iter()
                    .map(|(p, st)| (*p, *st == PortListen::Wildcard))
                    .collect();
                for (p, st) in s.listen {
                    load.listening.insert(p, st == PortListen::Wildcard);
                    if let Some(reason) = st.reason() {
                        load.reasons.insert(p, reason);
                    }
                }
                self.listening_ports = s.listening_ports;
            }
            Err(e) => log::warn!("{e}"),
        }
        self.ticks += 1;
        // Every period, on the director: the kernel reads replication needs (new pins, the
        // few whose expiry is near), so a standby loses at most about a second of them.
        let reads = self.cluster.pin_reads(now);
        if !reads.is_empty() {
            self.worker.read_pins(reads);
        }
        // On a standby candidate: what changed among the held pins, into its own map.
        if let Some((id, stage)) = self.cluster.pins_to_stage(now) {
            self.worker.stage_pins(id, stage);
        }
        self.cluster.handle_local_load(load);
        all_listening
    }
}

fn cluster_config(config: &Config, primary: Ipv4Addr) -> ClusterConfig {
    use sha2::{Digest, Sha256};
    let ha = &config.ha;
    let mut c = ClusterConfig::new(
        &config.node.name,
        primary,
        ha.virtual_ip,
        ha.port_redirects.clone(),
    );
    c.lb_id = ha.lb_id;
    c.interface = ha.interface.clone();
    c.mode = ha.mode;
    c.sticky_idle_s = ha.sticky_idle_s;
    c.capacity = config.node.capacity;
    c.priority = ha.priority;
    c.auth_key = ha.auth_key.as_ref().map(|k| k.as_bytes().to_vec());
    c.drain = ha.drain;
    c.announce_to = ha.unicast_peers.clone();
    c.allowed_sources = ha.vrrp_allowed_sources();
    c.group_config = group_config(config);
    c.config_digest = Sha256::digest(c.group_config.as_bytes()).into();
    c
}

/// Both sides of every redirect: never listed as direct-only.
fn redirected_ports(config: &Config) -> Vec<u16> {
    config
        .ha
        .port_redirects
        .iter()
        .flat_map(|r| [r.port, r.to])
        .collect()
}

/// The settings every node of a group must share (issue 4 §6), in words: the digest in the
/// reports is over this text, and a mismatch shows both texts.
pub fn group_config(config: &Config) -> String {
    let ha = &config.ha;
    let ports: Vec<String> = ha
        .port_redirects
        .iter()
        .map(|r| {
            if r.port == r.to {
                r.port.to_string()
            } else {
                format!("{}->{}", r.port, r.to)
            }
        })
        .collect();
    format!(
        "vip {} vrid {} lb_id {} ports [{}] mode {}",
        ha.virtual_ip,
        ha.virtual_router_id,
        ha.lb_id,
        ports.join(", "),
        ha.mode
    )
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

/// Who may speak VRRP, at start and on a reload that changed it; a warning when anyone may.
fn log_speakers(cfg: &RouterConfig, config: &Config) {
    let what = crate::vrrp::speakers(cfg);
    if cfg.allowed_sources.is_empty() {
        log::warn!(
            "VRRP_Instance(VI_{}) {what}: any host on {} can take the VIP {} with a higher priority; \
             set ha.unicast_peers or ha.vrrp_sources to the group's node addresses",
            cfg.vrid,
            config.ha.interface,
            config.ha.virtual_ip
        );
    } else {
        log::info!("VRRP_Instance(VI_{}) {what}", cfg.vrid);
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
        unicast_peers: config.ha.unicast_peers.clone(),
        allowed_sources: config.ha.vrrp_allowed_sources(),
    }
}

impl Shell {
    /// Carries out every pending action of the core, in order.
    async fn execute(&mut self, router: &mut Router) {
        while let Some(action) = router.poll_action() {
            match action {
                Action::SendAdvert { to, payload } => {
                    if let Err(e) = self.vrrp.send(to, &payload) {
                        let now = Instant::now();
                        let quiet = self
                            .last_send_error_log
                            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10));
                        if !quiet {
                            log::warn!("sending VRRP advert to {to} on {}: {e}", self.link.name);
                            self.last_send_error_log = Some(now);
                        }
                    }
                }
                Action::AddVips if self.lb.is_some() => {
                    if self.takeover.is_none() {
                        log::debug!("director: loading the data path before taking the VIP");
                        self.takeover = Some(Instant::now() + TAKEOVER_WAIT);
                    }
                }
                Action::AddVips => self.take_vip().await,
                Action::RemoveVips => {
                    let stays = matches!(router.state(), State::Backup | State::Scanning);
                    self.release_vip(stays).await;
                }
                // Sent with the VIP once the data path is in (see `takeover`).
                Action::SendGarp if self.takeover.is_some() => {}
                Action::SendGarp => self.send_garp(),
            }
        }
    }

    /// Takes the VIP off the HA interface. A director that stays in the pool as a scanning
    /// node (`stays`; direct mode) puts it on lo first: its own clients keep arriving, now
    /// through the new director, and find the address at once, not only once the data-path
    /// worker applies the scanning role (tens of ms later).
    async fn release_vip(&mut self, stays: bool) {
        self.takeover = None;
        let vip = self.config.ha.virtual_ip;
        if let Some(lb) = self.lb.as_ref()
            && stays
            && self.config.ha.mode == crate::config::Mode::Direct
            && arp_ignores(&self.link.name)
            && let Err(e) = netlink::add_vip(&self.handle, &lb.lo, vip).await
        {
            log::error!("{e}");
        }
        log::info!("VRRP_Instance(VI_{}) removing VIPs: {vip}", self.vrid());
        match netlink::remove_vip(&self.handle, &self.link, vip).await {
            Ok(_) => self.vip_owned = false,
            Err(e) => log::error!("{e}"),
        }
    }

    /// Puts the VIP on the HA interface. A scanning node holds it on lo; it leaves lo
    /// before it appears on the interface (the data-path worker, told of the role change,
    /// finds it gone and leaves it so).
    async fn take_vip(&mut self) {
        let vip = self.config.ha.virtual_ip;
        if let Some(lb) = self.lb.as_ref()
            && let Err(e) = netlink::remove_vip(&self.handle, &lb.lo, vip).await
        {
            log::error!("{e}");
        }
        log::info!("VRRP_Instance(VI_{}) setting VIPs: {vip}", self.vrid());
        match netlink::add_vip(&self.handle, &self.link, vip).await {
            Ok(()) => self.vip_owned = true,
            Err(e) => log::error!("{e}"),
        }
    }

    /// The director data path is in (or the wait is over): VIP, then gratuitous ARPs; a
    /// successor in a planned handover then tells the old director it may leave.
    async fn complete_takeover(&mut self) {
        if self.takeover.take().is_some() {
            self.take_vip().await;
            self.send_garp();
            if let Some(lb) = self.lb.as_mut() {
                lb.cluster.handover_complete();
            }
        }
    }

    fn send_garp(&self) {
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

    /// Tells the membership core the VRRP role, then carries out what it asks: messages
    /// out, data path to the worker, events to the log.
    fn drive_cluster(&mut self, router: &Router) {
        let Some(lb) = self.lb.as_mut() else {
            return;
        };
        lb.cluster.set_preempted(router.preempted());
        lb.cluster
            .set_role(Instant::now(), router.state() == State::Master);
        while let Some(t) = lb.cluster.poll_transmit() {
            if let Err(e) = lb.socket.send(t.dst, &t.payload) {
                log::debug!("sending membership message to {}: {e}", t.dst);
            }
        }
        if let Some(d) = lb.cluster.poll_desired() {
            lb.desired = Some(d.clone());
            lb.worker.apply(d);
        }
        while let Some(e) = lb.cluster.poll_event() {
            log::info!("{e}");
        }
    }

    /// Re-reads the bond after a link change and logs what changed (slave links, the active
    /// slave).
    async fn refresh_bond(&mut self) {
        match network::bond(&self.handle, &self.link.name).await {
            Ok(Some(new)) => {
                if let Some(old) = &self.bond {
                    for line in crate::network::bond_changes(old, &new) {
                        log::info!("{line}");
                    }
                }
                self.bond = Some(new);
                self.feed_slaves();
            }
            Ok(None) => {}
            Err(e) => log::warn!("reading bond {}: {e}", self.link.name),
        }
    }

    fn vrid(&self) -> u8 {
        self.config.ha.virtual_router_id
    }

    /// `proxyha drain` / `proxyha undrain`: the state is saved first, so what the node does
    /// is what survives a restart; a failed save changes nothing.
    fn set_draining(&mut self, draining: bool) -> Response {
        let name = &self.config.node.name;
        if draining == self.draining {
            return Response::Ok(if draining {
                format!("{name} is already draining; proxyha undrain ends it")
            } else {
                format!("{name} is in service (not draining)")
            });
        }
        let dir = &self.config.control.state_dir;
        if let Err(e) = maintenance::save(dir, maintenance::Maintenance { draining }) {
            log::error!("maintenance: {e}");
            return Response::Error(e);
        }
        self.draining = draining;
        if let Some(lb) = self.lb.as_mut() {
            lb.cluster.set_draining(Instant::now(), draining);
        }
        if draining {
            log::info!("maintenance: draining (no new clients; pinned clients finish)");
            let note = if self.lb.is_none() {
                " (load sharing is off: no ha.port_redirects; it applies once they are set)"
            } else {
                ""
            };
            Response::Ok(format!(
                "{name} is draining: no new clients come here, pinned clients finish{note}; \
                 kept across restarts; proxyha undrain ends it"
            ))
        } else {
            log::info!("maintenance: undrained");
            Response::Ok(format!(
                "{name} is back in service: new clients come here again"
            ))
        }
    }
}
