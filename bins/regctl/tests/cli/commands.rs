//! The command set against Distribution registries: plain HTTP, TLS, htpasswd; --json, exit
//! codes, --policy.

use vch_testbed::{HttpClient, Registry, TestImage};

use crate::{Home, TestPki};

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let home = Home::new();
    assert_eq!(home.run(&[]).status.code(), Some(2));
    assert_eq!(home.run(&["tag", "ls"]).status.code(), Some(2));
    assert_eq!(
        home.run(&[
            "image",
            "copy",
            "a",
            "b",
            "--platform",
            "x",
            "--all-platforms"
        ])
        .status
        .code(),
        Some(2)
    );
    // Nothing listens on port 1: an operation failure, one line on stderr.
    let out = home.run(&["tag", "ls", "127.0.0.1:1/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("regctl: ") && err.contains("cannot connect"),
        "{err}"
    );
}

#[test]
fn read_commands_on_a_plain_registry() {
    let reg = Registry::start().unwrap();
    let pushed = TestImage::random("team/app", "v1")
        .layers(2)
        .push(&HttpClient::plain(), reg.url())
        .unwrap();
    let home = Home::new();
    let host = reg.addr();
    home.ok(&["registry", "set", &host, "--tls", "disabled"]);
    let r = format!("{host}/team/app:v1");
    assert_eq!(home.ok(&["tag", "ls", &format!("{host}/team/app")]), "v1\n");
    assert_eq!(
        home.ok(&["repo", "ls", &host, "--json"])
            .trim()
            .replace([' ', '\n'], ""),
        r#"["team/app"]"#
    );
    assert_eq!(
        home.ok(&["image", "digest", &r]).trim(),
        pushed.manifest_digest
    );
    assert_eq!(
        home.ok(&["manifest", "head", &r]).trim(),
        pushed.manifest_digest
    );
    let raw = home.run(&["manifest", "get", &r, "--format", "raw"]);
    assert_eq!(raw.stdout, pushed.manifest);
    let layer = &pushed.layer_digests[0];
    let blob = home.run(&["blob", "get", &format!("{host}/team/app"), layer]);
    assert!(blob.status.success());
    assert_eq!(vch_testbed::sha256_digest(&blob.stdout), *layer);
    let head: serde_json::Value = serde_json::from_str(&home.ok(&[
        "blob",
        "head",
        &format!("{host}/team/app"),
        layer,
        "--json",
    ]))
    .unwrap();
    assert_eq!(head["size"].as_u64(), Some(blob.stdout.len() as u64));
    let inspect: serde_json::Value =
        serde_json::from_str(&home.ok(&["image", "inspect", &r])).unwrap();
    assert_eq!(inspect["architecture"], "amd64");
    // Unknown tag: exit 1 with the registry's code and advice.
    let out = home.run(&["manifest", "get", &format!("{host}/team/app:nope")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MANIFEST_UNKNOWN"));
}

#[test]
fn copy_to_tls_registry_then_tag_and_manifest_delete() {
    let src = Registry::start().unwrap();
    let pki = TestPki::new();
    let (cert, key) = pki.server_files("server", &["127.0.0.1"]);
    let cap = pki.ca_path();
    let dst = Registry::builder().tls(&cert, &key).start().unwrap();
    let pushed = TestImage::random("src/app", "v1")
        .layers(3)
        .layer_size(1 << 20)
        .push(&HttpClient::plain(), src.url())
        .unwrap();

    let home = Home::new();
    home.ok(&["registry", "set", &src.addr(), "--tls", "disabled"]);
    let s = format!("{}/src/app:v1", src.addr());
    let d = format!("{}/dst/app:v1", dst.addr());
    // Untrusted CA: refused with the TLS hint.
    let out = home.run(&["image", "copy", &s, &d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cacert"));
    home.ok(&[
        "registry",
        "set",
        &dst.addr(),
        "--cacert",
        cap.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&home.ok(&["image", "copy", &s, &d, "--json"])).unwrap();
    assert_eq!(report["digest"], pushed.manifest_digest.as_str());
    assert_eq!(report["copied"], 4);
    // Same registry: mounted.
    let d2 = format!("{}/other/app:v2", dst.addr());
    let report: serde_json::Value =
        serde_json::from_str(&home.ok(&["image", "copy", &d, &d2, "--json"])).unwrap();
    assert_eq!(
        (report["mounted"].as_u64(), report["copied"].as_u64()),
        (Some(4), Some(0))
    );
    // Tag delete keeps the image by digest; manifest delete removes it.
    home.ok(&["tag", "delete", &d2]);
    assert_eq!(
        home.ok(&["tag", "ls", &format!("{}/other/app", dst.addr())]),
        ""
    );
    let by_digest = format!("{}/other/app@{}", dst.addr(), pushed.manifest_digest);
    assert_eq!(
        home.ok(&["image", "digest", &by_digest]).trim(),
        pushed.manifest_digest
    );
    home.ok(&["manifest", "delete", &by_digest]);
    assert_eq!(
        home.run(&["manifest", "head", &by_digest]).status.code(),
        Some(1)
    );
}

#[test]
fn login_over_tls_with_htpasswd_and_policy_gate() {
    let pki = TestPki::new();
    let (cert, key) = pki.server_files("server", &["127.0.0.1"]);
    let cap = pki.ca_path();
    let reg = Registry::builder()
        .tls(&cert, &key)
        .htpasswd_user("alice", "pw")
        .start()
        .unwrap();
    let home = Home::new();
    let host = reg.addr();
    home.ok(&["registry", "set", &host, "--cacert", cap.to_str().unwrap()]);
    let out = home.run(&["repo", "ls", &host]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log in"));
    let out = home.run_stdin(
        &["registry", "login", &host, "-u", "alice", "--pass-stdin"],
        "wrong\n",
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home.run_stdin(
        &["registry", "login", &host, "-u", "alice", "--pass-stdin"],
        "pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = std::fs::metadata(home.path().join("regctl.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&saved.permissions()) & 0o777,
        0o600
    );
    assert_eq!(home.ok(&["repo", "ls", &host]), "");
    home.ok(&["registry", "logout", &host]);
    assert_eq!(home.run(&["repo", "ls", &host]).status.code(), Some(1));

    // --policy: a whitelist without this registry refuses it with the VCH's message; with it
    // listed (and its CA from the policy), access works without `registry set` trust.
    let plain = Registry::start().unwrap();
    let vch = home.path().join("vch.toml");
    std::fs::write(&vch, "[registry]\nwhitelist = [\"10.9.9.9\"]\n").unwrap();
    let out = home.run(&[
        "--policy",
        vch.to_str().unwrap(),
        "tag",
        "ls",
        &format!("{}/x", plain.addr()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Access denied to unauthorized registry ({})",
            plain.addr()
        )),
        "{err}"
    );
    // An insecure entry: plain HTTP is taken from the policy.
    std::fs::write(
        &vch,
        format!(
            "[registry]\nwhitelist = [\"10.9.9.9\"]\ninsecure = [\"{}\"]\n",
            plain.addr()
        ),
    )
    .unwrap();
    TestImage::random("x", "t")
        .push(&HttpClient::plain(), plain.url())
        .unwrap();
    let home2 = Home::new();
    assert_eq!(
        home2.ok(&[
            "--policy",
            vch.to_str().unwrap(),
            "tag",
            "ls",
            &format!("{}/x", plain.addr())
        ]),
        "t\n"
    );
}

/// Pushes a signature artifact (tagged `sig`) whose subject is `pushed`, through the
/// library client, so the tag schema index of a Distribution registry lists it; its digest.
fn push_signature(
    host: &str,
    repo: &str,
    pushed: &vch_testbed::PushedImage,
) -> vch_registry::Digest {
    use vch_registry::{Client, DOCKER_MANIFEST, HostSettings, OCI_MANIFEST, PlainHttp};
    let settings = HostSettings::builder(host)
        .dangerous()
        .plain_http(PlainHttp::Only)
        .build()
        .unwrap();
    let client = Client::builder(host).settings(settings).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = client
            .push_blob(repo, bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.as_str(), "size": 2},
            "layers": [],
            "subject": {"mediaType": DOCKER_MANIFEST, "digest": pushed.manifest_digest, "size": pushed.manifest.len()},
        })
        .to_string();
        client
            .manifest_put(repo, "sig", OCI_MANIFEST, bytes::Bytes::from(manifest))
            .await
            .unwrap()
    })
}

#[test]
fn artifact_list_shows_referrers_from_the_tag_schema() {
    let reg = Registry::start().unwrap();
    let pushed = TestImage::random("team/signed", "v1")
        .push(&HttpClient::plain(), reg.url())
        .unwrap();
    let host = reg.addr();
    let sig = push_signature(&host, "team/signed", &pushed);
    let home = Home::new();
    home.ok(&["registry", "set", &host, "--tls", "disabled"]);
    let r = format!("{host}/team/signed:v1");
    assert_eq!(
        home.ok(&["artifact", "list", &r]),
        format!("{sig}\tapplication/vnd.example.sig\t")
            + &format!("{}\n", home_size(&home, &host, &sig))
    );
    let by_digest = format!("{host}/team/signed@{}", pushed.manifest_digest);
    let index: serde_json::Value = serde_json::from_str(&home.ok(&[
        "artifact",
        "list",
        &by_digest,
        "--filter-artifact-type",
        "application/vnd.example.sbom",
        "--json",
    ]))
    .unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );

    // Deleting the signature takes it out of the tag schema (Distribution has no referrers
    // API); the emptied index goes away with its tag.
    let fallback_tag = vch_registry::Digest::parse(&pushed.manifest_digest)
        .unwrap()
        .referrers_tag();
    let tags = home.ok(&["tag", "ls", &format!("{host}/team/signed")]);
    assert!(tags.contains(&fallback_tag), "{tags}");
    home.ok(&["manifest", "delete", &format!("{host}/team/signed:sig")]);
    assert_eq!(home.ok(&["artifact", "list", &r]), "");
    assert_eq!(
        home.ok(&["tag", "ls", &format!("{host}/team/signed")]),
        "v1\n"
    );
}

#[test]
fn image_copy_with_referrers_carries_the_signature() {
    let (src, dst) = (Registry::start().unwrap(), Registry::start().unwrap());
    let pushed = TestImage::random("team/signed", "v1")
        .push(&HttpClient::plain(), src.url())
        .unwrap();
    let sig = push_signature(&src.addr(), "team/signed", &pushed);
    let home = Home::new();
    for host in [src.addr(), dst.addr()] {
        home.ok(&["registry", "set", &host, "--tls", "disabled"]);
    }
    let from = format!("{}/team/signed:v1", src.addr());
    let to = format!("{}/copied/app:v1", dst.addr());
    let report: serde_json::Value =
        serde_json::from_str(&home.ok(&["image", "copy", "--referrers", &from, &to, "--json"]))
            .unwrap();
    assert_eq!(report["digest"], pushed.manifest_digest.as_str());
    assert_eq!(report["referrers"], 1);
    let listed = home.ok(&["artifact", "list", &to]);
    assert!(
        listed.starts_with(&format!("{sig}\tapplication/vnd.example.sig\t")),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");
    // Without --referrers the copy leaves them behind.
    let bare = format!("{}/bare/app:v1", dst.addr());
    home.ok(&["image", "copy", &from, &bare]);
    assert_eq!(home.ok(&["artifact", "list", &bare]), "");
}

/// The size of the manifest `digest` in `team/signed`, as `manifest head --json` reports it.
fn home_size(home: &Home, host: &str, digest: &vch_registry::Digest) -> u64 {
    let head: serde_json::Value = serde_json::from_str(&home.ok(&[
        "manifest",
        "head",
        &format!("{host}/team/signed@{digest}"),
        "--json",
    ]))
    .unwrap();
    head["size"].as_u64().unwrap()
}
