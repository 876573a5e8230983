//! `proxyha check [-v]` (the seed product's `mwg-mon -v -c`): is every redirected port
//! listening on the wildcard address, bound to what, and owned by which process.
//!
//! The verdicts and the text are pure ([`assess`], [`render`]); [`run`] is the thin shell
//! that reads `/proc/net/tcp{,6}` and maps socket inodes to processes through the
//! `socket:[inode]` links in `/proc/<pid>/fd`. Run it in the node's network namespace:
//! /proc/net follows the reader's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use crate::config::{Config, PortRedirect, io_reason};
use crate::load::{ListenSocket, PortListen, listen_sockets, port_listen_state, socket_inode};

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub name: String,
}

/// The verdict for one listener port (the `to` of a redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortCheck {
    pub port: u16,
    /// The redirects that lead to this port (several may share one listener).
    pub redirects: Vec<PortRedirect>,
    pub state: PortListen,
    /// Every address the port is bound to, wildcard first.
    pub addrs: Vec<IpAddr>,
    pub owners: Vec<Owner>,
}

impl PortCheck {
    pub fn ok(&self) -> bool {
        self.state == PortListen::Wildcard
    }
}

/// One verdict per distinct listener port of `redirects`, in config order.
pub fn assess(
    redirects: &[PortRedirect],
    sockets: &[ListenSocket],
    owners: &BTreeMap<u64, Vec<Owner>>,
) -> Vec<PortCheck> {
    let mut ports: Vec<u16> = Vec::new();
    for r in redirects {
        if !ports.contains(&r.to) {
            ports.push(r.to);
        }
    }
    let listeners: Vec<_> = sockets.iter().map(|s| s.listener()).collect();
    let states = port_listen_state(&listeners, &ports);
    ports
        .iter()
        .map(|p| {
            let mine: Vec<&ListenSocket> = sockets.iter().filter(|s| s.port == *p).collect();
            let mut addrs: Vec<IpAddr> = mine.iter().map(|s| s.addr).collect();
            addrs.sort_by_key(|a| (!a.is_unspecified(), a.is_ipv6(), *a));
            addrs.dedup();
            let found: BTreeSet<Owner> = mine
                .iter()
                .flat_map(|s| owners.get(&s.inode).into_iter().flatten().cloned())
                .collect();
            PortCheck {
                port: *p,
                redirects: redirects.iter().filter(|r| r.to == *p).copied().collect(),
                state: states.get(p).cloned().unwrap_or(PortListen::NotListening),
                addrs,
                owners: found.into_iter().collect(),
            }
        })
        .collect()
}

