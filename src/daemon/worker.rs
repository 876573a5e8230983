//! The data-path worker: one OS thread owning the [`NftDataplane`], so the blocking `nft`
//! runs and netlink batches (tens to hundreds of ms) never hold up the select loop, and with
//! it VRRP adverts. Only the newest desired state matters: queued applies are coalesced.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dataplane::{
    Dataplane, Desired, NftDataplane, NftOptions, PinReads, PinStage, PinsRead, Role, void_pins,
};

enum Cmd {
    Apply(Desired),
    /// The director's reads for replication (netlink, cost by change).
    ReadPins(PinReads),
    /// A standby's held-pin changes for its own `sticky` map, with an id to answer.
    StagePins(u64, PinStage),
    Teardown,
}

/// What the worker tells the loop.
#[derive(Debug)]
pub enum Done {
    /// The result, whether that state carried replicated pins to load, and whether it was
    /// the director's.
    Applied(Result<(), String>, bool, bool),
    PinsRead(PinsRead),
    /// Stage `id` is in the kernel (true) or failed.
    Staged(u64, bool),
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
                // Never real-time: nft and netlink dumps must not starve the adverts.
                super::realtime::normal_scheduling();
                serve(&mut NftDataplane::new(NftOptions::default()), &rx, &done)
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

