//! The control socket: one JSON request line in, one JSON response line out.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::{Request, Response, decode_line, encode_line};

/// A request waiting for the main loop's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// Owns the socket file; removes it on drop so a clean stop leaves nothing behind.
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket and starts accepting; requests arrive on the returned channel.
    /// A socket file left by a crashed run is replaced; one that still answers is not.
    pub async fn start(path: &Path) -> io::Result<(ControlServer, mpsc::Receiver<Pending>)> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{what} control socket {}: {e}", path.display()),
            )
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ctx("creating the directory of", e))?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {} answers: another proxyha run is active; stop it or set control.socket",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| ctx("removing stale", e))?;
        }
        let listener = UnixListener::bind(path).map_err(|e| ctx("binding", e))?;
        // Status shows topology and counters only; still, keep it to root and the group.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| ctx("setting permissions of", e))?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(listener, tx));
        Ok((
            ControlServer {
                path: path.to_path_buf(),
            },
            rx,
        ))
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Control connections served at once; more are answered `busy` and closed at once, so a
/// flood of connections costs an accept each and never grows memory or delays the VRRP loop.
pub const MAX_CONNECTIONS: usize = 16;

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Pending>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    let mut last_log: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        serve(stream, tx).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    refused += 1;
                    let busy = Response::Error(format!(
                        "busy: {MAX_CONNECTIONS} control connections are open; try again"
                    ));
                    // Never wait on a flooding peer: one non-blocking write, then close.
                    let _ = stream.try_write(&encode_line(&busy));
                    drop(stream);
                    let now = std::time::Instant::now();
                    if last_log.is_none_or(|t| now.duration_since(t).as_secs() >= 10) {
                        log::warn!(
                            "control socket: {MAX_CONNECTIONS} connections open, {refused} refused so far"
                        );
                        last_log = Some(now);
                    }
                }
            },
            Err(e) => {
                log::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(64 * 1024);
    let answer = match tokio::time::timeout(
        std::time::Duration::from_secs(3),
        reader.read_until(b'\n', &mut line),
    )
    .await
    {
        Err(_) => return,
        Ok(Err(_)) => return,
        Ok(Ok(_)) => match decode_line::<Request>(&line) {
            Err(e) => Response::Error(format!("bad control request: {e}")),
            Ok(req) => {
                let (reply_tx, reply_rx) = oneshot::channel();
                if tx.send((req, reply_tx)).await.is_err() {
                    return;
                }
                match reply_rx.await {
                    Ok(resp) => resp,
                    Err(_) => return,
                }
            }
        },
    };
    let _ = write.write_all(&encode_line(&answer)).await;
    let _ = write.shutdown().await;
}
