//! The bundle's manifest (`manifest.toml`, the first member of the tar; the second member is
//! its minisign signature): what the bundle is for and the size and SHA-256 of every image.
//! Only the manifest is signed; every image is bound to it by its hash.
//!
//! ```toml
//! format = 1
//! compatible = "generic-x86-64"     # the board id (board/<family>/<board>/meta BOARD_ID)
//! version = "0.2.0"
//!
//! [[image]]
//! name = "rootfs.squashfs"          # the tar member holding it
//! target = "root"                   # root slot | "kernel" (ESP) | "initramfs" (ESP)
//! size = 6731776
//! sha256 = "…64 hex digits…"
//! ```

use std::fmt;

use serde::Deserialize;

use super::version::Version;

/// The manifest format this build reads; a newer format is refused, not guessed at.
pub const FORMAT: u32 = 1;
/// Name of the manifest inside the bundle, and of its signature.
pub const MANIFEST_NAME: &str = "manifest.toml";
pub const SIGNATURE_NAME: &str = "manifest.toml.minisig";
/// A manifest is a few hundred bytes; anything much larger is not one.
pub const MAX_MANIFEST: u64 = 64 * 1024;

/// Where an image goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The inactive root slot (a whole partition).
    Root,
    /// The slot's kernel on the ESP (`<slot>/vmlinuz`).
    Kernel,
    /// The slot's initramfs on the ESP (`<slot>/initrd.img`).
    Initramfs,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Root => "root slot",
            Target::Kernel => "ESP kernel",
            Target::Initramfs => "ESP initramfs",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub target: Target,
    pub size: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub compatible: String,
    pub version: Version,
    /// In bundle order (the tar members after the signature come in this order).
    pub images: Vec<Image>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    format: u32,
    compatible: String,
    version: String,
    #[serde(default)]
    image: Vec<RawImage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: String,
    target: Target,
    size: u64,
    sha256: String,
}

impl Manifest {
    /// Parses and checks a manifest: one image per target, safe member names, hex hashes.
    /// Called only on bytes whose signature verified.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "manifest is not UTF-8".to_string())?;
        // The format first, so a newer manifest says "newer format" rather than "unknown key".
        if let Some(format) = text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "format").then(|| v.trim().parse::<u32>().ok())?
        }) && format != FORMAT
        {
            return Err(format!(
                "manifest format {format} is not supported by proxyha {} (it reads format {FORMAT}); \
                 install an intermediate release first",
                super::VERSION
            ));
        }
        let raw: Raw = toml::from_str(text).map_err(|e| format!("manifest: {}", e.message()))?;
        if raw.format != FORMAT {
            return Err(format!("manifest format {} is not {FORMAT}", raw.format));
        }
        let version = Version::parse(&raw.version).map_err(|e| format!("manifest: {e}"))?;
        if raw.compatible.is_empty() {
            return Err("manifest: compatible is empty".into());
        }
        let mut images = Vec::new();
        for i in raw.image {
            if i.name.is_empty()
                || i.name.contains('/')
                || i.name.starts_with('.')
                || i.name == MANIFEST_NAME
                || i.name == SIGNATURE_NAME
            {
                return Err(format!(
                    "manifest: image name \"{}\" is not allowed",
                    i.name
                ));
            }
            if images.iter().any(|o: &Image| o.name == i.name) {
                return Err(format!("manifest: image \"{}\" is listed twice", i.name));
            }
            if images.iter().any(|o: &Image| o.target == i.target) {
                return Err(format!("manifest: two images for the {}", i.target));
            }
            if i.size == 0 {
                return Err(format!("manifest: image {} has size 0", i.name));
            }
            let sha256 = parse_hex32(&i.sha256).ok_or_else(|| {
                format!("manifest: image {}: sha256 is not 64 hex digits", i.name)
            })?;
            images.push(Image {
                name: i.name,
                target: i.target,
                size: i.size,
                sha256,
            });
        }
        for t in [Target::Root, Target::Kernel, Target::Initramfs] {
            if !images.iter().any(|i| i.target == t) {
                return Err(format!("manifest: no image for the {t}"));
            }
        }
        Ok(Manifest {
            compatible: raw.compatible,
            version,
            images,
        })
    }

    pub fn image(&self, target: Target) -> Option<&Image> {
        self.images.iter().find(|i| i.target == target)
    }

    /// Bytes of all images together.
    pub fn payload_size(&self) -> u64 {
        self.images.iter().map(|i| i.size).sum()
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex, as `sha256sum` prints it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"format = 1
compatible = "generic-x86-64"
version = "0.2.0"

[[image]]
name = "rootfs.squashfs"
target = "root"
size = 4096
sha256 = "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"

[[image]]
name = "vmlinuz"
target = "kernel"
size = 10
sha256 = "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"

[[image]]
name = "initrd.img"
target = "initramfs"
size = 10
sha256 = "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"
"#;

    #[test]
    fn parses_the_sample() {
        let m = Manifest::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(m.compatible, "generic-x86-64");
        assert_eq!(m.version.as_str(), "0.2.0");
        assert_eq!(m.images.len(), 3);
        assert_eq!(m.image(Target::Root).unwrap().size, 4096);
        assert_eq!(m.payload_size(), 4116);
        assert_eq!(
            hex(&m.images[0].sha256),
            &SAMPLE[SAMPLE.find("ad7f").unwrap()..][..64]
        );
    }

    #[test]
    fn refuses_what_it_cannot_install() {
        let cases = [
            (
                SAMPLE.replace("format = 1", "format = 2"),
                "manifest format 2 is not supported",
            ),
            (
                SAMPLE.replace("target = \"kernel\"", "target = \"root\""),
                "two images for the root slot",
            ),
            (
                SAMPLE.replace("name = \"vmlinuz\"", "name = \"../vmlinuz\""),
                "not allowed",
            ),
            (SAMPLE.replace("size = 10\n", "size = 0\n"), "has size 0"),
            (
                SAMPLE.replace("version = \"0.2.0\"", "version = \"two\""),
                "version \"two\"",
            ),
            (
                SAMPLE.replacen("ad7facb", "zz7facb", 1),
                "not 64 hex digits",
            ),
            (SAMPLE.replace("compatible", "compatibel"), "manifest:"),
            (
                SAMPLE
                    .split("[[image]]")
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("[[image]]"),
                "no image for the ESP initramfs",
            ),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(
            Manifest::parse(&[0xff, 0xfe])
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
