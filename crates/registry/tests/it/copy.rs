//! Image copy between real registries: streamed, verified, mounted, skipped, by platform.

use bytes::Bytes;
use vch_registry::{
    BlobOutcome, CopyEvent, CopyOptions, Credentials, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    Digest, Error, Platform, copy_image,
};
use vch_testbed::{HttpClient, TestImage};

use crate::support::{
    BrokenRegistry, Pki, fetch_verified, image_ref, plain_client, plain_client_at, plain_registry,
    plain_registry_with, runtime, tls_client, tls_registry,
};

#[test]
fn copy_between_registries_then_skip_then_mount() {
    let src_reg = plain_registry();
    let pki = Pki::new();
    let dst_reg = tls_registry(&pki);
    let pushed = TestImage::random("src/app", "v1")
        .layers(3)
        .layer_size(2 << 20)
        .push(&HttpClient::plain(), src_reg.url())
        .unwrap();
    let src = plain_client(&src_reg);
    let dst = tls_client(&dst_reg, &pki, Credentials::Anonymous);
    let s = image_ref(&src_reg.addr(), "src/app:v1");
    let d = image_ref(&dst_reg.addr(), "dst/app:copied");
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let opts = CopyOptions::default().progress(std::sync::Arc::new(move |e| {
        ev.lock().unwrap().push(e.clone());
    }));
    runtime().block_on(async {
        let r = copy_image(&src, &s, &dst, &d, &opts).await.unwrap();
        assert_eq!(r.digest, pushed.manifest_digest);
        assert_eq!((r.copied, r.skipped, r.mounted), (4, 0, 0));
        assert_eq!(r.bytes, pushed.total_bytes);
        let back = dst.manifest_get("dst/app", "copied").await.unwrap();
        assert_eq!(back.bytes.as_ref(), pushed.manifest.as_slice());
        for l in &pushed.layer_digests {
            fetch_verified(&dst, "dst/app", l).await;
        }
        // Again: every blob is already there.
        let r = copy_image(&src, &s, &dst, &d, &CopyOptions::default())
            .await
            .unwrap();
        assert_eq!((r.copied, r.skipped), (0, 4));
        // Within one registry: mounted, not streamed.
        let d2 = image_ref(&dst_reg.addr(), "other/app:m");
        let r = copy_image(&dst, &d, &dst, &d2, &CopyOptions::default())
            .await
            .unwrap();
        assert_eq!((r.copied, r.mounted), (0, 4));
        assert_eq!(r.digest, pushed.manifest_digest);
    });
    let events = events.lock().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, CopyEvent::BlobDone { .. }))
            .count(),
        4
    );
    assert!(matches!(
        events.last().unwrap(),
        CopyEvent::ManifestPushed { .. }
    ));
    // Every streamed blob reports its bytes, the whole size last, before it is done.
    for (i, e) in events.iter().enumerate() {
        match e {
            CopyEvent::BlobProgress {
                digest,
                bytes,
                size,
            } => assert!(bytes <= size, "{digest}: {bytes} of {size}"),
            CopyEvent::BlobDone {
                digest,
                size,
                outcome,
            } => {
                assert_eq!(*outcome, BlobOutcome::Copied);
                let last = events[..i].iter().rev().find_map(|e| match e {
                    CopyEvent::BlobProgress {
                        digest: d, bytes, ..
                    } if d == digest => Some(*bytes),
                    _ => None,
                });
                assert_eq!(last, Some(*size), "{digest}: last progress before done");
            }
            _ => {}
        }
    }
}

