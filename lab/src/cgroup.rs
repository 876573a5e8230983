//! A CPU cgroup per lab node: namespaces share `/proc/stat`, so a node whose load must be
//! its own (a CPU hog "in its namespace") runs in a cgroup with a CPU quota, which is how
//! proxyha measures a node that is a container (`load::cgroup`).

use std::io;
use std::path::PathBuf;

use super::{Lab, lock};
use proxyha::load::cgroup::{Mount, parse_mountinfo};

/// A cgroup with a CPU quota, in every hierarchy that proxyha reads (v1 `cpu` and
/// `cpuacct`, or v2). Removed by the lab's teardown, after its processes.
#[derive(Debug, Clone)]
pub struct CpuCgroup {
    /// One directory per hierarchy the cgroup was made in.
    dirs: Vec<PathBuf>,
}

const PERIOD_US: u64 = 100_000;

impl CpuCgroup {
    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for d in &self.dirs {
            std::fs::write(d.join("cgroup.procs"), pid.to_string()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("moving pid {pid} into {}: {e}", d.display()),
                )
            })?;
        }
        Ok(())
    }
}

fn write(path: PathBuf, text: &str) -> io::Result<()> {
    std::fs::write(&path, text).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {text:?} to {}: {e}", path.display()),
        )
    })
}

impl Lab {
    /// Makes cgroup `<prefix>-<name>` limited to `cpus` CPUs.
    pub fn cpu_cgroup(&self, name: &str, cpus: f64) -> io::Result<CpuCgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let mounts = parse_mountinfo(&mountinfo);
        let v1 = |c: &str| -> Option<&Mount> {
            mounts
                .iter()
                .find(|m| !m.v2 && m.root == "/" && m.controllers.iter().any(|x| x == c))
        };
        let leaf = format!("{}-{name}", self.shared.prefix);
        let quota = ((cpus * PERIOD_US as f64).round() as u64).max(1000);
        let mut dirs = Vec::new();
        let mut make = |dir: PathBuf| -> io::Result<PathBuf> {
            std::fs::create_dir(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating cgroup {}: {e}", dir.display()))
            })?;
            lock(&self.shared.cgroups).push(dir.clone());
            dirs.push(dir.clone());
            Ok(dir)
        };
        if let (Some(cpu), Some(acct)) = (v1("cpu"), v1("cpuacct")) {
            let d = make(cpu.mount_point.join(&leaf))?;
            write(d.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
            write(d.join("cpu.cfs_quota_us"), &quota.to_string())?;
            if acct.mount_point != cpu.mount_point {
                make(acct.mount_point.join(&leaf))?;
            }
        } else if let Some(m) = mounts.iter().find(|m| m.v2 && m.root == "/") {
            // The root's subtree_control must offer the cpu controller to its children.
            write(m.mount_point.join("cgroup.subtree_control"), "+cpu")?;
            let d = make(m.mount_point.join(&leaf))?;
            write(d.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup hierarchy with the cpu controller is mounted (/proc/self/mountinfo)",
            ));
        }
        Ok(CpuCgroup { dirs })
    }
}
