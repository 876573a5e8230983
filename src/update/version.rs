//! Release versions and their order: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]` as semver 2.0
//! orders them (a pre-release sorts before its release; build metadata does not count).

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    core: [u64; 3],
    pre: Vec<Ident>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Num(u64),
    Alpha(String),
}

impl Version {
    /// Parses `0.2.0`, `1.0.0-rc.1`, `0.2.0+build5`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Version, String> {
        let bad = |why: &str| format!("version \"{text}\": {why} (want MAJOR.MINOR.PATCH)");
        let no_build = text.split('+').next().unwrap_or_default();
        let (core, pre) = match no_build.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (no_build, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(bad("three numbers separated by dots"));
        }
        let mut nums = [0u64; 3];
        for (n, p) in nums.iter_mut().zip(&parts) {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each part must be a number"));
            }
            *n = p.parse().map_err(|_| bad("a part is too large"))?;
        }
        let mut idents = Vec::new();
        if let Some(p) = pre {
            for id in p.split('.') {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad("pre-release parts are letters, digits and '-'"));
                }
                idents.push(if id.bytes().all(|b| b.is_ascii_digit()) {
                    Ident::Num(id.parse().map_err(|_| bad("a part is too large"))?)
                } else {
                    Ident::Alpha(id.to_string())
                });
            }
        }
        Ok(Version {
            core: nums,
            pre: idents,
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Ident::Num(a), Ident::Num(b)) => a.cmp(b),
            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
            (Ident::Alpha(a), Ident::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Precedence only: `0.2.0+a` and `0.2.0+b` are equal here (and not "newer" than each other).
pub fn compare(a: &Version, b: &Version) -> Ordering {
    a.core
        .cmp(&b.core)
        .then_with(|| match (a.pre.is_empty(), b.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => a.pre.cmp(&b.pre),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn semver_precedence() {
        let order = [
            "0.1.0",
            "0.1.1-alpha",
            "0.1.1-alpha.1",
            "0.1.1-alpha.beta",
            "0.1.1-beta.2",
            "0.1.1-beta.11",
            "0.1.1-rc.1",
            "0.1.1",
            "0.2.0",
            "0.10.0",
            "1.0.0",
        ];
        for w in order.windows(2) {
            assert_eq!(
                compare(&v(w[0]), &v(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(compare(&v("0.2.0+a"), &v("0.2.0+b")), Ordering::Equal);
    }

    #[test]
    fn bad_versions_are_named() {
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.x",
            "1.2.3.4",
            "1.2.3-",
            "1.2.3-a..b",
            "-1.2.3",
        ] {
            let e = Version::parse(bad).unwrap_err();
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
