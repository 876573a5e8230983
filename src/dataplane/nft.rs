//! The real data path: `nft -f -` for the table (on changes only), netlink for the sticky
//! maps (every period: [`super::nfsock`]), rtnetlink for policy routing and the VIP on `lo`
//! (on changes: [`super::rtsock`]), /proc/sys for sysctls. Nothing here spawns a process
//! per period; nft runs with a timeout when the table changes.
//!
//! Rules are added before stale ones are removed, so a forwarded connection never falls
//! through to local delivery (which would reset it). Errors name the `ip`/`nft` command that
//! does the same by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::nfnl::Op;
use super::nfsock::NfSock;
use super::plan::{
    BACKEND_RULE_PREF, FWMARK_RULE_PREF, LOCAL_RULE_PREF, LOCAL_TABLE, Route, TABLE,
};
use super::rtsock::{Listed, RtSock};
use super::{
    Dataplane, DataplaneError, Desired, PinReads, PinStage, PinsRead, Role, Rule, Selector,
    StickyEntry, flush_pins, host_plan, plan, preamble, preload_pins, routing_plan,
};

#[derive(Debug, Clone)]
pub struct NftOptions {
    /// Prefix for every command, e.g. `["ip", "netns", "exec", "ns1"]` in the lab. When set,
    /// sysctls are also written through it (`sysctl -w`), because /proc/sys/net belongs to
    /// the namespace of the process that opens it.
    pub wrap: Vec<String>,
    /// Per command. nft loads a 4096-bucket table in well under a second.
    pub timeout: Duration,
    /// The network namespace (a /run/netns path) whose sticky maps the netlink socket
    /// reads: the lab's, with `wrap`; `None` = this process's.
    pub netns: Option<std::path::PathBuf>,
}

impl Default for NftOptions {
    fn default() -> Self {
        NftOptions {
            wrap: Vec::new(),
            timeout: Duration::from_secs(10),
            netns: None,
        }
    }
}

/// [`Dataplane`] over nft, `ip` and /proc/sys.
#[derive(Debug)]
pub struct NftDataplane {
    opts: NftOptions,
    /// Sysctl values found before our first write, restored on teardown.
    saved_sysctls: BTreeMap<String, String>,
    vip: Option<Ipv4Addr>,
    /// Opened on first use.
    nfsock: Option<NfSock>,
    /// Opened on first use.
    rtsock: Option<RtSock>,
    /// Our table and maps exist (a non-idle state was applied since the last idle one).
    table_ready: bool,
    /// The last state applied was a scanning node's: its `sticky` map holds staged pins.
    scanning: bool,
}

fn op_err(op: impl Into<String>, detail: impl Into<String>) -> DataplaneError {
    DataplaneError::Op {
        op: op.into(),
        detail: detail.into(),
    }
}

impl NftDataplane {
    pub fn new(opts: NftOptions) -> NftDataplane {
        NftDataplane {
            opts,
            saved_sysctls: BTreeMap::new(),
            vip: None,
            nfsock: None,
            rtsock: None,
            table_ready: false,
            scanning: false,
        }
    }

    fn sock(&mut self) -> Result<&mut NfSock, DataplaneError> {
        if self.nfsock.is_none() {
            let s = NfSock::open_in(self.opts.netns.as_deref())
                .map_err(|e| op_err("opening the nf_tables netlink socket", e.to_string()))?;
            self.nfsock = Some(s);
        }
        self.nfsock
            .as_mut()
            .ok_or_else(|| op_err("opening the nf_tables netlink socket", "not open"))
    }

