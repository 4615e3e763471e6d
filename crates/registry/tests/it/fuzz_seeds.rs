//! Replays the registry fuzz seed corpora (`fuzz/seeds/<target>/`) through the fuzz targets'
//! own checks ([`crate::fuzz_checks`]).
//!
//! The `seed-<hash>` files are generated from the tables below: `VCH_WRITE_SEEDS=1 cargo test -p
//! vch-registry --test it fuzz_seeds -- --test-threads=1` rewrites them; otherwise a test checks
//! that the committed files match the tables. Every file in a seed directory is replayed, so a
//! reproducer minimised from a fuzzer crash and saved there becomes a regression test.

use std::path::PathBuf;

use vch_testbed::{SeedCorpus, SeedTarget};

use crate::fuzz_checks;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

const CHALLENGES: &[&str] = &[
    r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
    r#"Basic realm="Registry Realm""#,
    r#"Bearer realm="https://harbor.example/service/token",service="harbor-registry",scope="repository:library/nginx:pull,push""#,
    r#"Bearer realm="https://r/token", error="invalid_token", Basic realm="x""#,
    r#"Bearer realm="a\"b\\c",service=svc,scope="repository:a:pull repository:b:pull""#,
    "Negotiate YIIB+gYGKwYBBQUCoIIB7jCCAeqgJDAiBgkqhkiC9xIBAgIGCSqGSIb3EgECAgYKKwYBBAGCNwICCg==",
    ", ,Bearer , basic",
    "BEARER REALM=\"x\", SERVICE=\"y\"",
    "Bearer realm=\"unterminated",
    "Bearer realm=\"x\"\tservice=\"y\"",
];

const LINKS: &[&str] = &[
    r#"</v2/_catalog?last=b&n=2>; rel="next""#,
    "<https://r/v2/x/tags/list?n=1&last=a>; rel=next",
    r#"<a>; rel="prev", <b>; rel="next""#,
    r#"<a>; title="x,y"; rel="next""#,
    r#"<a>; rel="prev next""#,
    r#"<a>; rel="previous""#,
    "<<a>>; rel=next",
    "</v2/x/referrers/sha256:1?n=1&last=sha256:2>; REL=\"NEXT\"",
    "<>; rel=next",
];

fn manifests() -> Vec<String> {
    vec![
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{D1}","size":3}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":9}}]}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"digest":"{D2}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{D1}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":7}},"annotations":{{"a":"b"}}}}"#
        ),
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":1,"artifactType":"application/vnd.example.sbom"}}]}}"#
        ),
        r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#.to_owned(),
        r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:x","size":1}]}"#.to_owned(),
        format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":-1}}}}"#),
        r#"{"schemaVersion":2}"#.to_owned(),
    ]
}

const RULES: &[&str] = &[
    "[[endpoint]]\nname = \"a\"\nurl = \"https://a.example:5000\"\n[[endpoint]]\nname = \"b\"\nurl = \"http://127.0.0.1:5001/\"\nverify_tls = false\n[[rule]]\nname = \"r\"\nfrom = \"a\"\nto = \"b\"\nrepositories = [\"team-a/**\"]\nexclude_tags = [\"*-rc*\"]\ndest_namespace = \"mirror\"\nflatten = 1\ntrigger = \"cron 0 */2 * * mon-fri\"\ndeletions = true\n[retry]\ninitial = \"1s\"\nmax = \"1m\"\nattempts = 3\n",
    "state = \"s.json\"\n[[endpoint]]\nname = \"a\"\nurl = \"https://a\"\n[[endpoint]]\nname = \"b\"\nurl = \"https://b\"\n[[rule]]\nname = \"x\"\nfrom = \"a\"\nto = \"b\"\ntrigger = \"every 1h30m\"\n[[rule]]\nname = \"y\"\nfrom = \"b\"\nto = \"a\"\ntags = [\"{v1,v2}\", \"v?\"]\ntrigger = \"immediate\"\n",
    "[[endpoint]]\nname = \"a\"\nurl = \"ftp://a\"\n",
    "[[rule]]\nname = 1\n",
    "[[endpoint]]\nname = \"a\"\nurl = \"https://a\"\n[[rule]]\nname = \"r\"\nfrom = \"a\"\nto = \"a\"\nflatten = 99\nconcurrency = 0\n",
    "[[endpoint]]\nname = \"a\"\nurl = \"https://[::1]:5000\"\n[[endpoint]]\nname = \"b\"\nurl = \"https://b\"\n[[rule]]\nname = \"r\"\nfrom = \"a\"\nto = \"b\"\nrepositories = [\"a/{b\"]\n",
    "unknown = true\n",
];

