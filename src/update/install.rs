//! `proxyha update install`: the I/O shell that writes a verified bundle into the inactive
//! slot in RAUC's order, which survives a power loss at any point:
//!
//! 1. read and verify the whole bundle once (signature, board, version, sizes, every image's
//!    SHA-256) — a refused bundle writes nothing (stdin is spooled to a temporary file
//!    first, so it can be read twice);
//! 2. one write of the environment block: the target slot not bootable;
//! 3. read the bundle again, streaming: the root image to the slot partition while it is
//!    hashed, then fsync, drop the cache, read it back and compare the hash; kernel and
//!    initramfs to the ESP under new names (fsync, read back), then renamed and the
//!    directory fsynced;
//! 4. one write of the whole environment block: the target first in `ORDER`, `<S>_OK=1
//!    <S>_TRY=0`, and the trial markers.
//!
//! A failure anywhere leaves the running slot and the boot order as they were (after step
//! 2 the target is merely not bootable), with an error naming the object.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::bundle::{self, Sink, Verified};
use super::keyring::Keyring;
use super::layout::Layout;
use super::manifest::{Image, Manifest, Target};
use super::slots::{self, Slot};
use super::store;
use super::version::{self, Version};

/// What `install` needs to know besides the bundle.
pub struct Context<'a> {
    pub layout: &'a Layout,
    pub keys: &'a Keyring,
    /// `[control] state_dir`: the failure record.
    pub state_dir: &'a Path,
    /// This binary's version.
    pub running: &'a str,
    /// `[update] health_timeout_s`, armed into the trial.
    pub timeout_s: u32,
    pub allow_downgrade: bool,
    pub force: bool,
}

/// The board this machine is (`VARIANT_ID` in the root slot's `/etc/os-release`).
pub fn board(layout: &Layout) -> Result<String, String> {
    let p = layout.path("/etc/os-release");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VARIANT_ID="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{}: no VARIANT_ID (the board id)", p.display()))
}

/// The refusals that need only the manifest and this machine's facts (no I/O).
pub fn check_manifest(
    m: &Manifest,
    board: &str,
    running: &str,
    record: &store::Record,
    allow_downgrade: bool,
    force: bool,
) -> Result<(), String> {
    if m.compatible != board {
        return Err(format!("for board {}, this is {board}", m.compatible));
    }
    if let Ok(r) = Version::parse(running)
        && version::compare(&m.version, &r) != std::cmp::Ordering::Greater
        && !allow_downgrade
    {
        return Err(format!(
            "version {} is not newer than the running {running}; --allow-downgrade installs it anyway",
            m.version
        ));
    }
    if let Some(f) = record.has_failed(m.version.as_str())
        && !force
    {
        return Err(format!(
            "version {} failed its health check here before (slot {}, {} tries; back on {}); \
             --force installs it again",
            f.version, f.slot, f.tries, f.back_on
        ));
    }
    Ok(())
}

/// A file or a block device's size.
fn device_size(p: &Path) -> io::Result<u64> {
    File::open(p)?.seek(SeekFrom::End(0))
}

/// The ESP's free bytes.
fn free_bytes(p: &Path) -> Result<u64, String> {
    let s = nix::sys::statvfs::statvfs(p).map_err(|e| format!("statvfs {}: {e}", p.display()))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Pass 1: refusals before anything is written.
struct Check<'c> {
    board: &'c str,
    ctx: &'c Context<'c>,
    record: &'c store::Record,
    slot_dev: &'c Path,
    esp: &'c Path,
}

impl Sink for Check<'_> {
    fn manifest(&mut self, m: &Manifest, _key: &str) -> Result<(), String> {
        let c = self.ctx;
        check_manifest(
            m,
            self.board,
            c.running,
            self.record,
            c.allow_downgrade,
            c.force,
        )?;
        let root = m.image(Target::Root).map_or(0, |i| i.size);
        let cap = device_size(self.slot_dev)
            .map_err(|e| format!("slot device {}: {e}", self.slot_dev.display()))?;
        if root > cap {
            return Err(format!(
                "image for the root slot is {root} bytes, larger than the slot ({cap} bytes at {})",
                self.slot_dev.display()
            ));
        }
        let esp_need: u64 = m
            .images
            .iter()
            .filter(|i| i.target != Target::Root)
            .map(|i| i.size)
            .sum();
        let free = free_bytes(self.esp)?;
        if esp_need > free {
            return Err(format!(
                "kernel and initramfs need {esp_need} bytes on the ESP, {free} are free; remove \
                 *.update files or old files from {}",
                self.esp.display()
            ));
        }
        Ok(())
    }
    fn data(&mut self, _: &Image, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn verified(&mut self, _: &Image) -> io::Result<()> {
        Ok(())
    }
}

/// Pass 2: writes each image to its target as it streams.
struct Writer<'w> {
    slot_dev: &'w Path,
    kernel: PathBuf,
    initramfs: PathBuf,
    open: Option<(File, PathBuf, Sha256)>,
    progress: Progress,
    /// ESP files written under their new names, renamed at the end.
    staged: Vec<(PathBuf, PathBuf)>,
}

