//! CPU load of a node that is a container: the cgroup's usage against its CPU quota.
//!
//! On the appliance proxyha runs in the root cgroup and the node's load is `/proc/stat`.
//! When proxyha runs in a cgroup with a CPU quota (a container next to the proxy it
//! guards, or each node of the network-namespace lab, where every namespace sees the
//! same `/proc/stat`), the machine's load says nothing about the node: the node is the
//! cgroup, its CPU count is its quota, and its utilisation is `Δusage / (Δt × quota)`.
//!
//! Everything here is sans-IO: the parsers take the text of `/proc/self/cgroup`,
//! `/proc/self/mountinfo` and the cgroup files; [`resolve`] takes a reader function.
//! Both cgroup v1 (`cpu` + `cpuacct` controllers, mounted together or apart) and v2
//! (`cpu.max`, `cpu.stat`) are understood; the smallest quota on the path up to the
//! mount root wins, as in the kernel.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/self/cgroup`; malformed lines are skipped.
pub fn parse_self_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let controllers = it.next()?;
            let path = it.next()?;
            if !path.starts_with('/') {
                return None;
            }
            Some(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// A cgroup filesystem from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The cgroup path this mount shows at its mount point (`/` unless bind-mounted).
    pub root: String,
    pub mount_point: PathBuf,
    /// cgroup2, else a v1 hierarchy with `controllers`.
    pub v2: bool,
    pub controllers: Vec<String>,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo`; other lines are skipped.
/// Format (proc(5)): `id parent maj:min root mount-point options [optional…] - fstype
/// source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (root, mount_point) = (*left.get(3)?, *left.get(4)?);
            let fstype = *right.first()?;
            let super_opts = right.get(2).copied().unwrap_or("");
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = if v2 {
                Vec::new()
            } else {
                super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_string)
                    .collect()
            };
            Some(Mount {
                root: unescape(root),
                mount_point: PathBuf::from(unescape(mount_point)),
                v2,
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` under `mount`, or `None` when the mount does not show
/// it (a bind mount of another subtree).
fn dir_of(mount: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path.trim_start_matches('/')
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    })
}

/// How a cgroup's usage counter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// v1 `cpuacct.usage`: nanoseconds.
    UsageNs,
    /// v2 `cpu.stat`: the `usage_usec` line.
    StatUsec,
}

/// The CPU view of the cgroup proxyha runs in.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupCpu {
    /// The cgroup path, for logs and status (`/proxyha`).
    pub path: String,
    /// The usage counter file.
    pub usage: PathBuf,
    pub counter: Counter,
    /// The quota in CPUs (0.5 = half a CPU).
    pub cpus: f64,
}

impl CgroupCpu {
    /// Cumulative CPU time in microseconds from the text of [`CgroupCpu::usage`].
    pub fn parse_usage_us(&self, text: &str) -> Option<u64> {
        match self.counter {
            Counter::UsageNs => text.trim().parse::<u64>().ok().map(|ns| ns / 1000),
            Counter::StatUsec => text.lines().find_map(|l| {
                l.strip_prefix("usage_usec ")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }),
        }
    }
}

/// v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us` in `dir`; `None` when unlimited.
fn quota_v1(dir: &Path, read: &impl Fn(&Path) -> Option<String>) -> Option<f64> {
    let quota: i64 = read(&dir.join("cpu.cfs_quota_us"))?.trim().parse().ok()?;
    let period: i64 = read(&dir.join("cpu.cfs_period_us"))?.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// v2: `cpu.max` is `max PERIOD` (unlimited) or `QUOTA PERIOD`.
fn quota_v2(dir: &Path, read: &impl Fn(&Path) -> Option<String>) -> Option<f64> {
    let text = read(&dir.join("cpu.max"))?;
    let mut it = text.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next()?.parse().ok()?;
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// The smallest quota on the way from `dir` up to `top` (inclusive).
fn smallest_quota(dir: &Path, top: &Path, quota: impl Fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut best: Option<f64> = None;
    let mut d = Some(dir);
    while let Some(cur) = d {
        if let Some(q) = quota(cur) {
            best = Some(best.map_or(q, |b| b.min(q)));
        }
        if cur == top || !cur.starts_with(top) {
            break;
        }
        d = cur.parent();
    }
    best
}

/// The cgroup CPU view when proxyha's cgroup (or one above it) has a CPU quota; `None`
/// means "read /proc/stat": no quota, no cpu controller, or files we cannot read.
pub fn resolve(
    self_cgroup: &str,
    mountinfo: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<CgroupCpu> {
    let members = parse_self_cgroup(self_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    let has = |m: &Membership, c: &str| m.controllers.iter().any(|x| x == c);
    let v1 = |controller: &str| -> Option<(&Mount, &Membership)> {
        let member = members.iter().find(|m| has(m, controller))?;
        let mount = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))?;
        Some((mount, member))
    };
    if let (Some((cpu_mount, cpu_member)), Some((acct_mount, acct_member))) =
        (v1("cpu"), v1("cpuacct"))
    {
        let dir = dir_of(cpu_mount, &cpu_member.path)?;
        let cpus = smallest_quota(&dir, &cpu_mount.mount_point, |d| quota_v1(d, &read))?;
        let acct = dir_of(acct_mount, &acct_member.path)?;
        let usage = acct.join("cpuacct.usage");
        read(&usage)?;
        return Some(CgroupCpu {
            path: cpu_member.path.clone(),
            usage,
            counter: Counter::UsageNs,
            cpus,
        });
    }
    let member = members.iter().find(|m| m.controllers.is_empty())?;
    let mount = mounts.iter().find(|m| m.v2)?;
    let dir = dir_of(mount, &member.path)?;
    let cpus = smallest_quota(&dir, &mount.mount_point, |d| quota_v2(d, &read))?;
    let usage = dir.join("cpu.stat");
    read(&usage)?;
    Some(CgroupCpu {
        path: member.path.clone(),
        usage,
        counter: Counter::StatUsec,
        cpus,
    })
}

/// Utilisation of a quota between two usage readings `dt_us` apart, in `[0, 1]`.
pub fn utilisation(prev_us: u64, now_us: u64, dt_us: u64, cpus: f64) -> f64 {
    if dt_us == 0 || cpus <= 0.0 {
        return 0.0;
    }
    let used = now_us.saturating_sub(prev_us) as f64;
    (used / (dt_us as f64 * cpus)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    // This build machine: cgroup v1 with cpu and cpuacct mounted apart, plus cgroup2.
    const MOUNTINFO_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const SELF_V1: &str = "\
4:memory:/process_api/93bb
2:cpuacct:/phlab-n3
1:cpu:/phlab-n3
0::/
";
    // Debian 12 with systemd: pure cgroup2.
    const MOUNTINFO_V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> + use<> {
        let map: BTreeMap<PathBuf, String> = entries
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        move |p: &Path| map.get(p).cloned()
    }

    #[test]
    fn v1_split_controllers_give_quota_and_usage_files() {
        let read = files(&[
            ("/sys/fs/cgroup/cpu/phlab-n3/cpu.cfs_quota_us", "150000\n"),
            ("/sys/fs/cgroup/cpu/phlab-n3/cpu.cfs_period_us", "100000\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n"),
            ("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"),
            (
                "/sys/fs/cgroup/cpuacct/phlab-n3/cpuacct.usage",
                "123456789\n",
            ),
        ]);
        let c = resolve(SELF_V1, MOUNTINFO_V1, read).expect("quota found");
        assert_eq!(c.path, "/phlab-n3");
        assert_eq!(c.cpus, 1.5);
        assert_eq!(
            c.usage,
            PathBuf::from("/sys/fs/cgroup/cpuacct/phlab-n3/cpuacct.usage")
        );
        assert_eq!(c.parse_usage_us("123456789\n"), Some(123_456));
    }

    #[test]
    fn v1_combined_mount_and_a_parent_quota_smaller_than_ours() {
        let mi = "30 23 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let me = "3:cpu,cpuacct:/box/proxyha\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/cpu,cpuacct/box/proxyha/cpu.cfs_quota_us",
                "-1",
            ),
            (
                "/sys/fs/cgroup/cpu,cpuacct/box/proxyha/cpu.cfs_period_us",
                "100000",
            ),
            ("/sys/fs/cgroup/cpu,cpuacct/box/cpu.cfs_quota_us", "50000"),
            ("/sys/fs/cgroup/cpu,cpuacct/box/cpu.cfs_period_us", "100000"),
            ("/sys/fs/cgroup/cpu,cpuacct/box/proxyha/cpuacct.usage", "0"),
        ]);
        let c = resolve(me, mi, read).expect("parent quota applies");
        assert_eq!(c.cpus, 0.5);
    }

    #[test]
    fn v2_cpu_max_and_cpu_stat() {
        let me = "0::/system.slice/proxyha.service\n";
        let dir = "/sys/fs/cgroup/system.slice/proxyha.service";
        let read = files(&[
            (&format!("{dir}/cpu.max"), "200000 100000\n"),
            ("/sys/fs/cgroup/system.slice/cpu.max", "max 100000\n"),
            (
                &format!("{dir}/cpu.stat"),
                "usage_usec 9876543\nuser_usec 1\nsystem_usec 2\n",
            ),
        ]);
        let c = resolve(me, MOUNTINFO_V2, read).expect("v2 quota");
        assert_eq!(c.cpus, 2.0);
        assert_eq!(c.counter, Counter::StatUsec);
        assert_eq!(c.parse_usage_us("usage_usec 9876543\n"), Some(9_876_543));
    }

    #[test]
    fn no_quota_root_cgroup_or_unreadable_files_mean_proc_stat() {
        // The appliance: root cgroup, no quota file there.
        assert_eq!(resolve("0::/\n", MOUNTINFO_V2, files(&[])), None);
        // A systemd service without CPUQuota.
        let read = files(&[
            ("/sys/fs/cgroup/system.slice/x/cpu.max", "max 100000\n"),
            ("/sys/fs/cgroup/system.slice/x/cpu.stat", "usage_usec 1\n"),
        ]);
        assert_eq!(resolve("0::/system.slice/x\n", MOUNTINFO_V2, read), None);
        // v1 quota but no cpuacct counter readable.
        let read = files(&[
            ("/sys/fs/cgroup/cpu/phlab-n3/cpu.cfs_quota_us", "100000"),
            ("/sys/fs/cgroup/cpu/phlab-n3/cpu.cfs_period_us", "100000"),
        ]);
        assert_eq!(resolve(SELF_V1, MOUNTINFO_V1, read), None);
        // Garbage never panics.
        for junk in ["", ":::", "x", "0::relative", "\n\n"] {
            assert_eq!(resolve(junk, junk, files(&[])), None);
        }
        assert!(parse_mountinfo("1 2 3\n- - -\n a - cgroup").is_empty());
    }

    #[test]
    fn a_bind_mounted_subtree_maps_paths_below_its_root_only() {
        let m = Mount {
            root: "/lxc/c1".into(),
            mount_point: "/sys/fs/cgroup/cpu".into(),
            v2: false,
            controllers: vec!["cpu".into()],
        };
        assert_eq!(
            dir_of(&m, "/lxc/c1/app"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/app"))
        );
        assert_eq!(
            dir_of(&m, "/lxc/c1"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(dir_of(&m, "/lxc/c10"), None);
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("tail\\04"), "tail\\04");
    }

    #[test]
    fn utilisation_is_usage_over_quota_time() {
        // 0.75 CPU-seconds in 1 s with a 1.5-CPU quota: half busy.
        assert_eq!(utilisation(1_000_000, 1_750_000, 1_000_000, 1.5), 0.5);
        assert_eq!(utilisation(5, 1, 1_000_000, 1.0), 0.0, "counter reset");
        assert_eq!(utilisation(0, 9_000_000, 1_000_000, 1.0), 1.0, "clamped");
        assert_eq!(utilisation(0, 1, 0, 1.0), 0.0);
    }
}
