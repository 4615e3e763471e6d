//! Referrers (OCI distribution spec 1.1, "Listing Referrers"): the referrers API, and the tag
//! schema fallback for registries without it (Distribution 2.8 answers the API with 404).

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::{Method, StatusCode, header};
use serde::Deserialize;

use crate::body;
use crate::challenge::parse_link_next;
use crate::client::{Client, MAX_JSON, ReqBody, header_str, pull};
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::reference::Digest;

/// Pages of the referrers API followed at most (a loop of `Link` headers ends here).
const MAX_PAGES: usize = 1000;

/// Where a list of referrers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferrersSource {
    /// The registry's referrers API (`GET /v2/<name>/referrers/<digest>`).
    Api,
    /// The tag schema: the index under the tag [`Digest::referrers_tag`] (`sha256-<hex>`).
    TagSchema,
}

/// The manifests that name a subject manifest in their `subject` field.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Referrers {
    /// The manifest referred to.
    pub subject: Digest,
    /// One descriptor per referrer: media type, digest, size, `artifactType`, annotations.
    pub manifests: Vec<Descriptor>,
    /// Which way the registry was asked.
    pub source: ReferrersSource,
}

impl Referrers {
    /// The list as an OCI image index, the document the referrers API answers.
    #[must_use]
    pub fn to_index(&self) -> Bytes {
        index_bytes(&self.manifests)
    }
}

/// The fields of a manifest that make it a referrer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerFields {
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// When the manifest `bytes` has a `subject`: the subject's digest and the manifest's
/// descriptor as a referrer. Its `artifactType` is the manifest's, else its config's media
/// type, as the spec says the API fills it.
pub(crate) fn referrer_of(
    media_type: &str,
    digest: &Digest,
    bytes: &[u8],
) -> Option<(Digest, Descriptor)> {
    let fields: ReferrerFields = serde_json::from_slice(bytes).ok()?;
    let subject = Digest::parse(&fields.subject?.digest).ok()?;
    let mut desc = Descriptor::new(media_type, digest, bytes.len() as u64);
    desc.artifact_type = fields
        .artifact_type
        .or_else(|| fields.config.map(|c| c.media_type))
        .filter(|t| !t.is_empty());
    desc.annotations = fields.annotations.filter(|a| !a.is_empty());
    Some((subject, desc))
}

#[derive(Deserialize)]
struct IndexEntries {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn index_bytes(manifests: &[Descriptor]) -> Bytes {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    Bytes::from(index.to_string())
}

fn decode_entries(bytes: &[u8], what: &str) -> Result<Vec<Descriptor>> {
    let entries: IndexEntries = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        reference: what.to_owned(),
        reason: format!("not an image index: {e}"),
    })?;
    for d in &entries.manifests {
        Digest::parse(&d.digest)?;
    }
    Ok(entries.manifests)
}

fn keep_type(manifests: &mut Vec<Descriptor>, artifact_type: Option<&str>) {
    if let Some(want) = artifact_type {
        manifests.retain(|d| d.artifact_type.as_deref() == Some(want));
    }
}