fn staged_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

impl Writer<'_> {
    fn target_path(&self, t: Target) -> PathBuf {
        match t {
            Target::Root => self.slot_dev.to_path_buf(),
            Target::Kernel => staged_name(&self.kernel),
            Target::Initramfs => staged_name(&self.initramfs),
        }
    }
}

impl Sink for Writer<'_> {
    fn manifest(&mut self, _: &Manifest, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn data(&mut self, image: &Image, chunk: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            let path = self.target_path(image.target);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = match image.target {
                // A partition: written from its first byte, never truncated.
                Target::Root => std::fs::OpenOptions::new().write(true).open(&path),
                _ => File::create(&path),
            }
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
            self.progress.start(&image.name, image.size);
            self.open = Some((file, path, Sha256::new()));
        }
        if let Some((f, path, hash)) = self.open.as_mut() {
            f.write_all(chunk).map_err(|e| {
                io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
            })?;
            hash.update(chunk);
        }
        self.progress.advance(chunk.len() as u64);
        Ok(())
    }

    fn verified(&mut self, image: &Image) -> io::Result<()> {
        let Some((f, path, hash)) = self.open.take() else {
            return Ok(());
        };
        self.progress.done();
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        f.sync_all().map_err(|e| ctx("fsync", e))?;
        // What we wrote must be what we hashed, and what the disk returns must be it too:
        // drop the cached pages so the read-back comes from the device.
        if hash.finalize().as_slice() != image.sha256 {
            return Err(io::Error::other(format!(
                "image {}: the bundle changed while it was installed (sha256 mismatch on the second read)",
                image.name
            )));
        }
        let _ = nix::fcntl::posix_fadvise(
            f.as_fd(),
            0,
            image.size as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        drop(f);
        let back = read_back(&path, image.size).map_err(|e| ctx("reading back", e))?;
        if back != image.sha256 {
            return Err(io::Error::other(format!(
                "{} ({}): read back a different sha256 than written; the disk may be failing",
                path.display(),
                image.target
            )));
        }
        if image.target != Target::Root {
            let final_path = match image.target {
                Target::Kernel => self.kernel.clone(),
                _ => self.initramfs.clone(),
            };
            self.staged.push((path, final_path));
        }
        Ok(())
    }
}

fn read_back(p: &Path, len: u64) -> io::Result<[u8; 32]> {
    let mut f = File::open(p)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shorter than written",
            ));
        }
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hash.finalize().into())
}

/// Bytes, total and rate on a terminal (stderr); nothing otherwise.
struct Progress {
    tty: bool,
    name: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: io::stderr().is_terminal(),
            name: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
        }
    }
    fn start(&mut self, name: &str, total: u64) {
        self.name = name.to_string();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
    }
    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.tty && self.last.elapsed().as_millis() >= 200 {
            self.last = Instant::now();
            self.print();
        }
    }
    fn print(&self) {
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let rate = mib(self.done) / self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r  {}: {:.1} / {:.1} MiB, {:.1} MiB/s   ",
            self.name,
            mib(self.done),
            mib(self.total),
            rate
        );
    }
    fn done(&mut self) {
        if self.tty {
            self.print();
            eprintln!();
        }
    }
}

/// One line per step: on stdout for the administrator and in the log.
fn step(text: String) {
    println!("{text}");
    log::info!("{text}");
}

/// Where the bundle is read from.
pub enum Source {
    File(PathBuf),
    /// Standard input, spooled to a temporary file so it can be verified before writing.
    Stdin,
}

/// A spooled copy of stdin, removed on drop.
struct Spool(PathBuf);
impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spool_stdin(dir: &Path) -> Result<Spool, String> {
    let p = dir.join(format!("proxyha-update-{}.spool", std::process::id()));
    let spool = Spool(p.clone());
    let mut f = File::create(&p).map_err(|e| format!("spooling stdin to {}: {e}", p.display()))?;
    io::copy(&mut io::stdin().lock(), &mut f)
        .map_err(|e| format!("spooling stdin to {}: {e}", p.display()))?;
    f.sync_all().map_err(|e| format!("spooling stdin: {e}"))?;
    Ok(spool)
}

/// What an install did.
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    pub bytes: u64,
}

