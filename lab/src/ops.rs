//! Operator commands in the lab (issue 4): `proxyha drain|undrain|reload` against a node's
//! control socket, `proxyha check` inside a node's namespace, and a listener bound to one
//! address (the misconfiguration `proxyha check` reports).

use std::io;
use std::net::SocketAddrV4;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::{Daemon, Host, Lab, run, run_output};

impl Lab {
    /// The binary and `<args…> --control <socket of d>`.
    fn ctl_argv(&self, d: &Daemon, args: &[&str]) -> io::Result<(String, Vec<String>)> {
        let control = d.control.as_ref().ok_or_else(|| {
            io::Error::other(format!("{} has no control socket", d.kind.as_str()))
        })?;
        let bin = self.proxyha_bin()?.to_string_lossy().into_owned();
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push("--control".into());
        all.push(control.to_string_lossy().into_owned());
        Ok((bin, all))
    }

    /// `proxyha <args…> --control <socket of d>`, whatever its exit status.
    pub fn proxyha_ctl(&self, d: &Daemon, args: &[&str]) -> io::Result<Output> {
        let (bin, all) = self.ctl_argv(d, args)?;
        run_output(&bin, &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The same, its standard output; a failed command is an error with its stderr.
    pub fn proxyha_ctl_ok(&self, d: &Daemon, args: &[&str]) -> io::Result<String> {
        let (bin, all) = self.ctl_argv(d, args)?;
        run(&bin, &all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `ip netns exec <ns> proxyha <args…>` (e.g. `check -v --config …`: /proc/net is the
    /// namespace's), whatever its exit status.
    pub fn proxyha_in(&self, host: &Host, args: &[&str]) -> io::Result<Output> {
        let bin = self.proxyha_bin()?.to_string_lossy().into_owned();
        let mut all: Vec<&str> = vec!["netns", "exec", &host.ns, &bin];
        all.extend_from_slice(args);
        run_output("ip", &all)
    }
}

impl Host {
    /// A TCP listener on `addr` (e.g. only the node's own address) in this namespace that
    /// accepts and closes; setting the returned flag (or lab teardown) closes it.
    pub fn listen_on(&self, addr: SocketAddrV4) -> io::Result<Arc<AtomicBool>> {
        self.serve_tcp_on(*addr.ip(), addr.port(), |s, _, _| drop(s))
    }
}
