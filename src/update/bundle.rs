//! Reading an update bundle `proxyha-VERSION-BOARD.update`: a plain tar (ustar) with
//! `manifest.toml` first, its minisign signature `manifest.toml.minisig` second, then the
//! images in manifest order. Read as a stream, in one pass, from any `Read` (a file or
//! stdin): the signature is checked before the manifest is believed, the manifest is handed to
//! the caller (who may refuse: another board, an older version) before any image byte is read,
//! and every image's bytes go to the caller as they arrive while they are hashed; an image
//! counts only when its size and SHA-256 match the signed manifest.
//!
//! The tar format is the `tar` crate's; a counting reader underneath turns an early end of
//! input into `truncated at byte N`.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use super::keyring::{Keyring, SignatureError};
use super::manifest::{self, Image, MANIFEST_NAME, MAX_MANIFEST, Manifest, SIGNATURE_NAME};

/// What the caller does with a bundle as it is read.
pub trait Sink {
    /// The manifest, after its signature verified (`key`: the keyring file that signed it).
    /// An error refuses the bundle before any image byte is read.
    fn manifest(&mut self, manifest: &Manifest, key: &str) -> Result<(), String>;
    /// The next bytes of `image` (not yet verified: the hash is known only at its end).
    fn data(&mut self, image: &Image, chunk: &[u8]) -> io::Result<()>;
    /// All of `image` arrived and its size and hash match the manifest.
    fn verified(&mut self, image: &Image) -> io::Result<()>;
}

/// A sink that only verifies (`proxyha update verify`), and the board when one is given.
pub struct VerifyOnly {
    pub board: Option<String>,
}

impl Sink for VerifyOnly {
    fn manifest(&mut self, m: &Manifest, _: &str) -> Result<(), String> {
        match &self.board {
            Some(b) if *b != m.compatible => {
                Err(format!("for board {}, this is {b}", m.compatible))
            }
            _ => Ok(()),
        }
    }
    fn data(&mut self, _: &Image, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn verified(&mut self, _: &Image) -> io::Result<()> {
        Ok(())
    }
}

/// Why a bundle was refused; the text names the object and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("truncated at byte {at}: {what}")]
    Truncated { at: u64, what: String },
    #[error("not an update bundle: {0}")]
    Format(String),
    #[error("unsigned: the second member is {found}, want {SIGNATURE_NAME}")]
    Unsigned { found: String },
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("{0}")]
    Manifest(String),
    /// The caller refused the verified manifest (board, version, …).
    #[error("{0}")]
    Refused(String),
    #[error("image {name}: sha256 mismatch (the bundle was changed after signing)")]
    HashMismatch { name: String },
    #[error("image {name}: {found} bytes, the manifest says {want}")]
    SizeMismatch { name: String, found: u64, want: u64 },
    /// The caller's sink failed (a write to the slot, say).
    #[error("{0}")]
    Sink(io::Error),
    #[error("reading the bundle: {0}")]
    Io(io::Error),
}

/// What a fully read bundle held.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The keyring file whose key signed it.
    pub key: String,
    /// Bytes read from the input.
    pub bytes: u64,
}