const ENVELOPES: &[&str] = &[
    r#"{"events":[{"id":"1","action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:ab","repository":"team-a/app","tag":"v1"},"request":{"host":"127.0.0.1:5000","method":"PUT"}}]}"#,
    r#"{"events":[{"action":"delete","target":{"repository":"a/b","digest":"sha256:ab"}},{"action":"pull","target":{"repository":"a/b"}}]}"#,
    r#"{"events":[{"action":"push","target":{"mediaType":"application/octet-stream","repository":"x"}}]}"#,
    r#"{"events":[]}"#,
    r#"{"events":[{"action":"push","target":{"repository":"a/b","tag":"v1"}}]}"#,
    r#"{"events":{}}"#,
];

fn seeds(target: &str) -> Vec<String> {
    match target {
        "www_authenticate" => CHALLENGES.iter().map(|s| (*s).to_owned()).collect(),
        "link_header" => LINKS.iter().map(|s| (*s).to_owned()).collect(),
        "replication_rules" => RULES.iter().map(|s| (*s).to_owned()).collect(),
        "notify_envelope" => ENVELOPES.iter().map(|s| (*s).to_owned()).collect(),
        _ => manifests(),
    }
}

/// The committed corpora of this crate's fuzz targets.
fn corpus() -> SeedCorpus {
    SeedCorpus::new(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds"),
        vec![
            SeedTarget {
                name: "www_authenticate",
                check: fuzz_checks::www_authenticate,
                seeds: seeds("www_authenticate"),
            },
            SeedTarget {
                name: "link_header",
                check: fuzz_checks::link_header,
                seeds: seeds("link_header"),
            },
            SeedTarget {
                name: "manifest_decode",
                check: fuzz_checks::manifest_decode,
                seeds: seeds("manifest_decode"),
            },
            SeedTarget {
                name: "replication_rules",
                check: fuzz_checks::replication_rules,
                seeds: seeds("replication_rules"),
            },
            SeedTarget {
                name: "notify_envelope",
                check: fuzz_checks::notify_envelope,
                seeds: seeds("notify_envelope"),
            },
        ],
    )
}

#[test]
fn committed_seeds_match_the_tables() {
    corpus().check_committed();
}

#[test]
fn seeds_pass_the_fuzz_checks() {
    corpus().replay();
}

/// The tables exercise the interesting side of each check, not only early returns.
#[test]
fn seeds_reach_past_the_parsers() {
    let parsed = CHALLENGES
        .iter()
        .filter(|c| !vch_registry::parse_www_authenticate(c).is_empty())
        .count();
    assert!(parsed >= 6, "{parsed} challenge seeds parse");
    let next = LINKS
        .iter()
        .filter(|l| vch_registry::parse_link_next(l).is_some())
        .count();
    assert!(next >= 5, "{next} link seeds have a next target");
    let decoded = manifests()
        .iter()
        .filter(|m| vch_registry::Manifest::decode(m.as_bytes(), None).is_ok())
        .count();
    assert_eq!(decoded, 4);
    let loaded = RULES
        .iter()
        .filter(|r| {
            vch_registry::replicate::Rules::parse(r, "t", std::path::Path::new("/")).is_ok()
        })
        .count();
    assert_eq!(loaded, 2);
    let kept = ENVELOPES
        .iter()
        .filter(|e| {
            vch_registry::replicate::parse_envelope(e.as_bytes()).is_ok_and(|v| !v.is_empty())
        })
        .count();
    assert_eq!(kept, 3);
}
