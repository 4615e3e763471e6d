//! Interop with the real docker CLI and skopeo.

use std::process::Command;

use vch_testbed::{Dockerd, Registry, TestImage};

use crate::Home;

#[test]
fn docker_push_reads_back_and_regctl_copies_run_under_docker_and_skopeo_agrees() {
    let reg = Registry::start().unwrap();
    let host = reg.addr();
    let dockerd = Dockerd::builder().insecure_registry(&host).start().unwrap();
    let image = TestImage::busybox(&dockerd).unwrap();
    let pushed_ref = format!("{host}/interop/busybox:v1");
    dockerd
        .docker_ok(["tag", image.as_str(), pushed_ref.as_str()])
        .unwrap();
    let push_out = dockerd.docker_ok(["push", pushed_ref.as_str()]).unwrap();
    let docker_digest = push_out
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("docker push prints the digest")
        .to_owned();

    let home = Home::new();
    home.ok(&["registry", "set", &host, "--tls", "disabled"]);
    // What docker pushed reads back identically.
    assert_eq!(
        home.ok(&["image", "digest", &pushed_ref]).trim(),
        docker_digest
    );

    // regctl copies it; docker pulls and runs the copy.
    let copied = format!("{host}/interop/copied:v1");
    assert_eq!(
        home.ok(&["image", "copy", &pushed_ref, &copied]).trim(),
        docker_digest
    );
    dockerd.docker_ok(["rmi", pushed_ref.as_str()]).unwrap();
    dockerd.docker_ok(["pull", copied.as_str()]).unwrap();
    assert_eq!(
        dockerd
            .docker_ok(["run", "--rm", copied.as_str(), "echo", "copied"])
            .unwrap(),
        "copied\n"
    );

    // skopeo agrees on the digest.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{copied}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], docker_digest.as_str());
}
