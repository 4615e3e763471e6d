//! Deciding a pre-parsed reference allocates nothing, at any policy size.

use vch_policy::{ImageRef, PolicyBuilder};

#[test]
fn deciding_allocates_nothing() {
    let mut builder = PolicyBuilder::new();
    for i in 0..2000u32 {
        builder
            .whitelist(format!("reg{i}.example.com:5000/team{i}"))
            .whitelist(format!("*.zone{i}.example.org"))
            .whitelist(format!("10.{}.{}.0/24", i / 256, i % 256))
            .whitelist(format!("[fd00::{i:x}]"));
    }
    let policy = builder.insecure("*.insecure.example.com").build().unwrap();
    let images: Vec<ImageRef> = [
        "reg7.example.com:5000/team7/app:1",
        "a.b.zone9.example.org/x",
        "10.3.4.5/x",
        "[fd00::1f]/x",
        "busybox",
        "registry-1.docker.io/busybox",
        "x.insecure.example.com/a",
        "nothing.example.net/a/b/c",
        "192.0.2.1:5000/a",
    ]
    .iter()
    .map(|r| ImageRef::parse(r).unwrap())
    .collect();

    let mut allowed = 0;
    let info = allocation_counter::measure(|| {
        for image in &images {
            let decision = policy.decide(image);
            allowed += usize::from(decision.is_allowed());
            // Reading the decision's parts allocates nothing either.
            std::hint::black_box((decision.entry(), decision.transport(), decision.registry()));
        }
    });
    assert_eq!(allowed, 5);
    assert_eq!(info.count_total, 0, "deciding allocated: {info:?}");
}

/// Parsing a reference costs two allocations (the registry's host name or IPv4 text, the
/// normalised text), plus one for `name:port` and for Hub single names spelled with a registry
/// alias (their `library/` match path); IPv6 registries are formatted (one more as it grows).
#[test]
fn parsing_allocates_two_to_four_times() {
    for (reference, expected) in [
        ("busybox", 2),
        ("busybox:1.36", 2),
        ("reg.example.com/team/app:1.0", 2),
        (
            "Reg.Example.com/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            2,
        ),
        ("reg.example.com:5000/team/app", 3),
        ("10.2.40.40/app", 2),
        ("10.2.40.40:443/app", 2),
        ("[fd00::1]:5000/app", 4),
        ("registry-1.docker.io/busybox", 3),
    ] {
        let info = allocation_counter::measure(|| {
            std::hint::black_box(ImageRef::parse(std::hint::black_box(reference)).unwrap());
        });
        assert_eq!(info.count_total, expected, "{reference}: {info:?}");
    }
}
