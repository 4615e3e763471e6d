//! Image references (`host[:port]/repo[:tag][@digest]`) and digests.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};

/// The registry Docker means by `docker.io` and references without a host.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API actually answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A content digest, `sha256:<64 hex>` or `sha512:<128 hex>`, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest.
    ///
    /// # Errors
    /// [`Error::InvalidDigest`] for an unknown algorithm or a hex part of the wrong length or
    /// case (the spec requires lower-case hex).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidDigest {
            digest: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("no algorithm: prefix"))?;
        let len = match alg {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad("unsupported algorithm (sha256 or sha512)")),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("the hex part has the wrong length or characters"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The sha256 digest of `data`.
    #[must_use]
    pub fn sha256(data: &[u8]) -> Self {
        Self(format!("sha256:{}", hex(&Sha256::digest(data))))
    }

    /// The text form.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The algorithm (`sha256`).
    #[must_use]
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(a, _)| a)
    }

    /// The hex part.
    #[must_use]
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }

    /// The tag that holds this manifest's referrers under the OCI distribution spec's tag
    /// schema fallback: `<alg>-<hex>`, the algorithm cut to 32 and the hex to 64 characters
    /// (`sha256-0123…`).
    #[must_use]
    pub fn referrers_tag(&self) -> String {
        let alg = self.algorithm();
        let hex = self.hex();
        format!(
            "{}-{}",
            alg.get(..32).unwrap_or(alg),
            hex.get(..64).unwrap_or(hex)
        )
    }

    /// A hasher for this digest's algorithm.
    #[must_use]
    pub fn hasher(&self) -> Hasher {
        if self.algorithm() == "sha512" {
            Hasher::Sha512(Sha512::new())
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }

    /// Whether `data` hashes to this digest.
    #[must_use]
    pub fn matches(&self, data: &[u8]) -> bool {
        let mut h = self.hasher();
        h.update(data);
        h.finish() == *self
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// An incremental hash for [`Digest`] verification of streamed content.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Hasher {
    /// sha256.
    Sha256(Sha256),
    /// sha512.
    Sha512(Sha512),
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed.
    #[must_use]
    pub fn finish(self) -> Digest {
        match self {
            Self::Sha256(h) => Digest(format!("sha256:{}", hex(&h.finalize()))),
            Self::Sha512(h) => Digest(format!("sha512:{}", hex(&h.finalize()))),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

/// A parsed image reference: registry host, repository, tag and/or digest.
///
/// Normalised as Docker does: no host means `docker.io`; a one-component Docker Hub
/// repository gets `library/`; no tag and no digest means `latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The repository path (`library/alpine`).
    pub repository: String,
    /// The tag, when given (or defaulted to `latest`).
    pub tag: Option<String>,
    /// The digest, when given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `[host[:port]/]path[:tag][@digest]`.
    ///
    /// # Errors
    /// [`Error::InvalidReference`] for an empty or upper-case path, a bad tag or a bad digest.
    pub fn parse(s: &str) -> Result<Self> {
        let mut r = Self::parse_repo_part(s, true)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_owned());
        }
        Ok(r)
    }

    /// Parses a repository without tag or digest (`host/path`), as `tag ls` takes.
    ///
    /// # Errors
    /// As [`Reference::parse`], and for a reference with a tag or digest.
    pub fn parse_repository(s: &str) -> Result<Self> {
        let r = Self::parse_repo_part(s, true)?;
        if r.tag.is_some() || r.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: s.to_owned(),
                reason: "a repository, without tag or digest, is expected".into(),
            });
        }
        Ok(r)
    }

    fn parse_repo_part(s: &str, _allow: bool) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A first component with '.', ':' or equal to "localhost" is a host (Docker's rule).
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), p)
            }
            _ => (DOCKER_HUB.to_owned(), rest),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_owned())),
            _ => (path, None),
        };
        if path.is_empty() {
            return Err(bad("empty repository"));
        }
        let path_ok = path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        });
        if !path_ok {
            return Err(bad(
                "repository components are lower-case letters, digits and . _ -",
            ));
        }
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when known, else the tag.
    #[must_use]
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The host to dial for the API (`registry-1.docker.io` for Docker Hub).
    #[must_use]
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.target(), "v1");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), d);
        assert_eq!(r.to_string(), format!("localhost/x@{d}"));
        assert!(Reference::parse("Upper/x").is_err());
        assert!(Reference::parse("reg:5000/").is_err());
        assert!(Reference::parse("x@sha256:abc").is_err());
        assert!(Reference::parse_repository("reg.io/x:tag").is_err());
    }

    #[test]
    fn digests_validate_and_verify() {
        let d = Digest::sha256(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(d.matches(b"hello"));
        assert!(!d.matches(b"hellO"));
        assert!(Digest::parse(&d.as_str().to_uppercase()).is_err());
        assert!(Digest::parse("md5:abcd").is_err());
    }
}
