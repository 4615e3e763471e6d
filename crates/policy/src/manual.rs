//! Design notes: the decisions behind the engine, the ways earlier whitelists were fooled, how
//! this crate avoids each, and the test that proves it.
//!
//! # Decisions
//!
//! - **One normalisation, then values.** Hosts are parsed once into [`Host`](crate::Host) (lower
//!   case, no trailing dot, IPv6 as an address, IPv4-mapped IPv6 as IPv4) and references into
//!   [`ImageRef`](crate::ImageRef) with Docker's own rules; matching compares values and never
//!   re-parses text.
//! - **Ports.** An entry without a port matches every port; with a port it matches the port Docker
//!   connects to, which is 443 when the reference names none. A scheme only supplies a port.
//! - **Docker Hub is one registry** under four names; a reference is Hub when its host is one of
//!   them on port 443. Namespace entries see Hub's single names under `library/`, even when the
//!   reference spells the registry `registry-1.docker.io` (where Docker itself keeps the bare name).
//! - **The most specific entry decides and is reported**: exact host, then CIDR (longest prefix),
//!   then wildcard (longest suffix), then `*`; a port and a longer namespace break ties, then the
//!   earlier entry. Allowing does not depend on this order, only the reported entry does.
//! - **Transport** is insecure when any insecure entry matches, whichever entry decided. An
//!   intersection is insecure only if every member says so.
//! - **Logins** (`POST /auth`) are decided per registry: a namespace entry allows logging in to its
//!   host, since credentials are per host; pulls are still decided per repository.
//! - **Reverse DNS** is asked only for IP-literal registries, only when wildcard entries exist and
//!   the answer could change the decision, and by default only forward-confirmed names count. In
//!   whitelist mode any failure denies; with whitelist mode off it leaves the transport secure.
//! - **Narrowing** always starts from the deploy-time whitelist, accepts an update only if every
//!   entry is contained in a base entry (whitelist or insecure: both are allowed in whitelist
//!   mode), and refuses an empty update, which would turn whitelist mode off.
//! - **Matching cost** does not grow with the number of entries: see the table in the matcher
//!   (exact maps, suffix probes at `.` boundaries, one table per CIDR prefix length). The tables
//!   use foldhash with a random seed per policy, so lookups on attacker-chosen names cannot be
//!   steered into collisions that were planned offline.
//!
//! # Bypasses and pitfalls, and how they are closed
//!
//! | pitfall (seen in ad-hoc whitelists) | here | test |
//! |---|---|---|
//! | `*.example.com` as a string suffix lets `evilexample.com` or `example.com.evil.io` in | wildcards match whole labels only, and never the apex | `entry::tests::matching_rules`, rows `suffix trick` in `tests::rule_table` |
//! | a namespace as a string prefix lets `team-evil/` in for `team` | namespaces are path-segment prefixes | row `namespace string prefix` |
//! | `registry-1.docker.io/…` or `index.docker.io/…` slips past a rule about `docker.io` (or is wrongly denied) | one Hub registry under every alias, in entries and references | `entry::tests::matching_rules`, rows `hub …` |
//! | `REG.Example.com`, `reg.example.com.` compare unequal | lower-cased, trailing dot dropped | `host::tests::names_are_lowercased_and_lose_the_trailing_dot`, row `upper-case registry` |
//! | `[::ffff:a02:2828]` is 10.2.40.40 but escapes an IPv4 CIDR rule | IPv4-mapped IPv6 is the IPv4 address, in entries and references | row `ipv4-mapped`, `host::tests::ipv4_mapped_ipv6_is_the_ipv4_address` |
//! | `010.0.0.1`, `10.1` mean different addresses to different resolvers | refused as hosts | `host::tests::malformed_hosts_are_refused` |
//! | an upper-case first component (`Foo/app`) treated as a Hub user | it is a registry, as for Docker | `reference::tests::normalises_like_docker` |
//! | `localhost` or `127.0.0.1` trusted implicitly | not special: denied unless whitelisted | rows `seed localhost denied`, `seed loopback denied` |
//! | a PTR record claims `reg.example.com` for an attacker's address | forward-confirmed names only, unless `ptr-only` is chosen | `it::reverse_dns::a_spoofed_ptr_is_not_trusted_unless_asked` |
//! | a DNS timeout or SERVFAIL lets the pull through | fail closed, with the reason | `it::reverse_dns::an_unreachable_server_fails_closed_within_the_timeout` |
//! | successive updates ratchet the whitelist wider, or an empty update turns it off | narrowing from the deploy-time base only; empty update refused | `tests::narrowing_accepts_only_restrictions`, property `narrowing_never_widens` |
//! | the compiled fast path disagrees with the rules | every rule row and random near-miss cases run through the naive oracle too | property `compiled_agrees_with_oracle`, fuzz target `policy_differential` |