/// Counts what the tar reader consumed and whether the input ended.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    eof: Rc<Cell<bool>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof.set(true);
        }
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Reads and verifies a whole bundle, feeding `sink`.
pub fn read<R: Read>(
    input: R,
    keys: &Keyring,
    sink: &mut impl Sink,
) -> Result<Verified, BundleError> {
    let count = Rc::new(Cell::new(0u64));
    let eof = Rc::new(Cell::new(false));
    let reader = Counting {
        inner: input,
        count: count.clone(),
        eof: eof.clone(),
    };
    let truncated = |what: &str| BundleError::Truncated {
        at: count.get(),
        what: what.to_string(),
    };
    // An error of the tar layer: an early end of input is a truncation, anything else a
    // format error.
    let tar_error = |e: io::Error, what: &str| {
        if eof.get() || e.kind() == io::ErrorKind::UnexpectedEof {
            truncated(what)
        } else {
            BundleError::Format(format!("{what}: {e}"))
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| tar_error(e, "reading the first tar header"))?;

    let mut next_member =
        |what: &str| -> Result<Option<(String, u64, tar::Entry<'_, _>)>, BundleError> {
            match entries.next() {
                None => Ok(None),
                Some(Err(e)) => Err(tar_error(e, what)),
                Some(Ok(entry)) => {
                    let name = entry
                        .path()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let kind = entry.header().entry_type();
                    if !kind.is_file() {
                        return Err(BundleError::Format(format!(
                            "member {name} is not a regular file"
                        )));
                    }
                    let size = entry.header().size().map_err(|e| tar_error(e, what))?;
                    Ok(Some((name, size, entry)))
                }
            }
        };
    let small =
        |mut entry: tar::Entry<'_, _>, name: &str, size: u64| -> Result<Vec<u8>, BundleError> {
            if size > MAX_MANIFEST {
                return Err(BundleError::Format(format!(
                    "{name} is {size} bytes, too large"
                )));
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| tar_error(e, &format!("reading {name}")))?;
            if (buf.len() as u64) < size {
                return Err(truncated(&format!("inside {name}")));
            }
            Ok(buf)
        };

    let (name, size, entry) = next_member("reading the manifest")?
        .ok_or_else(|| truncated("no manifest (the bundle is empty)"))?;
    if name != MANIFEST_NAME {
        return Err(BundleError::Format(format!(
            "the first member is {name}, want {MANIFEST_NAME}"
        )));
    }
    let manifest_bytes = small(entry, &name, size)?;
    let (name, size, entry) = next_member("reading the signature")?
        .ok_or_else(|| truncated("no signature after the manifest"))?;
    if name != SIGNATURE_NAME {
        return Err(BundleError::Unsigned { found: name });
    }
    let sig = small(entry, &name, size)?;
    let sig = String::from_utf8(sig).map_err(|_| SignatureError::Malformed)?;
    let key = keys.verify(&manifest_bytes, &sig)?.to_string();
    let manifest = Manifest::parse(&manifest_bytes).map_err(BundleError::Manifest)?;
    sink.manifest(&manifest, &key)
        .map_err(BundleError::Refused)?;

    let mut buf = vec![0u8; 256 * 1024];
    for image in &manifest.images {
        let what = format!("image {} ({} bytes) expected", image.name, image.size);
        let (name, size, mut entry) = next_member(&what)?.ok_or_else(|| truncated(&what))?;
        if name != image.name {
            return Err(BundleError::Format(format!(
                "member {name} where the manifest lists image {} next",
                image.name
            )));
        }
        if size != image.size {
            return Err(BundleError::SizeMismatch {
                name,
                found: size,
                want: image.size,
            });
        }
        let mut hash = Sha256::new();
        let mut got = 0u64;
        while got < size {
            let want = buf.len().min((size - got) as usize);
            let n = entry
                .read(&mut buf[..want])
                .map_err(|e| tar_error(e, &format!("inside image {name}")))?;
            if n == 0 {
                return Err(truncated(&format!(
                    "inside image {name} ({got} of {size} bytes)"
                )));
            }
            hash.update(&buf[..n]);
            sink.data(image, &buf[..n]).map_err(BundleError::Sink)?;
            got += n as u64;
        }
        if hash.finalize().as_slice() != image.sha256 {
            return Err(BundleError::HashMismatch { name });
        }
        sink.verified(image).map_err(BundleError::Sink)?;
    }
    if let Some((name, _, _)) = next_member("after the last image")? {
        return Err(BundleError::Format(format!(
            "member {name} after the last image is not in the manifest"
        )));
    }
    Ok(Verified {
        manifest,
        key,
        bytes: count.get(),
    })
}

