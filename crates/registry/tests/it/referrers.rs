//! Referrers (OCI distribution spec 1.1): the tag schema fallback against Distribution 2.8
//! (which answers the referrers API with 404), and the API itself from a small test server.

use bytes::Bytes;
use vch_registry::{
    Client, CopyOptions, DOCKER_MANIFEST, Descriptor, Digest, OCI_INDEX, OCI_MANIFEST,
    ReferrersSource, copy_image,
};
use vch_testbed::{HttpClient, TestImage};

use crate::support::{
    BrokenRegistry, image_ref, plain_client, plain_client_at, plain_registry, plain_registry_with,
    runtime,
};

const SBOM: &str = "application/vnd.example.sbom";
const SIG: &str = "application/vnd.example.sig";

/// Pushes an artifact manifest of `artifact_type` whose subject is `subject`; its digest.
async fn push_artifact(
    client: &Client,
    repo: &str,
    subject: &Digest,
    subject_size: usize,
    artifact_type: &str,
    content: &[u8],
) -> Digest {
    let config = client
        .push_blob(repo, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let layer = client
        .push_blob(repo, Bytes::copy_from_slice(content))
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.as_str(), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": layer.as_str(), "size": content.len()}],
        "subject": {"mediaType": DOCKER_MANIFEST, "digest": subject.as_str(), "size": subject_size},
        "annotations": {"org.example.kind": artifact_type},
    })
    .to_string();
    let digest = Digest::sha256(manifest.as_bytes());
    let pushed = client
        .manifest_put(repo, digest.as_str(), OCI_MANIFEST, Bytes::from(manifest))
        .await
        .unwrap();
    assert_eq!(pushed, digest);
    digest
}

#[test]
fn referrers_fall_back_to_the_tag_schema_on_distribution() {
    let (reg, image) = plain_registry_with(TestImage::random("art/app", "v1"));
    let client = plain_client(&reg);
    let subject = Digest::parse(&image.manifest_digest).unwrap();
    let size = image.manifest.len();
    runtime().block_on(async {
        // Nothing refers to it yet: the API is missing and so is the tag.
        let none = client.referrers("art/app", &subject, None).await.unwrap();
        assert_eq!(none.source, ReferrersSource::TagSchema);
        assert!(none.manifests.is_empty());

        let sbom = push_artifact(&client, "art/app", &subject, size, SBOM, b"sbom").await;
        let sig = push_artifact(&client, "art/app", &subject, size, SIG, b"signature").await;
        // Pushing a referrer again does not list it twice.
        let again = push_artifact(&client, "art/app", &subject, size, SIG, b"signature").await;
        assert_eq!(again, sig);

        let all = client.referrers("art/app", &subject, None).await.unwrap();
        assert_eq!(all.source, ReferrersSource::TagSchema);
        let digests: Vec<&str> = all.manifests.iter().map(|d| d.digest.as_str()).collect();
        assert_eq!(digests, [sbom.as_str(), sig.as_str()]);
        assert_eq!(all.manifests[0].artifact_type.as_deref(), Some(SBOM));
        assert_eq!(all.manifests[0].media_type, OCI_MANIFEST);
        assert_eq!(
            all.manifests[1].annotations.as_ref().unwrap()["org.example.kind"],
            SIG
        );

        // The index is a real tag a plain client can read.
        let tags = client.tags("art/app", None).await.unwrap();
        assert!(tags.contains(&subject.referrers_tag()), "{tags:?}");
        let index = client
            .manifest_get("art/app", &subject.referrers_tag())
            .await
            .unwrap();
        assert_eq!(index.media_type, OCI_INDEX);

        let sigs = client
            .referrers("art/app", &subject, Some(SIG))
            .await
            .unwrap();
        assert_eq!(sigs.manifests.len(), 1);
        assert_eq!(sigs.manifests[0].digest, sig.as_str());
        assert_eq!(sigs.to_index(), {
            let v = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": sigs.manifests});
            Bytes::from(v.to_string())
        });
    });
}

#[test]
fn referrers_api_answer_is_used_and_filtered() {
    let subject = Digest::sha256(b"subject manifest");
    let mut a = Descriptor::new(OCI_MANIFEST, &Digest::sha256(b"a"), 10);
    a.artifact_type = Some(SBOM.into());
    let mut b = Descriptor::new(OCI_MANIFEST, &Digest::sha256(b"b"), 20);
    b.artifact_type = Some(SIG.into());
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a, b]})
            .to_string();
    // The server ignores the filter (no `OCI-Filters-Applied`): the client applies it.
    let routes = vec![
        (
            format!("/v2/app/referrers/{subject}"),
            OCI_INDEX.to_owned(),
            index.clone().into_bytes(),
        ),
        (
            format!("/v2/app/referrers/{subject}?artifactType={SIG}"),
            OCI_INDEX.to_owned(),
            index.into_bytes(),
        ),
    ];
    let server = BrokenRegistry::start(routes);
    let client = plain_client_at(&server.addr);
    runtime().block_on(async {
        let all = client.referrers("app", &subject, None).await.unwrap();
        assert_eq!(all.source, ReferrersSource::Api);
        assert_eq!(all.manifests, [a, b.clone()]);
        let sigs = client.referrers("app", &subject, Some(SIG)).await.unwrap();
        assert_eq!(sigs.source, ReferrersSource::Api);
        assert_eq!(sigs.manifests, [b]);
        // Another subject: the server answers 404 (no route), and there is no tag either.
        let other = Digest::sha256(b"other");
        let none = client.referrers("app", &other, None).await.unwrap();
        assert_eq!(none.source, ReferrersSource::TagSchema);
        assert!(none.manifests.is_empty());
    });
}

