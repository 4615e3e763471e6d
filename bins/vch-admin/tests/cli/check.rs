//! `vch-admin check`: the command-line contract (output keys, exit codes, config file, DNS).

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn vch_admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vch-admin"))
        .args(args)
        .output()
        .expect("run vch-admin")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

const SEED: &[&str] = &[
    "check",
    "--wr",
    "10.2.40.40:443",
    "--whitelist-registry",
    "10.2.2.1/24",
    "--wr",
    "*.example.com",
    "--dir",
    "192.168.100.207",
];

#[test]
fn seed_whitelist_allows_exactly_those_and_denies_hub() {
    let mut args = SEED.to_vec();
    args.extend([
        "--json",
        "10.2.40.40:443/app",
        "10.2.2.7/x",
        "reg.example.com/team/app:1",
        "192.168.100.207/x",
        "busybox",
    ]);
    let out = vch_admin(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 5);
    for row in &rows {
        let keys: Vec<_> = row.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 9, "{row}");
        for key in [
            "image",
            "action",
            "reference",
            "registry",
            "allowed",
            "transport",
            "list",
            "entry",
            "reason",
        ] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
        assert_eq!(row["action"], "pull");
        assert_eq!(row["list"], "whitelist");
    }
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["allowed"].as_bool().unwrap(),
                r["transport"].as_str(),
                r["entry"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (true, Some("secure"), Some("10.2.40.40:443")),
            (true, Some("secure"), Some("10.2.2.0/24")),
            (true, Some("secure"), Some("*.example.com")),
            (true, Some("insecure"), Some("192.168.100.207")),
            (false, None, None),
        ]
    );
    assert_eq!(rows[4]["reference"], "docker.io/library/busybox:latest");
    assert_eq!(rows[4]["registry"], "docker.io");
    assert_eq!(
        rows[4]["reason"],
        "Access denied to unauthorized registry (docker.io) while VCH is in whitelist mode"
    );
}