impl Client {
    /// The referrers of `subject` in `repo`, only those of `artifact_type` when given.
    ///
    /// Asks the referrers API first (following `Link` pages); when the registry answers 404
    /// (it has no such API), reads the tag schema's index (the tag `sha256-<hex>`), where a
    /// missing tag means no referrers. The filter is applied here too when the registry did
    /// not (no `OCI-Filters-Applied: artifactType`).
    ///
    /// # Errors
    /// [`Error::Registry`] for other statuses; [`Error::Manifest`] when the answer is not an
    /// index.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let mut url = format!("/v2/{repo}/referrers/{subject}");
        if let Some(t) = artifact_type {
            url.push_str(&format!("?artifactType={}", crate::client::query_escape(t)));
        }
        let mut manifests = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::Http {
                    method: "GET".into(),
                    url,
                    reason: format!("more than {MAX_PAGES} pages of referrers"),
                });
            }
            // Only the first page's 404 means "no referrers API".
            let ok: &[u16] = if pages == 1 { &[200, 404] } else { &[200] };
            let resp = self.referrers_get(repo, &url, ok).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                tracing::debug!(repo, %subject, "no referrers api; reading the tag schema");
                return self.referrers_from_tag(repo, subject, artifact_type).await;
            }
            next = header_str(&resp, "link")
                .as_deref()
                .and_then(parse_link_next);
            let bytes = body::collect(resp.into_body(), MAX_JSON, &url).await?;
            manifests.extend(decode_entries(&bytes, &url)?);
        }
        keep_type(&mut manifests, artifact_type);
        Ok(Referrers {
            subject: subject.clone(),
            manifests,
            source: ReferrersSource::Api,
        })
    }

    /// The referrers recorded under the tag schema only (the tag `sha256-<hex>`).
    ///
    /// # Errors
    /// As [`Client::referrers`].
    pub async fn referrers_from_tag(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let mut manifests = self.tag_schema_entries(repo, subject).await?;
        keep_type(&mut manifests, artifact_type);
        Ok(Referrers {
            subject: subject.clone(),
            manifests,
            source: ReferrersSource::TagSchema,
        })
    }

    async fn tag_schema_entries(&self, repo: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
        let tag = subject.referrers_tag();
        match self.manifest_get(repo, &tag).await {
            Ok(m) => decode_entries(&m.bytes, &format!("{repo}:{tag}")),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Adds `referrer` to the tag schema index of `subject` (creating it), unless a
    /// descriptor with its digest is already there. [`Client::manifest_put`] calls this when
    /// it pushed a manifest with a `subject` and the registry did not answer `OCI-Subject`.
    ///
    /// The update is a read-modify-write of one tag: two clients adding referrers to the same
    /// subject at the same moment can lose one entry (the spec accepts this race).
    ///
    /// # Errors
    /// As [`Client::manifest_get`] and [`Client::manifest_put`].
    pub async fn referrers_tag_add(
        &self,
        repo: &str,
        subject: &Digest,
        referrer: Descriptor,
    ) -> Result<()> {
        let mut manifests = self.tag_schema_entries(repo, subject).await?;
        if manifests.iter().any(|d| d.digest == referrer.digest) {
            return Ok(());
        }
        manifests.push(referrer);
        let tag = subject.referrers_tag();
        self.manifest_put_only(repo, &tag, OCI_INDEX, index_bytes(&manifests))
            .await?;
        tracing::debug!(repo, %subject, tag, "referrers tag updated");
        Ok(())
    }

    /// Removes `referrer` from the tag schema index of `subject` (the spec's "Deleting
    /// Manifests" for registries without the referrers API); whether the index held it.
    /// [`Client::manifest_delete`] calls this after deleting a manifest with a `subject`.
    ///
    /// When the index is left empty, the index manifest is deleted by its digest, which takes
    /// the tag with it (as oras-go does); where deletes are refused (`UNSUPPORTED`, 400, 405)
    /// an empty index is pushed instead (as regclient does). A missing tag, or one that does
    /// not list `referrer`, is left alone. The same read-modify-write race as
    /// [`Client::referrers_tag_add`] applies.
    ///
    /// # Errors
    /// As [`Client::manifest_get`], [`Client::manifest_put`] and [`Client::manifest_delete`];
    /// [`Error::Manifest`] when the tag does not name an index.
    pub async fn referrers_tag_remove(
        &self,
        repo: &str,
        subject: &Digest,
        referrer: &Digest,
    ) -> Result<bool> {
        let tag = subject.referrers_tag();
        let index = match self.manifest_get(repo, &tag).await {
            Ok(m) => m,
            Err(e) if e.status() == Some(404) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut manifests = decode_entries(&index.bytes, &format!("{repo}:{tag}"))?;
        let before = manifests.len();
        manifests.retain(|d| d.digest != referrer.as_str());
        if manifests.len() == before {
            return Ok(false);
        }
        if manifests.is_empty() {
            // The index lists a referrer of this subject only, so no other subject's tag
            // names the same bytes: deleting it by digest removes just this tag.
            match self.manifest_delete_only(repo, index.digest.as_str()).await {
                Ok(()) => {
                    tracing::debug!(repo, %subject, tag, "referrers tag emptied and deleted");
                    return Ok(true);
                }
                Err(e) if e.has_code("UNSUPPORTED") || matches!(e.status(), Some(400 | 405)) => {
                    tracing::debug!(repo, %subject, tag, error = %e, "cannot delete the empty referrers index; pushing it empty");
                }
                Err(e) => return Err(e),
            }
        }
        self.manifest_put_only(repo, &tag, OCI_INDEX, index_bytes(&manifests))
            .await?;
        tracing::debug!(repo, %subject, tag, "referrer removed from the referrers tag");
        Ok(true)
    }

    /// Whether the registry answers the referrers API (200) rather than 404 for `subject`;
    /// the spec's test for falling back to the tag schema.
    pub(crate) async fn has_referrers_api(&self, repo: &str, subject: &Digest) -> Result<bool> {
        let url = format!("/v2/{repo}/referrers/{subject}");
        let resp = self.referrers_get(repo, &url, &[200, 404]).await?;
        Ok(resp.status() == StatusCode::OK)
    }

    /// `GET` a page of the referrers API, any status in `ok`.
    async fn referrers_get(
        &self,
        repo: &str,
        url: &str,
        ok: &[u16],
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.call(
            Method::GET,
            url,
            &[(header::ACCEPT, OCI_INDEX.to_owned())],
            ReqBody::Bytes(Bytes::new()),
            &[pull(repo)],
            ok,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn referrer_takes_artifact_type_then_config_type() {
        let own = Digest::sha256(b"x");
        let with_type = format!(
            r#"{{"schemaVersion":2,"artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"subject":{{"mediaType":"m","digest":"{D1}","size":3}},"annotations":{{"a":"b"}}}}"#
        );
        let (subject, d) = referrer_of(crate::OCI_MANIFEST, &own, with_type.as_bytes()).unwrap();
        assert_eq!(subject.as_str(), D1);
        assert_eq!(
            d.artifact_type.as_deref(),
            Some("application/vnd.example.sig")
        );
        assert_eq!(d.annotations.unwrap()["a"], "b");
        assert_eq!(d.size, with_type.len() as u64);
        let config_only = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.sbom","digest":"{D1}","size":2}},"subject":{{"mediaType":"m","digest":"{D1}","size":3}}}}"#
        );
        let (_, d) = referrer_of(crate::OCI_MANIFEST, &own, config_only.as_bytes()).unwrap();
        assert_eq!(
            d.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(d.annotations, None);
        assert!(referrer_of(crate::OCI_MANIFEST, &own, br#"{"schemaVersion":2}"#).is_none());
        // A subject with a bad digest is no subject.
        assert!(
            referrer_of(
                crate::OCI_MANIFEST,
                &own,
                br#"{"subject":{"digest":"sha256:x","size":1}}"#
            )
            .is_none()
        );
    }

    #[test]
    fn tag_schema_name_cuts_long_digests() {
        let d = Digest::parse(D1).unwrap();
        assert_eq!(d.referrers_tag(), format!("sha256-{}", &D1[7..]));
        let long = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert_eq!(long.referrers_tag(), format!("sha512-{}", "a".repeat(64)));
    }

    #[test]
    fn filter_keeps_the_type_asked_for() {
        let mut a = Descriptor::new("m", &Digest::sha256(b"a"), 1);
        a.artifact_type = Some("t1".into());
        let mut b = Descriptor::new("m", &Digest::sha256(b"b"), 1);
        b.artifact_type = Some("t2".into());
        let mut all = vec![a.clone(), b];
        keep_type(&mut all, Some("t1"));
        assert_eq!(all, vec![a]);
    }
}
