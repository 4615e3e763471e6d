//! `vch-admin create` pre-flight: probe the registries a VCH names with the registry ping and
//! warn, never fail, as vic-machine did ("Unable to confirm secure registry … is a valid
//! registry at this time").
//!
//! Only plain hosts are probed (`reg.example.com`, `10.2.40.40:443`); CIDR ranges, wildcards and
//! `*` name no single registry. Secure registries must verify against the system roots plus the
//! `--registry-ca` files; insecure ones only need to answer `/v2/` (HTTPS unverified, then HTTP).

use std::path::PathBuf;
use std::time::Duration;

use vch_policy::{Entry, EntryHost};
use vch_registry::{Client, Error, HostSettings};

/// Bound on the TCP connect and TLS handshake of one probe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the wait for `/v2/` to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The `host[:port]` an entry names, when it names exactly one registry.
fn plain_host(entry: &str) -> Option<String> {
    let parsed = Entry::parse(entry).ok()?;
    match parsed.host() {
        EntryHost::Exact(host) => {
            Some(vch_policy::Registry::new(host.clone(), parsed.port()).to_string())
        }
        EntryHost::Any | EntryHost::Wildcard(_) | EntryHost::Cidr(_) => None,
    }
}

async fn probe(host: String, secure: bool, cas: Vec<PathBuf>) -> Option<String> {
    let kind = if secure { "secure" } else { "insecure" };
    let mut builder = HostSettings::builder(&host)
        .connect_timeout(CONNECT_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT);
    for ca in &cas {
        builder = builder.ca_file(ca);
    }
    let settings = if secure {
        builder.build()
    } else {
        builder.dangerous().insecure().build()
    };
    let result = match settings.and_then(|s| Client::builder(&host).settings(s).attempts(1).build())
    {
        Ok(client) => client.ping().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => None,
        Err(Error::Tls { reason, .. }) if secure => Some(format!(
            "Unable to confirm secure registry {host} is a valid registry at this time: its \
             certificate does not verify against the system roots or --registry-ca ({reason})"
        )),
        Err(e) => Some(format!(
            "Unable to confirm {kind} registry {host} is a valid registry at this time: {e}"
        )),
    }
}

/// Probes every plain-host whitelist and insecure entry concurrently and returns one warning
/// line per registry that did not check out. Entries in both lists are probed as insecure.
pub(crate) async fn probe_registries(
    whitelist: &[String],
    insecure: &[String],
    registry_ca: &[PathBuf],
) -> Vec<String> {
    let insecure_hosts: Vec<String> = insecure.iter().filter_map(|e| plain_host(e)).collect();
    let mut hosts: Vec<(String, bool)> =
        insecure_hosts.iter().map(|h| (h.clone(), false)).collect();
    for h in whitelist.iter().filter_map(|e| plain_host(e)) {
        if !hosts.iter().any(|(x, _)| *x == h) {
            hosts.push((h, true));
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (host, secure)) in hosts.into_iter().enumerate() {
        let cas = registry_ca.to_vec();
        tasks.spawn(async move { (i, probe(host, secure, cas).await) });
    }
    let mut warnings = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, Some(w))) = done {
            warnings.push((i, w));
        }
    }
    // In the order the entries were given.
    warnings.sort();
    warnings.into_iter().map(|(_, w)| w).collect()
}

/// [`probe_registries`] on a runtime of its own, for the synchronous `create` path.
pub(crate) fn probe_registries_blocking(
    whitelist: &[String],
    insecure: &[String],
    registry_ca: &[PathBuf],
) -> Vec<String> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(probe_registries(whitelist, insecure, registry_ca)),
        Err(e) => vec![format!(
            "registry probes skipped: cannot start a runtime: {e}"
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hosts_are_probed() {
        assert_eq!(
            plain_host("reg.example.com").as_deref(),
            Some("reg.example.com")
        );
        assert_eq!(
            plain_host("10.2.40.40:443").as_deref(),
            Some("10.2.40.40:443")
        );
        assert_eq!(plain_host("*.example.com"), None);
        assert_eq!(plain_host("10.2.2.1/24"), None);
        assert_eq!(plain_host("*"), None);
    }

    #[test]
    fn warns_for_unverified_secure_and_silent_insecure_registries_only() {
        // A real plain-HTTP registry: fine as insecure, a warning as secure; nothing listening
        // on port 1: a warning.
        let reg = vch_testbed::Registry::start().unwrap();
        let w = probe_registries_blocking(&[reg.addr()], &[], &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(&format!("Unable to confirm secure registry {}", reg.addr())),
            "{w:?}"
        );
        let w = probe_registries_blocking(&[reg.addr()], &[reg.addr()], &[]);
        assert!(w.is_empty(), "{w:?}");
        let w = probe_registries_blocking(&[], &["127.0.0.1:1".to_owned()], &[]);
        assert!(
            w[0].starts_with("Unable to confirm insecure registry 127.0.0.1:1"),
            "{w:?}"
        );
    }
}
