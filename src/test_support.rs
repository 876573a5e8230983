//! Unit-test support inside the library (the network-namespace labs live in the `proxyha-lab`
//! workspace crate, which integration tests and examples use).

/// True when a kernel unit test may run (effective uid 0). Otherwise a loud SKIP line, or a
/// panic under `PROXYHA_REQUIRE_ROOT_TESTS=1` (CI never passes by skipping).
pub fn require_root(what: &str) -> bool {
    // Effective uid from /proc (no unsafe libc call in tests).
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    });
    if root {
        return true;
    }
    assert!(
        std::env::var("PROXYHA_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
        "{what}: needs root; PROXYHA_REQUIRE_ROOT_TESTS=1 forbids skipping"
    );
    // Straight to fd 2: the test harness captures `eprintln!`, and a skip must be seen.
    let line = format!("*** SKIP {what}: needs root; run as root to test ***\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    false
}
