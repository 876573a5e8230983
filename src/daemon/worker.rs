//! The data-path worker: one OS thread owning the [`NftDataplane`], so the blocking `nft`
//! and `ip` calls (tens to hundreds of ms) never hold up the select loop, and with it VRRP
//! adverts. Only the newest desired state matters: queued applies are coalesced.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dataplane::{Dataplane, Desired, NftDataplane, NftOptions, PinReads, PinsRead, Role};

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
                while let Ok(mut cmd) = rx.recv() {
                    // Coalesce: of several queued applies only the last one counts; a
                    // teardown ends everything.
                    while let Ok(next) = rx.try_recv() {
                        match (&cmd, next) {
                            (Cmd::Teardown, _) => {}
                            (_, next @ Cmd::Teardown) => cmd = next,
                            (Cmd::Apply(_), Cmd::ReadPins(r)) => {
                                let _ = done.send(Done::PinsRead(read_pins(&mut dp, &r)));
                            }
                            (_, next) => cmd = next,
                        }
                    }
                    match cmd {
                        Cmd::Apply(d) => {
                            let preload = matches!(&d.role, Role::Director(s) if !s.sticky_preload.is_empty());
                            let director = matches!(&d.role, Role::Director(_));
                            let r = dp.apply(&d).map_err(|e| e.to_string());
                            let _ = done.send(Done::Applied(r, preload, director));
                        }
                        Cmd::ReadPins(r) => {
                            let _ = done.send(Done::PinsRead(read_pins(&mut dp, &r)));
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
/// director's view simply stays as it was until the next period.
fn read_pins(dp: &mut impl Dataplane, reads: &PinReads) -> PinsRead {
    match dp.read_pins(reads) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("{e}");
            PinsRead::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{Call, RecordingDataplane, StickyEntry, mark_of};
    use std::net::Ipv4Addr;

    #[test]
    fn reads_find_look_up_and_delete_by_key() {
        let pin = |i: u8, node: u8| StickyEntry {
            client: Ipv4Addr::new(10, 9, 1, i),
            port: 9090,
            mark: mark_of(Ipv4Addr::new(10, 9, 0, node)),
            expires_ms: 1000,
        };
        let mut dp = RecordingDataplane {
            sticky: vec![pin(1, 2), pin(2, 3)],
            fresh: vec![pin(2, 3)],
            ..Default::default()
        };
        let reads = PinReads {
            fresh: true,
            lookup: vec![(pin(1, 2).client, 9090), (Ipv4Addr::new(10, 9, 1, 9), 9090)],
            full: false,
            delete: vec![pin(2, 3)],
        };
        let r = read_pins(&mut dp, &reads);
        assert_eq!(r.fresh, vec![pin(2, 3)]);
        assert_eq!(r.found, vec![pin(1, 2)]);
        assert_eq!(r.missing, vec![(Ipv4Addr::new(10, 9, 1, 9), 9090)]);
        assert_eq!(r.deleted, vec![pin(2, 3)]);
        assert_eq!(dp.sticky, vec![pin(1, 2)]);
        assert_eq!(dp.calls, vec![Call::ReadPins(reads)]);
    }
}