#[test]
fn corrupted_source_blob_is_detected_and_nothing_is_pushed() {
    let (real, pushed) = plain_registry_with(
        TestImage::random("src/bad", "v1")
            .layers(2)
            .layer_size(1 << 20),
    );
    let client = plain_client(&real);
    let rt = runtime();
    // Serve the same image from a broken server that flips one byte of the second layer.
    let mut routes = vec![(
        "/v2/src/bad/manifests/v1".to_owned(),
        DOCKER_MANIFEST.to_owned(),
        pushed.manifest.clone(),
    )];
    let blobs: Vec<String> = std::iter::once(pushed.config_digest.clone())
        .chain(pushed.layer_digests.clone())
        .collect();
    for (i, b) in blobs.iter().enumerate() {
        let d = Digest::parse(b).unwrap();
        let mut bytes = rt
            .block_on(async { client.blob_get("src/bad", &d).await.unwrap().bytes().await })
            .unwrap()
            .to_vec();
        if i == 2 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        routes.push((
            format!("/v2/src/bad/blobs/{b}"),
            "application/octet-stream".into(),
            bytes,
        ));
    }
    let broken = BrokenRegistry::start(routes);
    let src = plain_client_at(&broken.addr);
    let dst_reg = plain_registry();
    let dst = plain_client(&dst_reg);
    let s = image_ref(&broken.addr, "src/bad:v1");
    let d = image_ref(&dst_reg.addr(), "dst/bad:v1");
    rt.block_on(async {
        let err = copy_image(&src, &s, &dst, &d, &CopyOptions::default().concurrency(1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&blobs[2]), "{err}");
        // No manifest, and the corrupt layer is not in the target.
        assert!(dst.manifest_head("dst/bad", "v1").await.unwrap().is_none());
        let bad = Digest::parse(&blobs[2]).unwrap();
        assert_eq!(dst.blob_head("dst/bad", &bad).await.unwrap(), None);
    });
}

#[test]
fn index_copies_whole_or_one_platform() {
    let reg = plain_registry();
    let http = HttpClient::plain();
    let amd = TestImage::random("multi/app", "amd")
        .push(&http, reg.url())
        .unwrap();
    let arm = TestImage::random("multi/app", "arm")
        .push(&http, reg.url())
        .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": amd.manifest_digest, "size": amd.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": DOCKER_MANIFEST, "digest": arm.manifest_digest, "size": arm.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    })
    .to_string();
    let client = plain_client(&reg);
    let dst_reg = plain_registry();
    let dst = plain_client(&dst_reg);
    runtime().block_on(async {
        let index_digest = client
            .manifest_put("multi/app", "v1", DOCKER_MANIFEST_LIST, Bytes::from(index))
            .await
            .unwrap();
        let s = image_ref(&reg.addr(), "multi/app:v1");
        let all = image_ref(&dst_reg.addr(), "copy/all:v1");
        let r = copy_image(&client, &s, &dst, &all, &CopyOptions::default())
            .await
            .unwrap();
        assert_eq!(r.digest, index_digest.to_string());
        assert_eq!(r.media_type, DOCKER_MANIFEST_LIST);
        assert!(
            dst.manifest_head("copy/all", &arm.manifest_digest)
                .await
                .unwrap()
                .is_some()
        );
        let one = image_ref(&dst_reg.addr(), "copy/one:v1");
        let opts = CopyOptions::default().platform(Platform::parse("linux/arm64").unwrap());
        let r = copy_image(&client, &s, &dst, &one, &opts).await.unwrap();
        assert_eq!(r.digest, arm.manifest_digest);
        assert!(
            dst.manifest_head("copy/one", &amd.manifest_digest)
                .await
                .unwrap()
                .is_none()
        );
        let opts = CopyOptions::default().platform(Platform::parse("windows/amd64").unwrap());
        let err = copy_image(&client, &s, &dst, &one, &opts)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoPlatform { .. }), "{err}");
    });
}

#[test]
fn registry_killed_mid_copy_leaves_no_half_image_and_a_retry_completes() {
    let (src_reg, pushed) = plain_registry_with(
        TestImage::random("src/big", "v1")
            .layers(6)
            .layer_size(4 << 20),
    );
    let dst_reg = plain_registry();
    let (src, dst) = (plain_client(&src_reg), plain_client(&dst_reg));
    let s = image_ref(&src_reg.addr(), "src/big:v1");
    let d = image_ref(&dst_reg.addr(), "dst/big:v1");
    let rt = runtime();
    // Kill the destination as soon as the first blob has landed.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let opts = CopyOptions::default()
        .concurrency(1)
        .progress(std::sync::Arc::new(move |e| {
            if matches!(e, vch_registry::CopyEvent::BlobDone { .. })
                && let Some(tx) = tx.lock().unwrap().take()
            {
                tx.send(()).unwrap();
            }
        }));
    let pid = dst_reg.pid().unwrap();
    let killer = std::thread::spawn(move || {
        rx.recv().unwrap();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    });
    let err = rt
        .block_on(copy_image(&src, &s, &dst, &d, &opts))
        .unwrap_err();
    killer.join().unwrap();
    assert!(err.is_retryable(), "{err}");

    // The same registry (config, storage, address) comes back.
    let mut again = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dst_reg.dir().join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        rt.block_on(dst.ping()).is_ok()
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(up, "the registry did not come back");
        rt.block_on(async {
            assert!(
                dst.manifest_head("dst/big", "v1").await.unwrap().is_none(),
                "a half image is visible"
            );
            let r = copy_image(&src, &s, &dst, &d, &CopyOptions::default())
                .await
                .unwrap();
            assert_eq!(r.digest, pushed.manifest_digest);
            assert!(
                r.skipped >= 1,
                "blobs that landed before the kill are reused: {r:?}"
            );
            assert_eq!(r.skipped + r.copied, 7);
        });
    }));
    let _ = again.kill();
    let _ = again.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Issue 6: a streamed upload that breaks mid-way continues from the registry's `Range`
