//! The command line as an administrator meets it: exit codes and messages of the one-shot
//! commands. No root needed.

use std::path::PathBuf;
use std::process::{Command, Output};

fn proxyha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxyha"))
        .args(args)
        .output()
        .expect("running the proxyha binary")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("proxyha-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a temp config");
    path
}

#[test]
fn config_check_accepts_the_shipped_example() {
    let example = proxyha(&["config", "example"]);
    assert!(example.status.success(), "config example exits 0");
    let path = temp_file("example.toml", &String::from_utf8_lossy(&example.stdout));
    let out = proxyha(&["config", "check", path.to_str().unwrap()]);
    assert!(out.status.success(), "the example config is valid: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"),
        "check says ok: {out:?}"
    );
}

#[test]
fn config_check_names_line_column_key_value_and_range() {
    let path = temp_file(
        "bad.toml",
        "[node]\nmanagement_ip = \"10.1.0.2\"\n[ha]\nvirtual_ip = \"10.1.0.9\"\nvirtual_router_id = 300\npriority = 99\n",
    );
    let out = proxyha(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an invalid config exits 1: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:21: ha.virtual_router_id = 300: must be 1..=255"),
        "error names place, key, value and range: {err}"
    );
}

#[test]
fn config_check_rejects_unknown_keys() {
    let path = temp_file(
        "unknown.toml",
        "[ha]\nvirtual_ip = \"10.1.0.9\"\npriority = 99\nvirtual_router = 5\n",
    );
    let out = proxyha(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "unknown key exits 1: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("virtual_router"),
        "error names the unknown key: {err}"
    );
}

#[test]
fn config_check_of_a_missing_file_names_the_path() {
    let out = proxyha(&["config", "check", "/nonexistent/proxyha.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/proxyha.toml"),
        "error names the file: {err}"
    );
}

#[test]
fn status_without_a_supervisor_explains_what_to_do() {
    let out = proxyha(&["status", "--control", "/nonexistent/control.sock"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unreachable supervisor exits 1: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/control.sock"),
        "error names the socket: {err}"
    );
    assert!(
        err.contains("proxyha run"),
        "error says how to start the supervisor: {err}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_2_before_touching_the_network() {
    let path = temp_file("run-bad.toml", "[ha]\npriority = 300\n");
    let out = proxyha(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "unusable config exits 2: {out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ha.priority = 300"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = proxyha(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("proxyha {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn wrong_cli_use_is_a_usage_error() {
    let out = proxyha(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn drain_undrain_and_reload_without_a_supervisor_name_the_socket() {
    for cmd in ["drain", "undrain", "reload"] {
        let out = proxyha(&[cmd, "--control", "/nonexistent/control.sock"]);
        assert_eq!(out.status.code(), Some(1), "{cmd} exits 1: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err,
            "proxyha: connecting to /nonexistent/control.sock: No such file or directory; \
             is proxyha run started? (see --control)\n",
            "{cmd}"
        );
    }
}

/// A one-shot fake supervisor: answers one request on `socket` with `answer`, returns the
/// request line it got.
fn fake_supervisor(name: &str, answer: &'static str) -> (PathBuf, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let dir = std::env::temp_dir().join(format!("proxyha-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    let socket = dir.join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&socket);
    let listener =
        std::os::unix::net::UnixListener::bind(&socket).expect("binding the fake control socket");
    let handle = std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return String::new();
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = reader.get_mut().write_all(answer.as_bytes());
        line
    });
    (socket, handle)
}

#[test]
fn drain_prints_the_confirmation_and_reload_the_refusal_with_line_and_column() {
    let (socket, server) = fake_supervisor(
        "drain",
        "{\"ok\":\"n2 is draining: no new clients come here, pinned clients finish\"}\n",
    );
    let out = proxyha(&["drain", "--control", socket.to_str().unwrap()]);
    assert_eq!(server.join().ok().as_deref(), Some("{\"cmd\":\"drain\"}\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "n2 is draining: no new clients come here, pinned clients finish\n"
    );

    let (socket, server) = fake_supervisor(
        "reload",
        "{\"error\":\"reload refused, the running configuration is kept:\\n/etc/proxyha/proxyha.toml:7:12: ha.priority = 300: must be 0..=254\"}\n",
    );
    let out = proxyha(&["reload", "--control", socket.to_str().unwrap()]);
    assert_eq!(
        server.join().ok().as_deref(),
        Some("{\"cmd\":\"reload\"}\n")
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused reload exits 1: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("proxyha.toml:7:12: ha.priority = 300: must be 0..=254"),
        "{err}"
    );
}

#[test]
fn check_with_an_unreadable_config_is_exit_2() {
    let out = proxyha(&["check", "--config", "/nonexistent/proxyha.toml"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/proxyha.toml"));
    let bad = temp_file("check-bad.toml", "[ha]\npriority = 300\n");
    let out = proxyha(&["check", "-v", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("check-bad.toml:2:12: ha.priority = 300")
    );
    let out = proxyha(&["check", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage error: {out:?}");
}

fn check_config(name: &str, ports: &str) -> PathBuf {
    temp_file(
        name,
        &format!("[ha]\nvirtual_ip = \"10.1.0.9\"\npriority = 99\nport_redirects = [{ports}]\n"),
    )
}

#[test]
fn check_reports_a_port_nobody_listens_on_and_one_bound_to_loopback_only() {
    // Loopback only: a real listener of this test, no traffic leaves the machine.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding on loopback");
    let bound = listener.local_addr().expect("local address").port();
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding on loopback");
        l.local_addr().expect("local address").port()
    };
    let path = check_config("check-ports.toml", &format!("{bound}, {free}"));
    let out = proxyha(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        format!(
            "port {bound} is bound to 127.0.0.1 only; Proxy HA needs it bound to 0.0.0.0\n\
             port {free}: nothing is listening; start the proxy or remove {free} from ha.port_redirects\n\
             2 of 2 redirected ports need attention\n"
        )
    );
    let out = proxyha(&["check", "-v", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!(
            "port {bound} is bound to 127.0.0.1 only; Proxy HA needs it bound to 0.0.0.0 (owner"
        )),
        "{text}"
    );
    // Root sees every process's fds: then the owner is this test process.
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if root {
        assert!(
            first.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }
    drop(listener);
}

#[test]
fn check_without_redirects_has_nothing_to_check() {
    let path = temp_file(
        "check-none.toml",
        "[ha]\nvirtual_ip = \"10.1.0.9\"\npriority = 99\n",
    );
    let out = proxyha(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: no ha.port_redirects, nothing to check\n"
    );
}
