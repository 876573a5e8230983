//! The data-path worker: one OS thread owning the [`NftDataplane`], so the blocking `nft`
//! and `ip` calls (tens to hundreds of ms) never hold up the select loop, and with it VRRP
//! adverts. Only the newest desired state matters: queued applies are coalesced.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dataplane::{
    Dataplane, Desired, NftDataplane, NftOptions, Role, StickyEntry, void_pins,
};

enum Cmd {
    Apply(Desired),
    /// Read the live sticky pins (status counts and replication to standby directors).
    Pinned,
    Teardown,
}

/// What the worker tells the loop.
#[derive(Debug)]
pub enum Done {
    /// The result, whether that state carried replicated pins to load, and whether it was
    /// the director's.
    Applied(Result<(), String>, bool, bool),
    Pinned(Vec<StickyEntry>),
}

pub struct Worker {
    tx: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(done: tokio::sync::mpsc::UnboundedSender<Done>) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || {
                let mut dp = NftDataplane::new(NftOptions::default());
                // The last state applied: which pins are void.
                let mut applied: Option<Desired> = None;
                while let Ok(mut cmd) = rx.recv() {
                    // Coalesce: of several queued applies only the last one counts; a
                    // teardown ends everything.
                    while let Ok(next) = rx.try_recv() {
                        match (&cmd, next) {
                            (Cmd::Teardown, _) => {}
                            (_, next @ Cmd::Teardown) => cmd = next,
                            (Cmd::Apply(_), Cmd::Pinned) => {
                                let _ = done.send(Done::Pinned(pinned(&mut dp, applied.as_ref())));
                            }
                            (_, next) => cmd = next,
                        }
                    }
                    match cmd {
                        Cmd::Apply(d) => {
                            let preload = matches!(&d.role, Role::Director(s) if !s.sticky_preload.is_empty());
                            let director = matches!(&d.role, Role::Director(_));
                            let r = dp.apply(&d).map_err(|e| e.to_string());
                            applied = r.is_ok().then_some(d);
                            let _ = done.send(Done::Applied(r, preload, director));
                        }
                        Cmd::Pinned => {
                            let _ = done.send(Done::Pinned(pinned(&mut dp, applied.as_ref())));
                        }
                        Cmd::Teardown => {
                            if let Err(e) = dp.teardown() {
                                log::error!("{e}");
                            }
                            return;
                        }
                    }
                }
            })?;
        Ok(Worker {
            tx,
            thread: Some(thread),
        })
    }

    pub fn apply(&self, d: Desired) {
        let _ = self.tx.send(Cmd::Apply(d));
    }

    pub fn pinned(&self) {
        let _ = self.tx.send(Cmd::Pinned);
    }

    /// Removes everything of ours from the kernel and waits for it (on a blocking thread,
    /// so the runtime stays free).
    pub async fn teardown(mut self) {
        let _ = self.tx.send(Cmd::Teardown);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The live pins, after deleting the void ones (pins to a node that no longer serves
/// their port), so those clients get a pin of their own with their next packet.
fn pinned(dp: &mut impl Dataplane, applied: Option<&Desired>) -> Vec<StickyEntry> {
    let mut pins = dp.sticky_dump().unwrap_or_default();
    if let Some(d) = applied {
        let void = void_pins(d, &pins);
        if !void.is_empty() {
            log::debug!("deleting {} void pins", void.len());
            if let Err(e) = dp.sticky_prune(&void) {
                log::warn!("{e}");
            }
            pins.retain(|e| !void.contains(e));
        }
    }
    pins
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{
        Call, DirectorState, Mode, PortPool, PortRedirect, RecordingDataplane, mark_of,
    };
    use std::net::Ipv4Addr;

    #[test]
    fn pinned_deletes_void_pins_and_reports_the_rest() {
        let (d, n2, n3) = (
            Ipv4Addr::new(10, 9, 0, 1),
            Ipv4Addr::new(10, 9, 0, 2),
            Ipv4Addr::new(10, 9, 0, 3),
        );
        let desired = Desired {
            vip: Ipv4Addr::new(10, 9, 0, 100),
            interface: "eth0".into(),
            redirects: vec![PortRedirect { port: 21, to: 21 }],
            mode: Mode::Direct,
            role: Role::Director(DirectorState {
                self_addr: d,
                nodes: vec![n2, n3],
                // n2's listener for 21 failed.
                pools: vec![PortPool {
                    ports: vec![21],
                    serving: vec![d, n3],
                    buckets: vec![None, Some(n3)],
                }],
                hash_seed: 1,
                sticky_idle_s: 300,
                sticky_preload: vec![],
            }),
        };
        let pin = |node| StickyEntry {
            client: Ipv4Addr::new(10, 9, 1, 1),
            port: 21,
            mark: mark_of(node),
            expires_ms: 5000,
        };
        let mut dp = RecordingDataplane {
            sticky: vec![pin(n2), pin(n3)],
            ..Default::default()
        };
        assert_eq!(pinned(&mut dp, Some(&desired)), vec![pin(n3)]);
        assert_eq!(dp.calls.last(), Some(&Call::StickyPrune(vec![pin(n2)])));
        assert_eq!(dp.sticky, vec![pin(n3)]);
        // Nothing applied yet: nothing is judged void.
        let mut dp = RecordingDataplane {
            sticky: vec![pin(n2)],
            ..Default::default()
        };
        assert_eq!(pinned(&mut dp, None), vec![pin(n2)]);
    }
}
