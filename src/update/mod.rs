//! A/B updates of the appliance: signed bundles, installation into the inactive slot, and the
//! health-gated commit or rollback of a trial boot.
//!
//! Pure parts (no I/O, time and input as arguments): [`version`] (ordering of versions),
//! [`manifest`] (the bundle's signed table of contents), [`grubenv`] (GRUB's environment
//! block), [`slots`] (what the environment block means: slot states, what boots next, the
//! decisions at start, install and mark-good/bad), [`health`] (the trial boot's health
//! criterion). Readers over `std::io::Read`: [`bundle`] (the tar stream, verified as it is
//! read) and [`keyring`] (trusted minisign public keys). The I/O shell: [`layout`] (where
//! the slots, the ESP and the records are on this machine), [`install`] (writes a slot in
//! RAUC's power-safe order), [`store`] (what the data partition remembers: failed versions).

pub mod boot;
pub mod bundle;
pub mod command;
pub mod grubenv;
pub mod health;
pub mod install;
pub mod keyring;
pub mod layout;
pub mod manifest;
pub mod report;
pub mod slots;
pub mod store;
pub mod version;

/// The version this binary reports (`proxyha version`) and compares bundles with:
/// `PROXYHA_VERSION` at build time (release and test builds of other versions), else the
/// crate's version.
pub const VERSION: &str = match option_env!("PROXYHA_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
