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

fn proxyha_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_proxyha"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running the proxyha binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("feeding stdin");
    child.wait_with_output().expect("waiting for proxyha")
}

#[test]
fn setup_reasks_bad_answers_and_writes_a_valid_config() {
    let dir = std::env::temp_dir().join(format!("proxyha-cli-setup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    let path = dir.join("proxyha.toml");
    let _ = std::fs::remove_file(&path);
    let p = path.to_str().unwrap();
    // address: one bad answer; gateway: outside the subnet, then good; VIP; priority 300 then
    // 89; redirects; a bad peer, then one; a generated group key; no reboot.
    let input = "10.77.0.12\n10.77.0.12/24\n10.78.0.1\n10.77.0.1\n10.77.0.100\n300\n89\n9090, 2121\n\
                 10.77.0.x\n10.77.0.13\n\nn\n";
    let out = proxyha_stdin(&["setup", "--config", p], input);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "setup exits 0: {out:?}");
    for want in [
        "This node's address and prefix (A.B.C.D/N): ",
        "network.address = \"10.77.0.12\": must be an IPv4 address with prefix length",
        "network.gateway = \"10.78.0.1\": must be inside the subnet of network.address 10.77.0.0/24",
        "ha.priority = 300: must be 0..=254",
        "ha.unicast_peers: \"10.77.0.x\" is not an IPv4 address",
        "Group key (Enter on the first node",
        "[generate a new key]: ",
        "(mode 0600); give it to the other nodes' setup: ",
        "not rebooting; the new config applies at the next reboot",
    ] {
        assert!(
            stdout.contains(want),
            "setup output has {want:?}:\n{stdout}"
        );
    }
    let check = proxyha(&["config", "check", p]);
    assert!(
        check.status.success(),
        "the written config is valid: {check:?}"
    );
    let get = |key: &str| {
        let o = proxyha(&["config", "get", key, "--config", p]);
        assert!(o.status.success(), "config get {key}: {o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(get("network.address"), "10.77.0.12/24");
    assert_eq!(get("ha.virtual_ip"), "10.77.0.100");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains("unicast_peers = [\"10.77.0.12\", \"10.77.0.13\"]"),
        "{written}"
    );
    let key_file = dir.join("auth.key");
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&key_file).expect("setup wrote the key file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let key = std::fs::read_to_string(&key_file).unwrap();
        assert_eq!(key.trim().len(), 48, "{key:?}");
        assert!(
            stdout.contains(key.trim()),
            "the key is shown for the other nodes"
        );
    }
    // A second run keeps every value on Enter, and input ending early writes nothing.
    let keys = [
        "node.name",
        "network.address",
        "ha.virtual_ip",
        "appliance.builtin_proxy",
    ];
    let values: Vec<String> = keys.iter().map(|k| get(k)).collect();
    let key = std::fs::read_to_string(&key_file).unwrap();
    let out = proxyha_stdin(&["setup", "--config", p], "\n\n\n\n\n\n\n\n");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[10.77.0.12/24]: "));
    assert!(stdout.contains("[keep the current key]: "), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "the key is kept"
    );
    assert_eq!(keys.iter().map(|k| get(k)).collect::<Vec<_>>(), values);
    let before = std::fs::read_to_string(&path).unwrap();
    let out = proxyha_stdin(&["setup", "--config", p], "10.77.0.13/24\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let bad = proxyha(&["config", "get", "ha.nope", "--config", p]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown key ha.nope; keys: node.name"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An update must read the previous release's config as it is (issue 9): 0.1.0's shipped
/// example (`proxyha config example` at f71f204) and a 0.1.0 appliance config.
#[test]
fn configs_of_release_0_1_0_are_read_as_they_are() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in ["proxyha-0.1.0-example.toml", "proxyha-0.1.0-appliance.toml"] {
        let path = dir.join(name);
        let out = proxyha(&["config", "check", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name} is valid for this version: {out:?}"
        );
    }
    let path = dir.join("proxyha-0.1.0-appliance.toml");
    let out = proxyha(&[
        "config",
        "get",
        "update.health_timeout_s",
        "--config",
        path.to_str().unwrap(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "300\n",
        "a 0.1.0 config gets the default trial timeout"
    );
}