/// OCI distribution spec 1.1, "Deleting Manifests": without the referrers API the client
/// takes a deleted referrer out of its subject's tag schema index, and an index left empty
/// goes away with its tag.
#[test]
fn deleting_a_referrer_updates_the_tag_schema_on_distribution() {
    let (reg, image) = plain_registry_with(TestImage::random("art/del", "v1"));
    let client = plain_client(&reg);
    let subject = Digest::parse(&image.manifest_digest).unwrap();
    let size = image.manifest.len();
    let tag = subject.referrers_tag();
    runtime().block_on(async {
        let sbom = push_artifact(&client, "art/del", &subject, size, SBOM, b"sbom").await;
        let sig = push_artifact(&client, "art/del", &subject, size, SIG, b"signature").await;

        client
            .manifest_delete("art/del", sig.as_str())
            .await
            .unwrap();
        let left = client.referrers("art/del", &subject, None).await.unwrap();
        assert_eq!(left.source, ReferrersSource::TagSchema);
        let digests: Vec<&str> = left.manifests.iter().map(|d| d.digest.as_str()).collect();
        assert_eq!(digests, [sbom.as_str()]);
        let err = client
            .manifest_get("art/del", sig.as_str())
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404), "{err}");

        // Removing it again finds nothing to remove.
        let removed = client
            .referrers_tag_remove("art/del", &subject, &sig)
            .await
            .unwrap();
        assert!(!removed, "the index no longer lists it");

        // The last referrer: the emptied index is deleted, and its tag with it.
        client
            .manifest_delete("art/del", sbom.as_str())
            .await
            .unwrap();
        let none = client.referrers("art/del", &subject, None).await.unwrap();
        assert!(none.manifests.is_empty(), "{:?}", none.manifests);
        let tags = client.tags("art/del", None).await.unwrap();
        assert_eq!(tags, ["v1"], "the referrers tag {tag} is gone");
        assert!(
            client
                .manifest_head("art/del", &tag)
                .await
                .unwrap()
                .is_none()
        );
        // The subject itself is untouched.
        let m = client.manifest_get("art/del", "v1").await.unwrap();
        assert_eq!(m.digest, subject);
    });
}

/// `CopyOptions::referrers`: an image's SBOM, and the SBOM's signature, follow the image
/// between two Distribution registries (no referrers API on either side: read from the
/// source's tag schema, indexed in the target's).
#[test]
fn copy_carries_referrers_between_registries() {
    let src_reg = plain_registry();
    let dst_reg = plain_registry();
    let image = TestImage::random("art/copy", "v1")
        .push(&HttpClient::plain(), src_reg.url())
        .unwrap();
    let (src, dst) = (plain_client(&src_reg), plain_client(&dst_reg));
    let subject = Digest::parse(&image.manifest_digest).unwrap();
    let s = image_ref(&src_reg.addr(), "art/copy:v1");
    let plain = image_ref(&dst_reg.addr(), "plain/copy:v1");
    let d = image_ref(&dst_reg.addr(), "with/refs:v1");
    runtime().block_on(async {
        let size = image.manifest.len();
        let sbom = push_artifact(&src, "art/copy", &subject, size, SBOM, b"sbom").await;
        let sbom_size = src
            .manifest_get("art/copy", sbom.as_str())
            .await
            .unwrap()
            .bytes
            .len();
        let sig = push_artifact(&src, "art/copy", &sbom, sbom_size, SIG, b"signature").await;

        // Off by default: only the image.
        let r = copy_image(&src, &s, &dst, &plain, &CopyOptions::default())
            .await
            .unwrap();
        assert_eq!(r.referrers, 0);
        let none = dst.referrers("plain/copy", &subject, None).await.unwrap();
        assert!(none.manifests.is_empty());

        let r = copy_image(&src, &s, &dst, &d, &CopyOptions::default().referrers(true))
            .await
            .unwrap();
        assert_eq!(
            r.digest, image.manifest_digest,
            "the report names the image"
        );
        assert_eq!(r.referrers, 2);
        let on_image = dst.referrers("with/refs", &subject, None).await.unwrap();
        assert_eq!(on_image.source, ReferrersSource::TagSchema);
        let digests: Vec<&str> = on_image
            .manifests
            .iter()
            .map(|d| d.digest.as_str())
            .collect();
        assert_eq!(digests, [sbom.as_str()]);
        assert_eq!(on_image.manifests[0].artifact_type.as_deref(), Some(SBOM));
        let on_sbom = dst.referrers("with/refs", &sbom, None).await.unwrap();
        let digests: Vec<&str> = on_sbom
            .manifests
            .iter()
            .map(|d| d.digest.as_str())
            .collect();
        assert_eq!(digests, [sig.as_str()]);
        // The artifacts' blobs came along.
        let m = dst.manifest_get("with/refs", sig.as_str()).await.unwrap();
        let layer = Digest::sha256(b"signature");
        assert!(dst.blob_head("with/refs", &layer).await.unwrap().is_some());
        assert_eq!(m.digest, sig);
    });
}