#[test]
fn without_whitelist_hub_is_allowed_and_insecure_entries_set_transport() {
    let out = vch_admin(&[
        "check",
        "--json",
        "--dir",
        "*.example.com",
        "--insecure-registry",
        "192.168.100.207:5000",
        "busybox",
        "r.example.com/x",
        "192.168.100.207:5000/x",
        "192.168.100.207/x",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let transports: Vec<_> = json_lines(&out)
        .iter()
        .map(|r| r["transport"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(transports, ["secure", "insecure", "insecure", "secure"]);
}

#[test]
fn human_output_is_one_line_per_image() {
    let mut args = SEED.to_vec();
    args.extend(["10.2.2.7/x", "busybox"]);
    let out = vch_admin(&args);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "10.2.2.7/x: allowed (secure): allowed by whitelist entry `10.2.2.0/24`\n\
         busybox: denied: Access denied to unauthorized registry (docker.io) while VCH is in whitelist mode\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_and_configuration_errors_exit_2_with_one_line() {
    for args in [
        vec!["check", "--wr", "reg:99999", "x"],
        vec!["check", "--wr", "*.", "x"],
        vec!["check", "--rc", "/nonexistent/ca.pem", "x"],
        vec!["check", "--config", "/nonexistent/vch.toml", "x"],
        vec!["check", "--reverse-dns", "sometimes", "x"],
        vec!["check"],
    ] {
        let out = vch_admin(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = vch_admin(&["check", "--wr", "reg:99999", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("reg:99999") && stderr.contains("port"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_image_exits_2_but_the_others_are_decided() {
    let out = vch_admin(&["check", "--json", "--wr", "reg.x", "reg.x/ok", "reg.x/Bad"]);
    assert_eq!(out.status.code(), Some(2));
    let rows = json_lines(&out);
    assert_eq!(rows[0]["allowed"], true);
    assert_eq!(rows[1]["allowed"], false);
    assert!(rows[1]["reason"].as_str().unwrap().contains("lowercase"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reg.x/Bad"));
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn config_file_registry_section_and_relative_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca =
        "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIUZ4m1yQ5m\n-----END CERTIFICATE-----\n";
    write(&dir.path().join("bad-ca.pem"), ca);
    write(
        &dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let config = dir.path().join("vch.toml");
    write(
        &config,
        "name = \"vch1\"\n[tls]\nmode = \"tlsverify\"\n[registry]\nwhitelist = [\"reg.example.com\"]\ninsecure = [\"10.0.0.1\"]\n",
    );
    let cfg = config.to_str().unwrap();
    let out = vch_admin(&[
        "check",
        "--json",
        "--config",
        cfg,
        "--wr",
        "quay.io",
        "reg.example.com/a",
        "quay.io/b",
        "10.0.0.1/c",
        "busybox",
    ]);
    let allowed: Vec<_> = json_lines(&out)
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, true, true, false]);
    assert_eq!(out.status.code(), Some(1));

    // CA paths in the file are relative to the file; a key is not a CA.
    write(
        &config,
        "[registry]\nwhitelist = [\"reg.example.com\"]\nca = [\"key.pem\"]\n",
    );
    let out = vch_admin(&["check", "--config", cfg, "reg.example.com/a"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key.pem") && stderr.contains("private key"),
        "{stderr}"
    );
    write(
        &config,
        "[registry]\nwhitelist = [\"reg.example.com\"]\nca = [\"bad-ca.pem\"]\n",
    );
    let out = vch_admin(&["check", "--config", cfg, "reg.example.com/a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad-ca.pem"));

    // Unknown keys in the section are refused, naming the section.
    write(&config, "[registry]\nwhitelists = [\"reg.example.com\"]\n");
    let out = vch_admin(&["check", "--config", cfg, "reg.example.com/a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("whitelists"));
}

#[test]
fn reverse_dns_through_a_real_dnsmasq() {
    let ip: IpAddr = "10.77.0.1".parse().unwrap();
    let dns = vch_testbed::Dns::builder()
        .host("reg.example.com", ip)
        .ptr("10.77.0.2".parse().unwrap(), "evil.example.com")
        .a("evil.example.com", "10.99.9.9".parse().unwrap())
        .start()
        .expect("dnsmasq from the testbed must start (apt-get install dnsmasq)");
    let server = dns.addr().to_string();
    let out = vch_admin(&[
        "check",
        "--json",
        "--wr",
        "*.example.com",
        "--dns-server",
        &server,
        "10.77.0.1/a",
        "10.77.0.2/a",
    ]);
    let rows = json_lines(&out);
    assert_eq!(rows[0]["allowed"], true, "{rows:?}");
    assert_eq!(rows[0]["entry"], "*.example.com");
    assert_eq!(rows[1]["allowed"], false, "{rows:?}");
    assert!(
        rows[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not confirmed")
    );
    assert_eq!(out.status.code(), Some(1));
    let out = vch_admin(&[
        "check",
        "--json",
        "--wr",
        "*.example.com",
        "--dns-server",
        &server,
        "--reverse-dns",
        "ptr-only",
        "10.77.0.2/a",
    ]);
    assert_eq!(json_lines(&out)[0]["allowed"], true);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn push_without_a_push_list_is_decided_by_the_whitelist() {
    let out = vch_admin(&[
        "check",
        "--push",
        "--json",
        "--wr",
        "*.example.com",
        "--dir",
        "10.0.0.1",
        "a.example.com/x",
        "10.0.0.1/x",
        "other.org/x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rows = json_lines(&out);
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["list"].as_str().unwrap(),
                r["allowed"].as_bool().unwrap(),
                r["transport"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("push", "whitelist", true, Some("secure")),
            ("push", "whitelist", true, Some("insecure")),
            ("push", "whitelist", false, None),
        ]
    );
    let out = vch_admin(&["check", "--push", "--wr", "reg.x", "reg.x/a", "busybox"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "reg.x/a: push allowed (secure) by the whitelist (no push list): allowed by whitelist \
         entry `reg.x`\n\
         busybox: push denied by the whitelist (no push list): Access denied to unauthorized \
         registry (docker.io) while VCH is in whitelist mode\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn push_list_decides_pushes_alone_and_pulls_stay_with_the_whitelist() {
    let base = [
        "check",
        "--wr",
        "*.example.com",
        "--dir",
        "insecure.example.com",
        "--push-registry",
        "push.example.com",
        "--push-registry",
        "insecure.example.com",
    ];
    let images = [
        "push.example.com/a",
        "insecure.example.com/a",
        "pull.example.com/a",
    ];
    let mut args = base.to_vec();
    args.extend(["--push", "--json"]);
    args.extend(images);
    let out = vch_admin(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rows = json_lines(&out);
    assert!(
        rows.iter()
            .all(|r| r["action"] == "push" && r["list"] == "push"),
        "{rows:?}"
    );
    let allowed: Vec<_> = rows
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(allowed, [true, true, false]);
    assert_eq!(rows[0]["entry"], "push.example.com");
    assert_eq!(
        rows[0]["reason"],
        "allowed by push-list entry `push.example.com`"
    );
    // The insecure list says how the registry is reached, not whether a push may go there.
    assert_eq!(rows[1]["transport"], "insecure");
    assert_eq!(
        rows[2]["reason"],
        "Access denied to unauthorized registry (pull.example.com) for push: not in the VCH's push list"
    );

    // The same images as pulls: the whitelist decides, the push list plays no part.
    let mut args = base.to_vec();
    args.push("--json");
    args.extend(images);
    let out = vch_admin(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        json_lines(&out)
            .iter()
            .all(|r| r["action"] == "pull" && r["list"] == "whitelist")
    );

    let mut args = base.to_vec();
    args.extend(["--push", "push.example.com/a", "pull.example.com/a"]);
    let out = vch_admin(&args);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "push.example.com/a: push allowed (secure) by the push list: allowed by push-list entry \
         `push.example.com`\n\
         pull.example.com/a: push denied by the push list: Access denied to unauthorized registry \
         (pull.example.com) for push: not in the VCH's push list\n"
    );
    let out = vch_admin(&["check", "--push", "--push-registry", "reg:99999", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn an_empty_push_list_denies_every_push_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vch.toml");
    write(
        &config,
        "[registry]\nwhitelist = [\"reg.example.com\"]\npush = []\n",
    );
    let cfg = config.to_str().unwrap();
    let out = vch_admin(&[
        "check",
        "--config",
        cfg,
        "--push",
        "--json",
        "reg.example.com/a",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let row = &json_lines(&out)[0];
    assert_eq!(row["action"], "push");
    assert_eq!(row["list"], "push");
    assert_eq!(row["allowed"], false);
    assert_eq!(row["entry"], Value::Null);
    assert_eq!(
        row["reason"],
        "Access denied: pushes are disabled on this VCH (the push list is empty; reg.example.com is refused like every registry)"
    );
    let out = vch_admin(&["check", "--config", cfg, "--push", "reg.example.com/a"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "reg.example.com/a: push denied by the empty push list: Access denied: pushes are \
         disabled on this VCH (the push list is empty; reg.example.com is refused like every \
         registry)\n"
    );
    // Pulls are not affected.
    let out = vch_admin(&["check", "--config", cfg, "reg.example.com/a"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // `--push-registry` adds to the file's push list, as `--wr` adds to its whitelist.
    let out = vch_admin(&[
        "check",
        "--config",
        cfg,
        "--push",
        "--json",
        "--push-registry",
        "reg.example.com",
        "reg.example.com/a",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_lines(&out)[0]["entry"], "reg.example.com");
    // `--no-push` on the command line, whatever the file says.
    let out = vch_admin(&["check", "--no-push", "--push", "--wr", "reg.x", "reg.x/a"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = vch_admin(&["check", "--no-push", "--push-registry", "reg.x", "reg.x/a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_config_narrowed_by_update_is_checked_with_the_lists_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vch.toml");
    write(
        &config,
        "[registry]\nwhitelist = [\"*.example.com\"]\n\
         [registry.narrowed]\nwhitelist = [\"a.example.com\"]\npush = [\"a.example.com\"]\n",
    );
    let cfg = config.to_str().unwrap();
    let out = vch_admin(&[
        "check",
        "--config",
        cfg,
        "--json",
        "--wr",
        "c.example.com",
        "a.example.com/x",
        "b.example.com/x",
        "c.example.com/x",
    ]);
    let allowed: Vec<_> = json_lines(&out)
        .iter()
        .map(|r| r["allowed"].as_bool().unwrap())
        .collect();
    assert_eq!(
        allowed,
        [true, false, true],
        "flags add to the lists in force"
    );
    let out = vch_admin(&[
        "check",
        "--config",
        cfg,
        "--push",
        "--json",
        "b.example.com/x",
    ]);
    let row = &json_lines(&out)[0];
    assert_eq!(
        (row["list"].as_str(), row["allowed"].as_bool()),
        (Some("push"), Some(false))
    );

    // A narrowed list widened by hand is a configuration error, never a wider policy.
    write(
        &config,
        "[registry]\nwhitelist = [\"*.example.com\"]\n[registry.narrowed]\nwhitelist = [\"*.org\"]\n",
    );
    let out = vch_admin(&["check", "--config", cfg, "x.org/a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("*.org"),
        "{out:?}"
    );
}
