//! Design notes: how the endpoint stays transparent, what it refuses, the bypasses it closes, and
//! the test that proves each.
//!
//! # Transparency
//!
//! - **One engine connection per client connection**, opened on the first request and reused for
//!   keep-alive requests. Requests on a connection are sequential in HTTP/1.1, so no pool is
//!   needed, and when the client goes away its engine connection is closed with it: dockerd sees
//!   its request cancelled and stops a pull or a build (`wire::a_client_disconnect_closes_the_engine_connection`).
//! - **Bodies stream** in both directions through hyper without being collected; only a login body
//!   (to read `serveraddress`, at most 64 KiB) and the `/version` answer (to rewrite `ApiVersion`,
//!   at most 1 MiB) are read whole. No idle timeout applies after the request head, so `logs -f`,
//!   `events` and attach can stay quiet for hours (`docker_cli::*`: events stays open, cp of 64 MiB
//!   both ways is byte-identical).
//! - **Hijacks** (attach, exec start: `Upgrade: tcp` → `101`) are spliced with
//!   `copy_bidirectional`, which turns an EOF from one side into a write shutdown on the other: a
//!   client's stdin EOF (over TLS, its `close_notify`) reaches the container, and the container's
//!   exit closes the client (`docker_cli::*`: `echo data | docker run -i img cat` ends by itself).
//!   The legacy hijack without an `Upgrade` header (before Docker 1.x clients upgraded) is
//!   forwarded as an ordinary response and is not spliced; every docker CLI since 1.12 upgrades.
//! - **API 1.25 everywhere**: every response's `Api-Version` header says 1.25 (the CLI negotiates
//!   down to it from `/_ping`), `/version` reports 1.25, unversioned paths are forwarded as
//!   `/v1.25/…` (never served as the daemon's newest version), and `Builder-Version` is 1 because
//!   BuildKit's `/session` and `/grpc` are not in the v1.25 API.
//!
//! # Refusals
//!
//! | request | answer | why | test |
//! |---|---|---|---|
//! | `/v1.41/…` | 400, Docker's text `client version 1.41 is too new. Maximum supported API version is 1.25` | the CLI then knows to negotiate | `wire::refusals_are_docker_shaped` |
//! | a route not in v1.25 (`/session`, `/grpc`, `/distribution`, `/configs`, …) | 404 JSON | never forward what this VCH does not vouch for | same |
//! | `Upgrade: h2c`, HTTP/2 prior knowledge | 400 / connection error; TLS offers ALPN `http/1.1` only | one protocol to reason about | same |
//! | a plain-HTTP client on a TLS port | Go's answer, `Client sent an HTTP request to an HTTPS server.` | the CLI's error names the problem | `docker_cli::mutual_tls_refuses_clients_without_the_right_certificate` |
//! | engine unreachable | 502 JSON naming the engine address | | `wire::an_unreachable_engine_is_a_502_naming_it` |
//!
//! # Bypasses of a path- or parameter-based gate, and how they are closed
//!
//! | attempt | here | test |
//! |---|---|---|
//! | `?fromImage=evil/x&fromImage=allowed/x`: a gate reading the last value while dockerd reads the first | parameters are read as Go's `r.Form.Get` does (first value; `;` pairs and bad escapes skipped) | `wire::refusals_are_docker_shaped` |
//! | a form-encoded body carrying `fromImage`, which dockerd merges ahead of the query | refused on gated routes | same |
//! | `//images/create`, `/v1.25/./images/create`, `/x/../images/create` | non-canonical paths are refused (400), never normalised differently from dockerd | same |
//! | `/v1.25/%69mages/create` | paths are decoded as Go decodes them before routing, so the gate sees the endpoint dockerd sees | same |
//! | `fromImage=a:v1&tag=v2`, `tag=sha256:…` | the reference is built as dockerd builds it (tag replaces, digest makes a digest reference) | `gate::tests::pulls_as_dockerd_builds_them` |
//! | login to a registry off the whitelist | `POST /auth` is decided by its `serveraddress` | `wire::refusals_are_docker_shaped` |
//!
//! Pulls by other routes (build `FROM`, `load`, plugin pulls, service images, import from a URL)
//! are forwarded by this version; gating them is the enforcement work that builds on the route
//! classification here.
//!
//! # Robustness
//!
//! - Header read timeout (slowloris; default 30 s) and request-head size limit (default 1 MiB,
//!   because a build's `X-Registry-Config` header carries every credential)
//!   (`wire::slow_headers_are_cut_off`).
//! - At most `max_connections` served at once (default 1024); others wait in the backlog rather
//!   than being dropped (`wire::connections_beyond_the_limit_wait_for_a_free_slot`).
//! - The accept loop never dies: accept errors are logged and retried after 50 ms; per-connection
//!   errors are logged and dropped.
//! - Shutdown stops accepting, asks each connection to finish its request, and waits up to the
//!   grace period; reload swaps settings for new requests without touching live connections
//!   (`vch-admin` `serve::create_then_serve_with_reload_and_shutdown`).