/// `hex(sha256(bytes))`, for messages and tests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    manifest::hex(&Sha256::digest(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::update::keyring::tests::{K1_PUB, K2_PUB, tempdir};

    /// The images the signed test manifest (`testdata/bundle-manifest.toml`, signed with the
    /// test key k1 as `…minisig`) describes.
    pub(crate) fn images() -> Vec<(&'static str, Vec<u8>)> {
        let root: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        vec![
            ("rootfs.squashfs", root),
            ("vmlinuz", b"kernel image of the test bundle\n".to_vec()),
            ("initrd.img", b"initramfs of the test bundle\n".to_vec()),
        ]
    }
    pub(crate) const MANIFEST: &[u8] = include_bytes!("testdata/bundle-manifest.toml");
    pub(crate) const MANIFEST_SIG: &[u8] = include_bytes!("testdata/bundle-manifest.toml.minisig");

    pub(crate) fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    pub(crate) fn good_bundle() -> Vec<u8> {
        let imgs = images();
        let mut members: Vec<(&str, &[u8])> =
            vec![(MANIFEST_NAME, MANIFEST), (SIGNATURE_NAME, MANIFEST_SIG)];
        members.extend(imgs.iter().map(|(n, d)| (*n, d.as_slice())));
        tar_of(&members)
    }

    pub(crate) fn ring(pubs: &[&str]) -> (tempdir::Dir, Keyring) {
        let d = tempdir::Dir::new();
        for (i, p) in pubs.iter().enumerate() {
            std::fs::write(d.path().join(format!("k{i}.pub")), p).unwrap();
        }
        let k = Keyring::load(d.path()).unwrap();
        (d, k)
    }

    /// Records what reached the sink.
    #[derive(Default)]
    struct Record {
        bytes: Vec<(String, usize)>,
        verified: Vec<String>,
        refuse: Option<String>,
    }
    impl Sink for Record {
        fn manifest(&mut self, _: &Manifest, _: &str) -> Result<(), String> {
            self.refuse.clone().map_or(Ok(()), Err)
        }
        fn data(&mut self, i: &Image, c: &[u8]) -> io::Result<()> {
            match self.bytes.last_mut() {
                Some((n, len)) if *n == i.name => *len += c.len(),
                _ => self.bytes.push((i.name.clone(), c.len())),
            }
            Ok(())
        }
        fn verified(&mut self, i: &Image) -> io::Result<()> {
            self.verified.push(i.name.clone());
            Ok(())
        }
    }

    #[test]
    fn the_test_manifest_matches_its_images() {
        let m = Manifest::parse(MANIFEST).unwrap();
        for ((name, data), img) in images().iter().zip(&m.images) {
            assert_eq!(img.name, *name);
            assert_eq!(img.size, data.len() as u64);
            assert_eq!(manifest::hex(&img.sha256), sha256_hex(data), "{name}");
        }
    }

    #[test]
    fn a_good_bundle_streams_every_image_then_verifies_it() {
        let (_d, k) = ring(&[K2_PUB, K1_PUB]);
        let mut r = Record::default();
        let v = read(good_bundle().as_slice(), &k, &mut r).unwrap();
        assert_eq!(v.key, "k1.pub");
        assert_eq!(v.manifest.version.as_str(), "0.2.0");
        assert_eq!(
            r.bytes,
            vec![
                ("rootfs.squashfs".to_string(), 300_000),
                ("vmlinuz".into(), 32),
                ("initrd.img".into(), 29)
            ]
        );
        assert_eq!(r.verified, ["rootfs.squashfs", "vmlinuz", "initrd.img"]);
    }

    #[test]
    fn a_flipped_payload_byte_is_a_hash_mismatch_and_never_verified() {
        let (_d, k) = ring(&[K1_PUB]);
        let mut b = good_bundle();
        // The root image starts after 3 headers and the manifest and signature blocks.
        let at = b.windows(4).position(|w| w == [0, 7, 14, 21]).unwrap() + 1000;
        b[at] ^= 0x01;
        let mut r = Record::default();
        let e = read(b.as_slice(), &k, &mut r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "image rootfs.squashfs: sha256 mismatch (the bundle was changed after signing)"
        );
        assert!(r.verified.is_empty());
    }

    #[test]
    fn truncation_is_reported_with_its_byte() {
        let (_d, k) = ring(&[K1_PUB]);
        let b = good_bundle();
        for cut in [0usize, 100, 512, 2000, 3000, 200_000, b.len() - 1100] {
            let e = read(&b[..cut], &k, &mut Record::default()).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, BundleError::Truncated { .. }),
                "cut {cut}: {text}"
            );
            assert!(text.starts_with("truncated at byte "), "{text}");
        }
    }

    #[test]
    fn unsigned_unknown_key_and_changed_manifest_are_refused_before_any_image_byte() {
        let imgs = images();
        let body: Vec<(&str, &[u8])> = imgs.iter().map(|(n, d)| (*n, d.as_slice())).collect();
        let (_d, k1) = ring(&[K1_PUB]);
        let (_d2, k2) = ring(&[K2_PUB]);

        let mut unsigned = vec![(MANIFEST_NAME, MANIFEST)];
        unsigned.extend(body.iter().copied());
        let mut r = Record::default();
        let e = read(tar_of(&unsigned).as_slice(), &k1, &mut r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsigned: the second member is rootfs.squashfs, want manifest.toml.minisig"
        );
        assert!(r.bytes.is_empty());

        let mut r = Record::default();
        let e = read(good_bundle().as_slice(), &k2, &mut r).unwrap_err();
        assert!(e.to_string().starts_with("signed by an unknown key"), "{e}");
        assert!(r.bytes.is_empty());

        let changed = String::from_utf8(MANIFEST.to_vec())
            .unwrap()
            .replace("0.2.0", "9.2.0");
        let mut members = vec![
            (MANIFEST_NAME, changed.as_bytes()),
            (SIGNATURE_NAME, MANIFEST_SIG),
        ];
        members.extend(body.iter().copied());
        let mut r = Record::default();
        let e = read(tar_of(&members).as_slice(), &k1, &mut r).unwrap_err();
        assert!(e.to_string().starts_with("bad signature"), "{e}");
        assert!(r.bytes.is_empty());
    }

    #[test]
    fn a_refusal_by_the_caller_stops_before_any_image_byte() {
        let (_d, k) = ring(&[K1_PUB]);
        let mut r = Record {
            refuse: Some("for board other-board, this is generic-x86-64".into()),
            ..Record::default()
        };
        let e = read(good_bundle().as_slice(), &k, &mut r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "for board other-board, this is generic-x86-64"
        );
        assert!(r.bytes.is_empty());
    }

    #[test]
    fn members_out_of_order_or_extra_are_format_errors() {
        let (_d, k) = ring(&[K1_PUB]);
        let imgs = images();
        let mut m: Vec<(&str, &[u8])> =
            vec![(MANIFEST_NAME, MANIFEST), (SIGNATURE_NAME, MANIFEST_SIG)];
        m.extend(imgs.iter().rev().map(|(n, d)| (*n, d.as_slice())));
        let e = read(tar_of(&m).as_slice(), &k, &mut Record::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("member initrd.img where the manifest lists image rootfs.squashfs next"),
            "{e}"
        );

        let mut m: Vec<(&str, &[u8])> =
            vec![(MANIFEST_NAME, MANIFEST), (SIGNATURE_NAME, MANIFEST_SIG)];
        m.extend(imgs.iter().map(|(n, d)| (*n, d.as_slice())));
        m.push(("extra", b"x"));
        let e = read(tar_of(&m).as_slice(), &k, &mut Record::default()).unwrap_err();
        assert!(
            e.to_string().contains("member extra after the last image"),
            "{e}"
        );

        let e = read(
            &b"this is not a tar file at all"[..],
            &k,
            &mut Record::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, BundleError::Truncated { .. } | BundleError::Format(_)),
            "{e}"
        );
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 256) as u8).collect();
        assert!(read(garbage.as_slice(), &k, &mut Record::default()).is_err());
    }
}