    pub fn stage_pins(&self, id: u64, stage: PinStage) {
        let _ = self.tx.send(Cmd::StagePins(id, stage));
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

/// The worker's loop, until a teardown (or the loop's end of the channel is gone).
fn serve(
    dp: &mut impl Dataplane,
    rx: &mpsc::Receiver<Cmd>,
    done: &tokio::sync::mpsc::UnboundedSender<Done>,
) {
    // The last state applied: which pins are void.
    let mut applied: Option<Desired> = None;
    while let Ok(first) = rx.recv() {
        let mut queue = vec![first];
        queue.extend(rx.try_iter());
        if queue.iter().any(|c| matches!(c, Cmd::Teardown)) {
            if let Err(e) = dp.teardown() {
                log::error!("{e}");
            }
            return;
        }
        // Of several queued applies only the last one counts, but a stage runs
        // after the apply queued before it (a node that starts scanning flushes
        // its maps first) and before the ones after it (a takeover reads them).
        let mut pending: Option<Desired> = None;
        for cmd in queue {
            match cmd {
                Cmd::Apply(d) => pending = Some(d),
                Cmd::ReadPins(r) => {
                    let _ = done.send(Done::PinsRead(read_pins(dp, &r, applied.as_ref())));
                }
                Cmd::StagePins(id, stage) => {
                    if let Some(d) = pending.take() {
                        apply(dp, d, &mut applied, done);
                    }
                    let ok = match dp.stage_pins(&stage) {
                        Ok(()) => true,
                        Err(e) => {
                            log::warn!("{e}");
                            false
                        }
                    };
                    let _ = done.send(Done::Staged(id, ok));
                }
                Cmd::Teardown => {}
            }
        }
        if let Some(d) = pending {
            apply(dp, d, &mut applied, done);
        }
    }
}

fn apply(
    dp: &mut impl Dataplane,
    d: Desired,
    applied: &mut Option<Desired>,
    done: &tokio::sync::mpsc::UnboundedSender<Done>,
) {
    let preload = matches!(&d.role, Role::Director(s)
        if !s.sticky_preload.is_empty() || !s.sticky_void.is_empty());
    let director = matches!(&d.role, Role::Director(_));
    let r = dp.apply(&d).map_err(|e| e.to_string());
    let ok = r.is_ok();
    let _ = done.send(Done::Applied(r, preload, director));
    // A new director's staged pins to nodes it does not direct to: the rules ignore them per
    // packet, so they go after the VIP (deleting 50,000 takes ~100 ms), before the next
    // bucket-table change can matter (the next apply waits behind this).
    if let Role::Director(s) = &d.role
        && ok
        && !s.sticky_void.is_empty()
    {
        let t = std::time::Instant::now();
        match dp.delete_pins(&s.sticky_void) {
            Ok(()) => log::info!(
                "deleted {} staged pins whose node is gone in {} ms",
                s.sticky_void.len(),
                t.elapsed().as_millis()
            ),
            Err(e) => log::warn!("{e}"),
        }
    }
    *applied = ok.then_some(d);
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

    /// VIP 10.9.0.`vip`, port 9090 redirected, direct mode, in `role`.
    fn desired(vip: u8, role: Role) -> Desired {
        Desired {
            vip: Ipv4Addr::new(10, 9, 0, vip),
            interface: "eth0".into(),
            redirects: vec![crate::dataplane::PortRedirect {
                port: 9090,
                to: 9090,
            }],
            mode: crate::dataplane::Mode::Direct,
            role,
        }
    }

    #[test]
    fn reads_find_look_up_and_a_whole_read_deletes_the_void_pins() {
        use crate::dataplane::{DirectorState, PortPool};
        let (d, n2, n3) = (
            Ipv4Addr::new(10, 9, 0, 1),
            Ipv4Addr::new(10, 9, 0, 2),
            Ipv4Addr::new(10, 9, 0, 3),
        );
        let desired = desired(
            100,
            Role::Director(DirectorState {
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
                sticky_void: vec![],
            }),
        );
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

    #[test]
    fn queued_applies_coalesce_but_a_stage_keeps_its_place() {
        use crate::dataplane::PinStage;
        let scanning = |vip: u8| {
            desired(
                vip,
                Role::Scanning {
                    self_addr: Ipv4Addr::new(10, 9, 0, 2),
                    director: None,
                },
            )
        };
        let stage = PinStage {
            upserts: vec![StickyEntry {
                client: Ipv4Addr::new(10, 9, 1, 1),
                port: 9090,
                mark: 7,
                expires_ms: 1000,
            }],
            removed: vec![],
            timeout_ms: 300_000,
        };
        let (tx, rx) = mpsc::channel();
        for c in [
            Cmd::Apply(scanning(100)),
            Cmd::Apply(scanning(101)),
            Cmd::StagePins(1, stage.clone()),
            Cmd::Apply(scanning(102)),
            Cmd::Apply(scanning(103)),
        ] {
            tx.send(c).unwrap();
        }
        drop(tx);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut dp = RecordingDataplane::default();
        serve(&mut dp, &rx, &done_tx);
        let vips: Vec<String> = dp
            .calls
            .iter()
            .map(|c| match c {
                Call::Apply { desired, .. } => desired.vip.to_string(),
                Call::StagePins(_) => "stage".into(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(vips, ["10.9.0.101", "stage", "10.9.0.103"]);
        assert_eq!(dp.sticky, stage.upserts);
        let mut answers = Vec::new();
        while let Ok(d) = done_rx.try_recv() {
            answers.push(format!("{d:?}"));
        }
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert_eq!(answers[1], "Staged(1, true)");
    }

    #[test]
    fn a_new_directors_void_staged_pins_go_after_it_reported_the_data_path_ready() {
        use crate::dataplane::{DirectorState, PortPool};
        let (me, gone) = (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 1));
        let void = StickyEntry {
            client: Ipv4Addr::new(10, 9, 1, 1),
            port: 9090,
            mark: mark_of(gone),
            expires_ms: 0,
        };
        let d = desired(
            100,
            Role::Director(DirectorState {
                self_addr: me,
                nodes: vec![],
                pools: vec![PortPool {
                    ports: vec![9090],
                    serving: vec![me],
                    buckets: vec![None],
                }],
                hash_seed: 1,
                sticky_idle_s: 300,
                sticky_preload: vec![],
                sticky_void: vec![void],
            }),
        );
        let mut dp = RecordingDataplane {
            sticky: vec![void],
            ..Default::default()
        };
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut applied = None;
        apply(&mut dp, d, &mut applied, &done_tx);
        assert!(matches!(dp.calls[0], Call::Apply { .. }));
        assert_eq!(dp.calls[1], Call::DeletePins(vec![void]));
        assert!(dp.sticky.is_empty());
        assert!(matches!(
            done_rx.try_recv(),
            Ok(Done::Applied(Ok(()), true, true))
        ));
        assert!(applied.is_some());
    }
}
