//! The data-path worker: one OS thread owning the [`NftDataplane`], so the blocking `nft`
//! and `ip` calls (tens to hundreds of ms) never hold up the select loop, and with it VRRP
//! adverts. Only the newest desired state matters: queued applies are coalesced.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dataplane::{
    Dataplane, Desired, NftDataplane, NftOptions, PinReads, PinsRead, Role, void_pins,
};

enum Cmd {
    Apply(Desired),
    /// The director's reads for replication (netlink, cost by change).
    ReadPins(PinReads),
    Teardown,
}

/// What the worker tells the loop.
#[derive(Debug)]
pub enum Done {
    /// The result, whether that state carried replicated pins to load, and whether it was
    /// the director's.
    Applied(Result<(), String>, bool, bool),
    PinsRead(PinsRead),
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
                            (Cmd::Apply(_), Cmd::ReadPins(r)) => {
                                let _ = done.send(Done::PinsRead(read_pins(&mut dp, &r, applied.as_ref())));
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
                        Cmd::ReadPins(r) => {
                            let _ = done.send(Done::PinsRead(read_pins(&mut dp, &r, applied.as_ref())));
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

    pub fn read_pins(&self, reads: PinReads) {
        let _ = self.tx.send(Cmd::ReadPins(reads));
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

/// The reads, or what part of them could be done: a failed read is logged and the
/// director's view simply stays as it was until the next period. A whole read also deletes
/// the void pins it finds (their node no longer serves their port: the kernel voids them per
/// packet, but its `update` keeps such an element, so until deleted those clients would keep
/// following the bucket table instead of getting a pin of their own).
fn read_pins(dp: &mut impl Dataplane, reads: &PinReads, applied: Option<&Desired>) -> PinsRead {
    let mut r = match dp.read_pins(reads) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("{e}");
            return PinsRead::default();
        }
    };
    if let (Some(all), Some(d)) = (r.full.as_mut(), applied) {
        let void = void_pins(d, all);
        if !void.is_empty() {
            match dp.delete_pins(&void) {
                Ok(()) => {
                    all.retain(|e| !void.contains(e));
                    // Their `fresh` entries went with them (read before the delete).
                    r.fresh.retain(|f| {
                        !void
                            .iter()
                            .any(|v| (v.client, v.port, v.mark) == (f.client, f.port, f.mark))
                    });
                    r.deleted = void;
                }
                Err(e) => log::warn!("{e}"),
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Call, RecordingDataplane, StickyEntry, mark_of};
    use std::net::Ipv4Addr;

    #[test]
    fn reads_find_look_up_and_a_whole_read_deletes_the_void_pins() {
        use crate::dataplane::{DirectorState, Mode, PortPool, PortRedirect};
        let (d, n2, n3) = (
            Ipv4Addr::new(10, 9, 0, 1),
            Ipv4Addr::new(10, 9, 0, 2),
            Ipv4Addr::new(10, 9, 0, 3),
        );
        let desired = Desired {
            vip: Ipv4Addr::new(10, 9, 0, 100),
            interface: "eth0".into(),
            redirects: vec![PortRedirect {
                port: 9090,
                to: 9090,
            }],
            mode: Mode::Direct,
            role: Role::Director(DirectorState {
                self_addr: d,
                nodes: vec![n3],
                pools: vec![PortPool {
                    ports: vec![9090],
                    serving: vec![d, n3],
                    buckets: vec![None, Some(n3)],
                }],
                hash_seed: 1,
                sticky_idle_s: 300,
                sticky_preload: vec![],
            }),
        };
        let pin = |i: u8, node: Ipv4Addr| StickyEntry {
            client: Ipv4Addr::new(10, 9, 1, i),
            port: 9090,
            mark: mark_of(node),
            expires_ms: 1000,
        };
        let mut dp = RecordingDataplane {
            sticky: vec![pin(1, n2), pin(2, n3)],
            fresh: vec![pin(2, n3)],
            ..Default::default()
        };
        let reads = PinReads {
            fresh: true,
            lookup: vec![
                (pin(2, n3).client, 9090),
                (Ipv4Addr::new(10, 9, 1, 9), 9090),
            ],
            full: false,
        };
        let r = read_pins(&mut dp, &reads, Some(&desired));
        assert_eq!(r.fresh, vec![pin(2, n3)]);
        assert_eq!(r.found, vec![pin(2, n3)]);
        assert_eq!(r.missing, vec![(Ipv4Addr::new(10, 9, 1, 9), 9090)]);
        assert!(r.deleted.is_empty(), "no whole read, nothing deleted");
        // n2 left the pool: a whole read deletes its pin
        let full = PinReads {
            full: true,
            ..PinReads::default()
        };
        let r = read_pins(&mut dp, &full, Some(&desired));
        assert_eq!(r.deleted, vec![pin(1, n2)]);
        assert_eq!(r.full, Some(vec![pin(2, n3)]));
        assert_eq!(dp.sticky, vec![pin(2, n3)]);
        assert_eq!(dp.calls.last(), Some(&Call::DeletePins(vec![pin(1, n2)])));
    }
}