/// (re-reading the source from the last hash checkpoint before it, with a ranged `GET`)
/// instead of restarting, on a registry that keeps upload offsets server-side.
#[test]
fn broken_upload_resumes_from_the_registry_range() {
    let (src_reg, pushed) =
        plain_registry_with(TestImage::random("src/resume", "v1").layer_size(20 << 20));
    let server = crate::support::UploadServer::start(12 << 20);
    let dst = plain_client_at(&server.addr);
    let src = plain_client(&src_reg);
    let s = image_ref(&src_reg.addr(), "src/resume:v1");
    let d = image_ref(&server.addr, "dst/resume:v1");
    let offsets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = offsets.clone();
    let opts = CopyOptions::default()
        .concurrency(1)
        .progress(std::sync::Arc::new(move |e| {
            if let vch_registry::CopyEvent::BlobResumed { offset, .. } = e {
                seen.lock().unwrap().push(*offset);
            }
        }));
    let r = runtime()
        .block_on(copy_image(&src, &s, &dst, &d, &opts))
        .unwrap();
    assert_eq!(r.digest, pushed.manifest_digest);
    assert_eq!(r.resumed, 1, "{r:?}");
    let offsets = offsets.lock().unwrap().clone();
    assert_eq!(offsets.len(), 1);
    // Past the first hash checkpoint (8 MiB): the source was read again from there.
    assert!(
        offsets[0] > 12 << 20 && offsets[0] <= 13 << 20,
        "resumed at {offsets:?}"
    );
    // Bytes up to the registry's offset were not sent again.
    let sent = server.body_bytes.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        sent, pushed.total_bytes,
        "every blob byte sent exactly once"
    );
    let layer = &pushed.layer_digests[0];
    let blob = server.blob(layer).unwrap();
    assert_eq!(&crate::support::sha256(&blob), layer);
    assert!(server.has_manifest("v1"));
}

/// Distribution 2.8 cancels a session whose bytes no longer match its signed offset (an
/// upload that broke mid-request): the copy notices the session is gone and uploads the blob
/// afresh.
#[test]
fn broken_upload_on_distribution_starts_over_when_the_session_is_gone() {
    let (src_reg, pushed) =
        plain_registry_with(TestImage::random("src/restart", "v1").layer_size(20 << 20));
    let dst_reg = plain_registry();
    let relay = crate::support::CuttingRelay::start(&dst_reg.addr(), 12 << 20);
    let dst = plain_client_at(&relay.addr);
    let src = plain_client(&src_reg);
    let s = image_ref(&src_reg.addr(), "src/restart:v1");
    let d = image_ref(&relay.addr, "dst/restart:v1");
    let rt = runtime();
    let r = rt
        .block_on(copy_image(
            &src,
            &s,
            &dst,
            &d,
            &CopyOptions::default().concurrency(1),
        ))
        .unwrap();
    assert_eq!(relay.cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!((r.resumed, r.copied), (0, 2), "{r:?}");
    assert_eq!(r.digest, pushed.manifest_digest);
    // The layer went twice: the broken part, then the whole blob.
    let sent = relay.client_bytes.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent > pushed.total_bytes + (12 << 20), "{sent}");
    let direct = plain_client(&dst_reg);
    rt.block_on(fetch_verified(
        &direct,
        "dst/restart",
        &pushed.layer_digests[0],
    ));
}
