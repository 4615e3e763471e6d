//! Reverse DNS against a real dnsmasq from the testbed: forward-confirmed PTR names, a spoofed
//! PTR, missing records, an unreachable server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use vch_policy::{
    HickoryResolver, ImageRef, Policy, PolicyBuilder, Reason, ReverseDns, ReverseDnsMode, Transport,
};
use vch_testbed::Dns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// dnsmasq with: a confirmed name (PTR and A agree), a spoofed PTR (its name's A record is another
/// address), an IPv6 confirmed name, and an address with no PTR.
fn dns() -> Dns {
    Dns::builder()
        .host("reg.example.com", ip("10.77.0.1"))
        .ptr(ip("10.77.0.2"), "evil.example.com")
        .a("evil.example.com", Ipv4Addr::new(10, 99, 9, 9))
        .host("v6.example.com", ip("fd00::77"))
        .ptr(ip("10.77.0.4"), "other.example.net")
        .host("other.example.net", ip("10.77.0.4"))
        .start()
        .expect("dnsmasq from the testbed must start (apt-get install dnsmasq)")
}

fn policy(mode: ReverseDnsMode) -> Policy {
    PolicyBuilder::new()
        .whitelist("*.example.com")
        .reverse_dns(mode)
        .build()
        .unwrap()
}

fn resolver(server: SocketAddr, timeout: Duration) -> ReverseDns<HickoryResolver> {
    ReverseDns::new(HickoryResolver::new(&[server], timeout).unwrap())
}

async fn decide(
    policy: &Policy,
    dns: &ReverseDns<HickoryResolver>,
    image: &str,
) -> (bool, Reason, String) {
    let image = ImageRef::parse(image).unwrap();
    let d = policy.decide_resolving(&image, dns).await;
    (d.is_allowed(), d.reason().clone(), d.to_string())
}

#[tokio::test]
async fn confirmed_names_match_wildcards() {
    let server = dns();
    let dns = resolver(server.addr(), Duration::from_secs(2));
    let p = policy(ReverseDnsMode::Confirmed);
    let (allowed, reason, text) = decide(&p, &dns, "10.77.0.1:5000/team/app").await;
    assert!(allowed, "{text}");
    assert_eq!(reason, Reason::MatchedName("reg.example.com".into()));
    assert!(text.contains("reg.example.com"), "{text}");
    let (allowed, _, text) = decide(&p, &dns, "[fd00::77]/app").await;
    assert!(allowed, "{text}");
    // A confirmed name outside every wildcard is still denied, and says why.
    let (allowed, reason, text) = decide(&p, &dns, "10.77.0.4/app").await;
    assert!(!allowed);
    assert!(matches!(reason, Reason::ReverseDns(_)), "{reason:?}");
    assert!(text.contains("other.example.net"), "{text}");
    assert!(
        text.starts_with("Access denied to unauthorized registry (10.77.0.4)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_spoofed_ptr_is_not_trusted_unless_asked() {
    let server = dns();
    let dns = resolver(server.addr(), Duration::from_secs(2));
    let (allowed, reason, text) =
        decide(&policy(ReverseDnsMode::Confirmed), &dns, "10.77.0.2/app").await;
    assert!(!allowed, "{text}");
    assert!(text.contains("not confirmed"), "{text}");
    assert!(matches!(reason, Reason::ReverseDns(_)));
    let names = dns.names(ip("10.77.0.2")).await.unwrap();
    assert_eq!(names.unconfirmed, vec!["evil.example.com".into()]);
    assert!(names.confirmed.is_empty());
    // ptr-only trusts whoever controls the reverse zone, as documented.
    let (allowed, _, text) = decide(&policy(ReverseDnsMode::PtrOnly), &dns, "10.77.0.2/app").await;
    assert!(allowed, "{text}");
}

#[tokio::test]
async fn missing_ptr_and_mode_off_deny() {
    let server = dns();
    let dns = resolver(server.addr(), Duration::from_secs(2));
    let (allowed, _, text) =
        decide(&policy(ReverseDnsMode::Confirmed), &dns, "10.77.0.3/app").await;
    assert!(!allowed, "{text}");
    assert!(text.starts_with("Access denied"), "{text}");
    // Off: no lookup at all, so even the confirmed name does not count.
    let (allowed, reason, _) = decide(&policy(ReverseDnsMode::Off), &dns, "10.77.0.1/app").await;
    assert!(!allowed);
    assert_eq!(reason, Reason::NotWhitelisted);
}

#[tokio::test]
async fn an_unreachable_server_fails_closed_within_the_timeout() {
    // A port nobody listens on: reserve it, then drop the socket.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dns = resolver(addr, Duration::from_millis(500));
    let started = Instant::now();
    let (allowed, reason, text) =
        decide(&policy(ReverseDnsMode::Confirmed), &dns, "10.77.0.1/app").await;
    assert!(!allowed, "{text}");
    assert!(matches!(reason, Reason::ReverseDns(_)), "{reason:?}");
    assert!(text.contains("PTR 10.77.0.1"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn insecure_wildcards_apply_to_ip_registries_without_whitelist() {
    let server = dns();
    let dns = resolver(server.addr(), Duration::from_secs(2));
    let p = PolicyBuilder::new()
        .insecure("*.example.com")
        .build()
        .unwrap();
    let image = ImageRef::parse("10.77.0.1/app").unwrap();
    assert_eq!(p.decide(&image).transport(), Some(Transport::Secure));
    let d = p.decide_resolving(&image, &dns).await;
    assert!(d.is_allowed());
    assert_eq!(d.transport(), Some(Transport::Insecure));
    // A lookup failure leaves it allowed (whitelist mode is off) but secure.
    let image = ImageRef::parse("10.77.0.3/app").unwrap();
    let d = p.decide_resolving(&image, &dns).await;
    assert_eq!(
        (d.is_allowed(), d.transport()),
        (true, Some(Transport::Secure))
    );
}

#[tokio::test]
async fn results_are_cached_for_their_ttl() {
    let server = Dns::builder()
        .ttl(300)
        .host("cached.example.com", ip("10.77.0.9"))
        .start()
        .expect("dnsmasq from the testbed must start (apt-get install dnsmasq)");
    let dns = resolver(server.addr(), Duration::from_millis(500));
    let p = policy(ReverseDnsMode::Confirmed);
    assert!(decide(&p, &dns, "10.77.0.9/app").await.0);
    // With the server gone, the confirmed name is still known until the TTL runs out.
    drop(server);
    let (allowed, _, text) = decide(&p, &dns, "10.77.0.9/app").await;
    assert!(allowed, "{text}");
    // With a TTL of 0 nothing may be kept: once the server is gone, the lookup fails closed.
    let server = Dns::builder()
        .host("uncached.example.com", ip("10.77.0.10"))
        .start()
        .expect("dnsmasq from the testbed must start (apt-get install dnsmasq)");
    let dns = resolver(server.addr(), Duration::from_millis(500));
    assert!(decide(&p, &dns, "10.77.0.10/app").await.0);
    drop(server);
    let (allowed, _, text) = decide(&p, &dns, "10.77.0.10/app").await;
    assert!(!allowed, "{text}");
}
