//! Trusted public keys: every `*.pub` file (minisign's format) in a directory. The root slot
//! carries its keyring (`/usr/share/proxyha/keys`), so a release can add tomorrow's key while
//! today's still signs: a bundle signed by any key of the running slot's keyring installs.
//! Verification is the `minisign-verify` crate's (Ed25519 by minisign's author); nothing here
//! touches the cryptography.

use std::path::{Path, PathBuf};

use minisign_verify::{Error as MsError, PublicKey, Signature};

/// The running slot's keyring on the appliance.
pub const DEFAULT_DIR: &str = "/usr/share/proxyha/keys";

pub struct Keyring {
    dir: PathBuf,
    keys: Vec<(String, PublicKey)>,
}

/// Why a signature was not accepted; the text is what `update verify` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature file is not in minisign's format")]
    Malformed,
    #[error("bad signature (by key {key}): the manifest was changed after signing")]
    Bad { key: String },
    #[error("signed by an unknown key (not one of the {count} keys in {dir})")]
    UnknownKey { count: usize, dir: String },
    #[error("signed in minisign's legacy mode; sign with minisign 0.8 or later (prehashed)")]
    Legacy,
}

impl Keyring {
    /// Reads every `*.pub` in `dir`; a file that is not a key is an error naming it, and an
    /// empty keyring is an error (nothing could ever verify).
    pub fn load(dir: &Path) -> Result<Keyring, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("keyring {}: {e}; pass --keys DIR", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        paths.sort();
        let mut keys = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("keyring: reading {}: {e}", p.display()))?;
            let key = PublicKey::decode(&text).map_err(|_| {
                format!(
                    "keyring: {} is not a minisign public key (want the two-line .pub file minisign -G writes)",
                    p.display()
                )
            })?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            keys.push((name, key));
        }
        if keys.is_empty() {
            return Err(format!(
                "keyring {} holds no *.pub key; nothing could verify",
                dir.display()
            ));
        }
        Ok(Keyring {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(n, _)| n.as_str())
    }

    /// The name of the key that signed `data`, or why none did.
    pub fn verify(&self, data: &[u8], signature: &str) -> Result<&str, SignatureError> {
        let sig = Signature::decode(signature).map_err(|_| SignatureError::Malformed)?;
        for (name, key) in &self.keys {
            match key.verify(data, &sig, false) {
                Ok(()) => return Ok(name),
                Err(MsError::UnexpectedKeyId) => continue,
                Err(MsError::UnexpectedAlgorithm) => return Err(SignatureError::Legacy),
                Err(_) => return Err(SignatureError::Bad { key: name.clone() }),
            }
        }
        Err(SignatureError::UnknownKey {
            count: self.keys.len(),
            dir: self.dir.display().to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Made with minisign 0.11 (Debian 12): `minisign -G -W -p k1.pub -s k1.key`, the same for
    // k2, then `minisign -S -s k1.key -m manifest.toml` over `tests::MESSAGE`.
    pub(crate) const K1_PUB: &str = include_str!("testdata/k1.pub");
    pub(crate) const K2_PUB: &str = include_str!("testdata/k2.pub");
    pub(crate) const MESSAGE: &[u8] = include_bytes!("testdata/message.txt");
    pub(crate) const MESSAGE_SIG_K1: &str = include_str!("testdata/message.txt.minisig");

    fn ring(keys: &[(&str, &str)]) -> (tempdir::Dir, Keyring) {
        let d = tempdir::Dir::new();
        for (name, text) in keys {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        let k = Keyring::load(d.path()).unwrap();
        (d, k)
    }

    #[test]
    fn a_key_of_the_ring_verifies_and_is_named() {
        let (_d, k) = ring(&[("a-today.pub", K1_PUB), ("b-tomorrow.pub", K2_PUB)]);
        assert_eq!(k.verify(MESSAGE, MESSAGE_SIG_K1), Ok("a-today.pub"));
    }

    #[test]
    fn changed_data_is_a_bad_signature() {
        let (_d, k) = ring(&[("k1.pub", K1_PUB)]);
        let mut data = MESSAGE.to_vec();
        data[0] ^= 1;
        assert_eq!(
            k.verify(&data, MESSAGE_SIG_K1),
            Err(SignatureError::Bad {
                key: "k1.pub".into()
            })
        );
    }

    #[test]
    fn another_key_is_unknown() {
        let (_d, k) = ring(&[("k2.pub", K2_PUB)]);
        let e = k.verify(MESSAGE, MESSAGE_SIG_K1).unwrap_err();
        assert!(
            matches!(e, SignatureError::UnknownKey { count: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("signed by an unknown key"));
    }

    #[test]
    fn garbage_signature_and_bad_keys_are_named() {
        let (_d, k) = ring(&[("k1.pub", K1_PUB)]);
        assert_eq!(k.verify(MESSAGE, "hello"), Err(SignatureError::Malformed));
        let d = tempdir::Dir::new();
        std::fs::write(d.path().join("x.pub"), "not a key\n").unwrap();
        assert!(
            Keyring::load(d.path())
                .err()
                .unwrap()
                .contains("x.pub is not a minisign public key")
        );
        let empty = tempdir::Dir::new();
        assert!(
            Keyring::load(empty.path())
                .err()
                .unwrap()
                .contains("holds no *.pub key")
        );
    }

    /// A scratch directory removed on drop (tests only; no new dependency for it).
    pub(crate) mod tempdir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicU32, Ordering};

        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "proxyha-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
