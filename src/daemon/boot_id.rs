//! The membership boot id: larger on every start of load sharing on this node, so that
//! with `ha.auth_key` receivers take our messages in (boot id, sequence) order and refuse a
//! captured one replayed later, also one from an earlier run. Kept in `[control] state_dir`
//! (written atomically); the wall clock in milliseconds is the floor, so a lost state
//! directory still gives a larger id unless the clock also went back.

use std::path::{Path, PathBuf};

use super::atomic::write_atomic;
use crate::config::io_reason;

/// The file's name inside the state directory.
pub const FILE: &str = "boot-id";

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The id after `last` (the kept one, if any) at wall-clock `now_ms`.
pub fn after(last: Option<u64>, now_ms: u64) -> u64 {
    last.map_or(0, |l| l.saturating_add(1)).max(now_ms)
}

/// Takes the next boot id and keeps it; a failure to keep it comes back as the warning
/// to log (the id is still usable: the clock floor).
pub fn next(state_dir: &Path, now_ms: u64) -> (u64, Option<String>) {
    let path = path(state_dir);
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let id = after(last, now_ms);
    let warning = write_atomic(&path, format!("{id}\n").as_bytes())
        .err()
        .map(|e| {
            format!(
                "keeping the membership boot id in {}: {}; a restart with the clock set back \
                 would be refused by the other nodes until it catches up (check [control] state_dir)",
                path.display(),
                io_reason(&e)
            )
        });
    (id, warning)
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn grows_on_every_start_even_with_the_clock_set_back() {
        assert_eq!(after(None, 1_000), 1_000);
        assert_eq!(after(Some(5_000), 1_000), 5_001, "clock went back");
        assert_eq!(after(Some(5_000), 9_000), 9_000);
        assert_eq!(after(Some(u64::MAX), 0), u64::MAX);
        let dir = std::env::temp_dir().join(format!("proxyha-boot-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, w) = next(&dir, 10);
        assert!(w.is_none(), "{w:?}");
        let (b, _) = next(&dir, 10);
        let (c, _) = next(&dir, 5);
        assert_eq!((a, b, c), (10, 11, 12));
        std::fs::write(path(&dir), "garbage").unwrap();
        assert_eq!(
            next(&dir, 7).0,
            7,
            "an unreadable id falls back to the clock"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
