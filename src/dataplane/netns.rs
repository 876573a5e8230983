//! Opening a socket in another network namespace (the lab's, for the data path's tests and
//! tools): setns(2) affects the calling thread only, so a thread of its own enters the
//! namespace and opens it; the socket stays in that namespace after the thread ends.

use std::io;
use std::path::Path;

/// `open()` run in the namespace at `netns` (a /run/netns path), or here when `None`.
pub fn open_in<T: Send + 'static>(
    netns: Option<&Path>,
    open: fn() -> io::Result<T>,
) -> io::Result<T> {
    let Some(path) = netns else {
        return open();
    };
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        open()
    })
    .join()
    .map_err(|_| io::Error::other("the thread opening a socket in a network namespace panicked"))?
}
