//! Manifest media types, decoding, and platform selection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reference::Digest;

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every manifest type this client reads, as an `Accept` header value.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor (`mediaType`, `digest`, `size`, optional `platform`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Descriptor {
    /// The media type.
    #[serde(default)]
    pub media_type: String,
    /// The content digest.
    pub digest: String,
    /// The size in bytes.
    pub size: u64,
    /// For index entries: the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// For referrers (OCI 1.1): the artifact type of the manifest described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations (for referrers: the described manifest's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A descriptor of `size` bytes of `media_type` content with this digest.
    #[must_use]
    pub fn new(media_type: impl Into<String>, digest: &Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest: digest.to_string(),
            size,
            platform: None,
            artifact_type: None,
            annotations: None,
        }
    }
}

/// A platform, as index entries describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Platform {
    /// `linux`, `windows`.
    pub os: String,
    /// `amd64`, `arm64`.
    pub architecture: String,
    /// `v7`, `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`.
    ///
    /// # Errors
    /// [`Error::Manifest`] when it is not two or three non-empty parts.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Self {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*v).to_owned()),
            }),
            _ => Err(Error::Manifest {
                reference: s.to_owned(),
                reason: "a platform is OS/ARCH or OS/ARCH/VARIANT".into(),
            }),
        }
    }

    /// Whether an entry for `self` serves a request for `want` (a missing wanted variant
    /// matches any variant).
    #[must_use]
    pub fn satisfies(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_none() || self.variant == want.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A decoded manifest: an image (config + layers) or an index of manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manifest {
    /// A Docker schema 2 or OCI image manifest.
    Image {
        /// Its media type.
        media_type: String,
        /// The config blob.
        config: Descriptor,
        /// Layer blobs, base first.
        layers: Vec<Descriptor>,
    },
    /// A Docker manifest list or OCI index.
    Index {
        /// Its media type.
        media_type: String,
        /// The manifests it lists.
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Decodes manifest bytes; `content_type` (the response's) decides when the body has no
    /// `mediaType` field (OCI makes it optional).
    ///
    /// # Errors
    /// [`Error::Manifest`] for invalid JSON, schema 1, or a type that is neither image nor
    /// index; every descriptor digest must parse.
    pub fn decode(bytes: &[u8], content_type: Option<&str>) -> Result<Self> {
        let bad = |reason: String| Error::Manifest {
            reference: content_type.unwrap_or("manifest").to_owned(),
            reason,
        };
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if raw.schema_version != Some(2) {
            return Err(bad(format!(
                "schemaVersion {:?} is not supported (only 2)",
                raw.schema_version
            )));
        }
        let media_type = raw
            .media_type
            .filter(|m| !m.is_empty())
            .or_else(|| content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_owned()))
            .unwrap_or_default();
        let check = |ds: &[Descriptor]| -> Result<()> {
            for d in ds {
                Digest::parse(&d.digest)?;
            }
            Ok(())
        };
        match (raw.manifests, raw.config, raw.layers) {
            (Some(manifests), None, _) => {
                check(&manifests)?;
                Ok(Self::Index {
                    media_type: if media_type.is_empty() {
                        OCI_INDEX.into()
                    } else {
                        media_type
                    },
                    manifests,
                })
            }
            (None, Some(config), layers) => {
                let layers = layers.unwrap_or_default();
                check(std::slice::from_ref(&config))?;
                check(&layers)?;
                Ok(Self::Image {
                    media_type: if media_type.is_empty() {
                        OCI_MANIFEST.into()
                    } else {
                        media_type
                    },
                    config,
                    layers,
                })
            }
            _ => Err(bad("neither an image manifest nor an index".into())),
        }
    }

    /// The media type.
    #[must_use]
    pub fn media_type(&self) -> &str {
        match self {
            Self::Image { media_type, .. } | Self::Index { media_type, .. } => media_type,
        }
    }

    /// The blobs an image manifest references (config first), none for an index.
    #[must_use]
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Self::Image { config, layers, .. } => std::iter::once(config).chain(layers).collect(),
            Self::Index { .. } => Vec::new(),
        }
    }

    /// The index entry for `want`; errors for an image manifest or when none matches.
    ///
    /// # Errors
    /// [`Error::NoPlatform`] listing what the index offers.
    pub fn select_platform(&self, want: &Platform, reference: &str) -> Result<&Descriptor> {
        let Self::Index { manifests, .. } = self else {
            return Err(Error::Manifest {
                reference: reference.to_owned(),
                reason: "an image manifest has no platforms to choose from".into(),
            });
        };
        manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(want)))
            .ok_or_else(|| Error::NoPlatform {
                platform: want.to_string(),
                reference: reference.to_owned(),
                available: manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn decodes_image_and_index_and_selects_platform() {
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"c","digest":"{D1}","size":3}},"layers":[{{"mediaType":"l","digest":"{D2}","size":9}}]}}"#
        );
        let m = Manifest::decode(image.as_bytes(), None).unwrap();
        assert_eq!(m.media_type(), DOCKER_MANIFEST);
        assert_eq!(m.blobs().len(), 2);
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"digest":"{D2}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let m = Manifest::decode(index.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert_eq!(m.media_type(), OCI_INDEX);
        let p = m
            .select_platform(&Platform::parse("linux/arm64").unwrap(), "x")
            .unwrap();
        assert_eq!(p.digest, D1);
        let err = m
            .select_platform(&Platform::parse("linux/s390x").unwrap(), "x")
            .unwrap_err();
        assert!(
            err.to_string().contains("linux/arm64/v8, linux/amd64"),
            "{err}"
        );
    }

    #[test]
    fn refuses_schema1_and_bad_digests() {
        assert!(Manifest::decode(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(
            Manifest::decode(
                br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:x","size":1}]}"#,
                None
            )
            .is_err()
        );
        assert!(Manifest::decode(b"not json", None).is_err());
        assert!(Platform::parse("linux").is_err());
    }
}
