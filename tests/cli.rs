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
