//! A real registry served with our server certificate is trusted by curl and skopeo through
//! our files and the certs.d layout, and refused with another CA's.

use std::path::Path;
use std::process::Command;

use vch_pki::{
    Bundle, CaOptions, CertificateAuthority, Layout, LeafOptions, Overwrite, write_files,
};
use vch_testbed::{HttpClient, Registry, TestImage};

/// A CA with a server certificate for 127.0.0.1 and a client pair, in the VCH layout.
fn pki(dir: &Path) {
    let ca = CertificateAuthority::generate(&CaOptions::new("Registry CA")).unwrap();
    let server = ca
        .issue(&LeafOptions::server(["127.0.0.1", "localhost"]))
        .unwrap();
    let client = ca.issue(&LeafOptions::client("puller")).unwrap();
    let bundle = Bundle {
        ca_cert: Some(ca.cert_pem()),
        ca_key: None,
        server: Some((server.cert_pem(), server.key().to_pem().to_owned())),
        client: Some((client.cert_pem(), client.key().to_pem().to_owned())),
    };
    write_files(dir, &bundle.files(&Layout::Vch).unwrap(), Overwrite::Never).unwrap();
}

fn curl(url: &str, ca: &Path) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap()
}

#[test]
fn registry_with_our_certificate_is_trusted_by_curl_and_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("ours");
    let theirs = tmp.path().join("theirs");
    // The port is only known once the registry runs, so the certs.d layout is written below.
    pki(&ours);
    pki(&theirs);
    let registry = Registry::builder()
        .tls(ours.join("server-cert.pem"), ours.join("server-key.pem"))
        .start()
        .unwrap();
    let port = registry.socket_addr().port();
    let url = format!("https://127.0.0.1:{port}/v2/");

    // curl --cacert: our CA verifies, another CA does not.
    let out = curl(&url, &ours.join("ca.pem"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
    let out = curl(&url, &theirs.join("ca.pem"));
    assert!(!out.status.success());
    assert_eq!(
        out.status.code(),
        Some(60),
        "curl's 'peer certificate cannot be authenticated'"
    );
    let out = curl(
        &format!("https://localhost:{port}/v2/"),
        &ours.join("ca.pem"),
    );
    assert!(out.status.success(), "DNS SAN localhost");

    // skopeo inspect --cert-dir with the certs.d layout for this registry.
    let pushed = TestImage::random("team/app", "v1")
        .push(
            &HttpClient::tls(&ours.join("ca.pem")).unwrap(),
            registry.url(),
        )
        .unwrap();
    let layout = Layout::CertsD {
        host: "127.0.0.1".into(),
        port: Some(port),
    };
    let bundle = Bundle {
        ca_cert: Some(std::fs::read_to_string(ours.join("ca.pem")).unwrap()),
        client: Some((
            std::fs::read_to_string(ours.join("cert.pem")).unwrap(),
            std::fs::read_to_string(ours.join("key.pem")).unwrap(),
        )),
        ..Bundle::default()
    };
    let etc_docker = tmp.path().join("etc-docker");
    let files = write_files(
        &etc_docker,
        &bundle.files(&layout).unwrap(),
        Overwrite::Never,
    )
    .unwrap();
    let cert_dir = etc_docker.join(format!("certs.d/127.0.0.1:{port}"));
    assert_eq!(
        files,
        ["ca.crt", "client.cert", "client.key"]
            .map(|f| cert_dir.join(f))
            .to_vec()
    );
    let image = format!(
        "docker://127.0.0.1:{port}/{}:{}",
        pushed.repository, pushed.tag
    );
    let skopeo = |dir: &Path| {
        Command::new("skopeo")
            .args(["inspect", "--retry-times", "0", "--cert-dir"])
            .arg(dir)
            .arg(&image)
            .env("HOME", tmp.path())
            .output()
            .unwrap()
    };
    let out = skopeo(&cert_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["Digest"], pushed.manifest_digest.as_str());

    // The same layout made from another CA is refused.
    let other = Bundle {
        ca_cert: Some(std::fs::read_to_string(theirs.join("ca.pem")).unwrap()),
        ..Bundle::default()
    };
    let other_etc = tmp.path().join("other-etc");
    write_files(&other_etc, &other.files(&layout).unwrap(), Overwrite::Never).unwrap();
    let out = skopeo(&other_etc.join(format!("certs.d/127.0.0.1:{port}")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("certificate"), "{err}");
}
