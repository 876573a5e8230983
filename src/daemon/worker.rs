//! The data-path worker: one OS thread owning the [`NftDataplane`], so the blocking `nft`
//! and `ip` calls (tens to hundreds of ms) never hold up the select loop, and with it VRRP
//! adverts. Only the newest desired state matters: queued applies are coalesced.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::dataplane::{Dataplane, Desired, NftDataplane, NftOptions, Role, StickyEntry};

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
                while let Ok(mut cmd) = rx.recv() {
                    // Coalesce: of several queued applies only the last one counts; a
                    // teardown ends everything.
                    while let Ok(next) = rx.try_recv() {
                        match (&cmd, next) {
                            (Cmd::Teardown, _) => {}
                            (_, next @ Cmd::Teardown) => cmd = next,
                            (Cmd::Apply(_), Cmd::Pinned) => {
                                let _ = done.send(Done::Pinned(pinned(&mut dp)));
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
                        Cmd::Pinned => {
                            let _ = done.send(Done::Pinned(pinned(&mut dp)));
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

fn pinned(dp: &mut NftDataplane) -> Vec<StickyEntry> {
    dp.sticky_dump().unwrap_or_default()
}
