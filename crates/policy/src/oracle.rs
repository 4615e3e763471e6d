//! The naive reference implementation: every entry checked in turn with [`Entry::matches`].
//!
//! It defines what the compiled [`Policy`](crate::Policy) must answer; property tests, the differential fuzz
//! target and the benches compare the two. Enabled by the `oracle` feature.

use crate::entry::Entry;
use crate::host::Registry;
use crate::matcher::List;
use crate::{ImageRef, Transport};

/// What the oracle decided: allowed, transport, the deciding entry and its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleDecision {
    /// Whether the registry is allowed.
    pub allowed: bool,
    /// The transport, when allowed.
    pub transport: Option<Transport>,
    /// The most specific matching entry (canonical text) and its list.
    pub entry: Option<(String, List)>,
}

/// A linear scan over the entries in configuration order.
#[derive(Debug, Clone, Default)]
pub struct LinearPolicy {
    entries: Vec<(Entry, List)>,
    whitelist_mode: bool,
}

impl LinearPolicy {
    /// The oracle for a whitelist and an insecure list.
    pub fn new(whitelist: &[Entry], insecure: &[Entry]) -> Self {
        LinearPolicy {
            entries: whitelist
                .iter()
                .map(|e| (e.clone(), List::Whitelist))
                .chain(insecure.iter().map(|e| (e.clone(), List::Insecure)))
                .collect(),
            whitelist_mode: !whitelist.is_empty(),
        }
    }

    /// Decides an image reference.
    pub fn decide(&self, image: &ImageRef) -> OracleDecision {
        self.decide_with_names(image.registry(), Some(image.match_path()), &[])
    }

    /// Decides a registry and path, with names from reverse DNS matched against wildcards.
    pub fn decide_with_names(
        &self,
        registry: &Registry,
        path: Option<&str>,
        names: &[&str],
    ) -> OracleDecision {
        let mut best: Option<usize> = None;
        let mut insecure = false;
        for (i, (entry, list)) in self.entries.iter().enumerate() {
            let hit = entry.matches(registry, path)
                || names.iter().any(|n| entry.matches_name(n, registry, path));
            if !hit {
                continue;
            }
            insecure |= *list == List::Insecure;
            // Strictly more specific wins; on a tie the earlier entry stays.
            if best.is_none_or(|b| entry.rank() > self.entries[b].0.rank()) {
                best = Some(i);
            }
        }
        let transport = if insecure {
            Transport::Insecure
        } else {
            Transport::Secure
        };
        let entry = best.map(|i| (self.entries[i].0.to_string(), self.entries[i].1));
        if !self.whitelist_mode || best.is_some() {
            OracleDecision {
                allowed: true,
                transport: Some(transport),
                entry,
            }
        } else {
            OracleDecision {
                allowed: false,
                transport: None,
                entry: None,
            }
        }
    }
}
