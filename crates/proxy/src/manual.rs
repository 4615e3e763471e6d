//! Design notes: how the endpoint stays transparent, what it refuses, the bypasses it closes, and
//! the test that proves each.
//!
//! # Transparency
//!
//! - **One engine connection per client connection**, opened on the first request and reused for
//!   keep-alive requests. Requests on a connection are sequential in HTTP/1.1, so no pool is
//!   needed, and when the client goes away its engine connection is closed with it: dockerd sees
//!   its request cancelled and stops a pull or a build (`wire::a_client_disconnect_closes_the_engine_connection`).
//! - **Bodies stream** in both directions through hyper without being collected; only the JSON
//!   bodies a gate decides on (a login's `serveraddress`, a service spec; at most 1 MiB) and the
//!   `/version` and `/info` answers (to rewrite `ApiVersion`, to add the policy; at most 1 MiB)
//!   are read whole. No idle timeout applies after the request head, so `logs -f`,
//!   `events` and attach can stay quiet for hours (`docker_cli::*`: events stays open, cp of 64 MiB
//!   both ways is byte-identical).
//! - **Hijacks** (attach, exec start: `Upgrade: tcp` → `101`) are spliced with
//!   `copy_bidirectional`, which turns an EOF from one side into a write shutdown on the other: a
//!   client's stdin EOF (over TLS, its `close_notify`) reaches the container, and the container's
//!   exit closes the client (`docker_cli::*`: `echo data | docker run -i img cat` ends by itself).
//!   The legacy hijack without an `Upgrade` header (before Docker 1.x clients upgraded) is
//!   forwarded as an ordinary response and is not spliced; every docker CLI since 1.12 upgrades.
//! - **One API range** (see "API versions" below): every response's `Api-Version` header says the
//!   ceiling (the CLI negotiates down to it from `/_ping`), `/version` reports the ceiling and the
//!   floor, unversioned paths are forwarded as `/v<ceiling>/…` (never served as the daemon's
//!   newest version, which the gate may not have been audited for), and `Builder-Version` is 1
//!   because BuildKit's `/session` and `/grpc` are refused.
//!
//! # Refusals
//!
//! | request | answer | why | test |
//! |---|---|---|---|
//! | `/v1.42/…` against a 1.41 engine | 400, Docker's text `client version 1.42 is too new. Maximum supported API version is 1.41` | the CLI then knows to negotiate | `wire::refusals_are_docker_shaped`, `versions::*` |
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
//! | `{"ServerAddress":"allowed","serveraddress":"evil"}`, `"ſerveraddress"`, `"\u0073erveraddress"` in a login or service body | JSON bodies are read with Go `encoding/json` rules: keys fold case with Unicode simple folding, `\u` escapes are decoded, the last duplicate wins and objects merge, `null` is what Go makes of it (`gojson.rs`, checked against a table of Go's own answers in `testdata/gojson/`) | `gojson::tests::agrees_with_go`, `reading::*` |
//! | a policed JSON body larger than the gate reads | refused with 413 (1 MiB cap), never forwarded uninspected | `reading::*` |
//! | `Transfer-Encoding: gzip, chunked` or `chunked, chunked` | refused (hyper accepts them); `Content-Length` beside `Transfer-Encoding` is dropped by hyper, the body read by its chunked framing as dockerd's Go server reads it, and the connection closed after the answer | `service::tests::ambiguous_framing_is_refused`, `reading::*` |
//! | a form body on any policed route (`POST /build` with `remote=` in an `x-www-form-urlencoded` body) | refused (400) on every policed route | `reading::*` |
//! | `docker tag evil/x allowed/x && docker push allowed/x` | a push is decided by where it goes, not by where the image came from; the pull of `evil/x` was decided when it happened | `ingress_images::*` |
//!
//! # What is decided, where
//!
//! Every route an image can enter or leave the engine by is named in the route table with its
//! gate (`route.rs`); `Gate::ask` reads a request into what it asks of the policy, and
//! `police.rs` decides, audits and refuses for all of them alike. A denial is a 403 before
//! dockerd has seen any of the request; in `audit` mode it is logged (`"would_deny": true`, a
//! warning in the serve log) and the request goes through.
//!
//! | route | decided | by |
//! |---|---|---|
//! | `POST /images/create?fromImage=` | the reference, with `tag` applied as dockerd applies it | whitelist |
//! | `POST /images/create` without `fromImage` (import from `fromSrc` URL or body) | refused in whitelist mode: the content comes from no registry | — |
//! | `POST /images/load` | refused in whitelist mode, for the same reason | — |
//! | `POST /images/{name}/push?tag=` | the repository pushed to | push list (`[registry] push`), else the whitelist; `push = []` refuses every push |
//! | `POST /plugins/{name}/push` | the repository the plugin name is | push list, else the whitelist |
//! | `GET /images/search?term=` | the registry of the term (`reg:5000/x` → `reg:5000`; no registry part → Docker Hub), split as dockerd's `splitReposSearchTerm` | whitelist |
//! | `POST /plugins/pull`, `GET /plugins/privileges`, `POST /plugins/{name}/upgrade` | `remote` | whitelist |
//! | `POST /plugins/create` (a plugin from a tar body) | refused in whitelist mode | — |
//! | `POST /services/create`, `POST /services/{id}/update` | `TaskTemplate.ContainerSpec.Image`; `PluginSpec` or a runtime other than `container` refused in whitelist mode (a plugin comes from no decided pull) | whitelist |
//! | `POST /build?remote=` (git, tarball or Dockerfile URL) | refused in whitelist mode: dockerd fetches the context itself, after the gate | — |
//! | `POST /auth` | `serveraddress` | whitelist |
//! | `POST /swarm/join` | refused in whitelist mode: the other swarm's managers would schedule services here, and their images would be pulled without passing this endpoint | — |
//! | `/distribution/…`, `/session`, `/grpc`, `/configs`, `/build/prune`, swarm routes after 1.25 | not in the v1.25 table: 404 | — |
//!
//! **Not decided: `POST /images/{name}/tag`, `POST /commit`, `POST /containers/create`.** They
//! use images already in the engine, and every way in is decided: what is there was pulled,
//! built, loaded or imported through a gate (or was there before the VCH). Deciding them by the
//! whitelist would break `docker build -t myapp . && docker run myapp` whenever Docker Hub is not
//! whitelisted, for no gain (a build's `FROM` is decided: see "Builds" below). When `docker run`
//! names an image that is not there, the docker CLI pulls it first with `POST /images/create`, which the pull gate decides with the whitelist's
//! text (`ingress_images::*`).
//!
//! **Builds** (`build` module): the context is read as it streams, the Dockerfile found and
//! parsed as dockerd does, and every `FROM`, `COPY --from` image and base `ONBUILD` trigger
//! decided before dockerd receives the body. A `FROM` is decided even when the engine already has
//! the image: the classic builder pulls a base it no longer finds, and the upload can last long
//! enough for a `docker rmi` beside it to make a decided-local base a pull. Tag images built for
//! reuse with a whitelisted registry's name (`-t reg.example.com/team/base:1`).
//!
//! | bypass | closed by | test |
//! |---|---|---|
//! | two `Dockerfile` entries, the second naming another registry | the last entry wins, as in dockerd's untar; a replacement after release is decided before its last bytes are forwarded | `build::*` |
//! | `Dockerfile` a symlink or hard link to another entry; a parent directory a symlink | resolved inside the context as dockerd's chrooted untar and scoped symlink evaluation do | `build::context::tests` |
//! | only a lowercase `dockerfile` | dockerd's fallback, for the default name only | `build::context::tests` |
//! | `dockerfile=sub/../Dockerfile`, `.dockerignore` naming it | normalised as dockerd joins it; `.dockerignore` is applied after dockerd reads it | `build::*` |
//! | `# escape=` and continued `FROM` lines, heredocs with `FROM` lines in them | both parsers in the field (20.10's and the current one), the union decided | `build::dockerfile::tests`, corpus |
//! | `buildargs` overriding an `ARG` default, proxy args (`HTTP_PROXY`) in `FROM` | expanded with the meta args as dockerd does | corpus |
//! | `COPY --from=image`, an `ONBUILD COPY --from` in a base or an earlier stage | decided; a base's triggers read from the engine (pulled first when missing) | `build::*` |
//! | BuildKit (`version=2`, `/session`, `/grpc`) | refused | `gate::tests` |
//!
//! **Rollbacks:** `POST /services/{id}/update?rollback=previous` deploys the service's previous
//! spec, whatever the body says. That spec may come from before a narrowing, or from a way in
//! that passed no gate: it is asked from the engine (`GET /services/{id}`) and its image decided
//! again (`ingress_plugins_services::services_run_only_whitelisted_images`).
//!
//! # API versions
//!
//! The endpoint accepts `/v1.24` up to a ceiling, the lowest of the engine's own `ApiVersion`
//! (asked at start, after a reload and after the engine was unreachable), the highest version
//! the gate has been audited for (`AUDITED_API_VERSION`, 1.55), and an optional pin
//! (`[api] version`, VIC's 1.25). The floor is the higher of 1.24 and the engine's
//! `MinAPIVersion`. A request keeps the version it asked for; an unversioned one is served at
//! the ceiling. docker CLI 29 (floor 1.40 or 1.44) refuses to negotiate below its floor, so a
//! 1.25-only endpoint failed its first command; pinned to 1.25, the env file carries
//! `DOCKER_API_VERSION=1.25`, which every CLI honours.
//!
//! The audit (moby's `api/docs/CHANGELOG.md` and routers, dockerd 20.10.24's source and live
//! probes; dockerd 20.10 serves every route at every version, so the version a route was added
//! in is enforced here, not by the daemon):
//!
//! | since | route or parameter | here |
//! |---|---|---|
//! | 1.24/1.25 | the routes of Docker 1.13 | the route table; policed routes as above |
//! | 1.26 | `POST /plugins/{name}/upgrade` (`remote`) | decided as a pull, at every version (dockerd 20.10 serves it at every version) |
//! | 1.29 | `GET /tasks/{id}/logs` | forwarded from 1.29 |
//! | 1.30 | `GET /distribution/{name}/json` | decided as a pull: dockerd asks the registry for the manifest |
//! | 1.30 | `/configs` (list, create, inspect, delete, update) | forwarded from 1.30: data, no image |
//! | 1.31 | `POST /build/prune` | forwarded from 1.31 |
//! | 1.31 | `TaskTemplate.PluginSpec`, `Runtime` in services | refused in whitelist mode (see above) |
//! | 1.31/1.38 | `/session`, `/grpc`, `POST /build?session=`, `?version=2`, `?buildid=` | refused at every version: BuildKit resolves and pulls `FROM`, `# syntax=` frontends and registry caches inside the daemon, where nothing can decide them |
//! | 1.32 | `platform` on `images/create` and `build` | a selector inside the decided repository: nothing to decide |
//! | 1.40 | `POST /build?outputs=` | refused (BuildKit exporters; `type=image,push=true` pushes on 29.x) |
//! | 1.41 | `platform` on `containers/create` | a local image: not decided, as `Image` |
//! | 1.42 | `PUT /volumes/{name}` (cluster volumes) | forwarded from 1.42: an installed CSI plugin, no image |
//! | 1.46 | `platform` on `images/{name}/push` | the destination is still `{name}`: decided as a push |
//! | 1.48 | `platform` on `images/load` and `images/{name}/get` | load is refused in whitelist mode; get goes to the client only |
//! | 1.48 | `Mounts[].Type = "image"` in container create | a local image (the daemon does not pull it): not decided, as `Image` |
//! | 1.48 | `/v<version>/debug/…` | refused (as unversioned `/debug/…`) |
//! | 1.55 | `GET /images/{name}/attestations` | forwarded from 1.55: local blobs |
//! | any | HTTP/2 gRPC on the API socket (dockerd 29.2+, `application/grpc` over HTTP/2 only) | the listener speaks HTTP/1.1 only and refuses `Upgrade: h2c` and the HTTP/2 preface; the engine connection is HTTP/1.1 |
//!
//! Not verified on a running 29.x daemon (this machine has 20.10): whether `POST
//! /containers/create` can pull, and whether image mounts can (both believed not).
//!
//! # Robustness
//!
//! - A refused request's unread body is read and thrown away after the answer (at most 64 MiB or
//!   10 s): closing a socket with unread data makes the kernel send a reset, which destroys the
//!   answer in flight, so a refused `docker load` or `docker plugin create` showed a broken pipe
//!   instead of the refusal (`ingress_plugins_services::plugin_create_needs_whitelist_mode_off`).
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
