//! Where the A/B machinery is on this machine: the booted slot (kernel command line), the
//! ESP (`/boot`: grubenv, per-slot kernel and initramfs), the root slot partitions (by GPT
//! partition name `rootA`/`rootB`, found through sysfs as the initramfs does), the running
//! slot's keyring. Every path hangs off one root, `/` on the appliance; tests point
//! `PROXYHA_UPDATE_ROOT` at a directory with files standing in for the devices.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::grubenv::{BLOCK_SIZE, EnvBlock};
use super::slots::Slot;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// `/`, or `PROXYHA_UPDATE_ROOT` (tests).
    pub fn system() -> Layout {
        let root = std::env::var_os("PROXYHA_UPDATE_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Layout { root }
    }

    pub fn at(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// `p` (an absolute path on the appliance) on this layout.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The booted slot; `None` off the appliance (no `proxyha.slot=` on the command line).
    pub fn booted(&self) -> Option<Slot> {
        let text = std::fs::read_to_string(self.path("/proc/cmdline")).ok()?;
        Slot::from_cmdline(&text)
    }

    pub fn esp(&self) -> PathBuf {
        self.path("/boot")
    }

    pub fn grubenv(&self) -> PathBuf {
        self.esp().join("EFI/BOOT/grubenv")
    }

    pub fn kernel(&self, s: Slot) -> PathBuf {
        self.esp().join(s.letter()).join("vmlinuz")
    }

    pub fn initramfs(&self, s: Slot) -> PathBuf {
        self.esp().join(s.letter()).join("initrd.img")
    }

    pub fn keys(&self) -> PathBuf {
        self.path(super::keyring::DEFAULT_DIR)
    }

    /// The block device of a root slot: the partition whose GPT name is `root<S>`.
    pub fn slot_device(&self, s: Slot) -> Result<PathBuf, String> {
        let want = format!("PARTNAME=root{s}");
        let dir = self.path("/sys/class/block");
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("uevent")) else {
                continue;
            };
            if text.lines().any(|l| l == want)
                && let Some(dev) = text.lines().find_map(|l| l.strip_prefix("DEVNAME="))
            {
                return Ok(self.path("/dev").join(dev));
            }
        }
        Err(format!(
            "no partition named root{s} (GPT partition name); is this the appliance's disk?"
        ))
    }

    /// The environment block; `Err` names the file and says it will be recreated.
    pub fn read_env(&self) -> Result<EnvBlock, String> {
        let p = self.grubenv();
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        EnvBlock::parse(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Writes the whole block in place (same 1024 bytes, no truncation: GRUB reads it by its
    /// sectors) and fsyncs; a missing or wrong-sized file is recreated atomically instead.
    pub fn write_env(&self, env: &EnvBlock) -> Result<(), String> {
        let p = self.grubenv();
        let bytes = env.encode().map_err(|e| format!("{}: {e}", p.display()))?;
        let in_place = std::fs::metadata(&p).is_ok_and(|m| m.len() == BLOCK_SIZE as u64);
        let r = if in_place {
            (|| {
                let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
                f.seek(SeekFrom::Start(0))?;
                f.write_all(&bytes)?;
                f.sync_all()
            })()
        } else {
            crate::daemon::write_atomic(&p, &bytes)
        };
        r.map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// [`Layout::write_env`] with the ESP writable for the moment (one write on its own).
    pub fn save_env(&self, env: &EnvBlock) -> Result<(), String> {
        let _rw = self.esp_writable()?;
        self.write_env(env)
    }

    /// Makes the ESP writable while the guard lives (the appliance mounts it read-only).
    pub fn esp_writable(&self) -> Result<EspGuard, String> {
        if !self.is_system() || !mounted_ro(&self.esp()) {
            return Ok(EspGuard { remount: None });
        }
        remount(&self.esp(), "rw")?;
        Ok(EspGuard {
            remount: Some(self.esp()),
        })
    }
}

/// Puts the ESP back to read-only when dropped.
pub struct EspGuard {
    remount: Option<PathBuf>,
}

impl Drop for EspGuard {
    fn drop(&mut self) {
        if let Some(p) = &self.remount {
            // The ESP stays writable until the next boot if this fails; nothing is lost.
            if let Err(e) = remount(p, "ro") {
                log::warn!("{e}");
            }
        }
    }
}

fn mounted_ro(mountpoint: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mountpoint.to_string_lossy();
    text.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 5 && f[4] == want && f[5].split(',').any(|o| o == "ro")
    })
}

fn remount(p: &Path, mode: &str) -> Result<(), String> {
    let out = Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(p)
        .output()
        .map_err(|e| format!("mount -o remount,{mode} {}: {e}", p.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -o remount,{mode} {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