/// Installs a bundle into the inactive slot (see the module doc for the order).
pub fn install(ctx: &Context<'_>, source: Source) -> Result<Installed, String> {
    let layout = ctx.layout;
    let booted = layout
        .booted()
        .ok_or("not an A/B appliance: no proxyha.slot= on the kernel command line")?;
    let board = board(layout)?;
    let _lock = lock(layout)?;
    let (env, recreated) = match layout.read_env() {
        Ok(env) => (env, false),
        Err(e) => {
            step(format!("update: {e}; recreating it (slot {booted} first)"));
            let env = slots::recreate(booted, ctx.running).map_err(|e| e.to_string())?;
            (env, true)
        }
    };
    let target = slots::may_install(&env, booted)?;
    let record = store::load(ctx.state_dir)?;
    let slot_dev = layout.slot_device(target)?;
    let esp = layout.esp();

    let spool;
    let path = match source {
        Source::File(p) => p,
        Source::Stdin => {
            spool = spool_stdin(&std::env::temp_dir())?;
            spool.0.clone()
        }
    };
    let open = || File::open(&path).map_err(|e| format!("{}: {e}", path.display()));
    let fail = |e: bundle::BundleError| format!("{}: {e}", path.display());

    // Pass 1: nothing is written unless all of it verifies.
    let mut check = Check {
        board: &board,
        ctx,
        record: &record,
        slot_dev: &slot_dev,
        esp: &esp,
    };
    let v: Verified =
        bundle::read(io::BufReader::new(open()?), ctx.keys, &mut check).map_err(fail)?;
    step(format!(
        "update: {} verified: version {} for {}, signed by {}, {} bytes",
        path.display(),
        v.manifest.version,
        v.manifest.compatible,
        v.key,
        v.bytes
    ));

    let _esp_rw = layout.esp_writable()?;
    let begun = slots::install_begin(&env, target).map_err(|e| e.to_string())?;
    if begun != env || recreated {
        layout.write_env(&begun)?;
    }
    step(format!(
        "update: slot {target} marked not bootable; writing it ({})",
        slot_dev.display()
    ));

    let mut writer = Writer {
        slot_dev: &slot_dev,
        kernel: layout.kernel(target),
        initramfs: layout.initramfs(target),
        open: None,
        progress: Progress::new(),
        staged: Vec::new(),
    };
    let result = bundle::read(io::BufReader::new(open()?), ctx.keys, &mut writer).map_err(fail);
    if let Err(e) = result {
        for (staged, _) in &writer.staged {
            let _ = std::fs::remove_file(staged);
        }
        return Err(format!(
            "{e}; slot {target} stays not bootable, slot {booted} boots as before"
        ));
    }
    step(format!(
        "update: root slot {target} written and read back ({} bytes, sha256 ok)",
        v.manifest.image(Target::Root).map_or(0, |i| i.size)
    ));
    for (staged, final_path) in &writer.staged {
        std::fs::rename(staged, final_path).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                staged.display(),
                final_path.display()
            )
        })?;
    }
    let dir = layout
        .kernel(target)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("fsync {}: {e}", dir.display()))?;
    step(format!(
        "update: kernel and initramfs of slot {target} written to {}",
        dir.display()
    ));

    let _ = std::fs::remove_file(store::trial_log(ctx.state_dir));
    let done = slots::install_commit(&begun, target, v.manifest.version.as_str(), ctx.timeout_s)
        .map_err(|e| e.to_string())?;
    layout.write_env(&done)?;
    step(format!(
        "update: {} installed in slot {target}; it boots next as a trial (healthy within {} s, \
         else back to {} in slot {booted} after {} tries)",
        v.manifest.version,
        ctx.timeout_s,
        ctx.running,
        slots::TRIES
    ));
    Ok(Installed {
        slot: target,
        version: v.manifest.version.to_string(),
        bytes: v.bytes,
    })
}

/// One install at a time.
fn lock(layout: &Layout) -> Result<nix::fcntl::Flock<File>, String> {
    let p = layout.path("/run/proxyha/update.lock");
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let f = File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| "another proxyha update install is running".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(crate::update::bundle::tests::MANIFEST).unwrap()
    }

    #[test]
    fn refusals_name_the_rule_and_the_way_out() {
        let m = manifest();
        let none = store::Record::default();
        assert_eq!(
            check_manifest(&m, "generic-x86-64", "0.1.0", &none, false, false),
            Ok(())
        );
        assert_eq!(
            check_manifest(&m, "rpi4", "0.1.0", &none, false, false).unwrap_err(),
            "for board generic-x86-64, this is rpi4"
        );
        let e = check_manifest(&m, "generic-x86-64", "0.2.0", &none, false, false).unwrap_err();
        assert!(
            e.contains("not newer than the running 0.2.0; --allow-downgrade"),
            "{e}"
        );
        assert!(check_manifest(&m, "generic-x86-64", "0.3.0", &none, true, false).is_ok());
        let failed = store::Record {
            failed: vec![store::Failure {
                version: "0.2.0".into(),
                slot: "B".into(),
                tries: 3,
                at: 0,
                reasons: vec![],
                back_on: "0.1.0".into(),
            }],
        };
        let e = check_manifest(&m, "generic-x86-64", "0.1.0", &failed, false, false).unwrap_err();
        assert!(
            e.contains("failed its health check here before") && e.contains("--force"),
            "{e}"
        );
        assert!(check_manifest(&m, "generic-x86-64", "0.1.0", &failed, false, true).is_ok());
    }
}
