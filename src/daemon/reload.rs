//! Live reload (SIGHUP, `proxyha reload`): re-read the config file, refuse an invalid one
//! (the running configuration stays), apply a valid one in place, or restart the VRRP
//! instance when its identity changed. What counts as which is decided by
//! [`crate::reload::plan`]; this is the shell that carries it out.

use std::time::Instant;

use super::netlink::{self, LinkEvents};
use super::sockets::{GarpSocket, VrrpSocket};
use super::{LoadSharing, Shell, cluster_config, primary_address};
use crate::config::Config;
use crate::reload::{Plan, effective, plan};
use crate::vrrp::Router;

impl Shell {
    /// Re-reads `config_path` and applies it; the confirmation or the refusal (also logged).
    pub(super) async fn reload(
        &mut self,
        router: &mut Router,
        link_events: &mut LinkEvents,
    ) -> Result<String, String> {
        let started = Instant::now();
        let Some(path) = self.config_path.clone() else {
            let e =
                "reload refused: this supervisor was not started from a config file".to_string();
            log::error!("{e}");
            return Err(e);
        };
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, the running configuration is kept: {e}");
                return Err(format!(
                    "reload refused, the running configuration is kept:\n{e}"
                ));
            }
        };
        let plan = plan(&self.config, &new);
        if plan.is_empty() {
            log::info!("reload: configuration unchanged");
            return Ok("reload: configuration unchanged".into());
        }
        for n in &plan.next_start {
            log::warn!("reload: {n} takes effect at the next start of proxyha run");
        }
        let new = effective(&self.config, &new);
        if plan.needs_restart() {
            self.restart(router, link_events, new, &plan).await?;
        } else {
            self.apply_in_place(router, new).await;
        }
        let text = format!("reload: applied (changed: {})", plan.all().join(", "));
        log::info!("{text}");
        log::debug!("reload took {} µs", started.elapsed().as_micros());
        Ok(text)
    }

    /// Same instance: the cores take the new values, the VIP stays where it is.
    async fn apply_in_place(&mut self, router: &mut Router, new: Config) {
        let now = Instant::now();
        crate::logging::set_level(new.log.level);
        self.track_reconfigure(&new);
        let _ = self.track.verdict(now);
        let cfg = self.router_cfg(&new, router.outranks_master(now));
        if !router.reconfigure(now, cfg) {
            // The plan said same instance; the core disagrees only if the two drifted apart.
            log::error!("reload: the VRRP core refused the new values; keeping the old ones");
        }
        let speakers_changed = new.ha.unicast_peers != self.config.ha.unicast_peers
            || new.ha.vrrp_sources != self.config.ha.vrrp_sources;
        let lb_wanted = !new.ha.port_redirects.is_empty();
        match (self.lb.take(), lb_wanted) {
            (Some(lb), false) => {
                log::info!("reload: ha.port_redirects is empty now: load sharing off, VRRP only");
                lb.worker.teardown().await;
            }
            (Some(mut lb), true) => {
                if lb
                    .cluster
                    .reconfigure(now, cluster_config(&new, self.primary))
                {
                    lb.sampler
                        .set_ports(new.ha.port_redirects.iter().map(|r| r.to).collect());
                    lb.sample();
                }
                self.lb = Some(lb);
            }
            (None, true) => {
                log::info!("reload: ha.port_redirects set: load sharing on");
                self.config = new.clone();
                self.start_load_sharing().await;
            }
            (None, false) => {}
        }
        self.config = new;
        if speakers_changed {
            self.set_vrrp_mode();
            super::log_speakers(router.config(), &self.config);
        }
    }

    /// Joins 224.0.0.18 in multicast mode, leaves it with unicast peers.
    fn set_vrrp_mode(&mut self) {
        let multicast = self.config.ha.unicast_peers.is_empty();
        if let Err(e) = self.vrrp.set_multicast(multicast) {
            log::error!(
                "reload: {} 224.0.0.18 on {}: {e}",
                if multicast { "joining" } else { "leaving" },
                self.link.name
            );
        }
    }

    /// Another instance (interface, address, VRID, VIP, version or lb_id): leave cleanly,
    /// then start again. Everything that can fail (the new interface and its address, the
    /// sockets) is prepared first, so a refusal leaves the running instance untouched.
    async fn restart(
        &mut self,
        router: &mut Router,
        link_events: &mut LinkEvents,
        new: Config,
        plan: &Plan,
    ) -> Result<(), String> {
        let refuse = |e: String| {
            let e = format!("reload refused, the running configuration is kept: {e}");
            log::error!("{e}");
            e
        };
        let moved = new.ha.interface != self.config.ha.interface
            || new.node.management_ip != self.config.node.management_ip;
        let fresh = if moved {
            let link = netlink::link_by_name(&self.handle, &new.ha.interface)
                .await
                .map_err(|e| refuse(e.to_string()))?;
            let primary = primary_address(&self.handle, &new, &link)
                .await
                .map_err(|e| refuse(e.to_string()))?;
            let vrrp = VrrpSocket::open(
                &link.name,
                link.index,
                primary,
                new.ha.unicast_peers.is_empty(),
            )
            .map_err(|e| refuse(e.to_string()))?;
            let garp = GarpSocket::open(link.index).map_err(|e| refuse(e.to_string()))?;
            Some((link, primary, vrrp, garp))
        } else {
            None
        };

        log::info!(
            "reload: restarting the VRRP instance ({}): priority-0 advert, VIP removed, start again",
            plan.restart.join(", ")
        );
        let now = Instant::now();
        router.handle_shutdown(now);
        self.execute(router).await;
        let old_vip = self.config.ha.virtual_ip;
        if let Err(e) = netlink::remove_vip(&self.handle, &self.link, old_vip).await {
            log::error!("{e}");
        }
        self.vip_owned = false;
        self.takeover = None;
        if let Some(lb) = self.lb.take() {
            lb.worker.teardown().await;
        }

        if let Some((link, primary, vrrp, garp)) = fresh {
            link_events.watch(link.index);
            self.link = link;
            self.primary = primary;
            self.vrrp = vrrp;
            self.garp = garp;
        }
        crate::logging::set_level(new.log.level);
        self.config = new;
        self.set_vrrp_mode();
        let vip = self.config.ha.virtual_ip;
        match netlink::remove_vip(&self.handle, &self.link, vip).await {
            Ok(true) => log::warn!("removed stale VIP {vip} from {}", self.link.name),
            Ok(false) => {}
            Err(e) => log::error!("{e}"),
        }
        let config = self.config.clone();
        self.track_reconfigure(&config);
        let _ = self.track.verdict(Instant::now());
        *router = Router::new(self.router_cfg(&config, false));
        if !self.config.ha.port_redirects.is_empty() {
            self.start_load_sharing().await;
        }
        router.handle_startup(Instant::now(), self.link_for_core());
        Ok(())
    }

    /// Starts the membership core and data-path worker for the current config; a failure
    /// leaves VRRP running alone and is logged.
    async fn start_load_sharing(&mut self) {
        match LoadSharing::start(
            &self.config,
            self.primary,
            &self.handle,
            self.draining,
            self.done_tx.clone(),
        )
        .await
        {
            Ok(mut lb) => {
                lb.sample();
                self.lb = Some(lb);
            }
            Err(e) => log::error!("reload: load sharing not started, VRRP only: {e}"),
        }
    }
}