    /// Runs a command (through the wrapper) with the timeout; `Ok(stdout)` on exit 0, else
    /// the command line and its stderr.
    fn run(
        &self,
        op: &str,
        argv: &[String],
        stdin: Option<&str>,
    ) -> Result<String, DataplaneError> {
        let full: Vec<String> = self.opts.wrap.iter().chain(argv).cloned().collect();
        let Some((prog, args)) = full.split_first() else {
            return Err(op_err(op, "empty command"));
        };
        let line = full.join(" ");
        let mut child = Command::new(prog)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| op_err(op, format!("starting `{line}`: {e}; is {prog} installed?")))?;
        // Readers on threads: a child blocked on a full stdout pipe would never exit.
        let mut out_pipe = child.stdout.take();
        let mut err_pipe = child.stderr.take();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(p) = out_pipe.as_mut() {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_string(&mut s);
            }
            s
        });
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means the child exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let deadline = Instant::now() + self.opts.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(op_err(
                        op,
                        format!(
                            "`{line}` did not finish within {:?}; killed",
                            self.opts.timeout
                        ),
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(op_err(op, format!("waiting for `{line}`: {e}"))),
            }
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        if status.success() {
            Ok(stdout)
        } else {
            Err(op_err(
                op,
                format!("`{line}` failed ({status}): {}", stderr.trim()),
            ))
        }
    }

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn sysctl_get(&self, key: &str) -> Result<String, DataplaneError> {
        let op = format!("reading sysctl {key}");
        if self.opts.wrap.is_empty() {
            std::fs::read_to_string(format!("/proc/sys/{key}"))
                .map(|s| s.trim().to_string())
                .map_err(|e| op_err(op, e.to_string()))
        } else {
            self.run(&op, &Self::argv(&["sysctl", "-n", key]), None)
                .map(|s| s.trim().to_string())
        }
    }

    fn sysctl_set(&self, key: &str, value: &str) -> Result<(), DataplaneError> {
        let op = format!("setting sysctl {key} to {value}");
        if self.opts.wrap.is_empty() {
            std::fs::write(format!("/proc/sys/{key}"), value).map_err(|e| op_err(op, e.to_string()))
        } else {
            self.run(
                &op,
                &Self::argv(&["sysctl", "-q", "-w", &format!("{key}={value}")]),
                None,
            )
            .map(|_| ())
        }
    }

    fn rt(&mut self) -> Result<&RtSock, DataplaneError> {
        if self.rtsock.is_none() {
            let s = RtSock::open_in(self.opts.netns.as_deref())
                .map_err(|e| op_err("opening the rtnetlink socket", e.to_string()))?;
            self.rtsock = Some(s);
        }
        self.rtsock
            .as_ref()
            .ok_or_else(|| op_err("opening the rtnetlink socket", "not open"))
    }

    fn vip_on_lo(&mut self, vip: Ipv4Addr, on: bool) -> Result<(), DataplaneError> {
        let op = if on {
            format!("adding {vip}/32 to lo")
        } else {
            format!("removing {vip}/32 from lo")
        };
        self.rt()?.vip_on_lo(vip, on).map_err(|e| op_err(op, e))
    }

    /// Our rules currently in the kernel (by preference), plus where `local` sits.
    fn current_rules(&mut self) -> Result<(Vec<Rule>, BTreeSet<u32>), DataplaneError> {
        let listed = self
            .rt()?
            .rules()
            .map_err(|e| op_err("listing policy routing rules", e))?;
        Ok(ours(&listed))
    }

    fn rule(&mut self, verb: &str, r: &Rule) -> Result<(), DataplaneError> {
        let rt = self.rt()?;
        let (what, res) = if verb == "add" {
            ("adding", rt.add_rule(r))
        } else {
            ("deleting", rt.del_rule(r))
        };
        res.map_err(|e| op_err(format!("{what} rule `{}`", r.ip_args().join(" ")), e))
    }

    fn local_rule(pref: u32) -> Rule {
        Rule {
            pref,
            selector: Selector::All,
            table: LOCAL_TABLE,
        }
    }

    /// Puts `local` at `keep` (adding it first) and removes it from `drop`.
    fn place_local(
        &mut self,
        local_prefs: &BTreeSet<u32>,
        keep: u32,
        drop: u32,
    ) -> Result<(), DataplaneError> {
        if !local_prefs.contains(&keep) {
            self.rule("add", &Self::local_rule(keep))?;
        }
        if local_prefs.contains(&drop) {
            self.rule("del", &Self::local_rule(drop))?;
        }
        Ok(())
    }

    fn flush_table(&mut self, table: u32) -> Result<(), DataplaneError> {
        self.rt()?
            .flush_table(table)
            .map_err(|e| op_err(format!("flushing routing table {table}"), e))
    }

    fn replace_route(&mut self, route: &Route) -> Result<(), DataplaneError> {
        self.rt()?
            .replace_route(route)
            .map_err(|e| op_err(format!("setting route `{}`", route.ip_args().join(" ")), e))
    }

    fn nft_apply(&self, op: &str, script: &str) -> Result<(), DataplaneError> {
        self.run(op, &Self::argv(&["nft", "-f", "-"]), Some(script))
            .map(|_| ())
    }

    /// Reads the table back: after a non-idle apply the `director` chain must exist.
    /// Reads back what the apply left: our chains gone (idle), or our `director` chain there.
    /// `list chains` is the one listing nft 1.0.6 answers without fetching every set element
    /// (`list table`, `list chain` and even `list tables` do: seconds at 100,000 pins).
    fn verify(&self, idle: bool) -> Result<(), DataplaneError> {
        let op = format!("verifying nft table ip {TABLE}");
        let json = self.run(&op, &Self::argv(&["nft", "-j", "list", "chains"]), None)?;
        let v: Value = serde_json::from_str(&json)
            .map_err(|e| op_err(op.clone(), format!("unreadable JSON: {e}")))?;
        let ours: Vec<&str> = v["nftables"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["chain"]["family"] == "ip" && o["chain"]["table"] == TABLE)
                    .filter_map(|o| o["chain"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        match (idle, ours.contains(&"director")) {
            (true, _) if !ours.is_empty() => Err(op_err(
                op,
                "still present after deleting it; another process may be re-creating it",
            )),
            (false, false) => Err(op_err(op, "chain director missing after apply")),
            _ => Ok(()),
        }
    }
}

/// Our rules (prefs [`FWMARK_RULE_PREF`], [`BACKEND_RULE_PREF`]) among the listed ones, and
/// the preferences at which the `local` rule sits.
pub(crate) fn ours(listed: &[Listed]) -> (Vec<Rule>, BTreeSet<u32>) {
    let mut rules = Vec::new();
    let mut local = BTreeSet::new();
    for l in listed {
        match l {
            Listed::Local(pref) => {
                local.insert(*pref);
            }
            Listed::Shaped(
                r @ Rule {
                    selector: Selector::FwMark(_),
                    pref,
                    ..
                },
            ) if *pref == FWMARK_RULE_PREF => rules.push(r.clone()),
            Listed::Shaped(
                r @ Rule {
                    selector: Selector::FromTcpSport { .. },
                    pref,
                    ..
                },
            ) if *pref == BACKEND_RULE_PREF => rules.push(r.clone()),
            _ => {}
        }
    }
    (rules, local)
}

impl Dataplane for NftDataplane {
    fn apply(&mut self, d: &Desired) -> Result<(), DataplaneError> {
        let mut script = plan(d)?;
        let scanning = matches!(d.role, Role::Scanning { .. });
        if scanning && !self.scanning {
            // Starts scanning: its own pins (as a director, or from before a restart) go.
            script.push_str(&flush_pins());
        }
        let routing = routing_plan(d);
        let host = host_plan(d);
        self.vip = Some(d.vip);

        for (k, v) in &host.sysctls {
            if !self.saved_sysctls.contains_key(k) {
                let old = self.sysctl_get(k)?;
                self.saved_sysctls.insert(k.clone(), old);
            }
            self.sysctl_set(k, v)?;
        }
        self.vip_on_lo(d.vip, host.vip_on_lo)?;

        let (current, local_prefs) = self.current_rules()?;
        for route in &routing.routes {
            self.replace_route(route)?;
        }
        for r in routing.rules.iter().filter(|r| !current.contains(r)) {
            self.rule("add", r)?;
        }
        if routing.local_moved {
            self.place_local(&local_prefs, LOCAL_RULE_PREF, 0)?;
        }

        // A new director's replicated pins go in before any rule can pin their clients
        // anew: the table and maps first, then one netlink batch, then the rules. Staged
        // pins are there already (their void ones the rules ignore per packet; the worker
        // deletes them once the VIP is out: `sticky_void`).
        if let Role::Director(dir) = &d.role {
            let pins = preload_pins(dir);
            if !pins.is_empty() {
                if !self.table_ready {
                    self.nft_apply(&format!("creating nft table ip {TABLE}"), &preamble())?;
                }
                let timeout_ms = u64::from(dir.sticky_idle_s) * 1000;
                let t = Instant::now();
                match self
                    .sock()?
                    .apply(TABLE, "sticky", Op::Add { timeout_ms }, &pins)
                {
                    Ok(()) => log::info!(
                        "loaded {} replicated pins in {} ms",
                        pins.len(),
                        t.elapsed().as_millis()
                    ),
                    // Not fatal: those clients follow the bucket table instead.
                    Err(e) => log::warn!("loading {} replicated pins: {e}", pins.len()),
                }
            }
        }
        let op = match &d.role {
            Role::Idle => format!("deleting nft table ip {TABLE}"),
            _ => format!("loading nft table ip {TABLE}"),
        };
        let t = Instant::now();
        self.table_ready = false;
        self.scanning = false;
        self.nft_apply(&op, &script)?;
        self.table_ready = !matches!(d.role, Role::Idle);
        self.scanning = scanning;
        let nft_ms = t.elapsed().as_millis();
        let t = Instant::now();
        self.verify(matches!(d.role, Role::Idle))?;
        log::debug!(
            "nft table loaded in {nft_ms} ms, verified in {} ms",
            t.elapsed().as_millis()
        );

        // Only now that no packet is marked for them: stale rules and tables go.
        if !routing.local_moved {
            self.place_local(&local_prefs, 0, LOCAL_RULE_PREF)?;
        }
        let keep_tables: BTreeSet<u32> = routing.routes.iter().map(|r| r.table).collect();
        for r in current.iter().filter(|r| !routing.rules.contains(r)) {
            self.rule("del", r)?;
            if !keep_tables.contains(&r.table) {
                self.flush_table(r.table)?;
            }
        }
        Ok(())
    }

    fn teardown(&mut self) -> Result<(), DataplaneError> {
        let mut errs = Vec::new();
        self.table_ready = false;
        self.scanning = false;
        let script = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
        if let Err(e) = self.nft_apply(&format!("deleting nft table ip {TABLE}"), &script) {
            errs.push(e);
        }
        match self.current_rules() {
            Ok((rules, local_prefs)) => {
                // The local rule first: nothing may be left without local delivery.
                if let Err(e) = self.place_local(&local_prefs, 0, LOCAL_RULE_PREF) {
                    errs.push(e);
                }
                let tables: BTreeSet<u32> = rules.iter().map(|r| r.table).collect();
                for r in &rules {
                    if let Err(e) = self.rule("del", r) {
                        errs.push(e);
                    }
                }
                for t in tables {
                    if let Err(e) = self.flush_table(t) {
                        errs.push(e);
                    }
                }
            }
            Err(e) => errs.push(e),
        }
        if let Some(vip) = self.vip
            && let Err(e) = self.vip_on_lo(vip, false)
        {
            errs.push(e);
        }
        for (k, v) in std::mem::take(&mut self.saved_sysctls) {
            if let Err(e) = self.sysctl_set(&k, &v) {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Teardown(errs))
        }
    }

    fn read_pins(&mut self, reads: &PinReads) -> Result<PinsRead, DataplaneError> {
        let map = |e: String| {
            op_err(
                format!("reading the sticky maps of nft table ip {TABLE}"),
                e,
            )
        };
        let sock = self.sock()?;
        let mut out = PinsRead::default();
        if reads.fresh {
            out.fresh = sock.dump(TABLE, "fresh").map_err(map)?.0;
        }
        if !reads.lookup.is_empty() {
            (out.found, out.missing) = sock.get(TABLE, "sticky", &reads.lookup).map_err(map)?;
        }
        if reads.full {
            out.full = Some(sock.dump(TABLE, "sticky").map_err(map)?.0);
        }
        Ok(out)
    }

    fn delete_pins(&mut self, pins: &[StickyEntry]) -> Result<(), DataplaneError> {
        if pins.is_empty() {
            return Ok(());
        }
        let sock = self.sock()?;
        // From `fresh` too: a stale entry there would keep the client's next pin from being
        // noted (`add` leaves an existing element alone).
        let _ = sock.delete_present(TABLE, "fresh", pins);
        let n = sock.delete_present(TABLE, "sticky", pins).map_err(|e| {
            op_err(
                format!("deleting {} void pins from ip {TABLE} sticky", pins.len()),
                e,
            )
        })?;
        log::debug!("deleted {n} void pins");
        Ok(())
    }

    fn stage_pins(&mut self, stage: &PinStage) -> Result<(), DataplaneError> {
        let op = || {
            format!(
                "staging {} pins (and {} removals) in ip {TABLE} sticky",
                stage.upserts.len(),
                stage.removed.len()
            )
        };
        if !self.scanning {
            return Err(op_err(op(), "this node's table is not a scanning node's"));
        }
        if stage.is_empty() {
            return Ok(());
        }
        let sock = self.sock()?;
        // `add` leaves an existing element (its node and its expiry) alone: a changed or
        // refreshed pin is deleted first.
        let mut keys = stage.removed.clone();
        keys.extend_from_slice(&stage.upserts);
        sock.delete_present(TABLE, "sticky", &keys)
            .map_err(|e| op_err(op(), e))?;
        sock.apply(
            TABLE,
            "sticky",
            Op::Add {
                timeout_ms: stage.timeout_ms,
            },
            &stage.upserts,
        )
        .map_err(|e| op_err(op(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_are_the_fwmark_and_backend_rules_at_our_prefs() {
        let fw = Rule {
            pref: FWMARK_RULE_PREF,
            selector: Selector::FwMark(0x0a58_0002),
            table: 173_539_330,
        };
        let back = Rule {
            pref: BACKEND_RULE_PREF,
            selector: Selector::FromTcpSport {
                from: Ipv4Addr::new(10, 88, 0, 2),
                sport: 3128,
            },
            table: 173_539_329,
        };
        // An administrator's fwmark rule at another preference is not ours.
        let theirs = Rule {
            pref: 300,
            selector: Selector::FwMark(1),
            table: 7,
        };
        let listed = [
            Listed::Shaped(fw.clone()),
            Listed::Shaped(back.clone()),
            Listed::Local(200),
            Listed::Shaped(theirs),
            Listed::Other,
        ];
        assert_eq!(ours(&listed), (vec![fw, back], BTreeSet::from([200])));
        assert_eq!(ours(&[]), (vec![], BTreeSet::new()));
    }

    #[test]
    fn a_command_that_hangs_is_killed_and_named() {
        let dp = NftDataplane::new(NftOptions {
            wrap: vec![],
            timeout: Duration::from_millis(200),
            netns: None,
        });
        let e = dp
            .run(
                "waiting for sleep",
                &NftDataplane::argv(&["sleep", "5"]),
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("waiting for sleep: `sleep 5` did not finish"),
            "{e}"
        );
        let e = dp
            .run(
                "running false",
                &NftDataplane::argv(&["sh", "-c", "echo oops >&2; exit 3"]),
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("oops") && e.contains("sh -c"), "{e}");
    }
}
