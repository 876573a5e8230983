//! The `proxyha update …` one-shot commands: each returns the exit code and prints its
//! outcome (errors on stderr, naming the object and the way out).
//! Exit codes: 0 done / valid; 1 refused or invalid (the reason printed); 2 wrong use or
//! not an appliance.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::bundle::{self, VerifyOnly};
use super::install::{self, Context, Source};
use super::keyring::Keyring;
use super::layout::Layout;
use super::{report, slots, store};

fn keyring(layout: &Layout, keys: Option<&Path>) -> Result<Keyring, String> {
    match keys {
        Some(dir) => Keyring::load(dir),
        None => Keyring::load(&layout.keys()),
    }
}

/// `proxyha update verify FILE|- [--keys DIR]`: signature, every image, and on an appliance
/// the board.
pub fn verify(file: &Path, keys: Option<&Path>) -> u8 {
    let layout = Layout::system();
    let ring = match keyring(&layout, keys) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("proxyha: {e}");
            return 2;
        }
    };
    let input: Box<dyn Read> = if file == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(io::BufReader::new(f)),
            Err(e) => {
                eprintln!("proxyha: {}: {e}", file.display());
                return 2;
            }
        }
    };
    // On an appliance the bundle must also be for this board; elsewhere (a build host) any.
    let mut sink = VerifyOnly {
        board: install::board(&layout).ok(),
    };
    match bundle::read(input, &ring, &mut sink) {
        Ok(v) => {
            println!(
                "{}: valid: proxyha {} for {}, signed by {}, {} images, {} bytes",
                file.display(),
                v.manifest.version,
                v.manifest.compatible,
                v.key,
                v.manifest.images.len(),
                v.bytes
            );
            for i in &v.manifest.images {
                println!(
                    "  {:<18} {:>10} bytes  sha256 {}  → {}",
                    i.name,
                    i.size,
                    super::manifest::hex(&i.sha256),
                    i.target
                );
            }
            0
        }
        Err(e) => {
            println!("{}: invalid: {e}", file.display());
            1
        }
    }
}

pub struct InstallArgs {
    pub file: PathBuf,
    pub keys: Option<PathBuf>,
    pub allow_downgrade: bool,
    pub force: bool,
    pub reboot: bool,
    pub state_dir: PathBuf,
    pub timeout_s: u32,
}

/// `proxyha update install FILE|- [--reboot] [--allow-downgrade] [--force]`.
pub fn install(a: &InstallArgs) -> u8 {
    let layout = Layout::system();
    if layout.booted().is_none() {
        eprintln!("proxyha: not an A/B appliance: no proxyha.slot= on the kernel command line");
        return 2;
    }
    let ring = match keyring(&layout, a.keys.as_deref()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("proxyha: {e}");
            return 2;
        }
    };
    let ctx = Context {
        layout: &layout,
        keys: &ring,
        state_dir: &a.state_dir,
        running: super::VERSION,
        timeout_s: a.timeout_s,
        allow_downgrade: a.allow_downgrade,
        force: a.force,
    };
    let source = if a.file == Path::new("-") {
        Source::Stdin
    } else {
        Source::File(a.file.clone())
    };
    match install::install(&ctx, source) {
        Ok(done) => {
            if a.reboot {
                println!(
                    "update: rebooting into slot {} ({})",
                    done.slot, done.version
                );
                log::info!(
                    "update: rebooting into slot {} ({})",
                    done.slot,
                    done.version
                );
                match std::process::Command::new("reboot").status() {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("proxyha: reboot exited with {s}; reboot by hand to apply");
                        return 1;
                    }
                    Err(e) => {
                        eprintln!("proxyha: running reboot: {e}; reboot by hand to apply");
                        return 1;
                    }
                }
            } else {
                println!("reboot to apply (or: proxyha update install FILE --reboot)");
            }
            0
        }
        Err(e) => {
            eprintln!("proxyha: update refused: {e}");
            log::error!("update: refused: {e}");
            1
        }
    }
}

/// The update status, or why there is none.
pub fn status_doc(
    state_dir: &Path,
    missing: Option<Vec<String>>,
) -> Result<report::UpdateStatus, String> {
    let layout = Layout::system();
    let booted = layout
        .booted()
        .ok_or("not an A/B appliance: no proxyha.slot= on the kernel command line")?;
    let env = match layout.read_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("proxyha: {e}; showing the block proxyha run will recreate");
            slots::recreate(booted, super::VERSION).map_err(|e| e.to_string())?
        }
    };
    let record = store::load(state_dir)?;
    Ok(report::build(
        &env,
        booted,
        super::VERSION,
        &record,
        missing,
    ))
}

/// `proxyha update mark-good` / `mark-bad` on the booted slot.
pub fn mark(good: bool) -> u8 {
    let layout = Layout::system();
    let Some(booted) = layout.booted() else {
        eprintln!("proxyha: not an A/B appliance: no proxyha.slot= on the kernel command line");
        return 2;
    };
    let env = match layout.read_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("proxyha: {e}");
            return 1;
        }
    };
    let new = if good {
        slots::mark_good(&env, booted, super::VERSION).map_err(|e| e.to_string())
    } else {
        slots::mark_bad(&env, booted)
    };
    let r = new.and_then(|new| layout.save_env(&new));
    match r {
        Ok(()) => {
            let text = if good {
                format!("update: slot {booted} ({}) marked good", super::VERSION)
            } else {
                format!(
                    "update: slot {booted} ({}) marked bad; slot {} boots next (reboot to apply)",
                    super::VERSION,
                    booted.other()
                )
            };
            println!("{text}");
            log::info!("{text}");
            0
        }
        Err(e) => {
            eprintln!("proxyha: {e}");
            1
        }
    }
}