fn join_addrs(addrs: &[IpAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// "pid 4242 tinyproxy", several joined; at most four shown.
fn owners_text(owners: &[Owner], complete: bool) -> String {
    if owners.is_empty() {
        return if complete {
            "owner unknown".to_string()
        } else {
            "owner unknown: run as root to see it".to_string()
        };
    }
    let mut items: Vec<String> = owners
        .iter()
        .take(4)
        .map(|o| format!("pid {} {}", o.pid, o.name))
        .collect();
    if owners.len() > 4 {
        items.push(format!("and {} more", owners.len() - 4));
    }
    format!("owner: {}", items.join(", "))
}

/// How to name the redirect in "remove … from ha.port_redirects".
fn redirect_text(c: &PortCheck) -> String {
    match c.redirects.as_slice() {
        [r] if r.port != r.to => format!("{{ port = {}, to = {} }}", r.port, r.to),
        _ => c.port.to_string(),
    }
}

/// The report. Without `verbose` only problems and a closing line; with it one line per
/// port (owner included). `complete`: every process's fds were readable (root), so an
/// unknown owner is really unknown.
pub fn render(checks: &[PortCheck], verbose: bool, complete: bool) -> String {
    let mut out = String::new();
    for c in checks {
        let owner = owners_text(&c.owners, complete);
        let line = match &c.state {
            PortListen::Wildcard if verbose => {
                format!(
                    "port {}: listening on {} ({owner})",
                    c.port,
                    join_addrs(&c.addrs)
                )
            }
            PortListen::Wildcard => continue,
            PortListen::SpecificOnly(addrs) => {
                let mut line = format!(
                    "port {} is bound to {} only; Proxy HA needs it bound to 0.0.0.0",
                    c.port,
                    join_addrs(addrs)
                );
                if verbose {
                    let _ = write!(line, " ({owner})");
                }
                line
            }
            PortListen::NotListening => format!(
                "port {}: nothing is listening; start the proxy or remove {} from ha.port_redirects",
                c.port,
                redirect_text(c)
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let bad = checks.iter().filter(|c| !c.ok()).count();
    let ports: Vec<String> = checks.iter().map(|c| c.port.to_string()).collect();
    if checks.is_empty() {
        out.push_str("ok: no ha.port_redirects, nothing to check\n");
    } else if bad == 0 {
        let _ = writeln!(
            out,
            "ok: {} listening on the wildcard address ({})",
            plural(checks.len(), "redirected port"),
            ports.join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "{bad} of {} {} attention",
            plural(checks.len(), "redirected port"),
            if bad == 1 { "needs" } else { "need" }
        );
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Reads this namespace's listeners and their owners; the report and whether all is fine.
pub fn run(config: &Config, verbose: bool) -> Result<(String, bool), String> {
    let redirects = &config.ha.port_redirects;
    let ports: Vec<u16> = redirects.iter().map(|r| r.to).collect();
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            format!(
                "reading {path}: {}; proxyha check needs a mounted /proc",
                io_reason(&e)
            )
        })
    };
    let mut sockets = listen_sockets(&read("/proc/net/tcp")?, &ports);
    // IPv6 may be disabled: no tcp6 file means no IPv6 listeners.
    if Path::new("/proc/net/tcp6").exists() {
        sockets.extend(listen_sockets(&read("/proc/net/tcp6")?, &ports));
    }
    let wanted: BTreeSet<u64> = sockets
        .iter()
        .map(|s| s.inode)
        .filter(|i| *i != 0)
        .collect();
    let (owners, complete) = owners_of(Path::new("/proc"), &wanted);
    let checks = assess(redirects, &sockets, &owners);
    let ok = checks.iter().all(PortCheck::ok);
    Ok((render(&checks, verbose, complete), ok))
}

/// The processes whose fds link to the sockets `wanted`; false when some process's fds
/// could not be read (not root).
fn owners_of(proc: &Path, wanted: &BTreeSet<u64>) -> (BTreeMap<u64, Vec<Owner>>, bool) {
    let mut owners: BTreeMap<u64, Vec<Owner>> = BTreeMap::new();
    let mut complete = true;
    if wanted.is_empty() {
        return (owners, complete);
    }
    let Ok(entries) = std::fs::read_dir(proc) else {
        return (owners, false);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = match std::fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                // A process that exited meanwhile is no loss; one we may not read is.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    complete = false;
                }
                continue;
            }
        };
        let mut name = None;
        for fd in fds.flatten() {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| t.to_str().and_then(socket_inode))
            else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            let name = name
                .get_or_insert_with(|| {
                    std::fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_else(|_| "?".to_string())
                })
                .clone();
            owners.entry(inode).or_default().push(Owner { pid, name });
        }
    }
    (owners, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(port: u16, to: u16) -> PortRedirect {
        PortRedirect { port, to }
    }

    fn sock(port: u16, addr: &str, inode: u64) -> ListenSocket {
        ListenSocket {
            port,
            addr: addr.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            inode,
        }
    }

    fn owners() -> BTreeMap<u64, Vec<Owner>> {
        [
            (
                1,
                vec![Owner {
                    pid: 4242,
                    name: "tinyproxy".into(),
                }],
            ),
            (
                2,
                vec![Owner {
                    pid: 77,
                    name: "python3".into(),
                }],
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn wildcard_listeners_pass_with_one_ok_line() {
        let r = [redirect(9090, 9090), redirect(3128, 3128)];
        let s = [sock(9090, "0.0.0.0", 1), sock(3128, "::", 1)];
        let checks = assess(&r, &s, &owners());
        assert!(checks.iter().all(PortCheck::ok));
        assert_eq!(
            render(&checks, false, true),
            "ok: 2 redirected ports listening on the wildcard address (9090, 3128)\n"
        );
        assert_eq!(
            render(&checks, true, true),
            "port 9090: listening on 0.0.0.0 (owner: pid 4242 tinyproxy)\n\
             port 3128: listening on :: (owner: pid 4242 tinyproxy)\n\
             ok: 2 redirected ports listening on the wildcard address (9090, 3128)\n"
        );
    }

    #[test]
    fn a_specific_address_bind_is_named_with_the_fix() {
        let r = [redirect(9090, 9090)];
        let s = [sock(9090, "10.0.0.5", 2)];
        let checks = assess(&r, &s, &owners());
        assert!(!checks[0].ok());
        assert_eq!(
            render(&checks, false, true),
            "port 9090 is bound to 10.0.0.5 only; Proxy HA needs it bound to 0.0.0.0\n\
             1 of 1 redirected port needs attention\n"
        );
        assert_eq!(
            render(&checks, true, true).lines().next(),
            Some(
                "port 9090 is bound to 10.0.0.5 only; Proxy HA needs it bound to 0.0.0.0 \
                 (owner: pid 77 python3)"
            )
        );
        let two = [sock(9090, "127.0.0.1", 2), sock(9090, "10.0.0.5", 2)];
        let checks = assess(&r, &two, &owners());
        assert!(
            render(&checks, false, true)
                .starts_with("port 9090 is bound to 10.0.0.5 and 127.0.0.1 only;")
        );
    }

    #[test]
    fn a_port_nobody_listens_on_names_the_redirect_to_remove() {
        let r = [
            redirect(9090, 9090),
            redirect(2121, 2121),
            redirect(80, 3128),
        ];
        let s = [sock(9090, "0.0.0.0", 1), sock(9090, "::1", 1)];
        let checks = assess(&r, &s, &owners());
        assert_eq!(checks.iter().filter(|c| c.ok()).count(), 1);
        assert_eq!(
            render(&checks, true, false),
            "port 9090: listening on 0.0.0.0 and ::1 (owner: pid 4242 tinyproxy)\n\
             port 2121: nothing is listening; start the proxy or remove 2121 from ha.port_redirects\n\
             port 3128: nothing is listening; start the proxy or remove { port = 80, to = 3128 } from ha.port_redirects\n\
             2 of 3 redirected ports need attention\n"
        );
    }

    #[test]
    fn shared_listeners_are_checked_once_and_unknown_owners_say_why() {
        let r = [redirect(80, 3128), redirect(8080, 3128)];
        let s = [sock(3128, "0.0.0.0", 9)];
        let checks = assess(&r, &s, &BTreeMap::new());
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].redirects.len(), 2);
        assert!(render(&checks, true, false).starts_with(
            "port 3128: listening on 0.0.0.0 (owner unknown: run as root to see it)\n"
        ));
        assert!(render(&checks, true, true).contains("(owner unknown)"));
        assert_eq!(
            render(&[], false, true),
            "ok: no ha.port_redirects, nothing to check\n"
        );
        let many: Vec<Owner> = (0..6)
            .map(|pid| Owner {
                pid,
                name: "nginx".into(),
            })
            .collect();
        assert_eq!(
            owners_text(&many, true),
            "owner: pid 0 nginx, pid 1 nginx, pid 2 nginx, pid 3 nginx, and 2 more"
        );
    }

    #[test]
    fn this_process_is_found_as_the_owner_of_its_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a listener");
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let sockets = listen_sockets(&text, &[port]);
        assert_eq!(sockets.len(), 1, "our listener on {port} in /proc/net/tcp");
        let wanted = [sockets[0].inode].into_iter().collect();
        let (owners, _) = owners_of(Path::new("/proc"), &wanted);
        let me = std::process::id();
        assert!(
            owners
                .get(&sockets[0].inode)
                .is_some_and(|o| o.iter().any(|o| o.pid == me)),
            "pid {me} owns inode {}: {owners:?}",
            sockets[0].inode
        );
        drop(listener);
    }
}
