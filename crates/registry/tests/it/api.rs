//! The OCI distribution-spec conformance workflows (pull, push, content discovery, content
//! management, error cases) against a plain-HTTP Distribution registry.

use bytes::Bytes;
use vch_registry::{DOCKER_MANIFEST, Digest, Manifest, Mount};
use vch_testbed::{HttpClient, TestImage};

use crate::support::{
    fetch_verified, plain_client, plain_client_at, plain_registry, plain_registry_with,
    plain_settings, runtime,
};

#[test]
fn ping_reports_api_version() {
    let reg = plain_registry();
    let client = plain_client(&reg);
    let ping = runtime().block_on(client.ping()).unwrap();
    assert_eq!(ping.status, 200);
    assert_eq!(ping.scheme, "http");
    assert_eq!(ping.api_version.as_deref(), Some("registry/2.0"));
}

#[test]
fn pull_manifests_by_tag_and_digest_and_blobs_with_ranges() {
    let (reg, pushed) = plain_registry_with(
        TestImage::random("conf/pull", "v1")
            .layers(2)
            .layer_size(100_000),
    );
    let client = plain_client(&reg);
    runtime().block_on(async {
        let by_tag = client.manifest_get("conf/pull", "v1").await.unwrap();
        assert_eq!(by_tag.digest.as_str(), pushed.manifest_digest);
        assert_eq!(by_tag.bytes.as_ref(), pushed.manifest.as_slice());
        assert_eq!(by_tag.media_type, DOCKER_MANIFEST);
        let by_digest = client
            .manifest_get("conf/pull", &pushed.manifest_digest)
            .await
            .unwrap();
        assert_eq!(by_digest.bytes, by_tag.bytes);
        let head = client
            .manifest_head("conf/pull", "v1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.digest.unwrap().as_str(), pushed.manifest_digest);
        assert_eq!(head.size, Some(pushed.manifest.len() as u64));

        let Manifest::Image { layers, config, .. } = by_tag.decode().unwrap() else {
            panic!("not an image")
        };
        assert_eq!(config.digest, pushed.config_digest);
        let blob = fetch_verified(&client, "conf/pull", &layers[0].digest).await;
        assert_eq!(blob.len() as u64, layers[0].size);
        let layer = Digest::parse(&layers[0].digest).unwrap();
        assert_eq!(
            client.blob_head("conf/pull", &layer).await.unwrap(),
            Some(layers[0].size)
        );
        let part = client
            .blob_get_range("conf/pull", &layer, 10, 1033)
            .await
            .unwrap();
        assert_eq!(part.as_ref(), &blob[10..1034]);
    });
}

#[test]
fn push_monolithic_chunked_mount_and_cancel() {
    let reg = plain_registry();
    let client = plain_client(&reg);
    runtime().block_on(async {
        // POST + PUT.
        let data = Bytes::from(vec![7u8; 300_000]);
        let d = client.push_blob("conf/push", data.clone()).await.unwrap();
        assert_eq!(
            client.blob_head("conf/push", &d).await.unwrap(),
            Some(300_000)
        );
        // Chunked, in order, following the registry's Range after each chunk.
        let data2 = Bytes::from(
            (0..1_000_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let d2 = client
            .push_blob_chunked("conf/push", data2.clone(), 256 * 1024)
            .await
            .unwrap();
        let back = client
            .blob_get("conf/push", &d2)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(back, data2);
        // Resume: the registry says where it is.
        let s = client.upload_start("conf/push").await.unwrap();
        let s = client.upload_chunk(&s, data2.slice(..1000)).await.unwrap();
        assert_eq!(s.offset, 1000);
        let status = client.upload_status(&s).await.unwrap();
        assert_eq!(status.offset, 1000);
        // The next offset comes from the registry's Range, not our arithmetic: Distribution
        // 2.8 appends a chunk whatever its Content-Range says, and the session follows it.
        let mut wrong = status.clone();
        wrong.offset = 5000;
        let after = client
            .upload_chunk(&wrong, data2.slice(5000..6000))
            .await
            .unwrap();
        assert_eq!(after.offset, 2000);
        let status = client.upload_status(&after).await.unwrap();
        assert_eq!(status.offset, 2000);
        // Cancel: the session is gone afterwards.
        client.upload_cancel(&status).await.unwrap();
        let err = client.upload_status(&status).await.unwrap_err();
        assert!(err.has_code("BLOB_UPLOAD_UNKNOWN"), "{err}");
        // Cross-repository mount of an existing blob, and of a missing one (upload offered).
        assert_eq!(
            client.mount("conf/other", "conf/push", &d).await.unwrap(),
            Mount::Mounted
        );
        assert_eq!(
            client.blob_head("conf/other", &d).await.unwrap(),
            Some(300_000)
        );
        let missing = Digest::sha256(b"never pushed");
        match client
            .mount("conf/other", "conf/push", &missing)
            .await
            .unwrap()
        {
            Mount::Upload(s) => client.upload_cancel(&s).await.unwrap(),
            other => panic!("mounted a blob that does not exist: {other:?}"),
        }
    });
}

#[test]
fn content_discovery_paginates_beyond_one_page() {
    let reg = plain_registry();
    let client = plain_client(&reg);
    let http = HttpClient::plain();
    let base = TestImage::random("conf/tags", "t00")
        .push(&http, reg.url())
        .unwrap();
    TestImage::random("conf/a", "x")
        .push(&http, reg.url())
        .unwrap();
    TestImage::random("conf/b", "x")
        .push(&http, reg.url())
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut want = vec!["t00".to_owned()];
        for i in 1..12 {
            let tag = format!("t{i:02}");
            client
                .manifest_put(
                    "conf/tags",
                    &tag,
                    DOCKER_MANIFEST,
                    Bytes::from(base.manifest.clone()),
                )
                .await
                .unwrap();
            want.push(tag);
        }
        // Distribution 2.8 ignores `n` and `last` on tag lists (it paginates the catalog
        // only): every tag arrives, in storage order, without a Link header.
        let mut tags = client.tags("conf/tags", Some(5)).await.unwrap();
        tags.sort();
        assert_eq!(tags, want);
        // The catalog, one repository per page.
        let repos = client.catalog(Some(1)).await.unwrap();
        assert_eq!(repos, ["conf/a", "conf/b", "conf/tags"]);
        let first = client.catalog_page(Some(1), None).await.unwrap();
        assert_eq!(first.items, ["conf/a"]);
        let second = client.catalog_page(Some(2), Some("conf/a")).await.unwrap();
        assert_eq!(second.items, ["conf/b", "conf/tags"]);
        assert!(first.next.is_some());
        let second = client.catalog_page(Some(2), Some("conf/a")).await.unwrap();
        assert_eq!(second.items, ["conf/b", "conf/tags"]);
    });
}

#[test]
fn content_management_deletes_and_error_cases() {
    let reg = plain_registry();
    let client = plain_client(&reg);
    let pushed = TestImage::random("conf/del", "v1")
        .push(&HttpClient::plain(), reg.url())
        .unwrap();
    runtime().block_on(async {
        let err = client.manifest_get("conf/del", "nope").await.unwrap_err();
        assert!(err.has_code("MANIFEST_UNKNOWN"), "{err}");
        assert!(
            err.to_string()
                .contains("check that the tag or digest exists"),
            "{err}"
        );
        assert!(
            client
                .manifest_head("conf/del", "nope")
                .await
                .unwrap()
                .is_none()
        );
        // A blob PUT with a digest that does not match is rejected.
        let s = client.upload_start("conf/del").await.unwrap();
        let err = client
            .upload_put_bytes(
                &s,
                &Digest::sha256(b"other"),
                Bytes::from_static(b"content"),
            )
            .await
            .unwrap_err();
        assert!(err.has_code("DIGEST_INVALID"), "{err}");
        // A manifest naming a missing blob is rejected.
        let bad = String::from_utf8(pushed.manifest.clone())
            .unwrap()
            .replace(&pushed.config_digest, Digest::sha256(b"missing").as_str());
        let err = client
            .manifest_put("conf/del", "bad", DOCKER_MANIFEST, Bytes::from(bad))
            .await
            .unwrap_err();
        assert!(err.has_code("MANIFEST_BLOB_UNKNOWN"), "{err}");
        // Deletes: manifest by digest, then blob.
        client
            .manifest_delete("conf/del", &pushed.manifest_digest)
            .await
            .unwrap();
        assert!(
            client
                .manifest_head("conf/del", &pushed.manifest_digest)
                .await
                .unwrap()
                .is_none()
        );
        let err = client.manifest_get("conf/del", "v1").await.unwrap_err();
        assert!(err.has_code("MANIFEST_UNKNOWN"), "{err}");
        let config = Digest::parse(&pushed.config_digest).unwrap();
        client.blob_delete("conf/del", &config).await.unwrap();
        assert_eq!(client.blob_head("conf/del", &config).await.unwrap(), None);
        let err = client.blob_get("conf/del", &config).await.unwrap_err();
        assert!(err.has_code("BLOB_UNKNOWN"), "{err}");
    });
}

#[test]
fn retries_honour_retry_after_on_429_and_503() {
    use crate::support::BrokenRegistry;
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let digest = Digest::sha256(&manifest);
    let routes = vec![(
        format!("/v2/flaky/app/manifests/{digest}"),
        "application/vnd.oci.image.manifest.v1+json".to_owned(),
        manifest.clone(),
    )];
    for status in ["429 Too Many Requests", "503 Service Unavailable"] {
        let server = BrokenRegistry::start_flaky(routes.clone(), 2, status);
        let client = plain_client_at(&server.addr);
        let started = std::time::Instant::now();
        let m = runtime()
            .block_on(client.manifest_get("flaky/app", digest.as_str()))
            .unwrap();
        assert_eq!(m.bytes.as_ref(), manifest.as_slice());
        // Two refusals, each asking for one second.
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(2),
            "{status}: {:?}",
            started.elapsed()
        );
        // With fewer attempts than refusals, the registry's answer is the error.
        let server = BrokenRegistry::start_flaky(routes.clone(), 5, status);
        let client = vch_registry::Client::builder(&server.addr)
            .settings(plain_settings(&server.addr))
            .attempts(2)
            .build()
            .unwrap();
        let err = runtime()
            .block_on(client.manifest_get("flaky/app", digest.as_str()))
            .unwrap_err();
        assert_eq!(
            err.retry_after(),
            Some(std::time::Duration::from_secs(1)),
            "{err}"
        );
        assert!(err.is_retryable());
    }
}
